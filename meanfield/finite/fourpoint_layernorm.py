"""Gram-entry covariances below layer norms: the four-point engine with the norm's Jacobian and influence functions.

:mod:`meanfield.finite.fourpoint` derives Cov(T G_first, T G_second) of a plain network to leading order in 1/M
from T G_kl(t, s) = sum_l A_l B_l (A_l = delta^l_k(t) . delta^l_l(s), delta^l = d f / d u^l the gradient at the
pre-activations, B_l = h^{l-1}(t) . h^{l-1}(s) + 1): the backward products A_l are a product of realized layer
averages of phi'_t phi'_s (given the forward pass) plus fresh backward noise, and the forward B_l fluctuate with
the realized kernels, Cov K^j = Sigma^j / M_j + J_j Cov K^{j-1} J_j^T. This module runs the same recursion through
layer norms on any hidden layers (several at once, any depth and width profile). A layer norm on layer m maps the
pre-activations of one sample to u~_a = (u_a - mu) / s over the M_m units; given the layer below, the units' rows
are i.i.d. N(0, Q) with the realized kernel Q, so in standardized units z_a ~ N(0, R) (R the correlation matrix).
Three things change at layer m, each to the order the variances need (leading order):

* the realized averages above the norm, K~ = (1/M) sum_a g(u~_a) and c~ = (1/M) sum_a phi'(u~_a(t)) phi'(u~_a(s)) /
  (s_t s_s), fluctuate given Q as the means of their influence functions (von Mises; the realized per-sample mean
  mu and relative variance eps = s^2 / Q_tt - 1 are themselves unit averages):

      IF_g(z) = g(z) - sum_i E[d_i g] z_i - 1/2 sum_i E[z_i d_i g] (z_i^2 - 1)     (- E[g] (z_i^2 - 1) / 2 per 1/s_i),

  so Sigma^m is the covariance of these over n exchangeable samples (the samples of the two entries), with
  E[z_i (z_j^2 - 1)] = 0 and Cov(z_i^2, z_j^2) = 2 R_ij^2;
* the response to the layer below is through the correlation only, K~ = F(rho(Q)) and c~ = c(rho(Q)) /
  sqrt(Q_tt Q_ss) (the chain rule gives J_m);
* the backward step: delta^m = J_t^T (phi'(u~) (.) W^T delta^{m+1}) with the norm's Jacobian J_t = (1/s_t)(I -
  1 1^T / M - u~_t u~_t^T / M); the two projections change A_m by O(1/M) relative, whose fluctuations are
  O(M^-3/2), so for the variances J_t = I / s_t: the gain is sigma_w^2 c~ and the fresh noise carries
  E[phi'^4 products] / (s_t s_s s_t' s_s') at the normalized law.

The backward weights are taken fresh (gradient independence, as in :mod:`meanfield.finite.fourpoint`; its failure
is O(1/M) in the means, not in the leading variances). One O(1/M) term is kept on request (``finite_noise``): the
fresh noise of a layer-norm layer carries the realized average of four factors phi'(u~) / s, whose 1 / s are convex
in the realized variance, so its mean exceeds mean field by (1 + c / M), c = 4 to 8 (:func:`noise_mean_shift`); at
M = 64 that raises the outlier variances of the random-matrix model by 6-9%, as sampled networks show. Without layer norms the result is
:func:`meanfield.finite.fourpoint.gram_covariance` (to rounding; a test). Exchangeable samples need q_2 >= 0 at every
layer (as there). Checked against sampled networks in ``tests/test_layernorm_corrections.py`` and the notes
(``meanfield/notes/corrections.md``, section 6).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int, check_real
from ..integrals.quadrature import IDENTITY, RANGE, Unit, breaks, normal_rule
from ..spec.network import LayerNorm, Network
from .corrections import two_sample_layer, two_sample_rule
from .fourpoint import check_entry, entry_covariance, slope_jacobian

__all__ = ["layer_norm_averages", "check_layer_norms", "layer_norm_gram_covariance", "LayerNormEntryVariances",
           "layer_norm_entry_variances", "RealizedAverages", "realized_averages", "noise_mean_shift"]

_POWERS = tuple((i, j, k) for i in range(5) for j in range(5) for k in range(3) if i + j <= 4)


def _conditional(unit: Unit, shift: np.ndarray, scale: float, powers: tuple = _POWERS) -> dict:
    """E_e[phi^i phi'^j u^k (shift + scale e)] per (i, j, k) in ``powers``, one value per shift."""
    e, w = normal_rule(breaks(unit, shift, scale))
    u = shift[:, None] + scale * e
    fa, fd = np.asarray(unit.f(u), dtype=float), np.asarray(unit.df(u), dtype=float)
    # each power and each partial product once (the cold call's hot spot); the factors and their order are those of
    # w * fa**i * fd**j * u**k, and a zeroth power (exactly 1) is skipped, so the values are the same to the bit
    pf, pd, pu = {0: None}, {0: None}, {0: None}
    wf, wfd, out = {}, {}, {}
    for i, j, k in powers:
        if i not in wf:
            if i not in pf:
                pf[i] = fa**i
            wf[i] = w if i == 0 else w * pf[i]
        if (i, j) not in wfd:
            if j not in pd:
                pd[j] = fd**j
            wfd[(i, j)] = wf[i] if j == 0 else wf[i] * pd[j]
        if k not in pu:
            pu[k] = u**k
        out[(i, j, k)] = (wfd[(i, j)] if k == 0 else wfd[(i, j)] * pu[k]).sum(axis=1)
    return out


@functools.lru_cache(maxsize=256)
def _table(unit: Unit, q1: float, q2: float) -> tuple:
    """Exchangeable samples u_a = sqrt(q2) w + sqrt(q1 - q2) e_a: the w weights and E_e[phi^i phi'^j u^k | w]."""
    if q2 < 0 or q1 <= q2:
        raise InvalidArgument("net", (q1, q2), "layer kernels with q1 > q2 >= 0 (exchangeable distinct samples)")
    c, sigma = math.sqrt(q2), math.sqrt(q1 - q2)
    zb = np.empty((1, 0)) if c == 0 or unit.kinks is None else (np.asarray(unit.kinks) / c)[None, :]
    if unit.kinks is None and c > 0:
        zb = np.linspace(-RANGE, RANGE, 33)[None, 1:-1]
    z, wz = normal_rule(zb)
    return wz[0], _conditional(unit, c * z[0], sigma)


def _mean(table: tuple, counts: dict) -> float:
    """E[prod over samples a of phi^i phi'^j u^k] for counts a -> (i, j, k)."""
    wz, m = table
    acc = np.ones_like(wz)
    for p in counts.values():
        if any(p):
            acc = acc * m[p]
    return float(wz @ acc)


def _counts(*components: tuple, powers: dict | None = None) -> dict:
    """Per-sample powers (phi, phi', u) of a product of components (kind, a, b) (kind 0: phi_a phi_b, 1: phi'_a phi'_b)
    times prod_a u_a^powers[a]."""
    out: dict = {}
    for kind, a, b in components:
        for x in (a, b):
            i, j, k = out.get(x, (0, 0, 0))
            out[x] = (i + 1, j, k) if kind == 0 else (i, j + 1, k)
    for x, k in (powers or {}).items():
        i, j, k0 = out.get(x, (0, 0, 0))
        out[x] = (i, j, k0 + k)
    return out


def _pairs(n: int) -> list:
    return [(a, b) for a in range(n) for b in range(a, n)]


@dataclass(frozen=True)
class RealizedAverages:
    """One layer's realized averages over n exchangeable samples: the kernel pairs (1/M) sum_a phi_a(t) phi_a(s), then
    the backward factors (1/M) sum_a phi'_a(t) phi'_a(s) (divided by s_t s_s behind a layer norm), pairs t <= s.

    Attributes:
        mean: their means (mean field).
        sigma: M times their covariance given the layer below (behind a layer norm: of the influence functions).
        jac: their response to the realized kernel Q below, d mean / d Q over the kernel pairs (components x pairs).
        noise: (quadrature table, scale) of the backward noise's phi' products (internal).
    """

    mean: np.ndarray
    sigma: np.ndarray
    jac: np.ndarray
    noise: tuple


def _slopes_plain(unit: Unit, q1: float, q2: float, kind: int) -> tuple[float, float, float]:
    """(dE[g^2]/dq, dE[g_a g_b]/dQ_aa, dE[g_a g_b]/dQ_ab), g = phi (kind 0) or phi' (kind 1), by central differences
    of exact quadratures (as the plain engine)."""
    p = (2, 0, 0) if kind == 0 else (0, 2, 0)
    one = (1, 0, 0) if kind == 0 else (0, 1, 0)

    def square(q: float) -> float:
        return float(_conditional(unit, np.zeros(1), math.sqrt(q), (p,))[p][0])

    def pair(qa: float, qab: float) -> float:
        # u_a = sqrt(qab) w + sqrt(qa - qab) e_a, u_b = sqrt(qab) w + sqrt(q1 - qab) e_b (qab >= 0)
        c = math.sqrt(qab)
        zb = np.empty((1, 0)) if c == 0 or unit.kinks is None else (np.asarray(unit.kinks) / c)[None, :]
        if unit.kinks is None and c > 0:
            zb = np.linspace(-RANGE, RANGE, 33)[None, 1:-1]
        z, wz = normal_rule(zb)
        ma = _conditional(unit, c * z[0], math.sqrt(qa - qab), (one,))[one]
        mb = _conditional(unit, c * z[0], math.sqrt(q1 - qab), (one,))[one]
        return float(wz[0] @ (ma * mb))

    h = 1e-5 * q1
    single = (square(q1 + h) - square(q1 - h)) / (2 * h)
    diag = (pair(q1 + h, q2) - pair(q1 - h, q2)) / (2 * h)
    hc = min(h, (q1 - q2) / 2)
    lo = max(q2 - hc, 0.0)
    cross = (pair(q1, q2 + hc) - pair(q1, lo)) / (q2 + hc - lo)
    return single, diag, cross


@functools.lru_cache(maxsize=256)
def _local(unit: Unit, q1: float, q2: float, norm: bool, n: int) -> RealizedAverages:
    """One layer's realized averages over n exchangeable samples: means, M x covariance and response to Q."""
    pairs = _pairs(n)
    comps = [(0, a, b) for a, b in pairs] + [(1, a, b) for a, b in pairs]
    size, npair = len(comps), len(pairs)
    jac = np.zeros((size, npair))
    if not norm:
        table = _table(unit, q1, q2)
        mean = np.array([_mean(table, _counts(c)) for c in comps])
        second = np.array([[_mean(table, _counts(c, d)) for d in comps] for c in comps])
        slopes = {kind: _slopes_plain(unit, q1, q2, kind) for kind in (0, 1)}
        jac = slope_jacobian(comps, pairs, slopes)
        return RealizedAverages(mean, second - np.outer(mean, mean), jac, (table, 1.0))
    table = _table(unit, 1.0, q2 / q1)
    mean, sigma, jac = layer_norm_averages(unit, q1, q2, n, lambda comps, powers=None: _mean(table, _counts(*comps,
                                                                                                         powers=powers)))
    return RealizedAverages(mean, sigma, jac, (table, 1.0 / q1**2))


def layer_norm_averages(unit: Unit, q1: float, q2: float, n: int, moment: Any) -> tuple:
    """(means, M x covariance, d mean / d Q) of a layer-normed layer's realized averages over n exchangeable samples
    (:func:`realized_averages` with ``layer_norm=True``), the four-point moments from ``moment``.

    ``moment(components, powers=None)`` is E[prod over components (kind, a, b) of phi_a phi_b (kind 0) or phi'_a
    phi'_b (kind 1), times prod_a z_a^powers[a]] for n standard normal samples with correlation q2 / q1: this module's
    conditioning on the common part (q2 >= 0), or :mod:`meanfield.finite.layernorm_overlap`'s at any sign of q2.

    Example:
        >>> from meanfield.spec.network import Network
        >>> unit = Unit.of(Network(2, "tanh", 1, 0.1).phi(1))
        >>> table = _table(unit, 1.0, 0.5)
        >>> mean, sigma, jac = layer_norm_averages(unit, 2.0, 1.0, 2, lambda c, powers=None: _mean(table, _counts(*c,
        ...                                                                                         powers=powers)))
        >>> bool(np.allclose(mean, realized_averages(unit.f, 2.0, 1.0, True).mean))
        True
    """
    pairs = _pairs(n)
    comps = [(0, a, b) for a, b in pairs] + [(1, a, b) for a, b in pairs]
    size, npair = len(comps), len(pairs)
    jac = np.zeros((size, npair))
    rho = q2 / q1
    rule = two_sample_rule(unit, 1.0, rho, 1.0)
    lay = two_sample_layer(unit, 1.0, rho, 1.0)
    z, y = rule.u, rule.y
    raw = np.array([moment((c,)) for c in comps])
    # the linear part of each influence function: alpha_i z_i + beta_i (z_i^2 - 1) over the component's samples
    lin = []
    pair_coef: dict = {}  # kind -> the two-sample coefficients per sample position (the same for every pair a < b)
    for r, (kind, a, b) in enumerate(comps):
        if a == b:
            ez = moment(((kind, a, a),), {a: 1})
            ez2 = moment(((kind, a, a),), {a: 2})
            coef = {a: [ez, 0.5 * (ez2 - raw[r])]}          # Stein at unit variance: E[d g] = E[g z], E[z d g] = E[g (z^2 - 1)]
        else:
            if kind not in pair_coef:
                f = unit.f if kind == 0 else unit.df
                g = np.asarray(f(z[0]), dtype=float) * np.asarray(f(z[1]), dtype=float)
                pair_coef[kind] = [(rule.mean(g * y[i]), 0.5 * rule.mean(g * (z[i] * y[i] - 1))) for i in (0, 1)]
            coef = {x: list(pair_coef[kind][i]) for i, x in enumerate((a, b))}
        if kind == 1:                                      # the factor 1 / (s_a s_b): (1 + eps)^-1/2 per sample
            for x in (a, b):
                coef[x][1] += 0.5 * raw[r]
        lin.append(coef)
    R = np.full((n, n), rho) + (1 - rho) * np.eye(n)
    ez = np.array([[moment((c,), {x: 1}) for x in range(n)] for c in comps])
    ez2 = np.array([[moment((c,), {x: 2}) - raw[r] for x in range(n)] for r, c in enumerate(comps)])
    second = np.array([[moment((c, d)) for d in comps] for c in comps])
    sigma = second - np.outer(raw, raw)
    for r in range(size):
        for s_ in range(size):
            v = 0.0
            for x, (al, be) in lin[s_].items():
                v -= al * ez[r, x] + be * ez2[r, x]
            for x, (al, be) in lin[r].items():
                v -= al * ez[s_, x] + be * ez2[s_, x]
            for x, (al, be) in lin[r].items():
                for x2, (al2, be2) in lin[s_].items():
                    v += al * al2 * R[x, x2] + 2 * be * be2 * R[x, x2] ** 2
            sigma[r, s_] += v
    scale = np.array([1.0 if kind == 0 else 1.0 / q1 for kind, _, _ in comps])
    # response through rho(Q) and, for phi' averages, 1 / sqrt(Q_aa Q_bb)
    F1, c1, c_rho, c_one = float(lay.gradF[1, 1]), float(lay.gradc[1, 1]), float(lay.c[1]), float(lay.c[0])
    for r, (kind, a, b) in enumerate(comps):
        if a == b:
            if kind == 1:
                jac[r, pairs.index((a, a))] = -c_one / q1**2
            continue
        if kind == 0:
            jac[r, pairs.index((a, b))] = F1 / q1
            jac[r, pairs.index((a, a))] = jac[r, pairs.index((b, b))] = -rho * F1 / (2 * q1)
        else:
            jac[r, pairs.index((a, b))] = c1 / q1**2
            jac[r, pairs.index((a, a))] = jac[r, pairs.index((b, b))] = -(rho * c1 + c_rho) / (2 * q1**2)
    return raw * scale, sigma * np.outer(scale, scale), jac


_STEP = 2e-3  # finite-difference step in the normalizer's (m, v): the one-sample integrals are smooth in both


@functools.lru_cache(maxsize=64)
def _noise_parts(unit: Unit, rho: float) -> tuple:
    """The w rule of exchangeable standardized samples z = sqrt(rho) w + sqrt(1 - rho) e and, per multiplicity j = 1..4
    of phi' on one sample, the one-sample functions of w behind :func:`noise_mean_shift` (arrays over the w nodes):
    A_p(m, v) = E_e[phi'(y)^j v^(-j/2) z^p], y = (z - m) / sqrt(v), and its derivatives at (m, v) = (0, 1)."""
    c, sigma = math.sqrt(rho), math.sqrt(1.0 - rho)
    zb = np.empty((1, 0)) if c == 0 or unit.kinks is None else (np.asarray(unit.kinks) / c)[None, :]
    if unit.kinks is None and c > 0:
        zb = np.linspace(-RANGE, RANGE, 33)[None, 1:-1]
    z, wz = normal_rule(zb)
    w = z[0]

    powers = tuple((0, j, k) for j in range(1, 5) for k in range(3))

    def A(m: float, v: float) -> dict:  # (j, p) -> A_p of multiplicity j at (m, v): one quadrature for all of them
        r = math.sqrt(v)
        mom = _conditional(unit, (c * w - m) / r, sigma / r, powers)
        out = {}
        for j in range(1, 5):
            m0, m1, m2 = (mom[(0, j, k)] for k in range(3))
            pref = v ** (-j / 2)   # z = sqrt(v) y + m
            out[(j, 0)], out[(j, 1)] = pref * m0, pref * (r * m1 + m * m0)
            out[(j, 2)] = pref * (v * m2 + 2 * m * r * m1 + m * m * m0)
        return out

    h = _STEP
    a0, ap, am, vp, vm = A(0.0, 1.0), A(h, 1.0), A(-h, 1.0), A(0.0, 1.0 + h), A(0.0, 1.0 - h)
    parts = {}
    for j in range(1, 5):
        b = a0[(j, 0)]
        parts[j] = dict(base=b, dm=(ap[(j, 0)] - am[(j, 0)]) / (2 * h), dv=(vp[(j, 0)] - vm[(j, 0)]) / (2 * h),
                        dmm=(ap[(j, 0)] - 2 * b + am[(j, 0)]) / h**2, dvv=(vp[(j, 0)] - 2 * b + vm[(j, 0)]) / h**2,
                        dm_z=(ap[(j, 1)] - am[(j, 1)]) / (2 * h), dv_z2=(vp[(j, 2)] - vm[(j, 2)]) / (2 * h))
    return wz[0], parts


@functools.lru_cache(maxsize=256)
def _noise_shift(unit: Unit, rho: float, pattern: tuple) -> float:
    wz, parts = _noise_parts(unit, rho)
    P = [parts[j] for j in pattern]
    n = len(P)

    def integral(factors: dict) -> float:  # E_w[prod over samples x of (factors[x] or the base function)]
        acc = np.ones_like(wz)
        for x in range(n):
            acc = acc * (factors[x] if x in factors else P[x]["base"])
        return float(wz @ acc)

    psi = integral({})
    if not psi > 0:  # phi' vanishing on the whole law: no noise to correct (and no ratio to form)
        raise InvalidArgument("phi", pattern, "an activation whose derivative is not zero almost everywhere")
    total = 0.0
    for x in range(n):
        # first order: the unit's own share of its sample's mean m and variance v (weights z and z^2 - 1), and the
        # mean E v - 1 = -1/M of the variance about the realized mean
        total += integral({x: P[x]["dm_z"]}) + integral({x: P[x]["dv_z2"]}) - 2.0 * integral({x: P[x]["dv"]})
        # second order in the other units' m and v: Cov(v_x, v_x') = 2 R^2 / M, Cov(m_x, m_x') = R / M
        total += integral({x: P[x]["dvv"]}) + 0.5 * integral({x: P[x]["dmm"]})
        for y in range(n):
            if y != x:
                total += rho**2 * integral({x: P[x]["dv"], y: P[y]["dv"]}) + 0.5 * rho * integral(
                    {x: P[x]["dm"], y: P[y]["dm"]})
    return total / psi


def noise_mean_shift(phi: Any, q1: float, q2: float, pattern: Any) -> float:
    """E[(1/M) sum_a prod_i phi'(u~_a(x_i)) / s_(x_i)] = (mean field) (1 + c / M): a layer norm's backward noise, c.

    The fresh backward noise of a layer-norm layer carries the realized unit average of a product of four factors
    phi'(u~_a(x)) / s_x (x the samples of the two entries, u~ = (u - mu_x) / s_x over the layer's M units). The
    four-point rules take its mean-field value; its mean at width M is larger by O(1/M) relative, and at M = 64 that
    is 6-13%: the factors 1 / s_x are convex in the realized variance (E s^-4 = q1^-2 M^2 / ((M - 3)(M - 5)) for one
    sample). Expanding each factor in its sample's realized mean m_x and variance v_x = s_x^2 / q1 (standardized units
    z ~ N(0, R), R_xx = 1, R_xy = q2 / q1) about (0, 1), with m_x, v_x - 1 averages over the units (the unit's own
    share z_x / M and (z_x^2 - 1) / M, E v_x - 1 = -1/M from the centring, Cov(v_x, v_y) = 2 R_xy^2 / M,
    Cov(m_x, m_y) = R_xy / M), gives to O(1/M), with F = prod_i phi'((z_(x_i) - m) / sqrt(v)) / sqrt(v):

        c E F = sum_x [E(d_(m_x) F z_x) + E(d_(v_x) F (z_x^2 - 2))] + sum_(x,y) [R_xy^2 E d_(v_x) d_(v_y) F
                + R_xy E d_(m_x) d_(m_y) F / 2],

    each term an exchangeable-sample integral of one-sample conditional moments (their (m, v) derivatives by central
    differences of exact quadratures, smooth in both). Checked against direct draws of the normalized layer
    (tanh, M = 64, layer norm on layer 1 of the grid's network; 80000 draws): c = 8.2, 5.5, 4.8, 4.1, 6.1 for the
    patterns (4,), (2, 2), (2, 1, 1), (1, 1, 1, 1), (3, 1) (meanfield/notes/rmt.md, section 6).

    Args:
        phi: the layer's activation (``Network.phi(l)``).
        q1, q2: its mean pre-activation kernel (q1 > q2 >= 0).
        pattern: the multiplicities of phi' per distinct sample, summing to 4, e.g. (2, 1, 1).

    Returns:
        c (float).

    Example:
        >>> c = noise_mean_shift(Network(3, "tanh", 1, 0.1).phi(1), 1.1, 0.1, (4,))
        >>> 7 < c < 9     # about the 8 of E s^-4 for one sample
        True
    """
    try:
        unit = Unit.of(phi)
    except AttributeError:
        raise InvalidArgument("phi", phi, "an activation (Network.phi(l))") from None
    q1, q2 = check_real("q1", q1, symbolic=False), check_real("q2", q2, symbolic=False)
    if not (q1 > q2 >= 0):
        raise InvalidArgument("q1, q2", (q1, q2), "q1 > q2 >= 0")
    try:
        pat = tuple(sorted(int(j) for j in pattern))
    except (TypeError, ValueError):
        raise InvalidArgument("pattern", pattern, "positive multiplicities summing to 4") from None
    if not pat or min(pat) < 1 or sum(pat) != 4:
        raise InvalidArgument("pattern", pattern, "positive multiplicities summing to 4")
    return _noise_shift(unit, q2 / q1, pat)


def realized_averages(phi: Any, q1: float, q2: float, layer_norm: bool, samples: int = 2) -> RealizedAverages:
    """Sigma / M and J of Cov K^j = Sigma / M_j + J Cov Q^j J^T for one layer, plain or behind a layer norm.

    Args:
        phi: the layer's activation (``Network.phi(l)``).
        q1, q2: the mean pre-activation kernel (q1 > q2 >= 0).
        layer_norm: whether a layer norm normalizes the pre-activations.
        samples: n, the number of exchangeable samples (1..4).

    Example:
        >>> r = realized_averages(Network(3, "relu", 2, 0.1).phi(1), 2.1, 0.1, True)
        >>> round(float(r.mean[0]), 12)          # E relu(z)^2 = 1/2 at the normalized law
        0.5
        >>> bool(np.linalg.eigvalsh(r.sigma).min() > -1e-12)      # a covariance
        True
    """
    n = check_int("samples", samples, minimum=1)
    if n > 4:
        raise InvalidArgument("samples", samples, "1 to 4 exchangeable samples")
    return _local(Unit.of(phi), float(q1), float(q2), bool(layer_norm), n)


def check_layer_norms(net: Any, centre: bool = False) -> Network:
    """``net`` itself, if it is a numeric network whose normalizations are layer norms on hidden layers (or none; with
    ``centre`` also a centre-only batch norm on the output): the placements the layer-norm rules derive.

    Raises:
        InvalidArgument: anything else, naming the first normalization not derived.

    Example:
        >>> check_layer_norms(Network(3, "tanh", 2, 0.1, norms=["layer:1"])).depth
        3
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")
    for n in net.norms:
        if isinstance(n, LayerNorm) and n.layer != net.depth:
            continue
        if centre and n.layer == net.depth and getattr(n, "center_only", False):
            continue
        raise InvalidArgument("net", net.describe(), "layer norms on hidden layers (or none)"
                              + (", centre-only batch norm on the output" if centre else "")
                              + " and no other normalization", f"not derived for {n}")
    return net


@functools.lru_cache(maxsize=64)
def _forward(net: Network, width: int, n: int) -> dict:
    """Cov(X^i, X^j) of the realized layer averages of n exchangeable samples, j = 0..L-1 (module docstring)."""
    from ..theory.recursions import order_parameters

    op = order_parameters(net, max(n, 1))
    widths = net.widths(width)
    pairs = _pairs(n)
    npair = len(pairs)
    size = 2 * npair
    base = _local(IDENTITY, float(net.input_q1), float(net.input_q2), False, n)
    sigma = base.sigma.copy()
    sigma[npair:, :] = 0.0  # the inputs' X^0 is the kernel only
    sigma[:, npair:] = 0.0
    cov = {(0, 0): sigma / widths[0]}
    locals_ = {}
    for j in range(1, net.depth):
        lp = op.layers[j]
        loc = _local(Unit.of(net.phi(j)), float(lp.q1), float(lp.q2), isinstance(net.norm_at(j), LayerNorm), n)
        locals_[j] = loc
        J = np.zeros((size, size))
        J[:, :npair] = loc.jac * float(net.sigma_w2[j - 1])   # Q^j = sigma_w^2 K^{j-1} + sigma_b^2
        cov[(j, j)] = loc.sigma / widths[j] + J @ cov[(j - 1, j - 1)] @ J.T
        for i in range(j):
            cov[(j, i)] = J @ cov[(j - 1, i)]
            cov[(i, j)] = cov[(j, i)].T
    return dict(cov=cov, locals=locals_, pairs=pairs, op=op, widths=widths)


def _covariance(net: Network, width: int, first: tuple, second: tuple,
                finite_noise: bool = False) -> tuple[float, float, float]:
    """(Cov(T G_first, T G_second), E T G_first, E T G_second) to leading order (fourpoint's sum, norm-aware); with
    ``finite_noise`` the backward noise of each layer-norm layer at its mean at width M (:func:`noise_mean_shift`)."""
    labels = sorted({first[2], first[3], second[2], second[3]})
    fw = _forward(net, width, len(labels))
    loc = fw["locals"]

    def noise_mean(m: int, p1: tuple, p2: tuple) -> float:  # at a layer norm J_t = I / s_t: the table's scale
        table, scale = loc[m].noise
        counts = _counts((1,) + p1, (1,) + p2)
        value = scale * _mean(table, counts)
        if finite_noise and isinstance(net.norm_at(m), LayerNorm):
            lp = fw["op"].layers[m]
            pattern = tuple(sorted(j for _, j, _ in counts.values()))
            value *= 1.0 + _noise_shift(Unit.of(net.phi(m)), float(lp.q2) / float(lp.q1), pattern) / fw["widths"][m]
        return value

    return entry_covariance(first, second, sigma_w2=net.sigma_w2, widths=fw["widths"], op=fw["op"],
                            pairs=fw["pairs"], cov=fw["cov"], slope_means={m: loc[m].mean for m in loc},
                            noise_mean=noise_mean)


def _check_entry(name: str, entry: Any) -> tuple[int, int, int, int]:
    k, l, t, s = check_entry(name, entry)
    if min(k, l, t, s) < 0:
        raise InvalidArgument(name, entry, "non-negative labels")
    return k, l, t, s


def layer_norm_gram_covariance(net: Network, width: int, first: Any, second: Any, *,
                               finite_noise: bool = False) -> float:
    """Cov(T G_first, T G_second) below layer norms on hidden layers, to leading order in 1/M (module docstring).

    The analogue of :func:`meanfield.finite.fourpoint.gram_covariance` (which it reproduces for a network without
    normalization): an entry is (k, l, t, s), G_kl(t, s) between outputs k, l and samples t, s; equal labels mean
    the same output or sample, different labels different ones.

    Args:
        net: a numeric :class:`~meanfield.spec.network.Network` whose normalizations are layer norms on hidden layers
            (any number of them; none is allowed).
        width: M.
        first, second: the two entries.
        finite_noise: take each layer-norm layer's backward noise at its mean at width M, (1 + c / M) times its
            mean-field value (:func:`noise_mean_shift`: the normalizer's 1 / s factors are convex in the realized
            variance), instead of at mean field. Off by default; the random-matrix model's outlier variances use it.

    Returns:
        the covariance (float), O(M) while E T G is O(M).

    Raises:
        InvalidArgument: another network (batch norm, symbolic), bad width or entries, more output labels than C.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, norms=["layer:2"])
        >>> v = layer_norm_gram_covariance(net, 64, (0, 0, 0, 1), (0, 0, 0, 1))
        >>> bool(v > 0), layer_norm_gram_covariance(net, 64, (0, 0, 0, 1), (0, 0, 0, 1), finite_noise=True) > v
        (True, True)
    """
    check_layer_norms(net)
    M = check_int("width", width, minimum=1)
    e1, e2 = _check_entry("first", first), _check_entry("second", second)
    if len(set(e1[:2] + e2[:2])) > net.outputs:
        raise InvalidArgument("first, second", (first, second), f"at most C = {net.outputs} different output labels")
    return _covariance(net, M, e1, e2, bool(finite_noise))[0]


@dataclass(frozen=True)
class LayerNormEntryVariances:
    """Variances of the Gram entries G = J J^T / T below layer norms (Gram units, leading order in 1/M).

    Attributes:
        width, samples: M, T.
        var_diag, var_offdiag: Var G_kk(t, t), Var G_kk(t, s) (t != s).
        cross_square_diag, cross_square_offdiag: E G_kl(t, t)^2, E G_kl(t, s)^2 for outputs k != l (0 if C = 1).
    """

    width: int
    samples: int
    var_diag: float
    var_offdiag: float
    cross_square_diag: float
    cross_square_offdiag: float


def layer_norm_entry_variances(net: Network, width: int, samples: int) -> LayerNormEntryVariances:
    """Var G_tt, Var G_ts and E G_kl^2 (k != l) below layer norms: :func:`layer_norm_gram_covariance` / T^2.

    Args:
        net: as for :func:`layer_norm_gram_covariance`.
        width: M.
        samples: T (>= 1).

    Example:
        >>> v = layer_norm_entry_variances(Network(3, "relu", 2, 0.1, outputs=2, norms=["layer:1"]), 64, 16)
        >>> v.var_diag > 0 and v.cross_square_offdiag > 0
        True
    """
    check_layer_norms(net)
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=1)
    var_d = _covariance(net, M, (0, 0, 0, 0), (0, 0, 0, 0))[0] / T**2
    var_o = _covariance(net, M, (0, 0, 0, 1), (0, 0, 0, 1))[0] / T**2
    if net.outputs >= 2:
        xd = _covariance(net, M, (0, 1, 0, 0), (0, 1, 0, 0))[0] / T**2
        xo = _covariance(net, M, (0, 1, 0, 1), (0, 1, 0, 1))[0] / T**2
    else:
        xd = xo = 0.0
    return LayerNormEntryVariances(M, T, var_d, var_o, xd, xo)
