"""The one training loop of kdlib: pre-training, distillation and evaluation all run through ``fit``."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from kdlib.core.precision import mixed_precision
from kdlib.core.progress import tqdm
from kdlib.errors import KDConfigError
from kdlib.validation import is_int, is_real

MAX_TRAIN_SEED = 2**63
"""Training seeds (``torch.Generator.manual_seed``) are below this."""

BatchLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``batch_loss(x_batch, y_batch, sample_indices) -> scalar loss`` for one batch on the training device."""


@dataclass(frozen=True)
class RunOptions:
    """How a training run is carried out, beside its data and hyper-parameters: the device, whether to show a
    progress bar (labelled ``desc``, else the function's own label), and a per-epoch hook whose dict is added to
    that epoch's record (e.g. a test accuracy)."""

    device: str | torch.device = "auto"
    progress: bool = True
    on_epoch_end: Callable[[int], dict] | None = None
    desc: str | None = None


DEFAULT_RUN = RunOptions()
"""Run on the default device with a progress bar."""

QUIET = RunOptions(progress=False)
"""Run on the default device without a progress bar."""


@dataclass(frozen=True)
class TrainConfig:
    """How long and how fast to train. Validated on creation."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    augment: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not is_int(self.epochs) or self.epochs < 0:
            raise KDConfigError("epochs", self.epochs, "an integer >= 0")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise KDConfigError("batch_size", self.batch_size, "an integer >= 1")
        if not is_real(self.lr) or not self.lr > 0:
            raise KDConfigError("lr", self.lr, "a finite learning rate > 0")
        if not is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise KDConfigError("momentum", self.momentum, "a number in [0, 1)")
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            raise KDConfigError("weight_decay", self.weight_decay, "a finite number >= 0")
        if not isinstance(self.optimizer, str) or self.optimizer not in ("sgd", "adam"):
            raise KDConfigError("optimizer", self.optimizer, "'sgd' or 'adam'")
        if not isinstance(self.augment, bool):
            raise KDConfigError("augment", self.augment, "true or false (a boolean, not a string or number)")
        if not is_int(self.seed) or not 0 <= self.seed < MAX_TRAIN_SEED:
            raise KDConfigError("seed", self.seed, "an integer >= 0 and < 2**63 (torch's seed range)")

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; other names are checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise KDConfigError("device", device, "'auto', 'cpu' or 'cuda[:N]' (or 'mps' where present)")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KDConfigError("device", device, "'auto' or 'cpu': no CUDA device is visible on this machine")
        count = torch.cuda.device_count()
        if ":" in device and int(device.split(":")[1]) >= count:
            raise KDConfigError("device", device, f"'cuda' or 'cuda:N' with N < {count} (the visible CUDA devices)")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise KDConfigError("device", device, "'auto' or 'cpu': no Apple MPS device is available on this machine")
    return torch.device(device)


_DEVICE = re.compile(r"cpu|cuda|cuda:[0-9]+|mps", re.ASCII)


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads: ``threads``, else ``KDLIB_THREADS``, else 1.

    One thread is the default because the study's models are small: on a shared machine, more threads per process
    make training slower, not faster (the README gives the measurements); set ``KDLIB_THREADS=2`` on an idle one.
    At most 4 threads per core are accepted: more only exhaust the machine's threads.
    """
    limit = 4 * (os.cpu_count() or 1)
    allowed = f"an integer >= 1 and <= {limit} (4 per core of this machine's {limit // 4})"
    if threads is None:
        text = os.environ.get("KDLIB_THREADS", "1").strip()
        if not re.fullmatch(r"[0-9]{1,9}", text, re.ASCII) or not 1 <= int(text) <= limit:
            raise KDConfigError("KDLIB_THREADS", os.environ["KDLIB_THREADS"], f"{allowed}, e.g. KDLIB_THREADS=1")
        value = int(text)
    else:
        value = threads
    if not is_int(value) or not 1 <= value <= limit:
        raise KDConfigError("threads", value, allowed)
    torch.set_num_threads(value)
    return value


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation draws from torch's global generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random 4-pixel-padded crop, the usual CIFAR augmentation, on a batch."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
    pad = 4 if h >= 16 else 1
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


def to_training_device(x: torch.Tensor, y: torch.Tensor, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training data on ``dev`` once, so that no step copies a batch from the host (a no-op on the CPU).

    On CUDA it also lets cuDNN pick the fastest convolution for each shape (the study's shapes repeat every step).
    """
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return x.to(dev), y.to(dev)


def epoch_batches(
    x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of seeded batches ``(indices, inputs, labels)`` from data already on its device (indices stay on
    the CPU, for cached-logit look-ups); inputs augmented when ``cfg.augment``. Every training loop draws its
    batches here, so that equal seeds give equal batches in each of them."""
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        on_dev = idx.to(x.device)
        xb = x[on_dev]
        if cfg.augment:
            xb = augment_batch(xb, generator)
        yield idx, xb, y[on_dev]


@contextmanager
def cpu_channels_last(
    modules: Sequence[nn.Module], dev: torch.device, x: torch.Tensor
) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """On the CPU, image models run in channels-last memory layout inside (oneDNN's fast path, faster per step for
    the study's small models), and back in the default layout after,
    so that checkpoints and other code see ordinary tensors. Yields the conversion for input batches (the
    identity elsewhere: GPUs, or inputs that are not image batches)."""
    if dev.type != "cpu" or x.ndim != 4:
        yield lambda batch: batch
        return
    converted = [m for m in modules if not _is_channels_last(m)]  # nested use (a test curve inside fit) keeps it
    for module in converted:
        module.to(memory_format=torch.channels_last)
    try:
        yield lambda batch: batch.contiguous(memory_format=torch.channels_last)
    finally:
        for module in converted:
            module.to(memory_format=torch.contiguous_format)


def _is_channels_last(module: nn.Module) -> bool:
    weights = [p for p in module.parameters() if p.dim() == 4 and not p.is_contiguous()]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg``'s optimiser (SGD with momentum, or Adam; both with weight decay) over ``params``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def steps_per_epoch(samples: int, cfg: TrainConfig) -> int:
    """Batches in one epoch over ``samples`` samples (the last batch may be short)."""
    return (samples + cfg.batch_size - 1) // cfg.batch_size


def make_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """kdlib's learning-rate schedule: a cosine from the optimiser's rate to 0 over ``total_steps`` (one per batch)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, total_steps))


def make_training(
    params: list[nn.Parameter], cfg: TrainConfig, samples: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimiser and schedule of ``fit`` (and of every loop that must train as it does) for ``cfg.epochs`` epochs
    over ``samples`` samples."""
    optimizer = make_optimizer(params, cfg)
    return optimizer, make_schedule(optimizer, cfg.epochs * steps_per_epoch(samples, cfg))


def fit(
    modules: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_loss: BatchLoss,
    cfg: TrainConfig,
    options: RunOptions = DEFAULT_RUN,
) -> list[dict]:
    """Train ``modules`` (all their parameters, one optimiser, cosine learning rate) on ``(x, y)``.

    Batches are drawn in a seeded order; ``batch_loss`` sees each batch on ``options.device`` with the indices of
    its samples (to look up cached teacher logits). Returns one record per epoch: mean loss and whatever
    ``options.on_epoch_end(epoch)`` adds (e.g. a test accuracy). The modules stay on the device.
    """
    on_epoch_end = options.on_epoch_end
    if len(x) != len(y):
        raise KDConfigError("x/y", (len(x), len(y)), "as many labels as samples")
    if len(x) == 0:
        raise KDConfigError("training data", 0, "at least one sample")
    dev = resolve_device(options.device)
    x, y = to_training_device(x, y, dev)
    params = [p for m in modules for p in m.to(dev).parameters() if p.requires_grad]
    optimizer, scheduler = make_training(params, cfg, len(x))
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    total_steps = cfg.epochs * steps_per_epoch(len(x), cfg)
    bar = tqdm(total=total_steps, desc=options.desc or "train", disable=not options.progress, leave=False)
    forward = mixed_precision(dev)
    with cpu_channels_last(modules, dev, x) as layout:
        for epoch in range(cfg.epochs):
            for m in modules:
                m.train()
            total, count = torch.zeros((), dtype=torch.float64, device=dev), 0
            for idx, xb, yb in epoch_batches(x, y, cfg, generator):
                with forward:
                    loss = batch_loss(layout(xb), yb, idx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.detach().double() * len(idx)  # summed on the device: no GPU sync per step
                count += len(idx)
                bar.update(1)
            record = {"epoch": epoch + 1, "loss": float(total) / count}
            if on_epoch_end is not None:
                record.update(on_epoch_end(epoch + 1))
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
    bar.close()
    return history


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, device: str | torch.device = "auto", batch_size: int = 512
) -> torch.Tensor:
    """Logits of ``model`` (eval mode) on ``x``, returned on the CPU."""
    dev = resolve_device(device)
    model.to(dev).eval()
    with cpu_channels_last([model], dev, x) as layout, mixed_precision(dev):
        outs = [model(layout(x[i : i + batch_size].to(dev))).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def train_supervised(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    options: RunOptions = DEFAULT_RUN,
) -> list[dict]:
    """Plain cross-entropy training (pre-training a party, or the fine-tuning baseline); the bar reads
    ``options.desc`` or "pre-train"."""

    def batch_loss(xb: torch.Tensor, yb: torch.Tensor, _idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(xb), yb)

    return fit([model], x, y, batch_loss, cfg, replace(options, desc=options.desc or "pre-train"))
