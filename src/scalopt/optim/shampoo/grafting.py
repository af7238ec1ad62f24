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
param group, whatever their number. The arithmetic order follows torch.optim's foreach Adam, so the
graft alone matches it to float rounding.
"""

from __future__ import annotations

import math

import torch

GRAFTINGS = ("adam", "adagrad", "rmsprop", "sgd", None)
NORM_FLOOR = 1e-16


def needs_accumulator(grafting: str | None) -> bool:
    return grafting in ("adam", "adagrad", "rmsprop")


def update_accumulator(
    v: list[torch.Tensor], g: list[torch.Tensor], grafting: str | None, beta2: float
) -> None:
    """V ← V + G² (adagrad) or V ← β_g·V + (1−β_g)·G² (rmsprop, adam), in place."""
    if grafting == "adagrad":
        torch._foreach_addcmul_(v, g, g, value=1.0)
    elif grafting in ("adam", "rmsprop"):
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)


def direction(
    ghat: list[torch.Tensor],
    v: list[torch.Tensor],
    grafting: str | None,
    eps: float,
    bias_correction2: list[float],
) -> list[torch.Tensor]:
    """P_gr for every unit; may alias ``ghat`` (sgd, None): callers never write into it."""
    if not needs_accumulator(grafting):
        return ghat
    denom = torch._foreach_sqrt(v)
    if grafting == "adam":
        torch._foreach_div_(denom, [math.sqrt(bc) for bc in bias_correction2])
    torch._foreach_add_(denom, eps)
    return torch._foreach_div(ghat, denom)


def match_block_norms(p_sh: torch.Tensor, p_gr: torch.Tensor) -> torch.Tensor:
    """Rescale each block (dim 0 indexes blocks) of ``p_sh`` to the Frobenius norm of ``p_gr``'s."""
    dims = tuple(range(1, p_sh.dim()))
    shape = (p_sh.shape[0],) + (1,) * (p_sh.dim() - 1)
    n_gr = torch.linalg.vector_norm(p_gr.to(p_sh.dtype), dim=dims)
    n_sh = torch.linalg.vector_norm(p_sh, dim=dims)
    return p_sh * (n_gr / (n_sh + NORM_FLOOR)).view(shape)
