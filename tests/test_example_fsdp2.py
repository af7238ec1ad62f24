"""``examples/fsdp2_shampoo.py`` under ``torchrun --standalone --nproc_per_node 2`` (gloo, CPU):
Shampoo on an FSDP2 model trains, and a DCP checkpoint resumes it bitwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from integration_helpers import EXAMPLES

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_fsdp2_shampoo_example():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = os.path.join(os.path.dirname(EXAMPLES), "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [os.path.join(EXAMPLES, "fsdp2_shampoo.py"), "--steps", "8", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 2 and result["resumed_bitwise"] is True
    assert result["last_loss"] < result["first_loss"] and result["blocks_rank0"] > 0
