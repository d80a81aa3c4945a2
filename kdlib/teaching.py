"""Checks and model answers for the exercise notebooks in ``notebooks/exercises/``.

Each ``check_*`` runs the learner's function (or reads the learner's answer) on seeded random inputs, compares
it with kdlib's own, and either prints a short "✓ ..." line and returns True, or raises
:class:`TeachingCheckError` that says in plain words what is wrong: shape, scaling, sign, a missing T², the wrong
direction of the KL divergence, and so on. The diagnosis comes from computing what each typical mistake would
give and matching the learner's numbers against it.

The model answers live here, once: ``solution(name)`` returns one, ``show_solution(name)`` prints its source. The
notebooks take a papermill parameter ``solutions``; with ``solutions = True`` each exercise cell is followed by
``name = teaching.solution("name")``, so CI runs every notebook with right answers. ``grade_report(folder)`` (or
``python -m kdlib.teaching report FOLDER``) summarises a class's notebooks executed in batch with papermill.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from kdlib.losses import kd_loss as _kd_loss
from kdlib.losses import soft_targets as _soft_targets
from kdlib.partition import PartitionSpec, partition_indices, partition_stats

if TYPE_CHECKING:
    import pandas

__all__ = [
    "PREDICTION_CHOICES",
    "TUNING_EXPLANATIONS",
    "TeachingCheckError",
    "check_dirichlet_split",
    "check_entropy",
    "check_heatmap_reading",
    "check_kd_loss",
    "check_pick_best",
    "check_soft_targets",
    "check_temperature_prediction",
    "check_tuning_explanation",
    "compare_guess",
    "grade_report",
    "show_solution",
    "solution",
]

RTOL, ATOL = 1e-4, 1e-6
"""How close a learner's numbers must be to kdlib's (float32 arithmetic in the learner's code passes)."""


class TeachingCheckError(AssertionError):
    """The learner's answer is wrong; the message says what is wrong and how to fix it."""


# ---------------------------------------------------------------------------------------------------- helpers
def _fail(message: str) -> TeachingCheckError:
    return TeachingCheckError(message)


def _ok(message: str) -> bool:
    print(f"✓ {message}")
    return True


def _num(value: float) -> str:
    return f"{value:.4g}"


def _not_written(name: str) -> str:
    return (
        f"{name} is not written yet: replace the `raise NotImplementedError(...)` line in its cell with your code, "
        "run that cell, then run this check again."
    )


def _need_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise _fail(f"Expected your function {name}, got {type(fn).__name__} {fn!r}. Pass the function itself.")


def _call(fn: Callable[..., Any], name: str, args: tuple, where: str) -> Any:
    """``fn(*args)``, turning the learner's exceptions into plain-words messages."""
    try:
        out = fn(*args)
    except NotImplementedError:
        raise _fail(_not_written(name)) from None
    except TeachingCheckError:
        raise
    except Exception as err:  # the learner's bug: name it and where it happened
        raise _fail(f"Your {name} raised {type(err).__name__}: {err}\n  (while computing {where})") from err
    if out is None:
        raise _fail(f"Your {name} returned None (for {where}): did you forget the `return` line?")
    return out


def _tensor(out: object, name: str, where: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise _fail(
            f"Your {name} returned a value of type {type(out).__name__} (for {where}); return a torch tensor "
            "(stay in torch: no .item(), .tolist() or numpy)."
        )
    return out.detach().to(torch.float64)


def _close(a: torch.Tensor | float, b: torch.Tensor | float) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL))


def _randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _match(values: Sequence[Any], variants: Mapping[str, Sequence[Any]]) -> str | None:
    """The first variant whose values agree with the learner's on every trial."""
    for name, expected in variants.items():
        if all(_close(v, e) for v, e in zip(values, expected, strict=True)):
            return name
    return None


# ------------------------------------------------------------------------------------------ exercise 1: soft targets
def check_soft_targets(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> bool:
    """Check ``fn(logits, temperature) -> probabilities`` against :func:`kdlib.losses.soft_targets`."""
    name = "soft_targets"
    _need_callable(fn, name)
    trials = [((8, 10), 4.0), ((5, 7), 2.0), ((6, 10), 0.5)]
    got, expected, variants = [], [], {k: [] for k in _SOFT_VARIANTS}
    for seed, (shape, temperature) in enumerate(trials):
        z = _randn(seed, *shape, scale=3.0)
        expected.append(_soft_targets(z, temperature))
        where = f"soft_targets(logits of shape {tuple(shape)}, temperature={temperature:g})"
        out = _tensor(_call(fn, name, (z.clone(), temperature), where), name, where)
        if out.shape != z.shape:
            raise _fail(
                f"Your {name} returned shape {tuple(out.shape)} for logits of shape {tuple(z.shape)}: soft targets "
                "have one probability per logit, the same shape as the input (softmax keeps the shape)."
            )
        got.append(out)
        for key, (formula, _message) in _SOFT_VARIANTS.items():
            variants[key].append(formula(z, temperature))
    if not all(_close(g, e) for g, e in zip(got, expected, strict=True)):
        found = _match(got, variants)
        if found is not None:
            raise _fail(_SOFT_VARIANTS[found][1].format(T=trials[0][1]))
        sums = got[0].sum(dim=-1)
        if not _close(sums, torch.ones_like(sums)):
            raise _fail(
                f"Each row of your soft targets should sum to 1 (one distribution per example); your first row sums "
                f"to {_num(float(sums[0]))}. Divide the logits by T, then take softmax over the last axis."
            )
        worst = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True))
        raise _fail(
            f"Your soft targets are proper distributions but differ from kdlib's by up to {_num(worst)} "
            f"(at T={trials[0][1]:g}, first row: yours {_row(got[0][0])}, kdlib's {_row(expected[0][0])}). "
            "The recipe is softmax(logits / T) over the last axis."
        )
    one = _randn(7, 10, scale=3.0)
    where = "soft_targets(one example: logits of shape (10,), temperature=3)"
    try:
        single = fn(one.clone(), 3.0)
    except NotImplementedError:
        raise _fail(_not_written(name)) from None
    except Exception as err:
        raise _fail(
            f"Your {name} works on a batch but fails on one example (logits of shape (10,)): {type(err).__name__}: "
            f"{err}. Take the softmax over the last axis (dim=-1) so it works for any shape."
        ) from err
    if not _close(_tensor(single, name, where), _soft_targets(one, 3.0)):
        raise _fail(
            f"Your {name} is right on a batch but wrong on one example (logits of shape (10,)): take the softmax "
            "over the last axis (dim=-1), not a fixed axis."
        )
    huge = torch.tensor([[3000.0, 0.0, -3000.0], [1500.0, 1400.0, 0.0]], dtype=torch.float64)
    where = "soft_targets(very large logits such as 3000, temperature=2)"
    big = _tensor(_call(fn, name, (huge.clone(), 2.0), where), name, where)
    if not bool(torch.isfinite(big).all()):
        raise _fail(
            f"Your {name} gives nan/inf for large logits (3000 at T=2): exp overflows. Subtract each row's maximum "
            "before exp (softmax does not change), or simply use torch.softmax(logits / T, dim=-1)."
        )
    return _ok(
        f"{name} matches kdlib.losses.soft_targets on random batches (T = 4, 2, 0.5), on one example and on huge "
        "logits."
    )


def _row(values: torch.Tensor) -> str:
    shown = ", ".join(f"{float(v):.3f}" for v in values[:4])
    return f"[{shown}, ...]"


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
    s, t = _randn(seed, batch, classes, scale=2.0), _randn(seed + 100, batch, classes, scale=3.0)
    y = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed + 200))
    return s, t, y


def _loss_value(out: object, name: str, where: str, batch: int, per_sample: torch.Tensor) -> torch.Tensor:
    value = _tensor(out, name, where)
    if value.ndim == 0:
        return value
    hint = ""
    if value.shape == (batch,) and _close(value.mean(), per_sample.mean()):
        hint = " (its mean is right)"
    if value.shape == (batch,):
        raise _fail(
            f"Your loss returned shape {tuple(value.shape)}, expected a scalar{hint}: average over the batch "
            "(.mean() for the cross-entropy, reduction='batchmean' for the KL)."
        )
    raise _fail(
        f"Your loss returned shape {tuple(value.shape)}, expected a scalar: sum the KL over the classes, then "
        "average both terms over the batch."
    )


def check_kd_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], torch.Tensor]) -> bool:
    """Check ``fn(student_logits, teacher_logits, labels, temperature, alpha)`` against kdlib's ``kd_loss``."""
    name = "kd_loss"
    _need_callable(fn, name)
    variants = _kd_variants()
    got, expected, wrong = [], [], {k: [] for k in variants}
    for seed, batch, classes, temperature, alpha in _KD_TRIALS:
        s, t, y = _kd_batch(seed, batch, classes)
        where = f"kd_loss(batch of {batch}, {classes} classes, temperature={temperature:g}, alpha={alpha:g})"
        pieces = _kd_pieces(s, t, y, temperature)
        right = _kd_loss(s, t, y, temperature, alpha)
        per_sample = alpha * temperature**2 * pieces["kl"] + (1 - alpha) * pieces["ce"]
        out = _call(fn, name, (s.clone(), t.clone(), y.clone(), temperature, alpha), where)
        got.append(_loss_value(out, name, where, batch, per_sample))
        expected.append(right)
        for key, (formula, _message) in variants.items():
            wrong[key].append(formula(pieces, temperature, alpha, batch, classes))
    if not all(_close(g, e) for g, e in zip(got, expected, strict=True)):
        seed, batch, classes, temperature, alpha = _KD_TRIALS[0]
        found = _match(got, wrong)
        if found is not None:
            message = variants[found][1].format(T=temperature, T2=temperature**2, B=batch, C=classes)
            raise _fail(
                f"{message}\n  (at T={temperature:g}, alpha={alpha:g}: kdlib gives "
                f"{_num(float(expected[0]))}, yours {_num(float(got[0]))})"
            )
        raise _fail(_locate_kd_error(fn))
    _check_kd_gradients(fn)
    temps = ", ".join(f"{trial[3]:g}" for trial in _KD_TRIALS)
    alphas = ", ".join(f"{trial[4]:g}" for trial in _KD_TRIALS)
    return _ok(
        f"{name} matches kdlib.losses.kd_loss on {len(_KD_TRIALS)} random batches (T = {temps}; alpha = {alphas}), "
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
        _tensor(_call(fn, "kd_loss", (s.clone(), t.clone(), y.clone(), temperature, 0.0), where), "kd_loss", where)
    )
    where = f"kd_loss(..., temperature={temperature:g}, alpha=1)"
    at1 = float(
        _tensor(_call(fn, "kd_loss", (s.clone(), t.clone(), y.clone(), temperature, 1.0), where), "kd_loss", where)
    )
    problems = []
    if not _close(at0, hard):
        problems.append(
            f"with alpha=0 the loss must be plain cross-entropy CE(s, y) = {_num(hard)}, yours is {_num(at0)}"
        )
    if not _close(at1, soft):
        ratio = f" (ratio {_num(at1 / soft)})" if soft else ""
        problems.append(
            f"with alpha=1 the loss must be the distillation term T² · KL(p_t || p_s) = {_num(soft)} at "
            f"T={temperature:g}, yours is {_num(at1)}{ratio}"
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
        raise _fail(
            f"Your kd_loss fails when the logits require gradients ({type(err).__name__}: {err}); stay in torch "
            "(no .numpy(), .item() or torch.tensor(...) around the logits) so that loss.backward() works."
        ) from err
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise _fail(
            "Your loss does not carry gradients back to the student's logits: did you use .detach(), .item(), "
            "numpy or torch.tensor(...) on the student's side? Training needs loss.backward() to reach the student."
        )
    out.backward()
    if t.grad is not None and float(t.grad.abs().max()) > 0:
        raise _fail(
            "Gradients flow into the teacher's logits: the teacher is frozen, so detach its logits "
            "(teacher_logits.detach()) before the softmax."
        )
    if s.grad is None or float(s.grad.abs().max()) == 0:
        raise _fail("Your loss gives no gradient to the student's logits: build it from student_logits directly.")


# ------------------------------------------------------------------------------------------ exercise 2: temperature
def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return torch.special.entr(probs).sum(dim=-1)


_ENTROPY_VARIANTS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "no_minus": (
        lambda p: -_entropy(p),
        "Your entropies are negative: entropy is −Σ p · log p (mind the minus sign); it is never negative.",
    ),
    "log2": (
        lambda p: _entropy(p) / math.log(2),
        "You measured in bits (log base 2): your values are kdlib's × 1/ln 2 ≈ 1.443. Use the natural log "
        "(torch.log) so that entropies are in nats, like the losses.",
    ),
    "log10": (
        lambda p: _entropy(p) / math.log(10),
        "You used log base 10; use the natural log (torch.log) so that entropies are in nats, like the losses.",
    ),
    "mean_over_classes": (
        lambda p: _entropy(p) / p.shape[-1],
        "You averaged over the classes (.mean); entropy SUMS over them: −Σ_k p_k · log p_k (.sum(dim=-1)).",
    ),
    "missing_p": (
        lambda p: -torch.log(p).sum(dim=-1),
        "You summed −log p without weighting by p: entropy is −Σ p · log p.",
    ),
}


def check_entropy(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(probs) -> entropy per row, in nats`` against ``-Σ p log p`` (with 0 · log 0 = 0)."""
    name = "entropy"
    _need_callable(fn, name)
    trials = [
        _soft_targets(_randn(seed, batch, classes, scale=2.0), 1.0)
        for seed, batch, classes in ((0, 8, 10), (1, 5, 4), (2, 6, 10))
    ]
    got = []
    for probs in trials:
        where = f"entropy(probabilities of shape {tuple(probs.shape)})"
        out = _tensor(_call(fn, name, (probs.clone(),), where), name, where)
        batch = probs.shape[0]
        if out.shape != (batch,):
            if out.ndim == 0 and _close(out, _entropy(probs).mean()):
                raise _fail(
                    f"Your {name} returned one number for the whole batch (the mean); return one entropy per row, "
                    f"shape ({batch},): sum over the classes (dim=-1) only."
                )
            raise _fail(
                f"Your {name} returned shape {tuple(out.shape)} for probabilities of shape {tuple(probs.shape)}; "
                f"expected one entropy per row, shape ({batch},): sum over the classes (dim=-1), not the batch."
            )
        got.append(out)
    expected = [_entropy(p) for p in trials]
    if not all(_close(g, e) for g, e in zip(got, expected, strict=True)):
        wrong = {k: [formula(p) for p in trials] for k, (formula, _m) in _ENTROPY_VARIANTS.items()}
        found = _match(got, wrong)
        if found is not None:
            raise _fail(_ENTROPY_VARIANTS[found][1])
        raise _fail(
            f"Your entropies differ from −Σ p · log p: for the first row yours is {_num(float(got[0][0]))}, "
            f"the right value {_num(float(expected[0][0]))} nats."
        )
    sharp = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    where = "entropy([[1, 0, 0, 0], [0.5, 0.5, 0, 0]])"
    out = _tensor(_call(fn, name, (sharp.clone(),), where), name, where)
    if not bool(torch.isfinite(out).all()):
        raise _fail(
            f"Your {name} gives nan for a probability of exactly 0 (a one-hot row): 0 · log 0 counts as 0. Use "
            "torch.special.entr(p).sum(dim=-1), or torch.xlogy(p, p), or clamp p before the log."
        )
    if not _close(out, _entropy(sharp)):
        raise _fail(
            f"Your {name} is wrong on rows with zeros: a one-hot row has entropy 0 and [0.5, 0.5, 0, 0] has "
            f"ln 2 ≈ 0.693; yours gives {_row(out)}."
        )
    return _ok(f"{name} matches −Σ p · log p (nats) on random rows, and one-hot rows give 0.")


PREDICTION_CHOICES: dict[str, tuple[str, ...]] = {
    "entropy": ("rises", "falls", "stays"),
    "limit": ("uniform", "one-hot", "unchanged"),
    "top_class": ("same", "changes"),
}
"""What ``check_temperature_prediction`` asks: as T grows, the entropy of the soft targets (rises/falls/stays);
their limit as T → ∞; and whether the most likely class stays the same."""


def _check_answers(answers: object, choices: Mapping[str, Sequence[Any]] | Sequence[str], what: str) -> dict:
    keys = list(choices)
    if not isinstance(answers, Mapping):
        raise _fail(f"{what} should be a dict with the keys {keys}; got {type(answers).__name__}.")
    missing = [k for k in keys if k not in answers]
    if missing:
        raise _fail(f"{what} lacks the key(s) {missing}: answer every question ({keys}).")
    blank = [k for k in keys if answers[k] is Ellipsis or answers[k] is None]
    if blank:
        raise _fail(
            f"{what} is not written yet: replace each `...` with your answer (still blank: {blank}), run that cell, "
            "then run this check again."
        )
    if isinstance(choices, Mapping):
        for key, allowed in choices.items():
            if answers[key] not in allowed:
                raise _fail(f"{what}[{key!r}] = {answers[key]!r} is not one of {', '.join(map(repr, allowed))}.")
    return dict(answers)


def check_temperature_prediction(prediction: Mapping[str, str], logits: Sequence[float] | None = None) -> bool:
    """Check a prediction of what a higher T does to soft targets, against kdlib's measurement on ``logits``.

    ``prediction`` has the keys of :data:`PREDICTION_CHOICES`; ``logits`` default to the cat example of
    :mod:`kdlib.widgets`.
    """
    from kdlib.data import CIFAR10_CLASSES
    from kdlib.widgets import EXAMPLE_TEACHER_LOGITS

    answers = _check_answers(prediction, PREDICTION_CHOICES, "prediction")
    z = torch.as_tensor(EXAMPLE_TEACHER_LOGITS if logits is None else logits, dtype=torch.float64)
    classes = z.shape[-1]
    temps = (1.0, 4.0, 16.0, 1000.0)
    probs = {t: _soft_targets(z, t) for t in temps}
    entropies = {t: float(_entropy(p)) for t, p in probs.items()}
    tops = {t: int(p.argmax()) for t, p in probs.items()}
    names = CIFAR10_CLASSES if classes == len(CIFAR10_CLASSES) else [str(c) for c in range(classes)]
    problems = []
    if answers["entropy"] != "rises":
        problems.append(
            f"You predicted that the entropy {answers['entropy']} as T grows; it rises: "
            + ", ".join(f"{entropies[t]:.2f} nats at T={t:g}" for t in temps[:3])
            + f" (the most it can be is ln {classes} = {math.log(classes):.2f}). Dividing the logits by a larger T "
            "shrinks the gaps between them, so the distribution flattens (a T below 1 sharpens it)."
        )
    if answers["limit"] != "uniform":
        top = float(probs[1000.0].max())
        extra = " One-hot is the T → 0 limit." if answers["limit"] == "one-hot" else ""
        problems.append(
            f"You predicted the T → ∞ limit is {answers['limit']}; it is uniform: at T=1000 even the top class gets "
            f"only {top:.3f} ≈ 1/{classes} = {1 / classes:.3f}, because logits / T → 0 for every class.{extra}"
        )
    if answers["top_class"] != "same":
        problems.append(
            f"You predicted the most likely class changes; dividing by T > 0 keeps the order of the logits, so it "
            f"stays {names[tops[1.0]]!r} at every T (the teacher only gets less sure)."
        )
    if problems:
        raise _fail("\n".join(f"• {p}" for p in problems))
    return _ok(
        f"Right: as T grows the entropy rises ({entropies[1.0]:.2f} → {entropies[16.0]:.2f} nats from T=1 to 16), "
        f"soft targets tend to uniform (ln {classes} = {math.log(classes):.2f} nats), and the top class stays "
        f"{names[tops[1.0]]!r}."
    )


# ------------------------------------------------------------------------------------------- exercise 3: partitions
def _toy_labels() -> np.ndarray:
    """600 labels, 60 of each of 10 classes, in a seeded random order."""
    return np.random.default_rng(123).permutation(np.repeat(np.arange(10), 60)).astype(np.int64)


def _check_split(parts: object, labels: np.ndarray, num_parties: int, context: str) -> list[np.ndarray]:
    """Raise a plain-words error unless ``parts`` is one index array per party covering every sample once."""
    n, num_classes = labels.size, int(labels.max()) + 1
    if isinstance(parts, np.ndarray) or not isinstance(parts, list | tuple):
        raise _fail(
            f"Your dirichlet_split returned a {type(parts).__name__} {context}; return a list with one index array "
            "per party."
        )
    if len(parts) != num_parties:
        raise _fail(
            f"Your dirichlet_split returned {len(parts)} parts {context}; expected one per party ({num_parties})."
        )
    arrays = []
    for party, part in enumerate(parts):
        part = np.asarray(part)
        if part.dtype == bool:
            raise _fail(f"Party {party} is a boolean mask {context}; return sample indices (np.flatnonzero(mask)).")
        if part.ndim != 1 or (part.size and not np.issubdtype(part.dtype, np.integer)):
            raise _fail(
                f"Party {party} is an array of {part.dtype} with shape {part.shape} {context}; each party must be a "
                "1-D array of integer sample indices (np.int64)."
            )
        if part.size and (part.min() < 0 or part.max() >= n):
            bad = int(part.max() if part.max() >= n else part.min())
            raise _fail(f"Party {party} holds index {bad} {context}, outside [0, {n}): indices point into labels.")
        arrays.append(part.astype(np.int64))
    flat = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    if flat.size and flat.max() < num_classes and np.unique(flat).size < flat.size:
        raise _fail(
            f"Your parts hold only the values 0..{num_classes - 1} {context}: that looks like labels. Return sample "
            "indices (positions in labels), e.g. np.flatnonzero(labels == c) for the samples of class c."
        )
    counts = np.bincount(flat, minlength=n)
    for party, part in enumerate(arrays):
        if np.unique(part).size < part.size:
            values, times = np.unique(part, return_counts=True)
            raise _fail(
                f"Party {party} holds sample {int(values[times > 1][0])} more than once {context}: draw without "
                "replacement (shuffle each class's indices, then cut them into consecutive pieces)."
            )
    twice = np.flatnonzero(counts > 1)
    if twice.size:
        holders = [p for p, part in enumerate(arrays) if twice[0] in part]
        raise _fail(
            f"{twice.size} samples are in two parties or more {context}, e.g. sample {int(twice[0])} is in parties "
            f"{holders}: each sample goes to exactly one party."
        )
    never = np.flatnonzero(counts == 0)
    if never.size:
        raise _fail(
            f"{never.size} of {n} samples were never assigned {context} (e.g. sample {int(never[0])}, class "
            f"{int(labels[never[0]])}). If you rounded each party's share down, the leftovers are lost: cut each "
            "class at its cumulative shares (np.cumsum(p)[:-1] * n, as np.split cuts) so every sample lands somewhere."
        )
    for party, part in enumerate(arrays):
        if part.size == 0:
            raise _fail(
                f"Party {party} is empty {context}: redraw the shares until every party has at least one sample "
                "(kdlib.partition redraws up to 100 times)."
            )
    return arrays


def _mean_heterogeneity(split: Callable[[int], list[np.ndarray]], labels: np.ndarray, seeds: range) -> float:
    return float(np.mean([partition_stats(labels, split(seed)).heterogeneity for seed in seeds]))


def _class_share_spread(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """How much a party's share of a class varies from class to class (0: every class split alike)."""
    counts = partition_stats(labels, parts).counts
    shares = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    return float(shares.std(axis=1).mean())


def check_dirichlet_split(fn: Callable[[np.ndarray, int, float, int], list[np.ndarray]]) -> bool:
    """Check ``fn(labels, num_parties, alpha, seed) -> list of index arrays``, a Dirichlet label-skew split.

    Every sample must be in exactly one party, no party empty (even 8 parties at alpha=0.02), the same seed must
    give the same split, and label skew (kdlib's heterogeneity) must grow as alpha shrinks, like kdlib.partition's.
    """
    name = "dirichlet_split"
    _need_callable(fn, name)
    labels = _toy_labels()

    def run(num_parties: int, alpha: float, seed: int) -> list[np.ndarray]:
        where = f"dirichlet_split(labels, num_parties={num_parties}, alpha={alpha:g}, seed={seed})"
        out = _call(fn, name, (labels.copy(), num_parties, alpha, seed), where)
        return _check_split(out, labels, num_parties, f"(num_parties={num_parties}, alpha={alpha:g}, seed={seed})")

    run(4, 0.5, 0)
    first, again = run(4, 0.5, 3), run(4, 0.5, 3)
    if any(not np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(first, again, strict=True)):
        raise _fail(
            "Two calls with seed=3 gave different splits: draw every random number from "
            "rng = np.random.default_rng(seed) (not np.random.* or an unseeded generator), so a split can be rerun."
        )
    other = run(4, 0.5, 4)
    if all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(first, other, strict=True)):
        raise _fail("seed=3 and seed=4 gave the same split: build your generator from the seed argument.")
    alphas, seeds = (100.0, 1.0, 0.1), range(5)
    yours = {a: _mean_heterogeneity(lambda seed, a=a: run(2, a, seed), labels, seeds) for a in alphas}
    reference = {
        a: _mean_heterogeneity(
            lambda seed, a=a: partition_indices(labels, PartitionSpec("dirichlet", 2, alpha=a, min_size=1), seed),
            labels,
            seeds,
        )
        for a in alphas
    }
    shown = (
        "heterogeneity at alpha = 100, 1, 0.1: yours "
        + ", ".join(f"{yours[a]:.2f}" for a in alphas)
        + "; kdlib's "
        + ", ".join(f"{reference[a]:.2f}" for a in alphas)
    )
    if yours[100.0] > yours[0.1] + 0.2:
        raise _fail(
            "Skew falls as alpha shrinks, the wrong way round (" + shown + "): small alpha must mean strong label "
            "skew. Pass alpha itself to rng.dirichlet([alpha] * num_parties), not 1 / alpha."
        )
    skewed = [run(2, 0.1, seed) for seed in seeds]
    if np.mean([_class_share_spread(labels, parts) for parts in skewed]) < 0.1:
        sizes = [part.size for parts in skewed for part in parts]
        if np.std(sizes) > 0.1 * np.mean(sizes):
            raise _fail(
                "At alpha=0.1 party sizes vary, but every class is shared among the parties in the same proportions "
                "(" + shown + "). Draw a fresh share vector rng.dirichlet([alpha] * num_parties) for EACH class, not "
                "one for the whole data set."
            )
        raise _fail(
            "Your split has no label skew at alpha=0.1 (" + shown + "): it ignores the labels, like an IID shuffle. "
            "Split each class separately, by shares drawn from Dirichlet(alpha, ..., alpha)."
        )
    if not (yours[0.1] > yours[1.0] > yours[100.0]) or yours[100.0] > 0.2 or yours[0.1] < 0.5:
        raise _fail(
            "Label skew should grow steadily as alpha shrinks, near IID at alpha=100 and strong at 0.1 ("
            + shown
            + "). Draw each class's shares from Dirichlet(alpha, ..., alpha) over the parties."
        )
    for seed in range(6):  # 8 parties, alpha=0.02: a single draw often leaves a party empty
        run(8, 0.02, seed)
    return _ok(
        f"{name}: every sample in exactly one party, no party empty (even 8 parties at alpha=0.02), same seed → same "
        f"split, and skew grows as alpha shrinks ({shown})."
    )


def _key_alpha(key: str) -> float | None:
    try:
        return float(str(key).split("=")[-1])
    except ValueError:
        return None


def check_heatmap_reading(answers: Mapping[str, Any], counts: Mapping[str, np.ndarray], focus_class: int = 3) -> bool:
    """Check a reading of ``plot_partition_heatmaps(counts, ...)`` (party x class count matrices per split).

    ``answers["most_even"]``: the split (a key of ``counts``, or its alpha) closest to IID;
    ``answers["holder"]``: the party holding the most images of ``focus_class`` in the last (most skewed) split.
    """
    answers = _check_answers(answers, ("most_even", "holder"), "answers")
    labels = list(counts)
    het = {key: _count_heterogeneity(np.asarray(m)) for key, m in counts.items()}
    picked = answers["most_even"]
    if not isinstance(picked, str | int | float) or picked not in counts:
        by_alpha = [k for k in labels if isinstance(picked, int | float) and _key_alpha(k) == float(picked)]
        if not by_alpha:
            raise _fail(f"answers['most_even'] = {picked!r} is not one of the heatmaps: {labels}.")
        picked = by_alpha[0]
    problems = []
    even = min(het, key=het.get)
    if het[picked] > het[even] + 1e-9:
        problems.append(
            f"'{picked}' is not the most even split: its heterogeneity is {het[picked]:.2f}, '{even}' has "
            f"{het[even]:.2f}. An even split looks alike in every row (each party holds every class in the same "
            "proportion); a skewed one has cells that are bright in one row and dark in the other."
        )
    skewed = labels[-1]
    matrix = np.asarray(counts[skewed])
    holder = answers["holder"]
    column = matrix[:, focus_class]
    if not isinstance(holder, int | np.integer) or isinstance(holder, bool):
        problems.append(f"answers['holder'] should be a party number (0 to {len(column) - 1}); got {holder!r}.")
    elif not 0 <= holder < len(column):
        problems.append(
            f"There are only {len(column)} parties (rows 0 to {len(column) - 1}); you answered {holder}. Rows are "
            f"parties and columns are classes: find column {focus_class}, then the brightest cell in it."
        )
    elif column[holder] < column.max():
        best = int(column.argmax())
        problems.append(
            f"In '{skewed}', column {focus_class}: party {holder} holds {int(column[holder])} images, party {best} "
            f"holds {int(column[best])}. Read down column {focus_class} and pick the brightest cell (the printed "
            "count when it is shown)."
        )
    if problems:
        raise _fail("\n".join(f"• {p}" for p in problems))
    return _ok(
        f"Right: '{even}' is the most even split (heterogeneity {het[even]:.2f}), and in '{skewed}' party "
        f"{int(column.argmax())} holds most of class {focus_class} ({int(column.max())} of {int(column.sum())} images)."
    )


def _count_heterogeneity(matrix: np.ndarray) -> float:
    """kdlib's heterogeneity of a party x class count matrix (rebuilt as labels and index arrays)."""
    parts, start = [[] for _ in range(matrix.shape[0])], 0
    for cls in range(matrix.shape[1]):
        for party in range(matrix.shape[0]):
            parts[party].append(np.arange(start, start + int(matrix[party, cls])))
            start += int(matrix[party, cls])
    labels = np.repeat(np.arange(matrix.shape[1]), matrix.sum(axis=0))
    return partition_stats(labels, [np.concatenate(p).astype(np.int64) for p in parts]).heterogeneity


# ----------------------------------------------------------------------------------------------- exercise 4: tuning
def _toy_grid(seed: int) -> list[dict]:
    """A random (T, alpha) grid shaped like ``kdlib.distill.grid_search``'s, whose test-best cell is not val-best."""
    rng = np.random.default_rng(seed)
    cells = [(t, a) for t in (1.0, 2.0, 4.0, 8.0) for a in (0.1, 0.5, 0.9)]
    val = rng.permutation(len(cells)) / len(cells) * 0.5 + 0.3
    test = rng.permutation(len(cells)) / len(cells) * 0.5 + 0.3
    if test.argmax() == val.argmax():
        test = np.roll(test, 1)
    return [
        {"temperature": t, "alpha": a, "val_acc": float(v), "val_gain": float(v) - 0.45, "test_acc": float(s)}
        for (t, a), v, s in zip(cells, val, test, strict=True)
    ]


def _pair(value: object, name: str, grid_cells: Sequence[tuple[float, float]]) -> tuple[float, float]:
    if isinstance(value, Mapping):
        raise _fail(
            f"Your {name} returned a whole grid row (a dict with keys {list(value)}); return the pair "
            "(row['temperature'], row['alpha'])."
        )
    try:
        t, a = value  # type: ignore[misc]
        pair = (float(t), float(a))
    except (TypeError, ValueError):
        raise _fail(f"Your {name} returned {value!r}; return a pair (T, alpha), e.g. (4.0, 0.5).") from None
    if pair not in grid_cells:
        if (pair[1], pair[0]) in grid_cells:
            return pair
        temps = sorted({c[0] for c in grid_cells})
        alphas = sorted({c[1] for c in grid_cells})
        raise _fail(
            f"(T={pair[0]:g}, alpha={pair[1]:g}) is not a cell of the grid: T is one of {temps} and alpha "
            f"one of {alphas}."
        )
    return pair


def check_pick_best(fn: Callable[[list[dict]], tuple[float, float]]) -> bool:
    """Check ``fn(grid) -> (T, alpha)``: the cell with the best validation accuracy (what ``run_tuned`` picks)."""
    name = "pick_best"
    _need_callable(fn, name)
    for seed in range(3):
        grid = _toy_grid(seed)
        cells = [(r["temperature"], r["alpha"]) for r in grid]
        out = _call(fn, name, ([dict(r) for r in grid],), f"pick_best(a random grid of {len(grid)} cells)")
        pair = _pair(out, name, cells)
        by_val = max(grid, key=lambda r: r["val_acc"])
        best = (by_val["temperature"], by_val["alpha"])
        if pair == best:
            continue
        row = {(r["temperature"], r["alpha"]): r for r in grid}.get(pair)
        if row is None:  # _pair let it through because (alpha, T) is a cell
            raise _fail(f"Your {name} returned (alpha, T) = {pair}; return (T, alpha) in that order.")
        by_test = max(grid, key=lambda r: r["test_acc"])
        if pair == (by_test["temperature"], by_test["alpha"]):
            raise _fail(
                f"You picked the cell with the best TEST accuracy (T={pair[0]:g}, alpha={pair[1]:g}). The test set "
                "must never choose hyper-parameters, or the reported accuracy is no longer an honest estimate: choose "
                "by row['val_acc'], the validation split carved from the transfer data."
            )
        worst = min(grid, key=lambda r: r["val_acc"])
        if pair == (worst["temperature"], worst["alpha"]):
            raise _fail(
                f"You picked the WORST cell (lowest val_acc, {worst['val_acc']:.3f}): use max, not min "
                "(max(grid, key=lambda row: row['val_acc']))."
            )
        raise _fail(
            f"Your pick (T={pair[0]:g}, alpha={pair[1]:g}) has val_acc {row['val_acc']:.3f}; the best cell "
            f"(T={best[0]:g}, alpha={best[1]:g}) has {by_val['val_acc']:.3f}. Choose the row with the largest val_acc."
        )
    return _ok(f"{name} picks the best validation cell of 3 random grids, never looking at the test accuracy.")


TUNING_EXPLANATIONS: dict[str, str] = {
    "A": "Small alpha wins: the teacher never saw the student's classes, so on the student's images its soft "
    "targets point at the wrong classes; the less weight on them, the better.",
    "B": "Large T wins: higher temperatures always transfer more dark knowledge.",
    "C": "Large alpha wins: the teacher is the better model, so the most weight on its soft targets is best.",
    "D": "The grid is flat: (T, alpha) makes no real difference here.",
}
"""The choices of ``check_tuning_explanation`` (print them in the notebook; the letter is the answer)."""


def _grid_verdict(grid: Sequence[Mapping[str, float]]) -> tuple[str, dict[float, float], dict[float, float]]:
    """Which explanation the grid supports, with mean validation accuracy per alpha and per T."""
    alphas = sorted({float(r["alpha"]) for r in grid})
    temps = sorted({float(r["temperature"]) for r in grid})
    by_alpha = {a: float(np.mean([r["val_acc"] for r in grid if r["alpha"] == a])) for a in alphas}
    by_temp = {t: float(np.mean([r["val_acc"] for r in grid if r["temperature"] == t])) for t in temps}
    spread = max(r["val_acc"] for r in grid) - min(r["val_acc"] for r in grid)
    if spread < 0.02:
        return "D", by_alpha, by_temp
    return ("A" if by_alpha[alphas[0]] > by_alpha[alphas[-1]] else "C"), by_alpha, by_temp


def check_tuning_explanation(answer: str, grid: Sequence[Mapping[str, float]]) -> bool:
    """Check the letter of :data:`TUNING_EXPLANATIONS` the learner chose against what ``grid`` shows."""
    if answer is Ellipsis or answer is None:
        raise _fail('explanation is not written yet: replace `...` with the letter of your answer, e.g. "A".')
    letter = str(answer).strip().upper()
    if letter not in TUNING_EXPLANATIONS:
        raise _fail(f"explanation = {answer!r} is not one of the letters {', '.join(TUNING_EXPLANATIONS)}.")
    right, by_alpha, by_temp = _grid_verdict(grid)
    alphas, temps = list(by_alpha), list(by_temp)
    per_alpha = ", ".join(f"alpha={a:g}: {100 * v:.1f}%" for a, v in by_alpha.items())
    per_temp = ", ".join(f"T={t:g}: {100 * v:.1f}%" for t, v in by_temp.items())
    evidence = f"Mean validation accuracy per alpha: {per_alpha}; per T: {per_temp}."
    if letter == right:
        return _ok(f"{letter}: {TUNING_EXPLANATIONS[letter]} {evidence}")
    if right == "D":
        reason = (
            "The grid is flat: every cell scores within 2 points of the others, so no choice of (T, alpha) stands "
            "out here."
        )
    elif letter == "B" and max(by_temp, key=by_temp.get) == temps[-1]:
        reason = (
            f"The largest T does score best on average here (T={temps[-1]:g}: {100 * by_temp[temps[-1]]:.1f}%), but "
            "'always' is too strong, and the bigger differences run along alpha: compare the columns. As T grows "
            "without bound the soft targets become uniform and carry nothing."
        )
    elif letter == "B":
        reason = (
            f"Look along the T axis: the largest T is not where the grid peaks (T={temps[-1]:g} averages "
            f"{100 * by_temp[temps[-1]]:.1f}%, T={temps[0]:g} {100 * by_temp[temps[0]]:.1f}%). Softer targets carry "
            "more of the teacher's view, which only helps when that view is right for these images."
        )
    elif letter == "D":
        reason = "The grid is not flat: its cells differ a lot. Compare the columns (alpha) of the heatmap."
    elif letter == "C":
        reason = (
            f"More weight on the teacher scores worse here (alpha={alphas[-1]:g} averages "
            f"{100 * by_alpha[alphas[-1]]:.1f}% vs {100 * by_alpha[alphas[0]]:.1f}% at alpha={alphas[0]:g}). Which "
            "classes did the teacher pre-train on, and which images does the student distil on?"
        )
    else:
        reason = (
            f"Less weight on the teacher scores worse here (alpha={alphas[0]:g} averages "
            f"{100 * by_alpha[alphas[0]]:.1f}% vs {100 * by_alpha[alphas[-1]]:.1f}% at alpha={alphas[-1]:g}): the "
            "teacher's soft targets help on these images."
        )
    raise _fail(f"Not what the grid shows. {reason} {evidence}")


def compare_guess(guess: tuple[float, float], grid: Sequence[Mapping[str, float]]) -> None:
    """Print how a (T, alpha) guessed before the run fares on the grid (a guess may be wrong: this never fails)."""
    ranked = sorted(grid, key=lambda r: -r["val_acc"])
    best = ranked[0]
    try:
        t, a = (float(v) for v in guess)
    except (TypeError, ValueError):
        print(f"No guess recorded ({guess!r}); the best cell is T={best['temperature']:g}, alpha={best['alpha']:g}.")
        return
    cell = next((r for r in ranked if r["temperature"] == t and r["alpha"] == a), None)
    if cell is None:
        print(
            f"Your guess (T={t:g}, alpha={a:g}) is not a grid cell; the best cell is T={best['temperature']:g}, "
            f"alpha={best['alpha']:g} ({100 * best['val_acc']:.1f}% validation accuracy)."
        )
        return
    rank = ranked.index(cell) + 1
    print(
        f"Your guess (T={t:g}, alpha={a:g}): {100 * cell['val_acc']:.1f}% validation accuracy, rank {rank} of "
        f"{len(grid)}; the best cell (T={best['temperature']:g}, alpha={best['alpha']:g}) scores "
        f"{100 * best['val_acc']:.1f}%."
    )


# ---------------------------------------------------------------------------------------------------- solutions
def _solution_soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of logits / T over the classes (the last axis)."""
    return torch.softmax(logits / temperature, dim=-1)


def _solution_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """alpha · T² · KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) · CE(s, y), averaged over the batch."""
    teacher_probs = torch.softmax(teacher_logits.detach() / temperature, dim=-1)
    student_log_probs = torch.log_softmax(student_logits / temperature, dim=-1)
    soft = F.kl_div(student_log_probs, teacher_probs, reduction="batchmean") * temperature**2
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1 - alpha) * hard


def _solution_entropy(probs: torch.Tensor) -> torch.Tensor:
    """-Σ p · log p per row, in nats; xlogy makes 0 · log 0 = 0."""
    return -torch.xlogy(probs, probs).sum(dim=-1)


def _solution_dirichlet_split(labels: np.ndarray, num_parties: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Per class, cut the shuffled samples by shares drawn from Dirichlet(alpha); redraw while a party is empty."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    for _attempt in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_parties)]
        for cls in np.unique(labels):
            samples = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet([alpha] * num_parties)
            cuts = (np.cumsum(shares)[:-1] * len(samples)).astype(int)
            for party, piece in enumerate(np.split(samples, cuts)):
                parts[party].append(piece)
        split = [np.sort(np.concatenate(pieces)) for pieces in parts]
        if min(len(p) for p in split) > 0:
            return split
    raise ValueError(f"no split with every party non-empty after 1000 draws at alpha={alpha}")


def _solution_heatmap_answers(counts: Mapping[str, np.ndarray], focus_class: int = 3) -> dict[str, Any]:
    """What a careful reader sees: the heatmap whose rows look most alike, and the brightest cell of the column."""
    most_even = min(counts, key=lambda key: _count_heterogeneity(np.asarray(counts[key])))
    return {"most_even": most_even, "holder": int(np.asarray(counts[list(counts)[-1]])[:, focus_class].argmax())}


def _solution_pick_best(grid: list[dict]) -> tuple[float, float]:
    """The (T, alpha) of the row with the best validation accuracy; the test accuracy is never looked at."""
    best = max(grid, key=lambda row: row["val_acc"])
    return best["temperature"], best["alpha"]


def _solution_tuning_explanation(grid: Sequence[Mapping[str, float]]) -> str:
    """The letter the grid supports (compare the mean validation accuracy of the smallest and largest alpha)."""
    return _grid_verdict(grid)[0]


_SOLUTIONS: dict[str, Any] = {
    "soft_targets": _solution_soft_targets,
    "kd_loss": _solution_kd_loss,
    "entropy": _solution_entropy,
    "temperature_prediction": {"entropy": "rises", "limit": "uniform", "top_class": "same"},
    "dirichlet_split": _solution_dirichlet_split,
    "heatmap_answers": _solution_heatmap_answers,
    "pick_best": _solution_pick_best,
    "tuning_explanation": _solution_tuning_explanation,
}


def solution(name: str) -> Any:
    """The model answer of an exercise: a function, a dict of answers, or, where the answer depends on the
    notebook's data (``heatmap_answers``, ``tuning_explanation``), a function of that data."""
    if name not in _SOLUTIONS:
        raise KeyError(f"no solution named {name!r}; known: {', '.join(_SOLUTIONS)}")
    return _SOLUTIONS[name]


def show_solution(name: str) -> None:
    """Print the model answer's source (for after class)."""
    answer = solution(name)
    print(inspect.getsource(answer) if callable(answer) else repr(answer))


# ------------------------------------------------------------------------------------------------------ grading
def grade_report(folder: str | Path) -> pandas.DataFrame:
    """One row per executed notebook under ``folder`` (papermill outputs): checks passed and the first failure."""
    import nbformat
    import pandas as pd

    rows = []
    for path in sorted(Path(folder).rglob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        passed, error, ran = 0, None, False
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                ran = True
                if output.get("output_type") == "stream":
                    passed += sum(line.startswith("✓") for line in output.get("text", "").splitlines())
                elif output.get("output_type") == "error" and error is None:
                    error = output
        status = "failed" if error is not None else ("passed" if ran else "not run")
        rows.append(
            {
                "notebook": str(path.relative_to(folder)),
                "checks_passed": passed,
                "status": status,
                "error": error.get("ename", "") if error is not None else "",
                "message": str(error.get("evalue", "")).splitlines()[0] if error is not None else "",
            }
        )
    return pd.DataFrame(rows, columns=["notebook", "checks_passed", "status", "error", "message"])


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlib.teaching report FOLDER``: print the grade report; exit 1 when a notebook failed."""
    parser = argparse.ArgumentParser(prog="python -m kdlib.teaching", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="summarise executed exercise notebooks (papermill outputs)")
    report.add_argument("folder")
    args = parser.parse_args(argv)
    table = grade_report(args.folder)
    if table.empty:
        print(f"no notebooks under {args.folder}")
        return 1
    width = max(len(name) for name in table["notebook"])
    for row in table.itertuples():
        line = f"{row.notebook:<{width}}  {row.status:<7} {row.checks_passed} ✓"
        if row.error:
            message = row.message if len(row.message) <= 110 else row.message[:109] + "…"
            line += f"  {row.error}: {message}"
        print(line)
    failed = int((table["status"] != "passed").sum())
    print(f"{len(table) - failed} of {len(table)} notebooks passed every check")
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
