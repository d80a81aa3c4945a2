"""Beyond accuracy: how far a model's confidence can be trusted (expected calibration error, negative
log-likelihood) and how often it agrees with another model, before and after a distillation."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error (Guo et al. 2017's choice)."""


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins of the top-class confidence: the sample-weighted mean of
    ``|accuracy - mean confidence|`` per bin (torchmetrics' ``multiclass_calibration_error``, L1 norm)."""
    probs = torch.softmax(logits.float(), dim=1)
    value = multiclass_calibration_error(probs, labels.long(), num_classes=probs.shape[1], n_bins=n_bins, norm="l1")
    return float(value)


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the true labels (cross-entropy, in nats)."""
    return float(F.cross_entropy(logits.float(), labels.long()))


def agreement(logits: torch.Tensor, other: torch.Tensor) -> float:
    """The share of samples on which two models predict the same class."""
    return float((logits.argmax(dim=1) == other.argmax(dim=1)).float().mean())


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width bin of top-class confidence: the sample count, the accuracy and the mean confidence (NaN
    for an empty bin), the data of a reliability diagram; ``sum(count * |accuracy - confidence|) / n`` is the ECE."""
    probs = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels.long()).float()
    index = torch.clamp(torch.ceil(confidence * n_bins).long() - 1, 0, n_bins - 1)  # bins (k/n, (k+1)/n]
    count = torch.bincount(index, minlength=n_bins).float()
    safe = count.clamp(min=1)
    accuracy = torch.bincount(index, weights=correct, minlength=n_bins) / safe
    mean_confidence = torch.bincount(index, weights=confidence, minlength=n_bins) / safe
    empty = count == 0
    return {
        "count": count.long().tolist(),
        "accuracy": accuracy.masked_fill(empty, float("nan")).tolist(),
        "confidence": mean_confidence.masked_fill(empty, float("nan")).tolist(),
    }


def calibration_metrics(
    before: torch.Tensor, after: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """The student's ECE, NLL and agreement with the teacher, before and after distillation, on one test set."""
    out: dict[str, float] = {}
    for when, logits in (("before", before), ("after", after)):
        out[f"ece_{when}"] = expected_calibration_error(logits, labels)
        out[f"nll_{when}"] = negative_log_likelihood(logits, labels)
        out[f"agreement_{when}"] = agreement(logits, teacher)
    return out
