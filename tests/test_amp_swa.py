"""torch.amp.GradScaler and torch.optim.swa_utils drive every scalopt optimizer in the registry.

GradScaler multiplies the loss by a power of two and unscales the gradients before ``step``, so a
scaled run must equal the unscaled one bitwise; a step whose scaled gradients overflow is skipped
(parameters and optimizer state untouched, the scale halves). SWA: ``AveragedModel`` averages the
iterates and ``SWALR`` sets the learning rate the optimizer then uses.

The GradScaler tests leave out the optimizers with a closure protocol (OASIS, HVP-RVR): they
differentiate the loss themselves (gradients and Hessian-vector products inside ``step``), so there
is no ``backward()`` of a scaled loss for a GradScaler to act on. SWA covers every optimizer.
"""

from __future__ import annotations

import pytest
import torch
from torch.optim.swa_utils import SWALR, AveragedModel

from scalopt.core.closure import LOSS_AND_SAMPLE, closure_protocol
from scalopt.optim import registry

ENTRIES = [e for e in registry.OPTIMIZERS.values() if e.scalopt]
IDS = [e.name for e in ENTRIES]
BACKWARD = [e for e in ENTRIES if e.closure is None]  # stepped after loss.backward()
BACKWARD_IDS = [e.name for e in BACKWARD]
STEPS = 6


def _model(seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _loss(model: torch.nn.Module, t: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + t)
    x, y = torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)
    return torch.nn.functional.mse_loss(model(x), y)


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _state(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v.clone() for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def _step(opt: torch.optim.Optimizer, loss_fn) -> None:
    """backward then step(), or step(closure[, sample]) for the optimizers that differentiate themselves."""
    protocol = closure_protocol(opt)
    if protocol is None:
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    elif protocol == LOSS_AND_SAMPLE:
        opt.step(loss_fn, loss_fn)
    else:
        opt.step(loss_fn)


@pytest.mark.parametrize("entry", BACKWARD, ids=BACKWARD_IDS)
def test_grad_scaler_equals_unscaled_training(entry):
    plain = _model()
    opt = entry.build(plain.parameters(), **entry.example)
    for t in range(STEPS):
        opt.zero_grad()
        _loss(plain, t).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        opt.step()

    scaled = _model()
    opt = entry.build(scaled.parameters(), **entry.example)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2)
    for t in range(STEPS):
        opt.zero_grad()
        scaler.scale(_loss(scaled, t)).backward()
        scaler.unscale_(opt)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(scaled.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 2.0**15  # grew every 2 steps: no step was skipped
    for a, b in zip(_params(plain), _params(scaled)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("entry", BACKWARD, ids=BACKWARD_IDS)
def test_grad_scaler_skips_an_overflowing_step(entry):
    model = _model()
    opt = entry.build(model.parameters(), **entry.example)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for t in range(2):
        opt.zero_grad()
        scaler.scale(_loss(model, t)).backward()
        scaler.step(opt)
        scaler.update()
    params, state = _params(model), _state(opt)
    opt.zero_grad()
    scaler.scale(_loss(model, 2)).backward()
    with torch.no_grad():
        next(model.parameters()).grad[0, 0] = float("inf")  # what an fp16 overflow leaves behind
    scaler.step(opt)  # skipped: optimizer.step is never called, so nothing raises
    scaler.update()
    assert scaler.get_scale() == 2.0**9
    assert all(torch.equal(a, b) for a, b in zip(params, _params(model)))
    assert all(torch.equal(a, b) for a, b in zip(state, _state(opt)))
    opt.zero_grad()
    scaler.scale(_loss(model, 3)).backward()
    scaler.step(opt)
    scaler.update()
    assert not all(torch.equal(a, b) for a, b in zip(params, _params(model)))


def _swa_run(entry_or_cls, **kw):
    model = _model()
    if isinstance(entry_or_cls, registry.OptimizerEntry):
        opt = entry_or_cls.build(model.parameters(), **kw)
    else:
        opt = entry_or_cls(model.parameters(), **kw)
    swa_model = AveragedModel(model)
    swa_sched = SWALR(opt, swa_lr=2e-3, anneal_epochs=3, anneal_strategy="linear")
    lrs, snapshots = [], []
    for t in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        _step(opt, lambda t=t: _loss(model, t))
        if t >= 4:  # SWA phase
            swa_model.update_parameters(model)
            snapshots.append(_params(model))
            swa_sched.step()
    return model, swa_model, lrs, snapshots


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_swa_averages_the_iterates_and_swalr_sets_the_lr(entry):
    model, swa_model, lrs, snapshots = _swa_run(entry, **entry.example)
    lr0 = entry.example["lr"]
    assert lrs[:5] == [lr0] * 5
    assert lrs[-1] == pytest.approx(2e-3)  # annealed to swa_lr after 3 SWALR steps
    assert lrs[5] != lr0  # the annealing had started
    assert int(swa_model.n_averaged) == len(snapshots) == 6
    for i, p in enumerate(swa_model.module.parameters()):
        mean = torch.stack([s[i] for s in snapshots]).mean(0)
        torch.testing.assert_close(p.detach(), mean, rtol=1e-5, atol=1e-6)


def test_swa_with_scalopt_adamw_follows_torch_adamw():
    # SWALR's learning rates reach the update: scalopt.AdamW == torch.optim.AdamW along the whole run
    kw = dict(lr=1e-2, weight_decay=0.01)
    _, ours, _, _ = _swa_run(registry.get("adamw"), **kw)
    _, theirs, _, _ = _swa_run(torch.optim.AdamW, **kw)
    for a, b in zip(ours.module.parameters(), theirs.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
