"""The activation catalogue: names, errors, user expressions, derivatives, kinks, numeric callables."""

import warnings

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import meanfield as mf
from meanfield.spec.activations import X, Activation, activation, catalogue

REQUIRED = ["relu", "leaky_relu", "abs", "linear", "step", "tanh", "erf", "sigmoid", "softplus", "gelu",
            "silu", "swish", "sin", "cos"]
NAMES = sorted(catalogue())


def test_catalogue_has_the_required_entries():
    names = catalogue()
    for name in REQUIRED:
        assert name in names
        f = activation(name)
        assert isinstance(f, Activation) and isinstance(f.expr, sympy.Expr)
        assert f.expr.free_symbols <= {X}
    assert activation("swish") == activation("silu")
    assert activation("GELU").family == "gelu"  # case and dashes do not matter


def test_unknown_name_lists_valid_names_and_closest():
    with pytest.raises(mf.InvalidArgument) as err:
        activation("rleu")
    message = str(err.value)
    assert err.value.argument == "activation"
    assert "did you mean 'relu'" in message
    for name in ("tanh", "gelu", "softplus"):
        assert name in message
    with pytest.raises(mf.InvalidArgument):
        activation("leaky_relu", slope=0.1)  # unknown parameter
    with pytest.raises(mf.InvalidArgument):
        activation("leaky_relu", a=float("nan"))
    with pytest.raises(mf.InvalidArgument):
        activation(3)


def test_from_expr_accepts_functions_of_one_real_variable():
    f = Activation.from_expr("x*tanh(x)")
    assert f.expr == X * sympy.tanh(X) and f.family == "custom" and f.smooth
    assert Activation.from_expr("t**2").expr == X**2  # any single symbol is the variable
    assert Activation.from_expr(sympy.sin(sympy.Symbol("y")) + 1).expr == sympy.sin(X) + 1
    assert Activation.from_expr("a*x", a=0.5).expr == 0.5 * X
    assert float(Activation.from_expr("x**3")(2.0)) == 8.0


@pytest.mark.parametrize("bad", ["x*y", "sqrt(x)", "1/x", "log(x)", "x > 0", "x+*", "", 3.5])
def test_from_expr_rejects(bad):
    with pytest.raises(mf.InvalidArgument) as err:
        Activation.from_expr(bad)
    assert err.value.argument == "expr"


def test_derivatives():
    assert activation("relu").derivative.family == "step"
    assert activation("erf").derivative.family == "erf_prime"
    assert activation("linear").derivative.family == "constant"
    assert activation("leaky_relu", a=0.2).derivative.params == (("a", sympy.Float(0.2)),)
    assert activation("sigmoid").derivative.family == "sigmoid_prime"
    assert activation("softplus").derivative.family == "sigmoid"
    custom = Activation.from_expr("x*Heaviside(x)")  # x delta(x) = 0: a relu written by hand
    assert sympy.simplify(custom.derivative.expr - sympy.Heaviside(X)) == 0
    with pytest.raises(mf.InvalidArgument):
        _ = activation("step").derivative.derivative  # a Dirac delta is not a function


@pytest.mark.parametrize("name", [n for n in NAMES if activation(n).smooth])
def test_derivative_matches_finite_differences(name):
    f = activation(name)
    x = np.array([-2.3, -0.4, 0.0, 0.7, 3.1])
    h = 1e-6
    numeric = (f(x + h) - f(x - h)) / (2 * h)
    np.testing.assert_allclose(f.derivative(x), numeric, rtol=1e-6, atol=1e-8)


def test_kinks():
    assert activation("relu").kinks == (0.0,)
    assert activation("abs").kinks == (0.0,)
    assert activation("leaky_relu").kinks == (0.0,)
    assert activation("step").kinks == (0.0,)
    assert activation("tanh").kinks == () and activation("tanh").smooth
    assert activation("gelu").kinks == ()
    assert Activation.from_expr("Max(x, 1)").kinks == (1.0,)
    assert Activation.from_expr("x*Abs(x - 1) + Heaviside(x + 2)").kinks == (-2.0, 1.0)


@settings(max_examples=40)
@given(name=st.sampled_from(NAMES), x=st.floats(-60, 60))
def test_numpy_and_mpmath_callables_agree(name, x):
    f = activation(name)
    if name in ("step", "heaviside", "sign", "leaky_step") and x == 0:
        x = 0.25  # the value at a jump is a convention, not a function value to compare
    value = float(f(np.float64(x)))
    with mpmath.workdps(30):
        ref = float(f.mp(mpmath.mpf(x)))
    assert value == pytest.approx(ref, rel=1e-13, abs=1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_overflow_safety(name):
    f = activation(name)
    x = np.array([-1e4, -800.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = f(x)
        yd = f.derivative(x) if name not in ("step", "heaviside", "sign", "leaky_step") else y
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(yd))
    assert np.isfinite(float(f(1e4)))


def test_symbolic_parameters():
    a = sympy.Symbol("a", positive=True)
    f = activation("leaky_relu", a=a)
    assert f.is_symbolic
    with pytest.raises(mf.InvalidArgument):
        f(1.0)
    assert not activation("leaky_relu", a=0.1).is_symbolic


def test_display():
    f = activation("gelu")
    assert str(f) == "gelu"
    assert f._repr_latex_().startswith("$\\phi(x) =")
    assert mf.latex(f) == sympy.latex(f.expr)


def test_gelu_left_tail_keeps_its_precision():
    # x Phi(x) written as x (1 + erf(x / sqrt 2)) / 2 loses ~5 digits at x = -5 and all at x = -30 (both backends)
    f = activation("gelu")
    for x in (-5.0, -30.0):
        with mpmath.workdps(60):
            exact = float(mpmath.mpf(x) * mpmath.ncdf(x))
        assert float(f(np.float64(x))) == pytest.approx(exact, rel=1e-13)
        assert float(f.mp(mpmath.mpf(x))) == pytest.approx(exact, rel=1e-13)
