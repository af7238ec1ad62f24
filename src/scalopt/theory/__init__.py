"""Standalone theory diagnostics (NumPy/SciPy only, never torch).

- :func:`check_adam`: the Generic Adam sufficient condition (Zou et al., CVPR 2019, arXiv 1811.09358).
- :func:`parse_schedule`: safe expressions of the step t for ``scalopt check`` (never ``eval``).
- :mod:`scalopt.theory.reddi`: the Reddi et al. online convex counterexample in NumPy.
"""

from __future__ import annotations

from scalopt.theory.adam_condition import AdamConditionReport, ConditionVerdict, check_adam
from scalopt.theory.expr import Expression, compile_expression, parse_schedule

__all__ = [
    "AdamConditionReport",
    "ConditionVerdict",
    "Expression",
    "check_adam",
    "compile_expression",
    "parse_schedule",
]
