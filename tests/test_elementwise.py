"""Element-wise optimizers against oracles written from the equations, and the reductions that must hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scalopt
from reference import elementwise as ref
from scalopt.schedules import InvPower, OneMinusInvPower

SHAPES = [(4, 3), (5,), (2, 3, 2)]


def _grads(steps: int, seed: int = 0, scale: float = 1.0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[scale * rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]


def _run(opt_cls, grads, x0, **kwargs) -> list[np.ndarray]:
    params = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in x0]
    opt = opt_cls(params, **kwargs)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for p in params]


def _x0(seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _close(a: list[np.ndarray], b: list[np.ndarray], rtol: float = 1e-10) -> None:
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"bias_correction": False},
        {"lr_decay": InvPower(0.5), "beta2_schedule": OneMinusInvPower(0.1, 1.0)},
        {"lr_decay": InvPower(0.5), "beta2_schedule": OneMinusInvPower(0.5, 0.5), "bias_correction": False},
    ],
)
def test_generic_adam_matches_oracle(kwargs):
    grads, x0 = _grads(40), _x0()
    got = _run(scalopt.GenericAdam, grads, x0, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, **kwargs)
    want = ref.generic_adam(
        x0,
        grads,
        lr=1e-2,
        beta1=0.9,
        beta2=0.99,
        eps=1e-8,
        weight_decay=kwargs.get("weight_decay", 0.0),
        decoupled=kwargs.get("decoupled_weight_decay", False),
        bias_correction=kwargs.get("bias_correction", True),
        lr_decay=kwargs.get("lr_decay"),
        beta2_schedule=kwargs.get("beta2_schedule"),
    )
    _close(got, want)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_equals_torch_adam_over_50_steps(decoupled, weight_decay):
    grads, x0 = _grads(50, seed=3), _x0()
    got = _run(
        scalopt.GenericAdam, grads, x0, lr=3e-3, weight_decay=weight_decay, decoupled_weight_decay=decoupled
    )
    torch_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    want = _run(torch_cls, grads, x0, lr=3e-3, weight_decay=weight_decay, foreach=True)
    biggest = max(np.abs(w).max() for w in want)
    assert max(np.abs(g - w).max() for g, w in zip(got, want)) <= 1e-9 * biggest
    preset = scalopt.AdamW if decoupled else scalopt.Adam
    got_preset = _run(preset, grads, x0, lr=3e-3, weight_decay=weight_decay)
    _close(got_preset, got, rtol=0)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("max_norm", [0.5, 3.0])
def test_clipped_sgd_matches_oracle(momentum, nesterov, max_norm):
    grads, x0 = _grads(20, scale=2.0), _x0()
    kwargs = dict(lr=0.05, max_norm=max_norm, momentum=momentum, nesterov=nesterov, weight_decay=0.01)
    _close(_run(scalopt.ClippedSGD, grads, x0, **kwargs), ref.clipped_sgd(x0, grads, **kwargs))


def test_clipped_sgd_step_is_min_of_eta_and_gamma_over_norm():
    grads, x0 = _grads(1, scale=5.0), _x0()
    lr, max_norm = 0.1, 0.7
    norm = np.sqrt(sum((g**2).sum() for g in grads[0]))
    got = _run(scalopt.ClippedSGD, grads, x0, lr=lr, max_norm=max_norm)
    step = min(lr, lr * max_norm / norm)
    _close(got, [x - step * g for x, g in zip(x0, grads[0])])


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_clipped_sgd_with_infinite_threshold_is_torch_sgd(momentum, nesterov):
    grads, x0 = _grads(30, scale=10.0), _x0()
    kwargs = dict(lr=0.01, momentum=momentum, nesterov=nesterov, weight_decay=0.01)
    got = _run(scalopt.ClippedSGD, grads, x0, max_norm=float("inf"), **kwargs)
    _close(got, _run(torch.optim.SGD, grads, x0, **kwargs), rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_normalized_sgd_matches_oracle(momentum):
    grads, x0 = _grads(20), _x0()
    got = _run(scalopt.NormalizedSGD, grads, x0, lr=0.05, momentum=momentum, eps=1e-8)
    _close(got, ref.normalized_sgd(x0, grads, lr=0.05, momentum=momentum, eps=1e-8))


def test_normalized_sgd_steps_have_length_lr():
    grads, x0 = _grads(1), _x0()
    got = _run(scalopt.NormalizedSGD, grads, x0, lr=0.3, momentum=0.9, eps=0.0)
    length = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(got, x0)))
    assert abs(length - 0.3) < 1e-12


@pytest.mark.parametrize(
    "kwargs",
    [
        {"betas": (0.9, 0.999), "eps": 1e-8},
        {"betas": (0.9, 0.99), "eps": 1e-6, "bias_correction": True, "weight_decay": 0.01},
        {"betas": (0.0, 0.9), "eps": 1e-8},
        {"betas": (0.9, 0.0), "eps": 0.0},
    ],
)
def test_generalized_signsgd_matches_oracle(kwargs):
    grads, x0 = _grads(25), _x0()
    got = _run(scalopt.GeneralizedSignSGD, grads, x0, lr=1e-2, **kwargs)
    want = ref.generalized_signsgd(
        x0,
        grads,
        lr=1e-2,
        beta1=kwargs["betas"][0],
        beta2=kwargs["betas"][1],
        eps=kwargs["eps"],
        weight_decay=kwargs.get("weight_decay", 0.0),
        bias_correction=kwargs.get("bias_correction", False),
    )
    _close(got, want)


def test_generalized_signsgd_special_values_are_signsgd_and_signum():
    grads, x0 = _grads(10), _x0()
    grads[0][0][0, 0] = 0.0  # sign(0) = 0 on the very first step
    got = _run(scalopt.GeneralizedSignSGD, grads[:1], x0, lr=0.1, betas=(0.0, 0.0), eps=0.0)
    _close(got, [x - 0.1 * np.sign(g) for x, g in zip(x0, grads[0])], rtol=0)
    # Signum: x <- x - lr * sign(m), m the EMA of gradients
    got = _run(scalopt.GeneralizedSignSGD, grads, x0, lr=0.1, betas=(0.9, 0.0), eps=0.0)
    xs, m = [x.copy() for x in x0], [np.zeros_like(x) for x in x0]
    for gs in grads:
        m = [0.9 * mi + 0.1 * g for mi, g in zip(m, gs)]
        xs = [x - 0.1 * np.sign(mi) for x, mi in zip(xs, m)]
    _close(got, xs, rtol=0)


def test_generalized_signsgd_beta1_zero_is_rmsprop():
    grads, x0 = _grads(30), _x0()
    got = _run(scalopt.GeneralizedSignSGD, grads, x0, lr=1e-2, betas=(0.0, 0.9), eps=1e-8, weight_decay=0.01)
    want = _run(torch.optim.RMSprop, grads, x0, lr=1e-2, alpha=0.9, eps=1e-8, weight_decay=0.01)
    _close(got, want, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.01, 0.999),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 1000),
)
def test_generalized_signsgd_moves_each_coordinate_at_most_lr_over_sqrt(beta1, beta2, scale, seed):
    grads, x0 = _grads(5, seed=seed, scale=scale), _x0()
    lr = 1e-2
    params = [torch.tensor(x, requires_grad=True, dtype=torch.float64) for x in x0]
    opt = scalopt.GeneralizedSignSGD(params, lr=lr, betas=(beta1, beta2), eps=0.0)
    for gs in grads:
        before = [p.detach().clone() for p in params]
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g)
        opt.step()
        for p, b in zip(params, before):
            assert (p.detach() - b).abs().max() <= lr / np.sqrt(1 - beta2) * (1 + 1e-12)


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (scalopt.GenericAdam, {"betas": (0.9, 1.0)}, r"betas\[1\]"),
        (scalopt.GenericAdam, {"betas": (-0.1, 0.9)}, r"betas\[0\]"),
        (scalopt.GenericAdam, {"eps": -1.0}, "eps"),
        (scalopt.GenericAdam, {"weight_decay": -1.0}, "weight_decay"),
        (scalopt.GenericAdam, {"lr_decay": "sqrt"}, "lr_decay"),
        (scalopt.GenericAdam, {"beta2_schedule": 1.5}, "beta2_schedule"),
        (scalopt.ClippedSGD, {"lr": 0.1, "max_norm": 0.0}, "max_norm"),
        (scalopt.ClippedSGD, {"lr": 0.1, "max_norm": 1.0, "momentum": -0.5}, "momentum"),
        (scalopt.ClippedSGD, {"lr": 0.1, "max_norm": 1.0, "nesterov": True}, "nesterov"),
        (scalopt.NormalizedSGD, {"lr": 0.1, "momentum": 1.0}, "momentum"),
        (scalopt.GeneralizedSignSGD, {"betas": (0.9,)}, "betas"),
        (scalopt.GeneralizedSignSGD, {"bias_correction": 1}, "bias_correction"),
    ],
)
def test_invalid_hyperparameters_name_the_argument(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


def test_clip_metrics_count_clipped_steps():
    p = torch.zeros(3, requires_grad=True)
    opt = scalopt.ClippedSGD([p], lr=0.1, max_norm=1.0)
    for scale in (10.0, 0.1, 10.0, 0.1):
        p.grad = torch.full((3,), scale)
        opt.step()
    metrics = opt.metrics()
    assert metrics["clipped_steps"] == 2 and metrics["clip_fraction"] == 0.5
    assert abs(metrics["grad_norm"] - 0.1 * 3**0.5) < 1e-6
