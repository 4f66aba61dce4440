"""FIM statistics: Karakida et al.'s formulas, batch norm on the output, exact small cases, bounds, number
types, grids, errors, and sampled-vs-predicted checks per normalization rule."""

import json
import math

import numpy as np
import pytest

from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.errors import InvalidArgument
from meanfield.theory import fisher
from meanfield.theory.fisher import finite_width_choices, predict, predict_grid, register_finite_width
from meanfield.theory.recursions import order_parameters


def plain_kappas(net, T):
    """kappa_1, kappa_2 of the same network without normalization on the output, and v = q_1^L - q_2^L."""
    raw = net.with_(norms=[n for n in net.norms if n.layer != net.depth])
    op = order_parameters(raw, samples=T)
    k1, k2 = op.kappas()
    return float(k1), float(k2), float(op[net.depth].q1 - op[net.depth].q2)


# -- leading order: Karakida et al.'s kappas -----------------------------------------------------------------------


def test_leading_order_plain_network():
    M, T, C = 512, 32, 10
    st = predict(Network(3, "tanh", 1.7, 0.05, outputs=C), M, T)
    k1, k2, alpha = float(st.kappa1), float(st.kappa2), 2
    lead = st.leading
    assert float(lead.m) == pytest.approx(k1 * C / M, rel=1e-13)
    assert float(lead.s) == pytest.approx(alpha * C * (k1**2 + (T - 1) * k2**2) / T, rel=1e-13)
    assert float(lead.lambda_max) == pytest.approx(alpha * M * (k1 + (T - 1) * k2) / T, rel=1e-13)
    relu = predict(Network(3, "relu", 2, 0, outputs=C), M, T)
    assert relu.lambda_max_kind == "prediction" and relu.lambda_max_bounds is None
    assert float(relu.eta_max) == pytest.approx(2 / float(relu.lambda_max), rel=1e-15)
    gd, go = float(relu.gram_diag), float(relu.gram_offdiag)
    assert float(relu.lambda_max) == pytest.approx(gd + (T - 1) * go, rel=1e-15)


def test_outlier_buried_in_the_bulk_is_only_bounded():
    # kappa_2 > 0, but the outlier clears the mean bulk eigenvalue by T go/(gd - go) = 0.35, less than the
    # bulk's finite-width spread 3 sqrt(C T / M) = 0.92 (sampled: lambda_max 64.7 +- 1.2, 31% above the
    # outlier 49.2, 40 seeds at M = 256): a bound, not a prediction
    st = predict(Network(3, "gelu", 1.7, 0.05, norms=[BatchNorm(1)], alphas=(1, 2, 0.5), outputs=3), 256, 8)
    assert float(st.kappa2) > 0
    assert st.lambda_max_kind == "bound" and "spread" in " ".join(st.notes)
    gd, go = float(st.gram_diag), float(st.gram_offdiag)
    assert float(st.lambda_max_bounds[0]) == pytest.approx(gd + 7 * go, rel=1e-14)


def test_full_batch_norm_last_matches_chi_square_formulas():
    # E m = C (k1 - k2)(T - 2) / ((T - 3) v M),  E s = alpha C (k1 - k2)^2 (T - 2) / ((T - 3)(T - 5) v^2)
    M, T, C = 256, 12, 3
    net = Network(3, "relu", 2, 0.1, outputs=C, norms=[BatchNorm("last")])
    k1, k2, v = plain_kappas(net, T)
    lead = predict(net, M, T).leading
    assert float(lead.m) == pytest.approx(C * (k1 - k2) * (T - 2) / ((T - 3) * v * M), rel=1e-12)
    assert float(lead.s) == pytest.approx(2 * C * (k1 - k2) ** 2 * (T - 2) / ((T - 3) * (T - 5) * v**2), rel=1e-12)


def test_mean_only_batch_norm_last_matches_projection_formulas():
    # m = (1 - 1/T)(k1 - k2) C / M,  s = alpha C (k1 - k2)^2 (T - 1) / T^2
    M, T, C = 256, 12, 3
    net = Network(3, "erf", 1.5, 0.2, outputs=C, norms=[BatchNorm("last", center_only=True)])
    k1, k2, _ = plain_kappas(net, T)
    lead = predict(net, M, T).leading
    assert float(lead.m) == pytest.approx((1 - 1 / T) * (k1 - k2) * C / M, rel=1e-12)
    assert float(lead.s) == pytest.approx(2 * C * (k1 - k2) ** 2 * (T - 1) / T**2, rel=1e-12)


# -- finite width ------------------------------------------------------------------------------------------------


def test_depth_one_is_exact():
    # f = W x + b: G[(k,t),(k,t')] = (x(t).x(t') + 1) / T exactly; E x.x = M input_q1 (t = t'), M input_q2
    M, T, C = 40, 5, 3
    st = predict(Network(1, "relu", 1.5, 0.2, outputs=C, input_q1=2.0, input_q2=0.5), M, T)
    assert st.P == C * (M + 1)
    assert float(st.gram_diag) == pytest.approx((2 * M + 1) / T, rel=1e-15)
    assert float(st.gram_offdiag) == pytest.approx((0.5 * M + 1) / T, rel=1e-15)
    assert float(st.m) == pytest.approx(C * (2 * M + 1) / (C * (M + 1)), rel=1e-15)


def test_finite_width_bias_terms_and_parameter_count():
    # relu, sigma_b^2 = 0, sigma_w^2 = 2: qhat_1 = qtilde_1 = 1 everywhere, so the diagonal entry is
    # sum_l (M_{l-1} + 1) / T exactly in this theory, and P counts every weight and bias.
    M, T, C = 100, 4, 7
    st = predict(Network(3, "relu", 2, 0, outputs=C), M, T)
    assert st.P == 100 * 101 + 100 * 101 + 7 * 101
    assert float(st.gram_diag) == pytest.approx(3 * (M + 1) / T, rel=1e-14)
    assert float(st.m) == pytest.approx(C * 3 * (M + 1) / st.P, rel=1e-14)
    assert float(st.leading.m) == pytest.approx(1.5 * C / M, rel=1e-14)


def test_layers_sum_to_the_gram_entries():
    st = predict(Network(4, "tanh", 1.4, 0.1, norms=[BatchNorm(2), LayerNorm(3)]), 128, 8)
    assert sum(float(a) for _, a, _ in st.layers) == pytest.approx(float(st.gram_diag), rel=1e-14)
    assert sum(float(b) for _, _, b in st.layers) == pytest.approx(float(st.gram_offdiag), rel=1e-14)


# -- bounds --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("center_only", [False, True])
def test_batch_norm_last_gives_bounds_not_a_prediction(center_only):
    M, T = 256, 16
    st = predict(Network(3, "relu", 2, 0.1, outputs=1, norms=[BatchNorm("last", center_only=center_only)]), M, T)
    assert st.lambda_max_kind == "bound"
    lo, hi = (float(x) for x in st.lambda_max_bounds)
    gd, go = float(st.gram_diag), float(st.gram_offdiag)
    # per output the expected Gram is (gd - go) I + go 1 1^T with go < 0: its top eigenvalue gd - go
    if center_only:
        assert lo == pytest.approx(gd - go, rel=1e-14)
    else:
        # one output: E[T/chi^2_{T-1}] (d - o)/v with (d - o)/v = gd (T-3)/(T-2): lo = gd T/(T-2) > gd - go
        assert lo == pytest.approx(gd * T / (T - 2), rel=1e-10)
        assert lo > gd - go
    assert hi == pytest.approx(math.sqrt(st.P * float(st.s)), rel=1e-14)
    assert float(st.lambda_max) == lo and float(st.eta_max) == pytest.approx(2 / lo)
    assert "bound" in str(st)
    assert st.rank == T - (1 if center_only else 2)


def test_no_outlier_without_kappa2_is_a_bound():
    # odd phi, no bias, iid inputs: kappa_2 = 0 exactly, no outlier
    st = predict(Network(3, "tanh", 1.5, 0, outputs=2), 128, 8)
    assert float(st.kappa2) == pytest.approx(0, abs=1e-15)
    assert st.lambda_max_kind == "bound"


# -- number types, grids, serialisation --------------------------------------------------------------------------


def test_mpmath_mode():
    net = Network(3, "relu", 2, 0.1, outputs=3, norms=[BatchNorm(2), BatchNorm("last")])
    lo, hi = predict(net, 64, 10), predict(net, 64, 10, dps=30)
    for k in ("m", "s", "gram_diag", "gram_offdiag", "kappa1", "kappa2"):
        assert float(getattr(hi, k)) == pytest.approx(float(getattr(lo, k)), rel=1e-12)


def test_grid_matches_pointwise():
    sw, sb = np.meshgrid(np.linspace(0.6, 2.6, 3), np.linspace(0.0, 0.3, 2))
    net = Network(4, "tanh", 1, 0, outputs=2)
    g = predict_grid(net, 64, 8, sigma_w2=sw, sigma_b2=sb)
    assert g.m.shape == sw.shape
    for idx in np.ndindex(sw.shape):
        p = predict(net.with_(sigma_w2=float(sw[idx]), sigma_b2=float(sb[idx])), 64, 8)
        assert g.m[idx] == pytest.approx(float(p.m), rel=1e-12)
        assert g.s[idx] == pytest.approx(float(p.s), rel=1e-12)
        assert g.lambda_max[idx] == pytest.approx(float(p.lambda_max), rel=1e-12)
        assert g.lambda_max_kind[idx] == p.lambda_max_kind


def test_to_dict_is_json():
    st = predict(Network(3, "relu", 2, 0, outputs=2, norms=[BatchNorm("last")]), 64, 8)
    d = json.loads(json.dumps(st.to_dict()))
    for key in ("kappa1", "kappa2", "P", "m", "s", "lambda_max", "eta_max", "gram_diag", "gram_offdiag",
                "lambda_max_kind", "lambda_max_bounds"):
        assert key in d
    assert set(d["leading"]) >= {"m", "s", "lambda_max"}
    assert d["lambda_max_kind"] == "bound" and len(d["lambda_max_bounds"]) == 2


# -- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net, T, needed", [
    (Network(3, "relu", 2, 0, norms=[BatchNorm("last")]), 5, "6"),
    (Network(3, "relu", 2, 0, norms=[BatchNorm(2)]), 3, "4"),
    (Network(3, "relu", 2, 0, norms=[BatchNorm("last", center_only=True)]), 1, "2"),
])
def test_too_few_samples_names_samples_and_reason(net, T, needed):
    with pytest.raises(InvalidArgument) as err:
        predict(net, 64, T)
    assert err.value.argument == "samples" and needed in err.value.allowed and err.value.hint


@pytest.mark.parametrize("kwargs, argument", [(dict(width=0, samples=8), "width"), (dict(width=64, samples=0), "samples"),
                                              (dict(width=64, samples=8, finite_width="bulk"), "finite_width"),
                                              (dict(width=64, samples=8, dps=1), "dps")])
def test_bad_arguments(kwargs, argument):
    with pytest.raises(InvalidArgument) as err:
        predict(Network(2, "relu", 2, 0), **kwargs)
    assert err.value.argument == argument


def test_finite_width_takes_named_choices_and_the_old_forms_warn():
    net = Network(3, "relu", 2, 0.1, outputs=2)
    mean_field, leading = predict(net, 64, 8), predict(net, 64, 8, finite_width="leading")
    assert predict(net, 64, 8, finite_width="mean-field").to_dict() == mean_field.to_dict()
    assert float(leading.m) == float(leading.leading.m) and float(mean_field.m) != float(leading.m)
    for old, same, name in ((None, mean_field, "mean-field"), (True, mean_field, "mean-field"), (False, leading, "leading")):
        with pytest.warns(DeprecationWarning, match=f"finite_width='{name}'"):
            assert predict(net, 64, 8, finite_width=old).to_dict() == same.to_dict()


def test_unknown_finite_width_lists_the_choices():
    with pytest.raises(InvalidArgument, match="'mean-field', 'leading', 'rmt'") as err:
        predict(Network(2, "relu", 2, 0), 64, 8, finite_width="bulk")
    assert err.value.argument == "finite_width"
    assert finite_width_choices()[:3] == ("mean-field", "leading", "rmt")


def test_a_registered_finite_width_model_replaces_lambda_max_and_s(monkeypatch):
    monkeypatch.setattr(fisher, "_FINITE_WIDTH_MODELS", dict(fisher._FINITE_WIDTH_MODELS))
    register_finite_width("tripled", lambda net, M, T, base: dict(lambda_max=3 * float(base.lambda_max), s=1.0,
                                                                  notes=("tripled",)), note="a test model")
    net = Network(2, "relu", 2, 0, outputs=2)
    base, st = predict(net, 64, 8), predict(net, 64, 8, finite_width="tripled")
    assert float(st.lambda_max) == 3 * float(base.lambda_max) and st.s == 1.0 and st.m == base.m
    assert st.lambda_max_kind == "prediction" and st.eta_max == 2 / st.lambda_max
    assert "finite_width='tripled': a test model" in st.notes and st.notes[-1] == "tripled"
    with pytest.raises(InvalidArgument, match="finite_width"):   # numeric models only
        predict(Network(2, "relu", 2, 0), 64, 8, finite_width="tripled", dps=20)
    with pytest.raises(InvalidArgument, match="name"):
        register_finite_width("leading", lambda *args: {})


def test_the_theory_reaches_the_random_matrix_model_only_through_the_registry(monkeypatch):
    import subprocess
    import sys

    code = ("import sys, meanfield.theory.fisher as f; assert not [m for m in sys.modules if m.startswith('meanfield.finite')]; "
            "from meanfield.finite.model import finite_width_stats; assert f._finite_width_model('rmt') is finite_width_stats")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_width_must_make_whole_layers():
    with pytest.raises(InvalidArgument, match="width"):
        predict(Network(3, "relu", 2, 0, alphas=(1, 0.5, 1)), 63, 4)


# -- sampled networks (statistical) ----------------------------------------------------------------------------------
# Each check: per-layer mean Gram entries over N seeds at width M against the prediction, within
# 4.5 standard errors (Student t with N-1 = 31 dof: two-sided false-alarm rate 1e-4 per comparison, below
# 1e-3 per test for its <= 8 comparisons) plus 3/M of the layer's diagonal entry, the known size of the
# O(1/M) corrections this theory leaves out (measured: M * rel. error ~ -0.7 after two batch norms).


def check_against_samples(net, M, T, seeds):
    from meanfield.sampled.sampling import sample

    draws = [sample(net, M, T, seed=s) for s in range(seeds)]
    pr = predict(net, M, T)
    for l in range(net.depth):
        scale = abs(float(pr.layers[l][1]))
        for j, key in ((1, "gram_diag"), (2, "gram_offdiag")):
            values = np.array([getattr(d.layers[l], key) for d in draws])
            mean, sem = values.mean(), values.std(ddof=1) / math.sqrt(seeds)
            expected = float(pr.layers[l][j])
            assert abs(mean - expected) <= 4.5 * sem + 3 / M * scale, (l + 1, key, mean, sem, expected)
    return draws, pr


@pytest.mark.statistical
def test_sampled_plain_relu():
    check_against_samples(Network(3, "relu", 2, 0.1, outputs=2), 128, 8, 32)


@pytest.mark.statistical
def test_sampled_hidden_batch_norm_tanh_sphere_law():
    # the layer above the batch norm distinguishes the sphere law from a Gaussian law by 6% (z ~ 45 at
    # M = 256, 40 seeds); here its entries are checked within 4.5 sem
    check_against_samples(Network(3, "tanh", 1.5, 0.2, norms=[BatchNorm(2)]), 128, 8, 32)


@pytest.mark.statistical
def test_sampled_batch_norm_last_and_bounds():
    draws, pr = check_against_samples(Network(3, "relu", 2, 0.1, outputs=2, norms=[BatchNorm("last")]), 128, 8, 32)
    lam = np.mean([d.lambda_max for d in draws])
    lo, hi = (float(x) for x in pr.lambda_max_bounds)
    assert lo <= lam <= hi


@pytest.mark.statistical
def test_sampled_layer_norm_and_center_only():
    check_against_samples(Network(3, "erf", 2.0, 0.1, norms=[LayerNorm(1), BatchNorm(2, center_only=True)]), 128, 8, 32)
