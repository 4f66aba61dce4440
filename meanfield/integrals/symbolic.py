"""Symbolic Gaussian expectations: a closed form when one is known, else an unevaluated object.

Modelled on ``sympy.stats.Expectation``: :class:`GaussianExpectation` is a sympy expression that
stays unevaluated, prints as itself, composes arithmetically with other expressions,
``.rewrite(sympy.Integral)`` shows the Gaussian integral, ``.doit()`` substitutes a closed form
when one exists (or evaluates numerically when every argument is a number), and ``.evalf()`` /
``sympy.N`` integrate numerically with mpmath at the requested precision. ``sympy.lambdify``
works through a printer hook that calls the numeric fast path.

Validation follows sympy: a condition raises only when the assumptions *prove* it false, so
``Symbol("q", positive=True)`` passes, and so does a plain ``Symbol("q")``.
"""

from __future__ import annotations

from typing import Any

import mpmath
import sympy
from sympy.core.symbol import Str

from ..spec.activations import X, Activation
from ..errors import InvalidArgument
from .closed_forms import closed_form

__all__ = ["GaussianExpectation", "PairExpectation", "second_moment", "cross_moment", "pair_moment"]


def _check_variance(name: str, q: sympy.Expr) -> sympy.Expr:
    q = sympy.sympify(q)
    if q.is_real is False or q.is_negative or q.is_finite is False:
        raise InvalidArgument(name, q, "a real variance >= 0 (symbolic is fine unless provably negative)")
    return q


def _check_covariance(q1: sympy.Expr, q2: sympy.Expr) -> sympy.Expr:
    q2 = sympy.sympify(q2)
    if q2.is_real is False or q2.is_finite is False:
        raise InvalidArgument("q2", q2, "a real covariance with |q2| <= q1")
    q1 = sympy.sympify(q1)
    if q1.is_number and q2.is_number:
        # plain numbers (possibly deeply nested exact ones): compare a 30-digit evaluation, with a margin
        # for its rounding -- sympy's assumption queries on such nests take seconds per call
        a, b = sympy.N(q1, 30), sympy.N(q2, 30)
        if a.is_real and b.is_real and (b - a > 1e-25 * abs(a) or b + a < -1e-25 * abs(a)):
            raise InvalidArgument("q2", q2, f"a covariance with |q2| <= q1 = {q1} (|c| <= 1)")
    elif (q2 - q1).is_positive or (q2 + q1).is_negative:
        raise InvalidArgument("q2", q2, f"a covariance with |q2| <= q1 = {q1} (|c| <= 1)")
    if q1.is_zero and q2.is_zero is False:
        raise InvalidArgument("q2", q2, "q2 = 0 when q1 = 0")
    return q2


def _family_args(f: Activation) -> tuple:
    return (Str(f.family), sympy.Tuple(*[sympy.Tuple(Str(k), sympy.sympify(v)) for k, v in f.params]),
            Str(f.name))


class GaussianExpectation(sympy.Expr):
    """I_phi[q1, q2] = E[phi(u) phi(v)] (Var u = Var v = q1, Cov = q2), unevaluated.

    With q2 == q1 it is the second moment E[phi(sqrt(q) z)^2]. Build it with
    :func:`meanfield.integrals.cross_moment` / ``second_moment`` (which return a closed form
    instead when one exists) or directly from an Activation with :meth:`of`.

    Example:
        >>> import sympy, meanfield as mf
        >>> q1, q2 = sympy.symbols("q1 q2", real=True)
        >>> e = GaussianExpectation.of(mf.activation("tanh"), q1, q2)
        >>> e
        I[tanh](q1, q2)
        >>> second = GaussianExpectation.of(mf.activation("tanh"), q1, q1)   # E[tanh(sqrt(q1) z)^2]
        >>> (2 * second + 1).subs(q1, 1).evalf(12)
        1.78858898080
        >>> e.rewrite(sympy.Integral).args[0].has(sympy.exp)
        True
    """

    is_real = True
    is_finite = True

    def __new__(cls, expr, q1, q2, family=Str("custom"), params=sympy.Tuple(), name=None):
        expr, q1, q2 = sympy.sympify(expr), sympy.sympify(q1), sympy.sympify(q2)
        if name is None:
            name = Str(str(expr))
        return sympy.Expr.__new__(cls, expr, q1, q2, family, params, name)

    @classmethod
    def of(cls, f: Activation, q1: Any, q2: Any) -> "GaussianExpectation":
        """The unevaluated I_f[q1, q2] of an Activation (no closed-form lookup)."""
        family, params, name = _family_args(f)
        return cls(f.expr, q1, q2, family, params, name)

    # -- parts ------------------------------------------------------------------------------------
    @property
    def phi(self) -> sympy.Expr:
        """The activation's expression in :data:`meanfield.spec.activations.X`."""
        return self.args[0]

    @property
    def q1(self) -> sympy.Expr:
        return self.args[1]

    @property
    def q2(self) -> sympy.Expr:
        return self.args[2]

    @property
    def is_second_moment(self) -> bool:
        return bool(self.q1 == self.q2)

    @property
    def free_symbols(self):
        return self.q1.free_symbols | self.q2.free_symbols | (self.phi.free_symbols - {X})

    def activation(self) -> Activation:
        """The Activation this expectation is of (catalogue family restored when it has one)."""
        family = self.args[3].name
        params = {str(k.name): v for k, v in self.args[4]}
        if family != "custom":
            from ..spec.activations import CATALOGUE

            if family in CATALOGUE:
                entry = CATALOGUE[family]
                shown = tuple((k, params.get(k, d)) for k, d in entry.defaults)
                expr = entry.build(dict(shown))
                if expr == self.phi:
                    return Activation(name=self.args[5].name, expr=expr, family=family, params=shown)
        params = tuple((str(k.name), v) for k, v in self.args[4])   # symbolic parameters of a derivative
        return Activation(name=self.args[5].name, expr=self.phi, family="custom", params=params)

    # -- evaluation ------------------------------------------------------------------------------
    def _closed(self):
        cf = closed_form(self.activation())
        if cf is None:
            return None
        if self.is_second_moment:
            return cf.sym_second(self.q1)
        return cf.sym_cross(self.q1, self.q2)

    def doit(self, **hints):
        """The closed form if known; else a number if all arguments are numbers; else self.

        With ``integrate=True`` sympy is also asked to do the (second-moment) integral, which can
        be slow.
        """
        deep = hints.get("deep", True)
        obj = self.func(*[a.doit(**hints) if deep and isinstance(a, sympy.Basic) and not isinstance(a, Str)
                          else a for a in self.args]) if deep else self
        closed = obj._closed()
        if closed is not None:
            return closed
        if obj.q1.is_number and obj.q2.is_number and not (obj.phi.free_symbols - {X}):
            return obj.evalf()
        if hints.get("integrate") and obj.is_second_moment:
            res = obj.rewrite(sympy.Integral).doit()
            if not res.has(sympy.Integral):
                return res
        return obj

    def _eval_evalf(self, prec):
        if not (self.q1.is_number and self.q2.is_number) or (self.phi.free_symbols - {X}):
            return None
        from .numeric import mp_cross

        dps = max(15, mpmath.libmp.prec_to_dps(prec))
        q1 = sympy.Float(self.q1, dps + 5)
        q2 = sympy.Float(self.q2, dps + 5)
        if q1.is_negative:
            raise InvalidArgument("q1", self.q1, "a variance >= 0")
        with mpmath.workdps(dps + 5):
            m1, m2 = mpmath.mpf(q1._mpf_), mpmath.mpf(q2._mpf_)
        if abs(m2) > m1 * (1 + 1e-12) or (m1 == 0 and m2 != 0):
            raise InvalidArgument("q2", self.q2, f"a covariance with |q2| <= q1 = {self.q1}")
        if abs(m2) > m1:
            m2 = m1 if m2 > 0 else -m1
        value = mp_cross(self.activation(), m1, m2, dps + 3)
        return sympy.Float(value, dps)

    def _eval_rewrite_as_Integral(self, *args, **kwargs):
        x, y = sympy.Dummy("x", real=True), sympy.Dummy("y", real=True)
        q1, q2 = self.q1, self.q2
        density = sympy.exp(-x**2 / 2) / sympy.sqrt(2 * sympy.pi)
        u = sympy.sqrt(q1) * x
        if self.is_second_moment:
            return sympy.Integral(self.phi.subs(X, u) ** 2 * density, (x, -sympy.oo, sympy.oo))
        c = q2 / q1
        v = sympy.sqrt(q1) * (c * x + sympy.sqrt(1 - c**2) * y)
        density = density * sympy.exp(-y**2 / 2) / sympy.sqrt(2 * sympy.pi)
        return sympy.Integral(self.phi.subs(X, u) * self.phi.subs(X, v) * density,
                              (x, -sympy.oo, sympy.oo), (y, -sympy.oo, sympy.oo))

    def _eval_subs(self, old, new):
        if old == X:
            return self
        return None

    # -- derivatives: Price's theorem ------------------------------------------------------------
    def _eval_derivative(self, s):
        """d I_f[q1, q2] / ds by Price's theorem (Stein's lemma for Gaussians).

        With Sigma = [[q1, q2], [q2, q1]], dE[g(u, v)]/dSigma_11 = E[d_u^2 g]/2 and
        dE[g]/dSigma_12 = E[d_u d_v g]; q1 is both variances, so
        dI_f/dq2 = I_{f'}[q1, q2] and dI_f/dq1 = (E[f''(u) f(v)] + E[f(u) f''(v)])/2 = E[f''(u) f(v)],
        written as the polarization (I_{f+f''} - I_{f-f''})/4 so that it stays an I of one function.
        A parameter a of f gives E[d_a f(u) f(v)] * 2 = (I_{f+d_a f} - I_{f-d_a f})/2. For the second
        moment (q1 = q2 = q) the two add up to E[f'^2] + E[f f''] = dE[f^2]/dq.
        Where f' or f'' is a Dirac delta (kinked f) the closed form is differentiated instead.

        Example:
            >>> import sympy, meanfield as mf
            >>> q = sympy.Symbol("q", positive=True)
            >>> d = sympy.diff(GaussianExpectation.of(mf.activation("erf"), q, q), q)   # (4/pi)/((1+2q) sqrt(1+4q))
            >>> round(float(sympy.lambdify(q, d)(1.0)), 10)
            0.1898033449
        """
        q1, q2 = self.q1, self.q2
        d1, d2 = sympy.diff(q1, s), sympy.diff(q2, s)
        f1 = self._derivative(1) if d2 != 0 else None
        f2 = self._derivative(2) if d1 != 0 else None
        if (d2 != 0 and f1 is None) or (d1 != 0 and f2 is None):
            closed = self._closed_in(q1, q2)
            if closed is None:
                raise InvalidArgument("f", self.activation().name, "an activation whose derivatives in Price's "
                                      "theorem are functions (or one with a closed-form Gaussian expectation)",
                                      "f' or f'' has a Dirac delta at a kink or jump")
            return sympy.diff(closed, s)
        total = sympy.S.Zero
        if d2 != 0:
            total += d2 * GaussianExpectation.of(f1, q1, q2)
        if d1 != 0:
            total += d1 * self._polarized(self.activation(), f2, q1, q2, sympy.Rational(1, 4), "''")
        if s in (self.phi.free_symbols - {X}):
            f = self.activation()
            da = Activation(name=f"d{f.name}/d{s}", expr=sympy.diff(self.phi, s), family="custom", params=f.params)
            total += self._polarized(f, da, q1, q2, sympy.Rational(1, 2), f"_{s}")
        return total

    def _derivative(self, order: int) -> Activation | None:
        """f', f'' as Activations; None when the derivative has a Dirac delta (a kink)."""
        f = self.activation()
        try:
            for _ in range(order):
                f = f.derivative
        except InvalidArgument:
            return None
        return f

    def _polarized(self, f: Activation, g: Activation, q1, q2, weight, tag: str):
        """weight (I_{f+g} - I_{f-g}) = 4 weight E[g(u) f(v)] (by symmetry of I)."""
        params = tuple((str(p), p) for p in sorted((f.expr + g.expr).free_symbols - {X}, key=str))
        plus = Activation(name=f"({f.name} + {f.name}{tag})", expr=f.expr + g.expr, family="custom", params=params)
        minus = Activation(name=f"({f.name} - {f.name}{tag})", expr=f.expr - g.expr, family="custom", params=params)
        return weight * (GaussianExpectation.of(plus, q1, q2) - GaussianExpectation.of(minus, q1, q2))

    def _closed_in(self, q1, q2):
        """The closed form at symbolic (q1, q2), or None."""
        cf = closed_form(self.activation())
        if cf is None:
            return None
        return cf.sym_second(q1) if q1 == q2 else cf.sym_cross(q1, q2)

    # -- printing --------------------------------------------------------------------------------
    def _label(self) -> str:
        return self.args[5].name

    def _sympystr(self, printer) -> str:
        if self.is_second_moment:
            return f"E[{self._label()}^2]({printer._print(self.q1)})"
        return f"I[{self._label()}]({printer._print(self.q1)}, {printer._print(self.q2)})"

    def _latex(self, printer) -> str:
        from .notation import latex_expectation

        return latex_expectation(self, printer)

    def _repr_latex_(self) -> str:
        from ..spec.symbols import LATEX_NAMES

        return f"$\\displaystyle {sympy.latex(self, symbol_names=dict(LATEX_NAMES))}$"

    # lambdify hooks: call the numeric fast path (vectorized over arrays).
    def _numpycode(self, printer) -> str:
        key = _register(self)
        return (f"__import__('meanfield.integrals.symbolic', fromlist=['_'])._lambdified({key!r}, "
                f"{printer._print(self.q1)}, {printer._print(self.q2)})")

    _lambdacode = _numpycode
    _pythoncode = _numpycode

    def _mpmathcode(self, printer) -> str:
        key = _register(self)
        return (f"__import__('meanfield.integrals.symbolic', fromlist=['_'])._lambdified_mp({key!r}, "
                f"{printer._print(self.q1)}, {printer._print(self.q2)})")


_REGISTRY: dict[str, Activation] = {}


def _register(e: GaussianExpectation) -> str:
    f = e.activation()
    key = sympy.srepr((f.expr, f.family, f.params))
    _REGISTRY[key] = f
    return key


def _lambdified(key: str, q1, q2):
    from .numeric import fast_cross

    return fast_cross(_REGISTRY[key], q1, q2)


def _lambdified_mp(key: str, q1, q2):
    from .numeric import mp_cross

    return mp_cross(_REGISTRY[key], q1, q2, mpmath.mp.dps)


# -- the symbolic entry points -------------------------------------------------------------------


def second_moment(f: Activation, q: Any) -> sympy.Expr:
    """E[phi(sqrt(q) z)^2] as sympy: a closed form, or GaussianExpectation(phi, q, q)."""
    q = _check_variance("q", q)
    if q.is_zero:
        return f.expr.subs(X, 0) ** 2
    cf = closed_form(f)
    if cf is not None:
        return cf.sym_second(q)
    return GaussianExpectation.of(f, q, q)


def cross_moment(f: Activation, q1: Any, q2: Any) -> sympy.Expr:
    """I_phi[q1, q2] as sympy: a closed form, or an unevaluated GaussianExpectation."""
    q1 = _check_variance("q1", q1)
    q2 = _check_covariance(q1, q2)
    if q1.is_zero:
        return f.expr.subs(X, 0) ** 2
    cf = closed_form(f)
    if cf is not None:
        if q2 == q1:
            return cf.sym_second(q1)
        return cf.sym_cross(q1, q2)
    return GaussianExpectation.of(f, q1, q2)


class PairExpectation(sympy.Expr):
    """E[phi(u) phi(v)], Var u = qa, Var v = qb, Cov(u, v) = qab, unevaluated (no closed form known).

    The unequal-variance sibling of :class:`GaussianExpectation`: ``.doit()`` gives a closed form
    when one appears (or a number when every argument is one), ``.evalf()`` integrates with mpmath,
    ``sympy.lambdify`` calls the numeric fast path. Build it with
    :func:`meanfield.integrals.pair_moment` or :meth:`of`.

    Example:
        >>> import sympy, meanfield as mf
        >>> qa, qb, qab = sympy.symbols("q_a q_b q_ab", real=True)
        >>> e = PairExpectation.of(mf.activation("tanh"), qa, qb, qab)
        >>> e
        P[tanh](q_a, q_b, q_ab)
        >>> round(float(sympy.lambdify((qa, qb, qab), e)(1.0, 2.0, 0.5)), 12)
        0.14675411546
    """

    is_real = True
    is_finite = True

    def __new__(cls, expr, qa, qb, qab, family=Str("custom"), params=sympy.Tuple(), name=None):
        expr, qa, qb, qab = (sympy.sympify(a) for a in (expr, qa, qb, qab))
        if name is None:
            name = Str(str(expr))
        return sympy.Expr.__new__(cls, expr, qa, qb, qab, family, params, name)

    @classmethod
    def of(cls, f: Activation, qa: Any, qb: Any, qab: Any) -> "PairExpectation":
        """The unevaluated pair moment of an Activation (no closed-form lookup)."""
        family, params, name = _family_args(f)
        return cls(f.expr, qa, qb, qab, family, params, name)

    @property
    def phi(self) -> sympy.Expr:
        return self.args[0]

    @property
    def free_symbols(self):
        return self.args[1].free_symbols | self.args[2].free_symbols | self.args[3].free_symbols | (
            self.phi.free_symbols - {X})

    def activation(self) -> Activation:
        """The Activation (catalogue family restored when it has one)."""
        return GaussianExpectation(*self.args[:1], 0, 0, *self.args[4:]).activation()

    def doit(self, **hints):
        """The closed form, or :class:`GaussianExpectation` when qa == qb; a number when all
        arguments are numbers; else self."""
        args = [a.doit(**hints) if isinstance(a, sympy.Basic) and not isinstance(a, Str) else a
                for a in self.args] if hints.get("deep", True) else list(self.args)
        obj = self.func(*args)
        qa, qb, qab = obj.args[1:4]
        result = pair_moment(obj.activation(), qa, qb, qab)
        if not isinstance(result, PairExpectation):
            return result
        if qa.is_number and qb.is_number and qab.is_number and not (obj.phi.free_symbols - {X}):
            return obj.evalf()
        return obj

    def _eval_evalf(self, prec):
        qa, qb, qab = self.args[1:4]
        if not (qa.is_number and qb.is_number and qab.is_number) or (self.phi.free_symbols - {X}):
            return None
        from .pairs import mp_pair

        dps = max(15, mpmath.libmp.prec_to_dps(prec))
        with mpmath.workdps(dps + 5):
            a, b, ab = (mpmath.mpf(sympy.Float(v, dps + 5)._mpf_) for v in (qa, qb, qab))
            g = mpmath.sqrt(a * b) if a >= 0 and b >= 0 else mpmath.mpf(-1)
        if a < 0 or b < 0:
            raise InvalidArgument("qa" if a < 0 else "qb", qa if a < 0 else qb, "a variance >= 0")
        if abs(ab) > g * (1 + 1e-12):
            raise InvalidArgument("qab", qab, "a covariance with |qab| <= sqrt(qa qb)")
        if abs(ab) > g:
            ab = g if ab > 0 else -g
        return sympy.Float(mp_pair(self.activation(), a, b, ab, dps + 3), dps)

    def _eval_subs(self, old, new):
        if old == X:
            return self
        return None

    def _sympystr(self, printer) -> str:
        qa, qb, qab = (printer._print(a) for a in self.args[1:4])
        return f"P[{self.args[6].name}]({qa}, {qb}, {qab})"

    def _latex(self, printer) -> str:
        qa, qb, qab = (printer._print(a) for a in self.args[1:4])
        return (r"\mathbb{E}\left[\phi(u)\,\phi(v)\right]_{%s,\;%s,\;%s}" % (qa, qb, qab)).replace(
            r"\phi", r"\operatorname{%s}" % self.args[6].name.replace("_", r"\_"))

    def _numpycode(self, printer) -> str:
        key = _register(self)
        qa, qb, qab = (printer._print(a) for a in self.args[1:4])
        return f"__import__('meanfield.integrals.pairs', fromlist=['_']).fast_pair(" \
               f"__import__('meanfield.integrals.symbolic', fromlist=['_']).registered({key!r}), {qa}, {qb}, {qab})"

    _lambdacode = _numpycode
    _pythoncode = _numpycode


def registered(key: str) -> Activation:
    """The Activation registered under ``key`` by a lambdified expectation."""
    return _REGISTRY[key]


def pair_moment(f: Activation, qa: Any, qb: Any, qab: Any) -> sympy.Expr:
    """E[phi(u) phi(v)], Var u = qa, Var v = qb, Cov = qab, as sympy: ``cross_moment`` when qa == qb,
    a closed form, or an unevaluated :class:`PairExpectation`."""
    qa = _check_variance("qa", qa)
    qb = _check_variance("qb", qb)
    qab = sympy.sympify(qab)
    if qab.is_real is False or qab.is_finite is False:
        raise InvalidArgument("qab", qab, "a real covariance with |qab| <= sqrt(qa qb)")
    if qa == qb:
        return cross_moment(f, qa, qab)
    if qa.is_number and qb.is_number and qab.is_number:
        a, b, ab = sympy.N(qa, 30), sympy.N(qb, 30), sympy.N(qab, 30)
        if ab**2 - a * b > 1e-25 * abs(a * b):
            raise InvalidArgument("qab", qab, f"a covariance with |qab| <= sqrt(qa qb) = {sympy.sqrt(qa * qb)}")
    if qa.is_zero or qb.is_zero:
        if qab.is_zero is False:
            raise InvalidArgument("qab", qab, "qab = 0 when qa = 0 or qb = 0")
        other = qb if qa.is_zero else qa
        first = f.expr.subs(X, 0)
        if first == 0:
            return sympy.S.Zero
        return _first_moment_times(f, other, first)
    cf = closed_form(f)
    if cf is not None and cf.has_pair:
        return cf.sym_pair(qa, qb, qab)
    return PairExpectation.of(f, qa, qb, qab)


def _first_moment_times(f: Activation, q, first):
    """phi(0) E[phi(sqrt(q) z)]: the pair moment when the other variance is 0."""
    z = sympy.Dummy("z", real=True)
    density = sympy.exp(-z**2 / 2) / sympy.sqrt(2 * sympy.pi)
    return first * sympy.Integral(f.expr.subs(X, sympy.sqrt(q) * z) * density, (z, -sympy.oo, sympy.oo))
