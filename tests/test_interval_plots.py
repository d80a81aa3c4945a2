"""Gain figures draw the mean over seeds with its 95% t-interval (not seaborn's bootstrap) from
``MIN_SEEDS_FOR_INTERVAL`` seeds on, and none for one seed; shares get the percentile bootstrap."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kdlib.notebook.plots import plot_method_gains, plot_routing_by_transfer, plot_selection_criteria  # noqa: E402
from kdlib.study.stats import mean_interval  # noqa: E402


def bars_and_spans(fig: plt.Figure) -> tuple[list[float], list[float]]:
    """Bar heights and the vertical extent of each error bar line of the first axes."""
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches if p.get_width() > 0 and np.isfinite(p.get_height())]
    spans = []
    for line in ax.lines:  # an error bar: cap, vertical segment, cap, as one line broken by NaNs
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        pieces = np.split(np.arange(len(x)), np.flatnonzero(np.isnan(x)))
        for piece in (p[np.isfinite(x[p])] for p in pieces):
            if len(piece) == 2 and x[piece[0]] == x[piece[1]]:
                spans.append(abs(y[piece[1]] - y[piece[0]]))
    return heights, spans


def test_method_gains_show_the_t_interval_over_seeds() -> None:
    gains = [0.010, 0.030, 0.026, 0.015, 0.022, 0.035]
    frame = pd.DataFrame({"scenario": "iid", "method": "standard", "seed": range(6), "gain": gains})
    fig = plot_method_gains(frame, "caption")
    heights, spans = bars_and_spans(fig)
    interval = mean_interval(np.array(gains) * 100)
    assert heights == pytest.approx([interval.mean])
    assert spans == pytest.approx([2 * interval.half_width])
    plt.close(fig)


def test_one_seed_draws_no_interval() -> None:
    frame = pd.DataFrame({"scenario": ["iid"], "method": ["tuned"], "selection": ["holdout"], "gain": [0.02]})
    fig = plot_selection_criteria(frame, "caption")
    heights, spans = bars_and_spans(fig)
    assert heights == pytest.approx([2.0]) and all(s == 0 or np.isnan(s) for s in spans)
    plt.close(fig)


def test_routing_has_one_bar_group_per_transfer_set() -> None:
    rows = [
        {"transfer": t, "scenario": s, "seed": seed, "routing_teacher_0": share + 0.01 * seed}
        for t, share in (("student", 0.1), ("union", 0.5), ("public", 0.4))
        for s in ("iid", "disjoint")
        for seed in (0, 1)
    ]
    fig = plot_routing_by_transfer(pd.DataFrame(rows), "caption")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["student's own data", "both parties' data", "public split"]
    heights, spans = bars_and_spans(fig)
    assert len(heights) == 6 and heights[0] == pytest.approx(10.5)
    assert spans == []  # 2 seeds: each drawn as a point, no interval (tests/test_plots_seeds.py)
    plt.close(fig)
