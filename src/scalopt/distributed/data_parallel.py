"""Synchronous data parallelism: average the gradients over all ranks, then step the inner optimizer.

    g   = (1/N) Σ_i g^i            one all-reduce of one flat buffer (per dtype) per step
    x  ← inner_step(x, g)          identical on every rank, so the replicas never drift

Arguments: ``optimizer`` the inner (local) optimizer, N = ``comm.world_size``, ``deterministic``
sums in rank order (bitwise reproducible for any N). One round per step. With ``module=`` and
``average_buffers=True`` (default) the module's floating buffers (BatchNorm statistics) travel in
the same flat buffer and are averaged too (DistributedDataParallel broadcasts rank 0's instead).

``DataParallelOptimizer(scalopt.Adam(params, lr=1e-3), comm=comm)`` is distributed (data-parallel)
Adam: every node applies the same Adam step to the averaged gradient, which equals minibatch Adam
with batch N·B up to summation order — not local-step Adam. This is the distributed Adam of Chen,
Shen, Zou, Liu, "Towards Practical Adam", JMLR 23(229), 2022, arXiv 2101.05471, whose bound's noise
term shrinks with N·B (the "linear speedup"). Over ``ClippedSGD`` it is naive parallel clipping
(the averaged gradient is clipped), the baseline Liu et al. compare CELGC against (NeurIPS 2022,
arXiv 2205.05040).

Every rank must have gradients for the same parameters (as DistributedDataParallel without
``find_unused_parameters``); a mismatch is a Comm error (SimComm names it; gloo reports a size
mismatch). The non-finite check runs on the averaged gradient, so all ranks decide alike with no
extra message: with ``nonfinite="raise"`` every rank raises, with ``"skip"`` every rank skips.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalopt.core.comm import Comm
from scalopt.core.validate import check_bool
from scalopt.distributed.wrapper import DistributedOptimizer, floating_buffers


class DataParallelOptimizer(DistributedOptimizer):
    """Averages gradients (flat buffers, one all-reduce per dtype) before the inner step."""

    algorithm = "data_parallel"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        comm: Comm,
        module: nn.Module | None = None,
        average_buffers: bool = True,
        nonfinite: str = "raise",
        deterministic: bool = False,
    ) -> None:
        self.average_buffers = check_bool("average_buffers", average_buffers)
        super().__init__(
            optimizer, comm=comm, module=module, nonfinite=nonfinite, deterministic=deterministic
        )

    def step(self, closure: Any = None) -> Any:
        loss = self.closure_loss(closure)
        grads = self.grads()
        if grads:
            buffers = floating_buffers(self.module) if self.average_buffers else []
            averaged = self.average(grads + buffers)
            self.comm.mark_round()
            self.counters["syncs"] += 1
            if not averaged:
                return loss
        self.optimizer.step()
        self.counters["steps"] += 1
        return loss
