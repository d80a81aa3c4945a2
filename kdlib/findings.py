"""Our numbers against the paper's claims (Alballa et al., arXiv 2402.14922), each with its interval over seeds and
a verdict computed by one rule (``verdict``): holds, refuted, or inconclusive at this scale."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdlib.stats import Interval, mean_interval

PAPER_TUNING_GAIN_IID = 16.0
"""Tuned KD's gain over the best untuned method under IID data, in % (the paper's abstract)."""
PAPER_TUNING_GAIN_NON_IID = 139.0
"""The same, averaged over non-IID scenarios, in % (the paper's abstract)."""
PAPER_FL_ROUND_REDUCTION = 60.6
"""Fewer communication rounds for FedAvg started from a KD-consolidated model, in % (the paper's abstract)."""
UNTUNED_METHODS = ("standard", "dml", "dp")


def tuning_improvement(gains: pd.DataFrame) -> pd.DataFrame:
    """Per scenario: tuned gain, best untuned gain (and which), and the relative improvement in %.

    ``gains`` is a scenario x method table of gains (any unit). The relative improvement is
    ``(tuned - best_untuned) / |best_untuned|``; it is undefined (nan) where the best untuned gain is 0.
    """
    untuned = [m for m in UNTUNED_METHODS if m in gains.columns]
    if "tuned" not in gains.columns or not untuned:
        raise ValueError(f"The gain table needs a 'tuned' column and one of {UNTUNED_METHODS}; it has {list(gains)}")
    best = gains[untuned].max(axis=1)
    base = best.abs().where(best != 0)
    return pd.DataFrame(
        {
            "tuned": gains["tuned"],
            "best untuned": best,
            "best untuned method": gains[untuned].idxmax(axis=1),
            "relative (%)": 100 * (gains["tuned"] - best) / base,
        }
    )


# ------------------------------------------------------------------------------------------- verdicts

VERDICTS = ("holds", "refuted", "inconclusive")


@dataclass(frozen=True)
class Estimate:
    """A value with its interval ``[low, high]`` over ``n`` seeds (no interval: NaN bounds)."""

    value: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, interval: Interval) -> Estimate:
        return cls(interval.mean, interval.low, interval.high, interval.n)

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, unit: str = "%", digits: int = 0) -> str:
        if not math.isfinite(self.value):
            return "n/a"
        head = f"{self.value:+.{digits}f}{unit}"
        if not self.has_interval:
            return f"{head} (1 seed, no interval)" if self.n == 1 else f"{head} (unbounded: denominator may be 0)"
        return f"{head} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def verdict(estimate: Estimate, paper: float, denominator: Interval | None = None) -> tuple[str, str]:
    """``(verdict, why)`` of a claim whose paper value is ``paper`` (non-zero), from our ``estimate`` in the same
    unit. The rule, in order:

    1. fewer than two seeds -> inconclusive (no interval);
    2. a ratio whose denominator's interval contains 0 (or has no interval) -> inconclusive;
    3. the interval holds the paper's value: holds, unless it holds 0 too -> inconclusive;
    4. the interval lies beyond the paper's value (same direction, larger) -> holds;
    5. the interval lies short of the paper's value (smaller, absent or reversed) -> refuted.
    """
    if not estimate.has_interval:
        return "inconclusive", "one seed: no interval" if estimate.n < 2 else "no interval"
    if denominator is not None and not (denominator.has_interval and (denominator.low > 0 or denominator.high < 0)):
        return "inconclusive", "the ratio's denominator (best untuned gain) has an interval that contains 0"
    sign = 1.0 if paper > 0 else -1.0
    low, high = sorted((sign * estimate.low, sign * estimate.high))
    target = sign * paper
    if low <= target <= high:
        if low <= 0 <= high:
            return "inconclusive", "the interval holds both 0 and the paper's value"
        return "holds", "the paper's value lies in our interval"
    if low > target:
        return "holds", "our interval lies beyond the paper's value: a larger effect"
    direction = "smaller but real" if low > 0 else ("absent or reversed" if high < 0 else "possibly absent")
    return "refuted", f"our interval lies short of the paper's value: the effect is {direction}"


@dataclass(frozen=True)
class ClaimCheck:
    """One of the paper's claims against our stored runs."""

    claim: str
    paper: float
    ours: Estimate
    """Our value in the claim's unit (% for the ratios), with its interval."""
    points: Interval
    """The same in absolute units beside the ratio (accuracy points, or rounds saved)."""
    points_unit: str
    denominator: Interval | None
    verdict: str
    why: str
    checked_with: str
    """The transfer set (and scenarios) the claim is checked with."""

    def row(self) -> dict:
        return {
            "claim": self.claim,
            "paper": f"{self.paper:+.1f}%",
            "ours": self.ours.text(),
            "absolute": f"{self.points.text()} {self.points_unit}",
            "denominator": "" if self.denominator is None else f"{self.denominator.text()} points",
            "verdict": self.verdict,
            "why": self.why,
            "checked with": self.checked_with,
            "seeds": self.ours.n,
        }


def _ratio(difference: Interval, base: Interval) -> Estimate:
    """``100 * difference / |base|`` with bounds from the two intervals' corners (conservative)."""
    value = 100 * difference.mean / abs(base.mean) if base.mean else math.nan
    if not (difference.has_interval and base.has_interval) or base.low <= 0 <= base.high:
        return Estimate(value, math.nan, math.nan, min(difference.n, base.n))
    lo_b, hi_b = sorted((abs(base.low), abs(base.high)))
    corners = [100 * d / b for d in (difference.low, difference.high) for b in (lo_b, hi_b)]
    return Estimate(value, min(corners), max(corners), min(difference.n, base.n))


def scenario_improvement(frame: pd.DataFrame, scenario: str) -> dict:
    """Tuned vs. the best untuned method (by mean gain over seeds) in one scenario, paired by seed, in points.

    ``frame``: one row per (scenario, method, seed) with a ``gain`` column (a fraction), as ``Study.frame()``.
    """
    part = frame[frame["scenario"] == scenario]
    gains = part.pivot_table(index="seed", columns="method", values="gain") * 100
    untuned = [m for m in UNTUNED_METHODS if m in gains.columns]
    if "tuned" not in gains.columns or not untuned:
        raise ValueError(f"scenario {scenario!r} needs tuned and one of {UNTUNED_METHODS}; it has {list(gains)}")
    best = gains[untuned].mean().idxmax()
    paired = gains[["tuned", best]].dropna()
    difference = mean_interval(paired["tuned"] - paired[best])
    base = mean_interval(paired[best])
    return {
        "scenario": scenario,
        "best untuned method": best,
        "difference": difference,
        "base": base,
        "ratio": _ratio(difference, base),
        "per_seed": (paired["tuned"] - paired[best]).rename(scenario),
        "per_seed_base": paired[best].rename(scenario),
    }


def improvement_table(frame: pd.DataFrame, scenarios: Sequence[str] | None = None) -> pd.DataFrame:
    """Per scenario: tuned's gain over the best untuned method, in points and in %, each with its interval."""
    rows = []
    for name in scenarios or list(dict.fromkeys(frame["scenario"])):
        r = scenario_improvement(frame, name)
        rows.append(
            {
                "scenario": name,
                "best untuned": r["best untuned method"],
                "best untuned gain (points)": r["base"].text(),
                "tuned - best (points)": r["difference"].text(),
                "relative (%)": r["ratio"].text(),
                "seeds": r["difference"].n,
            }
        )
    return pd.DataFrame(rows).set_index("scenario")


def _checked_with(frame: pd.DataFrame, scenarios: Sequence[str]) -> str:
    transfer = ", ".join(sorted(frame["transfer"].dropna().unique())) if "transfer" in frame else "student"
    names = {"student": "the student's own data", "union": "both parties' data", "public": "a public split"}
    return f"transfer set: {names.get(transfer, transfer)}; scenarios: {', '.join(scenarios)}"


def _nonzero(interval: Interval) -> bool:
    """Whether an interval exists and excludes 0."""
    return interval.has_interval and (interval.low > 0 or interval.high < 0)


def tuning_claims(frame: pd.DataFrame, iid: Sequence[str] = ("iid",)) -> list[ClaimCheck]:
    """The paper's two tuning claims (+16% IID, +139% non-IID) against the runs of ``frame`` (as ``Study.frame()``).

    Per scenario the relative improvement is ``100 * (tuned - best untuned) / |best untuned|``, the best untuned
    method chosen by its mean gain and the difference paired by seed; the non-IID claim averages it over the
    non-IID scenarios (bounds averaged too). Beside it: the difference in accuracy points, t-interval over seeds.
    """
    scenarios = list(dict.fromkeys(frame["scenario"]))
    checks = []
    for label, paper, names in (
        ("tuned over best untuned, IID", PAPER_TUNING_GAIN_IID, [s for s in scenarios if s in iid]),
        ("tuned over best untuned, non-IID (mean)", PAPER_TUNING_GAIN_NON_IID, [s for s in scenarios if s not in iid]),
    ):
        if not names:
            continue
        results = [scenario_improvement(frame, s) for s in names]
        points = mean_interval(pd.concat([r["per_seed"] for r in results], axis=1).dropna().mean(axis=1))
        base = mean_interval(pd.concat([r["per_seed_base"] for r in results], axis=1).dropna().mean(axis=1))
        ratios = [r["ratio"] for r in results]
        ours = Estimate(
            float(np.mean([e.value for e in ratios])),
            float(np.mean([e.low for e in ratios])),
            float(np.mean([e.high for e in ratios])),
            min(e.n for e in ratios),
        )
        outcome = verdict(ours, paper, results[0]["base"] if len(results) == 1 else None)
        undefined = [r["scenario"] for r in results if not _nonzero(r["base"])]
        if ours.n >= 2 and undefined:
            outcome = ("inconclusive", f"the best untuned gain's interval contains 0 in {', '.join(undefined)}")
        checks.append(ClaimCheck(label, paper, ours, points, "points", base, *outcome, _checked_with(frame, names)))
    return checks


def federated_claims(summary: pd.DataFrame, starts: Sequence[str] = ("kd_avg", "kd_dp")) -> list[ClaimCheck]:
    """The paper's 60.6% fewer FedAvg rounds, per KD start, from ``federated.round_reduction_summary`` rows.

    Per seed (a ``seed`` column; without one, all rows are one seed) the reduction is averaged over the
    scenarios where the start and the baseline reached the target; beside it, the rounds saved.
    """
    checks = []
    for start in starts:
        part = summary[summary["start"] == start] if "start" in summary else summary.iloc[:0]
        part = part.assign(saved=part["rounds_random"].astype(float) - part["rounds_to_target"].astype(float))
        part = part.dropna(subset=["reduction_pct"])
        if part.empty:
            continue
        by_seed = part.groupby("seed") if "seed" in part else [(0, part)]
        per_seed = pd.DataFrame([{"pct": g["reduction_pct"].mean(), "saved": g["saved"].mean()} for _, g in by_seed])
        ours = Estimate.of(mean_interval(per_seed["pct"]))
        scenarios = list(dict.fromkeys(part["scenario"]))
        checks.append(
            ClaimCheck(
                f"fewer FedAvg rounds from a KD start ({start})",
                PAPER_FL_ROUND_REDUCTION,
                ours,
                mean_interval(per_seed["saved"]),
                "rounds",
                None,
                *verdict(ours, PAPER_FL_ROUND_REDUCTION),
                f"a public split (distilled from all clients); scenarios: {', '.join(scenarios)}",
            )
        )
    return checks


def verdict_table(checks: Sequence[ClaimCheck]) -> pd.DataFrame:
    """One row per claim: paper, ours with its interval, the absolute difference, the verdict and why."""
    return pd.DataFrame([c.row() for c in checks]).set_index("claim")
