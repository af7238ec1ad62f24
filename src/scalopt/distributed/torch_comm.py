"""``TorchComm``: the ``Comm`` protocol over a real ``torch.distributed`` process group.

Under ``torchrun`` (which sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)::

    from scalopt.distributed import TorchComm, LocalSGD
    comm = TorchComm.init("gloo")                   # init_process_group(timeout=60 s) + TorchComm()
    # or: torch.distributed.init_process_group("gloo"); comm = TorchComm()   (the default group)
    opt = LocalSGD(torch.optim.SGD(model.parameters(), lr=0.1), comm=comm, period=8)

    torchrun --nproc-per-node 4 train.py

``scalopt.distributed.launch(fn, world_size, *args)`` starts the group itself (gloo on loopback)
and hands each rank a ``TorchComm``.

Semantics and byte accounting follow ``scalopt.core.comm``. Implementation notes:

- ``all_reduce(op="mean")`` sums with the backend, then divides by N (gloo has no AVG). With two
  ranks every element is one commutative addition, so the result is bitwise the same as
  ``SimComm``'s; with more ranks the backend's order is unspecified: use ``deterministic=True``
  (all-gather, sum in rank order, accounted as the all-gather it sends).
- ``reduce_scatter`` is an ``all_to_all`` followed by a rank-order sum of the received chunks
  (deterministic for every N; the same (N−1)/N·B on the wire as a ring reduce-scatter).
- ``delay=NetworkModel(...)``: a collective's handle completes no earlier than
  ``latency_s + wire_bytes / bandwidth`` after the collective was issued, so computation between
  issue and ``wait()`` hides the delay (a blocking call waits it out at once).
- A collective that fails (a peer died, or it did not complete within ``timeout_s``, default
  60 s, also when the group's own timeout is longer — gloo's default is 30 minutes) is re-raised
  as ``CommError`` naming this rank, the collective and the tensor, with the backend's message.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from scalopt.core.comm import (
    CommCounters,
    NetworkModel,
    check_divisible,
    check_op,
    sum_in_rank_order,
)
from scalopt.core.validate import check_positive


class CommError(RuntimeError):
    """A collective failed: a peer rank died or hung past the timeout, or the backend failed."""


class TorchHandle:
    """Wraps a backend ``Work``: on ``wait()`` finishes it, applies the post-step, honours the delay."""

    def __init__(self, comm: TorchComm, what: str, work: Any, finish: Any, deadline: float) -> None:
        self._comm, self._what, self._work, self._finish = comm, what, work, finish
        self._deadline = deadline
        self._done = False
        self._result: Any = None

    def is_completed(self) -> bool:
        if self._done:
            return True
        work_done = self._work is None or self._work.is_completed()
        return work_done and time.perf_counter() >= self._deadline

    def wait(self) -> Any:
        if self._done:
            return self._result
        if self._work is not None:
            try:
                self._work.wait(self._comm.timeout)
            except Exception as exc:  # noqa: BLE001 - re-raised with context
                raise self._comm.error(self._what, exc) from exc
        self._result = self._finish()
        remaining = self._deadline - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)
        self._done = True
        return self._result


class TorchComm(CommCounters):
    """``Comm`` over ``group`` (None: the default group, e.g. the one torchrun's script initialised)."""

    def __init__(
        self, group: Any = None, delay: NetworkModel | None = None, *, timeout_s: float = 60.0
    ) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "TorchComm needs an initialised process group: call "
                "torch.distributed.init_process_group('gloo') first (torchrun sets the environment), "
                "or use scalopt.distributed.launch(fn, world_size) to start one"
            )
        if delay is not None and not isinstance(delay, NetworkModel):
            raise ValueError(f"delay must be a NetworkModel or None, got {delay!r}")
        super().__init__(delay)
        self.timeout = timedelta(seconds=check_positive("timeout_s", timeout_s))
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    @classmethod
    def init(
        cls, backend: str = "gloo", *, timeout_s: float = 60.0, delay: NetworkModel | None = None
    ) -> TorchComm:
        """``init_process_group(backend)`` from the environment torchrun sets, then a Comm on it."""
        if not dist.is_initialized():
            timeout = timedelta(seconds=check_positive("timeout_s", timeout_s))
            dist.init_process_group(backend, timeout=timeout)
        return cls(delay=delay, timeout_s=timeout_s)

    # -- plumbing --------------------------------------------------------------------------------
    def error(self, what: str, exc: BaseException) -> CommError:
        return CommError(
            f"rank {self.rank}/{self.world_size}: {what} failed — a peer rank probably died, or hung past "
            f"the timeout ({self.timeout.total_seconds():g} s) ({type(exc).__name__}: {exc})"
        )

    def _global(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def _issue(self, what: str, cost: float, launch: Any, finish: Any, async_op: bool) -> Any:
        deadline = time.perf_counter() + cost
        try:
            work = launch()
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise self.error(what, exc) from exc
        handle = TorchHandle(self, what, work, finish, deadline)
        return handle if async_op else handle.wait()

    @staticmethod
    def _describe(kind: str, t: torch.Tensor) -> str:
        return f"{kind}(shape={tuple(t.shape)}, dtype={t.dtype})"

    # -- collectives -----------------------------------------------------------------------------
    def all_reduce(
        self, tensor: torch.Tensor, op: str = "sum", *, deterministic: bool = False, async_op: bool = False
    ) -> Any:
        check_op(op)
        what = self._describe("all_reduce", tensor)
        cost = self.account("all_reduce", tensor, deterministic=deterministic)
        n = self.world_size
        if deterministic:
            parts = [torch.empty_like(tensor) for _ in range(n)]

            def finish_det() -> torch.Tensor:
                return tensor.copy_(sum_in_rank_order(parts, op))

            launch = lambda: dist.all_gather(parts, tensor, group=self.group, async_op=True)  # noqa: E731
            return self._issue(what, cost, launch, finish_det, async_op)

        def finish() -> torch.Tensor:
            return tensor.div_(n) if op == "mean" else tensor

        launch = lambda: dist.all_reduce(tensor, group=self.group, async_op=True)  # noqa: E731
        return self._issue(what, cost, launch, finish, async_op)

    def all_gather(self, tensor: torch.Tensor, *, async_op: bool = False) -> Any:
        what = self._describe("all_gather", tensor)
        cost = self.account("all_gather", tensor)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        launch = lambda: dist.all_gather(parts, tensor, group=self.group, async_op=True)  # noqa: E731
        return self._issue(what, cost, launch, lambda: parts, async_op)

    def broadcast(self, tensor: torch.Tensor, src: int = 0, *, async_op: bool = False) -> Any:
        if not isinstance(src, int) or not 0 <= src < self.world_size:
            raise ValueError(f"src must be a rank in [0, {self.world_size}), got {src!r}")
        what = self._describe("broadcast", tensor)
        cost = self.account("broadcast", tensor, is_root=self.rank == src)
        launch = lambda: dist.broadcast(tensor, self._global(src), group=self.group, async_op=True)  # noqa: E731
        return self._issue(what, cost, launch, lambda: tensor, async_op)

    def reduce_scatter(self, tensor: torch.Tensor, op: str = "sum", *, async_op: bool = False) -> Any:
        check_op(op)
        check_divisible("reduce_scatter", tensor, self.world_size)
        what = self._describe("reduce_scatter", tensor)
        cost = self.account("reduce_scatter", tensor)
        inp = tensor.contiguous()
        received = torch.empty_like(inp)

        def finish() -> torch.Tensor:
            return sum_in_rank_order(list(received.chunk(self.world_size)), op)

        launch = lambda: dist.all_to_all_single(received, inp, group=self.group, async_op=True)  # noqa: E731
        return self._issue(what, cost, launch, finish, async_op)

    def all_to_all(self, tensor: torch.Tensor, *, async_op: bool = False) -> Any:
        check_divisible("all_to_all", tensor, self.world_size)
        what = self._describe("all_to_all", tensor)
        cost = self.account("all_to_all", tensor)
        inp = tensor.contiguous()
        out = torch.empty_like(inp)
        launch = lambda: dist.all_to_all_single(out, inp, group=self.group, async_op=True)  # noqa: E731
        return self._issue(what, cost, launch, lambda: out, async_op)

    def barrier(self) -> None:
        cost = self.account("barrier", None)
        self._issue(
            "barrier", cost, lambda: dist.barrier(group=self.group, async_op=True), lambda: None, False
        )

    def __repr__(self) -> str:
        delay = "" if self.delay is None else f", delay={self.delay.describe()}"
        return f"TorchComm(rank={self.rank}, world_size={self.world_size}{delay})"
