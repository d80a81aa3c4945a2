"""Seaborn figures of the study, one function per figure. Each returns a matplotlib Figure; ``save_figure``
writes it to :func:`kdlib.paths.figures_dir` as PNG and SVG. Every figure carries a caption with its data set and
scale."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget", "ipympl"):
    matplotlib.use("Agg")  # headless-safe default outside notebooks

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from kdlib.notebook.figure_layout import (
    finish_figure,
    legend_beside,
)
from kdlib.notebook.plots_seeds import (
    WEAKER_TEACHER,
    WEAKER_TEACHER_LABEL,
    Bars,
    SeedView,
    draw_seed_bars,
    is_share,
    method_bars,
    method_order,
    method_palette,
    seed_legend,
    weaker_teacher,
    wrapped,
)
from kdlib.study.methods import method_label, method_labels


def __getattr__(name: str) -> object:
    if name == "METHOD_LABELS":  # ``{method: label}`` of the registry (``kdlib.study.methods``) as it is now
        return method_labels()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    return finish_figure(fig, "Who holds which classes: images per party and class", caption)


def plot_heterogeneity(values: dict[str, float], caption: str) -> plt.Figure:
    """One bar per scenario: its label-distribution heterogeneity (0 = same label mix, 1 = disjoint)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    sns.barplot(x=list(values), y=list(values.values()), ax=ax, color="tab:blue")
    ax.set_ylabel("heterogeneity (TV distance, 0-1)")
    ax.set_xlabel("scenario")
    ax.set_ylim(0, 1.05)
    return finish_figure(fig, "Label skew of each scenario", caption)


# ------------------------------------------------------------------------------------------------ figures


def plot_party_accuracy(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Pre-trained parties: accuracy (%) on own and unseen classes per scenario, one panel per role.

    ``frame`` columns: scenario, role (teacher/student), group (all/own/unseen), accuracy (in %); with a seed
    column, one row per seed (each drawn as a point below ``kdlib.study.stats.MIN_SEEDS_FOR_INTERVAL`` seeds).
    """
    roles = list(dict.fromkeys(frame["role"]))
    view = SeedView.of(frame, ["scenario", "role", "group"], ["accuracy"], bounded=True)
    bars = Bars("scenario", "accuracy", "group", list(dict.fromkeys(frame["scenario"])),
                list(dict.fromkeys(frame["group"])))  # fmt: skip
    fig, axes = plt.subplots(1, len(roles), figsize=(4.5 * len(roles), 3.4), squeeze=False, sharey=True)
    for ax, role in zip(axes[0], roles, strict=True):
        draw_seed_bars(ax, frame[frame["role"] == role], bars, view)
        ax.set_title(f"role = {role}", fontsize=10)
        ax.set_xlabel("scenario")
        ax.tick_params(axis="x", labelrotation=35)  # 5 scenario names fit a panel at 35 degrees, not at 20
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    axes[0][0].set_ylabel("test accuracy (%)")
    seed_legend(axes[0][-1], view, fontsize=8, title="group", title_fontsize=8)
    return finish_figure(fig, "Pre-trained parties: accuracy on their own vs. unseen classes", caption)


def plot_method_gains(frame: pd.DataFrame, caption: str, metric: str = "gain", ylabel: str | None = None) -> plt.Figure:
    """Bars of a distillation metric (in accuracy points) per scenario and method: the mean over seeds with its 95%
    t-interval from ``kdlib.study.stats.MIN_SEEDS_FOR_INTERVAL`` seeds on, each seed as a point below that; a seed whose
    teacher is weaker than the student is marked (``weaker_teacher``). Methods are labelled and ordered by the
    registry (``kdlib.study.methods``).

    ``frame``: one row per run (and seed) with columns scenario, method and ``metric`` (a fraction; shown x100);
    teacher_acc and acc_before mark the weak-teacher seeds.
    """
    data = frame.assign(points=frame[metric] * 100, method=frame["method"].map(method_label),
                        **{WEAKER_TEACHER: weaker_teacher(frame)})  # fmt: skip
    view = SeedView.of(data, ["scenario", "method"], ["points"], bounded=is_share(frame, metric))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    draw_seed_bars(ax, data, method_bars(data, "scenario", "points"), view)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel or f"{metric.replace('_', ' ')} (accuracy points)")
    ax.set_xlabel("scenario")
    seed_legend(ax, view, fontsize=8, title="method", title_fontsize=8)
    return finish_figure(fig, f"Student {metric.replace('_', ' ')} per method and scenario", caption)


FLIPS = {"knowledge_gain": "knowledge gained (wrong → right)", "knowledge_loss": "knowledge lost (right → wrong)"}


def plot_knowledge_flips(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Knowledge gained (wrong->right) and lost (right->wrong), in % of test images, per method and scenario: rates
    in [0, 1], so from ``kdlib.study.stats.MIN_SEEDS_FOR_INTERVAL`` seeds on their interval is the percentile bootstrap
    over seeds (it stays within 0-100%); below that each seed is a point."""
    data = frame.assign(method=frame["method"].map(method_label), **{WEAKER_TEACHER: weaker_teacher(frame)},
                        **{column: 100 * frame[column] for column in FLIPS})  # fmt: skip
    view = SeedView.of(data, ["scenario", "method"], list(FLIPS), bounded=True)
    # one panel above the other, each as wide as the gain figure's: at full scale's 5 scenarios, panels side by side
    # ran the scenario names into each other
    fig, axes = plt.subplots(len(FLIPS), 1, figsize=(8, 3.0 * len(FLIPS)), sharex=True, sharey=True)
    for ax, (column, title) in zip(axes, FLIPS.items(), strict=True):
        draw_seed_bars(ax, data, method_bars(data, "scenario", column), view)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("test images flipped (%)")
    axes[-1].set_xlabel("scenario")
    seed_legend(axes[0], view, fontsize=8, title="method", title_fontsize=8)
    return finish_figure(fig, "Knowledge gained and forgotten by the student", caption)


def plot_own_unseen(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Student accuracy (%) on its own and on its unseen classes, before vs. after, per method (one row of panels
    per scenario); seeds as in ``plot_method_gains``, with the bootstrap interval of accuracies."""
    weak = weaker_teacher(frame)
    rows = []
    for n, (index, r) in enumerate(frame.iterrows()):
        for group in ("own", "unseen"):
            for when in ("before", "after"):
                rows.append(
                    {
                        "scenario": r["scenario"],
                        "method": method_label(r["method"]),
                        "seed": r["seed"] if "seed" in frame else n,
                        "group": f"{group} classes",
                        "when": when,
                        "accuracy": 100 * r[f"{group}_{when}"],
                        WEAKER_TEACHER: bool(weak[index]),
                    }
                )
    long = pd.DataFrame(rows)
    view = SeedView.of(long, ["scenario", "method", "group", "when"], ["accuracy"], bounded=True)
    scenarios, groups = list(dict.fromkeys(long["scenario"])), list(dict.fromkeys(long["group"]))
    bars = Bars("method", "accuracy", "when", method_order(long["method"]), ["before", "after"])
    fig, axes = plt.subplots(len(scenarios), len(groups), figsize=(4.8 * len(groups), 2.4 * len(scenarios) + 0.4),
                             squeeze=False)  # fmt: skip
    for row, scenario in zip(axes, scenarios, strict=True):
        for ax, group in zip(row, groups, strict=True):
            draw_seed_bars(ax, long[(long["scenario"] == scenario) & (long["group"] == group)], bars, view)
            ax.set_title(f"scenario = {scenario} | group = {group}", fontsize=9)
            ax.tick_params(axis="x", labelrotation=15, labelsize=7)
            if not ax.patches:
                ax.set_yticks([])
                ax.text(0.5, 0.5, "no unseen classes: the student has seen every class", transform=ax.transAxes,
                        ha="center", va="center", fontsize=8, color="dimgray")  # fmt: skip
        row[0].set_ylabel("test accuracy (%)")
    seed_legend(axes[0][-1], view, fontsize=8)
    return finish_figure(fig, "Own vs. unseen classes, before and after distillation", caption)


def plot_curves(records: list[dict], caption: str, key: str = "test_acc") -> plt.Figure:
    """Student test accuracy (%) per distillation epoch, one line per method, one panel per scenario: from
    ``kdlib.study.stats.MIN_SEEDS_FOR_INTERVAL`` seeds on, the mean with its percentile-bootstrap band (accuracies stay
    within 0-100%); below that, one line per seed. Seeds whose teacher is weaker than the student are dashed."""
    rows = [
        {
            "scenario": r["config"]["scenario"],
            "method": method_label(r["config"]["method"]),
            "seed": r["config"].get("seed", n),
            "epoch": c["epoch"],
            "accuracy": 100 * c[key],
            WEAKER_TEACHER: bool(r.get("metrics", {}).get("teacher_acc", math.nan)
                                 < r.get("metrics", {}).get("acc_before", math.nan)),
        }
        for n, r in enumerate(records)
        for c in r.get("curves") or []
        if key in c
    ]  # fmt: skip
    data = pd.DataFrame(rows)
    view = SeedView.of(data, ["scenario", "method", "epoch"], ["accuracy"], bounded=True)
    scenarios, methods = list(dict.fromkeys(data["scenario"])), method_order(data["method"])
    palette = method_palette(methods)
    ncols = min(5, len(scenarios))
    nrows = math.ceil(len(scenarios) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.8 * nrows), squeeze=False, sharey=True)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        for method in methods:
            _draw_curve(ax, data[(data["scenario"] == scenario) & (data["method"] == method)], palette[method], view)
        ax.set_title(f"scenario = {scenario}", fontsize=10)
        ax.set_xlabel("distillation epoch")
    for ax in axes.flat[len(scenarios) :]:
        fig.delaxes(ax)
    for row in axes:
        row[0].set_ylabel("student test accuracy (%)")
    handles = [Line2D([], [], color=palette[m], marker="o", markersize=3, label=m) for m in methods]
    if view.intervals:
        handles.append(Line2D([], [], color="gray", alpha=0.3, linewidth=6, label=wrapped(f"line: {view.note}")))
    else:
        handles.append(Line2D([], [], linestyle="", label=wrapped(view.note.replace("each point", "each line"))))
    if view.weak:
        handles.append(Line2D([], [], color="black", linestyle="--", label=wrapped(f"dashed: {WEAKER_TEACHER_LABEL}")))
    legend_beside(axes[0][-1], handles=handles, fontsize=8, title="method", title_fontsize=8)
    return finish_figure(fig, "Learning curves of the student", caption)


def _draw_curve(ax: plt.Axes, part: pd.DataFrame, color: Any, view: SeedView) -> None:
    """One method's curve in one panel: the mean and its band, or each seed's line (and the weak-teacher seeds)."""
    if part.empty:
        return
    if view.intervals:
        by_epoch = part.groupby("epoch")["accuracy"]
        epochs = sorted(by_epoch.groups)
        bands = np.array([view.interval(by_epoch.get_group(e)) for e in epochs])
        ax.fill_between(epochs, bands[:, 0], bands[:, 1], color=color, alpha=0.2, linewidth=0)
        ax.plot(epochs, by_epoch.mean().loc[epochs], color=color, marker="o", markersize=3)
    for _, line in part.groupby("seed", sort=True):
        weak = bool(line[WEAKER_TEACHER].iloc[0])
        if view.intervals and not weak:
            continue
        line = line.sort_values("epoch")
        ax.plot(line["epoch"], line["accuracy"], color=color, linestyle="--" if weak else "-",
                marker=None if view.intervals else "o", markersize=3, linewidth=1.0)  # fmt: skip


def tuning_grids(records: Iterable[dict]) -> tuple[dict[str, list[dict]], dict[str, list[tuple[float, float]]]]:
    """From tuned KD's records: per scenario, every seed's grid rows (each with its ``seed``) and the (T, alpha)
    each seed chose (``best_temperature``, ``best_alpha``), for ``plot_tuning_heatmaps(grids, caption,
    chosen=chosen)``."""
    grids: dict[str, list[dict]] = {}
    chosen: dict[str, list[tuple[float, float]]] = {}
    for record in sorted(records, key=lambda r: r["config"].get("seed", 0)):
        if not record.get("grid"):
            continue
        scenario, seed = record["config"]["scenario"], record["config"].get("seed", 0)
        grids.setdefault(scenario, []).extend({**row, "seed": seed} for row in record["grid"])
        metrics = record.get("metrics", {})
        if "best_temperature" in metrics and "best_alpha" in metrics:
            chosen.setdefault(scenario, []).append((metrics["best_temperature"], metrics["best_alpha"]))
    return grids, chosen


def chosen_point(rows: Sequence[dict]) -> tuple[float, float]:
    """The (T, alpha) a search chose from its rows, as the search does: the highest ``val_acc``; with successive
    halving (rows with a ``rung``) only among the points of the last rung, ties to the lower ``val_loss`` (5
    decimals), then to the earlier grid point; without rungs, ties to the earlier point."""
    last = max((row.get("rung", 0) for row in rows), default=0)
    halving = any("rung" in row for row in rows)
    finalists = [(i, row) for i, row in enumerate(rows) if row.get("rung", 0) == last]

    def rank(item: tuple[int, dict]) -> tuple[float, float, int]:
        i, row = item
        loss = round(row.get("val_loss", 0.0), 5) if halving else 0.0
        return -row["val_acc"], loss, i

    best = min(finalists, key=rank)[1]
    return best["temperature"], best["alpha"]


def _rung_labels(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per (T, alpha) cell: where the cell's score (of some seed) comes from an early rung of successive halving,
    the share of the training steps it was scored after ("25%", or "25/100%" over seeds), else ""; None without
    rungs (a full grid search: every cell scored after all the steps)."""
    if "rung" not in frame:
        return None
    last = frame["rung"].max()

    def label(part: pd.DataFrame) -> str:
        if (part["rung"] == last).all():
            return ""
        if "budget" in part:
            return "/".join(f"{100 * b:.0f}" for b in sorted(set(part["budget"]))) + "%"
        return "rung " + "/".join(str(int(r)) for r in sorted(set(part["rung"])))

    cells = {key: label(part) for key, part in frame.groupby(["temperature", "alpha"])}
    return pd.Series(cells).unstack()


def plot_tuning_heatmaps(
    grids: dict[str, list[dict]],
    caption: str,
    value: str = "val_gain",
    chosen: dict[str, Sequence[tuple[float, float]]] | None = None,
) -> plt.Figure:
    """(T, alpha) heatmaps of a grid score on the validation split (in points) per scenario, with the point tuned
    KD chose outlined.

    ``grids``: per scenario, the rows of one seed's search (a record's ``grid``), or of several seeds, each row with
    its ``seed`` (``tuning_grids``): the cells then show the mean over seeds, and the outline marks the point chosen
    on most seeds (ties: the earlier grid point), "chosen on k of n seeds" in the panel's title; it need not be the
    best mean. ``chosen``: per scenario, the (T, alpha) each seed chose (its record's ``best_temperature``,
    ``best_alpha``); without it, the choice is read off the rows (``chosen_point``). Successive halving scores a
    point dropped early at its rung: such a cell shows the share of the training steps behind its score, and the
    choice is made among the last rung's points, so an early cell can show a higher score than the outlined one.
    """
    n = len(grids)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n + 0.8, 3.2), squeeze=False)
    seeds_seen, halving = set(), False
    for ax, (label, rows) in zip(axes[0], grids.items(), strict=True):
        frame = pd.DataFrame(rows)
        if "seed" not in frame:
            frame["seed"] = 0
        table = frame.pivot_table(index="temperature", columns="alpha", values=value, aggfunc="mean") * 100
        rungs = _rung_labels(frame)
        text = table.map(lambda v: f"{v:.1f}")
        if rungs is not None:
            halving = True
            rungs = rungs.reindex(index=table.index, columns=table.columns).fillna("")
            text = text.where(rungs == "", text + "\n" + rungs)
        sns.heatmap(table, ax=ax, annot=text, fmt="", cmap="RdBu", center=0, annot_kws={"fontsize": 6.5},
                    cbar_kws={"label": f"{value.replace('_', ' ')} (points)"})  # fmt: skip
        picks = list(chosen[label]) if chosen and label in chosen else [
            chosen_point(part.to_dict("records")) for _, part in frame.groupby("seed", sort=False)
        ]  # fmt: skip
        counts = Counter(picks)
        grid_order = list(dict.fromkeys(zip(frame["temperature"], frame["alpha"], strict=True)))
        top = max(counts.values())
        best = next(p for p in [*grid_order, *counts] if counts.get(p) == top)
        i, j = list(table.index).index(best[0]), list(table.columns).index(best[1])
        ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, edgecolor="black", linewidth=2))
        seeds_seen.add(len(picks))
        title = label if len(picks) == 1 else f"{label}\noutlined: chosen on {top} of {len(picks)} seeds"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("alpha (weight of the KD term)")
        ax.set_ylabel("temperature T")
    return finish_figure(
        fig, "Tuned KD: the (T, α) grid", caption, _tuning_note(value, max(seeds_seen, default=1), halving)
    )


def _tuning_note(value: str, n_seeds: int, halving: bool) -> str:
    what = f"{value.replace('_', ' ')} on the validation split"
    if n_seeds > 1:
        cells = (f"Cells: {what}, mean of {n_seeds} seeds. Outlined: the (T, α) tuned KD chose on most seeds (ties:"
                 " the earlier grid point); it need not be the best mean.")  # fmt: skip
    else:
        cells = f"Cells: {what}, one seed. Outlined: the (T, α) tuned KD chose (the best validation accuracy"
        cells += " at the last rung)." if halving else ")."
    if not halving:
        return cells + " Every cell was scored after all the training steps (full grid search)."
    return (cells + " Successive halving: a cell with a % was dropped early and scored after that share of the"
            " training steps; the others after all of them, and the choice is among those.")  # fmt: skip


def plot_routing(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Data-partitioning KD: share of transfer samples distilled from the teacher vs. the frozen student (shares: the
    percentile-bootstrap interval over seeds from ``kdlib.study.stats.MIN_SEEDS_FOR_INTERVAL`` seeds on, which stays
    within 0-100%; each seed a point below that)."""
    data = frame.assign(teacher=100 * frame["routing_teacher_0"], student=100 * frame["routing_initial_student"],
                        **{WEAKER_TEACHER: weaker_teacher(frame)})  # fmt: skip
    view = SeedView.of(data, ["scenario"], ["teacher", "student"], bounded=True)
    ids = [c for c in ("scenario", "seed", WEAKER_TEACHER) if c in data]
    long = data.melt(id_vars=ids, value_vars=["teacher", "student"], var_name="source", value_name="share")
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    draw_seed_bars(ax, long, Bars("scenario", "share", "source"), view)
    ax.set_ylabel("transfer samples routed (%)")
    ax.set_xlabel("scenario")
    ax.set_ylim(0, 105)
    seed_legend(ax, view, fontsize=8, title="source", title_fontsize=8)
    return finish_figure(fig, "Data-partitioning KD: which model teaches which samples", caption)


TRANSFER_LABELS = {"student": "student's own data", "union": "both parties' data", "public": "public split"}


def plot_routing_by_transfer(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Data-partitioning KD under each transfer set: % of samples distilled from the teacher, one bar group per
    transfer set and one bar per scenario (seeds and intervals as in ``plot_routing``).

    ``frame``: DP-KD runs with columns transfer, scenario and routing_teacher_0 (a fraction).
    """
    data = frame.assign(teacher=100 * frame["routing_teacher_0"], transfer=frame["transfer"].map(TRANSFER_LABELS),
                        **{WEAKER_TEACHER: weaker_teacher(frame)})  # fmt: skip
    view = SeedView.of(data, ["transfer", "scenario"], ["teacher"], bounded=True)
    order = [label for label in TRANSFER_LABELS.values() if label in set(data["transfer"])]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    draw_seed_bars(ax, data, Bars("transfer", "teacher", "scenario", order), view)
    ax.set_ylabel("samples taught by the teacher (%)")
    ax.set_xlabel("transfer set")
    ax.set_ylim(0, 105)
    seed_legend(ax, view, fontsize=8, title="scenario", title_fontsize=8)
    return finish_figure(fig, "Data-partitioning KD: the teacher's share under each transfer set", caption)


def plot_selection_criteria(frame: pd.DataFrame, caption: str) -> plt.Figure:
    """Tuned KD's test gain (points) per scenario when (T, alpha) is chosen on the held-out split vs. on a split
    of the transfer data (seeds as in ``plot_method_gains``). ``frame``: tuned runs with a ``selection`` column."""
    labels = {"holdout": "held-out split (task's label mix)", "transfer": "split of the transfer data"}
    data = frame.assign(points=100 * frame["gain"], criterion=frame["selection"].map(labels),
                        **{WEAKER_TEACHER: weaker_teacher(frame)})  # fmt: skip
    view = SeedView.of(data, ["scenario", "criterion"], ["points"])
    hues = [v for k, v in labels.items() if k in set(frame["selection"])]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    draw_seed_bars(ax, data, Bars("scenario", "points", "criterion", hue_order=hues), view)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("tuned KD test gain (points)")
    ax.set_xlabel("scenario")
    seed_legend(ax, view, fontsize=8, title="(T, α) chosen on", title_fontsize=8)
    return finish_figure(fig, "Tuned KD: what each selection criterion gains on the test set", caption)
