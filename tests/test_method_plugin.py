"""A method added from outside kdlib: one registry entry with its own setting, and nothing else changed. The
config accepts it and its setting, the CLI runs it, the store keys it by its setting, the plots label it, and the
findings compare with it as an untuned method."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kdlib.__main__ import main  # noqa: E402
from kdlib.core.distill import DistillOutcome, TeacherSpec, run_standard  # noqa: E402
from kdlib.core.train import RunOptions  # noqa: E402
from kdlib.errors import KDConfigError  # noqa: E402
from kdlib.notebook import plots  # noqa: E402
from kdlib.study.config import scale_config  # noqa: E402
from kdlib.study.findings import best_untuned_by_validation  # noqa: E402
from kdlib.study.methods import Method, MethodRun, registered  # noqa: E402
from kdlib.study.results import ResultsStore, run_key  # noqa: E402
from kdlib.study.runner import run_config  # noqa: E402


def soft_match(run: MethodRun) -> DistillOutcome:
    """Pure soft-target matching at the method's own temperature ``t`` (alpha = 1)."""
    teaching = TeacherSpec(run.teacher, run.setting("t"), 1.0)
    return run_standard(run.student, run.x, run.y, teaching, run.cfg.distill,
                        RunOptions(run.device, run.progress, run.on_epoch_end))  # fmt: skip


TOY = Method("soft_match", "soft matching (toy)", (), soft_match, settings={"t": 2.0})


def self_distil(run: MethodRun) -> DistillOutcome:
    """Born-again style self-distillation: the student learns from its own pre-trained copy (``run.pristine``)."""
    teaching = TeacherSpec(run.pristine, 2.0, 0.5)
    return run_standard(run.student, run.x, run.y, teaching, run.cfg.distill,
                        RunOptions(run.device, run.progress, run.on_epoch_end))  # fmt: skip


SELF = Method("self_distil", "self-distillation (toy)", (), self_distil, teacher="self")
TINY = ["--dataset", "digits", "--set", "n_train=null", "--set", "n_test=null", "--set", "teacher_model=mlp",
        "--set", "student_model=mlp", "--set", 'pretrain={"epochs": 1}', "--set", 'distill={"epochs": 2}',
        "--set", "val_size=150", "--quiet"]  # fmt: skip


def test_a_method_from_outside_runs_everywhere_with_its_own_setting(isolated_folders, tmp_path: Path) -> None:
    with registered(TOY):
        cfg = scale_config("smoke", method_settings={"soft_match": {"t": 3.0}})
        assert "soft_match" in cfg.methods
        keys = {t: run_key("distill", run_config(scale_config("smoke", method_settings={"soft_match": {"t": t}}),
                                                 "iid", "soft_match")) for t in (2.0, 3.0)}  # fmt: skip
        assert keys[2.0] != keys[3.0]  # its setting is part of its run key
        assert run_config(cfg, "iid", "soft_match")["settings"] == {"t": 3.0}
        assert "settings" not in run_config(cfg, "iid", "standard")  # the built-in methods keep their keys
        with pytest.raises(KDConfigError, match="soft_match"):
            scale_config("smoke", method_settings={"soft_match": {"beta": 1.0}})

        results = tmp_path / "results"
        args = ["run", "--scenario", "iid", "--method", "soft_match", "--results", str(results), *TINY,
                "--set", 'method_settings={"soft_match": {"t": 4.0}}']  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(args) == 0
        (record,) = [r for r in ResultsStore.open("study", results).records() if r["config"]["method"] == "soft_match"]
        assert record["config"]["settings"] == {"t": 4.0} and "val_gain" in record["metrics"]

        frame = pd.DataFrame(
            [{"scenario": "iid", "method": m, "seed": s, "gain": g, "val_gain": v}
             for m, g, v in (("standard", 0.02, 0.01), ("soft_match", 0.01, 0.03), ("tuned", 0.03, 0.02))
             for s in range(2)]  # fmt: skip
        )
        assert best_untuned_by_validation(frame, "iid") == "soft_match"  # an untuned method by default
        fig = plots.plot_method_gains(frame, "caption")
        labels = [t.get_text() for ax in fig.axes for leg in [ax.get_legend()] if leg for t in leg.get_texts()]
        labels += [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert "soft matching (toy)" in labels
    assert "soft_match" not in scale_config("smoke").methods  # and it is gone again


def test_a_self_distilling_method_records_its_own_teacher(isolated_folders, tmp_path: Path) -> None:
    """``teacher_acc`` is the accuracy of the teacher the method learns from: for self-distillation, the student
    before distillation, not the scenario's teacher."""
    with registered(SELF), registered(TOY):
        results = tmp_path / "results"
        for method in ("self_distil", "soft_match"):
            args = ["run", "--scenario", "disjoint", "--method", method, "--results", str(results), *TINY]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert main(args) == 0
        records = {r["config"]["method"]: r["metrics"] for r in ResultsStore.open("study", results).records()}
    own, party = records["self_distil"], records["soft_match"]
    assert own["teacher_acc"] == pytest.approx(own["acc_before"])
    assert party["teacher_acc"] != pytest.approx(party["acc_before"])  # a disjoint teacher differs from the student
    with pytest.raises(KDConfigError, match="teacher"):
        Method("x", "x", (), self_distil, teacher="peer")
