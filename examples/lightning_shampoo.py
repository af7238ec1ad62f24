"""Lightning with scalopt: Shampoo from ``configure_optimizers``, a per-step LR schedule, a Trainer
checkpoint that loads with ``torch.load(weights_only=True)``, and resuming from it with ``ckpt_path``.

    pip install "scalopt[lightning]"
    python examples/lightning_shampoo.py                          # Shampoo, 4 epochs, then resume check
    python examples/lightning_shampoo.py --optimizer scalopt-adamw --epochs 6 --out runs/lightning

The script trains once without interruption, then again in two halves (stop, save a Trainer
checkpoint, resume from it in a fresh Trainer and a freshly built module) and prints how far the
resumed run's parameters ended from the uninterrupted run's (0.0: bitwise the same).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import scalopt

OPTIMIZERS = ("shampoo", "shampoo-async", "scalopt-adamw", "torch-adamw")
IN, HIDDEN, OUT = 16, 32, 4


def make_data(n: int = 128, seed: int = 0) -> TensorDataset:
    """A small regression task: y = tanh(x·W) + noise, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN, generator=g)
    w = torch.randn(IN, OUT, generator=g)
    y = torch.tanh(x @ w) + 0.1 * torch.randn(n, OUT, generator=g)
    return TensorDataset(x, y)


class Regressor(L.LightningModule):
    """An MLP whose optimizer is chosen by name; the LR follows a cosine schedule stepped every batch."""

    def __init__(self, optimizer: str = "shampoo", lr: float = 3e-3, total_steps: int = 64, seed: int = 0):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.save_hyperparameters()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer.startswith("shampoo"):
            opt = scalopt.Shampoo(
                self.named_parameters(),
                lr=hp.lr,
                precondition_frequency=5,
                async_roots=hp.optimizer == "shampoo-async",
            )
        elif hp.optimizer == "scalopt-adamw":
            opt = scalopt.AdamW(self.named_parameters(), lr=hp.lr, weight_decay=0.01)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_trainer(root: str, **limits: int) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
        **limits,
    )


def run(
    optimizer: str, *, epochs: int, stop_step: int, root: str, batch_size: int = 16, n: int = 128
) -> dict[str, float]:
    """Uninterrupted vs stopped after ``stop_step`` steps and resumed (at an epoch end or inside an
    epoch); returns the largest parameter deviation from the uninterrupted run and the losses."""
    data = make_data(n)
    total = epochs * (n // batch_size)

    def loader() -> DataLoader:
        return DataLoader(data, batch_size=batch_size, shuffle=False, drop_last=True)

    straight = Regressor(optimizer, total_steps=total)
    make_trainer(root, max_epochs=epochs).fit(straight, loader())

    first = Regressor(optimizer, total_steps=total)
    trainer = make_trainer(root, max_epochs=epochs, max_steps=stop_step)
    trainer.fit(first, loader())
    path = os.path.join(root, f"{optimizer}.ckpt")
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # plain tensors and containers only

    resumed = Regressor(optimizer, total_steps=total, seed=1)  # different init: the checkpoint restores
    make_trainer(root, max_epochs=epochs).fit(resumed, loader(), ckpt_path=path, weights_only=True)

    deviation = max((a - b).abs().max().item() for a, b in zip(straight.parameters(), resumed.parameters()))
    x, y = data.tensors
    with torch.no_grad():
        loss = nn.functional.mse_loss(straight.net(x), y).item()
        loss0 = nn.functional.mse_loss(Regressor(optimizer).net(x), y).item()
    return {
        "deviation": deviation,
        "initial_loss": loss0,
        "final_loss": loss,
        "checkpoint_step": float(checkpoint["global_step"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="shampoo")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--stop-step", type=int, default=12, help="checkpoint after this many steps")
    parser.add_argument("--out", default=None, help="checkpoint directory (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or tmp
        os.makedirs(root, exist_ok=True)
        result = run(args.optimizer, epochs=args.epochs, stop_step=args.stop_step, root=root)
    print(
        f"{args.optimizer}: loss {result['initial_loss']:.4f} -> {result['final_loss']:.4f}; "
        f"resumed from step {int(result['checkpoint_step'])}, max |Δparam| vs uninterrupted "
        f"{result['deviation']:.3g}"
    )


if __name__ == "__main__":
    main()
