"""One runner for both studies: the distillation study and the federated study run their jobs through
``kdlib.study.parallel.run_jobs`` (one key, claim and resume loop); the federated study has seeds, and its starts are
registry entries like the methods."""

from __future__ import annotations

import pandas as pd
import pytest

import kdlib.fl.study as fl_study
import kdlib.study.parallel as parallel
from kdlib.core.train import TrainConfig
from kdlib.errors import KDConfigError
from kdlib.fl.config import FederatedConfig, federated_scale_config
from kdlib.fl.fedavg import FLRun
from kdlib.fl.starts import (
    Start,
    StartEntry,
    get_start,
    kd_start_names,
    register_start,
    start_label,
    start_names,
    unregister_start,
)
from kdlib.fl.study import FederatedStudy, run_config
from kdlib.study.config import scale_config
from kdlib.study.findings import federated_claims
from kdlib.study.results import ResultsStore
from kdlib.study.runner import Study

TINY_FL = dict(dataset="digits", n_train=None, n_test=None, scenarios=("iid",), num_clients=2, model="mlp", rounds=3)


def fake_simulate(simulated: list):
    """A made-up curve per job (no Ray, no Flower): KD starts reach higher accuracy sooner."""

    def simulate(jobs, cfg, evaluate_data, on_done, options=None):
        simulated.append([(job.scenario, job.start, cfg.seed) for job in jobs])
        for job in jobs:
            step = 0.1 if job.start == "random" else 0.3
            curve = [{"round": r, "accuracy": min(0.9, step * (r + 1)), "loss": 1.0, "bytes_down": 10, "bytes_up": 10,
                      "train_loss": 1.0} for r in range(cfg.rounds + 1)]  # fmt: skip
            on_done(job, FLRun(curve, 0.0))

    return simulate


@pytest.fixture()
def toy_start():
    """A KD-role start registered from this test file only: a copy of the random start."""

    def build(study: FederatedStudy, scenario: str) -> Start:
        made = get_start("random").build(study, scenario)
        return Start("toy_kd", made.state, made.test_acc)

    entry = register_start(StartEntry("toy_kd", "toy: a KD start from a test", "kd", ("temperature",), build))
    yield entry
    unregister_start("toy_kd")


def test_both_studies_run_through_the_one_runner(tmp_path, monkeypatch) -> None:
    calls: list[str] = []
    real = parallel.run_jobs

    def spy(study, jobs, **kwargs):
        calls.append(type(study).__name__)
        return real(study, jobs, **kwargs)

    monkeypatch.setattr(parallel, "run_jobs", spy)
    monkeypatch.setattr(fl_study, "run_jobs", spy)
    monkeypatch.setattr(fl_study, "simulate", fake_simulate([]))
    fed = FederatedStudy(FederatedConfig(**TINY_FL, starts=("random",)), ResultsStore.open("fl", tmp_path),
                         device="cpu", progress=False, cache_dir=tmp_path)  # fmt: skip
    fed.run_all()
    cfg = scale_config("smoke", dataset="digits", n_train=None, n_test=None, teacher_model="mlp", student_model="mlp",
                       scenarios=("iid",), methods=("finetune",), seeds=1, pretrain={"epochs": 1},
                       distill={"epochs": 1})  # fmt: skip
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path / "cache"))
    Study(cfg, ResultsStore.open("study", tmp_path), device="cpu", progress=False).run_all(workers=1)
    assert calls == ["FederatedStudy", "Study"]
    assert FederatedStudy.batch_jobs and not FederatedStudy.ray_tasks
    assert not Study.batch_jobs and Study.ray_tasks


def test_the_federated_study_runs_over_seeds_with_keys_that_do_not_depend_on_the_seed_count(tmp_path,
                                                                                              monkeypatch) -> None:
    simulated: list = []
    monkeypatch.setattr(fl_study, "simulate", fake_simulate(simulated))
    cfg = FederatedConfig(**TINY_FL, starts=("random", "one_client"), seeds=2, pretrain=TrainConfig(epochs=1))
    fed = FederatedStudy(cfg, ResultsStore.open("fl", tmp_path), device="cpu", progress=False, cache_dir=tmp_path)
    seed_0, seed_1 = [("iid", "random", 0), ("iid", "one_client", 0)], [("iid", "random", 1), ("iid", "one_client", 1)]
    assert fed.jobs() == seed_0 + seed_1
    one_seed = FederatedStudy(cfg.replace(seed=1, seeds=1), fed.store, device="cpu", progress=False)
    assert fed.job_key(("iid", "random", 1)) == one_seed.job_key(("iid", "random", 1))  # seeds is not in the key
    assert fed.job_key(("iid", "random", 0)) != fed.job_key(("iid", "random", 1))
    summary = fed.run_all()
    assert simulated == [seed_0, seed_1]  # claimed together, one simulation per seed
    assert sorted(summary["seed"]) == [0, 0, 1, 1] and set(summary["role"]) == {"baseline", "pretrained"}
    assert (summary.loc[summary["start"] == "one_client", "reduction_pct"] > 0).all()
    assert set(fed.curves()["seed"]) == {0, 1} and "1 seed" not in fed.caption_details()
    fed.run_all()
    assert len(simulated) == 2 and len(fed.store.records()) == 4  # stored: nothing runs again


def test_a_start_registered_from_a_test_is_everywhere(tmp_path, monkeypatch, toy_start) -> None:
    assert "toy_kd" in start_names() and "toy_kd" in kd_start_names() and start_label("toy_kd").startswith("toy")
    cfg = FederatedConfig(**TINY_FL, starts=("random", "toy_kd"))
    assert run_config(cfg, "iid", "toy_kd")["temperature"] == cfg.temperature
    monkeypatch.setattr(fl_study, "simulate", fake_simulate([]))
    fed = FederatedStudy(cfg, ResultsStore.open("fl", tmp_path), device="cpu", progress=False, cache_dir=tmp_path)
    summary = fed.run_all()
    assert set(summary["start"]) == {"random", "toy_kd"}
    (claim,) = federated_claims(summary)  # its role makes it a KD start judged against the paper's claim
    assert "toy_kd" in claim.claim

    from matplotlib.text import Text

    from kdlib.notebook.plots_federated import plot_rounds_to_target

    fig = plot_rounds_to_target(summary, "caption", cfg.rounds)
    assert any(text.get_text() == start_label("toy_kd") for text in fig.findobj(Text))  # its label, in the figure


def test_the_registry_refuses_what_it_cannot_hold() -> None:
    with pytest.raises(KDConfigError, match="start"):
        get_start("nope")
    with pytest.raises(KDConfigError, match="not registered yet"):
        register_start(get_start("kd_avg"))
    with pytest.raises(KDConfigError, match="role"):
        StartEntry("x", "x", "teacher", (), get_start("random").build)
    with pytest.raises(KDConfigError, match="baseline"):
        unregister_start("random")
    with pytest.raises(KDConfigError, match="starts"):
        FederatedConfig(**TINY_FL, starts=("random", "nope"))
    with pytest.raises(KDConfigError, match="seeds"):
        FederatedConfig(**TINY_FL, seeds=0)


def test_both_studies_refuse_a_none_override_alike() -> None:
    for make in (scale_config, federated_scale_config):
        with pytest.raises(KDConfigError, match="rounds|seed"):
            make("smoke", seed=None) if make is scale_config else make("smoke", rounds=None)
        assert make("smoke", n_train=None).n_train is None
    assert federated_scale_config("smoke", target_accuracy=None).target_accuracy is None
    assert federated_scale_config("full").seeds >= 5


def test_an_empty_summary_keeps_its_columns() -> None:
    assert federated_claims(pd.DataFrame(columns=["start", "role", "rounds_to_target", "rounds_random"])) == []
