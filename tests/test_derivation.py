"""derive(): the must-work REPL session, rules vs values, symbolic vs numeric on random networks, printing."""

import math

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.errors import InvalidArgument
from meanfield.theory.derivation import Derivation, derive
from meanfield.theory.fisher import predict
from meanfield.spec.symbols import C, M, T, layer_symbol, order_symbol

SW, SB = layer_symbol("sigma_w2"), layer_symbol("sigma_b2")


def test_must_work_repl_example():
    d = derive(Network(3, "relu", SW, SB))
    assert isinstance(d, Derivation)
    # kappa_1 = sum_l qtilde_1^l qhat_1^{l-1} / 2 with qhat_1^1 = (sw + sb)/2, qhat_1^2 = sw qhat_1^1/2 + sb/2,
    # qtilde_1^3 = 1, qtilde_1^2 = sw/2, qtilde_1^1 = sw^2/4:  (sw^2/4 + sw (sw + sb)/4 + sw^2/4 + sw sb/4 + sb/2)/2
    assert sympy.simplify(d.kappa1 - (3 * SW**2 + 2 * SW * SB + 2 * SB) / 8) == 0
    crit = d.subs(sigma_w2=2, sigma_b2=0)
    assert crit.kappa1 == sympy.Rational(3, 2)            # L/(L-1), an exact rational
    assert crit.leading["m"] == sympy.Rational(3, 2) * C / M
    assert crit.lambda_max_kind == "prediction"           # resolved once kappa_2 > 0 is known
    bn = derive(Network(3, "relu", SW, SB, norms=[BatchNorm("last")])).subs(sigma_w2=2, sigma_b2=0)
    assert bn.lambda_max_kind == "bound"
    # without the O(M) outlier: lambda_max T/M stays bounded as T grows; the plain net's grows like T
    plain = crit.leading["lambda_max"] * T / M
    normed = bn.leading["lambda_max"] * T / M
    assert float((plain / T).subs({M: 1000, T: 10**6})) > 0.1
    assert float(normed.subs(T, 10**6)) == pytest.approx(float(normed.subs(T, 10**5)), rel=1e-4)


def test_rules_reproduce_the_values():
    # substituting the rules (explicit maps between order-parameter symbols) layer by layer gives the fold's values
    net = Network(3, "relu", 1.5, 0.3, norms=[BatchNorm(2, center_only=True)])
    d = derive(net, samples=7)
    values = {}
    for rule in d.rules:
        values[rule.lhs] = sympy.N(rule.rhs.subs(values), 20)
    for l in (1, 2):
        assert float(values[order_symbol("qhat2", l)]) == pytest.approx(float(d.order[l].qhat2), rel=1e-14)
    for l in (1, 2, 3):
        assert float(values[order_symbol("qtilde1", l)]) == pytest.approx(float(d.order[l].qtilde1), rel=1e-14)
        assert float(values[order_symbol("qtilde2", l)]) == pytest.approx(float(d.order[l].qtilde2), rel=1e-14)


def test_unevaluated_expectations_and_sphere_law():
    d = derive(Network(3, "tanh", 1, SB, norms=[BatchNorm(1)]), samples=8)
    from meanfield.integrals.symbolic import GaussianExpectation
    from meanfield.integrals.sphere import SphereExpectation
    assert d.kappa2.has(GaussianExpectation) and d.kappa2.has(SphereExpectation)
    got = d.subs(sigma_b2=0.1).evaluate(256, 8)
    ref = predict(Network(3, "tanh", 1, 0.1, norms=[BatchNorm(1)]), 256, 8)
    for k in ("m", "s", "gram_diag", "gram_offdiag", "kappa1", "kappa2", "lambda_max"):
        assert got[k] == pytest.approx(float(getattr(ref, k)), rel=1e-9)


def test_printing_and_latex():
    d = derive(Network(2, "relu", SW, 0, norms=[LayerNorm(1)]))
    text = str(d)
    assert "kappa1" in text and "qtilde1" in text and "lambda_max" in text
    tex = d._repr_latex_()
    assert tex.startswith("$$") and (r"\kappa_1" in tex or r"\kappa_{1}" in tex) and r"\sigma_{w}^{2}" in tex


def test_lambdify_and_errors():
    d = derive(Network(3, "relu", SW, SB))
    f = d.lambdify("kappa1", ["sigma_w2", "sigma_b2"])
    assert f(2.0, 0.0) == pytest.approx(1.5)
    with pytest.raises(InvalidArgument, match="sigma_w2"):
        d.subs(sigma_w=2)
    with pytest.raises(InvalidArgument, match="samples"):
        derive(Network(3, "relu", 2, 0, norms=[BatchNorm("last")]), samples=5)


# -- symbolic vs numeric on random networks --------------------------------------------------------------------------

# activations whose phi and phi' both have closed-form Gaussian integrals (cos' = -sin is not looked up as
# a closed form by meanfield.integrals, so a cos network goes through quadrature, accurate to ~1e-10 only)
CLOSED = ["relu", "erf", "linear", "abs", "leaky_relu", "sin"]


@st.composite
def networks(draw):
    L = draw(st.integers(2, 3))
    act = draw(st.sampled_from(CLOSED))
    sw = draw(st.fractions(min_value=sympy.Rational(1, 2), max_value=3, max_denominator=8))
    sb = draw(st.fractions(min_value=0, max_value=sympy.Rational(1, 2), max_denominator=8))
    norms = []
    for l in range(1, L + 1):
        kind = draw(st.sampled_from(["none", "none", "batch", "batch-center"] + (["layer"] if l < L else [])))
        if kind == "batch":
            norms.append(BatchNorm(l))
        elif kind == "batch-center":
            norms.append(BatchNorm(l, center_only=True))
        elif kind == "layer":
            norms.append(LayerNorm(l))
    C_ = draw(st.integers(1, 3))
    return Network(L, act, sympy.Rational(sw.numerator, sw.denominator), sympy.Rational(sb.numerator, sb.denominator),
                   outputs=C_, norms=norms)


@settings(max_examples=8, deadline=None)
@given(net=networks(), T=st.integers(6, 40), width=st.sampled_from([32, 64, 100]))
def test_symbolic_matches_numeric(net, T, width):
    if net.activation[0].name == "sin" and any(isinstance(n, BatchNorm) and not n.center_only
                                                       for n in net.norms if n.layer < net.depth):
        return  # sin is not homogeneous: its sphere law needs quadrature (checked elsewhere)
    try:
        ref = predict(net, width, T)
    except InvalidArgument:
        return  # e.g. a constant unit before a batch norm
    got = derive(net).evaluate(width, T)
    for k in ("m", "s", "gram_diag", "gram_offdiag", "kappa1", "kappa2", "P"):
        assert got[k] == pytest.approx(float(getattr(ref, k)), rel=1e-12, abs=1e-12 * abs(float(ref.gram_diag))), k
    # with full batch norm on the output both carry E[max_k T/chi^2_k] (derive as ExpectedMaxInverseChi2)
    assert got["lambda_max"] == pytest.approx(float(ref.lambda_max), rel=1e-12)
    assert got["lambda_max_kind"] == ref.lambda_max_kind


def test_derive_warns_before_a_closed_form_explodes(monkeypatch):
    from meanfield.theory import derivation

    # arccos-type moments repeat q2 three times a layer; erf's arcsin once; no closed form: one expectation
    assert derivation.closed_form_growth(Network(5, "relu", 2, 0.1)) == 81 > derivation.GROWTH_WARNING
    assert derivation.closed_form_growth(Network(5, "erf", 2, 0.1)) == 1
    assert derivation.closed_form_growth(Network(5, "tanh", 2, 0.1)) == 1
    assert derivation.closed_form_growth(Network(4, "x + x**3/3", 1.5, 0.1)) == 1  # rationals collapse
    assert derivation.closed_form_growth(Network(3, "x + x**3/3", sympy.Symbol("sigma_w2"), 0.1)) == 9  # degrees
    assert derivation.closed_form_growth(Network(5, "relu", 2, 0.1, norms=[BatchNorm(3)])) == 3  # reset by BN
    monkeypatch.setattr(derivation, "GROWTH_WARNING", 5)  # so that a quick depth-3 net (growth 9) shows it
    with pytest.warns(derivation.ClosedFormGrowthWarning, match="meanfield.predict"):
        derive(Network(3, "relu", 2, 0.1))
