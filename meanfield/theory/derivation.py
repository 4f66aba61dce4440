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

import functools
import importlib
import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import sympy

from ..errors import InvalidArgument
from ..integrals.gaussian import cross_moment
from ..spec.network import BatchNorm, LayerNorm, Network  # noqa: F401 - the doctests' namespace
from ..errors import check_int
from ..spec.activations import X
from .backend import Arithmetic, evaluate_expectations
from .recursions import (OrderParameters, activation_forward, apply_backward, backward_map, check_samples, dense_forward, norm_forward,
                         order_parameters)
from .statistics import ExpectedMaxInverseChi2, gram_statistics, lambda_kind
from .structure import Structure, structure as structure_of
from ..spec.symbols import LATEX_NAMES, C, M, T, batch_norm_symbol, layer_symbol, order_symbol  # noqa: F401 - doctests

__all__ = ["derive", "Derivation", "extra_order_symbol", "closed_form_growth", "ClosedFormGrowthWarning", "GROWTH_WARNING",
           "CORRECTIONS_ENTRY"]

#: where ``Derivation.corrections`` finds the symbolic O(1/M) corrections, "module:function" imported on first use:
#: they live in meanfield.finite (beyond mean field), which the theory never imports (as predict's finite-width models)
CORRECTIONS_ENTRY = "meanfield.finite.symbolic_normalized:derive_network_corrections"

_STATS = ("P", "alpha", "kappa1", "kappa2", "gram_diag", "gram_offdiag", "m", "s", "lambda_max", "eta_max")
_ORDER_FIELDS = ("q1", "q2", "qn1", "qn2", "qhat1", "qhat2", "qtilde1", "qtilde1_mean", "qtilde2", "qtilde2_same")


def extra_order_symbol(kind: str, layer: int) -> sympy.Symbol:
    """qtilde1_mean / qtilde2_same symbols: :func:`meanfield.spec.symbols.batch_norm_symbol` (kept by this name).

    Example:
        >>> extra_order_symbol("qtilde1_mean", 2)
        qtilde1_mean_2
    """
    return batch_norm_symbol(kind, layer)


def _exact(value: Any, name: str = "value") -> Any:
    """Floats as the exact rational of their shortest repr (2.0 -> 2, 0.1 -> 1/10, 0.1 + 0.2 ->
    30000000000000004/100000000000000000); sympy unchanged.

    Raises:
        InvalidArgument: NaN, an infinity, a complex number or something that is not a number or a sympy
            expression (named ``name``).
    """
    if isinstance(value, sympy.Basic):
        if value.is_number and (value.has(sympy.nan, sympy.oo, -sympy.oo, sympy.zoo) or value.is_real is False):
            raise InvalidArgument(name, value, "a finite real number or a sympy expression")
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating, Fraction)):
        raise InvalidArgument(name, value, "a finite real number (int, float, Fraction) or a sympy expression")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise InvalidArgument(name, value, "a finite real number")
        return sympy.Rational(repr(float(value)))
    if isinstance(value, Fraction):
        return sympy.Rational(value.numerator, value.denominator)
    return sympy.Integer(int(value))


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
        lambda_max_kind: "prediction", "bound" or "prediction if kappa2 > 0" (sign of kappa_2 unknown), decided
            as :func:`meanfield.predict` decides it; lambda_max_bounds: (lo, hi) expressions or None.
        width, outputs: M and C as the statistics have them (the symbols, or the numbers fixed by derive or subs).
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
    width: Any = M
    outputs: Any = C

    # -- transformations (each returns a new Derivation) ----------------------------------------------
    def map(self, fn: Callable[[Any], Any], *, network: Network | None = None) -> "Derivation":
        """Apply ``fn`` to every sympy expression (statistics, leading order, bounds, order parameters).

        The kind of lambda_max is then decided again exactly as :func:`meanfield.predict` decides it, as
        far as the mapped values allow (the sign of kappa_2 once it is a number; the outlier's separation
        from the bulk once M, T, C and the Gram entries are numbers).
        """
        def f(v):
            return fn(v) if isinstance(v, sympy.Basic) else v

        net = self.network if network is None else network
        layers = tuple(p.replace(**{k: f(getattr(p, k)) for k in _ORDER_FIELDS}) for p in self.order.layers)
        order = OrderParameters(self.order.network if network is None else network, f(self.order.samples)
                                if isinstance(self.order.samples, sympy.Basic) else self.order.samples, layers, "sympy")
        values = {k: f(getattr(self, k)) for k in _STATS}
        bounds = None if self.lambda_max_bounds is None else tuple(f(v) for v in self.lambda_max_bounds)
        rules = tuple(sympy.Eq(r.lhs, f(r.rhs), evaluate=False) for r in self.rules)
        kind = self.lambda_max_kind
        leading = {k: f(v) for k, v in self.leading.items()}
        width, outputs = f(self.width), f(self.outputs)
        samples = order.samples if order.samples is not None else T
        notes = self.notes
        if kind != "bound":  # "bound" is final: a normalised output, kappa_2 <= 0, or a buried outlier at this M
            new = _lambda_max_forms(net, samples, outputs, width, values["kappa2"], values["gram_diag"],
                                    values["gram_offdiag"], values["P"], values["s"], leading["gram_diag"],
                                    leading["gram_offdiag"])
            if new[0] != kind:
                kind, values["lambda_max"], bounds, leading["lambda_max"] = new
                values["eta_max"] = 2 / values["lambda_max"]
                notes = _notes(kind)
        return Derivation(net, order, rules, leading=leading, lambda_max_kind=kind, lambda_max_bounds=bounds,
                          notes=notes, width=width, outputs=outputs, **values)

    def _symbols(self) -> dict:
        """name -> symbol of everything ``subs`` accepts: the free symbols of the results, the network's
        parameter symbols (whether or not the results depend on them) and M, T, C."""
        out: set = set(self.free_symbols) | {M, T, C}
        net = self.network
        for v in (*net.sigma_w2, *net.sigma_b2, *net.alphas, net.input_q1, net.input_q2):
            if isinstance(v, sympy.Basic):
                out |= v.free_symbols
        for a in net.activation:
            out |= a.expr.free_symbols - {X}
        return {s.name: s for s in out}

    def _resolve(self, args: tuple, kwargs: dict) -> dict:
        """The substitution {symbol: exact value} of subs/evaluate arguments, every key and value checked."""
        pairs: list = []
        if len(args) == 1 and isinstance(args[0], dict):
            pairs += list(args[0].items())
        elif len(args) == 2:
            pairs.append(args)
        elif args:
            raise InvalidArgument("subs", args, "a dict, an (old, new) pair, or keyword arguments")
        pairs += list(kwargs.items())
        symbols = self._symbols()
        mapping: dict = {}
        for key, value in pairs:
            name = key.name if isinstance(key, sympy.Symbol) else key
            if not isinstance(name, str) or name not in symbols:
                from ..errors import closest
                near = closest(str(name), symbols) if isinstance(name, str) else None
                raise InvalidArgument(str(name), value, "a symbol of this derivation: " + ", ".join(sorted(symbols)),
                                      f"did you mean {near!r}?" if near else None)
            sym = symbols[name]
            mapping[sym] = _check_structural(self.network, sym, _exact(value, name))
        return mapping

    def subs(self, *args: Any, **kwargs: Any) -> "Derivation":
        """Substitute symbols, e.g. ``d.subs(sigma_w2=2, sigma_b2=0)`` or ``d.subs({M: 512})``.

        Floats become exact rationals (0.1 -> 1/10), so results stay exact. Any of the network's
        parameter symbols and M, T, C are accepted, also where the results do not depend on them; the
        kind of lambda_max is decided again as :func:`meanfield.predict` decides it.

        Raises:
            InvalidArgument: an unknown symbol name (the message lists the valid ones), a value that is not
                a finite real number or sympy expression, M or C not a positive integer, T below what the
                network needs, or parameter values the network refuses (e.g. sigma_w2 <= 0).

        Example:
            >>> d = derive(Network(2, "linear", layer_symbol("sigma_w2"), 0))
            >>> d.subs(sigma_w2=3).kappa1      # (qtilde_1^1 qhat_1^0 + qtilde_1^2 qhat_1^1) / alpha = 3 + 3
            6
            >>> derive(Network(1, "relu", layer_symbol("sigma_w2"), 0)).subs(sigma_w2=2).kappa1   # depth 1: no sigma_w2
            1
        """
        mapping = self._resolve(args, kwargs)
        if not mapping:
            return self
        net = _substituted_network(self.network, mapping)
        return self.map(lambda e: e.xreplace(mapping), network=net)

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

        The same numbers as :func:`meanfield.predict` (to rounding): the statistics P, alpha, kappa1,
        kappa2, gram_diag, gram_offdiag, m, s, lambda_max, eta_max, ``leading_*``, and
        ``lambda_max_kind`` ("prediction" or "bound", decided as predict decides it at this width) with
        ``lambda_max_bounds`` ((lo, hi) floats when the kind is "bound", else None). Keyword ``values``
        give numbers to the remaining symbols (``sigma_w2=2``). Unevaluated Gaussian and sphere-law
        expectations take their numeric fast paths, then everything else goes through one ``lambdify``
        with common subexpressions shared, in double precision. For more digits use ``sympy.N`` on an
        expression.

        Raises:
            InvalidArgument: width or outputs not a positive integer (or alpha_l M not whole), samples
                below what the network needs (or not the T the derivation was made for), values that are
                not finite real numbers, symbols left without a value, or statistics that are not finite.

        Example:
            >>> d = derive(Network(3, "relu", 2, 0, outputs=10))
            >>> out = d.evaluate(512, 32)
            >>> round(out["m"], 10), out["lambda_max_kind"]
            (0.0290135397, 'prediction')
        """
        given = {M: width, T: samples, C: self.network.outputs if outputs is None else outputs}
        fixed = {M: self.width, T: self.order.samples, C: self.outputs}
        numbers = {}
        for sym, value in given.items():
            value = _check_structural(self.network, sym, _exact(value, _STRUCTURAL[sym]))
            have = fixed[sym]
            if isinstance(have, sympy.Basic) and have.is_number and have != value:
                raise InvalidArgument(_STRUCTURAL[sym], value, f"{have}, the value this derivation was made for")
            numbers[sym] = value
        mapping = self._resolve((), values)
        mapping.update(numbers)
        Mn, Tn, Cn = numbers[M], numbers[T], numbers[C]
        names = [k for k in _STATS if k not in ("lambda_max", "eta_max")] + [f"leading_{k}" for k in self.leading
                                                                             if k != "lambda_max"]
        exprs = [getattr(self, k) for k in _STATS if k not in ("lambda_max", "eta_max")]
        exprs += [v for k, v in self.leading.items() if k != "lambda_max"]
        exprs = [sympy.sympify(e).xreplace(mapping) for e in exprs]  # xreplace: no re-simplification
        left = set().union(*(e.free_symbols for e in exprs))
        if left:
            raise InvalidArgument("values", values, "numbers for every free symbol",
                                  f"missing: {', '.join(sorted(map(str, left)))}")
        out = dict(zip(names, _numbers(exprs, values)))
        # lambda_max exactly as predict() chooses it, from these numbers (the chi-square factor included)
        F = sympy.Float
        kind, lam, bounds, lam_lead = _lambda_max_forms(
            self.network, Tn, Cn, Mn, F(out["kappa2"]), F(out["gram_diag"]), F(out["gram_offdiag"]), F(out["P"]),
            F(out["s"]), F(out["leading_gram_diag"]), F(out["leading_gram_offdiag"]))
        lam_, lead_ = _numbers([lam, lam_lead], values)
        out["lambda_max"], out["eta_max"], out["leading_lambda_max"] = lam_, 2 / lam_, lead_
        out["lambda_max_kind"] = kind
        out["lambda_max_bounds"] = None if bounds is None else tuple(_numbers(list(bounds), values))
        bad = [k for k, v in out.items() if isinstance(v, float) and not math.isfinite(v)]
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
    @functools.cached_property
    def corrections(self) -> Any:
        """The O(1/M) corrections of E G_tt, E G_ts, m, s, kappa_1, kappa_2 as sympy recursions (numeric parameters):
        :func:`meanfield.finite.symbolic_normalized.derive_network_corrections` of this network, reached through
        :data:`CORRECTIONS_ENTRY`, for plain networks, centre-only or full batch norm on the output, layer norms on
        any hidden layers, batch norms (full or centre-only) on any hidden layers with layer norms below or above them,
        each possibly with a centre-only or full batch norm on the output (what that path does not derive, e.g. s
        under a hidden and an output batch norm for T > 64, is named in ``.missing``); ``.evaluate(M, T)`` gives the numbers of
        the numeric 1/M path it is written on (predict(..., finite_width="1/M")'s).

        Raises:
            InvalidArgument: symbolic parameters, or a network whose O(1/M) corrections are not derived (e.g. an
                activation with unknown kinks on a batch-normalized layer): the message names it.

        Example:
            >>> c = derive(Network(2, "relu", 2, 0.1)).corrections
            >>> c.gram_diag
            G_tt_mf + dTheta_2_tt/T
            >>> derive(Network(2, "relu", 2, 0.1, norms=["batch-center:last"])).corrections.gram_offdiag
            G_ts_mf - (-dTheta_2_ts + dTheta_2_tt)/T**2
        """
        module, function = CORRECTIONS_ENTRY.split(":")
        return getattr(importlib.import_module(module), function)(self.network)

    @functools.cached_property
    def structure(self) -> Structure:
        """The statistics in the order-parameter symbols, the per-layer maps, closed forms on request.

        kappa_1 = sum_l (alpha_{l-1}/alpha) qtilde_1^l qhat_1^{l-1} (+ the batch-mean terms), the Gram entries
        in kappa_1, kappa_2 and the bias sums, m, s, lambda_max in the Gram entries (and to leading order in
        the kappa's); ``structure.closed_form(name)`` equals this derivation's field (see
        :mod:`meanfield.theory.structure`).

        Example:
            >>> d = derive(Network(3, "relu", layer_symbol("sigma_w2"), 0))
            >>> d.structure.statistics["m"]
            C*T*gram_diag/P
            >>> d.structure.leading["m"]
            C*kappa1/M
            >>> d.structure.layers[0].dense
            Lambda((qhat1_0, qhat2_0), (qhat1_0*sigma_w2, qhat2_0*sigma_w2))
        """
        samples = self.order.samples if self.order.samples is not None else T

        def rule(gd: Any, go: Any, P: Any, s: Any, gd_lead: Any, go_lead: Any) -> tuple:
            kind, lam, bounds, lead = _lambda_max_forms(self.network, samples, self.outputs, self.width, self.kappa2,
                                                        gd, go, P, s, gd_lead, go_lead)
            if kind == "prediction" and self.lambda_max_kind == "bound":
                # decided on the numbers (the outlier does not clear the bulk's spread at this width), which the
                # Gram-entry symbols cannot show: the bound's form
                top = sympy.Max(gd + (samples - 1) * go, gd - go, evaluate=False)
                kind, lam, bounds = "bound", top, (top, sympy.sqrt(P * s, evaluate=False))
            return kind, lam, bounds, lead

        return structure_of(self.order, width=self.width, outputs=self.outputs, lambda_max=rule)

    def table(self, width: int = 110) -> str:
        """The closed forms: the network, the per-layer order parameters, kappa's and statistics (long ones cut).

        ``str(d)`` shows :attr:`structure` instead, which stays short at any depth.
        """
        def short(v):
            if isinstance(v, sympy.Basic) and _too_long(v, width):
                return f"... ({sympy.count_ops(v)} operations; see .structure.closed_form)"
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
        head = f"Derivation: {self.network.describe()}  (closed forms: .table(), .structure.closed_form(name))"
        body = self.structure.table().split("\n", 1)[1]
        return "\n".join([head, body] + [f"  note: {n}" for n in self.notes])

    def latex_lines(self) -> list[str]:
        """One LaTeX equation per statistic (in the order parameters), leading-order statistic and layer rule."""
        return self.structure.latex_lines()

    def _repr_latex_(self) -> str:
        return "$$" + self._latex() + "$$"

    def _latex(self, printer: Any = None, **kwargs: Any) -> str:
        return "\\begin{aligned}" + r" \\ ".join(self.latex_lines()) + r"\end{aligned}"


def _too_long(expr: sympy.Basic, width: int) -> bool:
    """More tree nodes than a line can show (str() of a long nested closed form takes minutes: never call it)."""
    n = 0
    for _ in sympy.preorder_traversal(expr):
        n += 1
        if n > width:
            return True
    return False


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
_STRUCTURAL = {M: "width", T: "samples", C: "outputs"}


def _check_structural(net: Network, sym: Any, value: Any) -> Any:
    """A number given for M, T or C must be what predict() accepts: M, C >= 1 (alpha_l M whole), T >= what
    the network's batch norms need; parameters are checked by the Network they are substituted into."""
    if sym not in _STRUCTURAL or not (isinstance(value, sympy.Basic) and value.is_number):
        return value
    name = _STRUCTURAL[sym]
    if not value.is_Integer:
        raise InvalidArgument(name, value, "a positive integer")
    if sym == T:
        check_samples(net, int(value), purpose="fisher")
    else:
        check_int(name, int(value), minimum=1)
        if sym == M:
            net.widths(int(value))
    return value


def _substituted_network(net: Network, mapping: dict) -> Network:
    """The network with its parameter symbols substituted (its validation refuses e.g. sigma_w2 <= 0)."""
    def sub(v):
        return v.xreplace(mapping) if isinstance(v, sympy.Basic) else v

    params = (*net.sigma_w2, *net.sigma_b2, *net.alphas, net.input_q1, net.input_q2)
    if not any(isinstance(v, sympy.Basic) and v.free_symbols & set(mapping) for v in params):
        return net
    return net.with_(sigma_w2=tuple(map(sub, net.sigma_w2)), sigma_b2=tuple(map(sub, net.sigma_b2)),
                     alphas=tuple(map(sub, net.alphas)), input_q1=sub(net.input_q1), input_q2=sub(net.input_q2),
                     activation=net.activation if net.depth > 1 else net.activation[0])


def _numbers(exprs: list, values: Any = None) -> list[float]:
    """Floats of number-valued expressions in double precision: expectations through their numeric fast
    paths (bottom-up), then every distinct node once (sympy shares equal subtrees, so a nested closed form
    costs its number of distinct nodes; lambdify's cse would first order number-valued terms by evaluating
    each in high precision, minutes for a depth-4 closed form)."""
    exprs = [evaluate_expectations(sympy.sympify(e)) for e in exprs]
    cache: dict = {}
    out = []
    for e in exprs:
        try:
            with np.errstate(all="raise"):
                out.append(float(_float_of(e, cache)))
        except (FloatingPointError, ZeroDivisionError, OverflowError, ValueError, TypeError) as err:
            # an intermediate node can leave double range while the value does not (a tiny input_q2 read as
            # an exact rational has a ~1e191 denominator): the whole expression in mpmath decides
            v = _mp_float(e)
            if v is None:
                raise InvalidArgument("values", values, "values where the statistics are finite", str(err)) from None
            out.append(v)
    return out


def _mp_float(e: sympy.Basic) -> float | None:
    """float of e evaluated by sympy at 30 digits, or None where that is not a finite real number."""
    try:
        v = complex(sympy.N(e, 30))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return v.real if not v.imag and math.isfinite(v.real) else None


def _float_of(e: sympy.Basic, cache: dict) -> float:
    """The double-precision value of a number-valued expression node, children first, each node once."""
    v = cache.get(e)
    if v is not None:
        return v
    if e.is_Number or e.is_NumberSymbol:
        v = float(e)
    elif e.is_Add:
        v = math.fsum(_float_of(a, cache) for a in e.args)
    elif e.is_Mul:
        v = 1.0
        for a in e.args:
            v *= _float_of(a, cache)
    elif e.is_Pow:
        base, exp = _float_of(e.args[0], cache), _float_of(e.args[1], cache)
        if e.args[1].is_Integer:
            v = base ** int(e.args[1])      # exact powers of negatives; 0**-n raises ZeroDivisionError
        else:
            v = math.pow(base, exp)        # ValueError for a negative base (no complex numbers)
    else:
        args = [_float_of(a, cache) for a in e.args]
        name = e.func.__name__
        if isinstance(e, ExpectedMaxInverseChi2):
            v = ExpectedMaxInverseChi2._imp_(*args)
        elif name in ("Max", "max_"):
            v = max(args)
        elif name == "Min":
            v = min(args)
        elif name == "Abs":
            v = abs(args[0])
        elif name == "Heaviside":
            v = float(_heaviside(args[0], *args[1:]))
        elif name in _MATH:
            v = getattr(math, _MATH[name])(*args)
        else:  # anything else: sympy on the evaluated arguments
            v = complex(sympy.N(e.func(*[sympy.Float(a, 17) for a in args]), 17))
            if v.imag:
                raise ValueError(f"{e.func} is not real here")
            v = v.real
    if not math.isfinite(v):
        raise ValueError(f"{e.func} is not finite here")
    cache[e] = v
    return v


_MATH = {name: name for name in ("sqrt", "exp", "log", "sin", "cos", "tan", "sinh", "cosh", "tanh", "erf", "erfc",
                                 "gamma", "atan2")}
_MATH.update(asin="asin", acos="acos", atan="atan", asinh="asinh", acosh="acosh", atanh="atanh", loggamma="lgamma")


def _number(value: Any) -> float | None:
    """float of a number-valued expression (numerically: sympy's assumption queries on nested closed forms
    can take tens of seconds), None while free symbols remain."""
    value = sympy.sympify(value)
    if value.free_symbols:
        return None
    return _numbers([value])[0]


def _is_number(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) or (isinstance(v, sympy.Basic) and v.is_number) for v in values)


def _lambda_max_forms(net: Network, Tsym: Any, Csym: Any, Msym: Any, kappa2: Any, gd: Any, go: Any, P: Any, s: Any,
                      gd_lead: Any, go_lead: Any) -> tuple:
    """(kind, lambda_max, bounds, leading lambda_max), chosen exactly as :func:`meanfield.predict` chooses them.

    predict's lambda_max is max(outlier, bulk) of E G, outlier = gram_diag + (T-1) gram_offdiag and bulk =
    gram_diag - gram_offdiag, raised for full batch norm on the output to gram_diag (T-3)/(T-2) E[max_k T /
    chi^2_{T-1,k}]. A batch norm on the output centres each output over the batch, so the rows of G sum to
    zero: the outlier is 0 and the bulk is the top eigenvalue of E G; under full batch norm the chi-square
    term exceeds it (E[max] >= T/(T-3), so it is >= gram_diag T/(T-2) > bulk = gram_diag T/(T-1)).
    Without normalization on the output: kind "prediction" (lambda_max = the outlier, the top eigenvalue of
    E G when gram_offdiag > 0) when kappa_2 > 1e-12 and, where M, T, C and the Gram entries are numbers, the
    outlier clears the bulk's spread; "bound" with Max(outlier, bulk) otherwise; while the sign of kappa_2
    is unknown, Max(outlier, bulk) with kind "prediction if kappa2 > 0".
    """
    outlier, bulk = gd + (Tsym - 1) * go, gd - go
    outlier_l, bulk_l = gd_lead + (Tsym - 1) * go_lead, gd_lead - go_lead
    top = sympy.Max(outlier, bulk, evaluate=False)
    top_l = sympy.Max(outlier_l, bulk_l, evaluate=False)
    hi = sympy.sqrt(P * s, evaluate=False)
    last = net.norm_at(net.depth)
    if isinstance(last, BatchNorm):
        lam = bulk if last.center_only else gd * (Tsym - 3) / (Tsym - 2) * ExpectedMaxInverseChi2(Tsym, Csym)
        return "bound", lam, (lam, hi), bulk_l
    if last is not None:
        return "bound", top, (top, hi), top_l
    k2 = _number(kappa2)
    if k2 is None:
        return _CONDITIONAL, top, None, top_l
    lead = outlier_l if k2 > 0 else bulk_l   # leading gram_offdiag = alpha M kappa_2 / T: its sign is kappa_2's
    if _is_number(Msym, Tsym, Csym) and not (sympy.sympify(gd).free_symbols or sympy.sympify(go).free_symbols):
        gdf, gof = _numbers([gd, go])
        kind = lambda_kind(net, k2, Arithmetic("float"), gdf, gof, int(Msym), int(Tsym), outputs=int(Csym))
    else:
        kind = lambda_kind(net, k2, Arithmetic("float"))
    if kind == "bound":
        return "bound", top, (top, hi), lead
    return "prediction", outlier, None, lead


def _lambda_max(net: Network, kappa2: Any, gd: Any, go: Any, P: Any, s: Any, Tsym: Any, outputs: Any = C,
                width: Any = M, leading: bool = False) -> tuple:
    """(kind, lambda_max, bounds) of :func:`_lambda_max_forms` for given Gram entries (e.g. their symbols);
    with ``leading`` the leading-order form (predict's: max(outlier, bulk), no chi-square factor)."""
    kind, lam, bounds, lead = _lambda_max_forms(net, Tsym, outputs, width, kappa2, gd, go, P, s, gd, go)
    return (kind, lead, None) if leading else (kind, lam, bounds)


def _notes(kind: str) -> tuple:
    notes = []
    if kind == "bound":
        notes.append("lambda_max is only bounded here (the top eigenvalue is the bulk edge): lambda_max holds the "
                     "lower bound predict() gives (the top eigenvalue of E G, a lower bound of E lambda_max by "
                     "Jensen, with full batch norm on the output times E[max_k T/chi^2_(T-1,k)]); sqrt(P s) bounds "
                     "it above")
    elif kind == _CONDITIONAL:
        notes.append("lambda_max = Max(outlier gram_diag + (T-1) gram_offdiag, bulk gram_diag - gram_offdiag): the "
                     "outlier is a prediction when kappa_2 > 0; otherwise only a lower bound (resolved by subs)")
    else:
        notes.append("lambda_max is the outlier gram_diag + (T-1) gram_offdiag (kappa_2 > 0); at a given width "
                     "evaluate() and subs() call it a bound, as predict() does, where it does not clear the bulk's "
                     "finite-width spread")
    notes.append("finite width: exact P, bias terms, exact in T; O(1/M) fluctuation corrections not included")
    return tuple(notes)


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
        bmap = backward_map(ctx, net.norm_at(l), laws[l], phi, order_symbol("q1", l), order_symbol("q2", l), Tsym)
        new = (*apply_backward(bmap, d_eq, d_ne), *apply_backward(bmap, o_eq, o_ne))
        syms = (order_symbol("qtilde1", l), extra_order_symbol("qtilde1_mean", l), extra_order_symbol("qtilde2_same", l),
                order_symbol("qtilde2", l))
        for s_, v in zip(syms, new):
            if v != 0 or l == L:
                out.append(sympy.Eq(s_, v, evaluate=False))
        up = tuple(s_ if v != 0 else sympy.S.Zero for s_, v in zip(syms, new))
    return tuple(out)


# -- public ----------------------------------------------------------------------------------------------------------


#: derive warns (ClosedFormGrowthWarning) when closed_form_growth exceeds this: the ReLU nest at depth 5 (81)
GROWTH_WARNING = 50


class ClosedFormGrowthWarning(UserWarning):
    """derive's closed form will be very large: its size grows geometrically with the network's depth."""


def closed_form_growth(net: Network) -> int:
    """How many copies of the input correlation the closed form of the last layer nests: the product over
    layers of how often q_2 occurs in that layer's cross moment I_phi[q_1, q_2] (1 where no closed form
    exists, which stays one unevaluated expectation, and after a batch norm, whose sphere law resets the
    correlation to a constant).

    Example:
        >>> closed_form_growth(Network(3, "relu", 2, 0)), closed_form_growth(Network(3, "linear", 1, 0))
        (9, 1)
        >>> closed_form_growth(Network(4, "x + x**3/3", 1.5, 0.1))   # exact rationals: no growth
        1
    """
    q1, q2 = sympy.symbols("q1 q2", positive=True)
    total = 1
    for layer in range(1, net.depth):
        if isinstance(net.norm_at(layer), BatchNorm):
            total = 1
            continue
        moment = cross_moment(net.phi(layer), q1, q2)
        if moment.is_polynomial(q1, q2):
            # a polynomial moment of exact numbers collapses to one rational per layer; with symbols its
            # degree multiplies from layer to layer
            factor = sympy.Poly(moment, q1, q2).total_degree() if net.is_symbolic else 1
        else:
            factor = sum(1 for node in sympy.preorder_traversal(moment) if node == q2)
        total *= max(1, factor)
    return total


def derive(net: Network, *, width: Any = None, samples: Any = None, outputs: Any = None) -> Derivation:
    """The theory of ``net`` as sympy: order parameters per layer, kappa's, Gram entries, m, s, lambda_max.

    Float parameters become exact rationals (0.1 -> 1/10); symbols stay symbols. The statistics are
    written in the symbols M, T, C of :mod:`meanfield.spec.symbols` unless ``width``, ``samples`` or
    ``outputs`` fix them. The formulas are those of :func:`meanfield.predict` (finite-width
    expectations) and ``leading`` (leading order), and ``evaluate(M, T)`` gives predict's numbers.
    ``lambda_max`` is chosen as predict chooses it: the outlier gram_diag + (T-1) gram_offdiag of E G
    (kind "prediction", kappa_2 > 0); Max(outlier, bulk gram_diag - gram_offdiag) while the sign of
    kappa_2 is unknown (kind "prediction if kappa2 > 0") or when kappa_2 <= 0 (kind "bound"); with
    batch norm on the output (kind "bound") the bulk value, and under a full batch norm
    gram_diag (T-3)/(T-2) E[max_k T/chi^2_{T-1,k}], the expectation an unevaluated
    :class:`~meanfield.theory.statistics.ExpectedMaxInverseChi2` (T/(T-3) for C = 1).

    Args:
        net: the network (parameters may be sympy symbols).
        width, samples, outputs: fix M, T or C instead of keeping the symbols (positive integers; T at
            least what the network's batch norms need).

    Returns:
        :class:`Derivation`.

    Raises:
        InvalidArgument: ``net`` not a Network; width, samples or outputs not valid for it.

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
    Tsym = T if samples is None else _exact(samples, "samples")
    if samples is not None and not (isinstance(Tsym, sympy.Basic) and not Tsym.is_number):
        if not Tsym.is_Integer:
            raise InvalidArgument("samples", samples, "a positive integer or a sympy symbol")
        check_samples(exact, int(Tsym), purpose="fisher")
    Msym = M if width is None else _check_structural(exact, M, _exact(width, "width"))
    Csym = C if outputs is None else _check_structural(exact, C, _exact(outputs, "outputs"))
    growth = closed_form_growth(exact)
    if growth > GROWTH_WARNING:
        warnings.warn(f"derive: the closed form of this network nests {growth} copies of the input correlation "
                      "(arccos-type moments of kinked activations repeat their argument 3 times a layer), so its "
                      "size and time grow geometrically with depth (ReLU, measured: 2.5 s at depth 4, 17 s at 5, "
                      "220 s at 6). For numbers use meanfield.predict (the same values); for the formulas in "
                      "order-parameter symbols use meanfield.theory.structure.structure(net), which does not "
                      "substitute", ClosedFormGrowthWarning, stacklevel=2)
    op = order_parameters(exact, Tsym, symbolic=True)
    ctx = Arithmetic("sympy")
    st = gram_statistics(op, Msym, Tsym, Csym, ctx)
    kind, lam, bounds, lam_lead = _lambda_max_forms(exact, Tsym, Csym, Msym, st["kappa2"], st["gd"], st["go"], st["P"],
                                                    st["s"], st["gd_lead"], st["go_lead"])
    leading = {"P": st["P_lead"], "m": st["m_l"], "s": st["s_l"], "lambda_max": lam_lead, "gram_diag": st["gd_lead"],
               "gram_offdiag": st["go_lead"]}
    return Derivation(exact, op, _rules(exact, Tsym), st["P"], st["alpha"], st["kappa1"], st["kappa2"], st["gd"],
                      st["go"], st["m"], st["s"], lam, 2 / lam, leading, kind, bounds, _notes(kind), Msym, Csym)
