"""``python -m kdlib reproduce``: execute every study notebook in order with papermill.

Executed copies go to an output folder (never over the sources); figures go to :func:`kdlib.paths.figures_dir`
(``runs/figures/``, ignored by git), or to the committed gallery ``figures/`` with ``gallery=True``, so a run never
changes tracked files unless asked to. The first failing cell stops the run with the notebook, the cell and the
error named. Progress: a bar over the notebooks and, under it, the running notebook's cell and the library's own
bar from inside the kernel (:mod:`kdlib.notebook.notebook_progress`); plain lines when stderr is not a terminal.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlib.core.progress import progress_bar
from kdlib.errors import KDConfigError
from kdlib.paths import PROJECT_ROOT, absolute_path_variables, figures_dir, user_folder
from kdlib.study.config import SCALES

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
GALLERY_DIR = PROJECT_ROOT / "figures"
"""The committed figures that the README shows; written only by ``reproduce(execution=Execution(gallery=True))``."""


def study_notebooks(only: str | None = None) -> list[Path]:
    """The numbered study notebooks in order (``only``: comma-separated name prefixes, e.g. ``"00,03"``)."""
    found = sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        prefixes = [s.strip() for s in only.split(",") if s.strip()]
        found = [p for p in found if any(p.name.startswith(prefix) for prefix in prefixes)]
        if not found:
            raise KDConfigError("only", only, "prefixes of notebooks in notebooks/, e.g. 00,03")
    return found


def declared_parameters(path: Path) -> set[str]:
    """The names of a notebook's papermill parameters: the names assigned in its cell tagged ``parameters`` (read
    with ``json`` and ``ast``, not papermill, so that a bad ``--set`` fails in a few seconds)."""
    import ast
    import json

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    names: set[str] = set()
    for cell in tagged:
        for node in ast.parse("".join(cell["source"])).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def notebook_parameters(
    path: Path, scale: str, device: str, overrides: dict[str, Any], notebook_keys: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The papermill parameters this notebook declares, from the scale, the device and the overrides.

    An override that this notebook declares goes in as its parameter; one that another study notebook declares
    (``notebook_keys``, e.g. 08's ``federated``) is left out here; any other is a config field and goes into the
    ``overrides`` parameter.
    """
    declared = declared_parameters(path)
    params = {"scale": scale, "device": device}
    config_overrides = {}
    for key, value in overrides.items():
        if key in declared:
            params[key] = value
        elif key not in notebook_keys:
            config_overrides[key] = value
    if config_overrides and "overrides" in declared:
        params["overrides"] = config_overrides
    return {k: v for k, v in params.items() if k in declared}


_BAR_LINE = re.compile(r"\|\s*[\d.]+[kMG]?/[\d.?]+[kMG]?\s*\[|\d+(?:it|nb|file|B) \[")
"""A line that tqdm drew: ``desc:  40%|####      | 24/60 [00:01<00:02, ...]`` or ``desc: 12it [00:01, ...]``."""


def is_progress_text(text: str) -> bool:
    """Whether a stream output holds only progress-bar lines (and blank ones)."""
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    return bool(lines) and all(_BAR_LINE.search(line) for line in lines)


def strip_progress_bars(path: Path) -> int:
    """Remove the progress-bar stream outputs from an executed notebook (a training cell leaves a hundred lines of
    them), keeping every other output; returns how many were removed."""
    import nbformat

    if not path.exists():
        return 0
    notebook = nbformat.read(path, as_version=4)
    removed = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = [o for o in cell.outputs if not (o.output_type == "stream" and is_progress_text(o.text))]
        removed += len(cell.outputs) - len(kept)
        cell.outputs = kept
    if removed:
        nbformat.write(notebook, path)
    return removed


def failure_line(notebook: str, error: Any) -> str:
    """One line for a failed notebook: a bad parameter's ``KDConfigError`` (found in the error's name, value or
    traceback, where it may be wrapped in another error) names the notebook and the parameter; any other error
    names the notebook, the cell and the error."""
    if error.ename == "KDConfigError":
        return f"{notebook}: bad parameter: {error.evalue}"
    for line in reversed(error.traceback or []):
        plain = _ANSI.sub("", line)
        if "KDConfigError: " in plain:
            return f"{notebook}: bad parameter: {plain.split('KDConfigError: ', 1)[1].strip()}"
    return f"{notebook} failed in cell {error.exec_count}: {error.ename}: {error.evalue}"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def check_overrides(scale: str, overrides: dict[str, Any], notebook_keys: frozenset[str] = frozenset()) -> None:
    """Fail before the first notebook runs when an override is bad: a key that is neither a field of the study's
    or the federated study's config nor a parameter some study notebook declares (``notebook_keys``, e.g. a typo
    such as ``n_trian``), or a bad value of a study-config field. Parameter values are checked by the notebooks."""
    from dataclasses import fields

    from kdlib.fl.config import FederatedConfig
    from kdlib.study.config import StudyConfig, scale_config

    known = {f.name for f in fields(StudyConfig)}
    allowed = known | {f.name for f in fields(FederatedConfig)} | set(notebook_keys)
    for key in overrides:
        if key not in allowed:
            choices = ", ".join(sorted(allowed - {"scale"}))
            raise KDConfigError("--set", key, f"a config field or a notebook parameter: {choices}")
    scale_config(scale, **{k: v for k, v in overrides.items() if k in known})


NOTEBOOK_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "03_standard_kd": ("02_pretrained_parties",),
    "04_tuned_kd": ("02_pretrained_parties",),
    "05_mutual_learning": ("02_pretrained_parties",),
    "06_data_partitioning_kd": ("02_pretrained_parties",),
    "08_findings": ("03_standard_kd", "04_tuned_kd", "05_mutual_learning", "06_data_partitioning_kd", "07_federated"),
}
"""A notebook runs after those whose cached parties or stored results it reads, so that no work is done twice
(a notebook left out of a run with ``only`` is not waited for)."""


def default_workers() -> int:
    """Notebooks at once: one per core (each kernel trains on one thread, see ``KDLIB_THREADS``), at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


def start_order(notebooks: list[Path]) -> list[Path]:
    """The order in which ready notebooks start: those that others wait for first, then by number."""
    needed = {name for deps in NOTEBOOK_DEPENDENCIES.values() for name in deps}
    return sorted(notebooks, key=lambda path: (path.stem not in needed, path.name))


def ready(path: Path, done: set[str], selected: set[str]) -> bool:
    """Whether every notebook that ``path`` depends on, and that this run executes, has finished."""
    return all(dep in done or dep not in selected for dep in NOTEBOOK_DEPENDENCIES.get(path.stem, ()))


@dataclass(frozen=True)
class Execution:
    """Where and how :func:`reproduce` runs the notebooks.

    ``output``: the folder of the executed copies (:func:`kdlib.paths.user_folder`: relative, inside the project;
    absolute, as given). ``device``: every notebook's ``device`` parameter. ``progress``: the bars on stderr.
    ``gallery``: figures to the committed :data:`GALLERY_DIR` instead of :func:`kdlib.paths.figures_dir`.
    ``workers``: notebooks at once (None: :func:`default_workers`). ``cell_timeout``: seconds a cell may run before
    its notebook fails (None: no limit; a study cell at ``paper`` scale runs for hours).
    """

    output: str | Path = "runs/notebooks"
    device: str = "auto"
    progress: bool = True
    gallery: bool = False
    workers: int | None = None
    cell_timeout: float | None = None


def reproduce(
    scale: str = "smoke",
    only: str | None = None,
    overrides: dict[str, Any] | None = None,
    execution: Execution = Execution(),  # noqa: B008 (frozen: one shared default is safe)
) -> int:
    """Run the notebooks (``only``: name prefixes; ``overrides``: config fields and notebook parameters); return 0
    when all ran, 1 at the first failure (with a message on stderr).

    ``execution.workers`` notebooks run at once, each after those it depends on (:data:`NOTEBOOK_DEPENDENCIES`).
    After a failure no new notebook starts; the running ones finish.
    """
    output, device, progress, gallery, workers = (
        execution.output, execution.device, execution.progress, execution.gallery, execution.workers
    )  # fmt: skip
    if scale not in SCALES:
        raise KDConfigError("scale", scale, f"one of {', '.join(SCALES)}")
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise KDConfigError("workers", workers, "an integer >= 1 (notebooks run at once)")
    notebooks = study_notebooks(only)
    notebook_keys = frozenset().union(*(declared_parameters(path) for path in study_notebooks()))
    check_overrides(scale, overrides or {}, notebook_keys)
    out_dir = user_folder(output, "output", PROJECT_ROOT / "runs" / "notebooks")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = GALLERY_DIR if gallery else figures_dir()
    kernel_env = absolute_path_variables({**os.environ, "KDLIB_FIGURES": str(figures)})

    def execute(path: Path, lane: int) -> str | None:
        """Run one notebook on progress line ``lane``; the failure line, or None when it ran."""
        import papermill as pm

        from kdlib.notebook.notebook_progress import ENGINE, NotebookProgress

        started, target = time.perf_counter(), out_dir / path.name
        try:
            with NotebookProgress(path.stem, stream=sys.stderr, enabled=progress, position=lane) as inner:
                pm.execute_notebook(
                    str(path),
                    str(target),
                    parameters=notebook_parameters(path, scale, device, overrides or {}, notebook_keys),
                    cwd=str(NOTEBOOKS_DIR),
                    progress_bar=False,
                    kernel_name="python3",
                    engine_name=ENGINE,
                    progress=inner,
                    kernel_env=kernel_env,
                    execution_timeout=execution.cell_timeout,
                )
        except pm.PapermillExecutionError as error:
            strip_progress_bars(target)
            return f"{failure_line(path.name, error)}\nThe executed copy is {target}."
        strip_progress_bars(target)
        bar.write(f"{path.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return None

    bar = progress_bar(total=len(notebooks), desc=f"notebooks ({scale})", unit="nb", disable=not progress,
                       mininterval=0)  # fmt: skip
    failures = run_in_order(notebooks, execute, workers=min(workers, len(notebooks)), bar=bar)
    bar.close()
    if failures:
        print("\n" + "\n".join(failures), file=sys.stderr)
        return 1
    print(
        f"All {len(notebooks)} notebooks ran at {scale} scale; executed copies in {out_dir}, "
        f"figures in {figures}."
    )
    return 0


def run_in_order(
    notebooks: list[Path], execute: Callable[[Path, int], str | None], *, workers: int, bar: Any
) -> list[str]:
    """Run ``execute(path, lane)`` for every notebook on ``workers`` threads, each once its dependencies ran;
    ``lane`` (1..workers) is the progress line it may draw on. Returns the failure lines (empty when all ran)."""
    pending, selected = start_order(notebooks), {path.stem for path in notebooks}
    done: set[str] = set()
    failures: list[str] = []
    running: dict[Future, tuple[Path, int]] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notebook") as pool:
        while running or (pending and not failures):
            free = sorted(set(range(1, workers + 1)) - {lane for _, lane in running.values()})
            startable = [path for path in pending if ready(path, done, selected)] if not failures else []
            for path, lane in zip(startable, free, strict=False):
                pending.remove(path)
                running[pool.submit(execute, path, lane)] = (path, lane)
            if not running:
                failures.append("never ran, waiting on a notebook that did not: " + ", ".join(p.stem for p in pending))
                break
            bar.set_postfix_str(", ".join(path.stem for path, _ in running.values()))
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                path, _lane = running.pop(future)
                failure = future.result()
                if failure:
                    failures.append(failure)
                else:
                    done.add(path.stem)
                bar.update(1)
    return failures
