"""The full (T, alpha) grid of tuned KD trained as one stacked model: a drop-in for ``distill.grid_search``.

Same split, same cached teacher logits, same seeded batches and optimiser, so the same rows (within float
rounding), but the grid's students train together, one batch feeding all of them, each with its own (T, alpha).
Two ways to stack G students (see :mod:`kdlib.tune.stacking`):

* ``"grouped"``: one model whose layers hold the G copies side by side, activations laid out member-major along
  the channels, ``(N, G * C, ...)`` (convolutions become grouped convolutions, batch norm runs on G * C channels,
  linear layers a batched matmul). Fast; for models built of the known layers (kdlib's CNNs, ResNets, MLP).
* ``"vmap"``: ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap`` over any model; the stacked
  batch-norm buffers are passed in, so running statistics update per member exactly as in eager training.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from kdlib.core.distill import Selection, TuningProblem, check_same_classes, grid_search
from kdlib.core.losses import check_alpha, check_temperature, kd_loss
from kdlib.core.precision import mixed_precision
from kdlib.core.progress import tqdm
from kdlib.core.train import (
    DEFAULT_RUN,
    RunOptions,
    epoch_batches,
    make_training,
    steps_per_epoch,
    to_training_device,
)
from kdlib.errors import KDConfigError
from kdlib.tune.stacking import CPU_CHUNK, GroupedStack, Stack, UnsupportedModel, stack_students
from kdlib.validation import is_int

__all__ = ["BACKENDS", "grid_points", "stacked_grid_search", "use_channels_last"]

BACKENDS: tuple[str, ...] = ("auto", "grouped", "vmap", "sequential")


def grid_points(temperatures: Sequence[float], alphas: Sequence[float]) -> list[tuple[float, float]]:
    """The grid's (T, alpha) pairs in T-major order, each checked."""
    if len(temperatures) == 0 or len(alphas) == 0:
        raise KDConfigError("grid", (tuple(temperatures), tuple(alphas)), "at least one T and one alpha")
    return [(check_temperature(t), check_alpha(a)) for t, a in itertools.product(temperatures, alphas)]


def use_channels_last(stack: Stack, device: torch.device, x: torch.Tensor) -> bool:
    """Grouped convolutions on the CPU run markedly faster in channels-last layout."""
    return isinstance(stack, GroupedStack) and device.type == "cpu" and x.ndim == 4


def _fit_stacked(stack: Stack, points: Sequence[tuple[float, float]], chosen: Selection, bar: tqdm) -> None:
    """``train.fit`` for G students at once on ``chosen``'s training part: the same seeded batches, optimiser and
    schedule as G one-at-a-time ``run_standard`` calls, the loss summed over members (so each member gets its own
    loss's gradient)."""
    x, y, source, cfg, device = chosen.x_fit, chosen.y_fit, chosen.source, chosen.cfg, chosen.device
    channels_last = use_channels_last(stack, device, x)
    if channels_last:
        stack.body.to(memory_format=torch.channels_last)  # type: ignore[union-attr]
    params = [p for p in stack.parameters() if p.requires_grad]
    optimizer, scheduler = make_training(params, cfg, len(x))  # SGD/Adam, weight decay: elementwise, per member
    generator = torch.Generator().manual_seed(cfg.seed)
    x, y = to_training_device(x, y, device)
    forward = mixed_precision(device)
    for _epoch in range(cfg.epochs):
        stack.train()
        for idx, xb, yb in epoch_batches(x, y, cfg, generator):
            with forward:
                target = source(xb, idx)
                logits = stack(xb.contiguous(memory_format=torch.channels_last) if channels_last else xb)
                losses = [kd_loss(logits[g], target, yb, t, a) for g, (t, a) in enumerate(points)]
                loss = torch.stack(losses).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
    stack.write_back()


def stacked_grid_search(
    problem: TuningProblem,
    options: RunOptions = DEFAULT_RUN,
    evaluate: Callable[[nn.Module], dict] | None = None,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> list[dict]:
    """``distill.grid_search`` with the grid's students trained together: same arguments, same rows (scored on
    ``x_val, y_val`` when given, else on a ``val_fraction`` carved from the transfer data).

    The teacher's logits are computed once (or, with augmentation, once per step for all students); each batch
    feeds every student, each with its own (T, alpha). ``backend`` picks how students are stacked (see the module
    doc; ``"sequential"`` is ``distill.grid_search`` itself, and ``"auto"`` falls back to it with a warning when
    the model cannot be stacked). ``chunk_size`` trains the grid in stacks of at most that many students (each
    stack replays the same seeded batches; with augmentation each stack pays the teacher once per step). None: the
    whole grid on a GPU, ``CPU_CHUNK`` students on the CPU, where activations that stay in cache beat bigger stacks.
    """
    if backend not in BACKENDS:
        raise KDConfigError("backend", backend, f"one of {', '.join(BACKENDS)}")
    if chunk_size is not None and (not is_int(chunk_size) or chunk_size < 1):
        raise KDConfigError("chunk_size", chunk_size, "None (automatic) or an integer >= 1")
    cfg, teacher, make_student = problem.cfg, problem.teacher, problem.make_student
    points = grid_points(problem.temperatures, problem.alphas)
    if backend == "sequential":
        return grid_search(problem, options, evaluate)
    chosen = problem.selection(options.device)
    dev, x_fit = chosen.device, chosen.x_fit
    students = [make_student().to(dev) for _ in points]
    check_same_classes(students[0], [teacher], x_fit)
    size = chunk_size or (CPU_CHUNK if dev.type == "cpu" else len(points))
    count = math.ceil(len(points) / size)  # equal stacks: 25 points in chunks of <= 8 -> 7 + 6 + 6 + 6
    bounds = [round(i * len(points) / count) for i in range(count + 1)]
    chunks = [range(lo, hi) for lo, hi in itertools.pairwise(bounds)]
    probe = x_fit[: min(8, len(x_fit))].to(dev)
    try:
        first = stack_students([students[i] for i in chunks[0]], probe, backend)
    except UnsupportedModel as exc:
        if backend != "auto":
            raise KDConfigError("backend", backend, f"a model this backend can stack ({exc})") from exc
        warnings.warn(f"cannot stack these students ({exc}); training the grid one point at a time", stacklevel=2)
        return grid_search(problem, options, evaluate)
    steps = len(chunks) * cfg.epochs * steps_per_epoch(len(x_fit), cfg)
    desc = f"grid (T, α) x{len(points)} stacked"
    with tqdm(total=steps, desc=desc, disable=not options.progress, leave=False) as bar:
        for number, chunk in enumerate(chunks):
            members = [students[i] for i in chunk]
            stack = first if number == 0 else stack_students(members, probe, backend)
            _fit_stacked(stack, [points[i] for i in chunk], chosen, bar)
            first = stack = None  # free the stacked copy before the next chunk
    rows = []
    for (temperature, alpha), student in zip(points, students, strict=True):
        val_acc = chosen.score(student)
        row = {"temperature": temperature, "alpha": alpha, "val_acc": val_acc, "val_gain": val_acc - chosen.val_before}
        if evaluate is not None:
            row.update(evaluate(student))
        rows.append(row)
    return rows
