"""Parsing the command line's values: one-line errors, ``KEY=VALUE`` literals, bounded integers.

``Parser`` turns argparse's own errors into the CLI's one line (``scalopt: error: ...``, exit status 2,
the closest subcommand for a misspelt one) and shows every flag's default in its help. VALUE in
``KEY=VALUE`` is a Python literal read by ``ast.literal_eval`` (numbers, booleans, tuples, strings;
a plain word stays a string) and at most ``MAX_VALUE_CHARS`` long, so a pathological literal is an
error message instead of a MemoryError in the parser.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Sequence
from typing import Any

EXIT_USAGE = 2


#: the longest VALUE of a KEY=VALUE pair (a tuple of numbers fits; a pathological literal does not)
MAX_VALUE_CHARS = 200


class UsageError(Exception):
    """A bad name or value on the command line: one line to stderr, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every flag that has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return action.help or ""
        if "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse's own errors (a missing or malformed flag) as one line and status 2, like ours."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        if m := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message):
            from scalopt.core.validate import did_you_mean

            hint = did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
            message += f";{hint}" if hint else ""
        print(f"scalopt: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def int_at_least(minimum: int) -> Any:
    """An argparse ``type``: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text[:40]!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def parse_value(text: str, key: str) -> Any:
    """A literal (number, bool, tuple, string) from ``KEY=VALUE``; plain words stay strings."""
    if not text:
        raise UsageError(f"{key}= has no value")
    if len(text) > MAX_VALUE_CHARS:
        raise UsageError(f"the value of {key} is {len(text)} characters long; at most {MAX_VALUE_CHARS}")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_pairs(items: Sequence[str], what: str) -> dict[str, Any]:
    """``["a=1", "b-c=(1,2)"]`` -> ``{"a": 1, "b_c": (1, 2)}``; ``what`` names the flag in errors."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} must look like KEY=VALUE, got {item[:60]!r}")
        key = key.strip().replace("-", "_")
        out[key] = parse_value(value.strip(), key)
    return out


def parse_network(text: str | None) -> tuple[float, float] | None:
    """``"LATENCY_S,BYTES_PER_S"`` -> the pair (``None`` for no network)."""
    if not text:
        return None
    try:
        latency, bandwidth = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(
            f"--network must be LATENCY_S,BYTES_PER_S (e.g. 1e-3,125e6), got {text[:60]!r}"
        ) from None
    if not (latency >= 0 and bandwidth > 0) or latency == float("inf") or bandwidth == float("inf"):
        raise UsageError(f"--network needs latency >= 0 and bandwidth > 0 (finite), got {text[:60]!r}")
    return latency, bandwidth


def resolve_device(name: str, single: bool = True) -> str:
    """``--device``: auto is cuda when torch sees a GPU and the run is ``single`` (one process, one
    model: not distributed, not federated), else cpu."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() and single else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device cuda, but torch {torch.__version__} sees no CUDA device "
            f"(torch.cuda.is_available() is False); use --device cpu or auto"
        )
    return name


def autocast_choice(value: str | None) -> str | None:
    """``--autocast``: "none" is no autocast (None)."""
    return None if value in (None, "none") else value
