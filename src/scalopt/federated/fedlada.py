"""FedLADA: local AMSGrad steps amended by the previous round's global average offset.

FedLADA (Federated Local ADaptive Amended optimizer) runs an adaptive optimizer on each client and
mixes into every local step the server's estimate of the global average offset per local step from
the previous round, so that clients on non-IID data drift apart less. Local Adam without the
amendment (α = 1, :class:`LocalAdam`) is the control that isolates the amendment.

Update rule (server state x_t, v̄, g_a; K local steps; S sampled clients):

    down to each i ∈ S_t:  x_t, v̄, g_a
    client i:  x ← x_t ;  m ← 0 ;  v ← v̄ ;  v̂ ← v̄           m restarts every round, v warm-starts
               for k = 1..K:   g = ∇f_i(x; ξ_k)
                   m ← β1 m + (1 − β1) g
                   v ← β2 v + (1 − β2) g²
                   v̂ ← max(v̂, v)                                 AMSGrad maximum
                   x ← x − η_l [ α m / √v̂ + (1 − α) g_a ]         the amended local step
               up: x_i = x, v̂_i = v̂
    server:    x̄ = (1/|G|) Σ_{i∈G} x_i ;  v̄ ← (1/|G|) Σ_{i∈G} v̂_i     (G: the good clients, uniform weights)
               g_a ← (x_t − x̄) / (η_l K)                        the global average offset per local step
               x_{t+1} = x_t + η_g (x̄ − x_t)
    init:      v̄ = ε², g_a = 0 (so the first round is local AMSGrad scaled by α)

Symbols ↔ arguments: η_l = ``lr`` (3e-3), (β1, β2) = ``betas`` (0.9, 0.99), ε = ``eps`` (1e-8; it enters
only as v̄'s start, and v̂ ≥ v̄ ≥ ε² keeps the root away from 0), α = ``alpha`` (0.1: the weight of
the local adaptive direction; 1 − α that of the global offset), η_g = ``server_lr`` (1.0),
K = ``local_steps``, S = ``clients_per_round``. Messages: down 3 models (x, v̄, g_a), up 2 (x_i, v̂_i;
g_a is recomputed by the server); :class:`LocalAdam` sends 2 down (no g_a) and 2 up.

What this reading rests on. The paper's full text could not be read here (only its abstract, via
the search tool: "estimates the global average offset in the previous communication round and
corrects the local offset through a momentum-like term"; the linear-speedup claim under partial
participation). Confirmed from the abstract: a local adaptive optimizer, a correction by the
previous round's global average offset, partial participation. Taken from a public third-party port
that states it follows the paper's third algorithm (Section 3), not checked against the paper: the
AMSGrad maximum (a second port uses plain bias-corrected Adam with momentum instead), v warm-started
from the server's average of the clients' v̂, m reset to 0 every round, what is sent each way,
g_a = (x_t − x̄)/(η_l K), uniform averaging, no ε inside the root, and the defaults above (α 0.1,
η_l 3e-3, β 0.9/0.99, ε 1e-8, η_g 1). Not confirmed: the paper's own defaults and whether its v̄ is
an average or a maximum over clients. Deviations: none from that reading; bad clients are left out of
both averages (faults are handled by the round, see :mod:`scalopt.federated.round`).

Reference: Y. Sun, L. Shen, H. Sun, L. Ding, D. Tao, "Efficient Federated Learning via Local
Adaptive Amended Optimizer with Linear Speedup", IEEE TPAMI 2023, arXiv 2308.00522.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from scalopt.core.validate import check_betas, check_interval, check_positive
from scalopt.federated.base import FederatedAlgorithm, Loss, Message, load_into


class FedLADA(FederatedAlgorithm):
    """Local AMSGrad (v warm-started from the server) amended by the global offset g_a (Sun et al.)."""

    name = "fedlada"
    down_keys = ("x", "v", "g_a")
    up_keys = ("x", "v_hat")

    def __init__(
        self,
        params: Iterable[Any],
        *,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        alpha: float = 0.1,
        server_lr: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self.lr = check_positive("lr", lr)
        self.betas = check_betas("betas", betas)
        self.eps = check_positive("eps", eps)
        self.alpha = check_interval("alpha", alpha, 0.0, 1.0, low_open=True, high_open=False)
        self.server_lr = check_positive("server_lr", server_lr)
        self.v = [torch.full_like(t, self.eps**2) for t in self.x]
        self.g_a = [torch.zeros_like(t) for t in self.x]

    def broadcast(self) -> Message:
        out = {"x": self.x, "v": self.v, "g_a": self.g_a}
        return {k: [t.clone() for t in out[k]] for k in self.down_keys}

    def client_update(
        self, model: nn.Module, down: Message, batches: Iterator[Any], loss: Loss
    ) -> tuple[Message, float]:
        params = load_into(model, down["x"])
        beta1, beta2 = self.betas
        alpha, lr = self.alpha, self.lr
        m = [torch.zeros_like(p) for p in params]
        v = [t.clone() for t in down["v"]]
        v_hat = [t.clone() for t in down["v"]]
        g_a = down.get("g_a")

        @torch.no_grad()
        def step(ps: list[nn.Parameter]) -> None:
            g = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
            torch._foreach_mul_(m, beta1)
            torch._foreach_add_(m, g, alpha=1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, g, g, value=1 - beta2)
            torch._foreach_maximum_(v_hat, v)
            direction = torch._foreach_div(m, torch._foreach_sqrt(v_hat))
            if alpha != 1.0:
                torch._foreach_mul_(direction, alpha)
                torch._foreach_add_(direction, g_a, alpha=1 - alpha)
            torch._foreach_add_(ps, direction, alpha=-lr)

        mean_loss = self._local_steps(model, batches, loss, step)
        return {"x": [p.detach().clone() for p in params], "v_hat": v_hat}, mean_loss

    def aggregate(self, results: Sequence[tuple[int, Message]]) -> None:
        w = self._weights(results, by_examples=False)
        x_bar = self._weighted_sum(results, "x", w)
        self.v = self._weighted_sum(results, "v_hat", w)
        offset = torch._foreach_sub(self.x, x_bar)  # x_t − x̄
        if "g_a" in self.down_keys:
            self.g_a = torch._foreach_div(offset, self.lr * self.local_steps)
        torch._foreach_add_(self.x, offset, alpha=-self.server_lr)

    def hparams(self) -> dict[str, Any]:
        return {
            **super().hparams(),
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "alpha": self.alpha,
            "server_lr": self.server_lr,
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"v": [t.clone() for t in self.v], "g_a": [t.clone() for t in self.g_a]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.v = [t.clone() for t in state["v"]]
        self.g_a = [t.clone() for t in state["g_a"]]


class LocalAdam(FedLADA):
    """The drift control: FedLADA's local AMSGrad with α = 1 (no amendment); g_a is never sent."""

    name = "local-adam"
    down_keys = ("x", "v")

    def __init__(self, params: Iterable[Any], **kwargs: Any) -> None:
        if kwargs.get("alpha", 1.0) != 1.0:
            raise ValueError(f"alpha must be 1.0 for LocalAdam (no amendment), got {kwargs['alpha']!r}")
        kwargs["alpha"] = 1.0
        super().__init__(params, **kwargs)
