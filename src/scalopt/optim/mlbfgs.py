"""mL-BFGS: momentum-based block-wise L-BFGS, with the blocks optionally sharded over ranks.

Parameters are partitioned into blocks; each block b keeps running sums of its parameters and
gradients and, every T steps, forms a curvature pair from their differences, smooths it with
momentum, damps it and pushes it into a FIFO of the last ``history`` pairs. The block's direction
is the two-loop recursion on its gradient; all directions together are normalised to unit length
and passed through SGD momentum. Until the first pair exists the step is SGD with momentum.

Update rule (block b with parameters θ_b, gradient g_b, its own 1-based step t; wd coupled):

    q_b = g_b + wd·θ_b
    P̄ ← β_p·P̄ + θ_b ;  Ḡ ← β_g·Ḡ + q_b                       running sums, from 0
    if t mod T = 0:
        if a snapshot exists:
            s ← P̄ − P̄_prev ;  y ← Ḡ − Ḡ_prev
            if a previous pair exists:  s ← (1−β_m)·s + β_m·s_last ;  y ← (1−β_m)·y + β_m·y_last
            s_last, y_last ← s, y
            damp y (Powell, against B0 = I; ``scalopt.linalg.damp_pair``):  sᵀy/sᵀs ∈ [0.01, 1.5]
            push (s, y, ρ = 1/sᵀy) into the FIFO (drop the oldest beyond ``history``)
        P̄_prev ← P̄ ;  Ḡ_prev ← Ḡ ;  Ḡ ← q_b                    the gradient sum restarts
    d_b = two_loop(q_b; FIFO, γ = sᵀy/yᵀy of the newest pair)  (``scalopt.linalg.two_loop``)
          or d_b = q_b while the FIFO is empty
    parameters in no block: d = q = g + wd·θ
    if any block has a pair:  d ← d / sqrt(Σ_blocks ‖d_b‖² + Σ_unblocked ‖q‖²)   (blocks in order)
    buf ← μ·buf + d ;  θ ← θ − lr·buf                         (torch.optim.SGD's momentum)

Symbols ↔ arguments: lr, μ = ``momentum``, wd = ``weight_decay`` (per param group); T =
``update_freq``, history length = ``history``, (β_p, β_g) = ``betas``, β_m = ``pair_momentum``,
``damping`` (φ ≤ 1 − damping), ``blocks`` (default: one block per parameter; a list of lists of
parameters; parameters in no block take d = q). Defaults are the authors' experiment script's:
lr 0.1, μ 0.9, T 50, history 10, β_p = β_g = 0.999, β_m 0.9, damping 0.01 (wd there 2e-4–5e-4; here
0). Once a pair exists the pre-momentum direction has unit norm: lr is the step length.

Robustness (standard L-BFGS practice, not from the paper): a pair is skipped (counted in
``pairs_skipped``) when s = 0, s or y is not finite, or sᵀy ≤ 1e-10·‖s‖·‖y‖ after damping; when the
normalising norm is not finite the blocks with non-finite directions clear their FIFO and the step
is the SGD-phase step (d = q, no normalisation; counted in ``direction_fallbacks``). All state is
float32 (float64 for float64 parameters); fp16/bf16 parameters are updated in float32 and rounded
once. Complex parameters are real pairs (``view_as_real``).

Blocks across ranks (``comm=``): gradients are averaged over ranks (one deterministic all-reduce);
blocks are assigned to ranks by greedy LPT on history × numel (``scalopt.optim.sharding``); a rank
keeps P̄, Ḡ, the snapshots and the FIFO of the blocks it owns only and computes their directions;
one all-gather shares the directions (each with its FIFO length, which decides the normalisation);
every rank then normalises (norms summed in block order) and steps identically. The result equals
single-process mL-BFGS on the averaged gradient bitwise. Every rank must have gradients for the same
parameters at every step; ``state_dict`` is this rank's shard and loads only into the same rank of
the same world size.

Deviations from the authors' code (``BlockSlimQN`` in yuehniu/mL-BFGS, opt/slimblock.py): weight
decay is added as wd·θ (the code adds wd·g to the averaged gradient, read as a typo); the smoothing
of y uses the previous smoothed y before damping (the code uses the damped one), so s and y are
smoothed alike; unblocked parameters take q with weight decay and enter the normalising norm (the
code divides them by the blocks' norm only); the step counter is per block, so blocks added later
form pairs on their own schedule. The paper states the running averages as (1−β)-weighted EMAs;
the code's sums differ by a constant factor that cancels in the two-loop and the normalisation.

Reference: Y. Niu, Z. Fabian, S. Lee, M. Soltanolkotabi, S. Avestimehr, "mL-BFGS: A Momentum-based
L-BFGS for Distributed Large-Scale Neural Network Optimization", TMLR 2023, arXiv 2307.13744.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import torch

from scalopt.core.base import ScaloptOptimizer, call_closure
from scalopt.core.comm import check_comm
from scalopt.core.validate import check_betas, check_int, check_interval, check_lr, check_nonnegative
from scalopt.linalg.lbfgs import damp_pair, two_loop
from scalopt.optim.sharding import all_gather_owned, assign_lpt, average_gradients, check_shard
from scalopt.transforms.momentum import heavy_ball_
from scalopt.transforms.weight_decay import decay

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _work_dtype(p: torch.Tensor) -> torch.dtype:
    real = p.real.dtype if p.is_complex() else p.dtype
    return torch.promote_types(real, torch.float32)


def _view(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _flat(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    return ts[0].reshape(-1) if len(ts) == 1 else torch.cat([t.reshape(-1) for t in ts])


class MLBFGS(ScaloptOptimizer):
    dtensor_unsupported = (
        "its curvature pairs, two-loop recursion and normalisation are inner products over whole "
        "blocks, which FSDP2 splits across ranks; use comm= (blocks sharded over ranks) on the "
        "unsharded model, or DDP"
    )
    hyperparameters = {
        "lr": check_lr,
        "momentum": lambda n, v: check_interval(n, v, 0.0, 1.0),
        "weight_decay": check_nonnegative,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        blocks: Sequence[Sequence[torch.Tensor]] | None = None,
        update_freq: int = 50,
        history: int = 10,
        betas: tuple[float, float] = (0.999, 0.999),
        pair_momentum: float = 0.9,
        damping: float = 0.01,
        comm: Any = None,
        nonfinite: str = "raise",
    ) -> None:
        self.update_freq = check_int("update_freq", update_freq, minimum=1)
        self.history = check_int("history", history, minimum=1)
        self.betas = check_betas("betas", betas, high_open=(False, False))
        self.pair_momentum = check_interval("pair_momentum", pair_momentum, 0.0, 1.0)
        self.damping = check_interval("damping", damping, 0.0, 1.0)
        self.comm = None if comm is None else check_comm(comm)
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
        super().__init__(params, defaults, nonfinite=nonfinite)
        for name in ("pairs_accepted", "pairs_skipped", "direction_fallbacks"):
            self._counters[name] = 0
        self._spec = None if blocks is None else self._check_blocks(blocks)
        self._layout_key: tuple[int, ...] | None = None

    @property
    def rank(self) -> int:
        return 0 if self.comm is None else self.comm.rank

    @property
    def world_size(self) -> int:
        return 1 if self.comm is None else self.comm.world_size

    def _check_blocks(self, blocks: Any) -> list[list[torch.Tensor]]:
        known = {id(p) for g in self.param_groups for p in g["params"]}
        seen: set[int] = set()
        out = []
        if isinstance(blocks, torch.Tensor) or not isinstance(blocks, (list, tuple)):
            raise ValueError(f"blocks must be a list of lists of parameters, got {type(blocks).__name__}")
        for i, block in enumerate(blocks):
            block = list(block) if isinstance(block, (list, tuple)) else None
            if not block or not all(isinstance(p, torch.Tensor) for p in block):
                raise ValueError(f"blocks[{i}] must be a non-empty list of parameters, got {blocks[i]!r}")
            for p in block:
                if id(p) not in known:
                    raise ValueError(
                        f"blocks[{i}] holds a tensor of shape {tuple(p.shape)} that is not a "
                        f"parameter of this optimizer"
                    )
                if id(p) in seen:
                    raise ValueError(
                        f"blocks[{i}] holds a parameter of shape {tuple(p.shape)} that is "
                        f"already in an earlier block; each parameter belongs to one block"
                    )
                seen.add(id(p))
            kinds = {(_work_dtype(p), p.device) for p in block}
            if len(kinds) > 1:
                raise ValueError(
                    f"blocks[{i}] mixes dtypes/devices {sorted(map(str, kinds))}; a block's "
                    f"parameters must share one (working) dtype and device"
                )
            out.append(block)
        return out

    # -- layout: blocks, owners ------------------------------------------------------------------
    def _layout(self) -> tuple[list[list[torch.Tensor]], list[int], dict[int, int]]:
        params = [p for g in self.param_groups for p in g["params"]]
        key = tuple(id(p) for p in params)
        if key != self._layout_key:
            blocks = [[p] for p in params] if self._spec is None else self._spec
            costs = [float(self.history * sum(p.numel() for p in b)) for b in blocks]
            owner = assign_lpt(costs, self.world_size)
            self._blocks, self._owner, self._layout_key = blocks, owner, key
            self._block_of = {id(p): i for i, b in enumerate(blocks) for p in b}
            self._counters["blocks_owned"] = sum(o == self.rank for o in owner)
        return self._blocks, self._owner, self._block_of

    # -- the step ----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = call_closure(closure)
        found = self.grads_by_group()
        blocks, owner, block_of = self._layout()
        has_grad = {id(p) for _, _, ps, _ in found for p in ps}
        active = []
        for i, b in enumerate(blocks):
            n = sum(id(p) in has_grad for p in b)
            if n and n < len(b):
                raise RuntimeError(
                    f"MLBFGS: block {i} has gradients for {n} of its {len(b)} parameters; a block steps "
                    f"only when all its parameters have gradients (nothing was changed)"
                )
            if n:
                active.append(i)
        if self.comm is not None:
            found = average_gradients(self.comm, found)
        if self.accept_step(found) is None:
            return loss
        # working values: x, q = g + wd·x (float32 for fp16/bf16, real pairs for complex)
        x: dict[int, torch.Tensor] = {}
        q: dict[int, torch.Tensor] = {}
        where: list[tuple[dict[str, Any], list[torch.Tensor]]] = []
        for group, _, params, grads in found:
            xs = [_view(p) for p in params]
            xs = [v.float() if v.dtype in LOW_PRECISION else v for v in xs]
            gs = [_view(g).to(v.dtype) for g, v in zip(grads, xs)]
            wd = group["weight_decay"]
            qs = decay(gs, xs, wd) if wd != 0 else [g.clone() for g in gs]
            for p, xv, qv in zip(params, xs, qs):
                x[id(p)], q[id(p)] = xv, qv
                state = self.state[p]
                if not state:
                    state["step"] = 0
                state["step"] += 1
            where.append((group, params))
        mine = [i for i in active if owner[i] == self.rank]
        self._accumulate([p for i in mine for p in blocks[i]], x, q)
        for i in mine:
            head = self.state[blocks[i][0]]
            if head["step"] % self.update_freq == 0:
                self._curvature(blocks[i], q)
        directions = self._directions(blocks, active, owner, q)
        self._apply(where, directions, blocks, active, block_of, q, x)
        return loss

    def _accumulate(self, params: list[torch.Tensor], x: dict[int, Any], q: dict[int, Any]) -> None:
        """P̄ ← β_p·P̄ + θ ;  Ḡ ← β_g·Ḡ + q for the parameters of the blocks this rank owns."""
        if not params:
            return
        for p in params:
            state = self.state[p]
            if "param_avg" not in state:
                state["param_avg"] = torch.zeros_like(x[id(p)])
                state["grad_avg"] = torch.zeros_like(x[id(p)])
        pbar = [self.state[p]["param_avg"] for p in params]
        gbar = [self.state[p]["grad_avg"] for p in params]
        torch._foreach_mul_(pbar, self.betas[0])
        torch._foreach_add_(pbar, [x[id(p)] for p in params])
        torch._foreach_mul_(gbar, self.betas[1])
        torch._foreach_add_(gbar, [q[id(p)] for p in params])

    def _curvature(self, block: list[torch.Tensor], q: dict[int, Any]) -> None:
        """Every T steps: a new pair from the sums' differences (if a snapshot exists), new snapshot."""
        states = [self.state[p] for p in block]
        head = states[0]
        if "param_avg_prev" in head:
            s = _flat([st["param_avg"] - st["param_avg_prev"] for st in states])
            y = _flat([st["grad_avg"] - st["grad_avg_prev"] for st in states])
            self._push(head, s, y)
        for p, st in zip(block, states):
            st["param_avg_prev"] = st["param_avg"].clone()
            st["grad_avg_prev"] = st["grad_avg"].clone()
            st["grad_avg"].copy_(q[id(p)])

    def _push(self, head: dict[str, Any], s: torch.Tensor, y: torch.Tensor) -> None:
        beta_m = self.pair_momentum
        if "pair_s_last" in head:
            s = torch.lerp(s, head["pair_s_last"], beta_m)
            y = torch.lerp(y, head["pair_y_last"], beta_m)
        ss, yy = float(torch.dot(s, s)), float(torch.dot(y, y))
        if not (math.isfinite(ss) and math.isfinite(yy)) or ss == 0.0:
            self.count("pairs_skipped")
            return
        head["pair_s_last"], head["pair_y_last"] = s, y
        y, tau, phi = damp_pair(s, y, self.damping)
        sy = float(torch.dot(s, y))
        if not (math.isfinite(sy) and sy > 1e-10 * math.sqrt(ss) * float(torch.linalg.vector_norm(y))):
            self.count("pairs_skipped")
            return
        n = s.numel()
        old_s = head.get("history_s", s.new_zeros(0, n))[-(self.history - 1) :] if self.history > 1 else None
        old_y = head.get("history_y", s.new_zeros(0, n))[-(self.history - 1) :] if self.history > 1 else None
        old_r = head.get("history_rho", s.new_zeros(0))[-(self.history - 1) :] if self.history > 1 else None
        rho = s.new_tensor([1.0 / sy])
        head["history_s"] = s[None].clone() if old_s is None else torch.cat([old_s, s[None]])
        head["history_y"] = y[None].clone() if old_y is None else torch.cat([old_y, y[None]])
        head["history_rho"] = rho if old_r is None else torch.cat([old_r, rho])
        self.count("pairs_accepted")
        self.record("tau", tau)
        self.record("phi", phi)

    def _directions(
        self, blocks: list[list[torch.Tensor]], active: list[int], owner: list[int], q: dict[int, Any]
    ) -> list[torch.Tensor]:
        """d_b for every active block (this rank's computed, the others' all-gathered) and their
        FIFO lengths, as [d_b..., then a vector of lengths] when distributed."""
        results: list[torch.Tensor | None] = []
        lengths: list[int] = []
        for i in active:
            if owner[i] != self.rank:
                results.append(None)
                lengths.append(0)
                continue
            head = self.state[blocks[i][0]]
            qb = _flat([q[id(p)] for p in blocks[i]])
            m = head["history_s"].shape[0] if "history_s" in head else 0
            if m:
                s, y, rho = head["history_s"], head["history_y"], head["history_rho"]
                gamma = torch.dot(s[-1], y[-1]) / torch.dot(y[-1], y[-1])
                qb = two_loop(qb, s, y, rho, gamma)
            results.append(qb)
            lengths.append(m)
        self._lengths = lengths
        if self.comm is None or self.world_size == 1:
            return results  # type: ignore[return-value]
        first = [q[id(blocks[i][0])] for i in active]
        tagged = [
            None if r is None else torch.cat([r, r.new_tensor([float(m)])]) for r, m in zip(results, lengths)
        ]
        shapes = [(sum(q[id(p)].numel() for p in blocks[i]) + 1,) for i in active]
        dtypes = [f.dtype for f in first]
        device = first[0].device if first else torch.device("cpu")
        gathered = all_gather_owned(self.comm, tagged, [owner[i] for i in active], shapes, dtypes, device)
        self._lengths = [int(t[-1]) for t in gathered]
        return [t[:-1] for t in gathered]

    def _apply(
        self,
        where: list[tuple[dict[str, Any], list[torch.Tensor]]],
        directions: list[torch.Tensor],
        blocks: list[list[torch.Tensor]],
        active: list[int],
        block_of: dict[int, int],
        q: dict[int, Any],
        x: dict[int, Any],
    ) -> None:
        """Normalise (once a pair exists), split into parameters, momentum, θ ← θ − lr·buf."""
        d: dict[int, torch.Tensor] = {}
        unblocked = [id(p) for _, ps in where for p in ps if id(p) not in block_of]
        if any(self._lengths):
            sq = torch.zeros((), dtype=torch.float64, device=directions[0].device)
            for db in directions:
                sq = sq + torch.dot(db, db).double()
            for k in unblocked:
                qk = q[k].reshape(-1)
                sq = sq + torch.dot(qk, qk).double()
            norm = sq.sqrt()
            value = float(norm)
            self.record("direction_norm", value)
            self.record("history_length", max(self._lengths))
            if math.isfinite(value) and value > 0:
                for i, db in zip(active, directions):
                    for p, part in zip(blocks[i], db.split([q[id(p)].numel() for p in blocks[i]])):
                        d[id(p)] = part.view(q[id(p)].shape).div(norm.to(part.dtype))
                for k in unblocked:
                    d[k] = q[k].div(norm.to(q[k].dtype))
            else:
                self.count("direction_fallbacks")
                for i, db in zip(active, directions):
                    head = self.state[blocks[i][0]]
                    if "history_s" in head and not bool(torch.isfinite(db).all()):
                        for key in ("history_s", "history_y", "history_rho"):
                            del head[key]
        if not d:  # the SGD phase: d = q for every parameter
            d = q
        for group, params in where:
            mu, lr = group["momentum"], group["lr"]
            ds = [d[id(p)] for p in params]
            if mu != 0:
                bufs = []
                for p, dv in zip(params, ds):
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(dv)
                    bufs.append(state["momentum_buffer"])
                ds = heavy_ball_(bufs, ds, mu, nesterov=False)
            xs = [x[id(p)] for p in params]
            torch._foreach_add_(xs, ds, alpha=-lr)
            for p, xv in zip(params, xs):
                if p.dtype in LOW_PRECISION:
                    p.copy_(xv)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["scalopt"]["mlbfgs"] = {"rank": self.rank, "world_size": self.world_size}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        state = sd.pop("state", {})
        info = sd.get("scalopt", {}).get("mlbfgs", {"rank": 0, "world_size": 1})
        check_shard(info, self.rank, self.world_size, owner="MLBFGS")
        super().load_state_dict({**sd, "state": {}})
        saved_ids = chain.from_iterable(g["params"] for g in sd["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        id_map = dict(zip(saved_ids, params))
        for k, v in state.items():
            p = id_map[k]
            self.state[p] = {
                n: (t.to(device=p.device, copy=True) if isinstance(t, torch.Tensor) else t)
                for n, t in v.items()
            }
