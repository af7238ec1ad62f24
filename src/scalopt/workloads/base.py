"""The interface every embedded workload implements, and the helpers the workloads share.

A workload is a frozen, keyword-only dataclass whose fields are its pinned configuration. It owns
model + data + loss + evaluation for one task, and nothing else:

    init_model(generator)      -> float32 nn.Module, deterministic given the generator's state
    batches("train", generator) -> infinite iterator; every next() draws only from ``generator``
                                  (sampling with replacement, no cursor or epoch state), so
                                  ``generator.get_state()`` between two next() calls is the data position
    batches("eval", generator)  -> finite, deterministic iterator over held-out data
    loss(model, batch)          -> scalar mean loss
    evaluate(model)             -> deterministic held-out metrics, always with "loss"
    describe()                  -> JSON-serialisable name, config and data facts (with data_hash)
    data_hash()                 -> sha256 hex of the data trained and evaluated on

``loss_unit`` (a class attribute) names the loss's unit for reports and figures ("nats/byte").
Two fields are common to all workloads: ``target_loss`` (the eval loss that "steps / time to target"
counts to) and ``default_steps`` (a sensible benchmark length); each workload pins its own defaults.

Library code never touches the global RNG. ``nn.Module`` constructors draw their default
initialisation from it, so :func:`build_module` constructs modules on the meta device (no draw),
allocates them on the CPU and leaves every parameter to an explicit, generator-driven initialiser.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from scalopt.core.validate import check_choice, check_int, check_number

SPLITS = ("train", "eval")

M = TypeVar("M", bound=nn.Module)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Workload(abc.ABC):
    """Base class of the embedded workloads; subclasses are frozen keyword-only dataclasses."""

    name: ClassVar[str] = ""
    loss_unit: ClassVar[str] = ""  # e.g. "nats/byte"; "" for a plain objective value
    target_loss: float = 0.0
    default_steps: int = 100

    def __post_init__(self) -> None:
        check_number("target_loss", self.target_loss)
        check_int("default_steps", self.default_steps, minimum=1)

    # -- the task ------------------------------------------------------------------------------
    @abc.abstractmethod
    def init_model(self, generator: torch.Generator) -> nn.Module:
        """A fresh float32 model on the CPU, deterministic given ``generator``'s state."""

    def batches(self, split: str, generator: torch.Generator) -> Iterator[Any]:
        """Train: infinite iterator drawing only from ``generator``. Eval: finite, deterministic."""
        check_choice("split", split, SPLITS)
        if split == "train":
            return self._train_batches(generator)
        return self._eval_batches()

    @abc.abstractmethod
    def _train_batches(self, generator: torch.Generator) -> Iterator[Any]: ...

    @abc.abstractmethod
    def _eval_batches(self) -> Iterator[Any]: ...

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar mean loss of ``model`` on ``batch``."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out metrics under ``torch.no_grad()`` in eval mode; the model's mode is restored."""
        with eval_mode(model), torch.no_grad():
            metrics = self._evaluate(model)
        return {key: float(value) for key, value in metrics.items()}

    @abc.abstractmethod
    def _evaluate(self, model: nn.Module) -> dict[str, float]: ...

    def federated_clients(self, n_clients: int, *, alpha: float, generator: torch.Generator) -> list[Any]:
        """The train data split over ``n_clients`` (a list of ``scalopt.federated.ClientData``).

        ``alpha`` is the Dirichlet label-skew concentration where the workload has labels
        (``math.inf``: IID); a workload with a natural split may ignore it and says so."""
        raise ValueError(f"workload {self.name!r} has no federated split; use digits or stdlib-lm")

    # -- description ---------------------------------------------------------------------------
    @abc.abstractmethod
    def data_hash(self) -> str:
        """sha256 hex digest of the data this workload trains and evaluates on (cached)."""

    def data_facts(self) -> dict[str, Any]:
        """Sizes and other facts about the data, merged into :meth:`describe`."""
        return {}

    def config(self) -> dict[str, Any]:
        """Every config field by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> dict[str, Any]:
        facts = {**self.config(), **self.data_facts(), "data_hash": self.data_hash()}
        return {"name": self.name, "loss_unit": self.loss_unit, **facts}


# -- helpers ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, then restore the mode it had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def build_module(factory: Callable[[], M], init: Callable[[M], None]) -> M:
    """Construct ``factory()`` without drawing from the global RNG, then initialise it with ``init``.

    The module is built on the meta device, allocated (uninitialised) as float32 on the CPU and
    filled with NaN; ``init`` must then set every parameter and floating buffer, which is checked.
    """
    with torch.device("meta"):
        module = factory()
    module = module.to_empty(device="cpu").to(torch.float32)
    tensors = dict(module.named_parameters())
    tensors.update((n, b) for n, b in module.named_buffers() if b.is_floating_point())
    with torch.no_grad():
        for tensor in tensors.values():
            tensor.fill_(float("nan"))
        init(module)
    missed = [n for n, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if missed:
        raise RuntimeError(f"initialiser left non-finite values in {missed}")
    return module


def sha256_of(*parts: bytes | torch.Tensor | np.ndarray) -> str:
    """sha256 hex digest of raw bytes, tensors and arrays (dtype and shape are hashed with the data)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            part = part.tobytes()
        digest.update(part)
    return digest.hexdigest()


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (batches are built on the CPU and moved there)."""
    return next(model.parameters()).device


class Point(nn.Module):
    """The model of the synthetic objectives: one trainable vector ``x``; ``forward()`` returns it."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(x0.detach().clone().to(torch.float32))

    def forward(self) -> torch.Tensor:
        return self.x
