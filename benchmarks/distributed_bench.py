"""Distributed algorithms on 2 real gloo processes: loss, communication per step, wall time.

    python benchmarks/distributed_bench.py                       # stdlib-lm, 160 steps, 2 workers
    python benchmarks/distributed_bench.py --workload mlp --steps 300

Every configuration runs twice: on the bare loopback network and with one stated network model,
NetworkModel(1e-3, 125e6) (1 ms latency per collective, 1 Gbit/s), applied by TorchComm to every
collective of every algorithm alike (never tuned per algorithm). Runs share one init_seed (same
initial model on every rank, broadcast at construction anyway) and use data_seed + rank for the
batches. Torch is pinned to 1 thread per process. Hyperparameters are shared across the SGD family
(lr 0.3, max_norm 1.0, no momentum: the CELGC paper's μ = 0) and Adam uses lr 3e-3.

Columns: train loss (mean over the last 10 steps and both ranks), eval loss of rank 0's model at
the end (steps are a multiple of every period, so local methods end right after a sync, except
Overlap, whose anchor is one period stale), rounds / messages / bytes sent per step per rank (ring
convention of scalopt.core.comm), wall time of the training loop (slowest rank), and the network
time the model charged per step (its sum over collectives; overlap and sleep granularity make the
measured difference in ms/step differ from it).
Local methods also send a 1-byte all_gather per step: the non-finite agreement across ranks.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

import torch
from torch import nn

import scalopt
from scalopt.distributed import (
    CELGC,
    DataParallelOptimizer,
    NetworkModel,
    OverlapLocalSGD,
    launch,
)

NETWORK = NetworkModel(1e-3, 125e6)
SGD_LR, MAX_NORM, ADAM_LR = 0.3, 1.0, 3e-3
CONFIGS = ("sync-clipped-sgd", "celgc-4", "celgc-16", "overlap-4", "data-parallel-adam")


class MLPWorkload:
    """Synthetic 2-layer MLP regression (teacher network + noise); a fast alternative to stdlib-lm."""

    d_in, d_hidden, batch_size = 64, 256, 32

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(12345)
        self.teacher = (torch.randn(self.d_in, 32, generator=g) / 8, torch.randn(32, 1, generator=g) / 4)

    def init_model(self, generator: torch.Generator) -> nn.Module:
        model = nn.Sequential(nn.Linear(self.d_in, self.d_hidden), nn.ReLU(), nn.Linear(self.d_hidden, 1))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        return model

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.teacher[0]) @ self.teacher[1]

    def batches(self, split: str, generator: torch.Generator) -> Any:
        while True:
            x = torch.randn(self.batch_size, self.d_in, generator=generator)
            yield x, self._target(x) + 0.05 * torch.randn(self.batch_size, 1, generator=generator)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        gen = torch.Generator().manual_seed(999)
        x = torch.randn(2048, self.d_in, generator=gen)
        with torch.no_grad():
            return {"loss": float(nn.functional.mse_loss(model(x), self._target(x)))}


def make_workload(name: str) -> Any:
    if name == "mlp":
        return MLPWorkload()
    from scalopt.workloads.stdlib_lm import StdlibLM

    return StdlibLM()


def make_optimizer(config: str, model: nn.Module, comm: Any) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if config == "sync-clipped-sgd":
        return DataParallelOptimizer(
            scalopt.ClippedSGD(params, lr=SGD_LR, max_norm=MAX_NORM), comm=comm, module=model
        )
    if config.startswith("celgc-"):
        period = int(config.split("-")[1])
        return CELGC(params, comm=comm, lr=SGD_LR, max_norm=MAX_NORM, period=period, module=model)
    if config == "overlap-4":
        inner = scalopt.ClippedSGD(params, lr=SGD_LR, max_norm=MAX_NORM)
        return OverlapLocalSGD(inner, comm=comm, period=4, pullback=0.6, module=model)
    if config == "data-parallel-adam":
        return DataParallelOptimizer(scalopt.Adam(params, lr=ADAM_LR), comm=comm, module=model)
    raise ValueError(config)


def run_rank(comm: Any, workload_name: str, config: str, steps: int, init_seed: int, data_seed: int) -> dict:
    workload = make_workload(workload_name)
    model = workload.init_model(torch.Generator().manual_seed(init_seed))
    torch.manual_seed(data_seed + comm.rank)  # dropout etc., if any
    batches = workload.batches("train", torch.Generator().manual_seed(data_seed + comm.rank))
    opt = make_optimizer(config, model, comm)
    start = (comm.bytes_sent, comm.messages, comm.rounds, comm.network_time_s)  # after the broadcast
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss = workload.loss(model, next(batches))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    if hasattr(opt, "wait"):
        opt.wait()  # an in-flight overlap average
    wall = time.perf_counter() - t0
    out = {
        "train_loss": sum(losses[-10:]) / len(losses[-10:]),
        "wall_s": wall,
        "bytes_per_step": (comm.bytes_sent - start[0]) / steps,
        "messages_per_step": (comm.messages - start[1]) / steps,
        "rounds_per_step": (comm.rounds - start[2]) / steps,
        "network_s": comm.network_time_s - start[3],
    }
    if comm.rank == 0:
        out["eval_loss"] = workload.evaluate(model)["loss"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("stdlib-lm", "mlp"), default="stdlib-lm")
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--init-seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=1000)
    args = parser.parse_args()

    cpu = platform.processor() or platform.machine()
    print(f"# scalopt distributed benchmark: workload {args.workload}, {args.workers} gloo processes")
    print(f"# on loopback, {args.steps} steps, torch {torch.__version__}, 1 thread per process, {cpu}")
    print(f"# network model when on: {NETWORK.describe()} per collective (TorchComm delay)")
    print(f"# SGD family: lr {SGD_LR}, max_norm {MAX_NORM}, momentum 0; Adam: lr {ADAM_LR}")
    header = (
        f"| {'algorithm':<20} | network   | train loss | eval loss | rounds/step | msgs/step "
        f"| bytes/step | wall s | ms/step | model net ms/step |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for config in args.configs:
        for delay in (None, NETWORK):
            res = launch(
                run_rank,
                args.workers,
                args.workload,
                config,
                args.steps,
                args.init_seed,
                args.data_seed,
                delay=delay,
                timeout_s=120,
            )
            train_loss = sum(r["train_loss"] for r in res) / len(res)
            wall = max(r["wall_s"] for r in res)
            net = "1ms,1Gb/s" if delay is not None else "loopback "
            print(
                f"| {config:<20} | {net} | {train_loss:10.4f} | {res[0]['eval_loss']:9.4f} "
                f"| {res[0]['rounds_per_step']:11.4f} | {res[0]['messages_per_step']:9.4f} "
                f"| {res[0]['bytes_per_step']:10.0f} | {wall:6.1f} | {1e3 * wall / args.steps:7.1f} "
                f"| {1e3 * res[0]['network_s'] / args.steps:17.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
