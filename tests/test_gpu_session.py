"""The study's scripts: the one-command GPU sessions (benchmarks/gpu_session.sh, figures/full/run_device.sh), run end
to end on the CPU at a tiny size, since a broken script would waste a GPU lease, which is short and rare; and the
CPU queue's order (figures/full/run_queue.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from kdlib.paths import PROJECT_ROOT
from kdlib.study.methods import method_names
from kdlib.study.results import ResultsStore


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


TINY_SETS = (  # the smoke scale cut to its plumbing: one scenario, 600 images, one epoch, a 2-point grid
    "--set n_train=600 --set n_test=200 --set val_size=100 --set scenarios=iid --set grid_temperatures=1,4 "
    '--set grid_alphas=0.5 --set pretrain={"epochs":1} --set distill={"epochs":1}'
)


def test_the_device_script_runs_every_part_and_its_store_merges_back(tmp_path: Path) -> None:
    share, out, work = tmp_path / "share", tmp_path / "out", tmp_path / "work"
    script = ["bash", "figures/full/run_device.sh"]
    settings = {"SHARE": str(share), "WORK": str(work), "SCALE": "smoke", "SETS": TINY_SETS, "PER_SEED": "2",
                "MAIN": "0", "PUBLIC": "0", "VIT": "0", "STORE_FROM": str(tmp_path / "none.jsonl")}  # fmt: skip
    env = {**os.environ, **settings}
    missing = subprocess.run(script, cwd=PROJECT_ROOT, env={**env, "OUT": str(out)}, capture_output=True, text=True)
    assert missing.returncode == 2 and "run_device.sh prepare" in missing.stdout  # no share copied yet
    prepared = subprocess.run([*script, "prepare"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    assert (share / "cifar10-jpeg.tar.gz").is_file() and sorted(share.glob("pretrained/resnet56-*.th"))

    done = subprocess.run(script, cwd=PROJECT_ROOT, env={**env, "OUT": str(out)}, capture_output=True, text=True,
                          timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.txt").read_text()
    for part in ("main", "public", "vit"):
        assert summary.count(f"{part} seed 0: exit 0") == 2, summary  # two processes shared each part's runs
    records = ResultsStore(out / "study.jsonl").records()
    assert f"{len(records)} runs added" in summary
    kinds = {(r["config"]["teacher_model"], r["config"]["student_model"], r["config"]["transfer"]) for r in records}
    smoke = {(r["config"]["teacher_model"], r["config"]["student_model"]) for r in records
             if r["config"]["transfer"] == "union"}  # fmt: skip
    (teacher, student), = smoke  # the main part's pair, whose union rows ran after its main study
    assert kinds == {(teacher, student, "student"), (teacher, student, "union"),
                     ("published:resnet56", student, "student"), (teacher, "vit-small", "student")}  # fmt: skip
    per_part = len(method_names())
    assert sum(r["config"]["transfer"] == "student" for r in records) == 3 * per_part
    assert (out / "logs.tgz").is_file()

    here = ResultsStore.open("study", tmp_path / "here")
    assert here.merge(ResultsStore(out / "study.jsonl")) == (len(records), 0)

    late_env = {**env, "OUT": str(tmp_path / "late"), "LIMIT_S": "0", "STORE_FROM": str(out / "study.jsonl")}
    late = subprocess.run(script, cwd=PROJECT_ROOT, env=late_env, capture_output=True, text=True, timeout=600)
    assert late.returncode == 0, late.stderr
    assert late.stdout.count("main seed 0: not started (time limit reached)") == 2
    assert "0 runs added" in late.stdout
    assert (tmp_path / "late" / "study.jsonl").read_bytes() == (out / "study.jsonl").read_bytes()


def test_the_cpu_queue_runs_the_fl_claim_with_seeds_8_9_filling_its_idle_core(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "python"  # records each command, with its niceness and workers, instead of running it
    fake.parent.mkdir()
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'case "$*" in *federated*) sleep 3;; esac  # a federated pass takes a while: the filler runs beside it\n'
        # niceness, scheduling policy (/proc/PID/stat field 41: 0 normal, 5 idle), workers, then the command
        f'echo "$(nice) $(cut -d" " -f41 /proc/$$/stat) $KDLIB_WORKERS $*" >> {tmp_path / "calls.txt"}\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "KDLIB_RESULTS": str(tmp_path / "store"),
           "KDLIB_WORKERS": "2", "FILLER_LOG": str(tmp_path / "filler.log")}  # fmt: skip
    done = subprocess.run(["bash", "figures/full/run_queue.sh"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    base = os.nice(0)
    lines = [line.split(maxsplit=3) for line in (tmp_path / "calls.txt").read_text().splitlines()]
    calls = [call for *_, call in lines]

    def step(call: str) -> tuple[str, str | None]:
        words = call.split()
        seed = words[words.index("--seed") + 1] if "--seed" in words else None
        if "federated" in words:
            return "federated", seed
        if "teacher_model=published:resnet56" in words:
            return "public", seed
        return ("union" if "transfer=union" in words else "main"), seed

    def seeds(first: int, last: int) -> list[tuple[str, str]]:
        return [(part, str(s)) for s in range(first, last + 1) for part in ("main", "union")]

    # the filler is known by its one worker, not its niceness: a test run at nice 19 gives every call nice 19
    filler = [i for i, (_, _, workers, _) in enumerate(lines) if workers != "2"]
    idle_policy = "5" if shutil.which("chrt") else "0"  # SCHED_IDLE where util-linux has chrt
    lowest = (min(base + 19, 19), idle_policy, "1")  # lowest priority, the idle policy, 1 worker
    assert {(int(lines[i][0]), lines[i][1], lines[i][2]) for i in filler} == {lowest}
    assert {lines[i][1] for i in range(len(lines)) if i not in filler} == {"0"}  # the rest: the normal policy
    assert [step(calls[i]) for i in filler] == seeds(8, 9)
    steps = [step(c) for i, c in enumerate(calls) if i not in filler]
    assert steps[:10] == seeds(0, 4)  # the verdicts need 5 seeds: they come first
    assert steps[10:15] == [("public", str(s)) for s in range(5)]
    assert steps[15:21] == seeds(5, 7)
    first_pass, second_pass = (i for i, c in enumerate(calls) if step(c)[0] == "federated")
    assert min(filler) > next(i for i, c in enumerate(calls) if step(c) == ("union", "7"))  # started after seed 7
    assert max(filler) < first_pass  # written during the first pass (which logs after its 3 s): beside it
    assert steps[21] == ("federated", None)  # the federated claim, the last missing verdict
    judged_first = calls[first_pass].split()
    assert judged_first[judged_first.index("--set") + 1] == "starts=random,kd_avg,kd_dp"  # the claim's starts
    assert steps[22:26] == seeds(8, 9)  # then the ten seeds complete on both cores (the store skips what is done)
    assert steps[26:31] == [("public", str(s)) for s in range(5, 10)]  # the public teacher's ten seeds (issue 25)
    assert steps[31:] == [("federated", None)] and "starts=" not in calls[second_pass]  # every start, last
    assert all("--scale full" in c for c in calls)
