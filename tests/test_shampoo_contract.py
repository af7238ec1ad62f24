"""Shampoo and the torch.optim contract: groups, schedulers, checkpoints, no-ops, validation."""

from __future__ import annotations

import io
import math

import pytest
import torch

from scalopt.optim.shampoo import Shampoo

SHAPES = [(300, 8), (10, 6), (4, 3, 3, 3), (6,), (12, 70)]  # embedding (skip), matrix, conv, vector, blocked
KW = dict(lr=0.01, precondition_frequency=4, skip_dim=200, block_size=32, momentum=0.9, weight_decay=0.01)


def _params(seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in SHAPES]


def _grads(params, t: int) -> None:
    g = torch.Generator().manual_seed(100 + t)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def _train(opt, params, steps: range) -> None:
    for t in steps:
        _grads(params, t)
        opt.step()


def _roundtrip(sd):
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("at", [6, 8])  # mid-period and right after a root step
def test_resume_continues_bitwise(at):
    a = _params()
    opt_a = Shampoo(a, **KW)
    _train(opt_a, a, range(12))
    b = _params()
    opt_b = Shampoo(b, **KW)
    _train(opt_b, b, range(at))
    saved = _roundtrip({"params": [p.detach() for p in b], "opt": opt_b.state_dict()})
    c = _params(seed=5)
    with torch.no_grad():
        for p, x in zip(c, saved["params"]):
            p.copy_(x)
    opt_c = Shampoo(c, **KW)
    opt_c.load_state_dict(saved["opt"])
    assert opt_c.metrics() == opt_b.metrics()
    _train(opt_c, c, range(at, 12))
    for x, y in zip(a, c):
        assert torch.equal(x, y)
    state = opt_a.state_dict()["state"]
    assert {"step", "block0.factor0", "block0.root1", "block0.exp_avg", "block0.momentum_buffer"} <= set(
        state[1]
    )
    assert set(state[0]) == {"step", "exp_avg", "exp_avg_sq", "momentum_buffer"}  # the embedding: graft alone


def test_state_is_per_parameter_views_of_the_stacks():
    p = _params()
    opt = Shampoo(p, **KW)
    _train(opt, p, range(4))
    blocked = opt.state[p[4]]
    assert {f"block{b}.factor0" for b in range(3)} <= set(blocked)  # 70 columns: three 32-blocks
    assert blocked["block2.factor1"].shape == (6, 6)
    assert (
        blocked["block0.factor0"].untyped_storage().data_ptr()
        == blocked["block1.factor0"].untyped_storage().data_ptr()
    )


def test_graft_only_state_is_views_of_one_flat_buffer():
    p = _params()
    opt = Shampoo(p, **{**KW, "precondition_1d": False})
    _train(opt, p, range(3))
    emb, vec = opt.state[p[0]], opt.state[p[3]]  # (300, 8) > skip_dim and a vector: graft alone
    assert emb["exp_avg"].shape == (300, 8) and vec["exp_avg_sq"].shape == (6,)
    assert emb["exp_avg"].untyped_storage().data_ptr() == vec["exp_avg"].untyped_storage().data_ptr()
    sd = _roundtrip(opt.state_dict())
    assert sd["state"][3]["momentum_buffer"].shape == (6,)


def test_param_groups_and_scheduler():
    p = _params()
    opt = Shampoo(
        [{"params": p[:2], "grafting": "sgd", "lr": 0.1}, {"params": p[2:]}], **{**KW, "momentum": 0.0}
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.0)
    _train(opt, p, range(2))
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[1]["lr"] == 0.0
    before = [x.detach().clone() for x in p]
    _train(opt, p, range(2, 6))  # a root step with lr 0 moves nothing
    for x, y in zip(before, p):
        assert torch.equal(x, y)


def test_add_param_group_mid_training():
    p = _params()
    opt = Shampoo(p[:3], **KW)
    _train(opt, p[:3], range(3))
    opt.add_param_group({"params": p[3:], "lr": 0.05, "precondition_1d": True})
    before = p[4].detach().clone()
    _train(opt, p, range(3, 9))
    assert not torch.equal(before, p[4])
    assert opt.state[p[3]]["step"] == 6 and opt.state[p[0]]["step"] == 9
    assert opt.state[p[3]]["block0.has_root0"]  # its own first root step was its step 4


def test_zero_grads_and_missing_grads_are_no_ops():
    p = _params()
    opt = Shampoo(p, **{**KW, "weight_decay": 0.0, "precondition_frequency": 1})
    before = [x.detach().clone() for x in p]
    opt.step()
    assert not opt.state
    for x in p:
        x.grad = torch.zeros_like(x)
    opt.step()
    for x, y in zip(before, p):
        assert torch.equal(x, y)
    _train(opt, p, range(3))
    frozen, kept = p[1], p[1].detach().clone()
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[frozen].items()}
    _grads(p, 7)
    frozen.grad = None
    opt.step()  # the plan is rebuilt without it; its state is kept, detached from the stacks
    assert torch.equal(frozen, kept)
    for k, v in opt.state[frozen].items():
        assert torch.equal(v, state[k]) if torch.is_tensor(v) else v == state[k]
    _train(opt, p, range(8, 10))  # and back: its state continues
    assert opt.state[frozen]["step"] == state["step"] + 2


def test_structural_option_cannot_change_after_first_step():
    p = _params()
    opt = Shampoo(p, **KW)
    _train(opt, p, range(1))
    opt.param_groups[0]["block_size"] = 16
    with pytest.raises(ValueError, match="block_size"):
        _train(opt, p, range(1, 2))


def test_bfloat16_and_float64_parameters():
    for dtype in (torch.bfloat16, torch.float64):
        p = _params(dtype=dtype)
        opt = Shampoo(p, **KW)
        _train(opt, p, range(5))
        assert all(x.dtype == dtype and bool(torch.isfinite(x).all()) for x in p)
        stats = opt.state[p[1]]["block0.factor0"]
        assert stats.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


def test_closure_and_named_parameters():
    model = torch.nn.Linear(4, 3)
    opt = Shampoo(model.named_parameters(), lr=0.01, precondition_frequency=1)
    x, y = torch.randn(8, 4), torch.randn(8, 3)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    first = opt.step(closure)
    for _ in range(20):
        last = opt.step(closure)
    assert last < first


INVALID = [
    ("lr", -1.0),
    ("lr", float("nan")),
    ("betas", (0.9,)),
    ("betas", (1.0, 0.9)),
    ("betas", (0.9, 1.5)),
    ("eps", -1e-12),
    ("weight_decay", -0.1),
    ("decoupled_weight_decay", 1),
    ("momentum", 1.0),
    ("nesterov", "yes"),
    ("precondition_frequency", 0),
    ("precondition_frequency", 2.5),
    ("start_preconditioning_step", 0),
    ("block_size", 0),
    ("skip_dim", -3),
    ("merge_dims", None),
    ("precondition_1d", 1),
    ("grafting", "lamb"),
    ("grafting_beta2", 1.0),
    ("grafting_eps", -1.0),
    ("root_method", "svd"),
    ("root_dtype", torch.float16),
    ("async_roots", "no"),
    ("comm", object()),
    ("nonfinite", "ignore"),
]


@pytest.mark.parametrize("name,value", INVALID)
def test_invalid_arguments_raise_naming_the_argument(name, value):
    with pytest.raises(ValueError, match=name):
        Shampoo(_params(), **{name: value})


def test_nesterov_needs_momentum_and_groups_are_validated():
    with pytest.raises(ValueError, match="nesterov"):
        Shampoo(_params(), nesterov=True)
    opt = Shampoo(_params())
    with pytest.raises(ValueError, match="grafting"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "grafting": "lars"})
    assert len(opt.param_groups) == 1
    Shampoo(_params(), start_preconditioning_step=math.inf)  # never: the graft alone
