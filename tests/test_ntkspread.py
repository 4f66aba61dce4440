"""The NTK's spread between units (meanfield.finite.ntkspread) against the NTK of sampled plain networks.

Phi(t1, s1, t2, s2) = sum_bd X_bd(t1, s1) X_bd(t2, s2) of layer 2 of a tanh net (sigma_w^2 = 2, sigma_b^2 = 0.1, M = 32,
T = 4), from 300 sampled networks (seed 5; the NTK of layer 2 in closed form): the patterns of order M^3 (0, 0, 0, 0),
(0, 1, 0, 1), (0, 0, 1, 1) within 3.5 standard errors of the sampled mean (false alarm 5e-4 each if the derivation is
right and its O(1/M) relative remainder, measured 1% at M = 32, is below the standard error, 2-8%). Power: leaving out
the units' off-diagonal NTK (b != d) moves Phi(0, 0, 0, 0) by 27%, twelve standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from meanfield import InvalidArgument, Network
from meanfield.finite.fourworld import four_sample_mean
from meanfield.finite.ntkspread import ntk_spread
from meanfield.integrals.quadrature import Unit

Z = 3.5


def _sampled(width: int, samples: int, nets: int, seed: int, patterns: list) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(nets):
        x = rng.standard_normal((width, samples))
        W1 = rng.standard_normal((width, width)) * np.sqrt(2.0 / width)
        u1 = W1 @ x + rng.standard_normal((width, 1)) * np.sqrt(0.1)
        h1, d1 = np.tanh(u1), 1 - np.tanh(u1) ** 2
        W2 = rng.standard_normal((width, width)) * np.sqrt(2.0 / width)
        u2 = W2 @ h1 + rng.standard_normal((width, 1)) * np.sqrt(0.1)
        d2 = 1 - np.tanh(u2) ** 2
        # Theta^2_bd(t, s) = delta_bd (1 + h1.h1) + sum_e W_be W_de phi'_e(t) phi'_e(s) (1 + x_t . x_s)
        theta = np.einsum("be,de,et,es->bdts", W2, W2, d1, d1) * (1 + x.T @ x)
        theta += np.eye(width)[:, :, None, None] * (1 + h1.T @ h1)
        X = d2[:, None, :, None] * d2[None, :, None, :] * theta
        out.append([np.einsum("bd,bd->", X[:, :, a, b], X[:, :, c, e]) for a, b, c, e in patterns])
    return np.array(out)


def test_spread_against_sampled_networks():
    patterns = [(0, 0, 0, 0), (0, 1, 0, 1), (0, 0, 1, 1)]
    phi = ntk_spread(Network(3, "tanh", 2.0, 0.1), 32, 4)
    v = _sampled(32, 4, 300, 5, patterns)
    mean, se = v.mean(0), v.std(0, ddof=1) / np.sqrt(len(v))
    for p, m, s in zip(patterns, mean, se):
        assert abs(phi[p] - m) <= Z * s, (p, phi[p], m, s)


def test_first_layer_is_the_written_out_formula():
    """On layer 1: M_1 E[phi'^4] (Theta Theta + M_0 (Q Q + Q Q)), Theta^1 = 1 + x.x (the inputs' kernel Q = I here)."""
    width = 16
    phi = ntk_spread(Network(2, "tanh", 2.0, 0.1), width, 3)
    unit = Unit.of(Network(2, "tanh", 2.0, 0.1).phi(1))
    for lab, second in (((0, 0, 0, 0), (1 + width) ** 2 + 2 * width), ((0, 1, 0, 1), 1 + width),
                        ((0, 0, 1, 1), (1 + width) ** 2)):
        m4 = four_sample_mean(unit, 2.1, 0.1, tuple(("d", i) for i in lab))
        assert phi[lab] == pytest.approx(width * m4 * second, rel=1e-12)


def test_bad_inputs():
    for bad in (Network(3, "tanh", 2, 0.1, norms=["batch:1"]), Network(1, "tanh", 2, 0.1), "net"):
        with pytest.raises(InvalidArgument):
            ntk_spread(bad, 32, 4)
    with pytest.raises(InvalidArgument):
        ntk_spread(Network(3, "tanh", 2, 0.1), 0, 4)
