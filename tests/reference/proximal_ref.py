"""TRSGD / TRAdam oracle from the equations of the proximal small-batch method (float64 NumPy).

Shares no code with scalopt. ``lrs[t]`` is the (scheduled) learning rate η at step t+1.
"""

from __future__ import annotations

import numpy as np


def trsgd_or_tradam(
    xs: list[np.ndarray],
    grads: list[list[np.ndarray]],
    lrs: list[float],
    *,
    method: str,
    period: int,
    prox_weight: float,
    weight_decay: float,
    momentum: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> list[np.ndarray]:
    xs = [x.astype(np.float64).copy() for x in xs]
    anchor = [x.copy() for x in xs]
    buf = [np.zeros_like(x) for x in xs]
    m = [np.zeros_like(x) for x in xs]
    v = [np.zeros_like(x) for x in xs]
    s = 0
    for t, (gs, eta) in enumerate(zip(grads, lrs), start=1):
        if s == 0:
            anchor = [x.copy() for x in xs]
        lam = prox_weight / eta
        step = eta / (s + 1)
        for i, g in enumerate(gs):
            d = g + 2 * lam * (xs[i] - anchor[i]) + weight_decay * xs[i]
            if method == "trsgd":
                buf[i] = momentum * buf[i] + d
                xs[i] = xs[i] - step * buf[i]
            else:
                b1, b2 = betas
                m[i] = b1 * m[i] + (1 - b1) * d
                v[i] = b2 * v[i] + (1 - b2) * d * d
                mhat, vhat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
                xs[i] = xs[i] - step * mhat / (np.sqrt(vhat) + eps)
        s = (s + 1) % period
    return xs
