"""Parameters sharded by FSDP2 (``torch.distributed.fsdp.fully_shard``): DTensors, seen as local shards.

FSDP2 turns each parameter into a ``DTensor`` whose local tensor is this rank's dim-0 shard (uneven
shards allowed: the last ranks may hold fewer rows, or none). scalopt optimizers step the local
shards with plain tensor math (``local``), keyed in ``optimizer.state`` by the DTensor parameter,
and make the quantities that span all parameters global over the device mesh:

    ‖g‖² = Σ_ranks Σ_sharded ‖g_local‖²  +  Σ_unsharded ‖g‖²        (``ShardReduce.norm``)
    non-finite anywhere  ⇔  any rank sees a non-finite entry         (``ShardReduce.any``)

The sums run over the mesh dimensions a parameter is ``Shard``-ed on (``Replicate`` dimensions, as
in HSDP, hold copies and are not summed), so every rank computes the same norm and takes the same
skip/raise decision. Unsharded (plain tensor) parameters are replicated by assumption and counted once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed support
    DTensor = None  # type: ignore[assignment,misc]


def is_dtensor(t: Any) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view: writes reach the DTensor), other tensors as they are."""
    return t._local_tensor if is_dtensor(t) else t


def any_dtensor(tensors: Any) -> bool:
    return any(is_dtensor(t) for t in tensors)


def reject_dtensor(what: str, params: Any, why: str) -> None:
    """``ValueError`` when any of ``params`` is a DTensor (an FSDP2-sharded parameter)."""
    for i, p in enumerate(params):
        if is_dtensor(p):
            raise ValueError(
                f"{what} does not accept parameters sharded by FSDP2 (parameter {i} is a DTensor of "
                f"shape {tuple(p.shape)}, placements {tuple(p.placements)}): {why}"
            )


def shard_groups(p: Any) -> tuple[Any, ...]:
    """The process groups of the mesh dimensions ``p`` is sharded on (empty for a plain tensor)."""
    if not is_dtensor(p):
        return ()
    mesh = p.device_mesh
    return tuple(mesh.get_group(d) for d, pl in enumerate(p.placements) if pl.is_shard())


class ShardReduce:
    """Global sums over the mesh for one step's parameters (see the module docstring)."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        groups = {shard_groups(p) for p in params if is_dtensor(p)}
        groups.discard(())
        if len(groups) > 1:
            raise ValueError(
                "the parameters of this optimizer are sharded over different device meshes or mesh "
                "dimensions; give each fully_shard mesh its own optimizer"
            )
        self.groups: tuple[Any, ...] = next(iter(groups)) if groups else ()
        self.sharded = [bool(shard_groups(p)) for p in params]

    @property
    def active(self) -> bool:
        return bool(self.groups)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over every rank of the shard groups (out of place)."""
        out = values.clone()
        for g in self.groups:
            dist.all_reduce(out, op=dist.ReduceOp.SUM, group=g)
        return out

    def norm(self, norms: list[torch.Tensor]) -> torch.Tensor:
        """The global L2 norm from the per-tensor local norms (float64 accumulation)."""
        ref = norms[0]
        sq = torch.stack([n.to(ref.device, torch.float64) ** 2 for n in norms])
        mask = torch.tensor(self.sharded, device=ref.device)
        shard_sq = torch.where(mask, sq, 0.0).sum()
        total = self.sum(shard_sq.reshape(1))[0] + torch.where(mask, 0.0, sq).sum()
        return total.sqrt()

    def max(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``values`` over every rank of the shard groups (out of place)."""
        out = values.clone()
        for g in self.groups:
            dist.all_reduce(out, op=dist.ReduceOp.MAX, group=g)
        return out

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is True on any rank of the shard groups."""
        if not self.active:
            return flag
        return bool(self.sum(torch.tensor([float(flag)], dtype=torch.float64))[0] > 0)


def shard_of(value: Any, p: torch.Tensor) -> Any:
    """A state tensor of FSDP2 parameter ``p`` shaped like its local shard, as a DTensor sharded the way
    ``p`` is (what ``torch.distributed.checkpoint`` saves and reshards); other values as they are."""
    if isinstance(value, torch.Tensor) and not is_dtensor(value) and value.shape == local(p).shape:
        return DTensor.from_local(
            value, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
        )
    return value


def shard_rank(p: torch.Tensor) -> tuple[int, int]:
    """(this rank's coordinate, number of shards) over the mesh dimensions ``p`` is sharded on."""
    rank, size = 0, 1
    for d, pl in enumerate(p.placements):
        if pl.is_shard():
            rank = rank * p.device_mesh.size(d) + p.device_mesh.get_local_rank(d)
            size *= p.device_mesh.size(d)
    return rank, size
