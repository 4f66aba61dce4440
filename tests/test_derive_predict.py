"""derive(net).evaluate(M, T) is predict(net, M, T): every statistic, the kind of lambda_max and its bounds.

The property test draws networks from :func:`meanfield.strategies.networks` (every normalization
placement, every activation family, float or rational parameters) and batch sizes from
:func:`meanfield.strategies.samples` (only T that predict accepts). Both sides compute the same
formulas, derive in exact arithmetic then once in double precision, predict in double precision
throughout: they differ by rounding (and by the 1e-12 quadrature of activations without closed forms,
which both call on inputs equal to rounding), so 1e-10 relative is a margin of ~10^4 over what is
expected. Quantities that cancel (kappa_2, gram_offdiag) are compared on the scale of kappa_1,
gram_diag.
"""

import math
import time
from fractions import Fraction

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from meanfield import strategies as mfst
from meanfield.errors import InvalidArgument
from meanfield.spec.network import BatchNorm, Network
from meanfield.spec.symbols import C, M, T, layer_symbol
from meanfield.theory.derivation import derive
from meanfield.theory.fisher import predict
from meanfield.theory.statistics import ExpectedMaxInverseChi2

REL = 1e-10
# statistic -> the statistic whose size sets the absolute scale (for values that can cancel to ~0)
SCALE = {"P": "P", "alpha": "alpha", "kappa1": "kappa1", "kappa2": "kappa1", "gram_diag": "gram_diag",
         "gram_offdiag": "gram_diag", "m": "m", "s": "s", "lambda_max": "lambda_max", "eta_max": "eta_max"}
LEADING = {"P": "P", "m": "m", "s": "s", "lambda_max": "lambda_max", "gram_diag": "gram_diag",
           "gram_offdiag": "gram_diag"}


def _rational(net: Network) -> Network:
    """The same network with its float parameters as nearby exact rationals (predict takes them too)."""
    def r(v):
        return sympy.Rational(Fraction(float(v)).limit_denominator(64)) if float(v) != 0 else sympy.S.Zero

    sw = tuple(max(r(v), sympy.Rational(1, 64)) for v in net.sigma_w2)
    return net.with_(sigma_w2=sw, sigma_b2=tuple(map(r, net.sigma_b2)),
                     activation=net.activation if net.depth > 1 else net.activation[0])


def assert_same(net: Network, width: int, samples: int) -> None:
    try:
        ref = predict(net, width, samples)
    except InvalidArgument:
        # e.g. a unit that is constant over the batch before a batch norm: derive refuses it too
        with pytest.raises(InvalidArgument):
            derive(net).evaluate(width, samples)
        return
    got = derive(net).evaluate(width, samples)
    for k, scale in SCALE.items():
        want = float(getattr(ref, k))
        assert got[k] == pytest.approx(want, rel=REL, abs=REL * abs(float(getattr(ref, scale)))), k
    for k, scale in LEADING.items():
        want = float(getattr(ref.leading, k))
        assert got["leading_" + k] == pytest.approx(want, rel=REL, abs=REL * abs(float(getattr(ref.leading, scale)))), k
    assert got["lambda_max_kind"] == ref.lambda_max_kind
    if ref.lambda_max_bounds is None:
        assert got["lambda_max_bounds"] is None
    else:
        assert got["lambda_max_bounds"] == pytest.approx([float(v) for v in ref.lambda_max_bounds], rel=REL)


@st.composite
def cases(draw, min_depth=1, max_depth=3, norms=mfst.PLACEMENTS, max_width=256):
    # (input statistics stay the default (1, 0): a float like 1e-224 becomes an exact rational with a
    # 225-digit denominator, whose square roots sympy factors for minutes)
    net = draw(mfst.networks(min_depth=min_depth, max_depth=max_depth, per_layer_variances=draw(st.booleans()),
                             norms=norms))
    if draw(st.booleans()):
        net = _rational(net)
    samples = draw(mfst.samples(net, max_samples=40))
    width = mfst.width_multiple(net) * draw(st.integers(2, max_width // 4))
    return net, width, samples


# Cost: derive at depth <= 3 takes 0.1-1 s, at depth 4 up to ~15 s for ReLU (its closed forms nest), so
# the depth-4 draws get their own, smaller test.
@settings(max_examples=20)
@given(cases(max_depth=3))
def test_evaluate_equals_predict(case):
    assert_same(*case)


# without normalization on the output, wide: where lambda_max can be a prediction (the outlier clears the bulk)
@settings(max_examples=10)
@given(cases(max_depth=3, norms=[p for p in mfst.PLACEMENTS if not p.endswith("last")], max_width=4096))
def test_evaluate_equals_predict_plain_output(case):
    assert_same(*case)


@settings(max_examples=3)
@given(cases(min_depth=4, max_depth=4))
def test_evaluate_equals_predict_depth4(case):
    assert_same(*case)


@pytest.mark.parametrize("norms", [[], [BatchNorm("last")], [BatchNorm("last", center_only=True)], [BatchNorm(1)]])
@pytest.mark.parametrize("outputs", [1, 3])
def test_issue_examples_and_every_output_placement(norms, outputs):
    assert_same(Network(2, "relu", 1.7, 0.2, outputs=outputs, norms=norms), 256, 16)
    assert_same(Network(3, "tanh", 1.3, 0.1, outputs=outputs, norms=norms), 64, 9)


def test_full_batch_norm_output_carries_the_chi_square_maximum_symbolically():
    d = derive(Network(2, "relu", 1.7, 0.2, outputs=2, norms=[BatchNorm("last")]))
    assert d.lambda_max_kind == "bound"
    assert d.lambda_max.has(ExpectedMaxInverseChi2)
    chi = next(iter(d.lambda_max.atoms(ExpectedMaxInverseChi2)))
    assert chi.args == (T, C)    # symbolic in T and C
    # the expression itself (not only evaluate) is predict's lambda_max and lower bound
    value = float(d.lambda_max.subs({M: 256, T: 16, C: 2}))
    ref = predict(d.network, 256, 16)
    assert value == pytest.approx(float(ref.lambda_max), rel=REL)
    assert d.lambda_max_bounds[0] == d.lambda_max
    # C = 1: E[T/chi^2_{T-1}] = T/(T-3) in closed form
    one = derive(Network(2, "relu", 1.7, 0.2, norms=[BatchNorm("last")]), outputs=1)
    assert not one.lambda_max.has(ExpectedMaxInverseChi2)
    assert float(one.lambda_max.subs({M: 256, T: 16, C: 1})) == pytest.approx(
        float(predict(one.network, 256, 16).lambda_max), rel=REL)


def test_expected_max_inverse_chi2_function():
    Ts, Cs = sympy.symbols("T C", positive=True, integer=True)
    e = ExpectedMaxInverseChi2(Ts, Cs)
    assert e.subs(Cs, 1) == Ts / (Ts - 3)
    from meanfield.integrals.sphere import expected_max_inverse_chi2
    assert float(e.subs({Ts: 12, Cs: 4})) == pytest.approx(expected_max_inverse_chi2(12, 4), rel=1e-15)
    # above double precision: mpmath quadrature, agreeing with the double-precision quadrature to its accuracy
    assert float(sympy.N(e.subs({Ts: 12, Cs: 4}), 30)) == pytest.approx(expected_max_inverse_chi2(12, 4), rel=1e-12)
    assert sympy.lambdify([Ts, Cs], 2 * e)(12, 4) == pytest.approx(2 * expected_max_inverse_chi2(12, 4), rel=1e-15)
    assert "chi" in sympy.latex(e)
    with pytest.raises(InvalidArgument, match="samples"):
        ExpectedMaxInverseChi2(3, 2)
    with pytest.raises(InvalidArgument, match="count"):
        ExpectedMaxInverseChi2(8, sympy.Rational(1, 2))


def test_floats_without_a_short_decimal_form():
    for sw in np.linspace(0.5, 3, 7):
        net = Network(2, "relu", sw, 0.1)
        got = derive(net).evaluate(128, 8)
        assert got["kappa1"] == pytest.approx(float(predict(net, 128, 8).kappa1), rel=REL)
    net = Network(2, "relu", 0.1 + 0.2, 0.1)
    assert derive(net).evaluate(128, 8)["lambda_max"] == pytest.approx(float(predict(net, 128, 8).lambda_max), rel=REL)
    # as values given to evaluate and subs as well
    d = derive(Network(2, "relu", layer_symbol("sigma_w2"), layer_symbol("sigma_b2")))
    sw, sb = np.linspace(0, 1, 11)[3], 0.1 + 0.2
    ref = predict(Network(2, "relu", sw, sb), 64, 4)
    assert d.evaluate(64, 4, sigma_w2=sw, sigma_b2=sb)["m"] == pytest.approx(float(ref.m), rel=REL)
    assert d.subs(sigma_w2=sw, sigma_b2=sb).evaluate(64, 4)["m"] == pytest.approx(float(ref.m), rel=REL)


def test_a_tiny_input_correlation_whose_exact_rational_leaves_double_range():
    # 2e-191 read as an exact rational has a ~1e191 denominator: nodes of the closed form overflow double
    # precision while the statistics do not; the value must still equal predict's (found by hypothesis)
    net = Network(2, "relu", 1, 0, input_q2=2.024788319599442e-191)
    got, want = derive(net).evaluate(64, 8), predict(net, 64, 8)
    for name in ("m", "s", "lambda_max"):
        assert got[name] == pytest.approx(float(getattr(want, name)), rel=1e-10)


def test_subs_of_a_symbol_the_results_do_not_depend_on():
    sw = layer_symbol("sigma_w2")
    shallow = derive(Network(1, "relu", sw, 0))          # depth 1: kappa_1 = qhat_1^0, no sigma_w2
    assert sw not in shallow.free_symbols
    assert shallow.subs(sigma_w2=2).kappa1 == shallow.kappa1
    assert shallow.subs(sigma_w2=2).network.sigma_w2 == (2,)
    sb = layer_symbol("sigma_b2")
    # a full batch norm removes the layer-1 bias: the results do not depend on sigma_b2 of layer 1
    below = derive(Network(2, "relu", 2, (sb, 0), norms=[BatchNorm(1)]), samples=8)
    one, zero = below.subs(sigma_b2=sympy.Rational(1, 3)).evaluate(64, 8), below.subs(sigma_b2=0).evaluate(64, 8)
    for k in ("kappa1", "kappa2", "m", "s", "lambda_max"):
        assert one[k] == pytest.approx(zero[k], rel=REL)
    assert below.subs({sb: 1}).evaluate(64, 8)["kappa1"] == pytest.approx(
        float(predict(Network(2, "relu", 2, (1, 0), norms=[BatchNorm(1)]), 64, 8).kappa1), rel=REL)
    with pytest.raises(InvalidArgument, match="sigma_w2.*valid|symbol of this derivation") as err:
        shallow.subs(sigma_w=2)
    assert "sigma_w2" in str(err.value)


def test_kind_is_decided_again_after_subs_as_predict_decides():
    sw, sb = layer_symbol("sigma_w2"), layer_symbol("sigma_b2")
    d = derive(Network(3, "relu", sw, sb, outputs=4))
    assert d.lambda_max_kind == "prediction if kappa2 > 0"
    crit = d.subs(sigma_w2=2, sigma_b2=0)
    assert crit.lambda_max_kind == "prediction"       # kappa_2 > 0, any width
    # at a small width the outlier does not clear the bulk's spread: predict calls it a bound
    for width, samples in ((8, 4), (512, 16)):
        ref = predict(Network(3, "relu", 2, 0, outputs=4), width, samples)
        fixed = crit.subs(M=width, T=samples, C=4)   # the separation needs all three
        assert fixed.lambda_max_kind == ref.lambda_max_kind
        assert float(fixed.lambda_max) == pytest.approx(float(ref.lambda_max), rel=REL)
        assert (fixed.lambda_max_bounds is None) == (ref.lambda_max_bounds is None)
    assert predict(Network(3, "relu", 2, 0, outputs=4), 8, 4).lambda_max_kind == "bound"   # the case is covered


@pytest.mark.parametrize("call, argument", [
    (lambda d: d.evaluate(0, 8), "width"),
    (lambda d: d.evaluate(-4, 8), "width"),
    (lambda d: d.evaluate(2.5, 8), "width"),
    (lambda d: d.evaluate(64, 5), "samples"),        # full batch norm on the output needs T >= 6
    (lambda d: d.evaluate(64, 8, outputs=0), "outputs"),
    (lambda d: d.evaluate(64, 8, sigma_b2=float("nan")), "sigma_b2"),
    (lambda d: d.evaluate(64, 8, sigma_b2=math.inf), "sigma_b2"),
    (lambda d: d.evaluate(64, 8, sigma_b2="0.1"), "sigma_b2"),
    (lambda d: d.evaluate(64, 8), "values"),          # sigma_b2 left without a value
    (lambda d: d.subs(sigma_b2=sympy.nan), "sigma_b2"),
    (lambda d: d.subs(sigma_b2=-1), "sigma_b2"),      # the network refuses a negative variance
    (lambda d: d.subs(T=5), "samples"),
    (lambda d: d.subs(M=0), "width"),
    (lambda d: d.subs(C=sympy.Rational(1, 2)), "outputs"),
    (lambda d: d.subs(sigma_bb=1), "sigma_bb"),
])
def test_bad_input_is_invalid_argument(call, argument):
    d = derive(Network(2, "relu", 2, layer_symbol("sigma_b2"), norms=[BatchNorm("last")]))
    with pytest.raises(InvalidArgument, match=argument):
        call(d)


def test_bad_input_to_derive():
    net = Network(2, "relu", 2, 0, norms=[BatchNorm("last")])
    for kwargs, argument in (({"samples": 5}, "samples"), ({"samples": 0.5}, "samples"), ({"width": 0}, "width"),
                             ({"width": math.nan}, "width"), ({"outputs": -1}, "outputs")):
        with pytest.raises(InvalidArgument, match=argument):
            derive(net, **kwargs)


def test_derive_cost_stays_small():
    # a guard against exponential blow-up: depth 3 with batch norm on the output derives and evaluates fast
    start = time.perf_counter()
    derive(Network(3, "relu", 1.7, 0.2, outputs=2, norms=[BatchNorm("last")])).evaluate(256, 16)
    assert time.perf_counter() - start < 20
