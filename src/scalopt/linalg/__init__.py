"""Shared numerics: matrix inverse p-th roots (eigendecomposition, coupled Newton) and eigenbases
(exact, or refreshed by one warm-started power iteration + QR), batched; the L-BFGS two-loop
recursion and Powell-type damping of curvature pairs."""

from scalopt.linalg.eigenbasis import eigenbasis
from scalopt.linalg.lbfgs import damp_pair, two_loop
from scalopt.linalg.roots import (
    ROOT_METHODS,
    RootResult,
    finite_rows,
    inverse_root,
    newton_root_fixed,
    nonfinite_report,
)

__all__ = [
    "ROOT_METHODS",
    "RootResult",
    "damp_pair",
    "eigenbasis",
    "finite_rows",
    "inverse_root",
    "newton_root_fixed",
    "nonfinite_report",
    "two_loop",
]
