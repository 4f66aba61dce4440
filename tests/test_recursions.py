"""Order-parameter recursions: hand-derived values, each normalization rule on its own, the sphere law,
number types (float, numpy grids, mpmath, sympy), and errors (signal propagation: tests/test_signal.py)."""

import math

import mpmath
import numpy as np
import pytest
import sympy

from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.errors import InvalidArgument
from meanfield.spec.activations import activation
from meanfield.integrals.gaussian import cross_moment, second_moment
from meanfield.theory.recursions import min_samples_for, order_parameters
from meanfield.integrals.sphere import SphereExpectation, _np_1d, _np_2d, _np_2d_split, chi2_inverse_moment, expected_max_inverse_chi2, homogeneity_degree, sphere_cross_moment, sphere_second_moment

RELU, TANH, ERF = activation("relu"), activation("tanh"), activation("erf")


def relu_cross(c):
    """I_relu[1, c] = (sqrt(1 - c^2) + c (pi - arccos c)) / (2 pi)."""
    return (math.sqrt(1 - c * c) + c * (math.pi - math.acos(c))) / (2 * math.pi)


def step_cross(c):
    return (math.pi - math.acos(c)) / (2 * math.pi)


# -- plain networks: hand values ---------------------------------------------------------------------------------


def test_relu_critical_network_by_hand():
    # sigma_w^2 = 2, sigma_b^2 = 0: q_1 = 2 qhat_1, qhat_1 = q_1 / 2 = 1 at every layer; the backward factor
    # sigma_w^2 E[step^2] = 1, so qtilde_1 = 1 everywhere and kappa_1 = L / (L - 1) (alpha = L - 1).
    for L in (2, 3, 5):
        op = order_parameters(Network(L, "relu", 2, 0))
        assert all(float(op[l].qhat1) == pytest.approx(1, abs=1e-15) for l in range(L))
        assert all(float(op[l].qtilde1) == pytest.approx(1, abs=1e-15) for l in range(1, L + 1))
        k1, _ = op.kappas()
        assert float(k1) == pytest.approx(L / (L - 1), rel=1e-15)
    # qhat_2^1 = I_relu[2, 0] = 2/(2 pi); q_2^2 = 2/pi; qhat_2^2 = I_relu[2, 2/pi] = 2 I_relu[1, 1/pi]
    op = order_parameters(Network(3, "relu", 2, 0))
    assert float(op[1].qhat2) == pytest.approx(1 / math.pi, rel=1e-14)
    assert float(op[2].qhat2) == pytest.approx(2 * relu_cross(1 / math.pi), rel=1e-14)
    # qtilde_2^2 = 2 I_step[2, 2/pi] (times qtilde_2^3 = 1); qtilde_2^1 = qtilde_2^2 * 2 I_step[2, 0] = qtilde_2^2 / 2
    assert float(op[2].qtilde2) == pytest.approx(2 * step_cross(1 / math.pi), rel=1e-14)
    assert float(op[1].qtilde2) == pytest.approx(float(op[2].qtilde2) / 2, rel=1e-14)
    # without batch norm the cross-sample sums are exactly zero
    assert all(float(op[l].qtilde1_mean) == 0 and float(op[l].qtilde2_same) == 0 for l in (1, 2, 3))


def test_erf_closed_forms_by_hand():
    # erf, sigma_w^2 = 1, sigma_b^2 = 0.5, iid inputs: q1 = 1.5, q2 = 0.5
    op = order_parameters(Network(2, "erf", 1, 0.5))
    assert float(op[1].qhat1) == pytest.approx(2 / math.pi * math.asin(3 / 4), rel=1e-14)   # 2q/(1+2q) = 3/4
    assert float(op[1].qhat2) == pytest.approx(2 / math.pi * math.asin(1 / 4), rel=1e-14)   # 2b/(1+2a) = 1/4
    assert float(op[1].qtilde1) == pytest.approx(4 / math.pi / math.sqrt(7), rel=1e-14)     # (4/pi)/sqrt(1+4q)
    assert float(op[1].qtilde2) == pytest.approx(4 / math.pi / math.sqrt(16 - 1), rel=1e-14)  # (1+2a)^2 - 4b^2


def test_gram_layers_linear_by_hand():
    # linear phi: qhat = q, phi' = 1. L = 2, sigma_w^2 = 3, sigma_b^2 = 1/2, M = 10, T = 4:
    # layer 1: (M qhat_1^0 + 1) qtilde_1^1 / T = (10 + 1) * 3 / 4; off: (0 + 1) * 3 / 4
    # layer 2: (M q_1^1 + 1) / T = (10 * 3.5 + 1) / 4; off: (10 * 0.5 + 1) / 4
    op = order_parameters(Network(2, "linear", 3, 0.5), samples=4)
    (d1, o1), (d2, o2) = op.gram_layers(10)
    assert (float(d1), float(o1), float(d2), float(o2)) == pytest.approx((33 / 4, 3 / 4, 36 / 4, 6 / 4), rel=1e-15)


# -- normalization rules, each on its own -----------------------------------------------------------------------


def test_batch_norm_forward_is_the_sphere_law():
    # relu is positively homogeneous: the sphere law equals the Gaussian law (1, -1/(T-1)) exactly
    T = 8
    op = order_parameters(Network(3, "relu", 2, 0.3, norms=[BatchNorm(2)]), samples=T)
    assert op[2].law == "sphere"
    assert float(op[2].qhat1) == pytest.approx(0.5, abs=1e-15)
    assert float(op[2].qhat2) == pytest.approx(relu_cross(-1 / (T - 1)), rel=1e-14)
    # the recursion restarts above: q_1^3 = 2 * 1/2 + 0.3
    assert float(op[3].q1) == pytest.approx(1.3, rel=1e-15)


def test_batch_norm_backward_by_hand():
    # ReLU, batch norm on layer 1 of a depth-2 net, T = 8. Output layer plain: state (1, 0 | 0, 1).
    # Through W^2: sigma_w^2 = 2. Batch norm at layer 1 (relu, sphere law, c = -1/7):
    #   e1 = E[step(u)^2 (1 - 1/T - u^2/T)] = (1/2)(1 - 2/T)
    #   e2 = -(E[step step] + E[relu relu]) / T = -(step_cross(c) + relu_cross(c)) / T
    #   scale = E[T/chi^2_{T-1}] / (q1 - q2) = T/(T-3) / (sigma_w^2 (1 - 0)) = 8/5 / 2
    T, c = 8, -1 / 7
    op = order_parameters(Network(2, "relu", 2, 0.1, norms=[BatchNorm(1)]), samples=T)
    scale = T / (T - 3) / 2.0
    e1 = 0.5 * (1 - 2 / T)
    e2 = -(step_cross(c) + relu_cross(c)) / T
    assert float(op[1].qtilde1) == pytest.approx(2 * scale * e1, rel=1e-14)
    assert float(op[1].qtilde1_mean) == pytest.approx(-2 * scale * e1, rel=1e-14)   # the mean path: sum = 0
    assert float(op[1].qtilde2) == pytest.approx(-2 * scale * e2, rel=1e-14)
    assert float(op[1].qtilde2_same) == pytest.approx(2 * scale * e2, rel=1e-14)
    # the bias of the batch-normalised layer is inert: its Gram contribution (the "+1") vanishes
    with_bias = op.gram_layers(16, bias=True)[0]
    without = op.gram_layers(16, bias=False)[0]
    assert float(with_bias[0]) == pytest.approx(float(without[0]), rel=1e-14)


def test_mean_path_below_batch_norm():
    # below a batch norm the layer sees qtilde_1 qhat_1 - qtilde_2 qhat_2 in the diagonal
    T = 16
    op = order_parameters(Network(3, "relu", 2, 0.2, norms=[BatchNorm(2)]), samples=T)
    p1, p0 = op[1], op[0]
    # the plain rule below the batch norm multiplies X_= by sigma_w^2 E[phi'^2] and X_!= by sigma_w^2 I_phi'
    r1 = 2 * 0.5
    r2 = 2 * step_cross(float(op[1].q2 / op[1].q1))
    assert float(p1.qtilde1) == pytest.approx(r1 * float(op[2].qtilde1), rel=1e-14)
    assert float(p1.qtilde1_mean) == pytest.approx(-r2 * float(op[2].qtilde1), rel=1e-14)
    gd = op.gram_layers(None)[0][0] * T      # gram_layers(None) is E G_l / M; times T: the kappa-sum term
    assert float(gd) == pytest.approx(float(p0.qhat1 * p1.qtilde1 + p0.qhat2 * p1.qtilde1_mean), rel=1e-14)


def test_center_only_batch_norm_rule():
    # forward: exactly Gaussian, q_1 = v (1 - 1/T), q_2 = -v/T with v = q_1 - q_2 of the raw unit
    T = 6
    op = order_parameters(Network(3, "tanh", 1.5, 0.2, norms=[BatchNorm(2, center_only=True)]), samples=T)
    v = float(op[2].q1 - op[2].q2)
    assert (float(op[2].qn1), float(op[2].qn2)) == pytest.approx((v * (1 - 1 / T), -v / T), rel=1e-14)
    assert float(op[2].qhat1) == pytest.approx(float(second_moment(TANH, v * (1 - 1 / T))), rel=1e-13)
    # backward: e1 = (1 - 1/T) E[phi'^2], e2 = -I_phi' / T, no 1/sigma^2, state (Y, -Y)
    dphi = TANH.derivative
    e1 = (1 - 1 / T) * float(second_moment(dphi, v * (1 - 1 / T)))
    e2 = -float(cross_moment(dphi, v * (1 - 1 / T), -v / T)) / T
    up = op[3]
    y = 1.5 * (e1 * float(up.qtilde1) + e2 * float(up.qtilde1_mean))
    assert float(op[2].qtilde1) == pytest.approx(y, rel=1e-12)
    assert float(op[2].qtilde1_mean) == pytest.approx(-y, rel=1e-12)


def test_layer_norm_rule():
    # forward q_1 -> 1, q_2 -> q_2 / q_1; backward divided by q_1 (phi' at the normalised law)
    op = order_parameters(Network(3, "erf", 2.0, 0.3, norms=[LayerNorm(2)]))
    q1, q2 = float(op[2].q1), float(op[2].q2)
    assert (float(op[2].qn1), float(op[2].qn2)) == pytest.approx((1.0, q2 / q1), rel=1e-15)
    assert float(op[2].qhat1) == pytest.approx(2 / math.pi * math.asin(2 / 3), rel=1e-14)
    expected = 2.0 * (4 / math.pi) / math.sqrt(5) / q1   # sigma_w^2 E[erf'^2](1) qtilde^3 / q_1
    assert float(op[2].qtilde1) == pytest.approx(expected, rel=1e-13)


def test_batch_norm_everywhere_reproduces_yang_et_al():
    # with batch norm in every hidden layer, the backward sums grow by pi/(pi-1) per layer for ReLU at large T
    L = 6
    net = Network(L, "relu", 2, 0, norms=[BatchNorm(l) for l in range(1, L)])
    op = order_parameters(net, samples=10**7)
    # from layer 2 on (layer 1 normalises the inputs, whose qhat_1 - qhat_2 = 1 differs)
    ratios = [float(op[l].qtilde1 / op[l + 1].qtilde1) for l in range(2, L - 1)]
    assert ratios == pytest.approx([math.pi / (math.pi - 1)] * len(ratios), rel=1e-6)


# -- the sphere law ------------------------------------------------------------------------------------------------


def test_sphere_moments_exact_values():
    for T in (3, 4, 8, 31):
        assert sphere_second_moment(activation("linear"), T) == pytest.approx(1, abs=1e-15)
        assert sphere_cross_moment(activation("linear"), T) == pytest.approx(-1 / (T - 1), rel=1e-14)
    Ts = sympy.Symbol("T", positive=True, integer=True)
    assert sphere_cross_moment(activation("linear"), Ts) == -1 / (Ts - 1)


def test_sphere_quadrature_is_exact_for_polynomials():
    # E_S[u_a^2 u_b^2] = ((T-1)^2 + 2) / ((T-1)(T+1)) and E_S[u_a^4] = 3 (T-1) / (T+1)  (Gaussian with
    # covariance Pi, divided by E|G|^4 = (T-1)(T+1), times T^2): the Gauss-Jacobi rule, bypassing the
    # homogeneous shortcut, must reproduce them to rounding.
    square = activation("linear").from_expr("x**2")
    for T in (4, 5, 9, 40):
        assert _np_2d(square, T) == pytest.approx(((T - 1) ** 2 + 2) / ((T - 1) * (T + 1)), rel=1e-13)
        assert _np_1d(square, T) == pytest.approx(3 * (T - 1) / (T + 1), rel=1e-13)


def test_homogeneous_shortcut_matches_sphere_quadrature():
    # two independent routes: kink-split quadrature on the sphere vs Gaussian closed form at (1, -1/(T-1))
    for T in (3, 4, 7, 20):
        assert _np_2d_split(RELU, T) == pytest.approx(relu_cross(-1 / (T - 1)), rel=1e-9)
    assert homogeneity_degree(RELU) == 1 and homogeneity_degree(TANH) is None


def test_tanh_sphere_law_differs_from_gaussian_at_order_one_over_T():
    gauss = float(second_moment(TANH, 1.0))
    diffs = [sphere_second_moment(TANH, T) - gauss for T in (16, 64, 256)]
    assert all(d > 0 for d in diffs)
    # O(1/T): T * diff settles (0.188, 0.175, 0.172)
    scaled = [d * T for d, T in zip(diffs, (16, 64, 256))]
    assert scaled[2] == pytest.approx(scaled[1], rel=0.05)
    # the fast path matches the mpmath Gauss-Jacobi rules (computed at 20 digits, converged)
    assert sphere_second_moment(TANH, 8) == pytest.approx(float(sphere_second_moment(TANH, 8, dps=20)), rel=1e-13)
    assert sphere_cross_moment(TANH, 5) == pytest.approx(float(sphere_cross_moment(TANH, 5, dps=16)), rel=1e-12)


def test_sphere_symbolic_object():
    Ts = sympy.Symbol("T", positive=True, integer=True)
    e = sphere_cross_moment(TANH, Ts)
    assert isinstance(e, SphereExpectation)
    assert float(sympy.N(e.subs(Ts, 4), 12)) == pytest.approx(sphere_cross_moment(TANH, 4), rel=1e-10)
    assert e.rewrite(sympy.Integral).has(sympy.Integral)


def test_chi_square_moments():
    assert chi2_inverse_moment(8, 1) == pytest.approx(8 / 5)
    assert chi2_inverse_moment(8, 2) == pytest.approx(64 / 15)
    rng = np.random.default_rng(12345)
    x = 8 / rng.chisquare(7, size=(200000, 5))
    # Monte Carlo: 200000 draws of a max of 5; sem about 0.005 -> 5 sem tolerance
    mc = x.max(axis=1)
    assert expected_max_inverse_chi2(8, 5) == pytest.approx(mc.mean(), abs=5 * mc.std() / math.sqrt(len(mc)))
    assert expected_max_inverse_chi2(8, 1) == pytest.approx(8 / 5, rel=1e-12)


# -- number types ------------------------------------------------------------------------------------------------


def test_mpmath_mode_matches_float():
    # closed-form activations (the sphere law of a relu unit is Gaussian): the mpmath path is fast here;
    # the sphere quadrature at high precision is checked separately for tanh
    net = Network(4, "erf", 1.3, 0.2, norms=[BatchNorm(2, center_only=True), LayerNorm(3)])
    lo = order_parameters(net, samples=12)
    hi = order_parameters(net, samples=12, dps=30)
    assert isinstance(hi[3].qtilde1, mpmath.mpf)
    for name in ("qhat1", "qhat2", "qtilde1", "qtilde2", "qtilde1_mean", "qtilde2_same"):
        for l in (1, 2, 3):
            assert float(hi[l].__getattribute__(name)) == pytest.approx(float(getattr(lo[l], name)), rel=1e-12, abs=1e-15)


def test_grid_overrides_match_pointwise():
    sw = np.array([[0.8, 1.4], [2.0, 3.1]])
    sb = np.array([[0.0, 0.05], [0.2, 0.4]])
    net = Network(4, "tanh", 1, 0, norms=[BatchNorm(2)])
    grid = order_parameters(net, samples=10, sigma_w2=sw, sigma_b2=sb)
    for idx in np.ndindex(sw.shape):
        point = order_parameters(net.with_(sigma_w2=float(sw[idx]), sigma_b2=float(sb[idx])), samples=10)
        for name in ("qhat2", "qtilde1", "qtilde2_same"):
            assert getattr(grid[2], name).shape == sw.shape
            assert getattr(grid[2], name)[idx] == pytest.approx(float(getattr(point[2], name)), rel=1e-12)


def test_symbolic_relu_closed_form():
    sw, sb = sympy.symbols("sigma_w2 sigma_b2", positive=True)
    op = order_parameters(Network(3, "relu", sw, sb), samples=sympy.Symbol("T", positive=True))
    k1, _ = op.kappas()
    assert sympy.simplify(k1 - (3 * sw**2 + 2 * sb * sw + 2 * sb) / 8) == 0
    assert not k1.atoms(sympy.Float)


# -- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net, T, needed", [
    (Network(3, "relu", 2, 0, norms=[BatchNorm(2)]), 3, 4),
    (Network(3, "relu", 2, 0, norms=[BatchNorm(2, center_only=True)]), 1, 2),
])
def test_too_few_samples(net, T, needed):
    with pytest.raises(InvalidArgument) as err:
        order_parameters(net, samples=T)
    assert err.value.argument == "samples" and str(needed) in str(err.value)
    assert min_samples_for(net) == needed


def test_samples_required_with_batch_norm():
    with pytest.raises(InvalidArgument, match="samples"):
        order_parameters(Network(2, "relu", 2, 0, norms=[BatchNorm(1)]))


def test_batch_norm_on_a_constant_unit():
    # constant activation: qhat_1 = qhat_2, so the batch variance of u^2 is zero
    with pytest.raises(InvalidArgument, match="batch variance"):
        order_parameters(Network(3, "constant", 1, 0.1, norms=[BatchNorm(2)]), samples=8)


@pytest.mark.parametrize("kwargs", [dict(sigma_w2=np.array([1.0, -1.0])), dict(sigma_b2=np.array([np.nan])),
                                    dict(sigma_w2=[1.0, 2.0]), dict(dps=2)])
def test_bad_overrides(kwargs):
    with pytest.raises(InvalidArgument):
        order_parameters(Network(3, "tanh", 1, 0), **kwargs)


def test_not_a_network():
    with pytest.raises(InvalidArgument, match="net"):
        order_parameters("relu")
