"""The compression suite's specs, SimComm runs through the bench, and the bytes-vs-loss frontier."""

from __future__ import annotations

import pytest

from scalopt.bench import RunSpec, run_specs
from scalopt.bench.suites import get
from scalopt.bench.suites.core import QUICK_WORKLOAD
from scalopt.compress import build
from scalopt.distributed import registry as algorithms
from scalopt.report import render
from scalopt.report.frontier import pareto


def test_compression_suite_is_every_method_on_2_and_4_workers_at_one_global_batch():
    specs = get("compression")(1)
    assert len({s.run_id for s in specs}) == len(specs) == 16  # 10 methods on 2 workers, 6 on 4
    assert all(s.workload == "stdlib-lm" and s.algorithm in algorithms.names() for s in specs)
    assert {(s.workers, s.comm) for s in specs} == {(2, "gloo"), (4, "sim")}
    assert all(s.workers * s.workload_overrides["batch_size"] == 32 for s in specs)
    assert sum(s.algorithm == "onebit-adam" for s in specs) == 4
    for s in specs:
        if "compressor" in s.algorithm_args:
            build(s.algorithm_args["compressor"])


def test_spec_comm_is_validated_and_left_out_of_the_run_id_by_default():
    base = dict(workload="quadratic", optimizer="adam", steps=3, workers=2, algorithm="data-parallel")
    assert "comm" not in RunSpec(**base).to_dict()
    assert RunSpec(**base).run_id != RunSpec(**base, comm="sim").run_id
    with pytest.raises(ValueError, match="comm"):
        RunSpec(**base, comm="mpi")
    with pytest.raises(ValueError, match="comm='sim' needs an algorithm"):
        RunSpec(workload="quadratic", optimizer="adam", steps=3, comm="sim")


def test_pareto_front():
    assert pareto([(1.0, 3.0), (2.0, 2.0), (3.0, 2.5), (4.0, 1.0), (2.0, 2.0)]) == [
        True,
        True,
        False,
        True,
        True,
    ]


def test_sim_runs_through_the_bench_and_the_report_shows_the_frontier(tmp_path):
    common = dict(
        workload="stdlib-lm",
        workload_overrides=QUICK_WORKLOAD,
        optimizer="adam",
        hparams={"lr": 3e-3},
        steps=6,
        eval_every=3,
        workers=3,
        comm="sim",
    )
    specs = [
        RunSpec(**common, algorithm="data-parallel", label="DP"),
        RunSpec(**common, algorithm="onebit-adam", algorithm_args={"freeze_step": 2}, label="1-bit"),
    ]
    headers = run_specs(specs, tmp_path, progress=False, log=lambda s: None)
    assert all(h["world_size"] == 3 for h in headers)
    text = render(tmp_path).read_text()
    assert "Pareto front" in text and "| 3 | 1-bit |" in text
    assert (tmp_path / "stdlib-lm_loss_vs_bytes_per_step.png").exists()
    with pytest.raises(ValueError, match="process group"):
        run_specs(
            [RunSpec(**common, algorithm="ddp-powersgd", label="P")],
            tmp_path / "p",
            progress=False,
            log=lambda s: None,
        )
