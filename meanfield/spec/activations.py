"""Activations known symbolically: a sympy expression in one real variable, and what follows from it.

An :class:`Activation` is immutable: its ``expr`` is the truth; the derivative is derived by sympy,
and the numeric callables (numpy/scipy for speed, mpmath for any precision) are lambdified from it
once and cached. ``family`` and ``params`` name a catalogue entry so that the Gaussian-expectation
layer can find closed forms (``meanfield.integrals``); a user expression has family ``"custom"`` and
gets the generic integrals.

``kinks`` lists the points where the function or its derivative is not smooth; numeric quadrature
splits there, because plain Gauss-Hermite is off by percents on kinked integrands.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import scipy.special
import sympy
from sympy.parsing.sympy_parser import TokenError, convert_xor, standard_transformations

from ..errors import InvalidArgument, check_choice, check_real, closest

__all__ = ["Activation", "activation", "catalogue", "X", "CATALOGUE", "CatalogueEntry", "bounded_sympify"]

#: The real variable every activation is written in.
X = sympy.Symbol("x", real=True)

# sympy functions whose presence means "not smooth somewhere": their argument's zeros are kinks.
_NONSMOOTH = (sympy.Heaviside, sympy.Abs, sympy.sign, sympy.Max, sympy.Min, sympy.Piecewise, sympy.floor,
              sympy.ceiling)


def _np_heaviside(x, h0=0.5):
    return np.heaviside(x, 0.5 if h0 is None else h0)


def _mp_heaviside(x, h0=0.5):
    if x == 0:
        return mpmath.mpf(0.5 if h0 is None else h0)
    return mpmath.mpf(1) if x > 0 else mpmath.mpf(0)


_NUMPY_MODULES = [{"Heaviside": _np_heaviside, "erf": scipy.special.erf, "erfc": scipy.special.erfc}, "scipy", "numpy"]
# The lambdified textbook forms overflow (exp(800)) for the large pre-activations that q up to 1e6
# produces; these are the same functions written to stay finite.
_STABLE_NUMPY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": scipy.special.expit,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "silu": lambda x: x * scipy.special.expit(x),
    "sigmoid_prime": lambda x: scipy.special.expit(x) * scipy.special.expit(-x),
    "silu_prime": lambda x: scipy.special.expit(x) * (1.0 + x * scipy.special.expit(-x)),
    # x (1 + erf(x / sqrt 2)) / 2 cancels for x << 0 (x = -5: 4e-11 relative, found by the hypothesis test
    # against mpmath); Phi(x) = erfc(-x / sqrt 2) / 2 keeps full precision
    "gelu": lambda x: x * scipy.special.ndtr(x),
}
_MPMATH_MODULES = [{"Heaviside": _mp_heaviside}, "mpmath"]
# log(1 + exp(x)) at x = -43 keeps only ~11 of 30 digits (1 + 2e-19 is rounded first), and 1 + erf(x / sqrt 2)
# at x = -30 none: same functions, written without the cancellation.
_STABLE_MPMATH: dict[str, Callable[[Any], Any]] = {
    "softplus": lambda x: mpmath.log1p(mpmath.exp(x)),
    "gelu": lambda x: x * mpmath.erfc(-x / mpmath.sqrt(2)) / 2,
}


@functools.lru_cache(maxsize=512)
def _numpy_function(expr: sympy.Expr) -> Callable[[Any], np.ndarray]:
    raw = sympy.lambdify(X, expr, modules=_NUMPY_MODULES)

    def f(x):
        x = np.asarray(x, dtype=float)
        # broadcast: constant expressions lambdify to scalars
        return np.broadcast_to(np.asarray(raw(x), dtype=float), x.shape).copy() if x.shape else np.float64(raw(x))

    return f


@functools.lru_cache(maxsize=512)
def _mpmath_function(expr: sympy.Expr) -> Callable[[Any], Any]:
    return sympy.lambdify(X, expr, modules=_MPMATH_MODULES)


@functools.lru_cache(maxsize=512)
def _kinks(expr: sympy.Expr) -> tuple[float, ...] | None:
    """Real points where ``expr`` (or its derivative) is not smooth; None if they can't be found."""
    points: set[float] = set()
    for atom in expr.atoms(*_NONSMOOTH):
        if isinstance(atom, sympy.Piecewise):
            conditions = [cond for _, cond in atom.args if cond is not sympy.true]
            args = []
            for cond in conditions:
                if isinstance(cond, sympy.core.relational.Relational):
                    args.append(cond.lhs - cond.rhs)
                else:
                    return None
        elif isinstance(atom, (sympy.Max, sympy.Min)):
            if len(atom.args) != 2:
                return None
            args = [atom.args[0] - atom.args[1]]
        else:
            args = [atom.args[0]]
        for arg in args:
            try:
                roots = sympy.solveset(sympy.Eq(arg, 0), X, domain=sympy.S.Reals)
            except Exception:  # noqa: BLE001 - sympy raises many kinds; any means "unknown"
                return None
            if not isinstance(roots, sympy.FiniteSet) or any(not r.is_number for r in roots):
                if roots is sympy.S.EmptySet:
                    continue
                return None
            points.update(float(r) for r in roots)
    return tuple(sorted(points))


@dataclass(frozen=True)
class Activation:
    """phi(x): an activation given by a sympy expression in the real symbol ``x``.

    Attributes:
        name: display name (``"relu"``, ``"leaky_relu(a=0.1)"``, or the expression for custom ones).
        expr: the sympy expression in :data:`X`.
        family: catalogue key used for closed-form lookups, or ``"custom"``.
        params: catalogue parameters as ``((name, value), ...)``, values sympy numbers or symbols.

    Example:
        >>> relu = activation("relu")
        >>> relu.expr
        Max(0, x)
        >>> relu.derivative.expr
        Heaviside(x)
        >>> float(relu(-1.0)), float(relu(2.5))
        (0.0, 2.5)
        >>> relu.kinks
        (0.0,)
    """

    name: str
    expr: sympy.Expr
    family: str = "custom"
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if not isinstance(self.expr, sympy.Expr):
            raise InvalidArgument("expr", self.expr, "a sympy expression in x")
        extra = self.expr.free_symbols - {X} - {p for _, p in self.params if isinstance(p, sympy.Symbol)}
        if extra:
            raise InvalidArgument(
                "expr", self.expr, "a function of the single real variable x",
                f"it also depends on {', '.join(sorted(map(str, extra)))}",
            )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_expr(cls, expr: str | sympy.Expr, name: str | None = None, **params: Any) -> "Activation":
        """An activation from a user expression (string or sympy) in one real variable.

        Any single free symbol is taken as the variable; other names must be given as ``params``.
        The expression must be real and finite on the real line.

        Example:
            >>> f = Activation.from_expr("x*tanh(x)")
            >>> f.derivative.expr
            x*(1 - tanh(x)**2) + tanh(x)
            >>> Activation.from_expr("a*x", a=0.5).expr
            0.5*x
        """
        if isinstance(expr, str):
            local = {"x": X, **{k: sympy.Symbol(k, real=True) for k in params}}
            parsed = bounded_sympify(expr, local)
        elif isinstance(expr, sympy.Basic):
            parsed = expr
        else:
            raise InvalidArgument("expr", expr, "a string or a sympy expression in one variable")
        if not isinstance(parsed, sympy.Expr):
            raise InvalidArgument("expr", expr, "a real-valued formula in one variable")
        substitutions = {}
        for key, value in params.items():
            value = check_real(key, value)
            for sym in parsed.free_symbols:
                if sym.name == key:
                    substitutions[sym] = sympy.sympify(value)
        parsed = parsed.subs(substitutions)
        free = parsed.free_symbols
        if len(free) > 1:
            raise InvalidArgument(
                "expr", expr, "a function of one real variable",
                f"it has free symbols {', '.join(sorted(map(str, free)))}; pass the others as parameters",
            )
        if free:
            (var,) = free
            if var != X:
                parsed = parsed.subs(var, X)
        _check_real_valued(parsed, expr)
        return cls(name=name or str(parsed), expr=parsed, family="custom")

    # -- derived objects ----------------------------------------------------------------------
    @functools.cached_property
    def derivative(self) -> "Activation":
        """phi'(x) as an Activation (catalogued derivatives keep a family, for closed forms).

        Example:
            >>> activation("erf").derivative.expr
            2*exp(-x**2)/sqrt(pi)
        """
        spec = CATALOGUE.get(self.family)
        if spec is not None and spec.derivative is not None:
            family, params = spec.derivative(dict(self.params))
            return activation(family, **params)
        jumps = self.expr.atoms(sympy.floor, sympy.ceiling, sympy.frac)
        if jumps:
            raise InvalidArgument(
                "activation", self.name, "an activation whose derivative is a function",
                f"{sorted(map(str, jumps))[0]} is a staircase: its derivative is a sum of Dirac deltas, so the "
                "backward order parameters E[phi'(u)^2] do not exist",
            )
        d = sympy.diff(self.expr, X)
        d = _tidy_derivative(d)
        if d.has(sympy.Derivative):
            raise InvalidArgument(
                "activation", self.name, "an activation sympy can differentiate",
                f"d/dx {self.expr} stays unevaluated ({d})",
            )
        if d.has(sympy.DiracDelta):
            raise InvalidArgument(
                "activation", self.name, "an activation whose derivative is a function",
                f"d/dx {self.expr} = {d} contains a Dirac delta",
            )
        return Activation(name=f"{self.name}'", expr=d, family="custom")

    @property
    def kinks(self) -> tuple[float, ...] | None:
        """Sorted real points where phi is not smooth; () if smooth, None if unknown."""
        return _kinks(self.expr)

    @property
    def smooth(self) -> bool:
        """True when phi has no kinks (so plain Gauss-Hermite quadrature converges fast)."""
        return self.kinks == ()

    @property
    def is_symbolic(self) -> bool:
        """True when a parameter is a sympy symbol (numeric evaluation is then impossible)."""
        return bool(self.expr.free_symbols - {X})

    # -- numeric evaluation -------------------------------------------------------------------
    def __call__(self, x: Any) -> np.ndarray:
        """phi(x) elementwise on floats or numpy arrays (scipy/numpy backend)."""
        self._require_numeric()
        stable = _STABLE_NUMPY.get(self.family)
        if stable is not None:
            return stable(np.asarray(x, dtype=float))
        with np.errstate(all="ignore"):
            y = _numpy_function(self.expr)(x)
        bad = ~np.isfinite(y)
        if np.any(bad):
            # overflow in an intermediate (exp(-x)/(1+exp(-x))**2 at x=-1e4): redo those points in
            # mpmath, whose exponent range does not overflow, rather than let a NaN out.
            y = np.array(y, dtype=float, copy=True)
            xs = np.broadcast_to(np.asarray(x, dtype=float), np.shape(y))
            mp_f = _mpmath_function(self.expr)
            if y.ndim == 0:
                return np.float64(mp_f(mpmath.mpf(float(xs))))
            for idx in zip(*np.nonzero(bad)):
                y[idx] = float(mp_f(mpmath.mpf(float(xs[idx]))))
        return y

    def mp(self, x: Any) -> Any:
        """phi(x) in mpmath at the current working precision (use ``mpmath.workdps``)."""
        self._require_numeric()
        stable = _STABLE_MPMATH.get(self.family)
        if stable is not None:
            return stable(x)
        return _mpmath_function(self.expr)(x)

    def _require_numeric(self):
        if self.is_symbolic:
            raise InvalidArgument(
                "activation", self.name, "an activation with numeric parameters for numeric evaluation",
                "substitute the symbolic parameters first",
            )

    # -- display ------------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.name

    def _repr_latex_(self) -> str:
        return f"$\\phi(x) = {sympy.latex(self.expr)}$"

    def _latex(self, printer=None) -> str:
        return sympy.latex(self.expr)


# Numbers a formula may ask sympy to compute exactly: beyond these, evaluation takes minutes to hours inside
# a single C call (gmpy's factorial) that Ctrl-C cannot interrupt, so the formula is refused unevaluated.
_MAX_DIGITS = 10_000          # an exact integer of at most this many digits (10**10000 takes microseconds)
_MAX_COMBINATORIAL = 10_000   # factorial(10000) has 35660 digits and takes ~1 ms
_COMBINATORIAL = tuple(f for f in (
    sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.gamma, sympy.binomial, sympy.RisingFactorial,
    sympy.FallingFactorial, sympy.fibonacci, sympy.lucas, sympy.bell, sympy.catalan, sympy.harmonic,
    sympy.bernoulli, sympy.euler, sympy.primorial, sympy.prime, sympy.partition, sympy.tribonacci,
    sympy.genocchi, sympy.motzkin) if isinstance(f, type))


def bounded_sympify(text: str, local: Mapping[str, Any] | None = None) -> sympy.Expr:
    """Parse a formula without evaluating it, refuse work sympy could not finish, then evaluate.

    ``factorial(10**9)*x`` or ``10**10**10*x`` would otherwise hang the parser (exact integers with
    billions of digits); every number in the unevaluated tree is sized first, innermost first.

    Example:
        >>> bounded_sympify("2*x + factorial(3)")
        2*x + 6
        >>> bounded_sympify("factorial(10**9)*x")
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: expr='factorial(10**9)*x' is not allowed: expected a formula ...
    """
    allowed = "a formula whose numbers sympy can evaluate quickly"
    local = dict(local or {"x": X})
    if len(str(text)) > 10_000:
        raise InvalidArgument("expr", text, allowed, "the formula is longer than 10000 characters")
    # inert stand-ins: parse_expr(evaluate=False) leaves operators unevaluated but still calls functions,
    # and factorial(factorial(100)) would evaluate its argument and then hang on the outer call
    inert = {f.__name__: sympy.Function(f.__name__) for f in _COMBINATORIAL}
    inert.update(rf=inert["RisingFactorial"], ff=inert["FallingFactorial"])
    try:
        tree = sympy.parse_expr(str(text), local_dict={**inert, **local}, evaluate=False,
                                transformations=standard_transformations + (convert_xor,))  # as sympify reads ^
    except (sympy.SympifyError, SyntaxError, TypeError, AttributeError, ValueError, TokenError, IndexError) as err:
        raise InvalidArgument("expr", text, "a formula in x, e.g. 'x*tanh(x)'", str(err) or None) from None
    names = set(inert)
    for node in sympy.postorder_traversal(tree):
        if isinstance(node, sympy.Integer) and abs(int(node)) >= 10 ** _MAX_DIGITS:
            raise InvalidArgument("expr", text, allowed, f"an integer with more than {_MAX_DIGITS} digits")
        combinatorial = isinstance(node, sympy.Function) and type(node).__name__ in names
        if node.free_symbols or not (combinatorial or isinstance(node, sympy.Pow)):
            continue
        try:
            args = [abs(complex(sympy.N(a.subs(inert_back(node, inert)), 15, maxn=200))) for a in node.args]
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            continue  # not a plain number (nan, zoo): evaluation is cheap and later checks refuse it
        if isinstance(node, sympy.Pow):
            base, exponent = args
            digits = abs(exponent) * math.log10(base) if base > 1 else 0.0
            if digits > _MAX_DIGITS:
                raise InvalidArgument("expr", text, allowed,
                                      f"{node} has about {digits:.3g} digits (at most {_MAX_DIGITS})")
        elif max(args, default=0.0) > _MAX_COMBINATORIAL:
            raise InvalidArgument("expr", text, allowed,
                                  f"{type(node).__name__} of a number above {_MAX_COMBINATORIAL} ({node})")
    try:
        return sympy.sympify(str(text), locals=local)
    except (sympy.SympifyError, SyntaxError, TypeError, AttributeError, ValueError, TokenError) as err:
        raise InvalidArgument("expr", text, "a formula in x, e.g. 'x*tanh(x)'", str(err)) from None


def inert_back(node: sympy.Basic, inert: Mapping[str, Any]) -> dict:
    """The real functions for the inert stand-ins inside ``node`` (their arguments were sized already)."""
    real = {f.__name__: f for f in _COMBINATORIAL}
    return {a: real[type(a).__name__](*a.args) for a in node.atoms(sympy.Function)
            if type(a).__name__ in inert and type(a).__name__ in real}


def _tidy_derivative(d: sympy.Expr) -> sympy.Expr:
    # x*DiracDelta(x) == 0 as a distribution; sympy leaves it in, which would make relu-like
    # user expressions (x*Heaviside(x)) look non-differentiable.
    d = d.replace(lambda e: isinstance(e, sympy.Mul) and e.has(sympy.DiracDelta)
                  and any(isinstance(a, sympy.DiracDelta) and a.args[0] == X for a in e.args)
                  and sympy.simplify(e.subs(sympy.DiracDelta(X), 1).subs(X, 0)) == 0,
                  lambda e: sympy.S.Zero)
    return d


def _check_real_valued(expr: sympy.Expr, original: Any) -> None:
    """Reject expressions that are complex or non-finite somewhere on a probe grid of the real line."""
    f = _numpy_function(expr)
    probe = np.array([-7.3, -2.0, -0.6, -1e-3, 0.0, 1e-3, 0.45, 1.3, 3.1, 8.7])
    try:
        with np.errstate(all="ignore"):
            values = np.asarray(sympy.lambdify(X, expr, modules=_NUMPY_MODULES)(probe.astype(complex)))
    except Exception:  # noqa: BLE001 - e.g. Heaviside of complex; fall back to real evaluation
        with np.errstate(all="ignore"):
            values = f(probe)
    values = np.broadcast_to(values, probe.shape)
    if np.iscomplexobj(values) and np.any(np.abs(values.imag) > 1e-12 * (1 + np.abs(values.real))):
        raise InvalidArgument("expr", original, "a real-valued function on the whole real line",
                              "it takes complex values for some real x")
    if not np.all(np.isfinite(values)):
        raise InvalidArgument("expr", original, "a function that is finite on the whole real line")


# -- the catalogue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueEntry:
    build: Callable[[Mapping[str, Any]], sympy.Expr]
    defaults: tuple[tuple[str, Any], ...] = ()
    derivative: Callable[[Mapping[str, Any]], tuple[str, dict]] | None = None
    doc: str = ""


def _const(value):
    return lambda p: sympy.sympify(value)


CATALOGUE: dict[str, CatalogueEntry] = {
    "relu": CatalogueEntry(lambda p: sympy.Max(0, X), derivative=lambda p: ("step", {}), doc="max(0, x)"),
    "leaky_relu": CatalogueEntry(
        lambda p: sympy.Piecewise((p["a"] * X, X < 0), (X, True)),
        defaults=(("a", sympy.Rational(1, 100)),),
        derivative=lambda p: ("leaky_step", {"a": p["a"]}),
        doc="x for x >= 0, a x below",
    ),
    "leaky_step": CatalogueEntry(
        lambda p: sympy.Piecewise((p["a"], X < 0), (1, True)),
        defaults=(("a", sympy.Rational(1, 100)),),
        derivative=None,
        doc="derivative of leaky_relu",
    ),
    "abs": CatalogueEntry(lambda p: sympy.Abs(X), derivative=lambda p: ("sign", {}), doc="|x|"),
    "sign": CatalogueEntry(lambda p: sympy.sign(X), doc="sign(x), derivative of abs"),
    "linear": CatalogueEntry(lambda p: X, derivative=lambda p: ("constant", {"value": 1}), doc="x"),
    "constant": CatalogueEntry(lambda p: sympy.sympify(p["value"]), defaults=(("value", 1),),
                       derivative=lambda p: ("constant", {"value": 0}), doc="a constant"),
    "step": CatalogueEntry(lambda p: sympy.Heaviside(X), doc="Heaviside step, derivative of relu"),
    "tanh": CatalogueEntry(lambda p: sympy.tanh(X), doc="tanh(x)"),
    "erf": CatalogueEntry(lambda p: sympy.erf(X), derivative=lambda p: ("erf_prime", {}), doc="erf(x)"),
    "erf_prime": CatalogueEntry(lambda p: 2 * sympy.exp(-X**2) / sympy.sqrt(sympy.pi), doc="2 exp(-x^2)/sqrt(pi)"),
    "sigmoid": CatalogueEntry(lambda p: 1 / (1 + sympy.exp(-X)), derivative=lambda p: ("sigmoid_prime", {}),
                      doc="1/(1 + e^-x)"),
    "sigmoid_prime": CatalogueEntry(lambda p: sympy.exp(-X) / (1 + sympy.exp(-X)) ** 2, doc="derivative of sigmoid"),
    "softplus": CatalogueEntry(lambda p: sympy.log(1 + sympy.exp(X)), derivative=lambda p: ("sigmoid", {}),
                       doc="log(1 + e^x)"),
    "gelu": CatalogueEntry(lambda p: X * (1 + sympy.erf(X / sympy.sqrt(2))) / 2, doc="x Phi(x), exact (erf) form"),
    "silu": CatalogueEntry(lambda p: X / (1 + sympy.exp(-X)), derivative=lambda p: ("silu_prime", {}),
                   doc="x sigmoid(x) (swish)"),
    "silu_prime": CatalogueEntry(lambda p: sympy.diff(X / (1 + sympy.exp(-X)), X), doc="derivative of silu"),
    "sin": CatalogueEntry(lambda p: sympy.sin(X), derivative=lambda p: ("cos", {}), doc="sin(x)"),
    "cos": CatalogueEntry(lambda p: sympy.cos(X), derivative=lambda p: ("neg_sin", {}), doc="cos(x)"),
    "neg_sin": CatalogueEntry(lambda p: -sympy.sin(X), doc="-sin(x), derivative of cos"),
}
_ALIASES = {"swish": "silu", "identity": "linear", "heaviside": "step", "leaky": "leaky_relu"}


def catalogue() -> dict[str, str]:
    """The catalogued activation names with a one-line description each.

    Example:
        >>> "relu" in catalogue() and "gelu" in catalogue()
        True
    """
    names = {name: entry.doc for name, entry in CATALOGUE.items()}
    names.update({alias: f"alias of {target}" for alias, target in _ALIASES.items()})
    return names


def _fmt(value: Any) -> str:
    return f"{float(value):g}" if isinstance(value, sympy.Float) else str(value)


@functools.lru_cache(maxsize=256)
def _activation(name: str, params: tuple[tuple[str, Any], ...]) -> Activation:
    entry = CATALOGUE[name]
    values = dict(entry.defaults)
    values.update(params)
    expr = entry.build(values)
    shown = [(k, values[k]) for k, _ in entry.defaults]
    label = name if not shown or dict(params) == {} else f"{name}({', '.join(f'{k}={_fmt(v)}' for k, v in shown)})"
    return Activation(name=label, expr=expr, family=name, params=tuple(shown))


def activation(name: str | Activation, **params: Any) -> Activation:
    """The catalogued activation ``name`` (with parameters, e.g. ``leaky_relu, a=0.2``).

    Unknown names raise :class:`~meanfield.InvalidArgument` listing the valid names and the closest.

    Example:
        >>> activation("leaky_relu", a=0.2).expr
        Piecewise((0.2*x, x < 0), (x, True))
        >>> activation("swish").family
        'silu'
    """
    if isinstance(name, Activation):
        if params:
            raise InvalidArgument("params", params, "no parameters when an Activation is given")
        return name
    if not isinstance(name, str):
        raise InvalidArgument("activation", name, "a catalogue name or an Activation")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in CATALOGUE:
        valid = sorted(catalogue())
        near = closest(key, valid)
        raise InvalidArgument(
            "activation", name, "one of " + ", ".join(valid) + " (or Activation.from_expr(...))",
            f"did you mean {near!r}?" if near else None,
        )
    entry = CATALOGUE[key]
    allowed = {k for k, _ in entry.defaults}
    for k in params:
        if k not in allowed:
            check_choice(f"{key} parameter", k, sorted(allowed) or ["(none)"])
    checked = tuple(sorted((k, sympy.sympify(check_real(f"{key}.{k}", v))) for k, v in params.items()))
    return _activation(key, checked)
