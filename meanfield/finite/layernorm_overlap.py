"""The layer norm's four-sample world step at any sign of the mean overlap of its pre-activations.

:mod:`meanfield.finite.layernorm_world`'s step through a layer-normed layer j (the realized averages' influence-function
covariance and their response through the correlation, :func:`meanfield.finite.fourpoint_layernorm.realized_averages`;
the projected sandwich Y^j) integrates its four-sample Gaussian moments by conditioning on the common part of the
standardized pre-activations z_a = sqrt(rho) w + sqrt(1 - rho) e_a, which needs rho = q_2 / q_1 >= 0. Above a batch
norm the overlap can be negative (tanh, sigma_w^2 = 2, sigma_b^2 = 0.1 over a batch norm on layer 1: Q_ts = -0.012;
the batch norm centres its units over the T samples, so an odd unit's K_ts is negative, of the order of -K_tt / (T -
1), and sigma_w^2 K_ts + sigma_b^2 < 0 for sigma_b^2 small). The law is the same Gaussian; only the quadrature
changes: with rho < 0 the common part is taken imaginary, z_a = sqrt(1 - rho) e_a + i sqrt(-rho) w, which has the same
covariance (1 - rho) I + rho 1 1^T, and every product of functions of the z_a is an average over w of products of the
Gaussian-smoothed (entire) one-sample functions (:func:`meanfield.finite.multibn.negative_overlap_mean`, here with the
kinds phi, phi' and z).

:func:`layer_norm_step_any` is that step with :func:`standardized_moment` (either quadrature by the sign of rho) for
every four-sample moment; the two-sample parts (the linear coefficients of the influence functions, the Price
gradients of the response) are :func:`meanfield.finite.corrections.two_sample_rule` and ``two_sample_layer``, which take
any correlation. At rho >= 0 it is ``layer_norm_step`` to rounding (a test), so the algebra is the same; it is written
out here because those modules' quadrature is fixed inside them.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgument
from ..integrals.quadrature import Unit
from ..spec.network import LayerNorm, Network
from .corrections import two_sample_layer, two_sample_rule
from .layernorm_world import four_sample_moment
from .multibn import negative_overlap_mean

__all__ = ["standardized_moment", "layer_norm_step_any"]

_P4 = tuple((a, b) for a in range(4) for b in range(a, 4))        # fourworld's ten pairs of four samples


def standardized_moment(phi, rho: float, factors: tuple) -> float:
    """E[prod over factors (kind, i)] of phi(z_i) ('f'), phi'(z_i) ('d') or z_i ('u') for four exchangeable standard
    normal samples with correlation rho, -1/3 < rho < 1 (any sign: conditioning on the common part for rho >= 0, an
    imaginary common part below).

    Example:
        >>> from meanfield.spec.network import Network
        >>> phi = Network(2, "tanh", 2, 0.1).phi(1)
        >>> round(standardized_moment(phi, -0.2, (("u", 0), ("u", 1))), 12), round(standardized_moment(phi, 0.2,
        ...                                                                     (("u", 0), ("u", 1))), 12)
        (-0.2, 0.2)
    """
    rho = float(rho)
    if not -1.0 / 3.0 < rho < 1.0:
        raise InvalidArgument("rho", rho, "a correlation of four exchangeable samples, -1/3 < rho < 1")
    if rho >= 0:
        return four_sample_moment(phi, 1.0, rho, factors)
    return negative_overlap_mean(Unit.of(phi), 1.0, rho, factors)


def _fac(kind: int, a: int, b: int) -> tuple:
    k = "f" if kind == 0 else "d"
    return ((k, a), (k, b))


def _averages(phi, unit: Unit, q1: float, q2: float) -> tuple:
    """(means, M x covariance, response to Q) of the realized averages behind the norm over four samples:
    :func:`meanfield.finite.fourpoint_layernorm.realized_averages` (layer_norm=True, samples=4) at any overlap."""
    rho = q2 / q1

    def E(factors: tuple) -> float:
        return standardized_moment(phi, rho, factors)

    pairs = list(_P4)
    comps = [(0, a, b) for a, b in pairs] + [(1, a, b) for a, b in pairs]
    size = len(comps)
    rule = two_sample_rule(unit, 1.0, rho, 1.0)
    lay = two_sample_layer(unit, 1.0, rho, 1.0)
    z, y = rule.u, rule.y
    raw = np.array([E(_fac(*c)) for c in comps])
    # the linear part of each influence function: alpha_i z_i + beta_i (z_i^2 - 1) over the component's samples
    lin, pair_coef = [], {}
    for r, (kind, a, b) in enumerate(comps):
        if a == b:
            ez, ez2 = E(_fac(kind, a, a) + (("u", a),)), E(_fac(kind, a, a) + (("u", a), ("u", a)))
            # Stein at unit variance: E[d g] = E[g z], E[z d g] = E[g (z^2 - 1)]
            coef = {a: [ez, 0.5 * (ez2 - raw[r])]}
        else:
            if kind not in pair_coef:
                f = unit.f if kind == 0 else unit.df
                g = np.asarray(f(z[0]), dtype=float) * np.asarray(f(z[1]), dtype=float)
                pair_coef[kind] = [(rule.mean(g * y[i]), 0.5 * rule.mean(g * (z[i] * y[i] - 1))) for i in (0, 1)]
            coef = {x: list(pair_coef[kind][i]) for i, x in enumerate((a, b))}
        if kind == 1:                                    # the factor 1 / (s_a s_b): (1 + eps)^-1/2 per sample
            for x in (a, b):
                coef[x][1] += 0.5 * raw[r]
        lin.append(coef)
    R = np.full((4, 4), rho) + (1 - rho) * np.eye(4)
    ez = np.array([[E(_fac(*c) + (("u", x),)) for x in range(4)] for c in comps])
    ez2 = np.array([[E(_fac(*c) + (("u", x), ("u", x))) - raw[r] for x in range(4)] for r, c in enumerate(comps)])
    second = np.array([[E(_fac(*c) + _fac(*d)) for d in comps] for c in comps])
    sigma = second - np.outer(raw, raw)
    for r in range(size):
        for s_ in range(size):
            v = 0.0
            for x, (al, be) in lin[s_].items():
                v -= al * ez[r, x] + be * ez2[r, x]
            for x, (al, be) in lin[r].items():
                v -= al * ez[s_, x] + be * ez2[s_, x]
            for x, (al, be) in lin[r].items():
                for x2, (al2, be2) in lin[s_].items():
                    v += al * al2 * R[x, x2] + 2 * be * be2 * R[x, x2] ** 2
            sigma[r, s_] += v
    scale = np.array([1.0 if kind == 0 else 1.0 / q1 for kind, _, _ in comps])
    # response through rho(Q) and, for phi' averages, 1 / sqrt(Q_aa Q_bb)
    jac = np.zeros((size, len(pairs)))
    F1, c1, c_rho, c_one = float(lay.gradF[1, 1]), float(lay.gradc[1, 1]), float(lay.c[1]), float(lay.c[0])
    for r, (kind, a, b) in enumerate(comps):
        if a == b:
            if kind == 1:
                jac[r, pairs.index((a, a))] = -c_one / q1**2
            continue
        if kind == 0:
            jac[r, pairs.index((a, b))] = F1 / q1
            jac[r, pairs.index((a, a))] = jac[r, pairs.index((b, b))] = -rho * F1 / (2 * q1)
        else:
            jac[r, pairs.index((a, b))] = c1 / q1**2
            jac[r, pairs.index((a, a))] = jac[r, pairs.index((b, b))] = -(rho * c1 + c_rho) / (2 * q1**2)
    return raw * scale, sigma * np.outer(scale, scale), jac


def _sandwich(phi, unit: Unit, q1: float, q2: float, theta: tuple, old: dict, Mj: int, Mb: int, sw: float,
              first: bool) -> dict:
    """Y^j above the norm (:mod:`meanfield.finite.layernorm_world`'s projected E4 and Stein part with D~) at any
    overlap."""
    rho = q2 / q1

    def E(factors: tuple) -> float:
        return standardized_moment(phi, rho, factors)

    rule = two_sample_rule(unit, 1.0, rho, 1.0)
    z, y = rule.u, rule.y
    f = [np.asarray(unit.f(x), dtype=float) for x in z]
    d = [np.asarray(unit.df(x), dtype=float) for x in z]
    # D~_u[a, r]: a = u: zero (Stein at unit variance); a != u: the pair (a, u) as samples (0, 1) of the two-sample rule
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


def layer_norm_step_any(net: Network, widths: tuple, j: int, qa: float, qb: float, theta: tuple, y: dict) -> tuple:
    """(means, M x cov, d/dQ, Y^j) of layer j for :func:`meanfield.finite.fourworld.carry_world`, at any sign of the
    mean overlap qb: the layer-norm step of :func:`meanfield.finite.layernorm_world.layer_norm_step` at a layer-normed
    layer j (module docstring; the plain layers are fourworld's step, which takes a negative overlap already).

    Args:
        net: the network; widths: its widths; j: the layer (>= 1); qa, qb: the mean pre-activation kernel (|qb| <
            qa, qb > -qa / 3); theta: the mean NTK (tt, ts) of the layer's pre-activations; y: Y^{j-1} for (0, 0),
            (0, 1).

    Raises:
        InvalidArgument: j not a layer-normed hidden layer, a kernel outside that range.

    Example:
        >>> from meanfield.finite.layernorm_world import layer_norm_step
        >>> net = Network(3, "tanh", 2, 0.1, norms=["layer:2"])
        >>> y0 = {(0, 0): np.eye(4), (0, 1): np.eye(4)}
        >>> a = layer_norm_step_any(net, net.widths(64), 2, 1.1, 0.05, (65.0, 33.0), y0)
        >>> b = layer_norm_step(net, net.widths(64), 2, 1.1, 0.05, (65.0, 33.0), y0)
        >>> all(np.allclose(x, x0, rtol=1e-9, atol=1e-12) for x, x0 in zip(a[:3], b[:3]))
        True
        >>> means, sigma, jac, y = layer_norm_step_any(net, net.widths(64), 2, 1.1, -0.05, (65.0, -3.0), y0)
        >>> bool(means[1] < 0), bool(np.linalg.eigvalsh(sigma).min() > -1e-9)
        (True, True)
    """
    if not isinstance(net, Network) or not 1 <= j < net.depth or not isinstance(net.norm_at(j), LayerNorm):
        raise InvalidArgument("j", j, "a layer-normed hidden layer of a numeric network")
    qa, qb = float(qa), float(qb)
    if not (qa > abs(qb) and qb > -qa / 3):
        raise InvalidArgument("qa, qb", (qa, qb), "a four-sample kernel, qa > |qb| and qb > -qa / 3")
    phi, unit = net.phi(j), Unit.of(net.phi(j))
    Mj, Mb, sw, first = widths[j], widths[j - 1], float(net.sigma_w2[j - 1]), j == 1
    means, sigma, jac = _averages(phi, unit, qa, qb)
    return means, sigma, jac, _sandwich(phi, unit, qa, qb, theta, y, Mj, Mb, sw, first)
