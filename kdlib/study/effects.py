"""Effects over seeds, as the findings state them: a paired difference in accuracy points with its t-interval and
p-value, a ratio of mean gains with Fieller's interval (never a mean of ratios), the rule that says when such a
ratio is defined at all, and Holm's correction across the comparisons a notebook reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdlib.study.stats import CONFIDENCE, Interval, mean_interval, t_critical, t_within

MIN_DENOMINATOR_POINTS = 1.0
"""A ratio's denominator (the comparator's mean gain) must be at least this many accuracy points, and its interval
must exclude 0; otherwise the ratio is undefined. 0.22 ± 0.10 points, a self-distillation's gain, fails it."""


def paired_p_value(differences: Sequence[float]) -> float:
    """Two-sided p-value of a one-sample t-test of mean 0 (per-seed paired differences); NaN for fewer than two
    values, 0 when every difference is the same non-zero number, 1 when all are 0."""
    data = np.asarray([d for d in differences if math.isfinite(d)], dtype=float)
    if len(data) < 2:
        return math.nan
    spread = float(data.std(ddof=1))
    if spread == 0.0:
        return 1.0 if float(data.mean()) == 0.0 else 0.0
    t = float(data.mean()) / (spread / math.sqrt(len(data)))
    return max(0.0, 1.0 - t_within(t, len(data) - 1))


@dataclass(frozen=True)
class Ratio:
    """A ratio of means in %, with its interval, or undefined (``defined`` False, with the reason)."""

    value: float
    low: float
    high: float
    n: int
    defined: bool
    reason: str = ""

    def contains(self, target: float) -> bool:
        return self.defined and self.low <= target <= self.high

    def text(self, digits: int = 0) -> str:
        if not self.defined:
            return f"undefined: {self.reason}"
        return f"{self.value:+.{digits}f}% [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def denominator_rule(base: Interval, minimum: float = MIN_DENOMINATOR_POINTS, name: str = "the untuned gain") -> str:
    """Why a ratio over ``base`` (the comparator's gain in points) is undefined, or "" when it is defined: at least
    two seeds, an interval that excludes 0, and a positive mean of at least ``minimum`` points."""
    if not base.has_interval:
        return f"{base.n} seed{'s' if base.n != 1 else ''}: no interval for {name}"
    if base.low <= 0 <= base.high:
        return f"{name} is about 0 (its interval holds 0)"
    if abs(base.mean) < minimum:
        return f"{name} is about 0 (|{base.mean:+.2f}| < {minimum:g})"
    if base.mean < 0:
        return f"{name} is negative ({base.mean:+.2f}): no relative gain over a loss"
    return ""


def fieller_ratio(
    numerator: Sequence[float], denominator: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """``mean(numerator) / mean(denominator)`` and its Fieller interval for paired samples (one pair per seed):
    the set of R with ``(a - R b)^2 <= t^2 (s_aa - 2 R s_ab + R^2 s_bb) / n``. Bounds are NaN when the set is not
    a finite interval (the denominator's mean is not clearly away from 0)."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    n = len(a)
    if n != len(b) or n < 2:
        raise ValueError("fieller_ratio needs at least two (numerator, denominator) pairs")
    ma, mb = float(a.mean()), float(b.mean())
    cov = np.cov(a, b, ddof=1) / n  # variances and covariance of the two means
    t2 = t_critical(n - 1, confidence) ** 2
    qa, qb, qab = ma * ma - t2 * cov[0, 0], mb * mb - t2 * cov[1, 1], ma * mb - t2 * cov[0, 1]
    ratio = ma / mb if mb else math.nan
    if qb <= 0:
        return ratio, math.nan, math.nan
    disc = qab * qab - qa * qb
    root = math.sqrt(max(disc, 0.0))
    return ratio, (qab - root) / qb, (qab + root) / qb


def ratio_of_means(difference: Sequence[float], base: Sequence[float], base_name: str = "the untuned gain") -> Ratio:
    """``100 * mean(difference) / mean(base)`` in %, with Fieller's interval over the paired seeds; undefined
    when ``denominator_rule`` says so (its reason names the denominator as ``base_name``)."""
    base_interval = mean_interval(base)
    reason = denominator_rule(base_interval, name=base_name)
    if reason:
        return Ratio(math.nan, math.nan, math.nan, base_interval.n, False, reason)
    value, low, high = fieller_ratio(difference, base)
    if not (math.isfinite(low) and math.isfinite(high)):
        return Ratio(math.nan, math.nan, math.nan, base_interval.n, False, "Fieller's interval is unbounded")
    return Ratio(100 * value, 100 * low, 100 * high, base_interval.n, True)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Effect:
    """One comparison over paired seeds: ``difference`` (e.g. tuned minus comparator, points), ``base`` (the
    comparator's gain, points), their ratio of means, and the difference's p-value."""

    difference: Interval
    base: Interval
    ratio: Ratio
    p_value: float

    @classmethod
    def of(cls, difference: Sequence[float], base: Sequence[float], base_name: str = "the untuned gain") -> Effect:
        return cls(mean_interval(difference), mean_interval(base), ratio_of_means(difference, base, base_name),
                   paired_p_value(difference))  # fmt: skip

    @property
    def n(self) -> int:
        return self.difference.n


VERDICTS = ("consistent with the paper", "smaller than the paper's value", "larger than the paper's value",
            "no difference detected", "inconclusive")  # fmt: skip
SIGNIFICANCE = 0.05


def verdict(
    effect: Effect, paper: float, adjusted_p: float, level: float = SIGNIFICANCE, unit: str = "points"
) -> tuple[str, str]:
    """``(word, why)`` for a claim whose paper value is ``paper`` (a ratio in %), from our ``effect`` and its
    Holm-adjusted p-value. The rule, in order:

    1. fewer than two seeds -> inconclusive;
    2. no difference detected at ``level`` (adjusted): "inconclusive" when the ratio's interval also holds the
       paper's value (the data cannot tell 0 from the paper), else "no difference detected";
    3. a difference detected, but the ratio undefined -> inconclusive (an effect in points, no relative figure);
    4. the ratio's interval holds the paper's value -> consistent with the paper;
    5. it lies wholly below -> smaller than the paper's value; wholly above -> larger than the paper's value.
    """
    if effect.n < 2 or not math.isfinite(adjusted_p):
        return "inconclusive", f"{effect.n} seed{'s' if effect.n != 1 else ''}: no interval"
    points = f"{effect.difference.text()} {unit}"
    if adjusted_p > level:
        if effect.ratio.contains(paper):
            return "inconclusive", f"{points} (Holm p = {adjusted_p:.2g}): the interval holds 0 and the paper's value"
        return "no difference detected", f"{points}, Holm-adjusted p = {adjusted_p:.2g} > {level:g}"
    if not effect.ratio.defined:
        return "inconclusive", f"{points} (Holm p = {adjusted_p:.2g}), but the ratio is {effect.ratio.text()}"
    if effect.ratio.contains(paper):
        return "consistent with the paper", f"the paper's {paper:+.1f}% lies in our ratio's interval"
    if effect.ratio.high < paper:
        return "smaller than the paper's value", f"our ratio's interval lies below the paper's {paper:+.1f}%"
    return "larger than the paper's value", f"our ratio's interval lies above the paper's {paper:+.1f}%"
