"""scalopt: scalable and adaptive optimizers for PyTorch, with benchmarks and theory checks.

Everything loads on first use, so ``import scalopt.theory`` (NumPy/SciPy only) and ``scalopt check``
never import torch: ``scalopt.AdamW`` imports :mod:`scalopt.optim` when first read, ``scalopt.distributed``
its package. A new public name is one line in ``_EXPORTS`` (name -> module that defines it).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module it lives in (imported on first access, then cached in the module globals)
_EXPORTS: dict[str, str] = {
    "Adam": "scalopt.optim",
    "AdamW": "scalopt.optim",
    "ClippedSGD": "scalopt.optim",
    "GeneralizedSignSGD": "scalopt.optim",
    "GenericAdam": "scalopt.optim",
    "HVPRVR": "scalopt.optim",
    "MLBFGS": "scalopt.optim",
    "NormalizedSGD": "scalopt.optim",
    "OASIS": "scalopt.optim",
    "Shampoo": "scalopt.optim",
    "TRAdam": "scalopt.optim",
    "TRSGD": "scalopt.optim",
}

# subpackages reachable as attributes of ``scalopt`` (``scalopt.distributed`` etc.)
_SUBMODULES: tuple[str, ...] = (
    "bench", "cli", "compress", "core", "distributed", "federated", "linalg", "optim", "report", "schedules",
    "theory", "transforms", "workloads",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"scalopt.{name}")
    else:
        raise AttributeError(f"module 'scalopt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


__all__ = [*_EXPORTS, "schedules"]
