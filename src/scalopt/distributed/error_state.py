"""Worker and server error-feedback buffers of the two-way compressed exchanges, and their checkpoint.

Shared by ``EfficientAdam`` and ``OneBitAdam``: per dtype, e_i (the full flat vector, length D) and
ẽ_j (this rank's server chunk), created with zeros on the parameters' device the first time a
layout is exchanged, saved in ``state_dict()["distributed"]`` and restored on load (per-rank
checkpoint shards, so a resume is bitwise with the same world size and parameters).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from scalopt.core.comm import Comm


class FlatLayout(Protocol):
    """What the buffers need from a layout: one dtype's flat length, device and per-rank chunks."""

    numel: int
    dtype: torch.dtype
    device: torch.device
    bounds: list[tuple[int, int]]


class ErrorBuffers:
    """e_i and ẽ_j per dtype (keyed by ``str(dtype)``)."""

    def __init__(self) -> None:
        self.worker: dict[str, torch.Tensor] = {}
        self.server: dict[str, torch.Tensor] = {}

    def get(self, lay: FlatLayout, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(lay.dtype)
        if key not in self.worker:
            lo, hi = lay.bounds[rank]
            self.worker[key] = torch.zeros(lay.numel, dtype=lay.dtype, device=lay.device)
            self.server[key] = torch.zeros(hi - lo, dtype=lay.dtype, device=lay.device)
        return self.worker[key], self.server[key]

    def reset(self) -> None:
        self.worker, self.server = {}, {}

    def state(self) -> dict[str, Any]:
        return {
            "worker_error": {k: v.clone() for k, v in self.worker.items()},
            "server_error": {k: v.clone() for k, v in self.server.items()},
        }

    def load(self, extra: dict[str, Any], layouts: list[Any], comm: Comm) -> None:
        """Restore the buffers saved by ``state`` after checking they fit ``layouts`` on this rank."""
        sizes = {}
        for lay in layouts:
            lo, hi = lay.bounds[comm.rank]
            sizes[str(lay.dtype)] = (lay.numel, hi - lo, lay.device)
        worker, server = dict(extra.get("worker_error", {})), dict(extra.get("server_error", {}))
        for key in worker:
            if (
                key not in sizes
                or key not in server
                or ((worker[key].numel(), server[key].numel()) != sizes[key][:2])
            ):
                got = (worker[key].numel(), server[key].numel() if key in server else None)
                raise ValueError(
                    f"state_dict's error-feedback buffers for {key} hold {got[0]} / {got[1]} entries, "
                    f"this optimizer's parameters need {sizes.get(key, (None, None))[:2]}: load it into "
                    f"the same parameters and world size"
                )
        self.worker = {k: v.to(sizes[k][2]).clone() for k, v in worker.items()}
        self.server = {k: v.to(sizes[k][2]).clone() for k, v in server.items()}
