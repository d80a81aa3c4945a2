"""How heterogeneous a split is: label counts per party and class, and distances between label distributions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kdlib.errors import KDConfigError
from kdlib.validation import is_int

if TYPE_CHECKING:
    import pandas

__all__ = ["PartitionStats", "check_labels", "partition_stats", "party_classes_seen"]


def check_labels(labels: np.ndarray, num_classes: int | None) -> tuple[np.ndarray, int]:
    """Labels as int64 and the number of classes (``max(labels) + 1`` when not given), checked."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise KDConfigError("labels", f"array {labels.dtype} {labels.shape}", "a 1-D array of integer labels")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise KDConfigError("labels", int(labels.min()), "class indices >= 0")
    top = int(labels.max()) + 1 if labels.size else 0
    if num_classes is None:
        return labels, max(top, 1)
    if not is_int(num_classes, numpy=True) or num_classes < max(top, 1):
        raise KDConfigError("num_classes", num_classes, f"an integer >= max(label) + 1 = {max(top, 1)}")
    return labels, int(num_classes)



# ------------------------------------------------------------------------------------------------ stats
@dataclass(frozen=True, eq=False)
class PartitionStats:
    """Label counts and heterogeneity of a split.

    ``heterogeneity`` is the mean, over non-empty parties, of the total-variation distance
    ``TV(q, r) = ½·Σ_c |q_c - r_c|`` between a party's label distribution ``q`` and the pooled label
    distribution ``r`` of all *other* parties. For disjoint parties this equals the TV distance to the
    pooled (global) distribution ``g`` divided by its largest possible value ``1 - n_party / n_total``, so
    it is in [0, 1]: 0 when every party has the same label distribution, 1 when no class is shared by
    two parties. With one non-empty party it is 0. ``party_heterogeneity`` holds the per-party values.

    ``emd`` is the un-normalised mean L1 distance ``Σ_c |q_c - g_c|`` to the global distribution (the
    "EMD" of Zhao et al., 2018); it lies in [0, 2).
    """

    counts: np.ndarray
    sizes: np.ndarray
    heterogeneity: float
    emd: float
    party_heterogeneity: np.ndarray

    @property
    def num_parties(self) -> int:
        """Number of parties."""
        return int(self.counts.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return int(self.counts.shape[1])

    def to_frame(self, class_names: Sequence[str] | None = None) -> pandas.DataFrame:
        """Party x class count table (index ``party``, columns ``class``), ready for a seaborn heatmap."""
        import pandas as pd

        if class_names is None:
            columns = list(range(self.num_classes))
        elif len(class_names) != self.num_classes:
            raise KDConfigError("class_names", class_names, f"exactly {self.num_classes} names")
        else:
            columns = list(class_names)
        frame = pd.DataFrame(self.counts, columns=pd.Index(columns, name="class"))
        frame.index = pd.RangeIndex(self.num_parties, name="party")
        return frame


def _check_parts(parts: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    if isinstance(parts, np.ndarray) or not isinstance(parts, Sequence) or len(parts) == 0:
        raise KDConfigError("parts", type(parts).__name__, "a non-empty list of index arrays")
    checked = []
    for part in parts:
        part = np.asarray(part)
        if part.ndim != 1 or (part.size and not np.issubdtype(part.dtype, np.integer)):
            raise KDConfigError("parts", f"array {part.dtype} {part.shape}", "1-D integer index arrays")
        if part.size and (part.min() < 0 or part.max() >= size):
            raise KDConfigError("parts", int(part.max()), f"indices in [0, {size})")
        checked.append(part.astype(np.int64, copy=False))
    return checked


def _tv_to_rest(counts: np.ndarray) -> np.ndarray:
    """Per-party TV distance to the pooled other parties (NaN for empty parties, 0 without others)."""
    totals = counts.sum(axis=0)
    out = np.full(counts.shape[0], np.nan)
    for party, row in enumerate(counts):
        rest = totals - row
        if row.sum() == 0:
            continue
        out[party] = 0.0 if rest.sum() == 0 else 0.5 * np.abs(row / row.sum() - rest / rest.sum()).sum()
    return out


def partition_stats(
    labels: np.ndarray, parts: Sequence[np.ndarray], num_classes: int | None = None
) -> PartitionStats:
    """Counts per party and class, party sizes and heterogeneity (see :class:`PartitionStats`)."""
    labels, num_classes = check_labels(labels, num_classes)
    checked = _check_parts(parts, labels.size)
    counts = np.stack([np.bincount(labels[p], minlength=num_classes) for p in checked]).astype(np.int64)
    sizes = counts.sum(axis=1)
    if sizes.sum() == 0:
        raise KDConfigError("parts", "all empty", "at least one non-empty party")
    per_party = _tv_to_rest(counts)
    filled = sizes > 0
    glob = counts.sum(axis=0) / sizes.sum()
    l1 = np.abs(counts[filled] / sizes[filled, None] - glob).sum(axis=1)
    return PartitionStats(
        counts=counts,
        sizes=sizes,
        heterogeneity=float(np.nanmean(per_party)),
        emd=float(l1.mean()),
        party_heterogeneity=per_party,
    )


def party_classes_seen(
    labels: np.ndarray, part: np.ndarray, num_classes: int, min_count: int = 1
) -> np.ndarray:
    """Boolean mask over classes: True where ``part`` holds at least ``min_count`` samples of the class."""
    if not is_int(min_count, numpy=True) or min_count < 1:
        raise KDConfigError("min_count", min_count, "an integer >= 1")
    labels, num_classes = check_labels(labels, num_classes)
    (part,) = _check_parts([part], labels.size)
    return np.bincount(labels[part], minlength=num_classes) >= min_count
