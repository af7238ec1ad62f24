"""The federated suite: FedAvg, FedAdam, local Adam and FedLADA on digits with Dirichlet label skew.

    scalopt bench --suite federated --out runs/federated          (3 seeds)

digits (batch 32 per local step) split over 20 clients by Dirichlet(α) label skew, α ∈ {0.1, 1.0};
5 clients sampled per round without replacement, K = 10 local steps, R = 200 rounds, the global
model evaluated after every round. The partition is drawn from the run's seed (each seed its own
split; the histograms are in the records).

- a learning-rate sweep per algorithm and α at seed 0 (``SWEEPS``: values half a decade apart,
  extended by one where the best of the first three was at the edge; FedAvg sweeps its local SGD
  lr, FedAdam its server lr η over local SGD with lr 0.1, local Adam and FedLADA their local lr
  η_l; FedLADA's α = 0.1 and every other setting at its default);
- at seeds >= 1 only the best swept lr (``BEST``: the highest final accuracy of the seed-0 sweep,
  ties to the smaller lr)
  runs, under the same label, so the report aggregates it over seeds.

Target accuracy per α = 0.9 × FedAvg's best final accuracy in the seed-0 sweep, fixed by that rule
before any comparison (the report computes it from the FedAvg sweep alone; ``TARGETS`` records the
values measured). The report's federated table gives rounds to target, final accuracy (mean ± sd),
bytes to target (up + down, all clients) and an accuracy-vs-round figure per α.
"""

from __future__ import annotations

from typing import Any

from scalopt.bench.spec import RunSpec

WORKLOAD = "digits"
ROUNDS = 200
ALPHAS = (0.1, 1.0)
FEDERATED = {"clients": 20, "clients_per_round": 5, "local_steps": 10}
WORKLOAD_OVERRIDES = {"batch_size": 32}
LABELS = {"fedavg": "FedAvg", "fedadam": "FedAdam", "local-adam": "local Adam", "fedlada": "FedLADA"}
TARGET_FRACTION = 0.9

#: the swept learning rate of each algorithm (FedAvg: local SGD lr; FedAdam: server lr; the others: η_l)
SWEEPS: dict[str, tuple[float, ...]] = {
    "fedavg": (0.03, 0.1, 0.3, 1.0),
    "fedadam": (0.003, 0.01, 0.03, 0.1),
    "local-adam": (3e-3, 1e-2, 3e-2),
    "fedlada": (3e-3, 1e-2, 3e-2, 0.1),
}

#: best swept lr per α: the highest final accuracy at seed 0, ties to the smaller lr (FedLADA at
#: α = 0.1: 3e-2 and 1e-1 both end at 0.9833, and at the same mean over the last 20 rounds; local
#: Adam at α = 1: 3e-3 and 1e-2 both end at 0.9861). FedAdam's best at α = 1 (0.1) sits at the grid's edge
#: (its last-20-round mean is its worst but one); measured with ``--seeds 1``, torch 2.13 CPU, 1 thread
BEST: dict[float, dict[str, float]] = {
    0.1: {"fedavg": 0.1, "fedadam": 0.03, "local-adam": 1e-2, "fedlada": 3e-2},
    1.0: {"fedavg": 0.3, "fedadam": 0.1, "local-adam": 3e-3, "fedlada": 3e-2},
}

#: 0.9 × FedAvg's best final accuracy at seed 0 per α, as the report's rule computes it from the
#: FedAvg sweep alone (α = 0.1: lr 0.1 ended at 349/359 = 0.97214; α = 1: lr 0.3 at 353/359 = 0.98329)
TARGETS: dict[float, float] = {0.1: 0.87493, 1.0: 0.88496}


def hparams(name: str, lr: float) -> dict[str, Any]:
    if name == "fedavg":
        return {"local_hparams": {"lr": lr}}
    if name == "fedadam":
        return {"server_lr": lr, "local_hparams": {"lr": 0.1}}
    if name == "fedlada":
        return {"lr": lr, "alpha": 0.1}
    return {"lr": lr}


def label(name: str, alpha: float, lr: float) -> str:
    return f"{LABELS[name]} α={alpha:g} lr={lr:g}"


def federated(seeds: int = 3) -> list[RunSpec]:
    """digits, Dirichlet α ∈ {0.1, 1}: 4 algorithms, lr sweep at seed 0, best lr at the other seeds."""
    specs = []
    for alpha in ALPHAS:
        for seed in range(seeds):
            for name in LABELS:
                for lr in SWEEPS[name] if seed == 0 else (BEST[alpha][name],):
                    specs.append(
                        RunSpec(
                            workload=WORKLOAD,
                            optimizer=name,
                            label=label(name, alpha, lr),
                            hparams=hparams(name, lr),
                            workload_overrides=dict(WORKLOAD_OVERRIDES),
                            steps=ROUNDS,
                            seed=seed,
                            eval_every=1,
                            federated={**FEDERATED, "dirichlet": alpha},
                        )
                    )
    return specs
