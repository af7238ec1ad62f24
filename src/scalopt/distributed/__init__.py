"""Distributed algorithms that talk through a ``Comm``, and the Comms they talk through.

Comms: ``TorchComm`` (a real process group: under ``torchrun`` call
``torch.distributed.init_process_group("gloo")`` then ``TorchComm()``), ``SimComm(world_size)``
(logical ranks in one process: ``SimComm(4).run(fn, *args)``), ``launch(fn, world_size, *args)``
(N gloo processes on loopback, ``fn(comm, *args)`` in each). ``NetworkModel`` emulates a slow
network. The ``Comm`` protocol itself lives in ``scalopt.core.comm``.

Algorithms (real ``torch.optim.Optimizer`` wrappers): ``DataParallelOptimizer``, ``LocalSGD``,
``CELGC``, ``OverlapLocalSGD``, ``EfficientAdam`` (compressed Adam steps both ways, error feedback),
``OneBitAdam`` (fp32 Adam warm-up, then a 1-bit momentum all-reduce under frozen v);
``hogwild`` (lock-free shared-memory workers). ``compression_hook(compressor)``: a DDP comm hook
with error feedback (``counted_powersgd_hook``: torch's PowerSGD, counted). Checkpoints:
``save_checkpoint`` / ``load_checkpoint`` (per-rank shards plus a manifest).
"""

from scalopt.core.comm import Comm, Handle, NetworkModel, SingleComm, wire_bytes
from scalopt.distributed.celgc import CELGC
from scalopt.distributed.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scalopt.distributed.compression_hook import CompressionHook, compression_hook, counted_powersgd_hook
from scalopt.distributed.data_parallel import DataParallelOptimizer
from scalopt.distributed.efficient_adam import EfficientAdam
from scalopt.distributed.hogwild import Diminishing, HogwildResult, hogwild
from scalopt.distributed.launcher import LaunchError, launch
from scalopt.distributed.local_sgd import LocalSGD
from scalopt.distributed.onebit_adam import OneBitAdam
from scalopt.distributed.overlap import OverlapLocalSGD
from scalopt.distributed.sim_comm import CollectiveMismatch, RankError, SimAbort, SimComm, SimRankComm
from scalopt.distributed.torch_comm import CommError, TorchComm
from scalopt.distributed.wrapper import DistributedOptimizer, ModelVector

__all__ = [
    "CELGC",
    "CheckpointError",
    "CollectiveMismatch",
    "Comm",
    "CommError",
    "CompressionHook",
    "DataParallelOptimizer",
    "Diminishing",
    "DistributedOptimizer",
    "EfficientAdam",
    "Handle",
    "HogwildResult",
    "LaunchError",
    "LocalSGD",
    "ModelVector",
    "NetworkModel",
    "OneBitAdam",
    "OverlapLocalSGD",
    "RankError",
    "SimAbort",
    "SimComm",
    "SimRankComm",
    "SingleComm",
    "TorchComm",
    "compression_hook",
    "counted_powersgd_hook",
    "hogwild",
    "launch",
    "load_checkpoint",
    "save_checkpoint",
    "wire_bytes",
]
