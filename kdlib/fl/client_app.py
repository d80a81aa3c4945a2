"""The Flower client (``ClientApp``): trains the global model on its own partition and says who it is.

Its partition is ``context.node_config["partition-id"]`` of ``num-partitions``: Flower's simulation sets both; a
SuperNode gets them from ``flower-supernode --node-config 'partition-id=0 num-partitions=2'``. What data the
partition is a slice of comes with every training message (``DataSpec``), so the client needs no run config."""

from __future__ import annotations

import json

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from kdlib.core.train import RunOptions, TrainConfig, train_supervised
from kdlib.errors import KDConfigError
from kdlib.fl.task import DataSpec, client_data, task_model

client_app = ClientApp()
"""The federated client: trains the global model on its own partition (``train``) and says who it is (``query``)."""


NODE_CONFIG_HINT = "set by Flower's simulation; on a SuperNode: --node-config 'partition-id=0 num-partitions=2'"


def _partition_id(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise KDConfigError("node_config['partition-id']", None, NODE_CONFIG_HINT)
    return int(context.node_config["partition-id"])


@client_app.query()
def _client_query(msg: Message, context: Context) -> Message:
    """Who this client is: its partition id and the number of partitions (0 where the node config has none)."""
    info = {"partition-id": _partition_id(context), "num-partitions": int(context.node_config.get("num-partitions", 0))}
    return Message(RecordDict({"info": ConfigRecord(info)}), reply_to=msg)


@client_app.train()
def _client_train(msg: Message, context: Context) -> Message:
    """Local training: load the global weights, train ``local`` epochs on own data, send the weights back."""
    client = _partition_id(context)
    config = msg.content["config"]
    spec = DataSpec.from_json(str(config["data-spec"]))
    x, y, data = client_data(spec, client)
    torch.set_num_threads(int(config["threads"]))
    model = task_model(str(config["model"]), data)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    server_round = int(config["server-round"])
    seed = int(config["seed"]) * 1_000_003 + server_round * 1_000 + client
    cfg = TrainConfig(**{**json.loads(str(config["local"])), "seed": seed})
    history = train_supervised(model, x, y, cfg, RunOptions(str(config["device"]), progress=False))
    reply = RecordDict(
        {
            "arrays": ArrayRecord(model.cpu().state_dict()),
            "metrics": MetricRecord({"train-loss": float(history[-1]["loss"]), "num-examples": len(x)}),
            "info": ConfigRecord({"partition-id": client}),
        }
    )
    return Message(reply, reply_to=msg)

