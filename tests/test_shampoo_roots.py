"""Shampoo's roots: linalg numerics, failure injection, and asynchronous roots."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from reference.shampoo_ref import shampoo
from scalopt.linalg import inverse_root
from scalopt.linalg import roots as roots_module
from scalopt.optim.shampoo import RootFailureError, Shampoo
from scalopt.optim.shampoo.refresh import InlineExecutor

REAL_EIGH = torch.linalg.eigh


def _spd(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    b = torch.randn(n, d, d + 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return b @ b.mT / d


# -- linalg ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2, 4, 6])
def test_eigh_and_newton_agree_on_well_conditioned_input(p):
    a = _spd(3, 7, seed=p)
    eigh = inverse_root(a, p, 1e-2, method="eigh", dtype=torch.float64)
    newton = inverse_root(a, p, 1e-2, method="newton", dtype=torch.float64)
    assert eigh.ok == newton.ok == [True] * 3
    torch.testing.assert_close(newton.roots, eigh.roots, rtol=1e-5, atol=1e-6)
    x = eigh.roots[0]
    target = torch.linalg.inv(a[0] + 1e-2 * torch.eye(7, dtype=a.dtype))
    torch.testing.assert_close(torch.linalg.matrix_power(x, p), target, rtol=1e-8, atol=1e-10)


def test_float32_failure_is_retried_in_float64_and_a_bad_matrix_is_isolated(monkeypatch):
    def eigh(a):
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("injected float32 failure")
        if bool((a[..., 0, 0] > 1e5).any()):
            raise torch.linalg.LinAlgError("injected failure of the big matrix")
        return REAL_EIGH(a)

    monkeypatch.setattr(torch.linalg, "eigh", eigh)
    a = _spd(3, 4, seed=0, dtype=torch.float32)
    a[1, 0, 0] = 1e6
    res = inverse_root(a, 4, 1e-6)
    assert res.ok == [True, False, True]
    assert "big matrix" in res.reasons[1] and isinstance(res.error, torch.linalg.LinAlgError)
    assert res.roots.dtype == torch.float32 and bool(torch.isfinite(res.roots[[0, 2]]).all())


def test_newton_that_does_not_converge_is_a_failure(monkeypatch):
    monkeypatch.setattr(roots_module, "NEWTON_MAX_ITERS", 1)
    res = inverse_root(_spd(2, 6, seed=1) * 1e3, 4, 1e-6, method="newton", dtype=torch.float64)
    assert res.ok == [False, False] and "did not converge" in res.reasons[0]


# -- failure policy ----------------------------------------------------------------------------------
def _opt(p, **kw):
    base = dict(lr=0.01, betas=(0.0, 0.9), eps=1e-4, precondition_frequency=1, start_preconditioning_step=1)
    return Shampoo([p], merge_dims=False, **{**base, **kw})


def _step(opt, p, seed):
    p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed))
    opt.step()


def test_nonfinite_statistics_raise_with_diagnostics():
    p = torch.zeros(4, 3, requires_grad=True)
    opt = Shampoo([(("layer.weight"), p)], merge_dims=False, precondition_frequency=2)
    _step(opt, p, 0)
    opt.state[p]["block0.factor1"][0, 0] = float("nan")
    with pytest.raises(
        FloatingPointError, match=r"factor 1 of layer\.weight, block 0 of 1 at step 2 \(1 NaN"
    ):
        _step(opt, p, 1)


def test_overflowing_statistics_raise_naming_the_parameter():
    p = torch.zeros(4, 3, requires_grad=True)
    opt = _opt(p)
    p.grad = torch.full((4, 3), 1e30)
    with pytest.raises(
        FloatingPointError, match=r"parameter 0 \(shape \(4, 3\)\).*Inf.*lower the learning rate"
    ):
        opt.step()


class FlakyEigh:
    """torch.linalg.eigh that fails (raises or returns NaN) while ``fail`` is set."""

    def __init__(self, mode: str) -> None:
        self.mode, self.fail = mode, False

    def __call__(self, a):
        if not self.fail:
            return REAL_EIGH(a)
        if self.mode == "raise":
            raise torch.linalg.LinAlgError("injected eigh failure")
        lam, q = REAL_EIGH(a)
        return lam * float("nan"), q


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_failed_roots_keep_the_previous_root_warn_reset_and_raise_after_three(monkeypatch, mode):
    flaky = FlakyEigh(mode)
    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    p, q = torch.zeros(4, 3, requires_grad=True), torch.zeros(4, 3, requires_grad=True)
    opt, graft_only = (
        _opt(p, grafting="adam"),
        _opt(q, grafting="adam", start_preconditioning_step=float("inf")),
    )
    # step 1 fails: identity roots, the graft alone steps (bitwise the graft-only run)
    flaky.fail = True
    with pytest.warns(RuntimeWarning, match="identity before the first success"):
        _step(opt, p, 1)
    _step(graft_only, q, 1)
    assert torch.equal(p, q)
    assert torch.equal(opt.state[p]["block0.root0"], torch.eye(4)) and not opt.state[p]["block0.has_root0"]
    flaky.fail = False
    _step(opt, p, 2)
    assert opt.metrics()["root_consecutive_failures"] == 0
    kept = [opt.state[p][f"block0.root{i}"].clone() for i in range(2)]
    flaky.fail = True
    for t in (3, 4, 5):  # three consecutive failures are tolerated
        with pytest.warns(RuntimeWarning, match=f"{t - 2} consecutive"):
            _step(opt, p, t)
        assert all(torch.equal(opt.state[p][f"block0.root{i}"], kept[i]) for i in range(2))
    flaky.fail = False
    _step(opt, p, 6)  # a success resets the counter
    assert opt.metrics()["root_consecutive_failures"] == 0
    assert not torch.equal(opt.state[p]["block0.root0"], kept[0])
    flaky.fail = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in (7, 8, 9):
            _step(opt, p, t)
    with pytest.raises(RootFailureError, match="4 consecutive") as info:
        _step(opt, p, 10)
    if mode == "raise":
        assert isinstance(info.value.__cause__, torch.linalg.LinAlgError)
    assert opt.metrics()["root_failures"] == 2 * 8


# -- asynchronous roots ------------------------------------------------------------------------------
def _async_run(x0s, grads, executor=None, **kw):
    ps = [torch.tensor(x, requires_grad=True) for x in x0s]
    opt = Shampoo(ps, root_dtype=torch.float64, **kw)
    if executor is not None:
        opt._roots.executor = executor
    out = []
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = torch.tensor(g)
        opt.step()
        out.append([p.detach().numpy().copy() for p in ps])
    opt.close()
    return out, opt


ASYNC = dict(
    lr=0.1, betas=(0.0, 0.9), eps=1e-3, grafting=None, precondition_frequency=3, start_preconditioning_step=2
)


def test_async_roots_equal_the_oracle_with_installation_delayed_one_period():
    rng = np.random.default_rng(0)
    x0s = [rng.standard_normal((5, 4)), rng.standard_normal(6)]
    grads = [[rng.standard_normal(x.shape) for x in x0s] for _ in range(10)]
    traj, opt = _async_run(x0s, grads, merge_dims=False, precondition_1d=True, async_roots=True, **ASYNC)
    for i, x0 in enumerate(x0s):
        ref = shampoo(x0, [g[i] for g in grads], lr=0.1, beta2=0.9, eps=1e-3, frequency=3, start=2, delay=3)
        for t, (a, b) in enumerate(zip(traj, ref), start=1):
            np.testing.assert_allclose(a[i], b, rtol=1e-9, atol=1e-10, err_msg=f"tensor {i}, step {t}")
    assert opt.metrics()["root_staleness"] == 4  # step 10 uses roots of step 6


def test_async_roots_are_deterministic_and_equal_the_delayed_synchronous_run():
    rng = np.random.default_rng(1)
    x0s = [rng.standard_normal((6, 3)), rng.standard_normal((2, 3, 4))]
    grads = [[rng.standard_normal(x.shape) for x in x0s] for _ in range(9)]
    kw = dict(ASYNC, grafting="adam", async_roots=True)
    threaded, _ = _async_run(x0s, grads, **kw)
    inline, _ = _async_run(x0s, grads, executor=InlineExecutor(), **kw)
    for a, b in zip(threaded, inline):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)


def test_async_failure_is_handled_at_install(monkeypatch):
    flaky = FlakyEigh("raise")
    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    p = torch.zeros(4, 3, requires_grad=True)
    opt = _opt(p, async_roots=True, precondition_frequency=2, start_preconditioning_step=2)
    _step(opt, p, 1)
    flaky.fail = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _step(opt, p, 2)  # snapshot; the failing root is not installed yet
        opt._roots.wait_all(opt._shape_groups())
    flaky.fail = False
    _step(opt, p, 3)
    with pytest.warns(RuntimeWarning, match="failed at step 4"):
        _step(opt, p, 4)
    assert not opt.state[p]["block0.has_root0"]
    _step(opt, p, 5)
    _step(opt, p, 6)  # installs the roots of step 4
    assert opt.state[p]["block0.has_root0"] and opt.state[p]["block0.root_step"] == 4
    opt.close()


def test_async_state_dict_with_pending_roots_resumes_bitwise():
    g = torch.Generator().manual_seed(3)
    grads = [[torch.randn(5, 4, generator=g), torch.randn(7, generator=g)] for _ in range(12)]
    kw = dict(lr=0.01, precondition_frequency=3, async_roots=True, precondition_1d=True, momentum=0.9)

    def make():
        ps = [torch.ones(5, 4, requires_grad=True), torch.ones(7, requires_grad=True)]
        return ps, Shampoo(ps, **kw)

    def steps(ps, opt, gs):
        for gg in gs:
            for p, x in zip(ps, gg):
                p.grad = x.clone()
            opt.step()

    ps_a, opt_a = make()
    steps(ps_a, opt_a, grads)
    ps_b, opt_b = make()
    steps(ps_b, opt_b, grads[:7])  # roots of step 6 are pending (installed at step 9)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in ps_b], "opt": opt_b.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert any(k.startswith("block0.pending0") for k in saved["opt"]["state"][0])
    ps_c, opt_c = make()
    with torch.no_grad():
        for p, x in zip(ps_c, saved["params"]):
            p.copy_(x)
    opt_c.load_state_dict(saved["opt"])
    steps(ps_c, opt_c, grads[7:])
    for a, c in zip(ps_a, ps_c):
        assert torch.equal(a, c)
    for o in (opt_a, opt_b, opt_c):
        o.close()
