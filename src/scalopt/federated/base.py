"""The server-side object every federated algorithm is: state, messages, aggregation, accounting.

A :class:`FederatedAlgorithm` owns everything that persists across rounds — the global model x,
the algorithm's server statistics, the round counter, the client sampler's generator and the
communication counters — and nothing else: clients are stateless (a client's local optimizer is
created fresh every round). Its parts, in the order a round uses them (see
:func:`scalopt.federated.round.federated_round`):

    sample(n)                       S of n client indices, without replacement, from the server's generator
    broadcast()                     the message sent down: name -> list of tensors (one per parameter)
    client_update(model, down, batches, loss)   K local steps on one client; the message sent up
    check_upload(up)                a bad upload (missing key, wrong shape/dtype, non-finite) -> ValueError
    aggregate(results)              server step from [(num_examples, up), ...] of the good clients

A message is a dict of named lists of tensors aligned with the model's parameters; its size in
bytes is Σ numel·element_size. Only parameters are federated (buffers stay as the model has them).
``state_dict()`` holds every persistent tensor and counter and loads with
``torch.load(weights_only=True)``; a run resumed from it continues bitwise.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from scalopt.core.validate import check_int

Message = dict[str, list[torch.Tensor]]
Loss = Callable[[nn.Module, Any], torch.Tensor]


def message_bytes(message: Message) -> int:
    """Σ numel · element_size over every tensor of a message."""
    return sum(t.numel() * t.element_size() for tensors in message.values() for t in tensors)


def load_into(model: nn.Module, x: Sequence[torch.Tensor]) -> list[nn.Parameter]:
    """Copy ``x`` into ``model``'s parameters (in ``model.parameters()`` order); returns them."""
    params = list(model.parameters())
    if len(params) != len(x):
        raise ValueError(f"the model has {len(params)} parameters, the message {len(x)}")
    with torch.no_grad():
        for p, t in zip(params, x):
            p.copy_(t)
    return params


class FederatedAlgorithm(abc.ABC):
    """Base class: the global model, the sampler, the round counter, fault limit and accounting.

    Args:
        params: the initial global model (tensors or ``named_parameters()``); float32, copied.
        local_steps: K, local steps per client per round (>= 1).
        clients_per_round: S, clients sampled per round without replacement (>= 1; <= n at run time).
        min_clients: fewest good clients a round needs; fewer skip the round (model unchanged).
        seed: seed of the server's sampler generator.
    """

    name: ClassVar[str] = ""
    down_keys: ClassVar[tuple[str, ...]] = ("x",)
    up_keys: ClassVar[tuple[str, ...]] = ("delta",)

    def __init__(
        self,
        params: Iterable[Any],
        *,
        local_steps: int = 10,
        clients_per_round: int = 5,
        min_clients: int = 1,
        seed: int = 0,
    ) -> None:
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        if not tensors:
            raise ValueError("params must hold at least one tensor, got an empty list")
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
                got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"params[{i}] must be a float32 tensor, got {got}")
        self.local_steps = check_int("local_steps", local_steps, minimum=1)
        self.clients_per_round = check_int("clients_per_round", clients_per_round, minimum=1)
        self.min_clients = check_int("min_clients", min_clients, minimum=1)
        if min_clients > clients_per_round:
            raise ValueError(
                f"min_clients must be <= clients_per_round={clients_per_round}, got {min_clients}"
            )
        self.seed = check_int("seed", seed)
        self.x = [t.detach().clone() for t in tensors]
        self.round = 0
        self.sampler = torch.Generator().manual_seed(seed)
        self.counters: dict[str, Any] = {
            "rounds": 0,
            "skipped_rounds": 0,
            "client_steps": 0,
            "failures": 0,
            "bytes_up": {},
            "bytes_down": {},
            "failed_clients": {},
        }

    # -- the round's parts -----------------------------------------------------------------------
    def sample(self, n_clients: int) -> list[int]:
        """S of ``n_clients`` indices, uniformly without replacement, in the order drawn."""
        check_int("n_clients", n_clients, minimum=1)
        if self.clients_per_round > n_clients:
            raise ValueError(
                f"clients_per_round must be <= the number of clients ({n_clients}), "
                f"got {self.clients_per_round}"
            )
        return torch.randperm(n_clients, generator=self.sampler)[: self.clients_per_round].tolist()

    def broadcast(self) -> Message:
        return {"x": [t.clone() for t in self.x]}

    @abc.abstractmethod
    def client_update(
        self, model: nn.Module, down: Message, batches: Iterator[Any], loss: Loss
    ) -> tuple[Message, float]:
        """K local steps from ``down`` (reads only its arguments); the upload and the mean local loss."""

    @abc.abstractmethod
    def aggregate(self, results: Sequence[tuple[int, Message]]) -> None:
        """The server step from the good clients' ``(num_examples, upload)`` pairs."""

    def check_upload(self, up: Any) -> None:
        """ValueError naming what is wrong with an upload: keys, length, shapes, dtype, finiteness."""
        if not isinstance(up, dict) or set(up) != set(self.up_keys):
            got = sorted(up) if isinstance(up, dict) else type(up).__name__
            raise ValueError(f"upload must have keys {list(self.up_keys)}, got {got}")
        for key in self.up_keys:
            tensors = up[key]
            if len(tensors) != len(self.x):
                raise ValueError(f"upload {key!r} has {len(tensors)} tensors, expected {len(self.x)}")
            for i, (t, ref) in enumerate(zip(tensors, self.x)):
                if not isinstance(t, torch.Tensor) or t.shape != ref.shape or t.dtype != ref.dtype:
                    got = (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
                    raise ValueError(
                        f"upload {key!r}[{i}] must be a {ref.dtype} tensor of shape {tuple(ref.shape)}, "
                        f"got {got}"
                    )
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"upload {key!r}[{i}] has non-finite values")

    # -- helpers for subclasses ------------------------------------------------------------------
    def _local_steps(
        self, model: nn.Module, batches: Iterator[Any], loss: Loss, step: Callable[[list[nn.Parameter]], None]
    ) -> float:
        """K times: zero grads, loss on the next batch, backward, ``step(params)``; mean loss."""
        params = list(model.parameters())
        total = 0.0
        for _ in range(self.local_steps):
            for p in params:
                p.grad = None
            value = loss(model, next(batches))
            value.backward()
            step(params)
            total += float(value.detach())
        return total / self.local_steps

    @staticmethod
    def _weights(results: Sequence[tuple[int, Message]], by_examples: bool) -> list[float]:
        raw = [float(n) if by_examples else 1.0 for n, _ in results]
        total = math.fsum(raw)
        return [w / total for w in raw]

    @staticmethod
    def _weighted_sum(
        results: Sequence[tuple[int, Message]], key: str, weights: list[float]
    ) -> list[torch.Tensor]:
        """Σ_i w_i · up_i[key], accumulated in the clients' order."""
        out = [torch.zeros_like(t) for t in results[0][1][key]]
        for w, (_, up) in zip(weights, results):
            torch._foreach_add_(out, up[key], alpha=w)
        return out

    # -- state -------------------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def hparams(self) -> dict[str, Any]:
        """The configuration as plain data (recorded in the run header)."""
        return {
            "local_steps": self.local_steps,
            "clients_per_round": self.clients_per_round,
            "min_clients": self.min_clients,
            "seed": self.seed,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.name,
            "x": [t.clone() for t in self.x],
            "round": self.round,
            "sampler": self.sampler.get_state(),
            "counters": _copy_counters(self.counters),
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("algorithm") != self.name:
            raise ValueError(f"state_dict is for {state.get('algorithm')!r}, not {self.name!r}")
        x = state["x"]
        if len(x) != len(self.x) or any(a.shape != b.shape for a, b in zip(x, self.x)):
            raise ValueError("state_dict's model does not match this algorithm's parameters")
        self.x = [t.clone() for t in x]
        self.round = int(state["round"])
        self.sampler.set_state(state["sampler"])
        self.counters = _copy_counters(state["counters"])
        self._load_extra_state(state["extra"])


def _copy_counters(counters: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in counters.items()}
