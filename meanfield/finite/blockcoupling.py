"""lambda_max = top [[lam_1, sqrt((C - 1) c)], [sqrt((C - 1) c), d]]: several outputs' blocks coupled to second order.

With batch norm on the output the model's top of the C T x C T Gram is, to first order, the supremum over the output
sphere of a block's top (the GOE form of :func:`meanfield.finite.model.finite_width_stats`): lam_1, reached near a
product state u = a (x) b, a the best output direction and b the top eigenvector of the combined block G_aa. For an
output direction e orthogonal to a, block e of G u is G_ea b; its part along b is the first order's Y_ea, the rest,
v_e = P_b G_ea b (P_b = Pi - b b^T), is what the first order leaves out. The first two Lanczos steps from u give the
2 x 2 matrix above with |v|^2 = (C - 1) c; its top is a lower bound of the whole top.

* The exact structure. T G_kl = w_k^T Theta w_l + delta_kl K (Theta the last hidden layer's tangent blocks, shared by
  every output, K the output layer's feature Gram, w_k the output weights; :mod:`meanfield.sampled.tangent`). For e
  orthogonal to a, w_e is independent of the rest, so E_{w_e} G_ea^T G_ea = R_a / T with R_a(s, s') =
  g_a(s)^T S g_a(s') / T: the Gram of output a's hidden-parameter gradients g_a in the metric S = E_{w_e} (1/T)
  sum_t g_e(t) g_e(t)^T (the sample second moment averaged over the output weights).
* c for a random state (:func:`random_state_coupling`): b uniform on the centred unit sphere (n = T - 1 dimensions)
  and a fixed cross block X = Pi G_kl Pi: E |P_b X b|^2 = |X|_F^2 / n - ((tr X)^2 + |X|_F^2 + tr X^2) / (n (n + 2)),
  the three traces exact in T from the four-point covariances of the network below the output norm
  (:func:`meanfield.finite.fourpoint.gram_covariance`, sums over the 15 patterns of equal samples).
* The top state. If S acts as a multiple of the identity on the span of output a's gradients, R_a is proportional
  to the hidden part of a's block, and the top state's coupling exceeds a random state's by the ratio of their
  Rayleigh quotients in the block, top / d (d = E G_tt - E G_ts, the centred block's mean eigenvalue; top = the
  block's mean top): c = c_random top / d. An approximation (S also has a part along w_a itself, which couples
  mostly along b, and structure of its own), checked on sampled networks below; the reference is the mean block
  top, not the selected direction's top lam_1 (which would give 1.5-1.7 times the sampled c at C = 10).
* The selected block's own rotation (:func:`selected_block_rotation`, :func:`random_state_self_coupling`): b is the
  top of the block averaged over the output weights, not of G_aa; the gain of rotating it inside G_aa is second order
  in the part D_a of G_aa that a's output weights make, rho^4 times a typical block's (already in the mean block
  top), rho^2 the selected hidden part's scale (the first order's excess over f top, plus 1).
* beta = d: v lies in the other outputs' blocks; sampled beta / d is 1.04-1.11 at T = 8 and 1.4-1.6 at T = 64, and
  the top moves by 0.3% between beta = d and the sampled beta at relu M = T = 64 (13.97 against 14.01).

Measured (sampled Grams built from the tangent blocks, L = 3, M = 64, C = 10, hidden weights and batch seeds 0..n-1,
output weights seeds 10000 + seed; the state from the largest block's top eigenvector; per direction e, the
expectation over w_e of |P_b G_ea b|^2, c_random with a random a and b, and c_random top / d from the same draws):

| network | T | draws | c (E over w_e) | per-direction sampled | c_random | c_random top / d |
|---|---|---|---|---|---|---|
| relu | 64 | 3 | 0.514 | 0.474 | 0.113 | 0.43 |
| relu | 8 | 12 | 4.08 | 3.42 | 2.38 | 4.02 |
| tanh | 64 | 3 | 0.0177 | 0.0133 | 0.0043 | 0.0195 |
| tanh | 8 | 12 | 0.181 | 0.169 | 0.096 | 0.151 |
"""

from __future__ import annotations

import functools
import math

from ..errors import InvalidArgument, check_int, check_real
from ..spec.network import Network
from .fourpoint import gram_covariance, index_patterns

__all__ = ["cross_block_traces", "random_state_coupling", "random_state_self_coupling", "second_order_block_top",
           "selected_block_rotation"]


@functools.lru_cache(maxsize=256)
def cross_block_traces(net: Network, width: int, samples: int) -> tuple:
    """(E |X|_F^2, E (tr X)^2, E tr X^2), X = Pi G_kl Pi (k != l): a cross block's three traces, exact in T.

    Sums over the patterns of equal samples of the four-point covariances of the cross entries (their means are 0),
    in Gram units squared (G = J J^T / T).

    Args:
        net: a numeric network without normalization (the network below a batch norm on the output; pass
            :func:`meanfield.finite.model.plain_equivalent` for layer norms below); its output count is ignored.
        width: M.
        samples: T (>= 3).

    Returns:
        (frobenius, trace squared, trace of the square).

    Example:
        >>> frob, trace2, square = cross_block_traces(Network(3, "relu", 2, 0), 64, 8)
        >>> bool(frob > 0 and trace2 > 0)
        True
    """
    if not isinstance(net, Network) or net.is_symbolic or net.norms:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network without normalization")
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=3)
    two = net.with_(outputs=2)
    frob = trace2 = square = 0.0
    for (a, b, c, d), count in index_patterns(T):
        pi_ab = (a == b) - 1.0 / T
        pi_cd = (c == d) - 1.0 / T
        w = count * pi_ab * pi_cd
        # |X|_F^2 = sum Pi_ab Pi_cd A(c, b) A(d, a); (tr X)^2 = sum Pi_ab Pi_cd A(b, a) A(d, c);
        # tr X^2 = sum Pi_ab Pi_cd A(b, c) A(d, a), with A = G_10 (cross entries have mean 0)
        frob += w * gram_covariance(two, M, (1, 0, c, b), (1, 0, d, a))
        trace2 += w * gram_covariance(two, M, (1, 0, b, a), (1, 0, d, c))
        square += w * gram_covariance(two, M, (1, 0, b, c), (1, 0, d, a))
    return tuple(float(x) / T**2 for x in (frob, trace2, square))  # covariances of T G -> of G


@functools.lru_cache(maxsize=256)
def random_state_coupling(net: Network, width: int, samples: int) -> float:
    """E |P_b X b|^2 = |X|_F^2 / n - ((tr X)^2 + |X|_F^2 + tr X^2) / (n (n + 2)), X = Pi G_kl Pi (k != l), b random.

    b is uniform on the unit sphere of the centred vectors (n = T - 1 dimensions), P_b = Pi - b b^T, and the
    expectations of the three traces over the weights and inputs are exact in T (:func:`cross_block_traces`).

    Args:
        net: a numeric network without normalization (the network below a batch norm on the output; pass
            :func:`meanfield.finite.model.plain_equivalent` for layer norms below); its output count is ignored.
        width: M.
        samples: T (>= 3).

    Returns:
        c_random in Gram units squared (G = J J^T / T).

    Example:
        >>> c = random_state_coupling(Network(3, "relu", 2, 0), 64, 8)
        >>> bool(0 < c < 10)
        True
    """
    frob, trace2, square = cross_block_traces(net, width, samples)
    n = samples - 1
    return max(frob / n - (trace2 + frob + square) / (n * (n + 2)), 0.0)


def second_order_block_top(first: float, block_top: float, outputs: int, random_coupling: float,
                           mean_eigenvalue: float) -> float:
    """top [[lam_1, sqrt((C - 1) c)], [sqrt((C - 1) c), d]], c = c_random top / d (module docstring).

    Args:
        first: lam_1, the first-order top of the C outputs' centred Gram (>= 0).
        block_top: the mean top of one output's centred block (> 0 unless first is 0).
        outputs: C.
        random_coupling: c_random, :func:`random_state_coupling` (Gram units squared).
        mean_eigenvalue: d = E G_tt - E G_ts (> 0).

    Returns:
        the top of the 2 x 2 Lanczos matrix; lam_1 itself for one output or no coupling.

    Example:
        >>> top = second_order_block_top(13.0, 8.0, 10, 0.11, 2.2)
        >>> bool(13.0 < top < 13.5), second_order_block_top(9.0, 9.0, 1, 0.11, 2.2)
        (True, 9.0)
    """
    lam = check_real("first", first, minimum=0.0, symbolic=False)
    top = check_real("block_top", block_top, minimum=0.0, symbolic=False)
    C = check_int("outputs", outputs, minimum=1)
    c = check_real("random_coupling", random_coupling, minimum=0.0, symbolic=False)
    d = check_real("mean_eigenvalue", mean_eigenvalue, minimum=0.0, strict_min=True, symbolic=False)
    if C == 1 or c == 0.0 or lam == 0.0:
        return lam
    if top == 0.0:
        raise InvalidArgument("block_top", block_top, "> 0 when first > 0")
    vv = (C - 1) * c * top / d
    half = 0.5 * (lam - d)
    return 0.5 * (lam + d) + math.sqrt(half * half + vv)


@functools.lru_cache(maxsize=256)
def random_state_self_coupling(net: Network, width: int, samples: int) -> float:
    """E |P_b D b|^2 = (|X|_F^2 + tr X^2) / n - 2 ((tr X)^2 + |X|_F^2 + tr X^2) / (n (n + 2)), D a block's own part.

    D = G_kk - E_{w_k} G_kk = sum_ij (w_i w_j - delta_ij sigma_w^2 / M) Theta_ij / T is the part of one output's
    centred block that its own output weights make (:mod:`meanfield.sampled.tangent`). For Gaussian w (Wick)
    E D(t, s) D(t', s') = E X(t, s) X(t', s') + E X(t, s) X(s', t'), X = Pi G_kl Pi a cross block (k != l), so
    E |D|_F^2 = |X|_F^2 + tr X^2 and E (tr D)^2 = 2 (tr X)^2 (the traces of :func:`cross_block_traces`); D is
    symmetric, and for b uniform on the centred unit sphere (n = T - 1) E |D b|^2 = |D|_F^2 / n and
    E (b^T D b)^2 = ((tr D)^2 + 2 |D|_F^2) / (n (n + 2)).

    Args:
        net: a numeric network without normalization (the network below the output's batch norm).
        width: M.
        samples: T (>= 3).

    Returns:
        c_self in Gram units squared (G = J J^T / T).

    Example:
        >>> c = random_state_self_coupling(Network(3, "relu", 2, 0), 64, 8)
        >>> bool(0 < c < 20)
        True
    """
    frob, trace2, square = cross_block_traces(net, width, samples)
    n = samples - 1
    return max((frob + square) / n - 2.0 * (trace2 + frob + square) / (n * (n + 2)), 0.0)


def selected_block_rotation(block_top: float, mean_eigenvalue: float, self_coupling: float,
                            enhancement: float) -> float:
    """(rho^4 - 1) (top [[top, sqrt(c_self)], [sqrt(c_self), d]] - top): the selected output's extra rotation.

    The first order over the output sphere is Hellmann-Feynman along b, the top eigenvector of the block averaged over
    the output weights; the selected combination a's own block G_aa has its own top eigenvector, and the gain of
    that rotation is second order in D_a, the part of G_aa its output weights make (:func:`random_state_self_coupling`).
    A typical block's gain is already in the mean block top; the selected one's hidden part is rho^2 times a typical
    one's (its first-order excess lam_1 - top = f top (rho^2 - 1), f the hidden layers' share of the top), so its
    fluctuation is rho^2 times larger and its gain rho^4 times. The typical gain is the 2 x 2 Lanczos step of a
    random centred state (coupling c_self, rest at the mean eigenvalue d).

    Measured (sampled tangent blocks, L = 3, C = 10, seeds 0-11 (6 at T = 64); ``meanfield/notes/rmt.md`` section 6,
    "The rotation inside the selected block"): the selected gain over a random direction's is 4.75 / 3.53 relu
    (M = 64, T = 8 / 16; rho^4 4.49 / 4.51) and 4.3 / 4.8 tanh (rho^4 3.26 / 3.35). The typical gain by the 2 x 2 is
    close at T <= 16 (relu M = 64, T = 8: 0.50 against 0.31 sampled, T = 16 0.24 against 0.29) and 4x low at T = 64
    (0.043 against 0.177: the top sits in a dense edge, where the 2 x 2 under-counts the rest near the top).

    Args:
        block_top: the mean top of one output's centred block (Gram units, > 0).
        mean_eigenvalue: d = E G_tt - E G_ts (> 0, below block_top).
        self_coupling: c_self (Gram units squared, >= 0).
        enhancement: rho^2 >= 1, the selected hidden part's scale over a typical one's.

    Returns:
        the gain to add to the first-order top (Gram units, >= 0); 0 for rho^2 = 1.

    Example:
        >>> bool(1.0 < selected_block_rotation(29.3, 18.6, 5.6, 2.0) < 2.0)
        True
        >>> selected_block_rotation(29.3, 18.6, 5.6, 1.0)
        0.0
    """
    top = check_real("block_top", block_top, minimum=0.0, strict_min=True, symbolic=False)
    d = check_real("mean_eigenvalue", mean_eigenvalue, minimum=0.0, strict_min=True, symbolic=False)
    c = check_real("self_coupling", self_coupling, minimum=0.0, symbolic=False)
    rho2 = check_real("enhancement", enhancement, minimum=1.0, symbolic=False)
    if d > top:
        raise InvalidArgument("mean_eigenvalue", mean_eigenvalue, f"at most block_top = {block_top}")
    half = 0.5 * (top - d)
    typical = c / (half + math.sqrt(half * half + c)) if c > 0 else 0.0  # the 2 x 2's top less top, without cancellation
    return float((rho2 * rho2 - 1.0) * typical)
