"""Rounds to target, the round reduction against FedAvg from a random start, and the comparison with the paper."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kdlib.fl.config import KIND, FederatedConfig
from kdlib.fl.starts import get_start, kd_start_names, start_names
from kdlib.study.results import ResultsStore


def rounds_to_target(accuracies: Sequence[float], target: float, initial: float | None = None) -> int | None:
    """The first round (1-based; ``accuracies[i]`` is the accuracy after round i + 1) whose accuracy is at least
    ``target``; 0 if the ``initial`` (round-0) accuracy already is; None if it is never reached."""
    if initial is not None and initial >= target:
        return 0
    for number, value in enumerate(accuracies, start=1):
        if value >= target:
            return number
    return None


def round_reduction(rounds_method: int | None, rounds_scratch: int | None) -> float | None:
    """``1 - rounds_method / rounds_scratch``; None when either never reached the target (no honest number)."""
    if rounds_method is None or rounds_scratch is None or rounds_scratch == 0:
        return None
    return 1.0 - rounds_method / rounds_scratch


def scenario_target(cfg_target: float | None, relative: float, scratch_curve: Sequence[float]) -> float:
    """The accuracy target of a scenario: absolute if given, else ``relative`` x the best from-scratch accuracy."""
    if cfg_target is not None:
        return float(cfg_target)
    if not scratch_curve:
        raise ValueError("a relative target needs the curve of FedAvg from a random start")
    return relative * max(scratch_curve)


def _status(rounds: int | None, base: int | None, total: int, start: str) -> str:
    """The outcome in words; where only the baseline missed the target, the reduction's lower bound (the
    baseline would need at least ``total + 1`` rounds)."""
    if rounds is None:
        return f"not reached within {total} rounds"
    if base is None and start != "random":
        return f"reached at round {rounds}; random init not within {total} (> {100 * (1 - rounds / (total + 1)):.0f}%)"
    return f"reached at round {rounds}"


def target_metrics(curve: Sequence[dict], scratch: Sequence[float], start_bytes: float, cfg: FederatedConfig) -> dict:
    """The target of a run's scenario, its rounds to reach it, and the megabytes sent until then (the start's
    one-off upload included); NaN / None where it cannot be computed or was not reached."""
    accs = [row["accuracy"] for row in curve if row["round"] > 0]
    if cfg.target_accuracy is None and not scratch:
        return {
            "target_accuracy": np.nan,
            "target_rule": cfg.target_rule(),
            "rounds_to_target": None,
            "reached": False,
            "mb_to_target": None,
        }
    target = scenario_target(cfg.target_accuracy, cfg.target_relative, scratch)
    rounds = rounds_to_target(accs, target, curve[0]["accuracy"])
    sent = sum(row["bytes_down"] + row["bytes_up"] for row in curve[: (rounds or 0) + 1])
    return {
        "target_accuracy": target,
        "target_rule": cfg.target_rule(),
        "rounds_to_target": rounds,
        "reached": rounds is not None,
        "mb_to_target": None if rounds is None else (sent + start_bytes) / 1024**2,
    }


SUMMARY_COLUMNS: tuple[str, ...] = (
    "scenario",
    "start",
    "role",
    "seed",
    "rounds_to_target",
    "rounds_random",
    "reduction_pct",
    "status",
    "rounds",
    "target_acc",
    "initial_acc",
    "final_acc",
    "mb_to_target",
    "kd_wall_s",
    "kd_sample_epochs",
    "start_mb",
    "fl_wall_s",
    "scale",
    "dataset",
    "group",
)


def round_reduction_summary(
    store_or_frame: ResultsStore | pd.DataFrame,
    scale: str | None = None,
    dataset: str | None = None,
    kind: str = KIND,
) -> pd.DataFrame:
    """Rounds to target per scenario and start, and the reduction against FedAvg from a random start.

    Takes a results store (or its ``frame("federated")``), optionally only the runs of one ``scale`` / ``dataset``.
    Runs are compared only within their config without the start (``group`` column), so different scales or seeds
    are never mixed; the latest record of a run counts. ``reduction_pct`` is ``100 * (1 - rounds / rounds_random)``,
    NaN where a start (or the baseline) never reached the target; ``status`` says so in words. No runs: an empty
    frame with the same columns.
    """
    frame = store_or_frame.frame(kind) if isinstance(store_or_frame, ResultsStore) else store_or_frame
    if not frame.empty and "kind" in frame:
        frame = frame[frame["kind"] == kind]
    for column, value in (("scale", scale), ("dataset", dataset)):
        if value is not None and not frame.empty:
            frame = frame[frame[column] == value]
    if frame.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    frame = frame.drop_duplicates("key", keep="last")
    rows = []
    for _, row in frame.iterrows():
        scratch = frame[(frame["group"] == row["group"]) & (frame["start"] == "random")]
        rounds = _as_rounds(row["rounds_to_target"])
        base = _as_rounds(scratch["rounds_to_target"].iloc[-1]) if len(scratch) else None
        reduction = round_reduction(rounds, base)
        rows.append(
            {
                "scenario": row["scenario"],
                "start": row["start"],
                "role": get_start(row["start"]).role if row["start"] in start_names() else "",
                "seed": int(row.get("seed", 0)),
                "rounds_to_target": rounds,
                "rounds_random": base,
                "reduction_pct": np.nan if reduction is None else 100 * reduction,
                "status": _status(rounds, base, int(row["rounds"]), row["start"]),
                "rounds": int(row["rounds"]),
                "target_acc": row["target_accuracy"],
                "initial_acc": row["initial_acc"],
                "final_acc": row["final_acc"],
                "mb_to_target": row.get("mb_to_target"),
                "kd_wall_s": row.get("kd_wall_s"),
                "kd_sample_epochs": row.get("kd_sample_epochs"),
                "start_mb": row.get("start_mb"),
                "fl_wall_s": row.get("fl_wall_s"),
                "scale": row["scale"],
                "dataset": row["dataset"],
                "group": row["group"],
            }
        )
    out = pd.DataFrame(rows)
    out["rounds_to_target"] = out["rounds_to_target"].astype("Int64")
    out["rounds_random"] = out["rounds_random"].astype("Int64")
    order = {s: i for i, s in enumerate(start_names())}
    groups = {g: i for i, g in enumerate(dict.fromkeys(out["group"]))}
    out["_order"] = out["group"].map(groups) * len(order) + out["start"].map(order)
    return out.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def _as_rounds(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return int(value)


def compare_with_paper(summary: pd.DataFrame, starts: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean round reduction (%) of each KD start over the scenarios where it and the baseline reached the target,
    beside the paper's 60.6%; ``not reached`` counts the scenarios left out (the start or the baseline missed the
    target within the budget: see ``status`` in the summary)."""
    from kdlib.study.findings import PAPER_FL_ROUND_REDUCTION

    rows = []
    for start in kd_start_names() if starts is None else starts:
        part = summary[summary["start"] == start] if "start" in summary else summary.iloc[:0]
        if part.empty:
            continue
        reached = part["reduction_pct"].dropna()
        rows.append(
            {
                "start": start,
                "ours (%)": reached.mean() if len(reached) else np.nan,
                "paper (%)": PAPER_FL_ROUND_REDUCTION,
                "scenarios": len(part),
                "not reached": int(part["reduction_pct"].isna().sum()),
                "scale": ", ".join(sorted(part["scale"].unique())),
            }
        )
    return pd.DataFrame(rows).set_index("start") if rows else pd.DataFrame()

