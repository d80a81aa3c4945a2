"""Federated learning on Flower: does a KD-consolidated starting model cut the rounds FedAvg needs?

The paper's second claim (Alballa et al., arXiv 2402.14922): distilling the pre-trained models of the clients into
one model and starting FedAvg from it needs far fewer communication rounds (60.6% fewer on average) than FedAvg
from a random initialisation. Here every scenario splits a data set among ``num_clients`` clients (after holding
out a stratified public split that no client gets); every client pre-trains a model on its own data; FedAvg then
runs from four starts with the same clients, data, client sampling and budgets:

- ``random``: a fresh model (the baseline every reduction is measured against);
- ``one_client``: client 0's pre-trained model;
- ``kd_avg``: the same fresh model distilled on the public split from all client models at once, towards the
  mean of their softened outputs (multi-teacher KD with averaged soft targets);
- ``kd_dp``: the same, but each public sample is distilled from one model only, chosen by data-partitioning KD
  (``kdlib.distill.run_dp``): the most confident client model on the sample's true class, where it beats the
  frozen initial student (the untrained student keeps a few samples: 1-11% at smoke scale; ``routing_*`` metrics).

Flower: the clients are a ``ClientApp`` and the server a ``ServerApp`` on Flower's message API (the same code
deploys across machines); the server runs ``flwr.serverapp.strategy.FedAvg`` (metered: bytes sent and received)
with centralised evaluation on the test set after every round. They run on Flower's Simulation Engine
(``flwr.simulation.run_simulation``), whose one backend in flwr 1.42 is Ray (``pip install "flwr[simulation]"``):
each simulated client runs in a Ray worker process and loads its own partition from the local data cache. All the
(scenario, start) runs of one call share one simulation, so Ray starts once. The whole ``state_dict`` travels and
is averaged, BatchNorm running statistics included (weighted by client data size, like the weights). Bytes
communicated per round = the array payloads sent down to the sampled clients plus those sent back up.

Rounds to target: the first round whose global test accuracy reaches the target (0 when the start already does).
The target is ``FederatedConfig.target_accuracy`` if set, else ``target_relative`` x the best accuracy of FedAvg from
random init within the budget (see ``FederatedConfig``). Seeded throughout (initialisations, client batches, client
sampling); replies are aggregated in client order, so numbers do not depend on which Ray worker finished first.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

from kdlib.checkpoints import load_checkpoint, save_checkpoint
from kdlib.config import SCALES, config_key
from kdlib.data import Dataset, load_dataset, stratified_subset
from kdlib.distill import run_dp
from kdlib.errors import KDConfigError
from kdlib.losses import averaged_soft_targets, check_alpha, check_temperature, distillation_term
from kdlib.metrics import accuracy
from kdlib.models import MODEL_NAMES, build_model
from kdlib.partition import parse_partition, partition_indices
from kdlib.paths import cache_dir as default_cache_dir
from kdlib.progress import tqdm
from kdlib.results import ResultsStore, run_key
from kdlib.train import TrainConfig, fit, predict_logits, resolve_device, seed_everything, train_supervised

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


# ------------------------------------------------------------------------------------------------ config


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
            if value is not None and (not _is_int(value) or value < 20):
                raise KDConfigError(name, value, "None (all) or an integer >= 20")
        if not _is_int(self.seed) or self.seed < 0:
            raise KDConfigError("seed", self.seed, "an integer >= 0")
        if not _is_int(self.num_clients) or self.num_clients < 2:
            raise KDConfigError("num_clients", self.num_clients, "an integer >= 2")
        if not self.scenarios:
            raise KDConfigError("scenarios", self.scenarios, "at least one partition scenario, e.g. 'iid'")
        for text in self.scenarios:
            parse_partition(text, num_parties=self.num_clients)
        unknown = [s for s in self.starts if s not in STARTS]
        if unknown or "random" not in self.starts:
            raise KDConfigError("starts", self.starts, f"'random' (the baseline) and any of {', '.join(STARTS)}")
        if not _is_number(self.public_fraction) or not 0.0 < self.public_fraction < 1.0:
            raise KDConfigError("public_fraction", self.public_fraction, "a fraction strictly between 0 and 1")
        if self.model not in MODEL_NAMES:
            raise KDConfigError("model", self.model, f"one of {', '.join(MODEL_NAMES)}")
        if not _is_int(self.rounds) or self.rounds < 1:
            raise KDConfigError("rounds", self.rounds, "an integer >= 1")
        if not _is_number(self.fraction_fit) or not 0.0 < self.fraction_fit <= 1.0:
            raise KDConfigError("fraction_fit", self.fraction_fit, "a fraction in (0, 1]")
        check_temperature(self.temperature)
        check_alpha(self.kd_alpha)
        if self.dp_variant not in ("supervised", "unsupervised"):
            raise KDConfigError("dp_variant", self.dp_variant, "'supervised' or 'unsupervised'")
        if self.target_accuracy is not None and (
            not _is_number(self.target_accuracy) or not 0.0 < self.target_accuracy <= 1.0
        ):
            raise KDConfigError("target_accuracy", self.target_accuracy, "None (relative) or a fraction in (0, 1]")
        if not _is_number(self.target_relative) or not 0.0 < self.target_relative <= 1.0:
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


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


# -------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSpec:
    """What a client needs to load its own partition: small, JSON-able, sent in every training message."""

    dataset: str
    n_train: int | None
    n_test: int | None
    seed: int
    scenario: str
    num_clients: int
    public_fraction: float
    data_root: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DataSpec:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ClientSplit:
    """Index arrays into ``x_train``: one per client, and the public split held out before partitioning."""

    parts: tuple[np.ndarray, ...]
    public: np.ndarray


def split_clients(
    labels: np.ndarray, scenario: str, num_clients: int, public_fraction: float, seed: int, num_classes: int
) -> ClientSplit:
    """Hold out a stratified public split, then partition the rest among the clients as ``scenario`` says."""
    public = stratified_subset(labels, max(num_classes, round(len(labels) * public_fraction)), seed)
    private = np.setdiff1d(np.arange(len(labels)), public)
    spec = parse_partition(scenario, num_parties=num_clients)
    local = partition_indices(labels[private], spec, seed=seed, num_classes=num_classes)
    return ClientSplit(tuple(np.sort(private[p]) for p in local), public)


@functools.lru_cache(maxsize=2)
def _cached_dataset(name: str, root: str | None, n_train: int | None, n_test: int | None, seed: int) -> Dataset:
    return load_dataset(name, root, n_train=n_train, n_test=n_test, seed=seed, progress=False)


@functools.lru_cache(maxsize=8)
def _cached_split(spec: DataSpec) -> ClientSplit:
    data = _cached_dataset(spec.dataset, spec.data_root, spec.n_train, spec.n_test, spec.seed)
    labels = data.y_train.numpy()
    return split_clients(labels, spec.scenario, spec.num_clients, spec.public_fraction, spec.seed, data.num_classes)


def client_data(spec: DataSpec, client: int) -> tuple[torch.Tensor, torch.Tensor, Dataset]:
    """``(x, y, dataset)`` of one client, loaded from the local data cache (once per process)."""
    data = _cached_dataset(spec.dataset, spec.data_root, spec.n_train, spec.n_test, spec.seed)
    idx = torch.as_tensor(_cached_split(spec).parts[client])
    return data.x_train[idx], data.y_train[idx], data


# ----------------------------------------------------------------------------------------- Flower client


client_app = ClientApp()
"""The federated client: trains the global model on its own partition (``train``) and says who it is (``query``)."""


def _partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


@client_app.query()
def _client_query(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"info": ConfigRecord({"partition-id": _partition_id(context)})}), reply_to=msg)


@client_app.train()
def _client_train(msg: Message, context: Context) -> Message:
    """Local training: load the global weights, train ``local`` epochs on own data, send the weights back."""
    client = _partition_id(context)
    config = msg.content["config"]
    spec = DataSpec.from_json(str(config["data-spec"]))
    x, y, data = client_data(spec, client)
    torch.set_num_threads(int(config["threads"]))
    model = build_model(str(config["model"]), data.num_classes, data.in_shape)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    server_round = int(config["server-round"])
    seed = int(config["seed"]) * 1_000_003 + server_round * 1_000 + client
    cfg = TrainConfig(**{**json.loads(str(config["local"])), "seed": seed})
    history = train_supervised(model, x, y, cfg, str(config["device"]), progress=False)
    reply = RecordDict(
        {
            "arrays": ArrayRecord(model.cpu().state_dict()),
            "metrics": MetricRecord({"train-loss": float(history[-1]["loss"]), "num-examples": len(x)}),
            "info": ConfigRecord({"partition-id": client}),
        }
    )
    return Message(reply, reply_to=msg)


# ----------------------------------------------------------------------------------------- Flower server


def sample_clients(num_clients: int, fraction: float, seed: int, server_round: int) -> list[int]:
    """The clients (partition ids) of one round: seeded, the same for every start of a scenario."""
    k = max(1, min(num_clients, round(num_clients * fraction)))
    if k == num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng([seed, server_round])
    return sorted(int(c) for c in rng.choice(num_clients, size=k, replace=False))


class MeteredFedAvg(FedAvg):
    """Flower's FedAvg with seeded client sampling by partition id, replies aggregated in partition order (so
    the float sums do not depend on arrival order), failed clients raised instead of skipped, and the bytes of
    the arrays sent down and received up counted per round."""

    def __init__(self, nodes: dict[int, int], fraction_fit: float, seed: int) -> None:
        super().__init__(fraction_train=fraction_fit, fraction_evaluate=0.0, min_available_nodes=len(nodes))
        self.nodes = nodes
        self.seed = seed
        self.bytes_down: dict[int, int] = {}
        self.bytes_up: dict[int, int] = {}
        self.train_loss: dict[int, float] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        chosen = sample_clients(len(self.nodes), self.fraction_train, self.seed, server_round)
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        self.bytes_down[server_round] = arrays.count_bytes() * len(chosen)
        return [Message(record, dst_node_id=self.nodes[c], message_type=MessageType.TRAIN) for c in chosen]

    def aggregate_train(self, server_round: int, replies: Any) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        failed = [m for m in replies if m.has_error()]
        if failed:
            raise RuntimeError(f"{len(failed)} client(s) failed in round {server_round}: {failed[0].error.reason}")
        replies.sort(key=lambda m: int(m.content["info"]["partition-id"]))
        self.bytes_up[server_round] = sum(m.content[self.arrayrecord_key].count_bytes() for m in replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if metrics is not None:
            self.train_loss[server_round] = float(metrics["train-loss"])
        return arrays, metrics


def aggregate_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict:
    """FedAvg's weighted mean of ``state_dict``s, by the function Flower's ``FedAvg.aggregate_train`` applies to
    the clients' replies (``aggregate_arrayrecords``): exactly what the server does each round."""
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    if not states:
        raise KDConfigError("states", 0, "at least one state_dict to aggregate")
    replies = [
        RecordDict({"arrays": ArrayRecord(dict(s)), "metrics": MetricRecord({"num-examples": float(w)})})
        for s, w in zip(states, weights, strict=True)
    ]
    return dict(aggregate_arrayrecords(replies, "num-examples").to_torch_state_dict())


@dataclass
class FLJob:
    """One FedAvg run: a scenario, a named start and its initial weights."""

    scenario: str
    start: str
    initial: dict[str, torch.Tensor]
    spec: DataSpec


@dataclass
class FLRun:
    """What one FedAvg run returns: per-round curve (round 0 = the start) and its wall time."""

    curve: list[dict]
    wall_s: float


def _discover_clients(grid: Grid, num_clients: int, timeout_s: float = 120.0) -> dict[int, int]:
    """Ask every node for its partition id: ``{partition id: node id}``."""
    deadline = time.monotonic() + timeout_s
    while len(list(grid.get_node_ids())) < num_clients:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(grid.get_node_ids()))} of {num_clients} clients came up")
        time.sleep(0.05)
    ask = [
        Message(RecordDict({"ask": ConfigRecord({"what": "partition-id"})}), dst_node_id=n, message_type="query")
        for n in grid.get_node_ids()
    ]
    replies = list(grid.send_and_receive(ask, timeout=timeout_s))
    failed = [m for m in replies if m.has_error()]
    if failed or len(replies) != num_clients:
        reason = failed[0].error.reason if failed else f"{len(replies)} replies"
        raise RuntimeError(f"client discovery failed: {reason}")
    return {int(m.content["info"]["partition-id"]): m.metadata.src_node_id for m in replies}


def _evaluator(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> Callable:
    """Centralised evaluation on the test set: ``evaluate_fn(round, arrays) -> MetricRecord``."""

    def evaluate(_server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        logits = predict_logits(model, x, device)
        loss = float(F.cross_entropy(logits, y))
        return MetricRecord({"accuracy": accuracy(logits, y), "loss": loss})

    return evaluate


def run_fedavg(
    grid: Grid,
    nodes: dict[int, int],
    job: FLJob,
    cfg: FederatedConfig,
    evaluate: Callable,
    device: str,
    threads: int,
) -> FLRun:
    """FedAvg from ``job.initial`` for ``cfg.rounds`` rounds on the connected clients; one row per round."""
    started = time.perf_counter()
    strategy = MeteredFedAvg(nodes, cfg.fraction_fit, cfg.seed)
    train_config = ConfigRecord(
        {
            "data-spec": job.spec.to_json(),
            "model": cfg.model,
            "local": json.dumps(cfg.local.as_dict()),
            "seed": cfg.seed,
            "device": device,
            "threads": threads,
        }
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(job.initial),
        num_rounds=cfg.rounds,
        train_config=train_config,
        evaluate_fn=evaluate,
    )
    curve = []
    for server_round, record in sorted(result.evaluate_metrics_serverapp.items()):
        curve.append(
            {
                "round": int(server_round),
                "accuracy": float(record["accuracy"]),
                "loss": float(record["loss"]),
                "bytes_down": strategy.bytes_down.get(server_round, 0),
                "bytes_up": strategy.bytes_up.get(server_round, 0),
                "train_loss": strategy.train_loss.get(server_round),
            }
        )
    return FLRun(curve, time.perf_counter() - started)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads for the duration (None: unchanged). One thread per process avoids
    oversubscribing the CPU while Ray's workers (one CPU each) train the clients."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def quiet_flower(level: int = logging.ERROR) -> Iterator[None]:
    """Raise the level of Flower's logger for the duration (it logs every round at INFO)."""
    logger = logging.getLogger("flwr")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def simulate(
    jobs: Sequence[FLJob],
    cfg: FederatedConfig,
    evaluate_data: tuple[torch.Tensor, torch.Tensor, nn.Module],
    on_done: Callable[[FLJob, FLRun], None],
    device: str = "auto",
    num_cpus: int | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> None:
    """Run the jobs in order in one Flower simulation (Ray backend, ``num_cpus`` worker slots, one CPU each).

    ``on_done(job, run)`` is called after each job (e.g. to store it). Ray is started here (quiet, bounded:
    ``num_cpus``, a 200 MB object store, no dashboard, no runtime environment to build) and shut down by Flower at
    the end, also on errors; this function waits until Ray's worker processes have exited before it returns.
    """
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ImportError('Flower\'s Simulation Engine needs Ray: pip install "flwr[simulation]"')
    import ray
    from flwr.simulation import run_simulation

    dev = resolve_device(device)
    cpus = max(1, num_cpus or os.cpu_count() or 1)
    x_test, y_test, model = evaluate_data
    evaluate = _evaluator(model, x_test, y_test, str(dev))
    client_resources: dict[str, float] = {"num_cpus": 1, "num_gpus": 0.0}
    if dev.type == "cuda":  # the clients share the GPU
        client_resources["num_gpus"] = 1.0 / cpus
    server_app = ServerApp()
    bar = tqdm(total=len(jobs), desc="FedAvg runs", disable=not progress)
    errors: list[BaseException] = []
    helpers: set[int] = set()

    @server_app.main()
    def _main(grid: Grid, _context: Context) -> None:
        try:
            nodes = _discover_clients(grid, cfg.num_clients)
            for job in jobs:
                bar.set_postfix_str(f"{job.scenario} / {job.start}")
                on_done(job, run_fedavg(grid, nodes, job, cfg, evaluate, str(dev), 1))
                bar.update(1)
        except BaseException as error:  # re-raised in the caller's thread below
            errors.append(error)
            raise
        finally:
            helpers.update(_descendants(os.getpid()))

    if ray.is_initialized():
        raise RuntimeError("Ray is already running in this process; shut it down (ray.shutdown()) first")
    try:
        with quiet_flower(logging.INFO if verbose else logging.ERROR), _ray_env():
            ray.init(
                num_cpus=cpus,
                num_gpus=1 if dev.type == "cuda" else 0,
                object_store_memory=200 * 1024**2,
                include_dashboard=False,
                logging_level="info" if verbose else "error",
                log_to_driver=verbose,
            )
            backend_config = {"client_resources": client_resources}
            run_simulation(server_app, client_app, cfg.num_clients, backend_config=backend_config)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        bar.close()
        _wait_for_exit(helpers)
    if errors:
        raise errors[0]


@contextmanager
def _ray_env() -> Iterator[None]:
    """Environment for Ray's processes: the project importable, quiet start-up; restored afterwards."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    changes = {
        "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    old = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _descendants(pid: int) -> set[int]:
    """Process ids below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(entry.parent.name)] = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _wait_for_exit(pids: set[int], timeout_s: float = 30.0) -> None:
    """Wait until the processes ``pids`` are gone (Ray's workers exit a moment after ``ray.shutdown``)."""
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)}
        if pids:
            time.sleep(0.1)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# -------------------------------------------------------------------------------------------------- starts


def distill_averaged(
    student: nn.Module,
    teachers: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    temperature: float,
    alpha: float,
    cfg: TrainConfig,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> list[dict]:
    """Multi-teacher KD: the student matches the mean of the teachers' softened outputs (``alpha`` weights the
    KD term against cross-entropy on ``y``; alpha = 1 ignores the labels)."""
    temperature, alpha = check_temperature(temperature), check_alpha(alpha)
    dev = resolve_device(device)
    targets = averaged_soft_targets([predict_logits(t, x, dev) for t in teachers], temperature).to(dev)

    def batch_loss(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        logits = student(xb)
        soft = distillation_term(logits, targets[idx.to(dev)], temperature)
        return soft if alpha == 1.0 else alpha * soft + (1 - alpha) * F.cross_entropy(logits, yb)

    return fit([student], x, y, batch_loss, cfg, dev, "KD (averaged)", progress)


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


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's ``state_dict`` as Flower sends it (array payloads and key names)."""
    return ArrayRecord(model.state_dict()).count_bytes()


# ---------------------------------------------------------------------------------------------- analysis


def rounds_to_target(accuracies: Sequence[float], target: float, initial: float | None = None) -> int | None:
    """The first round (1-based; ``accuracies[i]`` is the accuracy after round i + 1) whose accuracy is at least
    ``target``; 0 if the ``initial`` (round-0) accuracy already is; None if it is never reached."""
    if initial is not None and initial >= target:
        return 0
    for number, value in enumerate(accuracies, start=1):
        if value >= target:
            return number
    return None


def round_reduction(rounds_method: int | None, rounds_scratch: int | None) -> float | None:
    """``1 - rounds_method / rounds_scratch``; None when either never reached the target (no honest number)."""
    if rounds_method is None or rounds_scratch is None or rounds_scratch == 0:
        return None
    return 1.0 - rounds_method / rounds_scratch


def scenario_target(cfg_target: float | None, relative: float, scratch_curve: Sequence[float]) -> float:
    """The accuracy target of a scenario: absolute if given, else ``relative`` x the best from-scratch accuracy."""
    if cfg_target is not None:
        return float(cfg_target)
    if not scratch_curve:
        raise ValueError("a relative target needs the curve of FedAvg from a random start")
    return relative * max(scratch_curve)


def _status(rounds: int | None, base: int | None, total: int, start: str) -> str:
    """The outcome in words; where only the baseline missed the target, the reduction's lower bound (the
    baseline would need at least ``total + 1`` rounds)."""
    if rounds is None:
        return f"not reached within {total} rounds"
    if base is None and start != "random":
        return f"reached at round {rounds}; random init not within {total} (> {100 * (1 - rounds / (total + 1)):.0f}%)"
    return f"reached at round {rounds}"


def target_metrics(curve: Sequence[dict], scratch: Sequence[float], start_bytes: float, cfg: FederatedConfig) -> dict:
    """The target of a run's scenario, its rounds to reach it, and the megabytes sent until then (the start's
    one-off upload included); NaN / None where it cannot be computed or was not reached."""
    accs = [row["accuracy"] for row in curve if row["round"] > 0]
    if cfg.target_accuracy is None and not scratch:
        return {
            "target_accuracy": np.nan,
            "target_rule": cfg.target_rule(),
            "rounds_to_target": None,
            "reached": False,
            "mb_to_target": None,
        }
    target = scenario_target(cfg.target_accuracy, cfg.target_relative, scratch)
    rounds = rounds_to_target(accs, target, curve[0]["accuracy"])
    sent = sum(row["bytes_down"] + row["bytes_up"] for row in curve[: (rounds or 0) + 1])
    return {
        "target_accuracy": target,
        "target_rule": cfg.target_rule(),
        "rounds_to_target": rounds,
        "reached": rounds is not None,
        "mb_to_target": None if rounds is None else (sent + start_bytes) / 1024**2,
    }


SUMMARY_COLUMNS: tuple[str, ...] = (
    "scenario",
    "start",
    "rounds_to_target",
    "rounds_random",
    "reduction_pct",
    "status",
    "rounds",
    "target_acc",
    "initial_acc",
    "final_acc",
    "mb_to_target",
    "kd_wall_s",
    "kd_sample_epochs",
    "start_mb",
    "fl_wall_s",
    "scale",
    "dataset",
    "group",
)


def round_reduction_summary(
    store_or_frame: ResultsStore | pd.DataFrame,
    scale: str | None = None,
    dataset: str | None = None,
    kind: str = KIND,
) -> pd.DataFrame:
    """Rounds to target per scenario and start, and the reduction against FedAvg from a random start.

    Takes a results store (or its ``frame("federated")``), optionally only the runs of one ``scale`` / ``dataset``.
    Runs are compared only within their config without the start (``group`` column), so different scales or seeds
    are never mixed; the latest record of a run counts. ``reduction_pct`` is ``100 * (1 - rounds / rounds_random)``,
    NaN where a start (or the baseline) never reached the target; ``status`` says so in words. No runs: an empty
    frame with the same columns.
    """
    frame = store_or_frame.frame(kind) if isinstance(store_or_frame, ResultsStore) else store_or_frame
    if not frame.empty and "kind" in frame:
        frame = frame[frame["kind"] == kind]
    for column, value in (("scale", scale), ("dataset", dataset)):
        if value is not None and not frame.empty:
            frame = frame[frame[column] == value]
    if frame.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    frame = frame.drop_duplicates("key", keep="last")
    rows = []
    for _, row in frame.iterrows():
        scratch = frame[(frame["group"] == row["group"]) & (frame["start"] == "random")]
        rounds = _as_rounds(row["rounds_to_target"])
        base = _as_rounds(scratch["rounds_to_target"].iloc[-1]) if len(scratch) else None
        reduction = round_reduction(rounds, base)
        rows.append(
            {
                "scenario": row["scenario"],
                "start": row["start"],
                "rounds_to_target": rounds,
                "rounds_random": base,
                "reduction_pct": np.nan if reduction is None else 100 * reduction,
                "status": _status(rounds, base, int(row["rounds"]), row["start"]),
                "rounds": int(row["rounds"]),
                "target_acc": row["target_accuracy"],
                "initial_acc": row["initial_acc"],
                "final_acc": row["final_acc"],
                "mb_to_target": row.get("mb_to_target"),
                "kd_wall_s": row.get("kd_wall_s"),
                "kd_sample_epochs": row.get("kd_sample_epochs"),
                "start_mb": row.get("start_mb"),
                "fl_wall_s": row.get("fl_wall_s"),
                "scale": row["scale"],
                "dataset": row["dataset"],
                "group": row["group"],
            }
        )
    out = pd.DataFrame(rows)
    out["rounds_to_target"] = out["rounds_to_target"].astype("Int64")
    out["rounds_random"] = out["rounds_random"].astype("Int64")
    order = {s: i for i, s in enumerate(STARTS)}
    groups = {g: i for i, g in enumerate(dict.fromkeys(out["group"]))}
    out["_order"] = out["group"].map(groups) * len(order) + out["start"].map(order)
    return out.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def _as_rounds(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return int(value)


def compare_with_paper(summary: pd.DataFrame, starts: Sequence[str] = KD_STARTS) -> pd.DataFrame:
    """Mean round reduction (%) of each KD start over the scenarios where it and the baseline reached the target,
    beside the paper's 60.6%; ``not reached`` counts the scenarios left out (the start or the baseline missed the
    target within the budget: see ``status`` in the summary)."""
    from kdlib.findings import PAPER_FL_ROUND_REDUCTION

    rows = []
    for start in starts:
        part = summary[summary["start"] == start] if "start" in summary else summary.iloc[:0]
        if part.empty:
            continue
        reached = part["reduction_pct"].dropna()
        rows.append(
            {
                "start": start,
                "ours (%)": reached.mean() if len(reached) else np.nan,
                "paper (%)": PAPER_FL_ROUND_REDUCTION,
                "scenarios": len(part),
                "not reached": int(part["reduction_pct"].isna().sum()),
                "scale": ", ".join(sorted(part["scale"].unique())),
            }
        )
    return pd.DataFrame(rows).set_index("start") if rows else pd.DataFrame()


# ---------------------------------------------------------------------------------------------- the study

COMMON_FIELDS = (
    "scale",
    "dataset",
    "n_train",
    "n_test",
    "seed",
    "num_clients",
    "public_fraction",
    "model",
    "local",
    "rounds",
    "fraction_fit",
)
START_FIELDS: dict[str, tuple[str, ...]] = {
    "random": (),
    "one_client": ("pretrain",),
    "kd_avg": ("pretrain", "kd", "temperature", "kd_alpha"),
    "kd_dp": ("pretrain", "kd", "temperature", "kd_alpha", "dp_variant"),
}


def run_config(cfg: FederatedConfig, scenario: str, start: str) -> dict:
    """The fields that decide one (scenario, start) FedAvg run: its identity in the results store."""
    if start not in START_FIELDS:
        raise KDConfigError("start", start, f"one of {', '.join(STARTS)}")
    full = cfg.as_dict()
    return {"scenario": scenario, "start": start, **{k: full[k] for k in COMMON_FIELDS + START_FIELDS[start]}}


def group_key(cfg: FederatedConfig, scenario: str) -> str:
    """Identity of a scenario's runs without the start: what a reduction compares within."""
    full = cfg.as_dict()
    return config_key({"scenario": scenario, **{k: full[k] for k in COMMON_FIELDS}})


@dataclass
class FederatedStudy:
    """A federated config bound to its data, results store, checkpoint cache and device."""

    cfg: FederatedConfig
    store: ResultsStore
    device: str = "auto"
    progress: bool = True
    data_root: str | None = None
    cache_dir: str | Path | None = None
    num_cpus: int | None = None
    threads: int | None = 1
    _splits: dict[str, ClientSplit] = field(default_factory=dict)
    _clients: dict[str, list[tuple[nn.Module, dict]]] = field(default_factory=dict)

    @functools.cached_property
    def dataset(self) -> Dataset:
        return _cached_dataset(self.cfg.dataset, self.data_root, self.cfg.n_train, self.cfg.n_test, self.cfg.seed)

    def spec(self, scenario: str) -> DataSpec:
        c = self.cfg
        return DataSpec(
            c.dataset, c.n_train, c.n_test, c.seed, scenario, c.num_clients, c.public_fraction, self.data_root
        )

    def split(self, scenario: str) -> ClientSplit:
        if scenario not in self._splits:
            self._splits[scenario] = _cached_split(self.spec(scenario))
        return self._splits[scenario]

    def fresh_model(self) -> nn.Module:
        """The random initialisation every start begins from (the KD students too): seeded by the config."""
        seed_everything(self.cfg.seed)
        return build_model(self.cfg.model, self.dataset.num_classes, self.dataset.in_shape)

    def client_models(self, scenario: str) -> list[tuple[nn.Module, dict]]:
        """Every client's model pre-trained on its own data (checkpoint cache, else trained and saved)."""
        if scenario not in self._clients:
            with torch_threads(self.threads):
                self._clients[scenario] = [self._pretrained(scenario, c) for c in range(self.cfg.num_clients)]
        return self._clients[scenario]

    def _pretrained(self, scenario: str, client: int) -> tuple[nn.Module, dict]:
        c = self.cfg
        settings = {
            **{k: v for k, v in asdict(self.spec(scenario)).items() if k != "data_root"},
            "client": client,
            "model": c.model,
            "pretrain": c.pretrain.as_dict(),
        }
        path = Path(self.cache_dir or default_cache_dir()) / "federated" / f"{config_key(settings)}.safetensors"
        seed_everything(c.seed * 1000 + client)
        model = build_model(c.model, self.dataset.num_classes, self.dataset.in_shape)
        if path.exists():
            return model, load_checkpoint(model, path)
        idx = torch.as_tensor(self.split(scenario).parts[client])
        data = self.dataset
        train_cfg = TrainConfig(**{**c.pretrain.as_dict(), "seed": c.seed * 1000 + client})
        started = time.perf_counter()
        train_supervised(model, data.x_train[idx], data.y_train[idx], train_cfg, self.device, progress=False)
        meta = {
            "config": settings,
            "test_acc": accuracy(predict_logits(model, data.x_test, self.device), data.y_test),
            "train_size": len(idx),
            "wall_s": round(time.perf_counter() - started, 3),
        }
        save_checkpoint(model.cpu(), path, meta)
        return model, meta

    def public_data(self, scenario: str) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(self.split(scenario).public)
        return self.dataset.x_train[idx], self.dataset.y_train[idx]

    def make_start(self, scenario: str, name: str) -> Start:
        """The starting model ``name`` of a scenario and its cost (the KD phase for the KD starts)."""
        data, dev = self.dataset, self.device
        if name == "random":
            model = self.fresh_model()
            return Start(name, _cpu_state(model), accuracy(predict_logits(model, data.x_test, dev), data.y_test))
        clients = self.client_models(scenario)
        if name == "one_client":
            model = clients[0][0]
            acc = accuracy(predict_logits(model, data.x_test, dev), data.y_test)
            return Start(name, _cpu_state(model), acc, bytes_up=model_bytes(model))
        if name not in KD_STARTS:
            raise KDConfigError("start", name, f"one of {', '.join(STARTS)}")
        return self._consolidate(scenario, name, [m for m, _ in clients])

    def _consolidate(self, scenario: str, name: str, teachers: list[nn.Module]) -> Start:
        c, data, dev = self.cfg, self.dataset, self.device
        x, y = self.public_data(scenario)
        student = self.fresh_model()
        started = time.perf_counter()
        extra: dict = {}
        if name == "kd_avg":
            history = distill_averaged(student, teachers, x, y, c.temperature, c.kd_alpha, c.kd, dev, self.progress)
        else:
            outcome = run_dp(student, teachers, x, y, c.temperature, c.kd_alpha, c.kd, c.dp_variant, dev, self.progress)
            history, extra = outcome.history, {"routing": outcome.extra["routing"]}
        wall = time.perf_counter() - started
        acc = accuracy(predict_logits(student, data.x_test, dev), data.y_test)
        extra["kd_history"] = history
        return Start(
            name, _cpu_state(student), acc, wall, len(x), c.kd.epochs, len(teachers) * model_bytes(student), extra
        )

    # ------------------------------------------------------------------------------------------- running

    def pending(self, force: bool = False) -> list[tuple[str, str]]:
        """The (scenario, start) runs of the config not in the store yet (all of them with ``force``)."""
        jobs = [(s, n) for s in self.cfg.scenarios for n in self.cfg.starts]
        if force:
            return jobs
        stored = self.store.keys()
        return [(s, n) for s, n in jobs if run_key(KIND, run_config(self.cfg, s, n)) not in stored]

    def run_all(self, force: bool = False, verbose: bool = False) -> pd.DataFrame:
        """Run every missing (scenario, start) (all with ``force``) in one Flower simulation; return the summary.

        Random starts run first in each scenario: a relative target needs their curve.
        """
        todo = self.pending(force)
        with torch_threads(self.threads):
            self._run(todo, verbose)
        return self.summary()

    def _run(self, todo: list[tuple[str, str]], verbose: bool) -> None:
        if todo:
            starts: dict[tuple[str, str], Start] = {}
            for scenario, name in tqdm(todo, desc="starting models", disable=not self.progress):
                starts[(scenario, name)] = self.make_start(scenario, name)
            order = sorted(todo, key=lambda job: (self.cfg.scenarios.index(job[0]), job[1] != "random"))
            jobs = [FLJob(s, n, starts[(s, n)].state, self.spec(s)) for s, n in order]
            evaluate_data = (self.dataset.x_test, self.dataset.y_test, self.fresh_model())

            def on_done(job: FLJob, run: FLRun) -> None:
                self._store(job, run, starts[(job.scenario, job.start)])

            simulate(jobs, self.cfg, evaluate_data, on_done, self.device, self.num_cpus, self.progress, verbose)

    def _scratch_curve(self, scenario: str) -> list[float]:
        record = self.store.get(run_key(KIND, run_config(self.cfg, scenario, "random")))
        if record is None:
            return []
        return [row["accuracy"] for row in record["curves"] if row["round"] > 0]

    def _store(self, job: FLJob, run: FLRun, start: Start) -> dict:
        c = self.cfg
        curve = run.curve
        accs = [row["accuracy"] for row in curve if row["round"] > 0]
        scratch = accs if job.start == "random" else self._scratch_curve(job.scenario)
        per_round = [row["bytes_down"] + row["bytes_up"] for row in curve]
        mb = 1024**2
        metrics = {
            "initial_acc": curve[0]["accuracy"],
            "final_acc": accs[-1],
            "best_acc": max(accs),
            "final_loss": curve[-1]["loss"],
            **target_metrics(curve, scratch, start.bytes_up, c),
            "mb_per_round": float(np.mean(per_round[1:])) / mb,
            "mb_total": sum(per_round) / mb,
            "start_mb": start.bytes_up / mb,
            "fl_wall_s": round(run.wall_s, 3),
            "kd_wall_s": round(start.wall_s, 3),
            "kd_samples": start.samples,
            "kd_epochs": start.epochs,
            "kd_sample_epochs": start.samples * start.epochs,
            "start_test_acc": start.test_acc,
            "group": group_key(c, job.scenario),
        }
        clients = self._clients.get(job.scenario)
        if clients and job.start != "random":
            metrics["clients_mean_acc"] = float(np.mean([meta["test_acc"] for _, meta in clients]))
        for source, share in start.extra.get("routing", {}).items():
            metrics[f"routing_{source}"] = share
        return self.store.append(
            KIND,
            run_config(c, job.scenario, job.start),
            metrics,
            curves=curve,
            kd_history=start.extra.get("kd_history"),
            wall_s=round(run.wall_s + start.wall_s, 3),
            description=self.dataset.description,
        )

    # ------------------------------------------------------------------------------------------- reading

    def records(self) -> list[dict]:
        """The stored runs of this config (latest per run), with their per-round curves."""
        wanted = {run_key(KIND, run_config(self.cfg, s, n)) for s in self.cfg.scenarios for n in self.cfg.starts}
        latest = {r["key"]: r for r in self.store.records() if r["key"] in wanted}
        return list(latest.values())

    def frame(self) -> pd.DataFrame:
        """This config's stored runs, one row each; the target columns follow this config's target rule (it is
        analysis, not part of a run's identity, so changing it re-reads the stored curves instead of rerunning)."""
        records = self.records()
        df = self.store.frame(KIND)
        if df.empty:
            return df
        df = df[df["key"].isin({r["key"] for r in records})].drop_duplicates("key", keep="last").set_index("key")
        scratch = {
            r["config"]["scenario"]: [row["accuracy"] for row in r["curves"] if row["round"] > 0]
            for r in records
            if r["config"]["start"] == "random"
        }
        for r in records:
            upload = r["metrics"].get("start_mb", 0.0) * 1024**2
            fresh = target_metrics(r["curves"], scratch.get(r["config"]["scenario"], []), upload, self.cfg)
            for column, value in fresh.items():
                df.loc[r["key"], column] = value
        return df.reset_index()

    def summary(self) -> pd.DataFrame:
        """``round_reduction_summary`` of this config's runs."""
        return round_reduction_summary(self.frame())

    def curves(self) -> pd.DataFrame:
        """One row per (scenario, start, round): test accuracy (fraction), loss, MB communicated."""
        targets = self.frame().set_index("key")["target_accuracy"] if self.records() else {}
        rows = []
        for record in self.records():
            for row in record["curves"]:
                rows.append(
                    {
                        "scenario": record["config"]["scenario"],
                        "start": record["config"]["start"],
                        "round": row["round"],
                        "accuracy": row["accuracy"],
                        "loss": row["loss"],
                        "mb": (row["bytes_down"] + row["bytes_up"]) / 1024**2,
                        "target": targets[record["key"]],
                    }
                )
        return pd.DataFrame(rows)

    def clients_frame(self) -> pd.DataFrame:
        """The pre-trained client models per scenario: data size and test accuracy."""
        rows = [
            {"scenario": s, "client": i, "train_size": meta.get("train_size"), "test_acc": meta.get("test_acc")}
            for s in self.cfg.scenarios
            for i, (_, meta) in enumerate(self.client_models(s))
        ]
        return pd.DataFrame(rows)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def open_federated(
    scale: str = "smoke",
    device: str = "auto",
    results: str | None = None,
    progress: bool = True,
    scenarios: str | list[str] | None = None,
    **overrides: Any,
) -> FederatedStudy:
    """The federated study of a scale, as a notebook opens it (papermill parameters go in as overrides).

    Records go to the project's ``study`` results store, beside the distillation runs, as kind ``federated``.
    """
    if scenarios:
        overrides["scenarios"] = scenarios
    cfg = federated_scale_config(scale, **_own_overrides(overrides))
    return FederatedStudy(cfg, ResultsStore.open("study", results), device=device, progress=progress)


def _own_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides meant for this study: fields of the distillation study's ``StudyConfig`` that the federated
    study does not have (``kdlib reproduce`` hands the same overrides to every notebook) are dropped, with a
    warning; a name neither config knows still raises."""
    import warnings

    from kdlib.config import StudyConfig

    own = {f.name for f in fields(FederatedConfig)}
    other = {f.name for f in fields(StudyConfig)} - own
    dropped = sorted(k for k in overrides if k in other)
    if dropped:
        warnings.warn(f"not used by the federated study (StudyConfig fields): {', '.join(dropped)}", stacklevel=3)
    return {k: v for k, v in overrides.items() if k not in other}


def caption(study: FederatedStudy, extra: str = "") -> str:
    """The caption line of a figure from this study: data set, scale, sizes, clients and target."""
    from kdlib.plots import study_caption

    data, c = study.dataset, study.cfg
    text = f"{c.num_clients} clients, {c.model}, {c.rounds} rounds x {c.local.epochs} local epoch(s)"
    return study_caption(
        data.description, c.scale, len(data.x_train), len(data.x_test), f"{text}{'; ' + extra if extra else ''}"
    )


__all__ = [
    "FL_SCENARIOS",
    "KIND",
    "STARTS",
    "START_LABELS",
    "ClientSplit",
    "DataSpec",
    "FLJob",
    "FLRun",
    "FederatedConfig",
    "FederatedStudy",
    "MeteredFedAvg",
    "Start",
    "aggregate_state_dicts",
    "caption",
    "client_app",
    "client_data",
    "compare_with_paper",
    "distill_averaged",
    "federated_scale_config",
    "model_bytes",
    "open_federated",
    "round_reduction",
    "round_reduction_summary",
    "rounds_to_target",
    "run_config",
    "run_fedavg",
    "sample_clients",
    "scenario_target",
    "simulate",
    "split_clients",
]
