"""ipywidgets explorers. Each draws through a plain function (``draw_…``) that also works without a front end,
so papermill runs save the same figures the sliders show."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from kdlib.core.losses import distillation_term, kd_loss, soft_targets
from kdlib.data.datasets import CIFAR10_CLASSES

EXAMPLE_TEACHER_LOGITS = (1.0, 0.2, 2.5, 6.0, 1.6, 4.6, 2.2, 0.8, 0.3, 0.6)
"""A teacher's logits for a picture of a cat: sure it is a cat, and that it looks more like a dog than a ship."""
EXAMPLE_STUDENT_LOGITS = (0.6, 0.9, 1.5, 3.0, 1.2, 1.0, 1.8, 1.1, 1.4, 0.9)
EXAMPLE_LABEL = 3


def kd_terms(teacher_logits, student_logits, label: int, temperature: float, alpha: float) -> dict[str, float]:
    """The parts of the KD loss for one example: soft term (T^2 KL), hard term (CE) and the weighted total."""
    t = torch.as_tensor(teacher_logits, dtype=torch.float32).view(1, -1)
    s = torch.as_tensor(student_logits, dtype=torch.float32).view(1, -1)
    y = torch.tensor([label])
    soft = float(distillation_term(s, soft_targets(t, temperature), temperature))
    hard = float(F.cross_entropy(s, y))
    total = float(kd_loss(s, t, y, temperature, alpha))
    return {"soft (T² KL)": soft, "hard (CE)": hard, "total": total}


SMALL_PROBABILITY = 0.01
"""Bars below this probability get their value printed (at T = 1 most of the teacher's bars are invisible)."""


def draw_kd_view(
    temperature: float = 4.0,
    alpha: float = 0.5,
    teacher_logits: Sequence[float] = EXAMPLE_TEACHER_LOGITS,
    student_logits: Sequence[float] = EXAMPLE_STUDENT_LOGITS,
    label: int = EXAMPLE_LABEL,
    class_names: Sequence[str] = CIFAR10_CLASSES,
) -> plt.Figure:
    """Teacher's and student's softened distributions at T, and the loss terms at (T, alpha)."""
    t = soft_targets(torch.as_tensor(teacher_logits, dtype=torch.float32), temperature).numpy()
    s = soft_targets(torch.as_tensor(student_logits, dtype=torch.float32), temperature).numpy()
    terms = kd_terms(teacher_logits, student_logits, label, temperature, alpha)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 3, 2]})
    positions = np.arange(len(t))
    for ax, probs, who, colour in ((axes[0], t, "teacher", "tab:orange"), (axes[1], s, "student", "tab:blue")):
        bars = ax.bar(positions, probs, color=colour)
        bars[label].set_edgecolor("black")
        bars[label].set_linewidth(2)
        for pos, p in zip(positions, probs, strict=True):  # a bar too low to see still shows its value
            if p < SMALL_PROBABILITY:
                ax.text(pos, 0.02, f"{100 * p:.1g}%", ha="center", va="bottom", rotation=90, fontsize=6, color="0.3")
        ax.set_xticks(positions, class_names, rotation=90, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(f"{who}: softmax(logits / T), T = {temperature:g}", fontsize=10)
    weights = {"soft (T² KL)": alpha, "hard (CE)": 1 - alpha, "total": 1.0}
    names = list(terms)
    axes[2].bar(names, [terms[n] * weights[n] for n in names], color=["tab:orange", "tab:blue", "tab:gray"])
    axes[2].set_title(f"loss terms × weight, α = {alpha:g}", fontsize=10)
    axes[2].set_ylabel("loss (nats)")
    axes[2].tick_params(axis="x", labelsize=8)
    fig.suptitle(f"KD on one example (true class: {class_names[label]}, outlined)", fontsize=11)
    fig.text(0.5, 0.01, "Example logits chosen by hand (kdlib.notebook.widgets), not a trained model's; probabilities "
             "under "
             f"{100 * SMALL_PROBABILITY:g}% are printed on their bars; loss in nats.", ha="center", va="bottom",
             fontsize=8, color="0.35")  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def kd_explorer(temperature: float = 4.0, alpha: float = 0.5, **draw_kwargs):
    """Sliders for T and alpha, starting at the given values, that redraw ``draw_kd_view`` live (needs a Jupyter
    front end)."""
    import ipywidgets as widgets
    from IPython.display import display

    t_slider = widgets.FloatLogSlider(
        value=temperature, base=10, min=-1, max=1.5, step=0.02, description="T", continuous_update=False
    )
    a_slider = widgets.FloatSlider(
        value=alpha, min=0.0, max=1.0, step=0.05, description="alpha", continuous_update=False
    )
    out = widgets.Output()

    def redraw(_change=None) -> None:
        with out:
            out.clear_output(wait=True)
            fig = draw_kd_view(t_slider.value, a_slider.value, **draw_kwargs)
            display(fig)
            plt.close(fig)

    t_slider.observe(redraw, names="value")
    a_slider.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([t_slider, a_slider]), out])
    box.add_class("kd-explorer")
    return box


def grid_browser(grid: Sequence[dict], caption: str = ""):
    """Pick a (T, alpha) cell of a tuning grid with sliders and see its scores (needs a Jupyter front end)."""
    import ipywidgets as widgets

    temps = sorted({row["temperature"] for row in grid})
    alphas = sorted({row["alpha"] for row in grid})
    t_slider = widgets.SelectionSlider(options=temps, value=temps[0], description="T")
    a_slider = widgets.SelectionSlider(options=alphas, value=alphas[0], description="alpha")
    text = widgets.HTML()

    def show(_change=None) -> None:
        row = next(r for r in grid if r["temperature"] == t_slider.value and r["alpha"] == a_slider.value)
        cells = "".join(f"<tr><td>{k}</td><td>{v:.4g}</td></tr>" for k, v in row.items() if isinstance(v, float))
        text.value = f"<table>{cells}</table><small>{caption}</small>"

    t_slider.observe(show, names="value")
    a_slider.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([t_slider, a_slider]), text])
