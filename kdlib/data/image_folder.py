"""Image-folder trees (``<folder>/{train,test}/<class>/*``): decoded into uint8 arrays, loaded through the cache."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from kdlib.core.progress import tqdm
from kdlib.data.dataset_cache import RawData, try_cache, write_cache
from kdlib.errors import KDConfigError

__all__ = ["IMAGE_EXTENSIONS", "decode_tree", "load_imagefolder"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def _progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, mininterval=0.5)


def _list_classes(split_dir: Path) -> list[Path]:
    return sorted((p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _list_images(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


def _decode_one(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise KDConfigError("image", str(path), f"a readable image file ({err})") from err


def _decode_split(
    split_dir: Path, class_names: tuple[str, ...], shape: tuple[int, ...] | None, first: Path | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], Path]:
    """Decode every image of one split into (N, H, W, 3) uint8; all images must share one size."""
    files: list[Path] = []
    labels: list[int] = []
    for label, cname in enumerate(class_names):
        found = _list_images(split_dir / cname)
        if not found:
            raise KDConfigError("image folder", str(split_dir / cname), "class folders holding images")
        files += found
        labels += [label] * len(found)
    x: np.ndarray | None = None
    with _progress_bar(len(files), f"decoding {split_dir.name}", progress) as bar:
        for i, path in enumerate(files):
            image = _decode_one(path)
            if shape is None:
                shape, first = image.shape, path
            if image.shape != shape:
                h, w = image.shape[:2]
                raise KDConfigError("image size", f"{path} ({w}x{h})",
                                    f"all images {shape[1]}x{shape[0]} like {first}")
            if x is None:
                x = np.empty((len(files), *shape), dtype=np.uint8)
            x[i] = image
            bar.update(1)
    assert x is not None and shape is not None and first is not None
    return x, np.asarray(labels, dtype=np.int64), shape, first


def decode_tree(folder: Path, description: str, progress: bool) -> RawData:
    """Decode ``folder/{train,test}/<class>/*``; class names are the sorted train folder names."""
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise KDConfigError("image folder", str(folder), "a folder with train/<class>/*, test/<class>/*")
    names = tuple(p.name for p in _list_classes(folder / "train"))
    test_names = tuple(p.name for p in _list_classes(folder / "test"))
    if not names or names != test_names:
        raise KDConfigError("image folder", str(folder),
                            f"the same class folders in train/ and test/ (got {names} and {test_names})")
    x_train, y_train, shape, first = _decode_split(folder / "train", names, None, None, progress)
    x_test, y_test, _, _ = _decode_split(folder / "test", names, shape, first, progress)
    return RawData(x_train, y_train, x_test, y_test, names, description)


def check_layout(folder: Path) -> None:
    """Refuse, in one line, a folder that is not an image folder: it needs ``train/`` and ``test/``, each with one
    sub-folder per class holding images (checked before any file of the tree is read)."""
    allowed = "an image folder: PATH/train/<class>/*.png|jpg and PATH/test/<class>/*.png|jpg"
    for split in ("train", "test"):
        split_dir = folder / split
        if not split_dir.is_dir():
            raise KDConfigError("image folder", str(folder), f"{allowed} (no {split}/ folder in it)")
        classes = _list_classes(split_dir)
        if not classes or not any(_list_images(c) for c in classes):
            raise KDConfigError("image folder", str(folder), f"{allowed} (no class folder with images in {split}/)")


def _fingerprint(folder: Path) -> str:
    """A cheap summary (file count, total size, latest mtime) that changes when the tree changes."""
    count = size = latest = 0
    for dirpath, _, filenames in os.walk(folder):
        for fname in filenames:
            st = os.stat(os.path.join(dirpath, fname))
            count, size, latest = count + 1, size + st.st_size, max(latest, st.st_mtime_ns)
    return f"{count}:{size}:{latest}"


def load_imagefolder(folder: Path, root: Path, progress: bool) -> RawData:
    """Any RGB image-folder tree, cached under root/cache keyed by its absolute path."""
    tag = hashlib.sha1(str(folder).encode(), usedforsecurity=False).hexdigest()[:10]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in folder.name)[:40]
    cache = root / "cache" / f"imagefolder-{safe}-{tag}.npz"
    description = f"image folder {folder.name}"
    raw, stored, problem = try_cache(cache, description)
    if not folder.is_dir():
        if raw is not None:
            return raw
        raise FileNotFoundError(f"image folder {folder} does not exist (and no cache {cache})"
                                + (f"; {problem}" if problem else ""))
    check_layout(folder)
    current = _fingerprint(folder)
    if raw is not None and stored in ("", current):
        return raw
    if raw is not None:
        warnings.warn(f"{folder} changed since {cache} was written; decoding it again", stacklevel=3)
    raw = decode_tree(folder, description, progress)
    write_cache(cache, raw, current)
    return raw
