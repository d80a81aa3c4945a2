"""Model checkpoints as safetensors files (no pickle), written atomically, with a JSON side-car of metadata."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from kdlib.errors import KDConfigError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s weights to ``path`` (.safetensors) and ``meta`` beside it (.json); both atomically.

    The side-car is written first and the weights last, so the weights file is the commit mark: a process killed at
    any point leaves either a complete checkpoint (weights and metadata) or no weights file at all (then the party
    is simply trained again); at most a hidden ``.<name>.*.tmp`` file stays behind, never a half checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta or {}, indent=1, default=str).encode())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load weights saved by ``save_checkpoint`` into ``model`` (strictly); return the metadata.

    A truncated or corrupted file (weights or metadata) raises :class:`KDConfigError` (a ``ValueError``) naming the
    file and saying to delete it. Only safetensors are read: nothing is unpickled.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        load_model(model, str(path), strict=True, device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise KDConfigError(
            "checkpoint",
            str(path),
            f"a complete safetensors file that fits the model, but it is corrupted or does not fit the model "
            f"({error}). Delete it and rerun: it will be trained again",
        ) from error
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KDConfigError(
            "checkpoint metadata",
            str(meta_path),
            f"a JSON object, but it is corrupted ({error}). Delete it and {path.name} and rerun",
        ) from error
    if not isinstance(meta, dict):
        raise KDConfigError("checkpoint metadata", str(meta_path), "a JSON object; delete it and rerun")
    return meta
