"""Interrupted work resumes: ``python -m kdlib study`` killed mid-run (SIGKILL, no clean-up) restarts, reuses every
stored result and cached checkpoint, redoes only what was unfinished, and the results store ends with each run
exactly once, no partial line, and the records written before the kill byte for byte unchanged.

Also: a process killed inside ``save_checkpoint`` leaves a complete checkpoint or none, never a half file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from kdlib.core.checkpoints import load_checkpoint, save_checkpoint
from kdlib.core.models import build_model
from kdlib.paths import PROJECT_ROOT
from kdlib.study.methods import method_names

SCENARIOS = ("iid", "disjoint")
METHODS = method_names()  # every registered method: the study runs them all by default
STUDY = [
    sys.executable, "-m", "kdlib", "study", "--scale", "smoke", "--dataset", "digits",
    "--set", "teacher_model=mlp", "--set", "student_model=mlp", "--set", f"scenarios={','.join(SCENARIOS)}",
    "--set", "n_train=null", "--set", "n_test=null", "--quiet",
    # a lighter budget than smoke's (same code path): the test is about resuming, not about the numbers
    "--set", 'pretrain={"epochs": 4}', "--set", 'distill={"epochs": 2}',
    "--set", "grid_temperatures=1,4", "--set", "grid_alphas=0.5",
    "--set", "seeds=1",  # one record per (scenario, method); tests/test_seeds.py resumes a multi-seed study
]  # fmt: skip


def complete_records(path: Path) -> list[dict]:
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line.strip()]


def checkpoints(cache: Path) -> dict[str, int]:
    """Every weights file in the cache with its modification time (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in sorted(cache.rglob("*.safetensors"))}


def assert_every_checkpoint_loads(cache: Path) -> None:
    for path in cache.rglob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:  # a half-written file fails here
            for key in handle.keys():
                handle.get_tensor(key)
        assert json.loads(path.with_suffix(".json").read_text())["config"], f"{path} lacks its metadata"


@pytest.mark.slow
def test_a_killed_study_resumes_without_losing_or_repeating_work(tmp_path: Path, isolated_folders) -> None:
    results, cache = tmp_path / "results", isolated_folders["cache"]
    store = results / "study.jsonl"
    command = [*STUDY, "--results", str(results)]
    env = {**os.environ, "KDLIB_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "first.log").open("wb")
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while len(complete_records(store)) < 2:
            assert proc.poll() is None, f"the study ended before the kill: {(tmp_path / 'first.log').read_text()}"
            assert time.monotonic() < deadline, "no two records within 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    assert proc.returncode == -signal.SIGKILL

    data = store.read_bytes()
    written = data[: data.rfind(b"\n") + 1]  # a partial last line (if the kill hit a write) is not a record
    before = complete_records(store)
    assert 2 <= len(before) < len(SCENARIOS) * len(METHODS), "the kill should land mid-study"
    kept = checkpoints(cache)
    assert kept, "the first run should have cached its pre-trained parties"
    assert_every_checkpoint_loads(cache)
    time.sleep(0.05)  # so that a rewritten checkpoint would get a later mtime

    again = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Gain in accuracy points" in again.stdout

    final = store.read_bytes()
    assert final.startswith(written), "records written before the kill changed"
    assert final.endswith(b"\n"), "the store ends with a partial line"
    records = [json.loads(line) for line in final.splitlines()]  # every line is a whole JSON record
    runs = sorted((r["config"]["scenario"], r["config"]["method"]) for r in records)
    assert runs == sorted((s, m) for s in SCENARIOS for m in METHODS), "a run is missing or stored twice"
    assert len({r["key"] for r in records}) == len(records)
    assert records[: len(before)] == before

    after = checkpoints(cache)
    assert len(after) == 2 * len(SCENARIOS), "one checkpoint per party and scenario"
    assert {name: after[name] for name in kept} == kept, "a cached checkpoint was trained again"
    assert_every_checkpoint_loads(cache)
    parties = {json.dumps(r["parties"], sort_keys=True) for r in records if r["config"]["scenario"] == "iid"}
    assert len(parties) == 1, "runs of one scenario saw different pre-trained parties"

    third = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr
    assert store.read_bytes() == final, "a finished study ran something again"
    assert checkpoints(cache) == after


KILL_INSIDE_SAVE = textwrap.dedent(
    """
    import os, signal, sys

    from kdlib.core.checkpoints import save_checkpoint
    from kdlib.core.models import build_model

    path, deadly_call = sys.argv[1], int(sys.argv[2])
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == deadly_call:  # the temp file is written, the rename has not happened: die here
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace_then_die
    save_checkpoint(build_model("mlp", 10, (1, 8, 8)), path, {"config": {"party": 1}, "test_acc": 0.5})
    """
)


@pytest.mark.parametrize("deadly_call", [1, 2], ids=["killed-writing-metadata", "killed-writing-weights"])
def test_a_kill_inside_save_checkpoint_leaves_no_half_checkpoint(tmp_path: Path, deadly_call: int) -> None:
    path = tmp_path / "parties" / "abc.safetensors"
    proc = subprocess.run([sys.executable, "-c", KILL_INSIDE_SAVE, str(path), str(deadly_call)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists(), "the weights file is the commit mark: it must not exist after a kill before it"
    leftovers = [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"]
    assert leftovers and all(n.startswith(".abc.") for n in leftovers), "only a hidden temp file may stay behind"
    assert not list(path.parent.glob("*.safetensors"))

    model = build_model("mlp", 10, (1, 8, 8))  # the next start trains the party again and saves it whole
    save_checkpoint(model, path, {"config": {"party": 1}, "test_acc": 0.5})
    assert load_checkpoint(build_model("mlp", 10, (1, 8, 8)), path) == {"config": {"party": 1}, "test_acc": 0.5}
