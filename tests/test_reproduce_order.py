"""``reproduce`` runs notebooks side by side, each only after the notebooks whose results it reads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kdlib.errors import KDConfigError
from kdlib.notebook import reproduce

NAMES = ["00_tour", "01_partitions", "02_pretrained_parties", "03_standard_kd", "04_tuned_kd", "05_mutual_learning",
         "06_data_partitioning_kd", "07_federated", "08_findings"]  # fmt: skip


class Recorder:
    """A fake ``execute``: logs start and end times, the lane, and how many ran at once; fails where told."""

    def __init__(self, fail: str = "", seconds: float = 0.02) -> None:
        self.fail, self.seconds = fail, seconds
        self.events: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.now_running: set[int] = set()
        self.most_at_once = 0

    def __call__(self, path: Path, lane: int) -> str | None:
        with self.lock:
            assert lane not in self.now_running, f"lane {lane} given twice at once"
            self.now_running.add(lane)
            self.most_at_once = max(self.most_at_once, len(self.now_running))
            self.events.append(("start", path.stem, lane))
        time.sleep(self.seconds)
        with self.lock:
            self.now_running.discard(lane)
            self.events.append(("end", path.stem, lane))
        return f"{path.stem} failed" if path.stem == self.fail else None

    def index(self, kind: str, name: str) -> int:
        return next(i for i, (k, n, _) in enumerate(self.events) if k == kind and n == name)


class Bar:
    def __init__(self) -> None:
        self.count = 0

    def update(self, n: int) -> None:
        self.count += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass


def paths(names: list[str]) -> list[Path]:
    return [Path(f"{name}.ipynb") for name in names]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_every_notebook_runs_once_and_after_what_it_reads(workers: int) -> None:
    recorder, bar = Recorder(), Bar()
    assert reproduce.run_in_order(paths(NAMES), recorder, workers=workers, bar=bar) == []
    started = [name for kind, name, _ in recorder.events if kind == "start"]
    assert sorted(started) == sorted(NAMES) and bar.count == len(NAMES)
    for name, deps in reproduce.NOTEBOOK_DEPENDENCIES.items():
        for dep in deps:
            assert recorder.index("end", dep) < recorder.index("start", name), f"{name} started before {dep} ended"
    assert recorder.most_at_once <= workers
    assert all(1 <= lane <= workers for _, _, lane in recorder.events)


def test_two_workers_run_two_notebooks_at_once_and_start_the_awaited_ones_first() -> None:
    recorder = Recorder(seconds=0.3)  # long enough that a loaded CPU still starts the second before the first ends
    reproduce.run_in_order(paths(NAMES), recorder, workers=2, bar=Bar())
    assert recorder.most_at_once == 2
    first_two = {name for kind, name, _ in [e for e in recorder.events if e[0] == "start"][:2]}
    assert first_two == {"02_pretrained_parties", "07_federated"}  # what others wait for, and ready at once


def test_after_a_failure_nothing_new_starts() -> None:
    recorder = Recorder(fail="02_pretrained_parties")
    failures = reproduce.run_in_order(paths(NAMES), recorder, workers=1, bar=Bar())
    started = {name for kind, name, _ in recorder.events if kind == "start"}
    assert failures[0] == "02_pretrained_parties failed"
    assert started == {"02_pretrained_parties"}


def test_a_notebook_left_out_is_not_waited_for() -> None:
    recorder = Recorder()
    assert reproduce.run_in_order(paths(["03_standard_kd", "08_findings"]), recorder, workers=2, bar=Bar()) == []
    assert recorder.index("end", "03_standard_kd") < recorder.index("start", "08_findings")


def test_dependencies_name_real_notebooks() -> None:
    names = {path.stem for path in reproduce.study_notebooks()}
    for name, deps in reproduce.NOTEBOOK_DEPENDENCIES.items():
        assert name in names and set(deps) <= names


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_a_bad_worker_count_is_refused(workers: object) -> None:
    with pytest.raises(KDConfigError, match="workers"):
        reproduce.reproduce("smoke", only="00", execution=reproduce.Execution(progress=False, workers=workers))


def test_executed_notebooks_keep_their_output_but_not_the_progress_bars(tmp_path) -> None:
    import nbformat

    from kdlib.notebook.reproduce import is_progress_text, strip_progress_bars

    bars = "DP-KD:  33%|###3      | 20/60 [00:00<00:00, 399.73it/s, loss=0.018]\r\n"
    bars += "study (smoke): 12it [00:01, 9.1it/s]\n"
    assert is_progress_text(bars)
    assert not is_progress_text("Gain in accuracy points | mean ± 95% half-width\n")
    assert not is_progress_text(bars + "teacher: mlp (50,826 parameters)\n")  # mixed text is kept whole
    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=bars),
                    nbformat.v4.new_output("stream", name="stdout", text="Gain: +1.00\n")]  # fmt: skip
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    assert strip_progress_bars(path) == 1
    (kept,) = nbformat.read(path, as_version=4).cells[0].outputs
    assert kept.text == "Gain: +1.00\n"
