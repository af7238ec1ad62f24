"""The one Adam kernel (fused dispatch), complex and low-precision parameters, the non-finite policy on
updates, and the contract gaps (lr = 0, momentum range, loading another optimizer's state)."""

from __future__ import annotations

import pytest
import torch
from tests.test_conformance import _step

import scalopt
from scalopt.optim import registry
from scalopt.transforms import adam_kernel


def _run(make, params, grads):
    opt = make(params)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        opt.step()
    return opt


def _grads(shapes, steps, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in shapes] for _ in range(steps)]


# -- fused dispatch --------------------------------------------------------------------------------
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_and_adamw_equal_torch_fused_bitwise(decoupled, dtype):
    shapes = [(5, 3), (7,), (2, 2, 2)]
    gen = torch.Generator().manual_seed(1)
    init = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    grads = _grads(shapes, 6, dtype)
    kw = dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    ours_cls, torch_cls = (
        (scalopt.AdamW, torch.optim.AdamW) if decoupled else (scalopt.Adam, torch.optim.Adam)
    )
    a = [x.clone().requires_grad_() for x in init]
    b = [x.clone().requires_grad_() for x in init]
    c = [x.clone().requires_grad_() for x in init]
    _run(lambda p: ours_cls(p, **kw), a, grads)
    _run(lambda p: torch_cls(p, fused=True, **kw), b, grads)
    _run(lambda p: torch_cls(p, foreach=True, **kw), c, grads)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y)  # the same kernel
        torch.testing.assert_close(x, z, rtol=1e-5, atol=1e-6)  # the foreach path, to rounding


def test_fusable_rules():
    x = torch.zeros(3)
    assert adam_kernel.fusable([x], lr=1e-3, eps=1e-8, weight_decay=0.01)
    assert not adam_kernel.fusable([x.half()], lr=1e-3, eps=1e-8, weight_decay=0.0)
    assert not adam_kernel.fusable([x, x.double()], lr=1e-3, eps=1e-8, weight_decay=0.0)
    assert not adam_kernel.fusable([torch.zeros(3, 4).t()], lr=1e-3, eps=1e-8, weight_decay=0.0)
    assert not adam_kernel.fusable([x], lr=1e-3, eps=0.0, weight_decay=0.0)
    assert not adam_kernel.fusable(
        [torch.zeros(3, dtype=torch.complex64)], lr=1e-3, eps=1e-8, weight_decay=0.0
    )


# -- complex parameters ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ours,theirs",
    [
        (lambda p: scalopt.AdamW(p, lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2, foreach=True)),
        (lambda p: scalopt.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True)),
        (
            lambda p: scalopt.GenericAdam(p, lr=1e-2, weight_decay=0.1),
            lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1, foreach=True),
        ),
    ],
)
def test_complex_adam_equals_torch(ours, theirs):
    shapes = [(4, 3), (5,)]
    gen = torch.Generator().manual_seed(2)
    init = [torch.randn(s, generator=gen, dtype=torch.complex64) for s in shapes]
    grads = _grads(shapes, 10, torch.complex64)
    a = [x.clone().requires_grad_() for x in init]
    b = [x.clone().requires_grad_() for x in init]
    _run(ours, a, grads)
    _run(theirs, b, grads)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: scalopt.ClippedSGD(p, lr=0.1, max_norm=0.5, momentum=0.9, weight_decay=0.01),
        lambda p: scalopt.NormalizedSGD(p, lr=0.1),
        lambda p: scalopt.GeneralizedSignSGD(p, lr=1e-2, bias_correction=True),
        lambda p: scalopt.GenericAdam(
            p,
            lr=1e-2,
            lr_decay=scalopt.schedules.InvPower(0.5),
            beta2_schedule=scalopt.schedules.OneMinusInvPower(0.1, 1.0),
        ),
    ],
)
def test_complex_parameters_step_as_their_real_pairs(make):
    """Element-wise methods on a complex parameter == the same method on view_as_real of it."""
    gen = torch.Generator().manual_seed(3)
    init = torch.randn(4, 3, generator=gen, dtype=torch.complex64)
    grads = _grads([(4, 3)], 6, torch.complex64)
    z = init.clone().requires_grad_()
    r = torch.view_as_real(init).clone().requires_grad_()
    _run(make, [z], grads)
    _run(make, [r], [[torch.view_as_real(g[0])] for g in grads])
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=1e-6, atol=1e-7)


# -- low precision and the non-finite policy on updates ---------------------------------------------
def test_generalized_signsgd_fp16_default_eps_stays_finite_and_matches_float32():
    init = torch.full((8,), 0.5)
    grads = [[torch.full((8,), 1e-3)] for _ in range(3)]
    h = init.half().requires_grad_()
    f = init.clone().requires_grad_()
    _run(lambda p: scalopt.GeneralizedSignSGD(p, lr=1e-2), [h], [[g[0].half()] for g in grads])
    _run(lambda p: scalopt.GeneralizedSignSGD(p, lr=1e-2), [f], grads)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h.detach().float(), f.detach(), rtol=1e-3, atol=1e-3)


def test_non_finite_update_raises_naming_the_parameter_and_writes_nothing():
    w = torch.full((3,), 60000.0, dtype=torch.float16, requires_grad=True)
    opt = scalopt.ClippedSGD([("w", w)], lr=1e4, max_norm=float("inf"))
    w.grad = torch.full((3,), -1.0, dtype=torch.float16)
    before = w.detach().clone()
    with pytest.raises(FloatingPointError, match="non-finite update for w"):
        opt.step()
    assert torch.equal(w.detach(), before)


@pytest.mark.parametrize("dtype,big", [(torch.float32, 3e38), (torch.float16, 6e4)])
def test_non_finite_update_is_skipped_with_state_unchanged(dtype, big):
    w = torch.full((3,), big / 2, dtype=dtype, requires_grad=True)
    opt = scalopt.ClippedSGD([w], lr=1e-3, max_norm=float("inf"), momentum=0.9, nonfinite="skip")
    w.grad = torch.full((3,), -1.0, dtype=dtype)
    opt.step()  # finite
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in opt.state[w].items()}
    before = w.detach().clone()
    opt.param_groups[0]["lr"] = big  # x − lr·u overflows the parameter's dtype
    opt.step()
    assert torch.equal(w.detach(), before)
    assert opt.state[w].keys() == state.keys()
    assert all(
        torch.equal(opt.state[w][k], v) if isinstance(v, torch.Tensor) else opt.state[w][k] == v
        for k, v in state.items()
    )
    assert opt.metrics()["skipped_steps"] == 1 and opt.metrics()["steps"] == 1


def test_eps0_adam_skips_a_nan_update():
    q = torch.ones(2, requires_grad=True)
    opt = scalopt.GenericAdam([q], lr=1e-2, eps=0.0, nonfinite="skip")
    q.grad = torch.tensor([1.0, 0.0])  # m/√v = 0/0 in the second coordinate
    opt.step()
    assert torch.equal(q.detach(), torch.ones(2))
    assert opt.state[q]["step"] == 0 and not opt.state[q]["exp_avg"].any()


def test_generic_adam_eps0_raises_before_writing_nan():
    q = torch.ones(2, requires_grad=True)
    opt = scalopt.GenericAdam([("q", q)], lr=1e-2, eps=0.0)
    q.grad = torch.tensor([1.0, 0.0])
    with pytest.raises(FloatingPointError, match="non-finite update for q"):
        opt.step()
    assert torch.equal(q.detach(), torch.ones(2))


# -- contract gaps --------------------------------------------------------------------------------
SCALOPT = [n for n in registry.names() if registry.get(n).scalopt]


@pytest.mark.parametrize("name", SCALOPT)
def test_lr_zero_is_accepted_and_moves_nothing(name):
    torch.manual_seed(0)
    p = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 4)
    opt = registry.build(name, [p], **{**registry.get(name).example, "lr": 0.0})
    before = p.detach().clone()
    for _ in range(3):
        _step(opt, lambda: (x @ p).square().mean())
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("momentum", [1.0, 1.5, -0.1])
def test_clipped_sgd_rejects_momentum_outside_unit_interval(momentum):
    with pytest.raises(ValueError, match="momentum"):
        scalopt.ClippedSGD([torch.zeros(2, requires_grad=True)], lr=0.1, max_norm=1.0, momentum=momentum)


@pytest.mark.parametrize("src,dst", [("adamw", "clipped-sgd"), ("clipped-sgd", "adam"), ("adam", "shampoo")])
def test_loading_another_optimizers_state_says_whose_it_is(src, dst):
    p = torch.randn(3, 2, requires_grad=True)
    a = registry.build(src, [p], **registry.get(src).example)
    p.grad = torch.randn(3, 2)
    a.step()
    b = registry.build(dst, [p], **registry.get(dst).example)
    with pytest.raises(ValueError, match="belongs to a"):
        b.load_state_dict(a.state_dict())


def test_a_skipped_step_leaves_fused_groups_untouched_too():
    """One group on the fused kernel, one (fp16) on the chain whose update overflows: nothing moves."""
    a = torch.ones(3, requires_grad=True)
    h = torch.full((3,), 6e4, dtype=torch.float16, requires_grad=True)
    opt = scalopt.AdamW([{"params": [a]}, {"params": [h], "lr": 1e4}], lr=1e-2, nonfinite="skip")
    a.grad, h.grad = torch.ones(3), torch.full((3,), -1.0, dtype=torch.float16)
    opt.step()
    assert torch.equal(a.detach(), torch.ones(3)) and torch.equal(h.detach(), torch.full((3,), 6e4).half())
    assert opt.state[a]["step"] == 0 and not opt.state[a]["exp_avg"].any()
    assert opt.metrics()["skipped_steps"] == 1
