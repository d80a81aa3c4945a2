"""Image-classification data sets for the study: digits, CIFAR-10/100 and any image-folder tree.

Everything is loaded from local files; nothing is downloaded unless ``download=True``.  Decoded images
are cached as ``<root>/cache/<name>.npz`` (uint8) so that later loads skip the decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdlib.data.archives import check_md5
from kdlib.data.cifar import CIFAR, CIFAR10_CLASSES, load_cifar
from kdlib.data.dataset_cache import RawData
from kdlib.data.image_folder import load_imagefolder
from kdlib.errors import KDConfigError
from kdlib.paths import cifar10_archive as default_archive
from kdlib.paths import data_root as default_root
from kdlib.paths import user_folder
from kdlib.validation import is_int

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "Dataset",
    "check_dataset_name",
    "check_md5",
    "default_archive",
    "default_root",
    "load_dataset",
    "Subsample",
    "stratified_subset",
]

# The ImageNet statistics: the published pre-trained CIFAR checkpoints we load expect exactly these.
CIFAR_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
CIFAR_STD: tuple[float, ...] = (0.229, 0.224, 0.225)

KNOWN_NAMES = "one of digits, cifar10, cifar100, imagefolder:PATH"


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


# ------------------------------------------------------------------------------------------- subsets


def _check_count(n: object, available: int, minimum: int, field_name: str) -> int:
    if not is_int(n, numpy=True):
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


@dataclass(frozen=True)
class Subsample:
    """Seeded stratified subsets of a data set's splits: ``n_train`` / ``n_test`` samples (None = all of it)."""

    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0


ALL_SAMPLES = Subsample()
"""Both splits whole."""


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    subsample: Subsample = ALL_SAMPLES,
    download: bool = False,
    progress: bool = True,
) -> Dataset:
    """Load a data set by name: ``digits``, ``cifar10``, ``cifar100`` or ``imagefolder:PATH``.

    ``subsample`` takes seeded stratified subsets (:class:`Subsample`; by default both splits whole).
    ``root`` defaults to ``$KDLIB_DATA`` or ``<project root>/data``; see ``data/README.md`` for the accepted layouts.
    Paths follow :func:`kdlib.paths.user_folder`: a relative ``root`` is taken from the project folder and a
    relative ``imagefolder:PATH`` from the data root, and neither may leave it; absolute paths are used as given;
    ``..`` parts are refused. Cache files are read with ``allow_pickle=False``.
    """
    key = check_dataset_name(name).strip().lower()
    root = user_folder(root, "root", default_root())
    prefix = "imagefolder:"
    if key == "digits":
        full_name, raw = "digits", _digits()
    elif key in CIFAR:
        full_name, raw = key, load_cifar(CIFAR[key], root, download, progress)
    elif key.startswith(prefix) and name.strip()[len(prefix):]:
        folder = user_folder(name.strip()[len(prefix):], "dataset", root, root=root)
        full_name, raw = f"{prefix}{folder}", load_imagefolder(folder, root, progress)
    else:
        raise KDConfigError("dataset", name, KNOWN_NAMES)
    mean, std = (CIFAR_MEAN, CIFAR_STD) if key in CIFAR else _channel_stats(raw.x_train)
    return _finish(full_name, _subset(raw, subsample), mean, std)


def check_dataset_name(name: object) -> str:
    """Return ``name`` when it names a data set :func:`load_dataset` knows, else raise naming ``dataset``."""
    if isinstance(name, str):
        key = name.strip().lower()
        prefix = "imagefolder:"
        if key == "digits" or key in CIFAR or (key.startswith(prefix) and name.strip()[len(prefix) :].strip()):
            return name
    raise KDConfigError("dataset", name, KNOWN_NAMES)


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


def _subset(raw: RawData, subsample: Subsample) -> RawData:
    """Seeded stratified subsets of the splits (None: all of a split)."""
    parts = {}
    seed = subsample.seed
    for split, n in (("train", subsample.n_train), ("test", subsample.n_test)):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if n is not None:
            idx = stratified_subset(y, n, seed, field_name=f"n_{split}")
            x, y = x[idx], y[idx]
        parts[f"x_{split}"], parts[f"y_{split}"] = x, y
    return dataclasses.replace(raw, **parts)


def _finish(name: str, raw: RawData, mean: tuple[float, ...], std: tuple[float, ...]) -> Dataset:
    parts = {}
    for split in ("train", "test"):
        parts[f"x_{split}"] = _to_tensor(getattr(raw, f"x_{split}"), mean, std)
        parts[f"y_{split}"] = torch.from_numpy(np.asarray(getattr(raw, f"y_{split}"), dtype=np.int64).copy())
    return Dataset(name=name, description=raw.description, class_names=raw.class_names,
                   mean=tuple(mean), std=tuple(std), **parts)


# -------------------------------------------------------------------------------------------- digits


def _digits() -> RawData:
    """scikit-learn's bundled 8x8 digits with a fixed stratified 1,397 / 400 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=400, stratify=y, random_state=0)
    train, test = np.sort(train), np.sort(test)
    names = tuple(str(c) for c in range(10))
    return RawData(x[train], y[train], x[test], y[test], names, "scikit-learn digits 8x8")
