"""The ``reddi`` workload and the ``adam-condition`` suite (verdicts beside the curves)."""

from __future__ import annotations

import pytest
import torch

from scalopt import workloads
from scalopt.bench import RunSpec, records, run_specs
from scalopt.bench.suites import get
from scalopt.bench.suites.adam_condition import SETTINGS, adam_condition
from scalopt.report import render
from scalopt.schedules import InvPower, OneMinusInvPower
from scalopt.theory import check_adam
from scalopt.theory.reddi import run_generic_adam_on_reddi


def test_reddi_rounds_losses_projection_and_metrics():
    wl = workloads.get("reddi")
    assert wl.describe()["x_star"] == -1.0
    model = wl.init_model(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1_000_003)
    it = wl.batches("train", gen)
    ks = [int(next(it)) for _ in range(5)]
    assert ks == [1, 2, 3, 4, 5]
    # f_k(x) − f_k(−1) at x0 = +1: C·2 on k ≡ 1 (mod 3), −2 otherwise
    assert [float(wl.loss(model, torch.tensor(k)).detach()) for k in (1, 2, 3)] == [6.0, -2.0, -2.0]
    with torch.no_grad():
        model.x.fill_(3.0)
    assert wl.evaluate(model) == {"loss": pytest.approx(2 / 3), "x": 1.0}  # evaluated at Π(x)
    wl.loss(model, torch.tensor(2))
    assert float(model.x.detach()) == 1.0  # the played point is projected in place
    with torch.no_grad():
        model.x.fill_(-1.0)
    assert wl.evaluate(model)["loss"] == 0.0


def test_reddi_round_position_lives_in_the_generator_state():
    wl = workloads.get("reddi", C=4.0)
    gen = torch.Generator().manual_seed(7)
    it = wl.batches("train", gen)
    for _ in range(4):
        next(it)
    saved = gen.get_state()
    fresh = torch.Generator()
    fresh.set_state(saved)
    assert int(next(wl.batches("train", fresh))) == 5 == int(next(it))


@pytest.mark.parametrize("C", [1.5, 2.0])
def test_reddi_rejects_c_at_most_two(C):
    with pytest.raises(ValueError, match="C must be in"):
        workloads.get("reddi", C=C)


def test_generic_adam_on_reddi_matches_the_numpy_counterexample(tmp_path):
    spec = RunSpec(
        workload="reddi",
        optimizer="generic-adam",
        hparams={
            "lr": 0.5,
            "betas": (0.0, 0.1),
            "bias_correction": False,
            "lr_decay": {"type": "InvPower", "s": 0.5},
        },
        steps=300,
        eval_every=10,
        label="adam",
    )
    run_specs([spec], tmp_path, progress=False, log=lambda s: None)
    rows = [r for r in records.read_rows(tmp_path / "runs" / spec.run_id) if "eval_x" in r]
    xs = run_generic_adam_on_reddi(0.5, InvPower(0.5), 0.1, 0.0, 300)
    for r in rows:  # float32 vs float64
        assert r["eval_x"] == pytest.approx(xs[r["step"]], abs=1e-4)
    assert rows[-1]["eval_x"] > 0.99  # constant β2 = 0.1 drives x to the worst point


def test_suite_labels_carry_the_checker_verdict():
    specs = get("adam-condition")(1)
    assert len(specs) == len(SETTINGS) == 3 and len({s.run_id for s in specs}) == 3
    for spec, (_, beta2) in zip(specs, SETTINGS):
        report = check_adam(lr=spec.hparams["lr"], lr_decay=InvPower(0.5), beta2=beta2, beta1=0.0)
        verdict = "condition SATISFIED" if report.satisfied else "condition NOT satisfied"
        assert spec.label.endswith(verdict) and spec.workload == "reddi"
    assert [s.label.endswith("NOT satisfied") for s in specs] == [True, True, False]
    assert isinstance(SETTINGS[2][1], OneMinusInvPower)
    assert len(adam_condition(2)) == 6


def test_suite_runs_wrong_point_vs_convergence_and_reports_verdicts(tmp_path):
    specs = adam_condition(1)
    headers = run_specs(specs, tmp_path, progress=False, log=lambda s: None)
    final = {h["label"]: h["final"]["eval_loss"] for h in headers}
    constant, _, schedule = (s.label for s in specs)
    assert final[constant] == pytest.approx(2 / 3, abs=1e-3)  # x = +1, the worst point
    assert final[schedule] < 0.01  # x → x* = −1
    text = render(tmp_path).read_text()
    for s in specs:
        assert f"| {s.label} |" in text
    assert (tmp_path / "reddi_loss_vs_step.png").exists()
