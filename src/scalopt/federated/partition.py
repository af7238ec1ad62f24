"""Client data for federated runs: the Dirichlet label-skew partitioner and the per-client view.

Dirichlet(α) label skew (Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data
Distribution for Federated Visual Classification", arXiv 1909.06335): for every class c, the
examples of c are shuffled and split over the n clients in proportions q_c ~ Dirichlet(α·1_n).
Small α gives each client few classes; α = ∞ is the IID split (every class dealt out evenly,
q_c = 1/n). Every client must end non-empty: a draw that leaves a client empty is redrawn from the
same generator (up to ``max_redraws`` times, then ValueError), so the result is a function of the
generator's state alone. Every example goes to exactly one client.

A workload builds its clients from such a partition (``Workload.federated_clients``); a client is
a :class:`ClientData`: a name, its number of examples, an optional label histogram (recorded in the
run record) and ``batches(generator)``, an infinite iterator of training batches drawn only from
the given generator, so a client holds no state between rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scalopt.core.validate import check_int, check_positive


@dataclass(frozen=True)
class ClientData:
    """One client's data: ``batches(generator)`` draws only from ``generator`` (no state kept)."""

    name: str
    num_examples: int
    make_batches: Callable[[torch.Generator], Iterator[Any]]
    label_histogram: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_int("num_examples", self.num_examples, minimum=1)

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        return self.make_batches(generator)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "num_examples": self.num_examples}
        if self.label_histogram is not None:
            out["label_histogram"] = list(self.label_histogram)
        return out


def dirichlet_partition(
    labels: torch.Tensor | Sequence[int],
    n_clients: int,
    alpha: float,
    generator: torch.Generator,
    *,
    max_redraws: int = 1000,
) -> list[torch.Tensor]:
    """Indices of each client's examples (sorted int64 tensors) under Dirichlet(``alpha``) label skew.

    ``alpha = math.inf`` deals every class out evenly after a shuffle (IID). The draws come from a
    NumPy generator seeded from ``generator`` (one int64 drawn from it), so the same generator
    state gives the same partition.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    check_int("n_clients", n_clients, minimum=1)
    check_positive("alpha", alpha, allow_inf=True)
    check_int("max_redraws", max_redraws, minimum=1)
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {tuple(labels.shape)}")
    if n_clients > labels.numel():
        raise ValueError(f"n_clients must be <= the number of examples ({labels.numel()}), got {n_clients}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    classes = np.unique(y)
    for _ in range(max_redraws):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            if math.isinf(alpha):
                # IID: deal the class out round-robin from a random first client
                start = int(rng.integers(n_clients))
                owner = (start + np.arange(len(idx))) % n_clients
                for i in range(n_clients):
                    parts[i].append(idx[owner == i])
                continue
            q = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(q)[:-1] * len(idx)).astype(np.int64)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if all(len(p) > 0 for p in out):
            return [torch.from_numpy(p.astype(np.int64)) for p in out]
    raise ValueError(
        f"could not give every one of n_clients={n_clients} clients an example with alpha={alpha} "
        f"in max_redraws={max_redraws} draws; use fewer clients or a larger alpha"
    )


def label_histogram(labels: torch.Tensor, n_classes: int) -> tuple[int, ...]:
    """Counts of each label 0..n_classes-1."""
    return tuple(int(c) for c in torch.bincount(labels, minlength=n_classes).tolist())
