"""Archives on disk: md5 checks, tar extraction that refuses escaping members, and a verified download."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kdlib.core.progress import tqdm
from kdlib.errors import KDConfigError

__all__ = ["check_md5", "download_verified", "extract_tree", "safe_extract"]


def check_md5(path: str | Path, expected: str) -> None:
    """Raise KDConfigError unless the file's md5 hex digest equals ``expected``."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected.lower():
        raise KDConfigError("md5", actual, f"{expected} for {path}: the file is damaged, delete it and retry")


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse absolute paths and '..' before tarfile's own 'data' filter runs."""
    name = member.name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in name.split("/"):
        raise KDConfigError("archive member", member.name, f"a relative path without '..' inside {archive}")


def safe_extract(archive: Path, dest: Path, progress: bool) -> None:
    """Extract a tar archive into ``dest``, after checking that no member leaves it."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", disable=not progress,
                           mininterval=0.5):
            tar.extract(member, dest, filter="data")


def extract_tree(archive: Path, folder: Path, progress: bool) -> None:
    """Extract an image-folder archive into folder (via a temp folder, so no half-extracted tree remains)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-extract-"))
    try:
        safe_extract(archive, tmp, progress)
        top = tmp
        subdirs = [p for p in tmp.iterdir() if p.is_dir()]
        if not (tmp / "train").is_dir() and len(subdirs) == 1:
            top = subdirs[0]  # the archive wraps the tree in one folder
        if not ((top / "train").is_dir() and (top / "test").is_dir()):
            raise KDConfigError("archive", str(archive), "a tar with train/<class>/*.jpg, test/<class>/*.jpg")
        if not folder.exists():
            try:
                os.replace(top, folder)
            except OSError:
                if not folder.is_dir():  # another process may have just put it there
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_verified(url: str, target: Path, md5: str, progress: bool) -> None:
    """Fetch ``url`` to ``target`` through a temp file in the same folder, kept only if its md5 matches."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".part")
    os.close(fd)
    try:
        bar = tqdm(total=0, desc=f"downloading {target.name}", unit="B", unit_scale=True, disable=not progress,
                   mininterval=0.5)
        with bar:
            urllib.request.urlretrieve(url, tmp, reporthook=_report_hook(bar))
        check_md5(tmp, md5)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _report_hook(bar: tqdm) -> Callable[[int, int, int], None]:
    def hook(blocks: int, block_size: int, total: int) -> None:
        if total > 0:
            bar.total = total
        bar.update(blocks * block_size - bar.n)

    return hook
