"""Rank functions of the FSDP2 tests (module level: ``launch`` pickles them by name).

Every rank feeds the same batch, so FSDP2's averaged (reduce-scattered) gradient is the gradient of
the unsharded model and the sharded run can be compared with one process stepping the whole model.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import scalopt
from scalopt.optim import registry

#: element-wise optimizers and the hyperparameters of the equality test (clipping and normalization
#: active, so their global norms are exercised)
ELEMENTWISE = {
    "adam": {"lr": 1e-2},
    "adamw": {"lr": 1e-2, "weight_decay": 0.1},
    "generic-adam": {"lr": 1e-2, "beta2_schedule": None},
    "clipped-sgd": {"lr": 0.1, "max_norm": 0.05, "momentum": 0.9},
    "normalized-sgd": {"lr": 1e-2},
    "generalized-signsgd": {"lr": 1e-2},
    "trsgd": {"lr": 0.1, "period": 2},
    "tradam": {"lr": 1e-2, "period": 2},
}
SHAMPOO = dict(lr=1e-2, block_size=4, precondition_frequency=2, root_dtype=torch.float64, momentum=0.5)
SOAP = dict(lr=1e-2, block_size=4, precondition_frequency=2, root_dtype=torch.float64)


def mlp(seed: int, sizes: tuple[int, ...]) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers += [nn.Linear(a, b, dtype=torch.float64)] + ([nn.Tanh()] if i < len(sizes) - 2 else [])
        return nn.Sequential(*layers)


def shard(model: nn.Module, world_size: int) -> nn.Module:
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def data(step: int, sizes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(4, sizes[0], generator=gen, dtype=torch.float64)
    return x, torch.randn(4, sizes[-1], generator=gen, dtype=torch.float64)


def train(model: nn.Module, opt: torch.optim.Optimizer, sizes: tuple[int, ...], t0: int, t1: int) -> None:
    protocol = getattr(opt, "closure_protocol", None)
    for t in range(t0, t1):
        x, y = data(t, sizes)
        if protocol is not None:  # OASIS, HVP-RVR: the optimizer differentiates the closure's loss

            def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                return ((model(x) - y) ** 2).mean()

            extra = data(t + 100, sizes)
            sample = {"sample": lambda extra=extra: closure(*extra)} if protocol != "loss" else {}
            opt.step(closure, **sample)
            continue
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def full(model: nn.Module) -> list[torch.Tensor]:
    """The full parameters (all-gathered from the shards)."""
    return [p.full_tensor() if hasattr(p, "full_tensor") else p.detach().clone() for p in model.parameters()]


def sharded_vs_single(comm: Any, name: str, kw: dict[str, Any], sizes: tuple[int, ...], steps: int) -> Any:
    """(sharded result, single-process result) of ``steps`` steps of optimizer ``name``."""
    out = []
    for sharded in (True, False):
        model = mlp(0, sizes)
        if sharded:
            shard(model, comm.world_size)
        opt = registry.build(name, model.parameters(), **kw)
        train(model, opt, sizes, 0, steps)
        out.append(full(model))
    return out


def nan_on_one_rank(comm: Any) -> dict[str, Any]:
    """A NaN in rank 1's gradient shard only: every rank skips (``nonfinite="skip"``) or raises."""
    sizes = (4, 8, 2)
    model = shard(mlp(0, sizes), comm.world_size)
    out: dict[str, Any] = {}
    for policy in ("skip", "raise"):
        opt = scalopt.AdamW(model.parameters(), lr=1e-2, nonfinite=policy)
        before = full(model)
        x, y = data(0, sizes)
        ((model(x) - y) ** 2).mean().backward()
        if comm.rank == 1:
            next(model.parameters()).grad._local_tensor[0, 0] = float("nan")
        try:
            opt.step()
            out[policy] = opt.metrics()["skipped_steps"]
        except FloatingPointError as exc:
            out[policy] = str(exc)
        opt.zero_grad()
        out[policy + "_unchanged"] = all(torch.equal(a, b) for a, b in zip(before, full(model)))
    return out


def rejections(comm: Any) -> dict[str, str]:
    """The errors of the wrappers and closure optimizers given FSDP2-sharded parameters."""
    from scalopt.distributed import (
        CELGC,
        DataParallelOptimizer,
        EfficientAdam,
        LocalSGD,
        OneBitAdam,
        OverlapLocalSGD,
    )
    from scalopt.distributed.hogwild import hogwild

    model = shard(mlp(0, (4, 8, 2)), comm.world_size)
    params = list(model.parameters())
    makers = {
        "DataParallelOptimizer": lambda: DataParallelOptimizer(torch.optim.SGD(params, lr=0.1), comm=comm),
        "LocalSGD": lambda: LocalSGD(torch.optim.SGD(params, lr=0.1), period=2, comm=comm),
        "OverlapLocalSGD": lambda: OverlapLocalSGD(torch.optim.SGD(params, lr=0.1), period=2, comm=comm),
        "CELGC": lambda: CELGC(params, lr=0.1, max_norm=1.0, period=2, comm=comm),
        "EfficientAdam": lambda: EfficientAdam(params, comm=comm),
        "OneBitAdam": lambda: OneBitAdam(params, comm=comm),
        "MLBFGS": lambda: scalopt.MLBFGS(params),
        "OASIS": lambda: scalopt.OASIS(params),
        "HVPRVR": lambda: scalopt.HVPRVR(params),
        "hogwild": lambda: hogwild(ShardedWorkload(comm.world_size), partial(torch.optim.SGD, lr=0.1), 2, 1),
    }

    def shampoo_comm() -> None:
        from scalopt.distributed import TorchComm

        opt = scalopt.Shampoo(params, comm=TorchComm())
        x, y = data(0, (4, 8, 2))
        ((model(x) - y) ** 2).mean().backward()
        opt.step()

    makers["Shampoo(comm=)"] = shampoo_comm
    out = {}
    for name, make in makers.items():
        try:
            make()
            out[name] = "accepted"
        except ValueError as exc:
            out[name] = str(exc)
    return out


class ShardedWorkload:
    """A workload whose model comes sharded (Hogwild! must refuse it before starting workers)."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def init_model(self, generator: torch.Generator) -> nn.Module:
        return shard(mlp(0, (4, 8, 2)), self.world_size)


def dcp_load_unsharded(name: str, kw: dict[str, Any], sizes: tuple[int, ...], path: str) -> Any:
    """Load a DCP checkpoint written at step 3 into one process's unsharded model, finish 2 steps;
    the final parameters, or the ``ValueError`` message."""
    from scalopt.distributed.dcp import load_dcp

    model = mlp(0, sizes)
    opt = registry.build(name, model.parameters(), **kw)
    try:
        load_dcp(path, model, opt)
    except ValueError as exc:
        return str(exc)
    train(model, opt, sizes, 3, 5)
    return full(model)


#: hyperparameters of the DCP tests: every optimizer stepped after backward() (mL-BFGS forms a
#: curvature pair every 2 steps, Shampoo computes roots from step 2)
DCP_OPTIMIZERS = {
    **ELEMENTWISE,
    "shampoo": SHAMPOO,
    "soap": SOAP,
    "mlbfgs": {"lr": 0.1, "update_freq": 1, "history": 2},
}


def dcp_all_modes(comm: Any, path: str) -> dict[str, Any]:
    modes = ("ddp", "replicated", "fsdp2", "shampoo-comm", "efficient-adam")
    return {mode: dcp_every(comm, mode, path) for mode in modes}


def dcp_every(comm: Any, mode: str, path: str) -> dict[str, Any]:
    """For each optimizer: (uninterrupted, resumed-from-DCP) parameters after 5 steps, checkpoint at 3.
    ``mode``: "ddp" (DistributedDataParallel model), "fsdp2", "shampoo-comm" (Shampoo sharded over
    ranks by comm=), "efficient-adam"."""
    import os

    from torch.nn.parallel import DistributedDataParallel as DDP

    from scalopt.distributed import EfficientAdam, TorchComm
    from scalopt.distributed.dcp import load_dcp, save_dcp

    sizes = (4, 8, 8)
    if mode == "ddp":
        names = dict(DCP_OPTIMIZERS)
    elif mode == "replicated":  # closure optimizers: a plain model on every rank (same data)
        names = {
            "oasis": {"lr": 0.5, "alpha": 1e-2, "eta0": 1e-2},
            "hvp-rvr": {"lr": 1e-2, "reset_prob": 0.5},
        }
    elif mode == "fsdp2":
        names = {k: v for k, v in DCP_OPTIMIZERS.items() if k != "mlbfgs"}
    else:
        names = {mode: {}}

    def build(name: str, kw: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = mlp(0, sizes)
        if mode == "fsdp2":
            return shard(model, comm.world_size), registry.build(name, model.parameters(), **kw)
        if mode == "shampoo-comm":
            return model, scalopt.Shampoo(model.parameters(), comm=TorchComm(), **SHAMPOO)
        if mode == "replicated":
            return model, registry.build(name, model.parameters(), **kw)
        if mode == "efficient-adam":
            return model, EfficientAdam(model.parameters(), comm=TorchComm(), lr=1e-2)
        return DDP(model), registry.build(name, model.parameters(), **kw)

    out = {}
    for name, kw in names.items():
        where = os.path.join(path, f"{mode}-{name}")
        torch.manual_seed(comm.rank)
        model, opt = build(name, kw)
        train(model, opt, sizes, 0, 3)
        save_dcp(where, model, opt)
        train(model, opt, sizes, 3, 5)
        ref = full(model)
        model, opt = build(name, kw)
        try:
            load_dcp(where, model, opt)
        except Exception as exc:  # reported per optimizer by the test
            out[name] = f"{type(exc).__name__}: {exc}"
            continue
        train(model, opt, sizes, 3, 5)
        out[name] = (ref, full(model), opt.metrics()["steps"])
    return out
