"""``QSGD(levels)``: unbiased stochastic quantization to s levels per bucket (Alistarh et al.).

x is cut into buckets of ``bucket_size`` consecutive entries (the last may be shorter); in a bucket
with norm n = ‖x_B‖₂ each entry is rounded at random to one of the s + 1 levels 0, n/s, …, n:

    l_i = s·|x_i|/n ∈ [0, s],   q_i = ⌊l_i⌋ + 1[u_i < l_i − ⌊l_i⌋],   u_i ~ U[0, 1)
    Q(x)_i = sign(x_i)·n·q_i/s                 E[Q(x)] = x (unbiased);  n = 0 ⇒ Q = 0

Variance per bucket of b entries: E‖Q(x) − x‖² ≤ min(b/s², √b/s)·‖x‖², which is why buckets are
used: with error feedback the compressor should keep this below 1 (e.g. s = 15 with b = 128).
Wire: one norm per bucket (x's dtype) and, per entry, the magnitude q_i in ⌈log2(s+1)⌉ bits plus a
sign bit, packed (s = 1 gives ternary 2-bit codes, s = 15 5 bits, s = 127 8 bits).
Symbols ↔ arguments: s = ``levels`` (≥ 1), b = ``bucket_size`` (default 512), u from ``generator``
(default: a fresh generator seeded 0; its state is in ``state_dict()``).

Reference: D. Alistarh, D. Grubic, J. Li, R. Tomioka, M. Vojnovic, "QSGD: Communication-Efficient SGD
via Gradient Quantization and Encoding", NeurIPS 2017, arXiv 1610.02132 (the Elias coding of the
paper is replaced by fixed-width codes, so byte counts are exact and known in advance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from scalopt.compress.base import (
    Compressor,
    GeneratorState,
    Layout,
    make_generator,
    pack_bits,
    packed_nbytes,
    unpack_bits,
)
from scalopt.core.validate import check_int


class QSGD(GeneratorState, Compressor):
    """Stochastic rounding to ``levels`` levels of each bucket's norm, sign bit + ⌈log2(s+1)⌉ bits."""

    stochastic = True

    def __init__(
        self, levels: int, generator: torch.Generator | None = None, *, bucket_size: int = 512
    ) -> None:
        self.levels = check_int("levels", levels, minimum=1)
        if levels > 2**15:
            raise ValueError(f"levels must be an integer in [1, 32768], got {levels!r}")
        self.bucket_size = check_int("bucket_size", bucket_size, minimum=1)
        self.generator = make_generator("generator", generator)
        self.magnitude_bits = max(1, math.ceil(math.log2(levels + 1)))
        self.bits = self.magnitude_bits + 1

    def _buckets(self, numel: int) -> int:
        return -(-numel // self.bucket_size)

    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        return ((dtype, self._buckets(numel)), (torch.uint8, packed_nbytes(numel, self.bits)))

    def _rows(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat`` zero-padded to whole buckets, one bucket per row."""
        pad = self._buckets(flat.numel()) * self.bucket_size - flat.numel()
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        return flat.reshape(-1, self.bucket_size)

    def _compress(self, flat: torch.Tensor) -> list[torch.Tensor]:
        d, s = flat.numel(), self.levels
        rows = self._rows(flat)
        norms = torch.linalg.vector_norm(rows, dim=1)
        scale = torch.where(norms > 0, s / norms.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
        level = (rows.abs() * scale.unsqueeze(1)).reshape(-1)[:d].clamp_(0, s)
        low = level.floor()
        u = torch.rand(d, generator=self.generator, dtype=flat.dtype)
        q = low.add_((u < level.sub_(low)).to(flat.dtype)).to(torch.int64)
        codes = q | ((flat < 0).to(torch.int64) << self.magnitude_bits)
        return [norms, pack_bits(codes, self.bits)]

    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        norms, packed = fields
        codes = unpack_bits(packed, self.bits, numel)
        q = (codes & ((1 << self.magnitude_bits) - 1)).to(dtype)
        q = torch.where(codes >> self.magnitude_bits == 1, -q, q)
        rows = self._rows(q) * (norms.to(dtype) / self.levels).unsqueeze(1)
        return rows.reshape(-1)[:numel]

    def config(self) -> dict[str, Any]:
        return {"levels": self.levels, "bucket_size": self.bucket_size}
