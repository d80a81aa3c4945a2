"""The task every client and the server share: the model, the data set, its split among the clients (after a
public split that no client gets), and a client's own partition, loaded once per process."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from kdlib.core.models import build_model
from kdlib.data.datasets import Dataset, Subsample, load_dataset
from kdlib.data.partition import parse_partition, partition_indices
from kdlib.study.parties import hold_out_public


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
    public, private = hold_out_public(labels, np.arange(len(labels)), public_fraction, seed, minimum=num_classes)
    spec = parse_partition(scenario, num_parties=num_clients)
    local = partition_indices(labels[private], spec, seed=seed, num_classes=num_classes)
    return ClientSplit(tuple(np.sort(private[p]) for p in local), public)


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, root: str | None, n_train: int | None, n_test: int | None, seed: int) -> Dataset:
    return load_dataset(name, root, subsample=Subsample(n_train, n_test, seed), progress=False)


@functools.lru_cache(maxsize=8)
def cached_split(spec: DataSpec) -> ClientSplit:
    data = cached_dataset(spec.dataset, spec.data_root, spec.n_train, spec.n_test, spec.seed)
    labels = data.y_train.numpy()
    return split_clients(labels, spec.scenario, spec.num_clients, spec.public_fraction, spec.seed, data.num_classes)


def client_data(spec: DataSpec, client: int) -> tuple[torch.Tensor, torch.Tensor, Dataset]:
    """``(x, y, dataset)`` of one client, loaded from the local data cache (once per process)."""
    data = cached_dataset(spec.dataset, spec.data_root, spec.n_train, spec.n_test, spec.seed)
    idx = torch.as_tensor(cached_split(spec).parts[client])
    return data.x_train[idx], data.y_train[idx], data


def task_model(name: str, data: Dataset) -> nn.Module:
    """A fresh model ``name`` (``kdlib.core.models``) for the data set's classes and input shape."""
    return build_model(name, data.num_classes, data.in_shape)


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's ``state_dict`` as Flower sends it (array payloads and key names)."""
    from flwr.app import ArrayRecord

    return ArrayRecord(model.state_dict()).count_bytes()
