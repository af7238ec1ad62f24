"""Sparsifiers: ``TopK(ratio)`` keeps the k largest magnitudes, ``RandomK(ratio)`` k random entries.

For x with d entries, k = round(ratio·d), at least 1 (``ratio`` in (0, 1]):

    TopK:     Q(x)_i = x_i for the k indices of largest |x_i|, 0 elsewhere
              wire: k values (x's dtype) + k int32 indices; contractive: ‖Q(x) − x‖² ≤ (1 − k/d)‖x‖²
    RandomK:  S = k indices drawn uniformly without replacement;  Q(x)_i = (d/k)·x_i on S, 0 elsewhere
              (``unbiased=True``: E[Q(x)] = x, variance (d/k − 1)‖x‖²), or x_i on S (``unbiased=False``:
              biased, E‖Q(x) − x‖² = (1 − k/d)‖x‖², contractive in expectation — the variant that error
              feedback needs, as in Stich et al.'s memory-SGD)
              wire: k values + one int64 seed; the receiver redraws S from the seed (shared randomness),
              so no indices are sent. The seed is drawn from the ``generator`` given (default: a fresh
              generator seeded 0); its state is in ``state_dict()``.

References: S. U. Stich, J.-B. Cordonnier, M. Jaggi, "Sparsified SGD with Memory", NeurIPS 2018,
arXiv 1809.07599; D. Alistarh et al., "The Convergence of Sparsified Gradient Methods", NeurIPS 2018.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from scalopt.compress.base import Compressor, GeneratorState, Layout, make_generator, sample_count
from scalopt.core.validate import check_bool, check_interval

SEED_BOUND = 2**62


def _check_ratio(ratio: float) -> float:
    return check_interval("ratio", ratio, 0.0, 1.0, low_open=True, high_open=False)


class TopK(Compressor):
    """The k = round(ratio·d) entries of largest magnitude, with their int32 indices."""

    def __init__(self, ratio: float) -> None:
        self.ratio = float(_check_ratio(ratio))

    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        k = sample_count("ratio", self.ratio, numel)
        return ((dtype, k), (torch.int32, k))

    def _compress(self, flat: torch.Tensor) -> list[torch.Tensor]:
        k = sample_count("ratio", self.ratio, flat.numel())
        idx = flat.abs().topk(k, sorted=False).indices
        return [flat[idx], idx.to(torch.int32)]

    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        values, idx = fields
        out = torch.zeros(numel, dtype=dtype)
        out[idx.to(torch.int64)] = values.to(dtype)
        return out

    def config(self) -> dict[str, Any]:
        return {"ratio": self.ratio}


class RandomK(GeneratorState, Compressor):
    """k = round(ratio·d) uniformly random entries (scaled by d/k when ``unbiased``), plus a seed."""

    stochastic = True

    def __init__(
        self, ratio: float, generator: torch.Generator | None = None, *, unbiased: bool = True
    ) -> None:
        self.ratio = float(_check_ratio(ratio))
        self.generator = make_generator("generator", generator)
        self.unbiased = check_bool("unbiased", unbiased)

    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        return ((dtype, sample_count("ratio", self.ratio, numel)), (torch.int64, 1))

    def _indices(self, seed: int, numel: int) -> torch.Tensor:
        k = sample_count("ratio", self.ratio, numel)
        return torch.randperm(numel, generator=torch.Generator().manual_seed(seed))[:k]

    def _compress(self, flat: torch.Tensor) -> list[torch.Tensor]:
        seed = torch.randint(SEED_BOUND, (1,), generator=self.generator, dtype=torch.int64)
        idx = self._indices(int(seed), flat.numel())
        values = flat[idx]
        if self.unbiased and idx.numel():
            values = values * (flat.numel() / idx.numel())
        return [values, seed]

    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        values, seed = fields
        out = torch.zeros(numel, dtype=dtype)
        out[self._indices(int(seed), numel)] = values.to(dtype)
        return out

    def config(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "unbiased": self.unbiased}
