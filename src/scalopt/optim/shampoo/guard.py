"""Shampoo's step as a transaction: a step that raises or is skipped leaves the state as it was.

Finite gradients can overflow Shampoo's state: the factor statistics H_i ← β2·H_i + w·G_(i) G_(i)ᵀ
and the graft accumulator V ← β_g·V + (1−β_g)·G² square the gradient, so |G| ~ 1e20 overflows
float32 (|G| > 256 a float16 accumulator). Such a step must not leave an Inf behind (every later
root step would fail on it), nor advance any step counter.

Fast path, no extra work: B is a host-side (float64) upper bound on |entry| of every statistic and
graft accumulator. With g the Frobenius norm of all the step's gradients (after L2 weight decay,
bounded by ‖G‖ + wd·‖W‖), every entry of G_(i) G_(i)ᵀ and of G² is at most g² (Cauchy–Schwarz), so
after the step

    B ← max over the accumulators (β, w) of  β·B + w·g²
        (β2, 1−β2) for the statistics, (1, 1) for sums (β2 = 1; the adagrad graft),
        (β_g, 1−β_g) for the adam and rmsprop grafts; (β_s, 1−β_s) for statistics with their
        own β (``shampoo_beta``) and (β2, 1−β2) for the eigenbasis Adam (eigenvalue_correction)

If the new B ≤ max(dtype)/4 for the smallest dtype of the state, no entry can overflow and the step
runs in place. Otherwise the step is a transaction: the state of its parameters is copied first
(pending asynchronous roots are waited for and written into it), every state tensor of those
parameters is checked right after the accumulation (one reduction; with a Comm one 1-element
all-gather, so every rank decides alike) and B becomes the measured maximum. A non-finite value
fails the step: the copy, the counters and the last recorded values are put back, the param
groups' plans are rebuilt from the restored state at the next step (as after ``load_state_dict``),
and ``nonfinite="raise"`` raises ``FloatingPointError``, ``"skip"`` counts a skipped step. After
``load_state_dict`` B is unknown: the next step measures the whole state.

B is replicated across ranks (it depends on the averaged gradient's norm and on measurements
gathered from all ranks), so every rank takes the same path and the all-gather always matches.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from scalopt.linalg import nonfinite_report
from scalopt.optim.shampoo.plan import factor_beta

#: state keys of the accumulators B bounds: factor statistics and graft accumulators
_BOUNDED = re.compile(r"(^|\.)(factor\d+|exp_avg_sq)$")
MARGIN = 4.0


def effective_norm(groups: list[dict[str, Any]], params: list[list[torch.Tensor]], grad_norm: float) -> float:
    """An upper bound on ‖G‖ after L2 weight decay (triangle inequality): ‖G‖ + ‖(wd_g·W_g)_g‖ over the
    groups that couple the decay into the gradient."""
    decay = [
        group["weight_decay"] * _norm(ps)
        for group, ps in zip(groups, params)
        if group["weight_decay"] != 0 and not group["decoupled_weight_decay"]
    ]
    return grad_norm + float(torch.linalg.vector_norm(torch.stack(decay))) if decay else grad_norm


def _norm(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([n.double() for n in torch._foreach_norm(ts)]))


def accumulators(group: dict[str, Any]) -> list[tuple[float, float]]:
    """(β, w) of every accumulator a group's step updates: X ← β·X + w·(square of the gradient)."""
    beta = factor_beta(group)
    out = [(beta, 1.0 - beta) if beta < 1.0 else (1.0, 1.0)]
    if group["grafting"] is None and group["betas"][1] < 1.0:
        # eigenvalue_correction: Adam's V (in the eigenbasis: |G'| ≤ ‖G‖ too); merely conservative for
        # Shampoo without a graft
        out.append((group["betas"][1], 1.0 - group["betas"][1]))
    elif group["grafting"] == "adagrad":
        out.append((1.0, 1.0))
    elif group["grafting"] in ("adam", "rmsprop"):
        out.append((group["grafting_beta2"], 1.0 - group["grafting_beta2"]))
    return out


class StepGuard:
    """The bound B, kept across steps; a step runs in place while the next B is under the limit."""

    def __init__(self) -> None:
        self.bound: float | None = 0.0  # None: unknown (after load_state_dict)

    def next_bound(self, groups: list[dict[str, Any]], g: float) -> float:
        if self.bound is None:
            return math.inf
        g2 = g * g  # inf, not an error, if it overflows
        return max(b * self.bound + w * g2 for group in groups for b, w in accumulators(group))

    @staticmethod
    def limit(params: list[torch.Tensor]) -> float:
        return min(torch.finfo(p.dtype).max for p in params) / MARGIN


@dataclass
class Snapshot:
    """Copies of what a step may change: the state of its parameters, the counters, the last values."""

    states: dict[torch.Tensor, dict[str, Any] | None]
    counters: dict[str, float]
    last: dict[str, Any]

    @classmethod
    def take(
        cls,
        opt: Any,
        params: list[torch.Tensor],
        fresh: set[int],
        counters: dict[str, float],
        last: dict[str, Any],
    ) -> Snapshot:
        """``fresh``: ids of the parameters that had no state before this step's plans were made."""
        states: dict[torch.Tensor, dict[str, Any] | None] = {}
        for p in params:
            s = None if id(p) in fresh else opt.state.get(opt.state_key(p))
            states[opt.state_key(p)] = {k: _copy(v) for k, v in s.items()} if s else None
        return cls(states, counters, last)

    def restore(self, opt: Any) -> None:
        for p, s in self.states.items():
            if s is None:
                opt.state.pop(p, None)
            else:
                opt.state[p] = s
        opt._counters, opt._last = self.counters, self.last


def _copy(v: Any) -> Any:
    return v.clone() if isinstance(v, torch.Tensor) else v


def first_nonfinite_state(opt: Any, found: list[Any]) -> str:
    """Where the first non-finite state entry of this step's parameters is, for the error message."""
    for group, indices, params, _ in found:
        for i, p in zip(indices, params):
            for k, v in opt.state[opt.state_key(p)].items():
                if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(v.isfinite().all()):
                    return f"{k!r} of {opt.param_name(group, i)} ({nonfinite_report(v)})"
    return "the state of another rank"


def measure(states: list[dict[str, Any]], comm: Any, shards: Any = None) -> tuple[float, float]:
    """(max |entry| of the bounded accumulators, max |entry| of every tensor) over ``states`` and all
    ranks (of ``comm``, or of the FSDP2 mesh through ``shards``: a ``ShardReduce``); a NaN counts as inf."""
    bounded, other = [], []
    for s in states:
        for k, v in s.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel():
                (bounded if _BOUNDED.search(k) else other).append(v)
    device = (bounded + other)[0].device if bounded or other else torch.device("cpu")
    out = torch.zeros(2, dtype=torch.float64, device=device)
    for i, ts in enumerate((bounded, other)):
        if ts:
            out[i] = torch.stack([n.double() for n in torch._foreach_norm(ts, math.inf)]).max()
    out = torch.nan_to_num(out, nan=math.inf, posinf=math.inf)
    out[1] = torch.maximum(out[0], out[1])
    if comm is not None and comm.world_size > 1:
        out = torch.stack(list(comm.all_gather(out))).max(dim=0).values
    if shards is not None and shards.active:
        out = shards.max(out)
    a, b = out.tolist()
    return a, b
