"""Tests for kdlib.tune.halving: rungs continue exactly where they stopped (a point trained to the full budget equals
its one-at-a-time grid run), the schedule, the replay, and kill-and-resume between rungs."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kdlib.core.distill import TuningProblem, best_point, grid_search
from kdlib.core.models import build_model
from kdlib.core.train import RunOptions, TrainConfig, seed_everything
from kdlib.data.datasets import load_dataset
from kdlib.errors import KDConfigError
from kdlib.tune.halving import (
    DEFAULT_SCHEDULE,
    ETA,
    Checkpointing,
    HalvingSchedule,
    Rung,
    Stacking,
    checkpoint_path,
    halving_schedule,
    halving_search,
    replay,
)
from kdlib.tune.tuned import run_tuned

TEMPS, ALPHAS = (1.0, 4.0, 16.0), (0.0, 0.5, 0.9)
CFG = TrainConfig(epochs=3, batch_size=32, lr=0.05)
QUIET_CPU = RunOptions("cpu", progress=False)
NO_CHECKPOINT = Checkpointing(checkpoint=None)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Tiny models: one thread is as fast and stays fast on a busy machine (conftest's ``one_torch_thread``)."""


@pytest.fixture(scope="module")
def problem():
    data = load_dataset("digits")
    seed_everything(0)
    teacher = build_model("mlp", 10, data.in_shape)
    student = build_model("cnn-small", 10, data.in_shape)
    return data.x_train[:300], data.y_train[:300], teacher, student


def _states():
    states: list[dict] = []

    def evaluate(model: torch.nn.Module) -> dict:
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"probe": len(states)}

    return states, evaluate


def _total(n: int, cfg: TrainConfig = CFG, fraction: float = 0.2) -> int:
    return cfg.epochs * math.ceil((n - round(n * fraction)) / cfg.batch_size)


def test_classic_schedule_keeps_a_third_and_ends_at_the_full_budget() -> None:
    assert halving_schedule(25, 81, eta=3) == [Rung(9, 9), Rung(27, 3), Rung(81, 1)]
    assert halving_schedule(9, 90, eta=3) == [Rung(10, 3), Rung(30, 1), Rung(90, 1)]
    assert halving_schedule(27, 270, eta=3) == [Rung(10, 9), Rung(30, 3), Rung(90, 1), Rung(270, 1)]
    assert halving_schedule(2, 10, eta=3) == [Rung(10, 1)]  # fewer points than eta: the full grid
    assert halving_schedule(25, 4, eta=3) == [Rung(1, 9), Rung(4, 1)]  # a rung no longer than the one before: skipped
    assert halving_schedule(25, 0, eta=3) == [Rung(0, 1)]
    assert halving_schedule(25, 81, eta=2) == [Rung(5, 13), Rung(10, 7), Rung(20, 4), Rung(40, 2), Rung(81, 1)]


def test_the_default_schedule_is_classic_halving_everywhere() -> None:
    """One default: the search, the function and the benchmarks' replay use the same rungs (a second default, the
    two-stop schedule, once made the benchmark replay a schedule the study did not run)."""
    for points, total in ((25, 42), (25, 48), (9, 36), (49, 160)):
        resolved = DEFAULT_SCHEDULE.resolve(points, total)
        assert resolved == halving_schedule(points, total) == halving_schedule(points, total, eta=ETA)
    assert halving_schedule(2, 40) == [Rung(40, 1)]  # nothing to halve: the full grid
    assert halving_schedule(25, 1) == [Rung(1, 1)]


def _synthetic_scores(early_acc: dict[int, float], final_acc: dict[int, float], steps: tuple[int, ...]) -> list:
    rows = []
    for index in range(9):
        for step in steps[:-1]:
            rows.append({"index": index, "steps": step, "val_acc": early_acc[index], "val_loss": 1.0 - index / 100})
        rows.append({"index": index, "steps": steps[-1], "val_acc": final_acc[index], "val_loss": 1.0})
    return rows


def test_replay_keeps_the_most_accurate_points_and_breaks_ties_by_loss() -> None:
    """Rungs rank by validation accuracy; equal accuracies go by the lower loss (here the later index)."""
    early = {i: 0.5 for i in range(9)} | {0: 0.6, 4: 0.6}
    final = {i: 0.40 for i in range(9)} | {0: 0.45, 8: 0.50, 2: 0.70}
    scores = _synthetic_scores(early, final, (2, 8))
    assert replay(scores, [Rung(2, 3), Rung(8, 1)], 9)["index"] == 8  # 0, 4 by accuracy, 8 by loss; 8 ends best
    assert replay(scores, [Rung(2, 2), Rung(8, 1)], 9)["index"] == 0  # 0 and 4 only
    assert replay(scores, [Rung(8, 1)], 9)["index"] == 2  # the full grid


@pytest.mark.usefixtures("float32_forward")
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_rungs_that_keep_every_point_give_the_one_at_a_time_grid(problem, optimizer) -> None:
    """Stopping at every rung and restacking (optimiser state, schedule position, batch stream carried over) must
    not change what a point learns: the rows and final weights equal ``distill.grid_search``'s."""
    x, y, teacher, student = problem
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05 if optimizer == "sgd" else 0.003, optimizer=optimizer)
    total = _total(len(x), cfg)
    ref_states, ref_eval = _states()
    tuning = TuningProblem(lambda: copy.deepcopy(student), teacher, x, y, TEMPS, ALPHAS, cfg)
    ref = grid_search(tuning, RunOptions("cpu", progress=False), ref_eval)
    new_states, new_eval = _states()
    rungs = [Rung(3, 9), Rung(total // 2 + 1, 9), Rung(total, 9)]  # one rung ends mid-epoch
    result = halving_search(
        tuning, QUIET_CPU, new_eval, schedule=HalvingSchedule(rungs=rungs), stacking=Stacking(chunk_size=4),
        resume=NO_CHECKPOINT,
    )
    assert [(r["temperature"], r["alpha"]) for r in result.rows] == [(r["temperature"], r["alpha"]) for r in ref]
    for r, n in zip(ref, result.rows, strict=True):
        assert n["val_acc"] == pytest.approx(r["val_acc"], abs=1e-9)
        assert n["rung"] == 2 and n["budget"] == 1.0
    order = [n["probe"] - 1 for n in result.rows]  # states were recorded in drop order
    for i, ref_state in enumerate(ref_states):
        state = new_states[order[i]]
        for key in ref_state:
            assert torch.allclose(ref_state[key].double(), state[key].double(), atol=1e-4), key
    assert result.student_steps == result.grid_steps == 9 * total


@pytest.mark.usefixtures("float32_forward")
def test_halving_keeps_the_best_third_and_survivors_end_with_their_grid_score(problem) -> None:
    x, y, teacher, student = problem
    tuning = TuningProblem(lambda: copy.deepcopy(student), teacher, x, y, TEMPS, ALPHAS, CFG)
    ref = grid_search(tuning, RunOptions("cpu", progress=False))
    result = halving_search(tuning, QUIET_CPU, schedule=HalvingSchedule(eta=3), resume=NO_CHECKPOINT)
    rungs = halving_schedule(9, _total(len(x)), eta=3)
    assert result.rungs == rungs and len(rungs) == 3
    reached = [row["rung"] for row in result.rows]
    assert sorted(reached) == [0] * 6 + [1] * 2 + [2]  # 9 -> 3 -> 1
    last = [i for i, r in enumerate(reached) if r == 2]
    assert result.rows[last[0]]["val_acc"] == pytest.approx(ref[last[0]]["val_acc"], abs=1e-9)
    assert result.best is result.rows[last[0]]
    # the three points of rung 1 were the best three of rung 0 (accuracy, then loss)
    rung0 = [s for s in result.scores if s["steps"] == rungs[0].steps]
    top3 = sorted(rung0, key=lambda s: (-s["val_acc"], round(s["val_loss"], 5), s["index"]))[:3]
    assert {s["index"] for s in top3} == {i for i, r in enumerate(reached) if r >= 1}
    spent = 9 * rungs[0].steps + 3 * (rungs[1].steps - rungs[0].steps) + (rungs[2].steps - rungs[1].steps)
    assert result.student_steps == spent < result.grid_steps
    assert result.cost == pytest.approx(spent / (9 * _total(len(x))))


def test_replay_of_scores_gives_the_search_choice(problem) -> None:
    x, y, teacher, student = problem
    total = _total(len(x))
    schedule = [Rung(4, 4), Rung(12, 2), Rung(total, 1)]
    tuning = TuningProblem(lambda: copy.deepcopy(student), teacher, x, y, TEMPS, ALPHAS, CFG)
    every_rung = HalvingSchedule(rungs=[Rung(r.steps, 9) for r in schedule])
    everything = halving_search(tuning, QUIET_CPU, schedule=every_rung, resume=NO_CHECKPOINT)
    search = halving_search(tuning, QUIET_CPU, schedule=HalvingSchedule(rungs=schedule), resume=NO_CHECKPOINT)
    chosen = replay(everything.scores, schedule, 9)
    early = [s for s in everything.scores if s["steps"] == 4]
    survivors = {s["index"] for s in search.scores if s["steps"] == 12}
    assert survivors == {s["index"] for s in sorted(early, key=lambda s: (-s["val_acc"], round(s["val_loss"], 5)))[:4]}
    assert (chosen["temperature"], chosen["alpha"]) == (search.best["temperature"], search.best["alpha"])
    assert chosen["val_acc"] == pytest.approx(search.best["val_acc"], abs=1e-9)
    with pytest.raises(KDConfigError, match="scores"):
        replay(everything.scores, [Rung(5, 1), Rung(total, 1)], 9)


def test_a_killed_search_resumes_from_its_last_rung_with_the_same_result(problem, isolated_folders) -> None:
    x, y, teacher, student = problem
    calls = {"trained": 0}

    def make():
        calls["trained"] += 1
        return copy.deepcopy(student)

    def run(resume: Checkpointing):
        tuning = TuningProblem(make, teacher, x, y, TEMPS, ALPHAS, CFG)
        return halving_search(tuning, QUIET_CPU, lambda m: {"probe": float(m(x[:4]).sum().detach())}, resume=resume)

    reference = run(NO_CHECKPOINT)

    class Killed(Exception):
        pass

    def kill_after_first(rung: int, scores: list[dict]) -> None:
        assert len(scores) == (9 if rung == 0 else 3)
        if rung == 0:
            raise Killed

    with pytest.raises(Killed):
        run(Checkpointing(on_rung=kill_after_first))
    files = list((isolated_folders["cache"] / "halving").glob("*.pt"))
    assert len(files) == 1 and files[0].stat().st_size < 2_000_000
    seen: list[int] = []
    resumed = run(Checkpointing(on_rung=lambda rung, _scores: seen.append(rung)))
    assert resumed.resumed_from == 0 and seen == [1, 2]  # rung 0 was not trained again
    assert resumed.rows == reference.rows  # bit for bit: weights, optimiser state and batch RNG were restored
    assert resumed.best == reference.best
    assert resumed.student_steps == reference.student_steps
    assert not files[0].exists()  # removed once the search completed
    assert resumed.checkpoint == str(files[0]) and files[0].parent == checkpoint_path("x").parent


def test_run_tuned_with_halving_distils_with_the_chosen_pair(problem) -> None:
    x, y, teacher, student = problem
    tuned = copy.deepcopy(student)
    tuning = TuningProblem(lambda: copy.deepcopy(student), teacher, x, y, TEMPS, ALPHAS, CFG)
    outcome = run_tuned(tuning, tuned, RunOptions("cpu", progress=False), search="halving")
    extra = outcome.extra
    last = max(row["rung"] for row in extra["grid"])
    final = [row for row in extra["grid"] if row["rung"] == last]
    assert (extra["best_temperature"], extra["best_alpha"]) == (
        best_point(final)["temperature"],
        best_point(final)["alpha"],
    )
    assert 0 < extra["tuning_cost"] < 1
    with pytest.raises(KDConfigError, match="search"):
        run_tuned(tuning, copy.deepcopy(student), RunOptions("cpu", progress=False), search="optuna")


def test_bad_halving_input_names_the_field(problem) -> None:
    x, y, teacher, student = problem
    with pytest.raises(KDConfigError, match="eta"):
        halving_schedule(9, 30, eta=1)
    with pytest.raises(KDConfigError, match="eta"):
        halving_schedule(9, 30, eta=None)  # type: ignore[arg-type]
    tuning = TuningProblem(lambda: copy.deepcopy(student), teacher, x, y, TEMPS, ALPHAS, CFG)
    with pytest.raises(KDConfigError, match="rungs"):
        short = HalvingSchedule(rungs=[Rung(5, 3), Rung(7, 1)])  # ends before the full budget
        halving_search(tuning, QUIET_CPU, schedule=short, resume=NO_CHECKPOINT)
    with pytest.raises(KDConfigError, match="rungs"):
        keeps_none = HalvingSchedule(rungs=[Rung(5, 0), Rung(_total(len(x)), 1)])
        halving_search(tuning, QUIET_CPU, schedule=keeps_none, resume=NO_CHECKPOINT)
    with pytest.raises(KDConfigError, match="x_val"):
        no_labels = TuningProblem(lambda: copy.deepcopy(student), teacher, x, y, TEMPS, ALPHAS, CFG, x_val=x[:10])
        halving_search(no_labels, RunOptions("cpu"), resume=NO_CHECKPOINT)
    with pytest.raises(KDConfigError, match="chunk_size"):
        halving_search(tuning, QUIET_CPU, stacking=Stacking(chunk_size=0), resume=NO_CHECKPOINT)
    with pytest.raises(KDConfigError, match="backend"):
        halving_search(tuning, QUIET_CPU, stacking=Stacking(backend="threads"), resume=NO_CHECKPOINT)


def test_tuning_search_is_part_of_the_tuned_run_config() -> None:
    from kdlib.study.config import scale_config
    from kdlib.study.results import run_key
    from kdlib.study.runner import run_config

    cfg = scale_config("smoke")
    assert cfg.tuning_search == "halving"
    halving, grid = run_config(cfg, "iid", "tuned"), run_config(cfg.replace(tuning_search="grid"), "iid", "tuned")
    assert halving["tuning_search"] == "halving" and grid["tuning_search"] == "grid"
    assert run_key("distill", halving) != run_key("distill", grid)
    assert "tuning_search" not in run_config(cfg, "iid", "standard")
    with pytest.raises(KDConfigError, match="tuning_search"):
        cfg.replace(tuning_search="optuna")
