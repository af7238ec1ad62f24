"""The claims suite: every verdict rule on synthetic numbers (holds / does not hold / inconclusive and
the boundaries), missing code and missing records shown as inconclusive, and one tiny end-to-end run.
No test asserts a measured verdict or a wall time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scalopt.bench import suites as suite_registry
from scalopt.bench.suites import claims, claims_extra, claims_specs
from scalopt.bench.suites import claims_rules as r
from scalopt.bench.suites.claims_rules import FAILS, HOLDS, INCONCLUSIVE

NAN = math.nan


def outcome(v: r.Verdict) -> str:
    assert v.reason
    return v.outcome


# -- the rules ----------------------------------------------------------------------------------------
def test_claim_table_has_ten_claims_each_with_a_rule():
    assert [c.number for c in r.CLAIMS] == list(range(1, 11))
    assert all(c.rule.startswith("holds if") for c in r.CLAIMS)
    with pytest.raises(ValueError, match="number"):
        r.claim(11)
    with pytest.raises(ValueError, match="outcome"):
        r.Verdict("maybe", "x")


def test_combine_fail_beats_inconclusive_beats_holds():
    h, f, i = r.Verdict(HOLDS, "a"), r.Verdict(FAILS, "b"), r.Verdict(INCONCLUSIVE, "c")
    assert r.combine([h, i, f]).outcome == FAILS
    assert r.combine([h, i]).outcome == INCONCLUSIVE
    assert r.combine([h, h]).outcome == HOLDS
    assert r.combine([]).outcome == INCONCLUSIVE


@pytest.mark.parametrize(
    "args, expected",
    [
        ((80, 100, 95, 100), HOLDS),  # exactly 0.8× and 0.95×
        ((81, 100, 50, 100), FAILS),
        ((50, 100, 96, 100), FAILS),
        ((NAN, 100, NAN, 100), FAILS),  # Shampoo never reached AdamW's loss
        ((50, NAN, 10, NAN), INCONCLUSIVE),  # no AdamW reference
    ],
)
def test_rule_shampoo(args, expected):
    assert outcome(r.rule_shampoo(*args)) == expected


@pytest.mark.parametrize(
    "period, workloads, expected",
    [
        (8, [("a", 100, 50, 400, 300), ("b", 10, 5, 40, 39)], HOLDS),  # rounds exactly 0.5×
        (16, [("a", 100, 51, 400, 300)], FAILS),
        (8, [("a", 100, 50, 400, 400)], FAILS),  # 4 workers not fewer steps
        (8, [("a", 100, 50, 400, NAN)], FAILS),  # 4 workers never reached
        (8, [("a", 100, 50, NAN, 300)], HOLDS),  # only 4 workers reached it
        (8, [("a", 100, NAN, NAN, NAN)], FAILS),  # CELGC never reached
        (8, [("a", NAN, 5, 40, 30)], INCONCLUSIVE),  # no synchronous reference
        (8, [("a", NAN, 5, 40, 30), ("b", 10, 9, 40, 30)], FAILS),
        (4, [("a", 100, 10, 400, 300)], INCONCLUSIVE),  # period < 8: outside the claim
    ],
)
def test_rule_celgc(period, workloads, expected):
    assert outcome(r.rule_celgc(period, workloads)) == expected


@pytest.mark.parametrize(
    "l1, sgd, sign, expected",
    [
        ([1, 8], [1.0, 10.0], [1.0, 1.0], HOLDS),  # exactly 10× at the largest L1
        ([1, 8], [100.0, 9.99], [1.0, 1.0], FAILS),  # only the largest L1 counts
        ([8, 1], [10.0, 9.0], [1.0, 1.0], HOLDS),  # the largest L1, wherever it is in the list
        ([1, 8], [1.0, math.inf], [1.0, 0.5], HOLDS),  # SGD diverged at every lr
        ([1, 8], [1.0, 0.0], [1.0, 0.0], FAILS),  # both exact: floored, ratio 1
        ([1, 8], [1.0, 5.0], [1.0, NAN], INCONCLUSIVE),
        ([1, 8], [1.0, 5.0], [1.0, math.inf], INCONCLUSIVE),
        ([], [], [], INCONCLUSIVE),
    ],
)
def test_rule_signsgd(l1, sgd, sign, expected):
    assert outcome(r.rule_signsgd(l1, sgd, sign)) == expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ((0.01, 0.01, 0.95 * 2 / 3, 2 / 3), HOLDS),
        ((0.0101, 0.01, 2 / 3, 2 / 3), FAILS),
        ((0.001, 0.01, 0.94 * 2 / 3, 2 / 3), FAILS),  # β2 = 0.1 did not go to the worst point
        ((NAN, 0.01, 2 / 3, 2 / 3), INCONCLUSIVE),
    ],
)
def test_rule_adam_condition(args, expected):
    assert outcome(r.rule_adam_condition(*args)) == expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ((100, 62, 36), HOLDS),
        ((100, 63, 30), FAILS),
        ((100, 50, 37), FAILS),
        ((100, NAN, 30), FAILS),
        ((NAN, 50, 30), INCONCLUSIVE),
    ],
)
def test_rule_dp_adam(args, expected):
    assert outcome(r.rule_dp_adam(*args)) == expected


@pytest.mark.parametrize(
    "args, expected",
    [((10.0, 100.0), HOLDS), ((10.1, 100.0), FAILS), ((NAN, 100.0), FAILS), ((5.0, NAN), INCONCLUSIVE)],
)
def test_rule_efficient_adam(args, expected):
    assert outcome(r.rule_efficient_adam(*args)) == expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ((1.15, 1.3), HOLDS),
        ((1.16, 2.0), FAILS),
        ((1.0, 1.29), INCONCLUSIVE),  # the delay cost synchronous SGD too little to say anything
        ((NAN, 2.0), INCONCLUSIVE),
    ],
)
def test_rule_overlap(args, expected):
    assert outcome(r.rule_overlap(*args)) == expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ((0.05, 0.06, 0.05), HOLDS),
        ((0.051, 1.0, 0.05), FAILS),
        ((0.01, 0.01, 0.05), FAILS),  # not below the constant schedule's
        ((math.inf, 1.0, 0.05), FAILS),
        ((NAN, 1.0, 0.05), INCONCLUSIVE),
    ],
)
def test_rule_hogwild(args, expected):
    assert outcome(r.rule_hogwild(*args)) == expected


@pytest.mark.parametrize(
    "args, expected", [((9, 10), HOLDS), ((10, 10), FAILS), ((NAN, 10), FAILS), ((5, NAN), INCONCLUSIVE)]
)
def test_rule_fedlada(args, expected):
    assert outcome(r.rule_fedlada(*args)) == expected


@pytest.mark.parametrize(
    "points, expected",
    [
        ([(0.1, 0.9, 0.9), (0.2, 0.9, 0.95), (0.3, 0.7, 0.8)], HOLDS),  # equal; exactly 2× looser
        ([(0.1, 0.9, 0.9), (0.2, 0.9, 0.96), (0.3, 0.7, 0.8)], FAILS),  # the bound is > 2× loose
        ([(0.1, 0.91, 0.9), (0.2, 0.9, 0.95), (0.3, 0.7, 0.8)], FAILS),  # measured above ρ²
        ([(0.1, NAN, 0.9), (0.2, 0.9, 0.95), (0.3, 0.7, 0.8)], INCONCLUSIVE),
        ([(0.1, 0.9, 0.9), (0.2, 0.9, 0.95)], INCONCLUSIVE),  # 3 values of δ needed
    ],
)
def test_rule_certificate(points, expected):
    assert outcome(r.rule_certificate(points)) == expected


# -- experiments, without training ---------------------------------------------------------------------
def test_full_and_tiny_specs_are_unique_and_labelled_by_claim():
    for size in claims_specs.SIZES:
        specs = claims.claims(1, size=size) + list(
            claims_specs.claim7(claims_specs.SIZES[size], (1e-4, 1e6)).values()
        )
        assert len({s.run_id for s in specs}) == len(specs)
        assert len({(s.workload, s.label) for s in specs}) == len(specs)
        assert all(s.label.startswith("C") for s in specs)


def test_only_staged_suites_have_a_runner():
    assert suite_registry.runner("claims") is claims.run_suite
    assert suite_registry.runner("quick") is None


def test_measured_contraction_matches_the_slowest_mode():
    """x_{k+1} = (I − α(1−δ)A) x_k: the one-step ratio tends to max_i (1 − α(1−δ)λ_i)² (from the equation)."""
    m, L, alpha, delta = 1.0, 10.0, 0.05, 0.2
    expected = max((1 - alpha * (1 - delta) * lam) ** 2 for lam in np.linspace(m, L, 5))
    got = claims_extra.measured_contraction(m, L, 5, alpha, delta, 3000)
    assert got == pytest.approx(expected, rel=1e-9)
    assert claims_extra.measured_contraction(m, L, 5, alpha, delta, 3) < expected


def test_missing_records_and_missing_code_are_shown_inconclusive(tmp_path, monkeypatch):
    monkeypatch.setattr(claims_extra, "federated_available", lambda: False)
    monkeypatch.setattr(claims_extra, "certificate_available", lambda: False)
    claims_extra.run_certificate(tmp_path, claims_specs.TINY)
    results = claims.results(tmp_path)
    assert [x.number for x in results] == list(range(1, 11))
    by = {x.number: x.verdict for x in results}
    assert all(by[n].outcome == INCONCLUSIVE for n in range(1, 9))
    assert "not available" in by[9].reason and "not available" in by[10].reason


# -- end to end ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.distributed
def test_tiny_suite_end_to_end(tmp_path):
    from scalopt.report import render

    results = claims.run_suite(tmp_path, size="tiny", progress=False, log=lambda s: None)
    assert [x.number for x in results] == list(range(1, 11))
    assert all(x.verdict.outcome in (HOLDS, FAILS, INCONCLUSIVE) for x in results)
    assert (tmp_path / "claims" / "meta.json").exists()
    text = render(tmp_path).read_text()
    first_table = text.index("| # | claim | setting | measured | verdict |")
    assert first_table < text.index("## stdlib-lm") and first_table == text.index("|")
    rows = text[first_table:].split("\n\n")[0].splitlines()[2:]
    assert len(rows) == 10 and all(any(w in row for w in (HOLDS, FAILS, INCONCLUSIVE)) for row in rows)
    assert render(tmp_path).read_text() == text  # re-rendered from records: the same report


def test_cli_refuses_gpu_options_for_the_cpu_claims_suite(tmp_path, capsys):
    from scalopt.cli import main

    assert main(["bench", "--suite", "claims", "--autocast", "bf16", "--out", str(tmp_path)]) == 2
    assert "runs on the CPU" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
