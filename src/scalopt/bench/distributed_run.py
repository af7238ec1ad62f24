"""Distributed runs: the same training loop on every rank of real gloo processes.

``run_distributed(spec, run_dir)`` starts ``spec.workers`` processes on loopback
(``scalopt.distributed.launch``), each training the same initial model (the shared init seed)
on its own data stream (``data_seed + rank``) with the spec's algorithm. Rank 0 writes the run's
record into ``run_dir`` (with the communication counters per row); rank r > 0 writes its own into
``run_dir/rank<r>``, and each rank's checkpoint is its own shard, so ``--resume`` continues every
rank from the same step. The network model, when the spec has one, delays every collective.

Rank 0 shows the progress bar of a single-process run. Each rank locks its own record directory
while it writes (``records.run_lock``); the parent checks the lock before it starts any process,
so a second writer fails at once with ``RunLockedError``. The ranks die with the parent process
(``launch``), so killing a run leaves nothing writing behind it.
With ``spec.comm == "sim"`` the ranks are ``SimComm`` logical ranks in this process instead (one
at a time, lock-step: same numbers as gloo for the sharded and rank-ordered reductions, no
parallel speed-up and no real network; a network model is only priced, not slept). Algorithms
that need a torch process group (the DDP comm hooks) cannot run there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from scalopt.bench import records
from scalopt.bench.loop import train_run
from scalopt.bench.spec import RunSpec


def _rank_main(
    comm: Any, spec: RunSpec, run_dir: str, checkpoint_every: int | None, resume: bool, progress: bool
) -> dict:
    from scalopt.distributed import registry

    def make_optimizer(model):
        return registry.build(
            spec.algorithm, model, spec.optimizer, dict(spec.hparams), comm, **spec.algorithm_args
        )

    rank_dir = Path(run_dir) if comm.rank == 0 else Path(run_dir) / f"rank{comm.rank}"
    extra = {"algorithm": spec.algorithm, "network": spec.network}
    return train_run(
        spec,
        rank_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress and comm.rank == 0,
        make_optimizer=make_optimizer,
        comm=comm,
        extra_header=extra,
    )


def run_distributed(
    spec: RunSpec,
    run_dir: Path,
    *,
    checkpoint_every: int | None,
    resume: bool,
    threads: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``spec`` on ``spec.workers`` gloo processes; returns rank 0's header."""
    from scalopt.distributed import NetworkModel, launch

    with records.run_lock(Path(run_dir)):  # raises now if another process writes the record
        pass
    delay = NetworkModel(*spec.network) if spec.network is not None else None
    if spec.comm == "sim":
        from scalopt.distributed import SimComm

        if spec.algorithm.startswith("ddp-"):
            raise ValueError(
                f"algorithm {spec.algorithm!r} wraps the model in DistributedDataParallel, which needs a "
                f"torch process group: run it with comm='gloo'"
            )
        torch.set_num_threads(threads)
        sim = SimComm(spec.workers, delay=delay, timeout_s=3600.0)
        return sim.run(_rank_main, spec, str(run_dir), checkpoint_every, resume, progress)[0]
    if progress:
        print(f"starting {spec.workers} gloo processes for {spec.label} ...", file=sys.stderr, flush=True)
    headers = launch(
        _rank_main,
        spec.workers,
        spec,
        str(run_dir),
        checkpoint_every,
        resume,
        progress,
        delay=delay,
        threads=threads,
        timeout_s=120.0,
    )
    return headers[0]
