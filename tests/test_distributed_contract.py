"""The torch.optim contract over every distributed wrapper, with a one-rank Comm."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import scalopt
from scalopt.core.comm import SingleComm
from scalopt.distributed import CELGC, DataParallelOptimizer, LocalSGD, OneBitAdam, OverlapLocalSGD

WRAPPERS = {
    "data_parallel_adam": lambda m, c: DataParallelOptimizer(scalopt.Adam(m.parameters(), lr=1e-2), comm=c),
    "data_parallel_sgd": lambda m, c: DataParallelOptimizer(
        torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), comm=c, module=m
    ),
    "local_sgd": lambda m, c: LocalSGD(
        torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), comm=c, period=3, module=m
    ),
    "onebit_adam": lambda m, c: OneBitAdam(m.parameters(), comm=c, lr=1e-2, freeze_step=2, module=m),
    "celgc": lambda m, c: CELGC(m.parameters(), comm=c, lr=0.1, max_norm=0.5, period=2, momentum=0.9),
    "overlap": lambda m, c: OverlapLocalSGD(
        torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), comm=c, period=2, anchor_momentum=0.5
    ),
}


def model_and_data(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2))
    gen = torch.Generator().manual_seed(seed)
    data = [torch.randn(5, 4, generator=gen) for _ in range(8)]
    return model, data


def steps(model, opt, data):
    for x in data:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def params_of(model):
    return torch.cat([t.detach().reshape(-1) for t in model.state_dict().values() if t.is_floating_point()])


@pytest.fixture(params=sorted(WRAPPERS))
def make(request):
    return WRAPPERS[request.param]


def test_is_an_optimizer_sharing_param_groups_and_state(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is opt.optimizer.param_groups
    steps(model, opt, data[:2])
    assert opt.state is opt.optimizer.state and len(opt.state) > 0
    assert opt.defaults is opt.optimizer.defaults
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_moves_parameters_downhill(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    x = data[0]
    before = model(x).square().mean().item()
    for _ in range(5):
        steps(model, opt, [x])
    assert model(x).square().mean().item() < before


def test_lr_scheduler_drives_the_inner_optimizer(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lr0 = opt.param_groups[0]["lr"]
    for x in data[:3]:
        steps(model, opt, [x])
        sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(lr0 / 8)


def test_step_hooks_fire_on_the_wrapper(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    calls = []
    pre = opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    post = opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    steps(model, opt, data[:2])
    assert calls == ["pre", "post", "pre", "post"]
    pre.remove()
    post.remove()
    steps(model, opt, data[:1])
    assert len(calls) == 4


def test_state_dict_round_trip_with_weights_only_load_resumes_exactly(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    steps(model, opt, data[:3])  # mid-period for every wrapper
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    steps(model, opt, data[3:])
    expected = params_of(model)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert saved["opt"]["distributed"]["world_size"] == 1
    model2, _ = model_and_data(seed=1)
    opt2 = make(model2, SingleComm())
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups is opt2.optimizer.param_groups  # still shared after loading
    steps(model2, opt2, data[3:])
    assert torch.equal(params_of(model2), expected)
    assert opt2.counters == opt.counters


def test_state_dict_is_deterministic(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    steps(model, opt, data[:3])
    a, b = io.BytesIO(), io.BytesIO()
    torch.save(opt.state_dict(), a)
    torch.save(opt.state_dict(), b)
    assert a.getvalue() == b.getvalue()


def test_loading_a_plain_inner_state_dict_raises(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    with pytest.raises(ValueError, match="no 'distributed' entry"):
        opt.load_state_dict(opt.optimizer.state_dict())


def test_add_param_group_reaches_the_inner_optimizer(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    steps(model, opt, data[:1])
    extra = nn.Parameter(torch.ones(3))
    opt.add_param_group({"params": [extra]})
    assert opt.optimizer.param_groups[-1]["params"][0] is extra
    for x in data[1:4]:
        opt.zero_grad()
        (model(x).square().mean() + extra.square().sum()).backward()
        opt.step()
    assert not torch.equal(extra.detach(), torch.ones(3))


def test_no_grad_is_a_no_op_for_parameters(make):
    model, _ = model_and_data()
    opt = make(model, SingleComm())
    before = params_of(model)
    opt.step()
    assert torch.equal(params_of(model), before)


def test_metrics_report_communication(make):
    model, data = model_and_data()
    opt = make(model, SingleComm())
    steps(model, opt, data[:4])
    m = opt.metrics()
    assert m["steps"] == 4 and m["bytes_sent"] == 0.0 and m["messages"] >= 1 and "rounds" in m
