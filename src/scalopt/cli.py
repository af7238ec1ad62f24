"""The command line: ``scalopt list | train | bench | report | check``.

    scalopt bench                                   the default suite on stdlib-lm, report in runs/default
    scalopt bench --suite quick --seeds 1 --out runs/quick
    scalopt train --workload digits --optimizer clipped-sgd --set lr=0.1 --set max_norm=1 --steps 300
    scalopt train --workers 2 --algorithm celgc --set lr=0.3 --set max_norm=1 \
        --algorithm-set period=8 --network 1e-3,125e6
    scalopt report runs/default                     re-render from records, never trains
    scalopt list
    scalopt check adam --lr 1e-3 --lr-decay "1/sqrt(t)" --beta2 "1-1/t"
    scalopt check sgd-bias --m 1 --L 10 --alpha 0.01 --delta 0.05

Unknown names print one line listing the valid ones and exit with status 2.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad name or value on the command line: one line to stderr, exit status 2."""


def _value(text: str) -> Any:
    """A literal (number, bool, tuple, string) from ``KEY=VALUE``; plain words stay strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items: Sequence[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = _value(value.strip())
    return out


def _default_threads() -> int:
    return 1


def _cmd_list(args: argparse.Namespace) -> int:
    from scalopt import workloads
    from scalopt.bench import suites
    from scalopt.optim import registry

    print("optimizers ([closure]: step(closure), closure() = the batch's loss without backward;")
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
    from scalopt.distributed import registry as algorithms

    print("distributed algorithms (scalopt train --workers N --algorithm NAME):")
    print("  " + ", ".join(algorithms.names()))
    print("suites:")
    for name in suites.names():
        print(f"  {name:22s} {suites.summary(name)}")
    return 0


def _check_names(workload: str | None = None, optimizer: str | None = None, suite: str | None = None) -> None:
    from scalopt import workloads
    from scalopt.bench import suites
    from scalopt.optim import registry

    for value, names, what in (
        (workload, workloads.names(), "workload"),
        (optimizer, registry.names(), "optimizer"),
        (suite, suites.names(), "suite"),
    ):
        if value is not None and value not in names:
            raise UsageError(f"unknown {what} {value!r}; valid names: {', '.join(names)}")


def _cmd_train(args: argparse.Namespace) -> int:
    from scalopt import workloads
    from scalopt.bench import RunSpec, run_specs
    from scalopt.report import render

    _check_names(workload=args.workload, optimizer=args.optimizer)
    if args.workers > 1 and args.algorithm is None:
        args.algorithm = "data-parallel"
    if args.algorithm is not None:
        from scalopt.distributed import registry as algorithms

        if args.algorithm not in algorithms.names():
            raise UsageError(
                f"unknown algorithm {args.algorithm!r}; valid names: {', '.join(algorithms.names())}"
            )
        own = algorithms.OWN_OPTIMIZER.get(args.algorithm)
        if own is not None and args.optimizer is not None:
            raise UsageError(
                f"--algorithm {args.algorithm} is an optimizer itself ({own}): drop --optimizer "
                f"{args.optimizer} and give {own}'s hyperparameters with --set / --lr"
            )
    network = None
    if args.network:
        try:
            latency, bandwidth = (float(x) for x in args.network.split(","))
        except ValueError:
            raise UsageError(
                f"--network must be LATENCY_S,BYTES_PER_S (e.g. 1e-3,125e6), got {args.network!r}"
            ) from None
        network = (latency, bandwidth)
    hparams = _pairs(args.set, "--set")
    if args.lr is not None:
        hparams["lr"] = args.lr
    overrides = _pairs(args.workload_set, "--workload-set")
    try:
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
            algorithm_args=_pairs(args.algorithm_set, "--algorithm-set"),
            network=network,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out or f"runs/train-{args.workload}-{args.optimizer or args.algorithm}")
    run_specs(
        [spec],
        out,
        suite="train",
        resume=args.resume,
        threads=args.threads,
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress,
    )
    print(f"report: {render(out)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from scalopt.bench import run_specs, suites
    from scalopt.report import render

    _check_names(suite=args.suite)
    specs = suites.get(args.suite)(args.seeds)
    out = Path(args.out or f"runs/{args.suite}")
    print(f"suite {args.suite}: {len(specs)} runs into {out} (torch threads: {args.threads})")
    try:
        run_specs(
            specs,
            out,
            suite=args.suite,
            resume=args.resume,
            threads=args.threads,
            checkpoint_every=args.checkpoint_every,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished runs are kept; `scalopt bench --suite {args.suite} --out {out}"
            " --resume` finishes the rest",
            file=sys.stderr,
        )
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scalopt", description="Scalable and adaptive optimizers: benchmarks, reports, checks."
    )
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="optimizers, workloads and suites").set_defaults(func=_cmd_list)

    def run_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", help="output directory (records, report.md, figures)")
        sp.add_argument(
            "--resume", action="store_true", help="continue unfinished runs from their checkpoints"
        )
        sp.add_argument(
            "--threads", type=int, default=_default_threads(), help="torch threads, pinned for every run"
        )
        sp.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    t = sub.add_parser("train", help="train one optimizer on one workload")
    t.add_argument("--workload", default="stdlib-lm")
    t.add_argument("--optimizer", help="required, except for algorithms that are optimizers themselves")
    t.add_argument("--lr", type=float)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="optimizer hyperparameter")
    t.add_argument("--workload-set", action="append", default=[], metavar="KEY=VALUE", help="workload config")
    t.add_argument("--steps", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=50)
    t.add_argument("--label")
    t.add_argument(
        "--workers", type=int, default=1, help="gloo processes on loopback (default algorithm: data-parallel)"
    )
    t.add_argument(
        "--algorithm", help="distributed algorithm: data-parallel, local-sgd, celgc, overlap-local-sgd"
    )
    t.add_argument("--algorithm-set", action="append", default=[], metavar="KEY=VALUE", help="e.g. period=8")
    t.add_argument("--network", help="emulated network for every collective: LATENCY_S,BYTES_PER_S")
    run_options(t)
    t.set_defaults(func=_cmd_train)

    b = sub.add_parser("bench", help="run a suite over seeds and render its report")
    b.add_argument("--suite", default="default")
    b.add_argument("--seeds", type=int, default=3)
    run_options(b)
    b.set_defaults(func=_cmd_bench)

    c = sub.add_parser("check", help="theory diagnostics")
    csub = c.add_subparsers(dest="check", required=True)
    ca = csub.add_parser(
        "adam", help="the Generic Adam sufficient convergence condition (exit 1 if it fails)"
    )
    ca.add_argument("--lr", type=float, default=1e-3, help="base step size")
    ca.add_argument("--lr-decay", help='decay of the step size in t, e.g. "1/sqrt(t)" (default: constant)')
    ca.add_argument("--beta2", default="0.999", help='second-moment weight θ_t, e.g. "1-1/t" or 0.999')
    ca.add_argument("--beta1", type=float, default=0.9)
    ca.add_argument("--horizon", type=int, default=10**6, help="steps checked for non-parametric schedules")
    ca.set_defaults(func=_cmd_check_adam)
    cs = csub.add_parser(
        "sgd-bias", help="certified rate of SGD with biased gradients (exit 1 if rho >= 1)"
    )
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
    r.add_argument("dir")
    r.set_defaults(func=_cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"scalopt: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
