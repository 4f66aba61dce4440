"""The symbolic O(1/M) corrections behind a normalization: batch norm on the output (centre-only or full) and a layer
norm on layer 2 of three, as sympy on top of :mod:`meanfield.finite.symbolic_corrections`.

:func:`derive_network_corrections` is what ``derive(net).corrections`` reaches (through
:data:`meanfield.theory.derivation.CORRECTIONS_ENTRY`): the plain networks' recursion
(:func:`meanfield.finite.symbolic_corrections.derive_corrections`) and, for the placements the numeric 1/M path
derives, a :class:`NormalizedCorrectionDerivation` whose :meth:`~NormalizedCorrectionDerivation.evaluate` gives the
numbers of the numeric functions it is written on (each placement below names its function; for the batch norms
these are ``predict(net, M, T, finite_width="1/M")``'s):

* **centre-only batch norm on the output** (exact): G_kl = Pi G^plain_kl Pi with Pi = I - 1 1^T / T, so with the
  plain recursion's shifts dTheta_L_p, E G_tt = G_tt_mf + (1 - 1/T)(dTheta_L_tt - dTheta_L_ts) / T and E G_ts =
  G_ts_mf - (dTheta_L_tt - dTheta_L_ts) / T^2 (G_mf: derive's mean field of the normalized net, which is Pi's
  image of the plain one), and Var((Pi A Pi)_tt') = sum over (u, v, u', v') of Pi_tu Pi_t'v Pi_tu' Pi_t'v'
  Cov(A_uv, A_u'v'), written as its sum over the classes of equal labels: (number of label choices, a falling
  factorial in T) x (product of Pi entries, 1 - 1/T or -1/T) x :class:`GramCovariance` (the plain network's
  four-point covariance, :func:`meanfield.finite.fourpoint.gram_covariance`), exact in T;
* **full batch norm on the output** (:mod:`meanfield.finite.normalized`): E G = G_mf (1 + dD/D) v / (v + dv) +
  Cpl, with D = Theta_L_tt - Theta_L_ts and dD its shift (the plain recursion), v = sigma_w^2 (K_tt - K_ts) and dv
  its shift (layer L - 1 of the recursion), and s = s_mf ((1 + dD/D) v/(v + dv))^2 + C E[1/sigma^4] Sum_same
  / (T^2 P) + C (C - 1) E[1/sigma^2]^2 ((T-2)/(T-1))^2 Sum_cross / (T^2 P) + Cpl_s with the chi-square moments
  E[1/sigma^2] = T / (v (T - 3)), E[1/sigma^4] = T^2 / (v^2 (T - 3)(T - 5)) and the projector sums Sum_same,
  Sum_cross over the 15 label classes of four samples, with E[R_uu' R_vv'] = (1 - 2/(T-1) + 1/(T^2-1)) Pi_uu'
  Pi_vv' + (Pi_uv Pi_u'v' + Pi_uv' Pi_u'v) / (T^2 - 1), all symbolic in T. The coupling terms (realized-kernel
  fluctuations in the law of the output, their coupling with the NTK, the Stein term) in closed form, with
  n = T - 1 and c = (sigma_w^2 / M_{L-1})^2,

      T Cpl_tt = D (n-1) sigma_w^4 S_KK / (v^3 n (n^2-4)) - sigma_w^2 / (2 v^2) [KT_1 / (n(n-2)) + S_KT / (n(n+2))]
                 - c / v^2 [Y_1 / (n(n-2)) + S_Y / (n(n+2))],      Cpl_ts = -Cpl_tt / (T - 1),
      Cpl_F2 = 3 D^2 (n-1) sigma_w^4 S_KK / (v^4 n (n^2-4)(n-4)) - D sigma_w^2 / v^3 [3 KT_1 / (n(n-2)(n-4))
               + S_KT / (n(n+2)(n-2))] - 2 c D / v^3 [3 Y_1 / (n(n-2)(n-4)) + S_Y / (n(n+2)(n-2))],
      Cpl_s = C Cpl_F2 / P,

  where the five contractions (:class:`WorldContraction`; X_1 = sum X_abcd Pi_ab Pi_cd over the T^4 index tuples,
  S_X = X_1 + X_2 + X_3 with the other two pairings) are written as their sums over the 15 label classes: a falling
  factorial in T x products of 1 - 1/T and -1/T x :class:`WorldEntry` (the four-sample world's Cov(K_ab, K_cd),
  Cov(K_ab, N_cd) and Y^ab_cd, :func:`meanfield.finite.fourworld.realized_world`), with KT = M_{L-1} Cov(K, K) +
  sigma_w^2 Cov(K, N), and D, v there the world's own D_w, v_w (the recursion's D_bn, v_bn up to the world's
  quadrature, which is what the numeric path uses): everything is symbolic in T, and the numbers are those of
  :func:`meanfield.finite.normalized.output_batch_norm_terms`. :meth:`~NormalizedCorrectionDerivation.expansion`
  gives E G = M a_0 + a_1 + O(1/M), the couplings' M -> infinity limit in a_1 symbolic in T;
* **layer norm on layer 2 of a three-layer net with equal widths** (:mod:`meanfield.finite.layernorm`): E G_p =
  G_p_mf + dTheta_ln_p / T, the shift written out as dTheta_ln2_p, the sum of six parts (projector, stein, cross as
  Gaussian expectations; forward, below, normalization :class:`LayerNormPart` atoms of
  :func:`meanfield.finite.layernorm.layer_norm_gram_means`), while the statistics take dTheta_ln_p from the general
  recursion as predict does (~1e-9 relative apart); s with the entry variances of the four-point engine through the
  norm (:class:`meanfield.finite.symbolic_placements.LayerNormCovariance` atoms);
* layer norms on any hidden layers (any depth and widths, possibly with a centre-only or a full batch norm on the
  output) and one batch norm (full or centre-only) on any hidden layer: :mod:`meanfield.finite.symbolic_placements`;
* a hidden batch norm with a batch norm on the output, two hidden batch norms, a batch norm over layer norms, any
  chain of hidden batch norms, and (generic fallback, "numeric") any other network the numeric path claims statistics
  for: :mod:`meanfield.finite.symbolic_chains`.

Other placements (e.g. an activation with unknown kinks on a batch-normalized layer) are not derived:
:func:`derive_network_corrections` raises InvalidArgument naming the normalization and listing what is derived, never
returns numbers for them.
"""

from __future__ import annotations

import functools
import math
import warnings
from fractions import Fraction
from dataclasses import dataclass
from typing import Any

import sympy

from ..errors import InvalidArgument, check_int
from ..integrals.symbolic import GaussianExpectation, PairExpectation
from ..spec.network import BatchNorm, LayerNorm, Network
from ..spec.symbols import LATEX_NAMES, C, M, T
from ..theory.derivation import derive
from .fourpoint import gram_covariance
from .fourworld import pair_index, realized_world
from .layernorm import layer_norm_gram_means
from .normalized import DRAWS, coupling_contractions, output_batch_norm_terms
from .symbolic_placements import PLACEMENTS as MORE_PLACEMENTS, NumericPart, layer_norm_variance_equations
from .symbolic_placements import LayerNormShift, coupling_closed_form, placement_of, placement_parts
from .symbolic_placements import full_batch_norm_statistics, label_class_sum, projector_sum
from .symbolic_chains import CHAIN_PLACEMENTS, chain_parts, chain_placement_of
from .symbolic_corrections import (DPHI, GRAM_MEAN_FIELD, P_SS, P_TS, P_TT, PHI, U_S, U_T, VARIANCES, Y_S, Y_T,
                                   CorrectionDerivation, NormalExpectation, centring_weight, derive_corrections,
                                   projected_variance)

__all__ = ["GramCovariance", "BatchNormCoupling", "LayerNormPart", "NormalizedCorrectionDerivation",
           "derive_network_corrections", "correction_placement", "S_MEAN_FIELD", "DERIVED_PLACEMENTS", "WorldEntry",
           "WorldContraction", "CONTRACTIONS"]

#: derive's mean-field s of the (normalized) network, in the corrected s of the batch norms
S_MEAN_FIELD = sympy.Symbol("s_mf")
#: the placements with symbolic O(1/M) corrections (what :func:`correction_placement` returns)
DERIVED_PLACEMENTS = ("none", "batch-center:last", "batch:last", "layer:2") + MORE_PLACEMENTS + CHAIN_PLACEMENTS
_LAYER_PARTS = ("forward", "below", "normalization", "projector", "stein", "cross")
#: the five contractions of the full batch norm's coupling terms (:class:`WorldContraction` names)
CONTRACTIONS = ("S_KK", "KT_1", "S_KT", "Y_1", "S_Y")


def _int_args(values: Any) -> tuple:
    return tuple(sympy.Integer(int(v)) for v in values)


class GramCovariance(sympy.Expr):
    """Cov(Theta_kl(u, v), Theta_kl(u', v')) of the plain network below the normalization (O(1/M)); unevaluated.

    Theta_kl = T G_kl between outputs k, l; equal labels are the same sample. :meth:`value` is
    :func:`meanfield.finite.fourpoint.gram_covariance`.

    Example:
        >>> c = GramCovariance((0, 0), (0, 1, 0, 1))
        >>> c
        Cov[Theta_00(0, 1), Theta_00(0, 1)]
        >>> net = Network(2, "relu", 2, 0.1)
        >>> c.value(net, 64) == gram_covariance(net, 64, (0, 0, 0, 1), (0, 0, 0, 1))
        True
    """

    is_real = True
    is_finite = True

    def __new__(cls, outputs: Any, labels: Any):
        outputs, labels = tuple(outputs), tuple(labels)
        if len(outputs) != 2 or len(labels) != 4 or min(outputs + labels) < 0:
            raise InvalidArgument("outputs, labels", (outputs, labels), "two output and four sample labels, >= 0")
        return sympy.Expr.__new__(cls, *_int_args(outputs + labels))

    @property
    def free_symbols(self):
        return set()

    def value(self, plain: Network, width: int) -> float:
        """The covariance at M = width for the plain network ``plain``."""
        k, l, u, v, u2, v2 = (int(a) for a in self.args)
        return gram_covariance(plain, width, (k, l, u, v), (k, l, u2, v2))

    def _sympystr(self, printer: Any) -> str:
        k, l, u, v, u2, v2 = (int(a) for a in self.args)
        return f"Cov[Theta_{k}{l}({u}, {v}), Theta_{k}{l}({u2}, {v2})]"

    def _latex(self, printer: Any) -> str:
        k, l, u, v, u2, v2 = (int(a) for a in self.args)
        return (rf"\operatorname{{Cov}}\left(\Theta_{{{k}{l}}}({u}, {v}), "
                rf"\Theta_{{{k}{l}}}({u2}, {v2})\right)")


class BatchNormCoupling(sympy.Expr):
    """Deprecated: the coupling term Cpl_p (p = tt, ts or s) of a full batch norm on the output as one opaque atom.

    The derivation now writes Cpl_tt, Cpl_ts and Cpl_s in closed form (module docstring; :class:`WorldContraction`,
    :class:`WorldEntry`); this atom is kept for code that built it, and warns. :meth:`value` is the numeric path's
    (:func:`meanfield.finite.normalized.output_batch_norm_terms`, its coupling_diag, coupling_offdiag, coupling_s).

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     c = BatchNormCoupling("s")
        >>> c, caught[0].category.__name__
        (Cpl[s], 'DeprecationWarning')
        >>> net = Network(2, "tanh", 2, 0.1, norms=["batch:last"])
        >>> c.value(net, 32, 10) == output_batch_norm_terms(net, 32, 10).coupling_s
        True
    """

    is_real = True
    is_finite = True
    _FIELDS = {"tt": "coupling_diag", "ts": "coupling_offdiag", "s": "coupling_s"}

    def __new__(cls, which: str):
        if which not in cls._FIELDS:
            raise InvalidArgument("which", which, "one of 'tt', 'ts', 's'")
        warnings.warn("BatchNormCoupling is deprecated: derive(net).corrections writes the coupling terms in closed "
                      "form (WorldContraction, WorldEntry)", DeprecationWarning, stacklevel=2)
        return sympy.Expr.__new__(cls, sympy.Symbol(which))

    @property
    def which(self) -> str:
        return self.args[0].name

    @property
    def free_symbols(self):
        return set()

    def value(self, net: Network, width: int, samples: int, *, draws: int = DRAWS) -> float:
        """The numeric path's (exact) value at M = width, T = samples (``draws``: ignored, the terms are exact)."""
        # called as predict calls it, so that its cached terms are these (lru_cache keys on the kwargs)
        terms = output_batch_norm_terms(net, width, samples)
        return float(getattr(terms, self._FIELDS[self.which]))

    def _sympystr(self, printer: Any) -> str:
        return f"Cpl[{self.which}]"

    def _latex(self, printer: Any) -> str:
        return rf"\mathcal{{C}}_{{\mathrm{{{self.which}}}}}"


class LayerNormPart(sympy.Expr):
    """T times one O(1/M) part of E G_p (p = tt, ts) behind a layer norm on layer 2 of three; unevaluated.

    ``part`` is forward (the realized kernel above the norm), below (the layers below: mean shifts, Jensen and
    covariance terms), normalization (the norm's own shift of E[phi' phi' / (s_t s_s)]), projector (the Jacobian's
    removed directions), stein or cross (the sandwiched-NTK terms); each is a sum of two-sample Gaussian expectations
    over the normalized law (:mod:`meanfield.finite.layernorm`), and :meth:`value` is
    :func:`meanfield.finite.layernorm.layer_norm_gram_means`' term times T.

    Example:
        >>> LayerNormPart("stein", "tt")
        LN_stein[tt]
    """

    is_real = True
    is_finite = True

    def __new__(cls, part: str, pair: str):
        if part not in _LAYER_PARTS or pair not in ("tt", "ts"):
            raise InvalidArgument("part, pair", (part, pair), f"part in {_LAYER_PARTS}, pair 'tt' or 'ts'")
        return sympy.Expr.__new__(cls, sympy.Symbol(part), sympy.Symbol(pair))

    @property
    def free_symbols(self):
        return set()

    def value(self, net: Network, width: int, samples: int) -> float:
        """The part at M = width, T = samples, in units of T G."""
        part, pair = (a.name for a in self.args)
        terms = layer_norm_gram_means(net, width, samples).terms
        return samples * float(terms["diag" if pair == "tt" else "offdiag"][part])

    def _sympystr(self, printer: Any) -> str:
        return f"LN_{self.args[0].name}[{self.args[1].name}]"

    def _latex(self, printer: Any) -> str:
        return rf"\mathcal{{L}}^{{\mathrm{{{self.args[0].name}}}}}_{{\mathrm{{{self.args[1].name}}}}}"


class WorldEntry(sympy.Expr):
    """One entry of the four-sample world below a full batch norm on the output; unevaluated.

    ``kind`` "KK": Cov(K_ab, K_cd) and "KN": Cov(K_ab, N_cd) of the last hidden layer's realized kernel K and NTK
    average N (O(1/M) and O(1)), labels (a, b, c, d); "Y": the sandwiched NTK Y^ab_cd = h_c^T X_ab h_d (O(M^2)),
    labels (a, b, c, d); "K", "N": the means E K_ab, E N_ab, labels (a, b) (the world's own mean field, the
    recursion's K and N up to its quadrature). Labels are canonical (numbered in order of first appearance: one of
    the classes of equal samples). :meth:`value` is :func:`meanfield.finite.fourworld.realized_world`'s entry.

    Example:
        >>> e = WorldEntry("KN", (0, 1, 0, 2))
        >>> e
        Cov[K(0, 1), N(0, 2)]
        >>> plain = Network(2, "tanh", 2, 0.1)
        >>> w = realized_world(plain, 32)
        >>> e.value(plain, 32) == float(w.cov[pair_index(0, 1), 10 + pair_index(0, 2)])
        True
    """

    is_real = True
    is_finite = True
    KINDS = ("KK", "KN", "Y", "K", "N")

    def __new__(cls, kind: str, labels: Any):
        labels = tuple(labels) if isinstance(labels, (tuple, list)) else labels
        size = 2 if kind in ("K", "N") else 4
        canonical = (isinstance(labels, tuple) and len(labels) == size and all(isinstance(x, int) for x in labels)
                     and labels == _canonical(labels))
        if kind not in cls.KINDS or not canonical:
            raise InvalidArgument("kind, labels", (kind, labels), f"kind in {cls.KINDS}, four labels (two for K, N) "
                                  "numbered in order of first appearance, e.g. (0, 1, 0, 2)")
        return sympy.Expr.__new__(cls, sympy.Symbol(kind), *_int_args(labels))

    @property
    def free_symbols(self):
        return set()

    @property
    def kind(self) -> str:
        return self.args[0].name

    @property
    def labels(self) -> tuple:
        return tuple(int(a) for a in self.args[1:])

    def value(self, plain: Network, width: int) -> float:
        """The entry at M = width for the plain network ``plain`` (the normalized network without its norm)."""
        w = realized_world(plain, width)
        if self.kind in ("K", "N"):
            return float((w.k if self.kind == "K" else w.n)[self.labels[1]])
        a, b, c, d = self.labels
        if self.kind == "Y":
            return float(w.y[(a, b)][c, d])
        return float(w.cov[pair_index(a, b), (10 if self.kind == "KN" else 0) + pair_index(c, d)])

    def _sympystr(self, printer: Any) -> str:
        if self.kind in ("K", "N"):
            return f"E[{self.kind}({self.labels[0]}, {self.labels[1]})]"
        a, b, c, d = self.labels
        if self.kind == "Y":
            return f"Y^({a}, {b})[{c}, {d}]"
        return f"Cov[K({a}, {b}), {self.kind[1]}({c}, {d})]"

    def _latex(self, printer: Any) -> str:
        if self.kind in ("K", "N"):
            return rf"\mathbb{{E}}\left[{self.kind}_{{{self.labels[0]}{self.labels[1]}}}\right]"
        a, b, c, d = self.labels
        if self.kind == "Y":
            return rf"Y^{{{a}{b}}}_{{{c}{d}}}"
        return rf"\operatorname{{Cov}}\left(K_{{{a}{b}}}, {self.kind[1]}_{{{c}{d}}}\right)"


class WorldContraction(sympy.Symbol):
    """One of the five contractions S_KK, KT_1, S_KT, Y_1, S_Y of the full batch norm's coupling terms (a symbol).

    X_1 = sum over the T^4 index tuples of X_abcd Pi_ab Pi_cd and S_X = X_1 + X_2 + X_3 (the pairings (ac)(bd),
    (ad)(bc) added), for X = Cov(K, K), KT = Cov(K, M_{L-1} K + sigma_w^2 N) and Y (:class:`WorldEntry`); the
    derivation defines each as its sum over the 15 label classes (``auxiliary``), and :meth:`value` is the numeric
    path's (:func:`meanfield.finite.normalized.coupling_contractions`).

    Example:
        >>> s = WorldContraction("S_KK")
        >>> print(s, sympy.latex(s))
        S_KK \\mathcal{S}_{KK}
        >>> net = Network(2, "tanh", 2, 0.1, norms=["batch:last"])
        >>> s.value(net, 32, 10) == coupling_contractions(net, 32, 10)["S_KK"]
        True
    """

    _LATEX = {"S_KK": r"\mathcal{S}_{KK}", "KT_1": r"\mathcal{X}^{KT}_{1}", "S_KT": r"\mathcal{S}_{KT}",
              "Y_1": r"\mathcal{X}^{Y}_{1}", "S_Y": r"\mathcal{S}_{Y}"}

    def __new__(cls, name: str, **assumptions: Any):
        if name not in CONTRACTIONS:
            raise InvalidArgument("name", name, f"one of {CONTRACTIONS}")
        return super().__new__(cls, name, real=True)

    def value(self, net: Network, width: int, samples: int) -> float:
        """The numeric path's contraction at M = width, T = samples (``net`` the normalized network)."""
        return coupling_contractions(net, width, samples)[self.name]

    def _latex(self, printer: Any) -> str:
        return self._LATEX[self.name]


def _leading(atom: WorldEntry, plain: Network, widths: tuple) -> sympy.Expr:
    """The world entry at its leading order in M, x M^k (k = 0, -1, 0, 1, 2 for K, KK, KN, N, Y), x from the widths
    (b, 2b, 4b). The forms are exact (:func:`meanfield.finite.fourworld.realized_world`: covariances of K are exactly
    width-free values over M, the NTK average and Cov(K, N) affine in M and 1/M, Y quadratic in M)."""
    f = [atom.value(plain, w) for w in widths[:2]] + ([atom.value(plain, widths[2])] if atom.kind == "Y" else [])
    b = widths[0]
    x = {"K": lambda: f[0],
         "KK": lambda: f[0] * b,
         "KN": lambda: 2 * f[1] - f[0],                 # x + y / M
         "N": lambda: (f[1] - f[0]) / b,                # x M + y
         "Y": lambda: ((f[2] - f[1]) / (2 * b) - (f[1] - f[0]) / b) / (3 * b)}[atom.kind]()  # divided differences
    return sympy.Float(x, 17) * M ** {"K": 0, "KK": -1, "KN": 0, "N": 1, "Y": 2}[atom.kind]


def _base_width(net: Network) -> int:
    """The smallest M >= 16 with every alpha_l M whole (as the plain recursion's :meth:`shift_coefficients`)."""
    step = math.lcm(*(Fraction(float(a)).limit_denominator(1 << 20).denominator for a in net.alphas))
    return step * -(-16 // step)


def _canonical(labels: tuple) -> tuple:
    seen: dict = {}
    return tuple(seen.setdefault(x, len(seen)) for x in labels)


_ATOMS = (GramCovariance, BatchNormCoupling, LayerNormPart, NormalExpectation, WorldEntry, NumericPart)


def correction_placement(net: Network) -> str:
    """Which derived placement ``net`` is: one of :data:`DERIVED_PLACEMENTS`, else InvalidArgument naming it.

    Raises:
        InvalidArgument: not a Network, or a normalization whose O(1/M) corrections the numeric path does not derive
            either (unknown kinks on a batch-normalized layer, full batch norm on the output of a depth-1 net).

    Example:
        >>> correction_placement(Network(3, "relu", 2, 0.1, norms=["batch-center:last"]))
        'batch-center:last'
        >>> correction_placement(Network(1, "relu", 2, 0.1, norms=["batch:last"]))
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: ...
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if not net.norms:
        return "none"
    what = ("no normalization, centre-only or full batch norm on the output, layer norms on hidden layers (possibly "
            "with a centre-only or full batch norm on the output), batch norms on hidden layers (layer norms only "
            "below them, any batch norm on the output), or another network the numeric 1/M path derives")
    norm = net.norms[0]
    if len(net.norms) == 1:
        if isinstance(norm, BatchNorm) and norm.layer == net.depth:
            if norm.center_only:
                return "batch-center:last"
            if net.depth >= 2:
                return "batch:last"
        if (isinstance(norm, LayerNorm) and norm.layer == 2 and net.depth == 3
                and all(float(a) == 1.0 for a in net.alphas)):
            return "layer:2"
    if placement_of(net) is not None:     # layer norms elsewhere, batch norm on the last hidden layer
        return placement_of(net)
    if chain_placement_of(net) is not None:     # a hidden batch norm with another norm; what the numeric path claims
        return chain_placement_of(net)
    raise InvalidArgument("net", net.describe(), what, "the symbolic O(1/M) corrections are not derived for "
                          f"{', '.join(map(str, net.norms))}; predict(net, M, T, finite_width='1/M') says what its "
                          "numeric path covers")


@dataclass(frozen=True)
class NormalizedCorrectionDerivation(CorrectionDerivation):
    """The O(1/M) corrections behind a normalization as sympy (module docstring): a :class:`CorrectionDerivation`
    with the plain network's recursion (none for the layer norm), the placement's own steps, and definitions
    evaluated after it.

    Attributes (besides the base class's; ``network`` is the normalized network, ``mean_field`` and
    ``derivation`` are its mean field, so ``G_tt_mf``, ``G_ts_mf`` and ``s_mf`` are those of the normalized net):
        placement: one of :data:`DERIVED_PLACEMENTS` but "none".
        auxiliary: ``sympy.Eq``'s evaluated in order after the recursion: the entry variances or projector sums
            over label classes (exact in T) with :class:`GramCovariance` atoms, and the named terms
            (:class:`BatchNormCoupling`, :class:`LayerNormPart`) the statistics use.
        missing: the statistics not derived at O(1/M) (their field is None; e.g. s behind a layer norm).
        parts: (name, expression) pairs of named pieces :meth:`evaluate` also reports, under the numeric path's names
            (e.g. var_diag, or ntk_factor, scale_factor, s_same, s_cross of a full batch norm).
    """

    placement: str = ""
    auxiliary: tuple = ()
    missing: tuple = ()
    parts: tuple = ()

    def evaluate(self, width: int, samples: int, *, draws: int = DRAWS) -> dict:
        """Floats at M = width, T = samples: every statistic, as the numeric path names them.

        Args:
            width: M (alpha_l M whole).
            samples: T (>= 2; >= 6 for a full batch norm, whose s needs E[1/sigma^4]).
            draws: ignored (kept for earlier callers; only a deprecated :class:`BatchNormCoupling` atom passes it
                on).

        Returns:
            dict with mean_diag, mean_offdiag, m, s, kappa1, kappa2 (None where missing or at depth 1),
            diag_shift, offdiag_shift (mean - mean field), mean_field_diag, mean_field_offdiag, m_mean_field,
            s_mean_field, every auxiliary symbol's value by name (e.g. Var_tt, Sum_same, Cpl_tt) and the
            :attr:`parts` (var_diag, ...; ntk_factor, scale_factor, s_same, s_cross, coupling_diag, ...).

        Raises:
            InvalidArgument: bad width or samples, or what the numeric path refuses for this network.

        Example:
            >>> d = derive_network_corrections(Network(2, "relu", 2, 0.1, norms=["batch-center:last"]))
            >>> out = d.evaluate(32, 4)
            >>> round(out["mean_offdiag"] * 3 + out["mean_diag"], 12)     # rows of Pi G Pi sum to zero
            0.0
        """
        width = check_int("width", width, minimum=1)
        # full batch norm: E[1/sigma^4] and the couplings' chi-square moments are finite for T - 1 > 4
        full = self.placement in ("batch:last", "layer+batch:last", "batch+batch:last")
        Tn = check_int("samples", samples, minimum=6 if full else 2)
        net = self.network
        net.widths(width)
        numbers: dict = {M: width, T: Tn, C: net.outputs}
        if self.statements:
            numbers.update({k: v for k, v in self.values(width).items() if isinstance(k, sympy.Symbol)})
        mf = self.derivation.evaluate(width, Tn)
        numbers.update({GRAM_MEAN_FIELD[0]: mf["gram_diag"], GRAM_MEAN_FIELD[1]: mf["gram_offdiag"],
                        S_MEAN_FIELD: mf["s"]})
        plain = net.with_(norms=())
        out: dict = {}
        for eq in self.auxiliary:
            expr = sympy.sympify(eq.rhs).xreplace(numbers)
            values = {}
            for atom in expr.atoms(*_ATOMS):
                if isinstance(atom, GramCovariance):
                    values[atom] = atom.value(plain, width)
                elif isinstance(atom, WorldEntry):
                    values[atom] = atom.value(plain, width)
                elif isinstance(atom, BatchNormCoupling):
                    values[atom] = atom.value(net, width, Tn, draws=draws)
                elif isinstance(atom, NormalExpectation):
                    values[atom] = atom.value(net.phi(atom.layer), *(float(q) for q in atom.args[1:4]))
                else:
                    values[atom] = atom.value(net, width, Tn)
            numbers[eq.lhs] = out[eq.lhs.name] = float(expr.xreplace(values))
        for key in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2"):
            expr = getattr(self, key)
            out[key] = None if expr is None else _number(expr, numbers)
        out["mean_diag"], out["mean_offdiag"] = out.pop("gram_diag"), out.pop("gram_offdiag")
        for name, expr in self.parts:
            out[name] = _number(expr, numbers)
        out.update(diag_shift=out["mean_diag"] - mf["gram_diag"],
                   offdiag_shift=out["mean_offdiag"] - mf["gram_offdiag"],
                   mean_field_diag=mf["gram_diag"], mean_field_offdiag=mf["gram_offdiag"], m_mean_field=mf["m"],
                   s_mean_field=mf["s"])
        return out

    @property
    def symbols(self) -> tuple:
        """The scalar symbols of the statistics besides M, T, C (for ``meanfield.printing.parse_latex``)."""
        extra = set()
        for key in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2"):
            v = getattr(self, key)
            if v is not None:
                extra |= sympy.sympify(v).free_symbols
        base = set(super().symbols)
        return (*super().symbols, *sorted(extra - base - {M, T, C}, key=str))

    def shift_coefficients(self) -> dict:
        """Only for centre-only batch norm (the plain recursion's a + b/M); InvalidArgument otherwise."""
        self._only_centre("shift_coefficients")
        return super().shift_coefficients()

    def expansion(self) -> dict:
        """E G = M a_0 + a_1 + O(1/M) for batch norm on the output: {"gram_diag": (a_0, a_1), "gram_offdiag": ...}.

        Centre-only: the plain shifts through Pi (the remainder is exactly Pi's image of b_p / (M T)). Full: with
        the mean field M A_0 + B_0 (affine in M), a_0 = A_0 and a_1 = B_0 + A_0 (da / d_1 - e / v) + Cpl_p^inf, where
        dD = da + db / M, D = M d_1 + d_0, dv = e / M (the recursion's steps D_bn, dD_bn, dv_bn at three widths,
        their form checked) and Cpl_p^inf is the coupling's M -> infinity limit, symbolic in T: the world entries
        at their leading orders (Cov(K, K) = x / M, Cov(K, N) = x + O(1/M), Y = x M^2 + O(M), N = x M + O(1),
        coefficients from three widths), at which Cpl_p no longer depends on M.

        Raises:
            InvalidArgument: the layer norm (its terms are numbers per width).

        Example:
            >>> d = derive_network_corrections(Network(2, "relu", 2, 0.1, norms=["batch-center:last"]))
            >>> a0, a1 = d.expansion()["gram_offdiag"]
            >>> out = d.evaluate(64, 6)
            >>> c = d.shift_coefficients()
            >>> remainder = -(c["tt"][1] - c["ts"][1]) / (64 * 36)
            >>> abs(float((64 * a0 + a1).subs(T, 6)) + remainder - out["mean_offdiag"]) < 1e-10 * out["mean_diag"]
            True
            >>> full = derive_network_corrections(Network(2, "relu", 2, 0.1, norms=["batch:last"]))
            >>> a0, a1 = full.expansion()["gram_diag"]
            >>> series = [float((w * a0 + a1).subs(T, 8)) for w in (64, 256)]
            >>> [round(w * (full.evaluate(w, 8)["mean_diag"] - x), 4) for w, x in zip((64, 256), series)]  # r / M
            [0.0512, 0.0512]
        """
        if self.placement == "batch:last":
            return self._full_expansion()
        self._only_centre("expansion")
        coef = self.shift_coefficients()
        da = coef["tt"][0] - coef["ts"][0]
        out = {}
        for key, weight in (("gram_diag", (1 - 1 / T) / T), ("gram_offdiag", -1 / T**2)):
            a0, a1 = _affine_in_width(self.network, self.mean_field[key])
            out[key] = (a0, sympy.Add(a1, sympy.Float(da, 17) * weight, evaluate=False))
        return out

    def _full_expansion(self) -> dict:
        """expansion() of a full batch norm on the output (its docstring)."""
        net, base = self.network, _base_width(self.network)
        widths = (base, 2 * base, 4 * base)
        runs = [self.values(w) for w in widths]
        get = lambda name, i: float(runs[i][sympy.Symbol(name)])  # noqa: E731
        da = 2 * get("dD_bn", 1) - get("dD_bn", 0)
        db = (get("dD_bn", 0) - da) * base
        d1 = (get("D_bn", 1) - get("D_bn", 0)) / base
        e, v = base * get("dv_bn", 0), get("v_bn", 0)
        checks = ((da + db / widths[2], get("dD_bn", 2)), (get("D_bn", 0) + 3 * base * d1, get("D_bn", 2)),
                  (e / widths[2], get("dv_bn", 2)))
        if any(abs(x - y) > 1e-9 * (abs(x) + abs(y)) + 1e-14 for x, y in checks):
            raise RuntimeError(f"symbolic corrections: D_bn, dD_bn, dv_bn not of the recursion's form ({checks})")
        written = {eq.lhs: eq.rhs for eq in self.auxiliary}
        cpl = sympy.Symbol("Cpl_tt")
        expr = written[cpl]
        for name in ("v_w", "D_w") + CONTRACTIONS:       # the definitions the couplings are written in
            key = sympy.Symbol(name) if name in ("v_w", "D_w") else WorldContraction(name)
            expr = expr.xreplace({key: written[key]})
        plain = net.with_(norms=())
        leading = {atom: _leading(atom, plain, widths) for atom in expr.atoms(WorldEntry)}
        limit = expr.xreplace(leading).xreplace({M: 1})     # independent of M at the leading orders
        out = {}
        for key, cpl_limit in (("gram_diag", limit), ("gram_offdiag", -limit / (T - 1))):
            a0, b0 = _affine_in_width(net, self.mean_field[key])
            out[key] = (a0, sympy.Add(b0, sympy.Float(da / d1 - e / v, 17) * a0, cpl_limit, evaluate=False))
        return out

    def _only_centre(self, what: str) -> None:
        if self.placement != "batch-center:last":
            raise InvalidArgument("net", self.network.describe(), "centre-only batch norm on the output or no "
                                  f"normalization for {what}()", "the other placements' terms are numbers per width")

    def latex_lines(self) -> list[str]:
        """The statistics (they parse back with ``parse_latex(text, symbols=self.symbols)``), the auxiliary
        definitions and the recursion steps, one LaTeX equation each."""
        lines = super().latex_lines()
        stats = sum(getattr(self, k) is not None for k in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2"))
        aux = [f"{sympy.latex(e.lhs, symbol_names=LATEX_NAMES)} &= {sympy.latex(e.rhs, symbol_names=LATEX_NAMES)}"
               for e in self.auxiliary]
        return lines[:stats] + aux + lines[stats:]

    def __str__(self) -> str:
        lines = super().__str__().split("\n")
        lines[0] += f"  [{self.placement}]"
        if not self.statements:    # the layer norm: no recursion of its own, its expectations are in .auxiliary
            lines = [x for x in lines if not x.startswith(("  recursion (0 steps", "  expectations (first layer)"))]
        lines += [f"  {e.lhs} = {_short(e.rhs)}" for e in self.auxiliary]
        lines += [f"  missing (not derived at O(1/M)): {', '.join(self.missing)}"] if self.missing else []
        return "\n".join(lines)


def _number(expr: Any, numbers: dict) -> float:
    """The float of expr at the numbers (a bare symbol is replaced by a Python float, hence the second sympify)."""
    return float(sympy.sympify(sympy.sympify(expr).xreplace(numbers)).evalf(30))


def _affine_in_width(net: Network, expr: Any) -> tuple:
    """(a_0, a_1) of a mean field M a_0 + a_1 (its Gaussian expectations kept whole)."""
    expr = sympy.sympify(expr)
    # the unevaluated expectations do not depend on M: held as dummies so that diff leaves them alone
    dummies = {a: sympy.Dummy() for a in expr.atoms(GaussianExpectation, PairExpectation)}
    back = {v: k for k, v in dummies.items()}
    x = expr.xreplace(dummies)
    a0 = sympy.diff(x, M)
    if a0.has(M):
        raise InvalidArgument("net", net.describe(), "a mean field affine in M")
    return a0.xreplace(back), x.xreplace({M: 0}).xreplace(back)


def _short(expr: Any, width: int = 100) -> str:
    text = " ".join(str(expr).split())
    return text if len(text) <= width else text[: width - 3] + "..."


# -- label classes ------------------------------------------------------------------------------------------------


def _projected_variance(outputs: tuple, fixed: int) -> sympy.Expr:
    """Var((Pi A Pi)_tt') / T^2 of A = Theta_kl: t = t' (fixed = 1) or t != t' (fixed = 2)."""
    return projected_variance(outputs, fixed, GramCovariance)


def _projector_sum(outputs: tuple, first: Any, second: Any) -> sympy.Expr:
    """sum over (u, v, u', v') of (first Pi_uu' Pi_vv' + second (Pi_uv Pi_u'v' + Pi_uv' Pi_u'v)) Cov(A_uv, A_u'v')."""
    return projector_sum(first, second, lambda labels: GramCovariance(outputs, labels))


# -- the placements -----------------------------------------------------------------------------------------------


def _statistics(gd: Any, go: Any, s: Any, mf: Any) -> dict:
    P = mf.P
    k1 = k2 = None
    if mf.alpha != 0:
        k1, k2 = T * gd / (mf.alpha * M), T * go / (mf.alpha * M)
    return dict(gram_diag=gd, gram_offdiag=go, m=C * T * gd / P, s=s, kappa1=k1, kappa2=k2)


def _centre(net: Network, plain: CorrectionDerivation, mf: Any) -> dict:
    dd = plain.shift_diag - plain.shift_offdiag
    gd = GRAM_MEAN_FIELD[0] + (1 - 1 / T) * dd / T
    go = GRAM_MEAN_FIELD[1] - dd / T**2
    var_d, var_o, xd, xo = VARIANCES
    aux = [sympy.Eq(var_d, _projected_variance((0, 0), 1), evaluate=False),
           sympy.Eq(var_o, _projected_variance((0, 0), 2), evaluate=False)]
    if net.outputs >= 2:
        aux += [sympy.Eq(xd, _projected_variance((0, 1), 1), evaluate=False),
                sympy.Eq(xo, _projected_variance((0, 1), 2), evaluate=False)]
    s = (C * T * (gd**2 + var_d) + C * T * (T - 1) * (go**2 + var_o)
         + C * (C - 1) * (T * xd + T * (T - 1) * xo)) / mf.P
    notes = ("centre-only batch norm on the output: G = Pi G_plain Pi per output block, exact; the entry variances "
             "Var_tt, Var_ts, Xsq_tt, Xsq_ts as sums over label classes of the plain network's four-point covariances "
             "(Cov[...], meanfield.finite.fourpoint), exact in T",)
    parts = (("var_diag", var_d), ("var_offdiag", var_o), ("cross_square_diag", xd if net.outputs >= 2 else 0),
             ("cross_square_offdiag", xo if net.outputs >= 2 else 0))
    return dict(stats=_statistics(gd, go, s, mf), aux=tuple(aux), steps=(), notes=notes, missing=(), parts=parts)


def _full(net: Network, plain: CorrectionDerivation, mf: Any) -> dict:
    L = net.depth
    sw = sympy.Rational(repr(float(net.sigma_w2[L - 1])))
    K, dK = sympy.MatrixSymbol(f"K_{L - 1}", 3, 1), sympy.MatrixSymbol(f"dK_{L - 1}", 3, 1)
    v, dv, D, dD = sympy.symbols("v_bn dv_bn D_bn dD_bn")
    steps = (sympy.Eq(v, sw * (K[0, 0] - K[1, 0]), evaluate=False),
             sympy.Eq(dv, sw * (dK[0, 0] - dK[1, 0]), evaluate=False),
             sympy.Eq(D, sympy.Symbol(f"Theta_{L}_tt") - sympy.Symbol(f"Theta_{L}_ts"), evaluate=False),
             sympy.Eq(dD, plain.shift_diag - plain.shift_offdiag, evaluate=False))
    same, cross = sympy.symbols("Sum_same Sum_cross")
    cpl = sympy.symbols("Cpl_tt Cpl_ts Cpl_s")
    aux = [sympy.Eq(same, _projector_sum((0, 0), 1 - 2 / (T - 1) + 1 / (T**2 - 1), 1 / (T**2 - 1)),
                    evaluate=False)]
    if net.outputs >= 2:
        aux.append(sympy.Eq(cross, _projector_sum((0, 1), 1, 0), evaluate=False))
    aux += _couplings(net, cpl, sw, mf)
    gd, go, s, parts = full_batch_norm_statistics((D, dD), (v, dv), (same, cross), cpl, net.outputs, mf.P)
    notes = ("full batch norm on the output: exchangeable shifts (dD_bn, dv_bn from the plain recursion), the entry "
             "fluctuations through the projectors (Sum_same, Sum_cross, chi-square moments E[1/sigma^2] = T/(v (T-3)), "
             "E[1/sigma^4] = T^2/(v^2 (T-3)(T-5))), symbolic in T",
             "the coupling terms Cpl_tt, Cpl_ts, Cpl_F2, Cpl_s in closed form (sphere and chi-square moments, n = T - 1) "
             "in the five contractions S_KK, KT_1, S_KT, Y_1, S_Y, each a sum over the 15 label classes of the "
             "four-sample world's Cov[K, K], Cov[K, N], Y^(a, b)[c, d] (meanfield.finite.fourworld), symbolic in T")
    return dict(stats=_statistics(gd, go, s, mf), aux=tuple(aux), steps=steps, notes=notes, missing=(), parts=parts)


def _contraction(entry: Any, pairing: str) -> sympy.Expr:
    """X_1 (pairing "1": Pi_ab Pi_cd) or S_X (pairing "S": the three pairings) of an exchangeable 4-tensor X given by
    ``entry(labels)`` on the 15 label classes, summed over the T^4 index tuples: exact in T."""
    pi = centring_weight

    def weight(labels: tuple) -> sympy.Expr:
        a, b, c, d = labels
        out = pi(a, b) * pi(c, d)
        if pairing == "S":
            out += pi(a, c) * pi(b, d) + pi(a, d) * pi(b, c)
        return out
    return label_class_sum(weight, entry)


def _couplings(net: Network, cpl: tuple, sw: Any, mf: Any) -> list:
    """The Eq's of v_w, D_w, the five contractions and Cpl_tt, Cpl_ts, Cpl_F2, Cpl_s (module docstring): the closed
    form of :mod:`meanfield.finite.normalized`, term 3 (a) Price's second order of the law of g, (b) its coupling
    with Theta', (c) the Stein term on the output row."""
    ML = _exact(net.alphas[net.depth - 1]) * M      # the last hidden layer's width M_{L-1}
    v, D = sympy.symbols("v_w D_w")
    # v and D as the four-sample world has them (v_bn, D_bn up to its quadrature, ~1e-6 relative for smooth phi):
    # the same numbers as the numeric path's couplings
    kd = WorldEntry("K", (0, 0)) - WorldEntry("K", (0, 1))
    aux = [sympy.Eq(v, sw * kd, evaluate=False),
           sympy.Eq(D, ML * kd + sw * (WorldEntry("N", (0, 0)) - WorldEntry("N", (0, 1))), evaluate=False)]
    kk = lambda lab: WorldEntry("KK", lab)  # noqa: E731
    kt = lambda lab: ML * WorldEntry("KK", lab) + sw * WorldEntry("KN", lab)  # noqa: E731 - Cov(K, Theta')
    yy = lambda lab: WorldEntry("Y", lab)  # noqa: E731
    S_KK, KT_1, S_KT, Y_1, S_Y = (WorldContraction(name) for name in CONTRACTIONS)
    aux += [sympy.Eq(S_KK, _contraction(kk, "S"), evaluate=False),
           sympy.Eq(KT_1, _contraction(kt, "1"), evaluate=False),
           sympy.Eq(S_KT, _contraction(kt, "S"), evaluate=False),
           sympy.Eq(Y_1, _contraction(yy, "1"), evaluate=False),
           sympy.Eq(S_Y, _contraction(yy, "S"), evaluate=False)]
    tt, ts, s = cpl
    F2 = sympy.Symbol("Cpl_F2")
    trace, square = coupling_closed_form(D, v, sw, ML, (S_KK, KT_1, S_KT, Y_1, S_Y))
    aux += [sympy.Eq(tt, trace / T, evaluate=False),
            sympy.Eq(ts, -tt / (T - 1), evaluate=False),       # A 1 = 0: every row of the coupling block sums to 0
            sympy.Eq(F2, square, evaluate=False),
            sympy.Eq(s, C * F2 / mf.P, evaluate=False)]
    return aux


def _exact(value: Any) -> sympy.Expr:
    return sympy.Rational(repr(float(value)))


def _layer(net: Network, mf: Any) -> dict:
    """Layer norm on layer 2 of three (meanfield.finite.layernorm): the projector, Stein and cross parts written as
    Gaussian expectations (layer 1 at its mean kernel, the normalized layer 2 at unit variances and correlation
    rho_ln), the forward, below and normalization parts as named LayerNormPart's."""
    sw, sb = [_exact(v) for v in net.sigma_w2], [_exact(v) for v in net.sigma_b2]
    q1, q2 = _exact(net.input_q1), _exact(net.input_q2)
    Q1 = (sw[0] * q1 + sb[0], sw[0] * q2 + sb[0], sw[0] * q1 + sb[0])
    f, d, z, y = (PHI(U_T), PHI(U_S)), (DPHI(U_T), DPHI(U_S)), (U_T, U_S), (Y_T, Y_S)
    P = ((P_TT, P_TS), (P_TS, P_SS))
    E1 = lambda g: NormalExpectation(g, *Q1, 1)  # noqa: E731
    sig, rho = sympy.symbols("sigma2_ln rho_ln")
    aux = [sympy.Eq(sig, sw[1] * E1(f[0] ** 2) + sb[1], evaluate=False),
           sympy.Eq(rho, (sw[1] * E1(f[0] * f[1]) + sb[1]) / sig, evaluate=False)]
    E2 = lambda g: NormalExpectation(g, 1, rho, 1, 2)  # noqa: E731 - u of layer 2 in standardized units z
    c2 = (sw[1] / M) ** 2
    shifts = []
    for pair, (a, b) in (("tt", (0, 0)), ("ts", (0, 1))):
        theta1 = 1 + M * (q1 if a == b else q2)
        A, B = 1 + M * E1(f[a] * f[b]), sw[1] * theta1 * E1(d[a] * d[b])
        Y = [[M * theta1 * E1(f[i] * f[j] * d[a] * d[b]) for j in (0, 1)] for i in (0, 1)]
        psi = d[a] * d[b]
        epsi = E2(psi)
        if a == b:
            r_mean = E2(psi * (1 + z[0] ** 2))
        else:
            r_mean = E2(psi * (1 + z[0] ** 2 + z[1] ** 2)) - rho * E2(psi * z[0] * z[1])
        rab = 1 if a == b else rho
        projector = (-A / M * r_mean - 2 * B * epsi / M - B / M * E2(psi * (z[a] ** 2 + z[b] ** 2)) + B / M * epsi
                     + B * rab / M * E2(psi * z[a] * z[b]))
        stein = c2 / sig * sum(Y[i][j] * E2(psi * (y[i] * y[j] - P[i][j])) for i in (0, 1) for j in (0, 1))
        cross = c2 / sig * (Y[a][b] * E2(psi * z[a] * z[b])
                            - sum(Y[a][i] * E2(psi * z[a] * y[i]) + Y[i][b] * E2(psi * z[b] * y[i]) for i in (0, 1)))
        written = {"projector": projector, "stein": stein, "cross": cross}
        parts = []
        for part in _LAYER_PARTS:
            sym = sympy.Symbol(f"LN_{part}_{pair}")
            rhs = sw[2] * written[part] / sig if part in written else LayerNormPart(part, pair)
            aux.append(sympy.Eq(sym, rhs, evaluate=False))
            parts.append(sym)
        # the six parts written out (layer_norm_gram_means); the statistics use the general recursion's shift, which
        # predict uses: the same quantity, its central differences ~1e-9 relative from these expectations
        shift = sympy.Symbol(f"dTheta_ln_{pair}")
        aux += [sympy.Eq(sympy.Symbol(f"dTheta_ln2_{pair}"), sympy.Add(*parts), evaluate=False),
                sympy.Eq(shift, LayerNormShift(pair), evaluate=False)]
        shifts.append(shift)
    gd, go = GRAM_MEAN_FIELD[0] + shifts[0] / T, GRAM_MEAN_FIELD[1] + shifts[1] / T
    # s: the entry variances of the four-point engine through the norm (as every layer-norm placement)
    aux += layer_norm_variance_equations(net, False)
    var_d, var_o, xd, xo = VARIANCES
    cross = C * (C - 1) * (T * xd + T * (T - 1) * xo) if net.outputs >= 2 else 0
    stats = _statistics(gd, go, (C * T * (gd**2 + var_d) + C * T * (T - 1) * (go**2 + var_o) + cross) / mf.P, mf)
    notes = ("layer norm on layer 2: E G_tt, E G_ts (so m and the kappa's) with their O(1/M) shifts dTheta_ln_p, "
             "written out as dTheta_ln2_p, the sum of six parts: projector, Stein and cross as Gaussian expectations "
             "E_1 (layer 1) and E_2 (the normalized layer 2, unit variances, correlation rho_ln); forward, below and "
             "normalization as named parts LN_*[...] (meanfield.finite.layernorm.layer_norm_gram_means); the "
             "statistics use the same shift from the general recursion (dTheta_LN[...], predict's numbers), "
             "~1e-9 relative from the written sum (its central differences)",
             "s with the entry variances Var_tt, Var_ts, Xsq_tt, Xsq_ts of the four-point engine through the norm "
             "(Cov_LN[...], meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance)")
    parts = (("var_diag", var_d), ("var_offdiag", var_o), ("cross_square_diag", xd if net.outputs >= 2 else 0),
             ("cross_square_offdiag", xo if net.outputs >= 2 else 0))
    return dict(stats=stats, aux=tuple(aux), steps=(), notes=notes, missing=(), shifts=shifts, parts=parts)


@functools.lru_cache(maxsize=64)
def derive_network_corrections(net: Network) -> CorrectionDerivation:
    """E G, m, s, kappa's to O(1/M) as sympy for every placement the 1/M path derives (``derive(net).corrections``).

    Args:
        net: a network with numeric parameters: no normalization, centre-only or full batch norm on the output,
            layer norms on hidden layers (possibly with a batch norm on the output), one batch norm on a hidden
            layer (:mod:`meanfield.finite.symbolic_placements`), or a hidden batch norm with other norms and any
            other network the numeric 1/M path claims statistics for (:mod:`meanfield.finite.symbolic_chains`).

    Returns:
        :func:`meanfield.finite.symbolic_corrections.derive_corrections`' derivation for a plain network, else a
        :class:`NormalizedCorrectionDerivation`; ``evaluate(M, T)`` gives the numbers of the numeric path it is
        written on (gram_corrections, output_batch_norm_terms, layer_norm_gram_means, layer_norm_corrections,
        hidden_batch_norm_terms, deep_batch_norm_terms, batch_norm_pair_terms, multi_batch_norm_terms, chain_terms,
        predict's own 1/M terms for the generic fallback).

    Raises:
        InvalidArgument: not a Network, symbolic parameters, or a placement not derived (correction_placement):
            the message names it.

    Example:
        >>> d = derive_network_corrections(Network(3, "relu", 2, 0.1, norms=["batch:last"]))
        >>> d.placement, d.gram_diag
        ('batch:last', Cpl_tt + G_tt_mf*v_bn*(1 + dD_bn/D_bn)/(dv_bn + v_bn))
    """
    where = correction_placement(net)
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters (substitute the symbols first)")
    if where == "none":
        return derive_corrections(net)
    mf = derive(net)
    if where in MORE_PLACEMENTS or where in CHAIN_PLACEMENTS:
        parts = (placement_parts if where in MORE_PLACEMENTS else chain_parts)(net, where, mf)
        statements, layers, sections = (), (), ()
        shift_d, shift_o = parts.pop("shifts")
    elif where == "layer:2":
        parts = _layer(net, mf)
        statements, layers, sections = (), (), ()
        shift_d, shift_o = parts.pop("shifts")
    else:
        plain = derive_corrections(net.with_(norms=()))
        parts = (_centre if where == "batch-center:last" else _full)(net, plain, mf)
        statements = plain.statements + parts["steps"]
        layers = plain.layers + (None,) * len(parts["steps"])
        sections = plain.sections + ("output batch norm",) * len(parts["steps"])
        shift_d, shift_o = plain.shift_diag, plain.shift_offdiag
    mean_field = dict(gram_diag=mf.gram_diag, gram_offdiag=mf.gram_offdiag, m=mf.m, s=mf.s, kappa1=mf.kappa1,
                      kappa2=mf.kappa2, P=mf.P, alpha=mf.alpha)
    st = parts["stats"]
    return NormalizedCorrectionDerivation(
        net, statements, layers, sections, shift_d, shift_o, st["gram_diag"], st["gram_offdiag"], st["m"], st["s"],
        st["kappa1"], st["kappa2"], mean_field, parts["notes"], mf, placement=where, auxiliary=parts["aux"],
        missing=parts["missing"], parts=parts["parts"])
