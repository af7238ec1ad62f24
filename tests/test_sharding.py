"""The shared sharding helpers: LPT assignment and the all-gather of owned results."""

from __future__ import annotations

import pytest
import torch

from scalopt.core.comm import SingleComm
from scalopt.distributed import SimComm
from scalopt.optim import sharding
from scalopt.optim.sharding import all_gather_owned, assign_lpt


def test_lpt_balances_fractional_costs_and_is_deterministic():
    # mL-BFGS-style costs: history length × numel, here with a rank left with less work
    costs = [3 * 10.0, 3 * 4.0, 3 * 4.0, 3 * 2.0]
    owner = assign_lpt(costs, 2)
    assert owner == [0, 1, 1, 1]  # loads 30 and 30
    assert assign_lpt([], 3) == []
    assert assign_lpt([1.0], 3) == [0]


ITEMS = [((2, 3), torch.float32), ((4,), torch.float64), ((1,), torch.float32), ((), torch.float64)]


def _rank(comm):
    shapes = [s for s, _ in ITEMS]
    dtypes = [d for _, d in ITEMS]
    owner = [0, 0, 2, 0]  # rank 1 owns nothing; rank 2 owns one float32 item
    mine = [
        torch.full(s, 10.0 * i + 1, dtype=d) if owner[i] == comm.rank else None
        for i, (s, d) in enumerate(ITEMS)
    ]
    return all_gather_owned(comm, mine, owner, shapes, dtypes, torch.device("cpu"))


def test_all_gather_owned_gives_every_rank_every_item():
    results = SimComm(3).run(_rank)
    for out in results:
        for i, (shape, dtype) in enumerate(ITEMS):
            assert out[i].shape == shape and out[i].dtype == dtype
            assert torch.equal(out[i], torch.full(shape, 10.0 * i + 1, dtype=dtype))


def test_all_gather_owned_with_one_rank_returns_the_inputs():
    t = [torch.ones(2)]
    assert all_gather_owned(SingleComm(), t, [0], [(2,)], [torch.float32], torch.device("cpu"))[0] is t[0]


def test_check_shard_accepts_its_own_shard_and_names_both_otherwise():
    sharding.check_shard({"rank": 1, "world_size": 2}, 1, 2)
    with pytest.raises(ValueError, match="MLBFGS checkpoint is the shard of rank 1 of world size 2.*rank 0"):
        sharding.check_shard({"rank": 1, "world_size": 2}, 0, 2, owner="MLBFGS")
