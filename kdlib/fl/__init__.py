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

Layout, along Flower's app template: ``config`` (FederatedConfig, the starts, the scales), ``task`` (the data and
its split among the clients), ``client_app`` (the ``ClientApp``), ``server_app`` (metered FedAvg, evaluation, one
run), ``simulation`` (Ray and the Simulation Engine), ``starts`` (the KD-consolidated start), ``analysis`` (rounds
to target, reductions) and ``study`` (``FederatedStudy``, ``open_federated``).
"""

from __future__ import annotations

from kdlib.fl.analysis import (
    compare_with_paper,
    round_reduction,
    round_reduction_summary,
    rounds_to_target,
    scenario_target,
    target_metrics,
)
from kdlib.fl.client_app import client_app
from kdlib.fl.config import FL_SCENARIOS, KD_STARTS, KIND, START_LABELS, STARTS, FederatedConfig, federated_scale_config
from kdlib.fl.server_app import (
    Federation,
    FLJob,
    FLRun,
    MeteredFedAvg,
    aggregate_state_dicts,
    model_bytes,
    run_fedavg,
    sample_clients,
)
from kdlib.fl.simulation import SimulationOptions, quiet_flower, simulate, torch_threads
from kdlib.fl.starts import KDRecipe, Start, distill_averaged
from kdlib.fl.study import FederatedStudy, group_key, open_federated, run_config
from kdlib.fl.task import ClientSplit, DataSpec, client_data, split_clients
from kdlib.plots import caption  # one caption function for both studies

__all__ = [
    "FL_SCENARIOS",
    "KD_STARTS",
    "KIND",
    "STARTS",
    "START_LABELS",
    "ClientSplit",
    "DataSpec",
    "FLJob",
    "FLRun",
    "Federation",
    "FederatedConfig",
    "FederatedStudy",
    "KDRecipe",
    "MeteredFedAvg",
    "SimulationOptions",
    "Start",
    "aggregate_state_dicts",
    "caption",
    "client_app",
    "client_data",
    "compare_with_paper",
    "distill_averaged",
    "federated_scale_config",
    "group_key",
    "model_bytes",
    "open_federated",
    "quiet_flower",
    "round_reduction",
    "round_reduction_summary",
    "rounds_to_target",
    "run_config",
    "run_fedavg",
    "sample_clients",
    "scenario_target",
    "simulate",
    "split_clients",
    "target_metrics",
    "torch_threads",
]
