"""Shared numerics: matrix inverse p-th roots (eigendecomposition, coupled Newton), batched; the
L-BFGS two-loop recursion and Powell-type damping of curvature pairs."""

from scalopt.linalg.lbfgs import damp_pair, two_loop
from scalopt.linalg.roots import ROOT_METHODS, RootResult, finite_rows, inverse_root, nonfinite_report

__all__ = [
    "ROOT_METHODS",
    "RootResult",
    "damp_pair",
    "finite_rows",
    "inverse_root",
    "nonfinite_report",
    "two_loop",
]
