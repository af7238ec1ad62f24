"""Runs, records, resume exactness, reports and the CLI, end to end on tiny configs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from scalopt import workloads
from scalopt.bench import RunSpec, records, run_specs, train_run
from scalopt.bench.suites.core import QUICK_WORKLOAD, quick
from scalopt.cli import main
from scalopt.core.comm import SingleComm
from scalopt.distributed import registry
from scalopt.report import render


def _spec(**kwargs) -> RunSpec:
    base = dict(
        workload="stdlib-lm",
        workload_overrides=QUICK_WORKLOAD,
        optimizer="clipped-sgd",
        hparams={"lr": 0.3, "max_norm": 1.0, "momentum": 0.9},
        steps=30,
        eval_every=10,
    )
    return RunSpec(**{**base, **kwargs})


class _Crash(RuntimeError):
    pass


class _CrashingWorkload:
    """Delegates to a real workload and raises on the n-th loss call, like a crash mid-run."""

    def __init__(self, inner, crash_at: int) -> None:
        self.inner, self.crash_at, self.calls = inner, crash_at, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == self.crash_at:
            raise _Crash("injected")
        return self.inner.loss(model, batch)


@pytest.mark.parametrize(
    "optimizer,hparams",
    [
        ("clipped-sgd", {"lr": 0.3, "max_norm": 1.0, "momentum": 0.9}),
        (
            "generic-adam",
            {
                "lr": 1e-2,
                "lr_decay": {"type": "InvPower", "s": 0.5},
                "beta2_schedule": {"type": "OneMinusInvPower", "theta": 0.1, "r": 1.0},
            },
        ),
    ],
)
def test_resumed_run_ends_exactly_like_uninterrupted(tmp_path, optimizer, hparams):
    spec = _spec(optimizer=optimizer, hparams=hparams)
    full = train_run(spec, tmp_path / "full", checkpoint_every=10, progress=False)
    crashing = _CrashingWorkload(workloads.get(spec.workload, **spec.workload_overrides), crash_at=17)
    with pytest.raises(_Crash):
        train_run(spec, tmp_path / "crash", checkpoint_every=10, progress=False, workload=crashing)
    assert records.read_header(tmp_path / "crash")["status"] == "running"
    assert (tmp_path / "crash" / "checkpoint.pt").exists()
    resumed = train_run(spec, tmp_path / "crash", checkpoint_every=10, progress=False)
    assert resumed["resumed_from"] == 10
    assert resumed["final"] == full["final"]
    full_rows, resumed_rows = records.read_rows(tmp_path / "full"), records.read_rows(tmp_path / "crash")
    assert [r["step"] for r in resumed_rows] == list(range(1, 31))
    assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in full_rows]
    assert not (tmp_path / "crash" / "checkpoint.pt").exists()


def test_finished_runs_are_not_retrained(tmp_path):
    spec = _spec(steps=5, eval_every=5)
    train_run(spec, tmp_path / "r", progress=False)
    before = (tmp_path / "r" / records.ROWS).read_text()
    header = train_run(spec, tmp_path / "r", progress=False)
    assert header["status"] == "done"
    assert (tmp_path / "r" / records.ROWS).read_text() == before


def test_header_is_self_describing(tmp_path):
    header = train_run(_spec(steps=3, eval_every=3), tmp_path / "r", progress=False)
    saved = records.read_header(tmp_path / "r")
    assert saved == json.loads(json.dumps(header))
    assert saved["workload"]["data_hash"] and saved["environment"]["torch"]
    assert saved["spec"]["hparams"]["max_norm"] == 1.0 and saved["world_size"] == 1
    assert {"sha", "dirty"} <= set(saved["environment"]["git"])
    row = records.read_rows(tmp_path / "r")[-1]
    assert {"step", "loss", "step_time", "wall", "eval_loss", "opt_grad_norm", "opt_clip_fraction"} <= set(
        row
    )


def test_quick_suite_end_to_end_report(tmp_path):
    run_specs(quick(2), tmp_path, suite="quick", progress=False, log=lambda s: None)
    report = render(tmp_path)
    text = report.read_text()
    assert "## stdlib-lm" in text and "## digits" in text and "torch AdamW" in text
    assert "1.00×" in text  # the baseline's own ratio
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "stdlib-lm_loss_vs_step.png" in pngs and "stdlib-lm_loss_vs_wall.png" in pngs
    for p in tmp_path.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # re-rendering reads records only
    rows_before = {p: p.read_text() for p in tmp_path.glob("runs/*/rows.jsonl")}
    assert main(["report", str(tmp_path)]) == 0
    assert rows_before == {p: p.read_text() for p in tmp_path.glob("runs/*/rows.jsonl")}


def test_cli_unknown_names_exit_2_listing_valid_names(capsys):
    assert main(["train", "--optimizer", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown optimizer 'nope'" in err and "clipped-sgd" in err and err.count("\n") == 1
    assert main(["train", "--optimizer", "adam", "--workload", "mnist"]) == 2
    assert "valid names: ctr, digits" in capsys.readouterr().err
    assert main(["bench", "--suite", "huge"]) == 2
    err = capsys.readouterr().err
    assert "valid names:" in err and "default" in err and "quick" in err
    assert main(["train", "--optimizer", "adam", "--workload", "digits", "--set", "lr"]) == 2
    assert main(["report", "/nonexistent-dir-for-test"]) == 2


def test_cli_train_and_list(tmp_path, capsys):
    out = tmp_path / "t"
    code = main(
        [
            "train",
            "--workload",
            "digits",
            "--optimizer",
            "clipped-sgd",
            "--lr",
            "0.1",
            "--set",
            "max_norm=1.0",
            "--steps",
            "20",
            "--eval-every",
            "10",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert (out / "report.md").exists()
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "clipped-sgd" in listed and "stdlib-lm" in listed and "default" in listed


def test_cli_invalid_hyperparameter_is_a_clear_error(tmp_path, capsys):
    argv = ["train", "--workload", "digits", "--optimizer", "clipped-sgd", "--lr", "0.1"]
    assert main([*argv, "--set", "max_norm=-1", "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    assert "max_norm" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "scalopt", "list"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "torch-adamw" in result.stdout


def test_ctrl_c_keeps_finished_runs_and_resume_finishes(tmp_path, monkeypatch, capsys):
    import scalopt.bench.runner as runner

    real, calls = runner.train_run, []

    def interrupted(spec, run_dir, **kwargs):
        calls.append(spec.label)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(spec, run_dir, **kwargs)

    monkeypatch.setattr(runner, "train_run", interrupted)
    out = tmp_path / "q"
    assert main(["bench", "--suite", "quick", "--seeds", "1", "--out", str(out), "--no-progress"]) == 130
    assert "--resume" in capsys.readouterr().err
    done = [records.read_header(d)["status"] for d in records.list_runs(out)]
    assert done == ["done"]
    monkeypatch.setattr(runner, "train_run", real)
    assert (
        main(["bench", "--suite", "quick", "--seeds", "1", "--out", str(out), "--no-progress", "--resume"])
        == 0
    )
    assert [records.read_header(d)["status"] for d in records.list_runs(out)] == ["done"] * 3
    assert (out / "report.md").exists()


def test_algorithms_that_are_optimizers_take_no_other_optimizer(capsys):
    base = dict(workload="digits", steps=4, workers=2)
    owns = [
        ("celgc", "clipped-sgd"),
        ("efficient-adam", "generic-adam"),
        ("shampoo-sharded", "shampoo"),
        ("mlbfgs-sharded", "mlbfgs"),
    ]
    for algorithm, own in owns:
        assert RunSpec(algorithm=algorithm, **base).optimizer == own  # left out: the algorithm's own
        assert RunSpec(algorithm=algorithm, optimizer=own, **base).optimizer == own  # records round trip
        with pytest.raises(ValueError, match=f"'{algorithm}' is an optimizer itself.*optimizer='adam'"):
            RunSpec(algorithm=algorithm, optimizer="adam", **base)
    with pytest.raises(ValueError, match="'local-sgd' wraps an inner optimizer"):
        RunSpec(algorithm="local-sgd", **base)
    with pytest.raises(ValueError, match="optimizer is required"):
        RunSpec(workload="digits", steps=4)
    with pytest.raises(ValueError, match="is an optimizer itself"):
        registry.build("celgc", torch.nn.Linear(2, 1), "adam", {"lr": 0.1}, SingleComm())
    # the command line rejects --optimizer for them outright, and still requires it for wrappers
    assert main(["train", "--algorithm", "celgc", "--optimizer", "clipped-sgd", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--algorithm celgc is an optimizer itself (clipped-sgd): drop --optimizer" in err
    assert main(["train", "--algorithm", "local-sgd", "--workers", "2"]) == 2
    assert "wraps an inner optimizer" in capsys.readouterr().err


def test_resumed_suite_reads_a_diverged_run_back_as_a_float(tmp_path):
    spec = RunSpec(workload="quadratic", optimizer="torch-sgd", hparams={"lr": 1e6}, steps=50, eval_every=50)
    first = run_specs([spec], tmp_path, progress=False, checkpoint_every=None, log=lambda *_: None)
    again = run_specs([spec], tmp_path, progress=False, checkpoint_every=None, log=lambda *_: None)
    assert first[0].get("diverged") and again[0].get("diverged")
    final = again[0]["final"]["eval_loss"]
    assert isinstance(final, float) and not math.isfinite(final)  # a float again, not "nan"/"inf"


def test_a_plain_optimizer_whose_gradients_overflow_ends_as_diverged(tmp_path):
    """SGD far too large on l0l1: cosh overflows, the step raises FloatingPointError; the run is diverged."""
    spec = RunSpec(
        workload="l0l1",
        optimizer="clipped-sgd",
        hparams={"lr": 1.0, "max_norm": math.inf},
        steps=50,
        eval_every=10,
    )
    header = train_run(spec, tmp_path, progress=False)
    assert header["diverged"] and "non-finite gradient" in header["nonfinite"]
    assert header["final"]["steps"] < 50 and math.isnan(records.read_rows(tmp_path)[-1]["loss"])
