"""The next order of the output-weight block of tr Sigma^2 for L >= 3, by conditioning on the layers below.

:func:`meanfield.finite.fourpoint.bulk_fluctuations` gives E_W tr Sigma_W^2 (one output's gradients over the inputs)
to leading order in 1/M; :mod:`meanfield.finite.fourpoint_next` makes it exact for one hidden layer. Here the block of
the output weights, tr Cov_x(h)^2 (h = h^{L-1} the last hidden layer's features), of a plain network with L >= 3 is
carried to the next order, O(1) absolute against its O(M), by conditioning on the layer below: given the realized
kernel K of four inputs at layer L - 2 (K_ab = h^{L-2}(x_a) . h^{L-2}(x_b) / M_{L-2}) the last layer's M units are
i.i.d., so

    E tr Cov_x(h)^2 = M E[Psi(K)] + M (M - 1) E[Phi(K)],
    Phi = F_12^2 - 2 F_12 F_13 + F_12 F_34,   E[Phi] = Cov(F_12, F_12) - 2 Cov(F_12, F_13) + Cov(F_12, F_34),

F_ab = E[phi(u_a) phi(u_b)] the two-point mean at the preactivation covariance sigma_w^2 K + sigma_b^2, Psi one
unit's E[(phi_1^2 - phi_1 phi_2)(phi_3^2 - phi_3 phi_4)] (exchangeable inputs: the means of F_12, F_13, F_34 agree, so
Phi's linear part averages to zero). E[Psi] is needed to O(1/M) (Psi at the mean-field kernel, its slope times the
mean's O(1/M) shift, its curvature contracted with the first-order covariance of K); Cov(F_A, F_B) to O(1/M^2): with
J, H, T the derivatives of F at the exact mean of K (three entries K_aa, K_bb, K_ab per pair), K's covariance C (to
O(1/M^2)) and third cumulant kappa (O(1/M^2)), Gaussian pairing for the fourth moments,

    Cov(F_A, F_B) = J_A C_AB J_B + 1/2 (J_A H_B kappa_ABB + H_A J_B kappa_AAB) + 1/2 H_A H_B C_AB C_AB
                    + 1/2 (J_A T_B C_AB C_BB + T_A J_B C_AB C_AA) + O(M^-3).

K's statistics come up layer by layer from the inputs' Gram Q = X X^T / M_0 (a sample mean over M_0 i.i.d. Gaussian
coordinates: mean q I, covariance 2 q^2 tr(A B) / M_0, third cumulant 8 q^3 tr(A B C) / M_0^2 for the entries'
symmetric matrices A, B, C). One layer up, given the layer below (K_low) the M_l units are i.i.d.: the realized kernel is
a sample mean of the unit products v_ab = phi(u_a) phi(u_b) with mean mu(K_low), covariance Sigma(K_low) / M_l and
third cumulant kappa_u / M_l^2, and the law of total cumulance expanded to second order around K_low's exact mean gives

    mean  = mu + 1/2 H : C_low,
    C     = (Sigma + 1/2 C_low : Sigma'') / M_l + J C_low J^T + (J H kappa_low + 1/2 H H C_low C_low
            + 1/2 J T C_low C_low, each with its transpose),
    kappa = kappa_u / M_l^2 + (J C_low Sigma' + 2 permutations) / M_l + J J J kappa_low + (J C_low H C_low J + 2 perms),

J, H, T now the derivatives of mu. Every Gaussian integral is taken at an exchangeable covariance (all variances
equal, all covariances equal), where u_a = c z + sigma e_a, and every derivative in the covariance by Price's theorem
(d/dS_ab E f = E d_a d_b f, d/dS_aa = 1/2 E d_a^2 f) with Stein's identity E_e[g^(k)(cz + sigma e)] =
E_e[g(cz + sigma e) He_k(e)] / sigma^k: no finite differences, any phi (:func:`exchangeable_moment`).

Checks (``tests/test_fourpoint_next.py``, ``meanfield/notes/rmt.md``): the first order equals the block of
:func:`meanfield.finite.fourpoint.bulk_fluctuations`'s realized-kernel recursion; a linear network's exact Wick value
3 M + 3 + 3 / M (L = 3, sigma_w^2 = q = 1) to O(1/M); sampled relu and tanh networks at L = 3 and 4. The top two
layers' blocks (:func:`top_blocks_next_order`, tr Sigma^2 and the spike) replace their own four-point first order in
:func:`meanfield.finite.fourpoint_next.top_corrected_bulk`, which the model uses; for L = 3 the first layer's block
and its cross terms are carried there too (:mod:`meanfield.finite.fourpoint_lower`, by the same conditioning one
layer down with :func:`total_cumulants` and :func:`smooth_covariance`), and for L >= 4 layer L - 2's block and its
cross terms the same way; the blocks below L - 2 of L >= 4 and the centred norms stay at the first order. The top
blocks' next order is exact at O(1) for a linear network at L = 4 and 5 too
(:func:`meanfield.finite.linear_wick.linear_trace_sigma2`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int, check_real
from ..integrals.quadrature import Unit, breaks, normal_rule

__all__ = ["OutputBlock", "output_block_next_order", "top_blocks_next_order", "exchangeable_moment", "stein_table",
           "kernel_cumulants", "total_cumulants", "smooth_covariance", "KERNEL_ENTRIES"]

_PAIRS = tuple((a, b) for a in range(4) for b in range(a, 4))   # the ten entries of a 4 x 4 kernel
_INDEX = {p: i for i, p in enumerate(_PAIRS)}
KERNEL_ENTRIES = _PAIRS                                         # the order of the kernels' entries (public)
_PMAX, _KMAX = 6, 8   # powers of phi per sample (three products phi_a phi_b) and derivative orders (Price)
_Z = 48               # Gauss-Hermite nodes for the shared variable z (the conditional moments are smooth in z: 3e-8)


def _hermite_e(e: np.ndarray, kmax: int) -> list:
    out = [np.ones_like(e), e]
    for k in range(1, kmax):
        out.append(e * out[k] - k * out[k - 1])
    return out


def _nodes(unit: Unit, q1: float, q2: float) -> tuple:
    """(z weights, e nodes, e weights, u = c z + sigma e, sigma) of the exchangeable point (c^2 = q2, sigma^2 = q1 - q2):
    Gauss-Hermite in the common part z, the unit's piecewise rule in the own part e."""
    if not (q1 > q2 >= 0.0):
        raise InvalidArgument("net", (q1, q2), "an exchangeable covariance with q1 > q2 >= 0")
    c, s = math.sqrt(q2), math.sqrt(q1 - q2)
    if c > 0:
        x, w = np.polynomial.hermite_e.hermegauss(_Z)
        z, wz = x, w / w.sum()
    else:
        z, wz = np.zeros(1), np.ones(1)
    e, we = normal_rule(breaks(unit, c * z, s))
    return wz, e, we, c * z[:, None] + s * e, s


@functools.lru_cache(maxsize=64)
def _table(unit: Unit, q1: float, q2: float) -> tuple:
    """The z weights and E_e[phi(c z + sigma e)^p He_k(e)] / sigma^k per z node (c^2 = q2, sigma^2 = q1 - q2)."""
    wz, e, we, u, s = _nodes(unit, q1, q2)
    f = unit.f(u)
    he = _hermite_e(e, _KMAX)
    powers = [np.ones_like(f)]
    for _ in range(_PMAX):
        powers.append(powers[-1] * f)
    tab = {(p, k): (we * powers[p] * he[k]).sum(axis=1) / s**k for p in range(_PMAX + 1) for k in range(_KMAX + 1)}
    return wz, tab


def _moment(tab: tuple, pk: Any) -> float:
    wz, t = tab
    acc = np.ones_like(wz)
    for p, k in pk:
        if p or k:
            acc = acc * t[(p, k)]
    return float(wz @ acc)


def _deriv(tab: tuple, powers: tuple, entries: tuple, scale: float) -> float:
    """d^n / dK_e1 .. dK_en of E[prod_a phi(u_a)^powers[a]], u ~ N(0, scale K + const) at the table's exchangeable
    point (Price: each entry (a, b) differentiates samples a and b once, a diagonal one with a factor 1/2)."""
    k = [0] * len(powers)
    factor = scale ** len(entries)
    for a, b in entries:
        k[a] += 1
        k[b] += 1
        if a == b:
            factor *= 0.5
    return factor * _moment(tab, list(zip(powers, k)))


@functools.lru_cache(maxsize=64)
def _table2(unit: Unit, q1: float, q2: float) -> tuple:
    """As :func:`_table` for products phi^p phi'^r: E_e[phi^p phi'^r (c z + sigma e) He_k(e)] / sigma^k per z node
    (p, r <= 4, k <= 6: two kernel entries per sample and up to three derivatives in one entry)."""
    wz, arr = _stein_table(unit, float(q1), float(q2), 4, 4, 6)
    return wz, {(p, r, k): arr[p, r, k] for p in range(5) for r in range(5) for k in range(7)}


def stein_table(unit: Unit, q1: float, q2: float, pmax: int, rmax: int, kmax: int) -> tuple:
    """(z weights, array A[p, r, k, z]) with A = E_e[phi^p phi'^r (c z + sigma e) He_k(e)] / sigma^k at the exchangeable
    point c^2 = q2, sigma^2 = q1 - q2 (Stein: the k-th derivative's mean), exactly 1 at p = r = k = 0 and 0 at
    p = r = 0 < k (a derivative of a constant).

    Example:
        >>> from meanfield.spec.network import Network
        >>> wz, A = stein_table(Unit.of(Network(2, "relu", 2, 0).phi(1)), 1.0, 0.0, 2, 1, 2)
        >>> round(float(wz @ A[2, 0, 0]), 12), round(float(wz @ A[0, 1, 1]), 6)   # E relu^2 = 1/2, E relu'' = phi(0)
        (0.5, 0.398942)
    """
    return _stein_table(unit, float(q1), float(q2), int(pmax), int(rmax), int(kmax))


@functools.lru_cache(maxsize=64)
def _stein_table(unit: Unit, q1: float, q2: float, pmax: int, rmax: int, kmax: int) -> tuple:
    wz, e, we, u, s = _nodes(unit, q1, q2)
    f, d = unit.f(u), unit.df(u)
    he = np.stack(_hermite_e(e, max(kmax, 1))[:kmax + 1])
    fp, dr = np.stack([f**p for p in range(pmax + 1)]), np.stack([d**r for r in range(rmax + 1)])
    arr = np.einsum("ze,pze,rze,kze->prkz", we, fp, dr, he, optimize=True)  # one contraction: cold cost
    arr = arr / (s ** np.arange(kmax + 1))[None, None, :, None]
    arr[0, 0, 0] = 1.0
    arr[0, 0, 1:] = 0.0
    return wz, arr


def kernel_cumulants(net: Any, width: int, layer: int) -> dict:
    """The realized kernel of four independent inputs at ``layer`` (0: the inputs' Gram X X^T / M_0), over its ten
    entries (a, b), a <= b: ``mean`` (exact to O(1/M)), ``mf`` (mean field), ``cov`` (to O(1/M^2)), ``first`` (first
    order) and ``kappa`` (third cumulant, O(1/M^2)), module docstring.

    Raises:
        InvalidArgument: as :func:`output_block_next_order` (L >= 2 here), or layer outside 0..L-1.

    Example:
        >>> from meanfield.spec.network import Network
        >>> k = kernel_cumulants(Network(3, "relu", 2, 0), 64, 0)
        >>> float(k["mean"][0]), round(float(k["cov"][0, 0]) * 64, 12)    # q = 1: Var(|x|^2 / M_0) = 2 / M_0
        (1.0, 2.0)
    """
    M = _check(net, width, minimum_depth=2)
    layer = check_int("layer", layer, minimum=0, maximum=net.depth - 1)
    return _kernel_cumulants(net, M, layer)


@functools.lru_cache(maxsize=32)
def _kernel_cumulants(net: Any, M: int, layer: int) -> dict:
    widths = net.widths(M)
    low = _inputs(net, widths[0])
    for j in range(1, layer + 1):
        low = _propagate(low, net.phi(j), float(net.sigma_w2[j - 1]), float(net.sigma_b2[j - 1]), widths[j])
    return low


def _term_deriv(tab: tuple, terms: tuple, entries: tuple, scale: float, G: Any, slope: float) -> float:
    """d^n / dK_e1 .. dK_en of sum_terms coef E[v^2j] E[prod_a phi_a^p phi'_a^r] prod_(a,b) G_ab, with G_ab = slope
    K_ab + 1 (linear: each factor takes at most one matching derivative) and Price's theorem for the rest."""
    wz, t = tab
    total = 0.0
    for coef, factors, gpairs in terms:
        n = len(entries)
        # assign each derivative either to Price or to one G factor (distinct factors, matching entry)
        def assign(i: int, used: tuple, price: tuple) -> float:
            if i == n:
                k = [0, 0, 0, 0]
                fac = scale ** len(price)
                for a, b in price:
                    k[a] += 1
                    k[b] += 1
                    if a == b:
                        fac *= 0.5
                acc = np.ones_like(wz)
                for a in range(4):
                    p, r = factors[a]
                    if p or r or k[a]:
                        if p == 0 and r == 0:
                            return 0.0
                        acc = acc * t[(p, r, k[a])]
                rest = [G[_INDEX[g]] for j, g in enumerate(gpairs) if j not in used]
                return fac * float(np.prod(rest)) * slope ** len(used) * float(wz @ acc)
            out = assign(i + 1, used, price + (entries[i],))
            for j, g in enumerate(gpairs):
                if j not in used and g == entries[i]:
                    out += assign(i + 1, used + (j,), price)
            return out
        total += coef * assign(0, (), ())
    return total


def _kernel_terms(a: int, b: int) -> list:
    """One unit's kernel of the top two layers' parameters, k_ab = phi_a phi_b + v^2 phi'_a phi'_b G_ab, as terms
    (coefficient, v power, per-sample (phi power, phi' power), G factors)."""
    f = [[0, 0] for _ in range(4)]
    d = [[0, 0] for _ in range(4)]
    for x in (a, b):
        f[x][0] += 1
        d[x][1] += 1
    key = (min(a, b), max(a, b))
    return [(1.0, 0, f, ()), (1.0, 2, d, (key,))]


def _times(s1: list, s2: list) -> list:
    out = []
    for c1, v1, f1, g1 in s1:
        for c2, v2, f2, g2 in s2:
            out.append((c1 * c2, v1 + v2, [[f1[x][0] + f2[x][0], f1[x][1] + f2[x][1]] for x in range(4)], g1 + g2))
    return out


def _averaged(terms: list, sv: float) -> tuple:
    """Average the output weight v ~ N(0, sv) out: E v^0 = 1, E v^2 = sv, E v^4 = 3 sv^2."""
    ev = {0: 1.0, 2: sv, 4: 3.0 * sv * sv}
    return tuple((c * ev[v], tuple(tuple(x) for x in f), g) for c, v, f, g in terms)


def exchangeable_moment(phi: Any, q1: float, q2: float, powers: Any, derivatives: Any = ()) -> float:
    """d^n / dS_e1 .. dS_en E[prod_a phi(u_a)^p_a] at the exchangeable covariance Var u_a = q1, Cov(u_a, u_b) = q2.

    Price's theorem (d/dS_ab E f = E d_a d_b f for a != b, d/dS_aa = 1/2 E d_a^2 f) with Stein's identity
    E_e[g^(k)(c z + s e)] = E_e[g(c z + s e) He_k(e)] / s^k at u_a = c z + s e_a, c^2 = q2, s^2 = q1 - q2.

    Args:
        phi: an activation (as ``Network.phi(l)``: callable with ``.derivative`` and ``.kinks``).
        q1: the common variance; q2: the common covariance (q1 > q2 >= 0).
        powers: p_a >= 0 per sample (at most 6 each, at most 4 samples).
        derivatives: covariance entries (a, b) to differentiate in (a diagonal entry is the variance S_aa).

    Raises:
        InvalidArgument: q1 <= q2, q2 < 0, or powers or entries out of range.

    Example:
        >>> from meanfield.spec.network import Network
        >>> relu = Network(2, "relu", 2, 0).phi(1)
        >>> round(exchangeable_moment(relu, 1.0, 0.0, (2,)), 12)       # E[relu(u)^2] = q / 2
        0.5
        >>> round(exchangeable_moment(relu, 1.0, 0.0, (1, 1), [(0, 1)]), 12)   # d E[phi_a phi_b] / dS_ab = 1/4
        0.25
    """
    q1 = check_real("q1", q1, minimum=0.0, strict_min=True, symbolic=False)
    q2 = check_real("q2", q2, minimum=0.0, symbolic=False)
    if not q1 > q2:
        raise InvalidArgument("q2", q2, f"below the variance q1 = {q1}")
    powers = tuple(check_int("powers", p, minimum=0, maximum=_PMAX) for p in powers)
    if not 1 <= len(powers) <= 4:
        raise InvalidArgument("powers", powers, "one to four samples")
    entries = tuple(tuple(int(v) for v in e) for e in derivatives)
    if any(len(e) != 2 or min(e) < 0 or max(e) >= len(powers) for e in entries):
        raise InvalidArgument("derivatives", derivatives, "pairs (a, b) of sample labels")
    counts = [0] * len(powers)
    for a, b in entries:
        counts[a] += 1
        counts[b] += 1
    if max(counts) > _KMAX:
        raise InvalidArgument("derivatives", derivatives, f"at most {_KMAX} derivatives per sample")
    return _deriv(_table(Unit.of(phi), float(q1), float(q2)), powers, entries, 1.0)


def _check(net: Any, width: Any, minimum_depth: int = 3) -> int:
    from ..spec.network import Network

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")
    if net.norms:
        raise InvalidArgument("net", net.describe(), "a network without normalization layers")
    if net.depth < minimum_depth:
        raise InvalidArgument("net", net.describe(), "at least two hidden layers (L >= 3)",
                              "one hidden layer is exact in meanfield.finite.fourpoint_next")
    if float(net.input_q2) != 0.0:
        raise InvalidArgument("net", net.describe(), "independent inputs (input_q2 = 0)")
    return check_int("width", width, minimum=2)


def _powers(*pairs: tuple) -> tuple:
    p = [0, 0, 0, 0]
    for a, b in pairs:
        p[a] += 1
        p[b] += 1
    return tuple(p)


def _sym(a: int, b: int) -> np.ndarray:
    m = np.zeros((4, 4))
    m[a, b] += 0.5
    m[b, a] += 0.5
    return m


def _zero(powers: tuple, entries: tuple) -> bool:
    """Whether Price's derivative vanishes identically: an entry on a sample that the product does not contain."""
    return any(powers[a] == 0 or powers[b] == 0 for a, b in entries)


def _inputs(net: Any, M0: int) -> dict:
    """The inputs' Gram Q = X X^T / M0 of four independent inputs x ~ N(0, q I): mean q I, covariance
    2 q^2 tr(A B) / M0 and third cumulant 8 q^3 tr(A B C) / M0^2 (A, B, C the entries' symmetric matrices)."""
    q = float(net.input_q1)
    mats = [_sym(a, b) for a, b in _PAIRS]
    cov = np.array([[2 * q * q * np.trace(x @ y) / M0 for y in mats] for x in mats])
    kap = np.array([[[8 * q**3 * np.trace(x @ y @ z) / M0**2 for z in mats] for y in mats] for x in mats])
    mean = np.array([q if a == b else 0.0 for a, b in _PAIRS])
    return dict(mean=mean, mf=mean, cov=cov, first=cov, kappa=kap)


def total_cumulants(mu: np.ndarray, J: np.ndarray, H: np.ndarray, T: np.ndarray, sig: np.ndarray, curv: np.ndarray,
                    dS: np.ndarray, ku: np.ndarray, C: np.ndarray, kin: np.ndarray, M: int) -> tuple:
    """Mean, covariance (to O(1/M^2)) and third cumulant (O(1/M^2)) of a sample mean over M i.i.d. units whose law
    depends on a lower statistic K_low (exact covariance C, third cumulant kin): the law of total cumulance expanded
    to second order around K_low's exact mean (module docstring).

    Args:
        mu, J, H, T: one unit's mean of the statistics and its first three derivatives in K_low at K_low's mean
            (shapes (n,), (n, m), (n, m, m), (n, m, m, m)).
        sig: one unit's covariance (n, n); curv: C : d^2 sig / dK_low^2 (n, n); dS: d sig / dK_low (m, n, n);
        ku: one unit's third cumulant (n, n, n).
        C, kin: K_low's covariance (m, m) and third cumulant (m, m, m).
        M: the number of units.

    Returns:
        (mean, covariance, third cumulant) of the sample mean.

    Example:
        >>> import numpy as np
        >>> z1, z2, z3 = np.zeros((1, 1)), np.zeros((1, 1, 1)), np.zeros((1, 1, 1, 1))
        >>> m, c, k = total_cumulants(np.ones(1), np.ones((1, 1)), z2, z3, np.ones((1, 1)), z1, z2, z2, z1, z2, 4)
        >>> float(m[0]), float(c[0, 0])       # no lower fluctuation: a plain sample mean
        (1.0, 0.25)
    """
    hc = np.einsum("aef,ef->a", H, C)
    mean = mu + 0.5 * hc
    jhk = 0.5 * np.einsum("ai,bjk,ijk->ab", J, H, kin, optimize=True)
    jtc = 0.5 * np.einsum("ai,bjkl,ij,kl->ab", J, T, C, C, optimize=True)
    hhcc = 0.5 * np.einsum("aij,bkl,ik,jl->ab", H, H, C, C, optimize=True)
    cov = (sig + 0.5 * curv) / M + J @ C @ J.T + jhk + jhk.T + hhcc + jtc + jtc.T
    mixed = np.einsum("ae,ef,fbc->abc", J, C, dS, optimize=True)
    jjh = np.einsum("ai,ij,cjk,kl,bl->abc", J, C, H, C, J, optimize=True)
    kap = (ku / M**2 + (mixed + mixed.transpose(1, 0, 2) + mixed.transpose(1, 2, 0)) / M
           + np.einsum("ai,bj,ck,ijk->abc", J, J, J, kin, optimize=True) + jjh + jjh.transpose(0, 2, 1)
           + jjh.transpose(2, 1, 0))
    return mean, cov, kap


def _propagate(low: dict, phi: Any, sw: float, sb: float, M: int) -> dict:
    """One layer up: the realized kernel K = mean over M i.i.d. units of v_ab = phi(u_a) phi(u_b), u ~ N(0, sw K_low
    + sb) given the layer below, from K_low's exact mean, covariance to O(1/M^2) (and first order) and third cumulant
    (module docstring: the law of total cumulance, expanded to second order around K_low's exact mean)."""
    unit = Unit.of(phi)
    diag, off = _INDEX[(0, 0)], _INDEX[(0, 1)]

    def moments(mean: np.ndarray) -> Any:
        tab = _table(unit, sw * mean[diag] + sb, sw * mean[off] + sb)

        def m(pairs: tuple, entries: tuple = ()) -> float:   # d / dK_low[entries] of E[prod v_pairs]
            p = _powers(*pairs)
            return 0.0 if _zero(p, entries) else _deriv(tab, p, entries, sw)
        return m

    C, C1, kin = low["cov"], low["first"], low["kappa"]
    # first order: at mean field
    m = moments(low["mf"])
    mu1 = np.array([m((A,)) for A in _PAIRS])
    J1 = np.array([[m((A,), (e,)) for e in _PAIRS] for A in _PAIRS])
    sig1 = np.array([[m((A, B)) for B in _PAIRS] for A in _PAIRS]) - np.outer(mu1, mu1)
    first = sig1 / M + J1 @ C1 @ J1.T
    # next order: at the exact mean of K_low
    m = moments(low["mean"])
    mu = np.array([m((A,)) for A in _PAIRS])
    J = np.array([[m((A,), (e,)) for e in _PAIRS] for A in _PAIRS])
    H = np.array([[[m((A,), (e, f)) for f in _PAIRS] for e in _PAIRS] for A in _PAIRS])
    T = np.array([[[[m((A,), (e, f, g)) for g in _PAIRS] for f in _PAIRS] for e in _PAIRS] for A in _PAIRS])
    vv = np.array([[m((A, B)) for B in _PAIRS] for A in _PAIRS])
    sig = vv - np.outer(mu, mu)
    dS = np.array([[[m((A, B), (e,)) for B in _PAIRS] for A in _PAIRS] for e in _PAIRS])
    dS -= np.einsum("ae,b->eab", J, mu) + np.einsum("a,be->eab", mu, J)                  # dS[e] = d Sigma / dK_e
    curv = np.array([[sum(C[i, j] * m((A, B), (e, f)) for i, e in enumerate(_PAIRS) for j, f in enumerate(_PAIRS)
                          if C[i, j] != 0.0) for B in _PAIRS] for A in _PAIRS])
    hc = np.einsum("aef,ef->a", H, C)
    curv -= np.outer(hc, mu) + np.outer(mu, hc) + 2 * J @ C @ J.T                          # C : d^2 Sigma
    vvv = np.array([[[m((A, B, D)) for D in _PAIRS] for B in _PAIRS] for A in _PAIRS])
    ku = (vvv - np.einsum("ab,c->abc", vv, mu) - np.einsum("ac,b->abc", vv, mu) - np.einsum("bc,a->abc", vv, mu)
          + 2 * np.einsum("a,b,c->abc", mu, mu, mu))
    mean, cov, kap = total_cumulants(mu, J, H, T, sig, curv, dS, ku, C, kin, M)
    return dict(mean=mean, mf=mu1, cov=cov, first=first, kappa=kap)


@functools.lru_cache(maxsize=32)
def _below(net: Any, M: int) -> dict:
    """The realized kernel of four inputs at layer L - 2 (the inputs' Gram for L = 2)."""
    return _kernel_cumulants(net, M, net.depth - 2)


_PSI = (((2, 0, 2, 0), 1.0), ((2, 0, 1, 1), -1.0), ((1, 1, 2, 0), -1.0), ((1, 1, 1, 1), 1.0))


def _pair_tensors(tab: tuple, sw: float) -> tuple:
    """J, H, T of F = E[phi_0 phi_1] in its three entries (K_00, K_11, K_01)."""
    loc = ((0, 0), (1, 1), (0, 1))
    p = (1, 1)
    J = np.array([_deriv(tab, p, (e,), sw) for e in loc])
    H = np.array([[_deriv(tab, p, (e, f), sw) for f in loc] for e in loc])
    T = np.array([[[_deriv(tab, p, (e, f, g), sw) for g in loc] for f in loc] for e in loc])
    return J, H, T


def _cov_pairs(J: np.ndarray, H: np.ndarray, T: np.ndarray, C: np.ndarray, kap: Any, A: tuple, B: tuple) -> float:
    """Cov(F_A, F_B) to O(1/M^2) (module docstring); kap None: the first order J C J."""
    ia = [_INDEX[(A[0], A[0])], _INDEX[(A[1], A[1])], _INDEX[tuple(sorted(A))]]
    ib = [_INDEX[(B[0], B[0])], _INDEX[(B[1], B[1])], _INDEX[tuple(sorted(B))]]
    if kap is None:
        return float(J @ C[np.ix_(ia, ib)] @ J)
    return smooth_covariance((J, H, T), (J, H, T), ia, ib, C, kap)


def smooth_covariance(first: tuple, second: tuple, ia: Any, ib: Any, C: np.ndarray, kap: np.ndarray) -> float:
    """Cov(F(Y), G(Y)) to O(1/M^2) for smooth F, G of a statistic Y with covariance C (to O(1/M^2)) and third cumulant
    kap (O(1/M^2)), fourth moments by Gaussian pairing (module docstring):

        J_F C J_G + 1/2 (J_F H_G kap + H_F J_G kap) + 1/2 H_F H_G C C + 1/2 (J_F T_G C C + T_F J_G C C).

    Args:
        first, second: (J, H, T), the first three derivatives of F and of G at Y's exact mean in the entries of Y
            listed by ``ia`` and ``ib`` (F depends on Y[ia] only, G on Y[ib]).
        ia, ib: indices into Y.
        C, kap: Y's covariance and third cumulant.

    Example:
        >>> import numpy as np
        >>> lin = (np.ones(1), np.zeros((1, 1)), np.zeros((1, 1, 1)))
        >>> smooth_covariance(lin, lin, [0], [0], np.full((1, 1), 0.5), np.zeros((1, 1, 1)))
        0.5
    """
    (Ja, Ha, Ta), (Jb, Hb, Tb) = first, second
    cab, caa, cbb = C[np.ix_(ia, ib)], C[np.ix_(ia, ia)], C[np.ix_(ib, ib)]
    v = Ja @ cab @ Jb
    v += 0.5 * np.einsum("i,jk,ijk->", Ja, Hb, kap[np.ix_(ia, ib, ib)])
    v += 0.5 * np.einsum("ij,k,ijk->", Ha, Jb, kap[np.ix_(ia, ia, ib)])
    v += 0.5 * np.einsum("ij,kl,ik,jl->", Ha, Hb, cab, cab)
    v += 0.5 * np.einsum("i,jkl,ij,kl->", Ja, Tb, cab, cbb) + 0.5 * np.einsum("i,jkl,ji,kl->", Jb, Ta, cab, caa)
    return float(v)


@dataclass(frozen=True)
class OutputBlock:
    """E_W tr Cov_x(h^{L-1})^2, the output weights' block of tr Sigma_W^2 (units of T G), at the next order and at the
    first order of :func:`meanfield.finite.fourpoint.bulk_fluctuations`, with its two parts: M E[Psi] (one unit's
    fluctuations) and M (M - 1) E[Phi] (pairs of units), module docstring.

    Attributes:
        width: M.
        trace: the next-order value (error O(1/M) absolute against O(M)).
        first: the first-order value.
        unit_part: M E[Psi] at the next order.
        pair_part: M (M - 1) E[Phi] at the next order.
    """

    width: int
    trace: float
    first: float
    unit_part: float
    pair_part: float

    @property
    def scale(self) -> float:
        """M (next / first - 1): the O(1/M) relative correction."""
        return self.width * (self.trace / self.first - 1.0)


def output_block_next_order(net: Any, width: int) -> OutputBlock:
    """E tr Cov_x(h^{L-1})^2 = M E[Psi(K)] + M (M - 1) E[Phi(K)] to O(1) for L >= 3 (module docstring).

    Args:
        net: a numeric plain :class:`~meanfield.spec.network.Network` with L >= 3 and independent inputs.
        width: M.

    Returns:
        an :class:`OutputBlock` (next order, first order and the two parts).

    Raises:
        InvalidArgument: L < 3 (one hidden layer: :mod:`meanfield.finite.fourpoint_next`), normalization layers,
            symbolic parameters or correlated inputs.

    Example:
        >>> from meanfield.spec.network import Network
        >>> b = output_block_next_order(Network(3, "relu", 2, 0), 64)
        >>> 4 < b.scale < 8
        True
    """
    return _output_block(net, _check(net, width))


@functools.lru_cache(maxsize=32)
def _output_block(net: Any, M: int) -> OutputBlock:
    L = net.depth
    width = net.widths(M)[L - 1]
    low = _below(net, M)
    unit = Unit.of(net.phi(L - 1))
    sw, sb = float(net.sigma_w2[L - 2]), float(net.sigma_b2[L - 2])
    mf, exact = low["mf"], low["mean"]
    diag, off = _INDEX[(0, 0)], _INDEX[(0, 1)]
    # one unit's Psi at the mean-field kernel, its slope (times the mean's shift) and curvature (times the covariance)
    tab = _table(unit, sw * mf[diag] + sb, sw * mf[off] + sb)
    psi = sum(w * _deriv(tab, p, (), sw) for p, w in _PSI)
    grad = np.array([sum(w * _deriv(tab, p, (e,), sw) for p, w in _PSI) for e in _PAIRS])
    hess = np.array([[sum(w * _deriv(tab, p, (e, f), sw) for p, w in _PSI) for f in _PAIRS] for e in _PAIRS])
    e_psi = psi + grad @ (exact - mf) + 0.5 * float((hess * low["first"]).sum())
    # pairs of units: F's derivatives at the exact mean of K (first order: at mean field)
    J, H, T = _pair_tensors(_table(unit, sw * exact[diag] + sb, sw * exact[off] + sb), sw)
    J1 = _pair_tensors(tab, sw)[0]
    hoeff = (((0, 1), 1.0), ((0, 2), -2.0), ((2, 3), 1.0))
    e_phi = sum(w * _cov_pairs(J, H, T, low["cov"], low["kappa"], (0, 1), B) for B, w in hoeff)
    e_phi1 = sum(w * _cov_pairs(J1, H, T, low["first"], None, (0, 1), B) for B, w in hoeff)
    unit_part, pair_part = width * e_psi, width * (width - 1) * e_phi
    return OutputBlock(M, float(unit_part + pair_part), float(width * psi + width * width * e_phi1), float(unit_part),
                       float(pair_part))


def top_blocks_next_order(net: Any, width: int, quantity: str = "trace") -> OutputBlock:
    """E tr Sigma_top^2 to O(1) for L >= 2: the blocks of the last hidden layer's and the output layer's parameters.

    Given the layers below, the last hidden layer's units own disjoint gradient blocks (phi(u), v phi'(u) h, v phi'(u))
    and are i.i.d., so the output block's conditioning (module docstring) carries over with one unit's kernel
    k_ab = phi_a phi_b + v^2 phi'_a phi'_b (h_a . h_b + 1), h = h^{L-2} (the inputs for L = 2, where the blocks are all
    of tr Sigma^2 and :func:`meanfield.finite.fourpoint_next.two_layer_bulk` is exact).

    With ``quantity="spike"`` the same for the mean direction's variance restricted to those parameters,
    Var_x(mu . g) = Cov(K_ts, K_tu) - Cov(K_ts, K_uv) = M E[k_01 (k_02 - k_23)] + M (M - 1) (Cov(F_01, F_02) -
    Cov(F_01, F_23)) (:class:`meanfield.finite.fourpoint.BulkFluctuations`' ``mean_direction`` at L = 2).

    Args:
        net: a numeric plain :class:`~meanfield.spec.network.Network` with L >= 2 and independent inputs.
        width: M.
        quantity: "trace" (tr Sigma^2) or "spike" (Var_x(mu . g)).

    Returns:
        an :class:`OutputBlock` for the top two layers' blocks (next order, first order and the two parts).

    Raises:
        InvalidArgument: normalization layers, symbolic parameters, correlated inputs or another quantity.

    Example:
        >>> from meanfield.spec.network import Network
        >>> b = top_blocks_next_order(Network(3, "relu", 2, 0), 64)
        >>> round(b.first, 3) < round(b.trace, 3)
        True
    """
    if quantity not in ("trace", "spike"):
        raise InvalidArgument("quantity", quantity, "'trace' or 'spike'")
    return _top_block(net, _check(net, width, minimum_depth=2), quantity)


@functools.lru_cache(maxsize=32)
def _top_block(net: Any, M: int, quantity: str = "trace") -> OutputBlock:
    L = net.depth
    widths = net.widths(M)
    width, lower = widths[L - 1], widths[L - 2]
    low = _below(net, M)
    unit = Unit.of(net.phi(L - 1))
    sw, sb = float(net.sigma_w2[L - 2]), float(net.sigma_b2[L - 2])
    sv = float(net.sigma_w2[L - 1]) / width
    mf, exact = low["mf"], low["mean"]
    diag, off = _INDEX[(0, 0)], _INDEX[(0, 1)]
    pair = _averaged(_kernel_terms(0, 1), sv)
    # one unit's E_x,x'[(c(x) . c(x'))^2] = E[k_01^2 - 2 k_01 k_02 + k_01 k_23] (Hoeffding over four inputs)
    # (the spike: E[k_01 (k_02 - k_23)])
    k = {(a, b): _kernel_terms(a, b) for a, b in ((0, 1), (0, 2), (2, 3))}
    if quantity == "trace":
        second = k[(0, 1)] + [(-2 * c, v, f, g) for c, v, f, g in k[(0, 2)]] + k[(2, 3)]
        hoeff = (((0, 1), 1.0), ((0, 2), -2.0), ((2, 3), 1.0))
    else:
        second = k[(0, 2)] + [(-c, v, f, g) for c, v, f, g in k[(2, 3)]]
        hoeff = (((0, 2), 1.0), ((2, 3), -1.0))
    psi_terms = _averaged(_times(k[(0, 1)], second), sv)

    def tensors(point: np.ndarray) -> tuple:
        tab = _table2(unit, sw * point[diag] + sb, sw * point[off] + sb)
        G = lower * point + 1.0

        def d(terms: tuple, entries: tuple) -> float:
            return _term_deriv(tab, terms, entries, sw, G, float(lower))
        return d

    d = tensors(mf)
    psi = d(psi_terms, ())
    grad = np.array([d(psi_terms, (e,)) for e in _PAIRS])
    hess = np.array([[d(psi_terms, (e, f)) for f in _PAIRS] for e in _PAIRS])
    e_psi = psi + grad @ (exact - mf) + 0.5 * float((hess * low["first"]).sum())
    loc = ((0, 0), (1, 1), (0, 1))
    J1 = np.array([d(pair, (e,)) for e in loc])
    d = tensors(exact)
    J = np.array([d(pair, (e,)) for e in loc])
    H = np.array([[d(pair, (e, f)) for f in loc] for e in loc])
    T = np.array([[[d(pair, (e, f, g)) for g in loc] for f in loc] for e in loc])
    e_phi = sum(w * _cov_pairs(J, H, T, low["cov"], low["kappa"], (0, 1), B) for B, w in hoeff)
    e_phi1 = sum(w * _cov_pairs(J1, H, T, low["first"], None, (0, 1), B) for B, w in hoeff)
    unit_part, pair_part = width * e_psi, width * (width - 1) * e_phi
    return OutputBlock(M, float(unit_part + pair_part), float(width * psi + width * width * e_phi1), float(unit_part),
                       float(pair_part))
