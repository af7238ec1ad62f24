"""``rosenbrock``: the Rosenbrock function, a curved narrow valley with a known minimum.

    f(x) = sum_{i=1}^{d-1} [100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2],   minimum f(1, ..., 1) = 0

The model is one vector x (``Point``, d = ``dim``, default 2) started at the classic point
(-1.2, 1, -1.2, 1, ...), plus ``init_perturbation`` * N(0, I) from the run's generator (0 by default,
so the start is deterministic). Optional gradient noise as for ``quadratic``: with ``noise`` > 0 a
train batch is xi ~ N(0, noise^2 I) from the generator and the batch loss is f(x) + xi^T x; with
``noise`` 0 (default) train batches are ``None`` placeholders (one per step) and the loss is exact.
Eval: ``loss`` = f(x), ``grad_norm`` = ||grad f(x)||, ``dist`` = ||x - 1||.
Pinned: target_loss 0.01, default_steps 2000 (f(x0) = 24.2): AdamW crosses the target at ~1350 steps
with lr 0.03 and ~2600 with lr 0.01.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from scalopt.core.validate import check_int, check_nonnegative
from scalopt.workloads.base import Point, Workload, sha256_of


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100.0 * (x[1:] - x[:-1].square()).square() + (1.0 - x[:-1]).square()).sum()


def rosenbrock_grad(x: torch.Tensor) -> torch.Tensor:
    """Closed-form gradient of :func:`rosenbrock`."""
    valley = x[1:] - x[:-1].square()
    grad = torch.zeros_like(x)
    grad[:-1] = -400.0 * x[:-1] * valley - 2.0 * (1.0 - x[:-1])
    grad[1:] += 200.0 * valley
    return grad


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rosenbrock(Workload):
    """The d-dimensional Rosenbrock function from (-1.2, 1, ...), optionally with gradient noise."""

    name: ClassVar[str] = "rosenbrock"
    target_loss: float = 0.01
    default_steps: int = 2000
    dim: int = 2
    noise: float = 0.0
    init_perturbation: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("dim", self.dim, minimum=2)
        check_nonnegative("noise", self.noise)
        check_nonnegative("init_perturbation", self.init_perturbation)

    @property
    def x_star(self) -> torch.Tensor:
        return torch.ones(self.dim, dtype=torch.float64)

    def x_start(self) -> torch.Tensor:
        """The classic start (-1.2, 1, -1.2, 1, ...) before any perturbation (float64)."""
        return torch.tensor([-1.2, 1.0], dtype=torch.float64).repeat((self.dim + 1) // 2)[: self.dim]

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        return rosenbrock(x)

    def init_model(self, generator: torch.Generator) -> Point:
        x0 = self.x_start()
        if self.init_perturbation > 0:
            x0 = x0 + self.init_perturbation * torch.randn(self.dim, generator=generator, dtype=torch.float64)
        return Point(x0)

    def _train_batches(self, generator: torch.Generator) -> Iterator[torch.Tensor | None]:
        while True:
            if self.noise == 0:
                yield None
            else:
                yield self.noise * torch.randn(self.dim, generator=generator)

    def _eval_batches(self) -> Iterator[None]:
        yield None

    def loss(self, model: nn.Module, batch: torch.Tensor | None) -> torch.Tensor:
        x = model()
        value = rosenbrock(x)
        if batch is not None:
            value = value + batch.to(x.device, x.dtype) @ x
        return value

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        x = model().double()
        return {
            "loss": float(rosenbrock(x)),
            "grad_norm": float(rosenbrock_grad(x).norm()),
            "dist": float((x - 1).norm()),
        }

    def data_hash(self) -> str:
        # No data: hash the definition (objective name, dimension, start point).
        return sha256_of(b"rosenbrock", self.x_start())

    def data_facts(self) -> dict[str, Any]:
        return {"f_star": 0.0}
