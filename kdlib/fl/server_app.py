"""The ``ServerApp`` (``server_app``) that ``flwr run .`` runs: the federated study of a run config, on the grid and
clients Flower gives it (``fedavg`` holds the FedAvg it runs; its names are importable from here too).

``pyproject.toml`` names it under ``[tool.flwr.app.components]``; its run config (``[tool.flwr.app.config]``,
``flwr run . --run-config "key=value ..."``) picks the scale, scenario(s), start(s), seed and rounds, and the
clients are the federation's SuperNodes (their ``partition-id`` / ``num-partitions`` node config).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from logging import INFO
from typing import TYPE_CHECKING, Any

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from kdlib.errors import KDConfigError
from kdlib.fl.config import FederatedConfig, federated_scale_config
from kdlib.fl.fedavg import (
    Federation,
    FLJob,
    FLRun,
    MeteredFedAvg,
    active_grid,
    aggregate_state_dicts,
    discover_clients,
    make_evaluator,
    run_fedavg,
    run_jobs,
    sample_clients,
    use_grid,
)
from kdlib.fl.study import FederatedStudy
from kdlib.study.results import ResultsStore
from kdlib.validation import strict_bool

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TINY",
    "FLJob",
    "FLRun",
    "Federation",
    "MeteredFedAvg",
    "active_grid",
    "aggregate_state_dicts",
    "app_config",
    "discover_clients",
    "main",
    "make_evaluator",
    "open_app_study",
    "parse_set",
    "report",
    "run_fedavg",
    "run_jobs",
    "sample_clients",
    "server_app",
    "use_grid",
]


TINY: dict[str, Any] = {
    "dataset": "digits",
    "n_train": None,
    "n_test": None,
    "model": "mlp",
    "pretrain": {"epochs": 3},
    "kd": {"epochs": 3},
    "local": {"epochs": 1},
    "rounds": 3,
}
"""``tiny = true``: scikit-learn's bundled digits (no download), an MLP, short training: a run of seconds."""

OWN_KEYS = {"scale", "dataset", "scenarios", "starts", "rounds", "seed", "num_clients"}
"""Fields that ``set`` may not name: they have run-config keys of their own, or come from the federation."""


def parse_set(text: str) -> dict[str, Any]:
    """The ``set`` run-config value, ``"n_train=500 local={\"epochs\": 2}"``, as fields: space-separated
    ``field=value`` pairs (a space inside a JSON value is fine), values JSON where they parse, else strings."""
    overrides: dict[str, Any] = {}
    for pair in re.split(r"\s+(?=[A-Za-z_]\w*=)", text.strip()) if text.strip() else []:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise KDConfigError(
                "set", pair, "field=value pairs separated by spaces, e.g. 'n_train=500 local={\"epochs\": 2}'"
            )
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def app_config(run_config: Mapping[str, Any], num_clients: int) -> FederatedConfig:
    """The ``FederatedConfig`` of a ``flwr run``: the ``scale``'s, then ``tiny``'s values, then the keys
    ``dataset``, ``scenario``, ``start`` (random, the baseline, always runs too), ``seed`` and
    ``num-server-rounds`` (0 or "": the scale's), then ``set``; ``num_clients`` is the federation's size."""
    rc = dict(run_config)
    overrides: dict[str, Any] = dict(TINY) if strict_bool("tiny", rc.get("tiny", False)) else {}
    if rc.get("dataset"):
        overrides["dataset"] = rc["dataset"]
    if rc.get("scenario"):
        overrides["scenarios"] = rc["scenario"]
    if rc.get("start"):
        starts = [s.strip() for s in str(rc["start"]).split(",") if s.strip()]
        overrides["starts"] = tuple(dict.fromkeys(["random", *starts]))
    if rc.get("num-server-rounds"):
        overrides["rounds"] = rc["num-server-rounds"]
    if "seed" in rc:
        overrides["seed"] = rc["seed"]
    extra = parse_set(str(rc.get("set", "")))
    taken = sorted(OWN_KEYS & set(extra))
    if taken:
        allowed = (
            "other fields: scale, dataset, scenarios, starts, rounds and seed have run-config keys of their own "
            "(scale, dataset, scenario, start, num-server-rounds, seed); num_clients is the number of SuperNodes"
        )
        raise KDConfigError("set", ", ".join(taken), allowed)
    return federated_scale_config(str(rc.get("scale", "smoke")), **{**overrides, **extra, "num_clients": num_clients})


def _folder(run_config: Mapping[str, Any], key: str) -> str | None:
    value = str(run_config.get(key, "") or "").strip()
    return value or None


def open_app_study(run_config: Mapping[str, Any], num_clients: int) -> FederatedStudy:
    """The ``FederatedStudy`` a run config asks for, on the project's ``study`` store (``results-dir`` or
    ``KDLIB_RESULTS``), as the notebooks open it: its records are theirs."""
    store = ResultsStore.open("study", _folder(run_config, "results-dir"))
    device = str(run_config.get("device", "auto") or "auto")
    cfg = app_config(run_config, num_clients)
    return FederatedStudy(cfg, store, device=device, progress=False, data_root=_folder(run_config, "data-dir"))


def report(study: FederatedStudy, summary: pd.DataFrame) -> str:
    """What a ``flwr run`` prints at the end: each run's accuracy per round, and the rounds each start saves."""
    c = study.cfg
    lines = [
        f"kdlib federated study, {c.dataset}, {study.caption_details()}, seed {c.seed}: stored in {study.store.path}"
    ]
    for record in study.records():
        accs = " ".join(f"{row['accuracy']:.3f}" for row in record["curves"])
        lines.append(
            f"  {record['config']['scenario']} / {record['config']['start']}: accuracy per round from 0: {accs}"
        )
    if not summary.empty:
        columns = [k for k in ("scenario", "start", "rounds_to_target", "reduction_pct", "status") if k in summary]
        lines.append(summary[columns].to_string(index=False))
    return "\n".join(lines)


server_app = ServerApp()
"""The federated study as a Flower ``ServerApp``: ``flwr run .`` (see ``[tool.flwr.app]`` in pyproject.toml)."""


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Find the clients, build the study of the run config, run its missing (scenario, start) runs on this grid
    (all of them with ``force = true``), store them like the notebooks do, and log their curves."""
    nodes = discover_clients(grid)
    study = open_app_study(context.run_config, len(nodes))
    log(INFO, "kdlib: %d clients, scenarios %s, starts %s", len(nodes), study.cfg.scenarios, study.cfg.starts)
    with use_grid(grid, nodes):
        summary = study.run_all(force=strict_bool("force", context.run_config.get("force", False)))
    log(INFO, "%s", report(study, summary))
