"""Kernels and FIM statistics on a user's own batch: meanfield.kernels and predict(net, M, inputs=X).

Three kinds of check:
- the isotropic special case: a batch with X X^T / d = (q1 - q2) I + q2 1 1^T and d = M reproduces
  predict(net, M, T) to 1e-12 (plain, layer norm, centre-only batch norm: all exact) or within the Monte
  Carlo's standard errors (full batch norm);
- the forward kernels against a direct Monte Carlo of the wide network's layer maps (exact in law: given
  h^{l-1}, the units of layer l are independent N(0, sigma_w^2 h h^T / N + sigma_b^2));
- the expected dual Gram against sampled networks on a random and on a digits batch (exact backprop).
"""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest
import sympy

import meanfield as mf
from meanfield.errors import InvalidArgument
from meanfield.theory.batch import predict_batch
from meanfield.theory.kernels import kernels, pair_kernel

STATS = ("m", "s", "lambda_max", "eta_max", "gram_diag", "gram_offdiag", "kappa1", "kappa2")


def isotropic_batch(T: int, d: int, q1: float, q2: float) -> np.ndarray:
    """T inputs of dimension d >= T with X X^T / d = (q1 - q2) I + q2 1 1^T (to rounding)."""
    K = (q1 - q2) * np.eye(T) + q2 * np.ones((T, T))
    X = np.zeros((T, d))
    X[:, :T] = np.linalg.cholesky(d * K)
    return X


def rel(a, b) -> float:
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-300)


# -- the isotropic special case ----------------------------------------------------------------------------------


@pytest.mark.parametrize("act, sw, sb", [("relu", 2.0, 0.1), ("erf", 1.5, 0.5), ("tanh", 1.5, 0.5)])
@pytest.mark.parametrize("norms", [[], ["layer:1"], ["layer:2"], ["batch-center:last"], ["batch-center:2"],
                                   ["layer:1", "batch:last"]])
def test_isotropic_batch_reproduces_predict(act, sw, sb, norms):
    # exact rules on both sides: only rounding separates them (the batch's Gram is exact to ~1e-16; a full batch
    # norm on the output by the radial integrals, exact to ~1e-13). The one Monte-Carlo number, the lower
    # bound of lambda_max under a full batch norm on the output (E[max_k lambda_max(G_kk)]), is compared with
    # 6 of its standard errors (false alarm < 1e-8 for a mean of thousands of draws).
    M, T = 64, 16
    for q2, C in ((0.4, 4), (-0.05, 1)):
        net = mf.Network(3, act, sw, sb, outputs=C, norms=norms, input_q1=1.3, input_q2=q2)
        iso = mf.predict(net, M, T)
        batch = mf.predict(net, M, inputs=isotropic_batch(T, M, 1.3, q2))
        for name in STATS:
            if name in ("lambda_max", "eta_max") and "batch:last" in norms:
                continue  # the lower bound, checked below
            assert rel(getattr(batch, name), getattr(iso, name)) < 1e-12, name
        for name in ("m", "s", "lambda_max", "kappa1", "kappa2", "gram_diag", "gram_offdiag"):
            assert rel(getattr(batch.leading, name), getattr(iso.leading, name)) < 1e-12, name
        assert batch.P == iso.P and batch.rank == iso.rank
        assert batch.lambda_max_kind == iso.lambda_max_kind
        if iso.lambda_max_bounds is not None:
            assert rel(batch.lambda_max_bounds[1], iso.lambda_max_bounds[1]) < 1e-12
            lo, lo_iso = batch.lambda_max_bounds[0], float(iso.lambda_max_bounds[0])
            if "batch:last" in norms:
                assert abs(lo - lo_iso) < 6 * batch.standard_errors["lambda_max"] < 0.1 * lo_iso
            else:
                assert rel(lo, lo_iso) < 1e-12
        layers = [(l, a, b) for l, a, b in iso.layers]
        for (l, a, b), (l2, a2, b2) in zip(batch.layers, layers):
            assert l == l2 and abs(a - float(a2)) < 1e-12 * abs(float(iso.gram_diag))
            assert abs(b - float(b2)) < 1e-12 * abs(float(iso.gram_diag))


@pytest.mark.parametrize("act, T", [("relu", 16), ("tanh", 64)])
@pytest.mark.parametrize("norms", [["batch:2"], ["batch:1", "batch:last"]])
def test_isotropic_batch_full_batch_norm_within_monte_carlo_error(act, T, norms):
    # Full batch norm in a hidden layer: the batch theory evaluates the unit's T-dimensional law by Monte Carlo
    # (fixed seed).
    # The differences are compared with 6 standard errors from 16 groups (t with 15 degrees of freedom:
    # P(|t| > 6) = 2.4e-5 per comparison, 5e-4 over the 20 comparisons of this test); the standard errors are
    # below 1% relative (2% for the lower bound of lambda_max), so the test detects any error above ~6%
    # (e.g. dropping the non-concentrating output factor r, 27% at T = 16, or the sphere law's -1/(T-1), or
    # the upward bias of the top eigenvalue of a noisy E G where it is degenerate: 7% at T = 64 for tanh).
    M = 64
    net = mf.Network(3, act, 2.0 if act == "relu" else 1.5, 0.1, outputs=4, norms=norms, input_q1=1.3, input_q2=0.4)
    iso = mf.predict(net, M, T)
    batch = predict_batch(net, M, isotropic_batch(T, M, 1.3, 0.4))
    se = batch.standard_errors
    for name in ("m", "s", "gram_diag", "gram_offdiag"):
        assert se[name] < 0.01 * abs(float(getattr(iso, name))), name
        assert abs(getattr(batch, name) - float(getattr(iso, name))) < 6 * se[name], name
    assert batch.lambda_max_kind == iso.lambda_max_kind == "bound"
    # the lower bound: the top eigenvalue of E G (cross-fitted), with batch:last E[max_k lambda_max(G_kk)]
    lo, lo_iso = batch.lambda_max_bounds[0], float(iso.lambda_max_bounds[0])
    assert abs(lo - lo_iso) < 6 * se["lambda_max"] and se["lambda_max"] < 0.02 * lo_iso


# -- forward kernels against a direct Monte Carlo of the wide network's layers -------------------------------------


def wide_forward(net: mf.Network, X: np.ndarray, units: int, rng: np.random.Generator) -> list:
    """Empirical qhat^l = h^l h^l^T / N of one wide network drawn layer by layer in law (no N x N weights)."""
    L = net.depth
    H = X
    d = X.shape[1]
    out = []
    for l in range(1, L):
        G = net.sigma_w2[l - 1] * H @ H.T / d + net.sigma_b2[l - 1]
        lam, V = np.linalg.eigh(G)
        U = (V * np.sqrt(np.clip(lam, 0, None))) @ rng.standard_normal((len(G), units))  # T x N
        norm = net.norm_at(l)
        if isinstance(norm, mf.LayerNorm):
            U = U - U.mean(axis=1, keepdims=True)
            U = U / np.sqrt(np.mean(U * U, axis=1, keepdims=True))
        elif isinstance(norm, mf.BatchNorm):
            U = U - U.mean(axis=0, keepdims=True)
            if not norm.center_only:
                U = U / np.sqrt(np.mean(U * U, axis=0, keepdims=True))
        H = net.phi(l)(U)
        d = units
        out.append(H @ H.T / units)
    return out


@pytest.mark.statistical
@pytest.mark.parametrize("act, norms", [("tanh", []), ("relu", ["layer:1"]), ("erf", ["batch-center:2"]),
                                        ("relu", ["batch:1"])])
def test_forward_kernels_against_wide_network_in_law(act, norms):
    # 16 independent wide networks (N = 2^15 units per layer) on a random batch of T = 6; each entry of their
    # mean qhat^l is compared with the theory by a t statistic with 15 degrees of freedom (the replicates'
    # spread includes the noise passed on from the layers below), plus, for full batch norm, the theory's own
    # Monte-Carlo standard error. |t| < 7 on all 42 entries: false alarm about 42 * 1e-5; power: an error of
    # 1% relative is ~10 standard errors. The O(1/N) bias of the finite networks is ~3e-5 relative, negligible.
    rng = np.random.default_rng(11)
    X = rng.standard_normal((6, 10))
    net = mf.Network(3, act, 1.8, 0.2, norms=norms)
    k = kernels(net, X)
    reps = np.array([wide_forward(net, X, 1 << 15, rng) for _ in range(16)])  # (16, L-1, T, T)
    mean, se = reps.mean(axis=0), reps.std(axis=0, ddof=1) / 4
    for l in (1, 2):
        theory = k.qhat[l]
        err = se[l - 1] ** 2
        if k.standard_errors is not None:
            err = err + k.standard_errors["qhat"][l] ** 2
        t = (mean[l - 1] - theory) / np.sqrt(err)
        assert np.max(np.abs(t)) < 7, (l, np.max(np.abs(t)))


# -- the expected Gram against sampled networks ---------------------------------------------------------------------


@pytest.mark.statistical
@pytest.mark.parametrize("batch, act, norms", [("digits", "relu", []), ("digits", "tanh", ["layer:2"]),
                                               ("digits", "relu", ["batch:last"]),
                                               ("random", "tanh", ["batch-center:last"]),
                                               ("random", "relu", ["batch:2"])])
def test_expected_gram_against_sampled_networks(batch, act, norms):
    _compare_with_samples(batch, act, norms, seeds=range(12))


@pytest.mark.statistical
@pytest.mark.fresh
@pytest.mark.parametrize("batch, act, norms", [("digits", "tanh", []), ("random", "relu", ["batch:last"])])
def test_expected_gram_against_sampled_networks_fresh(batch, act, norms):
    base = secrets.randbelow(2**31)
    print(f"fresh seeds {base}..{base + 11}")
    _compare_with_samples(batch, act, norms, seeds=range(base, base + 12))


def _compare_with_samples(batch, act, norms, seeds):
    # Per seed, the C = 2 diagonal blocks of the exact dual Gram are averaged; the mean over 12 seeds of
    # gram_diag and gram_offdiag is compared with the theory: t with 11 degrees of freedom, |t| < 5 (false
    # alarm 4e-4 per comparison for Gaussian per-seed values; the full batch norm on the output has heavier
    # tails, 1/chi^2_15 per output). The theory's O(1/M) finite-width bias at M = 128 is about 1% while one
    # standard error is 2-4% here (about 10% with a full batch norm on the output), so it is within the
    # margin. Power (measured at these seeds): dropping one layer's contribution (20-45% of gram_diag) is 10-20
    # standard errors, 3-5 with a full batch norm on the output.
    pytest.importorskip("sklearn")
    T, M, seeds = 16, 128, list(seeds)
    X = mf.digits(T, seed=3) if batch == "digits" else np.random.default_rng(5).standard_normal((T, 48))
    net = mf.Network(3, act, 2.0 if act == "relu" else 1.5, 0.1, outputs=2, norms=norms)
    theory = mf.predict(net, M, inputs=X)
    blocks = []
    for seed in seeds:
        G = mf.sample(net, M, seed=seed, inputs=X, gram=True).gram
        blocks.append((G[:T, :T] + G[T:, T:]) / 2)
    blocks = np.array(blocks)
    diag = np.trace(blocks, axis1=1, axis2=2) / T
    off = (blocks.sum(axis=(1, 2)) - diag * T) / (T * (T - 1))
    for values, predicted, name in ((diag, theory.gram_diag, "diag"), (off, theory.gram_offdiag, "offdiag")):
        se = values.std(ddof=1) / np.sqrt(len(seeds))
        if theory.standard_errors is not None:
            se = np.hypot(se, theory.standard_errors.get("gram_" + name, 0.0))
        assert abs(values.mean() - predicted) < 5 * se, (name, values.mean(), predicted, se)


# -- symbolic and structure ------------------------------------------------------------------------------------------


def test_symbolic_two_by_two_relu():
    r = sympy.Symbol("r", real=True)
    net = mf.Network(2, "relu", 2, 0)
    k = kernels(net, gram=sympy.Matrix([[1, r], [r, 1]]))
    # arc-cosine kernel of q = 2 (1, r; r, 1): qhat^1 = (sqrt(1 - r^2) + (pi - acos r) r) / pi
    expected = (sympy.sqrt(1 - r**2) + (sympy.pi - sympy.acos(r)) * r) / sympy.pi
    for value in (-0.7, 0.0, 0.3, 0.9):
        assert abs(float(k.qhat[1][0, 1].subs(r, value)) - float(expected.subs(r, value))) < 1e-14
        numeric = kernels(net, gram=np.array([[1.0, value], [value, 1.0]]))
        assert np.allclose(np.array(k.ntk_param.subs(r, value), dtype=float), numeric.ntk_param, rtol=1e-13)
    assert k.qhat[1][0, 0] == 1


def test_plain_network_ntk_is_the_layer_sum():
    # ntk = sum_l (M_{l-1} qhat^{l-1} + 1) o qtilde^l (plain network), and T times the expected Gram block
    X = np.random.default_rng(2).standard_normal((5, 7))
    net = mf.Network(3, "erf", 1.7, 0.3, outputs=3)
    k = kernels(net, X, width=20)
    sizes = (7, 20, 20)
    direct = sum((sizes[l - 1] * k.qhat[l - 1] + 1) * k.qtilde[l] for l in (1, 2, 3))
    assert np.allclose(k.ntk, direct, rtol=1e-14)
    ntk_param = sum((net.sigma_w2[l - 1] * k.qhat[l - 1] + net.sigma_b2[l - 1]) * k.qtilde[l] for l in (1, 2, 3))
    assert np.allclose(k.ntk_param, ntk_param, rtol=1e-14)
    st = mf.predict(net, 20, inputs=X)
    assert np.allclose(st.expected_gram * 5, k.ntk, rtol=1e-14)
    assert st.full_expected_gram().shape == (15, 15) and st.P == 20 * 8 + 20 * 21 + 3 * 21
    assert np.allclose(pair_kernel(mf.activation("erf"), k.law[1]), k.qhat[1], rtol=1e-15)
    d = json.loads(json.dumps(st.to_dict(gram=True)))
    assert d["P"] == st.P and np.allclose(d["expected_gram"], st.expected_gram)
    assert "gram_diag" in str(st) and "ntk_param" in str(k) and st._repr_latex_().startswith("$M=20")


# -- bad input ------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_invalid_argument():
    net = mf.Network(2, "relu", 2, 0)
    X = np.ones((4, 3))
    with pytest.raises(InvalidArgument):
        kernels(net, np.array([[1.0, np.nan]]))
    with pytest.raises(InvalidArgument):
        kernels(net, np.ones(4))                        # not T x d
    with pytest.raises(InvalidArgument):
        mf.predict(net, 8, 5, inputs=X)                 # T mismatch
    with pytest.raises(InvalidArgument):
        kernels(net, gram=np.array([[1.0, 2.0], [2.0, 1.0]]))   # not PSD
    with pytest.raises(InvalidArgument):
        kernels(net, gram=np.array([[1.0, 0.5], [0.0, 1.0]]))   # not symmetric
    with pytest.raises(InvalidArgument):
        kernels(net, X, gram=np.eye(4))                 # both
    with pytest.raises(InvalidArgument):
        kernels(net.with_(norms=["layer:1"]), np.zeros((2, 3)))  # a zero sample under layer norm (sigma_b2 = 0)
    with pytest.raises(InvalidArgument):
        kernels(net.with_(norms=["batch:last"]), np.eye(5))      # T = 5 < 6
    with pytest.raises(InvalidArgument):
        kernels(net.with_(norms=["batch:1"]), np.ones((4, 3)))   # zero batch variance
    with pytest.raises(InvalidArgument):
        kernels(net.with_(norms=["batch:1"]), gram=sympy.eye(4))  # full batch norm is numeric
    with pytest.raises(InvalidArgument):
        mf.predict(net, 8, inputs=X, dps=30)
    with pytest.raises(InvalidArgument):
        mf.predict(net, 8, inputs=X, finite_width="rmt")


def test_propagation_is_cached_per_network_and_batch_and_read_only():
    """Predictions of one network on one batch at several widths propagate once (the pass is width-free)."""
    from meanfield.theory.kernels import propagate

    X = np.random.default_rng(3).standard_normal((8, 12))
    net = mf.Network(3, "relu", 2, 0.1, outputs=2, norms=["batch:1"])
    a, b = predict_batch(net, 16, X), predict_batch(net, 64, X)
    K0 = X @ X.T / X.shape[1]
    p = propagate(net, K0)
    assert propagate(net, K0.copy()) is p                      # equal bytes: the same cached pass
    assert K0.flags.writeable                                   # the caller's array is not frozen
    assert propagate(net, K0, seed=1) is not p                  # another Monte-Carlo seed: another pass
    assert not p.weights[2].flags.writeable and not p.units[1].b.flags.writeable
    with pytest.raises(ValueError):
        a.kernels.qhat[1][0, 0] = 0.0                           # shared: callers cannot change the cache
    # the cached numbers are the uncached ones (a fresh network object, equal by value, after a cache clear)
    from meanfield.theory.kernels import clear_propagation_cache
    clear_propagation_cache()
    again = predict_batch(mf.Network(3, "relu", 2, 0.1, outputs=2, norms=["batch:1"]), 64, X)
    for name in ("m", "s", "gram_diag", "gram_offdiag"):
        assert getattr(again, name) == getattr(b, name)
    assert a.width == 16 and a.m != b.m


@pytest.mark.parametrize("prediction", ["rmt", "1/M"])
def test_verify_on_a_batch_refuses_finite_width_models_before_sampling(prediction, monkeypatch):
    from meanfield.checking import verification

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before refusing the prediction")

    monkeypatch.setattr(verification, "sample_many", no_sampling)
    X = np.random.default_rng(0).standard_normal((8, 16))
    with pytest.raises(InvalidArgument, match="isotropic inputs"):
        mf.verify(mf.Network(2, "relu", 2, 0.1), (16, 32), seeds=2, inputs=X, prediction=prediction)


def test_full_batch_norm_on_the_output_notes_the_skew_of_the_inverse_batch_variance():
    """The note's spread is sqrt(E[1/r^4] / E[1/r^2]^2 - 1): sqrt(2 / (T - 5)) on an isotropic batch (exact)."""
    from meanfield.theory.batch import skew_note

    net = mf.Network(2, "relu", 2, 0.1, outputs=2, norms=["batch:last"])
    iso = predict_batch(net, 32, isotropic_batch(16, 32, 1.0, 0.0))
    assert any(n.startswith(skew_note(1 / 13, 1 / 143, 16)[:92]) for n in iso.notes)   # 43% = sqrt(2/11)
    X = np.random.default_rng(1).standard_normal((16, 4))      # an uneven spectrum: d = 4 < T
    st = predict_batch(net, 32, X)
    spread = [n for n in st.notes if "relative spread" in n][0]
    assert int(spread.split("relative spread ")[1].split("%")[0]) > 43
    assert not any("relative spread" in n for n in predict_batch(mf.Network(2, "relu", 2, 0.1), 32, X).notes)
