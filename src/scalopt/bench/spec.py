"""``RunSpec``: one training run, fully described by plain data.

A run is a workload (with config overrides), an optimizer from the registry (with hyperparameter
overrides), a number of steps and a seed. A distributed algorithm that is an optimizer itself
(``scalopt.distributed.registry.OWN_OPTIMIZER``) needs no optimizer: it is filled in with the
algorithm's own, and a different one raises ``ValueError``. ``seed`` is the init seed (the same initial
model for every optimizer); the data stream uses ``data_seed`` (per rank in distributed runs). ``device``
("cpu" or "cuda", one process) is where the model, its batches and the optimizer state live;
``autocast="bf16"`` runs the forward pass and the loss under ``torch.autocast`` in bfloat16 (the
parameters, gradients and optimizer state stay float32). Suites are functions returning lists of
RunSpecs. A federated run (``federated`` set) trains a ``scalopt.federated`` algorithm over the
workload's client split for ``steps`` rounds.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from scalopt.core.validate import check_choice, check_int

DEVICES = ("cpu", "cuda")
AUTOCASTS = (None, "bf16")

#: how a distributed run's ranks talk: real gloo processes, or SimComm's logical ranks in one process
COMMS = ("gloo", "sim")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    workload: str
    optimizer: str | None = None  # required unless the algorithm is an optimizer itself
    steps: int
    seed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    workload_overrides: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    eval_every: int = 50
    target_loss: float | None = None  # None: the workload's default target
    workers: int = 1
    algorithm: str | None = None  # a scalopt.distributed registry name (needs workers >= 1)
    algorithm_args: dict[str, Any] = field(default_factory=dict)
    network: tuple[float, float] | None = None  # NetworkModel(latency_s, bandwidth_bytes_per_s)
    comm: str = "gloo"  # "gloo": real processes; "sim": SimComm logical ranks in one process
    #: a federated run (``optimizer`` is then a scalopt.federated registry name and ``hparams`` its
    #: arguments; ``steps`` counts rounds): clients, clients_per_round, local_steps, dirichlet
    #: (the partition's alpha; "inf" for IID), min_clients, partition_seed
    federated: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # where the model, batches and optimizer state live: "cpu" or "cuda"
    autocast: str | None = None  # None (float32) or "bf16": forward and loss under torch.autocast

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=1)
        check_int("seed", self.seed, minimum=0)
        check_int("eval_every", self.eval_every, minimum=1)
        check_int("workers", self.workers, minimum=1)
        if self.workers > 1 and self.algorithm is None:
            raise ValueError(f"workers={self.workers} needs an algorithm (e.g. 'data-parallel')")
        if self.algorithm is not None:
            from scalopt.distributed.registry import resolve_optimizer

            object.__setattr__(self, "optimizer", resolve_optimizer(self.algorithm, self.optimizer))
        elif self.optimizer is None:
            raise ValueError("optimizer is required (--optimizer on the command line), e.g. 'adam'")
        if self.comm not in COMMS:
            raise ValueError(f"comm must be one of {', '.join(COMMS)}, got {self.comm!r}")
        if self.comm == "sim" and self.algorithm is None:
            raise ValueError("comm='sim' needs an algorithm (e.g. 'data-parallel')")
        if self.network is not None:
            object.__setattr__(self, "network", tuple(self.network))
        if self.federated and self.algorithm is not None:
            raise ValueError(f"a federated run takes no distributed algorithm, got {self.algorithm!r}")
        check_choice("device", self.device, DEVICES)
        check_choice("autocast", self.autocast, AUTOCASTS)
        if self.device != "cpu" and (self.workers > 1 or self.federated):
            raise ValueError(
                f"device={self.device!r} runs one process on one model; workers={self.workers} and "
                f"federated runs need 'cpu'"
            )
        if not self.label:
            object.__setattr__(self, "label", self.optimizer)
        json.dumps(self.to_dict())  # hyperparameters must be plain data (records are JSON)

    @property
    def distributed(self) -> bool:
        return self.algorithm is not None

    @property
    def data_seed(self) -> int:
        return self.seed + 1_000_003

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``comm``, ``device`` and ``autocast`` only when not their defaults, so older
        records (gloo, float32 on the CPU) keep their run ids."""
        out = asdict(self)
        for key, default in (("comm", "gloo"), ("device", "cpu"), ("autocast", None)):
            if out[key] == default:
                del out[key]
        if not out["federated"]:  # absent unless used: earlier records keep their run ids
            del out["federated"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)

    @property
    def config_id(self) -> str:
        """A hash of the whole configuration except the seed: runs that share it differ only by seed."""
        return config_id(self.to_dict())

    @property
    def run_id(self) -> str:
        """A readable, unique directory name: label, seed and a hash of the whole spec."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", self.label).strip("_")
        return f"{self.workload}__{slug}__s{self.seed}__{digest}"


def config_id(spec: dict[str, Any]) -> str:
    """8 hex digits of sha256 over a spec's fields except ``seed`` (a run's configuration)."""
    config = {k: v for k, v in spec.items() if k != "seed"}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
