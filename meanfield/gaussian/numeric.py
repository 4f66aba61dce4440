"""Numeric Gaussian expectations: a vectorized numpy fast path and an mpmath path at any precision.

Definitions (THEORY.md sec. 2), z, x, y iid N(0, 1), c = q2 / q1:

    E[phi^2](q)     = E[phi(sqrt(q) z)^2]
    I_phi[q1, q2]   = E[phi(u) phi(v)],  u = sqrt(q1) x,  v = sqrt(q1) (c x + sqrt(1 - c^2) y)

The fast path uses, in this order: a closed form (:mod:`.closed_forms`); for other smooth
activations a quadrature rule adapted to the scale (see :func:`_smooth_cross`); for kinked ones a
rule split at the kinks. Plain Gauss-Hermite is never used on a kinked function.

Edge conventions (shared by every path):

* q = 0 (zero variance): u = v = 0 exactly, so E[phi^2](0) = I_phi[0, 0] = phi(0)^2. For a
  discontinuous phi (step, sign) this differs from the limit q -> 0+.
* |q2| may exceed q1 by at most ``RTOL = 1e-12`` relative (rounding in the caller); such a q2 is
  taken as exactly +-q1. Beyond that, and for q1 = 0 with q2 != 0, :class:`InvalidArgument`.
"""

from __future__ import annotations

import functools
from typing import Any

import mpmath
import numpy as np
import scipy.special

from ..activations import Activation
from ..errors import InvalidArgument
from .closed_forms import closed_form

__all__ = ["RTOL", "check_activation", "prepare", "fast_second", "fast_cross", "mp_second", "mp_cross"]

#: Relative amount by which |q2| may exceed q1 (rounding) before it is an error.
RTOL = 1e-12

# Gaussian tails beyond 9.5 standard deviations weigh < 2e-21: the truncation of every rule.
_TAIL = 9.5


# -- validation ------------------------------------------------------------------------------------


def check_activation(f: Any) -> Activation:
    """Return ``f`` if it is an :class:`Activation` with numeric parameters; else raise."""
    if not isinstance(f, Activation):
        hint = "use meanfield.activation(%r)" % f if isinstance(f, str) else None
        raise InvalidArgument("f", f, "an Activation (meanfield.activation(name) or Activation.from_expr(...))",
                              hint)
    return f


def _require_numeric(f: Activation) -> None:
    if f.is_symbolic:
        raise InvalidArgument(
            "f", f.name, "an activation with numeric parameters for numeric evaluation",
            f"it has symbolic parameters {sorted(map(str, f.expr.free_symbols - {f.expr.free_symbols and None}))}; "
            "pass sympy arguments for a symbolic result or substitute numbers",
        )


def _as_float_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything numpy cannot read is simply not allowed
        raise InvalidArgument(name, value, "a finite real number or array of them") from None
    if arr.dtype == object or np.iscomplexobj(arr) or arr.dtype.kind not in "biuf":
        try:
            if np.iscomplexobj(arr):
                raise TypeError
            arr = arr.astype(float)
        except (TypeError, ValueError):
            raise InvalidArgument(name, value, "a finite real number or array of them") from None
    arr = arr.astype(float, copy=False)
    bad = ~np.isfinite(arr)
    if np.any(bad):
        raise InvalidArgument(name, _first(arr, bad), "a finite real number (no nan or inf)")
    return arr


def _first(arr: np.ndarray, mask: np.ndarray) -> Any:
    if arr.ndim == 0:
        return float(arr)
    idx = tuple(int(i[0]) for i in np.nonzero(mask))
    return f"{arr[idx]!r} at index {idx}" if arr.size > 1 else float(arr.reshape(-1)[0])


def prepare(q1: Any, q2: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate and broadcast (q1, q2) to float arrays; |q2| within RTOL of q1 becomes +-q1.

    Example:
        >>> prepare(2.0, -2.0 * (1 + 1e-14))
        (array(2.), array(-2.))
    """
    a = _as_float_array("q1" if q2 is not None else "q", q1)
    neg = a < 0
    if np.any(neg):
        raise InvalidArgument("q1" if q2 is not None else "q", _first(a, neg), "a variance >= 0")
    if q2 is None:
        return a, None
    b = _as_float_array("q2", q2)
    try:
        a, b = np.broadcast_arrays(a, b)
    except ValueError:
        raise InvalidArgument("q2", f"shape {np.shape(b)}", f"a shape broadcastable with q1's {np.shape(a)}") from None
    over = np.abs(b) > a * (1 + RTOL)
    if np.any(over):
        idx = np.nonzero(over)
        i = tuple(int(k[0]) for k in idx) if a.ndim else ()
        raise InvalidArgument(
            "q2", float(b[i]), f"a covariance with |q2| <= q1 = {float(a[i])!r} (|c| <= 1)",
            "q1 = 0 forces q2 = 0" if a[i] == 0 else f"relative excess {abs(b[i]) / a[i] - 1:.3g} > {RTOL}",
        )
    b = np.clip(b, -a, a)  # only rounding-level excess reaches here (documented above)
    return np.array(a, dtype=float), np.array(b, dtype=float)


# -- node sets ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for the standard normal density (sum of weights 1)."""
    z, w = scipy.special.roots_hermitenorm(n)
    return z, w / w.sum()


def _phi(t):
    return np.exp(-0.5 * t * t) * (1.0 / np.sqrt(2 * np.pi))


# Step of the trapezoid rules below. In the mapped variable w the integrands are analytic in a strip
# of half-width ~pi/4 (limited by the Gaussian factor), so the error is ~exp(-pi^2 / (2 h)) ~ 1e-15.
_H = 0.14


def _map_rule(center, kappa, scale, lo, hi, h=_H):
    """Trapezoid rule on [lo, hi] in w(x) = asinh((x - c)/kappa) + (x - c)/scale (rows of arrays).

    The node density is the sum of a logarithmic one around c (resolving phi's features of size
    kappa there, however wide the interval) and a uniform one of spacing h * scale (resolving a
    Gaussian of sd ~ scale/6 anywhere in the interval); scale = inf gives the plain sinh map.
    Returns nodes x and weights dx/dw * h, shape (rows, n), n the same for all rows.
    """
    inv_scale = np.where(np.isfinite(scale), 1.0 / scale, 0.0)

    def w_of(y):
        return np.arcsinh(y / kappa) + y * inv_scale

    wlo, whi = w_of(lo - center), w_of(hi - center)
    span = whi - wlo
    n = int(np.ceil(np.max(span) / h)) + 1 if span.size else 2
    n = max(n, 3)
    t = np.linspace(0.0, 1.0, n)
    w = wlo[:, None] + span[:, None] * t
    k, s = kappa[:, None], inv_scale[:, None]
    # invert w(y) by Newton from the smaller of the two one-term inverses (monotone, converges fast)
    y_log = k * np.sinh(np.clip(w, -700, 700))
    with np.errstate(divide="ignore", invalid="ignore"):
        y_lin = np.where(s > 0, w / np.where(s > 0, s, 1.0), np.inf)
    y = np.where(np.abs(y_log) < np.abs(y_lin), y_log, y_lin)
    for _ in range(30):
        r = np.sqrt(k * k + y * y)
        step = (np.arcsinh(y / k) + y * s - w) / (1.0 / r + s)
        y = y - step
        if np.all(np.abs(step) <= 1e-15 * (np.abs(y) + k)):
            break
    dxdw = 1.0 / (1.0 / np.sqrt(k * k + y * y) + s)
    wt = dxdw * (span[:, None] / (n - 1))
    wt[:, 0] *= 0.5
    wt[:, -1] *= 0.5
    return y + center[:, None], wt


def _de_rule(lo, hi, n):
    """Tanh-sinh rule on [lo, hi] (rows): clusters doubly exponentially at both ends, so a kink or
    a jump at an end costs nothing. Empty intervals get zero weights."""
    t = np.linspace(-3.2, 3.2, n)
    y = np.pi * np.sinh(t)
    length = (hi - lo)[:, None]
    x = lo[:, None] + length * scipy.special.expit(y)
    dx = length * (np.pi * np.cosh(t)) * scipy.special.expit(y) * scipy.special.expit(-y)
    return x, dx * (t[1] - t[0])


_DE_NODES = 60


# -- the fast path -----------------------------------------------------------------------------------


def _zero_value(f: Activation) -> float:
    return float(f(np.float64(0.0))) ** 2


def fast_second(f: Activation, q: Any) -> np.ndarray:
    """E[phi(sqrt(q) z)^2] on floats or arrays (numpy float64, the broadcast shape of q).

    Example:
        >>> from meanfield.activations import activation
        >>> float(fast_second(activation("relu"), 3.0))
        1.5
    """
    f = check_activation(f)
    _require_numeric(f)
    q, _ = prepare(q)
    out = np.empty(q.shape)
    zero = q == 0
    out[zero] = _zero_value(f)
    pos = ~zero
    if np.any(pos):
        cf = closed_form(f)
        qp = q[pos]
        if cf is not None:
            with np.errstate(all="ignore"):
                out[pos] = np.broadcast_to(cf.second(qp), qp.shape)
        else:
            res = np.empty(qp.shape)
            for sl in _chunks(qp.size, 4096):
                x, wt = _outer_nodes(f, qp[sl], None)
                res[sl] = np.sum(wt * np.square(f(x)), axis=-1)
            out[pos] = res
    return _finish(out, "second moment")


def fast_cross(f: Activation, q1: Any, q2: Any) -> np.ndarray:
    """I_phi[q1, q2] on floats or arrays (numpy float64, broadcast over q1 and q2).

    Example:
        >>> from meanfield.activations import activation
        >>> round(float(fast_cross(activation("relu"), 2.0, 0.0)), 12)   # q1 / (2 pi)
        0.318309886184
    """
    f = check_activation(f)
    _require_numeric(f)
    q1, q2 = prepare(q1, q2)
    out = np.empty(q1.shape)
    zero = q1 == 0
    out[zero] = _zero_value(f)
    pos = ~zero
    if np.any(pos):
        a, b = q1[pos], q2[pos]
        cf = closed_form(f)
        if cf is not None:
            with np.errstate(all="ignore"):
                out[pos] = np.broadcast_to(cf.cross(a, b), a.shape)
        else:
            res = np.empty(a.shape)
            for sl in _chunks(a.size, 32):
                res[sl] = _cross_chunk(f, a[sl], b[sl])
            out[pos] = res
    return _finish(out, "cross moment")


def _chunks(size: int, step: int):
    for start in range(0, size, step):
        yield slice(start, start + step)


def _finish(out: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(out)):  # a library bug, never the user's: say so rather than return nan
        raise FloatingPointError(f"meanfield.gaussian produced a non-finite {what}; please report")
    return out[()] if out.ndim == 0 else out


def _kink_points(f: Activation) -> tuple[float, ...] | None:
    """phi's kinks; None when phi is smooth. Unknown kinks (None from sympy) are treated as a kink
    at 0, the only place the catalogue's functions bend."""
    kinks = f.kinks
    if kinks == ():
        return None
    return kinks if kinks else (0.0,)


def _outer_nodes(f: Activation, q: np.ndarray, c: np.ndarray | None):
    """Nodes u and weights (density included) for E[g(u)], u ~ N(0, q), q > 0 (rows).

    Smooth phi: one sinh-mapped trapezoid centred at 0, kappa = min(1, sqrt q) (phi's scale or the
    Gaussian's, whichever is smaller). Kinked phi: tanh-sinh pieces between the kinks and, when the
    inner function phi(c u + ...) is nearly kinked too, the points kink / c.
    """
    sd = np.sqrt(q)
    lo, hi = -_TAIL * sd, _TAIL * sd
    kinks = _kink_points(f)
    if kinks is None:
        x, wt = _map_rule(np.zeros_like(q), np.minimum(1.0, sd), np.full_like(q, np.inf), lo, hi)
    else:
        cuts = [np.full_like(q, p) for p in kinks]
        if c is not None:
            safe = np.where(c != 0, c, 1.0)
            cuts += [np.where(c != 0, p / safe, p) for p in kinks]
        cuts = np.sort(np.clip(np.stack(cuts), lo, hi), axis=0)
        edges = [lo, *cuts, hi]
        parts = [_de_rule(edges[k], edges[k + 1], _DE_NODES) for k in range(len(edges) - 1)]
        x = np.concatenate([p[0] for p in parts], axis=1)
        wt = np.concatenate([p[1] for p in parts], axis=1)
    return x, wt * _phi(x / sd[:, None]) / sd[:, None]


def _inner(f: Activation, m: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """h = E[phi(m + sigma Y)], Y ~ N(0, 1), for rows m (P, N) and sigma (P,) (0 allowed)."""
    out = np.empty_like(m)
    s = np.broadcast_to(sigma[:, None], m.shape)
    exact = s == 0
    if np.any(exact):
        out[exact] = f(m[exact])
    kinks = _kink_points(f)
    if kinks is None:
        # narrow: phi(m + sigma y) is smooth on scale >= 4 in y, Gauss-Hermite converges fast
        narrow = (s > 0) & (s <= 0.25)
        if np.any(narrow):
            z, w = _hermite(40)
            out[narrow] = f(m[narrow][:, None] + s[narrow][:, None] * z) @ w
        wide = s > 0.25
        if np.any(wide):
            out[wide] = _inner_wide_smooth(f, m[wide], s[wide])
    else:
        pos = s > 0
        if np.any(pos):
            out[pos] = _inner_kinked(f, m[pos], s[pos], kinks)
    return out


def _inner_wide_smooth(f, m, s):
    res = np.empty_like(m)
    for sl in _chunks(m.size, 2048):
        mm, ss = m[sl], s[sl]
        x, wt = _map_rule(np.zeros_like(mm), np.minimum(1.0, ss), 5.7 * ss, mm - _TAIL * ss, mm + _TAIL * ss)
        dens = _phi((x - mm[:, None]) / ss[:, None]) / ss[:, None]
        res[sl] = np.sum(wt * dens * f(x), axis=-1)
    return res


def _inner_kinked(f, m, s, kinks):
    res = np.empty_like(m)
    for sl in _chunks(m.size, 2048):
        mm, ss = m[sl], s[sl]
        lo, hi = mm - _TAIL * ss, mm + _TAIL * ss
        cuts = np.sort(np.clip(np.stack([np.full_like(mm, p) for p in kinks]), lo, hi), axis=0)
        edges = [lo, *cuts, hi]
        total = np.zeros_like(mm)
        for k in range(len(edges) - 1):
            x, wt = _de_rule(edges[k], edges[k + 1], _DE_NODES)
            dens = _phi((x - mm[:, None]) / ss[:, None]) / ss[:, None]
            total += np.sum(wt * dens * f(x), axis=-1)
        res[sl] = total
    return res


def _cross_chunk(f, q1, q2):
    c = q2 / q1
    sigma = np.sqrt((q1 - q2) * (q1 + q2) / q1)  # sd of v given u; exactly 0 at |c| = 1
    u, wt = _outer_nodes(f, q1, c)
    return np.sum(wt * f(u) * _inner(f, c[:, None] * u, sigma), axis=-1)


# -- mpmath path -------------------------------------------------------------------------------------


def _mp_points(f: Activation) -> list:
    """Split points for mpmath quadrature: the kinks, and 0 where smooth catalogue entries bend."""
    return [mpmath.mpf(p) for p in sorted(set(f.kinks or ()) | {0.0})]


def mp_second(f: Activation, q: Any, dps: int) -> mpmath.mpf:
    """E[phi(sqrt(q) z)^2] in mpmath at ``dps`` digits (closed form, or quadrature split at kinks).

    Example:
        >>> from meanfield.activations import activation
        >>> mp_second(activation("erf"), 1, 20)
        mpf('0.464559054397539...')
    """
    with mpmath.workdps(dps):
        q = mpmath.mpf(q)
        if q == 0:
            return f.mp(mpmath.mpf(0)) ** 2
        cf = closed_form(f)
        if cf is not None:
            return +cf.mp_second(q)
        sd = mpmath.sqrt(q)
        return _mp_expect(lambda u: f.mp(u) ** 2, sd, _mp_points(f))


def _mp_expect(g, sd, points):
    """E[g(sd * Z)] by tanh-sinh quadrature on the real line split at ``points`` (in g's argument)."""
    norm = 1 / mpmath.sqrt(2 * mpmath.pi)
    splits = sorted(set(p / sd for p in points))
    return mpmath.quad(lambda z: g(sd * z) * mpmath.exp(-z * z / 2), [-mpmath.inf, *splits, mpmath.inf]) * norm


def mp_cross(f: Activation, q1: Any, q2: Any, dps: int) -> mpmath.mpf:
    """I_phi[q1, q2] in mpmath at ``dps`` digits (closed form, or nested quadrature split at kinks).

    Example:
        >>> from meanfield.activations import activation
        >>> mp_cross(activation("relu"), 1, 1, 15)
        mpf('0.5')
    """
    with mpmath.workdps(dps):
        q1, q2 = mpmath.mpf(q1), mpmath.mpf(q2)
        if q1 == 0:
            return f.mp(mpmath.mpf(0)) ** 2
        cf = closed_form(f)
        if cf is not None:
            return +cf.mp_cross(q1, q2)
        points = _mp_points(f)
        sd = mpmath.sqrt(q1)
        if abs(q2) == q1:
            sgn = 1 if q2 > 0 else -1
            return _mp_expect(lambda u: f.mp(u) * f.mp(sgn * u), sd, points)
        c = q2 / q1
        s = mpmath.sqrt((q1 - q2) * (q1 + q2)) / q1
        ssd = sd * s  # conditional sd of v given u

        def inner(u):
            m = c * u
            return _mp_expect(lambda w: f.mp(m + w), ssd, [p - m for p in points])

        outer_points = list(points) + ([p / c for p in points] if c != 0 else [])
        return _mp_expect(lambda u: f.mp(u) * inner(u), sd, outer_points)
