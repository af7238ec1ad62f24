"""The runner: trains a list of RunSpecs into one output directory, resumably.

Layout of an output directory:

    OUT/suite.json          the suite name and every spec (so ``report`` needs nothing else)
    OUT/runs/<run_id>/      one record per run (header.json, rows.jsonl, checkpoint.pt while running)
    OUT/report.md, OUT/*.png   written by ``scalopt.report``

Finished runs are never retrained; with ``resume`` an unfinished run continues from its last
checkpoint. Ctrl-C or a crash keeps every finished run's record. Torch threads are pinned for the
whole suite so step times of different optimizers are comparable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scalopt.bench.distributed_run import run_distributed
from scalopt.bench.federated_run import train_federated
from scalopt.bench.loop import train_run
from scalopt.bench.spec import RunSpec

SUITE_FILE = "suite.json"


def write_manifest(out_dir: Path, specs: Sequence[RunSpec], *, suite: str, threads: int) -> None:
    """``OUT/suite.json``: the suite's name and every spec (a suite that runs in stages writes it last)."""
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("the suite has two identical runs; give them different labels or seeds")
    manifest = {"suite": suite, "threads": threads, "specs": [s.to_dict() for s in specs]}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / SUITE_FILE).write_text(json.dumps(manifest, indent=2))


def run_specs(
    specs: Sequence[RunSpec],
    out_dir: Path,
    *,
    suite: str = "custom",
    resume: bool = True,
    threads: int = 1,
    checkpoint_every: int | None = 100,
    progress: bool = True,
    log: Any = print,
) -> list[dict[str, Any]]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    write_manifest(out_dir, specs, suite=suite, threads=threads)
    headers = []
    for i, spec in enumerate(specs, start=1):
        t0 = time.perf_counter()
        run_dir = out_dir / "runs" / spec.run_id
        common = dict(checkpoint_every=checkpoint_every, resume=resume)
        if spec.federated:
            header = train_federated(spec, run_dir, progress=progress, **common)
        elif spec.distributed:
            header = run_distributed(spec, run_dir, threads=threads, progress=progress, **common)
        else:
            header = train_run(spec, run_dir, progress=progress, **common)
        final = header.get("final", {})
        log(
            f"[{i}/{len(specs)}] {spec.workload} {spec.label} seed {spec.seed}: "
            f"eval loss {final.get('eval_loss', float('nan')):.4f} ({time.perf_counter() - t0:.1f} s)"
        )
        headers.append(header)
    return headers
