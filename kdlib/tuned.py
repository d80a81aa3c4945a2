"""Tuned KD: choose (T, alpha) by a search of the grid on a validation split, then distil with that pair.

It sits above the searches it dispatches to (``stacked_grid.stacked_grid_search``, ``halving.halving_search``), which
themselves build on ``distill``: nothing below imports this module, so the import graph has no cycle.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kdlib import distill
from kdlib.distill import DistillOutcome, Teaching, best_point
from kdlib.errors import KDConfigError
from kdlib.halving import SEARCHES, halving_search
from kdlib.stacked_grid import stacked_grid_search
from kdlib.train import RunOptions, TrainConfig

__all__ = ["run_tuned"]


def run_tuned(
    make_student: Callable[[], nn.Module],
    student,
    teacher,
    x,
    y,
    temperatures,
    alphas,
    cfg: TrainConfig,
    val_fraction: float = 0.2,
    device="auto",
    progress=True,
    on_epoch_end=None,
    evaluate=None,
    *,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    search: str = "grid",
) -> DistillOutcome:
    """Tuned KD: pick (T, alpha) by a search of the grid scored on ``x_val, y_val`` when given (a held-out
    split), else on a ``val_fraction`` carved from the transfer data; then distil ``student`` on all the transfer
    data with that pair (the same budget as standard KD). ``search``: ``"grid"`` trains every point
    (``stacked_grid.stacked_grid_search``), ``"halving"`` successive halving over stacked rungs
    (``halving.halving_search``, which also reports ``tuning_cost``, its share of the grid's training steps)."""
    if search not in SEARCHES:
        raise KDConfigError("search", search, f"one of {', '.join(SEARCHES)}")
    extra: dict = {}
    if search == "halving":
        found = halving_search(
            make_student, teacher, x, y, temperatures, alphas, cfg, val_fraction=val_fraction, x_val=x_val,
            y_val=y_val, device=device, progress=progress, evaluate=evaluate,
        )  # fmt: skip
        scores, best, extra["tuning_cost"] = found.rows, found.best, found.cost
    else:
        scores = stacked_grid_search(
            make_student, teacher, x, y, temperatures, alphas, cfg, val_fraction, device, progress, evaluate,
            x_val=x_val, y_val=y_val,
        )  # fmt: skip
        best = best_point(scores)
    outcome = distill.run_standard(  # looked up at call time, so that tests can watch the final distillation
        student, x, y, Teaching(teacher, best["temperature"], best["alpha"]), cfg,
        RunOptions(device, progress, on_epoch_end),
    )
    outcome.extra.update({"grid": scores, "best_temperature": best["temperature"], "best_alpha": best["alpha"]})
    outcome.extra.update(extra)
    return outcome
