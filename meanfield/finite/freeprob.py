"""Free probability for the Gram's top eigenvalue: the Marchenko-Pastur edge, the edge of a free sum of
blocks, the BBP outlier of a spike, and expected maxima over outputs.

With blocks (count n_j, size lam_j) of a population, a free diagonal part of variance sigma_D^2 and an
identity part d_0 the R-transform is

    R(g) = d_0 + sigma_D^2 g + sum_j n_j lam_j / (1 - T lam_j g),

and the bulk edge is z(g*) with z(g) = R(g) + 1/g, z'(g*) = 0 (smallest positive root). The
random-matrix model of :mod:`meanfield.finite.model` builds on these.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int, check_real

__all__ = ["mp_edge", "free_edge", "spike_outlier", "edge_outlier_curvature", "isolated_top", "normalized_block_top",
           "self_normalized_top", "overlap_form", "block_arrays", "expected_max_symmetric", "expected_max_scaled", "expected_max_wishart", "TW_MEAN", "TW_VARIANCE"]

TW_MEAN, TW_VARIANCE = -1.2065, 1.6078  # mean and variance of the Tracy-Widom law TW_1


def mp_edge(ratio: float) -> float:
    """(1 + sqrt(gamma))^2: top edge of the Marchenko-Pastur law of X X^T / n, X (p x n) iid N(0, 1), gamma = p/n.

    Example:
        >>> mp_edge(1.0)
        4.0
    """
    gamma = check_real("ratio", ratio, minimum=0)
    return (1.0 + math.sqrt(gamma)) ** 2


def block_arrays(blocks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The blocks as two float arrays (counts n_j, eigenvalues lam_j), checked (one vectorized pass).

    Example:
        >>> block_arrays([(400, 1.0), (10, 2.0)])
        (array([400.,  10.]), array([1., 2.]))
    """
    message = "a sequence of (count n > 0, eigenvalue lam > 0) pairs"
    try:
        arr = np.asarray(blocks, dtype=float)
    except (TypeError, ValueError):
        raise InvalidArgument("blocks", blocks, message) from None
    if arr.size == 0:
        return np.zeros(0), np.zeros(0)
    if arr.ndim != 2 or arr.shape[1] < 2 or not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise InvalidArgument("blocks", blocks, message)
    return arr[:, 0], arr[:, 1]


def _r_transform(identity: float, semicircle: float, blocks: tuple[np.ndarray, np.ndarray], T: float):
    n, lam = blocks  # from block_arrays
    nl, nl2 = n * lam, n * T * lam * lam

    def R(g):
        return identity + semicircle * g + float(np.sum(nl / (1.0 - T * lam * g)))

    def dz(g):  # d/dg (R(g) + 1/g)
        return semicircle + float(np.sum(nl2 / (1.0 - T * lam * g) ** 2)) - 1.0 / g**2

    return R, dz


def free_edge(identity: float, semicircle: float, blocks: Any, samples: float) -> tuple[float, float]:
    """Top edge z(g*) of the law with R(g) = identity + semicircle g + sum_j n_j lam_j / (1 - T lam_j g).

    This is the spectrum of d_0 I + D + sum_j lam_j Y_j Y_j^T (T x T, Y_j a T x n_j iid N(0, 1) matrix, D a
    free centred part of variance ``semicircle``): the generalized Marchenko-Pastur (Silverstein) law of
    a Gram of T samples whose population covariance has n_j eigenvalues lam_j. The edge is z(g*) with
    z(g) = R(g) + 1/g and g* the smallest positive zero of z'(g).

    Args:
        identity: d_0, a deterministic shift.
        semicircle: sigma^2 >= 0 of a free semicircular part.
        blocks: (n_j, lam_j) pairs (n_j may be non-integer: an effective count).
        samples: T.

    Returns:
        (edge, g*).

    Example:
        >>> e, g = free_edge(0.0, 0.0, [(100, 1.0)], 25)    # (sqrt(100) + sqrt(25))^2
        >>> round(e, 9)
        225.0
        >>> round(free_edge(0.0, 1.0, [], 1)[0], 9)          # semicircle of variance 1: edge 2
        2.0
    """
    T = check_real("samples", samples, minimum=0, strict_min=True)
    n, lam = block_arrays(blocks)
    d0 = check_real("identity", identity)
    s2 = check_real("semicircle", semicircle, minimum=0)
    if not n.size and s2 == 0:
        return float(d0), math.inf
    R, dz = _r_transform(d0, s2, (n, lam), T)
    hi = 1.0 / (T * float(lam.max())) if n.size else 1.0 / math.sqrt(s2) * 10.0
    # z' -> -inf as g -> 0+ and -> +inf as g -> hi- (blocks) or is > 0 beyond 1/sigma (semicircle): one root
    lo = hi * 1e-12
    top = hi * (1.0 - 1e-13) if n.size else hi
    g = _increasing_root(dz, lo, top, 1e-15 * hi)
    return float(R(g) + 1.0 / g), float(g)


def _increasing_root(f: Any, lo: float, hi: float, xtol: float) -> float:
    """The zero of an increasing f on [lo, hi] (f(lo) < 0 < f(hi)) by bisection to ``xtol``.

    z'(g) is a sum of increasing terms (-1/g^2 and the blocks' n lam^2 T / (1 - T lam g)^2), so the root is unique
    and bisection cannot leave it; bisection rather than scipy.optimize.brentq keeps scipy.optimize (a quarter second
    to import) off the prediction's path, at about 50 evaluations of a vectorized f."""
    if f(lo) >= 0:
        return lo
    if f(hi) <= 0:
        return hi
    while hi - lo > xtol:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:  # no float between them
            break
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def spike_outlier(identity: float, semicircle: float, blocks: Any, samples: float, spike: float) -> float:
    """x = T ell + R(1 / (T ell)): the sample outlier of a population spike ell (BBP), or the edge below threshold.

    Args:
        identity, semicircle, blocks, samples: the bulk, as for :func:`free_edge`.
        spike: ell >= 0, the population eigenvalue of the spike (a rank-one term ell y y^T, |y|^2 ~ T).

    Returns:
        max(edge, outlier): the top of the spectrum.

    Example:
        >>> round(spike_outlier(0.0, 0.0, [(100, 1.0)], 25, 0.0), 9)   # no spike: the MP edge
        225.0
        >>> x = spike_outlier(0.0, 0.0, [(100, 1.0)], 25, 10.0)        # ell (1 + n/(T ell - ... )) > edge
        >>> x > 225.0
        True
    """
    edge, g_star = free_edge(identity, semicircle, blocks, samples)
    ell = check_real("spike", spike, minimum=0)
    if ell == 0:
        return edge
    T = float(samples)
    g = 1.0 / (T * ell)
    if g >= g_star:
        return edge
    R, _ = _r_transform(float(identity), float(semicircle), block_arrays(blocks), T)
    return float(max(edge, T * ell + R(g)))


def edge_outlier_curvature(identity: float, semicircle: float, blocks: Any, samples: float,
                           spike: float) -> tuple[float, float, float, float]:
    """(z(g*), g*, max(edge, T ell + R(1/(T ell))), z''(g*)): :func:`free_edge` and :func:`spike_outlier` in one pass,
    with the curvature z''(g*) = 2/g*^3 + sum_j 2 n_j T^2 lam_j^3 / (1 - T lam_j g*)^3 that sets the Tracy-Widom scale
    (z''(g*)/2)^(1/3) T^(-2/3) (0 where there is no edge).

    Example:
        >>> e, g, top, zpp = edge_outlier_curvature(0.0, 0.0, [(100, 1.0)], 25, 0.0)
        >>> round(e, 9), round(top, 9), zpp > 0
        (225.0, 225.0, True)
    """
    T = check_real("samples", samples, minimum=0, strict_min=True)
    ell = check_real("spike", spike, minimum=0)
    n, lam = block_arrays(blocks)
    edge, g = free_edge(identity, semicircle, np.column_stack([n, lam]) if n.size else (), T)
    if not math.isfinite(g):
        return edge, g, edge, 0.0
    zpp = 2.0 / g**3 + float(np.sum(2.0 * n * T * T * lam**3 / (1.0 - T * lam * g) ** 3))
    top = edge
    if ell > 0 and 1.0 / (T * ell) < g:
        R, _ = _r_transform(float(identity), float(semicircle), (n, lam), T)
        top = float(max(edge, T * ell + R(1.0 / (T * ell))))
    return edge, g, top, zpp


def _max_of_two(m1: float, v1: float, m2: float, v2: float) -> tuple[float, float]:
    """(E, Var) of max(X_1, X_2) for independent Gaussians X_i ~ N(m_i, v_i) (Clark, Operations Research 9, 1961)."""
    a = math.sqrt(v1 + v2)
    if a == 0.0:
        return max(m1, m2), 0.0
    al = (m1 - m2) / a
    cdf, pdf = 0.5 * math.erfc(-al / math.sqrt(2.0)), math.exp(-0.5 * al * al) / math.sqrt(2.0 * math.pi)
    mean = m1 * cdf + m2 * (1.0 - cdf) + a * pdf
    second = (m1 * m1 + v1) * cdf + (m2 * m2 + v2) * (1.0 - cdf) + (m1 + m2) * a * pdf
    return mean, max(second - mean * mean, 0.0)


def isolated_top(identity: float, semicircle: float, blocks: Any, samples: float,
                 spike: float) -> tuple[float, float]:
    """(E, Var) of the top when the population's largest modes are single eigenvalues above the rest's threshold.

    A block of count 1 is one population eigenvalue theta = T lam_1. Where 1/theta < g*_rest (the edge root of the
    R-transform without it) it is a spike of the rest: its sample eigenvalue sits at the BBP location
    x(theta) = theta + R_rest(1/theta), with Gaussian fluctuations of variance 2 theta^2 x'(theta) / T for real
    Gaussian samples (Bai and Yao, Ann. Inst. H. Poincare Probab. Stat. 44, 2008: sqrt(T) (x^ - psi(theta)) ->
    N(0, 2 theta^2 psi'(theta)), psi = x here), not at the upper edge of a band of mass 1/T with a Tracy-Widom shift,
    which is what :func:`edge_outlier_curvature` gives when the mode stays inside the free sum (a soft-edge law for
    a band that holds a single eigenvalue). The rest's top is found the same way (its own largest mode may be
    isolated too), down to a rest whose top is the bulk edge plus the Tracy-Widom mean (variance Var[TW_1] times
    the squared scale, taken as Gaussian) or the BBP outlier of ``spike``; the top is the larger of the outlier and
    the rest's top, the first two moments of the maximum of two independent Gaussians. With no isolated mode this
    is the edge + Tracy-Widom top (or the spike's outlier, variance 0) of :func:`edge_outlier_curvature`.

    Args:
        identity, semicircle, blocks, samples, spike: as :func:`edge_outlier_curvature`.

    Returns:
        (mean, variance) of the top.

    Example:
        >>> e, g, top, zpp = edge_outlier_curvature(0.0, 0.0, [(100, 1.0)], 25, 0.0)   # no single mode: edge + TW
        >>> mean, var = isolated_top(0.0, 0.0, [(100, 1.0)], 25, 0.0)
        >>> bool(abs(mean - (e + TW_MEAN * (zpp / 2) ** (1 / 3) * 25 ** (-2 / 3))) < 1e-9)
        True
        >>> mean, var = isolated_top(0.0, 0.0, [(100, 1.0), (1, 40.0)], 400, 0.0)   # theta = 16000: its BBP outlier
        >>> x = 16000.0 + 100.0 / (1.0 - 400.0 / 16000.0)
        >>> bool(abs(mean - x) < 1e-6 * x), bool(var > 0)
        (True, True)
    """
    T = check_real("samples", samples, minimum=0, strict_min=True)
    ell = check_real("spike", spike, minimum=0)
    n, lam = block_arrays(blocks)
    order = np.argsort(lam)[::-1]
    n, lam = n[order], lam[order]
    outliers = []  # (mean, variance) of the isolated modes' sample eigenvalues, largest first
    k = 0
    while k < n.size and n[k] == 1.0:
        rest = (n[k + 1:], lam[k + 1:])
        _, g_rest = free_edge(identity, semicircle, np.column_stack(rest) if rest[0].size else (), T)
        theta = T * float(lam[k])
        if not 1.0 / theta < g_rest:
            break
        R, _ = _r_transform(float(identity), float(semicircle), rest, T)
        g = 1.0 / theta
        # x'(theta) = 1 - R'(1/theta) / theta^2, R'(g) = sigma_D^2 + sum n T lam^2 / (1 - T lam g)^2
        dR = float(semicircle) + float(np.sum(rest[0] * T * rest[1] ** 2 / (1.0 - T * rest[1] * g) ** 2))
        slope = 1.0 - dR / theta**2
        outliers.append((theta + R(g), 2.0 * theta * theta * max(slope, 0.0) / T))
        k += 1
    edge, g_star, top, zpp = edge_outlier_curvature(identity, semicircle, np.column_stack([n[k:], lam[k:]])
                                                    if k < n.size else (), T, ell)
    if top > edge or not math.isfinite(g_star):
        mean, variance = top, 0.0
    else:
        shift = TW_MEAN * (zpp / 2.0) ** (1.0 / 3.0) * T ** (-2.0 / 3.0)
        mean, variance = edge + shift, TW_VARIANCE / TW_MEAN**2 * shift**2
    for m1, v1 in reversed(outliers):
        mean, variance = _max_of_two(m1, v1, mean, variance)
    return float(mean), float(variance)


def normalized_block_top(identity: float, blocks: Any, norm_variance: float, spike: float,
                         samples: int) -> tuple[float, float]:
    """E lambda_max(Pi N^(1/2) m A^ N^(1/2) Pi) ~ lam (1 - c / m + w_A lam g + w (lam g - 1)): the small-T block top.

    The block of the random-matrix model at a small batch: A = d_0 I + Y Y^T + ell y y^T (T x T; the columns of Y
    Gaussian with the population's mode variances lam_j, ``blocks`` of (count, lam_j)), each sample rescaled so that
    its squared norm is an independent draw of mean m = d_0 + sum n_j lam_j + ell and variance V (``norm_variance``),
    centred by Pi = I - 11^T / T. Without seeds, to second order in the norms around the Gaussian top:

    * lam = the free-probability edge with T - 1 samples (the centring removes one) plus the Tracy-Widom mean
      E[TW_1] (z''(g*)/2)^(1/3) (T - 1)^(-2/3) (or the BBP outlier of the spike), and g = G(lam), the Stieltjes
      transform at the edge, times (T - 2) / T: the sums (1/T) sum_(k != 1) f(lam_k) of the perturbation run over
      the T - 2 other eigenvalues of the centred block, each of weight 1/T (delocalized eigenvectors, u_t^2 ~ 1/T).
    * Self-normalization (A -> m D^(-1/2) A D^(-1/2), D = diag(A) / m), first order: -(lam / m) E[u^T diag(A - m) u]
      = -c lam / m. By Gaussian integration by parts in the sample t (its norm's derivative along Sigma x_t) and
      first-order eigenvector perturbation, E sum_t u_t^2 (A_tt - m) = (2/T) sum_(k != 1) (lam sigma_1 + lam_k
      sigma_k) / (lam - lam_k), sigma_k = v_k^T Sigma v_k; the resolvent sums give c = 2 g (2 h(g) + g h'(g)),
      h(g) = sum_j n_j lam_j^2 / (1 - (T - 1) lam_j g) (Sherman-Morrison on each mode). Its second order, treated as
      a free multiplicative diagonal of relative variance w_A = 2 sum n_j lam_j^2 / m^2 and mean 1 + w_A: + w_A
      lam^2 g (zero net effect for an isotropic population, whose norms are independent of its directions).
    * The independent norms (relative variance w = V / m^2), second order: + w lam (lam g - 1), from
      lam_2 = (w/4) [(m - lam) + (1/T) sum_k (lam + lam_k)^2 / (lam - lam_k)].

    Against the model's Monte Carlo (the grid's 24 small-T cells, centre-only batch norm and layer norm, relu and
    tanh, M = 64 to 1024, T = 8 to 64): within -1.9% to +3.9% (mean +1.3%; the Gaussian part alone is 0 to +2.7%
    above its own Monte Carlo). The variance is the Tracy-Widom one scaled by the top's ratio (the norms' own
    contribution to the spread is not included: within -40% to +50% of the Monte Carlo's).

    Args:
        identity: d_0.
        blocks: (count n_j > 0, variance lam_j > 0) pairs of the population's modes.
        norm_variance: V >= 0, the variance of a sample's squared norm.
        spike: ell >= 0.
        samples: T >= 3.

    Returns:
        (mean, variance) of the block top.

    Example:
        >>> mean, var = normalized_block_top(0.0, [(400, 1.0)], 800.0, 0.0, 16)   # Wishart norms: a small shift
        >>> edge = free_edge(0.0, 0.0, [(400, 1.0)], 15)[0]
        >>> 0.9 < mean / edge < 1.05 and var > 0
        True
    """
    return self_normalized_top(identity, blocks, norm_variance, spike, samples, _counted_resolvent)


def _counted_resolvent(gauss: float, mean: float, samples: int, blocks: tuple, edge_resolvent: float) -> tuple:
    # the resolvent sums' weight counted: T - 2 other eigenvalues of the centred block, 1/T each
    g = edge_resolvent * (samples - 2) / samples
    return overlap_form(g, *blocks, samples - 1)[0], g


def overlap_form(g: float, n: np.ndarray, lam: np.ndarray, Tp: int) -> tuple[float, float]:
    """(c(g), c'(g)): c = 2 g (2 h + g h'), c' = 4 h + 6 g h' + 2 g^2 h'', h(g) = sum n lam^2 / (1 - Tp lam g).

    The self-normalization's first order E sum_t u_t^2 (A_tt - m) at resolvent weight g (:func:`normalized_block_top`).

    Example:
        >>> c, dc = overlap_form(0.01, np.array([400.0]), np.array([1.0]), 15)
        >>> bool(c > 0 and dc > 0)
        True
    """
    x = 1.0 - Tp * lam * g
    a = n * lam**2 / x
    h, dh, ddh = float(np.sum(a)), float(np.sum(a * (Tp * lam / x))), float(np.sum(a * 2.0 * (Tp * lam / x) ** 2))
    return 2.0 * g * (2.0 * h + g * dh), 4.0 * h + 6.0 * g * dh + 2.0 * g * g * ddh


def self_normalized_top(identity: float, blocks: Any, norm_variance: float, spike: float, samples: int,
                        resolvent: Any) -> tuple[float, float]:
    """E top of Pi diag(rho) (d_0 I + Y Y^T + ell y y^T) diag(rho) Pi = gauss (1 - c / m + w_A gauss g + w (gauss g - 1)).

    The Gaussian top (edge with T - 1 samples plus the Tracy-Widom mean, or the spike's outlier) moved by the
    per-sample norms to second order (:func:`normalized_block_top`'s docstring), with the first-order overlap c and
    the resolvent weight g from ``resolvent(gauss, m, T, (n, lam), G(edge)) -> (c, g)``: the counted weight of
    :func:`normalized_block_top` or the exact overlap of :func:`meanfield.finite.blocktop.invariant_block_top`.

    Args:
        identity, blocks, norm_variance, spike, samples: as :func:`normalized_block_top`.
        resolvent: the first-order rule above.

    Returns:
        (mean, variance) of the block top.

    Example:
        >>> top = self_normalized_top(0.0, [(400, 1.0)], 0.0, 0.0, 16, lambda *a: (0.0, 0.0))   # no norm step:
        >>> edge = free_edge(0.0, 0.0, [(400, 1.0)], 15)[0]                                   # the Gaussian top,
        >>> 0.95 < top[0] / edge < 1.0                                            # Tracy-Widom's mean below the edge
        True
    """
    T = check_int("samples", samples, minimum=3)
    n, lam = block_arrays(blocks)
    d0 = check_real("identity", identity)
    V = check_real("norm_variance", norm_variance, minimum=0)
    ell = check_real("spike", spike, minimum=0)
    m = d0 + float(n @ lam) + ell
    if not m > 0:
        raise InvalidArgument("identity", identity, "a block whose mean squared norm d_0 + sum n lam + ell is > 0")
    Tp = T - 1
    pairs = np.column_stack([n, lam]) if n.size else ()
    edge, g_star, top, zpp = edge_outlier_curvature(d0, 0.0, pairs, Tp, ell)
    if not math.isfinite(g_star):  # no bulk: d_0 I (and the spike) only
        return float(top), 0.0
    scale = (zpp / 2.0) ** (1.0 / 3.0) * Tp ** (-2.0 / 3.0)
    gauss = top if top > edge else edge + TW_MEAN * scale
    c, g = resolvent(gauss, m, T, (n, lam), g_star)
    w_a = 2.0 * float(n @ lam**2) / m**2
    w = V / m**2
    mean = gauss * (1.0 - c / m + w_a * gauss * g + w * (gauss * g - 1.0))
    variance = (TW_VARIANCE * scale**2 if top <= edge else 0.0) * (mean / gauss) ** 2
    return float(mean), float(variance)


@functools.lru_cache(maxsize=64)
def _normal_points(dimension: int, points: int) -> np.ndarray:
    """A fixed quasi-random normal sample: unscrambled Sobol points (the midpoints of their 1/n grid), mapped
    through the normal quantile. Deterministic; each coordinate is exactly the n-point quantile grid of N(0, 1)."""
    from scipy.special import ndtri

    m = max(int(math.ceil(math.log2(points))), 1)
    return ndtri(_sobol_points(dimension, m) + 0.5 / (1 << m))


@functools.lru_cache(maxsize=8)
def _sobol_directions(dimension: int, bits: int = 30) -> np.ndarray:
    """The Sobol direction numbers v[d, j] (times 2^(bits - 1 - j)) of scipy.stats.qmc.Sobol: the Joe-Kuo
    primitive polynomials and initial numbers shipped with scipy, extended by the Bratley-Fox recurrence (P. Bratley
    and B. L. Fox, "Algorithm 659: Implementing Sobol's quasirandom sequence generator", ACM TOMS 14, 1988). Read
    from scipy's data file directly: importing scipy.stats costs about a second on a loaded machine."""
    import os

    import scipy

    path = os.path.join(os.path.dirname(scipy.__file__), "stats", "_sobol_direction_numbers.npz")
    if not os.path.exists(path):  # another layout: scipy's own generator (same numbers)
        return np.zeros((0, 0), dtype=np.uint64)
    with np.load(path) as data:
        poly, vinit = data["poly"], data["vinit"]
    v = np.zeros((dimension, bits), dtype=np.uint64)
    v[0, :] = 1
    for d in range(1, dimension):
        p = int(poly[d])
        degree = p.bit_length() - 1
        v[d, :degree] = vinit[d, :degree]
        for j in range(degree, bits):
            new = int(v[d, j - degree])
            power = 1
            for k in range(degree):
                power <<= 1
                if (p >> (degree - 1 - k)) & 1:
                    new ^= power * int(v[d, j - k - 1])
            v[d, j] = new
    return v * (np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64))[None, :]


def _sobol_points(dimension: int, m: int, bits: int = 30) -> np.ndarray:
    """The first 2^m points of the unscrambled Sobol sequence in ``dimension`` dimensions, bit for bit those of
    ``scipy.stats.qmc.Sobol(dimension, scramble=False).random_base2(m)`` (point i is the XOR of the direction numbers
    at the set bits of its Gray code i ^ (i >> 1), the generator's order)."""
    v = _sobol_directions(dimension, bits)
    if v.size == 0:
        from scipy.stats import qmc

        return qmc.Sobol(dimension, scramble=False, bits=bits).random_base2(m)
    i = np.arange(1 << m, dtype=np.uint64)
    gray = i ^ (i >> np.uint64(1))
    q = np.zeros((1 << m, dimension), dtype=np.uint64)
    for k in range(min(m, bits)):
        q[((gray >> np.uint64(k)) & np.uint64(1)).astype(bool)] ^= v[:, k][None, :]
    return q.astype(float) / 2.0**bits


@functools.lru_cache(maxsize=256)
def expected_max_symmetric(count: int, diagonal: float, offdiagonal: float, draws: int = 4096, seed: int = 0) -> float:
    """E[lambda_max(E)] for a C x C symmetric Gaussian matrix, E_kk ~ N(0, diagonal), E_kl ~ N(0, offdiagonal).

    Quasi-Monte Carlo over ``draws`` (rounded up to a power of 2) fixed normal points (unscrambled Sobol,
    :func:`_normal_points`): a deterministic quadrature, no random state. Error: below 0.5% of the
    standard deviation for C <= 10 (against 4 million random draws: C = 2, 3, 10 within 0.2%, 0.1%, 0.1%).
    ``seed`` is ignored (kept for compatibility).

    Example:
        >>> expected_max_symmetric(1, 1.0, 1.0)
        0.0
        >>> round(expected_max_symmetric(2, 2.0, 1.0), 3)   # |N(0, 2)|... : sqrt(pi / 2) = 1.253
        1.253
    """
    C = check_int("count", count, minimum=1)
    a = check_real("diagonal", diagonal, minimum=0)
    b = check_real("offdiagonal", offdiagonal, minimum=0)
    check_int("draws", draws, minimum=2)
    if C == 1:
        return 0.0
    iu = np.triu_indices(C, 1)
    Z = _normal_points(C * (C + 1) // 2, draws)
    E = np.zeros((Z.shape[0], C, C))
    E[:, iu[0], iu[1]] = Z[:, C:] * math.sqrt(b)
    E = E + np.transpose(E, (0, 2, 1))
    idx = np.arange(C)
    E[:, idx, idx] = Z[:, :C] * math.sqrt(a)
    return float(np.linalg.eigvalsh(E)[:, -1].mean())


@functools.lru_cache(maxsize=512)
def expected_max_scaled(count: int, spread: float, samples: int | None = None, draws: int = 40000,
                        seed: int = 0) -> float:
    """E[max_k X_k Z_k] / E[X]: X_k ~ N(1, spread^2) iid (per-output block tops), Z_k = T / chi^2_{T-1} or 1.

    A deterministic quadrature: E max = int_0^inf (1 - F^C) dy - int_-inf^0 F^C dy with F the law of one X Z,
    F(y) = E_X[P(chi^2_{T-1} >= T X / y)] by 64-node Gauss-Hermite in X, on a grid of y (relative error below
    1e-4). ``draws`` and ``seed`` are ignored (kept for compatibility).

    Example:
        >>> expected_max_scaled(1, 0.3)
        1.0
        >>> round(expected_max_scaled(2, 1.0), 4)   # E max of two N(1, 1): 1 + 1/sqrt(pi)
        1.5642
    """
    from scipy.special import chdtr, chdtrc, chdtri, gammaincinv, ndtr, roots_hermitenorm

    C = check_int("count", count, minimum=1)
    sd = check_real("spread", spread, minimum=0)
    if samples is None and (C == 1 or sd == 0):
        return 1.0
    T = None if samples is None else check_int("samples", samples, minimum=4)
    if T is None:
        # E max of C iid N(1, sd^2) = 1 + sd E max of C standard normals
        x = np.linspace(0.0, 12.0, 12001)
        top = np.trapezoid(1.0 - ndtr(x) ** C, x) - np.trapezoid(ndtr(-x) ** C, x)
        return 1.0 + sd * float(top)
    nodes, weights = roots_hermitenorm(64)
    weights = weights / weights.sum()
    X = 1.0 + sd * nodes
    k = T - 1

    def cdf(y: np.ndarray) -> np.ndarray:
        # P(X Z <= y) = P(X <= 0) part + P(X > 0, chi^2 >= T X / y) for y > 0
        y = np.asarray(y, dtype=float)[:, None]
        pos = X[None, :] > 0
        # chdtrc / chdtr / chdtri / gammaincinv are what scipy.stats.chi2's sf / cdf / isf / ppf evaluate (the
        # branches np.where discards may be nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = np.where(pos, chdtrc(k, T * X[None, :] / np.where(y > 0, y, 1.0)), 1.0)
        # y <= 0: only negative X with Z >= T X / y... (X Z <= y < 0) = P(chi^2 <= T X / y) for X < 0
        with np.errstate(divide="ignore", invalid="ignore"):
            neg = np.where(~pos, chdtr(k, T * X[None, :] / np.where(y < 0, y, -1.0)), 0.0)
        return np.where(y > 0, inside, neg) @ weights

    hi = T / (2.0 * gammaincinv(k / 2, 1e-12 / C)) * (1.0 + 12.0 * sd)
    start = (1.0 - 12.0 * sd) * T / chdtri(k, 1e-12)  # below it F = 0 to 1e-12
    if start > 0:
        # int_0^start (1 - F^C) dy = start, then the rest on a geometric grid
        y = np.geomspace(start, hi, 4001)
        upper = start + float(np.trapezoid(1.0 - np.clip(cdf(y), 0.0, 1.0) ** C, y))
        return upper
    y = np.geomspace(1e-9 * hi, hi, 4001)
    upper = float(np.trapezoid(1.0 - np.clip(cdf(y), 0.0, 1.0) ** C, y))
    yn = np.linspace(start, 0.0, 2001)[:-1]
    lower = float(np.trapezoid(np.clip(cdf(yn), 0.0, 1.0) ** C, yn))
    return upper - lower


@functools.lru_cache(maxsize=256)
def expected_max_wishart(count: int, share: float, dof: float, diagonal: float = 0.0, draws: int = 4096) -> float:
    """E lambda_max((1 - f) I + f W / n + D) - 1: C x C, W Wishart with n degrees of freedom (identity scale),
    D diagonal with iid N(0, ``diagonal``) entries.

    The C x C outlier matrix of a network without output normalization is the output layer's part (the same for
    every output) plus W K W^T, a Wishart-type form in the output weights W (C x M) with the lower layers' K:
    heavier-tailed at the top than the Gaussian matrix of the same variances (it is positive and its top edge is
    (1 + sqrt(C / n))^2, not 1 + 2 sqrt(C / n)). With W = L L^T (Bartlett: L lower triangular, L_ii^2 ~
    chi^2_{n - i + 1}, L_ij ~ N(0, 1)) the expectation is a C(C+1)/2 + C dimensional integral, here by the
    fixed quasi-random points of :func:`expected_max_symmetric` (chi variables through their quantiles):
    deterministic, error of the same order (below 0.5% of the fluctuation's standard deviation).

    Example:
        >>> expected_max_wishart(1, 0.5, 10.0)     # one output: E[(1 - f) + f chi^2_n / n] - 1 = 0
        0.0
        >>> round(expected_max_wishart(2, 1.0, 1e6), 3)   # n -> infinity: W / n -> I
        0.001
    """
    from scipy.special import gammaincinv, ndtr

    C = check_int("count", count, minimum=1)
    f = check_real("share", share, minimum=0, maximum=1)
    n = check_real("dof", dof, minimum=0, strict_min=True)
    dv = check_real("diagonal", diagonal, minimum=0)
    if C == 1:
        return 0.0
    Z = _normal_points(C * (C + 1) // 2 + C, draws)
    U = ndtr(Z[:, :C])
    L = np.zeros((Z.shape[0], C, C))
    idx = np.arange(C)
    L[:, idx, idx] = np.sqrt(2.0 * gammaincinv(np.maximum(n - idx, 0.5)[None, :] / 2, U))  # chi2.ppf
    il = np.tril_indices(C, -1)
    L[:, il[0], il[1]] = Z[:, C:C + il[0].size]
    W = L @ np.transpose(L, (0, 2, 1)) / n
    X = (1.0 - f) * np.eye(C)[None] + f * W
    X[:, idx, idx] += Z[:, C + il[0].size:] * math.sqrt(dv)
    return float(np.linalg.eigvalsh(X)[:, -1].mean()) - 1.0
