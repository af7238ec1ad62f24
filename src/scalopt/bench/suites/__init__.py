"""Suites: named functions ``suite(seeds) -> list[RunSpec]``; one module per family.

A suite may take ``device=`` ("cpu" or "cuda"; ``scalopt bench --device`` passes it when it does);
every spec of a suite that does not is moved to the device given. Suite modules are imported when a
suite is asked for, so ``scalopt list`` stays fast and a family's
heavy imports (torch.distributed) load only when its suite runs.

A suite that must run in stages (a later run's settings computed from an earlier run's record, or
experiments that are not RunSpecs) also defines ``run_suite(out_dir, *, seeds, resume, threads,
checkpoint_every, progress, log)``; ``runner(name)`` returns it, and the command line calls it instead
of running the spec list itself.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import replace

from scalopt.bench.spec import RunSpec
from scalopt.core.validate import check_name

Suite = Callable[[int], list[RunSpec]]

#: suite name -> (module under scalopt.bench.suites, function name, one-line summary)
SUITES: dict[str, tuple[str, str, str]] = {
    "default": ("core", "default", "torch AdamW vs the element-wise optimizers on stdlib-lm (the main job)"),
    "quick": ("core", "quick", "seconds: a tiny end-to-end check"),
    "shampoo": ("shampoo", "shampoo", "Shampoo vs AdamW on stdlib-lm and digits, with a learning-rate sweep"),
    "shampoo-soap": ("shampoo", "soap", "the shampoo suite's torch AdamW and SOAP runs alone"),
    "shampoo-gpu": (
        "shampoo_gpu",
        "shampoo_gpu",
        "one GPU, a 57M GPT in bf16: fused AdamW vs Shampoo with synchronous, host and device roots",
    ),
    "distributed": ("distributed", "distributed", "sync clipped SGD, CELGC, Overlap Local-SGD, DP Adam"),
    "compression": ("compression", "compression", "loss vs bytes: Efficient-Adam, 1-bit Adam, PowerSGD"),
    "curvature": (
        "curvature",
        "curvature",
        "OASIS, HVP-RVR vs AdamW and SGD+momentum on digits and small stdlib-lm",
    ),
    "federated": ("federated", "federated", "FedAvg, FedAdam, local Adam, FedLADA on digits (Dirichlet)"),
    "adam-condition": ("adam_condition", "adam_condition", "Generic Adam on the Reddi counterexample"),
    "claims": ("claims", "claims", "every paper's claim: one small experiment each, with a verdict"),
}


def names() -> list[str]:
    return sorted(SUITES)


def summary(name: str) -> str:
    return SUITES[name][2]


def get(name: str) -> Suite:
    check_name("suite", name, names())
    module, function, _ = SUITES[name]
    return getattr(importlib.import_module(f"scalopt.bench.suites.{module}"), function)


def build(name: str, seeds: int, *, device: str = "cpu", autocast: str | None = None) -> list[RunSpec]:
    """The specs of suite ``name`` on ``device``; ``autocast`` ("none" or "bf16") replaces the
    suite's own choice when given. Distributed and federated runs stay on the CPU."""
    suite = get(name)
    if "device" in inspect.signature(suite).parameters:
        specs = suite(seeds, device=device)  # type: ignore[call-arg]
    else:
        specs = [s if s.distributed or s.federated else replace(s, device=device) for s in suite(seeds)]
    if autocast is not None:
        specs = [replace(s, autocast=None if autocast == "none" else autocast) for s in specs]
    return specs


def runner(name: str) -> Callable[..., object] | None:
    """The suite's own ``run_suite`` when it runs in stages, else None."""
    get(name)
    return getattr(importlib.import_module(f"scalopt.bench.suites.{SUITES[name][0]}"), "run_suite", None)
