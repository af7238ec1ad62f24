"""``trace``: heavy-ball momentum, torch.optim.SGD's convention.

    buf ← μ·buf + u          (buf starts at 0, so the first step gives buf = u, as torch does)
    u   ← u + μ·buf if nesterov else buf

μ = the group's ``momentum``; ``nesterov`` from the group (default False). μ = 0 passes u through.
``heavy_ball_`` is the same rule as a plain function over lists of tensors; Shampoo's directions
use it too, so the chain and Shampoo share one momentum path.
"""

from __future__ import annotations

from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext


def heavy_ball_(
    buf: list[torch.Tensor], u: list[torch.Tensor], mu: float, nesterov: bool
) -> list[torch.Tensor]:
    """buf ← μ·buf + u in place; returns u + μ·buf (new tensors) if nesterov, else ``buf`` itself."""
    torch._foreach_mul_(buf, mu)
    torch._foreach_add_(buf, u)
    return torch._foreach_add(u, buf, alpha=mu) if nesterov else buf


class trace:  # noqa: N801 - transforms are verbs
    def init(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        if group["momentum"] == 0:
            return {}
        return {"momentum_buffer": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None:
        for b in batches:
            mu = b.group["momentum"]
            if mu == 0:
                continue
            if any("momentum_buffer" not in s for s in b.states):  # momentum switched on later
                for s, p in zip(b.states, b.params):
                    s.setdefault("momentum_buffer", torch.zeros_like(p))
            nesterov = bool(b.group.get("nesterov", False))
            # without nesterov u aliases the buffer: later transforms copy on write
            b.updates = heavy_ball_(b.buffers("momentum_buffer"), b.updates, mu, nesterov)
            b.owned = nesterov
