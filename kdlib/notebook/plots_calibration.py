"""The reliability diagram: per confidence bin, how often the student is right, before and after distillation,
from the bins every record stores (``kdlib.core.calibration.reliability_bins``), pooled over seeds."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from kdlib.core.calibration import ECE_BINS
from kdlib.notebook.figure_layout import finish_figure
from kdlib.study.methods import method_label


def pooled_bins(records: Sequence[dict], when: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(count, accuracy, confidence)`` per bin over ``records`` (``when``: "before" or "after"), each bin's
    accuracy and confidence weighted by its sample count in each record."""
    count = np.zeros(ECE_BINS)
    right = np.zeros(ECE_BINS)
    sure = np.zeros(ECE_BINS)
    for record in records:
        bins = record["reliability"][when]
        c = np.asarray(bins["count"], dtype=float)
        count += c
        right += np.nan_to_num(np.asarray(bins["accuracy"], dtype=float)) * c
        sure += np.nan_to_num(np.asarray(bins["confidence"], dtype=float)) * c
    safe = np.maximum(count, 1)
    return count, np.where(count > 0, right / safe, np.nan), np.where(count > 0, sure / safe, np.nan)


def expected_error(count: np.ndarray, accuracy: np.ndarray, confidence: np.ndarray) -> float:
    """The ECE of pooled bins: the count-weighted mean of ``|accuracy - confidence|``."""
    used = count > 0
    return float((count[used] * np.abs(accuracy[used] - confidence[used])).sum() / count[used].sum())


def plot_reliability(records: Sequence[dict], caption: str) -> plt.Figure:
    """Reliability diagrams before and after one method's distillation in one scenario (``records``: that
    method's runs, one per seed, each with ``reliability`` bins)."""
    usable = [r for r in records if "reliability" in r]
    if not usable:
        raise ValueError("these records hold no reliability bins (made before they were stored): run them again")
    method, scenario = usable[0]["config"]["method"], usable[0]["config"]["scenario"]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8), sharey=True)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for ax, when in zip(axes, ("before", "after"), strict=True):
        count, accuracy, confidence = pooled_bins(usable, when)
        used = count > 0  # an empty bin draws no bar (a bar of 0 would read as "always wrong")
        ax.bar(edges[:-1][used], accuracy[used], width=1 / ECE_BINS, align="edge", color="tab:blue",
               edgecolor="white", label="accuracy in bin")  # fmt: skip
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
        ax.scatter(confidence, accuracy, s=12, color="black", zorder=3, label="mean confidence in bin")
        ece = 100 * expected_error(count, accuracy, confidence)
        ax.set_title(f"{when} {method_label(method)}: ECE {ece:.1f} points", fontsize=10)
        ax.set_xlabel("confidence of the top class")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy (fraction correct)")
    axes[1].legend(fontsize=7, loc="upper left")
    n = len(usable)
    title = f"Reliability of the student, {scenario}: {ECE_BINS} equal-width bins, {n} seed{'s' * (n != 1)} pooled"
    return finish_figure(fig, title, caption)
