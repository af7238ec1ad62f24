"""Shampoo's root placement: inline / host / device, root_delay, pending roots across checkpoints."""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from reference.shampoo_ref import shampoo
from scalopt.linalg import inverse_root, newton_root_fixed
from scalopt.optim.shampoo import Shampoo

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (roots on a GPU)")

KW = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-4, precondition_frequency=3, start_preconditioning_step=2)


@pytest.fixture
def one_thread():
    """Bitwise comparisons between threads: the same torch thread count everywhere (1, as the pool's)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _grads(shapes, steps, seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]


def _run(grads, shapes, device="cpu", workers=None, **kw):
    ps = [torch.ones(s, device=device, requires_grad=True) for s in shapes]
    opt = Shampoo(ps, **{**KW, **kw})
    if workers is not None:  # a real pool of several threads, each solving one row range of a batch
        opt._roots.placement.workers = workers
        opt._roots.executor = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
    traj = []
    for gs in grads:
        for p, x in zip(ps, gs):
            p.grad = x.to(device)
        opt.step()
        traj.append([p.detach().cpu().clone() for p in ps])
    return traj, opt


SHAPES = [(6, 5), (6, 5), (4, 3, 2), (7,)]


@pytest.mark.parametrize("method", ["eigh", "newton"])
@pytest.mark.parametrize("delay", [3, 7])
def test_host_roots_of_cpu_params_equal_the_delayed_inline_run_bitwise(one_thread, method, delay):
    grads = _grads(SHAPES, 16, seed=delay)
    kw = dict(root_method=method, root_delay=delay, precondition_1d=True, merge_dims=False)
    ref, ref_opt = _run(grads, SHAPES, root_device="inline", **kw)
    host, opt = _run(grads, SHAPES, root_device="host", workers=3, **kw)
    for t, (a, b) in enumerate(zip(ref, host), start=1):
        for x, y in zip(a, b):
            assert torch.equal(x, y), f"step {t}"
    assert opt.metrics()["root_staleness"] == ref_opt.metrics()["root_staleness"] >= delay
    opt.close()


def test_async_roots_is_host_with_the_default_delay(one_thread):
    grads = _grads(SHAPES, 10, seed=5)
    a, opt_a = _run(grads, SHAPES, async_roots=True)
    b, opt_b = _run(grads, SHAPES, root_device="host")
    assert (opt_a.root_device, opt_a.root_delay) == ("host", 3) == (opt_b.root_device, opt_b.root_delay)
    assert all(torch.equal(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    opt_a.close()
    opt_b.close()


def test_inline_delay_equals_the_float64_reference():
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((5, 4))
    grads = [rng.standard_normal((5, 4)) for _ in range(11)]
    p = torch.tensor(x0, requires_grad=True)
    opt = Shampoo(
        [p], lr=0.1, betas=(0.0, 0.9), eps=1e-3, grafting=None, precondition_frequency=3,
        start_preconditioning_step=2, root_dtype=torch.float64, root_device="inline", root_delay=5,
        merge_dims=False,
    )  # fmt: skip
    ref = shampoo(x0, grads, lr=0.1, beta2=0.9, eps=1e-3, frequency=3, start=2, delay=5)
    for t, (g, r) in enumerate(zip(grads, ref), start=1):
        p.grad = torch.tensor(g)
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-9, atol=1e-10, err_msg=f"step {t}")


def test_defaults_on_cpu_are_synchronous():
    opt = Shampoo([torch.zeros(3, 2, requires_grad=True)])
    assert (opt.root_device, opt.root_delay, opt.root_method) == ("inline", 0, "eigh")


def test_at_most_one_snapshot_per_pending_root_step():
    grads = _grads([(6, 5)], 20, seed=1)
    ps = [torch.ones(6, 5, requires_grad=True)]
    opt = Shampoo(ps, **{**KW, "root_device": "host", "root_delay": 7})
    most = 0
    for gs in grads:
        ps[0].grad = gs[0]
        opt.step()
        most = max(most, max(len(sg.pending) for sg in opt._shape_groups()))
    assert most == math.ceil(7 / 3)  # root steps 2, 3, 6, 9, ...: three of them within any 7 steps
    opt.close()


def test_state_dict_with_pending_host_roots_resumes_bitwise(one_thread):
    shapes = [(5, 4), (7,)]
    grads = _grads(shapes, 14, seed=3)
    kw = dict(root_device="host", root_delay=5, precondition_1d=True, momentum=0.9)
    full, opt_a = _run(grads, shapes, **kw)
    _, opt_b = _run(grads[:7], shapes, **kw)
    params_b = [p.detach().clone() for g in opt_b.param_groups for p in g["params"]]
    buffer = io.BytesIO()
    torch.save({"params": params_b, "opt": opt_b.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert any(k.startswith("block0.pending1") for k in saved["opt"]["state"][0])  # two pending
    ps = [x.clone().requires_grad_() for x in saved["params"]]
    opt_c = Shampoo(ps, **{**KW, **kw})
    opt_c.load_state_dict(saved["opt"])
    for gs in grads[7:]:
        for p, x in zip(ps, gs):
            p.grad = x
        opt_c.step()
    for a, c in zip(full[-1], ps):
        assert torch.equal(a, c.detach())
    for o in (opt_a, opt_b, opt_c):
        o.close()


INVALID = [
    (dict(root_device="gpu"), "root_device"),
    (dict(root_device="device"), "root_device"),  # CPU parameters
    (dict(root_delay=-1), "root_delay"),
    (dict(root_delay=2.5), "root_delay"),
    (dict(root_device="host", root_delay=0), "root_delay"),
    (dict(root_device="host", root_delay=8 * 20 + 1), "root_delay"),
    (dict(root_device="inline", async_roots=True), "root_device"),
]


@pytest.mark.parametrize("kwargs,name", INVALID)
def test_invalid_placement_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Shampoo([torch.zeros(3, 2, requires_grad=True)], **kwargs)


# -- the sync-free coupled Newton of the "device" placement (runs on any device) ---------------------
def test_sync_free_newton_matches_eigh_and_is_independent_of_its_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, 40, generator=g, dtype=torch.float64)
    a = x @ x.mT
    a[1] *= 1e-3
    eps = torch.full((5,), 1e-3, dtype=torch.float64)  # > 1e-6·λ_max: both compute (A + ε·I)^(−1/4)
    roots, ok = newton_root_fixed(a, 4, eps)
    assert ok.tolist() == [True] * 5
    ref = inverse_root(a, 4, 1e-3, method="eigh", dtype=torch.float64).roots
    torch.testing.assert_close(roots, ref, rtol=1e-5, atol=1e-8)
    part, _ = newton_root_fixed(a[2:4], 4, eps[2:4])
    assert torch.equal(part, roots[2:4])
    bad = a.clone()
    bad[0, 0, 0] = float("nan")
    assert newton_root_fixed(bad, 4, eps)[1].tolist() == [False] + [True] * 4


# -- CUDA parameters ---------------------------------------------------------------------------------
@CUDA
@pytest.mark.parametrize("placement", ["host", "device"])
def test_cuda_roots_equal_the_delayed_inline_reference_within_tolerance(placement):
    """Same method (coupled Newton), same delay; tolerance 1e-4 relative on the parameters after 16
    steps (float32 roots of two different Newton variants: the iteration counts differ)."""
    grads = _grads(SHAPES, 16, seed=4)
    kw = dict(root_method="newton", root_delay=3, precondition_1d=True, merge_dims=False)
    ref, _ = _run(grads, SHAPES, device="cuda", root_device="inline", **kw)
    got, opt = _run(grads, SHAPES, device="cuda", root_device=placement, **kw)
    assert opt.root_device == placement
    for a, b in zip(ref[-1], got[-1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    opt.close()


@CUDA
def test_cuda_params_default_to_device_roots():
    opt = Shampoo([torch.zeros(3, 2, device="cuda", requires_grad=True)])
    assert (opt.root_device, opt.root_delay, opt.root_method) == ("device", 20, "newton")
    with pytest.raises(ValueError, match="root_method"):
        Shampoo(
            [torch.zeros(3, 2, device="cuda", requires_grad=True)], root_device="device", root_method="eigh"
        )


# -- the lean step: statistics every k steps, lower-precision preconditioner products ----------------
def test_statistics_every_k_steps_equal_the_float64_reference():
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal((5, 4))
    grads = [rng.standard_normal((5, 4)) for _ in range(12)]
    p = torch.tensor(x0, requires_grad=True)
    opt = Shampoo(
        [p], lr=0.1, betas=(0.0, 0.9), eps=1e-3, grafting=None, precondition_frequency=3,
        start_preconditioning_step=2, root_dtype=torch.float64, merge_dims=False, statistics_frequency=2,
    )  # fmt: skip
    ref = shampoo(x0, grads, lr=0.1, beta2=0.9, eps=1e-3, frequency=3, start=2, statistics_every=2)
    for t, (g, r) in enumerate(zip(grads, ref), start=1):
        p.grad = torch.tensor(g)
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-9, atol=1e-10, err_msg=f"step {t}")
    # the reference itself: with k = 2 the trajectory differs from k = 1 once roots are used
    assert not np.allclose(ref[-1], shampoo(x0, grads, lr=0.1, beta2=0.9, eps=1e-3, frequency=3, start=2)[-1])


def test_bfloat16_products_stay_close_and_state_stays_float32():
    grads = _grads(SHAPES, 8, seed=9)
    ref, _ = _run(grads, SHAPES, merge_dims=False)
    low, opt = _run(grads, SHAPES, merge_dims=False, precondition_precision="bfloat16")
    assert not all(torch.equal(a, b) for a, b in zip(ref[-1], low[-1]))
    for a, b in zip(ref[-1], low[-1]):
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.05)  # bfloat16: 8 bits of mantissa
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["block0.factor0"].dtype == state["block0.root0"].dtype == torch.float32
    tf32, _ = _run(grads, SHAPES, merge_dims=False, precondition_precision="tf32")  # CPU: float32 matmuls
    assert all(torch.equal(a, b) for a, b in zip(ref[-1], tf32[-1]))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(statistics_frequency=0), "statistics_frequency"),
        (dict(statistics_frequency=1.5), "statistics_frequency"),
        (dict(precondition_precision="float16"), "precondition_precision"),
    ],
)
def test_invalid_lean_options_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Shampoo([torch.zeros(3, 2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(root_device="device"), "root_device"),
        (dict(root_delay=5), "root_delay"),
        (dict(precondition_precision="bfloat16"), "precondition_precision"),
    ],
)
def test_soap_takes_inline_or_host_bases_only(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Shampoo([torch.zeros(3, 2, requires_grad=True)], eigenvalue_correction=True, grafting=None, **kwargs)
    opt = Shampoo(
        [torch.zeros(3, 2, requires_grad=True)], eigenvalue_correction=True, grafting=None, async_roots=True
    )
    assert (opt.root_device, opt.root_method) == ("host", "eigh")
