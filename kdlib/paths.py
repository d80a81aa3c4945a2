"""The project's folders, each overridable by an environment variable, and a guard against path escapes."""

from __future__ import annotations

import os
from pathlib import Path

from kdlib.errors import KDConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _folder(env: str, default: str) -> Path:
    return Path(os.environ.get(env, PROJECT_ROOT / default)).resolve()


def results_dir() -> Path:
    """Results store folder: ``KDLIB_RESULTS`` or ``<project>/results``."""
    return _folder("KDLIB_RESULTS", "results")


def figures_dir() -> Path:
    """Where notebooks save figures: ``KDLIB_FIGURES`` or ``<project>/figures``."""
    return _folder("KDLIB_FIGURES", "figures")


def cache_dir() -> Path:
    """Checkpoint and logit cache: ``KDLIB_CACHE`` or ``<project>/cache``."""
    return _folder("KDLIB_CACHE", "cache")


def inside(path: str | Path, root: Path, field: str) -> Path:
    """``path`` resolved under ``root`` (relative paths are taken from ``root``); refuse any escape from it."""
    root = root.resolve()
    candidate = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if candidate != root and root not in candidate.parents:
        raise KDConfigError(field, str(path), f"a path inside {root}")
    return candidate
