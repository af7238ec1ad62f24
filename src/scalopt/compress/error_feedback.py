"""Error feedback: compress what was meant plus what was lost before, remember what is lost now.

For a compressor Q and a stream x_1, x_2, … (one buffer, e.g. a worker's Adam steps):

    y_t = x_t + e_t ;  Δ_t = Q(y_t) (sent) ;  e_{t+1} = y_t − Δ_t,   e_1 = 0

Nothing is lost, only delayed: Σ_{s≤t} Δ_s + e_{t+1} = Σ_{s≤t} x_s for every t (exactly, up to
float rounding), and a contractive Q keeps e bounded. ``error_feedback(c, x, e)`` is the step on a
given residual buffer (updated in place); ``ErrorFeedback(c)`` keeps the residual itself (created
on first use, zeros like x) with ``state_dict`` / ``load_state_dict`` / ``reset``.

Reference: F. Seide, H. Fu, J. Droppo, G. Li, D. Yu, "1-Bit Stochastic Gradient Descent", Interspeech
2014; S. P. Karimireddy et al., ICML 2019, arXiv 1901.09847; C. Chen et al., Efficient-Adam, arXiv
2205.14473 (error feedback on workers and server).
"""

from __future__ import annotations

from typing import Any

import torch

from scalopt.compress.base import Compressor, Payload, check_compressor


def error_feedback(compressor: Compressor, x: torch.Tensor, residual: torch.Tensor) -> Payload:
    """Compress y = x + residual; set ``residual`` (in place) to y − Q(y); return Q(y)'s payload."""
    y = x + residual
    payload = compressor.compress(y)
    residual.copy_(y - compressor.decompress(payload))
    return payload


class ErrorFeedback:
    """A compressor with memory: ``payload = ef.compress(x)``; ``ef.residual`` is e_{t+1}."""

    def __init__(self, compressor: Compressor) -> None:
        self.compressor = check_compressor("compressor", compressor)
        self.residual: torch.Tensor | None = None

    def compress(self, x: torch.Tensor) -> Payload:
        if self.residual is None or self.residual.shape != x.shape or self.residual.dtype != x.dtype:
            if self.residual is not None:
                raise ValueError(
                    f"ErrorFeedback keeps a residual of shape {tuple(self.residual.shape)} and dtype "
                    f"{self.residual.dtype}, got x of shape {tuple(x.shape)} and dtype {x.dtype}; "
                    f"use one ErrorFeedback per buffer"
                )
            self.residual = torch.zeros_like(x, memory_format=torch.contiguous_format)
        return error_feedback(self.compressor, x, self.residual)

    def decompress(self, payload: Payload) -> torch.Tensor:
        return self.compressor.decompress(payload)

    def reset(self) -> None:
        self.residual = None

    def state_dict(self) -> dict[str, Any]:
        residual = None if self.residual is None else self.residual.clone()
        return {"residual": residual, "compressor": self.compressor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        residual = state["residual"]
        self.residual = None if residual is None else residual.clone()
        self.compressor.load_state_dict(state.get("compressor", {}))

    def __repr__(self) -> str:
        return f"ErrorFeedback({self.compressor!r})"
