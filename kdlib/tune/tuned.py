"""Tuned KD: choose (T, alpha) by a search of the grid on a validation split, then distil with that pair.

It sits above the searches it dispatches to (``stacked_grid.stacked_grid_search``, ``halving.halving_search``), which
themselves build on ``distill``: nothing below imports this module, so the import graph has no cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kdlib.core import distill
from kdlib.core.distill import DistillOutcome, TeacherSpec, TuningProblem, best_point
from kdlib.core.train import DEFAULT_RUN, RunOptions
from kdlib.errors import KDConfigError
from kdlib.tune.halving import halving_search
from kdlib.tune.halving_schedule import SEARCHES
from kdlib.tune.stacked_grid import stacked_grid_search

__all__ = ["run_tuned"]


def run_tuned(
    problem: TuningProblem,
    student: nn.Module,
    options: RunOptions = DEFAULT_RUN,
    evaluate: Callable[[nn.Module], dict] | None = None,
    *,
    search: str = "grid",
) -> DistillOutcome:
    """Tuned KD: pick (T, alpha) by a search of ``problem``'s grid scored on its ``x_val, y_val`` when given (a
    held-out split), else on a ``val_fraction`` carved from the transfer data; then distil ``student`` on all the
    transfer data with that pair (the same budget as standard KD; ``options.on_epoch_end`` sees that run only).
    ``search``: ``"grid"`` trains every point (``stacked_grid.stacked_grid_search``), ``"halving"`` successive
    halving over stacked rungs (``halving.halving_search``, which also reports ``tuning_cost``, its share of the
    grid's training steps)."""
    if search not in SEARCHES:
        raise KDConfigError("search", search, f"one of {', '.join(SEARCHES)}")
    extra: dict = {}
    if search == "halving":
        found = halving_search(problem, RunOptions(options.device, options.progress), evaluate)
        scores, best, extra["tuning_cost"] = found.rows, found.best, found.cost
    else:
        search_options = RunOptions(options.device, options.progress)
        scores = stacked_grid_search(problem, search_options, evaluate)
        best = best_point(scores)
    outcome = distill.run_standard(  # looked up at call time, so that tests can watch the final distillation
        student, problem.x, problem.y, TeacherSpec(problem.teacher, best["temperature"], best["alpha"]), problem.cfg,
        options,
    )
    outcome.extra.update({"grid": scores, "best_temperature": best["temperature"], "best_alpha": best["alpha"]})
    outcome.extra.update(extra)
    return outcome
