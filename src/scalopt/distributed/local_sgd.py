"""Local SGD (periodic model averaging): local steps, parameters averaged every ``period`` steps.

On every rank i, for steps t = 1, 2, …:

    x^i ← inner_step(x^i, g^i)                         local optimizer, local minibatch gradient
    if t ≤ E  or  (t − E) mod τ = 0:                    E = warmup_steps, τ = period
        x^i ← (1/N) Σ_j x^j                             one all-reduce of the flat model (a round)

Symbols ↔ arguments: τ = ``period`` (≥ 1), E = ``warmup_steps`` (default 0: average after steps
τ, 2τ, …, so 4 rounds in 16 steps with τ = 4), N = ``comm.world_size``. With
``average_buffers=True`` (default) and ``module=``, the module's floating buffers (BatchNorm
statistics) are averaged with the parameters. Local momentum (the inner optimizer's state) is
never averaged or reset. All trainable parameters are averaged, whether or not they had a gradient.

Deviations [scalopt]: during warm-up the models are averaged after every step (synchronous training
by model averaging), where torch's ``PostLocalSGDOptimizer`` relies on DDP's gradient all-reduce;
torch's ``PeriodicModelAverager`` also averages after the very first step and skips buffers. A
global momentum on the averaged model (BMUF/SlowMo-like: z the last synced model, x̄ the average,
v ← gmf·v + (z − x̄)/lr, z ← z − lr·v, x^i ← z; the analogue of the ``gmf`` option of Wang, Liang
and Joshi's Overlap Local-SGD code) is not implemented here; ``OverlapLocalSGD`` has its own.

Special cases: τ = 1 with plain SGD equals ``DataParallelOptimizer`` over SGD up to rounding
(x − η·mean g vs mean(x − η g)); N = 1 is the inner optimizer.

Reference: S. U. Stich, "Local SGD Converges Fast and Communicates Little", ICLR 2019,
arXiv 1805.09767; T. Lin, S. U. Stich, K. K. Patel, M. Jaggi, "Don't Use Large Mini-Batches, Use
Local SGD", ICLR 2020, arXiv 1808.07217 (post-local SGD).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalopt.core.comm import Comm
from scalopt.core.validate import check_bool, check_int
from scalopt.distributed.wrapper import DistributedOptimizer, ModelVector, floating_buffers


class LocalStepOptimizer(DistributedOptimizer):
    """What Local SGD and Overlap Local-SGD share: the step prologue (non-finite agreement, the inner
    step, counters), the flat model vector (parameters plus, optionally, floating buffers) and the
    sync decision. Subclasses define ``is_sync_step(t)`` and ``sync()``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        comm: Comm,
        period: int,
        average_buffers: bool,
        module: nn.Module | None,
        nonfinite: str,
        deterministic: bool,
    ) -> None:
        self.period = check_int("period", period, minimum=1)
        self.average_buffers = check_bool("average_buffers", average_buffers)
        self.local_step = 0
        self._vector: ModelVector | None = None
        super().__init__(
            optimizer, comm=comm, module=module, nonfinite=nonfinite, deterministic=deterministic
        )

    def vector(self) -> ModelVector:
        if self._vector is None:
            params = [p for p in self.params() if p.requires_grad]
            buffers = floating_buffers(self.module) if self.average_buffers else []
            self._vector = ModelVector(params + buffers)
        return self._vector

    def layout_changed(self) -> None:
        self._vector = None

    def is_sync_step(self, t: int) -> bool:
        return t % self.period == 0

    def step(self, closure: Any = None) -> Any:
        loss = self.closure_loss(closure)
        if not self.agree_finite():
            return loss
        self.optimizer.step()
        self.local_step += 1
        self.counters["steps"] += 1
        if self.is_sync_step(self.local_step):
            self.sync()  # type: ignore[attr-defined]  # each subclass's own synchronization
        return loss


class LocalSGD(LocalStepOptimizer):
    """Inner steps locally; parameters (and buffers) averaged every ``period`` steps."""

    algorithm = "local_sgd"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        comm: Comm,
        period: int,
        warmup_steps: int = 0,
        average_buffers: bool = True,
        module: nn.Module | None = None,
        nonfinite: str = "raise",
        deterministic: bool = False,
    ) -> None:
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        super().__init__(
            optimizer,
            comm=comm,
            period=period,
            average_buffers=average_buffers,
            module=module,
            nonfinite=nonfinite,
            deterministic=deterministic,
        )

    def is_sync_step(self, t: int) -> bool:
        return t <= self.warmup_steps or (t - self.warmup_steps) % self.period == 0

    def sync(self) -> None:
        """x^i ← mean_j x^j (one all-reduce per dtype); a round."""
        vec = self.vector()
        flats = vec.gather()
        for flat in flats:
            self.comm.all_reduce(flat, "mean", deterministic=self.deterministic)
        vec.scatter(flats)
        self.comm.mark_round()
        self.counters["syncs"] += 1

    average = sync

    def extra_state(self) -> dict[str, Any]:
        out = super().extra_state()
        out.update(local_step=self.local_step, period=self.period, warmup_steps=self.warmup_steps)
        return out

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        super().load_extra_state(extra)
        self.local_step = int(extra["local_step"])
