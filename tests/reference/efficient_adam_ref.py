"""Efficient-Adam with identity compressors, from the equations (NumPy, float64, per tensor).

With Q_w = Q_s = identity the errors stay zero and every worker applies the same update

    δ_i = α·m̂_i/(√v̂_i + ε)   (worker i's own Adam step from its own moments m_i, v_i)
    x  ← x − (1/N)·Σ_i δ_i

(Chen, Shen, Liu, Luo, arXiv 2205.14473, Algorithm 1, with GenericAdam's form of the step: ε outside
the root, bias correction m̂ = m/(1−β1^t), v̂ = v/(1−β2^t) unless disabled). Shares no code with scalopt.
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


def scaled_sign_efficient_adam(
    x0: list[np.ndarray],
    grad: GradFn,
    *,
    workers: int,
    steps: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> list[np.ndarray]:
    """x after ``steps`` steps of Efficient-Adam with ScaledSign both ways (Chen et al., Algorithm 1).

    Sharded server as scalopt lays it out: the flat vector (tensors in order) is cut into N shards
    of ⌈D/N⌉ entries and each shard again at tensor edges; every piece gets its own scale
    mean|y| (sign(0) = +1). Per step: δ_i = α·m̂_i/(√v̂_i + ε); Δ_i = Q(δ_i + e_i),
    e_i ← δ_i + e_i − Δ_i; Δ̄ = mean_i Δ_i; Δ̃ = Q(Δ̄ + ẽ), ẽ ← Δ̄ + ẽ − Δ̃; x ← x − Δ̃.
    """
    shapes = [a.shape for a in x0]
    sizes = [a.size for a in x0]
    D = sum(sizes)
    S = -(-D // workers)
    edges = set(np.cumsum(sizes).tolist())
    pieces = []
    for j in range(workers):
        lo, hi = min(j * S, D), min((j + 1) * S, D)
        cuts = sorted({lo, hi} | {e for e in edges if lo < e < hi})
        pieces += list(zip(cuts, cuts[1:]))

    def q(y: np.ndarray) -> np.ndarray:
        out = np.empty_like(y)
        for a, b in pieces:
            if b > a:
                out[a:b] = np.abs(y[a:b]).mean() * np.where(y[a:b] >= 0, 1.0, -1.0)
        return out

    def unflat(f: np.ndarray) -> list[np.ndarray]:
        return [p.reshape(s) for p, s in zip(np.split(f, np.cumsum(sizes)[:-1]), shapes)]

    x = np.concatenate([a.astype(np.float64).reshape(-1) for a in x0])
    m = [np.zeros(D) for _ in range(workers)]
    v = [np.zeros(D) for _ in range(workers)]
    e = [np.zeros(D) for _ in range(workers)]
    e_server = np.zeros(D)
    for t in range(1, steps + 1):
        up = []
        for i in range(workers):
            g = np.concatenate([a.reshape(-1) for a in grad(i, t, unflat(x))])
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g**2
            delta = lr * (m[i] / (1 - beta1**t)) / (np.sqrt(v[i] / (1 - beta2**t)) + eps)
            y = delta + e[i]
            up.append(q(y))
            e[i] = y - up[-1]
        mean = sum(up) / workers
        y = mean + e_server
        down = q(y)
        e_server = y - down
        x = x - down
    return unflat(x)
