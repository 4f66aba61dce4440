"""E_W tr Sigma_W^2 = M D + M (M - 1) E_x,x'[kappa^2] exactly at finite width for one hidden layer: the next order.

:func:`meanfield.finite.fourpoint.bulk_fluctuations` gives the within-draw fluctuations of one output's gradients
(tr Sigma_W^2, the mean direction's variance, the centred norms' variance) to leading order in 1/M. For a network with
one hidden layer (L = 2) and independent Gaussian inputs x ~ N(0, q I_{M_0}) they are exact at any width by the
layer-conditional structure: the gradient of the output is a sum over the hidden units i of disjoint blocks

    g_i(x) = (phi(u_i), v_i phi'(u_i) x, v_i phi'(u_i)),   u_i = w_i . x + b_i,

(plus the output bias, a constant), and the units (w_i, b_i, v_i) are i.i.d. and independent of the inputs. With
c_i(x) = g_i(x) - E_x g_i and the per-unit mean kernel Kbar(x, x') = E_w[g_w(x) . g_w(x')], for units i != j

    E_W ||Cov_x(g_i, g_j)||_F^2 = E_x,x'[kappa(x, x')^2],   kappa = the double centring of Kbar over the inputs,

so E_W tr Sigma_W^2 = M D + M (M - 1) O with D = E_w tr Cov_x(g_w)^2 (one unit) and, by the Hoeffding identity,
O = Var_x,x'(Kbar) - 2 Var_x(m), m(x) = E_x' Kbar(x, x'). Likewise the mean direction's variance is
M E_w Var_x(mu_w . g_w) + M (M - 1) Var_x(m) and the centred norms' is M E_w Var_x|c_w|^2 + M (M - 1)
Var_x(Kbar(x, x) - 2 m(x)). Kbar depends on x, x' only through |x|^2, |x'|^2 (q chi^2_{M_0} each) and the cosine
of their angle (density proportional to (1 - c^2)^((M_0 - 3) / 2)), all independent: Gauss rules in those three
variables (generalized Laguerre and Gauss-Jacobi, by Golub-Welsch) with the two-point Gaussian means of phi and phi'
inside (closed forms for relu, piecewise Gauss-Legendre otherwise). One unit's blocks depend on x only through
s = w . x / |w| and |x_perp|^2 (independent), so D and the per-unit variances are one-dimensional integrals,
averaged over |w|^2 (a chi-square), b and v (Gauss rules). Deeper plain networks: :func:`top_corrected_bulk`
(the top two layers' blocks at the next order, :mod:`meanfield.finite.fourpoint_deep`, and the first layer's blocks
too for L = 3, layer L - 2's for L >= 4, :mod:`meanfield.finite.fourpoint_lower`); :func:`bulk_scale` stays one hidden
layer's.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import RANGE, Unit

__all__ = ["two_layer_bulk", "bulk_scale", "next_order_bulk", "covers", "two_layer_entry_variances", "top_corrected_bulk",
           "covers_top"]

# against 24, 14 and 20 nodes: tr Sigma^2, Var(mu . g), Var|c|^2 within 3e-5 relative (tanh, relu sigma_b^2 = 0.1,
# linear; M = 8 and 256), 1e-3 of their next-order term at M = 8; ten times faster
_NODES = 16          # Gauss-Legendre nodes per piece of the normal line (between kinks and the bulk's +-3, 0)
_RADIAL = 10         # generalized Laguerre nodes for |x|^2 and |w|^2
_ANGULAR = 12        # Gauss-Jacobi nodes for the inputs' cosine
_GAUSS = 12          # Gauss-Hermite nodes for a bias b and an output weight v (polynomial in v: exact)


def _golub_welsch(diag: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and normalized weights of the Gauss rule of the Jacobi matrix (diag, off)."""
    vals, vecs = np.linalg.eigh(np.diag(diag) + np.diag(off, 1) + np.diag(off, -1))
    return vals, vecs[0] ** 2 / (vecs[0] ** 2).sum()


def _gamma_rule(shape: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """E[f(X)], X ~ Gamma(shape, 1): generalized Laguerre nodes (alpha = shape - 1), normalized weights."""
    k = np.arange(n)
    return _golub_welsch(2 * k + shape, np.sqrt(np.arange(1, n) * (np.arange(1, n) + shape - 1)))


def _cosine_rule(dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """E[f(c)], c the cosine between two independent isotropic vectors in R^dim (dim >= 2): Gauss-Jacobi with
    alpha = beta = (dim - 3) / 2 (the density (1 - c^2)^alpha)."""
    a = (dim - 3) / 2.0
    k = np.arange(n, dtype=float)
    # symmetric Jacobi: diagonal 0, off-diagonal sqrt(k (k + 2a) / ((2k + 2a - 1)(2k + 2a + 1))) for k >= 1
    kk = np.arange(2, n, dtype=float)
    # k = 1 with its (1 + 2a) cancelled: 1 / (3 + 2a) (finite at dim = 2, a = -1/2, Chebyshev's 1/2)
    off = np.sqrt(np.concatenate([[1.0 / (3 + 2 * a)], kk * (kk + 2 * a) / ((2 * kk + 2 * a - 1) * (2 * kk + 2 * a + 1))]))
    return _golub_welsch(np.zeros_like(k), off)


def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


def _line_rule(unit: Unit, shift: np.ndarray, scale: np.ndarray, extra: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes e and weights for E over e ~ N(0, 1) of a function of shift + scale e, per row, split at the kinks
    (and at the rows' ``extra`` points)."""
    shift, scale = np.atleast_1d(shift), np.atleast_1d(scale)
    if unit.kinks is None:
        b = np.broadcast_to(np.linspace(-RANGE, RANGE, 9)[1:-1], (shift.size, 7))
    elif not unit.kinks:
        b = np.broadcast_to(np.array([-3.0, 0.0, 3.0]), (shift.size, 3))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            b = (np.asarray(unit.kinks)[None, :] - shift[:, None]) / scale[:, None]
        # and the normal's bulk: 24 nodes over a piece of length ~12 lose 6e-4 of E[relu relu'] at correlation 0.999
        b = np.concatenate([np.where(np.isfinite(b), b, RANGE), np.broadcast_to([-3.0, 0.0, 3.0], (shift.size, 3))],
                           axis=1)
    if extra is not None:
        b = np.concatenate([b, np.where(np.isfinite(extra), extra, RANGE)], axis=1)
    b = np.clip(np.sort(b, axis=1), -RANGE, RANGE)
    g, gw = np.polynomial.legendre.leggauss(_NODES)
    edges = np.concatenate([np.full((b.shape[0], 1), -RANGE), b, np.full((b.shape[0], 1), RANGE)], axis=1)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    half = (hi - lo) / 2
    x = (lo + hi) / 2 + half * g
    w = half * gw * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return x.reshape(shift.size, -1), w.reshape(shift.size, -1)


def _is_relu(unit: Unit) -> bool:
    probe = np.array([-1.5, -0.2, 0.3, 2.0])
    return unit.kinks == (0.0,) and np.allclose(unit.f(probe), np.maximum(probe, 0)) and \
        np.allclose(unit.df(probe), (probe > 0) * 1.0)


def _pair_means(unit: Unit, qa: np.ndarray, qb: np.ndarray, qab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E[phi(u_a) phi(u_b)], E[phi'(u_a) phi'(u_b)]) for arrays of 2 x 2 covariances (qa, qab; qab, qb)."""
    qa, qb, qab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (qa, qb, qab)))
    shape = qa.shape
    qa, qb, qab = qa.ravel(), qb.ravel(), qab.ravel()
    if _is_relu(unit):  # the arc-cosine kernels (Cho and Saul, "Kernel methods for deep learning", 2009)
        root = np.sqrt(qa * qb)
        cos = np.clip(qab / root, -1.0, 1.0)
        theta = np.arccos(cos)
        f0 = root / (2 * math.pi) * (np.sin(theta) + (math.pi - theta) * cos)
        return f0.reshape(shape), ((math.pi - theta) / (2 * math.pi)).reshape(shape)
    sa = np.sqrt(qa)
    rest = np.sqrt(np.maximum(qb - qab * qab / qa, 0.0))
    extra = None
    if unit.kinks:
        # near a kink k of u_b the inner mean moves over |dz| ~ rest sqrt(qa) / |qab| around z = k sqrt(qa) / qab,
        # steep at a high correlation: break the outer rule there too
        with np.errstate(divide="ignore", invalid="ignore"):
            centre = np.asarray(unit.kinks)[None, :] * (sa / qab)[:, None]
            step = (rest * sa / np.abs(qab))[:, None]
        extra = np.concatenate([centre + f * step for f in (-6.0, -2.0, 0.0, 2.0, 6.0)], axis=1)
    z, wz = _line_rule(unit, np.zeros_like(sa), sa, extra)                # u_a = sqrt(qa) z
    slope = (qab / qa)[:, None] * sa[:, None] * z                         # E[u_b | u_a]
    e, we = _line_rule(unit, slope.ravel(), np.repeat(rest, z.shape[1]))
    ub = slope.ravel()[:, None] + np.repeat(rest, z.shape[1])[:, None] * e
    inner_f = (we * unit.f(ub)).sum(axis=1).reshape(z.shape)
    inner_d = (we * unit.df(ub)).sum(axis=1).reshape(z.shape)
    ua = sa[:, None] * z
    f0 = (wz * unit.f(ua) * inner_f).sum(axis=1)
    f1 = (wz * unit.df(ua) * inner_d).sum(axis=1)
    return f0.reshape(shape), f1.reshape(shape)


def _check_two_layer(net: Any, width: Any) -> int:
    from ..spec.network import Network

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")
    if net.norms:
        raise InvalidArgument("net", net.describe(), "a network without normalization layers")
    if net.depth != 2:
        raise InvalidArgument("net", net.describe(), "one hidden layer (L = 2)",
                              "the next order of tr Sigma^2 is derived for L = 2 only")
    if float(net.input_q2) != 0.0:
        raise InvalidArgument("net", net.describe(), "independent inputs (input_q2 = 0)")
    M = check_int("width", width, minimum=1)
    if net.widths(M)[0] < 2:
        raise InvalidArgument("width", M, "an input width M_0 >= 2")
    return M


def two_layer_bulk(net: Any, width: int) -> Any:
    """E_W tr Sigma_W^2 = M D + M (M - 1) O, exact at width M for one hidden layer (module docstring).

    Args:
        net: a numeric :class:`~meanfield.spec.network.Network` with L = 2, no normalization, independent inputs.
        width: M.

    Returns:
        a :class:`meanfield.finite.fourpoint.BulkFluctuations` with the exact tr Sigma^2, Var(mu . g) and Var|c|^2
        and the mean-field scales d, o of :func:`meanfield.finite.fourpoint.bulk_fluctuations`.

    Raises:
        InvalidArgument: L != 2, normalization layers, symbolic parameters or correlated inputs.

    Example:
        >>> from meanfield.spec.network import Network
        >>> from meanfield.finite.fourpoint import bulk_fluctuations
        >>> net = Network(2, "relu", 2, 0)
        >>> round(two_layer_bulk(net, 4096).trace_sigma2 / bulk_fluctuations(net, 4096).trace_sigma2, 3)
        1.0
    """
    return _two_layer_bulk(net, _check_two_layer(net, width))


@functools.lru_cache(maxsize=64)
def _two_layer_bulk(net: Any, M: int) -> Any:
    from .fourpoint import BulkFluctuations, bulk_fluctuations

    first = bulk_fluctuations(net, M)
    parts = _two_layer_parts(net, M)
    n = parts["units"]
    return BulkFluctuations(M, n * parts["D"] + n * (n - 1) * parts["O"],
                            n * parts["spike_unit"] + n * (n - 1) * parts["spike_pair"],
                            n * parts["diag_unit"] + n * (n - 1) * parts["var_y"], first.d, first.o)


@functools.lru_cache(maxsize=64)
def _two_layer_parts(net: Any, M: int) -> dict:
    """The per-unit (one unit's) and per-pair (two units') integrals behind :func:`two_layer_bulk` and
    :func:`two_layer_entry_variances`."""
    M0, M1 = net.widths(M)[:2]
    unit = Unit.of(net.phi(1))
    q, sw, sb = float(net.input_q1), float(net.sigma_w2[0]), float(net.sigma_b2[0])
    sv = float(net.sigma_w2[1]) / M1          # Var of an output weight

    # --- O: the mean kernel over the inputs' geometry (|x|^2 = q M0 t, |x'|^2 = q M0 t', cosine c)
    t, wt = _gamma_rule(M0 / 2.0, _RADIAL)
    t = t * 2.0 / M0                           # |x|^2 / (q M0): Gamma(M0/2) times 2/M0, mean 1
    c, wc = _cosine_rule(M0, _ANGULAR)
    T1, T2, C = np.meshgrid(t, t, c, indexing="ij")
    W = wt[:, None, None] * wt[None, :, None] * wc[None, None, :]
    dot = q * M0 * np.sqrt(T1 * T2) * C         # x . x'
    qa, qb, qab = sw * q * T1 + sb, sw * q * T2 + sb, sw * dot / M0 + sb
    f0, f1 = _pair_means(unit, qa, qb, qab)
    kbar = f0 + sv * f1 * (dot + 1.0)
    m = (kbar * (wt[None, :, None] * wc[None, None, :])).sum(axis=(1, 2))   # E_x' Kbar as a function of |x|^2
    mean = float((W * kbar).sum())
    var_k = float((W * (kbar - mean) ** 2).sum())
    var_m = float((wt * (m - mean) ** 2).sum())
    f0d, f1d = _pair_means(unit, sw * q * t + sb, sw * q * t + sb, sw * q * t + sb)
    diag = f0d + sv * f1d * (q * M0 * t + 1.0)                               # Kbar(x, x)
    y = diag - 2.0 * m
    var_y = float((wt * (y - (wt * y).sum()) ** 2).sum())
    O, spike_pair = var_k - 2.0 * var_m, var_m

    # --- one unit: |w|^2 = sw q-free chi^2 / M0 (times the input variance q inside s), b, v
    r, wr = _gamma_rule(M0 / 2.0, _RADIAL)
    norm = np.sqrt(sw * r * 2.0 / M0)          # |w|
    hb, hw = _hermite(_GAUSS)
    B = math.sqrt(sb) * hb if sb > 0 else np.zeros(1)
    WB = hw if sb > 0 else np.ones(1)
    nw, bb = (a.ravel() for a in np.meshgrid(norm, B, indexing="ij"))
    ww = (wr[:, None] * WB[None, :]).ravel()
    e, we = _line_rule(unit, bb, nw * math.sqrt(q))
    s = math.sqrt(q) * e                       # s = w . x / |w| ~ N(0, q)
    u = nw[:, None] * s + bb[:, None]
    a, dp = unit.f(u), unit.df(u)

    def E(x: np.ndarray) -> np.ndarray:
        return (we * x).sum(axis=1)

    # moments in s of a = phi(u) and the unit-v parts p0 = phi'(u) (p = v p0)
    ma, mp, mps = E(a), E(dp), E(dp * s)
    ca, cp, cps = a - ma[:, None], dp - mp[:, None], dp * s - mps[:, None]
    vaa, vpp, vqq, vpq = E(ca * ca), E(cp * cp), E(cps * cps), E(cp * cps)
    vap, vaq = E(ca * cp), E(ca * cps)
    mp2 = E(dp * dp)
    ev2, ev4 = sv, 3.0 * sv * sv
    perp = M0 - 1
    # tr Cov_x(g_w)^2: the (a, p s, p) block and the p x_perp block
    D = vaa**2 + 2 * ev2 * (vap**2 + vaq**2) + ev4 * (vpp**2 + vqq**2 + 2 * vpq**2 + perp * (q * mp2) ** 2)
    # Var_x(mu_w . g_w(x)), mu_w . g_w = ma a + v^2 (mps p0 s + mp p0)
    X0, X2 = ma[:, None] * ca, mps[:, None] * cps + mp[:, None] * cp
    spike_unit = E(X0 * X0) + 2 * ev2 * E(X0 * X2) + ev4 * E(X2 * X2)
    # Var_x |c_w(x)|^2 = Var(A + v^2 p0^2 R), A = ca^2 + v^2 (cps^2 + cp^2), R = |x_perp|^2 ~ q chi^2_perp
    A0, A2, P = ca * ca, cps * cps + cp * cp, dp * dp
    ER, ER2 = q * perp, q * q * (perp * perp + 2 * perp)
    EA0, EA2, EP = E(A0), E(A2), E(P)
    # E[(A0 + v^2 (A2 + P R))^2] - (E A0 + v^2 (E A2 + E P E R))^2 with E v^2, E v^4
    second = (E(A0 * A0) + 2 * ev2 * (E(A0 * A2) + E(A0 * P) * ER)
              + ev4 * (E(A2 * A2) + 2 * E(A2 * P) * ER + E(P * P) * ER2))
    first_sq = EA0**2 + 2 * ev2 * EA0 * (EA2 + EP * ER) + ev4 * (EA2 + EP * ER) ** 2
    diag_unit = second - first_sq
    # one unit's kernel k_w(x, x') = a a' + v^2 p0 p0' (x . x' + 1), x . x' = s s' + P (P = x_perp . x_perp': mean 0,
    # E P^2 = q^2 (M0 - 1), independent of s, s'), and k_w(x, x) = a^2 + v^2 p0^2 (s^2 + R + 1)
    ma2, map_s, map_ = E(a * a), E(a * dp * s), E(a * dp)
    mp2s2, mp2s = E(dp * dp * s * s), E(dp * dp * s)
    k2_off = ma2**2 + 2 * ev2 * (map_s**2 + map_**2) + ev4 * (mp2s2**2 + 2 * mp2s**2 + (1 + q * q * perp) * mp2**2)
    s1 = s * s + 1.0
    k2_diag = (E(a**4) + 2 * ev2 * (E(a * a * dp * dp * s1) + E(a * a * dp * dp) * ER)
               + ev4 * (E(dp**4 * s1 * s1) + 2 * E(dp**4 * s1) * ER + E(dp**4) * ER2))
    return dict(units=M1, O=O, spike_pair=spike_pair, var_y=var_y, var_k=var_k, mean_k=mean,
                var_kdiag=float((wt * (diag - (wt * diag).sum()) ** 2).sum()), mean_kdiag=float(wt @ diag),
                D=float(ww @ D), spike_unit=float(ww @ spike_unit), diag_unit=float(ww @ diag_unit),
                k2_off=float(ww @ k2_off), k2_diag=float(ww @ k2_diag))


def two_layer_entry_variances(net: Any, width: int) -> tuple[float, float]:
    """(Var(T G_ts), Var(T G_tt)) of one output's Gram entries over weights and inputs, exact at width M for one
    hidden layer: M Var(k_w) + M (M - 1) Cov(k_i, k_j), Cov(k_i, k_j) = Var over the inputs of Kbar (module docstring;
    the first order is :func:`meanfield.finite.fourpoint.same_output_variance`).

    Raises:
        InvalidArgument: as :func:`two_layer_bulk`.

    Example:
        >>> from meanfield.spec.network import Network
        >>> from meanfield.finite.fourpoint import same_output_variance
        >>> net = Network(2, "relu", 2, 0)
        >>> v, first = two_layer_entry_variances(net, 4096), same_output_variance(net, 4096, 2)
        >>> round(v[0] / first.offdiag, 2), round(v[1] / first.diag, 2)
        (1.0, 1.0)
    """
    M = _check_two_layer(net, width)
    p = _two_layer_parts(net, M)
    n = p["units"]
    off = n * (p["k2_off"] - p["mean_k"] ** 2) + n * (n - 1) * p["var_k"]
    diag = n * (p["k2_diag"] - p["mean_kdiag"] ** 2) + n * (n - 1) * p["var_kdiag"]
    return float(off), float(diag)


def bulk_scale(net: Any, width: int) -> float:
    """M (E tr Sigma_W^2 / its first-order value - 1): the O(1/M) relative correction of the four-point tr Sigma^2.

    Exact at width M for one hidden layer (:func:`two_layer_bulk`); the next order of deeper networks is not
    derived.

    Raises:
        InvalidArgument: as :func:`two_layer_bulk` (in particular L != 2).

    Example:
        >>> from meanfield.spec.network import Network
        >>> 0 < bulk_scale(Network(2, "relu", 2, 0), 64) < 3
        True
    """
    from .fourpoint import bulk_fluctuations

    M = _check_two_layer(net, width)
    return M * (two_layer_bulk(net, M).trace_sigma2 / bulk_fluctuations(net, M).trace_sigma2 - 1.0)


def covers(net: Any) -> bool:
    """Whether :func:`two_layer_bulk` is exact for ``net``: numeric, plain, one hidden layer, independent inputs.

    Example:
        >>> from meanfield.spec.network import Network
        >>> covers(Network(2, "tanh", 1, 0.1)), covers(Network(3, "tanh", 1, 0.1))
        (True, False)
    """
    from ..spec.network import Network

    return (isinstance(net, Network) and not net.is_symbolic and not net.norms and net.depth == 2
            and float(net.input_q2) == 0.0)


def top_corrected_bulk(net: Any, width: int) -> Any:
    """tr Sigma^2 = [four-point total - four-point top] + top at the next order, likewise Var(mu . g), for L >= 3.

    The top two layers' parameter blocks (the last hidden layer's and the output layer's) at the next order,
    :func:`meanfield.finite.fourpoint_deep.top_blocks_next_order`. For L = 3 the rest of tr Sigma^2 (the first hidden
    layer's block and its cross terms with the top) is at the next order too,
    :func:`meanfield.finite.fourpoint_lower.lower_blocks_next_order`, so tr Sigma^2 is whole at the next order (error
    O(1/M) absolute against O(M)); likewise the spike Var(mu . g). For L >= 4 layer L - 2's block and its cross terms
    with the top are at the next order too (the same function), and the blocks below L - 2 with their cross terms
    (four-point engine: all blocks minus :func:`meanfield.finite.fourpoint.block_bulk_fluctuations` of layers L - 2..L)
    stay at the engine's first order: error O(1) absolute (their next order, not derived) against O(M). The centred
    norms' variance ``diagonal`` and the scales d, o stay at the first order.

    Args:
        net: a numeric plain :class:`~meanfield.spec.network.Network` with L >= 3 and independent inputs.
        width: M.

    Returns:
        a :class:`meanfield.finite.fourpoint.BulkFluctuations`.

    Raises:
        InvalidArgument: L < 3 (one hidden layer: :func:`two_layer_bulk`), normalization layers, symbolic parameters
            or correlated inputs.

    Example:
        >>> from meanfield.spec.network import Network
        >>> from meanfield.finite.fourpoint import bulk_fluctuations
        >>> net = Network(3, "relu", 2, 0)
        >>> bulk_fluctuations(net, 64).trace_sigma2 < top_corrected_bulk(net, 64).trace_sigma2
        True
    """
    from ..spec.network import Network
    from .fourpoint_deep import top_blocks_next_order

    if isinstance(net, Network) and net.depth < 3:
        raise InvalidArgument("net", net.describe(), "at least two hidden layers (L >= 3)",
                              "one hidden layer is exact: two_layer_bulk")
    return _top_corrected_bulk(net, top_blocks_next_order(net, width).width)  # validates net and width


@functools.lru_cache(maxsize=64)
def _top_corrected_bulk(net: Any, M: int) -> Any:
    from .fourpoint import BulkFluctuations, block_bulk_fluctuations, bulk_fluctuations
    from .fourpoint_deep import top_blocks_next_order

    from .fourpoint_lower import lower_blocks_next_order

    L = net.depth
    first = bulk_fluctuations(net, M)
    trace = lower_blocks_next_order(net, M).trace + top_blocks_next_order(net, M).trace
    spike = lower_blocks_next_order(net, M, "spike").trace + top_blocks_next_order(net, M, "spike").trace
    if L >= 4:   # the blocks below layer L - 2 and their cross terms at the engine's first order
        upper = block_bulk_fluctuations(net, M, tuple(range(L - 2, L + 1)))
        trace += first.trace_sigma2 - upper.trace_sigma2
        spike += first.mean_direction - upper.mean_direction
    return BulkFluctuations(M, trace, spike, first.diagonal, first.d, first.o)


def covers_top(net: Any) -> bool:
    """Whether :func:`top_corrected_bulk` applies: numeric, plain, L >= 3, independent inputs.

    Example:
        >>> from meanfield.spec.network import Network
        >>> covers_top(Network(3, "tanh", 1, 0.1)), covers_top(Network(2, "tanh", 1, 0.1))
        (True, False)
    """
    from ..spec.network import Network

    return (isinstance(net, Network) and not net.is_symbolic and not net.norms and net.depth >= 3
            and float(net.input_q2) == 0.0)


def next_order_bulk(net: Any, width: int) -> Any:
    """The bulk fluctuations at their best derived order: exact at width M where :func:`covers` (one hidden layer,
    :func:`two_layer_bulk`); for deeper plain networks (:func:`covers_top`) tr Sigma^2 and the spike with the top two
    layers' blocks at the next order, and the lower blocks too (all at L = 3, layer L - 2's at L >= 4:
    :func:`top_corrected_bulk`); else
    the first order of
    :func:`meanfield.finite.fourpoint.bulk_fluctuations`.

    Example:
        >>> from meanfield.spec.network import Network
        >>> net = Network(3, "relu", 2, 0)
        >>> next_order_bulk(net, 64) == top_corrected_bulk(net, 64)
        True
    """
    from .fourpoint import bulk_fluctuations

    if covers(net):
        return two_layer_bulk(net, check_int("width", width, minimum=1))
    if covers_top(net):
        return top_corrected_bulk(net, width)
    return bulk_fluctuations(net, width)
