"""The Hugging Face Trainer with a scalopt optimizer, on a tiny Llama built from a config (nothing is
downloaded: random weights, generated token data, no tokenizer).

    pip install "scalopt[hf]"
    python examples/hf_trainer.py                       # optimizers=(scalopt.Shampoo, cosine schedule)
    python examples/hf_trainer.py --way cls-kwargs      # optimizer_cls_and_kwargs=(scalopt.AdamW, {...})
    python examples/hf_trainer.py --resume              # also: save at step 4, resume, compare

Two ways to hand the Trainer an optimizer: ``optimizers=(optimizer, scheduler)``, built by you on the
model's parameters, or ``optimizer_cls_and_kwargs=(cls, kwargs)``, built by the Trainer on its
weight-decay / no-decay parameter groups (``kwargs`` must carry ``lr``; the Trainer's own schedule,
``lr_scheduler_type``, then drives it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments  # noqa: E402

import scalopt  # noqa: E402

VOCAB, SEQ = 96, 16
WAYS = ("optimizers", "cls-kwargs")


class CountingTokens(torch.utils.data.Dataset):
    """``n`` token sequences a, a+d, a+2d, ... (mod the vocabulary) with a random start a and stride
    d ∈ {1, 2, 3}, from a seeded generator: learnable in a few steps. Labels = inputs (causal LM)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(VOCAB, (n, 1), generator=g)
        stride = torch.randint(1, 4, (n, 1), generator=g)
        self.ids = (start + stride * torch.arange(SEQ)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def training_args(out: str, steps: int, **extra: Any) -> TrainingArguments:
    return TrainingArguments(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,  # used by the Trainer's own schedule (cls-kwargs way)
        lr_scheduler_type="cosine",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
        dataloader_num_workers=0,
        **{"save_strategy": "no", **extra},
    )


def make_trainer(way: str, out: str, steps: int, *, seed: int = 0, **extra: Any) -> Trainer:
    model = tiny_llama(seed)
    args = training_args(out, steps, **extra)
    data = CountingTokens(64)
    if way == "optimizers":
        opt = scalopt.Shampoo(
            model.named_parameters(),
            lr=1e-2,
            weight_decay=0.01,
            precondition_frequency=4,
            block_size=128,  # a tiny model: keep each 32×32 weight as two 32×32 Kronecker factors
        )  # (with the default 1024 its dims would merge into one 1024-long dim with a 1024×1024 factor)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return Trainer(model=model, args=args, train_dataset=data, optimizers=(opt, sched))
    if way == "cls-kwargs":
        kwargs = {"lr": 1e-2, "betas": (0.9, 0.95)}  # weight_decay comes from args, per group
        return Trainer(
            model=model, args=args, train_dataset=data, optimizer_cls_and_kwargs=(scalopt.AdamW, kwargs)
        )
    raise ValueError(f"way must be one of {WAYS}, got {way!r}")


def losses(trainer: Trainer) -> list[float]:
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def train(way: str, out: str, steps: int) -> Trainer:
    trainer = make_trainer(way, out, steps)
    trainer.train()
    return trainer


def resume_deviation(way: str, out: str, steps: int, save_at: int) -> float:
    """Train ``steps`` straight; train again saving at ``save_at``, resume a fresh Trainer from that
    checkpoint; the largest parameter difference between the two ends (0.0: bitwise)."""
    straight = train(way, os.path.join(out, "straight"), steps)
    halves, saving = os.path.join(out, "halves"), {"save_strategy": "steps", "save_steps": save_at}
    make_trainer(way, halves, steps, **saving).train()
    second = make_trainer(way, halves, steps, seed=1, **saving)  # another init: the checkpoint restores
    second.train(resume_from_checkpoint=os.path.join(out, "halves", f"checkpoint-{save_at}"))
    return max(
        (a - b).abs().max().item() for a, b in zip(straight.model.parameters(), second.model.parameters())
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--way", choices=WAYS, default="optimizers")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--resume", action="store_true", help="also check resuming from a checkpoint")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        trainer = train(args.way, out, args.steps)
        inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
        print(f"{args.way}: {type(inner).__name__}, loss per step", [round(x, 4) for x in losses(trainer)])
        if args.resume:
            dev = resume_deviation(args.way, out, args.steps, args.steps // 2)
            print(f"resumed at step {args.steps // 2}: max |Δparam| vs uninterrupted {dev:.3g}")


if __name__ == "__main__":
    main()
