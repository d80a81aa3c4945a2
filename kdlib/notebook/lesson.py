"""What the study notebooks share: opening their study from the papermill parameters, showing kdlib's own code
as it runs (``show_source``), and saving then showing a figure.

The code a notebook shows is read from the library with :mod:`inspect` when the cell runs, so the notebook cannot
drift from what trains its models.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdlib.errors import KDConfigError

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

    from kdlib.study.runner import Study

__all__ = ["setup", "show_figure", "show_source", "source_text", "variant"]


def source_text(obj: Any, pattern: str | None = None) -> str:
    """The live source of a function or class, dedented; with ``pattern``, only the block that starts on the first
    line containing it (that line and the more deeply indented lines after it, e.g. ``"def batch_loss"``)."""
    lines = inspect.getsource(obj).splitlines()
    if pattern is not None:
        start = next((i for i, line in enumerate(lines) if pattern in line), None)
        if start is None:
            raise KDConfigError("pattern", pattern, f"text found in a line of {_name(obj)}")
        indent = _indent(lines[start])
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
            end += 1
        lines = lines[start:end]
    while lines and not lines[-1].strip():
        lines.pop()
    return textwrap.dedent("\n".join(lines))


def show_source(obj: Any, pattern: str | None = None) -> None:
    """Show :func:`source_text` under a comment naming where it is: highlighted code in Jupyter, plain text
    otherwise."""
    text = source_text(obj, pattern)
    line = inspect.getsourcelines(obj)[1]
    if pattern is not None:
        line += next(i for i, row in enumerate(inspect.getsource(obj).splitlines()) if pattern in row)
    text = f"# {_name(obj)}, {_where(obj)} line {line}\n{text}"
    if _in_jupyter():
        from IPython.display import Code, display

        display(Code(text, language="python"))
    else:
        print(text)


def setup(scale: str = "smoke", *, transfer: str | None = None, overrides: Any = None, **parameters: Any) -> Study:
    """Open a study notebook's study from its papermill parameters and print what it runs on.

    ``parameters`` are the notebook's others, as :func:`~kdlib.study.runner.open_study` takes (``device``, ``dataset``,
    ``seed``, ``scenarios``). ``overrides`` is the notebook's mapping of config fields (or its YAML text, as papermill
    may pass it); it wins over ``transfer`` and over the other parameters (``over_parameters`` warns of a clash), and
    the federated study's own fields in it (08 hands them on to that study, e.g. ``starts``) are dropped here with a
    warning. ``transfer=None`` leaves the transfer set to the scale (for the notebooks without KD runs).
    """
    from kdlib.fl.config import FederatedConfig
    from kdlib.notebook.plots import TRANSFER_LABELS
    from kdlib.study.config import StudyConfig, notebook_overrides, over_parameters, own_overrides
    from kdlib.study.runner import open_study

    fields = own_overrides(notebook_overrides(overrides), StudyConfig, FederatedConfig, "distillation study")
    if transfer is not None:
        fields = {"transfer": transfer, **fields}
    study = open_study(scale, **over_parameters(parameters, fields))
    data = study.dataset
    print(data.description, "|", len(data.x_train), "train /", len(data.x_test), "test images")
    print("scenarios:", ", ".join(study.cfg.scenarios), "| teacher:", study.cfg.teacher_model,
          "| student:", study.cfg.student_model, "| seeds:", ", ".join(map(str, study.seeds)))  # fmt: skip
    if transfer is not None:
        print("transfer set (the data KD runs on):", TRANSFER_LABELS[study.cfg.transfer])
    return study


def setup_federated(scale: str = "smoke", *, overrides: Any = None, **parameters: Any) -> Any:
    """Open notebook 07's federated study from its papermill parameters and print what it runs on (the
    ``FederatedStudy`` of :func:`kdlib.fl.open_federated`; ``overrides``: FederatedConfig fields, or their YAML)."""
    from kdlib.fl.study import open_federated
    from kdlib.study.config import notebook_overrides, over_parameters

    fed = open_federated(scale, **over_parameters(parameters, notebook_overrides(overrides)))
    cfg, data = fed.cfg, fed.dataset
    print(data.description, "|", len(data.x_train), "train /", len(data.x_test), "test images")
    print(f"scenarios: {', '.join(cfg.scenarios)} | {cfg.num_clients} clients | model {cfg.model} | "
          f"{cfg.rounds} rounds x {cfg.local.epochs} local epoch(s), fraction_fit {cfg.fraction_fit:g}")
    print(f"public split: {cfg.public_fraction:.0%} of the training set | target: {cfg.target_rule()} | "
          f"seeds: {', '.join(map(str, fed.seeds))}")
    return fed


def variant(study: Study, **changes: Any) -> Study:
    """The same study (results store, device) with some config fields changed, e.g. ``transfer="union"``."""
    from kdlib.study.runner import Study

    return Study(study.cfg.replace(**changes), study.store, device=study.device, progress=study.progress,
                 data_root=study.data_root)  # fmt: skip


def show_figure(fig: plt.Figure, name: str) -> None:
    """Save ``fig`` as ``name`` in the figures folder (``kdlib.notebook.figure_layout.save_figure``), then show it."""
    import matplotlib.pyplot as plt

    from kdlib.notebook.figure_layout import save_figure

    save_figure(fig, name)
    plt.show()


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _where(obj: Any) -> str:
    path = Path(inspect.getsourcefile(obj) or "?")
    package = Path(__file__).resolve().parents[1]  # kdlib/
    try:
        return f"kdlib/{path.resolve().relative_to(package).as_posix()}"
    except ValueError:
        return path.name


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _in_jupyter() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
