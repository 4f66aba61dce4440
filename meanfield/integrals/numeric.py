"""Numeric Gaussian expectations: a vectorized numpy fast path and an mpmath path at any precision.

Definitions, z, x, y iid N(0, 1), c = q2 / q1:

    E[phi^2](q)     = E[phi(sqrt(q) z)^2]
    I_phi[q1, q2]   = E[phi(u) phi(v)],  u = sqrt(q1) x,  v = sqrt(q1) (c x + sqrt(1 - c^2) y)

Fast path, in this order (plain Gauss-Hermite is never applied to a kinked function):

1. a closed form (:mod:`.closed_forms`): relu family, step family, abs, sign, erf, erf', sin, cos,
   polynomials;
1b. smooth phi: the cached Chebyshev table of phi (:mod:`.tables`), where a large call has built
   it and it certifies 1e-12 relative (``use_tables=False`` skips it: the rules below alone are
   the baseline and the oracle);
2. smooth phi, small q1: Mehler's series sum_k a_k^2 c^k with a_k from one Gauss-Hermite row of
   phi values per pair (N phi evaluations and one matrix product), accepted only where the known
   remainder at c = 1 certifies 1e-12 (:data:`_MEHLER_BANDS`);
3. smooth phi otherwise: the conditional form E_u[phi(u) h(c u)], h(m) = E[phi(m + s Y)],
   s^2 = q1 (1 - c^2): a sinh-mapped trapezoid in u (resolves phi's scale-1 features near 0 and
   the Gaussian's scale sqrt(q1) alike, so large q1 -- GELU at q = 44 -- costs nothing in
   accuracy); h by Gauss-Hermite when s is small, else by splitting phi = p + r with p a
   combination of 1, Phi(x), x, x Phi(x) matching phi's straight-line asymptotes (Gaussian
   smoothing in closed form) and r smooth and localized, integrated on a fixed grid;
4. kinked phi (kinks from :attr:`Activation.kinks`): tanh-sinh pieces split at the kinks, at
   kink / c, and every 2 standard deviations.

The rules assume phi varies on scales >= ~1 away from its kinks, as every catalogue entry does;
for a sharper user function rescale: phi(x) = g(k x) gives I_phi[q1, q2] = I_g[k^2 q1, k^2 q2].

mpmath path: composite Gauss-Legendre at the working precision on pieces of at most 4 sd, graded
toward the kinks (and 0), nested for I; closed forms where they exist. Pure-Python mpmath makes
the nested form slow (tens of seconds at 30 digits).

Edge conventions (shared by every path):

* q = 0 (zero variance): u = v = 0 exactly, so E[phi^2](0) = I_phi[0, 0] = phi(0)^2. For a
  discontinuous phi (step, sign) this differs from the limit q -> 0+.
* |q2| may exceed q1 by at most ``RTOL = 1e-12`` relative (rounding in the caller); such a q2 is
  taken as exactly +-q1. Beyond that, and for q1 = 0 with q2 != 0, :class:`InvalidArgument`.
* Results are finite or an error, never nan: moments that are infinite (exp(x^2) at q >= 1/4, the
  derivative of sqrt|x|) or that the quadrature cannot resolve raise InvalidArgument naming the
  activation (:func:`check_moments_exist`); a value beyond float64 (x**100 at q = 100) raises
  InvalidArgument suggesting mpmath (``dps``).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import scipy.special
from threadpoolctl import threadpool_limits

from ..spec.activations import Activation
from ..errors import InvalidArgument
from . import tables
from .closed_forms import closed_form
from .existence import check_moments_exist, gaussian_growth, square_singularity

# the text the disk cache of the tables keys on: a changed rule here never reads a table built by the old one
_SOURCE = Path(__file__).read_text(encoding="utf-8")

__all__ = ["RTOL", "check_activation", "prepare", "fast_second", "fast_cross", "mp_second", "mp_cross",
           "check_moments_exist", "gaussian_growth", "square_singularity",
           # shared with the unequal-variance pair moments (.pairs)
           "require_numeric", "as_float_array", "first_bad", "finish", "zero_value", "kink_points",
           "outer_nodes", "inner_expectation", "sorted_chunks", "mehler_bands", "mehler_tables",
           "MEHLER_TOL", "mp_gauss", "mp_points", "conditional_cross", "hermite_squares"]

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
        i = tuple(int(k[0]) for k in np.nonzero(over)) if a.ndim else ()
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


# Trapezoid step in the sinh-mapped variable w (x = kappa sinh w). The integrands are analytic in a
# strip |Im w| < ~pi/4 (the Gaussian factor sets it), so the error is ~exp(-pi^2 / (2 h)) ~ 1e-15.
_H = 0.14


def _sinh_nodes(lo, hi, kappa, n):
    """Trapezoid nodes/weights in w on [asinh(lo/kappa), asinh(hi/kappa)], x = kappa sinh(w).

    Arrays lo, hi, kappa of one shape S give nodes and weights of shape S + (n,). The node density
    is logarithmic away from 0 and uniform (spacing ~ h kappa) near it, so phi's features near 0
    are resolved whatever the width of the interval.
    """
    wlo, whi = np.arcsinh(lo / kappa), np.arcsinh(hi / kappa)
    t = np.linspace(0.0, 1.0, n)
    span = (whi - wlo)[..., None]
    w = wlo[..., None] + span * t
    k = kappa[..., None]
    x = k * np.sinh(w)
    wt = k * np.cosh(w) * (span / (n - 1))
    wt[..., 0] *= 0.5
    wt[..., -1] *= 0.5
    return x, wt


def _de_rule(lo, hi, n):
    """Tanh-sinh rule on [lo, hi] (rows): clusters doubly exponentially at both ends, so a kink or
    a jump at an end costs nothing. Empty intervals get zero weights."""
    t = np.linspace(-3.3, 3.3, n)
    y = np.pi * np.sinh(t)
    length = (hi - lo)[..., None]
    x = lo[..., None] + length * scipy.special.expit(y)
    dx = length * (np.pi * np.cosh(t)) * scipy.special.expit(y) * scipy.special.expit(-y)
    return x, dx * (t[1] - t[0])


_DE_NODES = 50

# Mehler's formula I_phi(c) = sum_k a_k^2 c^k, a_k = E[phi(sqrt(q1) z) He_k(z)] / sqrt(k!): one
# row of N phi evaluations and a matrix product per pair. The terms needed grow ~ linearly with q1
# (phi(sqrt(q1) z) gets sharper), so it is tried in bands (q1 max, N nodes, K terms), each pair
# accepted only where the exactly known remainder at c = 1, E[phi^2] - sum_k a_k^2 (>= the
# remainder at any |c| <= 1, all terms being >= 0), is below _MEHLER_TOL E[phi^2]; the rest go on
# to the next band and finally to the conditional quadrature.
_MEHLER_BANDS = ((0.12, 48, 40), (0.45, 96, 80), (1.4, 200, 170), (2.6, 300, 270), (4.5, 420, 380),
                 (14.0, 520, 480), (14.0, 900, 860), (14.0, 1300, 1250))
_MEHLER_TOL = 1e-12
# elements per temporary array of a Mehler band: large, since each chunk costs a Python-level
# Horner sweep of K/2 steps (measured: 1e6 beats 2e5 by 2x on 1e5 tanh pairs)
_CHUNK = 1_000_000


@functools.lru_cache(maxsize=16)
def _mehler_tables(n: int, k: int):
    """Positive GH nodes z (n even), weights w there, and the Hermite-function tables
    G[i, j] = He_j(z_i) sqrt(w_i) / sqrt(j!) split into even j and odd j (stable recurrence).

    a_k only sees phi's even part for even k and its odd part for odd k, so folding the nodes
    halves the matrix products.
    """
    z, w = _hermite(n)
    sw = np.sqrt(w)
    g = np.empty((k, n))
    g[0] = sw
    g[1] = z * sw
    for j in range(1, k - 1):
        g[j + 1] = (z * g[j] - np.sqrt(j) * g[j - 1]) / np.sqrt(j + 1)
    pos = z > 0
    return (z[pos], w[pos], sw[pos], np.ascontiguousarray(g[0::2, pos].T),
            np.ascontiguousarray(g[1::2, pos].T))


# -- the fast path -----------------------------------------------------------------------------------


def _zero_value(f: Activation) -> float:
    return float(f(np.float64(0.0))) ** 2


def fast_second(f: Activation, q: Any, *, use_tables: bool = True) -> np.ndarray:
    """E[phi(sqrt(q) z)^2] on floats or arrays (numpy float64, the broadcast shape of q).

    ``use_tables=False`` skips the cached tables of :mod:`.tables` (the quadrature alone: the
    baseline and oracle they are measured against).

    Example:
        >>> from meanfield.spec.activations import activation
        >>> float(fast_second(activation("relu"), 3.0))
        1.5
    """
    f = check_activation(f)
    _require_numeric(f)
    q, _ = prepare(q)
    check_moments_exist(f, q)
    out = np.empty(q.shape)
    zero = q == 0
    out[zero] = _zero_value(f)
    pos = ~zero
    if np.any(pos):
        cf = closed_form(f)
        qp = q[pos]
        try:
            if cf is not None:
                with np.errstate(all="ignore"):
                    out[pos] = np.broadcast_to(cf.second(qp), qp.shape)
            else:
                with np.errstate(over="ignore", invalid="ignore"), _one_blas_thread(qp.size):
                    out[pos] = _second_quadrature(f, qp, use_tables)
        except OverflowError:  # a Python float overflowed in a closed form (leaky_relu(a=1e308): a**2)
            out[pos] = np.inf
    return _finish(out, "E[phi(u)^2]", f, q)


def fast_cross(f: Activation, q1: Any, q2: Any, *, use_tables: bool = True) -> np.ndarray:
    """I_phi[q1, q2] on floats or arrays (numpy float64, broadcast over q1 and q2).

    ``use_tables=False`` skips the cached tables of :mod:`.tables` (the Mehler series and the
    conditional quadrature alone: the baseline and oracle they are measured against).

    Example:
        >>> from meanfield.spec.activations import activation
        >>> round(float(fast_cross(activation("relu"), 2.0, 0.0)), 12)   # q1 / (2 pi)
        0.318309886184
    """
    f = check_activation(f)
    _require_numeric(f)
    q1, q2 = prepare(q1, q2)
    check_moments_exist(f, q1)
    out = np.empty(q1.shape)
    zero = q1 == 0
    out[zero] = _zero_value(f)
    pos = ~zero
    if np.any(pos):
        a, b = q1[pos], q2[pos]
        cf = closed_form(f)
        try:
            if cf is not None:
                with np.errstate(all="ignore"):
                    out[pos] = np.broadcast_to(cf.cross(a, b), a.shape)
            else:
                with np.errstate(over="ignore", invalid="ignore"), _one_blas_thread(a.size):
                    out[pos] = _cross_quadrature(f, a, b, use_tables)
        except OverflowError:
            out[pos] = np.inf
    return _finish(out, "E[phi(u) phi(v)]", f, q1)


#: from this many values on, the quadratures run their matrix products on one BLAS thread
_ONE_THREAD_FROM = 256


def _one_blas_thread(size: int):
    """The tables and Mehler bands do hundreds of small matrix products (14 x 20 by 20 x n per panel):
    a threaded BLAS wakes its threads for each, which made 10^5 pairs 2-3x slower than one thread
    (tanh 0.14 s against 0.06 s, measured on 2 cores); small calls skip the switch (0.04 ms)."""
    return threadpool_limits(1, "blas") if size >= _ONE_THREAD_FROM else contextlib.nullcontext()


def _finish(out: np.ndarray, what: str, f: Activation, q: np.ndarray) -> np.ndarray:
    """The result, or InvalidArgument when it does not fit in float64.

    The moments exist (:func:`check_moments_exist` ran first), so a non-finite value is an overflow of
    float64 (phi(u)^2 beyond 1.8e308 where the Gaussian still has weight): mpmath's exponent range does
    not overflow, hence the suggestion.
    """
    bad = ~np.isfinite(out)
    if np.any(bad):
        qb = float(np.max(np.broadcast_to(q, out.shape)[bad]))
        raise InvalidArgument(
            "activation", f.name, "an activation whose Gaussian moments fit in float64 (below 1.8e308)",
            f"{what} at q = {qb:.4g} overflows float64; evaluate in mpmath with more digits "
            "(--dps 30 on the command line, dps=30 in the API)")
    return out[()] if out.ndim == 0 else out


def _kink_points(f: Activation) -> tuple[float, ...] | None:
    """phi's kinks; None when phi is smooth. Unknown kinks (None from sympy) are treated as a kink
    at 0, the only place the catalogue's functions bend."""
    kinks = f.kinks
    if kinks == ():
        return None
    return kinks if kinks else (0.0,)


def _sorted_chunks(key: np.ndarray, size: int):
    """Index chunks of ``size`` in increasing ``key`` (similar q share one node count)."""
    order = np.argsort(key, kind="stable")
    for start in range(0, order.size, size):
        yield order[start:start + size]


def _graded(kinks: tuple[float, ...]) -> tuple[float, ...]:
    """The kinks and points at distances 1, 4, ..., 1024 around them: phi's smooth part bends on
    scale ~1 next to a kink, which a piece of length ~sd >> 1 would resolve only through the
    endpoint clustering of tanh-sinh (not enough at 1e-10 for sd ~ 30)."""
    return tuple(sorted({p + sign * 4.0**j for p in kinks for j in range(6) for sign in (-1, 1)} | set(kinks)))


def _outer_nodes(f: Activation, q: np.ndarray, c: np.ndarray | None):
    """Nodes u (P, N) and weights (density included) for E[g(u)], u ~ N(0, q), q > 0.

    Smooth phi: one sinh-mapped trapezoid, kappa = min(1, sqrt q) (phi's scale 1 or the
    Gaussian's, whichever is smaller). Kinked phi: tanh-sinh pieces between the kinks and, for a
    cross moment, the points kink / c where the inner function phi(c u + ...) bends.
    """
    sd = np.sqrt(q)
    lo, hi = -_TAIL * sd, _TAIL * sd
    kinks = _kink_points(f)
    if kinks is None:
        kappa = np.minimum(1.0, sd)
        n = int(np.ceil(np.max(2 * np.arcsinh(hi / kappa)) / _H)) + 1
        x, wt = _sinh_nodes(lo, hi, kappa, n)
    else:
        # pieces: the kinks, kink / c, and every 2 sd (tanh-sinh is sparse mid-piece, so a piece
        # must not be much longer than the Gaussian's own scale)
        cuts = [np.full_like(q, p) for p in _graded(kinks)] + [k * 2.0 * sd for k in range(-4, 5)]
        if c is not None:
            safe = np.where(c != 0, c, 1.0)
            cuts += [np.where(c != 0, p / safe, p) for p in kinks]
        cuts = np.sort(np.clip(np.stack(cuts), lo, hi), axis=0)
        edges = [lo, *cuts, hi]
        parts = [_de_rule(edges[k], edges[k + 1], _DE_NODES) for k in range(len(edges) - 1)
                 if np.any(edges[k + 1] > edges[k])]  # clipped grading points: empty pieces
        x = np.concatenate([p[0] for p in parts], axis=-1)
        wt = np.concatenate([p[1] for p in parts], axis=-1)
    return x, wt * _phi(x / sd[:, None]) / sd[:, None]


def _table(f: Activation) -> tables.CrossTable:
    return tables.cross_table(f, functools.partial(conditional_cross, f), functools.partial(hermite_squares, f),
                              persist=_SOURCE)


def _second_quadrature(f: Activation, q: np.ndarray, use_tables: bool = True) -> np.ndarray:
    out = np.empty_like(q)
    todo = np.arange(q.size)
    if use_tables and _kink_points(f) is None:  # the cached table of this phi (:mod:`.tables`), its c = 1 edge
        value, done = tables.table_second(_table(f), q)
        out[done] = value[done]
        todo = np.nonzero(~done)[0]
    for part in _sorted_chunks(q[todo], 2048):
        idx = todo[part]
        x, wt = _outer_nodes(f, q[idx], None)
        out[idx] = np.sum(wt * np.square(f(x)), axis=-1)
    return out


def _cross_quadrature(f: Activation, q1: np.ndarray, q2: np.ndarray, use_tables: bool = True) -> np.ndarray:
    out = np.full(q1.shape, np.nan)
    c = q2 / q1
    todo = np.ones(q1.shape, dtype=bool)
    if _kink_points(f) is None:
        if use_tables:  # the cached table of this phi (:mod:`.tables`) where it is built and certified
            value, done = tables.table_cross(_table(f), q1, q2)
            out[done] = value[done]
            todo &= ~done
        i = 0
        while todo.any() and _mehler_band(f, i) is not None:  # probe only the bands still needed
            qmax, n, k = _mehler_band(f, i)
            i += 1
            band = np.nonzero(todo & (q1 <= qmax))[0]
            for part in np.array_split(band, max(1, band.size * n // _CHUNK)):
                if part.size == 0:
                    continue
                value, ok = _mehler(f, q1[part], c[part], n, k)
                out[part[ok]] = value[ok]
                todo[part[ok]] = False
    rest = np.nonzero(todo)[0]
    for idx in _sorted_chunks(q1[rest], 16):
        sel = rest[idx]
        out[sel] = _cross_conditional(f, q1[sel], q2[sel])
    return out


def _mehler_bands(f: Activation) -> tuple:
    """The bands with their q1 limit lowered to where this phi's remainder test passes (probed
    once per activation at c = 1), so pairs go straight to the cheapest band that certifies them;
    bands that certify nothing new are dropped.

    The remainder test sees only the coefficients its Gauss-Hermite rule resolves (on n nodes the
    discrete Parseval sum stops at k = n): near a band's top it can pass while the series is off
    by 1e-10 (x tanh(x) at q = 8, c = 0.9998). So each limit is also checked against the
    conditional quadrature at the top of the band, near c = +-1 where the series converges
    slowest, and lowered by factors 0.85 until they agree to 1e-13 of E[phi^2].
    """
    i = 0
    while _mehler_band(f, i) is not None:
        i += 1
    return tuple(_band_state(f)["bands"])


@functools.lru_cache(maxsize=64)
def _band_state(f: Activation) -> dict:
    # the bands of :func:`_mehler_bands` probed so far, in order (the wide bands' probes cost tenths of a second
    # per activation and most calls never reach them)
    return {"bands": [], "probed": 0, "reached": 0.0}


def _mehler_band(f: Activation, i: int) -> tuple | None:
    """Band i of :func:`_mehler_bands` (None past the last), probing the bands in order only as far as i."""
    state = _band_state(f)
    while len(state["bands"]) <= i and state["probed"] < len(_MEHLER_BANDS):
        qmax, n, k = _MEHLER_BANDS[state["probed"]]
        state["probed"] += 1
        probe = np.linspace(qmax / 24, qmax, 24)
        _, ok = _mehler(f, probe, np.ones_like(probe), n, k)
        limit = probe[np.argmin(ok)] * 0.999 if not ok.all() else qmax
        if not ok[0]:
            continue
        limit = _checked_limit(f, limit, n, k, floor=probe[0])
        if limit > state["reached"]:
            state["bands"].append((float(limit), n, k))
            state["reached"] = limit
    return state["bands"][i] if i < len(state["bands"]) else None


def _checked_limit(f: Activation, limit: float, n: int, k: int, floor: float) -> float:
    c = np.array([1 - 1e-2, 1 - 1e-3, 1 - 2e-4, -(1 - 1e-3), 0.5])
    while limit >= floor:
        q = np.full(c.shape, limit)
        series, _ = _mehler(f, q, c, n, k)
        exact = np.concatenate([_cross_conditional(f, q[i:i + 1], c[i:i + 1] * q[i:i + 1]) for i in range(c.size)])
        if np.all(np.abs(series - exact) <= 1e-13 * np.abs(_mehler(f, q[:1], np.ones(1), n, k)[0][0])):
            return limit
        limit *= 0.85
    return 0.0


def _mehler(f: Activation, q1: np.ndarray, c: np.ndarray, n: int, k: int):
    """Mehler partial sum on rows q1, c; returns (values, certified mask)."""
    z, w, sw, g_even, g_odd = _mehler_tables(n, k)
    scale = np.sqrt(q1)[:, None] * z
    plus, minus = f(scale), f(-scale)
    second = (plus * plus + minus * minus) @ w
    # coefficients as rows (k, pair): the Horner sweep then reads contiguous memory
    even = np.square(g_even.T @ ((plus + minus) * sw).T)
    odd = np.square(g_odd.T @ ((plus - minus) * sw).T)
    remainder = second - even.sum(axis=0) - odd.sum(axis=0)
    ok = np.abs(remainder) <= _MEHLER_TOL * second + 1e-300
    c2 = c * c
    total_even, total_odd = even[-1].copy(), odd[-1].copy()
    for j in range(even.shape[0] - 2, -1, -1):
        total_even *= c2
        total_even += even[j]
    for j in range(odd.shape[0] - 2, -1, -1):
        total_odd *= c2
        total_odd += odd[j]
    total = total_even + c * total_odd
    return total, ok


def _inner(f: Activation, m: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """h = E[phi(m + sigma Y)], Y ~ N(0, 1), for m of shape (P, N) and sigma (P,) (0 allowed)."""
    out = np.empty_like(m)
    kinks = _kink_points(f)
    exact = sigma == 0
    if np.any(exact):
        out[exact] = f(m[exact])
    if kinks is None:
        # narrow: phi(m + sigma y) is analytic in |Im y| < d = (pi/2)/sigma (tanh's poles; the
        # other catalogue entries have wider strips) and n-point Gauss-Hermite errs ~exp(-d sqrt(2n)):
        # measured on tanh, 32 nodes 2e-16 up to sigma = 0.4 but 1e-13 at 0.5 and 8e-11 at 0.75;
        # 96 nodes 2e-16 up to 0.75
        for lo, hi, nodes in ((0.0, 0.4, 32), (0.4, _SIGMA_WIDE, 96)):
            narrow = (sigma > lo) & (sigma <= hi)
            if np.any(narrow):
                z, w = _hermite(nodes)
                out[narrow] = f(m[narrow][..., None] + sigma[narrow][:, None, None] * z) @ w
        wide = sigma > _SIGMA_WIDE
        if np.any(wide):
            out[wide] = _inner_wide_smooth(f, m[wide], sigma[wide])
    else:
        pos = sigma > 0
        if np.any(pos):
            out[pos] = _inner_kinked(f, m[pos], sigma[pos], kinks)
    return out


@dataclass(frozen=True)
class _Split:
    """phi = p + r: p(x) = A + B Phi(x) + C x + D x Phi(x) matches phi's straight-line asymptotes
    (so its Gaussian smoothing is closed form), r = phi - p is smooth and negligible beyond |x| = L,
    and is stored on the uniform grid t (spacing _DT) of [-L, L]."""

    coef: tuple[float, float, float, float]
    t: np.ndarray
    r: np.ndarray

    def smooth_p(self, m, s):
        """E[p(m + s Y)]: Phi(m/s'), m Phi(m/s') + s^2 phi(m/s')/s', s' = sqrt(1 + s^2)."""
        a, b, c, d = self.coef
        sp = np.sqrt(1.0 + s * s)
        z = m / sp
        big_phi = scipy.special.ndtr(z)
        return a + b * big_phi + c * m + d * (m * big_phi + s * s * _phi(z) / sp)


# Conditional sd above which the inner integral uses the split phi = p + r, and the grid spacing
# of r. Measured against 25-digit mpmath (m in [-3, 3], sd = 0.75 .. 4): spacing 0.3 errs 2.4e-13
# for tanh and 5.6e-12 for tanh' (double poles) at sd = 0.75; spacing 0.2 errs <= 7e-16 and 1e-14.
_SIGMA_WIDE = 0.75
_DT = 0.2


@functools.lru_cache(maxsize=64)
def _split(f: Activation) -> _Split | None:
    """The decomposition phi = p + r, or None when phi has no straight-line asymptotes (then the
    slower sinh rule is used). Asymptotes are read off numerically at |x| = 60..80 and checked."""
    with np.errstate(all="ignore"):
        xs = np.array([-80.0, -70.0, -60.0, 60.0, 70.0, 80.0])
        ys = np.asarray(f(xs), dtype=float)
    if not np.all(np.isfinite(ys)):
        return None
    lines = []
    for i in (0, 3):
        slope = (ys[i + 2] - ys[i]) / (xs[i + 2] - xs[i])
        icpt = ys[i + 2] - slope * xs[i + 2]
        if abs(icpt + slope * xs[i + 1] - ys[i + 1]) > 1e-12 * (1 + abs(ys[i + 1])):
            return None
        lines.append((round(slope, 12), round(icpt, 12)))
    (s_lo, c_lo), (s_hi, c_hi) = lines
    coef = (c_lo, c_hi - c_lo, s_lo, s_hi - s_lo)
    probe = _Split(coef, np.zeros(1), np.zeros(1))
    grid = np.arange(-60.0, 60.0 + _DT / 2, _DT)
    r = f(grid) - probe.smooth_p(grid, np.zeros_like(grid))
    scale = max(1.0, float(np.max(np.abs(r))))
    big = np.nonzero(np.abs(r) > 1e-17 * scale)[0]
    if big.size == 0:
        return _Split(coef, np.zeros(0), np.zeros(0))
    half = max(abs(grid[big[0]]), abs(grid[big[-1]])) + 1.0
    if half > 55:
        return None
    keep = np.abs(grid) <= half
    return _Split(coef, grid[keep], r[keep] * _DT)


def _inner_wide_smooth(f, m, s):
    """E[phi(m + s Y)] for s > _SIGMA_WIDE.

    With the split phi = p + r: closed-form E[p(m + s Y)] plus the trapezoid sum of r against the
    Gaussian density on r's fixed grid (no phi evaluations at all). Without one: a sinh trapezoid
    in v centred at phi's feature (0) whose per-row node count keeps the spacing across the
    Gaussian below ~0.7 s (rows bucketed by node count).
    """
    sp = _split(f)
    ss = np.broadcast_to(s[:, None], m.shape)
    if sp is not None:
        out = sp.smooth_p(m, ss)
        if sp.t.size:
            mm, sv = m.ravel(), ss.ravel()
            reach = (np.abs(mm) - _TAIL * sv) < sp.t[-1]
            idx = np.nonzero(reach)[0]
            acc = np.zeros(mm.shape)
            for part in np.array_split(idx, max(1, idx.size * sp.t.size // 400_000)):
                inv = 1.0 / sv[part][:, None]
                acc[part] = _phi((sp.t - mm[part][:, None]) * inv) @ sp.r * inv[:, 0]
            out = out + acc.reshape(m.shape)
        return out
    ss = ss.ravel()
    mm = m.ravel()
    lo, hi = mm - _TAIL * ss, mm + _TAIL * ss
    span = np.arcsinh(hi) - np.arcsinh(lo)
    reach = np.maximum(np.abs(lo), np.abs(hi))
    step = np.minimum(_H, 0.7 * ss / np.sqrt(1 + reach * reach))
    need = np.ceil(span / step) + 1
    bucket = np.maximum(4, np.ceil(np.log2(need))).astype(int)
    out = np.empty_like(mm)
    for b in np.unique(bucket):
        sel = np.nonzero(bucket == b)[0]
        n = 2 ** int(b) + 1
        for part in np.array_split(sel, max(1, sel.size * n // 400_000)):
            x, wt = _sinh_nodes(lo[part], hi[part], np.ones(part.size), n)
            sv = ss[part][:, None]
            dens = _phi((x - mm[part][:, None]) / sv) / sv
            out[part] = np.sum(wt * dens * f(x), axis=-1)
    return out.reshape(m.shape)


def _inner_kinked(f, m, s, kinks):
    ss = np.broadcast_to(s[:, None], m.shape)
    lo, hi = m - _TAIL * ss, m + _TAIL * ss
    cuts = [np.full_like(m, p) for p in _graded(kinks)] + [m + k * 2.0 * ss for k in range(-4, 5)]
    cuts = np.sort(np.clip(np.stack(cuts), lo, hi), axis=0)
    edges = [lo, *cuts, hi]
    total = np.zeros_like(m)
    for k in range(len(edges) - 1):
        if not np.any(edges[k + 1] > edges[k]):
            continue
        x, wt = _de_rule(edges[k], edges[k + 1], _DE_NODES)
        dens = _phi((x - m[..., None]) / ss[..., None]) / ss[..., None]
        total += np.sum(wt * dens * f(x), axis=-1)
    return total


def hermite_squares(f: Activation, q: np.ndarray, k: int) -> np.ndarray:
    """a_j(q)^2 = E[phi(sqrt(q) z) He_j(z)]^2 / j! for j < k (rows) and 1-D q > 0 (columns), on the
    sinh-mapped rule of the conditional quadrature (accurate at any q, unlike Gauss-Hermite)."""
    out = np.empty((k, q.size))
    for idx in _sorted_chunks(q, 256):
        u, wt = _outer_nodes(f, q[idx], None)
        z = u / np.sqrt(q[idx])[:, None]
        fw = f(u) * wt
        h_prev, h = np.zeros_like(z), np.ones_like(z)
        for j in range(k):
            out[j, idx] = np.square(np.sum(fw * h, axis=-1))
            h_prev, h = h, (z * h - np.sqrt(j) * h_prev) / np.sqrt(j + 1)
    return out


def conditional_cross(f: Activation, q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """I_phi[q1, q2] by the conditional quadrature alone (1-D arrays, q1 > 0): the oracle the
    tables are built from (smooth in q1 and q2, unlike the banded Mehler series)."""
    out = np.empty(q1.shape)
    for idx in _sorted_chunks(q1, 64):
        out[idx] = _cross_conditional(f, q1[idx], q2[idx])
    return out


def _cross_conditional(f, q1, q2):
    """I_phi = E_u[phi(u) h(c u)], h(m) = E[phi(m + sigma Y)], sigma^2 = q1 (1 - c^2)."""
    c = q2 / q1
    sigma = np.sqrt(q1 - q2) * np.sqrt((q1 + q2) / q1)  # exactly 0 at |c| = 1, no overflow
    u, wt = _outer_nodes(f, q1, c)
    return np.sum(wt * f(u) * _inner(f, c[:, None] * u, sigma), axis=-1)


# -- mpmath path -------------------------------------------------------------------------------------


def _mp_points(f: Activation) -> list:
    """Split points for mpmath quadrature: the kinks, and 0 where smooth catalogue entries bend."""
    return sorted({mpmath.mpf(p) for p in (f.kinks or ())} | {mpmath.mpf(0)})


def _mp_tail() -> Any:
    """Half-width, in standard deviations, beyond which the Gaussian weighs < 10^-(dps+6)."""
    return mpmath.sqrt(2 * (mpmath.mp.dps + 6) * mpmath.log(10)) + 1


@functools.lru_cache(maxsize=16)
def _mp_legendre(n: int, dps: int) -> tuple[list, list]:
    """Gauss-Legendre nodes and weights on [-1, 1] at ``dps`` digits (Newton on P_n, cached)."""
    with mpmath.workdps(dps + 10):
        nodes, weights = [], []
        for i in range(1, n + 1):
            x = mpmath.cos(mpmath.pi * (i - mpmath.mpf(1) / 4) / (n + mpmath.mpf(1) / 2))
            for _ in range(100):
                p0, p1 = mpmath.mpf(1), x
                for k in range(2, n + 1):
                    p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
                dp = n * (x * p1 - p0) / (x * x - 1)
                dx = p1 / dp
                x -= dx
                if abs(dx) < mpmath.mpf(10) ** (-(dps + 8)):
                    break
            p0, p1 = mpmath.mpf(1), x
            for k in range(2, n + 1):
                p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
            dp = n * (x * p1 - p0) / (x * x - 1)
            nodes.append(x)
            weights.append(2 / ((1 - x * x) * dp * dp))
    return nodes, weights


def _mp_breaks(mean, sd, points, scale):
    """Piece boundaries for E[g(V)], V ~ N(mean, sd^2), g bending on ``scale`` near ``points``.

    Pieces of at most 4 sd cover mean -+ T sd (the Gaussian is entire: Gauss-Legendre converges
    geometrically on such pieces); each point inside is a boundary, with boundaries graded by
    factors of 4 from ``scale`` up to ~sd on both sides, so phi's small features near it (or a
    true kink at it) are resolved however large sd is.
    """
    tail = _mp_tail()
    lo, hi = mean - tail * sd, mean + tail * sd
    pieces = int(mpmath.ceil(2 * tail / 4))
    breaks = {lo + (hi - lo) * k / pieces for k in range(pieces + 1)}
    for p in points:
        if not lo < p < hi:
            # a point just outside still shapes g inside: grade from the near end
            near = lo if p <= lo else hi
            gap = abs(p - near)
            if gap > 2 * sd:
                continue
            p = near
        breaks.add(p)
        step = scale
        while step < 2 * sd:
            for b in (p - step, p + step):
                if lo < b < hi:
                    breaks.add(b)
            step *= 4
    return sorted(breaks)


def _mp_gauss(g, mean, sd, points, scale=1):
    """E[g(V)], V ~ N(mean, sd^2), by composite Gauss-Legendre on pieces from :func:`_mp_breaks`.

    The node count per piece grows with the working precision (0.55 dps + 10), so the rule keeps
    its accuracy at any dps (~1e-(dps-5) relative at dps 30); the tests check it against tanh-sinh (``mpmath.quad``).
    """
    n = int(0.55 * mpmath.mp.dps) + 10
    xs, ws = _mp_legendre(n, mpmath.mp.dps)
    breaks = _mp_breaks(mean, sd, points, mpmath.mpf(scale) if sd > scale else sd)
    norm = 1 / (sd * mpmath.sqrt(2 * mpmath.pi))
    total = mpmath.mpf(0)
    for a, b in zip(breaks[:-1], breaks[1:]):
        half, mid = (b - a) / 2, (a + b) / 2
        piece = mpmath.mpf(0)
        for x, w in zip(xs, ws):
            v = mid + half * x
            t = (v - mean) / sd
            piece += w * g(v) * mpmath.exp(-t * t / 2)
        total += piece * half
    return total * norm


def mp_second(f: Activation, q: Any, dps: int) -> mpmath.mpf:
    """E[phi(sqrt(q) z)^2] in mpmath at ``dps`` digits (closed form, or quadrature split at kinks).

    Example:
        >>> from meanfield.spec.activations import activation
        >>> mp_second(activation("erf"), 1, 20)
        mpf('0.464559054397539...')
    """
    check_moments_exist(f, float(q))
    with mpmath.workdps(dps + 5):
        q = mpmath.mpf(q)
        if q == 0:
            value = f.mp(mpmath.mpf(0)) ** 2
        elif (cf := closed_form(f)) is not None:
            value = cf.mp_second(q)
        else:
            value = _mp_gauss(lambda u: f.mp(u) ** 2, 0, mpmath.sqrt(q), _mp_points(f))
    with mpmath.workdps(dps):
        return +value


def mp_cross(f: Activation, q1: Any, q2: Any, dps: int) -> mpmath.mpf:
    """I_phi[q1, q2] in mpmath at ``dps`` digits (closed form, or nested quadrature split at kinks).

    The nested form is E_u[phi(u) E[phi(v) | u]], v | u ~ N(c u, q1 (1 - c^2)); the outer
    integral is split at the kinks p and at p / c, where the inner one bends.

    Example:
        >>> from meanfield.spec.activations import activation
        >>> mp_cross(activation("relu"), 1, 1, 15)
        mpf('0.5')
    """
    check_moments_exist(f, float(q1))
    with mpmath.workdps(dps + 5):
        q1, q2 = mpmath.mpf(q1), mpmath.mpf(q2)
        cf = closed_form(f)
        if q1 == 0:
            value = f.mp(mpmath.mpf(0)) ** 2
        elif cf is not None:
            value = cf.mp_cross(q1, q2)
        else:
            value = _mp_cross_quad(f, q1, q2)
    with mpmath.workdps(dps):
        return +value


def _mp_cross_quad(f: Activation, q1, q2):
    points = _mp_points(f)
    sd = mpmath.sqrt(q1)
    if abs(q2) == q1:
        sgn = 1 if q2 > 0 else -1
        return _mp_gauss(lambda u: f.mp(u) * f.mp(sgn * u), 0, sd, points)
    c = q2 / q1
    sigma = mpmath.sqrt((q1 - q2) * (q1 + q2) / q1)

    def inner(u):
        return _mp_gauss(f.mp, c * u, sigma, points)

    outer_points = points + ([p / c for p in points] if c != 0 else [])
    return _mp_gauss(lambda u: f.mp(u) * inner(u), 0, sd, outer_points)


# -- the pieces the unequal-variance pair moments (:mod:`.pairs`) reuse, under public names ---------
require_numeric = _require_numeric
as_float_array = _as_float_array
first_bad = _first
finish = _finish
zero_value = _zero_value
kink_points = _kink_points
outer_nodes = _outer_nodes
inner_expectation = _inner
sorted_chunks = _sorted_chunks
mehler_bands = _mehler_bands
mehler_tables = _mehler_tables
MEHLER_TOL = _MEHLER_TOL
mp_gauss = _mp_gauss
mp_points = _mp_points
one_blas_thread = _one_blas_thread
