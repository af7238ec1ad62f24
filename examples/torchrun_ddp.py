"""torchrun with scalopt: DistributedDataParallel with a scalopt optimizer, Shampoo sharded over the
ranks through ``TorchComm``, and ``DataParallelOptimizer`` in place of DDP.

    torchrun --standalone --nproc_per_node 2 examples/torchrun_ddp.py
    torchrun --standalone --nproc_per_node 4 examples/torchrun_ddp.py --steps 50 --json

Every rank builds the same model (same seed) and draws its own batches. Four ways to train it:

    ddp-shampoo       DDP(model) + scalopt.Shampoo: DDP averages the gradients during backward,
                      every rank computes all of Shampoo's statistics and roots
    sharded-shampoo   model + scalopt.Shampoo(comm=TorchComm()): Shampoo averages the gradients
                      itself, each rank owns about 1/N of the blocks (statistics and roots) and one
                      all-gather shares the directions every step. No DDP: it would average twice
    ddp-adamw         DDP(model) + scalopt.AdamW
    dp-adamw          DataParallelOptimizer(scalopt.AdamW(...), comm=TorchComm(), module=model)

The pairs compute the same thing, so the script checks that they end bitwise equal (and that every
rank holds the same parameters), and prints one line per way from rank 0 (``--json``: one JSON line).
gloo on CPU; on GPUs use ``init_process_group("nccl")`` and move the model to ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import scalopt
from scalopt.distributed import DataParallelOptimizer, TorchComm

WAYS = ("ddp-shampoo", "sharded-shampoo", "ddp-adamw", "dp-adamw")
PAIRS = (("ddp-shampoo", "sharded-shampoo"), ("ddp-adamw", "dp-adamw"))
IN, HIDDEN, OUT, BATCH = 16, 48, 4, 32


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # the same initial model on every rank
    return nn.Sequential(
        nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT)
    )


def batches(rank: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of a fixed regression task y = sin(x·W)."""
    w = torch.randn(IN, OUT, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(1000 + rank)
    out = []
    for _ in range(steps):
        x = torch.randn(BATCH, IN, generator=g)
        out.append((x, torch.sin(x @ w)))
    return out


def train(way: str, comm: TorchComm, steps: int) -> tuple[nn.Module, list[float], dict[str, float]]:
    model = make_model()
    shampoo = dict(lr=3e-3, precondition_frequency=5, block_size=32)  # 48-wide layers: 2×2 blocks
    if way == "ddp-shampoo":
        net = DDP(model)
        opt: torch.optim.Optimizer = scalopt.Shampoo(net.parameters(), **shampoo)
    elif way == "sharded-shampoo":
        net = model
        opt = scalopt.Shampoo(model.parameters(), comm=comm, **shampoo)
    elif way == "ddp-adamw":
        net = DDP(model)
        opt = scalopt.AdamW(net.parameters(), lr=3e-3, weight_decay=0.01)
    elif way == "dp-adamw":
        net = model
        opt = DataParallelOptimizer(
            scalopt.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01), comm=comm, module=model
        )
    else:
        raise ValueError(f"way must be one of {WAYS}, got {way!r}")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses = []
    for x, y in batches(comm.rank, steps):
        loss = nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    metrics = opt.metrics() if hasattr(opt, "metrics") else {}
    if isinstance(opt, scalopt.Shampoo):
        opt.close()
    return model, losses, metrics


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON line (rank 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    comm = TorchComm.init("gloo")  # init_process_group from torchrun's environment
    rank, world = comm.rank, comm.world_size
    summary: dict[str, dict[str, object]] = {}
    finals = {}
    for way in WAYS:
        bytes_before = comm.bytes_sent
        model, losses, metrics = train(way, comm, args.steps)
        finals[way] = flat(model)
        copies = [torch.empty_like(finals[way]) for _ in range(world)]
        dist.all_gather(copies, finals[way])
        summary[way] = {
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "rank_spread": max((c - finals[way]).abs().max().item() for c in copies),
            "blocks_per_rank": [metrics.get(f"blocks_rank{r}") for r in range(world)]
            if "blocks_rank0" in metrics
            else None,
            "comm_bytes_rank0": int(comm.bytes_sent - bytes_before),
        }
    pairs = {f"{a} vs {b}": (finals[a] - finals[b]).abs().max().item() for a, b in PAIRS}
    if rank == 0:
        if args.json:
            print(json.dumps({"world_size": world, "steps": args.steps, "ways": summary, "pairs": pairs}))
        else:
            for way, s in summary.items():
                print(
                    f"{way:16s} loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}  "
                    f"ranks differ by {s['rank_spread']:.3g}  blocks/rank {s['blocks_per_rank']}  "
                    f"TorchComm bytes {s['comm_bytes_rank0']}"
                )
            for name, dev in pairs.items():
                print(f"{name}: max |Δparam| {dev:.3g}")
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
