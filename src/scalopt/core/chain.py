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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from scalopt.core.base import ScaloptOptimizer, call_closure


class GroupBatch:
    """One param group's parameters that have gradients, with their state and current updates.

    ``updates`` is the current direction u. A transform whose direction is a quotient (Adam's
    m/(√v̂ + ε)) may hand it over unevaluated with :meth:`set_quotient`: the adapter then applies it
    fused (``addcdiv``) and the quotient is only formed if a later transform reads ``updates``.
    """

    def __init__(
        self, group: dict[str, Any], params: list[torch.Tensor], updates: list[torch.Tensor], states: list
    ) -> None:
        self.group, self.params, self.states = group, params, states
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

    def apply(self, lr: float) -> None:
        """x ← x − lr·u: the one place parameters change."""
        if self._denominator is not None:
            if self._param_coef:  # x − lr·(n/d + c·x) = (1 − lr·c)·x − lr·n/d, AdamW's order
                torch._foreach_mul_(self.params, 1.0 - lr * self._param_coef)
            torch._foreach_addcdiv_(self.params, self._updates, self._denominator, value=-lr)
        else:
            torch._foreach_add_(self.params, self._updates, alpha=-lr)

    def buffers(self, key: str) -> list[torch.Tensor]:
        return [s[key] for s in self.states]

    def per_step(self, fn: Any) -> list[float]:
        """``fn(t)`` for each parameter's 1-based step t (computed once per distinct t)."""
        cache: dict[int, float] = {}
        out = []
        for s in self.states:
            t = s["step"]
            if t not in cache:
                cache[t] = fn(t)
            out.append(cache[t])
        return out

    def bias_correction(self, beta: float) -> list[float]:
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
        states = []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                for t in self.transforms:
                    state.update(t.init(p, group))
            states.append(state)
        return states

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = call_closure(closure)
        found = self.grads_by_group()
        grad_norm = self.accept_step(found)
        if grad_norm is None:
            return loss
        batches = []
        for group, _, params, grads in found:
            states = self._init_state(group, params)
            for s in states:
                s["step"] += 1
            batches.append(GroupBatch(group, params, list(grads), states))
        ctx = StepContext(self, grad_norm)
        for t in self.transforms:
            t.update(batches, ctx)
        for b in batches:
            b.apply(b.group["lr"])
        return loss
