"""nbval runs the exercise notebooks of this folder with their model answers (``pytest --nbval-lax``, in the
project's test command through pyproject's ``testpaths`` and ``addopts``).

Every cell is a test item and must run without an error; the checks raise on a wrong answer, so a notebook that
passes under nbval passes every check. Each notebook's kernel starts with ``KDLIB_SOLUTIONS=1`` (the notebook's
``solutions`` then turns on: nbval passes no parameters) and with its results, cache and figures in a temporary
folder, so a test run leaves the project's folders as they were. The environment is changed only while the kernel
starts, not for the other tests of the session. A notebook's cells run in order on one xdist worker (one group per
notebook), and all of them are ``slow``: left out of the quick subset together, never some cells without the others.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from kdlib.paths import environment
from kdlib.teaching import SOLUTIONS_ENV

HERE = Path(__file__).resolve().parent


def is_exercise_cell(item: pytest.Item) -> bool:
    """An nbval item (one code cell) of a notebook in this folder."""
    return item.path.suffix == ".ipynb" and item.path.parent == HERE


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups and before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_exercise_cell(item):
            item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(f"exercise-{item.path.stem}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Start a notebook's kernel (nbval does so in the setup of its first cell) with the solutions switched on and
    the kdlib folders in a temporary folder; removed when the notebook is done."""
    notebook = item.parent
    if not is_exercise_cell(item) or getattr(notebook, "kernel", None) is not None:
        return (yield)
    folder = Path(tempfile.mkdtemp(prefix=f"kdlib-{item.path.stem}-"))
    env = {f"KDLIB_{name.upper()}": str(folder / name) for name in ("results", "cache", "figures")}
    env[SOLUTIONS_ENV] = "1"
    try:
        with environment(env):  # only while the kernel starts: it copies the environment
            return (yield)
    finally:
        notebook.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
