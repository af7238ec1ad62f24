"""The DDP compression hook (and counted PowerSGD) on real 2-process gloo groups."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from distributed_helpers import batch, make_model
from scalopt.compress import QSGD, ErrorFeedback, Identity, ScaledSign, TopK
from scalopt.core.comm import SingleComm
from scalopt.distributed import CompressionHook, compression_hook, counted_powersgd_hook, launch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

D = 83  # parameters of make_model(batchnorm=False): Linear(6, 8) + Linear(8, 3)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _ddp_run(comm, hook, steps, *, momentum=0.0, model=None, opt_state=None, gen=None):
    model = model if model is not None else make_model(0, batchnorm=False, dropout=0.0)
    ddp = DDP(model)
    if hook is not None:
        ddp.register_comm_hook(None, hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    gen = gen if gen is not None else torch.Generator().manual_seed(comm.rank)
    for _ in range(steps):
        x, y = batch(gen)
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    return model, opt, gen


def _simulated(comm, compressor_factory, steps):
    """DDP + hook vs every rank's own gradient compressed with error feedback, averaged by hand."""
    model = make_model(0, batchnorm=False, dropout=0.0)
    plain = copy.deepcopy(model)
    ddp = DDP(model)
    hook = compression_hook(compressor_factory(), comm=comm, warmup_iters=0)
    ddp.register_comm_hook(None, hook)
    efs = [ErrorFeedback(compressor_factory()) for _ in range(comm.world_size)]
    gen = torch.Generator().manual_seed(comm.rank)
    worst, sent = 0.0, []
    for _ in range(steps):
        x, y = batch(gen)
        plain.load_state_dict(model.state_dict())
        plain.zero_grad()
        nn.functional.cross_entropy(plain(x), y).backward()
        mine = _flat(p.grad for p in plain.parameters())
        parts = [torch.empty_like(mine) for _ in range(comm.world_size)]
        dist.all_gather(parts, mine)  # not counted: the reference's own traffic
        expected = sum(ef.decompress(ef.compress(g)) for ef, g in zip(efs, parts)) / comm.world_size
        before = comm.bytes_sent
        model.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        sent.append(comm.bytes_sent - before)
        worst = max(worst, float((_flat(p.grad for p in model.parameters()) - expected).abs().max()))
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    return worst, sent


def _powersgd(comm, steps, counted):
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import PowerSGDState, powerSGD_hook

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 8))
    ddp = DDP(model)
    state = PowerSGDState(process_group=None, matrix_approximation_rank=1, start_powerSGD_iter=2)
    ddp.register_comm_hook(state, counted_powersgd_hook(comm) if counted else powerSGD_hook)
    gen = torch.Generator().manual_seed(comm.rank)
    sent = []
    for _ in range(steps):
        before = comm.bytes_sent
        ddp.zero_grad()
        ddp(torch.randn(4, 32, generator=gen)).square().mean().backward()
        sent.append(comm.bytes_sent - before)
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
    return _flat(model.parameters()), sent


def hook_checks(comm) -> dict:
    out = {}
    # Identity through the hook == DDP's own all-reduce (a/2 + b/2 == (a + b)/2 exactly)
    plain, _, _ = _ddp_run(comm, None, 5)
    ident, _, _ = _ddp_run(comm, compression_hook(Identity(), comm=comm), 5)
    out["identity"] = (_flat(plain.parameters()), _flat(ident.parameters()))
    out["scaled_sign"] = _simulated(comm, ScaledSign, 6)
    out["top_k"] = _simulated(comm, lambda: TopK(0.2), 6)
    # residuals saved and restored (QSGD: its generator travels too), through weights_only
    make_hook = lambda: compression_hook(  # noqa: E731
        QSGD(3, torch.Generator().manual_seed(comm.rank), bucket_size=16), comm=comm
    )
    straight, _, _ = _ddp_run(comm, make_hook(), 6, momentum=0.9)
    hook = make_hook()
    model, opt, gen = _ddp_run(comm, hook, 3, momentum=0.9)
    buf = io.BytesIO()
    torch.save({"hook": hook.state_dict(), "model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = make_model(comm.rank + 5, batchnorm=False, dropout=0.0)
    fresh.load_state_dict(saved["model"])
    hook2 = make_hook()
    hook2.load_state_dict(saved["hook"])
    resumed, _, _ = _ddp_run(comm, hook2, 3, momentum=0.9, model=fresh, opt_state=saved["opt"], gen=gen)
    out["resume"] = (_flat(straight.parameters()), _flat(resumed.parameters()), hook.iteration)
    out["powersgd"] = (_powersgd(comm, 4, True), _powersgd(comm, 4, False))
    return out


@pytest.fixture(scope="module")
def results():
    return launch(hook_checks, 2, timeout_s=60)


def test_identity_hook_equals_ddp_all_reduce_bitwise(results):
    for r in range(2):
        plain, ident = results[r]["identity"]
        assert torch.equal(plain, ident)


@pytest.mark.parametrize("name", ["scaled_sign", "top_k"])
def test_hook_averages_error_fed_compressed_gradients(results, name):
    # one bucket, and both compressors commute with the bucket's permutation of the parameters
    for r in range(2):
        worst, _ = results[r][name]
        assert worst <= 1e-6


def test_hook_bytes_follow_the_payload_size(results):
    _, sent = results[0]["scaled_sign"]
    assert sent == [(2 - 1) * (4 + math.ceil(D / 8))] * 6  # 1-bit signs + one float32 scale per bucket
    _, sent = results[0]["top_k"]
    k = round(0.2 * D)
    assert sent == [(2 - 1) * 8 * k] * 6


def test_hook_state_resumes_exactly(results):
    for r in range(2):
        straight, resumed, iteration = results[r]["resume"]
        assert iteration == 3
        assert torch.equal(straight, resumed)


def test_counted_powersgd_is_transparent_and_counts_p_and_q(results):
    (counted, sent), (uncounted, _) = results[0]["powersgd"]
    assert torch.equal(counted, uncounted)
    dense = 32 * 16 + 16 + 16 * 8 + 8
    # rank 1: P = 16 + 8, Q = 32 + 16; the two biases go uncompressed; ring all-reduce of N = 2 sends B
    low_rank = 4 * ((16 + 8) + (16 + 8) + (32 + 16))
    assert sent == [4 * dense, 4 * dense, low_rank, low_rank]


def test_hook_arguments_and_state_dict_without_a_group():
    with pytest.raises(ValueError, match="compressor"):
        compression_hook("scaled-sign")
    with pytest.raises(ValueError, match="warmup_iters"):
        compression_hook(ScaledSign(), warmup_iters=-1)
    with pytest.raises(ValueError, match="comm"):
        counted_powersgd_hook(object())
    hook = compression_hook(ScaledSign(), comm=SingleComm())
    assert isinstance(hook, CompressionHook) and hook.__name__ == "compression_hook"
    params = [torch.zeros(12), torch.zeros(8)]
    g = torch.randn(20)
    out = hook.exchange(SingleComm(), params, g)
    torch.testing.assert_close(out + torch.cat([hook.residuals[0], hook.residuals[1]]), g)  # Q(g) + e = g
    # a rebuilt bucket (parameters in another order) is compressed in the same canonical order
    twin = compression_hook(ScaledSign(), comm=SingleComm())
    twin.exchange(SingleComm(), params, g)
    out2 = hook.exchange(SingleComm(), params[::-1], torch.cat([g[12:], g[:12]]))
    ref = twin.exchange(SingleComm(), params, g)
    assert torch.equal(out2, torch.cat([ref[12:], ref[:12]]))
    assert hook.residuals[1].numel() == 8
    with pytest.raises(ValueError, match="bucket holds 19 entries"):
        hook.exchange(SingleComm(), params, g[:19])
    assert out2.shape == g.shape
    state = hook.state_dict()
    other = compression_hook(ScaledSign())
    other.load_state_dict(state)
    assert torch.equal(other.residuals[0], hook.residuals[0])


def test_bench_ddp_runs_resume_exactly_and_count_bytes(tmp_path):
    from scalopt.bench import RunSpec, records, run_specs
    from scalopt.bench.suites.core import QUICK_WORKLOAD

    base = dict(
        workload="stdlib-lm",
        workload_overrides=QUICK_WORKLOAD,
        optimizer="adam",
        hparams={"lr": 3e-3},
        steps=8,
        eval_every=4,
        workers=2,
    )
    hook = RunSpec(
        **base, algorithm="ddp-compression", algorithm_args={"compressor": "scaled-sign"}, label="h"
    )
    psgd = RunSpec(
        **base,
        algorithm="ddp-powersgd",
        algorithm_args={"matrix_approximation_rank": 2, "start_powerSGD_iter": 3},
        label="p",
    )
    plain = run_specs([hook, psgd], tmp_path / "a", progress=False, checkpoint_every=None, log=lambda s: None)
    (ckpt,) = run_specs([hook], tmp_path / "b", progress=False, checkpoint_every=3, log=lambda s: None)
    assert ckpt["final"] == plain[0]["final"]
    for spec in (hook, psgd):
        rows = records.read_rows(tmp_path / "a" / "runs" / spec.run_id)
        assert rows[-1]["bytes_sent"] > 0 and rows[-1]["loss"] < rows[0]["loss"]
        assert rows[-1]["rounds"] == 8  # one per iteration
    hook_bytes = records.read_rows(tmp_path / "a" / "runs" / hook.run_id)[-1]["bytes_sent"]
    dense = records.read_rows(tmp_path / "a" / "runs" / psgd.run_id)[1]["bytes_sent"]  # 2 dense steps
    assert hook_bytes < dense
