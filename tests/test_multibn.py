"""O(1/M) corrections with batch norms on hidden layers 1 and l > 1, or one with layer norms below it (multibn).

The sampled references are stored: ``sample_many(Network(L, act, 2.0, 0.1, outputs=2, norms=norms), 64, 8,
seeds=range(N), route="exact", processes=1)`` (N below; 5-10 minutes each on one shared core); a live check re-samples
seeds 0..199 of one of them and compares with the stored mean of those seeds (exact, a guard against a change of the
sampler).
Statistical assertions compare a derived mean with the sampled mean at |z| <= 3.5, z in sampled standard errors (the
prediction is deterministic; its quasi-Monte Carlo part moves it by about 1e-5 relative, far below a standard error):
a false-alarm rate of 5e-4 per assertion if the derivation is right and the O(1/M^2) remainder is below the standard
error; with the 8 such assertions here about 0.4% of seed choices would fail.
Power: every "mean field is off" assertion is placed where the mean-field error is more than 6 of those standard errors
(measured: 15 to 23), so it fails only if the sampled mean moved by more than 2.5 of them. s is not held to its
standard error (its O(T/M^2) remainder is 5 to 9 of them): the corrected s must remove 3/4 of mean field's error.

Reductions (to rounding): the upper norm's step over a plain network's world is hiddenbn's ``batch_norm_layer``; the
world recursion started at a plain layer 1's world is fourworld's ``realized_world``; the NTK shift between the norms
is deepbn's one-norm network's; the negative-overlap four-sample means meet fourworld's at q_ts = 0 and the exact
two-sample rule's at q_ts < 0. Layer 1's quasi-Monte Carlo world meets hiddenbn's exact two-sample covariance
within 2e-3 of its largest entry (measured: 2e-4 to 4e-4 at the default rule).
"""

from __future__ import annotations

import numpy as np
import pytest

from meanfield import InvalidArgument, Network, predict
from meanfield.finite.corrections import kernel_mean_shift, ntk_mean_shift, two_sample_layer
from meanfield.finite.deepbn import deep_batch_norm_terms
from meanfield.finite.fourworld import four_sample_mean, realized_world
from meanfield.finite.hiddenbn import batch_norm_layer
from meanfield.finite.multibn import (CORRECTED, BelowWorld, _below_upper, negative_overlap_mean, _prefix,
                                      world_above, batch_norm_step, finite_width_stats, first_layer_world,
                                      multi_batch_norm_terms)
from meanfield.integrals.quadrature import Unit
from meanfield.sampled.sampling import sample_many

Z = 3.5
M, T = 64, 8

# sampled mean and standard error, M = 64, T = 8, C = 2, sigma_w^2 = 2, sigma_b^2 = 0.1: (activation, depth, norms)
SAMPLED = {
    # seeds 0..39999
    ("relu", 3, "batch:1,batch:2"): dict(gram_diag=(17.795396802304477, 0.01563769831735458),
                                         gram_offdiag=(-0.4860185265727192, 0.0019045717313434505),
                                         s=(0.7468027882877968, 0.0018756770402531728)),
    # seeds 0..19999
    ("tanh", 3, "batch:1,batch:2"): dict(gram_diag=(14.774616075211298, 0.018132343721844087),
                                         gram_offdiag=(-1.560877001110593, 0.002054154856132771),
                                         s=(0.5298525608860675, 0.002157154307914973)),
    ("tanh", 4, "batch:1,batch:3"): dict(gram_diag=(21.34892739112782, 0.028705589291146152),
                                         gram_offdiag=(-2.2854330279819584, 0.0032879518802693404),
                                         s=(0.7635989075646512, 0.002518017064054482)),
    # a layer norm below the batch norm: the means only (s is not derived there)
    ("tanh", 3, "layer:1,batch:2"): dict(gram_diag=(13.938963838727965, 0.01579108438634583),
                                         gram_offdiag=(-1.4693747602172609, 0.0017619762211373263)),
}
# the mean over seeds 0..199 of the first one (the live guard)
FIRST_200 = dict(gram_diag=17.789717183043333, gram_offdiag=-0.4920421739805954)


def _net(act: str, depth: int, norms: str) -> Network:
    return Network(depth, act, 2.0, 0.1, outputs=2, norms=norms.split(","))


@pytest.mark.parametrize("key", sorted(SAMPLED))
def test_means_match_sampled_networks(key):
    t = multi_batch_norm_terms(_net(*key), M, T)
    ref = SAMPLED[key]
    for stat, derived, mean_field in (("gram_diag", t.mean_diag, t.mean_field_diag),
                                      ("gram_offdiag", t.mean_offdiag, t.mean_field_offdiag)):
        mean, sem = ref[stat]
        assert abs(derived - mean) <= Z * sem, (stat, derived, mean, sem)
        assert abs(mean_field - mean) > 6 * sem, (stat, mean_field, mean, sem)
    # s: the O(T/M^2) remainder (the next order of the entry variances, -2% to -3% here) is several standard errors,
    # so the assertion is that the corrected s removes at least 3/4 of mean field's error (measured: 88% to 90%)
    if "s" not in ref:
        assert "s" not in t.includes_1_over_M and t.s == t.s_mean_field
        return
    mean = ref["s"][0]
    assert "s" in t.includes_1_over_M
    assert abs(t.s - mean) <= 0.25 * abs(t.s_mean_field - mean), (t.s, t.s_mean_field, mean)


def test_the_sampler_still_gives_the_stored_networks():
    res = sample_many(_net("relu", 3, "batch:1,batch:2"), M, T, seeds=range(200), processes=1, route="exact",
                      progress=False)
    for stat, value in FIRST_200.items():
        assert np.isclose(res.mean[stat], value, rtol=1e-9), stat


def test_the_claim_and_the_fallback():
    net = _net("tanh", 3, "batch:1,batch:2")
    out = finite_width_stats(net, M, T, predict(net, M, T))
    assert out["includes_1_over_M"] == CORRECTED | {"s"}
    t = multi_batch_norm_terms(net, M, T)
    assert out["m"] == t.m == 2 * T * t.mean_diag / t.P and out["s"] == t.s
    # layer norms below the batch norm: the chain answers, with the same means and its s
    deep = _net("relu", 3, "layer:1,batch:2")
    assert finite_width_stats(deep, M, T, predict(deep, M, T)) is None
    chained = predict(deep, M, T, finite_width="1/M")
    assert chained.includes_1_over_M == CORRECTED | {"s"}
    t = multi_batch_norm_terms(deep, M, T)
    assert float(chained.gram_diag) == pytest.approx(t.mean_diag, rel=1e-10)
    assert float(chained.gram_offdiag) == pytest.approx(t.mean_offdiag, rel=1e-10, abs=1e-10 * t.mean_diag)
    # not this module's placements
    for norms in (["batch:2"], ["batch:1"], ["batch:1", "layer:2"], ["batch-center:1", "batch:2"],
                  ["batch:1", "batch:last"]):
        other = Network(3, "tanh", 2.0, 0.1, norms=norms)
        assert finite_width_stats(other, M, T, None) is None
    # covered, but T too small: mean-field values and a note, never a wrong number
    low = finite_width_stats(net, M, 5, predict(net, M, 5))
    assert low["includes_1_over_M"] == frozenset() and "not derived" in low["notes"][0]


def test_bad_input_raises():
    with pytest.raises(InvalidArgument):
        multi_batch_norm_terms(Network(3, "tanh", 2.0, 0.1, norms=["batch:2"]), M, T)
    with pytest.raises(InvalidArgument):
        multi_batch_norm_terms(_net("tanh", 3, "batch:1,batch:2"), M, 5)
    with pytest.raises(InvalidArgument):
        multi_batch_norm_terms(_net("tanh", 3, "batch:1,batch:2"), 0, T)
    with pytest.raises(InvalidArgument):          # one input repeated: no batch variance on layer 1
        multi_batch_norm_terms(Network(3, "tanh", 2.0, 0.1, norms=["batch:1", "batch:2"], input_q2=1.0), M, T)
    with pytest.raises(InvalidArgument):
        batch_norm_step(Unit.of(_net("tanh", 3, "batch:1,batch:2").phi(2)), "world", M, M, 2.0, T)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_the_upper_step_over_a_plain_world_is_hiddenbns(act):
    net, plain = Network(3, act, 2.0, 0.1, norms=["batch:2"]), Network(2, act, 2.0, 0.1)
    below = BelowWorld(realized_world(plain, M), kernel_mean_shift(plain, M)[1], ntk_mean_shift(plain, M))
    mine = batch_norm_step(Unit.of(net.phi(2)), below, M, M, 2.0, T)
    ref = batch_norm_layer(net, M, T)
    for name in ("kbar", "nbar", "dk", "dn", "cov", "unit_second"):
        np.testing.assert_allclose(getattr(mine, name), getattr(ref, name), rtol=1e-10, atol=1e-13, err_msg=name)
    for key in ref.y:
        np.testing.assert_allclose(mine.y[key], ref.y[key], rtol=1e-10)


def test_the_world_recursion_from_a_given_start_is_fourworlds():
    deep = Network(3, "tanh", 2.0, 0.1)
    start = realized_world(Network(2, "tanh", 2.0, 0.1), M)
    mine, ref = world_above(deep, M, start, 1, 3), realized_world(deep, M)
    np.testing.assert_allclose(mine.cov, ref.cov, rtol=1e-9, atol=1e-12 * np.abs(ref.cov).max())
    np.testing.assert_allclose(mine.k, ref.k, rtol=1e-12)
    np.testing.assert_allclose(mine.n, ref.n, rtol=1e-12)
    for key in ref.y:
        np.testing.assert_allclose(mine.y[key], ref.y[key], rtol=1e-9)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def testnegative_overlap_means_meet_fourworlds_at_zero(act):
    unit = Unit.of(Network(2, act, 2.0, 0.1).phi(1))
    for factors in ((("f", 0), ("f", 1)), (("f", 0), ("f", 1), ("f", 2), ("f", 3)),
                    (("d", 0), ("d", 1), ("f", 0), ("f", 2)), (("f", 0), ("f", 0), ("d", 1), ("d", 1))):
        below = negative_overlap_mean(unit, 0.94, -1e-8, factors)
        above = four_sample_mean(unit, 0.94, 1e-8, factors)
        assert abs(below - above) <= 1e-7 + 1e-6 * abs(above), factors     # the means move by O(q_ts) = 2e-8
    # and at a negative overlap, the two-sample means of corrections' two-sample rule (exact in q_ts < 0)
    lay = two_sample_layer(unit, 0.94, -0.0123, 0.94)
    assert abs(negative_overlap_mean(unit, 0.94, -0.0123, (("f", 0), ("f", 1))) - lay.F[1]) <= 1e-9
    assert abs(negative_overlap_mean(unit, 0.94, -0.0123, (("d", 0), ("d", 1))) - lay.c[1]) <= 1e-9


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_layer_ones_world_meets_the_exact_two_sample_covariance(act):
    net = _net(act, 3, "batch:1,batch:2")
    world = first_layer_world(net, M, T).world
    exact = batch_norm_layer(_prefix(net, 2, ("batch:1",)), M, T)
    idx = [0, 1, 4, 10, 11, 14]          # the pairs (0, 0), (0, 1), (1, 1) of K, then of N
    assert np.abs(world.cov[np.ix_(idx, idx)] - exact.cov).max() <= 2e-3 * np.abs(exact.cov).max()
    for key in exact.y:
        np.testing.assert_allclose(world.y[key][:2, :2], exact.y[key], rtol=2e-3)
    assert np.all(np.linalg.eigvalsh(world.cov) > -1e-12 * np.abs(world.cov).max())


def test_the_ntk_shift_between_the_norms_is_deepbns():
    # the NTK of layer 3's pre-activations above the batch norm on layer 1: deepbn's one-norm network of depth 3
    net = _net("tanh", 4, "batch:1,batch:3")
    below = _below_upper(net, M, T)
    ref = deep_batch_norm_terms(_prefix(net, 3, ("batch:1",)), M, T)
    np.testing.assert_allclose(below.shift_theta, (T * ref.shift_diag, T * ref.shift_offdiag), rtol=1e-12)
