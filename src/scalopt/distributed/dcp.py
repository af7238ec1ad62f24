"""``torch.distributed.checkpoint`` (DCP) for scalopt optimizers: model, optimizer and scalopt's counters.

    save_dcp(path, model, optimizer)      # a collective: every rank calls it
    load_dcp(path, model, optimizer)      # into a freshly built model and optimizer

Replicated or FSDP2-sharded optimizer state goes through ``get_optimizer_state_dict`` /
``set_optimizer_state_dict`` (FQN-keyed; DDP, FSDP2 and unwrapped models alike). Under FSDP2,
element-wise state saves as DTensors sharded like its parameter, so DCP reshards it: a checkpoint
written by 2 ranks loads into 1 process (or any other world size). Shampoo's rank-local blocks save
under per-rank keys and load only at the same number of shards; another number raises
``ValueError`` naming both before anything else is read. State entries that exist only after some
steps (mL-BFGS's curvature pairs, Shampoo's pending roots) are read from the checkpoint's metadata,
not only from the fresh optimizer's template.

Optimizers whose state differs per rank by design (the distributed wrappers: CELGC, LocalSGD,
Overlap, EfficientAdam, OneBitAdam, …; Shampoo and mL-BFGS with ``comm=``, which split blocks over
ranks) save each rank's ``state_dict()`` as that rank's own DCP entry and load it back with
``load_state_dict``, which checks rank and world size. What ``state_dict()`` holds besides state and
param groups (scalopt's counters, a closure optimizer's generator state), which the FQN-keyed state
dict drops, travels as one extra entry and is put back through ``load_state_dict``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from scalopt.core.sharded import is_dtensor, shard_rank

#: optimizers whose FSDP2 state cannot be resharded to another world size
RANK_LOCAL = ("Shampoo",)


def _shards(optimizer: torch.optim.Optimizer) -> int:
    for g in optimizer.param_groups:
        for p in g["params"]:
            if is_dtensor(p):
                return shard_rank(p)[1]
    comm = getattr(optimizer, "comm", None)
    return 1 if comm is None else comm.world_size


def _per_rank(optimizer: torch.optim.Optimizer) -> bool:
    """True when every rank holds its own state (wrappers; block-sharded optimizers with comm=)."""
    comm = getattr(optimizer, "comm", None)
    return comm is not None and comm.world_size > 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _header(optimizer: torch.optim.Optimizer) -> str:
    return json.dumps({"optimizer": type(optimizer).__name__, "shards": _shards(optimizer)})


def save_dcp(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write model and optimizer state to ``path`` with DCP (every rank calls it)."""
    state: dict[str, Any] = {"model": get_model_state_dict(model), "scalopt": _header(optimizer)}
    if _per_rank(optimizer):
        buf = io.BytesIO()
        torch.save(optimizer.state_dict(), buf)
        state[f"rank{_rank()}"] = buf.getvalue()
    else:
        state["optim"] = get_optimizer_state_dict(model, optimizer)
        state["optim_extra"] = _extras(optimizer)
    dcp.save(state, checkpoint_id=os.fspath(path))


def _extras(optimizer: torch.optim.Optimizer) -> bytes:
    """What ``state_dict()`` holds besides state and param groups (scalopt's counters and last values,
    a closure optimizer's generator state, ...), which the FQN-keyed state dict drops."""
    sd = optimizer.state_dict()
    buf = io.BytesIO()
    torch.save({k: v for k, v in sd.items() if k not in ("state", "param_groups")}, buf)
    return buf.getvalue()


def _complete(template: dict[str, Any], metadata: Any) -> None:
    """Make the optimizer template hold exactly the saved state entries: add those the fresh optimizer
    lacks (with the saved shape; plain values as placeholders), drop those the checkpoint lacks."""
    state = template["state"]
    fqns = [f for g in template["param_groups"] for f in g["params"]]
    saved = {k for k in metadata.state_dict_metadata if k.startswith("optim.state.")}
    by_length = sorted(fqns, key=len, reverse=True)
    for key in saved:
        rest = key[len("optim.state.") :]
        fqn = next((f for f in by_length if rest.startswith(f + ".")), None)
        if fqn is None:
            continue
        entry = rest[len(fqn) + 1 :]
        if entry in state.get(fqn, {}):
            continue
        meta = metadata.state_dict_metadata[key]
        value: Any = 0
        if isinstance(meta, TensorStorageMetadata):
            value = torch.empty(meta.size, dtype=meta.properties.dtype)
        state.setdefault(fqn, {})[entry] = value
    for fqn in list(state):
        for entry in list(state[fqn]):
            if f"optim.state.{fqn}.{entry}" not in saved:
                del state[fqn][entry]
        if not state[fqn]:
            del state[fqn]


@contextlib.contextmanager
def _no_init_step(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """torch fills an optimizer's empty state with one zero-lr ``step()`` (in ``get_optimizer_state_dict``
    and ``set_optimizer_state_dict``); a closure optimizer (OASIS, HVP-RVR) cannot step without its
    closure. Gradients present make torch skip that step: its template then starts empty and
    ``_complete`` takes the entries from the checkpoint."""
    params = []
    if not optimizer.state and getattr(optimizer, "closure_protocol", None) is not None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is None]
    for p in params:
        p.grad = torch.zeros_like(p)
    try:
        yield
    finally:
        for p in params:
            p.grad = None


def load_dcp(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load what ``save_dcp`` wrote into ``model`` and ``optimizer`` (every rank calls it)."""
    path = os.fspath(path)
    head: dict[str, Any] = {"scalopt": ""}
    dcp.load(head, checkpoint_id=path)
    saved = json.loads(head["scalopt"])
    name, shards = type(optimizer).__name__, _shards(optimizer)
    if saved["optimizer"] != name:
        raise ValueError(f"checkpoint {path!r} holds {saved['optimizer']} state, not {name} state")
    if (name in RANK_LOCAL or _per_rank(optimizer)) and saved["shards"] != shards:
        raise ValueError(
            f"checkpoint {path!r} holds {name} state saved at world size {saved['shards']}; this run has "
            f"world size {shards}. Its state is split over ranks by world size and cannot be resharded: "
            f"resume with world size {saved['shards']}"
        )
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if _per_rank(optimizer):
        state[f"rank{_rank()}"] = b""
    else:
        state["optim_extra"] = b""
        with _no_init_step(optimizer):
            state["optim"] = get_optimizer_state_dict(model, optimizer)
        metadata = dcp.FileSystemReader(path).read_metadata()
        _complete(state["optim"], metadata)
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    if _per_rank(optimizer):
        optimizer.load_state_dict(torch.load(io.BytesIO(state[f"rank{_rank()}"]), weights_only=True))
        return
    with _no_init_step(optimizer):
        set_optimizer_state_dict(model, optimizer, state["optim"], options=StateDictOptions(strict=False))
    extras = torch.load(io.BytesIO(state["optim_extra"]), weights_only=True)
    if extras:  # put them back through the optimizer's own load_state_dict
        optimizer.load_state_dict({**optimizer.state_dict(), **extras})
