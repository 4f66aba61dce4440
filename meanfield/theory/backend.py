"""The arithmetic backend of the theory: one rule code on floats, numpy arrays, mpmath and sympy.

:class:`Arithmetic` turns constants into the chosen number type and evaluates the Gaussian and
sphere-law moments of an activation under a :class:`Law` (through :mod:`meanfield.integrals`, which
dispatches on type); :func:`fmt` and :func:`tex` display any of these numbers; :func:`to_float` and
:func:`evaluate_expectations` turn symbolic results with unevaluated integrals into numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import sympy

from ..errors import InvalidArgument
from ..spec.activations import Activation

__all__ = ["Arithmetic", "Law", "fmt", "tex", "to_float", "evaluate_expectations"]


@dataclass(frozen=True)
class Law:
    """The law of the (normalised) pre-activation a unit's activation sees.

    ``kind`` is "gaussian" (second moments q1, q2) or "sphere" (batch norm: uniform on the sphere of
    radius sqrt(T) in the complement of 1; q1 = 1, q2 = -1/(T-1)).
    """

    kind: str
    q1: Any
    q2: Any
    T: Any = None


@dataclass(frozen=True)
class Arithmetic:
    """The number type the rules compute in: "float" (floats and numpy arrays), "mp" (mpmath at ``dps``
    digits) or "sympy" (exact rationals and expressions); constants and Gaussian/sphere-law moments in it.

    Example:
        >>> Arithmetic("sympy").num(0.1), Arithmetic("float").num(sympy.Rational(1, 4))
        (1/10, 0.25)
        >>> from meanfield.spec.activations import activation
        >>> float(Arithmetic("float").second(activation("relu"), Law("gaussian", 2.0, 0.0)))   # E[relu^2] = q/2
        1.0
    """

    mode: str  # "float", "mp" or "sympy"
    dps: int | None = None

    def num(self, value: Any) -> Any:
        """A constant in this context's number type (exact rationals under sympy)."""
        if self.mode == "sympy":
            if isinstance(value, sympy.Basic):
                return value
            if isinstance(value, float):
                return sympy.Rational(repr(value)) if math.isfinite(value) else sympy.sympify(value)
            if isinstance(value, np.ndarray):
                raise InvalidArgument("sigma", "array", "scalars in symbolic mode")
            return sympy.sympify(value)
        if self.mode == "mp":
            if isinstance(value, sympy.Basic):
                return mpmath.mpf(sympy.N(value, self.dps + 5)) if value.is_number else value
            return mpmath.mpf(value) if not isinstance(value, np.ndarray) else value
        if isinstance(value, sympy.Basic):
            return float(value)
        return value if isinstance(value, np.ndarray) else float(value)

    def second(self, g: Activation, law: Law) -> Any:
        """E[g(u)^2] under the law, in this context's number type."""
        if law.kind == "sphere":
            from ..integrals.sphere import sphere_second_moment
            return self._exact(sphere_second_moment(g, law.T, dps=self.dps, symbolic=self.mode == "sympy"))
        from ..integrals.gaussian import second_moment
        return second_moment(g, law.q1, dps=self.dps) if self.mode == "mp" else self._exact(second_moment(g, law.q1))

    def cross(self, g: Activation, law: Law) -> Any:
        """E[g(u_a) g(u_b)] (a != b) under the law, in this context's number type."""
        if law.kind == "sphere":
            from ..integrals.sphere import sphere_cross_moment
            return self._exact(sphere_cross_moment(g, law.T, dps=self.dps, symbolic=self.mode == "sympy"))
        from ..integrals.gaussian import cross_moment
        if self.mode == "mp":
            return cross_moment(g, law.q1, law.q2, dps=self.dps)
        return self._exact(cross_moment(g, law.q1, law.q2))

    def max(self, a: Any, b: Any) -> Any:
        """max(a, b) in this context's number type (elementwise for arrays, unevaluated Max under sympy)."""
        if self.mode == "sympy":
            return sympy.Max(a, b, evaluate=False)  # no assumption queries on huge arguments
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return np.maximum(a, b)
        return a if a >= b else b

    def sqrt(self, x: Any) -> Any:
        """sqrt(x) in this context's number type."""
        if self.mode == "sympy":
            return sympy.sqrt(x, evaluate=False)  # evaluating asks assumptions of a huge expression: slow
        if self.mode == "mp":
            return mpmath.sqrt(x)
        return np.sqrt(x)

    def _exact(self, value: Any) -> Any:
        """Symbolic mode: floats that catalogue parameters carry (constant(1.0)) back to exact rationals."""
        if self.mode != "sympy" or not isinstance(value, sympy.Basic):
            return value
        floats = value.atoms(sympy.Float)
        return value.xreplace({f: sympy.Rational(repr(float(f))) for f in floats}) if floats else value


# -- display ---------------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A short display of a value in any of the number types: 6 significant digits, arrays by shape.

    Example:
        >>> fmt(2 / 3), fmt(None), fmt(sympy.Symbol("x") + 1), fmt(mpmath.mpf("1.5e400"))
        ('0.666667', '-', 'x + 1', '1.5e+400')
    """
    if value is None:
        return "-"
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    if isinstance(value, mpmath.mpf):
        return mpmath.nstr(value, 6)  # not through float: dps values may lie beyond float64's range
    if isinstance(value, sympy.Basic):
        if value.is_number:
            try:
                return f"{float(value):.6g}"
            except TypeError:
                pass
        text = str(value)
        return text if len(text) <= 28 else text[:25] + "..."
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def tex(value: Any) -> str:
    """LaTeX of a value: sympy through :func:`meanfield.printing.latex`, numbers as :func:`fmt`."""
    if value is None:
        return "-"
    if isinstance(value, sympy.Basic):
        from ..printing import latex
        return latex(value)
    return fmt(value)


# -- symbolic results to numbers ------------------------------------------------------------------------------


def evaluate_expectations(expr: sympy.Basic) -> sympy.Basic:
    """Evaluate unevaluated integrals / expectations bottom-up (innermost first) to double precision.

    Nested ones (an expectation whose variance contains a sphere-law expectation) need number arguments;
    expectations go through the numeric fast paths of :mod:`meanfield.integrals` and
    :mod:`meanfield.integrals.sphere` (1e-10 or better), because mpmath's nested 2-D quadrature takes tens of
    seconds per term. For more digits use ``sympy.N(expr, n)`` on the expression itself.
    """
    from ..integrals.gaussian import cross_moment
    from ..integrals.symbolic import GaussianExpectation
    from ..integrals.sphere import SphereExpectation, sphere_cross_moment, sphere_second_moment

    kinds = (sympy.Integral, GaussianExpectation, SphereExpectation)

    def value(a):
        if isinstance(a, GaussianExpectation):
            return sympy.Float(float(cross_moment(a.activation(), float(sympy.N(a.q1, 17)), float(sympy.N(a.q2, 17)))))
        if isinstance(a, SphereExpectation):
            Tv = int(sympy.N(a.T, 17).round())
            f = sphere_second_moment if a.kind == "second" else sphere_cross_moment
            return sympy.Float(f(a.activation(), Tv))
        return sympy.N(a, 17)

    for _ in range(1000):
        pending = [a for a in expr.atoms(*kinds) if a.free_symbols <= _bound_symbols(a)]
        pending = [a for a in pending if not any(isinstance(b, kinds) for arg in a.args for b in sympy.preorder_traversal(arg))]
        if not pending:
            return expr
        expr = expr.xreplace({a: value(a) for a in pending})
    return expr


def _bound_symbols(a: sympy.Basic) -> set:
    return set(a.variables) if isinstance(a, sympy.Integral) else set()


def to_float(v: Any, name: str) -> float:
    """float(v), evaluating unevaluated integrals and expectations numerically first.

    Example:
        >>> to_float(sympy.sqrt(2), "x")
        1.4142135623730951
    """
    try:
        if isinstance(v, sympy.Basic):
            return float(sympy.N(evaluate_expectations(v), 17))  # numeric quadrature for unevaluated integrals
        return float(v)
    except (TypeError, ValueError):
        raise InvalidArgument(name, v, "an expression that evaluates to a number",
                              "substitute the remaining symbols first") from None
