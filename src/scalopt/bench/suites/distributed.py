"""The distributed suite: 2 real gloo processes on stdlib-lm, with and without one network model.

    scalopt bench --suite distributed --seeds 1 --out runs/distributed
    python benchmarks/hogwild_throughput.py          # Hogwild! on ctr (shared memory, not a RunSpec)

Runs (each twice: bare loopback, and under ``NETWORK``):

    sync clipped SGD     data-parallel over ClippedSGD (the averaged gradient is clipped), a round per step
    CELGC I=4, I=16      local clipped SGD, models averaged every I steps
    Overlap I=4          Overlap Local-SGD over ClippedSGD, the anchor averaged in the background
    DP Adam              data-parallel over Adam

``NETWORK`` = 1 ms latency + 1 Gbit/s per collective, applied by ``TorchComm`` to every collective of
every algorithm alike: stated once here, never tuned per algorithm. The SGD family shares one set of
hyperparameters (lr 0.3, max_norm 1, momentum 0.9: the best of lr 0.2/0.3/0.5 for synchronous
clipped SGD and CELGC I=16 in 2-worker probes); Adam uses lr 3e-3 (the default suite's AdamW lr).
``TARGET`` is common to all runs, set so that synchronous clipped SGD (seed 0) reaches it at step 432
of 576 (75%). Overlap uses the authors' pullback α = 0.6 without anchor momentum: along a direction
every step agrees on, a period then advances (1 − α)·τ steps' worth, so at the shared lr it trains
slower per step than the others (it is here for its wall time with vs without the network).
Steps and ``EVAL_EVERY`` are multiples of 16, so evaluations of the local methods fall right after
an average. Local methods also send a 1-byte all_gather every step (the ranks agree
on non-finite gradients), so under the network model they pay its latency every step.

Two workers because the reference machine has 2 cores: more processes would measure CPU contention,
not communication. One torch thread per process; the whole suite at ``--seeds 1`` takes ~9 minutes
on an idle 2-core machine (~50 s a run; eval time is excluded from the wall column), longer when
other jobs share the cores, which also inflates and scatters every wall-time column.
"""

from __future__ import annotations

from typing import Any

from scalopt.bench.spec import RunSpec
from scalopt.core.comm import NetworkModel

#: The one network model of the suite (1 ms latency, 1 Gbit/s = 125e6 bytes/s), for every algorithm.
NETWORK = NetworkModel(1e-3, 125e6)
WORKLOAD = "stdlib-lm"
WORKERS = 2
STEPS = 576
EVAL_EVERY = 16
TARGET = 1.92
CLIPPED = {"lr": 0.3, "max_norm": 1.0, "momentum": 0.9}
ADAM = {"lr": 3e-3}

#: (label, algorithm, algorithm arguments, inner optimizer, hyperparameters)
CONFIGS: list[tuple[str, str, dict[str, Any], str, dict[str, Any]]] = [
    ("sync clipped SGD", "data-parallel", {}, "clipped-sgd", CLIPPED),
    ("CELGC I=4", "celgc", {"period": 4}, "clipped-sgd", CLIPPED),
    ("CELGC I=16", "celgc", {"period": 16}, "clipped-sgd", CLIPPED),
    ("Overlap Local-SGD I=4", "overlap-local-sgd", {"period": 4, "pullback": 0.6}, "clipped-sgd", CLIPPED),
    ("DP Adam", "data-parallel", {}, "adam", ADAM),
]


def network_label(network: NetworkModel | None) -> str:
    if network is None:
        return "loopback"
    return f"{network.latency_s * 1e3:g} ms, {network.bandwidth_bytes_per_s * 8 / 1e9:g} Gbit/s"


def distributed(seeds: int = 1) -> list[RunSpec]:
    """Sync clipped SGD vs CELGC (I=4, 16) vs Overlap Local-SGD vs DP Adam, 2 gloo workers, ± network."""
    return [
        RunSpec(
            workload=WORKLOAD,
            optimizer=optimizer,
            label=f"{label} [{network_label(network)}]",
            hparams=dict(hparams),
            steps=STEPS,
            seed=seed,
            eval_every=EVAL_EVERY,
            target_loss=TARGET,
            workers=WORKERS,
            algorithm=algorithm,
            algorithm_args=dict(args),
            network=None if network is None else (network.latency_s, network.bandwidth_bytes_per_s),
        )
        for seed in range(seeds)
        for label, algorithm, args, optimizer, hparams in CONFIGS
        for network in (None, NETWORK)
    ]
