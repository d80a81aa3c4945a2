"""kdlib's command line: pre-train parties, run one KD method or the whole study, execute the notebooks, or merge
into a store the runs that another machine stored.

Every command but merge takes --scale smoke|full|paper and --set FIELD=VALUE for any config field;
`kdlib COMMAND --help` lists its options."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kdlib.errors import ONE_LINE_ERRORS, KDConfigError
from kdlib.study.config import SCALES, scale_config
from kdlib.study.methods import method_names


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["n_train=500", "distill={\\"epochs\\": 2}"]`` -> dict; values are JSON when they parse, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise KDConfigError("--set", pair, "KEY=VALUE, e.g. n_train=500 or distill='{\"epochs\": 2}'")
        key, value = pair.split("=", 1)
        if not key.strip():
            raise KDConfigError("--set", pair, "KEY=VALUE with a config field name before '='")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


PLAN_HELP = "run nothing: print, seed by seed, how many runs the store holds and which are missing"
SCENARIO_HELP = "a partition: iid, dirichlet:0.5, disjoint, disjoint:3, disjoint:0-4|5-9 or quantity:1.5"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdlib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scale", choices=SCALES, default="smoke", help="parameter set (default: smoke)")
        p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
        p.add_argument("--dataset", default=None, help="digits, cifar10 (default), cifar100 or imagefolder:PATH")
        p.add_argument("--seed", type=int, default=None, help="the first seed (default: 0); --set seeds=N runs N")
        p.add_argument("--results", default=None, help="results folder (default: results/)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (repeatable), e.g. n_train=5000 or distill='{\"epochs\": 8}'")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("pretrain", help="pre-train the teacher and student of one scenario; print accuracies")
    common(p)
    p.add_argument("--scenario", default="disjoint", help=SCENARIO_HELP + " (default: disjoint)")
    p = sub.add_parser("run", help="one KD method on one scenario")
    common(p)
    p.add_argument("--scenario", required=True, help=SCENARIO_HELP)
    p.add_argument("--method", required=True, choices=method_names(), help="a registered method (kdlib.study.methods)")
    p.add_argument("--force", action="store_true", help="run again even if stored")
    p = sub.add_parser("study", help="every method on every scenario; prints the gain table")
    common(p)
    p.add_argument("--force", action="store_true", help="run again even if stored")
    p.add_argument(
        "--workers",
        default=None,
        help="runs at once: 'auto' one per core on Ray (default, or KDLIB_WORKERS), N on Ray, 0 or 1 one by one here",
    )
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--plan", action="store_true", help=PLAN_HELP)
    p = sub.add_parser("federated", help="FedAvg from every start, over seeds; prints rounds to target and the verdict")
    common(p)
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds: seed, seed + 1, ... (default: the scale's: 1 at smoke, 5 at full); = --set seeds=N")
    p.add_argument("--plan", action="store_true", help=PLAN_HELP)
    p = sub.add_parser("reproduce", help="execute the notebooks with papermill; figures to runs/figures/")
    common(p)
    p.add_argument("--output", default="runs/notebooks", help="folder for the executed notebooks")
    p.add_argument("--only", default=None, help="comma-separated notebook name prefixes, e.g. 00,01")
    p.add_argument("--workers", type=int, default=None,
                   help="notebooks at once, each after those it reads (default: one per core, at most 4)")
    p.add_argument("--gallery", action="store_true",
                   help="write the figures to the committed gallery figures/ (default: runs/figures/, ignored by git)")
    p = sub.add_parser("merge", help="add another store's runs (made on a GPU machine, say) not done here")
    p.add_argument("source", help="the other store's .jsonl file")
    p.add_argument("--results", default=None, help="the results folder to add them to (default: results/)")
    p.add_argument("--store", default="study", help="the store's name in that folder (default: study)")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` pairs with ``--dataset`` and ``--seed`` merged in; a field given both ways with two values is
    refused (neither silently wins), and ``--set scale=...`` too (the scale is ``--scale``)."""
    overrides = parse_overrides(args.set)
    if "scale" in overrides:
        allowed = f"not settable with --set: choose the scale with --scale {{{','.join(SCALES)}}}"
        raise KDConfigError("--set scale", overrides["scale"], allowed)
    for name in ("dataset", "seed"):
        flag = getattr(args, name)
        if flag is None:
            continue
        if name in overrides and overrides[name] != flag:
            allowed = f"one value: --{name} {flag} and --set {name}={overrides[name]!r} disagree; give only one"
            raise KDConfigError(name, overrides[name], allowed)
        overrides[name] = flag
    return overrides


def config_from_args(args: argparse.Namespace):
    return scale_config(args.scale, **overrides_from_args(args))


def check_output_folders(args: argparse.Namespace) -> None:
    """The device, every folder this command will write (results, checkpoint cache, figures) and the data folder,
    checked before anything runs: a variable naming a file or an unwritable folder fails here, not after training."""
    from kdlib.core.train import resolve_device
    from kdlib.data.datasets import default_root
    from kdlib.paths import cache_dir, check_writable_folder, figures_dir, results_dir

    resolve_device(args.device)  # also for reproduce, whose notebooks would fail on it one by one
    default_root()
    if args.results is None:
        check_writable_folder("KDLIB_RESULTS", results_dir())
    check_writable_folder("KDLIB_CACHE", cache_dir())
    if args.command == "reproduce":
        check_writable_folder("KDLIB_FIGURES", figures_dir())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except ONE_LINE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "merge":
        return run_merge(args)
    check_output_folders(args)
    if args.command == "reproduce":
        from kdlib.notebook.reproduce import Execution, reproduce

        overrides = overrides_from_args(args)
        return reproduce(
            args.scale,
            only=args.only,
            overrides=overrides,
            execution=Execution(output=args.output, device=args.device, progress=not args.quiet,
                                gallery=args.gallery, workers=args.workers),  # fmt: skip
        )
    if args.command == "federated":
        return run_federated(args)
    from kdlib.study.results import ResultsStore
    from kdlib.study.runner import Study

    cfg = config_from_args(args)
    if args.command in ("pretrain", "run"):
        from kdlib.data.partition import parse_partition

        parse_partition(args.scenario)  # a bad --scenario fails here, before any data is loaded
    study = Study(cfg, ResultsStore.open("study", args.results), device=args.device, progress=not args.quiet)
    if args.command == "pretrain":
        print(
            f"{study.dataset.description}: {len(study.dataset.x_train)} train / {len(study.dataset.x_test)} "
            f"test images, scenario {args.scenario!r}, scale {cfg.scale}"
        )
        scenario = study.scenario(args.scenario)
        for role, (_model, meta) in zip(("teacher", "student"), study.parties(args.scenario), strict=True):
            party = 0 if role == "teacher" else 1
            print(
                f"{role:8s} party {party}: {meta['train_size']:5d} images, own classes {scenario.own_classes(party)}"
                f" | test acc {100 * meta['test_acc']:5.1f}%  own {100 * meta['own_acc']:5.1f}%"
                f"  unseen {_pct(meta['unseen_acc'])}"
            )
        return 0
    if args.command == "run":
        from kdlib.study.parallel import run_claimed  # the study's per-key claim: never computed twice beside a study

        record = run_claimed(study, (args.scenario, args.method, cfg.seed), force=args.force)
        print(json.dumps({k: v for k, v in record["metrics"].items()}, indent=1))
        return 0
    if args.plan:
        return print_plan(study, f"study of {cfg.dataset}, scale {cfg.scale}{_sets(args)}")
    workers = args.workers if args.workers is not None else os.environ.get("KDLIB_WORKERS", "auto")
    table = study.run_all(force=args.force, workers=workers, ray_address=args.ray_address)
    print(f"\nGain in accuracy points (after - before), {study.dataset.description}, scale {cfg.scale}:")
    print(table.to_string())
    return 0


def run_federated(args: argparse.Namespace) -> int:
    """``kdlib federated``: the federated study over its seeds, by the one runner (stored runs reused), then the
    rounds to target per seed and the paper's 60.6% judged over the seeds (``findings.federated_claims``)."""
    from kdlib.fl.study import open_federated
    from kdlib.study.findings import federated_claims, verdict_table

    overrides = overrides_from_args(args)
    if args.seeds is not None:
        if overrides.get("seeds", args.seeds) != args.seeds:
            allowed = f"one value: --seeds {args.seeds} and --set seeds={overrides['seeds']!r} disagree; give only one"
            raise KDConfigError("seeds", overrides["seeds"], allowed)
        overrides["seeds"] = args.seeds
    fed = open_federated(args.scale, device=args.device, results=args.results, progress=not args.quiet, **overrides)
    if args.plan:
        return print_plan(fed, f"federated study of {fed.cfg.dataset}, scale {args.scale}{_sets(args)}")
    summary = fed.run_all()
    print(summary[["seed", "scenario", "start", "rounds_to_target", "reduction_pct", "status"]].to_string(index=False))
    table = verdict_table(federated_claims(summary))
    for (claim, _), row in table.iterrows():
        print(f"- {claim}: {row['verdict']} (n = {row['n']}, {args.scale} scale; {row['effect']}; ratio "
              f"{row['ratio of means']}; paper {row['paper']})")
    return 0


PLAN_NAMES_SHOWN = 6
"""How many missing runs ``--plan`` names per seed before it counts the rest."""


def print_plan(study: Any, title: str) -> int:
    """``--plan``: the study's store, seed by seed (``parallel.stored_by_seed``): runs stored of the seed's runs, and
    the missing ones by name. Nothing runs and no data are loaded."""
    from kdlib.study.parallel import stored_by_seed

    rows = stored_by_seed(study)
    whole = sum(row["stored"] == row["jobs"] for row in rows)
    print(f"{title}: {whole} of {len(rows)} seed(s) complete in {study.store.path}")
    for row in rows:
        line = f"seed {row['seed']}: {row['stored']}/{row['jobs']} runs stored"
        missing = row["missing"]
        if missing:
            shown = ", ".join(missing[:PLAN_NAMES_SHOWN])
            more = len(missing) - PLAN_NAMES_SHOWN
            line += f"; missing {shown}" + (f" and {more} more" if more > 0 else "")
        print(line)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """``kdlib merge``: the other store's runs whose keys are not done here are appended, with their own provenance."""
    from pathlib import Path

    from kdlib.study.results import ResultsStore

    target = ResultsStore.open(args.store, args.results)
    added, skipped = target.merge(ResultsStore(Path(args.source)))
    print(f"{added} run(s) added to {target.path}; {skipped} skipped (done there already)")
    return 0


def _sets(args: argparse.Namespace) -> str:
    """The command's ``--set`` pairs, as a title's tail: which variant of the scale it names."""
    return "".join(f" --set {pair}" for pair in args.set)


def _pct(value: float) -> str:
    return "  n/a" if value != value else f"{100 * value:5.1f}%"


if __name__ == "__main__":
    sys.exit(main())
