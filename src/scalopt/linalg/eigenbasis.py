"""Eigenbases of symmetric PSD matrices, batched: an exact one (eigh), or one warm-started refresh.

For a stack H (n, d, d) of symmetric PSD matrices and, where a previous basis exists, a stack Q of
orthogonal matrices:

    exact (no previous basis):   H = Q diag(λ) Qᵀ  (``torch.linalg.eigh``); the columns of Q
    refresh (warm start), the authors' ``get_orthogonal_matrix_QR`` of SOAP:
        λ̃_j = (Qᵀ H Q)_jj                          estimated eigenvalues
        σ   = argsort(λ̃, descending)                so Gram–Schmidt starts from the largest
        Q'  = QR(H·Q[:, σ]).Q                       one power iteration, then orthonormalize
        Q_new[:, σ] = Q'                            columns put back in Q's order

Putting the columns back in the order of the previous basis is what keeps a per-coordinate
statistic aligned with its basis vector without moving the statistic: the authors' code instead
keeps Q' and reorders the statistic by σ, which is the same preconditioner with relabelled
coordinates. If H is fixed, repeated refreshes are a block power (subspace) iteration and converge
to H's eigenbasis (up to column signs and order) at the rate of the eigenvalue gaps.

Numerics: computed in ``dtype`` (float32 by default, TF32 off); a matrix whose solve raises or
returns non-finite values is retried once in float64; one that still fails is reported in
``RootResult.ok``/``reasons`` (the result row is then meaningless), never raised. Column signs are
whatever the solvers return (a sign flip of a basis vector changes nothing for a method that works
with squared coordinates and rotates back).

Reference: N. Vyas, D. Morwani, R. Zhao, I. Shapira, D. Brandfonbrener, L. Janson, S. Kakade, "SOAP:
Improving and Stabilizing Shampoo using Adam", ICLR 2025, arXiv 2409.11321 (Algorithm 4 and the
authors' code).
"""

from __future__ import annotations

import torch

from scalopt.linalg.roots import RootResult, _no_tf32, finite_rows


def _refresh(h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """One power iteration from q, columns sorted by estimated eigenvalue, QR, columns put back."""
    est = torch.einsum("nij,nik,nkj->nj", q, h, q)
    index = torch.argsort(est, dim=-1, descending=True).unsqueeze(1).expand_as(q)
    qn = torch.linalg.qr(torch.bmm(h, torch.gather(q, 2, index)))[0]
    return torch.empty_like(qn).scatter_(2, index, qn)


def _solve(h: torch.Tensor, q: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """The bases of a stack in its dtype (may raise, may hold non-finite rows)."""
    if bool(first.all()):
        return torch.linalg.eigh(h)[1]
    if not bool(first.any()):
        return _refresh(h, q)
    out = torch.empty_like(h)
    out[first] = torch.linalg.eigh(h[first])[1]
    out[~first] = _refresh(h[~first], q[~first])
    return out


def _attempt(
    h: torch.Tensor, q: torch.Tensor, first: torch.Tensor
) -> tuple[torch.Tensor, list[str | None], BaseException | None]:
    """``_solve`` on the stack; if it raises, matrix by matrix to isolate the failing ones."""
    try:
        x = _solve(h, q, first)
        return x, [None if ok else f"non-finite basis in {h.dtype}" for ok in finite_rows(x).tolist()], None
    except Exception as exc:  # noqa: BLE001 - the solver's failure is data here
        if h.shape[0] == 1:
            return torch.full_like(h, float("nan")), [f"{type(exc).__name__}: {exc}"], exc
        outs, reasons, last = [], [], None
        for j in range(h.shape[0]):
            xj, rj, ej = _attempt(h[j : j + 1], q[j : j + 1], first[j : j + 1])
            outs.append(xj)
            reasons.extend(rj)
            last = ej or last
        return torch.cat(outs), reasons, last


def eigenbasis(
    h: torch.Tensor, q: torch.Tensor, first: torch.Tensor, *, dtype: torch.dtype = torch.float32
) -> RootResult:
    """Bases of the stack ``h`` (n, d, d): exact where ``first[j]``, else refreshed from ``q[j]``.

    Returns them in ``h``'s dtype as ``RootResult.roots``; failed rows are reported in ``ok``."""
    if h.dim() != 3 or h.shape[-1] != h.shape[-2] or q.shape != h.shape:
        raise ValueError(f"h and q must be stacks of square matrices (n, d, d), got {h.shape}, {q.shape}")
    n = h.shape[0]
    first = first.to(device=h.device, dtype=torch.bool).reshape(n)
    out = torch.empty_like(h)
    ok, reasons = [False] * n, ["not attempted"] * n
    error: BaseException | None = None
    todo = list(range(n))
    with _no_tf32():
        for attempt in [dtype] if dtype == torch.float64 else [dtype, torch.float64]:
            if not todo:
                break
            if len(todo) == n:  # the first attempt: the whole stack
                x, why, exc = _attempt(h.to(attempt), q.to(attempt), first)
            else:
                index = torch.tensor(todo, device=h.device)
                x, why, exc = _attempt(
                    h.index_select(0, index).to(attempt), q.index_select(0, index).to(attempt), first[index]
                )
            if len(todo) == n and exc is None and all(w is None for w in why):  # the common case
                return RootResult(x.to(h.dtype), [True] * n, [None] * n, None)
            error = exc or error
            still = []
            for k, j in enumerate(todo):
                if why[k] is None:
                    out[j], ok[j], reasons[j] = x[k].to(h.dtype), True, None
                else:
                    reasons[j] = why[k]
                    still.append(j)
            todo = still
    return RootResult(out, ok, list(reasons), error)
