"""What every distributed wrapper shares: a real ``torch.optim.Optimizer`` over an inner optimizer.

``DistributedOptimizer(optimizer, *, comm, module=None, nonfinite="raise", deterministic=False)``

- **Sharing.** It calls ``Optimizer.__init__`` (so step hooks work on the wrapper) and then exposes
  the inner optimizer's ``param_groups``, ``state`` and ``defaults`` as its own (properties, so they
  stay shared after ``load_state_dict``), as torch's ``PostLocalSGDOptimizer`` does. LR schedulers
  attached to the wrapper change the inner optimizer's learning rates.
- **Same start.** At construction it broadcasts rank 0's parameters (and, with ``module=``, the
  module's buffers) to every rank: one broadcast per dtype over a flat buffer.
  ``add_param_group`` is a collective too (every rank calls it; the new parameters are broadcast).
- **No double communication.** ``module=`` a ``DistributedDataParallel`` model, or an inner
  optimizer that is itself a distributed wrapper, raises ``ValueError``.
- **Non-finite gradients agree.** ``nonfinite="raise"``: if any rank's gradient is non-finite,
  every rank raises ``FloatingPointError`` naming the ranks, before anything changes;
  ``"skip"``: every rank skips the step (parameters, state and step counters untouched) and counts it
  in ``skipped_steps``. Wrappers that do not communicate gradients every step pay one 1-byte
  ``all_gather`` per step for this agreement (a message, not a round).
- **State.** ``state_dict()`` is the inner optimizer's plus a ``"distributed"`` entry with the
  wrapper's own state (algorithm, world size, step counters, anchors, pending averages), all
  tensors and plain values, so ``torch.load(weights_only=True)`` reads it.
- **Metrics.** ``metrics()``: the inner optimizer's metrics (if any), the wrapper's counters and
  the Comm's ``bytes_sent``, ``messages``, ``rounds``.

``ModelVector`` is the flat view used for communication: parameters (param-group order) and
optionally floating buffers, one contiguous buffer per dtype, so each sync is one collective.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from scalopt.core.base import NONFINITE_POLICIES, call_closure, first_nonfinite
from scalopt.core.comm import Comm, check_comm, comm_counters
from scalopt.core.sharded import reject_dtensor
from scalopt.core.validate import check_bool, check_choice


def check_not_ddp(module: Any, optimizer: Any) -> None:
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel):
        raise ValueError(
            "module is wrapped in DistributedDataParallel, which already all-reduces gradients: a "
            "scalopt distributed optimizer over it would communicate twice. Pass the plain model "
            "(ddp_model.module) and drop DistributedDataParallel"
        )
    if isinstance(optimizer, DistributedOptimizer):
        raise ValueError(
            f"the inner optimizer is already a distributed {type(optimizer).__name__}: wrapping it again "
            f"would communicate twice; wrap the local optimizer instead"
        )


class ModelVector:
    """Flat contiguous buffers (one per dtype) over a fixed list of tensors."""

    def __init__(self, tensors: Iterable[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        self.groups: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in self.tensors:
            self.groups.setdefault(t.dtype, []).append(t)
        self.numel = sum(t.numel() for t in self.tensors)

    def gather(self) -> list[torch.Tensor]:
        """Fresh flat copies, one per dtype (order: dtypes as first met)."""
        return [torch.cat([t.detach().reshape(-1) for t in ts]) for ts in self.groups.values()]

    def scatter(self, flats: list[torch.Tensor]) -> None:
        """Copy flat buffers (as returned by ``gather``) back into the tensors."""
        with torch.no_grad():
            for ts, flat in zip(self.groups.values(), flats):
                views = [v.view_as(t) for v, t in zip(flat.split([t.numel() for t in ts]), ts)]
                torch._foreach_copy_(ts, views)


def floating_buffers(module: nn.Module | None) -> list[torch.Tensor]:
    return [] if module is None else [b for b in module.buffers() if b.is_floating_point()]


def grads_finite(grads: list[torch.Tensor]) -> bool:
    """True when every gradient entry is finite (one fused norm; per-tensor check only on suspicion)."""
    return first_nonfinite(grads) is None


class DistributedOptimizer(torch.optim.Optimizer):
    """Shared base of the wrappers (see the module docstring)."""

    #: name written into state_dict and checkpoint manifests
    algorithm: ClassVar[str] = "distributed"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        comm: Comm,
        module: nn.Module | None = None,
        nonfinite: str = "raise",
        deterministic: bool = False,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        check_not_ddp(module, optimizer)
        self.check_local(optimizer.param_groups)
        self.optimizer = optimizer
        self.comm = check_comm(comm)
        self.module = module
        self.nonfinite = check_choice("nonfinite", nonfinite, NONFINITE_POLICIES)
        self.deterministic = check_bool("deterministic", deterministic)
        self.counters: dict[str, int] = {"steps": 0, "skipped_steps": 0, "syncs": 0}
        self._sharing = False
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self._sharing = True
        self.broadcast_model(self.params() + list(self.module.buffers() if module is not None else []))

    # -- sharing the inner optimizer ---------------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        if self._sharing:
            self.optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        if self._sharing:
            self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        pass

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not self._sharing:  # Optimizer.__init__ re-adding the inner groups
            return
        params = param_group["params"]
        param_group = {**param_group, "params": [params] if torch.is_tensor(params) else list(params)}
        self.check_local([param_group])
        self.optimizer.add_param_group(param_group)
        self.broadcast_model(self.param_groups[-1]["params"])
        self.layout_changed()

    def check_local(self, groups: list[dict[str, Any]]) -> None:
        """``ValueError`` for FSDP2-sharded (DTensor) parameters: the wrappers average whole parameters
        over their own Comm, while FSDP2 already reduce-scatters gradients over its mesh."""
        reject_dtensor(
            type(self).__name__,
            [p for g in groups for p in g["params"]],
            "it averages whole parameters over its own comm, while FSDP2 already shards them and "
            "reduce-scatters their gradients over its device mesh; use a plain scalopt optimizer on the "
            "FSDP2 model, or this wrapper on the unsharded model",
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r}, comm={self.comm!r})"

    def params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.params() if p.grad is not None]

    def layout_changed(self) -> None:
        """Drop cached flat layouts (after add_param_group or load_state_dict)."""

    # -- communication helpers -------------------------------------------------------------------
    def broadcast_model(self, tensors: list[torch.Tensor]) -> None:
        """Rank 0's values of ``tensors`` on every rank (one broadcast per dtype)."""
        vec = ModelVector(tensors)
        flats = vec.gather()
        for flat in flats:
            self.comm.broadcast(flat, src=0)
        vec.scatter(flats)

    def average(self, tensors: list[torch.Tensor]) -> bool:
        """Replace ``tensors`` (the gradients, maybe buffers) by their mean over ranks, one all-reduce
        per dtype. A non-finite mean goes to the non-finite policy: raise, or False (skip; the tensors
        keep this rank's values). Every rank sees the same mean, so every rank decides alike."""
        vec = ModelVector(tensors)
        flats = vec.gather()
        for flat in flats:
            self.comm.all_reduce(flat, "mean", deterministic=self.deterministic)
        if not all(bool(torch.isfinite(f).all()) for f in flats):
            local = (
                "this rank's own gradient was finite" if grads_finite(self.grads()) else "including this rank"
            )
            if not self.nonfinite_outcome([-1], f" (the averaged gradient is non-finite; {local})"):
                return False
        vec.scatter(flats)
        return True

    def agree_finite(self, grads: list[torch.Tensor] | None = None) -> bool:
        """All ranks learn whether any rank's gradient is non-finite; False means skip this step."""
        local_bad = not grads_finite(self.grads() if grads is None else grads)
        flags = self.comm.all_gather(torch.tensor([int(local_bad)], dtype=torch.uint8))
        bad = [r for r, f in enumerate(flags) if int(f.item())]
        return self.nonfinite_outcome(bad)

    def nonfinite_outcome(self, bad_ranks: list[int], note: str = "") -> bool:
        if not bad_ranks:
            return True
        if self.nonfinite == "raise":
            ranks = ", ".join(map(str, bad_ranks)) if bad_ranks[0] >= 0 else "at least one rank"
            raise FloatingPointError(
                f"{type(self).__name__}: non-finite gradient on rank(s) {ranks}{note}; every rank raises "
                f"and nothing was changed. Lower the learning rate, clip gradients, or pass "
                f"nonfinite='skip' to make every rank skip such steps"
            )
        self.counters["skipped_steps"] += 1
        return False

    # -- state -----------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """The wrapper's own state (subclasses extend); plain values and tensors only."""
        return {
            "algorithm": self.algorithm,
            "world_size": self.comm.world_size,
            "counters": dict(self.counters),
        }

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        if extra.get("algorithm") != self.algorithm:
            raise ValueError(
                f"state_dict was saved by {extra.get('algorithm')!r}, cannot load it into {self.algorithm!r}"
            )
        if extra.get("world_size") != self.comm.world_size:
            raise ValueError(
                f"state_dict was saved with world_size={extra.get('world_size')}, this run has "
                f"world_size={self.comm.world_size}; resume with the same number of ranks"
            )
        self.counters = {k: int(v) for k, v in extra["counters"].items()}

    def state_dict(self) -> dict[str, Any]:
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        sd = self.optimizer.state_dict()
        sd["distributed"] = self.extra_state()
        for hook in self._optimizer_state_dict_post_hooks.values():
            out = hook(self, sd)
            if out is not None:
                sd = out
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            out = hook(self, state_dict)
            if out is not None:
                state_dict = out
        state_dict = dict(state_dict)
        extra = state_dict.pop("distributed", None)
        if extra is None:
            raise ValueError(
                f"state_dict has no 'distributed' entry: it was not saved by "
                f"{type(self).__name__}.state_dict(); "
                f"load a plain optimizer state into {type(self).__name__}.optimizer instead"
            )
        self.optimizer.load_state_dict(state_dict)
        self.load_extra_state(extra)
        self.layout_changed()
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    # -- metrics ---------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        inner = getattr(self.optimizer, "metrics", None)
        out: dict[str, float] = dict(inner()) if callable(inner) else {}
        out.update({k: float(v) for k, v in self.counters.items()})
        out.update(comm_counters(self.comm))
        return out

    def closure_loss(self, closure: Any) -> Any:
        return call_closure(closure)
