"""Tests for kdlib.data.datasets: every source is written by the test itself, except the one slow test."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlib.data import cifar
from kdlib.data.datasets import (
    CIFAR10_CLASSES,
    Dataset,
    Subsample,
    check_md5,
    load_dataset,
    stratified_subset,
)
from kdlib.errors import KDConfigError

SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _no_shared_archive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the real shared archive and the user's data folder out of every test unless it opts in."""
    monkeypatch.setenv("KDLIB_CIFAR10_ARCHIVE", str(tmp_path / "no-such-archive.tar.gz"))
    monkeypatch.delenv("KDLIB_DATA", raising=False)


def _unnormalise(ds: Dataset, x: torch.Tensor) -> np.ndarray:
    """Back to uint8 (N, H, W, C)."""
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return (x * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _pixels(i: int) -> np.ndarray:
    """Known test image number i, (32, 32, 3) uint8, different per channel and per image."""
    base = np.arange(1024, dtype=np.int64).reshape(32, 32)
    return np.stack([(base * (c + 1) + 17 * i) % 256 for c in range(3)], axis=-1).astype(np.uint8)


def _record(i: int, labels: tuple[int, ...]) -> bytes:
    planes = _pixels(i).transpose(2, 0, 1)  # R, G, B planes of 32x32
    return bytes(labels) + planes.tobytes()


def _write_cifar10_binary(root: Path) -> tuple[list[int], list[int]]:
    """5 train batches of 2 records (labels 0..9) and a test batch of 3 records."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    y_train = list(range(10))
    for b in range(5):
        data = b"".join(_record(2 * b + k, (y_train[2 * b + k],)) for k in range(2))
        (folder / f"data_batch_{b + 1}.bin").write_bytes(data)
    y_test = [9, 0, 4]
    (folder / "test_batch.bin").write_bytes(b"".join(_record(100 + k, (y,)) for k, y in enumerate(y_test)))
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return y_train, y_test


def _png(path: Path, value: int, size: tuple[int, int] = (6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path)


def _jpeg_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (value, value, value)).save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_jpeg_archive(path: Path, prefix: str = "") -> None:
    """The cifar10-jpeg.tar.gz layout in miniature: 2 train and 1 test JPEG per class."""
    with tarfile.open(path, "w:gz") as tar:
        for c, cname in enumerate(CIFAR10_CLASSES):
            for k in range(2):
                _add(tar, f"{prefix}train/{cname}/{k:04d}.jpg", _jpeg_bytes(20 * c + k))
            _add(tar, f"{prefix}test/{cname}/0000.jpg", _jpeg_bytes(20 * c))


# ----------------------------------------------------------------------------------------------- digits


def test_digits_shapes_and_normalisation() -> None:
    ds = load_dataset("digits", progress=False)
    assert ds.name == "digits" and "digits" in ds.description
    assert ds.x_train.shape == (1397, 1, 8, 8) and ds.x_test.shape == (400, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and ds.in_shape == (1, 8, 8)
    assert len(ds.mean) == len(ds.std) == 1
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-3
    assert set(ds.y_test.tolist()) == set(range(10))


def test_digits_subsets_are_seeded() -> None:
    a = load_dataset("digits", subsample=Subsample(200, 50, 3), progress=False)
    b = load_dataset("digits", subsample=Subsample(200, 50, 3), progress=False)
    c = load_dataset("digits", subsample=Subsample(200, 50, 4), progress=False)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert torch.bincount(a.y_train).tolist() == [20] * 10
    assert torch.bincount(a.y_test).tolist() == [5] * 10
    assert a.mean == c.mean  # statistics come from the whole train split, not the subset


@pytest.mark.parametrize(("n_train", "n_test"), [(5, None), (1398, None), (None, 401), (None, 9), (10.0, None)])
def test_load_rejects_bad_subset_sizes(n_train: int | None, n_test: int | None) -> None:
    with pytest.raises(KDConfigError, match="n_train" if n_train is not None else "n_test"):
        load_dataset("digits", subsample=Subsample(n_train, n_test), progress=False)


# ---------------------------------------------------------------------------------------------- subsets


def test_stratified_subset_balance_and_determinism() -> None:
    y = np.repeat(np.arange(7), [30, 31, 25, 40, 33, 29, 50])
    idx = stratified_subset(y, 50, seed=1)
    assert len(idx) == 50 and np.all(np.diff(idx) > 0) and idx.dtype == np.int64
    counts = np.bincount(y[idx], minlength=7)
    assert counts.max() - counts.min() <= 1
    assert np.array_equal(idx, stratified_subset(y, 50, seed=1))
    assert not np.array_equal(idx, stratified_subset(y, 50, seed=2))
    assert np.array_equal(stratified_subset(y, len(y), seed=0), np.arange(len(y)))


def test_stratified_subset_small_classes_are_filled_first() -> None:
    y = np.array([0] * 2 + [1] * 10 + [2] * 10)
    assert np.bincount(y[stratified_subset(y, 12, seed=0)]).tolist() == [2, 5, 5]


@pytest.mark.parametrize("n", [2, 0, 23, -1])
def test_stratified_subset_rejects_bad_n(n: int) -> None:
    y = np.array([0] * 2 + [1] * 10 + [2] * 10)
    with pytest.raises(KDConfigError, match="between 3"):
        stratified_subset(y, n, seed=0)


# ----------------------------------------------------------------------------------------- CIFAR binary


def test_cifar10_binary_round_trip_and_cache(tmp_path: Path) -> None:
    y_train, y_test = _write_cifar10_binary(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path, progress=False)
    assert ds.description == "CIFAR-10" and ds.class_names == CIFAR10_CLASSES
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
    assert ds.y_train.tolist() == y_train and ds.y_test.tolist() == y_test
    train, test = _unnormalise(ds, ds.x_train), _unnormalise(ds, ds.x_test)
    assert np.array_equal(train[0, :, :, 0], _pixels(0)[:, :, 0])  # R plane of record 0
    assert np.array_equal(train, np.stack([_pixels(i) for i in range(10)]))
    assert np.array_equal(test, np.stack([_pixels(100 + k) for k in range(3)]))
    assert (tmp_path / "cache" / "cifar10.npz").is_file()
    shutil.rmtree(tmp_path / "cifar-10-batches-bin")
    again = load_dataset("cifar10", root=tmp_path, progress=False)
    assert torch.equal(again.x_train, ds.x_train) and again.description == "CIFAR-10"


def test_cifar10_uses_kdlib_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar10_binary(tmp_path / "elsewhere")
    monkeypatch.setenv("KDLIB_DATA", str(tmp_path / "elsewhere"))
    ds = load_dataset("cifar10", subsample=Subsample(10, 3), progress=False)
    assert len(ds.y_train) == 10 and (tmp_path / "elsewhere" / "cache" / "cifar10.npz").is_file()


def test_cifar10_truncated_binary_is_refused(tmp_path: Path) -> None:
    _write_cifar10_binary(tmp_path)
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-5])
    with pytest.raises(KDConfigError, match="data_batch_3.bin"):
        load_dataset("cifar10", root=tmp_path, progress=False)


def test_cifar100_binary_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    fine_train, fine_test = [0, 57, 99, 3], [42, 7]
    folder.joinpath("train.bin").write_bytes(b"".join(_record(i, (19, y)) for i, y in enumerate(fine_train)))
    folder.joinpath("test.bin").write_bytes(b"".join(_record(50 + i, (1, y)) for i, y in enumerate(fine_test)))
    names = [f"class_{i:03d}" for i in range(100)]
    folder.joinpath("fine_label_names.txt").write_text("\n".join(names) + "\n")
    ds = load_dataset("cifar100", root=tmp_path, progress=False)
    assert ds.num_classes == 100 and ds.class_names == tuple(names) and ds.description == "CIFAR-100"
    assert ds.y_train.tolist() == fine_train and ds.y_test.tolist() == fine_test
    assert np.array_equal(_unnormalise(ds, ds.x_test)[1], _pixels(51))


# ----------------------------------------------------------------------------------------- image folder


def _write_tree(folder: Path) -> None:
    for k in range(3):
        _png(folder / "train" / "zebra" / f"{k}.png", 10 + k)
    for k in range(2):
        _png(folder / "train" / "apple" / f"{k}.png", 100 + k)
    _png(folder / "test" / "zebra" / "0.png", 50)
    _png(folder / "test" / "apple" / "0.png", 150)
    (folder / "train" / "apple" / "notes.txt").write_text("not an image")


def test_imagefolder_loads_and_caches(tmp_path: Path) -> None:
    tree, root = tmp_path / "tree", tmp_path / "root"
    _write_tree(tree)
    ds = load_dataset(f"imagefolder:{tree}", root=root, progress=False)
    assert ds.class_names == ("apple", "zebra") and ds.name == f"imagefolder:{tree.resolve()}"
    assert ds.in_shape == (3, 4, 6) and len(ds.mean) == 3
    assert ds.y_train.tolist() == [0, 0, 1, 1, 1] and ds.y_test.tolist() == [0, 1]
    assert abs(ds.x_train.mean().item()) < 1e-4
    assert _unnormalise(ds, ds.x_test)[0, 0, 0].tolist() == [150, 105, 75]
    assert len(list((root / "cache").glob("imagefolder-tree-*.npz"))) == 1
    shutil.rmtree(tree)  # the second load needs only the cache
    again = load_dataset(f"imagefolder:{tree}", root=root, progress=False)
    assert torch.equal(again.x_train, ds.x_train) and again.class_names == ds.class_names


def test_imagefolder_changed_tree_is_decoded_again(tmp_path: Path) -> None:
    tree, root = tmp_path / "tree", tmp_path / "root"
    _write_tree(tree)
    load_dataset(f"imagefolder:{tree}", root=root, progress=False)
    _png(tree / "train" / "apple" / "9.png", 200)
    with pytest.warns(UserWarning, match="changed"):
        ds = load_dataset(f"imagefolder:{tree}", root=root, progress=False)
    assert len(ds.y_train) == 6


def test_imagefolder_requires_one_image_size(tmp_path: Path) -> None:
    _write_tree(tmp_path / "tree")
    _png(tmp_path / "tree" / "test" / "zebra" / "1.png", 0, size=(5, 4))
    with pytest.raises(KDConfigError, match=r"image size.*zebra/1\.png \(5x4\)"):
        load_dataset(f"imagefolder:{tmp_path / 'tree'}", root=tmp_path / "root", progress=False)


def test_imagefolder_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nothing'}", root=tmp_path, progress=False)


# -------------------------------------------------------------------------------------------- archives


@pytest.mark.parametrize("prefix", ["", "CIFAR-10-images/"])
def test_jpeg_archive_is_extracted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    archive = tmp_path / "mini.tar.gz"
    _write_jpeg_archive(archive, prefix)
    monkeypatch.setenv("KDLIB_CIFAR10_ARCHIVE", str(archive))
    ds = load_dataset("cifar10", root=tmp_path / "root", progress=False)
    assert ds.description == "CIFAR-10 (JPEG re-encoded)" and ds.class_names == CIFAR10_CLASSES
    assert torch.bincount(ds.y_train).tolist() == [2] * 10 and ds.y_test.tolist() == list(range(10))
    assert ds.in_shape == (3, 32, 32)
    assert (tmp_path / "root" / "cifar10" / "train" / "truck" / "0001.jpg").is_file()
    assert not [p for p in (tmp_path / "root").iterdir() if p.name.startswith(".")]  # no temp folder left
    archive.unlink()
    shutil.rmtree(tmp_path / "root" / "cifar10")
    assert load_dataset("cifar10", root=tmp_path / "root", progress=False).description.endswith("re-encoded)")


@pytest.mark.parametrize("evil", ["../evil.txt", "train/../../evil.txt", "/tmp/kdlib-evil.txt"])
def test_archive_with_escaping_member_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evil: str) -> None:
    archive = tmp_path / "evil.tar.gz"
    _write_jpeg_archive(archive)
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
        _add(tar, evil, b"gotcha")
    monkeypatch.setenv("KDLIB_CIFAR10_ARCHIVE", str(archive))
    root = tmp_path / "deep" / "root"
    with pytest.raises(KDConfigError, match="archive member"):
        load_dataset("cifar10", root=root, progress=False)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (root / "cifar10").exists()


# ------------------------------------------------------------------------------------- missing, broken


def test_missing_cifar_names_the_layouts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path, progress=False)
    message = str(info.value)
    for part in ("cifar10/train/<class>", "cifar-10-batches-bin", "data_batch_1.bin", "test_batch.bin",
                 "batches.meta.txt", "cifar10.npz", "KDLIB_CIFAR10_ARCHIVE", "download=True", "KDLIB_DATA"):
        assert part in message, part
    with pytest.raises(FileNotFoundError, match="cifar-100-binary"):
        load_dataset("cifar100", root=tmp_path, progress=False)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("content", [
    b"PK\x03\x04 this is not a whole zip file",
    b"plain garbage",
    _npz_bytes(x_train=np.zeros((2, 32, 32, 3), np.uint8)),  # keys missing
    _npz_bytes(x_train=np.zeros((2, 32, 32, 3), np.uint8), y_train=np.zeros(3), x_test=np.zeros((1, 32, 32, 3)),
               y_test=np.zeros(1), class_names=np.array(CIFAR10_CLASSES)),  # shapes and types wrong
])
def test_corrupt_cache_without_source_says_delete_it(tmp_path: Path, content: bytes) -> None:
    cache = tmp_path / "cache" / "cifar10.npz"
    cache.parent.mkdir()
    cache.write_bytes(content)
    with pytest.warns(UserWarning, match="unreadable"), pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path, progress=False)
    assert str(cache) in str(info.value) and "delete it" in str(info.value)


def test_truncated_cache_is_rebuilt_from_source(tmp_path: Path) -> None:
    _write_cifar10_binary(tmp_path)
    first = load_dataset("cifar10", root=tmp_path, progress=False)
    cache = tmp_path / "cache" / "cifar10.npz"
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"cifar10\.npz is unreadable.*delete it"):
        again = load_dataset("cifar10", root=tmp_path, progress=False)
    assert torch.equal(again.x_train, first.x_train)
    with np.load(cache, allow_pickle=False) as npz:  # rewritten whole
        assert npz["x_train"].shape == (10, 32, 32, 3)


@pytest.mark.parametrize("name", ["mnist", "", "imagefolder:", "cifar-10"])
def test_unknown_name(name: str) -> None:
    with pytest.raises(KDConfigError, match="dataset"):
        load_dataset(name, progress=False)


def test_check_md5(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"kdlib" * 1000)
    check_md5(path, hashlib.md5(b"kdlib" * 1000).hexdigest().upper())
    with pytest.raises(KDConfigError, match="md5"):
        check_md5(path, "c32a1d4ab5d03f1284b67883e8d87530")


def test_download_path_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=True, exercised with a file:// URL standing in for the official archive."""
    _write_cifar10_binary(tmp_path / "src")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    spec = dataclasses.replace(cifar.CIFAR["cifar10"], url=archive.as_uri(),
                               md5=hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setitem(cifar.CIFAR, "cifar10", spec)
    ds = load_dataset("cifar10", root=tmp_path / "a", download=True, progress=False)
    assert ds.y_train.tolist() == list(range(10)) and (tmp_path / "a" / archive.name).is_file()
    (tmp_path / "b").mkdir()
    shutil.copy(archive, tmp_path / "b" / archive.name)  # a local copy is used without download=True
    assert load_dataset("cifar10", root=tmp_path / "b", progress=False).description == "CIFAR-10"
    monkeypatch.setitem(cifar.CIFAR, "cifar10", dataclasses.replace(spec, md5="0" * 32))
    with pytest.raises(KDConfigError, match="md5"):
        load_dataset("cifar10", root=tmp_path / "c", download=True, progress=False)
    assert list((tmp_path / "c").iterdir()) == []  # a damaged download is not kept


# --------------------------------------------------------------------------------------- the real data


@pytest.mark.slow
def test_real_shared_archive(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"the shared CIFAR-10 JPEG archive is not at {SHARED_ARCHIVE}")
    monkeypatch.delenv("KDLIB_CIFAR10_ARCHIVE")
    ds = load_dataset("cifar10", root=tmp_path_factory.mktemp("real"), subsample=Subsample(1000, 500), progress=False)
    assert ds.class_names == CIFAR10_CLASSES and "JPEG" in ds.description
    assert ds.x_train.shape == (1000, 3, 32, 32) and ds.x_test.shape == (500, 3, 32, 32)
    assert torch.bincount(ds.y_train).tolist() == [100] * 10
    assert abs(ds.x_train.mean().item()) < 0.5
