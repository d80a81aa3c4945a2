"""Decoded images before normalisation, and their on-disk cache ``<root>/cache/<name>.npz`` (uint8, no pickles)."""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CacheError", "RawData", "check_raw", "read_cache", "try_cache", "write_cache"]

_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")


@dataclass
class RawData:
    """Decoded images before normalisation: x (N, H, W, C), uint8 or float32 in [0, 1]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    description: str


class CacheError(Exception):
    """The cache file exists but cannot be used."""


def read_cache(path: Path, default_description: str) -> tuple[RawData, str]:
    """Read a cache npz; returns the data and its stored source fingerprint ('' if none)."""
    try:
        with open(path, "rb") as f:
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with npz:
                arrays = {k: npz[k] for k in _CACHE_KEYS}
                description = str(npz["description"]) if "description" in npz.files else default_description
                fingerprint = str(npz["fingerprint"]) if "fingerprint" in npz.files else ""
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CacheError(f"{type(err).__name__}: {err}") from err
    raw = RawData(arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
                  arrays["y_test"].astype(np.int64), tuple(str(c) for c in arrays["class_names"]), description)
    problem = check_raw(raw)
    if problem:
        raise CacheError(problem)
    return raw, fingerprint


def check_raw(raw: RawData) -> str:
    """Why the arrays are inconsistent, or '' when they are fine."""
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if x.dtype != np.uint8 or x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
            return f"{split} arrays have wrong shapes or types: x {x.dtype}{x.shape}, y {y.shape}"
        if len(y) and (y.min() < 0 or y.max() >= len(raw.class_names)):
            return f"{split} labels outside 0..{len(raw.class_names) - 1}"
    if raw.x_train.shape[1:] != raw.x_test.shape[1:]:
        return f"train images {raw.x_train.shape[1:]} and test images {raw.x_test.shape[1:]} differ"
    return ""


def write_cache(path: Path, raw: RawData, fingerprint: str = "") -> None:
    """Write the cache atomically (temp file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_test, y_test=raw.y_test,
                class_names=np.array(raw.class_names, dtype=np.str_),
                description=np.array(raw.description), fingerprint=np.array(fingerprint),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def try_cache(path: Path, default_description: str) -> tuple[RawData | None, str, str]:
    """(data, fingerprint, problem): data is None when the cache is missing or unreadable."""
    if not path.is_file():
        return None, "", ""
    try:
        raw, fingerprint = read_cache(path, default_description)
    except CacheError as err:
        problem = f"the cache file {path} is unreadable ({err}); delete it"
        warnings.warn(f"{problem}. Rebuilding it from the source files if they are found.", stacklevel=3)
        return None, "", problem
    return raw, fingerprint, ""
