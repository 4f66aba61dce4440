"""O(1/M) corrections of the Gram means and of m, s, kappa_1, kappa_2, derived as layer recursions.

The mean-field theory (:mod:`meanfield.theory.fisher`) gives E G_tt and E G_ts of the dual Gram G = J J^T / T
to leading order in 1/M (with the exact widths, P and bias terms). This module adds the next order, the O(1)
shift of these O(M) means (relative O(1/M)), and with the derived entry variances of
:mod:`meanfield.finite.fourpoint` the O(1/M) corrected m, s, kappa_1 and kappa_2.

Forward NTK recursion. For one output k, T G_kk(t, s) = Theta^L_kk(t, s), the neural tangent kernel of the
output, and Theta of layer l + 1 is built from layer l by

    Theta^{l+1}_ij = delta_ij (1 + h^l(t) . h^l(s)) + sum_{a,c} W_ia W_jc phi'_a(t) Theta^l_ac phi'_c(s),

with W = W^{l+1} independent of everything at layer l (the recursion of Roberts, Yaida and Hanin, *The
Principles of Deep Learning Theory*, arXiv 2106.10165, chapter 8). Taking the expectation over W^{l+1} is exact,
so no gradient-independence assumption is needed: E[Theta^{l+1}_ii | layer l] = 1 + M_l K^l + sigma_w^2 N^l with
K^l = h^l(t) . h^l(s) / M_l and N^l = (1/M_l) sum_a phi'_a(t) phi'_a(s) Theta^l_aa. The O(1/M) terms come from
the unit-level correlation between phi'_a and Theta^l_aa, both functions of the same row w of W^l: by
Gaussian integration by parts twice (Stein), given layer l - 1 and with Q the realized kernel,

    E[phi'_a(t) phi'_a(s) Theta^l_aa] = c(Q) (1 + M K^{l-1} + sigma_w^2 N^{l-1})
                                 + (sigma_w^2 / M)^2 sum_{tau,tau'} E[d_tau d_tau' (phi'_t phi'_s)] Y^{l-1}_{tau tau'},

c(Q) = E[phi'(u_t) phi'(u_s)], u ~ N(0, Q), and Y^{l-1}_{tau tau'} = h(tau)^T X h(tau') the NTK sandwiched between
post-activations (X_ac = phi'_a(t) Theta_ac phi'_c(s)). Y is O(M^2) and is needed to leading order only; its
diagonal part is M Theta E[phi_tau phi_tau' phi'_t phi'_s] and its off-diagonal part (Theta_ac, a != c, again by
Stein on two independent rows) obeys

    Y^l = M_l Theta^l E4^l + (M_l / M_{l-1})^2 sigma_w^4 D_t Y^{l-1} D_s^T,   D_t[tau, rho] = E[d_rho (phi_tau phi'_t)].

Expanding E[c(Q) Z] around the mean kernel gives the remaining terms: the kernel's own O(1/M) mean shift
(Roberts-Yaida-Hanin's forward recursion dK^l = J (sigma_w^2 dK^{l-1}) + 1/2 F''[sigma_w^4 Cov K^{l-1}]), the same
for c, and the covariances Cov(c(Q^l), M K^{l-1} + sigma_w^2 N^{l-1}), from the realized-kernel covariances of
the four-point engine (Cov K^j = Sigma / M_j + J Cov K^{j-1} J^T, extended here by N). Gaussian derivatives are
Hermite weights (E[d_i d_j g] = E[g (y_i y_j - P_ij)], y = Q^-1 u, P = Q^-1; fourth order likewise), so kinks
(relu) need no finite differences; the two-dimensional expectations are nested Gauss-Legendre rules split at
the kinks (:mod:`meanfield.integrals.quadrature`).

A check: for relu, c = E[step^2] = 1/2 and E[relu^2] = Q/2 whatever Q, so every term vanishes on the diagonal:
relu's NTK diagonal E G_tt has no 1/M correction (Guillen, Misof and Gerken, Feynman diagrams for the
finite-width statistics of neural tangent kernels, arXiv 2508.11522), with or without biases.

Normalization. Centre-only batch norm on the output is exact: G_kl = Pi G^plain_kl Pi (Pi = I - 11^T/T), so
its means are (1 - 1/T)(d - o) and -(d - o)/T of the plain network's corrected means, and its entry variances
are sums over the patterns of equal samples of the plain network's entry covariances
(:func:`meanfield.finite.fourpoint.gram_covariance`). Full batch norm on the output is derived in
:mod:`meanfield.finite.normalized` (on top of this module), the means below a layer norm in
:mod:`meanfield.finite.layernorm`; hidden batch norm is not derived, and here every normalization other than
centre-only batch norm on the output raises InvalidArgument naming it.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit, breaks, normal_rule
from ..spec.network import Network
from ..theory.fisher import predict
from .fourpoint import cross_output_variance, gram_covariance, label_classes, same_output_variance

__all__ = ["GramCorrections", "gram_corrections", "TwoSampleRule", "two_sample_rule", "ntk_mean_shift", "kernel_mean_shift", "finite_width_stats",
           "STATISTICS", "two_sample_layer", "kernel_response_covariance", "ntk_response", "sandwich_step"]

# the statistics gram_corrections corrects at O(1/M) (what FisherStats.includes_1_over_M can name)
STATISTICS = frozenset({"gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2"})

_PAIRS = ((0, 0), (0, 1), (1, 1))  # the kernel entries of two samples t = 0, s = 1, in this order


# -- two-sample Gaussian expectations --------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoSampleRule:
    """Nodes (u0, u1) and weights of a nested rule for u ~ N(0, Q), Q 2 x 2 positive definite, with y = Q^-1 u."""

    u: tuple
    w: np.ndarray
    y: tuple
    P: np.ndarray

    def mean(self, values: np.ndarray) -> float:
        return float((self.w * values).sum())

    def hermite2(self, i: int, j: int) -> np.ndarray:
        """The weight of E[d_i d_j g] = E[g (y_i y_j - P_ij)]."""
        return self.y[i] * self.y[j] - self.P[i, j]

    def hermite4(self, i: int, j: int, k: int, l: int) -> np.ndarray:
        """The weight of E[d_i d_j d_k d_l g] (the fourth multivariate Hermite polynomial of N(0, Q))."""
        y, P = self.y, self.P
        idx = (i, j, k, l)
        out = y[i] * y[j] * y[k] * y[l]
        for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1)):
            out = out - P[idx[a], idx[b]] * y[idx[c]] * y[idx[d]]
        for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2)):
            out = out + P[idx[a], idx[b]] * P[idx[c], idx[d]]
        return out


_EXTRA = np.array([-3.0, 0.0, 3.0])


@functools.lru_cache(maxsize=512)
def two_sample_rule(unit: Unit, q00: float, q01: float, q11: float) -> TwoSampleRule:
    """u0 = sqrt(q00) z, u1 = (q01 / q00) u0 + sqrt(q11 - q01^2 / q00) e; both rules split where phi or phi' kinks."""
    if not (q00 > 0 and q11 > 0 and q00 * q11 - q01 * q01 > 1e-14 * q00 * q11):
        raise InvalidArgument("net", (q00, q01, q11),
                              "layer kernels of two samples with |q_ts| < q_tt (distinct samples)")
    s0 = math.sqrt(q00)
    # a single 64-node piece over [-12, 12] is not enough even for smooth phi (tanh: 7e-4 off); the bulk's three
    # breaks (a smooth unit's own, quadrature.BULK) make it exact to rounding, a kinked unit's kinks are added to them
    extra = _EXTRA if unit.kinks else np.empty(0)
    zb = np.concatenate([extra, breaks(unit, np.zeros(1), s0)[0]])[None, :]
    z, wz = normal_rule(zb)
    u0 = s0 * z[0]
    slope, rest = q01 / q00, math.sqrt(q11 - q01 * q01 / q00)
    kinks = breaks(unit, slope * u0, rest)
    e, we = normal_rule(np.concatenate([np.broadcast_to(extra, (u0.size, extra.size)), kinks], axis=1))
    U0 = np.broadcast_to(u0[:, None], e.shape)
    U1 = slope * U0 + rest * e
    W = wz[0][:, None] * we
    Q = np.array([[q00, q01], [q01, q11]])
    P = np.linalg.inv(Q)
    y0, y1 = P[0, 0] * U0 + P[0, 1] * U1, P[1, 0] * U0 + P[1, 1] * U1
    return TwoSampleRule((U0, U1), W, (y0, y1), P)


@dataclass(frozen=True)
class _Layer:
    """Gaussian expectations of one layer at its mean kernel (two samples t = 0, s = 1)."""

    F: np.ndarray       # E[phi_a phi_b] per pair
    c: np.ndarray       # E[phi'_a phi'_b] per pair
    gradF: np.ndarray   # dF_p / dQ_A (pairs x pairs)
    gradc: np.ndarray
    hessF: np.ndarray   # d2F_p / dQ_A dQ_B (pairs x pairs x pairs)
    hessc: np.ndarray
    sigma: np.ndarray   # covariance of (phi_a phi_b, phi'_a phi'_b) over pairs (6 x 6)
    d2c: dict           # pair -> 2 x 2 matrix E[d_tau d_tau' (phi'_a phi'_b)]
    e4: dict            # pair -> 2 x 2 matrix E[phi_tau phi_tau' phi'_a phi'_b]
    dmat: dict          # sample a -> 2 x 2 matrix E[d_rho (phi_tau phi'_a)] (rows tau, columns rho)


def _weight(A: tuple) -> float:
    """Price's theorem on the symmetric Q: dE g / dQ_ii = E[d_i^2 g] / 2, dE g / dQ_ij (i != j) = E[d_i d_j g]."""
    return 0.5 if A[0] == A[1] else 1.0


def _hermite4_table(g: TwoSampleRule) -> np.ndarray:
    """Rows (A, B) over _PAIRS x _PAIRS: the weights of E[d_A d_B g] with Price's factors (:meth:`TwoSampleRule.hermite4`
    times the two weights), from the three products y_a y_b (the quartic is a product of two of them)."""
    y, P = g.y, g.P
    yy = {(a, b): y[a] * y[b] for a, b in _PAIRS}
    rows = []
    for pa in _PAIRS:
        for pb in _PAIRS:
            idx = pa + pb
            coef = {key: 0.0 for key in _PAIRS}
            const = 0.0
            for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1)):
                coef[tuple(sorted((idx[c], idx[d])))] += P[idx[a], idx[b]]
            for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2)):
                const += P[idx[a], idx[b]] * P[idx[c], idx[d]]
            h = yy[pa] * yy[pb] - sum(coef[key] * yy[key] for key in _PAIRS) + const
            rows.append((h * (_weight(pa) * _weight(pb))).reshape(-1))
    return np.stack(rows)


@functools.lru_cache(maxsize=256)
def _layer(unit: Unit, q00: float, q01: float, q11: float) -> _Layer:
    g = two_sample_rule(unit, q00, q01, q11)
    f = [np.asarray(unit.f(x), dtype=float) for x in g.u]
    d = [np.asarray(unit.df(x), dtype=float) for x in g.u]
    prods = [f[a] * f[b] for a, b in _PAIRS] + [d[a] * d[b] for a, b in _PAIRS]
    # the weighted expectations as matrix products over the rule's nodes (a cold call's hot spot: one product
    # instead of a hundred weighted sums; the same sums up to the order of the additions)
    weighted = np.stack([(g.w * p).reshape(-1) for p in prods])
    means = weighted.sum(axis=1)
    second = weighted @ np.stack([p.reshape(-1) for p in prods]).T
    second = 0.5 * (second + second.T)
    n = len(_PAIRS)
    h2 = np.stack([(g.hermite2(*pa) * _weight(pa)).reshape(-1) for pa in _PAIRS])
    h4 = _hermite4_table(g)
    grad = weighted @ h2.T
    hess = (weighted @ h4.T).reshape(2 * n, n, n)
    gradF, gradc, hessF, hessc = grad[:n], grad[n:], hess[:n], hess[n:]
    d2c, e4 = {}, {}
    for a, b in ((0, 0), (0, 1)):
        gp = d[a] * d[b]
        d2c[(a, b)] = np.array([[g.mean(gp * g.hermite2(i, j)) for j in (0, 1)] for i in (0, 1)])
        e4[(a, b)] = np.array([[g.mean(f[i] * f[j] * gp) for j in (0, 1)] for i in (0, 1)])
    dmat = {a: np.array([[g.mean(f[tau] * d[a] * g.y[rho]) for rho in (0, 1)] for tau in (0, 1)]) for a in (0, 1)}
    return _Layer(means[:n], means[n:], gradF, gradc, hessF, hessc, second - np.outer(means, means), d2c, e4, dmat)


def two_sample_layer(unit: Unit, q00: float, q01: float, q11: float) -> _Layer:
    """E[phi_a phi_b], E[phi'_a phi'_b], their Price gradients and Hessians, and E[d_rho (phi_tau phi'_a)] (``dmat``)
    of one layer at the kernel Q = [[q00, q01], [q01, q11]] of two samples (shared with meanfield.finite.normalized).

    Example:
        >>> lay = two_sample_layer(Unit.of(Network(2, "relu", 2, 0).phi(1)), 1.0, 0.5, 1.0)
        >>> round(float(lay.c[0]), 12), round(float(lay.F[0]), 12)      # E[step^2] = 1/2, E[relu^2] = Q/2
        (0.5, 0.5)
    """
    return _layer(unit, float(q00), float(q01), float(q11))


def _input_sigma(q1: float, q2: float) -> np.ndarray:
    """Cov(x_a x_b, x_c x_d) of one input coordinate, x ~ N(0, Q): Q_ac Q_bd + Q_ad Q_bc (kernel block only)."""
    Q = np.array([[q1, q2], [q2, q1]])
    out = np.zeros((6, 6))
    for i, (a, b) in enumerate(_PAIRS):
        for j, (c, d) in enumerate(_PAIRS):
            out[i, j] = Q[a, c] * Q[b, d] + Q[a, d] * Q[b, c]
    return out


# -- the recursion ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Forward:
    widths: tuple
    sw: tuple
    kbar: tuple          # mean kernel per layer j = 0..L-1 (pairs)
    layers: dict         # j -> _Layer (j >= 1)
    cov: dict            # (i, j) -> Cov(X^i, X^j), X = (kernel pairs, phi' pairs)
    dk: tuple            # O(1/M) mean shift of the kernel per layer
    dc: dict             # j -> O(1/M) mean shift of c(Q^j) per pair


def _check_numeric(net: Any) -> None:
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")


@functools.lru_cache(maxsize=64)
def _forward(net: Network, width: int) -> _Forward:
    """Mean kernels, realized-average covariances and the kernels' O(1/M) mean shifts of a plain network."""
    widths = net.widths(width)
    L = net.depth
    sw = tuple(float(v) for v in net.sigma_w2)
    sb = tuple(float(v) for v in net.sigma_b2)
    q1, q2 = float(net.input_q1), float(net.input_q2)
    kbar = [np.array([q1, q2, q1])]
    cov = {(0, 0): _input_sigma(q1, q2) / widths[0]}
    dk = [np.zeros(3)]
    layers, dc = {}, {}
    for j in range(1, L):
        Q = sw[j - 1] * kbar[j - 1] + sb[j - 1]
        lay = _layer(Unit.of(net.phi(j)), float(Q[0]), float(Q[1]), float(Q[2]))
        layers[j] = lay
        covQ = sw[j - 1] ** 2 * cov[(j - 1, j - 1)][:3, :3]
        # Roberts-Yaida-Hanin: E F(Q) = F(EQ) + F' dQ + F''[Cov Q] / 2 to O(1/M)
        dQ = sw[j - 1] * dk[j - 1]
        dk.append(lay.gradF @ dQ + 0.5 * np.einsum("pab,ab->p", lay.hessF, covQ))
        dc[j] = lay.gradc @ dQ + 0.5 * np.einsum("pab,ab->p", lay.hessc, covQ)
        kbar.append(lay.F)
        J = np.zeros((6, 6))
        J[:3, :3], J[3:, :3] = lay.gradF, lay.gradc
        J *= sw[j - 1]
        cov[(j, j)] = lay.sigma / widths[j] + J @ cov[(j - 1, j - 1)] @ J.T
        for i in range(j):
            cov[(j, i)] = J @ cov[(j - 1, i)]
            cov[(i, j)] = cov[(j, i)].T
    return _Forward(widths, sw, tuple(kbar), layers, cov, tuple(dk), dc)


def kernel_response_covariance(cov: dict, ncoef: dict, width_below: float, sw_below: float, j: int,
                               p: int) -> np.ndarray:
    """Cov(K^{j-1}_A, Z^{j-1}), A = (tt, ts, ss), with Z^{j-1} = M_{j-1} K^{j-1}_p + sw N^{j-1} and delta N^{j-1} =
    sum_i ncoef[i] . delta X^i its linear response (X^i the kernel and slope averages of layer i, ``cov[(a, b)]``
    their covariances): the covariance the forward NTK recursion needs at layer j, plain or behind a layer norm.

    Example:
        >>> cov = {(0, 0): np.eye(6)}
        >>> kernel_response_covariance(cov, {}, 64.0, 2.0, 1, 1).tolist()
        [0.0, 64.0, 0.0]
    """
    out = width_below * cov[(j - 1, j - 1)][:3, p].copy()
    for i, coef in ncoef.items():
        out += sw_below * (cov[(j - 1, i)][:3, :] @ coef)
    return out


def ntk_response(ncoef: dict, cbar: float, theta: float, width_below: float, sw_below: float, j: int,
                 p: int) -> dict:
    """The linear response of N^j (the realized average of phi' phi' times the NTK below), delta N^j = Theta^j delta
    c^j + c^j (M_{j-1} delta K^{j-1}_p + sw delta N^{j-1}), as coefficients on the layers' (kernel, slope) averages
    (6 entries each).

    Example:
        >>> {i: v.tolist() for i, v in ntk_response({}, 0.5, 3.0, 64.0, 2.0, 1, 0).items()}
        {0: [32.0, 0.0, 0.0, 0.0, 0.0, 0.0], 1: [0.0, 0.0, 0.0, 3.0, 0.0, 0.0]}
    """
    new = {i: cbar * sw_below * coef for i, coef in ncoef.items()}
    e = np.zeros(6)
    e[p] = cbar * width_below
    new[j - 1] = new.get(j - 1, np.zeros(6)) + e
    e = np.zeros(6)
    e[3 + p] = theta
    new[j] = e
    return new


def sandwich_step(lay: Any, pair: tuple, theta: float, ybar: np.ndarray, width: float, width_below: float,
                  sw_below: float) -> np.ndarray:
    """Y^j = M_j Theta^j E4^j + (M_j / M_{j-1})^2 sw^2 D_a Y^{j-1} D_b^T (a, b the pair's samples): the sandwiched
    NTK of a plain layer (``lay`` its :func:`two_sample_layer`).

    Example:
        >>> lay = two_sample_layer(Unit.of(Network(2, "relu", 2, 0).phi(1)), 1.0, 0.5, 1.0)
        >>> sandwich_step(lay, (0, 0), 1.0, np.zeros((2, 2)), 1.0, 1.0, 2.0).shape
        (2, 2)
    """
    a, b = pair
    return width * theta * lay.e4[pair] + (width / width_below) ** 2 * sw_below ** 2 * (
        lay.dmat[a] @ ybar @ lay.dmat[b].T)


def _ntk(net: Network, width: int, pair: tuple) -> tuple[float, float]:
    """(E Theta^L(t, s) to leading order, its O(1) shift) for pair (0, 0) (t = s) or (0, 1) (t != s)."""
    fw = _forward(net, width)
    L, Mw, sw = net.depth, fw.widths, fw.sw
    p = _PAIRS.index(pair)
    theta = 1.0 + Mw[0] * fw.kbar[0][p]            # mean Theta^1_aa
    dtheta = 0.0                                   # its O(1) shift (the inputs' kernel is exact in mean)
    nbar, dn = 0.0, 0.0                            # N^0 = 0
    ncoef: dict = {}                               # delta N^j = sum_i ncoef[i] . delta X^i (linear response)
    ybar = np.zeros((2, 2))                        # Y^0 = 0
    for j in range(1, L):
        lay = fw.layers[j]
        cbar = lay.c[p]
        # Cov(K^{j-1}_A, Z^{j-1}) with Z^{j-1} = M_{j-1} K^{j-1}_p + sw N^{j-1}
        covKZ = kernel_response_covariance(fw.cov, ncoef, Mw[j - 1], sw[j - 1], j, p)
        cov_cZ = sw[j - 1] * float(lay.gradc[p] @ covKZ)
        ycorr = (sw[j - 1] / Mw[j - 1]) ** 2 * float((lay.d2c[pair] * ybar).sum()) if j >= 2 else 0.0
        dn_new = fw.dc[j][p] * theta + cbar * dtheta + cov_cZ + ycorr
        ncoef = ntk_response(ncoef, cbar, theta, Mw[j - 1], sw[j - 1], j, p)
        ybar = sandwich_step(lay, pair, theta, ybar, Mw[j], Mw[j - 1], sw[j - 1])
        nbar, dn = cbar * theta, dn_new
        theta = 1.0 + Mw[j] * fw.kbar[j][p] + sw[j] * nbar
        dtheta = Mw[j] * fw.dk[j][p] + sw[j] * dn
    return float(theta), float(dtheta)


def kernel_mean_shift(net: Network, width: int) -> tuple:
    """M_j (E K^j - K_bar^j) per layer j = 0..L-1: the O(1/M) mean shift of the realized kernel h.h / M_j, times M_j.

    E K^j = F(E Q^j) + 1/2 F''[Cov Q^j] + O(1/M^2) with Q^j = sigma_w^2 K^{j-1} + sigma_b^2 (Roberts, Yaida and
    Hanin's 1/n kernel recursion); entries per layer are (t t, t s, s s) of two distinct samples.

    Example:
        >>> shifts = kernel_mean_shift(Network(3, "relu", 2, 0.1), 256)
        >>> [round(float(s[0]), 9) for s in shifts]      # relu: E|h|^2 is linear in the kernel, no shift
        [0.0, 0.0, 0.0]
    """
    _check_numeric(net)
    _check_plain(net)
    width = check_int("width", width, minimum=1)
    fw = _forward(net, width)
    return tuple(fw.widths[j] * fw.dk[j] for j in range(net.depth))


def ntk_mean_shift(net: Network, width: int) -> tuple[float, float]:
    """E T G_kk(t, t) - its mean-field value and the same for t != s: the O(1) shifts of the O(M) means.

    Example:
        >>> d, o = ntk_mean_shift(Network(3, "relu", 2, 0.1), 128)
        >>> abs(d) < 1e-9, o != 0            # relu: no correction of the NTK diagonal
        (True, True)
    """
    _check_numeric(net)
    _check_plain(net)
    width = check_int("width", width, minimum=1)
    return _ntk(net, width, (0, 0))[1], _ntk(net, width, (0, 1))[1]


def _check_plain(net: Network) -> None:
    """The recursion itself covers plain networks (normalization enters through gram_corrections)."""
    if net.norms:
        raise InvalidArgument("net", net.describe(), "a network without normalization layers here")


# -- the public result -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GramCorrections:
    """Gram means to O(1) beyond mean field (relative O(1/M)), entry variances, and the corrected statistics.

    Attributes:
        network, width, samples: what was computed (M, T).
        mean_field_diag, mean_field_offdiag: E G_tt, E G_ts (t != s) of mean field (as ``predict`` reports).
        mean_diag, mean_offdiag: the same with their O(1/M) corrections.
        diag_shift, offdiag_shift: mean - mean field (O(1) in Gram units, while the means are O(M): the 1/M
            coefficients in absolute units).
        var_diag, var_offdiag: Var G_tt, Var G_ts (one output).
        cross_square_diag, cross_square_offdiag: E G_kl(t, t)^2, E G_kl(t, s)^2 for outputs k != l (0 if C = 1).
        m, s, kappa1, kappa2: corrected (m = C T mean_diag / P; s = sum of E G^2 over all entries / P;
            kappa = T mean / (alpha M), the finite-width kappa's as the sampler reports them; None for depth 1,
            where alpha = 0).
        m_mean_field, s_mean_field: predict's values.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.
        includes_1_over_M: the statistics above that include their 1/M term.
        notes: what is and is not derived.
        seconds: time taken.

    Example:
        >>> c = gram_corrections(Network(2, "tanh", 2, 0.1, outputs=2), 64, 8)
        >>> c.s > c.s_mean_field, round(c.mean_diag - c.mean_field_diag, 12) == round(c.diag_shift, 12)
        (True, True)
    """

    network: Network
    width: int
    samples: int
    mean_field_diag: float
    mean_field_offdiag: float
    mean_diag: float
    mean_offdiag: float
    diag_shift: float
    offdiag_shift: float
    var_diag: float
    var_offdiag: float
    cross_square_diag: float
    cross_square_offdiag: float
    m: float
    s: float
    kappa1: float | None
    kappa2: float | None
    m_mean_field: float
    s_mean_field: float
    P: int
    alpha: float
    includes_1_over_M: frozenset
    notes: tuple = ()
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """The numbers (JSON-able), with includes_1_over_M as a sorted list."""
        out = {k: getattr(self, k) for k in ("width", "samples", "mean_field_diag", "mean_field_offdiag", "mean_diag",
                                             "mean_offdiag", "diag_shift", "offdiag_shift", "var_diag", "var_offdiag",
                                             "cross_square_diag", "cross_square_offdiag", "m", "s", "kappa1", "kappa2",
                                             "m_mean_field", "s_mean_field", "P", "alpha")}
        out.update(network=self.network.describe(), includes_1_over_M=sorted(self.includes_1_over_M),
                   notes=list(self.notes))
        return out

    def __str__(self) -> str:
        rows = [("E G_tt", self.mean_field_diag, self.mean_diag),
                ("E G_ts", self.mean_field_offdiag, self.mean_offdiag),
                ("m", self.m_mean_field, self.m), ("s", self.s_mean_field, self.s)]
        lines = [f"GramCorrections: {self.network.describe()}  M={self.width} T={self.samples}",
                 f"  {'':<7} {'mean field':>14} {'with 1/M':>14}"]
        lines += [f"  {k:<7} {a:>14.6g} {b:>14.6g}" for k, a, b in rows]
        lines += [f"  Var G_tt = {self.var_diag:.6g}, Var G_ts = {self.var_offdiag:.6g}, "
                  f"E G_cross^2 = {self.cross_square_diag:.6g} (t = s), {self.cross_square_offdiag:.6g} (t != s)"]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _projected_variance(cov: Any, T: int, fixed: tuple) -> float:
    """Var((Pi A Pi)_{t t'}) for a T x T block A of exchangeable entries: sum over (u, v, u', v') of
    Pi_tu Pi_t'v Pi_tu' Pi_t'v' Cov(A_uv, A_u'v'), grouped into classes of equal labels (exact in T).
    ``fixed`` is (0,) for t = t' or (0, 1) for t != t'; ``cov(u, v, u', v')`` takes labels."""
    t, tp = fixed[0], fixed[-1]
    nf = len(fixed)

    def pi(x: int, y: int) -> float:
        return (1.0 - 1.0 / T) if x == y else -1.0 / T

    total = 0.0
    for labels, new in label_classes(len(fixed)):
        if nf + new > T:
            continue
        count = math.prod(T - nf - i for i in range(new))
        u, v, u2, v2 = labels
        weight = pi(t, u) * pi(tp, v) * pi(t, u2) * pi(tp, v2)
        if weight:
            total += count * weight * cov(u, v, u2, v2)
    return total


def gram_corrections(net: Network, width: int, samples: int) -> GramCorrections:
    """E G = mean field + O(1) shift (relative 1/M), Var G entries, and m, s, kappa_1, kappa_2 to O(1/M).

    Derived (module docstring) for networks without normalization and with centre-only batch norm on the
    output (``batch-center:last``); the entry variances are those of :mod:`meanfield.finite.fourpoint`.

    Args:
        net: a numeric :class:`~meanfield.spec.network.Network`.
        width: M.
        samples: T (>= 2).

    Returns:
        :class:`GramCorrections`.

    Raises:
        InvalidArgument: a symbolic network, bad width or samples, or a normalization not derived here (full
            batch norm on the output, hidden batch norm, layer norm: the message names it).

    Example:
        >>> c = gram_corrections(Network(3, "relu", 2, 0.1, outputs=2), 128, 16)
        >>> abs(c.diag_shift) < 1e-9 and c.offdiag_shift != 0     # relu: no 1/M on the NTK diagonal
        True
        >>> sorted(c.includes_1_over_M)
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
    """
    start = time.perf_counter()
    _check_numeric(net)
    width = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=2)
    center = False
    for norm in net.norms:
        if norm.layer == net.depth and getattr(norm, "center_only", False):
            center = True
            continue
        raise InvalidArgument("net", net.describe(), "no normalization or centre-only batch norm on the output",
                              f"the 1/M corrections are not derived for {norm}")
    plain = net.with_(norms=()) if center else net
    base = predict(net, width, T)
    raw = predict(plain, width, T) if center else base
    d0, o0 = _ntk(plain, width, (0, 0)), _ntk(plain, width, (0, 1))
    # T G = Theta: the recursion's leading value reproduces mean field; its shift is the O(1/M) term
    gd = float(raw.gram_diag) + d0[1] / T
    go = float(raw.gram_offdiag) + o0[1] / T
    C = net.outputs
    M = width
    notes = ["E G_tt, E G_ts: mean field plus the derived O(1/M) shift (forward NTK recursion, exact Gaussian "
             "conditioning; no gradient-independence assumption)",
             "entry variances: meanfield.finite.fourpoint (derived at O(1/M), gradient independence for the "
             "backward weights)"]
    if not center:
        same = same_output_variance(plain, M, T)
        var_d, var_o = same.diag / T**2, same.offdiag / T**2
        if C >= 2:
            cross = cross_output_variance(plain, M, T)
            xd, xo = cross.diag / T**2, cross.offdiag / T**2
        else:
            xd = xo = 0.0
        mean_d, mean_o = gd, go
    else:
        @functools.lru_cache(maxsize=None)
        def cov_same(u, v, u2, v2):
            return gram_covariance(plain, M, (0, 0, u, v), (0, 0, u2, v2))

        @functools.lru_cache(maxsize=None)
        def cov_cross(u, v, u2, v2):
            return gram_covariance(plain, M, (0, 1, u, v), (0, 1, u2, v2))

        var_d = _projected_variance(cov_same, T, (0,)) / T**2
        var_o = _projected_variance(cov_same, T, (0, 1)) / T**2
        if C >= 2:
            xd = _projected_variance(cov_cross, T, (0,)) / T**2
            xo = _projected_variance(cov_cross, T, (0, 1)) / T**2
        else:
            xd = xo = 0.0
        mean_d, mean_o = (1 - 1 / T) * (gd - go), -(gd - go) / T
        notes.append("centre-only batch norm on the output: G = Pi G_plain Pi per output block, exact")
    P = int(base.P)
    alpha = float(base.alpha)
    m = C * T * mean_d / P
    s = (C * T * (mean_d**2 + var_d) + C * T * (T - 1) * (mean_o**2 + var_o)
         + C * (C - 1) * (T * xd + T * (T - 1) * xo)) / P
    notes.append("lambda_max: not corrected (the mean-field value or bounds)")
    return GramCorrections(net, M, T, float(base.gram_diag), float(base.gram_offdiag), mean_d, mean_o,
                           mean_d - float(base.gram_diag), mean_o - float(base.gram_offdiag), var_d, var_o, xd, xo,
                           m, s, *((T * mean_d / (alpha * M), T * mean_o / (alpha * M)) if alpha else (None, None)),
                           float(base.m), float(base.s), P,
                           alpha, STATISTICS, tuple(notes), time.perf_counter() - start)


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict:
    """The "1/M" model of ``predict(..., finite_width="1/M")``: the corrected gram_diag, gram_offdiag, m, s,
    kappa1, kappa2 of :func:`gram_corrections`; lambda_max stays the mean-field value or bounds. For a placement
    not derived (full batch norm on the output, hidden batch or layer norm) it returns the mean-field values, an
    empty ``includes_1_over_M`` and a note naming the normalization.

    Example:
        >>> net = Network(3, "relu", 2, 0.1, outputs=2)
        >>> out = finite_width_stats(net, 128, 16, predict(net, 128, 16))
        >>> sorted(out["includes_1_over_M"])[:2]
        ['gram_diag', 'gram_offdiag']
    """
    unsupported = [n for n in net.norms if not (n.layer == net.depth and getattr(n, "center_only", False))]
    if unsupported:
        # predict keeps working on every placement: the mean-field values, and a note on what is missing
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': the O(1/M) corrections are not derived for "
                           f"{', '.join(map(str, unsupported))}: mean-field values",))
    try:
        c = gram_corrections(net, width, samples)
    except InvalidArgument as error:  # e.g. inputs with a negative mean product, which the variances do not cover
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    out = dict(gram_diag=c.mean_diag, gram_offdiag=c.mean_offdiag, m=c.m, s=c.s, kappa1=c.kappa1, kappa2=c.kappa2,
               includes_1_over_M=c.includes_1_over_M, notes=tuple(c.notes))
    if c.kappa1 is None:
        del out["kappa1"], out["kappa2"]
        out["includes_1_over_M"] = c.includes_1_over_M - {"kappa1", "kappa2"}
    return out
