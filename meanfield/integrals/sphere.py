"""Expectations under the sphere law of a batch-normalised unit: E_S[g(u_a)^2] and E_S[g(u_a) g(u_b)].

A unit normalised by batch norm over T samples (mean and variance, population variance, no epsilon)
is the vector u = sqrt(T) y with y uniform on the unit sphere of the (T - 1)-dimensional subspace
orthogonal to 1 = (1, ..., 1): the pre-normalisation unit is Gaussian with an exchangeable
covariance, whose restriction to that subspace is isotropic. Its coordinates are not Gaussian:

* one coordinate: u_a = sqrt(T - 1) y_1, y_1 in [-1, 1] with density prop. to (1 - y_1^2)^((T-4)/2)
  (y_1^2 ~ Beta(1/2, (T - 2)/2)); E_S[u_a^2] = 1;
* two coordinates a != b: u_a = sqrt(T - 1) y_1, u_b = sqrt(T - 1) (c y_1 + sqrt(1 - c^2) y_2),
  c = -1/(T - 1), with (y_1, y_2) in the unit disk of density prop. to (1 - y_1^2 - y_2^2)^((T-5)/2);
  writing y_2 = sqrt(1 - y_1^2) w, w has density prop. to (1 - w^2)^((T-5)/2), independent of y_1.
  E_S[u_a u_b] = -1/(T - 1).

For a positively homogeneous g of degree k (g(lambda x) = lambda^k g(x), lambda > 0: relu, abs,
linear, leaky relu with k = 1; step, sign with k = 0) the sphere expectation is a Gaussian one
exactly, because a Gaussian vector G ~ N(0, Pi) is |G| y with |G|^2 ~ chi^2_{T-1} independent of y:

    E_S[g(u_a) g(u_b)] = (T-1)^k Gamma((T-1)/2) / (2^k Gamma((T-1)/2 + k)) * I_g[1, -1/(T-1)],

and the same factor times E[g(z)^2] for E_S[g(u_a)^2]. For k = 0 and k = 1 the factor is 1: the
sphere law is then *exactly* the Gaussian law with q_1 = 1, q_2 = -1/(T-1). Other functions (tanh,
erf, GELU, ...) differ at O(1/T); they are integrated against the Beta densities above: Gauss-Jacobi
quadrature on the fast path (exact for polynomials times the weight, spectrally accurate for smooth
g), mpmath quadrature at a chosen precision, and an unevaluated sympy ``Integral`` symbolically.

The same signatures as :mod:`meanfield.integrals`: floats in -> float out, ``dps=int`` -> mpmath,
a symbolic T (or a symbolic activation) -> sympy.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import mpmath
import numpy as np
import sympy
from scipy.special import roots_jacobi, roots_legendre

from ..spec.activations import X, Activation
from ..errors import InvalidArgument, check_int

__all__ = ["sphere_second_moment", "sphere_cross_moment", "homogeneity_degree", "times_x", "chi2_inverse_moment",
           "expected_max_inverse_chi2", "SphereExpectation"]

_NODES = 96  # Gauss-Jacobi nodes per dimension: smooth catalogue activations converge to ~1e-14


# -- helpers ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _degree(expr: sympy.Expr) -> sympy.Expr | None:
    """k with expr(l x) = l^k expr(x) for all l > 0 and real x, or None.

    Decided numerically at 40 digits on fixed probe points (both signs, several scales) and two
    values of l; a non-homogeneous analytic or piecewise-analytic function cannot pass by accident
    at this precision. k must be a small rational (0, 1, 2, 1/2, ...).
    """
    if expr.free_symbols - {X}:
        return None
    f = sympy.lambdify(X, expr, modules=[{"Heaviside": lambda x, h0=0.5: mpmath.mpf(0.5 if h0 is None else h0)
                                           if x == 0 else (mpmath.mpf(1) if x > 0 else mpmath.mpf(0))}, "mpmath"])
    probes = ["0.37", "-1.3", "2.2", "-0.05", "5.75", "-3.1", "0.011", "-17.5", "41.0"]
    with mpmath.workdps(40):
        try:
            base = [(mpmath.mpf(p), mpmath.mpf(f(mpmath.mpf(p)))) for p in probes]
        except Exception:  # noqa: BLE001 - complex or undefined somewhere: not homogeneous
            return None
        k_found = None
        for lam in (mpmath.mpf("2.5"), mpmath.mpf("0.3")):
            for x0, g0 in base:
                g1 = mpmath.mpf(f(lam * x0))
                if g0 == 0:
                    if abs(g1) > mpmath.mpf(10) ** -30:
                        return None
                    continue
                ratio = g1 / g0
                if ratio <= 0:
                    return None
                k = mpmath.log(ratio) / mpmath.log(lam)
                if k_found is None:
                    k_found = k
                elif abs(k - k_found) > mpmath.mpf(10) ** -25:
                    return None
        if k_found is None:  # identically zero on the probes
            return sympy.S.Zero
        k = sympy.nsimplify(float(k_found), rational=True, tolerance=1e-12)
        if abs(float(k) - float(k_found)) > 1e-20 or k < 0 or k.q > 8:
            return None
    return k


def homogeneity_degree(g: Activation) -> sympy.Expr | None:
    """k if g is positively homogeneous of degree k (g(l x) = l^k g(x) for l > 0), else None.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> homogeneity_degree(activation("relu")), homogeneity_degree(activation("step"))
        (1, 0)
        >>> homogeneity_degree(activation("tanh")) is None
        True
    """
    return _degree(g.expr)


@functools.lru_cache(maxsize=512)
def _times_x(expr: sympy.Expr, name: str) -> Activation:
    return Activation(name=f"x*{name}", expr=sympy.expand(X * expr) if expr.is_polynomial(X) else X * expr,
                      family="custom")


def times_x(g: Activation) -> Activation:
    """x g(x) as an Activation (used for the variance path of batch norm: E[phi'(u)^2 u^2]).

    For a positively homogeneous phi of degree 1, x phi'(x) = phi(x) (Euler), and this returns phi's
    own catalogue entry when the caller passes it; otherwise a custom Activation.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> times_x(activation("tanh")).expr
        x*tanh(x)
    """
    return _times_x(g.expr, g.name)


def _homogeneous_factor(k: Any, T: Any, symbolic: bool, dps: int | None) -> Any:
    """(T-1)^k Gamma((T-1)/2) / (2^k Gamma((T-1)/2 + k)): sphere / Gaussian for degree-k g^2 pairs."""
    if k == 0 or k == 1:
        return sympy.S.One if symbolic else (mpmath.mpf(1) if dps else 1.0)
    if symbolic:
        n = sympy.sympify(T) - 1
        return n**k * sympy.gamma(n / 2) / (2**k * sympy.gamma(n / 2 + k))
    if dps:
        n = mpmath.mpf(T) - 1
        k = mpmath.mpf(sympy.sympify(k).evalf(dps + 5))
        return n**k * mpmath.gamma(n / 2) / (2**k * mpmath.gamma(n / 2 + k))
    n = float(T) - 1
    k = float(k)
    return math.exp(k * math.log(n) + math.lgamma(n / 2) - k * math.log(2) - math.lgamma(n / 2 + k))


def _out(value: Any, symbolic: bool, dps: int | None) -> Any:
    if symbolic or dps:
        return value
    return float(value)


def _check_T(T: Any, minimum: int) -> None:
    if isinstance(T, sympy.Basic) and not T.is_number:
        return
    if isinstance(T, bool) or int(T) != T or T < minimum:
        raise InvalidArgument("samples", T, f"an integer >= {minimum} for the sphere law of batch norm")


def _is_symbolic(g: Activation, T: Any) -> bool:
    return (isinstance(T, sympy.Basic) and not T.is_number) or g.is_symbolic


# -- public ---------------------------------------------------------------------------------------------


def sphere_second_moment(g: Activation, T: Any, *, dps: int | None = None, symbolic: bool | None = None) -> Any:
    """E_S[g(u_a)^2], u uniform on the sphere of radius sqrt(T) in the complement of 1 (T >= 2).

    Args:
        g: the function (an :class:`~meanfield.Activation`).
        T: the batch size; a sympy symbol gives a sympy expression.
        dps: mpmath precision (decimal digits) for an mpmath result.
        symbolic: force a sympy result (default: when T or g is symbolic).

    Returns:
        float, mpmath mpf, or sympy expression.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> sphere_second_moment(activation("relu"), 8)   # = E[relu(z)^2] exactly: relu is homogeneous
        0.5
        >>> round(sphere_second_moment(activation("linear"), 5), 12)
        1.0
        >>> x = sphere_second_moment(activation("tanh"), 16)
        >>> round(float(x), 6)
        0.406034
    """
    _check_T(T, 2)
    symbolic = _is_symbolic(g, T) if symbolic is None else symbolic
    k = homogeneity_degree(g)
    if k is not None:
        from .gaussian import second_moment
        one = sympy.S.One if symbolic else (mpmath.mpf(1) if dps else 1.0)
        base = second_moment(g, one, dps=dps) if not symbolic else second_moment(g, sympy.S.One)
        return _out(_homogeneous_factor(k, T, symbolic, dps) * base, symbolic, dps)
    if symbolic:
        return SphereExpectation.of(g, T, "second")
    if dps:
        return _mp_1d(g, int(T), dps, square=True)
    return float(_np_1d(g, int(T)))


def sphere_cross_moment(g: Activation, T: Any, *, dps: int | None = None, symbolic: bool | None = None) -> Any:
    """E_S[g(u_a) g(u_b)], a != b, u uniform on the sphere of radius sqrt(T) in the complement of 1.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> sphere_cross_moment(activation("linear"), 5)    # E[u_a u_b] = -1/(T-1)
        -0.25
        >>> sphere_cross_moment(activation("linear"), sympy.Symbol("T", positive=True))
        -1/(T - 1)
    """
    _check_T(T, 2)
    symbolic = _is_symbolic(g, T) if symbolic is None else symbolic
    k = homogeneity_degree(g)
    if k is not None:
        from .gaussian import cross_moment
        if symbolic:
            Ts = sympy.sympify(T)
            base = cross_moment(g, sympy.S.One, -1 / (Ts - 1))
        elif dps:
            with mpmath.workdps(dps):
                base = cross_moment(g, mpmath.mpf(1), -1 / (mpmath.mpf(T) - 1), dps=dps)
        else:
            base = cross_moment(g, 1.0, -1.0 / (float(T) - 1.0))
        return _out(_homogeneous_factor(k, T, symbolic, dps) * base, symbolic, dps)
    if symbolic:
        return SphereExpectation.of(g, T, "cross")
    if dps:
        return _mp_2d(g, int(T), dps)
    return float(_np_2d(g, int(T)))


def chi2_inverse_moment(T: Any, power: int, *, dps: int | None = None) -> Any:
    """E[(T / chi^2_{T-1})^power] for power 1 or 2: T/(T-3) and T^2/((T-3)(T-5)).

    The batch variance of a Gaussian unit is v chi^2_{T-1} / T; these are the moments of its inverse.
    Finite only for T > 3 (power 1) and T > 5 (power 2).

    Example:
        >>> chi2_inverse_moment(8, 1), chi2_inverse_moment(8, 2)
        (1.6, 4.266666666666667)
    """
    if power not in (1, 2):
        raise InvalidArgument("power", power, "1 or 2")
    symbolic = isinstance(T, sympy.Basic) and not T.is_number
    if not symbolic:
        need = 3 if power == 1 else 5
        if T <= need:
            raise InvalidArgument("samples", T, f"T > {need}",
                                  f"E[(T/chi^2_(T-1))^{power}] is infinite for T <= {need}")
    if symbolic:
        Ts = T
    elif dps:
        Ts = mpmath.mpf(T)
    else:
        Ts = float(T) if not isinstance(T, sympy.Basic) else sympy.sympify(T)
    if power == 1:
        return Ts / (Ts - 3)
    return Ts**2 / ((Ts - 3) * (Ts - 5))


def expected_max_inverse_chi2(T: int, count: int) -> float:
    """E[max_{k <= count} T / chi^2_{T-1,k}] for independent chi-squares (T > 3), by quadrature.

    The top eigenvalue of a full-batch-norm output layer scales with the largest of the C inverse batch
    variances: E[T / min_k chi^2_k] = T int f_min(y) dy / y, f_min = count f (1 - F)^(count-1). In
    s = log y, f_min(y) dy / y = f_min(e^s) ds is a smooth bell with exponential and doubly-exponential
    tails, so the trapezoidal rule on a wide uniform grid converges spectrally (checked against the
    exact T/(T-3) for count = 1).

    Example:
        >>> round(expected_max_inverse_chi2(8, 1), 10)   # = T/(T-3)
        1.6
    """
    from scipy.special import gammaincc

    T = check_int("samples", T, minimum=1)
    count = check_int("count", count, minimum=1)
    if T <= 3:
        raise InvalidArgument("samples", T, "T > 3", "E[T/chi^2_(T-1)] is infinite for T <= 3")
    n = T - 1
    k = n / 2
    centre = math.log(n)
    # y^(k-1) e^(-y/2) decays like e^{s (k-1)} below and e^{-e^s/2} above; k - 1 >= 1/2 since T >= 4
    width = math.sqrt(2.0 / n)  # of the bell's core in s
    s = np.linspace(centre - max(45.0 / (k - 1), 15 * width), centre + math.log1p(max(15 * width, 120.0 / n)),
                    4001)
    y = np.exp(s)
    d = s - centre
    # the chi^2_n density up to its constant, relative to y = n (no cancellation at large n); the constant
    # cancels against the normalisation int f(y) dy = int f(e^s) e^s ds = 1 computed on the same grid
    with np.errstate(divide="ignore", under="ignore"):
        log = (k - 1) * d - n * np.expm1(d) / 2
        g = np.exp(log)
        weight = np.exp(log + (count - 1) * np.log(gammaincc(k, n * np.exp(d) / 2))) if count > 1 else g
    norm = np.trapezoid(g * np.exp(d), s)  # = int f(e^s) e^s ds / (n * const)
    return float(T / n * count * np.trapezoid(weight, s) / norm)


# -- numeric quadrature (numpy) --------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _jacobi(n: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    x, w = roots_jacobi(n, a, a)
    return x, w / w.sum()


def _outer_rule(T: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes y_1 and probability weights of one coordinate / sqrt(T-1)."""
    if T == 2:
        return np.array([-1.0, 1.0]), np.array([0.5, 0.5])
    return _jacobi(_NODES, (T - 4) / 2)


def _inner_rule(T: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes w and weights of y_2 / sqrt(1 - y_1^2) given y_1 (T >= 3)."""
    if T == 3:
        return np.array([-1.0, 1.0]), np.array([0.5, 0.5])
    return _jacobi(_NODES, (T - 5) / 2)


def _kinked(g: Activation) -> bool:
    k = g.kinks
    return k is None or len(k) > 0


def _np_1d(g: Activation, T: int) -> float:
    if _kinked(g) and T > 2:
        return _np_1d_split(g, T)
    y, w = _outer_rule(T)
    vals = np.asarray(g(np.sqrt(T - 1.0) * y), dtype=float)
    return float(np.dot(w, vals**2))


def _np_2d(g: Activation, T: int) -> float:
    if T == 2:  # u_b = -u_a = -+1
        return float(g(np.float64(1.0)) * g(np.float64(-1.0)))
    if _kinked(g):
        return _np_2d_split(g, T)
    y1, w1 = _outer_rule(T)
    w, ww = _inner_rule(T)
    c = -1.0 / (T - 1.0)
    s = math.sqrt(1.0 - c * c)
    r = math.sqrt(T - 1.0)
    Y1 = y1[:, None]
    Y2 = np.sqrt(np.clip(1.0 - y1 * y1, 0.0, None))[:, None] * w[None, :]  # 1 - y^2 >= 0 at nodes
    ga = np.asarray(g(r * y1), dtype=float)
    gb = np.asarray(g(r * (c * Y1 + s * Y2)), dtype=float)
    return float(np.dot(w1, ga * (gb @ ww)))


# Kinked, non-homogeneous g (custom expressions only: the catalogue's kinked activations are all
# homogeneous): composite Gauss-Legendre in theta, y = sin(theta), split at the kinks, where the
# Jacobi weight becomes the smooth cos(theta)^(2a+1).


def _theta_rule(a: float, cuts: list[float], n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    x, w = roots_legendre(n)
    edges = sorted({-math.pi / 2, math.pi / 2, *[c for c in cuts if -math.pi / 2 < c < math.pi / 2]})
    nodes, weights = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        t = (hi - lo) / 2 * x + (hi + lo) / 2
        nodes.append(t)
        weights.append((hi - lo) / 2 * w * np.cos(t) ** (2 * a + 1))
    t = np.concatenate(nodes)
    wt = np.concatenate(weights)
    return t, wt / wt.sum()


def _scale_cuts(T: int) -> list[float]:
    # concentrate nodes where the weight lives (|y| ~ 1/sqrt(T)) for large T
    return [s * math.asin(min(1.0, m / math.sqrt(T))) for m in (1.0, 3.0, 6.0) for s in (-1, 1)]


def _np_1d_split(g: Activation, T: int) -> float:
    r = math.sqrt(T - 1.0)
    kinks = g.kinks or ()
    cuts = [math.asin(k / r) for k in kinks if abs(k) < r] + _scale_cuts(T)
    t, w = _theta_rule((T - 4) / 2, cuts)
    vals = np.asarray(g(r * np.sin(t)), dtype=float)
    return float(np.dot(w, vals**2))


def _induced_cuts(kinks, r: float, c: float, s: float) -> list[float]:
    """theta = asin(y) where a kink of the inner integrand reaches the end of its range (w = +-1):
    c y +- s sqrt(1 - y^2) = k / r, i.e. y = c kappa +- s sqrt(1 - kappa^2), kappa = k / r."""
    out = []
    for k in kinks:
        kappa = k / r
        if abs(kappa) < 1:
            for sign in (-1.0, 1.0):
                y = c * kappa + sign * s * math.sqrt(1 - kappa * kappa)
                if abs(y) < 1:
                    out.append(math.asin(y))
    return out


def _np_2d_split(g: Activation, T: int) -> float:
    r = math.sqrt(T - 1.0)
    c = -1.0 / (T - 1.0)
    s = math.sqrt(1.0 - c * c)
    kinks = g.kinks or ()
    cuts = [math.asin(k / r) for k in kinks if abs(k) < r] + _scale_cuts(T) + _induced_cuts(kinks, r, c, s)
    t1, w1 = _theta_rule((T - 4) / 2, cuts)
    y1 = np.sin(t1)
    ga = np.asarray(g(r * y1), dtype=float)
    inner = np.empty_like(y1)
    for i, y in enumerate(y1):
        rho = math.sqrt(max(1.0 - y * y, 0.0))
        if T == 3:
            wn, wt = np.array([-1.0, 1.0]), np.array([0.5, 0.5])
        else:
            # kinks of g(r (c y + s rho w)) in w
            inner_cuts = []
            for k in kinks:
                if rho > 0:
                    wk = (k / r - c * y) / (s * rho)
                    if abs(wk) < 1:
                        inner_cuts.append(math.asin(wk))
            tt, wt = _theta_rule((T - 5) / 2, inner_cuts + _scale_cuts(T))
            wn = np.sin(tt)
        gb = np.asarray(g(r * (c * y + s * rho * wn)), dtype=float)
        inner[i] = np.dot(wt, gb)
    return float(np.dot(w1, ga * inner))


# -- mpmath -------------------------------------------------------------------------------------------------
# Gauss-Jacobi rules at the working precision: the double-precision nodes of scipy polished by Newton's
# method on the Jacobi polynomial (three-term recurrence in mpmath), weights prop. to
# 1 / ((1 - x^2) P_n'(x)^2), normalised to sum 1. The rule size doubles until two successive results
# agree to the requested precision. (Nested adaptive mpmath.quad took ~50 s for one 2-D moment at 20
# digits; this takes well under a second.) Kinked, non-homogeneous g (custom expressions only) keep the
# adaptive quadrature split at the kinks.


def _jacobi_coefficients(n: int, a: Any) -> list:
    """(A_k, B_k) with P_k = A_k x P_{k-1} - B_k P_{k-2} for P_k^(a,a) (alpha = beta = a), k = 2..n."""
    out = []
    for k in range(2, n + 1):
        c1 = 2 * k * (k + 2 * a) * (2 * k + 2 * a - 2)
        c2 = (2 * k + 2 * a - 1) * (2 * k + 2 * a) * (2 * k + 2 * a - 2)
        c3 = 2 * (k + a - 1) * (k + a - 1) * (2 * k + 2 * a)
        out.append((c2 / c1, c3 / c1))
    return out


def _jacobi_p(n: int, a: Any, x: Any, coefficients: list | None = None) -> tuple[Any, Any]:
    """P_n^(a,a)(x) and its derivative (three-term recurrence; derivative from
    (1 - x^2) P_n' = -n x P_n + (n + a) P_{n-1}, valid for alpha = beta = a)."""
    coefficients = coefficients if coefficients is not None else _jacobi_coefficients(n, a)
    p0, p1 = mpmath.mpf(1), (a + 1) * x
    if n == 0:
        return p0, mpmath.mpf(0)
    for A, B in coefficients:
        p0, p1 = p1, A * x * p1 - B * p0
    return p1, (-n * x * p1 + (n + a) * p0) / (1 - x * x)


_MP_RULES: dict = {}


def _mp_jacobi(n: int, a_num: float, dps: int) -> tuple[list, list]:
    key = (n, a_num, dps)
    if key in _MP_RULES:
        return _MP_RULES[key]
    x0, _ = roots_jacobi(n, a_num, a_num)
    with mpmath.workdps(dps + 10):
        a = mpmath.mpf(a_num)
        coefficients = _jacobi_coefficients(n, a)
        # Newton from the double-precision roots: quadratic convergence, 1e-16 -> 1e-32 -> 1e-64
        iterations = 1 + max(1, math.ceil(math.log2((dps + 10) / 14.0)))
        xs, ws = [], []
        for x in x0:
            x = mpmath.mpf(float(x))
            for _ in range(iterations):
                p, dp = _jacobi_p(n, a, x, coefficients)
                x -= p / dp
            p, dp = _jacobi_p(n, a, x, coefficients)
            xs.append(x)
            ws.append(1 / ((1 - x * x) * dp * dp))
        total = mpmath.fsum(ws)
        ws = [w / total for w in ws]
    _MP_RULES[key] = (xs, ws)
    return xs, ws


def _mp_rule(T: int, inner: bool, n: int, dps: int) -> tuple[list, list]:
    if (T == 2 and not inner) or (T == 3 and inner):
        return [mpmath.mpf(-1), mpmath.mpf(1)], [mpmath.mpf(1) / 2, mpmath.mpf(1) / 2]
    return _mp_jacobi(n, (T - 5) / 2 if inner else (T - 4) / 2, dps)


def _mp_converge(compute, dps: int) -> Any:
    # grow by 1.5 (not 2): the 2-D cost is n^2 and doubling overshoots the converged size by up to 4x
    n = 40
    prev = compute(n)
    while n < 3072:
        n = (3 * n) // 2
        cur = compute(n)
        if abs(cur - prev) <= abs(cur) * mpmath.mpf(10) ** (-dps - 1) + mpmath.mpf(10) ** (-dps - 3):
            return cur
        prev = cur
    raise InvalidArgument("dps", dps, "a precision the sphere-law quadrature reaches",
                          "the Gauss-Jacobi rule did not converge with 3072 nodes")


def _mp_1d(g: Activation, T: int, dps: int, square: bool = True) -> Any:
    if _kinked(g) and T > 2:
        return _mp_1d_adaptive(g, T, dps)
    with mpmath.workdps(dps + 10):
        r = mpmath.sqrt(T - 1)

        def compute(n):
            ys, ws = _mp_rule(T, False, n, dps)
            return mpmath.fsum(w * g.mp(r * y) ** 2 for y, w in zip(ys, ws))

        val = compute(2) if T == 2 else _mp_converge(compute, dps)
    return +val


def _mp_2d(g: Activation, T: int, dps: int) -> Any:
    if T == 2:
        with mpmath.workdps(dps + 10):
            return +(g.mp(mpmath.mpf(1)) * g.mp(mpmath.mpf(-1)))
    if _kinked(g):
        return _mp_2d_adaptive(g, T, dps)
    with mpmath.workdps(dps + 10):
        r = mpmath.sqrt(T - 1)
        c = -1 / (mpmath.mpf(T) - 1)
        s = mpmath.sqrt(1 - c * c)

        def compute(n):
            ys, ws = _mp_rule(T, False, n, dps)
            vs, vw = _mp_rule(T, True, n, dps)
            total = []
            for y, w in zip(ys, ws):
                rho = mpmath.sqrt(1 - y * y)
                inner = mpmath.fsum(u * g.mp(r * (c * y + s * rho * v)) for v, u in zip(vs, vw))
                total.append(w * g.mp(r * y) * inner)
            return mpmath.fsum(total)

        val = _mp_converge(compute, dps)
    return +val


def _mp_points(g: Activation, r: Any, extra: list = ()) -> list:
    pts = [-mpmath.pi / 2, mpmath.pi / 2]
    for k in (g.kinks or ()):
        if abs(k) < r:
            pts.append(mpmath.asin(mpmath.mpf(k) / r))
    pts.extend(extra)
    return sorted(set(pts))


def _mp_1d_adaptive(g: Activation, T: int, dps: int) -> Any:
    with mpmath.workdps(dps + 10):
        a = (mpmath.mpf(T) - 4) / 2
        r = mpmath.sqrt(T - 1)
        norm = mpmath.beta(mpmath.mpf(1) / 2, a + 1)
        f = lambda t: mpmath.cos(t) ** (2 * a + 1) * g.mp(r * mpmath.sin(t)) ** 2  # noqa: E731
        val = mpmath.quad(f, _mp_points(g, r)) / norm
    return +val


def _mp_2d_adaptive(g: Activation, T: int, dps: int) -> Any:
    with mpmath.workdps(dps + 10):
        r = mpmath.sqrt(T - 1)
        c = -1 / (mpmath.mpf(T) - 1)
        s = mpmath.sqrt(1 - c * c)
        a = (mpmath.mpf(T) - 4) / 2
        b = (mpmath.mpf(T) - 5) / 2
        na = mpmath.beta(mpmath.mpf(1) / 2, a + 1)

        def inner(y):
            rho = mpmath.sqrt(1 - y * y)
            if T == 3:
                return (g.mp(r * (c * y + s * rho)) + g.mp(r * (c * y - s * rho))) / 2
            nb = mpmath.beta(mpmath.mpf(1) / 2, b + 1)
            pts = [-mpmath.pi / 2, mpmath.pi / 2]
            for k in (g.kinks or ()):
                if rho > 0:
                    wk = (k / r - c * y) / (s * rho)
                    if abs(wk) < 1:
                        pts.append(mpmath.asin(wk))
            f = lambda t: mpmath.cos(t) ** (2 * b + 1) * g.mp(r * (c * y + s * rho * mpmath.sin(t)))  # noqa: E731
            return mpmath.quad(f, sorted(pts)) / nb

        induced = [mpmath.mpf(t) for t in _induced_cuts(g.kinks or (), float(r), float(c), float(s))]
        f = lambda t: mpmath.cos(t) ** (2 * a + 1) * g.mp(r * mpmath.sin(t)) * inner(mpmath.sin(t))  # noqa: E731
        val = mpmath.quad(f, _mp_points(g, r, induced)) / na
    return +val


# -- symbolic -------------------------------------------------------------------------------------------------

_Y1 = sympy.Symbol("y_1", real=True)
_W = sympy.Symbol("w", real=True)


class SphereExpectation(sympy.Expr):
    """E_S[g(u_a)^2] or E_S[g(u_a) g(u_b)] under the sphere law of batch norm over T samples, unevaluated.

    Like :class:`meanfield.integrals.symbolic.GaussianExpectation`: prints as itself, composes
    arithmetically, ``.rewrite(sympy.Integral)`` shows the Beta-weighted integral, ``evalf`` / ``sympy.N``
    integrate numerically (mpmath) once T is a number, and ``lambdify`` calls the numeric fast path.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> Ts = sympy.Symbol("T", positive=True, integer=True)
        >>> e = SphereExpectation.of(activation("tanh"), Ts, "second")
        >>> e
        E_S[tanh^2](T)
        >>> round(float(sympy.N(e.subs(Ts, 16))), 6)
        0.406034
    """

    is_real = True
    is_finite = True

    def __new__(cls, expr, T, kind, name):
        from sympy.core.symbol import Str
        return sympy.Expr.__new__(cls, sympy.sympify(expr), sympy.sympify(T), Str(str(kind)), Str(str(name)))

    @classmethod
    def of(cls, g: Activation, T: Any, kind: str) -> "SphereExpectation":
        return cls(g.expr, T, kind, g.name)

    @property
    def phi(self) -> sympy.Expr:
        return self.args[0]

    @property
    def T(self) -> sympy.Expr:
        return self.args[1]

    @property
    def kind(self) -> str:
        return self.args[2].name

    @property
    def free_symbols(self):
        return self.T.free_symbols | (self.phi.free_symbols - {X})

    def activation(self) -> Activation:
        return Activation(name=self.args[3].name, expr=self.phi, family="custom")

    def _eval_subs(self, old, new):
        if old == X:
            return self
        return None

    def doit(self, **hints):
        T = self.T.doit(**hints) if hints.get("deep", True) else self.T
        obj = self.func(self.phi, T, self.kind, self.args[3].name)
        if T.is_number and not (self.phi.free_symbols - {X}):
            return obj.evalf()
        return obj

    def _eval_evalf(self, prec):
        T = self.T
        if not T.is_number or (self.phi.free_symbols - {X}):
            return None
        Tv = int(sympy.Integer(sympy.N(T, 30).round()))
        dps = max(15, mpmath.libmp.prec_to_dps(prec))
        g = self.activation()
        value = _mp_1d(g, Tv, dps + 3) if self.kind == "second" else _mp_2d(g, Tv, dps + 3)
        return sympy.Float(value, dps)

    def _eval_rewrite_as_Integral(self, *args, **kwargs):
        if self.kind == "second":
            return _symbolic_1d(self.phi**2, self.T)
        return _symbolic_2d(self.phi, self.T)

    def _sympystr(self, printer) -> str:
        label = self.args[3].name
        if self.kind == "second":
            return f"E_S[{label}^2]({printer._print(self.T)})"
        return f"I_S[{label}]({printer._print(self.T)})"

    def _latex(self, printer) -> str:
        phi = _latex_function(self.args[3].name, self.phi, printer)
        T = printer._print(self.T)
        if self.kind == "second":
            return rf"\mathbb{{E}}_{{S_{{{T}}}}}\left[{phi}(u_a)^{{2}}\right]"
        return rf"\mathbb{{E}}_{{S_{{{T}}}}}\left[{phi}(u_a)\,{phi}(u_b)\right]"

    def _numpycode(self, printer) -> str:
        key = _register(self)
        return (f"__import__('meanfield.integrals.sphere', fromlist=['_'])._lambdified({key!r}, {printer._print(self.T)}, "
                f"{self.kind!r})")

    _lambdacode = _numpycode
    _pythoncode = _numpycode


def _latex_function(name: str, expr: sympy.Expr, printer) -> str:
    """The activation's LaTeX name (catalogue, catalogue derivative ``\\tanh'``, else ``x \\mapsto ...``)."""
    from .notation import catalogue_name

    known = catalogue_name(name, expr)
    if known is not None:
        return known
    return r"\left(x \mapsto " + printer._print(expr) + r"\right)"


_REGISTRY: dict[str, Activation] = {}


def _register(e: SphereExpectation) -> str:
    key = sympy.srepr(e.phi)
    _REGISTRY[key] = e.activation()
    return key


def _lambdified(key: str, T, kind: str):
    g = _REGISTRY[key]
    T = int(round(float(T)))
    return _np_1d(g, T) if kind == "second" else _np_2d(g, T)


def _symbolic_1d(integrand_of_x: sympy.Expr, T: Any) -> sympy.Expr:
    Ts = sympy.sympify(T)
    a = (Ts - 4) / 2
    weight = (1 - _Y1**2) ** a / sympy.beta(sympy.Rational(1, 2), a + 1)
    return sympy.Integral(weight * integrand_of_x.subs(X, sympy.sqrt(Ts - 1) * _Y1), (_Y1, -1, 1))


def _symbolic_2d(g_expr: sympy.Expr, T: Any) -> sympy.Expr:
    Ts = sympy.sympify(T)
    a = (Ts - 4) / 2
    b = (Ts - 5) / 2
    c = -1 / (Ts - 1)
    r = sympy.sqrt(Ts - 1)
    ua = r * _Y1
    ub = r * (c * _Y1 + sympy.sqrt(1 - c**2) * sympy.sqrt(1 - _Y1**2) * _W)
    weight = ((1 - _Y1**2) ** a * (1 - _W**2) ** b
              / (sympy.beta(sympy.Rational(1, 2), a + 1) * sympy.beta(sympy.Rational(1, 2), b + 1)))
    return sympy.Integral(weight * g_expr.subs(X, ua) * g_expr.subs(X, ub), (_W, -1, 1), (_Y1, -1, 1))
