"""lambda_max = top [[lambda_O, sqrt V], [sqrt V, beta]]: the C outliers coupled to the centred Gram, derived.

Without normalization on the output, the model's top is the largest eigenvalue lambda_O of the C x C outlier
matrix O_kl = 1^T G_kl 1 / T (the Gram restricted to the span U of the vectors e_k (x) 1 / sqrt(T)) plus the
second-order shift from the rest of the Gram. With u = a (x) 1 / sqrt(T) the top eigenvector of O and Q = I - U U^T,
the whole top solves lambda = lambda_O + v^T (lambda - Q G Q)^(-1) v, v = Q G u, and the first two Lanczos steps
from u give the 2 x 2 matrix

    [[lambda_O, |v|], [|v|, beta]],   beta = v^T G v / |v|^2,

whose top is a lower bound of lambda_max and, on sampled networks, within 0.1-2.5% of it (below). The pieces:

* |v|^2 for a fixed output direction e_1, exact in T from the four-point rules: block k of v is Pi G_k1 1 / sqrt(T),
  so E |v|^2 = V_own + (C - 1) V_cross with (G units; Cov of T G from
  :func:`meanfield.finite.fourpoint.gram_covariance` or, below layer norms,
  :func:`meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance`)

      V = (1/T) [ sum_{t,s,s'} Cov(G_ts, G_ts') - (1/T) sum_{t,s,t',s'} Cov(G_ts, G_t's') ],

  the sums over the patterns of equal samples, each counted T (T - 1) ... times (the means cancel: every row of a
  block has the same mean). V_own uses one output's block G_11, V_cross a cross block G_21. Below layer norms the
  covariances take each norm's backward noise at width M (``finite_noise``, as the outlier variances).
* The selected direction: v = Q G u is linear in G along u, and the top outlier's direction carries a Gram larger
  by r = lambda_O / E O_kk than a fixed direction, so E |v|^2 = r^2 V (a scaling argument, not an exact selection
  law: sampled |v|^2 of the top direction over that of fixed directions 1.7-2.3 at M = 64 against r^2 = 1.8-2.1).
* beta: for one output, the second moment of a sample covariance along its mean direction m (population
  covariance Sigma, T samples) is E m^T S^2 m = (m^T Sigma m)^2 + (m^T Sigma m) tr Sigma / T, so beta = d + V_own /
  E O_kk with d = E G_tt - E G_ts the centred block's mean eigenvalue. With C outputs the whole centred Gram scales
  along the top outlier's direction with the lower layers' part of that outlier (the output layer's part is the
  same for every output): beta = r_low (d + V_own / E O_kk), r_low = 1 + (r - 1) / f with f the lower layers' share
  of the mean outlier (:func:`lower_share`; one output: r = r_low = 1). Against sampled beta at M = 64, C = 10: 0 to
  +19% (with r in place of r_low: -12% to -30%); the top moves by about 1% per 20% of beta.

Measured (2026-12-07; sampled Grams, seeds 0-99, 100 draws, 48 for relu T = 64; L = 3, M = 64; sampled top, the
top of O, the 2 x 2 top with the sampled v and beta): tanh layer norm C = 10, T = 8: 30.18, 26.68, 29.43; T = 16:
21.31, 19.49, 21.07; tanh without normalization C = 10, T = 8: 19.26, 17.95, 19.07; C = 1: 13.86, 13.27, 13.83; relu
without normalization C = 10, T = 64: 68.39, 64.19, 68.35; relu layer norm C = 10, T = 8: 51.44, 48.74, 51.18. The
shift top - lambda_O (3.5, 1.8, 1.3, 0.6, 4.2, 2.7) is what the spike's T ell (0.29, 0.29, 0.21, 0.21, 2.3, 0.14)
left out: at small T it is the whole row-sum fluctuation of the blocks, not only its mean-direction part, and with
C outputs the C - 1 cross blocks add to it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, check_int, check_real
from ..spec.network import Network
from .fourpoint import index_patterns
from .fourpoint_layernorm import check_layer_norms

__all__ = ["OutlierRows", "outlier_rows", "lower_share", "coupled_outlier_top", "coupled_top"]


@dataclass(frozen=True)
class OutlierRows:
    """E |Pi G_kl 1|^2 / T for one output's block (own, k = l) and a cross block (cross, k != l), in Gram units.

    Attributes:
        width, samples: M, T.
        own: V_own, the row-sum fluctuation of a block G_kk.
        cross: V_cross, that of a block G_kl with k != l (0 for one output).
    """

    width: int
    samples: int
    own: float
    cross: float

    def fixed(self, outputs: int) -> float:
        """E |v|^2 = V_own + (C - 1) V_cross for a fixed output direction.

        Example:
            >>> OutlierRows(64, 8, 2.0, 0.5).fixed(3)
            3.0
        """
        return self.own + (check_int("outputs", outputs, minimum=1) - 1) * self.cross


def _row_sum(cov: Any, outputs: tuple, T: int) -> float:
    """(1/T) [sum_{t,s,s'} Cov(G_ts, G_ts') - (1/T) sum_{t,s,t',s'} Cov(G_ts, G_t's')] in Gram units (cov: of T G)."""
    triple = full = 0.0
    for labels, count in index_patterns(T):   # the patterns of equal samples among (t, s, t', s')
        c = count * cov(outputs + labels[:2], outputs + labels[2:])
        full += c
        if labels[0] == labels[2]:
            triple += c
    return (triple - full / T) / T / T**2


@functools.lru_cache(maxsize=256)
def outlier_rows(net: Network, width: int, samples: int) -> OutlierRows:
    """V_own and V_cross: E |Pi G_kl 1|^2 / T (k = l and k != l) of a network, exact in T from the four-point rules.

    Args:
        net: a numeric network without normalization (:func:`meanfield.finite.fourpoint.gram_covariance`) or with
            layer norms on hidden layers only (:func:`meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance`).
        width: M.
        samples: T (>= 2).

    Returns:
        an :class:`OutlierRows` (Gram units: G = J J^T / T).

    Raises:
        InvalidArgument: another network, a bad width or batch.

    Example:
        >>> r = outlier_rows(Network(3, "relu", 2, 0, outputs=2), 64, 8)
        >>> bool(r.own > r.cross > 0)
        True
    """
    check_layer_norms(net)
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=2)
    # the network itself (its output count only bounds the output labels): the four-point engines' forward tables
    # are cached per network, and the model has already built them for the outlier variances
    if net.norms:
        from .fourpoint_layernorm import layer_norm_gram_covariance

        def cov(first: tuple, second: tuple) -> float:
            return layer_norm_gram_covariance(net, M, first, second, finite_noise=True)
    else:
        from .fourpoint import gram_covariance

        def cov(first: tuple, second: tuple) -> float:
            return gram_covariance(net, M, first, second)

    own = _row_sum(cov, (0, 0), T)
    cross = _row_sum(cov, (1, 0), T) if net.outputs > 1 else 0.0
    return OutlierRows(M, T, max(own, 0.0), max(cross, 0.0))


def lower_share(net: Network, width: int, samples: int, mean_outlier: float) -> float:
    """f = 1 - [(M q^_1 + 1) + (T - 1)(M q^_2 + 1)] / (T O): the lower layers' share of the mean outlier O.

    The output layer's term of T G = sum_l A_l B_l (A_L = 1, B_L = h^{L-1}(t) . h^{L-1}(s) + 1, at the last hidden
    layer's mean-field q^) is the same for every output; the rest is the Wishart-type form W K W^T in the output
    weights. Clipped to [1e-6, 1].

    Example:
        >>> from meanfield.theory.fisher import predict
        >>> net = Network(3, "relu", 2, 0, outputs=3)
        >>> base = predict(net, 64, 8)
        >>> 0 < lower_share(net, 64, 8, float(base.gram_diag + 7 * base.gram_offdiag)) < 1
        True
    """
    from ..theory.recursions import order_parameters

    if not isinstance(net, Network) or net.is_symbolic:
        raise InvalidArgument("net", net, "a numeric meanfield Network")
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=1)
    O = check_real("mean_outlier", mean_outlier, minimum=0, strict_min=True)
    L = net.depth
    layer = order_parameters(net, T).layers[L - 1]
    n = net.widths(M)[L - 1]
    own = ((n * float(layer.qhat1) + 1.0) + (T - 1) * (n * float(layer.qhat2) + 1.0)) / T
    return min(max(1.0 - own / O, 1e-6), 1.0)


def coupled_outlier_top(outlier: float, mean_outlier: float, d: float, rows: OutlierRows, outputs: int,
                        share: float) -> float:
    """top [[lambda_O, sqrt V], [sqrt V, beta]]: the largest outlier coupled to the centred Gram (module docstring).

    With r = lambda_O / O and r_low = 1 + (r - 1) / f: V = r^2 (V_own + (C - 1) V_cross), beta = r_low (d + V_own / O).

    Args:
        outlier: lambda_O, the expected top of the C x C outlier matrix (Gram units).
        mean_outlier: O = E O_kk.
        d: E G_tt - E G_ts, the centred block's mean eigenvalue.
        rows: :func:`outlier_rows` of the network at (M, T).
        outputs: C.
        share: f, the lower layers' share of O (:func:`lower_share`).

    Returns:
        the expected lambda_max (>= outlier).

    Example:
        >>> round(coupled_outlier_top(10.0, 10.0, 2.0, OutlierRows(64, 8, 4.0, 0.0), 1, 0.5), 4)
        10.4942
    """
    lam = check_real("outlier", outlier, minimum=0, strict_min=True)
    O = check_real("mean_outlier", mean_outlier, minimum=0, strict_min=True)
    d = check_real("d", d, minimum=0)
    f = check_real("share", share, minimum=0, maximum=1, strict_min=True)
    C = check_int("outputs", outputs, minimum=1)
    if not isinstance(rows, OutlierRows):
        raise InvalidArgument("rows", rows, "an OutlierRows (outlier_rows)")
    r = lam / O
    V = r * r * rows.fixed(C)
    beta = (1.0 + (r - 1.0) / f) * (d + rows.own / O)
    half = (lam - beta) / 2.0
    return (lam + beta) / 2.0 + math.sqrt(half * half + V)


def coupled_top(net: Network, width: int, samples: int, outlier: float, mean_outlier: float, d: float,
                plain: Network | None = None) -> float:
    """:func:`coupled_outlier_top` of a network: its :func:`outlier_rows` and :func:`lower_share` at (M, T).

    Args:
        net: a numeric network without output normalization (plain, or with hidden layer norms).
        width, samples: M, T.
        outlier: lambda_O, the expected top of the C x C outlier matrix.
        mean_outlier: O = E O_kk.
        d: E G_tt - E G_ts.
        plain: the network whose four-point rules to use where ``net``'s are not derived (a layer norm the
            four-point engine does not cover), e.g. :func:`meanfield.finite.model.plain_equivalent`; None: raise.

    Example:
        >>> from meanfield.theory.fisher import predict
        >>> net = Network(3, "tanh", 1, 0.1, outputs=3)
        >>> b = predict(net, 64, 8)
        >>> O, d = float(b.gram_diag + 7 * b.gram_offdiag), float(b.gram_diag - b.gram_offdiag)
        >>> coupled_top(net, 64, 8, 1.2 * O, O, d) > 1.2 * O
        True
    """
    try:
        rows = outlier_rows(net, width, samples)
    except InvalidArgument:
        if plain is None:
            raise
        rows = outlier_rows(plain, width, samples)
    return coupled_outlier_top(outlier, mean_outlier, d, rows, net.outputs,
                               lower_share(net, width, samples, mean_outlier))
