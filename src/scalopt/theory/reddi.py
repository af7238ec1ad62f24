"""The Reddi et al. online convex counterexample, run with Generic Adam in pure NumPy.

On the feasible set [−1, 1], with C > 2 (default 3), the k-th loss (k = 1, 2, ...) is

    f_k(x) = C·x   if k mod 3 == 1,   else   −x,

so over each period of 3 the sum is (C − 2)·x and the best fixed point is x* = −1. Average regret
(1/T)·Σ_{k≤T} (f_k(x_k) − f_k(x*)) → 0 means the method finds x*.

Generic Adam as run here (``lr``·``lr_decay`` = α_t, ``beta2_schedule`` = θ_t, ``beta1`` = β, g_t the
gradient of f_t; no bias correction; ``eps`` outside the root):

    m_t = β·m_{t−1} + (1−β)·g_t ;  v_t = θ_t·v_{t−1} + (1−θ_t)·g_t²
    x_{t+1} = Π_[−1,1](x_t − α_t·m_t/(√v_t + eps))

with m_0 = v_0 = 0. With a constant small β2 (RMSProp, β = 0) the rare large gradient C is divided by
a large √v_t while the frequent −1 gradients are divided by a small one: the step towards +1 wins and
x_t settles at +1, the worst point (average regret stays near (C − 2)·2/3 per step). For C = 3 this
happens for constant β2 up to about 0.3 (at β2 = 0.99 the same run still reaches −1: the residual
shrinks with 1 − β2). θ_t = 1 − 1/t (v_t the running mean of g_t², satisfying the sufficient condition
with α_t = α/√t) reaches x* = −1. The loss here is small and importable (``reddi_gradient``,
``reddi_loss``) so a torch workload can reuse it.

References: S. J. Reddi, S. Kale, S. Kumar, "On the Convergence of Adam and Beyond", ICLR 2018;
F. Zou, L. Shen, Z. Jie, W. Zhang, W. Liu, CVPR 2019, arXiv 1811.09358.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scalopt.core.validate import check_int, check_interval, check_nonnegative, check_positive
from scalopt.theory.numeric import vectorise

OPTIMUM = -1.0


def reddi_gradient(k: int, C: float = 3.0) -> float:
    """∂f_k/∂x: C if k mod 3 == 1 else −1 (k is the 1-based step)."""
    return C if k % 3 == 1 else -1.0


def reddi_loss(k: int, x: float, C: float = 3.0) -> float:
    """f_k(x) = C·x if k mod 3 == 1 else −x."""
    return reddi_gradient(k, C) * x


def reddi_average_regret(iterates: np.ndarray, C: float = 3.0) -> float:
    """(1/T)·Σ_{k≤T} (f_k(x_k) − f_k(−1)) for iterates x_0, x_1, ..., x_T (x_{k−1} plays round k)."""
    x = np.asarray(iterates, dtype=float)[:-1]
    k = np.arange(1, len(x) + 1)
    g = np.where(k % 3 == 1, C, -1.0)
    return float(np.mean(g * (x - OPTIMUM)))


def run_generic_adam_on_reddi(
    lr: float,
    lr_decay: Any,
    beta2_schedule: Any,
    beta1: float,
    steps: int,
    C: float = 3.0,
    x0: float = 1.0,
    eps: float = 1e-8,
) -> np.ndarray:
    """Iterates x_0, ..., x_steps of Generic Adam on the counterexample (length ``steps + 1``).

    ``lr_decay`` and ``beta2_schedule`` are numbers, ``scalopt.schedules`` objects or callables of
    the 1-based step t (``lr_decay=None`` is constant 1); ``beta1`` is a constant β in [0, 1).
    """
    check_positive("lr", lr)
    check_interval("beta1", beta1, 0.0, 1.0)
    check_int("steps", steps, minimum=1)
    if not C > 2:
        raise ValueError(f"C must be in (2, inf), got {C!r}")
    check_interval("x0", x0, -1.0, 1.0, high_open=False)
    check_nonnegative("eps", eps)
    decay_fn, _ = vectorise(lr_decay, "lr_decay")
    theta_fn, _ = vectorise(beta2_schedule, "beta2_schedule")
    t = np.arange(1, steps + 1, dtype=float)
    alpha_t, theta_t = lr * decay_fn(t), theta_fn(t)
    bad = ~(np.isfinite(alpha_t) & (alpha_t > 0))
    if bad.any():
        raise ValueError(
            f"lr·lr_decay(t) must be finite and > 0, got {float(alpha_t[bad][0])!r} at t={t[bad][0]:g}"
        )
    bad = ~((theta_t >= 0) & (theta_t <= 1))
    if bad.any():
        raise ValueError(
            f"beta2_schedule(t) must be in [0, 1], got {float(theta_t[bad][0])!r} at t={t[bad][0]:g}"
        )
    alpha, theta = alpha_t.tolist(), theta_t.tolist()
    xs = np.empty(steps + 1)
    x, m, v = float(x0), 0.0, 0.0
    xs[0] = x
    for k in range(1, steps + 1):
        g = C if k % 3 == 1 else -1.0
        th = theta[k - 1]
        m = beta1 * m + (1.0 - beta1) * g
        v = th * v + (1.0 - th) * g * g
        x = min(1.0, max(-1.0, x - alpha[k - 1] * m / (math.sqrt(v) + eps)))
        xs[k] = x
    return xs
