"""Wall time and peak memory of the (T, alpha) grid search, the plain way and the fast way, on the same data and budget.

    python benchmarks/grid_speed.py                    # smoke scale, 5 x 5 grid, the study's teacher/student pair
    python benchmarks/grid_speed.py --epochs 2 --only a,c,d

Variants, each measured in a fresh subprocess (peak memory = peak resident set above the start of the variant,
or the CUDA allocator's peak on a GPU):

    (a) one plain KD run, the teacher's forward pass at every step
    (b) the grid one point at a time, the plain way (teacher's forward at every step of every run)
    (c) the grid the fast way: ``stacked_grid_search`` (kdlib.tune.stacked_grid; teacher logits cached once,
        students stacked)
    (d) the floor: one student-only training loop per grid point on cached teacher logits (training time only)
    (e) the study's default tuned path: ``kdlib.tune.halving.halving_search`` with ``DEFAULT_SCHEDULE`` (classic
        successive halving over stacked rungs: all points for a ninth of the budget, the best third to a third of
        it, the best third of those to the end, ranked by validation accuracy)
    replay: untimed; for each of ``--replay-seeds`` training seeds (batch order and validation split), the grid
           trained stacked with every point scored at each rung of (e)'s schedule, so that (e)'s choice is
           replayed exactly (survivors train as in the grid); how often it lands within 0.5 validation points of
           the grid's best, and the test gain of both choices (the search students' test accuracy, for analysis)

Every variant scores on the split the scale's study uses (``--selection``, default the scale's ``selection``:
``holdout`` scores on the held-out ``val_size`` images and trains on all the transfer data; ``transfer`` carves
``val_fraction`` of the transfer data off for scoring).

Then the ratios (b)/(c), (c)/(d) and (c)/(a) (on wall time, and on process CPU time, which other jobs on the same
cores disturb less), and whether (b) and (c) gave the same validation accuracies. On a shared or busy CPU,
``--threads 1`` and ``--repeat 2`` (keep each variant's fastest run) give steadier figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from kdlib.core.distill import TeacherSpec, TuningProblem, best_point, frozen_logits, run_standard, split_validation
from kdlib.core.metrics import accuracy
from kdlib.core.models import build_model
from kdlib.core.train import RunOptions, predict_logits, resolve_device, seed_everything
from kdlib.data.datasets import Subsample, load_dataset
from kdlib.study.config import scale_config
from kdlib.study.parties import make_scenario, pretrained_party

VARIANTS = ("a", "b", "c", "d", "e", "replay")
TITLES = {
    "a": "(a) one KD run, teacher forward every step",
    "b": "(b) grid one at a time, teacher every step",
    "c": "(c) grid stacked, teacher cached (fast)",
    "d": "(d) floor: student-only loops, cached logits",
    "e": "(e) tuned default: halving, stacked",
    "replay": "replay of (e) over seeds (untimed)",
}


def grid_values(spec: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``"5x5"`` -> T in (1, 2, 4, 8, 16) x alpha in (0.1, 0.25, 0.5, 0.75, 0.9); other sizes spread evenly."""
    match = re.fullmatch(r"(\d+)x(\d+)", spec.strip())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise SystemExit(f"--grid {spec!r}: expected NxM, e.g. 5x5")
    n, m = int(match[1]), int(match[2])
    temps = (1.0, 2.0, 4.0, 8.0, 16.0) if n == 5 else tuple(round(2 ** (4 * i / max(1, n - 1)), 3) for i in range(n))
    alphas = (0.1, 0.25, 0.5, 0.75, 0.9) if m == 5 else tuple(round(0.1 + 0.8 * i / max(1, m - 1), 3) for i in range(m))
    return temps, alphas


# ------------------------------------------------------------------------------------------- one variant (child)


def _memory_kib() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", text)[1]) for key in ("VmRSS", "VmHWM")}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak resident set (VmHWM) to now
        return True
    except OSError:
        return False


def _setup(args: argparse.Namespace) -> dict:
    cfg = scale_config(args.scale)
    if args.epochs is not None:
        cfg = cfg.replace(distill={"epochs": args.epochs})
    data = load_dataset(cfg.dataset, subsample=Subsample(cfg.n_train, cfg.n_test, cfg.seed), progress=False)
    scenario = make_scenario(data, args.scenario, cfg)
    if args.random_init:
        seed_everything(cfg.seed)
        teacher = build_model(cfg.teacher_model, data.num_classes, data.in_shape)
        student = build_model(cfg.student_model, data.num_classes, data.in_shape)
    else:
        teacher, _ = pretrained_party(data, scenario, 0, cfg.teacher_model, cfg, args.device, progress=False)
        student, _ = pretrained_party(data, scenario, 1, cfg.student_model, cfg, args.device, progress=False)
    idx = torch.as_tensor(scenario.parts[1], dtype=torch.long)  # the study's default transfer set: the student's data
    temps, alphas = grid_values(args.grid)
    held_out: dict = {"x_val": None, "y_val": None}
    if _selection(args, cfg) == "holdout":  # the study's default: scored on the held-out split, trained on all of x
        val_idx = torch.as_tensor(scenario.validation, dtype=torch.long)
        held_out = {"x_val": data.x_train[val_idx], "y_val": data.y_train[val_idx]}
    return dict(
        cfg=cfg,
        teacher=teacher.cpu(),
        student=student.cpu(),
        x_test=data.x_test,
        y_test=data.y_test,
        x=data.x_train[idx],
        y=data.y_train[idx],
        temps=temps,
        alphas=alphas,
        **held_out,
    )


def _selection(args: argparse.Namespace, cfg) -> str:
    return args.selection or cfg.selection


def _held_out(s: dict) -> dict:
    """The keyword arguments that make a search score on the held-out split (none: carve from the transfer data)."""
    return {"x_val": s["x_val"], "y_val": s["y_val"]} if s.get("x_val") is not None else {}


def _live_source(teacher: torch.nn.Module, device: torch.device):
    teacher.to(device).eval()

    @torch.no_grad()
    def live(xb: torch.Tensor, _idx: torch.Tensor) -> torch.Tensor:
        return teacher(xb)

    return live


def _one_at_a_time(s: dict, dev: torch.device, source, timed: list) -> list:
    """Variant (b) or (d): every grid point distilled on its own on ``s``'s fit split, scored on its validation
    split (``s`` as :func:`_prepare` returns it)."""
    x_fit, y_fit, x_val, y_val, val_before = (s[k] for k in ("x_fit", "y_fit", "x_val", "y_val", "val_before"))
    rows = []
    cfg = s["cfg"].distill
    for t in s["temps"]:
        for a in s["alphas"]:
            student = copy.deepcopy(s["student"])
            started, cpu = time.perf_counter(), time.process_time()
            run_standard(student, x_fit, y_fit, TeacherSpec(s["teacher"], t, a, source), cfg, RunOptions(dev, False))
            timed.append((time.perf_counter() - started, time.process_time() - cpu))
            acc = accuracy(predict_logits(student, x_val, dev), y_val)
            rows.append({"temperature": t, "alpha": a, "val_acc": acc, "val_gain": acc - val_before})
    return rows


def _halving_replays(args: argparse.Namespace, s: dict, dev: torch.device) -> list[dict]:
    """(e)'s choice and the full grid's best for each training seed, from one stacked grid per seed whose points
    are all scored at every rung of (e)'s schedule (``kdlib.tune.halving.replay``)."""
    from kdlib.tune.halving import DEFAULT_SCHEDULE, Checkpointing, HalvingSchedule, Rung, halving_search, replay

    cfg = s["cfg"]
    before = accuracy(predict_logits(s["student"], s["x_test"], dev), s["y_test"])

    def evaluate(model: torch.nn.Module) -> dict:
        return {"test_gain": accuracy(predict_logits(model, s["x_test"], dev), s["y_test"]) - before}

    out = []
    for seed in range(args.replay_seeds):
        tcfg = cfg.replace(distill={"seed": seed}).distill
        n_fit = len(s["x"]) if _held_out(s) else len(split_validation(len(s["x"]), cfg.val_fraction, seed)[0])
        points = len(s["temps"]) * len(s["alphas"])
        schedule = DEFAULT_SCHEDULE.resolve(points, tcfg.epochs * math.ceil(n_fit / tcfg.batch_size))  # (e)'s own
        problem = TuningProblem(
            lambda: copy.deepcopy(s["student"]), s["teacher"], s["x"], s["y"], s["temps"], s["alphas"], tcfg,
            cfg.val_fraction, **_held_out(s),
        )  # fmt: skip
        every = halving_search(
            problem, RunOptions(dev, False), evaluate,
            schedule=HalvingSchedule(rungs=[Rung(r.steps, points) for r in schedule]),
            resume=Checkpointing(checkpoint=None),
        )  # fmt: skip
        grid_best = best_point(every.rows)
        chosen = every.rows[replay(every.scores, schedule, points)["index"]]
        out.append({"seed": seed, "grid": grid_best, "halving": chosen, "rows": every.rows})
    return out


def _train_variant(args: argparse.Namespace, s: dict, dev: torch.device, timed: list) -> dict:
    """The timed work of variant (a), (b), (c) or (d) on ``s`` (after :func:`_prepare`): rows and trainings."""
    from kdlib.tune.stacked_grid import stacked_grid_search

    cfg, tcfg = s["cfg"], s["cfg"].distill
    x_fit, y_fit = s["x_fit"], s["y_fit"]
    if args.variant == "a":
        live = _live_source(s["teacher"], dev)
        run_standard(
            copy.deepcopy(s["student"]),
            x_fit,
            y_fit,
            TeacherSpec(s["teacher"], cfg.temperature, cfg.alpha, live),
            tcfg,
            RunOptions(dev, False),
        )
        return {"trainings": 1}
    if args.variant == "e":
        from kdlib.tune.halving import Checkpointing, halving_search

        problem = TuningProblem(
            lambda: copy.deepcopy(s["student"]), s["teacher"], s["x"], s["y"], s["temps"], s["alphas"], tcfg,
            cfg.val_fraction, **_held_out(s),
        )  # fmt: skip
        found = halving_search(problem, RunOptions(dev, False), resume=Checkpointing(checkpoint=None))
        return {"rows": found.rows, "trainings": round(found.cost * len(found.rows), 1), "best": found.best}
    if args.variant == "c":
        problem = TuningProblem(
            lambda: copy.deepcopy(s["student"]), s["teacher"], s["x"], s["y"], s["temps"], s["alphas"], tcfg,
            cfg.val_fraction, **_held_out(s),
        )  # fmt: skip
        rows = stacked_grid_search(problem, RunOptions(dev, False), backend=args.backend, chunk_size=args.chunk_size)
        return {"rows": rows, "trainings": len(rows)}
    source = _live_source(s["teacher"], dev) if args.variant == "b" else s["cached"]
    rows = _one_at_a_time(s, dev, source, timed)
    return {"rows": rows, "trainings": len(rows)}


def _prepare(s: dict, dev: torch.device, variant: str) -> dict:
    """The validation split, the student's accuracy before KD and, for (d), the cached teacher logits: untimed."""
    cfg = s["cfg"]
    if _held_out(s):
        out = {**s, "x_fit": s["x"], "y_fit": s["y"]}
    else:
        train_idx, val_idx = split_validation(len(s["x"]), cfg.val_fraction, cfg.distill.seed)
        out = {**s, "x_fit": s["x"][train_idx], "y_fit": s["y"][train_idx], "x_val": s["x"][val_idx]}
        out["y_val"] = s["y"][val_idx]
    out["val_before"] = accuracy(predict_logits(s["student"], out["x_val"], dev), out["y_val"])
    if variant == "d":
        out["cached"] = frozen_logits(s["teacher"], out["x_fit"], cfg.distill, dev)
    return out


def _warm_up(args: argparse.Namespace, s: dict, dev: torch.device) -> None:
    """On a GPU, the variant once on two batches, untimed: cuDNN's algorithm search for each new shape and the
    lazy loading of kernels are paid here, not in the timed run (they cost seconds against runs of a few)."""
    n = min(len(s["x"]), 2 * s["cfg"].distill.batch_size)
    small = {**s, "x": s["x"][:n], "y": s["y"][:n], "cfg": s["cfg"].replace(distill={"epochs": 1})}
    _train_variant(args, _prepare(small, dev, args.variant), dev, [])
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run_variant(args: argparse.Namespace) -> dict:
    s = _setup(args)
    dev = resolve_device(args.device)
    if dev.type == "cuda" and not args.no_warmup:
        _warm_up(args, s, dev)
    s = _prepare(s, dev, args.variant)
    out: dict = {"variant": args.variant, "grid": len(s["temps"]) * len(s["alphas"]), "n_fit": len(s["x_fit"])}
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_start, resettable = _memory_kib()["VmRSS"], _reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    timed: list[tuple[float, float]] = []
    if args.variant == "replay":
        out.update(trainings=0, replays=_halving_replays(args, s, dev))
    else:
        out.update(_train_variant(args, s, dev, timed))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if args.variant == "d":  # the training loops only
        wall, cpu = sum(w for w, _ in timed), sum(c for _, c in timed)
    out["wall_s"], out["cpu_s"] = wall, cpu
    peak = _memory_kib()["VmHWM"] if resettable else _memory_kib()["VmRSS"]
    out["peak_mib"] = (peak - rss_start) / 1024
    if dev.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ----------------------------------------------------------------------------------------------- parent


def _child(args: argparse.Namespace, variant: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--scale",
        args.scale,
        "--grid",
        args.grid,
        "--device",
        args.device,
        "--scenario",
        args.scenario,
        "--backend",
        args.backend,
        "--replay-seeds",
        str(args.replay_seeds),
        "--selection",
        _selection(args, scale_config(args.scale)),
    ]
    for flag, value in (
        ("--epochs", args.epochs),
        ("--chunk-size", args.chunk_size),
        ("--threads", args.threads),
    ):
        if value is not None:
            command += [flag, str(value)]
    if args.random_init:
        command.append("--random-init")
    if args.no_warmup:
        command.append("--no-warmup")
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise SystemExit(f"variant {variant} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(name: str, top: dict | None, bottom: dict | None) -> None:
    if top and bottom:
        print(f"{name} = {top['wall_s'] / bottom['wall_s']:.1f}")


def _cpu_ratios(results: dict[str, dict]) -> None:
    """The same ratios on process CPU time: steadier than wall time when other jobs share the cores."""
    pairs = (("b", "c"), ("c", "d"), ("c", "a"), ("b", "e"))
    parts = [
        f"({p})/({q}) {results[p]['cpu_s'] / results[q]['cpu_s']:.1f}"
        for p, q in pairs
        if p in results and q in results
    ]
    if parts:
        print("on CPU time: " + ", ".join(parts))


def _max_diff(first: dict | None, second: dict | None) -> float | None:
    if not first or not second:
        return None
    return max(abs(p["val_acc"] - q["val_acc"]) for p, q in zip(first["rows"], second["rows"], strict=True)) * 100


def _report_halving(results: dict[str, dict], reference: dict | None) -> None:
    """(e)'s choice against the grid's, and the replay over seeds: hits within 0.5 points and test gains."""
    if "e" in results:
        e = results["e"]["best"]
        line = f"(e) halving: T={e['temperature']:g} alpha={e['alpha']:g} val gain {e['val_gain'] * 100:.2f} points"
        if reference:
            best = best_point(reference["rows"])
            line += f"; grid best {best['val_gain'] * 100:.2f} points, gap {(best['val_acc'] - e['val_acc']) * 100:.2f}"
        print(line + f"; trainings' worth {results['e']['trainings']} of {len(results['e']['rows'])}")
    replays = results.get("replay", {}).get("replays") or []
    if replays:
        from kdlib.study.stats import mean_interval, proportion_interval

        gaps = [(r["grid"]["val_acc"] - r["halving"]["val_acc"]) * 100 for r in replays]
        hits = sum(g <= 0.5 + 1e-9 for g in gaps)
        rate = proportion_interval(hits, len(replays))
        print(
            f"(e) replayed over {len(replays)} training seeds: within 0.5 validation points of the grid's best in "
            f"{hits}/{len(replays)} (95% interval of the rate {rate[0]:.2f}-{rate[1]:.2f}; "
            f"gaps {', '.join(f'{g:.2f}' for g in gaps)})"
        )
        floor = noise_floor([r["rows"] for r in replays if "rows" in r])
        if floor is not None:
            print(
                f"the noise floor: the full grid's own choice, trained again with another seed, lands within 0.5 "
                f"points of that seed's best in {floor[0]}/{floor[1]} seed pairs"
            )
        grid_gain = mean_interval(r["grid"]["test_gain"] * 100 for r in replays)
        halving_gain = mean_interval(r["halving"]["test_gain"] * 100 for r in replays)
        paired = mean_interval((r["halving"]["test_gain"] - r["grid"]["test_gain"]) * 100 for r in replays)
        print(
            f"test gain of the chosen point's search student, mean over seeds (95% t-interval): grid's choice "
            f"{grid_gain} points, halving's choice {halving_gain} points, halving minus grid {paired} points"
        )


def noise_floor(grids: list[list[dict]], margin: float = 0.5) -> tuple[int, int] | None:
    """Of all ordered pairs of seeds' full grids (rows in grid order), how many have the best point of the first
    within ``margin`` validation points of the second's best, at the second seed: the hit rate that noise allows a
    choice not trained with the very seed it is judged on. None for fewer than two grids."""
    if len(grids) < 2:
        return None
    hits = pairs = 0
    for one in grids:
        index = one.index(best_point(one))
        for other in grids:
            if other is not one:
                pairs += 1
                hits += (best_point(other)["val_acc"] - other[index]["val_acc"]) * 100 <= margin + 1e-9
    return hits, pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="smoke", choices=("smoke", "full", "paper"))
    parser.add_argument("--grid", default="5x5", help="NxM temperatures x alphas (default 5x5)")
    parser.add_argument("--epochs", type=int, default=None, help="override the scale's distillation epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per variant (default: torch's)")
    parser.add_argument("--scenario", default="iid", help="partition scenario of the pre-trained pair (default iid)")
    parser.add_argument(
        "--selection",
        choices=("holdout", "transfer"),
        default=None,
        help="score on the scale's held-out split (holdout) or on a split carved from the transfer data (transfer); "
        "default: the scale's selection, as the study does",
    )
    parser.add_argument("--random-init", action="store_true", help="untrained teacher/student (timing only)")
    parser.add_argument("--backend", default="auto", help="stacking backend of (c): auto, grouped, vmap")
    parser.add_argument("--chunk-size", type=int, default=None, help="students per stack in (c) (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; the fastest is reported")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma list of a,b,c,d,e,replay")
    parser.add_argument("--replay-seeds", type=int, default=10, help="training seeds replayed for (e) (default 10)")
    parser.add_argument("--no-warmup", action="store_true", help="on a GPU, time each variant cold (no warm-up pass)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    wanted = [v for v in VARIANTS if v in args.only.split(",")]
    cfg = scale_config(args.scale)
    epochs = args.epochs if args.epochs is not None else cfg.distill.epochs
    print(
        f"scale={args.scale} grid={args.grid} teacher={cfg.teacher_model} student={cfg.student_model} "
        f"epochs={epochs} batch={cfg.distill.batch_size} device={resolve_device(args.device)} "
        f"threads={torch.get_num_threads()} scenario={args.scenario} selection={_selection(args, cfg)}"
        f"{' (random init)' if args.random_init else ' (pre-trained pair)'}",
        flush=True,
    )
    _setup(args)  # pre-train (or load) the pair once, before any timing
    results: dict[str, dict] = {}
    for variant in wanted:
        runs = [_child(args, variant) for _ in range(max(1, args.repeat))]
        results[variant] = min(runs, key=lambda r: r["wall_s"])  # the least disturbed run
        r = results[variant]
        print(f"  done {TITLES[variant]}: {r['wall_s']:.1f} s", flush=True)
    n = next(iter(results.values()))["grid"] if results else 0
    print()
    print(f"{'variant':<48}{'wall s':>9}{'cpu s':>9}{'peak MiB':>10}{'trainings':>11}")
    for variant, r in results.items():
        title = TITLES[variant]
        peak = r.get("cuda_peak_mib", r["peak_mib"])
        print(f"{title:<48}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{peak:>10.0f}{r['trainings']:>11}")
    print()
    _ratio("(b)/(c)", results.get("b"), results.get("c"))
    _ratio("(c)/(d)", results.get("c"), results.get("d"))
    _ratio("(c)/(a)", results.get("c"), results.get("a"))
    _ratio("(b)/(e)", results.get("b"), results.get("e"))
    _ratio("(c)/(e)", results.get("c"), results.get("e"))
    _cpu_ratios(results)
    print()
    for label, other in (("b", results.get("b")), ("d", results.get("d"))):
        diff = _max_diff(other, results.get("c"))
        if diff is not None:
            same = best_point(other["rows"]) == best_point(results["c"]["rows"])
            print(
                f"max |val_acc ({label}) - val_acc (c)| = {diff:.2f} points over {n} grid points; "
                f"same best point: {same}"
            )
    reference = results.get("d") or results.get("c") or results.get("b")
    _report_halving(results, reference)
    if not math.isfinite(sum(r["wall_s"] for r in results.values())):
        raise SystemExit("a variant did not report its time")


if __name__ == "__main__":
    main()
