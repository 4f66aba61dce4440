"""The sampler's public API: draws, forward semantics, sample / sample_many, errors and printing."""

from __future__ import annotations

import math

import numpy as np
import pytest

import meanfield as mf
from meanfield.spec.activations import _ALIASES, activation, catalogue
from meanfield.sampled.backprop import _numeric, _numeric_derivative, _derivative
from meanfield.errors import InvalidArgument
from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.sampled.sampling import DegenerateBatch, SampledSpectrum, SampleSummary, draw, forward, sample, sample_many, vjp
from meanfield.sampled import gram as spectrum


# -- draws ---------------------------------------------------------------------------------------
def test_draw_is_reproducible_and_the_inputs_come_last():
    net = Network(3, "relu", 2, 0.1, outputs=2)
    a, b = draw(net, 8, 5, seed=3), draw(net, 8, 5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.weights + a.biases, b.weights + b.biases))
    c = draw(net, 8, 11, seed=3)  # another batch size: same weights (inputs are drawn last)
    assert all(np.array_equal(x, y) for x, y in zip(a.weights + a.biases, c.weights + c.biases))
    assert not np.array_equal(draw(net, 8, 5, seed=4).weights[0], a.weights[0])
    with pytest.raises(ValueError):
        a.weights[0][0, 0] = 1.0  # read-only


def test_draw_order_is_the_documented_one():
    net = Network(2, "tanh", 1.5, 0.25, outputs=3, input_q1=2.0, input_q2=0.5)
    d = draw(net, 4, 6, seed=11)
    rng = np.random.default_rng(11)
    W1 = rng.standard_normal((4, 4)) * math.sqrt(1.5 / 4)
    b1 = rng.standard_normal(4) * math.sqrt(0.25)
    W2 = rng.standard_normal((3, 4)) * math.sqrt(1.5 / 4)
    b2 = rng.standard_normal(3) * math.sqrt(0.25)
    z = rng.standard_normal((6, 4))
    zbar = z.mean(axis=0)
    x = math.sqrt(1.5) * (z - zbar) + math.sqrt(2.0 + 5 * 0.5) * zbar
    for got, want in zip((*d.weights, *d.biases, d.inputs), (W1, W2, b1, b2, x)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("q1,q2", [(1.0, 0.0), (2.0, 0.7), (1.0, -0.2)])
def test_input_statistics(q1, q2):
    """E x_i(t)^2 = q1 and E x_i(t) x_i(s) = q2, estimated over 40000 iid coordinates.

    Each estimate is a mean of 40000 iid products with standard deviation <= sqrt(2) q1, so its
    standard error is <= 0.0071 q1; a 5-sigma tolerance has a false-alarm rate below 1e-6 per check."""
    T, M = 5, 40000
    net = Network(1, "linear", 1, 0, input_q1=q1, input_q2=q2)
    x = draw(net, M, T, seed=0).inputs
    cov = x @ x.T / M
    tol = 5 * math.sqrt(2) * q1 / math.sqrt(M)
    assert np.abs(np.diag(cov) - q1).max() < tol
    assert np.abs(cov[~np.eye(T, dtype=bool)] - q2).max() < tol


def test_negative_input_correlation_below_the_psd_limit_is_refused():
    with pytest.raises(InvalidArgument, match="input_q2"):
        draw(Network(2, "relu", 2, 0, input_q1=1, input_q2=-0.3), 8, 5)  # needs q2 >= -1/4
    x = draw(Network(2, "relu", 2, 0, input_q1=1, input_q2=-0.25), 8, 5).inputs
    assert np.abs(x.sum(axis=0)).max() < 1e-12  # at the limit the samples sum to zero


# -- forward semantics -----------------------------------------------------------------------------
def test_forward_implements_the_spec_literally():
    net = Network(3, "tanh", 1.7, 0.2, outputs=2, norms=[LayerNorm(1), BatchNorm(2), BatchNorm(3, True)])
    d = draw(net, 5, 7, seed=0)
    tr = forward(net, d)
    x = d.inputs
    u1 = x @ d.weights[0].T + d.biases[0]
    n1 = (u1 - u1.mean(1, keepdims=True)) / u1.std(1, keepdims=True)           # layer norm, per sample
    u2 = np.tanh(n1) @ d.weights[1].T + d.biases[1]
    n2 = (u2 - u2.mean(0)) / u2.std(0)                                         # batch norm, per unit
    u3 = np.tanh(n2) @ d.weights[2].T + d.biases[2]
    f = u3 - u3.mean(0)                                                        # center-only
    np.testing.assert_allclose(tr.outputs, f.T, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(tr.normalized[1], n2, rtol=1e-13)
    assert tr.outputs.shape == (2, 7)


@pytest.mark.parametrize("name", sorted(n for n in catalogue() if n not in _ALIASES))
def test_fast_activation_kernels_agree_with_the_catalogue(name):
    act = activation(name)
    x = np.linspace(-6, 6, 1001) + 1e-3  # avoid the kinks themselves
    np.testing.assert_allclose(_numeric(act)(x), act(x), rtol=1e-13, atol=1e-15)
    d = _derivative(act)
    np.testing.assert_allclose(_numeric_derivative(act)(x), np.broadcast_to(d(x), x.shape), rtol=1e-12, atol=1e-14)


def test_degenerate_batch_is_reported_with_layer_and_unit():
    net = Network(3, "step", 2, 0.0, norms=[BatchNorm(2)], outputs=1)
    # all inputs equal: every unit of layer 2 sees one value; batch norm would be 0/0
    d = draw(net, 4, 5, seed=0)
    import dataclasses
    same = dataclasses.replace(d, inputs=np.repeat(d.inputs[:1], 5, axis=0))
    with pytest.raises(DegenerateBatch, match=r"layer 2, unit 0") as info:
        forward(net, same)
    assert isinstance(info.value, InvalidArgument) and info.value.layer == 2
    with pytest.raises(DegenerateBatch, match="layer norm at layer 1, sample 0"):
        forward(Network(2, "relu", 2, 0, alphas=(1, 0.25), norms=[LayerNorm(1)]), draw(
            Network(2, "relu", 2, 0, alphas=(1, 0.25)), 4, 3))  # one unit: zero variance over units
    with pytest.raises(DegenerateBatch):
        sample(Network(3, "constant", 2, 0.5, norms=[BatchNorm("last")]), 6, 4)


def test_vjp_checks_the_cotangent_shape():
    net = Network(2, "relu", 2, 0)
    tr = forward(net, draw(net, 4, 3))
    with pytest.raises(InvalidArgument, match="cotangent"):
        vjp(net, tr, np.zeros((3, 1)))


# -- sample ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norms", [[], [BatchNorm("last")], [BatchNorm(2)], [LayerNorm(1), BatchNorm(2, True)]])
def test_sample_statistics_are_those_of_the_gram(norms):
    net = Network(3, "relu", 2, 0.1, outputs=3, alphas=(1, 2, 1), norms=norms)
    r = sample(net, 6, 5, seed=2, eigenvalues=True, gram=True)
    G = r.gram
    assert r.P == net.parameter_count(6)
    assert r.m == pytest.approx(np.trace(G) / r.P, rel=1e-13)
    assert r.s == pytest.approx(np.sum(G * G) / r.P, rel=1e-13)
    assert r.s == pytest.approx(np.sum(r.eigenvalues ** 2) / r.P, rel=1e-9)
    assert r.lambda_max == pytest.approx(r.eigenvalues[0], rel=1e-12)
    assert r.lambda_max == pytest.approx(sample(net, 6, 5, seed=2).lambda_max, rel=1e-10)
    assert np.all(np.diff(r.eigenvalues) <= 0)
    assert r.gram_diag == pytest.approx(sum(x.gram_diag for x in r.layers), rel=1e-12)
    assert r.gram_offdiag == pytest.approx(sum(x.gram_offdiag for x in r.layers), rel=1e-9, abs=1e-12)
    blocks = G.reshape(3, 5, 3, 5)
    same = sum(blocks[k, :, k, :].sum() - np.trace(blocks[k, :, k, :]) for k in range(3))
    assert r.gram_offdiag == pytest.approx(same / (3 * 5 * 4), rel=1e-10, abs=1e-12)
    alpha = 1 * 2 + 2 * 1
    assert r.alpha == alpha
    assert r.kappa1 == pytest.approx(5 * r.gram_diag / (alpha * 6))
    assert sum(x.parameters for x in r.layers) == r.P
    assert r.eta_max == pytest.approx(2 / r.lambda_max)


def test_sample_without_extras_keeps_memory_small():
    r = sample(Network(2, "tanh", 1, 0.1), 5, 4)
    assert r.eigenvalues is None and r.gram is None and r.lambda_max > 0


def test_single_sample_has_no_offdiagonal():
    r = sample(Network(2, "tanh", 1, 0.1, outputs=2), 5, 1)
    assert r.gram_offdiag is None and r.kappa2 is None and r.kappa1 is not None


def test_depth_one_has_no_kappa():
    r = sample(Network(1, "linear", 1, 0.1, outputs=2), 5, 3)
    assert r.alpha == 0 and r.kappa1 is None and r.m > 0


def test_printing_is_an_aligned_table_and_latex():
    r = sample(Network(3, "relu", 2, 0, outputs=2, norms=[BatchNorm(2)]), 6, 4, seed=1)
    text = str(r)
    assert "lambda_max" in text and "bn-below" in text and "per layer" in text
    lines = [line for line in text.splitlines() if line.startswith("  ") and "  " in line.strip()]
    assert len(lines) > 5
    assert repr(r) == text
    tex = r._repr_latex_()
    assert tex.startswith("$") and tex.endswith("$") and r"\lambda_{\max}" in tex
    assert "nan" not in text.lower()


@pytest.mark.parametrize("kwargs,match", [
    (dict(width=0, samples=4), "width"),
    (dict(width=4, samples=0), "samples"),
    (dict(width=4, samples=2), "samples"),        # full batch norm needs T >= 3
    (dict(width=3, samples=4, alphas=(1, 0.5, 1)), "width"),
    (dict(width=4, samples=4, seed=-1), "seed"),
])
def test_bad_input_is_refused(kwargs, match):
    alphas = kwargs.pop("alphas", None)
    net = Network(3, "relu", 2, 0, alphas=alphas, norms=[BatchNorm(1)])
    with pytest.raises(InvalidArgument, match=match):
        sample(net, **kwargs)


def test_symbolic_network_is_refused():
    import sympy
    with pytest.raises(InvalidArgument, match="numeric"):
        sample(Network(2, "relu", sympy.Symbol("s", positive=True), 0), 4, 3)


def test_memory_guard_names_the_size(monkeypatch):
    monkeypatch.setattr(spectrum, "_available_bytes", lambda: 100 * 2**20)
    with pytest.raises(InvalidArgument, match=r"needs about .* GiB") as info:
        sample(Network(3, "relu", 2, 0, outputs=10), 1024, 256)
    assert info.value.argument == "samples"  # the (C T)^2 Gram does not fit; at T = 1 this width would
    with pytest.raises(InvalidArgument, match=r"needs about .* GiB") as info:
        sample(Network(3, "relu", 2, 0, outputs=1), 4096, 4)
    assert info.value.argument == "width"  # the M^2 weights do not fit, whatever T


# -- sample_many -------------------------------------------------------------------------------------
def test_sample_many_in_processes_equals_serial():
    net = Network(2, "relu", 2, 0.1, outputs=2, norms=[BatchNorm(1)])
    serial = sample_many(net, 6, 4, seeds=[3, 1, 2], processes=1, progress=False)
    parallel = sample_many(net, 6, 4, seeds=[3, 1, 2], processes=2, progress=False)
    assert serial.seeds == parallel.seeds == (3, 1, 2)
    for key in serial.values:
        np.testing.assert_allclose(parallel.values[key], serial.values[key], rtol=1e-12)
    one = sample(net, 6, 4, seed=1)
    assert serial.values["m"][1] == pytest.approx(one.m, rel=1e-14)
    m = serial.values["m"]
    assert serial.mean["m"] == pytest.approx(m.mean())
    assert serial.sem["m"] == pytest.approx(m.std(ddof=1) / math.sqrt(3))
    assert "gram_diag[1]" in serial.mean and "kappa1" in serial.mean
    assert isinstance(serial, SampleSummary) and "std. error" in str(serial)
    assert serial._repr_latex_().startswith("$")


def test_sample_many_counts_and_single_seed():
    net = Network(2, "tanh", 1, 0.1)
    res = sample_many(net, 4, 3, seeds=2, processes=1, progress=False)
    assert res.seeds == (0, 1)
    single = sample_many(net, 4, 3, seeds=[5], progress=False)
    assert single.sem["m"] == math.inf and not any(math.isnan(v) for v in single.mean.values())
    with pytest.raises(InvalidArgument, match="seeds"):
        sample_many(net, 4, 3, seeds=0)
    with pytest.raises(InvalidArgument, match="seeds"):
        sample_many(net, 4, 3, seeds="abc")


def test_public_names():
    for name in ("sample", "sample_many", "SampledSpectrum", "SampleSummary", "DegenerateBatch"):
        assert getattr(mf, name) is not None
    assert mf.SampledSpectrum is SampledSpectrum
