"""The four-sample world below a full batch norm on the output, through layer norms on hidden layers, derived.

:func:`meanfield.finite.fourworld.realized_world` gives, for a plain network, the means and covariances over four
exchangeable samples of the realized kernel K = H^T H / M and the realized NTK average N = tr X / M of the last
hidden layer (X_uv = diag(phi'(u)) Theta diag(phi'(v)), Theta the NTK of that layer's pre-activations), and the
sandwiched NTK Y^uv_ab = h_a^T X_uv h_b, to leading order. :func:`layer_norm_world` runs the same recursion through
layer norms on any hidden layers (several, any depth and widths). At a layer-normed layer j (pre-activations
u~_c = (u_c - mu) / s over the M_j units, the rows i.i.d. N(0, Q) given the layer below):

* the realized averages K~ = (1/M) sum_c phi(u~_c(a)) phi(u~_c(b)) and c~ = (1/M) sum_c phi'(u~_c(a)) phi'(u~_c(b)) /
  (s_a s_b) fluctuate as the means of their influence functions and respond to the layer below through the
  correlation (and 1 / sqrt(Q_aa Q_bb) for c~): the local covariance and response of
  :func:`meanfield.finite.fourpoint_layernorm.realized_averages` over four samples; then N^j = c~ Theta^j to leading
  order (the Jacobian J_u = (1/s_u)(I - 1 1^T / M - u~_u u~_u^T / M) moves N by O(1/M) in the mean, by O(M^-3/2) in
  its fluctuation), so the linear response N^j = Theta^j dc~ + c~ (M_{j-1} dK^{j-1} + sigma_w^2 dN^{j-1}) is that of
  the plain recursion;
* the sandwiched NTK above the norm, Y^uv_ab = v_a^T J_u Theta^j J_v^T w_b (v_a = phi(u~(a)) phi'(u~(u)), w_b =
  phi(u~(b)) phi'(u~(v)) over the units), with J_u J_v^T = (1 / (s_u s_v)) [I - 1 1^T / M - (u~_u u~_u^T + u~_v
  u~_v^T - rho u~_u u~_v^T) / M]: in standardized units z (unit variances, correlation rho = q_2 / q_1),

      Y^uv_ab = M_j (Theta^j_uv / q_1) [E v_a w_b - E v_a E w_b - E(z_u v_a) E(z_u w_b) - E(z_v v_a) E(z_v w_b)
                + rho E(z_u v_a) E(z_v w_b)] + (M_j / M_{j-1})^2 sigma_w^2 (D~_u Y^{j-1}_uv D~_v^T)_ab / q_1^2

  (for u = v the projections are the single E(z_u v_a) E(z_u w_b)), D~_u[a, r] = E[d_r v_a] - delta_{r u}
  E[z_u v_a] (derivatives in z; the second term is the projection on u~_u, whose row c moves with w_c; D~_u[u, u]
  = 0 by Stein at unit variance): the four-sample form of :mod:`meanfield.finite.layernorm`'s Y step. Plain layers
  take the plain step of :mod:`meanfield.finite.fourworld` (with its exact Price gradients for the response).
  Without layer norms the result is ``realized_world`` to rounding for relu (a test) and to fourworld's quadrature
  error for smooth units: the Gaussian integrals here are split into eight pieces besides the kinks, while
  fourworld's single 64-node piece over [-12, 12] makes E[tanh^2 tanh'^2] 0.65% high at unit variance and its
  covariances up to 0.4% off (tanh, sigma_w^2 = 2, L = 3).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from ..spec.network import LayerNorm, Network
from .corrections import two_sample_rule
from .fourpoint_layernorm import check_layer_norms, realized_averages
from .fourworld import World, conditional_moments, plain_step, world_recursion

__all__ = ["layer_norm_world", "four_sample_moment", "layer_norm_step", "layer_norm_sandwich"]

# fixed breaks of both normal variables besides the unit's kinks: one Gauss-Legendre piece over [-12, 12] is not
# enough for the Gaussian weight (E[tanh^2 tanh'^2] comes out 0.6% high; with these pieces it is exact to 1e-15)
_GRID = tuple(np.linspace(-9.0, 9.0, 7))


@functools.lru_cache(maxsize=128)
def _conditional(unit: Unit, q1: float, q2: float) -> tuple:
    """The outer weights and a function (p, q, k) -> E_e[phi^p phi'^q u^k (sqrt(q2) z + sqrt(q1 - q2) e) | z]."""
    return conditional_moments(unit, q1, q2, _GRID)


def four_sample_moment(phi, q1: float, q2: float, factors: tuple) -> float:
    """E[prod over factors (kind, i)]: phi(u_i) (kind 'f'), phi'(u_i) ('d') or u_i ('u'), for four exchangeable
    samples u ~ N(0, (q1 - q2) I + q2 1 1^T), 0 <= q2 < q1 (conditioning on the common part).

    Args:
        phi: an activation (``Network.phi(l)``).
        q1, q2: the kernel on and off the diagonal.
        factors: (kind, sample) pairs, samples 0..3.

    Raises:
        InvalidArgument: q2 < 0 or q1 <= q2, an unknown kind or sample.

    Example:
        >>> from meanfield.spec.network import Network
        >>> phi = Network(2, "relu", 2, 0.1).phi(1)
        >>> round(four_sample_moment(phi, 1.0, 0.5, (("u", 0), ("d", 0))), 10)    # E[u 1(u > 0)] = 1/sqrt(2 pi)
        0.3989422804
    """
    powers = [[0, 0, 0] for _ in range(4)]
    for item in factors:
        if not (isinstance(item, tuple) and len(item) == 2 and item[0] in ("f", "d", "u") and item[1] in range(4)):
            raise InvalidArgument("factors", factors, "(kind, sample) pairs, kind 'f', 'd' or 'u', sample 0..3")
        powers[item[1]]["fdu".index(item[0])] += 1
    wz, m = _conditional(Unit.of(phi), float(q1), float(q2))
    out = wz.copy()
    for p in powers:
        if any(p):
            out = out * m(tuple(p))
    return float(out.sum())


def _check(net: object) -> Network:
    if not isinstance(net, Network) or net.is_symbolic or net.depth < 2:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network of depth >= 2")
    return check_layer_norms(net)


def _moment(phi, q1: float, q2: float, factors: tuple) -> float:
    return four_sample_moment(phi, q1, q2, factors)


def layer_norm_sandwich(unit: Unit, q1: float, q2: float, theta: tuple, old: dict, Mj: int, Mb: int, sw: float,
                        first: bool, moment: Any = None) -> dict:
    """The sandwiched NTK Y^j above a layer norm (module docstring): projected E4 and the Stein part with D~.

    ``moment(factors)`` gives the four standardized samples' moments (correlation q2 / q1; factors as
    :func:`four_sample_moment`'s); by default :func:`four_sample_moment`, which conditions on the common part (q2 >= 0).
    :mod:`meanfield.finite.layernorm_overlap` passes its moments at any sign of the overlap.

    Example:
        >>> from meanfield.integrals.quadrature import Unit
        >>> from meanfield.spec.network import Network
        >>> unit = Unit.of(Network(2, "tanh", 1, 0.1).phi(1))
        >>> y = layer_norm_sandwich(unit, 1.0, 0.3, (1.0, 0.3), {(0, 0): None}, 64, 64, 1.0, True)
        >>> y[(0, 0)].shape
        (4, 4)
    """
    rho = q2 / q1
    phi = unit.f
    E = moment if moment is not None else functools.partial(_moment, phi, 1.0, rho)
    rule = two_sample_rule(unit, 1.0, rho, 1.0)
    z, y = rule.u, rule.y
    f = [np.asarray(unit.f(x), dtype=float) for x in z]
    d = [np.asarray(unit.df(x), dtype=float) for x in z]
    # D~_u[a, r]: a = u: E[d(phi phi')/dz] - E[z phi phi'] = 0 (Stein at unit variance); a != u: the pair (a, u) as
    # samples (0, 1) of the two-sample rule, v = phi(z_0) phi'(z_1)
    vpair = f[0] * d[1]
    own, other = rule.mean(vpair * y[0]), rule.mean(vpair * y[1]) - rule.mean(vpair * z[1])
    D = {}
    for u in (0, 1):
        Du = np.zeros((4, 4))
        for a in range(4):
            if a != u:
                Du[a, a], Du[a, u] = own, other
        D[u] = Du
    out = {}
    for (u, v), yold in old.items():
        Ev = np.array([E((("f", a), ("d", u))) for a in range(4)])
        Ew = np.array([E((("f", b), ("d", v))) for b in range(4)])
        zu_v = np.array([E((("u", u), ("f", a), ("d", u))) for a in range(4)])
        zu_w = np.array([E((("u", u), ("f", b), ("d", v))) for b in range(4)])
        vw = np.array([[E((("f", a), ("d", u), ("f", b), ("d", v))) for b in range(4)] for a in range(4)])
        proj = vw - np.outer(Ev, Ew) - np.outer(zu_v, zu_w)
        if u != v:
            zv_v = np.array([E((("u", v), ("f", a), ("d", u))) for a in range(4)])
            zv_w = np.array([E((("u", v), ("f", b), ("d", v))) for b in range(4)])
            proj += -np.outer(zv_v, zv_w) + rho * np.outer(zu_v, zv_w)
        th = theta[0 if u == v else 1]
        stein = 0.0 if first else (Mj / Mb) ** 2 * sw ** 2 * (D[u] @ yold @ D[v].T) / q1 ** 2
        out[(u, v)] = Mj * th / q1 * proj + stein
    return out


def _step(net: Network, widths: tuple, j: int, qa: float, qb: float, theta: tuple, y: dict) -> tuple:
    """A layer of :func:`meanfield.finite.fourworld.world_recursion`: the layer-norm step at normed layers, else the
    plain step with this module's finer quadrature (and the exact Price gradients for the response: the central
    differences of ``realized_averages`` are about 1% off for tanh at this kernel's scale)."""
    unit = Unit.of(net.phi(j))
    Mj, Mb, sw, first = widths[j], widths[j - 1], float(net.sigma_w2[j - 1]), j == 1
    if not isinstance(net.norm_at(j), LayerNorm):
        return plain_step(functools.partial(four_sample_moment, net.phi(j), qa, qb), unit, qa, qb, theta, y, Mj, Mb,
                          sw, first)
    loc = realized_averages(net.phi(j), qa, qb, True, 4)
    return (np.asarray(loc.mean, dtype=float), loc.sigma, loc.jac,
            layer_norm_sandwich(unit, qa, qb, theta, y, Mj, Mb, sw, first))


def layer_norm_step(net: Network, widths: tuple, j: int, qa: float, qb: float, theta: tuple, y: dict) -> tuple:
    """(means, M x cov, d/dQ, Y^j) of layer j for :func:`meanfield.finite.fourworld.carry_world`: the layer-norm step
    (module docstring) at a layer-normed layer j, else the plain step with this module's quadrature.

    Args:
        net: the network; widths: its widths; j: the layer (>= 1); qa, qb: the mean pre-activation kernel (0 <= qb <
            qa); theta: the mean NTK (tt, ts) of the layer's pre-activations; y: Y^{j-1} for (0, 0), (0, 1).

    Example:
        >>> net = Network(3, "relu", 2, 0.1, norms=["layer:2"])
        >>> y0 = {(0, 0): np.zeros((4, 4)), (0, 1): np.zeros((4, 4))}
        >>> means, sigma, jac, y = layer_norm_step(net, net.widths(64), 2, 1.1, 0.5, (65.0, 33.0), y0)
        >>> round(float(means[0]), 12), jac.shape
        (0.5, (20, 10))
    """
    if not isinstance(net, Network) or not 1 <= j < net.depth:
        raise InvalidArgument("j", j, "a hidden layer of a numeric network")
    return _step(net, widths, j, qa, qb, theta, y)


@functools.lru_cache(maxsize=32)
def _world(net: Network, width: int) -> World:
    return world_recursion(net, width, _step)


def layer_norm_world(net: Network, width: int) -> World:
    """Cov of (K^{L-1}, N^{L-1}) over four samples (20 x 20), their means and Y^uv_ab, through layer norms.

    The four-sample world of :func:`meanfield.finite.fourworld.realized_world` (same fields and order: pairs (0, 0),
    (0, 1), ..., (3, 3), K first, then N; Y for (u, v) = (0, 0), (0, 1)) for a network with layer norms on any hidden
    layers (module docstring); without norms it is ``realized_world`` (to its quadrature error).

    Args:
        net: a numeric network of depth >= 2 whose normalizations are layer norms on hidden layers (or none).
        width: M.

    Raises:
        InvalidArgument: another network (a batch norm, a symbolic one), a bad width, a negative mean overlap.

    Example:
        >>> w = layer_norm_world(Network(3, "tanh", 2, 0.1, norms=["layer:1"]), 64)
        >>> w.cov.shape, sorted(w.y), bool(np.linalg.eigvalsh(w.cov).min() > -1e-9)
        ((20, 20), [(0, 0), (0, 1)], True)
    """
    return _world(_check(net), check_int("width", width, minimum=2))
