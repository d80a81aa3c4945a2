"""The study's one protocol: every method returns the student of its best validation epoch, no choice reads the
test set, a seed varies the distillation order too, and every record carries calibration and cost."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import kdlib.core.epoch_selection as epoch_selection
from kdlib.core.calibration import agreement, expected_calibration_error, negative_log_likelihood, reliability_bins
from kdlib.core.cost import model_cost, parameter_count, serialized_bytes
from kdlib.core.epoch_selection import EpochSelection
from kdlib.errors import KDConfigError
from kdlib.study.config import scale_config
from kdlib.study.results import ResultsStore
from kdlib.study.runner import Study, distillation_seed

# ------------------------------------------------------------------------------------------ calibration


def test_ece_matches_a_hand_computation_with_15_equal_width_bins() -> None:
    # top-class confidences 0.9 (right), 0.6 (wrong), 0.7 (right), 0.95 (right): four different bins of width 1/15,
    # so ECE = mean |correct - confidence| = (0.1 + 0.6 + 0.3 + 0.05) / 4
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.05, 0.95]])
    labels = torch.tensor([0, 1, 1, 1])
    assert expected_calibration_error(probs.log(), labels) == pytest.approx((0.1 + 0.6 + 0.3 + 0.05) / 4, abs=1e-6)


def test_ece_averages_within_a_shared_bin_before_taking_the_gap() -> None:
    # 0.61 (right) and 0.62 (wrong) share the bin [0.6, 0.667): |1/2 - 0.615| * 2/2
    probs = torch.tensor([[0.61, 0.39], [0.62, 0.38]])
    labels = torch.tensor([0, 1])
    assert expected_calibration_error(probs.log(), labels) == pytest.approx(abs(0.5 - 0.615), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_reliability_bins_give_back_the_ece(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(400, 10, generator=generator)
    labels = torch.randint(0, 10, (400,), generator=generator)
    bins = reliability_bins(logits, labels)
    assert sum(bins["count"]) == 400 and len(bins["count"]) == 15
    ece = (
        sum(c * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True) if c)
        / 400
    )
    assert ece == pytest.approx(expected_calibration_error(logits, labels), abs=1e-5)


def test_nll_and_agreement_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
    labels = torch.tensor([0, 0, 1])
    by_hand = -sum(math.log(torch.softmax(logits[i], 0)[labels[i]].item()) for i in range(3)) / 3
    assert negative_log_likelihood(logits, labels) == pytest.approx(by_hand, rel=1e-6)
    assert agreement(logits, torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])) == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------- cost


def test_cost_counts_parameters_and_safetensors_bytes() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    assert parameter_count(model) == 12 * 5 + 5 + 5 * 3 + 3
    # float32 weights: 4 bytes each, plus a header
    assert 4 * parameter_count(model) < serialized_bytes(model) < 4 * parameter_count(model) + 1024
    cost = model_cost(model, (3, 2, 2))
    for batch in (1, 64):
        assert cost[f"latency_b{batch}_ms"] > 0 and cost[f"latency_b{batch}_iqr_ms"] >= 0


# ------------------------------------------------------------------------------------------ epoch choice


def test_epoch_selection_restores_the_best_epoch_and_breaks_ties_early() -> None:
    model = nn.Linear(1, 2, bias=False)
    selection = EpochSelection(model, torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), "cpu")
    scores = iter([0.5, 0.75, 0.75, 0.25])
    selection.score = lambda: next(scores)  # type: ignore[method-assign]
    for epoch in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        selection.observe(epoch)
    assert selection.restore() == 2
    assert torch.all(model.weight == 2.0)
    inactive = EpochSelection(model, torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), "cpu", active=False)
    inactive.observe(1)
    with torch.no_grad():
        model.weight.fill_(9.0)
    inactive.observe(2)
    assert inactive.restore() == 2 and torch.all(model.weight == 9.0)


def test_epoch_selection_needs_a_validation_split() -> None:
    with pytest.raises(KDConfigError, match="epoch_selection"):
        scale_config("smoke", val_size=0, selection="transfer")
    assert scale_config("smoke", val_size=0, selection="transfer", epoch_selection="last").epoch_selection == "last"


def test_a_seed_varies_the_distillation_order() -> None:
    cfg = scale_config("full")
    study_seeds = [distillation_seed(cfg.replace(seed=s)) for s in range(10)]
    assert len(set(study_seeds)) == 10
    study = Study.__new__(Study)
    study.cfg = cfg
    assert [study.config_for(s).distill.seed for s in range(3)] == study_seeds[:3]
    orders = [torch.randperm(100, generator=torch.Generator().manual_seed(s)) for s in study_seeds[:2]]
    assert not torch.equal(*orders)
    # the parties' pre-training seeds (1000 * seed + party) are never a distillation seed
    assert not {1000 * s + p for s in range(10) for p in range(2)} & set(study_seeds)


# --------------------------------------------------------------------------------------------- the guard

GUARD_METHODS = ("standard", "tuned", "dml", "dp")


def _choices(tmp_path: Path, scramble_test: bool | str) -> dict[str, tuple]:
    """Every run's choices (epoch, T, alpha) on the digits, with the test set as it is or scrambled (inputs
    reordered and labels random; ``"constant"``: every label 0)."""
    cfg = scale_config(
        "smoke", dataset="digits", n_train=None, n_test=None, teacher_model="mlp", student_model="mlp",
        scenarios=("dirichlet:0.3",), methods=GUARD_METHODS, pretrain={"epochs": 2}, distill={"epochs": 5},
        grid_temperatures=(1.0, 4.0, 16.0), grid_alphas=(0.1, 0.5, 0.9), val_size=150, seeds=1,
        tuning_search="grid",
    )  # fmt: skip
    study = Study(cfg, ResultsStore.open("study", tmp_path / "results"), device="cpu", progress=False)
    data = study.dataset_for(0)
    if scramble_test:
        noise = torch.Generator().manual_seed(123)
        y = torch.randint(0, data.num_classes, data.y_test.shape, generator=noise)
        y = torch.zeros_like(y) if scramble_test == "constant" else y
        study._datasets[0] = replace(data, x_test=data.x_test.flip(0), y_test=y)
    out = {}
    for method in GUARD_METHODS:
        record = study.run("dirichlet:0.3", method)
        m = record["metrics"]
        beyond_accuracy = {"ece_before", "ece_after", "nll_after", "agreement_after", "params", "size_bytes",
                           "latency_b1_ms", "latency_b64_ms", "val_gain", "chosen_epoch"}  # fmt: skip
        assert beyond_accuracy <= set(m) and sum(record["reliability"]["after"]["count"]) == len(data.y_test)
        assert record["env"]["git"] and isinstance(record["env"]["dirty"], bool) and record["device"] == "cpu"
        out[method] = (m["chosen_epoch"], m.get("best_temperature"), m.get("best_alpha"))
    return out


@pytest.mark.slow
def test_no_choice_depends_on_the_test_set(tmp_path: Path, isolated_folders, monkeypatch) -> None:
    """Scrambling the test set (inputs reordered, labels random) changes no choice: not the epoch of any method,
    not tuned KD's (T, alpha). A leak is caught: with the epoch chosen by test accuracy, the choices move."""
    honest = _choices(tmp_path / "a", scramble_test=False)
    assert honest == _choices(tmp_path / "b", scramble_test=True)

    def leaky_score(self: EpochSelection) -> float:  # what a leak would do: score the epoch on the test set
        data = self._leak_data
        return float((self.student(data.x_test).argmax(1) == data.y_test).float().mean())

    real_init = Study.epoch_selection

    def leaky_selection(self, student, scenario, data, selects_epoch):
        selection = real_init(self, student, scenario, data, selects_epoch)
        selection._leak_data = data
        return selection

    monkeypatch.setattr(epoch_selection.EpochSelection, "score", leaky_score)
    monkeypatch.setattr(Study, "epoch_selection", leaky_selection)
    assert _choices(tmp_path / "c", scramble_test=False) != _choices(tmp_path / "d", scramble_test=True)


@pytest.mark.slow
def test_the_guard_catches_a_grid_choice_by_test_accuracy(tmp_path: Path, isolated_folders, monkeypatch) -> None:
    """Tuned KD choosing (T, alpha) by the grid's stored ``test_acc`` column (analysis only) is a leak the guard
    sees: the chosen pair then moves with the scrambled test set."""
    import kdlib.tune.tuned as tuned
    from kdlib.core.distill import best_point

    monkeypatch.setattr(tuned, "best_point", lambda scores: best_point(scores, key="test_acc"))
    pairs = {_choices(tmp_path / str(kind), scramble_test=kind)["tuned"][1:] for kind in (False, True, "constant")}
    assert len(pairs) > 1
