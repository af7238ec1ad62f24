"""The biased-SGD rate certificate (Hu, Seiler, Lessard 2021) against oracles written from the equations."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from reference import biased_sgd_ref as ref
from scalopt.cli import main
from scalopt.theory import biased_sgd_rate, max_step_size
from scalopt.theory.biased_sgd import Certificate, closed_form_point, is_certificate, lmi_matrix, problem

M, L = 1.0, 10.0


def _ref_feasible(p, rate) -> bool:
    c = rate.certificate
    F = ref.lmi_matrix(p.m, p.L, p.alpha, p.delta, rate.rho2, c.lambda_s, c.lambda_g, c.nu, p.smoothness)
    if not p.has_error:
        F = F[:2, :2]
    return np.linalg.eigvalsh(F)[-1] <= 1e-12 * max(1.0, np.linalg.norm(F, 2))


@pytest.mark.parametrize("smoothness", ["convex-smooth", "smooth"])
def test_lmi_matrix_is_the_quadratic_form(smoothness):
    rng = np.random.default_rng(0)
    for _ in range(5):
        m, L_, a, d, r2, ls, lg, nu = rng.uniform(0.05, 2.0, size=8)
        p = problem(m, m + L_, a, d, smoothness=smoothness)
        got = lmi_matrix(p, r2, Certificate(ls, lg, nu))
        want = ref.lmi_matrix(m, m + L_, a, d, r2, ls, lg, nu, smoothness)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# The table: (smoothness, δ, α) -> (best closed-form ρ², optimum ρ²) for m = 1, L = 10.
TABLE = [
    ("convex-smooth", 0.05, 0.01, 0.98668, 0.98644),
    ("convex-smooth", 0.10, 0.02, 0.98757, 0.98568),
    ("convex-smooth", 0.0, 0.01, 0.982, 0.982),
    ("smooth", 0.0, 0.01, 1.000, 1.000),
]


@pytest.mark.parametrize(("smoothness", "delta", "alpha", "closed", "optimum"), TABLE)
def test_table(smoothness, delta, alpha, closed, optimum):
    cf = biased_sgd_rate(M, L, alpha, delta, smoothness=smoothness, method="closed-form")
    assert cf.rho2 == pytest.approx(closed, abs=1.5e-5)
    best = biased_sgd_rate(M, L, alpha, delta, smoothness=smoothness)
    assert best.rho2 == pytest.approx(optimum, abs=5e-6)
    assert best.rho2 <= cf.rho2 + 1e-12 and best.rho == pytest.approx(best.rho2**0.5)
    p = problem(M, L, alpha, delta, smoothness=smoothness)
    assert _ref_feasible(p, best) and _ref_feasible(p, cf)
    assert best.converges == (optimum < 1)


@pytest.mark.parametrize("alpha", [0.003, 0.05, 0.09])
def test_no_error_reduces_to_classic_sgd(alpha):
    cs = biased_sgd_rate(M, L, alpha, 0.0, sigma2=2.0, method="closed-form")
    assert cs.rho2 == pytest.approx(ref.classic_sgd_rho2(M, L, alpha), rel=1e-14)
    assert cs.H == pytest.approx(2 * alpha**2 * 2.0, rel=1e-14)  # H = 2α²σ*²
    sm = biased_sgd_rate(M, L, alpha, 0.0, smoothness="smooth", method="closed-form")
    assert sm.rho2 == pytest.approx(1 - 2 * M * alpha + 2 * L * L * alpha**2, rel=1e-14)


def test_closed_form_matches_the_formulas_and_is_feasible():
    rng = np.random.default_rng(1)
    for smoothness in ("convex-smooth", "smooth"):
        for _ in range(20):
            tau, eta = 10 ** rng.uniform(-3, 1, size=2)
            rho2, ls, lg, nu = ref.closed_form(M, L, 0.01, 0.05, tau, eta, smoothness)
            if ls < 0:
                continue
            F = ref.lmi_matrix(M, L, 0.01, 0.05, rho2, ls, lg, nu, smoothness)
            assert np.linalg.eigvalsh(F)[-1] <= 1e-12 * max(1, np.linalg.norm(F, 2))
            p = problem(M, L, 0.01, 0.05, smoothness=smoothness)
            assert is_certificate(p, rho2, Certificate(ls, lg, nu))
    # the formula is smallest at τ = δ, η = δ√κ (κ = 2mLα²): ρ² = 1 − 2mα + κ(1 + δ)² + 2δ√κ
    rho2, _ = closed_form_point(problem(M, L, 0.01, 0.05))
    kappa = 2 * M * L * 0.01**2
    best = ref.closed_form(M, L, 0.01, 0.05, 0.05, 0.05 * kappa**0.5, "convex-smooth")[0]
    assert rho2 == pytest.approx(best, rel=1e-14)
    assert best == pytest.approx(1 - 2 * M * 0.01 + kappa * 1.05**2 + 2 * 0.05 * kappa**0.5, rel=1e-14)
    grid = np.logspace(-5, 2, 71)
    on_grid = [ref.closed_form(M, L, 0.01, 0.05, t, e, "convex-smooth")[0] for t in grid for e in grid]
    assert best <= min(on_grid)


def test_certificate_bounds_a_worst_case_step():
    """One term f = ½ξᵀAξ, spectrum in [m, L] (σ* = 0): ‖x_{k+1} − x*‖² ≤ ρ²‖x_k − x*‖² for ‖e‖ ≤ δ‖g‖."""
    rate = biased_sgd_rate(M, L, 0.01, 0.05)
    rng = np.random.default_rng(2)
    A = np.diag(np.linspace(M, L, 6))
    ratios = [ref.worst_step_ratio(A, 0.01, 0.05, rng.standard_normal(6)) for _ in range(200)]
    ratios += [ref.worst_step_ratio(A, 0.01, 0.05, np.eye(6)[0])]  # slowest direction
    assert max(ratios) <= rate.rho2 + 1e-12
    # on this quadratic the worst step is (1 − mα + αδm)² = 0.98109 (slowest direction, e against x*); the
    # certificate, which also covers non-quadratic f_i, is above it by 5.3e-3 here
    assert max(ratios) == pytest.approx((1 - 0.01 + 0.01 * 0.05) ** 2, rel=1e-12)
    assert rate.rho2 - max(ratios) < 6e-3


def test_noise_floor_from_the_multipliers():
    rate = biased_sgd_rate(M, L, 0.01, 0.05, c=0.1, sigma2=1.0)
    c = rate.certificate
    assert rate.H == pytest.approx(2 * c.lambda_g * 1.0 + c.nu * 0.1**2, rel=1e-14)
    assert rate.noise_floor == pytest.approx(rate.H / (1 - rate.rho2), rel=1e-14)
    cf = biased_sgd_rate(M, L, 0.01, 0.05, c=0.1, sigma2=1.0, method="closed-form")
    assert rate.rho2 < cf.rho2 and 0 < rate.H
    assert "CERTIFIED" in str(rate) and "noise floor" in str(rate)


def test_max_step_size_classic_limits():
    assert max_step_size(M, L, 0.0) == pytest.approx(1 / L, rel=1e-5)  # 1 − 2mα(1 − Lα) < 1 iff α < 1/L
    assert max_step_size(M, L, 0.0, smoothness="smooth") == pytest.approx(M / L**2, rel=1e-5)
    a = max_step_size(M, L, 0.05)
    assert 0 < a < 1 / L
    assert biased_sgd_rate(M, L, 0.98 * a, 0.05).converges
    assert not biased_sgd_rate(M, L, 1.02 * a, 0.05).converges
    assert max_step_size(M, L, 0.5) == 0.0  # δ well above √(m/(2L)): nothing contracts


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(delta=-0.1), "delta"),
        (dict(m=20.0), "m must be <= L"),
        (dict(c=-1.0), "c"),
        (dict(sigma2=-1.0), "sigma2"),
        (dict(smoothness="lipschitz"), "smoothness"),
        (dict(method="newton"), "method"),
    ],
)
def test_bad_input(kwargs, name):
    args = dict(m=M, L=L, alpha=0.01, delta=0.05) | kwargs
    with pytest.raises(ValueError, match=name):
        biased_sgd_rate(**args)


def test_closed_form_refuses_too_large_steps():
    with pytest.raises(ValueError, match="closed-form"):
        biased_sgd_rate(M, L, 0.2, 0.05, method="closed-form")
    rate = biased_sgd_rate(M, L, 0.2, 0.05)  # bisection still certifies a (non-contracting) bound
    assert not rate.converges and rate.noise_floor == float("inf")


# -- CLI ------------------------------------------------------------------------------------------------
def test_check_sgd_bias_cli(capsys):
    assert main(["check", "sgd-bias", "--m", "1", "--L", "10", "--alpha", "0.01", "--delta", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "CERTIFIED" in out and "0.986437" in out and "largest alpha with rho < 1: 0.07783" in out
    argv = ["check", "sgd-bias", "--m", "1", "--L", "10", "--alpha", "0.01", "--delta", "0.05"]
    assert main([*argv, "--smoothness", "smooth", "--method", "closed-form"]) == 1
    assert "NOT CERTIFIED" in capsys.readouterr().out
    assert main([*argv[:-1], "-0.1"]) == 2
    assert "delta" in capsys.readouterr().err
    assert main([*argv, "--smoothness", "lipschitz"]) == 2
    assert "smoothness" in capsys.readouterr().err


# -- SDP -------------------------------------------------------------------------------------------------
def test_sdp_reaches_the_bisection_optimum():
    pytest.importorskip("cvxpy")
    for smoothness, delta, alpha, _, optimum in TABLE:
        rate = biased_sgd_rate(M, L, alpha, delta, smoothness=smoothness, method="sdp")
        assert rate.rho2 == pytest.approx(optimum, abs=5e-6)
        assert _ref_feasible(problem(M, L, alpha, delta, smoothness=smoothness), rate)
    noisy = biased_sgd_rate(M, L, 0.01, 0.05, c=0.1, sigma2=1.0, method="sdp")
    bisect = biased_sgd_rate(M, L, 0.01, 0.05, c=0.1, sigma2=1.0)
    assert noisy.rho2 == pytest.approx(bisect.rho2, abs=1e-6)
    assert noisy.H <= bisect.H * (1 + 1e-3)


def test_sequential_sdp_schedule():
    pytest.importorskip("cvxpy")
    from scalopt.theory import sequential_sdp_schedule

    sched = sequential_sdp_schedule(M, L, 0.05, steps=8, u0=1.0, c=0.01, sigma2=0.1)
    assert sched.alphas.shape == (8,) and sched.bounds.shape == (9,)
    assert np.all(np.diff(sched.bounds) < 0) and np.all(np.diff(sched.alphas) <= 1e-9)
    for k, (alpha, rho2, cert) in enumerate(zip(sched.alphas, sched.rho2, sched.certificates)):
        p = problem(M, L, float(alpha), 0.05, 0.01, 0.1)
        assert is_certificate(p, float(rho2), cert)
        h = 2 * cert.lambda_g * 0.1 + cert.nu * 0.01**2
        assert sched.bounds[k + 1] == pytest.approx(rho2 * sched.bounds[k] + h, rel=1e-12)
    # step 0 minimises ρ²U_0 + H over α: no fixed step size's closed-form point does better
    for alpha in (0.005, 0.02, 0.05):
        cf = biased_sgd_rate(M, L, alpha, 0.05, c=0.01, sigma2=0.1, method="closed-form")
        assert sched.bounds[1] <= cf.rho2 * 1.0 + cf.H + 1e-9


def test_sdp_without_cvxpy_names_the_extra():
    code = (
        "import sys; sys.modules['cvxpy'] = None\n"
        "from scalopt.theory import biased_sgd_rate\n"
        "try:\n    biased_sgd_rate(1.0, 10.0, 0.01, 0.05, method='sdp')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "scalopt[sdp]" in out
