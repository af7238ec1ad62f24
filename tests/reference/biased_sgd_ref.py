"""Oracles for the biased-SGD certificate, written from the equations (float64, no scalopt code).

The LMI matrix is recovered from the scalar inequality it encodes (one coordinate per block, p = 1),
by polarisation of the quadratic form

    q(ξ, g, e) = (ξ − αg − αe)² − ρ²ξ² − λ_S(2mξ² − 2ξg) − λ_G·G(ξ, g) − ν(e² − δ²g²),
    G = g² − 2Lξg (each f_i convex, L-smooth)  or  g² − 2L²ξ² (each f_i L-smooth),

so it does not depend on how the library lays the matrix out.
"""

from __future__ import annotations

import numpy as np


def quadratic_form(m, L, alpha, delta, rho2, lam_s, lam_g, nu, smoothness):
    def q(z: np.ndarray) -> float:
        xi, g, e = z
        nxt = (xi - alpha * g - alpha * e) ** 2
        strong = 2 * m * xi * xi - 2 * xi * g
        grow = g * g - 2 * L * xi * g if smoothness == "convex-smooth" else g * g - 2 * L * L * xi * xi
        err = e * e - delta**2 * g * g
        return nxt - rho2 * xi * xi - lam_s * strong - lam_g * grow - nu * err

    return q


def lmi_matrix(m, L, alpha, delta, rho2, lam_s, lam_g, nu, smoothness) -> np.ndarray:
    """F with zᵀFz = q(z), by polarisation: F_ij = (q(e_i + e_j) − q(e_i) − q(e_j)) / 2."""
    q = quadratic_form(m, L, alpha, delta, rho2, lam_s, lam_g, nu, smoothness)
    eye = np.eye(3)
    F = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            F[i, j] = 0.5 * (q(eye[i] + eye[j]) - q(eye[i]) - q(eye[j]))
    return F


def closed_form(m, L, alpha, delta, tau, eta, smoothness):
    """(ρ², λ_S, λ_G, ν) of the Young's-inequality point with parameters τ, η > 0."""
    a = alpha
    nu = a * a * (1 + 1 / tau + 1 / eta)
    lam_g = a * a * (1 + tau) + nu * delta**2
    if smoothness == "convex-smooth":
        lam_s = a - L * lam_g
        rho2 = 1 - 2 * m * a + eta + 2 * m * L * a * a * ((1 + tau) + delta**2 * (1 + 1 / tau + 1 / eta))
    else:
        lam_s = a
        rho2 = 1 - 2 * m * a + eta + 2 * L * L * a * a * ((1 + tau) + delta**2 * (1 + 1 / tau + 1 / eta))
    return rho2, lam_s, lam_g, nu


def classic_sgd_rho2(m, L, alpha) -> float:
    """E‖x_{k+1} − x*‖² ≤ (1 − 2mα(1 − Lα))‖x_k − x*‖² + 2α²σ*² for convex L-smooth f_i, α ≤ 1/L."""
    return 1 - 2 * m * alpha * (1 - L * alpha)


def worst_step_ratio(A: np.ndarray, alpha: float, delta: float, xi: np.ndarray) -> float:
    """‖x_{k+1} − x*‖²/‖x_k − x*‖² for f = ½ξᵀAξ (one term, σ* = 0) and the worst error ‖e‖ = δ‖g‖."""
    g = A @ xi
    d = xi - alpha * g
    e = -delta * np.linalg.norm(g) * d / np.linalg.norm(d)  # pushes x_{k+1} straight away from x*
    return float(np.sum((d - alpha * e) ** 2) / np.sum(xi**2))
