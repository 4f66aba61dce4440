"""derive(net): the mean-field theory of a network as sympy objects, from the same rules as the numerics.

:func:`derive` runs the recursions of :mod:`meanfield.theory.recursions` and the statistics of
:mod:`meanfield.theory.statistics` on sympy values: every order parameter of every layer, kappa_1, kappa_2, the
expected Gram entries and m, s, lambda_max at finite width (in the symbols M, T, C of
:mod:`meanfield.spec.symbols`) and to leading order. Activations with closed-form Gaussian integrals (ReLU,
erf, ...) give closed forms; others give unevaluated, printable Gaussian expectations (and sphere-law
integrals below a batch norm) that ``.doit()`` / ``evalf`` resolve. The same rule functions applied
to the order-parameter *symbols* give the recursion itself as explicit maps (``Derivation.rules``).

Example (the must-work REPL session):

    >>> import sympy
    >>> from meanfield.spec.symbols import layer_symbol
    >>> sw, sb = layer_symbol("sigma_w2"), layer_symbol("sigma_b2")
    >>> d = derive(Network(3, "relu", sw, sb))
    >>> sympy.factor(d.kappa1)
    (2*sigma_b2*sigma_w2 + 2*sigma_b2 + 3*sigma_w2**2)/8
    >>> d.subs(sigma_w2=2, sigma_b2=0).kappa1          # L/(L-1) for a critical ReLU net
    3/2
    >>> bn = derive(Network(3, "relu", sw, sb, norms=[BatchNorm("last")])).subs(sigma_w2=2, sigma_b2=0)
    >>> bn.lambda_max_kind                            # the bulk value gram_diag - gram_offdiag: no outlier
    'bound'
    >>> lam = bn.leading["lambda_max"].subs(M, T)     # the paper's condition: T grows with M
    >>> [round(float(lam.subs(T, t)), 3) for t in (64, 4096, 262144)]   # O(1); the plain net's is O(M)
    [2.36, 2.287, 2.286]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import sympy

from ..errors import InvalidArgument
from ..spec.network import BatchNorm, LayerNorm, Network  # noqa: F401 - the doctests' namespace
from .backend import Arithmetic, evaluate_expectations, to_float
from .recursions import (OrderParameters, activation_forward, backward_map, check_samples, dense_forward, norm_forward,
                         order_parameters)
from .statistics import gram_statistics
from ..spec.symbols import LATEX_NAMES, C, M, T, layer_symbol, order_symbol  # noqa: F401 - doctests

__all__ = ["derive", "Derivation", "extra_order_symbol"]

_STATS = ("P", "alpha", "kappa1", "kappa2", "gram_diag", "gram_offdiag", "m", "s", "lambda_max", "eta_max")
_ORDER_FIELDS = ("q1", "q2", "qn1", "qn2", "qhat1", "qhat2", "qtilde1", "qtilde1_mean", "qtilde2", "qtilde2_same")


def extra_order_symbol(kind: str, layer: int) -> sympy.Symbol:
    """qtilde1_mean / qtilde2_same symbols (not in meanfield.spec.symbols): registered for LaTeX here.

    Example:
        >>> extra_order_symbol("qtilde1_mean", 2)
        qtilde1_mean_2
    """
    latex = {"qtilde1_mean": r"\tilde{q}_{1}^{\mathrm{mean}\,(%d)}", "qtilde2_same": r"\tilde{q}_{2}^{\mathrm{same}\,(%d)}"}
    sym = sympy.Symbol(f"{kind}_{layer}", real=True)
    LATEX_NAMES.setdefault(sym, latex[kind] % layer)
    return sym


def _exact(value: Any) -> Any:
    """Floats as the exact rational of their shortest repr (2.0 -> 2, 0.1 -> 1/10); sympy unchanged."""
    if isinstance(value, sympy.Basic):
        return value
    if isinstance(value, float):
        return sympy.Rational(repr(value)) if math.isfinite(value) else sympy.sympify(value)
    return sympy.sympify(value)


def _exact_network(net: Network) -> Network:
    return net.with_(sigma_w2=tuple(_exact(v) for v in net.sigma_w2), sigma_b2=tuple(_exact(v) for v in net.sigma_b2),
                     alphas=tuple(_exact(v) for v in net.alphas), input_q1=_exact(net.input_q1),
                     input_q2=_exact(net.input_q2), activation=net.activation if net.depth > 1 else net.activation[0])


@dataclass(frozen=True)
class Derivation:
    """Symbolic mean-field theory of one network: order parameters, kappa's, FIM statistics, rules.

    Attributes:
        network: the (exact) network derived.
        order: :class:`~meanfield.OrderParameters` with sympy values (T the symbol unless given).
        rules: the recursion as equations between order-parameter symbols (forward then backward).
        P, alpha, kappa1, kappa2, gram_diag, gram_offdiag, m, s, lambda_max, eta_max: expressions in
            M, T, C and the network's parameters (finite-width expectations; see :mod:`meanfield.theory.fisher`).
        leading: dict with the leading-order "m", "s", "lambda_max", "P", "gram_diag", "gram_offdiag".
        lambda_max_kind: "prediction" or "bound"; lambda_max_bounds: (lo, hi) expressions or None.
        notes: assumptions made (e.g. kappa_2 > 0 for the outlier).

    ``subs``, ``simplify``, ``evaluate`` and ``lambdify`` return new objects (nothing mutates); ``str``
    is a readable table and ``_repr_latex_`` an aligned LaTeX display.
    """

    network: Network
    order: OrderParameters = field(repr=False)
    rules: tuple = field(repr=False)
    P: Any
    alpha: Any
    kappa1: Any
    kappa2: Any
    gram_diag: Any
    gram_offdiag: Any
    m: Any
    s: Any
    lambda_max: Any
    eta_max: Any
    leading: dict
    lambda_max_kind: str
    lambda_max_bounds: tuple | None
    notes: tuple = ()

    # -- transformations (each returns a new Derivation) ----------------------------------------------
    def map(self, fn: Callable[[Any], Any]) -> "Derivation":
        """Apply ``fn`` to every sympy expression (statistics, leading order, bounds, order parameters)."""
        def f(v):
            return fn(v) if isinstance(v, sympy.Basic) else v

        layers = tuple(p.replace(**{k: f(getattr(p, k)) for k in _ORDER_FIELDS}) for p in self.order.layers)
        order = OrderParameters(self.order.network, f(self.order.samples) if isinstance(self.order.samples, sympy.Basic)
                                else self.order.samples, layers, "sympy")
        values = {k: f(getattr(self, k)) for k in _STATS}
        bounds = None if self.lambda_max_bounds is None else tuple(f(v) for v in self.lambda_max_bounds)
        rules = tuple(sympy.Eq(r.lhs, f(r.rhs), evaluate=False) for r in self.rules)
        kind = self.lambda_max_kind
        leading = {k: f(v) for k, v in self.leading.items()}
        if kind == _CONDITIONAL and isinstance(values["kappa2"], sympy.Basic):
            k2 = values["kappa2"]
            if _sign(k2) is not None:
                T_ = order.samples
                kind, values["lambda_max"], bounds = _lambda_max(self.network, k2, values["gram_diag"],
                                                                 values["gram_offdiag"], values["P"], values["s"], T_)
                leading["lambda_max"] = _lambda_max(self.network, k2, leading["gram_diag"], leading["gram_offdiag"],
                                                    leading["P"], leading["s"], T_)[1]
                values["eta_max"] = 2 / values["lambda_max"]
        return Derivation(self.network, order, rules, leading=leading, lambda_max_kind=kind, lambda_max_bounds=bounds,
                          notes=self.notes, **values)

    def _resolve(self, args: tuple, kwargs: dict) -> dict:
        mapping: dict = {}
        if len(args) == 1 and isinstance(args[0], dict):
            mapping.update(args[0])
        elif len(args) == 2:
            mapping[args[0]] = args[1]
        elif args:
            raise InvalidArgument("subs", args, "a dict, an (old, new) pair, or keyword arguments")
        if kwargs:
            symbols = {s.name: s for s in self.free_symbols}
            for name, value in kwargs.items():
                if name not in symbols:
                    from ..errors import closest
                    near = closest(name, symbols)
                    raise InvalidArgument(name, value, "a free symbol of this derivation: " + ", ".join(sorted(symbols)),
                                          f"did you mean {near!r}?" if near else None)
                mapping[symbols[name]] = value
        return {k: (_exact(v) if isinstance(v, float) else v) for k, v in mapping.items()}

    def subs(self, *args: Any, **kwargs: Any) -> "Derivation":
        """Substitute symbols, e.g. ``d.subs(sigma_w2=2, sigma_b2=0)`` or ``d.subs({M: 512})``.

        Floats become exact rationals (0.1 -> 1/10), so results stay exact.

        Example:
            >>> d = derive(Network(2, "linear", layer_symbol("sigma_w2"), 0))
            >>> d.subs(sigma_w2=3).kappa1      # (qtilde_1^1 qhat_1^0 + qtilde_1^2 qhat_1^1) / alpha = 3 + 3
            6
        """
        mapping = self._resolve(args, kwargs)
        return self.map(lambda e: e.subs(mapping))

    def simplify(self) -> "Derivation":
        """sympy.simplify on every expression (can be slow for deep nets with nested closed forms)."""
        return self.map(sympy.simplify)

    def doit(self) -> "Derivation":
        """Evaluate unevaluated integrals / expectations where sympy can."""
        return self.map(lambda e: e.doit())

    @property
    def free_symbols(self) -> set:
        out: set = set()
        for k in _STATS:
            v = getattr(self, k)
            if isinstance(v, sympy.Basic):
                out |= v.free_symbols
        return out

    def evaluate(self, width: int, samples: int, *, outputs: int | None = None, **values: Any) -> dict:
        """Floats of every statistic at M = width, T = samples, C = outputs (default the network's C).

        All expressions are evaluated together in double precision through one ``lambdify`` with common
        subexpressions shared (Gaussian and sphere-law expectations call their numeric fast paths). For
        more digits use ``sympy.N`` on an expression.

        Example:
            >>> d = derive(Network(3, "relu", 2, 0, outputs=10))
            >>> round(d.evaluate(512, 32)["m"], 10)
            0.0290135397
        """
        mapping = self._resolve((), values)
        mapping.update({M: width, T: samples, C: self.network.outputs if outputs is None else outputs})
        names = list(_STATS) + [f"leading_{k}" for k in self.leading]
        exprs = [getattr(self, k) for k in _STATS] + list(self.leading.values())
        # expectations first (bottom-up, numeric fast paths), then one lambdify of what is left
        mapping = {k: sympy.sympify(v) for k, v in mapping.items()}
        # Max(...) with number arguments would be decided by a slow high-precision evalf of both branches:
        # keep it unevaluated (a plain function) and let numpy take the maximum
        exprs = [sympy.sympify(e).replace(sympy.Max, _MAX) for e in exprs]
        exprs = [evaluate_expectations(e.xreplace(mapping)) for e in exprs]  # xreplace: no re-simplification
        left = set().union(*(e.free_symbols for e in exprs))
        if left:
            raise InvalidArgument("values", values, "numbers for every free symbol",
                                  f"missing: {', '.join(sorted(map(str, left)))}")
        fn = sympy.lambdify([], exprs, modules=[{"Heaviside": _heaviside, "max_": max}, "scipy", "numpy"], cse=True)
        with np.errstate(all="raise"):
            out = {k: float(v) for k, v in zip(names, fn())}
        bad = [k for k, v in out.items() if not math.isfinite(v)]
        if bad:
            raise InvalidArgument("values", values, "values where the statistics are finite", f"{bad} are not")
        return out

    def lambdify(self, name: str, args: Any = None, modules: Any = None) -> Callable:
        """A numeric function of one statistic; args default to its free symbols sorted by name.

        Example:
            >>> d = derive(Network(3, "relu", layer_symbol("sigma_w2"), layer_symbol("sigma_b2")))
            >>> f = d.lambdify("kappa1", ["sigma_w2", "sigma_b2"])
            >>> f(2.0, 0.0)
            1.5
        """
        from ..errors import check_choice
        check_choice("name", name, list(_STATS) + [f"leading_{k}" for k in self.leading])
        expr = self.leading[name[8:]] if name.startswith("leading_") else getattr(self, name)
        expr = sympy.sympify(expr)
        if args is None:
            args = sorted(expr.free_symbols, key=lambda s: s.name)
        else:
            by_name = {s.name: s for s in self.free_symbols | expr.free_symbols}
            args = [by_name.get(a, sympy.Symbol(a)) if isinstance(a, str) else a for a in args]
        return sympy.lambdify(args, expr, modules=modules or [{"Heaviside": _heaviside}, "scipy", "numpy"])

    # -- display -------------------------------------------------------------------------------------------
    def table(self, width: int = 110) -> str:
        """A readable table: the network, the per-layer order parameters, kappa's and statistics."""
        def short(v):
            text = str(v)
            return text if len(text) <= width else text[: width - 3] + "..."

        lines = [f"Derivation: {self.network.describe()}", "  order parameters (exact in T):"]
        for p in self.order.layers:
            for k in ("q1", "q2", "qhat1", "qhat2", "qtilde1", "qtilde1_mean", "qtilde2", "qtilde2_same"):
                v = getattr(p, k)
                if v is not None:
                    lines.append(f"    {f'{k}^({p.layer})':<17} = {short(v)}")
        lines.append("  statistics (finite width; M, T, C symbols):")
        for k in _STATS:
            lines.append(f"    {k:<12} = {short(getattr(self, k))}")
        lines.append("  leading order:")
        for k, v in self.leading.items():
            lines.append(f"    {k:<12} = {short(v)}")
        lines.append(f"  lambda_max: {self.lambda_max_kind}")
        if self.lambda_max_bounds is not None:
            lines.append(f"    bounds: {short(self.lambda_max_bounds[0])}  ..  {short(self.lambda_max_bounds[1])}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def latex_lines(self) -> list[str]:
        """One LaTeX equation per statistic and per recursion rule (for documents)."""
        tex = _latex
        names = {"P": "P", "alpha": r"\alpha", "kappa1": r"\kappa_1", "kappa2": r"\kappa_2",
                 "gram_diag": r"\mathbb{E}\,G_{tt}", "gram_offdiag": r"\mathbb{E}\,G_{tt'}", "m": "m", "s": "s",
                 "lambda_max": r"\lambda_{\max}", "eta_max": r"\eta_{\max}"}
        out = [f"{tex(r.lhs)} &= {tex(r.rhs)}" for r in self.rules]
        out += [f"{names[k]} &= {tex(getattr(self, k))}" for k in _STATS]
        return out

    def _repr_latex_(self) -> str:
        return "$$\\begin{aligned}" + r" \\ ".join(self.latex_lines()) + r"\end{aligned}$$"

    def _latex(self, printer: Any = None, **kwargs: Any) -> str:
        return "\\begin{aligned}" + r" \\ ".join(self.latex_lines()) + r"\end{aligned}"


_MAX = sympy.Function("max_")


def _heaviside(x, h0=0.5):
    import numpy as np
    return np.heaviside(x, 0.5 if h0 is None else h0)


def _latex(expr: Any) -> str:
    try:
        from ..printing import latex
        return latex(expr)
    except ImportError:  # the LaTeX module is optional for this one
        return sympy.latex(expr, symbol_names=LATEX_NAMES)


# -- the rules as maps between order-parameter symbols -----------------------------------------------------------


_CONDITIONAL = "prediction if kappa2 > 0"


def _lambda_max(net: Network, kappa2: Any, gd: Any, go: Any, P: Any, s: Any, Tsym: Any) -> tuple:
    """(kind, lambda_max, bounds): the outlier gram_diag + (T-1) gram_offdiag when kappa_2 > 0 and the output is
    not normalised; else the bulk value gram_diag - gram_offdiag (a lower bound) with sqrt(P s) above;
    Max(...) with kind "prediction if kappa2 > 0" while the sign of kappa_2 is unknown."""
    outlier, bulk = gd + (Tsym - 1) * go, gd - go
    if net.norm_at(net.depth) is not None:
        return "bound", bulk, (bulk, sympy.sqrt(P * s, evaluate=False))   # gram_offdiag < 0 under an output batch norm
    sign = _sign(kappa2)
    if sign is not None and sign > 0:
        return "prediction", outlier, None
    if sign is not None:
        # no O(M) outlier; at finite width the bias terms can still make gram_offdiag > 0
        top = sympy.Max(outlier, bulk, evaluate=False)
        return "bound", top, (top, sympy.sqrt(P * s, evaluate=False))
    return _CONDITIONAL, sympy.Max(outlier, bulk, evaluate=False), None


def _sign(value: Any) -> int | None:
    """+1 / 0 / -1 for a number (numerically: sympy's assumption queries on nested closed forms can take
    tens of seconds), None while free symbols remain."""
    value = sympy.sympify(value)
    if value.free_symbols:
        return None
    x = to_float(value, "kappa2")
    return 1 if x > 0 else (0 if x == 0 else -1)


def _rules(net: Network, Tsym: Any) -> tuple:
    ctx = Arithmetic("sympy")
    L = net.depth
    out = []
    qh1 = {0: order_symbol("qhat1", 0)}
    qh2 = {0: order_symbol("qhat2", 0)}
    out.append(sympy.Eq(qh1[0], _exact(net.input_q1), evaluate=False))
    out.append(sympy.Eq(qh2[0], _exact(net.input_q2), evaluate=False))
    laws = {}
    for l in range(1, L + 1):
        sw, sb = _exact(net.sigma_w2[l - 1]), _exact(net.sigma_b2[l - 1])
        q1s, q2s = order_symbol("q1", l), order_symbol("q2", l)
        a, b = dense_forward(ctx, qh1[l - 1], qh2[l - 1], sw, sb)
        out += [sympy.Eq(q1s, a, evaluate=False), sympy.Eq(q2s, b, evaluate=False)]
        law = norm_forward(ctx, net.norm_at(l), q1s, q2s, Tsym, l)
        laws[l] = law
        if l < L:
            h1, h2 = activation_forward(ctx, law, net.phi(l))
            qh1[l], qh2[l] = order_symbol("qhat1", l), order_symbol("qhat2", l)
            out += [sympy.Eq(qh1[l], h1, evaluate=False), sympy.Eq(qh2[l], h2, evaluate=False)]
    # backward: state symbols of layer l+1 -> layer l
    up = (sympy.S.One, sympy.S.Zero, sympy.S.Zero, sympy.S.One)
    for l in range(L, 0, -1):
        d_eq, d_ne, o_eq, o_ne = up
        if l < L:
            w = _exact(net.sigma_w2[l])
            d_eq, d_ne, o_eq, o_ne = (w * x for x in (d_eq, d_ne, o_eq, o_ne))
        phi = net.phi(l) if l < L else None
        kind, e1, e2 = backward_map(ctx, net.norm_at(l), laws[l], phi, order_symbol("q1", l), order_symbol("q2", l), Tsym)
        if kind == "diagonal":
            new = (e1 * d_eq, e2 * d_ne, e1 * o_eq, e2 * o_ne)
        else:
            yd, yo = e1 * d_eq + e2 * d_ne, e1 * o_eq + e2 * o_ne
            new = (yd, -yd, yo, -yo)
        syms = (order_symbol("qtilde1", l), extra_order_symbol("qtilde1_mean", l), extra_order_symbol("qtilde2_same", l),
                order_symbol("qtilde2", l))
        for s_, v in zip(syms, new):
            if v != 0 or l == L:
                out.append(sympy.Eq(s_, v, evaluate=False))
        up = tuple(s_ if v != 0 else sympy.S.Zero for s_, v in zip(syms, new))
    return tuple(out)


# -- public ----------------------------------------------------------------------------------------------------------


def derive(net: Network, *, width: Any = None, samples: Any = None, outputs: Any = None) -> Derivation:
    """The theory of ``net`` as sympy: order parameters per layer, kappa's, Gram entries, m, s, lambda_max.

    Float parameters become exact rationals (0.1 -> 1/10); symbols stay symbols. The statistics are
    written in the symbols M, T, C of :mod:`meanfield.spec.symbols` unless ``width``, ``samples`` or
    ``outputs`` fix them. The formulas are those of :func:`meanfield.predict` (finite-width
    expectations) and ``leading`` (leading order); ``lambda_max`` is the top eigenvalue of E G:
    gram_diag + (T-1) gram_offdiag (the outlier; this assumes kappa_2 > 0, see ``notes``) or, with
    normalization on the output, gram_diag - gram_offdiag, the bulk value, with kind "bound".

    Args:
        net: the network (parameters may be sympy symbols).
        width, samples, outputs: fix M, T or C instead of keeping the symbols.

    Returns:
        :class:`Derivation`.

    Example:
        >>> d = derive(Network(2, "erf", 1, 0))
        >>> d.order[1].qhat1
        2*asin(2/3)/pi
        >>> sympy.simplify(d.kappa1)        # E[erf'^2](1) + qhat_1^1 = 4/(pi sqrt 5) + (2/pi) asin(2/3)
        2*(5*asin(2/3) + 2*sqrt(5))/(5*pi)
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    exact = _exact_network(net)
    Tsym = T if samples is None else samples
    if samples is not None and not (isinstance(samples, sympy.Basic) and not samples.is_number):
        check_samples(exact, samples, purpose="fisher")
    Msym = M if width is None else width
    Csym = C if outputs is None else outputs
    op = order_parameters(exact, Tsym, symbolic=True)
    ctx = Arithmetic("sympy")
    st = gram_statistics(op, Msym if isinstance(Msym, sympy.Basic) else sympy.Integer(Msym), Tsym, Csym, ctx)
    notes = []
    kind, lam, bounds = _lambda_max(exact, st["kappa2"], st["gd"], st["go"], st["P"], st["s"], Tsym)
    lam_lead = _lambda_max(exact, st["kappa2"], st["gd_lead"], st["go_lead"], st["P_lead"], st["s_l"], Tsym)[1]
    s_ = st["s"]
    leading = {"P": st["P_lead"], "m": st["m_l"], "s": st["s_l"], "lambda_max": lam_lead, "gram_diag": st["gd_lead"],
               "gram_offdiag": st["go_lead"]}
    if kind == "bound":
        notes.append("lambda_max is only bounded here (the top eigenvalue is the bulk edge): lambda_max holds "
                     "gram_diag - gram_offdiag, the top eigenvalue of E G and a lower bound of E lambda_max (Jensen); "
                     "sqrt(P s) bounds it above")
    elif kind == _CONDITIONAL:
        notes.append("lambda_max = Max(outlier gram_diag + (T-1) gram_offdiag, bulk gram_diag - gram_offdiag): the "
                     "outlier is a prediction when kappa_2 > 0; otherwise only a lower bound (resolved by subs)")
    notes.append("finite width: exact P, bias terms, exact in T; O(1/M) fluctuation corrections not included")
    return Derivation(exact, op, _rules(exact, Tsym), st["P"], st["alpha"], st["kappa1"], st["kappa2"], st["gd"],
                      st["go"], st["m"], s_, lam, 2 / lam, leading, kind, bounds, tuple(notes))
