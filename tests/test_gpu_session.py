"""The one-command GPU session script, run end to end on the CPU at a tiny size: a broken script would waste a
GPU lease, which is short and rare."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from kdlib.paths import PROJECT_ROOT
from kdlib.study.methods import method_names


def test_the_gpu_session_script_stores_and_packs_everything_it_runs(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    settings = {
        "OUT": str(out),
        "WORK": str(work),
        "DEVICE": "cpu",
        "BENCH_S": "600",
        "STUDY_S": "600",
        # the two variants its check reads, on untrained models: the script's plumbing, not the benchmark's numbers
        "BENCH_ARGS": "--grid 2x2 --epochs 1 --only b,c --random-init",
        "SCENARIOS": "iid,disjoint",
        "PARALLEL": "1",  # one study process per scenario, as the full-scale GPU run uses
        "PRETRAIN": '{"epochs": 1}',
        "DISTILL": '{"epochs": 1}',
        "EXTRA_SET": "--set n_train=600 --set n_test=200 --set grid_temperatures=1,4 --set grid_alphas=0.5 "
        "--set val_size=100 --set seeds=1 "  # paper's held-out split (2,500) exceeds 600 images; one seed
        "--set teacher_model=resnet8 --set student_model=cnn-small",  # the script's plumbing, not resnet56 on a CPU
    }
    done = subprocess.run(
        ["bash", "benchmarks/gpu_session.sh", str(PROJECT_ROOT.parent / "shared")],
        cwd=PROJECT_ROOT,
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "(b)/(c) = " in (out / "grid_speed.txt").read_text()
    assert "study exit 0" in done.stdout
    assert f"{2 * len(method_names())} runs stored" in (out / "summary.txt").read_text()

    unpacked = tmp_path / "unpacked"
    with tarfile.open(out / "results.tgz") as tar:
        tar.extractall(unpacked, filter="data")
    records = [json.loads(line) for line in (unpacked / "results" / "study.jsonl").read_text().splitlines()]
    assert {(r["config"]["scenario"], r["config"]["method"]) for r in records} == {
        (s, m) for s in ("iid", "disjoint") for m in method_names()
    }
    assert all(r["config"]["scale"] == "paper" and r["config"]["distill"]["epochs"] == 1 for r in records)

    parts = sorted(out.glob("cache.tar.part-*"))
    assert parts
    (tmp_path / "cache.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "cache.tar") as tar:
        names = tar.getnames()
    checkpoints = [n for n in names if n.startswith("cache/parties/") and n.endswith(".safetensors")]
    assert len(checkpoints) >= 4  # teacher and student of both scenarios
