"""Signal propagation: symbolic fixed points with their conditions, c* found (not assumed), exact chi_1, depth
scales, the order-to-chaos line, vectorised grids, and Price's theorem for derivatives of Gaussian expectations.
"""

import math

import numpy as np
import pytest
import scipy.optimize
import sympy
from hypothesis import given, strategies as st

import meanfield as mf
from meanfield.errors import InvalidArgument
from meanfield.integrals.gaussian import cross_moment, second_moment
from meanfield.integrals.symbolic import GaussianExpectation
from meanfield.spec.activations import activation
from meanfield.theory.signal import CriticalLine, critical_line, sigma_w2_critical, signal_propagation

SW, SB = sympy.symbols("sigma_w2 sigma_b2", positive=True)
RELU, TANH, ERF = activation("relu"), activation("tanh"), activation("erf")


# -- numbers: known results --------------------------------------------------------------------------------------


def test_relu_by_hand():
    # q* = sigma_b^2 / (1 - sigma_w^2/2); chi_1 = sigma_w^2/2; c-map at c = 0: (sigma_w^2 q*/(2 pi) + sigma_b^2)/q*
    sp = signal_propagation("relu", 1.2, 0.3)
    q = 0.3 / (1 - 0.6)
    assert sp.q_star == pytest.approx(q, rel=1e-12)
    assert sp.chi1 == pytest.approx(0.6, rel=1e-14)
    assert float(sp.correlation_map(0.0)) == pytest.approx((1.2 * q / (2 * math.pi) + 0.3) / q, rel=1e-12)
    assert sp.phase == "ordered" and sp.c_star == 1
    assert sp.xi_q == pytest.approx(-1 / math.log(0.6), rel=1e-12)   # the length map's slope is 0.6, exactly
    assert sp.xi_c == pytest.approx(-1 / math.log(0.6), rel=1e-12)


@given(st.floats(0.05, 1.95), st.floats(0.0, 3.0))
def test_relu_fixed_point_on_a_grid(sw, sb):
    grid = signal_propagation("relu", np.array([sw, sw / 2]), sb)
    assert np.allclose(grid.q_star, [sb / (1 - sw / 2), sb / (1 - sw / 4)], rtol=1e-12, atol=1e-300)
    assert np.allclose(grid.chi1, [sw / 2, sw / 4], rtol=1e-14)


def test_relu_divergent_beyond_sigma_w2_2():
    for sb in (0.2, 0.0):
        sp = signal_propagation("relu", 3.0, sb)
        assert sp.phase == "divergent" and sp.q_star == math.inf and sp.chi1 is None
    grid = signal_propagation("relu", np.array([1.0, 3.0]), 0.2)
    assert grid.phase.tolist() == ["ordered", "divergent"]
    assert np.isinf(grid.q_star[1]) and grid.chi1.mask.tolist() == [False, True]


def test_tanh_chaotic_c_star_solves_the_correlation_map():
    sp = signal_propagation("tanh", 2.5, 0.01)
    assert sp.phase == "chaotic" and sp.chi1 > 1
    q = sp.q_star
    assert 2.5 * float(second_moment(TANH, q)) + 0.01 == pytest.approx(q, rel=1e-13)

    def g(c):
        return (2.5 * float(cross_moment(TANH, q, c * q)) + 0.01) / q - c

    # the other root of the correlation map, by an independent root finder on a bracket found by hand
    assert g(0.0) > 0 > g(0.9)
    direct = scipy.optimize.brentq(g, 0.0, 0.9, xtol=1e-16, rtol=1e-15)
    assert sp.c_star == pytest.approx(direct, abs=1e-13)
    assert 0 < sp.chi_c < 1
    assert sp.chi_c == pytest.approx(2.5 * float(cross_moment(TANH.derivative, q, direct * q)), rel=1e-12)
    assert math.isfinite(sp.xi_c) and sp.xi_c == pytest.approx(-1 / math.log(sp.chi_c), rel=1e-12)
    assert math.isfinite(sp.xi_q) and sp.xi_q > 0


def test_grid_agrees_with_mpmath():
    # the vectorised float path against the scalar mpmath path (bisection + iteration at 25 digits)
    w, b = np.array([0.8, 2.6, 3.5]), np.array([0.05, 0.1, 0.05])
    grid = signal_propagation("erf", w, b)
    assert grid.phase.tolist() == ["ordered", "chaotic", "chaotic"]
    for i in range(3):
        ref = signal_propagation("erf", float(w[i]), float(b[i]), dps=25)
        for name in ("q_star", "c_star", "chi1", "chi_c", "xi_c"):
            assert getattr(grid, name)[i] == pytest.approx(float(getattr(ref, name)), rel=1e-11), name
        assert grid.slope_q[i] == pytest.approx(float(ref.slope_q), rel=1e-7)   # mpmath side: finite difference


def test_tanh_zero_bias_fixed_points():
    below = signal_propagation("tanh", 0.5, 0.0)
    assert below.q_star == 0 and below.c_star == 1 and below.chi1 == pytest.approx(0.5, rel=1e-14)
    assert signal_propagation("tanh", 1.0, 0.0).phase == "critical"
    above = signal_propagation("tanh", 1.5, 0.0)
    assert above.q_star > 0 and above.phase == "chaotic" and above.c_star == 0   # odd phi, no bias: c* = 0


def test_erf_chi1_closed_form():
    sp = signal_propagation("erf", SW, SB)
    q = sympy.Symbol("q^*", nonnegative=True)
    assert sympy.simplify(sp.chi1 - 4 * SW / (sympy.pi * sympy.sqrt(1 + 4 * q))) == 0
    for w, b in [(0.9, 0.1), (2.0, 0.4)]:
        num = signal_propagation("erf", w, b)
        assert num.chi1 == pytest.approx(4 * w / (math.pi * math.sqrt(1 + 4 * num.q_star)), rel=1e-14)


# -- symbolic ------------------------------------------------------------------------------------------------------


def test_relu_symbolic_fixed_point_with_its_condition():
    sp = signal_propagation("relu", SW, SB)
    assert isinstance(sp.q_star, sympy.Piecewise)
    (finite, cond), (rest, _) = sp.q_star.args
    assert sympy.simplify(finite - SB / (1 - SW / 2)) == 0 and rest == sympy.oo
    assert sp.q_star.subs({SW: 3, SB: sympy.Rational(1, 5)}) == sympy.oo   # not -1/5
    assert sp.q_star.subs({SW: 1, SB: sympy.Rational(1, 5)}) == sympy.Rational(2, 5)
    assert sp.conditions.subs(SW, 3) is sympy.false and sp.conditions.subs(SW, 1) is sympy.true
    assert sp.chi1 == SW / 2 and sp.c_star == 1
    eq = sp.equations["q*"]
    assert isinstance(eq, sympy.Eq)
    assert sympy.simplify(eq.rhs.subs(eq.lhs, finite) - finite) == 0   # the closed form solves the equation


def test_relu_zero_bias_marginal_line():
    sb0 = signal_propagation("relu", SW, 0)
    assert sb0.q_star.subs(SW, 1) == 0 and sb0.q_star.subs(SW, 2) == 1 and sb0.q_star.subs(SW, 3) == sympy.oo


def test_linear_chi1_is_exact():
    sp = signal_propagation("linear", SW, SB)
    assert sp.chi1 == SW and not sp.chi1.atoms(sympy.Float)
    assert sympy.simplify(sp.q_star.args[0][0] - SB / (1 - SW)) == 0


def test_tanh_symbolic_returns_the_unsolved_equation():
    sp = signal_propagation("tanh", SW, SB)
    qs = sympy.Symbol("q^*", nonnegative=True)
    assert sp.q_star == qs
    eq = sp.equations["q*"]
    assert eq.lhs == qs and eq.rhs.free_symbols == {qs, SW, SB}
    assert sp.chi1.free_symbols == {qs, SW}   # no stray q
    assert isinstance(sp.c_star, sympy.Piecewise) and "c*" in sp.equations
    # solving the printed equation numerically gives the numeric result
    values = {SW: sympy.Rational(3, 2), SB: sympy.Rational(1, 10)}
    num = signal_propagation("tanh", 1.5, 0.1)
    residual = (eq.rhs - eq.lhs).subs(values).subs(qs, num.q_star).evalf(20)
    assert abs(float(residual)) < 1e-13
    assert float(sp.chi1.subs(values).subs(qs, num.q_star).evalf(20)) == pytest.approx(num.chi1, rel=1e-13)
    # the length-map slope: Price's theorem symbolically, E[u phi phi'] / q numerically
    assert float(sp.slope_q.subs(values).subs(qs, num.q_star).evalf(20)) == pytest.approx(num.slope_q, rel=1e-11)


# -- the order-to-chaos line ---------------------------------------------------------------------------------------


def _critical_by_bisection(name, sb):
    """sigma_w^2 with chi_1 = 1, by bisection on chi_1(sigma_w^2) through signal_propagation."""
    lo, hi = 0.5, 4.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if signal_propagation(name, mid, sb).chi1 < 1 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("sb", [0.01, 0.05, 0.2])
def test_tanh_critical_line_against_numeric(sb):
    assert sigma_w2_critical("tanh", sb) == pytest.approx(_critical_by_bisection("tanh", sb), abs=1e-8)


def test_critical_line_closed_forms():
    assert sigma_w2_critical("relu", SB) == 2
    assert critical_line("erf").sigma_w2 == sympy.pi * sympy.sqrt(4 * critical_line("erf").q + 1) / 4
    assert isinstance(sigma_w2_critical("tanh", SB), CriticalLine)
    assert np.allclose(sigma_w2_critical("relu", [0.0, 1.0]), 2.0)
    assert sigma_w2_critical("erf", 0.0) == pytest.approx(math.pi / 4, rel=1e-14)
    line = critical_line("tanh")
    assert float(line.sigma_w2.subs(line.q, 0).doit()) == 1.0


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, kwargs, name", [
    (("relu", 0.0, 0.1), {}, "sigma_w2"),
    (("relu", -1.0, 0.1), {}, "sigma_w2"),
    (("relu", 1.0, -0.1), {}, "sigma_b2"),
    (("relu", float("nan"), 0.1), {}, "sigma_w2"),
    (("relu", [1.0, -2.0], 0.1), {}, "sigma_w2"),
    (("relu", [1.0, 2.0], [0.1, 0.2, 0.3]), {}, "sigma_b2"),
    (("relu", [1.0, 2.0], 0.1), {"dps": 20}, "dps"),
    (("nope", 1.0, 0.1), {}, "activation"),
    ((3, 1.0, 0.1), {}, "activation"),
    (("step", 1.0, 0.1), {}, "activation"),   # step' is a Dirac delta: chi_1 is infinite
])
def test_bad_input(args, kwargs, name):
    with pytest.raises(InvalidArgument, match=name):
        signal_propagation(*args, **kwargs)


def test_bad_input_critical_line():
    with pytest.raises(InvalidArgument, match="sigma_b2"):
        sigma_w2_critical("tanh", -0.1)
    with pytest.raises(InvalidArgument, match="activation"):
        critical_line(None)


# -- Price's theorem -----------------------------------------------------------------------------------------------

Q, Q2 = sympy.symbols("q q2", positive=True)
AT = {Q: 0.9, Q2: 0.3}


def _value(expr, **shift):
    """expr at AT (+ shifts), in float64 through lambdify (the vectorised quadrature, ~1e-14 relative)."""
    point = {k: v + shift.get(str(k), 0.0) for k, v in AT.items()}
    return float(sympy.lambdify([Q, Q2], expr, "numpy")(point[Q], point[Q2]))


def _fd(expr, var, h=1e-4):
    """Central difference: truncation h^2 |f'''| / 6 ~ 1e-9, rounding ~1e-14 / h ~ 1e-10."""
    return (_value(expr, **{str(var): h}) - _value(expr, **{str(var): -h})) / (2 * h)


@pytest.mark.parametrize("name", ["tanh", "erf", "gelu"])
def test_price_theorem_against_finite_differences(name):
    f = activation(name)
    second = GaussianExpectation.of(f, Q, Q)
    d = sympy.diff(second, Q)
    assert not d.has(sympy.Derivative)
    assert _value(d) == pytest.approx(_fd(second, Q), abs=1e-8)
    cross = GaussianExpectation.of(f, Q, Q2)
    for var in (Q, Q2):
        d = sympy.diff(cross, var)
        assert not d.has(sympy.Derivative)
        assert _value(d) == pytest.approx(_fd(cross, var), abs=1e-8)


def test_price_theorem_against_closed_forms():
    # erf: the Gaussian-expectation derivative equals the derivative of the closed form
    vals = {Q: sympy.Rational(7, 10), Q2: sympy.Rational(1, 5)}
    closed = 2 * sympy.asin(2 * Q2 / (1 + 2 * Q)) / sympy.pi
    d2 = sympy.diff(GaussianExpectation.of(ERF, Q, Q2), Q2)   # I_erf', closed form on doit()
    assert float(d2.subs(vals).doit()) == pytest.approx(float(sympy.diff(closed, Q2).subs(vals)), rel=1e-13)
    d1 = sympy.diff(GaussianExpectation.of(ERF, Q, Q2), Q)    # (I_{erf+erf''} - I_{erf-erf''})/4: quadrature
    assert float(sympy.lambdify([Q, Q2], d1, "numpy")(0.7, 0.2)) == pytest.approx(
        float(sympy.diff(closed, Q).subs(vals)), rel=1e-11)
    # relu'' is a delta: the q1 derivative comes from the arc-cosine closed form; the q2 one is I_step
    relu = GaussianExpectation.of(RELU, Q, Q2)
    arccos = (sympy.sqrt(Q**2 - Q2**2) + Q2 * (sympy.pi - sympy.acos(Q2 / Q))) / (2 * sympy.pi)
    d1 = sympy.diff(relu, Q)
    assert not d1.has(GaussianExpectation) and sympy.simplify(d1 - sympy.diff(arccos, Q)) == 0
    assert _value(d1) == pytest.approx(_fd(relu, Q), abs=1e-8)
    d2 = sympy.diff(relu, Q2)
    assert float(d2.subs(vals).doit()) == pytest.approx(
        float(((sympy.pi - sympy.acos(Q2 / Q)) / (2 * sympy.pi)).subs(vals)), rel=1e-13)
    assert sympy.diff(GaussianExpectation.of(RELU, Q, Q), Q) == sympy.Rational(1, 2)
    # step' is a delta too: d/dq2 I_step from its closed form, (pi - arccos(q2/q1)) / (2 pi)
    step = GaussianExpectation.of(activation("step"), Q, Q2)
    assert sympy.simplify(sympy.diff(step, Q2) - sympy.diff((sympy.pi - sympy.acos(Q2 / Q)) / (2 * sympy.pi), Q2)) == 0


def test_price_theorem_for_a_parameter():
    # d/da I_f = 2 E[d_a f(u) f(v)]; leaky_relu against the derivative of its closed form
    a = sympy.Symbol("a", positive=True)
    e = GaussianExpectation.of(activation("leaky_relu", a=a), Q, Q2)
    d = sympy.diff(e, a)
    assert not d.has(sympy.Derivative)
    closed = (1 - a) ** 2 * (sympy.sqrt(Q**2 - Q2**2) + Q2 * (sympy.pi - sympy.acos(Q2 / Q))) / (2 * sympy.pi) + a * Q2
    at = sympy.Rational(1, 5)
    assert _value(d.subs(a, at)) == pytest.approx(float(sympy.diff(closed, a).subs(a, at).subs(AT)), abs=1e-12)


def test_diff_of_a_derived_statistic():
    net = mf.Network(2, "tanh", SW, sympy.Rational(1, 10))
    kappa1 = mf.derive(net).kappa1
    d = sympy.diff(kappa1, SW)
    assert not d.has(sympy.Derivative)
    value, k, h = sympy.lambdify(SW, d, "numpy"), sympy.lambdify(SW, kappa1, "numpy"), 1e-4
    assert float(value(1.3)) == pytest.approx((float(k(1.3 + h)) - float(k(1.3 - h))) / (2 * h), abs=1e-8)
