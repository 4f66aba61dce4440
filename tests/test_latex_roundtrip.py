"""Exported LaTeX reads back: ``meanfield.latex.parse(meanfield.latex(e))`` equals ``e``.

The sample: the recursion rules and every statistic of derived networks (ReLU, erf, tanh, linear, GELU with
every normalization placement; symbolic sigma's), the structured statistics in the order-parameter symbols,
networks drawn by :func:`meanfield.strategies.networks`, and Gaussian and sphere expectations of catalogue,
derivative and custom activations.

Equality: sympy's structural equality, with the display label of an expectation ignored (a custom
activation's LaTeX is its expression, so ``x*tanh'`` comes back labelled ``x*(1 - tanh(x)**2)``). Where the
parsed tree is arranged differently (``2 (a + b)`` reads back as ``2 a + 2 b``), the two are compared at
random rational points with each expectation interpreted as a fixed random polynomial of its arguments,
keyed by its activation: equal expressions agree under every interpretation, and a wrong argument,
activation or coefficient changes the value (checked by the test that the comparison can fail). The
tolerance 1e-12 is far above the 30-digit evaluation's rounding and far below any real difference.
"""

from __future__ import annotations

import random
import zlib

import mpmath

import pytest
import sympy
from hypothesis import given, settings
from sympy.core.symbol import Str

import meanfield as mf
from meanfield import documents, strategies
from meanfield.integrals.sphere import SphereExpectation
from meanfield.integrals.symbolic import GaussianExpectation
from meanfield.printing import latex, parse_latex
from meanfield.spec.activations import X
from meanfield.spec.grammar import parse_norm
from meanfield.spec.symbols import layer_symbol, order_symbol, q, q1, q2

SW, SB = layer_symbol("sigma_w2"), layer_symbol("sigma_b2")
_EXPECTATIONS = (GaussianExpectation, SphereExpectation)


def _unlabelled(expr: sympy.Basic) -> sympy.Basic:
    def strip(e):
        if isinstance(e, GaussianExpectation):
            return GaussianExpectation(e.phi, e.q1, e.q2, e.args[3], e.args[4], Str(""))
        return SphereExpectation(e.phi, e.T, e.kind, "")

    return expr.replace(lambda e: isinstance(e, _EXPECTATIONS), strip)


def _interpreted(expr: sympy.Basic) -> sympy.Basic:
    """Each expectation -> a random polynomial of its arguments, the same for the same activation (and
    meanfield's other sympy functions likewise, by class)."""
    def value(e):
        key = sympy.srepr(e.phi) + (e.kind if isinstance(e, SphereExpectation) else "")
        rng = random.Random(zlib.crc32(key.encode()))
        c = [sympy.Rational(rng.randint(1, 99), rng.randint(1, 9)) for _ in range(4)]
        if isinstance(e, SphereExpectation):
            return c[0] + c[1] * e.T + c[2] * e.T**2
        return c[0] + c[1] * e.q1 + c[2] * e.q2 + c[3] * e.q1 * e.q2

    def project_function(e):
        # meanfield's own sympy functions (the expected maximum of inverse chi-squares): same treatment
        rng = random.Random(zlib.crc32(type(e).__name__.encode()))
        return sum(sympy.Rational(rng.randint(1, 99), rng.randint(1, 9)) * a for a in e.args) + 1

    expr = expr.replace(lambda e: isinstance(e, _EXPECTATIONS), value)
    return expr.replace(lambda e: isinstance(e, sympy.Function) and type(e).__module__.startswith("meanfield."),
                        project_function)


def numerically_equal(a: sympy.Basic, b: sympy.Basic, rng: random.Random, points: int = 2) -> bool:
    a, b = _interpreted(a), _interpreted(b)
    if isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq):
        return numerically_equal(a.lhs, b.lhs, rng, points) and numerically_equal(a.rhs, b.rhs, rng, points)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    # mpmath at 30 digits through lambdify: sympy.N on the long statistics takes seconds each
    fa, fb = (sympy.lambdify(symbols, e, "mpmath") for e in (a, b))
    checked = 0
    with mpmath.workdps(30):
        for _ in range(10 * points):
            values = [mpmath.mpf(rng.randint(11, 97)) / rng.randint(3, 13) for _ in symbols]
            try:
                x, y = complex(fa(*values)), complex(fb(*values))
            except ZeroDivisionError:   # a pole (T = 5 in 1/(T - 5)): another point
                continue
            if abs(x - y) > 1e-12 * max(1.0, abs(x)):
                return False
            checked += 1
            if checked == points:
                return True
    return False


def equal(parsed: sympy.Basic, source: sympy.Basic, rng: random.Random) -> bool:
    if parsed == source or _unlabelled(parsed) == _unlabelled(source):
        return True
    return numerically_equal(parsed, source, rng)


def check_all(pairs, seed: int = 0) -> list[str]:
    """Parse each (label, expression)'s LaTeX back; the failures, with their LaTeX."""
    rng, failures = random.Random(seed), []
    for label, expr in pairs:
        expr = sympy.sympify(expr)
        tex = latex(expr)
        try:
            parsed = mf.latex.parse(tex)
        except mf.InvalidArgument as err:
            failures.append(f"{label}: {err}\n    {tex[:300]}")
            continue
        if not equal(parsed, expr, rng):
            failures.append(f"{label}: parsed {str(parsed)[:200]} != {str(expr)[:200]}\n    {tex[:300]}")
    return failures


FINITE = ("gram_diag", "gram_offdiag", "m", "s", "lambda_max")


def derivation_expressions(net: mf.Network, label: str, finite: bool = True) -> list[tuple[str, sympy.Basic]]:
    d = mf.derive(net)
    out = [(f"{label} rule {r.lhs}", sympy.Eq(r.lhs, r.rhs)) for r in d.rules]
    for name in ("P", "alpha", "kappa1", "kappa2") + (FINITE if finite else ()):
        out.append((f"{label} {name}", getattr(d, name)))
    out += [(f"{label} leading {k}", v) for k, v in d.leading.items()]
    return out


def _structured(net: mf.Network, label: str) -> list[tuple[str, sympy.Basic]]:
    # the statistics in the order-parameter symbols, as derivations/*.md print them
    st = documents._structure(mf.derive(net))
    return [(f"{label} structure {k}", v) for k, v in st.items() if isinstance(v, sympy.Basic)]


# every placement for ReLU (closed forms) and tanh (no closed form: expectations and sphere expectations)
CASES = [(act, placement) for act in ("relu", "tanh") for placement, _ in documents.PLACEMENTS]
CASES += [("erf", "none"), ("erf", "batch:2"), ("linear", "batch:2"), ("gelu", "batch:last")]


@pytest.mark.parametrize("act, placement", CASES)
def test_derived_networks_read_back(act, placement):
    norms = () if placement == "none" else (parse_norm(placement),)
    net = mf.Network(3, act, SW, SB, norms=norms)
    pairs = derivation_expressions(net, f"{act}/{placement}") + _structured(net, f"{act}/{placement}")
    assert len(pairs) > 20
    failures = check_all(pairs)
    assert not failures, "\n".join(failures)


@settings(max_examples=5)
@given(net=strategies.networks(max_depth=3))
def test_drawn_networks_read_back(net):
    """Any drawn network, with its sigma's as given (floats become exact) and as the shared symbols. The
    finite-width closed forms of a depth-3 network run to 20 kB of LaTeX each, with exact rationals of 15-digit
    denominators from the drawn floats (half a minute to compare); they are read back for the placements above,
    here the rules, the kappa's and the leading order (which keeps an example near a second)."""
    pairs = derivation_expressions(net, "drawn", finite=False)
    pairs += derivation_expressions(net.with_(sigma_w2=SW, sigma_b2=SB), "drawn, symbolic sigma's", finite=False)
    failures = check_all(pairs)
    assert not failures, "\n".join(failures)


def _expectations() -> list[tuple[str, sympy.Basic]]:
    out = []
    a, b = order_symbol("qhat1", 2), order_symbol("q2", 1)
    customs = [mf.Activation.from_expr("x*tanh(x)"), mf.Activation.from_expr("exp(-x**2/2) + x/3")]
    catalogue = [mf.activation(n) for n in ("relu", "erf", "tanh", "gelu", "silu", "softplus", "sigmoid",
                                            "sin", "abs", "step", "linear")]
    catalogue += [mf.activation("leaky_relu", a=sympy.Rational(1, 5)), mf.activation("leaky_relu", a=0.25)]
    for f in catalogue + customs:
        for g in (f, f.derivative) if f.family not in ("step",) else (f,):
            out.append((f"E[{g.name}^2]", mf.second_moment(g, q)))
            out.append((f"I_{g.name}", mf.cross_moment(g, q1, q2)))
            out.append((f"unevaluated E[{g.name}^2]", GaussianExpectation.of(g, 2 * a + SB, 2 * a + SB)))
            out.append((f"unevaluated I_{g.name}", SW * GaussianExpectation.of(g, a, b / 3) + 1))
    T = sympy.Symbol("T", positive=True, integer=True)
    for f in (mf.activation("tanh"), mf.activation("tanh").derivative, mf.activation("erf"), customs[0]):
        for kind in ("second", "cross"):
            out.append((f"sphere {kind} {f.name}", SphereExpectation.of(f, T, kind) / T))
    return out


def test_expectations_read_back():
    pairs = _expectations()
    failures = check_all(pairs)
    assert not failures, "\n".join(failures)
    # structurally identical, not only equal: activation, family and arguments are recovered
    for label, expr in pairs:
        if expr.has(GaussianExpectation) and "x*" not in label and "exp(" not in label:
            assert _unlabelled(parse_latex(latex(expr))) == _unlabelled(expr), label


def test_unevaluated_expectations_have_the_same_value():
    """Not only the same structure: the parsed expectation integrates to the same number."""
    half = sympy.Rational(1, 2)
    for e in (GaussianExpectation.of(mf.activation("tanh").derivative, 3 * half, half),
              GaussianExpectation.of(mf.Activation.from_expr("x*tanh(x)"), 3 * half, 3 * half)):
        parsed = parse_latex(latex(e))
        assert isinstance(parsed, GaussianExpectation)
        # the same integrand and arguments: the same quadrature, so equal to its rounding
        assert abs(sympy.N(parsed, 15) - sympy.N(e, 15)) < 1e-13


def test_derivatives_print_as_primes():
    tanh_prime = mf.activation("tanh").derivative
    assert latex(GaussianExpectation.of(tanh_prime, q1, q2)) == r"I_{\tanh'}\left[q_{1}, q_{2}\right]"
    assert latex(GaussianExpectation.of(tanh_prime, q, q)).startswith(r"\mathbb{E}_{z}\left[\tanh'^{2}")
    erf_prime = mf.activation("erf").derivative
    assert latex(GaussianExpectation.of(erf_prime, q1, q2)).startswith(r"I_{\operatorname{erf}'}")
    d = mf.derive(mf.Network(2, "tanh", SW, SB))
    text = "".join(latex(r.rhs) for r in d.rules)
    assert r"\tanh'" in text and r"\mapsto" not in text
    # a custom expression that merely carries the label is not mislabelled
    fake = mf.Activation(name="tanh'", expr=X**2, family="custom")
    assert r"\mapsto" in latex(GaussianExpectation.of(fake, q1, q2))


def test_public_entry_points():
    e = SW * order_symbol("qhat1", 4) + SB
    tex = mf.latex(e)
    assert r"\sigma_{w}^{2}" in tex
    assert mf.latex.parse(tex) == e
    assert parse_latex("$" + tex + "$") == e
    assert parse_latex(r"\displaystyle " + tex) == e
    assert mf.latex.parse(r"\sigma_{w}^{2\,(3)} \alpha_{2}") == layer_symbol("sigma_w2", 3) * layer_symbol("alpha", 2)
    assert mf.latex.parse(r"\tilde{q}_{2}^{(12)} = 0") == sympy.Eq(order_symbol("qtilde2", 12), 0)
    # user symbols keep their assumptions when given
    y = sympy.Symbol("y", positive=True)
    assert parse_latex(mf.latex(sympy.sqrt(y**2)), symbols=[y]) == y


@pytest.mark.parametrize("bad", [r"\frac{1}{", r"\foo x", r"I_{\tanh}\left[q_{1}\right]", r"x + + )"])
def test_bad_latex_raises_invalid_argument(bad):
    with pytest.raises(mf.InvalidArgument, match="text"):
        parse_latex(bad)


def test_the_comparison_detects_a_wrong_expression():
    """The comparison can fail: a changed coefficient, argument or activation is not equal."""
    rng = random.Random(1)
    e = sympy.acos(SW / (SW + 1)) * SW + GaussianExpectation.of(mf.activation("tanh"), q1, q2)
    parsed = parse_latex(latex(e))
    assert equal(parsed, e, rng)
    assert not equal(parsed, e.subs(SW, SW + sympy.Rational(1, 10)), rng)
    assert not equal(parsed, e.xreplace({q2: q2 / 2}), rng)
    other = e - GaussianExpectation.of(mf.activation("tanh"), q1, q2) + GaussianExpectation.of(
        mf.activation("tanh").derivative, q1, q2)
    assert not equal(parsed, other, rng)


# derive(net).corrections with a hidden batch norm and another normalization (meanfield.finite.symbolic_chains), and
# the generic fallback: every statistic and every definition reads back, each named numeric atom by its LaTeX
# (parse_latex's symbols), compared with the atoms held as stand-in symbols
CORRECTIONS = [(3, "tanh", ("batch:2", "batch-center:last")), (3, "relu", ("batch:2", "batch:last")),
               (4, "tanh", ("batch-center:2", "batch:last")), (3, "tanh", ("batch:1", "batch:2")),
               (3, "relu", ("layer:1", "batch:2")), (4, "tanh", ("batch:1", "batch-center:3", "batch-center:last")),
               (4, "relu", ("layer:1", "batch:2", "batch:last")), (3, "tanh", ("batch:1", "batch:2", "numeric")),
               # a layer norm above a batch norm (s through it; tanh at sigma_w^2 = 2: a negative mean overlap under it)
               (3, "relu", ("batch:1", "layer:2")), (3, "tanh", ("batch:1", "layer:2")),
               (3, "tanh", ("batch-center:1", "layer:2")), (4, "relu", ("batch:1", "layer:2", "batch:3")),
               # a layer norm as the top hidden norm under a batch norm on the output (s through it)
               (3, "relu", ("batch:1", "layer:2", "batch-center:last")),
               (3, "tanh", ("batch-center:1", "layer:2", "batch:last"))]


@pytest.mark.parametrize("depth, act, norms", CORRECTIONS,
                         ids=lambda x: "+".join(x) if isinstance(x, tuple) else str(x))
def test_correction_placements_read_back(depth, act, norms, monkeypatch):
    from meanfield.finite import symbolic_normalized
    from meanfield.finite.symbolic_placements import NumericPart

    net = mf.derive(mf.Network(depth, act, 2, 0.1, outputs=2, norms=[n for n in norms if n != "numeric"])).network
    if "numeric" in norms:      # the generic fallback's form of a network with a structured placement
        monkeypatch.setattr(symbolic_normalized, "chain_placement_of", lambda net: "numeric")
    d = symbolic_normalized.derive_network_corrections.__wrapped__(net)
    atoms = set().union(*(sympy.sympify(e.rhs).atoms(NumericPart) for e in d.auxiliary))
    known = (*d.symbols, *(e.lhs for e in d.auxiliary), *atoms)
    stand_in = {a: sympy.Symbol(f"atom{i}") for i, a in enumerate(sorted(atoms, key=str))}
    pairs = [(k, getattr(d, k)) for k in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2")
             if getattr(d, k) is not None] + [(str(e.lhs), e) for e in d.auxiliary]
    rng, failures = random.Random(0), []
    for label, expr in pairs:
        tex = latex(expr)
        back = parse_latex(tex, symbols=known)
        if not equal(back.xreplace(stand_in), sympy.sympify(expr).xreplace(stand_in), rng):
            failures.append(f"{label}: parsed {str(back)[:200]}\n    {tex[:300]}")
    assert (d.placement == "numeric") == ("numeric" in norms)
    assert len(pairs) > 6 and atoms and not failures, "\n".join(failures)
