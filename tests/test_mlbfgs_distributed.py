"""mL-BFGS with comm=: blocks sharded over ranks, equal to single-process mL-BFGS on the averaged gradient."""

from __future__ import annotations

import io

import pytest
import torch

from scalopt.core.comm import SingleComm
from scalopt.distributed import SimComm, launch
from scalopt.optim.mlbfgs import MLBFGS

SHAPES = [(9, 5), (5,), (7, 4, 3), (40, 3), (5, 6), ()]
KW = dict(lr=0.05, momentum=0.5, weight_decay=0.01, update_freq=2, history=3, betas=(0.9, 0.95))


def _params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]


def _grad(step: int, rank: int, i: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1000 * step + 10 * rank + i))


def _blocks(params, custom: bool):
    return [[params[0], params[1]], [params[2]], [params[3], params[5]]] if custom else None


def train_rank(comm, steps: int, custom: bool, resume_at: int = -1):
    params = _params()
    opt = MLBFGS(params, comm=comm, blocks=_blocks(params, custom), **KW)
    for t in range(steps):
        if t == resume_at:
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            buffer.seek(0)
            params = [p.detach().clone().requires_grad_() for p in params]
            opt = MLBFGS(params, comm=comm, blocks=_blocks(params, custom), **KW)
            opt.load_state_dict(torch.load(buffer, weights_only=True))
        for i, p in enumerate(params):
            p.grad = _grad(t, comm.rank, i, p.shape)
        opt.step()
    owned = sum(v.numel() for s in opt.state.values() for k, v in s.items() if k.startswith("history"))
    return [p.detach().clone() for p in params], opt.metrics(), owned


def _single(steps: int, world_size: int, custom: bool):
    params = _params()
    opt = MLBFGS(params, blocks=_blocks(params, custom), **KW)
    for t in range(steps):
        for i, p in enumerate(params):
            parts = [_grad(t, r, i, p.shape) for r in range(world_size)]
            avg = parts[0].clone()
            for q in parts[1:]:
                avg.add_(q)
            p.grad = avg.div_(world_size)
        opt.step()
    owned = sum(v.numel() for s in opt.state.values() for k, v in s.items() if k.startswith("history"))
    return [p.detach().clone() for p in params], owned


@pytest.mark.parametrize("custom", [False, True], ids=["per-parameter", "custom-blocks"])
def test_simcomm_two_ranks_equal_single_process_bitwise(custom):
    ref, full = _single(9, 2, custom)
    results = SimComm(2).run(train_rank, 9, custom)
    for params, metrics, owned in results:
        for a, b in zip(params, ref):
            assert torch.equal(a, b)
        assert 0 < metrics["blocks_owned"] and 0 < owned < full  # each rank holds a share of the histories
    assert sum(owned for _, _, owned in results) == full


def test_three_ranks_and_resume():
    ref, _ = _single(9, 3, False)
    for params, _, _ in SimComm(3).run(train_rank, 9, False, 5):
        for a, b in zip(params, ref):
            assert torch.equal(a, b)


def _shard(comm):
    params = _params()
    opt = MLBFGS(params, comm=comm, **KW)
    for t in range(3):
        for i, p in enumerate(params):
            p.grad = _grad(t, comm.rank, i, p.shape)
        opt.step()
    return opt.state_dict()


def test_shard_loaded_with_another_world_size_is_a_clear_error():
    shard = SimComm(2).run(_shard)[0]
    for comm in (None, SingleComm()):
        opt = MLBFGS(_params(), comm=comm, **KW)
        with pytest.raises(ValueError, match="rank 0 of world size 2.*world size 1"):
            opt.load_state_dict(shard)


@pytest.mark.distributed
def test_gloo_two_ranks_equal_single_process_bitwise():
    ref, _ = _single(7, 2, True)
    for params, _, _ in launch(train_rank, 2, 7, True):
        for a, b in zip(params, ref):
            assert torch.equal(a, b)
