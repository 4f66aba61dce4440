"""meanfield.verify: the statistical test (calibration and power), the report, and real networks.

False-alarm rates stated here: the engine is checked on synthetic null data at alpha = 5% (2000
replicates, so the observed rate has a binomial sd of 0.5%); the tests on sampled networks use the
default alpha = 1% with fixed seeds, so each is deterministic (its false-alarm probability, were the
seeds fresh, is <= 1%).
"""

import importlib
import json
import math

import numpy as np
import pytest

import meanfield as mf
from meanfield.checking.predictions import STATISTICS, default_bias, from_fisher
from meanfield.checking.report import assemble
from meanfield.checking.trend import BiasModel, holm, trend_test
from meanfield.spec.network import Network

# the module (``from meanfield import verify`` is the function, which the module also behaves as)
V = importlib.import_module("meanfield.checking.verification")

# -- the engine ----------------------------------------------------------------------------------------


def test_trend_test_separates_a_vanishing_bias_from_an_error():
    widths = [64, 256, 1024]
    se = [0.01, 0.005, 0.0025]
    vanishing = [2.0 / M for M in widths]  # 3%, 0.8%, 0.2%: a correct finite-width bias
    t = trend_test(widths, vanishing, se, [30] * 3, 1.0)
    assert t.p_value > 0.5 and abs(t.extrapolated) < 1e-12 and math.isclose(t.coefficients[0], 2.0)
    wrong = [0.05 + 2.0 / M for M in widths]  # the same plus an error that does not shrink
    t = trend_test(widths, wrong, se, [30] * 3, 1.0)
    assert t.p_value < 1e-6 and math.isclose(t.extrapolated, 0.05, rel_tol=1e-9)
    # the wrong rate: an error decaying like 1/sqrt(M) tested with gamma = 1 is flagged
    slow = [0.4 / math.sqrt(M) for M in widths]
    assert trend_test(widths, slow, se, [30] * 3, 1.0).p_value < 0.01
    assert trend_test(widths, slow, se, [30] * 3, 0.5).p_value > 0.5


def test_single_width_is_a_plain_t_test():
    t = trend_test([128], [0.02], [0.01], [10], 1.0)
    assert t.dof == 1 and math.isclose(t.q, 4.0)
    from scipy import stats
    assert math.isclose(t.p_value, 2 * stats.t.sf(2.0, 9), rel_tol=1e-9)


def test_holm_adjusts_and_is_monotone():
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.5]) == [0.5]
    adjusted = holm([0.001, 0.2, 0.0001, 0.9])
    assert adjusted == [0.003, 0.4, 0.0004, 0.9]


def _synthetic(rng, widths, seeds, predictions, sds, biases, errors=None, T=16, alpha=0.05):
    """Per-width sampled values and predictions: value ~ pred (1 + error + bias(M)) + noise.

    bias(M) = b/M for every statistic, plus c/sqrt(M) (c >= 0: a splitting excess) for lambda_max.
    """
    errors = errors or {}
    net = Network(2, "relu", 2, 0.1)
    measured, predicted = {}, {}
    for M in widths:
        measured[M], predicted[M] = {}, {}
        for name in STATISTICS:
            p = predictions[name]
            bias = biases[name] / M + (SPLIT / math.sqrt(M) if name == "lambda_max" else 0.0)
            truth = p * (1 + errors.get(name, 0.0) + bias)
            measured[M][name] = truth + p * sds[name] * M ** -0.5 * rng.standard_normal(seeds)
            predicted[M][name] = p
    return assemble(net, T, tuple(widths), tuple(range(seeds)), alpha, default_bias(net), "synthetic",
                       measured, predicted, ())


PRED = {"m": 0.01, "s": 0.2, "lambda_max": 40.0, "kappa1": 1.5, "kappa2": 0.6}
SDS = {"m": 1.0, "s": 2.5, "lambda_max": 1.0, "kappa1": 1.0, "kappa2": 1.1}       # per-network sd * sqrt(M)
BIAS = {"m": 0.0, "s": 50.0, "lambda_max": 3.0, "kappa1": 0.5, "kappa2": -1.0}    # b in b/M
SPLIT = 0.0   # c in c/sqrt(M) for lambda_max: 0 is the least favourable case of the one-sided term


def test_false_alarm_rate_of_the_engine_matches_alpha():
    """800 correct predictions with finite-width biases at alpha = 10%: the rate is about 10%."""
    rng = np.random.default_rng(20240601)
    alarms = sum(not _synthetic(rng, (64, 256), 12, PRED, SDS, BIAS, alpha=0.1).passed for _ in range(800))
    rate = alarms / 800
    # binomial sd 1.1%; Holm is a little conservative for independent statistics
    assert 0.06 <= rate <= 0.125, rate


def test_power_of_the_engine_against_a_constant_error():
    rng = np.random.default_rng(7)
    caught = sum(not _synthetic(rng, (256, 1024), 24, PRED, SDS, BIAS, errors={"kappa2": 0.05}).passed
                 for _ in range(200))
    assert caught >= 190  # se of the extrapolation ~ 1%: 5% is ~5 standard errors


# -- the report ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_report():
    return _synthetic(np.random.default_rng(1), (64, 256), 8, PRED, SDS, BIAS, errors={"kappa2": 0.5})


def test_report_table_dict_json(synthetic_report):
    r = synthetic_report
    assert not r.passed and r.failures == ("kappa2",) and r["kappa2"].verdict == "FAIL"
    text = str(r)
    assert "FAILED (kappa_2)" in text and "kappa_1" in text and "M->inf err" in text
    lines = text.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("statistic"))):]
    assert len({len(line) for line in table[:2]}) == 1  # header and rule aligned
    d = r.to_dict()
    assert d["passed"] is False and [s["statistic"] for s in d["statistics"]] == list(STATISTICS)
    assert len(d["statistics"][0]["rows"]) == 2
    back = json.loads(r.to_json())
    assert back["statistics"][4]["verdict"] == "FAIL" and back["alpha"] == 0.05
    assert "<table>" in r._repr_html_() and r._repr_latex_().startswith("$$")
    assert "FAILED" in repr(r)
    with pytest.raises(mf.InvalidArgument):
        r["kappa3"]


def test_report_is_frozen(synthetic_report):
    with pytest.raises(AttributeError):
        synthetic_report.alpha = 0.5


def test_bound_rows_are_checked_not_valued():
    rng = np.random.default_rng(3)
    net = Network(2, "relu", 2, 0.1, norms=[mf.BatchNorm("last")])
    widths = (64, 256)
    measured = {M: {k: PRED[k] * (1 + 0.05 * rng.standard_normal(10)) for k in STATISTICS} for M in widths}
    inside = {M: {"m": PRED["m"], "s": PRED["s"], "kappa1": PRED["kappa1"], "kappa2": PRED["kappa2"],
                  "lambda_max_bounds": (10.0, 400.0)} for M in widths}
    r = assemble(net, 16, widths, tuple(range(10)), 0.01, default_bias(net), "x", measured, inside, ())
    assert r["lambda_max"].kind == "bound" and r["lambda_max"].verdict == "bound holds" and r.passed
    assert "[10, 400]" in str(r) and "only bounds" in str(r)
    below = {M: dict(inside[M], lambda_max_bounds=(10.0, 30.0)) for M in widths}
    r = assemble(net, 16, widths, tuple(range(10)), 0.01, default_bias(net), "x", measured, below, ())
    assert r["lambda_max"].verdict == "BOUND VIOLATED" and not r.passed


# -- arguments -----------------------------------------------------------------------------------------

NET = Network(2, "relu", 2, 0.1)


@pytest.mark.parametrize("kwargs", [
    dict(widths=()), dict(widths=(64, 64)), dict(widths=(1,)), dict(samples=1), dict(seeds=1), dict(seeds=[3, 3]),
    dict(alpha=0), dict(alpha=1.5), dict(bias={"q": 1}), dict(bias={"m": -1}), dict(bias={"m": BiasModel((1.0, 2.0))}), dict(prediction=3),
])
def test_bad_arguments(kwargs):
    with pytest.raises(mf.InvalidArgument):
        V.verify(NET, **kwargs)


def test_widths_must_fit_the_ratios():
    with pytest.raises(mf.InvalidArgument, match="alpha"):
        V.verify(Network(2, "relu", 2, 0, alphas=(1, 0.25)), widths=(66, 130), samples=4, seeds=2)


def test_module_is_callable_like_the_function():
    assert callable(mf.verify) and V.verify.__name__ == "verify"


# -- sampled networks: a correct prediction passes, wrong ones fail --------------------------------------
# Fixed seeds make each of these deterministic. Sizes are chosen for real power, measured over fresh
# seed sets by benchmarks/verify_power.py (numbers in the module docstring there and in the notes).


@pytest.fixture(scope="module")
def relu_report():
    # L=2 relu without biases: kappa_2's per-network sd is ~7% at M=128 and ~3.5% at M=512, so with
    # N=48 the extrapolated error has se ~0.75%: a 5% error is ~6.5 se, far beyond Holm's threshold
    # (z = 3.1 at alpha = 1% over 5 statistics).
    net = Network(2, "relu", 2, 0)
    return V.verify(net, widths=(128, 512), samples=16, seeds=48, processes=1, progress=False)


def test_correct_prediction_passes(relu_report):
    assert relu_report.passed, str(relu_report)
    assert relu_report.prediction.startswith("meanfield.predict")
    assert all(r.kind == "value" for r in relu_report.results)


def test_kappa2_off_by_five_percent_fails(relu_report):
    net = relu_report.network

    def kappa2_five_percent_high(width, samples):
        stats = from_fisher(mf.predict(net, width, samples), width, samples, net)
        return dict(stats, kappa2=1.05 * stats["kappa2"])

    wrong = relu_report.against(kappa2_five_percent_high)
    assert not wrong.passed and wrong.failures == ("kappa2",), str(wrong)
    assert wrong["kappa2"].adjusted_p < 1e-4
    assert wrong["kappa2"].extrapolated == pytest.approx(-0.05 / 1.05, abs=0.025)


def _kappas(net, shift):
    """A user's conjecture for (kappa_1, kappa_2) at leading order, built from the library's pieces.

    The backward recursion qtilde^l = sigma_w^2 qtilde^{l+1} E[phi'(u^l)^2] (and I_phi' for qtilde_2);
    ``shift=True`` evaluates phi' at layer l+1's statistics instead of layer l's: the classic slip.
    """
    from meanfield.integrals.gaussian import cross_moment, second_moment
    from meanfield.theory.recursions import order_parameters

    def conjecture(width, samples):
        op = order_parameters(net, samples)
        L = net.depth
        t1, t2 = {L: 1.0}, {L: 1.0}
        for l in range(L - 1, 0, -1):
            at = op[l + 1] if shift else op[l]
            dphi = net.phi(l).derivative
            t1[l] = net.sigma_w2[l] * t1[l + 1] * second_moment(dphi, at.q1)
            t2[l] = net.sigma_w2[l] * t2[l + 1] * cross_moment(dphi, at.q1, at.q2)
        alpha = L - 1  # all width ratios 1
        k1 = sum(t1[l] * op[l - 1].qhat1 for l in range(1, L + 1)) / alpha
        k2 = sum(t2[l] * op[l - 1].qhat2 for l in range(1, L + 1)) / alpha
        return {"kappa1": float(k1), "kappa2": float(k2)}

    return conjecture


def test_phi_prime_index_shifted_by_one_layer_fails():
    # erf, L=3: E[phi'^2] falls with q, and q differs between layers, so the slip moves kappa_1 by
    # -12% (and kappa_2 by ~2.5%); the leading-order conjecture without the slip passes: its O(1/M)
    # bias terms are what the b/M term of the test allows for.
    net = Network(3, "erf", 2, 0.2)
    right = V.verify(net, widths=(64, 256), samples=16, seeds=32, prediction=_kappas(net, False), processes=1,
                     progress=False)
    assert right.passed, str(right)
    assert [r.kind for r in right.results] == ["not predicted"] * 3 + ["value"] * 2
    shifted = right.against(_kappas(net, True))
    assert not shifted.passed and "kappa1" in shifted.failures, str(shifted)
    assert shifted["kappa1"].adjusted_p < 1e-4  # se of the extrapolation ~1.9%: the slip is ~6 se


def test_bound_only_statistic_is_checked_as_a_bound():
    net = Network(2, "relu", 2, 0.1, norms=[mf.BatchNorm("last")])
    report = V.verify(net, widths=(32, 128), samples=16, seeds=8, processes=1, progress=False)
    assert report["lambda_max"].kind == "bound" and "only bounds" in str(report)
    assert report.passed, str(report)


def test_fisherstats_prediction_is_a_single_width_test():
    net = Network(2, "tanh", 1.5, 0.2, outputs=2)
    stats = mf.predict(net, 64, 8)
    report = V.verify(net, samples=8, seeds=8, prediction=stats, processes=1, progress=False)
    assert report.widths == (64,) and "single width" in str(report)
    with pytest.raises(mf.InvalidArgument, match="callable"):
        V.verify(net, widths=(64, 128), prediction=stats)


def test_depth_one_network_has_no_kappas():
    report = V.verify(Network(1, "linear", 1, 0.5, outputs=2), widths=(16, 64), samples=4, seeds=6, processes=1,
                      progress=False)
    assert [r.statistic for r in report.results] == ["m", "s", "lambda_max"]


# -- claims: no free bias for what the prediction includes; the power the report states -------------------

from meanfield.checking.predictions import CLAIM_KEY, bias_models  # noqa: E402
from meanfield.checking.trend import (NO_BIAS, common_error_test, error_test, holm_levels,  # noqa: E402
                                      minimum_detectable_error)

CLAIM_WIDTHS = (64, 256)


def _one_statistic(values_by_width, prediction=1.0, claims=None, bias=None, alpha=0.01):
    """A report on m alone from given per-network values (the other statistics are not predicted)."""
    net = Network(2, "relu", 2, 0)
    measured = {w: {"m": tuple(v)} for w, v in values_by_width.items()}
    predicted = {w: {"m": prediction} for w in values_by_width}
    widths = tuple(values_by_width)
    return assemble(net, 8, widths, tuple(range(len(values_by_width[widths[0]]))), alpha,
                    bias_models(net, bias, widths, None, claims), "a guess", measured, predicted, ())


def _shifted(rng, errors, sds, n=20):
    """Per-network values 1 + error_j + noise whose sample mean and sd are exactly error_j and sd_j."""
    out = {}
    for w, e, sd in zip(CLAIM_WIDTHS, errors, sds):
        z = rng.standard_normal(n)
        z = (z - z.mean()) / z.std(ddof=1)
        out[w] = 1 + e + sd * z
    return out


def test_a_claimed_statistic_admits_no_bias():
    # r = 0.08, 0.02 at M = 64, 256 (se 0.0134, 0.0067: 6 and 3 se from 0) is exactly 5.12/M, a vanishing
    # b/M bias. Without a claim the trend test passes it (residual 0); claimed, the common error
    # 0.2 * 0.08 + 0.8 * 0.02 = 0.032 +- 0.006 (t = 5.3 on 28 dof, p ~ 1e-5) fails it.
    values = _shifted(np.random.default_rng(5), (0.08, 0.02), (0.06, 0.03), n=20)
    free = _one_statistic(values)
    assert free.passed and free["m"].bias == default_bias(NET)["m"] and free["m"].test.startswith("trend")
    claimed = _one_statistic(values, claims={"m"})
    assert not claimed.passed and claimed["m"].bias.is_none and claimed["m"].test == "common error (no bias)"
    assert claimed["m"].extrapolated == pytest.approx(0.032) and claimed["m"].adjusted_p < 1e-4
    # the same claim through the bias argument, and a bias override winning over a claim
    assert not _one_statistic(values, bias={"m": "none"}).passed
    assert _one_statistic(values, claims={"m"}, bias={"m": 1.0}).passed


def test_bias_is_kept_for_what_the_prediction_declares_missing():
    net = Network(2, "relu", 2, 0)
    models = bias_models(net, None, CLAIM_WIDTHS, None, {"m", "kappa1"})
    assert models["m"] is NO_BIAS and models["kappa1"] is NO_BIAS
    for name in ("s", "lambda_max", "kappa2"):
        assert models[name] == default_bias(net)[name]
    rng = np.random.default_rng(11)
    # every statistic is off by 5.12/M (a b/M bias) with spread 0.48/sqrt(M), 20 networks per width
    measured = {w: {k: PRED[k] * (1 + 5.12 / w + 0.48 / math.sqrt(w) * rng.standard_normal(20)) for k in STATISTICS}
                for w in CLAIM_WIDTHS}
    predicted = {w: dict(PRED, **{CLAIM_KEY: frozenset({"m"})}) for w in CLAIM_WIDTHS}
    from meanfield.checking.predictions import declared_claims
    models = bias_models(net, None, CLAIM_WIDTHS, None, declared_claims(predicted))
    r = assemble(net, 16, CLAIM_WIDTHS, tuple(range(20)), 0.01, models, "x", measured, predicted, ())
    assert r.failures == ("m",), str(r)  # the claimed m fails on its b/M error; s, kappa's keep the bias
    assert [row[11] for row in r._table()[1] if row[0]] == ["none", "M^-1", "M^-1 + (+)M^-0.5", "M^-1", "M^-1"]


def test_claims_are_read_from_the_prediction_and_overridden_by_the_argument():
    net = NET

    def exact_m(width, samples):  # claims m; the value is a guess 20% off at every width
        return {"m": 0.8 * float(mf.predict(net, width, samples).m), CLAIM_KEY: ["m"]}

    report = V.verify(net, widths=(16, 64), samples=4, seeds=6, prediction=exact_m, processes=1, progress=False)
    assert report["m"].bias.is_none
    assert report.against(exact_m, claims=())["m"].bias == default_bias(net)["m"]  # no claims: the old test
    assert report.against(lambda M, T: {"kappa1": 1.0}, claims=["kappa1"])["kappa1"].bias.is_none
    with pytest.raises(mf.InvalidArgument, match="claims"):
        V.verify(net, widths=(16, 64), samples=4, seeds=2, claims={"q"})
    with pytest.raises(mf.InvalidArgument, match="claims"):
        report.against(lambda M, T: {"m": 1.0, CLAIM_KEY: ["m", "lambda"]})
    # a FisherStats that declares its 1/M terms (the attribute is read with getattr)
    stats = mf.predict(net, 64, 4)
    declared = type("Declared", (), {k: getattr(stats, k) for k in ("m", "s", "lambda_max", "alpha", "gram_diag",
                                                                     "gram_offdiag")})()
    declared.includes_1_over_M = frozenset({"m", "s", "kappa1", "kappa2"})
    assert from_fisher(declared, 64, 4, net)[CLAIM_KEY] == frozenset({"m", "s", "kappa1", "kappa2"})
    assert CLAIM_KEY not in from_fisher(stats, 64, 4, net)


def test_prediction_names_a_finite_width_form(monkeypatch):
    import meanfield.checking.predictions as P
    seen = []

    def fake_predict(net, width, samples, finite_width="mean-field"):
        seen.append(finite_width)
        return mf.predict(net, width, samples)

    monkeypatch.setattr(P, "predict", fake_predict)
    monkeypatch.setattr(P, "finite_width_choices", lambda: ("mean-field", "leading", "rmt", "1/M"))
    report = V.verify(NET, widths=(16, 64), samples=4, seeds=3, prediction="1/M", processes=1, progress=False)
    assert set(seen) == {"1/M"} and report.prediction == "meanfield.predict(finite_width='1/M')"
    with pytest.raises(mf.InvalidArgument, match="prediction"):
        V.verify(NET, widths=(16, 64), samples=4, seeds=3, prediction="2/M")


def test_old_calls_give_the_trend_test():
    # without claims every value is tested as before: trend_test with default_bias, p-values unchanged
    r = _synthetic(np.random.default_rng(2), (64, 256), 10, PRED, SDS, BIAS)
    for name in STATISTICS:
        rows = r[name].rows
        t = trend_test([row.width for row in rows], [row.relative_error for row in rows],
                       [row.relative_sem for row in rows], [row.seeds for row in rows], default_bias(NET)[name])
        assert r[name].p_value == t.p_value and r[name].bias == default_bias(NET)[name]


def test_common_error_test_is_welch_t():
    from scipy import stats
    t = common_error_test([100], [0.02], [0.01], [10])  # one width: the t-test of r = 0, 9 dof
    assert math.isclose(t.p_value, trend_test([100], [0.02], [0.01], [10], 1.0).p_value, rel_tol=1e-12)
    t = common_error_test([128, 256], [0.03, 0.01], [0.02, 0.01], [16, 24])
    c = np.array([16 * 128, 24 * 256]) / (16 * 128 + 24 * 256)  # the design's weights, n_j M_j
    a = float(np.sum(c * [0.03, 0.01]))
    parts = c**2 * np.array([0.02, 0.01]) ** 2
    nu = parts.sum() ** 2 / np.sum(parts**2 / [15, 23])  # Welch-Satterthwaite
    assert math.isclose(t.extrapolated, a) and math.isclose(t.denominator_dof, nu)
    assert math.isclose(t.p_value, 2 * stats.t.sf(a / math.sqrt(parts.sum()), nu), rel_tol=1e-9)
    assert error_test([128, 256], [0.03, 0.01], [0.02, 0.01], [16, 24], NO_BIAS) == t


def test_holm_levels():
    assert holm_levels([0.5, 0.3, 0.2], 0.01) == [0.01 / 3] * 3  # nothing rejected: alpha / K for all
    # 0.001 is rejected at alpha/3, then 0.004 at alpha/2; 0.3 would have needed alpha / 1
    assert holm_levels([0.004, 0.3, 0.001], 0.01) == [0.005, 0.01, 0.01 / 3]


@pytest.mark.parametrize("model, sign", [(NO_BIAS, 1), (BiasModel((1.0,)), 1), (BiasModel((1.0,), (0.5,)), -1)])
def test_minimum_detectable_error_matches_a_simulation(model, sign):
    """The MDE formula against the test run on synthetic normal data: 2000 replicates at the MDE.

    Per-network relative values ~ N(a, sd_j^2), 16 per width at M = 128, 256 with sd ~ 1/sqrt(M) (the
    scenario's 10.6% and 7.1%), level 0.01; the formula, given the true se_j = sd_j/4, predicts 80%
    power. The simulated rate has binomial sd 0.9%; the tolerance 3% is 3.4 sd (a false alarm of
    this check ~0.1%) and would catch an error of the noncentrality of 5% (power 80% -> 76.5%). A
    second check: at a = 0 the rejection rate is the level (tolerance 0.8%, 3.6 sd).
    """
    rng = np.random.default_rng(20261207)
    widths, n, level = (128, 256), 16, 0.01
    sd = np.array([0.106, 0.0708])
    mde = minimum_detectable_error(widths, sd / 4, (n, n), model, level)
    caught = alarms = 0
    R = 2000
    for _ in range(R):
        noise = rng.standard_normal((2, n)) * sd[:, None]
        for a in (sign * mde, 0.0):
            v = noise + a
            p = error_test(widths, v.mean(1), v.std(1, ddof=1) / math.sqrt(n), (n, n), model).p_value
            if a:
                caught += p <= level
            else:
                alarms += p <= level
    assert abs(caught / R - 0.8) < 0.03, (mde, caught / R)
    assert abs(alarms / R - level) < 0.008, alarms / R


def test_report_states_the_minimum_detectable_error():
    r = _synthetic(np.random.default_rng(4), (64, 256), 12, PRED, SDS, BIAS)
    K = 5
    for res in r.results:
        assert res.level == pytest.approx(0.05 / K)  # everything passes: alpha / K
        rows = res.rows
        expected = minimum_detectable_error([x.width for x in rows], [x.relative_sem for x in rows],
                                            [x.seeds for x in rows], res.bias, res.level)
        assert res.detectable == pytest.approx(expected)
    text = str(r)
    assert "MDE 80%" in text and f"{100 * r['m'].detectable:.2f}%" in text and "H0 bias" in text
    d = r.to_dict()["statistics"][0]
    assert d["detectable_error"] == r["m"].detectable and d["detection_power"] == 0.8 and d["level"] == 0.01
    assert r"\text{MDE}_{80\%}" in r._repr_latex_() and "MDE 80%" in r._repr_html_()


def test_claimed_scenario_catches_an_eight_percent_error_in_m():
    # relu L = 3, C = 2, batch norm on the output centre-only, T = 16, 16 networks at M = 128, 256 (fixed
    # seeds: deterministic). m, kappa_1, kappa_2 of meanfield.predict are within 1% of the sampled means
    # here (benchmarks/verify_power.py, claims scenario), so it is claimed for them. m scaled by 1.08
    # passes with the free b/M bias on plain means (minimum detectable error ~18%; caught in 9% of fresh seed
    # sets) and fails claimed (~6.1%; caught in 97% of 300 fresh seed sets, measured by the benchmark).
    # With the control variates (the default) the detectable error is ~2.5% claimed and ~6% with the free bias.
    net = Network(3, "relu", 2, 0, outputs=2, norms=[mf.BatchNorm("last", center_only=True)])

    def m_high(width, samples):
        out = from_fisher(mf.predict(net, width, samples), width, samples, net)
        return dict(out, m=1.08 * out["m"])

    claims = {"m", "kappa1", "kappa2"}
    report = V.verify(net, widths=(128, 256), samples=16, seeds=16, processes=1, progress=False, claims=claims,
                      control_variates=False)
    assert report.passed, str(report)
    assert 0.05 < report["m"].detectable < 0.08 and report["m"].detectable == pytest.approx(report["kappa2"].detectable)
    assert report.tests == 3  # m, kappa_1, kappa_2 are one test here (kappa_2 = -kappa_1 / (T - 1) per network)
    assert report.against(m_high, claims=()).passed  # the free bias absorbs it
    wrong = report.against(m_high, claims=claims)
    assert wrong.failures == ("m",), str(wrong)
    # the same networks with the control variates: the detectable error shrinks, the groups stay one test
    adjusted = V.verify(net, widths=(128, 256), samples=16, seeds=16, processes=1, progress=False, claims=claims)
    assert adjusted.passed and adjusted.tests == 3, str(adjusted)
    assert adjusted["m"].detectable < 0.04 and adjusted["m"].control_r2 > 0.5
    assert adjusted.against(m_high, claims=claims).failures == ("m",)


def test_statistics_that_are_one_test_count_once_in_holm():
    # kappa_1 = 150 m and kappa_2 = -kappa_1 / 15 on every network (as m, kappa_1 always are, and kappa_2
    # under a centre-only output norm), predictions in the same ratios: three statistics, one test
    rng = np.random.default_rng(8)
    net = Network(2, "relu", 2, 0)
    measured, predicted = {}, {}
    for w in (64, 256):
        m = PRED["m"] * (1 + rng.standard_normal(12) / math.sqrt(w))
        s = PRED["s"] * (1 + rng.standard_normal(12) / math.sqrt(w))
        lam = PRED["lambda_max"] * (1 + rng.standard_normal(12) / math.sqrt(w))
        measured[w] = {"m": m, "s": s, "lambda_max": lam, "kappa1": 150 * m, "kappa2": -10 * m}
        predicted[w] = {"m": PRED["m"], "s": PRED["s"], "lambda_max": PRED["lambda_max"], "kappa1": 150 * PRED["m"],
                        "kappa2": -10 * PRED["m"]}
    r = assemble(net, 16, (64, 256), tuple(range(12)), 0.01, default_bias(net), "x", measured, predicted, ())
    assert r.tests == 3 and "Holm over 3 tests of 5 statistics" in str(r) and "one test" in str(r)
    assert r["m"].p_value == pytest.approx(r["kappa2"].p_value) and r["m"].adjusted_p == r["kappa1"].adjusted_p
    assert r["m"].level == r["kappa2"].level == pytest.approx(0.01 / 3) and r["s"].level == pytest.approx(0.01 / 3)
    # a prediction off in one of them only splits the group
    wrong = {w: dict(predicted[w], kappa2=1.05 * predicted[w]["kappa2"]) for w in (64, 256)}
    r = assemble(net, 16, (64, 256), tuple(range(12)), 0.01, default_bias(net), "x", measured, wrong, ())
    assert r.tests == 4 and r["kappa2"].level == pytest.approx(0.01 / 4)


def test_cli_passes_the_prediction_and_claims(capsys, monkeypatch):
    from meanfield.cli import main
    seen = {}

    class Passed:
        passed = True

        def __str__(self):
            return "report"

    def fake_verify(net, **kwargs):
        seen.clear()
        seen.update(kwargs)
        return Passed()

    monkeypatch.setattr(mf, "verify", fake_verify)
    size = ["--widths", "32,64", "--samples", "4", "--seeds", "3"]
    assert main(["verify", *size, "--prediction", "1/M"]) == 0
    assert seen["prediction"] == "1/M" and "claims" not in seen  # its own claims
    assert main(["verify", *size, "--claims", "m,kappa2"]) == 0 and seen["claims"] == ("m", "kappa2")
    assert main(["verify", *size, "--claims", "none"]) == 0 and seen["claims"] == ()
    capsys.readouterr()
