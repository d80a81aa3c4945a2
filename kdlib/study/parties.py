"""Scenarios (a data set split among parties) and the pre-trained party models, cached by their full config."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdlib.core.checkpoints import config_key, load_checkpoint, save_checkpoint
from kdlib.core.metrics import accuracy, group_accuracy
from kdlib.core.models import PUBLISHED_PREFIX, build_model, load_pretrained_resnet
from kdlib.core.train import RunOptions, TrainConfig, predict_logits, seed_everything, train_supervised
from kdlib.data.datasets import Dataset, stratified_subset
from kdlib.data.partition import PartitionSpec, parse_partition, partition_indices
from kdlib.errors import KDConfigError
from kdlib.paths import cache_dir as default_cache_dir
from kdlib.study.config import StudyConfig
from kdlib.validation import is_int

PARTY_META_FIELDS = ("config", "test_acc", "own_acc", "unseen_acc", "own_classes", "train_size")
"""What a pre-trained party's checkpoint side file must hold (checked on load)."""
MIN_PARTY_SAMPLES = 10
"""The fewest training samples a party may be left with after the validation and public splits."""
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
    if not is_int(n, numpy=True) or not 0 < n <= len(labels):
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


def hold_out_public(
    labels: np.ndarray, pool: np.ndarray, fraction: float, seed: int, *, minimum: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The public split: a stratified ``fraction`` of ``pool`` (indices into ``labels``; at least ``minimum``
    samples), held out before the parties get the rest. Returns ``(public, rest)``, ``rest`` sorted. The study's
    ``transfer="public"`` and the federated study's KD data both come from here."""
    pool = np.asarray(pool)
    public = pool[stratified_subset(labels[pool], max(minimum, round(len(pool) * fraction)), seed)]
    return public, np.setdiff1d(pool, public)


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
        public, private = hold_out_public(labels, private, cfg.public_fraction, cfg.seed)
        if len(private) < MIN_PARTY_SAMPLES * num_parties:
            allowed = (
                f"a smaller fraction: it leaves {len(private)} of {len(private) + len(public)} samples for "
                f"{num_parties} parties (at least {MIN_PARTY_SAMPLES} each), e.g. public_fraction=0.2"
            )
            raise KDConfigError("public_fraction", cfg.public_fraction, allowed)
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


def cached_party(
    model: nn.Module,
    settings: dict,
    train: Callable[[nn.Module], dict],
    *,
    folder: str = "parties",
    cache_dir: str | Path | None = None,
    required: Sequence[str] = ("config",),
) -> dict:
    """The party cache of both studies: ``model`` (built and seeded by the caller) gets the weights cached for
    ``settings`` (``<cache>/<folder>/<config_key(settings)>.safetensors``), else ``train(model)`` trains it and
    returns its metadata, saved beside the weights with ``settings`` as ``config``. Returns the metadata; a side
    file that lacks a ``required`` field or holds another config is refused (delete it to train again). A lock
    beside the checkpoint (``<key>.lock``) lets one process train a party while others on the same cache wait for
    it and then load it: no party is trained twice, whatever mix of commands shares the cache."""
    from filelock import FileLock

    path = Path(cache_dir or default_cache_dir()) / folder / f"{config_key(settings)}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):  # one process trains a party; the others wait, then load it
        if path.exists():
            meta = load_checkpoint(model, path, required=required)
            if meta["config"] != json.loads(json.dumps(settings, default=str)):
                allowed = f"the side file of this party's config, but it holds another's: delete it and {path.name}"
                raise KDConfigError("checkpoint metadata", str(path.with_suffix(".json")), allowed)
            return meta
        meta = {"config": settings, **train(model)}
        save_checkpoint(model.cpu(), path, meta)
        return meta


def published_party(dataset: Dataset, model_name: str, device: str = "auto") -> tuple[nn.Module, dict]:
    """A published CIFAR-10 checkpoint as party 0 (``published:resnet56``): loaded after its SHA-256 check, not
    trained here. It was trained by others on all 50,000 original CIFAR-10 training images (PNG, not the JPEG
    re-encoding here), so it has seen every class, the student's own images and the validation split."""
    name = model_name.removeprefix(PUBLISHED_PREFIX)
    if dataset.name != "cifar10" or dataset.num_classes != 10:
        raise KDConfigError("teacher_model", model_name, "a trained-here model: the published ones know CIFAR-10 only")
    model = load_pretrained_resnet(name)
    logits = predict_logits(model, dataset.x_test, device)
    every_class = list(range(dataset.num_classes))
    meta = {
        "config": {"model": model_name, "published_test_acc": model.best_prec1 / 100},
        "test_acc": accuracy(logits, dataset.y_test),
        "own_acc": accuracy(logits, dataset.y_test),
        "unseen_acc": float("nan"),
        "own_classes": every_class,
        "train_size": 50_000,
    }
    return model, meta


def pretrained_party(
    dataset: Dataset, scenario: Scenario, party: int, model_name: str, cfg: StudyConfig, device: str = "auto",
    **options: bool,
) -> tuple[nn.Module, dict]:  # fmt: skip
    """The party's model trained on its own partition: loaded from the cache when this config was trained
    before, else trained (seeded) and saved. Returns ``(model, meta)``, meta with test accuracies. Keyword
    ``progress`` (default True): show the training bar."""
    unknown = set(options) - {"progress"}
    if unknown:
        raise TypeError(f"pretrained_party() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    if model_name.startswith(PUBLISHED_PREFIX):
        return published_party(dataset, model_name, device)
    progress = options.get("progress", True)
    seed_everything(cfg.seed * 1000 + party)
    model = build_model(model_name, dataset.num_classes, dataset.in_shape)

    def train(model: nn.Module) -> dict:
        idx = torch.as_tensor(scenario.parts[party])
        train_cfg = TrainConfig(**{**cfg.pretrain.as_dict(), "seed": cfg.seed * 1000 + party})
        desc = f"pre-train party {party} ({model_name}, {scenario.name})"
        run = RunOptions(device, progress, desc=desc)
        train_supervised(model, dataset.x_train[idx], dataset.y_train[idx], train_cfg, run)
        logits = predict_logits(model, dataset.x_test, device)
        return {
            "test_acc": accuracy(logits, dataset.y_test),
            "own_acc": group_accuracy(logits, dataset.y_test, scenario.own_classes(party)),
            "unseen_acc": group_accuracy(logits, dataset.y_test, scenario.unseen_classes(party)),
            "own_classes": scenario.own_classes(party),
            "train_size": len(idx),
        }

    settings = party_config(cfg, scenario.name, party, model_name)
    return model, cached_party(model, settings, train, required=PARTY_META_FIELDS)
