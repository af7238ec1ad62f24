"""Standalone theory diagnostics (NumPy/SciPy only, never torch).

- :func:`check_adam`: the Generic Adam sufficient condition (Zou et al., CVPR 2019, arXiv 1811.09358).
- :func:`parse_schedule`: safe expressions of the step t for ``scalopt check`` (never ``eval``).
- :func:`biased_sgd_rate`, :func:`max_step_size`: the biased-SGD rate certificate (Hu, Seiler, Lessard,
  Math. Programming 2021, arXiv 1711.00987); :func:`sequential_sdp_schedule` (needs CVXPY).
- :func:`estimate_l0l1`: fit (L0, L1)-smoothness constants to gradient and Hessian norms of a run.
- :mod:`scalopt.theory.reddi`: the Reddi et al. online convex counterexample in NumPy.
"""

from __future__ import annotations

from scalopt.theory.adam_condition import AdamConditionReport, ConditionVerdict, check_adam
from scalopt.theory.biased_sgd import BiasedSGDRate, Certificate, biased_sgd_rate, max_step_size
from scalopt.theory.biased_sgd_sdp import SequentialSchedule, sequential_sdp_schedule
from scalopt.theory.expr import Expression, compile_expression, parse_schedule
from scalopt.theory.l0l1_fit import L0L1Fit, estimate_l0l1

__all__ = [
    "AdamConditionReport",
    "BiasedSGDRate",
    "Certificate",
    "ConditionVerdict",
    "Expression",
    "L0L1Fit",
    "SequentialSchedule",
    "biased_sgd_rate",
    "check_adam",
    "compile_expression",
    "estimate_l0l1",
    "max_step_size",
    "parse_schedule",
    "sequential_sdp_schedule",
]
