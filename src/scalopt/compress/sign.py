"""``Identity`` and ``ScaledSign``: no compression, and 1 bit per entry plus one scale.

ScaledSign (the scaled sign of Efficient-Adam and EF-SignSGD), for x with d entries:

    Q(x) = s·sign(x),   s = ‖x‖₁/d  (the mean magnitude),   sign(0) = +1

Wire: s in x's dtype (one value per compressed tensor) and the d sign bits packed 8 per byte,
i.e. ⌈d/8⌉ + element_size bytes (32× fewer than float32 for large d). It is contractive:
‖Q(x) − x‖² = ‖x‖² − ‖x‖₁²/d ≤ (1 − 1/d)·‖x‖² (δ = ‖x‖₁²/(d‖x‖²) ≥ 1/d), with or without zeros in x
(sign(0) = +1 costs s² on such an entry either way). It is biased; error feedback makes up for it.
The RMS scale ‖x‖₂/√d (1-bit Adam's) preserves the norm but is not contractive, so it is not used.

Identity sends x itself (d·element_size bytes); with it Efficient-Adam reduces to averaging Adam steps.

References: C. Chen, L. Shen, W. Liu, Z.-Q. Luo, "Efficient-Adam: Communication-Efficient Distributed
Adam", IEEE TSP 2023, arXiv 2205.14473; S. P. Karimireddy, Q. Rebjock, S. Stich, M. Jaggi, "Error
Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML 2019, arXiv 1901.09847.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from scalopt.compress.base import Compressor, Layout, pack_bits, packed_nbytes, unpack_bits


class Identity(Compressor):
    """Q(x) = x; the payload is x (d·element_size bytes)."""

    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        return ((dtype, numel),)

    def _compress(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat.clone()]

    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        return fields[0].to(dtype)


class ScaledSign(Compressor):
    """Q(x) = (‖x‖₁/d)·sign(x), sign(0) = +1: one scale and ⌈d/8⌉ bytes of sign bits."""

    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        return ((dtype, 1), (torch.uint8, packed_nbytes(numel, 1)))

    def _compress(self, flat: torch.Tensor) -> list[torch.Tensor]:
        scale = flat.abs().mean().reshape(1) if flat.numel() else flat.new_zeros(1)
        return [scale, pack_bits(flat >= 0, 1)]

    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        scale, bits = fields
        signs = unpack_bits(bits, 1, numel).to(dtype).mul_(2).sub_(1)
        return signs.mul_(scale.to(dtype))
