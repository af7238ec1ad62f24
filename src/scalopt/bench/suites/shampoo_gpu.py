"""The Shampoo GPU suite: does Shampoo beat AdamW in wall time where users train, on one GPU?

    scalopt bench --suite shampoo-gpu --seeds 1 --device cuda --out runs/shampoo-gpu

``stdlib-lm`` at its ``gpt57m`` preset (57.1M parameters: d_model 768, 8 pre-norm layers, 12 heads,
MLP 4×, context 256, batch 32) under bf16 autocast, ``STEPS`` = 400 steps, lr 1e-3 for everyone, no
weight decay, the same initial model and batches for every run:

- torch AdamW with ``fused=True`` (the baseline of every ratio) and scalopt AdamW;
- Shampoo (f = 20, Adam graft, defaults otherwise) with its roots synchronous
  (``root_device="inline"``), on host threads (``"host"``, installed f steps after the snapshot)
  and on a side CUDA stream (``"device"``, coupled Newton; only on CUDA: the placement needs it).

The report gives steps and wall time to the target, opt.step() median and mean, forward+backward,
peak memory and loss against wall time. The target is the workload's ``target_loss`` (2.0 nats/byte)
until a GPU run of this suite gives AdamW's 400-step loss to count to; steps to a target compare
optimizers, a single final loss does not (two identical GPU runs end apart: GPU kernels are not
deterministic). Deviation from the measurement this suite re-creates: constant lr (no 20-step
warm-up: runs take no schedule). With ``tiny=True`` the same runs take seconds on a CPU (a 2-layer
d_model 32 model, 6 steps): what the tests run so the suite cannot rot unseen.
"""

from __future__ import annotations

from scalopt.bench.spec import RunSpec

STEPS = 400
EVAL_EVERY = 50
LR = 1e-3
F = 20
TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2, "seq_len": 16, "batch_size": 4, "corpus_bytes": 20_000}

RUNS: list[tuple[str, str, dict]] = [
    ("torch AdamW fused", "torch-adamw", {"fused": True}),
    ("scalopt AdamW", "adamw", {}),
    ("Shampoo synchronous roots", "shampoo", {"precondition_frequency": F, "root_device": "inline"}),
    ("Shampoo host roots", "shampoo", {"precondition_frequency": F, "root_device": "host"}),
    ("Shampoo device roots", "shampoo", {"precondition_frequency": F, "root_device": "device"}),
]


def shampoo_gpu(seeds: int = 1, *, device: str = "cuda", tiny: bool = False) -> list[RunSpec]:
    """torch fused AdamW, scalopt AdamW, Shampoo with synchronous / host / device roots."""
    overrides = TINY if tiny else {"preset": "gpt57m"}
    steps, every = (6, 3) if tiny else (STEPS, EVAL_EVERY)
    specs = []
    for seed in range(seeds):
        for label, optimizer, hparams in RUNS:
            if hparams.get("root_device") == "device" and device != "cuda":
                continue
            specs.append(
                RunSpec(
                    workload="stdlib-lm",
                    workload_overrides=dict(overrides),
                    optimizer=optimizer,
                    label=label,
                    hparams={"lr": LR, "weight_decay": 0.0, **hparams},
                    steps=steps,
                    seed=seed,
                    eval_every=every,
                    device=device,
                    autocast="bf16",
                )
            )
    return specs
