"""Type checks shared by every config and argument check: an integer, a finite real number, never a bool."""

from __future__ import annotations

import math
import numbers

__all__ = ["is_int", "is_real"]


def is_int(value: object, *, numpy: bool = False) -> bool:
    """True for an integer that is not a bool: a Python ``int``, or with ``numpy=True`` any integral type
    (numpy's integers too). Config fields keep the strict form so that they serialise as JSON numbers."""
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Integral if numpy else int)


def is_real(value: object, *, numpy: bool = False) -> bool:
    """True for a finite number that is not a bool (nor NaN, nor an infinity): a Python ``int`` or ``float``, or
    with ``numpy=True`` any real type (numpy's scalars too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real if numpy else int | float):
        return False
    return math.isfinite(value)
