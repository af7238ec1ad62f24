"""The one training loop every single-process run uses (and every rank of a distributed run).

    model = workload.init_model(Generator(seed))          same initial model for every optimizer
    batches = workload.batches("train", Generator(data_seed))
    repeat: zero_grad → loss → backward → opt.step() (timed alone) → log
            (optimizers with a closure protocol, ``scalopt.core.closure``: opt.step(closure[, sample])
             where closure() is the loss of this step's batch and sample() the loss of the next batch
             drawn from the same stream; both without backward — the optimizer differentiates)
            evaluate every ``eval_every`` steps and at the end; checkpoint every ``checkpoint_every``

Each row has step_time (opt.step() alone; for closure optimizers it contains their forward and
backward passes) and iter_time (forward + backward + step, comparable across both kinds). On CUDA
(``spec.device``) step_time is the training stream's time between events around opt.step(), and
the header records ``peak_memory_bytes`` (``torch.cuda.max_memory_allocated``); ``spec.autocast``
runs the loss under ``torch.autocast``. An optimizer that raises FloatingPointError (scalopt's
non-finite policy: its gradients or products overflowed) ends the run as diverged, like a
non-finite loss.

A checkpoint holds the model, the optimizer, the data generator's state (the data position), the
step and the elapsed wall time; resuming from it continues exactly as the uninterrupted run would
(the stream of batches, the parameters and the optimizer state are all restored).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from scalopt.bench import records
from scalopt.bench.spec import RunSpec
from scalopt.core.closure import LOSS_AND_SAMPLE, closure_protocol
from scalopt.core.comm import comm_counters
from scalopt.optim import registry

CHECKPOINT = "checkpoint.pt"

#: model -> optimizer, or (optimizer, forward module) when the loss must run through a wrapper (DDP)
OptimizerFactory = Callable[
    [torch.nn.Module], torch.optim.Optimizer | tuple[torch.optim.Optimizer, torch.nn.Module]
]


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _metrics(opt: torch.optim.Optimizer) -> dict[str, float]:
    get = getattr(opt, "metrics", None)
    return {f"opt_{k}": v for k, v in get().items()} if get is not None else {}


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the tensors in ``opt.state`` (numel·element_size, each distinct data_ptr counted once).

    Views into shared buffers (Shampoo's stacks) start at different addresses, so each counts its own
    part; a tensor held twice counts once. Scalars and non-tensor state count nothing."""
    seen: dict[tuple[torch.device, int], int] = {}
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                seen[(v.device, v.data_ptr())] = v.numel() * v.element_size()
    return sum(seen.values())


def autocast(device: torch.device, kind: str | None) -> Any:
    """The forward pass's precision: float32 (no autocast) or ``torch.autocast`` in bfloat16."""
    if kind is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class StepTimer:
    """opt.step()'s time: ``perf_counter`` on the CPU; on CUDA two events on the training stream
    (read after the loss, which waits for that stream only, so roots on a side stream are not waited
    for), the stream's time from the step's first kernel to its last."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))

    def start(self, at: float | None = None) -> None:
        self.t0 = time.perf_counter() if at is None else at
        if self.cuda:
            self.events[0].record()

    def stop(self) -> float:
        if self.cuda:
            self.events[1].record()
        return time.perf_counter() - self.t0

    def seconds(self, host: float) -> float:
        return self.events[0].elapsed_time(self.events[1]) / 1e3 if self.cuda else host


def _closures(wl: Any, model: torch.nn.Module, batch: Any, batches: Any, protocol: str) -> tuple[Any, ...]:
    """``step``'s arguments under a closure protocol: (closure,) or (closure, sample)."""

    def closure() -> torch.Tensor:
        return wl.loss(model, batch)

    if protocol != LOSS_AND_SAMPLE:
        return (closure,)

    def sample() -> torch.Tensor:
        return wl.loss(model, next(batches))

    return (closure, sample)


def train_run(spec: RunSpec, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """Train ``spec`` writing its record into ``run_dir``; returns the header (with the final summary).

    The run directory is locked while the run writes to it (``records.run_lock``: a second writer
    raises ``RunLockedError``). Keywords as in :func:`_train`.
    """
    with records.run_lock(Path(run_dir)):
        return _train(spec, Path(run_dir), **kwargs)


def _train(
    spec: RunSpec,
    run_dir: Path,
    *,
    checkpoint_every: int | None = None,
    resume: bool = True,
    progress: bool = True,
    make_optimizer: OptimizerFactory | None = None,
    comm: Any = None,
    extra_header: dict[str, Any] | None = None,
    workload: Any = None,
) -> dict[str, Any]:
    """The loop of :func:`train_run` (its caller holds the run directory's lock).

    ``make_optimizer`` builds the optimizer from the model (default: the registry entry with the
    spec's hyperparameters over ``model.named_parameters()``); distributed runs pass one that
    wraps it with their algorithm and pass ``comm`` so its counters are logged. It may return
    ``(optimizer, forward_module)``: the loss then runs through ``forward_module`` (a
    ``DistributedDataParallel`` wrapper of ``model``); evaluation and checkpoints use ``model``.
    """
    from scalopt import workloads  # the loop sits above workloads in the layering

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and (run_dir / records.HEADER).exists():
        header = records.read_header(run_dir)
        if header.get("status") == "done":
            return header
    wl = workload if workload is not None else workloads.get(spec.workload, **spec.workload_overrides)
    init_gen = torch.Generator().manual_seed(spec.seed)
    data_seed = spec.data_seed + (comm.rank if comm is not None else 0)
    data_gen = torch.Generator().manual_seed(data_seed)
    device = torch.device(spec.device)
    model = wl.init_model(init_gen).to(device)
    forward_model = model
    if make_optimizer is None:
        entry = registry.get(spec.optimizer)
        opt = entry.build(model.named_parameters() if entry.scalopt else model.parameters(), **spec.hparams)
    else:
        opt = make_optimizer(model)
        if isinstance(opt, tuple):
            opt, forward_model = opt
    target = spec.target_loss if spec.target_loss is not None else wl.target_loss
    header: dict[str, Any] = {
        "spec": spec.to_dict(),
        "run_id": spec.run_id,
        "label": spec.label,
        "optimizer_defaults": {
            k: v for k, v in opt.defaults.items() if isinstance(v, (int, float, bool, str, tuple))
        },
        "workload": wl.describe(),
        "target_loss": target,
        "data_seed": data_seed,
        "world_size": comm.world_size if comm is not None else 1,
        "rank": comm.rank if comm is not None else 0,
        "device": spec.device,
        "autocast": spec.autocast,
        "environment": records.environment(device),
        "status": "running",
        **(extra_header or {}),
    }

    start, wall_offset = 0, 0.0
    ckpt_path = run_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        data_gen.set_state(ckpt["data_rng"])
        start, wall_offset = int(ckpt["step"]), float(ckpt["wall"])
        header["resumed_from"] = start
    records.write_header(run_dir, header)
    writer = records.RowWriter(run_dir, keep_until=start if start > 0 else None)

    batches = wl.batches("train", data_gen)
    protocol = closure_protocol(opt)
    model.train()
    bar = tqdm(
        total=spec.steps, initial=start, desc=spec.label[:24], leave=False, disable=not progress, unit="step"
    )
    timer = StepTimer(device)
    t_start = time.perf_counter() - wall_offset
    eval_time = 0.0
    last_loss = math.nan
    try:
        for step in range(start + 1, spec.steps + 1):
            batch = next(batches)
            t_iter = time.perf_counter()
            if protocol is None:
                opt.zero_grad(set_to_none=True)
                with autocast(device, spec.autocast):
                    loss = wl.loss(forward_model, batch)
                loss.backward()
                timer.start()
                try:
                    opt.step()
                except FloatingPointError as err:  # a non-finite gradient (nonfinite="raise"): diverged
                    header["nonfinite"] = str(err)
                    loss = torch.tensor(math.nan)
            else:  # the optimizer evaluates (and differentiates) the loss itself
                timer.start(t_iter)
                try:
                    loss = opt.step(*_closures(wl, forward_model, batch, batches, protocol))
                except FloatingPointError as err:  # its gradients or products overflowed: diverged
                    header["nonfinite"] = str(err)
                    loss = torch.tensor(math.nan)
            step_time = timer.stop()
            last_loss = float(loss.detach())  # on CUDA: waits for this step's work on the training stream
            step_time = timer.seconds(step_time)
            iter_time = time.perf_counter() - t_iter
            if "optimizer_state_bytes" not in header:  # after the first step: the state exists
                header["optimizer_state_bytes"] = optimizer_state_bytes(opt)
            row: dict[str, Any] = {
                "step": step,
                "loss": last_loss,
                "step_time": step_time,
                "iter_time": iter_time,
                "wall": time.perf_counter() - t_start - eval_time,
            }
            if step % spec.eval_every == 0 or step == spec.steps:
                e0 = time.perf_counter()
                row.update({f"eval_{k}": v for k, v in wl.evaluate(model).items()})
                row.update(_metrics(opt))
                eval_time += time.perf_counter() - e0
            row.update(comm_counters(comm))
            writer.write(row)
            if not math.isfinite(last_loss):
                header["status"] = "diverged"
                break
            if checkpoint_every and step % checkpoint_every == 0 and step < spec.steps:
                _save_checkpoint(
                    ckpt_path,
                    {
                        "step": step,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "data_rng": data_gen.get_state(),
                        "wall": row["wall"],
                    },
                )
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{last_loss:.3f}")
        else:
            header["status"] = "done"
    finally:
        bar.close()
        writer.close()
    if header["status"] == "diverged":
        header["status"] = "done"
        header["diverged"] = True
    if device.type == "cuda":
        header["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    rows = records.read_rows(run_dir)
    final_eval = [r for r in rows if "eval_loss" in r]
    header["final"] = {
        "train_loss": last_loss,
        "eval_loss": final_eval[-1]["eval_loss"] if final_eval else math.nan,
        "steps": rows[-1]["step"] if rows else 0,
    }
    records.write_header(run_dir, header)
    if ckpt_path.exists():
        ckpt_path.unlink()
    return header
