"""Oracles for the federated algorithms, written from the equations (one flat float64 vector).

Clients minimise least squares f_i(x) = ½‖A_i x − b_i‖² / rows (full-batch gradients, so no
randomness). They share no code with scalopt.
"""

from __future__ import annotations

import numpy as np


def grad(A: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    return A.T @ (A @ x - b) / A.shape[0]


def fedadam_server(
    x: np.ndarray, deltas: list[list[np.ndarray]], weights: list[list[float]], *, lr, beta1, beta2, tau
) -> np.ndarray:
    """Reddi et al. Algorithm 2, Adam form: m_{-1} = 0, v_{-1} = τ², x += η m / (√v + τ)."""
    m = np.zeros_like(x)
    v = np.full_like(x, tau**2)
    for round_deltas, round_weights in zip(deltas, weights):
        w = np.asarray(round_weights, dtype=float) / np.sum(round_weights)
        delta = sum(wi * d for wi, d in zip(w, round_deltas))
        m = beta1 * m + (1 - beta1) * delta
        v = beta2 * v + (1 - beta2) * delta**2
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


def fedlada_client(x, v_bar, g_a, A, b, *, K, lr, beta1, beta2, alpha):
    """K amended AMSGrad steps from the broadcast (x, v̄, g_a); returns (x_i, v̂_i)."""
    x = x.copy()
    m = np.zeros_like(x)
    v = v_bar.copy()
    v_hat = v_bar.copy()
    for _ in range(K):
        g = grad(A, b, x)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_hat = np.maximum(v_hat, v)
        x = x - lr * (alpha * m / np.sqrt(v_hat) + (1 - alpha) * g_a)
    return x, v_hat


def fedlada(x, clients, rounds, *, K, lr, beta1, beta2, eps, alpha, server_lr):
    """Full participation: every round all clients run, the server averages uniformly."""
    v_bar = np.full_like(x, eps**2)
    g_a = np.zeros_like(x)
    for _ in range(rounds):
        outs = [
            fedlada_client(x, v_bar, g_a, A, b, K=K, lr=lr, beta1=beta1, beta2=beta2, alpha=alpha)
            for A, b in clients
        ]
        x_bar = np.mean([o[0] for o in outs], axis=0)
        v_bar = np.mean([o[1] for o in outs], axis=0)
        g_a = (x - x_bar) / (lr * K)
        x = x + server_lr * (x_bar - x)
    return x
