"""The claims section of a ``claims`` suite report: the verdict table first, then rules and caveats.

Everything comes from ``scalopt.bench.suites.claims.results`` (the records and the suite's JSON
files), so ``scalopt report`` re-renders it without training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scalopt.bench.suites import claims as suite  # noqa: E402
from scalopt.bench.suites.claims_measure import Result  # noqa: E402
from scalopt.bench.suites.claims_rules import CLAIMS, FAILS, HOLDS, claim  # noqa: E402

FIGURE = "claims_l0l1_gap_vs_L1.png"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict_cell(result: Result) -> str:
    v = result.verdict
    word = f"**{v.outcome}**" if v.outcome in (HOLDS, FAILS) else v.outcome
    return f"{word} — {v.reason}"


def table(results: list[Result], load: str) -> list[str]:
    lines = ["| # | claim | setting | measured | verdict |", "|---|---|---|---|---|"]
    for r in results:
        c = claim(r.number)
        figure = r.figure + (f" † (wall clock, {load})" if r.wall_clock else "")
        lines.append(
            f"| {r.number} | {_cell(c.name + ': ' + c.statement)} | {_cell(r.setting)} | {_cell(figure)} | "
            f"{_cell(verdict_cell(r))} |"
        )
    return lines


def gap_figure(result: Result, path: Path) -> Path | None:
    """Claim 3: the best final gap of SGD and generalized SignSGD against L1 (log-log) and, when the
    estimator exists, the (L0, L1) fitted to the (‖∇f‖, ‖∇²f‖) evaluations of each L1's runs."""
    n = result.numbers
    l1 = n.get("L1") or []
    if not l1:
        return None
    fits = n.get("fitted_L0_L1") or {}
    fig, axes = plt.subplots(
        1, 2 if fits else 1, figsize=(10.4 if fits else 6.4, 4.2), dpi=110, squeeze=False
    )
    ax = axes[0][0]
    curves = (("sgd_best_gap", "SGD (momentum 0.9)", "o"), ("sign_best_gap", "generalized SignSGD", "s"))
    for key, label, marker in curves:
        y = [g if math.isfinite(g) and g > 0 else math.nan for g in n[key]]
        ax.plot(l1, y, marker=marker, label=f"{label}, best lr of the grid")
    top = ax.get_ylim()[1]
    for key, _, marker in curves:
        for x, g in zip(l1, n[key], strict=True):
            if math.isinf(g):  # every lr diverged: drawn at the top edge
                ax.plot([x], [top], marker=marker, color="black", linestyle="none")
                ax.annotate("diverged at every lr", (x, top), fontsize=7, ha="right", va="top")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("L1 of the objective (beta_max of l0l1)")
    ax.set_ylabel("final gap f(x) − f*")
    ax.set_title("l0l1: best final gap over the lr grid vs L1", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if fits:
        ax = axes[0][1]
        xs = [float(k) for k in fits]
        ax.plot(xs, [v[1] for v in fits.values()], marker="o", label="fitted L1")
        ax.plot(xs, [v[0] for v in fits.values()], marker="s", label="fitted L0")
        ax.plot(xs, xs, color="grey", linestyle=":", label="L1 of the objective")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("L1 of the objective (beta_max of l0l1)")
        ax.set_ylabel("constant fitted along the runs")
        ax.set_title("(L0, L1) fitted to ‖∇²f‖ ≤ L0 + L1‖∇f‖ at the runs' evaluations", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _load_text(meta: dict[str, Any]) -> str:
    loads = [v for _, v in meta.get("load_average", [])]
    if not loads:
        return "load not recorded"
    return f"load average {min(loads):.1f}–{max(loads):.1f} on {meta.get('cpus', '?')} CPUs"


def section(out_dir: Path) -> list[str]:
    out_dir = Path(out_dir)
    meta = suite.read_meta(out_dir)
    results = suite.results(out_dir)
    load = _load_text(meta)
    total = meta.get("total_s")
    counts = {o: sum(r.verdict.outcome == o for r in results) for o in (HOLDS, FAILS)}
    lines = [
        "## Claims",
        "",
        f"{counts[HOLDS]} of {len(results)} claims hold, {counts[FAILS]} do not, "
        f"{len(results) - counts[HOLDS] - counts[FAILS]} inconclusive (size `{meta.get('size', 'full')}`"
        + (f", suite run time {total / 60:.1f} min" if total else "")
        + f", {load}).",
        "",
    ]
    lines += table(results, load)
    lines += [
        "",
        "Rules, written before the run (pure functions in `scalopt.bench.suites.claims_rules`):",
        "",
    ]
    lines += [f"{c.number}. {c.rule}" for c in CLAIMS]
    lines += [
        "",
        "† A wall-clock figure: measured with other jobs on the same cores, it is inflated and noisy "
        "(steps, rounds, bytes and losses are not affected).",
        "",
    ]
    path = gap_figure(results[2], out_dir / FIGURE) if len(results) > 2 else None
    if path is not None:
        lines += [f"![claim 3: final gap vs L1]({path.name})", ""]
    return lines
