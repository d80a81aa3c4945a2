"""What every exercise check shares: the check error, message helpers and argument checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

RTOL, ATOL = 1e-4, 1e-6
"""How close a learner's numbers must be to kdlib's (float32 arithmetic in the learner's code passes)."""


class TeachingCheckError(AssertionError):
    """The learner's answer is wrong; the message says what is wrong and how to fix it."""


def fail(message: str) -> TeachingCheckError:
    return TeachingCheckError(message)


def ok(message: str) -> bool:
    print(f"✓ {message}")
    return True


def fmt_number(value: float) -> str:
    return f"{value:.4g}"


def not_written(name: str) -> str:
    return (
        f"{name} is not written yet: replace the `raise NotImplementedError(...)` line in its cell with your code, "
        "run that cell, then run this check again."
    )


def need_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise fail(f"Expected your function {name}, got {type(fn).__name__} {fn!r}. Pass the function itself.")


def call_learner(fn: Callable[..., Any], name: str, args: tuple, where: str) -> Any:
    """``fn(*args)``, turning the learner's exceptions into plain-words messages."""
    try:
        out = fn(*args)
    except NotImplementedError:
        raise fail(not_written(name)) from None
    except TeachingCheckError:
        raise
    except Exception as err:  # the learner's bug: name it and where it happened
        raise fail(f"Your {name} raised {type(err).__name__}: {err}\n  (while computing {where})") from err
    if out is None:
        raise fail(f"Your {name} returned None (for {where}): did you forget the `return` line?")
    return out


def as_tensor_output(out: object, name: str, where: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise fail(
            f"Your {name} returned a value of type {type(out).__name__} (for {where}); return a torch tensor "
            "(stay in torch: no .item(), .tolist() or numpy)."
        )
    return out.detach().to(torch.float64)


def all_close(a: torch.Tensor | float, b: torch.Tensor | float) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL))


def seeded_randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def matching_variant(values: Sequence[Any], variants: Mapping[str, Sequence[Any]]) -> str | None:
    """The first variant whose values agree with the learner's on every trial."""
    for name, expected in variants.items():
        if all(all_close(v, e) for v, e in zip(values, expected, strict=True)):
            return name
    return None


def row_text(values: torch.Tensor) -> str:
    shown = ", ".join(f"{float(v):.3f}" for v in values[:4])
    return f"[{shown}, ...]"


def check_answers(answers: object, choices: Mapping[str, Sequence[Any]] | Sequence[str], what: str) -> dict:
    keys = list(choices)
    if not isinstance(answers, Mapping):
        raise fail(f"{what} should be a dict with the keys {keys}; got {type(answers).__name__}.")
    missing = [k for k in keys if k not in answers]
    if missing:
        raise fail(f"{what} lacks the key(s) {missing}: answer every question ({keys}).")
    blank = [k for k in keys if answers[k] is Ellipsis or answers[k] is None]
    if blank:
        raise fail(
            f"{what} is not written yet: replace each `...` with your answer (still blank: {blank}), run that cell, "
            "then run this check again."
        )
    if isinstance(choices, Mapping):
        for key, allowed in choices.items():
            if answers[key] not in allowed:
                raise fail(f"{what}[{key!r}] = {answers[key]!r} is not one of {', '.join(map(repr, allowed))}.")
    return dict(answers)
