"""Generalized SignSGD: Adam-like steps whose second moment tracks the momentum, not the gradient.

    g ← g + λ·x                               (weight_decay λ, coupled L2)
    m ← β1·m + (1−β1)·g
    v ← β2·v + (1−β2)·m²
    x ← x − lr·m̂/(√v̂ + eps)                   m̂, v̂ bias-corrected only if bias_correction

β2 = 0, eps = 0: x ← x − lr·sign(m), SignSGD with momentum (Signum); β1 = 0 as well: SignSGD
(sign(0) = 0). β1 = 0 without bias correction is ``torch.optim.RMSprop(alpha=β2)``. With eps = 0
and no bias correction every coordinate moves at most lr/√(1−β2) per step (v ≥ (1−β2)·m²).
Defaults follow the authors' code: lr 1e-3, betas (0.9, 0.999), eps 1e-8, bias correction off.

Precision: fp16/bf16 parameters are updated in float32 (float32 moments; x rounded to its dtype
once per step): in fp16, (1−β2)·m² underflows to 0 and eps = 1e-8 rounds to 0, so m/(√v + eps)
would be m/0 = inf. Complex parameters step as real pairs (``view_as_real``), as torch.optim does;
an update that is not finite is never written (the ``nonfinite`` policy covers it).

Reference: M. Crawshaw, M. Liu, F. Orabona, W. Zhang, Z. Zhuang, "Robustness to Unbounded
Smoothness of Generalized SignSGD", NeurIPS 2022, arXiv 2208.11195.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scalopt.core.chain import ChainOptimizer, chain
from scalopt.core.validate import check_betas, check_bool, check_lr, check_nonnegative
from scalopt.transforms import add_weight_decay, scale_by_generalized_sign


class GeneralizedSignSGD(ChainOptimizer):
    hyperparameters = {
        "lr": check_lr,
        "betas": check_betas,
        "eps": check_nonnegative,
        "weight_decay": check_nonnegative,
        "bias_correction": check_bool,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        bias_correction: bool = False,
        *,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction
        )
        transforms = chain(add_weight_decay(decoupled=False), scale_by_generalized_sign())
        super().__init__(params, defaults, transforms, nonfinite=nonfinite)
