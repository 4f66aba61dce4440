"""A layer norm as a chain's top hidden norm under a batch norm on the output: the entry covariances of T G^in.

:mod:`meanfield.finite.bnpair` writes the entry covariances of T G^in (the network without its output norm) for a
batch-normalized top unit, which is i.i.d. over the units given the layer below: (1.) the units' own variance,
M_{L-1} Var of one unit's f f^T + c X_aa, (2.) the output weights' Wick terms and (3.) the layers below through the
first variation of E[T G^in | below]. A layer norm on layer L - 1 couples its units (each sample standardized over
them), so (1.) and (3.) are not separate there; but with the output weights v fresh,

    E[T G^in(t, s) | layer L - 1] = 1 + M_{L-1} K^{L-1}(t, s) + sigma_w^2 N^{L-1}(t, s),

so (1.) + (3.) is the covariance of the realized (K^{L-1}, N^{L-1}) itself, which the chain's layer-norm step carries
whole: the four-sample world of layer L - 1 (:func:`meanfield.finite.chain_layernorm.layer_norm_from_below`, the
realized averages' influence functions included), read over all T^2 entries by its label patterns
(:func:`meanfield.finite.bnpair.entry_covariance`, ``grad`` the identity). (2.) is the Wick pairing of v,
c^2 sum_ac (X_ac X_ac + X_ac X_ca), c = sigma_w^2 / M_{L-1}: for a = c the unit's E[X_aa X_aa] at the mean law,
X_aa(t, s) = phi'(u~(t)) phi'(u~(s)) Theta_aa(t, s) / q_1 (u~ ~ N(0, (1, rho)), Theta_aa at its mean); for a != c
X_ac = phi'_a S_ac phi'_c / q_1 through the NTK's spread Sigma4 between the layer's units (the norm's Jacobian acts
across the units; its projections move X_ac by O(1) against S_ac's O(sqrt M)): the layer-normed unit's slopes
U[t, i, s, j] = delta_ti delta_sj E[phi'_t phi'_s] / q_1 (:func:`meanfield.finite.chain_layernorm.layer_norm_moment`,
exact four-sample quadrature). Then bnpair's contractions (:func:`meanfield.finite.bnpair.entry_parts`,
:func:`meanfield.finite.bnpair.row_parts` with ``units=False``) give

* centre-only output norm: G = Pi G^in Pi per block exactly, the projected sums (same, below, cross)
  (:func:`layer_norm_entry_parts`; ``below`` is 0: the world carries it in ``same``);
* full output norm: the three Pi Pi pairings and layer L - 1's world for :mod:`meanfield.finite.normalized`'s s
  (:func:`layer_norm_pairings`; the world is the layer norm's own).

With ``project=False`` the sums are the chain's own entry variances without an output norm (deepbn's layer sum at
l = L - 1 over the same world and units; a test).

A layer norm on a lower layer l < L - 1 (plain layers above it): the plain units of layers l + 1..L - 1 are i.i.d.
given the layer below, so bnpair's parts hold for them as they stand; what they need of layer l is its state, which
the layer norm's world gives in place of a batch-normalized unit's: the means of K^l, N^l and their covariance over all
entries (the world's, whole), Phi^l = M_l E[X_bb X_bb] + M_l (M_l - 1) sum U U Sigma4 (the layer-normed unit's laws and
the chain's spread between layer l's units) and Y^l (the world's). :class:`meanfield.finite.bnpair.TopBelow`'s
``start`` hands it to bnpair's plain-layer recursion (:func:`meanfield.finite.bnpair.projected_entry_parts`,
:func:`meanfield.finite.bnpair.output_pairings`); the proxy network's centre-only batch norm on layer l only marks
the layer there (its units are not used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, check_int
from ..spec.network import LayerNorm, Network
from .bnpair import (TopBelow, UnitMoments, entry_covariance, entry_parts, output_pairings, projected_entry_parts,
                     row_parts)
from .chain_layernorm import layer_norm_moment
from .exchangeable import Exchangeable, contract, identity, projector
from .fourworld import World

__all__ = ["TopLayerNorm", "layer_norm_unit", "layer_norm_entry_parts", "layer_norm_pairings"]


@dataclass(frozen=True, eq=False)
class TopLayerNorm:
    """A layer norm on layer l as the top hidden norm of a chain (compared by identity): the four-sample world of
    layer l - 1 below it, the layer norm's own world (layer l) and the NTK's spread Sigma4 between two of its units
    (an exchangeable dense T^4 array or an :class:`meanfield.finite.exchangeable.Exchangeable`).

    Example:
        >>> from meanfield.finite.chain import chain_terms
        >>> t = chain_terms(Network(3, "relu", 2, 0.0, outputs=2, norms=["batch:1", "layer:2", "batch-center:last"]),
        ...                 64, 8)
        >>> "s" in t.includes_1_over_M
        True
    """

    below: World
    world: World
    spread: Any

    @property
    def classes(self) -> Exchangeable:
        """The spread as an exchangeable tensor."""
        if isinstance(self.spread, Exchangeable):
            return self.spread
        return Exchangeable.from_function(4, lambda lab: self.spread[lab])


def _layer(net: Any, width: Any, samples: Any, top: Any) -> tuple[int, int, int]:
    """(M, T, l) after checking the placement: l the top hidden norm's layer, a layer norm."""
    hidden = [n for n in net.norms if n.layer < net.depth] if isinstance(net, Network) else []
    if not hidden or net.is_symbolic or not isinstance(max(hidden, key=lambda n: n.layer), LayerNorm) or \
            max(n.layer for n in hidden) < 2:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network whose top hidden norm is a layer norm on a layer l >= 2")
    if not isinstance(top, TopLayerNorm):
        raise InvalidArgument("top", top, "a TopLayerNorm (the worlds below and of the layer norm, the spread)")
    return (check_int("width", width, minimum=2), check_int("samples", samples, minimum=4),
            max(n.layer for n in hidden))


def layer_norm_unit(phi, Q: tuple, theta: tuple) -> UnitMoments:
    """:class:`meanfield.finite.bnpair.UnitMoments` of one layer-normed unit at the mean law (module docstring):
    k = f f^T with f = phi(u~), X_aa(t, s) = phi'(u~(t)) phi'(u~(s)) Theta(t, s) / q_1, p = diag(phi') / sqrt(q_1);
    exact four-sample quadrature (every pattern has at most four distinct samples). No Price gradients (hk, hx None):
    the layer norm's world carries what is below.

    Args:
        phi: the layer's activation.
        Q: its mean pre-activation kernel (q1, q2), q1 > |q2|, q2 > -q1 / 3.
        theta: the mean NTK (tt, ts) of its pre-activations.

    Example:
        >>> u = layer_norm_unit(Network(2, "relu", 2, 0.1).phi(1), (2.0, 0.5), (65.0, 20.0))
        >>> u.U.at((0, 0, 0, 0)), u.U.at((0, 1, 0, 1)), round(u.Exx.at((0, 0, 0, 0)), 6)   # E[1(z>0)] / q1; 65^2 / 8
        (0.25, 0.0, 528.125)
    """
    q1, q2 = float(Q[0]), float(Q[1])

    def m(*factors) -> float:
        return layer_norm_moment(phi, q1, q2, tuple(factors))

    def th(a: int, b: int) -> float:
        return float(theta[0] if a == b else theta[1])

    def k(lab):
        return m(("f", lab[0]), ("f", lab[1]))

    def x(lab):
        return m(("d", lab[0]), ("d", lab[1])) * th(lab[0], lab[1])

    kk = Exchangeable.from_function(4, lambda lab: m(*(("f", i) for i in lab)))
    kx = Exchangeable.from_function(4, lambda lab: m(("f", lab[0]), ("f", lab[1]), ("d", lab[2]), ("d", lab[3]))
                                    * th(lab[2], lab[3]))
    xx = Exchangeable.from_function(4, lambda lab: m(*(("d", i) for i in lab)) * th(lab[0], lab[1])
                                    * th(lab[2], lab[3]))
    U = Exchangeable.from_function(4, lambda lab: m(("d", lab[0]), ("d", lab[2]))
                                   if lab[0] == lab[1] and lab[2] == lab[3] else 0.0)
    return UnitMoments(Exchangeable.from_function(2, k), Exchangeable.from_function(2, x), kk, kx, xx, U, None, None,
                       1.0, 1.0)


def _pieces(net: Network, width: int, samples: int, top: TopLayerNorm) -> tuple:
    """(unit, T, M_{L-1}, sigma_w^2 out, S4, grad, cov) of layer L - 1 for a layer norm there: the layer-normed unit,
    the spread, the identity first variation of E[T G^in | K, N of layer L - 1] and that world's covariance over all
    entries; for a layer norm on l < L - 1, (layer l's state, T, l) for bnpair's plain layers above it."""
    M, T, l = _layer(net, width, samples, top)
    widths = net.widths(M)
    sw, sb = float(net.sigma_w2[l - 1]), float(net.sigma_b2[l - 1])
    w = top.below
    Q = (sw * w.k[0] + sb, sw * w.k[1] + sb)
    theta = (1 + widths[l - 1] * w.k[0] + sw * w.n[0], 1 + widths[l - 1] * w.k[1] + sw * w.n[1])
    u = layer_norm_unit(net.phi(l), Q, theta)
    cov = entry_covariance(top.world)
    if l < net.depth - 1:      # Phi^l: the units' own and, between units, through the spread (bnpair's _last_plain)
        phi4 = widths[l] * u.Exx + widths[l] * (widths[l] - 1) * contract(T, "aicj,bkdl,ikjl->abcd", u.U, u.U,
                                                                          top.classes)
        return (u, cov, phi4, {key: top.world.y[key] for key in ((0, 0), (0, 1))}), T, l
    ident = Exchangeable.from_function(4, lambda lab: float(lab[0] == lab[2] and lab[1] == lab[3]))
    sw_out = float(net.sigma_w2[l])
    return u, T, widths[l], sw_out, top.classes, {0: widths[l] * ident, 1: sw_out * ident}, cov


def _above(net: Network, top: TopLayerNorm, start: tuple, l: int) -> tuple:
    """(the proxy network, TopBelow) for bnpair's plain layers above a layer norm on layer l < L - 1: the proxy's norm
    only marks layer l (bnpair takes layer l's state from ``start``, not from a norm's units)."""
    return net.with_(norms=(f"batch-center:{l}",)), TopBelow(top.below, top.spread, start=start)


def layer_norm_entry_parts(net: Network, width: int, samples: int, top: TopLayerNorm,
                           project: bool = True) -> tuple[float, float, float]:
    """(same, below, cross): the sums over the T^2 entries of Var G_kk(t, s) and of E G_kl(t, s)^2 (k != l) of
    Pi G^in Pi (``project``) or of G^in, for a layer norm as the chain's top hidden norm (module docstring): on layer
    L - 1 below = 0 (the layer norm's world carries it within ``same``); on a lower layer bnpair's split.

    Args:
        net: the chain's network (a layer norm as its top hidden norm on a layer l >= 2; any norms below it; the
            output's norm is not read).
        width, samples: M, T.
        top: :class:`TopLayerNorm` of the chain.
        project: True for the centre-only output norm, False for G^in itself (a check).

    Raises:
        InvalidArgument: the top hidden norm not a layer norm, a bad width or T, ``top`` not a TopLayerNorm.

    Example:
        >>> layer_norm_entry_parts(Network(3, "relu", 2, 0.0, norms=["batch:1", "batch:2"]), 64, 8, None)
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: ...
    """
    pieces = _pieces(net, width, samples, top)
    if len(pieces) == 3:       # plain layers above the layer norm: bnpair's, from layer l's state
        proxy, below = _above(net, top, *pieces[::2])
        return projected_entry_parts(proxy, width, pieces[1], project, below=below)
    u, T, M2, sw_out, S4, grad, cov = pieces
    left = projector(T) if project else identity()
    same, below, cross = entry_parts(u, T, M2, sw_out, left, S4, grad, cov, units=False)
    return float(same + below), 0.0, float(cross)


def layer_norm_pairings(net: Network, width: int, samples: int, top: TopLayerNorm, world: World) -> tuple:
    """(same, cross, world) of :func:`meanfield.finite.bnpair.output_pairings` for a layer norm as the chain's top
    hidden norm, under a full batch norm on the output: the Pi Pi pairings (X_1, X_2, X_3) of
    Cov(T G^in_kl(u, v), T G^in_kl(u', v')) (k = l; k != l) and layer L - 1's four-sample world: ``world`` (the
    chain's) for a layer norm on L - 1, bnpair's from the plain units above a lower one (``world``'s means).

    Raises:
        InvalidArgument: as :func:`layer_norm_entry_parts`; T < 6.

    Example:
        >>> net = Network(3, "relu", 2, 0.0, norms=["batch:1", "layer:2", "batch:last"])
        >>> layer_norm_pairings(net, 64, 8, "not a TopLayerNorm", None)
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: ...
    """
    pieces = _pieces(net, width, samples, top)
    if len(pieces) == 3:       # plain layers above the layer norm: bnpair's, from layer l's state
        proxy, below = _above(net, top, *pieces[::2])
        return output_pairings(proxy, width, pieces[1], world.k, world.n, below=below)
    u, T, M2, sw_out, S4, grad, cov = pieces
    T = check_int("samples", T, minimum=6)
    Pi = projector(T)
    same2, below2, cross2, cross3 = entry_parts(u, T, M2, sw_out, Pi, S4, grad, cov, swapped=True, units=False)
    same1, cross1 = row_parts(u, T, M2, sw_out, Pi, S4, grad, cov, units=False)
    x2 = T**2 * (same2 + below2)
    cross = (cross1, T**2 * cross2, T**2 * cross3) if net.outputs >= 2 else (0.0, 0.0, 0.0)
    return (same1, x2, x2), cross, world
