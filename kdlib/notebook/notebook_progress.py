"""Progress from inside a notebook that papermill runs, and a kernel without transport warnings.

In a kernel, kdlib's tqdm bars are ipywidgets (``tqdm.notebook``: an HBox of a description, a progress bar and
a counter). Their updates reach papermill's client as widget messages, never as text, so a terminal running
``python -m kdlib reproduce`` would see nothing for minutes. The papermill engine ``kdlib`` registered here reads
those messages (:class:`KernelBars`) and shows, under the caller's bar over notebooks, one line with the current
cell, the time spent in the notebook and the library's latest bar (:class:`NotebookProgress`), redrawn every
second on a terminal and printed as a plain line every :data:`kdlib.core.progress.LINE_INTERVAL_S` seconds otherwise.

Kernels get CurveZMQ keys from jupyter_client where the kernelspec supports them (``transport_encryption``), so
ipykernel (7+) does not warn that it "is running over TCP without encryption".
"""

from __future__ import annotations

import html
import threading
from typing import IO, Any

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from papermill.utils import remove_args
from tqdm.std import tqdm as std_tqdm
from traitlets import Any as AnyTrait
from traitlets.config import Config

from kdlib.core.progress import LINE_INTERVAL_S, LineTqdm, is_terminal

ENGINE = "kdlib"
TERMINAL_REFRESH_S = 1.0

_TQDM_PARTS = ("HTMLModel", "FloatProgressModel", "HTMLModel")


class KernelBars:
    """The kernel's tqdm.notebook bars, rebuilt from the widget messages (``comm_open``/``comm_msg``/``comm_close``).

    :meth:`text` joins the bars still running (not closed, not marked done), outermost first, as tqdm prints them.
    """

    def __init__(self, *, shown: int = 2) -> None:
        self.shown = shown
        self._models: dict[str, dict[str, Any]] = {}
        self._bars: dict[str, None] = {}  # model ids of the bars (HBoxes), in the order they appeared
        self._lock = threading.Lock()

    def handle(self, msg: dict[str, Any]) -> None:
        """Take one comm message of the kernel's iopub channel."""
        content = msg.get("content", {})
        comm_id = content.get("comm_id")
        if comm_id is None:
            return
        with self._lock:
            if msg.get("msg_type") == "comm_close":
                self._bars.pop(comm_id, None)
                self._models.pop(comm_id, None)
                return
            state = content.get("data", {}).get("state")
            if isinstance(state, dict):
                self._models.setdefault(comm_id, {}).update(state)
                if comm_id not in self._bars and self._is_bar(comm_id):
                    self._bars[comm_id] = None

    def text(self) -> str:
        """The running bars, e.g. ``'study: 25% 3/12 [...] | pretrain: 40% 12/30 [00:05<00:07, 2.3it/s]'``."""
        with self._lock:
            lines = [line for bar in self._bars if (line := self._line(bar))]
        return " | ".join(lines[-self.shown :])

    def _part(self, ref: object) -> dict[str, Any]:
        return self._models.get(str(ref).removeprefix("IPY_MODEL_"), {})

    def _is_bar(self, comm_id: str) -> bool:
        children = self._models[comm_id].get("children")
        if self._models[comm_id].get("_model_name") != "HBoxModel" or not isinstance(children, list):
            return False
        return tuple(self._part(ref).get("_model_name") for ref in children) == _TQDM_PARTS

    def _line(self, bar: str) -> str:
        """The bar as text; ``''`` once tqdm marked it done (``success``/``danger``) or hid it."""
        model = self._models.get(bar, {})
        left, progress, right = (self._part(ref) for ref in model.get("children", []))
        if (
            progress.get("bar_style") in ("success", "danger")
            or self._part(model.get("layout")).get("visibility") == "hidden"
        ):
            return ""
        line = html.unescape(f"{left.get('value', '')} {right.get('value', '')}").replace("\u2007", " ")
        return " ".join(line.split())


class NotebookProgress:
    """One line for the notebook being run: ``[time in notebook] name cell i/n: library's bar``.

    A context manager: on entry it starts a thread that redraws the line every second on a terminal, or prints
    it every :data:`LINE_INTERVAL_S` seconds on anything else; on exit the line goes away (terminal).
    """

    def __init__(self, name: str, *, stream: IO[str], enabled: bool = True, position: int = 1) -> None:
        self.name, self.bars = name, KernelBars()
        self.cell, self.cells = 0, 0
        terminal = is_terminal(stream)
        self.interval = TERMINAL_REFRESH_S if terminal else LINE_INTERVAL_S
        bar_class = std_tqdm if terminal else LineTqdm
        self.bar = bar_class(
            total=None,
            file=stream,
            disable=not enabled,
            position=position if terminal else None,
            leave=False,
            bar_format="  [{elapsed}] {desc}",
            mininterval=self.interval,
            delay=0 if terminal else self.interval,
            desc=name,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name=f"progress {name}", daemon=True)
        self._describe()

    def __enter__(self) -> NotebookProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bar.close()

    def cell_started(self, index: int, total: int) -> None:
        """Cell ``index`` (0-based) of ``total`` is executing."""
        self.cell, self.cells = index + 1, total
        self._describe()

    def describe(self) -> str:
        """The line as it is shown now (without the elapsed time)."""
        where = f"{self.name} cell {self.cell}/{self.cells}" if self.cells else self.name
        library = self.bars.text()
        return f"{where}: {library}" if library else where

    def _describe(self) -> None:
        self.bar.set_description_str(self.describe(), refresh=False)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._describe()
            self.bar.refresh()


class _WatchedClient(PapermillNotebookClient):
    """Papermill's client, telling a :class:`NotebookProgress` which cell runs and what the widgets say."""

    progress = AnyTrait(None, allow_none=True)

    def execute_cell(self, cell: Any, cell_index: int, *args: Any, **kwargs: Any) -> Any:
        if self.progress is not None:
            self.progress.cell_started(cell_index, len(self.nb.cells))
        return super().execute_cell(cell, cell_index, *args, **kwargs)

    def on_comm_open_jupyter_widget(self, msg: dict[str, Any]) -> None:
        """No stand-in for the kernel's Output widgets: their outputs go to the cell's outputs.

        nbclient's stand-in sends every captured output back to the kernel on the shell channel while the client
        awaits the cell's reply on that same socket; with 00_tour's slider cell (an Output widget redrawn with
        ``clear_output(wait=True)``) that reply sometimes never arrived and papermill waited forever, the kernel
        idle (seen in the test suite and in CI)."""
        return None

    def handle_comm_msg(self, outs: list, msg: dict[str, Any], cell_index: int) -> None:
        super().handle_comm_msg(outs, msg, cell_index)
        if self.progress is not None:
            self.progress.bars.handle(msg)


class WatchedEngine(NBClientEngine):
    """Papermill's nbclient engine with :class:`_WatchedClient` and :func:`kernel_config` (engine ``kdlib``).

    Extra arguments of ``papermill.execute_notebook``: ``progress`` (a :class:`NotebookProgress` or None) and
    ``kernel_env`` (the kernel's environment variables; default: this process's).
    """

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        """Papermill's engine entry point; takes papermill's arguments (``log_output``, ``stdout_file``,
        ``stderr_file``, ``start_timeout``, ``execution_timeout``, ...) and ``progress`` and ``kernel_env``."""
        progress: NotebookProgress | None = kwargs.pop("progress", None)
        kernel_env: dict[str, str] | None = kwargs.pop("kernel_env", None)
        execution_timeout = kwargs.pop("execution_timeout", None)
        start_timeout = kwargs.pop("start_timeout", 60)
        streams = {name: kwargs.pop(name, default) for name, default in
                   (("log_output", False), ("stdout_file", None), ("stderr_file", None))}  # fmt: skip
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        client = _WatchedClient(
            nb_man,
            timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logger,
            **streams,
            progress=progress,
            config=kwargs.pop("config", None) or kernel_config(),
            **kwargs,
        )
        return client.execute(**({"env": kernel_env} if kernel_env is not None else {}))


def kernel_config() -> Config:
    """Kernel-manager settings: CurveZMQ transport encryption where pyzmq and the kernelspec support it.

    jupyter_client (8.8+) provisions no keys by default, and ipykernel (7+) then warns on every start that the
    kernel "is running over TCP without encryption". ``"auto"`` provisions keys only for kernels that declare
    support, so other kernels start as before.
    """
    import zmq
    from jupyter_client.manager import KernelManager

    if "transport_encryption" not in KernelManager.class_trait_names() or not zmq.has("curve"):
        return Config()
    return Config({"KernelManager": {"transport_encryption": "auto"}})


papermill_engines.register(ENGINE, WatchedEngine)
