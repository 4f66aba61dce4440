"""meanfield.finite.fourpoint: the derived variance of cross-output Gram entries against exact arithmetic, bad input,
and sampled networks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meanfield.errors import InvalidArgument
from meanfield.finite.fourpoint import _covariance, _exchangeable, _pair_mean, _product_mean, bulk_estimates, bulk_fluctuations, cross_output_variance, gram_covariance, outlier_fluctuations, same_output_variance
from meanfield.integrals.quadrature import Unit
from meanfield.spec.network import BatchNorm, LayerNorm, Network


def test_one_hidden_layer_by_hand():
    # L = 2 relu: A_1 = sum_i W2_ki W2_li step_t step_s, Var = sigma_w^4 E[step_t^2 step_s^2] / M (E = 1/4 for
    # independent inputs, 1/2 for t = s); B_1 = x_t . x_s + 1 with E[B_1^2] = 1 + M (t != s), (M + 1)^2 + 2M (t = s)
    M = 64
    v = cross_output_variance(Network(2, "relu", 2, 0, outputs=3), M, 8)
    assert v.offdiag == pytest.approx(4 * 0.25 / M * (1 + M), rel=1e-6)
    assert v.diag == pytest.approx(4 * 0.5 / M * ((M + 1) ** 2 + 2 * M), rel=1e-6)
    assert v.mean_square == pytest.approx((7 * v.offdiag + v.diag) / 8 / 64)


def test_quadrature_against_closed_forms():
    # relu at an exchangeable kernel (q, c): E[relu^2] = q/2, E[relu^4] = 3 q^2 / 2,
    # E[relu_t relu_s] = q (sin t + (pi - t) cos t) / (2 pi), E[step_t step_s] = (pi - t) / (2 pi), cos t = c / q.
    # The piecewise Gauss-Legendre rule splits at the kink: exact to rounding (Gauss-Hermite was 1e-3 here).
    from meanfield.spec.activations import activation

    q, c = 1.3, 0.4
    relu = Unit.of(activation("relu"))
    table = _exchangeable(relu, q, c)
    t = math.acos(c / q)
    assert _product_mean(table, {0: (2, 0)}) == pytest.approx(q / 2, rel=1e-12)
    assert _product_mean(table, {0: (4, 0)}) == pytest.approx(1.5 * q * q, rel=1e-12)
    arc = q * (math.sin(t) + (math.pi - t) * math.cos(t)) / (2 * math.pi)
    assert _product_mean(table, {0: (1, 0), 1: (1, 0)}) == pytest.approx(arc, rel=1e-12)
    assert _product_mean(table, {0: (0, 1), 1: (0, 1)}) == pytest.approx((math.pi - t) / (2 * math.pi), rel=1e-12)
    # any 2 x 2 covariance (unequal variances, negative covariance): the arc-cosine kernel of the normalized pair
    qa, qb, qab = 1.3, 0.7, -0.5
    t2 = math.acos(qab / math.sqrt(qa * qb))
    expect = math.sqrt(qa * qb) * (math.sin(t2) + (math.pi - t2) * math.cos(t2)) / (2 * math.pi)
    assert _pair_mean(relu, 0, qa, qb, qab) == pytest.approx(expect, rel=1e-12)
    # linear: Isserlis, E[u_a^2 u_b^2] = q^2 + 2 c^2 for three exchangeable samples' pairs
    lin = _exchangeable(Unit.of(activation("linear")), q, c)
    assert _product_mean(lin, {0: (2, 0), 1: (2, 0)}) == pytest.approx(q * q + 2 * c * c, rel=1e-12)
    assert _product_mean(lin, {0: (1, 0), 1: (1, 0), 2: (2, 0)}) == pytest.approx(c * q + 2 * c * c, rel=1e-12)


def test_gram_covariance_is_symmetric_and_matches_the_entry_variances():
    net = Network(3, "tanh", 1.0, 0.1, outputs=2)
    same = same_output_variance(net, 64, 8)
    cross = cross_output_variance(net, 64, 8)
    assert gram_covariance(net, 64, (0, 0, 0, 1), (0, 0, 0, 1)) == pytest.approx(same.offdiag, rel=1e-12)
    assert gram_covariance(net, 64, (0, 0, 5, 5), (0, 0, 5, 5)) == pytest.approx(same.diag, rel=1e-12)  # labels only
    assert gram_covariance(net, 64, (0, 1, 0, 1), (0, 1, 0, 1)) == pytest.approx(cross.offdiag, rel=1e-12)
    a, b = (0, 0, 0, 1), (1, 1, 0, 2)
    assert gram_covariance(net, 64, a, b) == pytest.approx(gram_covariance(net, 64, b, a), rel=1e-10)
    # different outputs' same-output entries share only the forward pass: positive, below the same output's
    assert 0 < gram_covariance(net, 64, (0, 0, 0, 1), (1, 1, 0, 1)) < same.offdiag


@pytest.mark.parametrize("first,second", [((0, 0, 0), (0, 0, 0, 1)), ((0, 2, 0, 1), (3, 3, 0, 1)), ("abcd", (0, 0, 0, 1)),
                                          ((0, 0, -1, 1), (0, 0, 0, 1))])
def test_gram_covariance_rejects_bad_entries(first, second):
    with pytest.raises(InvalidArgument):
        gram_covariance(Network(3, "relu", 2, 0, outputs=2), 64, first, second)


def test_bulk_estimates_are_unbiased_for_gaussian_vectors():
    """g_t = mu + L z_t with known Sigma = L L^T: E[estimates] = (tr Sigma^2, mu^T Sigma mu, 2 tr Sigma^2) exactly.
    400 draws of T = 6 (seed 3); accept 4 standard errors (false-alarm rate ~1e-4 per comparison)."""
    rng = np.random.default_rng(3)
    P, T = 5, 6
    Lc = rng.standard_normal((P, P)) / 2
    Sigma = Lc @ Lc.T
    mu = rng.standard_normal(P)
    est = []
    for _ in range(400):
        g = mu + rng.standard_normal((T, P)) @ Lc.T
        est.append(bulk_estimates(g @ g.T))
    est = np.array(est)
    expect = [np.trace(Sigma @ Sigma), mu @ Sigma @ mu, 2 * np.trace(Sigma @ Sigma)]
    for column, value in zip(est.T, expect):
        assert abs(column.mean() - value) < 4 * column.std(ddof=1) / math.sqrt(len(column))
    with pytest.raises(InvalidArgument):
        bulk_estimates(np.ones((3, 3)))


@pytest.mark.statistical
@pytest.mark.parametrize("act,sw,sb", [("relu", 2.0, 0.0), ("tanh", 1.0, 0.1)])
def test_bulk_fluctuations_against_sampled_networks(act, sw, sb):
    """L = 3, M = 256, T = 32, 60 draws (seeds 9500..): the per-draw unbiased U-statistics of tr Sigma_W^2, Var(mu . g)
    and Var|g - mu|^2 against the derivation. Measured O(1/M) terms: relu about +8/M on tr Sigma^2 (so +3% here),
    tanh 0. Accept 3 standard errors + 4% (false-alarm rate ~0.3% per comparison)."""
    from meanfield.sampled.sampling import sample

    M, T = 256, 32
    net = Network(3, act, sw, sb)
    b = bulk_fluctuations(net, M)
    est = np.array([bulk_estimates(sample(net, M, T, seed, gram=True).gram * T) for seed in range(9500, 9560)])
    for column, value in zip(est.T, (b.trace_sigma2, b.mean_direction, b.diagonal)):
        mean, sem = column.mean(), column.std(ddof=1) / math.sqrt(len(column))
        assert abs(value - mean) < 3 * sem + 0.04 * abs(mean)


@pytest.mark.statistical
def test_outlier_fluctuations_against_sampled_networks():
    """relu L = 3, C = 4, M = 64, T = 16, 150 draws (seeds 9700..): the per-output part of Var(O_kk) and E[O_kl^2] of
    the C x C outlier matrix against the derivation. The first-order rule leaves a systematic -10% on the cross
    part (measured over relu and tanh, L = 2..4; the backward noise's phi' factors correlate with B where B has an
    O(1) mean): accept 3 standard errors + 15% (false-alarm rate ~0.3% per comparison)."""
    from meanfield.sampled.sampling import sample

    M, T, C = 64, 16, 4
    net = Network(3, "relu", 2.0, 0.0, outputs=C)
    o = outlier_fluctuations(net, M, T)
    selfs, crosses = [], []
    for seed in range(9700, 9850):
        G = sample(net, M, T, seed, gram=True).gram
        O = G.reshape(C, T, C, T).sum(axis=(1, 3)) / T
        selfs.append(np.var(np.diag(O)) * C / (C - 1))
        crosses.append(np.mean(O[~np.eye(C, dtype=bool)] ** 2))
    for value, column in ((o.self_variance, selfs), (o.cross_square, crosses)):
        mean, sem = np.mean(column), np.std(column, ddof=1) / math.sqrt(len(column))
        assert abs(value - mean) < 3 * sem + 0.15 * mean


def test_outlier_fluctuations_sum_over_patterns_by_hand():
    # T = 1: O_kl = G_kl(t, t) exactly, so the derived fluctuations are the t = t entries' (co)variances
    net = Network(3, "relu", 2, 0, outputs=2)
    o = outlier_fluctuations(net, 64, 1)
    same = _covariance(net, 64, 1, (0, 0, 0, 0), (0, 0, 0, 0))[0]
    other = _covariance(net, 64, 1, (0, 0, 0, 0), (1, 1, 0, 0))[0]
    assert o.self_variance == pytest.approx(same - other, rel=1e-12)
    assert o.cross_square == pytest.approx(cross_output_variance(net, 64, 1).diag, rel=1e-12)


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
    from meanfield.sampled.sampling import sample

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
