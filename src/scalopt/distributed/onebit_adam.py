"""1-bit Adam: Adam warm-up, then frozen v and a 1-bit all-reduce of the momentum with error feedback.

N workers, x replicated, t the 1-based step, T_w = ``freeze_step``. No bias correction (the form
DeepSpeed ships):

    warm-up (t ≤ T_w):   ḡ = (1/N)·Σ_i g_i                                  fp32 all-reduce
                         m ← β1·m + (1−β1)·ḡ ;  v ← β2·v + (1−β2)·ḡ²
                         x ← x − lr·(m/(√v + ε) + λ·x)
    compression (t > T_w), v frozen:
      worker i:  m_i = β1·m + (1−β1)·g_i                                    LOCAL gradient
                 b_i = m_i + e_i ;  e_i ← b_i − Q_w(b_i)                    worker error feedback
      server j (chunk j of the flat vector, served by rank j):
                 c_j = (1/N)·Σ_i Q_w(b_i)_j + ẽ_j ;  ẽ_j ← c_j − Q_s(c_j)   server error feedback
      all:       m ← [Q_s(c_0), …, Q_s(c_{N−1})] ⊙ M                        M = 1[v ≠ 0], the momentum mask
                 x ← x − lr·(m/(√v + ε) + λ·x)

Q_w = Q_s = ``ScaledSign(scale="rms")`` by default: s·sign(b), s = ‖b‖₂/√d over each chunk,
sign(0) = +1 (1 bit per entry plus one scale per chunk). Symbols ↔ arguments: lr = ``lr`` (per
param group; schedulers allowed), β1, β2 = ``betas``, ε = ``eps`` (> 0), λ = ``weight_decay``
(decoupled, as DeepSpeed's ``update += wd·p``), T_w = ``freeze_step`` (an int ≥ 1 or ``math.inf``:
never compress), Q_w = ``compressor``, Q_s = ``server_compressor`` (None: the same).
Defaults as DeepSpeed: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0, freeze_step 100000.

``bias_correction=True`` (not DeepSpeed's form; for warm-ups too short for 1 − β2^{T_w} ≈ 1): the
warm-up is torch's Adam (m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)) and the compressed phase steps by
m/(1−β1^t) / (√(v/(1−β2^{T_w})) + ε), T_w the number of updates the frozen v received. Without it
a short warm-up at β2 = 0.999 freezes a v that is a small fraction of E[g²] (1 − 0.999^20 ≈ 2 %),
so every later step is several times larger than Adam's.

Exchange (``scalopt.distributed.two_way``, shared with Efficient-Adam; per dtype, flat
``ModelVector`` order of all parameters, D entries): the vector is cut
into N chunks of ⌈D/N⌉ entries; one ``all_to_all`` sends chunk j of Q_w(b_i) to rank j (packed
bits and scale, padded to the longest chunk's payload), rank j averages the N payloads in rank
order, compresses with its ẽ_j and one ``all_gather`` returns every chunk; plus the 1-byte
non-finite agreement. Wire bytes per rank per compressed step (``scalopt.core.comm`` convention):
(N−1)·(P_up + P_down) + (N−1), P ≈ ⌈D/N⌉/8 + 4 for float32 — ≈ 32× fewer than the fp32
all-reduce 2(N−1)/N·4D. The warm-up costs the full all-reduce, so averaged over a run of T steps
the saving is 1/(T_w/T + (1 − T_w/T)/32).

Momentum mask. 1 bit cannot encode 0: a coordinate whose momentum should stay exactly 0 (its
gradient was exactly 0 on every worker through the warm-up, e.g. unused embedding rows) would be
sent as ±s and, with v = 0, step by m/ε. ``momentum_mask=True`` (default) multiplies the exchanged
momentum by M = 1[v ≠ 0], computed from the frozen v (DeepSpeed takes a user-given
``exp_avg_mask`` instead; the frozen v identifies the same coordinates without one).

Deviations from DeepSpeed and why: one worker scale per chunk instead of one for the whole vector
(N scales instead of 1, so each chunk's payload is self-contained; no extra round); parameters
without a gradient in a compressed step keep x but their momentum takes part in the exchange (the
flat layout is fixed); with one rank the momentum is not compressed at all (no communication to
save, as DeepSpeed). Warm-up steps use the inner ``GenericAdam(bias_correction=False,
decoupled_weight_decay=True)``, whose update equals the rule above.

State and resume: m, v, the step counters, the error buffers e_i, ẽ_j and the compressors' states
are in ``state_dict()`` (the buffers per rank, in ``state_dict()["distributed"]``), so a resume with
the same world size and parameters is bitwise the uninterrupted run. DeepSpeed resets the errors on
load instead (resetting them now and then does not hurt convergence, Tang et al.); ``reset_errors()``
does that on demand. ``add_param_group`` resets them (the flat layout changes).

Checks: ``eps`` must be > 0 (a coordinate whose frozen v is 0 would divide by 0); the compressed
step forms the new x first and writes it only when every value is finite (``nonfinite``: "raise"
or "skip", with m, the step counters and the error buffers restored). The moments, the
denominator and the bias-correction scales are ``scalopt.transforms.adam_kernel``'s.

Reference: H. Tang, S. Gan, A. A. Awan, S. Rajbhandari, C. Li, X. Lian, J. Liu, C. Zhang, Y. He,
"1-bit Adam: Communication Efficient Large-Scale Training with Adam's Convergence Speed", ICML 2021,
arXiv 2102.02888.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from scalopt.compress import Compressor, ScaledSign
from scalopt.compress.base import check_compressor
from scalopt.core.base import first_nonfinite
from scalopt.core.comm import Comm
from scalopt.core.validate import check_bool, check_int, check_positive
from scalopt.distributed.two_way import ErrorBuffers, TwoWayLayout, exchange
from scalopt.distributed.wrapper import DistributedOptimizer, ModelVector
from scalopt.optim.generic_adam import GenericAdam
from scalopt.transforms import adam_kernel


def check_freeze_step(value: Any) -> int | float:
    if value == math.inf and not isinstance(value, bool):
        return math.inf
    return check_int("freeze_step", value, minimum=1)


class OneBitAdam(DistributedOptimizer):
    """Adam with an fp32 warm-up, then a 1-bit momentum all-reduce under frozen v (see module doc)."""

    algorithm = "onebit_adam"

    def __init__(
        self,
        params: Iterable[Any],
        *,
        comm: Comm,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        freeze_step: int | float = 100_000,
        compressor: Compressor | None = None,
        server_compressor: Compressor | None = None,
        momentum_mask: bool = True,
        bias_correction: bool = False,
        module: nn.Module | None = None,
        nonfinite: str = "raise",
        deterministic: bool = False,
    ) -> None:
        self.freeze_step = check_freeze_step(freeze_step)
        default = ScaledSign(scale="rms")
        self.compressor = check_compressor("compressor", default if compressor is None else compressor)
        self.server_compressor = check_compressor(
            "server_compressor", self.compressor if server_compressor is None else server_compressor
        )
        self.momentum_mask = check_bool("momentum_mask", momentum_mask)
        check_positive("eps", eps)  # the frozen phase divides by √v + ε with v = 0 possible
        self.bias_correction = check_bool("bias_correction", bias_correction)
        inner = GenericAdam(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=True,
            bias_correction=self.bias_correction,
            nonfinite=nonfinite,
        )
        self._layouts: list[TwoWayLayout] | None = None
        self.errors = ErrorBuffers()  # e_i per dtype (full length D), ẽ_j (this rank's chunk)
        super().__init__(inner, comm=comm, module=module, nonfinite=nonfinite, deterministic=deterministic)

    @property
    def frozen(self) -> bool:
        """True once ``freeze_step`` warm-up steps are done: v is frozen and m travels compressed."""
        return self.counters["steps"] >= self.freeze_step

    # -- layout and errors ---------------------------------------------------------------------------
    def layouts(self) -> list[TwoWayLayout]:
        if self._layouts is None:
            n = self.comm.world_size
            self._layouts = [
                TwoWayLayout(ts, n, self.compressor, self.server_compressor, per_tensor=False)
                for ts in ModelVector(self.params()).groups.values()
            ]
        return self._layouts

    def layout_changed(self) -> None:
        self._layouts = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """A collective (the new parameters are broadcast); the flat layout changes, so errors reset."""
        super().add_param_group(param_group)
        self.reset_errors()

    def reset_errors(self) -> None:
        """Zero the worker and server error-feedback buffers (DeepSpeed's reset on load, on demand)."""
        self.errors.reset()

    @property
    def worker_error(self) -> dict[str, torch.Tensor]:
        return self.errors.worker

    @property
    def server_error(self) -> dict[str, torch.Tensor]:
        return self.errors.server

    # -- the step ------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = self.closure_loss(closure)
        if not self.grads():
            return loss
        if self.frozen:
            if not self.agree_finite() or not self._compressed_step():
                return loss
        elif not self._warmup_step():
            return loss
        self.comm.mark_round()
        self.counters["steps"] += 1
        self.counters["syncs"] += 1
        return loss

    def _warmup_step(self) -> bool:
        """Data-parallel Adam: average the gradients (fp32 all-reduce), then the inner step."""
        if not self.average(self.grads()):
            return False
        self.optimizer.step()
        return True

    def _states(self) -> list[dict[str, Any]]:
        states = []
        for group in self.param_groups:
            states.extend(self.optimizer._init_state(group, group["params"]))
        return states

    def _compressed_step(self) -> bool:
        """The frozen-v step; False (nothing changed) when ``nonfinite="skip"`` meets a non-finite x."""
        states = self._states()
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        before = (
            [t.clone() for t in m],
            [(s["step"], s.get("v_steps")) for s in states],
            self.errors.state(),
        )
        for group in self.param_groups:  # m_i = β1·m + (1−β1)·g_i where this rank has a gradient
            ps = [p for p in group["params"] if p.grad is not None]
            if ps:
                adam_kernel.momentum_(
                    [self.state[p]["exp_avg"] for p in ps], [p.grad for p in ps], group["betas"][0]
                )
            for p in ps:
                st = self.state[p]
                st.setdefault("v_steps", st["step"])  # how many updates the frozen v got
                st["step"] += 1
        if self.comm.world_size > 1:  # one rank: nothing to average, m stays exact (as DeepSpeed)
            m_vec = ModelVector(m)
            synced = [
                exchange(self.comm, lay, flat, self.errors)
                for lay, flat in zip(self.layouts(), m_vec.gather())
            ]
            m_vec.scatter(synced)
        if self.momentum_mask:
            torch._foreach_mul_(m, [(s != 0).to(s.dtype) for s in v])
        targets, values = self._new_values()
        bad = first_nonfinite(values)
        if bad is not None:  # m, v and x replicated: every rank finds the same
            for t, old in zip(m, before[0]):
                t.copy_(old)
            for s, (step, v_steps) in zip(states, before[1]):
                s["step"] = step
                if v_steps is None:
                    s.pop("v_steps", None)
            self.errors.worker = dict(before[2]["worker_error"])
            self.errors.server = dict(before[2]["server_error"])
            if self.nonfinite == "raise":
                raise FloatingPointError(
                    f"OneBitAdam: non-finite update of parameter {bad} of the compressed step (m/(√v + ε) "
                    f"overflowed); nothing was changed. Lower the learning rate, raise eps, or pass "
                    f"nonfinite='skip'"
                )
            self.counters["skipped_steps"] += 1
            return False
        torch._foreach_copy_(targets, values)
        return True

    def _new_values(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x − lr·(m̂/(√v̂ + ε) + λ·x) for every parameter with a gradient, as new tensors."""
        targets: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            check_positive("eps", eps)
            sts = [self.state[p] for p in ps]
            if self.bias_correction:  # m̂ = m/(1 − β1^t), v̂ = v/(1 − β2^{T_w})
                beta1, beta2 = group["betas"]
                scale, eps_t = adam_kernel.bias_corrected_scales(
                    [1.0 - beta1 ** st["step"] for st in sts],
                    [1.0 - beta2 ** st["v_steps"] or 1.0 for st in sts],
                    eps,
                )
            else:
                scale, eps_t = None, [eps] * len(sts)
            denom = adam_kernel.denominator([st["exp_avg_sq"] for st in sts], scale, eps_t)
            new = torch._foreach_mul(ps, 1.0 - lr * wd) if wd else [p.detach().clone() for p in ps]
            torch._foreach_addcdiv_(new, [st["exp_avg"] for st in sts], denom, value=-lr)
            targets.extend(ps)
            values.extend(new)
        return targets, values

    # -- state ---------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        out = super().extra_state()
        out["compressor"] = self.compressor.state_dict()
        out["server_compressor"] = self.server_compressor.state_dict()
        out.update(self.errors.state())
        return out

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        super().load_extra_state(extra)
        self.compressor.load_state_dict(extra.get("compressor", {}))
        if self.server_compressor is not self.compressor:
            self.server_compressor.load_state_dict(extra.get("server_compressor", {}))
        self._layouts = None
        self.errors.load(extra, self.layouts(), self.comm)

    def __repr__(self) -> str:
        return (
            f"OneBitAdam(comm={self.comm!r}, freeze_step={self.freeze_step}, compressor={self.compressor!r}, "
            f"server_compressor={self.server_compressor!r})"
        )
