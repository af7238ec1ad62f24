"""``digits``: a small CNN on scikit-learn's bundled 8x8 handwritten digits (``load_digits``, offline).

Data: the 1797 images of ``sklearn.datasets.load_digits``, scaled from 0..16 to [0, 1], labels 0..9.
Held-out split: a permutation from a fixed ``split_seed`` (default 0, never the run's generator);
the last ``eval_fraction`` (20%, 359 images) is held out, the rest (1438) is the train pool.
Train batches: ``batch_size`` (64) indices drawn uniformly with replacement from the train pool.

Model: conv3x3(1->16, pad 1) -> ReLU -> maxpool2 -> conv3x3(16->32, pad 1) -> ReLU -> maxpool2 ->
flatten(32*2*2) -> linear(10). Init from the run's generator: weights U(-b, b) with
b = sqrt(6 / fan_in) (He uniform) for the convs, b = 1/sqrt(fan_in) for the head; biases 0.

Federated split (``federated_clients``): Dirichlet(α) label skew of the train pool over the clients
(``scalopt.federated.dirichlet_partition``); a client's batches draw from its own examples only.

Metrics on the whole held-out set: ``loss`` (mean cross-entropy) and ``accuracy``.
Pinned: target_loss 0.15, default_steps 250: AdamW lr 3e-3 (seed 0) crosses 0.15 at ~160 steps and ends
near 0.10 (accuracy ~97%); lr 1e-3 gets to 0.19 by step 250. One AdamW step ~2 ms, evaluate() ~3 ms.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scalopt.core.validate import check_int, check_interval
from scalopt.federated.partition import ClientData, dirichlet_partition, label_histogram
from scalopt.workloads.base import Workload, build_module, model_device, sha256_of

Batch = tuple[torch.Tensor, torch.Tensor]


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return images, labels


class DigitsCNN(nn.Module):
    """``forward(images (B, 1, 8, 8)) -> logits (B, 10)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32 * 2 * 2, 10)

    def reset_parameters(self, generator: torch.Generator) -> None:
        for layer, gain in ((self.conv1, math.sqrt(6.0)), (self.conv2, math.sqrt(6.0)), (self.head, 1.0)):
            fan_in = layer.weight[0].numel()
            bound = gain / math.sqrt(fan_in)
            nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Digits(Workload):
    """Small CNN on sklearn's bundled 8x8 digits, fixed 80/20 split."""

    name: ClassVar[str] = "digits"
    loss_unit: ClassVar[str] = "nats/example"
    target_loss: float = 0.15
    default_steps: int = 250
    batch_size: int = 64
    eval_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("batch_size", self.batch_size, minimum=1)
        check_interval("eval_fraction", self.eval_fraction, 0.0, 0.5, low_open=True, high_open=False)
        check_int("split_seed", self.split_seed)

    # -- data ----------------------------------------------------------------------------------
    def _split(self) -> tuple[Batch, Batch]:
        return _split(self.eval_fraction, self.split_seed)

    def _train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        (images, labels), _ = self._split()
        while True:
            idx = torch.randint(len(labels), (self.batch_size,), generator=generator)
            yield images[idx], labels[idx]

    def federated_clients(
        self, n_clients: int, *, alpha: float, generator: torch.Generator
    ) -> list[ClientData]:
        """Dirichlet(``alpha``) label skew of the train pool; each client draws ``batch_size`` of its
        own examples uniformly with replacement per batch."""
        (images, labels), _ = self._split()
        parts = dirichlet_partition(labels, n_clients, alpha, generator)
        return [
            ClientData(
                name=f"client{i}",
                num_examples=len(idx),
                make_batches=functools.partial(_client_batches, images[idx], labels[idx], self.batch_size),
                label_histogram=label_histogram(labels[idx], 10),
            )
            for i, idx in enumerate(parts)
        ]

    def _eval_batches(self) -> Iterator[Batch]:
        _, (images, labels) = self._split()
        for start in range(0, len(labels), 512):
            yield images[start : start + 512], labels[start : start + 512]

    # -- model and loss ------------------------------------------------------------------------
    def init_model(self, generator: torch.Generator) -> DigitsCNN:
        return build_module(DigitsCNN, lambda model: model.reset_parameters(generator))

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        device = model_device(model)
        images, labels = batch
        return F.cross_entropy(model(images.to(device)), labels.to(device))

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        device = model_device(model)
        total_loss, correct, count = 0.0, 0, 0
        for images, labels in self._eval_batches():
            logits = model(images.to(device))
            labels = labels.to(device)
            total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
        return {"loss": total_loss / count, "accuracy": correct / count}

    # -- description ---------------------------------------------------------------------------
    def data_hash(self) -> str:
        return _hash(self.eval_fraction, self.split_seed)

    def data_facts(self) -> dict[str, Any]:
        (_, train_labels), (_, eval_labels) = self._split()
        return {
            "n_train": len(train_labels),
            "n_eval": len(eval_labels),
            "n_classes": 10,
            "image_shape": [8, 8],
        }


def _client_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[Batch]:
    while True:
        idx = torch.randint(len(labels), (batch_size,), generator=generator)
        yield images[idx], labels[idx]


@functools.lru_cache(maxsize=8)
def _split(eval_fraction: float, split_seed: int) -> tuple[Batch, Batch]:
    images, labels = _load_digits()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    n_train = len(labels) - int(round(len(labels) * eval_fraction))
    train, held_out = perm[:n_train], perm[n_train:]
    return (images[train], labels[train]), (images[held_out], labels[held_out])


@functools.lru_cache(maxsize=8)
def _hash(eval_fraction: float, split_seed: int) -> str:
    (train_x, train_y), (eval_x, eval_y) = _split(eval_fraction, split_seed)
    return sha256_of(train_x, train_y, eval_x, eval_y)
