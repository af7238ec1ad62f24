"""Measured figures of claims 1–7 from the run records, and their verdicts. Never trains.

Each ``measure_N(out_dir, size)`` reads the records of claim N's runs (found by run id, so a report
re-rendered later reads exactly the runs of the suite), computes the numbers its rule takes and
returns a :class:`Result`. A missing record gives ``nan`` numbers, which the rules turn into
``inconclusive`` (or ``does not hold`` for the method under test), never into an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalopt.bench import records
from scalopt.bench.spec import RunSpec
from scalopt.bench.suites import claims_rules as rules
from scalopt.bench.suites import claims_specs as cs

NAN = math.nan
#: where the suite keeps what is not a run record (calibration, Hogwild!, certificate, the verdicts)
CLAIMS_DIR = "claims"
OVERLAP_NETWORK = "overlap_network.json"


@dataclass
class Result:
    number: int
    setting: str
    figure: str
    verdict: rules.Verdict
    wall_clock: bool = False  # the figure is a wall-clock time (noisy on a loaded machine)
    numbers: dict[str, Any] = field(default_factory=dict)


# -- reading records ---------------------------------------------------------------------------------
def rows_of(out_dir: Path, spec: RunSpec) -> list[dict[str, Any]]:
    """Rank 0's rows of ``spec`` (empty when it has not run)."""
    run_dir = Path(out_dir) / "runs" / spec.run_id
    return records.read_rows(run_dir) if (run_dir / records.ROWS).exists() else []


def diverged(out_dir: Path, spec: RunSpec) -> bool:
    run_dir = Path(out_dir) / "runs" / spec.run_id
    return (run_dir / records.HEADER).exists() and bool(records.read_header(run_dir).get("diverged"))


def evals(rows: list[dict[str, Any]], key: str = "eval_loss") -> list[dict[str, Any]]:
    return [r for r in rows if key in r]


def final(rows: list[dict[str, Any]], key: str = "eval_loss") -> float:
    ev = evals(rows, key)
    return float(ev[-1][key]) if ev else NAN


def at_step(rows: list[dict[str, Any]], step: float, key: str = "eval_loss") -> float:
    """The evaluation at the last eval step ≤ ``step``."""
    ev = [r for r in evals(rows, key) if r["step"] <= step]
    return float(ev[-1][key]) if ev else NAN


def first(rows: list[dict[str, Any]], target: float, field_: str, key: str = "eval_loss") -> float:
    """``field_`` (step, wall, rounds, bytes_sent) at the first evaluation with ``key`` ≤ target."""
    if not math.isfinite(target):
        return NAN
    for r in evals(rows, key):
        if r[key] <= target:
            return float(r[field_])
    return NAN


def per_step(rows: list[dict[str, Any]], key: str) -> float:
    have = [r for r in rows if key in r]
    return float(have[-1][key]) / max(have[-1]["step"], 1) if have else NAN


def _set(values: tuple[float, ...]) -> str:
    return "{" + ", ".join(f"{x:g}" for x in values) + "}"


def _f(x: float, digits: int = 3) -> str:
    return "—" if not math.isfinite(x) else f"{x:.{digits}g}"


# -- claims 1–7 --------------------------------------------------------------------------------------
def measure_1(out_dir: Path, size: cs.Size) -> Result:
    specs = cs.claim1(size)
    adamw = {k: rows_of(out_dir, s) for k, s in specs.items() if k.startswith("torch-adamw")}
    finals = {k: final(r) for k, r in adamw.items() if r}
    best = min(finals, key=lambda k: finals[k]) if finals else None  # "torch-adamw lr=<best lr>"
    target = finals[best] if best else NAN
    sham = rows_of(out_dir, next(s for k, s in specs.items() if k.startswith("shampoo")))
    best_rows = adamw[best] if best else []
    n = {
        "target": target,
        "adamw_best": best,
        "adamw_steps": first(best_rows, target, "step"),
        "adamw_wall": first(best_rows, target, "wall"),
        "shampoo_steps": first(sham, target, "step"),
        "shampoo_wall": first(sham, target, "wall"),
    }
    verdict = rules.rule_shampoo(n["shampoo_steps"], n["adamw_steps"], n["shampoo_wall"], n["adamw_wall"])
    lrs = ", ".join(f"{lr:g}" for lr in cs.shampoo.SWEEPS["stdlib-lm"])
    return Result(
        1,
        f"stdlib-lm, {size.shampoo_steps} steps; torch AdamW lr ∈ {{{lrs}}} (best "
        f"{best.split('=')[1] if best else '—'}), Shampoo lr "
        f"{cs.shampoo.BEST['stdlib-lm']['shampoo']:g}; target = best AdamW's final eval loss {_f(target, 4)}",
        f"steps {_f(n['shampoo_steps'])} vs {_f(n['adamw_steps'])}; wall {_f(n['shampoo_wall'])} s vs "
        f"{_f(n['adamw_wall'])} s",
        verdict,
        wall_clock=True,
        numbers=n,
    )


def measure_2(out_dir: Path, size: cs.Size) -> Result:
    specs = cs.claim2(size)
    parts, figures, n = [], [], {}
    for workload in ("stdlib-lm", "l0l1"):
        sync = rows_of(out_dir, specs[f"{workload} sync"])
        target = at_step(sync, specs[f"{workload} sync"].steps / 2)
        c2 = rows_of(out_dir, specs[f"{workload} celgc 2"])
        c4 = rows_of(out_dir, specs[f"{workload} celgc 4"])
        w = {
            "target": target,
            "sync_rounds": first(sync, target, "rounds"),
            "celgc_rounds": first(c2, target, "rounds"),
            "celgc2_steps": first(c2, target, "step"),
            "celgc4_steps": first(c4, target, "step"),
        }
        n[workload] = w
        parts.append((workload, w["sync_rounds"], w["celgc_rounds"], w["celgc2_steps"], w["celgc4_steps"]))
        figures.append(
            f"{workload}: rounds {_f(w['celgc_rounds'])} vs {_f(w['sync_rounds'])}, steps 4 vs 2 workers "
            f"{_f(w['celgc4_steps'])} vs {_f(w['celgc2_steps'])}"
        )
    return Result(
        2,
        f"SimComm; stdlib-lm ({size.celgc_lm_steps} steps, batch {size.celgc_lm_batch} per worker) and l0l1 "
        f"({size.celgc_l0l1_steps} steps); CELGC I={size.celgc_period}; "
        "target = sync clipped SGD's eval loss "
        "at half its steps (2 workers)",
        "; ".join(figures),
        rules.rule_celgc(size.celgc_period, parts),
        numbers=n,
    )


def measure_3(out_dir: Path, size: cs.Size) -> Result:
    specs = cs.claim3(size)
    best: dict[str, list[float]] = {"sgd": [], "sign": []}
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for l1 in size.l1_values:
        for name in best:
            gaps = []
            for key, spec in specs.items():
                if key.startswith(f"{name} L1={l1:g} "):
                    rows = rows_of(out_dir, spec)
                    curves.setdefault(f"{l1:g}", []).append(rows)
                    gaps.append(math.inf if diverged(out_dir, spec) or not rows else final(rows, "eval_gap"))
            finite = [g for g in gaps if not math.isnan(g)]
            best[name].append(min(finite) if finite else NAN)
    n: dict[str, Any] = {
        "L1": list(size.l1_values),
        "sgd_best_gap": best["sgd"],
        "sign_best_gap": best["sign"],
    }
    fits = fit_l0l1(curves)
    if fits is not None:
        n["fitted_L0_L1"] = fits
    pairs = ", ".join(
        f"L1={l1:g}: {_f(g1)} vs {_f(g2)}"
        for l1, g1, g2 in zip(size.l1_values, best["sgd"], best["sign"], strict=True)
    )
    fitted = (
        "; (L0, L1) fitted along the runs: "
        + ", ".join(f"L1={k}: ({v[0]:.3g}, {v[1]:.3g})" for k, v in fits.items())
        if fits
        else "; (L0, L1) along the runs: not available (no estimator in this version)"
    )
    return Result(
        3,
        f"l0l1, L1 = beta_max ∈ {_set(size.l1_values)}, start u = {cs.INIT_PER_L1:g}·L1; {size.l0l1_steps} "
        f"steps; SGD (momentum {cs.SGD_MOMENTUM:g}) lr ∈ {_set(size.sgd_lrs)}, generalized SignSGD lr ∈ "
        f"{_set(size.sign_lrs)}",
        f"best final gap SGD vs generalized SignSGD: {pairs}{fitted}",
        rules.rule_signsgd(list(size.l1_values), best["sgd"], best["sign"]),
        numbers=n,
    )


def fit_l0l1(curves: dict[str, list[list[dict[str, Any]]]]) -> dict[str, tuple[float, float]] | None:
    """(L0, L1) fitted to the (‖∇f‖, ‖∇²f‖) evaluations of each L1's runs, if the estimator exists.

    Only runs that descended count (finite throughout, last eval loss < first): the path from x0
    toward x* is what the claim is about, not a run's excursion on its way to overflow (values up to
    1e35, which the linear program cannot take). An L1 whose fit fails is left out."""
    try:
        from scalopt.theory import estimate_l0l1
    except ImportError:
        return None
    out = {}
    for l1, runs in curves.items():
        keep = []
        for rows in runs:
            ev = evals(rows, "eval_smoothness")
            values = [(r["eval_grad_norm"], r["eval_smoothness"], r["eval_loss"]) for r in ev]
            if (
                values
                and all(map(math.isfinite, (v for t in values for v in t)))
                and ev[-1]["eval_loss"] < ev[0]["eval_loss"]
            ):
                keep += [(g, h) for g, h, _ in values]
        try:
            fit = estimate_l0l1([g for g, _ in keep], [h for _, h in keep])
        except (ValueError, ArithmeticError):  # too few distinct points, or the LP failed
            continue
        out[l1] = (float(fit.L0), float(fit.L1))
    return out or None


def measure_4(out_dir: Path, size: cs.Size) -> Result:
    from scalopt import workloads

    specs = cs.claim4(size)
    wl = workloads.get("reddi")
    worst = 2 * (wl.C - 2) / 3
    n = {
        "schedule_gap": final(rows_of(out_dir, specs["schedule"])),
        "constant_gap": final(rows_of(out_dir, specs["constant 0.1"])),
        "beta2_0.99_gap": final(rows_of(out_dir, specs["constant 0.99"])),
        "target": wl.target_loss,
        "worst_gap": worst,
    }
    return Result(
        4,
        f"reddi (C = {wl.C:g}), Generic Adam β1 = 0, α_t = {cs.adam_condition.LR:g}/√t, "
        f"{size.reddi_steps} steps "
        "(the adam-condition suite's runs)",
        f"final gap θ_t = 1 − 0.1/t {_f(n['schedule_gap'])}, β2 = 0.1 {_f(n['constant_gap'])} (worst "
        f"{worst:.3g}), β2 = 0.99 {_f(n['beta2_0.99_gap'])}",
        rules.rule_adam_condition(n["schedule_gap"], n["target"], n["constant_gap"], worst),
        numbers=n,
    )


def measure_5(out_dir: Path, size: cs.Size) -> Result:
    from scalopt import workloads

    specs = cs.claim5(size)
    target = workloads.get("digits").target_loss
    steps, lrs = {}, {}
    for workers in (1, 2, 4):
        # the lr is tuned per worker count: fewest steps to target, then the lowest final loss
        cands = []
        for lr in size.dp_lrs:
            rows = rows_of(out_dir, specs[f"{workers} lr={lr:g}"])
            s = first(rows, target, "step")
            cands.append((s if math.isfinite(s) else math.inf, final(rows) if rows else math.inf, lr))
        s, _, lr = min(cands)
        steps[workers], lrs[workers] = (s if math.isfinite(s) else NAN), lr
    n = {"target": target, "steps": steps, "best_lr": lrs}
    return Result(
        5,
        f"digits, SimComm, batch 64 per worker, {size.dp_steps} steps, lr ∈ {_set(size.dp_lrs)} "
        f"tuned per worker count (seed 0); target eval loss {target:g}",
        "steps to target 1 / 2 / 4 workers: "
        + " / ".join(_f(steps[w]) for w in (1, 2, 4))
        + " (lr "
        + " / ".join(f"{lrs[w]:g}" for w in (1, 2, 4))
        + ")",
        rules.rule_dp_adam(steps[1], steps[2], steps[4]),
        numbers=n,
    )


def measure_6(out_dir: Path, size: cs.Size) -> Result:
    specs = cs.claim6(size)
    dp, ea = rows_of(out_dir, specs["dp"]), rows_of(out_dir, specs["ea"])
    target = at_step(dp, specs["dp"].steps / 2)
    n = {
        "target": target,
        "dp_bytes": first(dp, target, "bytes_sent"),
        "ea_bytes": first(ea, target, "bytes_sent"),
        "dp_final": final(dp),
        "ea_final": final(ea),
    }
    gap = (n["ea_final"] - n["dp_final"]) / n["dp_final"] if dp and ea else NAN
    n["final_gap"] = gap
    ratio = n["ea_bytes"] / n["dp_bytes"] if n["dp_bytes"] else NAN
    return Result(
        6,
        f"stdlib-lm, 2 workers, SimComm, {size.ea_steps} steps; DP Adam lr {cs.compression.LR:g}, "
        "Efficient-Adam "
        f"ScaledSign both ways lr {cs.compression.SIGN_LR:g}; target = DP Adam's eval loss at step "
        f"{specs['dp'].steps // 2} ({_f(target, 4)})",
        f"bytes to target {_f(ratio)}× DP Adam's; final loss {_f(n['ea_final'], 4)} vs "
        f"{_f(n['dp_final'], 4)} " + (f"({gap:+.1%})" if math.isfinite(gap) else ""),
        rules.rule_efficient_adam(n["ea_bytes"], n["dp_bytes"]),
        numbers=n,
    )


def overlap_network(out_dir: Path) -> tuple[float, float] | None:
    path = Path(out_dir) / CLAIMS_DIR / OVERLAP_NETWORK
    return tuple(json.loads(path.read_text())["network"]) if path.exists() else None


def calibrate_overlap(out_dir: Path, size: cs.Size) -> tuple[float, float] | None:
    """The network of claim 7: 0.1 ms latency and the bandwidth at which synchronous SGD's all-reduce
    costs as long as its whole measured step without a network (so communication would double it).

    Fixed by this rule before any run with the network; saved so a re-rendered report reads it."""
    rows = rows_of(out_dir, cs.claim7(size, None)["sync no network"])
    wall, nbytes = per_step(rows, "wall"), per_step(rows, "bytes_sent")
    if not (math.isfinite(wall) and math.isfinite(nbytes)) or wall <= 0 or nbytes <= 0:
        return None
    network = (1e-4, nbytes / wall)
    path = Path(out_dir) / CLAIMS_DIR / OVERLAP_NETWORK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"network": network, "sync_wall_per_step": wall, "bytes_per_step": nbytes}))
    return network


def measure_7(out_dir: Path, size: cs.Size) -> Result:
    network = overlap_network(out_dir)
    base = cs.claim7(size, None)
    slow = cs.claim7(size, network) if network is not None else {}
    wall = {k: per_step(rows_of(out_dir, s), "wall") for k, s in {**base, **slow}.items()}
    n = {
        "network": network,
        "overlap_ratio": wall.get("overlap network", NAN) / wall["overlap no network"],
        "sync_ratio": wall.get("sync network", NAN) / wall["sync no network"],
        "wall_per_step": wall,
    }
    net = "not calibrated" if network is None else f"{network[0] * 1e3:g} ms, {network[1] / 1e6:.3g} MB/s"
    return Result(
        7,
        f"stdlib-lm batch {size.overlap_lm['batch_size']}×{size.overlap_lm['seq_len']}, 2 gloo processes, "
        f"{size.overlap_steps} steps, clipped SGD; network {net} (one all-reduce costs one measured "
        "synchronous step)",
        f"wall per step with / without the network: Overlap {_f(n['overlap_ratio'])}×, synchronous "
        f"{_f(n['sync_ratio'])}×",
        rules.rule_overlap(n["overlap_ratio"], n["sync_ratio"]),
        wall_clock=True,
        numbers=n,
    )
