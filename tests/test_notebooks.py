"""Every study notebook executes at smoke scale (papermill) and saves the figures it promises.

The notebooks share one results store and cache, as in ``python -m kdlib reproduce``; under pytest-xdist each is
executed once by whichever worker asks first (:func:`executed`), so two workers run independent notebooks at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from kdlib.reproduce import NOTEBOOKS_DIR, study_notebooks

EXPECTED_FIGURES = {
    "00_tour": ["00_kd_view_T1", "00_kd_view_T4", "00_kd_view_T16"],
    "01_partitions": ["01_partitions", "01_heterogeneity"],
    "02_pretrained_parties": ["02_party_accuracy"],
    "03_standard_kd": ["03_standard_gain", "03_own_unseen", "03_knowledge_flips", "03_curves"],
    "04_tuned_kd": ["04_tuning_grid", "04_tuned_vs_standard", "04_selection_criteria"],
    "05_mutual_learning": ["05_dml_gain"],
    "06_data_partitioning_kd": ["06_dp_routing", "06_dp_flips", "06_dp_routing_by_transfer"],
    "07_federated": ["07_fl_accuracy", "07_fl_rounds_to_target"],
    "08_findings": ["08_gain_all_methods", "08_knowledge_flips"],
}


# A notebook runs after those whose cached parties or stored results it reads, so that no work is done twice.
DEPENDS_ON = {
    "03_standard_kd": ("02_pretrained_parties",),
    "04_tuned_kd": ("02_pretrained_parties",),
    "05_mutual_learning": ("02_pretrained_parties",),
    "06_data_partitioning_kd": ("02_pretrained_parties",),
    "08_findings": ("03_standard_kd", "04_tuned_kd", "05_mutual_learning", "06_data_partitioning_kd", "07_federated"),
}


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

    from kdlib.notebook_progress import ENGINE

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
        try:
            pm.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(partial), parameters={"scale": "smoke"},
                                cwd=str(NOTEBOOKS_DIR), progress_bar=False, kernel_name="python3",
                                engine_name=ENGINE, kernel_env=env)
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


# The longest first (02 trains the parties the others reuse; 07 is independent), then the cheap independent ones,
# so that a worker rarely waits on another's notebook.
RUN_ORDER = ["02_pretrained_parties", "07_federated", "00_tour", "01_partitions", "03_standard_kd", "04_tuned_kd",
             "05_mutual_learning", "06_data_partitioning_kd", "08_findings"]  # fmt: skip


def test_the_run_order_names_every_notebook_once() -> None:
    assert sorted(RUN_ORDER) == sorted(EXPECTED_FIGURES)


@pytest.mark.slow
@pytest.mark.spread
@pytest.mark.parametrize("name", RUN_ORDER)
def test_notebook_executes_at_smoke_scale(name: str, isolated_outputs: dict[str, Path]) -> None:
    source = NOTEBOOKS_DIR / f"{name}.ipynb"
    if not source.exists():
        pytest.fail(f"{source} is missing")
    assert nbformat.read(executed(name, isolated_outputs), as_version=4).metadata.papermill["exception"] is not True
    for figure in EXPECTED_FIGURES[name]:
        png = isolated_outputs["figures"] / f"{figure}.png"
        assert png.exists() and png.stat().st_size > 5_000, f"{name} did not save {png.name}"


def test_reproduce_gives_a_notebook_parameter_only_to_the_notebooks_that_declare_it():
    from kdlib.reproduce import declared_parameters, notebook_parameters

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
