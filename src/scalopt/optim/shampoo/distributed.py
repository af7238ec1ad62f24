"""Distributed Shampoo over a ``Comm``: averaged gradients, blocks owned by ranks, one all-gather.

With N ranks, as the DDP distributor of H.-J. M. Shi et al., "A Distributed Data-Parallel PyTorch
Implementation of the Distributed Shampoo Optimizer for Training Neural Networks At-Scale", arXiv
2309.06497 (blocks by greedy LPT on their memory, one all-gather of the directions):

    G ← (1/N)·Σ_r G_r                 one all-reduce of all gradients, summed in rank order 0..N−1
    the items of each param group (blocks, graft-only parameters) are assigned to ranks once, by
    greedy LPT on their state size (``scalopt.optim.sharding.assign_lpt``)
    rank r keeps statistics, roots, graft and momentum state of its items only (≈ 1/N memory),
    computes their final directions P (graft, decoupled decay and momentum folded in)
    one all-gather of the directions (``scalopt.optim.sharding.all_gather_owned``: per dtype,
    padded to the largest rank's share)
    every rank applies W ← W − lr·P to every parameter

Every rank therefore ends with the same parameters, bitwise equal to single-process Shampoo on the
averaged gradient (with torch threads pinned). The gradient all-reduce uses the Comm's
deterministic (rank-order) sum. Checkpoints are per-rank shards: ``state_dict()`` holds this rank's
items and a manifest (world size, rank, assignment); loading a shard into a different world size
or rank raises ``ValueError``. All ranks must have gradients for the same parameters at every step.
"""

from __future__ import annotations

from typing import Any

import torch

from scalopt.optim import sharding
from scalopt.optim.shampoo.plan import ItemLayout
from scalopt.optim.sharding import all_gather_owned, average_gradients


def check_shard(info: dict[str, Any], rank: int, world_size: int) -> None:
    """``sharding.check_shard`` for Shampoo's checkpoints (kept here for Shampoo's imports)."""
    sharding.check_shard(info, rank, world_size, owner="Shampoo")


class DistributedStep:
    """The two collectives of a distributed Shampoo step."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def average(self, found: list[Any]) -> list[Any]:
        """Replace every gradient by its average over ranks (``sharding.average_gradients``)."""
        return average_gradients(self.comm, found)

    def share(self, layout: ItemLayout, sources: list[torch.Tensor | None]) -> list[torch.Tensor]:
        """All-gather the directions of every rank's items; returns them for all items."""
        return all_gather_owned(self.comm, sources, layout.owner, layout.shapes, layout.dtypes, layout.device)

    def manifest(self, owners: dict[int, list[int]]) -> dict[str, Any]:
        """The shard's identity: world size, rank, and the owner of every item per param group index."""
        return {"world_size": self.comm.world_size, "rank": self.comm.rank, "owners": owners}
