"""The bytes-vs-loss frontier of distributed runs: final eval loss against bytes per step per rank.

For each worker count, a method is on the Pareto front when no other method of that worker count
sends at most as many bytes per step and ends at a lower-or-equal final eval loss (one of the two
strictly better). The reference of a worker count is its fp32 data-parallel run (algorithm
``data-parallel``): the table gives each method's byte saving and loss gap against it.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scalopt.report.summary import Group  # noqa: E402

REFERENCE_ALGORITHM = "data-parallel"


def _points(groups: list[Group], workload: str) -> dict[int, list[tuple[Group, float, float]]]:
    """worker count -> (group, bytes/step/rank, mean final eval loss), distributed groups only."""
    out: dict[int, list[tuple[Group, float, float]]] = {}
    for g in groups:
        b = g.bytes_per_step()
        loss = g.final_loss()[0]
        if g.workload == workload and g.workers() > 1 and b is not None and math.isfinite(loss):
            out.setdefault(g.workers(), []).append((g, b, loss))
    return out


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, loss) pairs: True where no other pair is ≤ in both and < in one."""
    return [not any((c2 <= c and l2 <= lo) and (c2 < c or l2 < lo) for c2, l2 in points) for c, lo in points]


def _reference(items: list[tuple[Group, float, float]]) -> tuple[float, float] | None:
    for g, b, loss in items:
        if g.runs[0].spec.get("algorithm") == REFERENCE_ALGORITHM and not g.runs[0].spec.get("network"):
            return b, loss
    return None


def frontier_table(groups: list[Group], workload: str) -> list[str]:
    """Markdown rows, one per distributed method, by worker count then bytes; empty if < 2 methods."""
    by_workers = _points(groups, workload)
    if sum(len(v) for v in by_workers.values()) < 2:
        return []
    head = [
        "workers",
        "method",
        "bytes/step/rank",
        "fewer bytes than fp32 DP",
        "final eval loss",
        "loss vs fp32 DP",
        "Pareto front",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted(by_workers):
        items = sorted(by_workers[n], key=lambda t: t[1])
        ref = _reference(items)
        front = pareto([(b, loss) for _, b, loss in items])
        for (g, b, loss), on in zip(items, front):
            ratio = f"{ref[0] / b:.1f}×" if ref else "—"
            gap = f"{100 * (loss / ref[1] - 1):+.1f} %" if ref else "—"
            lines.append(
                f"| {n} | {g.label} | {b / 1e3:.1f} KB | {ratio} | {loss:.3f} | {gap} | {'✓' if on else ''} |"
            )
    return lines


def frontier_figure(groups: list[Group], workload: str, path: Path) -> Path | None:
    """Final eval loss vs bytes/step/rank (log x), one marker per worker count, the fronts as lines."""
    by_workers = _points(groups, workload)
    if sum(len(v) for v in by_workers.values()) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8.0, 5.2), dpi=110)
    markers = "osDv"
    refs = [r[1] for items in by_workers.values() if (r := _reference(items)) is not None]
    all_losses = [loss for items in by_workers.values() for _, _, loss in items]
    top = min(max(all_losses), 1.4 * max(refs)) if refs else max(all_losses)  # outliers: at the edge
    for k, n in enumerate(sorted(by_workers)):
        items = sorted(by_workers[n], key=lambda t: t[1])
        front = pareto([(b, loss) for _, b, loss in items])
        xs, ys = [b for _, b, _ in items], [min(loss, top) for _, _, loss in items]
        (pts,) = ax.plot(xs, ys, markers[k % len(markers)], label=f"{n} workers", alpha=0.85)
        fx = [x for x, on in zip(xs, front) if on]
        fy = [y for y, on in zip(ys, front) if on]
        ax.plot(fx, fy, "-", color=pts.get_color(), linewidth=1.2, alpha=0.7, label=f"front, {n} workers")
        for (g, b, loss), on in zip(items, front):
            ax.annotate(
                g.label if loss <= top else f"{g.label}: {loss:.2f}, off the chart",
                (b, min(loss, top)),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
                fontweight="bold" if on else "normal",
            )
    ax.set_ylim(top=top + 0.03 * (top - min(all_losses) or 1.0))
    ax.set_xscale("log")
    ax.set_xlabel("bytes sent per step per rank (log)")
    ax.set_ylabel("final eval loss")
    ax.set_title(
        f"{workload}: final eval loss vs bytes per step (mean over seeds; lines: Pareto fronts)", fontsize=9
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
