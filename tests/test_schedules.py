"""Schedules: values, validation, and the plain-data form param groups and records need."""

from __future__ import annotations

import json
import math

import pytest

from scalopt import schedules
from scalopt.schedules import Constant, InvPower, OneMinusInvPower


def test_values():
    assert InvPower(0.5)(4) == 0.5
    assert OneMinusInvPower(0.1, 1.0)(10) == pytest.approx(0.99)
    assert OneMinusInvPower(0.5, 0.5)(4) == pytest.approx(0.75)
    assert Constant(0.3)(123) == 0.3


@pytest.mark.parametrize("schedule", [InvPower(0.25), OneMinusInvPower(0.2, 0.75), Constant(2.0)])
def test_plain_data_round_trip(schedule):
    data = schedules.to_dict(schedule)
    assert schedules.from_dict(json.loads(json.dumps(data))) == schedule
    assert schedules.to_dict(None) is None and schedules.from_dict(None) is None


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: InvPower(-1.0), "s must be"),
        (lambda: OneMinusInvPower(0.0, 1.0), "theta must be"),
        (lambda: OneMinusInvPower(0.5, -1.0), "r must be"),
        (lambda: Constant(math.nan), "value must be"),
        (lambda: schedules.from_dict({"type": "Cosine"}), "schedule type must be one of"),
        (lambda: schedules.to_dict(lambda t: 1.0), "to be saved"),
        (lambda: schedules.check_schedule("lr_decay", "fast"), "lr_decay must be"),
        (lambda: schedules.check_schedule("lr_decay", lambda t: math.inf), r"lr_decay\(1\) must be"),
    ],
)
def test_invalid(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_numbers_become_constants():
    assert schedules.check_schedule("beta2_schedule", 0.99) == Constant(0.99)
