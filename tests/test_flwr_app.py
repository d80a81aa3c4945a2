"""kdlib.fl as a Flower App: the components pyproject.toml names, the bundle `flwr run` ships, the run config, client
discovery, and one real `flwr run .` (a local SuperLink in simulation mode, 3 SuperNodes, digits, 2 rounds)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tomllib
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from kdlib.errors import KDConfigError
from kdlib.fl.client_app import client_app
from kdlib.fl.server_app import TINY, app_config, discover_clients, open_app_study, parse_set

ROOT = Path(__file__).resolve().parents[1]
FLOWER = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]


def _component(ref: str) -> object:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def test_the_components_pyproject_names_are_a_server_app_and_a_client_app():
    components = FLOWER["app"]["components"]
    assert isinstance(_component(components["serverapp"]), ServerApp)
    assert isinstance(_component(components["clientapp"]), ClientApp)
    assert _component(components["clientapp"]) is client_app


@pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")  # pathspec, under flwr's build
def test_the_app_bundle_holds_the_library_and_no_federation_table():
    """flwr 1.42 keeps SuperLink connections in the Flower configuration: a [tool.flwr.federations] table here would
    be moved out by `flwr run`, which rewrites pyproject.toml. The bundle (FAB) is the library, well under the limit."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.config_utils import load_and_validate

    assert "federations" not in FLOWER
    config, _warnings = load_and_validate(ROOT / "pyproject.toml")  # raises on an invalid app config
    assert config["tool"]["flwr"]["app"]["publisher"]
    fab = build_fab_from_disk(ROOT)
    names = zipfile.ZipFile(BytesIO(fab)).namelist()
    assert {"pyproject.toml", "kdlib/fl/server_app.py", "kdlib/fl/client_app.py", "kdlib/fl/task.py"} <= set(names)
    assert all(n.startswith("kdlib/") for n in names if n not in ("pyproject.toml", ".info/CONTENT"))
    assert len(fab) < 2 * 1024**2


def test_the_default_run_config_is_a_tiny_valid_study():
    cfg = app_config(FLOWER["app"]["config"], num_clients=2)
    assert cfg.dataset == TINY["dataset"] and cfg.model == TINY["model"] and cfg.rounds == TINY["rounds"]
    assert cfg.num_clients == 2 and cfg.scenarios == ("iid",) and cfg.starts == ("random", "kd_avg")


def test_run_config_keys_and_set_override_the_scale():
    run_config = {
        **FLOWER["app"]["config"],
        "tiny": False,
        "dataset": "digits",
        "scenario": "iid,dirichlet:0.5",
        "start": "one_client, kd_dp",
        "seed": 3,
        "num-server-rounds": 4,
        "set": 'n_train=300 local={"epochs": 2, "lr": 0.1} model=mlp',
    }
    cfg = app_config(run_config, num_clients=5)
    assert cfg.scale == "smoke" and cfg.dataset == "digits" and cfg.seed == 3 and cfg.rounds == 4
    assert cfg.scenarios == ("iid", "dirichlet:0.5") and cfg.starts == ("random", "one_client", "kd_dp")
    assert cfg.n_train == 300 and cfg.local.epochs == 2 and cfg.local.lr == 0.1 and cfg.model == "mlp"
    assert cfg.num_clients == 5  # the federation's size, not the scale's
    assert app_config({**run_config, "start": ""}, 5).starts == ("random", "one_client", "kd_avg", "kd_dp")


def test_set_is_checked():
    assert parse_set("") == {}
    assert parse_set('kd={"epochs": 1, "lr": 0.01}  dp_variant=unsupervised') == {
        "kd": {"epochs": 1, "lr": 0.01},
        "dp_variant": "unsupervised",
    }
    with pytest.raises(KDConfigError, match="set"):
        parse_set("n_train")
    with pytest.raises(KDConfigError, match="num-server-rounds"):
        app_config({"tiny": True, "set": "rounds=3"}, 2)  # a field with a run-config key of its own
    with pytest.raises(KDConfigError, match="n_trian"):
        app_config({"tiny": True, "set": "n_trian=3"}, 2)  # not a field
    with pytest.raises(KDConfigError, match="tiny"):
        app_config({"tiny": "yes"}, 2)  # a bool, not any non-empty text


class FakeGrid:
    """Nodes answering the client app's own ``query`` handler, with the node config Flower's simulation sets."""

    def __init__(self, nodes: int, num_partitions: int | None = None) -> None:
        self.ids = [1000 + i for i in range(nodes)]
        self.num_partitions = nodes if num_partitions is None else num_partitions

    def get_node_ids(self) -> list[int]:
        return list(self.ids)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            partition = len(self.ids) - 1 - self.ids.index(node)  # node ids and partition ids in different orders
            node_config = {"partition-id": partition, "num-partitions": self.num_partitions}
            context = Context(run_id=1, node_id=node, node_config=node_config, state=RecordDict(), run_config={})
            replies.append(client_app(message, context))
        return replies


@pytest.fixture
def task_identity(monkeypatch):
    """Flower stamps the run and node on every Message it makes; outside a Flower process, a made-up identity."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


@pytest.mark.usefixtures("task_identity")
def test_discovery_learns_the_number_of_clients_from_their_node_config():
    assert discover_clients(FakeGrid(3)) == {0: 1002, 1: 1001, 2: 1000}
    assert discover_clients(FakeGrid(3), num_clients=3) == {0: 1002, 1: 1001, 2: 1000}
    with pytest.raises(TimeoutError, match="2 of 3"):
        discover_clients(FakeGrid(2, num_partitions=3), timeout_s=0.2)
    with pytest.raises(RuntimeError, match="num-partitions"):
        discover_clients(FakeGrid(2, num_partitions=0))  # a SuperNode started without num-partitions


@pytest.mark.usefixtures("task_identity")
def test_a_client_without_a_partition_id_says_how_to_start_it():
    class NoConfig(FakeGrid):
        def send_and_receive(self, messages, timeout=None):
            context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
            return [client_app(message, context) for message in messages]

    with pytest.raises(KDConfigError, match="--node-config 'partition-id=0 num-partitions=2'"):
        discover_clients(NoConfig(1))


# ------------------------------------------------------------------------------------------ flwr run .


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_local_superlink(flwr_home: Path) -> None:
    """End the SuperLink that `flwr run` started for this test (its command line names the test's FLWR_HOME) and
    every process under it, by process id."""
    from kdlib.fl.simulation import descendants, wait_for_exit

    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in command and str(flwr_home) in command:
            pid = int(entry.parent.name)
            pids = {pid, *descendants(pid)}
            for p in pids:
                try:
                    os.kill(p, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            wait_for_exit(pids, timeout_s=20)
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.mark.slow
def test_flwr_run_runs_the_federated_study_in_flowers_simulation(tmp_path):
    """`flwr run .` from the project root with a fresh Flower configuration: Flower writes its default config, starts
    a local SuperLink in simulation mode, ships the app and runs it on 3 SuperNodes; the ServerApp stores the runs
    in the results store where the federated study reads them back."""
    pytest.importorskip("ray")
    flwr_home, results = tmp_path / "flwr", tmp_path / "results"
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # flwr starts `flower-superlink` from PATH
        "FLWR_HOME": str(flwr_home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "KDLIB_RESULTS": str(results),
        "KDLIB_CACHE": str(tmp_path / "cache"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    run_config = {"tiny": True, "scenario": "iid", "start": "kd_avg", "seed": 1, "num-server-rounds": 2}
    toml = {k: json.dumps(v) if isinstance(v, str) else str(v).lower() for k, v in run_config.items()}
    overrides = " ".join(f"{k}={v}" for k, v in toml.items())  # TOML values: "iid", true, 2
    flwr = str(bin_dir / "flwr") if (bin_dir / "flwr").exists() else "flwr"
    command = [flwr, "run", ".", "--stream", "--federation-config", "num-supernodes=3", "--run-config", overrides]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        _stop_local_superlink(flwr_home)
    output = done.stdout + done.stderr
    log = flwr_home / "local-superlink" / "superlink.log"
    context = f"{output[-6000:]}\n--- superlink.log:\n{log.read_text()[-3000:] if log.exists() else '(none)'}"
    assert done.returncode == 0, context
    assert "Successfully started run" in output and "kdlib federated study" in output, context
    assert (flwr_home / "config.toml").exists()  # Flower's default configuration, made on first use

    study = open_app_study({**FLOWER["app"]["config"], **run_config, "results-dir": str(results)}, num_clients=3)
    assert study.cfg.num_clients == 3 and study.cfg.seed == 1 and study.cfg.rounds == 2
    assert study.pending() == [], context  # both runs stored under the keys the federated study looks for
    records = {r["config"]["start"]: r for r in study.records()}
    assert set(records) == {"random", "kd_avg"}
    for record in records.values():
        assert [row["round"] for row in record["curves"]] == [0, 1, 2]
        assert all(row["bytes_down"] > 0 and row["bytes_up"] > 0 for row in record["curves"][1:])
    random_curve = [row["accuracy"] for row in records["random"]["curves"]]
    assert random_curve[-1] > random_curve[0]
    assert f"iid / random: accuracy per round from 0: {random_curve[0]:.3f}" in output
