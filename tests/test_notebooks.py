"""Every study notebook executes at smoke scale (papermill) and saves the figures it promises.

The notebooks share one results store and cache, as in ``python -m kdlib reproduce``; under pytest-xdist each is
executed once by whichever worker asks first (:func:`executed`), so two workers run independent notebooks at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from kdlib.notebook.reproduce import NOTEBOOK_DEPENDENCIES, NOTEBOOKS_DIR, study_notebooks

EXPECTED_FIGURES = {
    "00_tour": ["00_kd_view_T1", "00_kd_view_T4", "00_kd_view_T16"],
    "01_partitions": ["01_partitions", "01_heterogeneity"],
    "02_pretrained_parties": ["02_party_accuracy"],
    "03_standard_kd": ["03_standard_gain", "03_own_unseen", "03_knowledge_flips", "03_curves", "03_hetero_gain"],
    "04_tuned_kd": ["04_tuning_grid", "04_tuned_vs_standard", "04_selection_criteria"],
    "05_mutual_learning": ["05_dml_gain"],
    "06_data_partitioning_kd": ["06_dp_routing", "06_dp_flips", "06_dp_routing_by_transfer"],
    "07_federated": ["07_fl_accuracy", "07_fl_rounds_to_target"],
    "08_findings": ["08_gain_all_methods", "08_knowledge_flips", "08_fl_accuracy", "08_fl_rounds_to_target"],
}


# A cell that runs longer than this fails its notebook (with the cell named) instead of hanging the test run; the
# longest cell (07's federated runs) takes under two minutes here.
CELL_TIMEOUT_S = 600

# A notebook runs after those it reads (kdlib.notebook.reproduce.NOTEBOOK_DEPENDENCIES, which reproduce uses too).
DEPENDS_ON = NOTEBOOK_DEPENDENCIES


@pytest.fixture(scope="session")
def isolated_outputs(shared_tmp_path: Path) -> dict[str, Path]:
    """Results, cache and figures of this test session in one temporary folder that every xdist worker shares."""
    root = shared_tmp_path / "notebook-run"
    folders = {name: root / name for name in ("results", "cache", "figures", "executed", "locks")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def executed(name: str, folders: dict[str, Path]) -> Path:
    """Execute notebook ``name`` once per session, whichever worker asks first, after the notebooks it depends on.

    A worker that finds it running elsewhere waits for it. No lock is held while waiting for another, so two
    workers never wait on each other.
    """
    import papermill as pm
    from filelock import FileLock

    from kdlib.notebook.notebook_progress import ENGINE
    from kdlib.notebook.reproduce import declared_parameters

    for dependency in DEPENDS_ON.get(name, ()):
        executed(dependency, folders)
    target, failed = folders["executed"] / f"{name}.ipynb", folders["locks"] / f"{name}.failed"
    with FileLock(str(folders["locks"] / f"{name}.lock")):
        if failed.exists():
            pytest.fail(f"{name} failed (in another test): {failed.read_text()}")
        if target.exists():
            return target
        partial = target.with_suffix(".running.ipynb")
        env = {**os.environ, **{f"KDLIB_{key.upper()}": str(folders[key]) for key in ("results", "cache", "figures")}}
        source = NOTEBOOKS_DIR / f"{name}.ipynb"
        parameters = {"scale": "smoke"} if "scale" in declared_parameters(source) else {}
        try:
            pm.execute_notebook(str(source), str(partial), parameters=parameters,
                                cwd=str(NOTEBOOKS_DIR), progress_bar=False, kernel_name="python3",
                                engine_name=ENGINE, kernel_env=env, execution_timeout=CELL_TIMEOUT_S)
        except Exception as error:
            if isinstance(error, pm.PapermillExecutionError):
                failed.write_text(f"cell {error.exec_count}: {error.ename}: {error.evalue}")
            else:
                failed.write_text(f"{type(error).__name__}: {error}")
            raise
        partial.replace(target)
    return target


def test_every_study_notebook_has_expected_figures_listed() -> None:
    names = {p.stem for p in study_notebooks()}
    assert names == set(EXPECTED_FIGURES), "update EXPECTED_FIGURES when adding or renaming a notebook"


@pytest.mark.parametrize("name", list(EXPECTED_FIGURES))
def test_notebook_is_stored_without_outputs_and_has_parameters(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip the outputs"
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "papermill needs a 'parameters' cell"


# The order in which the two xdist workers take the notebooks: 02 (it trains the parties 03-06 reuse) and 07
# (independent, long) at once, then the method notebooks, two at a time, then the short ones. 08 reads every other
# notebook's results: it is marked `last` and runs after every other test, so that no worker sits waiting for it.
RUN_ORDER = ["02_pretrained_parties", "07_federated", "03_standard_kd", "04_tuned_kd", "06_data_partitioning_kd",
             "05_mutual_learning", "00_tour", "01_partitions", "08_findings"]  # fmt: skip
LAST = {"08_findings"}


def test_the_run_order_names_every_notebook_once() -> None:
    assert sorted(RUN_ORDER) == sorted(EXPECTED_FIGURES)


@pytest.mark.slow
@pytest.mark.spread
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.last) if n in LAST else n for n in RUN_ORDER])
def test_notebook_executes_at_smoke_scale(name: str, isolated_outputs: dict[str, Path]) -> None:
    source = NOTEBOOKS_DIR / f"{name}.ipynb"
    if not source.exists():
        pytest.fail(f"{source} is missing")
    nb = nbformat.read(executed(name, isolated_outputs), as_version=4)
    assert nb.metadata.papermill["exception"] is not True
    for figure in EXPECTED_FIGURES[name]:
        png = isolated_outputs["figures"] / f"{figure}.png"
        assert png.exists() and png.stat().st_size > 5_000, f"{name} did not save {png.name}"
    if name in LESSONS:  # the executed notebook displays the step that ran, as code
        from kdlib.notebook.lesson import source_text

        shown = [o for c in nb.cells if "lesson.show_source(" in c.source for o in c.outputs]
        plain = "".join(o.get("data", {}).get("text/plain", "") for o in shown)
        assert source_text(lesson_step(name), "def batch_loss") in plain
        assert all("text/html" in o.get("data", {}) for o in shown), "highlighted code in Jupyter"


def test_reproduce_gives_a_notebook_parameter_only_to_the_notebooks_that_declare_it():
    from kdlib.notebook.reproduce import declared_parameters, notebook_parameters

    findings, parties = NOTEBOOKS_DIR / "08_findings.ipynb", NOTEBOOKS_DIR / "02_pretrained_parties.ipynb"
    keys = frozenset(declared_parameters(findings) | declared_parameters(parties))
    assert "federated" in keys
    overrides = {"federated": False, "n_train": 500, "scenarios": "iid"}
    assert notebook_parameters(findings, "paper", "cpu", overrides, keys) == {
        "scale": "paper",
        "device": "cpu",
        "federated": False,
        "scenarios": "iid",
        "overrides": {"n_train": 500},
    }
    assert notebook_parameters(parties, "paper", "cpu", overrides, keys) == {
        "scale": "paper",
        "device": "cpu",
        "scenarios": "iid",
        "overrides": {"n_train": 500},
    }


def tiny_notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('scale = "x"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_a_notebook_runs_once_after_its_dependencies_and_a_failure_reaches_its_dependents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import threading

    this = sys.modules[__name__]
    log = tmp_path / "log.txt"
    for name, body in {"a": "import time; time.sleep(1)", "b": "", "bad": "raise ValueError('boom')"}.items():
        tiny_notebook(tmp_path / f"{name}.ipynb", f"{body}\nopen({str(log)!r}, 'a').write('{name}\\n')")
    monkeypatch.setattr(this, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.setattr(this, "DEPENDS_ON", {"b": ("a",), "after_bad": ("bad",)})
    folders = {name: tmp_path / name for name in ("results", "cache", "figures", "executed", "locks")}
    for folder in folders.values():
        folder.mkdir()
    workers = [threading.Thread(target=this.executed, args=(name, folders)) for name in ("b", "a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert log.read_text().splitlines() == ["a", "b"]  # each once, a before b
    assert {p.name for p in folders["executed"].iterdir()} == {"a.ipynb", "b.ipynb"}

    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="boom"):
        this.executed("bad", folders)
    with pytest.raises(pytest.fail.Exception, match=r"bad failed \(in another test\): cell 3: ValueError: boom"):
        this.executed("after_bad", folders)


# ------------------------------------------------------------------------------------- the method notebooks as lessons
# Each method notebook shows its loss and its method's training step from kdlib's own source (kdlib.notebook.lesson).
LESSONS = {
    "03_standard_kd": ("kd_loss", "run_standard"),
    "04_tuned_kd": ("run_tuned", "kd_loss", "run_standard"),
    "05_mutual_learning": ("dml_losses", "run_dml"),
    "06_data_partitioning_kd": ("dp_select_targets", "run_dp"),
    "07_federated": ("_client_train", "aggregate_state_dicts", "distill_averaged"),
}
LESSON_HOMES = {"07_federated": "kdlib.fl.starts"}
"""Where a lesson's last object (the one whose ``batch_loss`` it shows) lives, when not in ``kdlib.core.distill``."""
STUDY_SETUP = ("01_partitions", "02_pretrained_parties", *(n for n in LESSONS if n != "07_federated"), "08_findings")


def lesson_step(name: str):
    """The function whose ``batch_loss`` lesson ``name`` shows."""
    import importlib

    return getattr(importlib.import_module(LESSON_HOMES.get(name, "kdlib.core.distill")), LESSONS[name][-1])


def cells(name: str) -> list:
    return nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4).cells


def nested_function_lines(outer, name: str) -> str:
    """The source lines of the function ``name`` defined inside ``outer``, found by its syntax tree, dedented."""
    import ast
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(outer))
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == name)
    return textwrap.dedent("\n".join(source.splitlines()[node.lineno - 1 : node.end_lineno]))


@pytest.mark.parametrize("method", ["run_finetune", "run_standard", "run_dml", "run_dp"])
def test_a_lesson_shows_the_live_batch_loss_of_each_method(method: str) -> None:
    import kdlib.core.distill
    from kdlib.notebook.lesson import source_text

    function = getattr(kdlib.core.distill, method)
    shown = source_text(function, "def batch_loss")
    assert shown == nested_function_lines(function, "batch_loss")
    assert shown.startswith("def batch_loss(") and "return " in shown


def test_show_source_prints_where_the_code_is_and_refuses_a_pattern_it_cannot_find(
    capsys: pytest.CaptureFixture,
) -> None:
    import inspect

    from kdlib.core.losses import kd_loss
    from kdlib.errors import KDConfigError
    from kdlib.notebook.lesson import show_source, source_text

    show_source(kd_loss)
    printed = capsys.readouterr().out
    first, rest = printed.split("\n", 1)
    line = inspect.getsourcelines(kd_loss)[1]
    assert first == f"# kdlib.core.losses.kd_loss, kdlib/core/losses.py line {line}"
    assert rest.rstrip("\n") == source_text(kd_loss) == inspect.getsource(kd_loss).rstrip("\n")
    with pytest.raises(KDConfigError, match="pattern"):
        show_source(kd_loss, "def no_such_block")


@pytest.mark.parametrize("name", list(LESSONS))
def test_each_method_notebook_shows_its_step_says_what_to_see_and_ends_with_what_to_try(name: str) -> None:
    nb = cells(name)
    shown = "\n".join(c.source for c in nb if c.cell_type == "code" and "lesson.show_source(" in c.source)
    for obj in LESSONS[name]:
        assert f"lesson.show_source({obj}" in shown, f"{name} does not show {obj}"
    assert f'lesson.show_source({LESSONS[name][-1]}, "def batch_loss")' in shown
    for i, cell in enumerate(nb):
        if cell.cell_type == "code" and "show_figure(" in cell.source:
            after = nb[i + 1] if i + 1 < len(nb) else None
            assert after is not None and after.cell_type == "markdown" and "**What to see:**" in after.source, (
                f"{name}: say under each figure what to see (cell {i})"
            )
    tries = [i for i, c in enumerate(nb) if c.cell_type == "markdown" and c.source.startswith("## What to try")]
    assert len(tries) == 1 and tries[0] >= len(nb) - 2, f"{name} should end with a 'What to try' section"
    assert "-p " in nb[tries[0]].source or "-y " in nb[tries[0]].source


@pytest.mark.parametrize("name", list(EXPECTED_FIGURES))
def test_every_declared_parameter_is_used(name: str) -> None:
    import re

    from kdlib.notebook.reproduce import declared_parameters

    body = "\n".join(c.source for c in cells(name) if "parameters" not in c.metadata.get("tags", []))
    unused = [p for p in declared_parameters(NOTEBOOKS_DIR / f"{name}.ipynb") if not re.search(rf"\b{p}\b", body)]
    assert not unused, f"{name} declares parameters it never uses: {unused}"


@pytest.mark.parametrize("name", STUDY_SETUP)
def test_one_cell_holds_the_parameters_and_one_the_setup(name: str) -> None:
    nb = cells(name)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb) == 1
    setup = [c for c in nb if "lesson.setup(" in c.source]
    assert len(setup) == 1 and nb.index(setup[0]) == 2, "the setup follows the parameters cell"
    assert not any("open_study(" in c.source for c in nb), "open variants with lesson.variant(study, ...)"


def test_the_federated_lesson_has_one_parameters_cell_and_one_short_setup_cell() -> None:
    nb = cells("07_federated")
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb) == 1
    setup = [c for c in nb if "lesson.setup_federated(" in c.source]
    assert len(setup) == 1 and nb.index(setup[0]) == 2 and len(setup[0].source.splitlines()) <= 8
    assert not any("open_federated(" in c.source for c in nb)


def test_lesson_setup_opens_the_study_of_the_parameters_and_variant_changes_only_what_it_is_told(
    isolated_folders: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    from kdlib.notebook.lesson import setup, variant
    from kdlib.study.config import scale_config

    study = setup("smoke", device="cpu", dataset="digits", seed=3, scenarios="iid,disjoint", transfer="union",
                  overrides="{transfer: public, n_train: 600, n_test: 300}")  # fmt: skip
    expected = scale_config("smoke", dataset="digits", seed=3, scenarios="iid,disjoint", transfer="public", n_train=600,
                            n_test=300)  # fmt: skip
    assert study.cfg == expected  # the overrides win over the transfer parameter, as papermill passes them
    out = capsys.readouterr().out
    assert "scenarios: iid, disjoint" in out and "seeds: 3, 4" in out and "transfer set" in out
    plain = setup("smoke", device="cpu", dataset="digits", overrides={"n_train": 600, "n_test": 300})
    assert plain.cfg == scale_config("smoke", dataset="digits", n_train=600, n_test=300)
    assert "transfer set" not in capsys.readouterr().out  # no transfer parameter: not announced
    other = variant(study, student_model="vit-tiny", seeds=1)
    assert other.cfg == expected.replace(student_model="vit-tiny", seeds=1)
    assert other.store is study.store and other.device == study.device and study.cfg == expected
