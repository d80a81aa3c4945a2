"""Progress output: plain lines off a terminal, the kernel's widget bars passed through, no kernel warnings,
and a ``reproduce`` run that leaves tracked files alone."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from tqdm.std import tqdm as std_tqdm

from kdlib.core.progress import LineTqdm, LineWriter, progress_bar, progress_class
from kdlib.notebook import notebook_progress
from kdlib.notebook.notebook_progress import ENGINE, KernelBars, NotebookProgress
from kdlib.paths import PROJECT_ROOT, figures_dir


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_class_redraws_on_a_terminal_and_prints_lines_elsewhere() -> None:
    assert progress_class(FakeTerminal()) is std_tqdm
    assert progress_class(io.StringIO()) is LineTqdm
    assert isinstance(progress_bar(range(2), file=io.StringIO(), disable=True), LineTqdm)


def test_nested_line_bars_write_whole_lines_without_escape_codes() -> None:
    out = io.StringIO()
    for _ in LineTqdm(range(3), desc="outer", file=out, mininterval=0):
        for _ in LineTqdm(range(4), desc="inner", file=out, mininterval=0, leave=False):
            pass
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(line.strip() for line in lines)
    assert any(line.startswith("inner:") and "4/4" in line for line in lines)
    assert lines[-1].startswith("outer: 100%") and "3/3" in lines[-1]
    assert all(a != b for a, b in zip(lines, lines[1:], strict=False)), "a redraw that changed nothing was repeated"


def test_line_writer_splits_redraws_and_drops_cursor_moves() -> None:
    out = io.StringIO()
    writer = LineWriter(out)
    writer.write("\r a 10%   ")
    writer.write("\n\x1b[A\r b 20%\r")
    writer.write("\r   \r")  # tqdm clearing a bar
    writer.write("\r b 20%")  # the same line again
    assert out.getvalue() == " a 10%\n b 20%\n"


def widget(comm_id: str, model: str, **state) -> dict:
    return {
        "msg_type": "comm_open",
        "content": {"comm_id": comm_id, "data": {"state": {"_model_name": model, **state}}},
    }


def update(comm_id: str, **state) -> dict:
    return {"msg_type": "comm_msg", "content": {"comm_id": comm_id, "data": {"method": "update", "state": state}}}


def tqdm_bar(prefix: str) -> list[dict]:
    """The messages of one tqdm.notebook bar: description, progress, counter, layout, then the HBox."""
    return [
        widget(f"{prefix}-l", "HTMLModel", value=""),
        widget(f"{prefix}-p", "FloatProgressModel", value=0, max=10, bar_style=""),
        widget(f"{prefix}-r", "HTMLModel", value=""),
        widget(f"{prefix}-layout", "LayoutModel"),
        widget(
            prefix,
            "HBoxModel",
            layout=f"IPY_MODEL_{prefix}-layout",
            children=[f"IPY_MODEL_{prefix}-l", f"IPY_MODEL_{prefix}-p", f"IPY_MODEL_{prefix}-r"],
        ),
    ]


def test_kernel_bars_show_the_running_bars_outermost_first() -> None:
    bars = KernelBars()
    for msg in [*tqdm_bar("study"), widget("slider", "HBoxModel", children=["IPY_MODEL_x"]), *tqdm_bar("train")]:
        bars.handle(msg)
    bars.handle(update("study-l", value="study:\u2007\u200725%"))
    bars.handle(update("study-r", value="\u20073/12\u2007[00:10&lt;00:30]"))
    bars.handle(update("train-l", value="pretrain:\u200740%"))
    bars.handle(update("train-r", value="\u200712/30"))
    assert bars.text() == "study: 25% 3/12 [00:10<00:30] | pretrain: 40% 12/30"
    bars.handle({"msg_type": "comm_close", "content": {"comm_id": "train", "data": {}}})  # leave=False
    assert bars.text() == "study: 25% 3/12 [00:10<00:30]"
    bars.handle(update("study-p", bar_style="success"))  # tqdm marks a finished bar that stays
    assert bars.text() == ""


def test_a_cell_bar_of_a_silent_cell_still_prints_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notebook_progress, "LINE_INTERVAL_S", 0.05)
    out = io.StringIO()
    with NotebookProgress("nb", stream=out) as progress:
        progress.cell_started(2, 5)
        progress.bars.handle(widget("w", "HTMLModel"))  # not a bar: ignored
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("  [00:00] nb cell 3/5") for line in lines)
    assert "\r" not in out.getvalue()


LIBRARY_BAR = (
    "import time\nfrom tqdm.auto import tqdm\nfor _ in tqdm(range(8), desc='library bar'):\n    time.sleep(0.25)"
)


def write_notebook(path: Path, source: str = LIBRARY_BAR) -> None:
    """A one-cell notebook for the python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_the_kernels_widget_bar_reaches_the_log_and_the_kernel_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import papermill as pm

    monkeypatch.setattr(notebook_progress, "LINE_INTERVAL_S", 0.2)
    write_notebook(tmp_path / "bars.ipynb")
    out = io.StringIO()
    with NotebookProgress("bars", stream=out) as progress:
        pm.execute_notebook(
            str(tmp_path / "bars.ipynb"),
            str(tmp_path / "out.ipynb"),
            progress_bar=False,
            kernel_name="python3",
            engine_name=ENGINE,
            progress=progress,
            cwd=str(tmp_path),
        )
    shown = out.getvalue()
    assert "bars cell 1/1: library bar:" in shown and "/8" in shown, shown
    assert "\r" not in shown and "\x1b" not in shown
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out
    assert "WARNING" not in captured.err, captured.err


def test_output_widget_contents_go_to_the_cell_and_nothing_is_sent_to_the_kernel(tmp_path: Path) -> None:
    """The engine keeps no stand-in for Output widgets (nbclient's sends each captured output back to the kernel
    while the client waits for the cell's reply on that socket): what a cell writes inside one is a cell output."""
    import papermill as pm

    write_notebook(
        tmp_path / "output_widget.ipynb",
        "import ipywidgets as widgets\nout = widgets.Output()\ndisplay(out)\n"
        "with out:\n    out.clear_output(wait=True)\n    print('drawn inside the widget')",
    )
    done = pm.execute_notebook(str(tmp_path / "output_widget.ipynb"), str(tmp_path / "out.ipynb"), progress_bar=False,
                               kernel_name="python3", engine_name=ENGINE, cwd=str(tmp_path), execution_timeout=120)
    texts = [o.get("text", "") for o in done.cells[0].outputs if o.output_type == "stream"]
    assert any("drawn inside the widget" in text for text in texts), done.cells[0].outputs


def test_figures_default_to_a_folder_git_ignores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KDLIB_FIGURES", raising=False)
    assert figures_dir() == PROJECT_ROOT / "runs" / "figures"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(figures_dir() / "03_own_unseen.png")], cwd=PROJECT_ROOT, check=False
    )
    if ignored.returncode == 128:
        pytest.fail("not a git checkout: cannot check .gitignore")
    assert ignored.returncode == 0, "runs/figures/ must be ignored by git"


def tracked_changes() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "figures"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.slow
def test_reproduce_writes_figures_outside_the_gallery_unless_asked(
    tmp_path: Path, isolated_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdlib.notebook import reproduce

    # 00's slider cell is the one whose reply papermill once waited for forever (kdlib.notebook.notebook_progress); a
    # cell that passes 5 minutes fails the test instead of stalling the run.
    before = tracked_changes()
    quiet = reproduce.Execution(output=tmp_path / "nb", progress=False, cell_timeout=300)
    assert reproduce.reproduce("smoke", only="00", execution=quiet) == 0
    assert (isolated_folders["figures"] / "00_kd_view_T4.png").is_file()
    assert tracked_changes() == before

    gallery = tmp_path / "gallery"
    monkeypatch.setattr(reproduce, "GALLERY_DIR", gallery)
    to_gallery = reproduce.Execution(output=tmp_path / "nb", progress=False, gallery=True, cell_timeout=300)
    assert reproduce.reproduce("smoke", only="00", execution=to_gallery) == 0
    assert (gallery / "00_kd_view_T4.png").is_file()
    assert tracked_changes() == before


class FakeReporter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        pass

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def report(nodeid: str, when: str, outcome: str, duration: float = 1.0) -> pytest.TestReport:
    return pytest.TestReport(nodeid, ("f.py", 0, ""), {}, outcome, None, when, duration=duration)


def test_one_line_per_test_file_once_all_its_tests_ran() -> None:
    from tests.conftest import FileProgress

    reporter = FakeReporter()
    progress = FileProgress(reporter)
    progress.expect(["tests/a.py::one", "tests/a.py::two@a", "tests/b.py::three"])
    progress.expect(["tests/a.py::one"])  # a second worker's collection changes nothing
    for nodeid, outcome in (("tests/a.py::one", "passed"), ("tests/b.py::three", "skipped")):
        for when in ("setup", "call", "teardown") if outcome == "passed" else ("setup", "teardown"):
            progress.report(report(nodeid, when, outcome if when != "teardown" else "passed"))
    assert reporter.lines == ["tests/b.py: 1 skipped in 2 s  [2/3 tests]"]
    progress.report(report("tests/a.py::two@a", "setup", "passed"))
    progress.report(report("tests/a.py::two@a", "call", "failed"))
    progress.report(report("tests/a.py::two@a", "teardown", "passed"))
    assert reporter.lines[-1] == "tests/a.py: 1 passed, 1 failed in 6 s  [3/3 tests]"


def test_library_bars_off_a_terminal_are_line_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdlib.core import progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress.auto_class() is LineTqdm
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert progress.auto_class() is std_tqdm
