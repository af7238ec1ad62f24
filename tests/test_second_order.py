"""OASIS and HVP-RVR: oracles from the equations, reductions, the closure protocol in the loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.reference import second_order_ref as ref

import scalopt
from scalopt import workloads
from scalopt.bench import records
from scalopt.bench.loop import train_run
from scalopt.bench.spec import RunSpec
from scalopt.optim import registry

LAM = 0.1


def _point(values) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def _logistic_data(seed: int, n: int = 16, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.where(rng.normal(size=n) + X[:, 0] > 0, 1.0, -1.0)
    return X, y


def _logistic_loss(w: torch.Tensor, X: np.ndarray, y: np.ndarray) -> torch.Tensor:
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    return torch.nn.functional.softplus(-yt * (Xt @ w)).mean() + 0.5 * LAM * w.square().sum()


def _rademacher(gen: torch.Generator, d: int) -> np.ndarray:
    """The optimizers' documented draw: randint(0, 2) * 2 − 1 per parameter, in order."""
    return (torch.randint(0, 2, (d,), generator=gen) * 2 - 1).double().numpy()


# -- Hessian-vector products -------------------------------------------------------------------
def test_hvp_matches_numpy_hessian_times_vector():
    X, y = _logistic_data(0)
    w = _point([0.3, -0.2, 0.5, 0.1])
    opt = scalopt.OASIS([w])
    v = np.random.default_rng(1).normal(size=4)
    _, batches = opt.gradients(lambda: _logistic_loss(w, X, y), opt.trainable(), create_graph=True)
    (hv,) = opt.hvp(batches, [[torch.from_numpy(v)]])
    expected = ref.logistic_hessian(w.detach().numpy(), X, y, LAM) @ v
    np.testing.assert_allclose(hv[0].numpy(), expected, rtol=1e-12, atol=1e-14)
    assert opt.metrics()["hvps"] == 1 and opt.metrics()["gradients"] == 1


# -- OASIS ---------------------------------------------------------------------------------------
def test_hutchinson_diagonal_matches_exact_hessian_diagonal_in_expectation():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(5, 5))
    A = M @ M.T + np.eye(5)
    At = torch.from_numpy(A)
    w0 = rng.normal(size=5)
    seeds = 400
    estimates = []
    for seed in range(seeds):
        w = _point(w0)
        opt = scalopt.OASIS([w], init_samples=1, alpha=1e-8, seed=seed)
        opt.step(lambda w=w: 0.5 * w @ (At @ w))
        estimates.append(opt.state[w]["D"].numpy())
        if seed == 0:  # a fixed seed: exactly z ⊙ (A z) for the z that seed draws
            z = _rademacher(torch.Generator().manual_seed(0), 5)
            np.testing.assert_allclose(estimates[0], z * (A @ z), rtol=1e-12)
    # z ⊙ Az has mean diag(A) and variance Σ_{j≠i} A_ij²; allow 5 standard errors of the mean
    off = (A**2).sum(axis=1) - np.diag(A) ** 2
    tolerance = 5 * np.sqrt(off / seeds)
    assert np.all(np.abs(np.mean(estimates, axis=0) - np.diag(A)) <= tolerance)


def test_truncation_uses_max_of_abs_diagonal_and_alpha():
    a = np.array([4.0, 1e-6, -3.0, 0.5])
    w0 = np.array([1.0, -2.0, 0.5, 3.0])
    w = _point(w0)
    opt = scalopt.OASIS([w], lr=0.8, eta0=0.25, alpha=0.1)
    opt.step(lambda: 0.5 * (torch.from_numpy(a) * w * w).sum())
    d_hat = np.array([4.0, 0.1, 3.0, 0.5])  # |D| below α = 0.1 is lifted to α; negative D uses |D|
    np.testing.assert_allclose(w.detach().numpy(), w0 - 0.8 * 0.25 * (a * w0) / d_hat, rtol=1e-14)


def test_oasis_on_diagonal_quadratic_halves_the_iterate():
    a = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    w0 = np.array([1.0, -1.0, 2.0])
    w = _point(w0)
    opt = scalopt.OASIS([w], eta0=0.3, beta2=0.9, alpha=1e-3)
    opt.step(lambda: 0.5 * (a * w * w).sum())
    np.testing.assert_allclose(w.detach().numpy(), 0.7 * w0, rtol=1e-14)  # w_1 = (1 − η_0)·w_0
    for _ in range(4):
        before = w.detach().clone()
        opt.step(lambda: 0.5 * (a * w * w).sum())
        torch.testing.assert_close(w.detach(), before / 2, rtol=1e-13, atol=0)  # η_k = 1/2
        assert opt.metrics()["eta"] == pytest.approx(0.5, rel=1e-13)


def test_oasis_matches_numpy_reference_on_logistic_regression():
    steps, n0 = 6, 3
    # every other batch's features scaled by 3: the local smoothness changes, so both terms of the
    # step-size rule bind (checked below)
    batches = [
        (X * (3.0 if k % 2 else 1.0), y)
        for k, (X, y) in enumerate(_logistic_data(10 + k) for k in range(steps))
    ]
    gen = torch.Generator().manual_seed(7)
    zs = [[_rademacher(gen, 4) for _ in range(n0)]] + [[_rademacher(gen, 4)] for _ in range(steps - 1)]
    w0 = np.array([0.5, -0.3, 0.2, 0.1])
    hp = {"lr": 0.7, "eta0": 0.05, "beta2": 0.9, "alpha": 1e-3}
    expected, etas = ref.oasis(w0, batches, zs, lam=LAM, **hp)
    growth = [
        etas[k] == pytest.approx(math.sqrt(1 + etas[k - 1] / etas[k - 2]) * etas[k - 1])
        for k in range(2, steps)
    ]
    assert any(growth) and not all(growth)
    w = _point(w0)
    opt = scalopt.OASIS([w], init_samples=n0, seed=7, **hp)
    for k, (X, y) in enumerate(batches):
        opt.step(lambda X=X, y=y: _logistic_loss(w, X, y))
        np.testing.assert_allclose(w.detach().numpy(), expected[k + 1], rtol=1e-10, atol=1e-13)
        assert opt.metrics()["eta"] == pytest.approx(etas[k], rel=1e-10)
    m = opt.metrics()
    assert m["hvps"] == n0 + steps - 1 and m["gradients"] == 1 + 2 * (steps - 1) and m["step_hvps"] == 1


def test_oasis_keeps_eta_when_a_zero_lr_step_meets_a_random_closure():
    # lr = 0 leaves w_1 = w_0 while a noisy closure (dropout-like) changes the gradient: the local
    # term is 0/‖Δg‖; η must stay η_{k−1} (not collapse to 0 and divide by zero next step)
    a = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    w = _point([1.0, -1.0, 2.0])
    opt = scalopt.OASIS([w], lr=0.0, eta0=0.3, beta2=0.9, alpha=1e-3)
    noise = torch.Generator().manual_seed(3)

    def closure():
        return 0.5 * (a * w * w).sum() + (torch.randn(3, generator=noise, dtype=torch.float64) * w).sum()

    opt.step(closure)
    opt.step(closure)
    assert opt.metrics()["eta"] == 0.3
    opt.param_groups[0]["lr"] = 1.0
    for _ in range(2):
        opt.step(closure)
        assert math.isfinite(opt.metrics()["eta"]) and opt.metrics()["eta"] > 0
    assert torch.isfinite(w).all()


# -- HVP-RVR ----------------------------------------------------------------------------------
class _Stream:
    """Batches in order; records which ones each step used (the current one, then sample()'s)."""

    def __init__(self, batches):
        self.batches, self.i, self.used = batches, 0, []

    def next(self):
        batch = self.batches[self.i]
        self.i += 1
        self.used[-1].append(batch)
        return batch

    def step(self, opt, loss):
        self.used.append([])
        current = self.next()
        return opt.step(lambda: loss(current), lambda: loss(self.next()))


def test_hvp_rvr_with_p1_is_minibatch_sgd_with_b_batches():
    rng = np.random.default_rng(3)
    batches = [
        (torch.from_numpy(rng.normal(size=(4, 3))), torch.from_numpy(rng.normal(size=4))) for _ in range(18)
    ]
    w0 = rng.normal(size=3)
    w = _point(w0)
    opt = scalopt.HVPRVR([w], lr=0.1, reset_prob=1.0, reset_batches=3)
    stream = _Stream(batches)
    for _ in range(6):
        stream.step(opt, lambda b: ((b[0] @ w - b[1]) ** 2).mean())
    v = _point(w0)
    sgd = torch.optim.SGD([v], lr=0.1)
    for t in range(6):
        X = torch.cat([b[0] for b in batches[3 * t : 3 * t + 3]])
        y = torch.cat([b[1] for b in batches[3 * t : 3 * t + 3]])
        sgd.zero_grad()
        ((X @ v - y) ** 2).mean().backward()
        sgd.step()
    torch.testing.assert_close(w.detach(), v.detach(), rtol=1e-13, atol=1e-15)
    assert opt.metrics()["resets"] == 6 and opt.metrics()["hvps"] == 0


def test_hvp_rvr_on_exact_quadratic_is_gradient_descent():
    rng = np.random.default_rng(4)
    M = rng.normal(size=(4, 4))
    A = torch.from_numpy(M @ M.T / 4 + np.eye(4))
    b = torch.from_numpy(rng.normal(size=4))
    x0 = rng.normal(size=4)
    x = _point(x0)
    opt = scalopt.HVPRVR([x], lr=0.2, reset_prob=0.0, radius=0.05)  # several HVP points per step

    def f():
        return 0.5 * x @ (A @ x) - b @ x

    y = torch.from_numpy(x0)
    for _ in range(12):
        opt.step(f, f)
        y = y - 0.2 * (A @ y - b)
        torch.testing.assert_close(x.detach(), y, rtol=1e-11, atol=1e-12)
    m = opt.metrics()
    assert m["resets"] == 1 and m["hvps"] > m["steps"] - 1  # only g_0 is a gradient; K_t > 1 happened


def test_hvp_rvr_matches_numpy_reference_on_logistic_regression():
    steps, p, b = 10, 0.4, 2
    batches = [_logistic_data(100 + k) for k in range(3 * steps)]
    x0 = np.array([0.2, 0.1, -0.4, 0.3])
    x = _point(x0)
    opt = scalopt.HVPRVR([x], lr=0.5, reset_prob=p, reset_batches=b, seed=11)
    stream = _Stream(batches)
    for _ in range(steps):
        stream.step(opt, lambda batch: _logistic_loss(x, *batch))
    gen = torch.Generator().manual_seed(11)  # the documented draw order: coin, then the K_t points
    plan = [{"reset": True, "batches": stream.used[0], "u": []}]
    for t in range(1, steps):
        reset = bool(torch.rand(1, generator=gen, dtype=torch.float64)[0] < p)
        u = [] if reset else torch.rand(1, generator=gen, dtype=torch.float64).tolist()
        plan.append({"reset": reset, "batches": stream.used[t], "u": u})
    assert 1 < sum(s["reset"] for s in plan) < steps  # both branches ran
    expected = ref.hvp_rvr(x0, plan, lam=LAM, lr=0.5)
    np.testing.assert_allclose(x.detach().numpy(), expected[-1], rtol=1e-10, atol=1e-13)
    assert opt.metrics()["resets"] == sum(s["reset"] for s in plan)


# -- arguments, protocol, registry ----------------------------------------------------------------
@pytest.mark.parametrize(
    "cls,kwargs,name",
    [
        (scalopt.OASIS, {"eta0": 0.0}, "eta0"),
        (scalopt.OASIS, {"beta2": 1.0}, "beta2"),
        (scalopt.OASIS, {"alpha": -1e-3}, "alpha"),
        (scalopt.OASIS, {"init_samples": 0}, "init_samples"),
        (scalopt.OASIS, {"seed": -1}, "seed"),
        (scalopt.HVPRVR, {"reset_prob": 1.5}, "reset_prob"),
        (scalopt.HVPRVR, {"reset_batches": 0}, "reset_batches"),
        (scalopt.HVPRVR, {"radius": 0.0}, "radius"),
        (scalopt.HVPRVR, {"lr": float("inf")}, "lr"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([_point([1.0])], **kwargs)


def test_registry_and_cli_say_which_optimizers_take_a_closure(capsys):
    assert registry.get("oasis").closure == "loss"
    assert registry.get("hvp-rvr").closure == "loss+sample"
    assert registry.get("adamw").closure is None and registry.get("torch-sgd").closure is None
    from scalopt.cli import main

    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert lines["oasis"].endswith("[closure]") and lines["hvp-rvr"].endswith("[closure+sample]")
    assert "[closure" not in lines["adamw"]


# -- in the training loop: double backward through real models, resume exactness ---------------------
TINY = {
    "digits": {},
    "stdlib-lm": {"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16, "batch_size": 4},
}


@pytest.mark.parametrize("workload", ["digits", "stdlib-lm"])
@pytest.mark.parametrize("optimizer,hparams", [("oasis", {"alpha": 1e-2}), ("hvp-rvr", {"lr": 0.05})])
def test_double_backward_through_the_workloads(tmp_path, workload, optimizer, hparams):
    """stdlib-lm's attention runs under the math SDPA backend (the fused CPU kernel has no double
    backward); digits is a CNN. Both train with Hessian-vector products in the loop."""
    spec = RunSpec(
        workload=workload,
        optimizer=optimizer,
        hparams=hparams,
        steps=4,
        eval_every=4,
        workload_overrides=TINY[workload],
    )
    header = train_run(spec, tmp_path, progress=False)
    rows = records.read_rows(tmp_path)
    assert header["status"] == "done" and "diverged" not in header
    assert all(math.isfinite(r["loss"]) and r["iter_time"] >= r["step_time"] for r in rows)
    assert rows[-1]["opt_hvps"] >= 2 and rows[-1]["opt_steps"] == 4


class _Crash(Exception):
    pass


class _CrashingWorkload:
    def __init__(self, inner, crash_at):
        self.inner, self.crash_at, self.calls = inner, crash_at, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == self.crash_at:
            raise _Crash("injected")
        return self.inner.loss(model, batch)


@pytest.mark.parametrize(
    "optimizer,hparams",
    [("oasis", {"alpha": 0.1}), ("hvp-rvr", {"lr": 0.05, "reset_prob": 0.2, "reset_batches": 2})],
)
def test_resumed_run_ends_exactly_like_uninterrupted(tmp_path, optimizer, hparams):
    """The checkpoint carries the optimizer's generator and the data position (sample() draws
    from the loop's stream), so the resumed run repeats every draw."""
    spec = RunSpec(workload="quadratic", optimizer=optimizer, hparams=hparams, steps=30, eval_every=10)
    full = train_run(spec, tmp_path / "full", checkpoint_every=10, progress=False)
    crashing = _CrashingWorkload(workloads.get("quadratic"), crash_at=25)
    with pytest.raises(_Crash):
        train_run(spec, tmp_path / "crash", checkpoint_every=10, progress=False, workload=crashing)
    resumed = train_run(spec, tmp_path / "crash", checkpoint_every=10, progress=False)
    assert resumed["resumed_from"] >= 10
    assert resumed["final"] == full["final"]
    full_rows, resumed_rows = records.read_rows(tmp_path / "full"), records.read_rows(tmp_path / "crash")
    assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in full_rows]
    assert full_rows[-1]["opt_hvps"] == resumed_rows[-1]["opt_hvps"] > 0


class _PoisonedWorkload(_CrashingWorkload):
    """From the ``crash_at``-th loss on, a NaN enters the gradient of the first coordinate."""

    def loss(self, model, batch):
        self.calls += 1
        value = self.inner.loss(model, batch)
        if self.calls >= self.crash_at:
            mask = torch.zeros_like(model.x)
            mask[0] = float("nan")
            value = value + (model.x * mask).sum()
        return value


@pytest.mark.parametrize("optimizer", ["hvp-rvr", "trsgd"], ids=["closure", "plain"])
def test_loop_records_an_optimizer_that_raises_as_diverged(tmp_path, optimizer):
    spec = RunSpec(workload="quadratic", optimizer=optimizer, hparams={"lr": 0.05}, steps=30, eval_every=10)
    poisoned = _PoisonedWorkload(workloads.get("quadratic"), crash_at=12)
    header = train_run(spec, tmp_path, progress=False, workload=poisoned)
    assert header["diverged"] and "non-finite gradient in x" in header["nonfinite"]
    assert 1 < header["final"]["steps"] < 30 and math.isnan(records.read_rows(tmp_path)[-1]["loss"])
