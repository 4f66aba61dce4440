"""Whether the Gaussian moments of an activation exist and the quadrature can compute them.

:func:`check_moments_exist` refuses, with :class:`~meanfield.InvalidArgument` naming the activation,
moments that are infinite or beyond the quadrature: phi^2 not integrable near a point (a power-law
singularity, :func:`square_singularity`) or phi growing like exp(a x^2) (:func:`gaussian_growth`)
with a q too large. Used by the fast and mpmath paths of :mod:`.numeric` and :mod:`.pairs`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import mpmath
import numpy as np

from ..errors import InvalidArgument
from ..spec.activations import Activation

__all__ = ["check_moments_exist", "gaussian_growth", "square_singularity"]

# -- existence of the moments -------------------------------------------------------------------------

# The quadrature truncates at _TAIL standard deviations. For phi^2 ~ exp(2 a x^2) the integrand decays only
# like exp(-(1/2 - 2 a q) z^2): measured error 7e-13 at a q = 0.1, 5e-9 at 0.15, 3e-5 at 0.2, 6% at 0.24
# (exp(x**2)), so beyond a q = 0.1 a number would be silently wrong; at a q >= 1/4 the moment is infinite.
_GROWTH_ACCURATE = 0.1


@functools.lru_cache(maxsize=512)
def gaussian_growth(f: Activation) -> float:
    """a when |phi(x)| grows like exp(a x^2) (inf when faster, 0 when slower: polynomials, exp(k x)).

    From log|phi(x)| / x^2 at |x| = 100 and 1000 in mpmath (no overflow): constant for Gaussian growth,
    falling like log(x)/x^2 or 1/x for polynomial or exponential growth.

    Example:
        >>> from meanfield.spec.activations import Activation, activation
        >>> gaussian_growth(Activation.from_expr("exp(x**2/2)")), gaussian_growth(activation("relu"))
        (0.5, 0.0)
    """
    def rate(x):
        values = [abs(f.mp(mpmath.mpf(sign * x))) for sign in (1, -1)]
        top = max(values)
        return float(mpmath.log(top)) / x ** 2 if top > 0 else -math.inf

    try:
        with mpmath.workdps(30):
            near, far = rate(100), rate(1000)
    except Exception:  # noqa: BLE001 - a function mpmath cannot evaluate there: no evidence of growth
        return 0.0
    if not far > 0 or far < 0.5 * near:
        return 0.0
    if far > 2 * near:
        return math.inf
    return round(far, 12)


@functools.lru_cache(maxsize=512)
def square_singularity(f: Activation) -> tuple[float, float] | None:
    """(x0, p) when |phi(x)| ~ |x - x0|^-p (p > 0.1: unbounded) near a kink or 0, else None.

    phi^2 is not integrable there for p >= 1/2; for smaller p the moment exists but the quadrature
    (which needs a bounded integrand) cannot compute it.

    Example:
        >>> from meanfield.spec.activations import Activation
        >>> square_singularity(Activation.from_expr("Abs(x)**0.5").derivative)
        (0.0, 0.5)
        >>> square_singularity(Activation.from_expr("tanh(x)")) is None
        True
    """
    points = sorted(set(f.kinks or ()) | {0.0})
    with mpmath.workdps(30):
        for x0 in points:
            for side in (1, -1):
                try:
                    near = abs(f.mp(mpmath.mpf(x0) + side * mpmath.mpf("1e-12")))
                    far = abs(f.mp(mpmath.mpf(x0) + side * mpmath.mpf("1e-6")))
                except (ZeroDivisionError, ValueError, TypeError, OverflowError):
                    return (float(x0), math.inf)
                if not (mpmath.isfinite(near) and mpmath.isfinite(far)):
                    return (float(x0), math.inf)
                if near > 0 and far > 0:
                    p = float(mpmath.log(near / far) / mpmath.log(10 ** 6))
                    if p > 0.1:  # a power law; a log singularity gives p ~ 0.05
                        return (float(x0), round(p, 3))
    return None


def check_moments_exist(f: Activation, q: Any) -> None:
    """Refuse (InvalidArgument naming the activation) moments E[phi(u)^2] that are infinite at these variances,
    or that the quadrature cannot resolve: phi^2 not integrable near a point (phi' of sqrt|x|), or phi growing
    like exp(a x^2) with a q too large.

    Example:
        >>> from meanfield.spec.activations import Activation
        >>> check_moments_exist(Activation.from_expr("exp(x**2)"), 2.0)
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: activation='exp(x**2)' is not allowed: expected ...
    """
    qmax = float(np.max(q)) if np.size(q) else 0.0
    if qmax <= 0:
        return
    singular = square_singularity(f)
    if singular is not None:
        x0, p = singular
        where = "|x|" if x0 == 0 else f"|x - {x0:g}|"
        shape = "is infinite" if p == math.inf else f"grows like {where}^-{p:g}"
        backward = " (the backward pass needs E[phi'(u)^2])" if f.name.endswith("'") else ""
        if p >= 0.49:
            raise InvalidArgument("activation", f.name, "an activation whose Gaussian moments exist",
                                  f"near x = {x0:g}, {f.name} {shape}, so E[({f.name})(u)^2] is infinite" + backward)
        raise InvalidArgument("activation", f.name, "an activation that is bounded near every point",
                              f"near x = {x0:g}, {f.name} {shape}: E[({f.name})(u)^2] exists, but the quadrature "
                              "needs a bounded integrand" + backward)
    a = gaussian_growth(f)
    if a > 0 and qmax * a > _GROWTH_ACCURATE:
        if a == math.inf:
            why = f"{f.name} grows faster than any exp(a x^2), so E[phi(u)^2] is infinite for every q > 0"
        elif qmax * a >= 0.25:
            why = (f"{f.name} grows like exp({a:g} x^2), so E[phi(u)^2] is infinite for q >= 1/(4a) = "
                   f"{0.25 / a:.4g}; here q = {qmax:.4g}")
        else:
            why = (f"{f.name} grows like exp({a:g} x^2): E[phi(u)^2] diverges at q = 1/(4a) = {0.25 / a:.4g} and "
                   f"the Gaussian quadrature is accurate only for q <= {_GROWTH_ACCURATE / a:.4g}; here q = {qmax:.4g}")
        raise InvalidArgument("activation", f.name, "an activation whose Gaussian moments exist", why)
