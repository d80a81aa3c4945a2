"""The federated study: a config bound to its data, clients' pre-trained models, results store and device. Its jobs
are (scenario, start, seed) triples, run by the study's one runner (``kdlib.study.parallel.run_jobs``: the same
key, claim and resume loop as the distillation study), the claimed ones of a seed together in one Flower
simulation; it reads the stored runs back over every seed."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from kdlib.core.checkpoints import config_key
from kdlib.core.metrics import accuracy
from kdlib.core.models import build_model
from kdlib.core.progress import tqdm
from kdlib.core.train import RunOptions, TrainConfig, predict_logits, resolve_device, seed_everything, train_supervised
from kdlib.data.datasets import Dataset
from kdlib.fl.analysis import round_reduction_summary, target_metrics
from kdlib.fl.config import KIND, FederatedConfig, federated_scale_config
from kdlib.fl.fedavg import FLJob, FLRun
from kdlib.fl.simulation import SimulationOptions, simulate, torch_threads
from kdlib.fl.starts import Start, get_start
from kdlib.fl.task import ClientSplit, DataSpec, cached_dataset, cached_split
from kdlib.study.parallel import complete_seeds, run_jobs
from kdlib.study.parties import cached_party
from kdlib.study.results import ResultsStore, run_key
from kdlib.study.stats import seeds_count

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
Job = tuple[str, str, int]
"""(scenario, start, seed)."""


def run_config(cfg: FederatedConfig, scenario: str, start: str) -> dict:
    """The fields that decide one (scenario, start) FedAvg run: its identity in the results store. The common
    fields, then those the start's registry entry names (``kdlib.fl.starts``); the number of seeds is not one."""
    entry = get_start(start)
    full = cfg.as_dict()
    return {"scenario": scenario, "start": start, **{k: full[k] for k in COMMON_FIELDS + entry.fields}}


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
    verbose: bool = False
    label: ClassVar[str] = "federated"
    batch_jobs: ClassVar[bool] = True
    """The runner's contract (``kdlib.study.parallel``): claimed jobs run together, one simulation per seed."""
    ray_tasks: ClassVar[bool] = False
    """Not fanned out as Ray tasks by the runner: Flower's simulation runs the clients on Ray itself."""
    _splits: dict[str, ClientSplit] = field(default_factory=dict)
    _clients: dict[str, list[tuple[nn.Module, dict]]] = field(default_factory=dict)
    _per_seed: dict[int, FederatedStudy] = field(default_factory=dict)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The study's seeds: ``cfg.seed``, ``cfg.seed + 1``, ... (``cfg.seeds`` of them)."""
        return tuple(range(self.cfg.seed, self.cfg.seed + self.cfg.seeds))

    def for_seed(self, seed: int) -> FederatedStudy:
        """The one-seed study of ``seed`` (its own data, split and client models), on the same store and device."""
        if self.cfg.seeds == 1 and seed == self.cfg.seed:
            return self
        if seed not in self._per_seed:
            self._per_seed[seed] = FederatedStudy(
                self.cfg.replace(seed=seed, seeds=1), self.store, device=self.device, progress=self.progress,
                data_root=self.data_root, cache_dir=self.cache_dir, num_cpus=self.num_cpus, threads=self.threads,
                verbose=self.verbose,
            )
        return self._per_seed[seed]

    @functools.cached_property
    def dataset(self) -> Dataset:
        return cached_dataset(self.cfg.dataset, self.data_root, self.cfg.n_train, self.cfg.n_test, self.cfg.seed)

    def spec(self, scenario: str) -> DataSpec:
        c = self.cfg
        return DataSpec(
            c.dataset, c.n_train, c.n_test, c.seed, scenario, c.num_clients, c.public_fraction, self.data_root
        )

    def split(self, scenario: str) -> ClientSplit:
        if scenario not in self._splits:
            self._splits[scenario] = cached_split(self.spec(scenario))
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
        seed_everything(c.seed * 1000 + client)
        model = build_model(c.model, self.dataset.num_classes, self.dataset.in_shape)

        def train(model: nn.Module) -> dict:
            idx = torch.as_tensor(self.split(scenario).parts[client])
            data = self.dataset
            train_cfg = TrainConfig(**{**c.pretrain.as_dict(), "seed": c.seed * 1000 + client})
            started = time.perf_counter()
            train_supervised(model, data.x_train[idx], data.y_train[idx], train_cfg, RunOptions(self.device, False))
            return {
                "test_acc": accuracy(predict_logits(model, data.x_test, self.device), data.y_test),
                "train_size": len(idx),
                "wall_s": round(time.perf_counter() - started, 3),
            }

        return model, cached_party(model, settings, train, folder="federated", cache_dir=self.cache_dir)

    def caption_details(self) -> str:
        """What a figure's caption says of this study: clients, model and budget (``figure_layout.caption``)."""
        c = self.cfg
        budget = f"{c.rounds} rounds x {c.local.epochs} local epoch(s)"
        return f"{c.num_clients} clients, {c.model}, {budget}; {seeds_count(c.seeds)}"

    def public_data(self, scenario: str) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(self.split(scenario).public)
        return self.dataset.x_train[idx], self.dataset.y_train[idx]

    def make_start(self, scenario: str, name: str) -> Start:
        """The starting model ``name`` of a scenario and its cost (the KD phase for the KD starts): the start's
        registry entry builds it (``kdlib.fl.starts``)."""
        return get_start(name).build(self, scenario)

    # ------------------------------------------------------------------------------------------- running

    def jobs(self) -> list[Job]:
        """Every (scenario, start, seed) of the study, one stored record each; seed by seed, random starts first
        in each scenario (a relative target needs their curve)."""
        return [(s, n, seed) for seed in self.seeds for s in self.cfg.scenarios for n in self.cfg.starts]

    def job_key(self, job: Job) -> str:
        """The results-store key of one (scenario, start, seed) job."""
        scenario, start, seed = job
        return run_key(KIND, run_config(self.cfg.replace(seed=seed), scenario, start))

    def complete_seeds(self) -> int:
        """How many of the study's seeds, from its first, have every (scenario, start) stored: those that 08 can
        judge the claim on without running anything (``kdlib.study.parallel.complete_seeds``)."""
        return complete_seeds(self)

    def pending(self, force: bool = False) -> list[Job]:
        """The jobs of the study not in the store yet (all of them with ``force``)."""
        stored = self.store.keys()
        return [job for job in self.jobs() if force or self.job_key(job) not in stored]

    def run_all(self, force: bool = False, verbose: bool = False) -> pd.DataFrame:
        """Run every missing job (all with ``force``) with the study's one runner (``parallel.run_jobs``: each
        under the store's claim on its key, a job another process is computing left to it and waited for at the
        end, so each is computed and stored once); return the summary over every seed."""
        self.verbose = verbose
        with torch_threads(self.threads):
            run_jobs(self, self.jobs(), workers=1, force=force)
        return self.summary()

    def run_batch(self, jobs: Sequence[Job], force: bool = False) -> None:
        """Run ``jobs`` (claimed by the runner) and store them: each seed's in one Flower simulation."""
        for seed in dict.fromkeys(job[2] for job in jobs):
            self.for_seed(seed)._run([(s, n) for s, n, job_seed in jobs if job_seed == seed], self.verbose)

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

            options = SimulationOptions(self.device, self.num_cpus, self.progress, verbose)
            simulate(jobs, self.cfg, evaluate_data, on_done, options)

    def _scratch_curve(self, scenario: str) -> list[float]:
        record = self.store.get(self.job_key((scenario, "random", self.cfg.seed)))
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
            device=resolve_device(self.device).type,
            description=self.dataset.description,
        )

    # ------------------------------------------------------------------------------------------- reading

    def records(self) -> list[dict]:
        """The stored runs of this study (latest per run, every seed), with their per-round curves."""
        return self.store.latest({self.job_key(job) for job in self.jobs()})

    def frame(self) -> pd.DataFrame:
        """The study's stored runs, one row each (every seed); the target columns follow this config's target rule
        (it is analysis, not part of a run's identity, so changing it re-reads the stored curves instead of
        rerunning), the target of each seed from that seed's own random start."""
        records = self.records()
        df = self.store.latest_frame(KIND, {r["key"] for r in records})
        if df.empty:
            return df
        df = df.set_index("key")
        scratch = {
            (r["config"]["scenario"], r["config"]["seed"]): [row["accuracy"] for row in r["curves"] if row["round"] > 0]
            for r in records
            if r["config"]["start"] == "random"
        }
        for r in records:
            upload = r["metrics"].get("start_mb", 0.0) * 1024**2
            baseline = scratch.get((r["config"]["scenario"], r["config"]["seed"]), [])
            for column, value in target_metrics(r["curves"], baseline, upload, self.cfg).items():
                df.loc[r["key"], column] = value
        return df.reset_index()

    def summary(self) -> pd.DataFrame:
        """``round_reduction_summary`` of the study's runs: one row per (scenario, start, seed)."""
        return round_reduction_summary(self.frame())

    def curves(self) -> pd.DataFrame:
        """One row per (scenario, start, seed, round): test accuracy (fraction), loss, MB communicated."""
        targets = self.frame().set_index("key")["target_accuracy"] if self.records() else {}
        rows = []
        for record in self.records():
            for row in record["curves"]:
                rows.append(
                    {
                        "scenario": record["config"]["scenario"],
                        "start": record["config"]["start"],
                        "seed": record["config"]["seed"],
                        "round": row["round"],
                        "accuracy": row["accuracy"],
                        "loss": row["loss"],
                        "mb": (row["bytes_down"] + row["bytes_up"]) / 1024**2,
                        "target": targets[record["key"]],
                    }
                )
        return pd.DataFrame(rows)

    def clients_frame(self) -> pd.DataFrame:
        """The pre-trained client models per scenario and seed: data size and test accuracy."""
        rows = [
            {"scenario": s, "seed": seed, "client": i, "train_size": meta.get("train_size"),
             "test_acc": meta.get("test_acc")}
            for seed in self.seeds
            for s in self.cfg.scenarios
            for i, (_, meta) in enumerate(self.for_seed(seed).client_models(s))
        ]  # fmt: skip
        return pd.DataFrame(rows)


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
    for name in ("dataset", "seed", "seeds"):  # a notebook's None parameter: the scale's value
        if name in overrides and overrides[name] is None:
            del overrides[name]
    cfg = federated_scale_config(scale, **_own_overrides(overrides))
    return FederatedStudy(cfg, ResultsStore.open("study", results), device=device, progress=progress)


def _own_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides meant for this study (:func:`kdlib.study.config.own_overrides`): the distillation study's
    ``StudyConfig`` fields that the federated study lacks are dropped, with a warning."""
    from kdlib.study.config import StudyConfig, own_overrides

    return own_overrides(overrides, FederatedConfig, StudyConfig, "federated study")
