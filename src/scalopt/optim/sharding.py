"""Sharding work over ranks: cost-balanced assignment of items, and the all-gather of their results.

An optimizer that splits its per-item work (Shampoo's blocks, mL-BFGS's block histories) over N
ranks on data-parallel gradients does the same three things:

    average  G ← (1/N)·Σ_r G_r for every gradient: one deterministic all-reduce (summed in rank
             order 0..N−1) per dtype, so every rank holds bitwise the same averaged gradients
    assign   owner(i) ∈ {0, …, N−1} for every item i, balancing Σ_{owner(i)=r} cost(i) over r
    gather   every rank computes the result of the items it owns; one all-gather per dtype gives
             every rank the results of all items (each rank's share flattened in item order,
             padded with zeros to the largest share)

``assign_lpt`` is greedy longest-processing-time (Graham 1969, "Bounds on multiprocessing timing
anomalies", SIAM J. Appl. Math. 17(2)): items sorted by cost descending (ties: lower index first),
each given to the least-loaded rank so far (ties: lowest rank). Its makespan is at most 4/3 − 1/(3N)
times the optimum. The costs are whatever the caller balances: Shampoo uses the state size of a
block (2·Σ d_i² + numel), mL-BFGS history length × numel. The assignment depends only on
the costs, so every rank computes the same one without communicating.

``all_gather_owned`` is deterministic: the order of items within a rank's share, and of ranks in
the result, are fixed, so every rank ends with bitwise the same tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def assign_lpt(costs: Sequence[float], world_size: int) -> list[int]:
    """Greedy LPT: the rank of each item, largest cost first to the least-loaded rank."""
    load = [0.0] * world_size
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return owner


def all_gather_owned(
    comm: Any,
    tensors: Sequence[torch.Tensor | None],
    owner: Sequence[int],
    shapes: Sequence[tuple[int, ...]],
    dtypes: Sequence[torch.dtype],
    device: torch.device,
) -> list[torch.Tensor]:
    """Every item's tensor on every rank, from the tensors each rank holds for the items it owns.

    ``tensors[i]`` is this rank's result for item i where ``owner[i] == comm.rank`` (any value
    elsewhere); ``shapes[i]`` and ``dtypes[i]`` describe item i on every rank. With one rank the
    tensors are returned as they are. Gathered tensors are views into the gathered buffers.
    """
    if comm.world_size == 1:
        return list(tensors)  # type: ignore[arg-type]
    out: list[Any] = list(tensors)
    n = len(owner)
    for dtype in dict.fromkeys(dtypes):
        per_rank = [
            [i for i in range(n) if dtypes[i] == dtype and owner[i] == r] for r in range(comm.world_size)
        ]
        sizes = [[_numel(shapes[i]) for i in items] for items in per_rank]
        width = max(sum(s) for s in sizes)
        mine = [out[i].reshape(-1) for i in per_rank[comm.rank]]
        flat = torch.zeros(width, dtype=dtype, device=device)
        if mine:
            torch.cat(mine, out=flat[: sum(sizes[comm.rank])])
        gathered = comm.all_gather(flat)
        for r, items in enumerate(per_rank):
            parts = gathered[r][: sum(sizes[r])].split(sizes[r])
            for i, part in zip(items, parts):
                out[i] = part.view(shapes[i])
    return out


def average_gradients(comm: Any, found: list[Any]) -> list[Any]:
    """Every gradient replaced by its average over ranks (``p.grad`` itself is left as it is).

    ``found``: (group, indices, params, grads) per param group, as ``grads_by_group`` gives. One
    deterministic all-reduce per dtype; marks one round (data-parallel methods synchronise once a step)."""
    if comm.world_size == 1 or not found:
        return found
    grads = [g for _, _, _, gs in found for g in gs]
    out: list[torch.Tensor | None] = [None] * len(grads)
    for dtype in dict.fromkeys(g.dtype for g in grads):
        idx = [i for i, g in enumerate(grads) if g.dtype == dtype]
        flat = torch.cat([grads[i].reshape(-1) for i in idx])
        comm.all_reduce(flat, "mean", deterministic=True)
        for i, part in zip(idx, flat.split([grads[i].numel() for i in idx])):
            out[i] = part.view(grads[i].shape)
    comm.mark_round()
    averaged, k = [], 0
    for group, indices, params, gs in found:
        averaged.append((group, indices, params, out[k : k + len(gs)]))
        k += len(gs)
    return averaged


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def check_shard(info: dict[str, Any], rank: int, world_size: int, owner: str = "sharded") -> None:
    """A checkpoint's shard identity (``{"rank", "world_size"}``) must be this rank's.

    ValueError naming both otherwise: work is assigned to ranks by world size, so a shard loads only
    into the same rank of the same world size. ``owner`` names the optimizer in the message."""
    if (info["world_size"], info["rank"]) != (world_size, rank):
        raise ValueError(
            f"this {owner} checkpoint is the shard of rank {info['rank']} of world size "
            f"{info['world_size']}; it cannot be loaded by rank {rank} of world size "
            f"{world_size} (blocks are assigned to ranks by world size: resume with "
            f"{info['world_size']} ranks, each loading its own shard)"
        )
