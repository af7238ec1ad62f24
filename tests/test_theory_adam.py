"""The Generic Adam condition checker, the safe schedule parser and the Reddi counterexample."""

from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scalopt.schedules import Constant, InvPower, OneMinusInvPower
from scalopt.theory import AdamConditionReport, Expression, check_adam, compile_expression, parse_schedule
from scalopt.theory.reddi import (
    reddi_average_regret,
    reddi_gradient,
    reddi_loss,
    run_generic_adam_on_reddi,
)

# ------------------------------------------------------------------------------------- exact verdicts


@pytest.mark.parametrize("theta", [1.0, 0.999, 0.1])
def test_sqrt_decay_with_one_minus_theta_over_t_is_admissible(theta: float) -> None:
    report = check_adam(lr=1e-3, lr_decay=InvPower(0.5), beta2=OneMinusInvPower(theta, 1.0))
    assert isinstance(report, AdamConditionReport)
    assert report.satisfied and report.exact
    assert [c.name for c in report.conditions] == ["R1", "R2", "R3", "SC"]
    assert all(c.holds for c in report.conditions)
    assert report.rate == pytest.approx(0.5)
    assert "SATISFIED" in str(report) and "log T" in str(report)
    # R_T = √θ·Σ t^(-1)/√T ≈ √θ·(ln T + 0.5772)/√T
    T = report.horizon
    assert report.bound_at_horizon == pytest.approx(
        math.sqrt(theta) * (math.log(T) + 0.5772157) / math.sqrt(T)
    )


def test_constant_beta2_only_reaches_a_neighbourhood() -> None:
    report = check_adam(lr=1e-3, lr_decay=InvPower(0.5), beta2=0.999)
    assert not report.satisfied and report.exact and report.rate is None
    assert report.condition("R3").holds and not report.condition("SC").holds
    # R_T -> √(1−β2)/(1−s)
    assert report.condition("SC").numbers["limit"] == pytest.approx(math.sqrt(1e-3) / 0.5)
    assert report.bound_at_horizon == pytest.approx(math.sqrt(1e-3) / 0.5, rel=2e-3)
    text = str(report)
    assert "θ_t is constant" in text and "O(√(1−β2))" in text and "0 < r ≤ 2s" in text


def test_constant_step_with_decaying_theta_fails_r3() -> None:
    report = check_adam(lr=1e-3, lr_decay=None, beta2=OneMinusInvPower(1.0, 1.0))
    assert not report.satisfied and report.exact
    for constant in (0.5, Constant(0.5), "0.5"):
        same = check_adam(lr=1e-3, lr_decay=constant, beta2=OneMinusInvPower(1.0, 1.0))
        assert same.exact and same.conditions[2].holds is False
    assert not report.condition("R3").holds and report.condition("SC").holds
    text = str(report)
    assert "s = 0" in text and "r ≤ 2s" in text and "1/sqrt(t)" in text


def test_r_larger_than_2s_fails_r3_and_says_so() -> None:
    report = check_adam(lr=1e-3, lr_decay=InvPower(0.2), beta2=OneMinusInvPower(1.0, 1.0))
    assert not report.satisfied and report.exact
    r3 = report.condition("R3")
    assert not r3.holds and r3.numbers["chi_exponent"] == pytest.approx(0.3)
    chi = [value for _, value in r3.numbers["chi_t"]]
    assert chi == sorted(chi)  # grows
    assert "r > 2s" in str(report) and "pick r ≤ 2s" in str(report)


def test_too_fast_decay_fails_sc() -> None:
    report = check_adam(lr_decay=InvPower(1.0), beta2=OneMinusInvPower(0.5, 1.0))
    assert not report.satisfied and not report.condition("SC").holds
    assert "s < 1" in str(report)


def test_r2_needs_lim_theta_above_beta1_squared() -> None:
    report = check_adam(lr_decay=InvPower(0.5), beta2=0.5, beta1=0.9)
    assert not report.condition("R2").holds and "raise beta2" in str(report)
    assert check_adam(lr_decay=InvPower(0.5), beta2=0.5, beta1=0.5).condition("R2").holds


@pytest.mark.parametrize("s", [0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
@pytest.mark.parametrize("r", [0.0, 0.25, 0.5, 1.0, 1.5, 2.0])
def test_admissible_set_is_0_lt_r_le_2s_lt_2(s: float, r: float) -> None:
    report = check_adam(lr_decay=InvPower(s), beta2=OneMinusInvPower(0.5, r), beta1=0.0, horizon=1000)
    assert report.exact
    assert report.satisfied == (0 < r <= 2 * s < 2)
    if report.satisfied:
        assert report.rate == pytest.approx(min(1 - s, r / 2))


def test_exact_bound_matches_a_plain_sum() -> None:
    lr, s, theta, r, T = 0.1, 0.3, 0.2, 0.4, 5000
    report = check_adam(lr=lr, lr_decay=InvPower(s), beta2=OneMinusInvPower(theta, r), horizon=T)
    total = sum(lr * t**-s * math.sqrt(theta * t**-r) for t in range(1, T + 1))
    assert report.bound_at_horizon == pytest.approx(total / (T * lr * T**-s), rel=1e-12)


def test_strings_go_through_the_parser_and_stay_exact() -> None:
    report = check_adam(lr=1e-3, lr_decay="1/sqrt(t)", beta2="1-1/t")
    assert report.satisfied and report.exact
    scaled = check_adam(lr=1e-3, lr_decay="0.5/sqrt(t)", beta2="1 - 0.1/t")  # c·t^-s: c folds into lr
    assert scaled.satisfied and scaled.exact
    assert not check_adam(lr_decay="1/sqrt(t)", beta2="0.999").satisfied


# ----------------------------------------------------------------------------------- numeric verdicts


def test_callables_get_a_numeric_verdict() -> None:
    good = check_adam(lr=1e-3, lr_decay=lambda t: t**-0.5, beta2=lambda t: 1 - 1 / t)
    assert good.satisfied and not good.exact and good.rate is None
    assert "numerical evidence" in str(good)
    exact = check_adam(lr=1e-3, lr_decay=InvPower(0.5), beta2=OneMinusInvPower(1.0, 1.0))
    assert good.bound_at_horizon == pytest.approx(exact.bound_at_horizon, rel=1e-9)

    constant = check_adam(lr=1e-3, lr_decay=lambda t: t**-0.5, beta2=lambda t: 0.999)
    assert not constant.satisfied and not constant.exact
    assert not constant.condition("SC").holds and "θ_t is constant" in str(constant)

    growing = check_adam(lr_decay=lambda t: t**-0.2, beta2=lambda t: 1 - 1 / t)
    assert not growing.satisfied and not growing.condition("R3").holds
    assert growing.condition("R3").numbers["chi_slope"] == pytest.approx(0.3, abs=1e-3)

    low = check_adam(lr_decay=lambda t: t**-0.5, beta2=lambda t: 0.5, beta1=0.9)
    assert not low.condition("R2").holds


def test_decay_that_reaches_zero_fails_sc_without_raising() -> None:
    for decay in ("exp(-t/1000)", "max(0, 1 - t/1000)"):  # underflows / ends at 0
        report = check_adam(lr_decay=decay, beta2="1-1/t")
        assert not report.satisfied and not report.exact and not report.condition("SC").holds
        assert "α_T = 0" in report.condition("SC").detail and "s < 1" in str(report)
    assert not check_adam(lr_decay="exp(-t/100000)", beta2="1-1/t").condition("SC").holds


def test_theory_sources_never_import_torch() -> None:
    import ast
    from pathlib import Path

    import scalopt.theory

    for path in Path(scalopt.theory.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            if isinstance(node, ast.ImportFrom):
                names.append(node.module or "")
            assert not any(n == "torch" or n.startswith("torch.") for n in names), path


def test_scalar_only_callables_and_long_horizons_agree_with_exact_sums() -> None:
    def scalar_decay(t: int) -> float:
        return 1 / math.sqrt(t)  # math.sqrt refuses arrays: evaluated per step

    for horizon in (10**6, 10**9):
        exact = check_adam(lr_decay=InvPower(0.5), beta2=OneMinusInvPower(0.1, 1.0), horizon=horizon)
        slow = check_adam(lr_decay=scalar_decay, beta2=lambda t: 1 - 0.1 / t, horizon=horizon)
        assert slow.satisfied and not slow.exact
        assert slow.bound_at_horizon == pytest.approx(exact.bound_at_horizon, rel=1e-5)
    # beyond 2^21 terms the tail is estimated on a geometric grid; compare with the Euler–Maclaurin value
    T = 10**9
    approx = check_adam(lr_decay=InvPower(0.5), beta2=OneMinusInvPower(1.0, 1.0), horizon=T).bound_at_horizon
    harmonic = math.log(T) + 0.5772156649 + 1 / (2 * T)
    assert approx == pytest.approx(harmonic / math.sqrt(T), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"horizon": 5}, "horizon"),
        ({"horizon": 1e6}, "horizon"),
        ({"beta1": 1.0}, "beta1"),
        ({"beta1": -0.1}, "beta1"),
        ({"beta2": 1.0}, "beta2"),
        ({"beta2": 0.0}, "beta2"),
        ({"beta2": Constant(1.5)}, "beta2"),
        ({"beta2": "open('f')"}, "beta2"),
        ({"lr_decay": -1.0}, "lr_decay"),
        ({"lr_decay": Constant(0.0)}, "lr_decay"),
        ({"lr_decay": lambda t: -1.0}, "lr_decay"),
        ({"lr_decay": "t.real"}, "lr_decay"),
        ({"beta2": lambda t: float("nan")}, "beta2"),
    ],
)
def test_invalid_arguments_raise_naming_them(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        check_adam(**kwargs)


# ------------------------------------------------------------------------------------------------ parser


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("1/sqrt(t)", "lr_decay", InvPower(0.5)),
        ("t**-0.25", "lr_decay", InvPower(0.25)),
        ("t**(-0.25)", "lr_decay", InvPower(0.25)),
        ("1/t**0.5", "lr_decay", InvPower(0.5)),
        ("1/t", "lr_decay", InvPower(1.0)),
        ("sqrt(1/t)", "lr_decay", InvPower(0.5)),
        ("t ** -1", "lr_decay", InvPower(1.0)),
        ("1", "lr_decay", Constant(1.0)),
        ("2*0.25", "lr_decay", Constant(0.5)),
        ("0.999", "beta2", Constant(0.999)),
        ("1 - 0.1/t**0.5", "beta2", OneMinusInvPower(0.1, 0.5)),
        ("1-1/t", "beta2", OneMinusInvPower(1.0, 1.0)),
        ("1 - 0.1*t**(-0.5)", "beta2", OneMinusInvPower(0.1, 0.5)),
        ("1-1/sqrt(t)", "beta2", OneMinusInvPower(1.0, 0.5)),
        ("-0.1/t + 1", "beta2", OneMinusInvPower(0.1, 1.0)),
        ("(1 - 0.5/t**2)", "beta2", OneMinusInvPower(0.5, 2.0)),
    ],
)
def test_parametric_forms_are_recognised(text: str, kind: str, expected: Any) -> None:
    got = parse_schedule(text, kind=kind)
    assert type(got) is type(expected) and got == expected


@pytest.mark.parametrize(
    ("text", "kind", "values"),
    [
        ("min(1, 10/t)", "lr_decay", {1: 1.0, 10: 1.0, 20: 0.5, 1000: 0.01}),
        ("exp(-t/100)", "lr_decay", {1: math.exp(-0.01), 100: math.exp(-1)}),
        ("max(0.5, 1 - 1/log(t + 1))", "beta2", {1: 0.5, 100: 1 - 1 / math.log(101)}),
        ("1 - 2/t", "beta2", {1: -1.0, 4: 0.5}),  # θ = 2 is outside OneMinusInvPower: a plain expression
        ("1 - 0.1/t - 0.01/t**2", "beta2", {2: 1 - 0.05 - 0.0025}),
        ("abs(-t) + +t", "lr_decay", {3: 6.0}),
    ],
)
def test_other_safe_forms_evaluate(text: str, kind: str, values: dict[int, float]) -> None:
    schedule = parse_schedule(text, kind=kind)
    assert isinstance(schedule, Expression) and schedule.text == text and text in repr(schedule)
    for t, expected in values.items():
        assert schedule(t) == pytest.approx(expected, rel=1e-12)
    steps = np.array(list(values), dtype=float)
    assert np.allclose(schedule(steps), list(values.values()), rtol=1e-12)


def test_expression_evaluation_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="t=1"):
        compile_expression("1/(t - 1)")(1)
    with pytest.raises(ValueError, match="complex"):
        compile_expression("(-t)**0.5")(2)
    with pytest.raises(ValueError):
        compile_expression("log(t - 5)")(2)
    assert np.isnan(compile_expression("log(t - 5)")(np.array([2.0])))[0]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("__import__('os')", "__import__"),
        ("t.real", "attribute access"),
        ("x", "'x'"),
        ("open('f')", "'open'"),
        ("[1]", "list"),
        ("1 if t else 2", "conditional expression"),
        ("lambda t: t", "lambda"),
        ("(lambda: 1)()", "plain function name"),
        ("'abc'", "string"),
        ("[i for i in t]", "comprehension"),
        ("t[0]", "subscript"),
        ("t < 1", "comparison"),
        ("t and 1", "boolean operator"),
        ("t // 2", "FloorDiv"),
        ("t % 3", "Mod"),
        ("~t", "Invert"),
        ("sqrt(t, 2)", "takes 1"),
        ("min(t)", "fewer than 2"),
        ("sqrt(x=t)", "keyword"),
        ("True", "True"),
        ("1j", "1j"),
        ("1e999", "not finite"),
        ("t +", "not a valid expression"),
        ("import os", "not a valid expression"),
        ("  ", "empty"),
        ("t" + " + t" * 60, "characters"),
    ],
)
def test_refusals_name_the_construct(text: str, named: str) -> None:
    for kind in ("lr_decay", "beta2"):
        with pytest.raises(ValueError, match=None) as info:
            parse_schedule(text, kind=kind)
        assert named in str(info.value)
    with pytest.raises(ValueError):
        parse_schedule(123, kind="beta2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        parse_schedule("t", kind="beta1")


def test_parser_never_compiles_or_evaluates_user_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import ast

    real_compile = builtins.compile

    def ast_only(source: Any, filename: Any, mode: str, flags: int = 0, *args: Any, **kwargs: Any) -> Any:
        assert flags & ast.PyCF_ONLY_AST, "user text compiled to code"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "compile", ast_only)
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    assert parse_schedule("min(1, 10/t) + sqrt(t)", kind="lr_decay")(4) == pytest.approx(3.0)
    assert parse_schedule("1-1/t", kind="beta2") == OneMinusInvPower(1.0, 1.0)


# Random whitelisted arithmetic over t, rendered fully parenthesised, against Python floats + math.
_UNARY = {"sqrt": math.sqrt, "log": math.log, "exp": math.exp, "abs": abs}
_BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a**b,
}
_leaves = st.one_of(
    st.just(("t",)),
    st.builds(
        lambda v: ("num", v),
        st.floats(min_value=-10, max_value=10, allow_nan=False).map(lambda v: round(v, 3)),
    ),
    st.integers(min_value=0, max_value=5).map(lambda v: ("num", v)),
)
_trees = st.recursive(
    _leaves,
    lambda sub: st.one_of(
        st.tuples(st.sampled_from(sorted(_BINARY)), sub, sub).map(lambda x: ("bin", *x)),
        st.tuples(st.sampled_from(sorted(_UNARY)), sub).map(lambda x: ("call", *x)),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(sub, min_size=2, max_size=3)).map(
            lambda x: ("minmax", *x)
        ),
        sub.map(lambda x: ("neg", x)),
    ),
    max_leaves=8,
)


def _render(tree: tuple) -> str:
    kind = tree[0]
    if kind == "t":
        return "t"
    if kind == "num":
        return f"({tree[1]!r})"
    if kind == "bin":
        return f"({_render(tree[2])} {tree[1]} {_render(tree[3])})"
    if kind == "call":
        return f"{tree[1]}({_render(tree[2])})"
    if kind == "minmax":
        return f"{tree[1]}({', '.join(_render(a) for a in tree[2])})"
    return f"(-{_render(tree[1])})"


def _value(tree: tuple, t: float) -> float:
    kind = tree[0]
    if kind == "t":
        return t
    if kind == "num":
        return float(tree[1])
    if kind == "bin":
        value = _BINARY[tree[1]](_value(tree[2], t), _value(tree[3], t))
        if isinstance(value, complex):
            raise ValueError("complex")
        return value
    if kind == "call":
        return _UNARY[tree[1]](_value(tree[2], t))
    if kind == "minmax":
        return (min if tree[1] == "min" else max)(*(_value(a, t) for a in tree[2]))
    return -_value(tree[1], t)


@settings(max_examples=300, deadline=None)
@given(tree=_trees, t=st.integers(min_value=1, max_value=10**6))
def test_parser_value_matches_python_math(tree: tuple, t: int) -> None:
    text = _render(tree)
    assume(len(text) <= 200)
    expression = compile_expression(text)
    try:
        expected = _value(tree, float(t))
    except (ArithmeticError, ValueError):
        with pytest.raises(ValueError):
            expression(t)
        return
    got = expression(t)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


# ------------------------------------------------------------------------------------------------- Reddi


def test_reddi_loss_and_gradient() -> None:
    assert [reddi_gradient(k) for k in range(1, 7)] == [3.0, -1.0, -1.0, 3.0, -1.0, -1.0]
    assert reddi_loss(4, 0.5, C=5.0) == 2.5 and reddi_loss(5, 0.5) == -0.5
    assert reddi_average_regret(np.full(301, -1.0)) == 0.0
    assert reddi_average_regret(np.full(301, 1.0)) == pytest.approx(2 / 3)  # (2C − 4)/3 per step


def test_reddi_constant_small_beta2_ends_at_the_wrong_point_and_the_condition_fixes_it() -> None:
    steps, lr = 3000, 0.5
    bad = run_generic_adam_on_reddi(lr, InvPower(0.5), 0.1, 0.0, steps)  # RMSProp, constant β2 = 0.1
    assert bad.shape == (steps + 1,) and bad[0] == 1.0 and np.all(np.abs(bad) <= 1.0)
    assert bad[-300:].mean() > 0.95
    assert reddi_average_regret(bad) > 0.6
    assert not check_adam(lr=lr, lr_decay=InvPower(0.5), beta2=0.1, beta1=0.0).satisfied

    good_beta2 = OneMinusInvPower(1.0, 1.0)  # θ_t = 1 − 1/t with α/√t
    for beta1 in (0.0, 0.9):
        good = run_generic_adam_on_reddi(lr, InvPower(0.5), good_beta2, beta1, steps)
        assert good[-300:].mean() < -0.95
        assert reddi_average_regret(good) < 0.05
        assert reddi_average_regret(good) < reddi_average_regret(good[: steps // 10 + 1])
    assert check_adam(lr=lr, lr_decay=InvPower(0.5), beta2=good_beta2, beta1=0.9).satisfied
    # callables of t work as well and give the same iterates
    same = run_generic_adam_on_reddi(lr, lambda t: t**-0.5, lambda t: 1 - 1 / t, 0.0, steps)
    assert np.allclose(same, run_generic_adam_on_reddi(lr, InvPower(0.5), good_beta2, 0.0, steps))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"C": 2.0}, "C"), ({"steps": 0}, "steps"), ({"x0": 2.0}, "x0"), ({"beta2_schedule": 1.5}, "beta2")],
)
def test_reddi_invalid_arguments(kwargs: dict[str, Any], name: str) -> None:
    args: dict[str, Any] = {"lr": 0.1, "lr_decay": None, "beta2_schedule": 0.5, "beta1": 0.0, "steps": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        run_generic_adam_on_reddi(**args)
