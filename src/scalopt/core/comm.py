"""The ``Comm`` protocol: how an optimizer talks to its peers, without importing torch.distributed.

Optimizers take ``comm=`` and call only what is below; implementations live in
``scalopt.distributed`` (``TorchComm`` over a real process group, ``SimComm`` with logical workers
inside one process). ``SingleComm`` here is the one-rank Comm (every collective is a no-op that
still counts messages), so ``comm=None`` can mean ``SingleComm()``.

Conventions (every implementation follows them):

- Collectives act on dense contiguous tensors. Callers flatten first (one collective per step, not
  one per tensor).
- ``all_reduce(t, op)`` is in place and returns ``t``; ``op`` is ``"sum"`` or ``"mean"``.
  ``deterministic=True`` all-gathers and sums the copies in rank order 0, 1, …, N−1 (then divides
  for ``"mean"``), so every rank and every implementation gets bitwise the same result.
- ``all_gather(t)`` returns a new list of N tensors, entry j being rank j's ``t``.
- ``broadcast(t, src)`` overwrites ``t`` in place with rank ``src``'s ``t`` and returns it.
- ``reduce_scatter(t, op)``: ``t`` has ``t.shape[0]`` divisible by N; it is split along dim 0 into
  N equal chunks and this rank returns a new tensor: the reduction over ranks of chunk ``rank``.
- ``all_to_all(t)``: ``t`` is split along dim 0 into N equal chunks; chunk j goes to rank j; the
  result is a new tensor, the chunks received from ranks 0..N−1 concatenated along dim 0.
- ``async_op=True`` returns a ``Handle``; ``handle.wait()`` returns what the blocking call returns.
  Until then the tensors given must not be read or written.
- ``mark_round()`` is called by an algorithm at each of its synchronization points (CELGC with
  period 4 marks 4 rounds in 16 steps); it does not communicate.

Accounting (``bytes_sent``, ``messages``, ``rounds``), per rank, under the standard ring
algorithms, B = ``t.numel() * t.element_size()`` of the tensor given, N = world size:

    all_reduce          2(N−1)/N · B
    all_reduce (deterministic=True, sent as an all-gather)   (N−1) · B
    all_gather          (N−1)/N · (N·B) = (N−1) · B
    reduce_scatter      (N−1)/N · B
    all_to_all          (N−1)/N · B
    broadcast           B at the root, 0 elsewhere
    barrier             0 bytes, 1 message

Each collective adds 1 to ``messages``. ``bytes_sent`` is a float (the ring shares are fractional).
``wire_bytes`` computes the table; ``CommCounters`` keeps the counters for implementations.

Network model: ``NetworkModel(latency_s, bandwidth_bytes_per_s)`` prices a collective at
``latency_s + wire_bytes / bandwidth_bytes_per_s`` seconds; ``TorchComm(delay=...)`` makes a
collective's handle complete no earlier than that long after it started (so overlap hides it);
``SimComm`` only adds the price to ``network_time_s``. Benchmarks state one model for all
algorithms, e.g. ``NetworkModel(1e-3, 125e6)`` (1 ms, 1 Gbit/s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

REDUCE_OPS = ("sum", "mean")
COLLECTIVES = ("all_reduce", "all_gather", "broadcast", "reduce_scatter", "all_to_all", "barrier")


def wire_bytes(
    kind: str, nbytes: int, world_size: int, *, is_root: bool = False, deterministic: bool = False
) -> float:
    """Bytes this rank sends for one collective on a tensor of ``nbytes`` (see the module table)."""
    n = world_size
    if n == 1 or kind == "barrier":
        return 0.0
    if kind == "all_reduce":
        return float((n - 1) * nbytes) if deterministic else 2.0 * (n - 1) * nbytes / n
    if kind == "all_gather":
        return float((n - 1) * nbytes)
    if kind in ("reduce_scatter", "all_to_all"):
        return (n - 1) * nbytes / n
    if kind == "broadcast":
        return float(nbytes) if is_root else 0.0
    raise ValueError(f"kind must be one of {', '.join(COLLECTIVES)}, got {kind!r}")


@dataclass(frozen=True)
class NetworkModel:
    """A collective costs ``latency_s + bytes / bandwidth_bytes_per_s`` seconds."""

    latency_s: float
    bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        if not isinstance(self.latency_s, (int, float)) or not 0 <= self.latency_s < math.inf:
            raise ValueError(f"latency_s must be in [0, inf), got {self.latency_s!r}")
        b = self.bandwidth_bytes_per_s
        if not isinstance(b, (int, float)) or not b > 0:
            raise ValueError(f"bandwidth_bytes_per_s must be in (0, inf], got {b!r}")

    def seconds(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bandwidth_bytes_per_s

    def describe(self) -> str:
        return f"{self.latency_s * 1e3:g} ms latency, {self.bandwidth_bytes_per_s * 8 / 1e9:g} Gbit/s"


@runtime_checkable
class Handle(Protocol):
    """A pending collective. ``wait()`` blocks until it is done and returns its result."""

    def wait(self) -> Any: ...

    def is_completed(self) -> bool: ...


@runtime_checkable
class Comm(Protocol):
    """What optimizers need from a group of N ranks (see the module docstring for semantics)."""

    rank: int
    world_size: int
    bytes_sent: float
    messages: int
    rounds: int

    def all_reduce(
        self, tensor: torch.Tensor, op: str = "sum", *, deterministic: bool = False, async_op: bool = False
    ) -> torch.Tensor | Handle: ...

    def all_gather(self, tensor: torch.Tensor, *, async_op: bool = False) -> list[torch.Tensor] | Handle: ...

    def broadcast(
        self, tensor: torch.Tensor, src: int = 0, *, async_op: bool = False
    ) -> torch.Tensor | Handle: ...

    def reduce_scatter(
        self, tensor: torch.Tensor, op: str = "sum", *, async_op: bool = False
    ) -> torch.Tensor | Handle: ...

    def all_to_all(self, tensor: torch.Tensor, *, async_op: bool = False) -> torch.Tensor | Handle: ...

    def barrier(self) -> None: ...

    def mark_round(self) -> None: ...


class DoneHandle:
    """A handle whose result is already there (blocking implementations, one rank)."""

    def __init__(self, result: Any) -> None:
        self._result = result

    def wait(self) -> Any:
        return self._result

    def is_completed(self) -> bool:
        return True


def check_op(op: str) -> str:
    if op not in REDUCE_OPS:
        raise ValueError(f"op must be one of {', '.join(map(repr, REDUCE_OPS))}, got {op!r}")
    return op


def check_divisible(kind: str, tensor: torch.Tensor, world_size: int) -> None:
    if tensor.dim() == 0 or tensor.shape[0] % world_size:
        raise ValueError(
            f"{kind} needs a tensor whose first dimension is divisible by world_size={world_size}, "
            f"got shape {tuple(tensor.shape)}"
        )


def sum_in_rank_order(parts: list[torch.Tensor], op: str) -> torch.Tensor:
    """Σ_j parts[j] accumulated left to right (j = 0, 1, …); divided by N for ``"mean"``."""
    out = parts[0].clone()
    for p in parts[1:]:
        out.add_(p)
    if op == "mean":
        out.div_(len(parts))
    return out


COUNTERS = ("bytes_sent", "messages", "rounds")


def comm_counters(comm: Any) -> dict[str, float]:
    """The one reader of a Comm's accounting: ``bytes_sent``, ``messages``, ``rounds`` as floats
    (empty for ``comm=None``). Records, wrapper metrics and ``CommCounters.counters`` all use it."""
    if comm is None:
        return {}
    return {name: float(getattr(comm, name)) for name in COUNTERS}


class CommCounters:
    """Counter bookkeeping shared by the implementations: ``bytes_sent``, ``messages``, ``rounds``."""

    rank: int
    world_size: int

    def __init__(self, delay: NetworkModel | None = None) -> None:
        self.delay = delay
        self.bytes_sent = 0.0
        self.messages = 0
        self.rounds = 0
        self.network_time_s = 0.0  # what ``delay`` priced, summed

    def account(
        self, kind: str, tensor: torch.Tensor | None, *, is_root: bool = False, deterministic: bool = False
    ) -> float:
        """Count one collective; returns its modelled network time in seconds (0 without a model)."""
        nbytes = 0 if tensor is None else tensor.numel() * tensor.element_size()
        sent = wire_bytes(kind, nbytes, self.world_size, is_root=is_root, deterministic=deterministic)
        self.bytes_sent += sent
        self.messages += 1
        if self.delay is None:
            return 0.0
        cost = self.delay.seconds(sent) if self.world_size > 1 else 0.0
        self.network_time_s += cost
        return cost

    def mark_round(self) -> None:
        self.rounds += 1

    def counters(self) -> dict[str, float]:
        return {**comm_counters(self), "network_time_s": self.network_time_s}


class SingleComm(CommCounters):
    """The one-rank Comm: collectives leave tensors as they are (and count messages, 0 bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.rank = 0
        self.world_size = 1

    def _done(self, result: Any, async_op: bool) -> Any:
        return DoneHandle(result) if async_op else result

    def all_reduce(
        self, tensor: torch.Tensor, op: str = "sum", *, deterministic: bool = False, async_op: bool = False
    ) -> Any:
        check_op(op)
        self.account("all_reduce", tensor, deterministic=deterministic)
        return self._done(tensor, async_op)

    def all_gather(self, tensor: torch.Tensor, *, async_op: bool = False) -> Any:
        self.account("all_gather", tensor)
        return self._done([tensor.clone()], async_op)

    def broadcast(self, tensor: torch.Tensor, src: int = 0, *, async_op: bool = False) -> Any:
        if src != 0:
            raise ValueError(f"src must be a rank in [0, 1), got {src!r}")
        self.account("broadcast", tensor, is_root=True)
        return self._done(tensor, async_op)

    def reduce_scatter(self, tensor: torch.Tensor, op: str = "sum", *, async_op: bool = False) -> Any:
        check_op(op)
        self.account("reduce_scatter", tensor)
        return self._done(tensor.clone(), async_op)

    def all_to_all(self, tensor: torch.Tensor, *, async_op: bool = False) -> Any:
        self.account("all_to_all", tensor)
        return self._done(tensor.clone(), async_op)

    def barrier(self) -> None:
        self.account("barrier", None)


__all__ = [
    "COLLECTIVES",
    "REDUCE_OPS",
    "Comm",
    "CommCounters",
    "DoneHandle",
    "Handle",
    "NetworkModel",
    "SingleComm",
    "check_divisible",
    "check_op",
    "sum_in_rank_order",
    "wire_bytes",
]


def check_comm(comm: Any) -> Any:
    """``comm`` if it implements the :class:`Comm` protocol, else a ``ValueError`` naming what is missing."""
    needed = ("rank", "world_size", "all_reduce", "all_gather", "broadcast", "mark_round")
    missing = [name for name in needed if not hasattr(comm, name)]
    if missing:
        raise ValueError(
            f"comm must implement scalopt.core.comm.Comm (TorchComm, SimComm's rank endpoint, "
            f"SingleComm); {comm!r} lacks {', '.join(missing)}"
        )
    return comm
