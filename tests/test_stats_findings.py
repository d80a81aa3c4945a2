"""kdlib.study.stats against SciPy's Student t and Wilson interval (the verdicts: tests/test_effects_findings.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from kdlib.errors import KDConfigError
from kdlib.study.stats import (
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


def test_a_cell_with_fewer_seeds_than_the_rest_says_how_many() -> None:
    rows = [("iid", "a", s, g) for s, g in enumerate([0.01, 0.02, 0.03])]
    rows += [("iid", "b", 0, 0.05), ("iid", "b", 1, 0.07)]
    frame = pd.DataFrame(rows, columns=["scenario", "method", "seed", "gain"])
    table = interval_table(frame, "gain")
    assert table.loc["iid", "b"].endswith("(n=2)") and "n=" not in table.loc["iid", "a"]
