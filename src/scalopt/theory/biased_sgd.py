"""The biased-SGD rate certificate: a 3×3 linear matrix inequality (LMI) and its best rate ρ².

Biased SGD on f = (1/n) Σ_i f_i, i_k uniform, with a gradient error e_k:

    x_{k+1} = x_k − α (∇f_{i_k}(x_k) + e_k),      ‖e_k‖² ≤ δ² ‖∇f_{i_k}(x_k)‖² + c²

With ξ = x_k − x*, g = ∇f_{i_k}(x_k), e = e_k, σ*² = (1/n) Σ ‖∇f_i(x*)‖² (``sigma2``) and f m-strongly
convex, the constraints, each a quadratic form in z = (ξ, g, e) (every block is a multiple of I_p, so
the LMI is 3×3 whatever the dimension p):

    (S)  E[2m‖ξ‖² − 2ξᵀg] ≤ 0                       strong convexity of f
    (G)  "convex-smooth": each f_i convex, L-smooth  E[‖g‖² − 2L ξᵀg]  ≤ 2σ*²   (co-coercivity)
         "smooth":        each f_i L-smooth          E[‖g‖² − 2L²‖ξ‖²] ≤ 2σ*²
    (E)  ‖e‖² − δ²‖g‖² ≤ c²

By the S-procedure, if ρ² ≥ 0 and multipliers λ_S, λ_G, ν ≥ 0 give

         [ 1  −α  −α ]       [1 0 0]        [ 2m −1 0 ]        [ G11 G12 0 ]     [ 0  0  0 ]
    F =  [−α  α²  α² ] − ρ²  [0 0 0] − λ_S  [ −1  0 0 ] − λ_G  [ G12  1  0 ] − ν [ 0 −δ² 0 ]  ≼ 0
         [−α  α²  α² ]       [0 0 0]        [  0  0 0 ]        [  0   0  0 ]     [ 0  0  1 ]

    convex-smooth: G11 = 0, G12 = −L        smooth: G11 = −2L², G12 = 0

(the first matrix is v vᵀ, v = (1, −α, −α): zᵀ v vᵀ z = ‖x_{k+1} − x*‖²), then taking expectations,

    E‖x_{k+1} − x*‖² ≤ ρ² E‖x_k − x*‖² + H,   H = 2 λ_G σ*² + ν c²,
    E‖x_k − x*‖² ≤ ρ^(2k) ‖x_0 − x*‖² + H (1 − ρ^(2k)) / (1 − ρ²)    (noise floor H / (1 − ρ²) when ρ < 1).

A point is accepted iff every multiplier is ≥ 0 and λ_max(F) ≤ 1e-12·max(1, ‖F‖) (float64 symmetric
eigensolver); every certificate this module returns has passed that check. Three ways to a point:

- ``"closed-form"``: Young's inequality on the cross terms with free τ, η > 0,
  ν = α²(1 + 1/τ + 1/η), λ_G = α²(1 + τ) + νδ², and λ_S = α − Lλ_G with
  ρ² = 1 − 2mα + η + 2mLα²[(1 + τ) + δ²(1 + 1/τ + 1/η)] (convex-smooth; needs λ_S ≥ 0), or λ_S = α with
  ρ² = 1 − 2mα + η + 2L²α²[(1 + τ) + δ²(1 + 1/τ + 1/η)] (smooth). With κ = 2mLα² (resp. 2L²α²)
  the formula is smallest at τ = δ, η = δ√κ: ρ² = 1 − 2mα + κ(1 + δ)² + 2δ√κ. That point is tried
  first, then a log grid of (τ, η) in [1e-5, 1e2]² (needed when λ_S < 0 there, or when δ = 0 < c);
  the smallest ρ² that passes the check wins.
- ``"bisection"`` (default): feasibility is monotone in ρ² (raising ρ² subtracts a PSD term), so ρ² is
  bisected between 0 and the closed-form value to a relative 1e-9; a trial ρ² is feasible iff the
  minimum over λ ≥ 0 of λ_max(F) is ≤ 0, a convex problem in three variables solved by Nelder–Mead
  (from the last feasible multipliers and one fixed start). NumPy/SciPy only.
- ``"sdp"``: the same minimum of ρ² from an SDP solver through CVXPY (:mod:`.biased_sgd_sdp`).

For the noise floor, H is minimised over the multipliers that certify the found ρ². When δ = c = 0 the
error is identically zero and its row is dropped (otherwise ν would have to grow without bound); then
convex-smooth gives ρ² = 1 − 2mα(1 − Lα), H = 2α²σ*² — the classic SGD bound for α ≤ 1/L. When
δ = 0 < c the best ρ² is only approached as ν → ∞, so H at that ρ² is large: a slightly larger ρ²
buys a much lower floor (the closed form, or the sequential SDP, makes that trade).
Numerically the problem is solved in the congruent form D F D, D = diag(1, 1/α, 1/α), with scaled
multipliers λ_S = α s, λ_G = α² g, ν = α² n, which keeps every entry O(1) for small α.

Deviations from the paper: the paper writes the constraints through generic matrices M (one per
assumption on the f_i) and scales its multipliers differently; the matrix above is our derivation from
the same error model and assumptions, checked numerically, so its multipliers are not the paper's.
The paper's own explicit feasible point does not reduce to ρ² = 1 − 2mα + O(α²) when δ = c = 0
(its Remark 4); the closed form here does, because its τ, η → 0 in that limit.

Reference: B. Hu, P. Seiler, L. Lessard, "Analysis of biased stochastic gradient descent using
sequential semidefinite programs", Mathematical Programming 188:383–408, 2021, arXiv 1711.00987.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from scalopt.core.validate import check_choice, check_nonnegative, check_positive

SMOOTHNESS = ("convex-smooth", "smooth")
METHODS = ("bisection", "closed-form", "sdp")
FEAS_TOL = 1e-12  # relative tolerance of the acceptance test on λ_max(F)
_GRID = np.logspace(-5.0, 2.0, 71)  # τ and η for the closed-form search
_HALVINGS = 40


@dataclass(frozen=True)
class Certificate:
    """Multipliers of (S), (G), (E) that make F ≼ 0 at ``rho2``."""

    lambda_s: float
    lambda_g: float
    nu: float


@dataclass(frozen=True)
class BiasedSGDRate:
    """E‖x_k − x*‖² ≤ ρ^(2k)‖x_0 − x*‖² + noise_floor·(1 − ρ^(2k)); ``str()`` explains it."""

    rho2: float
    rho: float
    H: float
    noise_floor: float  # H / (1 − ρ²), inf when ρ ≥ 1
    certificate: Certificate
    method: str
    converges: bool  # ρ < 1

    def __str__(self) -> str:
        c = self.certificate
        verdict = (
            "CERTIFIED: linear convergence to the noise floor"
            if self.converges
            else ("NOT CERTIFIED: ρ ≥ 1, no contraction for this step size")
        )
        return "\n".join([
            verdict,
            f"  rho^2       = {self.rho2:.6g}   ({self.method})",
            f"  rho         = {self.rho:.6g}",
            f"  H           = {self.H:.6g}   (2 λ_G σ*² + ν c²)",
            f"  noise floor = {self.noise_floor:.6g}   (H / (1 − ρ²), bound on E‖x_k − x*‖² as k → inf)",
            f"  multipliers = λ_S {c.lambda_s:.6g}, λ_G {c.lambda_g:.6g}, ν {c.nu:.6g}",
        ])  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """Validated constants of one certificate problem."""

    m: float
    L: float
    alpha: float
    delta: float
    c: float
    sigma2: float
    smoothness: str

    @property
    def has_error(self) -> bool:
        return self.delta > 0 or self.c > 0


def problem(
    m: float, L: float, alpha: float, delta: float, c: float = 0.0, sigma2: float = 0.0,
    smoothness: str = "convex-smooth",
) -> Problem:  # fmt: skip
    check_positive("m", m)
    check_positive("L", L)
    if m > L:
        raise ValueError(f"m must be <= L (strong convexity below smoothness), got m={m!r}, L={L!r}")
    check_positive("alpha", alpha)
    check_nonnegative("delta", delta)
    check_nonnegative("c", c)
    check_nonnegative("sigma2", sigma2)
    check_choice("smoothness", smoothness, SMOOTHNESS)
    return Problem(float(m), float(L), float(alpha), float(delta), float(c), float(sigma2), smoothness)


def lmi_terms(p: Problem) -> tuple[np.ndarray, ...]:
    """The scaled matrices (V, R, S, G, E) of D F D = V − ρ² R − s S − g G − n E (D = diag(1, 1/α, 1/α))."""
    a, m, L = p.alpha, p.m, p.L
    V = np.ones((3, 3))
    V[0, 1:] = V[1:, 0] = -1.0
    R = np.diag([1.0, 0.0, 0.0])
    S = np.array([[2 * m * a, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    if p.smoothness == "convex-smooth":
        G = np.array([[0.0, -L * a, 0.0], [-L * a, 1.0, 0.0], [0.0, 0.0, 0.0]])
    else:
        G = np.diag([-2 * L * L * a * a, 1.0, 0.0])
    E = np.diag([0.0, -(p.delta**2), 1.0])
    k = 3 if p.has_error else 2  # δ = c = 0: e ≡ 0, drop its row and column
    return tuple(M[:k, :k] for M in (V, R, S, G, E))


def _scale(p: Problem) -> np.ndarray:
    return np.array([p.alpha, p.alpha**2, p.alpha**2])


def lmi_matrix(p: Problem, rho2: float, cert: Certificate) -> np.ndarray:
    """F itself (unscaled, 3×3; 2×2 when δ = c = 0) at ρ² and the multipliers."""
    V, R, S, G, E = lmi_terms(p)
    s, g, n = np.array([cert.lambda_s, cert.lambda_g, cert.nu]) / _scale(p)
    d = np.array([1.0, p.alpha, p.alpha])[: V.shape[0]]
    return np.outer(d, d) * (V - rho2 * R - s * S - g * G - n * E)


def is_certificate(p: Problem, rho2: float, cert: Certificate) -> bool:
    """All multipliers ≥ 0 and λ_max(F) ≤ 1e-12·max(1, ‖F‖)."""
    if min(rho2, cert.lambda_s, cert.lambda_g, cert.nu) < 0:
        return False
    F = lmi_matrix(p, rho2, cert)
    return bool(np.linalg.eigvalsh(F)[-1] <= FEAS_TOL * max(1.0, np.linalg.norm(F, 2)))


def noise_h(p: Problem, cert: Certificate) -> float:
    return 2.0 * cert.lambda_g * p.sigma2 + cert.nu * p.c**2


def _result(p: Problem, rho2: float, cert: Certificate, method: str) -> BiasedSGDRate:
    if not is_certificate(p, rho2, cert):
        raise ArithmeticError(f"internal: the {method} point does not satisfy the LMI (rho2={rho2!r})")
    H = noise_h(p, cert)
    converges = rho2 < 1.0
    floor = H / (1.0 - rho2) if converges else math.inf
    return BiasedSGDRate(rho2, math.sqrt(rho2), H, floor, cert, method, converges)


# -- closed form --------------------------------------------------------------------------------------
def closed_form_point(p: Problem) -> tuple[float, Certificate] | None:
    """The best Young's-inequality point over the (τ, η) grid that passes the check; None if none does."""
    a, m, L, d2 = p.alpha, p.m, p.L, p.delta**2
    if not p.has_error:  # the limit τ, η → 0 is attained exactly once e is dropped
        tau = eta = np.zeros((1, 1))
        nu = np.zeros((1, 1))
    else:
        tau, eta = np.meshgrid(_GRID, _GRID, indexing="ij")
        if p.delta > 0:  # the unconstrained minimiser of the ρ² formula, first in line
            kappa = 2 * m * L * a * a if p.smoothness == "convex-smooth" else 2 * L * L * a * a
            tau = np.append(tau.ravel(), p.delta)
            eta = np.append(eta.ravel(), p.delta * math.sqrt(kappa))
        nu = a * a * (1 + 1 / tau + 1 / eta)
    lam_g = a * a * (1 + tau) + nu * d2
    if p.smoothness == "convex-smooth":
        lam_s = a - L * lam_g
        rho2 = 1 - 2 * m * a + eta + 2 * m * L * lam_g
    else:
        lam_s = np.full_like(lam_g, a)
        rho2 = 1 - 2 * m * a + eta + 2 * L * L * lam_g
    order = np.argsort(rho2, axis=None)
    for idx in order:
        i = np.unravel_index(idx, rho2.shape)
        if lam_s[i] < 0:
            continue
        cert = Certificate(float(lam_s[i]), float(lam_g[i]), float(nu[i]))
        r2 = max(float(rho2[i]), 0.0)
        if is_certificate(p, r2, cert):
            return r2, cert
    return None


# -- bisection ----------------------------------------------------------------------------------------
class _Phi:
    """x ↦ λ_max(D F D) at a fixed ρ², multipliers x = θ² (scaled), minimised by Nelder–Mead."""

    def __init__(self, p: Problem):
        self.V, self.R, self.S, self.G, self.E = lmi_terms(p)
        self.k = 3 if p.has_error else 2  # ν only exists when there is an error term

    def _full(self, theta: np.ndarray) -> np.ndarray:
        x = np.zeros(3)
        x[: self.k] = theta[: self.k] ** 2
        return x

    def matrix(self, rho2: float, x: np.ndarray) -> np.ndarray:
        return self.V - rho2 * self.R - x[0] * self.S - x[1] * self.G - x[2] * self.E

    def value(self, rho2: float, x: np.ndarray) -> float:
        return float(np.linalg.eigvalsh(self.matrix(rho2, x))[-1])

    def minimise(self, rho2: float, starts: list[np.ndarray]) -> tuple[float, np.ndarray]:
        best_f, best_x = math.inf, starts[0]
        for x0 in starts:
            f0 = self.value(rho2, x0)
            if f0 < -1e-9:  # already strictly feasible: no need to optimise
                return f0, x0
            theta0 = np.sqrt(np.maximum(x0[: self.k], 1e-12))
            res = minimize(
                lambda th: self.value(rho2, self._full(th)), theta0, method="Nelder-Mead",
                callback=_stop_when_feasible, options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 500},
            )  # fmt: skip
            if res.fun < best_f:
                best_f, best_x = float(res.fun), self._full(res.x)
            if best_f <= 0:
                break
        return best_f, best_x


def _stop_when_feasible(intermediate_result) -> None:
    """Feasibility is all the bisection asks: stop Nelder–Mead at the first strictly feasible vertex."""
    if intermediate_result.fun < -1e-13:
        raise StopIteration


def _to_cert(p: Problem, x: np.ndarray) -> Certificate:
    s, g, n = (x * _scale(p)).tolist()
    return Certificate(s, g, n if p.has_error else 0.0)


def _from_cert(p: Problem, cert: Certificate) -> np.ndarray:
    return np.array([cert.lambda_s, cert.lambda_g, cert.nu]) / _scale(p)


def _upper_end(p: Problem, phi: _Phi) -> tuple[float, np.ndarray]:
    found = closed_form_point(p)
    if found is not None:
        return found[0], _from_cert(p, found[1])
    x = np.array([1.0, 2.0, 2.0])  # e.g. α > 1/L for convex-smooth: search upwards from ρ² = 1
    for k in range(60):
        rho2 = 2.0**k
        f, x = phi.minimise(rho2, [x, np.array([0.0, 2.0**k, 2.0**k])])
        if f <= 0:
            return rho2, x
    raise ArithmeticError(f"no certificate found for {p}")


def _bisect(p: Problem) -> tuple[float, Certificate]:
    phi = _Phi(p)
    hi, x_hi = _upper_end(p, phi)
    lo = 0.0
    for _ in range(_HALVINGS):
        mid = 0.5 * (lo + hi)
        f, x = phi.minimise(mid, [x_hi, np.array([1.0, 1.0, 10.0])])
        if f <= 0 and is_certificate(p, mid, _to_cert(p, x)):
            hi, x_hi = mid, x
        else:
            lo = mid
        if hi - lo <= 1e-9 * max(hi, 1e-300):
            break
    return hi, _lowest_h(p, phi, hi, x_hi)


def _lowest_h(p: Problem, phi: _Phi, rho2: float, x0: np.ndarray) -> Certificate:
    """Among multipliers certifying ρ², the one with the smallest H (SLSQP from a certifying point)."""
    start = _to_cert(p, x0)
    weights = np.array([0.0, 2 * p.sigma2, p.c**2 if p.has_error else 0.0]) * _scale(p)
    if not weights.any():
        return start
    res = minimize(
        lambda x: float(weights @ x), x0, method="SLSQP", bounds=[(0, None)] * 3,
        constraints=[{"type": "ineq", "fun": lambda x: -phi.value(rho2, x)}],
        options={"ftol": 1e-15, "maxiter": 500},
    )  # fmt: skip
    cand = _to_cert(p, np.maximum(res.x, 0.0))
    if is_certificate(p, rho2, cand) and noise_h(p, cand) < noise_h(p, start):
        return cand
    return start


# -- public -------------------------------------------------------------------------------------------
def biased_sgd_rate(
    m: float, L: float, alpha: float, delta: float, c: float = 0.0, sigma2: float = 0.0,
    smoothness: str = "convex-smooth", method: str = "bisection",
) -> BiasedSGDRate:  # fmt: skip
    """Certified rate ρ², ρ, noise floor and multipliers of biased SGD with step size ``alpha``.

    ``m``: strong convexity of f; ``L``: smoothness of each f_i; ``delta``, ``c``: relative and absolute
    gradient-error bounds; ``sigma2``: σ*² = (1/n) Σ‖∇f_i(x*)‖²; ``smoothness``: "convex-smooth" (each f_i
    convex and L-smooth) or "smooth" (each f_i L-smooth); ``method``: "bisection" (default, NumPy/SciPy),
    "closed-form" or "sdp" (CVXPY, ``pip install scalopt[sdp]``).
    """
    check_choice("method", method, METHODS)
    p = problem(m, L, alpha, delta, c, sigma2, smoothness)
    if method == "sdp":
        from scalopt.theory.biased_sgd_sdp import sdp_point

        rho2, cert = sdp_point(p)
    elif method == "closed-form":
        found = closed_form_point(p)
        if found is None:
            raise ValueError(
                f"no closed-form point exists for alpha={alpha!r} (convex-smooth needs λ_S = α − Lλ_G ≥ 0,"
                " roughly alpha < 1/L); use method='bisection'"
            )
        rho2, cert = found
    else:
        rho2, cert = _bisect(p)
    return _result(p, rho2, cert, method)


def max_step_size(
    m: float, L: float, delta: float, c: float = 0.0, smoothness: str = "convex-smooth"
) -> float:
    """The largest α with a certified ρ < 1 (0.0 when none), to a relative 1e-6.

    α certifies iff min over multipliers of λ_max(D F D) at ρ² = 1 is < 0. The set of such α is an
    interval: in the Schur form [[−N, v], [vᵀ, −1]] ≼ 0 the LMI is jointly linear in (α, ρ², λ_S, λ_G,
    ν), so the smallest certified ρ² is a convex function of α. Found by bisection on [1e-6·2/L, 2/L];
    the classic δ = 0 bounds are α < 1/L (convex-smooth) and α < m/L² (smooth).
    """
    p0 = problem(m, L, 1.0 / L, delta, c, 0.0, smoothness)
    last = [np.array([1.0, 1.0, 1.0])]  # multipliers (scaled) of the last α that contracted

    def contracts(alpha: float) -> bool:
        p = problem(p0.m, p0.L, alpha, p0.delta, p0.c, 0.0, p0.smoothness)
        found = closed_form_point(p)
        if found is not None and found[0] < 1.0:
            last[0] = _from_cert(p, found[1])
            return True
        f, x = _Phi(p).minimise(1.0 - 1e-12, [last[0], np.array([1.0, 1.0, 10.0])])
        if f < -1e-12:
            last[0] = x
        return f < -1e-12

    lo, hi = 0.0, 2.0 / L
    if not contracts(hi * 1e-6):
        return 0.0
    lo = hi * 1e-6
    while hi - lo > 1e-6 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if contracts(mid) else (lo, mid)
    return lo
