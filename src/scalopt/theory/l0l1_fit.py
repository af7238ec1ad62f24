"""Fit the (L0, L1)-smoothness constants of a run from logged gradient norms and local smoothness.

A function is (L0, L1)-smooth when ‖∇²f(x)‖ ≤ L0 + L1‖∇f(x)‖ for all x (Zhang, He, Sra, Jadbabaie,
"Why gradient clipping accelerates training: a theoretical justification for adaptivity", ICLR 2020,
arXiv 1905.11881). Given points (g_i, s_i) logged along a run, g_i = ‖∇f(x_i)‖ and s_i a local
smoothness (the Hessian norm, or a secant ‖∇f(x_i) − ∇f(x_{i−1})‖/‖x_i − x_{i−1}‖), the smallest upper
envelope is the linear program

    minimise  L0 + L1·mean(g)    subject to  L0 + L1·g_i ≥ s_i  (all i),  L0 ≥ 0,  L1 ≥ 0,

i.e. the line over the logged range of ‖∇f‖ with the least mean height that lies above every point
(scipy.optimize.linprog, HiGHS). For a convex profile s(g) it passes through the points with the smallest
and the largest g. The fit is a property of the points seen: it can only be as large as the true
constants where the run visited the places that make them tight (near x* for L0, large gradients along
the worst direction for L1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import linprog


class L0L1Fit(NamedTuple):
    """Fitted constants of ‖∇²f‖ ≤ L0 + L1‖∇f‖."""

    L0: float
    L1: float


def _vector(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        bad = arr[~(np.isfinite(arr) & (arr >= 0))][:3]
        raise ValueError(f"{name} must hold finite nonnegative numbers, got {bad.tolist()}")
    return arr


def estimate_l0l1(grad_norms: Any, local_smoothness: Any) -> L0L1Fit:
    """The smallest (L0, L1) with ``local_smoothness[i] <= L0 + L1 * grad_norms[i]`` for every i (an LP)."""
    g = _vector("grad_norms", grad_norms)
    s = _vector("local_smoothness", local_smoothness)
    if g.shape != s.shape:
        raise ValueError(
            f"grad_norms and local_smoothness must have the same length, got {g.size} and {s.size}"
        )
    if g.size < 2 or np.ptp(g) == 0:
        raise ValueError(
            f"grad_norms must hold at least two different values to fit a line, got {g.tolist()[:3]}..."
        )
    scale = float(g.max())  # solve in units of the largest gradient norm, then undo
    res = linprog(
        c=[1.0, float(np.mean(g)) / scale], A_ub=-np.column_stack([np.ones_like(g), g / scale]), b_ub=-s,
        bounds=[(0, None), (0, None)], method="highs",
    )  # fmt: skip
    if res.status != 0:
        raise ArithmeticError(f"linprog failed: {res.message}")
    L0, l1 = (float(v) for v in res.x)
    L1 = l1 / scale
    # HiGHS meets constraints to ~1e-9 relative; lift L0 so the envelope covers every point exactly.
    L0 += max(0.0, float(np.max(s - (L0 + L1 * g))))
    return L0L1Fit(L0, L1)
