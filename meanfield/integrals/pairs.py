"""Unequal-variance pair moments E[phi(u) phi(v)], Var u = qa, Var v = qb, Cov(u, v) = qab.

    P_phi[qa, qb, qab] = E[phi(u) phi(v)],  rho = qab / sqrt(qa qb),  |rho| <= 1

The equal-variance moment I_phi[q1, q2] of :mod:`.numeric` is P_phi[q1, q1, q2]; pairs with qa == qb
are computed by exactly that code, so the two agree to the last bit there. The other pairs, in
this order:

1. a closed form (:mod:`.closed_forms`: relu family, step family, abs, sign, erf, erf', sin, cos,
   polynomials by Isserlis);
2. smooth phi: Mehler's series sum_k a_k(qa) a_k(qb) rho^k, a_k(q) = E[phi(sqrt(q) z) He_k(z)] /
   sqrt(k!), in the bands of :mod:`.numeric` chosen by max(qa, qb). By Cauchy-Schwarz the
   remainder is at most sqrt(R(qa) R(qb)), R(q) = E[phi^2](q) - sum_k a_k(q)^2 (the remainder at
   rho = 1, known exactly), so a pair is accepted only where both R are below 1e-12 E[phi^2];
3. otherwise the conditional form E_u[phi(u) h(c u)], c = qab / qa, h(m) = E[phi(m + s Y)],
   s^2 = qb - qab^2 / qa, with the outer variable the one of larger variance, on the nodes and
   inner rules of :mod:`.numeric` (split at kinks and at kink / c).

mpmath: the closed form, or the nested composite Gauss-Legendre of :mod:`.numeric` with
v | u ~ N(c u, s^2). Edge conventions follow :mod:`.numeric`: qa = 0 gives phi(0) E[phi(v)];
|qab| may exceed sqrt(qa qb) by ``RTOL`` relative (rounding), taken as equality.
"""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np

from ..errors import InvalidArgument
from ..spec.activations import Activation
from . import numeric
from .closed_forms import closed_form

__all__ = ["prepare_pair", "geometric_mean", "fast_pair", "pair_quadrature", "mp_pair"]


def prepare_pair(qa: Any, qb: Any, qab: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and broadcast (qa, qb, qab) to float arrays; |qab| within RTOL of sqrt(qa qb) is
    set to +-sqrt(qa qb) (+-qa exactly when qa == qb).

    Example:
        >>> [float(v) for v in prepare_pair(4.0, 1.0, -2.0 * (1 + 1e-14))]
        [4.0, 1.0, -2.0]
    """
    a = numeric.as_float_array("qa", qa)
    b = numeric.as_float_array("qb", qb)
    ab = numeric.as_float_array("qab", qab)
    for name, arr in (("qa", a), ("qb", b)):
        neg = arr < 0
        if np.any(neg):
            raise InvalidArgument(name, numeric.first_bad(arr, neg), "a variance >= 0")
    try:
        a, b, ab = np.broadcast_arrays(a, b, ab)
    except ValueError:
        raise InvalidArgument("qab", f"shape {np.shape(ab)}",
                              f"shapes broadcastable together (qa {np.shape(a)}, qb {np.shape(b)})") from None
    g = geometric_mean(a, b)
    over = np.abs(ab) > g * (1 + numeric.RTOL)
    if np.any(over):
        i = tuple(int(k[0]) for k in np.nonzero(over)) if a.ndim else ()
        raise InvalidArgument(
            "qab", float(ab[i]), f"a covariance with |qab| <= sqrt(qa qb) = {float(g[i])!r} (|rho| <= 1)",
            "qa = 0 or qb = 0 forces qab = 0" if g[i] == 0 else f"relative excess {abs(ab[i]) / g[i] - 1:.3g} "
            f"> {numeric.RTOL}")
    ab = np.clip(ab, -g, g)  # only rounding-level excess reaches here (checked above)
    return np.array(a, dtype=float), np.array(b, dtype=float), np.array(ab, dtype=float)


def geometric_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt(a) sqrt(b) (no overflow), exactly a where a == b."""
    return np.where(a == b, a, np.sqrt(a) * np.sqrt(b))


def fast_pair(f: Activation, qa: Any, qb: Any, qab: Any) -> np.ndarray:
    """P_phi[qa, qb, qab] = E[phi(u) phi(v)] on floats or arrays (float64, the broadcast shape).

    Example:
        >>> from meanfield.spec.activations import activation
        >>> round(float(fast_pair(activation("relu"), 4.0, 1.0, 0.0)), 12)   # sqrt(qa qb) / (2 pi)
        0.318309886184
        >>> float(fast_pair(activation("linear"), 4.0, 1.0, -1.5))
        -1.5
    """
    f = numeric.check_activation(f)
    numeric.require_numeric(f)
    qa, qb, qab = prepare_pair(qa, qb, qab)
    numeric.check_moments_exist(f, np.maximum(qa, qb))
    out = np.empty(qa.shape)
    equal = qa == qb
    if np.any(equal):
        out[equal] = numeric.fast_cross(f, qa[equal], qab[equal])
    rest = ~equal
    if np.any(rest):
        a, b, ab = qa[rest], qb[rest], qab[rest]
        cf = closed_form(f)
        try:
            if cf is not None and cf.has_pair:
                pos = (a > 0) & (b > 0)
                value = np.empty(a.shape)
                with np.errstate(all="ignore"):
                    value[pos] = np.broadcast_to(cf.pair(a[pos], b[pos], ab[pos]), (int(pos.sum()),))
                if not np.all(pos):
                    value[~pos] = _one_variance_zero(f, a[~pos], b[~pos])
            else:
                with np.errstate(over="ignore", invalid="ignore"), numeric.one_blas_thread(a.size):
                    value = pair_quadrature(f, a, b, ab)
        except OverflowError:
            value = np.full(a.shape, np.inf)
        out[rest] = value
    return numeric.finish(out, "E[phi(u) phi(v)]", f, np.maximum(qa, qb))


def _one_variance_zero(f: Activation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """phi(0) E[phi(w)], Var w = max(a, b) (the other variance is 0, so is the covariance)."""
    q = np.maximum(a, b)
    m = np.zeros((q.size, 1))
    return float(f(np.float64(0.0))) * numeric.inner_expectation(f, m, np.sqrt(q))[:, 0]


def pair_quadrature(f: Activation, qa: np.ndarray, qb: np.ndarray, qab: np.ndarray) -> np.ndarray:
    """The generic route of :func:`fast_pair` on 1-D arrays of valid arguments, closed forms not
    consulted (Mehler series where certified, else the conditional quadrature): the oracle for the
    closed forms and the baseline of faster rules.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> round(float(pair_quadrature(activation("erf"), np.array([1.0]), np.array([2.0]),
        ...                             np.array([0.5]))[0]), 12)
        0.166257971481
    """
    out = np.full(qa.shape, np.nan)
    todo = np.ones(qa.shape, dtype=bool)
    top = np.maximum(qa, qb)
    if numeric.kink_points(f) is None:
        usable = (qa > 0) & (qb > 0)
        rho = np.zeros(qa.shape)
        rho[usable] = qab[usable] / geometric_mean(qa[usable], qb[usable])
        for qmax, n, k in numeric.mehler_bands(f):
            band = np.nonzero(todo & usable & (top <= qmax))[0]
            if band.size:
                value, ok = _mehler_pair(f, qa[band], qb[band], rho[band], n, k)
                out[band[ok]] = value[ok]
                todo[band[ok]] = False
    rest = np.nonzero(todo)[0]
    for idx in numeric.sorted_chunks(top[rest], 16):
        sel = rest[idx]
        out[sel] = _pair_conditional(f, qa[sel], qb[sel], qab[sel])
    return out


def _coefficients(f: Activation, q: np.ndarray, n: int, k: int):
    """Hermite coefficients a_k(q) of phi(sqrt(q) z), even and odd k as rows (k, pair), and
    E[phi^2](q) by the same Gauss-Hermite rule."""
    z, w, sw, g_even, g_odd = numeric.mehler_tables(n, k)
    scale = np.sqrt(q)[:, None] * z
    plus, minus = f(scale), f(-scale)
    second = (plus * plus + minus * minus) @ w
    even = g_even.T @ ((plus + minus) * sw).T
    odd = g_odd.T @ ((plus - minus) * sw).T
    return even, odd, second


def _mehler_pair(f: Activation, qa, qb, rho, n: int, k: int):
    """sum_k a_k(qa) a_k(qb) rho^k on rows; (values, certified mask).

    The coefficients are computed once per distinct variance: the pairs of a Gram matrix's
    entries share the T variances of its diagonal, so this is T, not T^2, rows of phi values.
    """
    distinct, where = np.unique(np.concatenate([qa, qb]), return_inverse=True)
    even_all = np.empty((len(range(0, k, 2)), distinct.size))
    odd_all = np.empty((len(range(1, k, 2)), distinct.size))
    second = np.empty(distinct.size)
    for part in np.array_split(np.arange(distinct.size), max(1, distinct.size * n // _CHUNK)):
        even_all[:, part], odd_all[:, part], second[part] = _coefficients(f, distinct[part], n, k)
    rest = second - np.square(even_all).sum(axis=0) - np.square(odd_all).sum(axis=0)
    certified = np.abs(rest) <= numeric.MEHLER_TOL * second + 1e-300
    ia, ib = where[:qa.size], where[qa.size:]
    ok = certified[ia] & certified[ib]
    out = np.empty(qa.shape)
    # chunks in increasing |rho|: a chunk needs only the terms with |rho|^j above 1e-17 (the rest
    # sum to at most |rho|^j sqrt(E[phi(u)^2] E[phi(v)^2]) by Cauchy-Schwarz)
    order = np.argsort(np.abs(rho), kind="stable")
    for part in np.array_split(order, max(1, qa.size * k // _CHUNK)):
        if part.size == 0:
            continue
        pa, pb, r = ia[part], ib[part], rho[part]
        r2 = r * r
        top = float(np.max(np.abs(r)))
        need = k if top >= 1 else min(k, int(np.ceil(np.log(1e-17) / np.log(max(top, 1e-300)))) + 1)
        rows = (need + 1) // 2
        # the products a_k(qa) a_k(qb) gathered once per chunk (rows: k), then Horner in rho^2
        # over contiguous rows
        terms_even = even_all[:rows, pa] * even_all[:rows, pb]
        terms_odd = odd_all[:rows, pa] * odd_all[:rows, pb]
        total_even = terms_even[-1].copy()
        for row in terms_even[-2::-1]:
            total_even *= r2
            total_even += row
        total_odd = terms_odd[-1].copy()
        for row in terms_odd[-2::-1]:
            total_odd *= r2
            total_odd += row
        out[part] = total_even + r * total_odd
    return out, ok


# elements per temporary array (pairs x terms): a few MB, so the Horner sweep stays in cache
_CHUNK = 1_000_000


def _pair_conditional(f: Activation, qa, qb, qab):
    """E_u[phi(u) h(c u)], u the wider variable: v | u ~ N(c u, s^2), c = qab / qa, s^2 = r^2 / qa."""
    swap = qb > qa
    qa, qb = np.where(swap, qb, qa), np.where(swap, qa, qb)
    out = np.empty(qa.shape)
    zero = qa == 0
    out[zero] = numeric.zero_value(f)
    pos = ~zero
    if np.any(pos):
        a, b, ab = qa[pos], qb[pos], qab[pos]
        g = geometric_mean(a, b)
        c = ab / a
        sigma = np.sqrt(g - ab) * np.sqrt((g + ab) / a)  # exactly 0 at |rho| = 1
        u, wt = numeric.outer_nodes(f, a, c)
        out[pos] = np.sum(wt * f(u) * numeric.inner_expectation(f, c[:, None] * u, sigma), axis=-1)
    return out


# -- mpmath ----------------------------------------------------------------------------------------


def mp_pair(f: Activation, qa: Any, qb: Any, qab: Any, dps: int) -> mpmath.mpf:
    """P_phi[qa, qb, qab] in mpmath at ``dps`` digits (closed form, or nested quadrature).

    Arguments must be valid (qa, qb >= 0, |qab| <= sqrt(qa qb), any excess only rounding, taken as
    equality); :func:`meanfield.integrals.pair_moment` checks them. The nested form is
    E_u[phi(u) E[phi(v) | u]] with u the wider variable.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> mp_pair(activation("erf"), 1, 4, 0, 15)
        mpf('0.0')
    """
    numeric.check_moments_exist(f, float(max(qa, qb)))
    with mpmath.workdps(dps + 5):
        qa, qb, qab = mpmath.mpf(qa), mpmath.mpf(qb), mpmath.mpf(qab)
        if qa == qb:
            value = numeric.mp_cross(f, qa, qab, dps + 5)
        else:
            if qb > qa:
                qa, qb = qb, qa
            g = mpmath.sqrt(qa) * mpmath.sqrt(qb)  # as the closed forms form it
            if abs(qab) > g:  # rounding of the caller's bound (pair_moment checked the excess)
                qab = g if qab > 0 else -g
            cf = closed_form(f)
            if qb == 0:
                value = f.mp(mpmath.mpf(0)) * numeric.mp_gauss(f.mp, 0, mpmath.sqrt(qa), numeric.mp_points(f))
            elif cf is not None and cf.has_pair:
                value = cf.mp_pair(qa, qb, qab)
            else:
                value = _mp_pair_quad(f, qa, qb, qab)
    with mpmath.workdps(dps):
        return +value


def _mp_pair_quad(f: Activation, qa, qb, qab):
    points = numeric.mp_points(f)
    sd = mpmath.sqrt(qa)
    g = mpmath.sqrt(qa) * mpmath.sqrt(qb)
    c = qab / qa
    if abs(qab) >= g:  # v = c u exactly
        return numeric.mp_gauss(lambda u: f.mp(u) * f.mp(c * u), 0, sd, points + [p / c for p in points])
    sigma = mpmath.sqrt((g - qab) * (g + qab) / qa)

    def inner(u):
        return numeric.mp_gauss(f.mp, c * u, sigma, points)

    outer_points = points + ([p / c for p in points] if c != 0 else [])
    return numeric.mp_gauss(lambda u: f.mp(u) * inner(u), 0, sd, outer_points)
