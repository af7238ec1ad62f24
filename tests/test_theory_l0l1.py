"""estimate_l0l1: the smallest (L0, L1) envelope of logged (‖∇f‖, ‖∇²f‖) pairs; the l0l1 workload's logs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scalopt.optim import ClippedSGD
from scalopt.theory import estimate_l0l1
from scalopt.workloads.l0l1 import L0L1


def test_fit_on_points_of_a_known_envelope():
    # s = sqrt(a² + b²g²) (the profile of one cosh term) is convex in g, so the smallest mean-height line
    # over g in [0, G] is its chord: L0 = a, L1 = (sqrt(a² + b²G²) − a)/G.
    a, b, G = 1.5, 3.0, 200.0
    g = np.linspace(0.0, G, 101)
    fit = estimate_l0l1(g, np.sqrt(a**2 + (b * g) ** 2))
    assert fit.L0 == pytest.approx(a, rel=1e-9)
    assert fit.L1 == pytest.approx((np.hypot(a, b * G) - a) / G, rel=1e-9)
    # points on a line are fitted exactly, and every point is covered
    rng = np.random.default_rng(0)
    g = rng.uniform(0, 50, size=40)
    s = 0.7 + 2.5 * g - rng.uniform(0, 3, size=40)
    s[[3, 17]] = 0.7 + 2.5 * g[[3, 17]]
    fit = estimate_l0l1(g, s)
    assert np.all(s <= fit.L0 + fit.L1 * g)
    assert fit.L0 + fit.L1 * g.mean() <= 0.7 + 2.5 * g.mean() + 1e-9


@pytest.mark.parametrize(
    ("g", "s", "match"),
    [
        ([1.0, 2.0], [1.0], "same length"),
        ([1.0, -2.0], [1.0, 1.0], "grad_norms"),
        ([1.0, 2.0], [1.0, float("nan")], "local_smoothness"),
        ([1.0, 1.0], [1.0, 2.0], "two different"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    ],
)
def test_fit_bad_input(g, s, match):
    with pytest.raises(ValueError, match=match):
        estimate_l0l1(g, s)


def test_l0l1_smoothness_metric_is_the_hessian_norm():
    w = L0L1(dim=6, n_terms=16)
    g = torch.Generator().manual_seed(0)
    for scale in (0.0, 0.5, 2.0):
        x = w.x_star + scale * torch.randn(w.dim, generator=g, dtype=torch.float64)
        hess = torch.autograd.functional.hessian(w.objective, x)
        want = float(torch.linalg.matrix_norm(hess, ord=2))
        assert float(w.hessian_norm(x)) == pytest.approx(want, rel=1e-9)


def test_fit_recovers_the_workload_constants_from_a_run():
    """One direction (d = 1): the run's (grad_norm, smoothness) records lie on sqrt(L0² + L1²g²); a
    clipped-SGD run from |u| = 8 down to x* spans g in [~1e-4, ~840], so the chord is within 0.1% of (L0, L1).
    In more dimensions a run sees only part of the worst direction and the fit is lower (a property of
    the points, stated in the estimator's docstring)."""
    w = L0L1(dim=1, n_terms=16, beta_min=2.0, beta_max=2.0, init_distance=8.0)
    gen = torch.Generator().manual_seed(0)
    model = w.init_model(gen)
    opt = ClippedSGD(model.parameters(), lr=0.2, max_norm=1.0)
    batches = w._train_batches(gen)
    grad_norms, smoothness = [], []
    for _ in range(150):
        metrics = w.evaluate(model)
        grad_norms.append(metrics["grad_norm"])
        smoothness.append(metrics["smoothness"])
        opt.zero_grad()
        w.loss(model, next(batches)).backward()
        opt.step()
    fit = estimate_l0l1(np.array(grad_norms), np.array(smoothness))
    assert fit.L0 == pytest.approx(w.L0, rel=1e-3)
    assert fit.L1 == pytest.approx(w.L1, rel=1e-3)
