"""Textbook SOAP for one block, float64 NumPy, written from the equations (Vyas et al., ICLR 2025,
arXiv 2409.11321, Algorithms 3 and 4, with the authors' code's schedule and re-ordering).

For a block X of order k with gradients G_1..G_T, t the step, τ = t − 1 the Adam step:

    H_i ← β_s·H_i + (1−β_s)·G_(i) G_(i)ᵀ                  every step (after the update)
    t = 1:  X unmoved (only decoupled decay);  Q_i = eigenvectors of H_i, eigenvalues descending,
            installed at step 2
    t ≥ 2:  M ← β1·M + (1−β1)·G ;  G' = G ×_i Q_iᵀ ;  M' = M ×_i Q_iᵀ
            V ← β2·V + (1−β2)·G'²
            N = ((M'/(1−β1^τ)) / (√(V/(1−β2^τ)) + ε)) ×_i Q_i
    X ← X − lr·(N + wd·X)
    refresh when τ ≥ 1 and τ mod f = 0:  λ̃ = diag(Q_iᵀ H_i Q_i);  σ = argsort(−λ̃);
            Q_i ← QR(H_i Q_i[:, σ]).Q  and V re-ordered along dim i by σ, both at step t + delay
            (delay 1; the asynchronous variant: f); ``exact=True``: Q_i ← eigenvectors of H_i instead

``rotated=False`` (a graft-only tensor, k = 0) is Adam with τ = t from step 1. Nothing here imports scalopt.
"""

from __future__ import annotations

import numpy as np


def unfold(g: np.ndarray, i: int) -> np.ndarray:
    return np.moveaxis(g, i, 0).reshape(g.shape[i], -1)


def mode_product(x: np.ndarray, m: np.ndarray, i: int) -> np.ndarray:
    """x ×_i m: multiply dimension i of x by the matrix m."""
    return np.moveaxis(np.tensordot(m, x, axes=([1], [i])), 0, i)


def to_basis(x: np.ndarray, q: list[np.ndarray]) -> np.ndarray:
    for i, qi in enumerate(q):
        x = mode_product(x, qi.T, i)
    return x


def from_basis(x: np.ndarray, q: list[np.ndarray]) -> np.ndarray:
    for i, qi in enumerate(q):
        x = mode_product(x, qi, i)
    return x


def eigenvectors_descending(h: np.ndarray) -> np.ndarray:
    lam, q = np.linalg.eigh((h + h.T) / 2)
    return q[:, np.argsort(-lam, kind="stable")]


def power_qr(h: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One power iteration from q with the columns sorted by estimated eigenvalue, then QR."""
    est = np.einsum("ij,ik,kj->j", q, h, q)
    sigma = np.argsort(-est, kind="stable")
    return np.linalg.qr(h @ q[:, sigma])[0], sigma


def soap(
    x: np.ndarray,
    grads: list[np.ndarray],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    shampoo_beta: float,
    eps: float,
    frequency: int,
    weight_decay: float = 0.0,
    delay: int = 1,
    rotated: bool = True,
    exact: bool = False,
) -> list[np.ndarray]:
    """The trajectory X_1..X_T of one block (k = x.ndim), or of a graft-only tensor (``rotated=False``,
    k = 0: Adam)."""
    x = np.array(x, dtype=np.float64)
    k = x.ndim if rotated else 0
    h = [np.zeros((d, d)) for d in x.shape]
    q: list[np.ndarray] = [np.eye(d) for d in x.shape]
    scheduled: dict[int, tuple[list[np.ndarray], list[np.ndarray] | None]] = {}
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    out = []
    for t, g in enumerate(grads, start=1):
        g = np.array(g, dtype=np.float64)
        if t in scheduled:
            q, sigmas = scheduled.pop(t)
            if sigmas is not None:
                for i, s in enumerate(sigmas):
                    v = np.take(v, s, axis=i)
        tau = t - 1 if k else t
        n = np.zeros_like(x)
        if tau >= 1:
            m = beta1 * m + (1 - beta1) * g
            gp, mp = to_basis(g, q), to_basis(m, q)
            v = beta2 * v + (1 - beta2) * gp * gp
            n = from_basis((mp / (1 - beta1**tau)) / (np.sqrt(v / (1 - beta2**tau)) + eps), q)
        x = x - lr * (n + weight_decay * x)
        out.append(x.copy())
        if not k:
            continue
        for i in range(k):
            u = unfold(g, i)
            h[i] = shampoo_beta * h[i] + (1 - shampoo_beta) * (u @ u.T)
        if t == 1:
            scheduled[2] = ([eigenvectors_descending(hi) for hi in h], None)
        elif (t - 1) % frequency == 0 and exact:  # every refresh an exact eigh, V left as it is
            scheduled[t + delay] = ([eigenvectors_descending(hi) for hi in h], None)
        elif (t - 1) % frequency == 0:
            new = [power_qr(hi, qi) for hi, qi in zip(h, q)]
            scheduled[t + delay] = ([a for a, _ in new], [s for _, s in new])
    return out
