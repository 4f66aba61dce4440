"""Full batch norm on the output: O(1/M) corrections of E G, m, s, kappa_1, kappa_2, derived.

With a full batch norm on the output, f_k = (u_k - mean_t u_k) / sigma_k, sigma_k^2 the batch variance of output
k's pre-normalization values u_k (population, over the T samples), the Jacobian of f_k is A_k J^u_k with
A_k = (1 / sigma_k) (Pi - y_k y_k^T / T), Pi = I - 1 1^T / T, y_k = Pi u_k / sigma_k, so exactly

    G_kl = A_k Theta_kl A_l^T / T,   Theta_kl = T G^plain_kl (the plain network's NTK block; A_k 1 = 0 drops the
                                     output bias),

and R_k = sigma_k^2 A_k A_k^T = Pi - y_k y_k^T / T is a projector of rank T - 2.

Exact conditioning. Given everything below the output row w_k (~ N(0, sigma_w^2 / M I), M = M_{L-1}), g = Pi u_k =
Pi H^T w_k is Gaussian with the realized kernel, g ~ N(0, Omega), Omega = sigma_w^2 Pi K Pi (K = H^T H / M of the
last hidden layer), and Theta_kk = 1 1^T + M K + S(w_k), S_uv = w_k^T X_uv w_k (X_ac = phi'_a(u) Theta^{L-1}_ac
phi'_c(v)). Stein's lemma twice on w_k gives, for any F(g),

    E[S_uv F(g)] = sigma_w^2 N_uv E[F] + (sigma_w^2 / M)^2 sum_ab E[d_a d_b F] (Pi Y^uv Pi)_ab,

N_uv = tr X_uv / M (the realized average of the previous layer's NTK diagonal, as in
:mod:`meanfield.finite.corrections`) and Y^uv_ab = h_a^T X_uv h_b, O(M^2), needed to leading order: a diagonal part
M Theta E[phi_a phi_b phi'_u phi'_v] and the recursion Y^l = M_l Theta^l E4^l + (M_l / M_{l-1})^2 sigma_w^4
D_u Y^{l-1} D_v^T of that module, here for four samples. So, given the layers below, E[G | below] =
E_g[A (M K + sigma_w^2 N) A^T] / T + (c), with (c) the Stein term (Hermite weights make E[d_a d_b F] =
E[F (g_a g_b / v^2 - Pi_ab / v)] at Omega = v Pi).

Mean field. K and N at their means (exchangeable): Theta' = M K + sigma_w^2 N = D I + O 1 1^T, Omega = v Pi with
v = sigma_w^2 (K_tt - K_ts), so T sigma^2 = v chi^2_{T-1} and y is uniform on the sphere |y|^2 = T in the complement
of 1, independent of sigma: E G_tt = D (T - 2) / (T v (T - 3)) and s = C D^2 (T - 2) E[1/sigma^4] / (T^2 P),
E[1/sigma^4] = T^2 / (v^2 (T - 3)(T - 5)) (exactly predict's values).

The O(1/M) terms:

1. exchangeable mean shifts: D -> D + dD (the plain network's corrected NTK means,
   :func:`meanfield.finite.corrections.ntk_mean_shift`) and v -> v + dv (the realized kernel's mean shift of layer
   L - 1, :func:`meanfield.finite.corrections.kernel_mean_shift`): E G -> E G (1 + dD / D) v / (v + dv);
2. the entry fluctuations of Theta, whose sum over a block's T^2 entries is relatively T / M (the largest term in s):
   to leading order independent of (sigma_k, y_k), so E ||A dTheta A^T||_F^2 = E[1/sigma^4] sum E[R_uu' R_vv']
   Cov(Theta_uv, Theta_u'v') with E[R_uu' R_vv'] = (1 - 2/(T-1) + 1/(T^2-1)) Pi_uu' Pi_vv' + (Pi_uv Pi_u'v' +
   Pi_uv' Pi_u'v) / (T^2 - 1) (fourth moments of y), and between outputs E[1/sigma^2]^2 ((T-2)/(T-1))^2
   sum Pi_uu' Pi_vv' Cov(Theta_kl uv, Theta_kl u'v'), the covariances of
   :func:`meanfield.finite.fourpoint.gram_covariance` summed over the T^4 index tuples by label patterns;
3. (a) the realized kernel's fluctuations in the law of g (second order: Price's theorem, and Jensen makes
   E[1/sigma^2] grow), (b) their coupling with the fluctuations of M K + sigma_w^2 N (h.h = M K is itself a part of
   Theta), (c) the Stein term above. (a) and (b) need Cov of (K^{L-1}, N^{L-1}) over any pattern of equal samples:
   the realized-average recursion of :mod:`meanfield.finite.corrections` run for four exchangeable samples (the
   four-sample Gaussian integrals by conditioning on the common part, u_i = sqrt(q_2) z + sqrt(q_1 - q_2) e_i,
   so 0 <= q_2 is required), expanded to the T x T matrices by label patterns. Their second-order effect is an
   integral over a Gaussian of dimension T (T + 1) plus the T - 1 of g; it is evaluated by Monte Carlo with a
   fixed seed and antithetic pairs (the first order cancels exactly; the fluctuation is scaled by EPS = 1/50 and
   the second difference divided by EPS^2, exact for the quadratic term), and (c) by Monte Carlo over g. The
   Monte Carlo standard errors are returned (``monte_carlo_sem``), about 0.2% of E G_tt and 0.5% of s at 40000
   draws.

Between outputs the blocks have mean zero and only term 2 enters at O(1/M). Checked against sampled networks
(``derivations/corrections.md``, section 5: tanh, relu, cos, silu, several width profiles, M = 32 to 256, T = 12 to 32,
400 to 10000 seeds): the means within 1.6 standard errors everywhere; s within about one at M >= 128 (T = 16) and
M = 256 (T = 32), with an O((T/M)^2) remainder of -2 to -3% at M = 64, T = 16.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit, breaks, normal_rule
from ..spec.network import BatchNorm, Network
from ..theory.fisher import predict
from ..theory.recursions import order_parameters
from .corrections import STATISTICS, finite_width_stats as plain_finite_width_stats
from .corrections import gram_corrections, kernel_mean_shift, two_sample_layer
from .fourpoint import gram_covariance
from .layernorm import finite_width_stats as layer_norm_finite_width_stats

__all__ = ["OutputBatchNormTerms", "output_batch_norm_terms", "class_tensor", "finite_width_stats", "DRAWS"]

DRAWS = 40000      # Monte Carlo draws of the coupling terms (3.): standard errors about 0.2% of E G_tt, 0.5% of s
SEED = 20261207    # their fixed seed: predictions are reproducible

@dataclass(frozen=True)
class OutputBatchNormTerms:
    """E G, m, s, kappa_1, kappa_2 with their O(1/M) terms for a full batch norm on the output (module docstring).

    Attributes:
        network, width, samples: what was computed (M, T).
        mean_field_diag, mean_field_offdiag, s_mean_field, m_mean_field: ``predict``'s values.
        ntk_factor: (D + dD) / D, the plain network's corrected D = T (E G_tt - E G_ts) over its mean field (1.).
        scale_factor: v / (v + dv), the pre-normalization variance's mean shift (1.).
        s_same, s_cross: the entry-fluctuation parts of s (2.; same output, between outputs).
        coupling_diag, coupling_offdiag, coupling_s: the terms 3. (a)-(c) of E G_tt, E G_ts and s.
        monte_carlo_sem: the Monte Carlo standard errors of (coupling_diag, coupling_offdiag, coupling_s).
        mean_diag, mean_offdiag, m, s, kappa1, kappa2: corrected.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.
        draws: Monte Carlo draws used for 3.

    Example:
        >>> t = output_batch_norm_terms(Network(2, "tanh", 2, 0.1, outputs=2, norms=["batch:last"]), 64, 12,
        ...                             draws=2000)
        >>> bool(t.s > t.s_mean_field), bool(t.s_same > 0), bool(t.s_cross > 0)
        (True, True, True)
    """

    network: Network
    width: int
    samples: int
    mean_field_diag: float
    mean_field_offdiag: float
    s_mean_field: float
    m_mean_field: float
    ntk_factor: float
    scale_factor: float
    s_same: float
    s_cross: float
    coupling_diag: float
    coupling_offdiag: float
    coupling_s: float
    monte_carlo_sem: tuple
    mean_diag: float
    mean_offdiag: float
    m: float
    s: float
    kappa1: float
    kappa2: float
    P: int
    alpha: float
    draws: int


def _check(net: Network, width: int, samples: int, draws: int) -> tuple[int, int, int]:
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")
    last = net.norm_at(net.depth)
    if len(net.norms) != 1 or not isinstance(last, BatchNorm) or last.center_only:
        raise InvalidArgument("net", net.describe(), "a full batch norm on the output and no other normalization")
    if net.depth < 2:
        raise InvalidArgument("net", net.describe(), "depth >= 2 (a hidden layer below the output)")
    M = check_int("width", width, minimum=1)
    # the Monte Carlo of s averages up to 1/sigma^8: finite variance needs T - 1 > 8
    T = check_int("samples", samples, minimum=10)
    return M, T, check_int("draws", draws, minimum=100)


@functools.lru_cache(maxsize=32)
def output_batch_norm_terms(net: Network, width: int, samples: int, *, draws: int = DRAWS) -> OutputBatchNormTerms:
    """E G = mean field (1 + dD/D) v/(v + dv) + couplings, s + entry fluctuations: full batch norm on the output.

    Args:
        net: a numeric network whose only normalization is a full batch norm on the output, depth >= 2, inputs
            with a non-negative mean product (input_q2 >= 0).
        width: M.
        samples: T >= 10 (the Monte Carlo of s needs E[1/sigma^8]).
        draws: Monte Carlo draws for the coupling terms (fixed seed).

    Returns:
        :class:`OutputBatchNormTerms`.

    Raises:
        InvalidArgument: another placement, a symbolic network, depth 1, T < 10, a negative kernel overlap.

    Example:
        >>> t = output_batch_norm_terms(Network(3, "relu", 2, 0.1, norms=["batch:last"]), 64, 12, draws=2000)
        >>> bool(t.s > t.s_mean_field), t.s_cross      # C = 1: no cross-output blocks
        (True, 0.0)
    """
    M, T, draws = _check(net, width, samples, draws)
    plain = net.with_(norms=())
    base = predict(net, M, T)
    corrected = gram_corrections(plain, M, T)
    D0 = T * (corrected.mean_field_diag - corrected.mean_field_offdiag)
    D = T * (corrected.mean_diag - corrected.mean_offdiag)
    L = net.depth
    op = order_parameters(plain, T)
    sw = float(net.sigma_w2[L - 1])
    v = sw * (float(op.layers[L - 1].qhat1) - float(op.layers[L - 1].qhat2))
    shift = kernel_mean_shift(plain, M)[L - 1]
    dv = sw * float(shift[0] - shift[1]) / plain.widths(M)[L - 1]
    ntk_factor, scale_factor = D / D0, v / (v + dv)
    factor = ntk_factor * scale_factor
    gd, go = float(base.gram_diag), float(base.gram_offdiag)
    C, P = net.outputs, int(base.P)
    inv2 = T / (v * (T - 3))
    inv4 = T**2 / (v**2 * (T - 3) * (T - 5))
    Pi = np.eye(T) - 1.0 / T
    a, b = 1 - 2 / (T - 1) + 1 / (T**2 - 1), 1 / (T**2 - 1)

    def contract(cov: np.ndarray, first: float, second: float) -> float:
        """sum (first Pi_uu' Pi_vv' + second (Pi_uv Pi_u'v' + Pi_uv' Pi_u'v)) cov[u, v, u', v']."""
        out = first * np.einsum("ac,bd,abcd->", Pi, Pi, cov)
        if second:
            out += second * (np.einsum("ab,cd,abcd->", Pi, Pi, cov) + np.einsum("ad,cb,abcd->", Pi, Pi, cov))
        return float(out)

    same = class_tensor(T, lambda lab: gram_covariance(plain, M, (0, 0) + lab[:2], (0, 0) + lab[2:]))
    s_same = C * inv4 * contract(same, a, b) / (T**2 * P)
    if C >= 2:
        cross = class_tensor(T, lambda lab: gram_covariance(plain, M, (0, 1) + lab[:2], (0, 1) + lab[2:]))
        s_cross = C * (C - 1) * inv2**2 * ((T - 2) / (T - 1)) ** 2 * contract(cross, 1.0, 0.0) / (T**2 * P)
    else:
        s_cross = 0.0
    cd, co, csq, sd, so, ssq = _coupling_terms(net, M, T, draws, SEED)
    mean_d, mean_o = gd * factor + cd, go * factor + co
    s = float(base.s) * factor**2 + s_same + s_cross + C * csq / P
    alpha = float(base.alpha)
    return OutputBatchNormTerms(net, M, T, gd, go, float(base.s), float(base.m), ntk_factor, scale_factor, s_same,
                                s_cross, cd, co, C * csq / P, (sd, so, C * ssq / P), mean_d, mean_o,
                                C * T * mean_d / P, s, T * mean_d / (alpha * M), T * mean_o / (alpha * M), P, alpha,
                                draws)


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict:
    """The "1/M" model of ``predict(..., finite_width="1/M")``: :func:`output_batch_norm_terms` for a full batch norm
    on the output, :func:`meanfield.finite.layernorm.finite_width_stats` for a layer norm on layer 2 of a three-layer
    net (the Gram means, m and the kappa's; not s), :func:`meanfield.finite.corrections.finite_width_stats` otherwise
    (mean-field values and a note where nothing is derived).

    Example:
        >>> net = Network(3, "relu", 2, 0.1, outputs=2, norms=["layer:1"])
        >>> finite_width_stats(net, 64, 16, predict(net, 64, 16))["includes_1_over_M"]
        frozenset()
    """
    layer_norm = layer_norm_finite_width_stats(net, width, samples, base)
    if layer_norm is not None:
        return layer_norm
    last = net.norm_at(net.depth) if isinstance(net, Network) else None
    if not (isinstance(last, BatchNorm) and not last.center_only and len(net.norms) == 1):
        return plain_finite_width_stats(net, width, samples, base)
    try:
        t = output_batch_norm_terms(net, width, samples)
    except InvalidArgument as error:
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    notes = ("full batch norm on the output: E G, m, s, kappa's with their derived O(1/M) terms; the coupling terms "
             f"by Monte Carlo ({t.draws} draws, fixed seed; standard errors {t.monte_carlo_sem[0]:.3g} of E G_tt, "
             f"{t.monte_carlo_sem[2]:.3g} of s)", "lambda_max: not corrected (the mean-field value or bounds)")
    return dict(gram_diag=t.mean_diag, gram_offdiag=t.mean_offdiag, m=t.m, s=t.s, kappa1=t.kappa1, kappa2=t.kappa2,
                includes_1_over_M=STATISTICS, notes=notes)


_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def class_tensor(T: int, value) -> np.ndarray:
    """C[u, v, u', v'] = value(labels) for all T^4 index tuples, labels the pattern of equal indices.

    ``value`` is called once per pattern (at most 15) with the canonical labels (first appearance numbered
    0, 1, 2, 3), e.g. (0, 1, 0, 2) for u = u' with v, v' and u all different.

    Example:
        >>> C = class_tensor(3, lambda labels: float(len(set(labels))))
        >>> C.shape, float(C[0, 0, 0, 0]), float(C[0, 1, 0, 2])
        ((3, 3, 3, 3), 1.0, 3.0)
    """
    T = check_int("T", T, minimum=1)
    idx = np.indices((T,) * 4).reshape(4, -1)
    code = np.zeros(idx.shape[1], dtype=int)
    for bit, (a, b) in enumerate(_PAIRS):
        code |= (idx[a] == idx[b]).astype(int) << bit
    out = np.empty(idx.shape[1])
    for c in np.unique(code):
        where = np.flatnonzero(code == c)
        first = idx[:, where[0]]
        seen: dict = {}
        labels = tuple(seen.setdefault(int(x), len(seen)) for x in first)
        out[where] = value(labels)
    return out.reshape((T,) * 4)


# -- the four-sample world: realized-kernel and NTK covariances for any pattern of equal samples ------------------

_P4 = tuple((a, b) for a in range(4) for b in range(a, 4))       # the 10 pairs of four samples
_P4_INDEX = {p: i for i, p in enumerate(_P4)}
_Z_RULE = normal_rule(np.array([[-3.0, 0.0, 3.0]]))


def _pair(a: int, b: int) -> int:
    return _P4_INDEX[(min(a, b), max(a, b))]


def _moments4(unit: Unit, q1: float, q2: float):
    """E[prod_i phi^p_i phi'^q_i (u_i)] for four exchangeable samples (kernel q1 on, q2 off the diagonal): u_i =
    sqrt(q2) z + sqrt(q1 - q2) e_i, the e_i independent given z, so the mean is E_z[prod_i m_{p_i q_i}(z)]."""
    if not (q2 >= 0 and q1 > q2):
        raise InvalidArgument("net", (q1, q2), "layer kernels with 0 <= q_ts < q_tt (exchangeable, non-negative "
                                               "overlap: the one-dimensional conditioning)")
    z, wz = _Z_RULE
    shift = math.sqrt(q2) * z[0]
    scale = math.sqrt(q1 - q2)
    e, we = normal_rule(breaks(unit, shift, scale))
    u = shift[:, None] + scale * e
    fa, fd = np.asarray(unit.f(u), dtype=float), np.asarray(unit.df(u), dtype=float)
    cache: dict = {}

    def m(p: int, q: int) -> np.ndarray:
        if (p, q) not in cache:
            cache[(p, q)] = (we * fa**p * fd**q).sum(axis=1)
        return cache[(p, q)]

    def mean(powers: list) -> float:
        out = wz[0].copy()
        for p, q in powers:
            if p or q:
                out = out * m(p, q)
        return float(out.sum())
    return mean


def _powers(*factors: tuple) -> list:
    """Per-sample (power of phi, power of phi') of a product of factors (kind, sample), kind 'f' or 'd'."""
    out = [[0, 0] for _ in range(4)]
    for kind, sample in factors:
        out[sample][0 if kind == "f" else 1] += 1
    return [tuple(x) for x in out]


@dataclass(frozen=True)
class _World:
    """Covariances of V = (K^{L-1} pairs, N^{L-1} pairs) of four samples, the mean kernel and NTK of layer L - 1,
    and the sandwiched NTK Y^{uv}_{ab} (u, v) = (0, 0) or (0, 1), all to leading order."""

    k: tuple            # (K_tt, K_ts) of layer L - 1
    n: tuple            # (N_tt, N_ts)
    cov: np.ndarray     # 20 x 20
    y: dict             # (0, 0) / (0, 1) -> 4 x 4 matrix over (a, b)


@functools.lru_cache(maxsize=32)
def _world(net: Network, width: int) -> _World:
    L = net.depth
    widths = net.widths(width)
    sw = [float(v) for v in net.sigma_w2]
    sb = [float(v) for v in net.sigma_b2]
    q1, q2 = float(net.input_q1), float(net.input_q2)
    kbar = (q1, q2)
    Q = lambda a, b: q1 if a == b else q2  # noqa: E731 - the inputs' kernel
    cov0 = np.zeros((20, 20))
    for i, (a, b) in enumerate(_P4):
        for j, (c, d) in enumerate(_P4):
            cov0[i, j] = (Q(a, c) * Q(b, d) + Q(a, d) * Q(b, c)) / widths[0]
    covs = {(0, 0): cov0}
    theta = (1 + widths[0] * q1, 1 + widths[0] * q2)     # mean Theta^1 (tt, ts)
    ncoef: dict = {}
    cbar = nbar = None
    y = {(0, 0): np.zeros((4, 4)), (0, 1): np.zeros((4, 4))}
    for j in range(1, L):
        qa, qb = sw[j - 1] * kbar[0] + sb[j - 1], sw[j - 1] * kbar[1] + sb[j - 1]
        unit = Unit.of(net.phi(j))
        mean = _moments4(unit, qa, qb)
        lay = two_sample_layer(unit, qa, qb, qa)
        # unit-level covariance of the 20 products (phi_a phi_b, phi'_a phi'_b)
        facs = [(("f", a), ("f", b)) for a, b in _P4] + [(("d", a), ("d", b)) for a, b in _P4]
        means = np.array([mean(_powers(*f)) for f in facs])
        second = np.array([[mean(_powers(*f, *g)) for g in facs] for f in facs])
        sigma = second - np.outer(means, means)
        # J: d(F, c)_p / dK^{j-1}_A, local (F_ab depends on Q_aa, Q_bb, Q_ab only)
        J = np.zeros((20, 20))
        for i, (a, b) in enumerate(_P4):
            for off, grad in ((0, lay.gradF), (10, lay.gradc)):
                if a == b:
                    J[off + i, _pair(a, a)] = grad[0, 0]
                else:
                    J[off + i, _pair(a, a)] = grad[1, 0]
                    J[off + i, _pair(a, b)] = grad[1, 1]
                    J[off + i, _pair(b, b)] = grad[1, 2]
        J *= sw[j - 1]
        covs[(j, j)] = sigma / widths[j] + J @ covs[(j - 1, j - 1)] @ J.T
        for i in range(j):
            covs[(j, i)] = J @ covs[(j - 1, i)]
            covs[(i, j)] = covs[(j, i)].T
        # the sandwiched NTK Y^{uv}_{ab} = h_a^T X_uv h_b (before N: it uses Theta^j)
        D = {}
        for u in (0, 1):
            Du = np.zeros((4, 4))
            for tau in range(4):
                if tau == u:
                    Du[tau, u] = lay.dmat[0][0, 0]
                else:
                    Du[tau, tau], Du[tau, u] = lay.dmat[0][1, 1], lay.dmat[0][1, 0]
            D[u] = Du
        for (u, v), old in list(y.items()):
            e4 = np.array([[mean(_powers(("f", a), ("f", b), ("d", u), ("d", v))) for b in range(4)]
                           for a in range(4)])
            th = theta[0 if u == v else 1]
            y[(u, v)] = widths[j] * th * e4 + (widths[j] / widths[j - 1]) ** 2 * sw[j - 1] ** 2 * (
                D[u] @ old @ D[v].T) * (j >= 2)
        # linear response of N^j (10 pairs) on X^i: Theta^j dc^j + c^j (M_{j-1} dK^{j-1} + sw dN^{j-1})
        cbar = means[10:]
        th_vec = np.array([theta[0 if a == b else 1] for a, b in _P4])
        new = {i: sw[j - 1] * cbar[:, None] * coef for i, coef in ncoef.items()}
        e = np.zeros((10, 20))
        e[:, :10] = np.diag(cbar * widths[j - 1])
        new[j - 1] = new.get(j - 1, np.zeros((10, 20))) + e
        e = np.zeros((10, 20))
        e[:, 10:] = np.diag(th_vec)
        new[j] = new.get(j, np.zeros((10, 20))) + e
        ncoef = new
        kbar = (float(means[_pair(0, 0)]), float(means[_pair(0, 1)]))
        nbar = (float(cbar[_pair(0, 0)] * theta[0]), float(cbar[_pair(0, 1)] * theta[1]))
        theta = (1 + widths[j] * kbar[0] + sw[j] * nbar[0], 1 + widths[j] * kbar[1] + sw[j] * nbar[1])
    top = L - 1
    # V = (K^{L-1}, N^{L-1}) = sum_i Lmap_i X^i
    lmap = {i: np.vstack([np.zeros((10, 20)), coef]) for i, coef in ncoef.items()}
    lmap[top] = lmap.get(top, np.zeros((20, 20))).copy()
    lmap[top][:10, :10] += np.eye(10)
    cov = sum(lmap[i] @ covs[(i, i2)] @ lmap[i2].T for i in lmap for i2 in lmap)
    return _World(kbar, nbar, cov, y)


_EPS = 0.02      # the fluctuation's scale in the second differences (rounding stays below 1e-10 relative)


def _canon(labels: tuple) -> tuple:
    seen: dict = {}
    return tuple(seen.setdefault(x, len(seen)) for x in labels)


@functools.lru_cache(maxsize=32)
def _coupling_terms(net: Network, width: int, samples: int, draws: int, seed: int) -> tuple:
    """The O(1/M) terms without a factor T (module docstring, (a)-(c)) of the mean block E[G_kk] (as (diag, offdiag))
    and of E||G_kk||_F^2, by Monte Carlo over the T-dimensional Gaussian laws they are integrals over (fixed seed).

    Returns (d_diag, d_offdiag, d_square, standard errors of the three); d_square is per output block."""
    plain = net.with_(norms=())
    T, L = samples, net.depth
    M = plain.widths(width)[L - 1]
    sw = float(net.sigma_w2[L - 1])
    w = _world(plain, width)
    rng = np.random.default_rng(seed)
    # the T-world: the vector (K_tt' for t <= t', N_tt' for t <= t') and its covariance by label patterns
    tri = [(a, b) for a in range(T) for b in range(a, T)]
    nt = len(tri)
    cov = np.zeros((2 * nt, 2 * nt))
    for i, (a, b) in enumerate(tri):
        for j, (c, d) in enumerate(tri):
            lab = _canon((a, b, c, d))
            p1, p2 = _pair(lab[0], lab[1]), _pair(lab[2], lab[3])
            cov[i, j], cov[i, nt + j] = w.cov[p1, p2], w.cov[p1, 10 + p2]
            cov[nt + i, j], cov[nt + i, nt + j] = w.cov[10 + p1, p2], w.cov[10 + p1, 10 + p2]
    vals, vecs = np.linalg.eigh(cov)
    root = vecs * np.sqrt(np.clip(vals, 0, None))     # clip: rounding-level negative eigenvalues only
    Kbar = (w.k[0] - w.k[1]) * np.eye(T) + w.k[1]
    Nbar = (w.n[0] - w.n[1]) * np.eye(T) + w.n[1]
    B = np.linalg.svd(np.eye(T) - 1.0 / T)[0][:, : T - 1]     # orthonormal basis of the complement of 1
    iu = np.triu_indices(T)

    def sym(x: np.ndarray) -> np.ndarray:
        out = np.zeros(x.shape[:-1] + (T, T))
        out[..., iu[0], iu[1]] = x
        return out + np.swapaxes(out, -1, -2) - out * np.eye(T)

    def gram(K: np.ndarray, N: np.ndarray, z: np.ndarray) -> tuple:
        Om = sw * (B.T @ K @ B)
        try:
            chol = np.linalg.cholesky(Om)
        except np.linalg.LinAlgError:
            raise InvalidArgument("width", width, "a width where the realized kernel's fluctuations are small "
                                  "against its spread K_tt - K_ts (the O(1/M) expansion)") from None
        g = (chol @ z[..., None])[..., 0] @ B.T
        g2 = (g * g).sum(-1)[..., None, None]
        A = np.sqrt(T / g2) * (np.eye(T) - 1.0 / T - g[..., :, None] * g[..., None, :] / g2)
        return A, A @ (M * K + sw * N) @ np.swapaxes(A, -1, -2) / T

    mean_parts, square_parts = [], []
    chunk = 2000
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        # (a), (b): the second-order terms are quadratic in the fluctuation: evaluated at EPS times it and divided by
        # EPS^2 (the Gaussian surrogate's tails would otherwise make Omega indefinite on some draws at small M)
        xi = rng.standard_normal((n, 2 * nt)) @ root.T * _EPS
        dK, dN = sym(xi[:, :nt]), sym(xi[:, nt:])
        z = rng.standard_normal((n, T - 1))
        A0, G0 = gram(np.broadcast_to(Kbar, dK.shape), np.broadcast_to(Nbar, dK.shape), z)
        _, Gp = gram(Kbar + dK, Nbar + dN, z)
        _, Gm = gram(Kbar - dK, Nbar - dN, z)
        dG = ((Gp + Gm) / 2 - G0) / _EPS**2
        var_part = A0 @ (M * dK + sw * dN) @ np.swapaxes(A0, -1, -2) / T
        # in s, the square of the forward part of dTheta at the mean law is already in the entry variances (term 2)
        sq = (((Gp**2).sum((1, 2)) + (Gm**2).sum((1, 2))) / 2 - (G0**2).sum((1, 2))
              - (var_part**2).sum((1, 2))) / _EPS**2
        mean_parts.append(np.stack([np.einsum("nii->n", dG) / T,
                                    (dG.sum((1, 2)) - np.einsum("nii->n", dG)) / (T * (T - 1))], axis=1))
        square_parts.append(sq)
    # (c), Stein on the output row: (sw / M)^2 E[A Z A^T] / T with Z_uv = g^T Y^uv g / v^2 - tr(Pi Y^uv) / v, by its
    # own Monte Carlo over g ~ N(0, v Pi); in s it enters as twice its inner product with the mean-field block
    v = sw * (w.k[0] - w.k[1])
    Y = class_tensor(T, lambda lab: w.y[(0, lab[1])][lab[2], lab[3]])
    Pi = np.eye(T) - 1.0 / T
    trY = np.einsum("ab,uvab->uv", Pi, Y)
    Ymat = Y.reshape(T * T, T * T)
    c_mean, c_square = [], []
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        g = (rng.standard_normal((n, T - 1)) * math.sqrt(v)) @ B.T
        g2 = (g * g).sum(-1)[:, None, None]
        A = np.sqrt(T / g2) * (Pi - g[:, :, None] * g[:, None, :] / g2)
        gg = np.einsum("na,nb->nab", g, g).reshape(n, T * T)
        Z = (gg @ Ymat.T).reshape(n, T, T) / v**2 - trY / v
        AZA = A @ Z @ A * (sw / M) ** 2 / T                     # A is symmetric
        D = (w.k[0] - w.k[1]) * M + sw * (w.n[0] - w.n[1])      # Theta_bar' = D I + O 1 1^T and A 1 = 0
        base = D * (A @ A) / T
        c_mean.append(np.stack([np.einsum("nii->n", AZA) / T,
                                (AZA.sum((1, 2)) - np.einsum("nii->n", AZA)) / (T * (T - 1))], axis=1))
        c_square.append(2 * (base * AZA).sum((1, 2)))
    ab = np.concatenate(mean_parts)
    c = np.concatenate(c_mean)
    sq = np.concatenate(square_parts) + np.concatenate(c_square)
    tot = ab + c
    n = len(tot)
    return (float(tot[:, 0].mean()), float(tot[:, 1].mean()), float(sq.mean()),
            float(tot[:, 0].std() / math.sqrt(n)), float(tot[:, 1].std() / math.sqrt(n)),
            float(sq.std() / math.sqrt(n)))
