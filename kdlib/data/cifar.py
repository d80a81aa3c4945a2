"""CIFAR-10/100 from whichever local form is present: the cache, an image-folder tree, the official binary version,
the JPEG archive, or (when asked) the official archive downloaded and verified."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdlib.data.archives import check_md5, download_verified, extract_tree, safe_extract
from kdlib.data.dataset_cache import RawData, check_raw, try_cache, write_cache
from kdlib.data.image_folder import decode_tree
from kdlib.errors import KDConfigError
from kdlib.paths import ARCHIVE_ENV, DATA_ENV, cifar10_archive

__all__ = ["CIFAR", "CIFAR10_CLASSES", "CifarSpec", "load_cifar"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


@dataclass(frozen=True)
class CifarSpec:
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


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        "cifar10", "CIFAR-10", 10, "cifar-10-batches-bin",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin", "batches.meta.txt", 1,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
    ),
    "cifar100": CifarSpec(
        "cifar100", "CIFAR-100", 100, "cifar-100-binary",
        ("train.bin",), "test.bin", "fine_label_names.txt", 2,
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
    ),
}


def load_cifar(spec: CifarSpec, root: Path, download: bool, progress: bool) -> RawData:
    """Cache, then image folder, then official binaries, then the JPEG archive, then download."""
    cache = root / "cache" / f"{spec.name}.npz"
    raw, _, problem = try_cache(cache, spec.title)
    if raw is not None:
        _check_cifar_classes(spec, raw.class_names, cache)
        return raw
    raw = _cifar_from_sources(spec, root, download, progress)
    if raw is None:
        raise FileNotFoundError(_missing_message(spec, root, problem))
    _check_cifar_classes(spec, raw.class_names, root)
    if raw.x_train.shape[1:] != (32, 32, 3):
        raise KDConfigError(f"{spec.name} image size", raw.x_train.shape[1:3], "32x32 RGB images")
    write_cache(cache, raw)
    return raw


def _cifar_from_sources(spec: CifarSpec, root: Path, download: bool, progress: bool) -> RawData | None:
    folder = root / spec.name
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return decode_tree(folder, _folder_description(spec, folder), progress)
    if (root / spec.binary_dir).is_dir():
        return _read_cifar_binary(spec, root / spec.binary_dir)
    archive = cifar10_archive()
    if spec.name == "cifar10" and archive.is_file():
        extract_tree(archive, folder, progress)
        return decode_tree(folder, _folder_description(spec, folder), progress)
    if download or (root / spec.archive_name).is_file():
        _fetch_binary(spec, root, progress)
        return _read_cifar_binary(spec, root / spec.binary_dir)
    return None


def _folder_description(spec: CifarSpec, folder: Path) -> str:
    """'CIFAR-10 (JPEG re-encoded)' when the tree holds JPEGs (lossy copy), else the plain title."""
    jpeg = any(p.suffix.lower() in (".jpg", ".jpeg") for p in (folder / "test").rglob("*"))
    return f"{spec.title} (JPEG re-encoded)" if jpeg else spec.title


def _check_cifar_classes(spec: CifarSpec, names: tuple[str, ...], where: Path) -> None:
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


def _read_names(spec: CifarSpec, folder: Path) -> tuple[str, ...]:
    path = folder / spec.names_file
    if not path.is_file():
        if spec.name == "cifar10":
            return CIFAR10_CLASSES
        raise FileNotFoundError(f"missing {path} (the class-name list of the official binary version)")
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def _read_cifar_binary(spec: CifarSpec, folder: Path) -> RawData:
    """The official binary version (parsed with numpy, never unpickled)."""
    parts = [_read_records(folder / f, spec.label_bytes) for f in spec.train_files]
    x_test, y_test = _read_records(folder / spec.test_file, spec.label_bytes)
    raw = RawData(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                  x_test, y_test, _read_names(spec, folder), spec.title)
    problem = check_raw(raw)
    if problem:
        raise KDConfigError("CIFAR binary files", str(folder), f"consistent records ({problem})")
    return raw


def _fetch_binary(spec: CifarSpec, root: Path, progress: bool) -> None:
    """Download the official binary archive unless it is in root already, verify its md5, extract it."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.archive_name
    if target.is_file():
        check_md5(target, spec.md5)
    else:
        download_verified(spec.url, target, spec.md5, progress)
    safe_extract(target, root, progress)


def _missing_message(spec: CifarSpec, root: Path, problem: str) -> str:
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
        lines.append(f"  4. the JPEG archive cifar10-jpeg.tar.gz at {cifar10_archive()} "
                     f"(set {ARCHIVE_ENV} to its path); it is extracted into {root / spec.name}")
    lines.append(f"  or the official archive itself: {root / spec.archive_name} (it is verified and extracted)")
    lines.append(f"Or pass download=True to fetch {spec.url} (needs internet), "
                 f"or set {DATA_ENV} (or root=) to the folder that holds the data.")
    if problem:
        lines.append(f"Also: {problem}.")
    return "\n".join(lines)
