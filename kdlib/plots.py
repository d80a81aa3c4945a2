"""Seaborn figures of the study, one function per figure. Each returns a matplotlib Figure; ``save_figure``
writes it to :func:`kdlib.paths.figures_dir` as PNG and SVG. Every figure carries a caption with its data set and
scale."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget", "ipympl"):
    matplotlib.use("Agg")  # headless-safe default outside notebooks

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.legend import Legend
from matplotlib.patches import Rectangle

from kdlib.errors import KDConfigError
from kdlib.methods import method_label, method_labels
from kdlib.paths import figures_dir, user_folder
from kdlib.stats import t_errorbar


def __getattr__(name: str) -> object:
    if name == "METHOD_LABELS":  # ``{method: label}`` of the registry (``kdlib.methods``) as it is now
        return method_labels()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def study_caption(description: str, scale: str, n_train: int, n_test: int, extra: str = "") -> str:
    """One line naming the data, its size and the scale, for the bottom of every figure."""
    text = f"{description}, {scale} scale: {n_train:,} train / {n_test:,} test images"
    return f"{text}; {extra}" if extra else text


class CaptionedStudy(Protocol):
    """What ``caption`` reads of a study (the distillation study and the federated one both are)."""

    cfg: Any
    dataset: Any

    def caption_details(self) -> str: ...


def caption(study: CaptionedStudy, extra: str = "") -> str:
    """The caption line of a figure from a study, the distillation study or the federated one: data set, scale,
    sizes, the study's own details (``study.caption_details()``) and ``extra``."""
    data = study.dataset
    details = study.caption_details() + (f"; {extra}" if extra else "")
    return study_caption(data.description, study.cfg.scale, len(data.x_train), len(data.x_test), details)


def caption_lines(caption: str, fig_width_in: float) -> list[str]:
    """The caption wrapped to the figure's width (8-point text: about 15 characters per inch), in as few lines as
    that allows and with lines of even length, so that no word is left alone on the last line."""
    width = max(40, int(fig_width_in * 15))
    lines = textwrap.wrap(caption, width) or [""]
    for narrower in range(math.ceil(len(caption) / len(lines)), width):
        balanced = textwrap.wrap(caption, narrower)
        if len(balanced) == len(lines):
            return balanced
    return lines


def mark_zero_bars(fig: plt.Figure) -> int:
    """Draw a short line and a "0" on every bar of height zero, which would otherwise look like missing data
    (bars of missing data have a NaN height and stay empty). Returns how many bars were marked."""
    marked = 0
    for ax in fig.axes:
        for bar in list(ax.patches):
            if not isinstance(bar, Rectangle) or bar.get_width() <= 0 or bar.get_height() != 0:
                continue
            x0, x1, y = bar.get_x(), bar.get_x() + bar.get_width(), bar.get_y()
            color = bar.get_facecolor() if bar.get_facecolor()[3] > 0 else bar.get_edgecolor()
            ax.plot([x0, x1], [y, y], color=color, linewidth=3, solid_capstyle="butt", zorder=3)
            ax.annotate("0", (0.5 * (x0 + x1), y), xytext=(0, 1.5), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7, color="dimgray")  # fmt: skip
            marked += 1
    return marked


def legend_beside(ax: plt.Axes, **kwargs: Any) -> Legend:
    """The axes' legend at its right, outside the data area (inside it would cover bars or error bars wherever they
    reach the top), with the figure widened by the legend's width so the axes keep their size. ``kwargs`` go to
    ``ax.legend``."""
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False, **kwargs)
    widen_for_legend(ax.figure, legend)
    return legend


def widen_for_legend(fig: plt.Figure, legend: Legend) -> None:
    """Make ``fig`` wider by the width of ``legend`` (placed outside the axes) and a small gap."""
    width = legend.get_window_extent().width / fig.dpi
    fig.set_figwidth(fig.get_figwidth() + width + 0.2)


def _finish(fig: plt.Figure, title: str, caption: str) -> plt.Figure:
    mark_zero_bars(fig)
    fig.suptitle(title, fontsize=12)
    lines = caption_lines(caption, fig.get_figwidth())
    fig.text(0.5, 0.005, "\n".join(lines), ha="center", va="bottom", fontsize=8, color="dimgray")
    bottom = min(0.35, (0.02 + 0.14 * len(lines)) / fig.get_figheight())  # 8-point lines are ~0.14 inch apart
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    _keep_figure_legends_off_the_axes(fig, (0, bottom, 1, 0.97))
    return fig


def _keep_figure_legends_off_the_axes(fig: plt.Figure, rect: tuple[float, float, float, float]) -> None:
    """tight_layout ignores figure-level legends (seaborn's catplot puts one at the right), so the axes can grow
    under them: narrow the layout until no figure legend overlaps an axes' data area."""
    left, bottom, right, top = rect
    for _ in range(3):  # a second pass settles the tick labels of the resized axes
        moved = False
        for legend in fig.legends:
            box = legend.get_window_extent().transformed(fig.transFigure.inverted())
            if not any(box.overlaps(ax.get_position()) for ax in fig.axes):
                continue
            if box.x0 > 0.5:  # a legend at the right: the axes end left of it
                right, moved = min(right, box.x0 - 0.01), True
            else:  # one along the top: the axes start below it
                top, moved = min(top, box.y0 - 0.01), True
        if not moved:
            return
        fig.tight_layout(rect=(left, bottom, right, top))


def save_figure(fig: plt.Figure, name: str, folder: str | Path | None = None) -> list[Path]:
    """Save ``fig`` as ``<folder>/<name>.png`` and ``.svg`` (folder default: :func:`kdlib.paths.figures_dir`).

    ``name`` is a plain file name (no folders, no '..'); ``folder`` follows :func:`kdlib.paths.user_folder`.
    """
    if not isinstance(name, str) or not name.strip() or Path(name).name != name or name in (".", ".."):
        raise KDConfigError("name", name, "a plain figure file name without folders, e.g. '03_standard_gain'")
    folder = user_folder(folder, "folder", figures_dir())
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    return paths


def plot_partition_heatmaps(counts: dict[str, np.ndarray], class_names: Sequence[str], caption: str) -> plt.Figure:
    """Class counts per party (rows) and class (columns), one heatmap per scenario."""
    n = len(counts)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 1, 2.8), squeeze=False)
    for ax, (label, matrix) in zip(axes[0], counts.items(), strict=True):
        frame = pd.DataFrame(matrix, index=[f"party {i}" for i in range(len(matrix))], columns=list(class_names))
        sns.heatmap(
            frame,
            ax=ax,
            cmap="viridis",
            cbar=ax is axes[0][-1],
            annot=len(matrix) <= 3,
            fmt="d",
            annot_kws={"fontsize": 6},
            cbar_kws={"label": "images"},
        )
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("class")
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        ax.tick_params(axis="y", labelrotation=0)  # seaborn draws row labels upright: on short rows they overlap
    return _finish(fig, "Who holds which classes: images per party and class", caption)


def plot_heterogeneity(values: dict[str, float], caption: str) -> plt.Figure:
    """One bar per scenario: its label-distribution heterogeneity (0 = same label mix, 1 = disjoint)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    sns.barplot(x=list(values), y=list(values.values()), ax=ax, color="tab:blue")
    ax.set_ylabel("heterogeneity (TV distance, 0-1)")
    ax.set_xlabel("scenario")
    ax.set_ylim(0, 1.05)
    return _finish(fig, "Label skew of each scenario", caption)


def plot_party_accuracy(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Pre-trained parties: accuracy (%) on own and unseen classes per scenario.

    ``frame`` columns: scenario, role (teacher/student), group (all/own/unseen), accuracy (in %).
    """
    grid = sns.catplot(
        data=frame, x="scenario", y="accuracy", hue="group", col="role", kind="bar", height=3.2, aspect=1.4
    )
    grid.set_axis_labels("scenario", "test accuracy (%)")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=20)
    return _finish(grid.figure, "Pre-trained parties: accuracy on their own vs. unseen classes", caption)


def plot_method_gains(frame: pd.DataFrame, caption: str, metric: str = "gain", ylabel: str | None = None) -> plt.Figure:
    """Bars of a distillation metric (in accuracy points) per scenario and method: the mean over seeds, with its
    95% t-interval when there are several.

    ``frame``: one row per run (and seed) with columns scenario, method and ``metric`` (a fraction; shown x100).
    """
    data = frame.assign(points=frame[metric] * 100, method=frame["method"].map(method_label))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    sns.barplot(data=data, x="scenario", y="points", hue="method", ax=ax, errorbar=t_errorbar, capsize=0.1)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel or f"{metric.replace('_', ' ')} (accuracy points)")
    ax.set_xlabel("scenario")
    legend_beside(ax, fontsize=8)
    return _finish(fig, f"Student {metric.replace('_', ' ')} per method and scenario", caption)


def plot_knowledge_flips(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Knowledge gained (wrong->right) and lost (right->wrong), in % of test images, per method and scenario."""
    long = frame.melt(
        id_vars=["scenario", "method"],
        value_vars=["knowledge_gain", "knowledge_loss"],
        var_name="flip",
        value_name="share",
    )
    long["share"] *= 100
    long["method"] = long["method"].map(method_label)
    grid = sns.catplot(data=long, x="scenario", y="share", hue="method", col="flip", kind="bar", height=3.2, aspect=1.4,
                       errorbar=t_errorbar, capsize=0.1)  # fmt: skip
    grid.set_axis_labels("scenario", "test images flipped (%)")
    return _finish(grid.figure, "Knowledge gained and forgotten by the student", caption)


def plot_own_unseen(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Student accuracy (%) on its own and on its unseen classes, before vs. after, per method."""
    rows = []
    for _, r in frame.iterrows():
        for group in ("own", "unseen"):
            for when in ("before", "after"):
                rows.append(
                    {
                        "scenario": r["scenario"],
                        "method": method_label(r["method"]),
                        "group": f"{group} classes",
                        "when": when,
                        "accuracy": 100 * r[f"{group}_{when}"],
                    }
                )
    long = pd.DataFrame(rows).dropna()
    grid = sns.catplot(
        data=long,
        x="method",
        y="accuracy",
        hue="when",
        col="group",
        row="scenario",
        kind="bar",
        height=2.4,
        aspect=2.0,
        sharey=False,
    )
    grid.set_axis_labels("", "test accuracy (%)")
    sns.move_legend(grid, "upper right", bbox_to_anchor=(0.99, 0.99), ncol=2, frameon=False, title=None)
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=15, labelsize=7)
        if not ax.patches or all(np.isnan(p.get_height()) for p in ax.patches):
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no unseen classes: the student has seen every class", transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="dimgray")  # fmt: skip
    return _finish(grid.figure, "Own vs. unseen classes, before and after distillation", caption)


def plot_curves(records: list[dict], caption: str, key: str = "test_acc") -> plt.Figure:
    """Student test accuracy (%) per distillation epoch, one line per method, one panel per scenario."""
    rows = [
        {
            "scenario": r["config"]["scenario"],
            "method": method_label(r["config"]["method"]),
            "epoch": c["epoch"],
            "accuracy": 100 * c[key],
        }
        for r in records
        for c in r.get("curves") or []
        if key in c
    ]
    data = pd.DataFrame(rows)
    grid = sns.relplot(
        data=data,
        x="epoch",
        y="accuracy",
        hue="method",
        col="scenario",
        kind="line",
        marker="o",
        errorbar=t_errorbar,  # a band: the 95% t-interval over seeds
        height=2.8,
        aspect=1.0,
        col_wrap=min(5, data["scenario"].nunique()),
    )
    grid.set_axis_labels("distillation epoch", "student test accuracy (%)")
    return _finish(grid.figure, "Learning curves of the student", caption)


def plot_tuning_heatmaps(grids: dict[str, list[dict]], caption: str, value: str = "val_gain") -> plt.Figure:
    """(T, alpha) heatmaps of a grid score (in points) per scenario; the chosen (best) cell is outlined."""
    n = len(grids)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n + 0.8, 3.2), squeeze=False)
    for ax, (label, rows) in zip(axes[0], grids.items(), strict=True):
        frame = pd.DataFrame(rows)
        table = frame.pivot_table(index="temperature", columns="alpha", values=value) * 100
        sns.heatmap(
            table,
            ax=ax,
            annot=True,
            fmt=".1f",
            cmap="RdBu",
            center=0,
            annot_kws={"fontsize": 7},
            cbar_kws={"label": f"{value.replace('_', ' ')} (points)"},
        )
        finalists = frame[frame["rung"] == frame["rung"].max()] if "rung" in frame else frame  # halving: last rung
        best = finalists.loc[finalists["val_acc"].idxmax()]
        i, j = list(table.index).index(best["temperature"]), list(table.columns).index(best["alpha"])
        ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, edgecolor="black", linewidth=2))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("alpha (weight of the KD term)")
        ax.set_ylabel("temperature T")
    return _finish(fig, "Tuned KD: the (T, alpha) grid, chosen cell outlined (by validation accuracy)", caption)


def plot_routing(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Data-partitioning KD: share of transfer samples distilled from the teacher vs. the frozen student."""
    data = frame.assign(teacher=100 * frame["routing_teacher_0"], student=100 * frame["routing_initial_student"])
    long = data.melt(id_vars=["scenario"], value_vars=["teacher", "student"], var_name="source", value_name="share")
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    sns.barplot(data=long, x="scenario", y="share", hue="source", ax=ax, errorbar=t_errorbar, capsize=0.1)
    ax.set_ylabel("transfer samples routed (%)")
    ax.set_xlabel("scenario")
    legend_beside(ax, fontsize=8, title="source", title_fontsize=8)
    return _finish(fig, "Data-partitioning KD: which model teaches which samples", caption)


TRANSFER_LABELS = {"student": "student's own data", "union": "both parties' data", "public": "public split"}


def plot_routing_by_transfer(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Data-partitioning KD under each transfer set: % of samples distilled from the teacher, one bar group per
    transfer set and one bar per scenario (mean over seeds, 95% t-interval).

    ``frame``: DP-KD runs with columns transfer, scenario and routing_teacher_0 (a fraction).
    """
    data = frame.assign(teacher=100 * frame["routing_teacher_0"], transfer=frame["transfer"].map(TRANSFER_LABELS))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    order = [TRANSFER_LABELS[t] for t in TRANSFER_LABELS if TRANSFER_LABELS[t] in set(data["transfer"])]
    sns.barplot(data=data, x="transfer", y="teacher", hue="scenario", order=order, ax=ax, errorbar=t_errorbar,
                capsize=0.1)  # fmt: skip
    ax.set_ylabel("samples taught by the teacher (%)")
    ax.set_xlabel("transfer set")
    ax.set_ylim(0, 105)
    legend_beside(ax, fontsize=8, title="scenario", title_fontsize=8)
    return _finish(fig, "Data-partitioning KD: the teacher's share under each transfer set", caption)


def plot_selection_criteria(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Tuned KD's test gain (points) per scenario when (T, alpha) is chosen on the held-out split vs. on a split
    of the transfer data (mean over seeds, 95% t-interval). ``frame``: tuned runs with a ``selection`` column."""
    labels = {"holdout": "held-out split (task's label mix)", "transfer": "split of the transfer data"}
    data = frame.assign(points=100 * frame["gain"], criterion=frame["selection"].map(labels))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    sns.barplot(data=data, x="scenario", y="points", hue="criterion", ax=ax, errorbar=t_errorbar, capsize=0.1,
                hue_order=[v for k, v in labels.items() if k in set(frame["selection"])])  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("tuned KD test gain (points)")
    ax.set_xlabel("scenario")
    legend_beside(ax, fontsize=8, title="(T, α) chosen on", title_fontsize=8)
    return _finish(fig, "Tuned KD: what each selection criterion gains on the test set", caption)
