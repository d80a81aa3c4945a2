"""Exercise 1, the KD loss: checks of the learner's soft targets and KD loss, and their model answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from kdlib.core.losses import kd_loss as _kd_loss
from kdlib.core.losses import soft_targets as _soft_targets
from kdlib.teaching.common import (
    all_close,
    as_tensor_output,
    call_learner,
    fail,
    fmt_number,
    matching_variant,
    need_callable,
    not_written,
    ok,
    row_text,
    seeded_randn,
)


# ------------------------------------------------------------------------------------------ exercise 1: soft targets
def check_soft_targets(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> bool:
    """Check ``fn(logits, temperature) -> probabilities`` against :func:`kdlib.core.losses.soft_targets`."""
    name = "soft_targets"
    need_callable(fn, name)
    trials = [((8, 10), 4.0), ((5, 7), 2.0), ((6, 10), 0.5)]
    got, expected, variants = [], [], {k: [] for k in _SOFT_VARIANTS}
    for seed, (shape, temperature) in enumerate(trials):
        z = seeded_randn(seed, *shape, scale=3.0)
        expected.append(_soft_targets(z, temperature))
        where = f"soft_targets(logits of shape {tuple(shape)}, temperature={temperature:g})"
        out = as_tensor_output(call_learner(fn, name, (z.clone(), temperature), where), name, where)
        if out.shape != z.shape:
            raise fail(
                f"Your {name} returned shape {tuple(out.shape)} for logits of shape {tuple(z.shape)}: soft targets "
                "have one probability per logit, the same shape as the input (softmax keeps the shape)."
            )
        got.append(out)
        for key, (formula, _message) in _SOFT_VARIANTS.items():
            variants[key].append(formula(z, temperature))
    if not all(all_close(g, e) for g, e in zip(got, expected, strict=True)):
        found = matching_variant(got, variants)
        if found is not None:
            raise fail(_SOFT_VARIANTS[found][1].format(T=trials[0][1]))
        sums = got[0].sum(dim=-1)
        if not all_close(sums, torch.ones_like(sums)):
            raise fail(
                f"Each row of your soft targets should sum to 1 (one distribution per example); your first row sums "
                f"to {fmt_number(float(sums[0]))}. Divide the logits by T, then take softmax over the last axis."
            )
        worst = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True))
        raise fail(
            f"Your soft targets are proper distributions but differ from kdlib's by up to {fmt_number(worst)} "
            f"(at T={trials[0][1]:g}, first row: yours {row_text(got[0][0])}, kdlib's {row_text(expected[0][0])}). "
            "The recipe is softmax(logits / T) over the last axis."
        )
    one = seeded_randn(7, 10, scale=3.0)
    where = "soft_targets(one example: logits of shape (10,), temperature=3)"
    try:
        single = fn(one.clone(), 3.0)
    except NotImplementedError:
        raise fail(not_written(name)) from None
    except Exception as err:
        raise fail(
            f"Your {name} works on a batch but fails on one example (logits of shape (10,)): {type(err).__name__}: "
            f"{err}. Take the softmax over the last axis (dim=-1) so it works for any shape."
        ) from err
    if not all_close(as_tensor_output(single, name, where), _soft_targets(one, 3.0)):
        raise fail(
            f"Your {name} is right on a batch but wrong on one example (logits of shape (10,)): take the softmax "
            "over the last axis (dim=-1), not a fixed axis."
        )
    huge = torch.tensor([[3000.0, 0.0, -3000.0], [1500.0, 1400.0, 0.0]], dtype=torch.float64)
    where = "soft_targets(very large logits such as 3000, temperature=2)"
    big = as_tensor_output(call_learner(fn, name, (huge.clone(), 2.0), where), name, where)
    if not bool(torch.isfinite(big).all()):
        raise fail(
            f"Your {name} gives nan/inf for large logits (3000 at T=2): exp overflows. Subtract each row's maximum "
            "before exp (softmax does not change), or simply use torch.softmax(logits / T, dim=-1)."
        )
    return ok(
        f"{name} matches kdlib.core.losses.soft_targets on random batches (T = 4, 2, 0.5), on one example and on huge "
        "logits."
    )


_SOFT_VARIANTS: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], str]] = {
    "unsoftened": (
        lambda z, t: F.softmax(z, dim=-1),
        "You forgot to soften with T: this is softmax of the raw logits. Divide the logits by T first: "
        "softmax(logits / T, dim=-1).",
    ),
    "multiplied": (
        lambda z, t: F.softmax(z * t, dim=-1),
        "You multiplied the logits by T; divide them. A higher T must flatten the distribution "
        "(at T={T:g} the teacher should look less sure), not sharpen it.",
    ),
    "log_probs": (
        lambda z, t: F.log_softmax(z / t, dim=-1),
        "You returned log-probabilities (log_softmax); soft targets are probabilities: use softmax, so each row "
        "is between 0 and 1 and sums to 1.",
    ),
    "wrong_axis": (
        lambda z, t: F.softmax(z / t, dim=0),
        "Softmax over the wrong axis: your columns sum to 1, not your rows. Each row is one example; "
        "use dim=-1 (the classes).",
    ),
    "divided_probs": (
        lambda z, t: F.softmax(z, dim=-1) / t,
        "You divided the probabilities by T instead of the logits, so rows no longer sum to 1. "
        "Soften the logits: softmax(logits / T).",
    ),
    "unnormalised": (
        lambda z, t: torch.exp(z / t),
        "You forgot to normalise: exp(logits / T) must be divided by its row sum (that is what softmax does).",
    ),
    "sigmoid": (
        lambda z, t: torch.sigmoid(z / t),
        "You used a sigmoid, which treats every class on its own; use softmax so that the classes compete and "
        "each row sums to 1.",
    ),
}


# ----------------------------------------------------------------------------------------------- exercise 1: KD loss
def _kd_pieces(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """Per-sample pieces of the right loss and of its typical misreadings."""
    log_ps, log_pt = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    ps, pt = log_ps.exp(), log_pt.exp()
    raw_log_ps, raw_log_pt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    return {
        "kl": (pt * (log_pt - log_ps)).sum(-1),
        "reverse_kl": (ps * (log_ps - log_pt)).sum(-1),
        "raw_kl": (raw_log_pt.exp() * (raw_log_pt - raw_log_ps)).sum(-1),
        "probs_in_kl_div": (pt * (log_pt - ps)).sum(-1),
        "teacher_entropy": -(pt * log_pt).sum(-1),
        "ce": F.cross_entropy(s, y, reduction="none"),
        "ce_soft": F.cross_entropy(s / temperature, y, reduction="none"),
    }


def _kd_variants() -> dict[str, tuple[Callable[..., torch.Tensor], str]]:
    """Typical wrong KD losses: ``f(pieces, T, alpha, batch, classes) -> value`` and the message for each."""

    def mix(soft: torch.Tensor, hard: torch.Tensor, a: float) -> torch.Tensor:
        return a * soft + (1 - a) * hard

    return {
        "no_t2": (
            lambda p, T, a, B, C: mix(p["kl"].mean(), p["ce"].mean(), a),
            "Your loss is exactly kdlib's with the soft term divided by T² (= {T2:g} at T={T:g}): the T² factor is "
            "missing. Multiply the KL term by T**2; it keeps the soft term's gradients on the scale of the hard "
            "term's when T changes.",
        ),
        "t2_twice": (
            lambda p, T, a, B, C: mix(T**4 * p["kl"].mean(), p["ce"].mean(), a),
            "Your soft term is {T2:g} times kdlib's at T={T:g}: did you multiply by T² twice (for example once in a "
            "helper and again in kd_loss)? The soft term is T² · KL, once.",
        ),
        "t_not_t2": (
            lambda p, T, a, B, C: mix(T * p["kl"].mean(), p["ce"].mean(), a),
            "Your soft term is scaled by T, not T² (it is kdlib's / {T:g} at T={T:g}): multiply the KL term by T**2.",
        ),
        "alpha_swapped": (
            lambda p, T, a, B, C: mix(p["ce"].mean(), T**2 * p["kl"].mean(), a),
            "alpha weights the wrong term: with alpha=1 your loss equals cross-entropy. In kdlib alpha weights the "
            "distillation term: alpha · T² · KL + (1 - alpha) · CE(s, y).",
        ),
        "reverse_kl": (
            lambda p, T, a, B, C: mix(T**2 * p["reverse_kl"].mean(), p["ce"].mean(), a),
            "You used KL(student || teacher) instead of KL(teacher || student). The teacher's soft targets are the "
            "target distribution, so they come first: F.kl_div(log_softmax(s / T), softmax(t / T), "
            "reduction='batchmean') — the student's LOG-probabilities are F.kl_div's first argument.",
        ),
        "ce_softened": (
            lambda p, T, a, B, C: mix(T**2 * p["kl"].mean(), p["ce_soft"].mean(), a),
            "You divided the logits by T for the cross-entropy term too: the hard term uses the raw student logits, "
            "CE(s, y); only the distillation term is softened.",
        ),
        "unsoftened": (
            lambda p, T, a, B, C: mix(T**2 * p["raw_kl"].mean(), p["ce"].mean(), a),
            "You forgot to soften with T in the distillation term (softmax of raw logits): divide both the teacher's "
            "and the student's logits by T before the softmax.",
        ),
        "unsoftened_no_t2": (
            lambda p, T, a, B, C: mix(p["raw_kl"].mean(), p["ce"].mean(), a),
            "Your distillation term is KL of the raw logits, neither softened with T nor scaled by T²: use "
            "T² · KL(softmax(t / T) || softmax(s / T)).",
        ),
        "negative_kl": (
            lambda p, T, a, B, C: mix(-(T**2) * p["kl"].mean(), p["ce"].mean(), a),
            "Your distillation term has the wrong sign: KL divergence is never negative. "
            "KL(p_t || p_s) = Σ p_t · (log p_t − log p_s): check the order of the two logs.",
        ),
        "negative_loss": (
            lambda p, T, a, B, C: -mix(T**2 * p["kl"].mean(), p["ce"].mean(), a),
            "Your loss has the wrong sign: it is minus kdlib's. Both terms are never negative (KL ≥ 0, CE ≥ 0), "
            "and an optimiser minimises the loss.",
        ),
        "kl_mean": (
            lambda p, T, a, B, C: mix(T**2 * p["kl"].mean() / C, p["ce"].mean(), a),
            "Your distillation term is kdlib's divided by the number of classes ({C}): F.kl_div with "
            "reduction='mean' averages over the classes too. Use reduction='batchmean' (sum over classes, mean over "
            "the batch).",
        ),
        "kl_sum": (
            lambda p, T, a, B, C: mix(T**2 * p["kl"].sum(), p["ce"].mean(), a),
            "Your distillation term is the batch size ({B}) times kdlib's: reduction='sum' adds up the batch. Use "
            "reduction='batchmean' so the loss does not grow with the batch.",
        ),
        "probs_in_kl_div": (
            lambda p, T, a, B, C: mix(T**2 * p["probs_in_kl_div"].mean(), p["ce"].mean(), a),
            "You passed the student's probabilities to F.kl_div; its first argument must be LOG-probabilities: "
            "F.kl_div(F.log_softmax(s / T, dim=-1), softmax(t / T), reduction='batchmean').",
        ),
        "cross_entropy_soft": (
            lambda p, T, a, B, C: mix(T**2 * (p["kl"] + p["teacher_entropy"]).mean(), p["ce"].mean(), a),
            "Your distillation term is the cross-entropy H(p_t, p_s) = KL(p_t || p_s) + H(p_t): the gradients agree "
            "but the value is off by the teacher's entropy. Use the KL divergence: subtract Σ p_t · log p_t, or use "
            "F.kl_div.",
        ),
        "hard_missing": (
            lambda p, T, a, B, C: a * T**2 * p["kl"].mean(),
            "Your loss leaves out the hard term: add (1 - alpha) · CE(s, y) with the raw student logits and the "
            "true labels.",
        ),
        "soft_missing": (
            lambda p, T, a, B, C: (1 - a) * p["ce"].mean(),
            "Your loss leaves out the distillation term: add alpha · T² · KL(softmax(t / T) || softmax(s / T)).",
        ),
        "unweighted": (
            lambda p, T, a, B, C: T**2 * p["kl"].mean() + p["ce"].mean(),
            "You added the two terms without weights: the loss is alpha · (soft term) + (1 - alpha) · (hard term).",
        ),
    }


_KD_TRIALS = ((0, 8, 10, 4.0, 0.7), (1, 8, 10, 2.0, 0.3), (2, 5, 7, 3.0, 0.9))
"""(seed, batch, classes, T, alpha) of the random batches ``check_kd_loss`` uses; T != 1, alpha != 0.5 on purpose."""


def _kd_batch(seed: int, batch: int, classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s, t = seeded_randn(seed, batch, classes, scale=2.0), seeded_randn(seed + 100, batch, classes, scale=3.0)
    y = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed + 200))
    return s, t, y


def _loss_value(out: object, name: str, where: str, batch: int, per_sample: torch.Tensor) -> torch.Tensor:
    value = as_tensor_output(out, name, where)
    if value.ndim == 0:
        return value
    hint = ""
    if value.shape == (batch,) and all_close(value.mean(), per_sample.mean()):
        hint = " (its mean is right)"
    if value.shape == (batch,):
        raise fail(
            f"Your loss returned shape {tuple(value.shape)}, expected a scalar{hint}: average over the batch "
            "(.mean() for the cross-entropy, reduction='batchmean' for the KL)."
        )
    raise fail(
        f"Your loss returned shape {tuple(value.shape)}, expected a scalar: sum the KL over the classes, then "
        "average both terms over the batch."
    )


def check_kd_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], torch.Tensor]) -> bool:
    """Check ``fn(student_logits, teacher_logits, labels, temperature, alpha)`` against kdlib's ``kd_loss``."""
    name = "kd_loss"
    need_callable(fn, name)
    variants = _kd_variants()
    got, expected, wrong = [], [], {k: [] for k in variants}
    for seed, batch, classes, temperature, alpha in _KD_TRIALS:
        s, t, y = _kd_batch(seed, batch, classes)
        where = f"kd_loss(batch of {batch}, {classes} classes, temperature={temperature:g}, alpha={alpha:g})"
        pieces = _kd_pieces(s, t, y, temperature)
        right = _kd_loss(s, t, y, temperature, alpha)
        per_sample = alpha * temperature**2 * pieces["kl"] + (1 - alpha) * pieces["ce"]
        out = call_learner(fn, name, (s.clone(), t.clone(), y.clone(), temperature, alpha), where)
        got.append(_loss_value(out, name, where, batch, per_sample))
        expected.append(right)
        for key, (formula, _message) in variants.items():
            wrong[key].append(formula(pieces, temperature, alpha, batch, classes))
    if not all(all_close(g, e) for g, e in zip(got, expected, strict=True)):
        seed, batch, classes, temperature, alpha = _KD_TRIALS[0]
        found = matching_variant(got, wrong)
        if found is not None:
            message = variants[found][1].format(T=temperature, T2=temperature**2, B=batch, C=classes)
            raise fail(
                f"{message}\n  (at T={temperature:g}, alpha={alpha:g}: kdlib gives "
                f"{fmt_number(float(expected[0]))}, yours {fmt_number(float(got[0]))})"
            )
        raise fail(_locate_kd_error(fn))
    _check_kd_gradients(fn)
    temps = ", ".join(f"{trial[3]:g}" for trial in _KD_TRIALS)
    alphas = ", ".join(f"{trial[4]:g}" for trial in _KD_TRIALS)
    return ok(
        f"{name} matches kdlib.core.losses.kd_loss on {len(_KD_TRIALS)} random batches "
        f"(T = {temps}; alpha = {alphas}), "
        "and only the student gets gradients."
    )


def _locate_kd_error(fn: Callable[..., Any]) -> str:
    """No known mistake fits: test the two terms on their own (alpha=0, alpha=1) and say which one is off."""
    seed, batch, classes, temperature, _alpha = _KD_TRIALS[0]
    s, t, y = _kd_batch(seed, batch, classes)
    hard = float(_kd_loss(s, t, y, temperature, 0.0))
    soft = float(_kd_loss(s, t, y, temperature, 1.0))
    where = f"kd_loss(..., temperature={temperature:g}, alpha=0)"
    at0 = float(
        as_tensor_output(
            call_learner(fn, "kd_loss", (s.clone(), t.clone(), y.clone(), temperature, 0.0), where), "kd_loss", where
        )
    )
    where = f"kd_loss(..., temperature={temperature:g}, alpha=1)"
    at1 = float(
        as_tensor_output(
            call_learner(fn, "kd_loss", (s.clone(), t.clone(), y.clone(), temperature, 1.0), where), "kd_loss", where
        )
    )
    problems = []
    if not all_close(at0, hard):
        problems.append(
            f"with alpha=0 the loss must be plain cross-entropy CE(s, y) = {fmt_number(hard)}, "
            f"yours is {fmt_number(at0)}"
        )
    if not all_close(at1, soft):
        ratio = f" (ratio {fmt_number(at1 / soft)})" if soft else ""
        problems.append(
            f"with alpha=1 the loss must be the distillation term T² · KL(p_t || p_s) = {fmt_number(soft)} at "
            f"T={temperature:g}, yours is {fmt_number(at1)}{ratio}"
        )
    if not problems:
        return (
            "Both terms are right on their own (alpha=0 and alpha=1 match), but the mix is off: the loss is "
            "alpha · (soft term) + (1 - alpha) · (hard term)."
        )
    return "Your loss differs from kdlib's: " + "; ".join(problems) + "."


def _check_kd_gradients(fn: Callable[..., Any]) -> None:
    seed, batch, classes, temperature, alpha = _KD_TRIALS[0]
    s, t, y = _kd_batch(seed, batch, classes)
    s.requires_grad_(True)
    t.requires_grad_(True)
    try:
        out = fn(s, t, y, temperature, alpha)
    except Exception as err:
        raise fail(
            f"Your kd_loss fails when the logits require gradients ({type(err).__name__}: {err}); stay in torch "
            "(no .numpy(), .item() or torch.tensor(...) around the logits) so that loss.backward() works."
        ) from err
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise fail(
            "Your loss does not carry gradients back to the student's logits: did you use .detach(), .item(), "
            "numpy or torch.tensor(...) on the student's side? Training needs loss.backward() to reach the student."
        )
    out.backward()
    if t.grad is not None and float(t.grad.abs().max()) > 0:
        raise fail(
            "Gradients flow into the teacher's logits: the teacher is frozen, so detach its logits "
            "(teacher_logits.detach()) before the softmax."
        )
    if s.grad is None or float(s.grad.abs().max()) == 0:
        raise fail("Your loss gives no gradient to the student's logits: build it from student_logits directly.")


# ---------------------------------------------------------------------------------------------- model answers
def solution_soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of logits / T over the classes (the last axis)."""
    return torch.softmax(logits / temperature, dim=-1)


def solution_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """alpha · T² · KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) · CE(s, y), averaged over the batch."""
    teacher_probs = torch.softmax(teacher_logits.detach() / temperature, dim=-1)
    student_log_probs = torch.log_softmax(student_logits / temperature, dim=-1)
    soft = F.kl_div(student_log_probs, teacher_probs, reduction="batchmean") * temperature**2
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1 - alpha) * hard
