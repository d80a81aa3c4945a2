"""The study runner: for each seed, scenario and method, pre-trained parties -> KD method -> metrics -> store.

Each (scenario, method, seed) is one job (``Study.jobs``) and one stored record, whose config holds its own
``seed``. A run whose config is stored already is skipped (resume), unless ``force``; so an interrupted study
restarts where it stopped, and the pre-trained parties (one pair per scenario and seed) come from their cache.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import pandas as pd
import torch

from kdlib.core.calibration import calibration_metrics, reliability_bins
from kdlib.core.cost import model_cost
from kdlib.core.distill import DistillOutcome
from kdlib.core.epoch_selection import EpochSelection
from kdlib.core.metrics import accuracy, distillation_metrics
from kdlib.core.models import PUBLISHED_PREFIX
from kdlib.core.train import predict_logits, resolve_device, seed_everything, set_cpu_threads
from kdlib.data.datasets import Dataset, Subsample, load_dataset
from kdlib.study.config import StudyConfig
from kdlib.study.methods import MethodRun, get_method
from kdlib.study.parties import Scenario, make_scenario, pretrained_party
from kdlib.study.results import ResultsStore, run_key
from kdlib.study.stats import interval_table, seeds_count

COMMON_FIELDS = (
    "dataset",
    "n_train",
    "n_test",
    "seed",
    "teacher_model",
    "student_model",
    "pretrain",
    "distill",
    "transfer",
    "epoch_selection",
)
DISTILL_ORDER_OFFSET = 500
"""A seed's distillation batches are drawn with ``1000 * seed + 500 + distill.seed`` (``distillation_seed``): apart
from its parties' pre-training seeds (``1000 * seed + party``), and different for every seed."""


def distillation_seed(cfg: StudyConfig) -> int:
    """The seed of a run's distillation batch order: it changes with the study seed (so a seed varies the
    subsample, the partition, pre-training and the distillation order), and with ``distill.seed``."""
    return 1000 * cfg.seed + DISTILL_ORDER_OFFSET + cfg.distill.seed


def run_config(cfg: StudyConfig, scenario: str, method: str, *, seed: int | None = None) -> dict:
    """The fields that decide one (scenario, method, seed) run: its identity in the results store. The common
    fields, then those the method's registry entry names (``kdlib.study.methods``).

    ``seed`` defaults to ``cfg.seed``; the number of seeds is not part of a run's identity. ``val_size`` is left
    out when 0 (no held-out split), so such runs keep the keys they had before the split existed.
    """
    entry = get_method(method)
    full = cfg.as_dict()
    if seed is not None:
        full["seed"] = cfg.replace(seed=seed).seed  # validated like the config's own seed
    fields = COMMON_FIELDS + entry.fields + (("public_fraction",) if cfg.transfer == "public" else ())
    fields += entry.key_fields(cfg)
    if cfg.val_size and "val_size" not in fields:
        fields += ("val_size",)
    config = {"scenario": scenario, "method": method, "scale": cfg.scale, **{k: full[k] for k in fields}}
    if entry.settings:  # a method's own settings (none of the built-in methods has any: their keys stay)
        config["settings"] = entry.resolved_settings(cfg)
    return config


@dataclass
class Study:
    """A study config bound to its data, results store and device."""

    cfg: StudyConfig
    store: ResultsStore
    device: str = "auto"
    progress: bool = True
    data_root: str | None = None
    _scenarios: dict[tuple[str, int], Scenario] = field(default_factory=dict)
    _datasets: dict[int, Dataset] = field(default_factory=dict)
    label: ClassVar[str] = "study"
    batch_jobs: ClassVar[bool] = False
    """The runner's contract (``kdlib.study.parallel``): each claimed job runs on its own."""
    ray_tasks: ClassVar[bool] = True

    def __post_init__(self) -> None:
        resolve_device(self.device)  # a bad device fails here, not after the data are loaded
        from kdlib.paths import cache_dir, check_writable_folder, figures_dir

        check_writable_folder("KDLIB_CACHE", cache_dir())  # every folder written to, before the first step
        check_writable_folder("KDLIB_FIGURES", figures_dir())
        if resolve_device(self.device).type == "cpu":
            set_cpu_threads()

    @property
    def seeds(self) -> tuple[int, ...]:
        """The study's seeds: ``cfg.seed``, ``cfg.seed + 1``, ... (``cfg.seeds`` of them)."""
        return tuple(range(self.cfg.seed, self.cfg.seed + self.cfg.seeds))

    def jobs(self, methods: Sequence[str] | None = None) -> list[tuple[str, str, int]]:
        """Every (scenario, method, seed) of the study (or of some ``methods``), one stored record each; seed by
        seed, so that an interrupted study has whole seeds done first."""
        chosen = self.cfg.methods if methods is None else tuple(methods)
        for method in chosen:
            get_method(method)  # an unknown method fails here, naming the registered ones
        return [(s, m, seed) for seed in self.seeds for s in self.cfg.scenarios for m in chosen]

    def job_key(self, job: tuple[str, str, int]) -> str:
        """The results-store key of one (scenario, method, seed) job."""
        scenario, method, seed = job
        return run_key("distill", run_config(self.cfg, scenario, method, seed=seed))

    def run_batch(self, jobs: Sequence[tuple[str, str, int]], force: bool = False) -> None:
        """Run and store ``jobs`` (claimed by the runner), one after the other."""
        for scenario, method, seed in jobs:
            self.run(scenario, method, seed=seed, force=force)

    def config_for(self, seed: int | None = None) -> StudyConfig:
        """The config of one seed's runs (``cfg`` with ``seed`` set; ``None``: ``cfg.seed``), its distillation
        batches drawn with ``distillation_seed``."""
        cfg = self.cfg if seed is None or seed == self.cfg.seed else self.cfg.replace(seed=seed)
        return cfg.replace(distill={"seed": distillation_seed(cfg)})

    @cached_property
    def dataset(self) -> Dataset:
        """The data of the first seed (``cfg.seed``); ``dataset_for`` gives any seed's."""
        return self.dataset_for(self.cfg.seed)

    def dataset_for(self, seed: int) -> Dataset:
        """The data set as loaded for one seed (its train / test subsets are seeded)."""
        if seed not in self._datasets:
            self._datasets[seed] = load_dataset(
                self.cfg.dataset,
                self.data_root,
                subsample=Subsample(self.cfg.n_train, self.cfg.n_test, seed),
                progress=self.progress,
            )
        return self._datasets[seed]

    def release_data(self) -> None:
        """Drop the loaded data sets and splits (they load again when asked for): a driver whose runs go to Ray
        workers, which load their own, would otherwise hold them for the whole study (about 0.6 GB at ``full``)."""
        self._datasets.clear()
        self._scenarios.clear()
        self.__dict__.pop("dataset", None)  # the cached_property

    def scenario(self, name: str, *, seed: int | None = None) -> Scenario:
        """The scenario's split for one seed (default ``cfg.seed``)."""
        seed = self.cfg.seed if seed is None else seed
        if (name, seed) not in self._scenarios:
            self._scenarios[name, seed] = make_scenario(self.dataset_for(seed), name, self.config_for(seed))
        return self._scenarios[name, seed]

    def parties(self, name: str, *, seed: int | None = None) -> tuple[tuple, tuple]:
        """``((teacher, meta), (student, meta))`` of a scenario and seed, pre-trained or loaded from the cache."""
        seed = self.cfg.seed if seed is None else seed
        scenario, data, cfg = self.scenario(name, seed=seed), self.dataset_for(seed), self.config_for(seed)
        teacher = pretrained_party(data, scenario, 0, cfg.teacher_model, cfg, self.device, progress=self.progress)
        student = pretrained_party(data, scenario, 1, cfg.student_model, cfg, self.device, progress=self.progress)
        return teacher, student

    def caption_details(self) -> str:
        """What a figure's caption says of this study: the models (a published teacher's provenance), the seeds,
        and any departure from the scale."""
        from kdlib.study.config import scale_departures

        teacher = self.cfg.teacher_model
        if teacher.startswith(PUBLISHED_PREFIX):  # say why it is strong: it has seen every image the parties hold
            teacher += " (trained by others on all 50,000 original CIFAR-10 training images)"
        text = f"teacher {teacher}, student {self.cfg.student_model}; {seeds_count(self.cfg.seeds)}"
        if changed := scale_departures(self.cfg):
            text += "; changed: " + ", ".join(changed)
        return text

    def transfer_indices(self, scenario: Scenario) -> torch.Tensor:
        if self.cfg.transfer == "student":
            idx = scenario.parts[1]
        elif self.cfg.transfer == "union":
            idx = sorted({*scenario.parts[0].tolist(), *scenario.parts[1].tolist()})
        else:
            idx = scenario.public
        return torch.as_tensor(idx, dtype=torch.long)

    def run(self, scenario_name: str, method: str, *, seed: int | None = None, force: bool = False) -> dict:
        """Run one method on one scenario with one seed (default ``cfg.seed``) and store it; return the stored
        record (the old one if skipped)."""
        seed = self.cfg.seed if seed is None else seed
        config = run_config(self.cfg, scenario_name, method, seed=seed)
        if not force and (old := self.store.get(run_key("distill", config))) is not None:
            return old
        started = time.perf_counter()
        scenario = self.scenario(scenario_name, seed=seed)
        (teacher, teacher_meta), (student, student_meta) = self.parties(scenario_name, seed=seed)
        data = self.dataset_for(seed)
        idx = self.transfer_indices(scenario)
        x, y = data.x_train[idx], data.y_train[idx]
        entry = get_method(method)
        before = predict_logits(student, data.x_test, self.device)
        # the record's teacher is the one the method learns from: a self-distilling method's is the student before
        teacher_test = before if entry.teacher == "self" else predict_logits(teacher, data.x_test, self.device)
        pristine = copy.deepcopy(student)
        selection = self.epoch_selection(student, scenario, data, entry.selects_epoch)
        val_before = selection.score() if selection is not None else None

        def on_epoch(epoch: int) -> dict:
            record = {"test_acc": accuracy(predict_logits(student, data.x_test, self.device), data.y_test)}
            if selection is not None:
                record["val_acc"] = selection.observe(epoch)
            return record

        run = MethodRun(
            student, teacher, pristine, x, y, data, scenario, self.config_for(seed), device=self.device,
            progress=self.progress, on_epoch_end=on_epoch, method=method,
        )  # fmt: skip
        seed_everything(seed)
        outcome = self._dispatch(method, run)
        choice: dict = {"chosen_epoch": len(outcome.history)}
        if selection is not None:
            choice = {"chosen_epoch": selection.restore(), "val_before": val_before, "val_after": selection.best_score}
            choice["val_gain"] = selection.best_score - val_before
        after = predict_logits(student, data.x_test, self.device)
        metrics = distillation_metrics(
            before, after, teacher_test, data.y_test, scenario.own_classes(1), data.num_classes
        ).as_dict()
        metrics.update(choice)
        metrics.update(calibration_metrics(before, after, teacher_test, data.y_test))
        metrics.update(model_cost(copy.deepcopy(student).cpu(), data.in_shape))
        extra = dict(outcome.extra)
        grid = extra.pop("grid", None)
        metrics.update({k: v for k, v in extra.items() if not isinstance(v, dict)})
        metrics.update({f"routing_{k}": v for k, v in extra.get("routing", {}).items()})
        metrics.update(transfer_size=len(idx), student_own_classes=len(scenario.own_classes(1)))
        return self.store.append(
            "distill",
            config,
            metrics,
            curves=outcome.history,
            grid=grid,
            parties={"teacher": teacher_meta, "student": student_meta},
            reliability={
                "before": reliability_bins(before, data.y_test),
                "after": reliability_bins(after, data.y_test),
            },
            wall_s=round(time.perf_counter() - started, 3),
            device=resolve_device(self.device).type,
            description=data.description,
        )

    def epoch_selection(
        self, student: torch.nn.Module, scenario: Scenario, data: Dataset, selects_epoch: bool
    ) -> EpochSelection | None:
        """The run's watcher of validation accuracy per epoch (``kdlib.core.epoch_selection``): it chooses the returned
        epoch under ``epoch_selection="validation"`` when the method ``selects_epoch``, else only records the
        scores; None when there is no validation split."""
        if scenario.validation is None or len(scenario.validation) == 0:
            return None
        idx = torch.as_tensor(scenario.validation, dtype=torch.long)
        active = self.cfg.epoch_selection == "validation" and selects_epoch
        return EpochSelection(student, data.x_train[idx], data.y_train[idx], self.device, active=active)

    def _dispatch(self, method: str, run: MethodRun) -> DistillOutcome:
        """The registered method's run function on one run's inputs (``kdlib.study.methods``)."""
        return get_method(method).run(run)

    def run_all(
        self,
        force: bool = False,
        *,
        methods: Sequence[str] | None = None,
        workers: int | str | None = None,
        ray_address: str | None = None,
    ) -> pd.DataFrame:
        """Every method (or the given ``methods``) on every scenario and seed of the config (skipping stored runs);
        returns the gain table (means over seeds). ``workers``: 0 or 1 runs them here one by one, more (or
        ``"auto"``, one per core) in parallel on Ray, as does a ``ray_address`` (see ``kdlib.study.parallel``); None:
        ``KDLIB_WORKERS``, else 1."""
        from kdlib.study.parallel import run_jobs

        for seed in self.seeds:
            for name in self.cfg.scenarios:
                self.scenario(name, seed=seed)  # every split is checked against the data before any training
        run_jobs(self, self.jobs(methods), workers=workers, address=ray_address, force=force)
        return self.gain_table()

    def complete_seeds(self) -> int:
        """How many of the study's seeds, counted from its first, have every job stored: the seeds that a notebook can
        read without running anything (``--set seeds=N``)."""
        from kdlib.study.parallel import complete_seeds

        return complete_seeds(self)

    def _keys(self, methods: tuple[str, ...] | None = None) -> set[str]:
        return {self.job_key(job) for job in self.jobs() if job[1] in (methods or self.cfg.methods)}

    def records(self, methods: tuple[str, ...] | None = None) -> list[dict]:
        """The stored run records of this config, every seed (latest per run), for curves and tuning grids."""
        return self.store.latest(self._keys(methods))

    def frame(self) -> pd.DataFrame:
        """This config's stored distillation runs, one row per (scenario, method, seed) (latest record per run)."""
        return self.store.latest_frame("distill", self._keys())

    def gain_table(self, metric: str = "gain") -> pd.DataFrame:
        """Scenario x method table of a metric's mean over the stored seeds, in accuracy points (x100)."""
        df = self.frame()
        if df.empty:
            return df
        table = df.pivot_table(index="scenario", columns="method", values=metric) * 100
        order = [s for s in self.cfg.scenarios if s in table.index]
        return table.reindex(index=order, columns=[m for m in self.cfg.methods if m in table.columns]).round(2)

    def gain_summary(self, metric: str = "gain", methods: Sequence[str] | None = None) -> pd.DataFrame:
        """Scenario x method table of ``"mean ± half-width"`` (95% t-interval over seeds) in accuracy points."""
        df = self.frame()
        if df.empty:
            return df
        chosen = [m for m in (methods or self.cfg.methods) if m in set(df["method"])]
        return interval_table(df[df["method"].isin(chosen)], metric, order=(self.cfg.scenarios, chosen))


def open_study(
    scale: str = "smoke",
    device: str = "auto",
    results: str | None = None,
    progress: bool = True,
    scenarios: str | list[str] | None = None,
    **overrides,
) -> Study:
    """The study of a scale, as a notebook opens it (papermill parameters go straight in as overrides)."""
    from kdlib.study.config import scale_config

    if scenarios:
        overrides["scenarios"] = scenarios
    cfg = scale_config(scale, **overrides)
    return Study(cfg, ResultsStore.open("study", results), device=device, progress=progress)
