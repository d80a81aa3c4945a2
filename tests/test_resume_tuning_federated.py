"""Kill-and-resume of a tuned-KD search and of a federated run: finished work is kept, nothing is done twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SEARCH_SCRIPT = """
import json, sys, time, torch
from kdlib.data import load_dataset
from kdlib.models import build_model
from kdlib.distill import TuningProblem
from kdlib.train import RunOptions, TrainConfig, seed_everything, set_cpu_threads
from kdlib.tune import SearchStore, smart_search

set_cpu_threads(1)
storage, n_trials, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
data = load_dataset("digits", progress=False)
seed_everything(0)
teacher = build_model("mlp", 10, data.in_shape)
student = build_model("mlp", 10, data.in_shape)

def make_student():
    time.sleep(delay)  # slow each trial down so the parent can kill the search between trials
    fresh = build_model("mlp", 10, data.in_shape)
    fresh.load_state_dict(student.state_dict())
    return fresh

cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05)
problem = TuningProblem(make_student, teacher, data.x_train, data.y_train, (1.0, 2.0, 4.0, 8.0), (0.25, 0.5, 0.75),
                        cfg)
result = smart_search(problem, n_trials, seed=0, store=SearchStore(storage, "killed-search"),
                      options=RunOptions("cpu", progress=False))
print(json.dumps({"trainings": result.trainings, "total": result.total_trainings}))
"""


def completed_trials(storage: str) -> list[tuple[float, float, float]]:
    """Distinct trained points (T, alpha, score): a repeated suggestion is stored again with the reused score."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name="killed-search", storage=storage)
    except KeyError:
        return []
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted({(t.params["temperature"], t.params["alpha"], t.value) for t in done})


def test_a_killed_search_resumes_without_redoing_finished_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'tuning.sqlite3'}"
    script = tmp_path / "search.py"
    script.write_text(SEARCH_SCRIPT)
    env = {**os.environ, "KDLIB_RESULTS": str(tmp_path / "results")}
    proc = subprocess.Popen([sys.executable, str(script), storage, "6", "1.0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while len(completed_trials(storage)) < 2:
            assert proc.poll() is None, f"the search ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the search did not complete 2 trials in time"
            time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = completed_trials(storage)
    assert 2 <= len(before) < 6, "the kill should land mid-search"

    rerun = subprocess.run([sys.executable, str(script), storage, "6", "0"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    outcome = json.loads(rerun.stdout.strip().splitlines()[-1])
    after = completed_trials(storage)
    assert outcome["total"] == 6 and len(after) == 6
    assert outcome["trainings"] == 6 - len(before), "the resumed search trained finished points again"
    assert set(before) <= set(after), "trials finished before the kill changed"
    points = [(t, a) for t, a, _ in after]
    assert len(points) == len(set(points)), "one grid point got two different scores"


FEDERATED_SCRIPT = """
import sys
from kdlib.federated import FederatedConfig, FederatedStudy
from kdlib.results import ResultsStore
from kdlib.train import TrainConfig

folder = sys.argv[1]
fast = TrainConfig(epochs=2, batch_size=32, lr=0.05)
cfg = FederatedConfig(dataset="digits", n_train=None, n_test=None, scenarios=("iid", "dirichlet:0.5"),
                      starts=("random", "one_client", "kd_avg"), num_clients=2, model="mlp", rounds=3,
                      pretrain=fast, kd=fast, local=TrainConfig(epochs=1, batch_size=32, lr=0.05))
study = FederatedStudy(cfg, ResultsStore.open("fl", folder), cache_dir=folder, progress=False, num_cpus=2)
study.run_all()
print("pending", len(study.pending()))
"""


def test_a_killed_federated_run_resumes_from_its_stored_runs(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from kdlib.federated import _descendants
    from kdlib.results import ResultsStore

    script = tmp_path / "fl.py"
    script.write_text(FEDERATED_SCRIPT)
    store = ResultsStore.open("fl", tmp_path)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(store.records()) < 1:
            assert proc.poll() is None, f"the run ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no federated run was stored in time"
            time.sleep(0.2)
    finally:
        family = _descendants(proc.pid) | {proc.pid}
        for pid in family:  # the driver and every Ray process it started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
    records_before = store.records()
    done_before = {(r["config"]["scenario"], r["config"]["start"]) for r in records_before}
    assert 1 <= len(done_before) < 6, "the kill should land mid-run"

    rerun = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.strip().splitlines()[-1] == "pending 0"
    assert store.records()[: len(records_before)] == records_before, "records stored before the kill changed"
    runs = [(r["config"]["scenario"], r["config"]["start"]) for r in store.records()]
    assert len(runs) == len(set(runs)) == 6, "a run is missing or stored twice"
