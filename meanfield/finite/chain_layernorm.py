"""A layer norm above a batch norm: the chain's layer-norm step from any state below to the state above it.

:mod:`meanfield.finite.chain` carries a state up the layers: the four-sample world of layer j - 1
(:class:`meanfield.finite.fourworld.World`: the means of the realized kernel K^{j-1} and NTK average N^{j-1}, their
20 x 20 covariance over the pairs of four exchangeable samples, the sandwiched NTK Y^{j-1}) with the O(1/M) mean shift
of K^{j-1} and the O(1) mean shift of the NTK of layer j's pre-activations, Theta^j = 1 + M_{j-1} K^{j-1} +
sigma_w^2 N^{j-1} (:class:`meanfield.finite.multibn.BelowWorld`). Below the lowest batch norm that state is the
inputs', a plain network's or :mod:`meanfield.finite.layernorm_world`'s; above a batch norm it is the batch norm's own
world carried through plain layers. :func:`layer_norm_from_below` is the step through a layer norm on layer j fed any
such state; it returns what a batch norm's step returns (:class:`meanfield.finite.bnstep.BatchNormLayer` of layer j and
its four-sample world), so the chain continues through it unchanged (plain layers by deepbn's recursion, further
batch norms, the output's norm).

Given the layer below, the M_j rows of pre-activations are i.i.d. N(0, Q), Q = sigma_w^2 K^{j-1} + sigma_b^2 the
realized kernel, and the layer norm standardizes each sample over the units. What the step needs of the layers below
enters only through Q's mean, mean shift and covariance, the NTK below (its mean, split as A = 1 + M_{j-1} K^{j-1}
(diagonal in the units) and B = sigma_w^2 N^{j-1}, its O(1) mean shift and its covariance with Q) and Y^{j-1}; these
are exactly the quantities :mod:`meanfield.finite.layernorm`'s two-sample recursion carries, and the state supplies
them:

* kernel: M_j (E K^j - F(rho)) = M_j (F' dQ + F''[Cov Q] / 2) + the norm's own shift (von Mises), F(rho(Q)) at unit
  variances, dQ = sigma_w^2 dK^{j-1}, Cov Q = sigma_w^4 Cov K^{j-1} (the world's (tt, ts, ss) block);
* NTK average: dN^j = dc~ Theta^j + c~ dTheta^j + sigma_w^2 grad c~ . Cov(K^{j-1}, Z) + (the Jacobian's projector,
  Stein and cross terms with A, B, Y^{j-1}), c~ = c(rho) / sqrt(Q_tt Q_ss), Z = M_{j-1} K^{j-1} + sigma_w^2 N^{j-1}
  (Cov from the world's K and N blocks): :func:`meanfield.finite.layernorm.layer_norm_layer`;
* the world of layer j: :func:`meanfield.finite.fourworld.carry_world` one layer up with the layer-norm step of
  :func:`meanfield.finite.layernorm_world.layer_norm_step` (the realized averages' influence-function covariance and
  response through the correlation, N^j = c~ Theta^j to leading order, Y^j the projected sandwich), started at the
  state's world (N^{j-1} a variable of its own).

Fed the plain network's state below a layer norm (no batch norm anywhere) the step is :mod:`meanfield.finite.layernorm`
and :mod:`meanfield.finite.layernorm_world` to their quadrature (relu: to rounding; a test). For the entry variances (s)
the layer's units enter to leading order as standardized ones: u~ ~ N(0, (1, rho)) with s^2 = q_1, the NTK of the
outputs X_ac(t, s) = phi'(u~_a(t)) phi'(u~_c(s)) (J_t Theta J_s^T)_ac with J_t = (1 / s_t)(I - 1 1^T / M - u~_t u~_t^T
/ M), whose projections move X_aa by O(1/M) relative and X_ac (a != c) by O(1) against the spread S_ac = w_a^T X w_c
of O(sqrt M): :func:`layer_norm_moment` (the four-sample moments), :func:`layer_norm_unit_second` (``unit_second`` of
the returned layer: one unit's E[X_aa X_aa] with Theta_aa at its mean) and :func:`layer_norm_slope_moments` (U2 of
the pair moments E[X_ac X_ac] through the spread below). The four-sample world's Gaussian integrals condition on the
common part where the layer's mean pre-activation overlap is non-negative; a negative one takes it imaginary
(:func:`meanfield.finite.layernorm_overlap.layer_norm_step_any`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgument, check_int
from ..spec.network import LayerNorm, Network
from .bnstep import BatchNormLayer
from .fourworld import World, carry_world
from .layernorm import layer_norm_layer
from .layernorm_overlap import layer_norm_step_any, standardized_moment
from .layernorm_world import layer_norm_step
from .multibn import BelowWorld

__all__ = ["layer_norm_from_below", "layer_norm_moment", "layer_norm_unit_second", "layer_norm_slope_moments"]

_TWO = (0, 1, 4)          # the pairs (0, 0), (0, 1), (1, 1) of two samples among the world's ten


def layer_norm_moment(phi, q1: float, q2: float, factors: tuple) -> float:
    """E[prod over factors (kind, i)] of one layer-normed unit to leading order: phi(u~_i) ('f'), phi'(u~_i) / s_i
    ('d') or u~_i ('u') over four exchangeable samples whose pre-activations have the kernel q1 on and q2 off the
    diagonal; u~ = (u - mu) / s has the standardized law (1, q2 / q1) and s^2 = q1 (both to O(1/M)), so each 'd'
    factor carries 1 / sqrt(q1) (:func:`meanfield.finite.layernorm_overlap.standardized_moment`: a negative overlap
    takes the common part imaginary).

    Args:
        phi: the layer's activation (``Network.phi(l)``).
        q1, q2: the mean pre-activation kernel, q1 > |q2|, q2 > -q1 / 3.
        factors: (kind, sample) pairs, kinds 'f', 'd', 'u', samples 0..3.

    Raises:
        InvalidArgument: q1 <= |q2|, a bad factor.

    Example:
        >>> phi = Network(2, "relu", 2, 0.1).phi(1)
        >>> from meanfield.finite.layernorm_world import four_sample_moment
        >>> layer_norm_moment(phi, 4.0, 1.0, (("d", 0), ("d", 1))) == four_sample_moment(phi, 1.0, 0.25,
        ...                                                                                (("d", 0), ("d", 1))) / 4
        True
        >>> round(layer_norm_moment(Network(2, "tanh", 2, 0.1).phi(1), 2.0, -0.1, (("u", 0), ("u", 1))), 10)
        -0.05
    """
    q1, q2 = float(q1), float(q2)
    if not q1 > abs(q2):
        raise InvalidArgument("q1, q2", (q1, q2), "a pre-activation kernel with q1 > |q2|")
    return standardized_moment(phi, q2 / q1, factors) / q1 ** (sum(1 for kind, _ in factors if kind == "d") / 2)


def layer_norm_unit_second(phi, Q: tuple, theta: tuple) -> np.ndarray:
    """E[x_i x_j] of one layer-normed unit's x = (phi_t phi_t, phi_t phi_s, phi_s phi_s, X_aa(t, t), X_aa(t, s),
    X_aa(s, s)) at the mean law (the ``unit_second`` of :class:`meanfield.finite.bnstep.BatchNormLayer`):
    X_aa(t, s) = phi'(u~_a(t)) phi'(u~_a(s)) Theta_aa(t, s) / (s_t s_s), to leading order Theta_aa at its mean
    (Theta's own fluctuation and the Jacobian's projections are O(1/M) relative) and s^2 = q1.

    Args:
        phi: the layer's activation.
        Q: the mean pre-activation kernel (q1, q2).
        theta: the mean NTK (tt, ts) of the layer's pre-activations.

    Example:
        >>> u = layer_norm_unit_second(Network(2, "relu", 2, 0.1).phi(1), (2.0, 0.5), (65.0, 20.0))
        >>> u.shape, bool(np.allclose(u, u.T)), round(float(u[3, 3]), 10)      # E[1(z > 0)] 65^2 / 2^2
        ((6, 6), True, 528.125)
    """
    q1, q2 = float(Q[0]), float(Q[1])
    comps = [(((kind, a), (kind, b)), 1.0 if kind == "f" else float(theta[a != b]))
             for kind in ("f", "d") for a, b in ((0, 0), (0, 1), (1, 1))]
    out = np.empty((6, 6))
    for i, (fi, si) in enumerate(comps):
        for j, (fj, sj) in enumerate(comps[i:], start=i):
            out[i, j] = out[j, i] = layer_norm_moment(phi, q1, q2, fi + fj) * si * sj
    return out


def layer_norm_slope_moments(phi, Q: tuple, samples: int) -> np.ndarray:
    """U2[t, t1, s, t2] = E[phi'(u~(t)) A(t, t1) phi'(u~(s)) A(s, t2)] of one layer-normed unit to leading order: the
    norm's Jacobian acts across the units, not the samples, so A(t, t1) = delta_{t t1} / sqrt(q1) (its projections
    move the spread between units by O(1/M) relative); the counterpart of
    :func:`meanfield.finite.bnstep.unit_slope_moments`, for :func:`meanfield.finite.bnstep.unit_pair_moments`.

    Example:
        >>> U2 = layer_norm_slope_moments(Network(2, "relu", 2, 0.1).phi(1), (2.0, 0.5), 6)
        >>> U2.shape, float(U2[0, 0, 0, 0]), float(U2[0, 1, 0, 1])      # E[1(z > 0)] / q1, off the delta
        ((6, 6, 6, 6), 0.25, 0.0)
    """
    T = check_int("samples", samples, minimum=2)
    q1, q2 = float(Q[0]), float(Q[1])
    c = (layer_norm_moment(phi, q1, q2, (("d", 0), ("d", 0))), layer_norm_moment(phi, q1, q2, (("d", 0), ("d", 1))))
    U2 = np.zeros((T,) * 4)
    for t in range(T):
        for s in range(T):
            U2[t, t, s, s] = c[t != s]
    return U2


def layer_norm_from_below(net: Network, width: int, below: BelowWorld, layer: int) -> tuple[BatchNormLayer, World]:
    """(K^j, N^j) to O(1/M) and the four-sample world of a layer-normed layer j, from the state of layer j - 1 below.

    Args:
        net: a numeric network with a layer norm on hidden layer j (the layers below may hold any norms: their effect
            is in ``below``).
        width: M.
        below: the world of layer j - 1, M_{j-1} x the mean shift of K^{j-1} (tt, ts) and the O(1) mean shift of
            Theta^j (tt, ts).
        layer: j, 2 <= j <= L - 1.

    Returns:
        (:class:`meanfield.finite.bnstep.BatchNormLayer` of layer j: kbar, nbar, their shifts dk (O(1/M)) and dn
        (O(1)), the 6 x 6 covariance of (K, N) (tt, ts, ss), Y^j of the pairs (0, 0), (0, 1), and ``unit_second``
        (:func:`layer_norm_unit_second`); the :class:`meanfield.finite.fourworld.World` of layer j).

    Raises:
        InvalidArgument: no layer norm on hidden layer j >= 2, a bad width, a mean kernel of layer j's
            pre-activations outside q1 > |q2|, q2 > -q1 / 3, a state that is not a BelowWorld.

    Example:
        >>> from meanfield.finite.corrections import kernel_mean_shift, ntk_mean_shift
        >>> from meanfield.finite.fourworld import realized_world
        >>> from meanfield.finite.layernorm import layer_norm_kernel_mean_shift
        >>> net, plain = Network(3, "relu", 2, 0.1, norms=["layer:2"]), Network(2, "relu", 2, 0.1)
        >>> state = BelowWorld(realized_world(plain, 64), kernel_mean_shift(plain, 64)[1], ntk_mean_shift(plain, 64))
        >>> b, w = layer_norm_from_below(net, 64, state, 2)
        >>> bool(np.allclose(64 * b.dk, layer_norm_kernel_mean_shift(net, 64)[2], atol=1e-7))
        True
    """
    if not isinstance(net, Network) or net.is_symbolic:
        raise InvalidArgument("net", net, "a numeric meanfield Network")
    j = check_int("layer", layer, minimum=2, maximum=net.depth - 1)
    if not isinstance(net.norm_at(j), LayerNorm):
        raise InvalidArgument("layer", layer, f"a hidden layer with a layer norm in {net.describe()}")
    if not isinstance(below, BelowWorld):
        raise InvalidArgument("below", below, "a multibn.BelowWorld (the state of layer j - 1)")
    M = check_int("width", width, minimum=2)
    widths = net.widths(M)
    Mb, Mj = widths[j - 1], widths[j]
    sw, sb = float(net.sigma_w2[j - 1]), float(net.sigma_b2[j - 1])
    w = below.world
    k, n = (float(w.k[0]), float(w.k[1])), (float(w.n[0]), float(w.n[1]))
    Q = np.array([sw * k[0] + sb, sw * k[1] + sb, sw * k[0] + sb])
    if not (Q[0] > abs(Q[1]) and Q[1] > -Q[0] / 3):
        raise InvalidArgument("net", net.describe(), f"a four-sample kernel of layer {j}'s pre-activations under its "
                              f"layer norm (here {Q[0]:.4g}, {Q[1]:.4g}: q1 > |q2|, q2 > -q1 / 3)")
    dQ = sw * np.array([below.shift_k[0], below.shift_k[1], below.shift_k[0]], dtype=float) / Mb
    covQ = sw**2 * w.cov[np.ix_(_TWO, _TWO)]
    theta = (1 + Mb * k[0] + sw * n[0], 1 + Mb * k[1] + sw * n[1])
    kbar, nbar, dk, dn = np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3)
    for p, pair in enumerate(((0, 0), (0, 1))):
        t = layer_norm_layer(net.phi(j), tuple(Q), pair, 1 + Mb * k[p], sw * n[p], w.y[pair][:2, :2], Mj, Mb, sw)
        if p == 0:
            kbar = np.asarray(t["F"], dtype=float)
            dk = t["gradF"] @ dQ + 0.5 * np.einsum("pab,ab->p", t["hessF"], covQ) + t["own_k"] / Mj
        dc = t["gradc"] @ dQ + 0.5 * np.einsum("pab,ab->p", t["hessc"], covQ) + t["own_c"] / Mj
        # Cov(K^{j-1}_A, Z_p), Z = M_{j-1} K^{j-1} + sigma_w^2 N^{j-1}: world pairs (0, 0) -> 0, (0, 1) -> 1
        cov_kz = Mb * w.cov[_TWO, p] + sw * w.cov[_TWO, 10 + p]
        c = float(t["c"][p])
        dn[p] = (float(dc[p]) * theta[p] + c * float(below.shift_theta[p]) + sw * float(t["gradc"][p] @ cov_kz)
                 + t["extra"])
        nbar[p] = c * theta[p]
    dn[2], nbar[2] = dn[0], nbar[0]
    e = np.zeros((10, 20))
    e[:, 10:] = np.eye(10)          # N^{j-1} is a variable of its own in the state's world
    # a negative overlap: the same step with the common part imaginary (layernorm_world's quadrature conditions on it)
    step = layer_norm_step if Q[1] >= 0 else layer_norm_step_any
    world = carry_world(net, M, step, j - 1, j + 1, (w.k, w.n, theta, w.y), {(j - 1, j - 1): w.cov},
                        {j - 1: e})
    six = (0, 1, 4, 10, 11, 14)
    b = BatchNormLayer(kbar, nbar, dk, dn, world.cov[np.ix_(six, six)],
                       {pair: world.y[pair][:2, :2].copy() for pair in ((0, 0), (0, 1))},
                       layer_norm_unit_second(net.phi(j), (Q[0], Q[1]), theta))
    return b, world
