"""Exercise 2, temperature: checks of the learner's entropy and of a prediction of what T does, with the model
answers."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from kdlib.core.losses import soft_targets as _soft_targets
from kdlib.teaching.common import (
    all_close,
    as_tensor_output,
    call_learner,
    check_answers,
    fail,
    fmt_number,
    matching_variant,
    need_callable,
    ok,
    row_text,
    seeded_randn,
)


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
    need_callable(fn, name)
    trials = [
        _soft_targets(seeded_randn(seed, batch, classes, scale=2.0), 1.0)
        for seed, batch, classes in ((0, 8, 10), (1, 5, 4), (2, 6, 10))
    ]
    got = []
    for probs in trials:
        where = f"entropy(probabilities of shape {tuple(probs.shape)})"
        out = as_tensor_output(call_learner(fn, name, (probs.clone(),), where), name, where)
        batch = probs.shape[0]
        if out.shape != (batch,):
            if out.ndim == 0 and all_close(out, _entropy(probs).mean()):
                raise fail(
                    f"Your {name} returned one number for the whole batch (the mean); return one entropy per row, "
                    f"shape ({batch},): sum over the classes (dim=-1) only."
                )
            raise fail(
                f"Your {name} returned shape {tuple(out.shape)} for probabilities of shape {tuple(probs.shape)}; "
                f"expected one entropy per row, shape ({batch},): sum over the classes (dim=-1), not the batch."
            )
        got.append(out)
    expected = [_entropy(p) for p in trials]
    if not all(all_close(g, e) for g, e in zip(got, expected, strict=True)):
        wrong = {k: [formula(p) for p in trials] for k, (formula, _m) in _ENTROPY_VARIANTS.items()}
        found = matching_variant(got, wrong)
        if found is not None:
            raise fail(_ENTROPY_VARIANTS[found][1])
        raise fail(
            f"Your entropies differ from −Σ p · log p: for the first row yours is {fmt_number(float(got[0][0]))}, "
            f"the right value {fmt_number(float(expected[0][0]))} nats."
        )
    sharp = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    where = "entropy([[1, 0, 0, 0], [0.5, 0.5, 0, 0]])"
    out = as_tensor_output(call_learner(fn, name, (sharp.clone(),), where), name, where)
    if not bool(torch.isfinite(out).all()):
        raise fail(
            f"Your {name} gives nan for a probability of exactly 0 (a one-hot row): 0 · log 0 counts as 0. Use "
            "torch.special.entr(p).sum(dim=-1), or torch.xlogy(p, p), or clamp p before the log."
        )
    if not all_close(out, _entropy(sharp)):
        raise fail(
            f"Your {name} is wrong on rows with zeros: a one-hot row has entropy 0 and [0.5, 0.5, 0, 0] has "
            f"ln 2 ≈ 0.693; yours gives {row_text(out)}."
        )
    return ok(f"{name} matches −Σ p · log p (nats) on random rows, and one-hot rows give 0.")


PREDICTION_CHOICES: dict[str, tuple[str, ...]] = {
    "entropy": ("rises", "falls", "stays"),
    "limit": ("uniform", "one-hot", "unchanged"),
    "top_class": ("same", "changes"),
}
"""What ``check_temperature_prediction`` asks: as T grows, the entropy of the soft targets (rises/falls/stays);
their limit as T → ∞; and whether the most likely class stays the same."""


def check_temperature_prediction(prediction: Mapping[str, str], logits: Sequence[float] | None = None) -> bool:
    """Check a prediction of what a higher T does to soft targets, against kdlib's measurement on ``logits``.

    ``prediction`` has the keys of :data:`PREDICTION_CHOICES`; ``logits`` default to the cat example of
    :mod:`kdlib.notebook.widgets`.
    """
    from kdlib.data.datasets import CIFAR10_CLASSES
    from kdlib.notebook.widgets import EXAMPLE_TEACHER_LOGITS

    answers = check_answers(prediction, PREDICTION_CHOICES, "prediction")
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
        raise fail("\n".join(f"• {p}" for p in problems))
    return ok(
        f"Right: as T grows the entropy rises ({entropies[1.0]:.2f} → {entropies[16.0]:.2f} nats from T=1 to 16), "
        f"soft targets tend to uniform (ln {classes} = {math.log(classes):.2f} nats), and the top class stays "
        f"{names[tops[1.0]]!r}."
    )


# ---------------------------------------------------------------------------------------------- model answers
def solution_entropy(probs: torch.Tensor) -> torch.Tensor:
    """-Σ p · log p per row, in nats; xlogy makes 0 · log 0 = 0."""
    return -torch.xlogy(probs, probs).sum(dim=-1)


SOLUTION_TEMPERATURE_PREDICTION = {"entropy": "rises", "limit": "uniform", "top_class": "same"}
"""The model answer of ``check_temperature_prediction``."""
