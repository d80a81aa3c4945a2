"""The one runner of both studies: their independent jobs, each under the store's claim on its key, in this process
or in parallel on Ray.

A study is anything with a results ``store``, ``progress``, ``job_key(job)`` and ``run_batch(jobs, force)``
(:class:`Runnable`): the distillation study (``Study``, jobs (scenario, method, seed)) and the federated study
(``FederatedStudy``, jobs (scenario, start, seed)) both are. ``batch_jobs`` says whether the jobs it claims run
together (the federated study: one Flower simulation per seed) or one at a time; ``ray_tasks`` whether the runner may
fan them out as Ray tasks (the federated study runs its clients on Ray itself).

``run_jobs(study, jobs, workers=...)`` is what both studies' ``run_all`` call. With ``workers`` 0 or 1 and no Ray
address the jobs run here, in order. Otherwise Ray runs them: locally one worker process per slot (``"auto"``:
one per core), each with one torch thread; on a cluster (``address``, or the ``RAY_ADDRESS`` variable) as many
at once as ``workers`` (``"auto"``: the cluster's CPUs), each task asking for a share of a GPU when the cluster
has GPUs. A scenario's parties are pre-trained (or loaded from the checkpoint cache) by one task per (scenario,
seed) before its methods fan out: a run task waits for its pre-training task. The driver shows one progress bar.

Every run, here or in a worker, is made under the store's per-key claim (``ResultsStore.claim``), and a run whose
key is stored is skipped: several workers, or several ``kdlib study`` processes on one store, compute each key
once, and each record is written once (by the worker that computed it, with the store's own locked append).
On a cluster of several machines the results and cache folders (``KDLIB_RESULTS``, ``KDLIB_CACHE``) and the data
must be on a file system that every node sees, and every node needs kdlib's Python dependencies; kdlib itself is
shipped to the workers. A cluster address is probed first (``check_address``): where nothing listens it fails in
seconds, in one line. An error whose message is the whole story (``kdlib.errors.ONE_LINE_ERRORS``: bad input, a
damaged checkpoint) raised in a worker reaches the caller as itself, as it would with one worker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kdlib.core.checkpoints import config_key
from kdlib.core.progress import tqdm
from kdlib.errors import ONE_LINE_ERRORS, KDConfigError
from kdlib.study.config import StudyConfig
from kdlib.study.methods import get_method
from kdlib.study.results import ResultsStore

if TYPE_CHECKING:
    from kdlib.study.runner import Study

__all__ = [
    "Job",
    "Runnable",
    "check_address",
    "complete_seeds",
    "launch_order",
    "resolve_address",
    "resolve_workers",
    "run_claimed",
    "run_claimed_batch",
    "run_jobs",
    "stored_by_seed",
]

Job = tuple[str, str, int]
"""(scenario, method or start, seed)."""


class Runnable(Protocol):
    """What the runner needs of a study."""

    store: ResultsStore
    progress: bool
    label: str
    batch_jobs: bool
    ray_tasks: bool

    def job_key(self, job: Job) -> str: ...

    def run_batch(self, jobs: Sequence[Job], force: bool = False) -> None: ...


def stored_by_seed(study: Any) -> list[dict[str, Any]]:
    """Seed by seed, how much of a study the store holds: ``{"seed", "stored", "jobs", "missing"}``, ``missing``
    naming each absent job as ``"scenario method"`` (or ``"scenario start"``). What ``kdlib study --plan`` prints:
    where a resumed study will start, read without running or loading anything."""
    done, jobs = study.store.keys(), study.jobs()
    rows = []
    for seed in study.seeds:
        own = [job for job in jobs if job[2] == seed]
        missing = [f"{job[0]} {job[1]}" for job in own if study.job_key(job) not in done]
        rows.append({"seed": seed, "stored": len(own) - len(missing), "jobs": len(own), "missing": missing})
    return rows


def complete_seeds(study: Any) -> int:
    """How many of a study's seeds (``study.seeds``), counted from its first, have every job of ``study.jobs()``
    stored: the seeds that a notebook can read without running anything (``--set seeds=N``)."""
    count = 0
    for row in stored_by_seed(study):
        if row["missing"]:
            break
        count += 1
    return count


_ENV_PASSED = (
    "KDLIB_RESULTS", "KDLIB_CACHE", "KDLIB_DATA", "KDLIB_PRETRAINED", "KDLIB_CIFAR10_ARCHIVE", "KDLIB_THREADS",
    "KDLIB_PRECISION",
)  # fmt: skip
PROBE_TIMEOUT_S = 5.0
"""How long ``check_address`` waits for a cluster's head to accept a connection (Ray itself retries for minutes)."""


def resolve_workers(workers: int | str | None) -> int:
    """``workers`` as a count: 0 and 1 mean one at a time in this process, ``"auto"`` one per core."""
    if workers is None:
        workers = os.environ.get("KDLIB_WORKERS", "1")
    if isinstance(workers, str):
        text = workers.strip().lower()
        if text == "auto":
            return max(1, os.cpu_count() or 1)
        if not text.isascii() or not text.isdigit():
            raise KDConfigError("workers", workers, "'auto' (one per core) or an integer >= 0 (0 or 1: no Ray)")
        workers = int(text)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise KDConfigError("workers", workers, "'auto' (one per core) or an integer >= 0 (0 or 1: no Ray)")
    return max(1, workers)


def resolve_address(address: str | None) -> str | None:
    """The Ray cluster to join: ``address``, else ``RAY_ADDRESS``, else None (a local Ray, started here)."""
    value = address if address is not None else os.environ.get("RAY_ADDRESS")
    if value is None or not value.strip():
        return None
    return value.strip()


def check_address(address: str, source: str = "ray_address", timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds, in one line naming ``source``, when nothing accepts a connection at the
    address's host and port; an address without a port (``auto``, ``local``) is left to Ray."""
    target = _host_port(address)
    if target is None:
        return
    host, port = target
    allowed = "the address of a running Ray cluster (its head's host:port, or ray://host:port)"
    if not 0 < port < 2**16:
        raise KDConfigError(source, address, f"{allowed}; {port} is not a TCP port (1-65535)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        advice = "start it (ray start --head), or leave it unset to run Ray on this machine"
        raise KDConfigError(source, address, f"{allowed}: {host}:{port} did not answer ({reason}); {advice}") from None


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port``, ``[v6]:port`` or ``ray://host:port``; None when there is no port."""
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or len(port) > 6:
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def run_claimed_batch(study: Runnable, jobs: Sequence[Job], force: bool = False, *, wait: bool = False) -> list[Job]:
    """Run together (``study.run_batch``) the jobs whose claim this process gets, holding every claim until they are
    stored; return the jobs it did not run (stored already, or claimed by another process). With ``wait``, a claim
    another process holds is waited for (then its job is stored, or passes to this caller). ``force`` runs every
    job again, without claims. Claims are taken in job order, so that waiting processes cannot deadlock."""
    if force:
        study.run_batch(list(jobs), force=True)
        return []
    with ExitStack() as claims:
        mine = [job for job in jobs if claims.enter_context(study.store.claim(study.job_key(job), wait=wait))]
        if mine:
            study.run_batch(mine)
    return [job for job in jobs if job not in mine]


def run_claimed(study: Runnable, job: Job, force: bool = False, *, wait: bool = True) -> dict | None:
    """Run one job under its claim unless its record is stored; return its record, or None when another process
    holds the claim and not ``wait`` (``run_claimed_batch`` of one job)."""
    run_claimed_batch(study, [job], force, wait=wait)
    return study.store.get(study.job_key(job))


def run_jobs(
    study: Runnable,
    jobs: Sequence[Job],
    *,
    workers: int | str | None = 1,
    address: str | None = None,
    force: bool = False,
) -> None:
    """Run the jobs (skipping stored ones), in this process or on Ray; the records go to ``study.store``. A study
    whose jobs are not Ray tasks (``ray_tasks`` False) always runs them here."""
    if not study.ray_tasks:
        _run_here(study, jobs, force)
        return
    count = resolve_workers(workers)
    cluster = resolve_address(address)
    if cluster is not None:
        check_address(cluster, "ray_address" if address is not None else "RAY_ADDRESS")
    if count == 1 and cluster is None:
        _run_here(study, jobs, force)
        return
    # locally Ray gets ``count`` CPUs; on a cluster an explicit count > 1 caps the runs in flight, else Ray decides
    explicit = count > 1 and not (isinstance(workers, str) and workers.strip().lower() == "auto")
    _run_on_ray(study, list(jobs), count if cluster is None or explicit else None, cluster, force)


def launch_order(jobs: Sequence[Job]) -> list[Job]:
    """The order in which parallel workers start the jobs: the (scenario, seed) pairs as given (their parties are
    pre-trained in that order), and within a pair the longest method first (``Method.cost``), so that the study
    does not end with one worker on a long tuned run while the others wait."""
    pairs = {pair: rank for rank, pair in enumerate(dict.fromkeys((scenario, seed) for scenario, _, seed in jobs))}
    return sorted(jobs, key=lambda job: (pairs[job[0], job[2]], -get_method(job[1]).cost))


def _run_here(study: Runnable, jobs: Sequence[Job], force: bool) -> None:
    """In this process: the jobs one at a time, or all together for a study that batches them; a job another
    process is computing is left for the end, then waited for."""
    scale = getattr(getattr(study, "cfg", None), "scale", "")
    bar = tqdm(total=len(jobs), desc=f"{study.label} ({scale})", disable=not study.progress)
    groups = [list(jobs)] if study.batch_jobs else [[job] for job in jobs]
    deferred: list[Job] = []
    for group in groups:
        bar.set_postfix_str(_label(group[0]) + (f" and {len(group) - 1} more" if len(group) > 1 else ""))
        left = [job for job in run_claimed_batch(study, group, force) if not study.store.has(study.job_key(job))]
        deferred += left
        bar.update(len(group) - len(left))
    for group in [deferred] if study.batch_jobs and deferred else [[job] for job in deferred]:
        bar.set_postfix_str(_label(group[0]) + " (waiting for another process)")
        run_claimed_batch(study, group, force, wait=True)
        bar.update(len(group))
    bar.close()


def _label(job: Job) -> str:
    return f"{job[0]} / {job[1]} / seed {job[2]}"


# ------------------------------------------------------------------------------------------------ Ray


@dataclass(frozen=True)
class _StudySpec:
    """What a worker needs to rebuild the study (sent to Ray workers instead of the live object)."""

    study_class: type
    cfg: StudyConfig
    store: str
    device: str
    data_root: str | None
    threads: int = 1


_WORKER_STUDIES: dict[tuple[str, str, str], Study] = {}
"""Studies already built in this worker process (its data set stays loaded between jobs)."""


def _worker_study(spec: _StudySpec) -> Study:
    from kdlib.core.train import set_cpu_threads

    key = (config_key(spec.cfg.as_dict()), spec.store, spec.device)
    if key not in _WORKER_STUDIES:
        set_cpu_threads(spec.threads)
        store = ResultsStore(Path(spec.store))
        _WORKER_STUDIES[key] = spec.study_class(
            spec.cfg, store, device=spec.device, progress=False, data_root=spec.data_root
        )
    return _WORKER_STUDIES[key]


def _pretrain_task(spec: _StudySpec, scenario: str, seed: int) -> str:
    """Pre-train (or load) one scenario's parties for one seed: the checkpoint cache holds them afterwards."""
    _worker_study(spec).parties(scenario, seed=seed)
    return f"{scenario} / seed {seed}"


def _run_task(spec: _StudySpec, job: Job, force: bool, wait: bool, _parties: str) -> str | None:
    """One (scenario, method, seed) run under its claim (None: another process holds it, and not ``wait``);
    ``_parties`` is the pre-training task's result, so Ray starts this task only after it."""
    record = run_claimed(_worker_study(spec), job, force, wait=wait)
    return None if record is None else record["key"]


def _remote_options(study: Study, resources: dict[str, float], slots: int) -> dict[str, Any]:
    """One CPU per task, and a share of the GPUs when the cluster has any (unless the study runs on the CPU)."""
    options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
    gpus = float(resources.get("GPU", 0.0))
    if gpus > 0 and study.device != "cpu":
        options["num_gpus"] = min(1.0, gpus / max(1, slots))
    return options


@contextmanager
def _ray_session(workers: int | None, address: str | None) -> Iterator[dict[str, float]]:
    """Ray started (locally, ``workers`` CPUs) or joined (``address``) for the duration, then shut down."""
    import ray

    from kdlib.paths import ray_env

    if ray.is_initialized():
        raise RuntimeError("Ray is already running in this process; shut it down (ray.shutdown()) first")
    quiet = {"include_dashboard": False, "logging_level": "error", "log_to_driver": False}
    with ray_env():
        if address is None:
            ray.init(address="local", num_cpus=workers, object_store_memory=200 * 1024**2, **quiet)
        else:
            env = {k: os.environ[k] for k in _ENV_PASSED if k in os.environ}  # ray_env made the folders absolute
            package = str(Path(__file__).resolve().parents[1])  # kdlib/, shipped to the cluster
            runtime = {"py_modules": [package], "env_vars": env}
            ray.init(address=address, runtime_env=runtime, **quiet)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def _run_on_ray(study: Study, jobs: list[Job], workers: int | None, address: str | None, force: bool) -> None:
    import ray

    todo = launch_order([job for job in jobs if force or not study.store.has(study.job_key(job))])
    bar = tqdm(
        total=len(jobs), initial=len(jobs) - len(todo), desc=f"study ({study.cfg.scale})", disable=not study.progress
    )
    if not todo:
        bar.close()
        return
    spec = _StudySpec(type(study), study.cfg, str(study.store.path.resolve()), str(study.device), study.data_root)
    study.release_data()  # the workers load their own data; the driver only waits
    try:
        with _ray_session(workers, address) as resources:
            slots = workers or max(1, int(resources.get("CPU", 1)))
            options = _remote_options(study, resources, slots)
            pretrain = ray.remote(_pretrain_task).options(**options)
            run = ray.remote(_run_task).options(**options)
            parties = {pair: pretrain.remote(spec, *pair) for pair in dict.fromkeys((s, seed) for s, _, seed in todo)}
            queue, pending, deferred = [(job, False) for job in todo], {}, []
            while queue or pending:
                while queue and len(pending) < (workers or len(todo)):
                    job, wait = queue.pop(0)
                    pending[run.remote(spec, job, force, wait, parties[job[0], job[2]])] = job
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    key = ray.get(done[0])
                except ray.exceptions.RayError as error:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise _driver_error(error) from None
                if key is None:  # another process is computing it: come back to it at the end, and wait then
                    deferred.append(job)
                else:
                    bar.set_postfix_str(_label(job))
                    bar.update(1)
                if not queue and not pending and deferred:
                    queue, deferred = [(job, True) for job in deferred], []
    finally:
        bar.close()


def _driver_error(error: Exception) -> Exception:
    """What the driver raises for a failed task: an error whose message is the whole story (``ONE_LINE_ERRORS``:
    bad input, a damaged checkpoint, a missing file) as itself, one line as with one worker; anything else as Ray
    reports it, with the worker's traceback."""
    import ray

    cause = getattr(error, "cause", None)
    if isinstance(cause, ONE_LINE_ERRORS):
        return cause
    if isinstance(error, ray.exceptions.RayTaskError):
        return error.as_instanceof_cause()
    return error
