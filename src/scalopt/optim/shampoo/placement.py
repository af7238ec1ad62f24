"""Where Shampoo's inverse roots are computed and when they are installed: ``root_device``, ``root_delay``.

At a root step t0 the factors due are snapshotted, Ĥ_i = H_i/(1−β2^t0) (H_i for β2 = 1), into one
buffer per (matrix size d, root order p): at most one snapshot per pending root step. The roots of a
snapshot are installed at the start of step t0 + root_delay (root_delay = 0: at t0 itself, before
t0's preconditioning). The install step never depends on timing: an unfinished computation is
waited for at its install step, so a run is deterministic and equals the inline run with the same
root_delay (for CPU parameters bitwise when the training thread also runs one torch thread, as the
bench does: every solver gives a matrix the same root in any batch; with more threads the LAPACK
kernels may round differently).

    root_device  computed                                   snapshot                    root_delay
    "inline"     on the training thread at the root step   a copy where the params are  0 (any ≥ 0)
    "host"       by a pool of host threads (cores − 1        CUDA params: pinned host      f (1 … 8·f)
                 workers, one torch thread each; a batch     memory, copied non-blocking;
                 is split into one row range per worker)     CPU params: a plain copy
    "device"     on a side CUDA stream, coupled Newton       a copy on the device          f (1 … 8·f)
                 with fixed iteration counts (matmuls
                 only), ordered by CUDA events

f = ``precondition_frequency``. root_delay ≤ 8·f: every pending root step holds one snapshot and
one set of roots, so the bound caps that memory at 8 of each (and the staleness at 8 periods).
``async_roots=True`` is ``root_device="host"`` with the default delay. With
``eigenvalue_correction=True`` (SOAP, ``soap.py``) the eigenbases are computed inline or on one host
thread (``async_roots``) and installed by SOAP's own schedule: no "device" placement, no root_delay.

"host": the copy back to the device is non-blocking (from pinned memory); the training thread waits
only at an install step whose roots are not finished. For CUDA parameters the statistics' finiteness
is checked by the workers (a non-finite Ĥ raises ``FloatingPointError`` at the install step, not at
the root step: checking it there would synchronize the device).

"device": no host synchronization at the root step. The side stream waits on an event recorded
after the snapshot; the install step makes the training stream wait on the event recorded after the
roots, and waits on the host for that event only to read the per-matrix success flags (long done
when the delay hides the roots). A non-finite Ĥ or an unconverged matrix is a failed root (the
previous root is kept, counted and warned), there is no float64 retry. Deviation: the iteration
starts from the scaled identity, not from the previous root: the coupled iteration needs a start
that commutes with Ĥ; from X0 = the previous root it converges to X0 (X0^p Ĥ)^(−1/p), not Ĥ^(−1/p).

Default (``root_device=None``): "inline" for CPU parameters (today's synchronous behaviour);
"device" when every parameter is on CUDA. That choice rests on one H200 measurement of the roots
of a 57M-parameter GPT's 166 factors (block 1024): batched sync-free coupled Newton, 20 iterations,
0.084 s on the GPU, against 1.39 s for batched GPU eigh and ≈ 0.75 s wall for host eigh on 15
threads (which fits a 20-step window only while steps take ≥ 40 ms). Neither the "device" nor the
"host" placement of this module has been timed on a GPU yet.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import torch

from scalopt.core.validate import check_choice, check_int
from scalopt.linalg import ROOT_METHODS, inverse_root, newton_root_fixed
from scalopt.optim.shampoo.preconditioner import RootResult, ShapeGroup

ROOT_DEVICES = ("inline", "host", "device")
MAX_DELAY_PERIODS = 8


class Placement(NamedTuple):
    device: str  # one of ROOT_DEVICES
    delay: int
    method: str


def resolve_placement(
    root_device: Any,
    root_delay: Any,
    root_method: Any,
    opt: Any,
) -> Placement:
    """The validated placement of the roots of Shampoo ``opt`` (its parameters, ``async_roots`` and
    f = ``precondition_frequency``); a ValueError names the argument for anything not allowed."""
    frequency, async_roots = opt.precondition_frequency, opt.async_roots
    params = [p for group in opt.param_groups for p in group["params"]]
    if root_method is not None:
        check_choice("root_method", root_method, ROOT_METHODS)
    if root_device is not None:
        check_choice("root_device", root_device, ROOT_DEVICES)
    if async_roots:
        if root_device not in (None, "host"):
            raise ValueError(
                f"async_roots=True means root_device='host'; got root_device={root_device!r} with it "
                f"(drop async_roots)"
            )
        root_device = "host"
    cuda = bool(params) and all(p.is_cuda for p in params)
    if getattr(opt, "eigenvalue_correction", False):  # SOAP: bases from eigh/QR, its own install steps
        if root_device == "device" or root_delay is not None:
            raise ValueError(
                f"eigenvalue_correction=True computes eigenbases inline or on a host thread "
                f"(root_device None, 'inline' or 'host'; root_delay None), got root_device={root_device!r}, "
                f"root_delay={root_delay!r}"
            )
        if getattr(opt, "precondition_precision", "float32") != "float32":
            raise ValueError(
                f"eigenvalue_correction=True has no products with roots: precondition_precision must be "
                f"'float32', got {opt.precondition_precision!r}"
            )
        return Placement(root_device or "inline", frequency if root_device == "host" else 0, "eigh")
    if root_device is None:
        root_device = "device" if cuda else "inline"
    if root_device == "device" and not cuda:
        where = sorted({str(p.device) for p in params if not p.is_cuda}) or ["no parameters"]
        raise ValueError(
            f"root_device='device' computes roots on a side CUDA stream and needs every parameter on "
            f"CUDA; got parameters on {', '.join(where)} (use 'host' or 'inline')"
        )
    if root_method is None:
        root_method = "newton" if root_device == "device" else "eigh"
    elif root_device == "device" and root_method != "newton":
        raise ValueError(
            f"root_device='device' runs coupled Newton (matmuls only, no host synchronization); "
            f"got root_method={root_method!r} (use root_method='newton' or another root_device)"
        )
    low = 0 if root_device == "inline" else 1
    high = MAX_DELAY_PERIODS * frequency
    if root_delay is None:
        root_delay = 0 if root_device == "inline" else frequency
    check_int("root_delay", root_delay, minimum=low)
    if root_delay > high:
        raise ValueError(
            f"root_delay must be in [{low}, {high}] (at most {MAX_DELAY_PERIODS} precondition periods "
            f"of {frequency} steps: each pending root step holds a snapshot), got {root_delay!r}"
        )
    return Placement(root_device, int(root_delay), root_method)


def host_workers() -> int:
    """Host threads for root computation: the process's cores minus one for the training thread."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class Slot(NamedTuple):
    """Where one factor of one shape group sits in a batched solve: rows start:stop of the stack."""

    group: int  # the shape group's index in the refresh
    factor: int
    start: int
    stop: int


class RootBatch(NamedTuple):
    """One batched solve: the snapshot of every factor of size d due now, all raised to the power −1/p."""

    p: int
    stack: torch.Tensor  # (rows, d, d): Ĥ of every slot (H where ``divisors`` is given)
    eps: torch.Tensor  # (rows,): the ridge of every matrix
    slots: list[Slot]
    divisors: list[float] | None  # per slot: 1−β2^t still to divide by (host snapshots of CUDA params)
    device: torch.device  # where the parameters are (the roots go back there)


#: (group, factor, rows of Ĥ, index of the first of those rows in the factor) -> raises if not finite
CheckFinite = Callable[[int, int, torch.Tensor, int], None]


def snapshot(
    items: list[tuple[ShapeGroup, float, float]], placement: str, check: CheckFinite
) -> list[RootBatch]:
    """The snapshot of every factor due now, one buffer per (size, order, dtype, device)."""
    keyed: dict[tuple[int, int, torch.dtype, torch.device], list[tuple[int, int, torch.Tensor, float, float]]]
    keyed = {}
    for g, (sg, beta2, eps) in enumerate(items):
        divisor = 1.0 - beta2**sg.stats_count if beta2 < 1.0 else 1.0
        for i, h in enumerate(sg.factors):
            keyed.setdefault((h.shape[-1], 2 * sg.order, h.dtype, h.device), []).append(
                (g, i, h, divisor, eps)
            )
    batches = []
    for (d, p, dtype, device), parts in keyed.items():
        to_host = placement == "host" and device.type == "cuda"
        rows = sum(h.shape[0] for _, _, h, _, _ in parts)
        where = torch.device("cpu") if to_host else device
        stack = torch.empty((rows, d, d), dtype=dtype, device=where, pin_memory=to_host)
        slots, offset = [], 0
        for g, i, h, divisor, _ in parts:
            rows_of = stack[offset : offset + h.shape[0]]
            if to_host:
                rows_of.copy_(h, non_blocking=True)
            elif divisor != 1.0:
                torch.div(h, divisor, out=rows_of)
            else:
                rows_of.copy_(h)
            if not to_host and device.type == "cpu":
                check(g, i, rows_of, 0)  # free on the CPU; on CUDA it would synchronize
            slots.append(Slot(g, i, offset, offset + h.shape[0]))
            offset += h.shape[0]
        ridge = torch.cat(
            [torch.full((h.shape[0],), e, dtype=dtype, device=where) for _, _, h, _, e in parts]
        )
        divisors = [divisor for _, _, _, divisor, _ in parts] if to_host else None
        batches.append(RootBatch(p, stack, ridge, slots, divisors, device))
    return batches


class Solved(NamedTuple):
    """The solve of rows start:stop of a batch."""

    roots: torch.Tensor
    ok: list[bool]
    reasons: list[str | None]
    error: BaseException | None
    seconds: float


def solve_rows(
    batch: RootBatch, start: int, stop: int, method: str, dtype: torch.dtype, check: CheckFinite
) -> Solved:
    """Roots of rows start:stop of a batch (finishing a host snapshot of CUDA parameters first)."""
    t0 = time.perf_counter()
    stack = batch.stack[start:stop]
    if batch.divisors is not None:
        for (g, i, a, b), divisor in zip(batch.slots, batch.divisors):
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                rows = batch.stack[lo:hi]
                if divisor != 1.0:
                    rows.div_(divisor)
                check(g, i, rows, lo - a)
    res = inverse_root(stack, batch.p, batch.eps[start:stop], method=method, dtype=dtype)
    return Solved(res.roots, res.ok, res.reasons, res.error, time.perf_counter() - t0)


def assemble(
    batches: list[RootBatch],
    solved: list[list[tuple[int, Solved]]],
    outs: list[torch.Tensor | None] | None = None,
) -> dict[int, RootResult]:
    """Per shape group (by index) its RootResult, from each batch's solved row ranges (start, Solved);
    ``outs``: per batch the buffer the row ranges were written into (None: concatenate them)."""
    per_batch = []
    for batch, parts, out in zip(batches, solved, outs or [None] * len(batches)):
        if out is not None:
            full = out
        else:
            full = parts[0][1].roots if len(parts) == 1 else torch.cat([s.roots for _, s in parts])
        if full.device != batch.device:
            full = full.to(batch.device, non_blocking=True)
        ok = [x for _, s in parts for x in s.ok]
        why = [x for _, s in parts for x in s.reasons]
        error = next((s.error for _, s in reversed(parts) if s.error is not None), None)
        per_batch.append((batch, Solved(full, ok, why, error, sum(s.seconds for _, s in parts))))
    return regroup(per_batch)


def regroup(per_batch: list[tuple[Any, Any]]) -> dict[int, RootResult]:
    """Per shape group (by index) its RootResult, from each batch (anything with ``slots``) and the
    result for its rows (``roots``, ``ok``, ``reasons``, ``error``, ``seconds`` for the whole batch)."""
    roots: dict[int, dict[int, torch.Tensor]] = {}
    oks: dict[int, dict[int, list[bool]]] = {}
    reasons: dict[int, dict[int, list[str | None]]] = {}
    errors: dict[int, BaseException | None] = {}
    seconds: dict[int, float] = {}
    for batch, res in per_batch:
        share = res.seconds / len(batch.slots)
        for g, i, a, b in batch.slots:
            roots.setdefault(g, {})[i] = res.roots[a:b]
            oks.setdefault(g, {})[i] = res.ok[a:b]
            reasons.setdefault(g, {})[i] = res.reasons[a:b]
            errors[g] = res.error or errors.get(g)
            seconds[g] = seconds.get(g, 0.0) + share
    return {
        g: RootResult(
            roots=[r[i] for i in sorted(r)],
            ok=[oks[g][i] for i in sorted(r)],
            reasons=[reasons[g][i] for i in sorted(r)],
            error=errors[g],
            seconds=seconds[g],
        )
        for g, r in roots.items()
    }


class Job:
    """Roots being computed; ``result()`` (idempotent) waits and returns them per shape group."""

    def __init__(self, finish: Callable[[], dict[int, RootResult]]) -> None:
        self._finish, self._result = finish, None
        self._lock = threading.Lock()

    def result(self) -> dict[int, RootResult]:
        with self._lock:
            if self._result is None:
                self._result = self._finish()
                self._finish = None  # type: ignore[assignment]  # drop the snapshot
            return self._result


def inline_job(batches: list[RootBatch], method: str, dtype: torch.dtype, check: CheckFinite) -> Job:
    """Roots computed now, on this thread, one solve per batch."""
    solved = [[(0, solve_rows(b, 0, b.stack.shape[0], method, dtype, check))] for b in batches]
    result = assemble(batches, solved)
    return Job(lambda: result)


def host_job(
    batches: list[RootBatch],
    method: str,
    dtype: torch.dtype,
    check: CheckFinite,
    executor: Executor,
    workers: int,
) -> Job:
    """Roots computed by the executor's threads, each batch split into ``workers`` row ranges."""
    event = None
    if any(b.divisors is not None for b in batches):  # a pinned snapshot of CUDA params: copies in flight
        event = torch.cuda.Event()
        event.record()

    # CUDA params: the roots go back from pinned memory (copied there by the workers), non-blocking
    outs = [torch.empty_like(b.stack, pin_memory=True) if b.divisors is not None else None for b in batches]

    def run(batch: RootBatch, start: int, stop: int, out: torch.Tensor | None) -> Solved:
        if event is not None:
            event.synchronize()  # this snapshot's copies only, never the whole device
        solved = solve_rows(batch, start, stop, method, dtype, check)
        if out is None:
            return solved
        out[start:stop].copy_(solved.roots)
        return solved._replace(roots=out[start:stop])

    futures: list[list[tuple[int, Future[Solved]]]] = []
    for b, out in zip(batches, outs):
        rows = b.stack.shape[0]
        n = max(1, min(workers, rows))
        cuts = [rows * k // n for k in range(n + 1)]
        futures.append([(cuts[k], executor.submit(run, b, cuts[k], cuts[k + 1], out)) for k in range(n)])
    return Job(lambda: assemble(batches, [[(a, f.result()) for a, f in parts] for parts in futures], outs))


def device_job(batches: list[RootBatch], dtype: torch.dtype, stream: Any) -> Job:
    """Roots computed on a side CUDA stream (sync-free coupled Newton), ordered by events."""
    main = torch.cuda.current_stream(batches[0].device)
    ready = torch.cuda.Event()
    start, done = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ready.record(main)
    out = []
    with torch.cuda.stream(stream):
        stream.wait_event(ready)
        start.record(stream)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            for b in batches:
                b.stack.record_stream(stream)
                b.eps.record_stream(stream)
                x, ok = newton_root_fixed(b.stack.to(dtype), b.p, b.eps.to(dtype))
                flags = torch.empty(ok.shape, dtype=torch.bool, pin_memory=True)
                flags.copy_(ok, non_blocking=True)
                out.append((x.to(b.stack.dtype), flags))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        done.record(stream)

    def finish() -> dict[int, RootResult]:
        done.synchronize()  # this event only: the flags are on the host now
        main.wait_event(done)
        solved = []
        seconds = start.elapsed_time(done) / 1000.0 / max(1, len(batches))
        for x, flags in out:
            x.record_stream(main)
            ok = flags.tolist()
            why = [None if k else "coupled Newton (fixed iterations) did not converge" for k in ok]
            solved.append([(0, Solved(x, ok, why, None, seconds))])
        return assemble(batches, solved)

    return Job(finish)


class RootPlacement:
    """Submits the roots of a root step where the placement says; owns the host pool and side stream."""

    def __init__(self, placement: Placement, dtype: torch.dtype) -> None:
        self.placement, self.dtype = placement, dtype
        self.executor: Executor | None = None
        self.workers = host_workers()
        self.stream: Any = None

    def submit(self, items: list[tuple[ShapeGroup, float, float]], check: CheckFinite) -> Job:
        kind, method = self.placement.device, self.placement.method
        batches = snapshot(items, kind, check)
        if kind == "inline":
            return inline_job(batches, method, self.dtype, check)
        if kind == "device":
            if self.stream is None:
                self.stream = torch.cuda.Stream(device=batches[0].device)
            return device_job(batches, self.dtype, self.stream)
        if self.executor is None:
            # a new thread does not inherit torch's intra-op thread count: one thread per worker, so the
            # pool uses the cores it was sized for and leaves the training thread its own
            self.executor = ThreadPoolExecutor(
                max_workers=self.workers,
                thread_name_prefix="scalopt-shampoo-roots",
                initializer=torch.set_num_threads,
                initargs=(1,),
            )
        return host_job(batches, method, self.dtype, check, self.executor, self.workers)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
