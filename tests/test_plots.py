"""Figure captions: a long caption (a shortened run names its departures) stays whole inside the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from kdlib.plots import caption_lines, plot_heterogeneity  # noqa: E402

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
