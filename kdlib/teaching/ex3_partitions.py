"""Exercise 3, partitions: checks of the learner's Dirichlet split and heatmap reading, with the model answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from kdlib.data.partition import PartitionSpec, partition_indices, partition_stats
from kdlib.teaching.common import call_learner, check_answers, fail, need_callable, ok


def _toy_labels() -> np.ndarray:
    """600 labels, 60 of each of 10 classes, in a seeded random order."""
    return np.random.default_rng(123).permutation(np.repeat(np.arange(10), 60)).astype(np.int64)


def _check_split(parts: object, labels: np.ndarray, num_parties: int, context: str) -> list[np.ndarray]:
    """Raise a plain-words error unless ``parts`` is one index array per party covering every sample once."""
    n, num_classes = labels.size, int(labels.max()) + 1
    if isinstance(parts, np.ndarray) or not isinstance(parts, list | tuple):
        raise fail(
            f"Your dirichlet_split returned a {type(parts).__name__} {context}; return a list with one index array "
            "per party."
        )
    if len(parts) != num_parties:
        raise fail(
            f"Your dirichlet_split returned {len(parts)} parts {context}; expected one per party ({num_parties})."
        )
    arrays = []
    for party, part in enumerate(parts):
        part = np.asarray(part)
        if part.dtype == bool:
            raise fail(f"Party {party} is a boolean mask {context}; return sample indices (np.flatnonzero(mask)).")
        if part.ndim != 1 or (part.size and not np.issubdtype(part.dtype, np.integer)):
            raise fail(
                f"Party {party} is an array of {part.dtype} with shape {part.shape} {context}; each party must be a "
                "1-D array of integer sample indices (np.int64)."
            )
        if part.size and (part.min() < 0 or part.max() >= n):
            bad = int(part.max() if part.max() >= n else part.min())
            raise fail(f"Party {party} holds index {bad} {context}, outside [0, {n}): indices point into labels.")
        arrays.append(part.astype(np.int64))
    flat = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    if flat.size and flat.max() < num_classes and np.unique(flat).size < flat.size:
        raise fail(
            f"Your parts hold only the values 0..{num_classes - 1} {context}: that looks like labels. Return sample "
            "indices (positions in labels), e.g. np.flatnonzero(labels == c) for the samples of class c."
        )
    counts = np.bincount(flat, minlength=n)
    for party, part in enumerate(arrays):
        if np.unique(part).size < part.size:
            values, times = np.unique(part, return_counts=True)
            raise fail(
                f"Party {party} holds sample {int(values[times > 1][0])} more than once {context}: draw without "
                "replacement (shuffle each class's indices, then cut them into consecutive pieces)."
            )
    twice = np.flatnonzero(counts > 1)
    if twice.size:
        holders = [p for p, part in enumerate(arrays) if twice[0] in part]
        raise fail(
            f"{twice.size} samples are in two parties or more {context}, e.g. sample {int(twice[0])} is in parties "
            f"{holders}: each sample goes to exactly one party."
        )
    never = np.flatnonzero(counts == 0)
    if never.size:
        raise fail(
            f"{never.size} of {n} samples were never assigned {context} (e.g. sample {int(never[0])}, class "
            f"{int(labels[never[0]])}). If you rounded each party's share down, the leftovers are lost: cut each "
            "class at its cumulative shares (np.cumsum(p)[:-1] * n, as np.split cuts) so every sample lands somewhere."
        )
    for party, part in enumerate(arrays):
        if part.size == 0:
            raise fail(
                f"Party {party} is empty {context}: redraw the shares until every party has at least one sample "
                "(kdlib.data.partition redraws up to 100 times)."
            )
    return arrays


def _mean_heterogeneity(split: Callable[[int], list[np.ndarray]], labels: np.ndarray, seeds: range) -> float:
    return float(np.mean([partition_stats(labels, split(seed)).heterogeneity for seed in seeds]))


def _class_share_spread(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """How much a party's share of a class varies from class to class (0: every class split alike)."""
    counts = partition_stats(labels, parts).counts
    shares = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    return float(shares.std(axis=1).mean())


def check_dirichlet_split(fn: Callable[[np.ndarray, int, float, int], list[np.ndarray]]) -> bool:
    """Check ``fn(labels, num_parties, alpha, seed) -> list of index arrays``, a Dirichlet label-skew split.

    Every sample must be in exactly one party, no party empty (even 8 parties at alpha=0.02), the same seed must
    give the same split, and label skew (kdlib's heterogeneity) must grow as alpha shrinks, like kdlib.data.partition's.
    """
    name = "dirichlet_split"
    need_callable(fn, name)
    labels = _toy_labels()

    def run(num_parties: int, alpha: float, seed: int) -> list[np.ndarray]:
        where = f"dirichlet_split(labels, num_parties={num_parties}, alpha={alpha:g}, seed={seed})"
        out = call_learner(fn, name, (labels.copy(), num_parties, alpha, seed), where)
        return _check_split(out, labels, num_parties, f"(num_parties={num_parties}, alpha={alpha:g}, seed={seed})")

    run(4, 0.5, 0)
    first, again = run(4, 0.5, 3), run(4, 0.5, 3)
    if any(not np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(first, again, strict=True)):
        raise fail(
            "Two calls with seed=3 gave different splits: draw every random number from "
            "rng = np.random.default_rng(seed) (not np.random.* or an unseeded generator), so a split can be rerun."
        )
    other = run(4, 0.5, 4)
    if all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(first, other, strict=True)):
        raise fail("seed=3 and seed=4 gave the same split: build your generator from the seed argument.")
    alphas, seeds = (100.0, 1.0, 0.1), range(5)
    yours = {a: _mean_heterogeneity(lambda seed, a=a: run(2, a, seed), labels, seeds) for a in alphas}
    reference = {
        a: _mean_heterogeneity(
            lambda seed, a=a: partition_indices(labels, PartitionSpec("dirichlet", 2, alpha=a, min_size=1), seed),
            labels,
            seeds,
        )
        for a in alphas
    }
    shown = (
        "heterogeneity at alpha = 100, 1, 0.1: yours "
        + ", ".join(f"{yours[a]:.2f}" for a in alphas)
        + "; kdlib's "
        + ", ".join(f"{reference[a]:.2f}" for a in alphas)
    )
    if yours[100.0] > yours[0.1] + 0.2:
        raise fail(
            "Skew falls as alpha shrinks, the wrong way round (" + shown + "): small alpha must mean strong label "
            "skew. Pass alpha itself to rng.dirichlet([alpha] * num_parties), not 1 / alpha."
        )
    skewed = [run(2, 0.1, seed) for seed in seeds]
    if np.mean([_class_share_spread(labels, parts) for parts in skewed]) < 0.1:
        sizes = [part.size for parts in skewed for part in parts]
        if np.std(sizes) > 0.1 * np.mean(sizes):
            raise fail(
                "At alpha=0.1 party sizes vary, but every class is shared among the parties in the same proportions "
                "(" + shown + "). Draw a fresh share vector rng.dirichlet([alpha] * num_parties) for EACH class, not "
                "one for the whole data set."
            )
        raise fail(
            "Your split has no label skew at alpha=0.1 (" + shown + "): it ignores the labels, like an IID shuffle. "
            "Split each class separately, by shares drawn from Dirichlet(alpha, ..., alpha)."
        )
    if not (yours[0.1] > yours[1.0] > yours[100.0]) or yours[100.0] > 0.2 or yours[0.1] < 0.5:
        raise fail(
            "Label skew should grow steadily as alpha shrinks, near IID at alpha=100 and strong at 0.1 ("
            + shown
            + "). Draw each class's shares from Dirichlet(alpha, ..., alpha) over the parties."
        )
    for seed in range(6):  # 8 parties, alpha=0.02: a single draw often leaves a party empty
        run(8, 0.02, seed)
    return ok(
        f"{name}: every sample in exactly one party, no party empty (even 8 parties at alpha=0.02), same seed → same "
        f"split, and skew grows as alpha shrinks ({shown})."
    )


def _key_alpha(key: str) -> float | None:
    try:
        return float(str(key).split("=")[-1])
    except ValueError:
        return None


def check_heatmap_reading(answers: Mapping[str, Any], counts: Mapping[str, np.ndarray], focus_class: int = 3) -> bool:
    """Check a reading of ``plot_partition_heatmaps(counts, ...)`` (party x class count matrices per split).

    ``answers["most_even"]``: the split (a key of ``counts``, or its alpha) closest to IID;
    ``answers["holder"]``: the party holding the most images of ``focus_class`` in the last (most skewed) split.
    """
    answers = check_answers(answers, ("most_even", "holder"), "answers")
    labels = list(counts)
    het = {key: _count_heterogeneity(np.asarray(m)) for key, m in counts.items()}
    picked = answers["most_even"]
    if not isinstance(picked, str | int | float) or picked not in counts:
        by_alpha = [k for k in labels if isinstance(picked, int | float) and _key_alpha(k) == float(picked)]
        if not by_alpha:
            raise fail(f"answers['most_even'] = {picked!r} is not one of the heatmaps: {labels}.")
        picked = by_alpha[0]
    problems = []
    even = min(het, key=het.get)
    if het[picked] > het[even] + 1e-9:
        problems.append(
            f"'{picked}' is not the most even split: its heterogeneity is {het[picked]:.2f}, '{even}' has "
            f"{het[even]:.2f}. An even split looks alike in every row (each party holds every class in the same "
            "proportion); a skewed one has cells that are bright in one row and dark in the other."
        )
    skewed = labels[-1]
    matrix = np.asarray(counts[skewed])
    holder = answers["holder"]
    column = matrix[:, focus_class]
    if not isinstance(holder, int | np.integer) or isinstance(holder, bool):
        problems.append(f"answers['holder'] should be a party number (0 to {len(column) - 1}); got {holder!r}.")
    elif not 0 <= holder < len(column):
        problems.append(
            f"There are only {len(column)} parties (rows 0 to {len(column) - 1}); you answered {holder}. Rows are "
            f"parties and columns are classes: find column {focus_class}, then the brightest cell in it."
        )
    elif column[holder] < column.max():
        best = int(column.argmax())
        problems.append(
            f"In '{skewed}', column {focus_class}: party {holder} holds {int(column[holder])} images, party {best} "
            f"holds {int(column[best])}. Read down column {focus_class} and pick the brightest cell (the printed "
            "count when it is shown)."
        )
    if problems:
        raise fail("\n".join(f"• {p}" for p in problems))
    return ok(
        f"Right: '{even}' is the most even split (heterogeneity {het[even]:.2f}), and in '{skewed}' party "
        f"{int(column.argmax())} holds most of class {focus_class} ({int(column.max())} of {int(column.sum())} images)."
    )


def _count_heterogeneity(matrix: np.ndarray) -> float:
    """kdlib's heterogeneity of a party x class count matrix (rebuilt as labels and index arrays)."""
    parts, start = [[] for _ in range(matrix.shape[0])], 0
    for cls in range(matrix.shape[1]):
        for party in range(matrix.shape[0]):
            parts[party].append(np.arange(start, start + int(matrix[party, cls])))
            start += int(matrix[party, cls])
    labels = np.repeat(np.arange(matrix.shape[1]), matrix.sum(axis=0))
    return partition_stats(labels, [np.concatenate(p).astype(np.int64) for p in parts]).heterogeneity


# ---------------------------------------------------------------------------------------------- model answers
def solution_dirichlet_split(labels: np.ndarray, num_parties: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Per class, cut the shuffled samples by shares drawn from Dirichlet(alpha); redraw while a party is empty."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    for _attempt in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_parties)]
        for cls in np.unique(labels):
            samples = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet([alpha] * num_parties)
            cuts = (np.cumsum(shares)[:-1] * len(samples)).astype(int)
            for party, piece in enumerate(np.split(samples, cuts)):
                parts[party].append(piece)
        split = [np.sort(np.concatenate(pieces)) for pieces in parts]
        if min(len(p) for p in split) > 0:
            return split
    raise ValueError(f"no split with every party non-empty after 1000 draws at alpha={alpha}")


def solution_heatmap_answers(counts: Mapping[str, np.ndarray], focus_class: int = 3) -> dict[str, Any]:
    """What a careful reader sees: the heatmap whose rows look most alike, and the brightest cell of the column."""
    most_even = min(counts, key=lambda key: _count_heterogeneity(np.asarray(counts[key])))
    return {"most_even": most_even, "holder": int(np.asarray(counts[list(counts)[-1]])[:, focus_class].argmax())}
