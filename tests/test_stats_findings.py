"""kdlib.stats against SciPy's Student t, and the verdict rule of kdlib.findings on constructed inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from kdlib.errors import KDConfigError
from kdlib.findings import (
    PAPER_FL_ROUND_REDUCTION,
    PAPER_TUNING_GAIN_IID,
    Estimate,
    federated_claims,
    improvement_table,
    scenario_improvement,
    tuning_claims,
    verdict,
    verdict_table,
)
from kdlib.stats import (
    interval_table,
    mean_interval,
    proportion_interval,
    seeds_note,
    summarise,
    t_critical,
    t_within,
)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 29, 30, 120, 999])
def test_t_distribution_matches_scipy(df: int) -> None:
    for t in (0.0, 0.05, 0.7, 1.96, 3.0, 12.7, 80.0):
        expected = scipy_stats.t.cdf(t, df) - scipy_stats.t.cdf(-t, df)
        assert t_within(t, df) == pytest.approx(expected, abs=1e-12)
    for confidence in (0.5, 0.9, 0.95, 0.99):
        assert t_critical(df, confidence) == pytest.approx(scipy_stats.t.ppf((1 + confidence) / 2, df), rel=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_mean_interval_matches_scipy_t_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(rng.normal(), rng.uniform(0.1, 5), size=int(rng.integers(2, 12)))
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    interval = mean_interval(values)
    assert interval.n == len(values)
    assert interval.mean == pytest.approx(values.mean())
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-9)
    assert interval.contains(values.mean()) and not interval.contains(high + 1e-6)


@pytest.mark.parametrize(("hits", "n"), [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (58, 90), (3, 7)])
def test_proportion_interval_matches_scipy_wilson(hits: int, n: int) -> None:
    low, high = proportion_interval(hits, n)
    expected = scipy_stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-9)
    assert 0.0 <= low <= hits / n <= high <= 1.0


def test_proportion_interval_rejects_impossible_counts() -> None:
    for hits, n in ((11, 10), (-1, 10), (0, 0), (1.5, 10)):
        with pytest.raises(KDConfigError, match="hits"):
            proportion_interval(hits, n)


def test_one_value_has_no_interval_and_says_so() -> None:
    one = mean_interval([0.4, math.nan])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.half_width)
    assert not one.has_interval and not one.contains(0.4)
    assert one.text() == "+0.40 (1 seed)"
    assert mean_interval([1.0, 3.0]).text(1) == f"+2.0 ± {t_critical(1) * math.sqrt(2) / math.sqrt(2):.1f}"
    assert mean_interval([]).text() == "n/a"
    assert seeds_note(1) == "1 seed: no interval" and "3 seeds" in seeds_note(3)
    with pytest.raises(KDConfigError, match="df"):
        t_within(1.0, 0)


def test_summary_and_table_per_group() -> None:
    frame = pd.DataFrame(
        {
            "scenario": ["iid"] * 4 + ["disjoint"] * 2,
            "method": ["a", "a", "b", "b", "a", "a"],
            "gain": [0.01, 0.03, 0.05, 0.05, -0.02, 0.00],
        }
    )
    summary = summarise(frame, ["scenario", "method"], "gain", scale=100).set_index(["scenario", "method"])
    assert summary.loc[("iid", "a"), "mean"] == pytest.approx(2.0)
    assert summary.loc[("iid", "a"), "half_width"] == pytest.approx(t_critical(1) * math.sqrt(2) / math.sqrt(2))
    assert summary.loc[("iid", "b"), "half_width"] == pytest.approx(0.0)
    table = interval_table(frame, "gain", order=(["iid", "disjoint"], ["a", "b"]))
    assert list(table.index) == ["iid", "disjoint"]
    assert table.loc["iid", "b"] == "+5.00 ± 0.00" and table.loc["disjoint", "b"] == ""
    assert table.loc["disjoint", "a"].startswith("-1.00 ± ")


# ----------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("estimate", "expected"),
    [
        (Estimate(20, 5, 35, 3), "holds"),  # holds 16, excludes 0
        (Estimate(60, 40, 80, 3), "holds"),  # beyond 16: a larger effect
        (Estimate(10, -20, 40, 3), "inconclusive"),  # holds both 0 and 16
        (Estimate(5, 2, 8, 3), "refuted"),  # real but smaller than 16
        (Estimate(-30, -50, -10, 3), "refuted"),  # reversed
        (Estimate(2, -5, 9, 3), "refuted"),  # 16 is excluded even though 0 is not
        (Estimate(16, math.nan, math.nan, 1), "inconclusive"),  # one seed
    ],
)
def test_the_verdict_rule(estimate: Estimate, expected: str) -> None:
    assert verdict(estimate, PAPER_TUNING_GAIN_IID)[0] == expected


def test_a_ratio_over_a_denominator_that_may_be_zero_is_inconclusive() -> None:
    clear = Estimate(20, 5, 35, 3)
    assert verdict(clear, 16, mean_interval([0.5, 0.6, 0.7]))[0] == "holds"
    outcome = verdict(clear, 16, mean_interval([-0.5, 0.2, 0.9]))
    assert outcome[0] == "inconclusive" and "denominator" in outcome[1]
    assert verdict(Estimate(-70, -80, -65, 3), -60.6)[0] == "holds"  # a claim in the negative direction


def study_frame(gains: dict[str, dict[str, list[float]]], transfer: str = "student") -> pd.DataFrame:
    """A ``Study.frame()``-like frame: gains (in points) per scenario, method and seed."""
    rows = [
        {"scenario": s, "method": m, "seed": seed, "gain": g / 100, "transfer": transfer}
        for s, methods in gains.items()
        for m, values in methods.items()
        for seed, g in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_tuning_claims_from_constructed_runs() -> None:
    frame = study_frame(
        {
            "iid": {"tuned": [2.3, 2.35, 2.32], "standard": [2.0, 2.02, 1.98], "dml": [1.0, 1.1, 0.9]},
            "disjoint": {"tuned": [1.0, 3.0, 2.0], "standard": [-0.5, 0.4, 0.1], "dp": [-1.0, -1.2, -0.8]},
            "dirichlet:0.1": {"tuned": [5.0, 5.2, 5.1], "standard": [2.0, 2.1, 1.9], "dp": [1.0, 1.0, 1.0]},
        }
    )
    iid, non_iid = tuning_claims(frame)
    expected = 100 * (2.3233 - 2.0) / 2.0
    assert iid.ours.value == pytest.approx(expected, rel=1e-3)
    assert iid.points.mean == pytest.approx(np.mean([0.3, 0.33, 0.34]))
    assert iid.verdict == "holds"  # [+13%, +19%]-ish around +16%: the paper's value is inside
    assert iid.ours.low < PAPER_TUNING_GAIN_IID < iid.ours.high
    assert non_iid.verdict == "inconclusive" and "disjoint" in non_iid.why  # standard's gain straddles 0
    assert "the student's own data" in non_iid.checked_with and "dirichlet:0.1" in non_iid.checked_with
    table = verdict_table([iid, non_iid])
    assert list(table["verdict"]) == ["holds", "inconclusive"]
    assert "points" in table.loc["tuned over best untuned, IID", "absolute"]
    per_scenario = improvement_table(frame)
    assert per_scenario.loc["disjoint", "best untuned"] == "standard"
    assert per_scenario.loc["dirichlet:0.1", "relative (%)"].startswith("+155%")


def test_one_seed_is_always_inconclusive() -> None:
    frame = study_frame({"iid": {"tuned": [9.0], "standard": [1.0]}})
    (check,) = tuning_claims(frame)
    assert check.ours.value == pytest.approx(800.0)
    assert check.verdict == "inconclusive" and "one seed" in check.why
    assert "(1 seed" in check.row()["ours"]


def test_a_clearly_worse_tuned_run_refutes_and_pairs_by_seed() -> None:
    frame = study_frame({"dirichlet:0.5": {"tuned": [0.5, 1.5, 1.0], "standard": [3.0, 4.0, 3.5]}})
    result = scenario_improvement(frame, "dirichlet:0.5")
    assert list(result["per_seed"]) == pytest.approx([-2.5, -2.5, -2.5])  # paired, so no spread
    (check,) = tuning_claims(frame)
    assert check.verdict == "refuted"


def test_federated_claims_per_start_with_and_without_seeds() -> None:
    rows = [
        {"scenario": s, "start": start, "seed": seed, "rounds_to_target": r, "rounds_random": 10,
         "reduction_pct": 100 * (1 - r / 10)}
        for seed, rs in enumerate([(4, 3), (5, 4), (4, 4)])
        for s, r in zip(("iid", "disjoint"), rs, strict=True)
        for start in ("kd_avg",)
    ]  # fmt: skip
    summary = pd.DataFrame(rows)
    (check,) = federated_claims(summary)
    assert check.ours.value == pytest.approx(np.mean([65, 55, 60]))
    assert check.points.mean == pytest.approx(np.mean([6.5, 5.5, 6.0])) and check.points_unit == "rounds"
    assert check.ours.low < PAPER_FL_ROUND_REDUCTION < check.ours.high and check.verdict == "holds"
    (single,) = federated_claims(summary[summary["seed"] == 0].drop(columns="seed"))
    assert single.verdict == "inconclusive" and single.ours.n == 1
