"""FedAdam: clients as in FedAvg; the server runs Adam on the averaged delta (a pseudo-gradient).

Reddi et al.'s Algorithm 2 (FedOpt with Adam at the server), in their form — no bias correction:

    Δ_t = Σ_i p_i Δ_i                                  (the clients' weighted mean delta, as FedAvg)
    m_t = β1 m_{t−1} + (1 − β1) Δ_t
    v_t = β2 v_{t−1} + (1 − β2) Δ_t²
    x_{t+1} = x_t + η m_t / (√v_t + τ)                 m_{−1} = 0,  v_{−1} = τ²

Symbols ↔ arguments: η = ``server_lr`` (default 0.1), (β1, β2) = ``betas`` (0.9, 0.99), τ = ``tau``
(1e-3: the adaptivity degree; these defaults are Flower's FedAdam's), η_l = ``local_hparams["lr"]``
of the local optimizer (plain SGD by default; any optimizer FedAvg takes, e.g. ``"clipped-sgd"``).
p_i ∝ examples (Flower's default; ``weighting="uniform"`` is the paper's mean). Messages as FedAvg:
down x, up Δ_i. Deviation: none from the paper's equations; Flower's implementation differs (v starts
at 0, and a bias-corrected η) and is not what this class computes.

Reference: S. J. Reddi, Z. Charles, M. Zaheer, Z. Garrett, K. Rush, J. Konečný, S. Kumar,
H. B. McMahan, "Adaptive Federated Optimization", ICLR 2021, arXiv 2003.00295.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from scalopt.core.validate import check_betas, check_positive
from scalopt.federated.base import Message
from scalopt.federated.fedavg import FedAvg


class FedAdam(FedAvg):
    """FedAvg's clients; Adam (Reddi et al.'s form, v_{−1} = τ²) on the averaged delta at the server."""

    name = "fedadam"

    def __init__(
        self,
        params: Iterable[Any],
        *,
        server_lr: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.99),
        tau: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, server_lr=server_lr, **kwargs)
        self.betas = check_betas("betas", betas, high_open=(True, False))
        self.tau = check_positive("tau", tau)
        self.m = [torch.zeros_like(t) for t in self.x]
        self.v = [torch.full_like(t, self.tau**2) for t in self.x]

    def aggregate(self, results: Sequence[tuple[int, Message]]) -> None:
        beta1, beta2 = self.betas
        delta = self.average_delta(results)
        torch._foreach_mul_(self.m, beta1)
        torch._foreach_add_(self.m, delta, alpha=1 - beta1)
        torch._foreach_mul_(self.v, beta2)
        torch._foreach_addcmul_(self.v, delta, delta, value=1 - beta2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_add_(denom, self.tau)
        torch._foreach_addcdiv_(self.x, self.m, denom, value=self.server_lr)

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "betas": list(self.betas), "tau": self.tau}

    def _extra_state(self) -> dict[str, Any]:
        return {"m": [t.clone() for t in self.m], "v": [t.clone() for t in self.v]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.m = [t.clone() for t in state["m"]]
        self.v = [t.clone() for t in state["v"]]
