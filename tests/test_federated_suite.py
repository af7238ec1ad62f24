"""The federated suite, federated runs through the bench (records, resume) and the CLI flags."""

from __future__ import annotations

import dataclasses
import json

import pytest

from scalopt import cli
from scalopt.bench import federated_run as fr
from scalopt.bench import run_specs
from scalopt.bench.records import read_header, read_rows
from scalopt.bench.suites import get
from scalopt.bench.suites.federated import ALPHAS, BEST, LABELS, SWEEPS, TARGETS
from scalopt.federated import registry as algorithms
from scalopt.report import render


def test_suite_matches_the_protocol():
    specs = get("federated")(3)
    assert len({s.run_id for s in specs}) == len(specs)
    for s in specs:
        assert s.optimizer in algorithms.names() and s.workload == "digits" and s.steps == 200
        assert s.federated == {
            "clients": 20,
            "clients_per_round": 5,
            "local_steps": 10,
            "dirichlet": s.federated["dirichlet"],
        }
    assert {s.federated["dirichlet"] for s in specs} == set(ALPHAS) == set(TARGETS)
    for alpha in ALPHAS:
        for name in LABELS:
            assert BEST[alpha][name] in SWEEPS[name]
            later = [s for s in specs if (s.optimizer, s.seed, s.federated["dirichlet"]) == (name, 2, alpha)]
            assert len(later) == 1 and later[0].label == get("federated")(1)[0].label.__class__(
                later[0].label
            )


def tiny(spec, **fed):
    return dataclasses.replace(
        spec,
        steps=4,
        federated={**spec.federated, "clients": 4, "clients_per_round": 2, "local_steps": 1, **fed},
    )


def test_tiny_suite_run_records_histograms_bytes_and_renders_the_federated_table(tmp_path):
    specs = [tiny(s) for s in get("federated")(1) if s.federated["dirichlet"] == 0.1 and "lr=0.01" in s.label]
    specs += [tiny(next(s for s in get("federated")(1) if s.optimizer == "fedavg"))]
    run_specs(specs, tmp_path, suite="federated", progress=False, log=lambda *a: None)
    report = render(tmp_path).read_text()
    assert "federated, Dirichlet α = 0.1" in report and "rounds to target" in report
    assert (tmp_path / "federated_alpha0.1_accuracy.png").exists()
    for spec in specs:
        header = read_header(tmp_path / "runs" / spec.run_id)
        fed = header["federated"]
        assert [sum(c["label_histogram"]) for c in fed["clients"]] == [
            c["num_examples"] for c in fed["clients"]
        ]
        assert sum(fed["counters"]["bytes_down"].values()) == 4 * 2 * fed["message_bytes"]["down"]
        rows = read_rows(tmp_path / "runs" / spec.run_id)
        assert rows[-1]["client_steps"] == 4 * 2 and "eval_accuracy" in rows[-1]


def test_federated_run_resumes_bitwise_from_its_checkpoint(tmp_path, monkeypatch):
    spec = tiny(next(s for s in get("federated")(1) if s.optimizer == "fedlada"))
    fr.train_federated(spec, tmp_path / "straight", progress=False)
    import scalopt.federated as fed  # train_federated looks federated_round up here at call time

    calls = {"n": 0}
    original = fed.federated_round

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(fed, "federated_round", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        fr.train_federated(spec, tmp_path / "resumed", checkpoint_every=2, progress=False)
    monkeypatch.setattr(fed, "federated_round", original)
    header = fr.train_federated(spec, tmp_path / "resumed", checkpoint_every=2, progress=False)
    assert header["resumed_from"] == 2
    keys = ("loss", "eval_loss", "eval_accuracy", "bytes_sent", "client_steps")
    a, b = read_rows(tmp_path / "straight"), read_rows(tmp_path / "resumed")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


def test_cli_lists_and_trains_federated_algorithms(tmp_path, capsys):
    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("fedavg", "fedadam", "fedlada", "local-adam"))
    out = tmp_path / "run"
    argv = ["train", "--workload", "digits", "--optimizer", "fedavg", "--lr", "0.1", "--clients", "4"]
    argv += ["--clients-per-round", "2", "--local-steps", "1", "--dirichlet", "0.5", "--steps", "2"]
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 0
    spec = json.loads((out / "suite.json").read_text())["specs"][0]
    assert spec["hparams"] == {"local_hparams": {"lr": 0.1}} and spec["federated"]["dirichlet"] == 0.5
    bad = [
        "train",
        "--workload",
        "digits",
        "--optimizer",
        "fedlada",
        "--clients",
        "3",
        "--clients-per-round",
        "4",
    ]
    assert cli.main([*bad, "--out", str(tmp_path / "bad")]) == 2
    assert "clients_per_round" in capsys.readouterr().err
    assert cli.main(["train", "--optimizer", "adam", "--dirichlet", "0.1", "--out", str(tmp_path / "x")]) == 2
