"""Rank functions shared by the distributed tests (module level: ``launch`` pickles them by name).

Every function takes ``comm`` first and runs unchanged over ``TorchComm`` (``launch``) and over
``SimComm(...).run``, so the two can be compared bitwise.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

import torch
from torch import nn

import scalopt
from scalopt.distributed import (
    CELGC,
    DataParallelOptimizer,
    LocalSGD,
    OverlapLocalSGD,
    load_checkpoint,
    save_checkpoint,
)

IN, HIDDEN, OUT, BATCH = 6, 8, 3, 5


def make_model(seed: int, *, batchnorm: bool = True, dropout: float = 0.1) -> nn.Module:
    """A tiny MLP; ``seed`` differs per rank in the tests, so construction must broadcast rank 0's."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Linear(IN, HIDDEN)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(HIDDEN))
        layers += [nn.Tanh(), nn.Dropout(dropout), nn.Linear(HIDDEN, OUT)]
        return nn.Sequential(*layers)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_optimizer(name: str, model: nn.Module, comm: Any, **kw: Any) -> torch.optim.Optimizer:
    params = list(model.parameters())
    det = kw.pop("deterministic", False)
    common = dict(comm=comm, module=model, deterministic=det, **kw)
    if name == "dp_sgd":
        return DataParallelOptimizer(torch.optim.SGD(params, lr=0.1), **common)
    if name == "dp_adam":
        return DataParallelOptimizer(scalopt.Adam(params, lr=1e-2), **common)
    if name == "dp_clipped":
        return DataParallelOptimizer(scalopt.ClippedSGD(params, lr=0.1, max_norm=0.5), **common)
    if name == "local_sgd":
        return LocalSGD(torch.optim.SGD(params, lr=0.1, momentum=0.9), period=3, **common)
    if name == "local_sgd_p1":
        return LocalSGD(torch.optim.SGD(params, lr=0.1), period=1, **common)
    if name == "local_sgd_plain":
        return LocalSGD(torch.optim.SGD(params, lr=0.1), period=4, **common)
    if name == "celgc":
        return CELGC(params, lr=0.1, max_norm=0.5, period=4, momentum=0.5, **common)
    if name == "celgc_inf":
        return CELGC(params, lr=0.1, max_norm=float("inf"), period=4, **common)
    if name == "overlap":
        return OverlapLocalSGD(torch.optim.SGD(params, lr=0.1, momentum=0.9), period=2, **common)
    if name == "overlap_gmf":
        opt = torch.optim.SGD(params, lr=0.1)
        return OverlapLocalSGD(opt, period=3, pullback=0.5, anchor_momentum=0.7, **common)
    raise ValueError(name)


ALGORITHMS = ("dp_sgd", "dp_adam", "dp_clipped", "local_sgd", "celgc", "overlap", "overlap_gmf")


def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(BATCH, IN, generator=gen)
    y = torch.randint(OUT, (BATCH,), generator=gen)
    return x, y


def flat_state(model: nn.Module) -> torch.Tensor:
    return torch.cat(
        [t.detach().reshape(-1).clone() for t in model.state_dict().values() if t.is_floating_point()]
    )


def train(
    comm: Any,
    name: str,
    steps: int,
    *,
    init_seed: int = 0,
    data_seed: int = 100,
    batchnorm: bool = True,
    dropout: float = 0.1,
    opt_kw: dict[str, Any] | None = None,
    nan_at: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train the tiny MLP for ``steps`` steps; dropout draws from torch's global RNG (per-rank seed)."""
    torch.manual_seed(data_seed + comm.rank)
    model = make_model(init_seed + comm.rank, batchnorm=batchnorm, dropout=dropout)
    opt = make_optimizer(name, model, comm, **(opt_kw or {}))
    gen = torch.Generator().manual_seed(data_seed + comm.rank)
    losses = []
    for t in range(steps):
        x, y = batch(gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if nan_at is not None and nan_at == (comm.rank, t):
            next(model.parameters()).grad[0, 0] = float("nan")
        opt.step()
        losses.append(float(loss.detach()))
    return {
        "state": flat_state(model),
        "losses": losses,
        "bytes_sent": comm.bytes_sent,
        "messages": comm.messages,
        "rounds": comm.rounds,
        "metrics": opt.metrics(),
    }


def train_guarded(comm: Any, name: str, steps: int, **kw: Any) -> Any:
    """``train``, or the FloatingPointError message when this rank raised one."""
    try:
        return train(comm, name, steps, **kw)
    except FloatingPointError as exc:
        return f"FloatingPointError: {exc}"


def train_all(comm: Any, names: tuple[str, ...], steps: int, deterministic: bool = False) -> dict[str, Any]:
    """Each algorithm's final state and counters (positional arguments: ``launch`` passes no kwargs)."""
    out = {}
    for name in names:
        res = train(comm, name, steps, opt_kw={"deterministic": deterministic})
        out[name] = (res["state"], res["bytes_sent"], res["messages"], res["rounds"], res["losses"])
    return out


def collectives(comm: Any) -> list[Any]:
    """Every collective once, with rank-dependent inputs."""
    r = comm.rank
    torch.manual_seed(7 + r)
    a = torch.rand(10)
    comm.all_reduce(a, "mean")
    b = torch.rand(9) * (r + 1)
    comm.all_reduce(b, "sum", deterministic=True)
    gathered = comm.all_gather(torch.full((2, 2), float(r)))
    c = torch.full((3,), float(r))
    comm.broadcast(c, src=comm.world_size - 1)
    rs = comm.reduce_scatter(torch.arange(2.0 * comm.world_size) * (r + 1), "mean")
    a2a = comm.all_to_all(torch.arange(2.0 * comm.world_size) + 100 * r)
    h = comm.all_reduce(torch.full((4,), r + 0.5), async_op=True)
    comm.barrier()
    return [a, b, gathered, c, rs, a2a, h.wait(), torch.rand(3), comm.bytes_sent, comm.messages]


def rng_draws(comm: Any, seed: int) -> torch.Tensor:
    torch.manual_seed(seed + comm.rank)
    drop = nn.functional.dropout(torch.ones(20), 0.5)
    comm.barrier()
    return torch.cat([drop, torch.rand(5)])


def die_at_step(comm: Any, rank: int, step: int) -> None:
    model = make_model(0)
    opt = make_optimizer("dp_sgd", model, comm)
    gen = torch.Generator().manual_seed(comm.rank)
    for t in range(10):
        if comm.rank == rank and t == step:
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = batch(gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def raise_on_rank(comm: Any, rank: int) -> None:
    comm.barrier()
    if comm.rank == rank:
        raise ValueError(f"boom on rank {rank}")
    comm.all_reduce(torch.ones(2))


def resume(comm: Any, name: str, steps: int, split: int, directory: str) -> dict[str, Any]:
    """Train ``split`` steps, checkpoint, rebuild everything from a different seed, load, finish.

    ``split < 0``: train all ``steps`` without a checkpoint (the uninterrupted reference)."""
    torch.manual_seed(100 + comm.rank)
    model = make_model(comm.rank)
    opt = make_optimizer(name, model, comm)
    gen = torch.Generator().manual_seed(100 + comm.rank)

    def run(t0: int, t1: int) -> None:
        for _ in range(t0, t1):
            x, y = batch(gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    if split < 0:
        run(0, steps)
        return {"state": flat_state(model), "counters": dict(opt.counters)}
    run(0, split)
    save_checkpoint(
        directory, comm=comm, optimizer=opt, model=model, step=split, extra={"gen": gen.get_state()}
    )
    torch.manual_seed(999)  # scramble: the checkpoint must restore it
    model = make_model(50 + comm.rank)
    opt = make_optimizer(name, model, comm)
    info = load_checkpoint(directory, comm=comm, optimizer=opt, model=model)
    gen = torch.Generator()
    gen.set_state(info["extra"]["gen"])
    run(info["step"], steps)
    return {"state": flat_state(model), "counters": dict(opt.counters)}


def sgd_factory(lr: float) -> Any:
    return functools.partial(torch.optim.SGD, lr=lr)


class LinearRegressionWorkload:
    """A picklable workload (Workload interface subset) for Hogwild!: least squares, d = 5."""

    def __init__(self, d: int = 5, batch_size: int = 4) -> None:
        self.d, self.batch_size = d, batch_size
        self.w_star = torch.linspace(-1.0, 1.0, d)

    def init_model(self, generator: torch.Generator) -> nn.Module:
        model = nn.Linear(self.d, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.randn(1, self.d, generator=generator))
        return model

    def batches(self, split: str, generator: torch.Generator) -> Any:
        while True:
            x = torch.randn(self.batch_size, self.d, generator=generator)
            y = x @ self.w_star + 0.01 * torch.randn(self.batch_size, generator=generator)
            yield x, y

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return ((model(x).squeeze(-1) - y) ** 2).mean()
