"""The symbolic O(1/M) corrections behind layer norms anywhere and behind a batch norm on the last hidden layer.

:func:`meanfield.finite.symbolic_normalized.derive_network_corrections` (what ``derive(net).corrections`` reaches)
dispatches here for the placements of :data:`PLACEMENTS`; :func:`placement_parts` returns the equations it wraps in
a :class:`~meanfield.finite.symbolic_normalized.NormalizedCorrectionDerivation`. What is symbolic is written out, what
the numeric 1/M path evaluates numerically (quadratures, central differences of the recursion, four-point tables,
the hidden batch norm's sphere expectations) is a named unevaluated atom (a :class:`NumericPart`) whose ``value`` is
that path's number, so that ``evaluate(M, T)`` gives ``predict(net, M, T, finite_width="1/M")``'s statistics:

* **layer norms on hidden layers** (any number, depth and widths; placement "layer"), possibly with a centre-only
  batch norm on the output ("layer+batch-center:last"), :func:`meanfield.finite.layernorm.layer_norm_corrections`:
  E G_tt = G_tt_mf + dTheta_ln_tt / T, E G_ts = G_ts_mf + dTheta_ln_ts / T with dTheta_ln_p the
  :class:`LayerNormShift` atom (the forward NTK recursion through the norms,
  :func:`meanfield.finite.layernorm.layer_norm_ntk_mean_shift`); the entry variances Var_tt = Cov[Theta_00(0, 0),
  Theta_00(0, 0)] / T^2, Var_ts, Xsq_tt, Xsq_ts (between outputs) with :class:`LayerNormCovariance` atoms
  (:func:`meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance`), and s = [C T (E G_tt^2 + Var_tt) +
  C T (T - 1)(E G_ts^2 + Var_ts) + C (C - 1)(T Xsq_tt + T (T - 1) Xsq_ts)] / P, m = C T E G_tt / P, kappa_1 =
  T E G_tt / (alpha M), kappa_2 = T E G_ts / (alpha M). With the centre-only batch norm on the output, G = Pi G Pi
  exactly (Pi = I - 1 1^T / T): E G_tt = G_tt_mf + (1 - 1/T)(dTheta_ln_tt - dTheta_ln_ts) / T, E G_ts = G_ts_mf -
  (dTheta_ln_tt - dTheta_ln_ts) / T^2, and each variance is its sum over the classes of equal labels, (T - f)_n x
  (products of 1 - 1/T and -1/T) x the covariance atom, exact in T;
* **batch norm, full or centre-only, on the last hidden layer** ("batch:hidden", "batch-center:hidden";
  :func:`meanfield.finite.hiddenbn.hidden_batch_norm_terms`): E G_p = G_p_mf + dG_shift_p + dG_second_p + dG_stein_p
  (the exchangeable mean shifts below, the second order in the realized kernel and NTK below, the Stein term; each a
  :class:`HiddenBatchNormPart` atom in Gram units), m and the kappa's as above, and for L <= 3 s = C [T E G_tt^2 +
  T (T - 1) E G_ts^2] / P + s_units + s_below + s_cross (the entry-variance parts, atoms); deeper, s is in
  ``missing``.

Example:
    >>> from meanfield.theory.derivation import derive
    >>> out = placement_parts(Network(3, "tanh", 2, 0.1, norms=["layer:1"]), "layer", derive(
    ...     Network(3, "tanh", 2, 0.1, norms=["layer:1"])))
    >>> out["stats"]["gram_diag"], out["missing"]
    (G_tt_mf + dTheta_ln_tt/T, ())
"""

from __future__ import annotations

import functools
from typing import Any

import sympy

from ..errors import InvalidArgument
from ..spec.network import BatchNorm, LayerNorm, Network
from ..spec.symbols import C, M, T
from .fourpoint_layernorm import layer_norm_gram_covariance
from .hiddenbn import hidden_batch_norm_terms
from .layernorm import layer_norm_ntk_mean_shift
from .symbolic_corrections import GRAM_MEAN_FIELD, VARIANCES, projected_variance

__all__ = ["PLACEMENTS", "NumericPart", "LayerNormShift", "LayerNormCovariance", "HiddenBatchNormPart",
           "placement_of", "placement_parts", "layer_norm_variance_equations"]

#: the placements derived here (what :func:`placement_of` returns)
PLACEMENTS = ("layer", "layer+batch-center:last", "batch:hidden", "batch-center:hidden")
#: HiddenBatchNormPart names -> HiddenBatchNormTerms fields
_HIDDEN = {"shift_tt": "shift_diag", "shift_ts": "shift_offdiag", "second_tt": "second_diag",
           "second_ts": "second_offdiag", "stein_tt": "stein_diag", "stein_ts": "stein_offdiag",
           "s_units": "s_units", "s_below": "s_below", "s_cross": "s_cross"}


def _inner(net: Network) -> Network:
    """The network without its output normalization (the layer norms only)."""
    return net.with_(norms=tuple(n for n in net.norms if isinstance(n, LayerNorm)))


@functools.lru_cache(maxsize=64)
def _shifts(inner: Network, width: int) -> tuple:
    # one recursion gives both pairs; both atoms ask for it
    return layer_norm_ntk_mean_shift(inner, width)


class NumericPart(sympy.Expr):
    """A named, numerically evaluated O(1/M) part (base class): ``value(net, width, samples)`` is the numeric path's.

    Example:
        >>> isinstance(LayerNormShift("tt"), NumericPart)
        True
    """

    is_real = True
    is_finite = True

    @property
    def free_symbols(self):
        return set()

    def value(self, net: Network, width: int, samples: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class LayerNormShift(NumericPart):
    """dTheta_ln_p = T (E G_p - G_p_mf) behind layer norms on hidden layers (p = tt, ts), O(1); unevaluated.

    :meth:`value` is :func:`meanfield.finite.layernorm.layer_norm_ntk_mean_shift` of the network without its output
    normalization (the forward NTK recursion through every norm).

    Example:
        >>> a = LayerNormShift("ts")
        >>> a
        dTheta_LN[ts]
        >>> net = Network(3, "tanh", 2, 0.1, norms=["layer:1"])
        >>> a.value(net, 32, 4) == layer_norm_ntk_mean_shift(net, 32)[1]
        True
    """

    def __new__(cls, pair: str):
        if pair not in ("tt", "ts"):
            raise InvalidArgument("pair", pair, "'tt' or 'ts'")
        return sympy.Expr.__new__(cls, sympy.Symbol(pair))

    def value(self, net: Network, width: int, samples: int) -> float:
        """The shift at M = width (T G units; independent of T)."""
        return float(_shifts(_inner(net), width)[0 if self.args[0].name == "tt" else 1])

    def _sympystr(self, printer: Any) -> str:
        return f"dTheta_LN[{self.args[0].name}]"

    def _latex(self, printer: Any) -> str:
        return rf"\delta\Theta^{{\mathrm{{LN}}}}_{{\mathrm{{{self.args[0].name}}}}}"


class LayerNormCovariance(NumericPart):
    """Cov(Theta_kl(u, v), Theta_kl(u', v')) behind layer norms on hidden layers (O(M)); unevaluated.

    Theta_kl = T G_kl between outputs k, l; equal labels are the same sample. :meth:`value` is
    :func:`meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance` of the network without its output
    normalization.

    Example:
        >>> c = LayerNormCovariance((0, 0), (0, 1, 0, 1))
        >>> c
        Cov_LN[Theta_00(0, 1), Theta_00(0, 1)]
        >>> net = Network(3, "tanh", 2, 0.1, norms=["layer:2"])
        >>> c.value(net, 32, 4) == layer_norm_gram_covariance(net, 32, (0, 0, 0, 1), (0, 0, 0, 1))
        True
    """

    def __new__(cls, outputs: Any, labels: Any):
        outputs, labels = tuple(outputs), tuple(labels)
        if (len(outputs) != 2 or len(labels) != 4 or not all(isinstance(x, int) for x in outputs + labels)
                or min(outputs + labels) < 0):
            raise InvalidArgument("outputs, labels", (outputs, labels), "two output and four sample labels, >= 0")
        return sympy.Expr.__new__(cls, *(sympy.Integer(x) for x in outputs + labels))

    def value(self, net: Network, width: int, samples: int) -> float:
        """The covariance at M = width (independent of T)."""
        k, l, u, v, u2, v2 = (int(a) for a in self.args)
        return float(layer_norm_gram_covariance(_inner(net), width, (k, l, u, v), (k, l, u2, v2)))

    def _sympystr(self, printer: Any) -> str:
        k, l, u, v, u2, v2 = (int(a) for a in self.args)
        return f"Cov_LN[Theta_{k}{l}({u}, {v}), Theta_{k}{l}({u2}, {v2})]"

    def _latex(self, printer: Any) -> str:
        k, l, u, v, u2, v2 = (int(a) for a in self.args)
        return (rf"\operatorname{{Cov}}_{{\mathrm{{LN}}}}\left(\Theta_{{{k}{l}}}({u}, {v}), "
                rf"\Theta_{{{k}{l}}}({u2}, {v2})\right)")


class HiddenBatchNormPart(NumericPart):
    """One O(1/M) part of a batch norm on the last hidden layer (a field of ``hidden_batch_norm_terms``); unevaluated.

    ``name``: shift_tt, shift_ts (the exchangeable mean shifts below), second_tt, second_ts (second order in the
    realized kernel and NTK below), stein_tt, stein_ts (the Stein term), in Gram units; s_units, s_below, s_cross
    (the entry-variance parts of s, L <= 3). :meth:`value` is the field of the same meaning of
    :func:`meanfield.finite.hiddenbn.hidden_batch_norm_terms`.

    Example:
        >>> HiddenBatchNormPart("stein_tt")
        HBN_stein[tt]
        >>> HiddenBatchNormPart("s_units")
        HBN[s_units]
    """

    NAMES = tuple(_HIDDEN)

    def __new__(cls, name: str):
        if name not in _HIDDEN:
            raise InvalidArgument("name", name, f"one of {cls.NAMES}")
        return sympy.Expr.__new__(cls, sympy.Symbol(name))

    @property
    def name(self) -> str:
        return self.args[0].name

    def value(self, net: Network, width: int, samples: int) -> float:
        """The part at M = width, T = samples (InvalidArgument where the numeric path does not derive it)."""
        # called as predict calls it, so that its cached terms are these
        got = getattr(hidden_batch_norm_terms(net, width, samples), _HIDDEN[self.name])
        if got is None:
            raise InvalidArgument("net", net.describe(), "depth <= 3 for the entry-variance parts of s")
        return float(got)

    def _sympystr(self, printer: Any) -> str:
        if self.name.startswith("s_"):
            return f"HBN[{self.name}]"
        part, pair = self.name.split("_")
        return f"HBN_{part}[{pair}]"

    def _latex(self, printer: Any) -> str:
        part, pair = self.name.rsplit("_", 1)
        return rf"\mathcal{{B}}^{{\mathrm{{{part}}}}}_{{\mathrm{{{pair}}}}}"


def placement_of(net: Network) -> str | None:
    """Which of :data:`PLACEMENTS` ``net`` is, or None (not derived here).

    Example:
        >>> placement_of(Network(4, "relu", 2, 0.1, norms=["layer:1", "layer:3", "batch-center:last"]))
        'layer+batch-center:last'
        >>> placement_of(Network(3, "relu", 2, 0.1, norms=["batch:2"])), placement_of(Network(3, "relu", 2, 0.1))
        ('batch:hidden', None)
    """
    if not isinstance(net, Network) or not net.norms:
        return None
    L = net.depth
    layers = [n for n in net.norms if isinstance(n, LayerNorm) and n.layer < L]
    others = [n for n in net.norms if not (isinstance(n, LayerNorm) and n.layer < L)]
    if layers and not others:
        return "layer"
    if layers and len(others) == 1 and isinstance(others[0], BatchNorm) and others[0].layer == L \
            and others[0].center_only:
        return "layer+batch-center:last"
    if len(net.norms) == 1 and isinstance(net.norms[0], BatchNorm) and L >= 2 and net.norms[0].layer == L - 1:
        return "batch-center:hidden" if net.norms[0].center_only else "batch:hidden"
    return None


def _centred_variance(outputs: tuple, fixed: int) -> sympy.Expr:
    """Var((Pi A Pi)_tt') / T^2 of A = Theta_kl behind the layer norms: t = t' (fixed = 1) or t != t' (fixed = 2),
    summed over the label classes, (T - fixed)_new x Pi weights x covariance atom: exact in T."""
    return projected_variance(outputs, fixed, LayerNormCovariance)


def layer_norm_variance_equations(net: Network, centre: bool) -> tuple:
    """The Eq's Var_tt, Var_ts (and Xsq_tt, Xsq_ts for C >= 2) = Var(G_kl) behind the layer norms, uncentred
    (Cov(Theta, Theta) / T^2 of one entry) or, with ``centre``, through the centre-only batch norm on the output.

    Example:
        >>> eqs = layer_norm_variance_equations(Network(3, "tanh", 2, 0.1, norms=["layer:2"]), False)
        >>> eqs[0]
        Eq(Var_tt, Cov_LN[Theta_00(0, 0), Theta_00(0, 0)]/T**2)
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    pairs = [((0, 0), 0), ((0, 0), 1)] + ([((0, 1), 2), ((0, 1), 3)] if net.outputs >= 2 else [])
    eqs = []
    for outputs, i in pairs:
        fixed = 1 + i % 2
        if centre:
            rhs = _centred_variance(outputs, fixed)
        else:
            labels = (0, 0, 0, 0) if fixed == 1 else (0, 1, 0, 1)
            rhs = LayerNormCovariance(outputs, labels) / T**2
        eqs.append(sympy.Eq(VARIANCES[i], rhs, evaluate=False))
    return tuple(eqs)


def _statistics(gd: Any, go: Any, s: Any, mf: Any) -> dict:
    k1 = k2 = None
    if mf.alpha != 0:
        k1, k2 = T * gd / (mf.alpha * M), T * go / (mf.alpha * M)
    return dict(gram_diag=gd, gram_offdiag=go, m=C * T * gd / mf.P, s=s, kappa1=k1, kappa2=k2)


def _entry_s(net: Network, gd: Any, go: Any, mf: Any) -> sympy.Expr:
    var_d, var_o, xd, xo = VARIANCES
    cross = C * (C - 1) * (T * xd + T * (T - 1) * xo) if net.outputs >= 2 else 0
    return (C * T * (gd**2 + var_d) + C * T * (T - 1) * (go**2 + var_o) + cross) / mf.P


def _layer(net: Network, where: str, mf: Any) -> dict:
    centre = where != "layer"
    dd, do = sympy.symbols("dTheta_ln_tt dTheta_ln_ts")
    aux = [sympy.Eq(dd, LayerNormShift("tt"), evaluate=False), sympy.Eq(do, LayerNormShift("ts"), evaluate=False)]
    aux += layer_norm_variance_equations(net, centre)
    if centre:
        gd = GRAM_MEAN_FIELD[0] + (1 - 1 / T) * (dd - do) / T
        go = GRAM_MEAN_FIELD[1] - (dd - do) / T**2
    else:
        gd, go = GRAM_MEAN_FIELD[0] + dd / T, GRAM_MEAN_FIELD[1] + do / T
    norms = ", ".join(map(str, net.norms))
    notes = (f"{norms}: E G_tt, E G_ts with the O(1) shifts dTheta_ln_tt, dTheta_ln_ts of the forward NTK recursion "
             "through the norms (dTheta_LN[...], meanfield.finite.layernorm.layer_norm_ntk_mean_shift)"
             + ("; G = Pi G Pi through the centre-only batch norm on the output, exact" if centre else ""),
             "entry variances Var_tt, Var_ts, Xsq_tt, Xsq_ts from the four-point engine through the norms "
             "(Cov_LN[...], meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance)"
             + (", summed over the label classes through Pi, exact in T" if centre else ""))
    var_d, var_o, xd, xo = VARIANCES
    parts = (("var_diag", var_d), ("var_offdiag", var_o), ("cross_square_diag", xd if net.outputs >= 2 else 0),
             ("cross_square_offdiag", xo if net.outputs >= 2 else 0))
    return dict(stats=_statistics(gd, go, _entry_s(net, gd, go, mf), mf), aux=tuple(aux), steps=(), notes=notes,
                missing=(), parts=parts, shifts=(dd, do))


def _hidden(net: Network, mf: Any) -> dict:
    aux, shifts = [], {}
    for pair in ("tt", "ts"):
        names = []
        for part in ("shift", "second", "stein"):
            sym = sympy.Symbol(f"dG_{part}_{pair}")
            aux.append(sympy.Eq(sym, HiddenBatchNormPart(f"{part}_{pair}"), evaluate=False))
            names.append(sym)
        shifts[pair] = sympy.Add(*names)
    gd, go = GRAM_MEAN_FIELD[0] + shifts["tt"], GRAM_MEAN_FIELD[1] + shifts["ts"]
    norm = net.norms[0]
    notes = [f"{norm} (batch norm on the last hidden layer): E G_p = G_p_mf + dG_shift_p (the exchangeable mean shifts "
             "below) + dG_second_p (second order in the realized kernel and NTK below) + dG_stein_p (the Stein term), "
             "each an HBN[...] atom of meanfield.finite.hiddenbn.hidden_batch_norm_terms"]
    s, missing = None, ("s",)
    if net.depth <= 3:
        su, sb, sx = sympy.symbols("s_units s_below s_cross")
        aux += [sympy.Eq(sym, HiddenBatchNormPart(sym.name), evaluate=False) for sym in (su, sb, sx)]
        s = C * (T * gd**2 + T * (T - 1) * go**2) / mf.P + su + sb + sx
        missing = ()
        notes.append("s = C [T E G_tt^2 + T (T - 1) E G_ts^2] / P + s_units + s_below + s_cross (the entry-variance "
                     "parts: the normalized units with the output weights, the layers below, between outputs)")
    else:
        notes.append("missing: s (the entry variances behind a hidden batch norm are derived for L <= 3 only)")
    parts = tuple((f"{p}_{q}", sympy.Symbol(f"dG_{p}_{q}")) for q in ("tt", "ts") for p in ("shift", "second", "stein"))
    return dict(stats=_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=tuple(notes), missing=missing,
                parts=parts, shifts=tuple(sympy.Symbol(f"dG_shift_{q}") for q in ("tt", "ts")))


def placement_parts(net: Network, where: str, mf: Any) -> dict:
    """The statistics, auxiliary Eq's, notes, missing, named parts and shift symbols of ``net`` at a placement of
    :data:`PLACEMENTS` (``mf``: ``derive(net)``, the normalized network's mean field): the pieces a
    :class:`~meanfield.finite.symbolic_normalized.NormalizedCorrectionDerivation` is built from.

    Raises:
        InvalidArgument: ``where`` not ``placement_of(net)``.

    Example:
        >>> from meanfield.theory.derivation import derive
        >>> net = Network(3, "relu", 2, 0.1, norms=["batch-center:2"])
        >>> placement_parts(net, "batch-center:hidden", derive(net))["stats"]["gram_offdiag"]
        G_ts_mf + dG_second_ts + dG_shift_ts + dG_stein_ts
    """
    if where not in PLACEMENTS or placement_of(net) != where:
        raise InvalidArgument("where", where, f"the placement of the network ({placement_of(net)})")
    if where.startswith("layer"):
        return _layer(net, where, mf)
    return _hidden(net, mf)
