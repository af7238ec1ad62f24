"""``clip_by_global_norm``: u ← min(1, c/‖g‖)·u with ‖g‖ one L2 norm over ALL the optimizer's
parameters (not per layer, not per group), c = the group's ``max_norm``.

This is the clipping of Zhang et al. (ICLR 2020) and Liu et al. (NeurIPS 2022, arXiv 2205.05040):
with step size η = lr the step is min(η, γ/‖g‖)·g, γ = lr·max_norm. ``max_norm = inf`` never
clips. The norm is the one the adapter computed for its non-finite check (the raw gradients), so
clipping costs one multiply. Counts ``clipped_steps`` (steps where any group was clipped).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext


class clip_by_global_norm:  # noqa: N801 - transforms are verbs
    def init(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {}

    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None:
        if torch.compiler.is_compiling():  # traced: the factor as a tensor, no host sync
            self._traced(batches, ctx)
            return
        norm = float(ctx.grad_norm)
        clipped = False
        for b in batches:
            max_norm = b.group["max_norm"]
            if math.isinf(max_norm) or norm <= max_norm:
                continue
            b.scale(max_norm / norm)
            clipped = True
        ctx.optimizer.count("clipped_steps", int(clipped))

    @staticmethod
    def _traced(batches: list[GroupBatch], ctx: StepContext) -> None:
        norm = ctx.grad_norm.double()
        clipped = torch.zeros((), dtype=torch.bool, device=norm.device)
        for b in batches:
            max_norm = b.group["max_norm"]
            if math.isinf(max_norm):
                continue
            b.scale((max_norm / norm).clamp(max=1.0).to(b.params[0].dtype))
            clipped = clipped | (norm > max_norm)
        ctx.optimizer.count("clipped_steps", clipped)
