"""Grafting for Shampoo: the diagonal method whose step size (per block) the Shampoo direction takes.

With G the raw gradient (after L2 weight decay), Ĝ the filtered gradient (β1-EMA, bias-corrected),
V the graft accumulator (0 at start), β_g = ``grafting_beta2``, ε_g = ``grafting_eps``, t the step:

    sgd      P_gr = Ĝ
    adagrad  V ← V + G²                   P_gr = Ĝ/(√V + ε_g)
    rmsprop  V ← β_g·V + (1−β_g)·G²       P_gr = Ĝ/(√V + ε_g)
    adam     V ← β_g·V + (1−β_g)·G²       P_gr = Ĝ/(√(V/(1−β_g^t)) + ε_g)
    None     P_gr = Ĝ (used only where no root is installed yet: the direction of identity roots)

Norm matching (Agarwal, Anil, Hazan, Koren, Zhang, arXiv 2002.11803), per block b:

    P_b = (‖P_gr,b‖_F / (‖P_sh,b‖_F + 1e-16)) · P_sh,b

The operations act on lists (``torch._foreach_*``): one call per operation for all units of a
param group, whatever their number. Scalar factors are folded instead of applied in passes of their
own: with c1 = 1/(1−β1^t) (the caller's Ĝ = c1·M) and s2 = √(1−β_g^t) (adam; 1 otherwise),

    adam     P_gr = (c1·s2) · M/(√V + ε_g·s2)       (= Ĝ/(√(V/(1−β_g^t)) + ε_g))

so ``direction`` returns Q = M/(√V + ε_g·s2) (M itself for sgd and None) and the scale c1·s2; the
norm matching needs only ‖Q_b‖, and P_sh is linear in Ĝ, so neither Ĝ nor P_gr is materialized for
blocks that have their roots. The accumulator and denominator are the one Adam kernel's
(``scalopt.transforms.adam_kernel``); the graft alone matches torch.optim's foreach Adam to float rounding.
"""

from __future__ import annotations

import torch

from scalopt.transforms import adam_kernel

GRAFTINGS = ("adam", "adagrad", "rmsprop", "sgd", None)
NORM_FLOOR = 1e-16


def needs_accumulator(grafting: str | None) -> bool:
    return grafting in ("adam", "adagrad", "rmsprop")


def update_accumulator(
    v: list[torch.Tensor], g: list[torch.Tensor], grafting: str | None, beta2: float
) -> None:
    """V ← V + G² (adagrad) or V ← β_g·V + (1−β_g)·G² (rmsprop, adam), in place."""
    if needs_accumulator(grafting):
        adam_kernel.moments_(None, v, g, 0.0, None if grafting == "adagrad" else beta2)


def direction(
    m: list[torch.Tensor],
    v: list[torch.Tensor],
    grafting: str | None,
    eps: float,
    c1: list[float],
    bias_correction2: list[float],
) -> tuple[list[torch.Tensor], list[float]]:
    """(Q, scale) with P_gr = scale·Q for every unit; Q may alias ``m`` (sgd, None): never write into it."""
    if not needs_accumulator(grafting):
        return m, list(c1)
    s2 = [adam_kernel.sqrt(bc) for bc in bias_correction2] if grafting == "adam" else [1.0] * len(m)
    denom = adam_kernel.denominator(v, None, [eps * s for s in s2])
    return torch._foreach_div(m, denom), [a * b for a, b in zip(c1, s2)]


def match_block_norms(p_sh: torch.Tensor, q: torch.Tensor, c1: float, scale: float) -> torch.Tensor:
    """c1·P_sh rescaled per block (dim 0 indexes blocks) to the Frobenius norm of P_gr = scale·Q.

    ``p_sh`` is the preconditioned M (P_sh of Ĝ = c1·M, divided by c1)."""
    dims = tuple(range(1, p_sh.dim()))
    shape = (p_sh.shape[0],) + (1,) * (p_sh.dim() - 1)
    n_gr = torch.linalg.vector_norm(q.to(p_sh.dtype), dim=dims).mul_(scale)
    n_sh = torch.linalg.vector_norm(p_sh, dim=dims).mul_(c1)
    return p_sh * (n_gr.mul_(c1) / (n_sh + NORM_FLOOR)).view(shape)
