"""Every study notebook executes at smoke scale (papermill) and saves the figures it promises."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from kdlib.reproduce import NOTEBOOKS_DIR, study_notebooks

pytestmark = pytest.mark.slow

EXPECTED_FIGURES = {
    "00_tour": ["00_kd_view_T1", "00_kd_view_T4", "00_kd_view_T16"],
    "01_partitions": ["01_partitions", "01_heterogeneity"],
    "02_pretrained_parties": ["02_party_accuracy"],
    "03_standard_kd": ["03_standard_gain", "03_own_unseen", "03_knowledge_flips", "03_curves"],
    "04_tuned_kd": ["04_tuning_grid", "04_tuned_vs_standard"],
    "05_mutual_learning": ["05_dml_gain"],
    "06_data_partitioning_kd": ["06_dp_routing", "06_dp_flips"],
    "07_federated": ["07_fl_accuracy", "07_fl_rounds_to_target"],
    "08_findings": ["08_gain_all_methods", "08_knowledge_flips"],
}


@pytest.fixture(scope="module")
def isolated_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Results, cache and figures of this test run in a temporary folder (the papermill kernel inherits them)."""
    root = tmp_path_factory.mktemp("notebook-run")
    folders = {name: root / name for name in ("results", "cache", "figures", "executed")}
    for folder in folders.values():
        folder.mkdir()
    saved = {key: os.environ.get(key) for key in ("KDLIB_RESULTS", "KDLIB_CACHE", "KDLIB_FIGURES")}
    os.environ.update(KDLIB_RESULTS=str(folders["results"]), KDLIB_CACHE=str(folders["cache"]),
                      KDLIB_FIGURES=str(folders["figures"]))
    yield folders
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_every_study_notebook_has_expected_figures_listed() -> None:
    names = {p.stem for p in study_notebooks()}
    assert names == set(EXPECTED_FIGURES), "update EXPECTED_FIGURES when adding or renaming a notebook"


@pytest.mark.parametrize("name", list(EXPECTED_FIGURES))
def test_notebook_is_stored_without_outputs_and_has_parameters(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip the outputs"
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "papermill needs a 'parameters' cell"


@pytest.mark.parametrize("name", list(EXPECTED_FIGURES))
def test_notebook_executes_at_smoke_scale(name: str, isolated_outputs: dict[str, Path]) -> None:
    import papermill as pm

    source = NOTEBOOKS_DIR / f"{name}.ipynb"
    if not source.exists():
        pytest.fail(f"{source} is missing")
    pm.execute_notebook(str(source), str(isolated_outputs["executed"] / source.name), parameters={"scale": "smoke"},
                        cwd=str(NOTEBOOKS_DIR), progress_bar=False, kernel_name="python3")
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
