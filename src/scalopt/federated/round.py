"""One federated round, as one readable function, and the per-round record it returns.

    chosen  = algorithm.sample(n)                       S of n clients, without replacement (server RNG)
    down    = algorithm.broadcast()                     every chosen client gets the same message
    for i in chosen:                                    in the order drawn
        batches = clients[i].batches(Generator(seed(data_seed, round, i)))   fresh, stateless client
        up, loss = algorithm.client_update(model, down, batches, loss_fn)    K local steps
        algorithm.check_upload(up)                      raises -> client left out, counted and named
    if good clients < min_clients: warn, skip (model unchanged)
    else: algorithm.aggregate(good)

Bytes are counted per client and direction: the download for every chosen client, the upload for
every client that returned one (a rejected upload was still sent). A client's batches come from a
generator seeded by (data_seed, round, client index) alone, so a resumed run draws the same batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from scalopt.federated.base import FederatedAlgorithm, Loss, message_bytes
from scalopt.federated.partition import ClientData


@dataclass
class RoundRecord:
    round: int
    chosen: list[str]
    good: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    skipped: bool = False
    train_loss: float = float("nan")
    bytes_up: int = 0
    bytes_down: int = 0
    client_steps: int = 0


def client_generator(data_seed: int, round_index: int, client: int) -> torch.Generator:
    """The generator of one client's batches in one round: a function of the three numbers only."""
    seed = int(np.random.SeedSequence([data_seed, round_index, client]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed % (2**63))


def federated_round(
    algorithm: FederatedAlgorithm,
    clients: Sequence[ClientData],
    model: nn.Module,
    loss: Loss,
    *,
    data_seed: int = 0,
) -> RoundRecord:
    """Run one round of ``algorithm`` over ``clients``; ``model`` is a scratch module of the right shape."""
    chosen = algorithm.sample(len(clients))
    down = algorithm.broadcast()
    down_bytes = message_bytes(down)
    record = RoundRecord(round=algorithm.round, chosen=[clients[i].name for i in chosen], good=[])
    counters = algorithm.counters
    good: list[tuple[int, Any]] = []
    losses = []
    for i in chosen:
        client = clients[i]
        counters["bytes_down"][client.name] = counters["bytes_down"].get(client.name, 0) + down_bytes
        record.bytes_down += down_bytes
        try:
            batches = client.batches(client_generator(data_seed, algorithm.round, i))
            up, client_loss = algorithm.client_update(model, down, batches, loss)
            record.client_steps += algorithm.local_steps
            if isinstance(up, dict):
                sent = message_bytes(up)
                counters["bytes_up"][client.name] = counters["bytes_up"].get(client.name, 0) + sent
                record.bytes_up += sent
            algorithm.check_upload(up)
        except Exception as exc:  # a faulty client is left out of this round, never the whole run
            record.failed[client.name] = f"{type(exc).__name__}: {exc}"
            continue
        good.append((client.num_examples, up))
        losses.append(client_loss)
        record.good.append(client.name)
    counters["client_steps"] += record.client_steps
    counters["failures"] += len(record.failed)
    for name in record.failed:
        counters["failed_clients"][name] = counters["failed_clients"].get(name, 0) + 1
    if len(good) < algorithm.min_clients:
        warnings.warn(
            f"round {algorithm.round}: {len(good)} good clients of {len(chosen)} "
            f"(min_clients={algorithm.min_clients}); round skipped, model unchanged "
            f"(failed: {', '.join(record.failed) or 'none'})",
            RuntimeWarning,
            stacklevel=2,
        )
        record.skipped = True
        counters["skipped_rounds"] += 1
    else:
        algorithm.aggregate(good)
        record.train_loss = float(np.mean(losses))
    algorithm.round += 1
    counters["rounds"] += 1
    return record
