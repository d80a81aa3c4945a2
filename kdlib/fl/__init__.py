"""Federated learning on Flower: does a KD-consolidated starting model cut the rounds FedAvg needs?

The paper's second claim (Alballa et al., arXiv 2402.14922): distilling the pre-trained models of the clients into
one model and starting FedAvg from it needs far fewer communication rounds (60.6% fewer on average) than FedAvg
from a random initialisation. Here every scenario splits a data set among ``num_clients`` clients (after holding
out a stratified public split that no client gets); every client pre-trains a model on its own data; FedAvg then
runs from each registered start (``kdlib.fl.starts``) with the same clients, data, client sampling and budgets:

- ``random``: a fresh model (the baseline every reduction is measured against);
- ``one_client``: client 0's pre-trained model;
- ``kd_avg``: the same fresh model distilled on the public split from all client models at once, towards the
  mean of their softened outputs (multi-teacher KD with averaged soft targets);
- ``kd_dp``: the same, but each public sample is distilled from one model only, chosen by data-partitioning KD
  (``kdlib.core.distill.run_dp``): the most confident client model on the sample's true class, where it beats the
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

Layout, along Flower's app template: ``config`` (FederatedConfig and its scales), ``task`` (the model's payload, the
data and its split among the clients), ``client_app`` (the ``ClientApp``), ``server_app`` (the ``ServerApp``),
``fedavg`` (metered FedAvg, evaluation, one run), ``simulation`` (Ray and the Simulation Engine), ``starts`` (the
start registry: each start's label, role, key fields and build function), ``analysis`` (rounds to target,
reductions) and ``study`` (``FederatedStudy``: jobs (scenario, start, seed) run by the study's one runner,
``kdlib.study.parallel``; ``open_federated``).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES: dict[str, str] = {
    "ClientSplit": "kdlib.fl.task",
    "DataSpec": "kdlib.fl.task",
    "FLJob": "kdlib.fl.fedavg",
    "FLRun": "kdlib.fl.fedavg",
    "FL_SCENARIOS": "kdlib.fl.config",
    "FederatedConfig": "kdlib.fl.config",
    "FederatedStudy": "kdlib.fl.study",
    "Federation": "kdlib.fl.fedavg",
    "KDRecipe": "kdlib.fl.starts",
    "KIND": "kdlib.fl.config",
    "MeteredFedAvg": "kdlib.fl.fedavg",
    "SimulationOptions": "kdlib.fl.simulation",
    "Start": "kdlib.fl.starts",
    "StartEntry": "kdlib.fl.starts",
    "get_start": "kdlib.fl.starts",
    "kd_start_names": "kdlib.fl.starts",
    "register_start": "kdlib.fl.starts",
    "start_label": "kdlib.fl.starts",
    "start_names": "kdlib.fl.starts",
    "unregister_start": "kdlib.fl.starts",
    "aggregate_state_dicts": "kdlib.fl.fedavg",
    "client_app": "kdlib.fl.client_app",
    "client_data": "kdlib.fl.task",
    "compare_with_paper": "kdlib.fl.analysis",
    "distill_averaged": "kdlib.fl.starts",
    "federated_scale_config": "kdlib.fl.config",
    "group_key": "kdlib.fl.study",
    "model_bytes": "kdlib.fl.task",
    "open_federated": "kdlib.fl.study",
    "quiet_flower": "kdlib.fl.simulation",
    "round_reduction": "kdlib.fl.analysis",
    "round_reduction_summary": "kdlib.fl.analysis",
    "rounds_to_target": "kdlib.fl.analysis",
    "run_config": "kdlib.fl.study",
    "run_fedavg": "kdlib.fl.fedavg",
    "sample_clients": "kdlib.fl.fedavg",
    "scenario_target": "kdlib.fl.analysis",
    "simulate": "kdlib.fl.simulation",
    "split_clients": "kdlib.fl.task",
    "target_metrics": "kdlib.fl.analysis",
    "torch_threads": "kdlib.fl.simulation",
}
"""Where each public name lives: imported on first use, so that ``import kdlib.fl.config`` (the CLI's
checks) does not load Flower, Ray and the plots."""


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "FL_SCENARIOS",
    "KIND",
    "aggregate_state_dicts",
    "client_app",
    "client_data",
    "compare_with_paper",
    "distill_averaged",
    "federated_scale_config",
    "get_start",
    "group_key",
    "kd_start_names",
    "model_bytes",
    "open_federated",
    "quiet_flower",
    "register_start",
    "round_reduction",
    "round_reduction_summary",
    "rounds_to_target",
    "run_config",
    "run_fedavg",
    "sample_clients",
    "scenario_target",
    "simulate",
    "split_clients",
    "start_label",
    "start_names",
    "target_metrics",
    "torch_threads",
    "unregister_start",
    "ClientSplit",
    "DataSpec",
    "FLJob",
    "FLRun",
    "FederatedConfig",
    "FederatedStudy",
    "Federation",
    "KDRecipe",
    "MeteredFedAvg",
    "SimulationOptions",
    "Start",
    "StartEntry",
]
