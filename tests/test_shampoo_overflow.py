"""A Shampoo step that raises or skips leaves every buffer and counter exactly as before.

Finite gradients of 1e30 overflow the float32 statistics (G·Gᵀ ~ 1e60) and the graft accumulator
(G² ~ 1e60). Such a step must raise (``nonfinite="raise"``) or be skipped (``"skip"``) with the
whole state_dict and the parameters bitwise as they were, so that training continues exactly as if
the step had never been attempted.
"""

from __future__ import annotations

import pytest
import torch

from scalopt.distributed import SimComm
from scalopt.optim.shampoo import Shampoo

SHAPES = [(6, 4), (4,), (40, 3)]  # a matrix (two factors), a vector and a table (graft only)
KW = dict(lr=0.01, precondition_frequency=2, block_size=4, skip_dim=30, momentum=0.5, weight_decay=0.01)


def _params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]


def _grads(step: int, scale: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [scale * torch.randn(s, generator=g) for s in SHAPES]


def _step(opt: Shampoo, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


def _bits(x):
    """A comparable, bitwise image of a state_dict (tensors as bytes, containers recursively)."""
    if isinstance(x, torch.Tensor):
        return (str(x.dtype), tuple(x.shape), x.detach().contiguous().view(torch.uint8).numpy().tobytes())
    if isinstance(x, dict):
        return {k: _bits(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_bits(v) for v in x]
    return x


def _image(opt: Shampoo, params: list[torch.Tensor]):
    return _bits(opt.state_dict()), _bits(params)


SOAP = dict(eigenvalue_correction=True, grafting=None)  # V in the eigenbasis overflows like the graft's


def _run(bad_at: int | None, nonfinite: str, async_roots: bool, steps: int = 7, extra: dict | None = None):
    params = _params()
    opt = Shampoo(params, nonfinite=nonfinite, async_roots=async_roots, **KW, **(extra or {}))
    for t in range(steps):
        if t == bad_at:
            before = _image(opt, params)
            if nonfinite == "raise":
                with pytest.raises(FloatingPointError, match="non-finite statistics"):
                    _step(opt, params, _grads(t, scale=1e30))
            else:
                _step(opt, params, _grads(t, scale=1e30))
            after = _image(opt, params)
            if nonfinite == "skip":
                assert opt.metrics()["skipped_steps"] == 1
                after[0]["scalopt"]["counters"]["skipped_steps"] -= 1
            assert after == before
        _step(opt, params, _grads(t))
    opt.close()
    return _image(opt, params), opt


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
@pytest.mark.parametrize("async_roots", [False, True])
@pytest.mark.parametrize("bad_at", [1, 2, 3])  # before the first root, at a root step, between roots
@pytest.mark.parametrize("extra", [{}, SOAP], ids=["shampoo", "soap"])
def test_overflowing_statistics_leave_the_state_as_before(nonfinite, async_roots, bad_at, extra):
    (sd, params), opt = _run(bad_at, nonfinite, async_roots, extra=extra)
    (ref_sd, ref_params), _ = _run(None, nonfinite, async_roots, extra=extra)
    if nonfinite == "skip":
        sd["scalopt"]["counters"]["skipped_steps"] -= 1
    for counters in (sd["scalopt"]["counters"], ref_sd["scalopt"]["counters"]):
        for timing in ("root_seconds", "root_wait_seconds"):  # wall-clock, different in every run
            del counters[timing]
    assert params == ref_params  # training went on exactly as if the step had never been tried
    assert sd == ref_sd


def test_statistics_overflow_on_a_fresh_optimizer_leaves_no_state():
    params = _params()
    opt = Shampoo(params, **KW)
    with pytest.raises(FloatingPointError, match="non-finite statistics"):
        _step(opt, params, _grads(0, scale=1e30))
    assert len(opt.state) == 0 and opt.metrics()["steps"] == 0
    _step(opt, params, _grads(0))
    assert all(bool(torch.isfinite(p).all()) for p in params)


def _sharded(comm, bad_at, extra=None):
    params = _params()
    opt = Shampoo(params, comm=comm, nonfinite="skip", **KW, **(extra or {}))
    for t in range(5):
        if t == bad_at:  # only rank 1's gradient overflows; the average does too, on every rank
            _step(opt, params, _grads(t, scale=1e30 if comm.rank == 1 else 1.0))
        _step(opt, params, _grads(10 * t + comm.rank))
    return _bits(params), opt.metrics()["skipped_steps"]


@pytest.mark.parametrize("extra", [{}, SOAP], ids=["shampoo", "soap"])
def test_sharded_shampoo_skips_an_overflowing_step_on_every_rank(extra):
    results = SimComm(2).run(_sharded, 3, extra)
    reference = SimComm(2).run(_sharded, None, extra)
    for (params, skipped), (ref_params, ref_skipped) in zip(results, reference):
        assert skipped == 1 and ref_skipped == 0
        assert params == ref_params
