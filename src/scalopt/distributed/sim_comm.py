"""``SimComm``: N logical ranks inside one process, for equality tests and quick studies.

    results = SimComm(world_size=4).run(fn, *args)    # fn(comm, *args) on every rank, in rank order

Each logical rank runs ``fn`` in its own thread, but the ranks run one at a time, in lock-step:
rank 0 runs until its next collective (or until it returns or raises), then rank 1, …; when every
rank has reached the collective, it completes and the round starts again. So each rank behaves as
if it were its own process:

- **RNG.** Torch's global CPU generator (dropout, ``torch.randn`` without a generator, ...) and
  Python's ``random`` / NumPy's global state are swapped in and out around each rank's turn. Every
  rank starts with its own non-deterministic torch seed, as a fresh process does; a rank that calls
  ``torch.manual_seed(s)`` then draws exactly the numbers a process seeded with ``s`` draws.
  Python and NumPy states start as copies of the caller's. The caller's states are restored after
  ``run``. (CUDA generators are not swapped.)
- **Errors.** An exception in one rank aborts the others (they are unwound inside their pending
  collective by ``SimAbort``) and ``run`` raises ``RankError`` naming the rank, with its traceback,
  chained to the original exception.
- **Mismatched collectives.** Ranks that issue different collectives (kind, shape, dtype, op, src)
  at the same point, or a rank that returns while others wait in a collective, raise
  ``CollectiveMismatch`` naming both ranks and both calls — never a deadlock.
- **Hangs.** A rank that does not reach its next collective (or return) within ``timeout_s``
  raises ``RankError`` (the stuck thread is a daemon and is abandoned).

Results equal ``TorchComm``'s bitwise: every reduction sums in rank order 0..N−1 (which is what
``deterministic=True`` does over a real group, and what any backend does for N = 2). Async
collectives complete when issued (all ranks are there); the handle returns the result.
Accounting is per rank (``comm.bytes_sent`` ...), as over a real group; with ``delay`` the modelled
network time is only added to ``network_time_s`` (nothing sleeps). After ``run``, ``sim.ranks``
holds the N rank endpoints with their counters.

Collectives must be issued from the rank's own thread (the one running ``fn``).
"""

from __future__ import annotations

import random
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scalopt.core.comm import (
    CommCounters,
    DoneHandle,
    NetworkModel,
    check_divisible,
    check_op,
    sum_in_rank_order,
)
from scalopt.core.validate import check_int, check_positive


class SimAbort(BaseException):
    """Raised inside a logical rank to unwind it because another rank failed (never caught by user code)."""


class RankError(RuntimeError):
    """A rank raised (or hung); the message names the rank and carries its traceback."""

    def __init__(self, rank: int, world_size: int, message: str, tb: str = "") -> None:
        self.rank = rank
        text = f"rank {rank} of {world_size}: {message}"
        if tb:
            text += f"\n--- traceback of rank {rank} ---\n{tb.rstrip()}"
        super().__init__(text)


class CollectiveMismatch(RuntimeError):
    """Ranks issued different sequences of collectives (a real group would deadlock or corrupt)."""


@dataclass
class _Call:
    kind: str
    tensor: torch.Tensor | None
    op: str | None = None
    src: int | None = None

    def signature(self) -> tuple[Any, ...]:
        t = self.tensor
        shape = None if t is None else (tuple(t.shape), t.dtype)
        return (self.kind, shape, self.op, self.src)

    def describe(self) -> str:
        args = []
        if self.tensor is not None:
            args += [f"shape={tuple(self.tensor.shape)}", f"dtype={self.tensor.dtype}"]
        if self.op is not None:
            args.append(f"op={self.op!r}")
        if self.src is not None:
            args.append(f"src={self.src}")
        return f"{self.kind}({', '.join(args)})"


def _capture_rng() -> tuple[Any, Any, Any]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _restore_rng(states: tuple[Any, Any, Any]) -> None:
    torch.set_rng_state(states[0])
    random.setstate(states[1])
    np.random.set_state(states[2])


class SimRankComm(CommCounters):
    """One logical rank's endpoint: the ``Comm`` a rank's ``fn`` receives."""

    def __init__(self, run: _Run, rank: int, delay: NetworkModel | None) -> None:
        super().__init__(delay)
        self._run = run
        self.rank = rank
        self.world_size = run.world_size

    def _call(self, call: _Call, async_op: bool, **acct: Any) -> Any:
        self.account(call.kind, call.tensor, **acct)
        result = self._run.arrive(self.rank, call)
        return DoneHandle(result) if async_op else result

    def all_reduce(
        self, tensor: torch.Tensor, op: str = "sum", *, deterministic: bool = False, async_op: bool = False
    ) -> Any:
        check_op(op)
        return self._call(_Call("all_reduce", tensor, op=op), async_op, deterministic=deterministic)

    def all_gather(self, tensor: torch.Tensor, *, async_op: bool = False) -> Any:
        return self._call(_Call("all_gather", tensor), async_op)

    def broadcast(self, tensor: torch.Tensor, src: int = 0, *, async_op: bool = False) -> Any:
        if not isinstance(src, int) or not 0 <= src < self.world_size:
            raise ValueError(f"src must be a rank in [0, {self.world_size}), got {src!r}")
        return self._call(_Call("broadcast", tensor, src=src), async_op, is_root=self.rank == src)

    def reduce_scatter(self, tensor: torch.Tensor, op: str = "sum", *, async_op: bool = False) -> Any:
        check_op(op)
        check_divisible("reduce_scatter", tensor, self.world_size)
        return self._call(_Call("reduce_scatter", tensor, op=op), async_op)

    def all_to_all(self, tensor: torch.Tensor, *, async_op: bool = False) -> Any:
        check_divisible("all_to_all", tensor, self.world_size)
        return self._call(_Call("all_to_all", tensor), async_op)

    def barrier(self) -> None:
        self._call(_Call("barrier", None), False)

    def __repr__(self) -> str:
        return f"SimRankComm(rank={self.rank}, world_size={self.world_size})"


def _complete(calls: list[_Call]) -> list[Any]:
    """The result each rank gets from one collective (all ranks' calls already checked equal)."""
    n = len(calls)
    kind = calls[0].kind
    ts = [c.tensor for c in calls]
    if kind == "all_reduce":
        out = sum_in_rank_order(ts, calls[0].op)
        for t in ts:
            t.copy_(out)
        return ts
    if kind == "all_gather":
        snap = [t.clone() for t in ts]
        return [[s.clone() for s in snap] for _ in range(n)]
    if kind == "broadcast":
        value = ts[calls[0].src].clone()
        for t in ts:
            t.copy_(value)
        return ts
    if kind in ("reduce_scatter", "all_to_all"):
        chunks = [t.contiguous().chunk(n) for t in ts]
        if kind == "all_to_all":
            return [torch.cat([chunks[i][j] for i in range(n)]) for j in range(n)]
        return [sum_in_rank_order([chunks[i][j] for i in range(n)], calls[0].op) for j in range(n)]
    return [None] * n  # barrier


class SimComm:
    """N logical ranks in one process (see the module docstring); ``run(fn, *args)`` → results by rank."""

    def __init__(
        self, world_size: int, *, delay: NetworkModel | None = None, timeout_s: float = 60.0
    ) -> None:
        self.world_size = check_int("world_size", world_size, minimum=1)
        if delay is not None and not isinstance(delay, NetworkModel):
            raise ValueError(f"delay must be a NetworkModel or None, got {delay!r}")
        self.delay = delay
        self.timeout_s = check_positive("timeout_s", timeout_s)
        self.ranks: list[SimRankComm] = []

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Call ``fn(comm, *args, **kwargs)`` on every logical rank; their return values in rank order."""
        run = _Run(self)
        self.ranks = run.ranks
        caller = _capture_rng()
        for _ in range(self.world_size):
            torch.seed()  # a fresh, non-deterministic seed per rank, like a new process
            run.rng.append((torch.get_rng_state(), caller[1], caller[2]))
        try:
            return run.start(fn, args, kwargs)
        finally:
            _restore_rng(caller)


class _Run:
    """The state of one ``SimComm.run``: rank threads, the baton, pending calls, statuses."""

    def __init__(self, sim: SimComm) -> None:
        n = self.world_size = sim.world_size
        self.timeout_s = sim.timeout_s
        self.abort = False
        self.ranks = [SimRankComm(self, r, sim.delay) for r in range(n)]
        self.go = [threading.Semaphore(0) for _ in range(n)]
        self.parked = [threading.Semaphore(0) for _ in range(n)]
        self.pending: list[_Call | None] = [None] * n
        self.results: list[Any] = [None] * n
        self.returned: list[Any] = [None] * n
        self.status = ["new"] * n
        self.errors: dict[int, tuple[BaseException, str]] = {}
        self.rng: list[tuple[Any, Any, Any]] = []
        self.threads: list[threading.Thread] = []

    # -- called from rank threads ----------------------------------------------------------------
    def arrive(self, rank: int, call: _Call) -> Any:
        if threading.current_thread() is not self.threads[rank]:
            raise RuntimeError(f"rank {rank}: SimComm collectives must be issued from the rank's own thread")
        if self.abort:  # e.g. a rank that outlived its timeout
            raise SimAbort()
        self.pending[rank] = call
        self.parked[rank].release()
        self.go[rank].acquire()
        if self.abort:
            raise SimAbort()
        result = self.results[rank]
        self.results[rank] = None
        return result

    def body(self, rank: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.go[rank].acquire()
        try:
            if self.abort:
                raise SimAbort()
            self.returned[rank] = fn(self.ranks[rank], *args, **kwargs)
            self.status[rank] = "done"
        except SimAbort:
            self.status[rank] = "aborted"
        except BaseException as exc:  # noqa: BLE001 - handed to the caller with the rank's number
            self.status[rank] = "error"
            self.errors[rank] = (exc, traceback.format_exc())
        finally:
            self.pending[rank] = None
            self.parked[rank].release()

    # -- the scheduler (caller's thread) ---------------------------------------------------------
    def start(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        self.threads = [
            threading.Thread(
                target=self.body, args=(r, fn, args, kwargs), name=f"simcomm-rank{r}", daemon=True
            )
            for r in range(self.world_size)
        ]
        for t in self.threads:
            t.start()
        return self.schedule()

    def turn(self, rank: int) -> None:
        """Let ``rank`` run (with its RNG) until it parks in a collective, returns or raises."""
        _restore_rng(self.rng[rank])
        self.go[rank].release()
        if not self.parked[rank].acquire(timeout=self.timeout_s):
            self.status[rank] = "hung"
            raise RankError(
                rank,
                self.world_size,
                f"did not reach its next collective or return within timeout_s={self.timeout_s} s "
                f"(a hang, or a collective issued from another thread)",
            )
        self.rng[rank] = _capture_rng()

    def abort_all(self) -> None:
        self.abort = True
        for r in range(self.world_size):
            if self.status[r] in ("new", "pending"):
                self.go[r].release()
                self.parked[r].acquire(timeout=self.timeout_s)

    def schedule(self) -> list[Any]:
        n = self.world_size
        while True:
            for r in range(n):
                if self.status[r] in ("new", "pending"):
                    try:
                        self.turn(r)
                    except RankError:
                        self.abort_all()
                        raise
                    if self.status[r] in ("new", "pending"):
                        self.status[r] = "pending"
                    if self.status[r] == "error":
                        self.abort_all()
                        exc, tb = self.errors[r]
                        raise RankError(r, n, f"raised {type(exc).__name__}: {exc}", tb) from exc
            if all(s == "done" for s in self.status):
                return self.returned
            calls = self.pending
            waiting = [r for r in range(n) if self.status[r] == "pending"]
            done = [r for r in range(n) if self.status[r] == "done"]
            message = None
            if done:
                w, d = waiting[0], done[0]
                message = (
                    f"rank {d} returned while rank {w} waits in {calls[w].describe()}: the ranks issued "
                    f"different numbers of collectives (a real process group would hang here)"
                )
            else:
                first = calls[0]
                for r in range(1, n):
                    if calls[r].signature() != first.signature():
                        message = (
                            f"collective mismatch: rank 0 issued {first.describe()} but rank {r} issued "
                            f"{calls[r].describe()} (after {self.ranks[0].messages - 1} and "
                            f"{self.ranks[r].messages - 1} earlier collectives); every rank must issue the "
                            f"same collectives in the same order"
                        )
                        break
            if message is not None:
                self.abort_all()
                raise CollectiveMismatch(message)
            self.results = _complete(calls)
            self.pending = [None] * n
