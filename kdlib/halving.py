"""Successive halving over stacked rungs: tuned KD's (T, alpha) for a fraction of the full grid's training.

Every grid point starts, the students trained together as stacks (``tune.stack_students``) for the first rung's
share of the distillation budget. Each is then scored on the validation split; the best go on, restacked, to the
next rung, and so on up to the full budget, where the best survivor is chosen. The study's default is classic
successive halving (``eta=ETA``: keep the best third by validation accuracy at each of geometric stops). The two-
stop schedule (``eta=None``, ``halving_schedule`` without ``eta``) is faster: it stops at an eighth and a quarter of
the budget, keeps a third of the grid after the first stop and two points after the second, and trains those two to
the end, where final validation accuracy picks one; it is not the default because it lost the optimum on
``dirichlet:0.1`` (benchmarks/grid_speed.py: within 0.5 points of the grid's best in 1 of 10 seeds, against 9 of 10
on ``iid``). At each of its early stops a third of the places (rounded up) go to the best by validation accuracy and
the rest to the best by validation loss, averaged with the mean of the point's live neighbours on the (T, alpha)
grid (``smoothed_losses``). Accuracy finds the optimum where (T, alpha) matters a lot; where the points differ by a
handful of images a few steps in, the loss, which moves continuously and is pooled over a region of the grid, ranks
the final accuracies better. ``halving_schedule(..., eta=3)`` gives classic successive halving (keep a third at each
of geometric stops, rank by accuracy). A point that goes on continues exactly where it stopped: the same weights and
optimiser state, the same learning rate schedule (the cosine over the *full* budget) and the same seeded batches. So
a survivor ends with its full-grid score (to float rounding), and only which points survive differs from the grid.

Between rungs the search state (the surviving students, their optimiser state, the batch generator's state and
the rows scored so far) goes to a small checkpoint under the cache folder, named by the problem's digest: a
killed search resumes after its last finished rung, with the same result as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlib.distill import LogitSource, check_same_classes, frozen_logits, selection_split
from kdlib.errors import KDConfigError
from kdlib.losses import kd_loss
from kdlib.metrics import accuracy
from kdlib.paths import cache_dir
from kdlib.progress import tqdm
from kdlib.results import config_key
from kdlib.resumable_training import (
    AnyStack,
    BatchStream,
    OptState,
    cosine_learning_rates,
    load_optimizer,
    param_pairs,
    save_optimizer,
    stack_or_single,
)
from kdlib.train import TrainConfig, make_optimizer, predict_logits, resolve_device, to_training_device
from kdlib.tune import (
    CPU_CHUNK,
    UnsupportedModel,
    _digest,
    _grid_points,
    _module_digest,
    _use_channels_last,
)

__all__ = [
    "ETA",
    "FINAL_KEEP",
    "SEARCHES",
    "HalvingResult",
    "Rung",
    "checkpoint_path",
    "halving_schedule",
    "halving_search",
    "replay",
    "smoothed_losses",
]

SEARCHES: tuple[str, ...] = ("halving", "grid")
"""How tuned KD searches its (T, alpha) grid: successive halving (the study's default) or the full grid (the
config's ``tuning_search`` takes the same names, ``config.TUNING_SEARCHES``; kdlib.config is not imported here,
since the config imports the method registry, which imports tuned KD and this module)."""
ETA = 3
"""Keep the best third at each rung (classic halving), or after the first stop (the default schedule)."""
FINAL_KEEP = 2
"""Points the default schedule trains to the full budget (the last rung picks one by final accuracy)."""
RANK_KEYS: tuple[str, ...] = ("accuracy", "loss", "both")
_FORMAT = 2


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


@dataclass
class HalvingResult:
    """What ``halving_search`` found. ``rows`` has one row per grid point, in grid order, like the grid's rows,
    plus ``rung`` (the last rung it was scored at, 0-based) and ``budget`` (the share of the distillation budget it
    was trained for); a point dropped early carries its score at that rung."""

    rows: list[dict]
    best: dict
    rungs: list[Rung]
    student_steps: int
    """Training steps summed over the students (the full grid: points x total steps)."""
    grid_steps: int
    checkpoint: str | None = None
    resumed_from: int | None = None
    """The rung a resumed search started after (None: it started from the beginning)."""
    scores: list[dict] = field(default_factory=list)

    @property
    def cost(self) -> float:
        """The student-steps spent, as a share of the full grid's."""
        return self.student_steps / max(1, self.grid_steps)


# ------------------------------------------------------------------------------------------------ the search


@dataclass
class _Candidate:
    index: int
    point: tuple[float, float]
    student: nn.Module
    optimizer: OptState = field(default_factory=dict)


@dataclass
class _Problem:
    """Everything a rung needs, fixed for the whole search."""

    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    source: LogitSource
    cfg: TrainConfig
    device: torch.device
    rates: list[float]
    backend: str
    chunk: int


def _train_rung(
    problem: _Problem, live: list[_Candidate], start: int, end: int, stream: BatchStream, bar: tqdm
) -> None:
    """Train the live candidates from step ``start`` to ``end``, ``problem.chunk`` students per stack."""
    if end <= start:
        return
    dev = problem.device
    probe = problem.x_fit[: min(8, len(problem.x_fit))].to(dev)
    for lo in range(0, len(live), problem.chunk):
        group = live[lo : lo + problem.chunk]
        try:
            stack = stack_or_single([c.student for c in group], probe, problem.backend)
        except UnsupportedModel as exc:
            if problem.backend != "auto":
                raise KDConfigError("backend", problem.backend, f"a model this backend can stack ({exc})") from exc
            problem.backend, problem.chunk = "sequential", 1
            warnings.warn("cannot stack these students; training them one at a time", stacklevel=3)
            _train_rung(problem, live[lo:], start, end, stream, bar)
            return
        _fit_steps(problem, stack, group, start, end, stream, bar)


def _fit_steps(
    problem: _Problem, stack: AnyStack, group: list[_Candidate], start: int, end: int, stream: BatchStream, bar: tqdm
) -> None:
    """``tune._fit_stacked`` from step ``start`` to ``end`` of the full schedule, optimiser state carried in/out."""
    dev, cfg = problem.device, problem.cfg
    channels_last = _use_channels_last(stack, dev, problem.x_fit)
    if channels_last:
        stack.body.to(memory_format=torch.channels_last)  # type: ignore[union-attr]
    pairs = param_pairs(stack)
    optimizer = make_optimizer([t for t, _ in pairs], cfg)
    load_optimizer(optimizer, pairs, [c.optimizer for c in group])
    stack.train()
    for step, (idx, xb, yb) in enumerate(stream.between(start, end), start=start):
        target = problem.source(xb, idx)
        logits = stack(xb.contiguous(memory_format=torch.channels_last) if channels_last else xb)
        loss = torch.stack([kd_loss(logits[g], target, yb, *c.point) for g, c in enumerate(group)]).sum()
        for param_group in optimizer.param_groups:
            param_group["lr"] = problem.rates[step]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update(len(group))
    stack.write_back()
    for candidate, state in zip(group, save_optimizer(optimizer, pairs, len(group)), strict=True):
        candidate.optimizer = state


def _score(problem: _Problem, student: nn.Module) -> tuple[float, float]:
    """Validation accuracy and mean cross-entropy (the tie-break between equal accuracies)."""
    logits = predict_logits(student, problem.x_val, problem.device)
    loss = float(nn.functional.cross_entropy(logits, problem.y_val.to(logits.device)))
    return accuracy(logits, problem.y_val), loss


def checkpoint_path(key: str) -> Path:
    """Where the halving search with this problem digest keeps its between-rung state."""
    return cache_dir() / "halving" / f"{key}.pt"


def _problem_key(
    make_student: Callable[[], nn.Module], teacher: nn.Module, data: Sequence[torch.Tensor], **fields: Any
) -> str:
    payload = {
        "format": _FORMAT,
        "data": _digest(list(data)),
        "teacher": _module_digest(teacher),
        "student": _module_digest(make_student()),
        **fields,
    }
    return config_key(payload)


def _write_checkpoint(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(payload, partial)
    os.replace(partial, path)  # a kill mid-write leaves the previous checkpoint whole


def _read_checkpoint(path: Path, key: str) -> dict | None:
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged checkpoint means starting over, not failing
        warnings.warn(f"{path}: unreadable halving checkpoint ({error}); starting the search over", stacklevel=3)
        return None
    return payload if payload.get("key") == key and payload.get("format") == _FORMAT else None


def _resolve_checkpoint(checkpoint: bool | str | Path | None, key: str) -> Path | None:
    if checkpoint is None or checkpoint is False:
        return None
    if checkpoint is True or checkpoint == "auto":
        return checkpoint_path(key)
    if isinstance(checkpoint, str | Path):
        return Path(checkpoint)
    raise KDConfigError("checkpoint", checkpoint, "True/'auto' (the cache folder), False/None, or a file path")


def halving_search(
    make_student: Callable[[], nn.Module],
    teacher: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    temperatures: Sequence[float],
    alphas: Sequence[float],
    cfg: TrainConfig,
    *,
    val_fraction: float = 0.2,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    evaluate: Callable[[nn.Module], dict] | None = None,
    eta: int | None = ETA,
    rungs: Sequence[Rung] | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
    checkpoint: bool | str | Path | None = True,
    on_rung: Callable[[int, list[dict]], None] | None = None,
) -> HalvingResult:
    """Successive halving over the (T, alpha) grid, scored on a validation split, the students trained stacked.

    The split is ``distill.grid_search``'s (``val_fraction`` of ``x``, seeded by ``cfg.seed``) unless ``x_val`` and
    ``y_val`` are given, in which case all of ``x`` trains. ``rungs`` overrides ``halving_schedule(points, steps,
    eta)`` (an integer, default ``ETA``: classic halving; ``None``: the two-stop schedule). ``evaluate(student)``
    adds columns to a point's row when it is dropped or chosen (analysis only).
    ``checkpoint``: True (a file under the cache folder named by a digest of the whole problem), a path, or None;
    the file is removed when the search completes. ``on_rung(rung, scores)`` is called after each rung's
    checkpoint is written, with that rung's scores (it may raise, to stop the search there).
    """
    points = _grid_points(temperatures, alphas)
    shape = (len(temperatures), len(alphas))
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise KDConfigError("chunk_size", chunk_size, "None (automatic) or an integer >= 1")
    if backend not in ("auto", "grouped", "vmap", "sequential"):
        raise KDConfigError("backend", backend, "one of auto, grouped, vmap, sequential")
    dev = resolve_device(device)
    x_fit, y_fit, x_val, y_val = selection_split(x, y, val_fraction, cfg.seed, x_val, y_val)
    total = cfg.epochs * math.ceil(len(x_fit) / cfg.batch_size)
    schedule = list(rungs) if rungs is not None else halving_schedule(len(points), total, eta)
    _check_rungs(schedule, total)
    key = _problem_key(
        make_student,
        teacher,
        (x_fit, y_fit, x_val, y_val),
        cfg=cfg.as_dict(),
        points=points,
        rungs=[(r.steps, r.keep, r.by) for r in schedule],
    )
    path = _resolve_checkpoint(checkpoint, key)
    saved = _read_checkpoint(path, key) if path is not None else None
    chunk = chunk_size or (CPU_CHUNK if dev.type == "cpu" else len(points))
    problem = _Problem(
        *to_training_device(x_fit, y_fit, dev),
        x_val,
        y_val,
        frozen_logits(teacher, x_fit, cfg, dev),
        cfg,
        dev,
        cosine_learning_rates(cfg, total),
        "sequential" if chunk == 1 and backend == "auto" else backend,
        1 if backend == "sequential" else chunk,
    )
    check_same_classes(make_student().to(dev), [teacher], x_fit)
    val_before = accuracy(predict_logits(make_student(), x_val, dev), y_val)
    state = _initial_state(make_student, points, dev, saved)
    live, rows, scores, stream = (
        state["live"],
        state["rows"],
        state["scores"],
        BatchStream(problem.x_fit, problem.y_fit, cfg, state["stream"]),
    )
    first = 0 if saved is None else int(saved["rung"]) + 1
    spent = int(saved["spent"]) if saved else 0
    with tqdm(
        total=_work(schedule, len(points)), desc=f"halving (T, α) x{len(points)}", disable=not progress, leave=False
    ) as bar:
        bar.update(spent)
        for number in range(first, len(schedule)):
            rung = schedule[number]
            start = schedule[number - 1].steps if number else 0
            _train_rung(problem, live, start, rung.steps, stream, bar)
            spent += (rung.steps - start) * len(live)
            scored = _score_rung(problem, live, number, rung, total, val_before)
            scores.append(scored)
            final = number == len(schedule) - 1
            live = _next_rung(live, scored, _kept(scored, rung, final, shape), rows, evaluate)
            if path is not None and number < len(schedule) - 1:
                _write_checkpoint(path, _payload(key, number, spent, live, rows, scores, stream))
            if on_rung is not None:
                on_rung(number, [dict(s) for s in scored.values()])
    if path is not None:
        path.unlink(missing_ok=True)
    ordered = [rows[i] for i in range(len(points))]
    best = _choose(ordered, len(schedule) - 1)
    return HalvingResult(
        rows=ordered,
        best=best,
        rungs=schedule,
        student_steps=spent,
        grid_steps=total * len(points),
        checkpoint=None if path is None else str(path),
        resumed_from=None if saved is None else int(saved["rung"]),
        scores=[
            {"index": i, "steps": schedule[n].steps, **row}
            for n, rung_scores in enumerate(scores)
            for i, row in rung_scores.items()
        ],
    )


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


def _initial_state(
    make_student: Callable[[], nn.Module], points: list[tuple[float, float]], dev: torch.device, saved: dict | None
) -> dict:
    """The candidates, rows, scores and batch stream state: fresh, or from a checkpoint."""
    if saved is None:
        live = [_Candidate(i, p, make_student().to(dev)) for i, p in enumerate(points)]
        return {"live": live, "rows": {}, "scores": [], "stream": None}
    live = []
    for item in saved["live"]:
        student = make_student()
        student.load_state_dict(item["student"])
        index = int(item["index"])
        live.append(_Candidate(index, points[index], student.to(dev), item["optimizer"]))
    rows = {int(k): v for k, v in saved["rows"].items()}
    scores = [{int(k): v for k, v in rung.items()} for rung in saved["scores"]]
    return {"live": live, "rows": rows, "scores": scores, "stream": {int(k): v for k, v in saved["stream"].items()}}


def _score_rung(
    problem: _Problem, live: list[_Candidate], number: int, rung: Rung, total: int, val_before: float
) -> dict[int, dict]:
    scored = {}
    for candidate in live:
        acc, loss = _score(problem, candidate.student)
        scored[candidate.index] = {
            "temperature": candidate.point[0],
            "alpha": candidate.point[1],
            "val_acc": acc,
            "val_gain": acc - val_before,
            "val_loss": loss,
            "rung": number,
            "budget": rung.steps / max(1, total),
        }
    return scored


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


def _next_rung(
    live: list[_Candidate],
    scored: dict[int, dict],
    kept_order: list[int],
    rows: dict[int, dict],
    evaluate: Callable[[nn.Module], dict] | None,
) -> list[_Candidate]:
    """Keep the candidates in ``kept_order``; the others get their final row (on the last rung: all of them)."""
    kept = set(kept_order)
    survivors = []
    for candidate in live:
        if candidate.index in kept:
            survivors.append(candidate)
            continue
        row = dict(scored[candidate.index])
        if evaluate is not None:
            row.update(evaluate(candidate.student))
        rows[candidate.index] = row
    return survivors


def _choose(rows: list[dict], last: int) -> dict:
    """The chosen point: the best row of the last rung (ties: lower loss, then the earlier grid point)."""
    final = {i: r for i, r in enumerate(rows) if r["rung"] == last}
    return rows[_ranking(final)[0]]


def _payload(
    key: str,
    number: int,
    spent: int,
    live: list[_Candidate],
    rows: dict[int, dict],
    scores: list[dict[int, dict]],
    stream: BatchStream,
) -> dict:
    return {
        "format": _FORMAT,
        "key": key,
        "rung": number,
        "spent": spent,
        "live": [
            {
                "index": c.index,
                "student": {k: v.detach().cpu().clone() for k, v in c.student.state_dict().items()},
                "optimizer": c.optimizer,
            }
            for c in live
        ],
        "rows": {str(k): v for k, v in rows.items()},
        "scores": [{str(k): v for k, v in rung.items()} for rung in scores],
        "stream": {str(k): v for k, v in stream.latest().items()},
    }


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
