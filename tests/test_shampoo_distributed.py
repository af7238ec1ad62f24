"""Distributed Shampoo (comm=): equal to single-process Shampoo on the averaged gradient, bitwise."""

from __future__ import annotations

import io

import pytest
import torch

from scalopt.core.comm import SingleComm
from scalopt.distributed import RankError, SimComm, launch, load_checkpoint, save_checkpoint
from scalopt.optim.shampoo import Shampoo

SHAPES = [(9, 5), (5,), (7, 4, 3), (40, 3), (5, 6), ()]
KW = dict(
    lr=0.01,
    betas=(0.9, 0.95),
    block_size=4,
    skip_dim=30,
    precondition_frequency=2,
    momentum=0.5,
    weight_decay=0.01,
    merge_dims=True,
)


def _params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]


def _grad(step: int, rank: int, i: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1000 * step + 10 * rank + i))


def _state_numel(opt) -> int:
    seen, n = set(), 0
    for s in opt.state.values():
        for v in s.values():
            if isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() not in seen:
                seen.add(v.untyped_storage().data_ptr())
                n += v.untyped_storage().nbytes() // 4
    return n


def train_rank(comm, steps: int, kwargs: dict, resume_at: int = -1):
    """Every rank: the same parameters, its own gradients; optionally checkpoint and resume mid-run."""
    params = _params()
    opt = Shampoo(params, comm=comm, **kwargs)
    for t in range(steps):
        if t == resume_at:
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            kept = [p.detach().clone() for p in params]
            params = _params()
            with torch.no_grad():
                for p, k in zip(params, kept):
                    p.copy_(k)
            opt = Shampoo(params, comm=comm, **kwargs)
            opt.load_state_dict(saved)
        for i, p in enumerate(params):
            p.grad = _grad(t, comm.rank, i, p.shape)
        opt.step()
    opt.close()
    return [p.detach().clone() for p in params], opt.metrics(), _state_numel(opt)


def _single(steps: int, world_size: int, kwargs: dict):
    params = _params()
    opt = Shampoo(params, **kwargs)
    for t in range(steps):
        for i, p in enumerate(params):
            parts = [_grad(t, r, i, p.shape) for r in range(world_size)]
            avg = parts[0].clone()
            for q in parts[1:]:
                avg.add_(q)
            p.grad = avg.div_(world_size)
        opt.step()
    return [p.detach().clone() for p in params], _state_numel(opt)


VARIANTS = [
    KW,
    {**KW, "grafting": "rmsprop", "async_roots": True, "nesterov": True},
    {**KW, "root_method": "newton", "decoupled_weight_decay": False, "precondition_1d": True},
    {**KW, "grafting": None, "eigenvalue_correction": True, "async_roots": True},
]


@pytest.mark.parametrize("kwargs", VARIANTS, ids=["adam", "rmsprop-async", "newton-l2", "soap-async"])
def test_simcomm_two_ranks_equal_single_process_bitwise(kwargs):
    ref, full = _single(7, 2, kwargs)
    results = SimComm(2).run(train_rank, 7, kwargs)
    for params, metrics, numel in results:
        for a, b in zip(params, ref):
            assert torch.equal(a, b)
        assert metrics["blocks_rank0"] > 0 and metrics["blocks_rank1"] > 0
        assert numel < 0.75 * full  # each rank holds about half of the state
    (_, m0, _), (_, m1, _) = results
    assert (m0["blocks"], m1["blocks"]) == (m0["blocks_rank0"], m0["blocks_rank1"])


def test_three_ranks_and_resume_mid_period():
    ref, _ = _single(7, 3, KW)
    for params, _, _ in SimComm(3).run(train_rank, 7, KW, 3):
        for a, b in zip(params, ref):
            assert torch.equal(a, b)


def test_shard_loaded_with_another_world_size_is_a_clear_error():
    shard = SimComm(2).run(_shard, 3)[0]
    for comm in (None, SingleComm()):
        opt = Shampoo(_params(), comm=comm, **KW)
        with pytest.raises(ValueError, match="rank 0 of world size 2.*world size 1"):
            opt.load_state_dict(shard)


def _shard(comm, steps):
    params = _params()
    opt = Shampoo(params, comm=comm, **KW)
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = _grad(t, comm.rank, i, p.shape)
        opt.step()
    return opt.state_dict()


@pytest.mark.distributed
def test_gloo_two_ranks_equal_single_process_bitwise():
    ref, _ = _single(5, 2, KW)
    for params, _, _ in launch(train_rank, 2, 5, KW):
        for a, b in zip(params, ref):
            assert torch.equal(a, b)


def _checkpointed(comm, steps: int, directory: str, save_at: int, load: bool):
    params = _params()
    opt = Shampoo(params, comm=comm, **KW)
    start = 0
    if load:
        info = load_checkpoint(directory, comm=comm, optimizer=opt, rng=False)
        start = info["step"]
        with torch.no_grad():
            for p, x in zip(params, info["extra"]["params"]):
                p.copy_(x)
    for t in range(start, steps):
        if t == save_at:
            extra = {"params": [p.detach().clone() for p in params]}
            save_checkpoint(directory, comm=comm, optimizer=opt, step=t, extra=extra, rng=False)
        for i, p in enumerate(params):
            p.grad = _grad(t, comm.rank, i, p.shape)
        opt.step()
    return [p.detach().clone() for p in params]


def test_sharded_checkpoint_resumes_bitwise_and_rejects_another_world_size(tmp_path):
    full = SimComm(2).run(_checkpointed, 7, str(tmp_path), 3, False)
    resumed = SimComm(2).run(_checkpointed, 7, str(tmp_path), -1, True)
    for a, b in zip(full, resumed):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    with pytest.raises(RankError, match="world_size=3"):
        SimComm(3).run(_checkpointed, 7, str(tmp_path), -1, True)


def _tiny(comm):
    ps = [torch.ones(5, 3, requires_grad=True), torch.ones((), requires_grad=True)]
    opt = Shampoo(ps, comm=comm, lr=0.1, precondition_frequency=1)
    for t in range(3):
        for i, p in enumerate(ps):
            p.grad = _grad(t, comm.rank, i, p.shape)
        opt.step()
    return [p.detach().clone() for p in ps], opt.metrics()["blocks"]


def test_ranks_that_own_nothing_still_take_part():
    results = SimComm(4).run(_tiny)
    assert [blocks for _, blocks in results] == [1, 0, 0, 0]
    for params, _ in results[1:]:
        for a, b in zip(params, results[0][0]):
            assert torch.equal(a, b)


def _registry_rank(comm):
    from scalopt.distributed import registry

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    opt = registry.build("shampoo-sharded", model, "shampoo", {"lr": 0.01, "precondition_frequency": 2}, comm)
    g = torch.Generator().manual_seed(comm.rank)
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(8, 6, generator=g)).square().mean().backward()
        opt.step()
    return isinstance(opt, Shampoo) and opt.comm is comm, [p.detach().clone() for p in model.parameters()]


def test_registry_shampoo_sharded_is_shampoo_with_comm():
    (ok0, params0), (ok1, params1) = SimComm(2).run(_registry_rank)
    assert ok0 and ok1
    for a, b in zip(params0, params1):  # every rank ends with the same parameters
        assert torch.equal(a, b)
