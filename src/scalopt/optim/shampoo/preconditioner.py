"""Shampoo's state per shape group: same-shaped blocks stacked, so one batched call serves them all.

For a group of n blocks of shape (d_1, …, d_k) (k = the order), with G the stack of their gradients
(n, d_1, …, d_k), β2 = ``betas[1]`` and w = 1−β2 if β2 < 1 else 1 (AdaGrad-style sums):

    accumulate:   H_i ← β2·H_i + w·G_(i) G_(i)ᵀ         H_i: (n, d_i, d_i), G_(i) the mode-i unfolding
    precondition: P_sh = Ĝ ×_1 H_1^inv ×_2 … ×_k H_k^inv  (a matrix: L^inv Ĝ R^inv)

Both are ``torch.baddbmm`` / ``torch.bmm`` calls on the stack: the mode products contract the first
dim and rotate it to the end, so after k products the dims are back in order and no permute copies
are needed. The statistics and roots are float32 (float64 for float64 parameters), the element-wise
state (filtered gradient, graft accumulator, momentum) is in the parameter's dtype.

Every tensor of the stacks is also visible per parameter: ``optimizer.state[p]`` holds views
``"block{b}.factor{i}"``, ``"block{b}.root{i}"``, ``"block{b}.exp_avg"``, ... into the stacks, plus
plain values ``"block{b}.has_root{i}"`` (a root was installed at least once) and
``"block{b}.root_step"`` (the step whose statistics the installed roots come from). That is what
``state_dict`` saves and what a rebuilt plan stacks again. A graft-only parameter keeps
``"exp_avg"``, ``"exp_avg_sq"``, ``"momentum_buffer"`` of its own shape: views into the flat buffers
of its ``DiagGroup`` (the graft-only parameters with its step and dtype).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from scalopt.core.validate import check_choice, check_int
from scalopt.optim.shampoo.blocking import Block

ELEMENTWISE = ("exp_avg", "exp_avg_sq", "momentum_buffer")
#: the matmul precision of the preconditioner products P_sh = Ĝ ×_1 H_1^inv …: float32; TF32 (CUDA
#: matmuls; on the CPU float32 is used); bfloat16 (Ĝ and the roots cast, P_sh back in float32)
PRECISIONS = ("float32", "tf32", "bfloat16")


def lean(statistics_frequency: Any, precondition_precision: Any) -> tuple[int, str]:
    """The lean-step options, validated: statistics every k ≥ 1 steps, a precision of ``PRECISIONS``."""
    k = check_int("statistics_frequency", statistics_frequency, minimum=1)
    return k, check_choice("precondition_precision", precondition_precision, PRECISIONS)


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass
class Entry:
    """One block of a parameter inside a shape group."""

    pos: int  # the parameter's position in its group plan
    block: Block
    merged: tuple[int, ...]
    state: dict[str, Any]  # the parameter's optimizer state
    describe: Callable[[], str]  # "<parameter name>, block b of c" (built only for messages)

    def key(self, name: str) -> str:
        return f"block{self.block.index}.{name}"


@dataclass(frozen=True)
class RootResult:
    """The outcome of one shape group's root computation, per factor i: (n, d_i, d_i) roots, and per
    block whether the root succeeded and why not; the last solver exception; the seconds it took."""

    roots: list[torch.Tensor]
    ok: list[list[bool]]  # [factor][block]
    reasons: list[list[str | None]]
    error: BaseException | None
    seconds: float


@dataclass
class Pending:
    """Roots computed from the statistics of ``snapshot_step``, installed at ``install_step``."""

    install_step: int
    snapshot_step: int
    future: Any = None  # a placement Job (or Future): result()[key] is this group's RootResult
    key: Any = None
    roots: list[torch.Tensor] | None = None  # per factor, (n, d_i, d_i)
    ok: list[list[bool]] = field(default_factory=list)  # [factor][block]
    reasons: list[list[str | None]] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0

    @classmethod
    def computed(cls, install_step: int, snapshot_step: int, res: RootResult) -> Pending:
        """Roots already computed (``res``), to be installed at ``install_step``."""
        pending = cls(install_step, snapshot_step)
        pending.take(res)
        return pending

    def take(self, res: RootResult) -> None:
        """Hold the computed ``res``; nothing is pending on a future any more."""
        self.roots, self.ok, self.reasons, self.error = res.roots, res.ok, res.reasons, res.error
        self.seconds, self.future = res.seconds, None


class DiagGroup:
    """Graft-only parameters with the same step, dtype and device: their element-wise state is flat.

    One flat buffer per name ("exp_avg", "exp_avg_sq", "momentum_buffer") holds the state of every
    parameter of the group, so an element-wise operation is one torch call for all of them;
    ``optimizer.state[p][name]`` is a view of the parameter's shape into it (what ``state_dict``
    saves and what a rebuilt plan concatenates again).
    """

    order = 0

    def __init__(
        self, entries: list[tuple[int, torch.Tensor, dict[str, Any]]], t: int, dtype: torch.dtype
    ) -> None:
        self.positions = [pos for pos, _, _ in entries]
        self.shapes = [p.shape for _, p, _ in entries]
        self.numels = [p.numel() for _, p, _ in entries]
        self.states = [state for _, _, state in entries]
        self.t, self.dtype, self.device = t, dtype, entries[0][1].device
        self.buffers: dict[str, torch.Tensor | None] = {
            name: self._flat(name) if any(name in s for s in self.states) else None for name in ELEMENTWISE
        }

    def _flat(self, name: str) -> torch.Tensor:
        parts = [
            s[name].to(device=self.device, dtype=self.dtype).reshape(-1)
            if name in s
            else torch.zeros(n, dtype=self.dtype, device=self.device)
            for s, n in zip(self.states, self.numels)
        ]
        flat = torch.cat(parts)
        for s, part, shape in zip(self.states, flat.split(self.numels), self.shapes):
            s[name] = part.view(shape)
        return flat

    def buffer(self, name: str) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = self._flat(name)
        return buf

    def gather(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The flat concatenation of the group's parameters' entries of ``tensors`` (read only)."""
        parts = [tensors[pos].reshape(-1) for pos in self.positions]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per parameter views of a flat tensor, in the parameters' shapes."""
        return [part.view(shape) for part, shape in zip(flat.split(self.numels), self.shapes)]


class ShapeGroup:
    """n same-shaped blocks: stacked statistics, roots, element-wise state, pending roots."""

    def __init__(
        self,
        shape: tuple[int, ...],
        entries: list[Entry],
        t: int,
        dtype: torch.dtype,
        device: torch.device,
        stats_every: int = 1,
    ) -> None:
        self.shape, self.entries, self.t, self.stats_every = shape, entries, t, stats_every
        self._low: list[torch.Tensor] | None = None  # bfloat16 copies of the roots (bfloat16 products)
        self.order, self.n = len(shape), len(entries)
        self.dtype, self.device, self.sdtype = dtype, device, stats_dtype(dtype)
        self.factors = [
            self._stack(f"factor{i}", (d, d), self.sdtype, lambda d=d: torch.zeros(d, d))
            for i, d in enumerate(shape)
        ]
        self.roots = [
            self._stack(f"root{i}", (d, d), self.sdtype, lambda d=d: torch.eye(d))
            for i, d in enumerate(shape)
        ]
        self.has_root = [
            [bool(e.state.get(e.key(f"has_root{i}"), False)) for e in entries] for i in range(self.order)
        ]
        self.root_step = [int(e.state.get(e.key("root_step"), 0)) for e in entries]
        for j, e in enumerate(entries):
            for i in range(self.order):
                e.state[e.key(f"has_root{i}")] = self.has_root[i][j]
            e.state[e.key("root_step")] = self.root_step[j]
        e0 = entries[0]
        self.buffers: dict[str, torch.Tensor | None] = {
            name: self._stack(name, shape, dtype, None) if e0.key(name) in e0.state else None
            for name in ELEMENTWISE
        }
        self.pending = self._load_pending()
        self.refresh_mask()

    # -- stacks and their per-parameter views ----------------------------------------------------
    def _stack(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        default: Callable[[], torch.Tensor] | None,
    ) -> torch.Tensor:
        parts = []
        for e in self.entries:
            v = e.state.get(e.key(name))
            if v is None:
                v = default() if default is not None else torch.zeros(shape)
            parts.append(v.to(device=self.device, dtype=dtype).reshape(shape))
        stack = torch.stack(parts)
        for j, e in enumerate(self.entries):
            e.state[e.key(name)] = stack[j]
        return stack

    def buffer(self, name: str) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = self._stack(name, self.shape, self.dtype, None)
        return buf

    def refresh_mask(self) -> None:
        """Which blocks have a root for every factor (before that, the graft alone steps)."""
        self.rooted = [all(h[j] for h in self.has_root) for j in range(self.n)]
        self.any_rooted, self.all_rooted = any(self.rooted), all(self.rooted)
        steps = [s for s, r in zip(self.root_step, self.rooted) if r]
        self.oldest_root_step = min(steps) if steps else 0
        shape = (self.n,) + (1,) * self.order
        self.mask = torch.tensor(self.rooted, device=self.device).view(shape)

    # -- the two per-step products ---------------------------------------------------------------
    @property
    def stats_count(self) -> int:
        """Statistics updates so far: at steps 1, 1 + k, 1 + 2k, … (k = ``stats_every``)."""
        return (self.t - 1) // self.stats_every + 1

    def accumulate(self, g: torch.Tensor, beta2: float) -> None:
        """H_i ← β2·H_i + w·G_(i) G_(i)ᵀ for every factor i (at the statistics steps only)."""
        if (self.t - 1) % self.stats_every:
            return
        x = g.to(self.sdtype)
        w = 1.0 - beta2 if beta2 < 1.0 else 1.0
        n, k = self.n, self.order
        for i, h in enumerate(self.factors):
            if i == 0:
                u = x.reshape(n, self.shape[0], -1)
                h.baddbmm_(u, u.mT, beta=beta2, alpha=w)
            elif i == k - 1:
                u = x.reshape(n, -1, self.shape[-1])
                h.baddbmm_(u.mT, u, beta=beta2, alpha=w)
            else:
                u = x.movedim(1 + i, 1).reshape(n, self.shape[i], -1)
                h.baddbmm_(u, u.mT, beta=beta2, alpha=w)

    def precondition(self, ghat: torch.Tensor, precision: str = "float32") -> torch.Tensor:
        """P_sh = Ĝ ×_1 H_1^inv … ×_k H_k^inv (each product rotates the contracted dim to the end)."""
        roots, dtype = self.roots, self.sdtype
        if precision == "bfloat16":
            if self._low is None:
                self._low = [r.to(torch.bfloat16) for r in self.roots]
            roots, dtype = self._low, torch.bfloat16
        x = ghat.to(dtype)
        if self.device.type == "cuda":  # TF32 exactly when asked, whatever the global setting
            with matmul_tf32(precision == "tf32"):
                return self._products(x, roots)
        return self._products(x, roots)

    def _products(self, x: torch.Tensor, roots: list[torch.Tensor]) -> torch.Tensor:
        for d, root in zip(self.shape, roots):
            x = torch.bmm(x.reshape(self.n, d, -1).mT, root)
        return x.reshape((self.n,) + self.shape).to(self.sdtype)

    # -- roots -----------------------------------------------------------------------------------
    def install(self, pending: Pending) -> list[str]:
        """Install resolved roots where they succeeded; returns a description of each failure."""
        assert pending.roots is not None
        failures, self._low = [], None
        for i, (roots, ok) in enumerate(zip(pending.roots, pending.ok)):
            if all(ok):
                self.roots[i].copy_(roots)
            elif any(ok):
                mask = torch.tensor(ok, device=self.device).view(self.n, 1, 1)
                self.roots[i].copy_(torch.where(mask, roots, self.roots[i]))
            for j, e in enumerate(self.entries):
                if ok[j]:
                    self.has_root[i][j] = True
                    e.state[e.key(f"has_root{i}")] = True
                else:
                    why = pending.reasons[i][j] if pending.reasons else None
                    failures.append(f"factor {i} of {e.describe()}: {why}")
        for j, e in enumerate(self.entries):
            if any(ok[j] for ok in pending.ok):
                self.root_step[j] = pending.snapshot_step
                e.state[e.key("root_step")] = pending.snapshot_step
        self.refresh_mask()
        return failures

    def clear_pending_keys(self) -> None:
        for e in self.entries:
            for k in [k for k in e.state if k.startswith(e.key("pending"))]:
                del e.state[k]

    def write_pending(self) -> None:
        """Mirror the pending roots into the per-parameter state (waiting for them)."""
        self.clear_pending_keys()
        for p, pend in enumerate(self.pending):
            resolve(pend)
            assert pend.roots is not None
            for j, e in enumerate(self.entries):
                e.state[e.key(f"pending{p}.install_step")] = pend.install_step
                e.state[e.key(f"pending{p}.snapshot_step")] = pend.snapshot_step
                for i, roots in enumerate(pend.roots):
                    e.state[e.key(f"pending{p}.root{i}")] = roots[j]
                    e.state[e.key(f"pending{p}.ok{i}")] = pend.ok[i][j]

    def _load_pending(self) -> list[Pending]:
        out = []
        e0 = self.entries[0]
        p = 0
        while e0.key(f"pending{p}.install_step") in e0.state:
            pend = Pending(int(e0.state[e0.key(f"pending{p}.install_step")]), 0)
            pend.snapshot_step = int(e0.state[e0.key(f"pending{p}.snapshot_step")])
            pend.roots = [
                torch.stack([e.state[e.key(f"pending{p}.root{i}")] for e in self.entries]).to(
                    device=self.device, dtype=self.sdtype
                )
                for i in range(self.order)
            ]
            pend.ok = [
                [bool(e.state[e.key(f"pending{p}.ok{i}")]) for e in self.entries] for i in range(self.order)
            ]
            pend.reasons = [
                [None if ok else "failed before the checkpoint was taken" for ok in oks] for oks in pend.ok
            ]
            out.append(pend)
            p += 1
        return out


@contextlib.contextmanager
def matmul_tf32(enabled: bool) -> Iterator[None]:
    """CUDA float32 matmuls in TF32 (or not) for the block, whatever the global setting."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def step_of(unit: ShapeGroup | DiagGroup) -> int | torch.Tensor:
    """A unit's step t: the int, or in a step traced by ``torch.compile`` the 0-dim tensor that
    ``GroupPlan.begin`` set (a traced step must not read a number that changes every step)."""
    t_tensor = getattr(unit, "t_tensor", None)
    return t_tensor if t_tensor is not None and torch.compiler.is_compiling() else unit.t


def resolve(pending: Pending) -> float:
    """Wait for a pending root computation; returns the seconds spent waiting."""
    if pending.roots is not None:
        return 0.0
    start = time.perf_counter()
    assert pending.future is not None
    results = pending.future.result()
    waited = time.perf_counter() - start
    pending.take(results[pending.key])
    return waited
