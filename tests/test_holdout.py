"""The held-out validation split: the whole task's label mix, in no party's data, and the only data tuned KD
chooses on (the test set is never read while (T, alpha) is chosen)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import kdlib.core.distill as distill
import kdlib.study.methods as methods_module
import kdlib.tune.tuned as tuned
from kdlib.core.distill import TuningProblem, grid_search
from kdlib.core.models import build_model
from kdlib.core.train import RunOptions, TrainConfig, seed_everything
from kdlib.data.datasets import load_dataset
from kdlib.errors import KDConfigError
from kdlib.study.config import scale_config
from kdlib.study.parties import make_scenario, proportional_subset
from kdlib.study.results import ResultsStore
from kdlib.study.runner import Study

KINDS = ("iid", "dirichlet:0.3", "disjoint", "quantity:1.5")


def skewed_labels(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """Labels with an uneven class mix (every class present)."""
    shares = rng.dirichlet(np.full(classes, 2.0))
    labels = np.concatenate([np.arange(classes), rng.choice(classes, size=n - classes, p=shares)])
    return rng.permutation(labels)


def assert_follows_global_mix(held: np.ndarray, labels: np.ndarray) -> None:
    """Class counts of the held-out split vs. ``n * global share``: within one sample (largest-remainder
    rounding), far inside three binomial standard errors of a random draw of the same size."""
    classes = int(labels.max()) + 1
    share = np.bincount(labels, minlength=classes) / len(labels)
    counts = np.bincount(labels[held], minlength=classes)
    expected = len(held) * share
    assert counts.sum() == len(held)
    assert np.all(np.abs(counts - expected) < 1.0), (counts, expected)
    sampling_error = 3 * np.sqrt(len(held) * share * (1 - share))
    assert np.all(np.abs(counts - expected) <= np.maximum(sampling_error, 1.0))


@pytest.mark.parametrize("case", range(40))
def test_proportional_subset_follows_the_label_mix(case: int) -> None:
    rng = np.random.default_rng(case)
    classes = int(rng.integers(2, 12))
    labels = skewed_labels(rng, int(rng.integers(50, 2000)), classes)
    n = int(rng.integers(1, len(labels) // 2))
    held = proportional_subset(labels, n, seed=case)
    assert len(held) == len(np.unique(held)) == n
    assert held.min() >= 0 and held.max() < len(labels)
    assert_follows_global_mix(held, labels)
    assert np.array_equal(held, proportional_subset(labels, n, seed=case))  # seeded


@pytest.mark.parametrize("n", [0, -3, 10_001, 2.5, True])
def test_proportional_subset_refuses_bad_sizes(n) -> None:
    with pytest.raises(KDConfigError, match="val_size"):
        proportional_subset(np.zeros(10_000, dtype=int), n, seed=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("transfer", ["student", "union", "public"])
@pytest.mark.parametrize("seed", range(4))
def test_the_holdout_has_the_global_mix_and_is_in_no_party_transfer_or_public_data(
    kind: str, transfer: str, seed: int, tmp_path: Path
) -> None:
    rng = np.random.default_rng(100 + seed)
    labels = skewed_labels(rng, 3000, 10)
    dataset = SimpleNamespace(y_train=torch.as_tensor(labels), num_classes=10)
    cfg = scale_config("smoke", seed=seed, val_size=int(rng.integers(50, 400)), transfer=transfer)
    scenario = make_scenario(dataset, kind, cfg)
    held = scenario.validation
    assert len(held) == cfg.val_size
    assert_follows_global_mix(held, labels)
    used = np.concatenate([*scenario.parts, scenario.public if scenario.public is not None else []])
    assert not set(held) & set(used.astype(int).tolist())
    assert len(np.union1d(held, used)) == len(labels)  # nothing else is lost
    study = Study(cfg, ResultsStore.open("study", tmp_path), device="cpu", progress=False)
    assert not set(held) & set(study.transfer_indices(scenario).tolist())


def test_no_holdout_at_val_size_zero_keeps_the_old_split(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 10, 1000)
    dataset = SimpleNamespace(y_train=torch.as_tensor(labels), num_classes=10)
    cfg = scale_config("smoke", val_size=0, selection="transfer", transfer="public", epoch_selection="last")
    scenario = make_scenario(dataset, "dirichlet:0.5", cfg)
    assert scenario.validation is None
    assert len(np.union1d(np.concatenate(scenario.parts), scenario.public)) == len(labels)
    with pytest.raises(KDConfigError, match="val_size"):
        scale_config("smoke", val_size=0)  # holdout selection needs a holdout


class Guarded(torch.Tensor):
    """A tensor that fails a test when any torch operation touches it while ``armed``; counts reads otherwise."""

    armed = False
    reads = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if Guarded.armed:
            raise AssertionError(f"the test set was read during the (T, alpha) selection ({func})")
        Guarded.reads += 1
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("search", ["grid", "halving"])
def test_tuned_kd_never_reads_the_test_set_while_it_chooses(
    search: str, tmp_path: Path, isolated_folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = scale_config(
        "smoke", dataset="digits", n_train=None, n_test=None, teacher_model="mlp", student_model="mlp",
        scenarios=("disjoint",), methods=("tuned",), pretrain={"epochs": 1}, distill={"epochs": 3},
        grid_temperatures=(1.0, 4.0), grid_alphas=(0.5, 0.9), val_size=150, seeds=1, tuning_search=search,
    )  # fmt: skip
    study = Study(cfg, ResultsStore.open("study", tmp_path / "results"), device="cpu", progress=False)
    data = study.dataset_for(0)
    study._datasets[0] = replace(data, x_test=data.x_test.as_subclass(Guarded), y_test=data.y_test.as_subclass(Guarded))
    real_tuned, real_standard = tuned.run_tuned, distill.run_standard
    analysis_reads: list[int] = []
    final: list[object] = []

    def unarmed(analysis):
        def evaluate(model):  # the test-accuracy column of the grid: stored for analysis, never used to choose
            Guarded.armed, before = False, Guarded.reads
            try:
                return analysis(model)
            finally:
                analysis_reads.append(Guarded.reads - before)
                Guarded.armed = True

        return evaluate

    def guarded_tuned(problem, student, *args, evaluate=None, **kwargs):
        final.append(student)
        args = list(args)
        if len(args) > 1:  # options, evaluate
            args[1] = unarmed(args[1])
        else:
            kwargs["evaluate"] = unarmed(evaluate)
        Guarded.armed = True  # from here until the chosen pair distils the student
        try:
            return real_tuned(problem, student, *args, **kwargs)
        finally:
            Guarded.armed = False

    def standard(student, *args, **kwargs):
        if final and student is final[0]:
            Guarded.armed = False  # the choice is made: the final distillation may record test curves
        return real_standard(student, *args, **kwargs)

    monkeypatch.setattr(methods_module, "run_tuned", guarded_tuned)
    monkeypatch.setattr(distill, "run_standard", standard)
    record = study.run("disjoint", "tuned")
    assert analysis_reads and all(n > 0 for n in analysis_reads)  # the guard sees real reads of the test set
    assert not Guarded.armed
    assert record["config"]["selection"] == "holdout"
    assert {(r["temperature"], r["alpha"]) for r in record["grid"]} == {(1.0, 0.5), (1.0, 0.9), (4.0, 0.5), (4.0, 0.9)}
    scored = [r["val_acc"] * 150 for r in record["grid"] if r.get("val_acc") == r.get("val_acc")]
    assert scored and all(abs(v - round(v)) < 1e-6 for v in scored)  # shares of the 150 held-out images


@pytest.fixture(scope="module")
def small():
    data = load_dataset("digits")
    seed_everything(0)
    return data, build_model("mlp", 10, data.in_shape), build_model("mlp", 10, data.in_shape)


def test_an_explicit_validation_split_is_scored_on_and_all_transfer_data_is_trained_on(
    small, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, teacher, student = small
    x, y, x_val, y_val = data.x_train[:200], data.y_train[:200], data.x_train[200:300], data.y_train[200:300]
    cfg = TrainConfig(epochs=1, batch_size=32)
    trained_on: list[int] = []
    real = distill.run_standard

    def spy(student, x_fit, *args, **kwargs):
        trained_on.append(len(x_fit))
        return real(student, x_fit, *args, **kwargs)

    monkeypatch.setattr(distill, "run_standard", spy)

    def make():
        return copy.deepcopy(student)

    quiet = RunOptions("cpu", progress=False)
    held = grid_search(TuningProblem(make, teacher, x, y, (2.0,), (0.5,), cfg, 0.2, x_val, y_val), quiet)
    carved = grid_search(TuningProblem(make, teacher, x, y, (2.0,), (0.5,), cfg, 0.2), quiet)
    assert trained_on == [200, 160]  # the carve-out takes 20% of the transfer data away from training
    assert held[0]["val_acc"] * 100 == pytest.approx(round(held[0]["val_acc"] * 100))  # a share of the 100 held out
    assert carved[0]["val_acc"] * 40 == pytest.approx(round(carved[0]["val_acc"] * 40))  # a share of 40
    with pytest.raises(KDConfigError, match="x_val"):
        grid_search(TuningProblem(make, teacher, x, y, (2.0,), (0.5,), cfg, x_val=x_val))


def test_the_public_split_is_drawn_as_before_the_shared_hold_out() -> None:
    """``make_scenario``'s public split (now ``parties.hold_out_public``, shared with the federated study) is the
    one drawn before: a stratified fraction of what the validation split leaves, in the same order."""
    from kdlib.data.datasets import stratified_subset

    dataset = load_dataset("digits")
    labels = dataset.y_train.numpy()
    for seed, val_size, fraction in ((0, 150, 0.2), (3, 0, 0.35)):
        cfg = scale_config("smoke", dataset="digits", n_train=None, n_test=None, seed=seed, val_size=val_size,
                           selection="transfer" if val_size == 0 else "holdout", transfer="public",
                           public_fraction=fraction, epoch_selection="validation" if val_size else "last")  # fmt: skip
        scenario = make_scenario(dataset, "dirichlet:0.5", cfg)
        private = np.arange(len(labels))
        if val_size:
            private = np.setdiff1d(private, proportional_subset(labels, val_size, seed))
        old_public = private[stratified_subset(labels[private], round(len(private) * fraction), seed)]
        assert np.array_equal(scenario.public, old_public)
        rest = np.setdiff1d(private, old_public)
        assert np.array_equal(np.sort(np.concatenate(scenario.parts)), rest)
