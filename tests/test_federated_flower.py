"""The Flower strategy, driven in-process with Flower's own Message objects (no Ray, no network)."""

from __future__ import annotations

import pytest
import torch

flwr = pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict  # noqa: E402

from scalopt.federated import ClientData, federated_round  # noqa: E402
from scalopt.federated import registry as algorithms  # noqa: E402
from scalopt.federated.flower import FlowerStrategy, client_reply, from_record, to_record  # noqa: E402
from scalopt.workloads.base import Point  # noqa: E402

DIM, N_CLIENTS = 6, 5


@pytest.fixture(autouse=True)
def server_task_identity(monkeypatch):
    """The identity Flower's ServerApp runtime sets for its process before any Message is built."""
    from flwr.supercore.task_identity import TaskIdentity

    for key, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, key, value)


def lsq_loss(model, batch):
    A, b = batch
    return 0.5 * ((A @ model() - b) ** 2).sum() / A.shape[0]


def make_clients():
    def batches(seed):
        def make(g):
            while True:  # stochastic batches: the generator matters, as in a real client
                A = torch.randn(4, DIM, generator=g) + seed
                yield A, A.sum(1) * 0.1

        return make

    return [ClientData(name=f"c{i}", num_examples=3 + i, make_batches=batches(i)) for i in range(N_CLIENTS)]


class LocalGrid:
    """Just what the strategy asks a Grid for: the connected node ids."""

    def __init__(self, node_ids):
        self.node_ids = node_ids

    def get_node_ids(self):
        return list(self.node_ids)


def build(name):
    x0 = torch.linspace(-1, 1, DIM)
    return algorithms.build(name, [x0.clone()], local_steps=3, clients_per_round=3, seed=2)


def drive(strategy, clients, rounds, faults=None):
    """Flower's train loop by hand: configure_train -> each node's reply Message -> aggregate_train."""
    nodes = [101 + 7 * i for i in range(N_CLIENTS)]
    index = {node: i for i, node in enumerate(nodes)}
    model = Point(torch.zeros(DIM))
    worker = build(strategy.algorithm.name)  # the client side: same hyperparameters, no shared state
    for r in range(1, rounds + 1):
        arrays = to_record({"x": strategy.algorithm.x})
        messages = list(strategy.configure_train(r, arrays, ConfigRecord({}), LocalGrid(nodes)))
        replies = []
        for msg in messages:
            i = index[msg.metadata.dst_node_id]
            if faults and (r, i) in faults:
                reply = faults[(r, i)](msg)
            else:
                content = client_reply(worker, model, lsq_loss, clients[i], i, msg.content, data_seed=9)
                reply = Message(content=content, reply_to=msg)
            replies.append(reply)
        strategy.aggregate_train(r, replies)


@pytest.mark.parametrize("name", algorithms.names())
def test_flower_strategy_equals_the_simulator_bitwise(name):
    clients = make_clients()
    sim = build(name)
    model = Point(torch.zeros(DIM))
    for _ in range(3):
        federated_round(sim, clients, model, lsq_loss, data_seed=9)
    strategy = FlowerStrategy(build(name))
    drive(strategy, clients, 3)
    assert torch.equal(strategy.algorithm.x[0], sim.x[0])
    for a, b in zip(strategy.algorithm.state_dict()["extra"].values(), sim.state_dict()["extra"].values()):
        assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert sum(strategy.algorithm.counters["bytes_up"].values()) == sum(sim.counters["bytes_up"].values())


def test_flower_faulty_replies_are_left_out_and_named():
    clients = make_clients()

    def error(msg):
        return Message(Error(code=0, reason="client crashed"), reply_to=msg)

    def nan(msg):
        up = from_record(msg.content["down"])
        bad = {"delta": [torch.full_like(t, float("nan")) for t in up["x"]]}
        return Message(
            content=RecordDict({"up": to_record(bad), "metrics": MetricRecord({"num-examples": 3})}),
            reply_to=msg,
        )

    def wrong_shape(msg):
        bad = {"delta": [torch.zeros(DIM + 2)]}
        return Message(
            content=RecordDict({"up": to_record(bad), "metrics": MetricRecord({"num-examples": 3})}),
            reply_to=msg,
        )

    strategy = FlowerStrategy(build("fedavg"))
    # which nodes round 1 samples: the algorithm's own sampler, replayed
    chosen = build("fedavg").sample(N_CLIENTS)
    faults = {(1, chosen[0]): error, (1, chosen[1]): nan}
    drive(strategy, clients, 1, faults)
    rec = strategy.records[0]
    assert len(rec.failed) == 2 and len(rec.good) == 1 and not rec.skipped
    assert any("client crashed" in v for v in rec.failed.values())
    assert torch.isfinite(strategy.algorithm.x[0]).all()
    strategy.algorithm.min_clients = 2
    chosen2 = build("fedavg")
    chosen2.sample(N_CLIENTS)
    second = chosen2.sample(N_CLIENTS)
    before = strategy.algorithm.x[0].clone()
    with pytest.warns(RuntimeWarning, match="round skipped"):
        drive(strategy, clients, 1, {(1, second[0]): wrong_shape, (1, second[1]): error})
    assert strategy.records[1].skipped and torch.equal(strategy.algorithm.x[0], before)


def test_array_record_round_trip_is_exact():
    msg = {"x": [torch.randn(3, 2), torch.randn(4)], "v": [torch.rand(3, 2), torch.rand(4)]}
    back = from_record(to_record(msg))
    assert all(torch.equal(a, b) for k in msg for a, b in zip(msg[k], back[k]))
    assert isinstance(to_record(msg), ArrayRecord)
