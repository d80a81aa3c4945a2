"""Scenarios (a data set split among parties) and the pre-trained party models, cached by their full config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdlib.checkpoints import load_checkpoint, save_checkpoint
from kdlib.config import StudyConfig, config_key
from kdlib.data import Dataset, stratified_subset
from kdlib.errors import KDConfigError
from kdlib.metrics import accuracy, group_accuracy
from kdlib.models import build_model
from kdlib.partition import PartitionSpec, parse_partition, partition_indices
from kdlib.paths import cache_dir as default_cache_dir
from kdlib.train import TrainConfig, predict_logits, seed_everything, train_supervised

PARTY_META_FIELDS = ("config", "test_acc", "own_acc", "unseen_acc", "own_classes", "train_size")
"""What a pre-trained party's checkpoint side file must hold (checked on load)."""
OWN_CLASS_SHARE = 0.01
"""A class counts as one of a party's own classes when it makes up at least this share of the party's data."""


@dataclass(frozen=True)
class Scenario:
    """One partition scenario of a data set: index arrays into ``x_train`` per party, and the public split."""

    name: str
    spec: PartitionSpec
    parts: tuple[np.ndarray, ...]
    public: np.ndarray | None
    num_classes: int
    labels: np.ndarray
    validation: np.ndarray | None = None
    """The held-out validation split (``cfg.val_size`` samples, the label mix of the whole training set): in no
    party, transfer set or public split."""

    def own_classes(self, party: int) -> list[int]:
        """Classes that make up at least ``OWN_CLASS_SHARE`` of the party's data."""
        counts = np.bincount(self.labels[self.parts[party]], minlength=self.num_classes)
        return [int(c) for c in np.flatnonzero(counts >= max(1, OWN_CLASS_SHARE * counts.sum()))]

    def unseen_classes(self, party: int) -> list[int]:
        own = set(self.own_classes(party))
        return [c for c in range(self.num_classes) if c not in own]


def proportional_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples whose class counts follow the label distribution of ``labels``: class c
    gets ``n * share_c`` rounded by largest remainder (ties to random classes), drawn at random within it."""
    labels = np.asarray(labels)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 0 < n <= len(labels):
        raise KDConfigError("val_size", n, f"an integer between 1 and the training set's size ({len(labels)})")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()
    quota = np.floor(exact).astype(int)
    remainder = exact - quota
    order = np.lexsort((rng.random(len(classes)), -remainder))  # largest remainder first, random among ties
    quota[order[: n - quota.sum()]] += 1
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def make_scenario(dataset: Dataset, text: str, cfg: StudyConfig, num_parties: int = 2) -> Scenario:
    """Split ``dataset``'s training set as ``text`` says (see ``partition.parse_partition``).

    First a validation split of ``cfg.val_size`` samples with the training set's label distribution is held out
    (``proportional_subset``; none when 0); then, with
    ``cfg.transfer == "public"``, a stratified ``public_fraction`` of the rest; the parties share what is left.
    """
    spec = parse_partition(text, num_parties=num_parties)
    labels = dataset.y_train.numpy()
    private = np.arange(len(labels))
    validation = public = None
    if cfg.val_size:
        validation = proportional_subset(labels, cfg.val_size, cfg.seed)
        private = np.setdiff1d(private, validation)
    if cfg.transfer == "public":
        chosen = stratified_subset(labels[private], round(len(private) * cfg.public_fraction), cfg.seed)
        public = private[chosen]
        private = np.setdiff1d(private, public)
    local = partition_indices(labels[private], spec, seed=cfg.seed, num_classes=dataset.num_classes)
    parts = tuple(np.sort(private[p]) for p in local)
    return Scenario(text, spec, parts, public, dataset.num_classes, labels, validation)


def party_config(cfg: StudyConfig, scenario: str, party: int, model_name: str) -> dict:
    """Everything that decides a pre-trained party's weights (its checkpoint key)."""
    return {
        "dataset": cfg.dataset,
        "n_train": cfg.n_train,
        "n_test": cfg.n_test,
        "seed": cfg.seed,
        "scenario": scenario,
        "party": party,
        "model": model_name,
        "pretrain": cfg.pretrain.as_dict(),
        "transfer": cfg.transfer if cfg.transfer == "public" else "private",
        "public_fraction": cfg.public_fraction if cfg.transfer == "public" else None,
        **({"val_size": cfg.val_size} if cfg.val_size else {}),
    }


def pretrained_party(
    dataset: Dataset,
    scenario: Scenario,
    party: int,
    model_name: str,
    cfg: StudyConfig,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """The party's model trained on its own partition: loaded from the cache when this config was trained
    before, else trained (seeded) and saved. Returns ``(model, meta)``, meta with test accuracies."""
    settings = party_config(cfg, scenario.name, party, model_name)
    path = Path(cache_dir or default_cache_dir()) / "parties" / f"{config_key(settings)}.safetensors"
    seed_everything(cfg.seed * 1000 + party)
    model = build_model(model_name, dataset.num_classes, dataset.in_shape)
    if path.exists():
        meta = load_checkpoint(model, path, required=PARTY_META_FIELDS)
        if meta["config"] != json.loads(json.dumps(settings, default=str)):
            allowed = f"the side file of this party's config, but it holds another's: delete it and {path.name}"
            raise KDConfigError("checkpoint metadata", str(path.with_suffix(".json")), allowed)
        return model, meta
    idx = torch.as_tensor(scenario.parts[party])
    train_cfg = TrainConfig(**{**cfg.pretrain.as_dict(), "seed": cfg.seed * 1000 + party})
    desc = f"pre-train party {party} ({model_name}, {scenario.name})"
    train_supervised(model, dataset.x_train[idx], dataset.y_train[idx], train_cfg, device, desc, progress)
    logits = predict_logits(model, dataset.x_test, device)
    meta = {
        "config": settings,
        "test_acc": accuracy(logits, dataset.y_test),
        "own_acc": group_accuracy(logits, dataset.y_test, scenario.own_classes(party)),
        "unseen_acc": group_accuracy(logits, dataset.y_test, scenario.unseen_classes(party)),
        "own_classes": scenario.own_classes(party),
        "train_size": len(idx),
    }
    save_checkpoint(model.cpu(), path, meta)
    return model, meta
