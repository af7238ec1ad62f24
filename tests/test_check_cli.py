"""`scalopt check adam` and GenericAdam(check_convergence=True)."""

from __future__ import annotations

import warnings

import pytest
import torch

import scalopt
from scalopt.cli import main
from scalopt.schedules import InvPower, OneMinusInvPower


def test_check_adam_cli_verdicts(capsys):
    assert main(["check", "adam", "--lr", "1e-3", "--lr-decay", "1/sqrt(t)", "--beta2", "1-1/t"]) == 0
    assert "SATISFIED" in capsys.readouterr().out
    assert main(["check", "adam", "--beta2", "0.999"]) == 1
    out = capsys.readouterr().out
    assert "NOT SATISFIED" in out and "neighbourhood" in out


@pytest.mark.parametrize("expr", ["__import__('os')", "t.real", "open('f')", "x + 1"])
def test_check_adam_cli_refuses_unsafe_expressions(expr, capsys):
    assert main(["check", "adam", "--beta2", expr]) == 2
    assert "not allowed" in capsys.readouterr().err or "error" in capsys.readouterr().err


def test_generic_adam_warns_when_condition_fails():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.warns(UserWarning, match="neighbourhood"):
        scalopt.GenericAdam(p, lr=1e-3, check_convergence=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scalopt.GenericAdam(
            p,
            lr=1e-3,
            lr_decay=InvPower(0.5),
            beta2_schedule=OneMinusInvPower(0.1, 1.0),
            check_convergence=True,
        )
