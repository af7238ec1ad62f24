"""``add_weight_decay``: u ← u + λ·x, coupled (before the moments, L2) or decoupled (after, AdamW).

Reads ``weight_decay`` (λ) and, when present, ``decoupled_weight_decay`` from each group; a chain
holds one instance of each placement and the group's flag decides which one acts. Applied with
the adapter's x ← x − lr·u, the decoupled form is x ← (1 − lr·λ)·x − lr·u, AdamW's rule
(Loshchilov & Hutter, ICLR 2019, arXiv 1711.05101).
"""

from __future__ import annotations

from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext


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
