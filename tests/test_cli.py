"""The command line a newcomer meets: one-line errors before anything is written, help and lists
derived from the registries, and one report row per configuration."""

from __future__ import annotations

import json

import pytest

from scalopt.bench import RunSpec, records, train_run
from scalopt.cli import _parser, main
from scalopt.distributed import registry as algorithms
from scalopt.optim import registry
from scalopt.report.summary import group_runs, load_runs

DIGITS = ["train", "--workload", "digits", "--no-progress", "--steps", "2"]


@pytest.mark.parametrize(
    "argv,says",
    [
        ([*DIGITS, "--optimizer", "adam", "--lr", "-0.1"], "'adam': lr must be in [0, inf), got -0.1"),
        ([*DIGITS, "--optimizer", "torch-adamw", "--lr", "-0.1"], "Invalid learning rate"),
        (
            [*DIGITS, "--optimizer", "clipped-sgd", "--lr", "0.1", "--set", "max_nrom=1"],
            "has no hyperparameter 'max_nrom'; did you mean 'max_norm'? valid: lr (required), max_norm",
        ),
        ([*DIGITS, "--optimizer", "adam", "--set", "lr=fast"], "lr must be a real number, got 'fast'"),
        ([*DIGITS, "--optimizer", "adam", "--lr", "fast"], "argument --lr: invalid float value"),
        ([*DIGITS, "--optimizer", "adam", "--set", "betas=(0.9,"], "betas must be a pair"),
        ([*DIGITS, "--optimizer", "clipped-sgd", "--lr", "0.1"], "'clipped-sgd' needs max_norm (no default)"),
        (
            [*DIGITS, "--workers", "2", "--algorithm", "celgc"] + ["--set", "lr=0.1", "--set", "max_norm=1"],
            "algorithm 'celgc' needs period (no default)",
        ),
        (
            [*DIGITS, "--optimizer", "adam", "--workers", "2", "--algorithm", "local-sgd"]
            + ["--algorithm-set", "perod=4"],
            "no argument 'perod'; did you mean 'period'?",
        ),
        ([*DIGITS, "--optimizer", "adam", "--set", "lr=" + "-" * 100_000], "at most 200"),
        ([*DIGITS, "--optimizer", "adam", "--set", "lr=" + "-" * 150 + "1"], "lr must be"),
        ([*DIGITS, "--optimizer", "adam", "--set", "lr="], "lr= has no value"),
        ([*DIGITS, "--optimizer", "adam", "--set", "lr"], "must look like KEY=VALUE"),
        ([*DIGITS, "--optimizer", "adm"], "unknown optimizer 'adm'; did you mean 'adam'?"),
        ([*DIGITS, "--optimizer", "adam", "--workload", "digit"], "did you mean 'digits'?"),
        (
            [*DIGITS, "--optimizer", "adam", "--workers", "2", "--algorithm", "celgcc"],
            "did you mean 'celgc'?",
        ),
        (["bench", "--suite", "defualt"], "unknown suite 'defualt'; did you mean 'default'?"),
        (["bench", "--seeds", "0"], "argument --seeds: expected an integer >= 1, got 0"),
        ([*DIGITS, "--optimizer", "adam", "--workload-set", "batch_sise=3"], "did you mean 'batch_size'?"),
        ([*DIGITS, "--optimizer", "adam", "--steps", "-5"], "expected an integer >= 1"),
        ([*DIGITS, "--optimizer", "adam", "--network", "1ms"], "--network must be LATENCY_S,BYTES_PER_S"),
        (["trian"], "did you mean 'train'?"),
        (["list", "--optimizer", "clipedsgd"], "did you mean 'clipped-sgd'?"),
    ],
)
def test_every_mistake_is_one_line_exit_2_and_writes_nothing(argv, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    if argv[0] == "train":
        argv = [*argv, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("scalopt: error: ") and err.count("\n") == 1, err
    assert says in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no default runs/ folder


def _help(*argv: str) -> str:
    sub = _parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public API
    parser = sub[argv[0]] if argv else _parser()
    return parser.format_help()


def test_train_help_lists_every_registered_name_and_every_flag_has_help():
    text = " ".join(_help("train").split())
    for name in algorithms.names() + registry.names():
        assert name in text.replace("- ", "-"), name
    for sub in ("train", "bench", "list", "report"):
        parser = _parser()._subparsers._group_actions[0].choices[sub]  # noqa: SLF001
        for action in parser._actions:  # noqa: SLF001
            assert action.help, (sub, action.option_strings)
    assert "(default: 50)" in text and "(default: 0)" in text and "(default: stdlib-lm)" in text


def test_list_optimizer_shows_hyperparameters_required_and_defaults(capsys):
    for name in registry.names():
        assert main(["list", "--optimizer", name]) == 0
        out = capsys.readouterr().out
        for key, default in registry.hyperparameters(name).items():
            line = next(line for line in out.splitlines() if line.split()[:1] == [key])
            assert ("REQUIRED" in line) == (default is registry.REQUIRED), line
    assert main(["list", "--optimizer", "clipped-sgd"]) == 0
    out = capsys.readouterr().out
    assert "max_norm" in out and "REQUIRED" in out and "momentum" in out and "default 0.0" in out
    assert main(["list", "--algorithm", "celgc"]) == 0
    assert "period" in capsys.readouterr().out


CLIPPED = ["train", "--workload", "digits", "--optimizer", "clipped-sgd", "--set", "max_norm=1.0"]
SHORT = ["--steps", "20", "--eval-every", "10", "--no-progress"]


def test_two_learning_rates_are_two_rows_never_two_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*CLIPPED, "--lr", "0.1", *SHORT]) == 0
    assert main([*CLIPPED, "--lr", "0.05", *SHORT]) == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(f.startswith("train-digits-clipped-sgd-") for f in folders)
    # the same folder for both: two rows, one seed each, each labelled with what differs
    shared = tmp_path / "shared"
    assert main([*CLIPPED, "--lr", "0.1", *SHORT, "--out", str(shared)]) == 0
    assert main([*CLIPPED, "--lr", "0.05", *SHORT, "--out", str(shared)]) == 0
    assert main([*CLIPPED, "--lr", "0.05", "--seed", "1", *SHORT, "--out", str(shared)]) == 0
    groups = group_runs(load_runs(shared))
    assert sorted(len(g.runs) for g in groups) == [1, 2]
    for g in groups:
        assert len({json.dumps(r.spec["hparams"], sort_keys=True) for r in g.runs}) == 1
    text = (shared / "report.md").read_text()
    assert "| clipped-sgd [hparams.lr=0.1] | 1 |" in text
    assert "| clipped-sgd [hparams.lr=0.05] | 2 |" in text
    assert text.count('"lr": 0.05') == 2 and text.count('"lr": 0.1') == 1  # every run's configuration


def _digits(**kw) -> RunSpec:
    return RunSpec(workload="digits", optimizer="adam", hparams={"lr": 1e-3}, steps=6, eval_every=3, **kw)


def test_a_second_writer_of_a_run_directory_gets_a_clear_error(tmp_path, capsys):
    spec = _digits()
    run_dir = tmp_path / "runs" / spec.run_id
    with records.run_lock(run_dir):
        with pytest.raises(records.RunLockedError, match="being written by another scalopt process"):
            train_run(spec, run_dir, progress=False)
        argv = ["train", "--workload", "digits", "--optimizer", "adam", "--lr", "1e-3", "--steps", "6"]
        assert main([*argv, "--eval-every", "3", "--out", str(tmp_path), "--no-progress"]) == 2
        assert "being written by another scalopt process" in capsys.readouterr().err
    assert not (run_dir / records.ROWS).exists()
    train_run(spec, run_dir, progress=False)  # released: the run goes through
    assert len(records.read_rows(run_dir)) == 6


def test_resume_deduplicates_rows_by_step(tmp_path):
    spec = _digits()
    run_dir = tmp_path / "r"
    train_run(spec, run_dir, progress=False, checkpoint_every=None)
    rows = records.read_rows(run_dir)
    # two writers interleaved: duplicates and disorder up to step 4
    mixed = rows[:4] + rows[1:3] + [dict(rows[0], loss=123.0)] + rows[4:]
    (run_dir / records.ROWS).write_text("".join(json.dumps(r) + "\n" for r in mixed))
    records.RowWriter(run_dir, keep_until=4).close()
    kept = records.read_rows(run_dir)
    assert [r["step"] for r in kept] == [1, 2, 3, 4]
    assert kept[0]["loss"] == 123.0 and kept[1:] == rows[1:4]  # the last row logged for a step wins
