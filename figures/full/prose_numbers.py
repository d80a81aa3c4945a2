"""The numbers that the prose of figures/full/README.md and public_teacher/README.md quotes beside 08's verdict block,
recomputed from the store, so that a reader can check each one (nothing is trained; seconds).

    python figures/full/prose_numbers.py                      # the main study's ten seeds
    python figures/full/prose_numbers.py --part public_teacher
    python figures/full/prose_numbers.py --part federated     # 08's scenario table of the federated claim

Each number is a mean over the seeds with its 95% t half-width (per seed first averaged over the part's scenarios
where it says so), in accuracy points or % of the test images. The verdicts themselves come from 08_findings."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from kdlib.fl.study import open_federated
from kdlib.study.findings import federated_scenario_table
from kdlib.study.methods import method_names
from kdlib.study.runner import open_study
from kdlib.study.stats import mean_interval

PARTS = {
    "main": {},
    "public_teacher": {"teacher_model": "published:resnet56", "scenarios": "iid,dirichlet:0.1"},
    "federated": {"starts": "random,kd_avg,kd_dp"},
}  # the options of variants.sh (PUBLIC_TEACHER_SETS, FEDERATED_CLAIM_STARTS)


def spread(values: pd.Series, scale: float = 100.0) -> str:
    """``mean ± t half-width (n=...)`` of per-seed values, times ``scale``."""
    interval = mean_interval((values * scale).tolist())
    return f"{interval.text(signed=False)} (n={interval.n})"


def per_seed(frame: pd.DataFrame, method: str, column: str) -> pd.Series:
    """A method's ``column`` per seed, averaged over the frame's scenarios."""
    return frame[frame["method"] == method].groupby("seed")[column].mean()


def print_numbers(frame: pd.DataFrame) -> None:
    methods = [method for method in method_names() if method in set(frame["method"])]
    finetune = frame[frame["method"] == "finetune"].set_index(["seed", "scenario"])
    print(f"{len(frame)} records; seeds {sorted(int(seed) for seed in frame['seed'].unique())}")
    print(f"teacher accuracy {100 * finetune['teacher_acc'].min():.1f}-{100 * finetune['teacher_acc'].max():.1f}%")
    for scenario, part in finetune.groupby(level="scenario", sort=False):
        gap = part["teacher_acc"] - part["acc_before"]
        print(f"{scenario}: student before {spread(part['acc_before'])}%, teacher minus student {spread(gap)} points;"
              f" own classes per seed {part['student_own_classes'].tolist()}")  # fmt: skip
    weak = finetune[finetune["teacher_acc"] < finetune["acc_before"]]
    for (seed, scenario), row in weak.iterrows():
        standard = frame.query("seed == @seed and scenario == @scenario and method == 'standard'")["gain"]
        print(f"teacher weaker than the student: seed {seed} {scenario}: {100 * row['teacher_acc']:.1f}% vs "
              f"{100 * row['acc_before']:.1f}%, standard KD gain {100 * standard.iloc[0]:+.2f} points")  # fmt: skip
    disjoint = frame.query("scenario == 'disjoint' and method == 'standard'")["gain"]
    if len(disjoint):
        print(f"disjoint: standard KD gain per seed {[round(100 * gain, 2) for gain in disjoint]}")
    print("\nper method, per seed averaged over the scenarios:")
    base = per_seed(frame, "finetune", "gain")
    for method in methods:
        print(f"  {method:13s} gain {spread(per_seed(frame, method, 'gain'))}, over fine-tuning "
              f"{spread(per_seed(frame, method, 'gain') - base)}; ECE {spread(per_seed(frame, method, 'ece_after'))}, "
              f"NLL {spread(per_seed(frame, method, 'nll_after'), scale=1.0)} nats")  # fmt: skip
    tuned = frame[frame["method"] == "tuned"]["best_temperature"]
    print(f"tuned KD chose T=1 in {(tuned == 1.0).sum()} of its {len(tuned)} searches")
    print("\nper scenario, % of the test images turned right (from wrong) and wrong (from right):")
    for scenario, by_scenario in frame.groupby("scenario", sort=False):
        for method in methods:
            part = by_scenario[by_scenario["method"] == method]
            unseen = part["unseen_before"].notna().any()
            print(f"  {scenario:14s} {method:13s} {spread(part['knowledge_gain'])} and {spread(part['knowledge_loss'])}"
                  + (f"; unseen classes {spread(part['unseen_before'])}% -> {spread(part['unseen_after'])}%"
                     if unseen else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), default="main")
    args = parser.parse_args()
    os.environ.setdefault("KDLIB_RESULTS", str(Path(__file__).resolve().parent))
    if args.part == "federated":  # the stored runs of the complete seeds only: summary() runs nothing
        federated = open_federated("full", progress=False, **PARTS["federated"])
        summary = federated.summary()
        print(federated_scenario_table(summary[summary["seed"] < federated.complete_seeds()]).to_string())
        return
    study = open_study("full", progress=False, **PARTS[args.part])
    seeds = study.complete_seeds()
    frame = study.frame()
    print_numbers(frame[frame["seed"] < seeds])


if __name__ == "__main__":
    main()
