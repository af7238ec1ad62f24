"""Shampoo against its float64 oracle (tests/reference/shampoo_ref.py) and against its graft optimizers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reference.shampoo_ref import blocks, shampoo
from scalopt.optim.shampoo import Shampoo
from scalopt.optim.shampoo.blocking import assign_lpt, plan_param, squeeze_and_merge


def _grads(shape: tuple[int, ...], steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(steps)]


def _run(x0: np.ndarray, grads: list[np.ndarray], **kwargs) -> list[np.ndarray]:
    p = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = Shampoo([p], root_dtype=torch.float64, **kwargs)
    out = []
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        out.append(p.detach().numpy().copy())
    return out


def _close(traj, ref, x0, rtol):
    for t, (a, b) in enumerate(zip(traj, ref), start=1):
        da, db = a - x0, b - x0
        np.testing.assert_allclose(da, db, rtol=rtol, atol=rtol * np.abs(db).max(), err_msg=f"step {t}")


# the oracle's setting: no graft, β1 = 0, no decay, roots every step from step 1, no merging
PLAIN = dict(grafting=None, weight_decay=0.0, precondition_frequency=1, start_preconditioning_step=1)


@pytest.mark.parametrize("root_method,rtol", [("eigh", 1e-9), ("newton", 2e-5)])
@pytest.mark.parametrize("beta2", [0.9, 1.0])
@pytest.mark.parametrize(
    "shape,extra",
    [((5, 7), {}), ((3, 4, 5), {}), ((6,), {"precondition_1d": True})],
    ids=["2d", "3d", "1d"],
)
def test_matches_oracle(shape, extra, beta2, root_method, rtol):
    x0 = np.random.default_rng(0).standard_normal(shape)
    grads = _grads(shape, 5, seed=1)
    eps = 1e-3
    traj = _run(
        x0,
        grads,
        lr=0.1,
        betas=(0.0, beta2),
        eps=eps,
        merge_dims=False,
        root_method=root_method,
        **PLAIN,
        **extra,
    )
    ref = shampoo(x0, grads, lr=0.1, beta2=beta2, eps=eps)
    _close(traj, ref, x0, rtol)


def test_exponent_is_minus_one_quarter_per_side_not_minus_one_half():
    x0 = np.zeros((4, 3))
    grads = _grads((4, 3), 3, seed=2)
    traj = _run(x0, grads, lr=1.0, betas=(0.0, 1.0), eps=1e-4, merge_dims=False, **PLAIN)
    wrong = shampoo(x0[None], [g[None] for g in grads], lr=1.0, eps=1e-4)  # order 3: −1/6
    assert not np.allclose(traj[-1], wrong[-1][0], rtol=1e-3)


def test_all_features_match_oracle():
    """β1, Adam graft with norm matching, decoupled decay, Nesterov momentum, f = 3 from step 2."""
    shape = (5, 4)
    x0 = np.random.default_rng(3).standard_normal(shape)
    grads = _grads(shape, 9, seed=4)
    hyper = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-4, weight_decay=0.1, momentum=0.5, nesterov=True)
    graft = dict(grafting="adam", grafting_beta2=0.9, grafting_eps=1e-8)
    traj = _run(
        x0, grads, **hyper, **graft, precondition_frequency=3, start_preconditioning_step=2, merge_dims=False
    )
    ref = shampoo(
        x0,
        grads,
        lr=0.05,
        beta1=0.9,
        beta2=0.95,
        eps=1e-4,
        weight_decay=0.1,
        momentum=0.5,
        nesterov=True,
        frequency=3,
        start=2,
        **graft,
    )
    _close(traj, ref, x0, 1e-9)


@pytest.mark.parametrize("grafting", ["adagrad", "rmsprop", "sgd"])
def test_other_grafts_and_l2_decay_match_oracle(grafting):
    shape = (3, 6)
    x0 = np.random.default_rng(5).standard_normal(shape)
    grads = _grads(shape, 6, seed=6)
    kw = dict(lr=0.05, eps=1e-4, weight_decay=0.05, grafting=grafting, grafting_beta2=0.8, grafting_eps=1e-6)
    traj = _run(
        x0,
        grads,
        betas=(0.5, 0.9),
        decoupled_weight_decay=False,
        precondition_frequency=2,
        merge_dims=False,
        **kw,
    )
    ref = shampoo(x0, grads, beta1=0.5, beta2=0.9, decoupled=False, frequency=2, start=2, **kw)
    _close(traj, ref, x0, 1e-9)


def test_blocked_parameter_matches_oracle_per_block():
    shape = (7, 5)
    x0 = np.random.default_rng(7).standard_normal(shape)
    grads = _grads(shape, 4, seed=8)
    kw = dict(lr=0.1, eps=1e-3)
    traj = _run(x0, grads, betas=(0.0, 0.9), block_size=3, **{**PLAIN, "grafting": "adam"}, **kw)
    ref = np.repeat(x0[None], len(grads), axis=0)
    cells = blocks(shape, 3)
    assert len(cells) == 6
    for cell in cells:
        ref[(slice(None),) + cell] = shampoo(
            x0[cell], [g[cell] for g in grads], beta2=0.9, grafting="adam", **kw
        )
    _close(traj, list(ref), x0, 1e-9)


@pytest.mark.parametrize(
    "shape,block_size,merged",
    [((4, 3, 5), 15, (4, 15)), ((3, 4), 16, (12,)), ((2, 3, 8), 6, (6, 8)), ((1, 5, 1, 7), 4, (5, 7))],
)
def test_merged_parameter_matches_oracle(shape, block_size, merged):
    assert squeeze_and_merge(shape, block_size, True) == merged
    x0 = np.random.default_rng(9).standard_normal(shape)
    grads = _grads(shape, 4, seed=10)
    kw = dict(lr=0.1, eps=1e-3)
    traj = _run(x0, grads, betas=(0.0, 0.9), block_size=block_size, **PLAIN, **kw)
    xm = x0.reshape(merged)
    ref = np.repeat(xm[None], len(grads), axis=0)
    for cell in blocks(merged, block_size):
        ref[(slice(None),) + cell] = shampoo(
            xm[cell], [g.reshape(merged)[cell] for g in grads], beta2=0.9, **kw
        )
    _close([t.reshape(merged) for t in traj], list(ref), xm, 1e-9)


def test_block_plan_examples_from_algorithms_md():
    assert squeeze_and_merge((64, 3, 3, 3), 1024, True) == (64, 27)
    assert squeeze_and_merge((512, 256, 3, 3), 1024, True) == (512, 256, 9)
    assert squeeze_and_merge((30, 20), 1024, True) == (600,)
    assert squeeze_and_merge((30, 20), 1024, False) == (30, 20)
    kw = dict(block_size=1024, skip_dim=4096, merge_dims=True, precondition_1d=False)
    assert not plan_param((50000, 64), **kw).preconditioned  # embedding rows > skip_dim
    assert not plan_param((128,), **kw).preconditioned
    assert plan_param((128,), **{**kw, "precondition_1d": True}).preconditioned
    assert not plan_param((), **kw).preconditioned
    big = plan_param((2500, 100), **kw)
    assert [b.shape for b in big.blocks] == [(1024, 100), (1024, 100), (452, 100)]


def test_lpt_assignment_is_greedy_and_deterministic():
    assert assign_lpt([5, 1, 4, 3, 3], 2) == [0, 1, 1, 1, 0]  # loads 8 and 8
    assert assign_lpt([1, 1, 1], 3) == [0, 1, 2]
    assert assign_lpt([2, 2], 1) == [0, 0]


# -- the graft alone (preconditioning never started) equals the torch optimizer ----------------------
def _model_params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (2, 3, 4), (5,), (20, 3), ()]
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


GRAFT_CASES = {
    "adam": (
        dict(betas=(0.9, 0.99), grafting="adam", grafting_beta2=0.95),
        lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.9, 0.95), eps=1e-8),
    ),
    "adamw": (
        dict(betas=(0.8, 0.99), grafting="adam", grafting_beta2=0.95, weight_decay=0.1),
        lambda ps, lr: torch.optim.AdamW(ps, lr=lr, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1),
    ),
    "adam-l2": (
        dict(betas=(0.9, 0.99), grafting="adam", weight_decay=0.1, decoupled_weight_decay=False),
        lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
    ),
    "adagrad": (
        dict(betas=(0.0, 0.99), grafting="adagrad", grafting_eps=1e-10),
        lambda ps, lr: torch.optim.Adagrad(ps, lr=lr, eps=1e-10),
    ),
    "rmsprop": (
        dict(betas=(0.0, 0.99), grafting="rmsprop", grafting_beta2=0.9),
        lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.9, eps=1e-8),
    ),
    "sgd-nesterov": (
        dict(betas=(0.0, 0.99), grafting="sgd", momentum=0.9, nesterov=True),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True),
    ),
    "sgd-l2": (
        dict(betas=(0.0, 1.0), grafting="sgd", momentum=0.5, weight_decay=0.01, decoupled_weight_decay=False),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.5, weight_decay=0.01),
    ),
}


@pytest.mark.parametrize("name", list(GRAFT_CASES))
def test_preconditioning_never_started_is_the_graft_optimizer(name):
    kwargs, make = GRAFT_CASES[name]
    ours, theirs = _model_params(0), _model_params(0)
    lr = 0.01
    opt = Shampoo(
        ours, lr=lr, start_preconditioning_step=math.inf, skip_dim=10, precondition_1d=True, **kwargs
    )
    ref = make(theirs, lr)
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=g, dtype=torch.float64)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_grafted_direction_has_the_graft_norm_per_block():
    p = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
    opt = Shampoo(
        [p],
        lr=1.0,
        betas=(0.0, 0.9),
        grafting="sgd",
        block_size=3,
        precondition_frequency=1,
        start_preconditioning_step=1,
        root_dtype=torch.float64,
    )
    g = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    p.grad = g.clone()
    opt.step()
    for rows in (slice(0, 3), slice(3, 6)):
        for cols in (slice(0, 3), slice(3, 4)):
            torch.testing.assert_close(p.detach()[rows, cols].norm(), g[rows, cols].norm())
