"""Every figure of ``plots`` and ``plots_federated`` (kdlib.notebook), drawn from small synthetic frames shaped like the
study's, is checked for the layout faults of issue 16: a legend over the data, a caption or title clipped at the
figure's edges or wrapped with a word left alone, a bar of height 0 that looks like a missing one, and tick labels
drawn over each other."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backend_bases import RendererBase  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from kdlib.fl.starts import start_names  # noqa: E402
from kdlib.notebook import (
    plots,  # noqa: E402
    plots_federated,
)

SCENARIOS = ("iid", "dirichlet:0.1", "disjoint")
SEEDS = (0, 1)
METHODS = ("finetune", "standard", "dml", "tuned", "dp")
CAPTIONS = {
    "smoke": "CIFAR-10 (JPEG re-encoded), smoke scale: 2,000 train / 1,000 test images; teacher resnet8, student "
    "cnn-small; mean of 2 seeds, 95% t-interval; supervised variant; transfer set: student's own data",
    "long": "CIFAR-10 (JPEG re-encoded), paper scale: 50,000 train / 10,000 test images; teacher resnet56, student "
    "resnet20; changed: pretrain.epochs=10 (paper: 60), distill.epochs=4 (paper: 20), grid_alphas=0.1,0.5 "
    "(paper: 0.1,0.25,0.5,0.75,0.9); mean of 3 seeds, 95% t-interval",
}
NEAR_PX = 15  # how close (in pixels at the default dpi) a "0" label must be to its zero-height bar


# ---- the checks: generic, for any figure -----------------------------------------------------------------------


def _inside(box: Bbox, ax: Axes, renderer: RendererBase) -> Bbox | None:
    """The part of ``box`` inside the axes' area, or None when nothing of it is (or it is not finite)."""
    if not np.all(np.isfinite(box.get_points())):
        return None
    return Bbox.intersection(box, ax.get_window_extent(renderer))


def _patch_boxes(ax: Axes, renderer: RendererBase) -> list[Bbox]:
    """Display extents of the axes' visible patches (bars, outlines) clipped to the axes."""
    boxes = []
    for patch in ax.patches:
        if patch.get_visible():
            box = _inside(patch.get_window_extent(renderer), ax, renderer)
            if box is not None:
                boxes.append(box)
    return boxes


def _line_points(ax: Axes, renderer: RendererBase, samples: int = 40) -> np.ndarray:
    """Display coordinates of the points of every visible line of the axes, with points along each segment too
    (an error bar is two points far apart), restricted to the axes' area."""
    area = ax.get_window_extent(renderer)
    points = [np.empty((0, 2))]
    for line in ax.lines:
        if not line.get_visible():
            continue
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), float))
        points.append(xy[np.all(np.isfinite(xy), axis=1)])
        for a, b in zip(xy[:-1], xy[1:], strict=True):
            if np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and line.get_linestyle() not in ("None", ""):
                t = np.linspace(0, 1, samples)[:, None]
                points.append(a + t * (b - a))
    xy = np.concatenate(points)
    keep = (xy[:, 0] >= area.x0) & (xy[:, 0] <= area.x1) & (xy[:, 1] >= area.y0) & (xy[:, 1] <= area.y1)
    return xy[keep]


def _legends(fig: plt.Figure) -> list[tuple[Legend, list[Axes]]]:
    """Each legend with the axes it belongs to: its own axes, or every axes for a figure legend."""
    found = [(legend, list(fig.axes)) for legend in fig.legends]
    found += [(ax.get_legend(), [ax]) for ax in fig.axes if ax.get_legend() is not None]
    return [(legend, axes) for legend, axes in found if legend.get_visible()]


def assert_legends_clear_of_data(fig: plt.Figure) -> None:
    """No legend covers a bar or a point of a line inside the axes it belongs to (a legend outside passes)."""
    renderer = fig.canvas.get_renderer()
    for legend, axes in _legends(fig):
        box = legend.get_window_extent(renderer)
        assert fig.bbox.x0 - 0.5 <= box.x0 and box.x1 <= fig.bbox.x1 + 0.5, "legend cut off at the side"
        for ax in axes:
            covered = [b for b in _patch_boxes(ax, renderer) if b.overlaps(box)]
            assert not covered, f"legend over {len(covered)} bar(s) of {ax.get_title()!r}"
            xy = _line_points(ax, renderer)
            hit = (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)
            assert not hit.any(), f"legend over a line of {ax.get_title()!r} at {xy[hit][:3].tolist()}"


def _figure_texts(fig: plt.Figure) -> list[plt.Text]:
    texts = [t for t in fig.texts if t.get_visible() and t.get_text()]
    if fig._suptitle is not None:  # get_suptitle() gives only the string; the extent needs the Text
        texts.append(fig._suptitle)
    return texts


def assert_caption_whole_and_balanced(fig: plt.Figure, caption: str) -> None:
    """The caption and the title lie inside the figure (no line wider than it), and the caption's wrapping leaves
    no line with one word of its own nor a line much shorter than the others."""
    renderer = fig.canvas.get_renderer()
    for text in _figure_texts(fig):
        box = text.get_window_extent(renderer)
        where = repr(text.get_text())
        assert box.x0 >= fig.bbox.x0 - 0.5 and box.x1 <= fig.bbox.x1 + 0.5, f"clipped at the side: {where}"
        assert box.y0 >= fig.bbox.y0 - 0.5 and box.y1 <= fig.bbox.y1 + 0.5, f"clipped at top or bottom: {where}"
    (drawn,) = [t for t in fig.texts if t.get_text().replace("\n", " ") == caption]
    lines = drawn.get_text().split("\n")
    if len(lines) > 1:
        assert all(len(line.split()) > 1 for line in lines), lines
        assert min(map(len, lines)) >= 0.4 * max(map(len, lines)), lines


def assert_zero_bars_labelled(fig: plt.Figure) -> int:
    """Every bar of height 0 has a text annotation just above or below it, within its width. Returns how many
    zero-height bars there are."""
    renderer = fig.canvas.get_renderer()
    zeros = 0
    for ax in fig.axes:
        texts = [t.get_window_extent(renderer) for t in ax.texts if t.get_visible() and t.get_text().strip()]
        for bar in ax.patches:
            if not isinstance(bar, Rectangle) or bar.get_width() <= 0 or bar.get_height() != 0:
                continue
            zeros += 1
            box = bar.get_window_extent(renderer)
            above_or_below = [t for t in texts if box.x0 - 1 <= (t.x0 + t.x1) / 2 <= box.x1 + 1]
            near = [t for t in above_or_below if min(abs(t.y0 - box.y1), abs(t.y1 - box.y0)) < NEAR_PX]
            assert near, f"a zero-height bar of {ax.get_title()!r} at x={bar.get_x():.2f} has no label"
    return zeros


def assert_tick_labels_apart(fig: plt.Figure) -> None:
    """The tick labels of one axis do not overlap each other (e.g. two rotated row labels of a short heatmap)."""
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for axis, labels, locs in ((ax.xaxis, ax.get_xticklabels(), ax.get_xticks()),
                                   (ax.yaxis, ax.get_yticklabels(), ax.get_yticks())):  # fmt: skip
            lo, hi = sorted(axis.get_view_interval())
            boxes = [
                label.get_window_extent(renderer)
                for label, loc in zip(labels, locs, strict=False)
                if label.get_visible() and label.get_text() and lo <= loc <= hi
            ]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert not a.overlaps(b), f"overlapping tick labels in {ax.get_title()!r}"


# ---- synthetic frames shaped like the study's ------------------------------------------------------------------


def _per_seed(value: float, seed: int, spread: float = 0.02) -> float:
    """The value of one seed: ``value`` +- ``spread`` / 2 over the two seeds (a 0 stays 0 in every seed)."""
    return value if value == 0 else value + spread * (seed - 0.5)


def method_gains_frame() -> pd.DataFrame:
    base = {"finetune": 0.02, "standard": -0.07, "dml": 0.0, "tuned": 0.03, "dp": 0.01}
    return pd.DataFrame(
        [{"scenario": s, "method": m, "seed": seed, "gain": _per_seed(g * (1 + i), seed)}
         for i, s in enumerate(SCENARIOS) for m, g in base.items() for seed in SEEDS]
    )  # fmt: skip


def flips_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [{"scenario": s, "method": m, "seed": seed, "knowledge_gain": _per_seed(0.05 * j, seed),
          "knowledge_loss": _per_seed(0.2 if m == "standard" else 0.0, seed)}
         for s in SCENARIOS for j, m in enumerate(METHODS) for seed in SEEDS]
    )  # fmt: skip


def own_unseen_frame() -> pd.DataFrame:
    rows = []
    for s in SCENARIOS:
        for m in ("finetune", "standard"):
            for seed in SEEDS:
                unseen = np.nan if s == "iid" else 0.0  # iid: the student has seen every class
                after = unseen if m == "finetune" else unseen + 0.25
                rows.append({"scenario": s, "method": m, "seed": seed, "own_before": 0.45, "own_after": 0.3,
                             "unseen_before": unseen, "unseen_after": after})  # fmt: skip
    return pd.DataFrame(rows)


def curve_records() -> list[dict]:
    return [
        {"config": {"scenario": s, "method": m, "seed": seed},
         "curves": [{"epoch": e, "test_acc": 0.3 + 0.02 * e + 0.03 * seed} for e in (1, 2, 3)]}
        for s in SCENARIOS for m in ("finetune", "standard") for seed in SEEDS
    ]  # fmt: skip


def tuning_grids() -> dict[str, list[dict]]:
    return {
        s: [{"temperature": t, "alpha": a, "val_acc": 0.3 + 0.01 * i * j, "val_gain": 0.01 * (i - j)}
            for i, t in enumerate((1.0, 4.0, 16.0)) for j, a in enumerate((0.25, 0.5, 0.9))]
        for s in SCENARIOS
    }  # fmt: skip


def routing_frame() -> pd.DataFrame:
    teacher = {"iid": 0.44, "dirichlet:0.1": 0.05, "disjoint": 0.0}
    return pd.DataFrame(
        [{"scenario": s, "seed": seed, "routing_teacher_0": _per_seed(t, seed),
          "routing_initial_student": 1 - _per_seed(t, seed)} for s, t in teacher.items() for seed in SEEDS]
    )  # fmt: skip


def routing_by_transfer_frame() -> pd.DataFrame:
    """The smoke run's shares and seed spread: the error bars fill the top, so a legend inside lands on the bars."""
    shares = {
        "student": {"iid": 0.44, "dirichlet:0.1": 0.05, "disjoint": 0.0},
        "union": {"iid": 0.56, "dirichlet:0.1": 0.46, "disjoint": 0.5},
        "public": {"iid": 0.53, "dirichlet:0.1": 0.32, "disjoint": 0.5},
    }
    return pd.DataFrame(
        [{"transfer": t, "scenario": s, "seed": seed, "routing_teacher_0": _per_seed(v, seed, 0.06)}
         for t, row in shares.items() for s, v in row.items() for seed in SEEDS]
    )  # fmt: skip


def selection_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [{"scenario": s, "method": "tuned", "selection": sel, "seed": seed, "gain": _per_seed(g, seed)}
         for s in SCENARIOS for sel, g in (("holdout", 0.02), ("transfer", 0.0 if s == "disjoint" else 0.01))
         for seed in SEEDS]
    )  # fmt: skip


def fl_curves() -> pd.DataFrame:
    return pd.DataFrame(
        [{"scenario": s, "start": start, "round": r, "accuracy": 0.1 + 0.02 * r + 0.05 * k, "target": 0.3}
         for s in ("iid", "dirichlet:0.1") for k, start in enumerate(start_names()) for r in range(11)]
    )  # fmt: skip


def fl_summary() -> pd.DataFrame:
    """Rounds to target per scenario and start: one start never reaches it (NaN), one reaches it at the start (0)."""
    rounds = {"iid": {"random": 8, "one_client": 1, "kd_avg": 3, "kd_dp": 10},
              "dirichlet:0.1": {"random": 8, "one_client": np.nan, "kd_avg": 6, "kd_dp": 0}}  # fmt: skip
    rows = []
    for s, per_start in rounds.items():
        for start, r in per_start.items():
            reduction = np.nan if np.isnan(r) else 100 * (1 - r / per_start["random"])
            upload = 0.0 if start == "random" else 0.5
            rows.append({"scenario": s, "start": start, "rounds_to_target": r, "reduction_pct": reduction,
                         "rounds": 10, "mb_to_target": np.nan if np.isnan(r) else 0.96 * r + upload,
                         "kd_wall_s": 2.5 if start.startswith("kd") else 0.0, "fl_wall_s": 9.5})  # fmt: skip
    return pd.DataFrame(rows)


FIGURES: dict[str, Callable[[str], plt.Figure]] = {
    "partition_heatmaps": lambda c: plots.plot_partition_heatmaps(
        {s: np.array([[170] * 5 + [0] * 5, [0] * 5 + [170] * 5]) for s in SCENARIOS}, [f"class{i}" for i in range(10)],
        c),  # fmt: skip
    "heterogeneity": lambda c: plots.plot_heterogeneity({"iid": 0.0, "dirichlet:0.1": 0.87, "disjoint": 1.0}, c),
    "party_accuracy": lambda c: plots.plot_party_accuracy(
        pd.DataFrame([{"scenario": s, "role": role, "group": g, "accuracy": a}
                      for role in ("teacher", "student") for s in SCENARIOS
                      for g, a in (("all", 35.0), ("own", 70.0), ("unseen", 0.0))]), c),  # fmt: skip
    "method_gains": lambda c: plots.plot_method_gains(method_gains_frame(), c),
    "method_gains_two": lambda c: plots.plot_method_gains(
        method_gains_frame().query("method in ('finetune', 'standard')"), c),  # fmt: skip
    "knowledge_flips": lambda c: plots.plot_knowledge_flips(flips_frame(), c),
    "own_unseen": lambda c: plots.plot_own_unseen(own_unseen_frame(), c),
    "curves": lambda c: plots.plot_curves(curve_records(), c),
    "tuning_heatmaps": lambda c: plots.plot_tuning_heatmaps(tuning_grids(), c),
    "routing": lambda c: plots.plot_routing(routing_frame(), c),
    "routing_by_transfer": lambda c: plots.plot_routing_by_transfer(routing_by_transfer_frame(), c),
    "selection_criteria": lambda c: plots.plot_selection_criteria(selection_frame(), c),
    "fl_accuracy": lambda c: plots_federated.plot_fl_accuracy(fl_curves(), c),
    "rounds_to_target": lambda c: plots_federated.plot_rounds_to_target(fl_summary(), c, 10),
    "fl_cost": lambda c: plots_federated.plot_fl_cost(fl_summary(), c),
}


def test_every_public_plot_function_is_covered():
    public = {n for module in (plots, plots_federated) for n in dir(module) if n.startswith("plot_")}
    covered = {"plot_" + name for name in FIGURES} | {"plot_method_gains"}
    assert public <= covered, public - covered


@pytest.fixture(params=sorted(FIGURES), ids=sorted(FIGURES))
def drawn(request) -> Iterator[tuple[str, Callable[[str], plt.Figure]]]:
    figures = []

    def draw(caption: str) -> plt.Figure:
        fig = FIGURES[request.param](caption)
        fig.canvas.draw()
        figures.append(fig)
        return fig

    yield request.param, draw
    for fig in figures:
        plt.close(fig)


@pytest.mark.parametrize("caption", sorted(CAPTIONS))
def test_figure_layout(drawn, caption):
    name, draw = drawn
    fig = draw(CAPTIONS[caption])
    assert_legends_clear_of_data(fig)
    assert_caption_whole_and_balanced(fig, CAPTIONS[caption])
    zeros = assert_zero_bars_labelled(fig)
    assert_tick_labels_apart(fig)
    if name in ("heterogeneity", "party_accuracy", "routing", "routing_by_transfer", "own_unseen", "method_gains"):
        assert zeros > 0, "the synthetic frame has a 0 value: its bar must be there to be checked"


def test_the_legend_check_catches_a_legend_over_the_bars():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar([0, 1, 2], [1.0, 2.0, 3.0], label="bars")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(0, 3)
    fig.canvas.draw()
    with pytest.raises(AssertionError, match="legend over"):
        assert_legends_clear_of_data(fig)
    plt.close(fig)


def test_the_checks_catch_an_unlabelled_zero_bar_and_a_lone_last_word():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar([0, 1], [0.0, 2.0])
    fig.text(0.5, 0.0, "a caption\nlonely", ha="center", va="bottom")
    fig.canvas.draw()
    with pytest.raises(AssertionError, match="no label"):
        assert_zero_bars_labelled(fig)
    with pytest.raises(AssertionError):
        assert_caption_whole_and_balanced(fig, "a caption lonely")
    plt.close(fig)


def test_a_start_that_never_reached_the_target_is_named_where_its_cost_bar_would_be():
    fig = plots_federated.plot_fl_cost(fl_summary(), "a caption")
    fig.canvas.draw()
    ax = fig.axes[0]
    (label,) = [t for t in ax.texts if plots_federated.NOT_REACHED in t.get_text()]
    x = [p.get_x() + p.get_width() / 2 for p in ax.patches if p.get_width() > 0 and np.isfinite(p.get_height())]
    slot = 1 - 0.4 + 0.2 * (1 + 0.5)  # dirichlet:0.1 (second group), one client's model (second of four starts)
    assert label.get_position()[0] == pytest.approx(slot)
    assert min(abs(v - slot) for v in x) == pytest.approx(0.2)  # the slot is a gap between drawn bars, no bar on it
    plt.close(fig)


FULL_SCENARIOS = ("iid", "dirichlet:1.0", "dirichlet:0.5", "dirichlet:0.1", "disjoint")


def test_tick_labels_stay_apart_at_the_full_scales_five_scenarios(drawn, monkeypatch):
    """At ``full`` the x axis holds 5 scenario names, not smoke's 3: side-by-side panels ran them into each other."""
    monkeypatch.setitem(globals(), "SCENARIOS", FULL_SCENARIOS)
    _, draw = drawn
    fig = draw(CAPTIONS["smoke"])
    assert_tick_labels_apart(fig)
    assert_legends_clear_of_data(fig)
