"""Distributed algorithms by name, for suites and ``scalopt train --workers N --algorithm NAME``.

Each entry builds the algorithm's optimizer on one rank from the model, the inner optimizer (a
registry name with its hyperparameters) and the algorithm's own arguments (e.g. ``period``).

Five algorithms are optimizers themselves (``OWN_OPTIMIZER``): they take the hyperparameters of one
fixed optimizer and no inner optimizer. Their optimizer name is left out (None) or is that optimizer's
name; any other name raises ``ValueError`` instead of being ignored. ``celgc`` is LocalSGD over
ClippedSGD: it takes the clipped-SGD hyperparameters (lr, max_norm, momentum); ``efficient-adam`` takes
GenericAdam's hyperparameters (schedules as ``scalopt.schedules.to_dict`` data) and, as algorithm
arguments, ``compressor`` / ``server_compressor`` (a ``scalopt.compress.build`` spec: ``"scaled-sign"``
or ``{"name": "top-k", "ratio": 0.01}``; stochastic ones are seeded per rank) and ``warmup_steps``.
``onebit-adam`` takes Adam's hyperparameters (lr, betas, eps, weight_decay) and, as algorithm
arguments, ``freeze_step``, ``bias_correction``, ``compressor`` / ``server_compressor`` (specs as
above; None: the RMS-scaled sign, ``{"name": "scaled-sign", "scale": "rms"}``) and ``momentum_mask``.

``ddp-compression`` and ``ddp-powersgd`` wrap the model in ``DistributedDataParallel`` with a comm
hook (scalopt's ``compression_hook`` with a ``compressor`` spec and ``warmup_iters``; torch's
PowerSGD with ``PowerSGDState`` arguments such as ``matrix_approximation_rank`` and
``start_powerSGD_iter``), both counted on the rank's Comm. They return ``(optimizer, ddp_model)``:
the plain inner optimizer and the module the loss must run through. The compression hook's state
travels in the optimizer's ``state_dict`` (under ``"ddp_hook"``); PowerSGD's does not.

``shampoo-sharded`` is ``Shampoo(comm=comm)`` itself, with Shampoo's hyperparameters: it averages the
gradients over ranks, shards the blocks (statistics, roots) by LPT and all-gathers the directions; no
data-parallel wrapper, which would average twice. ``mlbfgs-sharded`` is ``MLBFGS(comm=comm)`` the same
way: averaged gradients, block histories owned by ranks (LPT), one all-gather of the directions.

``arguments(name)`` lists the keywords an algorithm accepts (``--algorithm-set``) with their
defaults, read from the signature of what its builder passes them to (``ARGUMENT_SOURCES``; by
default the builder's own keywords), so help and checks follow every new entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from scalopt import compress, schedules
from scalopt.core.comm import Comm
from scalopt.core.validate import check_name
from scalopt.distributed.celgc import CELGC
from scalopt.distributed.compression_hook import CompressionHook, compression_hook, counted_powersgd_hook
from scalopt.distributed.data_parallel import DataParallelOptimizer
from scalopt.distributed.efficient_adam import EfficientAdam
from scalopt.distributed.local_sgd import LocalSGD
from scalopt.distributed.onebit_adam import OneBitAdam
from scalopt.distributed.overlap import OverlapLocalSGD
from scalopt.optim import registry as optimizers
from scalopt.optim.mlbfgs import MLBFGS
from scalopt.optim.shampoo import Shampoo

Built = torch.optim.Optimizer | tuple[torch.optim.Optimizer, torch.nn.Module]
Builder = Callable[..., Built]


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


def _shampoo_sharded(model, optimizer, hparams, comm, **args):
    return Shampoo(model.named_parameters(), comm=comm, **hparams, **args)


def _mlbfgs_sharded(model, optimizer, hparams, comm, **args):
    return MLBFGS(model.named_parameters(), comm=comm, **hparams, **args)


def _efficient_adam(
    model, optimizer, hparams, comm, *, compressor="scaled-sign", server_compressor=None, **args
):
    hparams = dict(hparams)
    for key in ("lr_decay", "beta2_schedule"):
        if isinstance(hparams.get(key), dict):
            hparams[key] = schedules.from_dict(hparams[key])
    n, r = comm.world_size, comm.rank
    server = None if server_compressor is None else compress.build(server_compressor, seed=n + r)
    return EfficientAdam(
        model.named_parameters(),
        comm=comm,
        module=model,
        compressor=compress.build(compressor, seed=r),
        server_compressor=server,
        **hparams,
        **args,
    )


def _onebit_adam(model, optimizer, hparams, comm, *, compressor=None, server_compressor=None, **args):
    n, r = comm.world_size, comm.rank
    server = None if server_compressor is None else compress.build(server_compressor, seed=n + r)
    return OneBitAdam(
        model.named_parameters(),
        comm=comm,
        module=model,
        compressor=None if compressor is None else compress.build(compressor, seed=r),
        server_compressor=server,
        **hparams,
        **args,
    )


def _ddp(model: torch.nn.Module, state: Any, hook: Any) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(state, hook)
    return ddp


def _carry_hook_state(opt: torch.optim.Optimizer, hook: CompressionHook) -> None:
    """The hook's residuals are saved and loaded with the optimizer (under ``"ddp_hook"``)."""

    def save(_opt: Any, sd: dict[str, Any]) -> dict[str, Any]:
        return {**sd, "ddp_hook": hook.state_dict()}

    def load(_opt: Any, sd: dict[str, Any]) -> dict[str, Any]:
        sd = dict(sd)
        if "ddp_hook" in sd:
            hook.load_state_dict(sd.pop("ddp_hook"))
        return sd

    opt.register_state_dict_post_hook(save)
    opt.register_load_state_dict_pre_hook(load)


def _ddp_compression(model, optimizer, hparams, comm, *, compressor="scaled-sign", warmup_iters=0):
    hook = compression_hook(compress.build(compressor, seed=comm.rank), comm=comm, warmup_iters=warmup_iters)
    ddp = _ddp(model, None, hook)
    opt = _inner(model, optimizer, hparams)
    _carry_hook_state(opt, hook)
    return opt, ddp


def _ddp_powersgd(model, optimizer, hparams, comm, **args):
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import PowerSGDState

    ddp = _ddp(model, PowerSGDState(process_group=None, **args), counted_powersgd_hook(comm))
    return _inner(model, optimizer, hparams), ddp


ALGORITHMS: dict[str, Builder] = {
    "data-parallel": _data_parallel,
    "local-sgd": _local_sgd,
    "celgc": _celgc,
    "overlap-local-sgd": _overlap,
    "efficient-adam": _efficient_adam,
    "onebit-adam": _onebit_adam,
    "ddp-compression": _ddp_compression,
    "ddp-powersgd": _ddp_powersgd,
    "shampoo-sharded": _shampoo_sharded,
    "mlbfgs-sharded": _mlbfgs_sharded,
}


#: the algorithms that are optimizers themselves -> the optimizer whose hyperparameters they take
OWN_OPTIMIZER: dict[str, str] = {
    "celgc": "clipped-sgd",
    "efficient-adam": "generic-adam",
    "onebit-adam": "adam",
    "shampoo-sharded": "shampoo",
    "mlbfgs-sharded": "mlbfgs",
}

#: what a builder passes its ``**args`` to (the signature ``arguments`` reads), where it has them
ARGUMENT_SOURCES: dict[str, Callable[..., Any]] = {
    "data-parallel": DataParallelOptimizer,
    "local-sgd": LocalSGD,
    "celgc": CELGC,
    "overlap-local-sgd": OverlapLocalSGD,
    "efficient-adam": EfficientAdam,
    "shampoo-sharded": Shampoo,
    "mlbfgs-sharded": MLBFGS,
}

#: keywords every builder fills in itself (never an algorithm argument)
_BUILDER_FILLS = ("model", "optimizer", "hparams", "comm", "params", "module")


def names() -> list[str]:
    return sorted(ALGORITHMS)


def arguments(name: str) -> dict[str, Any] | None:
    """``{argument: default or REQUIRED}`` that ``--algorithm-set`` may give algorithm ``name``
    (``None``: it passes them on to something not introspectable)."""
    builder = ALGORITHMS[check_name("algorithm", name, names())]
    own = optimizers.keyword_arguments(builder, skip=_BUILDER_FILLS)
    source = ARGUMENT_SOURCES.get(name)
    if source is None:
        return own
    params = optimizers.keyword_arguments(source, skip=_BUILDER_FILLS)
    if params is None:
        return None
    builder_own = {
        p.name: (optimizers.REQUIRED if p.default is p.empty else p.default)
        for p in inspect.signature(builder).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in _BUILDER_FILLS
    }
    return {**params, **builder_own}


def resolve_optimizer(name: str, optimizer: str | None) -> str:
    """The optimizer a run of algorithm ``name`` uses: ``optimizer`` for a wrapper (required), the
    algorithm's own for one that is an optimizer itself (``optimizer`` must be None or that name)."""
    check_name("algorithm", name, names())
    own = OWN_OPTIMIZER.get(name)
    if own is None:
        if optimizer is None:
            raise ValueError(
                f"algorithm {name!r} wraps an inner optimizer: give one (optimizer=, --optimizer on the "
                f"command line), a scalopt.optim registry name such as 'adam'"
            )
        return optimizer
    if optimizer is not None and optimizer != own:
        raise ValueError(
            f"algorithm {name!r} is an optimizer itself ({own} with its own communication) and takes "
            f"no inner optimizer, got optimizer={optimizer!r}; leave the optimizer out and give "
            f"{own}'s hyperparameters"
        )
    return own


def build(
    name: str, model: torch.nn.Module, optimizer: str | None, hparams: dict[str, Any], comm: Comm, **args: Any
) -> Built:
    """The optimizer (or (optimizer, forward module)) of algorithm ``name`` on this rank."""
    optimizer = resolve_optimizer(name, optimizer)
    return ALGORITHMS[name](model, optimizer, hparams, comm, **args)
