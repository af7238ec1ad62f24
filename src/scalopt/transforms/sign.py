"""``scale_by_generalized_sign``: the direction of Generalized SignSGD (Crawshaw, Liu, Orabona,
Zhang, Zhuang, NeurIPS 2022, arXiv 2208.11195).

    m ← β1·m + (1−β1)·g
    v ← β2·v + (1−β2)·m²          (the second moment of the momentum, not of g)
    u = m̂/(√v̂ + eps)             m̂, v̂ = m/(1−β1^t), v/(1−β2^t) if bias_correction else m, v

β2 = 0 and eps = 0 give u = sign(m) (SignSGD with momentum; β1 = 0 too: SignSGD), with
sign(0) = 0: a coordinate where m = 0 (so v = 0) gets 0, not 0/0.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext
from scalopt.transforms.adam_kernel import sqrt


class scale_by_generalized_sign:  # noqa: N801 - transforms are verbs
    def init(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None:
        for b in batches:
            beta1, beta2 = b.group["betas"]
            eps = b.group["eps"]
            m, v = b.buffers("exp_avg"), b.buffers("exp_avg_sq")
            torch._foreach_lerp_(m, b.updates, 1.0 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, m, m, value=1.0 - beta2)
            denom = torch._foreach_sqrt(v)
            if b.group["bias_correction"]:
                bc1 = b.bias_correction(beta1)
                bc2 = b.bias_correction(beta2)
                torch._foreach_mul_(denom, [c1 / sqrt(c2) for c1, c2 in zip(bc1, bc2)])
                torch._foreach_add_(denom, [eps * c1 for c1 in bc1])
            elif eps != 0:
                torch._foreach_add_(denom, eps)
            if eps != 0:
                b.set_quotient(m, denom)
                continue
            u = torch._foreach_div(m, denom)
            for x in u:  # 0/0 where m = 0: sign(0) = 0
                torch.nan_to_num_(x, nan=0.0, posinf=math.inf, neginf=-math.inf)
            b.updates, b.owned = u, True
