"""Shared fixtures: keep a test's results, checkpoints, figures and data out of the project's folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `kdlib study` runs on Ray, one worker per core, unless KDLIB_WORKERS says otherwise: the tests' study processes
# run one by one (tests/test_parallel.py sets its own), so that two xdist workers never start two Ray clusters.
os.environ["KDLIB_WORKERS"] = "1"


@pytest.fixture
def isolated_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point KDLIB_RESULTS / _CACHE / _FIGURES / _DATA at fresh temporary folders (subprocesses inherit them)."""
    folders = {name: tmp_path / name for name in ("results", "cache", "figures", "data")}
    for name, folder in folders.items():
        monkeypatch.setenv(f"KDLIB_{name.upper()}", str(folder))
    monkeypatch.setenv("KDLIB_CIFAR10_ARCHIVE", str(tmp_path / "no-such-archive.tar.gz"))
    return folders


# --- parallel runs (pytest-xdist, `-n 2 --dist loadgroup` in pyproject.toml) and progress per file ---------------
#
# Every test file is one xdist group, so a file's tests run in order on one worker and its module fixtures are
# built once. Tests marked `spread` are scheduled one by one on whichever worker is free and go first (they are
# the long ones: tests/test_notebooks.py runs each notebook once per session in a folder all workers share).


@pytest.fixture
def float32_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward passes in float32 (``KDLIB_PRECISION=fp32``), for tests that compare two ways of computing the same
    training to float32 rounding; under the default bf16 autocast on the CPU they agree only to bf16 rounding."""
    monkeypatch.setenv("KDLIB_PRECISION", "fp32")


@pytest.fixture(scope="session")
def shared_tmp_path(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A temporary folder of this test session that every xdist worker sees (each worker's basetemp is a
    subfolder of the run's); without xdist, the session's own basetemp."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if hasattr(request.config, "workerinput") else base) / "shared"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Slow tests in files that other work owns, marked here: each runs for minutes (a whole GPU-session script on the
# CPU, a Flower simulation on Ray). A name that no longer exists in its file stops the run, so the list cannot rot.
SLOW_TESTS = {
    "tests/test_gpu_session.py::test_the_gpu_session_script_stores_and_packs_everything_it_runs",
    "tests/test_federated.py::test_flower_simulation_two_clients_two_rounds",
    "tests/test_resume_tuning_federated.py::test_a_killed_federated_run_resumes_from_its_stored_runs",
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items, and before -k/-m deselect any
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    names = {item.nodeid.split("[", 1)[0] for item in items}
    files = {name.split("::", 1)[0] for name in names}
    stale = sorted(name for name in SLOW_TESTS if name.split("::", 1)[0] in files and name not in names)
    if stale:
        raise pytest.UsageError(f"tests/conftest.py SLOW_TESTS names tests that do not exist: {', '.join(stale)}")
    for item in items:
        if item.nodeid.split("[", 1)[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.spread)  # minutes long: scheduled early, with the notebooks
        if item.get_closest_marker("spread") is None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    # Longest first, so that no worker starts a long test when the other is nearly done: the spread tests, then
    # whole files that hold a slow test, then the rest. The sort is stable: a file's tests keep their order.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    # Tests marked `last` wait for others' results (notebook 08): they go after everything else.
    items.sort(key=lambda item: 3 if item.get_closest_marker("last") else 0 if item.get_closest_marker("spread")
               else 1 if item.path in slow_files else 2)  # fmt: skip


class FileProgress:
    """Prints one line per test file once all its tests ran: outcome counts, summed test time, tests done."""

    def __init__(self, reporter) -> None:
        self.reporter = reporter
        self.total: dict[str, int] = {}
        self.seen: dict[str, dict[str, str]] = {}
        self.seconds: dict[str, float] = {}
        self.done = 0

    def expect(self, nodeids: list[str]) -> None:
        if not self.total:
            for nodeid in nodeids:
                path = nodeid.split("::", 1)[0]
                self.total[path] = self.total.get(path, 0) + 1

    def report(self, report: pytest.TestReport) -> None:
        path = report.nodeid.split("::", 1)[0]
        outcomes = self.seen.setdefault(path, {})
        self.seconds[path] = self.seconds.get(path, 0.0) + report.duration
        if report.failed:
            outcomes[report.nodeid] = "failed"
        elif report.skipped and report.nodeid not in outcomes:
            outcomes[report.nodeid] = "skipped"
        elif report.when == "call":
            outcomes.setdefault(report.nodeid, "passed")
        if report.when != "teardown":
            return
        outcomes.setdefault(report.nodeid, "passed")
        self.done += 1
        if len(outcomes) == self.total.get(path, -1):
            counts = {k: list(outcomes.values()).count(k) for k in ("passed", "failed", "skipped")}
            summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
            writer = getattr(self.reporter, "_tw", None)  # the progress dots share the line: start a new one
            if writer is not None and writer.width_of_current_line:
                self.reporter.write("\n")
            self.reporter.write_line(
                f"{path}: {summary} in {self.seconds[path]:.0f} s  [{self.done}/{sum(self.total.values())} tests]"
            )


@pytest.hookimpl(trylast=True)  # after the terminal reporter is registered
def pytest_configure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        config.pluginmanager.register(FileProgressPlugin(FileProgress(reporter)), "kdlib-file-progress")


class FileProgressPlugin:
    def __init__(self, progress: FileProgress) -> None:
        self.progress = progress

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.progress.expect([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        self.progress.expect(list(ids))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.progress.report(report)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module's tests (tiny models), the previous count restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
