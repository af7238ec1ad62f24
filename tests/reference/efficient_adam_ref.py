"""Efficient-Adam with identity compressors, from the equations (NumPy, float64, per tensor).

With Q_w = Q_s = identity the errors stay zero and every worker applies the same update

    δ_i = α·m̂_i/(√v̂_i + ε)   (worker i's own Adam step from its own moments m_i, v_i)
    x  ← x − (1/N)·Σ_i δ_i

(ALGORITHMS.md §8, with GenericAdam's form of the step: ε outside the root, bias correction
m̂ = m/(1−β1^t), v̂ = v/(1−β2^t) unless disabled). Shares no code with scalopt.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

GradFn = Callable[[int, int, list[np.ndarray]], list[np.ndarray]]


def averaged_adam_steps(
    x0: list[np.ndarray],
    grad: GradFn,
    *,
    workers: int,
    steps: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    bias_correction: bool = True,
) -> list[np.ndarray]:
    """x after ``steps`` steps; ``grad(i, t, x)`` is worker i's gradient (per tensor) at step t ≥ 1."""
    x = [a.astype(np.float64).copy() for a in x0]
    m = [[np.zeros_like(a) for a in x] for _ in range(workers)]
    v = [[np.zeros_like(a) for a in x] for _ in range(workers)]
    for t in range(1, steps + 1):
        total = [np.zeros_like(a) for a in x]
        for i in range(workers):
            g = grad(i, t, x)
            for k in range(len(x)):
                m[i][k] = beta1 * m[i][k] + (1 - beta1) * g[k]
                v[i][k] = beta2 * v[i][k] + (1 - beta2) * g[k] ** 2
                m_hat, v_hat = m[i][k], v[i][k]
                if bias_correction:
                    m_hat = m_hat / (1 - beta1**t)
                    v_hat = v_hat / (1 - beta2**t)
                total[k] = total[k] + lr * m_hat / (np.sqrt(v_hat) + eps)
        x = [a - s / workers for a, s in zip(x, total)]
    return x
