"""The pinned exchangeable forms of a batch-normalized unit's sphere expectations (meanfield.finite.bnpinned) against
the dense T^r computations they replace (spherebn.Sphere.expect, bnstep.UnitLaw's sandwich, mom2, outer_R, and the
2 T^2 x 2 T^2 covariance of world_fluctuation), at small T where the dense forms exist: exact to rounding."""

import numpy as np
import pytest

from meanfield.finite.bnpinned import (REP, embed, mom1_at, mom2_at, outer_r_at, pinned, pinned_at, sandwich,
                                       sphere_expect)
from meanfield.finite.bnstep import UnitLaw, pinned_quadratic, world_classes, world_fluctuation
from meanfield.finite.exchangeable import Exchangeable
from meanfield.finite.fourworld import realized_world
from meanfield.finite.spherebn import Sphere
from meanfield.spec.network import Network


def _generic(order: int, seed: int) -> Exchangeable:
    rng = np.random.default_rng(seed)
    return Exchangeable(order, rng.normal(size=len(Exchangeable.from_function(order, lambda lab: 0.0).values)))


def _dense_pinned(X: Exchangeable, T: int) -> np.ndarray:
    """The dense T^r array of a pinned tensor (pins at samples 0 and 1)."""
    return X.dense(T)[0, 1]


@pytest.mark.parametrize("T", [6, 9])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_sphere_expect_matches_dense(T, k, order):
    S = Sphere(T, k)
    for X in (embed(_generic(order, 1)), _generic(order + 2, 2)):
        dense = _dense_pinned(X, T)
        ref = S.expect(dense)
        got = sphere_expect(S, X)
        assert np.allclose(got, ref, rtol=1e-11, atol=1e-11 * max(np.abs(ref).max(), np.abs(X.values).max()))


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("extra", [0, 1, 2])
def test_sandwich_and_moments_match_unit_law(k, center, extra):
    T = 7
    law = UnitLaw(T, k, center, 1.3)
    X = _generic(4 + extra, 3 + extra)
    ref = law.sandwich(_dense_pinned(X, T))
    assert np.allclose(sandwich(law, X), ref, rtol=1e-11, atol=1e-11 * max(np.abs(ref).max(), 1.0))
    f = np.cos(law.S.z[:, 0]) + law.S.z[:, k - 1] ** 2
    assert np.allclose(mom1_at(law, f), law.mom1(f)[:REP], rtol=1e-12, atol=1e-13)
    assert np.allclose(mom2_at(law, f), law.mom2(f)[:REP, :REP], rtol=1e-12, atol=1e-13)
    assert np.allclose(outer_r_at(law, f), law.outer_R(f)[:REP, :REP], rtol=1e-12, atol=1e-13)
    # the leading block determines the whole matrix (invariant under the permutations fixing 0, 1)
    full = law.mom2(f)
    rebuilt = _dense_pinned(pinned(2, lambda ij: full[ij]), T)
    assert np.allclose(rebuilt, full, rtol=1e-12, atol=1e-13)
    assert pinned_at(pinned(1, lambda i: float(i[0])), (2,)) == 2.0     # the first other sample is labelled 2


def test_pinned_quadratic_matches_the_dense_covariance():
    T = 7
    world = realized_world(Network(2, "tanh", 2, 0.1), 64)
    big = world_fluctuation(world, (0.3, 0.1), (0.5, 0.2), 64, 2.0, T)[-1]
    wc = world_classes(world, (0.3, 0.1), (0.5, 0.2), 64, 2.0, T)
    cov = {(0, 0): wc.CKK, (0, 1): wc.CKN, (1, 0): wc.CNK, (1, 1): wc.CNN}
    a = {0: _generic(4, 7), 1: _generic(4, 8)}
    b = {0: _generic(4, 9).permuted((1, 0, 2, 3)), 1: _generic(4, 10)}
    dense = [np.concatenate([_dense_pinned(g[0], T).ravel(), _dense_pinned(g[1], T).ravel()]) for g in (a, b)]
    ref = float(dense[0] @ big @ dense[1])
    assert abs(pinned_quadratic(T, a, cov, b) - ref) <= 1e-11 * abs(ref)


def test_world_classes_reach_large_samples():
    # the exchangeable world has no T^4 array: its contractions at T = 4096 are O(1) and finite
    wc = world_classes(realized_world(Network(2, "tanh", 2, 0.1), 64), (0.0, 0.0), (0.0, 0.0), 64, 2.0, 4096)
    assert np.isfinite(wc.e_const) and wc.W1.order == 2 and np.all(np.isfinite(wc.trY.values))
