"""FSDP2 (``fully_shard``) over 2 gloo processes on CPU: every scalopt optimizer steps the sharded
parameters; element-wise ones and Shampoo (with a blocking that the shards fit) equal one process
stepping the unsharded model; wrappers and closure optimizers refuse DTensor parameters."""

from __future__ import annotations

import pytest
import torch

from fsdp2_helpers import ELEMENTWISE, SHAMPOO, SOAP, nan_on_one_rank, rejections, sharded_vs_single
from scalopt.distributed import launch
from scalopt.optim import registry

pytestmark = pytest.mark.distributed

# float64 models: the sharded and the single-process runs differ only in the order of the norm
# sums and the averaging of two identical gradients, so 1e-10 (relative) is ample
RTOL, ATOL = 1e-10, 1e-12


def _close(pair: list[list[torch.Tensor]]) -> None:
    sharded, single = pair
    assert len(sharded) == len(single)
    for a, b in zip(sharded, single):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def test_every_registered_optimizer_is_covered():
    refused = {"oasis", "hvp-rvr", "mlbfgs"}  # refuse DTensors (test_rejections)
    covered = set(ELEMENTWISE) | {"shampoo", "soap"} | refused
    assert {n for n in registry.names() if registry.get(n).scalopt} == covered


def test_elementwise_equal_unsharded():
    sizes = (5, 8, 3)  # dim 0 of 3 splits unevenly (2 + 1) over 2 ranks
    results = launch(_run_all_elementwise, 2, sizes)
    for rank_result in results:
        for name, pair in rank_result.items():
            try:
                _close(pair)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from exc


def _run_all_elementwise(comm, sizes):
    return {name: sharded_vs_single(comm, name, kw, sizes, 4) for name, kw in ELEMENTWISE.items()}


@pytest.mark.parametrize("name", ["shampoo", "soap"])
def test_shampoo_equals_single_process_with_the_same_blocking(name):
    # weights (8, 4) and (8, 8): each rank holds 4 rows, and block_size=4 makes the blocks of the
    # full weights exactly the blocks of the shards; roots (eigenbases) in float64
    sizes = (4, 8, 8)
    for pair in launch(sharded_vs_single, 2, name, SHAMPOO if name == "shampoo" else SOAP, sizes, 5):
        _close(pair)


def test_shampoo_uneven_shards_run_and_stay_finite():
    # dims 5, 3 and 1 split 3+2, 2+1 and 1+0 (rank 1 holds an empty shard of the last layer)
    for sharded, _single in launch(sharded_vs_single, 2, "shampoo", SHAMPOO, (6, 5, 3, 1), 5):
        assert all(bool(torch.isfinite(p).all()) for p in sharded)
        assert not all(torch.equal(a, b) for a, b in zip(sharded, mlp_start((6, 5, 3, 1))))


def mlp_start(sizes):
    from fsdp2_helpers import mlp

    return [p.detach() for p in mlp(0, sizes).parameters()]


def test_nonfinite_on_one_rank_is_a_global_decision():
    for res in launch(nan_on_one_rank, 2):
        assert res["skip"] == 1.0 and res["skip_unchanged"]
        assert "FloatingPointError" not in str(res["raise"]) and "non-finite gradient" in res["raise"]
        assert res["raise_unchanged"]


def test_rejections():
    for res in launch(rejections, 2):
        for name, msg in res.items():
            if name == "Shampoo(comm=)":
                assert "already have reduced gradients" in msg
                continue
            assert "does not accept parameters sharded by FSDP2" in msg, (name, msg)


def test_dcp_resume_bitwise_every_optimizer_and_reshard(tmp_path):
    """DCP checkpoint after 3 steps, resumed into a fresh model + optimizer for 2 more: bitwise equal
    to the uninterrupted run for every optimizer stepped after backward() under DDP and FSDP2, for
    the closure optimizers on replicated models, for
    Shampoo sharded by comm= and for EfficientAdam; the FSDP2 checkpoints of element-wise optimizers
    load into 1 unsharded process (resharding), Shampoo's refuse naming both world sizes."""
    from fsdp2_helpers import DCP_OPTIMIZERS, dcp_all_modes, dcp_load_unsharded

    results = launch(dcp_all_modes, 2, str(tmp_path))
    expected = {
        "ddp": set(DCP_OPTIMIZERS),
        "replicated": {"oasis", "hvp-rvr"},  # closure optimizers on a plain model per rank
        "fsdp2": set(DCP_OPTIMIZERS) - {"mlbfgs"},
        "shampoo-comm": {"shampoo-comm"},
        "efficient-adam": {"efficient-adam"},
    }
    for rank_result in results:
        for mode, per_name in rank_result.items():
            assert set(per_name) == expected[mode]
            for name, res in per_name.items():
                assert not isinstance(res, str), (mode, name, res)
                ref, resumed, steps = res
                assert all(torch.equal(a, b) for a, b in zip(ref, resumed)), (mode, name)
                assert steps == 5.0, (mode, name)  # the counters came back too
    for name in expected["fsdp2"]:
        at_one = dcp_load_unsharded(name, DCP_OPTIMIZERS[name], (4, 8, 8), str(tmp_path / f"fsdp2-{name}"))
        if name in ("shampoo", "soap"):
            assert "world size 2" in at_one and "world size 1" in at_one
            continue
        ref = results[0]["fsdp2"][name][0]
        for a, b in zip(ref, at_one):
            torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
