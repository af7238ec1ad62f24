"""scalopt.federated: the algorithms against NumPy oracles, reductions, partitions, faults, resume."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch

from reference import federated_ref as ref
from scalopt.federated import (
    ClientData,
    FedAdam,
    FedAvg,
    FedLADA,
    LocalAdam,
    dirichlet_partition,
    federated_round,
)
from scalopt.federated import registry as algorithms
from scalopt.workloads.base import Point

DIM = 5


def lsq_loss(model, batch):
    A, b = batch
    return 0.5 * ((A @ model() - b) ** 2).sum() / A.shape[0]


def lsq_clients(n: int, rows: int = 6, seed: int = 0, sizes=None):
    rng = np.random.default_rng(seed)
    data = [(rng.standard_normal((rows, DIM)), rng.standard_normal(rows)) for _ in range(n)]
    clients = [
        ClientData(
            name=f"c{i}",
            num_examples=(sizes[i] if sizes else rows),
            make_batches=lambda g, A=A, b=b: itertools.repeat(
                (torch.tensor(A, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
            ),
        )
        for i, (A, b) in enumerate(data)
    ]
    return data, clients


def x0(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM)


def make(cls, n_per_round: int, **kw):
    model = Point(torch.tensor(x0(), dtype=torch.float32))
    return cls(model.parameters(), clients_per_round=n_per_round, **kw), model


def run_rounds(algo, clients, model, rounds: int):
    return [federated_round(algo, clients, model, lsq_loss, data_seed=3) for _ in range(rounds)]


# -- FedLADA ---------------------------------------------------------------------------------------
def test_fedlada_one_client_one_step_alpha1_is_one_amsgrad_step():
    data, clients = lsq_clients(1)
    lr, (b1, b2), eps = 0.05, (0.9, 0.99), 1e-8
    algo, model = make(FedLADA, 1, lr=lr, betas=(b1, b2), eps=eps, alpha=1.0, local_steps=1)
    run_rounds(algo, clients, model, 1)
    g = ref.grad(*data[0], x0())
    m, v = (1 - b1) * g, b2 * eps**2 + (1 - b2) * g * g
    expected = x0() - lr * m / np.sqrt(np.maximum(eps**2, v))  # AMSGrad, v warm-started at ε²
    v_bar, g_a = np.full(DIM, eps**2), np.zeros(DIM)
    oracle, _ = ref.fedlada_client(x0(), v_bar, g_a, *data[0], K=1, lr=lr, beta1=b1, beta2=b2, alpha=1.0)
    np.testing.assert_allclose(oracle, expected, rtol=1e-12)
    np.testing.assert_allclose(algo.x[0].double().numpy(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_fedlada_client_and_server_match_the_reference(alpha):
    data, clients = lsq_clients(3)
    kw = dict(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-3, alpha=alpha, server_lr=0.8)
    algo, model = make(
        FedLADA, 3, lr=0.02, betas=(0.9, 0.99), eps=1e-3, alpha=alpha, server_lr=0.8, local_steps=3
    )
    run_rounds(algo, clients, model, 4)
    expected = ref.fedlada(x0(), data, 4, K=3, **kw)
    np.testing.assert_allclose(algo.x[0].double().numpy(), expected, rtol=1e-4, atol=1e-6)
    # the server state after the rounds, too: v̄ and g_a
    x, v, g_a = x0(), np.full(DIM, 1e-6), np.zeros(DIM)
    for _ in range(4):
        outs = [
            ref.fedlada_client(x, v, g_a, A, b, K=3, lr=0.02, beta1=0.9, beta2=0.99, alpha=alpha)
            for A, b in data
        ]
        x_bar = np.mean([o[0] for o in outs], axis=0)
        v, g_a, x = np.mean([o[1] for o in outs], axis=0), (x - x_bar) / 0.06, x + 0.8 * (x_bar - x)
    np.testing.assert_allclose(algo.v[0].double().numpy(), v, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(algo.g_a[0].double().numpy(), g_a, rtol=1e-3, atol=1e-5)


def test_local_adam_is_fedlada_with_alpha_one_and_sends_no_offset():
    _, clients = lsq_clients(3)
    a, model_a = make(FedLADA, 2, alpha=1.0, lr=0.01, local_steps=2)
    b, model_b = make(LocalAdam, 2, lr=0.01, local_steps=2)
    run_rounds(a, clients, model_a, 3)
    run_rounds(b, clients, model_b, 3)
    assert torch.equal(a.x[0], b.x[0])
    model_bytes = DIM * 4
    assert sum(a.counters["bytes_down"].values()) == 3 * 2 * 3 * model_bytes  # x, v̄, g_a
    assert sum(b.counters["bytes_down"].values()) == 3 * 2 * 2 * model_bytes  # x, v̄
    assert sum(b.counters["bytes_up"].values()) == 3 * 2 * 2 * model_bytes  # x_i, v̂_i
    with pytest.raises(ValueError, match="alpha"):
        LocalAdam([torch.zeros(2)], alpha=0.5)


# -- FedAvg and FedAdam ------------------------------------------------------------------------------
def test_fedavg_full_participation_k1_equals_sgd_on_the_union_batch():
    data, clients = lsq_clients(4, rows=8)
    algo, model = make(FedAvg, 4, local_hparams={"lr": 0.1}, local_steps=1)
    run_rounds(algo, clients, model, 1)
    union = Point(torch.tensor(x0(), dtype=torch.float32))
    A = torch.tensor(np.concatenate([d[0] for d in data]), dtype=torch.float32)
    b = torch.tensor(np.concatenate([d[1] for d in data]), dtype=torch.float32)
    opt = torch.optim.SGD(union.parameters(), lr=0.1)
    lsq_loss(union, (A, b)).backward()
    opt.step()
    # same math, different float32 summation order: agree to a few ulps of the step
    torch.testing.assert_close(algo.x[0], union.x.detach(), rtol=1e-6, atol=1e-6)


def test_fedavg_weights_by_examples_and_takes_any_local_optimizer():
    data, clients = lsq_clients(2, sizes=[1, 3])
    algo, model = make(FedAvg, 2, local_optimizer="adam", local_hparams={"lr": 0.01}, local_steps=2)
    before = algo.x[0].clone()
    ups = [
        algo.client_update(model, algo.broadcast(), c.batches(torch.Generator()), lsq_loss)[0]
        for c in clients
    ]
    algo.aggregate([(1, ups[0]), (3, ups[1])])
    expected = before + 0.25 * ups[0]["delta"][0] + 0.75 * ups[1]["delta"][0]
    torch.testing.assert_close(algo.x[0], expected)
    clipped, m = make(FedAdam, 2, local_optimizer="clipped-sgd", local_hparams={"lr": 0.1, "max_norm": 1.0})
    run_rounds(clipped, clients, m, 1)
    assert torch.isfinite(clipped.x[0]).all()


def test_fedadam_server_step_matches_reddi_et_al():
    rng = np.random.default_rng(5)
    deltas = [[rng.standard_normal(DIM) * 0.1 for _ in range(3)] for _ in range(4)]
    weights = [[2, 1, 3]] * 4
    algo, _ = make(FedAdam, 3, server_lr=0.05, betas=(0.9, 0.99), tau=1e-2)
    for round_deltas in deltas:
        algo.aggregate(
            [(w, {"delta": [torch.tensor(d, dtype=torch.float32)]}) for w, d in zip(weights[0], round_deltas)]
        )
    expected = ref.fedadam_server(x0(), deltas, weights, lr=0.05, beta1=0.9, beta2=0.99, tau=1e-2)
    np.testing.assert_allclose(algo.x[0].double().numpy(), expected, rtol=1e-5, atol=1e-6)


# -- partitions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.05, 0.5, math.inf])
def test_dirichlet_partition_is_reproducible_and_covers_every_example_once(alpha):
    labels = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    a = dirichlet_partition(labels, 20, alpha, torch.Generator().manual_seed(7))
    b = dirichlet_partition(labels, 20, alpha, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(len(p) > 0 for p in a)
    assert torch.equal(torch.sort(torch.cat(a)).values, torch.arange(500))
    if math.isinf(alpha):  # IID: every client within one example per class of the even share
        assert max(len(p) for p in a) - min(len(p) for p in a) <= 10


def test_digits_split_records_label_histograms():
    from scalopt import workloads

    clients = workloads.get("digits").federated_clients(
        20, alpha=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert len(clients) == 20 and sum(c.num_examples for c in clients) == 1438
    assert all(sum(c.label_histogram) == c.num_examples for c in clients)
    skewed = sum(max(c.label_histogram) / c.num_examples for c in clients) / 20
    assert skewed > 0.5  # α = 0.1: most of a client's examples are of one class


def test_stdlib_split_is_disjoint_groups_of_files():
    from scalopt import workloads

    wl = workloads.get("stdlib-lm", corpus_bytes=200_000)
    clients = wl.federated_clients(4, alpha=1.0, generator=torch.Generator())
    assert len(clients) == 4
    assert sum(c.num_examples + wl.seq_len for c in clients) == len(wl._split()[0])
    assert next(clients[0].batches(torch.Generator())).shape == (wl.batch_size, wl.seq_len + 1)


# -- faults ----------------------------------------------------------------------------------------
def _faulty(clients):
    def boom(g):
        raise RuntimeError("client crashed")

    nan_batch = (torch.full((6, DIM), float("nan")), torch.zeros(6))
    return [
        clients[0],
        ClientData(name="raiser", num_examples=6, make_batches=boom),
        ClientData(name="nan", num_examples=6, make_batches=lambda g: itertools.repeat(nan_batch)),
        clients[1],
    ]


@pytest.mark.parametrize("cls", [FedAvg, FedLADA])
def test_faulty_clients_are_left_out_counted_and_named(cls):
    _, clients = lsq_clients(2)
    algo, model = make(cls, 4, local_steps=2)
    (rec,) = run_rounds(algo, _faulty(clients), model, 1)
    assert set(rec.failed) == {"raiser", "nan"} and "client crashed" in rec.failed["raiser"]
    assert sorted(rec.good) == ["c0", "c1"] and not rec.skipped
    assert algo.counters["failures"] == 2 and algo.counters["failed_clients"] == {"raiser": 1, "nan": 1}
    good, good_model = make(cls, 2, local_steps=2)
    run_rounds(good, clients, good_model, 1)
    assert torch.equal(algo.x[0], good.x[0])  # the good clients' aggregate, bitwise


def test_too_few_good_clients_skip_the_round_with_a_warning():
    _, clients = lsq_clients(2)
    algo, model = make(FedAvg, 4, min_clients=3, local_steps=1)
    before = algo.x[0].clone()
    with pytest.warns(RuntimeWarning, match="round skipped"):
        (rec,) = run_rounds(algo, _faulty(clients), model, 1)
    assert rec.skipped and torch.equal(algo.x[0], before) and algo.counters["skipped_rounds"] == 1


def test_wrong_shapes_and_keys_are_rejected():
    algo, _ = make(FedAvg, 1)
    for bad in (
        {"delta": [torch.zeros(DIM + 1)]},
        {"x": [torch.zeros(DIM)]},
        {"delta": [torch.zeros(DIM).double()]},
    ):
        with pytest.raises(ValueError, match="upload"):
            algo.check_upload(bad)


# -- state and resume ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", algorithms.names())
def test_resume_from_state_dict_is_bitwise(name):
    _, clients = lsq_clients(5)
    kw = dict(local_steps=2, clients_per_round=2, seed=4)
    straight = algorithms.build(name, [torch.tensor(x0(), dtype=torch.float32)], **kw)
    model = Point(torch.zeros(DIM))
    run_rounds(straight, clients, model, 5)
    first = algorithms.build(name, [torch.tensor(x0(), dtype=torch.float32)], **kw)
    run_rounds(first, clients, model, 2)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = algorithms.build(name, [torch.zeros(DIM)], **kw)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    run_rounds(resumed, clients, model, 3)
    assert torch.equal(straight.x[0], resumed.x[0])
    assert straight.counters == resumed.counters and resumed.round == 5


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [
        (FedAvg, {"local_steps": 0}, "local_steps"),
        (FedAvg, {"clients_per_round": 0}, "clients_per_round"),
        (FedAvg, {"min_clients": 3, "clients_per_round": 2}, "min_clients"),
        (FedAvg, {"server_lr": -1.0}, "server_lr"),
        (FedAvg, {"local_optimizer": "nope"}, "local_optimizer"),
        (FedAvg, {"weighting": "size"}, "weighting"),
        (FedAdam, {"tau": 0.0}, "tau"),
        (FedLADA, {"alpha": 0.0}, "alpha"),
        (FedLADA, {"alpha": 1.5}, "alpha"),
        (FedLADA, {"lr": 0.0}, "lr"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.zeros(3)], **kw)


def test_invalid_sample_size_partition_and_dtype():
    algo = FedAvg([torch.zeros(3)], clients_per_round=5)
    with pytest.raises(ValueError, match="clients_per_round"):
        algo.sample(4)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition([0, 1, 2], 2, 0.0, torch.Generator())
    with pytest.raises(ValueError, match="n_clients"):
        dirichlet_partition([0, 1, 2], 4, 1.0, torch.Generator())
    with pytest.raises(ValueError, match="float32"):
        FedAvg([torch.zeros(3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="unknown federated algorithm"):
        algorithms.build("fedsgd", [torch.zeros(3)])
