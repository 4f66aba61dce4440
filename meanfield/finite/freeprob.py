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
from scipy.optimize import brentq

from ..errors import InvalidArgument, check_int, check_real

__all__ = ["mp_edge", "free_edge", "spike_outlier", "expected_max_symmetric", "expected_max_scaled"]


def mp_edge(ratio: float) -> float:
    """(1 + sqrt(gamma))^2: top edge of the Marchenko-Pastur law of X X^T / n, X (p x n) iid N(0, 1), gamma = p/n.

    Example:
        >>> mp_edge(1.0)
        4.0
    """
    gamma = check_real("ratio", ratio, minimum=0)
    return (1.0 + math.sqrt(gamma)) ** 2


def _check_blocks(blocks: Any) -> tuple[tuple[float, float], ...]:
    out = []
    for b in blocks:
        try:
            n, lam = float(b[0]), float(b[1])
        except (TypeError, ValueError, IndexError):
            raise InvalidArgument("blocks", blocks, "a sequence of (count n > 0, eigenvalue lam > 0) pairs") from None
        if not (n > 0 and lam > 0 and math.isfinite(n) and math.isfinite(lam)):
            raise InvalidArgument("blocks", blocks, "a sequence of (count n > 0, eigenvalue lam > 0) pairs")
        out.append((n, lam))
    return tuple(out)


def _r_transform(identity: float, semicircle: float, blocks: tuple, T: float):
    def R(g):
        return identity + semicircle * g + sum(n * lam / (1.0 - T * lam * g) for n, lam in blocks)

    def dz(g):  # d/dg (R(g) + 1/g)
        return semicircle + sum(n * T * lam * lam / (1.0 - T * lam * g) ** 2 for n, lam in blocks) - 1.0 / g**2

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
    blocks = _check_blocks(blocks)
    d0 = check_real("identity", identity)
    s2 = check_real("semicircle", semicircle, minimum=0)
    if not blocks and s2 == 0:
        return float(d0), math.inf
    R, dz = _r_transform(d0, s2, blocks, T)
    hi = 1.0 / (T * max(lam for _, lam in blocks)) if blocks else 1.0 / math.sqrt(s2) * 10.0
    # z' -> -inf as g -> 0+ and -> +inf as g -> hi- (blocks) or is > 0 beyond 1/sigma (semicircle): one root
    lo = hi * 1e-12
    top = hi * (1.0 - 1e-13) if blocks else hi
    g = brentq(dz, lo, top, xtol=1e-15 * hi, rtol=1e-14, maxiter=500)
    return float(R(g) + 1.0 / g), float(g)


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
    R, _ = _r_transform(float(identity), float(semicircle), _check_blocks(blocks), T)
    return float(max(edge, T * ell + R(g)))


@functools.lru_cache(maxsize=256)
def expected_max_symmetric(count: int, diagonal: float, offdiagonal: float, draws: int = 20000, seed: int = 0) -> float:
    """E[lambda_max(E)] for a C x C symmetric Gaussian matrix, E_kk ~ N(0, diagonal), E_kl ~ N(0, offdiagonal).

    Seeded Monte Carlo over ``draws`` matrices (deterministic; standard error ~ 1e-2 sqrt(variance)).

    Example:
        >>> expected_max_symmetric(1, 1.0, 1.0)
        0.0
    """
    C = check_int("count", count, minimum=1)
    a = check_real("diagonal", diagonal, minimum=0)
    b = check_real("offdiagonal", offdiagonal, minimum=0)
    if C == 1:
        return 0.0
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((draws, C, C))
    iu = np.triu_indices(C, 1)
    E = np.zeros_like(X)
    E[:, iu[0], iu[1]] = X[:, iu[0], iu[1]] * math.sqrt(b)
    E = E + np.transpose(E, (0, 2, 1))
    idx = np.arange(C)
    E[:, idx, idx] = X[:, idx, idx] * math.sqrt(a)
    return float(np.linalg.eigvalsh(E)[:, -1].mean())


@functools.lru_cache(maxsize=512)
def expected_max_scaled(count: int, spread: float, samples: int | None = None, draws: int = 40000,
                        seed: int = 0) -> float:
    """E[max_k X_k Z_k] / E[X]: X_k ~ N(1, spread^2) iid (per-output block tops), Z_k = T / chi^2_{T-1} or 1.

    Seeded Monte Carlo (deterministic). With ``samples=None`` the scale Z is 1 (center-only batch norm).

    Example:
        >>> expected_max_scaled(1, 0.3)
        1.0
        >>> round(expected_max_scaled(2, 1.0), 1)   # E max of two N(1, 1): 1 + 1/sqrt(pi)
        1.6
    """
    C = check_int("count", count, minimum=1)
    sd = check_real("spread", spread, minimum=0)
    if samples is None and (C == 1 or sd == 0):
        return 1.0
    rng = np.random.default_rng(seed)
    X = 1.0 + sd * rng.standard_normal((draws, C))
    if samples is not None:
        T = check_int("samples", samples, minimum=4)
        X = X * (T / rng.chisquare(T - 1, size=(draws, C)))
    return float(X.max(axis=1).mean())
