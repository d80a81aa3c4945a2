"""The results store: one JSON line per run, keyed by its full config; append-only and crash-safe.

A record is written with one ``write`` of one line, flushed and fsynced, under an exclusive file lock. A crash
mid-write can leave at most a partial last line: readers skip it (with a warning) and the next append first
cuts it off, so a run is either fully stored or not at all, and a stored run is never overwritten.

What is stored is never deleted or hidden by a later run: a last line that is complete JSON but lacks its newline
(a hand edit, or a crash between the record and its newline) is kept and gets its newline; only a tail that is not
valid JSON is cut, and its bytes are kept in ``<name>.jsonl.cut``. A line that is not a record (``{}``, ``[1, 2]``,
bytes that are not UTF-8) is skipped by every reader with a warning naming the line, and stays in the file.
Records are strict JSON: non-finite numbers are written as ``null``; readers accept both ``null`` and ``NaN`` and
give ``nan`` for either in the numeric parts of a record (``metrics``, and the rows of ``curves`` and ``grid``).
``claim`` lets several processes share one store without computing a key twice.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from kdlib.core.checkpoints import config_key
from kdlib.core.disk import writing
from kdlib.errors import DiskFullError, KDConfigError
from kdlib.paths import PROJECT_ROOT, results_dir, user_folder

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_RECORD_FIELDS: dict[str, type] = {"key": str, "kind": str, "config": dict, "metrics": dict}
_NUMERIC_ROWS = ("curves", "grid")
DONE_METRICS: dict[str, tuple[str, ...]] = {
    "distill": ("acc_before", "acc_after", "gain"),
    "federated": ("initial_acc", "final_acc"),
}
"""Per record kind, the metrics that must be finite numbers for a stored run to count as done (others, such as the
accuracy on unseen classes, are NaN by design in some scenarios)."""


def code_revision(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The code that made a record: ``git`` (the full commit, "" outside a git checkout) and ``dirty`` (whether
    tracked files differed from that commit; untracked files are not counted)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else False
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"git": commit, "dirty": dirty}


def environment_info() -> dict[str, Any]:
    """Package versions, the code's revision (``code_revision``) and how CPU forward passes are computed
    (``kdlib.core.precision``; GPUs use float32), stored with every record."""
    import torch

    from kdlib.core.precision import precision_label

    info = {"python": platform.python_version(), "machine": platform.machine(),
            "cpu_precision": precision_label(torch.device("cpu"))}  # fmt: skip
    for package in ("torch", "numpy", "transformers", "flwr"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    info.update(code_revision())
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
        store = cls(folder / f"{name}.jsonl")
        store.check_writable()
        return store

    def check_writable(self) -> None:
        """Fail now, before any training, when the store file could not take a record (a folder in its place, a
        read-only file), with a message naming it; opening for append changes nothing."""
        if self.path.is_dir():
            raise PermissionError(f"The results file {self.path} is a folder. Move it away or pass another --results.")
        if not self.path.exists():
            return
        try:
            with open(self.path, "ab"):
                pass
        except PermissionError:
            message = f"The results file {self.path} is not writable (read-only?). Make it writable or pass another "
            raise PermissionError(message + "--results folder; nothing was run.") from None

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
        """Every complete record, in the order written. Lines that are not records (unreadable, not UTF-8, JSON that
        is not a record) and a partial last line (a crash mid-write) are skipped with a warning naming the line."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        last = len(lines)
        out = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record, problem = _parse_line(line)
            if problem is None:
                out.append(_restore_nan(record))
            elif number == last and not _is_json(line):
                what = "an incomplete last record (interrupted write)"
                warnings.warn(f"{self.path}:{number}: skipping {what}", stacklevel=2)
            else:
                warnings.warn(f"{self.path}:{number}: skipping a line that is {problem} (kept in it)", stacklevel=2)
        return out

    def keys(self) -> set[str]:
        """The keys whose latest record counts as done (see ``get``)."""
        latest = {r["key"]: r for r in self.records()}
        return {key for key, record in latest.items() if self._done(record)}

    def get(self, key: str) -> dict[str, Any] | None:
        """The latest record with this key, or None; None too when that record does not count as done (one of its
        ``DONE_METRICS`` is NaN or infinite: it is kept, and run again), with a warning naming the key."""
        found = [r for r in self.records() if r["key"] == key]
        return found[-1] if found and self._done(found[-1]) else None

    def has(self, key: str) -> bool:
        """Whether ``key`` is done: its latest record is stored and counts as done (``get``)."""
        return self.get(key) is not None

    def _done(self, record: dict[str, Any]) -> bool:
        bad = not_finite_metrics(record)
        if bad:
            warnings.warn(
                f"{self.path}: the record {record['key']} has a non-finite {', '.join(bad)}: it does not count as "
                "done and is run again",
                stacklevel=3,
            )
        return not bad

    def latest(self, keys: Collection[str]) -> list[dict[str, Any]]:
        """The latest record of each of ``keys`` that is stored, in the order the keys were first stored: a study's
        runs, read back (both studies read theirs through here)."""
        wanted = set(keys)
        return list({r["key"]: r for r in self.records() if r["key"] in wanted}.values())

    def latest_frame(self, kind: str, keys: Collection[str]):
        """``frame(kind)`` cut to ``keys``, one row per key (its latest record); empty when nothing is stored."""
        df = self.frame(kind)
        if df.empty:
            return df
        return df[df["key"].isin(set(keys))].drop_duplicates("key", keep="last")

    @contextmanager
    def claim(self, key: str, *, wait: bool = False) -> Iterator[bool]:
        """Claim the right to compute ``key``: ``with store.claim(key) as mine: if mine: ...compute, append...``.

        The contract, for any number of processes, threads or Ray workers on one store (one file system):

        * Yields ``True`` when this caller must compute the run: no record with ``key`` is stored and this caller
          holds the key's claim (an exclusive lock on ``<folder>/.claims/<name>/<key>.lock``) until the ``with``
          block ends. Append the record inside the block; then no other claimant can compute it again.
        * Yields ``False`` when it must not: a record with ``key`` is stored (read it with ``get``), or another live
          process holds the claim. With ``wait=True`` it waits for that claim to end instead and checks the store
          again: ``False`` then means the record is stored, ``True`` that the other claimant ended without storing
          it (it failed or was killed), and the claim passes to this caller.
        * The store is checked again after the lock is taken, so a record appended between the first check and the
          lock is seen. The lock is the kernel's (``flock``): a killed process releases it, and a stale lock file
          claims nothing. Records are only ever appended, so no claim can lose or duplicate one.
        """
        if not isinstance(key, str) or not _PLAIN_NAME.fullmatch(key):
            raise KDConfigError("key", key, "a run key of letters, digits, '_', '-' or '.' (see run_key)")
        if self.has(key):
            yield False
            return
        from filelock import FileLock, Timeout

        folder = self.path.parent / ".claims" / self.path.stem
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{key}.lock"), timeout=-1 if wait else 0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield not self.has(key)
        finally:
            lock.release()

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
        with self._locked() as handle:
            self._write(handle, [record])
        return record

    def merge(self, source: ResultsStore) -> tuple[int, int]:
        """Add the runs of another store (a copy that ran elsewhere, e.g. on a lent GPU machine): for each key that is
        not done here, the latest done record of ``source``, in ``source``'s order. Records keep their own time, env
        and commit, so where and by which code each was made stays visible. Returns (added, skipped: done here)."""
        if source.path.resolve() == self.path.resolve():
            raise KDConfigError("source", str(source.path), "another store's file, not this store's own")
        if not source.path.is_file():
            raise FileNotFoundError(f"No results file at {source.path}: pass the .jsonl file the other run wrote.")
        latest = {r["key"]: r for r in source.records() if not not_finite_metrics(r)}
        with self._locked() as handle:
            done = {r["key"] for r in self.records() if not not_finite_metrics(r)}
            new = [r for key, r in latest.items() if key not in done]
            self._write(handle, new)
        return len(new), len(latest) - len(new)

    def _write(self, handle: Any, records: list[dict[str, Any]]) -> None:
        """Append records to the locked store in one fsynced write; on a full disk nothing of them is kept."""
        if not records:
            return
        data = b"".join(strict_json(record).encode() + b"\n" for record in records)
        _mend_tail(handle, self.path.with_name(self.path.name + ".cut"))
        end = handle.seek(0, os.SEEK_END)
        try:
            with writing(self.path):
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except DiskFullError:
            handle.truncate(end)  # no partial record: the store ends where it ended
            raise

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


def _mend_tail(handle: Any, cut_to: Path) -> None:
    """If the file does not end with a newline: a last line that is valid JSON gets its newline (a complete record is
    never cut); one that is not (left by a crash mid-write) is cut, its bytes appended to ``cut_to``."""
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
    tail = data[keep:]
    if _is_json(tail):
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n")
        print(f"results: {handle.name}: the last record lacked its newline; added it", file=sys.stderr)
        return
    with open(cut_to, "ab") as kept:
        kept.write(tail + b"\n")
    print(
        f"results: cutting an incomplete last record of {size - keep} bytes (not valid JSON; kept in {cut_to})",
        file=sys.stderr,
    )
    handle.truncate(keep)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def _parse_line(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` for a record, else ``(None, what is wrong)``."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None, "not valid JSON"
    if not isinstance(value, dict):
        return None, f"JSON but not a record (a {type(value).__name__}, not an object)"
    for name, kind in _RECORD_FIELDS.items():
        if not isinstance(value.get(name), kind):
            return None, f"JSON but not a record (no {kind.__name__} field {name!r})"
    return value, None


def not_finite_metrics(record: dict[str, Any]) -> list[str]:
    """The ``DONE_METRICS`` of the record's kind that it holds as NaN or infinite numbers (an absent one is not
    counted: older records may lack it)."""
    metrics = record.get("metrics", {})
    names = DONE_METRICS.get(record.get("kind", ""), ())
    return [name for name in names if isinstance(metrics.get(name), float) and not math.isfinite(metrics[name])]


def _restore_nan(record: dict[str, Any]) -> dict[str, Any]:
    """``null`` (how non-finite numbers are stored) back to ``nan`` in the numeric parts of a record."""
    record["metrics"] = {k: math.nan if v is None else v for k, v in record["metrics"].items()}
    for name in _NUMERIC_ROWS:
        rows = record.get(name)
        if isinstance(rows, list):
            record[name] = [
                {k: math.nan if v is None else v for k, v in row.items()} if isinstance(row, dict) else row
                for row in rows
            ]
    return record


def strict_json(value: Any) -> str:
    """``value`` as strict JSON (what jq and browsers read): ``NaN`` and infinities become ``null``."""
    plain = json.loads(json.dumps(value, default=_jsonable, allow_nan=True))
    return json.dumps(_finite_or_none(plain), allow_nan=False)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return str(value)
