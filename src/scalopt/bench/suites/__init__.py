"""Suites: named functions ``suite(seeds) -> list[RunSpec]``; one module per family.

Suite modules are imported when a suite is asked for, so ``scalopt list`` stays fast and a family's
heavy imports (torch.distributed) load only when its suite runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from scalopt.bench.spec import RunSpec

Suite = Callable[[int], list[RunSpec]]

#: suite name -> (module under scalopt.bench.suites, function name)
SUITES: dict[str, tuple[str, str]] = {
    "default": ("core", "default"),
    "quick": ("core", "quick"),
    "shampoo": ("shampoo", "shampoo"),
    "distributed": ("distributed", "distributed"),
    "compression": ("compression", "compression"),
    "adam-condition": ("adam_condition", "adam_condition"),
}


def names() -> list[str]:
    return sorted(SUITES)


def get(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; valid names: {', '.join(names())}")
    module, function = SUITES[name]
    return getattr(importlib.import_module(f"scalopt.bench.suites.{module}"), function)
