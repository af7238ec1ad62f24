"""The torch.optim contract, checked for every scalopt optimizer in the registry.

Optimizers with a closure protocol (``scalopt.core.closure``: they differentiate the loss themselves)
are stepped through ``_step`` with a closure that returns the loss without calling backward (and,
for "loss+sample", a ``sample`` that here evaluates the same data: the tests need a deterministic
objective). Where a test sets gradients by hand, such optimizers get a loss with that gradient.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from scalopt.core.closure import LOSS_AND_SAMPLE, closure_protocol
from scalopt.optim import registry

ENTRIES = [e for e in registry.OPTIMIZERS.values() if e.scalopt]
IDS = [e.name for e in ENTRIES]


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return model


def _data(seed: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=g, dtype=dtype), torch.randn(32, 3, generator=g, dtype=dtype)


def _loss(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = data
    return torch.nn.functional.mse_loss(model(x), y)


def _step(opt: torch.optim.Optimizer, loss_fn) -> torch.Tensor:
    """One step on ``loss_fn()``: backward then step(), or step(closure[, sample]) where asked."""
    protocol = closure_protocol(opt)
    if protocol is None:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss
    return opt.step(loss_fn, loss_fn) if protocol == LOSS_AND_SAMPLE else opt.step(loss_fn)


def _train(opt: torch.optim.Optimizer, model: torch.nn.Module, steps: int, data=None) -> list[float]:
    data = data or _data()
    losses = []
    for _ in range(steps):
        loss = _step(opt, lambda: _loss(model, data))
        losses.append(float(loss.detach()))
    return losses


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_decreases_loss(entry):
    model = _model()
    opt = entry.build(model.parameters(), **entry.example)
    losses = _train(opt, model, 30)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_non_contiguous_param_matches_contiguous(entry):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 4, generator=g)
    a = base.t().contiguous().requires_grad_()
    b = base.clone().t().detach().requires_grad_()  # a leaf with transposed strides
    assert not b.is_contiguous()
    oa, ob = entry.build([a], **entry.example), entry.build([b], **entry.example)
    for _ in range(5):
        grad = torch.randn(4, 6, generator=g)
        if entry.closure is None:
            a.grad, b.grad = grad.clone(), grad.clone()
            oa.step()
            ob.step()
        else:
            for x, o in ((a, oa), (b, ob)):
                anchor = x.detach().clone()
                _step(o, lambda x=x, a=anchor, g=grad: 0.5 * (x - a).square().sum() + (x * g).sum())
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_param_groups_and_scheduler(entry):
    model = _model()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    opt = entry.build(
        [{"params": first}, {"params": second, "lr": 0.0 + entry.example["lr"] / 2}], **entry.example
    )
    assert opt.param_groups[1]["lr"] == entry.example["lr"] / 2
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.0 if epoch >= 1 else 1.0)
    _train(opt, model, 2)
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
    before = _params(model)
    _train(opt, model, 2)
    for p, q in zip(before, model.parameters()):
        torch.testing.assert_close(p, q.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_params_without_grad_and_zero_grad_are_untouched(entry):
    model = _model()
    opt = entry.build(model.parameters(), **entry.example)
    before = _params(model)
    frozen = model[2].weight
    if entry.closure is None:
        opt.step()  # no gradients at all: a no-op
        assert not opt.state
        opt.zero_grad()
        _loss(model, _data()).backward()
        frozen.grad = None
        opt.step()
    else:
        _step(opt, lambda: torch.zeros((), requires_grad=True))  # a loss no parameter enters: a no-op
        assert not opt.state and _params(model)[0].equal(before[0])
        frozen.requires_grad_(False)
        _step(opt, lambda: _loss(model, _data()))
    torch.testing.assert_close(frozen.detach(), before[2], rtol=0, atol=0)
    assert frozen not in opt.state


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_state_dict_round_trip_weights_only(entry):
    torch.manual_seed(0)
    model_a, model_b = _model(), _model()
    opt_a = entry.build(model_a.parameters(), **entry.example)
    _train(opt_a, model_a, 4)
    buffer = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model_b.load_state_dict(saved["model"])
    opt_b = entry.build(model_b.parameters(), **entry.example)
    opt_b.load_state_dict(saved["opt"])
    assert opt_b.metrics() == opt_a.metrics()
    _train(opt_a, model_a, 4)
    _train(opt_b, model_b, 4)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    # determinism: the same run twice gives the same state_dict
    model_c = _model()
    opt_c = entry.build(model_c.parameters(), **entry.example)
    _train(opt_c, model_c, 8)
    sa, sc = opt_a.state_dict()["state"], opt_c.state_dict()["state"]
    for k in sa:
        for name, value in sa[k].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, sc[k][name], rtol=0, atol=0)
            else:
                assert value == sc[k][name]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_add_param_group(entry):
    model = _model()
    opt = entry.build(model[0].parameters(), **entry.example)
    _train(opt, model, 2)
    opt.add_param_group({"params": model[2].parameters(), "lr": entry.example["lr"] * 2})
    assert opt.param_groups[1]["lr"] == entry.example["lr"] * 2
    before = model[2].weight.detach().clone()
    _train(opt, model, 2)
    assert not torch.equal(before, model[2].weight.detach())
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": -1.0})
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_step_hooks_and_closure(entry):
    model = _model()
    opt = entry.build(model.parameters(), **entry.example)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    data = _data()

    def closure():
        opt.zero_grad()
        loss = _loss(model, data)
        loss.backward()
        return loss

    loss = opt.step(closure) if entry.closure is None else _step(opt, lambda: _loss(model, data))
    assert calls == ["pre", "post"]
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_bfloat16_params(entry):
    model = _model(dtype=torch.bfloat16)
    opt = entry.build(model.parameters(), **entry.example)
    losses = _train(opt, model, 20, data=_data(dtype=torch.bfloat16))
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@pytest.mark.parametrize("bad", [-1.0, float("nan"), "0.1"])
def test_invalid_lr_raises(entry, bad):
    kwargs = {**entry.example, "lr": bad}
    with pytest.raises(ValueError, match="lr"):
        entry.build(_model().parameters(), **kwargs)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_invalid_nonfinite_policy_raises(entry):
    with pytest.raises(ValueError, match="nonfinite"):
        entry.build(_model().parameters(), **entry.example, nonfinite="ignore")


def _step_with_bad_gradient(opt, model, param, index, value) -> None:
    """A step whose gradient of ``param`` at ``index`` is ``value`` (NaN/inf), the rest ordinary."""
    if closure_protocol(opt) is None:
        opt.zero_grad()
        _loss(model, _data()).backward()
        param.grad[index] = value
        opt.step()
        return
    mask = torch.zeros_like(param)
    mask[index] = value
    _step(opt, lambda: _loss(model, _data()) + (param * mask).sum())


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_nonfinite_gradient_raises_with_name_and_changes_nothing(entry):
    model = _model()
    opt = entry.build(model.named_parameters(), **entry.example)
    _train(opt, model, 2)
    before = _params(model)
    state_before = {
        k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in s.items()} for k, s in opt.state.items()
    }
    with pytest.raises(FloatingPointError, match=r"2\.bias"):
        _step_with_bad_gradient(opt, model, model[2].bias, (0,), float("nan"))
    for p, q in zip(before, model.parameters()):
        assert torch.equal(p, q.detach())
    for k, s in opt.state.items():
        for n, v in s.items():
            assert torch.equal(v, state_before[k][n]) if torch.is_tensor(v) else v == state_before[k][n]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_nonfinite_unnamed_parameter_reports_index_and_shape(entry):
    model = _model()
    opt = entry.build(model.parameters(), **entry.example)
    with pytest.raises(FloatingPointError, match=r"parameter 0 \(shape \(5, 6\)\)"):
        _step_with_bad_gradient(opt, model, model[0].weight, (0, 0), float("inf"))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_nonfinite_skip_counts_and_leaves_everything(entry):
    model = _model()
    opt = entry.build(model.parameters(), **entry.example, nonfinite="skip")
    before = _params(model)
    _step_with_bad_gradient(opt, model, model[0].weight, (0, 0), float("nan"))
    assert not opt.state  # lazily created state was not even created
    for p, q in zip(before, model.parameters()):
        assert torch.equal(p, q.detach())
    assert opt.metrics()["skipped_steps"] == 1
    _train(opt, model, 2)
    assert opt.metrics()["steps"] == 2


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_sparse_gradient_is_a_clear_error(entry):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = entry.build(emb.parameters(), **entry.example)
    with pytest.raises(RuntimeError, match="sparse"):
        _step(opt, lambda: emb(torch.tensor([1, 2])).square().sum())


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_metrics_are_plain_floats(entry):
    model = _model()
    opt = entry.build(model.parameters(), **entry.example)
    _train(opt, model, 3)
    metrics = opt.metrics()
    assert metrics["steps"] == 3 and metrics["grad_norm"] > 0
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_param_groups_hold_plain_values(entry):
    opt = entry.build(_model().parameters(), **entry.example)
    for group in opt.param_groups:
        for key, value in group.items():
            if key not in ("params", "param_names"):
                assert isinstance(value, (int, float, bool, str, tuple, type(None))), (key, value)


@pytest.mark.parametrize(
    "entry", [e for e in ENTRIES if e.closure], ids=[e.name for e in ENTRIES if e.closure]
)
def test_closure_optimizers_name_what_is_missing(entry):
    model = _model()
    opt = entry.build(model.parameters(), **entry.example)
    with pytest.raises(ValueError, match="needs closure"):
        opt.step()
    if entry.closure == LOSS_AND_SAMPLE:
        with pytest.raises(ValueError, match="needs sample"):
            opt.step(lambda: _loss(model, _data()))
    assert not opt.state


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_loads_its_own_state_after_setstate(entry):
    # copy.deepcopy and unpickling run Optimizer.__setstate__, which adds "differentiable" to
    # defaults (the Hugging Face Trainer resumes through this path); the saved groups never carry it
    model = _model()
    opt = entry.build(model.parameters(), **entry.example)
    _train(opt, model, 2)
    saved = opt.state_dict()
    opt.__setstate__(opt.__getstate__())
    assert "differentiable" in opt.defaults
    opt.load_state_dict(saved)
    assert opt.state_dict()["param_groups"] == saved["param_groups"]
