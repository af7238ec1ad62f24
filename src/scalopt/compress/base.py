"""What every compressor shares: the payload, its wire encoding, bit packing and segmentation.

A compressor Q maps a tensor x (flattened to d entries) to a ``Payload``: a fixed list of dense
tensors — exactly what goes on the wire (values, packed bits, indices, scales, seeds) — plus the
shape and dtype of x, which the receiver knows from its own layout and which are not sent.

    payload = c.compress(x)          # x: any shape; compressed as a flat vector of d entries
    y = c.decompress(payload)        # Q(x), a new tensor of x's shape and dtype
    c.nbytes(payload)                # Σ over the payload's tensors of numel · element_size
    c.layout(d, dtype)               # ((dtype, numel), ...) of those tensors: depends on d only

Because ``layout`` depends on d and the dtype only, a receiver decodes a byte string without any
header: ``to_bytes(payload)`` concatenates the tensors' raw bytes (length ``nbytes``) and
``from_bytes(c, buf, shape, dtype)`` cuts them back. ``Segmented(c, sizes)`` compresses a flat
vector piece by piece (one scale per parameter tensor, say) and is itself a compressor.

Compressors are math: they never import ``torch.distributed``. Stochastic ones draw only from the
``torch.Generator`` they were given; its state is in ``state_dict()`` so a resumed run draws the
same numbers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

Layout = tuple[tuple[torch.dtype, int], ...]


@dataclass(frozen=True)
class Payload:
    """The tensors that go on the wire (``fields``) and the shape/dtype of what they encode."""

    fields: tuple[torch.Tensor, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self.fields)


class Compressor(ABC):
    """Base class: subclasses implement ``layout``, ``_compress(flat)`` and ``_decompress(fields, d, dtype)``.

    ``_compress`` returns the payload's tensors in ``layout`` order; ``_decompress`` gets them back
    with the entry count d and dtype and returns the flat Q(x).
    """

    stochastic: bool = False

    def compress(self, x: torch.Tensor) -> Payload:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got {type(x).__name__}")
        flat = x.detach().reshape(-1)
        fields = tuple(self._compress(flat))
        return Payload(fields, tuple(x.shape), x.dtype)

    def decompress(self, payload: Payload) -> torch.Tensor:
        return self._decompress(payload.fields, payload.numel, payload.dtype).reshape(payload.shape)

    def nbytes(self, payload: Payload) -> int:
        """The exact number of bytes this payload puts on the wire."""
        return payload.nbytes

    def layout_nbytes(self, numel: int, dtype: torch.dtype) -> int:
        """Bytes of the payload of any tensor of ``numel`` entries of ``dtype`` (known in advance)."""
        return sum(n * _itemsize(dt) for dt, n in self.layout(numel, dtype))

    # -- to implement ------------------------------------------------------------------------------
    @abstractmethod
    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        """(dtype, count) of every field of the payload of a tensor with ``numel`` entries."""

    @abstractmethod
    def _compress(self, flat: torch.Tensor) -> Sequence[torch.Tensor]:
        """The payload's fields for a flat tensor."""

    @abstractmethod
    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        """The flat tensor the fields stand for."""

    # -- state (stochastic compressors keep their generator's state) ---------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - stateless by default
        """Deterministic compressors keep no state."""

    def config(self) -> dict[str, Any]:
        """The constructor's plain arguments (for records and ``repr``)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def check_compressor(name: str, value: Any) -> Compressor:
    if not isinstance(value, Compressor):
        raise ValueError(
            f"{name} must be a scalopt.compress compressor (Identity, ScaledSign, TopK, RandomK, QSGD), "
            f"got {value!r}"
        )
    return value


def make_generator(name: str, generator: Any) -> torch.Generator:
    """The generator given, or a fresh one seeded with 0 (never the global RNG)."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {generator!r}")
    return generator


class GeneratorState:
    """Mixin: ``state_dict`` holds the generator's state (a uint8 tensor: ``weights_only`` loads it)."""

    generator: torch.Generator

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])


def sample_count(name: str, ratio: float, numel: int) -> int:
    """k = round(ratio·d), at least 1 and at most d (0 for an empty tensor)."""
    if numel == 0:
        return 0
    return max(1, min(numel, int(math.floor(ratio * numel + 0.5))))


# -- bit packing -------------------------------------------------------------------------------------
_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integer codes < 2^bits → uint8 of ``packed_nbytes(len, bits)`` bytes (LSB first).

    Eight codes make one ``bits``-byte little-endian word (bits ≤ 8), so the work is a few
    vectorised integer operations; wider codes go bit by bit.
    """
    codes = codes.reshape(-1)
    count = codes.numel()
    pad = (-count) % 8
    if bits == 1:
        flat = codes.to(torch.uint8)
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        return (flat.reshape(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)
    codes = codes.to(torch.int64)
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    if bits <= 8:
        words = (codes.reshape(-1, 8) << (torch.arange(8) * bits)).sum(1)
        out = ((words.unsqueeze(1) >> (torch.arange(bits) * 8)) & 255).to(torch.uint8).reshape(-1)
        return out[: packed_nbytes(count, bits)]
    flat = ((codes.unsqueeze(1) >> torch.arange(bits)) & 1).to(torch.uint8).reshape(-1)
    return pack_bits(flat, 1)[: packed_nbytes(count, bits)]


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``count`` int64 codes."""
    if bits == 1:
        return ((packed.reshape(-1, 1) & _BIT_WEIGHTS) != 0).reshape(-1)[:count].to(torch.int64)
    if bits <= 8:
        groups = -(-count // 8)
        data = packed.reshape(-1).to(torch.int64)
        if data.numel() < groups * bits:
            data = torch.cat([data, data.new_zeros(groups * bits - data.numel())])
        words = (data.reshape(groups, bits) << (torch.arange(bits) * 8)).sum(1)
        codes = (words.unsqueeze(1) >> (torch.arange(8) * bits)) & ((1 << bits) - 1)
        return codes.reshape(-1)[:count]
    flat = unpack_bits(packed, 1, count * bits)
    return (flat.reshape(count, bits) << torch.arange(bits)).sum(1)


# -- wire encoding -----------------------------------------------------------------------------------
def to_bytes(payload: Payload) -> torch.Tensor:
    """The payload as one uint8 tensor of ``payload.nbytes`` bytes (its fields' raw bytes, in order)."""
    parts = [f.contiguous().reshape(-1).view(torch.uint8) for f in payload.fields if f.numel()]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8)


def from_bytes(
    compressor: Compressor, buf: torch.Tensor, shape: tuple[int, ...] | int, dtype: torch.dtype
) -> Payload:
    """Decode what :func:`to_bytes` wrote for a tensor of ``shape`` and ``dtype`` (``buf`` may be longer)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    fields, offset = [], 0
    for dt, n in compressor.layout(math.prod(shape), dtype):
        size = n * _itemsize(dt)
        fields.append(buf[offset : offset + size].clone().view(dt))  # clone: aligned, owned storage
        offset += size
    return Payload(tuple(fields), shape, dtype)


class Segmented(Compressor):
    """Compress a flat vector piece by piece: segment i (``sizes[i]`` entries) is compressed alone."""

    def __init__(self, compressor: Compressor, sizes: Sequence[int]) -> None:
        self.compressor = check_compressor("compressor", compressor)
        self.sizes = [int(s) for s in sizes]
        self.total = sum(self.sizes)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.compressor.stochastic

    def _check(self, numel: int) -> None:
        if numel != self.total:
            raise ValueError(f"Segmented over {self.total} entries got a tensor of {numel}")

    def layout(self, numel: int, dtype: torch.dtype) -> Layout:
        self._check(numel)
        return tuple(item for s in self.sizes for item in self.compressor.layout(s, dtype))

    def _compress(self, flat: torch.Tensor) -> list[torch.Tensor]:
        self._check(flat.numel())
        out: list[torch.Tensor] = []
        for piece in flat.split(self.sizes):
            out.extend(self.compressor._compress(piece))
        return out

    def _decompress(self, fields: Sequence[torch.Tensor], numel: int, dtype: torch.dtype) -> torch.Tensor:
        self._check(numel)
        pieces, i = [], 0
        for s in self.sizes:
            n = len(self.compressor.layout(s, dtype))
            pieces.append(self.compressor._decompress(fields[i : i + n], s, dtype))
            i += n
        return torch.cat(pieces) if pieces else torch.empty(0, dtype=dtype)

    def state_dict(self) -> dict[str, Any]:
        return self.compressor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.compressor.load_state_dict(state)

    def config(self) -> dict[str, Any]:
        return {"compressor": self.compressor, "sizes": self.sizes}
