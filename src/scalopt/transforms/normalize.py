"""``normalize_by_global_norm``: u ← u/(‖u‖ + eps), ‖u‖ one L2 norm over all param groups.

After ``trace`` this is normalized SGD with momentum (Cutkosky & Mehta, ICML 2020,
arXiv 2002.03305): m ← μ·m + g; x ← x − lr·m/(‖m‖ + eps). ``eps`` from each group.
"""

from __future__ import annotations

from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext


class normalize_by_global_norm:  # noqa: N801 - transforms are verbs
    def init(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {}

    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None:
        norms: list[torch.Tensor] = []
        for b in batches:
            norms.extend(torch._foreach_norm(b.updates))
        total = ctx.optimizer.global_norm([n.double() for n in norms])  # over all ranks' shards
        if torch.compiler.is_compiling():  # traced: the factor as a tensor, no host sync
            ctx.optimizer.record("update_norm", total)
            for b in batches:
                b.scale((1.0 / (total + b.group["eps"])).to(b.params[0].dtype))
            return
        total = float(total)
        ctx.optimizer.record("update_norm", total)
        for b in batches:
            b.scale(1.0 / (total + b.group["eps"]))
