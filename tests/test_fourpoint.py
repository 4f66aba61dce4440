"""meanfield.fourpoint: the derived variance of cross-output Gram entries against exact arithmetic, bad input,
and sampled networks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meanfield.errors import InvalidArgument
from meanfield.fourpoint import _moments, cross_output_variance, same_output_variance
from meanfield.network import BatchNorm, LayerNorm, Network


def test_one_hidden_layer_by_hand():
    # L = 2 relu: A_1 = sum_i W2_ki W2_li step_t step_s, Var = sigma_w^4 E[step_t^2 step_s^2] / M (E = 1/4 for
    # independent inputs, 1/2 for t = s); B_1 = x_t . x_s + 1 with E[B_1^2] = 1 + M (t != s), (M + 1)^2 + 2M (t = s)
    M = 64
    v = cross_output_variance(Network(2, "relu", 2, 0, outputs=3), M, 8)
    assert v.offdiag == pytest.approx(4 * 0.25 / M * (1 + M), rel=1e-6)
    assert v.diag == pytest.approx(4 * 0.5 / M * ((M + 1) ** 2 + 2 * M), rel=1e-6)
    assert v.mean_square == pytest.approx((7 * v.offdiag + v.diag) / 8 / 64)


def test_quadrature_against_closed_forms():
    # relu: E[relu^2] = q/2, E[relu(u_t) relu(u_s)] = q (sin t + (pi - t) cos t) / (2 pi), cos t = c / q
    from meanfield.activations import activation

    q, c = 1.3, 0.4
    mean, cov = _moments(activation("relu"), (q, q, c))
    t = math.acos(c / q)
    assert mean[0] == pytest.approx(q / 2, rel=1e-6)
    # Gauss-Hermite nodes do not see the kink: 1.2e-3 relative here (enough for an O(1/M) variance coefficient)
    assert mean[2] == pytest.approx(q * (math.sin(t) + (math.pi - t) * math.cos(t)) / (2 * math.pi), rel=2e-3)
    # Var(relu^2) = E relu^4 - (q/2)^2 = 3 q^2 / 2 - q^2 / 4
    assert cov[0, 0] == pytest.approx(1.25 * q * q, rel=1e-6)
    # linear: exact Isserlis values
    mean, cov = _moments(activation("linear"), (q, q, c))
    assert np.allclose(mean, [q, q, c, 1.0]) and cov[2, 2] == pytest.approx(q * q + c * c) and abs(cov[3, 3]) < 1e-12


@pytest.mark.parametrize("net", [Network(2, "relu", 2, 0, outputs=1), Network(2, "relu", 2, 0, outputs=2,
                                                                            norms=[BatchNorm("last")]),
                                 Network(3, "tanh", 1, 0.1, outputs=2, norms=[LayerNorm(1)])])
def test_bad_networks(net):
    with pytest.raises(InvalidArgument):
        cross_output_variance(net, 32, 4)
    if net.norms:
        with pytest.raises(InvalidArgument):
            same_output_variance(net, 32, 4)


@pytest.mark.statistical
@pytest.mark.parametrize("act,sw,sb", [("relu", 2.0, 0.0), ("tanh", 1.0, 0.1)])
def test_against_sampled_networks(act, sw, sb):
    """L = 3, C = 2, M = 64, T = 8, 200 draws (seeds 7000..): the mean over draws of the squared cross-block entries
    (t != s and t = s) against the derivation. Per-draw values are independent; accept 3 standard errors plus 3%
    for the O(1/M) terms the derivation leaves out (measured within 2% at M = 64 for relu and tanh, L = 2..4):
    false-alarm rate about 0.3% per comparison."""
    from meanfield.sampling import sample

    M, T = 64, 8
    net = Network(3, act, sw, sb, outputs=2)
    v = cross_output_variance(net, M, T)
    same = same_output_variance(net, M, T)
    off, diag, same_off, same_diag = [], [], [], []
    mask = ~np.eye(T, dtype=bool)
    for seed in range(7000, 7200):
        G = sample(net, M, T, seed, gram=True).gram * T
        B, A = G[:T, T:], G[:T, :T]
        off.append(np.mean(B[mask] ** 2))
        diag.append(np.mean(np.diag(B) ** 2))
        # squared deviations from the mean-field mean: the variance plus an O(1) squared bias against O(M)
        same_off.append(np.mean((A[mask] - same.mean_offdiag) ** 2))
        same_diag.append(np.mean((np.diag(A) - same.mean_diag) ** 2))
    for derived, values in ((v.offdiag, off), (v.diag, diag)):
        mean, sem = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))
        assert abs(derived - mean) < 3 * sem + 0.03 * mean
    # same-output entries: within 2-8% of 300 sampled draws at M = 64, 256 (relu, tanh; L = 2..4): 3 sem + 8%
    for derived, values in ((same.offdiag, same_off), (same.diag, same_diag)):
        mean, sem = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))
        assert abs(derived - mean) < 3 * sem + 0.08 * mean
