"""FedLADA on digits under Flower's own Simulation Runtime, on this machine only (no network).

    pip install torch==2.13.0 'flwr[simulation]==1.42.*' && pip install -e .
    python examples/fedlada_flower.py --rounds 20 --clients 10 --per-round 5

The ServerApp runs scalopt's FedLADA server (``scalopt.federated.flower.FlowerStrategy``: the same
sampling, fault handling and aggregation as the in-process simulator); every virtual SuperNode runs
the ClientApp from ``scalopt.federated.flower.client_app`` on its Dirichlet(α) share of digits,
picked by the node's ``partition-id``. The global model is evaluated on the server after every
round. Flower's Simulation Runtime needs the ``simulation`` extra of flwr (Ray); nothing is
downloaded at run time.
"""

from __future__ import annotations

import argparse

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from scalopt import workloads
from scalopt.federated import FedLADA, load_into
from scalopt.federated.flower import FlowerStrategy, client_app, to_record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--dirichlet", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--alpha", type=float, default=0.1, help="FedLADA's amendment weight α")
    args = p.parse_args()

    wl = workloads.get("digits", batch_size=32)
    clients = wl.federated_clients(
        args.clients, alpha=args.dirichlet, generator=torch.Generator().manual_seed(0)
    )

    def make_model() -> torch.nn.Module:
        return wl.init_model(torch.Generator().manual_seed(0))

    def make_algorithm() -> FedLADA:
        return FedLADA(
            make_model().parameters(),
            lr=args.lr,
            alpha=args.alpha,
            local_steps=args.local_steps,
            clients_per_round=args.per_round,
            seed=0,
        )

    server = ServerApp()

    @server.main()
    def serve(grid: Grid, context: Context) -> None:
        algorithm, model = make_algorithm(), make_model()

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            load_into(model, algorithm.x)
            metrics = wl.evaluate(model)
            acc, loss = metrics["accuracy"], metrics["loss"]
            print(f"round {server_round:3d}: eval accuracy {acc:.4f}, loss {loss:.4f}")
            return MetricRecord(metrics)

        strategy = FlowerStrategy(algorithm)
        strategy.start(
            grid=grid,
            initial_arrays=to_record({"x": algorithm.x}),
            num_rounds=args.rounds,
            evaluate_fn=evaluate,
        )
        counters = algorithm.counters
        print(
            f"done: {counters['rounds']} rounds, {counters['client_steps']} client steps, "
            f"{sum(counters['bytes_down'].values()) / 1e6:.1f} MB down, "
            f"{sum(counters['bytes_up'].values()) / 1e6:.1f} MB up, {counters['failures']} failed clients"
        )

    run_simulation(
        server_app=server,
        client_app=client_app(make_algorithm, make_model, wl.loss, clients, data_seed=1),
        num_supernodes=args.clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )


if __name__ == "__main__":
    main()
