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
and :mod:`meanfield.finite.layernorm_world` to their quadrature (relu: to rounding; a test). The entry variances (s)
are not carried through a layer norm here (its NTK's spread between units: not derived), so ``unit_second`` of the
returned layer is zero and the chain keeps s at its mean-field value above one. The four-sample world's Gaussian
integrals condition on the common part, so the layer's mean pre-activation overlap must be non-negative
(InvalidArgument otherwise; the chain then answers with mean-field values and a note).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgument, check_int
from ..spec.network import LayerNorm, Network
from .bnstep import BatchNormLayer
from .fourworld import World, carry_world
from .layernorm import layer_norm_layer
from .layernorm_world import layer_norm_step
from .multibn import BelowWorld

__all__ = ["layer_norm_from_below"]

_TWO = (0, 1, 4)          # the pairs (0, 0), (0, 1), (1, 1) of two samples among the world's ten


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
        zero (not derived); the :class:`meanfield.finite.fourworld.World` of layer j).

    Raises:
        InvalidArgument: no layer norm on hidden layer j >= 2, a bad width, a negative mean overlap of layer j's
            pre-activations, a state that is not a BelowWorld.

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
    if not Q[1] >= 0:
        raise InvalidArgument("net", net.describe(), f"a non-negative mean overlap of layer {j}'s pre-activations "
                              f"under its layer norm (here {Q[1]:.4g}: the four-sample world conditions on it)")
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
    world = carry_world(net, M, layer_norm_step, j - 1, j + 1, (w.k, w.n, theta, w.y), {(j - 1, j - 1): w.cov},
                        {j - 1: e})
    six = (0, 1, 4, 10, 11, 14)
    b = BatchNormLayer(kbar, nbar, dk, dn, world.cov[np.ix_(six, six)],
                       {pair: world.y[pair][:2, :2].copy() for pair in ((0, 0), (0, 1))}, np.zeros((6, 6)))
    return b, world
