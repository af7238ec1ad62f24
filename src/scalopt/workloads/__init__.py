"""The embedded, offline workloads and their registry.

``get(name, **overrides)`` builds a workload by registry name with config overrides;
``names()`` lists them. See :mod:`scalopt.workloads.base` for the interface.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from scalopt.core.validate import check_name, did_you_mean
from scalopt.workloads.base import Point, Workload
from scalopt.workloads.ctr import CTR
from scalopt.workloads.digits import Digits
from scalopt.workloads.l0l1 import L0L1
from scalopt.workloads.quadratic import Quadratic
from scalopt.workloads.reddi import Reddi
from scalopt.workloads.rosenbrock import Rosenbrock
from scalopt.workloads.stdlib_lm import StdlibLM

WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls for cls in (StdlibLM, Digits, CTR, L0L1, Quadratic, Rosenbrock, Reddi)
}


def names() -> list[str]:
    """Registry names, sorted."""
    return sorted(WORKLOADS)


def get(name: str, **overrides: Any) -> Workload:
    """The workload ``name`` with its pinned config, changed by ``overrides`` (validated).

    ``preset=NAME`` first applies a named size of the workload (its class's ``PRESETS``); the other
    overrides then change single fields of it."""
    check_name("workload", name, names())
    cls = WORKLOADS[name]
    if "preset" in overrides:
        presets: dict[str, dict[str, Any]] = getattr(cls, "PRESETS", {})
        preset = check_name(f"preset of workload {name!r}", overrides.pop("preset"), sorted(presets))
        overrides = {**presets[preset], **overrides}
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in overrides:
        if key not in valid:
            raise ValueError(
                f"unknown config field {key!r} for workload {name!r};{did_you_mean(key, valid)} "
                f"valid fields: {', '.join(valid)}"
            )
    return cls(**overrides)


__all__ = [
    "CTR",
    "L0L1",
    "WORKLOADS",
    "Digits",
    "Point",
    "Quadratic",
    "Reddi",
    "Rosenbrock",
    "StdlibLM",
    "Workload",
    "get",
    "names",
]
