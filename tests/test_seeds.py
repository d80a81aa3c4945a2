"""Seeds: each (scenario, method, seed) is one job and one stored record, the parties are pre-trained per seed,
and an interrupted multi-seed study resumes with only the missing jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlib.errors import KDConfigError
from kdlib.study.config import scale_config
from kdlib.study.results import ResultsStore, run_key
from kdlib.study.runner import Study, run_config

TINY = dict(
    dataset="digits",
    n_train=None,
    n_test=None,
    teacher_model="mlp",
    student_model="mlp",
    scenarios=("iid",),
    methods=("finetune", "standard"),
    pretrain={"epochs": 1},
    distill={"epochs": 1},
    val_size=100,
)


def tiny_study(folder: Path, **changes) -> Study:
    cfg = scale_config("smoke", **{**TINY, **changes})
    return Study(cfg, ResultsStore.open("study", folder), device="cpu", progress=False)


def test_jobs_are_every_scenario_method_and_seed_seed_by_seed(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, seed=5, seeds=3, scenarios=("iid", "disjoint"))
    jobs = study.jobs()
    assert study.seeds == (5, 6, 7)
    assert len(jobs) == len(set(jobs)) == 2 * 2 * 3
    assert [seed for *_, seed in jobs] == sorted(seed for *_, seed in jobs)  # whole seeds first
    assert {(s, m) for s, m, _ in jobs} == {(s, m) for s in ("iid", "disjoint") for m in ("finetune", "standard")}


def test_a_run_key_holds_its_own_seed_and_not_the_seed_count(tmp_path: Path) -> None:
    one, three = tiny_study(tmp_path).cfg, tiny_study(tmp_path, seeds=3).cfg
    assert run_config(one, "iid", "standard") == run_config(three, "iid", "standard", seed=0)
    second = run_config(three, "iid", "standard", seed=1)
    assert second["seed"] == 1
    assert second == run_config(one.replace(seed=1), "iid", "standard")
    with pytest.raises(KDConfigError, match="seed"):
        run_config(one, "iid", "standard", seed=-1)


def test_complete_seeds_counts_whole_seeds_from_the_first(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, seeds=3)
    done = {"acc_before": 0.5, "acc_after": 0.6, "gain": 0.1}

    def store(job: tuple[str, str, int], metrics: dict) -> None:
        scenario, method, seed = job
        study.store.append("distill", run_config(study.cfg, scenario, method, seed=seed), metrics)

    assert study.complete_seeds() == 0
    for job in study.jobs():
        if job[2] != 1 or job[1] != "standard":  # seed 1 lacks one run; seeds 0 and 2 are whole
            store(job, done)
    assert study.complete_seeds() == 1  # seed 2 is whole but follows a gap: a notebook reads seeds 0, 1, ...
    store(("iid", "standard", 1), {**done, "gain": float("nan")})  # a NaN record is not done
    with pytest.warns(UserWarning, match="non-finite gain"):
        assert study.complete_seeds() == 1
    store(("iid", "standard", 1), done)
    assert study.complete_seeds() == 3


def test_seeds_must_be_a_positive_count() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(KDConfigError, match="seeds"):
            scale_config("smoke", seeds=bad)


def test_full_runs_ten_seeds_and_paper_three() -> None:
    assert scale_config("full").seeds == 10
    assert scale_config("paper").seeds == 3


def test_an_interrupted_multi_seed_study_resumes_with_only_the_missing_jobs(
    tmp_path: Path, isolated_folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = tiny_study(tmp_path / "results", seeds=2)
    calls: list[tuple[str, int]] = []
    real = Study._dispatch

    def interrupted(self, method, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the fourth job never finishes
        calls.append((method, args[-1].cfg.seed))  # args: the MethodRun
        return real(self, method, *args)

    monkeypatch.setattr(Study, "_dispatch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        study.run_all()
    assert len(study.store.records()) == 3
    monkeypatch.setattr(Study, "_dispatch", real)

    resumed = tiny_study(tmp_path / "results", seeds=2)
    again: list[tuple[str, int]] = []
    monkeypatch.setattr(Study, "_dispatch", lambda self, m, *a: again.append((m, a[-1].cfg.seed)) or real(self, m, *a))
    table = resumed.run_all()
    assert again == [("standard", 1)]  # the one job the interruption left undone
    records = resumed.store.records()
    assert len(records) == len({r["key"] for r in records}) == 4
    assert sorted((r["config"]["method"], r["config"]["seed"]) for r in records) == [
        ("finetune", 0), ("finetune", 1), ("standard", 0), ("standard", 1)
    ]  # fmt: skip
    frame = resumed.frame()
    assert sorted(frame["seed"]) == [0, 0, 1, 1]
    mean = frame.groupby("method")["gain"].mean() * 100
    assert table.loc["iid", "standard"] == pytest.approx(mean["standard"], abs=0.01)


def test_parties_are_pre_trained_per_seed(tmp_path: Path, isolated_folders) -> None:
    study = tiny_study(tmp_path / "results", seeds=2)
    (_, t0), (_, s0) = study.parties("iid", seed=0)
    (_, t1), (_, s1) = study.parties("iid", seed=1)
    assert t0["config"]["seed"] == s0["config"]["seed"] == 0
    assert t1["config"]["seed"] == s1["config"]["seed"] == 1
    assert len(list(isolated_folders["cache"].rglob("*.safetensors"))) == 4
    record = study.run("iid", "finetune", seed=1)
    assert record["parties"]["student"]["config"]["seed"] == 1
    assert record["key"] == run_key("distill", run_config(study.cfg, "iid", "finetune", seed=1))


def test_plan_counts_each_seeds_stored_runs_names_the_missing_and_runs_nothing(
    tmp_path: Path, isolated_folders, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from kdlib.__main__ import main
    from kdlib.study.parallel import stored_by_seed

    study = tiny_study(tmp_path, seeds=2, scenarios=("iid", "disjoint"))
    for scenario, method, seed in study.jobs():
        if (seed, scenario, method) != (1, "disjoint", "standard"):
            metrics = {"acc_before": 0.5, "acc_after": 0.6, "gain": 0.1}
            study.store.append("distill", run_config(study.cfg, scenario, method, seed=seed), metrics)
    rows = stored_by_seed(study)
    assert [(r["seed"], r["stored"], r["jobs"], r["missing"]) for r in rows] == [
        (0, 4, 4, []),
        (1, 3, 4, ["disjoint standard"]),
    ]

    def never(*args, **kwargs):
        raise AssertionError("--plan must neither run a method nor load data")

    monkeypatch.setattr(Study, "_dispatch", never)
    monkeypatch.setattr(Study, "dataset_for", never)
    sets = [f"{key}={json.dumps(value)}" for key, value in {**TINY, "scenarios": ["iid", "disjoint"]}.items()]
    argv = ["study", "--plan", "--device", "cpu", "--results", str(tmp_path), "--set", "seeds=3"]
    assert main(argv + [arg for pair in sets for arg in ("--set", pair)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("study of digits, scale smoke") and "1 of 3 seed(s) complete" in lines[0]
    assert lines[1:] == [
        "seed 0: 4/4 runs stored",
        "seed 1: 3/4 runs stored; missing disjoint standard",
        "seed 2: 0/4 runs stored; missing iid finetune, iid standard, disjoint finetune, disjoint standard",
    ]
