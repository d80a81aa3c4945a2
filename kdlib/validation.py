"""Type checks shared by every config and argument check: an integer, a finite real number, never a bool; and a
boolean given as text (a papermill parameter, ``--set``, an environment variable), which must say true or false."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

from kdlib.errors import KDConfigError

__all__ = ["env_bool", "is_int", "is_real", "strict_bool"]

_WORDS = {"true": True, "false": False}
_DIGITS = {"1": True, "0": False}


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


def strict_bool(name: str, value: object, *, digits: bool = False) -> bool:
    """``value`` as a bool: ``True``/``False`` (numpy's too), or the text ``true``/``false`` in any case; with
    ``digits`` also ``1``/``0`` (number or text). Anything else (``"no"``, ``"yes"``, ``"False "``, ``None``, 2) is
    refused with a :class:`KDConfigError` naming ``name``: a string is never taken as True for being non-empty."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str) and value.lower() in _WORDS:
        return _WORDS[value.lower()]
    if digits and (isinstance(value, str) or is_int(value, numpy=True)) and str(value) in _DIGITS:
        return _DIGITS[str(value)]
    words = "true or false" + (", 1 or 0" if digits else "")
    allowed = f"{words} (a bool, or that text in any case: no other word, no spaces)"
    raise KDConfigError(name, value, allowed)


def env_bool(name: str, default: bool = False) -> bool:
    """The environment variable ``name`` as a bool (:func:`strict_bool`, 1/0 allowed); unset or empty: ``default``."""
    value = os.environ.get(name, "")
    return default if value == "" else strict_bool(name, value, digits=True)
