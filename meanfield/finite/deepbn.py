"""Batch norm on a hidden layer l < L - 1 (plain layers with weights above it): O(1/M) corrections of E G and s.

Given the layers below the batch-normalized layer l, its M_l units are i.i.d. (each normalized over the T samples
exactly), so its realized kernel K^l = H^T H / M_l and NTK average N^l = (1/M_l) sum_a X_aa (X_ac(t, s) = phi'_a(t)
phi'_c(s) (A_a Theta^l_ac A_c)(t, s), A_a the unit's batch-norm Jacobian) are averages of i.i.d. per-unit terms:
:func:`meanfield.finite.hiddenbn.batch_norm_layer` gives their means with the O(1/M) shifts (the layer below's mean
shifts to first order, its fluctuations to second order, Stein on the layer's rows), their 6 x 6 covariance over the
kernel entries (t t, t s, s s) (the units' own, 1 / M_l, plus the layer below's pushed through the first variation of
E[K^l, N^l | below]) and the sandwiched NTK Y^l_{tau tau'} = h(tau)^T X h(tau') to leading order (its off-diagonal
part by Stein on two rows of W^l).

Every layer above l is plain, so the forward recursion of :mod:`meanfield.finite.corrections` runs from layer l + 1
up with that start (in place of the inputs' exact kernel): the kernel's shift dK^j = J dQ + F''[Cov Q] / 2 and
Cov X^j = Sigma / M_j + J Cov X^{j-1} J^T (X^j = (K^j, c^j); at layer l the second block is N^l), and the NTK's
E[c(Q) Z] + Stein(Y) with Z = 1 + M K + sigma_w^2 N, N's linear response keyed by layer (at layer l, N^l itself). At
the output E[T G_kk(t, s) | layer L - 1] = 1 + M_{L-1} K^{L-1} + sigma_w^2 N^{L-1} exactly; between outputs E G_kl = 0.

At l = L - 1 the recursion above is empty and the result is :mod:`meanfield.finite.hiddenbn`'s (a test holds them
equal to rounding). The mean-field values are ``predict``'s; only the O(1) shifts of T E G come from here.

The entry variances (for s) follow the plain four-point engine (:mod:`meanfield.finite.fourpoint`): T G(t, s) =
sum_{j > l} A_j B_j + gamma(t)^T X gamma(s) with gamma = W^{l+1 T} delta^{l+1}, the last term a layer term of its own
(A_l = sigma_w^2 A_{l+1}, B_l = N^l) with the fresh W^{l+1}'s Wick noise over every pair of units
(:func:`entry_variance`; gradient independence above the norm, as in the plain engine); at l = L - 1 this is
hiddenbn's s to rounding. For a != c (l >= 2) the Wick noise needs the NTK's spread between the units below,
:func:`meanfield.finite.hiddenbn.cross_unit_moments` (on layer 2 written out, deeper :mod:`meanfield.finite.ntkspread`).

Measured against sampled networks (``meanfield/notes/corrections.md``, section 9): the means within 1.8 standard
errors with the norm on layer 1 or 2, 2.8 on layer 3 of five (mean field off by up to 22), s -0.1% to -3.0% at M = 64,
T = 8 (mean field: 11-23% low), the residual falling faster than 1/M.

Not derived here: lambda_max, more than one normalization, inputs with a negative mean product, T < 6 (full batch
norm) or T < 4 (centre-only), activations whose kinks are unknown (kinks anywhere else are split by
:mod:`meanfield.finite.spherecut`'s rule).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from ..spec.network import BatchNorm, Network
from ..theory.fisher import predict
from .corrections import kernel_response_covariance, ntk_response, sandwich_step, two_sample_layer, two_sample_rule
from .hiddenbn import BatchNormLayer, batch_norm_layer, cross_unit_moments, default_method

__all__ = ["DeepBatchNormTerms", "deep_batch_norm_terms", "normalized_prefix", "finite_width_stats", "CORRECTED",
           "kernel_above", "plain_forward", "ntk_carry", "entry_variance_above"]

CORRECTED = frozenset({"gram_diag", "gram_offdiag", "m", "kappa1", "kappa2"})
_PAIRS = ((0, 0), (0, 1), (1, 1))


def _placement(net: Any) -> BatchNorm | None:
    """The batch norm this module covers (the only normalization, on a hidden layer 1..L-1), or None."""
    if not isinstance(net, Network) or net.is_symbolic or len(net.norms) != 1 or net.depth < 2:
        return None
    norm = net.norms[0]
    return norm if isinstance(norm, BatchNorm) and 1 <= norm.layer <= net.depth - 1 else None


def _check(net: Any, width: Any, samples: Any) -> tuple[int, int]:
    """(M, T) of a network this module covers (T >= 4 centre-only, else T >= 6: E[1/sigma^4] enters), else raise."""
    if _placement(net) is None:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network whose only normalization is a batch norm on a hidden layer")
    return (check_int("width", width, minimum=1),
            check_int("samples", samples, minimum=4 if net.norms[0].center_only else 6))


def normalized_prefix(net: Network) -> Network:
    """The network of layers 1..l + 1 of ``net`` (batch norm on layer l, one output): its output layer is layer l + 1.

    Its Gram's batch-norm layer is the last hidden one, the placement :mod:`meanfield.finite.hiddenbn` derives.

    Example:
        >>> normalized_prefix(Network(4, "tanh", (1, 2, 3, 4), 0.1, norms=["batch:1"])).describe()
        'L=2 tanh sigma_w2=(1, 2) sigma_b2=0.1 C=1 alphas=1 norms=batch:1'
    """
    norm = _placement(net)
    if norm is None:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network whose only normalization is a batch norm on a hidden layer")
    l = norm.layer
    acts = net.activation[:l]
    kind = "batch-center" if norm.center_only else "batch"
    return Network(l + 1, acts if len(acts) > 1 else acts[0], net.sigma_w2[: l + 1], net.sigma_b2[: l + 1],
                   outputs=1, alphas=net.alphas[: l + 1], norms=[f"{kind}:{l}"], input_q1=net.input_q1,
                   input_q2=net.input_q2)


@dataclass(frozen=True)
class DeepBatchNormTerms:
    """E G_tt, E G_ts, m, kappa_1, kappa_2 with their O(1/M) terms: one batch norm on any hidden layer.

    Attributes:
        network, width, samples: what was computed (M, T).
        layer: l, the batch-normalized layer.
        mean_field_diag, mean_field_offdiag, m_mean_field, s_mean_field: ``predict``'s values.
        recursion_diag, recursion_offdiag: the mean-field T E G_tt, T E G_ts of this module's recursion (a check on
            ``predict``: equal up to the four-sample quadrature of the layers below, about 1e-4 relative for tanh).
        shift_diag, shift_offdiag: the O(1/M) terms of E G_tt, E G_ts (Gram units).
        mean_diag, mean_offdiag, m, kappa1, kappa2: corrected.
        entry_variances: (Var G_tt, Var G_ts, E G_kl(t, t)^2, E G_kl(t, s)^2) of one entry (batch norm on layer 1 or
            2; else None): :func:`entry_variance` / T^2.
        s: corrected (the squared corrected means plus the entry variances).
        includes_1_over_M: the statistics above that include their O(1/M) terms.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.

    Example:
        >>> t = deep_batch_norm_terms(Network(3, "tanh", 2, 0.1, norms=["batch:1"]), 64, 8)
        >>> bool(abs(t.mean_diag / t.mean_field_diag - 1) < 0.05)
        True
    """

    network: Network
    width: int
    samples: int
    layer: int
    mean_field_diag: float
    mean_field_offdiag: float
    m_mean_field: float
    s_mean_field: float
    recursion_diag: float
    recursion_offdiag: float
    shift_diag: float
    shift_offdiag: float
    mean_diag: float
    mean_offdiag: float
    m: float
    kappa1: float
    kappa2: float
    entry_variances: tuple | None
    s: float
    includes_1_over_M: frozenset
    P: int
    alpha: float


def plain_forward(net: Network, width: int, b: BatchNormLayer, lo: int, hi: int) -> dict:
    """dK^j = J dQ + F''[Cov Q] / 2, Cov X^j = Sigma / M_j + J Cov X^{j-1} J^T for the plain layers lo < j < hi above
    a batch-normalized layer lo (its :class:`meanfield.finite.hiddenbn.BatchNormLayer` b the start).

    Per layer the mean kernel, its O(1/M) shift, the slope averages' shift, the two-sample layer tables (j > lo) and
    Cov(X^j, X^j') (X^lo = (K^lo, N^lo), X^j = (K^j, c^j) above): the forward recursion of
    :mod:`meanfield.finite.corrections` started at the norm (this module's and :mod:`meanfield.finite.multibn`'s).

    Args:
        net: a numeric network, plain on the layers lo + 1..hi - 1.
        width: M.
        b: the batch-normalized layer lo's statistics.
        lo, hi: the norm's layer and the first layer not carried (1 <= lo < hi <= L).

    Returns:
        dict with widths, sw (sigma_w^2 per layer), kbar, dk, dc (keyed by layer), cov (keyed by pairs of layers) and
        layers (the two-sample tables, keyed by layer).

    Raises:
        InvalidArgument: lo, hi out of range.

    Example:
        >>> net = Network(4, "tanh", 2, 0.1, norms=["batch:1"])
        >>> b = batch_norm_layer(normalized_prefix(net), 64, 8)
        >>> fw = plain_forward(net, 64, b, 1, 4)
        >>> sorted(fw["kbar"]), fw["cov"][(3, 1)].shape
        ([1, 2, 3], (6, 6))
    """
    lo = check_int("lo", lo, minimum=1, maximum=net.depth - 1)
    hi = check_int("hi", hi, minimum=lo + 1, maximum=net.depth)
    widths = net.widths(width)
    sw = [float(x) for x in net.sigma_w2]
    sb = [float(x) for x in net.sigma_b2]
    kbar, dk, cov, layers, dc = {lo: b.kbar}, {lo: b.dk}, {(lo, lo): b.cov}, {}, {}
    for j in range(lo + 1, hi):
        Q = sw[j - 1] * kbar[j - 1] + sb[j - 1]
        lay = two_sample_layer(Unit.of(net.phi(j)), *(float(x) for x in Q))
        layers[j] = lay
        covQ = sw[j - 1] ** 2 * cov[(j - 1, j - 1)][:3, :3]
        dQ = sw[j - 1] * dk[j - 1]
        # Roberts-Yaida-Hanin: E F(Q) = F(EQ) + F' dQ + F''[Cov Q] / 2 to O(1/M)
        dk[j] = lay.gradF @ dQ + 0.5 * np.einsum("pab,ab->p", lay.hessF, covQ)
        dc[j] = lay.gradc @ dQ + 0.5 * np.einsum("pab,ab->p", lay.hessc, covQ)
        kbar[j] = lay.F
        J = np.zeros((6, 6))
        J[:3, :3], J[3:, :3] = lay.gradF, lay.gradc
        J *= sw[j - 1]
        cov[(j, j)] = lay.sigma / widths[j] + J @ cov[(j - 1, j - 1)] @ J.T
        for i in range(lo, j):
            cov[(j, i)] = J @ cov[(j - 1, i)]
            cov[(i, j)] = cov[(j, i)].T
    return dict(widths=widths, sw=sw, kbar=kbar, dk=dk, dc=dc, cov=cov, layers=layers)


@functools.lru_cache(maxsize=32)
def _forward_above(net: Network, width: int, samples: int) -> dict:
    """:func:`plain_forward` from the batch-normalized layer l up to the outputs, with l, L and b."""
    l = net.norms[0].layer
    b = batch_norm_layer(normalized_prefix(net), width, samples)
    return dict(plain_forward(net, width, b, l, net.depth), l=l, L=net.depth, b=b)


def kernel_above(net: Network, width: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(K^{L-1}, dK^{L-1}): the last hidden layer's mean kernel (t t, t s, s s) and its O(1/M) mean shift, the
    batch-normalized layer's start carried up by the plain recursion (l < L - 1).

    Example:
        >>> k, dk = kernel_above(Network(3, "tanh", 2, 0.1, norms=["batch:1"]), 64, 8)
        >>> k.shape, bool(k[0] > k[1])
        ((3,), True)
    """
    width, samples = _check(net, width, samples)
    if net.norms[0].layer == net.depth - 1:
        raise InvalidArgument("net", net.describe(), "a batch norm below layer L - 1 (on L - 1: hiddenbn's)")
    fw = _forward_above(net, width, samples)
    return fw["kbar"][net.depth - 1].copy(), fw["dk"][net.depth - 1].copy()


def ntk_carry(net: Network, width: int, b: BatchNormLayer, lo: int, hi: int, fw: dict) -> tuple:
    """Theta^hi = 1 + M_{hi-1} K^{hi-1} + sigma_w^2 c Theta^{hi-1}: ((T E G_tt, its O(1) shift), (T E G_ts, its O(1)
    shift)) of layer hi's pre-activations' NTK, carried from the batch-normalized layer lo by the plain recursion.

    The shift of each layer's N is E[c(Q) Z] + Stein(Y) with Z = 1 + M K + sigma_w^2 N, N's linear response keyed by
    layer (at layer lo, N^lo itself), the forward statistics fw those of :func:`plain_forward` (same lo, hi).

    Args:
        net, width, b, lo, hi: as :func:`plain_forward`.
        fw: :func:`plain_forward` (net, width, b, lo, hi).

    Returns:
        ((theta_tt, dtheta_tt), (theta_ts, dtheta_ts)).

    Example:
        >>> net = Network(4, "tanh", 2, 0.1, norms=["batch:1"])
        >>> b = batch_norm_layer(normalized_prefix(net), 64, 8)
        >>> (d, dd), (o, do) = ntk_carry(net, 64, b, 1, 4, plain_forward(net, 64, b, 1, 4))
        >>> bool(d > o)
        True
    """
    widths, sw, kbar, dk, dc, cov, layers = (fw[k] for k in ("widths", "sw", "kbar", "dk", "dc", "cov", "layers"))
    out = []
    for pair in ((0, 0), (0, 1)):
        p = _PAIRS.index(pair)
        theta = 1.0 + widths[lo] * b.kbar[p] + sw[lo] * b.nbar[p]
        dtheta = widths[lo] * b.dk[p] + sw[lo] * b.dn[p]
        start = np.zeros(6)
        start[3 + p] = 1.0                           # at layer lo the second block is N^lo itself
        ncoef: dict = {lo: start}
        ybar = b.y[pair]
        for j in range(lo + 1, hi):
            lay = layers[j]
            cbar = lay.c[p]
            covKZ = kernel_response_covariance(cov, ncoef, widths[j - 1], sw[j - 1], j, p)
            cov_cZ = sw[j - 1] * float(lay.gradc[p] @ covKZ)
            ycorr = (sw[j - 1] / widths[j - 1]) ** 2 * float((lay.d2c[pair] * ybar).sum())
            dn = dc[j][p] * theta + cbar * dtheta + cov_cZ + ycorr
            ncoef = ntk_response(ncoef, cbar, theta, widths[j - 1], sw[j - 1], j, p)
            ybar = sandwich_step(lay, pair, theta, ybar, widths[j], widths[j - 1], sw[j - 1])
            theta = 1.0 + widths[j] * kbar[j][p] + sw[j] * cbar * theta
            dtheta = widths[j] * dk[j][p] + sw[j] * dn
        out.append((float(theta), float(dtheta)))
    return tuple(out)


def _ntk_above(net: Network, width: int, samples: int) -> tuple:
    """((T E G_tt, its O(1) shift), (T E G_ts, its O(1) shift)) of the forward recursion from layer l up."""
    fw = _forward_above(net, width, samples)
    return ntk_carry(net, width, fw["b"], fw["l"], fw["L"], fw)


def _noise_mean(fw: dict, net: Network, l: int, b: BatchNormLayer, m: int, p1: int, p2: int) -> float:
    """E of one unit's product behind the fresh backward weights W^{m+1}: phi'phi'phi'phi' of the two pairs at a
    plain layer m > l; E[X_aa(p1) X_aa(p2)] / (N_p1 N_p2) at the batch-normalized layer (its B is N^l itself)."""
    if m == l:
        return float(b.unit_second[3 + p1, 3 + p2] / (b.nbar[p1] * b.nbar[p2]))
    Q = fw["sw"][m - 1] * fw["kbar"][m - 1] + float(net.sigma_b2[m - 1])
    unit = Unit.of(net.phi(m))
    rule = two_sample_rule(unit, *(float(x) for x in Q))
    d = [np.asarray(unit.df(x), dtype=float) for x in rule.u]
    out = np.ones_like(d[0])
    for a in _PAIRS[p1] + _PAIRS[p2]:
        out = out * d[a]
    return float(rule.mean(out))


def entry_variance(net: Network, width: int, samples: int, cross: bool, pair: int) -> float:
    """Var(T G_kl(t, s)) to O(M) (k = l, or k != l with ``cross``; ``pair`` 0: t = s, 1: t != s), one batch norm on
    hidden layer l (module docstring: the plain four-point engine's layer sum, the layers <= l one term).

    T G_kk(t, s) = sum_{j > l} A_j B_j + gamma(t)^T X gamma(s), gamma = W^{l+1 T} delta^{l+1}: with the backward
    weights fresh (gradient independence, as in :mod:`meanfield.finite.fourpoint`) the last term is A_l B_l with
    A_l = sigma_w^2 A_{l+1}, B_l = N^l, and the fresh W^{l+1}'s Wick noise (sigma_w^2 / M_l)^2 sum_ac [X_ac(t, s)^2 A_tt
    A_ss + X_ac(t, s) X_ca(t, s) A_ts^2] (a = c: the unit's own E X_aa^2; a != c, layer 2 only: the NTK's spread
    between the units below, :func:`meanfield.finite.hiddenbn.cross_unit_moments`; on layer 1 the NTK below is
    diagonal in the units). The forward covariances are those of :func:`deep_batch_norm_terms`'s recursion.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:1"])
        >>> entry_variance(net, 64, 8, False, 0) > entry_variance(net, 64, 8, True, 0) > 0
        True
    """
    width, samples = _check(net, width, samples)
    if pair not in (0, 1):
        raise InvalidArgument("pair", pair, "0 (t = s) or 1 (t != s)")
    fw = _forward_above(net, width, samples)
    ac = cross_unit_moments(normalized_prefix(net), width, samples)
    return entry_variance_above(net, fw, fw["b"], fw["l"], ac, cross, pair)


def entry_variance_above(net: Network, fw: dict, b: BatchNormLayer, l: int, ac: tuple, cross: bool,
                         pair: int) -> float:
    """Var(T G_kl(t, s)) = sum_{j, j' >= l} (A_j B_j, A_j' B_j' covariances and Wick noise) to O(M): the four-point
    layer sum above a batch norm on layer l (:func:`entry_variance`, given its parts).

    Args:
        net: a numeric network, plain above layer l.
        fw: :func:`plain_forward` (net, M, b, l, L).
        b: layer l's statistics.
        l: the batch-normalized layer.
        ac: (E[X_ac(t, t)^2], E[X_ac(t, s)^2], E[X_ac(t, t) X_ca(t, t)], E[X_ac(t, s) X_ca(t, s)]) of two of its units
            a != c (:func:`meanfield.finite.hiddenbn.cross_unit_moments`).
        cross: k != l (the outputs).
        pair: 0 (t = s) or 1 (t != s).

    Returns:
        The variance (T G's, O(M)).

    Raises:
        InvalidArgument: pair not 0 or 1.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:1"])
        >>> b = batch_norm_layer(normalized_prefix(net), 64, 8)
        >>> fw, ac = plain_forward(net, 64, b, 1, 3), cross_unit_moments(normalized_prefix(net), 64, 8)
        >>> entry_variance_above(net, fw, b, 1, ac, False, 1) == entry_variance(net, 64, 8, False, 1)
        True
    """
    if pair not in (0, 1):
        raise InvalidArgument("pair", pair, "0 (t = s) or 1 (t != s)")
    L = net.depth
    widths, sw, cov, layers = fw["widths"], fw["sw"], fw["cov"], fw["layers"]
    x, y = (0, 0), ((1 if cross else 0), pair)          # (output, sample) of the entry's two sides
    p = 0 if pair == 0 else 1

    def c(m: int) -> float:
        return 1.0 if m == l else float(layers[m].c[p])

    def abar(j: int, u: tuple, w: tuple) -> float:
        if u[0] != w[0]:
            return 0.0
        q = 0 if u[1] == w[1] else 1
        return math.prod(sw[m] * (1.0 if m == l else float(layers[m].c[q])) for m in range(j, L))

    terms = range(l, L + 1)
    a = {j: abar(j, x, y) for j in terms}
    bbar = {j: (float(b.nbar[p]) if j == l else widths[j - 1] * float(fw["kbar"][j - 1][p]) + 1.0) for j in terms}

    def noise(m: int) -> float:
        direct, swapped = abar(m + 1, x, x) * abar(m + 1, y, y), abar(m + 1, x, y) * abar(m + 1, y, x)
        if m == l:    # sum_ac: the unit's own E X_aa^2 and (M_l - 1) E[X_ac X_ac] (a != c) per Wick pairing
            own = _noise_mean(fw, net, l, b, m, p, p) * float(b.nbar[p]) ** 2
            total = (direct * (own + (widths[l] - 1) * ac[p]) + swapped * (own + (widths[l] - 1) * ac[2 + p]))
            return sw[m] ** 2 * total / (widths[m] * float(b.nbar[p]) ** 2)
        pairing = direct + swapped
        return sw[m] ** 2 * _noise_mean(fw, net, l, b, m, p, p) * pairing / widths[m] if pairing else 0.0

    noises = {m: noise(m) for m in range(l, L)}

    def gain(j: int, m: int) -> float:
        return math.prod(sw[i] * c(i) for i in range(j, m))

    def where(j: int) -> tuple:       # B_j = scale * X^block[index]
        return (l, 3 + p, 1.0) if j == l else (j - 1, p, float(widths[j - 1]))

    def cov_bb(j: int, jp: int) -> float:
        (bj, ij, sj), (bk, ik, sk) = where(j), where(jp)
        return sj * sk * float(cov[(bj, bk)][ij, ik])

    def cov_ba(j: int, jp: int) -> float:     # Cov(B_j, a_jp): a = abar (1 + sum_{m > l} dc^m / c^m)
        if not a[jp]:
            return 0.0
        bj, ij, sj = where(j)
        return sj * a[jp] * sum(float(cov[(bj, m)][ij, 3 + p]) / c(m) for m in range(max(jp, l + 1), L))

    def cov_aa(j: int, jp: int) -> float:
        if not (a[j] and a[jp]):
            return 0.0
        return a[j] * a[jp] * sum(float(cov[(m, mp)][3 + p, 3 + p]) / (c(m) * c(mp))
                                  for m in range(max(j, l + 1), L) for mp in range(max(jp, l + 1), L))

    total = 0.0
    for j in terms:
        for jp in terms:
            nn = sum(gain(j, m) * gain(jp, m) * noises[m] for m in range(max(j, jp), L))
            # the batch-normalized layer's own noise is E[X_aa X_aa] at the mean law already (its B is inside it):
            # no Cov(B, B) factor on it (that would be a part of the next order only)
            nn_above = nn - (noises[l] if j == jp == l else 0.0)
            bb = cov_bb(j, jp)
            total += (bbar[j] * bbar[jp] * nn + bb * nn_above + a[j] * a[jp] * bb + a[j] * bbar[jp] * cov_ba(j, jp)
                      + bbar[j] * a[jp] * cov_ba(jp, j) + bbar[j] * bbar[jp] * cov_aa(j, jp))
    return float(total)


@functools.lru_cache(maxsize=32)
def deep_batch_norm_terms(net: Network, width: int, samples: int) -> DeepBatchNormTerms:
    """E G = mean field + (the batch-normalized layer's O(1/M) start, carried up by the plain recursion) / T.

    Args:
        net: a numeric network whose only normalization is a batch norm (full or centre-only) on a hidden layer
            l = 1..L-1, inputs with a non-negative mean product, an activation with known kinks on
            layer l.
        width: M.
        samples: T (at least 6 for a full batch norm, 4 centre-only).

    Returns:
        :class:`DeepBatchNormTerms`.

    Raises:
        InvalidArgument: another placement, a symbolic network, T too small, a negative kernel overlap below.

    Example:
        >>> net = Network(4, "relu", 2, 0.1, outputs=2, norms=["batch:2"])
        >>> t = deep_batch_norm_terms(net, 64, 8)
        >>> t.m == 2 * 8 * t.mean_diag / t.P
        True
    """
    M, T = _check(net, width, samples)
    norm = net.norms[0]
    if default_method(normalized_prefix(net), T) != "exact":
        raise InvalidArgument("net", net.describe(), "an activation with known kinks (breaks of phi or phi') on the "
                              "batch-normalized layer")
    base = predict(net, M, T)
    (rd, dd), (ro, do) = _ntk_above(net, M, T)
    gd, go = float(base.gram_diag), float(base.gram_offdiag)
    mean_d, mean_o = gd + dd / T, go + do / T
    C, P, alpha = net.outputs, int(base.P), float(base.alpha)
    s, var, corrected = float(base.s), None, CORRECTED
    if norm.layer >= 1:     # every hidden layer (deeper than 2 through ntkspread's Phi)
        var = tuple(entry_variance(net, M, T, cross, pair) / T**2 for cross in (False, True) for pair in (0, 1))
        s = (C * (T * (mean_d**2 + var[0]) + T * (T - 1) * (mean_o**2 + var[1]))
             + C * (C - 1) * (T * var[2] + T * (T - 1) * var[3])) / P
        corrected = CORRECTED | {"s"}
    return DeepBatchNormTerms(net, M, T, norm.layer, gd, go, float(base.m), float(base.s), rd, ro, dd / T, do / T,
                              mean_d, mean_o, C * T * mean_d / P, T * mean_d / (alpha * M), T * mean_o / (alpha * M),
                              var, s, corrected, P, alpha)


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict | None:
    """The "1/M" model for one batch norm on a hidden layer l < L - 1: corrected gram_diag, gram_offdiag, m, kappa1,
    kappa2 and s; None for other networks (l = L - 1 is :mod:`meanfield.finite.hiddenbn`'s).

    Example:
        >>> from meanfield import predict
        >>> net = Network(4, "tanh", 2, 0.1, outputs=2, norms=["batch:2"])
        >>> sorted(finite_width_stats(net, 64, 8, predict(net, 64, 8))["includes_1_over_M"])
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2"])
        >>> finite_width_stats(net, 64, 8, predict(net, 64, 8)) is None      # the last hidden layer: hiddenbn's
        True
    """
    norm = _placement(net)
    if norm is None or norm.layer == net.depth - 1:
        return None
    try:
        t = deep_batch_norm_terms(net, width, samples)
    except InvalidArgument as error:     # predict keeps working with mean-field values
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    what = ("E G_tt, E G_ts (so m and the kappa's) with their derived O(1/M) terms (the batch-normalized layer's "
            "kernel and NTK average to O(1/M) by exact sphere quadrature, carried up by the plain forward recursion; "
            "deterministic); ")
    if "s" in t.includes_1_over_M:
        what += ("s with the entry variances of the four-point layer sum (gradient independence above the norm); s "
                 "still misses an O(T/M^2) term (about -0.6% on layer 1, -1.6% on layer 2 at M = 64, T = 8)")
    else:
        what += "s keeps its mean-field value (its entry variances are not derived here)"
    return dict(gram_diag=t.mean_diag, gram_offdiag=t.mean_offdiag, m=t.m, kappa1=t.kappa1, kappa2=t.kappa2,
                s=t.s, includes_1_over_M=t.includes_1_over_M,
                notes=(f"{norm} (batch norm on hidden layer {norm.layer} < L - 1): " + what,
                       "lambda_max: not corrected (the mean-field value or bounds)"))
