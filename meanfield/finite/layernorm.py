"""Layer norm at finite width: the O(1/M) mean shift of the normalized layer's realized kernel, derived.

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

This is the forward piece of the layer-norm corrections only: the Gram means also need the backward Jacobian
(1/s_t)(I - 1 1^T / M - u~_t u~_t^T / M) of the normalization and the fluctuations of rho from the layers below;
those are not derived, so ``predict(..., finite_width="1/M")`` still returns mean-field values for layer norm.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgument, check_int, check_real
from ..integrals.quadrature import Unit
from ..spec.network import LayerNorm, Network
from .corrections import two_sample_layer, two_sample_rule

__all__ = ["layer_norm_kernel_shift", "LayerNormTerms", "layer_norm_terms", "layer_norm_kernel_mean_shift"]

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
    for p in range(3):
        gradF, hessF = lay.gradF[p], lay.hessF[p]
        H1 = gradF @ first                                          # d F / d eps_i
        H2 = np.einsum("a,aij->ij", gradF, second) + first.T @ hessF @ first
        # Gaussian integration by parts keeps phi' and phi'' out (relu): E[z_i d_i g] = E[g (z_i y_i - 1)],
        # E[z_i (z_i^2 - 1) d_i g] = -E[g (3 z_i^2 - 1 - (z_i^3 - z_i) y_i)], E[d_i g] = E[g y_i]
        zd = [rule.mean(g[p] * (z[i] * y[i] - 1)) for i in (0, 1)]
        z3d = [-rule.mean(g[p] * (3 * z[i] ** 2 - 1 - (z[i] ** 3 - z[i]) * y[i])) for i in (0, 1)]
        dg = [rule.mean(g[p] * y[i]) for i in (0, 1)]
        shift[p] = (float(gradF @ R) - H1.sum() + float((H2 * R2).sum()) - sum(zd) - 0.5 * sum(z3d))
        influence.append(g[p] - sum(dg[i] * z[i] + 0.5 * zd[i] * (z[i] ** 2 - 1) for i in (0, 1)))
    mean = [rule.mean(v) for v in influence]
    sigma = np.array([[rule.mean(a * b) - ma * mb for b, mb in zip(influence, mean)] for a, ma in zip(influence, mean)])
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
