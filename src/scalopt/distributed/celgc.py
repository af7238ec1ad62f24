"""CELGC: communication-efficient local gradient clipping (local clipped SGD + periodic averaging).

Same x_0 on every worker (rank 0's, broadcast at construction); on every worker i, steps t = 1, 2, …:

    g^i = ∇F(x^i; ξ^i_t)                               local minibatch gradient
    d   = min(1, c/‖g^i‖)·g^i + λ·x^i                   clip with the LOCAL global norm, every step
    buf ← μ·buf + d;  d ← buf                           (momentum μ > 0; buffers stay local)
    x^i ← x^i − η·d
    if t mod I = 0:  x^i ← (1/N) Σ_j x^j                model all-reduce (a round); no gradient all-reduce

With μ = λ = 0 the step is min(η, γ/‖g^i‖)·g^i, γ = η·c: the paper's rule. Symbols ↔ arguments:
η = ``lr``, c = ``max_norm`` (γ/η), I = ``period``, μ = ``momentum``, λ = ``weight_decay``,
N = ``comm.world_size``. No defaults for η, c, I (the authors' CIFAR run: η 0.1, γ 1.0 ⇒ c = 10,
I = 2; argparse default I = 8).

This is ``LocalSGD(ClippedSGD(params, lr, max_norm, momentum, weight_decay=λ), period=I)``: see
``scalopt.optim.clipped_sgd`` for the clipping (the raw gradient is clipped, then weight decay is
added, so ClippedSGD is exactly clip_grad_norm_ + torch.optim.SGD; the authors' code clips
d = g + λx with 10⁻¹⁰ in the norm; the two agree for λ = 0 up to the 10⁻¹⁰) and
``scalopt.distributed.local_sgd`` for the averaging (floating buffers averaged too with
``module=``). Special cases: ``max_norm=inf`` is Local SGD over SGD; N = 1 is ClippedSGD;
I = 1 is the average of locally clipped steps — NOT naive parallel clipping, which is
``DataParallelOptimizer(ClippedSGD(...))`` (clips the averaged gradient).

Reference: M. Liu, Z. Zhuang, Y. Lei, C. Liao, "A Communication-Efficient Distributed Gradient
Clipping Algorithm for Training Deep Neural Networks", NeurIPS 2022, arXiv 2205.05040.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from scalopt.core.comm import Comm
from scalopt.distributed.local_sgd import LocalSGD
from scalopt.optim.clipped_sgd import ClippedSGD


class CELGC(LocalSGD):
    """Local SGD over ``ClippedSGD``: each worker clips its own stochastic gradient."""

    algorithm = "celgc"

    def __init__(
        self,
        params: Iterable[Any],
        *,
        comm: Comm,
        lr: float,
        max_norm: float,
        period: int,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        average_buffers: bool = True,
        module: nn.Module | None = None,
        nonfinite: str = "raise",
        deterministic: bool = False,
    ) -> None:
        inner = ClippedSGD(
            params,
            lr=lr,
            max_norm=max_norm,
            momentum=momentum,
            weight_decay=weight_decay,
            nonfinite=nonfinite,
        )
        super().__init__(
            inner,
            comm=comm,
            period=period,
            warmup_steps=warmup_steps,
            average_buffers=average_buffers,
            module=module,
            nonfinite=nonfinite,
            deterministic=deterministic,
        )
