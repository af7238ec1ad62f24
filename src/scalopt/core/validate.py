"""Argument checks shared by every optimizer, transform and config object.

Each check raises ``ValueError`` naming the argument, the value it got and what is allowed, so a
user reads the fix in the message. They return the value so constructors can write
``self.lr = check_positive("lr", lr)``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(name: str, value: Any) -> float:
    if not _is_number(value) or math.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return value


def check_positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    check_number(name, value)
    if not value > 0 or (math.isinf(value) and not allow_inf):
        allowed = "(0, inf]" if allow_inf else "(0, inf)"
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    return value


def check_nonnegative(name: str, value: Any, *, allow_inf: bool = False) -> float:
    check_number(name, value)
    if value < 0 or (math.isinf(value) and not allow_inf):
        allowed = "[0, inf]" if allow_inf else "[0, inf)"
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    return value


def check_lr(name: str, value: Any) -> float:
    """A learning rate: a finite number >= 0 (0 is allowed, as in torch.optim: frozen groups, warm-up
    schedulers that start at 0)."""
    return check_nonnegative(name, value)


def check_interval(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = True
) -> float:
    """``value`` in the interval from ``low`` to ``high``; the flags say which ends are excluded."""
    check_number(name, value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_betas(name: str, value: Any, *, high_open: Sequence[bool] = (True, True)) -> tuple[float, float]:
    """A pair of coefficients, each in [0, 1) (or [0, 1] where ``high_open`` says so)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {value!r}")
    for i, (beta, open_) in enumerate(zip(value, high_open)):
        check_interval(f"{name}[{i}]", beta, 0.0, 1.0, high_open=open_)
    return (float(value[0]), float(value[1]))


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def did_you_mean(value: str, names: Iterable[str]) -> str:
    """`` did you mean 'x'?`` for the closest of ``names`` (difflib), or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), list(names), n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


def check_name(what: str, value: Any, names: Sequence[str]) -> str:
    """``value`` is one of the registry ``names``; else ``unknown <what> 'x'; did you mean 'y'? valid
    names: ...``."""
    if value not in names:
        raise ValueError(
            f"unknown {what} {value!r};{did_you_mean(value, names)} valid names: {', '.join(names)}"
        )
    return value
