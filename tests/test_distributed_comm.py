"""The Comm layer in one process: accounting convention, NetworkModel, SingleComm and SimComm semantics."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from distributed_helpers import collectives, rng_draws
from scalopt.core.comm import Comm, NetworkModel, SingleComm, wire_bytes
from scalopt.distributed import CollectiveMismatch, RankError, SimComm


def test_wire_bytes_ring_convention():
    b = 1000
    assert wire_bytes("all_reduce", b, 4) == 2 * 3 / 4 * b
    assert wire_bytes("all_reduce", b, 4, deterministic=True) == 3 * b
    assert wire_bytes("all_gather", b, 4) == 3 * b  # (N-1)/N of the gathered N·B
    assert wire_bytes("reduce_scatter", b, 4) == 3 / 4 * b
    assert wire_bytes("all_to_all", b, 4) == 3 / 4 * b
    assert wire_bytes("broadcast", b, 4, is_root=True) == b
    assert wire_bytes("broadcast", b, 4) == 0
    assert wire_bytes("barrier", 0, 4) == 0
    assert wire_bytes("all_reduce", b, 1) == 0
    with pytest.raises(ValueError, match="kind"):
        wire_bytes("gossip", b, 4)


def test_network_model():
    net = NetworkModel(1e-3, 125e6)
    assert net.seconds(125e6) == pytest.approx(1.001)
    assert net.describe() == "1 ms latency, 1 Gbit/s"
    for bad in [(-1.0, 1e6), (1e-3, 0.0), (math.nan, 1e6)]:
        with pytest.raises(ValueError):
            NetworkModel(*bad)


def test_single_comm_is_a_comm_and_counts():
    comm = SingleComm()
    assert isinstance(comm, Comm)
    t = torch.arange(3.0)
    assert comm.all_reduce(t, "mean") is t and torch.equal(t, torch.arange(3.0))
    assert torch.equal(comm.all_gather(t)[0], t)
    assert torch.equal(comm.all_reduce(t, async_op=True).wait(), t)
    comm.mark_round()
    assert (comm.bytes_sent, comm.messages, comm.rounds) == (0.0, 3, 1)


def test_simcomm_collectives_semantics_three_ranks():
    out = SimComm(3).run(collectives)
    for r, (a, b, gathered, c, rs, a2a, h, _, sent, msgs) in enumerate(out):
        torch.manual_seed(7)
        a_ref = [None] * 3
        for q in range(3):
            torch.manual_seed(7 + q)
            a_ref[q] = (torch.rand(10), torch.rand(9) * (q + 1))
        assert torch.equal(a, (a_ref[0][0] + a_ref[1][0] + a_ref[2][0]) / 3)
        assert torch.equal(b, a_ref[0][1] + a_ref[1][1] + a_ref[2][1])
        assert [float(g[0, 0]) for g in gathered] == [0.0, 1.0, 2.0]
        assert torch.equal(c, torch.full((3,), 2.0))
        x = torch.arange(6.0)
        assert torch.equal(rs, (x[2 * r : 2 * r + 2] * 6) / 3)
        expected_a2a = [100.0 * q + 2 * r + k for q in range(3) for k in range(2)]
        assert torch.equal(a2a, torch.tensor(expected_a2a))
        assert torch.equal(h, torch.full((4,), 4.5))
        assert msgs == 8
        expected = (
            wire_bytes("all_reduce", 40, 3)
            + wire_bytes("all_reduce", 36, 3, deterministic=True)
            + wire_bytes("all_gather", 16, 3)
            + wire_bytes("broadcast", 12, 3, is_root=r == 2)
            + wire_bytes("reduce_scatter", 24, 3)
            + wire_bytes("all_to_all", 24, 3)
            + wire_bytes("all_reduce", 16, 3)
        )
        assert sent == pytest.approx(expected, rel=0, abs=1e-9)


def test_simcomm_rng_is_per_rank_and_matches_a_seeded_process():
    torch.manual_seed(1)
    before = torch.get_rng_state()
    out = SimComm(3).run(rng_draws, 40)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    for r in range(3):
        torch.manual_seed(40 + r)  # what a process seeded with 40 + r draws
        drop = torch.nn.functional.dropout(torch.ones(20), 0.5)
        assert torch.equal(out[r], torch.cat([drop, torch.rand(5)]))
    assert not torch.equal(out[0], out[1])


def _unseeded(comm):
    a = torch.rand(4)
    comm.barrier()
    return a


def test_simcomm_unseeded_ranks_draw_independent_streams():
    out = SimComm(2).run(_unseeded)
    assert not torch.equal(out[0], out[1])


def _raise_on_one(comm):
    comm.barrier()
    if comm.rank == 1:
        raise KeyError("bad key on rank 1")
    comm.all_reduce(torch.ones(1))
    return "unreachable"


def test_simcomm_exception_aborts_others_with_the_rank_error():
    before = threading.active_count()
    with pytest.raises(RankError, match=r"rank 1 of 3: raised KeyError") as info:
        SimComm(3).run(_raise_on_one)
    assert info.value.rank == 1
    assert "traceback of rank 1" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)
    assert threading.active_count() == before  # aborted ranks unwound


def _mismatched_kind(comm):
    if comm.rank == 0:
        comm.all_reduce(torch.ones(3))
    else:
        comm.broadcast(torch.ones(3))


def _mismatched_shape(comm):
    comm.all_reduce(torch.ones(3 + comm.rank))


def _early_return(comm):
    if comm.rank == 1:
        return None
    comm.barrier()


@pytest.mark.parametrize(
    "fn, pattern",
    [
        (_mismatched_kind, r"rank 0 issued all_reduce\(shape=\(3,\).*rank 1 issued broadcast\(shape=\(3,\)"),
        (_mismatched_shape, r"rank 0 issued all_reduce\(shape=\(3,\).*rank 1 issued all_reduce\(shape=\(4"),
        (_early_return, r"rank 1 returned while rank 0 waits in barrier"),
    ],
)
def test_simcomm_mismatched_collectives_raise_instead_of_deadlocking(fn, pattern):
    with pytest.raises(CollectiveMismatch, match=pattern):
        SimComm(2).run(fn)


def _hang(comm):
    if comm.rank == 1:
        threading.Event().wait(3.0)
    comm.barrier()


def test_simcomm_hang_raises_within_timeout():
    with pytest.raises(RankError, match=r"rank 1 of 2: did not reach its next collective"):
        SimComm(2, timeout_s=0.3).run(_hang)


def _delayed(comm):
    comm.all_reduce(torch.ones(250))  # 1000 bytes -> 2·(N−1)/N·B = 1000 on the wire with N = 2
    comm.all_reduce(torch.ones(250), async_op=True).wait()
    return comm.network_time_s


def test_simcomm_network_model_prices_each_collective():
    out = SimComm(2, delay=NetworkModel(1e-3, 1e6)).run(_delayed)
    assert out == [pytest.approx(2 * (1e-3 + 1e-3))] * 2


def test_simcomm_validates_arguments():
    with pytest.raises(ValueError, match="world_size"):
        SimComm(0)
    with pytest.raises(ValueError, match="delay"):
        SimComm(2, delay=0.1)
    with pytest.raises(RankError, match="src must be a rank"):
        SimComm(2).run(lambda comm: comm.broadcast(torch.ones(1), src=2))
    with pytest.raises(RankError, match="divisible"):
        SimComm(2).run(lambda comm: comm.reduce_scatter(torch.ones(3)))
