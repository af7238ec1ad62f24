"""Compressors and error feedback: the math of communication-efficient distributed training.

Every compressor: ``payload = c.compress(x)``, ``c.decompress(payload)`` (a tensor of x's shape),
``c.nbytes(payload)`` (the exact bytes on the wire), ``c.layout(d, dtype)`` (the payload's tensors,
known from d alone). ``to_bytes`` / ``from_bytes`` move a payload through one uint8 buffer.

- ``Identity``: no compression (d values).
- ``ScaledSign(scale="l1" | "rms", block_size=None)``: scale × sign, 1 bit per entry + one scale
  per tensor or per block; the mean magnitude (ℓ1, contractive) or the RMS (1-bit Adam's, keeps the
  norm). Biased either way.
- ``TopK(ratio)``: the largest k magnitudes + int32 indices (contractive, biased).
- ``RandomK(ratio, generator)``: k random entries (scaled d/k: unbiased) + one seed.
- ``QSGD(levels, generator)``: stochastic rounding to ``levels`` levels per bucket (unbiased).
- ``ErrorFeedback(c)`` / ``error_feedback(c, x, e)``: e ← x + e − Q(x + e).

``build(spec, seed=0)`` makes one from plain data, for benchmarks: a name from ``COMPRESSORS``
(``"scaled-sign"``) or a dict ``{"name": "top-k", "ratio": 0.01}``, ``{"name": "scaled-sign",
"scale": "rms"}``; stochastic compressors get a
generator seeded with ``spec.get("seed", 0) + seed``. Nothing here imports ``torch.distributed``.
"""

from __future__ import annotations

from typing import Any

import torch

from scalopt.compress.base import (
    Compressor,
    Payload,
    Segmented,
    from_bytes,
    pack_bits,
    to_bytes,
    unpack_bits,
)
from scalopt.compress.error_feedback import ErrorFeedback, error_feedback
from scalopt.compress.qsgd import QSGD
from scalopt.compress.sign import Identity, ScaledSign
from scalopt.compress.sparse import RandomK, TopK

#: registry name -> class (``build`` passes the spec's other keys as keyword arguments)
COMPRESSORS: dict[str, type[Compressor]] = {
    "identity": Identity,
    "scaled-sign": ScaledSign,
    "top-k": TopK,
    "random-k": RandomK,
    "qsgd": QSGD,
}


def build(spec: str | dict[str, Any] | Compressor, *, seed: int = 0) -> Compressor:
    """A compressor from a name, a ``{"name": ..., **kwargs}`` dict, or a compressor (returned as is)."""
    if isinstance(spec, Compressor):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or spec.get("name") not in COMPRESSORS:
        name = spec.get("name") if isinstance(spec, dict) else spec
        raise ValueError(f"compressor must be one of {', '.join(COMPRESSORS)}, got {name!r}")
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "seed")}
    cls = COMPRESSORS[spec["name"]]
    if cls.stochastic:
        kwargs["generator"] = torch.Generator().manual_seed(int(spec.get("seed", 0)) + seed)
    return cls(**kwargs)


def names() -> list[str]:
    return list(COMPRESSORS)


__all__ = [
    "COMPRESSORS",
    "QSGD",
    "Compressor",
    "ErrorFeedback",
    "Identity",
    "Payload",
    "RandomK",
    "ScaledSign",
    "Segmented",
    "TopK",
    "build",
    "error_feedback",
    "from_bytes",
    "names",
    "pack_bits",
    "to_bytes",
    "unpack_bits",
]
