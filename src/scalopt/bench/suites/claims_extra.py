"""Claims 8–10 of the ``claims`` suite: Hogwild!, FedLADA and the biased-SGD certificate.

Claim 8 (Hogwild!) trains shared-memory processes, not a RunSpec: ``run_hogwild`` writes its numbers
to ``OUT/claims/hogwild.json``. Claim 10 is NumPy arithmetic on a quadratic: ``run_certificate`` writes
``OUT/claims/certificate.json``. Claim 9 runs the federated suite's FedAvg and FedLADA as RunSpecs.
Claims 9 and 10 check that their code exists (an import) and are reported ``inconclusive — not
available`` when it does not: shown, not skipped.

Claim 8 setting: ``quadratic`` with μ = 1, L = 10, gradient noise σ = 1 (dim 20), 2 processes, full
updates, SGD. Diminishing: η_t = c/(μ(t + E)) with Nguyen et al.'s SGD constants c = 2, E = 4L/μ;
constant: η = η_0 = c/(μE) = 1/(2L), the diminishing schedule's first step. Tolerance: the workload's
target gap 0.05. The gap is f(x) − f(x*) of the final shared model.

Claim 10 setting: f(x) = ½ xᵀAx, A = diag(linspace(m, L, 5)), m = 1, L = 10, one function (σ*² = 0),
no absolute error (c = 0), e_k = −δ·g_k, x_0 = (1, …, 1), float64. δ ∈ {0.05, 0.1, 0.2} (all below the
largest δ ≈ 0.2 at which a certificate exists for κ = 10); for each δ the step is half the largest
certified one, α = ½·max_step_size(m, L, δ). Measured contraction: the largest one-step ratio
‖x_{k+1}‖²/‖x_k‖² over the run; ρ² from ``biased_sgd_rate(m, L, α, δ)``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from scalopt.bench.spec import RunSpec
from scalopt.bench.suites import claims_rules as rules
from scalopt.bench.suites import claims_specs as cs
from scalopt.bench.suites.claims_measure import CLAIMS_DIR, Result, final, rows_of

NAN = math.nan
HOGWILD = "hogwild.json"
CERTIFICATE = "certificate.json"
HOGWILD_WORKLOAD = {"mu": 1.0, "L": 10.0, "noise": 1.0}
CERT_M, CERT_L, CERT_DIM = 1.0, 10.0, 5
CERT_DELTAS = (0.05, 0.1, 0.2)
FED_ALPHA = 0.1


def _save(out_dir: Path, name: str, data: dict[str, Any]) -> None:
    path = Path(out_dir) / CLAIMS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _load(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = Path(out_dir) / CLAIMS_DIR / name
    return json.loads(path.read_text()) if path.exists() else None


# -- claim 8: Hogwild! -----------------------------------------------------------------------------
def run_hogwild(out_dir: Path, size: cs.Size, resume: bool = False) -> None:
    if resume and _load(out_dir, HOGWILD) is not None:
        return
    import torch

    from scalopt import workloads
    from scalopt.distributed import hogwild
    from scalopt.distributed.hogwild import Diminishing

    wl = workloads.get("quadratic", **HOGWILD_WORKLOAD)
    c, E = 2.0, 4 * wl.L / wl.mu
    constant = c / (wl.mu * E)
    gaps = {}
    for name, lr, schedule in (
        ("diminishing", 1.0, Diminishing(c, E, mu=wl.mu)),
        ("constant", constant, None),
    ):
        result = hogwild(
            wl, functools.partial(torch.optim.SGD, lr=lr), workers=2, steps=size.hogwild_steps, lr=schedule,
            init_seed=0, data_seed=1000, threads=1,
        )  # fmt: skip
        gaps[name] = float(wl.evaluate(result.model)["loss"])
    _save(out_dir, HOGWILD, {
        "diminishing_gap": gaps["diminishing"], "constant_gap": gaps["constant"], "tolerance": wl.target_loss,
        "c": c, "E": E, "constant_lr": constant, "steps_per_worker": size.hogwild_steps,
        "load_average": os.getloadavg()[0],
    })  # fmt: skip


def measure_8(out_dir: Path, size: cs.Size) -> Result:
    d = _load(out_dir, HOGWILD) or {}
    dim, con, tol = d.get("diminishing_gap", NAN), d.get("constant_gap", NAN), d.get("tolerance", NAN)
    return Result(
        8,
        f"quadratic μ = 1, L = 10, σ = 1, 2 processes × {size.hogwild_steps} steps, SGD; "
        "η_t = 2/(μ(t + 4L/μ)) vs "
        "constant η_0 = 1/(2L); tolerance = the workload's target gap",
        f"final gap diminishing {dim:.3g} vs constant {con:.3g} (tolerance {tol:g})",
        rules.rule_hogwild(dim, con, tol),
        numbers=d,
    )


# -- claim 9: FedLADA ------------------------------------------------------------------------------
def federated_available() -> bool:
    return importlib.util.find_spec("scalopt.federated") is not None and (
        importlib.util.find_spec("scalopt.bench.suites.federated") is not None
    )


def claim9(size: cs.Size) -> dict[str, RunSpec]:
    """FedAvg and FedLADA at the federated suite's best lrs, Dirichlet α = 0.1, fewer rounds."""
    if not federated_available():
        return {}
    from scalopt.bench.suites import federated as fed

    out = {}
    for name in ("fedavg", "fedlada"):
        lr = fed.BEST[FED_ALPHA][name]
        out[name] = RunSpec(
            workload=fed.WORKLOAD,
            optimizer=name,
            label="C9 " + fed.label(name, FED_ALPHA, lr),
            hparams=fed.hparams(name, lr),
            workload_overrides=dict(fed.WORKLOAD_OVERRIDES),
            steps=size.fed_rounds,
            eval_every=1,
            federated={**fed.FEDERATED, "dirichlet": FED_ALPHA},
        )
    return out


def rounds_to(rows: list[dict[str, Any]], target: float) -> float:
    """Rounds at the first evaluation with accuracy ≥ target (nan if never)."""
    for r in rows:
        if r.get("eval_accuracy", -math.inf) >= target:
            return float(r["step"])
    return NAN


def measure_9(out_dir: Path, size: cs.Size) -> Result:
    specs = claim9(size)
    if not specs:
        return Result(9, "digits, Dirichlet α = 0.1 (the federated suite)", "—",
                      rules.not_available("scalopt.federated"))  # fmt: skip
    from scalopt.bench.suites import federated as fed

    avg, lada = rows_of(out_dir, specs["fedavg"]), rows_of(out_dir, specs["fedlada"])
    target = fed.TARGET_FRACTION * final(avg, "eval_accuracy") if avg else NAN
    n = {
        "target_accuracy": target,
        "fedavg_rounds": rounds_to(avg, target),
        "fedlada_rounds": rounds_to(lada, target),
        "fedavg_final": final(avg, "eval_accuracy"),
        "fedlada_final": final(lada, "eval_accuracy"),
    }
    cfg = fed.FEDERATED
    return Result(
        9,
        f"digits, {cfg['clients']} clients (Dirichlet α = {FED_ALPHA:g}), "
        f"{cfg['clients_per_round']} per round, "
        f"K = {cfg['local_steps']}, {size.fed_rounds} rounds, the federated suite's best lrs; target = "
        f"{fed.TARGET_FRACTION:g} × FedAvg's final accuracy ({target:.3f})",
        f"rounds to target FedLADA {n['fedlada_rounds']:g} vs FedAvg {n['fedavg_rounds']:g}; final accuracy "
        f"{n['fedlada_final']:.3f} vs {n['fedavg_final']:.3f}",
        rules.rule_fedlada(n["fedlada_rounds"], n["fedavg_rounds"]),
        numbers=n,
    )


# -- claim 10: the biased-SGD certificate -------------------------------------------------------------
def certificate_available() -> bool:
    try:
        from scalopt.theory import biased_sgd_rate, max_step_size  # noqa: F401
    except ImportError:
        return False
    return True


def measured_contraction(m: float, L: float, dim: int, alpha: float, delta: float, steps: int) -> float:
    """The largest ‖x_{k+1}‖²/‖x_k‖² of x_{k+1} = x_k − α(g_k + e_k), g_k = A x_k, e_k = −δ g_k."""
    a = np.linspace(m, L, dim)
    x = np.ones(dim)
    worst = 0.0
    for _ in range(steps):
        g = a * x
        x_next = x - alpha * (g - delta * g)
        worst = max(worst, float(x_next @ x_next) / float(x @ x))
        x = x_next
    return worst


def run_certificate(out_dir: Path, size: cs.Size, resume: bool = False) -> None:
    if resume and _load(out_dir, CERTIFICATE) is not None:
        return
    if not certificate_available():
        _save(out_dir, CERTIFICATE, {"available": False})
        return
    from scalopt.theory import biased_sgd_rate, max_step_size

    points = []
    for delta in CERT_DELTAS:
        alpha = 0.5 * max_step_size(CERT_M, CERT_L, delta)
        rate = biased_sgd_rate(CERT_M, CERT_L, alpha, delta)
        measured = measured_contraction(CERT_M, CERT_L, CERT_DIM, alpha, delta, size.cert_steps)
        points.append({"delta": delta, "alpha": alpha, "measured": measured, "rho2": float(rate.rho2)})
    _save(out_dir, CERTIFICATE, {"available": True, "points": points})


def measure_10(out_dir: Path, size: cs.Size) -> Result:
    d = _load(out_dir, CERTIFICATE) or {"available": certificate_available()}
    setting = (
        f"f = ½ xᵀAx, spectrum linspace({CERT_M:g}, {CERT_L:g}, {CERT_DIM}), σ*² = c = 0, e_k = −δ·g_k, "
        f"δ ∈ {{{', '.join(f'{x:g}' for x in CERT_DELTAS)}}}, α = ½·max_step_size(δ), {size.cert_steps} steps"
    )
    if not d.get("available"):
        return Result(10, setting, "—", rules.not_available("scalopt.theory.biased_sgd_rate"))
    pts = d.get("points", [])
    figure = "; ".join(f"δ = {p['delta']:g}: measured {p['measured']:.4f}, ρ² {p['rho2']:.4f}" for p in pts)
    verdict = rules.rule_certificate([(p["delta"], p["measured"], p["rho2"]) for p in pts])
    return Result(10, setting, figure or "—", verdict, numbers=d)
