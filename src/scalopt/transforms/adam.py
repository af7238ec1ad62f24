"""``scale_by_adam``: the Generic Adam direction (Zou, Shen, Jie, Zhang, Liu, CVPR 2019, arXiv
1811.09358; Chen, Shen, Zou, Liu, JMLR 2022, arXiv 2101.05471).

With t the parameter's 1-based step, β = betas[0], θ_t = beta2_schedule(t) (else betas[1]) and
d_t = lr_decay(t) (else 1):

    m ← β·m + (1−β)·g
    v ← θ_t·v + (1−θ_t)·g²
    u = d_t · m̂/(√v̂ + eps)       m̂ = m/(1−β^t), v̂ = v/(1 − ∏_{i≤t} θ_i)  if bias_correction
                                  m̂ = m,          v̂ = v                   otherwise

and the adapter steps x ← x − lr·u, i.e. α_t = lr·d_t. With constant θ and bias correction this is
torch.optim.Adam's rule. Deviation from the papers (which put ε only in v_0 and use no bias
correction): ε outside the root and bias correction on by default, as torch does, so that the
preset is torch's Adam; ``bias_correction=False`` gives the uncorrected form.
The moments and the denominator come from the one Adam kernel (``scalopt.transforms.adam_kernel``).
The computation folds the bias corrections into the denominator, u = m / (√v·(1−β^t)/(d_t·√(1−∏θ))
+ eps·(1−β^t)/d_t), and hands the quotient to the adapter, which applies it with one ``addcdiv``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext
from scalopt.transforms import adam_kernel


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
            m, v, g = b.buffers("exp_avg"), b.buffers("exp_avg_sq"), b.updates
            if self.beta2_schedule is None:
                adam_kernel.moments_(m, v, g, beta1, beta2)
                bc2 = b.bias_correction(beta2)
            else:
                theta = b.per_step(self.beta2_schedule)
                adam_kernel.moments_(m, v, g, beta1, theta)
                bc2 = []
                for s, th in zip(b.states, theta):
                    s["beta2_product"] *= th
                    bc2.append(1.0 - s["beta2_product"])
            decay = b.per_step(self.lr_decay) if self.lr_decay is not None else None
            if b.group.get("bias_correction", True):
                bc1 = b.bias_correction(beta1)
            else:
                bc1, bc2 = [1.0] * len(m), [1.0] * len(m)
            scale, eps = adam_kernel.bias_corrected_scales(bc1, bc2, b.group["eps"], decay)
            b.set_quotient(m, adam_kernel.denominator(v, scale, eps))
