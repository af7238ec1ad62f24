"""``add_proximal_pull`` and ``scale_by_sawtooth``: the proximal small-batch method's two pieces.

With S = the group's ``period``, s = (t − 1) mod S the inner step of a parameter at its 1-based step
t, λ_w = the group's ``prox_weight`` and η = the group's current ``lr``:

    add_proximal_pull:   if s = 0:  x̃ ← x          (the anchor; kept only when S > 1)
                         u ← u + 2·(λ_w/η)·(x − x̃)   (the gradient of (λ_w/η)·‖x − x̃‖²)
    scale_by_sawtooth:   u ← u/(s + 1)              (step sizes η, η/2, …, η/S, then again η)

At s = 0 the anchor has just been set, so the pull is exactly zero and is skipped; with S = 1 both
transforms do nothing. A group with η = 0 takes no step; its pull is skipped too (λ_w/η is
undefined there). Reference: Y. Zhang, H. Qu, C. Chen, D. Metaxas, "Taming the Noisy Gradient:
Train Deep Neural Networks with Small Batch Sizes", IJCAI 2019, doi 10.24963/ijcai.2019/604.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from scalopt.core.chain import GroupBatch, StepContext


def inner_steps(b: GroupBatch) -> list[int]:
    """s = (t − 1) mod S for each parameter of the batch (t: its step, already counted)."""
    period = b.group["period"]
    return [(s["step"] - 1) % period for s in b.states]


class _Cycled:
    """What both transforms share: no state of their own, and only groups with S > 1 take part."""

    def init(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {}

    @staticmethod
    def cycling(batches: list[GroupBatch]) -> Iterator[tuple[GroupBatch, list[int]]]:
        """(batch, inner steps s) for every batch whose group has period S > 1."""
        for b in batches:
            if b.group["period"] != 1:
                yield b, inner_steps(b)


class add_proximal_pull(_Cycled):  # noqa: N801 - transforms are verbs
    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None:
        for b, inner in self.cycling(batches):
            if torch.compiler.is_compiling():
                self._traced(b)
                continue
            for s, x, k in zip(b.states, b.params, inner):
                if k == 0:
                    if "anchor" in s:
                        s["anchor"].copy_(x)
                    else:
                        s["anchor"] = x.clone(memory_format=torch.preserve_format)
            lr, weight = b.group["lr"], b.group["prox_weight"]
            pull = [i for i, k in enumerate(inner) if k > 0]
            if weight == 0 or lr == 0 or not pull:
                continue
            diffs = torch._foreach_sub([b.params[i] for i in pull], [b.states[i]["anchor"] for i in pull])
            coef = 2.0 * weight / lr
            if len(pull) == len(inner):
                b.add(diffs, alpha=coef)
            else:  # parameters added later run on their own cycle
                full = [torch.zeros_like(x) for x in b.params]
                for i, d in zip(pull, diffs):
                    full[i] = d
                b.add(full, alpha=coef)

    @staticmethod
    def _traced(b: GroupBatch) -> None:
        """The same rule without host branching (``torch.compile``, tensor steps): the anchor is
        rewritten where s = 0, and the pull x − anchor is then 0 there, so it is added everywhere."""
        for s, x, k in zip(b.states, b.params, inner_steps(b)):
            if "anchor" in s:
                s["anchor"].copy_(torch.where(k == 0, x, s["anchor"]))
            else:
                s["anchor"] = x.clone(memory_format=torch.preserve_format)
        lr, weight = b.group["lr"], b.group["prox_weight"]
        if weight != 0 and lr != 0:
            b.add(torch._foreach_sub(b.params, [s["anchor"] for s in b.states]), alpha=2.0 * weight / lr)


class scale_by_sawtooth(_Cycled):  # noqa: N801 - transforms are verbs
    def update(self, batches: list[GroupBatch], ctx: StepContext) -> None:
        for b, inner in self.cycling(batches):
            ctx.optimizer.record("inner_step", inner[0])
            if torch.compiler.is_compiling():  # tensor steps: the factors as tensors, no branch
                b.scale([1.0 / (k + 1) for k in inner])
            elif any(inner):
                b.scale([1.0 / (k + 1) for k in inner])
