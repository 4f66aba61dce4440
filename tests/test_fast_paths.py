"""The cold call's fast paths compute the same numbers as the direct forms they replace (benchmarks/rmt_speed.py).

Deterministic checks (no random state but fixed seeds for the test matrices): each tolerance is the rounding of the
two orders of operations as measured (stated per test) with a factor of 30 to 100 of room.
"""

import numpy as np
import pytest

from meanfield.finite import corrections, deterministic, fourpoint_layernorm
from meanfield.integrals import numeric
from meanfield.integrals.quadrature import Unit
from meanfield.spec.activations import activation
from meanfield.spec.network import Network


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_small_inverse_is_the_inverse(size):
    # the adjugate of well-conditioned complex stacks: measured 1e-15 relative against LAPACK
    rng = np.random.default_rng(7)
    a = rng.standard_normal((50, size, size)) + 1j * rng.standard_normal((50, size, size)) + 3 * np.eye(size)
    got = deterministic._small_inverse(a)
    assert np.abs(got - np.linalg.inv(a)).max() <= 1e-13 * np.abs(np.linalg.inv(a)).max()


@pytest.mark.parametrize("act, sw, sb", [("relu", 2.0, 0.0), ("tanh", 1.0, 0.1)])
def test_pencil_elimination_matches_the_direct_inverse(act, sw, sb):
    # Woodbury about i 10^k (k the decade of |z|) against inv(A_RR(z)) per unit type, z over the decades the law
    # visits (1e-7 to 1e4 of its mean): measured at most 3e-14 relative
    spaces, links = deterministic._pencil(Network(3, act, sw, sb), 6)
    dyson = deterministic._Dyson(spaces, links)
    for z in (1e4 + 1e4j, 10j, 3.0 + 1e-8j, 0.5 + 0.01j, 0.03 + 1e-8j, 1e-7 + 1e-9j):
        dyson.at(z)
        for s, (Lt, XZZ, left, _) in zip(spaces, dyson.parts):
            C, R, zi = s["C"], s["R"], s["zi"]
            A = s["lam"] + z * np.diag(s["z"])[None]
            X = np.linalg.inv(A[:, R[:, None], R[None, :]])
            direct = A[:, C[:, None], C[None, :]] - A[:, C[:, None], R[None, :]] @ X @ A[:, R[:, None], C[None, :]]
            assert np.abs(Lt - direct).max() <= 1e-12 * np.abs(direct).max()
            assert np.abs(XZZ - X[:, zi[:, None], zi[None, :]]).max() <= 1e-12 * np.abs(XZZ).max()
            assert np.abs(left - X[:, zi, :] @ A[:, R[:, None], C[None, :]]).max() <= 1e-12 * np.abs(left).max()


def test_mehler_bands_probed_lazily_give_the_same_moments():
    # the bands are probed in order only as far as a call needs: the same bands, and bit for bit the same moment
    f = activation("tanh")
    numeric._band_state.cache_clear()
    q1, q2 = np.array([0.3, 1.0]), np.array([0.1, 0.4])
    lazy = numeric._cross_quadrature(f, q1, q2, use_tables=False)
    probed = numeric._band_state(f)["probed"]
    assert 0 < probed < len(numeric._MEHLER_BANDS)  # the wide bands (900 and 1300 nodes) never probed
    bands = numeric._mehler_bands(f)
    assert numeric._band_state(f)["probed"] == len(numeric._MEHLER_BANDS)
    assert bands == tuple(numeric._mehler_band(f, i) for i in range(len(bands)))
    assert numeric._mehler_band(f, len(bands)) is None
    assert np.array_equal(numeric._cross_quadrature(f, q1, q2, use_tables=False), lazy)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_two_sample_layer_as_matrix_products(act):
    # gradients, Hessians and covariances by products over the nodes against the weighted sums they replace:
    # measured 2e-15 of the largest entry
    unit = Unit.of(Network(3, act, 2, 0.1).phi(1))
    q = (1.3, 0.4, 1.1)
    lay, g = corrections.two_sample_layer(unit, *q), corrections.two_sample_rule(unit, *q)
    f = [np.asarray(unit.f(x), dtype=float) for x in g.u]
    d = [np.asarray(unit.df(x), dtype=float) for x in g.u]
    pairs = ((0, 0), (0, 1), (1, 1))
    prods = [f[a] * f[b] for a, b in pairs] + [d[a] * d[b] for a, b in pairs]
    weight = [0.5 if a == b else 1.0 for a, b in pairs]
    means = np.array([g.mean(p) for p in prods])
    sigma = np.array([[g.mean(p * r) for r in prods] for p in prods]) - np.outer(means, means)
    hess = np.array([[[g.mean(p * g.hermite4(*pa, *pb) * wa * wb) for pb, wb in zip(pairs, weight)]
                      for pa, wa in zip(pairs, weight)] for p in prods])
    grad = np.array([[g.mean(p * g.hermite2(*pa) * wa) for pa, wa in zip(pairs, weight)] for p in prods])

    def close(a, b):
        return np.abs(a - b).max() <= 1e-13 * max(np.abs(b).max(), 1e-300)

    assert close(lay.sigma, sigma) and close(np.concatenate([lay.F, lay.c]), means)
    assert close(np.concatenate([lay.gradF, lay.gradc]), grad)
    assert close(np.concatenate([lay.hessF, lay.hessc]), hess)


def test_conditional_moments_of_some_powers_are_those_of_all():
    # the partial products are the same numbers in the same order: equal to the bit
    unit = Unit.of(Network(3, "tanh", 2, 0.1).phi(1))
    shift = np.linspace(-2.0, 2.0, 7)
    full = fourpoint_layernorm._conditional(unit, shift, 0.8)
    some = fourpoint_layernorm._conditional(unit, shift, 0.8, ((2, 0, 0), (0, 1, 0), (1, 2, 1)))
    assert all(np.array_equal(some[p], full[p]) for p in some)
