"""The curvature suite (valid RunSpecs, one entry per method) and the report's closure-method columns."""

from __future__ import annotations

from scalopt.bench import RunSpec, run_specs
from scalopt.bench.suites import get
from scalopt.bench.suites.curvature import METHODS, STEPS
from scalopt.optim import registry as optimizers
from scalopt.report import render


def test_suite_sweeps_at_seed_0_and_keeps_the_best_lr_at_other_seeds():
    specs = get("curvature")(2)
    assert len({s.run_id for s in specs}) == len(specs)
    assert {m.optimizer for m in METHODS} >= {"torch-adamw", "torch-sgd", "oasis", "hvp-rvr"}
    assert len({m.label for m in METHODS}) == len(METHODS)
    for s in specs:
        optimizers.get(s.optimizer)
        assert s.steps == STEPS[s.workload]
    for method in METHODS:
        for workload, lrs in method.sweep.items():
            assert method.best[workload] in lrs
            runs = [s for s in specs if s.workload == workload and s.label.startswith(f"{method.label} lr=")]
            assert {s.hparams["lr"] for s in runs if s.seed == 0} == set(lrs)
            assert {s.hparams["lr"] for s in runs if s.seed == 1} == {method.best[workload]}
            assert all(s.hparams.items() >= method.hparams.items() for s in runs)


def test_report_compares_whole_iterations_and_counts_hvps(tmp_path):
    base = dict(workload="quadratic", steps=6, eval_every=3)
    specs = [
        RunSpec(optimizer="torch-adamw", hparams={"lr": 1e-2}, **base),
        RunSpec(optimizer="oasis", hparams={"init_samples": 4, "alpha": 0.1}, **base),
    ]
    run_specs(specs, tmp_path, progress=False, checkpoint_every=None, log=lambda *_: None)
    report = render(tmp_path).read_text()
    assert "fwd+bwd+step / torch-adamw" in report and "HVPs/step" in report
    oasis_row = next(line for line in report.splitlines() if line.startswith("| oasis"))
    assert "| 1.50 |" in oasis_row  # HVPs per step: (4 at step 0 + 1 per later step) / 6 steps


def test_suite_has_mlbfgs_sharded_trsgd_tradam_and_shampoo():
    specs = get("curvature")(1)
    assert {m.optimizer for m in METHODS} >= {"mlbfgs", "trsgd", "tradam", "shampoo"}
    sharded = [s for s in specs if s.workers > 1]
    assert {s.workload for s in sharded} == set(STEPS)
    assert all(
        s.algorithm == "mlbfgs-sharded" and s.optimizer == "mlbfgs" and "2x data" in s.label for s in sharded
    )
