"""Generic Adam (Zou et al.) and the familiar presets ``Adam`` and ``AdamW``.

Generic Adam lets the base step size and the second-moment weight vary with the step t (1-based):

    α_t = lr·lr_decay(t)            (lr_decay=None: α_t = lr)
    θ_t = beta2_schedule(t)         (None: θ_t = betas[1]);   β = betas[0]
    g  ← g + λ·x                    (weight_decay λ, unless decoupled_weight_decay)
    m  ← β·m + (1−β)·g
    v  ← θ_t·v + (1−θ_t)·g²
    x  ← x − α_t·m̂/(√v̂ + eps)       m̂ = m/(1−β^t), v̂ = v/(1−∏_{i≤t}θ_i) if bias_correction, else m, v
    x  ← x − α_t·λ·x                (decoupled_weight_decay=True: AdamW)

With no schedules and bias correction it is ``torch.optim.Adam`` (``AdamW`` when decoupled), and
float32/float64 parameters (complex ones as real pairs) are then stepped by torch's fused Adam
kernel (``torch._fused_adam_`` / ``torch._fused_adamw_``) through ``scalopt.transforms.adam_kernel``;
fp16/bf16 parameters and the scheduled forms run the chain (in float32 for fp16/bf16), which checks
the update before writing it; the fused step needs no such check (its update is bounded, see the
kernel's docstring), and gradients are checked before either runs.
The sufficient condition for convergence (0 < r ≤ 2s < 2 for α_t = lr·t^−s, θ_t = 1 − θ/t^r) is
checked by ``scalopt.theory.check_adam``; use ``scalopt.schedules.InvPower`` and
``OneMinusInvPower`` for the schedules, and ``check_convergence=True`` to run the checker once at
construction (it warns with the checker's explanation when the condition fails).

Deviation from the paper: Zou et al. write v_0 = ε > 0, x ← x − α_t·m/√v (ε only inside the
initial second moment, never outside the root) and no bias correction. scalopt puts ε outside the
root and bias-corrects by default, as ``torch.optim.Adam`` does, so that with constant schedules
GenericAdam is torch's Adam/AdamW exactly; ``bias_correction=False`` gives the uncorrected update
(ε still outside the root).

Reference: F. Zou, L. Shen, Z. Jie, W. Zhang, W. Liu, "A Sufficient Condition for Convergences of
Adam and RMSProp", CVPR 2019, arXiv 1811.09358; C. Chen, L. Shen, F. Zou, W. Liu, "Towards
Practical Adam", JMLR 23(229), 2022, arXiv 2101.05471.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch

from scalopt.core.chain import ChainOptimizer, chain, working_view
from scalopt.core.validate import check_betas, check_bool, check_lr, check_nonnegative
from scalopt.schedules import check_schedule
from scalopt.transforms import adam_kernel, add_weight_decay, scale_by_adam

Schedule = Callable[[int], float]


class GenericAdam(ChainOptimizer):
    hyperparameters = {
        "lr": check_lr,
        "betas": check_betas,
        "eps": check_nonnegative,
        "weight_decay": check_nonnegative,
        "decoupled_weight_decay": check_bool,
        "bias_correction": check_bool,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = True,
        lr_decay: Schedule | float | None = None,
        beta2_schedule: Schedule | float | None = None,
        *,
        check_convergence: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        self.lr_decay = check_schedule("lr_decay", lr_decay)
        self.beta2_schedule = check_schedule("beta2_schedule", beta2_schedule)
        if self.beta2_schedule is not None:
            theta1 = self.beta2_schedule(1)
            if not 0.0 <= theta1 < 1.0:
                raise ValueError(f"beta2_schedule(t) must be in [0, 1), got beta2_schedule(1) = {theta1!r}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction,
        )
        transforms = chain(
            add_weight_decay(decoupled=False),
            scale_by_adam(lr_decay=self.lr_decay, beta2_schedule=self.beta2_schedule),
            add_weight_decay(decoupled=True),
        )
        super().__init__(params, defaults, transforms, nonfinite=nonfinite)
        if check_convergence:
            self._warn_unless_convergent()

    def fused_step(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor], states: list
    ) -> Callable[[], None] | None:
        """Exactly Adam/AdamW (constant α and β2, bias correction) on tensors torch's fused kernel
        takes: one ``torch._fused_adam(w)_`` call (see ``scalopt.transforms.adam_kernel``)."""
        if self.lr_decay is not None or self.beta2_schedule is not None or not group["bias_correction"]:
            return None
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        m = [working_view(s["exp_avg"]) for s in states]
        v = [working_view(s["exp_avg_sq"]) for s in states]
        if not adam_kernel.fusable(params + grads + m + v, lr=lr, eps=eps, weight_decay=wd):
            return None

        def call() -> None:
            for s in states:
                s["step"] += 1
            adam_kernel.fused_adam_(
                params,
                grads,
                m,
                v,
                [s["step"] for s in states],
                lr=lr,
                betas=group["betas"],
                eps=eps,
                weight_decay=wd,
                decoupled=group["decoupled_weight_decay"],
            )

        return call

    def _warn_unless_convergent(self) -> None:
        """Run the sufficient-condition checker once and warn with its explanation if it fails."""
        from scalopt.theory import check_adam

        for group in self.param_groups:
            if group["lr"] == 0:  # a frozen group does not move
                continue
            report = check_adam(
                lr=group["lr"],
                lr_decay=self.lr_decay,
                beta2=self.beta2_schedule if self.beta2_schedule is not None else group["betas"][1],
                beta1=group["betas"][0],
            )
            if not report.satisfied:
                warnings.warn(
                    f"GenericAdam: the convergence condition does not hold.\n{report}", stacklevel=3
                )
                return


class Adam(GenericAdam):
    """``torch.optim.Adam``'s rule: Generic Adam with constant α and β2, bias-corrected."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        nonfinite: str = "raise",
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, nonfinite=nonfinite)


class AdamW(GenericAdam):
    """``torch.optim.AdamW``'s rule: Adam with decoupled weight decay (default 0.01, as torch)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        nonfinite: str = "raise",
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, decoupled_weight_decay=True, nonfinite=nonfinite
        )
