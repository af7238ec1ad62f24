"""The optimizer registry: every name the CLI, suites and conformance tests know.

An entry builds an optimizer from parameters and keyword overrides. ``example`` holds the
hyperparameters the conformance suite uses (small steps that move a model in the right direction);
``bench`` the defaults a benchmark starts from. ``torch-adamw`` is the baseline every ratio uses.

``hyperparameters(name)`` lists what an entry accepts, read from the signature of the class it
builds (``signature``, default: the factory itself), so the CLI's help, ``scalopt list --optimizer
NAME`` and the checks of ``--set`` keys follow every new entry without a second list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from scalopt import schedules
from scalopt.core.closure import closure_protocol
from scalopt.core.validate import check_name
from scalopt.optim.clipped_sgd import ClippedSGD
from scalopt.optim.generalized_signsgd import GeneralizedSignSGD
from scalopt.optim.generic_adam import Adam, AdamW, GenericAdam
from scalopt.optim.hvp_rvr import HVPRVR
from scalopt.optim.mlbfgs import MLBFGS
from scalopt.optim.normalized_sgd import NormalizedSGD
from scalopt.optim.oasis import OASIS
from scalopt.optim.shampoo import Shampoo
from scalopt.optim.trsgd import TRSGD, TRAdam


def _generic_adam(params: Iterable[Any], **kwargs: Any) -> GenericAdam:
    """GenericAdam whose schedules may be given as plain data (``scalopt.schedules.to_dict``)."""
    for key in ("lr_decay", "beta2_schedule"):
        if isinstance(kwargs.get(key), dict):
            kwargs[key] = schedules.from_dict(kwargs[key])
    return GenericAdam(params, **kwargs)


SOAP_DEFAULTS: dict[str, Any] = dict(
    lr=3e-3, betas=(0.95, 0.95), eps=1e-8, weight_decay=0.01, precondition_frequency=10, grafting=None
)


def _soap(params: Iterable[Any], **kwargs: Any) -> Shampoo:
    """SOAP: Shampoo with eigenvalue_correction=True at the paper's language-model defaults."""
    if kwargs.pop("eigenvalue_correction", True) is not True:
        raise ValueError("soap is Shampoo with eigenvalue_correction=True; use 'shampoo' for the other")
    return Shampoo(params, **{**SOAP_DEFAULTS, **kwargs}, eigenvalue_correction=True)


_soap.__signature__ = inspect.signature(Shampoo).replace(  # type: ignore[attr-defined]
    parameters=[
        p.replace(default=SOAP_DEFAULTS.get(p.name, p.default))
        for p in inspect.signature(Shampoo).parameters.values()
        if p.name != "self"
    ]
)


def _torch_adamw(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    # fused=True (torch's fused kernel) excludes foreach
    return torch.optim.AdamW(params, foreach=None if kwargs.get("fused") else True, **kwargs)


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
    signature: Callable[..., Any] | None = None  # whose keywords it accepts, when factory takes **kwargs
    fixed: tuple[str, ...] = ()  # keywords the factory sets itself (not hyperparameters)

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
            signature=torch.optim.AdamW,
            fixed=("foreach",),
        ),
        OptimizerEntry(
            "torch-sgd",
            _torch_sgd,
            "baseline",
            "torch.optim.SGD(foreach=True) (set momentum=0.9 for heavy ball)",
            {"lr": 1e-2, "momentum": 0.9},
            scalopt=False,
            signature=torch.optim.SGD,
            fixed=("foreach",),
        ),
        OptimizerEntry("adam", Adam, "adam", "Adam (Generic Adam preset)", {"lr": 1e-2}),
        OptimizerEntry("adamw", AdamW, "adam", "AdamW (Generic Adam preset, decoupled decay)", {"lr": 1e-2}),
        OptimizerEntry(
            "generic-adam",
            _generic_adam,
            "adam",
            "Generic Adam with step-size/β2 schedules",
            {"lr": 1e-2},
            signature=GenericAdam,
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
            fixed=("comm",),
        ),
        OptimizerEntry(
            "soap",
            _soap,
            "second-order",
            "SOAP: Shampoo with Adam in its factors' eigenbasis (eigenvalue_correction=True)",
            {"lr": 1e-2, "precondition_frequency": 2},
            fixed=("comm", "eigenvalue_correction"),
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
        OptimizerEntry(
            "mlbfgs",
            MLBFGS,
            "second-order",
            "mL-BFGS: block-wise momentum L-BFGS, normalised direction through SGD momentum",
            {"lr": 1e-2, "update_freq": 2, "history": 3},
        ),
        OptimizerEntry(
            "trsgd",
            TRSGD,
            "proximal",
            "TRSGD: heavy-ball SGD with a periodic proximal anchor and sawtooth step sizes",
            {"lr": 1e-2, "period": 3, "prox_weight": 1e-3},
        ),
        OptimizerEntry(
            "tradam",
            TRAdam,
            "proximal",
            "TRAdam: Adam with a periodic proximal anchor and sawtooth step sizes",
            {"lr": 1e-2, "period": 3, "prox_weight": 1e-3},
        ),
    ]
}


def names() -> list[str]:
    return sorted(OPTIMIZERS)


def get(name: str) -> OptimizerEntry:
    return OPTIMIZERS[check_name("optimizer", name, names())]


def build(name: str, params: Iterable[Any], **overrides: Any) -> torch.optim.Optimizer:
    return get(name).build(params, **overrides)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: the "default" of a hyperparameter that has none (the caller must give it)
REQUIRED: Any = _Required()


def keyword_arguments(fn: Callable[..., Any], skip: Iterable[str] = ()) -> dict[str, Any] | None:
    """``{name: default or REQUIRED}`` of ``fn``'s keyword-passable arguments (positional-only,
    ``*args`` and the names in ``skip`` left out); ``None`` if it also takes ``**kwargs``."""
    skip = set(skip)
    out: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or p.name in skip:
            continue
        out[p.name] = REQUIRED if p.default is p.empty else p.default
    return out


def hyperparameters(name: str) -> dict[str, Any] | None:
    """``{hyperparameter: default or REQUIRED}`` of optimizer ``name`` (``None``: not introspectable)."""
    entry = get(name)
    fn = entry.signature or entry.factory
    first = next(iter(inspect.signature(fn).parameters))  # the parameters argument
    return keyword_arguments(fn, skip=(first, *entry.fixed))
