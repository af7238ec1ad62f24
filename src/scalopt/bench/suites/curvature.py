"""The curvature suite: second-order and proximal methods against AdamW and SGD + momentum.

    scalopt bench --suite curvature --seeds 1 --out runs/curvature

On ``digits`` and a small ``stdlib-lm`` (``LM_CONFIG``: one layer, d_model 32, 64-byte windows, 8
per batch — small enough that the Hessian-vector-product methods finish in minutes on a CPU), the
same steps for everyone, constant learning rates, no weight decay:

- every method in ``METHODS`` runs its learning-rate sweep (``Method.sweep``) at seed 0; at seeds
  ≥ 1 only its best swept lr (``Method.best``, lowest final eval loss at seed 0) runs, under the
  same label, so the report aggregates it over seeds;
- a method that takes a loss closure (``scalopt list`` marks them) is stepped with one by the
  training loop; the report then adds forward + backward + step time against torch AdamW's and
  Hessian-vector products per step.

Adding a method is one ``Method`` entry: registry name, label, sweep and best lr per workload, fixed
hyperparameters, and (``run``) RunSpec fields such as ``workers`` and ``algorithm`` for a method that
runs over several ranks. ``TARGETS``: torch AdamW's final eval loss at its best lr (seed 0).

Methods: OASIS and HVP-RVR (Hessian-vector products through the closure protocol); mL-BFGS with
``update_freq`` 10 (pairs from step 20 on; its default 50 would leave 150 steps mostly in the SGD
warm-up), else its defaults, and once more with the authors' class defaults for the running sums,
betas (0.9, 0.99), which forget within ~10 and ~100 steps (with 0.999 the sums still grow over 150
steps, so s ≈ T·θ drifts along θ and consecutive pairs are nearly parallel); mL-BFGS at its best lr
also with its block histories sharded over 2 ranks (``mlbfgs-sharded``: real gloo processes; each
rank draws its own batch and the gradients are averaged, so that run sees 2× the data per step — its
label says so); TRSGD / TRAdam with their defaults (period 10, prox_weight 0.1·lr, momentum 0.9);
Shampoo (the second-order reference) with its defaults (precondition_frequency 20, Adam grafting).

Plain SGD (no momentum) runs beside SGD + momentum because HVP-RVR is plain SGD on its estimate
(with reset_prob = 1 it is minibatch SGD on reset_batches batches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scalopt.bench.spec import RunSpec

STEPS = {"digits": 150, "stdlib-lm": 150}
EVAL_EVERY = {"digits": 10, "stdlib-lm": 25}
LM_CONFIG: dict[str, Any] = {"d_model": 32, "n_layers": 1, "n_heads": 2, "seq_len": 64, "batch_size": 8}
OVERRIDES: dict[str, dict[str, Any]] = {"digits": {}, "stdlib-lm": LM_CONFIG}

#: Target eval loss = torch AdamW's final eval loss at its best lr, seed 0, rounded up in the 4th
#: decimal, so "steps to target" counts steps to AdamW's final loss (AdamW reaches it at its last
#: eval). Measured with this suite (torch 2.13 CPU, Python 3.11.7's stdlib corpus, 1 thread): digits
#: lr 1e-2 ended at 0.087838, stdlib-lm (LM_CONFIG) lr 3e-3 at 2.816733.
TARGETS: dict[str, float] = {"digits": 0.0879, "stdlib-lm": 2.8168}


@dataclass(frozen=True)
class Method:
    optimizer: str  # registry name
    label: str
    sweep: dict[str, tuple[float, ...]]  # workload -> learning rates run at seed 0
    best: dict[str, float]  # workload -> the best swept lr (seed 0), the one run at seeds >= 1
    hparams: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)  # extra RunSpec fields (workers, algorithm)


#: best lr: lowest final eval loss of the seed-0 sweep
#: (``scalopt bench --suite curvature --seeds 1``, torch 2.13 CPU, torch threads 1).
METHODS: list[Method] = [
    Method(
        "torch-adamw",
        "torch AdamW",
        {"digits": (3e-3, 1e-2, 3e-2), "stdlib-lm": (1e-3, 3e-3, 1e-2)},
        {"digits": 1e-2, "stdlib-lm": 3e-3},
        {"weight_decay": 0.0},
    ),
    Method(
        "torch-sgd",
        "SGD momentum 0.9",
        {"digits": (0.03, 0.1, 0.3), "stdlib-lm": (0.1, 0.3, 1.0)},
        {"digits": 0.1, "stdlib-lm": 0.3},
        {"momentum": 0.9},
    ),
    Method(
        "torch-sgd",
        "SGD",
        {"digits": (0.1, 0.3, 1.0), "stdlib-lm": (0.1, 0.3, 1.0)},
        {"digits": 1.0, "stdlib-lm": 0.3},  # digits: the grid's top value was best
        {"momentum": 0.0},
    ),
    Method(
        "oasis",
        "OASIS",
        {"digits": (1.0, 2.0, 4.0), "stdlib-lm": (1.0, 2.0, 4.0)},
        {"digits": 2.0, "stdlib-lm": 2.0},
        {"alpha": 1e-2, "eta0": 1e-2},
    ),
    Method(
        "hvp-rvr",
        "HVP-RVR p=0.3 b=2",
        {"digits": (0.03, 0.1, 0.2), "stdlib-lm": (0.05, 0.1, 0.2)},
        {"digits": 0.1, "stdlib-lm": 0.1},
        {"reset_prob": 0.3, "reset_batches": 2},
    ),
    Method(
        "mlbfgs",
        "mL-BFGS T=10",
        {"digits": (0.03, 0.1, 0.3), "stdlib-lm": (0.1, 0.3, 1.0)},
        {"digits": 0.1, "stdlib-lm": 0.3},
        {"update_freq": 10},
    ),
    Method(
        "mlbfgs",
        "mL-BFGS T=10 betas=(0.9, 0.99)",
        {"digits": (0.1, 0.3, 1.0), "stdlib-lm": (0.1, 0.3, 1.0)},
        {"digits": 0.3, "stdlib-lm": 0.3},
        {"update_freq": 10, "betas": (0.9, 0.99)},
    ),
    Method(
        "mlbfgs",
        "mL-BFGS T=10 sharded, 2 ranks (2x data/step)",
        {"digits": (0.1,), "stdlib-lm": (0.3,)},
        {"digits": 0.1, "stdlib-lm": 0.3},
        {"update_freq": 10},
        {"workers": 2, "algorithm": "mlbfgs-sharded"},
    ),
    Method(
        "trsgd",
        "TRSGD S=10",
        {"digits": (0.1, 0.3, 1.0), "stdlib-lm": (0.03, 0.1, 0.3)},
        {"digits": 0.3, "stdlib-lm": 0.1},
    ),
    Method(
        "tradam",
        "TRAdam S=10",
        {"digits": (0.03, 0.1, 0.3), "stdlib-lm": (1e-2, 3e-2, 0.1)},
        {"digits": 0.1, "stdlib-lm": 3e-2},
    ),
    Method(
        "shampoo",
        "Shampoo",
        {"digits": (3e-3, 1e-2, 3e-2), "stdlib-lm": (1e-3, 3e-3, 1e-2)},
        {"digits": 1e-2, "stdlib-lm": 3e-3},
    ),
]


def _spec(workload: str, method: Method, lr: float, seed: int) -> RunSpec:
    return RunSpec(
        workload=workload,
        optimizer=method.optimizer,
        label=f"{method.label} lr={lr:g}",
        hparams={**method.hparams, "lr": lr},
        workload_overrides=OVERRIDES[workload],
        steps=STEPS[workload],
        seed=seed,
        eval_every=EVAL_EVERY[workload],
        target_loss=TARGETS[workload],
        **method.run,
    )


def curvature(seeds: int = 1) -> list[RunSpec]:
    """Each method's lr sweep at seed 0, its best lr at later seeds, on digits and small stdlib-lm."""
    return [
        _spec(workload, method, lr, seed)
        for workload in STEPS
        for seed in range(seeds)
        for method in METHODS
        for lr in (method.sweep[workload] if seed == 0 else (method.best[workload],))
    ]
