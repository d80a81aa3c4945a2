"""The successive-halving schedule and ranking, apart from the training (``kdlib.tune.halving``).

``halving_schedule`` gives the rungs of classic successive halving, ``kept_points`` decides which points go on after
a rung (by validation accuracy, then validation loss), and ``replay`` gives the point a schedule would choose from
per-step scores of every grid point, without training again.

Early rungs rank by accuracy only. Ranking by validation loss (alone, or smoothed over grid neighbours) was tried
and dropped: a few steps in, the loss sorts the points by alpha (a high alpha keeps the pre-trained student where it
was), and under label skew the searches that ranked by it chose points whose test gain was near zero or negative
(``benchmarks/grid_speed.py``; README, "Tuned KD's default search").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

from kdlib.errors import KDConfigError

__all__ = ["DEFAULT_SCHEDULE", "ETA", "SEARCHES", "HalvingSchedule", "Rung", "halving_schedule", "replay"]

SEARCHES: tuple[str, ...] = ("halving", "grid")
"""How tuned KD searches its (T, alpha) grid: successive halving (the study's default) or the full grid. The config's
``tuning_search`` takes these names (the one list, here, which imports nothing of the study)."""

ETA = 3
"""Keep the best third at each rung."""


@dataclass(frozen=True)
class Rung:
    """Train every live point up to ``steps`` (counted from the start of distillation), then keep the best ``keep``
    by validation accuracy (ties: lower validation loss, then the earlier grid point)."""

    steps: int
    keep: int


def halving_schedule(points: int, total_steps: int, eta: int = ETA) -> list[Rung]:
    """Classic successive halving for ``points`` candidates and a budget of ``total_steps``: ``K`` halvings,
    ``eta**K <= points``, at ``total_steps * eta**(k - K)`` steps for ``k = 0..K``; after each rung but the last the
    best ``ceil(live / eta)`` go on, and the last rung keeps the best one. A rung no longer than the one before is
    skipped."""
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise KDConfigError("eta", eta, "an integer >= 2 (keep the best 1/eta at each rung)")
    if points < 1:
        raise KDConfigError("points", points, "at least one (T, alpha) point")
    halvings = 0
    while eta ** (halvings + 1) <= points:
        halvings += 1
    rungs: list[Rung] = []
    live = points
    for k in range(halvings + 1):
        steps = total_steps if k == halvings else max(1, round(total_steps * eta ** (k - halvings)))
        steps = min(steps, total_steps)
        if rungs and steps <= rungs[-1].steps:  # no longer than the rung before: skipped (the last one ends it)
            if k == halvings:
                rungs[-1] = Rung(steps, 1)
            continue
        rungs.append(Rung(steps, 1 if k == halvings else math.ceil(live / eta)))
        live = rungs[-1].keep
    return rungs


@dataclass(frozen=True)
class HalvingSchedule:
    """Which rungs ``halving_search`` runs: ``rungs`` when given, else ``halving_schedule(points, steps, eta)``."""

    eta: int = ETA
    rungs: Sequence[Rung] | None = None

    def resolve(self, points: int, total_steps: int) -> list[Rung]:
        """The rungs for ``points`` candidates and ``total_steps``, checked (``_check_rungs``)."""
        schedule = list(self.rungs) if self.rungs is not None else halving_schedule(points, total_steps, self.eta)
        _check_rungs(schedule, total_steps)
        return schedule


DEFAULT_SCHEDULE = HalvingSchedule()
"""The study's tuned path: classic successive halving, ``eta=ETA`` (the benchmarks replay this very schedule)."""


def _check_rungs(schedule: Sequence[Rung], total: int) -> None:
    steps = [r.steps for r in schedule]
    if not schedule or steps != sorted(set(steps)) or steps[-1] != total or min(steps) < 0:
        raise KDConfigError("rungs", steps, f"increasing step budgets ending at the full budget ({total} steps)")
    if any(r.keep < 1 for r in schedule):
        raise KDConfigError("rungs", [r.keep for r in schedule], "keep >= 1 at every rung")


def search_work(schedule: Sequence[Rung], points: int) -> int:
    """Student-steps of the whole search."""
    work, live, start = 0, points, 0
    for rung in schedule:
        work += (rung.steps - start) * live
        live, start = min(live, rung.keep), rung.steps
    return work


def _ranking(scored: dict[int, dict]) -> list[int]:
    """Best first: higher validation accuracy, then lower validation loss, then earlier grid point. Losses are
    compared to 5 decimals, so that float rounding (which differs between stacks of different members) does not
    decide between points that train identically (e.g. alpha = 0 at any T)."""
    return sorted(scored, key=lambda i: (-scored[i]["val_acc"], round(scored[i]["val_loss"], 5), i))


def kept_points(scored: dict[int, dict], rung: Rung, final: bool) -> list[int]:
    """The points that go on after ``rung`` (none after the last)."""
    return [] if final else _ranking(scored)[: rung.keep]


def chosen_row(rows: list[dict], last: int) -> dict:
    """The chosen point: the best row of the last rung (ties: lower loss, then the earlier grid point)."""
    final = {i: r for i, r in enumerate(rows) if r["rung"] == last}
    return rows[_ranking(final)[0]]


def replay(scores: Sequence[dict], schedule: Sequence[Rung], points: int) -> dict:
    """The point successive halving with ``schedule`` would choose, from per-step scores of every grid point.

    ``scores``: rows ``{"index", "steps", "val_acc", "val_loss", ...}`` of every point at (at least) every rung's
    step budget, e.g. from ``halving_search`` with rungs that keep all. Survivors train exactly as in the full grid,
    so this is the halving search's choice without training again (used by the benchmark over many seeds)."""
    by_step: dict[int, dict[int, dict]] = {}
    for row in scores:
        by_step.setdefault(int(row["steps"]), {})[int(row["index"])] = row
    live = list(range(points))
    for number, rung in enumerate(schedule):
        if rung.steps not in by_step:
            raise KDConfigError("scores", sorted(by_step), f"scores at step {rung.steps} (rung {number})")
        scored = {i: by_step[rung.steps][i] for i in live}
        live = _ranking(scored)[: 1 if number == len(schedule) - 1 else rung.keep]
    return copy.deepcopy(by_step[schedule[-1].steps][live[0]])
