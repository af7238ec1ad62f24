"""SOAP: Adam in the eigenbasis of Shampoo's factors (``Shampoo(..., eigenvalue_correction=True)``).

Shampoo's factors L, R (one per dim of a block) are kept as usual; instead of their inverse roots,
their eigenvectors Q_i define a rotation of the block, and Adam runs on the rotated coordinates:
its second moment V lives in the eigenbasis ("eigenvalue correction": V re-estimates the scales
Shampoo would read off the factors' eigenvalues), its first moment M in the original space.

For a block W of order k (a matrix: Q_1 = Q_L, Q_2 = Q_R) with gradient G at its step t (1-based),
τ = t − 1 its Adam step, x ×_i A the product of dim i of x with A (a matrix: A_1 x A_2ᵀ):

    t = 1:   H_i ← statistics of G_1;  Q_i ← eigh(H_i) (installed for step 2);  W is not moved
    t ≥ 2:
        M   ← β1·M + (1−β1)·G                                  original space
        G'  = G ×_1 Q_1ᵀ … ×_k Q_kᵀ ;  M' = M ×_1 Q_1ᵀ … ×_k Q_kᵀ  (a matrix: Q_Lᵀ G Q_R)
        V   ← β2·V + (1−β2)·G'⊙G'                              eigenbasis
        N'  = (M'/(1−β1^τ)) / (√(V/(1−β2^τ)) + ε)
        N   = N' ×_1 Q_1 … ×_k Q_k                             back (a matrix: Q_L N' Q_Rᵀ)
        W   ← W − lr·(N + wd·W)                                 (decoupled decay; see shampoo.py)
    every step:  H_i ← β_s·H_i + (1−β_s)·G_(i) G_(i)ᵀ             (Shampoo's statistics, own β)
    refresh when τ ≥ 1 and τ mod f = 0, from the H_i of that step, one power iteration + QR
    warm-started from the current basis (``scalopt.linalg.eigenbasis``):
        λ̃ = diag(Q_iᵀ H_i Q_i);  σ = argsort(λ̃) descending;  Q_i ← QR(H_i Q_i[:, σ])
    installed at the start of the next step (with ``async_roots``: f steps later, computed on the
    background thread meanwhile; the first basis always at step 2).

Graft-only parameters (0-D, vectors unless ``precondition_1d``, any dim > ``skip_dim``) run Adam
with the same β1, β2, ε from their step 1: the rule above with Q = I and τ = t.

Symbols and arguments: β1, β2 = ``betas``; β_s = ``shampoo_beta`` (None: β2); ε = ``eps`` (Adam's
ε here, not a ridge; None gives 1e-8); f = ``precondition_frequency``; wd = ``weight_decay``;
``block_size``, ``skip_dim``, ``merge_dims``, ``precondition_1d`` block as for Shampoo;
``root_dtype`` is the dtype of eigh and QR (float64 retry for a failed matrix); ``grafting`` must
be None and ``start_preconditioning_step`` None, ``root_method`` "eigh" (ValueError otherwise).
The basis Q_i of block b is stored where Shampoo stores a root: ``"block{b}.root{i}"``; V is
``"block{b}.exp_avg_sq"``, M ``"block{b}.exp_avg"``.

Defaults. The registry entry ``soap`` takes the paper's language-model setting (the authors'
code's defaults): lr 3e-3, betas (0.95, 0.95), shampoo_beta = β2 (the authors' −1), eps 1e-8, f 10,
weight decay 0.01 decoupled. ``Shampoo(eigenvalue_correction=True, grafting=None)`` keeps Shampoo's
own defaults (lr 1e-3, betas (0.9, 0.999), f 20) with eps 1e-8 and shampoo_beta = β2. Blocks of
``block_size`` 1024 where the authors precondition whole dims up to 10000.

Deviations from the authors' code, and why:
- Re-ordering: the authors keep QR's output (sorted by λ̃) and re-order V by σ; here QR's columns
  are put back in the order of the previous basis and V stays as it is. Same preconditioner,
  relabelled coordinates (the float64 oracle re-orders V and matches); V then needs no move at
  install time, so an asynchronous basis installs like a root.
- ε is added to √V̂ (bias-corrected, torch.optim.Adam's convention) where the authors add it to
  √V before the bias correction (their effective ε is ε·√(1−β2^τ)); with Q = I this is exactly
  torch's AdamW. The two agree once β2^τ is small (≈ 60 steps at β2 = 0.95).
- First step: the authors leave every parameter unmoved at step 1; here only the preconditioned
  blocks wait for their first basis (their decoupled decay still applies), graft-only parameters
  step from step 1.
- Dimensions: the authors rotate the other dims of a tensor with one dim > max_precond_dim; here a
  tensor with a dim > ``skip_dim`` is not rotated at all (Shampoo's blocking), and dims >
  ``block_size`` are cut into blocks with their own bases (block-diagonal, as Shampoo).
- A failed eigh/QR (float64 retry included) keeps the previous basis (identity before the first
  success: Adam in the original coordinates) and warns; more than 3 consecutive failing refresh
  steps raise (Shampoo's policy). The authors fall back to float64 and otherwise raise.
- No ``normalize_grads``, no ``data_format`` (channels-last) option; merging dims scans from the
  last dim (Shampoo's ``merge_dims``), the authors' from the first.

Reference: N. Vyas, D. Morwani, R. Zhao, I. Shapira, D. Brandfonbrener, L. Janson, S. Kakade,
"SOAP: Improving and Stabilizing Shampoo using Adam", ICLR 2025, arXiv 2409.11321 (Algorithms 3
and 4; the authors' code fixes the schedule, the re-ordering and the defaults above).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from scalopt.linalg.eigenbasis import eigenbasis
from scalopt.optim.shampoo.preconditioner import DiagGroup, Pending, ShapeGroup, step_of
from scalopt.optim.shampoo.refresh import RootRefresher, Slot, collect
from scalopt.transforms import adam_kernel

ADAM_EPS = 1e-8  # eps=None with eigenvalue_correction


def check_options(*, grafting: Any, start: Any, root_method: str, betas: Any = None) -> None:
    """The options that must take one value with eigenvalue_correction=True (ValueError otherwise)."""
    if grafting is not None:
        raise ValueError(
            f"grafting must be None with eigenvalue_correction=True (Adam in the eigenbasis sets "
            f"the step size itself), got grafting={grafting!r}"
        )
    if start is not None:
        raise ValueError(
            f"start_preconditioning_step must be None with eigenvalue_correction=True (the first basis "
            f"is computed at a block's first step), got {start!r}"
        )
    if root_method != "eigh":
        raise ValueError(
            f"root_method must be 'eigh' with eigenvalue_correction=True (bases come from eigh and QR, "
            f"not from roots), got {root_method!r}"
        )
    if betas is not None and not betas[1] < 1.0:
        raise ValueError(
            f"betas[1] must be < 1 with eigenvalue_correction=True (it is Adam's β2), got {betas[1]!r}"
        )


def rotate(x: torch.Tensor, bases: list[torch.Tensor], back: bool = False) -> torch.Tensor:
    """x ×_1 Q_1ᵀ … ×_k Q_kᵀ (``back``: ×_i Q_i) for a stack x (..., n, d_1, …, d_k), bases (n, d_i, d_i).

    Each product contracts the leading block dim and puts the result last, so after k products the
    dims are back in order."""
    k = len(bases)
    lead, shape = x.shape[: x.dim() - k], x.shape[x.dim() - k :]
    y = x
    for d, q in zip(shape, bases):
        y = torch.matmul(y.reshape(*lead, d, -1).mT, q.mT if back else q)
    return y.reshape(x.shape)


def accumulate(
    shape_groups: list[ShapeGroup], diag: list[DiagGroup], g: list[torch.Tensor], group: dict[str, Any]
) -> tuple[list[torch.Tensor], list[float], list[torch.Tensor]]:
    """M ← β1·M + (1−β1)·G and V ← β2·V + (1−β2)·G'² per unit; returns (M', c1, V) with M' the
    first moment in the eigenbasis (M itself for graft-only units) and c1 = 1/(1−β1^τ); c1 = 0
    marks a block at its first step (no basis yet: no Adam step)."""
    beta1, beta2 = group["betas"]
    units: list[Any] = [*shape_groups, *diag]
    n_sg = len(shape_groups)
    live = [k for k, u in enumerate(units) if k >= n_sg or u.t > 1]
    m, v = list(g), [u.buffer("exp_avg_sq") for u in units]
    if beta1 > 0 and live:
        bufs = [units[k].buffer("exp_avg") for k in live]
        torch._foreach_lerp_(bufs, [g[k] for k in live], 1.0 - beta1)  # before M is rotated
        for k, b in zip(live, bufs):
            m[k] = b
    x = list(g)  # the coordinates V is accumulated from
    for k in live:
        if k >= n_sg:
            continue
        sg = shape_groups[k]
        if beta1 > 0:
            both = rotate(torch.stack([g[k], m[k]]).to(sg.sdtype), sg.roots)
            x[k], m[k] = both[0].to(sg.dtype), both[1]
        else:
            m[k] = rotate(g[k].to(sg.sdtype), sg.roots)
            x[k] = m[k].to(sg.dtype)
    if live:
        adam_kernel.moments_(None, [v[k] for k in live], [x[k] for k in live], beta1, beta2)
    c1 = [0.0] * len(units)
    for k in live:
        tau = step_of(units[k]) - (1 if k < n_sg else 0)
        c1[k] = 1.0 / (1.0 - beta1**tau) if beta1 > 0 else 1.0
    return m, c1, v


def directions(
    shape_groups: list[ShapeGroup],
    diag: list[DiagGroup],
    m: list[torch.Tensor],
    c1: list[float],
    v: list[torch.Tensor],
    group: dict[str, Any],
) -> list[torch.Tensor]:
    """N per unit: the bias-corrected Adam direction in the eigenbasis, rotated back."""
    beta2, eps = group["betas"][1], group["eps"]
    units: list[Any] = [*shape_groups, *diag]
    n_sg = len(shape_groups)
    out: list[torch.Tensor] = []
    for k, u in enumerate(units):
        if not isinstance(c1[k], torch.Tensor) and c1[k] == 0.0:  # a block at its first step
            out.append(torch.zeros((u.n, *u.shape), dtype=u.dtype, device=u.device))
            continue
        s2 = adam_kernel.sqrt(1.0 - beta2 ** (step_of(u) - (1 if k < n_sg else 0)))
        # m̂/(√v̂ + ε) = (c1·s2)·m/(√v + ε·s2), s2 = √(1−β2^τ)
        q = m[k] / adam_kernel.denominator([v[k]], None, [eps * s2])[0]
        if k < n_sg:
            q = rotate(q.to(u.sdtype), u.roots, back=True)
        out.append(q.mul_(c1[k] * s2).to(u.dtype))
    return out


class BasisBatch(NamedTuple):
    """One batched basis computation: statistics of one size, their current bases, which are new."""

    h: torch.Tensor  # (rows, d, d)
    q: torch.Tensor  # (rows, d, d)
    first: torch.Tensor  # (rows,) bool: no basis yet (eigh), else a warm-started refresh
    slots: list[Slot]


class BasisRefresher(RootRefresher):
    """Shampoo's root machinery (batching, pending installs, failure policy, async thread) for bases."""

    what = "eigenbases"

    def due(self, t: int) -> bool:
        return t == 1 or (t > 1 and (t - 1) % self.frequency == 0)

    def refresh(self, items: list[tuple[ShapeGroup, float, float]]) -> None:
        """Bases for every group due now, installed at its next step (async: f steps later)."""
        if not items:
            return
        parts: dict[tuple[int, torch.dtype, torch.device], list[Any]] = {}
        for g, (sg, _, _) in enumerate(items):
            for i, h in enumerate(sg.factors):
                self._check_finite(sg, i, h)
                first = torch.tensor([not r for r in sg.has_root[i]], device=h.device)
                key = (h.shape[-1], h.dtype, h.device)
                parts.setdefault(key, []).append((g, i, h.clone(), sg.roots[i].clone(), first))
        work = []
        for rows in parts.values():
            slots, offset = [], 0
            for g, i, h, _, _ in rows:
                slots.append(Slot(g, i, offset, offset + h.shape[0]))
                offset += h.shape[0]
            cat = [torch.cat([row[j] for row in rows]) for j in (2, 3, 4)]
            work.append(BasisBatch(cat[0], cat[1], cat[2], slots))

        def solve(b: BasisBatch) -> Any:
            return eigenbasis(b.h, b.q, b.first, dtype=self.dtype)

        if self.async_roots:
            future = self.background().submit(collect, work, solve)
            for g, (sg, _, _) in enumerate(items):
                delay = self.frequency if sg.t > 1 else 1
                sg.pending.append(Pending(sg.t + delay, sg.t, future=future, key=g))
            return
        results = collect(work, solve)
        for g, (sg, _, _) in enumerate(items):
            sg.pending.append(Pending.computed(sg.t + 1, sg.t, results[g]))
