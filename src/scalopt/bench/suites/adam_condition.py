"""The ``adam-condition`` suite: Adam on the Reddi counterexample, with the checker's verdict.

GenericAdam (β1 = 0, no bias correction, α_t = lr/√t) on the ``reddi`` workload (C = 3, x0 = +1),
for a constant β2 — the setting the sufficient condition of Zou et al. rejects — and for a θ_t
schedule that satisfies it. Each run's label carries ``scalopt.theory.check_adam``'s verdict for its
exact hyperparameters, so the report shows the verdict beside each curve:

- constant β2 = 0.1: condition NOT satisfied; x goes to +1, the worst point (eval loss 2/3);
- constant β2 = 0.99: condition NOT satisfied either (a constant β2 only reaches an O(√(1−β2))
  neighbourhood), yet close to x* here: the condition is sufficient, not necessary;
- θ_t = 1 − 0.1/t (r = 1, s = 1/2, the best admissible pair): condition SATISFIED; x → x* = −1.

The workload is deterministic, so seeds repeat the same runs (kept for the suite interface).
"""

from __future__ import annotations

from typing import Any

from scalopt.bench.spec import RunSpec
from scalopt.schedules import InvPower, OneMinusInvPower, to_dict

LR = 0.5
STEPS = 3000
LR_DECAY = InvPower(0.5)
BETA1 = 0.0

#: (label prefix, beta2: a constant or a schedule)
SETTINGS: list[tuple[str, Any]] = [
    ("Adam β2=0.1 (constant)", 0.1),
    ("Adam β2=0.99 (constant)", 0.99),
    ("Adam θ_t=1−0.1/t", OneMinusInvPower(0.1, 1.0)),
]


def verdict(beta2: Any) -> str:
    """The checker's verdict for lr·t^(−1/2), ``beta2`` and β1 = 0, in words."""
    from scalopt.theory import check_adam

    report = check_adam(lr=LR, lr_decay=LR_DECAY, beta2=beta2, beta1=BETA1)
    return "condition SATISFIED" if report.satisfied else "condition NOT satisfied"


def hparams(beta2: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "lr": LR,
        "lr_decay": to_dict(LR_DECAY),
        "eps": 1e-8,
        "bias_correction": False,
    }
    if isinstance(beta2, float):
        out["betas"] = (BETA1, beta2)
    else:
        out["betas"] = (BETA1, 0.999)  # unused: the schedule gives θ_t
        out["beta2_schedule"] = to_dict(beta2)
    return out


def adam_condition(seeds: int = 1) -> list[RunSpec]:
    """Constant-β2 Adam vs a condition-satisfying θ_t schedule on ``reddi``, verdicts in the labels."""
    specs = []
    for seed in range(seeds):
        for name, beta2 in SETTINGS:
            specs.append(
                RunSpec(
                    workload="reddi",
                    optimizer="generic-adam",
                    label=f"{name} — {verdict(beta2)}",
                    hparams=hparams(beta2),
                    steps=STEPS,
                    seed=seed,
                    eval_every=50,
                )
            )
    return specs
