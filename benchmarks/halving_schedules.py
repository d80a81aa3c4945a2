"""Which successive-halving schedules find the (T, alpha) grid's best, replayed from every grid point's validation
score at every step, over many training seeds.

    python benchmarks/halving_schedules.py --scenario dirichlet:0.1 --seeds 0-19   # collect (or reuse) and analyse
    python benchmarks/halving_schedules.py --analyse figures/benchmarks/halving/smoke-*.json.gz

Collecting: for each training seed (batch order), the stacked grid of ``benchmarks/grid_speed.py`` (the study's
teacher/student pair, its transfer and held-out split) trains once with every point scored at every step
(``halving_search`` with rungs that keep all points, so each point trains exactly as in the full grid), and each
point's test gain is measured at the end. Stored as ``--out`` (gzipped JSON, one entry per seed); seeds already
there are not trained again.

Analysing, without training (``kdlib.tune.halving.replay``), over all the files given:

- the study's schedule (``DEFAULT_SCHEDULE``): how often it lands within 0.5 validation points of the grid's best
  (with the Wilson interval of that rate), and its test gain beside the grid's choice (mean and t-interval);
- the noise floor: how often the grid's own choice of one seed, at another seed, is within 0.5 points of that
  seed's best;
- a search over schedules with one or two early stops (stop at a share of the budget, keep the best few by
  validation accuracy): for each budget (share of the grid's student-steps), the schedule with the most hits on the
  worst of the files, and its hits and test gains on each.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import itertools
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grid_speed  # noqa: E402

from kdlib.core.distill import TuningProblem, best_point  # noqa: E402
from kdlib.core.metrics import accuracy  # noqa: E402
from kdlib.core.train import RunOptions, predict_logits, resolve_device  # noqa: E402
from kdlib.paths import PROJECT_ROOT  # noqa: E402
from kdlib.study.stats import mean_interval, proportion_interval  # noqa: E402
from kdlib.tune.halving import DEFAULT_SCHEDULE, Checkpointing, HalvingSchedule, Rung, halving_search, replay  # noqa: E402
from kdlib.tune.halving_schedule import search_work  # noqa: E402

STOPS = (1 / 12, 1 / 9, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3)
"""Where an early stop may fall, as a share of the distillation budget."""
KEEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12)
BUDGETS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
MARGIN = 0.5
"""Validation points from the grid's best that count as a hit (issue 15's bar)."""


def default_out(scale: str, scenario: str) -> Path:
    return PROJECT_ROOT / "figures" / "benchmarks" / "halving" / f"{scale}-{scenario.replace(':', '')}.json.gz"


def read_scores(path: Path) -> dict:
    with gzip.open(path, "rt") as handle:
        return json.load(handle)


def collect(args: argparse.Namespace, out: Path) -> dict:
    """Train the grid once per missing seed, every point scored at every step; store after each seed."""
    torch.set_num_threads(args.threads)
    stored = read_scores(out) if out.exists() else {"scale": args.scale, "scenario": args.scenario, "seeds": []}
    done = {entry["seed"] for entry in stored["seeds"]}
    wanted = [seed for seed in _seed_range(args.seeds) if seed not in done]
    if not wanted:
        return stored
    setup = argparse.Namespace(
        scale=args.scale, epochs=None, scenario=args.scenario, random_init=False, device="cpu", grid="5x5",
        selection=None,
    )  # fmt: skip
    s = grid_speed._setup(setup)
    cfg, dev = s["cfg"], resolve_device("cpu")
    before = accuracy(predict_logits(s["student"], s["x_test"], dev), s["y_test"])

    def evaluate(model: torch.nn.Module) -> dict:
        return {"test_gain": accuracy(predict_logits(model, s["x_test"], dev), s["y_test"]) - before}

    points = len(s["temps"]) * len(s["alphas"])
    for seed in wanted:
        tcfg = cfg.replace(distill={"seed": seed}).distill
        problem = TuningProblem(
            lambda: copy.deepcopy(s["student"]), s["teacher"], s["x"], s["y"], s["temps"], s["alphas"], tcfg,
            cfg.val_fraction, **grid_speed._held_out(s),
        )  # fmt: skip
        n_fit = len(problem.split()[0])
        total = tcfg.epochs * math.ceil(n_fit / tcfg.batch_size)
        every_step = HalvingSchedule(rungs=[Rung(step, points) for step in range(1, total + 1)])
        found = halving_search(
            problem, RunOptions(dev, False), evaluate, schedule=every_step, resume=Checkpointing(checkpoint=None)
        )
        by_step = sorted(found.scores, key=lambda r: (r["steps"], r["index"]))
        stored["seeds"].append(
            {
                "seed": seed,
                "total": total,
                "acc": [[round(r["val_acc"], 6) for r in by_step if r["steps"] == k] for k in range(1, total + 1)],
                "loss": [[round(r["val_loss"], 6) for r in by_step if r["steps"] == k] for k in range(1, total + 1)],
                "rows": [{k: row[k] for k in ("temperature", "alpha", "val_acc", "test_gain")} for row in found.rows],
            }
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(out, "wt") as handle:
            json.dump(stored, handle)
        print(f"  {args.scenario} seed {seed}: {total} steps scored", flush=True)
    return stored


def _seed_range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def _scores(entry: dict) -> list[dict]:
    """A seed's stored step x point matrices as ``replay``'s rows."""
    return [
        {"index": i, "steps": step, "val_acc": acc, "val_loss": loss}
        for step, (accs, losses) in enumerate(zip(entry["acc"], entry["loss"], strict=True), start=1)
        for i, (acc, loss) in enumerate(zip(accs, losses, strict=True))
    ]


def _rungs(stops: tuple[tuple[float, int], ...], total: int) -> list[Rung]:
    rungs: list[Rung] = []
    for share, keep in stops:
        steps = max(round(total * share), rungs[-1].steps + 1 if rungs else 1)
        rungs.append(Rung(steps, keep))
    return [*rungs, Rung(total, 1)]


def outcome(seeds: list[dict], make_rungs) -> dict:
    """Hits within ``MARGIN`` of the grid's best, test gains (points) of both choices, and the share of work
    (each seed's ``scores``: its ``_scores``, made once by ``analyse``)."""
    gaps, grid_gain, chosen_gain, work = [], [], [], []
    for entry in seeds:
        rows, points = entry["rows"], len(entry["rows"])
        rungs = make_rungs(points, entry["total"])
        chosen = rows[replay(entry["scores"], rungs, points)["index"]]
        best = best_point(rows)
        gaps.append((best["val_acc"] - chosen["val_acc"]) * 100)
        grid_gain.append(best["test_gain"] * 100)
        chosen_gain.append(chosen["test_gain"] * 100)
        work.append(search_work(rungs, points) / (points * entry["total"]))
    return {
        "hits": sum(g <= MARGIN + 1e-9 for g in gaps),
        "n": len(gaps),
        "grid_gain": mean_interval(grid_gain),
        "chosen_gain": mean_interval(chosen_gain),
        "paired": mean_interval(c - g for c, g in zip(chosen_gain, grid_gain, strict=True)),
        "work": max(work),
    }


def analyse(files: dict[str, dict]) -> None:
    for data in files.values():
        for entry in data["seeds"]:
            entry["scores"] = _scores(entry)  # once per seed, not once per schedule replayed
    print(f"{'scores':<24}{'seeds':>6}  default schedule: hits (95% interval), test gain grid vs. default, points")
    for name, data in files.items():
        got = outcome(data["seeds"], DEFAULT_SCHEDULE.resolve)
        low, high = proportion_interval(got["hits"], got["n"])
        floor = grid_speed.noise_floor([entry["rows"] for entry in data["seeds"]], MARGIN)
        print(
            f"{name:<24}{got['n']:>6}  {got['hits']}/{got['n']} ({low:.2f}-{high:.2f}), {got['grid_gain']} vs. "
            f"{got['chosen_gain']} (paired {got['paired']}); work {got['work']:.3f} of the grid's; noise floor "
            f"{floor[0]}/{floor[1]} seed pairs"
        )
    searched = []
    for first in itertools.product(STOPS, KEEPS):
        searched.append((first,))
        searched += [
            (first, second)
            for second in itertools.product(STOPS, KEEPS)
            if second[0] > first[0] and second[1] < first[1]
        ]
    results = []
    for stops in searched:
        per_file = {
            name: outcome(data["seeds"], lambda _p, total, s=stops: _rungs(s, total)) for name, data in files.items()
        }
        results.append((stops, per_file, max(r["work"] for r in per_file.values())))
    print(f"\none or two early stops ({len(searched)} searched); per budget, the most hits on the worst file:")
    for budget in BUDGETS:
        within = [r for r in results if r[2] <= budget]
        if not within:
            continue
        stops, per_file, work = max(
            within, key=lambda r: (min(v["hits"] for v in r[1].values()), sum(v["hits"] for v in r[1].values()), -r[2])
        )
        text = ", ".join(f"stop at {share:.3g} keep {keep}" for share, keep in stops)
        print(f"  work <= {budget:.2f}: {text} (work {work:.3f})")
        for name, got in per_file.items():
            print(
                f"      {name:<22} {got['hits']}/{got['n']}, test gain {got['chosen_gain']} vs. grid {got['grid_gain']}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="smoke", choices=("smoke", "full", "paper"))
    parser.add_argument("--scenario", default=None, help="collect this scenario's scores (default: analyse only)")
    parser.add_argument("--seeds", default="0-9", help="training seeds to collect, e.g. 0-19")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", default=None, help="scores file (default figures/benchmarks/halving/<scale>-<scenario>.json.gz)"
    )
    parser.add_argument("--analyse", nargs="*", default=[], help="stored scores files to analyse together")
    args = parser.parse_args(argv)
    files = {}
    if args.scenario:
        out = Path(args.out) if args.out else default_out(args.scale, args.scenario)
        files[out.name.removesuffix(".json.gz")] = collect(args, out)
    for path in map(Path, args.analyse):
        if path.name.removesuffix(".json.gz") not in files:
            files[path.name.removesuffix(".json.gz")] = read_scores(path)
    if not files:
        raise SystemExit("nothing to analyse: give --scenario (to collect) or --analyse FILE ...")
    analyse(files)


if __name__ == "__main__":
    main()
