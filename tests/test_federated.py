"""kdlib.fl: FedAvg aggregation, rounds to target, KD consolidation, config checks, and one real Flower
simulation (2 clients, 2 rounds, digits) on the Ray backend."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from kdlib.core.metrics import accuracy
from kdlib.core.models import build_model
from kdlib.core.train import RunOptions, TrainConfig, predict_logits, seed_everything, train_supervised
from kdlib.data.datasets import load_dataset
from kdlib.errors import KDConfigError
from kdlib.fl.analysis import (
    compare_with_paper,
    round_reduction,
    round_reduction_summary,
    rounds_to_target,
    scenario_target,
)
from kdlib.fl.config import FederatedConfig, federated_scale_config
from kdlib.fl.fedavg import aggregate_state_dicts, sample_clients
from kdlib.fl.simulation import torch_threads
from kdlib.fl.starts import KDRecipe, distill_averaged
from kdlib.fl.study import FederatedStudy, group_key, open_federated, run_config
from kdlib.fl.task import split_clients
from kdlib.study.results import ResultsStore

FAST = TrainConfig(epochs=3, batch_size=32, lr=0.05)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", progress=False)


# ------------------------------------------------------------------------------------------ aggregation


def test_aggregation_is_the_weighted_mean_by_hand():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.0, 10.0])}
    b = {"w": torch.tensor([[5.0, 6.0], [7.0, 8.0]]), "b": torch.tensor([4.0, -2.0])}
    out = aggregate_state_dicts([a, b], weights=[1, 3])  # a weighs 1/4, b 3/4
    assert torch.allclose(out["w"], torch.tensor([[4.0, 5.0], [6.0, 7.0]]))
    assert torch.allclose(out["b"], torch.tensor([3.0, 1.0]))


def test_aggregation_of_tiny_models_matches_the_weighted_mean(digits):
    states, sizes = [], [30, 70, 100]
    for seed in range(3):
        seed_everything(seed)
        model = build_model("cnn-small", digits.num_classes, digits.in_shape)  # with BatchNorm buffers
        states.append(model.state_dict())
    out = aggregate_state_dicts(states, sizes)
    assert set(out) == set(states[0])
    for key, value in out.items():
        expected = sum(s[key].double() * n for s, n in zip(states, sizes, strict=True)) / sum(sizes)
        assert torch.allclose(value.double(), expected, atol=1e-6), key


# ------------------------------------------------------------------------------------------ rounds to target


def test_rounds_to_target_on_hand_made_curves():
    curve = [0.2, 0.35, 0.5, 0.48, 0.61]
    assert rounds_to_target(curve, 0.5) == 3
    assert rounds_to_target(curve, 0.2) == 1
    assert rounds_to_target(curve, 0.7) is None
    assert rounds_to_target(curve, 0.5, initial=0.55) == 0
    assert rounds_to_target([], 0.1) is None


def test_reduction_is_honest_about_never_reached():
    assert round_reduction(4, 10) == pytest.approx(0.6)
    assert round_reduction(None, 10) is None
    assert round_reduction(4, None) is None
    assert scenario_target(None, 0.9, [0.1, 0.5, 0.4]) == pytest.approx(0.45)
    assert scenario_target(0.3, 0.9, []) == 0.3


def test_round_reduction_summary_from_a_hand_made_frame():
    base = {"kind": "federated", "rounds": 10, "scale": "smoke", "dataset": "digits", "group": "g"}
    rows = [
        {**base, "key": "1", "scenario": "iid", "start": "random", "rounds_to_target": 8},
        {**base, "key": "2", "scenario": "iid", "start": "kd_avg", "rounds_to_target": 2},
        {**base, "key": "3", "scenario": "iid", "start": "one_client", "rounds_to_target": None},
    ]
    frame = pd.DataFrame(rows).assign(target_accuracy=0.5, initial_acc=0.1, final_acc=0.6)
    summary = round_reduction_summary(frame).set_index("start")
    assert summary.loc["kd_avg", "reduction_pct"] == pytest.approx(75.0)
    assert summary.loc["random", "reduction_pct"] == pytest.approx(0.0)
    assert math.isnan(summary.loc["one_client", "reduction_pct"])
    assert summary.loc["one_client", "status"] == "not reached within 10 rounds"
    paper = compare_with_paper(summary.reset_index())
    assert paper.loc["kd_avg", "ours (%)"] == pytest.approx(75.0)
    assert paper.loc["kd_avg", "paper (%)"] == pytest.approx(60.6)


def test_status_gives_a_lower_bound_when_only_the_baseline_misses():
    base = {"kind": "federated", "rounds": 10, "scale": "smoke", "dataset": "digits", "group": "g"}
    rows = [
        {**base, "key": "1", "scenario": "iid", "start": "random", "rounds_to_target": None},
        {**base, "key": "2", "scenario": "iid", "start": "kd_dp", "rounds_to_target": 3},
    ]
    frame = pd.DataFrame(rows).assign(target_accuracy=0.5, initial_acc=0.1, final_acc=0.6)
    summary = round_reduction_summary(frame).set_index("start")
    assert math.isnan(summary.loc["kd_dp", "reduction_pct"])
    assert summary.loc["kd_dp", "status"] == "reached at round 3; random init not within 10 (> 73%)"
    assert round_reduction_summary(pd.DataFrame()).empty


def test_summary_follows_the_target_rule_without_rerunning(tmp_path):
    cfg = FederatedConfig(dataset="digits", n_train=None, n_test=None, scenarios=("iid",), starts=("random", "kd_avg"))
    store = ResultsStore.open("fl", tmp_path)
    curves = {"random": [0.1, 0.3, 0.5, 0.7, 0.8], "kd_avg": [0.6, 0.7, 0.75, 0.8, 0.82]}
    for start, accs in curves.items():
        rows = [
            {"round": r, "accuracy": a, "loss": 1.0, "bytes_down": 100, "bytes_up": 100} for r, a in enumerate(accs)
        ]
        metrics = {"start_mb": 0.0, "group": group_key(cfg, "iid"), "initial_acc": accs[0], "final_acc": accs[-1]}
        store.append("federated", run_config(cfg, "iid", start), metrics, curves=rows)
    strict = FederatedStudy(cfg, store, progress=False).summary().set_index("start")
    assert strict.loc["random", "rounds_to_target"] == 4 and strict.loc["kd_avg", "rounds_to_target"] == 3
    assert strict.loc["kd_avg", "reduction_pct"] == pytest.approx(25.0)
    loose = FederatedStudy(cfg.replace(target_relative=0.5), store, progress=False).summary().set_index("start")
    assert loose.loc["random", "rounds_to_target"] == 2 and loose.loc["kd_avg", "rounds_to_target"] == 0
    fixed = FederatedStudy(cfg.replace(target_accuracy=0.9), store, progress=False).summary()
    assert fixed["rounds_to_target"].isna().all()


def test_client_sampling_is_seeded_and_complete_at_fraction_one():
    assert sample_clients(10, 1.0, 0, 3) == list(range(10))
    half = sample_clients(10, 0.5, 0, 3)
    assert len(half) == 5 and half == sample_clients(10, 0.5, 0, 3)
    assert any(sample_clients(10, 0.5, 0, r) != half for r in range(4, 10))


def test_split_holds_out_a_public_split_no_client_gets(digits):
    labels = digits.y_train.numpy()
    split = split_clients(labels, "dirichlet:0.5", 5, 0.2, seed=0, num_classes=10)
    owned = np.concatenate(split.parts)
    assert len(np.intersect1d(owned, split.public)) == 0
    assert len(owned) + len(split.public) == len(labels)
    assert len(split.public) == round(0.2 * len(labels))


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"num_clients": 1}, "num_clients"),
        ({"starts": ("kd_avg",)}, "starts"),
        ({"starts": ("random", "magic")}, "starts"),
        ({"public_fraction": 1.0}, "public_fraction"),
        ({"rounds": 0}, "rounds"),
        ({"fraction_fit": 0.0}, "fraction_fit"),
        ({"target_accuracy": 1.5}, "target_accuracy"),
        ({"target_relative": 0.0}, "target_relative"),
        ({"model": "gpt"}, "model"),
        ({"scenarios": ("weird:3",)}, "partition"),
        ({"temperature": -1.0}, "temperature"),
        ({"dp_variant": "both"}, "dp_variant"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(KDConfigError) as info:
        FederatedConfig().replace(**changes)
    assert info.value.field == field


def test_scale_configs_and_overrides():
    smoke = federated_scale_config("smoke", scenarios="iid, dirichlet:0.3", local={"epochs": 2})
    assert smoke.scenarios == ("iid", "dirichlet:0.3") and smoke.local.epochs == 2
    assert federated_scale_config("full").model == "resnet8"
    assert federated_scale_config("paper", n_train=None).n_train is None
    with pytest.raises(KDConfigError):
        federated_scale_config("huge")
    with pytest.raises(KDConfigError):
        FederatedConfig().replace(nonsense=1)


# ------------------------------------------------------------------------------------------ KD consolidation


OLD_COMMON_FIELDS = ("scale", "dataset", "n_train", "n_test", "seed", "num_clients", "public_fraction", "model",
                     "local", "rounds", "fraction_fit")  # fmt: skip
OLD_START_FIELDS = {  # federated.START_FIELDS before kdlib/fl/
    "random": (),
    "one_client": ("pretrain",),
    "kd_avg": ("pretrain", "kd", "temperature", "kd_alpha"),
    "kd_dp": ("pretrain", "kd", "temperature", "kd_alpha", "dp_variant"),
}


@pytest.mark.parametrize("scale", ["smoke", "full", "paper"])
def test_run_and_group_keys_are_those_of_the_old_module(scale):
    """Stored federated runs are still found: the run config (and so the key) of each start is the one the old
    ``kdlib/fl.py`` computed, field for field."""
    from kdlib.core.checkpoints import config_key
    from kdlib.study.results import run_key

    cfg = federated_scale_config(scale, seed=3)
    full = cfg.as_dict()
    for start, fields in OLD_START_FIELDS.items():
        old = {"scenario": "dirichlet:0.5", "start": start, **{k: full[k] for k in OLD_COMMON_FIELDS + fields}}
        assert run_config(cfg, "dirichlet:0.5", start) == old
        assert run_key("federated", run_config(cfg, "dirichlet:0.5", start)) == run_key("federated", old)
    old_group = config_key({"scenario": "iid", **{k: full[k] for k in OLD_COMMON_FIELDS}})
    assert group_key(cfg, "iid") == old_group


def test_the_public_split_is_the_old_modules(digits):
    """The shared hold-out (``parties.hold_out_public``) gives the federated public split the old code drew."""
    from kdlib.data.datasets import stratified_subset

    labels = digits.y_train.numpy()
    for fraction, clients, seed in ((0.25, 10, 0), (0.1, 4, 7), (0.001, 3, 1)):
        split = split_clients(labels, "dirichlet:0.5", clients, fraction, seed=seed, num_classes=10)
        old_public = stratified_subset(labels, max(10, round(len(labels) * fraction)), seed)
        assert np.array_equal(split.public, old_public)
        assert np.array_equal(np.sort(np.concatenate(split.parts)), np.setdiff1d(np.arange(len(labels)), old_public))


def test_client_checkpoints_keep_their_cache_path(tmp_path):
    """A client's pre-trained model is cached where the old module put it (``federated/<key of its settings>``)
    with its settings as ``config``, and is loaded from there the second time."""
    from kdlib.core.checkpoints import config_key

    cfg = FederatedConfig(dataset="digits", n_train=None, n_test=None, scenarios=("iid",), num_clients=2, model="mlp",
                          pretrain=TrainConfig(epochs=1, batch_size=64, lr=0.05))  # fmt: skip
    study = FederatedStudy(cfg, ResultsStore.open("fl", tmp_path), device="cpu", progress=False, cache_dir=tmp_path)
    settings = {"dataset": "digits", "n_train": None, "n_test": None, "seed": 0, "scenario": "iid", "num_clients": 2,
                "public_fraction": cfg.public_fraction, "client": 1, "model": "mlp",
                "pretrain": cfg.pretrain.as_dict()}  # fmt: skip
    path = tmp_path / "federated" / f"{config_key(settings)}.safetensors"
    with torch_threads(1):
        model, meta = study.client_models("iid")[1]
        assert path.exists() and meta["config"] == settings
        again = FederatedStudy(cfg, study.store, device="cpu", progress=False, cache_dir=tmp_path)
        loaded, meta_again = again.client_models("iid")[1]
    assert meta_again["test_acc"] == meta["test_acc"]
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_run_claimed_by_another_process_is_left_to_it_then_run_here_once(tmp_path, monkeypatch):
    """Federated runs are made under the store's claim on their key, like the distillation study's: a claimed run
    is left to its claimant; once the claim ends without a record, the next ``run_all`` makes it; nothing twice."""
    import kdlib.fl.study as fl_study
    from kdlib.fl.fedavg import FLRun
    from kdlib.study.parallel import run_claimed_batch

    simulated: list[list[tuple[str, str]]] = []

    def fake_simulate(jobs, cfg, evaluate_data, on_done, options=None):  # a made-up curve per job, no Ray
        simulated.append([(job.scenario, job.start) for job in jobs])
        for job in jobs:
            curve = [{"round": r, "accuracy": 0.1 * (r + 1), "loss": 1.0, "bytes_down": 10, "bytes_up": 10,
                      "train_loss": 1.0} for r in range(cfg.rounds + 1)]  # fmt: skip
            on_done(job, FLRun(curve, 0.0))

    monkeypatch.setattr(fl_study, "simulate", fake_simulate)
    cfg = FederatedConfig(dataset="digits", n_train=None, n_test=None, scenarios=("iid", "dirichlet:0.5"),
                          starts=("random",), num_clients=2, model="mlp", rounds=2)  # fmt: skip
    study = FederatedStudy(cfg, ResultsStore.open("fl", tmp_path), device="cpu", progress=False, cache_dir=tmp_path)
    taken = ("dirichlet:0.5", "random", 0)
    with study.store.claim(study.job_key(taken)) as mine:  # as if another process were computing it
        assert mine
        left = run_claimed_batch(study, study.pending(), wait=False)
    assert left == [taken] and simulated == [[("iid", "random")]]
    assert {(r["config"]["scenario"], r["config"]["start"]) for r in study.store.records()} == {("iid", "random")}
    study.run_all()  # the claimant ended without storing it: run here, once
    assert simulated[-1] == [taken[:2]]
    assert sorted(r["key"] for r in study.store.records()) == sorted(study.job_key(job) for job in study.jobs())
    study.run_all()
    assert len(simulated) == 2 and len(study.store.records()) == 2  # all stored: nothing run again


def test_multi_teacher_kd_beats_a_random_start(digits):
    with torch_threads(1):  # tiny models: one thread is fastest on a busy machine
        _check_kd_beats_random(digits)


def _check_kd_beats_random(digits) -> None:
    labels = digits.y_train.numpy()
    split = split_clients(labels, "dirichlet:0.5", 4, 0.3, seed=0, num_classes=10)
    teachers = []
    for i, part in enumerate(split.parts):
        seed_everything(i)
        model = build_model("mlp", digits.num_classes, digits.in_shape)
        idx = torch.as_tensor(part)
        train_supervised(model, digits.x_train[idx], digits.y_train[idx], FAST, RunOptions("cpu", False))
        teachers.append(model)
    seed_everything(0)
    student = build_model("mlp", digits.num_classes, digits.in_shape)
    random_acc = accuracy(predict_logits(student, digits.x_test, "cpu"), digits.y_test)
    public = torch.as_tensor(split.public)
    cfg = TrainConfig(epochs=10, batch_size=32, lr=0.05)
    data = (digits.x_train[public], digits.y_train[public])
    distill_averaged(student, teachers, data, KDRecipe(4.0, 1.0, cfg), device="cpu", progress=False)
    kd_acc = accuracy(predict_logits(student, digits.x_test, "cpu"), digits.y_test)
    assert kd_acc > random_acc + 0.3, (random_acc, kd_acc)


@pytest.mark.usefixtures("float32_forward")
@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_averaged_kd_trains_as_the_hand_written_loss_did(digits, alpha: float) -> None:
    """``distill_averaged`` goes through ``losses.kd_loss``; the student it trains matches one trained with the loss
    written out by hand (alpha * T^2 * KL(mean teacher probs || student probs at T) + (1 - alpha) * CE)."""
    import torch.nn.functional as F

    from kdlib.core.losses import averaged_soft_targets
    from kdlib.core.train import RunOptions, fit

    x, y, temperature = digits.x_train[:256], digits.y_train[:256], 3.0
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    teachers = []
    for i in range(2):
        seed_everything(10 + i)
        teachers.append(build_model("mlp", digits.num_classes, digits.in_shape))
    students = []
    for _ in range(2):
        seed_everything(0)
        students.append(build_model("mlp", digits.num_classes, digits.in_shape))
    with torch_threads(1):
        distill_averaged(students[0], teachers, (x, y), KDRecipe(temperature, alpha, cfg), device="cpu", progress=False)
        probs = averaged_soft_targets([predict_logits(t, x, "cpu") for t in teachers], temperature)

        def by_hand(xb, yb, idx):
            logits = students[1](xb)
            log_student = F.log_softmax(logits / temperature, dim=-1)
            soft = temperature**2 * F.kl_div(log_student, probs[idx], reduction="batchmean")
            return alpha * soft + (1 - alpha) * F.cross_entropy(logits, yb)

        fit([students[1]], x, y, by_hand, cfg, RunOptions("cpu", False, desc="by hand"))
    for a, b in zip(students[0].state_dict().values(), students[1].state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), (a - b).abs().max()


# ------------------------------------------------------------------------------------------ Flower simulation


def test_flower_simulation_two_clients_two_rounds(tmp_path):
    pytest.importorskip("ray")
    import ray

    cfg = FederatedConfig(
        dataset="digits",
        n_train=None,
        n_test=None,
        scenarios=("iid",),
        starts=("random", "kd_avg"),
        num_clients=2,
        model="mlp",
        rounds=2,
        pretrain=FAST,
        kd=FAST,
        local=TrainConfig(epochs=1, batch_size=32, lr=0.05),
    )
    study = FederatedStudy(cfg, ResultsStore.open("fl", tmp_path), cache_dir=tmp_path, progress=False, num_cpus=2)
    summary = study.run_all()
    assert not ray.is_initialized()
    assert set(summary["start"]) == {"random", "kd_avg"}
    records = study.records()
    assert len(records) == 2
    for record in records:
        curve = record["curves"]
        assert [row["round"] for row in curve] == [0, 1, 2]
        assert all(row["bytes_down"] > 0 and row["bytes_up"] > 0 for row in curve[1:])
        assert curve[-1]["accuracy"] > curve[0]["accuracy"] or record["config"]["start"] == "kd_avg"
    kd = next(r for r in records if r["config"]["start"] == "kd_avg")
    assert kd["metrics"]["kd_wall_s"] > 0 and kd["metrics"]["kd_sample_epochs"] > 0
    assert study.pending() == []  # stored: a second run_all would skip both
    if os.path.exists("/proc"):
        from kdlib.fl.simulation import descendants as _descendants

        left = [p for p in _descendants(os.getpid()) if "ray" in open(f"/proc/{p}/cmdline").read()]
        assert left == []


def test_open_federated_leaves_distillation_only_overrides_to_their_notebooks(tmp_path):
    with pytest.warns(UserWarning, match="teacher_model"):
        study = open_federated("smoke", results=str(tmp_path), teacher_model="cnn", rounds=3, scenarios="iid")
    assert study.cfg.rounds == 3 and study.cfg.scenarios == ("iid",)
    with pytest.raises(KDConfigError):
        open_federated("smoke", results=str(tmp_path), bogus=1)


def test_federated_plan_counts_stored_starts_per_seed_and_runs_nothing(
    tmp_path, isolated_folders, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdlib.__main__ import main
    from kdlib.fl.config import KIND

    def never(*args, **kwargs):
        raise AssertionError("--plan must not run a federated job")

    monkeypatch.setattr(FederatedStudy, "run_batch", never)
    fed = open_federated("smoke", results=str(tmp_path), seeds=2, scenarios="iid", starts="random,kd_avg")
    fed.store.append(KIND, run_config(fed.cfg.replace(seed=1), "iid", "kd_avg"), {"rounds_to_target": 3})
    argv = ["federated", "--plan", "--device", "cpu", "--results", str(tmp_path), "--seeds", "2",
            "--set", "scenarios=iid", "--set", "starts=random,kd_avg"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "0 of 2 seed(s) complete" in lines[0]
    assert lines[1:] == [
        "seed 0: 0/2 runs stored; missing iid random, iid kd_avg",
        "seed 1: 1/2 runs stored; missing iid random",
    ]
