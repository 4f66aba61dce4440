"""The structure of a derivation: statistics in the order-parameter symbols, the per-layer maps, closed forms on request.

The closed forms of :func:`meanfield.derive` nest every layer inside the next (lambda_max of a depth-4
network is tens of thousands of characters). The same statistics read in three short levels, each
computed by the code that computes the numbers:

    kappa_1 = sum_l (alpha_{l-1}/alpha) (qtilde_1^l qhat_1^{l-1} + qtilde_1mean^l qhat_2^{l-1})   (the fold's sums)
    E G_tt  = (alpha M kappa_1 + sum_l (qtilde_1^l + qtilde_1mean^l)) / T                       (+1: the biases)
    m = C T E G_tt / P,   lambda_max = E G_tt + (T - 1) E G_tt',   ...           (:mod:`.statistics`)

and each order parameter follows from the one below by a layer map: dense
(qhat^{l-1} -> q^l), normalization (q^l -> the law phi sees), activation (q^l -> qhat^l) and
backward (qtilde^{l+1} -> qtilde^l), obtained by calling the layer rules of
:mod:`meanfield.theory.recursions` on symbols. :meth:`Structure.closed_form` substitutes everything back
(optionally with common subexpressions pulled out by :func:`sympy.cse`).

Example:
    >>> from meanfield.spec.network import Network
    >>> from meanfield.theory.recursions import order_parameters
    >>> s = structure(order_parameters(Network(3, "relu", 2, 0), symbolic=True))
    >>> s.statistics["kappa1"]
    (qhat1_1*qtilde1_2 + qhat1_2*qtilde1_3 + qtilde1_1)/alpha
    >>> s.leading["m"]
    C*kappa1/M
    >>> s.closed_form("kappa1")
    3/2
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

import sympy

from ..errors import InvalidArgument, check_choice
from ..spec.network import BatchNorm, LayerNorm, Network
from ..spec.symbols import (BATCH_NORM_SUMS, LATEX_NAMES, C, M, T, alpha as ALPHA, batch_norm_symbol, kappa1 as KAPPA1,
                            kappa2 as KAPPA2, order_symbol)
from ..spec.symbols import layer_symbol  # noqa: F401 - the doctests' namespace
from .backend import Arithmetic
from .recursions import (OrderParameters, activation_forward, alpha_normaliser, apply_backward, backward_map,
                         dense_forward, norm_forward)
from .statistics import gram_statistics

__all__ = ["Structure", "LayerMaps", "ClosedForm", "structure", "layer_maps", "symbolic_order",
           "order_parameter_symbol", "statistic_symbol", "STATISTICS", "ORDER_FIELDS"]

#: The statistics of a derivation, in the order they are defined (each uses only those before it).
STATISTICS = ("alpha", "kappa1", "kappa2", "gram_diag", "gram_offdiag", "P", "m", "s", "lambda_max", "eta_max")
#: The order parameters of one layer, in the order of the recursions.
ORDER_FIELDS = ("q1", "q2", "qhat1", "qhat2", "qtilde1", "qtilde1_mean", "qtilde2_same", "qtilde2")
_LEADING = ("P", "gram_diag", "gram_offdiag", "m", "s", "lambda_max")

_STAT_LATEX = {"P": "P", "gram_diag": r"\bar{G}_{tt}", "gram_offdiag": r"\bar{G}_{tt'}", "m": "m", "s": "s",
               "lambda_max": r"\lambda_{\max}", "eta_max": r"\eta_{\max}"}
_STAT_ASSUMPTIONS = {"gram_offdiag": {"real": True}}


def order_parameter_symbol(kind: str, layer: int) -> sympy.Symbol:
    """The symbol of an order parameter: those of :func:`~meanfield.spec.symbols.order_symbol` and the two
    batch-norm sums qtilde1_mean, qtilde2_same (registered in ``LATEX_NAMES`` here).

    Example:
        >>> order_parameter_symbol("qtilde2_same", 2), order_parameter_symbol("qhat1", 0)
        (qtilde2_same_2, qhat1_0)
    """
    check_choice("kind", kind, ORDER_FIELDS)
    return batch_norm_symbol(kind, layer) if kind in BATCH_NORM_SUMS else order_symbol(kind, layer)


def statistic_symbol(name: str) -> sympy.Symbol:
    """The symbol standing for a statistic inside the others (kappa1 and alpha are those of :mod:`meanfield.spec.symbols`).

    Example:
        >>> statistic_symbol("gram_diag"), statistic_symbol("kappa1")
        (gram_diag, kappa1)
    """
    check_choice("name", name, STATISTICS)
    fixed = {"alpha": ALPHA, "kappa1": KAPPA1, "kappa2": KAPPA2}
    if name in fixed:
        return fixed[name]
    sym = sympy.Symbol(name, **_STAT_ASSUMPTIONS.get(name, {"positive": True}))
    LATEX_NAMES.setdefault(sym, _STAT_LATEX[name])
    return sym


def _nonzero(value: Any) -> bool:
    """Not None and not structurally 0 (the sums a layer kind does not have are exact zeros; ``is_zero``
    would ask sympy's assumptions about long nested closed forms, which evaluates them: seconds each)."""
    return value is not None and not (value == 0)


def symbolic_order(order: OrderParameters) -> OrderParameters:
    """The order parameters with every nonzero value of layers l >= 1 replaced by its symbol (q1_l, qhat1_l, ...).

    Fed to the statistics code, it gives the kappa's and Gram entries *in terms of the order parameters*.

    Example:
        >>> from meanfield.theory.recursions import order_parameters
        >>> symbolic_order(order_parameters(Network(2, "relu", 2, 0)))[1].qtilde2
        qtilde2_1
    """
    layers = [order.layers[0]]  # the input statistics stay numbers (qhat_1^0 = 1 reads better as 1)
    for p in order.layers[1:]:
        changes = {k: order_parameter_symbol(k, p.layer) for k in ORDER_FIELDS if _nonzero(getattr(p, k))}
        layers.append(p.replace(**changes))
    return OrderParameters(order.network, order.samples, tuple(layers), "sympy")


# -- the per-layer maps -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerMaps:
    """The rules of layer l as sympy maps between order-parameter symbols (``sympy.Lambda``; None where absent).

    Attributes:
        layer: l (1..L).
        norm: "none", "batch", "batch-center" or "layer"; law: "gaussian" or "sphere" (what phi sees).
        dense: (qhat_1^{l-1}, qhat_2^{l-1}) -> (q_1^l, q_2^l).
        normalise: (q_1^l, q_2^l) -> the second moments of the normalised unit (None without normalization).
        activation: (q_1^l, q_2^l) -> (qhat_1^l, qhat_2^l) through the normalization (None at l = L).
        backward: the nonzero backward sums of layer l+1 (none at l = L: the output's state (1, 0, 0, 1)) ->
            (qtilde_1^l, qtilde_1mean^l, qtilde_2same^l, qtilde_2^l), the weight W^{l+1} included.
        equations: the same as equations ``symbol = expression`` (zero sums left out below the output).
    """

    layer: int
    norm: str
    law: str
    dense: sympy.Lambda
    normalise: sympy.Lambda | None
    activation: sympy.Lambda | None
    backward: sympy.Lambda
    equations: tuple


def layer_maps(net: Network, samples: Any = T) -> tuple[LayerMaps, ...]:
    """The maps of every layer of ``net``: the rules of :mod:`.recursions` called on order-parameter symbols.

    Example:
        >>> maps = layer_maps(Network(2, "relu", 2, 0))
        >>> maps[0].dense
        Lambda((qhat1_0, qhat2_0), (2*qhat1_0, 2*qhat2_0))
        >>> maps[0].activation(2, 0)                      # E[relu^2] = q/2, I_relu[2, 0] = 1/pi
        (1, 1/pi)
        >>> maps[0].equations[-2:]
        (Eq(qtilde1_1, qtilde1_2), Eq(qtilde2_1, qtilde2_2*(pi - acos(q2_1/q1_1))/pi))
    """
    ctx = Arithmetic("sympy")
    L = net.depth
    sym = order_parameter_symbol
    sw = [ctx.num(v) for v in net.sigma_w2]
    sb = [ctx.num(v) for v in net.sigma_b2]
    forward, laws = {}, {}
    for l in range(1, L + 1):
        h1, h2 = sym("qhat1", l - 1), sym("qhat2", l - 1)
        q1s, q2s = sym("q1", l), sym("q2", l)
        dense = sympy.Lambda((h1, h2), sympy.Tuple(*dense_forward(ctx, h1, h2, sw[l - 1], sb[l - 1])))
        norm = net.norm_at(l)
        law = norm_forward(ctx, norm, q1s, q2s, samples, l)
        laws[l] = law
        normalise = None if norm is None else sympy.Lambda((q1s, q2s), sympy.Tuple(law.q1, law.q2))
        act = None
        eqs = [sympy.Eq(q1s, dense.expr[0], evaluate=False), sympy.Eq(q2s, dense.expr[1], evaluate=False)]
        if l < L:
            act = sympy.Lambda((q1s, q2s), sympy.Tuple(*activation_forward(ctx, law, net.phi(l))))
            eqs += [sympy.Eq(sym("qhat1", l), act.expr[0], evaluate=False),
                    sympy.Eq(sym("qhat2", l), act.expr[1], evaluate=False)]
        kind = "none" if norm is None else (norm.kind if isinstance(norm, BatchNorm) else "layer")
        forward[l] = (kind, law.kind, dense, normalise, act, eqs)
    # backward, from the output's state (1, 0, 0, 1): the same fold as recursions.order_parameters
    out: dict[int, LayerMaps] = {}
    names = ("qtilde1", "qtilde1_mean", "qtilde2_same", "qtilde2")
    up: tuple = (sympy.S.One, sympy.S.Zero, sympy.S.Zero, sympy.S.One)
    variables: tuple = ()
    for l in range(L, 0, -1):
        d_eq, d_ne, o_eq, o_ne = up
        if l < L:
            d_eq, d_ne, o_eq, o_ne = (sw[l] * x for x in up)
        phi = net.phi(l) if l < L else None
        bmap = backward_map(ctx, net.norm_at(l), laws[l], phi, sym("q1", l), sym("q2", l), samples)
        new = (*apply_backward(bmap, d_eq, d_ne), *apply_backward(bmap, o_eq, o_ne))
        syms = tuple(sym(n, l) for n in names)
        backward = sympy.Lambda(variables, sympy.Tuple(*new))
        eqs = [sympy.Eq(s_, v, evaluate=False) for s_, v in zip(syms, new) if v != 0 or l == L]
        norm_kind, law_kind, dense, normalise, act, fwd = forward[l]
        out[l] = LayerMaps(l, norm_kind, law_kind, dense, normalise, act, backward, tuple(fwd + eqs))
        up = tuple(s_ if v != 0 else sympy.S.Zero for s_, v in zip(syms, new))
        variables = tuple(s_ for s_, v in zip(syms, new) if v != 0)
    return tuple(out[l] for l in range(1, L + 1))


# -- the statistics in the order parameters ------------------------------------------------------------------------


class _AlphaAsSymbol:
    """The network as the statistics code reads it, with alpha the symbol (so P ~ alpha M^2 reads as such)."""

    alpha = ALPHA

    def __init__(self, net: Network):
        self._net = net
        self.alphas = tuple(Arithmetic("sympy").num(a) for a in net.alphas)  # exact, so alpha stays the symbol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._net, name)


class _GramLevel:
    """Order parameters one level up, for :func:`~.statistics.gram_statistics`: the Gram entries as symbols and
    their leading order alpha M kappa / T (the definition of kappa), so m, s, lambda_max come out in them."""

    def __init__(self, net: Any, gd: Any, go: Any, lead: tuple, kappas: tuple):
        self.network, self._g, self._lead, self._kappas = net, (gd, go), lead, kappas

    def gram_layers(self, width: Any = None, *, bias: bool = True) -> tuple:
        return (self._lead,) if width is None else (self._g,)

    def kappas(self) -> tuple:
        return self._kappas


class ClosedForm(NamedTuple):
    """A closed form with common subexpressions pulled out: ``expr`` after the ``replacements`` (x0 = ..., ...)."""

    replacements: tuple
    expr: Any

    def __str__(self) -> str:
        return "\n".join([f"{s} = {v}" for s, v in self.replacements] + [str(self.expr)])

    def _latex(self, printer: Any = None, **kwargs: Any) -> str:
        from ..printing import latex
        rows = [f"{latex(s)} &= {latex(v)}" for s, v in self.replacements] + [r"&\phantom{=}" + latex(self.expr)]
        return "\\begin{aligned}" + r" \\ ".join(rows) + r"\end{aligned}"

    def _repr_latex_(self) -> str:
        return "$$" + self._latex() + "$$"


@dataclass(frozen=True, eq=False)
class Structure:
    """A derivation written level by level: statistics in the order-parameter symbols, layer maps, closed forms.

    Attributes:
        network: the network; samples: T (a symbol or a number).
        statistics: name -> expression (names :data:`STATISTICS`); kappa1, kappa2 in the order-parameter
            symbols, each later entry in the symbols of earlier ones (:func:`statistic_symbol`), M, T and C.
        leading: name -> leading order in 1/M ("P", "gram_diag", "gram_offdiag", "m", "s", "lambda_max"), in kappa's.
        layers: one :class:`LayerMaps` per layer.
        order_parameters: order-parameter symbol -> its closed form (nonzero ones; layer 0 = the inputs).
        lambda_max_kind, lambda_max_bounds: as in :class:`~meanfield.theory.derivation.Derivation`, in these symbols.
    """

    network: Network
    samples: Any
    statistics: Mapping[str, Any]
    leading: Mapping[str, Any]
    layers: tuple
    order_parameters: Mapping[sympy.Symbol, Any]
    lambda_max_kind: str
    lambda_max_bounds: tuple | None = None

    @property
    def definitions(self) -> dict:
        """statistic symbol -> its expression one level down (what :meth:`expanded` substitutes)."""
        return {statistic_symbol(k): v for k, v in self.statistics.items()}

    def _expression(self, name: str) -> Any:
        names = list(STATISTICS) + [f"leading_{k}" for k in _LEADING]
        check_choice("name", name, names)
        return self.leading[name[8:]] if name.startswith("leading_") else self.statistics[name]

    def expanded(self, name: str) -> Any:
        """The statistic ``name`` ("m", "leading_m", ...) in the order-parameter symbols only (M, T, C kept).

        Example:
            >>> from meanfield.theory.recursions import order_parameters
            >>> s = structure(order_parameters(Network(2, "linear", 1, 0), symbolic=True))
            >>> s.expanded("leading_m")
            C*(qhat1_1*qtilde1_2 + qtilde1_1)/M
        """
        expr = sympy.sympify(self._expression(name))
        definitions = self.definitions
        for _ in range(len(STATISTICS) + 1):  # a chain of definitions at most this long
            if not expr.free_symbols & definitions.keys():
                break
            expr = expr.xreplace(definitions)
        return expr

    def closed_form(self, name: str, cse: bool = False) -> Any:
        """The statistic ``name`` with every order parameter substituted: equal to the Derivation's field.

        Args:
            name: one of :data:`STATISTICS`, or "leading_" + one of the leading-order names.
            cse: pull out common subexpressions (:func:`sympy.cse`): a :class:`ClosedForm`.

        Example:
            >>> from meanfield.theory.recursions import order_parameters
            >>> s = structure(order_parameters(Network(2, "relu", layer_symbol("sigma_w2"), 0), symbolic=True))
            >>> s.closed_form("kappa1")                   # qtilde_1^1 qhat_1^0 + qtilde_1^2 qhat_1^1 = sw/2 + sw/2
            sigma_w2
            >>> print(s.closed_form("leading_s", cse=True))     # x0, x1, ...: common subexpressions
            x0 = M**2
            x1 = sigma_w2**2*x0/T
            C*(x1*(T - 1)/(4*pi**2) + x1)/x0
        """
        expr = self.expanded(name).xreplace(dict(self.order_parameters))
        if not cse:
            return expr
        replacements, (reduced,) = sympy.cse([expr], order="none")
        return ClosedForm(tuple(replacements), reduced)

    # -- display -----------------------------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str, Any]]:
        """(section, left-hand side, right-hand side) of every line the view shows, statistics first."""
        out = [("statistics", k, v) for k, v in self.statistics.items()]
        out += [("leading", k, v) for k, v in self.leading.items()]
        for maps in self.layers:
            out += [(f"layer {maps.layer}", eq.lhs, eq.rhs) for eq in maps.equations]
        return out

    def table(self, width: int = 110) -> str:
        """An aligned text table: statistics, leading order, layer maps and the short closed forms."""
        lines = [f"Structure: {self.network.describe()}  (T = {self.samples})",
                 "  statistics (in the order parameters; each line in the symbols of the lines above):"]
        lines += [f"    {k:<12} = {v}" for k, v in self.statistics.items()]
        lines.append("  leading order in 1/M:")
        lines += [f"    {k:<12} = {v}" for k, v in self.leading.items()]
        lines.append(f"  lambda_max: {self.lambda_max_kind}")
        if self.lambda_max_bounds is not None:
            lines.append(f"    bounds: {self.lambda_max_bounds[0]}  ..  {self.lambda_max_bounds[1]}")
        lines.append("  layer maps (dense, normalization, activation; backward from the output):")
        for maps in self.layers:
            note = "" if maps.norm == "none" else f"  [{maps.norm} norm, {maps.law} law]"
            lines.append(f"    layer {maps.layer}{note}")
            lines += [f"      {str(eq.lhs):<16} = {eq.rhs}" for eq in maps.equations]
        short = [(s, v) for s, v in self.order_parameters.items() if _size(v) <= _SHORT]
        long = len(self.order_parameters) - len(short)
        lines.append("  order parameters" + (f" ({long} long closed forms: .closed_form(name), .order_parameters)"
                                             if long else "") + ":")
        cells = [f"{s} = {v}" for s, v in short]
        row = "   "
        for cell in cells:
            if len(row) + len(cell) + 2 > width and row.strip():
                lines.append(row.rstrip(",")); row = "   "
            row += f" {cell},"
        if row.strip():
            lines.append(row.rstrip(","))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def latex_lines(self) -> list[str]:
        """One LaTeX line ``lhs &= rhs`` per statistic, leading-order statistic, layer rule and short closed form."""
        from ..printing import latex
        lhs = {k: latex(statistic_symbol(k)) for k in STATISTICS}
        out = [f"{lhs[k]} &= {latex(v)}" for k, v in self.statistics.items()]
        out += [f"{lhs[k]} &\\simeq {latex(v)}" for k, v in self.leading.items()]
        for maps in self.layers:
            out += [f"{latex(eq.lhs)} &= {latex(eq.rhs)}" for eq in maps.equations]
        out += [f"{latex(s)} &= {latex(v)}" for s, v in self.order_parameters.items()
                if _size(v) <= _SHORT and s.name.startswith("q") and not s.name.startswith(("q1", "q2"))]
        return out

    def _latex(self, printer: Any = None, **kwargs: Any) -> str:
        return "\\begin{aligned}" + r" \\ ".join(self.latex_lines()) + r"\end{aligned}"

    def _repr_latex_(self) -> str:
        return "$$" + self._latex() + "$$"


_SHORT = 40  # expression-tree nodes up to which a closed form is shown in the tables


def _size(expr: Any) -> int:
    """Nodes of the expression tree, stopping early (printing a long nested closed form takes minutes)."""
    if not isinstance(expr, sympy.Basic):
        return 1
    n = 0
    for _ in sympy.preorder_traversal(expr):
        n += 1
        if n > _SHORT:
            break
    return n


def structure(order: OrderParameters, *, width: Any = M, outputs: Any = C,
              lambda_max: Callable[..., tuple] | None = None) -> Structure:
    """The :class:`Structure` of the theory with these order parameters (sympy values, from a derivation).

    kappa_1 = sum_l (alpha_{l-1}/alpha)(qtilde_1^l qhat_1^{l-1} + qtilde_1mean^l qhat_2^{l-1}) and the rest, by
    :func:`~.statistics.gram_statistics` applied to the order-parameter symbols, then to the Gram entries.

    Args:
        order: :class:`~.recursions.OrderParameters` (``derive(net).order``, or ``order_parameters(net, symbolic=True)``).
        width, outputs: M and C (symbols unless fixed).
        lambda_max: ``(gram_diag, gram_offdiag, P, s, leading gram_diag, leading gram_offdiag) -> (kind,
            lambda_max, bounds, leading lambda_max)``, the rule of :func:`~meanfield.derive` (default the
            statistics code's: the outlier, or the bulk value gram_diag - gram_offdiag with batch norm on the output).

    Returns:
        :class:`Structure`.

    Example:
        >>> from meanfield.theory.recursions import order_parameters
        >>> s = structure(order_parameters(Network(3, "relu", 2, 0), symbolic=True))
        >>> s.statistics["gram_diag"]
        (M*alpha*kappa1 + qtilde1_1 + qtilde1_2 + qtilde1_3)/T
        >>> s.leading["lambda_max"]
        M*alpha*kappa1/T + M*alpha*kappa2*(T - 1)/T
    """
    if not isinstance(order, OrderParameters):
        raise InvalidArgument("order", order, "meanfield OrderParameters (e.g. derive(net).order)")
    net = order.network
    L = net.depth
    Tn = T if order.samples is None else order.samples
    ctx = Arithmetic("sympy")
    sym_op = symbolic_order(order)
    sym_op = OrderParameters(net, Tn, sym_op.layers, "sympy")  # T as derive() has it (1/T in the Gram entries)
    st = gram_statistics(sym_op, width, Tn, outputs, ctx)
    A = alpha_normaliser(net, ctx)
    shown = ALPHA if L > 1 else A  # depth 1 has no hidden layer: the kappa's are normalised by alpha_0
    sums = [sympy.expand(k * A) for k in (st["kappa1"], st["kappa2"])]
    kappas = [s_ / shown for s_ in sums]
    gram = []
    for g, s_, k in zip((st["gd"], st["go"]), sums, (KAPPA1, KAPPA2)):
        # the bias terms: T G minus its O(M) part alpha M kappa
        bias = sympy.expand(Tn * g - width * s_)
        if g == 0:
            gram.append(sympy.S.Zero)
            continue
        if isinstance(width, sympy.Basic) and bias.has(width):  # pragma: no cover - the identity kappa = T G_lead/(A M)
            raise AssertionError(f"the Gram entry is not alpha M kappa + bias: {bias}")
        gram.append((shown * width * k + bias) / Tn)
    gd, go = statistic_symbol("gram_diag"), statistic_symbol("gram_offdiag")
    Psym, ssym = statistic_symbol("P"), statistic_symbol("s")
    lead = (shown * KAPPA1 / Tn, shown * KAPPA2 / Tn)
    upper = gram_statistics(_GramLevel(_AlphaAsSymbol(net) if L > 1 else net, gd, go if gram[1] != 0 else 0, lead,
                                       (KAPPA1, KAPPA2)), width, Tn, outputs, ctx)
    P = st["P"]

    def with_P(e: Any) -> Any:
        return e.xreplace({P: Psym}) if isinstance(P, sympy.Basic) and not P.is_number else e

    m, s_ = with_P(upper["m"]), with_P(upper["s"])
    if lambda_max is None:
        kind = "bound" if isinstance(net.norm_at(L), BatchNorm) else "prediction"
        lam, bounds, lam_lead = upper["lam"], None, upper["lam_l"]
    else:
        kind, lam, bounds, lam_lead = lambda_max(gd, go, Psym, ssym, upper["gd_lead"], upper["go_lead"])
    statistics = {"alpha": st["alpha"], "kappa1": kappas[0], "kappa2": kappas[1], "gram_diag": gram[0],
                  "gram_offdiag": gram[1], "P": P, "m": m, "s": s_, "lambda_max": lam,
                  "eta_max": 2 / statistic_symbol("lambda_max")}
    leading = {"P": upper["P_lead"], "gram_diag": upper["gd_lead"], "gram_offdiag": upper["go_lead"],
               "m": upper["m_l"], "s": upper["s_l"], "lambda_max": lam_lead}
    values = {order_parameter_symbol(k, 0): getattr(order.layers[0], k) for k in ("qhat1", "qhat2")}
    for p, q in zip(order.layers, sym_op.layers):
        for k in ORDER_FIELDS:
            s_k = getattr(q, k)
            if isinstance(s_k, sympy.Symbol) and s_k.name.startswith(k):
                values[s_k] = getattr(p, k)
    return Structure(net, Tn, MappingProxyType(statistics), MappingProxyType(leading), layer_maps(net, Tn),
                     MappingProxyType(values), kind, bounds)

