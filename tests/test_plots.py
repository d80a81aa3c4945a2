"""Figure captions: a long caption (a shortened run names its departures) stays whole inside the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from kdlib.notebook.figure_layout import caption_lines
from kdlib.notebook.plots import plot_heterogeneity  # noqa: E402

LONG = (
    "CIFAR-10 (JPEG re-encoded), paper scale: 50,000 train / 10,000 test images; teacher resnet56, student "
    "resnet20; changed: pretrain.epochs=10 (paper: 60), distill.epochs=4 (paper: 20), grid_alphas=0.1,0.5 "
    "(paper: 0.1,0.25,0.5,0.75,0.9)"
)


def test_caption_lines_keep_every_word_in_order_and_respect_the_width():
    lines = caption_lines(LONG, 5.0)
    assert " ".join(lines) == LONG
    assert len(lines) > 1 and all(len(line) <= 75 for line in lines)
    assert caption_lines("short", 8.0) == ["short"]


@pytest.mark.parametrize("caption", ["CIFAR-10, smoke scale: 3,000 train / 2,000 test images", LONG])
def test_the_whole_caption_is_drawn_inside_the_figure_below_the_axes(caption):
    fig = plot_heterogeneity({"iid": 0.0, "dirichlet:0.1": 0.7, "disjoint": 1.0}, caption)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    figure_box = fig.bbox
    text = next(t for t in fig.texts if t.get_text().replace("\n", " ") == caption)
    box = text.get_window_extent(renderer)
    assert box.x0 >= figure_box.x0 and box.x1 <= figure_box.x1 and box.y0 >= figure_box.y0
    for ax in fig.axes:  # the axes (and their tick labels) sit above the caption
        assert ax.get_tightbbox(renderer).y0 >= box.y1 - 1
    plt.close(fig)


def test_caption_lines_are_balanced_so_no_word_is_left_alone():
    words = ("word " * 30).split()
    caption = " ".join(words[:-1]) + " last"  # one word past a full line at 8 inches (120 characters)
    lines = caption_lines(caption, 8.0)
    assert " ".join(lines) == caption
    assert len(lines) == 2 and abs(len(lines[0]) - len(lines[1])) <= 6, lines


def test_a_zero_bar_is_marked_and_a_missing_one_is_not():
    from kdlib.notebook.figure_layout import mark_zero_bars

    fig, ax = plt.subplots()
    ax.bar([0, 1, 2], [0.0, 5.0, float("nan")])
    assert mark_zero_bars(fig) == 1
    assert [t.get_text() for t in ax.texts] == ["0"]
    (line,) = ax.lines
    assert list(line.get_xdata()) == [-0.4, 0.4] and list(line.get_ydata()) == [0.0, 0.0]
    plt.close(fig)


def test_own_unseen_marks_a_zero_accuracy_bar():
    import pandas as pd

    from kdlib.notebook.plots import plot_own_unseen

    frame = pd.DataFrame(
        [{"scenario": "disjoint", "method": "finetune", "own_before": 0.8, "own_after": 0.7, "unseen_before": 0.0,
          "unseen_after": 0.0}, {"scenario": "disjoint", "method": "standard", "own_before": 0.8, "own_after": 0.75,
          "unseen_before": 0.0, "unseen_after": 0.1}]
    )  # fmt: skip
    fig = plot_own_unseen(frame, "a caption")
    unseen = next(ax for ax in fig.axes if "unseen" in ax.get_title())
    assert [t.get_text() for t in unseen.texts].count("0") == 3  # before (twice) and fine-tune after
    plt.close(fig)


def test_the_fl_accuracy_legend_sits_beside_the_panels_not_over_them():
    import pandas as pd

    from kdlib.fl.starts import start_names
    from kdlib.notebook.plots_federated import plot_fl_accuracy

    curves = pd.DataFrame(
        [{"scenario": s, "start": start, "round": r, "accuracy": 0.1 + 0.05 * r, "target": 0.4}
         for s in ("iid", "dirichlet:0.1") for start in start_names() for r in range(11)]
    )  # fmt: skip
    fig = plot_fl_accuracy(curves, "a caption")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.axes[-1].get_legend().get_window_extent(renderer)
    assert legend.x1 <= fig.bbox.x1
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent(renderer)), ax.get_title()
    plt.close(fig)


def test_a_figure_legend_at_the_right_does_not_cover_the_panels():
    """A figure-level legend (seaborn's catplot puts one at the right) is kept off the axes by ``finish_figure``."""
    from kdlib.notebook.figure_layout import finish_figure

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax in axes:
        ax.bar([0, 1, 2], [1.0, 2.0, 3.0], label="bars")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", title="a long legend title here")
    finish_figure(fig, "title", "a caption")
    (legend,) = fig.legends
    box = legend.get_window_extent().transformed(fig.transFigure.inverted())
    assert box.x1 <= 1.0
    assert not any(box.overlaps(ax.get_position()) for ax in fig.axes)
    plt.close(fig)


def test_the_party_accuracy_legend_sits_beside_the_panels():
    import pandas as pd

    from kdlib.notebook.plots import plot_party_accuracy

    frame = pd.DataFrame(
        [{"scenario": s, "role": role, "group": g, "accuracy": a}
         for role in ("teacher", "student") for s in ("iid", "dirichlet:0.1", "disjoint")
         for g, a in (("all", 35.0), ("own", 70.0), ("unseen", 0.0))]
    )  # fmt: skip
    fig = plot_party_accuracy(frame, "a caption")
    fig.canvas.draw()
    legend = fig.axes[-1].get_legend()
    box = legend.get_window_extent().transformed(fig.transFigure.inverted())
    assert box.x1 <= 1.0
    assert not any(box.overlaps(ax.get_position()) for ax in fig.axes)
    assert [t.get_text() for t in legend.get_texts()][:3] == ["all", "own", "unseen"]
    plt.close(fig)


def test_the_tuning_heatmap_outlines_the_halving_choice_not_an_early_rung_score():
    """With halving, a point dropped at rung 0 may score higher there than the finalist does at the end: the outline
    marks the point chosen at the last rung."""
    from kdlib.notebook.plots import plot_tuning_heatmaps

    rows = [
        {"temperature": 1.0, "alpha": 0.5, "val_acc": 0.90, "val_gain": 0.05, "rung": 0},
        {"temperature": 4.0, "alpha": 0.5, "val_acc": 0.80, "val_gain": 0.02, "rung": 1},
        {"temperature": 1.0, "alpha": 0.9, "val_acc": 0.70, "val_gain": 0.01, "rung": 0},
        {"temperature": 4.0, "alpha": 0.9, "val_acc": 0.60, "val_gain": 0.00, "rung": 0},
    ]
    fig = plot_tuning_heatmaps({"disjoint": rows}, "caption")
    outlines = [p for p in fig.axes[0].patches if isinstance(p, plt.Rectangle) and not p.get_fill()]
    assert [(o.get_x(), o.get_y()) for o in outlines] == [(0, 1)]  # column alpha=0.5, row T=4
    plt.close(fig)
