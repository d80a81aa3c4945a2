"""Tests for kdlib.core.metrics on hand-made predictions: accuracies, per-class/group accuracies, flips, KD metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdlib.core.metrics import (
    DistillationMetrics,
    Flips,
    accuracy,
    distillation_metrics,
    flips,
    group_accuracy,
    per_class_accuracy,
)

# Five samples, four classes (class 3 never appears in the labels).
LOGITS = np.array(
    [
        [2.0, 1.0, 0.0, -1.0],  # pred 0, label 0: right
        [0.0, 3.0, 1.0, 0.0],  # pred 1, label 1: right
        [1.0, 0.0, 5.0, 0.0],  # pred 2, label 1: wrong
        [4.0, 0.0, 0.0, 0.0],  # pred 0, label 2: wrong
        [0.0, 1.0, 0.0, 0.5],  # pred 1, label 1: right
    ]
)
PREDS = np.array([0, 1, 2, 0, 1])
LABELS = np.array([0, 1, 1, 2, 1])


def input_forms():
    """The same predictions as numpy/torch logits and numpy/torch/list labels of predictions."""
    return [
        (LOGITS, LABELS),
        (torch.tensor(LOGITS), torch.tensor(LABELS)),
        (torch.tensor(LOGITS, dtype=torch.float32), LABELS),
        (PREDS, LABELS),
        (torch.tensor(PREDS), torch.tensor(LABELS)),
        (PREDS.tolist(), LABELS.tolist()),
    ]


@pytest.mark.parametrize(("outputs", "labels"), input_forms())
def test_accuracy_on_hand_made_predictions(outputs, labels) -> None:
    assert accuracy(outputs, labels) == pytest.approx(3 / 5)


@pytest.mark.parametrize(("outputs", "labels"), input_forms())
def test_per_class_accuracy_on_hand_made_predictions(outputs, labels) -> None:
    got = per_class_accuracy(outputs, labels, num_classes=4)
    assert got.shape == (4,)
    np.testing.assert_allclose(got[:3], [1.0, 2 / 3, 0.0])
    assert math.isnan(got[3])  # no sample of class 3


@pytest.mark.parametrize(("outputs", "labels"), input_forms())
def test_group_accuracy_on_hand_made_predictions(outputs, labels) -> None:
    # classes {1, 2}: samples 1, 2, 3, 4 -> right, wrong, wrong, right
    assert group_accuracy(outputs, labels, {1, 2}) == pytest.approx(0.5)
    assert group_accuracy(outputs, labels, [0]) == pytest.approx(1.0)
    assert group_accuracy(outputs, labels, (0, 1, 2, 3)) == pytest.approx(accuracy(outputs, labels))
    assert math.isnan(group_accuracy(outputs, labels, [3]))  # a class with no test sample
    assert math.isnan(group_accuracy(outputs, labels, []))  # an empty group


def test_accuracy_of_nothing_is_nan() -> None:
    assert math.isnan(accuracy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)))
    assert math.isnan(accuracy(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))


def test_accuracy_agrees_with_torch_on_random_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=gen)
    labels = torch.randint(0, 7, (200,), generator=gen)
    expected = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy(logits, labels) == pytest.approx(expected)
    per_class = per_class_accuracy(logits, labels, 7)
    for c in range(7):
        mask = labels == c
        assert per_class[c] == pytest.approx((logits.argmax(1)[mask] == c).float().mean().item())


# ------------------------------------------------------------------------------------------------------ flips

FLIP_LABELS = np.array([0, 1, 2, 0, 1, 2])
BEFORE = np.array([0, 0, 2, 1, 1, 0])  # right, wrong, right, wrong, right, wrong
AFTER = np.array([0, 1, 0, 0, 1, 0])  # right, right, wrong, right, right, wrong
# wrong -> right: samples 1 and 3; right -> wrong: sample 2


def test_flips_on_hand_made_predictions() -> None:
    got = flips(BEFORE, AFTER, FLIP_LABELS)
    assert got == Flips(gained=2, lost=1, total=6)
    assert got.gain_rate == pytest.approx(2 / 6)
    assert got.loss_rate == pytest.approx(1 / 6)
    # reversing time swaps the two counts
    assert flips(AFTER, BEFORE, FLIP_LABELS) == Flips(gained=1, lost=2, total=6)
    # with logits and torch tensors, too
    eye = np.eye(3)
    assert flips(torch.tensor(eye[BEFORE]), torch.tensor(eye[AFTER]), torch.tensor(FLIP_LABELS)) == got
    # no change, no flip
    assert flips(BEFORE, BEFORE, FLIP_LABELS) == Flips(0, 0, 6)


def test_flips_of_nothing_have_nan_rates() -> None:
    empty = np.zeros(0, dtype=np.int64)
    got = flips(empty, empty, empty)
    assert (got.gained, got.lost, got.total) == (0, 0, 0)
    assert math.isnan(got.gain_rate) and math.isnan(got.loss_rate)


def test_distillation_metrics_are_consistent() -> None:
    eye = np.eye(3)
    teacher = np.array([0, 1, 2, 0, 2, 2])  # right on all but sample 4
    own_classes = [1, 0]  # the student pre-trained on classes 0 and 1; class 2 is unseen
    got = distillation_metrics(eye[BEFORE], torch.tensor(eye[AFTER]), eye[teacher], FLIP_LABELS, own_classes, 3)
    assert isinstance(got, DistillationMetrics)

    ok_before, ok_after = BEFORE == FLIP_LABELS, AFTER == FLIP_LABELS
    own = np.isin(FLIP_LABELS, [0, 1])
    assert got.acc_before == pytest.approx(ok_before.mean())
    assert got.acc_after == pytest.approx(ok_after.mean())
    assert got.gain == pytest.approx(got.acc_after - got.acc_before)
    assert got.own_before == pytest.approx(ok_before[own].mean())
    assert got.own_after == pytest.approx(ok_after[own].mean())
    assert got.unseen_before == pytest.approx(ok_before[~own].mean())
    assert got.unseen_after == pytest.approx(ok_after[~own].mean())
    assert got.knowledge_gain == pytest.approx(2 / 6)
    assert got.knowledge_loss == pytest.approx(1 / 6)
    assert got.teacher_acc == pytest.approx(5 / 6)
    # the net gain is exactly what the flips add up to
    assert got.gain == pytest.approx(got.knowledge_gain - got.knowledge_loss)
    # own and unseen accuracies, weighted by their sizes, give back the total accuracy
    assert got.acc_after == pytest.approx((got.own_after * own.sum() + got.unseen_after * (~own).sum()) / 6)

    as_dict = got.as_dict()
    assert set(as_dict) == {
        "acc_before",
        "acc_after",
        "gain",
        "own_before",
        "own_after",
        "unseen_before",
        "unseen_after",
        "knowledge_gain",
        "knowledge_loss",
        "teacher_acc",
    }
    assert as_dict["gain"] == got.gain


def test_distillation_metrics_with_every_class_own_has_nan_unseen() -> None:
    got = distillation_metrics(BEFORE, AFTER, AFTER, FLIP_LABELS, range(3), 3)
    assert math.isnan(got.unseen_before) and math.isnan(got.unseen_after)
    assert got.own_before == pytest.approx(got.acc_before)
    assert got.own_after == pytest.approx(got.acc_after)
    assert got.teacher_acc == pytest.approx(got.acc_after)
