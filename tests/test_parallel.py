"""Tests for kdlib.study.parallel: Ray workers store what the one-by-one study stores, and several processes on one
store compute each key once (the store's claims)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdlib.errors import KDConfigError
from kdlib.paths import PROJECT_ROOT
from kdlib.study.config import scale_config
from kdlib.study.parallel import resolve_address, resolve_workers, run_claimed
from kdlib.study.results import ResultsStore
from kdlib.study.runner import Study

TINY = dict(
    dataset="digits",
    n_train=None,
    n_test=None,
    teacher_model="mlp",
    student_model="mlp",
    scenarios=("iid", "disjoint"),
    methods=("finetune", "standard", "tuned"),
    pretrain={"epochs": 1},
    distill={"epochs": 1},
    grid_temperatures=(1.0, 4.0, 16.0),
    grid_alphas=(0.5,),
    val_size=100,
)
SETS = [
    "--set", "teacher_model=mlp", "--set", "student_model=mlp", "--set", "scenarios=iid,disjoint",
    "--set", "n_train=null", "--set", "n_test=null", "--set", "methods=finetune,standard,tuned",
    "--set", 'pretrain={"epochs": 1}', "--set", 'distill={"epochs": 1}', "--set", "grid_temperatures=1,4,16",
    "--set", "grid_alphas=0.5", "--set", "val_size=100",
]  # fmt: skip


def _records(path: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keyed = {r["key"]: r for r in records}
    assert len(keyed) == len(records), "a key was stored twice"
    return keyed


def _study(results: Path) -> Study:
    return Study(scale_config("smoke", **TINY), ResultsStore.open("study", results), device="cpu", progress=False)


def test_workers_and_address_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_workers("auto") == (os.cpu_count() or 1)
    assert resolve_workers(0) == resolve_workers("1") == 1
    assert resolve_workers(" 3 ") == 3
    monkeypatch.setenv("KDLIB_WORKERS", "2")
    assert resolve_workers(None) == 2
    for bad in (-1, "many", "٣", 1.5, True):
        with pytest.raises(KDConfigError, match="workers"):
            resolve_workers(bad)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(None) == "10.0.0.1:6379"
    assert resolve_address("ray://head:10001") == "ray://head:10001"
    monkeypatch.delenv("RAY_ADDRESS")
    assert resolve_address(None) is None


def test_a_claimed_job_is_left_to_its_claimant(tmp_path: Path, isolated_folders) -> None:
    study = _study(tmp_path / "results")
    job = ("iid", "finetune", 0)

    with study.store.claim(study.job_key(job)) as mine:  # as if another process were computing it
        assert mine
        assert run_claimed(study, job, wait=False) is None
    assert not study.store.path.exists() or not study.store.records()
    record = run_claimed(study, job, wait=False)
    assert record is not None and record["key"] == study.job_key(job)
    assert run_claimed(study, job, wait=False) == study.store.get(record["key"])  # stored: not run again
    assert len(study.store.records()) == 1


@pytest.mark.slow
def test_two_ray_workers_store_the_same_records_as_one_by_one(tmp_path: Path, isolated_folders, monkeypatch) -> None:
    one_by_one = _study(tmp_path / "sequential")
    one_by_one.run_all(workers=1)
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path / "cache-ray"))  # the workers pre-train their own parties
    parallel = _study(tmp_path / "ray")
    table = parallel.run_all(workers=2)
    first, second = _records(one_by_one.store.path), _records(parallel.store.path)
    assert len(first) == len(one_by_one.jobs()) >= 6 and first.keys() == second.keys()
    def computed(metrics: dict) -> dict:  # latency is a timing of this machine's moment, not a computed result
        return {k: v for k, v in metrics.items() if not k.startswith("latency_")}

    for key, record in first.items():
        assert computed(record["metrics"]) == computed(second[key]["metrics"]), record["config"]["method"]
        assert record["grid"] == second[key]["grid"]
    assert table.equals(one_by_one.gain_table())
    assert any((tmp_path / "cache-ray").rglob("*.safetensors"))


def test_the_driver_lets_go_of_the_data_before_ray_starts(tmp_path: Path, isolated_folders, monkeypatch) -> None:
    import kdlib.study.parallel as parallel

    study = _study(tmp_path / "results")
    loaded = study.dataset
    study.scenario(study.cfg.scenarios[0])
    held: list[int] = []

    class NoRay(Exception):
        pass

    def ray_session(_workers, _address):
        held.append(len(study._datasets) + len(study._scenarios) + ("dataset" in study.__dict__))
        raise NoRay

    monkeypatch.setattr(parallel, "_ray_session", ray_session)
    with pytest.raises(NoRay):
        study.run_all(workers=2)
    assert held == [0], "the driver still held data when Ray started"
    assert study.dataset is not loaded and len(study.dataset.x_train) == len(loaded.x_train)  # loads again


@pytest.mark.slow
def test_two_study_processes_on_one_store_compute_each_key_once(tmp_path: Path, isolated_folders) -> None:
    results = tmp_path / "results"
    command = [sys.executable, "-m", "kdlib", "study", "--dataset", "digits", "--quiet", "--results", str(results)]
    env = {**os.environ, "KDLIB_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    processes = [
        subprocess.Popen([*command, *SETS], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()[-2000:]
    records = _records(results / "study.jsonl")
    assert len(records) == len(_study(results).jobs()) >= 6  # every job stored, none twice
    for out, _err in outputs:  # both processes finished with the whole table
        assert "finetune" in out.decode() and "tuned" in out.decode()


def test_parallel_workers_start_each_scenarios_longest_method_first() -> None:
    from kdlib.study.methods import get_method
    from kdlib.study.parallel import launch_order

    jobs = [(s, m, seed) for seed in (0, 1) for s in ("iid", "disjoint") for m in ("finetune", "standard", "tuned",
                                                                                  "dml", "dp")]  # fmt: skip
    order = launch_order(jobs)
    assert sorted(order) == sorted(jobs)  # every job once
    pairs = [(s, seed) for s, _, seed in order]
    assert list(dict.fromkeys(pairs)) == [("iid", 0), ("disjoint", 0), ("iid", 1), ("disjoint", 1)]
    for start in range(0, len(order), 5):  # one (scenario, seed) pair after another, as their parties are ready
        methods = [m for _, m, _ in order[start : start + 5]]
        assert methods == ["tuned", "dml", "finetune", "standard", "dp"]  # longest first, ties as given
        costs = [get_method(m).cost for m in methods]
        assert costs == sorted(costs, reverse=True)
