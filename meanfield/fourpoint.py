"""Four-point order parameters: the O(1/M) variance of Gram entries between different outputs, derived.

The random-matrix model of :mod:`meanfield.rmt` needs fluctuation coefficients beyond the mean-field
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

from .errors import InvalidArgument, check_int

__all__ = ["CrossOutputVariance", "cross_output_variance", "SameOutputVariance", "same_output_variance"]


@dataclass(frozen=True)
class CrossOutputVariance:
    """Var(T G_kl(t, s)) for outputs k != l: ``offdiag`` (t != s) and ``diag`` (t = s), and the coefficient
    ``var_cross`` = M E[G_kl^2] / gram_diag^2 averaged over a cross block's T^2 entries (the normalization of
    :class:`meanfield.rmt.Fluctuations`)."""

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


def _phi_prime_squared(phi: Any) -> Any:
    from .activations import Activation

    d = phi.derivative
    return Activation.from_expr(d.expr**2, name=f"({d.name})^2")


_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(200)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _moments(phi: Any, Q: tuple) -> tuple[np.ndarray, np.ndarray]:
    """F(Q) = E[(phi_t^2, phi_s^2, phi_t phi_s, phi'_t phi'_s)] and their covariance Sigma(Q), (u_t, u_s) ~ N(0, Q),
    Q = (var_t, var_s, cov), by nested Gauss-Hermite quadrature (u_s given u_t is Gaussian)."""
    a, b, c = Q
    ut = math.sqrt(a) * _NODES
    slope = c / a
    rest = math.sqrt(max(b - c * c / a, 0.0))
    us = slope * ut[:, None] + rest * _NODES[None, :]
    w = _WEIGHTS[:, None] * _WEIGHTS[None, :]
    ft = np.broadcast_to(np.asarray(phi(ut), dtype=float)[:, None], us.shape)
    fs = np.asarray(phi(us), dtype=float)
    dt = np.broadcast_to(np.asarray(phi.derivative(ut), dtype=float)[:, None], us.shape)
    ds = np.asarray(phi.derivative(us), dtype=float)
    v = np.stack([ft * ft, fs * fs, ft * fs, dt * ds])  # (4, n, n)
    mean = np.einsum("kij,ij->k", v, w)
    second = np.einsum("kij,lij,ij->kl", v, v, w)
    return mean, second - np.outer(mean, mean)


def _jacobian(phi: Any, Q: tuple) -> np.ndarray:
    """dF/dQ (4 x 3) by central differences."""
    J = np.empty((4, 3))
    for j in range(3):
        h = 1e-4 * max(abs(Q[0]), abs(Q[1]))
        up, dn = list(Q), list(Q)
        up[j] += h
        dn[j] -= h
        J[:, j] = (_moments(phi, tuple(up))[0] - _moments(phi, tuple(dn))[0]) / (2 * h)
    return J


def _kernel_covariances(net: Any, op: Any, widths: tuple, same_sample: bool) -> dict:
    """Cov(X^i, X^j) (4 x 4 each) of the realized layer averages X^j = (K^j, mean of phi'_t phi'_s at layer j)
    of h^0 .. h^{L-1} (module docstring; the inputs have no phi')."""
    L = net.depth
    q1, q2 = float(net.input_q1), float(net.input_q2)
    if same_sample:
        q2 = q1
    # inputs: per coordinate (x_t^2, x_s^2, x_t x_s), Gaussian: Var x^2 = 2 q1^2, Cov(x_t^2, x_s^2) = 2 q2^2,
    # Cov(x_t^2, x_t x_s) = 2 q1 q2, Var(x_t x_s) = q1^2 + q2^2
    local = np.zeros((4, 4))
    local[:3, :3] = [[2 * q1 * q1, 2 * q2 * q2, 2 * q1 * q2],
                     [2 * q2 * q2, 2 * q1 * q1, 2 * q1 * q2],
                     [2 * q1 * q2, 2 * q1 * q2, q1 * q1 + q2 * q2]]
    cov = {(0, 0): local / widths[0]}
    for j in range(1, L):
        layer = op.layers[j]
        Q = (float(layer.q1), float(layer.q1), float(layer.q1 if same_sample else layer.q2))
        phi = net.phi(j)
        _, sigma = _moments(phi, Q)
        J = np.zeros((4, 4))  # d X^j / d X^{j-1}: through Q^j = sigma_w^2 K^{j-1} + sigma_b^2
        J[:, :3] = _jacobian(phi, Q) * float(net.sigma_w2[j - 1])
        cov[(j, j)] = sigma / widths[j] + J @ cov[(j - 1, j - 1)] @ J.T
        for i in range(j):
            cov[(j, i)] = J @ cov[(j - 1, i)]
            cov[(i, j)] = cov[(j, i)].T
    return cov


@functools.lru_cache(maxsize=64)
def _covariances(net: Any, width: int, samples: int, same_sample: bool) -> dict:
    """:func:`_kernel_covariances` of ``net`` at (M, T), computed once: the same- and cross-output entries (and the
    model's cells at one width) share them. Read-only."""
    from .recursions import order_parameters

    return _kernel_covariances(net, order_parameters(net, samples), net.widths(width), same_sample)


def _entry(net: Any, op: Any, width: int, samples: int, same_sample: bool, same_output: bool) -> tuple[float, float]:
    """(Var, mean) of T G_kl(t, s): one output (k = l) or two (k != l), t = s when ``same_sample`` (module
    docstring; the cross-output case is the one with abar = 0 and no conditional-mean fluctuation)."""
    from .gaussian import cross_moment, second_moment

    L = net.depth
    widths = net.widths(width)
    cov = _covariances(net, width, samples, same_sample)
    sw = [float(g) for g in net.sigma_w2]  # sw[j]: W^{j+1}
    c, gain = {}, {}
    abar = {L: 1.0 if same_output else 0.0}
    V = {L: 0.0}
    for l in range(L - 1, 0, -1):
        layer = op.layers[l]
        q1, q2 = float(layer.q1), float(layer.q2)
        d, d2 = net.phi(l).derivative, _phi_prime_squared(net.phi(l))
        if same_sample:
            c[l], e = float(second_moment(d, q1)), float(second_moment(d2, q1))
        else:
            c[l], e = float(cross_moment(d, q1, q2)), float(cross_moment(d2, q1, q2))
        gain[l] = sw[l] * c[l]  # E[A_l | layer l+1] = gain A_{l+1}
        abar[l] = abar[l + 1] * gain[l]
        # Var(v_k(t)_i v_l(s)_i) = (sigma_w^2 / M)^2 (|delta_k(t)|^2 |delta_l(s)|^2 + (delta_k(t) . delta_l(s))^2)
        qt1 = float(op.layers[l + 1].qtilde1)
        V[l] = gain[l] ** 2 * V[l + 1] + sw[l] ** 2 * e * (qt1 * qt1 + abar[l + 1] ** 2) / widths[l]
    qhat = "qhat1" if same_sample else "qhat2"
    bbar = {l: widths[l - 1] * float(getattr(op.layers[l - 1], qhat)) + 1.0 for l in range(1, L + 1)}

    def cov_bb(l: int, lp: int) -> float:  # Cov(B_l, B_l')
        return widths[l - 1] * widths[lp - 1] * float(cov[(l - 1, lp - 1)][2, 2])

    def cov_ba(l: int, lp: int) -> float:  # Cov(B_l, a_l'), a_l' = abar_l' (1 + sum_m delta cbar_m / c_m)
        return widths[l - 1] * abar[lp] * sum(float(cov[(l - 1, m)][2, 3]) / c[m] for m in range(lp, L))

    def cov_aa(l: int, lp: int) -> float:  # Cov(a_l, a_l')
        return abar[l] * abar[lp] * sum(float(cov[(m, mp)][3, 3]) / (c[m] * c[mp])
                                        for m in range(l, L) for mp in range(lp, L))

    last = L if same_output else L - 1  # the output layer's parameters reach only their own output
    total = 0.0
    for l in range(1, last + 1):
        for lp in range(1, last + 1):
            lo, hi = min(l, lp), max(l, lp)
            backward = V[hi]
            for m in range(lo, hi):
                backward *= gain[m]
            total += ((bbar[l] * bbar[lp] + cov_bb(l, lp)) * backward + abar[l] * abar[lp] * cov_bb(l, lp)
                      + abar[l] * bbar[lp] * cov_ba(l, lp) + bbar[l] * abar[lp] * cov_ba(lp, l)
                      + bbar[l] * bbar[lp] * cov_aa(l, lp))
    return total, sum(abar[l] * bbar[l] for l in range(1, last + 1))


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
    from .network import Network

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
        net: a :class:`~meanfield.network.Network` without normalization layers.
        width: M.
        samples: T.

    Returns:
        :class:`SameOutputVariance`.

    Example:
        >>> from meanfield.network import Network
        >>> v = same_output_variance(Network(2, "relu", 2, 0), 64, 8)
        >>> round(v.mean_diag, 6)       # E[T G_tt] = (|h^1|^2 + 1) (output layer) + qtilde_1 (|x|^2 + 1) = 65 + 65
        130.0
    """
    from .recursions import order_parameters

    M, T = _check_plain(net, width, samples, 1)
    op = order_parameters(net, T)
    off, mean_off = _entry(net, op, M, T, same_sample=False, same_output=True)
    diag, mean_diag = _entry(net, op, M, T, same_sample=True, same_output=True)
    return SameOutputVariance(M, T, off, diag, mean_off, mean_diag)


def cross_output_variance(net: Any, width: int, samples: int) -> CrossOutputVariance:
    """Derived variance of the Gram entries between two different outputs (module docstring).

    Args:
        net: a :class:`~meanfield.network.Network` without normalization layers and with C >= 2 outputs.
        width: M.
        samples: T (the batch size; enters only through the averaging over a block's entries).

    Returns:
        :class:`CrossOutputVariance`.

    Example:
        >>> from meanfield.network import Network
        >>> v = cross_output_variance(Network(2, "relu", 2, 0, outputs=2), 64, 8)
        >>> round(v.diag, 6)   # one hidden layer: sigma_w^4 E[step^4] / M x E[(|x|^2 + 1)^2] = 4 (1/2) / 64 x (65^2 + 2 x 64)
        136.03125
    """
    from .recursions import order_parameters

    M, T = _check_plain(net, width, samples, 2)
    op = order_parameters(net, T)
    off = _entry(net, op, M, T, same_sample=False, same_output=False)[0]
    diag = _entry(net, op, M, T, same_sample=True, same_output=False)[0]
    from .fisher import predict

    gd = float(predict(net, M, T).gram_diag)
    mean_square = ((T - 1) * off + diag) / T / T**2  # E[G_kl^2] over the block's entries, G = (T G) / T
    return CrossOutputVariance(M, T, off, diag, gd, M * mean_square / gd**2)

