"""Layer norm at finite width: O(1/M) mean shifts of the realized kernels and of the Gram means, derived.

A layer norm on layer l normalizes each sample's pre-activations by their realized mean and (population) standard
deviation over the M units, u~_a(t) = (u_a(t) - mu_t) / s_t. Given the layer below, the M rows (u_a(t), u_a(s)) are
i.i.d. N(0, Q) with the realized kernel Q (exact conditioning, as in :mod:`meanfield.finite.corrections`), so in
standardized units z_a = (u_a(t) / sqrt(Q_tt), u_a(s) / sqrt(Q_ss)) ~ N(0, R), R the correlation matrix of Q
(correlation rho), and the law of u~ depends on Q through rho only. The realized kernel of the layer above,
K~ = (1/M) sum_a g(u~_a), g = phi(u~(t)) phi(u~(s)) (or phi(u~(t))^2), is a smooth functional of the empirical law
of the z_a; with mu the realized means and eps_i = s_i^2 / Q_ii - 1, u~_i = (z_i - mu_i)(1 + eps_i)^(-1/2), and the
bias of such a functional (von Mises expansion) is, to O(1/M),

    M (E[K~ | Q] - F(rho)) = sum_A F_A R_A                      (mu ~ N(0, R / M): like adding R / M to the law)
                           - sum_i H_i                          (E eps_i = -1 / M, population variance)
                           + sum_ij H_ij R_ij^2                 (Cov(eps_i, eps_j) = 2 R_ij^2 / M)
                           - sum_i E[z_i d_i g]                 (row a's own share of mu)
                           - 1/2 sum_i E[z_i (z_i^2 - 1) d_i g] (row a's own share of eps),

with F(Sigma) = E g under N(0, Sigma), F_A, F_AB its Price gradient and Hessian over the entries (tt, ts, ss)
(:func:`meanfield.finite.corrections.two_sample_layer`), and H_i, H_ij the derivatives of F(Sigma(eps)) in eps,
Sigma_ij(eps) = R_ij (1 + eps_i)^(-1/2) (1 + eps_j)^(-1/2) (chain rule). Every expectation is a two-sample Gaussian
quadrature split at the kinks (relu needs no finite differences).

The Gram means of a three-layer net with the layer norm on layer 2 (:func:`layer_norm_gram_means`): T E G = E Theta^3
= 1 + M E K~^2 + sigma_w^2 E N^2 with N^2 = (1/M) sum_a phi'_a(t) phi'_a(s) Theta~_aa and Theta~ = J_t Theta^2 J_s^T,
J_t = (1/s_t)(I - 1 1^T / M - u~_t u~_t^T / M). With Theta^2 = A I + S (A = 1 + h^1(t) . h^1(s), S_ac = w_a^T X w_c,
X = Theta^1 diag(phi'_b(t) phi'_b(s)), Theta^1 = 1 + x(t) . x(s)),

    s_t s_s Theta~_aa = A (1 - (1 + u~_a(t)^2 + u~_a(s)^2 - rho u~_a(t) u~_a(s)) / M)
                        + S_aa - (1/M) sum_b (S_ab + S_ba)
                        - (1/M) sum_b (u~_a(t) u~_b(t) S_ba + S_ab u~_b(s) u~_a(s))
                        + (1/M^2) [(1 1^T + u~_t u~_t^T) S (1 1^T + u~_s u~_s^T)]_aa,

and, given layer 1, E[psi_a S_aa] = B E psi + (sigma_w^2 / M)^2 sum Y_{tau tau'} E[d_tau d_tau' psi] / sigma^2 (Stein
on row a; psi = phi'(u~(t)) phi'(u~(s)), B = sigma_w^2 Theta^1 tr D / M, Y = M Theta^1 E[phi phi phi' phi'] the
section 2 matrix of the notes), the column sums give -2 B E psi / M + B E psi / M (1^T S 1 = Theta^1 V^T D V, V =
sum_b w_b), the projections on u~ give -B E[psi (z_t^2 + z_s^2)] / M (b = a), -(sigma_w^2 / M)^2 sum_tau (Y_{t tau}
E[psi z_t y_tau] + Y_{tau s} E[psi z_s y_tau]) / sigma^2 (b != a: sum_b u~_b(t) w_b is about sigma_w^2 h(t) /
sigma_t) and ((sigma_w^2 / M)^2 Y_ts / sigma^2 + B rho / M) E[psi z_t z_s]; the factor 1 / (s_t s_s) and psi's own
law add the normalization's shift (von Mises as above, for the product of the mean of psi and (1 + eps_t)^-1/2 (1 +
eps_s)^-1/2), and the layers below enter through A + B (its O(1) mean shift,
:func:`meanfield.finite.corrections.ntk_mean_shift` of the two-layer net below) times E[c(rho(Q)) / sqrt(Q_tt Q_ss)]
expanded to second order in the realized kernel Q, with Cov(A + B, Q). Checked against sampled networks (tanh and
relu, M = 64 and 128, 20000 seeds each): within 2.1 standard errors, where mean field is off by 10 to 41.

Any placement (:func:`layer_norm_ntk_mean_shift`). The same algebra is one step of the forward NTK recursion of
:mod:`meanfield.finite.corrections`, run layer by layer: at a layer-normed layer j, A = 1 + M_{j-1} K^{j-1},
B = sigma_w^2 N^{j-1} and Y = Y^{j-1} are whatever the recursion carries from below (plain or normed layers), the
realized kernel and backward factor c~ = c(rho(Q)) / sqrt(Q_tt Q_ss) enter the realized-average covariances with the
influence-function covariance of :func:`meanfield.finite.fourpoint_layernorm.realized_averages` and their own shifts,
and Y^j above the norm is the projected sandwich h^T X^j h: with P_t P_s = I - 1 1^T / M - (u~_t u~_t^T + u~_s u~_s^T -
rho u~_t u~_s^T) / M acting on v_a = phi(u~_a(tau)) phi'(u~_a(t)),

    Y^j / M_j = (Theta^j / q_1) [E v v' - E v E v' - E(z_t v) E(z_t v') - E(z_s v) E(z_s v') + rho E(z_t v) E(z_s v')]
                + (M_j / M_{j-1})^2 sigma_w^4 D~_t Y^{j-1} D~_s^T / (M_j q_1),  D~_t[tau, r] = E[d_r v] - delta_{r t} E[z_t v]

(derivatives in u, so D~ carries 1 / sqrt(q_1)). With no layer norm it is the plain recursion, on layer 2 of three it
is :func:`layer_norm_gram_means` (tests). s adds the entry variances of
:func:`meanfield.finite.fourpoint_layernorm.layer_norm_entry_variances` (:func:`layer_norm_corrections`), and a
centre-only batch norm on the output composes exactly (G = Pi G Pi per block). A full batch norm on the output with
layer norms below takes these means and covariances as its inputs (:func:`meanfield.finite.normalized.output_batch_norm_below`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgument, check_int, check_real
from ..integrals.quadrature import Unit
from ..spec.network import LayerNorm, Network
from ..theory.fisher import predict
from .corrections import (STATISTICS, kernel_mean_shift, kernel_response_covariance, ntk_mean_shift, ntk_response,
                          sandwich_step, two_sample_layer, two_sample_rule)
from .fourpoint import label_classes
from .fourpoint_layernorm import (check_layer_norms, layer_norm_entry_variances, layer_norm_gram_covariance,
                                  realized_averages)

__all__ = ["layer_norm_kernel_shift", "LayerNormTerms", "layer_norm_terms", "layer_norm_kernel_mean_shift",
           "LayerNormGramMeans", "layer_norm_gram_means", "finite_width_stats", "LayerNormCorrections",
           "layer_norm_corrections", "layer_norm_ntk_mean_shift", "layer_norm_layer"]

_PAIRS = ((0, 0), (0, 1), (1, 1))   # kernel entries (tt, ts, ss) of two samples


@dataclass(frozen=True)
class LayerNormTerms:
    """One layer norm's two-sample quantities at the mean correlation rho (module docstring).

    Attributes:
        rho: the correlation of the pre-activations below.
        F: E g_p at unit variances, p over (tt, ts, ss), g_p = phi(z_a) phi(z_b).
        gradF, hessF: Price gradient and Hessian of E g_p in the covariance entries, at [[1, rho], [rho, 1]].
        shift: M (E[K~_p | Q] - F_p), the normalization's own O(1/M) mean shift.
        sigma: M Cov(K~_p, K~_q | Q) to leading order: the covariance of the influence functions
            g_p(z) - sum_i E[d_i g_p] z_i - 1/2 sum_i E[z_i d_i g_p] (z_i^2 - 1).
    """

    rho: float
    F: np.ndarray
    gradF: np.ndarray
    hessF: np.ndarray
    shift: np.ndarray
    sigma: np.ndarray


def _sigma_derivatives(rho: float) -> tuple[np.ndarray, np.ndarray]:
    """d Sigma_A / d eps_i and d^2 Sigma_A / d eps_i d eps_j at eps = 0 (A over (tt, ts, ss), i, j over (t, s))."""
    first = np.array([[-1.0, 0.0], [-rho / 2, -rho / 2], [0.0, -1.0]])
    second = np.zeros((3, 2, 2))
    second[0, 0, 0] = 2.0                      # (1 + eps)^-1
    second[2, 1, 1] = 2.0
    second[1] = [[3 * rho / 4, rho / 4], [rho / 4, 3 * rho / 4]]   # rho (1 + eps_t)^-1/2 (1 + eps_s)^-1/2
    return first, second


def _stein_weights(z: tuple, y: tuple) -> list:
    """Per sample i the rule's arrays z_i y_i - 1, 3 z_i^2 - 1 - (z_i^3 - z_i) y_i and z_i^2 - 1 (integration by parts;
    formed once per rule, not per function)."""
    return [(z[i] * y[i] - 1, 3 * z[i] ** 2 - 1 - (z[i] ** 3 - z[i]) * y[i], z[i] ** 2 - 1) for i in (0, 1)]


@functools.lru_cache(maxsize=256)
def _terms(unit: Unit, rho: float) -> LayerNormTerms:
    lay = two_sample_layer(unit, 1.0, rho, 1.0)
    rule = two_sample_rule(unit, 1.0, rho, 1.0)
    z, y = rule.u, rule.y
    f = [np.asarray(unit.f(x), dtype=float) for x in z]
    g = [f[a] * f[b] for a, b in _PAIRS]
    R = np.array([1.0, rho, 1.0])
    R2 = np.array([[1.0, rho * rho], [rho * rho, 1.0]])
    first, second = _sigma_derivatives(rho)
    shift, influence = np.zeros(3), []
    weights = _stein_weights(z, y)
    for p in range(3):
        gradF, hessF = lay.gradF[p], lay.hessF[p]
        H1 = gradF @ first                                          # d F / d eps_i
        H2 = np.einsum("a,aij->ij", gradF, second) + first.T @ hessF @ first
        # Gaussian integration by parts keeps phi' and phi'' out (relu): E[z_i d_i g] = E[g (z_i y_i - 1)],
        # E[z_i (z_i^2 - 1) d_i g] = -E[g (3 z_i^2 - 1 - (z_i^3 - z_i) y_i)], E[d_i g] = E[g y_i]
        zd = [rule.mean(g[p] * weights[i][0]) for i in (0, 1)]
        z3d = [-rule.mean(g[p] * weights[i][1]) for i in (0, 1)]
        dg = [rule.mean(g[p] * y[i]) for i in (0, 1)]
        shift[p] = (float(gradF @ R) - H1.sum() + float((H2 * R2).sum()) - sum(zd) - 0.5 * sum(z3d))
        influence.append(g[p] - sum(dg[i] * z[i] + 0.5 * zd[i] * weights[i][2] for i in (0, 1)))
    mean = [rule.mean(v) for v in influence]
    sigma = np.empty((3, 3))
    for i in range(3):  # symmetric: a * b and b * a are the same numbers
        for j in range(i, 3):
            sigma[i, j] = sigma[j, i] = rule.mean(influence[i] * influence[j]) - mean[i] * mean[j]
    return LayerNormTerms(rho, lay.F.copy(), lay.gradF.copy(), lay.hessF.copy(), shift, sigma)


def layer_norm_terms(phi, rho: float) -> LayerNormTerms:
    """E g, its Price derivatives, M (E[K~ | Q] - E g) and M Cov(K~ | Q) of a layer norm at correlation rho.

    Example:
        >>> t = layer_norm_terms(Network(3, "tanh", 2, 0.1).phi(2), 0.5)
        >>> bool(t.shift[0] > 0), bool(abs(t.shift[0] - t.shift[2]) < 1e-12)   # tanh^2: Jensen, t and s alike
        (True, True)
    """
    rho = check_real("rho", rho)
    if not abs(rho) < 1:
        raise InvalidArgument("rho", rho, "a correlation with |rho| < 1 (two distinct samples)")
    return _terms(Unit.of(phi), float(rho))


def layer_norm_kernel_shift(phi, rho: float, width: int) -> tuple[float, float]:
    """M (E[K~ | Q] - F): the O(1/M) mean shift of (1/M) sum_a phi(u~_a(t)) phi(u~_a(s)) behind a layer norm, times M.

    Given the realized correlation rho of two samples' pre-activations (module docstring), returns the shifts of the
    diagonal entry (1/M) sum_a phi(u~_a(t))^2 and of the off-diagonal entry; the conditional means are
    F + shift / M + O(1/M^2), F the mean-field values E phi(z_t)^2, E phi(z_t) phi(z_s) at unit variances.

    Args:
        phi: the activation (a meanfield activation, e.g. ``Network(...).phi(l)``).
        rho: the realized correlation Q_ts / sqrt(Q_tt Q_ss), |rho| < 1.
        width: M (only checked: the result is the coefficient of 1/M).

    Returns:
        (diagonal shift, off-diagonal shift).

    Raises:
        InvalidArgument: |rho| >= 1 or width < 2.

    Example:
        >>> d, o = layer_norm_kernel_shift(Network(3, "relu", 2, 0.1).phi(2), 0.5, 64)
        >>> abs(d) < 1e-9   # relu(z)^2 + relu(-z)^2 = z^2 and the normalized z has mean square 1: E = 1/2 exactly
        True
    """
    check_int("width", width, minimum=2)
    t = layer_norm_terms(phi, rho)
    return float(t.shift[0]), float(t.shift[1])


def _input_kernel_covariance(q1: float, q2: float) -> np.ndarray:
    """M_0 Cov of the inputs' kernel entries x_a . x_b / M_0, x ~ N(0, Q) per coordinate: Q_ac Q_bd + Q_ad Q_bc."""
    Q = np.array([[q1, q2], [q2, q1]])
    return np.array([[Q[a, c] * Q[b, d] + Q[a, d] * Q[b, c] for c, d in _PAIRS] for a, b in _PAIRS])


def _rho_derivatives(Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of rho = Q_ts / sqrt(Q_tt Q_ss) in the entries (tt, ts, ss)."""
    a, c, b = Q
    r = c / math.sqrt(a * b)
    grad = np.array([-r / (2 * a), 1 / math.sqrt(a * b), -r / (2 * b)])
    hess = np.array([[3 * r / (4 * a * a), -1 / (2 * a * math.sqrt(a * b)), r / (4 * a * b)],
                     [-1 / (2 * a * math.sqrt(a * b)), 0.0, -1 / (2 * b * math.sqrt(a * b))],
                     [r / (4 * a * b), -1 / (2 * b * math.sqrt(a * b)), 3 * r / (4 * b * b)]])
    return grad, hess


def layer_norm_kernel_mean_shift(net: Network, width: int) -> tuple:
    """M_j (E K^j - K_bar^j) per layer j = 0..L-1 for a network with layer norms on hidden layers (and no other norm).

    The forward recursion of :func:`meanfield.finite.corrections.kernel_mean_shift` (E F(Q) = F(E Q) + F' dQ +
    F''[Cov Q] / 2, Cov K^j = Sigma / M_j + J Cov K^{j-1} J^T), where at a layer-normed layer F(Q) = F(rho(Q)) at
    unit variances, the normalization adds its own shift (:func:`layer_norm_terms`) and Sigma is the covariance of its
    influence functions. Entries per layer are (t t, t s, s s) of two distinct samples.

    Raises:
        InvalidArgument: a symbolic network, a normalization other than hidden layer norms, bad width.

    Example:
        >>> shifts = layer_norm_kernel_mean_shift(Network(3, "relu", 2, 0.1, norms=["layer:2"]), 64)
        >>> abs(float(shifts[2][0])) < 1e-9          # relu after a layer norm: E phi(u~)^2 = 1/2 exactly
        True
    """
    if not isinstance(net, Network) or net.is_symbolic:
        raise InvalidArgument("net", net, "a numeric meanfield Network")
    if any(not isinstance(n, LayerNorm) for n in net.norms):
        raise InvalidArgument("net", net.describe(), "layer norms on hidden layers and no other normalization")
    width = check_int("width", width, minimum=2)
    widths = net.widths(width)
    sw = [float(v) for v in net.sigma_w2]
    sb = [float(v) for v in net.sigma_b2]
    q1, q2 = float(net.input_q1), float(net.input_q2)
    kbar, dk = [np.array([q1, q2, q1])], [np.zeros(3)]
    cov = _input_kernel_covariance(q1, q2) / widths[0]
    for j in range(1, net.depth):
        Q = sw[j - 1] * kbar[-1] + sb[j - 1]
        dQ = sw[j - 1] * dk[-1]
        covQ = sw[j - 1] ** 2 * cov
        unit = Unit.of(net.phi(j))
        if isinstance(net.norm_at(j), LayerNorm):
            r_grad, r_hess = _rho_derivatives(Q)
            t = _terms(unit, float(Q[1] / math.sqrt(Q[0] * Q[2])))
            # F(rho(Q)): only the ts entry of the unit-variance kernel moves (Price derivative gradF[:, 1])
            grad = np.outer(t.gradF[:, 1], r_grad)
            hess = t.hessF[:, 1, 1][:, None, None] * np.outer(r_grad, r_grad) + t.gradF[:, 1][:, None, None] * r_hess
            F, sigma, own = t.F, t.sigma, t.shift
        else:
            lay = two_sample_layer(unit, *Q)
            grad, hess, F = lay.gradF, lay.hessF, lay.F
            sigma, own = lay.sigma[:3, :3], np.zeros(3)
        dk.append(grad @ dQ + 0.5 * np.einsum("pab,ab->p", hess, covQ) + own / widths[j])
        kbar.append(np.asarray(F, dtype=float))
        J = sw[j - 1] * grad
        cov = sigma / widths[j] + J @ cov @ J.T
    return tuple(widths[j] * dk[j] for j in range(net.depth))


# -- the Gram means of a three-layer net with layer norm on layer 2 -------------------------------------------------


@dataclass(frozen=True)
class LayerNormGramMeans:
    """E G_tt, E G_ts with their O(1/M) terms behind a layer norm on layer 2 of a three-layer net (module docstring).

    Attributes:
        network, width, samples: what was computed (M, T).
        mean_field_diag, mean_field_offdiag: ``predict``'s values.
        mean_diag, mean_offdiag: corrected.
        terms: per entry ("diag", "offdiag"), the O(1/M) parts in Gram units: "forward" (the realized kernel above the
            norm), "below" (the layers below: mean shifts, Jensen and covariance terms), "normalization" (the norm's
            own shift of E[phi' phi' / (s_t s_s)]), "projector" (the Jacobian's removed directions),
            "stein" and "cross" (the Y terms: Stein on a row, the projections on u~).
    """

    network: Network
    width: int
    samples: int
    mean_field_diag: float
    mean_field_offdiag: float
    mean_diag: float
    mean_offdiag: float
    terms: dict


def _supported(net: Network) -> Network | None:
    """The plain two-layer net below the norm, or None when the derivation does not cover ``net``."""
    if not isinstance(net, Network) or net.is_symbolic or net.depth != 3:
        return None
    if len(net.norms) != 1 or not isinstance(net.norm_at(2), LayerNorm):
        return None
    if any(float(a) != 1.0 for a in net.alphas):
        return None
    return Network(2, net.phi(1), tuple(net.sigma_w2[:2]), tuple(net.sigma_b2[:2]), input_q1=net.input_q1,
                   input_q2=net.input_q2)


def layer_norm_gram_means(net: Network, width: int, samples: int) -> LayerNormGramMeans:
    """E G = mean field + O(1) shift behind a layer norm on layer 2 (depth 3, equal widths), derived (module docstring).

    T E G_tt = E Theta^3 = 1 + M E K~^2 + sigma_w^2 E N^2, N^2 = (1/M) sum_a phi'_a(t) phi'_a(s) Theta~_aa, with the
    normalization's Jacobian expanded to O(1/M) and every term conditioned exactly on layer 1 (whose NTK is
    diagonal, so X = Theta^1 diag(phi' phi') and Y = M Theta^1 E[phi phi phi' phi'] to leading order).

    Args:
        net: a numeric three-layer network whose only normalization is a layer norm on layer 2, equal widths.
        width: M.
        samples: T (>= 2).

    Raises:
        InvalidArgument: another network, bad width or samples.

    Example:
        >>> net = Network(3, "relu", 2, 0.1, outputs=2, norms=["layer:2"])
        >>> g = layer_norm_gram_means(net, 64, 16)
        >>> bool(g.mean_offdiag > g.mean_field_offdiag), bool(g.mean_diag > g.mean_field_diag)
        (True, True)
    """
    below = _supported(net)
    if below is None:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric depth-3 network with equal widths and a layer norm on layer 2 only")
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=2)
    sw = [float(v) for v in net.sigma_w2]
    sb = [float(v) for v in net.sigma_b2]
    q1, q2 = float(net.input_q1), float(net.input_q2)
    K0 = np.array([q1, q2, q1])
    unit1, unit2 = Unit.of(net.phi(1)), Unit.of(net.phi(2))
    lay1 = two_sample_layer(unit1, *(sw[0] * K0 + sb[0]))
    # realized kernels below: Cov K^0 (inputs), Cov K^1, Cov(c^1, K^1), Cov(K^0, K^1), all O(1/M)
    covK0 = _input_kernel_covariance(q1, q2) / M
    J0, Jc = sw[0] * lay1.gradF, sw[0] * lay1.gradc
    covK1 = lay1.sigma[:3, :3] / M + J0 @ covK0 @ J0.T
    covc1K1 = lay1.sigma[3:, :3] / M + Jc @ covK0 @ J0.T
    covK0K1 = covK0 @ J0.T
    dK1 = kernel_mean_shift(below, M)[1] / M
    dTheta2 = ntk_mean_shift(below, M)               # E Theta^2 - mean field (t = s, t != s): the O(1) shifts
    Q2 = sw[1] * lay1.F + sb[1]
    sig2, rho = float(Q2[0]), float(Q2[1] / Q2[0])
    above = layer_norm_kernel_mean_shift(net, M)[2]
    rule = two_sample_rule(unit2, 1.0, rho, 1.0)
    z, y, P = rule.u, rule.y, rule.P
    d = [np.asarray(unit2.df(x), dtype=float) for x in z]
    base = predict(net, M, T)
    means, terms = [], {}
    for p, (a, b) in enumerate(((0, 0), (0, 1))):
        theta1 = 1 + M * K0[p]
        A, B = 1 + M * float(lay1.F[p]), sw[1] * theta1 * float(lay1.c[p])
        Y = M * theta1 * lay1.e4[(a, b)]
        c2 = (sw[1] / M) ** 2

        def f(Q, p=p, a=a, b=b):
            """E[phi'(u~_a) phi'(u~_b)] / sqrt(Q_aa Q_bb): the backward factor at the realized kernel Q."""
            r = Q[1] / math.sqrt(Q[0] * Q[2])
            diag = (Q[0], Q[2])
            return float(two_sample_layer(unit2, 1.0, r, 1.0).c[p]) / math.sqrt(diag[a] * diag[b])

        # the layers below: E[(A + B) f(Q)] to O(1), by central differences of the smooth quadrature f
        h = 1e-4 * sig2
        step = np.eye(3) * h
        f0 = f(Q2)
        grad = np.array([(f(Q2 + step[i]) - f(Q2 - step[i])) / (2 * h) for i in range(3)])
        hess = np.array([[(f(Q2 + step[i] + step[j]) - f(Q2 + step[i] - step[j]) - f(Q2 - step[i] + step[j])
                           + f(Q2 - step[i] - step[j])) / (4 * h * h) for j in range(3)] for i in range(3)])
        cov_AB_K1 = M * covK1[p] + sw[1] * (theta1 * covc1K1[p] + float(lay1.c[p]) * M * covK0K1[p])
        below_part = ((A + B) * (float(grad @ (sw[1] * dK1)) + 0.5 * float((hess * sw[1] ** 2 * covK1).sum()))
                      + dTheta2[p] * f0 + sw[1] * float(grad @ cov_AB_K1))
        # the normalization's own shift of E[psi / (s_a s_b)], psi = phi'(u~_a) phi'(u~_b): von Mises as in _terms
        psi = d[a] * d[b]
        own = (A + B) * float(_own_c(unit2, rho)[p]) / M
        # the Jacobian's projector: A (1 - r_a / M) and the S parts (column sums, u~ projections, 1^T S 1)
        projector = _projector(rule.mean, psi, z, rho, (a, b), A, B, M)
        # Stein on row a: the derivatives are in z = u / sigma, hence c2 / sigma^2 (Y is in u units)
        stein = c2 / sig2 * sum(Y[s, r] * rule.mean(psi * (y[s] * y[r] - P[s, r])) for s in (0, 1) for r in (0, 1))
        cross = c2 / sig2 * (Y[a, b] * rule.mean(psi * z[a] * z[b])
                      - sum(Y[a, s] * rule.mean(psi * z[a] * y[s]) + Y[s, b] * rule.mean(psi * z[b] * y[s])
                            for s in (0, 1)))
        parts = {"forward": float(above[p]), "below": sw[2] * below_part, "normalization": sw[2] * own / sig2,
                 "projector": sw[2] * projector / sig2, "stein": sw[2] * stein / sig2, "cross": sw[2] * cross / sig2}
        key = ("diag", "offdiag")[p]
        terms[key] = {k_: v / T for k_, v in parts.items()}
        means.append(float(getattr(base, "gram_" + key)) + sum(parts.values()) / T)
    return LayerNormGramMeans(net, M, T, float(base.gram_diag), float(base.gram_offdiag), means[0], means[1], terms)


# -- any placement: the forward NTK recursion of corrections.py run through layer norms ----------------------------


def _projector(mean, psi: np.ndarray, z: tuple, rho: float, pair: tuple, A: float, B: float, M: float) -> float:
    """The Jacobian's projector terms of a layer-normed unit's E[psi Theta~_aa]: A (1 - r_a / M) and the S parts
    (column sums, projections on u~, 1^T S 1), with ``mean`` the two-sample rule's expectation."""
    a, b = pair
    if a == b:
        r_mean = mean(psi * (1 + z[0] ** 2))
    else:
        r_mean = mean(psi * (1 + z[0] ** 2 + z[1] ** 2 - rho * z[0] * z[1]))
    rab = 1.0 if a == b else rho
    Epsi = mean(psi)
    return (-A / M * r_mean - 2 / M * B * Epsi - B / M * mean(psi * (z[a] ** 2 + z[b] ** 2))
            + B / M * Epsi + B * rab / M * mean(psi * z[a] * z[b]))


def _own_c(unit: Unit, rho: float) -> np.ndarray:
    """M (E[c~ | Q] - c(rho)) sqrt(Q_tt Q_ss) per pair (tt, ts, ss): the norm's own shift of the realized mean of
    phi'(u~_t) phi'(u~_s) / ((1 + eps_t)(1 + eps_s))^(1/2) (von Mises, as in :func:`layer_norm_terms`)."""
    rule = two_sample_rule(unit, 1.0, rho, 1.0)
    lay = two_sample_layer(unit, 1.0, rho, 1.0)
    z, y = rule.u, rule.y
    d = [np.asarray(unit.df(x), dtype=float) for x in z]
    R = np.array([[1.0, rho], [rho, 1.0]])
    first, second = _sigma_derivatives(rho)
    out = np.zeros(3)
    weights = _stein_weights(z, y)
    for p, (a, b) in enumerate(((0, 0), (0, 1))):
        psi = d[a] * d[b]
        gc, hc = lay.gradc[p], lay.hessc[p]
        H1 = gc @ first
        H2 = np.einsum("a,aij->ij", gc, second) + first.T @ hc @ first
        zd = [rule.mean(psi * weights[i][0]) for i in (0, 1)]
        z3d = [-rule.mean(psi * weights[i][1]) for i in (0, 1)]
        dg = [rule.mean(psi * y[i]) for i in (0, 1)]
        shift_psi = (float(gc @ np.array([1.0, rho, 1.0])) - H1.sum() + float((H2 * R ** 2).sum())
                     - sum(zd) - 0.5 * sum(z3d))
        influence = psi - sum(dg[i] * z[i] + 0.5 * zd[i] * weights[i][2] for i in (0, 1))
        k = np.array([float(a == 0) + float(b == 0), float(a == 1) + float(b == 1)])   # powers of 1/s_t, 1/s_s
        shift_v = k.sum() / 2 + sum((k[i] / 2) * (k[i] / 2 + (i == j)) * R[i, j] ** 2 for i in (0, 1) for j in (0, 1))
        influence_v = -sum(k[i] / 2 * weights[i][2] for i in (0, 1))
        out[p] = shift_psi + rule.mean(psi) * shift_v + rule.mean(influence * influence_v)
    out[2] = out[0]
    return out


def _ln_functions(unit: Unit, Q: np.ndarray) -> tuple:
    """F(rho(Q)), c(rho(Q)) / sqrt(Q_aa Q_bb) per pair and their gradients and Hessians in the entries of Q
    (central differences of the quadratures; F and c at unit variances depend on Q through rho only)."""
    at_rho: dict = {}  # rho -> the quadratures at unit variances (Q_tt and Q_ss steps often give the same rho)

    def values(q: np.ndarray) -> np.ndarray:
        rho = float(q[1] / math.sqrt(q[0] * q[2]))
        if rho not in at_rho:
            rule = two_sample_rule(unit, 1.0, rho, 1.0)
            f = [np.asarray(unit.f(x), dtype=float) for x in rule.u]
            d = [np.asarray(unit.df(x), dtype=float) for x in rule.u]
            at_rho[rho] = ([rule.mean(f[a] * f[b]) for a, b in _PAIRS], [rule.mean(d[a] * d[b]) for a, b in _PAIRS])
        F, raw = at_rho[rho]
        diag = (q[0], q[2])
        c = [m / math.sqrt(diag[a] * diag[b]) for m, (a, b) in zip(raw, _PAIRS)]
        return np.array(F + c)

    h = 1e-4 * float(Q[0])
    step = np.eye(3) * h
    f0 = values(Q)
    grad = np.stack([(values(Q + step[i]) - values(Q - step[i])) / (2 * h) for i in range(3)], axis=1)
    hess = np.zeros((6, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            v = (values(Q + step[i] + step[j]) - values(Q + step[i] - step[j]) - values(Q - step[i] + step[j])
                 + values(Q - step[i] - step[j])) / (4 * h * h)
            hess[:, i, j] = hess[:, j, i] = v
    return f0[:3], f0[3:], grad[:3], grad[3:], hess[:3], hess[3:]


@dataclass(frozen=True)
class _LNForward:
    widths: tuple
    Q: dict              # j -> mean pre-activation kernel (tt, ts, ss)
    kbar: tuple          # mean realized kernel per layer j = 0..L-1
    c: dict              # j -> mean backward factor per pair (divided by s_t s_s behind a norm)
    gradc: dict
    dk: tuple            # O(1/M) mean shift of the kernel per layer
    dc: dict             # j -> O(1/M) mean shift of the backward factor
    cov: dict            # (i, j) -> Cov(X^i, X^j), X = (kernel pairs, backward-factor pairs)


@functools.lru_cache(maxsize=64)
def _ln_forward(net: Network, width: int) -> _LNForward:
    """Mean kernels, their O(1/M) shifts and the realized-average covariances of two samples, through layer norms."""
    widths = net.widths(width)
    sw = [float(v) for v in net.sigma_w2]
    sb = [float(v) for v in net.sigma_b2]
    q1, q2 = float(net.input_q1), float(net.input_q2)
    kbar, dk = [np.array([q1, q2, q1])], [np.zeros(3)]
    sigma0 = np.zeros((6, 6))
    sigma0[:3, :3] = _input_kernel_covariance(q1, q2)
    cov = {(0, 0): sigma0 / widths[0]}
    Qs, cs, gcs, dcs = {}, {}, {}, {}
    for j in range(1, net.depth):
        Q = sw[j - 1] * kbar[j - 1] + sb[j - 1]
        dQ = sw[j - 1] * dk[j - 1]
        covQ = sw[j - 1] ** 2 * cov[(j - 1, j - 1)][:3, :3]
        unit = Unit.of(net.phi(j))
        if isinstance(net.norm_at(j), LayerNorm):
            F, c, gradF, gradc, hessF, hessc = _ln_functions(unit, Q)
            rho = float(Q[1] / math.sqrt(Q[0] * Q[2]))
            sigma = realized_averages(net.phi(j), float(Q[0]), float(Q[1]), True, 2).sigma
            ownK, ownc = _terms(unit, rho).shift, _own_c(unit, rho) / float(Q[0])
        else:
            lay = two_sample_layer(unit, *Q)
            F, c, gradF, gradc, hessF, hessc = lay.F, lay.c, lay.gradF, lay.gradc, lay.hessF, lay.hessc
            sigma, ownK, ownc = lay.sigma, np.zeros(3), np.zeros(3)
        dk.append(gradF @ dQ + 0.5 * np.einsum("pab,ab->p", hessF, covQ) + ownK / widths[j])
        dcs[j] = gradc @ dQ + 0.5 * np.einsum("pab,ab->p", hessc, covQ) + ownc / widths[j]
        kbar.append(np.asarray(F, dtype=float))
        Qs[j], cs[j], gcs[j] = Q, np.asarray(c, dtype=float), np.asarray(gradc, dtype=float)
        J = np.zeros((6, 6))
        J[:3, :3], J[3:, :3] = gradF, gradc
        J *= sw[j - 1]
        cov[(j, j)] = sigma / widths[j] + J @ cov[(j - 1, j - 1)] @ J.T
        for i in range(j):
            cov[(j, i)] = J @ cov[(j - 1, i)]
            cov[(i, j)] = cov[(j, i)].T
    return _LNForward(widths, Qs, tuple(kbar), cs, gcs, tuple(dk), dcs, cov)


def _ln_layer_terms(unit: Unit, Q: np.ndarray, pair: tuple, A: float, B: float, Y: np.ndarray, Mj: int,
                    Mb: int, sw: float) -> tuple[float, float, float]:
    """The O(1/M) terms of N^j = (1/M) sum_a psi_a Theta~_aa at a layer-normed layer beyond the realized-average
    expansion: (projector, stein, cross), each already divided by s_t s_s (module docstring)."""
    q1 = float(Q[0])
    rho = float(Q[1] / q1)
    rule = two_sample_rule(unit, 1.0, rho, 1.0)
    z, y, P = rule.u, rule.y, rule.P
    a, b = pair
    d = [np.asarray(unit.df(x), dtype=float) for x in z]
    psi = d[a] * d[b]
    projector = _projector(rule.mean, psi, z, rho, (a, b), A, B, Mj)
    c2 = (sw / Mb) ** 2
    stein = c2 / q1 * sum(Y[s, r] * rule.mean(psi * (y[s] * y[r] - P[s, r])) for s in (0, 1) for r in (0, 1))
    cross = c2 / q1 * (Y[a, b] * rule.mean(psi * z[a] * z[b])
                       - sum(Y[a, s] * rule.mean(psi * z[a] * y[s]) + Y[s, b] * rule.mean(psi * z[b] * y[s])
                             for s in (0, 1)))
    return projector / q1, stein / q1, cross / q1


def _ln_y(unit: Unit, Q: np.ndarray, pair: tuple, theta: float, Y: np.ndarray, Mj: int, Mb: int,
          sw: float) -> np.ndarray:
    """Y^j = h(tau)^T X^j h(tau') to leading order at a layer-normed layer: the Jacobian's projections P_t P_s =
    I - 1 1^T / M - (u~_t u~_t^T + u~_s u~_s^T - rho u~_t u~_s^T) / M act on v_a = phi(u~_a(tau)) phi'(u~_a(t))."""
    q1 = float(Q[0])
    rho = float(Q[1] / q1)
    rule = two_sample_rule(unit, 1.0, rho, 1.0)
    z, y = rule.u, rule.y
    a, b = pair
    f = [np.asarray(unit.f(x), dtype=float) for x in z]
    d = [np.asarray(unit.df(x), dtype=float) for x in z]
    v = [f[tau] * d[a] for tau in (0, 1)]
    w = [f[tau] * d[b] for tau in (0, 1)]
    rab = 1.0 if a == b else rho
    E = rule.mean
    proj = np.array([[E(v[i] * w[k]) - E(v[i]) * E(w[k]) - E(z[a] * v[i]) * E(z[a] * w[k])
                      - (E(z[b] * v[i]) * E(z[b] * w[k]) - rab * E(z[a] * v[i]) * E(z[b] * w[k]) if a != b else 0.0)
                      for k in (0, 1)] for i in (0, 1)])
    Da = np.array([[E(v[i] * y[r]) - (E(z[a] * v[i]) if r == a else 0.0) for r in (0, 1)] for i in (0, 1)])
    Db = np.array([[E(w[i] * y[r]) - (E(z[b] * w[i]) if r == b else 0.0) for r in (0, 1)] for i in (0, 1)])
    return Mj * theta / q1 * proj + (Mj / Mb) ** 2 * sw ** 2 * (Da @ Y @ Db.T) / q1 ** 2


def _ln_ntk(net: Network, width: int, pair: tuple) -> tuple[float, float]:
    """(E Theta^L(t, s) to leading order, its O(1) shift) through layer norms (corrections.py's recursion)."""
    fw = _ln_forward(net, width)
    L, Mw = net.depth, fw.widths
    sw = [float(v) for v in net.sigma_w2]
    p = _PAIRS.index(pair)
    theta, dtheta = 1.0 + Mw[0] * fw.kbar[0][p], 0.0
    nbar = 0.0
    ncoef: dict = {}
    ybar = np.zeros((2, 2))
    for j in range(1, L):
        unit = Unit.of(net.phi(j))
        cbar = float(fw.c[j][p])
        covKZ = kernel_response_covariance(fw.cov, ncoef, Mw[j - 1], sw[j - 1], j, p)
        cov_cZ = sw[j - 1] * float(fw.gradc[j][p] @ covKZ)
        if isinstance(net.norm_at(j), LayerNorm):
            A, B = 1.0 + Mw[j - 1] * float(fw.kbar[j - 1][p]), sw[j - 1] * nbar
            extra = sum(_ln_layer_terms(unit, fw.Q[j], pair, A, B, ybar, Mw[j], Mw[j - 1], sw[j - 1]))
            ynew = _ln_y(unit, fw.Q[j], pair, theta, ybar, Mw[j], Mw[j - 1], sw[j - 1])
        else:
            lay = two_sample_layer(unit, *fw.Q[j])
            extra = (sw[j - 1] / Mw[j - 1]) ** 2 * float((lay.d2c[pair] * ybar).sum()) if j >= 2 else 0.0
            ynew = sandwich_step(lay, pair, theta, ybar, Mw[j], Mw[j - 1], sw[j - 1])
        dn = float(fw.dc[j][p]) * theta + cbar * dtheta + cov_cZ + extra
        ncoef = ntk_response(ncoef, cbar, theta, Mw[j - 1], sw[j - 1], j, p)
        ybar = ynew
        nbar = cbar * theta
        theta = 1.0 + Mw[j] * float(fw.kbar[j][p]) + sw[j] * nbar
        dtheta = Mw[j] * float(fw.dk[j][p]) + sw[j] * dn
    return float(theta), float(dtheta)


def layer_norm_layer(phi, Q: tuple, pair: tuple, A: float, B: float, Y: np.ndarray, width: int, width_below: int,
                     sw: float) -> dict:
    """F(rho(Q)), c(rho(Q)) / sqrt(Q_tt Q_ss) with their gradients and Hessians in Q, the norm's own shifts and the
    Jacobian's (projector + Stein + cross) O(1/M) terms of N: one layer-normed layer of
    :func:`layer_norm_ntk_mean_shift`'s recursion.

    Args:
        phi: the layer's activation; Q: its mean pre-activation kernel (tt, ts, ss).
        pair: (0, 0) or (0, 1); A, B: 1 + M_{j-1} K^{j-1} and sigma_w^2 N^{j-1} of that pair (the NTK below);
        Y: the 2 x 2 sandwiched NTK Y^{j-1} of that pair; width, width_below: M_j, M_{j-1}; sw: sigma_w^2 into layer j.

    Returns:
        dict F, c, gradF, gradc, hessF, hessc (over the entries of Q), own_k (M_j x the norm's own shift of K~),
        own_c (of c~, divided by Q_tt) and extra (the O(1) terms of N beyond the realized-average expansion).

    Example:
        >>> t = layer_norm_layer(Network(3, "relu", 2, 0.1).phi(2), (1.1, 0.5, 1.1), (0, 1), 65.0, 2.0,
        ...                      np.zeros((2, 2)), 64, 64, 2.0)
        >>> round(float(t["F"][0]), 12), sorted(t)[:3]
        (0.5, ['F', 'c', 'extra'])
    """
    Q = np.asarray(Q, dtype=float)
    if Q.shape != (3,) or not Q[0] > abs(Q[1]) or Q[0] != Q[2] or pair not in ((0, 0), (0, 1)):
        raise InvalidArgument("Q", Q, "an exchangeable kernel (tt, ts, tt) with tt > |ts|, pair (0, 0) or (0, 1)")
    unit = Unit.of(phi)
    F, c, gradF, gradc, hessF, hessc = _ln_functions(unit, Q)
    rho = float(Q[1] / Q[0])
    Y = np.asarray(Y, dtype=float)
    return dict(F=F, c=c, gradF=gradF, gradc=gradc, hessF=hessF, hessc=hessc, own_k=_terms(unit, rho).shift,
                own_c=_own_c(unit, rho) / float(Q[0]),
                extra=float(sum(_ln_layer_terms(unit, Q, pair, A, B, Y, width, width_below, sw))))


def _centred_variance(net: Network, M: int, T: int, outputs: tuple, fixed: tuple) -> float:
    """Var((Pi A Pi)_{t t'}) (Pi = I - 1 1^T / T) of the T G block of ``outputs``: the sum over (u, v, u', v') of
    Pi_tu Pi_t'v Pi_tu' Pi_t'v' Cov(A_uv, A_u'v'), grouped by patterns of equal labels (exact in T)."""
    t, tp, nf = fixed[0], fixed[-1], len(fixed)

    def pi(x: int, y: int) -> float:
        return (1.0 - 1.0 / T) if x == y else -1.0 / T

    total = 0.0
    for (u, v, u2, v2), new in label_classes(nf):
        if nf + new > T:
            continue
        weight = pi(t, u) * pi(tp, v) * pi(t, u2) * pi(tp, v2)
        if weight:
            count = math.prod(T - nf - i for i in range(new))
            total += count * weight * layer_norm_gram_covariance(net, M, outputs + (u, v), outputs + (u2, v2))
    return total


def layer_norm_ntk_mean_shift(net: Network, width: int) -> tuple[float, float]:
    """E T G_kk(t, t) and E T G_kk(t, s) minus their mean-field values: the O(1) shifts behind layer norms.

    The forward NTK recursion of :mod:`meanfield.finite.corrections` run through every layer-normed layer with the
    norm's own shift, its response through the correlation, its influence-function covariances, the Jacobian's
    projections (on N and on Y) and the Stein terms of :func:`layer_norm_gram_means`; any hidden placements, depth and
    widths. Reproduces :func:`layer_norm_gram_means` (layer 2 of three) and, without norms,
    :func:`meanfield.finite.corrections.ntk_mean_shift`.

    Args:
        net: a numeric network whose normalizations are layer norms on hidden layers (or none: the plain recursion).
        width: M.

    Raises:
        InvalidArgument: another network or a bad width.

    Example:
        >>> d, o = layer_norm_ntk_mean_shift(Network(4, "tanh", 2, 0.1, norms=["layer:1", "layer:3"]), 64)
        >>> bool(d > 0), bool(o > 0)
        (True, True)
    """
    check_layer_norms(net)
    width = check_int("width", width, minimum=2)
    return _ln_ntk(net, width, (0, 0))[1], _ln_ntk(net, width, (0, 1))[1]


@dataclass(frozen=True)
class LayerNormCorrections:
    """Gram means with their O(1/M) shifts, entry variances and the corrected m, s, kappa's behind layer norms.

    Attributes:
        network, width, samples: what was computed (M, T).
        mean_field_diag, mean_field_offdiag, m_mean_field, s_mean_field: ``predict``'s values.
        mean_diag, mean_offdiag: E G_tt, E G_ts with their O(1/M) terms (:func:`layer_norm_ntk_mean_shift`).
        var_diag, var_offdiag, cross_square_diag, cross_square_offdiag: the entry variances and E G_kl^2 (k != l)
            (:func:`meanfield.finite.fourpoint_layernorm.layer_norm_entry_variances`).
        m, s, kappa1, kappa2: corrected, as in :class:`meanfield.finite.corrections.GramCorrections`.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.
    """

    network: Network
    width: int
    samples: int
    mean_field_diag: float
    mean_field_offdiag: float
    mean_diag: float
    mean_offdiag: float
    var_diag: float
    var_offdiag: float
    cross_square_diag: float
    cross_square_offdiag: float
    m: float
    s: float
    kappa1: float
    kappa2: float
    m_mean_field: float
    s_mean_field: float
    P: int
    alpha: float


def layer_norm_corrections(net: Network, width: int, samples: int) -> LayerNormCorrections:
    """m = C T E G_tt / P and s = [C T (E G_tt^2 + Var) + C T (T-1) (E G_ts^2 + Var) + C (C-1) T (...)] / P behind
    layer norms, to O(1/M).

    Args:
        net: a numeric network whose normalizations are layer norms on hidden layers (any number, depth >= 2) and
            possibly a centre-only batch norm on the output.
        width: M.
        samples: T (>= 2).

    Raises:
        InvalidArgument: another network, bad width or samples.

    Example:
        >>> c = layer_norm_corrections(Network(3, "tanh", 2, 0.1, outputs=2, norms=["layer:1"]), 64, 16)
        >>> bool(c.s > 1.15 * c.s_mean_field), bool(c.mean_diag > c.mean_field_diag)
        (True, True)
    """
    check_layer_norms(net, centre=True)
    M = check_int("width", width, minimum=2)
    T = check_int("samples", samples, minimum=2)
    base = predict(net, M, T)
    inner = net.with_(norms=tuple(n for n in net.norms if isinstance(n, LayerNorm)))
    centre = inner.norms != net.norms
    raw = predict(inner, M, T) if centre else base
    md = float(raw.gram_diag) + _ln_ntk(inner, M, (0, 0))[1] / T
    mo = float(raw.gram_offdiag) + _ln_ntk(inner, M, (0, 1))[1] / T
    C, P, alpha = net.outputs, int(base.P), float(base.alpha)
    if centre:
        # centre-only batch norm on the output: G_kl = Pi G_kl Pi exactly (as in meanfield.finite.corrections)
        md, mo = (1 - 1 / T) * (md - mo), -(md - mo) / T
        vd, vo = (_centred_variance(inner, M, T, (0, 0), f) / T ** 2 for f in ((0,), (0, 1)))
        xd, xo = ((_centred_variance(inner, M, T, (0, 1), f) / T ** 2 for f in ((0,), (0, 1))) if C >= 2
                  else (0.0, 0.0))
    else:
        v = layer_norm_entry_variances(inner, M, T)
        vd, vo, xd, xo = v.var_diag, v.var_offdiag, v.cross_square_diag, v.cross_square_offdiag
    s = (C * T * (md ** 2 + vd) + C * T * (T - 1) * (mo ** 2 + vo) + C * (C - 1) * (T * xd + T * (T - 1) * xo)) / P
    return LayerNormCorrections(net, M, T, float(base.gram_diag), float(base.gram_offdiag), md, mo, vd, vo, xd, xo,
                                C * T * md / P, s, T * md / (alpha * M), T * mo / (alpha * M), float(base.m),
                                float(base.s), P, alpha)


def finite_width_stats(net: Network, width: int, samples: int, base) -> dict | None:
    """The "1/M" model behind layer norms on hidden layers (any placement, several, any depth and widths): corrected
    gram_diag, gram_offdiag, m, s, kappa1, kappa2 (:func:`layer_norm_corrections`); None for networks without a layer
    norm or with another normalization (the caller handles those).

    Example:
        >>> from meanfield import predict
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["layer:1"])
        >>> sorted(finite_width_stats(net, 64, 16, predict(net, 64, 16))["includes_1_over_M"])
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
    """
    if not isinstance(net, Network) or net.is_symbolic or not any(isinstance(n, LayerNorm) for n in net.norms):
        return None
    try:
        check_layer_norms(net, centre=True)
    except InvalidArgument:
        return None
    try:
        c = layer_norm_corrections(net, width, samples)
    except InvalidArgument as error:     # e.g. negative mean products: predict keeps working with mean-field values
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    norms = ", ".join(map(str, net.norms))
    notes = [f"{norms}: E G_tt, E G_ts with their derived O(1/M) terms (the NTK recursion through the norm: its own "
             "shift, Jacobian projections, Stein terms); s with the entry variances of the four-point engine through "
             "the norm (leading order, gradient independence for the backward weights)",
             "lambda_max: not corrected (the mean-field value or bounds)"]
    if sum(isinstance(n, LayerNorm) for n in net.norms) >= 3:
        # measured (notes, section 6): four norms on a depth-5 net, E G_tt +0.4 to +0.6% at M = 128, not explained
        notes.insert(1, "three or more layer norms: the 1/M term of E G_tt is measured about a third too large for "
                        "deep chains of norms (E G_tt +0.5% at M = 128 with four); see the notes")
    return dict(gram_diag=c.mean_diag, gram_offdiag=c.mean_offdiag, m=c.m, s=c.s, kappa1=c.kappa1, kappa2=c.kappa2,
                includes_1_over_M=STATISTICS, notes=tuple(notes))
