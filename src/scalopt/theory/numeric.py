"""Numerical helpers of the theory checks: schedules as NumPy functions of t, grids, long sums.

A schedule (number, ``scalopt.schedules`` object, :class:`~scalopt.theory.expr.Expression` or any
callable of the 1-based step t) becomes a function of a float array of steps. A callable that does
not take arrays (say ``lambda t: math.sqrt(t)``) is called once per step, so callers sum fewer
terms exactly for it.

Partial sums S(T) = Σ_{t≤T} f(t) at checkpoints T are exact (chunked ``cumsum``) up to
``exact_limit`` terms; beyond it each piece between consecutive integers a < b of a geometric grid
(``TAIL_POINTS_PER_DECADE`` per decade) uses the trapezoid rule with the Euler–Maclaurin end
correction Σ_{t=a+1}^{b} f(t) ≈ (b − a)·(f(a) + f(b))/2 + (f(b) − f(a))/2, exact for f linear and
accurate to ~1e-7 relative for the slowly varying powers of t the checks meet.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from scalopt.schedules import Constant, InvPower, OneMinusInvPower
from scalopt.theory.expr import Expression

ArrayFn = Callable[[np.ndarray], np.ndarray]

CHUNK = 2**18
TAIL_POINTS_PER_DECADE = 1024
GRID_POINTS_PER_DECADE = 64


def _scalar(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def vectorise(schedule: Any, name: str) -> tuple[ArrayFn, bool]:
    """(f, fast): f maps a float array of steps to the schedule's values; fast if one call does it."""
    if schedule is None:
        return (lambda t: np.ones_like(t)), True
    if _scalar(schedule) or isinstance(schedule, Constant):
        value = float(schedule.value if isinstance(schedule, Constant) else schedule)
        return (lambda t: np.full_like(t, value)), True
    if isinstance(schedule, InvPower):
        s = float(schedule.s)
        return (lambda t: t ** (-s)), True
    if isinstance(schedule, OneMinusInvPower):
        theta, r = float(schedule.theta), float(schedule.r)
        return (lambda t: 1.0 - theta * t ** (-r)), True
    if isinstance(schedule, Expression):
        return schedule, True
    if not callable(schedule):
        raise ValueError(f"{name} must be a number, a schedule or a callable of the step t, got {schedule!r}")

    def one_by_one(t: np.ndarray) -> np.ndarray:
        out = np.empty(t.shape, dtype=float)
        for i, step in enumerate(t):
            try:
                out[i] = float(schedule(int(step)))
            except (ArithmeticError, TypeError, ValueError) as err:
                raise ValueError(f"{name}(t) cannot be evaluated at t={int(step)}: {err}") from err
        return out

    probe = np.arange(1.0, 9.0)
    expected = one_by_one(probe)
    try:
        with np.errstate(all="ignore"):
            got = np.asarray(schedule(probe), dtype=float)
        got = np.broadcast_to(got, probe.shape)
        fast = bool(np.allclose(got, expected, rtol=1e-9, atol=0.0, equal_nan=True))
    except Exception:  # noqa: BLE001 - any failure on an array only means "call it per step"
        fast = False
    if not fast:
        return one_by_one, False

    def vectorised(t: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(schedule(t), dtype=float), t.shape).copy()

    return vectorised, True


def describe(schedule: Any, name: str) -> str:
    """A short human-readable form of a schedule for reports."""
    if schedule is None:
        return "1"
    if _scalar(schedule) or isinstance(schedule, Constant):
        value = float(schedule.value if isinstance(schedule, Constant) else schedule)
        return f"{value:g} (constant)"
    if isinstance(schedule, InvPower):
        return f"t^-{schedule.s:g}"
    if isinstance(schedule, OneMinusInvPower):
        return f"1 − {schedule.theta:g}/t^{schedule.r:g}"
    if isinstance(schedule, Expression):
        return f"({schedule.text})"
    label = getattr(schedule, "__name__", None) or repr(schedule)
    return f"{label}(t)"


def grid(horizon: int) -> np.ndarray:
    """Sorted distinct integer steps 1..horizon, log-spaced, with every power of 10 and ``horizon``."""
    count = int(math.log10(horizon) * GRID_POINTS_PER_DECADE) + 2
    powers = [10**k for k in range(20) if 10**k <= horizon]
    points = np.concatenate([np.rint(np.geomspace(1, horizon, count)), powers, [horizon]])
    return np.unique(points).astype(np.int64)


def slope(t: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log t (NaN unless every y is finite and > 0)."""
    if len(t) < 2 or not np.all(np.isfinite(y) & (y > 0)):
        return math.nan
    return float(np.polyfit(np.log(t), np.log(y), 1)[0])


def partial_sums(f: ArrayFn, checkpoints: np.ndarray, *, exact_limit: int) -> np.ndarray:
    """S(T) = Σ_{t=1}^{T} f(t) at each of the sorted, distinct integer ``checkpoints``."""
    checkpoints = np.asarray(checkpoints, dtype=np.int64)
    horizon = int(checkpoints[-1])
    head = min(horizon, exact_limit)
    out = np.empty(len(checkpoints))
    carry = 0.0
    for start in range(1, head + 1, CHUNK):
        stop = min(start + CHUNK, head + 1)
        sums = carry + np.cumsum(f(np.arange(start, stop, dtype=float)))
        inside = (checkpoints >= start) & (checkpoints < stop)
        out[inside] = sums[checkpoints[inside] - start]
        carry = float(sums[-1])
    if horizon > head:
        beyond = checkpoints > head
        count = int(math.ceil(math.log10(horizon / head) * TAIL_POINTS_PER_DECADE)) + 1
        nodes = np.unique(np.concatenate([np.rint(np.geomspace(head, horizon, count)), checkpoints[beyond]]))
        values = f(nodes)
        pieces = np.diff(nodes) * (values[1:] + values[:-1]) / 2 + np.diff(values) / 2
        sums = carry + np.concatenate([[0.0], np.cumsum(pieces)])
        out[beyond] = sums[np.searchsorted(nodes, checkpoints[beyond])]
    return out
