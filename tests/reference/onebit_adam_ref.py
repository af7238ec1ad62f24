"""1-bit Adam from the equations (NumPy, float64), Tang et al., ICML 2021, arXiv 2102.02888.

No bias correction (DeepSpeed's form), decoupled weight decay λ. With ḡ the workers' mean gradient:

    t ≤ T_w:  m ← β1·m + (1−β1)·ḡ ;  v ← β2·v + (1−β2)·ḡ² ;  x ← x − lr·(m/(√v + ε) + λ·x)
    t > T_w:  m_i = β1·m + (1−β1)·g_i ;  b_i = m_i + e_i ;  e_i ← b_i − Q(b_i)
              per chunk j of the flat vector: c_j = mean_i Q(b_i)_j + ẽ_j ;  ẽ_j ← c_j − Q(c_j)
              m = [Q(c_j)]_j · 1[v ≠ 0] ;  x ← x − lr·(m/(√v + ε) + λ·x)

With ``bias_correction`` the step uses m̂ = m/(1−β1^t) and v̂ = v/(1−β2^{min(t, T_w)}) instead of
m and v (Adam's correction; v stops changing at T_w).

Q is either the identity or the RMS-scaled sign of one chunk: Q(b) = (‖b‖₂/√d)·sign(b), sign(0) = +1.
The flat vector is all tensors concatenated, cut into N chunks of ⌈D/N⌉ entries. Shares no code
with scalopt.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

GradFn = Callable[[int, int, np.ndarray], np.ndarray]


def rms_sign(b: np.ndarray) -> np.ndarray:
    if b.size == 0:
        return b.copy()
    scale = np.sqrt(np.sum(b * b)) / np.sqrt(b.size)
    return scale * np.where(b >= 0, 1.0, -1.0)


def onebit_adam(
    x0: np.ndarray,
    grad: GradFn,
    *,
    workers: int,
    steps: int,
    freeze_step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    compress: bool = True,
    mask: bool = True,
    bias_correction: bool = False,
) -> np.ndarray:
    """x (flat) after ``steps`` steps; ``grad(i, t, x)`` is worker i's flat gradient at step t ≥ 1."""
    q = rms_sign if compress else (lambda b: b.copy())
    x = x0.astype(np.float64).copy()
    d, n = x.size, workers
    size = math.ceil(d / n)
    bounds = [(min(j * size, d), min((j + 1) * size, d)) for j in range(n)]
    m, v = np.zeros(d), np.zeros(d)
    e = [np.zeros(d) for _ in range(n)]
    e_server = np.zeros(d)  # chunk j of it belongs to server j
    for t in range(1, steps + 1):
        g = [grad(i, t, x) for i in range(n)]
        if t <= freeze_step:
            gbar = sum(g) / n
            m = beta1 * m + (1 - beta1) * gbar
            v = beta2 * v + (1 - beta2) * gbar * gbar
        else:
            sent = []
            for i in range(n):
                b = beta1 * m + (1 - beta1) * g[i] + e[i]
                qb = np.concatenate([q(b[lo:hi]) for lo, hi in bounds])
                e[i] = b - qb
                sent.append(qb)
            c = sum(sent) / n + e_server
            m = np.concatenate([q(c[lo:hi]) for lo, hi in bounds])
            e_server = c - m
            if mask:
                m = m * (v != 0)
        if bias_correction:  # Adam's m̂, v̂; v stopped changing at step T_w
            v_steps = min(t, freeze_step)
            m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**v_steps)
        else:
            m_hat, v_hat = m, v
        x = x - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * x)
    return x
