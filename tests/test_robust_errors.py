"""Every kdlib exception survives pickling, and an error raised in a Ray worker reaches the user as the same one line
(and exit status 2) as with ``--workers 1``: a bad value, a damaged checkpoint."""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from kdlib.data.dataset_cache import CacheError
from kdlib.errors import DiskFullError, KDConfigError
from kdlib.paths import PROJECT_ROOT
from kdlib.study.config import scale_config
from kdlib.study.results import ResultsStore
from kdlib.study.runner import Study
from kdlib.teaching.common import TeachingCheckError
from kdlib.tune.stacking import UnsupportedModel

EXAMPLES: dict[type[Exception], Exception] = {
    KDConfigError: KDConfigError("alpha", 1.5, "a number in [0, 1]"),
    CacheError: CacheError("data/digits.npz: not an .npz archive"),
    UnsupportedModel: UnsupportedModel("vit-tiny cannot be stacked"),
    TeachingCheckError: TeachingCheckError("Expected 0.5, got 0.25."),
    DiskFullError: DiskFullError("results/study.jsonl"),
}
TINY = dict(
    dataset="digits", n_train=None, n_test=None, teacher_model="mlp", student_model="mlp", scenarios=("iid",),
    methods=("finetune",), pretrain={"epochs": 1}, distill={"epochs": 1}, val_size=100, seeds=2,
)  # fmt: skip
SETS = [
    "--set", "teacher_model=mlp", "--set", "student_model=mlp", "--set", "scenarios=iid", "--set", "n_train=null",
    "--set", "n_test=null", "--set", "methods=finetune", "--set", 'pretrain={"epochs": 1}',
    "--set", 'distill={"epochs": 1}', "--set", "val_size=100", "--set", "seeds=2",
]  # fmt: skip


def kdlib_exception_classes() -> set[str]:
    """The names of every exception class defined in kdlib's sources."""
    names = set()
    for path in (PROJECT_ROOT / "kdlib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and (base.id.endswith(("Error", "Exception")) or base.id in names)
                for base in node.bases
            ):
                names.add(node.name)
    return names


def test_every_kdlib_exception_is_covered_here() -> None:
    assert kdlib_exception_classes() == {cls.__name__ for cls in EXAMPLES}


@pytest.mark.parametrize("error", EXAMPLES.values(), ids=[cls.__name__ for cls in EXAMPLES])
def test_every_kdlib_exception_survives_pickling(error: Exception) -> None:
    import ray.cloudpickle

    for dumps, loads in ((pickle.dumps, pickle.loads), (ray.cloudpickle.dumps, ray.cloudpickle.loads)):
        copy = loads(dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.args == error.args
        assert copy.__dict__ == error.__dict__


def test_a_config_error_keeps_its_fields_its_notes_and_an_unpicklable_value() -> None:
    error = KDConfigError("hook", lambda: None, "a function defined at module level")
    error.add_note("raised in a worker")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.allowed, copy.__notes__) == ("hook", error.allowed, ["raised in a worker"])
    assert str(copy) == str(error) and "<function" in str(copy)
    assert copy._render_traceback_() == [f"KDConfigError: {error}"]


# ------------------------------------------------------------------------------------------------ on Ray


@pytest.mark.parametrize("cause", [KDConfigError("alpha", 2, "a number in [0, 1]"), FileNotFoundError("No file"),
                                   PermissionError("Cannot read x: permission denied")])  # fmt: skip
def test_a_one_line_error_from_a_task_is_raised_as_itself(cause: Exception) -> None:
    from ray.exceptions import RayTaskError

    from kdlib.study.parallel import _driver_error

    assert _driver_error(RayTaskError("_run_task", "Traceback (most recent call last): ...", cause)) is cause


def test_any_other_error_from_a_task_keeps_the_workers_traceback() -> None:
    from ray.exceptions import RayTaskError, UnserializableException

    from kdlib.study.parallel import _driver_error

    trace = 'Traceback (most recent call last):\n  File "kdlib/core/distill.py", line 7, in run\nRuntimeError: boom'
    error = _driver_error(RayTaskError("_run_task", trace, RuntimeError("boom")))
    assert isinstance(error, RuntimeError) and 'kdlib/core/distill.py", line 7' in str(error)
    unreadable = UnserializableException("Traceback ...")
    assert _driver_error(unreadable) is unreadable


class StudyWithABadValue(Study):
    """A study whose runs fail in the worker on a bad value, as a method's own check would."""

    def run(self, scenario_name: str, method: str, *, seed: int | None = None, force: bool = False) -> dict:
        raise KDConfigError("temperature", -4.0, "a number > 0 (checked in the worker)")


def test_a_bad_value_raised_in_a_ray_worker_arrives_as_itself(tmp_path: Path, isolated_folders) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this file
    try:
        study = StudyWithABadValue(
            scale_config("smoke", **TINY), ResultsStore.open("study", tmp_path), device="cpu", progress=False
        )
        with pytest.raises(KDConfigError) as info:
            study.run_all(workers=2)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert type(info.value) is KDConfigError  # not Ray's RayTaskError, nor an UnserializableException
    assert str(info.value) == "temperature=-4.0 is not valid: a number > 0 (checked in the worker)"
    assert info.value.field == "temperature" and not study.store.records()


def test_a_damaged_checkpoint_on_the_default_ray_path_is_one_line_and_exit_2(tmp_path: Path, isolated_folders) -> None:
    study = Study(scale_config("smoke", **TINY), ResultsStore.open("study", tmp_path), device="cpu", progress=False)
    study.parties("iid", seed=0)
    weights = sorted((isolated_folders["cache"] / "parties").glob("*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[:200])  # truncated: a disk fault or a copy cut short
    command = [sys.executable, "-m", "kdlib", "study", "--dataset", "digits", "--quiet", "--results", str(tmp_path)]
    env = {**os.environ, "KDLIB_THREADS": "1", "KDLIB_WORKERS": "2"}  # Ray, as by default (`auto`) on 2+ cores
    done = subprocess.run([*command, *SETS], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint={str(weights)!r} is not valid: ")
    assert "the file is damaged" in lines[0] and "Delete it and rerun" in lines[0]
