"""Drawing seeds honestly, for every bar figure of the study: below ``MIN_SEEDS_FOR_INTERVAL`` seeds each seed is a
point and no interval is drawn; from there on, the mean with its 95% interval (a t-interval for differences such as
the gain, a percentile bootstrap that stays within [0, 1] for shares). A seed whose teacher is weaker than the
student is marked, so that two regimes in one bar are visible. Methods keep their registry label, order and colour."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.legend import Legend
from matplotlib.lines import Line2D

from kdlib.notebook.figure_layout import legend_beside
from kdlib.study.methods import method_label, method_names
from kdlib.study.stats import bootstrap_interval, drawing_note, draws_interval, mean_interval

WEAKER_TEACHER = "weaker_teacher"
"""The column of a frame that marks a run whose teacher scored below the student before distillation."""
WEAKER_TEACHER_LABEL = "a seed whose teacher is weaker than the student"
INTERVAL_COLOR = "0.15"
SEED_POINT = {"marker": "o", "s": 18, "facecolor": "white", "edgecolor": "black", "linewidths": 0.8}
WEAK_POINT = {"marker": "v", "s": 26, "facecolor": "black", "edgecolor": "black", "linewidths": 0.8}
LEGEND_WIDTH = 26  # characters per line of a legend entry that explains the drawing


def weaker_teacher(frame: pd.DataFrame) -> pd.Series:
    """Per run: whether its teacher's test accuracy is below the student's before distillation (``teacher_acc <
    acc_before``, metrics of ``kdlib.core.metrics.distillation_metrics``). Such a seed is another regime (KD pulls the
    student towards a weaker model), which a mean over seeds hides: figures mark it. A ``weaker_teacher`` column
    already in the frame is taken as it is; without either, no run is marked."""
    if WEAKER_TEACHER in frame:
        return frame[WEAKER_TEACHER].astype("boolean").fillna(False).astype(bool)
    if {"teacher_acc", "acc_before"} <= set(frame.columns):
        return (frame["teacher_acc"] < frame["acc_before"]).astype(bool)
    return pd.Series(False, index=frame.index)


def wrapped(label: str) -> str:
    return "\n".join(textwrap.wrap(label, LEGEND_WIDTH, break_on_hyphens=False))


@dataclass(frozen=True)
class SeedView:
    """How a figure shows its seeds, decided once for all of its bars (or curves): ``n_min``-``n_max`` seeds per
    bar; with at least ``kdlib.study.stats.MIN_SEEDS_FOR_INTERVAL`` on every bar, the mean's 95% interval (``bounded``:
    shares in [0, 1], the percentile bootstrap, which stays within them; otherwise the t-interval), else each seed as
    a point and no interval. ``weak``: some run has a teacher weaker than the student; its seeds are drawn too
    (with their own marker) whatever the count, so that both regimes show."""

    n_min: int
    n_max: int
    bounded: bool = False
    weak: bool = False

    @classmethod
    def of(cls, frame: pd.DataFrame, by: Sequence[str], values: Sequence[str], bounded: bool = False) -> SeedView:
        """The view of ``frame`` (one row per run) whose bars are the groups of ``by``, one bar per column of
        ``values`` (its non-missing values are the bar's seeds)."""
        counts = [int(c) for value in values for c in frame.groupby(list(by), sort=False)[value].count() if c > 0]
        return cls(min(counts, default=0), max(counts, default=0), bounded, bool(weaker_teacher(frame).any()))

    @property
    def intervals(self) -> bool:
        """Whether the mean's interval is drawn (enough seeds on every bar)."""
        return draws_interval(self.n_min)

    @property
    def points(self) -> bool:
        """Whether each seed is drawn as a point (few seeds, or two regimes to show)."""
        return (self.n_max > 1 and not self.intervals) or self.weak

    @property
    def note(self) -> str:
        """What is drawn, e.g. "each point one seed (2 seeds), no interval" (``kdlib.study.stats.drawing_note``)."""
        return drawing_note(self.n_min, self.n_max, bounded=self.bounded)

    def interval(self, values: Iterable[float]) -> tuple[float, float]:
        """``(low, high)`` of the mean of ``values``: the percentile bootstrap for shares, else the t-interval."""
        if self.bounded:
            return bootstrap_interval(values)
        found = mean_interval(values)
        return found.low, found.high

    def legend_handles(self) -> list[Line2D]:
        """Legend entries that say what is drawn: the interval or the points, and the weak-teacher marker."""
        point = {"marker": "o", "markerfacecolor": "white", "markeredgecolor": "black", "linestyle": ""}
        handles = []
        if self.intervals:
            handles.append(Line2D([], [], color=INTERVAL_COLOR, marker="|", markersize=10, linestyle="",
                                  label=wrapped(self.note)))  # fmt: skip
            if self.points:
                handles.append(Line2D([], [], **point, label="one seed"))
        elif self.n_max > 1:
            handles.append(Line2D([], [], **point, label=wrapped(f"bar: mean; {self.note}")))
        else:
            handles.append(Line2D([], [], linestyle="", label=wrapped(self.note)))
        if self.weak:
            weak = wrapped(WEAKER_TEACHER_LABEL)
            handles.append(Line2D([], [], marker="v", color="black", linestyle="", label=weak))
        return handles


@dataclass(frozen=True)
class Bars:
    """What ``draw_seed_bars`` draws: the mean of column ``y`` per group of column ``x`` (a tick each) and value
    of column ``hue`` (a bar each, side by side). Orders default to first appearance; ``palette``: hue -> colour."""

    x: str
    y: str
    hue: str
    order: Sequence[Any] | None = None
    hue_order: Sequence[Any] | None = None
    palette: dict[Any, Any] | None = None

    def orders(self, data: pd.DataFrame) -> tuple[list[Any], list[Any]]:
        order = list(self.order) if self.order is not None else list(dict.fromkeys(data[self.x]))
        hues = list(self.hue_order) if self.hue_order is not None else list(dict.fromkeys(data[self.hue]))
        return order, hues


def draw_seed_bars(ax: plt.Axes, data: pd.DataFrame, bars: Bars, view: SeedView) -> None:
    """Bars of the mean over seeds, and over them, as ``view`` says, the mean's interval or each seed as a point (a
    white circle; a black triangle for a seed whose teacher is weaker than the student, ``weaker_teacher``). The
    points of a bar are spread across it in seed order (no random jitter: the same figure every time). Missing
    values are left out; a bar with none is not drawn. ``data``: one row per run (and seed)."""
    data = data.reset_index(drop=True)
    weak = weaker_teacher(data).to_numpy(bool)
    order, hues = bars.orders(data)
    palette = bars.palette or dict(zip(hues, sns.color_palette(n_colors=len(hues)), strict=True))
    width = 0.8 / max(1, len(hues))
    for j, hue in enumerate(hues):
        label = str(hue)
        for i, group in enumerate(order):
            part = data[(data[bars.x] == group) & (data[bars.hue] == hue) & data[bars.y].notna()]
            if part.empty:
                continue
            if "seed" in part:
                part = part.sort_values("seed", kind="stable")
            values = part[bars.y].to_numpy(float)
            center = i - 0.4 + width * (j + 0.5)
            ax.bar(center, values.mean(), width, color=palette[hue], label=label, zorder=2)
            label = "_nolegend_"
            if view.intervals and len(values) > 1:
                _draw_interval(ax, center, view.interval(values), width)
            if view.points:
                spread = np.linspace(-0.3, 0.3, len(values)) * width if len(values) > 1 else np.zeros(1)
                _draw_seeds(ax, center + spread, values, weak[part.index.to_numpy()], view.intervals)
    ax.set_xticks(range(len(order)), [str(g) for g in order])
    ax.set_xlim(-0.5, len(order) - 0.5)


def _draw_interval(ax: plt.Axes, x: float, bounds: tuple[float, float], width: float) -> None:
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high)):
        return
    cap = 0.2 * width
    ax.plot([x, x], [low, high], color=INTERVAL_COLOR, linewidth=1.5, zorder=3)
    for end in (low, high):
        ax.plot([x - cap, x + cap], [end, end], color=INTERVAL_COLOR, linewidth=1.5, zorder=3)


def _draw_seeds(ax: plt.Axes, xs: np.ndarray, ys: np.ndarray, weak: np.ndarray, faint: bool) -> None:
    if (~weak).any():
        ax.scatter(xs[~weak], ys[~weak], zorder=4, alpha=0.6 if faint else 1.0, **SEED_POINT)
    if weak.any():
        ax.scatter(xs[weak], ys[weak], zorder=5, **WEAK_POINT)


def seed_legend(ax: plt.Axes, view: SeedView, **kwargs: Any) -> Legend:
    """``legend_beside`` ``ax`` with the bars of every panel of its figure (once per label: a panel may lack some)
    and the entries that say what ``view`` draws."""
    found: dict[str, Any] = {}
    for panel in ax.figure.axes:
        for handle, label in zip(*panel.get_legend_handles_labels(), strict=True):
            found.setdefault(label, handle)
    return legend_beside(ax, handles=[*found.values(), *view.legend_handles()], **kwargs)


def method_order(labels: Iterable[str]) -> list[str]:
    """Method labels in the registry's order (``kdlib.study.methods.method_names``), labels of other names after."""
    present = list(dict.fromkeys(labels))
    registry = [method_label(name) for name in method_names()]
    return [label for label in registry if label in present] + [label for label in present if label not in registry]


def method_palette(labels: Iterable[str]) -> dict[str, Any]:
    """One colour per method label, fixed by the method's place in the registry, so a method keeps its colour from
    figure to figure; labels of unregistered names come after."""
    present = list(dict.fromkeys(labels))
    names = method_order([method_label(name) for name in method_names()] + present)
    colors = sns.color_palette("tab10" if len(names) <= 10 else "husl", len(names))
    return {label: colors[i] for i, label in enumerate(names) if label in present}


def method_bars(data: pd.DataFrame, x: str, y: str) -> Bars:
    hues = method_order(data["method"])
    return Bars(x, y, "method", hue_order=hues, palette=method_palette(hues))


DIFFERENCES = ("gain", "val_gain")
"""Metrics that are differences of accuracies (they may be negative): their interval is the t-interval."""


def is_share(frame: pd.DataFrame, column: str) -> bool:
    """Whether a column holds shares (accuracies, flip rates) in [0, 1], not differences such as the gain."""
    return column not in DIFFERENCES and bool(frame[column].dropna().between(0, 1).all())
