"""When and how Shampoo's inverse roots are refreshed: schedule, batching, failure policy, async worker.

Schedule (t = the block's 1-based step, f = ``precondition_frequency``, s = the start step):

    root step  ⇔  t = s  or  (t > s and t mod f = 0)
    at a root step:  Ĥ_i = H_i/(1−β2^t) if β2 < 1 else H_i ;  H_i^inv ← (Ĥ_i + ε·I)^(−1/(2k))

All factors due at a step are batched by (size, exponent): one ``scalopt.linalg.inverse_root`` call
per distinct pair, whatever the number of blocks and parameter groups.

Failure policy (the authors' JAX code and Meta's PyTorch implementation both keep the previous root
when a root fails; tolerating 3 consecutive failing root steps is the PyTorch implementation's;
counting a non-finite root as a failure, where the JAX code keeps the old root silently, is scalopt's
choice so that it warns and counts):
1. non-finite Ĥ raises ``FloatingPointError`` at once, naming the parameter, block and factor, with
   NaN/Inf counts, the finite range and hints;
2. a root that fails (the solver raises, returns non-finite values, or Newton does not converge;
   float64 retries included) keeps the previous root (identity before the first success) and warns;
3. an install with any failure adds 1 to a counter, one without resets it; more than
   ``MAX_CONSECUTIVE_FAILURES`` = 3 consecutive raises ``RootFailureError``, chained to the last
   exception the solver raised.

Placement (``placement.py``): at a root step t0 the Ĥ are snapshotted and their roots computed inline,
on a pool of host threads, or on a side CUDA stream, and installed at the start of step t0 + root_delay
(at t0 itself for an inline root_delay of 0), waiting if unfinished: a run never depends on timing.
Failure handling runs at install. ``background()`` is the one extra thread of subclasses that
compute something else than roots (SOAP's eigenbases), with the caller's torch thread count.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import torch

from scalopt.core.validate import check_int
from scalopt.linalg import finite_rows, nonfinite_report
from scalopt.optim.shampoo.placement import Placement, RootPlacement, Slot, Solved, regroup
from scalopt.optim.shampoo.preconditioner import Pending, RootResult, ShapeGroup, resolve

__all__ = ["MAX_CONSECUTIVE_FAILURES", "RootFailureError", "RootRefresher", "Slot", "collect"]

MAX_CONSECUTIVE_FAILURES = 3


class RootFailureError(RuntimeError):
    """Inverse roots failed at more than ``MAX_CONSECUTIVE_FAILURES`` consecutive root steps."""


class InlineExecutor(Executor):
    """Runs a submitted function at once (a synchronous stand-in for the background thread)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            future.set_exception(exc)
        return future


def collect(batches: list[Any], solve: Callable[[Any], Any]) -> dict[int, RootResult]:
    """Run ``solve`` on every batch (anything with ``slots``; it returns a ``scalopt.linalg.RootResult``
    for the batch's rows) and regroup the rows per shape group and factor, with the time each took."""
    per_batch = []
    for batch in batches:
        start = time.perf_counter()
        res = solve(batch)
        seconds = time.perf_counter() - start
        per_batch.append((batch, Solved(res.roots, res.ok, res.reasons, res.error, seconds)))
    return regroup(per_batch)


class RootRefresher:
    """The root schedule, batching and failure policy of one Shampoo optimizer."""

    what = "inverse roots"  # in messages

    def __init__(
        self,
        *,
        frequency: int,
        start: float,
        placement: Placement,
        dtype: torch.dtype,
        count: Callable[[str, float], None],
        counters: Callable[[], dict[str, float]],
    ) -> None:
        self.frequency, self.start = frequency, start
        self.delay, self.dtype, self.async_roots = placement.delay, dtype, placement.device == "host"
        self.placement = RootPlacement(placement, dtype)
        self.count, self.counters = count, counters

    @property
    def executor(self) -> Executor | None:
        """The host threads (tests may put an ``InlineExecutor`` in their place)."""
        return self.placement.executor

    @executor.setter
    def executor(self, value: Executor | None) -> None:
        self.placement.executor = value

    def due(self, t: int) -> bool:
        return t == self.start or (t > self.start and t % self.frequency == 0)

    # -- refresh -----------------------------------------------------------------------------------
    def refresh(self, items: list[tuple[ShapeGroup, float, float]]) -> None:
        """Roots for every (group, β2, ε) due now: submitted where the placement says, installed now
        (root_delay 0) or queued for their install step."""
        if not items:
            return

        def check(g: int, i: int, hhat: torch.Tensor, first: int) -> None:
            self._check_finite(items[g][0], i, hhat, first)

        job = self.placement.submit(items, check)
        if self.delay > 0:
            for g, (sg, _, _) in enumerate(items):
                sg.pending.append(Pending(sg.t + self.delay, sg.t, future=job, key=g))
            return
        results = job.result()
        failures, error = [], None
        for g, (sg, _, _) in enumerate(items):
            res = results[g]
            failures += sg.install(Pending.computed(sg.t, sg.t, res))
            error = res.error or error
            self.count("root_seconds", res.seconds)
        self._account(failures, error, items[0][0].t)

    def install_due(self, groups: list[ShapeGroup]) -> None:
        """At the start of a step: install the pending roots whose install step has come."""
        failures: list[str] = []
        error, installed, step = None, False, 0
        for sg in groups:
            while sg.pending and sg.pending[0].install_step <= sg.t:
                pend = sg.pending.pop(0)
                self.count("root_wait_seconds", resolve(pend))
                self.count("root_seconds", pend.seconds)
                failures += sg.install(pend)
                sg.clear_pending_keys()
                error = pend.error or error
                installed, step = True, sg.t
        if installed:
            self._account(failures, error, step)

    def wait_all(self, groups: list[ShapeGroup]) -> None:
        for sg in groups:
            for pend in sg.pending:
                self.count("root_wait_seconds", resolve(pend))

    def background(self) -> Executor:
        """One background thread (with the caller's torch thread count), started on first use."""
        if self.executor is None:
            # a new thread does not inherit torch's intra-op thread count: without the initializer
            # its eigh runs on every core, against the training thread (measured: 2-25x slower)
            self.executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="scalopt-shampoo-roots",
                initializer=torch.set_num_threads,
                initargs=(torch.get_num_threads(),),
            )
        return self.executor

    def close(self) -> None:
        self.placement.close()

    # -- failure policy ------------------------------------------------------------------------------
    def _check_finite(self, sg: ShapeGroup, i: int, hhat: torch.Tensor, first: int = 0) -> None:
        """Raise if Ĥ (rows ``first``… of factor i's stack) is not finite, naming the block."""
        finite = finite_rows(hhat)
        if bool(finite.all()):
            return
        j0 = int((~finite).nonzero()[0])
        j = j0 + first
        raise FloatingPointError(
            f"Shampoo: non-finite statistics in factor {i} of {sg.entries[j].describe()} at step {sg.t} "
            f"({nonfinite_report(hhat[j0])}). The gradients were finite but their products overflowed or "
            f"the state was corrupted: lower the learning rate, clip gradients, start preconditioning "
            f"later (start_preconditioning_step) or use a larger grafting_eps"
        )

    def _account(self, failures: list[str], error: BaseException | None, step: int) -> None:
        counters = self.counters()
        if not failures:
            counters["root_consecutive_failures"] = 0
            return
        self.count("root_failures", len(failures))
        consecutive = counters.get("root_consecutive_failures", 0) + 1
        counters["root_consecutive_failures"] = consecutive
        shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
        if consecutive > MAX_CONSECUTIVE_FAILURES:
            raise RootFailureError(
                f"Shampoo: {self.what} failed at {consecutive} consecutive root steps (more than "
                f"{MAX_CONSECUTIVE_FAILURES} tolerated), last at step {step}: {shown}. Raise eps, use "
                f"root_dtype=torch.float64, or check the statistics"
            ) from error
        warnings.warn(
            f"Shampoo: {len(failures)} of the {self.what} failed at step {step}; keeping the previous ones "
            f"(identity before the first success), {consecutive} consecutive: {shown}",
            RuntimeWarning,
            stacklevel=4,
        )


def check_start(name: str, value: Any) -> Any:
    """``start_preconditioning_step``: None (the frequency), +inf (never), or an integer ≥ 1."""
    if value is None or (isinstance(value, float) and math.isinf(value) and value > 0):
        return value
    return check_int(name, value, minimum=1)


def start_step(start: float | None, frequency: int) -> float:
    """``start_preconditioning_step`` resolved: None means the precondition frequency."""
    return float(frequency) if start is None else (math.inf if math.isinf(start) else int(start))
