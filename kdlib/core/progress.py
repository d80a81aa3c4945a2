"""Progress bars that suit where they are shown: redrawn in place on a terminal, whole lines in a log or a pipe.

tqdm redraws a bar with carriage returns and, for nested bars, cursor-up escape codes; written to a file these
leave ``\\r`` and ``\\x1b[A`` noise and one fragment per redraw. :func:`progress_bar` picks the mode from the
stream: a terminal gets tqdm as usual, anything else :class:`LineTqdm`, which prints one plain line at most every
:data:`LINE_INTERVAL_S` seconds.
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any

from tqdm.std import tqdm as std_tqdm

LINE_INTERVAL_S = 10.0
"""Seconds between two lines of one bar in line mode (and the longest silence the caller should allow)."""

_CURSOR_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or absent stream is not)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineWriter:
    """A text stream for tqdm that turns every redraw into one plain line: no ``\\r``, no escape codes.

    tqdm writes ``"\\r" + bar + padding`` per redraw, ``"\\n"``/``"\\x1b[A"`` to move between nested bars and
    ``""``/``"\\r"`` to clear; each non-blank piece between carriage returns and newlines becomes a line, unless
    it repeats the line before it.
    """

    encoding = "ascii"  # tqdm then draws its bars with '#' instead of block characters

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._last = ""

    def write(self, text: str) -> int:
        for piece in re.split(r"[\r\n]", _CURSOR_CODES.sub("", str(text))):
            line = piece.rstrip()
            if line.strip() and line != self._last:  # a redraw that changed nothing is not repeated
                self.stream.write(line + "\n")
                self._last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


class LineTqdm(std_tqdm):
    """tqdm for logs and pipes: each display is a whole line, at most one every ``mininterval`` seconds.

    Takes tqdm's arguments; ``file`` (default ``sys.stderr``) is wrapped in a :class:`LineWriter`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        target = kwargs.pop("file", None) or sys.stderr
        kwargs["file"] = target if isinstance(target, LineWriter) else LineWriter(target)
        kwargs.setdefault("mininterval", LINE_INTERVAL_S)
        kwargs.setdefault("ascii", True)
        kwargs["dynamic_ncols"] = False
        super().__init__(*args, **kwargs)


def progress_class(stream: IO[str] | None = None) -> type[std_tqdm]:
    """tqdm's own class on a terminal, :class:`LineTqdm` on anything else (``stream``: default ``sys.stderr``)."""
    return std_tqdm if is_terminal(sys.stderr if stream is None else stream) else LineTqdm


def progress_bar(*args: Any, file: IO[str] | None = None, **kwargs: Any) -> std_tqdm:
    """A tqdm bar on ``file`` (default ``sys.stderr``) in the mode that suits it; tqdm's arguments otherwise."""
    stream = sys.stderr if file is None else file
    return progress_class(stream)(*args, file=stream, **kwargs)


def auto_class() -> type[std_tqdm]:
    """tqdm.auto's choice in a Jupyter kernel (widget bars, which :mod:`kdlib.notebook.notebook_progress` passes through
    to ``reproduce``), else :func:`progress_class` for ``sys.stderr``."""
    from tqdm.auto import tqdm as auto

    return auto if auto.__module__ == "tqdm.notebook" else progress_class()


tqdm = auto_class()
"""The bar class for library code: ``from kdlib.core.progress import tqdm`` in place of ``from tqdm.auto import tqdm``
gives widgets in a notebook, redrawn bars on a terminal and plain lines in a log (no ``\\x1b[A`` codes)."""
