"""SOAP (Shampoo with eigenvalue_correction=True) against its float64 oracle (tests/reference/soap_ref.py).

The oracle's first basis is eigh of the first gradient's statistics; where that statistic has a
repeated eigenvalue (a non-square matrix: rank-deficient factors) its eigenbasis is not unique and
two correct implementations differ, so the oracle cases use blocks whose factors are full rank
after one step (square matrices, and 3-D tensors whose unfoldings are wide).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from reference.shampoo_ref import blocks
from reference.soap_ref import power_qr, soap
from scalopt.linalg.eigenbasis import eigenbasis
from scalopt.optim import registry
from scalopt.optim.shampoo import Shampoo
from scalopt.optim.shampoo.blocking import squeeze_and_merge

HP = dict(lr=0.1, betas=(0.9, 0.95), shampoo_beta=0.8, eps=1e-8, weight_decay=0.01)
REF = dict(lr=0.1, beta1=0.9, beta2=0.95, shampoo_beta=0.8, eps=1e-8, weight_decay=0.01)


def _grads(shape: tuple[int, ...], steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(steps)]


def _soap(params, **kwargs) -> Shampoo:
    return Shampoo(params, eigenvalue_correction=True, grafting=None, root_dtype=torch.float64, **kwargs)


def _run(x0: np.ndarray, grads: list[np.ndarray], **kwargs) -> list[np.ndarray]:
    p = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = _soap([p], **kwargs)
    out = []
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        out.append(p.detach().numpy().copy())
    opt.close()
    return out


def _close(traj, ref, rtol=1e-9):
    for t, (a, b) in enumerate(zip(traj, ref), start=1):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=f"step {t}")


@pytest.mark.parametrize("async_roots", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("shape", [(5, 5), (3, 4, 5)], ids=["2d", "3d"])
def test_matches_oracle_eigh_then_qr_refreshes(shape, async_roots):
    x0 = np.random.default_rng(0).standard_normal(shape)
    grads = _grads(shape, 9, seed=1)
    traj = _run(x0, grads, precondition_frequency=2, merge_dims=False, async_roots=async_roots, **HP)
    ref = soap(x0, grads, frequency=2, delay=2 if async_roots else 1, **REF)
    _close(traj, ref)


def test_blocked_parameter_matches_oracle_per_block():
    shape = (8, 8)
    x0 = np.random.default_rng(2).standard_normal(shape)
    grads = _grads(shape, 7, seed=3)
    traj = _run(x0, grads, precondition_frequency=3, block_size=4, **HP)
    ref = np.repeat(x0[None], len(grads), axis=0)
    cells = blocks(shape, 4)
    assert len(cells) == 4
    for cell in cells:
        ref[(slice(None),) + cell] = soap(x0[cell], [g[cell] for g in grads], frequency=3, **REF)
    _close(traj, list(ref))


def test_merged_parameter_matches_oracle_and_vectors_run_adam():
    shape, merged = (4, 2, 2), (4, 4)
    assert squeeze_and_merge(shape, 4, True) == merged
    x0 = np.random.default_rng(4).standard_normal(shape)
    grads = _grads(shape, 6, seed=5)
    traj = _run(x0, grads, precondition_frequency=2, block_size=4, **HP)
    ref = soap(x0.reshape(merged), [g.reshape(merged) for g in grads], frequency=2, **REF)
    _close([t.reshape(merged) for t in traj], ref)
    # a vector (graft-only): Adam from step 1, the oracle with k = 0
    b0 = np.random.default_rng(6).standard_normal(5)
    bgrads = _grads((5,), 4, seed=7)
    _close(_run(b0, bgrads, **HP), soap(b0, bgrads, frequency=2, rotated=False, **REF))


def test_identity_basis_is_torch_adamw():
    """Graft-only parameters only (vectors): SOAP is torch's AdamW, ε on √v̂ included."""
    torch.manual_seed(0)
    a = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    opt = _soap([a], lr=0.01, betas=(0.9, 0.95), eps=1e-3, weight_decay=0.1)
    ref = torch.optim.AdamW([b], lr=0.01, betas=(0.9, 0.95), eps=1e-3, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(6, dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_refresh_converges_to_the_exact_eigenbasis_for_a_fixed_statistic():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((6, 6))
    h = torch.tensor(a @ np.diag([9.0, 5.0, 3.0, 2.0, 1.0, 0.5]) @ a.T)  # distinct eigenvalues
    q = torch.tensor(np.linalg.qr(rng.standard_normal((6, 6)))[0])
    order = None
    for _ in range(300):
        res = eigenbasis(h[None], q[None], torch.tensor([False]), dtype=torch.float64)
        assert res.ok == [True]
        q = res.roots[0]
    exact = torch.linalg.eigh(h[None], UPLO="L")[1][0]
    overlap = (exact.T @ q).abs()  # a permutation matrix when the bases agree up to sign and order
    order = overlap.argmax(dim=0)
    assert sorted(order.tolist()) == list(range(6))
    torch.testing.assert_close(overlap, torch.eye(6, dtype=h.dtype)[order].T, atol=1e-8, rtol=0)
    # one refresh agrees with the oracle's power iteration + QR (columns in the previous order)
    q0 = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    qn, sigma = power_qr(h.numpy(), q0)
    ours = eigenbasis(h[None], torch.tensor(q0)[None], torch.tensor([False]), dtype=torch.float64).roots[0]
    np.testing.assert_allclose(np.abs(ours.numpy()[:, sigma]), np.abs(qn), atol=1e-10)


def test_refresh_with_converged_basis_equals_an_exact_eigh_update():
    """A fixed gradient: the statistic's eigenvectors never change, so a warm-started refresh has
    converged and the run equals the oracle whose every refresh is an exact eigh. (G' is diagonal
    here: ε = 1e-3 keeps its rounding-level off-diagonal entries from being amplified by 1/ε.)"""
    shape = (4, 4)
    g = np.random.default_rng(9).standard_normal(shape)
    x0 = np.random.default_rng(10).standard_normal(shape)
    p = torch.tensor(x0, requires_grad=True)
    opt = _soap([p], precondition_frequency=1, merge_dims=False, **{**HP, "eps": 1e-3})
    traj = []
    for _ in range(30):
        p.grad = torch.tensor(g)
        opt.step()
        traj.append(p.detach().numpy().copy())
    _close(traj, soap(x0, [g] * 30, frequency=1, exact=True, **{**REF, "eps": 1e-3}))
    h, q = opt.state[p]["block0.factor0"], opt.state[p]["block0.root0"]
    off = q.T @ h @ q
    torch.testing.assert_close(off, torch.diag(torch.diagonal(off)), atol=1e-10, rtol=0)


def test_resume_in_the_middle_of_a_refresh_period_is_bitwise():
    torch.manual_seed(1)
    w = torch.randn(6, 6, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    grads = [(torch.randn(6, 6), torch.randn(6)) for _ in range(12)]

    def make(params, async_roots):
        return Shampoo(
            params,
            eigenvalue_correction=True,
            grafting=None,
            precondition_frequency=4,
            block_size=4,
            async_roots=async_roots,
        )

    for async_roots in (False, True):
        a = [w.detach().clone().requires_grad_(True), bias.detach().clone().requires_grad_(True)]
        opt = make(a, async_roots)
        for gw, gb in grads[:6]:  # stop at step 6: a refresh at step 5 is pending or installed
            a[0].grad, a[1].grad = gw.clone(), gb.clone()
            opt.step()
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        b = [x.detach().clone().requires_grad_(True) for x in a]
        resumed = make(b, async_roots)
        buf.seek(0)
        resumed.load_state_dict(torch.load(buf, weights_only=True))
        for gw, gb in grads[6:]:
            for ps, o in ((a, opt), (b, resumed)):
                ps[0].grad, ps[1].grad = gw.clone(), gb.clone()
                o.step()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        opt.close()
        resumed.close()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(grafting="adam"), "grafting must be None"),
        (dict(grafting=None, start_preconditioning_step=5), "start_preconditioning_step must be None"),
        (dict(grafting=None, root_method="newton"), "root_method must be 'eigh'"),
        (dict(grafting=None, betas=(0.9, 1.0)), r"betas\[1\] must be < 1"),
        (dict(grafting=None, shampoo_beta=1.5), "shampoo_beta"),
        (dict(grafting=None, eigenvalue_correction="yes"), "eigenvalue_correction"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    p = torch.zeros(3, 3, requires_grad=True)
    kwargs = {"eigenvalue_correction": True, **kwargs}
    with pytest.raises(ValueError, match=match):
        Shampoo([p], **kwargs)


def test_a_param_group_with_a_graft_is_rejected():
    p, q = torch.zeros(3, 3, requires_grad=True), torch.zeros(2, 2, requires_grad=True)
    opt = Shampoo([p], eigenvalue_correction=True, grafting=None)
    with pytest.raises(ValueError, match="grafting must be None"):
        opt.add_param_group({"params": [q], "grafting": "adam"})


def test_registry_entry_is_shampoo_with_eigenvalue_correction():
    p = torch.zeros(3, 3, requires_grad=True)
    opt = registry.build("soap", [p])
    assert isinstance(opt, Shampoo) and opt.eigenvalue_correction
    group = opt.param_groups[0]
    assert group["grafting"] is None and group["betas"] == (0.95, 0.95) and group["eps"] == 1e-8
    assert registry.hyperparameters("soap")["lr"] == 3e-3  # what `scalopt list --optimizer soap` shows
    with pytest.raises(ValueError, match="grafting must be None"):
        registry.build("soap", [p], grafting="adam")
    with pytest.raises(ValueError, match="eigenvalue_correction=True"):
        registry.build("soap", [p], eigenvalue_correction=False)


def test_a_failing_basis_warns_and_leaves_adam_in_the_original_coordinates(monkeypatch):
    """eigh raising (float32 and the float64 retry): the identity basis stays, so the block runs
    AdamW one step behind (its first step waits for a basis), and the failures are counted."""

    def broken(*args, **kwargs):
        raise RuntimeError("eigh failed")

    monkeypatch.setattr(torch.linalg, "eigh", broken)
    torch.manual_seed(2)
    a = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    opt = _soap([a], lr=0.01, betas=(0.9, 0.95), eps=1e-3, precondition_frequency=2, merge_dims=False)
    ref = torch.optim.AdamW([b], lr=0.01, betas=(0.9, 0.95), eps=1e-3, weight_decay=0.0)
    grads = [torch.randn(4, 4, dtype=torch.float64) for _ in range(5)]
    with pytest.warns(RuntimeWarning, match="eigenbases failed"):
        for t, g in enumerate(grads):
            a.grad = g.clone()
            opt.step()
            if t > 0:
                b.grad = g.clone()
                ref.step()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert opt.metrics()["root_failures"] >= 2 and not opt.state[a]["block0.has_root0"]
