"""Split a labelled data set among parties, the way federated-learning studies do.

Four kinds of split, each described by a frozen :class:`PartitionSpec`:

``iid``
    A seeded shuffle cut into equal shares (sizes differ by at most one), like Flower's ``IidPartitioner``.
``dirichlet``
    For each class, party shares are drawn from ``Dirichlet(alpha, ..., alpha)``; small ``alpha`` means
    strong label skew. Draws are repeated until every party has ``min_size`` samples, and
    ``self_balancing`` stops feeding parties that already hold more than an equal share. Same names and
    meaning as Flower's ``DirichletPartitioner`` (``alpha``, ``min_partition_size``, ``self_balancing``).
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

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kdlib.errors import KDConfigError

if TYPE_CHECKING:
    import pandas

__all__ = [
    "KINDS",
    "PartitionSpec",
    "PartitionStats",
    "parse_partition",
    "partition_indices",
    "partition_stats",
    "party_classes_seen",
]

KINDS: tuple[str, ...] = ("iid", "dirichlet", "class_disjoint", "quantity_skew")
DIRICHLET_ATTEMPTS = 100
"""How many Dirichlet draws :func:`partition_indices` tries before giving up on ``min_size``."""

_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "iid": (),
    "dirichlet": ("alpha", "self_balancing"),
    "class_disjoint": ("classes_per_party", "party_classes"),
    "quantity_skew": ("sizes", "skew_power"),
}
_OPTIONAL_DEFAULTS: dict[str, object] = {
    "alpha": None,
    "self_balancing": False,
    "classes_per_party": None,
    "party_classes": None,
    "sizes": None,
    "skew_power": None,
}


# ----------------------------------------------------------------------------------------------- checks
def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: float) -> str:
    """Shortest text for a float that parses back to the same value."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


# ------------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class PartitionSpec:
    """How to split a data set among ``num_parties`` parties; checked on creation.

    Fields that belong to another kind (e.g. ``alpha`` with ``kind="iid"``) are rejected rather than
    silently ignored. ``min_size`` is the smallest party a ``dirichlet`` draw may produce; every kind
    refuses to leave a party empty. ``fraction`` keeps a stratified random share of the samples (per
    class, rounded) and leaves the rest unassigned. ``quantity_skew`` with neither ``sizes`` nor
    ``skew_power`` uses ``skew_power=1.0``.
    """

    kind: str
    num_parties: int = 2
    alpha: float | None = None
    classes_per_party: int | None = None
    party_classes: tuple[tuple[int, ...], ...] | None = None
    sizes: tuple[float, ...] | None = None
    skew_power: float | None = None
    min_size: int = 10
    fraction: float = 1.0
    self_balancing: bool = field(default=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise KDConfigError("kind", self.kind, f"one of {', '.join(KINDS)}")
        if not _is_int(self.num_parties) or self.num_parties < 1:
            raise KDConfigError("num_parties", self.num_parties, "an integer >= 1")
        if not _is_int(self.min_size) or self.min_size < 0:
            raise KDConfigError("min_size", self.min_size, "an integer >= 0")
        if not _is_real(self.fraction) or not 0 < self.fraction <= 1:
            raise KDConfigError("fraction", self.fraction, "a number in (0, 1]")
        self._reject_foreign_fields()
        getattr(self, f"_check_{self.kind}")()

    def _reject_foreign_fields(self) -> None:
        own = _KIND_FIELDS[self.kind]
        for name, default in _OPTIONAL_DEFAULTS.items():
            value = getattr(self, name)
            if name not in own and value != default:
                raise KDConfigError(name, value, f"left unset for kind={self.kind!r}")

    def _check_iid(self) -> None:
        pass

    def _check_dirichlet(self) -> None:
        if not _is_real(self.alpha) or self.alpha <= 0:
            raise KDConfigError("alpha", self.alpha, "a finite number > 0 (Dirichlet concentration)")
        if not isinstance(self.self_balancing, bool):
            raise KDConfigError("self_balancing", self.self_balancing, "True or False")
        object.__setattr__(self, "alpha", float(self.alpha))

    def _check_class_disjoint(self) -> None:
        if self.classes_per_party is not None and self.party_classes is not None:
            raise KDConfigError("party_classes", self.party_classes, "unset when classes_per_party is given")
        if self.classes_per_party is not None:
            if not _is_int(self.classes_per_party) or self.classes_per_party < 1:
                raise KDConfigError("classes_per_party", self.classes_per_party, "an integer >= 1")
            object.__setattr__(self, "classes_per_party", int(self.classes_per_party))
        if self.party_classes is not None:
            object.__setattr__(self, "party_classes", self._normalised_party_classes())

    def _normalised_party_classes(self) -> tuple[tuple[int, ...], ...]:
        groups = self.party_classes
        if isinstance(groups, str | bytes) or not isinstance(groups, Sequence):
            raise KDConfigError("party_classes", groups, "a sequence with one class list per party")
        if len(groups) != self.num_parties:
            raise KDConfigError(
                "party_classes", groups, f"exactly num_parties={self.num_parties} class lists"
            )
        out = []
        for group in groups:
            if isinstance(group, str | bytes) or not isinstance(group, Sequence) or len(group) == 0:
                raise KDConfigError("party_classes", groups, "a non-empty list of class indices per party")
            if not all(_is_int(c) and c >= 0 for c in group) or len(set(group)) != len(group):
                raise KDConfigError("party_classes", groups, "distinct integer class indices >= 0 per party")
            out.append(tuple(int(c) for c in group))
        return tuple(out)

    def _check_quantity_skew(self) -> None:
        if self.sizes is not None and self.skew_power is not None:
            raise KDConfigError("skew_power", self.skew_power, "unset when sizes is given")
        if self.sizes is not None:
            sizes = self.sizes
            if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence):
                raise KDConfigError("sizes", sizes, "a sequence of relative sizes, one per party")
            if len(sizes) != self.num_parties or not all(_is_real(s) and s > 0 for s in sizes):
                raise KDConfigError("sizes", sizes, f"{self.num_parties} finite numbers > 0 (one per party)")
            object.__setattr__(self, "sizes", tuple(float(s) for s in sizes))
            return
        power = 1.0 if self.skew_power is None else self.skew_power
        if not _is_real(power) or power < 0:
            raise KDConfigError("skew_power", self.skew_power, "a finite number >= 0")
        object.__setattr__(self, "skew_power", float(power))

    @property
    def label(self) -> str:
        """Short human label for plots, e.g. ``"Dirichlet α=0.5"``."""
        if self.kind == "iid":
            return "IID"
        if self.kind == "dirichlet":
            return f"Dirichlet α={_fmt(self.alpha)}"
        if self.kind == "quantity_skew":
            return "quantity skew"
        if self.classes_per_party is not None:
            return f"class-disjoint ({self.classes_per_party}/party)"
        return "class-disjoint (custom)" if self.party_classes is not None else "class-disjoint"

    @property
    def text(self) -> str:
        """The :func:`parse_partition` form of this spec (``min_size``, ``fraction``, ... not included)."""
        if self.kind == "iid":
            return "iid"
        if self.kind == "dirichlet":
            return f"dirichlet:{_fmt(self.alpha)}"
        if self.kind == "quantity_skew":
            if self.sizes is not None:
                return "quantity:" + ",".join(_fmt(s) for s in self.sizes)
            return f"quantity:{_fmt(self.skew_power)}"
        if self.classes_per_party is not None:
            return f"disjoint:{self.classes_per_party}"
        if self.party_classes is not None:
            return "disjoint:" + "|".join(",".join(map(str, g)) for g in self.party_classes)
        return "disjoint"


# ------------------------------------------------------------------------------------------------ parse
_PARSE_HELP = (
    "iid | dirichlet:ALPHA | disjoint | disjoint:K | disjoint:0-4|5-9 | quantity:POWER | quantity:1,2,7"
)
_ALIASES = {
    "iid": "iid",
    "dirichlet": "dirichlet",
    "disjoint": "class_disjoint",
    "class_disjoint": "class_disjoint",
    "quantity": "quantity_skew",
    "quantity_skew": "quantity_skew",
}


_ASCII_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_ASCII_INT = re.compile(r"[0-9]+", re.ASCII)


def _parse_float(text: str, original: str, what: str) -> float:
    """A number written in ASCII digits (``float`` alone would take fullwidth digits, ``inf`` and ``nan``)."""
    if not _ASCII_NUMBER.fullmatch(text.strip()):
        allowed = f"{what} must be a number in ASCII digits, e.g. 0.5; forms: {_PARSE_HELP}"
        raise KDConfigError("partition", original, allowed)
    return float(text)


def _parse_class_group(group: str, original: str) -> tuple[int, ...]:
    classes: list[int] = []
    for item in group.split(","):
        item = item.strip()
        lo, sep, hi = item.partition("-")
        if not _ASCII_INT.fullmatch(lo.strip()) or (sep and not _ASCII_INT.fullmatch(hi.strip())):
            raise KDConfigError(
                "partition", original, f"class lists like '0-4|5-9' or '0,1,2|3-9'; bad item {item!r}"
            )
        start, stop = int(lo), int(hi) if sep else int(lo)
        if stop < start:
            raise KDConfigError("partition", original, f"class ranges written low-high; bad item {item!r}")
        classes.extend(range(start, stop + 1))
    return tuple(classes)


def _parse_disjoint(arg: str | None, original: str, num_parties: int) -> PartitionSpec:
    if arg is None:
        return PartitionSpec("class_disjoint", num_parties=num_parties)
    if _ASCII_INT.fullmatch(arg):
        return PartitionSpec("class_disjoint", num_parties=num_parties, classes_per_party=int(arg))
    groups = tuple(_parse_class_group(g, original) for g in arg.split("|"))
    if len(groups) != num_parties:
        raise KDConfigError(
            "partition",
            original,
            f"one class list per party: got {len(groups)} lists for num_parties={num_parties}",
        )
    return PartitionSpec("class_disjoint", num_parties=num_parties, party_classes=groups)


def _parse_quantity(arg: str | None, original: str, num_parties: int) -> PartitionSpec:
    if arg is None:
        return PartitionSpec("quantity_skew", num_parties=num_parties)
    if "," in arg:
        sizes = tuple(_parse_float(s, original, "each quantity size") for s in arg.split(","))
        return PartitionSpec("quantity_skew", num_parties=num_parties, sizes=sizes)
    power = _parse_float(arg, original, "quantity skew power")
    return PartitionSpec("quantity_skew", num_parties=num_parties, skew_power=power)


def _parse_dirichlet(arg: str | None, original: str, num_parties: int) -> PartitionSpec:
    if arg is None:
        raise KDConfigError("partition", original, "dirichlet needs alpha, e.g. 'dirichlet:0.5'")
    alpha = _parse_float(arg, original, "Dirichlet alpha")
    return PartitionSpec("dirichlet", num_parties=num_parties, alpha=alpha)


def parse_partition(text: str, num_parties: int = 2) -> PartitionSpec:
    """Read the short text form of a partition (see the module docstring); errors name ``partition``."""
    if not isinstance(text, str):
        raise KDConfigError("partition", text, f"a string: {_PARSE_HELP}")
    name, sep, arg = text.strip().lower().partition(":")
    kind = _ALIASES.get(name.strip())
    if kind is None:
        raise KDConfigError("partition", text, f"a known kind: {_PARSE_HELP}")
    arg_or_none = arg.strip() if sep else None
    if sep and not arg_or_none:
        raise KDConfigError("partition", text, f"a value after ':'; forms: {_PARSE_HELP}")
    try:
        if kind == "iid":
            if arg_or_none is not None:
                raise KDConfigError("partition", text, "'iid' without arguments")
            return PartitionSpec("iid", num_parties=num_parties)
        parser = {"dirichlet": _parse_dirichlet, "class_disjoint": _parse_disjoint}.get(kind, _parse_quantity)
        return parser(arg_or_none, text, num_parties)
    except KDConfigError as err:
        if err.field == "partition":
            raise
        raise KDConfigError("partition", text, f"{err.field}: {err.allowed}") from err


# -------------------------------------------------------------------------------------------- splitting
def _check_labels(labels: np.ndarray, num_classes: int | None) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise KDConfigError("labels", f"array {labels.dtype} {labels.shape}", "a 1-D array of integer labels")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise KDConfigError("labels", int(labels.min()), "class indices >= 0")
    top = int(labels.max()) + 1 if labels.size else 0
    if num_classes is None:
        return labels, max(top, 1)
    if not _is_int(num_classes) or num_classes < max(top, 1):
        raise KDConfigError("num_classes", num_classes, f"an integer >= max(label) + 1 = {max(top, 1)}")
    return labels, int(num_classes)


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
        props = rng.dirichlet(np.full(num_parties, spec.alpha))
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
        f"a size every party can reach, but {DIRICHLET_ATTEMPTS} Dirichlet(alpha={_fmt(spec.alpha)}) draws "
        f"never gave all {spec.num_parties} parties >= {need} samples; raise alpha or lower min_size",
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
    if not _is_int(seed) or seed < 0:
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
    labels, num_classes = _check_labels(labels, num_classes)
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
    labels, num_classes = _check_labels(labels, num_classes)
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
    if not _is_int(min_count) or min_count < 1:
        raise KDConfigError("min_count", min_count, "an integer >= 1")
    labels, num_classes = _check_labels(labels, num_classes)
    (part,) = _check_parts([part], labels.size)
    return np.bincount(labels[part], minlength=num_classes) >= min_count
