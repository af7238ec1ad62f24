"""Textbook Shampoo for one tensor (one block), float64 NumPy, written from the equations.

For a block X of order k with gradients G_1..G_T (Gupta, Koren, Singer, ICML 2018, arXiv 1802.09568;
grafting and the delayed roots as Anil et al., arXiv 2002.09018):

    G   ← G + wd·X                                  (L2, when not decoupled)
    H_i ← β2·H_i + w·G_(i) G_(i)ᵀ,  w = 1−β2 (β2 < 1) or 1, H_i(0) = 0, G_(i) the mode-i unfolding
    root step t (t = start, or t > start and t mod f = 0):
        Ĥ_i = H_i/(1−β2^t) (β2 < 1, else H_i);  R_i = (Ĥ_i + ε·I)^(−1/(2k)), installed at t + delay
    M   ← β1·M + (1−β1)·G;  Ĝ = M/(1−β1^t)
    P_sh = Ĝ ×_1 R_1 … ×_k R_k
    P_gr = the graft direction (sgd: Ĝ; adagrad/rmsprop: Ĝ/(√V + ε_g); adam: Ĝ/(√(V/(1−β_g^t)) + ε_g))
    P    = P_gr before any root is installed; afterwards ‖P_gr‖/(‖P_sh‖ + 1e-16)·P_sh (P_sh if no graft)
    P   ← P + wd·X (decoupled);  B ← μ·B + P;  P ← P + μ·B (nesterov) or B;  X ← X − lr·P

Nothing here imports scalopt. The matrix power has its own eigendecomposition helper.
"""

from __future__ import annotations

import numpy as np


def sym_power(a: np.ndarray, exponent: float) -> np.ndarray:
    """a^exponent for a symmetric positive definite matrix, by eigendecomposition."""
    lam, q = np.linalg.eigh((a + a.T) / 2)
    return (q * lam**exponent) @ q.T


def unfold(g: np.ndarray, i: int) -> np.ndarray:
    return np.moveaxis(g, i, 0).reshape(g.shape[i], -1)


def mode_product(x: np.ndarray, m: np.ndarray, i: int) -> np.ndarray:
    """x ×_i m: multiply dimension i of x by the matrix m."""
    return np.moveaxis(np.tensordot(m, x, axes=([1], [i])), 0, i)


def shampoo(
    x: np.ndarray,
    grads: list[np.ndarray],
    *,
    lr: float,
    beta1: float = 0.0,
    beta2: float = 1.0,
    eps: float = 0.0,
    frequency: int = 1,
    start: float = 1,
    delay: int = 0,
    grafting: str | None = None,
    grafting_beta2: float = 0.999,
    grafting_eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = True,
    momentum: float = 0.0,
    nesterov: bool = False,
    statistics_every: int = 1,
) -> list[np.ndarray]:
    """The trajectory X_1..X_T of one block (order k = x.ndim; k = 0 means the graft alone)."""
    x = np.array(x, dtype=np.float64)
    k = x.ndim
    h = [np.zeros((d, d)) for d in x.shape]
    roots: list[np.ndarray] | None = None
    scheduled: dict[int, list[np.ndarray]] = {}
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    b = np.zeros_like(x)
    out = []
    for t, g in enumerate(grads, start=1):
        g = np.array(g, dtype=np.float64)
        if weight_decay and not decoupled:
            g = g + weight_decay * x
        w = 1.0 - beta2 if beta2 < 1 else 1.0
        n = (t - 1) // statistics_every + 1  # statistics updates so far (at t = 1, 1 + k, ...)
        if (t - 1) % statistics_every == 0:
            for i in range(k):
                u = unfold(g, i)
                h[i] = beta2 * h[i] + w * (u @ u.T)
        if k and (t == start or (t > start and t % frequency == 0)):
            hat = [hi / (1.0 - beta2**n) if beta2 < 1 else hi for hi in h]
            scheduled[t + delay] = [sym_power(hh + eps * np.eye(len(hh)), -1.0 / (2 * k)) for hh in hat]
        if t in scheduled:
            roots = scheduled.pop(t)
        m = beta1 * m + (1 - beta1) * g
        ghat = m / (1 - beta1**t)
        if grafting == "adagrad":
            v = v + g * g
        elif grafting in ("adam", "rmsprop"):
            v = grafting_beta2 * v + (1 - grafting_beta2) * g * g
        if grafting == "adam":
            p_gr = ghat / (np.sqrt(v / (1 - grafting_beta2**t)) + grafting_eps)
        elif grafting in ("adagrad", "rmsprop"):
            p_gr = ghat / (np.sqrt(v) + grafting_eps)
        else:
            p_gr = ghat
        if roots is None:
            p = p_gr
        else:
            p_sh = ghat
            for i, r in enumerate(roots):
                p_sh = mode_product(p_sh, r, i)
            if grafting is None:
                p = p_sh
            else:
                p = np.linalg.norm(p_gr) / (np.linalg.norm(p_sh) + 1e-16) * p_sh
        if weight_decay and decoupled:
            p = p + weight_decay * x
        if momentum:
            b = momentum * b + p
            p = p + momentum * b if nesterov else b
        x = x - lr * p
        out.append(x.copy())
    return out


def blocks(shape: tuple[int, ...], size: int) -> list[tuple[slice, ...]]:
    """Cells of the grid that cuts every dim into chunks of ``size`` (row-major)."""
    ranges = [[slice(a, min(a + size, d)) for a in range(0, d, size)] for d in shape]
    cells: list[tuple[slice, ...]] = [()]
    for r in ranges:
        cells = [c + (s,) for c in cells for s in r]
    return cells
