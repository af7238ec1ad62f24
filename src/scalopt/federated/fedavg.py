"""FedAvg: K local steps of any optimizer on each sampled client, the server averages the deltas.

    client i (from x_t):   x_i = K steps of the local optimizer (plain SGD with η_l by default)
                           sends Δ_i = x_i − x_t
    server:                Δ_t = Σ_i p_i Δ_i,   p_i = n_i / Σ_j n_j   (n_i: client i's examples;
                                                                     uniform with weighting="uniform")
                           x_{t+1} = x_t + η_g Δ_t

Symbols ↔ arguments: η_l = ``local_hparams["lr"]``, η_g = ``server_lr`` (1.0: McMahan's FedAvg,
where x_{t+1} is the weighted mean of the clients' models), K = ``local_steps``, S =
``clients_per_round``. ``local_optimizer`` is ``"sgd"`` (``torch.optim.SGD``), any name of the
scalopt optimizer registry (e.g. ``"adam"``, ``"clipped-sgd"``), or a callable
``params -> torch.optim.Optimizer``; it is built afresh every round (clients keep no state).
Messages: down x (one model), up Δ_i (one model).

Reference: H. B. McMahan, E. Moore, D. Ramage, S. Hampson, B. Agüera y Arcas, "Communication-Efficient
Learning of Deep Networks from Decentralized Data", AISTATS 2017, arXiv 1602.05629.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from scalopt.core.validate import check_choice, check_positive
from scalopt.federated.base import FederatedAlgorithm, Loss, Message, load_into

LocalOptimizer = str | Callable[[Iterable[Any]], torch.optim.Optimizer]


def build_local_optimizer(
    name: LocalOptimizer, model: nn.Module, hparams: dict[str, Any]
) -> torch.optim.Optimizer:
    """A fresh local optimizer over ``model``'s parameters."""
    if callable(name):
        return name(model.parameters(), **hparams)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), **hparams)
    from scalopt.optim import registry

    entry = registry.get(name)
    return entry.build(model.named_parameters() if entry.scalopt else model.parameters(), **hparams)


def check_local_optimizer(name: Any, hparams: Any) -> None:
    if not isinstance(hparams, dict):
        raise ValueError(f"local_hparams must be a dict, got {hparams!r}")
    if callable(name) or name == "sgd":
        return
    from scalopt.optim import registry

    if not isinstance(name, str) or name not in registry.names():
        valid = ", ".join(["sgd", *registry.names()])
        raise ValueError(f"local_optimizer must be a callable or one of {valid}, got {name!r}")


class FedAvg(FederatedAlgorithm):
    """Federated averaging (McMahan et al.): weighted mean of the clients' deltas, server step η_g."""

    name = "fedavg"
    down_keys = ("x",)
    up_keys = ("delta",)

    def __init__(
        self,
        params: Iterable[Any],
        *,
        local_optimizer: LocalOptimizer = "sgd",
        local_hparams: dict[str, Any] | None = None,
        server_lr: float = 1.0,
        weighting: str = "examples",
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self.local_hparams = dict(local_hparams if local_hparams is not None else {"lr": 0.1})
        check_local_optimizer(local_optimizer, self.local_hparams)
        self.local_optimizer = local_optimizer
        self.server_lr = check_positive("server_lr", server_lr)
        self.weighting = check_choice("weighting", weighting, ("examples", "uniform"))

    def client_update(
        self, model: nn.Module, down: Message, batches: Iterator[Any], loss: Loss
    ) -> tuple[Message, float]:
        params = load_into(model, down["x"])
        opt = build_local_optimizer(self.local_optimizer, model, self.local_hparams)
        mean_loss = self._local_steps(model, batches, loss, lambda _: opt.step())
        return {"delta": [p.detach() - x for p, x in zip(params, down["x"])]}, mean_loss

    def average_delta(self, results: Sequence[tuple[int, Message]]) -> list[torch.Tensor]:
        """Δ_t = Σ_i p_i Δ_i."""
        return self._weighted_sum(results, "delta", self._weights(results, self.weighting == "examples"))

    def aggregate(self, results: Sequence[tuple[int, Message]]) -> None:
        torch._foreach_add_(self.x, self.average_delta(results), alpha=self.server_lr)

    def hparams(self) -> dict[str, Any]:
        local = self.local_optimizer if isinstance(self.local_optimizer, str) else repr(self.local_optimizer)
        return {
            **super().hparams(),
            "local_optimizer": local,
            "local_hparams": self.local_hparams,
            "server_lr": self.server_lr,
            "weighting": self.weighting,
        }
