"""The optimizer registry: every name the CLI, suites and conformance tests know.

An entry builds an optimizer from parameters and keyword overrides. ``example`` holds the
hyperparameters the conformance suite uses (small steps that move a model in the right direction);
``bench`` the defaults a benchmark starts from. ``torch-adamw`` is the baseline every ratio uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from scalopt import schedules
from scalopt.core.closure import closure_protocol
from scalopt.optim.clipped_sgd import ClippedSGD
from scalopt.optim.generalized_signsgd import GeneralizedSignSGD
from scalopt.optim.generic_adam import Adam, AdamW, GenericAdam
from scalopt.optim.hvp_rvr import HVPRVR
from scalopt.optim.normalized_sgd import NormalizedSGD
from scalopt.optim.oasis import OASIS
from scalopt.optim.shampoo import Shampoo


def _generic_adam(params: Iterable[Any], **kwargs: Any) -> GenericAdam:
    """GenericAdam whose schedules may be given as plain data (``scalopt.schedules.to_dict``)."""
    for key in ("lr_decay", "beta2_schedule"):
        if isinstance(kwargs.get(key), dict):
            kwargs[key] = schedules.from_dict(kwargs[key])
    return GenericAdam(params, **kwargs)


def _torch_adamw(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def _torch_sgd(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, foreach=True, **kwargs)


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    factory: Callable[..., torch.optim.Optimizer]
    family: str
    summary: str
    example: dict[str, Any] = field(default_factory=dict)
    scalopt: bool = True  # False for torch baselines (not part of the conformance suite)

    def build(self, params: Iterable[Any], **overrides: Any) -> torch.optim.Optimizer:
        return self.factory(params, **overrides)

    @property
    def closure(self) -> str | None:
        """How ``step`` is called: None (after ``loss.backward()``), or a protocol of
        ``scalopt.core.closure`` ("loss": ``step(closure)``; "loss+sample": also ``sample=``)."""
        return closure_protocol(self.factory)


OPTIMIZERS: dict[str, OptimizerEntry] = {
    e.name: e
    for e in [
        OptimizerEntry(
            "torch-adamw",
            _torch_adamw,
            "baseline",
            "torch.optim.AdamW(foreach=True)",
            {"lr": 1e-2},
            scalopt=False,
        ),
        OptimizerEntry(
            "torch-sgd",
            _torch_sgd,
            "baseline",
            "torch.optim.SGD(foreach=True) (set momentum=0.9 for heavy ball)",
            {"lr": 1e-2, "momentum": 0.9},
            scalopt=False,
        ),
        OptimizerEntry("adam", Adam, "adam", "Adam (Generic Adam preset)", {"lr": 1e-2}),
        OptimizerEntry("adamw", AdamW, "adam", "AdamW (Generic Adam preset, decoupled decay)", {"lr": 1e-2}),
        OptimizerEntry(
            "generic-adam", _generic_adam, "adam", "Generic Adam with step-size/β2 schedules", {"lr": 1e-2}
        ),
        OptimizerEntry(
            "clipped-sgd",
            ClippedSGD,
            "smoothness",
            "SGD on the globally clipped gradient",
            {"lr": 1e-2, "max_norm": 1.0, "momentum": 0.9},
        ),
        OptimizerEntry(
            "normalized-sgd", NormalizedSGD, "smoothness", "normalized SGD with momentum", {"lr": 1e-2}
        ),
        OptimizerEntry(
            "generalized-signsgd",
            GeneralizedSignSGD,
            "smoothness",
            "Generalized SignSGD (second moment of the momentum)",
            {"lr": 1e-2},
        ),
        OptimizerEntry(
            "shampoo",
            Shampoo,
            "second-order",
            "Shampoo: blocked Kronecker-factored preconditioning with Adam grafting",
            {"lr": 1e-2, "precondition_frequency": 2},
        ),
        OptimizerEntry(
            "oasis",
            OASIS,
            "second-order",
            "OASIS: Hutchinson diagonal Hessian + adaptive step from local smoothness",
            {"lr": 0.5, "alpha": 1e-2, "eta0": 1e-2},
        ),
        OptimizerEntry(
            "hvp-rvr",
            HVPRVR,
            "second-order",
            "HVP recursive variance reduction: g_t = g_{t-1} + HVP along the step, random resets",
            {"lr": 1e-2, "reset_prob": 0.2, "reset_batches": 2},
        ),
    ]
}


def names() -> list[str]:
    return sorted(OPTIMIZERS)


def get(name: str) -> OptimizerEntry:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(names())}") from None


def build(name: str, params: Iterable[Any], **overrides: Any) -> torch.optim.Optimizer:
    return get(name).build(params, **overrides)
