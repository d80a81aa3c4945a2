"""Figures of the federated study (notebook 07), in the style of ``plots``: each function returns a Figure
with a title and a caption naming the data set and scale; ``kdlib.notebook.figure_layout.save_figure`` writes it.

Frames with a ``seed`` column hold several seeds (one row per seed); as in ``kdlib.notebook.plots``, fewer than
``kdlib.study.stats.MIN_SEEDS_FOR_INTERVAL`` seeds are drawn one by one, never as an interval."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from kdlib.fl.starts import start_label, start_names
from kdlib.notebook.figure_layout import finish_figure
from kdlib.notebook.plots_seeds import Bars, SeedView, draw_seed_bars, wrapped

NOT_REACHED = "not reached"


def start_colors(starts: Sequence[str] | None = None) -> dict[str, tuple]:
    """One fixed colour per registered start, the same in every figure."""
    names = start_names()
    palette = sns.color_palette("colorblind", len(names))
    return {s: palette[names.index(s)] for s in (names if starts is None else starts)}


def _ordered(values: Sequence[str], order: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def plot_fl_accuracy(curves: pd.DataFrame, caption: str, scenarios: Sequence[str] | None = None) -> plt.Figure:
    """Global test accuracy (%) per FedAvg round, one panel per scenario, one line per start; the scenario's
    target dashed. ``curves``: columns scenario, start, round, accuracy (fraction), target (fraction), and seed
    where there are several: then each seed is a line (fewer than ``stats.MIN_SEEDS_FOR_INTERVAL`` seeds), or
    the mean is drawn with its percentile-bootstrap band (accuracies stay within 0-100%)."""
    names = _ordered(curves["scenario"], scenarios or [])
    colors = start_colors()
    view = SeedView.of(curves, ["scenario", "start", "round"], ["accuracy"], bounded=True)
    fig, axes = plt.subplots(1, len(names), figsize=(3.8 * len(names) + 2.4, 3.4), squeeze=False, sharey=True)
    for ax, scenario in zip(axes[0], names, strict=True):
        part = curves[curves["scenario"] == scenario]
        for start in _ordered(part["start"], start_names()):
            _draw_start(ax, part[part["start"] == start], colors[start], start_label(start), view)
        _draw_target(ax, part)
        ax.set_title(scenario, fontsize=10)
        ax.set_xlabel("communication round (0 = start)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("global test accuracy (%)")
    handles, _ = axes[0][-1].get_legend_handles_labels()
    if view.n_max > 1:  # several seeds: say what the lines are
        note = view.note.replace("each point", "each line")
        handles.append(Line2D([], [], color="gray", alpha=0.3, linewidth=6, label=wrapped(f"line: {note}"))
                       if view.intervals else Line2D([], [], linestyle="", label=wrapped(note)))  # fmt: skip
    # beside the last panel, not over it: the curves end at its lower right, where a legend inside would sit
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0,
                       frameon=False)  # fmt: skip
    return finish_figure(fig, "FedAvg from different starting models: accuracy per round", caption)


def _draw_target(ax: plt.Axes, part: pd.DataFrame) -> None:
    """The scenario's target, dashed: each seed sets its own (from its own random start), so where they differ the
    line is their mean and says so."""
    targets = part.drop_duplicates("seed" if "seed" in part else "scenario")["target"].dropna()
    if targets.empty:
        return
    label = "target" if targets.nunique() == 1 else "target: the mean of the seeds' own targets"
    ax.axhline(100 * targets.mean(), color="black", linestyle="--", linewidth=1, label=wrapped(label))


def _draw_start(ax: plt.Axes, part: pd.DataFrame, color: tuple, label: str, view: SeedView) -> None:
    """One start's curve: its only run, each seed's line, or the mean over seeds with its band."""
    by_round = part.groupby("round")["accuracy"]
    rounds = sorted(by_round.groups)
    if view.intervals:
        bands = 100 * np.array([view.interval(by_round.get_group(r)) for r in rounds])
        ax.fill_between(rounds, bands[:, 0], bands[:, 1], color=color, alpha=0.2, linewidth=0)
    if view.intervals or "seed" not in part or part["seed"].nunique() <= 1:
        ax.plot(rounds, 100 * by_round.mean().loc[rounds], marker="o", markersize=3, color=color, label=label)
        return
    for n, (_, line) in enumerate(part.groupby("seed", sort=True)):
        line = line.sort_values("round")
        ax.plot(line["round"], 100 * line["accuracy"], marker="o", markersize=2, linewidth=1, color=color,
                label=label if n == 0 else "_nolegend_")  # fmt: skip


def plot_rounds_to_target(summary: pd.DataFrame, caption: str, rounds: int) -> plt.Figure:
    """Rounds FedAvg needs to reach the target, per scenario and start; a start that never reached it within
    ``rounds`` rounds gets a hatched bar to the top, marked "not reached". Bars of the other starts carry their
    reduction against the random start. ``summary``: ``kdlib.fl.round_reduction_summary``; with several rows
    per scenario and start (seeds), the bar is the mean over the seeds that reached the target, each seed is a point
    (a cross at the budget: not reached) and the label says how many reached it."""
    scenarios = list(dict.fromkeys(summary["scenario"]))
    starts = _ordered(summary["start"], start_names())
    colors = start_colors()
    width = 0.8 / len(starts)
    several = bool(summary.groupby(["scenario", "start"]).size().max() > 1) if len(summary) else False
    fig, ax = plt.subplots(figsize=(max(11.0, 2.4 * len(scenarios) + 2.4), 4.0))
    for j, start in enumerate(starts):
        for i, scenario in enumerate(scenarios):
            cell = summary[(summary["scenario"] == scenario) & (summary["start"] == start)]
            if cell.empty:
                continue
            x = i - 0.4 + width * (j + 0.5)
            label = start_label(start) if i == 0 else None
            if several:
                _seed_rounds(ax, cell, x, (width, rounds), (colors[start], label))
                continue
            row = cell.iloc[-1]
            value = row["rounds_to_target"]
            if pd.isna(value):
                ax.bar(x, rounds, width, color="white", edgecolor=colors[start], hatch="//", label=label)
                ax.text(x, rounds / 2, NOT_REACHED, rotation=90, ha="center", va="center", fontsize=7)
                continue
            ax.bar(x, max(float(value), 0.15), width, color=colors[start], label=label)
            ax.text(x, float(value) + 0.2, _bar_label(int(value), row, start), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set_xlabel("scenario")
    ax.set_ylabel("rounds to reach the target")
    ax.set_ylim(0, rounds * 1.4)
    ax.axhline(rounds, color="gray", linestyle=":", linewidth=1)
    # at the axes' right edge (x in axes units): in data units it could fall past the frame
    ax.text(0.995, rounds, f"budget: {rounds} rounds", transform=ax.get_yaxis_transform(), fontsize=7, va="bottom",
            ha="right")  # fmt: skip
    ax.legend(fontsize=7, ncols=len(starts), loc="upper center")
    title = "Communication rounds to reach the target (labels: rounds, and change against random init)"
    if several:
        title = "Communication rounds to reach the target (bars: mean over the seeds that reached it; points: seeds)"
    return finish_figure(fig, title, caption)


def _seed_rounds(ax: plt.Axes, cell: pd.DataFrame, x: float, size: tuple[float, int], style: tuple) -> None:
    """One start's bar over seeds: the mean rounds of the seeds that reached the target (hatched to the budget when
    none did), each seed as a point (a cross at the budget where it did not), and "k/n reached" above."""
    (width, rounds), (color, label) = size, style
    cell = cell.sort_values("seed") if "seed" in cell else cell
    values = cell["rounds_to_target"].to_numpy(float)
    reached = np.isfinite(values)
    if reached.any():
        ax.bar(x, max(float(values[reached].mean()), 0.15), width, color=color, label=label)
    else:
        ax.bar(x, rounds, width, color="white", edgecolor=color, hatch="//", label=label)
    spread = np.linspace(-0.3, 0.3, len(values)) * width if len(values) > 1 else np.zeros(1)
    ax.scatter(x + spread[reached], values[reached], marker="o", s=14, facecolor="white", edgecolor="black",
               linewidths=0.8, zorder=4)  # fmt: skip
    ax.scatter(x + spread[~reached], np.full((~reached).sum(), rounds), marker="x", s=18, color="black", zorder=4)
    top = max(values[reached].max() if reached.any() else 0.0, rounds if (~reached).any() else 0.0)
    ax.text(x, top + 0.2, f"{reached.sum()}/{len(values)}\nreached", ha="center", va="bottom", fontsize=7)


def _bar_label(value: int, row: pd.Series, start: str) -> str:
    reduction = row["reduction_pct"]
    if start == "random" or pd.isna(reduction):
        return f"{value}"
    if abs(reduction) < 0.5:
        return f"{value}\nsame"
    return f"{value}\n{abs(reduction):.0f}% {'fewer' if reduction > 0 else 'more'}"


def plot_fl_cost(summary: pd.DataFrame, caption: str) -> plt.Figure:
    """The price of a better start beside what it saves, per scenario and start. Left: megabytes communicated
    until the target (the rounds, plus the start's one-off upload of client models; none where the target was
    not reached). Right: the KD phase's wall time, with the mean wall time of one simulated FedAvg round."""
    data = summary.assign(label=summary["start"].map(start_label))
    order = [start_label(s) for s in _ordered(summary["start"], start_names())]
    palette = {start_label(s): c for s, c in start_colors().items()}
    scenarios = list(dict.fromkeys(summary["scenario"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    views = [SeedView.of(data, ["scenario", "label"], ["mb_to_target"])]
    draw_seed_bars(axes[0], data, Bars("scenario", "mb_to_target", "label", scenarios, order, palette), views[0])
    axes[0].set_ylabel("MB communicated to reach the target")
    missing = data[data["mb_to_target"].isna()]
    axes[0].set_title(f"{len(missing)} run(s) {NOT_REACHED}: no bar" if len(missing) else "", fontsize=8)
    no_bar = data.groupby(["scenario", "label"])["mb_to_target"].count() == 0  # no seed of the cell reached it
    for scenario, label in no_bar[no_bar].index:  # say so where the bar would be, or the gap reads as a lost bar
        x = scenarios.index(scenario) - 0.4 + 0.8 / len(order) * (order.index(label) + 0.5)
        axes[0].text(x, 0, f" {NOT_REACHED}", rotation=90, ha="center", va="bottom", fontsize=7, color="dimgray")
    kd = data[data["start"].str.startswith("kd")]
    kd_order = [o for o in order if o in set(kd["label"])]
    views.append(SeedView.of(kd, ["scenario", "label"], ["kd_wall_s"]))
    draw_seed_bars(axes[1], kd, Bars("scenario", "kd_wall_s", "label", scenarios, kd_order, palette), views[1])
    per_round = (summary["fl_wall_s"] / summary["rounds"]).mean()
    axes[1].axhline(per_round, color="black", linestyle="--", linewidth=1, label="one FedAvg round (simulated)")
    axes[1].set_ylabel("KD phase wall time (s)")
    for ax, view in zip(axes, views, strict=True):
        ax.set_xlabel("scenario")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.45)  # headroom above the bars for the legend
        handles, _ = ax.get_legend_handles_labels()
        extra = view.legend_handles() if view.n_max > 1 else []  # several seeds: what the points or bars are
        ax.legend(handles=handles + extra, fontsize=7, ncols=2, loc="upper center")
    return finish_figure(fig, "What reaching the target costs: communication, and the KD phase's compute", caption)
