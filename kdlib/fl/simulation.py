"""Flower's Simulation Engine on Ray: the runs of one call in one simulation, Ray started quietly and bounded,
and its worker processes waited for (``/proc``) before returning. Inside the ``ServerApp`` of ``flwr run``
(``fedavg.use_grid``) the runs go to that run's grid and clients instead."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from torch import nn

from kdlib.core.progress import tqdm
from kdlib.core.train import resolve_device
from kdlib.fl.client_app import client_app
from kdlib.fl.config import FederatedConfig
from kdlib.fl.fedavg import (
    Federation,
    FLJob,
    FLRun,
    active_grid,
    discover_clients,
    make_evaluator,
    run_jobs,
)
from kdlib.paths import ray_env


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads for the duration (None: unchanged). One thread per process avoids
    oversubscribing the CPU while Ray's workers (one CPU each) train the clients."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def quiet_flower(level: int = logging.ERROR) -> Iterator[None]:
    """Raise the level of Flower's logger for the duration (it logs every round at INFO)."""
    logger = logging.getLogger("flwr")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


@dataclass(frozen=True)
class SimulationOptions:
    """Where and how a simulation runs: the device, Ray's worker slots (``num_cpus``; None: one per core), the
    progress bar, and Flower's and Ray's logs (``verbose``)."""

    device: str = "auto"
    num_cpus: int | None = None
    progress: bool = True
    verbose: bool = False


def simulate(
    jobs: Sequence[FLJob],
    cfg: FederatedConfig,
    evaluate_data: tuple[torch.Tensor, torch.Tensor, nn.Module],
    on_done: Callable[[FLJob, FLRun], None],
    options: SimulationOptions | None = None,
) -> None:
    """Run the jobs in order in one Flower simulation (Ray backend, ``options.num_cpus`` worker slots, one CPU
    each), evaluating on ``evaluate_data`` = ``(x_test, y_test, model)``.

    ``on_done(job, run)`` is called after each job (e.g. to store it). Ray is started here (quiet, bounded:
    ``num_cpus``, a 200 MB object store, no dashboard, no runtime environment to build) and shut down by Flower at
    the end, also on errors; this function waits until Ray's worker processes have exited before it returns.

    Called within ``fedavg.use_grid`` (the ``ServerApp`` that ``flwr run`` runs), the jobs run on that grid
    and its clients, which train on their own device (``"auto"`` picks theirs), and no simulation is started here.
    """
    import importlib.util

    options = options or SimulationOptions()
    active = active_grid()
    if active is not None:
        _run_on_grid(active, jobs, cfg, evaluate_data, on_done, options)
        return
    if importlib.util.find_spec("ray") is None:
        raise ImportError('Flower\'s Simulation Engine needs Ray: pip install "flwr[simulation]"')
    import ray
    from flwr.simulation import run_simulation

    verbose = options.verbose
    dev = resolve_device(options.device)
    cpus = max(1, options.num_cpus or os.cpu_count() or 1)
    x_test, y_test, model = evaluate_data
    evaluate = make_evaluator(model, x_test, y_test, str(dev))
    client_resources: dict[str, float] = {"num_cpus": 1, "num_gpus": 0.0}
    if dev.type == "cuda":  # the clients share the GPU
        client_resources["num_gpus"] = 1.0 / cpus
    server_app = ServerApp()
    bar = tqdm(total=len(jobs), desc="FedAvg runs", disable=not options.progress)
    errors: list[BaseException] = []
    helpers: set[int] = set()

    labels = iter([f"{job.scenario} / {job.start}" for job in jobs])

    def done(job: FLJob, run: FLRun) -> None:  # on_done, then the bar moves on to the next job
        on_done(job, run)
        bar.update(1)
        bar.set_postfix_str(next(labels, ""))

    @server_app.main()
    def _main(grid: Grid, _context: Context) -> None:
        try:
            federation = Federation(grid, discover_clients(grid, cfg.num_clients), evaluate, str(dev))
            bar.set_postfix_str(next(labels, ""))
            run_jobs(federation, jobs, cfg, done)
        except BaseException as error:  # re-raised in the caller's thread below
            errors.append(error)
            raise
        finally:
            helpers.update(descendants(os.getpid()))

    if ray.is_initialized():
        raise RuntimeError("Ray is already running in this process; shut it down (ray.shutdown()) first")
    try:
        with quiet_flower(logging.INFO if verbose else logging.ERROR), ray_env():
            ray.init(
                num_cpus=cpus,
                num_gpus=1 if dev.type == "cuda" else 0,
                object_store_memory=200 * 1024**2,
                include_dashboard=False,
                logging_level="info" if verbose else "error",
                log_to_driver=verbose,
            )
            backend_config = {"client_resources": client_resources}
            run_simulation(server_app, client_app, cfg.num_clients, backend_config=backend_config)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        bar.close()
        wait_for_exit(helpers)
    if errors:
        raise errors[0]


def _run_on_grid(
    active: tuple[Grid, dict[int, int]],
    jobs: Sequence[FLJob],
    cfg: FederatedConfig,
    evaluate_data: tuple[torch.Tensor, torch.Tensor, nn.Module],
    on_done: Callable[[FLJob, FLRun], None],
    options: SimulationOptions,
) -> None:
    """``simulate`` within ``fedavg.use_grid``: the jobs on the grid and clients of the running Flower run."""
    grid, nodes = active
    if len(nodes) != cfg.num_clients:
        raise RuntimeError(f"the config has {cfg.num_clients} clients, this Flower run {len(nodes)}")
    x_test, y_test, model = evaluate_data
    evaluate = make_evaluator(model, x_test, y_test, str(resolve_device(options.device)))
    run_jobs(Federation(grid, nodes, evaluate, str(options.device)), jobs, cfg, on_done)


def descendants(pid: int) -> set[int]:
    """Process ids below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(entry.parent.name)] = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_for_exit(pids: set[int], timeout_s: float = 30.0) -> None:
    """Wait until the processes ``pids`` are gone (Ray's workers exit a moment after ``ray.shutdown``)."""
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)}
        if pids:
            time.sleep(0.1)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True

