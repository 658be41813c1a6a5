"""Flower's side of ``bench_flower.py``: a ClientApp and a ServerApp on the benchmark workload.

This lives in its own importable module (``bench/`` is put on the Ray workers' ``PYTHONPATH``) so that
Ray pickles the apps by reference and each actor process keeps one copy of the data in ``_SHARDS``
between rounds, as a real Flower client process would.

Shared with fedledger: the split (``split_data`` on the same workload config as ``bench_core.py``),
the model and initial weights (``initial_model`` of the same task spec), the hyper-parameters and the
per-member, per-round seed, and the evaluation (``evaluate`` on the same test set). The client's local
loop is one of two (``FlowerSettings.client_loop``):

* ``tutorial``: what a Flower user writes, the quickstart template's DataLoader loop (``tutorial_loop``);
* ``train_local``: fedledger's own loop (channels-last, batches gathered from tensors), so that only
  the framework differs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from bench_core import workload
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from tutorial_loop import tutorial_train

from fedledger.learning import Dataset, SmallCNN, TrainConfig, evaluate, load_numpy_state, train_local
from fedledger.protocol.actors import derive_seed
from fedledger.protocol.setup import initial_model
from fedledger.sim.simulation import split_data, task_spec

_SHARDS: dict[str, tuple[list[Dataset], Dataset]] = {}
_LOCK = threading.Lock()


def shards(members: int, data_path: str) -> tuple[list[Dataset], Dataset]:
    """This process's copy of the split: trainer i's shard is ``shards[0][i]``; loaded once per process."""
    key = f"{members}:{data_path}"
    with _LOCK:
        if key not in _SHARDS:
            config = workload(members, 1, False, data_path)
            by_name, test = split_data(config)
            _SHARDS[key] = ([by_name[m.name] for m in config.trainers], test)
        return _SHARDS[key]


def wire_bytes(obj: Any) -> int:
    """Bytes Flower puts on the wire for an inflatable object: its deflated body plus its children's."""
    children = getattr(obj, "children", None) or {}
    return len(obj.deflate()) + sum(wire_bytes(child) for child in children.values())


@dataclass
class FlowerSettings:
    """What the ServerApp and the ClientApps need to know; travels to the actors in the run config."""

    members: int
    rounds: int
    data_path: str
    seed: int = 2024
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    threads_per_client: int = 1
    client_loop: str = "train_local"  # or "tutorial"


@dataclass
class ServerLog:
    """Filled by the ServerApp in the driver process: per-round accuracy, timing and traffic."""

    started: float = field(default_factory=time.perf_counter)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    sent_bytes: dict[int, list[int]] = field(default_factory=dict)
    received_bytes: dict[int, list[int]] = field(default_factory=dict)
    train_seconds: dict[int, float] = field(default_factory=dict)
    final_at: dict[int, float] = field(default_factory=dict)  # round -> seconds since start, model aggregated


class MeasuredFedAvg(FedAvg):
    """Flower's FedAvg, recording the wire size of every message to and from a client."""

    def __init__(self, log: ServerLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log
        self._round_started: dict[int, float] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.log.sent_bytes[server_round] = [wire_bytes(m) for m in messages]
        self._round_started[server_round] = time.perf_counter()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.log.train_seconds[server_round] = time.perf_counter() - self._round_started[server_round]
        self.log.received_bytes[server_round] = [wire_bytes(r) for r in replies if r.has_content()]
        result = super().aggregate_train(server_round, replies)
        self.log.final_at[server_round] = round(time.perf_counter() - self.log.started, 3)
        return result


def build_client_app(settings: FlowerSettings) -> ClientApp:
    app = ClientApp()
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if torch.get_num_threads() != settings.threads_per_client:
            torch.set_num_threads(settings.threads_per_client)
        partition = int(context.node_config["partition-id"])
        train_shards, _ = shards(settings.members, settings.data_path)
        data = train_shards[partition]
        model = SmallCNN(num_classes=10)
        model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
        server_round = int(cast(int, msg.content.config_records["config"]["server-round"]))
        seed = derive_seed(settings.seed, partition, server_round)
        if settings.client_loop == "tutorial":
            num_samples, loss = tutorial_train(model, data, seed=seed, lr=settings.lr)
        else:
            result = train_local(model, data, config, seed=seed)
            num_samples, loss = result.num_samples, result.mean_loss
        # contiguous() gives NCHW tensors back whatever layout the loop trained in
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        content = RecordDict(
            {
                "arrays": ArrayRecord(state),
                "metrics": MetricRecord({"train_loss": loss, "num-examples": num_samples}),
            }
        )
        return Message(content=content, reply_to=msg)

    return app


def build_server_app(settings: FlowerSettings, log: ServerLog) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        _, test = shards(settings.members, settings.data_path)
        config = workload(settings.members, settings.rounds, False, settings.data_path)
        model = SmallCNN(num_classes=10)
        load_numpy_state(model, initial_model(task_spec(config, test.num_classes)))
        strategy = MeasuredFedAvg(
            log,
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=settings.members,
            min_available_nodes=settings.members,
        )

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            started = time.perf_counter()
            evaluator = SmallCNN(num_classes=10)
            evaluator.load_state_dict(arrays.to_torch_state_dict())
            result = evaluate(evaluator, test)
            now = time.perf_counter()
            log.evaluations.append(
                {
                    "round": server_round,
                    "t": round(now - log.started, 3),
                    "evaluate_seconds": round(now - started, 4),
                    "test_accuracy": round(result.accuracy, 6),
                    "test_loss": round(result.loss, 6),
                }
            )
            return MetricRecord({"accuracy": result.accuracy, "loss": result.loss})

        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=settings.rounds,
            evaluate_fn=evaluate_fn,
        )

    return app


def client_resources(threads_per_client: int) -> dict[str, Any]:
    """Ray backend config: two CPUs in all, ``threads_per_client`` per ClientApp actor."""
    return {
        "init_args": {
            "num_cpus": os.cpu_count() or 2,
            "include_dashboard": False,
            "log_to_driver": True,
        },
        "client_resources": {"num_cpus": threads_per_client, "num_gpus": 0.0},
    }
