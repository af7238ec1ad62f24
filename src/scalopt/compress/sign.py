"""``Identity`` and ``ScaledSign``: no compression, and 1 bit per entry plus one scale per block.

ScaledSign (the scaled sign of Efficient-Adam and EF-SignSGD), for x with d entries cut into
blocks B of b consecutive entries (``block_size``; None: one block, the whole tensor):

    Q(x)_B = s_B·sign(x_B),   sign(0) = +1
    s_B = ‖x_B‖₁/|B|           scale="l1"  (the mean magnitude; default)
    s_B = ‖x_B‖₂/√|B|          scale="rms" (1-bit Adam's: ‖Q(x)‖ = ‖x‖)

Wire: one s per block in x's dtype and the d sign bits packed 8 per byte, i.e. ⌈d/8⌉ +
⌈d/b⌉·element_size bytes (32× fewer than float32 for large d and one block; 32/(1 + 32/b)× with
float32 scales per block, 28.4× for b = 256). The ℓ1 scale is contractive:
‖Q(x) − x‖² = ‖x‖² − ‖x‖₁²/d ≤ (1 − 1/d)·‖x‖² (δ = ‖x‖₁²/(d‖x‖²) ≥ 1/d) per block, with or without
zeros in x (sign(0) = +1 costs s² on such an entry either way). The RMS scale preserves the norm
but is not contractive in general (‖Q(x) − x‖² = 2‖x‖·(‖x‖ − ‖x‖₁/√d) can exceed ‖x‖²); error
feedback still keeps what is lost, so both are biased compressors for error-feedback schemes.
Smaller blocks follow the magnitudes of x more closely (per-block step sizes) for more scale bytes.

Identity sends x itself (d·element_size bytes); with it Efficient-Adam reduces to averaging Adam steps.

References: C. Chen, L. Shen, W. Liu, Z.-Q. Luo, "Efficient-Adam: Communication-Efficient Distributed
Adam", IEEE TSP 2023, arXiv 2205.14473; S. P. Karimireddy, Q. Rebjock, S. Stich, M. Jaggi, "Error
Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML 2019, arXiv 1901.09847.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from scalopt.compress.base import Compressor, Layout, pack_bits, packed_nbytes, unpack_bits
from scalopt.core.validate import check_choice, check_int

SCALES = ("l1", "rms")


class Identity(Compressor):
    """Q(x) = x; the payload is x (d·element_size bytes)."""

    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        return ((dtype, numel),)

    def _compress(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat.clone()]

    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        return fields[0].to(dtype)


class ScaledSign(Compressor):
    """Q(x)_B = s_B·sign(x_B), sign(0) = +1: one scale per block and ⌈d/8⌉ bytes of sign bits."""

    def __init__(self, *, scale: str = "l1", block_size: int | None = None) -> None:
        self.scale = check_choice("scale", scale, SCALES)
        self.block_size = None if block_size is None else check_int("block_size", block_size, minimum=1)

    def _blocks(self, numel: int) -> int:
        if self.block_size is None:
            return 1
        return -(-numel // self.block_size)

    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        return ((dtype, self._blocks(numel)), (torch.uint8, packed_nbytes(numel, 1)))

    def _rows(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``flat`` zero-padded to whole blocks (one per row) and each block's true entry count."""
        d, n = flat.numel(), self._blocks(flat.numel())
        b = d if self.block_size is None else self.block_size
        if n * b > d:
            flat = torch.cat([flat, flat.new_zeros(n * b - d)])
        counts = torch.full((n,), float(b), dtype=flat.dtype)
        counts[-1] = d - (n - 1) * b
        return flat.reshape(n, max(b, 1)), counts

    def _compress(self, flat: torch.Tensor) -> list[torch.Tensor]:
        if flat.numel() == 0:
            return [flat.new_zeros(1), pack_bits(flat >= 0, 1)]
        rows, counts = self._rows(flat)
        if self.scale == "l1":
            scale = rows.abs().sum(1) / counts
        else:
            scale = torch.linalg.vector_norm(rows, dim=1) / counts.sqrt()
        return [scale, pack_bits(flat >= 0, 1)]

    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        scale, bits = fields
        signs = unpack_bits(bits, 1, numel).to(dtype).mul_(2).sub_(1)
        if self.block_size is None:
            return signs.mul_(scale.to(dtype))
        return signs.mul_(scale.to(dtype).repeat_interleave(self.block_size)[:numel])

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.scale != "l1":
            out["scale"] = self.scale
        if self.block_size is not None:
            out["block_size"] = self.block_size
        return out
