"""``quadratic``: a noisy, ill-conditioned quadratic with a known minimiser (tests and theory checks).

    f(x) = 1/2 (x - x*)^T A (x - x*),   A = Q diag(lambda) Q^T

with eigenvalues lambda log-spaced between ``mu`` (0.1) and ``L`` (10) (condition number 100),
Q a random orthogonal matrix and x* ~ N(0, I), both from the fixed ``data_seed`` (default 0).
Minimum f(x*) = 0. Train batches are gradient noise expressed as a loss: a batch is xi ~ N(0, noise^2 I)
from the run's generator and the batch loss is f(x) + xi^T x, whose gradient is A (x - x*) + xi
(``noise`` 0 gives ``None`` batches and the exact loss). Eval ``loss`` is f(x) exactly, plus
``grad_norm`` = ||A (x - x*)|| and ``dist`` = ||x - x*||.

The model is one vector x (``Point``) initialised at x0 = x* + init_scale * e, e ~ N(0, I) from the
run's generator. Pinned defaults: dim 20, mu 0.1, L 10, noise 0.1, init_scale 1, data_seed 0;
f(x0) ~ 8 for seed 0. target_loss 0.05, default_steps 150: AdamW (seed 0) crosses it at ~100 steps with
lr 0.03 and ~60 with lr 0.1; the noise floor of constant-lr methods is ~0.01-0.05.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from scalopt.core.validate import check_int, check_interval, check_nonnegative, check_positive
from scalopt.workloads.base import Point, Workload, sha256_of


@functools.lru_cache(maxsize=8)
def generate_quadratic(
    dim: int, mu: float, L: float, data_seed: int
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(A, x*, sha256) in float64, a pure function of the arguments."""
    g = torch.Generator().manual_seed(data_seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    eigenvalues = torch.logspace(math.log10(mu), math.log10(L), dim, dtype=torch.float64)
    A = (Q * eigenvalues) @ Q.T
    A = 0.5 * (A + A.T)
    x_star = torch.randn(dim, generator=g, dtype=torch.float64)
    return A, x_star, sha256_of(A, x_star)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Quadratic(Workload):
    """f(x) = 1/2 (x - x*)^T A (x - x*) with log-spaced spectrum in [mu, L] and Gaussian gradient noise."""

    name: ClassVar[str] = "quadratic"
    target_loss: float = 0.05
    default_steps: int = 150
    dim: int = 20
    mu: float = 0.1
    L: float = 10.0
    noise: float = 0.1
    init_scale: float = 1.0
    data_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("dim", self.dim, minimum=1)
        check_positive("mu", self.mu)
        check_interval("L", self.L, self.mu, math.inf)
        check_nonnegative("noise", self.noise)
        check_nonnegative("init_scale", self.init_scale)
        check_int("data_seed", self.data_seed)

    @property
    def A(self) -> torch.Tensor:
        """The Hessian (float64)."""
        return generate_quadratic(self.dim, float(self.mu), float(self.L), self.data_seed)[0]

    @property
    def x_star(self) -> torch.Tensor:
        """The minimiser (float64)."""
        return generate_quadratic(self.dim, float(self.mu), float(self.L), self.data_seed)[1]

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) in x's dtype and device."""
        A, x_star = self.A.to(x.device, x.dtype), self.x_star.to(x.device, x.dtype)
        r = x - x_star
        return 0.5 * r @ (A @ r)

    def init_model(self, generator: torch.Generator) -> Point:
        e = torch.randn(self.dim, generator=generator, dtype=torch.float64)
        return Point(self.x_star + self.init_scale * e)

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
        value = self.objective(x)
        if batch is not None:
            value = value + batch.to(x.device, x.dtype) @ x
        return value

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        x = model().double()
        r = x - self.x_star
        return {
            "loss": float(self.objective(x)),
            "grad_norm": float((self.A @ r).norm()),
            "dist": float(r.norm()),
        }

    def data_hash(self) -> str:
        return generate_quadratic(self.dim, float(self.mu), float(self.L), self.data_seed)[2]

    def data_facts(self) -> dict[str, Any]:
        return {"condition_number": self.L / self.mu, "f_star": 0.0}
