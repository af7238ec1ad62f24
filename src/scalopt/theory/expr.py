"""Safe schedule expressions for ``scalopt check adam``: text of the step t -> schedule.

``scalopt check adam --lr 1e-3 --lr-decay "1/sqrt(t)" --beta2 "1-1/t"`` hands the two strings to
:func:`parse_schedule`. The text is parsed with ``ast.parse(mode="eval")`` and walked against a
whitelist; it is never compiled to code nor given to ``eval``/``exec``. Allowed:

    numbers (int, float; finite), the name  t  (the 1-based step),
    binary  +  -  *  /  **,  unary  -  +,  calls  sqrt(x) log(x) exp(x) abs(x) min(a, b, ...) max(a, b, ...)

Anything else (attribute access, other names, other calls, subscripts, comparisons, conditionals,
lambdas, strings, comprehensions, keywords, ...) raises ``ValueError`` naming the construct; so does
text over 200 characters.

Recognised forms give the schedule objects of :mod:`scalopt.schedules`, so the Adam checker can
give an exact verdict (Generic Adam, α_t = lr·t^(−s), θ_t = 1 − θ/t^r; Zou, Shen, Jie, Zhang, Liu,
CVPR 2019, arXiv 1811.09358). The expression is reduced structurally (on the AST, never by string
comparison) to a sum of terms c·t^p, then

    kind="lr_decay":  c            -> Constant(c)         (α_t = lr·c, the checker reads it as s = 0)
                      t^(−s)       -> InvPower(s)         e.g. 1/sqrt(t), t**-s, 1/t**s, t**(-s), 1/t
    kind="beta2":     c            -> Constant(c)         (θ_t ≡ c, Adam's constant β2)
                      1 − c·t^(−r) -> OneMinusInvPower(c, r)
                                      e.g. 1-c/t**r, 1-c/t, 1 - c*t**(-r), 1-1/sqrt(t)

(c in (0, 1], r > 0 for the last). c·t^(−s) with c ≠ 1 stays an :class:`Expression`, but
:func:`power_law` reads (c, −s) from it and ``check_adam`` folds c into lr for an exact verdict.
Any other safe expression becomes an :class:`Expression`: a
callable compiled from the validated tree into closures, labelled with its source text. Called with
a number it computes in Python floats with ``math`` (errors -> ``ValueError``); called with a NumPy
array it evaluates element-wise with NumPy, which the checker uses for fast sums over t.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from functools import reduce
from typing import Any

import numpy as np

from scalopt.core.validate import check_choice
from scalopt.schedules import Constant, InvPower, OneMinusInvPower

MAX_LENGTH = 200
FUNCTIONS = ("sqrt", "log", "exp", "abs", "min", "max")
_MAX_TERMS = 16  # the structural reduction gives up beyond this many c·t^p terms

_DESCRIBE: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Dict: "dict",
    ast.Set: "set",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.IfExp: "conditional expression",
    ast.Compare: "comparison",
    ast.BoolOp: "boolean operator",
    ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment expression",
    ast.Starred: "starred argument",
}

_BINARY: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}

Closure = Callable[[Any, dict[str, Callable[..., Any]]], Any]


def _scalar_pow(a: float, b: float) -> float:
    value = a**b
    if isinstance(value, complex):
        raise ValueError(f"{a!r} ** {b!r} is complex")
    return value


_SCALAR_LIB: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "abs": abs,
    "min": min,
    "max": max,
    "pow": _scalar_pow,
}
_ARRAY_LIB: dict[str, Callable[..., Any]] = {
    "sqrt": np.sqrt,
    "log": np.log,
    "exp": np.exp,
    "abs": np.abs,
    "min": lambda *args: reduce(np.minimum, args),
    "max": lambda *args: reduce(np.maximum, args),
    "pow": np.power,
}


class Expression:
    """A validated expression of t, compiled into closures; ``text`` is its source."""

    __slots__ = ("text", "_fn")

    def __init__(self, text: str, tree: ast.Expression) -> None:
        self.text = text
        self._fn = _compile(tree.body)

    def __call__(self, t: Any) -> Any:
        if isinstance(t, np.ndarray):
            t = t.astype(float)
            with np.errstate(all="ignore"):
                return np.asarray(self._fn(t, _ARRAY_LIB), dtype=float) + np.zeros_like(t)
        try:
            value = self._fn(float(t), _SCALAR_LIB)
        except (ArithmeticError, ValueError) as err:
            raise ValueError(f"expression {self.text!r} cannot be evaluated at t={t!r}: {err}") from err
        return float(value)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def compile_expression(text: str, *, name: str = "expression") -> Expression:
    """Validate ``text`` against the whitelist and compile it; ``name`` is used in error messages."""
    return Expression(text, _validated_tree(text, name))


def parse_schedule(text: str, *, kind: str) -> Constant | InvPower | OneMinusInvPower | Expression:
    """The schedule that ``text`` describes: a recognised parametric form or an :class:`Expression`.

    ``kind`` is ``"lr_decay"`` (the factor of ``lr`` in α_t) or ``"beta2"`` (the weight θ_t).
    """
    check_choice("kind", kind, ("lr_decay", "beta2"))
    tree = _validated_tree(text, kind)
    terms = _terms(tree.body)
    if terms is not None:
        schedule = _recognise(terms, kind)
        if schedule is not None:
            return schedule
    return Expression(text, tree)


def power_law(expression: Expression) -> tuple[float, float] | None:
    """(c, p) when ``expression`` reduces to one term c·t^p, else ``None``: 0.5/sqrt(t) -> (0.5, −0.5)."""
    terms = _terms(ast.parse(expression.text.strip(), mode="eval").body)
    if terms is None or len(terms) != 1:
        return None
    ((p, c),) = terms.items()
    return c, p


# ---------------------------------------------------------------------------------------------- validation


def _validated_tree(text: Any, name: str) -> ast.Expression:
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a string expression of t, got {text!r}")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"{name} expression has {len(text)} characters; at most {MAX_LENGTH} are allowed")
    if not text.strip():
        raise ValueError(f"{name} expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise ValueError(f"{name} expression {text!r} is not a valid expression: {err}") from err
    try:
        _check(tree.body, text.strip(), name)
    except RecursionError as err:
        raise ValueError(f"{name} expression {text!r} is nested too deeply") from err
    return tree


def _check(node: ast.AST, source: str, name: str) -> None:
    def refuse(what: str) -> ValueError:
        segment = ast.get_source_segment(source, node) or source
        return ValueError(
            f"{name} expression {source!r}: {what} ({segment!r}) is not allowed; use numbers, t, "
            f"+ - * / **, and {', '.join(FUNCTIONS)}"
        )

    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("a string" if isinstance(value, (str, bytes)) else f"the constant {value!r}")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            raise refuse("a number that is not finite")
    elif isinstance(node, ast.Name):
        if node.id != "t":
            raise refuse(f"the name {node.id!r} (the only variable is t)")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise refuse(f"the operator {type(node.op).__name__}")
        _check(node.left, source, name)
        _check(node.right, source, name)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise refuse(f"the operator {type(node.op).__name__}")
        _check(node.operand, source, name)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise refuse("a call of something that is not a plain function name")
        fname = node.func.id
        if fname not in FUNCTIONS:
            raise refuse(f"the function {fname!r}")
        if node.keywords:
            raise refuse("keyword arguments")
        nargs = len(node.args)
        if fname in ("min", "max") and nargs < 2:
            raise refuse(f"{fname} with fewer than 2 arguments")
        if fname not in ("min", "max") and nargs != 1:
            raise refuse(f"{fname} with {nargs} arguments (it takes 1)")
        for arg in node.args:
            _check(arg, source, name)
    else:
        raise refuse(_DESCRIBE.get(type(node), f"the construct {type(node).__name__}"))


# ----------------------------------------------------------------------------------------------- compiling


def _compile(node: ast.AST) -> Closure:
    """Closures over the validated tree; ``lib`` picks math (scalars) or NumPy (arrays)."""
    if isinstance(node, ast.Constant):
        value = float(node.value)
        return lambda t, lib: value
    if isinstance(node, ast.Name):
        return lambda t, lib: t
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda t, lib: -operand(t, lib)
        return operand
    if isinstance(node, ast.BinOp):
        left, right = _compile(node.left), _compile(node.right)
        op = type(node.op)
        if op is ast.Add:
            return lambda t, lib: left(t, lib) + right(t, lib)
        if op is ast.Sub:
            return lambda t, lib: left(t, lib) - right(t, lib)
        if op is ast.Mult:
            return lambda t, lib: left(t, lib) * right(t, lib)
        if op is ast.Div:
            return lambda t, lib: left(t, lib) / right(t, lib)
        return lambda t, lib: lib["pow"](left(t, lib), right(t, lib))
    if isinstance(node, ast.Call):
        fname = node.func.id  # type: ignore[attr-defined]  # validated: a whitelisted Name
        args = [_compile(arg) for arg in node.args]
        return lambda t, lib: lib[fname](*(arg(t, lib) for arg in args))
    raise AssertionError(f"unvalidated node {type(node).__name__}")  # pragma: no cover


# ------------------------------------------------------------------------------ structural recognition


Terms = dict[float, float]  # exponent p -> coefficient c of the sum Σ c·t^p


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _add(a: Terms, b: Terms, sign: float) -> Terms | None:
    out = dict(a)
    for p, c in b.items():
        out[p] = out.get(p, 0.0) + sign * c
    out = {p: c for p, c in out.items() if c != 0.0}
    return out if len(out) <= _MAX_TERMS and _finite(*out.values()) else None


def _constant(terms: Terms) -> float | None:
    if not terms:
        return 0.0
    if set(terms) == {0.0}:
        return terms[0.0]
    return None


def _terms(node: ast.AST) -> Terms | None:
    """``node`` as a sum of c·t^p (exponents combined), or ``None`` when it is not of that form."""
    if isinstance(node, ast.Constant):
        value = float(node.value)
        return {0.0: value} if value != 0.0 else {}
    if isinstance(node, ast.Name):
        return {1.0: 1.0}
    if isinstance(node, ast.UnaryOp):
        inner = _terms(node.operand)
        if inner is None or isinstance(node.op, ast.UAdd):
            return inner
        return {p: -c for p, c in inner.items()}
    if isinstance(node, ast.Call):
        if node.func.id != "sqrt":  # type: ignore[attr-defined]
            return None
        inner = _terms(node.args[0])
        return _power(inner, 0.5) if inner is not None else None
    if not isinstance(node, ast.BinOp):
        return None
    left, right = _terms(node.left), _terms(node.right)
    if left is None or right is None:
        return None
    op = type(node.op)
    if op is ast.Add:
        return _add(left, right, 1.0)
    if op is ast.Sub:
        return _add(left, right, -1.0)
    if op is ast.Mult:
        out: Terms | None = {}
        for p1, c1 in left.items():
            for p2, c2 in right.items():
                out = _add(out, {p1 + p2: c1 * c2}, 1.0) if out is not None else None
        return out
    if op is ast.Div:
        if len(right) != 1:
            return None
        ((p2, c2),) = right.items()
        return _add({}, {p1 - p2: c1 / c2 for p1, c1 in left.items()}, 1.0)
    exponent = _constant(right)  # ast.Pow
    return _power(left, exponent) if exponent is not None else None


def _power(base: Terms, exponent: float) -> Terms | None:
    """(c·t^p)^e = c^e·t^(p·e) for one term with c > 0 (t > 0); constants follow Python floats."""
    if len(base) != 1:
        return None
    ((p, c),) = base.items()
    if c <= 0.0 and p != 0.0:
        return None
    try:
        value = _scalar_pow(c, exponent)
    except (ArithmeticError, ValueError):
        return None
    if not _finite(value, p * exponent):
        return None
    return {p * exponent: value} if value != 0.0 else {}


def _recognise(terms: Terms, kind: str) -> Constant | InvPower | OneMinusInvPower | None:
    constant = _constant(terms)
    if constant is not None:
        return Constant(constant)
    if kind == "lr_decay":
        if len(terms) == 1:
            ((p, c),) = terms.items()
            if c == 1.0 and p < 0.0:
                return InvPower(-p)
        return None
    if len(terms) == 2 and terms.get(0.0) == 1.0:
        ((p, c),) = ((p, c) for p, c in terms.items() if p != 0.0)
        if p < 0.0 and 0.0 < -c <= 1.0:
            return OneMinusInvPower(-c, -p)
    return None
