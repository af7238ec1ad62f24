"""FSDP2 (``fully_shard``) with scalopt.Shampoo and a distributed checkpoint, under torchrun.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 examples/fsdp2_shampoo.py --json

Every rank builds the same model, shards it with ``fully_shard`` (each rank holds a dim-0 shard of
every parameter) and feeds its own batches; FSDP2 averages the gradients. Shampoo preconditions
blocks of each rank's local shard (statistics and roots stay on the rank, no parameter all-gather).
Halfway, the run saves a ``torch.distributed.checkpoint`` (``scalopt.distributed.dcp.save_dcp``),
rebuilds model and optimizer, loads it and checks that the resumed run ends bitwise where the
uninterrupted one did. Rank 0 prints the losses (``--json``: one JSON line).
gloo on CPU; on GPUs use ``init_process_group("nccl")`` and ``init_device_mesh("cuda", ...)``.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import scalopt
from scalopt.distributed.dcp import load_dcp, save_dcp

IN, HIDDEN, OUT, BATCH = 16, 32, 4, 32


def build(mesh):
    torch.manual_seed(0)  # the same initial model on every rank
    model = nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = scalopt.Shampoo(model.parameters(), lr=1e-2, block_size=8, precondition_frequency=4)
    return model, opt


def run(model, opt, t0, t1, rank):
    losses = []
    for t in range(t0, t1):
        gen = torch.Generator().manual_seed(1000 * t + rank)  # each rank its own batch
        x = torch.randn(BATCH, IN, generator=gen)
        y = x[:, :OUT].sin()
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    half = args.steps // 2

    model, opt = build(mesh)
    losses = run(model, opt, 0, half, rank)
    path = [tempfile.mkdtemp(prefix="scalopt-dcp-") if rank == 0 else None]
    dist.broadcast_object_list(path, src=0)
    save_dcp(path[0], model, opt)
    losses += run(model, opt, half, args.steps, rank)
    final = [p.full_tensor() for p in model.parameters()]

    model, opt = build(mesh)  # a fresh start, then the checkpoint
    load_dcp(path[0], model, opt)
    run(model, opt, half, args.steps, rank)
    resumed = [p.full_tensor() for p in model.parameters()]
    bitwise = all(torch.equal(a, b) for a, b in zip(final, resumed))
    result = {
        "world_size": world,
        "steps": args.steps,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "resumed_bitwise": bitwise,
        "blocks_rank0": opt.metrics()["blocks"],
    }
    if rank == 0:
        print(json.dumps(result) if args.json else result)
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
