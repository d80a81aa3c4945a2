"""Figures of the federated study (notebook 07), in the style of ``kdlib.plots``: each function returns a Figure
with a title and a caption naming the data set and scale; ``kdlib.plots.save_figure`` writes it."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from kdlib.fl.config import START_LABELS, STARTS
from kdlib.plots import _finish

NOT_REACHED = "not reached"


def start_colors(starts: Sequence[str] = STARTS) -> dict[str, tuple]:
    """One fixed colour per start, the same in every figure."""
    palette = sns.color_palette("colorblind", len(STARTS))
    return {s: palette[STARTS.index(s)] for s in starts}


def _ordered(values: Sequence[str], order: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def plot_fl_accuracy(curves: pd.DataFrame, caption: str, scenarios: Sequence[str] | None = None) -> plt.Figure:
    """Global test accuracy (%) per FedAvg round, one panel per scenario, one line per start; the scenario's
    target dashed. ``curves``: columns scenario, start, round, accuracy (fraction), target (fraction)."""
    names = _ordered(curves["scenario"], scenarios or [])
    colors = start_colors()
    fig, axes = plt.subplots(1, len(names), figsize=(3.8 * len(names) + 2.4, 3.4), squeeze=False, sharey=True)
    for ax, scenario in zip(axes[0], names, strict=True):
        part = curves[curves["scenario"] == scenario]
        for start in _ordered(part["start"], STARTS):
            line = part[part["start"] == start].sort_values("round")
            ax.plot(
                line["round"],
                100 * line["accuracy"],
                marker="o",
                markersize=3,
                color=colors[start],
                label=START_LABELS.get(start, start),
            )
        target = part["target"].dropna()
        if len(target):
            ax.axhline(100 * target.iloc[0], color="black", linestyle="--", linewidth=1, label="target")
        ax.set_title(scenario, fontsize=10)
        ax.set_xlabel("communication round (0 = start)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("global test accuracy (%)")
    # beside the last panel, not over it: the curves end at its lower right, where a legend inside would sit
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0, frameon=False)
    return _finish(fig, "FedAvg from different starting models: accuracy per round", caption)


def plot_rounds_to_target(summary: pd.DataFrame, caption: str, rounds: int) -> plt.Figure:
    """Rounds FedAvg needs to reach the target, per scenario and start; a start that never reached it within
    ``rounds`` rounds gets a hatched bar to the top, marked "not reached". Bars of the other starts carry their
    reduction against the random start. ``summary``: ``kdlib.federated.round_reduction_summary``."""
    scenarios = list(dict.fromkeys(summary["scenario"]))
    starts = _ordered(summary["start"], STARTS)
    colors = start_colors()
    width = 0.8 / len(starts)
    fig, ax = plt.subplots(figsize=(max(11.0, 2.4 * len(scenarios) + 2.4), 4.0))
    for j, start in enumerate(starts):
        for i, scenario in enumerate(scenarios):
            row = summary[(summary["scenario"] == scenario) & (summary["start"] == start)]
            if row.empty:
                continue
            row = row.iloc[-1]
            x = i - 0.4 + width * (j + 0.5)
            label = START_LABELS.get(start, start) if i == 0 else None
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
    return _finish(fig, title, caption)


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
    data = summary.assign(label=summary["start"].map(START_LABELS))
    order = [START_LABELS[s] for s in _ordered(summary["start"], STARTS)]
    palette = {START_LABELS[s]: c for s, c in start_colors().items()}
    scenarios = list(dict.fromkeys(summary["scenario"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.barplot(data=data, x="scenario", y="mb_to_target", hue="label", order=scenarios, hue_order=order,
                palette=palette, ax=axes[0])  # fmt: skip
    axes[0].set_ylabel("MB communicated to reach the target")
    missing = data[data["mb_to_target"].isna()]
    axes[0].set_title(f"{len(missing)} run(s) {NOT_REACHED}: no bar" if len(missing) else "", fontsize=8)
    for _, row in missing.iterrows():  # say so where the bar would be, or the gap reads as a lost bar
        x = scenarios.index(row["scenario"]) - 0.4 + 0.8 / len(order) * (order.index(row["label"]) + 0.5)
        axes[0].text(x, 0, f" {NOT_REACHED}", rotation=90, ha="center", va="bottom", fontsize=7, color="dimgray")
    kd = data[data["start"].str.startswith("kd")]
    kd_order = [o for o in order if o in set(kd["label"])]
    sns.barplot(data=kd, x="scenario", y="kd_wall_s", hue="label", order=scenarios, hue_order=kd_order,
                palette=palette, ax=axes[1])  # fmt: skip
    per_round = (summary["fl_wall_s"] / summary["rounds"]).mean()
    axes[1].axhline(per_round, color="black", linestyle="--", linewidth=1, label="one FedAvg round (simulated)")
    axes[1].set_ylabel("KD phase wall time (s)")
    for ax in axes:
        ax.set_xlabel("scenario")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.45)  # headroom above the bars for the legend
        ax.legend(fontsize=7, ncols=2, loc="upper center")
    return _finish(fig, "What reaching the target costs: communication, and the KD phase's compute", caption)
