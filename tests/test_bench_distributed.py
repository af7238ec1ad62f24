"""Distributed runs through the bench: real gloo processes, records per rank, exact resume."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scalopt.bench import RunSpec, records, run_specs
from scalopt.bench.suites.core import QUICK_WORKLOAD
from scalopt.cli import main
from scalopt.report import render

pytestmark = pytest.mark.distributed


def _spec(**kwargs) -> RunSpec:
    base = dict(
        workload="stdlib-lm",
        workload_overrides=QUICK_WORKLOAD,
        optimizer="clipped-sgd",
        hparams={"lr": 0.3, "max_norm": 1.0},
        steps=12,
        eval_every=6,
        workers=2,
        algorithm="celgc",
        algorithm_args={"period": 4},
        label="CELGC",
    )
    return RunSpec(**{**base, **kwargs})


def test_distributed_run_records_rank0_and_counts_rounds(tmp_path):
    spec = _spec(network=(1e-4, 1e9))
    (header,) = run_specs([spec], tmp_path, progress=False, log=lambda s: None)
    assert header["world_size"] == 2 and header["algorithm"] == "celgc"
    run_dir = tmp_path / "runs" / spec.run_id
    rows = records.read_rows(run_dir)
    assert rows[-1]["rounds"] == 3  # period 4 over 12 steps
    assert records.read_header(run_dir / "rank1")["rank"] == 1
    text = render(tmp_path).read_text()
    assert "rounds/step" in text and "0.1 ms, 8 Gbit/s" in text


def test_checkpointing_every_rank_mid_period_does_not_change_the_run(tmp_path):
    spec = _spec(algorithm="local-sgd", hparams={"lr": 0.3, "max_norm": 1.0, "momentum": 0.9}, eval_every=12)
    (plain,) = run_specs(
        [spec], tmp_path / "plain", progress=False, checkpoint_every=None, log=lambda s: None
    )
    (ckpt,) = run_specs([spec], tmp_path / "ckpt", progress=False, checkpoint_every=5, log=lambda s: None)
    assert ckpt["final"] == plain["final"]


def test_cli_train_workers_and_unknown_algorithm(tmp_path, capsys):
    assert main(["train", "--optimizer", "adam", "--algorithm", "gossip", "--workers", "2"]) == 2
    assert "valid names: celgc" in capsys.readouterr().err
    argv = ["train", "--workload", "digits", "--optimizer", "adam", "--lr", "0.003", "--workers", "2"]
    argv += ["--steps", "6", "--eval-every", "3", "--out", str(tmp_path)]
    # a real process, as a user runs it: rank 0's progress shows, and nothing leaks at exit
    result = subprocess.run(
        [sys.executable, "-m", "scalopt", *argv], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "data-parallel adam:" in result.stderr and "/6 [" in result.stderr  # the progress bar
    assert "leaked" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "report.md").exists()
