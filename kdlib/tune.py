"""The (T, alpha) search behind tuned KD, resumable: ``smart_search`` samples the discrete grid with Optuna (TPE,
optionally with successive-halving pruning), each trial one cached-teacher distillation, stored in SQLite (or any
database URL) so that an interrupted search resumes where it stopped and many workers can share one study.

The full grid trained as one stacked model is :mod:`kdlib.stacked_grid` (``stacked_grid_search``, re-exported
here with the stacking names it builds on).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlib.distill import LogitSource, Selection, Teaching, TuningProblem, frozen_logits, run_standard
from kdlib.errors import KDConfigError
from kdlib.metrics import accuracy
from kdlib.paths import results_dir
from kdlib.progress import tqdm
from kdlib.results import config_key
from kdlib.stacked_grid import (  # re-exported: the stacked grid lived here first
    BACKENDS,
    stacked_grid_search,
)
from kdlib.stacked_grid import grid_points as _grid_points
from kdlib.stacked_grid import use_channels_last as _use_channels_last  # noqa: F401 (halving imports it here)
from kdlib.stacking import (  # re-exported: the stacked grid's building blocks
    CPU_CHUNK,
    GroupedStack,
    UnsupportedModel,
    VmapStack,
    stack_students,
)
from kdlib.train import DEFAULT_RUN, RunOptions, predict_logits
from kdlib.validation import is_int

__all__ = [
    "BACKENDS",
    "CPU_CHUNK",
    "SAMPLERS",
    "GroupedStack",
    "SearchResult",
    "SearchStore",
    "UnsupportedModel",
    "VmapStack",
    "default_storage",
    "distill_point",
    "smart_search",
    "stack_students",
    "stacked_grid_search",
]

SAMPLERS: tuple[str, ...] = ("tpe", "halving", "random")


def default_storage() -> str:
    """The embedded default: ``sqlite:///<results>/tuning.sqlite3``."""
    path = results_dir() / "tuning.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _storage_url(storage: Any) -> Any:
    if storage is None:
        return default_storage()
    if isinstance(storage, Path) or (isinstance(storage, str) and "://" not in storage):
        path = Path(storage).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return storage  # a database URL or an optuna storage object


def _open_search(url: Any, study_name: str) -> Any:
    """The Optuna study in ``url``, made or resumed; a storage that cannot be read (a damaged or truncated SQLite
    file, a database that refuses the connection) is a one-line error naming it, not the driver's traceback."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return optuna.create_study(storage=url, study_name=study_name, direction="maximize", load_if_exists=True)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        allowed = (
            f"an Optuna database kdlib can open, but it failed ({reason}). A damaged SQLite file: delete it (the "
            "search starts again) or pass another storage"
        )
        raise KDConfigError("storage", url if isinstance(url, str) else type(url).__name__, allowed) from None


def _digest(tensors: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _module_digest(module: nn.Module) -> str:
    return _digest([v for _, v in sorted(module.state_dict().items())])


@contextlib.contextmanager
def _quiet_optuna(verbose: bool) -> Iterator[None]:
    """Optuna's per-trial log lines and experimental warnings off, unless ``verbose``."""
    import optuna

    level = optuna.logging.get_verbosity()
    if not verbose:
        optuna.logging.set_verbosity(logging.WARNING)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


@dataclass
class SearchResult:
    """What ``smart_search`` found: best point on the validation split, and what it cost."""

    temperature: float
    alpha: float
    val_acc: float
    val_gain: float
    trainings: int
    """Distillations this call actually ran (pruned ones included)."""
    total_trainings: int
    """Distinct (T, alpha) points trained in the whole study, over all calls and workers."""
    epochs: int
    """Training epochs this call ran (``trainings * cfg.epochs`` unless trials were pruned)."""
    study_name: str
    storage: str
    trials: list[dict] = field(default_factory=list)

    @property
    def best(self) -> dict:
        return {
            "temperature": self.temperature,
            "alpha": self.alpha,
            "val_acc": self.val_acc,
            "val_gain": self.val_gain,
        }


def distill_point(
    chosen: Selection,
    make_student: Callable[[], nn.Module],
    temperature: float,
    alpha: float,
    source: LogitSource,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
) -> float:
    """One grid point exactly as ``distill.grid_search`` trains it: a fresh student on ``chosen``'s training part,
    the teacher's logits from ``source``; returns the accuracy on ``chosen``'s validation part.

    ``on_epoch_end(student, epoch)`` is called after each epoch (reporting to a pruner; it may raise to stop)."""
    student = make_student()
    hook = None if on_epoch_end is None else (lambda epoch: on_epoch_end(student, epoch) or {})
    teaching = Teaching(chosen.teacher, temperature, alpha, source)
    options = RunOptions(chosen.device, progress=False, on_epoch_end=hook)
    run_standard(student, chosen.x_fit, chosen.y_fit, teaching, chosen.cfg, options)
    return accuracy(predict_logits(student, chosen.x_val, chosen.device), chosen.y_val)


def _make_sampler(name: str, seed: int, n_trials: int) -> Any:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(2, min(10, n_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


def _make_pruner(name: str) -> Any:
    import optuna

    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _trial_rows(study: Any, val_before: float) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = (
            t.value
            if t.value is not None
            else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else math.nan)
        )
        rows.append(
            {
                "number": t.number,
                "temperature": t.params.get("temperature", math.nan),
                "alpha": t.params.get("alpha", math.nan),
                "val_acc": value,
                "val_gain": value - val_before,
                "state": t.state.name,
                "reused": bool(t.user_attrs.get("reused", False)),
                "epochs": int(t.user_attrs.get("epochs", 0)),
            }
        )
    return rows


@dataclass(frozen=True)
class SearchStore:
    """Where a ``smart_search`` keeps its Optuna study: ``storage`` (None: ``default_storage()``), the study's
    name (None: a digest of the problem), and whether Optuna logs its trials (``verbose``)."""

    storage: Any = None
    study_name: str | None = None
    verbose: bool = False


DEFAULT_STORE = SearchStore()
"""The default storage, a study named after the problem, Optuna quiet."""


def smart_search(
    problem: TuningProblem,
    n_trials: int,
    *,
    sampler: str = "tpe",
    seed: int | None = None,
    store: SearchStore = DEFAULT_STORE,
    options: RunOptions = DEFAULT_RUN,
) -> SearchResult:
    """Search ``problem``'s (T, alpha) grid with Optuna, training ``n_trials`` distinct points (one at a time, on
    the same split and cached teacher logits as ``grid_search``), scored by validation accuracy (on ``x_val, y_val``
    when given, else on a ``val_fraction`` carved from the transfer data).

    Resumable: trials live in ``store.storage`` (default: ``default_storage()``'s SQLite file; a file path, a
    database URL such as ``postgresql://...`` for many workers on many machines, or an optuna storage). A second
    call with the same problem loads the study (``store.study_name`` defaults to a digest of the data, models, grid
    and config) and only trains until the study holds ``n_trials`` trained points. A suggestion of an already
    trained point reuses the stored score instead of training again. ``sampler``: ``"tpe"``, ``"halving"`` (TPE
    with successive-halving pruning on per-epoch validation accuracy) or ``"random"``. Trials that crashed (FAIL)
    or were killed (left RUNNING) are not counted and their points may be tried again.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    if not is_int(n_trials) or n_trials < 1:
        raise KDConfigError("n_trials", n_trials, "an integer >= 1 (distinct grid points to train)")
    if sampler not in SAMPLERS:
        raise KDConfigError("sampler", sampler, f"one of {', '.join(SAMPLERS)}")
    make_student, teacher, x, y, cfg = problem.make_student, problem.teacher, problem.x, problem.y, problem.cfg
    temperatures, alphas, val_fraction = problem.temperatures, problem.alphas, problem.val_fraction
    storage, study_name, verbose, progress = store.storage, store.study_name, store.verbose, options.progress
    points = _grid_points(temperatures, alphas)
    grid_order = {p: i for i, p in reversed(list(enumerate(points)))}
    held_out = problem.x_val is not None
    chosen = problem.selection(options.device)
    dev, x_fit, x_val, y_val = chosen.device, chosen.x_fit, chosen.x_val, chosen.y_val
    val_before = chosen.val_before
    if study_name is None:
        digest = {
            "cfg": cfg.as_dict(),
            "grid": [list(map(float, temperatures)), list(map(float, alphas))],
            "val_fraction": val_fraction,
            "data": _digest([x, y]),
            **({"validation": _digest([x_val, y_val])} if held_out else {}),
            "teacher": _module_digest(teacher),
            "student": _module_digest(chosen.reference),
            "sampler": sampler,
        }
        study_name = f"kd-tune-{config_key(digest)}"
    url = _storage_url(storage)
    distributions = {
        "temperature": CategoricalDistribution([float(t) for t in temperatures]),
        "alpha": CategoricalDistribution([float(a) for a in alphas]),
    }
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    target = min(n_trials, len(grid_order))
    source: LogitSource | None = None
    trainings = epochs = 0

    def trained_trials() -> dict[tuple[float, float], Any]:
        done = {}
        for t in study.get_trials(deepcopy=False, states=finished):
            if not t.user_attrs.get("reused", False):
                done.setdefault((t.params["temperature"], t.params["alpha"]), t)
        return done

    with _quiet_optuna(verbose):
        study = _open_search(url, study_name)
        base_seed = cfg.seed if seed is None else seed
        # a resumed search draws fresh suggestions instead of replaying the first run's
        study.sampler = _make_sampler(sampler, base_seed + len(study.get_trials(deepcopy=False)), n_trials)
        study.pruner = _make_pruner(sampler)
        study.set_user_attr("val_before", val_before)
        done = trained_trials()
        rng = random.Random(base_seed + len(done))
        bar = tqdm(
            total=target,
            initial=min(len(done), target),
            desc=f"search (T, α) {sampler}",
            disable=not progress,
            leave=False,
        )
        stall = 0
        while len(done) < target:
            if stall >= 10:  # the sampler keeps proposing trained points: try an untried one
                untried = [p for p in points if p not in done]
                study.enqueue_trial(dict(zip(("temperature", "alpha"), rng.choice(untried), strict=True)))
                stall = 0
            trial = study.ask(distributions)
            point = (trial.params["temperature"], trial.params["alpha"])
            if point in done:
                previous = done[point]
                trial.set_user_attr("reused", True)
                trial.set_user_attr("reused_from", previous.number)
                if previous.state == TrialState.COMPLETE:
                    study.tell(trial, previous.value)
                else:
                    step = max(previous.intermediate_values)
                    trial.report(previous.intermediate_values[step], step)
                    study.tell(trial, state=TrialState.PRUNED)
                stall += 1
                continue
            stall = 0
            if source is None:
                source = frozen_logits(teacher, x_fit, cfg, dev)
            ran = [0]

            def report(student: nn.Module, epoch: int, trial: Any = trial, ran: list[int] = ran) -> None:
                ran[0] = epoch
                if sampler == "halving" and epoch < cfg.epochs:
                    trial.report(accuracy(predict_logits(student, x_val, dev), y_val), epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned()

            try:
                value = distill_point(chosen, make_student, point[0], point[1], source, report)
            except optuna.TrialPruned:
                trial.set_user_attr("epochs", ran[0])
                study.tell(trial, state=TrialState.PRUNED)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            else:
                trial.set_user_attr("epochs", cfg.epochs)
                if sampler == "halving":
                    trial.report(value, cfg.epochs)
                study.tell(trial, value)
            trainings += 1
            epochs += ran[0]
            done = trained_trials()
            bar.n = min(len(done), target)
            bar.refresh()
        bar.close()
        rows = _trial_rows(study, val_before)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if not complete:
        raise KDConfigError("n_trials", n_trials, "enough trials for one to complete (all were pruned)")
    best = max(complete, key=lambda r: (r["val_acc"], -grid_order[(r["temperature"], r["alpha"])]))
    return SearchResult(
        temperature=float(best["temperature"]),
        alpha=float(best["alpha"]),
        val_acc=float(best["val_acc"]),
        val_gain=float(best["val_gain"]),
        trainings=trainings,
        total_trainings=len(done),
        epochs=epochs,
        study_name=study_name,
        storage=url if isinstance(url, str) else type(url).__name__,
        trials=rows,
    )
