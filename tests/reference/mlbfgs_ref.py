"""mL-BFGS oracle written from the equations (float64 NumPy); it shares no code with scalopt.

The inverse-Hessian approximation of each block is built as an explicit dense matrix by the BFGS
inverse update H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ from H = γ·I over the block's FIFO,
γ = sᵀy/yᵀy of the newest pair, instead of the two-loop recursion.
"""

from __future__ import annotations

import numpy as np


def dense_inverse_bfgs(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """H from pairs (s, y), oldest first, starting at γ·I (γ from the newest pair)."""
    s_new, y_new = pairs[-1]
    n = s_new.size
    h = (s_new @ y_new) / (y_new @ y_new) * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        left = np.eye(n) - rho * np.outer(s, y)
        h = left @ h @ left.T + rho * np.outer(s, s)
    return h


def damp(s: np.ndarray, y: np.ndarray, damping: float) -> np.ndarray:
    """Powell-type damping against B0 = I with τ bounds 0.01 and 1.5."""
    tau = (s @ y) / (s @ s + 1e-12)
    if tau < 0.01:
        phi = 0.99 / (1.0 - tau)
    elif tau > 1.5:
        phi = 0.5 / (tau - 1.0)
    else:
        phi = 1.0
    phi = min(phi, 1.0 - damping)
    return phi * y + (1.0 - phi) * s


def mlbfgs(
    xs: list[np.ndarray],
    grads: list[list[np.ndarray]],
    *,
    blocks: list[list[int]],
    lr: float,
    momentum: float,
    weight_decay: float,
    update_freq: int,
    history: int,
    beta_p: float,
    beta_g: float,
    beta_m: float,
    damping: float,
) -> list[np.ndarray]:
    """Parameters after len(grads) steps; ``grads[t][i]`` is parameter i's gradient at step t+1,
    ``blocks`` lists parameter indices (indices in no block take the raw gradient plus decay)."""
    xs = [x.astype(np.float64).copy() for x in xs]
    buf = [np.zeros_like(x) for x in xs]
    nb = len(blocks)
    pbar = [np.zeros(sum(xs[i].size for i in b)) for b in blocks]
    gbar = [np.zeros_like(p) for p in pbar]
    prev: list[tuple[np.ndarray, np.ndarray] | None] = [None] * nb
    last: list[tuple[np.ndarray, np.ndarray] | None] = [None] * nb
    fifo: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(nb)]
    blocked = {i for b in blocks for i in b}
    for t, gs in enumerate(grads, start=1):
        q = [np.asarray(g, np.float64) + weight_decay * x for g, x in zip(gs, xs)]
        dirs: list[np.ndarray] = []
        for k, b in enumerate(blocks):
            theta = np.concatenate([xs[i].ravel() for i in b])
            qb = np.concatenate([q[i].ravel() for i in b])
            pbar[k] = beta_p * pbar[k] + theta
            gbar[k] = beta_g * gbar[k] + qb
            if t % update_freq == 0:
                if prev[k] is not None:
                    s, y = pbar[k] - prev[k][0], gbar[k] - prev[k][1]
                    if last[k] is not None:
                        s = (1 - beta_m) * s + beta_m * last[k][0]
                        y = (1 - beta_m) * y + beta_m * last[k][1]
                    last[k] = (s, y)
                    fifo[k] = (fifo[k] + [(s, damp(s, y, damping))])[-history:]
                prev[k] = (pbar[k].copy(), gbar[k].copy())
                gbar[k] = qb.copy()
            dirs.append(dense_inverse_bfgs(fifo[k]) @ qb if fifo[k] else qb)
        d = [qi.copy() for qi in q]
        if any(fifo):
            norm = np.sqrt(
                sum(v @ v for v in dirs)
                + sum(q[i].ravel() @ q[i].ravel() for i in range(len(xs)) if i not in blocked)
            )
            dirs = [v / norm for v in dirs]
            d = [qi / norm for qi in q]
        for k, b in enumerate(blocks):
            offset = 0
            for i in b:
                d[i] = dirs[k][offset : offset + xs[i].size].reshape(xs[i].shape)
                offset += xs[i].size
        for i in range(len(xs)):
            buf[i] = momentum * buf[i] + d[i]
            xs[i] = xs[i] - lr * buf[i]
    return xs
