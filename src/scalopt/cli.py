"""The command line: ``scalopt list | train | bench | report | check``.

    scalopt bench                                   the default suite on stdlib-lm, report in runs/default
    scalopt bench --suite quick --seeds 1 --out runs/quick
    scalopt train --workload digits --optimizer clipped-sgd --set lr=0.1 --set max_norm=1 --steps 300
    scalopt train --workers 2 --algorithm celgc --set lr=0.3 --set max_norm=1 \
        --algorithm-set period=8 --network 1e-3,125e6
    scalopt train --workload digits --optimizer fedlada --lr 1e-2 --clients 20 --clients-per-round 5 \
        --local-steps 10 --dirichlet 0.1 --steps 200
    scalopt report runs/default                     re-render from records, never trains
    scalopt list
    scalopt check adam --lr 1e-3 --lr-decay "1/sqrt(t)" --beta2 "1-1/t"
    scalopt check sgd-bias --m 1 --L 10 --alpha 0.01 --delta 0.05

Every mistake on the command line (an unknown name, a bad or missing hyperparameter, a malformed
value) prints one line ``scalopt: error: ...`` and exits with status 2 before anything is written;
unknown names and keys get the closest valid one. Help lists come from the registries.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scalopt.cli_args import (
    EXIT_USAGE,
    Parser,
    UsageError,
    autocast_choice,
    int_at_least,
    parse_network,
    parse_pairs,
    resolve_device,
)

_NAMED = ("workload", "optimizer", "algorithm", "suite")


def _default_threads() -> int:
    return 1


def _print_arguments(title: str, params: dict[str, Any] | None, flag: str) -> None:
    from scalopt.optim.registry import REQUIRED

    print(title)
    if params is None:
        print("  (passed on unchecked; see the class it builds)")
        return
    for key, default in params.items():
        shown = "REQUIRED" if default is REQUIRED else f"default {default!r}"
        print(f"  {key:26s} {shown}")
    print(f"give them with {flag} KEY=VALUE")


def _cmd_list(args: argparse.Namespace) -> int:
    from scalopt import workloads
    from scalopt.bench import suites
    from scalopt.distributed import registry as algorithms
    from scalopt.optim import registry

    if args.optimizer is not None or args.algorithm is not None:
        if args.optimizer is not None:
            _check_names(optimizer=args.optimizer)
            e = registry.get(args.optimizer)
            _print_arguments(
                f"{e.name} ({e.summary}) hyperparameters:", registry.hyperparameters(e.name), "--set"
            )
        if args.algorithm is not None:
            _check_names(algorithm=args.algorithm)
            _print_arguments(
                f"{args.algorithm} arguments:", algorithms.arguments(args.algorithm), "--algorithm-set"
            )
        return 0
    print("optimizers (`scalopt list --optimizer NAME`: its hyperparameters and their defaults;")
    print("            [closure]: step(closure), closure() = the batch's loss without backward;")
    print("            [closure+sample]: also sample() = a fresh batch's loss; train/bench pass both):")
    for name in registry.names():
        e = registry.get(name)
        flag = {None: "", "loss": " [closure]", "loss+sample": " [closure+sample]"}[e.closure]
        print(f"  {name:22s} {e.family:12s} {e.summary}{flag}")
    print("workloads:")
    for name in workloads.names():
        wl = workloads.WORKLOADS[name]
        doc = (wl.__doc__ or "").strip().splitlines()[0] if wl.__doc__ else ""
        print(f"  {name:22s} {doc}")
    print("distributed algorithms (scalopt train --workers N --algorithm NAME; list --algorithm NAME):")
    print("  " + ", ".join(algorithms.names()))
    from scalopt.federated import registry as federated

    print("federated algorithms (scalopt train --optimizer NAME --clients N --dirichlet ALPHA ...):")
    for name in federated.names():
        print(f"  {name:22s} {federated.summary(name)}")
    print("suites:")
    for name in suites.names():
        print(f"  {name:22s} {suites.summary(name)}")
    return 0


def _check_names(
    workload: str | None = None,
    optimizer: str | None = None,
    suite: str | None = None,
    algorithm: str | None = None,
) -> None:
    from scalopt import workloads
    from scalopt.bench import suites
    from scalopt.core.validate import check_name
    from scalopt.distributed import registry as algorithms
    from scalopt.optim import registry

    for value, names, what in (
        (workload, workloads.names(), "workload"),
        (optimizer, registry.names(), "optimizer"),
        (suite, suites.names(), "suite"),
        (algorithm, algorithms.names(), "algorithm"),
    ):
        if value is not None:
            try:
                check_name(what, value, names)
            except ValueError as exc:
                raise UsageError(str(exc)) from None


def train_out_dir(spec: Any) -> Path:
    """The default output folder of ``scalopt train``: one per configuration (seeds share it)."""
    return Path(f"runs/train-{spec.workload}-{spec.optimizer}-{spec.config_id}")


def _cmd_train(args: argparse.Namespace) -> int:
    from scalopt.bench import RunSpec
    from scalopt.bench.preflight import check_spec
    from scalopt.report import render

    federated = _federated_settings(args)
    if args.workers > 1 and args.algorithm is None:
        args.algorithm = "data-parallel"
    _check_names(
        workload=args.workload, optimizer=None if federated else args.optimizer, algorithm=args.algorithm
    )
    if args.algorithm is not None:
        from scalopt.distributed import registry as algorithms

        own = algorithms.OWN_OPTIMIZER.get(args.algorithm)
        if own is not None and args.optimizer is not None:
            raise UsageError(
                f"--algorithm {args.algorithm} is an optimizer itself ({own}): drop --optimizer "
                f"{args.optimizer} and give {own}'s hyperparameters with --set / --lr"
            )
    network = parse_network(args.network)
    hparams = parse_pairs(args.set, "--set")
    if args.lr is not None:
        hparams["lr"] = args.lr
    overrides = parse_pairs(args.workload_set, "--workload-set")
    if federated and args.optimizer in ("fedavg", "fedadam") and "lr" in hparams:
        hparams["local_hparams"] = {**hparams.get("local_hparams", {}), "lr": hparams.pop("lr")}
    try:
        from scalopt import workloads

        wl = workloads.get(args.workload, **overrides)
        spec = RunSpec(
            workload=args.workload,
            optimizer=args.optimizer,
            hparams=hparams,
            workload_overrides=overrides,
            steps=args.steps or wl.default_steps,
            seed=args.seed,
            eval_every=args.eval_every,
            label=args.label or " ".join(x for x in (args.algorithm, args.optimizer) if x),
            workers=args.workers,
            algorithm=args.algorithm,
            algorithm_args=parse_pairs(args.algorithm_set, "--algorithm-set"),
            network=network,
            federated=federated,
            device=resolve_device(args.device, single=args.workers == 1 and not federated),
            autocast=autocast_choice(args.autocast),
        )
        if federated:
            _check_federated(spec)
        else:
            check_spec(spec)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    out = Path(args.out) if args.out else train_out_dir(spec)
    try:
        _run([spec], out, args, suite="train", again="the same command with --resume")
    except KeyboardInterrupt:
        return 130
    print(f"report: {render(out)}")
    return 0


def _run(
    specs: list[Any],
    out: Path,
    args: argparse.Namespace,
    *,
    suite: str,
    again: str,
    staged: Callable[..., Any] | None = None,
) -> None:
    """Run ``specs`` into ``out`` (or the suite's own staged runner, which builds its runs itself)."""
    from scalopt.bench import run_specs
    from scalopt.bench.records import RunLockedError

    options = dict(
        resume=args.resume,
        threads=args.threads,
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress,
    )
    try:
        if staged is not None:
            staged(out, seeds=args.seeds, **options)
        else:
            run_specs(specs, out, suite=suite, **options)
    except RunLockedError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished runs are kept; {again} finishes the rest", file=sys.stderr)
        raise


FEDERATED_FLAGS = ("clients", "clients_per_round", "local_steps", "dirichlet", "min_clients")


def _federated_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The partition/participation flags of a federated ``train`` (empty for any other optimizer)."""
    from scalopt.bench.federated_run import DEFAULTS
    from scalopt.federated import registry as federated

    given = {k: getattr(args, k) for k in FEDERATED_FLAGS if getattr(args, k) is not None}
    if args.optimizer not in federated.names():
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise UsageError(f"{flags} apply to federated algorithms only ({', '.join(federated.names())})")
        return {}
    if args.workers > 1 or args.algorithm is not None:
        raise UsageError(f"{args.optimizer} is simulated in one process: drop --workers and --algorithm")
    return {**{k: DEFAULTS[k] for k in FEDERATED_FLAGS}, **given}


def _check_federated(spec: Any) -> None:
    """Bad federated settings or algorithm arguments raise ValueError before anything trains."""
    import torch

    from scalopt.bench.federated_run import federated_config
    from scalopt.federated import registry as federated

    cfg = federated_config(spec)
    keys = ("local_steps", "clients_per_round", "min_clients")
    federated.build(spec.optimizer, [torch.zeros(1)], **{k: cfg[k] for k in keys}, **spec.hparams)


def _cmd_bench(args: argparse.Namespace) -> int:
    from scalopt.bench import suites
    from scalopt.report import render

    _check_names(suite=args.suite)
    device = resolve_device(args.device)
    specs = suites.build(args.suite, args.seeds, device=device, autocast=args.autocast)
    out = Path(args.out or f"runs/{args.suite}")
    staged = suites.runner(args.suite)
    if staged is not None:  # it builds its own runs, on the CPU (--device auto falls back to it)
        if args.device == "cuda" or args.autocast is not None:
            raise UsageError(f"suite {args.suite} runs on the CPU: drop --device cuda / --autocast")
        device = "cpu"
    print(
        f"suite {args.suite}: {len(specs)} runs{' (and later stages)' if staged else ''} into {out} "
        f"(device {device}, torch threads: {args.threads})"
    )
    try:
        _run(
            specs,
            out,
            args,
            suite=args.suite,
            again=f"`scalopt bench --suite {args.suite} --out {out} --resume`",
            staged=staged,
        )
    except KeyboardInterrupt:
        return 130
    print(f"report: {render(out)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from scalopt.report import render

    try:
        print(f"report: {render(args.dir)}")
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _cmd_check_adam(args: argparse.Namespace) -> int:
    from scalopt.theory import check_adam, parse_schedule

    try:
        lr_decay = parse_schedule(args.lr_decay, kind="lr_decay") if args.lr_decay else None
        beta2 = parse_schedule(args.beta2, kind="beta2")
        report = check_adam(
            lr=args.lr, lr_decay=lr_decay, beta2=beta2, beta1=args.beta1, horizon=args.horizon
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(report)
    return 0 if report.satisfied else 1


def _cmd_check_sgd_bias(args: argparse.Namespace) -> int:
    from scalopt.theory import biased_sgd_rate, max_step_size

    try:
        rate = biased_sgd_rate(
            m=args.m, L=args.L, alpha=args.alpha, delta=args.delta, c=args.c, sigma2=args.sigma2,
            smoothness=args.smoothness, method=args.method,
        )  # fmt: skip
        alpha_max = max_step_size(m=args.m, L=args.L, delta=args.delta, c=args.c, smoothness=args.smoothness)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(rate)
    print(f"  largest alpha with rho < 1: {alpha_max:.6g}" if alpha_max > 0 else (
        "  no step size certifies rho < 1 for this delta (contraction needs roughly delta < sqrt(m/(2L)))"
    ))  # fmt: skip
    return 0 if rate.converges else 1


def _registry_names() -> dict[str, str]:
    """Every registry's names, for the help texts (so a new entry shows up without editing the CLI)."""
    from scalopt import workloads
    from scalopt.bench import suites
    from scalopt.distributed import registry as algorithms
    from scalopt.optim import registry

    lists = {"workload": workloads.names(), "optimizer": registry.names()}
    lists.update(algorithm=algorithms.names(), suite=suites.names())
    return {what: ", ".join(names) for what, names in lists.items()}


def _parser(registry_help: bool = True) -> argparse.ArgumentParser:
    """The parser; ``registry_help=False`` leaves the registries (and torch) unimported, for ``check``."""
    names = _registry_names() if registry_help else dict.fromkeys(_NAMED, "see `scalopt list`")
    p = Parser(prog="scalopt", description="Scalable and adaptive optimizers: benchmarks, reports, checks.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    ls = sub.add_parser("list", help="optimizers, workloads, algorithms and suites")
    ls.add_argument("--optimizer", metavar="NAME", help="show this optimizer's hyperparameters and defaults")
    ls.add_argument("--algorithm", metavar="NAME", help="show this distributed algorithm's arguments")
    ls.set_defaults(func=_cmd_list)

    def run_options(sp: argparse.ArgumentParser, out_default: str) -> None:
        sp.add_argument(
            "--out", help=f"output directory: records, report.md, figures (default: {out_default})"
        )
        sp.add_argument(
            "--resume", action="store_true", help="continue unfinished runs from their checkpoints"
        )
        sp.add_argument(
            "--threads",
            type=int_at_least(1),
            default=_default_threads(),
            help="torch threads, pinned for every run",
        )
        sp.add_argument(
            "--checkpoint-every", type=int_at_least(1), default=100, help="steps between checkpoints"
        )
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")
        sp.add_argument(
            "--device",
            choices=("auto", "cpu", "cuda"),
            default="auto",
            help="where models, batches and optimizer state live (auto: cuda if torch sees a GPU and "
            "one process runs; records state it)",
        )
        sp.add_argument(
            "--autocast",
            choices=("none", "bf16"),
            help="forward pass and loss under torch.autocast in bfloat16 (default: none for train, "
            "the suite's own for bench)",
        )

    t = sub.add_parser("train", help="train one optimizer on one workload")
    t.add_argument("--workload", default="stdlib-lm", help=f"one of: {names['workload']}")
    t.add_argument(
        "--optimizer",
        metavar="NAME",
        help=f"one of: {names['optimizer']} (`scalopt list --optimizer NAME` shows its "
        "hyperparameters); required, except for algorithms that are optimizers themselves",
    )
    t.add_argument("--lr", type=float, help="learning rate (same as --set lr=LR; default: the optimizer's)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an optimizer hyperparameter, repeatable (VALUE: a Python literal, e.g. 0.9 or (0.9,0.99))",
    )
    t.add_argument(
        "--workload-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a workload config field, repeatable",
    )
    t.add_argument(
        "--steps", type=int_at_least(1), help="training steps (default: the workload's default_steps)"
    )
    t.add_argument(
        "--seed", type=int_at_least(0), default=0, help="init seed (the data seed derives from it)"
    )
    t.add_argument("--eval-every", type=int_at_least(1), default=50, help="steps between evaluations")
    t.add_argument("--label", help="name of the run in the report (default: the optimizer's name)")
    t.add_argument(
        "--workers",
        type=int_at_least(1),
        default=1,
        help="gloo processes on loopback; more than 1 runs --algorithm (data-parallel if not given)",
    )
    t.add_argument(
        "--algorithm",
        metavar="NAME",
        help=f"distributed algorithm, one of: {names['algorithm']} "
        "(`scalopt list --algorithm NAME` shows its arguments)",
    )
    t.add_argument(
        "--algorithm-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an algorithm argument, e.g. period=8",
    )
    t.add_argument(
        "--network", help="emulated network for every collective: LATENCY_S,BYTES_PER_S (default: none)"
    )
    f = t.add_argument_group(
        "federated (--optimizer fedavg | fedadam | fedlada | local-adam; steps = rounds)"
    )
    f.add_argument("--clients", type=int, help="number of clients n (default 20)")
    f.add_argument("--clients-per-round", type=int, help="clients sampled per round S (default 5)")
    f.add_argument("--local-steps", type=int, help="local steps per client per round K (default 10)")
    f.add_argument("--dirichlet", type=float, help="label-skew concentration alpha; inf = IID (default 1)")
    f.add_argument("--min-clients", type=int, help="fewest good clients a round needs (default 1)")
    run_options(t, "runs/train-WORKLOAD-OPTIMIZER-CONFIGHASH, one folder per configuration")
    t.set_defaults(func=_cmd_train)

    b = sub.add_parser("bench", help="run a suite over seeds and render its report")
    b.add_argument("--suite", default="default", help=f"one of: {names['suite']}")
    b.add_argument("--seeds", type=int_at_least(1), default=3, help="seeds per configuration")
    run_options(b, "runs/SUITE")
    b.set_defaults(func=_cmd_bench)

    c = sub.add_parser("check", help="theory diagnostics")
    csub = c.add_subparsers(dest="check", required=True, parser_class=Parser)
    ca = csub.add_parser(
        "adam", help="the Generic Adam sufficient convergence condition (exit 1 if it fails)"
    )
    ca.add_argument("--lr", type=float, default=1e-3, help="base step size")
    ca.add_argument("--lr-decay", help='decay of the step size in t, e.g. "1/sqrt(t)" (default: constant)')
    ca.add_argument("--beta2", default="0.999", help='second-moment weight θ_t, e.g. "1-1/t" or 0.999')
    ca.add_argument("--beta1", type=float, default=0.9, help="first-moment weight")
    ca.add_argument("--horizon", type=int, default=10**6, help="steps checked for non-parametric schedules")
    ca.set_defaults(func=_cmd_check_adam)
    cs = csub.add_parser("sgd-bias", help="certified rate of SGD with biased gradients (exit 1 if rho >= 1)")
    cs.add_argument("--m", type=float, required=True, help="strong convexity of f")
    cs.add_argument("--L", type=float, required=True, help="smoothness of each f_i")
    cs.add_argument("--alpha", type=float, required=True, help="step size")
    cs.add_argument("--delta", type=float, required=True, help="relative error: |e| <= delta |g| + ...")
    cs.add_argument("--c", type=float, default=0.0, help="absolute error: |e|^2 <= delta^2 |g|^2 + c^2")
    cs.add_argument("--sigma2", type=float, default=0.0, help="mean |grad f_i(x*)|^2 (noise at x*)")
    cs.add_argument("--smoothness", default="convex-smooth", help="convex-smooth (default) or smooth")
    cs.add_argument("--method", default="bisection", help="bisection (default), closed-form or sdp (CVXPY)")
    cs.set_defaults(func=_cmd_check_sgd_bias)

    r = sub.add_parser("report", help="re-render report.md and figures from records (never trains)")
    r.add_argument("dir", help="an output directory of `scalopt bench` or `scalopt train`")
    r.set_defaults(func=_cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parser(registry_help=argv[:1] != ["check"]).parse_args(argv)
    except SystemExit as exc:  # --help (0) or a malformed command line (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"scalopt: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
