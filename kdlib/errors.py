"""The one exception type that kdlib raises for bad input, and the errors every entry point shows as one line."""

from __future__ import annotations

import pickle
from typing import Any


class _Shown:
    """Stands in for a value that cannot be pickled: shows (``repr``) as that value did."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class KDConfigError(ValueError):
    """Bad input: names the field, the value given and what is allowed.

    In a notebook (IPython, papermill) it shows as its one line, not a traceback: the message is the whole story.
    It survives pickling (``__reduce__``), so that an error raised in a Ray worker reaches the driver as itself.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not valid: {allowed}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuilt from the three constructor arguments (pickle's default would pass only the message); a value that
        cannot be pickled travels as its ``repr``, so the message stays the same."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("field", "value", "allowed")}
        return type(self), (self.field, _picklable(self.value), self.allowed), state or None

    def _render_traceback_(self) -> list[str]:
        """IPython's hook for an exception's own traceback: one line, ``KDConfigError: <field>=<value> ...``."""
        return [f"{type(self).__name__}: {self}"]


class DiskFullError(OSError):
    """A write that failed because the disk is full: names the path and what to do (``kdlib.core.disk``)."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: no space left on the device: free some space and rerun (stored runs are kept)")

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path,)

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


ONE_LINE_ERRORS: tuple[type[Exception], ...] = (KDConfigError, FileNotFoundError, PermissionError, DiskFullError)
"""Errors whose message is the whole story: the command line prints them as ``error: <message>`` and exits with 2,
and the parallel study raises them as themselves when a Ray worker raised them."""


def _picklable(value: object) -> object:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - any failure to pickle: send what the message shows
        return _Shown(repr(value))
    return value
