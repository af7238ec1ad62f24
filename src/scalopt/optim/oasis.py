"""OASIS: a Hutchinson diagonal preconditioner with an adaptive step size from local smoothness.

Jahani, Rusakov, Shi, Richtárik, Mahoney, Takáč, "Doubly Adaptive Scaled Algorithm for Machine
Learning Using Second-Order Information", ICLR 2022, arXiv 2109.05198 (adaptive-learning-rate
OASIS). The gradient is scaled by a diagonal estimate of the Hessian from Rademacher
Hessian-vector products (Hutchinson), truncated away from zero; the step size follows the
Malitsky–Mishchenko rule measured in the norm of that diagonal.

Update (F_I: the loss of the current batch I, z Rademacher ±1 from the optimizer's generator):

    step 0:  D_0 = (1/n0)·Σ_{s≤n0} z_s ⊙ (∇²F_I(w_0)·z_s) ;  D̂_0 = max(|D_0|, α)
             w_1 = w_0 − lr·η_0·∇F_I(w_0)/D̂_0 ;  θ_0 = +∞
    step k ≥ 1:
             v_k = z_k ⊙ (∇²F_I(w_k)·z_k)                     one Hessian-vector product
             D_k = β2·D_{k−1} + (1 − β2)·v_k ;  D̂_k = max(|D_k|, α)
             η_k = min( sqrt(1 + θ_{k−1})·η_{k−1},
                        ‖w_k − w_{k−1}‖_{D̂_k} / (2·‖∇F_I(w_k) − ∇F_I(w_{k−1})‖*_{D̂_k}) )
             w_{k+1} = w_k − lr·η_k·∇F_I(w_k)/D̂_k ;  θ_k = η_k/η_{k−1}
    ‖u‖_D = sqrt(Σ D·u²),  ‖u‖*_D = sqrt(Σ u²/D), summed over every parameter of every group.

Both gradients of the η rule are on the same batch I (``closure`` evaluated at w_k and, with
w_{k−1} loaded temporarily, at w_{k−1}): a step costs two gradients and one Hessian-vector product
(step 0: one gradient and n0 products).

Symbols ↔ arguments: η_0 ``eta0``, β2 ``beta2``, α ``alpha``, n0 ``init_samples``; ``seed`` seeds
the optimizer's own ``torch.Generator`` (its state is in ``state_dict``). Defaults: lr 1, eta0
1e-3, beta2 0.999, alpha 1e-5, init_samples 10.

Provenance: the rule above is the paper's adaptive-learning-rate algorithm as its public
descriptions and a third-party port state it (the EMA is taken before the absolute value, which
enters only in the truncation; both gradients of the η rule on the same batch); the port's variant
that draws its HVP at w_{k−1} is not followed.

Deviations and choices, each because the paper leaves the case open:

- ``lr`` multiplies the adaptive step (lr = 1, the default, is the paper's rule). It is the
  per-group knob that param groups and LR schedulers act on; η_k itself is optimizer-wide.
- A zero numerator in the second term (w_k = w_{k−1}, e.g. after lr = 0 at the start of a warm-up,
  whether or not the gradient difference is zero, as it is not with dropout) keeps η_k = η_{k−1}
  instead of collapsing η to 0; θ_k = +∞ if η_{k−1} = 0. A zero gradient
  difference with w_k ≠ w_{k−1} makes the term +∞, so η_k = sqrt(1 + θ_{k−1})·η_{k−1}, or η_{k−1}
  when θ_{k−1} = +∞ too.
- A parameter that first gets a gradient after step 0 (a new param group) starts with D = v_k and
  w_{k−1} = w_k (it adds nothing to the η rule's norms until its second step).

Non-finite gradients, products or gradient differences follow ``nonfinite`` ("raise" names the
parameter; "skip" leaves parameters and state untouched and counts the skip). ``metrics()``:
steps, skipped_steps, gradients, hvps (running totals, in ``state_dict``), and the latest step's
grad_norm, eta and step_hvps. ``step`` returns the loss at w_k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from scalopt.core.closure import Batch, SecondOrderOptimizer
from scalopt.core.validate import check_int, check_interval, check_lr, check_positive


class OASIS(SecondOrderOptimizer):
    """Adaptive-learning-rate OASIS. Step with ``opt.step(closure)``; the closure returns the loss
    of the current batch without calling backward (see ``scalopt.core.closure``)."""

    hyperparameters = {
        "lr": check_lr,
        "beta2": lambda n, v: check_interval(n, v, 0.0, 1.0),
        "alpha": check_positive,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        *,
        eta0: float = 1e-3,
        beta2: float = 0.999,
        alpha: float = 1e-5,
        init_samples: int = 10,
        seed: int = 0,
        nonfinite: str = "raise",
    ) -> None:
        self.eta0 = check_positive("eta0", eta0)
        self.init_samples = check_int("init_samples", init_samples, minimum=1)
        super().__init__(params, {"lr": lr, "beta2": beta2, "alpha": alpha}, seed=seed, nonfinite=nonfinite)
        self._eta: float | None = None  # η_{k−1}; None before step 0
        self._theta = math.inf

    def extra_state(self) -> dict[str, Any]:
        return {"eta": self._eta, "theta": self._theta}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self._eta, self._theta = extra["eta"], extra["theta"]

    def _accept(self, batches: list[Batch], values: list[list[torch.Tensor]]) -> bool:
        """Apply the non-finite policy to ``values`` (one list per batch); True if finite."""
        with torch.no_grad():
            return self.check_finite([(g, i, p, v) for (g, i, p, _), v in zip(batches, values)]) is not None

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        self.require(closure)
        trainable = self.trainable()
        if not trainable:
            return None
        loss, batches = self.gradients(closure, trainable, create_graph=True)
        if not batches:
            return loss
        grads = [[g.detach() for g in gs] for _, _, _, gs in batches]
        with torch.no_grad():
            grad_norm = self.check_finite([(g, i, p, d) for (g, i, p, _), d in zip(batches, grads)])
        if grad_norm is None:
            return loss
        hvps_before = self._counters["hvps"]
        first = self._eta is None
        samples = self.init_samples if first else 1
        v = [[torch.zeros_like(p) for p in ps] for _, _, ps, _ in batches]
        for s in range(samples):
            z = [self.rademacher(ps) for _, _, ps, _ in batches]
            hz = self.hvp(batches, z, retain_graph=s + 1 < samples)
            for vb, zb, hb in zip(v, z, hz):
                torch._foreach_add_(vb, torch._foreach_mul(zb, hb), alpha=1.0 / samples)
        if not self._accept(batches, v):
            return loss
        with torch.no_grad():
            d_hat, prev = self._curvature(batches, v, first)
            if first:
                eta = self.eta0
            else:
                g_prev = self._gradients_at(closure, trainable, batches, prev)
                if g_prev is None:
                    return loss
                eta = self._step_size(batches, grads, g_prev, d_hat, prev)
                if eta is None:
                    return loss
            self._commit(batches, v, first)
            for (group, _, ps, _), gb, db in zip(batches, grads, d_hat):
                for p in ps:
                    self.state[p]["prev"].copy_(p)
                torch._foreach_addcdiv_(ps, gb, db, value=-group["lr"] * eta)
        self._theta = math.inf if first or self._eta == 0.0 else eta / self._eta
        self._eta = eta
        self._counters["steps"] += 1
        self.record("grad_norm", grad_norm)
        self.record("eta", eta)
        self.record("step_hvps", self._counters["hvps"] - hvps_before)
        return loss

    def _curvature(
        self, batches: list[Batch], v: list[list[torch.Tensor]], first: bool
    ) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        """D̂_k per batch (state not yet written) and w_{k−1} (w_k for parameters seen first now)."""
        d_hat, prev = [], []
        for (group, _, ps, _), vb in zip(batches, v):
            db, pb = [], []
            for p, vp in zip(ps, vb):
                st = self.state.get(p)
                if first or not st:
                    d = vp
                    pb.append(p.detach())
                else:
                    d = st["D"] * group["beta2"] + vp * (1 - group["beta2"])
                    pb.append(st["prev"])
                db.append(d.abs().clamp_(min=group["alpha"]))
            d_hat.append(db)
            prev.append(pb)
        return d_hat, prev

    def _commit(self, batches: list[Batch], v: list[list[torch.Tensor]], first: bool) -> None:
        """Write D_k (and create lazy state) once the step is known to go ahead."""
        for (group, _, ps, _), vb in zip(batches, v):
            for p, vp in zip(ps, vb):
                st = self.state[p]
                if first or not st:
                    st["D"] = vp.clone()
                    st["prev"] = p.detach().clone()
                else:
                    st["D"].mul_(group["beta2"]).add_(vp, alpha=1 - group["beta2"])

    def _gradients_at(
        self,
        closure: Callable[[], torch.Tensor],
        trainable: list[Any],
        batches: list[Batch],
        prev: list[list[torch.Tensor]],
    ) -> list[list[torch.Tensor]] | None:
        """∇F_I(w_{k−1}) on the same batch, aligned with ``batches`` (zeros where unused)."""
        params = [p for _, _, ps, _ in batches for p in ps]
        with self.loaded(params, [q for pb in prev for q in pb]):
            _, at_prev = self.gradients(closure, trainable, create_graph=False)
        by_param = {id(p): g for _, _, ps, gs in at_prev for p, g in zip(ps, gs)}
        out = [[by_param.get(id(p), torch.zeros_like(p)) for p in ps] for _, _, ps, _ in batches]
        return out if self._accept(batches, out) else None

    def _step_size(
        self,
        batches: list[Batch],
        grads: list[list[torch.Tensor]],
        g_prev: list[list[torch.Tensor]],
        d_hat: list[list[torch.Tensor]],
        prev: list[list[torch.Tensor]],
    ) -> float | None:
        """η_k from the rule above; None if the step is skipped (non-finite difference norms)."""
        num2 = den2 = 0.0
        for (_, _, ps, _), gb, gpb, db, pb in zip(batches, grads, g_prev, d_hat, prev):
            for p, g, gp, d, q in zip(ps, gb, gpb, db, pb):
                dw = (p - q).double()
                dg = (g - gp).double()
                num2 += float((d.double() * dw * dw).sum())
                den2 += float((dg * dg / d.double()).sum())
        assert self._eta is not None
        growth = self._eta * math.sqrt(1 + self._theta) if math.isfinite(self._theta) else math.inf
        if not (math.isfinite(num2) and math.isfinite(den2)):
            if self.nonfinite == "raise":
                raise FloatingPointError(
                    "non-finite step-size estimate (the change of parameters or gradients overflowed); "
                    "nothing was changed. Lower lr or eta0, or pass nonfinite='skip'"
                )
            self._counters["skipped_steps"] += 1
            return None
        if num2 == 0.0:  # w_k = w_{k−1}: the local term carries no information (0/0 rule)
            return self._eta
        local = math.sqrt(num2) / (2 * math.sqrt(den2)) if den2 > 0 else math.inf
        eta = min(growth, local)
        return eta if math.isfinite(eta) else self._eta
