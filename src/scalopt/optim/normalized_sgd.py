"""Normalized SGD with momentum.

    m ← μ·m + g
    x ← x − lr·m/(‖m‖ + eps)        ‖m‖: L2 norm over ALL the optimizer's parameters

so every step has length lr (slightly less with eps). μ = ``momentum`` (default 0.9); μ = 0 is
plain normalized gradient descent. Cutkosky & Mehta write the momentum as an EMA
(m ← β·m + (1−β)·g); normalisation removes the (1−β) factor, so both give the same direction
except for how eps compares. scalopt uses the heavy-ball sum above (torch.optim.SGD's momentum
buffer), so the same ``momentum`` value means the same buffer in SGD, ClippedSGD and here.

Precision: fp16/bf16 parameters are updated in float32 and rounded once; complex parameters step
as real pairs (``view_as_real``, so the global norm is the norm of |g|), as torch.optim does; an
update that is not finite is never written (the ``nonfinite`` policy covers it).

Reference: A. Cutkosky, H. Mehta, "Momentum Improves Normalized SGD", ICML 2020, arXiv 2002.03305.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scalopt.core.chain import ChainOptimizer, chain
from scalopt.core.validate import check_interval, check_lr, check_nonnegative
from scalopt.transforms import normalize_by_global_norm, trace


class NormalizedSGD(ChainOptimizer):
    hyperparameters = {
        "lr": check_lr,
        "momentum": lambda n, v: check_interval(n, v, 0.0, 1.0),
        "eps": check_nonnegative,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        eps: float = 1e-8,
        *,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, eps=eps)
        super().__init__(params, defaults, chain(trace(), normalize_by_global_norm()), nonfinite=nonfinite)
