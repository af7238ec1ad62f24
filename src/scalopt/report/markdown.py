"""``report.md``: one table per workload, the figures, and how the numbers were made."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from scalopt.report.frontier import frontier_table
from scalopt.report.summary import BASELINE, WARMUP_STEPS, Group, Run, baseline_step_time


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _state_bytes(g: Group) -> float | None:
    """Median over seeds of the optimizer-state bytes the loop records after the first step."""
    values = [r.header["optimizer_state_bytes"] for r in g.runs if "optimizer_state_bytes" in r.header]
    return statistics.median(values) if values else None


def table(groups: list[Group], workload: str) -> list[str]:
    rows = [g for g in groups if g.workload == workload]
    base = baseline_step_time(groups, workload)
    state_base = [b for g in rows if g.optimizer == BASELINE and (b := _state_bytes(g)) is not None]
    show_state = any(_state_bytes(g) is not None for g in rows)
    show_bytes = any(g.bytes_per_step() is not None for g in rows)
    show_workers = any(g.workers() > 1 for g in rows)
    show_hvps = any(g.hvps_per_step() is not None for g in rows)
    show_gpu = any(
        r.header.get("autocast") or r.header.get("device", "cpu") != "cpu" for g in rows for r in g.runs
    )
    base_iter = baseline_step_time(groups, workload, whole_iteration=True) if show_hvps else None
    head = [
        "optimizer",
        "seeds",
        "final eval loss (mean ± sd)",
        "reached target",
        "steps to target",
        "time to target (s)",
        "median opt.step() (ms)",
        "mean opt.step() (ms)",
        f"step time / {BASELINE}",
    ]
    if show_workers:
        head[1:1] = ["workers", "network"]
        head += ["wall s/step", "rounds/step"]
    if show_hvps:
        head += ["median fwd+bwd+step (ms)", f"fwd+bwd+step / {BASELINE}", "HVPs/step"]
    if show_bytes:
        head.append("bytes/step/rank")
    if show_state:
        head.append(f"state memory / {BASELINE}")
    if show_gpu:
        head += ["device", "median fwd+bwd (ms)", "peak memory"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in rows:
        mean, sd = g.final_loss()
        hits, steps, wall = g.to_target()
        st = g.step_time()
        cells = [
            g.label,
            str(len(g.runs)),
            f"{_fmt(mean)} ± {_fmt(sd)}",
            f"{hits}/{len(g.runs)}",
            _fmt(steps, 0),
            _fmt(wall, 1),
            _fmt(st * 1e3, 3),
            _fmt(g.mean_step_time() * 1e3, 3),
            _fmt(st / base, 2) + "×" if base else "—",
        ]
        if show_workers:
            cells[1:1] = [str(g.workers()), g.network()]
            cells += [_fmt(g.wall_per_step(), 4), _fmt(g.rounds_per_step(), 4)]
        if show_hvps:
            it, hv = g.iter_time(), g.hvps_per_step()
            cells += [
                _fmt(it * 1e3, 1),
                _fmt(it / base_iter, 2) + "×" if base_iter else "—",
                _fmt(hv, 2) if hv is not None else "0",
            ]
        if show_bytes:
            cells.append(_bytes(g.bytes_per_step()))
        if show_state:
            sb = _state_bytes(g)
            ok = sb is not None and state_base and statistics.median(state_base) > 0
            cells.append(_fmt(sb / statistics.median(state_base), 2) + "×" if ok else "—")
        if show_gpu:
            peak = [r.header["peak_memory_bytes"] for r in g.runs if "peak_memory_bytes" in r.header]
            run0 = g.runs[0].header
            cells += [
                f"{run0.get('device', 'cpu')}"
                + (f", {run0['autocast']} autocast" if run0.get("autocast") else ""),
                _fmt((g.iter_time() - st) * 1e3, 1),
                _bytes(statistics.median(peak)) if peak else "—",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def environment(runs: list[Run]) -> list[str]:
    env: dict[str, Any] = runs[0].header.get("environment", {})
    git = env.get("git", {})
    sha = (git.get("sha") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    return [
        f"- torch {env.get('torch')}, Python {env.get('python')}, {env.get('device')} "
        f"({env.get('cpu')}), torch threads pinned to {env.get('torch_threads')}",
        f"- scalopt commit {sha}",
    ]


def document(
    suite: dict[str, Any],
    groups: list[Group],
    runs: list[Run],
    figures: dict[str, list[Path]],
    extra: list[str] | None = None,
    head: list[str] | None = None,
) -> str:
    """The report; ``head`` (a suite's own section, e.g. the claims table) comes before every table."""
    out = [f"# scalopt report: suite `{suite.get('suite', 'custom')}`", ""]
    out += environment(runs)
    out += [
        f"- {len(runs)} runs; target = the workload's default target eval loss unless the suite sets one",
        "- `opt.step()` time: median (the typical step) and mean (amortized: rare costly steps such as "
        f"Shampoo's root steps included) over steps (the first {WARMUP_STEPS} skipped), median over seeds; "
        f"the ratio divides by `{BASELINE}` (torch.optim.AdamW(foreach=True)) measured in the same process",
    ]
    if any(g.hvps_per_step() is not None for g in groups):
        out.append(
            "- optimizers that take a loss closure (Hessian-vector-product methods) run their own forward "
            "and backward passes inside `opt.step()`; compare them by the forward + backward + step "
            "columns (median over steps), against the same for the baseline"
        )
    out += [
        "",
    ]
    out += head or []
    for workload in dict.fromkeys(g.workload for g in groups):
        desc = next(r.header["workload"] for r in runs if r.spec["workload"] == workload)
        target = next(g.target for g in groups if g.workload == workload)
        out += [
            f"## {workload}",
            "",
            f"target eval loss {target:g}{' ' + desc['loss_unit'] if desc.get('loss_unit') else ''}; "
            f"data hash `{desc.get('data_hash', '')[:16]}`",
            "",
        ]
        out += table(groups, workload)
        out.append("")
        front = frontier_table(groups, workload)
        if front:
            out += (
                [
                    "Bytes vs loss (final eval loss against bytes per step per rank; ✓ = on the Pareto front "
                    "of its worker count):",
                    "",
                ]
                + front
                + [""]
            )
        for path in figures.get(workload, []):
            out.append(f"![{path.stem}]({path.name})")
        out.append("")
    out += extra or []
    specs = sorted((r.spec for r in runs), key=lambda s: json.dumps(s, sort_keys=True))
    out += ["## Configuration", "", f"{len(specs)} runs in this report, one JSON line each:", "", "```json"]
    out += [json.dumps(s, sort_keys=True) for s in specs] + ["```", ""]
    return "\n".join(out)
