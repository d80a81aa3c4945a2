"""Tests for kdlib.study.results (append-only, crash-safe JSON Lines store) and kdlib.core.checkpoints (safetensors)."""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdlib.core.checkpoints import atomic_write_bytes, load_checkpoint, save_checkpoint
from kdlib.study.results import ResultsStore, run_key

CONFIG_A = {"temperature": 4.0, "alpha": 0.5, "scenario": "iid", "pretrain": {"epochs": 2, "lr": 0.05}}
CONFIG_B = {"temperature": 2.0, "alpha": 0.5, "scenario": "iid", "pretrain": {"epochs": 2, "lr": 0.05}}


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore.open("study", tmp_path / "results")


def complete_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the file should hold only complete lines"
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


# --------------------------------------------------------------------------------------------- append and reload


def test_open_makes_the_folder_and_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    opened = ResultsStore.open("runs", folder)
    assert folder.is_dir()
    assert opened.path == folder / "runs.jsonl"
    assert opened.records() == [] and opened.keys() == set() and opened.get("nope") is None


def test_append_then_reload(store: ResultsStore) -> None:
    rec_a = store.append("standard", CONFIG_A, {"acc": 0.75, "gain": 0.05}, wall_s=1.5)
    rec_b = store.append("dml", CONFIG_B, {"acc": 0.5, "gain": -0.1})

    reloaded = ResultsStore(store.path)  # a fresh handle reads what is on disk
    records = reloaded.records()
    assert [r["key"] for r in records] == [rec_a["key"], rec_b["key"]]
    assert records[0]["config"] == CONFIG_A and records[0]["metrics"] == {"acc": 0.75, "gain": 0.05}
    assert records[0]["kind"] == "standard" and records[0]["wall_s"] == 1.5
    assert "env" in records[0] and "time" in records[0]
    assert reloaded.keys() == {rec_a["key"], rec_b["key"]}
    assert reloaded.has(rec_a["key"]) and not reloaded.has("0" * 16)
    assert reloaded.get(rec_b["key"])["metrics"]["gain"] == -0.1
    assert run_key("standard", CONFIG_A) == rec_a["key"]
    assert run_key("dml", CONFIG_B) == rec_b["key"]


def test_keys_follow_the_config(store: ResultsStore) -> None:
    assert run_key("standard", CONFIG_A) == run_key("standard", dict(reversed(list(CONFIG_A.items()))))
    assert run_key("standard", CONFIG_A) == run_key("standard", json.loads(json.dumps(CONFIG_A)))
    assert run_key("standard", CONFIG_A) != run_key("standard", CONFIG_B)
    assert run_key("standard", CONFIG_A) != run_key("tuned", CONFIG_A)  # the kind is part of the identity
    nested_change = {**CONFIG_A, "pretrain": {"epochs": 3, "lr": 0.05}}
    assert run_key("standard", CONFIG_A) != run_key("standard", nested_change)
    first = store.append("standard", CONFIG_A, {"acc": 0.1})
    again = store.append("standard", dict(CONFIG_A), {"acc": 0.2})
    assert first["key"] == again["key"]


def test_frame_flattens_config_and_metrics(store: ResultsStore) -> None:
    pd = pytest.importorskip("pandas")
    store.append("standard", CONFIG_A, {"acc": 0.75, "per_class": [0.5, 1.0]}, wall_s=2.0)
    store.append("dml", CONFIG_B, {"acc": 0.5})
    frame = store.frame()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 2
    for column in ("key", "kind", "time", "wall_s", "temperature", "alpha", "scenario", "acc"):
        assert column in frame.columns
    assert "pretrain" not in frame.columns and "per_class" not in frame.columns  # nested values stay out
    assert frame["temperature"].tolist() == [4.0, 2.0]
    assert frame["acc"].tolist() == [0.75, 0.5]
    assert frame["key"].tolist() == [run_key("standard", CONFIG_A), run_key("dml", CONFIG_B)]
    only_dml = store.frame(kind="dml")
    assert only_dml["kind"].tolist() == ["dml"]


def test_numpy_values_and_nan_survive_the_round_trip(store: ResultsStore) -> None:
    store.append("standard", CONFIG_A, {"per_class": np.array([0.5, 0.25]), "n": np.int64(3), "acc": float("nan")})
    (record,) = store.records()
    assert record["metrics"]["per_class"] == [0.5, 0.25]
    assert record["metrics"]["n"] == 3
    assert math.isnan(record["metrics"]["acc"])


# --------------------------------------------------------------------------------------------- append-only


def test_same_key_twice_keeps_both_lines_and_the_file_never_shrinks(store: ResultsStore) -> None:
    sizes = []
    for acc in (0.1, 0.2, 0.3):
        store.append("standard", CONFIG_A, {"acc": acc})
        sizes.append(store.path.stat().st_size)
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    lines = complete_lines(store.path)
    assert [line["metrics"]["acc"] for line in lines] == [0.1, 0.2, 0.3]
    assert len({line["key"] for line in lines}) == 1
    assert store.get(run_key("standard", CONFIG_A))["metrics"]["acc"] == 0.3  # the latest wins on lookup
    assert len(store.records()) == 3


# --------------------------------------------------------------------------------------------- crashes


def test_latest_reads_back_one_record_per_wanted_key(store: ResultsStore) -> None:
    first = store.append("distill", CONFIG_A, {"gain": 0.1})
    other = store.append("distill", CONFIG_B, {"gain": 0.2})
    again = store.append("distill", CONFIG_A, {"gain": 0.3})
    store.append("federated", {"scenario": "iid"}, {"final_acc": 0.5})
    assert first["key"] == again["key"] != other["key"]
    assert store.latest({first["key"], other["key"], "no-such-key"}) == [again, other]  # first-stored order
    assert store.latest([other["key"]]) == [other]
    frame = store.latest_frame("distill", {first["key"]})
    assert list(frame["gain"]) == [0.3] and list(frame["key"]) == [first["key"]]
    assert store.latest_frame("federated", {first["key"]}).empty
    assert ResultsStore(store.path.parent / "empty.jsonl").latest_frame("distill", {first["key"]}).empty


def test_partial_last_line_is_skipped_with_a_warning_then_cut(store: ResultsStore) -> None:
    store.append("standard", CONFIG_A, {"acc": 0.1})
    store.append("standard", CONFIG_B, {"acc": 0.2})
    complete_size = store.path.stat().st_size
    with open(store.path, "ab") as handle:
        handle.write(b'{"key": "deadbeef", "kind": "standard", "config": {"temper')  # no newline: a crash

    with pytest.warns(UserWarning, match="incomplete"):
        records = store.records()
    assert [r["metrics"]["acc"] for r in records] == [0.1, 0.2]

    store.append("dml", CONFIG_A, {"acc": 0.3})
    lines = complete_lines(store.path)
    assert [line["metrics"]["acc"] for line in lines] == [0.1, 0.2, 0.3]
    assert b"deadbeef" not in store.path.read_bytes()
    # the partial tail was cut, the complete lines before it were kept byte for byte
    assert store.path.stat().st_size > complete_size


def test_a_killed_writer_leaves_a_readable_store(store: ResultsStore) -> None:
    store.append("standard", CONFIG_A, {"acc": 0.1})
    before = store.path.read_bytes()
    script = (
        "import os, signal, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n"
        'line = b\'{"key": "killed", "kind": "standard", "metrics": {"blob": "\' + b\'x\' * 200000\n'
        "os.write(fd, line[: len(line) // 2])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.write(fd, line[len(line) // 2 :] + b'\"}}\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(store.path)], timeout=60, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    data = store.path.read_bytes()
    assert data.startswith(before) and len(data) > len(before) and not data.endswith(b"\n")

    with pytest.warns(UserWarning, match="incomplete"):
        assert [r["metrics"]["acc"] for r in store.records()] == [0.1]

    store.append("standard", CONFIG_B, {"acc": 0.2})
    assert [line["metrics"]["acc"] for line in complete_lines(store.path)] == [0.1, 0.2]
    assert store.path.read_bytes().startswith(before)
    assert store.keys() == {run_key("standard", CONFIG_A), run_key("standard", CONFIG_B)}


def test_a_record_readers_see_is_never_cut_by_the_next_append(store: ResultsStore) -> None:
    # a crash after the JSON but before its newline: the tail parses, yet does not end the file with a newline
    store.append("standard", CONFIG_A, {"acc": 0.1})
    lost_newline = json.dumps({"key": "k-no-newline", "kind": "standard", "config": {}, "metrics": {"acc": 0.2}})
    with open(store.path, "ab") as handle:
        handle.write(lost_newline.encode())
    seen = store.keys()
    store.append("standard", CONFIG_B, {"acc": 0.3})
    # either the reader must not have counted it as stored, or the writer must keep it
    assert "k-no-newline" not in seen or "k-no-newline" in store.keys()


def test_unusable_folder_raises_permission_error_naming_it(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    folder = afile / "results"
    with pytest.raises(PermissionError) as info:
        ResultsStore.open("study", folder)
    assert str(folder) in str(info.value)


# --------------------------------------------------------------------------------------------- checkpoints


def small_bn_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def trained_bn_model() -> nn.Module:
    model = small_bn_model(0)
    model.train()
    with torch.no_grad():
        for step in range(3):  # move the running statistics away from their initial values
            model(torch.randn(8, 3, generator=torch.Generator().manual_seed(step)) * 3 + 1)
    return model


def test_checkpoint_round_trip_keeps_weights_and_buffers(tmp_path: Path) -> None:
    model = trained_bn_model()
    assert int(model[1].num_batches_tracked) == 3
    path = save_checkpoint(model, tmp_path / "ck" / "model.safetensors", {"epochs": 3, "acc": 0.5})
    assert path == tmp_path / "ck" / "model.safetensors"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.safetensors"]  # no temp files

    fresh = small_bn_model(1)
    assert not torch.equal(fresh[0].weight, model[0].weight)
    meta = load_checkpoint(fresh, path)
    assert meta == {"epochs": 3, "acc": 0.5}
    expected, got = model.state_dict(), fresh.state_dict()
    assert set(expected) == set(got)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert not torch.equal(fresh[1].running_mean, torch.zeros(4))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_checkpoint_is_safetensors_not_pickle(tmp_path: Path) -> None:
    model = trained_bn_model()
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    data = path.read_bytes()
    assert not data.startswith(b"\x80") and not data.startswith(b"PK")  # neither a pickle nor torch's zip
    (header_len,) = struct.unpack("<Q", data[:8])
    assert 8 + header_len <= len(data)
    header = json.loads(data[8 : 8 + header_len])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert set(tensors) == set(model.state_dict())
    assert max(v["data_offsets"][1] for v in tensors.values()) == len(data) - 8 - header_len
    for name, tensor in model.state_dict().items():
        assert tensors[name]["shape"] == list(tensor.shape)
    assert list(json.loads(path.with_suffix(".json").read_text())) == ["__weights__"]  # no metadata but the digest


def test_truncated_checkpoint_raises_value_error(tmp_path: Path) -> None:
    model = trained_bn_model()
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    truncated.with_suffix(".json").write_bytes(path.with_suffix(".json").read_bytes())  # the weights' side file
    with pytest.raises(ValueError, match="corrupted") as info:
        load_checkpoint(small_bn_model(1), truncated)
    assert str(truncated) in str(info.value)
    short = tmp_path / "short.safetensors"
    short.write_bytes(path.read_bytes()[:-10])
    short.with_suffix(".json").write_bytes(path.with_suffix(".json").read_bytes())
    with pytest.raises(ValueError, match="corrupted"):
        load_checkpoint(small_bn_model(1), short)


def test_checkpoint_of_another_architecture_raises_value_error(tmp_path: Path) -> None:
    path = save_checkpoint(trained_bn_model(), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(nn.Linear(3, 2), path)


def test_missing_checkpoint_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_checkpoint(small_bn_model(0), tmp_path / "nothing_here.safetensors")


def test_atomic_write_bytes_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.bin"
    atomic_write_bytes(target, b"first version, long" * 10)
    atomic_write_bytes(target, b"short")
    assert target.read_bytes() == b"short"
    assert os.listdir(target.parent) == ["data.bin"]


# --------------------------------------------------------------------------------------------- merge


def test_merge_adds_only_the_keys_not_done_here_and_keeps_their_provenance(tmp_path: Path) -> None:
    here = ResultsStore.open("study", tmp_path / "here")
    there = ResultsStore.open("study", tmp_path / "there")
    config_c = {**CONFIG_A, "scenario": "disjoint"}
    here.append("distill", CONFIG_A, {"acc_before": 0.5, "acc_after": 0.6, "gain": 0.1})
    here.append("distill", CONFIG_B, {"acc_before": 0.5, "acc_after": math.nan, "gain": math.nan})  # not done
    there.append("distill", CONFIG_A, {"acc_before": 0.5, "acc_after": 0.9, "gain": 0.4})  # done here already
    there.append("distill", CONFIG_B, {"acc_before": 0.5, "acc_after": 0.7, "gain": 0.2})
    there.append("distill", config_c, {"acc_before": 0.4, "acc_after": 0.5, "gain": 0.1})
    there.append("distill", config_c, {"acc_before": 0.4, "acc_after": 0.55, "gain": 0.15})  # its latest record
    made_there = {r["key"]: r for r in there.records()}

    assert here.merge(there) == (2, 1)
    records = here.records()
    assert len(records) == 4
    assert here.get(run_key("distill", CONFIG_A))["metrics"]["acc_after"] == 0.6  # never overwritten
    assert here.get(run_key("distill", CONFIG_B)) == made_there[run_key("distill", CONFIG_B)]  # time, env, commit kept
    assert here.get(run_key("distill", config_c))["metrics"]["acc_after"] == 0.55
    assert here.merge(there) == (0, 3)  # a second merge adds nothing
    assert len(here.records()) == 4


def test_merge_refuses_a_missing_file_and_the_store_itself(tmp_path: Path, store: ResultsStore) -> None:
    with pytest.raises(FileNotFoundError, match="jsonl"):
        store.merge(ResultsStore(tmp_path / "nowhere.jsonl"))
    store.append("distill", CONFIG_A, {"acc_before": 0.5, "acc_after": 0.6, "gain": 0.1})
    with pytest.raises(ValueError, match="another store"):
        store.merge(ResultsStore(store.path))


def test_the_merge_command_reports_what_it_added(tmp_path: Path) -> None:
    there = ResultsStore.open("study", tmp_path / "there")
    there.append("distill", CONFIG_A, {"acc_before": 0.5, "acc_after": 0.6, "gain": 0.1})
    command = [sys.executable, "-m", "kdlib", "merge", str(there.path), "--results", str(tmp_path / "here")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 run(s) added" in done.stdout
    assert ResultsStore(tmp_path / "here" / "study.jsonl").has(run_key("distill", CONFIG_A))
    missing = subprocess.run([*command[:4], str(tmp_path / "no.jsonl")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: No results file")
