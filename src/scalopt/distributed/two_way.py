"""The two-way compressed exchange of EfficientAdam and OneBitAdam: layout, exchange, error buffers.

Per dtype the flat vector (``ModelVector`` order, D entries) is cut into N chunks of ⌈D/N⌉ and rank
j serves chunk j. ``TwoWayLayout`` holds the bounds and, per chunk, the compressors that encode it:
the compressor itself (one scale per chunk: 1-bit Adam) or, with ``per_tensor=True``, a
``Segmented`` one cut at parameter-tensor edges (one scale per tensor piece: Efficient-Adam).
``exchange``: every rank compresses each chunk of x with its worker error e_i and one
``all_to_all`` sends chunk j to rank j (payloads padded to the longest chunk's); rank j averages
the N payloads in rank order, compresses the mean with its server error ẽ_j, and one
``all_gather`` returns every chunk to every rank. ``ErrorBuffers`` holds e_i (length D) and ẽ_j
(this rank's chunk) per dtype, created with zeros on the parameters' device the first time a layout
is exchanged, saved in ``state_dict()["distributed"]`` and restored on load (per-rank checkpoint
shards, so a resume is bitwise with the same world size and parameters).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from scalopt.compress import Compressor, Segmented, error_feedback, from_bytes, to_bytes
from scalopt.core.comm import Comm, sum_in_rank_order


class FlatLayout(Protocol):
    """What the buffers need from a layout: one dtype's flat length, device and per-rank chunks."""

    numel: int
    dtype: torch.dtype
    device: torch.device
    bounds: list[tuple[int, int]]


class ErrorBuffers:
    """e_i and ẽ_j per dtype (keyed by ``str(dtype)``)."""

    def __init__(self) -> None:
        self.worker: dict[str, torch.Tensor] = {}
        self.server: dict[str, torch.Tensor] = {}

    def get(self, lay: FlatLayout, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(lay.dtype)
        if key not in self.worker:
            lo, hi = lay.bounds[rank]
            self.worker[key] = torch.zeros(lay.numel, dtype=lay.dtype, device=lay.device)
            self.server[key] = torch.zeros(hi - lo, dtype=lay.dtype, device=lay.device)
        return self.worker[key], self.server[key]

    def reset(self) -> None:
        self.worker, self.server = {}, {}

    def state(self) -> dict[str, Any]:
        return {
            "worker_error": {k: v.clone() for k, v in self.worker.items()},
            "server_error": {k: v.clone() for k, v in self.server.items()},
        }

    def load(self, extra: dict[str, Any], layouts: list[Any], comm: Comm) -> None:
        """Restore the buffers saved by ``state`` after checking they fit ``layouts`` on this rank."""
        sizes = {}
        for lay in layouts:
            lo, hi = lay.bounds[comm.rank]
            sizes[str(lay.dtype)] = (lay.numel, hi - lo, lay.device)
        worker, server = dict(extra.get("worker_error", {})), dict(extra.get("server_error", {}))
        for key in worker:
            if (
                key not in sizes
                or key not in server
                or ((worker[key].numel(), server[key].numel()) != sizes[key][:2])
            ):
                got = (worker[key].numel(), server[key].numel() if key in server else None)
                raise ValueError(
                    f"state_dict's error-feedback buffers for {key} hold {got[0]} / {got[1]} entries, "
                    f"this optimizer's parameters need {sizes.get(key, (None, None))[:2]}: load it into "
                    f"the same parameters and world size"
                )
        self.worker = {k: v.to(sizes[k][2]).clone() for k, v in worker.items()}
        self.server = {k: v.to(sizes[k][2]).clone() for k, v in server.items()}


class TwoWayLayout:
    """One dtype's flat vector cut into N chunks (rank j serves chunk j) and each chunk's compressors."""

    def __init__(
        self,
        tensors: list[torch.Tensor],
        world_size: int,
        compressor: Compressor,
        server_compressor: Compressor,
        *,
        per_tensor: bool,
    ) -> None:
        self.dtype, self.device = tensors[0].dtype, tensors[0].device
        sizes = [t.numel() for t in tensors]
        self.numel = D = sum(sizes)
        S = -(-D // world_size)
        self.bounds = [(min(j * S, D), min((j + 1) * S, D)) for j in range(world_size)]
        self.up: list[Compressor] = []
        self.down: list[Compressor] = []
        edges, acc = set(), 0
        for s in sizes:
            acc += s
            edges.add(acc)
        for lo, hi in self.bounds:
            if per_tensor:
                cuts = sorted({lo, hi} | {e for e in edges if lo < e < hi})
                pieces = [b - a for a, b in zip(cuts, cuts[1:])]
                self.up.append(Segmented(compressor, pieces))
                self.down.append(Segmented(server_compressor, pieces))
            else:
                self.up.append(compressor)
                self.down.append(server_compressor)
        self.up_bytes = [c.layout_nbytes(hi - lo, self.dtype) for c, (lo, hi) in zip(self.up, self.bounds)]
        self.down_bytes = [
            c.layout_nbytes(hi - lo, self.dtype) for c, (lo, hi) in zip(self.down, self.bounds)
        ]
        self.up_len, self.down_len = max(self.up_bytes), max(self.down_bytes)

    def shard_numel(self, rank: int) -> int:
        lo, hi = self.bounds[rank]
        return hi - lo


def exchange(comm: Comm, lay: TwoWayLayout, x: torch.Tensor, errors: ErrorBuffers) -> torch.Tensor:
    """The compressed average of every rank's ``x``: chunks up to their server, chunks back down."""
    n, rank = comm.world_size, comm.rank
    if lay.numel == 0:
        return x
    e, e_server = errors.get(lay, rank)
    # worker: each chunk with error feedback, into one buffer of N equal slots
    up = torch.zeros(n * lay.up_len, dtype=torch.uint8, device=lay.device)
    for j, (lo, hi) in enumerate(lay.bounds):
        if hi > lo:
            payload = error_feedback(lay.up[j], x[lo:hi], e[lo:hi])
            up[j * lay.up_len : j * lay.up_len + lay.up_bytes[j]] = to_bytes(payload)
    received = comm.all_to_all(up)
    # server (this rank's chunk): average the N uploads in rank order, compress with ẽ_j
    lo, hi = lay.bounds[rank]
    down = torch.zeros(lay.down_len, dtype=torch.uint8, device=lay.device)
    if hi > lo:
        c = lay.up[rank]
        parts = [
            c.decompress(from_bytes(c, chunk, hi - lo, lay.dtype)) for chunk in received.split(lay.up_len)
        ]
        mean = sum_in_rank_order(parts, "mean")
        down[: lay.down_bytes[rank]] = to_bytes(error_feedback(lay.down[rank], mean, e_server))
    # everyone: every chunk
    out = torch.empty(lay.numel, dtype=lay.dtype, device=lay.device)
    for j, (chunk, (lo, hi)) in enumerate(zip(comm.all_gather(down), lay.bounds)):
        if hi > lo:
            out[lo:hi] = lay.down[j].decompress(from_bytes(lay.down[j], chunk, hi - lo, lay.dtype))
    return out
