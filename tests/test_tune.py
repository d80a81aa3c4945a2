"""Tests for the stacked (T, alpha) grid: it equals the one-at-a-time grid, exactly in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kdlib.core.distill import TuningProblem, best_point, grid_search
from kdlib.core.models import build_model
from kdlib.core.train import RunOptions, TrainConfig, seed_everything
from kdlib.data.datasets import load_dataset
from kdlib.errors import KDConfigError
from kdlib.tune.stacked_grid import stacked_grid_search
from kdlib.tune.stacking import GroupedStack, VmapStack, stack_students

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


def test_exact_float32_turns_tf32_off_inside_and_restores_it_after_an_error():
    from kdlib.tune.stacking import exact_float32

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with pytest.raises(RuntimeError, match="inside"), exact_float32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            raise RuntimeError("inside")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
