"""scalopt: scalable and adaptive optimizers for PyTorch, with benchmarks and theory checks."""

from scalopt import schedules
from scalopt.optim import Adam, AdamW, ClippedSGD, GeneralizedSignSGD, GenericAdam, NormalizedSGD, Shampoo

__version__ = "0.1.0"


def __getattr__(name: str):
    """``scalopt.distributed`` and ``scalopt.theory`` load on first use (torch.distributed is heavy)."""
    if name in ("distributed", "theory", "workloads", "bench", "report"):
        import importlib

        return importlib.import_module(f"scalopt.{name}")
    raise AttributeError(f"module 'scalopt' has no attribute {name!r}")


__all__ = [
    "Adam",
    "AdamW",
    "ClippedSGD",
    "GeneralizedSignSGD",
    "GenericAdam",
    "NormalizedSGD",
    "Shampoo",
    "schedules",
]
