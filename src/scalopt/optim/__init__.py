"""Public optimizers: recipes over transforms, or phase-structured classes."""

from scalopt.optim.clipped_sgd import ClippedSGD
from scalopt.optim.generalized_signsgd import GeneralizedSignSGD
from scalopt.optim.generic_adam import Adam, AdamW, GenericAdam
from scalopt.optim.hvp_rvr import HVPRVR
from scalopt.optim.mlbfgs import MLBFGS
from scalopt.optim.normalized_sgd import NormalizedSGD
from scalopt.optim.oasis import OASIS
from scalopt.optim.shampoo import RootFailureError, Shampoo
from scalopt.optim.trsgd import TRSGD, TRAdam

__all__ = [
    "Adam",
    "AdamW",
    "ClippedSGD",
    "GeneralizedSignSGD",
    "GenericAdam",
    "HVPRVR",
    "MLBFGS",
    "NormalizedSGD",
    "OASIS",
    "RootFailureError",
    "Shampoo",
    "TRAdam",
    "TRSGD",
]
