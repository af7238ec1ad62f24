"""One federated round, as one readable function, and the per-round record it returns.

    chosen  = algorithm.sample(n)                       S of n clients, without replacement (server RNG)
    down    = algorithm.broadcast()                     every chosen client gets the same message
    for i in chosen:                                    in the order drawn
        batches = clients[i].batches(Generator(seed(data_seed, round, i)))   fresh, stateless client
        up, loss = algorithm.client_update(model, down, batches, loss_fn)    K local steps
        algorithm.check_upload(up)                      raises -> client left out, counted and named
    if good clients < min_clients: warn, skip (model unchanged)
    else: algorithm.aggregate(good)

The three parts after the clients' work — :func:`open_round`, :func:`accept_upload`,
:func:`close_round` — are also what the Flower strategy calls, so both engines share one server logic.
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

from scalopt.federated.base import FederatedAlgorithm, Loss, Message, message_bytes
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
    losses: list[float] = field(default_factory=list)


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
    record = open_round(algorithm, [clients[i].name for i in chosen], down)
    good: list[tuple[int, Message]] = []
    for i in chosen:
        client = clients[i]
        try:
            batches = client.batches(client_generator(data_seed, algorithm.round, i))
            up, client_loss = algorithm.client_update(model, down, batches, loss)
        except Exception as exc:  # a crashing client is left out of this round, never the whole run
            record.failed[client.name] = f"{type(exc).__name__}: {exc}"
            continue
        record.client_steps += algorithm.local_steps
        accept_upload(algorithm, record, good, client.name, client.num_examples, up, client_loss)
    return close_round(algorithm, record, good)


def open_round(algorithm: FederatedAlgorithm, chosen: list[str], down: Message) -> RoundRecord:
    """Start a round's record; counts the download of every chosen client."""
    down_bytes = message_bytes(down)
    counters = algorithm.counters
    for name in chosen:
        counters["bytes_down"][name] = counters["bytes_down"].get(name, 0) + down_bytes
    return RoundRecord(
        round=algorithm.round, chosen=list(chosen), good=[], bytes_down=down_bytes * len(chosen)
    )


def accept_upload(
    algorithm: FederatedAlgorithm,
    record: RoundRecord,
    good: list[tuple[int, Message]],
    name: str,
    num_examples: int,
    up: Any,
    client_loss: float,
) -> bool:
    """Count an upload's bytes and keep it if ``check_upload`` passes; else name the client as failed."""
    if isinstance(up, dict):
        sent = sum(
            t.numel() * t.element_size() for ts in up.values() for t in ts if isinstance(t, torch.Tensor)
        )
        algorithm.counters["bytes_up"][name] = algorithm.counters["bytes_up"].get(name, 0) + sent
        record.bytes_up += sent
    try:
        algorithm.check_upload(up)
    except ValueError as exc:
        record.failed[name] = f"ValueError: {exc}"
        return False
    good.append((num_examples, up))
    record.good.append(name)
    record.losses.append(float(client_loss))
    return True


def close_round(
    algorithm: FederatedAlgorithm, record: RoundRecord, good: list[tuple[int, Message]]
) -> RoundRecord:
    """Aggregate the good uploads, or skip the round (warning) when fewer than ``min_clients``."""
    counters = algorithm.counters
    counters["client_steps"] += record.client_steps
    counters["failures"] += len(record.failed)
    for name in record.failed:
        counters["failed_clients"][name] = counters["failed_clients"].get(name, 0) + 1
    if len(good) < algorithm.min_clients:
        warnings.warn(
            f"round {algorithm.round}: {len(good)} good clients of {len(record.chosen)} "
            f"(min_clients={algorithm.min_clients}); round skipped, model unchanged "
            f"(failed: {', '.join(record.failed) or 'none'})",
            RuntimeWarning,
            stacklevel=3,
        )
        record.skipped = True
        counters["skipped_rounds"] += 1
    else:
        algorithm.aggregate(good)
        record.train_loss = float(np.mean(record.losses)) if record.losses else float("nan")
    algorithm.round += 1
    counters["rounds"] += 1
    return record
