"""Model checkpoints as safetensors files (no pickle), written atomically, with a JSON side-car of metadata.

The side-car also holds the SHA-256 digest of the weights file and one of its own content (``"__weights__"``);
loading verifies both before either is trusted, so damaged weights fail with a message instead of giving a model that
silently scores 10%, and an edited side file (a teacher's ``test_acc`` changed by hand) is refused instead of being
stored with every later run.
Files are written with the permissions the umask allows (like any other file the user writes), and a file that
cannot be read for lack of permission is reported as that, not as corrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from kdlib.core.disk import writing
from kdlib.errors import KDConfigError

WEIGHTS_FIELD = "__weights__"
"""The side-car entry ``{"sha256": ..., "bytes": ..., "meta_sha256": ...}``: the weights file's digest and size,
and the digest of the side-car's content (:func:`metadata_digest`); ``load_checkpoint`` strips it."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish(tmp: str | Path, path: Path) -> None:
    """Give ``tmp`` (made 0600 by ``mkstemp``) the mode a new file gets under the umask, then move it to ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with writing(path, tmp), os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s weights to ``path`` (.safetensors) and ``meta`` beside it (.json); both atomically.

    The weights go to a temporary file first, its digest into the side-car, which is written next; the weights file
    is moved into place last, as the commit mark: a process killed at any point leaves either a complete checkpoint
    (weights and metadata with their digest) or no weights file at all (then the party is simply trained again); at
    most a hidden ``.<name>.*.tmp`` file stays behind, never a half checkpoint.
    """
    path = Path(path)
    meta = dict(meta or {})
    if WEIGHTS_FIELD in meta:
        raise KDConfigError("meta", WEIGHTS_FIELD, f"metadata without the reserved key {WEIGHTS_FIELD!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with writing(path, tmp):
            save_model(model, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        data = Path(tmp).read_bytes()
        weights = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        meta = json.loads(json.dumps(meta, default=str))  # what the side file will hold, and its digest cover
        meta[WEIGHTS_FIELD] = {**weights, "meta_sha256": metadata_digest(meta, weights)}
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1, default=str).encode())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def metadata_digest(meta: dict[str, Any], weights: dict[str, Any]) -> str:
    """The SHA-256 of a side-car's content: its metadata (as JSON, keys sorted) and the weights' digest and size."""
    payload = {"meta": meta, "weights": {"sha256": weights.get("sha256"), "bytes": weights.get("bytes")}}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_checkpoint(model: nn.Module, path: str | Path, required: Iterable[str] = ()) -> dict[str, Any]:
    """Load weights saved by ``save_checkpoint`` into ``model`` (strictly); return the metadata.

    Before the weights and the metadata are trusted, their SHA-256 digests are checked against the side-car's. A
    missing side-car, one without the digests or without a ``required`` field, a side-car whose content was edited,
    weights whose digest does not match, and a truncated or corrupted file all raise :class:`KDConfigError` (a
    ``ValueError``) naming the file and saying to delete it; a file this user may not read raises
    ``PermissionError``. Only safetensors are read: nothing is unpickled.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}")
    meta = _read_side_car(path)
    weights = meta.pop(WEIGHTS_FIELD, None)
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str):
        raise KDConfigError(
            "checkpoint metadata",
            str(path.with_suffix(".json")),
            f"a side file holding the digest of {path.name} ('{WEIGHTS_FIELD}'), which this one lacks (an older "
            f"kdlib wrote it, or it was edited): delete it and {path.name} and rerun",
        )
    missing = [name for name in required if name not in meta]
    if missing:
        raise KDConfigError(
            "checkpoint metadata",
            str(path.with_suffix(".json")),
            f"a side file with the fields {', '.join(missing)}, which it lacks: delete it and {path.name} and rerun",
        )
    _check_metadata(path, meta, weights)
    data = _read(path)
    if hashlib.sha256(data).hexdigest() != weights["sha256"]:
        raise KDConfigError(
            "checkpoint",
            str(path),
            f"weights whose SHA-256 matches their side file's, but they differ ({len(data)} bytes, "
            f"{weights.get('bytes')} written): the file is damaged (corrupted or truncated). Delete it and rerun: it "
            "will be trained again",
        )
    try:
        load_model(model, str(path), strict=True, device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise KDConfigError(
            "checkpoint",
            str(path),
            f"a complete safetensors file that fits the model, but it is corrupted or does not fit the model "
            f"({error}). Delete it and rerun: it will be trained again",
        ) from error
    return meta


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise PermissionError(
            f"Cannot read {path}: permission denied (mode {path.stat().st_mode & 0o777:o}, owner uid "
            f"{path.stat().st_uid}). The file is not damaged: make it readable, or set KDLIB_CACHE to a folder of "
            "your own"
        ) from None


def _read_side_car(path: Path) -> dict[str, Any]:
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        raise KDConfigError(
            "checkpoint metadata",
            str(meta_path),
            f"the side file written with {path.name} (its metadata and digest), which is missing: delete "
            f"{path.name} and rerun",
        )
    try:
        meta = json.loads(_read(meta_path).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KDConfigError(
            "checkpoint metadata",
            str(meta_path),
            f"a JSON object, but it is corrupted ({error}). Delete it and {path.name} and rerun",
        ) from error
    if not isinstance(meta, dict):
        raise KDConfigError("checkpoint metadata", str(meta_path), "a JSON object; delete it and rerun")
    return meta


def _check_metadata(path: Path, meta: dict[str, Any], weights: dict[str, Any]) -> None:
    """The side-car's content against its own digest: refused when it was edited, or written without one."""
    meta_path = path.with_suffix(".json")
    stored = weights.get("meta_sha256")
    if not isinstance(stored, str):
        allowed = (
            f"a side file holding the digest of its own content, which this one lacks (an older kdlib wrote it): "
            f"delete the checkpoint cache {path.parent} (or {path.name} and {meta_path.name}) and rerun: the "
            "models will be trained again"
        )
        raise KDConfigError("checkpoint metadata", str(meta_path), allowed)
    if metadata_digest(meta, weights) != stored:
        allowed = (
            f"the side file as written with {path.name}, but its content no longer matches its digest (it was "
            f"edited or damaged): delete it and {path.name} and rerun: the model will be trained again"
        )
        raise KDConfigError("checkpoint metadata", str(meta_path), allowed)


def config_key(payload: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able dict: the identity of a run, a checkpoint or a cache entry."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
