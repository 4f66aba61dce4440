"""Four-point order parameters: the O(1/M) variance of Gram entries between different outputs, derived.

The random-matrix model of :mod:`meanfield.finite.model` needs fluctuation coefficients beyond the mean-field
kernel (Gaussian integrals of products of four activations). Most are still measured on reference
networks; this module derives the first of them in closed recursive form and is checked against those
measurements and against sampled networks (``tests/test_fourpoint.py``, ``derivations/rmt.md``).

Cross-output entries. For outputs k != l of a network without normalization, the output layer's weights
and biases do not contribute (d f_k / d W^L_{l i} = 0), and a hidden layer l contributes
A_l B_l with

    A_l = delta^l_k(t) . delta^l_l(s)   (delta^l_k = d f_k / d u^l),   B_l = h^{l-1}(t) . h^{l-1}(s) + 1,

so T G_kl(t, s) = sum_{l=1}^{L-1} A_l B_l, E A_l = 0 (the output weights of k and l are independent).
Backward, delta^l_k = phi'(u^l) (.) W^{l+1 T} delta^{l+1}_k. Treating the backward weights as fresh
Gaussians (the gradient-independence rule, exact for the mean-field kernel and used here at the next
order), given layer l + 1 the M_l summands of A_l are independent with

    E[A_l | l+1] = sigma_w^2 c_l A_{l+1},  Var[A_l | l+1] = sigma_w^4 e_l qtilde_1^{l+1}(t) qtilde_1^{l+1}(s) / M_l
                   (+ O(M^-2)),

c_l = E[phi'(u_t) phi'(u_s)], e_l = E[phi'(u_t)^2 phi'(u_s)^2] at layer l's kernel (E[phi'^2], E[phi'^4]
for t = s), sigma_w^2 that of W^{l+1}, qtilde_1^{l+1} = |delta^{l+1}|^2 (1 at the output). Hence, with
V_L = 0,

    V_l = Var A_l = (sigma_w^2 c_l)^2 V_{l+1} + sigma_w^4 e_l qtilde_1^{l+1} qtilde_1^{l+1} / M_l,
    Cov(A_l, A_l') = prod_{m=l}^{l'-1} (sigma_w^2 c_m) V_l'   (l < l'),

and Var(T G_kl(t, s)) = sum_{l, l'} E[B_l B_l'] Cov(A_l, A_l') (the forward B's taken independent of the
backward A's). E[B_l B_l'] = Bbar_l Bbar_l' + Cov(B_l, B_l') with Bbar_l = M_{l-1} qhat_2^{l-1} + 1 (qhat_1
for t = s). The covariance is not negligible: where qhat_2^{l-1} = 0 (the first layer with independent
inputs, x_t . x_s ~ N(0, M_0)) it is the whole of E[B_l^2], and where qhat_2 is small it is a large O(1/M)
correction (relu L = 3, M = 256, a direct simulation: the B fluctuations carry 4.0 of Var(T G) = 36.3).
It follows from the fluctuations of the realized kernel K^j = (h_t . h_t, h_s . h_s, h_t . h_s) / M_j:

    K^j = F(Q^j) + noise_j,  Q^j = sigma_w^2 K^{j-1} + sigma_b^2,  Cov(noise_j) = Sigma(Q^j) / M_j,
    Cov(K^j) = Sigma / M_j + J_j sigma_w^4 Cov(K^{j-1}) J_j^T,  Cov(K^j, K^i) = J_j sigma_w^2 Cov(K^{j-1}, K^i),

F(Q) = E[(phi_t^2, phi_s^2, phi_t phi_s)], Sigma(Q) their covariance (four-point Gaussian integrals of phi)
and J_j = dF/dQ at the mean kernel; the inputs' K^0 has the Gaussian moments of x. The expectations are
two-dimensional Gaussian integrals, here by nested Gauss-Hermite quadrature (200 x 200 nodes; exact to
rounding for smooth phi, about 1e-3 relative for kinked ones such as relu), and J by central differences.

Same-output entries. For one output, T G_kk(t, s) = sum_{l=1}^{L} A_l B_l with A_L = 1 (the output layer) and
A_l = delta^l_k(t) . delta^l_k(s), now with mean abar_l = qtilde_2^l (qtilde_1^l for t = s). Given the forward
pass, A_l = a_l + xi_l: its conditional mean a_l = prod_{m=l}^{L-1} sigma_w^2 cbar_m (cbar_m the realized mean
of phi'_t phi'_s at layer m, which fluctuates with the forward kernels) and a backward part xi_l with
V_l = (sigma_w^2 c_l)^2 V_{l+1} + sigma_w^4 e_l (qtilde_1^2 + abar_{l+1}^2) / M_l (abar_{l+1} = qtilde_2^{l+1},
or qtilde_1^{l+1} for t = s; it is 0 between outputs, which gives the recursion above), V_L = 0. To first order in the forward fluctuations,

    Var(T G_kk) = sum_{l, l'} [abar abar' Cov(B, B') + abar Bbar' Cov(B, a') + Bbar abar' Cov(a, B')
                  + Bbar Bbar' Cov(a, a') + (Bbar Bbar' + Cov(B, B')) Cov(xi, xi')],

with delta a_l = abar_l sum_{m >= l} delta cbar_m / c_m; every forward covariance comes from the same
realized-average recursion, extended by the mean of phi'_t phi'_s (the fourth component of X^j).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import functools
import math

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import IDENTITY, RANGE, Unit, breaks, normal_rule

__all__ = ["entry_covariance", "check_entry", "CrossOutputVariance", "cross_output_variance", "SameOutputVariance", "same_output_variance",
           "gram_covariance", "BulkFluctuations", "bulk_fluctuations", "block_bulk_fluctuations", "bulk_estimates",
           "OutlierFluctuations", "outlier_fluctuations", "set_partitions",
           "index_patterns", "label_classes", "slope_jacobian"]


@dataclass(frozen=True)
class CrossOutputVariance:
    """Var(T G_kl(t, s)) for outputs k != l: ``offdiag`` (t != s) and ``diag`` (t = s), and the coefficient
    ``var_cross`` = M E[G_kl^2] / gram_diag^2 averaged over a cross block's T^2 entries (the normalization of
    :class:`meanfield.finite.fluctuations.Fluctuations`)."""

    width: int
    samples: int
    offdiag: float
    diag: float
    gram_diag: float
    var_cross: float

    @property
    def mean_square(self) -> float:
        """E[G_kl(t, s)^2] averaged over a cross block's T^2 entries (G = J J^T / T)."""
        T = self.samples
        return ((T - 1) * self.offdiag + self.diag) / T / T**2

    def _repr_latex_(self) -> str:
        return (rf"$\mathrm{{Var}}(T G_{{kl}}(t,s)) = {self.offdiag:.6g},\ \mathrm{{Var}}(T G_{{kl}}(t,t)) = "
                rf"{self.diag:.6g},\ M\,\mathbb{{E}}[G_{{kl}}^2]/\bar G_{{tt}}^2 = {self.var_cross:.6g}"
                rf"\quad (M = {self.width},\ T = {self.samples})$")

    def __str__(self) -> str:
        return (f"cross-output Gram entries at M={self.width}, T={self.samples}: Var(T G_kl(t,s)) = {self.offdiag:.6g}"
                f" (t != s), {self.diag:.6g} (t = s); M E[G_kl^2] / gram_diag^2 = {self.var_cross:.6g}")


def _conditional_moments(unit: Unit, shift: np.ndarray, scale: float, powers: tuple) -> dict:
    """E_e[phi^i phi'^j (shift + scale e)] for each (i, j) in ``powers``, one value per shift."""
    shift = np.atleast_1d(np.asarray(shift, dtype=float))
    if scale == 0:
        u = shift[:, None]
        w = np.ones_like(u)
    else:
        e, w = normal_rule(breaks(unit, shift, scale))
        u = shift[:, None] + scale * e
    fa, fd = np.asarray(unit.f(u), dtype=float), np.asarray(unit.df(u), dtype=float)
    return {(i, j): (w * fa**i * fd**j).sum(axis=1) for i, j in powers}


_POWERS = tuple((i, j) for i in range(5) for j in range(5) if i + j <= 4)


@functools.lru_cache(maxsize=256)
def _exchangeable(unit: Unit, q1: float, q2: float) -> tuple[np.ndarray, dict]:
    """Samples with equal variance q1 and equal covariance q2 >= 0 are u_a = sqrt(q2) z + sqrt(q1 - q2) e_a with
    z, e_a iid standard normal: any product of phi, phi' over several samples is a z-integral of products of
    one-sample conditional moments. Returns the z weights and the table (i, j) -> E_e[phi^i phi'^j | z]."""
    if q2 < 0 or q1 < q2:
        raise InvalidArgument("net", (q1, q2), "layer kernels with q1 >= q2 >= 0 (exchangeable samples)")
    c, sigma = math.sqrt(q2), math.sqrt(q1 - q2)
    zb = np.empty((1, 0)) if c == 0 or unit.kinks is None else (np.asarray(unit.kinks) / c)[None, :]
    if unit.kinks is None and c > 0:
        zb = np.linspace(-RANGE, RANGE, 33)[None, 1:-1]
    z, wz = normal_rule(zb)
    return wz[0], _conditional_moments(unit, c * z[0], sigma, _POWERS)


def _product_mean(table: tuple, counts: dict) -> float:
    """E[prod over samples a of phi^i_a phi'^j_a] for counts a -> (i, j) (exchangeable samples)."""
    wz, m = table
    acc = np.ones_like(wz)
    for i, j in counts.values():
        if i or j:
            acc = acc * m[(i, j)]
    return float(wz @ acc)


def _pairs(n: int) -> list:
    return [(a, b) for a in range(n) for b in range(a, n)]


def _counts(*components: tuple) -> dict:
    """Per-sample (phi power, phi' power) of a product of components (kind, a, b).

    Kind 0 is phi_a phi_b, kind 1 is phi'_a phi'_b."""
    out: dict = {}
    for kind, a, b in components:
        for x in (a, b):
            i, j = out.get(x, (0, 0))
            out[x] = (i + 1, j) if kind == 0 else (i, j + 1)
    return out


def _pair_mean(unit: Unit, kind: int, qa: float, qb: float, qab: float) -> float:
    """E[g(u_a) g(u_b)], g = phi (kind 0) or phi' (kind 1), for any 2 x 2 covariance with |qab| <= qa, qb."""
    c, sign = math.sqrt(abs(qab)), (1.0 if qab >= 0 else -1.0)
    if unit.kinks is None or c == 0:
        unknown = unit.kinks is None  # kinks unknown: many equal pieces
        z, wz = normal_rule(np.linspace(-RANGE, RANGE, 33)[None, 1:-1] if unknown else np.empty((1, 0)))
    else:
        ks = np.asarray(unit.kinks) / c
        z, wz = normal_rule(np.concatenate([ks, sign * ks])[None, :])
    p = (1, 0) if kind == 0 else (0, 1)
    ma = _conditional_moments(unit, c * z[0], math.sqrt(qa - abs(qab)), (p,))[p]
    mb = _conditional_moments(unit, sign * c * z[0], math.sqrt(qb - abs(qab)), (p,))[p]
    return float(wz[0] @ (ma * mb))


def _square_mean(unit: Unit, kind: int, q: float) -> float:
    """E[g(u)^2], u ~ N(0, q)."""
    p = (2, 0) if kind == 0 else (0, 2)
    return float(_conditional_moments(unit, np.zeros(1), math.sqrt(q), (p,))[p][0])


@functools.lru_cache(maxsize=256)
def _slopes(unit: Unit, q1: float, q2: float) -> dict:
    """Derivatives of the layer means F = E[g g'] in the kernel at (q1, q2), by central differences of exact
    quadratures: kind -> (dE[g^2]/dq, dE[g_a g_b]/dQ_aa (= d/dQ_bb), dE[g_a g_b]/dQ_ab)."""
    h = 1e-5 * q1
    out = {}
    for kind in (0, 1):
        single = (_square_mean(unit, kind, q1 + h) - _square_mean(unit, kind, q1 - h)) / (2 * h)
        diag = (_pair_mean(unit, kind, q1 + h, q1, q2) - _pair_mean(unit, kind, q1 - h, q1, q2)) / (2 * h)
        hc = min(h, (q1 - q2) / 2) if q1 > q2 else h
        cross = (_pair_mean(unit, kind, q1, q1, q2 + hc) - _pair_mean(unit, kind, q1, q1, q2 - hc)) / (2 * hc)
        out[kind] = (single, diag, cross)
    return out


@functools.lru_cache(maxsize=64)
def _forward(net: Any, width: int, samples: int, n: int) -> dict:
    """Cov(X^i, X^j) of the realized layer averages of n exchangeable samples (module docstring):
    X^j = (h_a . h_b / M_j for pairs a <= b, then the mean of phi'_a phi'_b over layer j's units), j = 0..L-1
    (the inputs have no phi'). Read-only (cached per network, width, T and n)."""
    from ..theory.recursions import order_parameters

    op = order_parameters(net, samples)
    widths = net.widths(width)
    pairs = _pairs(n)
    comps = [(0, a, b) for a, b in pairs] + [(1, a, b) for a, b in pairs]
    size = len(comps)

    def local(unit: Unit, q1: float, q2: float) -> tuple[np.ndarray, np.ndarray]:
        table = _exchangeable(unit, q1, q2)
        mean = np.array([_product_mean(table, _counts(c)) for c in comps])
        second = np.array([[_product_mean(table, _counts(c, d)) for d in comps] for c in comps])
        return mean, second - np.outer(mean, mean)

    _, sigma = local(IDENTITY, float(net.input_q1), float(net.input_q2))
    k = len(pairs)
    sigma[k:, :] = 0.0  # the inputs' X^0 is the kernel only
    sigma[:, k:] = 0.0
    cov = {(0, 0): sigma / widths[0]}
    means = {}
    L = net.depth
    for j in range(1, L):
        q1, q2 = float(op.layers[j].q1), float(op.layers[j].q2)
        unit = Unit.of(net.phi(j))
        means[j], sigma = local(unit, q1, q2)
        slopes = _slopes(unit, q1, q2)
        J = np.zeros((size, size))  # d X^j / d X^{j-1}, through Q^j = sigma_w^2 K^{j-1} (the phi phi half) + sigma_b^2
        J[:, :len(pairs)] = slope_jacobian(comps, pairs, slopes) * float(net.sigma_w2[j - 1])
        cov[(j, j)] = sigma / widths[j] + J @ cov[(j - 1, j - 1)] @ J.T
        for i in range(j):
            cov[(j, i)] = J @ cov[(j - 1, i)]
            cov[(i, j)] = cov[(j, i)].T
    return dict(cov=cov, means=means, pairs=pairs, op=op, widths=widths)


def check_entry(name: str, entry: Any) -> tuple[int, int, int, int]:
    """An entry (k, l, t, s) of the Gram as four ints, or InvalidArgument naming ``name``.

    Example:
        >>> check_entry("first", (0, 1, 0, 2))
        (0, 1, 0, 2)
    """
    try:
        if len(entry) != 4:
            raise ValueError
        k, l, t, s = (int(v) for v in entry)
    except (TypeError, ValueError):
        raise InvalidArgument(name, entry, "an entry (k, l, t, s): output labels k, l and sample labels t, s "
                              "(equal labels mean the same output or sample)") from None
    return k, l, t, s


def _covariance(net: Any, width: int, samples: int, first: tuple, second: tuple,
                layers: Any = None) -> tuple[float, float, float]:
    """(Cov(T G_first, T G_second), E T G_first, E T G_second) to first order in 1/M (module docstring), restricted
    to the parameter blocks of ``layers`` (1..L; None: all)."""
    labels = sorted({first[2], first[3], second[2], second[3]})
    fw = _forward(net, width, samples, len(labels))
    op = fw["op"]

    def noise_mean(m: int, p1: tuple, p2: tuple) -> float:  # E of the fresh backward weights' product at layer m
        table = _exchangeable(Unit.of(net.phi(m)), float(op.layers[m].q1), float(op.layers[m].q2))
        return _product_mean(table, _counts((1,) + p1, (1,) + p2))

    return entry_covariance(first, second, sigma_w2=net.sigma_w2, widths=fw["widths"], op=op, pairs=fw["pairs"],
                            cov=fw["cov"], slope_means=fw["means"], noise_mean=noise_mean, layers=layers)


def entry_covariance(first: tuple, second: tuple, *, sigma_w2: Any, widths: Any, op: Any, pairs: list, cov: dict,
                     slope_means: Any, noise_mean: Any, layers: Any = None) -> tuple[float, float, float]:
    """(Cov(T G_first, T G_second), E T G_first, E T G_second): the first-order sum over layers of the module docstring.

    Shared by the plain engine and the one through layer norms (:mod:`meanfield.finite.fourpoint_layernorm`), which
    differ only in the forward statistics they pass: ``cov[(j, m)]`` the covariances of the realized kernel and slope
    averages of layers j and m (indices: the kernel of pair p at ``pairs.index(p)``, its slope at ``len(pairs)`` more),
    ``slope_means[m]`` their means, and ``noise_mean(m, p1, p2)`` the mean of the fresh backward weights' product at
    layer m (per unit, times any normalization scale). ``op`` gives the mean-field qhat's for the forward means.
    ``layers`` (a collection of layer indices 1..L, None for all) restricts T G to those layers' parameter blocks,
    T G = sum_{j in layers} A_j B_j: the covariance is bilinear in the layers, so the blocks of a split add up with
    their cross terms (the pairs j, j' on different sides).

    Example:
        >>> from meanfield.spec.network import Network
        >>> net = Network(2, "relu", 2, 0.1)
        >>> v, m1, m2 = _covariance(net, 64, 1, (0, 0, 0, 1), (0, 0, 0, 1))
        >>> v > 0 and m1 == m2
        True
    """
    labels = sorted({first[2], first[3], second[2], second[3]})
    relabel = {x: i for i, x in enumerate(labels)}
    npair = len(pairs)
    sw = [float(g) for g in sigma_w2]
    L = len(sw)  # one weight variance per layer

    def pair(t: int, s: int) -> tuple:
        a, b = sorted((relabel[t], relabel[s]))
        return a, b

    def kernel(p: tuple) -> int:
        return pairs.index(p)

    def slope(p: tuple) -> int:
        return npair + pairs.index(p)

    def c(m: int, p: tuple) -> float:  # E[phi'_a phi'_b] at layer m
        return float(slope_means[m][slope(p)])

    def abar(j: int, x: tuple, y: tuple) -> float:  # E[delta^j_x . delta^j_y], x = (output, sample)
        if x[0] != y[0]:
            return 0.0
        p = pair(x[1], y[1])
        return math.prod(sw[m] * c(m, p) for m in range(j, L))

    def entry(e: tuple) -> dict:
        k, l, t, s = e
        x, y, p = (k, t), (l, s), pair(t, s)
        qhat = "qhat1" if p[0] == p[1] else "qhat2"
        return dict(x=x, y=y, p=p, abar={j: abar(j, x, y) for j in range(1, L + 1)},
                    bbar={j: widths[j - 1] * float(getattr(op.layers[j - 1], qhat)) + 1.0 for j in range(1, L + 1)})

    E1, E2 = entry(first), entry(second)

    def noise(m: int) -> float:  # Cov(xi_m(first), xi_m(second)): the fresh backward weights W^{m+1}
        x, y, x2, y2 = E1["x"], E1["y"], E2["x"], E2["y"]
        pairing = abar(m + 1, x, x2) * abar(m + 1, y, y2) + abar(m + 1, x, y2) * abar(m + 1, y, x2)
        return sw[m] ** 2 * noise_mean(m, E1["p"], E2["p"]) * pairing / widths[m] if pairing else 0.0

    noises = {m: noise(m) for m in range(1, L)}

    def propagated(E: dict, j: int, m: int) -> float:  # E[A_j | layer m] / A_m: the gains of layers j .. m - 1
        return math.prod(sw[i] * c(i, E["p"]) for i in range(j, m))

    def cov_nn(j: int, jp: int) -> float:  # Cov(N_j(first), N_j'(second)), N the accumulated backward noise
        return sum(propagated(E1, j, m) * propagated(E2, jp, m) * noises[m] for m in range(max(j, jp), L))

    def cov_bb(j: int, jp: int) -> float:  # Cov(B_j(first), B_j'(second))
        return widths[j - 1] * widths[jp - 1] * float(cov[(j - 1, jp - 1)][kernel(E1["p"]), kernel(E2["p"])])

    def cov_ba(EB: dict, j: int, EA: dict, jp: int) -> float:  # Cov(B_j, a_j'): a_j' = abar (1 + sum_m dcbar_m / c_m)
        if not EA["abar"][jp]:
            return 0.0
        total = sum(float(cov[(j - 1, m)][kernel(EB["p"]), slope(EA["p"])]) / c(m, EA["p"]) for m in range(jp, L))
        return widths[j - 1] * EA["abar"][jp] * total

    def cov_aa(j: int, jp: int) -> float:
        a1, a2 = E1["abar"][j], E2["abar"][jp]
        if not (a1 and a2):
            return 0.0
        return a1 * a2 * sum(float(cov[(m, mp)][slope(E1["p"]), slope(E2["p"])]) / (c(m, E1["p"]) * c(mp, E2["p"]))
                             for m in range(j, L) for mp in range(jp, L))

    total = 0.0
    chosen = range(1, L + 1) if layers is None else sorted(set(int(j) for j in layers) & set(range(1, L + 1)))
    for j in chosen:
        for jp in chosen:
            a1, a2, b1, b2 = E1["abar"][j], E2["abar"][jp], E1["bbar"][j], E2["bbar"][jp]
            bb = cov_bb(j, jp)
            total += ((b1 * b2 + bb) * cov_nn(j, jp) + a1 * a2 * bb + a1 * b2 * cov_ba(E1, j, E2, jp)
                      + b1 * a2 * cov_ba(E2, jp, E1, j) + b1 * b2 * cov_aa(j, jp))
    mean1 = sum(E1["abar"][j] * E1["bbar"][j] for j in chosen)
    mean2 = sum(E2["abar"][j] * E2["bbar"][j] for j in chosen)
    return total, mean1, mean2


@dataclass(frozen=True)
class SameOutputVariance:
    """Var(T G_kk(t, s)) of one output's Gram entries over weights and inputs: ``offdiag`` (t != s) and ``diag``
    (t = s), with the means ``mean_offdiag`` and ``mean_diag`` of T G_kk to the same order (mean field)."""

    width: int
    samples: int
    offdiag: float
    diag: float
    mean_offdiag: float
    mean_diag: float

    def _repr_latex_(self) -> str:
        return (rf"$\mathrm{{Var}}(T G_{{kk}}(t,s)) = {self.offdiag:.6g},\ \mathrm{{Var}}(T G_{{kk}}(t,t)) = "
                rf"{self.diag:.6g}\quad (M = {self.width},\ T = {self.samples})$")

    def __str__(self) -> str:
        return (f"same-output Gram entries at M={self.width}, T={self.samples}: T G_kk(t,s) = {self.mean_offdiag:.6g} "
                f"+- sqrt({self.offdiag:.6g}) (t != s), T G_kk(t,t) = {self.mean_diag:.6g} +- sqrt({self.diag:.6g})")


def _check_plain(net: Any, width: Any, samples: Any, outputs: int) -> tuple[int, int]:
    from ..spec.network import Network

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.norms:
        raise InvalidArgument("net", net.describe(), "a network without normalization layers",
                              "the derivation covers plain networks; the model measures the others")
    if net.outputs < outputs:
        raise InvalidArgument("net", net.describe(), f"C >= {outputs} outputs")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")
    return check_int("width", width, minimum=1), check_int("samples", samples, minimum=1)


def same_output_variance(net: Any, width: int, samples: int) -> SameOutputVariance:
    """Derived variance of one output's Gram entries over weights and inputs (module docstring).

    Args:
        net: a :class:`~meanfield.spec.network.Network` without normalization layers.
        width: M.
        samples: T.

    Returns:
        :class:`SameOutputVariance`.

    Example:
        >>> from meanfield.spec.network import Network
        >>> v = same_output_variance(Network(2, "relu", 2, 0), 64, 8)
        >>> round(v.mean_diag, 6)       # E[T G_tt] = (|h^1|^2 + 1) (output layer) + qtilde_1 (|x|^2 + 1) = 65 + 65
        130.0
    """

    M, T = _check_plain(net, width, samples, 1)
    off, mean_off, _ = _covariance(net, M, T, (0, 0, 0, 1), (0, 0, 0, 1))
    diag, mean_diag, _ = _covariance(net, M, T, (0, 0, 0, 0), (0, 0, 0, 0))
    return SameOutputVariance(M, T, off, diag, mean_off, mean_diag)


def cross_output_variance(net: Any, width: int, samples: int) -> CrossOutputVariance:
    """Derived variance of the Gram entries between two different outputs (module docstring).

    Args:
        net: a :class:`~meanfield.spec.network.Network` without normalization layers and with C >= 2 outputs.
        width: M.
        samples: T (the batch size; enters only through the averaging over a block's entries).

    Returns:
        :class:`CrossOutputVariance`.

    Example:
        >>> from meanfield.spec.network import Network
        >>> v = cross_output_variance(Network(2, "relu", 2, 0, outputs=2), 64, 8)
        >>> round(v.diag, 6)   # one hidden layer: sigma_w^4 E[step^4] / M x E[(|x|^2 + 1)^2] = 4 (1/2) / 64 x (65^2 + 2 x 64)
        136.03125
    """
    M, T = _check_plain(net, width, samples, 2)
    off = _covariance(net, M, T, (0, 1, 0, 1), (0, 1, 0, 1))[0]
    diag = _covariance(net, M, T, (0, 1, 0, 0), (0, 1, 0, 0))[0]
    from ..theory.fisher import predict

    gd = float(predict(net, M, T).gram_diag)
    mean_square = ((T - 1) * off + diag) / T / T**2  # E[G_kl^2] over the block's entries, G = (T G) / T
    return CrossOutputVariance(M, T, off, diag, gd, M * mean_square / gd**2)



def gram_covariance(net: Any, width: int, first: Any, second: Any) -> float:
    """Cov(T G_first, T G_second) over weights and inputs, to leading order in 1/M (module docstring).

    An entry is (k, l, t, s): G_kl(t, s) between outputs k, l and samples t, s; equal labels mean the same
    output or the same sample, different labels different ones (the inputs are exchangeable, so only the
    pattern of equalities matters). For example ((0, 0, 0, 1), (0, 0, 0, 2)) is the covariance of two entries
    of one output's Gram that share a sample, and ((0, 0, 0, 1), (0, 0, 2, 3)) is the draw-to-draw variance of
    the weights' mean kernel.

    Args:
        net: a :class:`~meanfield.spec.network.Network` without normalization layers.
        width: M.
        first, second: the two entries.

    Returns:
        the covariance (float).

    Example:
        >>> from meanfield.spec.network import Network
        >>> net = Network(3, "relu", 2, 0)
        >>> v = same_output_variance(net, 64, 8).offdiag
        >>> round(gram_covariance(net, 64, (0, 0, 0, 1), (0, 0, 0, 1)) / v, 12)
        1.0
    """
    M, _ = _check_plain(net, width, 1, 1)
    e1, e2 = check_entry("first", first), check_entry("second", second)
    if min(e1 + e2) < 0:
        raise InvalidArgument("first, second", (first, second), "non-negative labels")
    if len(set(e1[:2] + e2[:2])) > net.outputs:
        raise InvalidArgument("first, second", (first, second), f"at most C = {net.outputs} different output labels")
    return _covariance(net, M, 1, e1, e2)[0]


@dataclass(frozen=True)
class BulkFluctuations:
    """One output's gradients g(x) = d f_k / d theta over the input distribution, given the weights: their
    covariance Sigma_W = Cov_x(g) and the projection on the mean mu_W = E_x g, averaged over the weights
    (units of T G, i.e. of g . g'). These set the bulk and spike of the centred Gram (``derivations/rmt.md``).

    Attributes:
        width: M.
        trace_sigma2: E_W tr(Sigma_W^2) (the off-diagonal second moment of the centred Gram is this / T^2).
        mean_direction: E_W Var_x(mu_W . g(x)) (the spike: the per-sample position along the mean gradient).
        diagonal: E_W Var_x(|g(x) - mu_W|^2) (the centred Gram's diagonal, per-sample norm fluctuations).
        d: E[T G_tt] - E[T G_ts] (t != s), the bulk scale.
        o: E[T G_ts] (t != s).
    """

    width: int
    trace_sigma2: float
    mean_direction: float
    diagonal: float
    d: float
    o: float

    @property
    def block2(self) -> float:
        """M p2 / d^2 with p2 = tr(Sigma^2) / T^2 (Gram units): the bulk's second free cumulant per sample."""
        return self.width * self.trace_sigma2 / self.d**2

    @property
    def spike(self) -> float:
        """M ell / o with ell = Var_x(mu . g) / (T o) (Gram units): the population spike of the mean direction."""
        return self.width * self.mean_direction / self.o**2 if self.o > 0 else 0.0

    @property
    def semicircle(self) -> float:
        """M sigma_D^2 / d^2: the centred diagonal's variance beyond a Wishart's own (2 p2)."""
        return self.width * self.diagonal / self.d**2 - 2.0 * self.block2

    def __str__(self) -> str:
        return (f"bulk fluctuations at M={self.width}: tr Sigma^2 = {self.trace_sigma2:.6g}, Var(mu . g) = "
                f"{self.mean_direction:.6g}, Var|g - mu|^2 = {self.diagonal:.6g}; block2 = {self.block2:.4g}, "
                f"spike = {self.spike:.4g}, semicircle = {self.semicircle:.4g}")

    def _repr_latex_(self) -> str:
        return (rf"$\mathbb{{E}}\,\mathrm{{tr}}\,\Sigma^2 = {self.trace_sigma2:.6g},\ "
                rf"\mathrm{{Var}}(\mu\cdot g) = {self.mean_direction:.6g},\ "
                rf"\mathrm{{Var}}|g-\mu|^2 = {self.diagonal:.6g}\quad (M = {self.width})$")


def bulk_estimates(block: Any) -> tuple[float, float, float]:
    """Unbiased estimates, from one sampled draw, of what :func:`bulk_fluctuations` derives (given that draw's weights).

    ``block`` is one output's T x T block of T G (T >= 4). With distinct samples, E[K_ts^2] - 2 E[K_ts K_tu] +
    E[K_ts K_uv] = tr Sigma^2 and E[K_ts K_tu] - E[K_ts K_uv] = Var(m) given the weights, and each expectation has
    an unbiased U-statistic over the ordered distinct index tuples of the batch (likewise for Var|c|^2).

    Returns:
        (tr Sigma_W^2, Var_x(mu . g), Var_x|g - mu|^2) for this draw.

    Example:
        >>> K = np.ones((5, 5))          # every gradient equal: no fluctuation
        >>> [round(v, 12) for v in bulk_estimates(K)]
        [0.0, 0.0, 0.0]
    """
    K = np.asarray(block, dtype=float)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 4:
        raise InvalidArgument("block", getattr(K, "shape", K), "a square T x T block with T >= 4")
    T = K.shape[0]
    d = np.diag(K).copy()
    A = K - np.diag(d)
    row = A.sum(axis=1)
    total, s2 = A.sum(), (A * A).sum()
    s3 = (row * row).sum() - s2  # sum over distinct t, s, u of K_ts K_tu (K symmetric)
    s4 = total * total - 2.0 * s2 - 4.0 * s3  # over disjoint ordered pairs
    n2, n3, n4 = T * (T - 1), T * (T - 1) * (T - 2), T * (T - 1) * (T - 2) * (T - 3)
    e2, e3, e4 = s2 / n2, s3 / n3, s4 / n4
    var_m = e3 - e4
    var_k = (d * d).mean() - (d.sum() ** 2 - (d * d).sum()) / n2
    cov_km = (d * row).sum() / n2 - (d * (total - 2.0 * row)).sum() / n3
    return float(e2 - 2.0 * e3 + e4), float(var_m), float(var_k - 4.0 * cov_km + 4.0 * var_m)


def bulk_fluctuations(net: Any, width: int) -> BulkFluctuations:
    """Derived within-draw fluctuations of one output's gradients (:class:`BulkFluctuations`).

    Given the weights the inputs are iid, so with c(x) = g(x) - mu: E_x[(c_t . c_s)^2] = tr(Sigma^2) and, by the
    Hoeffding decomposition of the kernel K(t, s) = g_t . g_s into mu.mu + m(t) + m(s) + c_t . c_s
    (m(t) = mu . c_t), averaged over weights:

        tr Sigma^2     = Cov(K_ts, K_ts) - 2 Cov(K_ts, K_tu) + Cov(K_ts, K_uv),
        Var(m)         = Cov(K_ts, K_tu) - Cov(K_ts, K_uv),
        Var|c|^2       = [Cov(K_tt, K_tt) - Cov(K_tt, K_uu)] - 4 [Cov(K_tt, K_ts) - Cov(K_tt, K_su)] + 4 Var(m),

    (t, s, u, v distinct), each covariance from :func:`gram_covariance`.

    Example:
        >>> from meanfield.spec.network import Network
        >>> b = bulk_fluctuations(Network(3, "relu", 2, 0), 64)
        >>> 0 < b.block2 < 1 and b.spike > 0
        True
    """
    M, _ = _check_plain(net, width, 1, 1)
    return _bulk(net, M, None)


def block_bulk_fluctuations(net: Any, width: int, layers: Any) -> BulkFluctuations:
    """:func:`bulk_fluctuations` restricted to the parameter blocks of ``layers``: g = the gradient in the weights and
    biases of those layers only (T G = sum_{j in layers} A_j B_j, module docstring), same first-order rules.

    The engine's value of a block, so that a block carried to a higher order (for instance the top two layers,
    :func:`meanfield.finite.fourpoint_deep.top_blocks_next_order`) can replace its first order consistently: the
    whole tr Sigma^2 minus this block's first order is the rest's first order (the other blocks and the cross terms).
    ``d`` and ``o`` are the restricted kernel's means.

    Args:
        net: a :class:`~meanfield.spec.network.Network` without normalization layers.
        width: M.
        layers: a non-empty collection of layer indices in 1..L (L the output layer).

    Raises:
        InvalidArgument: as :func:`bulk_fluctuations`, or layers empty or out of range.

    Example:
        >>> from meanfield.spec.network import Network
        >>> net = Network(2, "relu", 2, 0)
        >>> round(block_bulk_fluctuations(net, 64, (1, 2)).trace_sigma2 / bulk_fluctuations(net, 64).trace_sigma2, 12)
        1.0
    """
    M, _ = _check_plain(net, width, 1, 1)
    try:
        chosen = tuple(sorted({int(j) for j in layers}))
    except (TypeError, ValueError):
        raise InvalidArgument("layers", layers, "a collection of layer indices 1..L") from None
    if not chosen or chosen[0] < 1 or chosen[-1] > net.depth:
        raise InvalidArgument("layers", layers, f"a non-empty collection of layer indices in 1..{net.depth}")
    return _bulk(net, M, chosen)


def _bulk(net: Any, M: int, layers: Any) -> BulkFluctuations:
    def cov(e1: tuple, e2: tuple) -> float:
        return _covariance(net, M, 1, e1, e2, layers)[0]

    ts = (0, 0, 0, 1)
    same, _, mean_off = _covariance(net, M, 1, ts, ts, layers)
    one, none = cov(ts, (0, 0, 0, 2)), cov(ts, (0, 0, 2, 3))
    tt = (0, 0, 0, 0)
    dsame, mean_diag, _ = _covariance(net, M, 1, tt, tt, layers)
    dnone = cov(tt, (0, 0, 1, 1))
    xone, xnone = cov(tt, ts), cov(tt, (0, 0, 1, 2))
    mean_direction = one - none
    diagonal = (dsame - dnone) - 4.0 * (xone - xnone) + 4.0 * mean_direction
    return BulkFluctuations(M, same - 2.0 * one + none, mean_direction, diagonal, mean_diag - mean_off, mean_off)


def set_partitions(n: int) -> tuple:
    """(l_1, ..., l_n) with l_1 = 0, l_i <= 1 + max(l_1..l_{i-1}): the set partitions of n positions as restricted
    growth strings (blocks numbered in order of appearance), in lexicographic order.

    For n = 4: the 15 patterns of equal samples among four indices (t, s, u, v), each once, canonically labelled.

    Raises:
        InvalidArgument: n not an integer in 1..10.

    Example:
        >>> len(set_partitions(4)), set_partitions(3)
        (15, ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, 2)))
    """
    return _set_partitions(check_int("n", n, minimum=1, maximum=10))


@functools.lru_cache(maxsize=8)
def _set_partitions(n: int) -> tuple:
    def grow(prefix: tuple) -> list:
        if len(prefix) == n:
            return [prefix]
        return [p for b in range(max(prefix, default=-1) + 2) for p in grow(prefix + (b,))]
    return tuple(grow(()))


def slope_jacobian(comps: Any, pairs: Any, slopes: dict) -> np.ndarray:
    """d X / d Q over the components (kind, a, b) of X (kind 0: phi_a phi_b, 1: phi'_a phi'_b) and the kernel pairs:
    ``slopes[kind]`` = (d/dq of the one-sample mean, d/dq_aa and d/dq_ab of the two-sample mean).

    Example:
        >>> slope_jacobian([(0, 0, 0), (0, 0, 1)], [(0, 0), (0, 1), (1, 1)], {0: (1.0, 0.5, 2.0)})
        array([[1. , 0. , 0. ],
               [0.5, 2. , 0.5]])
    """
    pairs = list(pairs)
    J = np.zeros((len(comps), len(pairs)))
    for r, (kind, a, b) in enumerate(comps):
        single, diag, cross = slopes[kind]
        if a == b:
            J[r, pairs.index((a, a))] = single
        else:
            J[r, pairs.index((a, a))] = J[r, pairs.index((b, b))] = diag
            J[r, pairs.index((a, b))] = cross
    return J


def label_classes(fixed: int) -> tuple:
    """((labels, new), ...): the label classes of four positions given ``fixed`` distinct fixed labels 0..fixed-1;
    each position takes a fixed label or a new one (new labels numbered fixed, fixed + 1, ... in order of appearance),
    ``new`` the number of new labels (with no fixed label: :func:`set_partitions` of four).

    Example:
        >>> len(label_classes(0)), len(label_classes(2)), label_classes(1)[:2]
        (15, 151, (((0, 0, 0, 0), 0), ((0, 0, 0, 1), 1)))
    """
    return _label_classes(check_int("fixed", fixed, minimum=0, maximum=4))


@functools.lru_cache(maxsize=8)
def _label_classes(nfixed: int) -> tuple:
    out = []

    def grow(prefix: tuple, new: int) -> None:
        if len(prefix) == 4:
            out.append((prefix, new))
            return
        for x in range(nfixed + new + 1):
            grow(prefix + (x,), new + (x == nfixed + new))
    grow((), 0)
    return tuple(out)


def index_patterns(T: int) -> tuple:
    """((labels, T (T - 1) ... (T - b + 1)), ...): the patterns of equal samples among four indices over a batch of T
    (:func:`set_partitions`, b = max(labels) + 1 <= T blocks), each with its number of index tuples.

    A sum over the T^4 index tuples of an exchangeable tensor is the sum over these of count times its value.

    Raises:
        InvalidArgument: T not an integer >= 1.

    Example:
        >>> index_patterns(2)[:3], len(index_patterns(2))
        ((((0, 0, 0, 0), 2), ((0, 0, 0, 1), 2), ((0, 0, 1, 0), 2)), 8)
        >>> sum(count for _, count in index_patterns(5))
        625
    """
    T = check_int("T", T, minimum=1)
    return tuple((labels, math.prod(T - i for i in range(max(labels) + 1))) for labels in set_partitions(4)
                 if max(labels) + 1 <= T)


def _block_sum_covariance(net: Any, M: int, T: int, first: tuple, second: tuple) -> float:
    """Cov(sum_{t,s} T G_first(t, s), sum_{u,v} T G_second(u, v)) over a batch of T: the four indices' patterns of
    equal samples (set partitions), each weighted by its number T (T-1) ... of label assignments."""
    total = 0.0
    for labels, count in index_patterns(T):
        total += count * _covariance(net, M, T, first + labels[:2], second + labels[2:])[0]
    return total


@dataclass(frozen=True)
class OutlierFluctuations:
    """The C x C outlier matrix O_kl = 1^T G_kl 1 / T of a network without output normalization (Gram units).

    Attributes:
        width, samples: M, T.
        mean: E O_kk = gram_diag + (T - 1) gram_offdiag (mean field).
        self_variance: Var(O_kk) - Cov(O_kk, O_ll) (k != l): the per-output part of the diagonal's fluctuation
            (the common part moves all outliers together and does not split them).
        cross_square: E[O_kl^2], k != l.
    """

    width: int
    samples: int
    mean: float
    self_variance: float
    cross_square: float

    @property
    def outlier_self(self) -> float:
        """M self_variance / mean^2 (the diagonal variance of the Gaussian C x C model, times M)."""
        return self.width * self.self_variance / self.mean**2

    @property
    def outlier_cross(self) -> float:
        """M cross_square / mean^2 (its off-diagonal variance, times M)."""
        return self.width * self.cross_square / self.mean**2

    def __str__(self) -> str:
        return (f"outliers at M={self.width}, T={self.samples}: E O_kk = {self.mean:.6g}, M Var_self / O^2 = "
                f"{self.outlier_self:.4g}, M E O_kl^2 / O^2 = {self.outlier_cross:.4g}")

    def _repr_latex_(self) -> str:
        return (rf"$\bar O = {self.mean:.6g},\ M\,\mathrm{{Var}}_\text{{self}}/\bar O^2 = {self.outlier_self:.4g},\ "
                rf"M\,\mathbb{{E}} O_{{kl}}^2/\bar O^2 = {self.outlier_cross:.4g}"
                rf"\quad (M = {self.width},\ T = {self.samples})$")


def outlier_fluctuations(net: Any, width: int, samples: int) -> OutlierFluctuations:
    """Derived fluctuations of the C x C outlier matrix O_kl = 1^T G_kl 1 / T at a batch of T (exact in T).

    O_kl = T^-2 sum_{t,s} T G_kl(t, s), so its (co)variances are sums over the 15 patterns of equal samples among
    (t, s, u, v) of :func:`gram_covariance`, each counted T (T - 1) ... times.

    Args:
        net: a network without normalization layers and with C >= 2 outputs.
        width: M.
        samples: T.

    Example:
        >>> from meanfield.spec.network import Network
        >>> o = outlier_fluctuations(Network(3, "relu", 2, 0, outputs=3), 64, 32)
        >>> o.self_variance > 0 and o.cross_square > 0
        True
    """
    M, T = _check_plain(net, width, samples, 2)
    _, mean_diag, _ = _covariance(net, M, T, (0, 0, 0, 0), (0, 0, 0, 0))
    _, mean_off, _ = _covariance(net, M, T, (0, 0, 0, 1), (0, 0, 0, 1))
    same = _block_sum_covariance(net, M, T, (0, 0), (0, 0))
    other = _block_sum_covariance(net, M, T, (0, 0), (1, 1))
    cross = _block_sum_covariance(net, M, T, (0, 1), (0, 1))
    mean = (mean_diag + (T - 1) * mean_off) / T
    return OutlierFluctuations(M, T, mean, (same - other) / T**4, cross / T**4)
