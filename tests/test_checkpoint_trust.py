"""A checkpoint is verified before it is trusted: damaged weights, a missing or incomplete side file fail with a
clear error; files respect the umask; a permission problem is reported as one, not as corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from kdlib.core.checkpoints import atomic_write_bytes, load_checkpoint, save_checkpoint
from kdlib.core.models import build_model
from kdlib.errors import KDConfigError


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", 10, (1, 8, 8))


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(mlp(), tmp_path / "party.safetensors", {"test_acc": 0.95, "config": {"party": 0}})


def header_size(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_damaged_weights_with_an_intact_header_fail(checkpoint: Path) -> None:
    data = bytearray(checkpoint.read_bytes())
    middle = (header_size(checkpoint) + len(data)) // 2
    data[middle : middle + 64] = bytes(64)  # the header still parses: safetensors alone would load this
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(KDConfigError, match="SHA-256") as info:
        load_checkpoint(mlp(1), checkpoint)
    assert "party.safetensors" in str(info.value) and "Delete it" in str(info.value)


def test_intact_weights_load_and_the_digest_stays_out_of_the_metadata(checkpoint: Path) -> None:
    model = mlp(1)
    assert load_checkpoint(model, checkpoint) == {"test_acc": 0.95, "config": {"party": 0}}
    for got, want in zip(model.state_dict().values(), mlp(0).state_dict().values(), strict=True):
        assert torch.equal(got, want)
    side = json.loads(checkpoint.with_suffix(".json").read_text())
    import hashlib

    assert side["__weights__"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_a_missing_side_file_is_a_clear_error(checkpoint: Path) -> None:
    checkpoint.with_suffix(".json").unlink()
    with pytest.raises(KDConfigError, match=r"party\.json.*missing"):
        load_checkpoint(mlp(), checkpoint)


def test_a_side_file_without_the_digest_is_a_clear_error(checkpoint: Path) -> None:
    checkpoint.with_suffix(".json").write_text(json.dumps({"test_acc": 0.95}))
    with pytest.raises(KDConfigError, match="digest"):
        load_checkpoint(mlp(), checkpoint)


def test_a_side_file_without_a_required_field_is_a_clear_error(checkpoint: Path) -> None:
    with pytest.raises(KDConfigError, match="own_acc, train_size"):
        load_checkpoint(mlp(), checkpoint, required=("test_acc", "own_acc", "train_size"))


def test_a_party_side_file_lacking_fields_or_of_another_config_fails(tmp_path: Path, isolated_folders) -> None:
    from kdlib.data.datasets import Subsample, load_dataset
    from kdlib.study.config import scale_config
    from kdlib.study.parties import make_scenario, pretrained_party

    cfg = scale_config("smoke", dataset="digits", n_train=None, n_test=None, teacher_model="mlp",
                       pretrain={"epochs": 1})
    data = load_dataset("digits", subsample=Subsample(None, None), progress=False)
    scenario = make_scenario(data, "iid", cfg)
    _model, meta = pretrained_party(data, scenario, 0, "mlp", cfg, "cpu", progress=False)
    (side,) = (isolated_folders["cache"] / "parties").glob("*.json")
    stored = json.loads(side.read_text())
    side.write_text(json.dumps({k: v for k, v in stored.items() if k != "test_acc"}))
    with pytest.raises(KDConfigError, match="test_acc"):
        pretrained_party(data, scenario, 0, "mlp", cfg, "cpu", progress=False)
    side.write_text(json.dumps({**stored, "config": {**stored["config"], "party": 1}}))
    with pytest.raises(KDConfigError, match="no longer matches its digest"):  # an edited side file
        pretrained_party(data, scenario, 0, "mlp", cfg, "cpu", progress=False)
    side.write_text(json.dumps(stored))
    weights = side.with_suffix(".safetensors")
    other = pretrained_party(data, scenario, 1, "mlp", cfg, "cpu", progress=False)[1]  # party 1's own pair of files
    assert other["config"]["party"] == 1
    (other_side,) = [p for p in side.parent.glob("*.json") if p != side]
    saved = weights.read_bytes()
    weights.write_bytes(other_side.with_suffix(".safetensors").read_bytes())  # party 1's intact files as party 0's
    side.write_text(other_side.read_text())
    with pytest.raises(KDConfigError, match="another's"):
        pretrained_party(data, scenario, 0, "mlp", cfg, "cpu", progress=False)
    weights.write_bytes(saved)
    side.write_text(json.dumps(stored))
    assert pretrained_party(data, scenario, 0, "mlp", cfg, "cpu", progress=False)[1]["test_acc"] == meta["test_acc"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_are_written_respecting_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        path = save_checkpoint(mlp(), tmp_path / "party.safetensors", {"a": 1})
        atomic_write_bytes(tmp_path / "other.bin", b"x")
    finally:
        os.umask(previous)
    for written in (path, path.with_suffix(".json"), tmp_path / "other.bin"):
        assert written.stat().st_mode & 0o777 == 0o666 & ~umask, written


def test_an_unreadable_checkpoint_is_a_permission_error(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.read_bytes

    def refuse(self: Path) -> bytes:  # what another user meets on a 0600 file (root reads anything)
        if self == checkpoint:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(PermissionError, match="permission denied") as info:
        load_checkpoint(mlp(), checkpoint)
    assert "party.safetensors" in str(info.value) and "corrupted" not in str(info.value)


def test_an_unreadable_side_file_is_a_permission_error(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.read_bytes
    side = checkpoint.with_suffix(".json")

    def refuse(self: Path) -> bytes:
        if self == side:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(PermissionError, match=r"party\.json: permission denied"):
        load_checkpoint(mlp(), checkpoint)
