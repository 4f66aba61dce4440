"""Closed forms of E[phi(u)^2] and I_phi[q1, q2] for the catalogued activations.

Each entry is written once against a tiny backend namespace (numpy or mpmath), so the fast path
and the arbitrary-precision path evaluate the *same* formula, and once in sympy for derivations.
All numeric forms assume q1 > 0 and |q2| <= q1 (the caller handles q1 = 0 and validation).

Stability: the angle theta = arccos(c), c = q2 / q1, is never formed from c. It is
``atan2(sqrt(q1 - q2) sqrt(q1 + q2), q2)`` (and pi - theta is ``atan2(.., -q2)``): at c = +-1 the
root is exactly zero and theta exactly 0 or pi, within 1e-12 of it theta is as accurate as its
inputs (no clipping, no cancellation in 1 - c^2, no overflow for huge q). The erf forms use the
same trick for arcsin; relu's two terms, which cancel to O((1 + c)^(3/2)) near c = -1, are
combined as |q2| (t - atan t) with a series for t < 0.3. Polynomial activations
(including linear and constant) use Isserlis' theorem, exact in q1 and q2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import sympy

from ..spec.activations import X, Activation

__all__ = ["ClosedForm", "closed_form", "polynomial_coefficients", "gaussian_moment_2d"]


# -- backends --------------------------------------------------------------------------------------


class _NumpyOps:
    pi = np.pi
    sqrt = staticmethod(np.sqrt)
    atan2 = staticmethod(np.arctan2)
    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    abs = staticmethod(np.abs)
    sign = staticmethod(np.sign)

    @staticmethod
    def const(value):
        return float(value)

    @staticmethod
    def relu_core(r, q2):
        """r + q2 (pi - theta), r = sqrt(q1^2 - q2^2), without the cancellation of its two terms
        for q2 < 0: there it is |q2| (t - atan t), t = r / |q2|, summed as a series for t < 0.3."""
        r, q2 = np.broadcast_arrays(np.asarray(r, dtype=float), np.asarray(q2, dtype=float))
        out = r + q2 * np.arctan2(r, -q2)
        neg = q2 < 0
        if np.any(neg):
            b = -q2[neg]
            t = r[neg] / b
            small = t < 0.3
            tt = t * t
            acc = np.zeros_like(t)
            for k in range(16, 0, -1):  # t^3 (1/3 - t^2/5 + t^4/7 - ...), Horner in t^2
                acc = acc * tt + (-1.0) ** (k + 1) / (2 * k + 1)
            series = acc * tt * t
            out[neg] = b * np.where(small, series, t - np.arctan(np.where(small, 1.0, t)))
        return out[()] if out.ndim == 0 else out


class _MpmathOps:
    pi = property(lambda self: mpmath.pi)

    @staticmethod
    def relu_core(r, q2):
        """As _NumpyOps.relu_core: |q2| (t - atan t) summed as a series for small t."""
        if q2 >= 0:
            return r + q2 * mpmath.atan2(r, -q2)
        t = r / -q2
        if t >= mpmath.mpf("0.3"):
            return -q2 * (t - mpmath.atan(t))
        total, power, k = mpmath.mpf(0), t**3, 1
        eps = mpmath.eps * t**3
        while abs(power) / (2 * k + 1) > eps:
            total += power / (2 * k + 1) if k % 2 else -power / (2 * k + 1)
            power *= t * t
            k += 1
        return -q2 * total
    sqrt = staticmethod(mpmath.sqrt)
    atan2 = staticmethod(mpmath.atan2)
    exp = staticmethod(mpmath.exp)
    expm1 = staticmethod(mpmath.expm1)
    abs = staticmethod(abs)
    sign = staticmethod(mpmath.sign)

    @staticmethod
    def const(value):
        return mpmath.mpf(sympy.Rational(value).p) / sympy.Rational(value).q if isinstance(
            value, (sympy.Rational, int)) else mpmath.mpf(sympy.Float(value, mpmath.mp.dps + 5))


NUMPY = _NumpyOps()
MPMATH = _MpmathOps()


def _root(o, q1, q2):
    """sqrt(q1^2 - q2^2) as sqrt(q1 - q2) sqrt(q1 + q2): no cancellation near |c| = 1 (q1 - q2 is
    exact in floating point when q2 is close to q1) and no overflow for huge q."""
    return o.sqrt(q1 - q2) * o.sqrt(q1 + q2)


# -- the formulas (backend-generic) ----------------------------------------------------------------
# signature: second(o, q, p) and cross(o, q1, q2, p), with p the parameter dict (backend constants).


def _relu_cross(o, q1, q2, p):
    # (sqrt(q1^2 - q2^2) + q2 (pi - theta)) / (2 pi); near c = -1 both terms ~ q1 sqrt(1 + c)
    # cancel to ~ q1 (1 + c)^(3/2), hence relu_core
    return o.relu_core(_root(o, q1, q2), q2) / (2 * o.pi)


def _leaky_cross(o, q1, q2, p):
    a = p["a"]
    # phi = (1 - a) relu(x) + a x, and E[relu(u) v] = E[u v] / 2 by the symmetry (u, v) -> -(u, v).
    return (1 - a) ** 2 * _relu_cross(o, q1, q2, p) + a * q2


def _abs_cross(o, q1, q2, p):
    # |x| = 2 relu(x) - x; written with arcsin(c) = atan2(q2, sqrt(q1^2 - q2^2)) to avoid cancelling.
    r = _root(o, q1, q2)
    return 2 * (r + q2 * o.atan2(q2, r)) / o.pi


def _step_cross(o, q1, q2, p):
    # pi - theta = atan2(r, -q2): accurate also where theta is close to pi (c near -1)
    return o.atan2(_root(o, q1, q2), -q2) / (2 * o.pi)


def _leaky_step_cross(o, q1, q2, p):
    a = p["a"]
    return a + (1 - a) ** 2 * o.atan2(_root(o, q1, q2), -q2) / (2 * o.pi)


def _sign_cross(o, q1, q2, p):
    return 2 * o.atan2(q2, _root(o, q1, q2)) / o.pi


def _erf_second(o, q, p):
    # (2/pi) arcsin(2q / (1 + 2q)) with arcsin(s) = atan2(s, sqrt(1 - s^2)): exact near s = 1.
    return 2 * o.atan2(2 * q, o.sqrt(1 + 4 * q)) / o.pi


def _erf_root(o, q1, q2):
    """sqrt((1 + 2 q1)^2 - 4 q2^2), factored as for _root."""
    return o.sqrt(1 + 2 * (q1 - q2)) * o.sqrt(1 + 2 * (q1 + q2))


def _erf_cross(o, q1, q2, p):
    return 2 * o.atan2(2 * q2, _erf_root(o, q1, q2)) / o.pi


def _erf_prime_second(o, q, p):
    return 4 / (o.pi * o.sqrt(1 + 4 * q))


def _erf_prime_cross(o, q1, q2, p):
    return 4 / (o.pi * _erf_root(o, q1, q2))


def _sin_second(o, q, p):
    return -o.expm1(-2 * q) / 2


def _sin_cross(o, q1, q2, p):
    # E[sin u sin v] = (e^{-(q1 - q2)} - e^{-(q1 + q2)}) / 2, written without overflow or cancellation.
    b = o.abs(q2)
    return o.sign(q2) * o.exp(b - q1) * (-o.expm1(-2 * b)) / 2


def _cos_second(o, q, p):
    return (1 + o.exp(-2 * q)) / 2


def _cos_cross(o, q1, q2, p):
    b = o.abs(q2)
    return o.exp(b - q1) * (1 + o.exp(-2 * b)) / 2


# -- unequal variances: E[phi(u) phi(v)], Var u = qa, Var v = qb, Cov = qab ----------------------
# r = sqrt(qa qb - qab^2) as sqrt(g - qab) sqrt(g + qab), g = sqrt(qa) sqrt(qb) (g = qa when qa = qb,
# so the equal-variance values are reproduced to rounding); the formulas are the ones above with
# q1 -> g wherever the variance enters only through the angle.


def _pair_g(o, qa, qb):
    return o.sqrt(qa) * o.sqrt(qb)


def _pair_root(o, qa, qb, qab):
    g = _pair_g(o, qa, qb)
    return o.sqrt(g - qab) * o.sqrt(g + qab)


def _relu_pair(o, qa, qb, qab, p):
    return o.relu_core(_pair_root(o, qa, qb, qab), qab) / (2 * o.pi)


def _leaky_pair(o, qa, qb, qab, p):
    a = p["a"]
    return (1 - a) ** 2 * _relu_pair(o, qa, qb, qab, p) + a * qab


def _abs_pair(o, qa, qb, qab, p):
    r = _pair_root(o, qa, qb, qab)
    return 2 * (r + qab * o.atan2(qab, r)) / o.pi


def _step_pair(o, qa, qb, qab, p):
    return o.atan2(_pair_root(o, qa, qb, qab), -qab) / (2 * o.pi)


def _leaky_step_pair(o, qa, qb, qab, p):
    a = p["a"]
    return a + (1 - a) ** 2 * o.atan2(_pair_root(o, qa, qb, qab), -qab) / (2 * o.pi)


def _sign_pair(o, qa, qb, qab, p):
    return 2 * o.atan2(qab, _pair_root(o, qa, qb, qab)) / o.pi


def _erf_pair_root(o, qa, qb, qab):
    """sqrt((1 + 2 qa)(1 + 2 qb) - 4 qab^2) = sqrt(1 + 2 (qa + qb) + 4 r^2): a sum of terms >= 0."""
    g = _pair_g(o, qa, qb)
    return o.sqrt(1 + 2 * (qa + qb) + 4 * (g - qab) * (g + qab))


def _erf_pair(o, qa, qb, qab, p):
    return 2 * o.atan2(2 * qab, _erf_pair_root(o, qa, qb, qab)) / o.pi


def _erf_prime_pair(o, qa, qb, qab, p):
    return 4 / (o.pi * _erf_pair_root(o, qa, qb, qab))


def _sin_pair(o, qa, qb, qab, p):
    # e^{-(qa + qb)/2} sinh(qab), as for _sin_cross
    b = o.abs(qab)
    return o.sign(qab) * o.exp(b - (qa + qb) / 2) * (-o.expm1(-2 * b)) / 2


def _cos_pair(o, qa, qb, qab, p):
    b = o.abs(qab)
    return o.exp(b - (qa + qb) / 2) * (1 + o.exp(-2 * b)) / 2


# -- sympy forms (the readable textbook forms, for derivations) ------------------------------------


def _s_acos(q1, q2):
    return sympy.acos(q2 / q1)


def _s_relu(q1, q2, p):
    return (sympy.sqrt(q1**2 - q2**2) + q2 * (sympy.pi - _s_acos(q1, q2))) / (2 * sympy.pi)


_SYMPY: dict[str, tuple[Callable, Callable]] = {
    "relu": (lambda q, p: q / 2, _s_relu),
    "leaky_relu": (lambda q, p: q * (1 + p["a"] ** 2) / 2,
                   lambda q1, q2, p: (1 - p["a"]) ** 2 * _s_relu(q1, q2, p) + p["a"] * q2),
    "abs": (lambda q, p: q,
            lambda q1, q2, p: 2 * (sympy.sqrt(q1**2 - q2**2) + q2 * sympy.asin(q2 / q1)) / sympy.pi),
    "step": (lambda q, p: sympy.Rational(1, 2),
             lambda q1, q2, p: (sympy.pi - _s_acos(q1, q2)) / (2 * sympy.pi)),
    "leaky_step": (lambda q, p: (1 + p["a"] ** 2) / 2,
                   lambda q1, q2, p: p["a"] + (1 - p["a"]) ** 2 * (sympy.pi - _s_acos(q1, q2)) / (2 * sympy.pi)),
    "sign": (lambda q, p: sympy.S.One, lambda q1, q2, p: 2 * sympy.asin(q2 / q1) / sympy.pi),
    "erf": (lambda q, p: 2 * sympy.asin(2 * q / (1 + 2 * q)) / sympy.pi,
            lambda q1, q2, p: 2 * sympy.asin(2 * q2 / (1 + 2 * q1)) / sympy.pi),
    "erf_prime": (lambda q, p: 4 / (sympy.pi * sympy.sqrt(1 + 4 * q)),
                  lambda q1, q2, p: 4 / (sympy.pi * sympy.sqrt((1 + 2 * q1) ** 2 - 4 * q2**2))),
    "sin": (lambda q, p: (1 - sympy.exp(-2 * q)) / 2,
            lambda q1, q2, p: sympy.exp(-q1) * sympy.sinh(q2)),
    "cos": (lambda q, p: (1 + sympy.exp(-2 * q)) / 2,
            lambda q1, q2, p: sympy.exp(-q1) * sympy.cosh(q2)),
}
# cos' = -sin: the moments are quadratic, so the sign drops out and sin's closed forms serve
_SYMPY["neg_sin"] = _SYMPY["sin"]

_NUMERIC: dict[str, tuple[Callable, Callable]] = {
    "relu": (lambda o, q, p: q / 2, _relu_cross),
    "leaky_relu": (lambda o, q, p: q * (1 + p["a"] ** 2) / 2, _leaky_cross),
    "abs": (lambda o, q, p: q, _abs_cross),
    "step": (lambda o, q, p: o.const(0.5) + 0 * q, _step_cross),
    "leaky_step": (lambda o, q, p: (1 + p["a"] ** 2) / 2 + 0 * q, _leaky_step_cross),
    "sign": (lambda o, q, p: o.const(1) + 0 * q, _sign_cross),
    "erf": (_erf_second, _erf_cross),
    "erf_prime": (_erf_prime_second, _erf_prime_cross),
    "sin": (_sin_second, _sin_cross),
    "cos": (_cos_second, _cos_cross),
}
_NUMERIC["neg_sin"] = _NUMERIC["sin"]


def _s_cos_angle(qa, qb, qab):
    return qab / sympy.sqrt(qa * qb)


_PAIR: dict[str, Callable] = {
    "relu": _relu_pair, "leaky_relu": _leaky_pair, "abs": _abs_pair, "step": _step_pair,
    "leaky_step": _leaky_step_pair, "sign": _sign_pair, "erf": _erf_pair, "erf_prime": _erf_prime_pair,
    "sin": _sin_pair, "neg_sin": _sin_pair, "cos": _cos_pair,
}


def _s_relu_pair(qa, qb, qab, p):
    return (sympy.sqrt(qa * qb - qab**2) + qab * (sympy.pi - sympy.acos(_s_cos_angle(qa, qb, qab)))) / (2 * sympy.pi)


def _s_erf_root(qa, qb, qab):
    return sympy.sqrt((1 + 2 * qa) * (1 + 2 * qb) - 4 * qab**2)


_SYMPY_PAIR: dict[str, Callable] = {
    "relu": _s_relu_pair,
    "leaky_relu": lambda qa, qb, qab, p: (1 - p["a"]) ** 2 * _s_relu_pair(qa, qb, qab, p) + p["a"] * qab,
    "abs": lambda qa, qb, qab, p: 2 * (sympy.sqrt(qa * qb - qab**2)
                                       + qab * sympy.asin(_s_cos_angle(qa, qb, qab))) / sympy.pi,
    "step": lambda qa, qb, qab, p: (sympy.pi - sympy.acos(_s_cos_angle(qa, qb, qab))) / (2 * sympy.pi),
    "leaky_step": lambda qa, qb, qab, p: p["a"] + (1 - p["a"]) ** 2 * (
        sympy.pi - sympy.acos(_s_cos_angle(qa, qb, qab))) / (2 * sympy.pi),
    "sign": lambda qa, qb, qab, p: 2 * sympy.asin(_s_cos_angle(qa, qb, qab)) / sympy.pi,
    "erf": lambda qa, qb, qab, p: 2 * sympy.asin(2 * qab / sympy.sqrt((1 + 2 * qa) * (1 + 2 * qb))) / sympy.pi,
    "erf_prime": lambda qa, qb, qab, p: 4 / (sympy.pi * _s_erf_root(qa, qb, qab)),
    "sin": lambda qa, qb, qab, p: sympy.exp(-(qa + qb) / 2) * sympy.sinh(qab),
    "cos": lambda qa, qb, qab, p: sympy.exp(-(qa + qb) / 2) * sympy.cosh(qab),
}
_SYMPY_PAIR["neg_sin"] = _SYMPY_PAIR["sin"]


# -- polynomials: Isserlis ------------------------------------------------------------------------


def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else math.prod(range(n, 0, -2))


@functools.lru_cache(maxsize=256)
def polynomial_coefficients(expr: sympy.Expr) -> tuple | None:
    """Coefficients (c_0, c_1, ..., c_n) if ``expr`` is a polynomial in x, else None.

    Example:
        >>> polynomial_coefficients(X**2 - 3)
        (-3, 0, 1)
        >>> polynomial_coefficients(sympy.tanh(X)) is None
        True
    """
    expr = sympy.expand(expr)
    if not expr.is_polynomial(X):
        return None
    poly = sympy.Poly(expr, X)
    return tuple(reversed(poly.all_coeffs()))


def gaussian_moment_2d(m: int, n: int, q1: Any, q2: Any, qb: Any = None) -> Any:
    """E[u^m v^n] for (u, v) centred Gaussian with Var u = Var v = q1, Cov = q2 (Isserlis).

    Pair k of the u's with k of the v's (C(m,k) C(n,k) k! ways, each q2^k); the rest pair among
    themselves: (m-k-1)!! q1^((m-k)/2) (n-k-1)!! q1^((n-k)/2). With ``qb`` given, Var v = qb
    (the v's own pairs carry qb^((n-k)/2)).

    Example:
        >>> q1, q2 = sympy.symbols("q1 q2")
        >>> gaussian_moment_2d(2, 2, q1, q2)
        q1**2 + 2*q2**2
    """
    total = 0
    for k in range(min(m, n) + 1):
        if (m - k) % 2 or (n - k) % 2:
            continue
        coef = math.comb(m, k) * math.comb(n, k) * math.factorial(k)
        coef *= _double_factorial(m - k - 1) * _double_factorial(n - k - 1)
        if qb is None:
            total = total + coef * q2**k * q1 ** ((m - k) // 2 + (n - k) // 2)
        else:
            total = total + coef * q2**k * q1 ** ((m - k) // 2) * qb ** ((n - k) // 2)
    return total


def _poly_cross(coefs, q1, q2, qb=None):
    total = 0
    for m, a in enumerate(coefs):
        if a == 0:
            continue
        for n, b in enumerate(coefs):
            if b == 0:
                continue
            total = total + a * b * gaussian_moment_2d(m, n, q1, q2, qb)
    return total


# -- lookup --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedForm:
    """Closed forms of one activation: E[phi^2](q) and I_phi[q1, q2] (numpy, mpmath and sympy).

    The numeric callables assume q1 > 0 and |q2| <= q1; ``params`` holds the activation's
    parameters (sympy numbers, or symbols for the sympy forms).

    Example:
        >>> cf = closed_form(activation("relu"))
        >>> float(cf.cross(1.0, 0.0)), float(cf.second(2.0))
        (0.15915494309189535, 1.0)
    """

    family: str
    params: tuple[tuple[str, Any], ...]
    _second: Callable
    _cross: Callable
    _sym_second: Callable
    _sym_cross: Callable
    kind: str = "catalogue"
    _pair: Callable | None = None
    _sym_pair: Callable | None = None

    def _p(self, backend):
        conv = {"numpy": float, "mpmath": MPMATH.const, "sympy": sympy.sympify}[backend]
        return {k: conv(v) for k, v in self.params}

    def second(self, q):
        """E[phi(sqrt(q) z)^2] on numpy arrays (q > 0)."""
        return self._second(NUMPY, q, self._p("numpy"))

    def cross(self, q1, q2):
        """I_phi[q1, q2] on numpy arrays (q1 > 0, |q2| <= q1)."""
        return self._cross(NUMPY, q1, q2, self._p("numpy"))

    def mp_second(self, q):
        """E[phi(sqrt(q) z)^2] in mpmath at the working precision."""
        return self._second(MPMATH, q, self._p("mpmath"))

    def mp_cross(self, q1, q2):
        """I_phi[q1, q2] in mpmath at the working precision."""
        return self._cross(MPMATH, q1, q2, self._p("mpmath"))

    def sym_second(self, q):
        """E[phi(sqrt(q) z)^2] as a sympy expression."""
        return self._sym_second(q, self._p("sympy"))

    def sym_cross(self, q1, q2):
        """I_phi[q1, q2] as a sympy expression."""
        return self._sym_cross(q1, q2, self._p("sympy"))

    @property
    def has_pair(self) -> bool:
        """Whether the unequal-variance form E[phi(u) phi(v)], Var u = qa, Var v = qb, is known."""
        return self._pair is not None

    def pair(self, qa, qb, qab):
        """E[phi(u) phi(v)], Var u = qa, Var v = qb, Cov = qab, on numpy arrays (qa, qb > 0,
        |qab| <= sqrt(qa qb))."""
        return self._pair(NUMPY, qa, qb, qab, self._p("numpy"))

    def mp_pair(self, qa, qb, qab):
        """The unequal-variance form in mpmath at the working precision."""
        return self._pair(MPMATH, qa, qb, qab, self._p("mpmath"))

    def sym_pair(self, qa, qb, qab):
        """The unequal-variance form as a sympy expression."""
        return self._sym_pair(qa, qb, qab, self._p("sympy"))


def _polynomial_form(coefs: tuple) -> ClosedForm:
    def second(o, q, p):
        return _poly_cross(_numeric_coefs(o, coefs), q, q)

    def cross(o, q1, q2, p):
        return _poly_cross(_numeric_coefs(o, coefs), q1, q2)

    def sym_second(q, p):
        return sympy.expand(_poly_cross(coefs, q, q))

    def sym_cross(q1, q2, p):
        return sympy.expand(_poly_cross(coefs, q1, q2))

    def pair(o, qa, qb, qab, p):
        return _poly_cross(_numeric_coefs(o, coefs), qa, qab, qb)

    def sym_pair(qa, qb, qab, p):
        return sympy.expand(_poly_cross(coefs, qa, qab, qb))

    return ClosedForm("polynomial", (), second, cross, sym_second, sym_cross, kind="polynomial",
                      _pair=pair, _sym_pair=sym_pair)


def _numeric_coefs(o, coefs):
    return tuple(o.const(c) if c.is_number else c for c in coefs)


@functools.lru_cache(maxsize=256)
def _catalogue_exprs() -> dict:
    from ..spec.activations import CATALOGUE, activation

    table = {}
    for name in _NUMERIC:
        if not CATALOGUE[name].defaults:
            table[activation(name).expr] = name
    return table


@functools.lru_cache(maxsize=512)
def closed_form(f: Activation) -> ClosedForm | None:
    """The closed form for activation ``f``, or None when none is known.

    Catalogue families are looked up by name; a user expression that equals a catalogued one
    (``Max(0, x)``) or is a polynomial in x gets the same closed form.
    """
    family = f.family
    if family == "custom":
        family = _catalogue_exprs().get(f.expr, "custom")
    if family in _NUMERIC:
        second, cross = _NUMERIC[family]
        sym_second, sym_cross = _SYMPY[family]
        params = f.params if f.family == family else ()
        return ClosedForm(family, params, second, cross, sym_second, sym_cross,
                          _pair=_PAIR.get(family), _sym_pair=_SYMPY_PAIR.get(family))
    coefs = polynomial_coefficients(f.expr)
    if coefs is not None:
        return _polynomial_form(coefs)
    return None


from ..spec.activations import activation  # noqa: E402  (for the doctest namespace)
