"""The federated section of a report: accuracy to a target in rounds and bytes, per Dirichlet α.

For the runs of a federated suite (records whose spec has ``federated``), grouped by label:

- target accuracy per α = ``TARGET_FRACTION`` × FedAvg's best final accuracy at seed 0 at that α
  (over every FedAvg learning rate swept; a rule that reads FedAvg's runs only, so it is fixed
  before any other algorithm is compared);
- per group: final accuracy (mean ± sd over seeds), runs that reached the target, rounds to target
  and bytes to target (up + down, all clients; means over the runs that reached it), the rounds
  ratio to the FedAvg group with the most seeds (the best-lr FedAvg), bytes per round down and up;
- one figure per α: eval accuracy against rounds for the groups with the most seeds (the best lrs).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scalopt.report.markdown import _bytes as human_bytes  # noqa: E402
from scalopt.report.summary import Group  # noqa: E402

TARGET_FRACTION = 0.9


def is_federated(group: Group) -> bool:
    return bool(group.runs[0].spec.get("federated"))


def _alpha(group: Group) -> float:
    return float(group.runs[0].spec["federated"].get("dirichlet", 1.0))


def _final_accuracy(run: Any) -> float:
    ev = [r for r in run.evals if "eval_accuracy" in r]
    return float(ev[-1]["eval_accuracy"]) if ev else math.nan


def target_accuracy(groups: list[Group], alpha: float) -> float:
    finals = [
        _final_accuracy(r)
        for g in groups
        if _alpha(g) == alpha and g.optimizer == "fedavg"
        for r in g.runs
        if r.spec["seed"] == 0
    ]
    finals = [f for f in finals if math.isfinite(f)]
    return TARGET_FRACTION * max(finals) if finals else math.nan


def _to_target(run: Any, target: float) -> tuple[float, float] | None:
    for r in run.evals:
        if r.get("eval_accuracy", -1.0) >= target:
            return float(r["step"]), float(r.get("bytes_sent", math.nan))
    return None


def _fmt(v: float, spec: str) -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, spec)


def _mb(v: float) -> str:
    return "—" if not math.isfinite(v) else human_bytes(v)


def _stats(group: Group, target: float) -> dict[str, Any]:
    finals = [_final_accuracy(r) for r in group.runs]
    hits = [h for h in (_to_target(r, target) for r in group.runs) if h is not None]
    last = [r.rows[-1] for r in group.runs]
    rounds = statistics.fmean(r["step"] for r in last)
    return {
        "acc": statistics.fmean(finals),
        "sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        "hits": len(hits),
        "rounds": statistics.fmean(h[0] for h in hits) if hits else math.nan,
        "bytes": statistics.fmean(h[1] for h in hits) if hits else math.nan,
        "down": statistics.fmean(r["bytes_down"] for r in last) / rounds,
        "up": statistics.fmean(r["bytes_up"] for r in last) / rounds,
    }


def section(groups: list[Group], out_dir: Path) -> list[str]:
    fed = [g for g in groups if is_federated(g)]
    out: list[str] = []
    for alpha in sorted({_alpha(g) for g in fed}):
        rows = [g for g in fed if _alpha(g) == alpha]
        target = target_accuracy(fed, alpha)
        stats = {g.label: _stats(g, target) for g in rows}
        fedavg = [g for g in rows if g.optimizer == "fedavg"]
        ref = max(fedavg, key=lambda g: len(g.runs)) if fedavg else None
        ref_rounds = stats[ref.label]["rounds"] if ref is not None else math.nan
        cfg = rows[0].runs[0].spec["federated"]
        out += [
            f"## {rows[0].workload}, federated, Dirichlet α = {alpha:g}",
            "",
            f"{cfg.get('clients')} clients, {cfg.get('clients_per_round')} per round, "
            f"K = {cfg.get('local_steps')} local steps; target accuracy {target:.4f} "
            f"(= {TARGET_FRACTION} × FedAvg's best final accuracy at seed 0); rounds ratio against "
            f"`{ref.label if ref else '—'}`",
            "",
            "| algorithm | seeds | final accuracy (mean ± sd) | reached target | rounds to target "
            "| rounds / FedAvg | bytes to target | bytes/round down | bytes/round up |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for g in rows:
            s = stats[g.label]
            ratio = s["rounds"] / ref_rounds if ref_rounds and math.isfinite(ref_rounds) else math.nan
            times = "×" if math.isfinite(ratio) else ""
            out.append(
                f"| {g.label} | {len(g.runs)} | {_fmt(s['acc'], '.4f')} ± {_fmt(s['sd'], '.4f')} | "
                f"{s['hits']}/{len(g.runs)} | {_fmt(s['rounds'], '.1f')} | {_fmt(ratio, '.2f')}"
                f"{times} | {_mb(s['bytes'])} | {_mb(s['down'])} | {_mb(s['up'])} |"
            )
        path = accuracy_figure(rows, alpha, target, out_dir / f"federated_alpha{alpha:g}_accuracy.png")
        out += ["", f"![accuracy vs round, α = {alpha:g}]({path.name})", ""]
    return out


def accuracy_figure(groups: list[Group], alpha: float, target: float, path: Path) -> Path:
    most = max(len(g.runs) for g in groups)
    shown = [g for g in groups if len(g.runs) == most]
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=110)
    if len(shown) > 10:
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for g in shown:
        series = [
            [(r["step"], r["eval_accuracy"]) for r in run.evals if "eval_accuracy" in r] for run in g.runs
        ]
        n = min(len(s) for s in series)
        if n == 0:
            continue
        x = np.array([p[0] for p in series[0][:n]], dtype=float)
        ys = np.array([[p[1] for p in s[:n]] for s in series], dtype=float)
        (line,) = ax.plot(x, ys.mean(axis=0), label=g.label, linewidth=1.4)
        if len(g.runs) > 1:
            ax.fill_between(
                x, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15, linewidth=0
            )
    if math.isfinite(target):
        ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("round")
    ax.set_ylabel("eval accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(
        f"digits, Dirichlet α = {alpha:g}: accuracy vs round (mean, band = min..max over seeds)", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
