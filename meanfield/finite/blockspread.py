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
  exact in T from the four-point engine (:func:`meanfield.finite.blockcoupling.cross_block_traces`). The top
  eigenvector's n is taken equal to a random state's (the approximation; measured below).

Measured (``meanfield/notes/rmt.md``, section 6, "The first order's spread from the effective number of hidden units
along the top": L = 3, M = 64, C = 10, centre-only, hidden weights and batch seeds 0-23, output weights seeds 10000 +
seed): the first-order spread 2 M (sigma_w^2 / M)^2 tr Q_b^2 / top^2 against the sampled within-draw spread of the
block tops, relu T = 8 / 16 / 64: 1.96 / 1.60 / 0.97 against 2.01 / 1.59 / 1.00; tanh: 1.17 / 0.99 / 0.67 against
1.20 / 1.02 / 0.68. n of the top state over a random state's: relu 0.94 / 0.91 / 0.93, tanh 1.06 / 1.08 / 1.11.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import InvalidArgument, check_int
from ..spec.network import Network
from .blockcoupling import cross_block_traces, random_state_self_coupling
from .blockshare import linear_edge_share, output_share_of_mean

__all__ = ["random_state_quadratic", "random_state_units", "excess_top_share", "first_order_wishart",
           "first_order_units"]


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
        (f, n): the hidden layers' share of the block top and the degrees of freedom; the relative spread of a
        block top is a = 2 f^2 / n.

    Example:
        >>> f, n = first_order_wishart(Network(3, "relu", 2, 0), 64, 64, 2.33, 1.0, 7.9)
        >>> bool(0.3 < f < 0.8 and 20 < n < 80)
        True
    """
    if not (np.isfinite(identity) and identity < top):
        raise InvalidArgument("identity", identity, f"finite and below top = {top}")
    f = 1.0 - excess_top_share(net, width, samples, mean, top)
    return float(f), random_state_units(net, width, samples, mean)


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
