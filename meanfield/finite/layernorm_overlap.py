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
any correlation. At rho >= 0 it is ``layer_norm_step`` to rounding (a test): the algebra is one piece of code,
:func:`meanfield.finite.fourpoint_layernorm.layer_norm_averages` and
:func:`meanfield.finite.layernorm_world.layer_norm_sandwich`, fed this module's moments.
"""

from __future__ import annotations

from ..errors import InvalidArgument
from ..integrals.quadrature import Unit
from ..spec.network import LayerNorm, Network
from .fourpoint_layernorm import layer_norm_averages
from .layernorm_world import four_sample_moment, layer_norm_sandwich
from .multibn import negative_overlap_mean

__all__ = ["standardized_moment", "layer_norm_step_any"]


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
    :func:`meanfield.finite.fourpoint_layernorm.layer_norm_averages` with the moments at any overlap."""
    rho = q2 / q1

    def moment(components: tuple, powers: dict | None = None) -> float:
        factors = sum((_fac(*c) for c in components), ()) + tuple(("u", x) for x, k in (powers or {}).items()
                                                                  for _ in range(k))
        return standardized_moment(phi, rho, factors)

    return layer_norm_averages(unit, q1, q2, 4, moment)


def _sandwich(phi, unit: Unit, q1: float, q2: float, theta: tuple, old: dict, Mj: int, Mb: int, sw: float,
              first: bool) -> dict:
    """Y^j above the norm (:func:`meanfield.finite.layernorm_world.layer_norm_sandwich`) at any overlap."""
    rho = q2 / q1
    return layer_norm_sandwich(unit, q1, q2, theta, old, Mj, Mb, sw, first,
                               moment=lambda factors: standardized_moment(phi, rho, factors))


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
        >>> import numpy as np
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
