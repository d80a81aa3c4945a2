"""Means and 95% t-intervals over seeds, for every table and gain figure of the study.

The Student-t quantile is computed here (no SciPy at run time): the two-sided t distribution function for an
integer number of degrees of freedom has a closed form as a finite series in ``theta = atan(t / sqrt(df))``
(Abramowitz & Stegun 26.7.3-4), and the quantile is found by bisection on it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdlib.errors import KDConfigError
from kdlib.validation import is_int

CONFIDENCE = 0.95


def t_within(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with ``df`` (an integer >= 1) degrees of freedom."""
    if not is_int(df, numpy=True) or df < 1:
        raise KDConfigError("df", df, "an integer >= 1 (degrees of freedom)")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2, term = math.cos(theta) ** 2, 1.0
    if df % 2 == 1:
        series, total = 0.0, 0.0
        for k in range(1, (df - 1) // 2 + 1):  # cos(theta) * (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)
            total += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        series = math.cos(theta) * total if df > 1 else 0.0
        return 2.0 / math.pi * (theta + math.sin(theta) * series)
    total = 0.0
    for k in range(1, df // 2 + 1):  # 1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...
        total += term
        term *= cos2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided critical value ``t`` with ``P(|T| <= t) = confidence`` (``df`` degrees of freedom)."""
    if not 0.0 < confidence < 1.0:
        raise KDConfigError("confidence", confidence, "a probability strictly between 0 and 1")
    low, high = 0.0, 1.0
    while t_within(high, df) < confidence:
        high *= 2.0
    for _ in range(200):  # bisection to float precision
        mid = 0.5 * (low + high)
        if t_within(mid, df) < confidence:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * high:
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with the half-width of its t-interval (NaN for fewer than two values)."""

    mean: float
    half_width: float
    n: int
    confidence: float = CONFIDENCE

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.half_width)

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (False when there is no interval)."""
        return self.has_interval and self.low <= value <= self.high

    def text(self, digits: int = 2, unit: str = "", signed: bool = True) -> str:
        """``"+1.23 ± 0.45"`` (or ``"+1.23 (1 seed)"`` without an interval; no ``+`` unless ``signed``)."""
        if not math.isfinite(self.mean):
            return "n/a"
        head = f"{self.mean:{'+' if signed else ''}.{digits}f}{unit}"
        if not self.has_interval:
            return f"{head} ({self.n} seed{'s' if self.n != 1 else ''})"
        return f"{head} ± {self.half_width:.{digits}f}{unit}"

    def __str__(self) -> str:
        return self.text()


def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of the finite ``values`` and the half-width ``t * s / sqrt(n)`` of its two-sided t-interval."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(data) == 0:
        return Interval(math.nan, math.nan, 0, confidence)
    if len(data) == 1:
        return Interval(float(data[0]), math.nan, 1, confidence)
    half = t_critical(len(data) - 1, confidence) * float(data.std(ddof=1)) / math.sqrt(len(data))
    return Interval(float(data.mean()), half, len(data), confidence)


def proportion_interval(hits: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a rate of ``hits`` in ``n`` trials (e.g. seeds on which a search lands near
    the grid's best): unlike ``p +- z * se`` it stays within [0, 1] and is not empty at 0 or n hits."""
    if not is_int(n, numpy=True) or n < 1 or not is_int(hits, numpy=True) or not 0 <= hits <= n:
        raise KDConfigError("hits", (hits, n), "integers with 0 <= hits <= n and n >= 1")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    rate, spread = hits / n, z * z / n
    centre = (rate + spread / 2) / (1 + spread)
    half = z * math.sqrt(rate * (1 - rate) / n + spread / (4 * n)) / (1 + spread)
    return max(0.0, round(centre - half, 12)), min(1.0, round(centre + half, 12))


def summarise(
    frame: pd.DataFrame, by: Sequence[str], value: str, scale: float = 1.0, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """One row per group of ``by``: mean, half_width, low, high and n of ``value * scale`` (t-interval)."""
    rows = []
    for key, part in frame.groupby(list(by), sort=False):
        interval = mean_interval(part[value] * scale, confidence)
        names = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(by, names, strict=True)),
                "mean": interval.mean,
                "half_width": interval.half_width,
                "low": interval.low,
                "high": interval.high,
                "n": interval.n,
            }
        )
    return pd.DataFrame(rows, columns=[*by, "mean", "half_width", "low", "high", "n"])


@dataclass(frozen=True)
class CellFormat:
    """How :func:`interval_table` writes a cell: ``value * scale`` (e.g. accuracy points) to ``digits`` decimals;
    ``signed``: a ``+`` before positive means (for gains, not for accuracies or shares)."""

    scale: float = 100.0
    digits: int = 2
    signed: bool = True


POINTS = CellFormat()
"""Signed percentage points to two decimals."""


def interval_table(
    frame: pd.DataFrame,
    value: str,
    *,
    index: str = "scenario",
    columns: str = "method",
    order: tuple[Sequence[str] | None, Sequence[str] | None] = (None, None),
    cells: CellFormat = POINTS,
) -> pd.DataFrame:
    """A table of ``"mean ± half-width"`` strings (written as ``cells`` says) per index and column."""
    summary = summarise(frame, [index, columns], value, cells.scale)
    most = int(summary["n"].max()) if len(summary) else 0
    texts = {
        (row[index], row[columns]): Interval(row["mean"], row["half_width"], int(row["n"])).text(
            cells.digits, signed=cells.signed
        )
        + (f" (n={int(row['n'])})" if 1 < int(row["n"]) < most else "")  # a cell short of seeds says so
        for _, row in summary.iterrows()
    }
    rows = list(order[0] or dict.fromkeys(summary[index]))
    cols = list(order[1] or dict.fromkeys(summary[columns]))
    table = pd.DataFrame(
        [[texts.get((r, c), "") for c in cols] for r in rows if any((r, c) in texts for c in cols)],
        index=[r for r in rows if any((r, c) in texts for c in cols)],
        columns=cols,
    )
    table.index.name, table.columns.name = index, columns
    return table


def seeds_note(n_seeds: int, confidence: float = CONFIDENCE) -> str:
    """The caption phrase for a figure or table over ``n_seeds`` seeds."""
    if n_seeds <= 1:
        return "1 seed: no interval"
    return f"mean of {n_seeds} seeds, {round(100 * confidence)}% t-interval"


def t_errorbar(values: Iterable[float]) -> tuple[float, float]:
    """``(low, high)`` of the 95% t-interval of ``values``, for seaborn's ``errorbar=`` (one value: no bar)."""
    interval = mean_interval(values)
    if not interval.has_interval:
        return interval.mean, interval.mean
    return interval.low, interval.high


# ------------------------------------------------------------------------ what a figure draws of its seeds

MIN_SEEDS_FOR_INTERVAL = 5
"""Figures draw an interval only over at least this many seeds. With fewer, a t-interval is too wide to read (at 2
seeds its half-width is 12.7 standard errors) and rests on a normality no one can check, so each seed is drawn as a
point instead."""

BOOTSTRAP_RESAMPLES = 10_000


def draws_interval(n_seeds: int) -> bool:
    """Whether a figure over ``n_seeds`` seeds (per bar or point) draws an interval rather than the seeds."""
    return n_seeds >= MIN_SEEDS_FOR_INTERVAL


def bootstrap_interval(
    values: Iterable[float], confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """``(low, high)`` of the percentile-bootstrap interval of the mean of the finite ``values`` (resampled with a
    fixed ``seed``, so a figure is the same every time). It lies within the values' range, so a mean of shares in
    [0, 1] keeps its interval in [0, 1], unlike a t-interval. NaN for no value; one value: ``(value, value)``."""
    if not 0.0 < confidence < 1.0:
        raise KDConfigError("confidence", confidence, "a probability strictly between 0 and 1")
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(data) == 0:
        return math.nan, math.nan
    if len(data) == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(max(low, data.min())), float(min(high, data.max()))


def seeds_range(n_min: int, n_max: int) -> str:
    """``"3 seeds"``, ``"1 seed"`` or ``"2-4 seeds"`` (seeds per bar, when bars differ)."""
    count = f"{n_min}" if n_min == n_max else f"{n_min}-{n_max}"
    return f"{count} seed{'' if n_max == 1 else 's'}"


def drawing_note(n_min: int, n_max: int | None = None, *, bounded: bool = False, confidence: float = CONFIDENCE) -> str:
    """What a figure over ``n_min``-``n_max`` seeds per bar draws, for its legend or caption: each seed as a point
    (fewer than ``MIN_SEEDS_FOR_INTERVAL``), or the mean with its t-interval (``bounded``: shares in [0, 1], with the
    percentile-bootstrap interval, which stays within [0, 1])."""
    n_max = n_min if n_max is None else n_max
    if n_max <= 1:
        return "one seed, no interval"
    if not draws_interval(n_min):
        return f"each point one seed ({seeds_range(n_min, n_max)}), no interval"
    kind = "percentile-bootstrap interval" if bounded else "t-interval"
    return f"mean, {round(100 * confidence)}% {kind} over {seeds_range(n_min, n_max)}"


def seeds_count(n_seeds: int) -> str:
    """The caption phrase for a study over ``n_seeds`` seeds that leaves to each figure what it draws of them
    (``drawing_note``): ``"1 seed"``, ``"3 seeds"``."""
    return seeds_range(n_seeds, n_seeds)
