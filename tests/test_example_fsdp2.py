"""``examples/fsdp2_shampoo.py`` under ``torchrun --standalone --nproc_per_node 2`` (gloo, CPU):
Shampoo on an FSDP2 model trains, and a DCP checkpoint resumes it bitwise."""

from __future__ import annotations

import json

import pytest

from integration_helpers import run_torchrun_example

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_fsdp2_shampoo_example():
    proc = run_torchrun_example("fsdp2_shampoo", "--steps", "8", "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 2 and result["resumed_bitwise"] is True
    assert result["last_loss"] < result["first_loss"] and result["blocks_rank0"] > 0
