"""Shared fixtures: keep a test's results, checkpoints, figures and data out of the project's folders."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def isolated_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point KDLIB_RESULTS / _CACHE / _FIGURES / _DATA at fresh temporary folders (subprocesses inherit them)."""
    folders = {name: tmp_path / name for name in ("results", "cache", "figures", "data")}
    for name, folder in folders.items():
        monkeypatch.setenv(f"KDLIB_{name.upper()}", str(folder))
    monkeypatch.setenv("KDLIB_CIFAR10_ARCHIVE", str(tmp_path / "no-such-archive.tar.gz"))
    return folders
