"""The base every scalopt optimizer shares: the torch.optim contract plus scalopt's policies.

``ScaloptOptimizer`` subclasses ``torch.optim.Optimizer`` and adds what every algorithm needs the
same way:

- hyperparameter validation for the defaults and for every group given to ``add_param_group``
  (``ValueError`` naming the argument, the value and the allowed range);
- parameter names (``model.named_parameters()`` is accepted, as torch.optim does) used in errors;
- the non-finite gradient policy: ``nonfinite="raise"`` raises ``FloatingPointError`` naming the
  parameter before anything changes; ``"skip"`` leaves parameters and state untouched and counts
  the skip;
- a clear error for sparse gradients unless the class sets ``supports_sparse``;
- optimizer-wide counters that travel in ``state_dict`` and feed ``metrics()``;
- parameters sharded by FSDP2 (DTensors): ``grads_by_group`` hands out the local shards,
  ``state_key`` maps a shard back to its parameter (the key of ``self.state``), and the global
  gradient norm and the non-finite decision are reduced over the device mesh
  (``scalopt.core.sharded``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch

from scalopt.core.sharded import ShardReduce, is_dtensor, local, reject_dtensor, shard_of
from scalopt.core.validate import check_choice

#: the non-finite policies every scalopt optimizer and distributed wrapper accepts
NONFINITE_POLICIES = ("raise", "skip")


def first_nonfinite(tensors: list[torch.Tensor]) -> int | None:
    """Position of the first tensor holding a NaN or Inf, None when all are finite.

    One fused norm (in float32 for fp16/bf16 tensors, so their finite values cannot overflow it) and
    one host sync; tensors are inspected one by one only when that norm is not finite."""
    if not tensors:
        return None
    low = all(t.dtype in (torch.float16, torch.bfloat16) for t in tensors)
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32 if low else None)
    if bool(torch.isfinite(stack_norms(norms).sum())):
        return None
    for i, t in enumerate(tensors):
        if not bool(torch.isfinite(t).all()):
            return i
    return None


def stack_norms(norms: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Per-tensor norms as one float64 vector (one stack and one cast when they share a dtype and a
    device, the common case: per-tensor casts cost a dispatch each, which CPU steps feel)."""
    ref = norms[0]
    if all(n.dtype == ref.dtype and n.device == ref.device for n in norms):
        return torch.stack(norms).to(torch.float64)
    return torch.stack([n.to(ref.device, torch.float64) for n in norms])


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A boolean 0-dim tensor: every entry of every tensor is finite (one fused norm, no host sync)."""
    low = all(t.dtype in (torch.float16, torch.bfloat16) for t in tensors)
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32 if low else None)
    return torch.isfinite(stack_norms(norms).sum())


Validator = Callable[[str, Any], Any]


def call_closure(closure: Callable[[], Any] | None) -> Any:
    """``step(closure)``'s contract: re-evaluate the loss with gradients enabled (None without one)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


# keys torch.optim.Optimizer adds to ``defaults`` by itself (``__setstate__``, run by copy.deepcopy and
# unpickling, e.g. in the Hugging Face Trainer): not hyperparameters that a saved param group carries
TORCH_DEFAULT_KEYS = frozenset({"differentiable"})


class ScaloptOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` with validation, naming, non-finite policy, counters and metrics."""

    #: name -> check(name, value) for every per-group hyperparameter; run on defaults and new groups.
    hyperparameters: ClassVar[Mapping[str, Validator]] = {}
    supports_sparse: ClassVar[bool] = False
    #: why the algorithm cannot step FSDP2 shards (None: it can); such optimizers reject DTensors
    dtensor_unsupported: ClassVar[str | None] = None

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *, nonfinite: str = "raise") -> None:
        self.nonfinite = check_choice("nonfinite", nonfinite, NONFINITE_POLICIES)
        self._counters: dict[str, float] = {"steps": 0, "skipped_steps": 0}
        self._last: dict[str, float] = {}
        self._shard_keys: dict[int, torch.Tensor] = {}
        self._reduce = ShardReduce([])
        self._validate_group(defaults)
        super().__init__(params, defaults)

    # -- validation -------------------------------------------------------------------------
    def _validate_group(self, group: Mapping[str, Any]) -> None:
        for name, check in self.hyperparameters.items():
            if name in group:
                check(name, group[name])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            if self.dtensor_unsupported is not None:
                reject_dtensor(type(self).__name__, self.param_groups[-1]["params"], self.dtensor_unsupported)
            self._validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    # -- gradients ----------------------------------------------------------------------------
    def param_name(self, group: Mapping[str, Any], index: int) -> str:
        """The parameter's name if the optimizer was given names, else its position and shape."""
        names = group.get("param_names")
        if names is not None:
            return names[index]
        offset = 0
        for g in self.param_groups:
            if g is group:
                break
            offset += len(g["params"])
        p = group["params"][index]
        return f"parameter {offset + index} (shape {tuple(p.shape)})"

    def grads_by_group(
        self,
    ) -> list[tuple[dict[str, Any], list[int], list[torch.Tensor], list[torch.Tensor]]]:
        """(group, indices, params, grads) for every group with at least one gradient.

        FSDP2-sharded parameters come as their local shards (and gradients); ``state_key`` maps such a
        shard back to the parameter that keys ``self.state``."""
        out = []
        self._shard_keys = {}
        found = []
        for group in self.param_groups:
            idx, params, grads = [], [], []
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse and not self.supports_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients "
                        f"({self.param_name(group, i)}); build the embedding with sparse=False"
                    )
                idx.append(i)
                found.append(p)
                if is_dtensor(p):
                    self._shard_keys[id(local(p))] = p
                params.append(local(p))
                grads.append(local(p.grad))
            if params:
                out.append((group, idx, params, grads))
        self._reduce = ShardReduce(found)
        return out

    def state_key(self, p: torch.Tensor) -> torch.Tensor:
        """The parameter that keys ``self.state`` for ``p`` (a local shard from ``grads_by_group``, or
        a parameter itself)."""
        return self._shard_keys.get(id(p), p)

    def check_finite(
        self, batches: list[tuple[dict[str, Any], list[int], list[torch.Tensor], list[torch.Tensor]]]
    ) -> torch.Tensor | None:
        """Global L2 norm of all gradients, or ``None`` when the step must be skipped.

        Raises ``FloatingPointError`` naming the first non-finite parameter under ``nonfinite="raise"``.
        The norm is what clipping and the ``grad_norm`` metric use, so it is computed once per step.
        """
        norms: list[torch.Tensor] = []
        for _, _, _, grads in batches:
            norms.extend(torch._foreach_norm(grads))
        ref = norms[0]
        total = self.global_norm(norms)
        if bool(torch.isfinite(total)):
            return total
        bad = self._first_nonfinite(batches)
        if bad is None and self._reduce.active:
            bad = "a gradient shard of another rank"
        if bad is None:  # finite gradients whose squared norm overflowed float32
            return torch.linalg.vector_norm(torch.stack([n.to(ref.device, torch.float64) for n in norms]))
        if self.nonfinite == "raise":
            raise FloatingPointError(
                f"non-finite gradient in {bad}; nothing was changed. Lower the learning rate, clip "
                f"gradients, or pass nonfinite='skip' to skip such steps"
            )
        self.count("skipped_steps")
        return None

    def global_norm(self, norms: list[torch.Tensor]) -> torch.Tensor:
        """‖(n_1, …, n_k)‖ of per-tensor norms of this step's tensors (from ``grads_by_group``): over all
        ranks for FSDP2 shards (float64 sums), else summed in float32 or the norms' dtype if wider."""
        if self._reduce.active:
            return self._reduce.norm(norms)
        ref = norms[0]
        acc = torch.promote_types(ref.dtype, torch.float32)  # bf16/fp16 norms are summed in float32
        if all(n.dtype == acc and n.device == ref.device for n in norms):  # no per-tensor casts
            return torch.linalg.vector_norm(torch.stack(norms))
        return torch.linalg.vector_norm(torch.stack([n.to(ref.device, acc) for n in norms]))

    def accept_step(self, batches: list[Any]) -> torch.Tensor | None:
        """The global gradient norm if this step goes ahead (counted, recorded), else ``None``:
        no gradients at all, or a non-finite one under ``nonfinite="skip"``."""
        if not batches:
            return None
        grad_norm = self.check_finite(batches)
        if grad_norm is None:
            return None
        self.count("steps")
        self.record("grad_norm", grad_norm)
        return grad_norm

    def _first_nonfinite(self, batches: list[Any]) -> str | None:
        for group, idx, _, grads in batches:
            bad = first_nonfinite(grads)
            if bad is not None:
                return self.param_name(group, idx[bad])
        return None

    # -- counters, metrics, state ---------------------------------------------------------------
    def count(self, name: str, amount: float | torch.Tensor = 1) -> None:
        """Add to a counter. Inside ``torch.compile`` (or given a tensor) the counter becomes a 0-dim
        float64 tensor, so a traced step neither syncs nor guards on a number that changes per step."""
        current = self._counters.get(name, 0)
        if torch.compiler.is_compiling() or isinstance(amount, torch.Tensor):
            if not isinstance(current, torch.Tensor):
                current = torch.tensor(float(current), dtype=torch.float64)
            self._counters[name] = current + amount
        else:
            self._counters[name] = current + amount

    def record(self, name: str, value: torch.Tensor | float) -> None:
        """Remember the latest value of a per-step quantity for ``metrics()`` (converted lazily)."""
        self._last[name] = value

    def metrics(self) -> dict[str, float]:
        """What the optimizer knows that a user wants to log: counters and latest per-step values."""
        out: dict[str, float] = {k: float(v) for k, v in self._counters.items()}
        for name, value in self._last.items():
            out[name] = float(value.item() if isinstance(value, torch.Tensor) else value)
        return out

    def export_shard_state(self, p: torch.Tensor, state: dict[str, Any]) -> dict[str, Any]:
        """The saved form of the state of FSDP2 parameter ``p`` (kept as local tensors while stepping):
        entries shaped like the local shard become DTensors sharded like ``p``, so
        ``torch.distributed.checkpoint`` saves each rank's part and reshards them to another world size."""
        return {k: shard_of(v, p) for k, v in state.items()}

    def import_shard_state(self, p: torch.Tensor, state: dict[str, Any]) -> dict[str, Any]:
        """The inverse of ``export_shard_state``: DTensor entries become this rank's local tensors."""
        return {k: (local(v).clone() if is_dtensor(v) else v) for k, v in state.items()}

    def _flat_params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        params = self._flat_params()
        if any(is_dtensor(p) for p in params):
            sd["state"] = {
                i: (self.export_shard_state(params[i], st) if is_dtensor(params[i]) else st)
                for i, st in sd["state"].items()
            }
        last = {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in self._last.items()}
        counters = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in self._counters.items()}
        sd["scalopt"] = {"counters": counters, "last": last, "optimizer": type(self).__name__}
        return sd

    def _check_owner(self, state_dict: Mapping[str, Any], extra: Mapping[str, Any] | None) -> None:
        """A clear error when the state belongs to another optimizer (before anything is loaded)."""
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or "state" not in state_dict:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict needs an optimizer state_dict with 'state' and "
                f"'param_groups', got keys {sorted(state_dict)}"
            )
        owner = (extra or {}).get("optimizer")
        missing = sorted(
            {k for g in groups for k in self.defaults if k not in g and k not in TORCH_DEFAULT_KEYS}
        )
        if missing:
            who = f"a {owner}" if owner else "another optimizer (not a scalopt one)"
            raise ValueError(
                f"this state_dict belongs to {who}, not to {type(self).__name__}: its param groups lack "
                f"{', '.join(missing)}. Load a state_dict saved by {type(self).__name__}.state_dict()"
            )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("scalopt", None)
        self._check_owner(state_dict, extra)
        super().load_state_dict(state_dict)
        for p in self._flat_params():
            if is_dtensor(p) and p in self.state:
                self.state[p] = self.import_shard_state(p, self.state[p])
        if extra is not None:
            self._counters = dict(extra["counters"])
            self._last = dict(extra.get("last", {}))
