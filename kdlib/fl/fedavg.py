"""FedAvg on a Flower grid, the server side every way the study runs: seeded client sampling, metered FedAvg,
centralised evaluation, client discovery, one FedAvg run and a list of them. Flower's Simulation Engine
(``simulation``) and the ``ServerApp`` of ``flwr run`` (``server_app``) both run the study's jobs with these."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from kdlib.core.metrics import accuracy
from kdlib.core.train import predict_logits
from kdlib.errors import KDConfigError
from kdlib.fl.config import FederatedConfig
from kdlib.fl.task import DataSpec


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


DISCOVERY_TIMEOUT_S = 300.0
"""How long client discovery waits for the clients' replies: a simulation's clients start as Ray workers that import
torch, which took over 120 s on this project's 2-core CPU with the test suite and a study beside it."""


def discover_clients(
    grid: Grid, num_clients: int | None = None, timeout_s: float = DISCOVERY_TIMEOUT_S
) -> dict[int, int]:
    """Ask every node for its partition id: ``{partition id: node id}``, partition ids 0 .. n-1 once each.

    ``num_clients`` None: as many clients as the nodes say the federation has (their ``num-partitions``, which
    Flower's simulation sets, and a SuperNode gets from ``--node-config``); then wait until all of them are up.
    """
    deadline = time.monotonic() + timeout_s
    if num_clients is None:
        _wait_for_nodes(grid, 1, deadline)
        counts = {int(m.content["info"]["num-partitions"]) for m in _ask_all(grid, timeout_s)}
        if len(counts) != 1 or min(counts) < 1:
            raise RuntimeError(
                f"the clients give num-partitions {sorted(counts)}: every SuperNode needs the same number, "
                "e.g. flower-supernode --node-config 'partition-id=0 num-partitions=2'"
            )
        num_clients = counts.pop()
    _wait_for_nodes(grid, num_clients, deadline)
    replies = _ask_all(grid, timeout_s)
    if len(replies) != num_clients:
        raise RuntimeError(
            f"client discovery failed: {len(replies)} replies from {num_clients} clients within {timeout_s:.0f} s"
            " (clients that never started, or a machine too loaded for them to start in time)"
        )
    nodes = {int(m.content["info"]["partition-id"]): m.metadata.src_node_id for m in replies}
    if sorted(nodes) != list(range(num_clients)):
        raise RuntimeError(
            f"client discovery: partition ids {sorted(nodes)}, expected 0 .. {num_clients - 1} once each"
        )
    return nodes


def _wait_for_nodes(grid: Grid, count: int, deadline: float) -> None:
    while len(list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(grid.get_node_ids()))} of {count} clients came up")
        time.sleep(0.05)


def _ask_all(grid: Grid, timeout_s: float) -> list[Message]:
    """Every connected node's ``query`` reply (its partition id and the number of partitions)."""
    ask = [
        Message(RecordDict({"ask": ConfigRecord({"what": "partition-id"})}), dst_node_id=n, message_type="query")
        for n in grid.get_node_ids()
    ]
    replies = list(grid.send_and_receive(ask, timeout=timeout_s))
    failed = [m for m in replies if m.has_error()]
    if failed:
        raise RuntimeError(f"client discovery failed: {failed[0].error.reason}")
    return replies


def make_evaluator(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> Callable:
    """Centralised evaluation on the test set: ``evaluate_fn(round, arrays) -> MetricRecord``."""

    def evaluate(_server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        logits = predict_logits(model, x, device)
        loss = float(F.cross_entropy(logits, y))
        return MetricRecord({"accuracy": accuracy(logits, y), "loss": loss})

    return evaluate


@dataclass(frozen=True)
class Federation:
    """The server's side of a simulation: the grid, the connected clients (``{partition id: node id}``), the
    centralised evaluation, and the device and torch threads the clients train with."""

    grid: Grid
    nodes: dict[int, int]
    evaluate: Callable
    device: str
    threads: int = 1


def run_fedavg(federation: Federation, job: FLJob, cfg: FederatedConfig) -> FLRun:
    """FedAvg from ``job.initial`` for ``cfg.rounds`` rounds on the connected clients; one row per round."""
    started = time.perf_counter()
    strategy = MeteredFedAvg(federation.nodes, cfg.fraction_fit, cfg.seed)
    train_config = ConfigRecord(
        {
            "data-spec": job.spec.to_json(),
            "model": cfg.model,
            "local": json.dumps(cfg.local.as_dict()),
            "seed": cfg.seed,
            "device": federation.device,
            "threads": federation.threads,
        }
    )
    result = strategy.start(
        grid=federation.grid,
        initial_arrays=ArrayRecord(job.initial),
        num_rounds=cfg.rounds,
        train_config=train_config,
        evaluate_fn=federation.evaluate,
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


def run_jobs(federation: Federation, jobs: Sequence[FLJob], cfg: FederatedConfig, on_done: Callable) -> None:
    """FedAvg for each job in order on the same clients; ``on_done(job, run)`` after each (e.g. to store it)."""
    for job in jobs:
        on_done(job, run_fedavg(federation, job, cfg))


# ------------------------------------------------------------------------------------------- a running Flower run

_ACTIVE: ContextVar[tuple[Grid, dict[int, int]] | None] = ContextVar("kdlib_fl_grid", default=None)


@contextmanager
def use_grid(grid: Grid, nodes: dict[int, int]) -> Iterator[None]:
    """Within: the study's simulations run on this grid and its clients (``{partition id: node id}``), the ones
    of the Flower run this ``ServerApp`` serves, instead of starting a simulation of their own."""
    token = _ACTIVE.set((grid, nodes))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_grid() -> tuple[Grid, dict[int, int]] | None:
    """The grid and clients set by :func:`use_grid` in this thread, else None."""
    return _ACTIVE.get()
