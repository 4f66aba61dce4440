"""Real input batches: the digits loader, reading .npy files, the sampler on a given batch (its Gram against a
finite-difference Jacobian), the command line's --inputs, and the message when scikit-learn is missing.

Everything here is deterministic (fixed seeds, exact or finite-difference comparisons): no statistical test.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from meanfield import BatchNorm, Network, sample, sample_many
from meanfield.cli import main
from meanfield.errors import InvalidArgument
from meanfield.sampled.backprop import draw, forward
from meanfield.spec.inputs import (DATA_EXTRA, DIGITS_COUNT, MissingExtra, batch_widths, check_inputs, digits,
                                   has_scikit_learn, input_statistics, load_inputs, parse_inputs)
from cli_runner import run

needs_sklearn = pytest.mark.skipif(not has_scikit_learn(), reason="scikit-learn (the 'data' extra) is not installed")


@pytest.fixture
def no_sklearn(monkeypatch):
    """scikit-learn made unimportable (None in sys.modules makes `import sklearn...` raise ImportError)."""
    for name in [n for n in sys.modules if n == "sklearn" or n.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)


# -- the digits -------------------------------------------------------------------------------------------------


@needs_sklearn
def test_digits_are_seeded_standardised_and_read_only():
    X = digits(8, seed=0)
    assert X.shape == (8, 64) and X.dtype == np.float64 and not X.flags.writeable
    assert np.array_equal(X, digits(8, seed=0))
    assert not np.array_equal(X, digits(8, seed=1))
    # the seeded choice: the first rows of a longer choice with the same seed are not promised, the set is
    everything = digits(DIGITS_COUNT, seed=3)  # a permutation of all images: the standardisation is visible
    assert np.all(np.isfinite(everything))
    np.testing.assert_allclose(everything.mean(axis=0), 0, atol=1e-12)
    std = everything.std(axis=0)
    constant = std < 1e-12
    assert constant.sum() == 3  # the three pixels that are 0 in every image stay 0, not NaN
    np.testing.assert_allclose(std[~constant], 1, rtol=1e-12)
    assert np.all(everything[:, constant] == 0)
    # each image is some row of the full standardised set, without repeats
    rows = {row.tobytes() for row in everything}
    assert len(rows) == DIGITS_COUNT and all(row.tobytes() in rows for row in X)
    q1, q2 = input_statistics(everything)
    assert q1 == pytest.approx(61 / 64, rel=1e-12)


@needs_sklearn
def test_digits_bad_sizes():
    for bad in (0, DIGITS_COUNT + 1, 2.5):
        with pytest.raises(InvalidArgument) as caught:
            digits(bad)
        assert caught.value.argument == "samples"
    with pytest.raises(InvalidArgument):
        digits(4, seed=-1)


def test_missing_scikit_learn_names_the_extra(no_sklearn):
    assert not has_scikit_learn()
    with pytest.raises(MissingExtra) as caught:
        digits(4)
    assert isinstance(caught.value, ImportError)
    assert DATA_EXTRA in str(caught.value) and "scikit-learn" in str(caught.value)
    with pytest.raises(ImportError, match="meanfield-fisher\\[data\\]"):
        parse_inputs("digits:4")


def test_missing_scikit_learn_on_the_command_line_is_a_clear_error(no_sklearn, capsys):
    status, out, err = run(capsys, "sample", "--width", "8", "--inputs", "digits:4", "--seeds", "2")
    assert status == 2
    assert "argument --inputs" in err and DATA_EXTRA in err and "Traceback" not in err


def test_the_digits_stage_is_skipped_with_the_reason(no_sklearn):
    from meanfield.runs.reproduce import STAGES

    reason = STAGES["digits"].available()
    assert reason is not None and DATA_EXTRA in reason


# -- checking and reading arrays ------------------------------------------------------------------------------------


def test_check_inputs_accepts_arrays_and_refuses_the_rest():
    X = check_inputs([[1, 2], [3, 4], [5, 6]])
    assert X.dtype == np.float64 and X.shape == (3, 2) and not X.flags.writeable
    assert check_inputs(X) is X  # already checked: not copied again
    mine = np.ones((2, 3))
    check_inputs(mine)
    assert mine.flags.writeable  # the caller's array is copied, never frozen
    bad = [np.zeros(3), np.zeros((0, 3)), np.zeros((2, 0)), np.zeros((2, 2, 2)), [[1.0, np.nan]],
           [[np.inf, 1.0]], "x.npy", None, [["a", "b"]]]
    for value in bad:
        with pytest.raises(InvalidArgument) as caught:
            check_inputs(value)
        assert caught.value.argument == "inputs"
    with pytest.raises(InvalidArgument) as caught:
        check_inputs(np.zeros((3, 2)), samples=4)
    assert caught.value.argument == "samples"


def test_load_inputs_reads_npy_and_names_what_is_wrong(tmp_path):
    good = tmp_path / "x.npy"
    np.save(good, np.arange(12.0).reshape(4, 3))
    assert load_inputs(good).shape == (4, 3)
    assert parse_inputs(str(good)).shape == (4, 3)
    flat, nan, text, objects = (tmp_path / f"{n}.npy" for n in ("flat", "nan", "text", "objects"))
    np.save(flat, np.arange(3.0))
    np.save(nan, np.array([[1.0, np.nan]]))
    text.write_text("not an array")
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for path in (flat, nan, text, objects, tmp_path / "missing.npy", tmp_path):
        with pytest.raises(InvalidArgument) as caught:
            load_inputs(path)
        assert caught.value.argument == "inputs", path
    for spec in ("digits", "digits:", "digits:0", f"digits:{DIGITS_COUNT + 1}", "digits:8:x", "digits:-1",
                 "batch.csv", ""):
        with pytest.raises(InvalidArgument) as caught:
            parse_inputs(spec)
        assert caught.value.argument == "inputs", spec


def test_input_statistics_and_batch_widths():
    X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    q1, q2 = input_statistics(X)
    gram = X @ X.T / 2
    assert q1 == pytest.approx(np.trace(gram) / 3) and q2 == pytest.approx((gram.sum() - np.trace(gram)) / 6)
    assert input_statistics(X[:1]) == (pytest.approx(0.5), 0.0)
    net = Network(3, "relu", 2, 0, outputs=4, alphas=(1, 2, 1))
    assert batch_widths(net, 8, np.zeros((5, 64))) == (64, 16, 8, 4)


# -- the sampler on a given batch ---------------------------------------------------------------------------------------


def _finite_difference_gram(net: Network, d, eps: float = 1e-6) -> np.ndarray:
    """G = J J^T / T with J = d f[k, t] / d theta by central differences over every weight and bias."""
    params = [np.array(w) for w in d.weights] + [np.array(b) for b in d.biases]
    L = net.depth
    columns = []
    for position, array in enumerate(params):
        for index in np.ndindex(array.shape):
            values = []
            for step in (eps, -eps):
                moved = [p.copy() for p in params]
                moved[position][index] += step
                values.append(forward(net, (moved[:L], moved[L:]), d.inputs).outputs.ravel())
            columns.append((values[0] - values[1]) / (2 * eps))
    J = np.array(columns).T  # rows a = k T + t, like the sampler's Gram
    return J @ J.T / d.inputs.shape[0]


@pytest.mark.parametrize("norms", [(), (BatchNorm("last"),), ("layer:2",), (BatchNorm(1, center_only=True),)])
def test_sampled_gram_on_a_batch_is_the_finite_difference_jacobian_gram(norms):
    # tanh: smooth, so central differences with eps = 1e-6 are accurate to ~eps^2 * f''' + rounding 1e-16/eps,
    # about 1e-10 relative; 1e-6 leaves room for the division by the batch std in the norms
    net = Network(3, "tanh", 1.5, 0.1, outputs=2, norms=norms)
    X = np.random.default_rng(5).standard_normal((5, 3)) * np.array([1.0, 0.5, 2.0])
    result = sample(net, 4, seed=11, inputs=X, gram=True)
    d = draw(net, 4, seed=11, inputs=X)
    reference = _finite_difference_gram(net, d)
    np.testing.assert_allclose(result.gram, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())
    # P counts d = 3 inputs in the first layer: 4 (3 + 1) + 4 (4 + 1) + 2 (4 + 1)
    assert result.P == 4 * 4 + 4 * 5 + 2 * 5 == len(np.concatenate([np.ravel(p) for p in (*d.weights, *d.biases)]))
    assert result.samples == 5 and result.m == pytest.approx(np.trace(reference) / result.P, rel=1e-6)


def test_a_batch_replaces_the_drawn_inputs_and_keeps_the_weights():
    net = Network(3, "relu", 2, 0.1, outputs=2)
    plain = draw(net, 6, 4, seed=7)
    given = draw(net, 6, seed=7, inputs=plain.inputs * 3)  # d = M_0 = 6: the same network, other inputs
    for a, b in zip(plain.weights + plain.biases, given.weights + given.biases):
        assert np.array_equal(a, b)
    assert np.array_equal(given.inputs, plain.inputs * 3)
    # the sampler on the drawn inputs, given explicitly, is the sampler without inputs
    assert sample(net, 6, 4, seed=7).as_dict() | {"seconds": 0} == sample(
        net, 6, seed=7, inputs=plain.inputs).as_dict() | {"seconds": 0}
    with pytest.raises(InvalidArgument) as caught:
        sample(net, 6, 5, inputs=plain.inputs)
    assert caught.value.argument == "samples"
    with pytest.raises(InvalidArgument) as caught:
        sample(net.with_(norms=[BatchNorm("last")]), 6, inputs=plain.inputs[:2])
    assert caught.value.argument == "samples"  # batch norm needs T >= 3 on a given batch too


def test_sample_many_on_a_batch_is_sample_per_seed():
    net = Network(2, "relu", 2, 0.1, outputs=2, norms=["layer:1"])
    X = np.random.default_rng(1).standard_normal((4, 10))
    summary = sample_many(net, 8, seeds=3, inputs=X, processes=1, progress=False)
    assert summary.samples == 4
    for i, seed in enumerate(summary.seeds):
        assert summary.values["lambda_max"][i] == sample(net, 8, seed=seed, inputs=X).lambda_max
    with pytest.raises(InvalidArgument) as caught:
        sample_many(net, 8, inputs=X, processes=1)
    assert caught.value.argument == "seeds"


# -- the command line ------------------------------------------------------------------------------------------------


def test_cli_sample_reads_a_npy_batch(tmp_path, capsys):
    path = tmp_path / "batch.npy"
    X = np.random.default_rng(2).standard_normal((6, 5))
    np.save(path, X)
    status, out, err = run(capsys, "sample", "--outputs", "2", "--width", "8", "--inputs", str(path),
                           "--seeds", "2", "--processes", "1", "--json")
    assert status == 0, err
    data = json.loads(out)
    assert data["samples"] == 6
    net = Network(3, "relu", 2, 0, outputs=2)
    assert data["values"]["m"][1] == pytest.approx(sample(net, 8, seed=1, inputs=X).m, rel=1e-12)


@needs_sklearn
def test_cli_sample_on_digits(capsys):
    status, out, err = run(capsys, "sample", "--outputs", "2", "--width", "16", "--inputs", "digits:8",
                           "--seeds", "2", "--processes", "1", "--no-progress")
    assert status == 0, err
    assert "samples T=8" in out and "digits:8 (8 x 64)" in out


def test_cli_predict_and_verify_on_a_npy_batch(tmp_path, capsys):
    path = tmp_path / "batch.npy"
    X = np.random.default_rng(4).standard_normal((6, 5))
    np.save(path, X)
    net = Network(3, "relu", 2, 0.1, outputs=2)
    status, out, err = run(capsys, "predict", "--sigma-b2", "0.1", "--outputs", "2", "--width", "32",
                           "--inputs", str(path), "--json")
    assert status == 0, err
    data = json.loads(out)
    import meanfield as mf

    expected = mf.predict(net, 32, inputs=X)
    assert data["samples"] == 6 and data["P"] == expected.P == 32 * 6 + 32 * 33 + 2 * 33
    assert data["lambda_max"] == pytest.approx(expected.lambda_max, rel=1e-12)
    status, out, err = run(capsys, "verify", "--sigma-b2", "0.1", "--outputs", "2", "--widths", "16,32",
                           "--seeds", "3", "--processes", "1", "--inputs", str(path), "--json")
    assert status in (0, 1), err
    report = json.loads(out)
    assert "inputs=X" in json.dumps(report)  # the prediction named is the theory of the batch
    assert '"samples": 6' in json.dumps(report) or report.get("samples") == 6


@pytest.mark.parametrize("spec", ["digits:x", "digits:0", "batch.csv", "missing.npy"])
@pytest.mark.parametrize("command", ["predict", "sample", "verify"])
def test_cli_bad_inputs_are_usage_errors(capsys, command, spec):
    status, _, err = run(capsys, command, "--inputs", spec)
    assert status == 2
    assert "argument --inputs" in err and "Traceback" not in err


def test_cli_samples_must_match_the_batch(tmp_path, capsys):
    path = tmp_path / "batch.npy"
    np.save(path, np.ones((6, 5)))
    status, _, err = run(capsys, "sample", "--width", "8", "--inputs", str(path), "--samples", "5", "--seeds", "2")
    assert status == 2 and "argument --samples" in err


# -- the main job's digits stage (a tiny run) -----------------------------------------------------------------------------

DIGITS_TINY = """\
[reproduce]
depth = 3
outputs = 2
digits_activations = ["relu"]
digits_placements = ["none", "layer:mid"]
digits_widths = [16, 32]
digits_samples = 8
digits_seeds = 2
digits_choice = 3
stages = ["digits"]
"""


@needs_sklearn
def test_the_digits_stage_compares_batch_theory_isotropic_theory_and_samples(tmp_path, capsys):
    import csv

    import meanfield as mf
    from meanfield.runs.reproduce.digits import isotropic_network

    config = tmp_path / "digits.toml"
    config.write_text(DIGITS_TINY)
    out = tmp_path / "out"
    status, stdout, err = run(capsys, "reproduce", "--quick", "--config", str(config), "--out", str(out),
                              "--processes", "1", "--no-progress")
    assert status == 0, err
    for name in ("digits.png", "digits.pdf", "digits.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "digits.csv")))
    assert len(rows) == 1 * 2 * 2 * 3  # activation x placements x widths x statistics
    X = mf.digits(8, seed=3)
    net = mf.Network(3, "relu", 2.0, 0.1, outputs=2)
    row = next(r for r in rows if (r["placement"], r["width"], r["statistic"]) == ("none", "32", "lambda_max"))
    sampled = [mf.sample(net, 32, seed=s, inputs=X).lambda_max for s in (0, 1)]
    assert float(row["sampled_mean"]) == pytest.approx(np.mean(sampled), rel=1e-12)
    assert float(row["theory_batch"]) == pytest.approx(mf.predict(net, 32, inputs=X).lambda_max, rel=1e-12)
    iso = mf.predict(isotropic_network(net, 32, X), 32, 8)
    assert float(row["theory_isotropic"]) == pytest.approx(iso.lambda_max, rel=1e-12)
    assert iso.P == mf.predict(net, 32, inputs=X).P  # the matched isotropic network has the batch's P
    report = (out / "report.md").read_text()
    assert "## 1. A real batch: 8 handwritten digits" in report and "![digits.png](digits.png)" in report
    # the reading quotes the computed ratio of the sampled lambda_max to the isotropic theory (a prediction or,
    # where the isotropic theory finds no outlier clear of the bulk, its lower bound)
    ratio = float(row["sampled_mean"]) / float(row["theory_isotropic"])
    if row["theory_isotropic_kind"] == "bound":
        assert f"is {ratio:.3g}× the isotropic theory's lower bound" in report
    else:
        assert f"λ_max is {abs(ratio - 1):.0%} {'above' if ratio >= 1 else 'below'} the isotropic prediction" in report


@needs_sklearn
@pytest.mark.parametrize("norms", [[], ["batch:last"], ["layer:2"]], ids=["none", "batch-last", "layer-norm"])
def test_verify_on_digits_for_each_placement(norms):
    # verify on a batch of 32 digits: the theory of that batch passes against networks sampled on it, and
    # the same theory with m and kappa_1 off by 50% fails (with a free b/M bias and the skewed values under
    # batch norm on the output, 25% is not resolved by 16 networks) (so the check can fail). Seeds 0..15 per width;
    # the family-wise false-alarm rate is verify's alpha = 0.01 (a fixed seed set: the outcome is fixed).
    # Measured on these seeds' neighbours: 0 of 40 disjoint blocks of 24 seeds failed at T = 32 for
    # batch norm on the output, whose per-network values are the most skewed.
    from meanfield import predict, verify
    from meanfield.checking.predictions import from_fisher

    X = digits(32, seed=0)
    net = Network(3, "relu", 2, 0.1, outputs=2, norms=norms)
    right = verify(net, widths=(64, 128), seeds=16, inputs=X, processes=1)
    assert right.passed, str(right)

    def wrong(width, samples):
        stats = from_fisher(predict(net, width, inputs=X), width, samples, net)
        return dict(stats, m=1.5 * stats["m"], kappa1=1.5 * stats["kappa1"])

    caught = verify(net, widths=(64, 128), seeds=16, inputs=X, prediction=wrong, processes=1)
    assert not caught.passed
