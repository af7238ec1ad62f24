"""Oracles for the Hessian-vector-product methods, written from the equations (NumPy, float64).

The objective is L2-regularized logistic regression on a batch (X, y ∈ {−1, +1}):

    f(w) = mean_i log(1 + exp(−y_i·x_iᵀw)) + (λ/2)·‖w‖²
    ∇f(w) = −mean_i y_i·σ(−y_i·x_iᵀw)·x_i + λ·w
    ∇²f(w) = mean_i σ(m_i)·(1 − σ(m_i))·x_i x_iᵀ + λ·I,   m_i = y_i·x_iᵀw

Random draws (Rademacher vectors, reset coins, segment points) are inputs: the tests draw them in
the order the optimizers document and hand them over. Nothing here imports scalopt.
"""

from __future__ import annotations

import math

import numpy as np


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


def logistic_grad(w: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    m = y * (X @ w)
    return -(X * (y * _sigmoid(-m))[:, None]).mean(axis=0) + lam * w


def logistic_hessian(w: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    s = _sigmoid(y * (X @ w))
    return (X * (s * (1 - s))[:, None]).T @ X / len(y) + lam * np.eye(len(w))


def oasis(
    w0: np.ndarray,
    batches: list[tuple[np.ndarray, np.ndarray]],
    zs: list[list[np.ndarray]],
    *,
    lam: float,
    lr: float,
    eta0: float,
    beta2: float,
    alpha: float,
) -> tuple[list[np.ndarray], list[float]]:
    """Adaptive OASIS; step k uses batch k and Rademacher vectors zs[k] (n0 of them at k = 0).

    Returns the iterates w_0..w_K and the step sizes η_0..η_{K−1}."""
    w = w0.copy()
    ws, etas = [w.copy()], []
    X, y = batches[0]
    H = logistic_hessian(w, X, y, lam)
    D = np.mean([z * (H @ z) for z in zs[0]], axis=0)
    D_hat = np.maximum(np.abs(D), alpha)
    eta, theta = eta0, math.inf
    w_prev, w = w, w - lr * eta * logistic_grad(w, X, y, lam) / D_hat
    ws.append(w.copy())
    etas.append(eta)
    for k in range(1, len(batches)):
        X, y = batches[k]
        z = zs[k][0]
        v = z * (logistic_hessian(w, X, y, lam) @ z)
        D = beta2 * D + (1 - beta2) * v
        D_hat = np.maximum(np.abs(D), alpha)
        g = logistic_grad(w, X, y, lam)
        dg = g - logistic_grad(w_prev, X, y, lam)
        dw = w - w_prev
        local = math.sqrt(np.sum(D_hat * dw * dw)) / (2 * math.sqrt(np.sum(dg * dg / D_hat)))
        growth = math.sqrt(1 + theta) * eta if math.isfinite(theta) else math.inf
        new_eta = min(growth, local)
        theta, eta = new_eta / eta, new_eta
        w_prev, w = w, w - lr * eta * g / D_hat
        ws.append(w.copy())
        etas.append(eta)
    return ws, etas


def hvp_rvr(
    x0: np.ndarray,
    steps: list[dict],
    *,
    lam: float,
    lr: float,
) -> list[np.ndarray]:
    """HVP-RVR. ``steps[t]`` is {"reset": bool, "batches": [(X, y), ...], "u": [u_1, ...]}: on a reset
    the b batches are averaged at x_t; otherwise the k-th Hessian-vector product is on batch k at
    x_{t−1} + u_k·Δ. Returns x_0..x_T."""
    x = x0.copy()
    xs = [x.copy()]
    g = np.zeros_like(x)
    x_prev = x.copy()
    for t, st in enumerate(steps):
        if t == 0 or st["reset"]:
            g = np.mean([logistic_grad(x, X, y, lam) for X, y in st["batches"]], axis=0)
        else:
            delta = x - x_prev
            g = g + np.mean(
                [
                    logistic_hessian(x_prev + u * delta, X, y, lam) @ delta
                    for u, (X, y) in zip(st["u"], st["batches"])
                ],
                axis=0,
            )
        x_prev, x = x, x - lr * g
        xs.append(x.copy())
    return xs
