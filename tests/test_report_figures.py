"""Figures: a byte axis that reads (several labelled ticks, B/KB/MB) and loss axes with their unit."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from scalopt import workloads
from scalopt.report.figures import _log_bytes_axis, byte_label, loss_unit
from scalopt.report.summary import Group, Run


@pytest.mark.parametrize("low,high", [(2e6, 3e7), (1.2e6, 9e6), (3e4, 5e8)])
def test_byte_axis_has_several_readable_labels(low, high):
    fig, ax = plt.subplots()
    ax.plot([low, high], [1.0, 2.0])
    _log_bytes_axis(ax)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    labels = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()]
    plt.close(fig)
    assert len(labels) >= 3, labels
    assert all(label.split()[-1] in ("B", "KB", "MB", "GB") for label in labels), labels


def test_byte_labels():
    assert byte_label(2e7) == "20 MB" and byte_label(500) == "500 B" and byte_label(1.5e9) == "1.5 GB"


def test_loss_axis_unit_comes_from_the_workload():
    assert workloads.get("stdlib-lm").describe()["loss_unit"] == "nats/byte"
    run = Run({"workload": {"name": "stdlib-lm", "loss_unit": "nats/byte"}}, [])
    assert loss_unit([Group("stdlib-lm", "x", "adam", 2.0, [run])], "stdlib-lm") == "nats/byte"
    old = Run({"workload": {"name": "digits"}}, [])  # records written before units were recorded
    assert loss_unit([Group("digits", "x", "adam", 2.0, [old])], "digits") == ""
