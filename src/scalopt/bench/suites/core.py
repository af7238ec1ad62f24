"""The core suites. ``default`` is what ``scalopt bench`` runs: torch's AdamW against scalopt's element-wise
optimizers on ``stdlib-lm``. ``quick`` is a seconds-long end-to-end check for tests.
Learning rates were picked by a short sweep on the same workload (see the README).
"""

from __future__ import annotations

from scalopt.bench.spec import RunSpec
from scalopt.schedules import InvPower, OneMinusInvPower, to_dict

#: (optimizer, label, hyperparameters) of the default comparison on stdlib-lm.
DEFAULT_CONFIGS: list[tuple[str, str, dict]] = [
    ("torch-adamw", "torch AdamW", {"lr": 3e-3, "weight_decay": 0.0}),
    (
        "generic-adam",
        "GenericAdam 1/sqrt(t), 1-0.1/t",
        {
            "lr": 3e-2,
            "lr_decay": to_dict(InvPower(0.5)),
            "beta2_schedule": to_dict(OneMinusInvPower(0.1, 1.0)),
        },
    ),
    ("generalized-signsgd", "GeneralizedSignSGD", {"lr": 3e-3}),
    ("clipped-sgd", "ClippedSGD", {"lr": 0.5, "max_norm": 1.0, "momentum": 0.9}),
    ("normalized-sgd", "NormalizedSGD", {"lr": 0.05, "momentum": 0.9}),
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
