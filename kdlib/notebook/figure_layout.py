"""How every figure of kdlib is laid out and saved: the caption (data set, scale, sizes, seeds) at the bottom, a note
above it where a legend cannot say what is drawn, legends beside the axes, zero-height bars marked, and PNG + SVG
written through a temporary file (a full disk leaves the previous figure, not half a new one)."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any, Protocol

import matplotlib.pyplot as plt
from matplotlib.legend import Legend
from matplotlib.patches import Rectangle

from kdlib.core.disk import writing
from kdlib.errors import KDConfigError
from kdlib.paths import figures_dir, user_folder


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


NOTE_LINE_IN = 0.14  # 8-point lines are about 0.14 inch apart


def finish_figure(fig: plt.Figure, title: str, caption: str, note: str = "") -> plt.Figure:
    """Mark the zero bars, set the title, write the caption at the bottom (grey) and, above it, ``note`` (black: what
    the figure draws, where a legend cannot say it); the figure grows by the note's height so the axes keep theirs."""
    mark_zero_bars(fig)
    fig.suptitle(title, fontsize=12)
    lines = caption_lines(caption, fig.get_figwidth())
    note_lines = caption_lines(note, fig.get_figwidth()) if note else []
    if note_lines:
        fig.set_figheight(fig.get_figheight() + NOTE_LINE_IN * len(note_lines) + 0.05)
    height = fig.get_figheight()
    fig.text(0.5, 0.005, "\n".join(lines), ha="center", va="bottom", fontsize=8, color="dimgray")
    caption_top = (0.02 + NOTE_LINE_IN * len(lines)) / height
    if note_lines:
        fig.text(0.5, caption_top, "\n".join(note_lines), ha="center", va="bottom", fontsize=8)
    bottom = min(0.45, caption_top + (NOTE_LINE_IN * len(note_lines) + 0.03 * bool(note_lines)) / height)
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
    for path, options in zip(paths, ({"dpi": 130}, {}), strict=True):
        partial = path.with_name(f".{path.name}.tmp")
        with writing(path, partial):
            fig.savefig(partial, format=path.suffix[1:], **options)
        os.replace(partial, path)  # a full disk leaves the previous figure, not half a new one
    return paths
