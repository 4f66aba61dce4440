"""O(1/M) corrections with batch norm on the last hidden layer (meanfield.finite.hiddenbn) against sampled networks.

The sampled references are stored: ``sample_many(Network(3, act, 2.0, 0.1, outputs=2, norms=[norm]), 32, 8,
seeds=range(20000), route="exact")`` (about 6 minutes each on one core), and a live check re-samples 200 of those seeds
to guard the stored numbers against a change of the sampler. Statistical assertions compare a derived mean with the
sampled mean at |z| <= 3.5, z the sampled standard error (the default prediction is deterministic: exact reductions to
sphere integrals and fixed quadrature): a false-alarm rate of 5e-4 per assertion if the derivation is right and
the O(1/M^2) remainder is below the standard error; with the 10 such assertions here about 0.5% of seed choices would
fail.
Power: every "mean field is off" assertion is placed where the mean-field error is more than 6 of those standard errors
(measured: 7.0 to 9.3), so it fails only if the sampled mean moved by more than 2.5 of them. The corrected s is not held
to its standard error at this size: its O(T/M^2) remainder (the next order of the entry variances) is 4-7% at M = 32,
T = 8, so the assertion is that it removes at least 3/4 of the mean-field error (measured with the exact terms: 80% to
90%).

The exact terms are checked against the Monte Carlo kept behind ``method="monte-carlo"`` (a different computation of
the same derivation: draws of g and of the realized kernel, second differences) at |z| <= 3.5 of its standard error,
at M = 256 where the Monte Carlo's own O(EPS^2 / M^2) bias (second differences at a finite step) is below a tenth of
its standard error at these draws: false-alarm rate 5e-4 per assertion; power: a factor-2 error in any of the three
terms moves the total by more than 10 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from meanfield import InvalidArgument, Network, predict
from meanfield.finite.hiddenbn import (CORRECTED, below_network, default_method, finite_width_stats,
                                      hidden_batch_norm_terms)
from meanfield.finite.spherebn import Sphere, beta_rule, chi_moment
from meanfield.sampled.sampling import sample_many

Z = 3.5
M, T = 32, 8

# sampled mean and standard error over seeds 0..19999 (depth 2: 0..5999), M = 32, T = 8, C = 2, sigma_w^2 = 2,
# sigma_b^2 = 0.1: (activation, normalization, depth)
SAMPLED = {
    ("tanh", "batch:2", 3): dict(gram_diag=(7.572129618593125, 0.012329534144992604),
                              gram_offdiag=(-0.7333241773368638, 0.001389808140337152),
                              s=(0.615764103533376, 0.003038150207622871)),
    ("relu", "batch:2", 3): dict(gram_diag=(8.328460248579011, 0.013797225950564035),
                              gram_offdiag=(-0.10831957313231344, 0.0016726130541730806),
                              s=(0.74034730549876, 0.003956608871230398)),
    # on layer 1 of two the layer below is the inputs
    ("tanh", "batch:1", 2): dict(gram_diag=(4.2105025922687345, 0.008890335307437769),
                                 gram_offdiag=(-0.3618400744724505, 0.00097486785198954),
                                 s=(0.33890002741094605, 0.002086742012286073)),
}


def _net(act: str, norm: str, depth: int = 3) -> Network:
    return Network(depth, act, 2.0, 0.1, outputs=2, norms=[norm])


@pytest.mark.parametrize("act,norm,depth", sorted(SAMPLED))
def test_gram_means_and_s_against_sampled(act, norm, depth):
    t = hidden_batch_norm_terms(_net(act, norm, depth), M, T)
    assert t.draws == 0 and t.monte_carlo_sem[:2] == (0.0, 0.0)
    ref = SAMPLED[(act, norm, depth)]
    for name, corrected, mean_field, mc in (("gram_diag", t.mean_diag, t.mean_field_diag, t.monte_carlo_sem[0]),
                                            ("gram_offdiag", t.mean_offdiag, t.mean_field_offdiag,
                                             t.monte_carlo_sem[1])):
        mean, sem = ref[name]
        se = math.hypot(sem, mc)
        assert abs(corrected - mean) < Z * se, (name, corrected, mean, se)
        assert abs(mean_field - mean) > 6 * se, (name, mean_field, mean, se)
    mean, sem = ref["s"]
    assert abs(t.s - mean) < 0.25 * abs(t.s_mean_field - mean), (t.s, t.s_mean_field, mean)
    assert t.s > t.s_mean_field and t.s_units > 0 and t.s_below > 0 and t.s_cross > 0
    # m and the kappa's follow E G_tt and E G_ts
    assert t.m == pytest.approx(2 * T * t.mean_diag / t.P)
    assert t.kappa2 == pytest.approx(T * t.mean_offdiag / (t.alpha * M))


def test_stored_references_match_the_sampler():
    # 200 of the stored seeds, live: the mean of E G_tt within 3.5 of its standard error of the stored one (the
    # 200 draws are part of the 20000, so the difference's standard error is below the live one; false alarm <= 5e-4)
    net = _net("tanh", "batch:2")
    live = sample_many(net, M, T, seeds=range(200), processes=1, route="exact", progress=False)
    mean, sem = SAMPLED[("tanh", "batch:2", 3)]["gram_diag"]
    assert abs(live.mean["gram_diag"] - mean) < Z * math.hypot(live.sem["gram_diag"], sem)


def test_predict_dispatch_names_what_is_corrected():
    net = _net("tanh", "batch:2")
    st = predict(net, 32, 6, finite_width="1/M")
    t = hidden_batch_norm_terms(net, 32, 6)
    assert st.includes_1_over_M == CORRECTED | {"s"}
    assert (st.gram_diag, st.gram_offdiag, st.m, st.s, st.kappa1, st.kappa2) == (
        t.mean_diag, t.mean_offdiag, t.m, t.s, t.kappa1, t.kappa2)
    assert any("batch:2" in n and "sphere integrals" in n for n in st.notes)
    # centre-only: the same model
    centre = _net("relu", "batch-center:2")
    assert predict(centre, 32, 6, finite_width="1/M").includes_1_over_M == CORRECTED | {"s"}
    # deeper: s too, the NTK's spread between the units below from meanfield.finite.ntkspread
    deep = _net("tanh", "batch:3", depth=4)
    sd = predict(deep, 32, 6, finite_width="1/M")
    assert sd.includes_1_over_M == CORRECTED | {"s"} and sd.s > predict(deep, 32, 6).s
    # a hidden batch norm with weights above it: meanfield.finite.deepbn's (tests/test_deep_bn.py), not this module's
    low = _net("tanh", "batch:1")
    sl = predict(low, 32, 6, finite_width="1/M")
    assert sl.includes_1_over_M == CORRECTED | {"s"} and any("batch:1" in n for n in sl.notes)
    assert finite_width_stats(low, 32, 6, predict(low, 32, 6)) is None
    assert finite_width_stats(Network(3, "tanh", 2.0, 0.1, norms=["batch:last"]), 32, 6, None) is None


def test_bad_inputs():
    net = _net("tanh", "batch:2")
    for bad in (Network(3, "tanh", 2.0, 0.1), _net("tanh", "batch:1"), _net("tanh", "layer:2"),
                Network(3, "tanh", 2.0, 0.1, norms=["layer:1", "batch:2"])):
        with pytest.raises(InvalidArgument):
            hidden_batch_norm_terms(bad, 32, 8)
    with pytest.raises(InvalidArgument):
        below_network(Network(3, "tanh", 2.0, 0.1))
    for kwargs in (dict(width=0, samples=8), dict(width=32, samples=5), dict(width=32, samples=8, draws=10),
                   dict(width=32, samples=8, method="quadrature")):
        with pytest.raises(InvalidArgument):
            hidden_batch_norm_terms(net, **kwargs)
    # centre-only at T = 3: the sphere of two fixed coordinates is empty, the Monte Carlo remains
    centre = _net("tanh", "batch-center:2")
    assert default_method(centre, 3) == "monte-carlo" and default_method(centre, 4) == "exact"
    with pytest.raises(InvalidArgument):
        hidden_batch_norm_terms(centre, 32, 3)
    assert predict(centre, 32, 3, finite_width="1/M").includes_1_over_M == CORRECTED | {"s"}
    with pytest.raises(InvalidArgument):
        default_method(Network(3, "tanh", 2.0, 0.1), 8)


@pytest.mark.parametrize("act,norm", [("tanh", "batch:2"), ("tanh", "batch-center:2")])
def test_exact_terms_match_the_monte_carlo(act, norm):
    net = _net(act, norm)
    ex = hidden_batch_norm_terms(net, 256, 8)
    mc = hidden_batch_norm_terms(net, 256, 8, method="monte-carlo", draws=20000)
    assert ex.draws == 0 and mc.draws == 20000
    d_sem, o_sem, s_sem = mc.monte_carlo_sem
    assert abs(ex.mean_diag - mc.mean_diag) < Z * d_sem, (ex.mean_diag, mc.mean_diag, d_sem)
    assert abs(ex.mean_offdiag - mc.mean_offdiag) < Z * o_sem, (ex.mean_offdiag, mc.mean_offdiag, o_sem)
    # s_sem is the standard error of the entry variances' parts (the means' own noise enters s through their squares)
    parts = [t.s_units + t.s_below + t.s_cross for t in (ex, mc)]
    assert abs(parts[0] - parts[1]) < Z * s_sem, (parts, s_sem)
    # power: the correction itself is many standard errors away from zero
    assert abs(ex.mean_diag - ex.mean_field_diag) > 10 * d_sem


def test_sphere_moments_are_exact():
    # E[(a.z)^4] over z uniform on |z|^2 = T in the complement of 1 is 3 T^2 |Pi a|^4 / (d (d + 2)), d = T - 1, and
    # E[z z^T] = T Pi / d: reproduced through either conditioning (F = {0} or {0, 1}) to rounding
    T, d = 7, 6
    a = np.arange(1.0, T + 1) ** 1.5
    pa = a - a.mean()
    for k in (1, 2):
        S = Sphere(T, k, nodes=12)
        fourth = S.mean(S.expect(np.einsum("i,j,k,l->ijkl", a, a, a, a)))
        assert fourth == pytest.approx(3 * T**2 * (pa @ pa) ** 2 / (d * (d + 2)), rel=1e-10)
        second = S.mean(S.expect(np.outer(a, a)))
        assert second == pytest.approx(T * (pa @ pa) / d, rel=1e-10)
    b, w = beta_rule(T)
    for p in (-2, -1, 1, 2):
        assert float(w @ b**p) == pytest.approx(chi_moment(T, p), rel=1e-10)


def test_sphere_quadrature_converges():
    # a relu and a tanh pair function times a quartic in the other coordinates: the default rule (40 nodes per angle)
    # against twice as many agree to 1e-9 relative (relu's breaks sit on the rule's cuts; measured 1e-14 on the terms)
    T = 8
    W = np.random.default_rng(3).standard_normal((T,) * 4)
    for k in (1, 2):
        values = []
        for nodes in (40, 80):
            S = Sphere(T, k, nodes=nodes)
            z0, z1 = S.z[:, 0], S.z[:, k - 1]
            values.append((S.mean(np.maximum(z0, 0) * np.maximum(z1, 0), S.expect(W)),
                           S.mean((z0 > 0) * (z1 > 0), S.expect(W)), S.mean(np.tanh(z0) * np.tanh(z1), S.expect(W))))
        assert np.allclose(values[0], values[1], rtol=1e-9, atol=0)


def _dense_exact_terms(net: Network, width: int, T: int) -> tuple:
    """The exact terms over dense T^4 tensors (the evaluation the exchangeable one replaced, session 10): terms 1.-3.
    of (E G_tt, E G_ts) and the layers below's share of the entry variances."""
    from meanfield.finite.bnstep import UnitLaw, pair_functions, world_fluctuation
    from meanfield.finite.corrections import kernel_mean_shift, ntk_mean_shift
    from meanfield.finite.fourworld import realized_world
    from meanfield.integrals.quadrature import Unit

    l = net.depth - 1
    widths = net.widths(width)
    M1, M2 = widths[l - 1], widths[l]
    sw, sw_out = float(net.sigma_w2[l - 1]), float(net.sigma_w2[l])
    below = below_network(net)
    (delta, dD, v, D, om, Pi, CKK, _, _, _, CTK, e_t1k2, e_k22, e_const, W1, Y, trY,
     big) = world_fluctuation(realized_world(below, width), kernel_mean_shift(below, width)[l - 1],
                              ntk_mean_shift(below, width), M1, sw, T)
    out, quad = [], []
    for k in (1, 2):
        law = UnitLaw(T, k, net.norms[0].center_only, v)
        S, R = law.S, law.R
        ff, pp = pair_functions(Unit.of(net.phi(l)), k)
        f0, f1, f2 = (law.avg(ff, p) for p in (0, 1, 2))
        p0, p1, p2 = (law.lam(pp, p) for p in (0, 1, 2))
        G0, G1, G2 = (M2 * f + sw_out * D * R * p for f, p in ((f0, p0), (f1, p1), (f2, p2)))
        one = om * delta / 2 * S.mean(T * G1 - (T - 1) * G0) + sw_out * dD * S.mean(p0, R)
        two = (om**2 / 8 * S.mean(G2 * S.expect(CKK) - 2 * G1 * S.expect(e_t1k2) - 4 * G1 * S.expect(e_k22)
                                  + G0 * e_const)
               + sw_out * om / 2 * S.mean(p1 * law.sandwich(CTK) - p0 * law.sandwich(W1)))
        three = sw_out * (sw / M1) ** 2 / v * S.mean(p1 * law.sandwich(Y) - p0 * law.sandwich(trY))
        out.append((one / T, two / T, three / T))
        rr = law.outer_R(p0)
        g = np.concatenate([(om / 2 * (law.mom2(G1) - S.mean(G0) * Pi) + sw_out * M1 * rr).ravel(),
                            (sw_out * sw * rr).ravel()])
        quad.append(float(g @ big @ g))
    return out, (T * quad[0] + T * (T - 1) * quad[1]) / T**2


@pytest.mark.parametrize("act,norm,samples", [("tanh", "batch:2", 6), ("relu", "batch-center:2", 8),
                                              ("tanh", "batch:2", 16)])
def test_exact_terms_equal_their_dense_evaluation(act, norm, samples):
    # the exchangeable contractions (O(1) in T) against the dense T^4 evaluation: the same numbers to rounding
    net = Network(3, act, 2.0, 0.1, outputs=2, norms=[norm])
    t = hidden_batch_norm_terms(net, 64, samples)
    (d1, d2, d3), (o1, o2, o3) = _dense_exact_terms(net, 64, samples)[0]
    below = _dense_exact_terms(net, 64, samples)[1]
    got = [t.shift_diag, t.second_diag, t.stein_diag, t.shift_offdiag, t.second_offdiag, t.stein_offdiag]
    scale = abs(t.mean_field_diag)
    assert np.allclose(got, [d1, d2, d3, o1, o2, o3], rtol=1e-10, atol=1e-12 * scale)
    assert math.isclose(t.s_below * t.P / net.outputs, below, rel_tol=1e-10)


def test_hidden_batch_norm_terms_at_large_samples():
    # no T^4 array: T = 256 runs (the dense form needed 34 GB), and its mean stays near mean field at M = 256
    net = Network(3, "tanh", 2.0, 0.1, outputs=2, norms=["batch:2"])
    t = hidden_batch_norm_terms(net, 256, 256)
    assert np.isfinite([t.mean_diag, t.mean_offdiag, t.s]).all()
    assert abs(t.mean_diag / t.mean_field_diag - 1) < 0.05
