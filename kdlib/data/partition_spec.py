"""How a data set is split among parties: :class:`PartitionSpec`, checked on creation, and :func:`parse_partition`,
which reads its short text form: ``"iid"``, ``"dirichlet:0.5"``, ``"disjoint"``, ``"disjoint:3"``,
``"disjoint:0-4|5-9"``, ``"quantity:1.5"``, ``"quantity:1,2,7"`` (see :mod:`kdlib.data.partition` for the kinds)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field

from kdlib.errors import KDConfigError
from kdlib.validation import is_int, is_real

__all__ = ["KINDS", "PartitionSpec", "fmt_float", "parse_partition"]

KINDS: tuple[str, ...] = ("iid", "dirichlet", "class_disjoint", "quantity_skew")
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "iid": (),
    "dirichlet": ("concentration", "self_balancing"),
    "class_disjoint": ("classes_per_party", "party_classes"),
    "quantity_skew": ("sizes", "skew_power"),
}
_OPTIONAL_DEFAULTS: dict[str, object] = {
    "concentration": None,
    "self_balancing": False,
    "classes_per_party": None,
    "party_classes": None,
    "sizes": None,
    "skew_power": None,
}


def fmt_float(value: float) -> str:
    """Shortest text for a float that parses back to the same value."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _check_concentration(value: object, name: str) -> float:
    if not is_real(value, numpy=True) or value <= 0:
        raise KDConfigError(name, value, "a finite number > 0 (Dirichlet concentration)")
    return float(value)


# ------------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class PartitionSpec:
    """How to split a data set among ``num_parties`` parties; checked on creation.

    ``concentration`` is the Dirichlet concentration parameter (Flower's ``alpha``; ``alpha`` is accepted here
    too, as its old name, and reads back as a property). Fields that belong to another kind (e.g.
    ``concentration`` with ``kind="iid"``) are rejected rather than silently ignored. ``min_size`` is the smallest
    party a ``dirichlet`` draw may produce; every kind refuses to leave a party empty. ``fraction`` keeps a
    stratified random share of the samples (per class, rounded) and leaves the rest unassigned. ``quantity_skew``
    with neither ``sizes`` nor ``skew_power`` uses ``skew_power=1.0``.
    """

    kind: str
    num_parties: int = 2
    concentration: float | None = None
    classes_per_party: int | None = None
    party_classes: tuple[tuple[int, ...], ...] | None = None
    sizes: tuple[float, ...] | None = None
    skew_power: float | None = None
    min_size: int = 10
    fraction: float = 1.0
    self_balancing: bool = field(default=False)
    alpha: InitVar[float | None] = None

    def __post_init__(self, alpha: float | None) -> None:
        if alpha is not None and alpha != self.concentration:  # the old name (dataclasses.replace passes both)
            if self.concentration is not None:
                raise KDConfigError("alpha", alpha, "unset when concentration is given (alpha is its old name)")
            object.__setattr__(self, "concentration", _check_concentration(alpha, "alpha"))
        if self.kind not in KINDS:
            raise KDConfigError("kind", self.kind, f"one of {', '.join(KINDS)}")
        if not is_int(self.num_parties, numpy=True) or self.num_parties < 1:
            raise KDConfigError("num_parties", self.num_parties, "an integer >= 1")
        if not is_int(self.min_size, numpy=True) or self.min_size < 0:
            raise KDConfigError("min_size", self.min_size, "an integer >= 0")
        if not is_real(self.fraction, numpy=True) or not 0 < self.fraction <= 1:
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
        object.__setattr__(self, "concentration", _check_concentration(self.concentration, "concentration"))
        if not isinstance(self.self_balancing, bool):
            raise KDConfigError("self_balancing", self.self_balancing, "True or False")

    def _check_class_disjoint(self) -> None:
        if self.classes_per_party is not None and self.party_classes is not None:
            raise KDConfigError("party_classes", self.party_classes, "unset when classes_per_party is given")
        if self.classes_per_party is not None:
            if not is_int(self.classes_per_party, numpy=True) or self.classes_per_party < 1:
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
            if not all(is_int(c, numpy=True) and c >= 0 for c in group) or len(set(group)) != len(group):
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
            if len(sizes) != self.num_parties or not all(is_real(s, numpy=True) and s > 0 for s in sizes):
                raise KDConfigError("sizes", sizes, f"{self.num_parties} finite numbers > 0 (one per party)")
            object.__setattr__(self, "sizes", tuple(float(s) for s in sizes))
            return
        power = 1.0 if self.skew_power is None else self.skew_power
        if not is_real(power, numpy=True) or power < 0:
            raise KDConfigError("skew_power", self.skew_power, "a finite number >= 0")
        object.__setattr__(self, "skew_power", float(power))

    @property
    def label(self) -> str:
        """Short human label for plots, e.g. ``"Dirichlet α=0.5"``."""
        if self.kind == "iid":
            return "IID"
        if self.kind == "dirichlet":
            return f"Dirichlet α={fmt_float(self.concentration)}"
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
            return f"dirichlet:{fmt_float(self.concentration)}"
        if self.kind == "quantity_skew":
            if self.sizes is not None:
                return "quantity:" + ",".join(fmt_float(s) for s in self.sizes)
            return f"quantity:{fmt_float(self.skew_power)}"
        if self.classes_per_party is not None:
            return f"disjoint:{self.classes_per_party}"
        if self.party_classes is not None:
            return "disjoint:" + "|".join(",".join(map(str, g)) for g in self.party_classes)
        return "disjoint"


# ``alpha``, the old name, reads ``concentration`` (set after the class: the dataclass takes it as an init argument)
PartitionSpec.alpha = property(  # type: ignore[assignment,method-assign]
    lambda self: self.concentration, doc="The old name of ``concentration``."
)


# ------------------------------------------------------------------------------------------------ parse
_PARSE_HELP = (
    "iid | dirichlet:CONCENTRATION | disjoint | disjoint:K | disjoint:0-4|5-9 | quantity:POWER | quantity:1,2,7"
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
        raise KDConfigError("partition", original, "dirichlet needs its concentration, e.g. 'dirichlet:0.5'")
    concentration = _parse_float(arg, original, "the Dirichlet concentration")
    return PartitionSpec("dirichlet", num_parties=num_parties, concentration=concentration)


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
