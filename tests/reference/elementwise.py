"""Textbook oracles for the element-wise optimizers, written from the equations (per tensor, float64).

Each function takes the parameter x, the list of gradients g_1..g_T it sees, and the
hyperparameters, and returns the trajectory. They share no code with scalopt.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def generic_adam(
    xs: list[np.ndarray],
    grads: list[list[np.ndarray]],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    bias_correction: bool = True,
    lr_decay: Callable[[int], float] | None = None,
    beta2_schedule: Callable[[int], float] | None = None,
) -> list[np.ndarray]:
    """Generic Adam (Zou et al., CVPR 2019, arXiv 1811.09358); ``grads[t][i]``: gradient i at step t+1."""
    xs = [x.copy() for x in xs]
    m = [np.zeros_like(x) for x in xs]
    v = [np.zeros_like(x) for x in xs]
    prod = 1.0
    for t, gs in enumerate(grads, start=1):
        theta = beta2_schedule(t) if beta2_schedule else beta2
        prod *= theta
        alpha = lr * (lr_decay(t) if lr_decay else 1.0)
        for i, g in enumerate(gs):
            if weight_decay and not decoupled:
                g = g + weight_decay * xs[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = theta * v[i] + (1 - theta) * g * g
            mh = m[i] / (1 - beta1**t) if bias_correction else m[i]
            vh = v[i] / (1 - prod) if bias_correction else v[i]
            step = mh / (np.sqrt(vh) + eps)
            if weight_decay and decoupled:
                step = step + weight_decay * xs[i]
            xs[i] = xs[i] - alpha * step
    return xs


def clipped_sgd(
    xs: list[np.ndarray],
    grads: list[list[np.ndarray]],
    *,
    lr: float,
    max_norm: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> list[np.ndarray]:
    xs = [x.copy() for x in xs]
    buf = [np.zeros_like(x) for x in xs]
    for gs in grads:
        norm = math.sqrt(sum(float((g * g).sum()) for g in gs))
        scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
        for i, g in enumerate(gs):
            d = scale * g + weight_decay * xs[i]
            if momentum:
                buf[i] = momentum * buf[i] + d
                d = d + momentum * buf[i] if nesterov else buf[i]
            xs[i] = xs[i] - lr * d
    return xs


def normalized_sgd(
    xs: list[np.ndarray], grads: list[list[np.ndarray]], *, lr: float, momentum: float, eps: float
) -> list[np.ndarray]:
    xs = [x.copy() for x in xs]
    m = [np.zeros_like(x) for x in xs]
    for gs in grads:
        m = [momentum * mi + g for mi, g in zip(m, gs)]
        norm = math.sqrt(sum(float((mi * mi).sum()) for mi in m))
        xs = [x - lr * mi / (norm + eps) for x, mi in zip(xs, m)]
    return xs


def generalized_signsgd(
    xs: list[np.ndarray],
    grads: list[list[np.ndarray]],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    bias_correction: bool = False,
) -> list[np.ndarray]:
    xs = [x.copy() for x in xs]
    m = [np.zeros_like(x) for x in xs]
    v = [np.zeros_like(x) for x in xs]
    for t, gs in enumerate(grads, start=1):
        for i, g in enumerate(gs):
            g = g + weight_decay * xs[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * m[i] ** 2
            mh = m[i] / (1 - beta1**t) if bias_correction else m[i]
            vh = v[i] / (1 - beta2**t) if bias_correction else v[i]
            denom = np.sqrt(vh) + eps
            with np.errstate(invalid="ignore", divide="ignore"):
                step = np.where(denom > 0, mh / np.where(denom > 0, denom, 1.0), 0.0)
            xs[i] = xs[i] - lr * step
    return xs
