"""The start registry: the models FedAvg starts from, one entry each, like the method registry of the distillation
study (``kdlib.study.methods``). An entry holds the start's name (in configs, records and ``starts``), its label (in
figures), its role (``"baseline"``: the start every reduction is measured against; ``"pretrained"``; ``"kd"``: a
KD-consolidated start, judged against the paper's claim), the config fields that enter its run key, and its build
function ``build(study, scenario) -> Start``. ``register_start`` adds a start everywhere at once.

The built-in starts: ``random`` (the baseline), ``one_client`` (client 0's pre-trained model), ``kd_avg``
(multi-teacher KD with averaged soft targets on the public split) and ``kd_dp`` (data-partitioning KD there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from kdlib.core.distill import PartitionTeacherSpec, run_dp
from kdlib.core.losses import averaged_soft_targets, check_alpha, check_temperature, kd_loss
from kdlib.core.metrics import accuracy
from kdlib.core.train import RunOptions, TrainConfig, fit, predict_logits, resolve_device
from kdlib.errors import KDConfigError
from kdlib.fl.task import model_bytes

if TYPE_CHECKING:
    from kdlib.fl.study import FederatedStudy

__all__ = [
    "KDRecipe",
    "Start",
    "StartEntry",
    "distill_averaged",
    "get_start",
    "kd_start_names",
    "register_start",
    "start_label",
    "start_names",
    "unregister_start",
]


@dataclass(frozen=True)
class KDRecipe:
    """How a KD start is distilled: the temperature, the weight of the KD term against cross-entropy on the labels
    (1: the labels are not used), and the training."""

    temperature: float
    alpha: float
    train: TrainConfig


def distill_averaged(
    student: nn.Module,
    teachers: Sequence[nn.Module],
    public: tuple[torch.Tensor, torch.Tensor],
    recipe: KDRecipe,
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> list[dict]:
    """Multi-teacher KD on the ``public`` data ``(x, y)``: the student matches the mean of the teachers' softened
    outputs (Hinton's loss, ``losses.kd_loss``, with the averaged soft targets in place of one teacher's)."""
    x, y = public
    temperature, alpha = check_temperature(recipe.temperature), check_alpha(recipe.alpha)
    dev = resolve_device(device)
    targets = averaged_soft_targets([predict_logits(t, x, dev) for t in teachers], temperature).to(dev)
    # Hinton's loss softens teacher logits at T: T * log(p) softens back to p (softmax(log p) = p), so the averaged
    # soft targets enter ``kd_loss`` as they are
    target_logits = temperature * targets.log()

    def batch_loss(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return kd_loss(student(xb), target_logits[idx.to(dev)], yb, temperature, alpha)

    return fit([student], x, y, batch_loss, recipe.train, RunOptions(dev, progress, desc="KD (averaged)"))


@dataclass
class Start:
    """A starting model for FedAvg and what it cost to make (beyond the clients' own pre-training)."""

    name: str
    state: dict[str, torch.Tensor]
    test_acc: float
    wall_s: float = 0.0
    samples: int = 0
    epochs: int = 0
    bytes_up: int = 0
    extra: dict = field(default_factory=dict)




# ------------------------------------------------------------------------------------------------ the registry

START_ROLES: tuple[str, ...] = ("baseline", "pretrained", "kd")


@dataclass(frozen=True)
class StartEntry:
    """One start of the federated study: ``build(study, scenario)`` makes its model (and says what it cost);
    ``fields``: the config fields that decide it beyond the common ones (they enter its run key)."""

    name: str
    label: str
    role: str
    fields: tuple[str, ...]
    build: Callable[[FederatedStudy, str], Start]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise KDConfigError("start name", self.name, "an identifier, e.g. 'kd_avg'")
        if self.role not in START_ROLES:
            raise KDConfigError("start role", self.role, f"one of {', '.join(START_ROLES)}")


_REGISTRY: dict[str, StartEntry] = {}


def register_start(entry: StartEntry) -> StartEntry:
    """Add a start (a name already registered is refused: ``unregister_start`` it first)."""
    if entry.name in _REGISTRY:
        raise KDConfigError("start", entry.name, "a name not registered yet")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_start(name: str) -> None:
    """Take a start out again (a test's toy start, for instance); the built-in baseline stays."""
    if name == "random":
        raise KDConfigError("start", name, "a start other than the baseline 'random'")
    _REGISTRY.pop(name, None)


def get_start(name: str) -> StartEntry:
    """The registered start ``name``; an unknown name fails naming the registered ones."""
    if name not in _REGISTRY:
        raise KDConfigError("start", name, f"one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def start_names() -> tuple[str, ...]:
    """Every registered start, in registration order (the built-in four first)."""
    return tuple(_REGISTRY)


def kd_start_names() -> tuple[str, ...]:
    """The KD-consolidated starts: those judged against the paper's 60.6%."""
    return tuple(name for name, entry in _REGISTRY.items() if entry.role == "kd")


def start_label(name: str) -> str:
    """A start's label in figures (an unregistered name is shown as it is)."""
    return _REGISTRY[name].label if name in _REGISTRY else name


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _test_accuracy(study: FederatedStudy, model: nn.Module) -> float:
    data = study.dataset
    return accuracy(predict_logits(model, data.x_test, study.device), data.y_test)


def _random(study: FederatedStudy, scenario: str) -> Start:
    model = study.fresh_model()
    return Start("random", _cpu_state(model), _test_accuracy(study, model))


def _one_client(study: FederatedStudy, scenario: str) -> Start:
    model = study.client_models(scenario)[0][0]
    return Start("one_client", _cpu_state(model), _test_accuracy(study, model), bytes_up=model_bytes(model))


def _consolidated(name: str) -> Callable[[FederatedStudy, str], Start]:
    """The build function of a KD start: a fresh model distilled from every client's model on the public split."""

    def build(study: FederatedStudy, scenario: str) -> Start:
        c = study.cfg
        teachers = [m for m, _ in study.client_models(scenario)]
        x, y = study.public_data(scenario)
        student = study.fresh_model()
        started = time.perf_counter()
        extra: dict = {}
        if name == "kd_avg":
            recipe = KDRecipe(c.temperature, c.kd_alpha, c.kd)
            history = distill_averaged(student, teachers, (x, y), recipe, device=study.device, progress=study.progress)
        else:
            teaching = PartitionTeacherSpec(teachers, c.temperature, c.kd_alpha, c.dp_variant)
            outcome = run_dp(student, x, y, teaching, c.kd, RunOptions(study.device, study.progress))
            history, extra = outcome.history, {"routing": outcome.extra["routing"]}
        wall = time.perf_counter() - started
        extra["kd_history"] = history
        bytes_up = len(teachers) * model_bytes(student)
        return Start(name, _cpu_state(student), _test_accuracy(study, student), wall, len(x), c.kd.epochs, bytes_up,
                     extra)  # fmt: skip

    return build


_KD_FIELDS = ("pretrain", "kd", "temperature", "kd_alpha")
register_start(StartEntry("random", "random init", "baseline", (), _random))
register_start(StartEntry("one_client", "one client's model", "pretrained", ("pretrain",), _one_client))
register_start(StartEntry("kd_avg", "KD: averaged soft targets", "kd", _KD_FIELDS, _consolidated("kd_avg")))
register_start(StartEntry("kd_dp", "KD: most confident teacher", "kd", (*_KD_FIELDS, "dp_variant"),
                          _consolidated("kd_dp")))  # fmt: skip
