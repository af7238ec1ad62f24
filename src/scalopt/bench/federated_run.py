"""Federated runs: rounds of a ``scalopt.federated`` algorithm over a workload's client split.

``train_federated(spec, run_dir)`` builds the workload's clients (``federated_clients``, seeded by
``partition_seed``, default the run's seed), the initial model from the run's seed, and the
algorithm named by ``spec.optimizer`` with ``spec.hparams``; then runs ``spec.steps`` rounds of
:func:`scalopt.federated.federated_round`, evaluating the global model every ``eval_every`` rounds.
Each row is one round: ``step`` (rounds done), ``loss`` (mean local loss of the good clients),
``step_time`` (the round's seconds), cumulative ``bytes_up``, ``bytes_down``, ``bytes_sent`` (both),
``client_steps``, and ``failed`` (client -> error) / ``skipped`` when a round had faults. The header
records the configuration, every client's size and label histogram, per-client bytes up and down
and the fault counts. A checkpoint is the algorithm's ``state_dict`` (the whole server state); the
clients hold none, so ``--resume`` continues bitwise.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from scalopt.bench import records
from scalopt.bench.spec import RunSpec
from scalopt.core.validate import check_int

CHECKPOINT = "checkpoint.pt"
DEFAULTS: dict[str, Any] = {
    "clients": 20,
    "clients_per_round": 5,
    "local_steps": 10,
    "dirichlet": 1.0,
    "min_clients": 1,
    "partition_seed": None,
}


def federated_config(spec: RunSpec) -> dict[str, Any]:
    """The spec's federated settings over ``DEFAULTS``; unknown keys and bad values raise ValueError."""
    unknown = sorted(set(spec.federated) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown federated setting(s) {unknown}; valid: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **spec.federated}
    for key in ("clients", "clients_per_round", "local_steps", "min_clients"):
        check_int(key, cfg[key], minimum=1)
    if cfg["clients_per_round"] > cfg["clients"]:
        raise ValueError(
            f"clients_per_round must be <= clients={cfg['clients']}, got {cfg['clients_per_round']}"
        )
    alpha = float(cfg["dirichlet"]) if not isinstance(cfg["dirichlet"], bool) else math.nan
    if not alpha > 0:
        raise ValueError(f"dirichlet must be > 0 (or 'inf' for IID), got {cfg['dirichlet']!r}")
    if cfg["partition_seed"] is None:
        cfg["partition_seed"] = spec.seed
    check_int("partition_seed", cfg["partition_seed"])
    return cfg


def train_federated(
    spec: RunSpec,
    run_dir: Path,
    *,
    checkpoint_every: int | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the federated ``spec`` writing its record into ``run_dir``; returns the header."""
    from scalopt import workloads
    from scalopt.federated import federated_round, load_into, message_bytes
    from scalopt.federated import registry as algorithms

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and (run_dir / records.HEADER).exists():
        header = records.read_header(run_dir)
        if header.get("status") == "done":
            return header
    cfg = federated_config(spec)
    wl = workloads.get(spec.workload, **spec.workload_overrides)
    clients = wl.federated_clients(
        cfg["clients"],
        alpha=float(cfg["dirichlet"]),
        generator=torch.Generator().manual_seed(cfg["partition_seed"]),
    )
    model = wl.init_model(torch.Generator().manual_seed(spec.seed))
    algo = algorithms.build(
        spec.optimizer,
        model.parameters(),
        local_steps=cfg["local_steps"],
        clients_per_round=cfg["clients_per_round"],
        min_clients=cfg["min_clients"],
        seed=spec.seed,
        **spec.hparams,
    )
    target = spec.target_loss if spec.target_loss is not None else wl.target_loss
    header: dict[str, Any] = {
        "spec": spec.to_dict(),
        "run_id": spec.run_id,
        "label": spec.label,
        "workload": wl.describe(),
        "target_loss": target,
        "data_seed": spec.data_seed,
        "world_size": 1,
        "rank": 0,
        "environment": records.environment(),
        "status": "running",
        "federated": {
            "config": cfg,
            "algorithm": algo.hparams(),
            "clients": [c.describe() for c in clients],
            "message_bytes": {
                "down": message_bytes(algo.broadcast()),
                "up_per_model": sum(t.numel() * t.element_size() for t in algo.x) * len(algo.up_keys),
            },
        },
    }
    ckpt_path = run_dir / CHECKPOINT
    start, wall_offset = 0, 0.0
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        algo.load_state_dict(ckpt["server"])
        start, wall_offset = algo.round, float(ckpt["wall"])
        header["resumed_from"] = start
    records.write_header(run_dir, header)
    writer = records.RowWriter(run_dir, keep_until=start if start > 0 else None)
    bar = tqdm(total=spec.steps, initial=start, desc=spec.label[:24], leave=False, disable=not progress)
    t_start = time.perf_counter() - wall_offset
    eval_time = 0.0
    try:
        for r in range(start + 1, spec.steps + 1):
            t0 = time.perf_counter()
            rec = federated_round(algo, clients, model, wl.loss, data_seed=spec.data_seed)
            counters = algo.counters
            up, down = sum(counters["bytes_up"].values()), sum(counters["bytes_down"].values())
            row: dict[str, Any] = {
                "step": r,
                "loss": rec.train_loss,
                "step_time": time.perf_counter() - t0,
                "wall": time.perf_counter() - t_start - eval_time,
                "bytes_up": up,
                "bytes_down": down,
                "bytes_sent": up + down,
                "client_steps": counters["client_steps"],
                "rounds": r,
            }
            if rec.failed:
                row["failed"] = rec.failed
            if rec.skipped:
                row["skipped"] = True
            if r % spec.eval_every == 0 or r == spec.steps:
                e0 = time.perf_counter()
                load_into(model, algo.x)
                row.update({f"eval_{k}": v for k, v in wl.evaluate(model).items()})
                eval_time += time.perf_counter() - e0
            writer.write(row)
            if checkpoint_every and r % checkpoint_every == 0 and r < spec.steps:
                tmp = ckpt_path.with_suffix(".tmp")
                torch.save({"server": algo.state_dict(), "wall": row["wall"]}, tmp)
                tmp.replace(ckpt_path)
            bar.update(1)
        header["status"] = "done"
    finally:
        bar.close()
        writer.close()
    rows = records.read_rows(run_dir)
    evals = [r for r in rows if "eval_loss" in r]
    header["final"] = {
        "train_loss": rows[-1]["loss"] if rows else math.nan,
        "eval_loss": evals[-1]["eval_loss"] if evals else math.nan,
        "eval_accuracy": evals[-1].get("eval_accuracy", math.nan) if evals else math.nan,
        "steps": rows[-1]["step"] if rows else 0,
    }
    header["federated"]["counters"] = algo.counters
    records.write_header(run_dir, header)
    if ckpt_path.exists():
        ckpt_path.unlink()
    return header
