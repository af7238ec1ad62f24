"""The Shampoo suite (valid RunSpecs) and the optimizer-state memory the loop records and the report shows."""

from __future__ import annotations

import torch

from scalopt.bench import RunSpec, run_specs
from scalopt.bench.loop import optimizer_state_bytes
from scalopt.bench.suites import get
from scalopt.bench.suites.shampoo import BEST, SWEEPS, TARGETS
from scalopt.distributed import registry as algorithms
from scalopt.optim import registry as optimizers
from scalopt.report import render


def test_suite_sweeps_at_seed_0_and_keeps_the_best_lr_at_other_seeds():
    specs = get("shampoo")(2)
    assert len({s.run_id for s in specs}) == len(specs)
    for s in specs:
        optimizers.get(s.optimizer)
        assert s.target_loss == TARGETS[s.workload]
        assert s.hparams["weight_decay"] == 0.0
        assert s.algorithm is None or s.algorithm in algorithms.names()
    for workload, lrs in SWEEPS.items():
        for name, best in BEST[workload].items():
            assert best in lrs
            key = (workload, name, 0)
            seed0 = {s.hparams["lr"] for s in specs if (s.workload, s.optimizer, s.seed) == key}
            seed1 = {
                s.hparams["lr"]
                for s in specs
                if (s.workload, s.optimizer, s.seed, s.workers) == (workload, name, 1, 1)
                and "async_roots" not in s.hparams
            }
            assert set(lrs) <= seed0 and seed1 == {best}
    sharded = [s for s in specs if s.workers == 2]
    assert sharded and all(s.algorithm == "shampoo-sharded" and "2x data" in s.label for s in sharded)


def test_shampoo_soap_suite_is_the_adamw_and_soap_runs_of_the_shampoo_suite():
    full = {s.run_id for s in get("shampoo")(2)}
    subset = get("shampoo-soap")(2)
    assert {s.optimizer for s in subset} == {"torch-adamw", "soap"}
    assert {s.run_id for s in subset} <= full
    assert {s.run_id for s in subset} == {
        s.run_id for s in get("shampoo")(2) if s.optimizer in ("torch-adamw", "soap")
    }


def test_state_bytes_count_each_tensor_once():
    p = torch.zeros(10, 4, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones_like(p)
    opt.step()
    assert optimizer_state_bytes(opt) == 40 * 4
    opt.state[p]["alias"] = opt.state[p]["momentum_buffer"]
    assert optimizer_state_bytes(opt) == 40 * 4


def test_loop_records_state_bytes_and_report_shows_the_ratio(tmp_path):
    tiny = {"d_model": 8, "n_layers": 1, "n_heads": 2, "seq_len": 8, "batch_size": 2, "corpus_bytes": 20_000}
    base = dict(workload="stdlib-lm", workload_overrides=tiny, steps=3, eval_every=3, target_loss=9.0)
    specs = [
        RunSpec(optimizer="torch-adamw", hparams={"lr": 1e-3}, **base),
        RunSpec(optimizer="shampoo", hparams={"lr": 1e-3, "precondition_frequency": 2}, **base),
    ]
    headers = run_specs(specs, tmp_path, progress=False, checkpoint_every=None, log=lambda *_: None)
    assert all(h["optimizer_state_bytes"] > 0 for h in headers)
    assert headers[1]["optimizer_state_bytes"] > headers[0]["optimizer_state_bytes"]
    report = render(tmp_path).read_text()
    assert "state memory / torch-adamw" in report and "| 1.00× |" in report
