"""Typed, validated specs of a study run, and the three scales (a scale is a set of parameters, not a code path)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Self

from kdlib.core.losses import check_alpha, check_temperature
from kdlib.core.models import MODEL_NAMES, PUBLISHED_TEACHERS
from kdlib.core.train import TrainConfig
from kdlib.data.datasets import check_dataset_name
from kdlib.data.partition import parse_partition
from kdlib.errors import KDConfigError
from kdlib.tune.halving_schedule import SEARCHES
from kdlib.validation import is_int, is_real


def method_names() -> tuple[str, ...]:
    """The methods of the study, all on the same transfer data and budget: those of the registry
    (``kdlib.study.methods``), ``finetune`` (the no-teacher baseline) first. Also readable as ``config.METHODS``."""
    from kdlib.study.methods import method_names as registered  # here: the registry's run functions import the KD code

    return registered()


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # the registry as it is now: a method registered later is in it
        return method_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


STUDY_SCENARIOS: tuple[str, ...] = ("iid", "dirichlet:1.0", "dirichlet:0.5", "dirichlet:0.1", "disjoint")
TRANSFER_SETS: tuple[str, ...] = ("student", "union", "public")
SELECTIONS: tuple[str, ...] = ("holdout", "transfer")
"""Where tuned KD scores its (T, alpha) grid: the held-out validation split (``val_size`` samples of the training
pool with its label mix, default), or a ``val_fraction`` carved from the transfer data (the older criterion)."""
SCALES: tuple[str, ...] = ("smoke", "full", "paper")
EPOCH_SELECTIONS: tuple[str, ...] = ("validation", "last")
"""Which epoch's student a method returns: the one with the best accuracy on the held-out validation split (the
study's protocol: every method may use that split for this one purpose), or simply the last one."""
TUNING_SEARCHES: tuple[str, ...] = SEARCHES
"""How tuned KD searches its grid: successive halving over stacked rungs (default), or every point to the end."""
NULLABLE_FIELDS: tuple[str, ...] = ("n_train", "n_test")
"""The fields whose ``None`` means something (all samples); ``None`` for any other field is refused, not dropped."""
MAX_SEED = 2**32
"""Seeds are below this (numpy's limit); the seeds derived from them (parties, grid points) stay within torch's."""
MIN_VAL_FRACTION = 0.05


class ConfigBase:
    """What every study config shares (a frozen dataclass subclasses it): the common checks (scale, data sizes,
    seed), ``as_dict``, and ``replace``, which takes train configs as dicts of their fields and lists as
    comma-separated strings. A subclass names its ``TRAIN_FIELDS``, ``LIST_FIELDS`` and ``NUMBER_LIST_FIELDS``."""

    TRAIN_FIELDS: ClassVar[tuple[str, ...]] = ()
    LIST_FIELDS: ClassVar[tuple[str, ...]] = ()
    NUMBER_LIST_FIELDS: ClassVar[tuple[str, ...]] = ()
    """List fields of numbers: one number is a list of one (``--set grid_alphas=0.5``)."""

    def _check_common(self) -> None:
        """The scale is known, the data sizes are None (all) or at least 20, the seed is a valid numpy seed."""
        if self.scale not in SCALES:
            raise KDConfigError("scale", self.scale, f"one of {', '.join(SCALES)}")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 20):
                raise KDConfigError(name, value, "None (all) or an integer >= 20")
        if not is_int(self.seed) or not 0 <= self.seed < MAX_SEED:
            raise KDConfigError("seed", self.seed, f"an integer >= 0 and < 2**32 ({MAX_SEED})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (train configs may be given as dicts, lists as comma strings)."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                allowed = f"a field of {type(self).__name__}: {', '.join(sorted(known))}"
                raise KDConfigError(key, changes[key], allowed)
        for name in self.TRAIN_FIELDS:
            if isinstance(changes.get(name), dict):
                changes[name] = _train_config(name, getattr(self, name), changes[name])
        for key in self.LIST_FIELDS:
            if key in changes and isinstance(changes[key], str):
                changes[key] = tuple(s.strip() for s in changes[key].split(",") if s.strip())
            if key in self.NUMBER_LIST_FIELDS and type(changes.get(key)) in (int, float):
                changes[key] = (changes[key],)
            if key in changes:
                if not isinstance(changes[key], list | tuple):
                    raise KDConfigError(key, changes[key], "a list, or a comma-separated string, e.g. 'iid,disjoint'")
                changes[key] = tuple(changes[key])
        for key in self.NUMBER_LIST_FIELDS:
            if key in changes:
                try:
                    changes[key] = tuple(float(v) for v in changes[key])
                except (TypeError, ValueError):
                    raise KDConfigError(key, changes[key], "a list of numbers, e.g. '1,4,16'") from None
        return replace(self, **changes)


def _train_config(name: str, current: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """``current`` with ``changes`` (a dict of TrainConfig fields); a bad field is named ``<name>.<field>``."""
    train_fields = {f.name for f in fields(TrainConfig)}
    for key in changes:
        if key not in train_fields:
            raise KDConfigError(f"{name}.{key}", changes[key], f"one of {', '.join(sorted(train_fields))}")
    try:
        return TrainConfig(**{**asdict(current), **changes})
    except KDConfigError as err:
        raise KDConfigError(f"{name}.{err.field}", err.value, err.allowed) from None


@dataclass(frozen=True)
class StudyConfig(ConfigBase):
    """Everything that decides a study's numbers. Same config, same machine -> same numbers.

    Party 0 of each scenario is the teacher, party 1 the student. ``transfer`` picks the KD data: the student's
    own partition (default), the union of both parties' data, or a public split held out of the training set
    before partitioning (``public_fraction`` of it). ``val_size`` samples of the training set, with its label mix,
    are held out before that too: no party, transfer set or public split holds them. They are the task's validation
    split, open to every method for the same purpose: each method returns the student of its best epoch on them
    (``epoch_selection="validation"``), and tuned KD also chooses (T, alpha) there when ``selection`` is
    ``"holdout"``. DP-KD runs at its reference setting ``dp_temperature=1, dp_alpha=1`` (FantasticGains'
    ``kl_dp_dist.yaml``: pure KL to the routed target); ``dp_shared`` runs it at the study's shared T and alpha.
    ``seeds`` runs of each method use seed, seed + 1, ... (one stored record each).
    """

    TRAIN_FIELDS: ClassVar[tuple[str, ...]] = ("pretrain", "distill")
    LIST_FIELDS: ClassVar[tuple[str, ...]] = ("scenarios", "methods", "grid_temperatures", "grid_alphas")
    NUMBER_LIST_FIELDS: ClassVar[tuple[str, ...]] = ("grid_temperatures", "grid_alphas")

    scale: str = "smoke"
    dataset: str = "cifar10"
    n_train: int | None = 3000
    n_test: int | None = 2000
    seed: int = 0
    seeds: int = 1
    scenarios: tuple[str, ...] = STUDY_SCENARIOS
    methods: tuple[str, ...] = field(default_factory=method_names)
    teacher_model: str = "resnet8"
    student_model: str = "cnn-small"
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, batch_size=64, lr=0.05))
    distill: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, batch_size=64, lr=0.01))
    temperature: float = 4.0
    alpha: float = 0.5
    grid_temperatures: tuple[float, ...] = (1.0, 4.0, 16.0)
    grid_alphas: tuple[float, ...] = (0.25, 0.5, 0.9)
    val_fraction: float = 0.2
    val_size: int = 300
    selection: str = "holdout"
    tuning_search: str = "halving"
    transfer: str = "student"
    public_fraction: float = 0.2
    dp_variant: str = "supervised"
    dp_temperature: float = 1.0
    dp_alpha: float = 1.0
    dml_temperature: float = 1.0
    epoch_selection: str = "validation"
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per method, its own settings over the defaults its registry entry declares (``Method.settings``)."""

    def __post_init__(self) -> None:
        self._check_common()
        known = method_names()
        if not self.methods or any(m not in known for m in self.methods):
            raise KDConfigError("methods", self.methods, f"a non-empty list from {', '.join(known)}")
        if not self.scenarios:
            raise KDConfigError("scenarios", self.scenarios, "at least one partition scenario, e.g. 'iid'")
        from kdlib.study.methods import check_method_settings  # here: the registry imports the KD code

        object.__setattr__(self, "method_settings", check_method_settings(self.method_settings, self.methods))
        check_temperature(self.temperature)
        check_alpha(self.alpha)
        check_temperature(self.dml_temperature)
        check_temperature(self.dp_temperature)
        check_alpha(self.dp_alpha)
        if self.epoch_selection not in EPOCH_SELECTIONS:
            raise KDConfigError("epoch_selection", self.epoch_selection, f"one of {', '.join(EPOCH_SELECTIONS)}")
        if self.epoch_selection == "validation" and self.val_size == 0:
            allowed = "'last' when val_size is 0 (no validation split to choose the epoch on), or a positive val_size"
            raise KDConfigError("epoch_selection", self.epoch_selection, allowed)
        for t in self.grid_temperatures:
            check_temperature(t)
        for a in self.grid_alphas:
            check_alpha(a)
        self._check_types()
        if not self.grid_temperatures or not self.grid_alphas:
            raise KDConfigError("grid", (self.grid_temperatures, self.grid_alphas), "at least one T and one alpha")
        if not MIN_VAL_FRACTION <= self.val_fraction < 1.0:
            allowed = (
                f"a fraction in [{MIN_VAL_FRACTION}, 1): the validation split carved from the transfer data must hold "
                "enough samples to rank the grid (at least 5% of it)"
            )
            raise KDConfigError("val_fraction", self.val_fraction, allowed)
        if self.transfer not in TRANSFER_SETS:
            raise KDConfigError("transfer", self.transfer, f"one of {', '.join(TRANSFER_SETS)}")
        if not 0.0 < self.public_fraction < 1.0:
            raise KDConfigError("public_fraction", self.public_fraction, "a fraction strictly between 0 and 1")
        if self.dp_variant not in ("supervised", "unsupervised"):
            raise KDConfigError("dp_variant", self.dp_variant, "'supervised' or 'unsupervised'")
        if not is_int(self.seeds) or self.seeds < 1:
            raise KDConfigError("seeds", self.seeds, "an integer >= 1 (the number of seeds: seed, seed + 1, ...)")
        if not is_int(self.val_size) or self.val_size < 0:
            raise KDConfigError("val_size", self.val_size, "an integer >= 0 (held-out validation samples)")
        if self.selection not in SELECTIONS:
            raise KDConfigError("selection", self.selection, f"one of {', '.join(SELECTIONS)}")
        if self.tuning_search not in TUNING_SEARCHES:
            raise KDConfigError("tuning_search", self.tuning_search, f"one of {', '.join(TUNING_SEARCHES)}")
        if isinstance(self.n_train, int) and self.val_size >= self.n_train:
            raise KDConfigError("val_size", self.val_size, f"fewer than n_train ({self.n_train}) samples")
        if self.selection == "holdout" and self.val_fraction != StudyConfig.val_fraction:
            allowed = (
                f"the default ({StudyConfig.val_fraction}): it is used only with selection='transfer' (tuned KD then "
                "chooses on that share of the transfer data); under 'holdout' it chooses on the validation split"
            )
            raise KDConfigError("val_fraction", self.val_fraction, allowed)
        if self.selection == "holdout" and self.val_size == 0:
            raise KDConfigError("val_size", 0, "a positive count when selection is 'holdout' (or selection='transfer')")
        check_dataset_name(self.dataset)
        if self.teacher_model not in (*MODEL_NAMES, *PUBLISHED_TEACHERS):
            allowed = f"one of {', '.join(MODEL_NAMES)}, or a published checkpoint: {', '.join(PUBLISHED_TEACHERS)}"
            raise KDConfigError("teacher_model", self.teacher_model, allowed)
        if self.teacher_model in PUBLISHED_TEACHERS and self.dataset != "cifar10":
            allowed = "a model trained here: the published checkpoints know CIFAR-10 only (or --dataset cifar10)"
            raise KDConfigError("teacher_model", self.teacher_model, allowed)
        if self.student_model not in MODEL_NAMES:
            raise KDConfigError("student_model", self.student_model, f"one of {', '.join(MODEL_NAMES)}")
        for name in ("pretrain", "distill"):
            if not isinstance(getattr(self, name), TrainConfig):
                raise KDConfigError(name, getattr(self, name), "a TrainConfig or a dict of its fields")
        for text in self.scenarios:
            parse_partition(text)  # an unknown or malformed scenario fails here, naming ``partition``

    def _check_types(self) -> None:
        """Numbers are finite ints or floats (not strings, bools or None); names are strings; lists hold strings."""
        for name in (
            "temperature",
            "alpha",
            "dml_temperature",
            "dp_temperature",
            "dp_alpha",
            "val_fraction",
            "public_fraction",
        ):
            value = getattr(self, name)
            if not is_real(value, numpy=True):
                raise KDConfigError(name, value, "a finite number (an int or a float, not a string, bool or null)")
        for name in ("grid_temperatures", "grid_alphas"):
            for value in getattr(self, name):
                if not is_real(value, numpy=True):
                    raise KDConfigError(name, getattr(self, name), "a list of finite numbers, e.g. '1,4,16'")
        for name in ("scale", "dataset", "teacher_model", "student_model", "transfer", "dp_variant", "epoch_selection"):
            if not isinstance(getattr(self, name), str):
                raise KDConfigError(name, getattr(self, name), "a string (null is not allowed for this field)")
        for name in ("scenarios", "methods"):
            value = getattr(self, name)
            if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
                raise KDConfigError(name, value, "a list of names, or a comma-separated string, e.g. 'iid,disjoint'")


SCALE_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        # CPU, every notebook in a minute or two: what CI runs. Three scenarios (one of each kind of skew), two seeds
        # so that every number has an interval, small data and short training: the whole study fits the test suite.
        "study": dict(
            scenarios=("iid", "dirichlet:0.1", "disjoint"),
            n_train=2000,
            n_test=1000,
            pretrain={"epochs": 6},
            distill={"epochs": 3},
            seeds=2,
        ),
        # CPU: the FederatedConfig defaults on two scenarios, the two ends of the label skew, with 5 clients.
        "federated": {"scenarios": ("iid", "dirichlet:0.1"), "num_clients": 5},
    },
    "full": {
        # CPU, hours for the whole study on one core (the 5 x 5 tuned grid is half of it).
        "study": dict(
            n_train=20000,
            n_test=5000,
            teacher_model="resnet20",
            student_model="resnet8",
            pretrain={"epochs": 15, "lr": 0.05, "augment": True},
            distill={"epochs": 6, "lr": 0.01},
            grid_temperatures=(1.0, 2.0, 4.0, 8.0, 16.0),
            grid_alphas=(0.1, 0.25, 0.5, 0.75, 0.9),
            val_size=1000,
            seeds=10,
        ),
        # CPU, 20 clients.
        "federated": dict(
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
            seeds=5,
        ),
    },
    "paper": {
        # GPU, the paper's sizes: all of CIFAR-10.
        "study": dict(
            n_train=None,
            n_test=None,
            teacher_model="resnet56",
            student_model="resnet20",
            pretrain={"epochs": 60, "lr": 0.1, "batch_size": 128, "augment": True},
            distill={"epochs": 20, "lr": 0.01, "batch_size": 128},
            grid_temperatures=(1.0, 2.0, 4.0, 8.0, 16.0),
            grid_alphas=(0.1, 0.25, 0.5, 0.75, 0.9),
            val_size=2500,
            seeds=3,
        ),
        "federated": dict(
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
            seeds=3,
        ),
    },
}
"""The one scale table: per scale, the fields of the distillation study (``study``) and of the federated study
(``federated``) that depart from their configs' defaults."""


def scale_settings(scale: str, study: str = "study") -> dict[str, Any]:
    """The fields a scale sets for one study (``"study"`` or ``"federated"``), ``scale`` included."""
    if scale not in SCALE_SETTINGS:
        raise KDConfigError("scale", scale, f"one of {', '.join(SCALES)}")
    return {**SCALE_SETTINGS[scale][study], "scale": scale}


def scale_config(scale: str = "smoke", **overrides: Any) -> StudyConfig:
    """The study config of a named scale, with any field overridden (papermill / CLI parameters)."""
    settings = scale_settings(scale, "study")
    check_none_overrides(scale, overrides)
    return StudyConfig().replace(**settings).replace(**overrides)


def check_none_overrides(scale: str, overrides: dict[str, Any], extra_nullable: tuple[str, ...] = ()) -> None:
    """Refuse a None override (both studies' one rule): a field keeps its scale's value when left out, and None is
    allowed only where it means something (``NULLABLE_FIELDS``, plus a study's ``extra_nullable``)."""
    nullable = (*NULLABLE_FIELDS, *extra_nullable)
    for key, value in overrides.items():
        if value is None and key not in nullable:
            names = " and ".join([", ".join(nullable[:-1]), nullable[-1]])
            allowed = f"a value: null is allowed only for {names}; leave the field out to keep "
            raise KDConfigError(key, value, allowed + f"the {scale} scale's value")


def notebook_overrides(value: Any) -> dict[str, Any]:
    """A notebook's ``overrides`` parameter as a dict of fields: a mapping, or its YAML/JSON text (papermill's
    ``-p overrides '{n_train: 5000}'`` passes a string); anything else is a one-line ``KDConfigError``."""
    allowed = "a mapping of config fields, e.g. {n_train: 5000} (papermill: -y 'overrides: {n_train: 5000}')"
    if value is None:
        return {}
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value) if value.strip() else {}
        except yaml.YAMLError:
            raise KDConfigError("overrides", value, allowed) from None
        value = {} if value is None else value
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise KDConfigError("overrides", value, allowed)
    return dict(value)


def over_parameters(parameters: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A notebook's keyword arguments with its ``overrides`` on top: a field named in both is taken from
    ``overrides`` (Python would refuse it twice), with a warning where the notebook set it to another value (a
    parameter left at None means "the scale's value" and gives way silently)."""
    import warnings

    clash = sorted(k for k in overrides if parameters.get(k) is not None and parameters[k] != overrides[k])
    if clash:
        said = ", ".join(f"{k}={overrides[k]!r} (not {parameters[k]!r})" for k in clash)
        warnings.warn(f"overrides win over the notebook's parameters: {said}", stacklevel=3)
    return {**parameters, **overrides}


def own_overrides(overrides: dict[str, Any], own: type, other: type, study: str) -> dict[str, Any]:
    """The overrides meant for the config class ``own``: the fields of the other study's config (``other``) that
    ``own`` lacks are dropped with a warning naming ``study``, because ``kdlib reproduce`` and notebook 08 hand the
    same overrides to both studies; a name that neither config knows is kept, so that ``own`` still refuses it."""
    import warnings

    foreign = {f.name for f in fields(other)} - {f.name for f in fields(own)}
    dropped = sorted(k for k in overrides if k in foreign)
    if dropped:
        warnings.warn(f"not used by the {study} ({other.__name__} fields): {', '.join(dropped)}", stacklevel=3)
    return {k: v for k, v in overrides.items() if k not in foreign}


def scale_departures(cfg: StudyConfig) -> list[str]:
    """The fields in which ``cfg`` departs from its named scale, as ``"distill.epochs=4 (paper: 20)"`` (the choice
    of scenarios aside), so that a figure never passes off a shortened run as the scale it is named after."""
    base = scale_config(cfg.scale).as_dict()
    out = []
    for key, value in cfg.as_dict().items():
        if key in ("scenarios", "scale") or value == base[key]:
            continue
        if isinstance(value, dict):
            out += [f"{key}.{k}={v} ({cfg.scale}: {base[key][k]})" for k, v in value.items() if v != base[key][k]]
        else:
            shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
            was = ",".join(str(v) for v in base[key]) if isinstance(base[key], tuple) else base[key]
            out.append(f"{key}={shown} ({cfg.scale}: {was})")
    return out
