"""Tests of the embedded workloads: determinism, RNG hygiene, resumable data streams, offline-ness,
the registry, the known constants of the synthetic objectives, and that SGD makes progress."""

from __future__ import annotations

import itertools
import json
import math
import socket
from typing import Any

import pytest
import torch

from scalopt import workloads
from scalopt.workloads import L0L1, Quadratic, Rosenbrock, Workload

# Small configs so the whole file runs in seconds; rosenbrock gets noise and a random start so that
# its seed actually matters.
SMALL: dict[str, dict[str, Any]] = {
    "stdlib-lm": dict(d_model=32, n_layers=1, n_heads=2, seq_len=32, batch_size=4, corpus_bytes=200_000),
    "digits": dict(batch_size=16),
    "ctr": dict(n_train=4000, n_eval=1000, vocab_size=500, batch_size=32),
    "l0l1": dict(dim=10, n_terms=32),
    "quadratic": dict(),
    "rosenbrock": dict(noise=0.1, init_perturbation=0.1),
    "reddi": dict(),
}
SGD_LR = {
    "stdlib-lm": 0.5,
    "digits": 0.1,
    "ctr": 0.5,
    "l0l1": 1e-3,
    "quadratic": 0.05,
    "rosenbrock": 1e-3,
    "reddi": 0.05,
}
DETERMINISTIC = {"reddi"}  # a fixed sequence of losses from a fixed start: seeds cannot matter


def test_small_configs_cover_registry() -> None:
    assert sorted(SMALL) == workloads.names()


def small(name: str) -> Workload:
    return workloads.get(name, **SMALL[name])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flat(batch: Any) -> list[torch.Tensor]:
    if batch is None:
        return []
    if isinstance(batch, torch.Tensor):
        return [batch]
    return [t for part in batch for t in flat(part)]


def same_batch(a: Any, b: Any) -> bool:
    fa, fb = flat(a), flat(b)
    return len(fa) == len(fb) and all(torch.equal(x, y) for x, y in zip(fa, fb))


def same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


@pytest.fixture(params=sorted(SMALL))
def workload(request: pytest.FixtureRequest) -> Workload:
    return small(request.param)


def test_same_seed_is_deterministic(workload: Workload) -> None:
    m1, m2 = workload.init_model(gen(1)), workload.init_model(gen(1))
    assert all(p.dtype == torch.float32 for p in m1.parameters())
    assert same_params(m1, m2)
    b1 = list(itertools.islice(workload.batches("train", gen(2)), 3))
    b2 = list(itertools.islice(workload.batches("train", gen(2)), 3))
    assert all(same_batch(x, y) for x, y in zip(b1, b2))
    assert workload.evaluate(m1) == workload.evaluate(m2)
    e1, e2 = list(workload.batches("eval", gen(3))), list(workload.batches("eval", gen(4)))
    assert len(e1) == len(e2) > 0 and all(same_batch(x, y) for x, y in zip(e1, e2))


def test_different_seeds_differ(workload: Workload) -> None:
    if workload.name in DETERMINISTIC:
        pytest.skip("the Reddi counterexample is deterministic by construction")
    m1, m2 = workload.init_model(gen(1)), workload.init_model(gen(2))
    assert not same_params(m1, m2)
    assert workload.evaluate(m1) != workload.evaluate(m2)
    b1 = list(itertools.islice(workload.batches("train", gen(1)), 3))
    b2 = list(itertools.islice(workload.batches("train", gen(2)), 3))
    assert not all(same_batch(x, y) for x, y in zip(b1, b2))


def test_global_rng_untouched(workload: Workload) -> None:
    before = torch.get_rng_state()
    model = workload.init_model(gen(0))
    batch = next(workload.batches("train", gen(0)))
    workload.loss(model, batch).backward()
    list(workload.batches("eval", gen(0)))
    workload.evaluate(model)
    assert torch.equal(torch.get_rng_state(), before)


def test_loss_is_finite_scalar_with_all_gradients(workload: Workload) -> None:
    model = workload.init_model(gen(0))
    model.train()
    loss = workload.loss(model, next(workload.batches("train", gen(0))))
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        grad = p.grad.to_dense() if p.grad.is_sparse else p.grad
        assert torch.isfinite(grad).all(), name
    metrics = workload.evaluate(model)
    assert model.training
    assert "loss" in metrics and all(math.isfinite(v) for v in metrics.values())


def test_generator_state_is_the_data_position(workload: Workload) -> None:
    g = gen(5)
    stream = workload.batches("train", g)
    for _ in range(2):
        next(stream)
    state = g.get_state()
    expected = [next(stream) for _ in range(3)]
    g2 = torch.Generator()
    g2.set_state(state)
    resumed = workload.batches("train", g2)
    assert all(same_batch(next(resumed), b) for b in expected)


def test_describe_is_json_with_config_and_hash(workload: Workload) -> None:
    info = json.loads(json.dumps(workload.describe()))
    assert info["name"] == workload.name
    assert len(info["data_hash"]) == 64 and info["data_hash"] == workload.data_hash()
    for key, value in SMALL[workload.name].items():
        assert info[key] == value
    assert "target_loss" in info and "default_steps" in info


@pytest.mark.parametrize("name", sorted(SMALL))
def test_offline(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    w = small(name)
    model = w.init_model(gen(0))
    workload_loss = w.loss(model, next(w.batches("train", gen(0))))
    assert math.isfinite(workload_loss.item())
    assert "loss" in w.evaluate(model)
    w.describe()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sgd_decreases_eval_loss(name: str) -> None:
    w = small(name)
    g = gen(0)
    model = w.init_model(g)
    opt = torch.optim.SGD(model.parameters(), lr=SGD_LR[name])
    start = w.evaluate(model)["loss"]
    stream = w.batches("train", g)
    for _ in range(30):
        opt.zero_grad()
        w.loss(model, next(stream)).backward()
        opt.step()
    assert w.evaluate(model)["loss"] < start


def test_defaults_are_meaningful() -> None:
    for name in workloads.names():
        cls = workloads.WORKLOADS[name]
        w = cls()
        assert w.default_steps >= 1 and math.isfinite(w.target_loss)
        assert cls.name == name


# -- registry and validation ---------------------------------------------------------------------
def test_registry_names_sorted_and_complete() -> None:
    assert workloads.names() == sorted(
        ["stdlib-lm", "digits", "ctr", "l0l1", "quadratic", "rosenbrock", "reddi"]
    )
    assert isinstance(workloads.get("quadratic"), Quadratic)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names") as info:
        workloads.get("mnist")
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in workloads.names())


def test_unknown_override_names_the_field() -> None:
    with pytest.raises(ValueError, match="bogus"):
        workloads.get("digits", bogus=1)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("stdlib-lm", "d_model", 0),
        ("stdlib-lm", "eval_fraction", 0.9),
        ("stdlib-lm", "n_heads", 3),
        ("digits", "batch_size", 0),
        ("ctr", "zipf_exponent", -1.0),
        ("ctr", "sparse", "yes"),
        ("l0l1", "beta_max", 0.1),
        ("quadratic", "L", 0.01),
        ("quadratic", "noise", -0.1),
        ("rosenbrock", "dim", 1),
        ("quadratic", "default_steps", 0),
        ("digits", "target_loss", float("nan")),
    ],
)
def test_bad_config_names_field(name: str, field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        workloads.get(name, **{field: value})


def test_unknown_split_raises() -> None:
    with pytest.raises(ValueError, match="split"):
        workloads.get("quadratic").batches("test", gen(0))


def test_workloads_are_frozen() -> None:
    w = workloads.get("quadratic")
    with pytest.raises(AttributeError):
        w.dim = 3  # type: ignore[misc]


# -- known constants --------------------------------------------------------------------------------
def test_l0l1_constants_hold_numerically() -> None:
    w = L0L1(dim=8, n_terms=64)
    g = gen(0)
    x_star = w.x_star
    for scale in (0.0, 0.3, 1.0, 3.0, 6.0):
        for _ in range(4):
            x = x_star + scale * torch.randn(w.dim, generator=g, dtype=torch.float64)
            hess = torch.autograd.functional.hessian(w.objective, x)
            grad = torch.autograd.functional.jacobian(w.objective, x)
            torch.testing.assert_close(grad, w.gradient(x))
            assert torch.linalg.matrix_norm(hess, ord=2) <= (w.L0 + w.L1 * grad.norm()) * (1 + 1e-9)


def test_l0l1_minimum() -> None:
    w = L0L1(dim=8, n_terms=64)
    x_star = w.x_star
    assert float(w.objective(x_star)) == pytest.approx(w.f_star, rel=1e-12)
    assert float(w.gradient(x_star).norm()) < 1e-10
    hess = torch.autograd.functional.hessian(w.objective, x_star)
    assert float(torch.linalg.eigvalsh(hess).min()) > 0  # strictly convex: x* is the minimiser
    assert float(torch.linalg.matrix_norm(hess, ord=2)) == pytest.approx(w.L0, rel=1e-9)  # L0 is tight
    g = gen(1)
    for _ in range(20):
        x = x_star + torch.randn(w.dim, generator=g, dtype=torch.float64)
        assert float(w.objective(x)) > w.f_star


def test_l0l1_default_starts_far_from_optimum() -> None:
    w = L0L1()
    m = w.init_model(gen(0))
    metrics = w.evaluate(m)
    assert metrics["gap"] > 100 and metrics["grad_norm"] > 100
    assert w.target_loss == pytest.approx(w.f_star + 0.1, abs=1e-3)


def test_quadratic_minimum_and_gradient() -> None:
    w = Quadratic()
    x_star = w.x_star
    assert float(w.objective(x_star)) == pytest.approx(0.0, abs=1e-12)
    assert torch.linalg.eigvalsh(w.A).min() == pytest.approx(w.mu)
    assert torch.linalg.eigvalsh(w.A).max() == pytest.approx(w.L)
    x = x_star + torch.randn(w.dim, generator=gen(0), dtype=torch.float64)
    grad = torch.autograd.functional.jacobian(w.objective, x)
    torch.testing.assert_close(grad, w.A @ (x - x_star))
    model = w.init_model(gen(0))
    with torch.no_grad():
        model.x.copy_(x_star)
    assert w.evaluate(model)["loss"] == pytest.approx(0.0, abs=1e-10)
    # a noisy batch adds xi^T x to the loss, i.e. xi to the gradient
    xi = next(w.batches("train", gen(0)))
    model.zero_grad()
    w.loss(model, xi).backward()
    torch.testing.assert_close(model.x.grad, (w.A @ (model.x.double() - x_star)).float() + xi)


def test_rosenbrock_default_start_and_minimum() -> None:
    w = Rosenbrock()
    model = w.init_model(gen(0))
    assert model.x.tolist() == pytest.approx([-1.2, 1.0])
    assert next(w.batches("train", gen(0))) is None
    assert w.evaluate(model)["loss"] == pytest.approx(24.2, rel=1e-6)
    with torch.no_grad():
        model.x.fill_(1.0)
    metrics = w.evaluate(model)
    assert metrics["loss"] == 0.0 and metrics["grad_norm"] == 0.0
    x = torch.tensor([0.3, -0.7, 1.1, 0.5], dtype=torch.float64)
    from scalopt.workloads.rosenbrock import rosenbrock, rosenbrock_grad

    torch.testing.assert_close(torch.autograd.functional.jacobian(rosenbrock, x), rosenbrock_grad(x))


# -- workload-specific facts ------------------------------------------------------------------------
def test_stdlib_lm_corpus_facts() -> None:
    w = small("stdlib-lm")
    info = w.describe()
    assert info["corpus_size"] == 200_000 and info["n_files"] > 0
    assert info["eval_bytes"] == 10_000 and info["train_bytes"] == 190_000
    import sys

    assert info["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    from scalopt.workloads.stdlib_lm import stdlib_files, stdlib_root

    files = stdlib_files(stdlib_root())
    assert files == sorted(files)
    banned = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    assert not any(banned & set(f.split("/")[:-1]) for f in files)
    metrics = w.evaluate(w.init_model(gen(0)))
    assert metrics["bits_per_byte"] == pytest.approx(metrics["loss"] / math.log(2))
    assert metrics["loss"] == pytest.approx(math.log(256), rel=0.05)  # untrained model ~ uniform


def test_digits_split_is_fixed() -> None:
    w = workloads.get("digits")
    info = w.describe()
    assert (info["n_train"], info["n_eval"]) == (1438, 359)
    metrics = w.evaluate(w.init_model(gen(0)))
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_ctr_sparse_embeddings_and_skew() -> None:
    w = workloads.get("ctr", **SMALL["ctr"], sparse=True)
    model = w.init_model(gen(0))
    w.loss(model, next(w.batches("train", gen(0)))).backward()
    assert all(t.weight.grad.is_sparse for t in model.embeddings)
    ids = w.data().train_ids
    counts = torch.bincount(ids[:, 0], minlength=w.vocab_size)
    assert counts[:10].sum() > counts[-100:].sum()  # Zipf-like skew
    metrics = w.evaluate(model)
    assert {"loss", "accuracy", "auc"} <= set(metrics)
    # The data distribution is fixed by data_seed, not the run's generator.
    assert w.data_hash() == workloads.get("ctr", **SMALL["ctr"]).data_hash()
    assert w.data_hash() != workloads.get("ctr", **SMALL["ctr"], data_seed=1).data_hash()


def test_ctr_auc_matches_ranking_definition() -> None:
    from scalopt.workloads.ctr import auc

    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    pairs = [(p, n) for p in (0.35, 0.8, 0.4) for n in (0.1, 0.4)]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auc(scores, labels) == pytest.approx(expected)
