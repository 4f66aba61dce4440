"""Quadrature for expectations of a unit's nonlinearity under normal laws, split at its kinks.

:func:`normal_rule` gives nodes and weights for E[f(Z)], Z ~ N(0, 1), piecewise Gauss-Legendre on [-12, 12]
between given breakpoints; :class:`Unit` carries phi, phi' and their kinks; :func:`breaks` maps the kinks of
g(shift + scale e) to the variable e. Used by the four-point and population computations of
:mod:`meanfield.finite`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["normal_rule", "Unit", "IDENTITY", "breaks", "RANGE", "BULK"]


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(64)
RANGE = 12.0  # |Z| <= 12 carries all but 4e-33 of a standard normal's mass
# the breaks of a smooth unit (:func:`breaks`): one 64-node piece over [-12, 12] puts its nodes 0.6 apart near 0, too
# sparse for a phi with poles near the real axis (tanh at +-i pi/2: E[tanh^2 tanh'^2] 0.65% off); split at the normal's
# bulk it is exact to rounding
BULK = np.array([-3.0, 0.0, 3.0])


def normal_rule(breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[f(Z)], Z ~ N(0, 1), per row of ``breaks`` (rows x k points where f is not smooth):
    Gauss-Legendre on each piece of [-12, 12] between the breaks, the normal density folded into the weights.
    Exact to rounding for piecewise-smooth f (relu, step) where Gauss-Hermite converges only algebraically.

    Example:
        >>> x, w = normal_rule(np.array([[0.0]]))           # E[max(Z, 0)] = 1/sqrt(2 pi)
        >>> round(float((w * np.maximum(x, 0)).sum()), 12) == round(1 / math.sqrt(2 * math.pi), 12)
        True
    """
    b = np.clip(np.sort(np.atleast_2d(breaks), axis=1), -RANGE, RANGE)
    rows = b.shape[0]
    edges = np.concatenate([np.full((rows, 1), -RANGE), b, np.full((rows, 1), RANGE)], axis=1)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    half = (hi - lo) / 2
    x = (lo + hi) / 2 + half * _GL_NODES
    w = half * _GL_WEIGHTS * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return x.reshape(rows, -1), w.reshape(rows, -1)


@dataclass(frozen=True)
class Unit:
    """A unit's nonlinearity for the quadratures: phi, phi' (numpy) and the points where either is not smooth."""

    f: Any
    df: Any
    kinks: tuple | None

    @staticmethod
    def of(phi: Any) -> "Unit":
        k1, k2 = phi.kinks, phi.derivative.kinks
        kinks = None if k1 is None or k2 is None else tuple(sorted(set(k1) | set(k2)))
        return Unit(phi, phi.derivative, kinks)


IDENTITY = Unit(lambda x: x, lambda x: np.ones_like(x), ())


def breaks(unit: Unit, shift: np.ndarray, scale: Any) -> np.ndarray:
    """Breakpoints in the standard-normal variable e of g(shift + scale e) (rows: the shifts; ``scale`` a number or
    one per shift, nonzero where the unit has kinks): the kinks mapped to e, or :data:`BULK` for a smooth unit.

    Example:
        >>> breaks(Unit(abs, np.sign, (0.0,)), np.array([1.0, -2.0]), 2.0)   # |1 + 2e| kinks at e = -1/2
        array([[-0.5],
               [ 1. ]])
    """
    shift = np.atleast_1d(shift)
    if unit.kinks is None:  # kinks unknown: many equal pieces
        return np.broadcast_to(np.linspace(-RANGE, RANGE, 33)[1:-1], (shift.size, 31))
    if np.all(np.asarray(scale) == 0):
        return np.empty((shift.size, 0))
    if not unit.kinks:  # smooth: the normal's bulk (BULK); piecewise elementary units need only their kinks
        return np.broadcast_to(BULK, (shift.size, BULK.size))
    return (np.asarray(unit.kinks)[None, :] - shift[:, None]) / np.reshape(scale, (-1, 1))
