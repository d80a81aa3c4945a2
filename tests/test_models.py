"""Tests for kdlib.core.models: shapes, ResNet structure, published checkpoints, transformers round trip."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdlib.core.models import (
    MODEL_NAMES,
    PRETRAINED_RESNETS,
    RESNET_BLOCKS,
    ResNetCIFAR,
    ShortcutA,
    build_model,
    count_parameters,
    default_pretrained_folder,
    load_hf_model,
    load_pretrained_resnet,
    save_hf_model,
)
from kdlib.errors import KDConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRETRAINED = default_pretrained_folder()
CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _checkpoint(name: str) -> Path | None:
    files = sorted(PRETRAINED.glob(f"{name}-*.th")) if PRETRAINED.is_dir() else []
    return files[0] if files else None


@pytest.mark.parametrize("in_shape", [(3, 32, 32), (1, 8, 8)], ids=["cifar", "digits"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward(name: str, in_shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, 7, in_shape)
    model.train()
    logits = model(torch.randn(3, *in_shape))
    assert isinstance(logits, torch.Tensor) and type(logits) is torch.Tensor
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list(RESNET_BLOCKS))
def test_resnet_depth(name: str) -> None:
    model = build_model(name, 10, (3, 32, 32))
    n = RESNET_BLOCKS[name]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 6 * n + 1 and len(linears) == 1
    assert int(name.removeprefix("resnet")) == 6 * n + 2 == model.depth
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [n, n, n]


def test_resnet_parameter_counts() -> None:
    # published figures (He et al. 2016, table 6): ResNet-20 0.27M, ResNet-56 0.85M
    assert count_parameters(build_model("resnet20", 10, (3, 32, 32))) == pytest.approx(0.27e6, abs=0.005e6)
    assert count_parameters(build_model("resnet56", 10, (3, 32, 32))) == pytest.approx(0.85e6, abs=0.005e6)


def test_option_a_shortcut_is_parameter_free() -> None:
    shortcut = ShortcutA(16, 32, 2)
    assert count_parameters(shortcut) == 0 and not list(shortcut.buffers())
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()
    model = build_model("resnet20", 10, (3, 32, 32))
    shortcuts = [m for m in model.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2
    # every parameter belongs to a conv, a BN or the linear layer: nothing in the shortcuts
    per_layer = sum(count_parameters(m) for m in model.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d))
    assert per_layer + count_parameters(model.linear) == count_parameters(model)


def test_unknown_model_name() -> None:
    with pytest.raises(KDConfigError, match="model") as info:
        build_model("resnet18", 10, (3, 32, 32))
    assert "resnet20" in str(info.value)
    with pytest.raises(KDConfigError, match="in_shape"):
        build_model("cnn", 10, (32, 32))


@pytest.mark.parametrize("name", PRETRAINED_RESNETS)
def test_load_pretrained_resnet(name: str) -> None:
    path = _checkpoint(name)
    if path is None:
        pytest.skip(f"no {name} checkpoint in {PRETRAINED}")
    model = load_pretrained_resnet(name)
    assert isinstance(model, ResNetCIFAR) and not model.training
    assert model.depth == int(name.removeprefix("resnet"))
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert model.best_prec1 == pytest.approx(float(raw["best_prec1"]))
    ours = model.state_dict()
    theirs = {k.removeprefix("module."): v for k, v in raw["state_dict"].items()}
    assert set(theirs) == {k for k in ours if not k.endswith("num_batches_tracked")}
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


def test_load_pretrained_resnet_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _checkpoint("resnet20")
    if path is None:
        pytest.skip(f"no resnet20 checkpoint in {PRETRAINED}")
    (tmp_path / path.name).write_bytes(path.read_bytes()[:1000])
    with pytest.raises(KDConfigError, match="damaged"):  # a truncated file fails the digest in its name
        load_pretrained_resnet("resnet20", tmp_path)

    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="KDLIB_PRETRAINED") as info:
        load_pretrained_resnet("resnet20", missing)
    assert str(missing) in str(info.value)

    monkeypatch.setenv("KDLIB_PRETRAINED", str(tmp_path))
    assert default_pretrained_folder() == tmp_path
    with pytest.raises(FileNotFoundError, match="KDLIB_PRETRAINED"):
        load_pretrained_resnet("resnet56")
    with pytest.raises(KDConfigError, match="model"):
        load_pretrained_resnet("resnet8")


def test_hf_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("vit-tiny", 10, (3, 32, 32)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    save_hf_model(model, tmp_path / "vit")
    loaded = load_hf_model(tmp_path / "vit")
    assert not loaded.training
    with torch.no_grad():
        got = loaded(x)
    assert type(got) is torch.Tensor
    torch.testing.assert_close(got, expected)
    with pytest.raises(FileNotFoundError):
        load_hf_model(tmp_path / "empty")
    with pytest.raises(KDConfigError):
        save_hf_model(build_model("cnn", 10, (3, 32, 32)), tmp_path / "cnn")


@pytest.mark.parametrize("in_shape", [(3, 32, 32), (1, 8, 8), (3, 24, 16)], ids=["cifar", "digits", "wide"])
@pytest.mark.parametrize(("name", "min_grid", "cifar_patch"), [("vit-tiny", 4, 8), ("vit-small", 8, 4)])
def test_a_vit_cuts_images_into_a_grid_of_patches(in_shape, name: str, min_grid: int, cifar_patch: int) -> None:
    model = build_model(name, 10, in_shape)
    config = model.config
    _, h, w = in_shape
    grid = (h // config.patch_size, w // config.patch_size)
    assert h % config.patch_size == 0 and w % config.patch_size == 0 and min(grid) >= min_grid
    if in_shape == (3, 32, 32):  # the sizes benchmarks/vit_size.py measured
        assert config.patch_size == cifar_patch
    embeddings = model.hf.vit.embeddings.patch_embeddings
    assert embeddings.num_patches == grid[0] * grid[1]
    assert config.num_hidden_layers <= 4 and config.hidden_size <= 128  # tiny: it trains on the CPU


def test_a_vit_student_distils_from_a_cnn_teacher() -> None:
    """The heterogeneous pair of notebook 03: kdlib's KD step needs nothing but both models' logits."""
    from kdlib.core.distill import TeacherSpec, run_finetune, run_standard
    from kdlib.core.train import RunOptions, TrainConfig

    torch.manual_seed(0)
    x, y = torch.randn(48, 3, 32, 32), torch.randint(0, 10, (48,))
    teacher = build_model("cnn-small", 10, (3, 32, 32))
    student = build_model("vit-tiny", 10, (3, 32, 32))
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05)
    outcome = run_standard(student, x, y, TeacherSpec(teacher, 4.0, 0.5), cfg, RunOptions("cpu", False))
    assert len(outcome.history) == 1 and np.isfinite(outcome.history[0]["loss"])
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items()), "the teacher stays frozen"
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert any("attention" in k for k in changed) and any("classifier" in k for k in changed)
    # and the same ViT fine-tunes from the same start to other weights: the teacher's logits made the difference
    baseline = build_model("vit-tiny", 10, (3, 32, 32))
    baseline.load_state_dict(before)
    run_finetune(baseline, x, y, cfg, RunOptions("cpu", False))
    assert not torch.equal(baseline.hf.classifier.weight, student.hf.classifier.weight)


def read_cifar_test_jpegs(per_class: int | None = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` test images of each class (all if None), normalised, from the JPEG archive."""
    from PIL import Image

    images: dict[tuple[int, str], np.ndarray] = {}
    with tarfile.open(CIFAR_JPEG, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "test" or not parts[2].endswith(".jpg"):
                continue
            label = CIFAR_CLASSES.index(parts[1])
            if per_class is not None and int(parts[2].removesuffix(".jpg")) >= per_class:
                continue
            data = tar.extractfile(member).read()
            images[(label, parts[2])] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    keys = sorted(images)
    x = torch.from_numpy(np.stack([images[k] for k in keys])).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD, torch.tensor([k[0] for k in keys])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return (pred == y).float().mean().item()


@pytest.mark.slow
def test_pretrained_resnet20_accuracy_on_jpeg_cifar10() -> None:
    if _checkpoint("resnet20") is None or not CIFAR_JPEG.is_file():
        pytest.skip("needs ../shared/pretrained and ../shared/data/cifar10-jpeg.tar.gz")
    x, y = read_cifar_test_jpegs(100)
    assert x.shape == (1000, 3, 32, 32) and torch.bincount(y).tolist() == [100] * 10
    acc = accuracy(load_pretrained_resnet("resnet20"), x, y)
    assert acc > 0.75, f"resnet20 scores {acc:.1%} on 1,000 JPEG CIFAR-10 test images"
