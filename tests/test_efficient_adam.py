"""EfficientAdam: reductions (Identity), the wire formula, replicas, resume, the torch.optim contract."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

import scalopt
from distributed_helpers import batch, flat_state, make_model
from reference.efficient_adam_ref import averaged_adam_steps, scaled_sign_efficient_adam
from scalopt.compress import QSGD, Identity, RandomK, ScaledSign, TopK, build
from scalopt.core.comm import SingleComm
from scalopt.distributed import EfficientAdam, SimComm, launch, load_checkpoint, save_checkpoint
from scalopt.schedules import InvPower, OneMinusInvPower

COMPRESSORS = (
    "scaled-sign",
    {"name": "top-k", "ratio": 0.2},
    {"name": "random-k", "ratio": 0.3, "unbiased": False},
    {"name": "qsgd", "levels": 7, "bucket_size": 16},
)


# -- rank functions (module level: launch pickles them by name) ------------------------------------
def ea_train(comm, specs: tuple, steps: int) -> dict:
    """Each compressor spec: final flat state, losses and counters of 2-layer MLP training."""
    out = {}
    for i, spec in enumerate(specs):
        model = make_model(comm.rank, batchnorm=False, dropout=0.0)
        opt = EfficientAdam(model.parameters(), comm=comm, lr=1e-2, compressor=build(spec, seed=comm.rank))
        gen = torch.Generator().manual_seed(100 + comm.rank)
        losses = []
        for _ in range(steps):
            x, y = batch(gen)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        out[i] = (flat_state(model), losses, comm.bytes_sent, comm.messages, comm.rounds)
    return out


def ea_resume(comm, steps: int, split: int, directory: str) -> torch.Tensor:
    """QSGD both ways; ``split < 0`` trains straight through, else checkpoints and reloads at ``split``."""

    def build_all(seed):
        model = make_model(seed, batchnorm=False, dropout=0.0)
        opt = EfficientAdam(
            model.parameters(),
            comm=comm,
            lr=1e-2,
            compressor=QSGD(3, torch.Generator().manual_seed(comm.rank), bucket_size=8),
            server_compressor=RandomK(0.5, torch.Generator().manual_seed(9 + comm.rank), unbiased=False),
        )
        return model, opt

    model, opt = build_all(comm.rank)
    gen = torch.Generator().manual_seed(100 + comm.rank)

    def run(t0, t1):
        for _ in range(t0, t1):
            x, y = batch(gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    if split < 0:
        run(0, steps)
        return flat_state(model)
    run(0, split)
    save_checkpoint(
        directory, comm=comm, optimizer=opt, model=model, step=split, extra={"g": gen.get_state()}
    )
    model, opt = build_all(50 + comm.rank)  # different start: everything comes from the checkpoint
    info = load_checkpoint(directory, comm=comm, optimizer=opt, model=model)
    gen.set_state(info["extra"]["g"])
    run(split, steps)
    return flat_state(model)


# -- reductions --------------------------------------------------------------------------------------
def _single(make_opt, steps=12, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    opt = make_opt(model.parameters(), **kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        sched.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"betas": (0.5, 0.9), "eps": 1e-6, "weight_decay": 0.1},
        {"bias_correction": False, "lr_decay": InvPower(0.5), "beta2_schedule": OneMinusInvPower(0.1, 1.0)},
    ],
)
def test_one_worker_with_identity_equals_generic_adam(kw):
    # δ = lr·u is taken from the chain and applied as x − δ, where GenericAdam applies x − lr·m/d in one
    # addcdiv: the two round differently, so equal to 1e-12 relative in float64 (LR scheduler included)
    ref = _single(scalopt.GenericAdam, lr=1e-2, **kw)
    got = _single(
        lambda p, **k: EfficientAdam(p, comm=SingleComm(), compressor=Identity(), **k), lr=1e-2, **kw
    )
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)


def _lsq_data(rank: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rank + t)
    return torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(
        5, 3, generator=gen, dtype=torch.float64
    )


def _lsq_rank(comm, steps: int, compressor: str = "identity") -> torch.Tensor:
    torch.manual_seed(comm.rank)  # different on each rank: construction broadcasts rank 0's
    model = nn.Linear(4, 3).double()
    opt = EfficientAdam(
        model.parameters(), comm=comm, lr=0.05, betas=(0.8, 0.95), eps=1e-6, compressor=build(compressor)
    )
    for t in range(1, steps + 1):
        a, y = _lsq_data(comm.rank, t)
        opt.zero_grad()
        (model(a) - y).square().mean().backward()
        opt.step()
    return torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])


def test_n_workers_with_identity_average_their_own_adam_steps():
    torch.manual_seed(0)
    init = nn.Linear(4, 3).double()
    x0 = [init.weight.detach().numpy(), init.bias.detach().numpy()]

    def grad(i, t, x):
        a, y = (v.numpy() for v in _lsq_data(i, t))
        r = a @ x[0].T + x[1] - y  # (5, 3)
        scale = 2.0 / r.size
        return [scale * r.T @ a, scale * r.sum(0)]

    ref = averaged_adam_steps(x0, grad, workers=3, steps=8, lr=0.05, beta1=0.8, beta2=0.95, eps=1e-6)
    got = SimComm(3).run(_lsq_rank, 8)
    for r in range(3):
        assert torch.equal(got[r], got[0])  # one replica
    torch.testing.assert_close(
        got[0].numpy(), np.concatenate([a.reshape(-1) for a in ref]), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("n", [2, 3])
def test_scaled_sign_both_ways_follows_the_equations(n):
    """Worker and server error feedback, per-piece scales, sharding: against a NumPy reference."""
    torch.manual_seed(0)
    init = nn.Linear(4, 3).double()
    x0 = [init.weight.detach().numpy(), init.bias.detach().numpy()]

    def grad(i, t, x):
        a, y = (v.numpy() for v in _lsq_data(i, t))
        r = a @ x[0].T + x[1] - y
        scale = 2.0 / r.size
        return [scale * r.T @ a, scale * r.sum(0)]

    steps = 10
    ref = scaled_sign_efficient_adam(
        x0, grad, workers=n, steps=steps, lr=0.05, beta1=0.8, beta2=0.95, eps=1e-6
    )
    got = SimComm(n).run(_lsq_rank, steps, "scaled-sign")
    for r in range(n):
        assert torch.equal(got[r], got[0])
    torch.testing.assert_close(
        got[0].numpy(), np.concatenate([a.reshape(-1) for a in ref]), rtol=1e-9, atol=1e-11
    )


# -- the wire ----------------------------------------------------------------------------------------
def scaled_sign_bytes(numels: list[int], n: int) -> int:
    """Longest shard payload: each piece of a tensor inside a shard costs 4 + ⌈piece/8⌉ bytes."""
    total = sum(numels)
    S = math.ceil(total / n)
    edges = np.cumsum(numels).tolist()
    longest = 0
    for j in range(n):
        lo, hi = min(j * S, total), min((j + 1) * S, total)
        cuts = sorted({lo, hi} | {e for e in edges if lo < e < hi})
        longest = max(longest, sum(4 + math.ceil((b - a) / 8) for a, b in zip(cuts, cuts[1:])))
    return longest


@pytest.mark.parametrize("n", [2, 3])
def test_replicas_agree_and_bytes_follow_the_wire_formula(n):
    steps = 5
    res = SimComm(n).run(ea_train, ("scaled-sign",), steps)
    numels = [48, 8, 24, 3]  # Linear(6, 8), Linear(8, 3)
    D, L = sum(numels), scaled_sign_bytes(numels, n)
    for r in range(n):
        state, losses, sent, messages, rounds = res[r][0]
        assert torch.equal(state, res[0][0][0])
        broadcast = 4 * D if r == 0 else 0
        # per step: 1-byte finite agreement (all-gather), all-to-all of N·L, all-gather of L
        assert sent == broadcast + steps * ((n - 1) * 1 + (n - 1) * L + (n - 1) * L)
        assert messages == 1 + 3 * steps and rounds == steps
    fp32_allreduce = 2 * (n - 1) / n * 4 * D
    assert (n - 1) * (2 * L + 1) < fp32_allreduce / 4


def test_every_compressor_keeps_one_replica_and_trains():
    res = SimComm(2).run(ea_train, COMPRESSORS, 30)
    for i in range(len(COMPRESSORS)):
        assert torch.equal(res[0][i][0], res[1][i][0])
        losses = res[0][i][1]
        assert sum(losses[-5:]) < sum(losses[:5]), COMPRESSORS[i]


def _warm(comm, warmup: int, spec: str, steps: int):
    model = make_model(0, batchnorm=False, dropout=0.0)
    opt = EfficientAdam(model.parameters(), comm=comm, lr=1e-2, compressor=build(spec), warmup_steps=warmup)
    gen = torch.Generator().manual_seed(comm.rank)
    for _ in range(steps):
        x, y = batch(gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return flat_state(model), comm.bytes_sent, dict(opt.worker_error)


def test_warmup_steps_average_uncompressed():
    warm = SimComm(2).run(_warm, 3, "scaled-sign", 3)
    ident = SimComm(2).run(_warm, 0, "identity", 3)
    D = 83
    assert torch.equal(warm[0][0], ident[0][0])
    assert warm[1][2] == {}  # no error buffers yet
    assert warm[1][1] == 3 * (1 + 2 * (1 / 2) * 4 * D)  # agreement + fp32 all-reduce
    later = SimComm(2).run(_warm, 3, "scaled-sign", 5)
    assert not torch.equal(later[0][0], SimComm(2).run(_warm, 0, "identity", 5)[0][0])


# -- state and resume --------------------------------------------------------------------------------
def _contract_setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    gen = torch.Generator().manual_seed(seed)
    data = [torch.randn(5, 4, generator=gen) for _ in range(8)]
    return model, data


def _make(model):
    return EfficientAdam(
        model.parameters(),
        comm=SingleComm(),
        lr=1e-2,
        compressor=RandomK(0.5, torch.Generator().manual_seed(0), unbiased=False),
        server_compressor=TopK(0.5),
    )


def _steps(model, opt, data):
    for x in data:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def test_state_dict_round_trips_through_weights_only_and_resumes_exactly():
    model, data = _contract_setup()
    opt = _make(model)
    _steps(model, opt, data)
    straight = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    model, data = _contract_setup()
    opt = _make(model)
    _steps(model, opt, data[:4])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    extra = saved["opt"]["distributed"]
    assert (
        extra["algorithm"] == "efficient_adam"
        and float(extra["worker_error"]["torch.float32"].abs().sum()) > 0
    )
    model2, _ = _contract_setup(seed=3)
    opt2 = _make(model2)
    opt2.compressor.compress(torch.ones(7))  # advance its generator: the state must overwrite it
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    _steps(model2, opt2, data[4:])
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in model2.parameters()]), straight)
    assert opt2.state_dict()["distributed"]["counters"]["steps"] == 8


def test_checkpoint_resume_is_exact_on_two_ranks(tmp_path):
    straight = SimComm(2).run(ea_resume, 7, -1, str(tmp_path / "unused"))
    resumed = SimComm(2).run(ea_resume, 7, 3, str(tmp_path / "ckpt"))
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_loading_into_other_parameters_raises():
    model, data = _contract_setup()
    opt = _make(model)
    _steps(model, opt, data[:2])
    other = EfficientAdam(nn.Linear(3, 3).parameters(), comm=SingleComm())
    with pytest.raises(ValueError):
        other.load_state_dict(opt.state_dict())


# -- the torch.optim contract with a one-rank comm ----------------------------------------------------
def test_is_an_optimizer_sharing_param_groups_state_and_hooks():
    model, data = _contract_setup()
    opt = _make(model)
    calls = []
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(1))
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is opt.optimizer.param_groups
    _steps(model, opt, data[:2])
    assert opt.state is opt.optimizer.state and len(opt.state) == 4 and calls == [1, 1]
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert opt.metrics()["steps"] == 2


def test_no_gradients_is_a_no_op():
    model, _ = _contract_setup()
    opt = _make(model)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert len(opt.state) == 0 and opt.worker_error == {}


def test_add_param_group_grows_the_error_buffers():
    model, data = _contract_setup()
    extra = nn.Parameter(torch.randn(5))
    opt = _make(model)
    _steps(model, opt, data[:2])
    old = opt.worker_error["torch.float32"].clone()
    opt.add_param_group({"params": [extra], "lr": 1e-3})
    assert torch.equal(opt.worker_error["torch.float32"][: old.numel()], old)
    assert opt.worker_error["torch.float32"].numel() == old.numel() + 5
    for x in data[2:]:
        opt.zero_grad()
        (model(x).square().mean() + extra.square().sum()).backward()
        opt.step()
    assert opt.param_groups[1]["lr"] == 1e-3 and len(opt.state) == 5


def test_add_param_group_on_two_ranks_keeps_one_replica():
    def fn(comm):
        model = make_model(comm.rank, batchnorm=False, dropout=0.0)
        opt = EfficientAdam(model.parameters(), comm=comm, lr=1e-2)
        extra = nn.Parameter(torch.full((7,), float(comm.rank)))
        gen = torch.Generator().manual_seed(comm.rank)
        for t in range(6):
            if t == 3:
                opt.add_param_group({"params": [extra]})
            x, y = batch(gen)
            opt.zero_grad()
            (nn.functional.cross_entropy(model(x), y) + extra.sum()).backward()
            opt.step()
        return torch.cat([flat_state(model), extra.detach()])

    a, b = SimComm(2).run(fn)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"lr": -1.0}, "lr"),
        ({"betas": (1.0, 0.9)}, "betas"),
        ({"eps": -1.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"compressor": "scaled-sign"}, "compressor"),
        ({"server_compressor": 3}, "server_compressor"),
        ({"nonfinite": "ignore"}, "nonfinite"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kw, name):
    with pytest.raises(ValueError, match=name):
        EfficientAdam(nn.Linear(2, 2).parameters(), comm=SingleComm(), **kw)


def test_default_is_scaled_sign_both_ways_and_nonfinite_raises():
    model, data = _contract_setup()
    opt = EfficientAdam(model.parameters(), comm=SingleComm())
    assert isinstance(opt.compressor, ScaledSign) and opt.server_compressor is opt.compressor
    model(data[0]).sum().backward()
    next(model.parameters()).grad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        opt.step()


def _nan_on_rank_zero(comm) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = EfficientAdam(model.parameters(), comm=comm, lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    before = opt.optimizer.metrics()
    model.weight.grad[0, 0] = float("nan") if comm.rank == 0 else 1.0
    with pytest.raises(FloatingPointError, match="nothing was changed"):
        opt.step()
    return before, opt.optimizer.metrics()


def test_a_raise_on_one_rank_leaves_every_inner_counter_as_it_was():
    # rank 1's gradient is finite, so its inner optimizer counted the step before the ranks agreed
    for before, after in SimComm(2).run(_nan_on_rank_zero):
        assert after == before


@pytest.mark.distributed
@pytest.mark.slow
def test_torchcomm_equals_simcomm_bitwise_two_ranks():
    real = launch(ea_train, 2, COMPRESSORS, 6)
    sim = SimComm(2).run(ea_train, COMPRESSORS, 6)
    for r in range(2):
        for i in range(len(COMPRESSORS)):
            (s1, l1, b1, m1, r1), (s2, l2, b2, m2, r2) = real[r][i], sim[r][i]
            assert torch.equal(s1, s2) and l1 == l2 and (b1, m1, r1) == (b2, m2, r2)


@pytest.mark.distributed
def test_bench_run_with_checkpoints_equals_the_uninterrupted_run(tmp_path):
    from scalopt.bench import RunSpec, records, run_specs
    from scalopt.bench.suites.core import QUICK_WORKLOAD

    spec = RunSpec(
        workload="stdlib-lm",
        workload_overrides=QUICK_WORKLOAD,
        hparams={"lr": 3e-3},
        steps=10,
        eval_every=5,
        workers=2,
        algorithm="efficient-adam",
        algorithm_args={"compressor": {"name": "qsgd", "levels": 3}},
        label="EA",
    )
    (plain,) = run_specs([spec], tmp_path / "a", progress=False, checkpoint_every=None, log=lambda s: None)
    (ckpt,) = run_specs([spec], tmp_path / "b", progress=False, checkpoint_every=4, log=lambda s: None)
    assert ckpt["final"] == plain["final"]
    rows = records.read_rows(tmp_path / "a" / "runs" / spec.run_id)
    assert rows[-1]["bytes_sent"] > 0 and rows[-1]["rounds"] == 10
