"""``add_weight_decay``: u ← u + λ·x, coupled (before the moments, L2) or decoupled (after, AdamW).

Reads ``weight_decay`` (λ) and, when present, ``decoupled_weight_decay`` from each group; a chain
holds one instance of each placement and the group's flag decides which one acts. Applied with
the adapter's x ← x − lr·u, the decoupled form is x ← (1 − lr·λ)·x − lr·u, AdamW's rule
(Loshchilov & Hutter, ICLR 2019, arXiv 1711.05101). ``decay`` is the same u + λ·x over lists of
tensors, out of place; Shampoo's directions use it for their decoupled decay.
"""

from __future__ import annotations

from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext


def decay(u: list[torch.Tensor], x: list[torch.Tensor], wd: float) -> list[torch.Tensor]:
    """u + λ·x as new tensors (``u`` may alias buffers that must not change)."""
    return torch._foreach_add(u, x, alpha=wd)


class add_weight_decay:  # noqa: N801 - transforms are verbs
    def __init__(self, *, decoupled: bool) -> None:
        self.decoupled = decoupled

    def init(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {}

    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None:
        for b in batches:
            wd = b.group["weight_decay"]
            if wd != 0 and bool(b.group.get("decoupled_weight_decay", False)) == self.decoupled:
                b.add_params(wd)
