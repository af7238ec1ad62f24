"""Overlap Local-SGD: local steps, a pull-back toward an anchor averaged in the background.

    init: anchor z ← x_0 on every worker (rank 0's model, broadcast at construction); v unset
    every step:  x_i ← inner_step(x_i, g_i)
    after steps τ, 2τ, … (sync k = 1, 2, …):
        wait for the all-reduce started at sync k−1 and set z ← its result   (k = 1: z = x_0)
        x_i ← (1−α)·x_i + α·z                                 pull toward the one-period-stale anchor
        β = 0:  z_i' ← x_i
        β > 0:  v_i ← β·v_i + (z − x_i)/γ   (first time v_i = (z − x_i)/γ);   z_i' ← z − γ·v_i
        start a NON-BLOCKING all-reduce  z ← (1/m) Σ_i z_i'  and return at once

Symbols ↔ arguments: τ = ``period``, α = ``pullback`` (default 0.6, the authors' launch script;
argparse default 0.2), β = ``anchor_momentum`` (the authors' gmf; default 0), γ = the current
``lr`` (all param groups must share it when β > 0), m = ``comm.world_size``. One flattened
model-sized all-reduce per τ steps (a round), overlapped with the next τ local steps: with a
``NetworkModel`` delay the cost is hidden when τ steps take longer than the transfer. Local
momentum is never reset. With ``module=`` and ``average_buffers=True`` floating buffers are part of
x and z.

Deviations [scalopt]: the authors use a Python thread with events for the background average,
scalopt an ``all_reduce(async_op=True)`` waited on at the next sync; their counter fires first
after τ+1 steps, scalopt after τ, 2τ, … Validation: 0 ≤ α ≤ 1, and α < 1 when β = 0 (α = 1, β = 0
is degenerate: z stays x_0 and every sync resets the workers to x_0); 0 ≤ β < 1.
Special cases: α = 0 ⇒ independent workers; m = 1 ⇒ the inner optimizer pulled toward its own
τ-stale iterate.

State (in ``state_dict``): step counter, anchor z, momentum v, and the pending average (waited for
when the state is saved, restored as a completed average), so a checkpoint taken mid-period
resumes exactly.

Reference: J. Wang, H. Liang, G. Joshi, "Overlap Local-SGD: An Algorithmic Approach to Hide
Communication Delays in Distributed SGD", ICASSP 2020, arXiv 2002.09539;
code https://github.com/JYWa/Overlap_Local_SGD (distoptim/OverlapLocalSGD.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalopt.core.comm import Comm, DoneHandle
from scalopt.core.validate import check_interval
from scalopt.distributed.local_sgd import LocalStepOptimizer


class OverlapLocalSGD(LocalStepOptimizer):
    """Anchor model averaged by a non-blocking all-reduce; workers pulled toward it every period."""

    algorithm = "overlap_local_sgd"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        comm: Comm,
        period: int,
        pullback: float = 0.6,
        anchor_momentum: float = 0.0,
        average_buffers: bool = True,
        module: nn.Module | None = None,
        nonfinite: str = "raise",
        deterministic: bool = False,
    ) -> None:
        self.pullback = check_interval("pullback", pullback, 0.0, 1.0, high_open=False)
        self.anchor_momentum = check_interval("anchor_momentum", anchor_momentum, 0.0, 1.0)
        if anchor_momentum == 0 and pullback == 1:
            raise ValueError(
                "pullback must be in [0, 1) when anchor_momentum=0, got 1: the anchor would stay x_0 and "
                "every sync would reset all workers to x_0"
            )
        self._pending: list[Any] | None = None  # handles of the in-flight average (z_i' being reduced)
        self.velocity: list[torch.Tensor] | None = None
        super().__init__(
            optimizer,
            comm=comm,
            period=period,
            average_buffers=average_buffers,
            module=module,
            nonfinite=nonfinite,
            deterministic=deterministic,
        )
        self.anchor: list[torch.Tensor] = self.vector().gather()  # z ← x_0 (after the broadcast)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """A collective: the new parameters are broadcast, and the anchor restarts from mean_i x_i."""
        if not self._sharing:
            return
        self.wait()
        super().add_param_group(param_group)
        anchor = self.vector().gather()
        for z_f in anchor:
            self.comm.all_reduce(z_f, "mean", deterministic=self.deterministic)
        self.anchor, self.velocity = anchor, None

    def wait(self) -> None:
        """Finish the in-flight average, if any (z ← its result)."""
        if self._pending is not None:
            self.anchor = [h.wait() for h in self._pending]
            self._pending = None

    def _gamma(self) -> float:
        lrs = {float(g["lr"]) for g in self.param_groups}
        if len(lrs) != 1:
            raise ValueError(
                f"OverlapLocalSGD with anchor_momentum > 0 needs one lr for all param groups, "
                f"got {sorted(lrs)}"
            )
        return lrs.pop()

    def sync(self) -> None:
        """Wait for the previous average, pull back toward it, start the next (a round)."""
        self.wait()
        vec = self.vector()
        x = vec.gather()
        alpha, beta = self.pullback, self.anchor_momentum
        for x_f, z_f in zip(x, self.anchor):
            x_f.mul_(1 - alpha).add_(z_f, alpha=alpha)
        vec.scatter(x)
        if beta > 0:
            gamma = self._gamma()
            diffs = [(z_f - x_f).div_(gamma) for x_f, z_f in zip(x, self.anchor)]
            if self.velocity is None:
                self.velocity = diffs
            else:
                for v_f, d_f in zip(self.velocity, diffs):
                    v_f.mul_(beta).add_(d_f)
            send = [z_f - gamma * v_f for z_f, v_f in zip(self.anchor, self.velocity)]
        else:
            send = x  # fresh copies: later local steps do not touch them
        self._pending = [
            self.comm.all_reduce(s, "mean", deterministic=self.deterministic, async_op=True) for s in send
        ]
        self.comm.mark_round()
        self.counters["syncs"] += 1

    # -- state -----------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        out = super().extra_state()
        pending = None
        if self._pending is not None:
            results = [h.wait() for h in self._pending]  # the collective was issued by every rank
            self._pending = [DoneHandle(r) for r in results]
            pending = [r.clone() for r in results]
        out.update(
            local_step=self.local_step,
            anchor=[z.clone() for z in self.anchor],
            velocity=None if self.velocity is None else [v.clone() for v in self.velocity],
            pending=pending,
        )
        return out

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        super().load_extra_state(extra)
        self._vector = None
        self.local_step = int(extra["local_step"])
        self.anchor = [z.clone() for z in extra["anchor"]]
        velocity = extra["velocity"]
        self.velocity = None if velocity is None else [v.clone() for v in velocity]
        pending = extra["pending"]
        self._pending = None if pending is None else [DoneHandle(p.clone()) for p in pending]
