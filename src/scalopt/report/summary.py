"""Summaries of run records, aggregated over seeds of one configuration. Never trains.

A run's identity is its whole resolved configuration: the spec without its seed (workload and its
overrides, optimizer and hyperparameters, steps, algorithm, network, label ...) and the optimizer's
resolved defaults as recorded. Runs are grouped only when that identity is equal, so a group's
spread is over seeds alone; two configurations that share a label get the fields that tell them
apart appended to it (``clipped-sgd [hparams.lr=0.05]``).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalopt.bench import records
from scalopt.bench.spec import config_id

BASELINE = "torch-adamw"
WARMUP_STEPS = 5  # the first optimizer steps allocate state; their time is not the steady state


@dataclass
class Run:
    header: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def spec(self) -> dict[str, Any]:
        return self.header["spec"]

    @property
    def evals(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "eval_loss" in r]

    def final_eval_loss(self) -> float:
        ev = self.evals
        return float(ev[-1]["eval_loss"]) if ev else math.nan

    def first_reaching(self, target: float) -> dict[str, Any] | None:
        for r in self.evals:
            if r["eval_loss"] <= target:
                return r
        return None

    def median_step_time(self) -> float:
        times = [r["step_time"] for r in self.rows[WARMUP_STEPS:]] or [r["step_time"] for r in self.rows]
        return statistics.median(times) if times else math.nan

    def median_iter_time(self) -> float:
        """Forward + backward + step (the loop's ``iter_time``), comparable between optimizers that
        step after ``backward()`` and those that take a closure; NaN for records without it."""
        rows = [r for r in self.rows[WARMUP_STEPS:] if "iter_time" in r] or [
            r for r in self.rows if "iter_time" in r
        ]
        return statistics.median(r["iter_time"] for r in rows) if rows else math.nan

    def last_per_step(self, key: str) -> float | None:
        rows = [r for r in self.rows if key in r]
        return rows[-1][key] / max(rows[-1]["step"], 1) if rows else None

    def mean_step_time(self) -> float:
        """Amortized: includes the rare expensive steps (e.g. Shampoo's root steps)."""
        times = [r["step_time"] for r in self.rows[WARMUP_STEPS:]] or [r["step_time"] for r in self.rows]
        return statistics.fmean(times) if times else math.nan

    def bytes_per_step(self) -> float | None:
        with_bytes = [r for r in self.rows if "bytes_sent" in r]
        if not with_bytes:
            return None
        return with_bytes[-1]["bytes_sent"] / max(with_bytes[-1]["step"], 1)


@dataclass
class Group:
    workload: str
    label: str
    optimizer: str
    target: float
    runs: list[Run] = field(default_factory=list)
    identity: str = ""  # the resolved configuration (see the module docstring)

    @property
    def config_id(self) -> str:
        return config_id(self.runs[0].spec)

    def _spread(self, values: list[float]) -> tuple[float, float]:
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return math.nan, math.nan
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    def final_loss(self) -> tuple[float, float]:
        return self._spread([r.final_eval_loss() for r in self.runs])

    def to_target(self) -> tuple[int, float, float]:
        """(runs that reached the target, mean steps, mean wall seconds) over those runs."""
        hits = [h for h in (r.first_reaching(self.target) for r in self.runs) if h is not None]
        if not hits:
            return 0, math.nan, math.nan
        return len(hits), statistics.fmean(h["step"] for h in hits), statistics.fmean(h["wall"] for h in hits)

    def step_time(self) -> float:
        return statistics.median(r.median_step_time() for r in self.runs)

    def mean_step_time(self) -> float:
        return statistics.median(r.mean_step_time() for r in self.runs)

    def iter_time(self) -> float:
        return statistics.median(r.median_iter_time() for r in self.runs)

    def hvps_per_step(self) -> float | None:
        """Hessian-vector products per step (the optimizer's ``hvps`` counter), None if it has none."""
        values = [v for v in (r.last_per_step("opt_hvps") for r in self.runs) if v is not None]
        return statistics.fmean(values) if values else None

    def bytes_per_step(self) -> float | None:
        values = [b for b in (r.bytes_per_step() for r in self.runs) if b is not None]
        return statistics.fmean(values) if values else None

    def rounds_per_step(self) -> float:
        values = [v for v in (r.last_per_step("rounds") for r in self.runs) if v is not None]
        return statistics.fmean(values) if values else math.nan

    def wall_per_step(self) -> float:
        return statistics.fmean(r.last_per_step("wall") or math.nan for r in self.runs)

    def workers(self) -> int:
        return int(self.runs[0].header.get("world_size", 1))

    def network(self) -> str:
        net = self.runs[0].spec.get("network")
        if not net:
            return "none"
        return f"{net[0] * 1e3:g} ms, {net[1] * 8 / 1e9:g} Gbit/s"


def load_runs(out_dir: Path) -> list[Run]:
    runs = []
    for run_dir in records.list_runs(out_dir):
        header = records.read_header(run_dir)
        rows = records.read_rows(run_dir) if (run_dir / records.ROWS).exists() else []
        if rows:
            runs.append(Run(header, rows))
    return runs


def identity(run: Run) -> str:
    """The resolved configuration of ``run``: its spec without the seed, and the optimizer's defaults."""
    spec = {k: v for k, v in run.spec.items() if k != "seed"}
    return json.dumps({"spec": spec, "resolved": run.header.get("optimizer_defaults", {})}, sort_keys=True)


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(value, sort_keys=True)}


def _distinguish(groups: list[Group]) -> None:
    """Append to each shared label the fields that differ between the groups sharing it."""
    by_label: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_label.setdefault((g.workload, g.label), []).append(g)
    for same in by_label.values():
        if len(same) < 2:
            continue
        flats = [_flat(json.loads(g.identity)) for g in same]
        keys = sorted({k for f in flats for k in f})
        differ = [k for k in keys if len({f.get(k) for f in flats}) > 1]
        in_spec = [k for k in differ if k.startswith("spec.")]
        differ = in_spec or differ  # what the user set first; else the resolved defaults
        for g, f in zip(same, flats):
            parts = [f"{k.removeprefix('spec.')}={f.get(k, '—')}" for k in differ]
            g.label = f"{g.label} [{', '.join(parts)}]"


def group_runs(runs: list[Run]) -> list[Group]:
    """Groups in first-seen order, one per resolved configuration (seeds of it are its runs)."""
    groups: dict[tuple[str, str], Group] = {}
    for run in runs:
        key = (run.spec["workload"], identity(run))
        if key not in groups:
            groups[key] = Group(
                key[0],
                run.spec["label"],
                run.spec["optimizer"],
                float(run.header["target_loss"]),
                identity=key[1],
            )
        groups[key].runs.append(run)
    out = list(groups.values())
    _distinguish(out)
    return out


def baseline_step_time(groups: list[Group], workload: str, *, whole_iteration: bool = False) -> float | None:
    """The baseline's median opt.step() time (or forward + backward + step) on ``workload``."""
    times = [
        g.iter_time() if whole_iteration else g.step_time()
        for g in groups
        if g.workload == workload and g.optimizer == BASELINE
    ]
    return statistics.median(times) if times else None
