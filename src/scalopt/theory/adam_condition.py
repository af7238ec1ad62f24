"""Does a Generic Adam schedule satisfy the sufficient condition for convergence?

Generic Adam (no bias correction), with ``lr``·``lr_decay`` = α_t, ``beta1`` = β (constant β_t) and
``beta2`` = θ_t (a number is a constant θ_t ≡ β2, Adam's usual setting):

    m_t = β·m_{t−1} + (1−β)·g_t ;  v_t = θ_t·v_{t−1} + (1−θ_t)·g_t² ;  x_{t+1} = x_t − α_t·m_t/√v_t

For f bounded below and L-smooth, unbiased stochastic gradients with E‖g_t‖² ≤ G², and

    (R1)  0 ≤ β_t ≤ β < 1
    (R2)  0 < θ_t < 1, θ_t non-decreasing, lim θ_t > β²
    (R3)  χ_t = α_t/√(1−θ_t) almost non-increasing (a_t non-increasing, a_t ≤ χ_t ≤ C0·a_t)

the iterate x_τ, τ uniform in 1..T, obeys

    (E‖∇f(x_τ)‖^(4/3))^(3/2) ≤ (C + C'·Σ_{t≤T} α_t√(1−θ_t)) / (T·α_T),

so it converges when (SC)  Σ_{t≤T} α_t√(1−θ_t) = o(T·α_T), i.e. R_T := Σ_{t≤T} α_t√(1−θ_t)/(T·α_T) → 0.
All conditions are asymptotic: they must hold for t ≥ some t0.

Families. α_t = lr·t^(−s) (``InvPower(s)``; ``None`` or a ``Constant`` is s = 0) and θ_t = 1 − θ/t^r
(``OneMinusInvPower(theta, r)``; a constant β2 is r = 0 with θ = 1 − β2): χ_t ∝ t^(r/2 − s) and
R_T = √θ·Σ_{t≤T} t^(−(s+r/2))/T^(1−s). The verdict is exact: admissible iff 0 < r ≤ 2s < 2 (with R2:
lim θ_t > β²), rate O(T^(−min(1−s, r/2))), times log T on the boundary s + r/2 = 1 (best: s = 1/2,
r = 1). A constant β2 (r = 0) gives R_T → √(1−β2)/(1−s): convergence only to an O(√(1−β2))
neighbourhood. Any other callable of the 1-based step t gets numerical evidence up to ``horizon``
(``exact=False``): the conditions on a log-spaced grid of t ≥ √horizon, R_T from exact sums (chunked
NumPy; a trapezoid/Euler–Maclaurin estimate on a geometric grid beyond 2^21 terms, or beyond 2^12
for a callable that does not take arrays) and its log-log slope over the last decade.

References: F. Zou, L. Shen, Z. Jie, W. Zhang, W. Liu, "A Sufficient Condition for Convergences of
Adam and RMSProp", CVPR 2019, arXiv 1811.09358; C. Chen, L. Shen, F. Zou, W. Liu, "Towards Practical
Adam: Non-Convexity, Convergence Theory, and Mini-Batch Acceleration", JMLR 23(229), 2022,
arXiv 2101.05471.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import zeta

from scalopt.core.validate import check_int, check_interval, check_positive
from scalopt.schedules import Constant, InvPower, OneMinusInvPower
from scalopt.theory.expr import Expression, parse_schedule, power_law
from scalopt.theory.numeric import describe, grid, partial_sums, slope, vectorise

CHI_SLOPE_TOL = 1e-3  # numeric R3: log-log slope of χ_t over the last decade at most this
R_T_SLOPE_TOL = 1e-2  # numeric SC: log-log slope of R_T over the last decade below minus this

Series = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class ConditionVerdict:
    """One condition (``name`` R1, R2, R3 or SC): whether it holds, the numbers behind it, one line."""

    name: str
    holds: bool
    numbers: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True)
class AdamConditionReport:
    """The verdict of :func:`check_adam`; ``str(report)`` explains it and what to change."""

    satisfied: bool
    exact: bool
    conditions: tuple[ConditionVerdict, ...]
    rate: float | None
    bound_at_horizon: float
    horizon: int
    setting: str
    advice: tuple[str, ...] = ()

    def condition(self, name: str) -> ConditionVerdict:
        for verdict in self.conditions:
            if verdict.name == name:
                return verdict
        raise KeyError(name)

    def __str__(self) -> str:
        verdict = "SATISFIED" if self.satisfied else "NOT SATISFIED"
        how = (
            "exact verdict from the schedule parameters"
            if self.exact
            else f"numerical evidence for t ≤ {self.horizon}, not a proof (pass scalopt.schedules "
            "InvPower / OneMinusInvPower / Constant for an exact verdict)"
        )
        lines = [
            f"Generic Adam sufficient condition (Zou et al., CVPR 2019): {verdict} - {how}",
            f"  setting: {self.setting}",
        ]
        lines += [f"  [{'ok' if c.holds else 'FAIL':4}] {c.name}: {c.detail}" for c in self.conditions]
        lines.append(
            f"  R_T = Σ_(t≤T) α_t·√(1−θ_t)/(T·α_T) at T = {self.horizon}: {self.bound_at_horizon:.4g}"
            " (must tend to 0)"
        )
        if self.rate is not None:
            bound = f"(E‖∇f(x_τ)‖^(4/3))^(3/2) = O(T^-{self.rate:g})"
            lines.append(f"  rate: {bound} (times log T if s + r/2 = 1)")
        if self.advice:
            lines.append("  what to do:")
            lines += [f"    - {line}" for line in self.advice]
        return "\n".join(lines)


def check_adam(
    lr: float = 1e-3,
    lr_decay: Any = None,
    beta2: Any = 0.999,
    beta1: float = 0.9,
    horizon: int = 10**6,
) -> AdamConditionReport:
    """Check (R1)-(R3) and (SC) for α_t = lr·lr_decay(t), θ_t = beta2 (or beta2(t)), β_t = beta1.

    ``lr_decay``: None (constant 1), a positive number, ``Constant``, ``InvPower(s)``, an expression
    string (see :func:`scalopt.theory.parse_schedule`) or a callable of the 1-based step t.
    ``beta2``: a number in (0, 1), ``Constant``, ``OneMinusInvPower(theta, r)``, a string or a callable.
    """
    lr = float(check_positive("lr", lr))
    beta1 = float(check_interval("beta1", beta1, 0.0, 1.0))
    horizon = check_int("horizon", horizon, minimum=10)
    if isinstance(lr_decay, str):
        lr_decay = parse_schedule(lr_decay, kind="lr_decay")
    if isinstance(beta2, str):
        beta2 = parse_schedule(beta2, kind="beta2")
    alpha_family, theta_family = _lr_family(lr_decay), _beta2_family(beta2)
    alpha = f"{lr:g}" if lr_decay is None else f"{lr:g}·{describe(lr_decay, 'lr_decay')}"
    setting = f"α_t = {alpha}, θ_t = {describe(beta2, 'beta2')}, β1 = {beta1:g}"
    if alpha_family is not None and theta_family is not None:
        return _exact(lr, *alpha_family, *theta_family, beta1, horizon, setting)
    return _numeric(lr, lr_decay, beta2, beta1, horizon, setting)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _lr_family(lr_decay: Any) -> tuple[float, float] | None:
    """(c, s) with α_t = lr·c·t^(−s), or None for a callable outside the family."""
    if lr_decay is None:
        return 1.0, 0.0
    if _is_real(lr_decay) or isinstance(lr_decay, Constant):
        c = float(lr_decay.value if isinstance(lr_decay, Constant) else lr_decay)
        if not (c > 0 and math.isfinite(c)):
            raise ValueError(f"a constant lr_decay must be in (0, inf), got {c!r}")
        return c, 0.0
    if isinstance(lr_decay, InvPower):
        return 1.0, float(lr_decay.s)
    if isinstance(lr_decay, Expression):
        law = power_law(lr_decay)  # c·t^(−s) with c > 0: the family with lr scaled by c
        if law is not None and law[0] > 0 and law[1] <= 0:
            return law[0], -law[1]
    if callable(lr_decay):
        return None
    raise ValueError(
        f"lr_decay must be None, a number, a schedule or a callable of the step t, got {lr_decay!r}"
    )


def _beta2_family(beta2: Any) -> tuple[float, float] | None:
    """(θ, r) with θ_t = 1 − θ·t^(−r) (a constant β2 is θ = 1 − β2, r = 0), or None for a callable."""
    if _is_real(beta2) or isinstance(beta2, Constant):
        value = float(beta2.value if isinstance(beta2, Constant) else beta2)
        check_interval("beta2", value, 0.0, 1.0, low_open=True, high_open=True)
        return 1.0 - value, 0.0
    if isinstance(beta2, OneMinusInvPower):
        if beta2.r == 0:
            check_interval("beta2 (the constant 1 - theta)", 1.0 - beta2.theta, 0.0, 1.0, low_open=True)
        return float(beta2.theta), float(beta2.r)
    if callable(beta2):
        return None
    raise ValueError(
        f"beta2 must be a number in (0, 1), a schedule or a callable of the step t, got {beta2!r}"
    )


def _display_points(horizon: int) -> np.ndarray:
    points = [10**k for k in range(20) if 10**k < horizon]
    return np.array([*points, horizon], dtype=np.int64)


def _series(t: np.ndarray, values: np.ndarray) -> Series:
    return tuple((int(a), float(b)) for a, b in zip(t, values))


def _exact(
    lr: float, c: float, s: float, theta: float, r: float, beta1: float, horizon: int, setting: str
) -> AdamConditionReport:
    b2 = beta1**2
    lim = 1.0 if r > 0 else 1.0 - theta
    r2 = lim > b2
    r2_detail = (
        f"θ_t in (0, 1) for large t, non-decreasing, lim θ_t = {lim:g} > β1² = {b2:g}"
        if r2
        else f"lim θ_t = {lim:g} ≤ β1² = {b2:g}"
    )
    points = _display_points(horizon)
    tf = points.astype(float)
    chi = lr * c * tf ** (-s) / np.sqrt(theta * tf ** (-r))
    r3 = r <= 2 * s
    if r3:
        r3_detail = f"χ_t = α_t/√(1−θ_t) ∝ t^{r / 2 - s:g} is non-increasing (r = {r:g} ≤ 2s = {2 * s:g})"
    elif s == 0:
        r3_detail = f"α_t is constant (s = 0), so r ≤ 2s fails: χ_t = α_t/√(1−θ_t) grows like t^{r / 2:g}"
    else:
        r3_detail = f"r > 2s ({r:g} > {2 * s:g}): χ_t = α_t/√(1−θ_t) grows like t^{r / 2 - s:g}"

    def summand(t: np.ndarray) -> np.ndarray:
        return lr * c * t ** (-s) * np.sqrt(theta) * t ** (-r / 2)

    r_t = partial_sums(summand, points, exact_limit=2**21) / (tf * lr * c * tf ** (-s))
    sc = r > 0 and s < 1
    exponent = min(1 - s, r / 2)
    if sc:
        limit = 0.0
        log = " (times log T)" if math.isclose(s + r / 2, 1.0) else ""
        sc_detail = f"Σ α_t√(1−θ_t) = o(T·α_T): R_T -> 0 like T^-{exponent:g}{log}"
    elif s < 1:
        limit = math.sqrt(theta) / (1 - s)
        sc_detail = f"θ_t is constant (r = 0): R_T -> √(1−β2)/(1−s) = {limit:.4g}, not 0"
    else:
        limit = math.sqrt(theta) * float(zeta(1 + r / 2)) if s == 1 and r > 0 else math.inf
        sc_detail = f"s = {s:g} ≥ 1: T·α_T does not grow, so R_T -> {limit:.4g}, not 0"
    conditions = (
        ConditionVerdict("R1", True, {"beta1": beta1}, f"0 ≤ β1 = {beta1:g} < 1"),
        ConditionVerdict(
            "R2", r2, {"theta": theta, "r": r, "lim_theta_t": lim, "beta1_squared": b2}, r2_detail
        ),
        ConditionVerdict(
            "R3", r3, {"s": s, "r": r, "chi_exponent": r / 2 - s, "chi_t": _series(points, chi)}, r3_detail
        ),
        ConditionVerdict(
            "SC",
            sc,
            {"s": s, "r": r, "R_T": _series(points, r_t), "R_T_at_horizon": float(r_t[-1]), "limit": limit},
            sc_detail,
        ),
    )
    satisfied = r2 and r3 and sc
    advice: list[str] = []
    if not r2:
        advice.append(
            f"lim θ_t = {lim:g} ≤ β1² = {b2:g} breaks R2: raise beta2 (θ_t) or lower beta1 below √(lim θ_t)"
        )
    if r == 0:
        advice.append(
            "θ_t is constant: Adam only reaches a neighbourhood of size O(√(1−β2)) "
            f"= O({math.sqrt(theta):.3g}); use θ_t = 1 − θ/t^r with 0 < r ≤ 2s"
            + (f" (here 2s = {2 * s:g})" if s > 0 else " - with s = 0 no r > 0 works, so also decay α_t")
            + ', e.g. --lr-decay "1/sqrt(t)" --beta2 "1-0.1/t" (s = 1/2, r = 1)'
        )
    elif not r3 and s == 0:
        advice.append(
            "α_t is constant (s = 0), so r ≤ 2s fails for every r > 0: χ_t = α_t/√(1−θ_t) grows; "
            'decay the step size, e.g. --lr-decay "1/sqrt(t)" (s = 1/2) with r ≤ 1'
        )
    elif not r3:
        advice.append(
            f"r > 2s: χ_t = α_t/√(1−θ_t) grows; pick r ≤ 2s = {2 * s:g}"
            + (f", or decay α_t faster with s ≥ r/2 = {r / 2:g}" if r / 2 < 1 else "")
        )
    if s >= 1:
        advice.append(f"s = {s:g} ≥ 1: α_t decays too fast for the bound to vanish; use s < 1, e.g. s = 1/2")
    return AdamConditionReport(
        satisfied=satisfied,
        exact=True,
        conditions=conditions,
        rate=exponent if satisfied else None,
        bound_at_horizon=float(r_t[-1]),
        horizon=horizon,
        setting=setting,
        advice=tuple(advice),
    )


def _numeric(
    lr: float, lr_decay: Any, beta2: Any, beta1: float, horizon: int, setting: str
) -> AdamConditionReport:
    decay_fn, decay_vec = vectorise(lr_decay, "lr_decay")
    theta_fn, theta_vec = vectorise(beta2, "beta2")

    def alpha(t: np.ndarray) -> np.ndarray:
        values = lr * decay_fn(t)
        bad = ~(np.isfinite(values) & (values >= 0))  # 0 is allowed: a decay that ends or underflows
        if bad.any() or values[0] == 0 and t[0] == 1:
            value, step = (float(values[bad][0]), t[bad][0]) if bad.any() else (float(values[0]), 1.0)
            raise ValueError(f"lr_decay(t) must be finite and > 0, got {value!r} at t={step:g}")
        return values

    def theta(t: np.ndarray) -> np.ndarray:
        values = theta_fn(t)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"beta2(t) must be finite, got {float(values[bad][0])!r} at t={t[bad][0]:g}")
        return values

    def summand(t: np.ndarray) -> np.ndarray:
        return alpha(t) * np.sqrt(np.clip(1.0 - theta(t), 0.0, None))

    t_all = grid(horizon)
    tf = t_all.astype(float)
    a_all, th_all = alpha(tf), theta(tf)
    t0 = max(1, math.isqrt(horizon))
    tail = t_all >= t0
    window = t_all >= max(t0, horizon // 10)
    shown = np.isin(t_all, _display_points(horizon))
    b2 = beta1**2

    th_tail = th_all[tail]
    in_range = bool(np.all((th_tail > 0) & (th_tail < 1)))
    increasing = bool(np.all(np.diff(th_tail) >= -1e-12))
    lim = float(th_all[-1])
    r2 = in_range and increasing and lim > b2
    if not in_range:
        r2_detail = f"θ_t leaves (0, 1) for some t ≥ {t0}"
    elif not increasing:
        r2_detail = f"θ_t decreases somewhere in t ≥ {t0}"
    else:
        r2_detail = (
            f"θ_t in (0, 1), non-decreasing for t ≥ {t0}, θ_T = {lim:.8g} {'>' if r2 else '≤'} β1² = {b2:g}"
        )

    with np.errstate(divide="ignore"):
        chi = a_all / np.sqrt(np.clip(1.0 - th_all, 0.0, None))
    chi_slope = slope(tf[window], chi[window])
    if np.any(chi[window] == 0):  # α_t reached 0: R3 asks only that χ_t does not grow again
        r3 = bool(np.all(np.diff(chi[window]) <= 0))
        r3_detail = "α_t reaches 0 near T" + (" and χ_t stays non-increasing" if r3 else " and grows again")
    else:
        r3 = math.isfinite(chi_slope) and chi_slope <= CHI_SLOPE_TOL
        r3_detail = f"χ_t = α_t/√(1−θ_t) has log-log slope {chi_slope:.3g} near T" + (
            f" (≤ {CHI_SLOPE_TOL:g}: not growing)" if r3 else ": it grows"
        )

    exact_limit = 2**21 if decay_vec and theta_vec else 2**12
    with np.errstate(all="ignore"):
        r_t = partial_sums(summand, t_all, exact_limit=exact_limit) / (tf * a_all)
    r_slope = slope(tf[window], r_t[window])
    sc = math.isfinite(r_slope) and r_slope < -R_T_SLOPE_TOL
    stalled = bool(np.any(a_all[window] == 0))
    if stalled:
        sc_detail = "α_T = 0 (the decay ends or underflows): T·α_T does not grow, R_T is infinite"
    else:
        verdict = "decaying: evidence for R_T -> 0" if sc else f"not below -{R_T_SLOPE_TOL:g}: no decay"
        sc_detail = f"R_T has log-log slope {r_slope:.3g} near T ({verdict})"

    conditions = (
        ConditionVerdict("R1", True, {"beta1": beta1}, f"0 ≤ β1 = {beta1:g} < 1"),
        ConditionVerdict("R2", r2, {"t0": t0, "theta_t_at_horizon": lim, "beta1_squared": b2}, r2_detail),
        ConditionVerdict(
            "R3",
            r3,
            {"t0": t0, "chi_t": _series(t_all[shown], chi[shown]), "chi_slope": chi_slope},
            r3_detail,
        ),
        ConditionVerdict(
            "SC",
            sc,
            {
                "t0": t0,
                "R_T": _series(t_all[shown], r_t[shown]),
                "R_T_at_horizon": float(r_t[-1]),
                "R_T_slope": r_slope,
            },
            sc_detail,
        ),
    )
    advice: list[str] = []
    if not r2:
        advice.append(
            "R2 needs 0 < θ_t < 1, non-decreasing, with lim θ_t > β1² for large t: "
            "raise beta2 (θ_t) toward 1 or lower beta1"
        )
    if not r3:
        advice.append(
            "χ_t = α_t/√(1−θ_t) grows: decay α_t faster or let θ_t approach 1 more slowly "
            "(with α_t ∝ t^-s and θ_t = 1 − θ/t^r: pick r ≤ 2s)"
        )
    if not sc:
        if stalled or (math.isfinite(r_slope) and r_slope > 0.5):
            advice.append(
                "α_t decays too fast (T·α_T must grow for the bound to vanish): "
                'use a polynomial decay α_t ∝ t^-s with s < 1, e.g. --lr-decay "1/sqrt(t)"'
            )
        elif np.ptp(th_tail) <= 1e-12 * max(1.0, abs(lim)):
            advice.append(
                "θ_t is constant: Adam only reaches a neighbourhood of size O(√(1−β2)); "
                'use θ_t = 1 − θ/t^r with 0 < r ≤ 2s, e.g. --lr-decay "1/sqrt(t)" --beta2 "1-0.1/t"'
            )
        else:
            advice.append(
                "R_T does not vanish: let θ_t -> 1 (e.g. θ_t = 1 − θ/t^r, r > 0) "
                "and keep T·α_T growing (α_t ∝ t^-s with s < 1)"
            )
    satisfied = r2 and r3 and sc
    return AdamConditionReport(
        satisfied=satisfied,
        exact=False,
        conditions=conditions,
        rate=None,
        bound_at_horizon=float(r_t[-1]),
        horizon=horizon,
        setting=setting,
        advice=tuple(advice),
    )
