"""Time ``opt.step()`` of Shampoo against ``torch.optim.AdamW(foreach=True)`` on stdlib-lm's parameters.

    python benchmarks/shampoo_step.py [--reps 5] [--steps 100] [--ranks 2] [--threads 1]

The parameters are those of ``scalopt.workloads.get("stdlib-lm").init_model(...)`` at the workload's
default config (d_model 64, 2 layers, ~0.13M parameters in 28 tensors); the gradients are the real
gradients of one training batch, fixed, so only the optimizer is timed. Torch runs on ``--threads``
threads (1: as the bench runner pins it). The optimizers are timed in interleaved repetitions (each
repetition runs every single-process variant once, in a rotated order) and the medians reported:

    AdamW                 mean step time (the first 10 steps skipped)
    Shampoo between       steps after the first root step that are not root steps (f = 20)
    Shampoo root          the root steps (every 20th step)
    Shampoo amortized     mean over all steps of whole periods after the first root step
    ... async_roots       the same with the roots on a background thread (installed f steps later)
    ... sharded           Shampoo(comm=...) on ``--ranks`` real gloo processes (one thread each):
                          gradient all-reduce, each rank the roots of its own blocks, one all-gather;
                          the per-step time is the slowest rank's (0 ranks: skipped)

plus the forward+backward time of one training batch of the workload (median; the same for every
optimizer), the whole-training-step ratio (forward+backward+amortized step)/(forward+backward+AdamW
step), and the optimizer-state memory ratio (``scalopt.bench.loop.optimizer_state_bytes``: bytes of
the tensors in ``optimizer.state``; a sharded rank holds about 1/ranks of it). Numbers depend on the
machine and its load; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import scalopt
from scalopt.bench.loop import optimizer_state_bytes
from scalopt.optim.shampoo import Shampoo

FREQ = 20


def setup() -> tuple[Any, torch.nn.Module, Any, list[torch.Tensor]]:
    """The workload, its model (init seed 0), one training batch and that batch's gradients."""
    wl = scalopt.workloads.get("stdlib-lm")
    model = wl.init_model(torch.Generator().manual_seed(0))
    batch = next(wl.batches("train", torch.Generator().manual_seed(1)))
    wl.loss(model, batch).backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return wl, model, batch, grads


def fresh_params(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p.detach().clone().requires_grad_()) for n, p in model.named_parameters()]


def timed_steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor], n: int):
    times = []
    for _ in range(n):
        for p, g in zip(params, grads):
            p.grad = g
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    """between / root / amortized over whole periods after the first root step (t = 1-based step)."""
    measured = [(t, s) for t, s in enumerate(times, start=1) if t > FREQ]
    return {
        "between": statistics.median(s for t, s in measured if t % FREQ),
        "root": statistics.median(s for t, s in measured if t % FREQ == 0),
        "amortized": statistics.fmean(s for _, s in measured),
    }


def run_adamw(model: torch.nn.Module, grads: list[torch.Tensor], steps: int) -> tuple[dict[str, float], int]:
    params = [p for _, p in fresh_params(model)]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, foreach=True)
    times = timed_steps(opt, params, grads, steps)
    return {"step": statistics.fmean(times[10:])}, optimizer_state_bytes(opt)


def run_shampoo(
    model: torch.nn.Module, grads: list[torch.Tensor], steps: int, async_roots: bool
) -> tuple[dict[str, float], int]:
    named = fresh_params(model)
    opt = Shampoo(named, lr=1e-3, precondition_frequency=FREQ, async_roots=async_roots)
    times = timed_steps(opt, [p for _, p in named], grads, FREQ + steps)
    nbytes = optimizer_state_bytes(opt)
    opt.close()
    return summarize(times), nbytes


def _rank_main(comm: Any, steps: int, reps: int) -> tuple[list[list[float]], int]:
    """One rank of the sharded variant: ``reps`` fresh optimizers, each timed for FREQ + steps steps."""
    _, model, _, grads = setup()
    runs = []
    for _ in range(reps):
        named = fresh_params(model)
        opt = Shampoo(named, lr=1e-3, precondition_frequency=FREQ, comm=comm)
        runs.append(timed_steps(opt, [p for _, p in named], grads, FREQ + steps))
    return runs, optimizer_state_bytes(opt)


def run_sharded(ranks: int, steps: int, reps: int, threads: int) -> tuple[dict[str, float], int]:
    from scalopt.distributed import launch

    results = launch(_rank_main, ranks, steps, reps, threads=threads, timeout_s=300.0)
    per_rep = []
    for rep in range(reps):
        slowest = [max(step) for step in zip(*(runs[rep] for runs, _ in results))]
        per_rep.append(summarize(slowest))
    return {k: statistics.median(r[k] for r in per_rep) for k in per_rep[0]}, results[0][1]


def forward_backward_seconds(wl: Any, model: torch.nn.Module, batch: Any, reps: int) -> float:
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        wl.loss(model, batch).backward()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="measured Shampoo steps (whole periods)")
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the sharded variant (0: skip it)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.steps % FREQ:
        parser.error(f"--steps must be a multiple of the precondition frequency {FREQ}")
    torch.set_num_threads(args.threads)
    wl, model, batch, grads = setup()
    variants = ["adamw", "sync", "async"]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    mem: dict[str, int] = {}
    for rep in range(args.reps):
        for v in variants[rep % 3 :] + variants[: rep % 3]:
            if v == "adamw":
                res, mem[v] = run_adamw(model, grads, args.steps)
            else:
                res, mem[v] = run_shampoo(model, grads, args.steps, async_roots=v == "async")
            results[v].append(res)
    med = {v: {k: statistics.median(r[k] for r in results[v]) for k in results[v][0]} for v in variants}
    if args.ranks > 1:
        med["sharded"], mem["sharded"] = run_sharded(args.ranks, args.steps, args.reps, args.threads)
    fb = forward_backward_seconds(wl, model, batch, 2 * args.reps)
    adamw = med["adamw"]["step"]
    n = sum(p.numel() for p in model.parameters())
    print(
        f"stdlib-lm default config: {n} parameters in {len(grads)} tensors; torch threads {args.threads}; "
        f"{args.reps} interleaved reps (medians); precondition_frequency {FREQ}"
    )
    print(f"AdamW(foreach=True) step: {adamw * 1e3:.3f} ms; forward+backward of one batch: {fb * 1e3:.1f} ms")
    labels = {
        "sync": "Shampoo",
        "async": "Shampoo async_roots",
        "sharded": f"Shampoo {args.ranks}-rank sharded",
    }
    for v, label in labels.items():
        if v not in med:
            continue
        m = med[v]
        whole = (fb + m["amortized"]) / (fb + adamw)
        print(
            f"{label:26s} between {m['between'] * 1e3:6.2f} ms ({m['between'] / adamw:4.1f}x)  "
            f"root {m['root'] * 1e3:7.2f} ms ({m['root'] / adamw:5.1f}x)  "
            f"amortized {m['amortized'] * 1e3:6.2f} ms ({m['amortized'] / adamw:4.1f}x)  "
            f"whole training step {whole:.3f}x  "
            f"state memory {mem[v] / mem['adamw']:.2f}x ({mem[v] / 2**20:.2f} MiB"
            + (" per rank)" if v == "sharded" else ")")
        )
    print(f"AdamW state memory: {mem['adamw'] / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
