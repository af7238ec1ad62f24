"""scalopt: scalable and adaptive optimizers for PyTorch, with benchmarks and theory checks."""

from scalopt import schedules
from scalopt.optim import Adam, AdamW, ClippedSGD, GeneralizedSignSGD, GenericAdam, NormalizedSGD, Shampoo

__version__ = "0.1.0"

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
