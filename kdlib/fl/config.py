"""The federated study's config: what decides its runs, the starts FedAvg is compared from, and its scales."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from kdlib.config import SCALES
from kdlib.errors import KDConfigError
from kdlib.losses import check_alpha, check_temperature
from kdlib.models import MODEL_NAMES
from kdlib.partition import parse_partition
from kdlib.train import TrainConfig
from kdlib.validation import is_int, is_real

KIND = "federated"
STARTS: tuple[str, ...] = ("random", "one_client", "kd_avg", "kd_dp")
START_LABELS: dict[str, str] = {
    "random": "random init",
    "one_client": "one client's model",
    "kd_avg": "KD: averaged soft targets",
    "kd_dp": "KD: most confident teacher",
}
FL_SCENARIOS: tuple[str, ...] = ("iid", "dirichlet:0.5", "dirichlet:0.1")
KD_STARTS: tuple[str, ...] = ("kd_avg", "kd_dp")




@dataclass(frozen=True)
class FederatedConfig:
    """Everything that decides the federated runs. Same config, same machine -> same numbers.

    ``target_accuracy`` (absolute, a fraction) sets the accuracy a run must reach. Left at None, the target of a
    scenario is ``target_relative`` x the best test accuracy that FedAvg from a random start reaches within
    ``rounds`` rounds: then the baseline reaches it by construction, so every reduction is measured against a
    finite number of rounds, at any scale or data set. The target is analysis, not part of a run's identity.
    """

    scale: str = "smoke"
    dataset: str = "cifar10"
    n_train: int | None = 2000
    n_test: int | None = 500
    seed: int = 0
    scenarios: tuple[str, ...] = FL_SCENARIOS
    starts: tuple[str, ...] = STARTS
    num_clients: int = 10
    public_fraction: float = 0.25
    model: str = "cnn-small"
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, batch_size=32, lr=0.05))
    local: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, batch_size=32, lr=0.05))
    rounds: int = 10
    fraction_fit: float = 1.0
    kd: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, batch_size=32, lr=0.05))
    temperature: float = 4.0
    kd_alpha: float = 1.0
    dp_variant: str = "supervised"
    target_accuracy: float | None = None
    target_relative: float = 0.95

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise KDConfigError("scale", self.scale, f"one of {', '.join(SCALES)}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise KDConfigError("dataset", self.dataset, "a data set name, e.g. 'cifar10' or 'digits'")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 20):
                raise KDConfigError(name, value, "None (all) or an integer >= 20")
        if not is_int(self.seed) or self.seed < 0:
            raise KDConfigError("seed", self.seed, "an integer >= 0")
        if not is_int(self.num_clients) or self.num_clients < 2:
            raise KDConfigError("num_clients", self.num_clients, "an integer >= 2")
        if not self.scenarios:
            raise KDConfigError("scenarios", self.scenarios, "at least one partition scenario, e.g. 'iid'")
        for text in self.scenarios:
            parse_partition(text, num_parties=self.num_clients)
        unknown = [s for s in self.starts if s not in STARTS]
        if unknown or "random" not in self.starts:
            raise KDConfigError("starts", self.starts, f"'random' (the baseline) and any of {', '.join(STARTS)}")
        if not is_real(self.public_fraction) or not 0.0 < self.public_fraction < 1.0:
            raise KDConfigError("public_fraction", self.public_fraction, "a fraction strictly between 0 and 1")
        if self.model not in MODEL_NAMES:
            raise KDConfigError("model", self.model, f"one of {', '.join(MODEL_NAMES)}")
        if not is_int(self.rounds) or self.rounds < 1:
            raise KDConfigError("rounds", self.rounds, "an integer >= 1")
        if not is_real(self.fraction_fit) or not 0.0 < self.fraction_fit <= 1.0:
            raise KDConfigError("fraction_fit", self.fraction_fit, "a fraction in (0, 1]")
        check_temperature(self.temperature)
        check_alpha(self.kd_alpha)
        if self.dp_variant not in ("supervised", "unsupervised"):
            raise KDConfigError("dp_variant", self.dp_variant, "'supervised' or 'unsupervised'")
        if self.target_accuracy is not None and (
            not is_real(self.target_accuracy) or not 0.0 < self.target_accuracy <= 1.0
        ):
            raise KDConfigError("target_accuracy", self.target_accuracy, "None (relative) or a fraction in (0, 1]")
        if not is_real(self.target_relative) or not 0.0 < self.target_relative <= 1.0:
            raise KDConfigError("target_relative", self.target_relative, "a fraction in (0, 1]")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> FederatedConfig:
        """A copy with some fields changed (train configs may be given as dicts, lists as comma strings)."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise KDConfigError(key, changes[key], f"a field of FederatedConfig: {', '.join(sorted(known))}")
        for name in ("pretrain", "local", "kd"):
            if isinstance(changes.get(name), dict):
                changes[name] = TrainConfig(**{**asdict(getattr(self, name)), **changes[name]})
        for key in ("scenarios", "starts"):
            if isinstance(changes.get(key), str):
                changes[key] = tuple(s.strip() for s in changes[key].split(",") if s.strip())
            if key in changes:
                changes[key] = tuple(changes[key])
        return replace(self, **changes)

    def target_rule(self) -> str:
        """The target in words, for captions and tables."""
        if self.target_accuracy is not None:
            return f"{100 * self.target_accuracy:.0f}% test accuracy"
        return f"{100 * self.target_relative:.0f}% of the best accuracy of FedAvg from random init"


_SCALE_SETTINGS: dict[str, dict[str, Any]] = {
    # CPU, the notebook in about three minutes.
    "smoke": {},
    # CPU, about an hour.
    "full": dict(
        n_train=20000,
        n_test=5000,
        scenarios=("iid", "dirichlet:1.0", "dirichlet:0.5", "dirichlet:0.1"),
        num_clients=20,
        public_fraction=0.1,
        model="resnet8",
        pretrain={"epochs": 15, "lr": 0.05, "augment": True},
        local={"epochs": 2, "lr": 0.05, "augment": True},
        rounds=40,
        fraction_fit=0.5,
        kd={"epochs": 20, "lr": 0.05, "augment": True},
    ),
    # GPU, the paper's sizes: all of CIFAR-10.
    "paper": dict(
        n_train=None,
        n_test=None,
        scenarios=("iid", "dirichlet:1.0", "dirichlet:0.5", "dirichlet:0.1"),
        num_clients=20,
        public_fraction=0.1,
        model="resnet20",
        pretrain={"epochs": 60, "lr": 0.1, "batch_size": 128, "augment": True},
        local={"epochs": 2, "lr": 0.05, "batch_size": 64, "augment": True},
        rounds=100,
        fraction_fit=0.5,
        kd={"epochs": 40, "lr": 0.05, "batch_size": 128, "augment": True},
    ),
}


def federated_scale_config(scale: str = "smoke", **overrides: Any) -> FederatedConfig:
    """The federated config of a named scale, with any field overridden (papermill / CLI parameters)."""
    if scale not in _SCALE_SETTINGS:
        raise KDConfigError("scale", scale, f"one of {', '.join(SCALES)}")
    settings = {**_SCALE_SETTINGS[scale], "scale": scale}
    overrides = {k: v for k, v in overrides.items() if v is not None or k in ("n_train", "n_test", "target_accuracy")}
    return FederatedConfig().replace(**settings).replace(**overrides)

