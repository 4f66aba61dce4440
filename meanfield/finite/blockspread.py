"""Y = s_top I + (1 - s_top) W_n / n: the first order of several outputs' block tops, a Wishart form in the weights.

With centre-only batch norm on the output, T G_kl = w_k^T Theta w_l + delta_kl K (:mod:`meanfield.sampled.tangent`).
Fix the hidden weights and the batch, and let b be the top eigenvector of the block averaged over the output weights,
A = K + (sigma_w^2 / M) sum_i Theta_ii. By Hellmann-Feynman the top of the combined output a . f's block moves, to
first order, by b^T (W_a - E W_a) b / T, so over the output sphere the first order is the C x C matrix

    T Y_kl = delta_kl b^T K b + w_k^T Q_b w_l,   Q_b(i, j) = sum_ts b_t b_s Theta(i t, j s)   (M x M),

a sum over the eigenvalues q_i of (sigma_w^2 / M) Q_b of q_i x_i x_i^T (x_i standard normal in R^C): a Wishart-type
form. Its mean is the block top, its output layer's part s_top (the same for every output), and its relative variances
are a = 2 (1 - s_top)^2 / n on the diagonal and half that off it, n = (tr Q_b)^2 / tr Q_b^2 the effective number of
hidden units along b. The model replaces it by s_top I + (1 - s_top) W_n / n (W Wishart, n degrees of freedom), which
has the same first two moments.

* s_top = (s_d d + s_edge (top - d)) / top (:func:`excess_top_share`): the block's mean eigenvalue d carries the whole
  block's output-layer share s_d = M (qhat_1 - qhat_2) / (T d) (exact in mean field), and the top's excess over the
  mean carries the share of the linear part at its sample edge, s_edge
  (:func:`meanfield.finite.blockshare.linear_edge_share`). Not the linear part's own trace share: the linearised
  population is rescaled to the four-point second moment and does not keep its trace (its output-layer share of the
  trace, 0.376 for relu, exceeds the whole block's 0.22), which put
  :func:`meanfield.finite.blockshare.sample_top_share` 0.03-0.05 high.
* n: for b uniform on the centred unit sphere (T - 1 dimensions) E (b^T X b)^2 = ((tr X)^2 + tr X^2 + |X|_F^2) /
  (n_c (n_c + 2)) (n_c = T - 1) for a cross block X = Pi G_kl Pi, and E_w (b^T X b)^2 = (sigma_w^2 / M)^2 tr Q_b^2;
  the hidden part of b's Rayleigh quotient is (1 - s_d) d on average (d the centred block's mean eigenvalue, s_d
  :func:`meanfield.finite.blockshare.output_share_of_mean`), so n_random = ((1 - s_d) d)^2 / E (b^T X b)^2, the traces
  exact in T from the four-point engine (:func:`meanfield.finite.blockcoupling.cross_block_traces`).
* n of the top state (:func:`top_state_units`, the model's): from the random state's, with the top's own weighting
  of the units (its excess over the mean lies along the units' shared directions, where a unit enters through its mean
  slope squared, :func:`unit_slope_moments`) and its layer split (the last hidden layer's own weights, which do not
  couple units, carry more of the top: :func:`own_layer_split`, from the population law's channels at the sample
  edge). Relu's top favours the units on for more of the batch (n below a random state's), tanh's top sits more in the
  own weights (n above).

Measured (``meanfield/notes/rmt.md``, section 6, "The first order's spread from the effective number of hidden units
along the top": L = 3, M = 64, C = 10, centre-only, hidden weights and batch seeds 0-23, output weights seeds 10000 +
seed): the first-order spread 2 M (sigma_w^2 / M)^2 tr Q_b^2 / top^2 against the sampled within-draw spread of the
block tops, relu T = 8 / 16 / 64: 1.96 / 1.60 / 0.97 against 2.01 / 1.59 / 1.00; tanh: 1.17 / 0.99 / 0.67 against
1.20 / 1.02 / 0.68. n of the top state over a random state's: relu 0.94 / 0.91 / 0.93, tanh 1.06 / 1.08 / 1.11
(derived, :func:`top_state_units` over :func:`random_state_units` at the model's top, M = 64: relu T = 16 / 64 / 128
0.98 / 0.92 / 0.90, tanh 1.07 / 1.12 / 1.16; notes section 6, "The top state's effective number of hidden units").
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit, breaks, normal_rule
from ..spec.network import Network
from .blockcoupling import cross_block_traces, random_state_self_coupling
from .blockshare import layer_edge_share, layer_share_of_mean, linear_edge_share, output_share_of_mean

__all__ = ["random_state_quadratic", "random_state_units", "excess_top_share", "first_order_wishart",
           "first_order_units", "own_layer_split", "unit_slope_moments", "unit_spreads",
           "top_state_units"]


@functools.lru_cache(maxsize=256)
def random_state_quadratic(net: Network, width: int, samples: int) -> float:
    """E (b^T X b)^2 = ((tr X)^2 + tr X^2 + |X|_F^2) / (n (n + 2)), X = Pi G_kl Pi (k != l), b random (n = T - 1).

    b uniform on the unit sphere of the centred vectors; the traces' expectations over the weights and inputs exact
    in T (:func:`meanfield.finite.blockcoupling.cross_block_traces`). Gram units squared.

    Args:
        net: a numeric network without normalization (its output count is ignored).
        width: M.
        samples: T (>= 3).

    Example:
        >>> bool(0 < random_state_quadratic(Network(3, "relu", 2, 0), 64, 8) < 10)
        True
    """
    frob, trace2, square = cross_block_traces(net, width, samples)
    n = check_int("samples", samples, minimum=3) - 1
    return max((trace2 + square + frob) / (n * (n + 2)), 0.0)


def random_state_units(net: Network, width: int, samples: int, mean: float) -> float:
    """n = ((1 - s_d) d)^2 / E (b^T X b)^2: the effective number of hidden units along a random centred state.

    Args:
        net: a numeric network without normalization (the network below the output's batch norm).
        width: M.
        samples: T (>= 3).
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).

    Returns:
        n > 0 (infinite when the cross blocks vanish).

    Example:
        >>> n = random_state_units(Network(3, "relu", 2, 0), 64, 64, 2.33)
        >>> bool(20 < n < 80)
        True
    """
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=3)
    if not (np.isfinite(mean) and mean > 0):
        raise InvalidArgument("mean", mean, "a finite positive number")
    hidden = (1.0 - output_share_of_mean(net, M, T, mean)) * mean
    q = random_state_quadratic(net, M, T)
    return float(hidden * hidden / q) if q > 0 else float("inf")


def excess_top_share(net: Network, width: int, samples: int, mean: float, top: float) -> float:
    """s_top = (s_d d + s_edge (top - d)) / top: the output layer's share of a centred block's mean top (module docstring).

    Args:
        net: a numeric network without normalization (the network below the output's batch norm).
        width: M.
        samples: T (>= 2).
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).
        top: the block's mean top (>= mean).

    Returns:
        s_top in [0, 1].

    Example:
        >>> s = excess_top_share(Network(3, "relu", 2, 0), 64, 64, 2.33, 7.9)
        >>> bool(0.4 < s < 0.5)
        True
    """
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=2)
    if not (np.isfinite(mean) and mean > 0):
        raise InvalidArgument("mean", mean, "a finite positive number")
    if not (np.isfinite(top) and top >= mean):
        raise InvalidArgument("top", top, f"finite and at least mean = {mean}")
    edge, _ = linear_edge_share(net, M, T)
    s_d = output_share_of_mean(net, M, T, mean)
    return float(min(max((s_d * mean + edge * (top - mean)) / top, 0.0), 1.0))


def first_order_wishart(net: Network, width: int, samples: int, mean: float, identity: float,
                        top: float) -> tuple:
    """(1 - s_top, n): the Wishart form s_top I + (1 - s_top) W_n / n of the first order over the output sphere.

    Args:
        net: a numeric network without normalization (the network below the output's batch norm).
        width: M.
        samples: T (>= 3).
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).
        identity: d_0, the identity part of the model's block (below top; kept for the signature of
            :func:`meanfield.finite.blockshare.sample_top_share`, not used by :func:`excess_top_share`).
        top: the block's mean top (Gram units).

    Returns:
        (f, n): the hidden layers' share of the block top and the degrees of freedom, n the top state's
        (:func:`top_state_units`); the relative spread of a block top is a = 2 f^2 / n.

    Example:
        >>> f, n = first_order_wishart(Network(3, "relu", 2, 0), 64, 64, 2.33, 1.0, 7.9)
        >>> bool(0.3 < f < 0.8 and 20 < n < 80)
        True
    """
    if not (np.isfinite(identity) and identity < top):
        raise InvalidArgument("identity", identity, f"finite and below top = {top}")
    f = 1.0 - excess_top_share(net, width, samples, mean, top)
    return float(f), top_state_units(net, width, samples, mean, top)


def first_order_units(net: Network, width: int, samples: int, mean: float, identity: float, top: float) -> tuple:
    """(1 - s_top, n, c_self): :func:`first_order_wishart` and a block's own coupling for the selected rotation.

    c_self is :func:`meanfield.finite.blockcoupling.random_state_self_coupling` (Gram units squared), which the model
    turns into the selected block's extra rotation (:func:`meanfield.finite.blockcoupling.selected_block_rotation`).

    Args:
        net: a numeric network without normalization (the network below the output's batch norm).
        width: M.
        samples: T (>= 3).
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).
        identity: d_0, the identity part of the model's block (below top).
        top: the block's mean top (Gram units).

    Example:
        >>> f, n, c = first_order_units(Network(3, "relu", 2, 0), 64, 64, 2.33, 1.0, 7.9)
        >>> bool(0.3 < f < 0.8 and 20 < n < 80 and c > 0)
        True
    """
    f, n = first_order_wishart(net, width, samples, mean, identity, top)
    return f, n, random_state_self_coupling(net, width, samples)


def own_layer_split(net: Network, width: int, samples: int, mean: float, top: float) -> tuple:
    """(sigma_random, sigma_top): the last hidden layer's own weights' share of the hidden part of b's Rayleigh quotient
    (a random centred state's and the top state's).

    Q_b's trace splits into the last hidden layer's own weights W_{L-1} (Theta_ii's part phi'_i(t) phi'_i(s)
    K_{L-1}(t, s), diagonal in the units: they do not couple) and the layers below (which alone couple units i != j).
    For a random centred state the split is that of the block's mean eigenvalue d (mean field,
    :func:`meanfield.finite.blockshare.layer_share_of_mean`): sigma_random = s_own,d / (1 - s_d). For the top state,
    as :func:`excess_top_share` does for the output layer, d carries the mean's split and the top's excess over d
    the linear part's at its sample edge (:func:`meanfield.finite.blockshare.layer_edge_share`, the channels
    ("h", L - 2) and ("d", L - 1)): s_own,top = (s_own,d d + e_own (top - d)) / top, sigma_top = s_own,top /
    (1 - s_top).

    Measured (``meanfield/notes/rmt.md``, section 6, "The top state's effective number of hidden units"; L = 3,
    M = 64, centre-only, 20 draws of sampled tangent blocks, ``benchmarks/rmt_top_state.py``, at the sampled mean
    top): relu T = 16 / 64: sigma_top 0.550 / 0.636 against 0.534 / 0.633 sampled (se 0.005), sigma_random 0.446
    against 0.445 / 0.444; tanh 0.529 / 0.614 against 0.548 / 0.641, sigma_random 0.460 against 0.463 / 0.454
    (M = 128, T = 32, 8 draws: relu sigma_top 0.551 against 0.565, tanh 0.542 against 0.587). The split alone does
    not give the top state's n: relu's top also weights the units (:func:`top_state_units`).

    Args:
        net: a numeric network without normalization with at least two hidden layers (L >= 3; for L = 2 the own
            layer is the whole hidden part).
        width: M.
        samples: T (>= 2).
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).
        top: the block's mean top (>= mean).

    Returns:
        (sigma_random, sigma_top), both in [0, 1].

    Example:
        >>> r, t = own_layer_split(Network(3, "relu", 2, 0), 64, 64, 2.33, 8.08)
        >>> bool(0.4 < r < t < 0.7)
        True
    """
    if not isinstance(net, Network) or net.is_symbolic or net.norms or net.depth < 3:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network without normalization, with at least two hidden layers")
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=2)
    if not (np.isfinite(mean) and mean > 0):
        raise InvalidArgument("mean", mean, "a finite positive number")
    if not (np.isfinite(top) and top >= mean):
        raise InvalidArgument("top", top, f"finite and at least mean = {mean}")
    own = net.depth - 1
    s_d = output_share_of_mean(net, M, T, mean)
    own_d = layer_share_of_mean(net, M, T, mean, own)
    s_top = excess_top_share(net, M, T, mean, top)
    own_top = (own_d * mean + layer_edge_share(net, M, T, own) * (top - mean)) / top
    if s_d >= 1.0 or s_top >= 1.0:
        raise InvalidArgument("mean", mean, "a block with a hidden part (the output layer's share below 1)")
    return (float(min(max(own_d / (1.0 - s_d), 0.0), 1.0)), float(min(max(own_top / (1.0 - s_top), 0.0), 1.0)))


@functools.lru_cache(maxsize=256)
def unit_slope_moments(net: Network, samples: int) -> tuple:
    """(E rho, E rho^2, E pi, E pi^2, E rho pi) over the last hidden layer's units: their slopes' batch statistics.

    Per unit i, rho_i = (1/T) sum_t phi'(u_i(t))^2 and pi_i = ((1/T) sum_t phi'(u_i(t)))^2 over a batch of T inputs.
    Given the unit's weights its pre-activations are iid over the inputs, N(ubar_i, V) with V = q_1 - q_2 and the unit
    types ubar_i ~ N(0, q_2) (mean field of layer L - 1), so with mu_k = E[phi'^k | ubar] the moments are exact in T:
    E rho^2 = mu_2^2 + (mu_4 - mu_2^2) / T, E pi = mu_1^2 + (mu_2 - mu_1^2) / T,
    T^4 E pi^2 = T mu_4 + 4 T(T-1) mu_3 mu_1 + 3 T(T-1) mu_2^2 + 6 T(T-1)(T-2) mu_2 mu_1^2 + T(T-1)(T-2)(T-3) mu_1^4,
    T^3 E rho pi = T mu_4 + 2 T(T-1) mu_3 mu_1 + T(T-1) mu_2^2 + T(T-1)(T-2) mu_2 mu_1^2 (the patterns of equal
    samples), then averaged over the types (quadratures of :mod:`meanfield.integrals.quadrature`).

    Args:
        net: a numeric network without normalization with a hidden layer.
        samples: T (>= 1).

    Example:
        >>> er, er2, ep, ep2, erp = unit_slope_moments(Network(3, "relu", 2, 0), 64)
        >>> round(er, 12), bool(ep < er and er2 > er**2)       # relu: phi'^2 = phi', E phi' = 1/2
        (0.5, True)
    """
    if not isinstance(net, Network) or net.is_symbolic or net.norms or net.depth < 2:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network without normalization, with a hidden layer")
    from ..theory.recursions import order_parameters

    T = check_int("samples", samples, minimum=1)
    last = net.depth - 1
    layer = order_parameters(net.with_(outputs=1), T).layers[last]
    q1, q2 = float(layer.q1), float(layer.q2)
    sd = math.sqrt(max(q1 - q2, 0.0))
    unit = Unit.of(net.phi(last))
    xt, wt = normal_rule(np.zeros((1, 0)))  # the types' standard normal
    ubar = math.sqrt(max(q2, 0.0)) * xt[0]
    e, w = normal_rule(breaks(unit, ubar, sd))
    slope = np.asarray(unit.df(ubar[:, None] + sd * e), dtype=float)
    m1, m2, m3, m4 = ((w * slope**k).sum(1) for k in (1, 2, 3, 4))
    rho2 = m2 * m2 + (m4 - m2 * m2) / T
    pi = m1 * m1 + (m2 - m1 * m1) / T
    pi2 = (T * m4 + 4 * T * (T - 1) * m3 * m1 + 3 * T * (T - 1) * m2 * m2 + 6 * T * (T - 1) * (T - 2) * m2 * m1 * m1
           + T * (T - 1) * (T - 2) * (T - 3) * m1**4) / T**4
    rho_pi = (T * m4 + 2 * T * (T - 1) * m3 * m1 + T * (T - 1) * m2 * m2 + T * (T - 1) * (T - 2) * m2 * m1 * m1) / T**3
    return tuple(float(wt[0] @ a) for a in (m2, rho2, pi, pi2, rho_pi))


def top_state_units(net: Network, width: int, samples: int, mean: float, top: float) -> float:
    """n_top: the effective number of hidden units along the top state b (not a random centred state's).

    1/n = (tr Q_b^2) / (tr Q_b)^2 = (1 + D) / M + kappa: the units' spread D (the squared coefficient of variation
    of the diagonal Q_ii over the units) and the coupling kappa = sum_{i != j} Q_ij^2 / (tr Q_b)^2, which only the
    layers below the last hidden layer's own weights make (those are diagonal in the units). Every entry of Q_b
    carries the units' slopes: Theta(i t, j s) = phi'_i(t) phi'_j(s) X_ij(t, s).

    * The units' weights. A random centred state weights unit i by its trace, proportional to rho_i = mean_t
      phi'_i(t)^2. The top state's hidden part is the block's mean part (1 - s_d) d, spread as a random state's, and
      its excess over it, a fraction alpha = 1 - (1 - s_d) d / (f top) of f top; the excess lies along directions the
      units share (the sample edge of the population's common channels), where unit i enters through its mean slope,
      sum_t b_t^2 phi'_i(t) ~ mean_t phi'_i(t), squared: pi_i. So Q_ii ~ (1 - alpha) rho_i / E rho + alpha pi_i / E pi,
      and D_top = E[((1 - alpha) rho / E rho + alpha pi / E pi)^2] - 1, D_random = E rho^2 / (E rho)^2 - 1 (the
      moments exact in T over the unit types, :func:`unit_slope_moments`). For relu (rho = mean of the mask, pi its
      square) the top favours units that are on for more of the batch; for tanh (phi' near 1) rho and pi spread alike.
    * The coupling: a random state's kappa is its 1/n (:func:`random_state_units`, exact in T) less (1 + D_random) / M;
      it is the lower layers' part, so it scales with their share of the hidden part squared, ((1 - sigma_top) /
      (1 - sigma_random))^2 (:func:`own_layer_split`; for one hidden layer there is no lower layer and it is kept).

    So 1/n_top = (1 + D_top) / M + (1/n_random - (1 + D_random) / M) ((1 - sigma_top) / (1 - sigma_random))^2.
    Approximations: the units' other factors (their rows' norms, the backward noise) are taken alike for the two
    states, and b's weights over the samples as flat (the mean slope over the batch, not b^2-weighted).

    Measured against sampled tangent blocks (``meanfield/notes/rmt.md``, section 6, "The top state's effective
    number of hidden units"; L = 3, M = 64, centre-only; at the model's d and top, against 40 draws of session 9):
    relu T = 16 / 64 / 128 n_top 40.6 / 42.6 / 42.2 against 38.1 / 43.0 / 43.5 sampled (random states 41.4 / 45.7 /
    47.2); tanh 48.6 / 53.8 / 55.8 against 50.8 / 55.0 / 56.3 (random 47.6 / 49.6 / 50.3). At T = 16 only about a
    third of relu's selection is explained (b is not flat over the samples for relu: T sum_t b_t^4 is 5.3 at T = 64).

    Args:
        net: a numeric network without normalization (the network below the output's batch norm).
        width: M.
        samples: T (>= 3).
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).
        top: the block's mean top (>= mean).

    Returns:
        n_top > 0 (infinite for units without slope, or if the formula's 1/n is not positive, which needs a
        random state's coupling far below zero).

    Example:
        >>> net = Network(3, "relu", 2, 0)
        >>> n = top_state_units(net, 64, 64, 2.33, 8.08)
        >>> bool(30 < n < random_state_units(net, 64, 64, 2.33))
        True
    """
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=3)
    spreads = unit_spreads(net, M, T, mean, top)
    if spreads is None:  # units without slope (constant): no hidden part to spread
        return float("inf")
    spread_random, spread_top = spreads
    n_random = random_state_units(net, M, T, mean)
    units = net.widths(M)[net.depth - 1]
    coupling = 1.0 / n_random - (1.0 + spread_random) / units
    scale = 1.0
    if net.depth >= 3:
        s_random, s_top = own_layer_split(net, M, T, mean, top)
        scale = ((1.0 - s_top) / (1.0 - s_random)) ** 2 if s_random < 1.0 else 1.0
    inverse = (1.0 + spread_top) / units + coupling * scale
    return float(1.0 / inverse) if inverse > 0 else float("inf")


def unit_spreads(net: Network, width: int, samples: int, mean: float, top: float) -> tuple | None:
    """(D_random, D_top): the squared coefficients of variation of Q_ii over the units from their slopes' weights.

    D_random = E rho^2 / (E rho)^2 - 1 and D_top = E[((1 - alpha) rho / E rho + alpha pi / E pi)^2] - 1 with
    alpha = 1 - (1 - s_d) d / (f top) the top's excess share of its hidden part (:func:`top_state_units`; the moments
    of :func:`unit_slope_moments`). None for units without slope (E rho = 0 or E pi = 0).

    Args:
        net: a numeric network without normalization (the network below the output's batch norm).
        width: M.
        samples: T (>= 3).
        mean: d, the centred block's mean eigenvalue (Gram units, > 0).
        top: the block's mean top (>= mean).

    Example:
        >>> rand, top = unit_spreads(Network(3, "relu", 2, 0), 64, 64, 2.33, 8.08)
        >>> bool(0.1 < rand < top < 1.0)
        True
    """
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=3)
    if not (np.isfinite(mean) and mean > 0):
        raise InvalidArgument("mean", mean, "a finite positive number")
    if not (np.isfinite(top) and top >= mean):
        raise InvalidArgument("top", top, f"finite and at least mean = {mean}")
    er, er2, ep, ep2, erp = unit_slope_moments(net, T)
    if er <= 0 or ep <= 0:
        return None
    f = 1.0 - excess_top_share(net, M, T, mean, top)
    hidden_mean = (1.0 - output_share_of_mean(net, M, T, mean)) * mean
    # alpha <= 1 always; below 0 the top's hidden part is under the mean's (its whole excess in the output layer's
    # features), and no excess is left to weight the units: 0
    alpha = max(1.0 - hidden_mean / (f * top), 0.0) if f > 0 else 0.0
    spread_random = er2 / er**2 - 1.0
    spread_top = ((1.0 - alpha) ** 2 * er2 / er**2 + 2.0 * alpha * (1.0 - alpha) * erp / (er * ep)
                  + alpha**2 * ep2 / ep**2 - 1.0)
    return float(spread_random), float(spread_top)
