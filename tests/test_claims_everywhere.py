"""No key and no party is computed twice, whatever mix of commands shares one store and cache: ``kdlib run`` takes
the study's per-key claim, and pre-training a party takes a lock beside its checkpoint."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

from torch import nn

from kdlib.study.config import scale_config
from kdlib.study.parties import cached_party
from kdlib.study.results import ResultsStore, run_key
from kdlib.study.runner import run_config


def _train_slowly(log: str, cache: str, start_at: float) -> None:
    """One process's pre-training of the same party: the training appends a line to ``log``."""
    time.sleep(max(0.0, start_at - time.time()))

    def train(model: nn.Module) -> dict:
        with open(log, "a") as handle:
            handle.write("trained\n")
        time.sleep(1.5)
        return {"test_acc": 0.5}

    cached_party(nn.Linear(3, 2), {"party": 0, "case": "race"}, train, cache_dir=cache, required=("test_acc",))


def test_two_processes_pre_train_a_party_once(tmp_path: Path) -> None:
    log, start_at = tmp_path / "log.txt", time.time() + 2.0
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_train_slowly, args=(str(log), str(tmp_path / "cache"), start_at))
               for _ in range(2)]  # fmt: skip
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert log.read_text().splitlines() == ["trained"]


TINY = dict(dataset="digits", n_train=None, n_test=None, teacher_model="mlp", student_model="mlp",
            pretrain={"epochs": 1}, distill={"epochs": 1}, val_size=100)  # fmt: skip
SETS = ["--dataset", "digits", "--set", "n_train=null", "--set", "n_test=null", "--set", "teacher_model=mlp",
        "--set", "student_model=mlp", "--set", 'pretrain={"epochs": 1}', "--set", 'distill={"epochs": 1}',
        "--set", "val_size=100", "--quiet"]  # fmt: skip


def test_kdlib_run_waits_for_a_claimed_key_and_does_not_compute_it_again(tmp_path: Path, isolated_folders) -> None:
    store = ResultsStore.open("study", tmp_path / "results")
    key = run_key("distill", run_config(scale_config("smoke", **TINY), "iid", "finetune"))
    with store.claim(key) as mine:  # another command is computing this key
        assert mine
        command = [sys.executable, "-m", "kdlib", "run", "--scenario", "iid", "--method", "finetune",
                   "--results", str(tmp_path / "results"), *SETS]  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        assert proc.poll() is None, proc.communicate()  # it waits for the claim instead of computing
        config = run_config(scale_config("smoke", **TINY), "iid", "finetune")
        store.append("distill", config, {"gain": 0.125, "acc_before": 0.5, "acc_after": 0.625})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert '"gain": 0.125' in out  # the claimant's record, read back
    assert [r["key"] for r in store.records()] == [key]
