"""Control variates: the sampled controls have mean 0, the adjusted means are unbiased, verify uses them."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from scipy import stats

import meanfield as mf
from meanfield import InvalidArgument, Network
from meanfield.checking.controls import adjust, control_order
from meanfield.checking.trend import common_error_test
from meanfield.sampled.sampling import controls, draw, forward

V = importlib.import_module("meanfield.checking.verification")

NETWORKS = [
    Network(3, "relu", 2, 0.1),
    Network(3, "tanh", 1.5, 0.05, outputs=2, input_q2=0.3, norms=[mf.LayerNorm(2)]),
    Network(2, "erf", 2, 0, outputs=2, norms=[mf.BatchNorm("last", center_only=True)]),
]


@pytest.mark.parametrize("net", NETWORKS, ids=lambda n: n.describe())
def test_every_control_has_mean_zero(net):
    # 600 cheap networks (M = 8, T = 4; no Gram): per control a t-test of mean 0. The controls are exact
    # ratios to conditional expectations, so their mean is 0 at any width. False alarms: each control at
    # 0.001 / K (Bonferroni over the K controls of a network: 0.001 per network, 0.003 for the three);
    # power: a mean of 0.25 of a control's standard deviation is a z of 6.1 against a threshold of about
    # 4.0 (K = 15), caught with probability 0.98.
    values = {}
    for seed in range(600):
        d = draw(net, 8, 4, seed)
        for name, v in controls(net, d, forward(net, d)).items():
            values.setdefault(name, []).append(v)
    assert {"input_norm", "weight[1]", "forward[1]", "backward[2]"} <= set(values)
    K = len(values)
    for name, v in values.items():
        v = np.asarray(v)
        assert len(v) == 600 and np.all(np.isfinite(v))
        t = v.mean() / (v.std(ddof=1) / math.sqrt(len(v)))
        assert 2 * stats.t.sf(abs(t), len(v) - 1) > 0.001 / K, (name, t)


def test_controls_on_the_sampled_result():
    net = Network(3, "relu", 2, 0, outputs=2)
    r = mf.sample(net, 16, 4, seed=3)
    d = draw(net, 16, 4, 3)
    assert r.controls == controls(net, d, forward(net, d))
    assert "post[2]" in r.controls and "backward[3]" in r.controls
    # a given batch is fixed: no input controls
    X = np.random.default_rng(0).standard_normal((4, 5))
    assert not any(k.startswith("input") for k in mf.sample(net, 16, seed=3, inputs=X).controls)
    summary = mf.sample_many(net, 16, 4, seeds=3, processes=1)
    assert set(summary.controls) == set(r.controls) and len(summary.controls["post[1]"]) == 3
    assert "post[1]" not in summary.values  # the statistics are unchanged
    assert control_order(list(r.controls))[:3] == ["backward[3]", "post[2]", "post[1]"]


def _synthetic(rng, n, beta=(0.6, -0.4), noise=0.02, widths=(64, 256)):
    values, ctrls = [], []
    for w in widths:
        c = rng.standard_normal((n, 2)) * 4 / math.sqrt(w)
        values.append(2.0 * (1 + c @ np.asarray(beta) + noise * rng.standard_normal(n) * 8 / math.sqrt(w)))
        ctrls.append({"post[1]": c[:, 0], "input_norm": c[:, 1]})
    return values, ctrls


def test_adjusted_means_are_unbiased_and_their_errors_calibrated():
    # 2000 synthetic runs, 16 networks at each of two widths, X = 2 (1 + beta . c + noise), E c = 0: the
    # adjusted means average to 2 (tolerance 4 standard errors of the average over the runs: a false
    # alarm 6e-5), their standard errors match their spread (z sd within 10% of 1: its sampling error over
    # 2000 runs is 1.6%, so 6 standard errors), and the common-error test at 1% rejects 0.4-1.9% (the
    # 99.9% binomial range of 2000 draws at 1%, widened by 0.1% for the t approximation).
    rng = np.random.default_rng(11)
    means, z, rejected, plain = [], [], 0, []
    for _ in range(2000):
        values, ctrls = _synthetic(rng, 16)
        adj = adjust((64, 256), values, ctrls, scales=(2.0, 2.0))
        assert adj.names == ("post[1]", "input_norm") and adj.r2 > 0.5
        means.append(adj.means)
        z.append([(m - 2.0) / s for m, s in zip(adj.means, adj.sems)])
        errs = [m / 2 - 1 for m in adj.means]
        rejected += common_error_test((64, 256), errs, [s / 2 for s in adj.sems], adj.counts).p_value <= 0.01
        plain.append([np.std(v, ddof=1) / 4 for v in values])
    means, z = np.asarray(means), np.asarray(z)
    for j in range(2):
        assert abs(means[:, j].mean() - 2.0) < 4 * means[:, j].std() / math.sqrt(len(means))
        assert 0.9 < z[:, j].std() < 1.1
    assert 0.004 <= rejected / 2000 <= 0.019
    # and the controls did remove noise: the adjusted spread is far below the plain standard error
    assert np.mean(means.std(axis=0)) < 0.5 * np.mean(plain)


def test_adjust_declines_what_it_cannot_do():
    rng = np.random.default_rng(2)
    values, ctrls = _synthetic(rng, 4)
    assert adjust((64, 256), values, ctrls) is None  # 8 networks: no degree of freedom to spare
    values, ctrls = _synthetic(rng, 16)
    assert adjust((64, 256), values, [{}, {}]) is None
    constant = [{"post[1]": np.zeros(16)}, {"post[1]": np.zeros(16)}]
    assert adjust((64, 256), values, constant) is None
    with pytest.raises(InvalidArgument):
        adjust((64, 256), values, ctrls[:1])


def test_verify_uses_the_controls_and_can_switch_them_off():
    net = Network(2, "relu", 2, 0.1)
    kwargs = dict(widths=(16, 64), samples=4, seeds=12, processes=1, progress=False)
    on = V.verify(net, **kwargs)
    off = V.verify(net, **kwargs, control_variates=False)
    assert on.passed and off.passed, (str(on), str(off))
    assert on["m"].control_r2 is not None and off["m"].control_r2 is None
    assert "control variates" in str(on) and "control variates" not in str(off)
    assert on.to_dict()["statistics"][0]["control_r2"] == on["m"].control_r2
    # the same networks: identical plain values, and the adjusted standard error is the smaller one
    assert on.values == off.values
    assert on["m"].rows[1].sem < off["m"].rows[1].sem
    # against() reuses the controls; a wrong prediction fails either way
    again = on.against(lambda M, T: {"m": 1.3 * mf.predict(net, M, T).m})
    assert again["m"].control_r2 == pytest.approx(on["m"].control_r2) and not again.passed
    with pytest.raises(InvalidArgument):
        V.verify(net, **kwargs, control_variates="yes")
