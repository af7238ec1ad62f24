"""Hogwild!: several processes update shared-memory parameters without locks.

    shared w (share_memory()), global step counter t (every worker's update counts)
    each worker k, for ``steps`` steps:
        t ← fetch-and-increment(counter)
        η_t = c/(μ·(t + E))                       with lr=Diminishing(c, E, mu), else the optimizer's lr
        read ŵ (possibly inconsistent: other workers write meanwhile), sample ξ_t from its own stream
        update="full":        w ← inner_step(w, ∇f(ŵ; ξ_t))                     (default)
        update="coordinate":  D = support of ∇f(ŵ; ξ_t), d = |D|, u ~ Uniform(D):
                              w_u ← w_u − η_t·d·[∇f(ŵ; ξ_t)]_u                 (the paper's analysed rule)

Symbols ↔ arguments: c, E, μ = ``Diminishing(c, E, mu=1.0)`` (η_t = c/(t + E) with μ = 1: μ folded into
c, the form most schedules are written in), workers = ``workers``, steps per worker = ``steps``. The
optimizer (``make_optimizer(params)``, picklable, e.g. ``functools.partial(torch.optim.SGD, lr=0.1)``)
is built inside each worker over the shared parameters; its state (momentum) is per worker, as in
PyTorch's mnist_hogwild example. The counter increment takes a lock (an atomic fetch-and-add); parameter
reads and writes never do. Defaults [scalopt]: c = 4 (Hogwild!) or 2 (SGD), as in Nguyen et al.'s step
sizes, with E from their theorems given L and μ: SGD η_t = 2/(μ(t + E)), E = 4L/μ; Hogwild! η_t =
4/(μ(t + E)), E = max{2τ, 16·L·D/μ} (τ the delay bound, D ≥ the largest gradient support).

Seeds: ``init_seed`` builds the model (``workload.init_model(Generator().manual_seed(init_seed))``);
worker k draws its batches (and coordinates) from ``Generator().manual_seed(data_seed + k)``.
Special case: one worker with the full update is SGD with the same η_t, bitwise.

``workload`` is any object with ``init_model(generator)``, ``batches("train", generator)`` and
``loss(model, batch)`` (the scalopt Workload interface) and must be picklable: workers are fresh
processes (forkserver or spawn, see ``launch``) with torch pinned to ``threads`` threads. A failing
worker raises ``LaunchError`` in the caller naming the worker, with its traceback.

Reference: L. M. Nguyen, P. H. Nguyen, M. van Dijk, P. Richtárik, K. Scheinberg, M. Takáč, "SGD and
Hogwild! Convergence Without the Bounded Gradients Assumption", ICML 2018, arXiv 1802.03801;
F. Niu, B. Recht, C. Ré, S. J. Wright, "Hogwild!", NeurIPS 2011, arXiv 1106.5730.
"""

from __future__ import annotations

import copy
import pickle
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing  # noqa: F401 - shared-memory tensor reductions for the workers
from torch import nn

from scalopt.core.sharded import reject_dtensor
from scalopt.core.validate import check_choice, check_int, check_nonnegative, check_positive
from scalopt.distributed.launcher import process_context, supervise

UPDATES = ("full", "coordinate")


@dataclass(frozen=True)
class Diminishing:
    """η_t = c/(μ·(t + E)), t = 0, 1, … the global step."""

    c: float
    E: float
    mu: float = 1.0

    def __post_init__(self) -> None:
        check_positive("c", self.c)
        check_nonnegative("E", self.E)
        check_positive("mu", self.mu)
        if self.E == 0:
            raise ValueError("E must be in (0, inf): η_0 = c/(μ·E) would be infinite, got 0")

    def __call__(self, t: int) -> float:
        return self.c / (self.mu * (t + self.E))


@dataclass
class HogwildResult:
    model: nn.Module  # the final shared parameters, copied out of shared memory
    losses: list[list[float]]  # per worker, the training loss of each of its steps
    global_steps: int


def coordinate_update(grads: list[torch.Tensor], generator: torch.Generator) -> None:
    """g ← d·e_u·g_u in place: u uniform over the gradient's support D, d = |D| (unbiased)."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    support = flat.nonzero().reshape(-1)
    out = torch.zeros_like(flat)
    if support.numel():
        u = support[torch.randint(support.numel(), (1,), generator=generator)]
        out[u] = support.numel() * flat[u]
    offset = 0
    for g in grads:
        g.copy_(out[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _hogwild_worker(
    rank: int,
    workload: Any,
    model: nn.Module,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    steps: int,
    lr: Diminishing | None,
    data_seed: int,
    update: str,
    counter: Any,
    threads: int,
    results: Any,
) -> None:
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(data_seed + rank)
        batches = workload.batches("train", generator)
        optimizer = make_optimizer(model.parameters())
        losses = []
        for _ in range(steps):
            with counter.get_lock():
                t = counter.value
                counter.value += 1
            if lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr(t)
            optimizer.zero_grad()
            loss = workload.loss(model, next(batches))
            loss.backward()
            if update == "coordinate":
                coordinate_update([p.grad for p in model.parameters() if p.grad is not None], generator)
            optimizer.step()
            losses.append(float(loss.detach()))
        payload = ("ok", rank, pickle.dumps(losses))
    except BaseException as exc:  # noqa: BLE001 - reported to the caller
        payload = ("error", rank, f"{type(exc).__name__}: {exc}", traceback.format_exc(), False)
    results.put(payload)


def hogwild(
    workload: Any,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    workers: int,
    steps: int,
    *,
    lr: Diminishing | None = None,
    init_seed: int = 0,
    data_seed: int = 0,
    update: str = "full",
    threads: int = 1,
    grace_s: float = 10.0,
    start_method: str | None = None,
) -> HogwildResult:
    """Train ``workload``'s model with ``workers`` lock-free processes, ``steps`` steps each."""
    check_int("workers", workers, minimum=1)
    check_int("steps", steps, minimum=0)
    check_choice("update", update, UPDATES)
    check_int("threads", threads, minimum=1)
    if lr is not None and not isinstance(lr, Diminishing):
        raise ValueError(f"lr must be a Diminishing schedule or None, got {lr!r}")
    model = workload.init_model(torch.Generator().manual_seed(init_seed))
    reject_dtensor(
        "hogwild",
        list(model.parameters()),
        "its workers write whole parameters in shared memory without locks",
    )
    model.share_memory()
    ctx = process_context(start_method)
    counter = ctx.Value("q", 0)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_hogwild_worker,
            args=(
                k,
                workload,
                model,
                make_optimizer,
                steps,
                lr,
                data_seed,
                update,
                counter,
                threads,
                results,
            ),
            name=f"scalopt-hogwild{k}",
            daemon=True,
        )
        for k in range(workers)
    ]
    for p in procs:
        p.start()
    losses = supervise(procs, results, grace_s, what="worker")
    return HogwildResult(model=copy.deepcopy(model), losses=losses, global_steps=int(counter.value))
