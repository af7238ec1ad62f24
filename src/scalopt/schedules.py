"""Small serializable schedules of the 1-based step ``t``.

Param groups hold plain numbers only, so anything that varies with the step is one of these
objects: a frozen dataclass with ``__call__(t)``, ``to_dict()`` and ``from_dict()``. They are the
α_t = lr·t^(−s) and θ_t = 1 − θ/t^r families of Generic Adam (Zou et al., CVPR 2019) and a
constant; the theory checker (``scalopt.theory``) reads their parameters for exact verdicts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scalopt.core.validate import check_interval, check_nonnegative, check_number


@dataclass(frozen=True)
class Constant:
    """c for every t."""

    value: float

    def __post_init__(self) -> None:
        check_number("value", self.value)

    def __call__(self, t: int) -> float:
        return self.value


@dataclass(frozen=True)
class InvPower:
    """t^(−s): with ``lr`` in front, the decaying step size α_t = lr·t^(−s). ``s`` in [0, inf)."""

    s: float

    def __post_init__(self) -> None:
        check_nonnegative("s", self.s)

    def __call__(self, t: int) -> float:
        return t ** (-self.s)  # an int t: float(t) ** (−s); a tensor step (compiled): a tensor


@dataclass(frozen=True)
class OneMinusInvPower:
    """1 − θ/t^r, the second-moment weight θ_t of Generic Adam. θ in (0, 1], r in [0, inf).

    θ = 1 is allowed (θ_t = 1 − 1/t, the running average of g²); then θ_1 = 0.
    """

    theta: float
    r: float

    def __post_init__(self) -> None:
        check_interval("theta", self.theta, 0.0, 1.0, low_open=True, high_open=False)
        check_nonnegative("r", self.r)

    def __call__(self, t: int) -> float:
        return 1.0 - self.theta / t**self.r


SCHEDULES: dict[str, type] = {cls.__name__: cls for cls in (Constant, InvPower, OneMinusInvPower)}


def to_dict(schedule: Any) -> dict[str, Any] | None:
    """The plain-data form of a schedule (``None`` stays ``None``)."""
    if schedule is None:
        return None
    if type(schedule).__name__ not in SCHEDULES:
        raise ValueError(
            f"schedule must be one of {', '.join(SCHEDULES)} (or None) to be saved, got {schedule!r}"
        )
    return {"type": type(schedule).__name__, **asdict(schedule)}


def from_dict(data: dict[str, Any] | None) -> Any:
    """Inverse of :func:`to_dict`."""
    if data is None:
        return None
    data = dict(data)
    kind = data.pop("type", None)
    if kind not in SCHEDULES:
        raise ValueError(f"schedule type must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    return SCHEDULES[kind](**data)


def check_schedule(name: str, schedule: Any) -> Any:
    """Accept ``None``, a number (turned into :class:`Constant`) or a callable of t."""
    if schedule is None:
        return None
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return Constant(value=float(schedule))
    if not callable(schedule):
        raise ValueError(f"{name} must be None, a number or a callable of the step t, got {schedule!r}")
    value = schedule(1)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}(1) must be a finite number, got {value!r}")
    return schedule
