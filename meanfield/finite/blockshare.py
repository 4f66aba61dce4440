"""s_top = u_h'(z*) / u'(z*): the output layer's share of the top of one output's sample block, by Hellmann-Feynman.

With batch norm on the output, one output's centred block is T G_kk = K + w_k^T Theta w_k: the output layer's
feature Gram K (the same for every output) plus the hidden layers' part (:mod:`meanfield.sampled.tangent`). The
derivative of the block's top in the scale of one summand is the top eigenvector's share of it (d top(A + t B) / dt =
b^T B b), so the output-specific spread of a block top is that of its scale times (1 - s_top) / (1 - s_d), s_top the
output layer's share of the top and s_d its share of the mean eigenvalue (``meanfield/notes/rmt.md``, section 6).

s_top from the deterministic equivalent. The linear part of the block is a sample Gram (1/T) Z^T Sigma Z of the
population Sigma = A A^T (:mod:`meanfield.finite.deterministic`, n modes, T samples). Its Stieltjes transform m
solves x = -1/m + (1/T) sum_i tau_i / (1 + tau_i m) and its upper edge is x(m*) at dx/dm = 0 (Silverstein and Choi,
*Analysis of the limiting spectral distribution of large dimensional random matrices*, J. Multivariate Anal. 1995).
With z = -1/m (real, above the population's edge) and u(z) = z g(z) = int rho(tau) z / (z - tau) dtau per mode, the
edge condition reads 1 + (n/T)(z u'(z) + u(z) - 1) = 0. Scaling the output layer's coordinates by (1 + t) moves
each population eigenvalue by tau_i times its eigenvector's share on them (Hellmann-Feynman for Sigma), and the
edge, stationary in m, moves by d edge / dt = -(n/T) z*^2 u_h'(z*), u_h the same transform restricted to the output
layer's channel (:func:`meanfield.finite.deterministic.channel_transforms`); the edge itself is -(n/T) z*^2 u'(z*).
So the linear part's share at the sample edge is u_h'(z*) / u'(z*): the trace share for T << n (z* -> infinity) and
the population edge's share for T >> n (z* -> the edge, where u' diverges).
"""

from __future__ import annotations

import functools
import types

import numpy as np

from ..errors import InvalidArgument, check_int, check_real
from ..spec.network import Network
from .freeprob import expected_max_symmetric, expected_max_wishart

__all__ = ["linear_edge_share", "edge_channel_shares", "layer_edge_share", "sample_top_share", "output_share_of_mean",
           "layer_share_of_mean", "wishart_excess", "FIRST_ORDER", "FIRST_ORDERS"]

# the first order's output-specific spread a of a block top in the random-matrix model with several outputs and batch
# norm on the output (meanfield.finite.model): "scale" (the earlier default: (1 - r) times the block scale's variance, r = T /
# (T + n)) or "top-share" (the scale's variance times ((1 - s_top) / (1 - s_d))^2, this module, and the Wishart form
# :func:`wishart_excess` over the output sphere); an explicit option, off by default: it lowers the grid's count within
# 5% (meanfield/notes/rmt.md, section 6); or "units" (the default): the Wishart form s_top I + (1 - s_top) W_n / n, n the
# effective number of hidden units along the top state, checked on sampled tangent blocks (meanfield.finite.blockspread)
FIRST_ORDERS = ("scale", "top-share", "units")
FIRST_ORDER = "units"


@functools.lru_cache(maxsize=256)
def linear_edge_share(net: Network, width: int, samples: int) -> tuple:
    """(u_h'(z*) / u'(z*), m_h / m): the output layer's share of the linear part at the sample edge and of its trace.

    Args:
        net: a plain numeric network with a hidden layer (its output count is ignored).
        width: M (the population has n = modes_per_width M modes).
        samples: T (>= 2).

    Returns:
        (edge share, trace share), both in [0, 1].

    Example:
        >>> edge, trace = linear_edge_share(Network(3, "relu", 2, 0), 64, 64)
        >>> bool(trace < edge < 0.65)
        True
    """
    key = ("h", net.depth - 1) if isinstance(net, Network) else None
    edge = edge_channel_shares(net, width, samples)
    trace = _edge_table(net)[5]
    return float(min(max(edge[key], 0.0), 1.0)), float(min(max(trace[key], 0.0), 1.0))


@functools.lru_cache(maxsize=256)
def edge_channel_shares(net: Network, width: int, samples: int) -> types.MappingProxyType:
    """{(name, layer): u_c'(z*) / u'(z*)}: every output channel's share of the linear part at the sample edge (a
    read-only mapping: it is cached).

    The module docstring's Hellmann-Feynman argument for one channel c (scale its coordinates by 1 + t): the edge
    moves by -(n/T) z*^2 u_c'(z*), so the top of the sample block carries the share u_c'(z*) / u'(z*) of the linear
    part on channel c. The channels are those of :func:`meanfield.finite.deterministic.channel_transforms`: ("h", j)
    the forward fluctuation h~^j carried by |dbar^{j+1}| (the gradient of W_{j+1}), ("d", j) the backward fluctuation
    d~^j carried by sqrt(|hbar^{j-1}|^2 + 1) (the gradient of W_j); the shares sum to 1.

    Args:
        net: a plain numeric network with a hidden layer (its output count is ignored).
        width: M (the population has n = modes_per_width M modes).
        samples: T (>= 2).

    Example:
        >>> shares = edge_channel_shares(Network(3, "relu", 2, 0), 64, 64)
        >>> round(sum(shares.values()), 9), bool(shares[("h", 2)] > shares[("h", 1)] > shares[("h", 0)])
        (1.0, True)
    """
    if not isinstance(net, Network) or net.is_symbolic or net.norms:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network without normalization")
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=2)
    modes_per_width, z, u, du, slopes, _ = _edge_table(net)
    n = modes_per_width * M
    F = 1.0 + (n / T) * (z * du + u - 1.0)  # < 0 near the edge, -> 1 far above: one crossing
    sign = np.nonzero((F[:-1] < 0) & (F[1:] >= 0))[0]
    if sign.size:
        i = int(sign[0])
        w = -F[i] / (F[i + 1] - F[i])
        total = (1 - w) * du[i] + w * du[i + 1]
        shares = {key: float(((1 - w) * d[i] + w * d[i + 1]) / total) for key, d in slopes.items()}
        return types.MappingProxyType(shares)
    if F[0] >= 0:
        # T >> n: the sample edge lies within 1e-5 (relative) of the population's: the population edge's shares
        return types.MappingProxyType({key: float(d[0] / du[0]) for key, d in slopes.items()})
    raise InvalidArgument("samples", T, "a sample edge above the population's on the grid (T / n not extreme)")


@functools.lru_cache(maxsize=64)
def _edge_table(net: Network) -> tuple:
    """The transforms u and the channels' slopes u_c' on the z grid above the population's edge, and the channels'
    trace shares: they depend on the network only (the width and the batch enter the edge condition through n / T
    alone)."""
    from .deterministic import channel_transforms, population_law

    law = population_law(net.with_(outputs=1))
    # z on a geometric grid above the edge (10 points a decade; 20 move the share by at most 0.3%, lambda_max by about
    # 0.05%, and double the cost of a cold call's largest part); u' by central differences (u is smooth off the spectrum)
    z = law.edge * (1.0 + np.geomspace(1e-5, 1e3, 81))
    g = channel_transforms(net, tuple(z.tolist()))
    u = np.array([z_ * sum(c.values()) for z_, c in zip(z, g)])
    du = np.gradient(u, z)
    slopes = {key: np.gradient(np.array([z_ * c[key] for z_, c in zip(z, g)]), z) for key in g[0]}
    # trace shares m_c / m: z g_c(z) = c_c + m_c / z + O(z^-2), so m_c from two far points (z1, 2 z1)
    z1 = 100.0 * law.edge
    far, farther = channel_transforms(net, (z1, 2.0 * z1))
    m1 = {k: (z1 * far[k] - 2.0 * z1 * farther[k]) / (1.0 / z1 - 0.5 / z1) for k in far}
    traces = {k: v / sum(m1.values()) for k, v in m1.items()}
    return law.modes_per_width, z, u, du, slopes, traces


def layer_edge_share(net: Network, width: int, samples: int, layer: int) -> float:
    """The weights W_l's share of the linear part at the sample edge: the channels ("h", l - 1) and ("d", l).

    The linear part of W_l's gradient delta^l (x) h^{l-1} is dbar^l (x) h~^{l-1} + d~^l (x) hbar^{l-1}
    (:mod:`meanfield.finite.population`); the output layer (l = L) has no backward fluctuation.

    Args:
        net: as :func:`edge_channel_shares`.
        width: M.
        samples: T (>= 2).
        layer: l in 1..L.

    Example:
        >>> net = Network(3, "relu", 2, 0)
        >>> round(sum(layer_edge_share(net, 64, 64, l) for l in (1, 2, 3)), 9)
        1.0
    """
    shares = edge_channel_shares(net, width, samples)
    l = check_int("layer", layer, minimum=1, maximum=net.depth)
    return float(min(max(shares[("h", l - 1)] + shares.get(("d", l), 0.0), 0.0), 1.0))


def sample_top_share(net: Network, width: int, samples: int, mean: float, identity: float, top: float) -> float:
    """s_top = (s_d d - s_lin,tr L + s_lin (top - d_0)) / top: the output layer's share of a block's mean top.

    The model's block is d_0 I plus the linear part (mean eigenvalue L = d - d_0 - ell, the spike ell ignored here);
    the output layer's part of d_0 is its part of the whole trace, s_d d with s_d = M (qhat_1 - qhat_2) / (T d), less
    its part of the linear trace; the linear part's top carries the share at the sample edge
    (:func:`linear_edge_share`).

    Args:
        net: as :func:`linear_edge_share`.
        width: M.
        samples: T.
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).
        identity: d_0, its identity part (the model's ``bulk["identity"]``).
        top: the block's mean top (> identity).

    Returns:
        s_top in [0, 1].

    Example:
        >>> s = sample_top_share(Network(3, "relu", 2, 0), 64, 64, 2.33, 1.0, 7.9)
        >>> bool(0.2 < s < 0.65)
        True
    """
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=2)
    for name, value in (("mean", mean), ("top", top)):
        if not (np.isfinite(value) and value > 0):
            raise InvalidArgument(name, value, "a finite positive number")
    if not (np.isfinite(identity) and identity < top):
        raise InvalidArgument("identity", identity, f"finite and below top = {top}")
    edge, trace = linear_edge_share(net, M, T)
    s_d = output_share_of_mean(net, M, T, mean)
    linear = max(mean - identity, 0.0)
    out = (s_d * mean - trace * linear + edge * (top - identity)) / top
    return float(min(max(out, 0.0), 1.0))


def output_share_of_mean(net: Network, width: int, samples: int, mean: float) -> float:
    """s_d = M (qhat_1 - qhat_2) / (T d): the output layer's share of the centred block's mean eigenvalue d.

    The output layer's part of T G_kk(t, t) - T G_kk(t, s) is h(x_t) . h(x_t) - h(x_t) . h(x_s) (the bias cancels),
    M (qhat_1 - qhat_2) in mean field (the last hidden layer's order parameters); :func:`layer_share_of_mean` at
    l = L.

    Example:
        >>> bool(0.1 < output_share_of_mean(Network(3, "relu", 2, 0), 64, 64, 2.33) < 0.3)
        True
    """
    return layer_share_of_mean(net, width, samples, mean, net.depth if isinstance(net, Network) else 0)


def layer_share_of_mean(net: Network, width: int, samples: int, mean: float, layer: int) -> float:
    """W_l's share of the centred block's mean eigenvalue d, in mean field.

    Layer l's part of T G_kk(t, t) - T G_kk(t, s) is (M_{l-1} qhat_1^{l-1} + 1) qtilde_1^l - (M_{l-1} qhat_2^{l-1} + 1)
    qtilde_2^l (the dual Gram's entries of :mod:`meanfield.theory.recursions`, a plain network: qtilde = 1 at the
    output, where it is M (qhat_1 - qhat_2)); divided by T d.

    Args:
        net: a numeric network without normalization (the network below the output's batch norm).
        width: M.
        samples: T (>= 2).
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).
        layer: l in 1..L.

    Returns:
        the share, at most 1.

    Example:
        >>> net = Network(3, "relu", 2, 0)
        >>> d = 1e6 * sum(layer_share_of_mean(net, 64, 16, 1e6, l) for l in (1, 2, 3))  # the mean-field d
        >>> round(sum(layer_share_of_mean(net, 64, 16, d, l) for l in (1, 2, 3)), 9)
        1.0
    """
    if not isinstance(net, Network) or net.is_symbolic or net.norms:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network without normalization")
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=2)
    l = check_int("layer", layer, minimum=1, maximum=net.depth)
    if not (np.isfinite(mean) and mean > 0):
        raise InvalidArgument("mean", mean, "a finite positive number")
    return min(_layer_parts(net, M, T)[l - 1] / (T * mean), 1.0)


@functools.lru_cache(maxsize=256)
def _layer_parts(net: Network, width: int, samples: int) -> tuple:
    """Per layer l = 1..L: (M_{l-1} qhat_1^{l-1} + 1) qtilde_1^l - (M_{l-1} qhat_2^{l-1} + 1) qtilde_2^l (one
    recursion for all layers; the callers ask for several layers of the same cell)."""
    from ..theory.recursions import order_parameters

    layers = order_parameters(net.with_(outputs=1), samples).layers
    fan_in = net.widths(width)
    return tuple((fan_in[l - 1] * float(layers[l - 1].qhat1) + 1.0) * float(layers[l].qtilde1)
                 - (fan_in[l - 1] * float(layers[l - 1].qhat2) + 1.0) * float(layers[l].qtilde2)
                 for l in range(1, net.depth + 1))


def wishart_excess(count: int, spread: float, extra_diagonal: float = 0.0) -> float:
    """E lambda_max(W_n / n + D) - 1, n = 2 / a: the first order over the output sphere as a Wishart form in the
    output weights (C x C, W Wishart with n degrees of freedom, D diagonal N(0, ``extra_diagonal``)).

    Its entries have the variances of the GOE form (2 / n = a on the diagonal, a / 2 off it), but it is positive with
    the heavier top of a Wishart matrix (the block tops' output-specific part is mostly |w_k|^2; notes section 6).
    Deterministic (:func:`meanfield.finite.freeprob.expected_max_wishart`). a = 0: the diagonal alone.

    Example:
        >>> bool(wishart_excess(10, 0.02) > 0), wishart_excess(1, 0.02)
        (True, 0.0)
    """
    C = check_int("count", count, minimum=1)
    a = check_real("spread", spread, minimum=0.0, symbolic=False)
    extra = check_real("extra_diagonal", extra_diagonal, minimum=0.0, symbolic=False)
    if a == 0.0:
        return expected_max_symmetric(C, extra, 0.0)
    return expected_max_wishart(C, 1.0, 2.0 / a, extra)
