"""The core suites. ``default`` is what ``scalopt bench`` runs: torch's AdamW against scalopt's element-wise
optimizers on ``stdlib-lm``. ``quick`` is a seconds-long end-to-end check for tests.
Learning rates were picked by a 300-step probe on stdlib-lm, seed 0, 1 thread (eval loss):
torch AdamW 3e-3 → 2.00; GenericAdam (α_t = lr/√t, θ_t = 1 − 0.1/t) 1e-2/3e-2/1e-1 → 3.05/2.90/3.14,
(α_t = lr/t^¼, θ_t = 1 − 0.1/√t, also admissible: r ≤ 2s) 2e-2 → 2.46; GeneralizedSignSGD 3e-3/1e-3/3e-4
→ 3.45/2.70/2.56, with bias correction 1e-3/3e-4 → 2.45/2.36; ClippedSGD (max_norm 1, momentum 0.9)
0.5/0.2 → 2.30/2.21; NormalizedSGD (momentum 0.9) 0.02/0.05/0.1 → 2.85/2.44/2.23.
"""

from __future__ import annotations

from scalopt.bench.spec import RunSpec
from scalopt.schedules import InvPower, OneMinusInvPower, to_dict

#: (optimizer, label, hyperparameters) of the default comparison on stdlib-lm.
DEFAULT_CONFIGS: list[tuple[str, str, dict]] = [
    ("torch-adamw", "torch AdamW", {"lr": 3e-3, "weight_decay": 0.0}),
    (
        "generic-adam",
        "GenericAdam lr/t^0.25, 1-0.1/t^0.5",
        {
            "lr": 2e-2,
            "lr_decay": to_dict(InvPower(0.25)),
            "beta2_schedule": to_dict(OneMinusInvPower(0.1, 0.5)),
        },
    ),
    ("generalized-signsgd", "GeneralizedSignSGD", {"lr": 3e-4, "bias_correction": True}),
    ("clipped-sgd", "ClippedSGD", {"lr": 0.2, "max_norm": 1.0, "momentum": 0.9}),
    ("normalized-sgd", "NormalizedSGD", {"lr": 0.1, "momentum": 0.9}),
]


def default(seeds: int = 3) -> list[RunSpec]:
    """torch AdamW vs GenericAdam, GeneralizedSignSGD, ClippedSGD, NormalizedSGD on stdlib-lm."""
    return [
        RunSpec(
            workload="stdlib-lm", optimizer=opt, label=label, hparams=hp, steps=600, seed=seed, eval_every=50
        )
        for seed in range(seeds)
        for opt, label, hp in DEFAULT_CONFIGS
    ]


QUICK_WORKLOAD = {
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "seq_len": 32,
    "batch_size": 4,
    "corpus_bytes": 200_000,
}


def quick(seeds: int = 1) -> list[RunSpec]:
    """Seconds: two optimizers, a tiny stdlib-lm, and digits."""
    specs = []
    for seed in range(seeds):
        for opt, label, hp in DEFAULT_CONFIGS[:1] + DEFAULT_CONFIGS[3:4]:
            specs.append(
                RunSpec(
                    workload="stdlib-lm",
                    workload_overrides=QUICK_WORKLOAD,
                    optimizer=opt,
                    label=label,
                    hparams=hp,
                    steps=30,
                    seed=seed,
                    eval_every=10,
                    target_loss=5.0,
                )
            )
        specs.append(
            RunSpec(
                workload="digits",
                optimizer="adam",
                label="Adam",
                hparams={"lr": 3e-3},
                steps=30,
                seed=seed,
                eval_every=10,
            )
        )
    return specs
