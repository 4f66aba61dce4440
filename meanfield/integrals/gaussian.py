"""The three public functions: dispatch on the kind of argument (numbers, ``dps``, sympy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import sympy

from ..errors import InvalidArgument, check_int
from . import numeric, pairs, symbolic
from .symbolic import GaussianExpectation, PairExpectation

__all__ = ["second_moment", "cross_moment", "pair_moment", "GaussianExpectation", "PairExpectation"]


def _is_sympy(*values: Any) -> bool:
    return any(isinstance(v, sympy.Basic) for v in values)


def _check_dps(dps: Any) -> int | None:
    if dps is None:
        return None
    return check_int("dps", dps, minimum=1)


def _scalar_for_mp(name: str, value: Any):
    arr = np.asarray(value)
    if arr.ndim:
        raise InvalidArgument(name, value, "a scalar when dps is given (mpmath evaluates one point)")
    return value


def second_moment(f: Any, q: Any, *, dps: int | None = None) -> Any:
    """E[phi(sqrt(q) z)^2], z ~ N(0, 1): the forward variance map qhat_1 = E[phi(u)^2], Var u = q.

    Args:
        f: an :class:`~meanfield.Activation` (``meanfield.activation("tanh")``).
        q: the variance q >= 0: a float or numpy array (vectorized), or a sympy expression.
        dps: if given, evaluate with mpmath at this many decimal digits (scalar q only).

    Returns:
        numpy float64 (array of q's shape) for numeric q; an mpmath ``mpf`` when ``dps`` is given;
        a sympy expression (closed form, or an unevaluated :class:`GaussianExpectation`) when q is
        a sympy object. At q = 0 the value is phi(0)^2.

    Raises:
        InvalidArgument: q < 0 or not finite, f not an Activation, or f with symbolic parameters
            on a numeric path.

    Example:
        >>> import meanfield as mf, sympy
        >>> float(second_moment(mf.activation("relu"), 2.0))
        1.0
        >>> second_moment(mf.activation("erf"), sympy.Symbol("q", positive=True))
        2*asin(2*q/(2*q + 1))/pi
        >>> second_moment(mf.activation("tanh"), 1.0, dps=20)
        mpf('0.394294490397841...')
    """
    f = numeric.check_activation(f)
    dps = _check_dps(dps)
    if _is_sympy(q):
        return symbolic.second_moment(f, q)
    if dps is not None:
        q = _scalar_for_mp("q", q)
        numeric.require_numeric(f)
        _check_mp_variance("q", q)  # not through float: mpmath values beyond 1e308 are the point of dps
        return numeric.mp_second(f, _exact(q), dps)
    return numeric.fast_second(f, q)


def cross_moment(f: Any, q1: Any, q2: Any, *, dps: int | None = None) -> Any:
    """I_phi[q1, q2] = E[phi(u) phi(v)], (u, v) centred Gaussian, Var = q1, Cov(u, v) = q2.

    Written as in the theory notes: u = sqrt(q1) x, v = sqrt(q1) (c x + sqrt(1 - c^2) y), c = q2/q1.

    Args:
        f: an :class:`~meanfield.Activation`.
        q1: the common variance, >= 0 (float, array, or sympy).
        q2: the covariance, |q2| <= q1; an excess of up to 1e-12 relative is treated as rounding
            and q2 taken as exactly +-q1. q1 = 0 requires q2 = 0.
        dps: if given, evaluate with mpmath at this many digits (scalar arguments only).

    Returns:
        As :func:`second_moment`: float64 array (broadcast shape), mpmath number, or sympy.

    Raises:
        InvalidArgument: a bad variance or covariance (naming which, the value, and the bound),
            non-finite input, f not an Activation or with symbolic parameters on a numeric path.

    Example:
        >>> import meanfield as mf
        >>> float(cross_moment(mf.activation("relu"), 1.0, 1.0))   # c = 1: the second moment
        0.5
        >>> cross_moment(mf.activation("linear"), 3.0, [0.5, -1.0]).tolist()
        [0.5, -1.0]
    """
    f = numeric.check_activation(f)
    dps = _check_dps(dps)
    if _is_sympy(q1, q2):
        return symbolic.cross_moment(f, q1, q2)
    if dps is not None:
        q1 = _scalar_for_mp("q1", q1)
        q2 = _scalar_for_mp("q2", q2)
        import mpmath

        numeric.require_numeric(f)
        _check_mp_variance("q1", q1)
        q1e, q2e = _exact(q1), _exact(q2)
        if not mpmath.isfinite(q2e):
            raise InvalidArgument("q2", q2, "a finite real number (no nan or inf)")
        if abs(q2e) > q1e * (1 + numeric.RTOL):
            raise InvalidArgument("q2", q2, f"a covariance with |q2| <= q1 = {q1} (|c| <= 1)")
        if abs(q2e) > q1e:  # within RTOL: exactly +-q1
            q2e = q1e if q2e > 0 else -q1e
        return numeric.mp_cross(f, q1e, q2e, dps)
    return numeric.fast_cross(f, q1, q2)


def pair_moment(f: Any, qa: Any, qb: Any, qab: Any, *, dps: int | None = None) -> Any:
    """E[phi(u) phi(v)], (u, v) centred Gaussian, Var u = qa, Var v = qb, Cov(u, v) = qab.

    The unequal-variance form of :func:`cross_moment` (which is ``pair_moment(f, q1, q1, q2)``,
    reproduced to the last bit). With rho = qab / sqrt(qa qb): relu gives the arc-cosine kernel
    sqrt(qa qb) (sin t + (pi - t) cos t) / (2 pi), t = arccos(rho); erf gives
    (2/pi) arcsin(2 qab / sqrt((1 + 2 qa)(1 + 2 qb))).

    Args:
        f: an :class:`~meanfield.Activation` (a derivative ``f.derivative`` works the same way).
        qa: Var u >= 0 (float, array, or sympy).
        qb: Var v >= 0.
        qab: the covariance, |qab| <= sqrt(qa qb); an excess of up to 1e-12 relative is treated as
            rounding and qab taken as exactly +-sqrt(qa qb). qa = 0 or qb = 0 requires qab = 0
            (then the value is phi(0) E[phi(w)], w the other variable).
        dps: if given, evaluate with mpmath at this many digits (scalar arguments only).

    Returns:
        float64 array (the broadcast shape of qa, qb, qab), an mpmath number when ``dps`` is given,
        or for sympy arguments a closed form or an unevaluated :class:`PairExpectation`.

    Raises:
        InvalidArgument: a negative or non-finite variance, |qab| > sqrt(qa qb), shapes that do not
            broadcast, f not an Activation or with symbolic parameters on a numeric path.

    Example:
        >>> import meanfield as mf
        >>> relu = mf.activation("relu")
        >>> round(float(pair_moment(relu, 4.0, 1.0, 2.0)), 12)     # rho = 1: v = u / 2
        1.0
        >>> pair_moment(mf.activation("linear"), 2.0, [1.0, 3.0], 0.5).tolist()
        [0.5, 0.5]
        >>> float(pair_moment(mf.activation("tanh"), 0.5, 2.0, 0.0))   # odd phi, independent
        0.0
    """
    f = numeric.check_activation(f)
    dps = _check_dps(dps)
    if _is_sympy(qa, qb, qab):
        return symbolic.pair_moment(f, qa, qb, qab)
    if dps is not None:
        import mpmath

        qa, qb, qab = (_scalar_for_mp(n, v) for n, v in (("qa", qa), ("qb", qb), ("qab", qab)))
        numeric.require_numeric(f)
        _check_mp_variance("qa", qa)
        _check_mp_variance("qb", qb)
        a, b, ab = _exact(qa), _exact(qb), _exact(qab)
        if not mpmath.isfinite(ab):
            raise InvalidArgument("qab", qab, "a finite real number (no nan or inf)")
        with mpmath.workdps(dps + 10):
            g = a if a == b else mpmath.sqrt(a * b)
        if abs(ab) > g * (1 + numeric.RTOL):
            raise InvalidArgument("qab", qab, f"a covariance with |qab| <= sqrt(qa qb) = {float(g)!r} (|rho| <= 1)")
        if abs(ab) > g:  # within RTOL: exactly +-sqrt(qa qb)
            ab = g if ab > 0 else -g
        return pairs.mp_pair(f, a, b, ab, dps)
    return pairs.fast_pair(f, qa, qb, qab)


def _check_mp_variance(name: str, value: Any) -> None:
    import mpmath

    try:
        v = _exact(value)
    except (TypeError, ValueError):
        raise InvalidArgument(name, value, "a finite real number") from None
    if not mpmath.isfinite(v):
        raise InvalidArgument(name, value, "a finite real number (no nan or inf)")
    if v < 0:
        raise InvalidArgument(name, value, "a variance >= 0")


def _exact(value: Any):
    """The number as mpmath can take it without losing digits (floats are exact binary numbers)."""
    import mpmath

    if isinstance(value, (int, np.integer)):
        return mpmath.mpf(int(value))
    if isinstance(value, mpmath.mpf):
        return value
    if isinstance(value, sympy.Basic):
        return mpmath.mpf(sympy.N(value, 30))
    return mpmath.mpf(float(value))
