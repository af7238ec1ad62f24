"""``torch.distributed.checkpoint`` (DCP) for scalopt optimizers: model, optimizer and scalopt's counters.

    save_dcp(path, model, optimizer)      # a collective: every rank calls it
    load_dcp(path, model, optimizer)      # into a freshly built model and optimizer

The optimizer goes through ``get_optimizer_state_dict`` / ``set_optimizer_state_dict`` (FQN-keyed,
which DDP, FSDP2 and unwrapped models share). Under FSDP2, element-wise state saves as DTensors
sharded like its parameter, so DCP reshards it: a checkpoint written by 2 ranks loads into 1
process (or any other world size). Shampoo's rank-local blocks save per rank and load only at the
same number of shards; another number raises ``ValueError`` naming both before anything is read.
scalopt's own counters (``steps``, ``skipped_steps``, …), which the FQN-keyed state dict does not
carry, travel as one extra entry, with the optimizer's class and shard count.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
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
    return 1


def _extra(optimizer: torch.optim.Optimizer) -> str:
    counters = getattr(optimizer, "_counters", None)
    return json.dumps(
        {"optimizer": type(optimizer).__name__, "shards": _shards(optimizer), "counters": counters or {}}
    )


def save_dcp(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write model and optimizer state to ``path`` with DCP (every rank calls it)."""
    state = {
        "model": get_model_state_dict(model),
        "optim": get_optimizer_state_dict(model, optimizer),
        "scalopt": _extra(optimizer),
    }
    dcp.save(state, checkpoint_id=os.fspath(path))


def load_dcp(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load what ``save_dcp`` wrote into ``model`` and ``optimizer`` (every rank calls it)."""
    path = os.fspath(path)
    head: dict[str, Any] = {"scalopt": ""}
    dcp.load(head, checkpoint_id=path)
    saved = json.loads(head["scalopt"])
    name, shards = type(optimizer).__name__, _shards(optimizer)
    if saved["optimizer"] != name:
        raise ValueError(f"checkpoint {path!r} holds {saved['optimizer']} state, not {name} state")
    if name in RANK_LOCAL and saved["shards"] != shards:
        raise ValueError(
            f"checkpoint {path!r} holds {name} state saved at world size {saved['shards']}; this run has "
            f"world size {shards}. {name} preconditions blocks of each rank's dim-0 shard, so its state "
            f"cannot be resharded: resume with world size {saved['shards']}"
        )
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    if hasattr(optimizer, "_counters"):
        optimizer._counters = dict(saved["counters"])
