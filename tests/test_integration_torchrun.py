"""``examples/torchrun_ddp.py`` under ``torchrun --standalone --nproc_per_node 2`` (gloo, CPU):
DDP + scalopt.Shampoo equals Shampoo sharded over the ranks with ``comm=TorchComm()`` bitwise,
DDP + scalopt.AdamW equals ``DataParallelOptimizer(scalopt.AdamW)`` bitwise, and every rank ends
with the same parameters."""

from __future__ import annotations

import json

import pytest

from integration_helpers import run_torchrun_example

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
STEPS = 8


def test_torchrun_two_ranks():
    proc = run_torchrun_example("torchrun_ddp", "--steps", str(STEPS), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 2 and result["steps"] == STEPS
    assert result["pairs"] == {"ddp-shampoo vs sharded-shampoo": 0.0, "ddp-adamw vs dp-adamw": 0.0}
    ways = result["ways"]
    for way, s in ways.items():
        assert s["rank_spread"] == 0.0, way
        assert s["last_loss"] < s["first_loss"], way
    # Shampoo's blocks are split over both ranks; the scalopt-side ways count what they send
    assert all(n and n > 0 for n in ways["sharded-shampoo"]["blocks_per_rank"])
    assert ways["sharded-shampoo"]["comm_bytes_rank0"] > 0 and ways["dp-adamw"]["comm_bytes_rank0"] > 0
    assert ways["ddp-shampoo"]["comm_bytes_rank0"] == 0  # DDP talks to the process group directly
