"""The distributed suite: valid RunSpecs (registry names, one target, one network model)."""

from __future__ import annotations

import dataclasses

import pytest

from scalopt.bench import run_specs, suites
from scalopt.bench.suites import distributed as suite
from scalopt.bench.suites.core import QUICK_WORKLOAD
from scalopt.distributed import registry as algorithms
from scalopt.optim import registry as optimizers
from scalopt.workloads import get as get_workload


def test_suite_specs_are_valid_and_share_target_and_network():
    specs = suites.get("distributed")(2)
    assert len(specs) == 2 * 2 * len(suite.CONFIGS)
    assert len({s.run_id for s in specs}) == len(specs)
    assert len({s.label for s in specs}) == 2 * len(suite.CONFIGS)  # seeds share labels (grouped)
    get_workload(suite.WORKLOAD)
    for s in specs:
        assert s.workers == suite.WORKERS == 2 and s.workload == suite.WORKLOAD
        assert s.algorithm in algorithms.names()
        optimizers.get(s.optimizer)
        assert s.steps % 16 == 0 and s.eval_every % 16 == 0
    assert {s.target_loss for s in specs} == {suite.TARGET}
    networks = {s.network for s in specs}
    assert networks == {None, (suite.NETWORK.latency_s, suite.NETWORK.bandwidth_bytes_per_s)}
    assert suite.NETWORK.latency_s == 1e-3 and suite.NETWORK.bandwidth_bytes_per_s == 125e6
    for label, *_ in suite.CONFIGS:  # every configuration runs with and without the network
        assert {s.network is None for s in specs if s.label.startswith(label + " [")} == {True, False}


@pytest.mark.distributed
@pytest.mark.slow
def test_two_step_smoke_run_of_the_local_methods(tmp_path):
    local = [s for s in suite.distributed(1) if s.network is not None and s.algorithm != "data-parallel"]
    picked = local[::2]  # CELGC I=4 and Overlap Local-SGD
    tiny = [
        dataclasses.replace(s, workload_overrides=QUICK_WORKLOAD, steps=4, eval_every=4, network=(1e-4, 1e9))
        for s in picked
    ]
    headers = run_specs(tiny, tmp_path, progress=False, checkpoint_every=None, log=lambda s: None)
    assert [h["status"] for h in headers] == ["done"] * len(tiny)
    assert all(h["world_size"] == 2 for h in headers)
