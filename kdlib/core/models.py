"""Model zoo for the distillation studies: small CNNs, CIFAR ResNets, a tiny ViT, and checkpoint I/O.

Every model maps a float batch ``(B, C, H, W)`` to logits ``(B, num_classes)`` (a plain tensor), on
CIFAR-sized inputs ``(3, 32, 32)`` as well as on sklearn digits ``(1, 8, 8)``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from kdlib.errors import KDConfigError
from kdlib.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "MODEL_NAMES",
    "PRETRAINED_RESNETS",
    "RESNET_BLOCKS",
    "BasicBlock",
    "HFClassifier",
    "ResNetCIFAR",
    "ShortcutA",
    "build_model",
    "count_parameters",
    "default_pretrained_folder",
    "load_hf_model",
    "check_file_digest",
    "load_pretrained_resnet",
    "save_hf_model",
]

#: Blocks per stage ``n`` of each CIFAR ResNet; depth = 6n + 2 (He et al. 2016, section 4.2).
RESNET_BLOCKS: dict[str, int] = {
    "resnet8": 1,
    "resnet14": 2,
    "resnet20": 3,
    "resnet32": 5,
    "resnet44": 7,
    "resnet56": 9,
}

#: ResNets with a published CIFAR-10 checkpoint (akamaster/pytorch_resnet_cifar10).
PRETRAINED_RESNETS: tuple[str, ...] = ("resnet20", "resnet32", "resnet44", "resnet56")

MODEL_NAMES: tuple[str, ...] = (
    "mlp", "cnn", "cnn-small", *RESNET_BLOCKS, "vit-tiny", "vit-small", "convnext-tiny"
)  # fmt: skip

PUBLISHED_PREFIX = "published:"
"""A teacher named ``published:resnet56`` (or 20/32/44) is the published checkpoint, not a party trained here."""
PUBLISHED_TEACHERS: tuple[str, ...] = tuple(f"{PUBLISHED_PREFIX}{name}" for name in PRETRAINED_RESNETS)


# ----------------------------------------------------------------------------------------------------------
# Small baselines
# ----------------------------------------------------------------------------------------------------------


class MLP(nn.Sequential):
    """Flatten -> 256 -> 128 -> classes with ReLU."""

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int]) -> None:
        c, h, w = in_shape
        super().__init__(
            nn.Flatten(),
            nn.Linear(c * h * w, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )


class SmallCNN(nn.Module):
    """VGG-style CNN: 3x3 conv-BN-ReLU layers, 2x2 max pools ("P"), global average pool, linear.

    A pool is skipped when the feature map is already 1 pixel high or wide, so tiny inputs (8x8) work.
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int], plan: tuple[int | str, ...]) -> None:
        super().__init__()
        channels, h, w = in_shape
        layers: list[nn.Module] = []
        for item in plan:
            if item == "P":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            assert isinstance(item, int)
            layers += [
                nn.Conv2d(channels, item, 3, padding=1, bias=False),
                nn.BatchNorm2d(item),
                nn.ReLU(inplace=True),
            ]
            channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(self.features(x)), 1))


CNN_PLANS: dict[str, tuple[int | str, ...]] = {
    "cnn": (32, 32, "P", 64, 64, "P", 128, 128),
    "cnn-small": (16, "P", 32, "P", 64),
}


# ----------------------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, section 4.2), option-A shortcuts
# ----------------------------------------------------------------------------------------------------------


class ShortcutA(nn.Module):
    """Parameter-free shortcut (option A): subsample by ``stride``, zero-pad new channels on both sides."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_front = (planes - in_planes) // 2
        self.pad_back = planes - in_planes - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (identity, or option A when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            ShortcutA(in_planes, planes, stride) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """ResNet-(6n+2) for CIFAR: conv 16, three stages of ``n`` blocks (16/32/64 channels), avg pool, linear.

    Module names (conv1, bn1, layer1..3, linear) match the akamaster checkpoints.
    """

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.n = n
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self._in_planes = 16
        self.layer1 = self._make_stage(16, n, stride=1)
        self.layer2 = self._make_stage(32, n, stride=2)
        self.layer3 = self._make_stage(64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        _kaiming_init(self)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self._in_planes, planes, s))
            self._in_planes = planes
        return nn.Sequential(*layers)

    @property
    def depth(self) -> int:
        """Weighted layers: 6n convs in the stages + the first conv + the linear layer."""
        return 6 * self.n + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight)


# ----------------------------------------------------------------------------------------------------------
# transformers models, wrapped to return plain logits
# ----------------------------------------------------------------------------------------------------------


class HFClassifier(nn.Module):
    """Wraps a transformers image classifier so that ``forward(x)`` returns the logits tensor."""

    def __init__(self, hf_model: PreTrainedModel) -> None:
        super().__init__()
        self.hf = hf_model

    @property
    def config(self) -> Any:
        """The wrapped model's transformers config."""
        return self.hf.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=x).logits


def _patch_size(h: int, w: int, min_grid: int = 4) -> int:
    """The largest patch side (8, 4, 2 or 1) that tiles the image into at least ``min_grid`` x ``min_grid`` patches."""
    for p in (8, 4, 2):
        if h % p == 0 and w % p == 0 and min(h, w) // p >= min_grid:
            return p
    return 1


VIT_SIZES: dict[str, dict[str, int]] = {
    # Small enough to train on a CPU at the speed of cnn-small: 16 patches (8 x 8 pixels on CIFAR), 2 layers; about
    # 37% on the full scale's student data after 10 epochs (benchmarks/vit_size.py).
    "vit-tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                 "min_grid": 4},
    # The smallest size measured to learn CIFAR-10 to a useful accuracy: 64 patches (4 x 4 pixels on CIFAR), 4
    # layers; 45.5% after 10 epochs on the full scale's student data, at 5-8x ResNet-8's time (benchmarks/README.md).
    "vit-small": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256,
                  "min_grid": 8},
}
"""The ViT students of the heterogeneous pair: transformer sizes, and the patch grid they cut an image into (the
patch side follows the image: ``_patch_size``)."""


def _build_vit(num_classes: int, in_shape: tuple[int, int, int], size: str = "vit-tiny") -> HFClassifier:
    from transformers import ViTConfig, ViTForImageClassification

    c, h, w = in_shape
    shape = dict(VIT_SIZES[size])
    patch = _patch_size(h, w, shape.pop("min_grid"))
    config = ViTConfig(
        **shape,
        image_size=h if h == w else (h, w),
        patch_size=patch,
        num_channels=c,
        num_labels=num_classes,
    )
    return HFClassifier(ViTForImageClassification(config))


def _build_convnext(num_classes: int, in_shape: tuple[int, int, int]) -> HFClassifier:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    c, h, w = in_shape
    # patchify stem then two stride-2 downsamplings: 32 -> 8 -> 4 -> 2, 8 -> 4 -> 2 -> 1
    patch = 4 if min(h, w) > 16 else 2
    if min(h, w) < patch * 4:
        side = patch * 4
        raise KDConfigError("in_shape", in_shape, f"convnext-tiny needs images of at least {side}x{side}")
    config = ConvNextConfig(
        num_channels=c,
        patch_size=patch,
        num_stages=3,
        hidden_sizes=[32, 64, 128],
        depths=[1, 1, 2],
        image_size=h,
        num_labels=num_classes,
    )
    return HFClassifier(ConvNextForImageClassification(config))


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def _check_shape(num_classes: int, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise KDConfigError("num_classes", num_classes, "a positive integer")
    try:
        shape = tuple(int(v) for v in in_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise KDConfigError("in_shape", in_shape, "(channels, height, width) of positive integers")
    return shape  # type: ignore[return-value]


_BUILDERS: dict[str, Callable[[int, tuple[int, int, int]], nn.Module]] = {
    "mlp": MLP,
    **{name: (lambda k, s, plan=plan: SmallCNN(k, s, plan)) for name, plan in CNN_PLANS.items()},
    **{name: (lambda k, s, n=n: ResNetCIFAR(n, k, s[0])) for name, n in RESNET_BLOCKS.items()},
    "vit-tiny": _build_vit,
    "vit-small": lambda k, s: _build_vit(k, s, "vit-small"),
    "convnext-tiny": _build_convnext,
}


def build_model(name: str, num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    """Build a freshly initialised model ``name`` (one of MODEL_NAMES) for ``in_shape`` = (C, H, W) inputs."""
    if name not in _BUILDERS:
        raise KDConfigError("model", name, f"one of {', '.join(MODEL_NAMES)}")
    return _BUILDERS[name](num_classes, _check_shape(num_classes, in_shape))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def default_pretrained_folder() -> Path:
    """``$KDLIB_PRETRAINED`` if set, else ``<project root>/../shared/pretrained``."""
    env = os.environ.get("KDLIB_PRETRAINED")
    if env:
        return Path(env).expanduser()
    return PROJECT_ROOT.parent / "shared" / "pretrained"


def check_file_digest(path: Path) -> str:
    """The file's SHA-256, checked against the hex digits after the last ``-`` of its name (akamaster's files are
    named ``resnet56-4bfd9763.th``: the digest's first 8 digits); a mismatch is a one-line ``KDConfigError``."""
    expected = path.stem.rsplit("-", 1)[-1].lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", expected):
        raise KDConfigError("checkpoint", str(path), "a file named <model>-<first hex digits of its SHA-256>.th")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        allowed = f"the file whose SHA-256 starts with {expected}; this one's starts with {digest[:8]}: it is damaged"
        raise KDConfigError("checkpoint", str(path), allowed + " or not the published one (copy it again)")
    return digest


def load_pretrained_resnet(name: str, folder: str | Path | None = None) -> nn.Module:
    """Load a published akamaster CIFAR-10 ResNet (``resnet20/32/44/56``) strictly, in eval mode, after checking
    the file against the SHA-256 prefix in its name (``check_file_digest``).

    The checkpoint's ``best_prec1`` (published test accuracy, %) is kept as ``model.best_prec1``.
    """
    if name not in PRETRAINED_RESNETS:
        raise KDConfigError("model", name, f"a published checkpoint: one of {', '.join(PRETRAINED_RESNETS)}")
    folder = Path(folder).expanduser() if folder is not None else default_pretrained_folder()
    matches = sorted(folder.glob(f"{name}-*.th")) if folder.is_dir() else []
    if not matches:
        raise FileNotFoundError(
            f"no checkpoint {name}-*.th in {folder}: put the akamaster/pytorch_resnet_cifar10 files there "
            "or set KDLIB_PRETRAINED to the folder that holds them"
        )
    path = matches[0]
    check_file_digest(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, ...
        raise KDConfigError(
            "checkpoint",
            str(path),
            f"a readable torch checkpoint; this file is corrupted or truncated ({type(exc).__name__}: {exc})",
        ) from exc
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise KDConfigError("checkpoint", str(path), "a dict with a 'state_dict'; the file is corrupted")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    weight = state.get("conv1.weight")
    linear = state.get("linear.weight")
    if not isinstance(weight, torch.Tensor) or not isinstance(linear, torch.Tensor):
        raise KDConfigError("checkpoint", str(path), "conv1 and linear weights; the file is corrupted")
    model = ResNetCIFAR(RESNET_BLOCKS[name], num_classes=linear.shape[0], in_channels=weight.shape[1])
    # the files predate BatchNorm's num_batches_tracked buffer: keep the fresh (zero) counters for those only
    for key, buffer in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, buffer)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KDConfigError(
            "checkpoint", str(path), f"the {name} architecture; the state dict does not match ({exc})"
        ) from exc
    model.best_prec1 = float(checkpoint.get("best_prec1", float("nan")))
    return model.eval()


def _unwrap(model: nn.Module) -> PreTrainedModel:
    from transformers import PreTrainedModel

    inner = model.hf if isinstance(model, HFClassifier) else model
    if not isinstance(inner, PreTrainedModel):
        raise KDConfigError("model", type(model).__name__, "a transformers model or an HFClassifier wrapper")
    return inner


def save_hf_model(model: nn.Module, folder: str | Path) -> Path:
    """Save a (wrapped) transformers model with ``save_pretrained`` (config + safetensors) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _unwrap(model).save_pretrained(folder)
    return folder


def load_hf_model(folder: str | Path) -> HFClassifier:
    """Load a model saved by :func:`save_hf_model` from the local folder only; returns the logits wrapper."""
    from transformers import AutoModelForImageClassification

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no transformers model (config.json) in {folder}")
    hf = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)
    return HFClassifier(hf).eval()
