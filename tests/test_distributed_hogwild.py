"""Hogwild!: lock-free shared-memory workers (real processes, torch threads pinned to 1)."""

from __future__ import annotations

import pytest
import torch

from distributed_helpers import LinearRegressionWorkload, sgd_factory
from scalopt.distributed import Diminishing, LaunchError, hogwild
from scalopt.distributed.hogwild import coordinate_update

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_one_worker_equals_sgd_with_the_same_diminishing_schedule():
    workload = LinearRegressionWorkload()
    schedule = Diminishing(c=2.0, E=20.0)
    result = hogwild(workload, sgd_factory(1.0), workers=1, steps=30, lr=schedule, init_seed=3, data_seed=9)

    model = workload.init_model(torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    batches = workload.batches("train", torch.Generator().manual_seed(9))
    losses = []
    for t in range(30):
        opt.param_groups[0]["lr"] = schedule(t)
        opt.zero_grad()
        loss = workload.loss(model, next(batches))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert torch.equal(result.model.weight, model.weight)
    assert result.losses == [losses]
    assert result.global_steps == 30


def test_several_workers_share_the_parameters_and_converge():
    workload = LinearRegressionWorkload()
    result = hogwild(workload, sgd_factory(0.05), workers=3, steps=60, init_seed=0, data_seed=1)
    assert result.global_steps == 180 and len(result.losses) == 3
    first = sum(ls[0] for ls in result.losses) / 3
    last = sum(ls[-1] for ls in result.losses) / 3
    assert last < 0.2 * first
    assert (result.model.weight.detach().squeeze() - workload.w_star).norm() < 0.3


class _Failing(LinearRegressionWorkload):
    def loss(self, model, batch):
        raise RuntimeError("workload failed")


def test_a_failing_worker_raises_with_its_number():
    with pytest.raises(LaunchError, match=r"worker 0 of 2 raised RuntimeError: workload failed"):
        hogwild(_Failing(), sgd_factory(0.1), workers=2, steps=3)


def test_coordinate_update_is_unbiased_and_sparse():
    g = [torch.tensor([[0.0, 2.0], [3.0, 0.0]]), torch.tensor([5.0])]
    gen = torch.Generator().manual_seed(0)
    total = [torch.zeros_like(t) for t in g]
    n = 3000
    for _ in range(n):
        copy = [t.clone() for t in g]
        coordinate_update(copy, gen)
        assert sum(int((c != 0).sum()) for c in copy) == 1
        for acc, c in zip(total, copy):
            acc += c
    for acc, t in zip(total, g):
        torch.testing.assert_close(acc / n, t, atol=0.35, rtol=0.1)


def test_diminishing_schedule_validates():
    assert Diminishing(4.0, 10.0, mu=2.0)(0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="E"):
        Diminishing(1.0, 0.0)
