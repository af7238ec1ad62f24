"""Inverse p-th roots of symmetric positive semi-definite matrices, batched, with failure reporting.

Both methods take a stack A of n same-sized d×d symmetric PSD matrices (n, d, d), an integer p ≥ 1
and a ridge ε (one number, or one per matrix), and return X ≈ (A + ε·I)^(−1/p) for each matrix:

eigh (eigendecomposition; Shi et al. 2023's default):

    A = Q diag(λ) Qᵀ ;  λ ← λ − min(min_j λ_j, 0) + ε ;  X = Q diag(λ^(−1/p)) Qᵀ

    the shift lifts eigenvalues that roundoff made negative (large eigenvalues cannot absorb ε).

newton (coupled Newton iteration; Guo & Higham 2006, Higham "Functions of Matrices" eq. 7.18):

    λ_max by power iteration (100 iterations, tol 1e-6);  A ← A + max(ε, 1e-6·max(λ_max, 1e-6))·I
    z = (1+p)/(2‖A‖_F);  X = z^(1/p)·I;  M = z·A;  err = max|M − I|
    while err > tol and iterations < 100:
        T = ((p+1)·I − M)/p;  X' = X·T;  M' = T^p·M;  err' = max|M' − I|
        if err' > 1.2·err: stop, keep X          (the error may rise before it falls; 1.2 bounds it)
        X, M, err = X', M', err'
    failure if the final err ≥ 0.1

    The relative ridge 1e-6·λ_max (optax's) keeps the iteration convergent when ε is tiny; with
    ε ≥ 1e-6·λ_max both methods compute (A + ε·I)^(−1/p).

Numerics: the computation runs in ``dtype`` (float32 by default; TF32 matmuls are off); a matrix
whose solve raises or returns non-finite values is retried once in float64. A matrix that still
fails is reported, not raised: ``RootResult.ok`` is False for it, ``reasons`` says why and
``error`` holds the last exception the solver raised (for chaining). The caller decides the policy
(Shampoo keeps the previous root). Non-finite input is the caller's to check: ``nonfinite_report``
describes it.

The solver is looked up as ``torch.linalg.eigh`` at call time, so tests can monkeypatch it.

References: R. Anil, V. Gupta, T. Koren, K. Regan, Y. Singer, "Scalable Second Order Optimization
for Deep Learning", arXiv 2002.09018; H.-M. Shi et al., "A Distributed Data-Parallel PyTorch
Implementation of the Distributed Shampoo Optimizer", arXiv 2309.06497; C.-H. Guo, N. J. Higham,
"A Schur–Newton method for the matrix p-th root and its inverse", SIAM J. Matrix Anal. Appl. 2006.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

ROOT_METHODS = ("eigh", "newton")
NEWTON_TOL = 1e-6
NEWTON_MAX_ITERS = 100
NEWTON_FAILURE_THRESHOLD = 0.1
NEWTON_RIDGE = 1e-6
#: fixed counts of the sync-free variant: from z·A's smallest eigenvalue (≥ ~1e-7 with the 1e-6
#: relative ridge and d ≤ 4096) the iteration needs ~18 steps to reach the quadratic phase at p = 4
NEWTON_FIXED_ITERS = 24
NEWTON_FIXED_POWER_ITERS = 20


@dataclass
class RootResult:
    """Roots of a stack: ``roots[j]`` is valid where ``ok[j]``; ``reasons[j]`` explains a failure."""

    roots: torch.Tensor
    ok: list[bool]
    reasons: list[str | None] = field(default_factory=list)
    error: BaseException | None = None


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _ridge(eps: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(eps, torch.Tensor):
        return eps.to(device=like.device, dtype=like.dtype).reshape(n)
    return torch.full((n,), float(eps), device=like.device, dtype=like.dtype)


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Per-matrix (or per-vector) finiteness of a stack, as a bool tensor (n,).

    One reduction pass: a sum is finite when every entry is (NaN and Inf propagate); only a
    non-finite sum, which overflow can also cause, is checked entry by entry."""
    ok = torch.isfinite(x.flatten(1).sum(1))
    if not bool(ok.all()):
        ok = torch.isfinite(x).flatten(1).all(1)
    return ok


def _rowwise_pow(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """x^exponent one row at a time: a vectorized pow rounds differently in a kernel's vector body and
    its scalar tail, so a whole-batch call would make a matrix's root depend on its batch neighbours
    (distributed Shampoo batches different blocks on each rank and must match one process bitwise)."""
    return torch.stack([row.pow(exponent) for row in x.unbind(0)])


def _eigh_root(a: torch.Tensor, p: int, eps: torch.Tensor) -> torch.Tensor:
    lam, q = torch.linalg.eigh(a)
    if not bool(finite_rows(lam).all()) or not bool(finite_rows(q).all()):
        return torch.full_like(a, float("nan"))
    lam = lam - lam.amin(-1, keepdim=True).clamp(max=0) + eps.unsqueeze(-1)
    return (q * _rowwise_pow(lam, -1.0 / p).unsqueeze(-2)) @ q.mT


def _power_iteration(a: torch.Tensor) -> torch.Tensor:
    """λ_max of each symmetric PSD matrix (a deterministic start vector: no RNG is touched)."""
    n, d, _ = a.shape
    v = torch.linspace(1.0, 2.0, d, dtype=a.dtype, device=a.device).expand(n, d).unsqueeze(-1)
    v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
    lam = torch.zeros(n, dtype=a.dtype, device=a.device)
    active = torch.ones(n, dtype=torch.bool, device=a.device)
    for _ in range(NEWTON_MAX_ITERS):
        # each matrix stops at its own convergence, so its λ_max does not depend on its batch neighbours
        w = a @ v
        new = torch.linalg.vector_norm(w, dim=1).squeeze(-1)
        v = torch.where(active.view(n, 1, 1), w / new.clamp_min(torch.finfo(a.dtype).tiny).view(n, 1, 1), v)
        converged = (new - lam).abs() <= NEWTON_TOL * new
        lam = torch.where(active, new, lam)
        active = active & ~converged
        if not bool(active.any()):
            break
    return lam


def _matrix_power(t: torch.Tensor, p: int) -> torch.Tensor:
    result: torch.Tensor | None = None
    base = t
    while p:
        if p & 1:
            result = base if result is None else result @ base
        p >>= 1
        if p:
            base = base @ base
    assert result is not None
    return result


def _newton_root(a: torch.Tensor, p: int, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled Newton for a stack; returns (X, final error per matrix)."""
    n, d, _ = a.shape
    if d == 1:
        x = _rowwise_pow((a.reshape(n) + eps).reshape(n, 1), -1.0 / p).reshape(n, 1, 1)
        return x, torch.zeros(n, dtype=a.dtype, device=a.device)
    lam_max = _power_iteration(a)
    ridge = torch.maximum(eps, NEWTON_RIDGE * lam_max.clamp_min(1e-6))
    eye = torch.eye(d, dtype=a.dtype, device=a.device).expand(n, d, d)
    a = a + ridge.view(n, 1, 1) * eye
    z = (1.0 + p) / (2.0 * torch.linalg.matrix_norm(a))
    x = _rowwise_pow(z.reshape(n, 1), 1.0 / p).view(n, 1, 1) * eye
    m = z.view(n, 1, 1) * a
    err = (m - eye).abs().amax((-2, -1))
    active = err > NEWTON_TOL
    for _ in range(NEWTON_MAX_ITERS):
        if not bool(active.any()):
            break
        t = ((p + 1.0) * eye - m) / p
        x_new = x @ t
        m_new = _matrix_power(t, p) @ m
        err_new = (m_new - eye).abs().amax((-2, -1))
        take = active & (err_new <= 1.2 * err)
        sel = take.view(n, 1, 1)
        x = torch.where(sel, x_new, x)
        m = torch.where(sel, m_new, m)
        err = torch.where(take, err_new, err)
        active = take & (err > NEWTON_TOL)
    return x, err


def newton_root_fixed(
    a: torch.Tensor, p: int, eps: torch.Tensor, iterations: int = NEWTON_FIXED_ITERS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled Newton as above with fixed counts and no host synchronization: matmuls and element-wise
    operations only (for a side CUDA stream). λ_max from ``NEWTON_FIXED_POWER_ITERS`` power iterations;
    ``iterations`` Newton steps, each matrix keeping its last accepted iterate (err' ≤ 1.2·err), so the
    same matrix gives the same root in any batch. Returns (X, ok) with ok = finite and final err < 0.1
    (a bool tensor on ``a``'s device); no float64 retry (a failed matrix is reported, not retried)."""
    n, d, _ = a.shape
    eye = torch.eye(d, dtype=a.dtype, device=a.device).expand(n, d, d)
    v = torch.linspace(1.0, 2.0, d, dtype=a.dtype, device=a.device).expand(n, d).unsqueeze(-1)
    for _ in range(NEWTON_FIXED_POWER_ITERS):
        w = a @ v
        v = w / torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    lam_max = torch.linalg.vector_norm(a @ v, dim=1).reshape(n)
    a = a + torch.maximum(eps, NEWTON_RIDGE * lam_max.clamp_min(1e-6)).view(n, 1, 1) * eye
    z = (1.0 + p) / (2.0 * torch.linalg.matrix_norm(a))
    x = z.pow(1.0 / p).view(n, 1, 1) * eye
    m = z.view(n, 1, 1) * a
    err = (m - eye).abs().amax((-2, -1))
    active = torch.ones(n, dtype=torch.bool, device=a.device)
    for _ in range(iterations):
        t = ((p + 1.0) * eye - m) / p
        x_new, m_new = x @ t, _matrix_power(t, p) @ m
        err_new = (m_new - eye).abs().amax((-2, -1))
        active = active & (err_new <= 1.2 * err)
        sel = active.view(n, 1, 1)
        x, m = torch.where(sel, x_new, x), torch.where(sel, m_new, m)
        err = torch.where(active, err_new, err)
    ok = torch.isfinite(x).flatten(1).all(1) & (err < NEWTON_FAILURE_THRESHOLD)
    return x, ok


def _solve(a: torch.Tensor, p: int, eps: torch.Tensor, method: str) -> tuple[torch.Tensor, list[str | None]]:
    """Roots of a stack in its dtype; a failed matrix gets NaN and a reason (never raises)."""
    reasons: list[str | None] = [None] * a.shape[0]
    if method == "eigh":
        x = _eigh_root(a, p, eps)
        bad = ~finite_rows(x)
        for j in bad.nonzero().flatten().tolist():
            reasons[j] = f"non-finite eigendecomposition in {a.dtype}"
        return x, reasons
    x, err = _newton_root(a, p, eps)
    bad = ~finite_rows(x) | ~(err < NEWTON_FAILURE_THRESHOLD)
    for j in bad.nonzero().flatten().tolist():
        reasons[j] = f"coupled Newton did not converge in {a.dtype} (error {float(err[j]):.3g})"
    x = torch.where(bad.view(-1, 1, 1), torch.full_like(x, float("nan")), x)
    return x, reasons


def _solve_isolating(
    a: torch.Tensor, p: int, eps: torch.Tensor, method: str
) -> tuple[torch.Tensor, list[str | None], BaseException | None]:
    """``_solve`` on the whole stack; if the solver raises, one matrix at a time to isolate it."""
    try:
        x, reasons = _solve(a, p, eps, method)
        return x, reasons, None
    except Exception as exc:  # noqa: BLE001 - the solver's failure is data here
        if a.shape[0] == 1:
            return torch.full_like(a, float("nan")), [f"{type(exc).__name__}: {exc}"], exc
        last: BaseException | None = None
        outs, reasons = [], []
        for j in range(a.shape[0]):
            xj, rj, ej = _solve_isolating(a[j : j + 1], p, eps[j : j + 1], method)
            outs.append(xj)
            reasons.extend(rj)
            last = ej or last
        return torch.cat(outs), reasons, last


def inverse_root(
    a: torch.Tensor,
    p: int,
    eps: float | torch.Tensor = 0.0,
    *,
    method: str = "eigh",
    dtype: torch.dtype = torch.float32,
) -> RootResult:
    """(A_j + ε_j·I)^(−1/p) for a stack A (n, d, d) of symmetric PSD matrices, in ``dtype``.

    Matrices that fail in ``dtype`` are retried in float64; the result has ``a``'s dtype.
    """
    if method not in ROOT_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, ROOT_METHODS))}, got {method!r}")
    if a.dim() != 3 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"a must be a stack of square matrices (n, d, d), got shape {tuple(a.shape)}")
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise ValueError(f"p must be an integer >= 1, got {p!r}")
    n = a.shape[0]
    with _no_tf32():
        x, why, error = _solve_isolating(a.to(dtype), p, _ridge(eps, n, a).to(dtype), method)
        if all(w is None for w in why) and bool(finite_rows(x).all()):  # the common case: all succeeded
            return RootResult(x.to(a.dtype), [True] * n, [None] * n, error)
        return _retry(a, p, eps, method, dtype, (x, why, error))


def _retry(
    a: torch.Tensor,
    p: int,
    eps: float | torch.Tensor,
    method: str,
    dtype: torch.dtype,
    first: tuple[torch.Tensor, list[str | None], BaseException | None],
) -> RootResult:
    """Matrix by matrix bookkeeping of the attempt in ``dtype`` (``first``) and the float64 retry."""
    n = a.shape[0]
    out = torch.empty_like(a)
    ok = [False] * n
    reasons: list[str | None] = ["not attempted"] * n
    error: BaseException | None = None
    todo = list(range(n))
    attempts = [dtype] if dtype == torch.float64 else [dtype, torch.float64]
    with _no_tf32():
        for attempt in attempts:
            if not todo:
                break
            if attempt is dtype:
                x, why, exc = first
            else:
                index = torch.tensor(todo, device=a.device)
                sub = a.index_select(0, index).to(attempt)
                x, why, exc = _solve_isolating(sub, p, _ridge(eps, n, sub)[index], method)
            error = exc or error
            good = finite_rows(x).tolist()
            still = []
            for k, j in enumerate(todo):
                if good[k] and why[k] is None:
                    out[j] = x[k].to(a.dtype)
                    ok[j], reasons[j] = True, None
                else:
                    reasons[j] = why[k] or f"non-finite root in {attempt}"
                    still.append(j)
            todo = still
    return RootResult(out, ok, reasons, error)


def nonfinite_report(x: torch.Tensor) -> str:
    """min/max of the finite entries and NaN/Inf counts of a tensor, for error messages."""
    nan = int(torch.isnan(x).sum())
    inf = int(torch.isinf(x).sum())
    finite = x[torch.isfinite(x)]
    if finite.numel():
        span = f"finite entries in [{float(finite.min()):.3g}, {float(finite.max()):.3g}]"
    else:
        span = "no finite entries"
    return f"{nan} NaN, {inf} Inf of {x.numel()} entries, {span}"
