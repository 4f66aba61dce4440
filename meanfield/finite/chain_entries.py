"""s under a batch norm on the output of a chain of hidden norms: the entry covariances through the output norm.

A chain (:mod:`meanfield.finite.chain`) carries up to its top batch norm, on layer l, the four-sample world of layer
l - 1 (mean kernel and NTK average, their covariance over the 20 pairs of four samples, Y^{l-1}) and the NTK's spread
Sigma4 between two units of layer l. Given those, the top norm's units are i.i.d. given the layer below exactly as in
:mod:`meanfield.finite.bnpair` (one hidden batch norm: there the plain network's world and hiddenbn's
``cross_unit_spread``), so bnpair's three parts of the entry covariances over all T^2 entries (the units with the
output weights' Wick share; the layers below through the first variation of E[T G^in | below]; between outputs),
carried through plain layers above the top norm, hold with the chain's world and spread in place of the plain ones
(:class:`meanfield.finite.bnpair.TopBelow`):

* centre-only batch norm on the output: G = Pi G^in Pi per output block exactly, so s = [C sum_ts (E G_ts^2 +
  Var G_kk(t, s)) + C (C - 1) sum_ts E G_kl(t, s)^2] / P with the projected entry variances sum Pi_uu' Pi_vv'
  Cov(G^in_uv, G^in_u'v') (:func:`meanfield.finite.bnpair.projected_entry_parts`; used by
  :func:`meanfield.finite.chain.chain_terms` directly);
* full batch norm on the output: :mod:`meanfield.finite.normalized`'s s from the statistics below,
  s = s_MF factor^2 + s_same + s_cross + C Cpl_F2 / P, factor = (D / D_0) v / (v + dv) (the chain's own D, v, dv),
  s_same, s_cross from the three Pi Pi pairings (X_1, X_2, X_3) of the entry covariances
  (:func:`meanfield.finite.bnpair.output_pairings` over the chain's world), Cpl_F2 the couplings' share of E ||G_kk||^2
  in closed form from layer L - 1's four-sample world (normalized's exact method; this module repeats its two
  formulas because :mod:`meanfield.finite.normalized` imports the chain: a test holds them equal).

A layer norm on layer L - 1 as the top hidden norm couples its units, so the units' own variance and the layers
below are not separate parts there: :mod:`meanfield.finite.lnpair` takes the covariance of the realized (K, N) of
layer L - 1 whole from the layer norm's own four-sample world and the output weights' Wick terms from the layer-normed
unit's laws (:func:`centre_output_parts`, :func:`full_output_s` dispatch on the top norm's kind).

What the chain adds to bnpair is only the world and spread below the top norm; each is the chain's leading-order
state (gradient independence for the backward weights above the top norm is not used: the parts are exact in the
output weights). Measured against sampled networks: ``meanfield/notes/corrections.md``, section 9.
"""

from __future__ import annotations

from ..errors import InvalidArgument, check_int
from ..spec.network import LayerNorm, Network
from .bnpair import TopBelow, output_pairings, projected_entry_parts
from .fourworld import World, world_contractions
from .lnpair import TopLayerNorm, layer_norm_entry_parts, layer_norm_pairings

__all__ = ["output_coupling", "output_square", "full_output_s", "centre_output_parts"]


def _top_norm(net: Network, top: int) -> tuple:
    """The norm on the chain's top hidden layer ``top`` (a tuple of one), checked."""
    norm = tuple(n for n in net.norms if n.layer == top)
    if not norm or top >= net.depth:
        raise InvalidArgument("top", top, "the layer of a hidden norm of net")
    return norm


def centre_output_parts(net: Network, width: int, samples: int, top: int, below: TopBelow,
                        world: World | None = None) -> tuple[float, float, float]:
    """(same, below, cross): the projected entry variances of a chain under a centre-only batch norm on its output,
    summed over the T^2 entries: a batch norm as the top hidden norm (on any hidden layer ``top``), bnpair's parts
    over the chain's world below it and its spread (:func:`meanfield.finite.bnpair.projected_entry_parts`); a layer norm,
    :func:`meanfield.finite.lnpair.layer_norm_entry_parts` from its own ``world`` (required there).

    Raises:
        InvalidArgument: no hidden norm on ``top``, a layer-normed top without its world.

    Example:
        >>> from meanfield.finite.chain import chain_terms
        >>> t = chain_terms(Network(3, "relu", 2, 0.0, outputs=2, norms=["batch:1", "layer:2", "batch-center:last"]),
        ...                 64, 8)
        >>> t.output_parts[1], "s" in t.includes_1_over_M      # the layer norm's world carries "below" in "same"
        (0.0, True)
    """
    norm = _top_norm(net, top)
    if isinstance(norm[0], LayerNorm):
        if not isinstance(world, World):
            raise InvalidArgument("world", world, "the layer norm's own four-sample world (layer L - 1)")
        return layer_norm_entry_parts(net, width, samples, TopLayerNorm(below.world, world, below.spread))
    return projected_entry_parts(net.with_(norms=norm), width, samples, below=below)

def _closed_form_inputs(world: World, width: int, sw: float, samples: int) -> tuple:
    """(n, v, D, c, (KK, KT, YY)) of the full output norm's closed forms: n = T - 1, v = sw (K_tt - K_ts),
    D = M (K_tt - K_ts) + sw (N_tt - N_ts), c = (sw / M)^2 and the world's contractions."""
    T = check_int("samples", samples, minimum=6)
    M = check_int("width", width, minimum=1)
    v = sw * (world.k[0] - world.k[1])
    if not v > 0:
        raise InvalidArgument("world", world.k, "a kernel with K_tt > K_ts")
    D = M * (world.k[0] - world.k[1]) + sw * (world.n[0] - world.n[1])
    return T - 1, v, D, (sw / M) ** 2, world_contractions(world, M, sw, T)


def output_coupling(world: World, width: int, sw: float, samples: int) -> float:
    """T Cpl_tt: the coupling terms 3. (a)-(c) of a full batch norm on the output (E G_tt += Cpl_tt, E G_ts -=
    Cpl_tt / (T - 1)) from the four-sample world of layer L - 1, in closed form (:mod:`meanfield.finite.normalized`'s
    module docstring, its exact method).

    Args:
        world: the four-sample world of layer L - 1.
        width: M_{L-1}.
        sw: sigma_w^2 of the output layer.
        samples: T >= 6.

    Raises:
        InvalidArgument: T < 6, width below 1, K_tt <= K_ts.

    Example:
        >>> from meanfield.finite.fourworld import realized_world
        >>> from meanfield.finite.normalized import output_batch_norm_terms
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:last"])
        >>> c = output_coupling(realized_world(Network(3, "tanh", 2, 0.1), 64), 64, 2.0, 12)
        >>> bool(abs(c / 12 - output_batch_norm_terms(net, 64, 12).coupling_diag) < 1e-12)
        True
    """
    n, v, D, c, (kk, kt, yy) = _closed_form_inputs(world, width, sw, samples)
    return float(D * (n - 1) * sw**2 * kk.sum() / (v**3 * n * (n * n - 4))
                 - sw / (2 * v * v) * (kt[0] / (n * (n - 2)) + kt.sum() / (n * (n + 2)))
                 - c / v**2 * (yy[0] / (n * (n - 2)) + yy.sum() / (n * (n + 2))))


def output_square(world: World, width: int, sw: float, samples: int) -> float:
    """Cpl_F2: the coupling terms' (a)-(c) share of E ||G_kk||_F^2 per output block (a full batch norm on the output),
    in closed form from layer L - 1's four-sample world (:mod:`meanfield.finite.normalized`'s exact method).

    3 D^2 (n - 1) sw^2 S_KK / (v^4 n (n^2 - 4)(n - 4)) - D sw / v^3 [3 KT_1 / (n (n - 2)(n - 4)) + S_KT / (n (n + 2)
    (n - 2))] - 2 c D / v^3 [3 Y_1 / (n (n - 2)(n - 4)) + S_Y / (n (n + 2)(n - 2))], n = T - 1, c = (sw / M)^2,
    v = sw (K_tt - K_ts), D = M (K_tt - K_ts) + sw (N_tt - N_ts).

    Args:
        world: the four-sample world of layer L - 1.
        width: M_{L-1}.
        sw: sigma_w^2 of the output layer.
        samples: T >= 6.

    Raises:
        InvalidArgument: T < 6, width below 1, K_tt <= K_ts.

    Example:
        >>> from meanfield.finite.fourworld import realized_world
        >>> from meanfield.finite.normalized import output_batch_norm_terms
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:last"])
        >>> t = output_batch_norm_terms(net, 64, 12)
        >>> sq = output_square(realized_world(Network(3, "tanh", 2, 0.1), 64), 64, 2.0, 12)
        >>> bool(abs(sq / t.P - t.coupling_s) < 1e-12 * t.s)
        True
    """
    n, v, D, c, (kk, kt, yy) = _closed_form_inputs(world, width, sw, samples)
    return float(3 * D * D * (n - 1) * sw**2 * kk.sum() / (v**4 * n * (n * n - 4) * (n - 4))
                 - D * sw / v**3 * (3 * kt[0] / (n * (n - 2) * (n - 4)) + kt.sum() / (n * (n + 2) * (n - 2)))
                 - 2 * c * D / v**3 * (3 * yy[0] / (n * (n - 2) * (n - 4)) + yy.sum() / (n * (n + 2) * (n - 2))))


def full_output_s(net: Network, width: int, samples: int, top: int, below: TopBelow, world: World,
                  spreads: tuple, s_mean_field: float, P: int, top_world: World | None = None) -> tuple[float, tuple]:
    """s = s_MF factor^2 + s_same + s_cross + C Cpl_F2 / P under a full batch norm on the output of a chain whose top
    hidden norm is on layer ``top``: a batch norm (bnpair's pairings over the chain's world below it), or a layer norm
    (:func:`meanfield.finite.lnpair.layer_norm_pairings` from ``top_world``; module docstring).

    Args:
        net: the chain's network (a full batch norm on its output, batch norms on hidden layers).
        width, samples: M, T >= 6.
        top: the layer of the chain's top hidden norm.
        below: the chain's world under the top norm and the NTK's spread between its units.
        world: the chain's four-sample world of layer L - 1 (its means k, n are the world's).
        spreads: (D_0, D, v, dv), T (G^in_tt - G^in_ts) at mean field and corrected, sigma_w^2 (K_tt - K_ts) of layer
            L - 1 and its O(1/M) shift.
        s_mean_field: ``predict``'s s of ``net``.
        P: the parameter count.
        top_world: a layer-normed top's own four-sample world (required there).

    Returns:
        (s, (s_same, s_cross, C Cpl_F2 / P)).

    Raises:
        InvalidArgument: no hidden norm on ``top``, T < 6, a non-positive spread, a layer-normed top without its world.

    Example:
        >>> from meanfield.finite.chain import chain_terms
        >>> t = chain_terms(Network(3, "tanh", 1, 0.1, outputs=2, norms=["batch:1", "batch:2", "batch:last"]), 64, 8)
        >>> bool(t.s > t.s_mean_field), "s" in t.includes_1_over_M
        (True, True)
    """
    M, T = check_int("width", width, minimum=1), check_int("samples", samples, minimum=6)
    D0, D, v, dv = (float(x) for x in spreads)
    if not (D0 > 0 and D > 0 and v > 0 and v + dv > 0):
        raise InvalidArgument("spreads", spreads, "positive D_0, D, v and v + dv")
    norm = _top_norm(net, top)
    L, C = net.depth, net.outputs
    if isinstance(norm[0], LayerNorm):     # a layer-normed top (lnpair)
        if not isinstance(top_world, World):
            raise InvalidArgument("top_world", top_world, "the layer norm's own four-sample world")
        same, cross, w = layer_norm_pairings(net, M, T, TopLayerNorm(below.world, top_world, below.spread), world)
    else:
        proxy = net.with_(norms=norm)      # the top norm alone, over the chain's world (``below``)
        same, cross, w = output_pairings(proxy, M, T, world.k, world.n, below=below)
    factor = D / D0 * v / (v + dv)
    inv2 = T / (v * (T - 3))
    inv4 = T**2 / (v**2 * (T - 3) * (T - 5))
    a, b = 1 - 2 / (T - 1) + 1 / (T**2 - 1), 1 / (T**2 - 1)
    s_same = C * inv4 * (a * same[1] + b * (same[0] + same[2])) / (T**2 * P)
    s_cross = C * (C - 1) * inv2**2 * ((T - 2) / (T - 1)) ** 2 * cross[1] / (T**2 * P) if C >= 2 else 0.0
    square = C * output_square(w, net.widths(M)[L - 1], float(net.sigma_w2[L - 1]), T) / P
    return float(s_mean_field * factor**2 + s_same + s_cross + square), (float(s_same), float(s_cross), float(square))
