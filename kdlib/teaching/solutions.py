"""The registry of model answers: ``solution(name)`` returns one, ``show_solution(name)`` prints its source;
``solutions_wanted`` says whether a notebook runs with them."""

from __future__ import annotations

import inspect
from typing import Any

from kdlib.teaching.ex1_kd_loss import solution_kd_loss, solution_soft_targets
from kdlib.teaching.ex2_temperature import SOLUTION_TEMPERATURE_PREDICTION, solution_entropy
from kdlib.teaching.ex3_partitions import solution_dirichlet_split, solution_heatmap_answers
from kdlib.teaching.ex4_tuning import solution_pick_best, solution_tuning_explanation
from kdlib.validation import env_bool, strict_bool

SOLUTIONS_ENV = "KDLIB_SOLUTIONS"
"""Set to 1 in a kernel's environment, it runs every exercise notebook with the model answers (what the test suite
does under nbval, which passes no parameters)."""

_SOLUTIONS: dict[str, Any] = {
    "soft_targets": solution_soft_targets,
    "kd_loss": solution_kd_loss,
    "entropy": solution_entropy,
    "temperature_prediction": SOLUTION_TEMPERATURE_PREDICTION,
    "dirichlet_split": solution_dirichlet_split,
    "heatmap_answers": solution_heatmap_answers,
    "pick_best": solution_pick_best,
    "tuning_explanation": solution_tuning_explanation,
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


def solutions_wanted(requested: bool) -> bool:
    """Whether an exercise notebook swaps in the model answers: its ``solutions`` parameter says so (papermill's
    ``-p solutions True``), or the kernel runs with ``KDLIB_SOLUTIONS=1``."""
    return strict_bool("solutions", requested) or env_bool(SOLUTIONS_ENV, False)
