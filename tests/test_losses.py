"""Tests for kdlib.core.losses: KD loss by hand, alpha/T conventions, the high-T limit, DML and DP target choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlib.core.losses import (
    averaged_soft_targets,
    check_alpha,
    check_temperature,
    distillation_term,
    dml_losses,
    dp_select_targets,
    kd_loss,
    soft_targets,
)
from kdlib.errors import KDConfigError


def np_softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_logits(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------- kd_loss by hand


def test_kd_loss_matches_hand_computation() -> None:
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 0.5, 1.0], [1.0, 1.0, -2.0]]
    y = [1, 2]
    temperature, alpha = 2.0, 0.3

    def softmax(row, temp):
        exps = [math.exp(v / temp) for v in row]
        return [e / sum(exps) for e in exps]

    kl_total = 0.0
    ce_total = 0.0
    for s_row, t_row, label in zip(s, t, y, strict=True):
        p_t, p_s = softmax(t_row, temperature), softmax(s_row, temperature)
        kl_total += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
        ce_total += -math.log(softmax(s_row, 1.0)[label])
    kl, ce = kl_total / 2, ce_total / 2  # batchmean: divide by the number of samples
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce

    got = kd_loss(
        torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), torch.tensor(y), temperature, alpha
    )
    assert got.ndim == 0
    assert float(got) == pytest.approx(expected, abs=1e-6)
    # alpha weights the distillation term: the loss moves towards the KD term as alpha grows
    got_more_kd = kd_loss(
        torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), torch.tensor(y), temperature, 0.9
    )
    assert float(got_more_kd) == pytest.approx(0.9 * temperature**2 * kl + 0.1 * ce, abs=1e-6)


def test_alpha_zero_is_exactly_cross_entropy() -> None:
    s, t = random_logits(0, 6, 5, dtype=torch.float32), random_logits(1, 6, 5, dtype=torch.float32)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    for temperature in (0.5, 1.0, 4.0, 20.0):
        assert torch.equal(kd_loss(s, t, y, temperature, 0.0), F.cross_entropy(s, y))


@pytest.mark.parametrize("temperature", [1.0, 3.0, 10.0])
def test_alpha_one_is_t_squared_kl(temperature: float) -> None:
    s, t = random_logits(2, 4, 6), random_logits(3, 4, 6)
    y = torch.tensor([5, 0, 1, 2])
    p_t = torch.distributions.Categorical(logits=t / temperature)
    p_s = torch.distributions.Categorical(logits=s / temperature)
    expected = temperature**2 * torch.distributions.kl_divergence(p_t, p_s).mean()
    torch.testing.assert_close(kd_loss(s, t, y, temperature, 1.0), expected, rtol=1e-10, atol=1e-12)
    # the labels play no part at alpha = 1
    torch.testing.assert_close(kd_loss(s, t, torch.tensor([0, 0, 0, 0]), temperature, 1.0), expected)


def test_kd_loss_gradient_is_exact_and_stays_out_of_the_teacher() -> None:
    # d/ds [T^2 KL(p_t || softmax(s/T))] = T * (p_s - p_t), batchmean -> divided by B.
    temperature, alpha = 3.0, 0.6
    s = random_logits(4, 5, 4).requires_grad_(True)
    t = random_logits(5, 5, 4).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 0])
    kd_loss(s, t, y, temperature, alpha).backward()
    assert t.grad is None
    b = s.shape[0]
    p_s, p_t = torch.softmax(s.detach() / temperature, 1), torch.softmax(t.detach() / temperature, 1)
    soft_grad = temperature * (p_s - p_t) / b
    hard_grad = (torch.softmax(s.detach(), 1) - F.one_hot(y, 4).double()) / b
    torch.testing.assert_close(s.grad, alpha * soft_grad + (1 - alpha) * hard_grad)


# ---------------------------------------------------------------------------------------------- the high-T limit


def test_high_temperature_gradient_approaches_logit_matching() -> None:
    # L = T^2 KL(p_t || p_s) with p = softmax(z / T). Per sample, dL/ds_i = T^2 * (1/T) (p_s,i - p_t,i)
    #   = T (p_s,i - p_t,i).
    # For large T, p_i = exp(z_i/T) / sum_j exp(z_j/T) = (1/C) (1 + (z_i - mean z)/T + O(1/T^2)), so
    #   p_s,i - p_t,i = ((s_i - mean s) - (t_i - mean t)) / (C T) + O(1/T^2)
    # and for zero-mean logits dL/ds_i -> (s_i - t_i) / C, with a relative error of order 1/T.
    # "batchmean" divides by the B samples: the expected gradient is (s - t) / (C B).
    b, c = 3, 5
    s = random_logits(6, b, c)
    t = random_logits(7, b, c)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    expected = (s - t) / (c * b)
    errors = []
    for temperature in (10.0, 100.0, 1000.0):
        student = s.clone().requires_grad_(True)
        distillation_term(student, soft_targets(t, temperature), temperature).backward()
        errors.append(float((student.grad - expected).norm() / expected.norm()))
    assert errors[0] > errors[1] > errors[2]
    # the error is O(1/T): a 10x larger T cuts it by about 10x
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5
    assert errors[2] < 1e-2
    assert errors[0] < 0.5  # already roughly right at T = 10


# ---------------------------------------------------------------------------------------------- temperature


def test_soft_targets_limits() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0], [0.5, -0.5, 0.0, 4.0]])
    uniform = torch.full_like(logits, 1 / 4)
    assert (soft_targets(logits, 1e6) - uniform).abs().max() < 1e-5
    one_hot = F.one_hot(logits.argmax(1), 4).float()
    assert (soft_targets(logits, 1e-3) - one_hot).abs().max() < 1e-6
    # in between, the distance to uniform shrinks steadily as T grows
    distances = [float((soft_targets(logits, temp) - uniform).abs().sum()) for temp in (0.1, 0.5, 1, 2, 8, 64)]
    assert all(a > b for a, b in zip(distances, distances[1:], strict=False))
    for temp in (0.1, 1.0, 10.0):
        torch.testing.assert_close(soft_targets(logits, temp).sum(1), torch.ones(2))
    np.testing.assert_allclose(soft_targets(logits, 2.5).numpy(), np_softmax(logits.numpy(), 2.5), rtol=1e-6)


BAD_HYPERPARAMETERS = [
    ("temperature", 0),
    ("temperature", -1),
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("temperature", "abc"),
    ("temperature", None),
    ("alpha", -0.1),
    ("alpha", 1.5),
    ("alpha", float("nan")),
    ("alpha", "abc"),
]


@pytest.mark.parametrize(("field", "value"), BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_raise_naming_the_field(field: str, value: object) -> None:
    s, t, y = random_logits(8, 2, 3), random_logits(9, 2, 3), torch.tensor([0, 1])
    kwargs = {"temperature": 2.0, "alpha": 0.5, field: value}
    with pytest.raises(KDConfigError, match=field) as info:
        kd_loss(s, t, y, **kwargs)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    checker = check_temperature if field == "temperature" else check_alpha
    with pytest.raises(KDConfigError, match=field):
        checker(value)
    if field == "temperature":
        with pytest.raises(KDConfigError, match=field):
            soft_targets(t, value)
        with pytest.raises(KDConfigError, match=field):
            distillation_term(s, soft_targets(t, 1.0), value)


@pytest.mark.parametrize("temperature", [0, -1, float("nan"), "abc"])
def test_kd_loss_validates_the_temperature_even_at_alpha_zero(temperature: object) -> None:
    s, t, y = random_logits(8, 2, 3), random_logits(9, 2, 3), torch.tensor([0, 1])
    with pytest.raises(KDConfigError, match="temperature"):
        kd_loss(s, t, y, temperature, 0.0)


@pytest.mark.parametrize(
    ("checker", "value"),
    [(check_temperature, "2.5"), (check_temperature, 1e-4), (check_alpha, 0), (check_alpha, 1), (check_alpha, "0.25")],
)
def test_good_hyperparameters_come_back_as_floats(checker, value) -> None:
    got = checker(value)
    assert isinstance(got, float) and got == float(value)


# ---------------------------------------------------------------------------------------------- multi-teacher


def test_averaged_soft_targets_is_the_mean_of_softmaxes() -> None:
    temperature = 3.0
    teachers = [random_logits(10 + k, 5, 4) for k in range(3)]
    got = averaged_soft_targets(teachers, temperature)
    expected = np.mean([np_softmax(t.numpy(), temperature) for t in teachers], axis=0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(got.sum(1).numpy(), np.ones(5), rtol=1e-12)
    torch.testing.assert_close(averaged_soft_targets(teachers[:1], temperature), soft_targets(teachers[0], temperature))


def test_averaged_soft_targets_is_detached_and_needs_a_teacher() -> None:
    teacher = random_logits(13, 2, 3).requires_grad_(True)
    assert not averaged_soft_targets([teacher, teacher * 2], 2.0).requires_grad
    with pytest.raises(KDConfigError, match="teachers"):
        averaged_soft_targets([], 2.0)
    with pytest.raises(KDConfigError, match="temperature"):
        averaged_soft_targets([teacher], 0.0)


# ---------------------------------------------------------------------------------------------- DML


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_dml_identical_peers_have_zero_kl_and_equal_losses(temperature: float) -> None:
    z = random_logits(14, 6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    losses = dml_losses([z.clone(), z.clone()], y, temperature)
    assert len(losses) == 2
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    torch.testing.assert_close(losses[0], F.cross_entropy(z, y), rtol=0, atol=1e-12)


def test_dml_swapping_peers_swaps_losses() -> None:
    a, b = random_logits(15, 5, 3), random_logits(16, 5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    la, lb = dml_losses([a, b], y, 2.0)
    lb2, la2 = dml_losses([b, a], y, 2.0)
    torch.testing.assert_close(la, la2, rtol=0, atol=0)
    torch.testing.assert_close(lb, lb2, rtol=0, atol=0)
    assert not torch.isclose(la, lb)  # different peers -> different losses (the test above would be vacuous else)


def test_dml_losses_match_the_formula_for_three_peers() -> None:
    temperature = 2.0
    peers = [random_logits(20 + k, 4, 3) for k in range(3)]
    y = torch.tensor([2, 0, 1, 1])
    losses = dml_losses(peers, y, temperature)
    assert len(losses) == 3
    logp = [np.log(np_softmax(z.numpy(), temperature)) for z in peers]
    for i, own in enumerate(peers):
        ce = -np.mean(np.log(np_softmax(own.numpy()))[np.arange(4), y.numpy()])
        kls = [temperature**2 * np.sum(np.exp(logp[j]) * (logp[j] - logp[i])) / 4 for j in range(3) if j != i]
        assert float(losses[i]) == pytest.approx(ce + np.mean(kls), rel=1e-10)


def test_dml_gradients_do_not_flow_into_the_other_peer() -> None:
    temperature = 2.0
    a = random_logits(17, 4, 3).requires_grad_(True)
    b = random_logits(18, 4, 3).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 0])
    losses = dml_losses([a, b], y, temperature)
    losses[0].backward()
    assert b.grad is None or torch.count_nonzero(b.grad) == 0
    assert a.grad is not None and torch.count_nonzero(a.grad) > 0
    # and a's gradient is that of CE + T^2 KL(p_b || p_a) with b constant
    p_a, p_b = torch.softmax(a.detach() / temperature, 1), torch.softmax(b.detach() / temperature, 1)
    expected = (torch.softmax(a.detach(), 1) - F.one_hot(y, 3).double()) / 4 + temperature * (p_a - p_b) / 4
    torch.testing.assert_close(a.grad, expected)


@pytest.mark.parametrize("n_peers", [0, 1])
def test_dml_needs_two_peers(n_peers: int) -> None:
    with pytest.raises(KDConfigError, match="peers"):
        dml_losses([random_logits(19, 2, 3) for _ in range(n_peers)], torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------------- DP target choice


def test_dp_select_targets_hand_made_batch() -> None:
    # all labels are class 0; sample k is case (a)..(d) of the docstring's rules
    student = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    teacher_1 = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    teacher_2 = torch.tensor([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    labels = torch.zeros(4, dtype=torch.long)

    target, source = dp_select_targets([teacher_1], student, labels)
    assert source.dtype == torch.int64
    # (a) teacher more confident on the true class, (b) student more confident, (c) exact tie stays with the student
    assert source[:3].tolist() == [1, 0, 0]
    assert source[3].item() == 1  # teacher_1 beats the student on sample 3 too

    target, source = dp_select_targets([teacher_1, teacher_2], student, labels)
    # (d) with two teachers, the second is the most confident on sample 3 -> source 2
    assert source.tolist() == [1, 0, 0, 2]
    candidates = [student, teacher_1, teacher_2]
    for row, chosen in enumerate(source.tolist()):
        assert torch.equal(target[row], candidates[chosen][row])


def test_dp_select_targets_supervised_and_unsupervised_disagree() -> None:
    # the teacher is very sure of class 1 while the label is 0: it loses on the true class, wins on max probability
    student = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    teacher = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.4, 0.0]])
    labels = torch.tensor([0, 1])
    _, supervised = dp_select_targets([teacher], student, labels, "supervised")
    target, unsupervised = dp_select_targets([teacher], student, None, "unsupervised")
    assert supervised.tolist() == [0, 0]
    assert unsupervised.tolist() == [1, 0]
    assert torch.equal(target, torch.stack([teacher[0], student[1]]))


def test_dp_select_targets_agrees_with_a_numpy_reimplementation() -> None:
    student = random_logits(30, 64, 5)
    teachers = [random_logits(31 + k, 64, 5) * 2 for k in range(3)]
    labels = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(0))
    probs = np.stack([np_softmax(z.numpy()) for z in [student, *teachers]])  # (4, B, C)
    for variant in ("supervised", "unsupervised"):
        conf = probs[:, np.arange(64), labels.numpy()] if variant == "supervised" else probs.max(axis=2)
        best = conf[1:].argmax(axis=0)
        expected = np.where(conf[1:].max(axis=0) > conf[0], best + 1, 0)
        target, source = dp_select_targets(teachers, student, labels, variant)
        np.testing.assert_array_equal(source.numpy(), expected)
        stacked = torch.stack([student, *teachers])
        assert torch.equal(target, stacked[source, torch.arange(64)])


def test_dp_select_targets_errors() -> None:
    student, teacher = random_logits(40, 2, 3), random_logits(41, 2, 3)
    with pytest.raises(KDConfigError, match="labels"):
        dp_select_targets([teacher], student, None, "supervised")
    with pytest.raises(KDConfigError, match="dp_variant"):
        dp_select_targets([teacher], student, torch.tensor([0, 1]), "oracle")
    with pytest.raises(KDConfigError, match="teachers"):
        dp_select_targets([], student, torch.tensor([0, 1]))
