"""A relative folder in the environment (``KDLIB_RESULTS=figures/full``) names the same folder in every process the
command starts, though a notebook kernel runs in ``notebooks/`` and a Ray worker in a folder of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdlib.notebook import reproduce
from kdlib.paths import PATH_VARIABLES, absolute_path_variables


def test_relative_path_variables_become_absolute_from_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {name: f"rel/{name.lower()}" for name in PATH_VARIABLES} | {"OTHER": "rel/other", "KDLIB_THREADS": "1"}
    absolute = absolute_path_variables(env)
    for name in PATH_VARIABLES:
        assert absolute[name] == str(tmp_path / "rel" / name.lower())
    assert absolute["OTHER"] == "rel/other" and absolute["KDLIB_THREADS"] == "1"
    assert env["KDLIB_RESULTS"] == "rel/kdlib_results", "the caller's mapping is left as it was"


def test_absolute_and_empty_values_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"KDLIB_RESULTS": "/somewhere/else", "KDLIB_CACHE": ""}
    assert absolute_path_variables(env) == env


def test_a_notebook_kernel_gets_the_store_the_caller_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug this guards: ``write_findings.sh`` sets ``KDLIB_RESULTS=figures/full`` in the project folder; the kernel
    (cwd ``notebooks/``) read it as ``notebooks/figures/full``, found no runs there and began the study from scratch."""
    import papermill

    seen: list[dict[str, Any]] = []

    def fake_execute(source: str, target: str, **kwargs: Any) -> None:
        seen.append({"cwd": kwargs["cwd"], "env": kwargs["kernel_env"]})

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDLIB_RESULTS", "figures/full")
    monkeypatch.setenv("KDLIB_FIGURES", "figures/full")
    execution = reproduce.Execution(output=str(tmp_path / "out"), progress=False, workers=1)
    assert reproduce.reproduce("smoke", only="08", execution=execution) == 0
    (call,) = seen
    assert Path(call["cwd"]).resolve() != tmp_path.resolve(), "the kernel runs elsewhere: the case that matters"
    assert call["env"]["KDLIB_RESULTS"] == str(tmp_path / "figures" / "full")
    assert Path(call["env"]["KDLIB_FIGURES"]) == tmp_path / "figures" / "full"
