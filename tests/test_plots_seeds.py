"""Honest figures at any seed count (issue 22, item 10): below ``MIN_SEEDS_FOR_INTERVAL`` seeds each seed is a
point and no interval is drawn; from it on, the mean with its 95% interval, which for shares (routing, flip rates,
accuracies) stays within 0-100%; a seed whose teacher is weaker than the student has its own marker; the legend says
which is drawn; the tuning heatmap says what its outlined cell is and which rung each score comes from."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402

from kdlib.notebook import (
    plots,  # noqa: E402
    plots_federated,
)
from kdlib.study.methods import Method, method_label, registered  # noqa: E402
from kdlib.study.stats import (  # noqa: E402
    MIN_SEEDS_FOR_INTERVAL,
    bootstrap_interval,
    drawing_note,
    mean_interval,
    proportion_interval,
    seeds_count,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ---- reading a drawn figure --------------------------------------------------------------------------------------


def error_bars(ax: plt.Axes) -> list[tuple[float, float, float]]:
    """``(x, low, high)`` of every vertical two-point line of the axes (an error bar; caps are horizontal)."""
    found = []
    for line in ax.lines:
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if len(x) == 2 and x[0] == x[1] and y[0] != y[1]:
            found.append((float(x[0]), float(min(y)), float(max(y))))
    return sorted(found)


def bar_heights(ax: plt.Axes) -> list[float]:
    return [p.get_height() for p in ax.patches if p.get_width() > 0 and np.isfinite(p.get_height())]


def seed_points(ax: plt.Axes, weak: bool | None = None) -> np.ndarray:
    """Offsets of the per-seed scatter points (``weak``: only the black weak-teacher markers, or only the others)."""
    points = [np.empty((0, 2))]
    for collection in ax.collections:
        if not isinstance(collection, PathCollection):
            continue
        black = bool(np.allclose(collection.get_facecolor()[0][:3], 0.0))
        if weak is None or black == weak:
            points.append(np.asarray(collection.get_offsets(), float))
    return np.concatenate(points)


def legend_texts(fig: plt.Figure) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    return [t.get_text().replace("\n", " ") for legend in legends for t in legend.get_texts()]


def gains(values_per_method: dict[str, list[float]], **extra: list) -> pd.DataFrame:
    rows = []
    for method, values in values_per_method.items():
        for seed, value in enumerate(values):
            rows.append({"scenario": "iid", "method": method, "seed": seed, "gain": value,
                         **{k: v[seed] for k, v in extra.items()}})  # fmt: skip
    return pd.DataFrame(rows)


# ---- the rule and its words --------------------------------------------------------------------------------------


def test_the_threshold_is_five_seeds_and_the_note_says_what_is_drawn():
    assert MIN_SEEDS_FOR_INTERVAL == 5
    assert drawing_note(2) == "each point one seed (2 seeds), no interval"
    assert drawing_note(2, 4) == "each point one seed (2-4 seeds), no interval"
    assert drawing_note(1) == "one seed, no interval"
    assert drawing_note(6) == "mean, 95% t-interval over 6 seeds"
    assert drawing_note(5, 10, bounded=True) == "mean, 95% percentile-bootstrap interval over 5-10 seeds"
    assert seeds_count(1) == "1 seed" and seeds_count(3) == "3 seeds"


def test_the_bootstrap_interval_stays_within_the_values_and_is_reproducible():
    shares = [0.0, 0.0, 0.0, 0.0, 0.0, 0.02]
    low, high = bootstrap_interval(shares)
    assert 0.0 <= low <= np.mean(shares) <= high <= 0.02
    assert mean_interval(shares).low < 0  # the t-interval of the same shares runs below 0%
    assert bootstrap_interval(shares) == (low, high)  # a fixed resampling seed: the same figure every time
    assert bootstrap_interval([0.3]) == (0.3, 0.3) and bootstrap_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_interval([])))


@pytest.mark.parametrize(("hits", "n"), [(0, 3), (3, 3), (1, 3)])
def test_a_wilson_interval_at_0_and_n_hits_stays_within_0_and_1(hits, n):
    low, high = proportion_interval(hits, n)
    assert 0.0 <= low < high <= 1.0
    assert low <= hits / n <= high


# ---- gain figures: points below five seeds, the t-interval from five on -------------------------------------------


def test_two_seeds_are_drawn_as_points_without_an_interval():
    frame = gains({"standard": [0.01, 0.05], "dml": [-0.02, 0.0]})
    fig = plots.plot_method_gains(frame, "caption")
    ax = fig.axes[0]
    assert error_bars(ax) == []  # a t-interval over 2 seeds (12.7 standard errors) is not drawn
    points = seed_points(ax)
    assert sorted(points[:, 1]) == pytest.approx([-2.0, 0.0, 1.0, 5.0])  # every seed, in points
    assert bar_heights(ax) == pytest.approx([3.0, -1.0])  # the bars are still the means
    assert any("each point one seed (2 seeds), no interval" in t for t in legend_texts(fig))


def test_six_seeds_are_drawn_as_the_mean_with_its_t_interval():
    values = [0.010, 0.030, 0.026, 0.015, 0.022, 0.035]
    fig = plots.plot_method_gains(gains({"standard": values}), "caption")
    ax = fig.axes[0]
    interval = mean_interval(np.array(values) * 100)
    ((_, low, high),) = error_bars(ax)
    assert (low, high) == pytest.approx((interval.low, interval.high))
    assert bar_heights(ax) == pytest.approx([interval.mean])
    assert len(seed_points(ax)) == 0  # one regime: the seeds are summarised, not drawn
    assert any("mean, 95% t-interval over 6 seeds" in t for t in legend_texts(fig))


@pytest.mark.parametrize("n", [MIN_SEEDS_FOR_INTERVAL - 1, MIN_SEEDS_FOR_INTERVAL])
def test_the_switch_happens_at_the_threshold(n):
    fig = plots.plot_method_gains(gains({"standard": list(np.linspace(0.01, 0.03, n))}), "caption")
    ax = fig.axes[0]
    assert (len(error_bars(ax)) == 1) == (n >= MIN_SEEDS_FOR_INTERVAL)
    assert (len(seed_points(ax)) == n) == (n < MIN_SEEDS_FOR_INTERVAL)


def test_one_bar_with_few_seeds_turns_the_whole_figure_to_points():
    frame = gains({"standard": [0.01, 0.02, 0.03, 0.02, 0.01, 0.02], "dml": [0.01, 0.02, 0.03, 0.02, 0.01, 0.02]})
    frame = frame[(frame["method"] == "standard") | (frame["seed"] < 2)]  # DML has 2 seeds, standard KD 6
    fig = plots.plot_method_gains(frame, "caption")
    assert error_bars(fig.axes[0]) == [] and len(seed_points(fig.axes[0])) == 8
    assert any("(2-6 seeds)" in t for t in legend_texts(fig))


def test_a_seed_with_a_teacher_weaker_than_the_student_has_its_own_marker():
    weak_teacher = [0.60, 0.60, 0.34]  # seed 2's teacher is below the student's 0.50 before distillation
    frame = gains({"standard": [0.02, 0.03, -0.10]}, teacher_acc=weak_teacher, acc_before=[0.5, 0.5, 0.5])
    fig = plots.plot_method_gains(frame, "caption")
    ax = fig.axes[0]
    assert seed_points(ax, weak=True)[:, 1] == pytest.approx([-10.0])
    assert sorted(seed_points(ax, weak=False)[:, 1]) == pytest.approx([2.0, 3.0])
    assert any("teacher is weaker than the student" in t for t in legend_texts(fig))


def test_with_enough_seeds_a_second_regime_still_shows_its_seeds():
    n = 6
    teacher = [0.6] * (n - 1) + [0.3]
    frame = gains({"standard": [0.02] * (n - 1) + [-0.10]}, teacher_acc=teacher, acc_before=[0.5] * n)
    fig = plots.plot_method_gains(frame, "caption")
    ax = fig.axes[0]
    assert len(error_bars(ax)) == 1  # the interval, and over it every seed, the weak one marked
    assert len(seed_points(ax, weak=False)) == n - 1 and len(seed_points(ax, weak=True)) == 1


def test_no_teacher_columns_means_no_weak_marker():
    frame = gains({"standard": [0.02, 0.03]})
    assert not plots.weaker_teacher(frame).any()
    fig = plots.plot_method_gains(frame, "caption")
    assert len(seed_points(fig.axes[0], weak=True)) == 0
    assert not any("weaker" in t for t in legend_texts(fig))


def test_method_labels_and_order_come_from_the_registry():
    def run(_):  # never called: the figure only reads the registry
        raise AssertionError

    with registered(Method("toy_late", "toy method (test)", (), run)):
        frame = gains({"toy_late": [0.01, 0.02], "dp_not_registered": [0.0, 0.01], "standard": [0.02, 0.03]})
        fig = plots.plot_method_gains(frame, "caption")
        texts = legend_texts(fig)
        order = [texts.index(method_label("standard")), texts.index("toy method (test)")]
        assert order == sorted(order)  # registry order, not the frame's
        assert texts.index("dp_not_registered") > order[1]  # an unregistered name stands for itself, after
        palette = plots.method_palette(["standard KD", "toy method (test)"])
        assert plots.method_palette(["standard KD"])["standard KD"] == palette["standard KD"]  # a fixed colour


def test_selection_criteria_follow_the_rule_too():
    frame = pd.DataFrame({"scenario": "iid", "method": "tuned", "selection": "holdout", "seed": range(6),
                          "gain": [0.01, 0.02, 0.03, 0.02, 0.01, 0.02]})  # fmt: skip
    fig = plots.plot_selection_criteria(frame, "caption")
    assert len(error_bars(fig.axes[0])) == 1
    fig = plots.plot_selection_criteria(frame[frame["seed"] < 3], "caption")
    assert error_bars(fig.axes[0]) == [] and len(seed_points(fig.axes[0])) == 3


# ---- proportions stay within 0-100% ------------------------------------------------------------------------------


def routing(shares: list[float], scenario: str = "disjoint") -> pd.DataFrame:
    return pd.DataFrame({"scenario": scenario, "seed": range(len(shares)), "routing_teacher_0": shares,
                         "routing_initial_student": [1 - s for s in shares]})  # fmt: skip


def test_routing_shares_near_0_and_100_percent_keep_their_intervals_within_bounds():
    shares = [0.0, 0.0, 0.0, 0.0, 0.0, 0.02]  # t-interval: about -0.5 to 1.2%, and 98.8 to 100.5%
    fig = plots.plot_routing(routing(shares), "caption")
    bars = error_bars(fig.axes[0])
    assert len(bars) == 2
    for _, low, high in bars:
        assert 0.0 <= low <= high <= 100.0
    assert any("percentile-bootstrap interval over 6 seeds" in t for t in legend_texts(fig))


def test_routing_with_two_seeds_draws_them_as_points():
    fig = plots.plot_routing(routing([0.0, 0.1]), "caption")
    ax = fig.axes[0]
    assert error_bars(ax) == []
    assert sorted(seed_points(ax)[:, 1]) == pytest.approx([0.0, 10.0, 90.0, 100.0])


def test_routing_by_transfer_uses_the_bootstrap_with_enough_seeds():
    frame = pd.concat([routing([1.0, 1.0, 1.0, 1.0, 0.96, 1.0]).assign(transfer="union"),
                       routing([0.0] * 6).assign(transfer="student")])  # fmt: skip
    fig = plots.plot_routing_by_transfer(frame, "caption")
    bars = error_bars(fig.axes[0])
    assert len(bars) == 1 and 0 <= bars[0][1] and bars[0][2] <= 100.0  # the all-zero bar has no spread to draw


def test_knowledge_flip_rates_keep_their_intervals_within_bounds_and_two_seeds_are_points():
    rows = [{"scenario": "iid", "method": "finetune", "seed": s, "knowledge_gain": g,
             "knowledge_loss": 0.0 if s else 0.01} for s, g in enumerate([0.0, 0.0, 0.0, 0.0, 0.01, 0.0])]  # fmt: skip
    fig = plots.plot_knowledge_flips(pd.DataFrame(rows), "caption")
    for ax in fig.axes:
        for _, low, high in error_bars(ax):
            assert 0.0 <= low <= high <= 100.0
    assert sum(len(error_bars(ax)) for ax in fig.axes) == 2
    fig = plots.plot_knowledge_flips(pd.DataFrame(rows[:2]), "caption")
    assert all(error_bars(ax) == [] for ax in fig.axes)
    assert sum(len(seed_points(ax)) for ax in fig.axes) == 4


def test_own_unseen_names_before_and_after_even_when_the_first_legend_panel_is_empty():
    frame = pd.DataFrame([{"scenario": "iid", "method": "finetune", "seed": s, "own_before": 0.5, "own_after": 0.6,
                           "unseen_before": np.nan, "unseen_after": np.nan} for s in range(2)])  # fmt: skip
    fig = plots.plot_own_unseen(frame, "caption")
    texts = legend_texts(fig)
    assert "before" in texts and "after" in texts
    own = next(ax for ax in fig.axes if "own" in ax.get_title())
    assert len(seed_points(own)) == 4 and error_bars(own) == []


def test_party_accuracy_with_one_row_per_cell_says_one_seed():
    roles = ("teacher", "student")
    frame = pd.DataFrame([{"scenario": "iid", "role": r, "group": "all", "accuracy": 50.0} for r in roles])
    fig = plots.plot_party_accuracy(frame, "caption")
    assert "one seed, no interval" in legend_texts(fig)
    assert all(error_bars(ax) == [] and len(seed_points(ax)) == 0 for ax in fig.axes)


# ---- curves ------------------------------------------------------------------------------------------------------


def curve_records(n_seeds: int, weak_seed: int | None = None) -> list[dict]:
    return [
        {"config": {"scenario": "iid", "method": "standard", "seed": seed},
         "metrics": {"teacher_acc": 0.3 if seed == weak_seed else 0.6, "acc_before": 0.5},
         "curves": [{"epoch": e, "test_acc": 0.3 + 0.01 * e + 0.01 * seed} for e in (1, 2, 3)]}
        for seed in range(n_seeds)
    ]  # fmt: skip


def test_curves_draw_one_line_per_seed_below_five_seeds_and_a_band_from_five_on():
    fig = plots.plot_curves(curve_records(2), "caption")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and not any(isinstance(c, PolyCollection) for c in ax.collections)
    assert any("each line one seed (2 seeds)" in t for t in legend_texts(fig))
    fig = plots.plot_curves(curve_records(6), "caption")
    ax = fig.axes[0]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(ax.lines) == 1  # the mean
    assert ax.lines[0].get_ydata() == pytest.approx([100 * (0.3 + 0.01 * e + 0.025) for e in (1, 2, 3)])
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() >= 31.0 - 1e-9 and ys.max() <= 38.0 + 1e-9  # within the seeds' range (bootstrap)


def test_curves_dash_the_seed_whose_teacher_is_weaker():
    fig = plots.plot_curves(curve_records(6, weak_seed=5), "caption")
    dashed = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(100 * (0.31 + 0.05))
    assert any("weaker than the student" in t for t in legend_texts(fig))


# ---- the tuning heatmap -----------------------------------------------------------------------------------------


def halving_rows(seed: int | None = None, best_final: tuple[float, float] = (4.0, 0.5)) -> list[dict]:
    """A 2 x 2 halving grid: (1, 0.5) dropped at rung 0 with the highest score; ``best_final`` wins the last rung."""
    rows = []
    for t in (1.0, 4.0):
        for a in (0.5, 0.9):
            final = (t, a) in ((4.0, 0.5), (4.0, 0.9))
            acc = 0.9 if (t, a) == (1.0, 0.5) else 0.8 if (t, a) == best_final else 0.7
            row = {"temperature": t, "alpha": a, "val_acc": acc, "val_loss": 1.0, "val_gain": acc - 0.6,
                   "rung": 1 if final else 0, "budget": 1.0 if final else 0.25}  # fmt: skip
            rows.append(row if seed is None else {**row, "seed": seed})
    return rows


def outlines(ax: plt.Axes) -> list[tuple[float, float]]:
    return [(p.get_x(), p.get_y()) for p in ax.patches if isinstance(p, plt.Rectangle) and not p.get_fill()]


def cell_texts(ax: plt.Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def figure_note(fig: plt.Figure) -> str:
    return " ".join(t.get_text().replace("\n", " ") for t in fig.texts)


def test_the_heatmap_says_what_the_outline_is_and_which_cells_are_early_rungs():
    fig = plots.plot_tuning_heatmaps({"disjoint": halving_rows()}, "caption")
    ax = fig.axes[0]
    assert outlines(ax) == [(0, 1)]  # alpha 0.5, T 4: the last rung's best, not the early 1.0/0.5 cell
    texts = cell_texts(ax)
    assert "30.0\n25%" in texts and "20.0" in texts  # the early cell carries its share of the training steps
    note = figure_note(fig)
    assert "Outlined: the (T, α) tuned KD chose" in note and "one seed" in note
    assert "dropped early" in note and "mean of" not in note


def test_a_full_grid_heatmap_says_every_cell_had_all_the_steps():
    rows = [{k: v for k, v in r.items() if k not in ("rung", "budget")} for r in halving_rows()]
    fig = plots.plot_tuning_heatmaps({"iid": rows}, "caption")
    assert outlines(fig.axes[0]) == [(0, 0)]  # without rungs the best cell is the chosen one
    assert all("%" not in t for t in cell_texts(fig.axes[0]))
    assert "full grid search" in figure_note(fig)


def test_over_several_seeds_the_outline_is_the_point_chosen_most_often():
    rows = halving_rows(0) + halving_rows(1) + halving_rows(2, best_final=(4.0, 0.9))
    fig = plots.plot_tuning_heatmaps({"dirichlet:0.1": rows}, "caption")
    ax = fig.axes[0]
    assert outlines(ax) == [(0, 1)]  # (4, 0.5): chosen on seeds 0 and 1
    assert "chosen on 2 of 3 seeds" in ax.get_title()
    note = figure_note(fig)
    assert "mean of 3 seeds" in note and "chose on most seeds" in note and "seed 0" not in note


def test_the_records_choice_overrides_the_rows_and_tuning_grids_reads_records():
    records = [
        {"config": {"scenario": "iid", "seed": seed}, "grid": halving_rows(),
         "metrics": {"best_temperature": 4.0, "best_alpha": 0.9}}
        for seed in (1, 0)
    ]  # fmt: skip
    grids, chosen = plots.tuning_grids(records)
    assert [row["seed"] for row in grids["iid"]] == [0] * 4 + [1] * 4
    assert chosen == {"iid": [(4.0, 0.9), (4.0, 0.9)]}
    fig = plots.plot_tuning_heatmaps(grids, "caption", chosen=chosen)
    assert outlines(fig.axes[0]) == [(1, 1)]  # alpha 0.9, T 4, as the records say
    assert "chosen on 2 of 2 seeds" in fig.axes[0].get_title()


def test_chosen_point_breaks_halving_ties_by_loss_and_grid_ties_by_order():
    rows = [{"temperature": 1.0, "alpha": 0.5, "val_acc": 0.8, "val_loss": 0.9, "rung": 1},
            {"temperature": 4.0, "alpha": 0.5, "val_acc": 0.8, "val_loss": 0.7, "rung": 1},
            {"temperature": 8.0, "alpha": 0.5, "val_acc": 0.95, "val_loss": 0.1, "rung": 0}]  # fmt: skip
    assert plots.chosen_point(rows) == (4.0, 0.5)
    grid = [{k: v for k, v in r.items() if k != "rung"} for r in rows[:2]]
    assert plots.chosen_point(grid) == (1.0, 0.5)


# ---- federated figures -------------------------------------------------------------------------------------------


def fl_curves(n_seeds: int | None) -> pd.DataFrame:
    seeds = [None] if n_seeds is None else range(n_seeds)
    rows = [{"scenario": "iid", "start": "random", "round": r, "accuracy": 0.1 + 0.02 * r + 0.01 * (s or 0),
             "target": 0.3, **({} if s is None else {"seed": s})} for s in seeds for r in range(5)]  # fmt: skip
    return pd.DataFrame(rows)


def test_fl_accuracy_draws_each_seed_or_the_band():
    fig = plots_federated.plot_fl_accuracy(fl_curves(None), "caption")
    ax = fig.axes[0]
    assert len([line for line in ax.lines if line.get_linestyle() == "-"]) == 1
    fig = plots_federated.plot_fl_accuracy(fl_curves(2), "caption")
    ax = fig.axes[0]
    assert len([line for line in ax.lines if line.get_linestyle() == "-"]) == 2
    assert not any(isinstance(c, PolyCollection) for c in ax.collections)
    assert any("each line one seed (2 seeds)" in t for t in legend_texts(fig))
    fig = plots_federated.plot_fl_accuracy(fl_curves(6), "caption")
    ax = fig.axes[0]
    assert len([line for line in ax.lines if line.get_linestyle() == "-"]) == 1
    assert any(isinstance(c, PolyCollection) for c in ax.collections)


def test_fl_accuracy_draws_the_mean_target_and_says_so_when_the_seeds_targets_differ():
    def target_line(curves: pd.DataFrame) -> tuple[float, str]:
        fig = plots_federated.plot_fl_accuracy(curves, "caption")
        (line,) = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
        return line.get_ydata()[0], line.get_label()

    same = fl_curves(2)
    assert target_line(same) == (pytest.approx(30.0), "target")
    differ = same.assign(target=np.where(same["seed"] == 0, 0.30, 0.34))
    height, label = target_line(differ)
    assert height == pytest.approx(32.0) and "mean of the seeds' own targets" in label.replace("\n", " ")


def test_rounds_to_target_over_seeds_shows_each_seed_and_how_many_reached():
    summary = pd.DataFrame({"scenario": "iid", "start": "random", "seed": [0, 1, 2], "rounds_to_target": [4, np.nan, 6],
                            "reduction_pct": np.nan})  # fmt: skip
    fig = plots_federated.plot_rounds_to_target(summary, "caption", 10)
    ax = fig.axes[0]
    assert bar_heights(ax) == pytest.approx([5.0])  # the mean of the two seeds that reached it
    assert sorted(seed_points(ax)[:, 1]) == pytest.approx([4.0, 6.0, 10.0])  # the third at the budget, as a cross
    assert any(t.get_text() == "2/3\nreached" for t in ax.texts)
