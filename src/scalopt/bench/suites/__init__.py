"""Suites: named functions ``suite(seeds) -> list[RunSpec]``; one module per family.

Suite modules are imported when a suite is asked for, so ``scalopt list`` stays fast and a family's
heavy imports (torch.distributed) load only when its suite runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from scalopt.bench.spec import RunSpec
from scalopt.core.validate import check_name

Suite = Callable[[int], list[RunSpec]]

#: suite name -> (module under scalopt.bench.suites, function name, one-line summary)
SUITES: dict[str, tuple[str, str, str]] = {
    "default": ("core", "default", "torch AdamW vs the element-wise optimizers on stdlib-lm (the main job)"),
    "quick": ("core", "quick", "seconds: a tiny end-to-end check"),
    "shampoo": ("shampoo", "shampoo", "Shampoo vs AdamW on stdlib-lm and digits, with a learning-rate sweep"),
    "shampoo-soap": ("shampoo", "soap", "the shampoo suite's torch AdamW and SOAP runs alone"),
    "distributed": ("distributed", "distributed", "sync clipped SGD, CELGC, Overlap Local-SGD, DP Adam"),
    "compression": ("compression", "compression", "loss vs bytes: Efficient-Adam, 1-bit Adam, PowerSGD"),
    "curvature": (
        "curvature",
        "curvature",
        "OASIS, HVP-RVR vs AdamW and SGD+momentum on digits and small stdlib-lm",
    ),
    "federated": ("federated", "federated", "FedAvg, FedAdam, local Adam, FedLADA on digits (Dirichlet)"),
    "adam-condition": ("adam_condition", "adam_condition", "Generic Adam on the Reddi counterexample"),
}


def names() -> list[str]:
    return sorted(SUITES)


def summary(name: str) -> str:
    return SUITES[name][2]


def get(name: str) -> Suite:
    check_name("suite", name, names())
    module, function, _ = SUITES[name]
    return getattr(importlib.import_module(f"scalopt.bench.suites.{module}"), function)
