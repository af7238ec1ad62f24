"""Shared numerics: matrix inverse p-th roots (eigendecomposition, coupled Newton), batched."""

from scalopt.linalg.roots import ROOT_METHODS, RootResult, finite_rows, inverse_root, nonfinite_report

__all__ = ["ROOT_METHODS", "RootResult", "finite_rows", "inverse_root", "nonfinite_report"]
