"""``scale_by_adam``: the Generic Adam direction (Zou, Shen, Jie, Zhang, Liu, CVPR 2019, arXiv
1811.09358; Chen, Shen, Zou, Liu, JMLR 2022, arXiv 2101.05471).

With t the parameter's 1-based step, β = betas[0], θ_t = beta2_schedule(t) (else betas[1]) and
d_t = lr_decay(t) (else 1):

    m ← β·m + (1−β)·g
    v ← θ_t·v + (1−θ_t)·g²
    u = d_t · m̂/(√v̂ + eps)       m̂ = m/(1−β^t), v̂ = v/(1 − ∏_{i≤t} θ_i)  if bias_correction
                                  m̂ = m,          v̂ = v                   otherwise

and the adapter steps x ← x − lr·u, i.e. α_t = lr·d_t. With constant θ and bias correction this is
torch.optim.Adam's rule. Deviation from ALGORITHMS.md §7 (which puts ε only in v_0 and has no bias
correction): the issue's form above, with ε outside the root as torch does, wins.
The computation folds the bias corrections into the denominator, u = m / (√v·(1−β^t)/(d_t·√(1−∏θ))
+ eps·(1−β^t)/d_t), and hands the quotient to the adapter, which applies it with one ``addcdiv``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext


class scale_by_adam:  # noqa: N801 - transforms are verbs
    def __init__(
        self,
        *,
        lr_decay: Callable[[int], float] | None = None,
        beta2_schedule: Callable[[int], float] | None = None,
    ) -> None:
        self.lr_decay = lr_decay
        self.beta2_schedule = beta2_schedule

    def init(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
        if self.beta2_schedule is not None:
            state["beta2_product"] = 1.0  # ∏ θ_i over the steps taken so far
        return state

    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None:
        for b in batches:
            beta1, beta2 = b.group["betas"]
            eps = b.group["eps"]
            bias_correction = b.group.get("bias_correction", True)
            m, v, g = b.buffers("exp_avg"), b.buffers("exp_avg_sq"), b.updates
            torch._foreach_lerp_(m, g, 1.0 - beta1)
            if self.beta2_schedule is None:
                torch._foreach_mul_(v, beta2)
                torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)
                bc2 = b.bias_correction(beta2)
            else:
                theta = b.per_step(self.beta2_schedule)
                if len(set(theta)) == 1:  # the usual case: every parameter at the same step
                    torch._foreach_mul_(v, theta[0])
                    torch._foreach_addcmul_(v, g, g, value=1.0 - theta[0])
                else:
                    torch._foreach_mul_(v, theta)
                    torch._foreach_addcmul_(v, g, g, [1.0 - th for th in theta])
                bc2 = []
                for s, th in zip(b.states, theta):
                    s["beta2_product"] *= th
                    bc2.append(1.0 - s["beta2_product"])
            decay = b.per_step(self.lr_decay) if self.lr_decay is not None else None
            if bias_correction:
                bc1 = b.bias_correction(beta1)
            else:
                bc1, bc2 = [1.0] * len(m), [1.0] * len(m)
            d = decay if decay is not None else [1.0] * len(m)
            denom = torch._foreach_sqrt(v)
            torch._foreach_mul_(denom, [c1 / (dt * math.sqrt(c2)) for c1, c2, dt in zip(bc1, bc2, d)])
            torch._foreach_add_(denom, [eps * c1 / dt for c1, dt in zip(bc1, d)])
            b.set_quotient(m, denom)
