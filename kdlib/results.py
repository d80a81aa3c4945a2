"""The results store: one JSON line per run, keyed by its full config; append-only and crash-safe.

A record is written with one ``write`` of one line, flushed and fsynced, under an exclusive file lock. A crash
mid-write can leave at most a partial last line: readers skip it (with a warning) and the next append first
cuts it off, so a run is either fully stored or not at all, and a stored run is never overwritten.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from kdlib.config import config_key
from kdlib.errors import KDConfigError
from kdlib.paths import PROJECT_ROOT, results_dir, user_folder

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def environment_info() -> dict[str, str]:
    """Package versions and git revision, stored with every record."""
    info = {"python": platform.python_version(), "machine": platform.machine()}
    for package in ("torch", "numpy", "transformers", "flwr", "optuna"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git"] = ""
    return info


@dataclass
class ResultsStore:
    """An append-only JSON Lines file of run records: ``{"key", "kind", "config", "metrics", ...}``."""

    path: Path

    @classmethod
    def open(cls, name: str = "study", folder: str | Path | None = None) -> ResultsStore:
        """The store ``<folder>/<name>.jsonl`` (folder default: ``results/`` of the project, or ``KDLIB_RESULTS``).

        ``folder`` follows :func:`kdlib.paths.user_folder`: a relative folder is taken from the project folder and may
        not leave it; an absolute one is used as given; ``..`` parts are refused. ``name`` is a plain file name.
        """
        if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
            raise KDConfigError("name", name, "a plain store name of letters, digits, '_', '-' or '.', e.g. 'study'")
        folder = user_folder(folder, "results", results_dir())
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            message = f"Cannot create the results folder {folder}: {error}. Pass a writable folder."
            raise PermissionError(message) from error
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"The results folder {folder} is not writable. Pass a writable folder.")
        return cls(folder / f"{name}.jsonl")

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, in the order written; a partial line (a crash mid-write) is skipped."""
        if not self.path.exists():
            return []
        out = []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete = lines[:-1]  # a last piece without its newline is a write that did not finish
        if lines[-1].strip():
            warnings.warn(f"{self.path}: skipping an incomplete last record (interrupted write)", stacklevel=2)
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{self.path}:{number}: skipping an unreadable record", stacklevel=2)
        return out

    def keys(self) -> set[str]:
        return {r["key"] for r in self.records()}

    def get(self, key: str) -> dict[str, Any] | None:
        """The latest record with this key, or None."""
        found = [r for r in self.records() if r["key"] == key]
        return found[-1] if found else None

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def append(self, kind: str, config: dict[str, Any], metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Store one run. A run whose key is stored already is kept; the new one is added after it."""
        record = {
            "key": run_key(kind, config),
            "kind": kind,
            "config": config,
            "metrics": metrics,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "env": environment_info(),
            **extra,
        }
        line = json.dumps(record, default=_jsonable, allow_nan=True).encode() + b"\n"
        with self._locked() as handle:
            _cut_partial_tail(handle)
            handle.seek(0, os.SEEK_END)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def frame(self, kind: str | None = None):
        """The records as a pandas DataFrame: config and metrics flattened into columns."""
        import pandas as pd

        rows = []
        for r in self.records():
            if kind is not None and r["kind"] != kind:
                continue
            row = {"key": r["key"], "kind": r["kind"], "time": r.get("time"), "wall_s": r.get("wall_s")}
            row.update({k: v for k, v in r["config"].items() if not isinstance(v, dict | list)})
            row.update({k: v for k, v in r["metrics"].items() if not isinstance(v, dict | list)})
            rows.append(row)
        return pd.DataFrame(rows)


def run_key(kind: str, config: dict[str, Any]) -> str:
    """The key that ``ResultsStore.append`` gives a run of this kind and config."""
    return config_key({"kind": kind, "config": config})


def _cut_partial_tail(handle: Any) -> None:
    """If the file does not end with a newline, cut the partial last line (left by a crash mid-write)."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return
    handle.seek(0)
    data = handle.read()
    keep = data.rfind(b"\n") + 1
    print(f"results: cutting an incomplete last record of {size - keep} bytes", file=sys.stderr)
    handle.truncate(keep)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return str(value)
