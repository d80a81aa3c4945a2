"""Split a labelled data set among parties, the way federated-learning studies do.

Four kinds of split, each described by a frozen :class:`PartitionSpec`:

``iid``
    A seeded shuffle cut into equal shares (sizes differ by at most one), like Flower's ``IidPartitioner``.
``dirichlet``
    For each class, party shares are drawn from ``Dirichlet(c, ..., c)`` with ``c`` the spec's ``concentration``;
    a small concentration means strong label skew. Draws are repeated until every party has ``min_size`` samples, and
    ``self_balancing`` stops feeding parties that already hold more than an equal share. Same names and
    meaning as Flower's ``DirichletPartitioner`` (its ``alpha`` is our ``concentration``; ``min_partition_size``,
    ``self_balancing``).
``class_disjoint``
    Pathological label skew: each party holds a few whole classes, like Flower's ``PathologicalPartitioner``
    (``classes_per_party`` plays the part of its ``num_classes_per_partition``). Samples of a class
    shared by several parties are split evenly among them.
``quantity_skew``
    IID labels but unequal party sizes, like Flower's ``SizePartitioner``: explicit relative ``sizes``, or
    sizes proportional to ``(i + 1) ** skew_power`` for party ``i``.

The code is written for kdlib; only the names and semantics follow Flower (``flwr-datasets``) so that
Flower users feel at home. :func:`partition_indices` returns one sorted ``int64`` index array per party,
:func:`partition_stats` measures how heterogeneous a split is, and :func:`parse_partition` reads the short
text form used on command lines and in papermill parameters (``"iid"``, ``"dirichlet:0.5"``,
``"disjoint"``, ``"disjoint:3"``, ``"disjoint:0-4|5-9"``, ``"quantity:1.5"``, ``"quantity:1,2,7"``).
"""

from __future__ import annotations

import numpy as np

from kdlib.data.partition_spec import KINDS, PartitionSpec, fmt_float, parse_partition
from kdlib.data.partition_stats import PartitionStats, check_labels, partition_stats, party_classes_seen
from kdlib.errors import KDConfigError
from kdlib.validation import is_int

__all__ = [
    "KINDS",
    "PartitionSpec",
    "PartitionStats",
    "parse_partition",
    "partition_indices",
    "partition_stats",
    "party_classes_seen",
]

DIRICHLET_ATTEMPTS = 100
"""How many Dirichlet draws :func:`partition_indices` tries before giving up on ``min_size``."""


# -------------------------------------------------------------------------------------------- splitting
def _class_pools(labels: np.ndarray, pool: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Indices from ``pool`` grouped by class, each group in ascending order."""
    order = pool[np.argsort(labels[pool], kind="stable")]
    bounds = np.cumsum(np.bincount(labels[pool], minlength=num_classes))[:-1]
    return np.split(order, bounds)


def _subsample(labels: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """All indices when ``fraction == 1``, else a stratified random share (per class, rounded)."""
    everything = np.arange(labels.size, dtype=np.int64)
    if fraction == 1.0:
        return everything
    kept = [
        rng.permutation(group)[: round(fraction * group.size)]
        for group in _class_pools(labels, everything, num_classes)
    ]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def _split_iid(pool: np.ndarray, num_parties: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(pool), num_parties)


def _split_by_counts(pool: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    return np.split(rng.permutation(pool), np.cumsum(counts)[:-1])


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (ties go to lower indices)."""
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def _dirichlet_draw(
    groups: list[np.ndarray], spec: PartitionSpec, total: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One Dirichlet draw: each class split among parties by its own share vector."""
    num_parties = spec.num_parties
    shares: list[list[np.ndarray]] = [[] for _ in range(num_parties)]
    held = np.zeros(num_parties, dtype=np.int64)
    for group in groups:
        props = rng.dirichlet(np.full(num_parties, spec.concentration))
        if spec.self_balancing:
            open_parties = held < total / num_parties
            if open_parties.any():
                props = np.where(open_parties, props, 0.0)
        props = props / props.sum() if props.sum() > 0 else np.full(num_parties, 1.0 / num_parties)
        cuts = (np.cumsum(props)[:-1] * group.size).astype(np.int64)
        for party, piece in enumerate(np.split(rng.permutation(group), cuts)):
            shares[party].append(piece)
            held[party] += piece.size
    return [np.concatenate(s) if s else np.empty(0, np.int64) for s in shares]


def _split_dirichlet(
    labels: np.ndarray, pool: np.ndarray, spec: PartitionSpec, num_classes: int, rng: np.random.Generator
) -> list[np.ndarray]:
    need = max(spec.min_size, 1)
    if need * spec.num_parties > pool.size:
        raise KDConfigError(
            "min_size",
            spec.min_size,
            f"at most {pool.size // spec.num_parties} for {pool.size} samples "
            f"among {spec.num_parties} parties; lower min_size",
        )
    groups = _class_pools(labels, pool, num_classes)
    for _ in range(DIRICHLET_ATTEMPTS):
        parts = _dirichlet_draw(groups, spec, pool.size, rng)
        if min(p.size for p in parts) >= need:
            return parts
    raise KDConfigError(
        "min_size",
        spec.min_size,
        f"a size every party can reach, but {DIRICHLET_ATTEMPTS} Dirichlet draws at concentration "
        f"{fmt_float(spec.concentration)} never gave all {spec.num_parties} parties >= {need} samples; raise the "
        "concentration or lower min_size",
    )


def _disjoint_assignment(spec: PartitionSpec, num_classes: int) -> tuple[tuple[int, ...], ...]:
    """Class list per party for ``class_disjoint``."""
    parties = spec.num_parties
    if spec.party_classes is not None:
        bad = sorted({c for g in spec.party_classes for c in g if c >= num_classes})
        if bad:
            raise KDConfigError(
                "party_classes", spec.party_classes, f"class indices in [0, {num_classes}); got {bad}"
            )
        return spec.party_classes
    if spec.classes_per_party is None:
        if parties > num_classes:
            raise KDConfigError(
                "num_parties", parties, f"at most num_classes={num_classes} for an even class split"
            )
        return tuple(
            tuple(int(c) for c in block) for block in np.array_split(np.arange(num_classes), parties)
        )
    k = spec.classes_per_party
    if k > num_classes:
        raise KDConfigError("classes_per_party", k, f"at most num_classes={num_classes}")
    return tuple(tuple((i * k + j) % num_classes for j in range(k)) for i in range(parties))


def _split_disjoint(
    labels: np.ndarray, pool: np.ndarray, spec: PartitionSpec, num_classes: int, rng: np.random.Generator
) -> list[np.ndarray]:
    assignment = _disjoint_assignment(spec, num_classes)
    groups = _class_pools(labels, pool, num_classes)
    shares: list[list[np.ndarray]] = [[] for _ in assignment]
    for cls, group in enumerate(groups):
        holders = [p for p, classes in enumerate(assignment) if cls in classes]
        if holders:
            pieces = np.array_split(rng.permutation(group), len(holders))
            for party, piece in zip(holders, pieces, strict=True):
                shares[party].append(piece)
    return [np.concatenate(s) if s else np.empty(0, np.int64) for s in shares]


def _split_quantity(pool: np.ndarray, spec: PartitionSpec, rng: np.random.Generator) -> list[np.ndarray]:
    if spec.sizes is not None:
        weights = np.asarray(spec.sizes, dtype=float)
    else:
        weights = np.arange(1, spec.num_parties + 1, dtype=float) ** spec.skew_power
    counts = _largest_remainder(weights, pool.size)
    if counts.min() == 0:
        raise KDConfigError(
            "sizes" if spec.sizes is not None else "skew_power",
            spec.sizes or spec.skew_power,
            f"a skew that leaves every party >= 1 of {pool.size} samples; use milder skew or more data",
        )
    return _split_by_counts(pool, counts, rng)


def _check_seed(seed: int) -> None:
    if not is_int(seed, numpy=True) or seed < 0:
        raise KDConfigError("seed", seed, "an integer >= 0")


def partition_indices(
    labels: np.ndarray, spec: PartitionSpec, seed: int = 0, num_classes: int | None = None
) -> list[np.ndarray]:
    """Split sample indices among ``spec.num_parties`` parties.

    Returns one sorted ``int64`` array per party. No sample goes to two parties; with ``fraction=1``
    every sample is assigned for ``iid``/``dirichlet``/``quantity_skew``, while ``class_disjoint`` assigns
    exactly the samples of classes some party holds. Deterministic for a given ``seed``.
    ``num_classes`` defaults to ``max(labels) + 1``. Raises :class:`KDConfigError` for bad input, more
    parties than samples, class indices out of range and parties left empty.
    """
    if not isinstance(spec, PartitionSpec):
        raise KDConfigError("spec", spec, "a PartitionSpec (see parse_partition)")
    _check_seed(seed)
    labels, num_classes = check_labels(labels, num_classes)
    rng = np.random.default_rng(seed)
    pool = _subsample(labels, spec.fraction, num_classes, rng)
    if spec.num_parties > pool.size:
        raise KDConfigError(
            "num_parties", spec.num_parties, f"at most the number of samples used ({pool.size})"
        )
    if spec.kind == "iid":
        parts = _split_iid(pool, spec.num_parties, rng)
    elif spec.kind == "dirichlet":
        parts = _split_dirichlet(labels, pool, spec, num_classes, rng)
    elif spec.kind == "class_disjoint":
        parts = _split_disjoint(labels, pool, spec, num_classes, rng)
    else:
        parts = _split_quantity(pool, spec, rng)
    for party, part in enumerate(parts):
        if part.size == 0:
            raise KDConfigError(
                "spec", spec.text, f"a split that gives every party samples; party {party} got none"
            )
    return [np.sort(part).astype(np.int64) for part in parts]
