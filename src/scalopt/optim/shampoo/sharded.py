"""Shampoo's saved state under FSDP2: rank-local blocks, saved per rank, loadable at the same shard count.

Each rank preconditions blocks of its own dim-0 shard, so its factors, roots and graft state have
shapes that exist on that rank only. ``state_dict`` saves them under per-rank keys
(``"rank{r}.block0.factor0"``, ``"rank{r}.shards"`` = the number of shards), which
``torch.distributed.checkpoint`` writes from every rank; ``load_state_dict`` takes its own rank's
entries back and refuses a checkpoint written with another number of shards (the blocks would not
line up), naming both sizes.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from scalopt.core.sharded import shard_rank

_KEY = re.compile(r"^rank(\d+)\.(.*)$")


def export_state(p: torch.Tensor, state: dict[str, Any]) -> dict[str, Any]:
    r, n = shard_rank(p)
    out = {f"rank{r}.{k}": v for k, v in state.items()}
    out[f"rank{r}.shards"] = n
    return out


def saved_shards(state: dict[str, Any]) -> int | None:
    """The shard count a saved state was written with (None: saved without FSDP2 sharding)."""
    for k, v in state.items():
        m = _KEY.match(k)
        if m and m.group(2) == "shards":
            return int(v)
    return None


def import_state(p: torch.Tensor, state: dict[str, Any], name: str) -> dict[str, Any]:
    r, n = shard_rank(p)
    saved = saved_shards(state)
    if saved != n:
        where = "without FSDP2 (1 unsharded process)" if saved is None else f"with world size {saved}"
        raise ValueError(
            f"Shampoo state of {name} was saved {where}; this run shards it over world size {n}. "
            f"Shampoo's blocks, statistics and roots belong to each rank's dim-0 shard, so they cannot be "
            f"resharded: resume with world size {saved or 1}"
        )
    prefix = f"rank{r}."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k != prefix + "shards"}
