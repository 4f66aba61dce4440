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
