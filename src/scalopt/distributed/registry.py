"""Distributed algorithms by name, for suites and ``scalopt train --workers N --algorithm NAME``.

Each entry builds the algorithm's optimizer on one rank from the model, the inner optimizer (a
registry name with its hyperparameters) and the algorithm's own arguments (e.g. ``period``).
``celgc`` is LocalSGD over ClippedSGD: it takes the clipped-SGD hyperparameters (lr, max_norm,
momentum) and ignores the inner optimizer's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from scalopt.core.comm import Comm
from scalopt.distributed.celgc import CELGC
from scalopt.distributed.data_parallel import DataParallelOptimizer
from scalopt.distributed.local_sgd import LocalSGD
from scalopt.distributed.overlap import OverlapLocalSGD
from scalopt.optim import registry as optimizers

Builder = Callable[..., torch.optim.Optimizer]


def _inner(model: torch.nn.Module, optimizer: str, hparams: dict[str, Any]) -> torch.optim.Optimizer:
    entry = optimizers.get(optimizer)
    return entry.build(model.named_parameters() if entry.scalopt else model.parameters(), **hparams)


def _data_parallel(model, optimizer, hparams, comm, **args):
    return DataParallelOptimizer(_inner(model, optimizer, hparams), comm=comm, module=model, **args)


def _local_sgd(model, optimizer, hparams, comm, **args):
    return LocalSGD(_inner(model, optimizer, hparams), comm=comm, module=model, **args)


def _overlap(model, optimizer, hparams, comm, **args):
    return OverlapLocalSGD(_inner(model, optimizer, hparams), comm=comm, module=model, **args)


def _celgc(model, optimizer, hparams, comm, **args):
    return CELGC(model.named_parameters(), comm=comm, module=model, **hparams, **args)


ALGORITHMS: dict[str, Builder] = {
    "data-parallel": _data_parallel,
    "local-sgd": _local_sgd,
    "celgc": _celgc,
    "overlap-local-sgd": _overlap,
}


def names() -> list[str]:
    return sorted(ALGORITHMS)


def build(
    name: str, model: torch.nn.Module, optimizer: str, hparams: dict[str, Any], comm: Comm, **args: Any
) -> torch.optim.Optimizer:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid names: {', '.join(names())}")
    return ALGORITHMS[name](model, optimizer, hparams, comm, **args)
