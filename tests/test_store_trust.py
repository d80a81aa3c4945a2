"""The results store keeps what is stored: no complete record is cut, a bad line hides nothing else, records are
strict JSON, an unusable store file fails before any training, and ``claim`` lets processes share one store."""

from __future__ import annotations

import json
import math
import multiprocessing
import time
import warnings
from pathlib import Path

import pytest

from kdlib.study.results import ResultsStore, run_key

CONFIG_A = {"scenario": "iid", "method": "standard", "temperature": 4.0}
CONFIG_B = {"scenario": "disjoint", "method": "standard", "temperature": 4.0}


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore.open("study", tmp_path / "results")


def quietly(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


# ------------------------------------------------------------------------------------------- nothing is cut


def test_a_complete_last_record_without_newline_gets_its_newline(store: ResultsStore) -> None:
    first = store.append("distill", CONFIG_A, {"gain": 0.1})
    hand_edited = store.path.read_bytes().rstrip(b"\n")  # e.g. an editor that drops the final newline
    store.path.write_bytes(hand_edited)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete record is read without a warning
        assert store.keys() == {first["key"]}
    second = store.append("distill", CONFIG_B, {"gain": 0.2})
    data = store.path.read_bytes()
    assert data.startswith(hand_edited + b"\n") and data.endswith(b"\n")
    assert [r["key"] for r in store.records()] == [first["key"], second["key"]]
    assert not store.path.with_name("study.jsonl.cut").exists()


def test_an_invalid_tail_is_cut_but_its_bytes_are_kept(store: ResultsStore) -> None:
    store.append("distill", CONFIG_A, {"gain": 0.1})
    partial = b'{"key": "abc", "kind": "distill", "config": {"scen'
    with open(store.path, "ab") as handle:
        handle.write(partial)
    store.append("distill", CONFIG_B, {"gain": 0.2})
    assert partial not in store.path.read_bytes()
    assert store.path.with_name("study.jsonl.cut").read_bytes() == partial + b"\n"
    assert len(store.records()) == 2


# -------------------------------------------------------------------------------- a bad line hides nothing else

BAD_LINES = {
    "empty object": b"{}",
    "a list": b"[1, 2]",
    "a number": b"42",
    "a record without metrics": b'{"key": "k", "kind": "distill", "config": {}}',
    "config not an object": b'{"key": "k", "kind": "distill", "config": 3, "metrics": {}}',
    "not UTF-8": b'{"key": "\xff\xfe", "kind": "distill", "config": {}, "metrics": {}}',
    "not JSON": b'{"key": oops}',
}


@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_line_that_is_not_a_record_is_skipped_named_and_kept(store: ResultsStore, bad: bytes) -> None:
    pd = pytest.importorskip("pandas")
    first = store.append("distill", CONFIG_A, {"gain": 0.1})
    with open(store.path, "ab") as handle:
        handle.write(bad + b"\n")
    second = store.append("distill", CONFIG_B, {"gain": 0.2})
    with pytest.warns(UserWarning, match=r"study\.jsonl:2: skipping a line that is "):
        records = store.records()
    assert [r["key"] for r in records] == [first["key"], second["key"]]
    frame = quietly(store.frame)
    assert isinstance(frame, pd.DataFrame) and frame["key"].tolist() == [first["key"], second["key"]]
    assert quietly(lambda: store.get(second["key"]))["metrics"] == {"gain": 0.2}
    assert quietly(lambda: store.has(first["key"])) and quietly(store.keys) == {first["key"], second["key"]}
    assert store.path.read_bytes().split(b"\n")[1] == bad  # the line stays in the file


def test_a_bad_line_does_not_break_the_study_tables(tmp_path: Path, isolated_folders) -> None:
    from kdlib.study.runner import open_study, run_config

    study = open_study("smoke", dataset="digits", n_train=None, n_test=None, scenarios="iid", progress=False,
                       results=str(tmp_path / "r"))
    config = run_config(study.cfg, "iid", "standard")
    study.store.append("distill", config, {"gain": 0.05, "acc_after": 0.9})
    with open(study.store.path, "ab") as handle:
        handle.write(b"[1, 2]\n{}\n\xff\n")
    table = quietly(study.gain_table)
    assert table.loc["iid", "standard"] == pytest.approx(5.0)
    assert len(quietly(study.records)) == 1


# ------------------------------------------------------------------------------------------------ strict JSON


def test_records_are_strict_json_and_nan_reads_back(store: ResultsStore) -> None:
    store.append("distill", CONFIG_A, {"unseen_before": float("nan"), "gain": float("inf"), "acc": 0.5},
                 curves=[{"epoch": 1, "test_acc": float("nan")}], grid=[{"val_acc": float("-inf")}])
    text = store.path.read_text()
    for token in ("NaN", "Infinity"):
        assert token not in text
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON token {name}"))
    assert strict["metrics"] == {"unseen_before": None, "gain": None, "acc": 0.5}
    (record,) = store.records()
    assert math.isnan(record["metrics"]["unseen_before"]) and record["metrics"]["acc"] == 0.5
    assert math.isnan(record["curves"][0]["test_acc"]) and math.isnan(record["grid"][0]["val_acc"])
    assert record["config"] == CONFIG_A


def test_old_records_with_nan_tokens_still_read(store: ResultsStore) -> None:
    old = '{"key": "k1", "kind": "distill", "config": {"n_train": null}, "metrics": {"unseen_before": NaN}}\n'
    store.path.write_text(old)
    (record,) = store.records()
    assert math.isnan(record["metrics"]["unseen_before"])
    assert record["config"] == {"n_train": None}  # a null in the config stays None


def test_strict_json_converts_numpy_and_nested_values() -> None:
    import numpy as np

    from kdlib.study.results import strict_json

    text = strict_json({"a": np.array([1.0, np.nan]), "b": [{"c": np.float32("inf")}], "d": (1, 2)})
    assert json.loads(text) == {"a": [1.0, None], "b": [{"c": None}], "d": [1, 2]}


# ------------------------------------------------------------------------------- unusable store files, up front


def test_a_results_file_that_is_a_folder_fails_on_open(tmp_path: Path) -> None:
    (tmp_path / "r" / "study.jsonl").mkdir(parents=True)
    with pytest.raises(PermissionError, match=r"study\.jsonl is a folder"):
        ResultsStore.open("study", tmp_path / "r")


@pytest.fixture
def file_modes_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``open`` refuse writing a file without write bits, as the kernel does for any user but root (the
    tests may run as root, who may write anything)."""
    real_open = open

    def open_as_a_user(path, mode="r", *args, **kwargs):
        writes = any(c in mode for c in "wa+")
        if writes and isinstance(path, str | Path) and Path(path).exists() and not Path(path).stat().st_mode & 0o222:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_as_a_user)


def test_a_read_only_results_file_fails_on_open(tmp_path: Path, file_modes_apply) -> None:
    store = ResultsStore(tmp_path / "study.jsonl")
    store.append("distill", CONFIG_A, {"gain": 0.1})
    before = store.path.read_bytes()
    store.path.chmod(0o444)
    with pytest.raises(PermissionError, match=r"study\.jsonl is not writable"):
        ResultsStore.open("study", tmp_path)
    assert store.path.read_bytes() == before


def test_the_cli_refuses_a_read_only_store_before_training(tmp_path: Path, isolated_folders, file_modes_apply) -> None:
    import contextlib
    import io

    from kdlib.__main__ import main

    results = tmp_path / "shared"
    results.mkdir()
    (results / "study.jsonl").write_text("")
    (results / "study.jsonl").chmod(0o444)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["study", "--dataset", "digits", "--set", "n_train=null", "--set", "n_test=null", "--quiet",
                     "--results", str(results)])
    assert code == 2
    assert "study.jsonl is not writable" in err.getvalue()
    assert not isolated_folders["cache"].exists(), "training started before the check"


# ------------------------------------------------------------------------------------------------------ claims


def test_claim_yields_true_once_and_false_when_stored(store: ResultsStore) -> None:
    key = run_key("distill", CONFIG_A)
    with store.claim(key) as mine:
        assert mine
        with store.claim(key) as again:  # another claimant while this one holds it
            assert not again
        store.append("distill", CONFIG_A, {"gain": 0.1})
    with store.claim(key) as later:
        assert not later
    with pytest.raises(Exception, match="key="):
        with store.claim("../escape"):
            pass


def test_a_claim_left_without_a_record_passes_on(store: ResultsStore) -> None:
    key = run_key("distill", CONFIG_A)
    with store.claim(key) as mine:
        assert mine  # ... and this claimant fails without storing
    with store.claim(key, wait=True) as next_one:
        assert next_one


def _race(folder: str, key_config: dict, start_at: float, queue) -> None:
    store = ResultsStore(Path(folder) / "study.jsonl")
    key = run_key("distill", key_config)
    while time.time() < start_at:
        time.sleep(0.001)
    with store.claim(key, wait=True) as mine:
        if mine:
            time.sleep(0.3)  # the computation: long enough for the other process to try meanwhile
            store.append("distill", key_config, {"gain": 0.1})
    queue.put(mine)


def test_two_processes_racing_on_one_key_compute_it_once(store: ResultsStore) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start_at = time.time() + 2.0
    workers = [context.Process(target=_race, args=(str(store.path.parent), CONFIG_A, start_at, queue))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    outcomes = sorted(queue.get(timeout=5) for _ in workers)
    assert outcomes == [False, True], "exactly one process computes the key"
    assert [r["key"] for r in store.records()] == [run_key("distill", CONFIG_A)], "one record, not two"
