"""The starting models of FedAvg beyond a random one: multi-teacher KD with averaged soft targets, and what a
start cost to make."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from kdlib.core.losses import averaged_soft_targets, check_alpha, check_temperature, kd_loss
from kdlib.core.train import RunOptions, TrainConfig, fit, predict_logits, resolve_device


@dataclass(frozen=True)
class KDRecipe:
    """How a KD start is distilled: the temperature, the weight of the KD term against cross-entropy on the labels
    (1: the labels are not used), and the training."""

    temperature: float
    alpha: float
    train: TrainConfig


def distill_averaged(
    student: nn.Module,
    teachers: Sequence[nn.Module],
    public: tuple[torch.Tensor, torch.Tensor],
    recipe: KDRecipe,
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> list[dict]:
    """Multi-teacher KD on the ``public`` data ``(x, y)``: the student matches the mean of the teachers' softened
    outputs (Hinton's loss, ``losses.kd_loss``, with the averaged soft targets in place of one teacher's)."""
    x, y = public
    temperature, alpha = check_temperature(recipe.temperature), check_alpha(recipe.alpha)
    dev = resolve_device(device)
    targets = averaged_soft_targets([predict_logits(t, x, dev) for t in teachers], temperature).to(dev)
    # Hinton's loss softens teacher logits at T: T * log(p) softens back to p (softmax(log p) = p), so the averaged
    # soft targets enter ``kd_loss`` as they are
    target_logits = temperature * targets.log()

    def batch_loss(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return kd_loss(student(xb), target_logits[idx.to(dev)], yb, temperature, alpha)

    return fit([student], x, y, batch_loss, recipe.train, RunOptions(dev, progress, desc="KD (averaged)"))


@dataclass
class Start:
    """A starting model for FedAvg and what it cost to make (beyond the clients' own pre-training)."""

    name: str
    state: dict[str, torch.Tensor]
    test_acc: float
    wall_s: float = 0.0
    samples: int = 0
    epochs: int = 0
    bytes_up: int = 0
    extra: dict = field(default_factory=dict)


