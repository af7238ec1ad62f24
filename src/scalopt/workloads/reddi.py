"""``reddi``: the online convex counterexample of Reddi et al., projected onto [−1, 1].

Round k = 1, 2, … plays the linear loss (C > 2, default 3)

    f_k(x) = C·x  if k mod 3 == 1,  else  −x,        x ∈ [−1, 1]

whose average over a period, F(x) = (C − 2)·x/3, is minimised at x* = −1. Adam with a small
constant β2 (and β1 = 0) goes to x = +1, the worst point; a θ_t schedule that satisfies the
sufficient condition of Zou et al. reaches x* (see ``scalopt.theory.reddi`` and
``scalopt check adam``). The model is one scalar (``Point``) started at ``x0`` (default +1).

Projection: ``loss`` first projects the parameter onto [−1, 1] in place, then evaluates the round's
loss at the projected point, so the points played are exactly those of projected online descent,
x_{k+1} = Π(x_k − step_k) (the optimizer needs no projection of its own).
Train batch: the round index k (a 0-dim int64 tensor). The loss reported for a round is the
instantaneous regret f_k(x_k) − f_k(x*) = g_k·(x_k + 1), whose running mean is the average regret.
Metrics (``evaluate``): ``loss`` = F(x) − F(x*) = (C − 2)·(x + 1)/3 at the current projected point
(0 at x*, 2(C − 2)/3 at +1) — the suboptimality of the last point, not the average regret — and ``x``.

The rounds are a fixed sequence, not sampled, yet resumable from the generator state as the
interface requires: after round k the generator is re-seeded with ``ROUND_SEED_BASE + k``, so a
train iterator built from a saved state continues with round k + 1 (a generator whose seed is
below the base starts at round 1). Pinned defaults: C 3, x0 1, target_loss 0.01 (x ≤ −0.97),
default_steps 3000.

Reference: S. J. Reddi, S. Kale, S. Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from scalopt.core.validate import check_interval, check_number
from scalopt.workloads.base import Point, Workload, sha256_of

ROUND_SEED_BASE = 1 << 60
OPTIMUM = -1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reddi(Workload):
    """f_k(x) = C·x every third round (k mod 3 == 1), −x otherwise, on [−1, 1]; x* = −1."""

    name: ClassVar[str] = "reddi"
    target_loss: float = 0.01
    default_steps: int = 3000
    C: float = 3.0
    x0: float = 1.0

    def __post_init__(self) -> None:
        check_number("C", self.C)
        if not self.C > 2:
            raise ValueError(f"C must be in (2, inf), got {self.C!r}")
        check_interval("x0", self.x0, -1.0, 1.0, high_open=False)
        super().__post_init__()

    def gradient(self, k: int) -> float:
        """∂f_k/∂x: C if k mod 3 == 1, else −1."""
        return self.C if k % 3 == 1 else -1.0

    def suboptimality(self, x: float) -> float:
        """F(x) − F(x*) with F the per-round average loss (C − 2)·x/3."""
        return (self.C - 2.0) * (x - OPTIMUM) / 3.0

    # -- workload interface --------------------------------------------------------------------
    def init_model(self, generator: torch.Generator) -> Point:
        return Point(torch.tensor([float(self.x0)]))

    def _train_batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        seed = generator.initial_seed()
        k = seed - ROUND_SEED_BASE if seed >= ROUND_SEED_BASE else 0  # rounds already played
        while True:
            k += 1
            generator.manual_seed(ROUND_SEED_BASE + k)
            yield torch.tensor(k)

    def _eval_batches(self) -> Iterator[None]:
        yield None

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        x = model()
        with torch.no_grad():
            x.clamp_(-1.0, 1.0)  # play the projected point
        g = self.gradient(int(batch))
        return (g * (x - OPTIMUM)).sum()

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        x = float(model().clamp(-1.0, 1.0).sum())
        return {"loss": self.suboptimality(x), "x": x}

    # -- description ---------------------------------------------------------------------------
    def data_hash(self) -> str:
        return sha256_of(f"reddi C={self.C!r}".encode())

    def data_facts(self) -> dict[str, Any]:
        return {"x_star": OPTIMUM, "worst_loss": self.suboptimality(1.0)}
