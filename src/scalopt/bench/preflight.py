"""``check_spec(spec)``: every mistake in a RunSpec as one ``ValueError``, before anything is written.

    workload     the registry name and its config overrides (``workloads.get`` validates them)
    optimizer    the registry name; every hyperparameter key is one the optimizer accepts (else the
                 valid keys and the closest one); every argument without a default is given
    values       the optimizer is built on a stand-in parameter, so its own checks (lr > 0, numbers,
                 ranges) run now; a distributed spec builds its algorithm likewise on one logical rank
                 (``SimComm(1)``), which checks the algorithm's arguments (``period`` ...)

Algorithms that need a real process group to be built (DDP comm hooks) get their inner optimizer
checked here and their own arguments on the ranks. Nothing is trained and no file is touched.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from scalopt.bench.spec import RunSpec
from scalopt.core.validate import did_you_mean
from scalopt.optim import registry

_MISSING = re.compile(r"missing \d+ required (?:keyword-only |positional )?arguments?: (.+)$")
_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} (required)" if v is registry.REQUIRED else f"{k}={v!r}" for k, v in params.items())


def check_keys(what: str, given: dict[str, Any], params: dict[str, Any] | None) -> None:
    """Every key of ``given`` is a parameter of ``params`` and every required one is given."""
    if params is None:  # the signature takes **kwargs: the build itself is the check
        return
    for key in given:
        if key not in params:
            raise ValueError(
                f"{what} has no hyperparameter {key!r};{did_you_mean(key, params)} valid: {_describe(params)}"
            )
    missing = [k for k, v in params.items() if v is registry.REQUIRED and k not in given]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)} (no default); valid: {_describe(params)}")


def _type_error(what: str, exc: TypeError, params: dict[str, Any] | None) -> ValueError:
    text = str(exc)
    if m := _MISSING.search(text):
        names = m.group(1).replace("'", "").replace(" and ", ", ")
        valid = "" if params is None else f"; valid: {_describe(params)}"
        return ValueError(f"{what} needs {names} (no default){valid}")
    if m := _UNEXPECTED.search(text):
        valid = "" if params is None else f";{did_you_mean(m.group(1), params)} valid: {_describe(params)}"
        return ValueError(f"{what} does not take {m.group(1)!r}{valid}")
    return ValueError(f"{what}: a value has the wrong type ({text})")


def _stand_in() -> torch.nn.Module:
    """A tiny model that every optimizer accepts (a matrix and a vector), initialised without the
    global RNG."""
    model = torch.nn.Linear(2, 2, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    return model


def check_optimizer(name: str, hparams: dict[str, Any]) -> None:
    """``name``'s hyperparameters: keys, required ones, and values (built on a stand-in model)."""
    entry = registry.get(name)
    what = f"optimizer {name!r}"
    params = registry.hyperparameters(name)
    check_keys(what, hparams, params)
    model = _stand_in()
    try:
        entry.build(model.named_parameters() if entry.scalopt else model.parameters(), **hparams)
    except TypeError as exc:
        raise _type_error(what, exc, params) from None
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _build_on_one_rank(comm: Any, spec: RunSpec) -> Exception | None:
    """The exception building the algorithm raised (returned, so it reaches the caller as it was)."""
    from scalopt.distributed import registry as algorithms

    try:
        algorithms.build(
            spec.algorithm, _stand_in(), spec.optimizer, dict(spec.hparams), comm, **spec.algorithm_args
        )
    except (TypeError, ValueError, RuntimeError) as exc:
        return exc
    return None


def check_algorithm(spec: RunSpec) -> None:
    """The spec's algorithm with its arguments and hyperparameters, built on one logical rank."""
    from scalopt.distributed import SimComm
    from scalopt.distributed import registry as algorithms

    name = spec.algorithm
    what = f"algorithm {name!r}"
    params = algorithms.arguments(name)
    if params is not None:
        for key in spec.algorithm_args:
            if key not in params:
                raise ValueError(
                    f"{what} has no argument {key!r};{did_you_mean(key, params)} valid: {_describe(params)}"
                )
    exc = SimComm(1).run(_build_on_one_rank, spec)[0]
    if exc is not None and "process group" in str(exc):
        # DDP needs a real process group: its inner optimizer is checked here, its arguments on the ranks
        check_optimizer(spec.optimizer, dict(spec.hparams))
        return
    if isinstance(exc, TypeError):
        raise _type_error(what, exc, params)
    if isinstance(exc, ValueError):
        raise ValueError(f"{what}: {exc}")
    if exc is not None:
        raise exc


def check_spec(spec: RunSpec) -> None:
    """Raise ``ValueError`` (one line: what is wrong and what is allowed) for any mistake in ``spec``."""
    from scalopt import workloads

    workloads.get(spec.workload, **spec.workload_overrides)
    if spec.distributed:
        check_algorithm(spec)
    else:
        check_optimizer(spec.optimizer, dict(spec.hparams))
