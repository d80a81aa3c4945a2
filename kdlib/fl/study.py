"""The federated study: a config bound to its data, clients' pre-trained models, results store and device; runs
every missing (scenario, start) in one Flower simulation and reads the stored runs back."""

from __future__ import annotations

import functools
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from kdlib.core.distill import PartitionTeaching, run_dp
from kdlib.core.metrics import accuracy
from kdlib.core.models import build_model
from kdlib.core.progress import tqdm
from kdlib.core.train import RunOptions, TrainConfig, predict_logits, seed_everything, train_supervised
from kdlib.data.datasets import Dataset
from kdlib.errors import KDConfigError
from kdlib.fl.analysis import (
    round_reduction_summary,
    target_metrics,
)
from kdlib.fl.config import KD_STARTS, KIND, STARTS, FederatedConfig, federated_scale_config
from kdlib.fl.fedavg import FLJob, FLRun, model_bytes
from kdlib.fl.simulation import SimulationOptions, simulate, torch_threads
from kdlib.fl.starts import KDRecipe, Start, distill_averaged
from kdlib.fl.task import ClientSplit, DataSpec, cached_dataset, cached_split
from kdlib.study.parties import cached_party
from kdlib.study.results import ResultsStore, config_key, run_key

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
        return f"{c.num_clients} clients, {c.model}, {c.rounds} rounds x {c.local.epochs} local epoch(s)"

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
            recipe = KDRecipe(c.temperature, c.kd_alpha, c.kd)
            history = distill_averaged(student, teachers, (x, y), recipe, device=dev, progress=self.progress)
        else:
            outcome = run_dp(
                student, x, y, PartitionTeaching(teachers, c.temperature, c.kd_alpha, c.dp_variant), c.kd,
                RunOptions(dev, self.progress),
            )
            history, extra = outcome.history, {"routing": outcome.extra["routing"]}
        wall = time.perf_counter() - started
        acc = accuracy(predict_logits(student, data.x_test, dev), data.y_test)
        extra["kd_history"] = history
        return Start(
            name, _cpu_state(student), acc, wall, len(x), c.kd.epochs, len(teachers) * model_bytes(student), extra
        )

    # ------------------------------------------------------------------------------------------- running

    def jobs(self) -> list[tuple[str, str]]:
        """Every (scenario, start) of the config, one stored record each."""
        return [(s, n) for s in self.cfg.scenarios for n in self.cfg.starts]

    def key(self, scenario: str, start: str) -> str:
        """The results-store key of one (scenario, start) run."""
        return run_key(KIND, run_config(self.cfg, scenario, start))

    def pending(self, force: bool = False) -> list[tuple[str, str]]:
        """The (scenario, start) runs of the config not in the store yet (all of them with ``force``)."""
        jobs = self.jobs()
        if force:
            return jobs
        stored = self.store.keys()
        return [(s, n) for s, n in jobs if self.key(s, n) not in stored]

    def run_all(self, force: bool = False, verbose: bool = False) -> pd.DataFrame:
        """Run every missing (scenario, start) (all with ``force``) in one Flower simulation; return the summary.

        Like the distillation study's runs, each is made under the store's claim on its key
        (``ResultsStore.claim``): a run that another process is computing is left to it, then waited for at the
        end (and run here if that process ended without storing it), so each is computed and stored once. Random
        starts run first in each scenario: a relative target needs their curve.
        """
        todo = self.pending(force)
        with torch_threads(self.threads):
            if force:
                self._run(todo, verbose)
            else:
                others = self.run_claimed(todo, verbose=verbose, wait=False)
                self.run_claimed(others, verbose=verbose, wait=True)
        return self.summary()

    def run_claimed(
        self, jobs: list[tuple[str, str]], *, verbose: bool = False, wait: bool = False
    ) -> list[tuple[str, str]]:
        """Run, in one simulation, the jobs whose claim this process gets (with ``wait``: once other claimants
        are done); return the jobs it did not run (stored already, or being computed by another process)."""
        with ExitStack() as claims:  # claims taken in job order, so that waiting processes cannot deadlock
            mine = [job for job in jobs if claims.enter_context(self.store.claim(self.key(*job), wait=wait))]
            self._run(mine, verbose)
        return [job for job in jobs if job not in mine]

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
        record = self.store.get(self.key(scenario, "random"))
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
        return self.store.latest({self.key(s, n) for s, n in self.jobs()})

    def frame(self) -> pd.DataFrame:
        """This config's stored runs, one row each; the target columns follow this config's target rule (it is
        analysis, not part of a run's identity, so changing it re-reads the stored curves instead of rerunning)."""
        records = self.records()
        df = self.store.latest_frame(KIND, {r["key"] for r in records})
        if df.empty:
            return df
        df = df.set_index("key")
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

    from kdlib.study.config import StudyConfig

    own = {f.name for f in fields(FederatedConfig)}
    other = {f.name for f in fields(StudyConfig)} - own
    dropped = sorted(k for k in overrides if k in other)
    if dropped:
        warnings.warn(f"not used by the federated study (StudyConfig fields): {', '.join(dropped)}", stacklevel=3)
    return {k: v for k, v in overrides.items() if k not in other}
