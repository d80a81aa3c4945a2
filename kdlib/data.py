"""Image-classification data sets for the study: digits, CIFAR-10/100 and any image-folder tree.

Everything is loaded from local files; nothing is downloaded unless ``download=True``.  Decoded images
are cached as ``<root>/cache/<name>.npz`` (uint8) so that later loads take a second or two.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdlib.errors import KDConfigError
from kdlib.paths import check_folder_path, user_folder
from kdlib.progress import tqdm

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "Dataset",
    "check_dataset_name",
    "check_md5",
    "default_root",
    "load_dataset",
    "stratified_subset",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# The ImageNet statistics: the published pre-trained CIFAR checkpoints we load expect exactly these.
CIFAR_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
CIFAR_STD: tuple[float, ...] = (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
KNOWN_NAMES = "one of digits, cifar10, cifar100, imagefolder:PATH"
ARCHIVE_ENV = "KDLIB_CIFAR10_ARCHIVE"
DATA_ENV = "KDLIB_DATA"
_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")


@dataclass(frozen=True)
class _CifarSpec:
    """Where each form of one CIFAR data set lives and what it looks like."""

    name: str
    title: str
    num_classes: int
    binary_dir: str
    train_files: tuple[str, ...]
    test_file: str
    names_file: str
    label_bytes: int
    url: str
    md5: str

    @property
    def archive_name(self) -> str:
        """File name of the official archive, e.g. cifar-10-binary.tar.gz."""
        return self.url.rsplit("/", 1)[-1]


_CIFAR: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec(
        "cifar10", "CIFAR-10", 10, "cifar-10-batches-bin",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin", "batches.meta.txt", 1,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
    ),
    "cifar100": _CifarSpec(
        "cifar100", "CIFAR-100", 100, "cifar-100-binary",
        ("train.bin",), "test.bin", "fine_label_names.txt", 2,
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
    ),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A normalised train/test split: x float32 (N, C, H, W), y int64 (N,)."""

    name: str
    description: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Shape of one input, (C, H, W)."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


@dataclass
class _Raw:
    """Decoded images before normalisation: x (N, H, W, C), uint8 or float32 in [0, 1]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    description: str


# ----------------------------------------------------------------------------------------------- paths


def project_root() -> Path:
    """The folder that holds the kdlib package."""
    return Path(__file__).resolve().parent.parent


def default_root() -> Path:
    """``$KDLIB_DATA`` if set, else ``<project root>/data``."""
    env = os.environ.get(DATA_ENV)
    return check_folder_path(DATA_ENV, Path(env).expanduser().resolve()) if env else project_root() / "data"


def default_archive() -> Path:
    """``$KDLIB_CIFAR10_ARCHIVE`` if set, else ``<project root>/../shared/data/cifar10-jpeg.tar.gz``."""
    env = os.environ.get(ARCHIVE_ENV)
    if env:
        return Path(env).expanduser()
    return project_root().parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


# ------------------------------------------------------------------------------------------- subsets


def _check_count(n: object, available: int, minimum: int, field_name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise KDConfigError(field_name, n, f"an int between {minimum} and {available}, or None for all")
    if not minimum <= n <= available:
        raise KDConfigError(
            field_name, n, f"between {minimum} (one per class) and {available} (all available), or None"
        )
    return int(n)


def _quotas(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Spread n over classes as evenly as their sizes allow; leftover units go to random classes."""
    quota = np.zeros_like(counts)
    remaining = n
    while remaining > 0:
        open_classes = np.flatnonzero(quota < counts)
        share = remaining // len(open_classes)
        if share == 0:
            quota[rng.choice(open_classes, size=remaining, replace=False)] += 1
            break
        add = np.minimum(share, counts[open_classes] - quota[open_classes])
        quota[open_classes] += add
        remaining -= int(add.sum())
    return quota


def stratified_subset(y: np.ndarray, n: int, seed: int, *, field_name: str = "n") -> np.ndarray:
    """Sorted indices of n samples with class counts equal up to one (as far as class sizes allow).

    The same (y, n, seed) always gives the same indices.
    """
    y = np.asarray(y)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    n = _check_count(n, len(y), len(classes), field_name)
    rng = np.random.default_rng(seed)
    quota = _quotas(counts, n, rng)
    picked = [
        rng.choice(np.flatnonzero(inverse == c), size=int(q), replace=False)
        for c, q in enumerate(quota)
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


# --------------------------------------------------------------------------------------------- public


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> Dataset:
    """Load a data set by name: ``digits``, ``cifar10``, ``cifar100`` or ``imagefolder:PATH``.

    ``n_train`` / ``n_test`` take seeded stratified subsets (None = all).  ``root`` defaults to
    ``$KDLIB_DATA`` or ``<project root>/data``; see ``data/README.md`` for the accepted layouts.
    Paths follow :func:`kdlib.paths.user_folder`: a relative ``root`` is taken from the project folder and a
    relative ``imagefolder:PATH`` from the data root, and neither may leave it; absolute paths are used as given;
    ``..`` parts are refused. Cache files are read with ``allow_pickle=False``.
    """
    key = check_dataset_name(name).strip().lower()
    root = user_folder(root, "root", default_root())
    prefix = "imagefolder:"
    if key == "digits":
        full_name, raw = "digits", _digits()
    elif key in _CIFAR:
        full_name, raw = key, _load_cifar(_CIFAR[key], root, download, progress)
    elif key.startswith(prefix) and name.strip()[len(prefix):]:
        folder = user_folder(name.strip()[len(prefix):], "dataset", root, root=root)
        full_name, raw = f"{prefix}{folder}", _load_imagefolder(folder, root, progress)
    else:
        raise KDConfigError("dataset", name, KNOWN_NAMES)
    mean, std = (CIFAR_MEAN, CIFAR_STD) if key in _CIFAR else _channel_stats(raw.x_train)
    return _finish(full_name, raw, mean, std, n_train, n_test, seed)


def check_dataset_name(name: object) -> str:
    """Return ``name`` when it names a data set :func:`load_dataset` knows, else raise naming ``dataset``."""
    if isinstance(name, str):
        key = name.strip().lower()
        prefix = "imagefolder:"
        if key == "digits" or key in _CIFAR or (key.startswith(prefix) and name.strip()[len(prefix) :].strip()):
            return name
    raise KDConfigError("dataset", name, KNOWN_NAMES)


def check_md5(path: str | Path, expected: str) -> None:
    """Raise KDConfigError unless the file's md5 hex digest equals ``expected``."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected.lower():
        raise KDConfigError("md5", actual, f"{expected} for {path}: the file is damaged, delete it and retry")


# ------------------------------------------------------------------------------------ normalise + pick


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of x (N, H, W, C) scaled to [0, 1], in chunks to spare memory."""
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    total = np.zeros(x.shape[-1])
    squares = np.zeros(x.shape[-1])
    for start in range(0, len(x), 4096):
        chunk = x[start:start + 4096].reshape(-1, x.shape[-1]).astype(np.float64) / scale
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
    count = x.size // x.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _to_tensor(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N, H, W, C) uint8 or [0, 1] floats -> normalised float32 (N, C, H, W), contiguous."""
    n, h, w, c = x.shape
    out = torch.empty((n, c, h, w), dtype=torch.float32)
    out.copy_(torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2))
    if x.dtype == np.uint8:
        out.div_(255.0)
    out.sub_(torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
    out.div_(torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))
    return out


def _finish(
    name: str, raw: _Raw, mean: tuple[float, ...], std: tuple[float, ...],
    n_train: int | None, n_test: int | None, seed: int,
) -> Dataset:
    parts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if n is not None:
            idx = stratified_subset(y, n, seed, field_name=f"n_{split}")
            x, y = x[idx], y[idx]
        parts[f"x_{split}"] = _to_tensor(x, mean, std)
        parts[f"y_{split}"] = torch.from_numpy(np.asarray(y, dtype=np.int64).copy())
    return Dataset(name=name, description=raw.description, class_names=raw.class_names,
                   mean=tuple(mean), std=tuple(std), **parts)


# -------------------------------------------------------------------------------------------- digits


def _digits() -> _Raw:
    """scikit-learn's bundled 8x8 digits with a fixed stratified 1,397 / 400 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=400, stratify=y, random_state=0)
    train, test = np.sort(train), np.sort(test)
    names = tuple(str(c) for c in range(10))
    return _Raw(x[train], y[train], x[test], y[test], names, "scikit-learn digits 8x8")


# ---------------------------------------------------------------------------------------------- cache


class _BadCache(Exception):
    """The cache file exists but cannot be used."""


def _read_cache(path: Path, default_description: str) -> tuple[_Raw, str]:
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
        raise _BadCache(f"{type(err).__name__}: {err}") from err
    raw = _Raw(arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
               arrays["y_test"].astype(np.int64), tuple(str(c) for c in arrays["class_names"]), description)
    problem = _check_raw(raw)
    if problem:
        raise _BadCache(problem)
    return raw, fingerprint


def _check_raw(raw: _Raw) -> str:
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


def _write_cache(path: Path, raw: _Raw, fingerprint: str = "") -> None:
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


def _try_cache(path: Path, default_description: str) -> tuple[_Raw | None, str, str]:
    """(data, fingerprint, problem): data is None when the cache is missing or unreadable."""
    if not path.is_file():
        return None, "", ""
    try:
        raw, fingerprint = _read_cache(path, default_description)
    except _BadCache as err:
        problem = f"the cache file {path} is unreadable ({err}); delete it"
        warnings.warn(f"{problem}. Rebuilding it from the source files if they are found.", stacklevel=3)
        return None, "", problem
    return raw, fingerprint, ""


# ------------------------------------------------------------------------------------------ decoding


def _progress_bar(total: int, desc: str, enabled: bool, unit: str = "img") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", disable=not enabled,
                mininterval=0.5)


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


def _decode_tree(folder: Path, description: str, progress: bool) -> _Raw:
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
    return _Raw(x_train, y_train, x_test, y_test, names, description)


def _fingerprint(folder: Path) -> str:
    """A cheap summary (file count, total size, latest mtime) that changes when the tree changes."""
    count = size = latest = 0
    for dirpath, _, filenames in os.walk(folder):
        for fname in filenames:
            st = os.stat(os.path.join(dirpath, fname))
            count, size, latest = count + 1, size + st.st_size, max(latest, st.st_mtime_ns)
    return f"{count}:{size}:{latest}"


# --------------------------------------------------------------------------------------- imagefolder


def _load_imagefolder(folder: Path, root: Path, progress: bool) -> _Raw:
    """Any RGB image-folder tree, cached under root/cache keyed by its absolute path."""
    tag = hashlib.sha1(str(folder).encode(), usedforsecurity=False).hexdigest()[:10]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in folder.name)[:40]
    cache = root / "cache" / f"imagefolder-{safe}-{tag}.npz"
    description = f"image folder {folder.name}"
    raw, stored, problem = _try_cache(cache, description)
    if not folder.is_dir():
        if raw is not None:
            return raw
        raise FileNotFoundError(f"image folder {folder} does not exist (and no cache {cache})"
                                + (f"; {problem}" if problem else ""))
    current = _fingerprint(folder)
    if raw is not None and stored in ("", current):
        return raw
    if raw is not None:
        warnings.warn(f"{folder} changed since {cache} was written; decoding it again", stacklevel=3)
    raw = _decode_tree(folder, description, progress)
    _write_cache(cache, raw, current)
    return raw


# --------------------------------------------------------------------------------------------- CIFAR


def _load_cifar(spec: _CifarSpec, root: Path, download: bool, progress: bool) -> _Raw:
    """Cache, then image folder, then official binaries, then the JPEG archive, then download."""
    cache = root / "cache" / f"{spec.name}.npz"
    raw, _, problem = _try_cache(cache, spec.title)
    if raw is not None:
        _check_cifar_classes(spec, raw.class_names, cache)
        return raw
    raw = _cifar_from_sources(spec, root, download, progress)
    if raw is None:
        raise FileNotFoundError(_missing_message(spec, root, problem))
    _check_cifar_classes(spec, raw.class_names, root)
    if raw.x_train.shape[1:] != (32, 32, 3):
        raise KDConfigError(f"{spec.name} image size", raw.x_train.shape[1:3], "32x32 RGB images")
    _write_cache(cache, raw)
    return raw


def _cifar_from_sources(spec: _CifarSpec, root: Path, download: bool, progress: bool) -> _Raw | None:
    folder = root / spec.name
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return _decode_tree(folder, _folder_description(spec, folder), progress)
    if (root / spec.binary_dir).is_dir():
        return _read_cifar_binary(spec, root / spec.binary_dir)
    archive = default_archive()
    if spec.name == "cifar10" and archive.is_file():
        _extract_tree(archive, folder, progress)
        return _decode_tree(folder, _folder_description(spec, folder), progress)
    if download or (root / spec.archive_name).is_file():
        _fetch_binary(spec, root, progress)
        return _read_cifar_binary(spec, root / spec.binary_dir)
    return None


def _folder_description(spec: _CifarSpec, folder: Path) -> str:
    """'CIFAR-10 (JPEG re-encoded)' when the tree holds JPEGs (lossy copy), else the plain title."""
    jpeg = any(p.suffix.lower() in (".jpg", ".jpeg") for p in (folder / "test").rglob("*"))
    return f"{spec.title} (JPEG re-encoded)" if jpeg else spec.title


def _check_cifar_classes(spec: _CifarSpec, names: tuple[str, ...], where: Path) -> None:
    if len(names) != spec.num_classes or (spec.name == "cifar10" and names != CIFAR10_CLASSES):
        expected = CIFAR10_CLASSES if spec.name == "cifar10" else f"{spec.num_classes} classes"
        raise KDConfigError(f"{spec.name} classes in {where}", names, str(expected))


def _read_records(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR binary file: (x uint8 (N, 32, 32, 3), last label byte int64 (N,))."""
    record = label_bytes + 3 * 32 * 32
    if not path.is_file():
        raise FileNotFoundError(f"missing CIFAR binary file {path}")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % record:
        raise KDConfigError("CIFAR binary file", str(path),
                            f"a whole number of {record}-byte records (got {data.size} bytes); re-extract it")
    rows = data.reshape(-1, record)
    x = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), rows[:, label_bytes - 1].astype(np.int64)


def _read_names(spec: _CifarSpec, folder: Path) -> tuple[str, ...]:
    path = folder / spec.names_file
    if not path.is_file():
        if spec.name == "cifar10":
            return CIFAR10_CLASSES
        raise FileNotFoundError(f"missing {path} (the class-name list of the official binary version)")
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def _read_cifar_binary(spec: _CifarSpec, folder: Path) -> _Raw:
    """The official binary version (parsed with numpy, never unpickled)."""
    parts = [_read_records(folder / f, spec.label_bytes) for f in spec.train_files]
    x_test, y_test = _read_records(folder / spec.test_file, spec.label_bytes)
    raw = _Raw(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
               x_test, y_test, _read_names(spec, folder), spec.title)
    problem = _check_raw(raw)
    if problem:
        raise KDConfigError("CIFAR binary files", str(folder), f"consistent records ({problem})")
    return raw


# ------------------------------------------------------------------------------------ archives, download


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse absolute paths and '..' before tarfile's own 'data' filter runs."""
    name = member.name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in name.split("/"):
        raise KDConfigError("archive member", member.name, f"a relative path without '..' inside {archive}")


def _safe_extract(archive: Path, dest: Path, progress: bool) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", disable=not progress,
                           mininterval=0.5):
            tar.extract(member, dest, filter="data")


def _extract_tree(archive: Path, folder: Path, progress: bool) -> None:
    """Extract an image-folder archive into folder (via a temp folder, so no half-extracted tree remains)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-extract-"))
    try:
        _safe_extract(archive, tmp, progress)
        top = tmp
        subdirs = [p for p in tmp.iterdir() if p.is_dir()]
        if not (tmp / "train").is_dir() and len(subdirs) == 1:
            top = subdirs[0]  # the archive wraps the tree in one folder
        if not ((top / "train").is_dir() and (top / "test").is_dir()):
            raise KDConfigError("archive", str(archive), "a tar with train/<class>/*.jpg, test/<class>/*.jpg")
        if not folder.exists():
            try:
                os.replace(top, folder)
            except OSError:
                if not folder.is_dir():  # another process may have just put it there
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_binary(spec: _CifarSpec, root: Path, progress: bool) -> None:
    """Download the official binary archive unless it is in root already, verify its md5, extract it."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.archive_name
    if target.is_file():
        check_md5(target, spec.md5)
    else:
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{target.name}-", suffix=".part")
        os.close(fd)
        try:
            with _progress_bar(0, f"downloading {target.name}", progress, unit="B") as bar:
                urllib.request.urlretrieve(spec.url, tmp, reporthook=_report_hook(bar))
            check_md5(tmp, spec.md5)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    _safe_extract(target, root, progress)


def _report_hook(bar: tqdm) -> Callable[[int, int, int], None]:
    def hook(blocks: int, block_size: int, total: int) -> None:
        if total > 0:
            bar.total = total
        bar.update(blocks * block_size - bar.n)

    return hook


def _missing_message(spec: _CifarSpec, root: Path, problem: str) -> str:
    """Say exactly which files to put where."""
    lines = [
        f"{spec.title} was not found under {root}. Provide one of these layouts:",
        f"  1. image-folder tree: {root / spec.name}/train/<class>/*.jpg|png and "
        f"{root / spec.name}/test/<class>/*.jpg|png ({spec.num_classes} class folders, 32x32 RGB images)",
        f"  2. official binary version: {root / spec.binary_dir}/"
        + "{" + ", ".join((*spec.train_files, spec.test_file, spec.names_file)) + "}",
        f"  3. a decoded cache: {root / 'cache' / spec.name}.npz "
        "(uint8 x_train (N, 32, 32, 3), y_train, x_test, y_test, class_names)",
    ]
    if spec.name == "cifar10":
        lines.append(f"  4. the JPEG archive cifar10-jpeg.tar.gz at {default_archive()} "
                     f"(set {ARCHIVE_ENV} to its path); it is extracted into {root / spec.name}")
    lines.append(f"  or the official archive itself: {root / spec.archive_name} (it is verified and extracted)")
    lines.append(f"Or pass download=True to fetch {spec.url} (needs internet), "
                 f"or set {DATA_ENV} (or root=) to the folder that holds the data.")
    if problem:
        lines.append(f"Also: {problem}.")
    return "\n".join(lines)
