"""Transforms, ``chain`` and the one adapter that turns a chain into a ``torch.optim.Optimizer``.

A transform is a named step of an element-wise optimizer (optax style). It owns some per-parameter
state entries, created lazily, and rewrites the update directions of every param group at once:

    class Transform(Protocol):
        def init(self, param, group) -> dict[str, Tensor | float]   # its per-parameter state
        def update(self, batches: list[GroupBatch], ctx: StepContext) -> None

``update`` sees all groups in one call (each ``GroupBatch`` carries its group's hyperparameters),
so a global norm spans every parameter of the optimizer while hyperparameters stay per group.
It replaces ``batch.updates`` (or mutates it in place) and may update its own buffers in place;
it never touches parameters. The adapter applies ``x ← x − lr·u`` once, after the last transform:
parameters change in one place only.

Complex parameters are handled as torch.optim does: every transform sees ``view_as_real`` pairs
(real and imaginary parts as two real coordinates), so |g|² and global norms are the real ones.
Low precision: fp16/bf16 parameters are updated in float32 (float32 copies of x and g, float32
state) and the result is rounded to the parameter's dtype once, at the end.

The non-finite policy covers the update as well as the gradient: the new parameter values are
formed out of place and checked (one fused norm) before any parameter is written. A non-finite
one raises ``FloatingPointError`` naming the parameter (``nonfinite="raise"``) or skips the step
(``"skip"``). Parameters are never written then; the state is left bitwise unchanged under
``"skip"`` and for fp16/bf16 parameters (the transforms run on copies of their state, committed
only after the check), while under ``"raise"`` full-precision state holds the failed step's
moments (copying it every step would cost a pass over the state for a case finite gradients reach
only with eps = 0 or values near the dtype's largest): reload a checkpoint to retry.

A subclass whose chain is exactly a kernel torch ships steps a group in it instead (``fused_step``;
``GenericAdam`` → torch's fused Adam/AdamW through ``scalopt.transforms.adam_kernel``).

``torch.compile(opt.step)``: inside a traced step (``torch.compiler.is_compiling()``) the chain runs
its own ops (no fused dispatch), the Python numbers of the state (the step, running products) and
the counters become 0-dim tensors at the first traced step, as torch.optim's compiled Adam keeps its
steps, so nothing guarded changes from step to step: after warm-up no recompiles, no new graphs.
``nonfinite="raise"`` keeps its host-side checks (graph breaks, the parameter named);
``nonfinite="skip"`` becomes a masked step without a host sync: the transforms run on copies of
the state and every buffer and parameter is written through ``torch.where(ok, new, old)``, ok =
all gradients and all new values finite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from scalopt.core.base import ScaloptOptimizer, all_finite, call_closure, first_nonfinite


class GroupBatch:
    """One param group's parameters that have gradients, with their state and current updates.

    ``updates`` is the current direction u. A transform whose direction is a quotient (Adam's
    m/(√v̂ + ε)) may hand it over unevaluated with :meth:`set_quotient`: the adapter then applies it
    fused (``addcdiv``) and the quotient is only formed if a later transform reads ``updates``.
    """

    def __init__(
        self, group: dict[str, Any], params: list[torch.Tensor], updates: list[torch.Tensor], states: list
    ) -> None:
        #: ``params`` are the working values: ``view_as_real`` of complex parameters, float32 copies
        #: of fp16/bf16 ones; ``targets`` the tensors the new values are written into
        self.group, self.params, self.states = group, params, states
        self.targets: list[torch.Tensor] = params
        self.indices: list[int] = []
        #: the optimizer's state dicts when ``states`` are working copies (adopted by ``commit``)
        self.committed: list[dict[str, Any]] | None = None
        self._updates = updates
        self._denominator: list[torch.Tensor] | None = None
        self._param_coef = 0.0  # u also holds param_coef·x (deferred with a pending quotient)
        #: False while ``updates`` aliases tensors it must not change (the gradients, a momentum
        #: buffer): transforms then write out of place.
        self.owned = False

    @property
    def updates(self) -> list[torch.Tensor]:
        if self._denominator is not None:
            self._updates, self._denominator = torch._foreach_div(self._updates, self._denominator), None
            self.owned = True
            if self._param_coef:
                torch._foreach_add_(self._updates, self.params, alpha=self._param_coef)
                self._param_coef = 0.0
        return self._updates

    @updates.setter
    def updates(self, value: list[torch.Tensor]) -> None:
        self._updates, self._denominator, self._param_coef = value, None, 0.0

    def set_quotient(self, numerator: list[torch.Tensor], denominator: list[torch.Tensor]) -> None:
        """u = numerator / denominator, evaluated lazily; neither list is written to."""
        self._updates, self._denominator, self.owned, self._param_coef = numerator, denominator, False, 0.0

    def new_values(self, lr: float) -> list[torch.Tensor]:
        """x − lr·u as new tensors in the targets' dtypes (nothing is written)."""
        if self._denominator is not None:
            base = self.params
            if self._param_coef:  # x − lr·(n/d + c·x) = (1 − lr·c)·x − lr·n/d, AdamW's order
                base = torch._foreach_mul(self.params, 1.0 - lr * self._param_coef)
            new = torch._foreach_addcdiv(base, self._updates, self._denominator, value=-lr)
        else:
            new = torch._foreach_add(self.params, self._updates, alpha=-lr)
        return [n if n.dtype == t.dtype else n.to(t.dtype) for n, t in zip(new, self.targets)]

    def delta(self, lr: float) -> list[torch.Tensor]:
        """The step lr·u as new tensors in the working precision (nothing is written)."""
        return torch._foreach_mul(self.updates, lr)

    def buffers(self, key: str) -> list[torch.Tensor]:
        return [s[key] for s in self.states]

    def per_step(self, fn: Any) -> list[Any]:
        """``fn(t)`` for each parameter's 1-based step t (computed once per distinct t).

        t is an int in eager steps; once a step was traced by ``torch.compile`` it is a 0-dim tensor
        (``_init_state``) and ``fn`` gets the tensor inside a traced step, its value outside."""
        traced = torch.compiler.is_compiling()
        cache: dict[int, Any] = {}
        out = []
        for s in self.states:
            t = s["step"]
            if traced:  # a float32 step (exact to 2^24, as torch.optim's); β^t etc. in float64
                out.append(fn(t.to(torch.float64)))
                continue
            if isinstance(t, torch.Tensor):
                t = int(t.item())
            if t not in cache:
                cache[t] = fn(t)
            out.append(cache[t])
        return out

    def bias_correction(self, beta: float) -> list[Any]:
        """1 − β^t for each parameter's step t."""
        return self.per_step(lambda t: 1.0 - beta**t)

    def scale(self, factors: float | list[float]) -> None:
        """``u ← factor·u`` (one factor per parameter, or one for all)."""
        u = self.updates
        if self.owned:
            torch._foreach_mul_(u, factors)
        else:
            self.updates = torch._foreach_mul(u, factors)
            self.owned = True

    def add_params(self, alpha: float) -> None:
        """``u ← u + alpha·x`` (kept symbolic while a quotient is pending, so AdamW stays fused)."""
        if self._denominator is not None:
            self._param_coef += alpha
        else:
            self.add(self.params, alpha)

    def add(self, others: list[torch.Tensor], alpha: float) -> None:
        """``u ← u + alpha·other``."""
        u = self.updates
        if self.owned:
            torch._foreach_add_(u, others, alpha=alpha)
        else:
            self.updates = torch._foreach_add(u, others, alpha=alpha)
            self.owned = True


@dataclass
class StepContext:
    """What the adapter knows about this step: the global gradient norm and the optimizer."""

    optimizer: ScaloptOptimizer
    grad_norm: torch.Tensor
    scratch: dict[str, Any] = field(default_factory=dict)


class Transform(Protocol):
    def init(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]: ...

    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None: ...


def chain(*transforms: Transform) -> tuple[Transform, ...]:
    """The transforms in order; ``None`` entries (options turned off) are dropped."""
    return tuple(t for t in transforms if t is not None)


class ChainOptimizer(ScaloptOptimizer):
    """``torch.optim.Optimizer`` running a chain of transforms, then ``x ← x − lr·u``."""

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        transforms: Sequence[Transform],
        *,
        nonfinite: str = "raise",
    ) -> None:
        self.transforms = tuple(transforms)
        super().__init__(params, defaults, nonfinite=nonfinite)

    def _init_state(self, group: dict[str, Any], params: list[torch.Tensor]) -> list[dict[str, Any]]:
        traced = torch.compiler.is_compiling()
        states = []
        for p in params:
            state = self.state[self.state_key(p)]
            if not state:
                state["step"] = 0
                like = working_view(p)
                if like.dtype in LOW_PRECISION:
                    like = torch.zeros_like(like, dtype=torch.float32)
                for t in self.transforms:
                    state.update(t.init(like, group))
            if traced:
                tensor_scalars_(state)
            states.append(state)
        return states

    def fused_step(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor], states: list
    ) -> Callable[[], None] | None:
        """The whole step of this group as one fused kernel call (run later, after the other groups'
        updates passed their check), or None when the group's math or tensors do not allow it.
        Subclasses whose chain is exactly a kernel torch ships override it; parameters and gradients
        are ``view_as_real`` views. The call counts the states' steps itself."""
        return None

    def advance(
        self, *, allow_fused: bool = True, copy_state: bool = False
    ) -> tuple[list[GroupBatch], list[Callable[[], None]]] | None:
        """Run the step's prologue and transforms; None when the step is skipped (nothing changed).

        Returns the batches holding each chained group's pending update and the fused calls of the
        other groups; ``check_update``, ``commit`` and the writes (``step``) finish the step.
        ``copy_state``: the transforms run on copies of the state, adopted only by ``commit``."""
        found = self.grads_by_group()
        grad_norm = self.accept_step(found)
        if grad_norm is None:
            return None
        return self._transform(found, grad_norm, allow_fused=allow_fused, copy_state=copy_state)

    def _transform(
        self, found: list[Any], grad_norm: torch.Tensor, *, allow_fused: bool, copy_state: bool
    ) -> tuple[list[GroupBatch], list[Callable[[], None]]]:
        """Steps counted, transforms run on every group with gradients (``advance`` after its checks)."""
        fused: list[Callable[[], None]] = []
        transactional = copy_state or self.nonfinite == "skip"
        allow_fused = allow_fused and not torch.compiler.is_compiling()  # traced: the chain's own ops
        batches = []
        for group, idx, params, grads in found:
            states = self._init_state(group, params)
            views = [working_view(p) for p in params]
            gviews = [working_view(g) for g in grads]
            low = any(v.dtype in LOW_PRECISION for v in views)
            if allow_fused and not low and not copy_state:
                call = self.fused_step(group, views, gviews, states)
                if call is not None:
                    fused.append(call)
                    continue
            if low:  # fp16/bf16: update float32 copies
                work = [v.float() if v.dtype in LOW_PRECISION else v for v in views]
                gviews = [g.float() if g.dtype in LOW_PRECISION else g for g in gviews]
            else:
                work = views
            copy = transactional or low
            wstates = (
                [{k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()} for s in states]
                if copy
                else states
            )
            for s in wstates:
                s["step"] += 1
            b = GroupBatch(group, work, gviews, wstates)
            b.targets, b.indices = views, idx
            b.committed = states if copy else None
            batches.append(b)
        ctx = StepContext(self, grad_norm)
        for t in self.transforms:
            t.update(batches, ctx)
        return batches, fused

    def check_update(self, batches: list[GroupBatch], values: list[list[torch.Tensor]]) -> bool:
        """The non-finite policy on the new values (or steps): True when the step may be committed."""
        flat = [t for vs in values for t in vs]
        bad = first_nonfinite(flat)
        if not self._reduce.any(bad is not None):  # FSDP2 shards: every rank decides alike
            return True
        name = "a parameter shard of another rank"
        for b, vs in zip(batches, values):
            if bad is None:
                break
            if bad < len(vs):
                name = self.param_name(b.group, b.indices[bad])
                break
            bad -= len(vs)
        self.count("steps", -1)
        if self.nonfinite == "raise":
            raise FloatingPointError(
                f"non-finite update for {name} (from finite gradients); no parameter was changed. "
                f"Lower the learning rate, raise eps, or pass nonfinite='skip' to skip such steps"
            )
        self.count("skipped_steps")
        return False

    def commit(self, batches: list[GroupBatch], ok: torch.Tensor | None = None) -> None:
        """Adopt the working state of batches that ran on copies (``ok``: only where it is True,
        entry by entry with ``torch.where``; the step is then skipped without a host sync)."""
        for b in batches:
            if b.committed is None:
                continue
            for dst, src in zip(b.committed, b.states):
                if ok is None:
                    dst.update(src)
                    continue
                for k, v in src.items():
                    old = dst.get(k)
                    if isinstance(old, torch.Tensor) and old.shape == v.shape:
                        old.copy_(torch.where(ok, v, old))
                    else:  # an entry created by this step (kept: the step counter decides its use)
                        dst[k] = v

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = call_closure(closure)
        if torch.compiler.is_compiling() and self.nonfinite == "skip":
            self._masked_step()
            return loss
        pending = self.advance()
        if pending is None:
            return loss
        batches, fused = pending
        new = [b.new_values(b.group["lr"]) for b in batches]
        if not self.check_update(batches, new):
            return loss
        self.commit(batches)
        for b, values in zip(batches, new):
            torch._foreach_copy_(b.targets, values)
        for call in fused:
            call()
        return loss

    def _masked_step(self) -> None:
        """``nonfinite="skip"`` without a host sync (the step ``torch.compile`` traces): the step is
        taken on copies of the state and every buffer and parameter is written through
        ``torch.where(ok, new, old)``, ok = every gradient and every new value finite."""
        found = self.grads_by_group()
        if not found:
            return
        grad_norm = self.global_norm([n for *_, grads in found for n in torch._foreach_norm(grads)])
        ok = torch.isfinite(grad_norm)
        self.record("grad_norm", grad_norm)
        batches, _ = self._transform(found, grad_norm, allow_fused=False, copy_state=True)
        new = [b.new_values(b.group["lr"]) for b in batches]
        ok = ok & all_finite([t for vs in new for t in vs])
        self.count("steps", ok)
        self.count("skipped_steps", ~ok)
        self.commit(batches, ok)
        for b, values in zip(batches, new):
            torch._foreach_copy_(b.targets, [torch.where(ok, n, t) for n, t in zip(values, b.targets)])


LOW_PRECISION = (torch.float16, torch.bfloat16)


def tensor_scalars_(state: dict[str, Any]) -> None:
    """Python numbers in a state (the step, running products) as 0-dim float32 CPU tensors, as
    torch.optim keeps its steps on the host: a traced step then reads tensors, not numbers
    ``torch.compile`` would guard on and recompile for at every step (``per_step`` hands functions
    the step in float64). Done once, at the first traced step. (float64 state scalars were measured
    to lose the masked ``copy_`` of a skip-policy step under the aot_eager backend.)"""
    for k, v in state.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            state[k] = torch.tensor(float(v), dtype=torch.float32)


def working_view(t: torch.Tensor) -> torch.Tensor:
    """A complex tensor as real pairs (``view_as_real``, as torch.optim does); others as they are."""
    return torch.view_as_real(t) if t.is_complex() else t
