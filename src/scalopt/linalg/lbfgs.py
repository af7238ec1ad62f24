"""L-BFGS numerics: the two-loop recursion and Powell-type damping of a curvature pair.

Two-loop recursion (Nocedal, "Updating quasi-Newton matrices with limited storage", Math. Comp.
35(151), 1980; Nocedal & Wright, "Numerical Optimization", 2nd ed., Algorithm 7.4). Given pairs
(s_i, y_i), i = 1..m oldest to newest, ρ_i = 1/(s_iᵀy_i) and H0 = γ·I, it returns r = H·q for the
inverse-Hessian approximation

    H ← (I − ρ_i s_i y_iᵀ) H (I − ρ_i y_i s_iᵀ) + ρ_i s_i s_iᵀ      i = 1..m, from H = γ·I

without forming H:

    for i = m..1:  a_i = ρ_i s_iᵀq ;  q ← q − a_i y_i
    r = γ·q
    for i = 1..m:  b = ρ_i y_iᵀr ;  r ← r + (a_i − b) s_i

Cost 4·m·n multiply-adds for vectors of length n; no host synchronisation (the scalars stay tensors).
Usual choice γ = s_mᵀy_m / y_mᵀy_m (the newest pair); then H y_m = s_m (the secant equation).

Powell-type damping against B0 = I (the form of Niu et al.'s mL-BFGS code): with τ = sᵀy/(sᵀs + 1e-12),

    φ = (1 − τ_lo)/(1 − τ)   if τ < τ_lo          τ_lo = 0.01
        (τ_hi − 1)/(τ − 1)   if τ > τ_hi          τ_hi = 1.5
        1                    otherwise
    φ ← min(φ, 1 − damping) ;   y ← φ·y + (1 − φ)·s

so the damped pair has sᵀy/sᵀs ∈ [τ_lo, τ_hi] (positive curvature); ``damping`` > 0 always mixes in
at least that fraction of s. The branch needs τ on the host: one synchronisation per pair.
"""

from __future__ import annotations

import torch

TAU_LOW = 0.01
TAU_HIGH = 1.5


def two_loop(
    q: torch.Tensor, s: torch.Tensor, y: torch.Tensor, rho: torch.Tensor, gamma: torch.Tensor | float
) -> torch.Tensor:
    """H·q for the L-BFGS matrix of the pairs (rows of ``s``, ``y``, oldest first), as a new vector.

    ``q`` has shape (n,), ``s`` and ``y`` (m, n), ``rho`` (m,) with ρ_i = 1/(s_iᵀy_i), ``gamma``
    the scale of H0 = γ·I. With m = 0 the result is γ·q."""
    if q.dim() != 1 or s.dim() != 2 or s.shape != y.shape or s.shape[1:] != q.shape:
        raise ValueError(
            f"two_loop needs q of shape (n,) and s, y of shape (m, n); got q {tuple(q.shape)}, "
            f"s {tuple(s.shape)}, y {tuple(y.shape)}"
        )
    m = s.shape[0]
    q = q.clone()
    a = []
    for i in reversed(range(m)):
        a_i = rho[i] * torch.dot(s[i], q)
        q.addcmul_(y[i], a_i, value=-1.0)
        a.append(a_i)
    a.reverse()
    r = q.mul_(gamma)
    for i in range(m):
        b = rho[i] * torch.dot(y[i], r)
        r.addcmul_(s[i], a[i] - b)
    return r


def damp_pair(s: torch.Tensor, y: torch.Tensor, damping: float) -> tuple[torch.Tensor, float, float]:
    """(damped y, τ before, φ): Powell-type damping of the pair (s, y) against B0 = I (new tensor)."""
    tau = float(torch.dot(s, y) / (torch.dot(s, s) + 1e-12))
    if tau < TAU_LOW:
        phi = (1.0 - TAU_LOW) / (1.0 - tau)
    elif tau > TAU_HIGH:
        phi = (TAU_HIGH - 1.0) / (tau - 1.0)
    else:
        phi = 1.0
    phi = min(phi, 1.0 - damping)
    return torch.add(y.mul(phi), s, alpha=1.0 - phi), tau, phi
