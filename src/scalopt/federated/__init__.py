"""Federated optimization, simulated in-process: client sampling, local training, server steps.

    algo = scalopt.federated.FedLADA(model.parameters(), lr=3e-3, alpha=0.1,
                                     local_steps=10, clients_per_round=5, seed=0)
    clients = workload.federated_clients(20, alpha=0.1, generator=torch.Generator().manual_seed(0))
    for t in range(rounds):
        record = federated_round(algo, clients, model, workload.loss, data_seed=1)

Algorithms: :class:`FedAvg`, :class:`FedAdam`, :class:`FedLADA`, :class:`LocalAdam` (the unamended
control). The Flower strategy and client that run the same server logic live in
:mod:`scalopt.federated.flower` (optional extra ``scalopt[federated]``).
"""

from __future__ import annotations

from scalopt.federated.base import FederatedAlgorithm, load_into, message_bytes
from scalopt.federated.fedadam import FedAdam
from scalopt.federated.fedavg import FedAvg
from scalopt.federated.fedlada import FedLADA, LocalAdam
from scalopt.federated.partition import ClientData, dirichlet_partition, label_histogram
from scalopt.federated.round import RoundRecord, client_generator, federated_round

__all__ = [
    "ClientData",
    "FedAdam",
    "FedAvg",
    "FedLADA",
    "FederatedAlgorithm",
    "LocalAdam",
    "RoundRecord",
    "client_generator",
    "dirichlet_partition",
    "federated_round",
    "label_histogram",
    "load_into",
    "message_bytes",
]
