"""Distributed checkpoints: one shard per rank plus a manifest.

    save_checkpoint(directory, comm=comm, optimizer=opt, model=model, step=t, extra={"data": gen.get_state()})
    info = load_checkpoint(directory, comm=comm, optimizer=opt, model=model)   # -> {"step", "extra", ...}

Layout of ``directory``::

    manifest.json          {"format", "world_size", "algorithm", "step", "shards": [...]}   (rank 0 writes it)
    rank00000.pt ...       per rank: model state_dict, optimizer state_dict (with the wrapper's own
                           state: counters, anchors, pending averages), torch's global RNG state, extra

Every rank writes its own shard (local-SGD replicas, momentum buffers and RNG states differ per
rank); a barrier precedes the manifest, so a manifest means every shard is complete. Shards are
read with ``torch.load(weights_only=True)``, so ``extra`` may hold tensors and plain Python values
only. Loading with another world size, another algorithm, or a missing shard raises
``CheckpointError`` naming what differs. A checkpoint taken mid-period resumes exactly: the
wrappers save their step counters and in-flight averages, and the RNG state is restored.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from scalopt.core.comm import Comm

FORMAT = "scalopt.distributed.checkpoint/1"
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A distributed checkpoint cannot be loaded into this run (world size, algorithm, missing shard)."""


def shard_name(rank: int) -> str:
    return f"rank{rank:05d}.pt"


def _algorithm(optimizer: torch.optim.Optimizer) -> str:
    return getattr(optimizer, "algorithm", type(optimizer).__name__)


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    comm: Comm,
    optimizer: torch.optim.Optimizer,
    model: nn.Module | None = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    rng: bool = True,
) -> None:
    """Write this rank's shard; rank 0 writes the manifest after every rank finished (a collective)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    shard = {
        "rank": comm.rank,
        "world_size": comm.world_size,
        "step": int(step),
        "model": None if model is None else model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state() if rng else None,
        "extra": extra or {},
    }
    path = os.path.join(directory, shard_name(comm.rank))
    torch.save(shard, path + ".tmp")
    os.replace(path + ".tmp", path)
    comm.barrier()
    if comm.rank == 0:
        manifest = {
            "format": FORMAT,
            "world_size": comm.world_size,
            "algorithm": _algorithm(optimizer),
            "step": int(step),
            "shards": [shard_name(r) for r in range(comm.world_size)],
        }
        tmp = os.path.join(directory, MANIFEST + ".tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, os.path.join(directory, MANIFEST))
    comm.barrier()


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = os.path.join(os.fspath(directory), MANIFEST)
    if not os.path.exists(path):
        raise CheckpointError(
            f"no {MANIFEST} in {os.fspath(directory)!r}: not a (complete) distributed checkpoint"
        )
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: unknown checkpoint format {manifest.get('format')!r}, expected {FORMAT!r}"
        )
    return manifest


def load_checkpoint(
    directory: str | os.PathLike[str],
    *,
    comm: Comm,
    optimizer: torch.optim.Optimizer,
    model: nn.Module | None = None,
    rng: bool = True,
) -> dict[str, Any]:
    """Load this rank's shard into ``model`` and ``optimizer``; returns ``{"step", "extra", "manifest"}``."""
    manifest = read_manifest(directory)
    if manifest["world_size"] != comm.world_size:
        raise CheckpointError(
            f"checkpoint {os.fspath(directory)!r} was written by {manifest['world_size']} ranks, this run "
            f"has world_size={comm.world_size}: resume with {manifest['world_size']} ranks "
            f"(per-rank replicas, momentum and RNG states cannot be re-partitioned)"
        )
    if manifest["algorithm"] != _algorithm(optimizer):
        raise CheckpointError(
            f"checkpoint {os.fspath(directory)!r} holds {manifest['algorithm']!r} state, this run uses "
            f"{_algorithm(optimizer)!r}"
        )
    path = os.path.join(os.fspath(directory), manifest["shards"][comm.rank])
    if not os.path.exists(path):
        raise CheckpointError(f"shard {path!r} of rank {comm.rank} is missing")
    shard = torch.load(path, weights_only=True)
    if shard["rank"] != comm.rank:
        raise CheckpointError(f"{path!r} holds rank {shard['rank']}'s shard, expected rank {comm.rank}'s")
    if model is not None:
        if shard["model"] is None:
            raise CheckpointError(f"{path!r} has no model state (saved without model=)")
        model.load_state_dict(shard["model"])
    optimizer.load_state_dict(shard["optimizer"])
    if rng and shard["rng"] is not None:
        torch.set_rng_state(shard["rng"])
    return {"step": shard["step"], "extra": shard["extra"], "manifest": manifest}
