"""Tests for kdlib.tune: the stacked grid equals the one-at-a-time grid; the smart search resumes and saves work."""

from __future__ import annotations

import copy
import itertools
import math

import optuna
import pytest
import torch
from torch import nn

import kdlib.tune as tune
from kdlib.data import load_dataset
from kdlib.distill import TuningProblem, best_point, grid_search
from kdlib.errors import KDConfigError
from kdlib.models import build_model
from kdlib.stacking import GroupedStack, VmapStack, stack_students
from kdlib.train import RunOptions, TrainConfig, seed_everything
from kdlib.tune import SearchStore, smart_search, stacked_grid_search

TEMPS, ALPHAS = (1.0, 4.0), (0.0, 0.5, 0.9)
QUIET_CPU = RunOptions("cpu", progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Tiny models: one thread is as fast and stays fast on a busy machine (conftest's ``one_torch_thread``)."""


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data.x_train[:300], data.y_train[:300], data.in_shape


def _pair(in_shape, student_name: str = "cnn-small", teacher_name: str = "mlp"):
    seed_everything(0)
    return build_model(teacher_name, 10, in_shape), build_model(student_name, 10, in_shape)


def _grids(x, y, models, cfg, validation=None, **stacked_kwargs):
    """Rows and final states of the one-at-a-time grid and the stacked grid of ``models = (teacher, student)``
    (``validation``: x_val/y_val for both)."""
    teacher, student = models
    validation = validation or {}
    states: dict[str, list[dict]] = {"ref": [], "new": []}

    def keep(tag):
        def evaluate(model: nn.Module) -> dict:
            states[tag].append({k: v.detach().clone() for k, v in model.state_dict().items()})
            with torch.no_grad():
                return {"probe": float(model(x[:4]).sum())}

        return evaluate

    def make():
        return copy.deepcopy(student)

    problem = TuningProblem(make, teacher, x, y, TEMPS, ALPHAS, cfg, 0.2, **validation)
    ref = grid_search(problem, QUIET_CPU, keep("ref"))
    new = stacked_grid_search(problem, QUIET_CPU, keep("new"), **stacked_kwargs)
    return ref, new, states


def _assert_same(ref, new, states, tol=1e-4, rel=0.0):
    assert [(r["temperature"], r["alpha"]) for r in ref] == [(r["temperature"], r["alpha"]) for r in new]
    for r, n in zip(ref, new, strict=True):
        assert set(r) == set(n)
        for key in ("val_acc", "val_gain", "probe"):
            assert n[key] == pytest.approx(r[key], abs=tol, rel=rel), (r, n)
    assert best_point(ref) == pytest.approx(best_point(new), abs=tol)
    for a, b in zip(states["ref"], states["new"], strict=True):
        assert a.keys() == b.keys()
        for key in a:  # weights, BatchNorm running statistics and counters
            assert torch.allclose(a[key].double(), b[key].double(), atol=tol, rtol=rel), key


@pytest.mark.parametrize(
    ("backend", "augment"), [("grouped", False), ("grouped", True), ("vmap", False), ("vmap", True)]
)
@pytest.mark.usefixtures("float32_forward")
def test_stacked_grid_equals_one_at_a_time_with_batchnorm(digits, backend, augment):
    """float32, the study's student: weights, running stats and validation accuracy within 1e-4 after 2 epochs."""
    x, y, shape = digits
    models = _pair(shape)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.02, augment=augment)
    _assert_same(*_grids(x, y, models, cfg, backend=backend))


@pytest.mark.usefixtures("float32_forward")
def test_stacked_grid_equals_one_at_a_time_on_a_held_out_split(digits):
    """With x_val/y_val given, both grids train on all of x and score on the held-out split, identically."""
    x, y, shape = digits
    models = _pair(shape)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.02)
    held = {"x_val": x[200:], "y_val": y[200:]}
    ref, new, states = _grids(x[:200], y[:200], models, cfg, validation=held, backend="grouped")
    _assert_same(ref, new, states)
    carved, _, _ = _grids(x[:200], y[:200], models, cfg, backend="grouped")
    assert [r["val_acc"] for r in ref] != [r["val_acc"] for r in carved]  # another split was scored


@pytest.mark.parametrize(
    ("student_name", "optimizer", "backend", "augment", "chunk_size"),
    [
        ("resnet8", "sgd", "grouped", False, 4),
        ("resnet8", "adam", "vmap", True, None),
        ("cnn-small", "adam", "grouped", True, None),
        ("mlp", "sgd", "auto", False, 5),
    ],
)
def test_stacked_grid_is_exact_in_float64(digits, student_name, optimizer, backend, augment, chunk_size):
    """In float64 the float32 rounding differences (which training amplifies) vanish: the stacked grid is the
    one-at-a-time grid to ~1e-13, whatever the model (BatchNorm, option-A shortcuts), optimiser or augmentation."""
    x, y, shape = digits
    teacher, student = _pair(shape, student_name)
    lr = 0.002 if optimizer == "adam" else 0.05
    cfg = TrainConfig(epochs=2, batch_size=32, lr=lr, optimizer=optimizer, augment=augment)
    grids = _grids(
        x[:200].double(), y[:200], (teacher.double(), student.double()), cfg, backend=backend, chunk_size=chunk_size
    )
    _assert_same(*grids, tol=1e-9, rel=1e-9)


class _Noisy(nn.Module):
    """A model neither backend can stack: dropout masks cannot match the one-at-a-time runs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.3), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_unstackable_model_falls_back_or_raises(digits):
    x, y, shape = digits
    teacher, _ = _pair(shape)
    cfg = TrainConfig(epochs=1, batch_size=64)
    seed_everything(0)
    student = _Noisy()
    problem = TuningProblem(lambda: copy.deepcopy(student), teacher, x, y, (2.0,), (0.5,), cfg)
    with pytest.raises(KDConfigError, match="backend"):
        stacked_grid_search(problem, backend="grouped")
    seed_everything(1)
    expected = grid_search(problem, QUIET_CPU)
    seed_everything(1)
    with pytest.warns(UserWarning, match="one point at a time"):
        rows = stacked_grid_search(problem, QUIET_CPU)
    assert rows == expected


def test_stack_students_checks_and_writes_back(digits):
    x, _, shape = digits
    seed_everything(0)
    members = [build_model("resnet8", 10, shape) for _ in range(3)]
    before = [copy.deepcopy(m.state_dict()) for m in members]
    for backend, kind in (("grouped", GroupedStack), ("vmap", VmapStack), ("auto", GroupedStack)):
        stack = stack_students(members, x[:8], backend)
        assert isinstance(stack, kind)
        stack.eval()
        with torch.no_grad():
            assert stack(x[:5]).shape == (3, 5, 10)
        stack.write_back()
        for m, state in zip(members, before, strict=True):
            assert all(torch.equal(m.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(KDConfigError):
        stack_students(members, x[:8], "sequential")


def test_stacked_grid_rejects_bad_arguments(digits):
    x, y, shape = digits
    teacher, student = _pair(shape)
    cfg = TrainConfig(epochs=1)
    with pytest.raises(KDConfigError, match="backend"):
        stacked_grid_search(TuningProblem(lambda: student, teacher, x, y, (1.0,), (0.5,), cfg), backend="magic")
    with pytest.raises(KDConfigError, match="chunk_size"):
        stacked_grid_search(TuningProblem(lambda: student, teacher, x, y, (1.0,), (0.5,), cfg), chunk_size=0)
    with pytest.raises(KDConfigError, match="alpha"):
        stacked_grid_search(TuningProblem(lambda: student, teacher, x, y, (1.0,), (1.5,), cfg))


# ------------------------------------------------------------------------------------------------ smart search

GRID_T, GRID_A = (1.0, 2.0, 4.0, 8.0, 16.0), (0.1, 0.25, 0.5, 0.75, 0.9)


def _score(t: float, a: float) -> float:
    """A smooth made-up validation accuracy with one clear optimum at T=4, alpha=0.75."""
    return 0.6 - 0.02 * (math.log2(t) - 2) ** 2 - 0.2 * (a - 0.75) ** 2


class _Counter:
    """Stands in for ``tune.distill_point``: counts trainings, optionally fails on one call."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.points: list[tuple[float, float]] = []
        self.fail_on = fail_on

    def __call__(self, *args, **_kwargs) -> float:
        point = (args[2], args[3])  # distill_point(chosen, make_student, temperature, alpha, ...)
        if self.fail_on is not None and len(self.points) + 1 == self.fail_on:
            raise RuntimeError("worker died")
        self.points.append(point)
        return _score(*point)


@pytest.fixture()
def problem(digits):
    x, y, shape = digits
    teacher, student = _pair(shape)
    return dict(
        make_student=lambda: copy.deepcopy(student), teacher=teacher, x=x[:120], y=y[:120], cfg=TrainConfig(epochs=1)
    )


def _search(problem, n_trials, storage, study_name=None, held=None, **kwargs):
    """``smart_search`` of the fixture's problem on the GRID_T x GRID_A grid (``held``: x_val/y_val)."""
    p = problem
    tuning = TuningProblem(p["make_student"], p["teacher"], p["x"], p["y"], GRID_T, GRID_A, p["cfg"], **(held or {}))
    return smart_search(tuning, n_trials, store=SearchStore(storage, study_name), options=QUIET_CPU, **kwargs)


def test_smart_search_resumes_without_redoing_trials(problem, tmp_path, monkeypatch):
    storage = tmp_path / "tuning.sqlite3"
    counter = _Counter()
    monkeypatch.setattr(tune, "distill_point", counter)
    first = _search(problem, 3, storage)
    assert first.trainings == 3 and first.total_trainings == 3 and len(counter.points) == 3
    second = _search(problem, 5, storage)
    assert second.trainings == 2 and second.total_trainings == 5
    assert len(counter.points) == 5 and len(set(counter.points)) == 5  # exactly 2 new, none repeated
    assert second.study_name == first.study_name
    trained = [r for r in second.trials if r["state"] == "COMPLETE" and not r["reused"]]
    assert len(trained) == 5
    assert _search(problem, 5, storage).trainings == 0  # nothing left to do
    other = _search(problem, 2, storage, study_name="another")  # a study of its own
    assert other.total_trainings == 2


def test_smart_search_scores_on_a_held_out_split_when_given(problem, digits, tmp_path, monkeypatch):
    """x_val/y_val reach every trained point, the fit data is all of x, and the study is another study."""
    x, y, _ = digits
    held = {"x_val": x[200:260], "y_val": y[200:260]}
    seen: list[tuple[int, int]] = []

    def spy(*args, **_kwargs) -> float:
        seen.append((len(args[0].x_fit), len(args[0].x_val)))
        return _score(args[2], args[3])

    monkeypatch.setattr(tune, "distill_point", spy)
    carved = _search(problem, 2, tmp_path / "tuning.sqlite3")
    result = _search(problem, 2, tmp_path / "tuning.sqlite3", held=held)
    assert seen == [(96, 24)] * 2 + [(120, 60)] * 2  # 20% of 120 carved off, or all 120 and the 60 held out
    assert result.study_name != carved.study_name and result.total_trainings == 2


def test_smart_search_interrupted_then_resumed(problem, tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'tuning.sqlite3'}"
    crashing = _Counter(fail_on=2)
    monkeypatch.setattr(tune, "distill_point", crashing)
    with pytest.raises(RuntimeError, match="worker died"):
        _search(problem, 4, storage)
    assert len(crashing.points) == 1
    states = [t.state.name for t in optuna.load_study(study_name=_study_name(problem, storage), storage=storage).trials]
    assert states == ["COMPLETE", "FAIL"]
    resumed = _Counter()
    monkeypatch.setattr(tune, "distill_point", resumed)
    result = _search(problem, 4, storage)
    assert result.trainings == 3 and result.total_trainings == 4
    assert crashing.points[0] not in resumed.points  # trial 1 was not trained again
    assert len(set(crashing.points + resumed.points)) == 4


def _study_name(problem, storage) -> str:
    return optuna.study.get_all_study_names(storage)[0]


def test_smart_search_never_trains_a_point_twice(problem, tmp_path, monkeypatch):
    counter = _Counter()
    monkeypatch.setattr(tune, "distill_point", counter)
    p = problem
    tuning = TuningProblem(p["make_student"], p["teacher"], p["x"], p["y"], (1.0, 4.0), (0.1, 0.9), p["cfg"])
    result = smart_search(tuning, 10, store=SearchStore(tmp_path / "s.sqlite3"), options=QUIET_CPU)
    assert sorted(counter.points) == sorted(itertools.product((1.0, 4.0), (0.1, 0.9)))  # capped at the grid size
    assert result.total_trainings == 4
    assert (result.temperature, result.alpha) == max(counter.points, key=lambda q: _score(*q))


def test_smart_search_finds_a_clear_optimum_with_a_third_of_the_trainings(problem, tmp_path, monkeypatch):
    best = max(itertools.product(GRID_T, GRID_A), key=lambda q: _score(*q))
    budget = len(GRID_T) * len(GRID_A) // 3
    hits = 0
    for seed in range(3):
        counter = _Counter()
        monkeypatch.setattr(tune, "distill_point", counter)
        result = _search(problem, budget, optuna.storages.InMemoryStorage(), seed=seed)
        assert len(counter.points) == budget
        hits += (_score(*best) - result.val_acc) * 100 <= 0.5
    assert hits >= 2


def test_smart_search_scores_equal_the_grid_and_halving_prunes(digits, tmp_path):
    x, y, shape = digits
    teacher, student = _pair(shape)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    problem = TuningProblem(lambda: copy.deepcopy(student), teacher, x, y, TEMPS, ALPHAS, cfg)
    rows = grid_search(problem, QUIET_CPU)
    result = smart_search(problem, 2, store=SearchStore(tmp_path / "t.sqlite3"), options=QUIET_CPU)
    by_point = {(r["temperature"], r["alpha"]): r for r in rows}
    for trial in result.trials:
        assert trial["val_acc"] == pytest.approx(by_point[(trial["temperature"], trial["alpha"])]["val_acc"])
        assert trial["val_gain"] == pytest.approx(by_point[(trial["temperature"], trial["alpha"])]["val_gain"])
    longer = TuningProblem(problem.make_student, teacher, x, y, TEMPS, ALPHAS, TrainConfig(epochs=3, batch_size=64))
    halving = smart_search(
        longer, 6, sampler="halving", store=SearchStore(tmp_path / "h.sqlite3"), options=QUIET_CPU
    )
    assert halving.trainings == 6 and halving.epochs <= 6 * 3
    assert {r["state"] for r in halving.trials} <= {"COMPLETE", "PRUNED"}


def test_smart_search_default_storage_and_bad_arguments(problem, tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(tune, "distill_point", _Counter())
    result = _search(problem, 1, None)
    assert result.storage == f"sqlite:///{tmp_path / 'results' / 'tuning.sqlite3'}"
    assert (tmp_path / "results" / "tuning.sqlite3").is_file()
    with pytest.raises(KDConfigError, match="n_trials"):
        _search(problem, 0, None)
    with pytest.raises(KDConfigError, match="sampler"):
        _search(problem, 1, None, sampler="grid")


def test_exact_float32_turns_tf32_off_inside_and_restores_it_after_an_error():
    from kdlib.stacking import exact_float32

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with pytest.raises(RuntimeError, match="inside"), exact_float32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            raise RuntimeError("inside")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
