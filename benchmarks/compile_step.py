"""opt.step() time eager against ``torch.compile(opt.step)``, for the element-wise optimizers and Shampoo.

Every optimizer steps the same parameters (the default stdlib-lm model) with fixed gradients, twice:
the eager step, and the step compiled once (warm-up steps first, timed separately) and then run with
no recompiles. Eager and compiled instances alternate in interleaved rounds so machine noise hits
them alike; torch threads are pinned; nonfinite="raise" (the default) unless a row says "(skip)".
Prints the median step time of each, the compiled/eager ratio, the warm-up (compile) time, the
graphs compiled in warm-up and those compiled after it (must be 0), and the recompiles after warm-up
(must be 0). The backend is inductor when it compiles on this machine (it needs a C++ compiler on CPU), else
aot_eager (traced, not code-generated: it shows the overhead of the traced step, not a speed-up);
the backend used is printed.

    python benchmarks/compile_step.py [--rounds 20] [--steps 20] [--threads 1] [--backend auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from scalopt import workloads
from scalopt.optim import registry

CONFIGS = [
    ("torch-adamw", {"lr": 1e-3, "weight_decay": 0.0}),
    ("adamw", {"lr": 1e-3, "weight_decay": 0.0}),
    ("adamw", {"lr": 1e-3, "weight_decay": 0.0, "nonfinite": "skip"}),
    ("generic-adam", {"lr": 1e-3, "lr_decay": {"type": "InvPower", "s": 0.5}}),
    ("generalized-signsgd", {"lr": 1e-3}),
    ("clipped-sgd", {"lr": 0.1, "max_norm": 1.0, "momentum": 0.9}),
    ("clipped-sgd", {"lr": 0.1, "max_norm": 1.0, "momentum": 0.9, "nonfinite": "skip"}),
    ("normalized-sgd", {"lr": 0.05, "momentum": 0.9}),
    ("shampoo", {"lr": 1e-3, "precondition_frequency": 1000, "start_preconditioning_step": 1}),
]
WARMUP = 5


def _pick_backend(choice: str) -> str:
    if choice != "auto":
        return choice
    try:  # a tiny compile: inductor needs a working C++ toolchain on CPU
        torch.compile(lambda x: x * 2 + 1, backend="inductor")(torch.ones(3))
        return "inductor"
    except Exception:  # noqa: BLE001 - any failure means: fall back to the traced-only backend
        return "aot_eager"
    finally:
        torch._dynamo.reset()


def _setup(wl: workloads.Workload, name: str, hp: dict, gen_seed: int) -> tuple[torch.optim.Optimizer, list]:
    model = wl.init_model(torch.Generator().manual_seed(0))
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(gen_seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    return registry.build(name, params, **hp), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="auto", help="auto (inductor if it works, else aot_eager)")
    parser.add_argument("--workload", default="stdlib-lm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # every optimizer here compiles the same shared code (torch.optim's step wrapper, ChainOptimizer.step)
    # for its own instance: more entries than the default limit of 8 per code object, in one process
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 1024
    backend = _pick_backend(args.backend)
    wl = workloads.get(args.workload)
    runs = []
    for name, hp in CONFIGS:
        eager, _ = _setup(wl, name, hp, 0)
        eager.step()  # create the state
        compiled, _ = _setup(wl, name, hp, 0)
        cnt = CompileCounterWithBackend(backend)
        step = torch.compile(compiled.step, backend=cnt)
        t0 = time.perf_counter()
        for _ in range(WARMUP):
            step()
        warmup = time.perf_counter() - t0
        label = f"{name} (skip)" if hp.get("nonfinite") == "skip" else name
        runs.append((label, eager.step, step, cnt, cnt.frame_count, warmup))
    recompiles0 = sum(counters["recompiles"].values())
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, eager_step, compiled_step, *_ in runs:
            for kind, fn in (("eager", eager_step), ("compiled", compiled_step)):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                times.setdefault((name, kind), []).append((time.perf_counter() - t0) / args.steps)
    print(
        f"{args.workload}, torch threads {args.threads}, backend {backend}, {args.rounds} interleaved "
        f"rounds of {args.steps} steps after {WARMUP} warm-up steps; recompiles after warm-up: "
        f"{sum(counters['recompiles'].values()) - recompiles0}"
    )
    header = f"{'optimizer':22s} {'eager (ms)':>11s} {'compiled (ms)':>14s} {'ratio':>7s}"
    print(header + f" {'warm-up (s)':>12s} {'graphs':>7s} {'new graphs':>11s}")
    for name, _, _, cnt, frames, warmup in runs:
        e = statistics.median(times[(name, "eager")])
        c = statistics.median(times[(name, "compiled")])
        print(
            f"{name:22s} {e * 1e3:11.3f} {c * 1e3:14.3f} {c / e:6.2f}× {warmup:12.1f} {frames:7d} "
            f"{cnt.frame_count - frames:11d}"
        )


if __name__ == "__main__":
    main()
