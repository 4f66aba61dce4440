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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import math

import numpy as np

from .errors import InvalidArgument, check_int

__all__ = ["CrossOutputVariance", "cross_output_variance"]


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
    """F(Q) = E[(phi_t^2, phi_s^2, phi_t phi_s)] and their covariance Sigma(Q), (u_t, u_s) ~ N(0, Q),
    Q = (var_t, var_s, cov), by nested Gauss-Hermite quadrature (u_s given u_t is Gaussian)."""
    a, b, c = Q
    ut = math.sqrt(a) * _NODES
    slope = c / a
    rest = math.sqrt(max(b - c * c / a, 0.0))
    us = slope * ut[:, None] + rest * _NODES[None, :]
    w = _WEIGHTS[:, None] * _WEIGHTS[None, :]
    ft = np.broadcast_to(np.asarray(phi(ut), dtype=float)[:, None], us.shape)
    fs = np.asarray(phi(us), dtype=float)
    v = np.stack([ft * ft, fs * fs, ft * fs])  # (3, n, n)
    mean = np.einsum("kij,ij->k", v, w)
    second = np.einsum("kij,lij,ij->kl", v, v, w)
    return mean, second - np.outer(mean, mean)


def _jacobian(phi: Any, Q: tuple) -> np.ndarray:
    """dF/dQ (3 x 3) by central differences."""
    J = np.empty((3, 3))
    for j in range(3):
        h = 1e-4 * max(abs(Q[0]), abs(Q[1]))
        up, dn = list(Q), list(Q)
        up[j] += h
        dn[j] -= h
        J[:, j] = (_moments(phi, tuple(up))[0] - _moments(phi, tuple(dn))[0]) / (2 * h)
    return J


def _kernel_covariances(net: Any, op: Any, widths: tuple, same_sample: bool) -> dict:
    """Cov(K^i, K^j) (3 x 3 each) of the realized kernels of h^0 .. h^{L-1} (module docstring)."""
    L = net.depth
    q1, q2 = float(net.input_q1), float(net.input_q2)
    if same_sample:
        q2 = q1
    # inputs: per coordinate (x_t^2, x_s^2, x_t x_s), Gaussian: Var x^2 = 2 q1^2, Cov(x_t^2, x_s^2) = 2 q2^2,
    # Cov(x_t^2, x_t x_s) = 2 q1 q2, Var(x_t x_s) = q1^2 + q2^2
    local = np.array([[2 * q1 * q1, 2 * q2 * q2, 2 * q1 * q2],
                      [2 * q2 * q2, 2 * q1 * q1, 2 * q1 * q2],
                      [2 * q1 * q2, 2 * q1 * q2, q1 * q1 + q2 * q2]])
    cov = {(0, 0): local / widths[0]}
    for j in range(1, L):
        layer = op.layers[j]
        Q = (float(layer.q1), float(layer.q1), float(layer.q1 if same_sample else layer.q2))
        phi = net.phi(j)
        _, sigma = _moments(phi, Q)
        J = _jacobian(phi, Q) * float(net.sigma_w2[j - 1])  # d K^j / d K^{j-1}
        cov[(j, j)] = sigma / widths[j] + J @ cov[(j - 1, j - 1)] @ J.T
        for i in range(j):
            cov[(j, i)] = J @ cov[(j - 1, i)]
            cov[(i, j)] = cov[(j, i)].T
    return cov


def _entry_variance(net: Any, op: Any, widths: tuple, same_sample: bool) -> float:
    """Var(T G_kl(t, s)) from the recursion of the module docstring (t = s when ``same_sample``)."""
    from .gaussian import cross_moment, second_moment

    L = net.depth
    V: dict[int, float] = {L: 0.0}
    gain: dict[int, float] = {}  # sigma_w^2 c_l: the factor carrying A_{l+1} into E[A_l]
    for l in range(L - 1, 0, -1):
        layer = op.layers[l]
        q1, q2 = float(layer.q1), float(layer.q2)
        phi = net.phi(l)
        d, d2 = phi.derivative, _phi_prime_squared(phi)
        if same_sample:
            c, e = float(second_moment(d, q1)), float(second_moment(d2, q1))
        else:
            c, e = float(cross_moment(d, q1, q2)), float(cross_moment(d2, q1, q2))
        sw = float(net.sigma_w2[l])  # W^{l+1}
        qt = float(op.layers[l + 1].qtilde1)
        gain[l] = sw * c
        V[l] = gain[l] ** 2 * V[l + 1] + sw * sw * e * qt * qt / widths[l]
    kcov = _kernel_covariances(net, op, widths, same_sample)
    entry = 2  # the (t, s) component of K (for t = s it equals the others)
    bbar = {l: widths[l - 1] * float(op.layers[l - 1].qhat1 if same_sample else op.layers[l - 1].qhat2) + 1.0
            for l in range(1, L)}
    total = 0.0
    for l in range(1, L):
        for lp in range(1, L):
            lo, hi = min(l, lp), max(l, lp)
            cov_a = V[hi]
            for m in range(lo, hi):
                cov_a *= gain[m]
            cov_b = widths[l - 1] * widths[lp - 1] * float(kcov[(l - 1, lp - 1)][entry, entry])
            total += (bbar[l] * bbar[lp] + cov_b) * cov_a
    return total


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
    from .network import Network
    from .recursions import order_parameters

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.norms:
        raise InvalidArgument("net", net.describe(), "a network without normalization layers",
                              "the derivation covers plain networks; the model measures the others")
    if net.outputs < 2:
        raise InvalidArgument("net", net.describe(), "C >= 2 outputs (cross-output entries)")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=1)
    widths = net.widths(M)
    op = order_parameters(net, T)
    off = _entry_variance(net, op, widths, same_sample=False)
    diag = _entry_variance(net, op, widths, same_sample=True)
    from .fisher import predict

    gd = float(predict(net, M, T).gram_diag)
    mean_square = ((T - 1) * off + diag) / T / T**2  # E[G_kl^2] over the block's entries, G = (T G) / T
    return CrossOutputVariance(M, T, off, diag, gd, M * mean_square / gd**2)

