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
* **layer norms on hidden layers and a full batch norm on the output** ("layer+batch:last";
  :func:`meanfield.finite.normalized.output_batch_norm_terms` with the statistics below through the norms,
  :func:`meanfield.finite.normalized.output_batch_norm_below`): the full batch norm's formulas of
  :mod:`meanfield.finite.symbolic_normalized`, E G = G_mf (1 + dD_bn/D_bn) v_bn/(v_bn + dv_bn) + Cpl, s = s_mf (...)^2
  + s_same + s_cross + Cpl_s, with dD_bn = dTheta_ln_tt - dTheta_ln_ts (:class:`LayerNormShift` atoms), D_bn, v_bn,
  dv_bn, the world's v_w, D_w and the five contractions S_KK, KT_1, S_KT, Y_1, S_Y as :class:`OutputBatchNormPart`
  atoms, Sum_same, Sum_cross over the 15 label classes of :class:`LayerNormCovariance` atoms and the coupling terms
  Cpl_tt, Cpl_ts, Cpl_F2, Cpl_s written out in T;
* **batch norm, full or centre-only, on the last hidden layer** ("batch:hidden", "batch-center:hidden";
  :func:`meanfield.finite.hiddenbn.hidden_batch_norm_terms`): E G_p = G_p_mf + dG_shift_p + dG_second_p + dG_stein_p
  (the exchangeable mean shifts below, the second order in the realized kernel and NTK below, the Stein term; each a
  :class:`HiddenBatchNormPart` atom in Gram units), m and the kappa's as above, and s = C [T E G_tt^2 +
  T (T - 1) E G_ts^2] / P + s_units + s_below + s_cross (the entry-variance parts, atoms; below a deeper plain stack
  through :mod:`meanfield.finite.ntkspread`).
* **one batch norm, full or centre-only, on a hidden layer l < L - 1** ("batch:deep", "batch-center:deep";
  :func:`meanfield.finite.deepbn.deep_batch_norm_terms`): E G_p = G_p_mf + dG_deep_p (a :class:`DeepBatchNormPart`
  atom: the batch-normalized layer's kernel and NTK average to O(1/M), carried up by the plain forward recursion), m
  and the kappa's as above, and s from the entry variances Var_tt, Var_ts, Xsq_tt, Xsq_ts (atoms) as for the layer
  norms.

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

from ..errors import InvalidArgument, check_int
from ..spec.network import BatchNorm, LayerNorm, Network
from ..spec.symbols import C, M, T
from .fourpoint_layernorm import layer_norm_gram_covariance
from .deepbn import deep_batch_norm_terms
from .hiddenbn import hidden_batch_norm_terms
from .layernorm import layer_norm_ntk_mean_shift
from .normalized import coupling_contractions, output_batch_norm_below
from .symbolic_corrections import GRAM_MEAN_FIELD, VARIANCES, projected_variance
from .symbolic_corrections import centring_weight, label_choices, label_classes

__all__ = ["PLACEMENTS", "NumericPart", "NamedPart", "LayerNormShift", "LayerNormCovariance", "HiddenBatchNormPart",
           "OutputBatchNormPart", "DeepBatchNormPart", "placement_of", "placement_parts",
           "layer_norm_variance_equations", "coupling_closed_form", "label_class_sum", "projector_sum",
           "full_batch_norm_statistics", "placement_statistics", "entry_variance_s"]

#: the placements derived here (what :func:`placement_of` returns)
PLACEMENTS = ("layer", "layer+batch-center:last", "batch:hidden", "batch-center:hidden", "layer+batch:last",
              "batch:deep", "batch-center:deep")
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


class NamedPart(NumericPart):
    """A numeric part named by one string of the class's ``NAMES`` (InvalidArgument otherwise).

    A subclass that reads a field of a terms dataclass sets ``TERMS`` (a function (net, width, samples) -> terms),
    ``FIELDS`` (name -> (field, index into it or None)), ``TAG`` (its printed prefix) and ``LETTER`` (its LaTeX
    letter); :meth:`value`, the printed form TAG[name] and the LaTeX \\mathcal{LETTER}^{part}_{pair} come from them.

    Example:
        >>> DeepBatchNormPart("var_ts").name, str(DeepBatchNormPart("var_ts"))
        ('var_ts', 'DBN[var_ts]')
    """

    NAMES: tuple = ()
    FIELDS: dict = {}
    TAG = ""
    LETTER = ""
    TERMS: Any = None

    def __new__(cls, name: str):
        if name not in cls.NAMES:
            raise InvalidArgument("name", name, f"one of {cls.NAMES}")
        return sympy.Expr.__new__(cls, sympy.Symbol(name))

    @property
    def name(self) -> str:
        return self.args[0].name

    def value(self, net: Network, width: int, samples: int) -> float:
        """The part at M = width, T = samples: the ``FIELDS`` entry of ``TERMS(net, width, samples)`` (called as
        predict calls it, so that its cached terms are these; InvalidArgument where the numeric path does not derive
        it)."""
        if not self.FIELDS:  # pragma: no cover - a subclass without a terms table defines its own value
            raise NotImplementedError
        field, index = self.FIELDS[self.name]
        got = getattr(type(self).TERMS(net, width, samples), field)
        if index is not None:
            if got is None:
                raise InvalidArgument("net", net.describe(), "a network whose entry variances are derived")
            got = got[index]
        return float(got)

    def _sympystr(self, printer: Any) -> str:
        return f"{self.TAG}[{self.name}]"

    def _latex(self, printer: Any) -> str:
        part, pair = self.name.rsplit("_", 1)
        return rf"\mathcal{{{self.LETTER}}}^{{\mathrm{{{part}}}}}_{{\mathrm{{{pair}}}}}"


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


class HiddenBatchNormPart(NamedPart):
    """One O(1/M) part of a batch norm on the last hidden layer (a field of ``hidden_batch_norm_terms``); unevaluated.

    ``name``: shift_tt, shift_ts (the exchangeable mean shifts below), second_tt, second_ts (second order in the
    realized kernel and NTK below), stein_tt, stein_ts (the Stein term), in Gram units; s_units, s_below, s_cross
    (the entry-variance parts of s). :meth:`value` is the field of the same meaning of
    :func:`meanfield.finite.hiddenbn.hidden_batch_norm_terms`.

    Example:
        >>> HiddenBatchNormPart("stein_tt")
        HBN_stein[tt]
        >>> HiddenBatchNormPart("s_units")
        HBN[s_units]
    """

    NAMES = tuple(_HIDDEN)

    def value(self, net: Network, width: int, samples: int) -> float:
        """The part at M = width, T = samples (InvalidArgument where the numeric path does not derive it)."""
        # called as predict calls it, so that its cached terms are these
        got = getattr(hidden_batch_norm_terms(net, width, samples), _HIDDEN[self.name])
        if got is None:
            raise InvalidArgument("net", net.describe(), "a network whose entry-variance parts of s are derived")
        return float(got)

    def _sympystr(self, printer: Any) -> str:
        if self.name.startswith("s_"):
            return f"HBN[{self.name}]"
        part, pair = self.name.split("_")
        return f"HBN_{part}[{pair}]"

    def _latex(self, printer: Any) -> str:
        part, pair = self.name.rsplit("_", 1)
        return rf"\mathcal{{B}}^{{\mathrm{{{part}}}}}_{{\mathrm{{{pair}}}}}"


#: DeepBatchNormPart names -> (DeepBatchNormTerms field, index into its entry_variances or None)
_DEEP = {"shift_tt": ("shift_diag", None), "shift_ts": ("shift_offdiag", None), "var_tt": ("entry_variances", 0),
         "var_ts": ("entry_variances", 1), "xsq_tt": ("entry_variances", 2), "xsq_ts": ("entry_variances", 3)}


class DeepBatchNormPart(NamedPart):
    """One O(1/M) part below plain layers above a batch norm on hidden layer l < L - 1; unevaluated.

    ``name``: shift_tt, shift_ts (E G_p - G_p_mf, Gram units: the batch-normalized layer's kernel and NTK average to
    O(1/M), carried up by the plain forward recursion), var_tt, var_ts, xsq_tt, xsq_ts (the entry variances Var G_kk
    and E G_kl^2 of one entry). :meth:`value` is the field of the same meaning of
    :func:`meanfield.finite.deepbn.deep_batch_norm_terms`.

    Example:
        >>> a = DeepBatchNormPart("shift_tt")
        >>> a
        DBN[shift_tt]
        >>> net = Network(4, "tanh", 2, 0.1, norms=["batch:1"])
        >>> a.value(net, 64, 8) == deep_batch_norm_terms(net, 64, 8).shift_diag
        True
    """

    NAMES = tuple(_DEEP)
    FIELDS = _DEEP
    TAG, LETTER = "DBN", "D"
    TERMS = staticmethod(deep_batch_norm_terms)


def _deep(net: Network, mf: Any) -> dict:
    """A batch norm on hidden layer l < L - 1: E G_p = G_p_mf + dG_deep_p (DBN atoms) and s (DBN variance atoms)."""
    aux, syms = [], []
    for pair in ("tt", "ts"):
        sym = sympy.Symbol(f"dG_deep_{pair}")
        aux.append(sympy.Eq(sym, DeepBatchNormPart(f"shift_{pair}"), evaluate=False))
        syms.append(sym)
    gd, go = GRAM_MEAN_FIELD[0] + syms[0], GRAM_MEAN_FIELD[1] + syms[1]
    norm = net.norms[0]
    notes = [f"{norm} (batch norm on hidden layer {norm.layer} < L - 1): E G_p = G_p_mf + dG_deep_p, the DBN[shift_p] "
             "atom of meanfield.finite.deepbn.deep_batch_norm_terms (the batch-normalized layer's kernel and NTK "
             "average to O(1/M) by exact sphere quadrature, carried up by the plain forward recursion)"]
    s, missing, parts = None, ("s",), [("deep_tt", syms[0]), ("deep_ts", syms[1])]
    if norm.layer >= 1:
        names = ("var_tt", "var_ts") + (("xsq_tt", "xsq_ts") if net.outputs >= 2 else ())
        for sym, name in zip(VARIANCES, names):
            aux.append(sympy.Eq(sym, DeepBatchNormPart(name), evaluate=False))
        s, missing = entry_variance_s(net, gd, go, mf), ()
        var_d, var_o, xd, xo = VARIANCES
        parts += [("var_diag", var_d), ("var_offdiag", var_o), ("cross_square_diag", xd if net.outputs >= 2 else 0),
                  ("cross_square_offdiag", xo if net.outputs >= 2 else 0)]
        notes.append("entry variances Var_tt, Var_ts, Xsq_tt, Xsq_ts: DBN[var_...], DBN[xsq_...] atoms (the four-point "
                     "layer sum with the layers <= l as one term, meanfield.finite.deepbn.entry_variance)")
    else:
        notes.append("missing: s (the entry variances behind a batch norm on a hidden layer l >= 3 below the last "
                     "hidden layer are not derived)")
    return dict(stats=placement_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=tuple(notes),
                missing=missing,
                parts=tuple(parts), shifts=tuple(syms))


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
    if layers and len(others) == 1 and isinstance(others[0], BatchNorm) and others[0].layer == L:
        return "layer+batch:last"
    if len(net.norms) == 1 and isinstance(net.norms[0], BatchNorm) and L >= 2 and net.norms[0].layer == L - 1:
        return "batch-center:hidden" if net.norms[0].center_only else "batch:hidden"
    if len(net.norms) == 1 and isinstance(net.norms[0], BatchNorm) and 1 <= net.norms[0].layer < L - 1:
        return "batch-center:deep" if net.norms[0].center_only else "batch:deep"
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


def placement_statistics(gd: Any, go: Any, s: Any, mf: Any) -> dict:
    """m = C T E G_tt / P, kappa_1 = T E G_tt / (alpha M), kappa_2 = T E G_ts / (alpha M) with E G_tt, E G_ts and s
    given: the statistics of a placement (``mf``: derive's mean field of the network; kappa's None for alpha = 0).

    Example:
        >>> from meanfield.theory.derivation import derive
        >>> st = placement_statistics(*sympy.symbols("a b s"), derive(Network(2, "relu", 2, 0.1)))
        >>> st["m"]
        C*T*a/(C*(M + 1) + M*(M + 1))
    """
    k1 = k2 = None
    if mf.alpha != 0:
        k1, k2 = T * gd / (mf.alpha * M), T * go / (mf.alpha * M)
    return dict(gram_diag=gd, gram_offdiag=go, m=C * T * gd / mf.P, s=s, kappa1=k1, kappa2=k2)


def entry_variance_s(net: Network, gd: Any, go: Any, mf: Any) -> sympy.Expr:
    """s = [C T (E G_tt^2 + Var_tt) + C T (T - 1)(E G_ts^2 + Var_ts) + C (C - 1)(T Xsq_tt + T (T - 1) Xsq_ts)] / P,
    the entry variances the VARIANCES symbols (no cross term for C = 1).

    Example:
        >>> from meanfield.theory.derivation import derive
        >>> net = Network(2, "relu", 2, 0.1)
        >>> sorted(str(x) for x in entry_variance_s(net, *sympy.symbols("a b"), derive(net)).free_symbols)
        ['C', 'M', 'T', 'Var_ts', 'Var_tt', 'a', 'b']
    """
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
    return dict(stats=placement_statistics(gd, go, entry_variance_s(net, gd, go, mf), mf), aux=tuple(aux), steps=(),
                notes=notes,
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
    if net.depth >= 2:     # every depth (deeper than 3 through meanfield.finite.ntkspread)
        su, sb, sx = sympy.symbols("s_units s_below s_cross")
        aux += [sympy.Eq(sym, HiddenBatchNormPart(sym.name), evaluate=False) for sym in (su, sb, sx)]
        s = C * (T * gd**2 + T * (T - 1) * go**2) / mf.P + su + sb + sx
        missing = ()
        notes.append("s = C [T E G_tt^2 + T (T - 1) E G_ts^2] / P + s_units + s_below + s_cross (the entry-variance "
                     "parts: the normalized units with the output weights, the layers below, between outputs)")
    else:
        notes.append("missing: s (the entry variances behind this hidden batch norm are not derived)")
    parts = tuple((f"{p}_{q}", sympy.Symbol(f"dG_{p}_{q}")) for q in ("tt", "ts") for p in ("shift", "second", "stein"))
    return dict(stats=placement_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=tuple(notes),
                missing=missing,
                parts=parts, shifts=tuple(sympy.Symbol(f"dG_shift_{q}") for q in ("tt", "ts")))


#: OutputBatchNormPart names: the statistics below a full batch norm on the output, and the world's contractions
_CONTRACTIONS = ("S_KK", "KT_1", "S_KT", "Y_1", "S_Y")
_BELOW = ("D0", "dD", "v", "dv", "v_w", "D_w") + _CONTRACTIONS


class OutputBatchNormPart(NamedPart):
    """One statistic of the network below a full batch norm on the output, behind layer norms; unevaluated.

    ``name``: D0 (T (G_tt - G_ts) of the network without its output batch norm, mean field), dD (its O(1) shift,
    the layer-norm NTK recursion), v (sigma_w^2 (K_tt - K_ts) of layer L - 1), dv (its O(1/M) mean shift), v_w, D_w
    (the same two of the four-sample world) and the five contractions S_KK, KT_1, S_KT, Y_1, S_Y of the coupling
    terms (sums over the T^4 index tuples of the world's covariances). :meth:`value` is the numeric path's:
    :func:`meanfield.finite.normalized.output_batch_norm_below` and
    :func:`meanfield.finite.normalized.coupling_contractions`.

    Example:
        >>> OutputBatchNormPart("S_KK")
        OBN[S_KK]
        >>> net = Network(3, "tanh", 2, 0.1, norms=["layer:1", "batch:last"])
        >>> OutputBatchNormPart("v").value(net, 64, 8) == output_batch_norm_below(net, 64, 8).variance
        True
    """

    NAMES = _BELOW

    def value(self, net: Network, width: int, samples: int) -> float:
        """The statistic at M = width, T = samples (``net`` the normalized network)."""
        if self.name in _CONTRACTIONS:
            return float(coupling_contractions(net, width, samples)[self.name])
        b = output_batch_norm_below(net, width, samples)
        if self.name in ("v_w", "D_w"):
            w, L = b.world, net.depth
            spread = w.k[0] - w.k[1]
            if self.name == "v_w":
                return float(net.sigma_w2[L - 1]) * float(spread)
            return float(net.widths(width)[L - 1] * spread + float(net.sigma_w2[L - 1]) * (w.n[0] - w.n[1]))
        return float(dict(D0=b.ntk_spread_mean_field, dD=b.ntk_spread - b.ntk_spread_mean_field, v=b.variance,
                          dv=b.variance_shift)[self.name])

    def _sympystr(self, printer: Any) -> str:
        return f"OBN[{self.name}]"

    def _latex(self, printer: Any) -> str:
        return rf"\mathcal{{O}}_{{\mathrm{{{self.name.replace('_', '')}}}}}"


def label_class_sum(weight: Any, entry: Any) -> sympy.Expr:
    """sum over the T^4 index tuples (u, v, u', v') of weight(labels) entry(labels), by the 15 label classes: exact
    in T (each class counted by its number of label choices T (T - 1) ...).

    Args:
        weight, entry: labels (a, b, c, d) -> a sympy expression (e.g. products of :func:`centring_weight`, an
            exchangeable tensor's entry).

    Raises:
        InvalidArgument: ``weight`` or ``entry`` not callable.

    Example:
        >>> sympy.expand(label_class_sum(lambda lab: 1, lambda lab: 1))         # T^4 tuples
        T**4
        >>> sympy.factor(label_class_sum(lambda lab: 1, lambda lab: int(len(set(lab)) == 4)))
        T*(T - 3)*(T - 2)*(T - 1)
    """
    if not (callable(weight) and callable(entry)):
        raise InvalidArgument("weight, entry", (weight, entry), "two callables of the labels (a, b, c, d)")
    total = sympy.S.Zero
    for labels, new in label_classes(0):
        total += label_choices(new, 0) * weight(labels) * entry(labels)
    return total


def projector_sum(first: Any, second: Any, entry: Any) -> sympy.Expr:
    """sum over (u, v, u', v') of (first Pi_uu' Pi_vv' + second (Pi_uv Pi_u'v' + Pi_uv' Pi_u'v)) entry(u, v, u', v'),
    exact in T (:func:`label_class_sum`; Pi the centring projector).

    Example:
        >>> sympy.simplify(projector_sum(1, 0, lambda lab: 1))                  # (1^T Pi 1)^2 = 0
        0
    """
    pi = centring_weight
    return label_class_sum(lambda lab: first * pi(lab[0], lab[2]) * pi(lab[1], lab[3]) + second * (
        pi(lab[0], lab[1]) * pi(lab[2], lab[3]) + pi(lab[0], lab[3]) * pi(lab[2], lab[1])), entry)


def _below_projector_sum(outputs: tuple, first: Any, second: Any) -> sympy.Expr:
    """projector_sum of Cov_LN(A_uv, A_u'v') over the 15 label classes, exact in T."""
    return projector_sum(first, second, lambda labels: LayerNormCovariance(outputs, labels))


def _layer_full(net: Network, mf: Any) -> dict:
    """Layer norms on hidden layers and a full batch norm on the output: the full batch norm's formulas
    (:mod:`meanfield.finite.normalized`) with the statistics below through the norms."""
    L = net.depth
    sw = sympy.Rational(repr(float(net.sigma_w2[L - 1])))
    ML = sympy.Rational(repr(float(net.alphas[L - 1]))) * M      # the last hidden layer's width M_{L-1}
    dd, do = sympy.symbols("dTheta_ln_tt dTheta_ln_ts")
    aux = [sympy.Eq(dd, LayerNormShift("tt"), evaluate=False), sympy.Eq(do, LayerNormShift("ts"), evaluate=False)]
    syms = sympy.symbols("D_bn v_bn dv_bn v_w D_w " + " ".join(_CONTRACTIONS))
    D, v, dv, vw, Dw, SKK, KT1, SKT, Y1, SY = syms
    aux += [sympy.Eq(sym, OutputBatchNormPart(part), evaluate=False)
            for sym, part in zip(syms, ("D0", "v", "dv", "v_w", "D_w") + _CONTRACTIONS)]
    dD = sympy.Symbol("dD_bn")
    aux.append(sympy.Eq(dD, dd - do, evaluate=False))
    same, cross = sympy.symbols("Sum_same Sum_cross")
    aux.append(sympy.Eq(same, _below_projector_sum((0, 0), 1 - 2 / (T - 1) + 1 / (T**2 - 1), 1 / (T**2 - 1)),
                        evaluate=False))
    if net.outputs >= 2:
        aux.append(sympy.Eq(cross, _below_projector_sum((0, 1), 1, 0), evaluate=False))
    cpl = sympy.symbols("Cpl_tt Cpl_ts Cpl_F2 Cpl_s")
    trace, square = coupling_closed_form(Dw, vw, sw, ML, (SKK, KT1, SKT, Y1, SY))
    aux += [sympy.Eq(cpl[0], trace / T, evaluate=False), sympy.Eq(cpl[1], -cpl[0] / (T - 1), evaluate=False),
            sympy.Eq(cpl[2], square, evaluate=False), sympy.Eq(cpl[3], C * cpl[2] / mf.P, evaluate=False)]
    gd, go, s, parts = full_batch_norm_statistics((D, dD), (v, dv), (same, cross), (cpl[0], cpl[1], cpl[3]),
                                                  net.outputs, mf.P)
    layers = ", ".join(str(x) for x in net.norms if isinstance(x, LayerNorm))
    notes = (f"full batch norm on the output with {layers} below: E G = G_mf (1 + dD_bn/D_bn) v_bn/(v_bn + dv_bn) + "
             "Cpl, s = s_mf (...)^2 + the entry fluctuations through the projectors (Sum_same, Sum_cross over the 15 "
             "label classes of Cov_LN[...], exact in T) + Cpl_s; D_bn, dD_bn, v_bn, dv_bn from the layer-norm "
             "recursions (dTheta_LN[...], OBN[...], meanfield.finite.normalized.output_batch_norm_below)",
             "the coupling terms Cpl_tt, Cpl_ts, Cpl_F2, Cpl_s in closed form in T (sphere and chi-square moments, "
             "n = T - 1) in the four-sample world through the norms (v_w, D_w and the contractions S_KK, KT_1, S_KT, "
             "Y_1, S_Y as OBN[...] atoms, meanfield.finite.layernorm_world)")
    return dict(stats=placement_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=notes, missing=(),
                parts=parts,
                shifts=(dd, do))


def coupling_closed_form(D: Any, v: Any, sw: Any, width: Any, contractions: tuple) -> tuple:
    """trace = D (n - 1) sw^2 S_KK / (v^3 n (n^2 - 4)) - sw / (2 v^2) (KT_1 / (n (n - 2)) + S_KT / (n (n + 2))) - c / v^2
    (Y_1 / (n (n - 2)) + S_Y / (n (n + 2))) and the square's, n = T - 1, c = (sw / M_{L-1})^2.

    The coupling terms of a full batch norm on the output in closed form in T (sphere and chi-square moments):
    ``trace`` is T Cpl_tt, ``square`` Cpl_F2 (:mod:`meanfield.finite.normalized`, term 3: (a) Price's second order of
    the law of g, (b) its coupling with Theta', (c) the Stein term on the output row), in the four-sample world's
    v_w, D_w and five contractions.

    Args:
        D, v: D_w and v_w (symbols or expressions).
        sw: sigma_w^2 of the output layer; width: M_{L-1} (an expression in M).
        contractions: (S_KK, KT_1, S_KT, Y_1, S_Y).

    Raises:
        InvalidArgument: not five contractions.

    Example:
        >>> S = sympy.symbols("S_KK KT_1 S_KT Y_1 S_Y")
        >>> trace, square = coupling_closed_form(*sympy.symbols("D v"), 2, M, S)
        >>> sorted(str(x) for x in trace.free_symbols)
        ['D', 'KT_1', 'M', 'S_KK', 'S_KT', 'S_Y', 'T', 'Y_1', 'v']
    """
    if not (isinstance(contractions, (tuple, list)) and len(contractions) == 5):
        raise InvalidArgument("contractions", contractions, "five: (S_KK, KT_1, S_KT, Y_1, S_Y)")
    S_KK, KT_1, S_KT, Y_1, S_Y = contractions
    n, c = T - 1, (sw / width) ** 2
    # (a) (1/8) E[Delta Delta] E[tr F0 He4] with tr F0 = D (n - 1) / r^2, (b) (1/2) E[Delta_ab tr F1 He_ab], (c) Stein
    trace = (D * (n - 1) * sw**2 * S_KK / (v**3 * n * (n**2 - 4))
             - sw / (2 * v**2) * (KT_1 / (n * (n - 2)) + S_KT / (n * (n + 2)))
             - c / v**2 * (Y_1 / (n * (n - 2)) + S_Y / (n * (n + 2))))
    # E||G_kk||_F^2: |F0|^2 = D^2 (n - 1) / r^4 and <F0, F1> = D tr(Q dTheta) / r^4 (|F1|^2 is the entry variances')
    square = (3 * D**2 * (n - 1) * sw**2 * S_KK / (v**4 * n * (n**2 - 4) * (n - 4))
              - D * sw / v**3 * (3 * KT_1 / (n * (n - 2) * (n - 4)) + S_KT / (n * (n + 2) * (n - 2)))
              - 2 * c * D / v**3 * (3 * Y_1 / (n * (n - 2) * (n - 4)) + S_Y / (n * (n + 2) * (n - 2))))
    return trace, square


def full_batch_norm_statistics(ntk: tuple, scale: tuple, sums: tuple, couplings: tuple, outputs: int,
                               P: Any) -> tuple:
    """E G_p = G_p_mf (1 + dD/D) v/(v + dv) + Cpl_p, s = s_mf (...)^2 + C E[1/sigma^4] Sum_same / (T^2 P) + C (C - 1)
    E[1/sigma^2]^2 ((T - 2)/(T - 1))^2 Sum_cross / (T^2 P) + Cpl_s: a full batch norm on the output, symbolic in T.

    E[1/sigma^2] = T / (v (T - 3)), E[1/sigma^4] = T^2 / (v^2 (T - 3) (T - 5)) (chi-square moments).

    Args:
        ntk: (D, dD), the NTK spread below and its O(1) shift; scale: (v, dv), the variance below and its shift.
        sums: (Sum_same, Sum_cross), the projector sums of the entry fluctuations.
        couplings: (Cpl_tt, Cpl_ts, Cpl_s).
        outputs: C (no cross term for C = 1); P: the mean field's parameter count.

    Returns:
        (E G_tt, E G_ts, s, named parts: ntk_factor, scale_factor, s_same, s_cross, coupling_diag, coupling_offdiag,
        coupling_s).

    Raises:
        InvalidArgument: not pairs / a triple, a bad output count.

    Example:
        >>> D, dD, v, dv = sympy.symbols("D dD v dv")
        >>> gd, go, s, parts = full_batch_norm_statistics((D, dD), (v, dv), (1, 0), (0, 0, 0), 1, 1)
        >>> dict(parts)["ntk_factor"]
        1 + dD/D
    """
    if not (len(ntk) == len(scale) == len(sums) == 2 and len(couplings) == 3):
        raise InvalidArgument("ntk, scale, sums, couplings", (ntk, scale, sums, couplings), "pairs and a triple")
    outputs = check_int("outputs", outputs, minimum=1)
    (D, dD), (v, dv), (same, cross), cpl = ntk, scale, sums, couplings
    factor = (1 + dD / D) * v / (v + dv)
    inv2, inv4 = T / (v * (T - 3)), T**2 / (v**2 * (T - 3) * (T - 5))     # E[1/sigma^2], E[1/sigma^4]
    gd = GRAM_MEAN_FIELD[0] * factor + cpl[0]
    go = GRAM_MEAN_FIELD[1] * factor + cpl[1]
    s_same = C * inv4 * same / (T**2 * P)
    s_cross = C * (C - 1) * inv2**2 * ((T - 2) / (T - 1)) ** 2 * cross / (T**2 * P) if outputs >= 2 else 0
    s = sympy.Symbol("s_mf") * factor**2 + s_same + s_cross + cpl[2]
    parts = (("ntk_factor", 1 + dD / D), ("scale_factor", v / (v + dv)), ("s_same", s_same), ("s_cross", s_cross),
             ("coupling_diag", cpl[0]), ("coupling_offdiag", cpl[1]), ("coupling_s", cpl[2]))
    return gd, go, s, parts


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
    if where == "layer+batch:last":
        return _layer_full(net, mf)
    if where.startswith("layer"):
        return _layer(net, where, mf)
    if where.endswith(":deep"):
        return _deep(net, mf)
    return _hidden(net, mf)
