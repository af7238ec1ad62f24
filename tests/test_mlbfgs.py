"""mL-BFGS: the two-loop recursion, damping, the SGD warm-up, the oracle, blocks, resume."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import scalopt
from reference.mlbfgs_ref import damp, dense_inverse_bfgs, mlbfgs
from scalopt.linalg import damp_pair, two_loop

SHAPES = [(4, 3), (3,), (2, 2, 2), ()]
KW = dict(lr=0.05, momentum=0.5, weight_decay=0.01, update_freq=2, history=3, betas=(0.9, 0.95),
          pair_momentum=0.3, damping=0.05)  # fmt: skip


def _pairs(n: int, m: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    hess = a @ a.T + n * np.eye(n)
    out = []
    for _ in range(m):
        s = rng.standard_normal(n)
        out.append((s, hess @ s))
    return out


@pytest.mark.parametrize("m", [1, 2, 5])
def test_two_loop_equals_dense_inverse_bfgs(m):
    pairs = _pairs(7, m)
    q = np.random.default_rng(1).standard_normal(7)
    s = torch.tensor(np.stack([p[0] for p in pairs]))
    y = torch.tensor(np.stack([p[1] for p in pairs]))
    rho = 1.0 / (s * y).sum(1)
    gamma = float(s[-1] @ y[-1] / (y[-1] @ y[-1]))
    got = two_loop(torch.tensor(q), s, y, rho, gamma).numpy()
    np.testing.assert_allclose(got, dense_inverse_bfgs(pairs) @ q, rtol=1e-10, atol=1e-12)
    # the secant equation for the newest pair: H y_m = s_m
    np.testing.assert_allclose(two_loop(y[-1], s, y, rho, gamma).numpy(), pairs[-1][0], rtol=1e-9)


def test_two_loop_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="two_loop"):
        two_loop(torch.zeros(3), torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(2), 1.0)


@pytest.mark.parametrize(
    "scale, expect_phi",
    [(-1.0, 0.99 / 2.0), (0.001, 0.99 / 0.999), (1.0, 0.9), (3.0, 0.25)],
    ids=["negative-curvature", "tiny-curvature", "inside", "too-curved"],
)
def test_damping_cases(scale, expect_phi):
    s = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    y = scale * s
    damped, tau, phi = damp_pair(s, y, damping=0.1)
    assert tau == pytest.approx(scale)
    assert phi == pytest.approx(min(expect_phi, 0.9))
    np.testing.assert_allclose(damped.numpy(), damp(s.numpy(), y.numpy(), 0.1))
    ratio = float(s @ damped / (s @ s))
    assert 0.01 - 1e-12 <= ratio <= 1.5 + 1e-12  # positive, bounded curvature after damping


def _params(dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in SHAPES]


def _grads(steps: int, dtype=torch.float64) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(s, generator=g, dtype=dtype) for s in SHAPES] for _ in range(steps)]


def _run(opt, params, grads) -> None:
    for gs in grads:
        for p, gr in zip(params, gs):
            p.grad = gr.clone()
        opt.step()


@pytest.mark.parametrize("blocks", [None, [[0, 2], [1]]], ids=["per-parameter", "custom-with-unblocked"])
def test_matches_oracle(blocks):
    params = _params()
    grads = _grads(9)
    spec = None if blocks is None else [[params[i] for i in b] for b in blocks]
    opt = scalopt.MLBFGS(params, blocks=spec, **KW)
    start = [p.detach().numpy().copy() for p in params]
    _run(opt, params, grads)
    ref = mlbfgs(
        start,
        [[g.numpy() for g in gs] for gs in grads],
        blocks=[[i] for i in range(len(SHAPES))] if blocks is None else blocks,
        lr=KW["lr"], momentum=KW["momentum"], weight_decay=KW["weight_decay"], update_freq=2, history=3,
        beta_p=0.9, beta_g=0.95, beta_m=0.3, damping=0.05,
    )  # fmt: skip
    assert opt.metrics()["pairs_accepted"] > 3  # the FIFO filled and dropped its oldest pairs
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-9, atol=1e-12)


def test_warm_up_is_torch_sgd_until_the_first_pair():
    """Pairs need a snapshot and a second one: until step 2T the step is SGD(momentum, wd)."""
    params, ref = _params(torch.float32), _params(torch.float32)
    opt = scalopt.MLBFGS(params, lr=0.1, momentum=0.9, weight_decay=0.01, update_freq=3)
    sgd = torch.optim.SGD(ref, lr=0.1, momentum=0.9, weight_decay=0.01)
    grads = _grads(7, torch.float32)
    for t, gs in enumerate(grads, start=1):
        _run(opt, params, [gs])
        _run(sgd, ref, [gs])
        same = all(torch.equal(p, r) for p, r in zip(params, ref))
        assert same == (t < 6), t
    assert opt.metrics()["pairs_accepted"] == len(SHAPES)


def test_unit_direction_once_pairs_exist():
    params = _params()
    opt = scalopt.MLBFGS(params, lr=0.1, momentum=0.0, update_freq=1)
    grads = _grads(4)
    _run(opt, params, grads[:3])
    before = [p.detach().clone() for p in params]
    _run(opt, params, grads[3:])
    step = torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, params)])
    assert float(step.norm()) == pytest.approx(0.1, rel=1e-12)


def test_pairs_with_s_zero_are_skipped():
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = scalopt.MLBFGS([p], lr=0.0, momentum=0.0, update_freq=1)  # lr 0: s = 0, every pair skipped
    _run(opt, [p], [[torch.ones(3, dtype=torch.float64)]] * 4)
    assert opt.metrics()["pairs_skipped"] == 3 and opt.metrics()["pairs_accepted"] == 0


def test_resume_is_bitwise():
    params = _params(torch.float32)
    grads = _grads(10, torch.float32)
    opt = scalopt.MLBFGS(params, **KW)
    _run(opt, params, grads[:5])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    clone = [p.detach().clone().requires_grad_() for p in params]
    resumed = scalopt.MLBFGS(clone, **KW)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _run(opt, params, grads[5:])
    _run(resumed, clone, grads[5:])
    for a, b in zip(params, clone):
        assert torch.equal(a, b)
    assert opt.metrics() == resumed.metrics()


def test_partial_block_gradients_are_a_clear_error():
    params = _params()
    opt = scalopt.MLBFGS(params, blocks=[params[:2]])
    params[0].grad = torch.ones_like(params[0])
    with pytest.raises(RuntimeError, match="block 0 has gradients for 1 of its 2"):
        opt.step()
    assert not opt.state


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(update_freq=0), "update_freq"),
        (dict(history=0), "history"),
        (dict(betas=(0.9, 1.5)), "betas"),
        (dict(pair_momentum=1.0), "pair_momentum"),
        (dict(damping=-0.1), "damping"),
        (dict(momentum=1.0), "momentum"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(blocks="all"), "blocks"),
        (dict(blocks=[[]]), "blocks"),
        (dict(blocks=[[torch.zeros(2)]]), "not a parameter"),
        (dict(comm=object()), "comm"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scalopt.MLBFGS(_params(), **kwargs)


def test_duplicate_and_mixed_blocks_raise():
    params = _params()
    with pytest.raises(ValueError, match="already in an earlier block"):
        scalopt.MLBFGS(params, blocks=[[params[0]], [params[0]]])
    half = torch.zeros(2, dtype=torch.float32, requires_grad=True)
    with pytest.raises(ValueError, match="mixes dtypes"):
        scalopt.MLBFGS([params[0], half], blocks=[[params[0], half]])
