"""What is stored is verified before it counts: a checkpoint's side file is under its digest (an edited ``test_acc``
is refused), and a record whose headline metric is NaN is not counted as done (it is run again, with a warning
naming its key)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from kdlib.core.checkpoints import WEIGHTS_FIELD, load_checkpoint, save_checkpoint
from kdlib.core.models import build_model
from kdlib.errors import KDConfigError
from kdlib.study.config import scale_config
from kdlib.study.results import ResultsStore, run_key
from kdlib.study.runner import Study, run_config

META = {"test_acc": 0.93, "own_acc": 0.95, "unseen_acc": float("nan"), "config": {"party": 0, "seed": 3}}


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", 10, (1, 8, 8))


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(mlp(), tmp_path / "party.safetensors", META)


def side_file(checkpoint: Path) -> tuple[Path, dict]:
    side = checkpoint.with_suffix(".json")
    return side, json.loads(side.read_text())


# ------------------------------------------------------------------------------------------------ checkpoints


def test_an_intact_side_file_loads_with_its_values(checkpoint: Path) -> None:
    meta = load_checkpoint(mlp(1), checkpoint)
    assert meta["test_acc"] == 0.93 and meta["config"] == META["config"] and math.isnan(meta["unseen_acc"])
    side, stored = side_file(checkpoint)
    side.write_text(json.dumps(stored, indent=4, sort_keys=True))  # the same content, laid out differently
    assert load_checkpoint(mlp(1), checkpoint)["test_acc"] == 0.93


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: {**m, "test_acc": 0.10},  # the case
        lambda m: {**m, "config": {**m["config"], "seed": 4}},
        lambda m: {**m, "extra": 1},
        lambda m: {k: v for k, v in m.items() if k != "own_acc"},
        lambda m: {**m, WEIGHTS_FIELD: {**m[WEIGHTS_FIELD], "bytes": m[WEIGHTS_FIELD]["bytes"] + 1}},
    ],
    ids=["test_acc", "config", "added field", "removed field", "weights size"],
)
def test_any_edit_of_the_side_file_is_refused_in_one_line(checkpoint: Path, edit) -> None:
    side, stored = side_file(checkpoint)
    side.write_text(json.dumps(edit(stored)))
    with pytest.raises(KDConfigError, match=r"^checkpoint metadata='.*party\.json' is not valid: ") as info:
        load_checkpoint(mlp(1), checkpoint)
    message = str(info.value)
    assert "no longer matches its digest" in message and "delete it and party.safetensors" in message
    assert "\n" not in message


def test_a_side_file_written_before_the_metadata_digest_is_refused_with_what_to_delete(checkpoint: Path) -> None:
    side, stored = side_file(checkpoint)
    del stored[WEIGHTS_FIELD]["meta_sha256"]  # what an older kdlib wrote
    side.write_text(json.dumps(stored))
    with pytest.raises(KDConfigError, match="an older kdlib wrote it") as info:
        load_checkpoint(mlp(1), checkpoint)
    assert f"delete the checkpoint cache {checkpoint.parent}" in str(info.value)


def test_an_edited_teacher_accuracy_never_reaches_a_party(tmp_path: Path, isolated_folders) -> None:
    from kdlib.data.datasets import Subsample, load_dataset
    from kdlib.study.parties import make_scenario, pretrained_party

    cfg = scale_config(
        "smoke", dataset="digits", n_train=None, n_test=None, teacher_model="mlp", pretrain={"epochs": 1}
    )
    data = load_dataset("digits", subsample=Subsample(None, None), progress=False)
    scenario = make_scenario(data, "iid", cfg)
    pretrained_party(data, scenario, 0, "mlp", cfg, "cpu", progress=False)
    (side,) = (isolated_folders["cache"] / "parties").glob("*.json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "test_acc": 0.10}))
    with pytest.raises(KDConfigError, match="no longer matches its digest"):
        pretrained_party(data, scenario, 0, "mlp", cfg, "cpu", progress=False)


# ------------------------------------------------------------------------------------------------ NaN records


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore.open("study", tmp_path)


def test_a_record_with_a_nan_gain_is_not_done_and_the_warning_names_it(store: ResultsStore) -> None:
    config = {"scenario": "iid", "method": "finetune", "seed": 1}
    key = store.append("distill", config, {"gain": float("nan"), "acc_before": 0.5, "acc_after": 0.4})["key"]
    with pytest.warns(UserWarning, match=rf"the record {key} has a non-finite gain: it does not count as done"):
        assert store.get(key) is None
    with pytest.warns(UserWarning, match=key):
        assert not store.has(key)
    with pytest.warns(UserWarning, match=key):
        assert key not in store.keys()
    with pytest.warns(UserWarning, match=key), store.claim(key) as mine:
        assert mine  # its claim is taken: it is computed again
    store.append("distill", config, {"gain": 0.1, "acc_before": 0.5, "acc_after": 0.6})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.get(key)["metrics"]["gain"] == 0.1 and store.has(key) and store.keys() == {key}
    assert len(store.records()) == 2  # the NaN record is kept, not rewritten


def test_only_the_headline_metrics_decide(store: ResultsStore) -> None:
    done = store.append("distill", {"a": 1}, {"gain": 0.1, "acc_before": 0.5, "acc_after": 0.6,
                                              "unseen_before": float("nan")})  # fmt: skip
    other_kind = store.append("standard", {"a": 2}, {"acc": float("nan")})
    federated = store.append("federated", {"a": 3}, {"initial_acc": 0.1, "final_acc": float("inf")})
    with pytest.warns(UserWarning, match=rf"{federated['key']} has a non-finite final_acc"):
        assert store.keys() == {done["key"], other_kind["key"]}


def test_the_study_runs_a_nan_record_again(tmp_path: Path, isolated_folders) -> None:
    cfg = scale_config("smoke", dataset="digits", n_train=None, n_test=None, teacher_model="mlp", student_model="mlp",
                       scenarios=("iid",), methods=("finetune",), pretrain={"epochs": 1}, distill={"epochs": 1},
                       seeds=1, val_size=100)  # fmt: skip
    study = Study(cfg, ResultsStore.open("study", tmp_path), device="cpu", progress=False)
    config = run_config(cfg, "iid", "finetune", seed=cfg.seed)
    key = run_key("distill", config)
    study.store.append("distill", config, {"gain": float("nan"), "acc_before": 0.5, "acc_after": float("nan")})
    with pytest.warns(UserWarning, match=key):
        study.run_all(workers=1)
    records = [r for r in study.store.records() if r["key"] == key]
    assert len(records) == 2 and math.isfinite(records[-1]["metrics"]["gain"])
    study.run_all(workers=1)  # done now: not run a third time
    assert len(study.store.records()) == 2
