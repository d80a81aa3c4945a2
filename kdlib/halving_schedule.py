"""The successive-halving schedule and ranking, apart from the training (``kdlib.halving``).

``halving_schedule`` gives the rungs (classic successive halving for an integer ``eta``, else the two-stop
schedule), ``_kept`` and ``_ranking`` decide which points go on after a rung (by validation accuracy, by validation
loss smoothed over the live grid neighbours, ``smoothed_losses``, or both), and ``replay`` gives the point a
schedule would choose from per-step scores of every grid point, without training again.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

from kdlib.errors import KDConfigError

__all__ = [
    "CLASSIC",
    "ETA",
    "FINAL_KEEP",
    "RANK_KEYS",
    "HalvingSchedule",
    "Rung",
    "halving_schedule",
    "replay",
    "smoothed_losses",
]

ETA = 3
"""Keep the best third at each rung (classic halving), or after the first stop (the default schedule)."""
FINAL_KEEP = 2
"""Points the default schedule trains to the full budget (the last rung picks one by final accuracy)."""
RANK_KEYS: tuple[str, ...] = ("accuracy", "loss", "both")


@dataclass(frozen=True)
class Rung:
    """Train every live point up to ``steps`` (counted from the start of distillation), then keep the best ``keep``,
    ranked by ``by``: ``"accuracy"`` (validation accuracy, then loss), ``"loss"`` (validation loss smoothed over
    the live grid neighbours, ``smoothed_losses``) or ``"both"`` (a third of ``keep``, rounded up, by accuracy, the
    rest by smoothed loss). The last rung always picks by accuracy, then loss."""

    steps: int
    keep: int
    by: str = "accuracy"


def halving_schedule(points: int, total_steps: int, eta: int | None = None) -> list[Rung]:
    """The rungs for ``points`` candidates and a budget of ``total_steps``.

    ``eta=None`` (the default tuned path): stops at ``total_steps / 8`` (keep ``ceil(points / ETA)``) and
    ``total_steps / 4`` (keep ``FINAL_KEEP``), both ranked ``"both"`` (a third by accuracy, the rest by smoothed
    validation loss), then the survivors train to the end. An integer ``eta``: classic successive halving, ``K``
    halvings, ``eta**K <= points``, at ``total_steps * eta**(k - K)`` steps for ``k = 0..K``; after each rung but
    the last the best ``ceil(live / eta)`` go on (by accuracy), and the last rung keeps the best one."""
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, int) or eta < 2):
        raise KDConfigError("eta", eta, "None (the default schedule) or an integer >= 2 (keep the best 1/eta)")
    if points < 1:
        raise KDConfigError("points", points, "at least one (T, alpha) point")
    if eta is None:
        return _default_schedule(points, total_steps)
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


def _default_schedule(points: int, total_steps: int) -> list[Rung]:
    """Two early stops ranked by smoothed loss (an eighth, a quarter of the budget), ``FINAL_KEEP`` to the end."""
    if points <= FINAL_KEEP or total_steps < 2:
        return [Rung(total_steps, 1)]
    stops = [(round(total_steps / 8), max(FINAL_KEEP, math.ceil(points / ETA))), (round(total_steps / 4), FINAL_KEEP)]
    rungs: list[Rung] = []
    for steps, keep in stops:
        steps = max(steps, rungs[-1].steps + 1 if rungs else 1)
        if steps >= total_steps or (rungs and keep >= rungs[-1].keep):
            continue
        rungs.append(Rung(steps, keep, "both"))
    return [*rungs, Rung(total_steps, 1)]


@dataclass(frozen=True)
class HalvingSchedule:
    """Which rungs ``halving_search`` runs: ``rungs`` when given, else ``halving_schedule(points, steps, eta)``
    (``eta``: an integer, default ``ETA``, classic halving; ``None``: the two-stop schedule)."""

    eta: int | None = ETA
    rungs: Sequence[Rung] | None = None

    def resolve(self, points: int, total_steps: int) -> list[Rung]:
        """The rungs for ``points`` candidates and ``total_steps``, checked (``_check_rungs``)."""
        schedule = list(self.rungs) if self.rungs is not None else halving_schedule(points, total_steps, self.eta)
        _check_rungs(schedule, total_steps)
        return schedule


CLASSIC = HalvingSchedule()
"""Classic successive halving (``eta=ETA``), the search's default."""


def _check_rungs(schedule: Sequence[Rung], total: int) -> None:
    steps = [r.steps for r in schedule]
    if not schedule or steps != sorted(set(steps)) or steps[-1] != total or min(steps) < 0:
        raise KDConfigError("rungs", steps, f"increasing step budgets ending at the full budget ({total} steps)")
    if any(r.keep < 1 for r in schedule):
        raise KDConfigError("rungs", [r.keep for r in schedule], "keep >= 1 at every rung")
    if any(r.by not in RANK_KEYS for r in schedule):
        raise KDConfigError("rungs", [r.by for r in schedule], f"rank keys among {', '.join(RANK_KEYS)}")


def _work(schedule: Sequence[Rung], points: int) -> int:
    """Student-steps of the whole search."""
    work, live, start = 0, points, 0
    for rung in schedule:
        work += (rung.steps - start) * live
        live, start = min(live, rung.keep), rung.steps
    return work


def smoothed_losses(losses: dict[int, float], shape: tuple[int, int]) -> dict[int, float]:
    """Each point's validation loss averaged with the mean loss of its scored neighbours on the grid (the up to 8
    points one step away in T and/or alpha; grid index ``i`` is row ``i // len(alphas)``, column
    ``i % len(alphas)``). Points without a scored neighbour keep their own loss."""
    rows, cols = shape
    smoothed = {}
    for index, loss in losses.items():
        r, c = divmod(index, cols)
        around = [
            losses[a * cols + b]
            for a in range(max(0, r - 1), min(rows, r + 2))
            for b in range(max(0, c - 1), min(cols, c + 2))
            if (a, b) != (r, c) and a * cols + b in losses
        ]
        smoothed[index] = (loss + sum(around) / len(around)) / 2 if around else loss
    return smoothed


def _ranking(scored: dict[int, dict], by: str = "accuracy", shape: tuple[int, int] | None = None) -> list[int]:
    """Best first. ``"accuracy"``: higher validation accuracy, then lower validation loss, then earlier grid point.
    ``"loss"``: lower ``smoothed_losses`` (over the grid of ``shape``; unsmoothed without one), then lower own
    loss, then earlier point. Losses are compared to 5 decimals, so that float rounding (which differs between
    stacks of different members) does not decide between points that train identically (e.g. alpha = 0 at any T)."""
    if by == "both":
        raise KDConfigError("by", by, "a single key here (``_kept`` splits 'both')")
    if by == "loss":
        own = {i: row["val_loss"] for i, row in scored.items()}
        smooth = smoothed_losses(own, shape) if shape is not None else own
        return sorted(scored, key=lambda i: (round(smooth[i], 5), round(own[i], 5), i))
    return sorted(scored, key=lambda i: (-scored[i]["val_acc"], round(scored[i]["val_loss"], 5), i))


def _kept(scored: dict[int, dict], rung: Rung, final: bool, shape: tuple[int, int] | None) -> list[int]:
    """The points that go on after ``rung`` (none after the last). ``"both"``: the best ``ceil(keep / 3)`` by
    accuracy, then the best by smoothed loss among the others up to ``keep`` (accuracy finds the region where
    (T, alpha) matters a lot; the loss ranks better where the points differ by a few images)."""
    if final:
        return []
    if rung.by != "both":
        return _ranking(scored, rung.by, shape)[: rung.keep]
    kept = _ranking(scored, "accuracy")[: math.ceil(rung.keep / 3)]
    kept += [i for i in _ranking(scored, "loss", shape) if i not in kept]
    return kept[: rung.keep]


def _choose(rows: list[dict], last: int) -> dict:
    """The chosen point: the best row of the last rung (ties: lower loss, then the earlier grid point)."""
    final = {i: r for i, r in enumerate(rows) if r["rung"] == last}
    return rows[_ranking(final)[0]]


def replay(
    scores: Sequence[dict], schedule: Sequence[Rung], points: int, shape: tuple[int, int] | None = None
) -> dict:
    """The point successive halving with ``schedule`` would choose, from per-step scores of every grid point.

    ``scores``: rows ``{"index", "steps", "val_acc", "val_loss", ...}`` of every point at (at least) every rung's
    step budget, e.g. from ``halving_search`` with rungs that keep all. Survivors train exactly as in the full grid,
    so this is the halving search's choice without training again (used by the benchmark over many seeds).
    ``shape``: the grid's (temperatures, alphas), for rungs ranked by loss (None: each point's own loss, unsmoothed)."""
    by_step: dict[int, dict[int, dict]] = {}
    for row in scores:
        by_step.setdefault(int(row["steps"]), {})[int(row["index"])] = row
    live = list(range(points))
    for number, rung in enumerate(schedule):
        if rung.steps not in by_step:
            raise KDConfigError("scores", sorted(by_step), f"scores at step {rung.steps} (rung {number})")
        scored = {i: by_step[rung.steps][i] for i in live}
        final = number == len(schedule) - 1
        live = _ranking(scored, "accuracy")[:1] if final else _kept(scored, rung, False, shape)
    return copy.deepcopy(by_step[schedule[-1].steps][live[0]])
