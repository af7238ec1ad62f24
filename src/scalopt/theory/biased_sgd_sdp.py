"""The biased-SGD certificate as semidefinite programs (CVXPY), and the sequential-SDP step sizes.

Same LMI as :mod:`scalopt.theory.biased_sgd` (F = v vᵀ − ρ²R − λ_S S − λ_G G − ν E ≼ 0, v = (1, −α, −α)).

- :func:`sdp_point`: for a fixed α, F is affine in (ρ², λ_S, λ_G, ν), so "minimise ρ² subject to F ≼ 0,
  multipliers ≥ 0" is an SDP; a second SDP minimises H = 2λ_Gσ*² + νc² with ρ² held at the optimum
  plus a relative 1e-7 (the set at the exact optimum can be a single point).
- :func:`sequential_sdp_schedule`: with α a variable too, F ≼ 0 is equivalent (Schur complement on the
  −1 entry) to the 4×4 LMI [[−N, v], [vᵀ, −1]] ≼ 0, N = ρ²R + λ_S S + λ_G G + νE, jointly linear in
  (α, ρ², λ_S, λ_G, ν). Step k solves U_{k+1} = min ρ²U_k + H over those unknowns, starting from
  U_0 = ‖x_0 − x*‖² (``u0``); the minimisers α_k are the step sizes and U_k bounds E‖x_k − x*‖². This
  is the paper's sequential minimisation that trades step size against rate and accuracy.

Both work in the congruent scaling D F D (D = diag(1, 1/α, 1/α) with α fixed; for the schedule,
D = diag(1, 1/α_ref, 1/α_ref) with α_ref = 1/L) so the solver sees O(1) entries. Every point returned is
re-checked with the float64 eigenvalue test of :func:`scalopt.theory.biased_sgd.is_certificate`; when a
solver's point misses it by rounding, λ_G and ν are raised by a relative ε ≤ 1e-4 and ρ² by a slack
≤ 1e-5, the smallest that pass.

Requires CVXPY (``pip install scalopt[sdp]``); any installed SDP-capable solver (Clarabel, SCS) works.

Reference: B. Hu, P. Seiler, L. Lessard, "Analysis of biased stochastic gradient descent using
sequential semidefinite programs", Mathematical Programming 188:383–408, 2021, arXiv 1711.00987.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scalopt.core.validate import check_choice, check_int, check_nonnegative, check_positive
from scalopt.theory.biased_sgd import SMOOTHNESS, Certificate, Problem, is_certificate, lmi_terms, problem


def _cvxpy() -> Any:
    try:
        import cvxpy
    except ImportError as exc:
        raise ImportError(
            "the SDP certificate and the sequential-SDP schedule need CVXPY: pip install 'scalopt[sdp]'"
            " (or pip install cvxpy); method='bisection' needs only NumPy/SciPy"
        ) from exc
    return cvxpy


def _solve(prob: Any) -> None:
    import cvxpy

    # Clarabel (an interior-point solver, CVXPY's default for SDPs when installed) is accurate to ~1e-9;
    # SCS, the fallback, to ~1e-6, which the repair in _certify absorbs.
    prob.solve(solver="CLARABEL" if "CLARABEL" in cvxpy.installed_solvers() else None)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise ArithmeticError(f"the SDP solver returned status {prob.status!r}")


def _certify(p: Problem, rho2: float, cert: Certificate) -> tuple[float, Certificate]:
    """The solver's point, repaired for rounding: λ_G, ν raised by a relative ε, then ρ² by a slack."""
    for eps in (0.0, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4):
        trial = Certificate(
            max(cert.lambda_s, 0.0), max(cert.lambda_g, 0.0) * (1 + eps), max(cert.nu, 0.0) * (1 + eps)
        )
        slack = 0.0
        while slack <= 1e-5:
            if is_certificate(p, rho2 + slack, trial):
                return rho2 + slack, trial
            slack = max(2 * slack, 1e-13)
    raise ArithmeticError(f"the SDP solution (rho2={rho2!r}) does not pass the eigenvalue check")


def sdp_point(p: Problem) -> tuple[float, Certificate]:
    """Minimise ρ² subject to the LMI, then H at that ρ²; returns the checked (ρ², multipliers)."""
    cp = _cvxpy()
    V, R, S, G, E = lmi_terms(p)
    k = V.shape[0]
    x = cp.Variable(3, nonneg=True)  # scaled λ_S = α s, λ_G = α² g, ν = α² n
    rho2 = cp.Variable(nonneg=True)

    def lmi(r2: Any) -> Any:
        M = V - r2 * R - x[0] * S - x[1] * G - x[2] * E
        return [0.5 * (M + M.T) << np.zeros((k, k))]

    _solve(cp.Problem(cp.Minimize(rho2), lmi(rho2)))
    best = float(rho2.value)
    weights = np.array([0.0, 2 * p.sigma2 * p.alpha**2, p.c**2 * p.alpha**2])
    if weights.any():
        _solve(cp.Problem(cp.Minimize(weights @ x), lmi(best * (1 + 1e-7) + 1e-12)))
        best = best * (1 + 1e-7) + 1e-12
    s, g, n = np.asarray(x.value, dtype=float) * np.array([p.alpha, p.alpha**2, p.alpha**2])
    return _certify(p, best, Certificate(float(s), float(g), float(n) if p.has_error else 0.0))


@dataclass(frozen=True)
class SequentialSchedule:
    """Step sizes α_k (k = 0..steps−1) and bounds U_k ≥ E‖x_k − x*‖² (k = 0..steps)."""

    alphas: np.ndarray
    bounds: np.ndarray
    rho2: np.ndarray
    certificates: tuple[Certificate, ...]


def sequential_sdp_schedule(
    m: float, L: float, delta: float, steps: int, u0: float, c: float = 0.0, sigma2: float = 0.0,
    smoothness: str = "convex-smooth",
) -> SequentialSchedule:  # fmt: skip
    """The paper's sequential SDP: α_k minimising the next bound U_{k+1} = ρ_k²U_k + H_k, one SDP a step."""
    cp = _cvxpy()
    check_choice("smoothness", smoothness, SMOOTHNESS)
    check_int("steps", steps, minimum=1)
    check_positive("u0", u0)
    check_nonnegative("c", c)
    check_nonnegative("sigma2", sigma2)
    ref = problem(m, L, 1.0 / L, delta, c, sigma2, smoothness)  # validates m, L, delta
    a_ref = 1.0 / ref.L
    _, R, S, G, E = lmi_terms(ref)
    k = R.shape[0]
    a = cp.Variable(nonneg=True)  # α / α_ref
    x = cp.Variable(3, nonneg=True)  # multipliers scaled by α_ref, α_ref², α_ref²
    rho2 = cp.Variable(nonneg=True)
    u = cp.Parameter(nonneg=True)
    # v = D(1, −α, −α) = (1, −a, −a) in the scaled coordinates
    v = cp.hstack([cp.Constant(1.0), -a, -a][:k])
    N = rho2 * R + x[0] * S + x[1] * G + x[2] * E
    block = cp.bmat(
        [
            [-N, cp.reshape(v, (k, 1), order="F")],
            [cp.reshape(v, (1, k), order="F"), cp.Constant(-np.ones((1, 1)))],
        ]
    )
    h = 2 * sigma2 * a_ref**2 * x[1] + c**2 * a_ref**2 * x[2]
    prob = cp.Problem(cp.Minimize(rho2 * u + h), [0.5 * (block + block.T) << np.zeros((k + 1, k + 1))])
    bounds, alphas, rates, certs = [float(u0)], [], [], []
    for _ in range(steps):
        u.value = bounds[-1]
        _solve(prob)
        alpha = float(a.value) * a_ref
        s, g, n = np.asarray(x.value, dtype=float) * np.array([a_ref, a_ref**2, a_ref**2])
        p = problem(ref.m, ref.L, alpha, ref.delta, ref.c, ref.sigma2, ref.smoothness)
        raw = Certificate(float(s), float(g), float(n) if k == 3 else 0.0)
        r2, cert = _certify(p, float(rho2.value), raw)
        alphas.append(alpha)
        rates.append(r2)
        certs.append(cert)
        bounds.append(r2 * bounds[-1] + 2 * cert.lambda_g * sigma2 + cert.nu * c**2)
    return SequentialSchedule(np.array(alphas), np.array(bounds), np.array(rates), tuple(certs))
