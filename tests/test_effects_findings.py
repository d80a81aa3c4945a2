"""The findings' statistics on constructed inputs: paired p-values and Fieller's ratio against SciPy and brute
force, Holm by hand, the denominator rule, every verdict word, and the traps of the earlier findings (a mean of
ratios, averaged bounds, a near-zero denominator with a narrow interval, a comparator chosen by test gain)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from kdlib.study.effects import (
    MIN_DENOMINATOR_POINTS,
    Effect,
    denominator_rule,
    fieller_ratio,
    holm,
    paired_p_value,
    ratio_of_means,
    verdict,
)
from kdlib.study.findings import (
    BEST_BY_VALIDATION,
    BLOCK_BEGIN,
    BLOCK_END,
    MIN_SEEDS_TO_QUOTE,
    PAPER_FL_ROUND_REDUCTION,
    apply_holm,
    best_untuned_by_validation,
    federated_claims,
    federated_scenario_table,
    improvement_table,
    provenance,
    provenance_by_part,
    save_verdicts,
    tuning_claims,
    verdict_table,
)
from kdlib.study.stats import mean_interval, t_critical

# ----------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("seed", range(8))
def test_paired_p_value_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(rng.normal(), 1.0, int(rng.integers(2, 12)))
    assert paired_p_value(values) == pytest.approx(scipy_stats.ttest_1samp(values, 0.0).pvalue, abs=1e-9)
    assert math.isnan(paired_p_value([1.0]))
    assert paired_p_value([2.0, 2.0, 2.0]) == 0.0 and paired_p_value([0.0, 0.0]) == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_fieller_bounds_are_the_edges_of_the_set_it_defines(seed: int) -> None:
    """Brute force: R is in the set iff (a - R b)^2 <= t^2 var(a - R b) / n; its edges are Fieller's bounds."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 11))
    b = rng.normal(5.0, 1.0, n)
    a = 0.6 * b + rng.normal(0.0, 0.5, n)
    ratio, low, high = fieller_ratio(a, b)
    assert ratio == pytest.approx(a.mean() / b.mean())
    t2 = t_critical(n - 1) ** 2
    grid = np.linspace(low - 1.0, high + 1.0, 20001)
    inside = [(a.mean() - r * b.mean()) ** 2 <= t2 * np.var(a - r * b, ddof=1) / n for r in grid]
    accepted = grid[np.asarray(inside)]
    step = grid[1] - grid[0]
    assert accepted.min() == pytest.approx(low, abs=2 * step) and accepted.max() == pytest.approx(high, abs=2 * step)
    assert low < ratio < high


def test_fieller_is_unbounded_when_the_denominator_may_be_zero() -> None:
    _, low, high = fieller_ratio([1.0, 2.0, 1.5], [-1.0, 1.0, 0.2])
    assert math.isnan(low) and math.isnan(high)


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04: 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, math.nan, 0.6]) == pytest.approx([1.0, math.nan, 1.0], nan_ok=True)
    assert holm([0.2]) == [0.2]


# ------------------------------------------------------------------------------------ the denominator


def test_a_near_zero_denominator_with_a_narrow_interval_is_undefined() -> None:
    """DP-KD's +0.22 ± 0.10 under disjoint (a self-distillation): the interval excludes 0, the ratio is still
    undefined, because the gain is below MIN_DENOMINATOR_POINTS."""
    base = [0.14, 0.22, 0.30]
    interval = mean_interval(base)
    assert interval.low > 0  # the old rule (interval holds 0) would have let it through
    assert "about 0" in denominator_rule(interval)
    ratio = ratio_of_means([9.0, 10.0, 11.0], base)
    assert not ratio.defined and ratio.text().startswith("undefined: the untuned gain is about 0")
    assert ratio_of_means([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]).defined
    loss = ratio_of_means([7.0, 8.0, 6.5], [-5.0, -6.0, -6.3])  # a clear loss is no base for a relative gain
    assert not loss.defined and "is negative" in loss.reason
    assert MIN_DENOMINATOR_POINTS == 1.0


def study_frame(gains: dict[str, dict[str, list[float]]], val: dict | None = None) -> pd.DataFrame:
    """A ``Study.frame()``-like frame: gains in points per scenario, method and seed (val_gain: ``val`` per
    (scenario, method), else the test gain)."""
    rows = []
    for s, methods in gains.items():
        for m, values in methods.items():
            for seed, g in enumerate(values):
                v = (val or {}).get((s, m), g)
                rows.append({"scenario": s, "method": m, "seed": seed, "gain": g / 100, "val_gain": v / 100,
                             "transfer": "student"})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_pooled_claim_is_a_ratio_of_means_not_a_mean_of_ratios() -> None:
    """Four scenarios whose own ratios are about -1%, +7%, +319% and +4397% (the earlier 08's trap): the pooled
    ratio is the ratio of the per-seed mean gains, far below the mean of the four ratios."""
    frame = study_frame(
        {
            "dirichlet:1.0": {"tuned": [6.1, 6.2, 6.0], "standard": [6.2, 6.2, 6.1]},
            "dirichlet:0.5": {"tuned": [7.8, 7.9, 7.8], "standard": [7.3, 7.4, 7.2]},
            "dirichlet:0.1": {"tuned": [8.4, 8.3, 8.5], "standard": [2.0, 2.0, 2.0]},
            "disjoint": {"tuned": [9.9, 9.8, 10.0], "standard": [0.22, 0.22, 0.22]},
        }
    )
    checks = [c for c in tuning_claims(frame) if c.comparator.startswith("standard")]
    (claim,) = checks
    tuned = frame[frame.method == "tuned"].groupby("seed")["gain"].mean() * 100
    std = frame[frame.method == "standard"].groupby("seed")["gain"].mean() * 100
    assert claim.effect.ratio.value == pytest.approx(100 * (tuned - std).mean() / std.mean())
    per_scenario = [100 * (t - b) / b for t, b in ((6.1, 6.17), (7.83, 7.3), (8.4, 2.0), (9.9, 0.22))]
    assert claim.effect.ratio.value < np.mean(per_scenario) / 5


# -------------------------------------------------------------------------------------- verdict words


def effect(difference: list[float], base: list[float]) -> Effect:
    return Effect.of(difference, base)


@pytest.mark.parametrize(
    ("difference", "base", "p", "expected"),
    [
        ([0.30, 0.33, 0.34, 0.31, 0.32], [2.0, 2.02, 1.98, 2.01, 1.99], 0.001, "consistent with the paper"),
        ([0.05, 0.06, 0.04, 0.05, 0.05], [2.0, 2.02, 1.98, 2.01, 1.99], 0.001, "smaller than the paper's value"),
        ([-0.5, -0.4, -0.6, -0.5, -0.5], [2.0, 2.02, 1.98, 2.01, 1.99], 0.001, "smaller than the paper's value"),
        ([1.0, 1.1, 0.9, 1.0, 1.0], [2.0, 2.02, 1.98, 2.01, 1.99], 0.001, "larger than the paper's value"),
        ([0.05, -0.04, 0.01, -0.02, 0.0], [2.0, 2.02, 1.98, 2.01, 1.99], 0.6, "no difference detected"),
        ([0.9, -0.5, 0.6, -0.2, 0.4], [2.0, 2.02, 1.98, 2.01, 1.99], 0.3, "inconclusive"),  # holds 0 and +16%
        ([9.0, 10.0, 11.0], [0.14, 0.22, 0.30], 0.001, "inconclusive"),  # detected, but the ratio is undefined
        ([0.3], [2.0], math.nan, "inconclusive"),  # one seed
    ],
)
def test_each_verdict_word_from_its_rule(difference, base, p, expected) -> None:
    word, why = verdict(effect(difference, base), 16.0, p)
    assert word == expected, why


def test_holm_can_turn_a_detection_into_no_difference() -> None:
    """One comparison at p about 0.03 is a detection alone; beside three others at p about 0.02, Holm raises it
    above 0.05."""
    frame = study_frame({"iid": {"tuned": [2.6, 2.0, 2.9, 2.3, 2.7], "standard": [2.0, 2.0, 2.0, 2.0, 2.0]}})
    (alone, _) = tuning_claims(frame)
    assert 0.01 < alone.effect.p_value < 0.05
    assert apply_holm([alone])[0].verdict != "no difference detected"
    others = tuning_claims(frame) + tuning_claims(frame)
    for check in others:
        object.__setattr__(check.effect, "p_value", 0.02)
    judged = apply_holm([alone, *others])
    assert judged[0].adjusted_p > 0.05 and judged[0].verdict in ("no difference detected", "inconclusive")


def test_the_best_untuned_comparator_is_chosen_on_validation_not_test() -> None:
    frame = study_frame(
        {"iid": {"tuned": [3.0, 3.1, 2.9], "dml": [2.5, 2.6, 2.4], "standard": [1.0, 1.1, 0.9]}},
        val={("iid", "dml"): 0.5, ("iid", "standard"): 1.5, ("iid", "tuned"): 9.0},
    )
    assert best_untuned_by_validation(frame, "iid") == "standard"  # dml's test gain is higher: not looked at
    table = improvement_table(frame)
    assert ("iid", "standard (best by validation)") in table.index
    old = frame.drop(columns="val_gain")
    with pytest.raises(ValueError, match="val_gain"):
        best_untuned_by_validation(old, "iid")


def test_verdict_table_names_comparator_effect_ratio_and_n() -> None:
    frame = study_frame(
        {
            "iid": {"tuned": [2.3, 2.35, 2.32, 2.31], "standard": [2.0, 2.02, 1.98, 2.0], "dml": [1, 1.1, 0.9, 1]},
            "disjoint": {"tuned": [1.0, 3.0, 2.0, 2.5], "standard": [0.2, 0.25, 0.2, 0.22], "dml": [0.1, 0, 0, 0]},
        }
    )
    table = verdict_table(tuning_claims(frame))
    assert len(table) == 4 and set(table["n"]) == {4}
    assert {c for _, c in table.index} == {"standard KD (paper's default)", BEST_BY_VALIDATION}
    non_iid = table.loc[("tuned over untuned, non-IID (pooled)", "standard KD (paper's default)")]
    assert non_iid["ratio of means"].startswith("undefined") and non_iid["verdict"] == "inconclusive"
    assert "points" in non_iid["effect"]


def test_federated_claim_is_a_ratio_of_mean_rounds() -> None:
    rows = [
        {"scenario": s, "start": "kd_avg", "role": "kd", "seed": seed, "rounds_to_target": r, "rounds_random": 10}
        for seed, rs in enumerate([(4, 3), (5, 4), (4, 4), (3, 4), (4, 5)])
        for s, r in zip(("iid", "disjoint"), rs, strict=True)
    ]
    (check,) = federated_claims(pd.DataFrame(rows))
    saved = [6.5, 5.5, 6.0, 6.5, 5.5]
    assert check.effect.difference.mean == pytest.approx(np.mean(saved)) and check.unit == "rounds"
    assert check.effect.ratio.value == pytest.approx(10 * np.mean(saved))  # 100 * saved / 10 rounds
    (judged,) = apply_holm([check])
    assert judged.effect.ratio.low < PAPER_FL_ROUND_REDUCTION < judged.effect.ratio.high
    assert judged.verdict == "consistent with the paper"
    few = federated_claims(pd.DataFrame(rows[:4]).assign(rounds_random=[10, 10, 2, 2]))  # 2 seeds, baseline 10 and 2
    assert "FedAvg's rounds from scratch is about 0" in few[0].effect.ratio.reason
    (judged,) = apply_holm(few)
    assert "rounds" in judged.why and "points" not in judged.why


def test_federated_scenario_table_shows_which_scenario_carries_the_claim() -> None:
    """A scenario whose KD start is at the target from round 0 (0 rounds) lifts the pooled ratio: alone it saves
    100%, and without it the ratio falls to the other scenario's."""
    rows = [
        {"scenario": s, "start": "kd_dp", "role": "kd", "seed": seed, "rounds_to_target": r, "rounds_random": 10}
        for seed, iid_rounds in enumerate([8, 7, 8, 9, 8])
        for s, r in (("iid", iid_rounds), ("skewed", 0))
    ]
    rows += [{**row, "start": "random", "role": "baseline", "rounds_to_target": 10} for row in rows[:2]]
    table = federated_scenario_table(pd.DataFrame(rows))
    assert {start for start, _ in table.index} == {"kd_dp"}  # the baseline is not a KD start
    assert list(table.loc["kd_dp"].index) == ["iid alone", "all but iid", "skewed alone", "all but skewed"]
    assert table.loc[("kd_dp", "skewed alone"), "ratio of means (%)"].startswith("+100%")
    without_skewed = table.loc[("kd_dp", "all but skewed")]
    assert without_skewed["ratio of means (%)"] == table.loc[("kd_dp", "iid alone"), "ratio of means (%)"]
    assert without_skewed["ratio of means (%)"].startswith("+20%")  # (10 - mean 8) / 10
    (pooled,) = federated_claims(pd.DataFrame(rows))
    assert pooled.effect.ratio.value == pytest.approx(60.0)  # (2 + 10) / 2 rounds saved of 10
    assert set(table["seeds"]) == {5}
    assert federated_scenario_table(pd.DataFrame(rows).query("scenario == 'iid'")).index.tolist() == [
        ("kd_dp", "iid alone")
    ]  # one scenario: no "all but"


def test_provenance_shows_commits_and_keys_rerun_by_other_code() -> None:
    records = [
        {"key": "a", "env": {"git": "1" * 40, "dirty": False}},
        {"key": "b", "env": {"git": "1" * 40, "dirty": False}},
        {"key": "a", "env": {"git": "2" * 40, "dirty": True}},
    ]
    table = provenance(records)
    assert set(table["commit"]) == {"1" * 12, "2" * 12}
    assert table.set_index("commit").loc["2" * 12, "dirty"]
    assert table["keys made by several commits"].tolist() == [1, 1]


def test_provenance_by_part_names_the_records_of_each_claim(isolated_folders: dict[str, Path]) -> None:
    env = {"dirty": False, "torch": "2.13.0+cpu"}
    study = [{"key": key, "env": {**env, "git": "1" * 40}} for key in ("a", "b")]
    parts = {"distillation study": study, "federated claim": [{"key": "f", "env": {**env, "git": "2" * 40}}]}
    table = provenance_by_part(parts)
    assert table.columns[0] == "part"
    assert table[["part", "commit", "records"]].values.tolist() == [
        ["distillation study", "1" * 12, 2], ["federated claim", "2" * 12, 1]
    ]  # fmt: skip
    assert provenance_by_part({}).empty and "part" in provenance_by_part({}).columns
    isolated_folders["figures"].mkdir()
    text = save_verdicts(verdict_rows(MIN_SEEDS_TO_QUOTE), "full scale", sources=table).read_text()
    assert f"| federated claim | {'2' * 12} | False | cpu | 1 | 0 |" in text  # the part first, then the commit


def test_provenance_says_where_each_record_ran() -> None:
    env = {"git": "1" * 40, "dirty": False}
    records = [
        {"key": "a", "env": {**env, "torch": "2.13.0+cpu"}},  # before records named their device: a CPU-only torch
        {"key": "b", "env": {**env, "torch": "2.11.0+cu130"}},  # could have run on either
        {"key": "c", "env": {**env, "torch": "2.11.0+cu130"}, "device": "cuda"},
        {"key": "d", "env": {**env, "torch": "2.13.0+cpu"}, "device": "cpu"},
    ]
    table = provenance(records).set_index("device")
    assert table["records"].to_dict() == {"cpu": 2, "cuda": 1, "unknown": 1}


def verdict_rows(n: int) -> pd.DataFrame:
    rows = [{"claim": "tuning, IID", "comparator": "standard KD", "effect": "+1.0 [0.2, 1.8] points", "n": n,
             "verdict": "smaller than the paper's value"},
            {"claim": "FL rounds", "comparator": "FedAvg from scratch", "effect": "-5 [-9, -1] rounds", "n": 5,
             "verdict": "consistent with the paper"}]  # fmt: skip
    return pd.DataFrame(rows).set_index(["claim", "comparator"])


def test_verdicts_go_into_the_readme_block_only_from_enough_seeds(isolated_folders: dict[str, Path]) -> None:
    figures = isolated_folders["figures"]
    figures.mkdir()
    readme = figures / "README.md"
    before, after = "# The study\n\nProtocol text.\n\n", "\n\nText after the block.\n"
    readme.write_text(f"{before}{BLOCK_BEGIN}\nold table\n{BLOCK_END}{after}")
    sources = pd.DataFrame([{"commit": "abc", "dirty": False, "device": "cpu", "records": 10,
                             "keys made by several commits": 0}])  # fmt: skip

    path = save_verdicts(verdict_rows(MIN_SEEDS_TO_QUOTE - 1), "full scale", sources=sources)
    assert path == figures / "verdicts.md" and "| tuning, IID | standard KD |" in path.read_text()
    assert "| abc | False | cpu | 10 | 0 |" in path.read_text()  # which code made the records, and where
    text = readme.read_text()
    assert text.startswith(before) and text.endswith(after) and "old table" not in text
    assert f"fewest seeds behind a claim is {MIN_SEEDS_TO_QUOTE - 1}" in text and "tuning, IID" not in text

    save_verdicts(verdict_rows(MIN_SEEDS_TO_QUOTE), "full scale", sources=sources)
    text = readme.read_text()
    assert text.startswith(before) and text.endswith(after) and "No verdict" not in text
    assert text.count(BLOCK_BEGIN) == text.count(BLOCK_END) == 1
    block = text.split(BLOCK_BEGIN)[1].split(BLOCK_END)[0]
    assert "full scale" in block and "| FL rounds | FedAvg from scratch |" in block and "| abc |" in block


def test_a_readme_without_the_block_is_left_as_it_is(isolated_folders: dict[str, Path]) -> None:
    figures = isolated_folders["figures"]
    figures.mkdir()
    (figures / "README.md").write_text("# Smoke gallery\n")
    save_verdicts(verdict_rows(MIN_SEEDS_TO_QUOTE), "smoke scale")
    assert (figures / "README.md").read_text() == "# Smoke gallery\n"
    assert "smoke scale" in (figures / "verdicts.md").read_text()
