"""The method registry: one entry per KD method of the study, read by the config, the CLI, the runner, the store's
records and the plots.

An entry holds the method's name (its key in configs, records and the CLI's ``--method``), its label (in figures),
the config fields that enter its run key, and its run function. ``register(Method(...))`` adds a method everywhere
at once; ``unregister(name)`` takes it out again. The seven methods of the study are registered below.

A run function takes a :class:`MethodRun` (the pre-trained parties, the transfer data, the config) and returns a
``DistillOutcome``; it trains ``run.student`` in place. The runner measures the student before and after it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdlib.core.distill import (
    DistillOutcome,
    PartitionTeacherSpec,
    TeacherSpec,
    TuningProblem,
    run_dml,
    run_dp,
    run_finetune,
    run_standard,
)
from kdlib.core.metrics import accuracy
from kdlib.core.train import RunOptions, predict_logits
from kdlib.errors import KDConfigError
from kdlib.tune.tuned import run_tuned

if TYPE_CHECKING:
    from kdlib.data.datasets import Dataset
    from kdlib.study.config import StudyConfig
    from kdlib.study.parties import Scenario

__all__ = [
    "Method",
    "MethodRun",
    "get_method",
    "method_label",
    "method_labels",
    "method_names",
    "methods_with_role",
    "register",
    "registered",
    "unregister",
]


@dataclass(frozen=True)
class MethodRun:
    """Everything a method's run function may use: the parties (``student`` is trained in place; ``pristine`` is
    an untouched copy of it), the transfer data ``x, y``, the data set (its test split only for curves and stored
    analysis), the scenario, the run's config, the device, and the per-epoch callback that records test curves."""

    student: nn.Module
    teacher: nn.Module
    pristine: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    data: Dataset
    scenario: Scenario
    cfg: StudyConfig
    device: str = "auto"
    progress: bool = True
    on_epoch_end: Callable[[int], dict] | None = None
    method: str = ""

    def setting(self, name: str) -> Any:
        """One of the running method's own settings (``Method.settings``, overridden by ``cfg.method_settings``)."""
        method = self.cfg.method_settings.get(self.method, {})
        if name in method:
            return method[name]
        defaults = get_method(self.method).settings if self.method else {}
        if name not in defaults:
            raise KDConfigError("method setting", name, f"one of {', '.join(defaults) or '(none)'} for {self.method}")
        return defaults[name]

    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out validation split ``(x_val, y_val)`` (``cfg.val_size`` labelled samples of the task)."""
        if self.scenario.validation is None or len(self.scenario.validation) == 0:
            raise KDConfigError(
                "val_size", self.cfg.val_size, "a positive count: this method uses the validation split"
            )
        idx = torch.as_tensor(self.scenario.validation, dtype=torch.long)
        return self.data.x_train[idx], self.data.y_train[idx]

    def test_accuracy(self, model: nn.Module) -> float:
        """A model's accuracy on the test split (for curves and stored analysis, never for a choice)."""
        return accuracy(predict_logits(model, self.data.x_test, self.device), self.data.y_test)


@dataclass(frozen=True)
class Method:
    """One method of the study.

    ``fields``: the config fields that decide its runs beyond the common ones (they enter its run key);
    ``more_fields``: fields that enter the key only under some configs (e.g. tuned KD's ``val_fraction`` when it
    chooses on the transfer data); ``run``: trains ``run.student`` and returns the outcome; ``cost``: how long one
    run takes relative to standard KD's, so that parallel runs start the long ones first (the default, 1, is right
    for a method that trains one student once); ``role``: what the findings compare it as (``"untuned"``, the
    default: a KD method run at fixed settings; ``"tuned"``; ``"baseline"``: no teacher; ``"reference"``: a row that
    shows what other data give, never a comparator); ``selects_epoch``: whether the runner returns the student of
    its best validation epoch (False for a method that trains on the validation split itself); ``settings``: the
    method's own parameters and their defaults (e.g. ``{"beta": 8.0}``), set per study with
    ``--set method_settings='{"name": {"beta": 2}}'``, read in the run function with ``run.setting("beta")``, and
    part of the method's run key: a new method needs no field in ``StudyConfig``. ``teacher``: whose predictions the
    record's ``teacher_acc`` and teacher agreement are measured on: ``"party"`` (the scenario's pre-trained teacher,
    the default, also for fine-tuning, whose record then shows the teacher it did not use) or ``"self"`` (a
    self-distillation method: the student before distillation).
    """

    name: str
    label: str
    fields: tuple[str, ...]
    run: Callable[[MethodRun], DistillOutcome]
    more_fields: Callable[[StudyConfig], tuple[str, ...]] | None = None
    cost: float = 1.0
    role: str = "untuned"
    selects_epoch: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)
    teacher: str = "party"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise KDConfigError("method name", self.name, "a plain name (letters, digits, '_'), e.g. 'soft_match'")
        if not isinstance(self.label, str) or not self.label.strip():
            raise KDConfigError("method label", self.label, "a non-empty label for figures")
        if not callable(self.run):
            raise KDConfigError("method run", self.run, "a function of a MethodRun returning a DistillOutcome")
        if self.role not in METHOD_ROLES:
            raise KDConfigError("method role", self.role, f"one of {', '.join(METHOD_ROLES)}")
        if self.teacher not in METHOD_TEACHERS:
            raise KDConfigError("method teacher", self.teacher, f"one of {', '.join(METHOD_TEACHERS)}")
        if not isinstance(self.settings, Mapping) or not all(isinstance(k, str) for k in self.settings):
            raise KDConfigError("method settings", self.settings, "a mapping of parameter names to default values")

    def resolved_settings(self, cfg: StudyConfig) -> dict[str, Any]:
        """The method's settings under ``cfg``: its defaults, with ``cfg.method_settings[name]`` over them."""
        return {**self.settings, **cfg.method_settings.get(self.name, {})}

    def key_fields(self, cfg: StudyConfig) -> tuple[str, ...]:
        """The fields that ``more_fields`` adds for this config (none by default)."""
        return tuple(self.more_fields(cfg)) if self.more_fields is not None else ()


METHOD_ROLES = ("untuned", "tuned", "baseline", "reference")
METHOD_TEACHERS = ("party", "self")

_REGISTRY: dict[str, Method] = {}


def check_method_settings(value: Any, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``StudyConfig.method_settings`` checked against the registry: each key a registered method, each setting one
    the method declares (``Method.settings``); returns it as a plain dict."""
    allowed = 'a mapping {method: {setting: value}}, e.g. {"dkd": {"beta": 2.0}}, of settings the methods declare'
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise KDConfigError("method_settings", value, allowed)
    for name, settings in value.items():
        declared = get_method(name).settings
        unknown = [k for k in settings if k not in declared]
        if unknown:
            choices = ", ".join(declared) or "none"
            raise KDConfigError(f"method_settings.{name}", unknown[0], f"a setting {name} declares ({choices})")
    return {name: dict(settings) for name, settings in value.items()}


def methods_with_role(role: str, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The registered methods (of ``names``, if given) that the findings treat as ``role``."""
    chosen = method_names() if names is None else names
    return tuple(n for n in chosen if n in _REGISTRY and _REGISTRY[n].role == role)


def register(method: Method, *, replace: bool = False) -> Method:
    """Add a method to the study: the config accepts it, the CLI offers it, the runner runs it, the plots label
    it. A name already registered is refused unless ``replace``."""
    if not isinstance(method, Method):
        raise KDConfigError("method", method, "a kdlib.study.methods.Method")
    if method.name in _REGISTRY and not replace:
        raise KDConfigError("method", method.name, f"a name not registered yet (taken: {', '.join(_REGISTRY)})")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Take a method out of the registry (and so out of the config's choices, the CLI and the plots)."""
    if name not in _REGISTRY:
        raise KDConfigError("method", name, f"one of {', '.join(_REGISTRY)}")
    return _REGISTRY.pop(name)


@contextmanager
def registered(method: Method) -> Iterator[Method]:
    """``method`` registered for the duration of a ``with`` block (a trial method, a test), then taken out."""
    register(method)
    try:
        yield method
    finally:
        _REGISTRY.pop(method.name, None)


def get_method(name: str) -> Method:
    """The registered method of this name (a one-line ``KDConfigError`` naming the choices otherwise)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise KDConfigError("method", name, f"one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in registration order (the study's default methods)."""
    return tuple(_REGISTRY)


def method_label(name: str) -> str:
    """A method's label for figures (an unregistered name stands for itself)."""
    method = _REGISTRY.get(name)
    return method.label if method is not None else name


def method_labels() -> dict[str, str]:
    """``{name: label}`` of every registered method."""
    return {name: method.label for name, method in _REGISTRY.items()}


# ------------------------------------------------------------------------------------- the study's methods


def _finetune(run: MethodRun) -> DistillOutcome:
    return run_finetune(
        run.student, run.x, run.y, run.cfg.distill, RunOptions(run.device, run.progress, run.on_epoch_end)
    )


def _finetune_val(run: MethodRun) -> DistillOutcome:
    """Reference: fine-tuning on the transfer data plus the labelled validation split (what those labels give on
    their own, without a teacher)."""
    x_val, y_val = run.validation()
    x, y = torch.cat([run.x, x_val]), torch.cat([run.y, y_val])
    return run_finetune(run.student, x, y, run.cfg.distill, RunOptions(run.device, run.progress, run.on_epoch_end))


def _standard(run: MethodRun) -> DistillOutcome:
    cfg = run.cfg
    return run_standard(
        run.student,
        run.x,
        run.y,
        TeacherSpec(run.teacher, cfg.temperature, cfg.alpha),
        cfg.distill,
        RunOptions(run.device, run.progress, run.on_epoch_end),
    )


def _tuned(run: MethodRun) -> DistillOutcome:
    """Tuned KD: the (T, alpha) choice is scored on the held-out split (``selection="holdout"``) or on a carve-out
    of the transfer data; the test accuracy of each grid point is stored for analysis only."""
    cfg, data = run.cfg, run.data

    def evaluate(model: nn.Module) -> dict:  # stored for analysis only; the choice uses the validation split
        return {"test_acc": run.test_accuracy(model)}

    held_out: dict[str, Any] = {}
    if cfg.selection == "holdout":
        val_idx = torch.as_tensor(run.scenario.validation, dtype=torch.long)
        held_out = {"x_val": data.x_train[val_idx], "y_val": data.y_train[val_idx]}
    problem = TuningProblem(
        lambda: copy.deepcopy(run.pristine), run.teacher, run.x, run.y, cfg.grid_temperatures, cfg.grid_alphas,
        cfg.distill, cfg.val_fraction, **held_out,
    )  # fmt: skip
    options = RunOptions(run.device, run.progress, run.on_epoch_end)
    return run_tuned(problem, run.student, options, evaluate=evaluate, search=cfg.tuning_search)


def _tuned_fields(cfg: StudyConfig) -> tuple[str, ...]:
    return ("val_fraction",) if cfg.selection == "transfer" else ()


def _dml(run: MethodRun) -> DistillOutcome:
    """Mutual learning trains the teacher too: its accuracy afterwards is stored beside the student's."""
    outcome = run_dml(
        [run.student, run.teacher],
        run.x,
        run.y,
        run.cfg.distill,
        run.cfg.dml_temperature,
        RunOptions(run.device, run.progress, run.on_epoch_end),
    )
    outcome.extra["teacher_acc_after"] = run.test_accuracy(run.teacher)
    return outcome


def _dp_at(run: MethodRun, temperature: float, alpha: float) -> DistillOutcome:
    teaching = PartitionTeacherSpec([run.teacher], temperature, alpha, run.cfg.dp_variant)
    options = RunOptions(run.device, run.progress, run.on_epoch_end)
    return run_dp(run.student, run.x, run.y, teaching, run.cfg.distill, options)


def _dp(run: MethodRun) -> DistillOutcome:
    """DP-KD at its reference setting (``dp_temperature``, ``dp_alpha``; by default T=1, alpha=1)."""
    return _dp_at(run, run.cfg.dp_temperature, run.cfg.dp_alpha)


def _dp_shared(run: MethodRun) -> DistillOutcome:
    """DP-KD at the study's shared T and alpha (those of standard KD)."""
    return _dp_at(run, run.cfg.temperature, run.cfg.alpha)


register(Method("finetune", "fine-tune (no teacher)", (), _finetune, role="baseline"))
register(Method("standard", "standard KD", ("temperature", "alpha"), _standard))
_TUNED_FIELDS = ("grid_temperatures", "grid_alphas", "selection", "tuning_search")
# Costs from the full-scale study on the CPU (figures/full/cpu_run): tuned 415-469 s, DML 160-190 s, standard 62-71 s.
register(Method("tuned", "tuned KD", _TUNED_FIELDS, _tuned, more_fields=_tuned_fields, cost=6.5, role="tuned"))
register(Method("dml", "mutual learning", ("dml_temperature",), _dml, cost=2.6))
register(Method("dp", "data-partitioning KD", ("dp_temperature", "dp_alpha", "dp_variant"), _dp))
register(Method("dp_shared", "DP-KD at shared T, α", ("temperature", "alpha", "dp_variant"), _dp_shared))
register(
    Method(
        "finetune_val", "fine-tune + validation labels (reference)", ("val_size",), _finetune_val, cost=1.1,
        role="reference", selects_epoch=False,
    )
)  # fmt: skip
