"""Hogwild! throughput on ctr: 2 lock-free processes vs 1, the same total number of updates.

    python benchmarks/hogwild_throughput.py                  # 6000 updates, sparse embeddings, SGD lr 0.5
    python benchmarks/hogwild_throughput.py --updates 12000 --reps 5

``scalopt.distributed.hogwild`` trains ctr's model (``sparse=True``: the embedding gradients are sparse,
so an update writes only the rows of the batch's ids, the regime Hogwild! is for) with plain SGD on
shared-memory parameters: 1 process doing U updates, then 2 processes doing U/2 each. Torch is
pinned to 1 thread per process.

Throughput is the steady state: each configuration also runs a short job of u updates, and
updates/s = (U − u) / (T(U) − T(u)), which cancels process start-up and the per-process generation of
ctr's data pool (both in T). Repetitions are interleaved (1, 2, 1, 2, ...) and the median is shown.
The ratio 2-process / 1-process throughput is the speedup (ideal 2.0). The final eval loss of each
configuration's U-update model (the last repetition) shows whether the lock-free updates cost
accuracy.

Control: "2 independent" runs two 1-process Hogwild! jobs of U/2 updates each at the same time (two
separate models, nothing shared). Its ratio is the parallelism the machine offers right now; Hogwild!
cannot beat it, and when it is far below 2 the machine is busy and the Hogwild! ratio says little.

Caveat: on a 2-core machine 2 workers already use every core; anything else running (other jobs, the
OS) takes time from them, and more than 2 workers would measure contention, not Hogwild!. The load
average is printed before and after. Nothing asserts on these numbers.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from scalopt import workloads
from scalopt.distributed import hogwild


def timed(workload, lr: float, workers: int, total: int, seed: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = hogwild(
        workload,
        functools.partial(torch.optim.SGD, lr=lr),
        workers=workers,
        steps=total // workers,
        init_seed=seed,
        data_seed=seed + 1000,
        threads=1,
    )
    return time.perf_counter() - t0, result


def timed_independent(workload, lr: float, total: int, seed: int) -> tuple[float, object]:
    """Two 1-process jobs of total/2 updates at once (the control): wall of both, the first's result."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(
                hogwild,
                workload,
                functools.partial(torch.optim.SGD, lr=lr),
                workers=1,
                steps=total // 2,
                init_seed=seed,
                data_seed=seed + 1000 + k,
                threads=1,
            )
            for k in range(2)
        ]
        results = [j.result() for j in jobs]
    return time.perf_counter() - t0, results[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=6000, help="U: total updates (all processes)")
    parser.add_argument("--short", type=int, default=400, help="u: total updates of the short job")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.updates % 2 or args.short % 2 or not 0 < args.short < args.updates:
        parser.error("--updates and --short must be even, with 0 < short < updates")

    torch.set_num_threads(1)
    workload = workloads.get("ctr", sparse=True)
    print(f"# Hogwild! throughput: ctr (sparse embeddings), SGD lr {args.lr}, {args.updates} updates in all")
    print(f"# torch {torch.__version__}, 1 thread per process, {os.cpu_count()} CPUs ({platform.machine()})")
    print(f"# load average before: {os.getloadavg()[0]:.2f}")
    runs = {
        "1 (Hogwild!)": lambda total: timed(workload, args.lr, 1, total, args.seed),
        "2 (Hogwild!)": lambda total: timed(workload, args.lr, 2, total, args.seed),
        "2 independent (control)": lambda total: timed_independent(workload, args.lr, total, args.seed),
    }
    walls: dict[str, list[float]] = {name: [] for name in runs}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    final = {}
    timed(workload, args.lr, 2, 2, args.seed)  # starts the forkserver (imports torch) outside the timings
    for _ in range(args.reps):
        for name, run in runs.items():
            short, _ = run(args.short)
            full, result = run(args.updates)
            walls[name].append(full)
            rates[name].append((args.updates - args.short) / (full - short))
            if "control" not in name:  # the control's two models had U/2 updates each
                final[name] = f"{workload.evaluate(result.model)['loss']:.4f}"
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    print()
    print("| processes | updates | wall s (with start-up) | updates/s (steady) | ratio to 1 | eval loss |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(rates["1 (Hogwild!)"])
    for name in runs:
        rate = statistics.median(rates[name])
        print(
            f"| {name} | {args.updates} | {statistics.median(walls[name]):.2f} | {rate:.0f} "
            f"| {rate / base:.2f}x | {final.get(name, '—')} |"
        )
    print()
    for name in list(runs)[1:]:
        per_rep = ", ".join(f"{b / a:.2f}" for a, b in zip(rates["1 (Hogwild!)"], rates[name]))
        print(f"ratio {name} / 1 per repetition: {per_rep}")
    print("aim: 2-process Hogwild! >= 1.6x the 1-process throughput")


if __name__ == "__main__":
    main()
