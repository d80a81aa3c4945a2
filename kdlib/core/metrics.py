"""Accuracy metrics of a model and of a distillation (before vs. after)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


def _as_predictions(outputs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Class predictions from logits (2-D) or already-made predictions (1-D)."""
    array = outputs.detach().cpu().numpy() if isinstance(outputs, torch.Tensor) else np.asarray(outputs)
    return array.argmax(axis=1) if array.ndim == 2 else array.astype(np.int64)


def _as_labels(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    return labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)


def accuracy(outputs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Fraction of correct predictions, in [0, 1] (nan for an empty set)."""
    preds, y = _as_predictions(outputs), _as_labels(labels)
    return float((preds == y).mean()) if len(y) else float("nan")


def per_class_accuracy(outputs, labels, num_classes: int) -> np.ndarray:
    """Accuracy of each class (nan where a class has no sample)."""
    preds, y = _as_predictions(outputs), _as_labels(labels)
    result = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = y == c
        if mask.any():
            result[c] = (preds[mask] == c).mean()
    return result


def group_accuracy(outputs, labels, classes) -> float:
    """Accuracy on the test samples whose label is in ``classes`` (nan when none is)."""
    preds, y = _as_predictions(outputs), _as_labels(labels)
    mask = np.isin(y, np.asarray(list(classes), dtype=np.int64))
    return float((preds[mask] == y[mask]).mean()) if mask.any() else float("nan")


@dataclass(frozen=True)
class Flips:
    """Test samples whose correctness changed: wrong->right (knowledge gain) and right->wrong (knowledge loss)."""

    gained: int
    lost: int
    total: int

    @property
    def gain_rate(self) -> float:
        return self.gained / self.total if self.total else float("nan")

    @property
    def loss_rate(self) -> float:
        return self.lost / self.total if self.total else float("nan")


def flips(before, after, labels) -> Flips:
    """Count wrong->right and right->wrong flips between two predictions of the same test set."""
    y = _as_labels(labels)
    ok_before = _as_predictions(before) == y
    ok_after = _as_predictions(after) == y
    return Flips(int((~ok_before & ok_after).sum()), int((ok_before & ~ok_after).sum()), len(y))


@dataclass(frozen=True)
class DistillationMetrics:
    """What a distillation did to the student, measured on the common test set (accuracies in [0, 1])."""

    acc_before: float
    acc_after: float
    gain: float
    own_before: float
    own_after: float
    unseen_before: float
    unseen_after: float
    knowledge_gain: float
    knowledge_loss: float
    teacher_acc: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def distillation_metrics(before, after, teacher, labels, own_classes, num_classes: int) -> DistillationMetrics:
    """Student before/after and teacher outputs on one test set -> all metrics of the study.

    ``own_classes`` are the classes the student was pre-trained on; the rest count as unseen.
    """
    own = sorted(int(c) for c in own_classes)
    unseen = [c for c in range(num_classes) if c not in set(own)]
    flip = flips(before, after, labels)
    acc_before, acc_after = accuracy(before, labels), accuracy(after, labels)
    return DistillationMetrics(
        acc_before=acc_before,
        acc_after=acc_after,
        gain=acc_after - acc_before,
        own_before=group_accuracy(before, labels, own),
        own_after=group_accuracy(after, labels, own),
        unseen_before=group_accuracy(before, labels, unseen),
        unseen_after=group_accuracy(after, labels, unseen),
        knowledge_gain=flip.gain_rate,
        knowledge_loss=flip.loss_rate,
        teacher_acc=accuracy(teacher, labels),
    )
