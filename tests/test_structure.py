"""The structured view of a derivation: statistics in the order-parameter symbols, layer maps, closed forms.

The closed forms obtained by substituting the order parameters back into the structured statistics must be the
Derivation's own fields (numerically at random points, to rounding), the layer maps must be the recursion's
rules and compose to its values, and the printed views must stay small.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import FrozenInstanceError

import pytest
import sympy

from meanfield.errors import InvalidArgument
from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.spec.symbols import C, M, T, layer_symbol
from meanfield.theory.backend import evaluate_expectations
from meanfield.theory.derivation import derive
from meanfield.theory.recursions import order_parameters
from meanfield.theory.structure import STATISTICS, ClosedForm, Structure, order_parameter_symbol, structure

SW, SB = layer_symbol("sigma_w2"), layer_symbol("sigma_b2")
LEADING = ("P", "gram_diag", "gram_offdiag", "m", "s", "lambda_max")
DIGITS = 30
# Both sides are the same function written two ways, evaluated at DIGITS digits: they agree to ~1e-25 unless an
# unevaluated expectation is involved, which evaluate_expectations computes in double precision (1e-10 or better
# per integral, identical on both sides for the same integral); 1e-12 relative covers rounding through the nesting.
RTOL = 1e-12


def _common_factors(expr):
    """The expected maximum of C inverse chi-squares (full batch norm on the output) by one value: it is the same
    function of (T, C) on both sides, and its 30-digit quadrature takes half a minute."""
    from meanfield.theory import statistics

    cls = getattr(statistics, "ExpectedMaxInverseChi2", None)
    return expr if cls is None else expr.xreplace({a: sympy.Float("1.2345", DIGITS) for a in expr.atoms(cls)})


def _value(expr, point):
    expr = _common_factors(sympy.sympify(expr).xreplace(point))
    return complex(sympy.N(evaluate_expectations(expr), DIGITS))


def _close(a, b, point) -> bool:
    x, y = _value(a, point), _value(b, point)
    return abs(x - y) <= RTOL * max(1.0, abs(x), abs(y))


def _point(exprs, rng):
    """Random values for the free symbols: integers for M (>= 64), T (>= 8), C; moderate sigma's."""
    free = set().union(*(sympy.sympify(e).free_symbols for e in exprs))
    values = {M: rng.randint(64, 512), T: rng.randint(8, 40), C: rng.randint(1, 5)}
    out = {}
    for s in free:
        out[s] = sympy.Integer(values[s]) if s in values else sympy.Float(rng.uniform(0.5, 2.5), DIGITS)
    return out


def _check_equal_to_derivation(d, seed):
    st = d.structure
    rng = random.Random(seed)
    pairs = [(name, st.closed_form(name), getattr(d, name)) for name in STATISTICS]
    pairs += [(f"leading_{k}", st.closed_form(f"leading_{k}"), d.leading[k]) for k in LEADING]
    for _ in range(2):
        point = _point([e for _, a, b in pairs for e in (a, b)], rng)
        bad = [name for name, a, b in pairs if not _close(a, b, point)]
        assert not bad, (d.network.describe(), bad, point)


NETWORKS = [
    pytest.param(Network(3, "relu", SW, SB), None, id="relu-symbolic"),
    # symbolic sigma's: at a point of 30-digit floats the whole tree evaluates as it is rebuilt (with exact 2 and
    # 1/10 sympy.N would evaluate the nested exact constants adaptively: minutes at depth 4)
    pytest.param(Network(3, "relu", SW, SB, norms=[BatchNorm("last")], outputs=2), None, id="relu-bn-last"),
    pytest.param(Network(3, "erf", SW, 0.2, norms=[BatchNorm("last", center_only=True)], outputs=3), None,
                 id="erf-centre-last"),
    pytest.param(Network(3, "tanh", 1.3, SB, norms=[BatchNorm(1)]), 8, id="tanh-bn-hidden-expectations"),
    pytest.param(Network(3, "relu", SW, 0.1, norms=[LayerNorm(2)], alphas=(1, 2, sympy.Rational(1, 2))), None,
                 id="relu-layer-norm-alphas"),
    pytest.param(Network(1, "relu", SW, SB, outputs=2), None, id="depth-1"),
]


@pytest.mark.parametrize("net, samples", NETWORKS)
def test_closed_forms_are_the_derivation_fields(net, samples):
    _check_equal_to_derivation(derive(net, samples=samples), seed=hash(net.describe()) % 1000)


def test_exactly_equal_for_a_small_network():
    d = derive(Network(2, "relu", SW, SB))
    for name in ("kappa1", "kappa2", "gram_diag", "gram_offdiag", "m"):
        assert sympy.simplify(d.structure.closed_form(name) - getattr(d, name)) == 0, name


def test_the_comparison_can_fail():
    d = derive(Network(2, "relu", SW, SB))
    point = _point([d.m, d.s], random.Random(3))
    assert not _close(d.structure.closed_form("m"), d.s, point)
    assert not _close(d.structure.closed_form("kappa1"), d.kappa2, point)


def test_fixed_width_outputs_and_substitutions_are_followed():
    net = Network(3, "relu", SW, 0.1)
    _check_equal_to_derivation(derive(net, width=100, outputs=3), seed=1)
    _check_equal_to_derivation(derive(net).subs({M: 256, C: 2}), seed=2)
    d = derive(net).subs(sigma_w2=2)
    assert d.structure.closed_form("kappa1") == d.kappa1
    assert d.structure.statistics["m"] == C * T * sympy.Symbol("gram_diag", positive=True) / sympy.Symbol(
        "P", positive=True)


def test_statistics_are_written_in_the_order_parameters():
    st = derive(Network(3, "relu", SW, SB)).structure
    qt = [order_parameter_symbol("qtilde1", l) for l in (1, 2, 3)]
    qh = [order_parameter_symbol("qhat1", l) for l in (1, 2)]
    alpha = sympy.Symbol("alpha", positive=True)
    assert sympy.expand(st.statistics["kappa1"] * alpha) == qt[0] + qh[0] * qt[1] + qh[1] * qt[2]
    assert st.statistics["alpha"] == 2
    assert st.leading["m"] == C * sympy.Symbol("kappa1", real=True) / M
    assert st.expanded("kappa1").free_symbols == set(qt) | set(qh)
    assert isinstance(st, Structure)
    with pytest.raises(TypeError):
        st.statistics["m"] = 0  # read-only views
    with pytest.raises(FrozenInstanceError):
        st.samples = 3


def test_layer_maps_are_the_rules_and_compose_to_the_values():
    net = Network(4, "relu", SW, SB, norms=[BatchNorm(1), LayerNorm(2), BatchNorm(4, center_only=True)])
    d = derive(net, samples=9)
    maps = d.structure.layers
    assert [m.norm for m in maps] == ["batch", "layer", "none", "batch-center"]
    assert maps[0].law == "sphere" and maps[-1].activation is None
    equations = [eq for m in maps for eq in m.equations]
    assert {(e.lhs, e.rhs) for e in equations} <= {(r.lhs, r.rhs) for r in d.rules}
    assert {e.lhs for e in equations} | {order_parameter_symbol(k, 0) for k in ("qhat1", "qhat2")} == {
        r.lhs for r in d.rules}
    point = {SW: sympy.Float(1.7, DIGITS), SB: sympy.Float(0.3, DIGITS)}
    values = d.structure.order_parameters

    def close(a, b):
        return abs(_value(a, point) - _value(b, point)) <= RTOL * max(1.0, abs(_value(b, point)))

    for m in maps:
        l = m.layer
        below = d.order[l - 1]
        q1, q2 = m.dense(below.qhat1, below.qhat2)
        assert close(q1, d.order[l].q1) and close(q2, d.order[l].q2)
        if m.activation is not None:
            h1, h2 = m.activation(d.order[l].q1, d.order[l].q2)
            assert close(h1, d.order[l].qhat1) and close(h2, d.order[l].qhat2)
        if m.normalise is not None:
            n1, n2 = m.normalise(d.order[l].q1, d.order[l].q2)
            assert close(n1, d.order[l].qn1) and close(n2, d.order[l].qn2)
        # the backward map: its variables at layer l + 1 and this layer's q's, from their closed forms
        state = m.backward(*[values[v] for v in m.backward.variables]).xreplace(
            {order_parameter_symbol("q1", l): d.order[l].q1, order_parameter_symbol("q2", l): d.order[l].q2})
        p = d.order[l]
        for got, want in zip(state, (p.qtilde1, p.qtilde1_mean, p.qtilde2_same, p.qtilde2)):
            assert close(got, want), (l, got, want)


def test_closed_form_with_common_subexpressions():
    st = derive(Network(3, "erf", SW, SB)).structure
    cf = st.closed_form("lambda_max", cse=True)
    assert isinstance(cf, ClosedForm) and cf.replacements
    expr = cf.expr
    for sym, value in reversed(cf.replacements):
        expr = expr.xreplace({sym: value})
    point = _point([expr], random.Random(5))
    assert _close(expr, st.closed_form("lambda_max"), point)
    assert str(cf).splitlines()[0].startswith("x0 = ")


def test_bad_names_and_arguments():
    st = derive(Network(2, "relu", SW, 0)).structure
    with pytest.raises(InvalidArgument, match="kappa1"):
        st.closed_form("kapa1")
    with pytest.raises(InvalidArgument, match="order"):
        structure(Network(2, "relu", 2, 0))


# -- printing ------------------------------------------------------------------------------------------------------


def _balanced(tex: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_views_of_a_deep_network_are_compact_and_fast():
    d = derive(Network(4, "relu", 2, 0.1, norms=[BatchNorm("last")]))
    start = time.perf_counter()
    text, tex = str(d), d._repr_latex_()
    seconds = time.perf_counter() - start
    assert len(tex) < 10_000, len(tex)            # the full closed forms are ~200 kB
    assert len(text) < 6_000, len(text)
    assert seconds < 60, seconds                  # a few seconds; printing the closed forms took minutes
    assert tex.startswith("$$\\begin{aligned}") and tex.endswith("\\end{aligned}$$")
    assert _balanced(tex)
    assert not re.search(r"\\text\{[^}]*\\", tex)  # no commands inside \text
    for needed in (r"\kappa_{1}", r"\tilde{q}_{1}^{(4)}", r"\hat{q}_{2}^{(3)}", r"\lambda_{\max}"):
        assert needed in tex, needed
    for needed in ("kappa1", "gram_diag", "qtilde1_mean_4", "layer 4  [batch norm, sphere law]"):
        assert needed in text, needed
    assert len(d.table()) < 10_000  # the closed-form table cuts long expressions without printing them
