"""Clipped SGD: SGD (with optional momentum) on the gradient clipped by one global norm.

    g ← min(1, max_norm/‖g‖)·g            ‖g‖: L2 norm over ALL the optimizer's parameters
    d ← g + λ·x                           (weight_decay λ)
    buf ← μ·buf + d;  d ← d + μ·buf if nesterov else buf      (momentum μ > 0)
    x ← x − lr·d

With μ = 0 and λ = 0 the step is min(lr, lr·max_norm/‖g‖)·g, the paper's min(η, γ/‖g‖)·g with
η = lr and γ = lr·max_norm: a scheduler that decays lr decays γ with it. ``max_norm = inf`` is
``torch.optim.SGD``.

Deviation from the authors' code (Liu et al.'s sgd_clip.py clips d = g + λ·x, after weight decay,
and adds 10⁻¹⁰ to the norm: x ← x − min(η, γ/(‖d‖ + 10⁻¹⁰))·d): scalopt clips the raw gradient,
before weight decay and without the 10⁻¹⁰, so that ClippedSGD is exactly ``clip_grad_norm_``
followed by ``torch.optim.SGD``, the form users compare against. The two agree when λ = 0 up to
the 10⁻¹⁰; the paper's runs use μ = 0.

Precision: fp16/bf16 parameters are updated in float32 and rounded once; complex parameters step
as real pairs (``view_as_real``, so the global norm is the norm of |g|), as torch.optim does; an
update that is not finite is never written (the ``nonfinite`` policy covers it).

Reference: J. Zhang, T. He, S. Sra, A. Jadbabaie, "Why gradient clipping accelerates training",
ICLR 2020, arXiv 1905.11881; M. Liu, Z. Zhuang, Y. Lei, C. Liao, NeurIPS 2022, arXiv 2205.05040.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scalopt.core.chain import ChainOptimizer, chain
from scalopt.core.validate import check_bool, check_interval, check_lr, check_nonnegative, check_positive
from scalopt.transforms import add_weight_decay, clip_by_global_norm, trace


class ClippedSGD(ChainOptimizer):
    hyperparameters = {
        "lr": check_lr,
        "max_norm": lambda n, v: check_positive(n, v, allow_inf=True),
        "momentum": lambda n, v: check_interval(n, v, 0.0, 1.0),
        "nesterov": check_bool,
        "weight_decay": check_nonnegative,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        max_norm: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        nonfinite: str = "raise",
    ) -> None:
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        defaults = dict(
            lr=lr, max_norm=max_norm, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
        transforms = chain(clip_by_global_norm(), add_weight_decay(decoupled=False), trace())
        super().__init__(params, defaults, transforms, nonfinite=nonfinite)

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        out["clip_fraction"] = out.get("clipped_steps", 0.0) / max(out["steps"], 1.0)
        return out
