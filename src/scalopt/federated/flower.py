"""Flower (``flwr`` 1.42) integration: a strategy and a client that run scalopt's server logic.

:class:`FlowerStrategy` wraps any :class:`~scalopt.federated.base.FederatedAlgorithm` (FedAvg,
FedAdam, FedLADA, LocalAdam) as a ``flwr.serverapp.strategy.Strategy``:

    configure_train   algorithm.sample over the grid's node ids (sorted), algorithm.broadcast as an
                      ArrayRecord "down" (keys "<name>.<i>"), config {"server-round", "round"}
    aggregate_train   error replies, uploads that fail algorithm.check_upload and replies without
                      "num-examples" are left out, counted and named; fewer good replies than
                      min_clients skip the round (warning); else algorithm.aggregate — the same
                      open_round / accept_upload / close_round the in-process simulator uses

so a run under Flower and the simulator, given the same client updates, end on the same model
bitwise. :func:`client_reply` is the client's side (used by :func:`client_app`): it rebuilds the
message, runs ``algorithm.client_update`` on the client's data with the batch generator the
simulator would use for that client and round, and replies with the upload ("up") and a
MetricRecord {"num-examples", "train-loss"}. Clients keep no state; the server's whole state is
``algorithm.state_dict()``. Install with ``pip install 'scalopt[federated]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from logging import INFO

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from scalopt.federated.base import FederatedAlgorithm, Loss
from scalopt.federated.base import Message as Tensors
from scalopt.federated.partition import ClientData
from scalopt.federated.round import RoundRecord, accept_upload, client_generator, close_round, open_round

TRAIN = "train"


def to_record(message: Tensors) -> ArrayRecord:
    """A message (name -> list of tensors) as an ArrayRecord with keys ``name.i``."""
    return ArrayRecord(
        array_dict={
            f"{key}.{i}": Array(np.ascontiguousarray(t.detach().cpu().numpy()))
            for key, tensors in message.items()
            for i, t in enumerate(tensors)
        }
    )


def from_record(record: ArrayRecord) -> Tensors:
    """The inverse of :func:`to_record` (each list in index order)."""
    out: dict[str, dict[int, torch.Tensor]] = {}
    for name, array in record.items():
        key, _, index = name.rpartition(".")
        out.setdefault(key, {})[int(index)] = torch.from_numpy(np.array(array.numpy(), copy=True))
    return {key: [parts[i] for i in sorted(parts)] for key, parts in out.items()}


class FlowerStrategy(Strategy):
    """A Flower strategy whose server logic is ``algorithm``'s (see the module docstring)."""

    def __init__(self, algorithm: FederatedAlgorithm) -> None:
        if not isinstance(algorithm, FederatedAlgorithm):
            raise ValueError(f"algorithm must be a FederatedAlgorithm, got {type(algorithm).__name__}")
        self.algorithm = algorithm
        self.records: list[RoundRecord] = []
        self._open: RoundRecord | None = None
        self._nodes: dict[int, str] = {}

    def summary(self) -> None:
        log(INFO, "scalopt %s: %s", self.algorithm.name, self.algorithm.hparams())

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = sorted(grid.get_node_ids())
        chosen = [nodes[i] for i in self.algorithm.sample(len(nodes))]
        down = self.algorithm.broadcast()
        self._nodes = {node: f"node{node}" for node in chosen}
        self._open = open_round(self.algorithm, list(self._nodes.values()), down)
        cfg = ConfigRecord({**dict(config), "server-round": server_round, "round": self.algorithm.round})
        content = RecordDict({"down": to_record(down), "config": cfg})
        return [Message(content=content, message_type=TRAIN, dst_node_id=node) for node in chosen]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._open is None:
            raise ValueError("aggregate_train called before configure_train")
        record, good = self._open, []
        for reply in replies:
            name = self._nodes.get(reply.metadata.src_node_id, f"node{reply.metadata.src_node_id}")
            if reply.has_error():
                record.failed[name] = f"error reply: {reply.error.reason}"
                continue
            try:
                content = reply.content
                metrics = content["metrics"]
                up, n = from_record(content["up"]), int(metrics["num-examples"])
                loss = float(metrics.get("train-loss", float("nan")))
            except (KeyError, TypeError, ValueError) as exc:
                record.failed[name] = f"malformed reply: {exc!r}"
                continue
            record.client_steps += self.algorithm.local_steps
            accept_upload(self.algorithm, record, good, name, n, up, loss)
        self._open = None
        self.records.append(close_round(self.algorithm, record, good))
        metrics = MetricRecord(
            {"good-clients": len(good), "failed-clients": len(record.failed), "skipped": int(record.skipped)}
        )
        return to_record({"x": self.algorithm.x}), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # evaluation is the server's (evaluate_fn); clients only train

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None


def client_reply(
    algorithm: FederatedAlgorithm,
    model: nn.Module,
    loss: Loss,
    client: ClientData,
    client_index: int,
    content: RecordDict,
    *,
    data_seed: int = 0,
) -> RecordDict:
    """One client's training reply to a ``configure_train`` message (stateless)."""
    down = from_record(content["down"])
    round_index = int(content["config"]["round"])
    batches = client.batches(client_generator(data_seed, round_index, client_index))
    up, client_loss = algorithm.client_update(model, down, batches, loss)
    metrics = MetricRecord({"num-examples": client.num_examples, "train-loss": float(client_loss)})
    return RecordDict({"up": to_record(up), "metrics": metrics})


def client_app(
    make_algorithm: Callable[[], FederatedAlgorithm],
    make_model: Callable[[], nn.Module],
    loss: Loss,
    clients: Sequence[ClientData],
    *,
    data_seed: int = 0,
) -> ClientApp:
    """A Flower ClientApp whose node ``partition-id`` (node config) picks its client in ``clients``."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        index = int(context.node_config["partition-id"])
        reply = client_reply(
            make_algorithm(), make_model(), loss, clients[index], index, msg.content, data_seed=data_seed
        )
        return Message(content=reply, reply_to=msg)

    return app


__all__ = ["FlowerStrategy", "client_app", "client_reply", "from_record", "to_record"]
