"""The small-T block top with its exact first order (meanfield.finite.blocktop)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from block_models import normalized_tops
from meanfield.errors import InvalidArgument
from meanfield.finite.blocktop import effective_resolvent, invariant_block_top, self_normalization_overlap
from meanfield.finite.freeprob import edge_outlier_curvature


def _gaussian_block(rng, d0, v, ell, T, draws):
    """Draws of the model's Gaussian block A = d0 I + Y Y^T + ell y y^T (rows of Y iid N(0, diag v))."""
    Y = rng.standard_normal((draws, T, v.size)) * np.sqrt(v)
    y = rng.standard_normal((draws, T))
    return d0 * np.eye(T) + Y @ np.transpose(Y, (0, 2, 1)) + ell * y[:, :, None] * y[:, None, :]


@pytest.mark.parametrize("T,ell", [(6, 0.0), (8, 3.0), (16, 0.0)])
def test_overlap_identity_holds_draw_by_draw_average(T, ell):
    # E u^T diag(A - m) u = 2 (T - 1) / (T (T + 1)) (E lambda_1 - m) for the centred block Pi A Pi: exact (Haar
    # eigenvectors), so the per-draw difference x - k (lambda_1 - m) has mean 0. 4000 draws; the bound is 4 standard
    # errors of that mean (false alarm 6e-5). Power: the resolvent form at (T - 2)/T G(edge) that this replaces is
    # 19-33% above it at T = 8 on the grid's populations, many standard errors (about 1.5% of the mean here).
    rng = np.random.default_rng(7100 + T)
    v = np.linspace(0.2, 1.8, 60)
    d0 = 0.4 * v.sum()
    m = d0 + v.sum() + ell
    A = _gaussian_block(rng, d0, v, ell, T, 4000)
    B = A - A.mean(axis=2, keepdims=True) - A.mean(axis=1, keepdims=True) + A.mean(axis=(1, 2), keepdims=True)
    w, U = np.linalg.eigh(B)
    u = U[:, :, -1]
    x = np.einsum("kt,kt->k", u * u, np.diagonal(A, axis1=1, axis2=2) - m)
    k = self_normalization_overlap(1.0 + m, m, T)  # the slope 2 (T - 1) / (T (T + 1))
    diff = x - k * (w[:, -1] - m)
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(diff.size)
    assert x.mean() > 10 * x.std() / math.sqrt(x.size)  # and the overlap itself is resolved
    assert self_normalization_overlap(float(w[:, -1].mean()), m, T) == pytest.approx(
        k * (float(w[:, -1].mean()) - m), rel=1e-12)


def test_effective_resolvent_solves_its_equation():
    blocks = [(1.0, x) for x in np.linspace(0.2, 1.8, 50)]
    T = 8
    _, g_star, _, _ = edge_outlier_curvature(0.0, 0.0, blocks, T - 1, 0.0)
    lam = np.linspace(0.2, 1.8, 50)

    def c(g):
        x = 1.0 - (T - 1) * lam * g
        return 2 * g * (2 * np.sum(lam**2 / x) + g * np.sum((T - 1) * lam**3 / x**2))

    target = 0.6 * c(g_star)
    g = effective_resolvent(blocks, T, target, g_star)
    assert 0 < g < g_star and c(g) == pytest.approx(target, rel=1e-9)
    assert effective_resolvent(blocks, T, 2 * c(g_star), g_star) == g_star  # at or above c(G(edge)): G(edge)
    assert effective_resolvent(blocks, T, 0.0, g_star) == 0.0


def _normalized_top(rng, d0, v, V, T, draws):
    """Monte Carlo of the normalized block: Pi diag(rho) A diag(rho) Pi, squared norms gamma(m, V)."""
    return normalized_tops(rng, _gaussian_block(rng, d0, v, 0.0, T, draws), d0 + v.sum(), V)


@pytest.mark.parametrize("T,ratio", [(8, 7.0), (8, 0.55), (16, 0.55)])
def test_invariant_block_top_against_its_monte_carlo(T, ratio):
    # 200 modes (variances 0.2..1.8), d_0 = half their trace, squared norms `ratio` times a Gaussian sample's
    # variance (relu about 7, tanh about 0.55 on the grid). Second order in the norms, its Gaussian top the edge
    # at T - 1 plus Tracy-Widom (0.2-2.7% above its own Monte Carlo on the grid's populations): on those it was within
    # -2.4% to +2.2% of the model's Monte Carlo, here +2.9%, +0.9%, +0.6% (2000 draws); the allowance is 4% + 3 sem
    # (800 draws, sem 0.1-0.3%). Power: the earlier count (T - 2)/T was +5.5% at T = 8, ratio 7 (2000 draws).
    rng = np.random.default_rng(20261207 + T)
    v = np.linspace(0.2, 1.8, 200)
    d0 = 0.5 * v.sum()
    V = ratio * 2.0 * float(v @ v)
    mc, sem = _normalized_top(rng, d0, v, V, T, 800)
    mean, var = invariant_block_top(d0, [(1.0, x) for x in v], V, 0.0, T)
    assert abs(mean / mc - 1) < 0.04 + 3 * sem / mc
    assert var > 0


def test_block_top_functions_reject_bad_input():
    for args in [(0.0, [(10, 1.0)], -1.0, 0.0, 8), (0.0, [(10, 1.0)], 1.0, 0.0, 2), (0.0, [(10, -1.0)], 1.0, 0.0, 8),
                 (-20.0, [(10, 1.0)], 1.0, 0.0, 8), (0.0, "modes", 1.0, 0.0, 8), (0.0, [(10, 1.0)], 1.0, -1.0, 8)]:
        with pytest.raises(InvalidArgument):
            invariant_block_top(*args)
    with pytest.raises(InvalidArgument):
        self_normalization_overlap(1.0, 0.5, 1)
    with pytest.raises(InvalidArgument):
        self_normalization_overlap(float("nan"), 0.5, 8)
    for args in [([(10, 1.0)], 8, -1.0, 0.01), ([(10, 1.0)], 8, 1.0, 0.0), ([(10, 1.0)], 8, 1.0, 1.0),
                 ([(10, 1.0)], 2, 1.0, 0.01)]:
        with pytest.raises(InvalidArgument):
            effective_resolvent(*args)
