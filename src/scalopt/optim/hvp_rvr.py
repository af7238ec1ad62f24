"""HVP-RVR: SGD on a gradient estimate kept current by Hessian-vector products, with random resets.

Arjevani, Carmon, Duchi, Foster, Sekhari, Sridharan, "Second-Order Information in Non-Convex
Stochastic Optimization: Power and Limitations", COLT 2020, PMLR 125:242–299, arXiv 2006.13476.
Instead of a fresh stochastic gradient every step, the estimate g_t is carried forward and corrected
by the change of gradient along the last step, ∇F(x_t) − ∇F(x_{t−1}) = ∫₀¹ ∇²F(x_{t−1} + sΔ)·Δ ds,
which a Hessian-vector product at a uniformly drawn point of the segment estimates without bias.
Only single-point stochastic gradients and HVPs are needed (no two-point same-sample differences as
in SPIDER/SARAH/STORM). A reset with probability p bounds the accumulated noise.

Update (z: fresh samples; every random draw from the optimizer's own ``torch.Generator``):

    x_{t+1} = x_t − lr·g_t                                   (no normalization, no momentum)
    t = 0:  g_0 = (1/b)·Σ_{j≤b} ∇F(x_0; z_j)
    t ≥ 1:  with probability p                                (one U[0,1) draw < p):
                g_t = (1/b)·Σ_{j≤b} ∇F(x_t; z_j)              reset
            otherwise, with Δ = x_t − x_{t−1}, K_t = max(1, ⌈‖Δ‖²/r²⌉), u_k ~ U[0,1) i.i.d.:
                g_t = g_{t−1} + (1/K_t)·Σ_{k≤K_t} ∇²F(x_{t−1} + u_k·Δ; z_k)·Δ

The points x_{t−1} + u_k·Δ are evaluated by loading them into the parameters temporarily; the
parameters are restored before the update. On a quadratic with exact gradients and Hessians the
sum telescopes, g_t = ∇F(x_t), so the method is gradient descent; with p = 1 it is minibatch SGD
with b batches per step.

The closure protocol (``scalopt.core.closure``, "loss+sample"): ``opt.step(closure, sample)``.
``closure()`` is the loss of the loop's current batch, which is itself a fresh sample: it is z_1 of
a reset and z_1 of the HVP sum; ``sample()`` draws one more fresh batch and returns its loss, for
z_2..z_b of a reset and z_2..z_K of the HVP sum. Neither calls backward. Draw order per step t ≥ 1:
the reset coin, then (no reset) the K_t points u_k.

Symbols ↔ arguments: p ``reset_prob``, b ``reset_batches`` (counted in batches: with a loop batch of
B examples a reset averages b·B), r ``radius``; ``seed`` seeds the generator. The paper states no
practical defaults; ours: reset_prob 0.01, reset_batches 8, radius inf (K_t = 1). ``reset_prob``
is in [0, 1]: 0 is deliberate, the recursion alone after g_0 (exact on a quadratic with exact
gradients and Hessians, which the tests use; with stochastic ones its noise grows without bound, so
do not train with it). The paper ties
K_t to ‖Δ‖²; ``radius`` is this module's form of that choice, and the uniform points u_k on the
segment (which make each product unbiased for the gradient change) are this module's reading of
where the paper evaluates them. With per-group ``lr`` each group steps with its own lr; Δ is the
actual change of the parameters. ``add_param_group`` forces a reset at the next step, where the new
parameters get their state; a parameter the loss did not use so far joins at the next reset.

Non-finite gradients or products follow ``nonfinite`` ("raise" names the parameter; "skip" leaves
parameters and state untouched, counts the skip and forces a reset at the next step).
``metrics()``: steps, skipped_steps, gradients, hvps, resets (running totals, in ``state_dict``) and
the latest step's grad_norm (of g_t) and step_hvps. ``step`` returns the first loss it evaluated:
at x_t on a reset, but at x_{t−1} + u_1·Δ (a random point of the last step's segment, not x_t) on
every other step, so a loss curve logged from it is not the training loss at the iterates (no
forward pass is spent only on logging; evaluate the loss separately when the curve matters).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from scalopt.core.closure import LOSS_AND_SAMPLE, Batch, SecondOrderOptimizer
from scalopt.core.validate import check_int, check_interval, check_lr, check_positive

Closure = Callable[[], torch.Tensor]


class HVPRVR(SecondOrderOptimizer):
    """HVP recursive variance reduction. Step with ``opt.step(closure, sample)``."""

    closure_protocol = LOSS_AND_SAMPLE
    hyperparameters = {"lr": check_lr}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        *,
        reset_prob: float = 0.01,
        reset_batches: int = 8,
        radius: float = math.inf,
        seed: int = 0,
        nonfinite: str = "raise",
    ) -> None:
        self.reset_prob = check_interval("reset_prob", reset_prob, 0.0, 1.0, high_open=False)
        self.reset_batches = check_int("reset_batches", reset_batches, minimum=1)
        self.radius = check_positive("radius", radius, allow_inf=True)
        super().__init__(params, {"lr": lr}, seed=seed, nonfinite=nonfinite)
        self._counters["resets"] = 0
        self._force_reset = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._force_reset = True

    def extra_state(self) -> dict[str, Any]:
        return {"force_reset": self._force_reset}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self._force_reset = bool(extra["force_reset"])

    def step(  # type: ignore[override]
        self, closure: Closure | None = None, sample: Closure | None = None
    ) -> torch.Tensor | None:
        self.require(closure, sample)
        trainable = self.trainable()
        if not trainable:
            return None
        started = any(self.state.get(p) for _, _, ps in trainable for p in ps)
        coin = bool(self.uniform(1)[0] < self.reset_prob) if started else True
        known = []
        for group, idx, ps in trainable:
            pairs = [(i, p) for i, p in zip(idx, ps) if self.state.get(p)]
            if pairs:
                known.append((group, [i for i, _ in pairs], [p for _, p in pairs]))
        hvps_before = self._counters["hvps"]
        if coin or self._force_reset:
            loss, batches, g = self._reset(closure, sample, trainable)
            reset = True
        else:
            loss, batches, g = self._recurse(closure, sample, known)
            reset = False
        if batches is None:
            return loss
        with torch.no_grad():
            norm = self.check_finite([(grp, i, ps, gb) for (grp, i, ps, _), gb in zip(batches, g)])
            if norm is None:
                self._force_reset = True
                return loss
            for (group, _, ps, _), gb in zip(batches, g):
                for p, gp in zip(ps, gb):
                    st = self.state[p]
                    if "g" in st:
                        st["g"].copy_(gp)
                        st["prev"].copy_(p)
                    else:
                        st["g"] = gp.clone()
                        st["prev"] = p.detach().clone()
                torch._foreach_add_(ps, gb, alpha=-group["lr"])
        self._force_reset = False
        self._counters["steps"] += 1
        self._counters["resets"] += int(reset)
        self.record("grad_norm", norm)
        self.record("step_hvps", self._counters["hvps"] - hvps_before)
        return loss

    def _finite(self, batches: list[Batch]) -> bool:
        with torch.no_grad():
            ok = self.check_finite([(g, i, p, [x.detach() for x in gs]) for g, i, p, gs in batches])
        if ok is None:
            self._force_reset = True
        return ok is not None

    def _reset(
        self, closure: Closure, sample: Closure, trainable: list[Any]
    ) -> tuple[torch.Tensor, list[Batch] | None, list[list[torch.Tensor]]]:
        """(1/b)·Σ_j ∇F(x_t; z_j): the closure's batch and b − 1 sampled ones."""
        loss, batches = self.gradients(closure, trainable, create_graph=False)
        if not batches or not self._finite(batches):
            return loss, None, []
        b = self.reset_batches
        g = [[x / b for x in gs] for _, _, _, gs in batches]
        index = {id(p): (j, k) for j, (_, _, ps, _) in enumerate(batches) for k, p in enumerate(ps)}
        for _ in range(b - 1):
            _, extra = self.gradients(sample, trainable, create_graph=False)
            if not self._finite(extra):
                return loss, None, []
            for _, _, ps, gs in extra:
                for p, x in zip(ps, gs):
                    if id(p) in index:  # a parameter the current batch leaves unused keeps no state
                        j, k = index[id(p)]
                        g[j][k].add_(x, alpha=1.0 / b)
        return loss, batches, g

    def _recurse(
        self, closure: Closure, sample: Closure, known: list[Any]
    ) -> tuple[torch.Tensor, list[Batch] | None, list[list[torch.Tensor]]]:
        """g_{t−1} + (1/K)·Σ_k ∇²F(x_{t−1} + u_k·Δ; z_k)·Δ over the parameters with state."""
        params = [p for _, _, ps in known for p in ps]
        with torch.no_grad():
            prev = [self.state[p]["prev"] for p in params]
            delta = torch._foreach_sub([p.detach() for p in params], prev)
            sq = sum(float(torch.linalg.vector_norm(d.double()) ** 2) for d in delta)
        k_t = max(1, math.ceil(sq / self.radius**2)) if math.isfinite(sq) else 1
        u = self.uniform(k_t)
        by_param = {id(p): d for p, d in zip(params, delta)}
        acc = {id(p): torch.zeros_like(p) for p in params}
        first_loss = None
        for k in range(k_t):
            with torch.no_grad():
                point = torch._foreach_add(prev, delta, alpha=float(u[k]))
            with self.loaded(params, point):
                loss, batches = self.gradients(closure if k == 0 else sample, known, create_graph=True)
                first_loss = loss if first_loss is None else first_loss
                if not batches:
                    continue
                if not self._finite(batches):
                    return first_loss, None, []
                hv = self.hvp(batches, [[by_param[id(p)] for p in ps] for _, _, ps, _ in batches])
            for (_, _, ps, _), hb in zip(batches, hv):
                for p, h in zip(ps, hb):
                    acc[id(p)].add_(h, alpha=1.0 / k_t)
        out: list[Batch] = [(grp, i, ps, [self.state[p]["g"] for p in ps]) for grp, i, ps in known]
        g = [[self.state[p]["g"] + acc[id(p)] for p in ps] for _, _, ps, _ in out]
        return first_loss, out, g
