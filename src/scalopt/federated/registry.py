"""Federated algorithm names for the CLI and the bench: fedavg, fedadam, fedlada, local-adam."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scalopt.federated.base import FederatedAlgorithm
from scalopt.federated.fedadam import FedAdam
from scalopt.federated.fedavg import FedAvg
from scalopt.federated.fedlada import FedLADA, LocalAdam

ALGORITHMS: dict[str, tuple[type[FederatedAlgorithm], str]] = {
    "fedavg": (FedAvg, "FedAvg: local SGD (or any optimizer), example-weighted mean of the deltas"),
    "fedadam": (FedAdam, "FedAdam: FedAvg's clients, server Adam on the mean delta (Reddi et al.)"),
    "fedlada": (FedLADA, "FedLADA: local AMSGrad amended by the global average offset (Sun et al.)"),
    "local-adam": (LocalAdam, "local AMSGrad without amendment (FedLADA with alpha = 1): drift control"),
}


def names() -> list[str]:
    return sorted(ALGORITHMS)


def summary(name: str) -> str:
    return ALGORITHMS[name][1]


def build(name: str, params: Iterable[Any], **kwargs: Any) -> FederatedAlgorithm:
    """The algorithm ``name`` over ``params``; ``kwargs`` are its constructor's keyword arguments."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown federated algorithm {name!r}; valid names: {', '.join(names())}")
    try:
        return ALGORITHMS[name][0](params, **kwargs)
    except TypeError as exc:  # an unknown keyword: name it as a bad argument
        raise ValueError(f"{name}: {exc}") from None
