"""Real gloo process groups on loopback (2–4 processes, torch threads pinned to 1) against SimComm."""

from __future__ import annotations

import pytest
import torch

from distributed_helpers import ALGORITHMS, collectives, die_at_step, raise_on_rank, resume, train_all
from scalopt.distributed import LaunchError, NetworkModel, SimComm, launch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _assert_same(real, sim):
    assert type(real) is type(sim)
    if isinstance(real, torch.Tensor):
        assert real.dtype == sim.dtype and torch.equal(real, sim)
    elif isinstance(real, (list, tuple)):
        assert len(real) == len(sim)
        for a, b in zip(real, sim):
            _assert_same(a, b)
    elif isinstance(real, dict):
        assert real.keys() == sim.keys()
        for k in real:
            _assert_same(real[k], sim[k])
    else:
        assert real == sim


def test_collectives_torchcomm_equals_simcomm_two_ranks():
    # bitwise, including the non-deterministic all_reduce (one addition per element), the
    # per-rank RNG draws after seeding, and byte/message accounting
    _assert_same(launch(collectives, 2), SimComm(2).run(collectives))


def test_collectives_torchcomm_equals_simcomm_three_ranks_deterministic_parts():
    real, sim = launch(collectives, 3), SimComm(3).run(collectives)
    for r in range(3):
        _assert_same(real[r][1:], sim[r][1:])  # [0] is the backend-ordered all_reduce
        torch.testing.assert_close(real[r][0], sim[r][0], rtol=1e-6, atol=0)


def test_every_algorithm_torchcomm_equals_simcomm_bitwise_two_ranks():
    # states (params + BatchNorm buffers), losses, bytes_sent, messages, rounds
    _assert_same(launch(train_all, 2, ALGORITHMS, 8, False), SimComm(2).run(train_all, ALGORITHMS, 8, False))


@pytest.mark.parametrize("world_size", [3, 4])
def test_every_algorithm_torchcomm_equals_simcomm_bitwise_deterministic(world_size):
    real = launch(train_all, world_size, ALGORITHMS, 6, True)
    _assert_same(real, SimComm(world_size).run(train_all, ALGORITHMS, 6, True))


def test_killed_rank_makes_a_clear_error():
    with pytest.raises(LaunchError, match=r"rank 1 of 2 died \(killed by SIGKILL\)") as info:
        launch(die_at_step, 2, 1, 3, timeout_s=20)
    assert info.value.rank == 1
    assert "rank 0: CommError" in str(info.value)  # the survivor failed in its collective, not hung


def test_raising_rank_surfaces_with_its_traceback():
    with pytest.raises(LaunchError, match=r"rank 0 of 3 raised ValueError: boom on rank 0") as info:
        launch(raise_on_rank, 3, 0, timeout_s=20)
    assert "traceback of rank 0" in str(info.value) and "raise_on_rank" in str(info.value)


def _hang_rank_1(comm):
    import time

    comm.barrier()
    if comm.rank == 1:
        time.sleep(60)
    comm.all_reduce(torch.ones(2))


def test_hung_rank_fails_the_others_within_the_timeout():
    with pytest.raises(LaunchError, match=r"rank 1 of 2 hung") as info:
        launch(_hang_rank_1, 2, timeout_s=2, grace_s=2)
    assert "rank 0: CommError" in str(info.value)


def test_resume_mid_period_is_exact_over_gloo(tmp_path):
    # OverlapLocalSGD saves an in-flight non-blocking average; period 2, checkpoint after step 5
    full = launch(resume, 2, "overlap", 9, -1, "")
    resumed = launch(resume, 2, "overlap", 9, 5, str(tmp_path))
    _assert_same(resumed, full)


def _delayed_collectives(comm):
    h = comm.all_reduce(torch.ones(250), async_op=True)  # 1000 B: 2·(N−1)/N·B = 1000 B on the wire
    comm.broadcast(torch.ones(10))
    h.wait()
    return comm.network_time_s, comm.bytes_sent, repr(comm)


def test_torchcomm_network_model_prices_collectives_like_simcomm():
    net = NetworkModel(1e-3, 1e6)
    real = launch(_delayed_collectives, 2, delay=net)
    sim = SimComm(2, delay=net).run(_delayed_collectives)
    assert [r[:2] for r in real] == [s[:2] for s in sim]
    assert real[0][0] == pytest.approx(2e-3 + 1000 / 1e6 + 40 / 1e6)
    assert "1 ms latency, 0.008 Gbit/s" in real[0][2]


def _own_timeout(comm):
    import time

    from scalopt.distributed import CommError, TorchComm

    short = TorchComm(timeout_s=1)  # the group's timeout (launch's timeout_s) is 60 s
    if comm.rank == 1:
        time.sleep(3)
        return "slept"
    try:
        short.all_reduce(torch.ones(3))
    except CommError as exc:
        return str(exc)
    return "no error"


def test_torchcomm_timeout_bounds_a_wait_even_when_the_group_timeout_is_long():
    out = launch(_own_timeout, 2, timeout_s=60)
    assert out[1] == "slept"
    assert out[0].startswith("rank 0/2: all_reduce(shape=(3,), dtype=torch.float32) failed")
    assert "timeout (1 s)" in out[0]
