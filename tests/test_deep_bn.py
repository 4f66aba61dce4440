"""O(1/M) corrections with one batch norm on any hidden layer (meanfield.finite.deepbn) against sampled networks.

The sampled references are stored: ``sample_many(Network(L, act, 2.0, 0.1, outputs=2, norms=[norm]), 64, 8,
seeds=range(40000), route="exact", processes=1)`` (20000 for batch:3; 2-5 minutes each on one core); a live check
re-samples seeds 0..199 of one of them and compares with the stored mean of those seeds (exact, a guard against a
change of the sampler).
Statistical assertions compare a derived mean with the sampled mean at |z| <= 3.5, z in sampled standard errors (the
prediction is deterministic): a false-alarm rate of 5e-4 per assertion if the derivation is right and the O(1/M^2)
remainder is below the standard error; with the 20 such assertions here (14 network means, 6 of the simulated layer)
about 1% of seed choices would fail.
Power: every "mean field is off" assertion is placed where the mean-field error is more than 6 of those standard errors
(measured: 6.1 to 21.8), so it fails only if the sampled mean moved by more than 2.5 of them. The corrected s (batch
norm on layer 1 or 2) is not held to its standard error: its O(T/M^2) remainder (the next order of the entry
variances) is 0.1-2.3% at M = 64, T = 8 (1 to 9 standard errors), so the assertion is that it removes at least 3/4 of
the mean-field error (measured: 89% to 99%).

The batch-normalized layer's own statistics (:func:`meanfield.finite.hiddenbn.batch_norm_layer`, new sphere
quadratures) are checked against a direct simulation of that layer (tanh, M = 32, T = 8, 6000 draws): the corrected
means at |z| <= 3.5 (false alarm 5e-4 each; power: mean field's N is off by about 8 standard errors at these draws),
and the kernel block of the covariance within 10% (the standard error of a variance estimated from 6000 draws is
sqrt(2 / 6000) = 1.8%, the O(T/M) next order measured at 1-2%: 10% is more than four standard errors above both).
"""

from __future__ import annotations

import numpy as np
import pytest

from meanfield import InvalidArgument, Network, predict
from meanfield.finite.deepbn import (deep_batch_norm_terms, entry_variance, finite_width_stats,
                                     normalized_prefix)
from meanfield.finite.hiddenbn import batch_norm_layer, hidden_batch_norm_terms
from meanfield.finite.symbolic_normalized import derive_network_corrections
from meanfield.sampled.sampling import sample_many

Z = 3.5
M, T = 64, 8

# sampled mean and standard error over seeds 0..39999, M = 64, T = 8, C = 2, sigma_w^2 = 2, sigma_b^2 = 0.1:
# (activation, depth, normalization)
SAMPLED = {
    ("tanh", 3, "batch:1"): dict(gram_diag=(10.999356557480478, 0.006608013602338586),
                                 gram_offdiag=(-0.546289834817487, 0.0006994861847458818),
                                 s=(0.2666198719660284, 0.00035639217573277254)),
    ("relu", 3, "batch:1"): dict(gram_diag=(13.538824125809775, 0.009870046023481367),
                                 gram_offdiag=(2.618997476081202, 0.002631028028392725),
                                 s=(0.49929929113855304, 0.0007401094585768666)),
    ("tanh", 4, "batch:1"): dict(gram_diag=(13.85938459600851, 0.009268939570731782),
                                 gram_offdiag=(-0.00915069192289672, 0.0009943219269724648),
                                 s=(0.2837600810933604, 0.00041660718176293076)),
    ("tanh", 4, "batch:2"): dict(gram_diag=(17.184875836034315, 0.014028392918609198),
                                 gram_offdiag=(-1.0906760687744612, 0.001398479156415223),
                                 s=(0.4609545620791654, 0.0009145549970583197)),
    ("relu", 4, "batch:2"): dict(gram_diag=(20.703757665037543, 0.018513959183392874),
                                 gram_offdiag=(2.083963085974773, 0.0025817581692399545),
                                 s=(0.7104408586950117, 0.0013735864287043006)),
    ("tanh", 3, "batch-center:1"): dict(gram_diag=(11.68487314087092, 0.006249924552292658),
                                        gram_offdiag=(-0.5664575717453556, 0.000632025442772059),
                                        s=(0.2992867784454454, 0.00033510103854246325)),
    # the last hidden layer of four (hiddenbn's, its s through ntkspread), seeds 0..19999
    ("tanh", 4, "batch:3"): dict(gram_diag=(21.91947524878348, 0.02935676765978928),
                                 gram_offdiag=(-2.344406649274603, 0.0033480747881907747),
                                 s=(0.8027311115835029, 0.002658165098143635)),
}
# the same network's means over seeds 0..199 (the live check)
FIRST_200 = (("tanh", 3, "batch:1"), dict(gram_diag=10.914926273579221, gram_offdiag=-0.5405212307715759,
                                          s=0.26220674573188507))


def _net(act: str, depth: int, norm: str, outputs: int = 2) -> Network:
    return Network(depth, act, 2.0, 0.1, outputs=outputs, norms=[norm])


@pytest.mark.parametrize("key", sorted(SAMPLED))
def test_gram_means_and_s_against_sampled(key):
    ref = SAMPLED[key]
    net = _net(*key)
    mf, got = predict(net, M, T), predict(net, M, T, finite_width="1/M")
    for stat in ("gram_diag", "gram_offdiag"):
        mean, se = ref[stat]
        z_mf, z = (float(getattr(mf, stat)) - mean) / se, (float(getattr(got, stat)) - mean) / se
        assert abs(z) <= Z, (key, stat, z)
        if abs(z_mf) > 6:     # where mean field is measurably off, the correction must be what closes the gap
            assert abs(z) < abs(z_mf) - 2.5, (key, stat, z_mf, z)
    mean, se = ref["s"]
    assert "s" in got.includes_1_over_M
    assert abs(float(got.s) - mean) <= abs(float(mf.s) - mean) / 4, key


def test_stored_references_match_the_sampler():
    key, ref = FIRST_200
    res = sample_many(_net(*key), M, T, seeds=range(200), processes=1, route="exact", progress=False)
    for stat, value in ref.items():
        assert res.mean[stat] == pytest.approx(value, rel=1e-9), stat


@pytest.mark.parametrize("act,norm,depth", [("tanh", "batch:2", 3), ("relu", "batch-center:2", 3),
                                            ("tanh", "batch:1", 2), ("relu", "batch:3", 4)])
def test_reduces_to_the_last_hidden_layer(act, norm, depth):
    """At l = L - 1 the recursion above is empty: hiddenbn's means and s to rounding."""
    net = _net(act, depth, norm)
    a, h = deep_batch_norm_terms(net, M, T), hidden_batch_norm_terms(net, M, T)
    assert a.mean_diag == pytest.approx(h.mean_diag, rel=1e-12)
    assert a.mean_offdiag == pytest.approx(h.mean_offdiag, rel=1e-12, abs=1e-14)
    assert a.s == pytest.approx(h.s, rel=1e-12)


@pytest.mark.parametrize("act,depth,norm", [("tanh", 4, "batch:1"), ("relu", 4, "batch:2"),
                                            ("tanh", 3, "batch-center:1"), ("tanh", 4, "batch:2")])
def test_mean_field_of_the_recursion_is_predicts(act, depth, norm):
    """The recursion's own leading order against predict: to rounding when the layer below the norm is the inputs;
    through the four-sample quadrature of the layers below (fourworld) otherwise (measured 3e-4 relative for tanh)."""
    t = deep_batch_norm_terms(_net(act, depth, norm), M, T)
    rel = 1e-10 if norm.endswith(":1") or act == "relu" else 1e-3
    assert t.recursion_diag / T == pytest.approx(t.mean_field_diag, rel=rel)
    assert t.recursion_offdiag / T == pytest.approx(t.mean_field_offdiag, rel=rel, abs=rel * t.mean_field_diag)


def test_predict_dispatch_and_symbolic_route():
    net = _net("tanh", 4, "batch:2")
    got = predict(net, M, T, finite_width="1/M")
    assert got.includes_1_over_M == frozenset({"gram_diag", "gram_offdiag", "m", "kappa1", "kappa2", "s"})
    assert any("batch norm on hidden layer 2" in n for n in got.notes)
    # on layer 3 and deeper: s through the NTK's spread of the plain stack below (meanfield.finite.ntkspread)
    deep = _net("tanh", 5, "batch:3")
    got = predict(deep, M, T, finite_width="1/M")
    assert got.includes_1_over_M == frozenset({"gram_diag", "gram_offdiag", "m", "kappa1", "kappa2", "s"})
    for net in (_net("tanh", 4, "batch:2"), _net("relu", 3, "batch-center:1", outputs=3), deep):
        got = predict(net, M, T, finite_width="1/M")
        d = derive_network_corrections(net)
        out = d.evaluate(M, T)
        for key, stat in (("mean_diag", "gram_diag"), ("mean_offdiag", "gram_offdiag"), ("m", "m"),
                          ("kappa1", "kappa1"), ("kappa2", "kappa2")):
            assert out[key] == pytest.approx(float(getattr(got, stat)), rel=1e-12)
        assert d.missing == () and out["s"] == pytest.approx(float(got.s), rel=1e-12)
    # the last hidden layer stays hiddenbn's
    assert finite_width_stats(_net("tanh", 3, "batch:2"), M, T, None) is None


def test_bad_inputs():
    with pytest.raises(InvalidArgument):
        deep_batch_norm_terms(_net("tanh", 4, "batch:2"), M, 5)          # full batch norm: T >= 6
    with pytest.raises(InvalidArgument):
        deep_batch_norm_terms(Network(3, "tanh", 2, 0.1), M, T)           # no batch norm
    with pytest.raises(InvalidArgument):
        deep_batch_norm_terms(Network(4, "tanh", 2, 0.1, norms=["batch:1", "layer:2"]), M, T)
    with pytest.raises(InvalidArgument):
        normalized_prefix(Network(3, "tanh", 2, 0.1, norms=["batch:last"]))
    with pytest.raises(InvalidArgument):
        entry_variance(Network(3, "tanh", 2, 0.1), M, T, False, 0)        # no batch norm
    with pytest.raises(InvalidArgument):
        entry_variance(_net("tanh", 4, "batch:1"), M, T, False, 2)
    assert finite_width_stats(Network(3, "tanh", 2, 0.1), M, T, None) is None


def _simulated_layer(draws: int, width: int, samples: int, seed: int) -> np.ndarray:
    """(K_tt, K_ts, K_ss, N_tt, N_ts, N_ss) of a batch-normalized tanh layer 1 (full), per draw: inputs x ~ N(0, I)
    of M_0 = width coordinates, W ~ N(0, 2 / M_0), b ~ N(0, 0.1); N = (1/M) sum_a phi'phi' (A_a X^T X A_a)."""
    rng = np.random.default_rng(seed)
    Pi = np.eye(samples) - 1.0 / samples
    out = []
    for _ in range(draws // 500):
        X = rng.standard_normal((500, width, samples))
        W = rng.standard_normal((500, width, width)) * np.sqrt(2.0 / width)
        G = W @ X + rng.standard_normal((500, width, 1)) * np.sqrt(0.1)
        G = G - G.mean(-1, keepdims=True)
        sig = np.sqrt((G * G).mean(-1, keepdims=True))
        Zs = G / sig
        H, D = np.tanh(Zs), 1 - np.tanh(Zs) ** 2
        K = np.einsum("nat,nas->nts", H, H) / width
        A = (Pi - Zs[..., :, None] * Zs[..., None, :] / samples) / sig[..., None]
        AXA = np.einsum("natu,nuv,nasv->nats", A, np.einsum("nbt,nbs->nts", X, X), A)
        N = (D[..., :, None] * D[..., None, :] * AXA).mean(1)
        out.append(np.stack([K[:, 0, 0], K[:, 0, 1], K[:, 1, 1], N[:, 0, 0], N[:, 0, 1], N[:, 1, 1]], 1))
    return np.concatenate(out)


def test_batch_norm_layer_against_a_simulated_layer():
    width, samples = 32, 8
    b = batch_norm_layer(Network(2, "tanh", 2.0, 0.1, norms=["batch:1"]), width, samples)
    v = _simulated_layer(6000, width, samples, seed=11)
    mean, se = v.mean(0), v.std(0, ddof=1) / np.sqrt(len(v))
    pred = np.concatenate([b.kbar + b.dk, b.nbar + b.dn])
    mf = np.concatenate([b.kbar, b.nbar])
    assert np.all(np.abs(pred - mean) <= Z * se), (pred - mean) / se
    assert abs(mf[3] - mean[3]) > 6 * se[3]
    C = np.cov(v.T)[:3, :3]
    assert np.allclose(C, b.cov[:3, :3], rtol=0.1, atol=0.1 * np.abs(b.cov[:3, :3]).max())
