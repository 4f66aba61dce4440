"""The symbolic O(1/M) corrections behind a hidden batch norm with another normalization, and a generic fallback.

:func:`meanfield.finite.symbolic_normalized.derive_network_corrections` (what ``derive(net).corrections`` reaches)
dispatches here for the placements of :data:`CHAIN_PLACEMENTS`; :func:`chain_parts` returns the pieces of a
:class:`~meanfield.finite.symbolic_normalized.NormalizedCorrectionDerivation`, in the style of
:mod:`meanfield.finite.symbolic_placements`: what is symbolic is written out, what the numeric 1/M path evaluates
numerically is a named unevaluated atom (a :class:`~meanfield.finite.symbolic_placements.NumericPart`) whose
``value`` is that path's number, so that ``evaluate(M, T)`` gives ``predict(net, M, T, finite_width="1/M")``'s
statistics. G^in below is the Gram of the network without its output batch norm (the hidden batch norm alone), and
an atom in ``[...]|_in`` (:class:`BelowOutputNorm`) is that network's part.

* **a hidden batch norm (full or centre-only, on layer l < L) and a centre-only batch norm on the output**
  ("batch+batch-center:last"; :func:`meanfield.finite.bnpair.batch_norm_pair_terms`): G = Pi G^in Pi per output
  block, exactly, so E G_tt = G_tt_mf + (1 - 1/T)(dG_tt - dG_ts) and E G_ts = G_ts_mf - (dG_tt - dG_ts) / T with
  dG_p = E G^in_p - G^in_p_mf the hidden batch norm's own O(1/M) terms: for l = L - 1 dG_shift_p + dG_second_p +
  dG_stein_p (:class:`~meanfield.finite.symbolic_placements.HiddenBatchNormPart` atoms of the network below, as in
  "batch:hidden"), for l < L - 1 dG_deep_p (:class:`~meanfield.finite.symbolic_placements.DeepBatchNormPart`, as in
  "batch:deep"); m = C T E G_tt / P, kappa_1 = T E G_tt / (alpha M), kappa_2 = T E G_ts / (alpha M), and s = C [T E
  G_tt^2 + T (T - 1) E G_ts^2] / P + s_same + s_below + s_cross, the projected entry variances' parts
  (:class:`PairBatchNormPart` atoms: the units with the output weights, the layers below, between outputs);
* **a hidden batch norm (full or centre-only) and a full batch norm on the output** ("batch+batch:last";
  :func:`meanfield.finite.normalized.output_batch_norm_terms` fed by :func:`meanfield.finite.bnpair.full_output_below`):
  the full batch norm's formulas of :func:`meanfield.finite.symbolic_placements.full_batch_norm_statistics`, E G =
  G_mf (1 + dD_bn/D_bn) v_bn/(v_bn + dv_bn) + Cpl, s = s_mf (...)^2 + s_same + s_cross + Cpl_s, with dD_bn = T (dG_tt
  - dG_ts) from the hidden batch norm's parts as above, D_bn, v_bn, dv_bn, v_w, D_w
  (:class:`~meanfield.finite.symbolic_placements.OutputBatchNormPart` atoms), Sum_same = (1 - 2/(T-1) + 1/(T^2-1))
  X_2 + (X_1 + X_3) / (T^2 - 1) and Sum_cross = X_2 of the three Pi Pi pairings of the entry covariances
  (:class:`BelowPairing` atoms) and the coupling terms Cpl_tt, Cpl_ts, Cpl_F2, Cpl_s in closed form in T
  (:func:`~meanfield.finite.symbolic_placements.coupling_closed_form`) in the world's five contractions
  (:class:`BelowContraction` atoms);
* **full batch norms on hidden layers 1 and l** ("batch:1+batch"; :func:`meanfield.finite.multibn.multi_batch_norm_terms`):
  E G_p = G_p_mf + dG_chain_p (a :class:`MultiBatchNormPart` atom: the chain of the norms' steps carried up by the
  plain recursion), m and the kappa's as above, and s from the entry variances Var_tt, Var_ts, Xsq_tt, Xsq_ts (atoms)
  as for "batch:deep" (one full batch norm above layer norms is a "chain": its s is derived there);
* **any other chain of hidden batch norms** (full or centre-only, layer norms anywhere hidden; nothing, a centre-only
  or a full batch norm on the output: "chain", :func:`meanfield.finite.chain.chain_terms`): with dTheta_ch_p the O(1)
  shift of T E G^in_p of the network without its output norm (a :class:`ChainPart` atom), E G_p = G_p_mf +
  dTheta_ch_p / T without an output norm, E G_tt = G_tt_mf + (1 - 1/T)(dTheta_ch_tt - dTheta_ch_ts) / T and E G_ts =
  G_ts_mf - (dTheta_ch_tt - dTheta_ch_ts) / T^2 through a centre-only one (exact), and E G_p = G_p_mf + dG_ch_p (one
  atom per pair) through a full one; m and the kappa's as above; s where the numeric path claims it from the chain's
  entry variances Var_tt, Var_ts, Xsq_tt, Xsq_ts (ChainPart atoms; through a norm on the output s = s_mf + ds_num, the
  :class:`NumericStatistic` atom, a layer norm as the top hidden norm included), else missing;
* **generic fallback** ("numeric"): any other network for which the numeric path claims statistics (predict's
  ``includes_1_over_M`` at the reference width and T = 8, :func:`numeric_claims`): E G_p = G_p_mf + dG_num_p and s =
  s_mf + ds_num, each a :class:`NumericStatistic` atom (predict's own O(1/M) term), m and the kappa's as above; what
  the numeric path does not claim is missing, and an atom refuses (InvalidArgument) a (M, T) where predict does not
  claim its statistic.

Example:
    >>> from meanfield.theory.derivation import derive
    >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:1", "batch:2"])
    >>> chain_placement_of(net), chain_parts(net, "batch:1+batch", derive(net))["stats"]["gram_diag"]
    ('batch:1+batch', G_tt_mf + dG_chain_tt)
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

import sympy

from ..errors import InvalidArgument
from ..spec.network import BatchNorm, Network
from ..spec.symbols import C, M, T
from ..theory.fisher import predict
from .bnpair import batch_norm_pair_terms, pair_placement
from .chain import chain_placement, chain_terms
from .fourworld import world_contractions
from .multibn import multi_batch_norm_terms
from .normalized import output_batch_norm_below
from .symbolic_corrections import GRAM_MEAN_FIELD, VARIANCES
from .symbolic_placements import (DeepBatchNormPart, HiddenBatchNormPart, NamedPart, NumericPart, OutputBatchNormPart,
                                  coupling_closed_form, entry_variance_s, full_batch_norm_statistics,
                                  placement_of, placement_statistics)

__all__ = ["CHAIN_PLACEMENTS", "BelowOutputNorm", "PairBatchNormPart", "BelowPairing", "BelowContraction",
           "MultiBatchNormPart", "ChainPart", "NumericStatistic", "chain_placement_of", "chain_parts", "numeric_claims",
           "REFERENCE_SAMPLES"]

#: the placements derived here (what :func:`chain_placement_of` returns)
CHAIN_PLACEMENTS = ("batch+batch-center:last", "batch+batch:last", "batch:1+batch", "chain", "numeric")
#: T of the reference point at which :func:`numeric_claims` asks the numeric path what it derives
REFERENCE_SAMPLES = 8
_CONTRACTIONS = ("S_KK", "KT_1", "S_KT", "Y_1", "S_Y")


def _inner(net: Network) -> Network:
    """The network without its output normalization."""
    return net.with_(norms=tuple(n for n in net.norms if n.layer < net.depth))


#: the parts a BelowOutputNorm can wrap (by class name)
_BELOW_PARTS = {"HiddenBatchNormPart": HiddenBatchNormPart, "DeepBatchNormPart": DeepBatchNormPart}


class BelowOutputNorm(NumericPart):
    """A numeric part of the network below the output batch norm (the hidden batch norm alone); unevaluated.

    ``part``: a :class:`~meanfield.finite.symbolic_placements.HiddenBatchNormPart` or
    :class:`~meanfield.finite.symbolic_placements.DeepBatchNormPart`; :meth:`value` is its value for the network
    without its output normalization.

    Example:
        >>> a = BelowOutputNorm(HiddenBatchNormPart("stein_tt"))
        >>> a
        HBN_stein[tt]|_in
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:2", "batch-center:last"])
        >>> a.value(net, 64, 8) == HiddenBatchNormPart("stein_tt").value(Network(3, "tanh", 2, 0.1,
        ...                                                                        norms=["batch:2"]), 64, 8)
        True
    """

    def __new__(cls, part: Any):
        if type(part).__name__ not in _BELOW_PARTS or not isinstance(part, tuple(_BELOW_PARTS.values())):
            raise InvalidArgument("part", part, "a HiddenBatchNormPart or DeepBatchNormPart")
        # the part by name, not as an argument: evaluate() values every NumericPart it finds in a tree
        return sympy.Expr.__new__(cls, sympy.Symbol(type(part).__name__), sympy.Symbol(part.name))

    @property
    def part(self) -> NumericPart:
        return _BELOW_PARTS[self.args[0].name](self.args[1].name)

    def value(self, net: Network, width: int, samples: int) -> float:
        """The part of the network without its output normalization at M = width, T = samples."""
        return self.part.value(_inner(net), width, samples)

    def _sympystr(self, printer: Any) -> str:
        return f"{printer.doprint(self.part)}|_in"

    def _latex(self, printer: Any) -> str:
        return rf"\left.{printer.doprint(self.part)}\right|_{{\mathrm{{in}}}}"


#: PairBatchNormPart names -> BatchNormPairTerms fields
_PAIR = {"s_same": "s_same", "s_below": "s_below", "s_cross": "s_cross"}


class PairBatchNormPart(NamedPart):
    """One entry-variance part of s behind a hidden batch norm and a centre-only one on the output; unevaluated.

    ``name``: s_same (the units with the output weights' share of sum_ts Var (Pi G^in Pi)_ts, times C / P), s_below
    (the layers below's), s_cross (between outputs, times C (C - 1) / P). :meth:`value` is the field of the same name
    of :func:`meanfield.finite.bnpair.batch_norm_pair_terms`.

    Example:
        >>> a = PairBatchNormPart("s_below")
        >>> a
        BNP[s_below]
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:2", "batch-center:last"])
        >>> a.value(net, 64, 8) == batch_norm_pair_terms(net, 64, 8).s_below
        True
    """

    NAMES = tuple(_PAIR)

    def value(self, net: Network, width: int, samples: int) -> float:
        """The part at M = width, T = samples (InvalidArgument where the numeric path does not derive it)."""
        got = getattr(batch_norm_pair_terms(net, width, samples), _PAIR[self.name])
        if got is None:
            raise InvalidArgument("net", net.describe(), "a network whose projected entry variances are derived")
        return float(got)

    def _sympystr(self, printer: Any) -> str:
        return f"BNP[{self.name}]"

    def _latex(self, printer: Any) -> str:
        return rf"\mathcal{{P}}^{{\mathrm{{{self.name[2:]}}}}}_{{s}}"


class BelowPairing(NamedPart):
    """X_i of the entry covariances below a full batch norm on the output (i = 1, 2, 3); unevaluated.

    ``name``: same_i (Cov(Theta_00(u, v), Theta_00(u', v')), Theta = T G^in) or cross_i (Theta_01, between outputs)
    contracted with Pi Pi in the pairing i ((01)(23), (02)(13), (03)(12)) over the T^4 index tuples.
    :meth:`value` is :func:`meanfield.finite.normalized.output_batch_norm_below`'s ``same`` / ``cross``.

    Example:
        >>> BelowPairing("same_2")
        X_same[2]
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:2", "batch:last"])
        >>> BelowPairing("same_2").value(net, 64, 8) == output_batch_norm_below(net, 64, 8).same[1]
        True
    """

    NAMES = tuple(f"{k}_{i}" for k in ("same", "cross") for i in (1, 2, 3))

    def value(self, net: Network, width: int, samples: int) -> float:
        """The pairing at M = width, T = samples (``net`` the normalized network)."""
        kind, i = self.name.split("_")
        return float(getattr(output_batch_norm_below(net, width, samples), kind)[int(i) - 1])

    def _sympystr(self, printer: Any) -> str:
        kind, i = self.name.split("_")
        return f"X_{kind}[{i}]"

    def _latex(self, printer: Any) -> str:
        kind, i = self.name.split("_")
        return rf"\mathcal{{X}}^{{\mathrm{{{kind}}}}}_{{{i}}}"


@functools.lru_cache(maxsize=32)
def _contractions(net: Network, width: int, samples: int) -> dict:
    """S_KK, KT_1, S_KT, Y_1, S_Y of the world below a full batch norm on the output (that of
    :func:`meanfield.finite.normalized.output_batch_norm_below`, which a hidden batch norm's T-dependent world is)."""
    b = output_batch_norm_below(net, width, samples)
    w, L = b.world, net.depth
    ML, sw = net.widths(width)[L - 1], float(net.sigma_w2[L - 1])
    kk, kt, yy = world_contractions(w, ML, sw, samples)
    return dict(S_KK=float(kk.sum()), KT_1=float(kt[0]), S_KT=float(kt.sum()), Y_1=float(yy[0]), S_Y=float(yy.sum()))


class BelowContraction(NamedPart):
    """One of the five contractions S_KK, KT_1, S_KT, Y_1, S_Y of the four-sample world below a full batch norm on the
    output (the coupling terms' input), taken from the world the numeric path uses; unevaluated.

    X_1 = sum X_abcd Pi_ab Pi_cd and S_X = X_1 + X_2 + X_3 over the T^4 index tuples for X = Cov(K, K), KT =
    Cov(K, M_{L-1} K + sigma_w^2 N) and Y. :meth:`value` contracts :func:`meanfield.finite.normalized.
    output_batch_norm_below`'s world (behind a hidden batch norm it depends on T) as
    :func:`meanfield.finite.normalized.coupling_contractions` does a T-free one.

    Example:
        >>> BelowContraction("S_KK")
        W[S_KK]
        >>> net = Network(3, "relu", 2, 0.1, norms=["batch:last"])
        >>> from meanfield.finite.normalized import coupling_contractions
        >>> abs(BelowContraction("S_Y").value(net, 64, 8) / coupling_contractions(net, 64, 8)["S_Y"] - 1) < 1e-12
        True
    """

    NAMES = _CONTRACTIONS

    def value(self, net: Network, width: int, samples: int) -> float:
        """The contraction at M = width, T = samples (``net`` the normalized network)."""
        return _contractions(net, width, samples)[self.name]

    def _sympystr(self, printer: Any) -> str:
        return f"W[{self.name}]"

    def _latex(self, printer: Any) -> str:
        return rf"\mathcal{{W}}_{{\mathrm{{{self.name.replace('_', '')}}}}}"


#: MultiBatchNormPart names -> (MultiBatchNormTerms field, index into its entry_variances or None)
_MULTI = {"shift_tt": ("shift_diag", None), "shift_ts": ("shift_offdiag", None), "var_tt": ("entry_variances", 0),
          "var_ts": ("entry_variances", 1), "xsq_tt": ("entry_variances", 2), "xsq_ts": ("entry_variances", 3)}


class MultiBatchNormPart(NamedPart):
    """One O(1/M) part of a chain of norms with a hidden batch norm (:mod:`meanfield.finite.multibn`); unevaluated.

    ``name``: shift_tt, shift_ts (E G_p - G_p_mf, Gram units: the chain of the norms' steps carried up by the plain
    recursion), var_tt, var_ts, xsq_tt, xsq_ts (the entry variances Var G_kk and E G_kl^2 of one entry).
    :meth:`value` is the field of the same meaning of :func:`meanfield.finite.multibn.multi_batch_norm_terms`.

    Example:
        >>> a = MultiBatchNormPart("shift_tt")
        >>> a
        MBN[shift_tt]
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:1", "batch:2"])
        >>> a.value(net, 64, 8) == multi_batch_norm_terms(net, 64, 8).shift_diag
        True
    """

    NAMES = tuple(_MULTI)
    FIELDS = _MULTI
    TAG, LETTER = "MBN", "M"
    TERMS = staticmethod(multi_batch_norm_terms)


#: ChainPart names -> (ChainTerms field, index or None)
_CHAIN = {"ntk_tt": ("ntk_shift", 0), "ntk_ts": ("ntk_shift", 1), "shift_tt": ("shift_diag", None),
          "shift_ts": ("shift_offdiag", None), "var_tt": ("entry_variances", 0), "var_ts": ("entry_variances", 1),
          "xsq_tt": ("entry_variances", 2), "xsq_ts": ("entry_variances", 3)}


class ChainPart(NamedPart):
    """One O(1/M) part of a chain of hidden batch norms (:mod:`meanfield.finite.chain`); unevaluated.

    ``name``: ntk_tt, ntk_ts (dTheta_p, the O(1) shift of T E G^in_p of the network without its output norm: the
    chain's steps carried up to the output's pre-activations), shift_tt, shift_ts (E G_p - G_p_mf, Gram units),
    var_tt, var_ts, xsq_tt, xsq_ts (the entry variances, where the chain derives them). :meth:`value` is the field of
    the same meaning of :func:`meanfield.finite.chain.chain_terms`.

    Example:
        >>> a = ChainPart("ntk_tt")
        >>> a
        CH[ntk_tt]
        >>> net = Network(4, "tanh", 1, 0.1, norms=["batch:1", "batch:2", "batch:3"])
        >>> a.value(net, 64, 8) == chain_terms(net, 64, 8).ntk_shift[0]
        True
    """

    NAMES = tuple(_CHAIN)
    FIELDS = _CHAIN
    TAG, LETTER = "CH", "K"
    TERMS = staticmethod(chain_terms)


@functools.lru_cache(maxsize=32)
def _predicted(net: Network, width: int, samples: int) -> tuple:
    """predict's mean-field and "1/M" statistics at (width, samples)."""
    return predict(net, width, samples), predict(net, width, samples, finite_width="1/M")


#: NumericStatistic names -> the predict statistic it is the O(1/M) term of
_NUMERIC = {"shift_tt": "gram_diag", "shift_ts": "gram_offdiag", "shift_s": "s"}


class NumericStatistic(NamedPart):
    """The numeric path's whole O(1/M) term of one statistic (the generic fallback); unevaluated.

    ``name``: shift_tt, shift_ts (E G_p - G_p_mf), shift_s (s - s_mf): ``predict(net, M, T, finite_width="1/M")``
    less ``predict(net, M, T)``. :meth:`value` raises InvalidArgument where predict does not claim the statistic
    (its ``includes_1_over_M``).

    Example:
        >>> a = NumericStatistic("shift_tt")
        >>> a
        NUM[shift_tt]
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:1", "batch:2"])
        >>> a.value(net, 64, 8) == float(predict(net, 64, 8, finite_width="1/M").gram_diag
        ...                               - predict(net, 64, 8).gram_diag)
        True
    """

    NAMES = tuple(_NUMERIC)

    def value(self, net: Network, width: int, samples: int) -> float:
        """The term at M = width, T = samples (InvalidArgument where predict does not claim it)."""
        base, corrected = _predicted(net, width, samples)
        stat = _NUMERIC[self.name]
        if stat not in corrected.includes_1_over_M:
            raise InvalidArgument("net", net.describe(), f"a network whose numeric 1/M path derives {stat} at "
                                  f"M = {width}, T = {samples}")
        return float(getattr(corrected, stat)) - float(getattr(base, stat))

    def _sympystr(self, printer: Any) -> str:
        return f"NUM[{self.name}]"

    def _latex(self, printer: Any) -> str:
        part, pair = self.name.rsplit("_", 1)
        return rf"\mathcal{{N}}^{{\mathrm{{{part}}}}}_{{\mathrm{{{pair}}}}}"


def _reference_width(net: Network) -> int:
    """The smallest M >= 64 with every alpha_l M whole."""
    step = math.lcm(*(Fraction(float(a)).limit_denominator(1 << 20).denominator for a in net.alphas))
    return step * -(-64 // step)


@functools.lru_cache(maxsize=64)
def numeric_claims(net: Network) -> frozenset:
    """The statistics ``predict(net, M, T, finite_width="1/M")`` derives (its ``includes_1_over_M``) at the reference
    point: M the smallest width >= 64 with every alpha_l M whole, T = max(:data:`REFERENCE_SAMPLES`, the norms' least);
    empty where predict refuses the network there.

    Raises:
        InvalidArgument: not a numeric Network.

    Example:
        >>> sorted(numeric_claims(Network(3, "tanh", 2, 0.1, norms=["layer:1", "batch:2"])))
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
    """
    if not isinstance(net, Network) or net.is_symbolic:
        raise InvalidArgument("net", net, "a numeric meanfield Network")
    samples = max(REFERENCE_SAMPLES, net.min_samples())
    try:
        return frozenset(predict(net, _reference_width(net), samples, finite_width="1/M").includes_1_over_M)
    except InvalidArgument:     # predict refuses the network at the reference point: nothing is derived there
        return frozenset()


def _multi(net: Network) -> str | None:
    """multibn's placement: full batch norms on hidden layers 1 and l (1 < l <= L - 1), no other normalization (one
    full batch norm above layer norms is the chain's, which derives its s too)."""
    if len(net.norms) != 2 or net.depth < 3:
        return None
    batch = [n for n in net.norms if isinstance(n, BatchNorm)]
    if len(batch) != 2 or any(n.center_only for n in batch):
        return None
    low, high = sorted(n.layer for n in batch)
    return "batch:1+batch" if low == 1 and 1 < high <= net.depth - 1 else None


def chain_placement_of(net: Network, *, fallback: bool = True) -> str | None:
    """Which of :data:`CHAIN_PLACEMENTS` ``net`` is, or None (the structured placements by the norms' layers; with
    ``fallback`` "numeric" for any other normalized network the numeric path claims statistics for,
    :func:`numeric_claims`; None for the placements of
    :func:`meanfield.finite.symbolic_placements.placement_of` and for a single norm on the output, which come first).

    Example:
        >>> chain_placement_of(Network(4, "relu", 2, 0.1, norms=["batch-center:2", "batch-center:last"]))
        'batch+batch-center:last'
        >>> chain_placement_of(Network(3, "relu", 2, 0.1, norms=["batch:1", "layer:2"]))
        'chain'
        >>> chain_placement_of(Network(3, "relu", 2, 0.1)) is None
        True
    """
    if not isinstance(net, Network) or net.is_symbolic or not net.norms or placement_of(net) is not None:
        return None
    if len(net.norms) == 1 and net.norms[0].layer == net.depth:     # one output norm: symbolic_normalized's own
        return None
    pair = pair_placement(net)
    if pair is not None:
        return "batch+batch-center:last" if pair[1].center_only else "batch+batch:last"
    where = _multi(net)
    if where is not None:
        return where
    if chain_placement(net) is not None and numeric_claims(net):
        return "chain"
    return "numeric" if fallback and numeric_claims(net) else None


def _hidden_shift(net: Network) -> tuple:
    """(dG_tt, dG_ts, aux Eq's, parts, note, the first part's symbols) of the hidden batch norm below the output's
    (the network without it)."""
    hidden = pair_placement(net)[0]
    aux, total = [], {}
    names = ("shift", "second", "stein") if hidden.layer == net.depth - 1 else ("deep",)
    for pair in ("tt", "ts"):
        syms = []
        for part in names:
            sym = sympy.Symbol(f"dG_{part}_{pair}")
            atom = (HiddenBatchNormPart(f"{part}_{pair}") if part != "deep" else DeepBatchNormPart(f"shift_{pair}"))
            aux.append(sympy.Eq(sym, BelowOutputNorm(atom), evaluate=False))
            syms.append(sym)
        total[pair] = sympy.Add(*syms)
    parts = tuple((f"{p}_{q}", sympy.Symbol(f"dG_{p}_{q}")) for q in ("tt", "ts") for p in names)
    if names[0] == "deep":
        note = (f"the hidden batch norm {hidden}'s O(1/M) terms dG_deep_p = E G^in_p - G^in_p_mf: DBN[shift_p]|_in "
                "atoms (meanfield.finite.deepbn.deep_batch_norm_terms of the network without the output's norm)")
    else:
        note = (f"the hidden batch norm {hidden}'s O(1/M) terms E G^in_p - G^in_p_mf = dG_shift_p + dG_second_p + "
                "dG_stein_p: HBN[...]|_in atoms (meanfield.finite.hiddenbn.hidden_batch_norm_terms of the network "
                "without the output's norm)")
    return total["tt"], total["ts"], aux, parts, note, tuple(sympy.Symbol(f"dG_{names[0]}_{q}") for q in ("tt", "ts"))


def _pair_centre(net: Network, mf: Any) -> dict:
    dd, do, aux, parts, note, shifts = _hidden_shift(net)
    gd = GRAM_MEAN_FIELD[0] + (1 - 1 / T) * (dd - do)
    go = GRAM_MEAN_FIELD[1] - (dd - do) / T
    syms = sympy.symbols("s_same s_below s_cross")
    aux += [sympy.Eq(sym, PairBatchNormPart(sym.name), evaluate=False) for sym in syms]
    s = C * (T * gd**2 + T * (T - 1) * go**2) / mf.P + sympy.Add(*syms)
    notes = ("G = Pi G^in Pi per output block through the centre-only batch norm on the output, exact: E G_tt = "
             "G_tt_mf + (1 - 1/T)(dG_tt - dG_ts), E G_ts = G_ts_mf - (dG_tt - dG_ts)/T; " + note,
             "s = C [T E G_tt^2 + T (T - 1) E G_ts^2] / P + s_same + s_below + s_cross (the projected entry variances: "
             "the units with the output weights, the layers below, between outputs; BNP[...] atoms, "
             "meanfield.finite.bnpair.batch_norm_pair_terms, the units' laws on a fixed quasi-Monte Carlo rule)")
    parts += tuple((sym.name, sym) for sym in syms)
    return dict(stats=placement_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=notes, missing=(),
                parts=parts, shifts=shifts)


def _pair_full(net: Network, mf: Any) -> dict:
    L = net.depth
    sw = sympy.Rational(repr(float(net.sigma_w2[L - 1])))
    ML = sympy.Rational(repr(float(net.alphas[L - 1]))) * M      # the last hidden layer's width M_{L-1}
    dd, do, aux, _, note, shifts = _hidden_shift(net)
    syms = sympy.symbols("D_bn v_bn dv_bn v_w D_w")
    D, v, dv, vw, Dw = syms
    aux += [sympy.Eq(sym, OutputBatchNormPart(part), evaluate=False)
            for sym, part in zip(syms, ("D0", "v", "dv", "v_w", "D_w"))]
    contractions = sympy.symbols(" ".join(_CONTRACTIONS))
    aux += [sympy.Eq(sym, BelowContraction(sym.name), evaluate=False) for sym in contractions]
    dD = sympy.Symbol("dD_bn")
    aux.append(sympy.Eq(dD, T * (dd - do), evaluate=False))
    same, cross = sympy.symbols("Sum_same Sum_cross")
    x = {name: BelowPairing(name) for name in BelowPairing.NAMES}
    aux.append(sympy.Eq(same, (1 - 2 / (T - 1) + 1 / (T**2 - 1)) * x["same_2"]
                        + (x["same_1"] + x["same_3"]) / (T**2 - 1), evaluate=False))
    if net.outputs >= 2:
        aux.append(sympy.Eq(cross, x["cross_2"], evaluate=False))
    cpl = sympy.symbols("Cpl_tt Cpl_ts Cpl_F2 Cpl_s")
    trace, square = coupling_closed_form(Dw, vw, sw, ML, contractions)
    aux += [sympy.Eq(cpl[0], trace / T, evaluate=False), sympy.Eq(cpl[1], -cpl[0] / (T - 1), evaluate=False),
            sympy.Eq(cpl[2], square, evaluate=False), sympy.Eq(cpl[3], C * cpl[2] / mf.P, evaluate=False)]
    gd, go, s, parts = full_batch_norm_statistics((D, dD), (v, dv), (same, cross), (cpl[0], cpl[1], cpl[3]),
                                                  net.outputs, mf.P)
    notes = ("full batch norm on the output behind a hidden batch norm: E G = G_mf (1 + dD_bn/D_bn) v_bn/(v_bn + "
             "dv_bn) + Cpl, s = s_mf (...)^2 + C E[1/sigma^4] Sum_same / (T^2 P) + C (C - 1) E[1/sigma^2]^2 "
             "((T-2)/(T-1))^2 Sum_cross / (T^2 P) + Cpl_s, symbolic in T; dD_bn = T (dG_tt - dG_ts), " + note,
             "D_bn, v_bn, dv_bn, v_w, D_w (OBN[...]) and the pairings X_same[i], X_cross[i] of the entry covariances "
             "below, and the world's contractions W[...] (meanfield.finite.normalized.output_batch_norm_below, fed by "
             "meanfield.finite.bnpair.full_output_below: the units' laws on a fixed quasi-Monte Carlo rule)",
             "the coupling terms Cpl_tt, Cpl_ts, Cpl_F2, Cpl_s in closed form in T (sphere and chi-square moments, "
             "n = T - 1) in the four-sample world of layer L - 1")
    return dict(stats=placement_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=notes, missing=(),
                parts=parts, shifts=shifts)


def _chain(net: Network, where: str, mf: Any) -> dict:
    aux, syms = [], []
    for pair in ("tt", "ts"):
        sym = sympy.Symbol(f"dG_chain_{pair}")
        aux.append(sympy.Eq(sym, MultiBatchNormPart(f"shift_{pair}"), evaluate=False))
        syms.append(sym)
    gd, go = GRAM_MEAN_FIELD[0] + syms[0], GRAM_MEAN_FIELD[1] + syms[1]
    norms = ", ".join(map(str, net.norms))
    notes = [f"{norms}: E G_p = G_p_mf + dG_chain_p, the MBN[shift_p] atom of "
             "meanfield.finite.multibn.multi_batch_norm_terms (the chain of the norms' steps: the lower norm's "
             "four-sample world, the upper batch norm's terms over it by exact sphere quadrature, the plain recursion "
             "above)"]
    names = ("var_tt", "var_ts") + (("xsq_tt", "xsq_ts") if net.outputs >= 2 else ())
    aux += [sympy.Eq(sym, MultiBatchNormPart(name), evaluate=False) for sym, name in zip(VARIANCES, names)]
    s, missing = entry_variance_s(net, gd, go, mf), ()
    var_d, var_o, xd, xo = VARIANCES
    parts = [("chain_tt", syms[0]), ("chain_ts", syms[1]), ("var_diag", var_d), ("var_offdiag", var_o),
             ("cross_square_diag", xd if net.outputs >= 2 else 0),
             ("cross_square_offdiag", xo if net.outputs >= 2 else 0)]
    notes.append("entry variances Var_tt, Var_ts, Xsq_tt, Xsq_ts: MBN[var_...], MBN[xsq_...] atoms (deepbn's "
                 "four-point layer sum, gradient independence above the upper norm)")
    return dict(stats=placement_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=tuple(notes),
                missing=missing, parts=tuple(parts), shifts=tuple(syms))


def _chained(net: Network, mf: Any) -> dict:
    """Any chain of hidden batch norms (meanfield.finite.chain): the output's norm written out, the chain's parts."""
    out = chain_placement(net)[-1][1]
    aux, syms = [], []
    for pair in ("tt", "ts"):
        sym = sympy.Symbol(f"dTheta_ch_{pair}" if out != "batch" else f"dG_ch_{pair}")
        aux.append(sympy.Eq(sym, ChainPart(f"ntk_{pair}" if out != "batch" else f"shift_{pair}"), evaluate=False))
        syms.append(sym)
    norms = ", ".join(map(str, net.norms))
    if out is None:
        gd, go = GRAM_MEAN_FIELD[0] + syms[0] / T, GRAM_MEAN_FIELD[1] + syms[1] / T
        what = "E G_p = G_p_mf + dTheta_ch_p / T"
    elif out == "center":
        gd = GRAM_MEAN_FIELD[0] + (1 - 1 / T) * (syms[0] - syms[1]) / T
        go = GRAM_MEAN_FIELD[1] - (syms[0] - syms[1]) / T**2
        what = ("G = Pi G^in Pi through the centre-only batch norm on the output, exact: E G_tt = G_tt_mf + (1 - 1/T)"
                "(dTheta_ch_tt - dTheta_ch_ts) / T, E G_ts = G_ts_mf - (dTheta_ch_tt - dTheta_ch_ts) / T^2")
    else:
        gd, go = GRAM_MEAN_FIELD[0] + syms[0], GRAM_MEAN_FIELD[1] + syms[1]
        what = ("E G_p = G_p_mf + dG_ch_p (the full batch norm on the output's terms over the chain's statistics "
                "below, as one part)")
    notes = [f"{norms}: {what}; dTheta_ch_p (CH[ntk_p]) the O(1) shift of T E G^in_p of the network without its "
             "output norm, CH[...] atoms of meanfield.finite.chain.chain_terms (each batch norm's terms by exact "
             "sphere quadrature over the four-sample world below it, the plain recursion between)"]
    parts, s, missing = [(f"chain_{p}", sym) for p, sym in zip(("tt", "ts"), syms)], None, ("s",)
    if "s" in numeric_claims(net) and out is not None:     # s through a batch norm on the output: the numeric term
        aux.append(sympy.Eq(sympy.Symbol("ds_num"), NumericStatistic("shift_s"), evaluate=False))
        s, missing = sympy.Symbol("s_mf") + sympy.Symbol("ds_num"), ()
    elif "s" in numeric_claims(net):
        names = ("var_tt", "var_ts") + (("xsq_tt", "xsq_ts") if net.outputs >= 2 else ())
        aux += [sympy.Eq(sym, ChainPart(name), evaluate=False) for sym, name in zip(VARIANCES, names)]
        s, missing = entry_variance_s(net, gd, go, mf), ()
    else:
        notes.append("missing: s (the entry variances through a chain of norms are not derived)")
    return dict(stats=placement_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=tuple(notes),
                missing=missing, parts=tuple(parts), shifts=tuple(syms))


def _numeric(net: Network, mf: Any) -> dict:
    claims = numeric_claims(net)
    aux, syms = [], []
    for pair in ("tt", "ts"):
        sym = sympy.Symbol(f"dG_num_{pair}")
        aux.append(sympy.Eq(sym, NumericStatistic(f"shift_{pair}"), evaluate=False))
        syms.append(sym)
    gd, go = GRAM_MEAN_FIELD[0] + syms[0], GRAM_MEAN_FIELD[1] + syms[1]
    stats = placement_statistics(gd, go, None, mf)
    parts = [("num_tt", syms[0]), ("num_ts", syms[1])]
    if "s" in claims:
        ds = sympy.Symbol("ds_num")
        aux.append(sympy.Eq(ds, NumericStatistic("shift_s"), evaluate=False))
        stats["s"] = sympy.Symbol("s_mf") + ds
        parts.append(("num_s", ds))
    missing = tuple(k for k in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2") if k not in claims)
    for key in missing:
        stats[key] = None
    notes = (f"{', '.join(map(str, net.norms))}: no structured placement; E G_p = G_p_mf + dG_num_p"
             + (" and s = s_mf + ds_num" if "s" in claims else "") + ", each the numeric path's whole O(1/M) term "
             "(NUM[...] atoms: predict(net, M, T, finite_width='1/M') less its mean field), m and the kappa's from "
             "E G_tt, E G_ts",) + ((f"missing: {', '.join(missing)} (the numeric path does not derive them)",)
                                   if missing else ())
    return dict(stats=stats, aux=tuple(aux), steps=(), notes=notes, missing=missing, parts=tuple(parts),
                shifts=tuple(syms))


def chain_parts(net: Network, where: str, mf: Any) -> dict:
    """The statistics, auxiliary Eq's, notes, missing, named parts and shift symbols of ``net`` at a placement of
    :data:`CHAIN_PLACEMENTS` (``mf``: ``derive(net)``): the pieces of a
    :class:`~meanfield.finite.symbolic_normalized.NormalizedCorrectionDerivation`.

    ``where`` is ``chain_placement_of(net)``, or "numeric" for any network the numeric path claims statistics for
    (the generic form of a structured placement too: a cross-check).

    Raises:
        InvalidArgument: ``where`` not the network's placement (nor "numeric" with claims).

    Example:
        >>> from meanfield.theory.derivation import derive
        >>> net = Network(3, "relu", 2, 0.1, norms=["batch:2", "batch-center:last"])
        >>> chain_parts(net, "batch+batch-center:last", derive(net))["stats"]["gram_offdiag"]
        G_ts_mf - (-dG_second_ts + dG_second_tt - dG_shift_ts + dG_shift_tt - dG_stein_ts + dG_stein_tt)/T
    """
    ok = (where in CHAIN_PLACEMENTS and (chain_placement_of(net) == where
                                         or (where == "numeric" and isinstance(net, Network) and not net.is_symbolic
                                             and numeric_claims(net))))
    if not ok:
        raise InvalidArgument("where", where, f"the placement of the network ({chain_placement_of(net)})")
    if where == "numeric":
        return _numeric(net, mf)
    if where == "batch+batch-center:last":
        return _pair_centre(net, mf)
    if where == "batch+batch:last":
        return _pair_full(net, mf)
    if where == "chain":
        return _chained(net, mf)
    return _chain(net, where, mf)
