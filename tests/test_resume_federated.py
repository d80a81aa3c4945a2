"""Kill-and-resume of a federated run: finished work is kept, nothing is done twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FEDERATED_SCRIPT = """
import sys
from kdlib.fl.config import FederatedConfig
from kdlib.fl.study import FederatedStudy
from kdlib.study.results import ResultsStore
from kdlib.core.train import TrainConfig

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
    from kdlib.fl.simulation import descendants as _descendants
    from kdlib.study.results import ResultsStore

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
    assert {r["device"] for r in store.records()} == {"cpu"}  # where each ran, for the provenance table
