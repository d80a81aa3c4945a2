"""Writers on a full disk: every file kdlib writes (the store, checkpoints, the halving checkpoint, figures) stops
with one ``DiskFullError`` naming the path, and leaves no partial file behind, so the run resumes once space is
freed. Libraries report a full disk in their own words (safetensors, torch's zip writer), so those are recognised
too."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kdlib.errors import DiskFullError

NO_SPACE_SIGNS = ("No space left on device", "ENOSPC", "enforce fail at inline_container", "file write failed")
"""How a full disk shows in the messages of libraries that do not raise ``OSError(ENOSPC)`` themselves."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or the error it was raised from) says the disk is full."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if any(sign in str(error) for sign in NO_SPACE_SIGNS):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def writing(path: str | Path, *leftovers: str | Path) -> Iterator[None]:
    """Inside, a full disk becomes a one-line ``DiskFullError`` naming ``path``; ``leftovers`` (temporary or partial
    files of this write) are removed first."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if not is_disk_full(error):
            raise
        for leftover in leftovers:
            Path(leftover).unlink(missing_ok=True)
        raise DiskFullError(str(path)) from None
