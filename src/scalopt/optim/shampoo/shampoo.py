"""Shampoo at scale: blocked Kronecker-factored preconditioning with grafting, batched by shape.

For a parameter W with gradient G, step t (1-based), a block G_b of order k (a matrix: k = 2):

    G   ← G + wd·W                                 if weight_decay and not decoupled_weight_decay
    H_i ← β2·H_i + w·G_(i) G_(i)ᵀ                   per factor (L, R of a matrix), every step, raw G;
                                                     w = 1−β2 (β2 < 1) or 1 (β2 = 1: AdaGrad sums)
    root step (t = s, or t > s and t mod f = 0):
        Ĥ_i = H_i/(1−β2^t) (β2 < 1, else H_i);  H_i^inv ← (Ĥ_i + ε·I)^(−1/(2k))
    M   ← β1·M + (1−β1)·G ;  Ĝ = M/(1−β1^t)          (β1 = 0: Ĝ = G)
    P_sh = Ĝ_b ×_1 H_1^inv … ×_k H_k^inv              (a matrix: L^inv Ĝ_b R^inv)
    P_b  = (‖P_gr,b‖_F/(‖P_sh,b‖_F + 1e-16))·P_sh     (graft norm per block; grafting=None: P_sh;
                                                      P_gr alone until a block has all its roots)
    P   ← P + wd·W                                  if weight_decay and decoupled_weight_decay
    B   ← μ·B + P ;  P ← P + μ·B (nesterov) or B     if momentum μ > 0
    W   ← W − lr·P

Symbols and arguments: β1, β2 = ``betas`` (EMA of the gradient; of the factor statistics, 1.0 for
sums, unless ``shampoo_beta`` gives them their own β); ε = ``eps`` (ridge of the roots; None: 1e-12);
wd = ``weight_decay``; μ = ``momentum``; f =
``precondition_frequency``; s = ``start_preconditioning_step`` (None: f); the graft P_gr and its
state (``grafting`` ∈ adam, adagrad, rmsprop, sgd, None; β_g = ``grafting_beta2``, ε_g =
``grafting_eps``) are in ``grafting.py``. With preconditioning never started
(``start_preconditioning_step=math.inf``) the graft alone steps: grafting="adam" is torch.optim.Adam
with betas=(β1, β_g), eps=ε_g (AdamW with decoupled decay).

Blocking (``blocking.py``): size-1 dims are squeezed, neighbouring dims merged while their product
stays ≤ ``block_size`` (``merge_dims``), dims > ``block_size`` split into blocks with their own
factors. ``block_size`` is Meta's ``max_preconditioner_dim``. A parameter with a dim > ``skip_dim``
(an embedding table), a 0-D one, and unless ``precondition_1d`` a vector, take the graft alone;
with ``precondition_1d`` a vector gets P = (L̂ + ε·I)^(−1/2) g.

FSDP2 (``fully_shard``; ``sharded.py``): each rank blocks and preconditions its local dim-0 shard
of W (rows r·⌈d0/N⌉ … of N ranks) with rank-local statistics and roots; no parameter is gathered.
The preconditioner is then block-diagonal over the shards too: a block never spans two ranks' rows,
so it equals single-process Shampoo only where the shards fit the blocking (d0/N a multiple of
``block_size`` or ≤ it); otherwise it is a finer blocking. Its state reloads only at that N.

Roots (``refresh.py``, ``placement.py``, ``scalopt.linalg``): ``root_method`` "eigh" or "newton" in
``root_dtype`` with a float64 retry; a failed root keeps the previous one (identity at first) and warns;
more than 3 consecutive failing root steps raise. ``root_device`` "inline" (CPU default), "host" (host
threads; ``async_roots=True``) or "device" (side CUDA stream; CUDA default), installed ``root_delay`` later.
Lean steps: H_i updated at steps 1, 1+k, … (k = ``statistics_frequency``, 1; Ĥ = H_i/(1−β2^updates));
``precondition_precision`` "float32" (default, unmeasured on GPUs), "tf32" or "bfloat16" for P_sh only.

Failed steps (``guard.py``): finite gradients whose squares overflow the statistics or the graft
accumulator make the step fail as a whole: every buffer, step and counter stays as before, then
``nonfinite="raise"`` raises ``FloatingPointError`` and ``"skip"`` counts a skipped step. The cost:
a host-side bound decides when a step could overflow; only such steps copy the state of their
parameters first and check it. (Root failures keep their own policy above: a step that raises
``RootFailureError`` has counted its failures.)

``eigenvalue_correction=True`` is SOAP (Vyas et al., ICLR 2025, arXiv 2409.11321): Adam in the
eigenbasis of each block's factors instead of their roots, on the same blocks, statistics, sharding
and refresh machinery; its rule, defaults and deviations are in ``soap.py``.

``torch.compile(opt.step)``: the host-side part of a step (gradient check, plans, the overflow
bound, the root schedule, timing) runs untraced (``torch._dynamo.disable``); root steps, install
steps, transactions and distributed steps run there eagerly to the end, and the steps between root
steps trace accumulate → directions → apply, reading each unit's step as a 0-dim float64 tensor.
After warm-up: no recompiles and no new graphs (the untraced call is a graph break every step).

Speed: the block plan is made once; same-shaped blocks of a param group are stacked so statistics
and preconditioning are ``baddbmm``/``bmm`` per shape, the graft-only parameters' element-wise state
is one flat buffer per (step, dtype), element-wise state uses ``torch._foreach_*`` with the bias
corrections folded into scalars (Ĝ and P_gr are not materialized where a block has its roots), and
roots are batched by size across the whole optimizer. Per step Python work is O(distinct shapes)
plus O(blocks) view bookkeeping.

Defaults: lr 1e-3 (Adam-scale, drop-in for AdamW; Shi et al. use 1e-2), betas (0.9, 0.999)
(AlgoPerf), eps 1e-12 (Shi et al.), f 20, s = f, block_size 1024, skip_dim 4096, Adam graft with
β_g 0.999, ε_g 1e-8, eigh roots in float32 with float64 retry (newton for root_device="device").

Deviations (scalopt decisions): the exponent is always −1/(2k) (no exponent override); momentum is
applied once, to the final grafted direction (Shi et al.'s ordering, not the authors' two-buffer
"post" placement); merging scans from the last dim; coupled Newton adds the ridge
max(ε, 1e-6·λ_max); structural options (block_size, skip_dim, merge_dims, precondition_1d) are
fixed at a group's first step.

State (``optimizer.state[p]``): "step", and per block b "block{b}.factor{i}", "block{b}.root{i}",
"block{b}.exp_avg" (M), "block{b}.exp_avg_sq" (V), "block{b}.momentum_buffer" (B), flags; a
graft-only parameter keeps "exp_avg", "exp_avg_sq", "momentum_buffer" of its own shape. Pending
roots are saved with their install step; resuming mid-period continues bitwise.

References: V. Gupta, T. Koren, Y. Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization",
ICML 2018, arXiv 1802.09568; R. Anil, V. Gupta, T. Koren, K. Regan, Y. Singer, "Scalable Second
Order Optimization for Deep Learning", arXiv 2002.09018; H.-J. M. Shi et al., "A Distributed
Data-Parallel PyTorch Implementation of the Distributed Shampoo Optimizer for Training Neural
Networks At-Scale", arXiv 2309.06497 (the PyTorch ordering followed here); N. Agarwal, R. Anil,
E. Hazan, T. Koren, C. Zhang, "Disentangling Adaptive Gradient Methods from Learning Rates",
arXiv 2002.11803 (grafting).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import chain
from typing import Any

import torch

from scalopt.core.base import ScaloptOptimizer, call_closure
from scalopt.core.comm import check_comm
from scalopt.core.sharded import is_dtensor
from scalopt.core.validate import (
    check_betas,
    check_bool,
    check_choice,
    check_int,
    check_interval,
    check_lr,
    check_nonnegative,
)
from scalopt.optim.shampoo import sharded
from scalopt.optim.shampoo.distributed import DistributedStep, check_shard
from scalopt.optim.shampoo.grafting import GRAFTINGS
from scalopt.optim.shampoo.guard import Snapshot, StepGuard, effective_norm, first_nonfinite_state, measure
from scalopt.optim.shampoo.placement import resolve_placement
from scalopt.optim.shampoo.plan import GroupPlan, factor_beta
from scalopt.optim.shampoo.preconditioner import ShapeGroup, lean
from scalopt.optim.shampoo.refresh import RootRefresher, check_start, start_step
from scalopt.optim.shampoo.soap import ADAM_EPS, BasisRefresher, check_options


class Shampoo(ScaloptOptimizer):
    hyperparameters = {
        "lr": check_lr,
        "betas": lambda name, v: check_betas(name, v, high_open=(True, False)),
        "shampoo_beta": lambda name, v: v if v is None else check_interval(name, v, 0.0, 1.0),
        "eps": check_nonnegative,
        "weight_decay": check_nonnegative,
        "decoupled_weight_decay": check_bool,
        "momentum": lambda name, v: check_interval(name, v, 0.0, 1.0),
        "nesterov": check_bool,
        "grafting": lambda name, v: check_choice(name, v, GRAFTINGS),
        "grafting_beta2": lambda name, v: check_interval(name, v, 0.0, 1.0),
        "grafting_eps": check_nonnegative,
        "block_size": lambda name, v: check_int(name, v, minimum=1),
        "skip_dim": lambda name, v: check_int(name, v, minimum=1),
        "merge_dims": check_bool,
        "precondition_1d": check_bool,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float | None = None,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        momentum: float = 0.0,
        nesterov: bool = False,
        precondition_frequency: int = 20,
        start_preconditioning_step: int | float | None = None,
        block_size: int = 1024,
        skip_dim: int = 4096,
        merge_dims: bool = True,
        precondition_1d: bool = False,
        grafting: str | None = "adam",
        grafting_beta2: float = 0.999,
        grafting_eps: float = 1e-8,
        root_method: str | None = None,
        root_dtype: torch.dtype = torch.float32,
        async_roots: bool = False,
        root_device: str | None = None,
        root_delay: int | None = None,
        statistics_frequency: int = 1,
        precondition_precision: str = "float32",
        comm: Any = None,
        nonfinite: str = "raise",
        shampoo_beta: float | None = None,
        eigenvalue_correction: bool = False,
    ) -> None:
        self.eigenvalue_correction = check_bool("eigenvalue_correction", eigenvalue_correction)
        if self.eigenvalue_correction:
            check_options(
                grafting=grafting, start=start_preconditioning_step, root_method=root_method or "eigh"
            )
        self.precondition_frequency = check_int("precondition_frequency", precondition_frequency, minimum=1)
        self.start_preconditioning_step = check_start(
            "start_preconditioning_step", start_preconditioning_step
        )
        self.statistics_frequency, self.precondition_precision = lean(
            statistics_frequency, precondition_precision
        )
        self.root_dtype = check_choice("root_dtype", root_dtype, (torch.float32, torch.float64))
        self.async_roots = check_bool("async_roots", async_roots)
        self.comm = None if comm is None else check_comm(comm)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=(ADAM_EPS if self.eigenvalue_correction else 1e-12) if eps is None else eps,
            shampoo_beta=shampoo_beta,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            grafting=grafting,
            grafting_beta2=grafting_beta2,
            grafting_eps=grafting_eps,
            block_size=block_size,
            skip_dim=skip_dim,
            merge_dims=merge_dims,
            precondition_1d=precondition_1d,
        )
        super().__init__(params, defaults, nonfinite=nonfinite)
        for name in ("root_failures", "root_consecutive_failures", "root_seconds", "root_wait_seconds"):
            self._counters[name] = 0
        self._plans: dict[int, GroupPlan] = {}
        self.placement = resolve_placement(root_device, root_delay, root_method, self)
        self.root_device, self.root_delay, self.root_method = self.placement
        self._roots = (BasisRefresher if self.eigenvalue_correction else RootRefresher)(
            frequency=self.precondition_frequency,
            start=start_step(self.start_preconditioning_step, self.precondition_frequency),
            placement=self.placement,
            dtype=self.root_dtype,
            count=self.count,
            counters=lambda: self._counters,
        )
        self._dist = DistributedStep(self.comm) if self.comm is not None else None
        self._guard = StepGuard()
        self._fresh: set[int] = set()

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        if group.get("nesterov") and not group.get("momentum", 0) > 0:
            raise ValueError(f"nesterov=True needs momentum > 0, got momentum={group.get('momentum')!r}")
        if self.eigenvalue_correction:
            check_options(grafting=group["grafting"], start=None, root_method="eigh", betas=group["betas"])

    @property
    def rank(self) -> int:
        return 0 if self.comm is None else self.comm.rank

    @property
    def world_size(self) -> int:
        return 1 if self.comm is None else self.comm.world_size

    # -- the step ----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = call_closure(closure)
        if torch.compiler.is_compiling():
            work = self._untraced_prologue()
            if work is not None:
                self._traced_phases(work)
            return loss
        self._step()
        return loss

    @torch._dynamo.disable
    def _untraced_prologue(self) -> list[Any] | None:
        """The part of a ``torch.compile``-traced step that reads host values (checks, plans, the
        overflow bound, the root schedule): run eagerly. It runs root steps, transactions and
        distributed steps to the end itself (None); an in-place step between root steps is begun
        (steps counted, unit step tensors set) and its work handed to ``_traced_phases``."""
        return self._step(traceable=True)

    def _traced_phases(self, work: list[Any]) -> None:
        """accumulate → directions → apply of a step between root steps (what torch.compile traces)."""
        accumulated = [plan.accumulate(grads) for plan, grads in work]
        for (plan, _), acc in zip(work, accumulated):
            plan.apply(plan.item_sources(plan.directions(acc)), plan.group["lr"])

    def _step(self, traceable: bool = False) -> list[Any] | None:
        found = self.grads_by_group()
        if self._reduce.active and self._dist is not None:
            raise ValueError(
                "Shampoo(comm=...) averages gradients itself; parameters sharded by FSDP2 already have "
                "reduced gradients: drop comm= (each rank then preconditions its own shards)"
            )
        if self._dist is not None:
            found = self._dist.average(found)
        before = (dict(self._counters), dict(self._last))
        grad_norm = self.accept_step(found)
        if grad_norm is None:
            return None
        self._fresh = set()  # parameters without state until the plans made now (see _plan)
        try:
            work = [(self._plan(group, idx, params), grads) for group, idx, params, grads in found]
        except BaseException:
            self._counters, self._last = before
            raise
        groups = [plan.group for plan, _ in work]
        params = [p for plan, _ in work for p in plan.params]
        g = effective_norm(groups, [plan.params for plan, _ in work], float(grad_norm))
        bound = self._guard.next_bound(groups, g)
        if self._reduce.active:  # FSDP2 shards: every rank takes the same path (measure is a collective)
            bound = float(self._reduce.max(torch.tensor([bound], dtype=torch.float64))[0])
        if bound <= StepGuard.limit(params):  # no entry can overflow: in place, nothing to check
            self._guard.bound = bound
            if traceable and self._between_roots(work):
                for plan, _ in work:
                    plan.begin(step_tensors=True)
                self._record_staleness([sg for plan, _ in work for sg in plan.shape_groups])
                return work
            self._run(work, None)
            return None
        # a transaction: copy what the step may change, put it back if the state overflows
        for plan, _ in work:
            for sg in plan.shape_groups:
                sg.write_pending()
        snapshot = Snapshot.take(self, params, self._fresh, *before)
        measured = self._run(work, params)
        assert measured is not None
        if math.isfinite(measured[1]):
            self._guard.bound = measured[0]
        else:
            where = first_nonfinite_state(self, found)
            self._rollback(snapshot, work)
            if self.nonfinite == "raise":
                raise FloatingPointError(
                    f"Shampoo: non-finite statistics in {where}: the gradients were finite but their "
                    f"squares overflowed; nothing was changed: lower the learning rate, clip gradients, "
                    f"or pass nonfinite='skip' to skip such steps"
                )
            self._counters["skipped_steps"] += 1
        return None

    def _between_roots(self, work: list[Any]) -> bool:
        """Whether the coming step is neither a root step nor an install step of any shape group."""
        if self._dist is not None:
            return False
        for plan, _ in work:
            for sg in plan.shape_groups:
                t = sg.t + 1
                if self._roots.due(t) or (sg.pending and sg.pending[0].install_step <= t):
                    return False
        return True

    def _run(self, work: list[Any], check: list[torch.Tensor] | None) -> tuple[float, float] | None:
        """The phases of one step; with ``check``, the state of those parameters is measured right
        after the accumulation and the step stops there if any of it is not finite."""
        for plan, _ in work:
            plan.begin()
        shape_groups = [sg for plan, _ in work for sg in plan.shape_groups]
        self._roots.install_due(shape_groups)  # async roots whose install step has come

        # accumulate: statistics, graft accumulator, filtered gradient
        accumulated = [plan.accumulate(grads) for plan, grads in work]
        measured = None
        if check is not None:
            # B unknown (after load_state_dict): measure the state of every parameter, not only this step's
            known = self._guard.bound is not None
            states = [self.state[self.state_key(p)] for p in check] if known else self.state.values()
            measured = measure(list(states), self.comm, self._reduce)
            if not math.isfinite(measured[1]):
                return measured
        # refresh roots
        self._roots.refresh(
            [
                (sg, factor_beta(plan.group), plan.group["eps"])
                for plan, _ in work
                for sg in plan.shape_groups
                if self._roots.due(sg.t)
            ]
        )
        # precondition → graft → decoupled decay → momentum
        directions = [plan.directions(acc) for (plan, _), acc in zip(work, accumulated)]
        # apply (after sharing the directions across ranks)
        for (plan, _), d in zip(work, directions):
            sources = plan.item_sources(d)
            if self._dist is not None:
                sources = self._dist.share(plan.layout, sources)
            plan.apply(sources, plan.group["lr"])
        self._record_staleness(shape_groups)
        return measured

    def _rollback(self, snapshot: Snapshot, work: list[Any]) -> None:
        """Put back the state the step started from; the plans are rebuilt from it at the next step."""
        snapshot.restore(self)
        for plan, _ in work:
            self._plans.pop(id(plan.group), None)

    def _plan(self, group: dict[str, Any], indices: list[int], params: list[torch.Tensor]) -> GroupPlan:
        plan = self._plans.get(id(group))
        if (
            plan is not None
            and plan.group is group
            and plan.signature == GroupPlan.signature_of(group, params)
        ):
            return plan
        if plan is not None and plan.group is group:
            changed = plan.signature.structure.changed(group)
            if changed:
                raise ValueError(f"{', '.join(changed)} cannot change after a param group's first step")
            if self._dist is not None:
                raise RuntimeError(
                    "Shampoo with comm= needs the same parameters to have gradients at every step "
                    "(blocks are assigned to ranks once); give unused parameters zero gradients"
                )
            plan.clear_views(keep=set(map(id, params)))
        complex_ = [indices[i] for i, p in enumerate(params) if p.is_complex()]
        if complex_:
            raise ValueError(
                f"Shampoo does not support complex parameters ({self.param_name(group, complex_[0])}); "
                f"optimize torch.view_as_real of it instead"
            )
        self._fresh.update(id(p) for p in params if not self.state.get(self.state_key(p)))
        plan = GroupPlan(
            group,
            params,
            lambda p: self.state[self.state_key(p)],
            lambda pos: self.param_name(group, indices[pos]),
            rank=self.rank,
            world_size=self.world_size,
            eigenvalue_correction=self.eigenvalue_correction,
            stats_every=self.statistics_frequency,
            precision=self.precondition_precision,
        )
        self._plans[id(group)] = plan
        self._count_blocks()
        return plan

    def _count_blocks(self) -> None:
        per_rank = [0] * self.world_size
        for plan in self._plans.values():
            for r, n in enumerate(plan.blocks_per_rank):
                per_rank[r] += n
        self._counters["blocks"] = per_rank[self.rank]
        if self.world_size > 1:
            for r, n in enumerate(per_rank):
                self._counters[f"blocks_rank{r}"] = n

    def _record_staleness(self, shape_groups: list[ShapeGroup]) -> None:
        ages = [sg.t - sg.oldest_root_step for sg in shape_groups if sg.any_rooted]
        if ages:
            self.record("root_staleness", max(ages))

    # -- state -------------------------------------------------------------------------------------
    def _shape_groups(self) -> list[ShapeGroup]:
        return [sg for plan in self._plans.values() for sg in plan.shape_groups]

    def state_dict(self) -> dict[str, Any]:
        for sg in self._shape_groups():
            sg.write_pending()  # waits for roots still being computed
        sd = super().state_dict()
        sd["state"] = {k: dict(v) for k, v in sd["state"].items()}
        sd["scalopt"]["shampoo"] = {"format": 1, "rank": self.rank, "world_size": self.world_size}
        if self._dist is not None:
            owners = {
                index: list(plan.owner)
                for index, group in enumerate(self.param_groups)
                if (plan := self._plans.get(id(group))) is not None
            }
            sd["scalopt"]["shampoo"]["manifest"] = self._dist.manifest(owners)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        state = sd.pop("state", {})
        info = sd.get("scalopt", {}).get("shampoo", {"rank": 0, "world_size": 1})
        check_shard(info, self.rank, self.world_size)
        self._roots.wait_all(self._shape_groups())
        super().load_state_dict({**sd, "state": {}})
        saved_ids = chain.from_iterable(g["params"] for g in sd["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        id_map = dict(zip(saved_ids, params))
        for k, v in state.items():
            p = id_map[k]
            if is_dtensor(p):
                v = sharded.import_state(p, v, f"parameter {k} (shape {tuple(p.shape)})")
            self.state[p] = {
                n: (x.to(device=p.device, copy=True) if isinstance(x, torch.Tensor) else x)
                for n, x in v.items()
            }
        self._plans = {}
        self._guard.bound = None  # measured at the next step

    def export_shard_state(self, p: torch.Tensor, state: dict[str, Any]) -> dict[str, Any]:
        return sharded.export_state(p, state)

    def close(self) -> None:
        """Stop the host root workers; pending roots are waited for first."""
        self._roots.wait_all(self._shape_groups())
        self._roots.close()

    def __del__(self) -> None:
        roots = self.__dict__.get("_roots")
        if roots is not None and roots.executor is not None:
            roots.executor.shutdown(wait=False)
