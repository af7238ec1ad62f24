"""The algorithms with logical ranks (SimComm): reductions, accounting, non-finite agreement, resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import scalopt
from distributed_helpers import (
    ALGORITHMS,
    make_model,
    make_optimizer,
    n_params,
    resume,
    train,
    train_guarded,
)
from scalopt.core.comm import SingleComm, wire_bytes
from scalopt.distributed import (
    CELGC,
    CheckpointError,
    DataParallelOptimizer,
    LocalSGD,
    OverlapLocalSGD,
    RankError,
    SimComm,
    load_checkpoint,
    save_checkpoint,
)


def test_local_sgd_period_1_equals_data_parallel_for_plain_sgd():
    # x − η·mean g  vs  mean(x − η·g): equal in exact arithmetic, so within 1e-6 relative
    kw = dict(batchnorm=False, dropout=0.0)
    dp = SimComm(3).run(train, "dp_sgd", 10, **kw)
    local = SimComm(3).run(train, "local_sgd_p1", 10, **kw)
    for a, b in zip(dp, local):
        torch.testing.assert_close(b["state"], a["state"], rtol=1e-6, atol=1e-7)


def test_celgc_with_infinite_threshold_equals_local_sgd_over_sgd():
    celgc = SimComm(2).run(train, "celgc_inf", 10)
    local = SimComm(2).run(train, "local_sgd_plain", 10)
    for a, b in zip(celgc, local):
        assert torch.equal(a["state"], b["state"])
        assert a["rounds"] == b["rounds"] == 2


def _one_rank(name):
    model = make_model(0, dropout=0.0)
    gen = torch.Generator().manual_seed(5)
    if name == "plain":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt = {"dp": DataParallelOptimizer, "local": lambda o, **k: LocalSGD(o, period=3, **k)}[name](
            inner, comm=SingleComm(), module=model
        )
    for _ in range(7):
        x = torch.randn(5, 6, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_one_rank_wrappers_equal_their_inner_optimizer():
    ref = _one_rank("plain")
    assert torch.equal(_one_rank("dp"), ref)
    assert torch.equal(_one_rank("local"), ref)


def test_celgc_one_rank_equals_clipped_sgd():
    def run(wrapped):
        model = make_model(0, batchnorm=False, dropout=0.0)
        if wrapped:
            opt = CELGC(model.parameters(), comm=SingleComm(), lr=0.1, max_norm=0.3, period=2, momentum=0.5)
        else:
            opt = scalopt.ClippedSGD(model.parameters(), lr=0.1, max_norm=0.3, momentum=0.5)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            opt.zero_grad()
            model(torch.randn(4, 6, generator=gen)).square().mean().backward()
            opt.step()
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), opt.metrics()["clipped_steps"]

    (a, clipped_a), (b, clipped_b) = run(True), run(False)
    assert torch.equal(a, b) and clipped_a == clipped_b > 0


@pytest.mark.parametrize("world_size", [2, 4])
def test_accounting_is_exact_for_a_known_model_size(world_size):
    n = world_size
    model_bytes = 4 * n_params(make_model(0, batchnorm=False))
    assert model_bytes == 4 * (6 * 8 + 8 + 8 * 3 + 3)
    steps = 16
    kw = dict(batchnorm=False, dropout=0.0)
    flag = wire_bytes("all_gather", 1, n)  # the 1-byte non-finite agreement of the local methods
    ring = wire_bytes("all_reduce", model_bytes, n)
    for name, rounds, per_step in [
        ("dp_sgd", steps, ring),
        ("celgc", 4, flag),  # period 4: 4 rounds in 16 steps
        ("local_sgd", steps // 3, flag),
        ("overlap", steps // 2, flag),
    ]:
        out = SimComm(n).run(train, name, steps, **kw)
        for r, res in enumerate(out):
            syncs = 0 if name == "dp_sgd" else rounds
            expected = (model_bytes if r == 0 else 0) + steps * per_step + syncs * ring
            assert res["rounds"] == rounds, name
            assert res["messages"] == 1 + steps + syncs, name
            assert res["bytes_sent"] == pytest.approx(expected, rel=0, abs=1e-6), name
            assert res["metrics"]["bytes_sent"] == res["bytes_sent"]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_nonfinite_gradient_on_one_rank_makes_every_rank_raise(name):
    out = SimComm(3).run(train_guarded, name, 6, nan_at=(1, 2))
    for res in out:
        assert isinstance(res, str) and res.startswith("FloatingPointError")
        assert "every rank raises" in res
    if not name.startswith("dp"):
        assert all("rank(s) 1" in res for res in out)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_nonfinite_skip_makes_every_rank_skip(name):
    out = SimComm(3).run(train, name, 6, nan_at=(1, 2), opt_kw={"nonfinite": "skip"})
    for res in out:
        assert res["metrics"]["skipped_steps"] == 1
        assert res["metrics"]["steps"] == 5
        assert torch.isfinite(res["state"]).all()
    if name.startswith("dp"):  # synchronous replicas stay identical (buffers averaged too)
        assert all(torch.equal(res["state"], out[0]["state"]) for res in out)


@pytest.mark.parametrize("name", [*ALGORITHMS, "local_sgd_p1"])
def test_checkpoint_mid_period_resumes_exactly(name, tmp_path):
    full = SimComm(2).run(resume, name, 9, -1, "")
    resumed = SimComm(2).run(resume, name, 9, 5, str(tmp_path))
    for a, b in zip(full, resumed):
        assert torch.equal(a["state"], b["state"])
        assert a["counters"] == b["counters"]


def _save(comm, directory):
    model = make_model(0)
    opt = make_optimizer("local_sgd", model, comm)
    save_checkpoint(directory, comm=comm, optimizer=opt, model=model, step=3)


def _load(comm, directory, name):
    model = make_model(0)
    opt = make_optimizer(name, model, comm)
    load_checkpoint(directory, comm=comm, optimizer=opt, model=model)


def test_checkpoint_manifest_and_mismatches(tmp_path):
    SimComm(2).run(_save, str(tmp_path))
    manifest = (tmp_path / "manifest.json").read_text()
    assert (
        '"world_size": 2' in manifest and '"algorithm": "local_sgd"' in manifest and '"step": 3' in manifest
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "rank00000.pt", "rank00001.pt"]
    with pytest.raises(RankError, match=r"written by 2 ranks, this run has world_size=3") as info:
        SimComm(3).run(_load, str(tmp_path), "local_sgd")
    assert isinstance(info.value.__cause__, CheckpointError)
    with pytest.raises(RankError, match=r"holds 'local_sgd' state, this run uses 'celgc'"):
        SimComm(2).run(_load, str(tmp_path), "celgc")
    SimComm(2).run(_load, str(tmp_path), "local_sgd")


def test_construction_broadcasts_rank_0_model_and_buffers():
    def build(comm):
        model = make_model(10 + comm.rank)
        with torch.no_grad():
            model[1].running_mean.fill_(float(comm.rank))
        make_optimizer("dp_sgd", model, comm)
        return {k: t.clone() for k, t in model.state_dict().items()}

    out = SimComm(3).run(build)
    for states in out[1:]:
        assert all(torch.equal(states[k], out[0][k]) for k in states)
    assert torch.equal(out[2]["1.running_mean"], torch.zeros(8))  # rank 0's buffer


def test_ddp_model_or_double_wrapping_raises():
    from torch.nn.parallel import DistributedDataParallel

    model = make_model(0)
    fake_ddp = DistributedDataParallel.__new__(DistributedDataParallel)  # isinstance is what is checked
    with pytest.raises(ValueError, match="DistributedDataParallel.*communicate twice"):
        DataParallelOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), comm=SingleComm(), module=fake_ddp)
    inner = DataParallelOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), comm=SingleComm())
    with pytest.raises(ValueError, match="already a distributed DataParallelOptimizer"):
        LocalSGD(inner, comm=SingleComm(), period=2)


def test_invalid_arguments_raise():
    params = list(nn.Linear(2, 2).parameters())
    sgd = torch.optim.SGD(params, lr=0.1)
    comm = SingleComm()
    with pytest.raises(ValueError, match="period"):
        LocalSGD(sgd, comm=comm, period=0)
    with pytest.raises(ValueError, match="pullback must be in \\[0, 1\\) when anchor_momentum=0"):
        OverlapLocalSGD(sgd, comm=comm, period=2, pullback=1.0)
    with pytest.raises(ValueError, match="anchor_momentum"):
        OverlapLocalSGD(sgd, comm=comm, period=2, anchor_momentum=1.0)
    with pytest.raises(ValueError, match="nonfinite"):
        DataParallelOptimizer(sgd, comm=comm, nonfinite="ignore")
    with pytest.raises(ValueError, match="comm must implement"):
        DataParallelOptimizer(sgd, comm=object())
    with pytest.raises(ValueError, match="max_norm"):
        CELGC(params, comm=comm, lr=0.1, max_norm=-1.0, period=2)


def test_overlap_pullback_zero_is_independent_workers():
    kw = dict(batchnorm=False, dropout=0.0)

    def run(comm, pull):
        torch.manual_seed(comm.rank)
        model = make_model(0, **kw)
        opt = OverlapLocalSGD(torch.optim.SGD(model.parameters(), lr=0.1), comm=comm, period=2, pullback=pull)
        gen = torch.Generator().manual_seed(comm.rank)
        for _ in range(6):
            opt.zero_grad()
            model(torch.randn(4, 6, generator=gen)).square().mean().backward()
            opt.step()
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    independent = SimComm(2).run(run, 0.0)
    pulled = SimComm(2).run(run, 0.5)
    ref = SimComm(1).run(run, 0.0)[0]
    assert torch.equal(independent[0], ref)
    assert not torch.equal(pulled[0], ref)
