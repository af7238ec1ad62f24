"""TRSGD / TRAdam: the oracle, the period = 1 reductions, λ_w = 0 (sawtooth SGD/Adam), arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scalopt
from reference.proximal_ref import trsgd_or_tradam

SHAPES = [(4, 3), (3,), ()]


def _params(dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in SHAPES]


def _grads(steps: int, dtype=torch.float64) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(s, generator=g, dtype=dtype) for s in SHAPES] for _ in range(steps)]


def _step(opt, params, gs) -> None:
    for p, g in zip(params, gs):
        p.grad = g.clone()
    opt.step()


@pytest.mark.parametrize("method", ["trsgd", "tradam"])
def test_matches_oracle_across_an_lr_decay(method):
    """Three cycles of S = 4 with a ×0.1 decay mid-cycle (λ = λ_w/η grows with it)."""
    params, grads = _params(), _grads(12)
    start = [p.detach().numpy().copy() for p in params]
    lrs = [0.05] * 6 + [0.005] * 6
    if method == "trsgd":
        opt = scalopt.TRSGD(params, lr=0.05, period=4, prox_weight=0.02, momentum=0.8, weight_decay=0.01)
        extra = dict(momentum=0.8)
    else:
        opt = scalopt.TRAdam(params, lr=0.05, period=4, prox_weight=0.02, betas=(0.8, 0.9), weight_decay=0.01)
        extra = dict(betas=(0.8, 0.9))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.1)
    for gs in grads:
        _step(opt, params, gs)
        sched.step()
    ref = trsgd_or_tradam(
        start, [[g.numpy() for g in gs] for gs in grads], lrs, method=method, period=4, prox_weight=0.02,
        weight_decay=0.01, **extra,
    )  # fmt: skip
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-9, atol=1e-12)
    assert opt.metrics()["inner_step"] == 3.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_period_one_is_torch_sgd_bitwise(dtype):
    params, ref = _params(dtype), _params(dtype)
    opt = scalopt.TRSGD(params, lr=0.1, period=1, prox_weight=0.5, momentum=0.9, weight_decay=0.01)
    sgd = torch.optim.SGD(ref, lr=0.1, momentum=0.9, weight_decay=0.01)
    for gs in _grads(6, dtype):
        _step(opt, params, gs)
        _step(sgd, ref, gs)
    for p, r in zip(params, ref):
        assert torch.equal(p, r)
    assert not any("anchor" in s for s in opt.state.values())  # no anchor kept when S = 1


def test_period_one_is_torch_adam():
    params, ref = _params(), _params()
    opt = scalopt.TRAdam(params, lr=0.01, period=1, prox_weight=0.5, weight_decay=0.01)
    adam = torch.optim.Adam(ref, lr=0.01, weight_decay=0.01)
    for gs in _grads(6):
        _step(opt, params, gs)
        _step(adam, ref, gs)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p, r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["trsgd", "tradam"])
def test_zero_prox_weight_is_the_sawtooth_step(method):
    """λ_w = 0: torch's SGD (Adam) with lr set to η/(s+1) before each step."""
    params, ref = _params(), _params()
    if method == "trsgd":
        opt = scalopt.TRSGD(params, lr=0.1, period=3, prox_weight=0.0, momentum=0.9)
        base = torch.optim.SGD(ref, lr=0.1, momentum=0.9)
    else:
        opt = scalopt.TRAdam(params, lr=0.01, period=3, prox_weight=0.0)
        base = torch.optim.Adam(ref, lr=0.01)
    eta = opt.param_groups[0]["lr"]
    for t, gs in enumerate(_grads(8)):
        base.param_groups[0]["lr"] = eta / (t % 3 + 1)
        _step(opt, params, gs)
        _step(base, ref, gs)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p, r, rtol=1e-12, atol=1e-14)


def test_default_prox_weight_is_a_tenth_of_lr():
    assert scalopt.TRSGD(_params(), lr=0.2).param_groups[0]["prox_weight"] == pytest.approx(0.02)


@pytest.mark.parametrize("cls", [scalopt.TRSGD, scalopt.TRAdam])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(period=0), "period"),
        (dict(period=2.5), "period"),
        (dict(prox_weight=-1.0), "prox_weight"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_invalid_arguments_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(_params(), **kwargs)


def test_invalid_momentum_and_betas_raise():
    with pytest.raises(ValueError, match="momentum"):
        scalopt.TRSGD(_params(), momentum=1.0)
    with pytest.raises(ValueError, match="betas"):
        scalopt.TRAdam(_params(), betas=(0.9, 1.0))
