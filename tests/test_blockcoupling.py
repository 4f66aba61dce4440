"""The second-order coupling of several outputs' blocks (meanfield.finite.blockcoupling) and the tangent blocks of a
sampled network (meanfield.sampled.tangent)."""

import dataclasses
import math

import numpy as np
import pytest

from meanfield.errors import InvalidArgument
from meanfield.finite.blockcoupling import (random_state_coupling, random_state_self_coupling, second_order_block_top,
                                           selected_block_rotation)
from meanfield.sampled.backprop import draw, forward
from meanfield.sampled.gram import gram
from meanfield.sampled.tangent import tangent_blocks
from meanfield.spec.network import BatchNorm, LayerNorm, Network

ACTS = {"relu": (2.0, 0.0), "tanh": (1.0, 0.1)}


def test_second_order_top_is_the_top_of_the_two_by_two():
    first, top, C, c, d = 12.0, 8.0, 10, 0.11, 2.2
    vv = (C - 1) * c * top / d
    expected = np.linalg.eigvalsh(np.array([[first, math.sqrt(vv)], [math.sqrt(vv), d]]))[-1]
    assert second_order_block_top(first, top, C, c, d) == pytest.approx(expected, rel=1e-12)
    # one output, no coupling: the first order itself; more coupling, a higher top
    assert second_order_block_top(first, top, 1, c, d) == first
    assert second_order_block_top(first, top, C, 0.0, d) == first
    assert second_order_block_top(first, top, C, 2 * c, d) > second_order_block_top(first, top, C, c, d)


@pytest.mark.parametrize("kwargs", [dict(mean_eigenvalue=0.0), dict(random_coupling=-1.0), dict(outputs=0),
                                    dict(block_top=0.0), dict(first=float("nan"))])
def test_second_order_top_rejects_bad_input(kwargs):
    args = dict(first=12.0, block_top=8.0, outputs=3, random_coupling=0.1, mean_eigenvalue=2.0)
    args.update(kwargs)
    with pytest.raises(InvalidArgument):
        second_order_block_top(**args)


def test_random_state_identity():
    # E_b |P_b X b|^2 for b uniform on the centred unit sphere: the closed form of random_state_coupling against a
    # Monte Carlo over b for one fixed matrix (seed 0; 20000 draws, tolerance 4 standard errors: false alarm 6e-5)
    rng = np.random.default_rng(0)
    T = 6
    Pi = np.eye(T) - 1.0 / T
    X = Pi @ rng.standard_normal((T, T)) @ Pi
    b = rng.standard_normal((20000, T)) @ Pi
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    Xb = b @ X.T
    along = np.einsum("it,it->i", b, Xb)
    samples = np.einsum("it,it->i", Xb, Xb) - along**2
    n = T - 1
    F, tr, sq = np.sum(X * X), np.trace(X), np.trace(X @ X)
    closed = F / n - (tr * tr + F + sq) / (n * (n + 2))
    assert abs(samples.mean() - closed) < 4 * samples.std() / math.sqrt(len(samples))


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_random_state_coupling_against_sampled_cross_blocks(act):
    # the closed form evaluated on sampled cross blocks of centred networks (M = 32, T = 8, 200 draws, seeds 0-199)
    # against the four-point expectation. Tolerance: 3 standard errors (false alarm 0.3%) plus 5% for the
    # four-point rules' O(1/M) remainder (measured -3.4%..+2.8% at M = 32 and 64). Power: leaving out the
    # projection on b (|X|_F^2 / n alone) is 2.5-5 times larger here.
    sw, sb = ACTS[act]
    M, T, n = 32, 8, 200
    net = Network(3, act, sw, sb, outputs=2, norms=(BatchNorm("last", center_only=True),))
    vals = []
    for s in range(n):
        X = gram(net, forward(net, draw(net, M, T, seed=s))).matrix[T:, :T]
        N = T - 1
        F, tr, sq = np.sum(X * X), np.trace(X), np.trace(X @ X)
        vals.append(F / N - (tr * tr + F + sq) / (N * (N + 2)))
    vals = np.array(vals)
    derived = random_state_coupling(Network(3, act, sw, sb), M, T)
    assert abs(vals.mean() - derived) < 3 * vals.std() / math.sqrt(n) + 0.05 * derived


def test_random_state_coupling_rejects_normalized_networks():
    with pytest.raises(InvalidArgument):
        random_state_coupling(Network(3, "relu", 2, 0, norms=(LayerNorm(1),)), 64, 8)
    with pytest.raises(InvalidArgument):
        random_state_coupling(Network(3, "relu", 2, 0), 64, 2)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_tangent_blocks_rebuild_the_gram(act):
    sw, sb = ACTS[act]
    net = Network(3, act, sw, sb, outputs=3, norms=(BatchNorm("last", center_only=True),))
    M, T = 16, 6
    tb = tangent_blocks(net, M, T, seed=2)
    d = draw(net.with_(outputs=M), M, T, seed=2)
    W = d.weights[-1][:3]
    same = dataclasses.replace(d, weights=d.weights[:-1] + (W,), biases=d.biases[:-1] + (d.biases[-1][:3],))
    assert np.allclose(tb.gram(W), gram(net, forward(net, same)).matrix, atol=1e-12)


def test_independent_coupling_is_the_mean_over_an_independent_output():
    # E_{w_e} |P G_ea b|^2 in closed form against 4000 draws of w_e (seed 3; 4 standard errors: false alarm 6e-5)
    net = Network(3, "tanh", 1, 0.1, outputs=2, norms=(BatchNorm("last", center_only=True),))
    M, T = 12, 5
    tb = tangent_blocks(net, M, T, seed=1)
    rng = np.random.default_rng(3)
    w_a = rng.standard_normal(M) * math.sqrt(1.0 / M)
    b = rng.standard_normal(T)
    b -= b.mean()
    b /= np.linalg.norm(b)
    P = np.eye(T) - 1.0 / T - np.outer(b, b)
    closed = tb.independent_coupling(w_a, b, P)
    values = []
    for _ in range(4000):
        w_e = rng.standard_normal(M) * math.sqrt(1.0 / M)
        G = tb.gram(np.stack([w_a, w_e])).reshape(2, T, 2, T)
        values.append(float(np.sum((P @ G[1, :, 0, :] @ b) ** 2)))
    values = np.array(values)
    assert abs(values.mean() - closed) < 4 * values.std() / math.sqrt(len(values))


def test_tangent_blocks_reject_full_batch_norm_on_the_output():
    with pytest.raises(InvalidArgument):
        tangent_blocks(Network(3, "relu", 2, 0, outputs=2, norms=(BatchNorm("last"),)), 8, 4)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_random_state_self_coupling_against_sampled_blocks(act):
    # a block's own output-weight part D = (w^T T Theta w - E_w) / T from sampled tangent blocks (M = 32, T = 8,
    # hidden weights and batch seeds 0-119, 4 output weight vectors each, seed 20000 + s), the closed form over random
    # centred states per D, against the four-point expectation (240 draws: relu 3.41 (se 0.15) against 3.26, tanh
    # 0.127 (0.005) against 0.128). Tolerance: 3 standard errors over the 120 draws
    # (false alarm 0.3%) plus 5% for the four-point rules' O(1/M) remainder (as the cross coupling's). Power: the
    # cross coupling (no tr X^2 term, no factor 2 on the projection) is 1.7-2x smaller, far outside.
    sw, sb = ACTS[act]
    M, T, n = 32, 8, 120
    net = Network(3, act, sw, sb, outputs=1, norms=(BatchNorm("last", center_only=True),))
    N = T - 1
    vals = []
    for s in range(n):
        tb = tangent_blocks(net, M, T, seed=s)
        c = tb.sigma_w2 / tb.theta.shape[0]
        mean = c * np.einsum("itis->ts", tb.theta)
        W = np.random.default_rng(20000 + s).standard_normal((4, tb.theta.shape[0])) * math.sqrt(c)
        per = []
        for w in W:
            D = (np.einsum("i,itjs,j->ts", w, tb.theta, w) - mean) / T
            F, tr = np.sum(D * D), np.trace(D)
            per.append(F / N - (tr * tr + 2 * F) / (N * (N + 2)))
        vals.append(np.mean(per))
    vals = np.array(vals)
    derived = random_state_self_coupling(Network(3, act, sw, sb), M, T)
    assert derived > 1.5 * random_state_coupling(Network(3, act, sw, sb), M, T)
    assert abs(vals.mean() - derived) < 3 * vals.std(ddof=1) / math.sqrt(n) + 0.05 * derived


def test_selected_block_rotation_is_rho4_times_the_typical_two_by_two():
    top, d, c = 29.3, 18.6, 5.6
    typical = np.linalg.eigvalsh(np.array([[top, math.sqrt(c)], [math.sqrt(c), d]]))[-1] - top
    assert selected_block_rotation(top, d, c, 2.0) == pytest.approx(3.0 * typical, rel=1e-12)
    assert selected_block_rotation(top, d, c, 1.0) == 0.0
    assert selected_block_rotation(top, d, 0.0, 2.0) == 0.0


@pytest.mark.parametrize("args", [(0.0, 1.0, 1.0, 2.0), (8.0, 9.0, 1.0, 2.0), (8.0, 2.0, -1.0, 2.0),
                                  (8.0, 2.0, 1.0, 0.5), (8.0, 2.0, float("nan"), 2.0)])
def test_selected_block_rotation_rejects_bad_input(args):
    with pytest.raises(InvalidArgument):
        selected_block_rotation(*args)
