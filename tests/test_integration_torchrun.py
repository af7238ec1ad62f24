"""``examples/torchrun_ddp.py`` under ``torchrun --standalone --nproc_per_node 2`` (gloo, CPU):
DDP + scalopt.Shampoo equals Shampoo sharded over the ranks with ``comm=TorchComm()`` bitwise,
DDP + scalopt.AdamW equals ``DataParallelOptimizer(scalopt.AdamW)`` bitwise, and every rank ends
with the same parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from integration_helpers import EXAMPLES

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
STEPS = 8


def test_torchrun_two_ranks():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = os.path.join(os.path.dirname(EXAMPLES), "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [os.path.join(EXAMPLES, "torchrun_ddp.py"), "--steps", str(STEPS), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
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
