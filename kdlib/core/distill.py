"""The KD methods of the study, each a thin layer over ``train.fit``: standard, DML, data-partitioning, and the
fine-tuning baseline; and what the (T, alpha) searches share (the validation split, ``grid_search``,
``best_point``). Tuned KD, which dispatches to those searches, is :mod:`kdlib.tune.tuned`. A frozen model's logits
on un-augmented transfer data are computed once and looked up by sample index at every step (``frozen_logits``)."""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from kdlib.core.losses import check_alpha, check_temperature, dml_losses, dp_select_targets, kd_loss
from kdlib.core.metrics import accuracy
from kdlib.core.progress import tqdm
from kdlib.core.train import DEFAULT_RUN, RunOptions, TrainConfig, fit, predict_logits, resolve_device
from kdlib.errors import KDConfigError

LogitSource = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``source(x_batch, sample_indices) -> logits`` of a frozen model for one batch."""


def frozen_logits(model: nn.Module, x: torch.Tensor, cfg: TrainConfig, device: str | torch.device) -> LogitSource:
    """A frozen model as a logit source: cached once on ``x`` unless augmentation changes the inputs each step."""
    dev = resolve_device(device)
    model.to(dev).eval()
    if cfg.augment:

        @torch.no_grad()
        def live(xb: torch.Tensor, _idx: torch.Tensor) -> torch.Tensor:
            return model(xb)

        return live
    cache = predict_logits(model, x, device=dev).to(dev)

    def lookup(_xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return cache[idx.to(dev)]

    return lookup


def check_same_classes(student: nn.Module, teachers: Sequence[nn.Module], x: torch.Tensor) -> None:
    """Raise if a teacher and the student predict different numbers of classes."""
    probe = x[:1]
    with torch.no_grad():
        n_student = student.eval()(probe.to(next(student.parameters()).device)).shape[-1]
        for number, teacher in enumerate(teachers):
            n_teacher = teacher.eval()(probe.to(next(teacher.parameters()).device)).shape[-1]
            if n_teacher != n_student:
                raise KDConfigError(
                    f"teacher[{number}].num_classes", n_teacher, f"the student's number of classes ({n_student})"
                )


@dataclass
class DistillOutcome:
    """What one method run returns: per-epoch history and method-specific extras (routing, grid scores)."""

    history: list[dict]
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherSpec:
    """What standard KD learns from: a frozen ``teacher``, the temperature and weight alpha of ``losses.kd_loss``,
    and optionally the teacher's logits on the transfer data computed beforehand (``source``, e.g. once per grid)."""

    teacher: nn.Module
    temperature: float
    alpha: float
    source: LogitSource | None = None


@dataclass(frozen=True)
class PartitionTeacherSpec:
    """What data-partitioning KD learns from: several frozen ``teachers``, the temperature and weight alpha of
    ``losses.kd_loss``, and the routing ``variant`` of ``losses.dp_select_targets``."""

    teachers: Sequence[nn.Module]
    temperature: float
    alpha: float
    variant: str = "supervised"


def run_finetune(student, x, y, cfg: TrainConfig, options: RunOptions = DEFAULT_RUN) -> DistillOutcome:
    """Baseline: the student keeps training on the transfer data with labels only (alpha = 0)."""

    def batch_loss(xb, yb, _idx):
        return nn.functional.cross_entropy(student(xb), yb)

    return DistillOutcome(fit([student], x, y, batch_loss, cfg, labelled(options, "finetune")))


def labelled(options: RunOptions, desc: str) -> RunOptions:
    """``options`` with the progress bar labelled ``desc`` unless it already has a label."""
    return replace(options, desc=options.desc or desc)


def run_standard(
    student, x, y, teaching: TeacherSpec, cfg: TrainConfig, options: RunOptions = DEFAULT_RUN
) -> DistillOutcome:
    """Hinton KD from one frozen teacher at temperature T with weight alpha (see ``losses.kd_loss``)."""
    temperature, alpha = check_temperature(teaching.temperature), check_alpha(teaching.alpha)
    check_same_classes(student, [teaching.teacher], x)
    source = teaching.source or frozen_logits(teaching.teacher, x, cfg, options.device)

    def batch_loss(xb, yb, idx):
        return kd_loss(student(xb), source(xb, idx), yb, temperature, alpha)

    desc = f"KD T={temperature:g} α={alpha:g}"
    return DistillOutcome(fit([student], x, y, batch_loss, cfg, labelled(options, desc)))


def run_dml(
    peers: Sequence[nn.Module],
    x,
    y,
    cfg: TrainConfig,
    temperature: float = 1.0,
    options: RunOptions = DEFAULT_RUN,
) -> DistillOutcome:
    """Deep mutual learning: every peer is trained at once, each on CE plus KL towards the others."""
    check_same_classes(peers[0], peers[1:], x)

    def batch_loss(xb, yb, _idx):
        return torch.stack(dml_losses([p(xb) for p in peers], yb, temperature)).sum()

    return DistillOutcome(fit(list(peers), x, y, batch_loss, cfg, labelled(options, "DML")))


def run_dp(
    student, x, y, teaching: PartitionTeacherSpec, cfg: TrainConfig, options: RunOptions = DEFAULT_RUN
) -> DistillOutcome:
    """Data-partitioning KD: per sample, distil from the most confident teacher where it beats a frozen copy of
    the initial student, else from that frozen copy. ``extra["routing"]`` gives the share of samples per source."""
    temperature, alpha = check_temperature(teaching.temperature), check_alpha(teaching.alpha)
    teachers, device = teaching.teachers, options.device
    check_same_classes(student, teachers, x)
    initial = frozen_logits(copy.deepcopy(student), x, cfg, device)
    sources = [frozen_logits(t, x, cfg, device) for t in teachers]
    counts = torch.zeros(len(teachers) + 1, dtype=torch.long)

    def batch_loss(xb, yb, idx):
        target, chosen = dp_select_targets([s(xb, idx) for s in sources], initial(xb, idx), yb, teaching.variant)
        counts.add_(torch.bincount(chosen.cpu(), minlength=len(counts)))
        return kd_loss(student(xb), target, yb, temperature, alpha)

    history = fit([student], x, y, batch_loss, cfg, labelled(options, "DP-KD"))
    shares = (counts.float() / counts.sum().clamp(min=1)).tolist()
    routing = {"initial_student": shares[0], **{f"teacher_{i}": s for i, s in enumerate(shares[1:])}}
    return DistillOutcome(history, {"routing": routing})


def split_validation(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (train, validation) index arrays, validation never empty."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    if n < 2:
        raise KDConfigError("transfer data size", n, "at least 2 samples to carve a validation split")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def selection_split(
    x: torch.Tensor,
    y: torch.Tensor,
    val_fraction: float,
    seed: int,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_fit, y_fit, x_val, y_val)`` of a (T, alpha) search: with ``x_val, y_val`` given (a held-out split),
    the grid trains on all the transfer data and scores on them; without, a seeded ``val_fraction`` of the
    transfer data is carved off for scoring (``split_validation``)."""
    if (x_val is None) != (y_val is None):
        raise KDConfigError("x_val/y_val", "one of them", "both validation inputs and labels, or neither")
    if x_val is not None:
        if len(x_val) == 0 or len(x_val) != len(y_val):
            raise KDConfigError("x_val", tuple(x_val.shape), f"a non-empty batch with one label each ({len(y_val)})")
        return x, y, x_val, y_val
    train_idx, val_idx = split_validation(len(x), val_fraction, seed)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


@dataclass
class Selection:
    """What a (T, alpha) search trains and scores on: ``selection_split``'s parts, a fresh student as
    ``make_student()`` gives it and its score before any distillation, and the frozen teacher's logits on the
    training part (``source``, computed on first use)."""

    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    teacher: nn.Module
    cfg: TrainConfig
    device: torch.device
    reference: nn.Module = field(repr=False)
    val_before: float = field(init=False)

    def __post_init__(self) -> None:
        self.val_before = self.score(self.reference)

    def score(self, student: nn.Module) -> float:
        """The student's accuracy on the validation part."""
        return accuracy(predict_logits(student, self.x_val, self.device), self.y_val)

    @functools.cached_property
    def source(self) -> LogitSource:
        """The teacher's logits on the training part (``frozen_logits``)."""
        return frozen_logits(self.teacher, self.x_fit, self.cfg, self.device)


def prepare_selection(
    split: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    make_student: Callable[[], nn.Module],
    teacher: nn.Module,
    cfg: TrainConfig,
    device: str | torch.device,
) -> Selection:
    """The :class:`Selection` of a search over ``split`` (``selection_split``'s result): every search starts here."""
    return Selection(*split, teacher, cfg, resolve_device(device), make_student())


@dataclass(frozen=True)
class TuningProblem:
    """What every (T, alpha) search is given: fresh copies of the pre-trained student (``make_student()``), the
    frozen teacher, the transfer data, the grid, the training config, and the validation split it scores on
    (``x_val, y_val`` when given, else a ``val_fraction`` carved from the transfer data; see ``selection_split``)."""

    make_student: Callable[[], nn.Module]
    teacher: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    temperatures: Sequence[float]
    alphas: Sequence[float]
    cfg: TrainConfig
    val_fraction: float = 0.2
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``selection_split`` of this problem: ``(x_fit, y_fit, x_val, y_val)``."""
        return selection_split(self.x, self.y, self.val_fraction, self.cfg.seed, self.x_val, self.y_val)

    def selection(self, device: str | torch.device) -> Selection:
        """The :class:`Selection` a search of this problem trains and scores on (``prepare_selection``)."""
        return prepare_selection(self.split(), self.make_student, self.teacher, self.cfg, device)


def grid_search(
    problem: TuningProblem, options: RunOptions = DEFAULT_RUN, evaluate: Callable[[nn.Module], dict] | None = None
) -> list[dict]:
    """Score every (T, alpha) of ``problem`` by the student's accuracy on its validation split: ``x_val, y_val``
    when given (a held-out split; the grid then trains on all of ``x``), else one carved from the transfer data.

    Each grid point distils a fresh copy of the pre-trained student (``make_student()``) on the rest of the
    transfer data. The teacher's logits are computed once for the whole grid. ``evaluate(student)`` may add
    more columns per point (e.g. test accuracy for analysis; never used to choose).
    """
    chosen = problem.selection(options.device)
    scores = []
    points = list(itertools.product(problem.temperatures, problem.alphas))
    quiet = RunOptions(options.device, progress=False)
    for temperature, alpha in tqdm(points, desc="grid (T, α)", disable=not options.progress, leave=False):
        student = problem.make_student()
        teaching = TeacherSpec(problem.teacher, temperature, alpha, chosen.source)
        run_standard(student, chosen.x_fit, chosen.y_fit, teaching, problem.cfg, quiet)
        val_acc = chosen.score(student)
        row = {
            "temperature": float(temperature),
            "alpha": float(alpha),
            "val_acc": val_acc,
            "val_gain": val_acc - chosen.val_before,
        }
        if evaluate is not None:
            row.update(evaluate(student))
        scores.append(row)
    return scores


def best_point(scores: Sequence[dict], key: str = "val_acc") -> dict:
    """The grid point with the highest ``key``; ties go to the earliest point (smaller T, then smaller alpha)."""
    if not scores:
        raise KDConfigError("grid", [], "at least one scored (T, alpha) point")
    return max(scores, key=lambda row: (row[key], -scores.index(row)))
