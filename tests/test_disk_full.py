"""A full disk: every writer (the store, a checkpoint, the halving checkpoint, a figure) stops with one line that
names the path and says "no space left", leaves no partial file, and works again once there is space. The disk is
filled by patching the write each writer makes, in the words each library uses."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import kdlib.core.checkpoints as checkpoints  # noqa: E402
import kdlib.study.results as results  # noqa: E402
import kdlib.tune.halving as halving  # noqa: E402
from kdlib.core.disk import is_disk_full  # noqa: E402
from kdlib.errors import ONE_LINE_ERRORS, DiskFullError  # noqa: E402
from kdlib.notebook.figure_layout import save_figure  # noqa: E402
from kdlib.study.results import ResultsStore  # noqa: E402

CONFIG = {"scenario": "iid", "method": "standard", "seed": 0}


def no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def assert_one_line(error: pytest.ExceptionInfo, path: Path) -> None:
    text = str(error.value)
    assert "\n" not in text and "no space left" in text and str(path) in text
    assert isinstance(error.value, ONE_LINE_ERRORS)


def test_the_store_keeps_no_partial_record_and_appends_again(tmp_path: Path, monkeypatch) -> None:
    store = ResultsStore.open("study", tmp_path)
    store.append("distill", CONFIG, {"gain": 0.01, "acc_before": 0.5, "acc_after": 0.51})
    before = store.path.read_bytes()
    monkeypatch.setattr(results.os, "fsync", no_space)  # the line is written, then the disk says it is full
    with pytest.raises(DiskFullError) as error:
        store.append("distill", {**CONFIG, "seed": 1}, {"gain": 0.02, "acc_before": 0.5, "acc_after": 0.52})
    assert_one_line(error, store.path)
    assert store.path.read_bytes() == before
    monkeypatch.undo()
    store.append("distill", {**CONFIG, "seed": 1}, {"gain": 0.02, "acc_before": 0.5, "acc_after": 0.52})
    assert len(store.records()) == 2


def test_a_checkpoint_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "parties" / "p.safetensors"

    def half_then_full(_model, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 100)
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space "
                           "left on device\" })")  # fmt: skip

    monkeypatch.setattr(checkpoints, "save_model", half_then_full)
    with pytest.raises(DiskFullError) as error:
        checkpoints.save_checkpoint(nn.Linear(2, 2), path, {"test_acc": 0.5})
    assert_one_line(error, path)
    assert list(path.parent.iterdir()) == []
    monkeypatch.undo()
    checkpoints.save_checkpoint(nn.Linear(2, 2), path, {"test_acc": 0.5})
    assert path.exists()


def test_the_halving_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "halving" / "run.pt"
    halving._write_checkpoint(path, {"rung": 1})
    real_save = torch.save

    def half_then_full(obj, target, *args, **kwargs):
        Path(target).write_bytes(b"PK\3\4partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(halving.torch, "save", half_then_full)
    with pytest.raises(DiskFullError) as error:
        halving._write_checkpoint(path, {"rung": 2})
    assert_one_line(error, path)
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]
    assert torch.load(path, weights_only=True) == {"rung": 1}
    monkeypatch.setattr(halving.torch, "save", real_save)
    halving._write_checkpoint(path, {"rung": 2})
    assert torch.load(path, weights_only=True) == {"rung": 2}


def test_a_figure_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    fig = plt.figure()
    first = save_figure(fig, "f", tmp_path)
    kept = first[0].read_bytes()

    def half_then_full(self, target, *args, **kwargs):
        Path(target).write_bytes(b"\x89PNG partial")
        no_space()

    monkeypatch.setattr(plt.Figure, "savefig", half_then_full)
    with pytest.raises(DiskFullError) as error:
        save_figure(fig, "f", tmp_path)
    assert_one_line(error, tmp_path / "f.png")
    assert first[0].read_bytes() == kept and sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]
    plt.close(fig)


def test_disk_full_is_recognised_through_causes_and_pickles() -> None:
    try:
        try:
            no_space()
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(RuntimeError("something else"))
    error = pickle.loads(pickle.dumps(DiskFullError("/data/x")))
    assert isinstance(error, DiskFullError) and str(error).startswith("/data/x: no space left")
