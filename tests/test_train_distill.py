"""Tests for kdlib.core.train (config, device, the fit loop) and kdlib.core.distill (the KD methods) on tiny models."""

from __future__ import annotations

import contextlib
import copy
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from kdlib.core.distill import (
    DistillOutcome,
    PartitionTeacherSpec,
    TeacherSpec,
    TuningProblem,
    best_point,
    check_same_classes,
    frozen_logits,
    grid_search,
    run_dml,
    run_dp,
    run_finetune,
    run_standard,
    split_validation,
)
from kdlib.core.losses import dp_select_targets
from kdlib.core.metrics import accuracy
from kdlib.core.models import build_model
from kdlib.core.precision import mixed_precision
from kdlib.core.train import (
    RunOptions,
    TrainConfig,
    fit,
    make_training,
    predict_logits,
    resolve_device,
    train_supervised,
)
from kdlib.errors import KDConfigError
from kdlib.tune.tuned import run_tuned

N_FEATURES, N_CLASSES = 8, 3
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def linear(seed: int, n_in: int = N_FEATURES, n_out: int = N_CLASSES) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out)


def toy_data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and the labels of a fixed random linear rule (so a linear teacher can be right)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=gen)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=torch.Generator().manual_seed(1234))
    return x, (x @ w).argmax(1)


def rule_teacher() -> nn.Module:
    """A linear teacher that is (scaled) exactly the labelling rule of ``toy_data``."""
    teacher = nn.Linear(N_FEATURES, N_CLASSES)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        teacher.weight.copy_(w.T * 2)
        teacher.bias.zero_()
    return teacher


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


CFG = TrainConfig(epochs=2, batch_size=16, lr=0.05, seed=0)
QUIET_CPU = RunOptions("cpu", progress=False)


# ------------------------------------------------------------------------------------------------ TrainConfig


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", -1),
        ("epochs", 1.5),
        ("batch_size", 0),
        ("batch_size", -3),
        ("lr", 0),
        ("lr", -0.1),
        ("lr", float("nan")),
        ("optimizer", "rmsprop"),
    ],
)
def test_train_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(KDConfigError, match=field) as info:
        TrainConfig(**{field: value})
    assert info.value.field == field


@pytest.mark.parametrize("value", ["abc", None])
def test_train_config_rejects_a_non_numeric_lr_with_kd_config_error(value: object) -> None:
    with pytest.raises(KDConfigError, match="lr"):
        TrainConfig(lr=value)


def test_train_config_accepts_good_values() -> None:
    cfg = TrainConfig(epochs=0, batch_size=1, lr=1e-4, optimizer="adam", augment=True, seed=3)
    assert cfg.as_dict()["optimizer"] == "adam" and cfg.as_dict()["epochs"] == 0


# ------------------------------------------------------------------------------------------------ devices


@NO_CUDA
def test_resolve_device_auto_is_cpu_here() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@NO_CUDA
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_resolve_device_cuda_without_cuda_raises(name: str) -> None:
    with pytest.raises(KDConfigError, match="device"):
        resolve_device(name)


def test_resolve_device_unknown_name_raises() -> None:
    with pytest.raises(KDConfigError, match="device"):
        resolve_device("quantum-abacus")


# ------------------------------------------------------------------------------------------------ fit


def separable_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen)
    score = x[:, 0] + 0.5 * x[:, 1]
    keep = score.abs() > 0.2  # a margin around the separating line
    return x[keep], (score[keep] > 0).long()


def test_fit_learns_a_linearly_separable_problem() -> None:
    x, y = separable_data()
    model = linear(0, 2, 2)
    cfg = TrainConfig(epochs=10, batch_size=32, lr=0.1, seed=0)
    seen = []
    history = train_supervised(model, x, y, cfg, QUIET_CPU)
    assert accuracy(predict_logits(model, x, "cpu"), y) > 0.9
    assert len(history) == cfg.epochs
    assert [h["epoch"] for h in history] == list(range(1, cfg.epochs + 1))
    assert all(math.isfinite(h["loss"]) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]

    # on_epoch_end's dict lands in that epoch's record
    def on_epoch_end(epoch: int) -> dict:
        seen.append(epoch)
        return {"train_acc": accuracy(predict_logits(model, x, "cpu"), y)}

    history = fit(
        [model],
        x,
        y,
        lambda xb, yb, _i: nn.functional.cross_entropy(model(xb), yb),
        TrainConfig(epochs=3, batch_size=32, lr=0.1),
        RunOptions("cpu", False, on_epoch_end),
    )
    assert seen == [1, 2, 3]
    assert [set(h) for h in history] == [{"epoch", "loss", "train_acc"}] * 3
    assert all(0.9 < h["train_acc"] <= 1.0 for h in history)


def test_fit_loss_is_the_sample_weighted_mean_of_batch_losses() -> None:
    x, y = separable_data()
    batch_losses: list[tuple[float, int]] = []
    model = linear(0, 2, 2)

    def batch_loss(xb, yb, idx):
        assert len(xb) == len(yb) == len(idx)
        loss = nn.functional.cross_entropy(model(xb), yb)
        batch_losses.append((float(loss.detach()), len(idx)))
        return loss

    (record,) = fit([model], x, y, batch_loss, TrainConfig(epochs=1, batch_size=50), QUIET_CPU)
    assert sum(n for _, n in batch_losses) == len(x)
    assert len(batch_losses) == math.ceil(len(x) / 50)
    expected = sum(v * n for v, n in batch_losses) / len(x)
    assert record["loss"] == pytest.approx(expected)


def test_fit_is_deterministic_given_the_seed() -> None:
    x, y = separable_data()
    base = linear(0, 2, 2)
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        model = copy.deepcopy(base)
        train_supervised(model, x, y, TrainConfig(epochs=2, batch_size=16, lr=0.1, seed=seed), QUIET_CPU)
        runs[name] = model
    assert params_equal(runs["a"], runs["b"])
    assert not params_equal(runs["a"], runs["c"])  # the seed decides the batch order
    assert not params_equal(runs["a"], base)


@pytest.mark.parametrize(("samples", "batch_size", "epochs"), [(10, 4, 3), (8, 4, 2), (1, 64, 1)])
def test_make_training_anneals_a_cosine_over_every_batch_of_every_epoch(samples, batch_size, epochs) -> None:
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.1, optimizer="adam")
    optimizer, schedule = make_training([nn.Parameter(torch.zeros(1))], cfg, samples)
    total = epochs * -(-samples // batch_size)  # batches per epoch, the last one short
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [0.05 * (1 + math.cos(math.pi * step / total)) for step in range(total)]
    assert isinstance(optimizer, torch.optim.Adam)
    assert rates == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # annealed to zero at the end


def test_fit_with_zero_epochs_changes_nothing_and_bad_data_raises() -> None:
    x, y = separable_data()
    model = linear(0, 2, 2)
    before = copy.deepcopy(model)
    assert train_supervised(model, x, y, TrainConfig(epochs=0), QUIET_CPU) == []
    assert params_equal(model, before)
    with pytest.raises(KDConfigError):
        train_supervised(model, x, y[:-1], CFG, QUIET_CPU)
    with pytest.raises(KDConfigError):
        train_supervised(model, x[:0], y[:0], CFG, QUIET_CPU)


# ------------------------------------------------------------------------------------------------ standard KD


def test_standard_kd_with_alpha_zero_is_finetuning() -> None:
    x, y = toy_data()
    base = linear(1)
    finetuned, distilled, kd_half = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    out_ft = run_finetune(finetuned, x, y, CFG, QUIET_CPU)
    out_kd = run_standard(distilled, x, y, TeacherSpec(linear(2), 4.0, 0.0), CFG, QUIET_CPU)
    assert isinstance(out_ft, DistillOutcome) and isinstance(out_kd, DistillOutcome)
    assert params_equal(finetuned, distilled)
    assert [h["loss"] for h in out_ft.history] == [h["loss"] for h in out_kd.history]
    # and the teacher does matter once alpha > 0
    run_standard(kd_half, x, y, TeacherSpec(linear(2), 4.0, 0.5), CFG, QUIET_CPU)
    assert not params_equal(kd_half, finetuned)


def test_standard_kd_validates_its_hyperparameters() -> None:
    x, y = toy_data()
    with pytest.raises(KDConfigError, match="temperature"):
        run_standard(linear(1), x, y, TeacherSpec(linear(2), 0.0, 0.5), CFG, QUIET_CPU)
    with pytest.raises(KDConfigError, match="alpha"):
        run_standard(linear(1), x, y, TeacherSpec(linear(2), 2.0, 1.5), CFG, QUIET_CPU)


def test_pure_distillation_from_a_right_teacher_teaches_the_rule() -> None:
    x, y = toy_data(n=192)
    student = linear(1)
    before = accuracy(predict_logits(student, x, "cpu"), y)
    wrong_labels = (y + 1) % N_CLASSES  # alpha = 1 ignores the labels entirely
    cfg = TrainConfig(epochs=10, batch_size=16, lr=0.1, seed=0)
    run_standard(student, x, wrong_labels, TeacherSpec(rule_teacher(), 2.0, 1.0), cfg, QUIET_CPU)
    after = accuracy(predict_logits(student, x, "cpu"), y)
    assert after > 0.85 and after > before


# ------------------------------------------------------------------------------------------------ frozen logits


class CountCalls:
    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, _module, _inputs, _output) -> None:
        self.calls += 1


def test_frozen_logits_are_cached_once_per_predict_batch() -> None:
    x, _ = toy_data(n=1100)
    teacher = linear(2)
    with torch.no_grad(), mixed_precision(torch.device("cpu")):  # the forward pass as the library computes it
        reference = teacher(x).float()
    counter = CountCalls(teacher)
    source = frozen_logits(teacher, x, TrainConfig(augment=False), "cpu")
    assert counter.calls == math.ceil(len(x) / 512)  # predict_logits' batches
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = torch.randperm(len(x), generator=gen)[:32]
        torch.testing.assert_close(source(x[idx], idx), reference[idx])
    assert counter.calls == math.ceil(len(x) / 512)  # no forward per lookup


def image_data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 4, 4, generator=gen), torch.randint(0, N_CLASSES, (n,), generator=gen)


def image_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, N_CLASSES))


def test_frozen_logits_with_augmentation_call_the_teacher_every_time() -> None:
    x, _ = image_data()
    teacher = image_model(2)
    batches = [(torch.arange(8 * k, 8 * k + 8), x[8 * k : 8 * k + 8].flip(3)) for k in range(3)]
    with torch.no_grad():
        references = [teacher(xb) for _, xb in batches]  # "augmented" batches: a cache would be wrong for them
    counter = CountCalls(teacher)
    source = frozen_logits(teacher, x, TrainConfig(augment=True), "cpu")
    assert counter.calls == 0
    for k, ((idx, xb), reference) in enumerate(zip(batches, references, strict=True), start=1):
        out = source(xb, idx)
        assert counter.calls == k
        assert not out.requires_grad
        torch.testing.assert_close(out, reference)


@pytest.mark.parametrize("augment", [False, True])
def test_teacher_calls_during_standard_kd(augment: bool) -> None:
    x, y = image_data()
    calls = {}
    for epochs in (1, 3):
        teacher = image_model(2)
        counter = CountCalls(teacher)
        cfg = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, augment=augment)
        run_standard(image_model(1), x, y, TeacherSpec(teacher, 2.0, 0.5), cfg, QUIET_CPU)
        calls[epochs] = counter.calls
    steps_per_epoch = math.ceil(len(x) / 16)
    if augment:
        assert calls[3] - calls[1] == 2 * steps_per_epoch  # one teacher forward per training step
        assert calls[1] >= steps_per_epoch
    else:
        assert calls[3] == calls[1]  # cached: more epochs, no more teacher forwards
        assert calls[1] < steps_per_epoch


# ------------------------------------------------------------------------------------------------ DML and DP


def test_dml_updates_every_peer() -> None:
    x, y = toy_data()
    peers = [linear(1), linear(2)]
    before = [copy.deepcopy(p) for p in peers]
    outcome = run_dml(peers, x, y, CFG, 2.0, QUIET_CPU)
    assert len(outcome.history) == CFG.epochs
    for peer, initial in zip(peers, before, strict=True):
        assert not params_equal(peer, initial)


def test_dml_keeps_identical_peers_identical() -> None:
    # by symmetry two equal peers get equal losses and equal updates at every step
    x, y = toy_data()
    peers = [linear(1), linear(1)]
    start = copy.deepcopy(peers[0])
    run_dml(peers, x, y, CFG, options=QUIET_CPU)
    assert params_equal(peers[0], peers[1])
    assert not params_equal(peers[0], start)


def test_dp_routing_shares_sum_to_one_and_match_the_per_sample_choice() -> None:
    x, y = toy_data()
    student, teachers = linear(1), [rule_teacher(), linear(3)]
    with torch.no_grad():
        initial = student(x)
        teacher_logits = [t(x) for t in teachers]
    for variant in ("supervised", "unsupervised"):
        trained = copy.deepcopy(student)
        outcome = run_dp(trained, x, y, PartitionTeacherSpec(teachers, 2.0, 0.5, variant), CFG, QUIET_CPU)
        routing = outcome.extra["routing"]
        assert set(routing) == {"initial_student", "teacher_0", "teacher_1"}
        assert sum(routing.values()) == pytest.approx(1.0)
        assert all(0.0 <= share <= 1.0 for share in routing.values())
        # no augmentation: every epoch routes each sample the same way, so the shares are per-sample fractions
        _, source = dp_select_targets(teacher_logits, initial, y if variant == "supervised" else None, variant)
        expected = np.bincount(source.numpy(), minlength=3) / len(x)
        assert [routing["initial_student"], routing["teacher_0"], routing["teacher_1"]] == pytest.approx(expected)
        assert not params_equal(trained, student)
    # the rule teacher is right on every sample: it takes a real share of the supervised routing
    assert routing["teacher_0"] > 0


# ------------------------------------------------------------------------------------------------ tuned KD


@pytest.mark.parametrize(("n", "fraction"), [(50, 0.2), (7, 0.5), (2, 0.9), (10, 0.01)])
def test_split_validation_is_a_seeded_partition(n: int, fraction: float) -> None:
    train, val = split_validation(n, fraction, seed=3)
    assert len(np.intersect1d(train, val)) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
    assert len(val) >= 1 and len(train) >= 1
    assert len(val) == min(n - 1, max(1, round(n * fraction)))
    again_train, again_val = split_validation(n, fraction, seed=3)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)


def test_split_validation_depends_on_the_seed_and_needs_two_samples() -> None:
    splits = {tuple(split_validation(100, 0.2, seed)[1].tolist()) for seed in range(5)}
    assert len(splits) > 1
    with pytest.raises(KDConfigError):
        split_validation(1, 0.2, 0)


def test_grid_search_scores_every_point() -> None:
    x, y = toy_data()
    base = linear(1)
    temperatures, alphas = (1.0, 4.0), (0.0, 0.5, 1.0)
    evaluated = []

    def evaluate(student: nn.Module) -> dict:
        evaluated.append(student)
        return {"train_acc": accuracy(predict_logits(student, x, "cpu"), y)}

    problem = TuningProblem(lambda: copy.deepcopy(base), rule_teacher(), x, y, temperatures, alphas, CFG, 0.25)
    scores = grid_search(problem, QUIET_CPU, evaluate)
    assert len(scores) == len(temperatures) * len(alphas) == len(evaluated)
    assert [(r["temperature"], r["alpha"]) for r in scores] == list(itertools.product(temperatures, alphas))
    _, val_idx = split_validation(len(x), 0.25, CFG.seed)
    val_before = accuracy(predict_logits(base, x[val_idx], "cpu"), y[val_idx])
    for row in scores:
        assert 0.0 <= row["val_acc"] <= 1.0
        assert row["val_gain"] == pytest.approx(row["val_acc"] - val_before)
        assert "train_acc" in row
    # at alpha = 0 the temperature plays no part: both T give the same student
    at_zero = [r for r in scores if r["alpha"] == 0.0]
    assert at_zero[0]["val_acc"] == at_zero[1]["val_acc"] and at_zero[0]["train_acc"] == at_zero[1]["train_acc"]
    assert params_equal(base, linear(1))  # every point distils a fresh copy


def test_best_point_takes_the_max_and_breaks_ties_by_order() -> None:
    scores = [
        {"temperature": 1.0, "alpha": 0.25, "val_acc": 0.7, "val_gain": 0.3},
        {"temperature": 1.0, "alpha": 0.5, "val_acc": 0.9, "val_gain": 0.1},
        {"temperature": 4.0, "alpha": 0.25, "val_acc": 0.9, "val_gain": 0.1},
        {"temperature": 4.0, "alpha": 0.5, "val_acc": 0.8, "val_gain": 0.2},
    ]
    assert best_point(scores) is scores[1]
    assert best_point(scores[::-1]) is scores[2]  # the earliest of the tied points in the given order
    assert best_point(scores, key="val_gain") is scores[0]
    same = [dict(scores[0]), dict(scores[0])]
    assert best_point(same) is same[0]
    with pytest.raises(KDConfigError):
        best_point([])


def test_run_tuned_uses_a_point_of_the_grid() -> None:
    x, y = toy_data()
    base = linear(1)
    temperatures, alphas = (1.0, 8.0), (0.25, 0.75)
    student = copy.deepcopy(base)
    problem = TuningProblem(lambda: copy.deepcopy(base), rule_teacher(), x, y, temperatures, alphas, CFG)
    outcome = run_tuned(problem, student, QUIET_CPU)
    extra = outcome.extra
    assert extra["best_temperature"] in temperatures and extra["best_alpha"] in alphas
    assert len(extra["grid"]) == 4
    best = best_point(extra["grid"])
    assert (extra["best_temperature"], extra["best_alpha"]) == (best["temperature"], best["alpha"])
    assert len(outcome.history) == CFG.epochs
    # the final student is standard KD on all the data with the chosen pair
    reference = copy.deepcopy(base)
    run_standard(reference, x, y, TeacherSpec(rule_teacher(), best["temperature"], best["alpha"]), CFG, QUIET_CPU)
    assert params_equal(student, reference)


# ------------------------------------------------------------------------------------------------ class checks


def test_check_same_classes_rejects_a_teacher_with_more_classes() -> None:
    x, y = toy_data()
    student, teacher = linear(1, n_out=3), linear(2, n_out=4)
    with pytest.raises(KDConfigError, match="num_classes"):
        check_same_classes(student, [teacher], x)
    with pytest.raises(KDConfigError, match="num_classes"):
        run_standard(student, x, y, TeacherSpec(teacher, 2.0, 0.5), CFG, QUIET_CPU)
    with pytest.raises(KDConfigError, match=r"teacher\[1\]\.num_classes"):
        run_dp(student, x, y, PartitionTeacherSpec([linear(3), teacher], 2.0, 0.5), CFG, QUIET_CPU)
    check_same_classes(student, [linear(3), linear(4)], x)  # matching heads pass


def test_cpu_channels_last_is_used_inside_and_undone_after_also_when_nested():
    from kdlib.core.train import cpu_channels_last

    model = build_model("cnn-small", 10, (3, 32, 32))
    conv = model.features[0].weight
    x = torch.zeros(2, 3, 32, 32)
    with cpu_channels_last([model], torch.device("cpu"), x) as layout:
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        assert layout(x).is_contiguous(memory_format=torch.channels_last)
        with cpu_channels_last([model], torch.device("cpu"), x):  # e.g. a test-accuracy curve inside fit
            pass
        assert not conv.is_contiguous(), "the inner use must not undo the outer one"
    assert conv.is_contiguous()
    flat = torch.zeros(2, 20)
    with cpu_channels_last([model], torch.device("cpu"), flat) as layout:  # not an image batch: nothing changes
        assert conv.is_contiguous() and layout(flat) is flat


def test_fit_in_channels_last_matches_the_default_layout_in_float64():

    torch.manual_seed(0)
    x, y = torch.randn(40, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (40,))
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05)
    reference = build_model("cnn-small", 10, (3, 16, 16)).double()
    fast = copy.deepcopy(reference)

    def loss_of(model):
        return lambda xb, yb, _idx: torch.nn.functional.cross_entropy(model(xb), yb)

    fit([fast], x, y, loss_of(fast), cfg, QUIET_CPU)
    import kdlib.core.train as train

    original, train.cpu_channels_last = train.cpu_channels_last, lambda *a: contextlib.nullcontext(lambda b: b)
    try:
        fit([reference], x, y, loss_of(reference), cfg, QUIET_CPU)
    finally:
        train.cpu_channels_last = original
    for p, q in zip(fast.parameters(), reference.parameters(), strict=True):
        assert p.is_contiguous()
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10)
