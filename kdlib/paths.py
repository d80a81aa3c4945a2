"""The project's folders, each overridable by an environment variable, and a guard against path escapes."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from kdlib.errors import KDConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "KDLIB_DATA"
ARCHIVE_ENV = "KDLIB_CIFAR10_ARCHIVE"
PATH_VARIABLES = (
    "KDLIB_RESULTS", "KDLIB_FIGURES", "KDLIB_CACHE", DATA_ENV, ARCHIVE_ENV, "KDLIB_PRETRAINED",
)  # fmt: skip
"""The environment variables that name a file or folder."""


def _folder(env: str, default: str) -> Path:
    folder = Path(os.environ.get(env) or PROJECT_ROOT / default).expanduser().resolve()
    return check_folder_path(env, folder)


def check_folder_path(field: str, folder: Path) -> Path:
    """``folder``, unless it (or a folder above it) is a file: then a one-line error naming ``field`` (e.g. the
    environment variable that gave it). A missing folder is fine: it is made when first written."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "names a file" if candidate == folder else f"lies under the file {candidate}"
                raise KDConfigError(field, str(folder), f"a folder, but it {what}; point it at a folder")
            break
    return folder


def check_writable_folder(field: str, folder: Path) -> Path:
    """``folder`` if this user can write there (it, or the nearest folder above it that exists, since it is made
    on first use), else a ``PermissionError`` naming ``field``: checked before any run starts."""
    check_folder_path(field, folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{field}: the folder {existing} is not writable; point {field} at a writable folder")
    return folder


def results_dir() -> Path:
    """Results store folder: ``KDLIB_RESULTS`` or ``<project>/results``."""
    return _folder("KDLIB_RESULTS", "results")


def figures_dir() -> Path:
    """Where notebooks save figures: ``KDLIB_FIGURES`` or ``<project>/runs/figures`` (ignored by git).

    The committed gallery ``<project>/figures`` (the README's pictures) is written only when asked for:
    ``KDLIB_FIGURES=figures`` or ``python -m kdlib reproduce --gallery``.
    """
    return _folder("KDLIB_FIGURES", "runs/figures")


def cache_dir() -> Path:
    """Checkpoint and logit cache: ``KDLIB_CACHE`` or ``<project>/cache``."""
    return _folder("KDLIB_CACHE", "cache")


def data_root() -> Path:
    """Where data sets live: ``$KDLIB_DATA`` if set, else ``<project root>/data``."""
    env = os.environ.get(DATA_ENV)
    return check_folder_path(DATA_ENV, Path(env).expanduser().resolve()) if env else PROJECT_ROOT / "data"


def cifar10_archive() -> Path:
    """``$KDLIB_CIFAR10_ARCHIVE`` if set, else ``<project root>/../shared/data/cifar10-jpeg.tar.gz``."""
    env = os.environ.get(ARCHIVE_ENV)
    if env:
        return Path(env).expanduser()
    return PROJECT_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def inside(path: str | Path, root: Path, field: str) -> Path:
    """``path`` resolved under ``root`` (relative paths are taken from ``root``); refuse any escape from it."""
    root = root.resolve()
    candidate = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if candidate != root and root not in candidate.parents:
        raise KDConfigError(field, str(path), f"a path inside {root}")
    return candidate


def user_folder(path: str | Path | None, field: str, default: Path, root: Path = PROJECT_ROOT) -> Path:
    """A folder named by a parameter (CLI flag, papermill parameter, function argument), checked; ``None`` -> default.

    The rule: a **relative** path is taken from ``root`` (the project folder unless said otherwise), never from the
    current directory, and must stay inside it, so ``--results ../../etc`` is refused. An **absolute** path is the
    user's explicit choice and is accepted as given (e.g. a temporary folder), but no path may hold a ``..`` part,
    so ``/work/project/../../etc`` is refused too. ``~`` is expanded first. Symlinks are resolved before the check.
    Environment variables (``KDLIB_RESULTS``, ...) are the user's own settings and give the defaults unchecked.
    """
    if path is None:
        return Path(default).resolve()
    if not isinstance(path, str | Path) or not str(path).strip():
        raise KDConfigError(field, path, "a folder path (relative paths are taken from the project folder)")
    given = Path(path).expanduser()
    if ".." in given.parts:
        raise KDConfigError(
            field, str(path), f"a path without '..' parts: a folder inside {root.resolve()} or an absolute path"
        )
    if given.is_absolute():
        return given.resolve()
    return inside(given, root, field)


def absolute_path_variables(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with each relative :data:`PATH_VARIABLES` value made absolute from the current directory, for a child
    process that starts elsewhere (a notebook kernel runs in ``notebooks/``, a Ray worker in its own folder): there
    ``KDLIB_RESULTS=figures/full`` would name another store."""
    absolute = dict(env)
    for name in PATH_VARIABLES:
        value = absolute.get(name)
        if value:
            absolute[name] = str(Path.cwd() / Path(value).expanduser())
    return absolute


@contextmanager
def environment(changes: Mapping[str, str]) -> Iterator[None]:
    """Set these environment variables for the ``with`` block; restore each afterwards (unset if it was)."""
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def ray_env() -> Iterator[None]:
    """Environment for Ray's processes (the runner's workers, Flower's simulated clients): the project importable,
    quiet start-up; restored afterwards."""
    path = os.environ.get("PYTHONPATH")
    changes = {
        "PYTHONPATH": str(PROJECT_ROOT) if not path else f"{PROJECT_ROOT}{os.pathsep}{path}",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        **absolute_path_variables({name: os.environ[name] for name in PATH_VARIABLES if name in os.environ}),
    }
    with environment(changes):
        yield
