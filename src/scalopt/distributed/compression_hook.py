"""DDP communication hooks: compressed gradient exchange with error feedback, and counted PowerSGD.

``compression_hook(compressor, comm=None)`` gives users of ``DistributedDataParallel`` uplink
compression with any optimizer. For each gradient bucket b (DDP's flat buffer) on rank i:

    y_i = g_i^b + e_i^b ;  Δ_i = Q(y_i) ;  e_i^b ← y_i − Δ_i        error feedback
    all-gather the N payloads ;  ĝ^b = (1/N)·Σ_j Δ_j   (decompressed, summed in rank order)

and DDP writes ĝ^b into the gradients; the optimizer then steps as usual. One compressed tensor per
bucket (ScaledSign: one scale per bucket). Bytes per rank per bucket: (N−1)·P (P = payload bytes;
for ScaledSign ⌈d/8⌉ + element size), counted on ``comm`` (default: a ``TorchComm`` over the default
group, created on the first call), which also applies its network model. The first
``warmup_iters`` iterations (default 0) send the fp32 mean instead (an all-reduce). One round is
marked per iteration (at DDP's last bucket).
Residuals are kept per parameter, and each bucket is compressed in a canonical parameter order,
so DDP's reordering of its buckets after the first iteration changes nothing. The hook's state
(residuals, iteration, the compressor's generator) is ``hook.state_dict()`` /
``hook.load_state_dict(sd)`` (tensors and plain values: ``torch.load(weights_only=True)`` reads it);
residuals are named by the order in which DDP first hands the parameters to the hook, the same in
a fresh DDP over the same model, so restoring before the first backward resumes exactly.

    hook = scalopt.distributed.compression_hook(scalopt.compress.ScaledSign(), comm=comm)
    ddp_model.register_comm_hook(None, hook)

The communication is done inside the hook (blocking, then an already completed future): simple,
counted and delayed like every other scalopt collective, at the price of no overlap with backward.

``counted_powersgd_hook(comm)`` wraps torch's ``powerSGD_hook`` (Vogels et al., NeurIPS 2019,
arXiv 1905.13727) and adds what it sends to ``comm``'s counters: before ``start_powerSGD_iter`` one
fp32 all-reduce of the bucket; after, three all-reduces: the uncompressed tensors (1-D or not worth
compressing), the P factors and the Q factors (sizes read from the PowerSGD state). With a network
model the modelled time is slept in the hook. Use it as ``ddp.register_comm_hook(state, hook)``
with a ``PowerSGDState``.

Reference for error feedback on compressed gradients: S. P. Karimireddy, Q. Rebjock, S. Stich,
M. Jaggi, "Error Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML 2019.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from scalopt.compress import Compressor, error_feedback, from_bytes, to_bytes
from scalopt.compress.base import check_compressor
from scalopt.core.comm import Comm, sum_in_rank_order
from scalopt.core.validate import check_int

Hook = Callable[[Any, dist.GradBucket], torch.futures.Future]


def _hook_annotations(fn: Any) -> None:
    """DDP compares the hook's annotations with the real objects; under ``from __future__ import
    annotations`` they are strings, so set them explicitly."""
    fn.__annotations__ = {
        "state": Any,
        "bucket": dist.GradBucket,
        "return": torch.futures.Future[torch.Tensor],
    }


def _done(tensor: torch.Tensor) -> torch.futures.Future:
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(tensor)
    return fut


class CompressionHook:
    """A DDP comm hook (``hook(state, bucket)``) with error feedback per parameter; see the module doc."""

    def __init__(self, compressor: Compressor, *, comm: Comm | None = None, warmup_iters: int = 0) -> None:
        self.compressor = check_compressor("compressor", compressor)
        self.comm = comm
        self.warmup_iters = check_int("warmup_iters", warmup_iters)
        self.iteration = 0
        self.residuals: dict[int, torch.Tensor] = {}  # position of first sight -> residual
        self._position: dict[int, int] = {}  # id(parameter) -> position
        self.__name__ = self.__qualname__ = "compression_hook"  # DDP reads the hook's names

    def _comm(self) -> Comm:
        if self.comm is None:
            from scalopt.distributed.torch_comm import TorchComm

            self.comm = TorchComm()
        return self.comm

    def __call__(self, state: Any, bucket: dist.GradBucket) -> torch.futures.Future:
        comm = self._comm()
        grad = bucket.buffer()
        if self.iteration < self.warmup_iters:
            out = comm.all_reduce(grad, "mean")
        else:
            out = self.exchange(comm, bucket.parameters(), grad)
        if bucket.is_last():
            self.iteration += 1
            comm.mark_round()
        return _done(out)

    def _residual(self, param: torch.Tensor) -> torch.Tensor:
        position = self._position.setdefault(id(param), len(self._position))
        residual = self.residuals.get(position)
        if residual is None or residual.numel() != param.numel() or residual.dtype != param.dtype:
            residual = self.residuals[position] = torch.zeros(param.numel(), dtype=param.dtype)
        return residual

    def exchange(self, comm: Comm, params: list[torch.Tensor], grad: torch.Tensor) -> torch.Tensor:
        """Mean over ranks of Q(bucket + residual), the residuals (per parameter) updated.

        The bucket is compressed in a canonical parameter order (first sight), so the result does
        not depend on how DDP ordered this bucket (it reorders after the first iteration)."""
        sizes = [p.numel() for p in params]
        if sum(sizes) != grad.numel():
            raise ValueError(f"the bucket holds {grad.numel()} entries, its parameters {sum(sizes)}")
        residuals = [self._residual(p) for p in params]
        order = sorted(range(len(params)), key=lambda i: self._position[id(params[i])])
        pieces = grad.detach().split(sizes)
        canonical = torch.cat([pieces[i] for i in order])
        residual = torch.cat([residuals[i] for i in order])
        payload = error_feedback(self.compressor, canonical, residual)
        for i, part in zip(order, residual.split([sizes[i] for i in order])):
            self.residuals[self._position[id(params[i])]] = part
        parts = comm.all_gather(to_bytes(payload))
        c, n, dtype = self.compressor, grad.numel(), grad.dtype
        mean = sum_in_rank_order([c.decompress(from_bytes(c, part, n, dtype)) for part in parts], "mean")
        back = dict(zip(order, mean.split([sizes[i] for i in order])))
        return torch.cat([back[i] for i in range(len(params))])

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "residuals": {k: v.clone() for k, v in self.residuals.items()},
            "compressor": self.compressor.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Residuals are matched to parameters by the order DDP first hands them to the hook, which
        is the same in a fresh DDP over the same model: load before the first backward."""
        self.iteration = int(state["iteration"])
        self.residuals = {int(k): v.clone() for k, v in state["residuals"].items()}
        self._position = {}
        self.compressor.load_state_dict(state.get("compressor", {}))

    def __repr__(self) -> str:
        return f"CompressionHook({self.compressor!r}, warmup_iters={self.warmup_iters})"


_hook_annotations(CompressionHook.__call__)


def compression_hook(
    compressor: Compressor, *, comm: Comm | None = None, warmup_iters: int = 0
) -> CompressionHook:
    """A DDP comm hook compressing each gradient bucket with error feedback (see the module doc)."""
    return CompressionHook(compressor, comm=comm, warmup_iters=warmup_iters)


def _powersgd_sizes(state: Any, bucket: dist.GradBucket) -> int:
    """Entries PowerSGD all-reduces uncompressed in this bucket (its own rule, re-applied)."""
    total = 0
    for tensor in bucket.gradients():
        n = tensor.shape[0] if tensor.dim() else 1
        m = tensor.numel() // max(n, 1)
        rank = min(n, m, state.matrix_approximation_rank)
        if not (n + m) * rank * state.min_compression_rate < n * m:
            total += tensor.numel()
    return total


def counted_powersgd_hook(comm: Comm) -> Hook:
    """torch's ``powerSGD_hook`` with its all-reduces counted (and delayed) on ``comm``."""
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import powerSGD_hook

    if not callable(getattr(comm, "account", None)):
        raise ValueError(f"comm must count bytes (TorchComm, SimComm's rank endpoint), got {comm!r}")

    def hook(state: Any, bucket: dist.GradBucket) -> torch.futures.Future:
        started = state.iter >= state.start_powerSGD_iter
        grad = bucket.buffer()
        uncompressed = _powersgd_sizes(state, bucket) if started else 0
        fut = powerSGD_hook(state, bucket)
        if not started:
            sizes = [grad.numel()]
        else:
            index = bucket.index()
            sizes = [uncompressed, state.p_memory_dict[index].numel(), state.q_memory_dict[index].numel()]
        cost = sum(comm.account("all_reduce", torch.empty(s, dtype=grad.dtype, device="meta")) for s in sizes)
        if bucket.is_last():
            comm.mark_round()
        if cost > 0:
            time.sleep(cost)
        return fut

    hook.__name__ = "counted_powersgd_hook"
    _hook_annotations(hook)
    return hook
