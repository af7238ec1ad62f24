"""One param group's Shampoo plan: its units, and the per-step phases on them.

A plan is made once per param group (at its first step, again only when the set of parameters with
gradients or a structural option changes): every parameter is planned (``blocking.plan_param``),
its blocks ("items", with the graft-only parameters) are assigned to ranks (one rank without a
Comm), and the items of this rank become units: same-shaped blocks with the same step stacked in a
``ShapeGroup``, graft-only parameters with the same step and dtype flattened into one ``DiagGroup``.
Per step the work is O(units) torch calls:

    accumulate  gather G (one stack per shape group, one flat tensor per diag group), L2 decay,
                factor statistics, graft accumulator, M ← β1·M + (1−β1)·G (Ĝ = c1·M, c1 = 1/(1−β1^t),
                is never materialized: c1 is folded into the scalars below)
    directions  P_gr (graft), P_sh (Shampoo) rescaled to ‖P_gr‖ per block (P_gr where no root yet),
                decoupled decay P ← P + wd·W, momentum B ← μ·B + P; P ← P + μ·B (nesterov) or B
    apply       W ← W − lr·P, block by block into the parameters (one foreach call)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch

from scalopt.optim.shampoo import grafting, soap
from scalopt.optim.shampoo.blocking import Block, ParamPlan, block_cost, plan_param
from scalopt.optim.shampoo.preconditioner import DiagGroup, Entry, ShapeGroup, step_of
from scalopt.optim.sharding import assign_lpt
from scalopt.transforms.momentum import heavy_ball_
from scalopt.transforms.weight_decay import decay

Unit = ShapeGroup | DiagGroup


@dataclass(frozen=True)
class Structure:
    """The options that shape a group's plan; fixed at the group's first step."""

    block_size: int
    skip_dim: int
    merge_dims: bool
    precondition_1d: bool

    @classmethod
    def of(cls, group: dict[str, Any]) -> Structure:
        return cls(**{k: group[k] for k in STRUCTURAL})

    def changed(self, group: dict[str, Any]) -> list[str]:
        """The names of the options whose value in ``group`` differs from this structure."""
        return [k for k in STRUCTURAL if group[k] != getattr(self, k)]


STRUCTURAL = tuple(f.name for f in fields(Structure))


@dataclass(frozen=True)
class Signature:
    """What a plan was made for: the parameters with gradients (by identity) and the structure."""

    param_ids: tuple[int, ...]
    structure: Structure


class Item(NamedTuple):
    """A unit of work on one rank: a block of a parameter, or a whole graft-only parameter."""

    pos: int  # the parameter's position in the group plan
    block: Block | None  # None: the whole graft-only parameter


@dataclass(frozen=True)
class ItemLayout:
    """What sharing directions across ranks needs: each item's owner, shape and dtype."""

    owner: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    device: torch.device


@dataclass(frozen=True)
class Accumulated:
    """The accumulate phase's output, per unit: what the directions phase reads.

    ``m`` is M (β1 > 0) or G itself, with Ĝ = c1·M; ``v`` the graft accumulators (empty when the
    graft has none); ``w`` the blocks of the parameters (None without weight decay). Read only.
    """

    m: list[torch.Tensor]
    c1: list[float]
    v: list[torch.Tensor]
    w: list[torch.Tensor] | None


def block_of(t: torch.Tensor, merged: tuple[int, ...], block: Block | None) -> torch.Tensor:
    """The block of a parameter-shaped tensor (a view when the tensor's layout allows)."""
    if block is None:
        return t
    if block.slices is None:
        return t.reshape(block.shape)
    return t.reshape(merged)[block.slices]


class GroupPlan:
    def __init__(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        states: Callable[[torch.Tensor], dict[str, Any]],
        describe: Callable[[int], str],
        *,
        rank: int = 0,
        world_size: int = 1,
        eigenvalue_correction: bool = False,
        stats_every: int = 1,
        precision: str = "float32",
    ) -> None:
        self.group, self.params = group, params
        self.soap = eigenvalue_correction  # SOAP: Adam in the factors' eigenbases (soap.py)
        self.stats_every, self.precision = stats_every, precision
        self.signature = self.signature_of(group, params)
        structure = asdict(self.signature.structure)
        self.plans: list[ParamPlan] = [plan_param(tuple(p.shape), **structure) for p in params]
        self.items: list[Item] = []
        costs = []
        for pos, (p, pp) in enumerate(zip(params, self.plans)):
            for block in pp.blocks or (None,):
                self.items.append(Item(pos, block))
                numel = p.numel() if block is None else block_numel(block)
                costs.append(block_cost(block.shape if block else (), numel, block is not None))
        self.owner = assign_lpt(costs, world_size) if world_size > 1 else [0] * len(self.items)
        self.layout = ItemLayout(
            owner=tuple(self.owner),
            shapes=tuple(tuple(params[pos].shape) if b is None else b.shape for pos, b in self.items),
            dtypes=tuple(params[pos].dtype for pos, _ in self.items),
            device=params[0].device,
        )
        self.blocks_per_rank = [0] * world_size
        for (_, block), r in zip(self.items, self.owner):
            self.blocks_per_rank[r] += block is not None
        self.rank, self.world_size = rank, world_size
        self._build_units(states, describe)

    @staticmethod
    def signature_of(group: dict[str, Any], params: list[torch.Tensor]) -> Signature:
        return Signature(tuple(map(id, params)), Structure.of(group))

    def _build_units(
        self, states: Callable[[torch.Tensor], dict[str, Any]], describe: Callable[[int], str]
    ) -> None:
        buckets: dict[tuple[Any, ...], list[tuple[int, Entry]]] = {}
        diag: dict[tuple[Any, ...], list[tuple[int, tuple[int, torch.Tensor, dict[str, Any]]]]] = {}
        for index, ((pos, block), r) in enumerate(zip(self.items, self.owner)):
            if r != self.rank:
                continue
            p, state = self.params[pos], states(self.params[pos])
            if block is None:
                key = (int(state.get("step", 0)), p.dtype, p.device)
                diag.setdefault(key, []).append((index, (pos, p, state)))
                continue
            nblocks = len(self.plans[pos].blocks)

            def text(pos: int = pos, b: int = block.index, nb: int = nblocks) -> str:
                return f"{describe(pos)}, block {b} of {nb}"

            entry = Entry(pos, block, self.plans[pos].merged, state, text)
            key = (block.shape, int(state.get("step", 0)), p.dtype, p.device)
            buckets.setdefault(key, []).append((index, entry))
        self.shape_groups = [
            ShapeGroup(shape, [e for _, e in pairs], t, dtype, device, self.stats_every)
            for (shape, t, dtype, device), pairs in buckets.items()
        ]
        self.diag = [DiagGroup([e for _, e in pairs], t, dtype) for (t, dtype, _), pairs in diag.items()]
        self.param_states: dict[int, tuple[dict[str, Any], Unit]] = {}
        for dg in self.diag:
            for pos, state in zip(dg.positions, dg.states):
                self.param_states[pos] = (state, dg)
        for sg in self.shape_groups:
            for e in sg.entries:
                self.param_states.setdefault(e.pos, (e.state, sg))
        self.units: list[Unit] = [*self.shape_groups, *self.diag]
        self.unit_items = [[i for i, _ in pairs] for pairs in (*buckets.values(), *diag.values())]

    # -- phases ------------------------------------------------------------------------------------
    def begin(self, step_tensors: bool = False) -> None:
        """Count the step. ``step_tensors``: also hold each unit's t as a 0-dim tensor, which a step
        traced by ``torch.compile`` reads instead of the int (no guard on a per-step number)."""
        for u in self.units:
            u.t += 1
            u.t_tensor = torch.tensor(float(u.t), dtype=torch.float64) if step_tensors else None
        for state, unit in self.param_states.values():
            state["step"] = unit.t

    def gather(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per unit: the stack of its blocks of ``tensors`` (flat for a diag group); read only."""
        out = [
            torch.stack([block_of(tensors[e.pos], e.merged, e.block) for e in sg.entries])
            if sg.n > 1
            else block_of(tensors[sg.entries[0].pos], sg.entries[0].merged, sg.entries[0].block).unsqueeze(0)
            for sg in self.shape_groups
        ]
        out += [dg.gather(tensors) for dg in self.diag]
        return out

    def accumulate(self, grads: list[torch.Tensor]) -> Accumulated:
        if not self.units:  # a rank that owns nothing of this group
            return Accumulated(m=[], c1=[], v=[], w=None)
        group = self.group
        beta1 = group["betas"][0]
        wd = group["weight_decay"]
        g = self.gather(grads)
        w = self.gather(self.params) if wd != 0 else None
        if w is not None and not group["decoupled_weight_decay"]:
            g = torch._foreach_add(g, w, alpha=wd)
        for sg, gs in zip(self.shape_groups, g):
            sg.accumulate(gs, factor_beta(group))
        if self.soap:
            m, c1, v = soap.accumulate(self.shape_groups, self.diag, g, group)
            return Accumulated(m=m, c1=c1, v=v, w=w)
        v: list[torch.Tensor] = []
        if grafting.needs_accumulator(group["grafting"]):
            v = [u.buffer("exp_avg_sq") for u in self.units]
            grafting.update_accumulator(v, g, group["grafting"], group["grafting_beta2"])
        m, c1 = g, [1.0] * len(self.units)
        if beta1 > 0:
            m = [u.buffer("exp_avg") for u in self.units]
            torch._foreach_lerp_(m, g, 1.0 - beta1)
            c1 = [1.0 / (1.0 - beta1 ** step_of(u)) for u in self.units]
        return Accumulated(m=m, c1=c1, v=v, w=w)

    def directions(self, work: Accumulated) -> list[torch.Tensor]:
        if not self.units:
            return []
        group = self.group
        if self.soap:
            out = soap.directions(self.shape_groups, self.diag, work.m, work.c1, work.v, group)
        else:
            out = self._shampoo_directions(work)
        wd, mu = group["weight_decay"], group["momentum"]
        if wd != 0 and group["decoupled_weight_decay"]:
            out = decay(out, work.w, wd)
        if mu != 0:
            out = heavy_ball_([u.buffer("momentum_buffer") for u in self.units], out, mu, group["nesterov"])
        return out

    def _shampoo_directions(self, work: Accumulated) -> list[torch.Tensor]:
        """P per unit: the grafted Shampoo direction (the graft alone where no root yet)."""
        group = self.group
        graft, m, c1 = group["grafting"], work.m, work.c1
        bc2 = [1.0 - group["grafting_beta2"] ** step_of(u) for u in self.units] if graft == "adam" else []
        q, scale = grafting.direction(m, work.v, graft, group["grafting_eps"], c1, bc2)
        p: list[torch.Tensor | None] = [None] * len(self.units)
        for k, sg in enumerate(self.shape_groups):
            if not sg.any_rooted:
                continue
            p_sh = sg.precondition(m[k], self.precision)  # P_sh of Ĝ is c1·p_sh
            if graft is not None:
                p_sh = grafting.match_block_norms(p_sh, q[k], c1[k], scale[k])
            elif not is_one(c1[k]):
                p_sh = p_sh.mul_(c1[k])
            if not sg.all_rooted:
                p_sh = torch.where(sg.mask, p_sh, (q[k] * scale[k]).to(p_sh.dtype))
            p[k] = p_sh.to(sg.dtype)
        # P_gr = scale·Q where it is the direction (graft-only units, blocks without roots yet)
        rest = [k for k in range(len(p)) if p[k] is None and not is_one(scale[k])]
        if rest:
            for k, d in zip(rest, torch._foreach_mul([q[k] for k in rest], [scale[k] for k in rest])):
                p[k] = d
        return [q[k] if d is None else d for k, d in enumerate(p)]  # q may alias M or G: read only

    def item_sources(self, directions: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """The direction of every item this rank owns, in item order (None for the others)."""
        out: list[torch.Tensor | None] = [None] * len(self.items)
        units: list[Unit] = self.units
        for unit, items, d in zip(units, self.unit_items, directions):
            parts = d.unbind(0) if isinstance(unit, ShapeGroup) else unit.split(d)
            for i, part in zip(items, parts):
                out[i] = part
        return out

    def apply(self, sources: list[torch.Tensor], lr: float) -> None:
        """W ← W − lr·P for every item (``sources`` in item order)."""
        dsts, srcs = [], []
        assembled: dict[int, torch.Tensor] = {}
        for (pos, block), src in zip(self.items, sources):
            param = self.params[pos]
            if block is None or block.slices is None:
                dsts.append(param)
                srcs.append(src.reshape(param.shape))
            elif param.is_contiguous():
                dsts.append(param.view(self.plans[pos].merged)[block.slices])
                srcs.append(src)
            else:  # a non-contiguous parameter cut into blocks: assemble its update first
                full = assembled.get(pos)
                if full is None:
                    full = assembled[pos] = torch.empty(
                        self.plans[pos].merged, dtype=src.dtype, device=src.device
                    )
                    dsts.append(param)
                    srcs.append(full.view(param.shape))
                full[block.slices] = src
        torch._foreach_add_(dsts, srcs, alpha=-lr)

    def clear_views(self, keep: set[int]) -> None:
        """Detach the per-parameter state of parameters leaving this plan from the shared buffers."""
        for sg in self.shape_groups:
            sg.write_pending()
        for pos, (state, _) in self.param_states.items():
            if id(self.params[pos]) not in keep:
                for k, v in list(state.items()):
                    if isinstance(v, torch.Tensor):
                        state[k] = v.clone()


def factor_beta(group: dict[str, Any]) -> float:
    """The β of the factor statistics: ``shampoo_beta``, or β2 = ``betas[1]`` when it is None."""
    beta = group.get("shampoo_beta")
    return group["betas"][1] if beta is None else beta


def is_one(x: float | torch.Tensor) -> bool:
    """x == 1 known on the host (a tensor factor, from a traced step, is always applied)."""
    return not isinstance(x, torch.Tensor) and x == 1.0


def block_numel(block: Block) -> int:
    n = 1
    for d in block.shape:
        n *= d
    return n
