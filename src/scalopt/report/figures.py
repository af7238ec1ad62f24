"""Figures (PNG, matplotlib's Agg backend): eval loss against steps, wall time and bytes.

The loss axis carries the workload's unit (``loss_unit`` in its recorded description, e.g.
nats/byte). Bytes span decades between algorithms, so that axis is logarithmic, with ticks at
1, 2 and 5 of every decade labelled in B/KB/MB/GB, so a range inside one decade still reads.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from scalopt.report.summary import Group  # noqa: E402

AXES = {
    "step": ("step", "training step"),
    "wall": ("wall", "wall time (s, evaluation excluded)"),
    "bytes": ("bytes_sent", "bytes sent per rank"),
}


def _curve(group: Group, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """x (mean over seeds), mean, min and max eval loss at the common eval points."""
    series = [[(r[key], r["eval_loss"]) for r in run.evals if key in r] for run in group.runs]
    n = min((len(s) for s in series), default=0)
    if n == 0:
        return None
    xs = np.array([[p[0] for p in s[:n]] for s in series], dtype=float)
    ys = np.array([[p[1] for p in s[:n]] for s in series], dtype=float)
    return xs.mean(axis=0), ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def byte_label(value: float, _pos: object = None) -> str:
    """1500000 -> '1.5 MB' (decimal units, like the report's tables)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"


def _log_bytes_axis(ax: plt.Axes) -> None:
    """Log scale; labelled ticks at 1-9, 1/2/5 or 1 of each decade, whichever gives a few ticks for
    the span of the data (call it after plotting)."""
    ax.set_xscale("log")
    ax.autoscale_view()
    low, high = ax.get_xlim()
    decades = np.log10(high / low) if low > 0 and high > low else 1.0
    subs = np.arange(1.0, 10.0) if decades < 1.2 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(byte_label))
    ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(1.0, 10.0)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def loss_unit(groups: list[Group], workload: str) -> str:
    """The loss unit the workload's records state ("" when they state none)."""
    for g in groups:
        if g.workload == workload:
            return str(g.runs[0].header.get("workload", {}).get("loss_unit", ""))
    return ""


def loss_figure(groups: list[Group], workload: str, axis: str, path: Path) -> Path | None:
    key, xlabel = AXES[axis]
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=110)
    shown = [g for g in groups if g.workload == workload]
    if len(shown) > 10:  # the default palette has 10 colours; never reuse one
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    drawn = False
    starts, lows, highs = [], [], []
    for g in shown:
        curve = _curve(g, key)
        if curve is None:
            continue
        x, mean, lo, hi = curve
        if axis == "bytes":  # log axis: the points before any byte was sent have no place on it
            keep = x > 0
            x, mean, lo, hi = x[keep], mean[keep], lo[keep], hi[keep]
            if len(x) == 0:
                continue
        finite = mean[np.isfinite(mean)]
        if finite.size:
            starts.append(finite[0])
            lows.append(finite.min())
            highs.append(finite.max())
        (line,) = ax.plot(x, mean, label=g.label, linewidth=1.6)
        if len(g.runs) > 1:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    target = next(g.target for g in groups if g.workload == workload)
    ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:g}")
    typical = float(np.median(starts)) if starts else 0.0
    if starts and max(highs) > 1.5 * typical:  # a diverged run would flatten every other curve
        bottom = min(min(lows), target)
        ax.set_ylim(bottom - 0.05 * (typical - bottom), typical * 1.25)
        ax.text(0.01, 0.01, "diverged runs leave the top", transform=ax.transAxes, fontsize=7)
    ax.set_xlabel(xlabel)
    unit = loss_unit(groups, workload)
    ax.set_ylabel(f"eval loss ({unit})" if unit else "eval loss")
    ax.set_title(f"{workload}: eval loss vs {axis} (mean, band = min..max over seeds)", fontsize=9)
    if axis == "bytes":
        _log_bytes_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
