"""Successive halving over stacked rungs: tuned KD's (T, alpha) for a fraction of the full grid's training.

Every grid point starts, the students trained together as stacks (``stacking.stack_students``) for the first rung's
share of the distillation budget. Each is then scored on the validation split; the best go on, restacked, to the
next rung, and so on up to the full budget, where the best survivor is chosen: classic successive halving
(``halving_schedule``: keep the best third by validation accuracy at each of geometric stops). ``DEFAULT_SCHEDULE``
is the study's, and the benchmarks replay that very schedule. A point that goes on continues exactly where it
stopped: the same weights and optimiser state, the same learning rate schedule (the cosine over the *full* budget)
and the same seeded batches. So a survivor ends with its full-grid score (to float rounding), and only which points
survive differs from the grid.

Between rungs the search state (the surviving students, their optimiser state, the batch generator's state and
the rows scored so far) goes to a small checkpoint under the cache folder, named by the problem's digest: a
killed search resumes after its last finished rung, with the same result as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlib.core.checkpoints import config_key
from kdlib.core.disk import writing
from kdlib.core.distill import LogitSource, TuningProblem, check_same_classes, frozen_logits
from kdlib.core.losses import kd_loss
from kdlib.core.metrics import accuracy
from kdlib.core.precision import mixed_precision
from kdlib.core.progress import tqdm
from kdlib.core.train import (
    DEFAULT_RUN,
    RunOptions,
    TrainConfig,
    make_optimizer,
    predict_logits,
    resolve_device,
    to_training_device,
)
from kdlib.errors import KDConfigError
from kdlib.paths import cache_dir
from kdlib.tune.halving_schedule import (
    DEFAULT_SCHEDULE,
    ETA,
    HalvingSchedule,
    Rung,
    chosen_row,
    halving_schedule,
    kept_points,
    replay,
    search_work,
)
from kdlib.tune.resumable_training import (
    AnyStack,
    BatchStream,
    OptState,
    cosine_learning_rates,
    load_optimizer,
    param_pairs,
    save_optimizer,
    stack_or_single,
)
from kdlib.tune.stacked_grid import grid_points as _grid_points
from kdlib.tune.stacked_grid import use_channels_last as _use_channels_last
from kdlib.tune.stacking import CPU_CHUNK, UnsupportedModel

__all__ = [
    "DEFAULT_SCHEDULE",
    "ETA",
    "Checkpointing",
    "HalvingResult",
    "HalvingSchedule",
    "Rung",
    "Stacking",
    "checkpoint_path",
    "halving_schedule",
    "halving_search",
    "replay",
]

_FORMAT = 2


def _digest(tensors: Sequence[torch.Tensor]) -> str:
    """A short SHA-256 of tensors' dtypes, shapes and bytes: what a halving checkpoint is keyed by."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _module_digest(module: nn.Module) -> str:
    return _digest([v for _, v in sorted(module.state_dict().items())])


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


@dataclass(frozen=True)
class Stacking:
    """How the students are stacked: ``backend`` (auto, grouped, vmap or sequential) and ``chunk_size`` students
    per stack (None: the whole grid on a GPU, ``stacking.CPU_CHUNK`` on the CPU)."""

    backend: str = "auto"
    chunk_size: int | None = None


@dataclass(frozen=True)
class Checkpointing:
    """Between-rung state: ``checkpoint`` is True (a file under the cache folder named by a digest of the whole
    problem), a path, or None/False; ``on_rung(rung, scores)`` is called after each rung's checkpoint is written,
    with that rung's scores (it may raise, to stop the search there)."""

    checkpoint: bool | str | Path | None = True
    on_rung: Callable[[int, list[dict]], None] | None = None


# ------------------------------------------------------------------------------------------------ the search


@dataclass
class _Candidate:
    index: int
    point: tuple[float, float]
    student: nn.Module
    optimizer: OptState = field(default_factory=dict)


@dataclass
class _SearchState:
    """What changes from rung to rung (and goes into a checkpoint): the live candidates, the rows of the points
    already dropped, every rung's scores, the batch stream and the student-steps spent."""

    live: list[_Candidate]
    rows: dict[int, dict]
    scores: list[dict[int, dict]]
    stream: BatchStream
    spent: int = 0


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


def _train_rung(problem: _Problem, live: list[_Candidate], steps: range, stream: BatchStream, bar: tqdm) -> None:
    """Train the live candidates over ``steps`` (from ``steps.start`` to ``steps.stop``), ``problem.chunk`` students
    per stack."""
    if not steps:
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
            _train_rung(problem, live[lo:], steps, stream, bar)
            return
        _fit_steps(problem, stack, group, steps, stream, bar)


def _fit_steps(
    problem: _Problem, stack: AnyStack, group: list[_Candidate], steps: range, stream: BatchStream, bar: tqdm
) -> None:
    """``stacked_grid._fit_stacked`` over ``steps`` of the full schedule, optimiser state carried in/out."""
    dev, cfg = problem.device, problem.cfg
    channels_last = _use_channels_last(stack, dev, problem.x_fit)
    if channels_last:
        stack.body.to(memory_format=torch.channels_last)  # type: ignore[union-attr]
    pairs = param_pairs(stack)
    optimizer = make_optimizer([t for t, _ in pairs], cfg)
    load_optimizer(optimizer, pairs, [c.optimizer for c in group])
    stack.train()
    forward = mixed_precision(dev)
    for step, (idx, xb, yb) in enumerate(stream.between(steps.start, steps.stop), start=steps.start):
        with forward:
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
    with writing(path, partial):
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
    problem: TuningProblem,
    options: RunOptions = DEFAULT_RUN,
    evaluate: Callable[[nn.Module], dict] | None = None,
    *,
    schedule: HalvingSchedule = DEFAULT_SCHEDULE,
    stacking: Stacking = Stacking(),
    resume: Checkpointing = Checkpointing(),
) -> HalvingResult:
    """Successive halving over ``problem``'s (T, alpha) grid, scored on a validation split, the students trained
    stacked (on ``options.device``, a progress bar unless ``options.progress`` is False).

    The split is ``problem.split()`` (``distill.grid_search``'s: ``val_fraction`` of ``x``, seeded by
    ``cfg.seed``, unless ``x_val`` and ``y_val`` are given, in which case all of ``x`` trains). ``schedule.rungs``
    overrides ``halving_schedule(points, steps, schedule.eta)`` (default ``ETA``). ``evaluate(student)`` adds
    columns to a point's row when it is dropped or chosen (analysis only). ``resume.checkpoint``: True (a file under
    the cache folder named by a digest of the whole problem), a path, or None; the file is removed when the search
    completes. ``resume.on_rung(rung, scores)`` is called after each rung's checkpoint is written, with that rung's
    scores (it may raise, to stop the search there).
    """
    make_student, teacher, cfg = problem.make_student, problem.teacher, problem.cfg
    points = _grid_points(problem.temperatures, problem.alphas)
    backend, chunk_size = stacking.backend, stacking.chunk_size
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise KDConfigError("chunk_size", chunk_size, "None (automatic) or an integer >= 1")
    if backend not in ("auto", "grouped", "vmap", "sequential"):
        raise KDConfigError("backend", backend, "one of auto, grouped, vmap, sequential")
    dev = resolve_device(options.device)
    x_fit, y_fit, x_val, y_val = problem.split()
    total = cfg.epochs * math.ceil(len(x_fit) / cfg.batch_size)
    rungs = schedule.resolve(len(points), total)
    key = _problem_key(
        make_student,
        teacher,
        (x_fit, y_fit, x_val, y_val),
        cfg=cfg.as_dict(),
        points=points,
        rungs=[(r.steps, r.keep) for r in rungs],
    )
    path = _resolve_checkpoint(resume.checkpoint, key)
    saved = _read_checkpoint(path, key) if path is not None else None
    chunk = chunk_size or (CPU_CHUNK if dev.type == "cpu" else len(points))
    fixed = _Problem(
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
    raw = _initial_state(make_student, points, dev, saved)
    state = _SearchState(
        raw["live"],
        raw["rows"],
        raw["scores"],
        BatchStream(fixed.x_fit, fixed.y_fit, cfg, raw["stream"]),
        int(saved["spent"]) if saved else 0,
    )
    first = 0 if saved is None else int(saved["rung"]) + 1
    with tqdm(
        total=search_work(rungs, len(points)),
        desc=f"halving (T, α) x{len(points)}",
        disable=not options.progress,
        leave=False,
    ) as bar:
        bar.update(state.spent)
        for number in range(first, len(rungs)):
            rung = rungs[number]
            start = rungs[number - 1].steps if number else 0
            _train_rung(fixed, state.live, range(start, rung.steps), state.stream, bar)
            state.spent += (rung.steps - start) * len(state.live)
            scored = _score_rung(fixed, state.live, number, rung, total, val_before)
            state.scores.append(scored)
            final = number == len(rungs) - 1
            state.live = _next_rung(state.live, scored, kept_points(scored, rung, final), state.rows, evaluate)
            if path is not None and number < len(rungs) - 1:
                _write_checkpoint(path, _payload(key, number, state))
            if resume.on_rung is not None:
                resume.on_rung(number, [dict(s) for s in scored.values()])
    if path is not None:
        path.unlink(missing_ok=True)
    ordered = [state.rows[i] for i in range(len(points))]
    best = chosen_row(ordered, len(rungs) - 1)
    return HalvingResult(
        rows=ordered,
        best=best,
        rungs=rungs,
        student_steps=state.spent,
        grid_steps=total * len(points),
        checkpoint=None if path is None else str(path),
        resumed_from=None if saved is None else int(saved["rung"]),
        scores=[
            {"index": i, "steps": rungs[n].steps, **row}
            for n, rung_scores in enumerate(state.scores)
            for i, row in rung_scores.items()
        ],
    )


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


def _payload(key: str, number: int, state: _SearchState) -> dict:
    """The checkpoint after rung ``number``: ``state`` as plain tensors, lists and string-keyed dicts."""
    return {
        "format": _FORMAT,
        "key": key,
        "rung": number,
        "spent": state.spent,
        "live": [
            {
                "index": c.index,
                "student": {k: v.detach().cpu().clone() for k, v in c.student.state_dict().items()},
                "optimizer": c.optimizer,
            }
            for c in state.live
        ],
        "rows": {str(k): v for k, v in state.rows.items()},
        "scores": [{str(k): v for k, v in rung.items()} for rung in state.scores],
        "stream": {str(k): v for k, v in state.stream.latest().items()},
    }


