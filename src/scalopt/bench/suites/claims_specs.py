"""The runs of the ``claims`` suite: one small experiment per claim, as RunSpecs, at two sizes.

Each claim reuses the configuration of the suite that already studies its method (the Shampoo
suite's learning-rate grid and weight decay, the distributed suite's clipped-SGD hyperparameters,
the compression suite's Adam and Efficient-Adam learning rates, the adam-condition suite's runs),
shortened to fit the whole suite in well under 30 minutes on 2 CPU cores. ``FULL`` is what
``scalopt bench --suite claims`` runs; ``TINY`` is a seconds-long end-to-end check for tests.

Runs whose claim is about steps, rounds or bytes use ``comm="sim"`` (``SimComm``: the same numbers
as real processes, no start-up cost, and 4 workers on 2 cores measure no contention); the one
wall-clock claim about communication (7) uses real gloo processes. Every label starts with its claim.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from scalopt.bench.spec import RunSpec
from scalopt.bench.suites import adam_condition, compression, distributed, shampoo
from scalopt.bench.suites.core import QUICK_WORKLOAD


@dataclasses.dataclass(frozen=True, kw_only=True)
class Size:
    name: str
    lm: dict[str, Any]  # stdlib-lm config overrides shared by every claim on it
    shampoo_steps: int
    shampoo_eval: int
    celgc_period: int
    celgc_lm_steps: int
    celgc_lm_eval: int  # a multiple of the period: evaluations right after an average
    celgc_lm_batch: int  # per-worker batch (fixed across worker counts)
    celgc_l0l1_steps: int
    celgc_l0l1_eval: int
    l1_values: tuple[float, ...]
    sgd_lrs: tuple[float, ...]
    sign_lrs: tuple[float, ...]
    l0l1_steps: int
    l0l1_eval: int
    reddi_steps: int
    dp_steps: int
    dp_eval: int
    dp_lrs: tuple[float, ...]
    ea_steps: int
    ea_eval: int
    overlap_steps: int
    overlap_lm: dict[str, Any]  # a small batch: communication is then a real fraction of the step
    hogwild_steps: int  # per worker
    fed_rounds: int
    cert_steps: int


FULL = Size(
    name="full",
    lm={},
    shampoo_steps=300,
    shampoo_eval=15,
    celgc_period=8,
    celgc_lm_steps=240,
    celgc_lm_eval=24,
    celgc_lm_batch=8,
    celgc_l0l1_steps=400,
    celgc_l0l1_eval=8,
    l1_values=(1.0, 2.0, 4.0, 8.0),
    sgd_lrs=(1e-4, 1e-3, 1e-2, 1e-1),
    sign_lrs=(1e-3, 1e-2, 1e-1),
    l0l1_steps=500,
    l0l1_eval=25,
    reddi_steps=adam_condition.STEPS,
    dp_steps=200,
    dp_eval=5,
    dp_lrs=(1e-3, 3e-3, 1e-2, 3e-2),
    ea_steps=240,
    ea_eval=20,
    overlap_steps=96,
    overlap_lm={"batch_size": 4, "seq_len": 64},
    hogwild_steps=2000,
    fed_rounds=60,
    cert_steps=2000,
)

TINY = Size(
    name="tiny",
    lm=dict(QUICK_WORKLOAD),
    shampoo_steps=12,
    shampoo_eval=6,
    celgc_period=8,
    celgc_lm_steps=16,
    celgc_lm_eval=8,
    celgc_lm_batch=4,
    celgc_l0l1_steps=16,
    celgc_l0l1_eval=8,
    l1_values=(1.0, 2.0),
    sgd_lrs=(1e-3, 1e-2),
    sign_lrs=(1e-2,),
    l0l1_steps=10,
    l0l1_eval=5,
    reddi_steps=30,
    dp_steps=10,
    dp_eval=5,
    dp_lrs=(3e-3, 1e-2),
    ea_steps=12,
    ea_eval=6,
    overlap_steps=8,
    overlap_lm={"batch_size": 2, "seq_len": 16},
    hogwild_steps=20,
    fed_rounds=3,
    cert_steps=30,
)

SIZES = {s.name: s for s in (FULL, TINY)}

#: clipped SGD on l0l1 for claim 2: the best of lr 0.03 / 0.1 / 0.3 × max_norm 1 / 10 (momentum 0.9) for
#: single-process clipped SGD in a 400-step probe (seed 0; gap at steps 100/200/300/400: 0.137 / 0.104 /
#: 0.154 / 0.073; lr 0.03 with max_norm 1: 148 / 0.106 / 0.115 / 0.057; lr 0.1: ≥ 0.19 throughout)
L0L1_CLIPPED = {"lr": 0.03, "max_norm": 10.0, "momentum": 0.9}
#: SGD for claim 3 is ClippedSGD with an infinite threshold (exactly SGD), with momentum like
#: generalized SignSGD's β1
SGD_MOMENTUM = 0.9
#: claim 3's growing L1: beta_max = L1, and the start u_j = 2.5·L1 in every direction, so the stiffest
#: direction starts 2.5 away from x* whatever L1 is and the curvature on the way grows like cosh(2.5·L1)
INIT_PER_L1 = 2.5


def _lm(size: Size, **extra: Any) -> dict[str, Any]:
    return {**size.lm, **extra}


def claim1(size: Size) -> dict[str, RunSpec]:
    """Shampoo at the Shampoo suite's best lr vs torch AdamW over that suite's lr grid (stdlib-lm)."""
    out = {}
    for name, lrs in (
        ("torch-adamw", shampoo.SWEEPS["stdlib-lm"]),
        ("shampoo", (shampoo.BEST["stdlib-lm"]["shampoo"],)),
    ):
        for lr in lrs:
            out[f"{name} lr={lr:g}"] = RunSpec(
                workload="stdlib-lm",
                workload_overrides=_lm(size),
                optimizer=name,
                label=f"C1 {shampoo.LABELS[name]} lr={lr:g}",
                hparams={"weight_decay": 0.0, "lr": lr},
                steps=size.shampoo_steps,
                eval_every=size.shampoo_eval,
            )
    return out


def _sim(workload: str, overrides: dict, label: str, steps: int, eval_every: int, **kw: Any) -> RunSpec:
    return RunSpec(
        workload=workload, workload_overrides=overrides, label=label, steps=steps, eval_every=eval_every,
        comm="sim", **kw,
    )  # fmt: skip


def claim2(size: Size) -> dict[str, RunSpec]:
    """Synchronous clipped SGD (2 workers) vs CELGC at period ≥ 8 with 2 and 4 workers, SimComm."""
    out = {}
    settings = {
        "stdlib-lm": (_lm(size, batch_size=size.celgc_lm_batch), size.celgc_lm_steps, size.celgc_lm_eval,
                      distributed.CLIPPED),
        "l0l1": ({}, size.celgc_l0l1_steps, size.celgc_l0l1_eval, L0L1_CLIPPED),
    }  # fmt: skip
    period = size.celgc_period
    for workload, (overrides, steps, eval_every, hparams) in settings.items():
        out[f"{workload} sync"] = _sim(
            workload, overrides, "C2 sync clipped SGD, 2 workers", steps, eval_every,
            optimizer="clipped-sgd", hparams=dict(hparams), workers=2, algorithm="data-parallel",
        )  # fmt: skip
        for workers in (2, 4):
            out[f"{workload} celgc {workers}"] = _sim(
                workload, overrides, f"C2 CELGC I={period}, {workers} workers", steps, eval_every,
                hparams=dict(hparams), workers=workers, algorithm="celgc", algorithm_args={"period": period},
            )  # fmt: skip
    return out


def l0l1_overrides(l1: float) -> dict[str, Any]:
    return {"beta_max": l1, "init_distance": INIT_PER_L1 * l1}


def claim3(size: Size) -> dict[str, RunSpec]:
    """SGD (momentum 0.9) and generalized SignSGD over fixed lr grids on l0l1 at growing L1."""
    out = {}
    for l1 in size.l1_values:
        for name, lrs in (("sgd", size.sgd_lrs), ("sign", size.sign_lrs)):
            for lr in lrs:
                if name == "sgd":
                    opt, hp, label = (
                        "clipped-sgd",
                        {"lr": lr, "max_norm": float("inf"), "momentum": SGD_MOMENTUM},
                        "SGD",
                    )
                else:
                    opt, hp, label = "generalized-signsgd", {"lr": lr}, "generalized SignSGD"
                out[f"{name} L1={l1:g} lr={lr:g}"] = RunSpec(
                    workload="l0l1",
                    workload_overrides=l0l1_overrides(l1),
                    optimizer=opt,
                    label=f"C3 {label} L1={l1:g} lr={lr:g}",
                    hparams=hp,
                    steps=size.l0l1_steps,
                    eval_every=size.l0l1_eval,
                )
    return out


def claim4(size: Size) -> dict[str, RunSpec]:
    """The adam-condition suite's runs (constant β2 = 0.1, β2 = 0.99, θ_t = 1 − 0.1/t) on reddi."""
    keys = ("constant 0.1", "constant 0.99", "schedule")
    return {
        key: dataclasses.replace(spec, label="C4 " + spec.label, steps=size.reddi_steps)
        for key, spec in zip(keys, adam_condition.adam_condition(1), strict=True)
    }


def claim5(size: Size) -> dict[str, RunSpec]:
    """Data-parallel Adam on digits with 1, 2, 4 workers (batch 64 each), an lr grid per worker count."""
    out = {}
    for workers in (1, 2, 4):
        for lr in size.dp_lrs:
            out[f"{workers} lr={lr:g}"] = _sim(
                "digits", {}, f"C5 DP Adam, {workers} workers, lr={lr:g}", size.dp_steps, size.dp_eval,
                optimizer="adam", hparams={"lr": lr}, workers=workers, algorithm="data-parallel",
            )  # fmt: skip
    return out


def claim6(size: Size) -> dict[str, RunSpec]:
    """Data-parallel Adam (fp32 all-reduce) vs Efficient-Adam with ScaledSign both ways, 2 workers."""
    common = dict(steps=size.ea_steps, eval_every=size.ea_eval, workers=2)
    return {
        "dp": _sim("stdlib-lm", _lm(size), "C6 DP Adam (fp32 all-reduce), 2 workers", optimizer="adam",
                   hparams={"lr": compression.LR}, algorithm="data-parallel", **common),
        "ea": _sim("stdlib-lm", _lm(size), "C6 Efficient-Adam ScaledSign, 2 workers",
                   hparams={"lr": compression.SIGN_LR}, algorithm="efficient-adam",
                   algorithm_args={"compressor": "scaled-sign"}, **common),
    }  # fmt: skip


def claim7(size: Size, network: tuple[float, float] | None) -> dict[str, RunSpec]:
    """Synchronous clipped SGD and Overlap Local-SGD (I = 4) on 2 gloo processes, with or without network."""
    tag = "no network" if network is None else "network"
    out = {}
    for key, name, algorithm, args in (
        ("sync", "sync clipped SGD", "data-parallel", {}),
        ("overlap", "Overlap Local-SGD I=4", "overlap-local-sgd", {"period": 4, "pullback": 0.6}),
    ):
        out[f"{key} {tag}"] = RunSpec(
            workload="stdlib-lm",
            workload_overrides=_lm(size, **size.overlap_lm),
            optimizer="clipped-sgd",
            label=f"C7 {name}, {tag}",
            hparams=dict(distributed.CLIPPED),
            steps=size.overlap_steps,
            eval_every=size.overlap_steps,
            workers=2,
            algorithm=algorithm,
            algorithm_args=args,
            network=network,
        )
    return out
