"""opt.step() time of scalopt's element-wise optimizers against torch.optim.AdamW(foreach=True).

All optimizers step the same parameters (the default stdlib-lm model) with the same gradients, in
interleaved rounds so machine noise hits them alike; torch threads are pinned. Prints the median
step time of each and its ratio to AdamW's measured in the same process.

    python benchmarks/step_time.py [--rounds 30] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scalopt import workloads
from scalopt.optim import registry

CONFIGS = [
    ("torch-adamw", {"lr": 1e-3, "weight_decay": 0.0}),
    ("adamw", {"lr": 1e-3, "weight_decay": 0.0}),
    ("adam", {"lr": 1e-3}),
    (
        "generic-adam",
        {
            "lr": 1e-3,
            "lr_decay": {"type": "InvPower", "s": 0.5},
            "beta2_schedule": {"type": "OneMinusInvPower", "theta": 0.1, "r": 1.0},
        },
    ),
    ("generalized-signsgd", {"lr": 1e-3}),
    ("clipped-sgd", {"lr": 0.1, "max_norm": 1.0, "momentum": 0.9}),
    ("normalized-sgd", {"lr": 0.05, "momentum": 0.9}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workload", default="stdlib-lm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wl = workloads.get(args.workload)
    gen = torch.Generator().manual_seed(0)
    setups = []
    for name, hp in CONFIGS:
        model = wl.init_model(torch.Generator().manual_seed(0))
        params = list(model.parameters())
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-2
        opt = registry.build(name, params, **hp)
        opt.step()  # create the state
        setups.append((name, opt))
    times: dict[str, list[float]] = {name: [] for name, _ in setups}
    for _ in range(args.rounds):
        for name, opt in setups:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    n_params = sum(p.numel() for p in setups[0][1].param_groups[0]["params"])
    base = statistics.median(times["torch-adamw"])
    print(
        f"{args.workload}: {n_params} parameters in {len(setups[0][1].param_groups[0]['params'])} tensors, "
        f"torch threads {args.threads}, {args.rounds} interleaved rounds of {args.steps} steps"
    )
    print(f"{'optimizer':22s} {'median step (ms)':>17s} {'ratio to torch AdamW':>21s}")
    for name, _ in setups:
        med = statistics.median(times[name])
        print(f"{name:22s} {med * 1e3:17.3f} {med / base:20.2f}×")


if __name__ == "__main__":
    main()
