"""The one functional Adam kernel: plain functions over lists of tensors (torch's ``_multi_tensor`` style).

Every Adam-shaped update in scalopt goes through these functions: the chain's ``scale_by_adam``,
Shampoo's adam/rmsprop/adagrad graft and Efficient-Adam's local step (through the chain). With g
the gradient, t the 1-based step, β1, β2 the betas, ε = eps, λ = weight_decay:

    m ← β1·m + (1−β1)·g                                  moments_  (m = None: m not kept)
    v ← β2·v + (1−β2)·g²        (β2 = None: v ← v + g²)  moments_
    d = c·√v + ε·e                                       denominator (c, e: per-tensor scalars that
                                                          fold bias corrections and step-size decay)
    u = m/d

``fused_adam_`` is the whole Adam / AdamW step on parameters, x ← x − lr·(m̂/(√v̂ + ε) [+ λ·x]),
m̂ = m/(1−β1^t), v̂ = v/(1−β2^t), in one call of torch's fused kernel (``torch._fused_adam_`` /
``torch._fused_adamw_``; CPU and CUDA). ``fusable`` says when it may be used: real float32 or
float64 tensors (complex ones as ``view_as_real`` pairs), all on one device with one dtype, dense
and contiguous (measured: torch's CPU kernel, torch.optim.AdamW(fused=True) included, gives wrong
values when a parameter and its gradient have different strides), eps ≥ 1e-12, lr ≤ 1e3 and
weight_decay, lr·weight_decay ≤ 1 (FSDP2 parameters arrive as their local shards, plain tensors,
so the kernel steps each rank's shard). The caller decides that the math
is exactly Adam/AdamW (constant betas, bias correction, no step-size decay, no other transforms).

Non-finite policy on the fused path. Gradients are checked by the optimizer before the kernel is
called (``nonfinite="raise"`` raises, ``"skip"`` returns before any state or parameter is touched),
so no ``found_inf`` tensor is passed. With finite gradients the fused update cannot be non-finite,
which is why this path needs no update check (the unfused chain, which admits eps = 0 and low
precision, checks its updates): m̂ is a convex combination of past gradients and d ≥ ε, so
|u| ≤ max|g|/ε; where g² overflows, v = inf and u = 0, else |g| < 2e19; ``fusable`` requires
eps ≥ 1e-12, lr ≤ 1e3, weight_decay ≤ 1 and lr·weight_decay ≤ 1, so |lr·u| < 2e34 and
|(1 − lr·λ)·x| ≤ |x|: only a parameter already within 2e34 of float32's largest value could overflow.
"""

from __future__ import annotations

import math

import torch

#: dtypes the fused path takes (low precision goes through the chain, computed in float32)
FUSED_DTYPES = (torch.float32, torch.float64)
MIN_FUSED_EPS = 1e-12
MAX_FUSED_LR = 1e3


def moments_(
    m: list[torch.Tensor] | None,
    v: list[torch.Tensor],
    g: list[torch.Tensor],
    beta1: float,
    beta2: float | list[float] | None,
) -> None:
    """m ← β1·m + (1−β1)·g (unless ``m`` is None); v ← β2·v + (1−β2)·g² (β2 None: v ← v + g²).

    ``beta2`` may be one value per tensor (a scheduled β2 with parameters at different steps)."""
    if m is not None:
        momentum_(m, g, beta1)
    if beta2 is None:
        torch._foreach_addcmul_(v, g, g, value=1.0)
    elif isinstance(beta2, list):
        if len(set(beta2)) == 1:
            moments_(None, v, g, beta1, beta2[0])
        else:
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, g, g, [1.0 - b for b in beta2])
    else:
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)


def momentum_(m: list[torch.Tensor], g: list[torch.Tensor], beta1: float) -> None:
    """m ← β1·m + (1−β1)·g alone (v untouched: 1-bit Adam's frozen-v phase)."""
    torch._foreach_lerp_(m, g, 1.0 - beta1)


def denominator(v: list[torch.Tensor], scale: list[float] | None, eps: list[float]) -> list[torch.Tensor]:
    """d = scale·√v + eps, per tensor, as new tensors (``v`` is read only; ``scale`` None: 1)."""
    d = torch._foreach_sqrt(v)
    if scale is not None and any(isinstance(s, torch.Tensor) or s != 1.0 for s in scale):
        torch._foreach_mul_(d, scale)
    if any(isinstance(e, torch.Tensor) or e != 0.0 for e in eps):
        torch._foreach_add_(d, eps)
    return d


def bias_corrected_scales(
    bc1: list[float], bc2: list[float], eps: float, decay: list[float] | None = None
) -> tuple[list[float], list[float]]:
    """(scale, eps) for ``denominator`` so that m/d = decay·m̂/(√v̂ + ε) with m̂ = m/bc1, v̂ = v/bc2.

    The inputs may be 0-dim tensors (a traced step's tensor step counts); the outputs are then too."""
    d = decay if decay is not None else [1.0] * len(bc1)
    scale = [c1 / (dt * sqrt(c2)) for c1, c2, dt in zip(bc1, bc2, d)]
    return scale, [eps * c1 / dt for c1, dt in zip(bc1, d)]


def sqrt(x: float | torch.Tensor) -> float | torch.Tensor:
    """√x of a number (``math.sqrt``, correctly rounded) or of a tensor."""
    return x.sqrt() if isinstance(x, torch.Tensor) else math.sqrt(x)


def fusable(tensors: list[torch.Tensor], *, lr: float, eps: float, weight_decay: float) -> bool:
    """Whether ``fused_adam_`` may take these (real views of) parameters with these hyperparameters."""
    bounded = MIN_FUSED_EPS <= eps and 0.0 <= lr <= MAX_FUSED_LR and weight_decay <= 1
    bounded = bounded and lr * weight_decay <= 1
    if not tensors or not bounded:
        return False
    first = tensors[0]
    if first.dtype not in FUSED_DTYPES:
        return False
    return all(
        t.dtype == first.dtype
        and t.device == first.device
        and not t.is_sparse
        and not t.is_complex()
        and t.is_contiguous()
        for t in tensors
    )


def fused_adam_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    m: list[torch.Tensor],
    v: list[torch.Tensor],
    steps: list[int | torch.Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """One Adam (``decoupled=False``: L2 decay in g) or AdamW step in torch's fused kernel.

    ``steps`` are the 1-based steps after this one's increment (the caller counts them)."""
    cache: dict[int, torch.Tensor] = {}
    device = params[0].device
    state_steps = []
    for t in steps:
        t = int(t)  # a 0-dim tensor once a step was traced by torch.compile
        if t not in cache:
            cache[t] = torch.tensor(float(t), dtype=torch.float32, device=device)
        state_steps.append(cache[t])
    fn = torch._fused_adamw_ if decoupled else torch._fused_adam_
    fn(
        params,
        grads,
        m,
        v,
        [],
        state_steps,
        lr=lr,
        beta1=betas[0],
        beta2=betas[1],
        weight_decay=weight_decay,
        eps=eps,
        amsgrad=False,
        maximize=False,
    )
