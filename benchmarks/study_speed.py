"""Wall time and peak memory of a whole study, one run at a time vs. in parallel on Ray, and an estimate for `full`.

    python benchmarks/study_speed.py                                   # the smoke study, 1 worker vs. one per core
    python benchmarks/study_speed.py --set scenarios=iid,disjoint --set seeds=1 --workers 2
    python benchmarks/study_speed.py --scale full --set seeds=1 --only parallel --results figures/full/cpu_run

Each study runs as ``python -m kdlib study`` in a subprocess with fresh results and checkpoint folders, so the
parties' pre-training is part of the time. Peak memory is the largest summed resident set (RSS) of the process tree
(the driver and Ray's processes), sampled every 0.2 s, and the largest summed proportional set (PSS), which counts a
page that n processes share as 1/n in each.

The estimate for another scale (``--estimate full``) multiplies measured times per training step of its models
(one thread, batch as configured, channels-last as in training) by the steps of each job: pre-training both
parties per (scenario, seed), then each method (tuned: the halving search's share of the grid, its students
stacked at the cost of one student each, which the grid benchmark measures, plus the final run). The parallel
estimate schedules those jobs on ``--workers`` slots in the study's order, each method after its scenario's
pre-training.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------- measured study runs


def _tree_memory_kib(pid: int) -> tuple[int, int]:
    """Summed resident set (RSS) and proportional set (PSS: a page shared by n processes counts 1/n in each) of
    ``pid`` and its descendants (Linux /proc). RSS counts shared pages, e.g. torch's libraries, once per process."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/status"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        proc = int(stat.parent.name)
        parents[proc] = int(fields.get("PPid", "0").strip() or 0)
        rss[proc] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return sum(rss.get(p, 0) for p in tree), sum(_pss_kib(p) for p in tree)


def _pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    line = next((line for line in text.splitlines() if line.startswith("Pss:")), "Pss: 0 kB")
    return int(line.split()[1])


def run_study(args: argparse.Namespace, workers: str) -> dict:
    """One fresh ``kdlib study`` run: wall time and peak memory of its process tree."""
    with tempfile.TemporaryDirectory() as folder:
        results = args.results or f"{folder}/results"
        env = {**os.environ, "KDLIB_CACHE": args.cache or f"{folder}/cache", "KDLIB_THREADS": "1",
               "PYTHONWARNINGS": "ignore"}  # fmt: skip
        command = [sys.executable, "-m", "kdlib", "study", "--scale", args.scale, "--quiet", "--device", "cpu"]
        command += ["--results", results, "--workers", workers]
        for pair in args.set:
            command += ["--set", pair]
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        peak = peak_pss = 0
        while process.poll() is None:
            rss, pss = _tree_memory_kib(process.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            time.sleep(args.sample_s)
        wall = time.perf_counter() - started
        out, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"study with --workers {workers} failed:\n{err.decode()[-3000:]}")
        jobs = sum(1 for line in (Path(results) / "study.jsonl").read_text().splitlines() if line.strip())
    return {"workers": workers, "wall_s": wall, "peak_mib": peak / 1024, "peak_pss_mib": peak_pss / 1024, "jobs": jobs,
            "table": out.decode()}  # fmt: skip


# ------------------------------------------------------------------------------------ estimate from step times


@functools.lru_cache
def step_seconds(model_name: str, in_shape: tuple[int, int, int], batch: int, augment: bool, steps: int = 8) -> float:
    """Seconds per training step of one model (median of ``steps`` after two warm-up steps), through ``train.fit``."""
    from kdlib.core.models import build_model
    from kdlib.core.train import RunOptions, TrainConfig, fit

    model = build_model(model_name, 10, in_shape)
    x = torch.randn((steps + 2) * batch, *in_shape)
    y = torch.randint(0, 10, (len(x),))
    times: list[float] = []
    last = [time.perf_counter()]

    def loss(xb: torch.Tensor, yb: torch.Tensor, _idx: torch.Tensor) -> torch.Tensor:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        return torch.nn.functional.cross_entropy(model(xb), yb)

    fit([model], x, y, loss, TrainConfig(epochs=1, batch_size=batch, augment=augment), RunOptions("cpu", False))
    return sorted(times[2:])[len(times[2:]) // 2]


def estimate(scale: str, workers: int, overrides: dict) -> dict:
    """Sequential and parallel wall-time estimates of a scale's study, from measured step times."""
    from kdlib.study.config import scale_config
    from kdlib.tune.halving import DEFAULT_SCHEDULE
    from kdlib.tune.halving_schedule import search_work

    cfg = scale_config(scale, **overrides)
    in_shape = (3, 32, 32)
    pre, dis = cfg.pretrain, cfg.distill
    t_teacher = step_seconds(cfg.teacher_model, in_shape, pre.batch_size, pre.augment)
    t_student_pre = step_seconds(cfg.student_model, in_shape, pre.batch_size, pre.augment)
    t_student = step_seconds(cfg.student_model, in_shape, dis.batch_size, dis.augment)
    t_teacher_dis = step_seconds(cfg.teacher_model, in_shape, dis.batch_size, dis.augment)
    party = max(1, ((cfg.n_train or 50000) - cfg.val_size) // 2)  # two parties share the training pool
    pre_steps, dis_steps = math.ceil(party / pre.batch_size), math.ceil(party / dis.batch_size)
    points = len(cfg.grid_temperatures) * len(cfg.grid_alphas)
    if cfg.tuning_search == "halving":
        work = search_work(DEFAULT_SCHEDULE.resolve(points, dis.epochs * dis_steps), points)
    else:
        work = points * dis.epochs * dis_steps
    method_s = {
        "finetune": dis.epochs * dis_steps * t_student,
        "standard": dis.epochs * dis_steps * t_student,
        "dp": dis.epochs * dis_steps * t_student,
        "tuned": (work + dis.epochs * dis_steps) * t_student,
        "dml": dis.epochs * dis_steps * (t_student + t_teacher_dis),
    }
    pretrain_s = pre.epochs * pre_steps * (t_teacher + t_student_pre)
    pairs = [(s, seed) for seed in range(cfg.seeds) for s in cfg.scenarios]
    jobs = [(s, m, seed) for seed in range(cfg.seeds) for s in cfg.scenarios for m in cfg.methods]
    sequential = len(pairs) * pretrain_s + sum(method_s[m] for _, m, _ in jobs)
    return {
        "cfg": cfg,
        "steps": {"teacher": t_teacher, "student_pretrain": t_student_pre, "student": t_student},
        "pretrain_s": pretrain_s,
        "method_s": method_s,
        "sequential_s": sequential,
        "parallel_s": _schedule(pairs, jobs, pretrain_s, method_s, workers),
        "tuning_share": work / (points * dis.epochs * dis_steps),
    }


def _schedule(pairs: list, jobs: list, pretrain_s: float, method_s: dict, workers: int) -> float:
    """Makespan of greedy list scheduling on ``workers`` slots: pre-training tasks first (as Ray gets them), then
    each method as soon as a slot is free and its scenario's parties are ready."""
    free = [0.0] * workers
    ready = {}
    for pair in pairs:
        start = heapq.heappop(free)
        ready[pair] = start + pretrain_s
        heapq.heappush(free, ready[pair])
    end = max(ready.values())
    for scenario, method, seed in jobs:
        slot = heapq.heappop(free)
        finish = max(slot, ready[scenario, seed]) + method_s[method]
        end = max(end, finish)
        heapq.heappush(free, finish)
    return end


# ------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="smoke", choices=("smoke", "full", "paper"), help="measured study")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--workers", default="auto", help="parallel run's workers (default: one per core)")
    parser.add_argument("--estimate", default="full", help="scale to estimate from step times ('' for none)")
    parser.add_argument("--estimate-workers", type=int, default=None, help="slots of the estimate (default: cores)")
    parser.add_argument("--only", default="sequential,parallel,estimate", help="comma list of the three parts")
    parser.add_argument("--results", default=None, help="keep the measured run's results here (default: a temporary "
                        "folder; a folder with stored runs resumes, so time a fresh one)")
    parser.add_argument("--cache", default=None, help="keep its pre-trained parties here (default: temporary)")
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between memory samples (default 1; "
                        "each reads every process's /proc entries, about 23%% of a core at 0.2 s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    parts = args.only.split(",")
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores (shared machines give noisy times); one torch thread per process")
    runs = {}
    for part, workers in (("sequential", "1"), ("parallel", args.workers)):
        if part in parts:
            runs[part] = run_study(args, workers)
            r = runs[part]
            print(
                f"{args.scale} study, --workers {workers}: {r['wall_s']:.1f} s wall, peak {r['peak_mib']:.0f} MiB "
                f"summed RSS, {r['peak_pss_mib']:.0f} MiB summed PSS (process tree), {r['jobs']} records",
                flush=True,
            )
    if len(runs) == 2:
        print(f"sequential / parallel = {runs['sequential']['wall_s'] / runs['parallel']['wall_s']:.2f}")
    if "estimate" in parts and args.estimate:
        slots = args.estimate_workers or cores
        e = estimate(args.estimate, slots, {})
        cfg = e["cfg"]
        steps = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in e["steps"].items())
        print(
            f"\nestimate for {args.estimate} ({len(cfg.scenarios)} scenarios x {len(cfg.methods)} methods x "
            f"{cfg.seeds} seeds, {cfg.teacher_model}/{cfg.student_model}); step times: {steps}"
        )
        print(
            f"  pre-training per (scenario, seed) {e['pretrain_s'] / 60:.1f} min; per method: "
            + ", ".join(f"{m} {s / 60:.1f} min" for m, s in e["method_s"].items())
            + f" (tuned search: {e['tuning_share']:.0%} of the grid's steps)"
        )
        one_seed = estimate(args.estimate, slots, {"seeds": 1}) if cfg.seeds > 1 else e
        for label, result in (("all seeds", e), ("1 seed", one_seed)):
            print(
                f"  {label}: sequential {result['sequential_s'] / 60:.0f} min, on {slots} workers "
                f"{result['parallel_s'] / 60:.0f} min"
            )


if __name__ == "__main__":
    main()
