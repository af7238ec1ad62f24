"""Runs, suites, the training loop, records and the runner."""

from scalopt.bench.loop import train_run
from scalopt.bench.runner import run_specs
from scalopt.bench.spec import RunSpec

__all__ = ["RunSpec", "run_specs", "train_run"]
