"""The federated study's config: what decides its runs, the starts FedAvg is compared from, and its scales."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from kdlib.core.losses import check_alpha, check_temperature
from kdlib.core.models import MODEL_NAMES
from kdlib.core.train import TrainConfig
from kdlib.data.partition import parse_partition
from kdlib.errors import KDConfigError
from kdlib.fl.starts import start_names
from kdlib.study.config import ConfigBase, check_none_overrides, scale_settings
from kdlib.validation import is_int, is_real

KIND = "federated"
FL_SCENARIOS: tuple[str, ...] = ("iid", "dirichlet:0.5", "dirichlet:0.1")


@dataclass(frozen=True)
class FederatedConfig(ConfigBase):
    """Everything that decides the federated runs. Same config, same machine -> same numbers.

    ``target_accuracy`` (absolute, a fraction) sets the accuracy a run must reach. Left at None, the target of a
    scenario is ``target_relative`` x the best test accuracy that FedAvg from a random start reaches within
    ``rounds`` rounds: then the baseline reaches it by construction, so every reduction is measured against a
    finite number of rounds, at any scale or data set. The target is analysis, not part of a run's identity.
    """

    TRAIN_FIELDS: ClassVar[tuple[str, ...]] = ("pretrain", "local", "kd")
    LIST_FIELDS: ClassVar[tuple[str, ...]] = ("scenarios", "starts")

    scale: str = "smoke"
    dataset: str = "cifar10"
    n_train: int | None = 2000
    n_test: int | None = 500
    seed: int = 0
    seeds: int = 1
    scenarios: tuple[str, ...] = FL_SCENARIOS
    starts: tuple[str, ...] = field(default_factory=start_names)
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
        self._check_common()
        if not isinstance(self.dataset, str) or not self.dataset:
            raise KDConfigError("dataset", self.dataset, "a data set name, e.g. 'cifar10' or 'digits'")
        if not is_int(self.num_clients) or self.num_clients < 2:
            raise KDConfigError("num_clients", self.num_clients, "an integer >= 2")
        if not self.scenarios:
            raise KDConfigError("scenarios", self.scenarios, "at least one partition scenario, e.g. 'iid'")
        for text in self.scenarios:
            parse_partition(text, num_parties=self.num_clients)
        if not is_int(self.seeds) or self.seeds < 1:
            raise KDConfigError("seeds", self.seeds, "an integer >= 1 (seed, seed + 1, ... each an independent run)")
        known = start_names()
        unknown = [s for s in self.starts if s not in known]
        if unknown or "random" not in self.starts:
            raise KDConfigError("starts", self.starts, f"'random' (the baseline) and any of {', '.join(known)}")
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

    def target_rule(self) -> str:
        """The target in words, for captions and tables."""
        if self.target_accuracy is not None:
            return f"{100 * self.target_accuracy:.0f}% test accuracy"
        return f"{100 * self.target_relative:.0f}% of the best accuracy of FedAvg from random init"


def federated_scale_config(scale: str = "smoke", **overrides: Any) -> FederatedConfig:
    """The federated config of a named scale (``config.SCALE_SETTINGS``), with any field overridden (papermill /
    CLI parameters). A None override is refused, as by the distillation study's ``scale_config``, except for the
    fields where None means something (``n_train``, ``n_test``: all samples; ``target_accuracy``: relative)."""
    settings = scale_settings(scale, "federated")
    check_none_overrides(scale, overrides, extra_nullable=("target_accuracy",))
    return FederatedConfig().replace(**settings).replace(**overrides)

