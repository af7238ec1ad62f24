"""OneBitAdam: reductions, the equations, error-feedback conservation, the wire, resume, gloo == SimComm."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from reference.onebit_adam_ref import onebit_adam
from scalopt.compress import Identity, ScaledSign, build
from scalopt.core.comm import SingleComm
from scalopt.distributed import OneBitAdam, SimComm, launch
from scalopt.distributed import registry as algorithms

IN, OUT = 4, 3


def _data(rank: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rank + t)
    return torch.randn(5, IN, generator=gen, dtype=torch.float64), torch.randn(
        5, OUT, generator=gen, dtype=torch.float64
    )


def _ref_grad(i: int, t: int, x: np.ndarray) -> np.ndarray:
    """Worker i's gradient of the mean squared error of a Linear(4, 3) at flat x = [W, b]."""
    a, y = (v.numpy() for v in _data(i, t))
    w, b = x[: IN * OUT].reshape(OUT, IN), x[IN * OUT :]
    r = a @ w.T + b - y
    scale = 2.0 / r.size
    return np.concatenate([(scale * r.T @ a).reshape(-1), scale * r.sum(0)])


def _x0() -> np.ndarray:
    torch.manual_seed(0)
    init = nn.Linear(IN, OUT).double()
    return torch.cat([init.weight.detach().reshape(-1), init.bias.detach()]).numpy()


# -- rank functions (module level: launch pickles them by name) ------------------------------------
def lsq_rank(comm, steps: int, freeze_step, compressor: str, kw: dict | None = None) -> torch.Tensor:
    torch.manual_seed(0)  # rank 0's model is the reference's x0; construction broadcasts it
    model = nn.Linear(IN, OUT).double()
    if comm.rank:
        with torch.no_grad():
            model.weight.add_(1.0)  # differs on other ranks: construction must broadcast rank 0's
    opt = OneBitAdam(
        model.parameters(),
        comm=comm,
        lr=0.05,
        betas=(0.8, 0.95),
        eps=1e-6,
        freeze_step=freeze_step,
        compressor=build(compressor),
        **(kw or {}),
    )
    for t in range(1, steps + 1):
        a, y = _data(comm.rank, t)
        opt.zero_grad()
        (model(a) - y).square().mean().backward()
        opt.step()
    return torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])


def float_rank(comm, steps: int, split: int, reset_at: int) -> tuple:
    """float32 training; at ``split`` save and load the state into a fresh optimizer (a resume)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN, 8), nn.Tanh(), nn.Linear(8, OUT))

    def build_opt():
        return OneBitAdam(model.parameters(), comm=comm, lr=1e-2, freeze_step=3, weight_decay=0.01)

    opt = build_opt()
    gen = torch.Generator().manual_seed(comm.rank)
    errors = 0.0
    for t in range(1, steps + 1):
        if t == reset_at:
            errors = float(sum(e.abs().sum() for e in opt.worker_error.values()))
            opt.reset_errors()
        if t == split:
            buf = io.BytesIO()
            torch.save(opt.state_dict(), buf)
            buf.seek(0)
            opt = build_opt()
            opt.load_state_dict(torch.load(buf, weights_only=True))
        x = torch.randn(6, IN, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return flat, errors, comm.bytes_sent, comm.messages, comm.rounds


# -- reductions and the equations ------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3])
def test_identity_never_frozen_equals_data_parallel_adam_without_bias_correction(n):
    ref = onebit_adam(
        _x0(),
        _ref_grad,
        workers=n,
        steps=8,
        freeze_step=math.inf,
        lr=0.05,
        beta1=0.8,
        beta2=0.95,
        eps=1e-6,
        compress=False,
    )
    got = SimComm(n).run(lsq_rank, 8, math.inf, "identity")
    for r in range(n):
        assert torch.equal(got[r], got[0])  # one replica
    torch.testing.assert_close(got[0].numpy(), ref, rtol=1e-10, atol=1e-12)


def test_bias_corrected_identity_never_frozen_equals_data_parallel_torch_adam():
    torch.manual_seed(0)
    model = nn.Linear(IN, OUT).double()
    ref = torch.optim.Adam(model.parameters(), lr=0.05, betas=(0.8, 0.95), eps=1e-6)
    for t in range(1, 9):
        ref.zero_grad()
        loss = 0
        for i in range(2):
            a, y = _data(i, t)
            loss = loss + (model(a) - y).square().mean() / 2
        loss.backward()
        ref.step()
    want = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])
    got = SimComm(2).run(lsq_rank, 8, math.inf, "identity", {"bias_correction": True})
    torch.testing.assert_close(got[0], want, rtol=1e-10, atol=1e-12)


def test_identity_after_freeze_is_data_parallel_momentum_under_frozen_v():
    ref = onebit_adam(
        _x0(),
        _ref_grad,
        workers=2,
        steps=9,
        freeze_step=4,
        lr=0.05,
        beta1=0.8,
        beta2=0.95,
        eps=1e-6,
        compress=False,
    )
    got = SimComm(2).run(lsq_rank, 9, 4, "identity")
    torch.testing.assert_close(got[0].numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("n", "bc"), [(2, False), (3, False), (2, True)])
def test_rms_sign_both_ways_follows_the_equations(n, bc):
    """Warm-up, frozen v, worker and server error feedback, chunking, decoupled weight decay."""
    kw = dict(weight_decay=0.1, bias_correction=bc)
    ref = onebit_adam(
        _x0(),
        _ref_grad,
        workers=n,
        steps=12,
        freeze_step=3,
        lr=0.05,
        beta1=0.8,
        beta2=0.95,
        eps=1e-6,
        **kw,
    )
    got = SimComm(n).run(lsq_rank, 12, 3, {"name": "scaled-sign", "scale": "rms"}, kw)
    for r in range(n):
        assert torch.equal(got[r], got[0])
    torch.testing.assert_close(got[0].numpy(), ref, rtol=1e-9, atol=1e-11)
    warm_only = onebit_adam(
        _x0(),
        _ref_grad,
        workers=n,
        steps=12,
        freeze_step=math.inf,
        lr=0.05,
        beta1=0.8,
        beta2=0.95,
        eps=1e-6,
        **kw,
    )
    assert not np.allclose(ref, warm_only)  # the compressed phase did something


# -- error feedback: what is sent plus the new error is what was meant plus the old error ----------
class Recording(ScaledSign):
    """RMS ScaledSign that records every (input, Q(input)) it produces."""

    def __init__(self) -> None:
        super().__init__(scale="rms")
        self.log: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _compress(self, flat):
        fields = super()._compress(flat)
        self.log.append((flat.clone(), self._decompress(fields, flat.numel(), flat.dtype)))
        return fields


def conservation_rank(comm, steps: int) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Linear(IN, OUT).double()
    up, down = Recording(), Recording()
    opt = OneBitAdam(
        model.parameters(), comm=comm, lr=0.05, freeze_step=2, compressor=up, server_compressor=down
    )
    key, d = "torch.float64", IN * OUT + OUT
    log = []
    for t in range(1, steps + 1):
        a, y = _data(comm.rank, t)
        opt.zero_grad()
        (model(a) - y).square().mean().backward()
        if not opt.frozen:
            opt.step()
            continue
        m_old = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in model.parameters()])
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        rec = {
            "meant": 0.9 * m_old + 0.1 * g,  # β1 = 0.9, this rank's local momentum
            "e_old": opt.worker_error.get(key, torch.zeros(d, dtype=torch.float64)).clone(),
        }
        lo, hi = opt.layouts()[0].bounds[comm.rank]
        rec["es_old"] = opt.server_error.get(key, torch.zeros(hi - lo, dtype=torch.float64)).clone()
        up.log.clear()
        down.log.clear()
        opt.step()
        ((c, q_c),) = down.log  # this rank served one chunk
        rec.update(
            sent=torch.cat([q for _, q in up.log]),
            e_new=opt.worker_error[key].clone(),
            c=c,
            q_c=q_c,
            es_new=opt.server_error[key].clone(),
            lo=torch.tensor(lo),
            hi=torch.tensor(hi),
        )
        log.append(rec)
    return log


def test_error_feedback_conserves_what_was_meant_every_step():
    logs = SimComm(2).run(conservation_rank, 8)
    assert len(logs[0]) == 6
    for t in range(6):
        for r in (0, 1):
            s = logs[r][t]
            # worker: sent + new error = meant + old error
            torch.testing.assert_close(s["sent"] + s["e_new"], s["meant"] + s["e_old"], rtol=0, atol=1e-14)
            assert float(s["e_new"].abs().sum()) > 0
            # server: its input is the mean of what the workers sent for its chunk plus its old error,
            # and what it sends plus its new error is that input
            lo, hi = int(s["lo"]), int(s["hi"])
            mean = (logs[0][t]["sent"][lo:hi] + logs[1][t]["sent"][lo:hi]) / 2
            torch.testing.assert_close(s["c"], mean + s["es_old"], rtol=0, atol=1e-14)
            torch.testing.assert_close(s["q_c"] + s["es_new"], s["c"], rtol=0, atol=1e-14)


# -- the momentum mask -------------------------------------------------------------------------------
def masked_rank(comm, mask: bool) -> torch.Tensor:
    torch.manual_seed(0)
    emb = nn.Embedding(6, 2).double()
    opt = OneBitAdam(emb.parameters(), comm=comm, lr=0.1, freeze_step=2, momentum_mask=mask)
    gen = torch.Generator().manual_seed(comm.rank)
    for _ in range(6):
        idx = torch.randint(0, 4, (4,), generator=gen)  # rows 4, 5 never get a gradient
        opt.zero_grad()
        emb(idx).square().sum().backward()
        opt.step()
    return emb.weight.detach().clone()


def test_momentum_mask_keeps_never_touched_rows_still():
    torch.manual_seed(0)
    init = nn.Embedding(6, 2).double().weight.detach()
    masked = SimComm(2).run(masked_rank, True)[0]
    assert torch.equal(masked[4:], init[4:]) and not torch.equal(masked[:4], init[:4])
    unmasked = SimComm(2).run(masked_rank, False)[0]
    assert not torch.equal(unmasked[4:], init[4:])  # 1 bit cannot say 0: they drift without the mask


# -- the wire ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3])
def test_bytes_follow_the_wire_formula(n):
    steps, freeze = 7, 3
    res = SimComm(n).run(float_rank, steps, -1, -1)
    d = IN * 8 + 8 + 8 * OUT + OUT
    chunk = math.ceil(d / n)
    payload = 4 + math.ceil(chunk / 8)  # one float32 scale + the packed signs of the longest chunk
    warm = 2 * (n - 1) / n * 4 * d
    compressed = (n - 1) * payload * 2 + (n - 1)  # all_to_all up, all_gather down, finite flag
    for rank, (flat, _, sent, messages, rounds) in enumerate(res):
        assert torch.equal(flat, res[0][0])
        broadcast = 4 * d if rank == 0 else 0  # construction: rank 0 broadcasts the parameters
        assert sent == pytest.approx(broadcast + freeze * warm + (steps - freeze) * compressed)
        assert rounds == steps and messages == 1 + freeze + 3 * (steps - freeze)  # 1: the broadcast


# -- resume: the error buffers are checkpointed ------------------------------------------------------
def test_resume_is_bitwise_and_reset_errors_is_still_available():
    straight = SimComm(2).run(float_rank, 9, -1, -1)
    resumed = SimComm(2).run(float_rank, 9, 6, -1)
    reset = SimComm(2).run(float_rank, 9, -1, 6)
    for a, b, c in zip(straight, resumed, reset):
        assert torch.equal(a[0], b[0])  # bitwise: the resumed run is the uninterrupted one
        assert c[1] > 0 and not torch.equal(a[0], c[0])  # the errors mattered; reset_errors() drops them


def test_state_dict_round_trips_through_weights_only_one_rank_uncompressed():
    torch.manual_seed(0)
    model = nn.Linear(IN, OUT)
    opt = OneBitAdam(model.parameters(), comm=SingleComm(), freeze_step=1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, IN)).sum().backward()
        opt.step()
    assert not opt.worker_error and opt.frozen  # one rank: no exchange, nothing compressed
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert sd["distributed"]["algorithm"] == "onebit_adam" and sd["distributed"]["worker_error"] == {}
    opt.load_state_dict(sd)
    assert not opt.worker_error and opt.frozen


# -- arguments, registry ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"betas": (1.0, 0.9)}, "betas"),
        ({"eps": -1.0}, "eps"),
        ({"eps": 0.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"freeze_step": 0}, "freeze_step"),
        ({"freeze_step": 2.5}, "freeze_step"),
        ({"freeze_step": True}, "freeze_step"),
        ({"compressor": "scaled-sign"}, "compressor"),
        ({"server_compressor": 3}, "server_compressor"),
        ({"momentum_mask": 1}, "momentum_mask"),
        ({"bias_correction": None}, "bias_correction"),
        ({"nonfinite": "ignore"}, "nonfinite"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kw, name):
    with pytest.raises(ValueError, match=name):
        OneBitAdam(nn.Linear(2, 2).parameters(), comm=SingleComm(), **kw)


def test_defaults_and_registry():
    opt = OneBitAdam(nn.Linear(2, 2).parameters(), comm=SingleComm())
    assert opt.freeze_step == 100_000 and opt.server_compressor is opt.compressor
    assert isinstance(opt.compressor, ScaledSign) and opt.compressor.scale == "rms"
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["betas"] == (0.9, 0.999)
    built = algorithms.build(
        "onebit-adam",
        nn.Linear(2, 2),
        "adam",
        {"lr": 1e-2},
        SingleComm(),
        freeze_step=5,
        compressor="identity",
    )
    assert isinstance(built, OneBitAdam) and isinstance(built.compressor, Identity) and built.freeze_step == 5


def test_nonfinite_gradient_raises_in_both_phases():
    for freeze in (5, 1):
        model = nn.Linear(2, 2)
        opt = OneBitAdam(model.parameters(), comm=SingleComm(), freeze_step=freeze)
        if freeze == 1:
            model(torch.ones(1, 2)).sum().backward()
            opt.step()
        model.weight.grad = torch.full((2, 2), float("nan"))
        with pytest.raises(FloatingPointError):
            opt.step()


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_frozen_phase_checks_the_new_values_before_writing(nonfinite):
    # eps > 0 is required (v = 0 with a masked m = 0 gave 0/0); a tiny eps still lets m/(√v + ε) overflow:
    # the step must raise or skip with nothing changed, never write inf/NaN
    one = OneBitAdam(
        [nn.Parameter(torch.ones(2))], comm=SingleComm(), lr=1.0, eps=1e-30, freeze_step=1,
        nonfinite=nonfinite,
    )
    p = one.param_groups[0]["params"][0]
    p.grad = torch.ones(2)
    one.step()
    p.grad = torch.full((2,), 3e38)
    x0, m0 = p.detach().clone(), one.state[p]["exp_avg"].clone()
    if nonfinite == "raise":
        with pytest.raises(FloatingPointError, match="nothing was changed"):
            one.step()
    else:
        one.step()
        assert one.counters["skipped_steps"] == 1
    assert torch.equal(p.detach(), x0) and torch.equal(one.state[p]["exp_avg"], m0)


# -- gloo == SimComm ----------------------------------------------------------------------------------
@pytest.mark.distributed
@pytest.mark.slow
def test_torchcomm_equals_simcomm_bitwise_two_ranks():
    real = launch(float_rank, 2, 9, 6, -1)
    sim = SimComm(2).run(float_rank, 9, 6, -1)
    for r in range(2):
        (s1, _, b1, m1, r1), (s2, _, b2, m2, r2) = real[r], sim[r]
        assert torch.equal(s1, s2) and (b1, m1, r1) == (b2, m2, r2)
