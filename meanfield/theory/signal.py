"""Signal propagation (Poole et al. 2016, Schoenholz et al. 2017): the length map's fixed point q*, the
correlation map's fixed point c*, chi_1, the depth scales xi_q, xi_c and the order-to-chaos line of one
activation at (sigma_w^2, sigma_b^2).

    q' = sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2,     c' = (sigma_w^2 I_phi[q*, c q*] + sigma_b^2) / q*,
    chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]             (order-to-chaos at chi_1 = 1)

Three number types: sympy (fixed-point equations as ``sympy.Eq``, solved with their conditions where a closed
form exists), floats and numpy arrays (vectorised over sigma grids: a phase diagram is one call), and mpmath
(``dps``, scalars).

Facts the numeric solvers rely on. c = 1 is always a fixed point of the correlation map (I_phi[q*, q*] =
E[phi^2](q*)). By Mehler's formula I_phi[q, c q] = sum_k a_k^2 c^k, so on [0, 1] the map is increasing and
convex; its value at c = 0 is (sigma_w^2 E[phi]^2 + sigma_b^2) / q* >= 0. Hence: chi_1 < 1 (the slope at 1)
makes c = 1 the only fixed point in [0, 1] (ordered, c* = 1); chi_1 > 1 gives exactly one other fixed point
c* in [0, 1), and it is stable (chaotic). Newton's method from c = 0 on a convex function approaches that root
from below without overshooting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np
import sympy

from ..errors import InvalidArgument, check_real
from ..spec.activations import X, Activation, activation
from .backend import Arithmetic, fmt, tex

__all__ = ["signal_propagation", "SignalPropagation", "sigma_w2_critical", "critical_line", "CriticalLine"]

# |chi_1 - 1| below this is "critical" (chi_1 is computed to ~1e-14 relative)
_CRITICAL_TOL = 1e-12


@dataclass(frozen=True)
class SignalPropagation:
    """Fixed point q*, correlation map c -> c', its fixed point c*, chi_1 and the depth scales.

    Attributes:
        q_star: fixed point of q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2 reached from q0 (inf if the
            length diverges; the other fields are then None, or masked in arrays). Symbolic: a closed form
            (a ``Piecewise`` with its conditions) or, when none exists, the symbol ``q^*`` defined by
            ``equations["q*"]``.
        c_star: the stable fixed point of the correlation map (1 in the ordered phase).
        chi1: sigma_w^2 E[phi'(sqrt(q*) z)^2], slope of the correlation map at c = 1 (order-to-chaos at 1).
        chi_c: slope of the correlation map at c*, sigma_w^2 I_phi'[q*, c* q*].
        slope_q: chi_q, slope of the length map at q*: sigma_w^2 dE[phi^2]/dq = sigma_w^2 E[u phi(u) phi'(u)]/q*.
        xi_q, xi_c: depth scales -1/log(chi_q), -1/log(chi_c) (inf at a marginal slope, 0 at slope 0).
        phase: "ordered" (chi1 < 1), "chaotic" (chi1 > 1), "critical", "divergent" (no finite q*) or
            "symbolic"; a numpy array of these for array input.
        equations: symbolic only: ``{"q*": Eq(q*, ...), "c*": Eq(c*, ...)}``, the fixed-point equations.
        conditions: symbolic only: where q* is finite (sympy boolean; True when always).
    """

    activation: Activation
    sigma_w2: Any
    sigma_b2: Any
    q_star: Any
    c_star: Any
    chi1: Any
    chi_c: Any
    slope_q: Any
    xi_q: Any
    xi_c: Any
    phase: Any
    dps: int | None = None
    equations: dict = field(default_factory=dict)
    conditions: Any = None

    def correlation_map(self, c: Any) -> Any:
        """c' = (sigma_w^2 I_phi[q*, c q*] + sigma_b^2) / q*, vectorised over c in [-1, 1] (scalar sigma's)."""
        from ..integrals.gaussian import cross_moment
        if isinstance(self.q_star, sympy.Basic):
            q = self.q_star if not isinstance(self.q_star, sympy.Piecewise) else self.q_star.args[0][0]
            return (self.sigma_w2 * cross_moment(self.activation, q, c * q) + self.sigma_b2) / q
        if np.ndim(self.q_star):
            raise InvalidArgument("c", "a correlation", "a result of scalar sigma's (this one holds a grid)")
        if not math.isfinite(float(self.q_star)):
            raise InvalidArgument("q_star", self.q_star, "a finite fixed point to define the correlation map")
        c = np.asarray(c, dtype=float) if self.dps is None else c
        if self.dps is None and np.any(np.abs(c) > 1):
            raise InvalidArgument("c", c, "correlations in [-1, 1]")
        q = self.q_star
        val = cross_moment(self.activation, q, c * q, dps=self.dps) if self.dps else cross_moment(self.activation, q, c * q)
        return (self.sigma_w2 * val + self.sigma_b2) / q

    def length_map(self, q: Any) -> Any:
        """q' = sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2."""
        from ..integrals.gaussian import second_moment
        return self.sigma_w2 * (second_moment(self.activation, q, dps=self.dps) if self.dps
                                else second_moment(self.activation, q)) + self.sigma_b2

    def __str__(self) -> str:
        rows = [("activation", self.activation.name), ("sigma_w^2", fmt(self.sigma_w2)),
                ("sigma_b^2", fmt(self.sigma_b2)), ("q*", fmt(self.q_star)), ("c*", fmt(self.c_star)),
                ("chi_1", fmt(self.chi1)), ("chi_c (slope at c*)", fmt(self.chi_c)),
                ("xi_q", fmt(self.xi_q)), ("xi_c", fmt(self.xi_c)),
                ("phase", self.phase if isinstance(self.phase, str) else f"array{np.shape(self.phase)}")]
        rows += [(f"equation {k}", str(v)) for k, v in self.equations.items()]
        if self.conditions is not None and self.conditions is not sympy.true:
            rows.append(("q* finite when", str(self.conditions)))
        w = max(len(k) for k, _ in rows)
        return "SignalPropagation\n" + "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)

    def _repr_latex_(self) -> str:
        items = [("q^*", self.q_star), ("c^*", self.c_star), (r"\chi_1", self.chi1), (r"\xi_q", self.xi_q),
                 (r"\xi_c", self.xi_c)]
        phase = self.phase if isinstance(self.phase, str) else "grid"
        return "$" + r",\quad ".join(f"{k} = {tex(v)}" for k, v in items) + r",\quad \text{" + phase + "}$"


def signal_propagation(activation_: Any, sigma_w2: Any, sigma_b2: Any, *, dps: int | None = None,
                       q0: float = 1.0, tol: float = 1e-13, max_iter: int = 100000) -> SignalPropagation:
    """q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2, c* and chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2].

    Schoenholz et al. (2017): deviations from the fixed points decay as exp(-l/xi) with
    xi_q = -1/log(chi_q), chi_q = sigma_w^2 dE[phi(sqrt(q) z)^2]/dq at q* (= chi_1 + sigma_w^2 E[phi phi'']
    by Stein's lemma), and xi_c = -1/log(chi_c), chi_c = sigma_w^2 I_phi'[q*, c* q*]; at the order-to-chaos
    transition chi_1 = 1 and xi_c diverges. c* is found, not assumed: 1 when chi_1 <= 1, else the other
    root of the correlation map in [0, 1) (see the module docstring for why there is exactly one).

    Numbers (floats or numpy arrays of sigma's, broadcast together) are solved vectorised: q* by a
    bracketed secant (Illinois) on the monotone length map from q0, c* by Newton's method from c = 0.
    Array input gives arrays (masked where q* diverges; ``phase`` an array of strings). ``dps`` gives
    mpmath numbers (scalars only). Symbolic sigma's (or a symbolic activation) give sympy: the fixed-point
    equations in ``equations``, q* solved in closed form with its conditions when the length map is affine in
    q (ReLU, leaky ReLU, abs, linear, step, ...), else left as the symbol q* its equation defines.

    Args:
        activation_: a catalogue name or :class:`~meanfield.Activation`.
        sigma_w2, sigma_b2: weight variance (> 0) and bias variance (>= 0): numbers, arrays or sympy.
        dps: mpmath precision.
        q0: starting length of the iteration (only matters where the length map has several fixed points).
        tol, max_iter: stopping rule of the mpmath correlation iteration.

    Raises:
        InvalidArgument: unknown activation, sigma_w2 <= 0, sigma_b2 < 0, non-finite or non-real sigma's,
            arrays with ``dps``, an activation whose derivative has a Dirac delta (step, sign: chi_1 is
            infinite).

    Example:
        >>> sp = signal_propagation("tanh", 1.0, 0.0)
        >>> sp.phase, float(sp.chi1)
        ('critical', 1.0)
        >>> sp = signal_propagation("relu", 1.0, 0.5)
        >>> float(sp.q_star), round(float(sp.chi1), 12)
        (1.0, 0.5)
        >>> round(float(sp.correlation_map(0.0)), 6)   # (1/2pi + 0.5)/1
        0.659155
        >>> import sympy
        >>> sw, sb = sympy.symbols("sigma_w2 sigma_b2", positive=True)
        >>> signal_propagation("relu", sw, sb).q_star
        Piecewise((2*sigma_b2/(2 - sigma_w2), sigma_w2 < 2), (oo, True))
        >>> signal_propagation("tanh", [1.5, 2.5], 0.05).phase.tolist()
        ['ordered', 'chaotic']
    """
    if isinstance(activation_, Activation):
        phi = activation_
    elif isinstance(activation_, str):
        phi = activation(activation_)
    else:
        raise InvalidArgument("activation", activation_, "a catalogue name or a meanfield.Activation")
    if dps is not None and (isinstance(dps, bool) or not isinstance(dps, (int, np.integer)) or dps < 1):
        raise InvalidArgument("dps", dps, "a positive integer number of digits")
    q0 = check_real("q0", q0, minimum=0, strict_min=True, symbolic=False)
    arrays = not (np.ndim(sigma_w2) == 0 and np.ndim(sigma_b2) == 0)
    if arrays:
        if dps is not None:
            raise InvalidArgument("dps", dps, "None for array sigma's (mpmath evaluates one point)")
        if phi.is_symbolic:
            raise InvalidArgument("activation", phi.name, "numeric parameters for array sigma's")
        sw = _as_array("sigma_w2", sigma_w2, strict=True)
        sb = _as_array("sigma_b2", sigma_b2, strict=False)
        try:
            sw, sb = np.broadcast_arrays(sw, sb)
        except ValueError:
            raise InvalidArgument("sigma_b2", f"shape {np.shape(sb)}",
                                  f"a shape broadcastable with sigma_w2's {np.shape(sw)}") from None
        return _signal_arrays(phi, sw, sb, q0)
    symbolic = any(isinstance(v, sympy.Basic) and not v.is_number for v in (sigma_w2, sigma_b2)) or phi.is_symbolic
    sw = check_real("sigma_w2", sigma_w2, minimum=0, strict_min=True)
    sb = check_real("sigma_b2", sigma_b2, minimum=0)
    if symbolic:
        exact = Arithmetic("sympy")
        return _signal_symbolic(phi, exact.num(sw), exact.num(sb), exact.num(q0))
    if dps is None:
        res = _signal_arrays(phi, np.asarray(sw, dtype=float), np.asarray(sb, dtype=float), q0)
        return _scalar(res)
    return _signal_mp(phi, sw, sb, dps, q0, tol, max_iter)


def _as_array(name: str, value: Any, strict: bool) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidArgument(name, value, "a finite real number or array of them") from None
    bad = ~np.isfinite(arr) | ((arr <= 0) if strict else (arr < 0))
    if np.any(bad):
        if arr.ndim == 0:
            raise InvalidArgument(name, float(arr), "a finite number > 0" if strict else "a finite number >= 0")
        idx = tuple(int(i[0]) for i in np.nonzero(bad))
        raise InvalidArgument(name, f"{arr[idx]!r} at index {idx}",
                              "finite numbers > 0" if strict else "finite numbers >= 0")
    return arr


def _scalar(res: SignalPropagation) -> SignalPropagation:
    """A 0-d array result as plain floats (None where undefined)."""
    def one(v):
        if isinstance(v, np.ma.MaskedArray):
            return None if v.mask.any() else float(v.data)
        return float(v)
    fields = {k: one(getattr(res, k)) for k in ("sigma_w2", "sigma_b2", "q_star", "c_star", "chi1", "chi_c",
                                                 "slope_q", "xi_q", "xi_c")}
    return SignalPropagation(res.activation, phase=str(res.phase), **fields)


# -- numbers and arrays ---------------------------------------------------------------------------------


def _second(f: Activation, q: np.ndarray) -> np.ndarray:
    from ..integrals.gaussian import second_moment
    return np.asarray(second_moment(f, q), dtype=float)


def _cross(f: Activation, q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    from ..integrals.gaussian import cross_moment
    return np.asarray(cross_moment(f, q1, q2), dtype=float)


def _length_slope(phi: Activation, q: np.ndarray) -> np.ndarray:
    """dE[phi(sqrt(q) z)^2]/dq = E[u phi(u) phi'(u)] / q (Stein; needs phi' only, so kinks are fine).

    A closed form is differentiated symbolically; otherwise the polarization
    E[u phi phi'] = (E[(phi + x phi')^2] - E[(phi - x phi')^2]) / 4. At q = 0 the value is the limit
    q -> 0+, taken at q = 1e-60 (the error is O(q)).
    """
    from ..integrals.closed_forms import closed_form

    q = np.asarray(q, dtype=float)
    cf = closed_form(phi)
    if cf is not None:
        s = sympy.Symbol("q", positive=True)
        d = Arithmetic("sympy")._exact(sympy.diff(cf.sym_second(s), s))
        fn = sympy.lambdify(s, d, modules="numpy")
        with np.errstate(all="ignore"):
            out = np.broadcast_to(np.asarray(fn(q), dtype=float), q.shape).copy()
        zero = q == 0
        if np.any(zero):  # the limit q -> 0+ of the closed form's derivative
            out[zero] = float(sympy.limit(d, s, 0, "+"))
        return out
    dphi = phi.derivative
    plus = Activation(name=f"{phi.name} + x {phi.name}'", expr=phi.expr + X * dphi.expr)
    minus = Activation(name=f"{phi.name} - x {phi.name}'", expr=phi.expr - X * dphi.expr)
    qe = np.where(q == 0, 1e-60, q)
    return (_second(plus, qe) - _second(minus, qe)) / (4 * qe)


def _depth(chi: np.ndarray) -> np.ndarray:
    """xi = -1/log(chi): 0 at chi = 0 (one step suffices), inf for chi >= 1 (no exponential approach)."""
    chi = np.asarray(chi, dtype=float)
    out = np.full(chi.shape, np.inf)
    inside = (chi > 0) & (chi < 1)
    out[inside] = -1.0 / np.log(chi[inside])
    out[chi <= 0] = 0.0
    return out


def _signal_arrays(phi: Activation, sw: np.ndarray, sb: np.ndarray, q0: float) -> SignalPropagation:
    shape = sw.shape
    w, b = sw.ravel(), sb.ravel()
    dphi = phi.derivative  # raises InvalidArgument for a Dirac delta (step, sign)
    q, divergent = _length_fixed_points(phi, w, b, q0)
    ok = ~divergent
    n = w.size
    chi1 = np.zeros(n)
    slope = np.zeros(n)
    c_star = np.ones(n)
    chi_c = np.zeros(n)
    # at q* = 0 the limit q -> 0+ (relu: E[step^2] = 1/2, not step(0)^2); error O(1e-300)
    chi1[ok] = w[ok] * _second(dphi, np.where(q[ok] == 0, 1e-300, q[ok]))
    slope[ok] = w[ok] * _length_slope(phi, q[ok])
    chi_c[ok] = chi1[ok]
    critical = ok & (np.abs(chi1 - 1) <= _CRITICAL_TOL)
    chaotic = ok & ~critical & (chi1 > 1) & (q > 0)
    if np.any(chaotic):
        c_star[chaotic], chi_c[chaotic] = _correlation_fixed_points(phi, dphi, w[chaotic], b[chaotic], q[chaotic], chi1[chaotic])
    phase = np.where(divergent, "divergent", np.where(critical, "critical", np.where(chi1 < 1, "ordered", "chaotic")))
    xi_q = _depth(slope)
    xi_c = np.where(critical, np.inf, _depth(chi_c))

    def out(v):
        v = v.reshape(shape)
        return np.ma.masked_array(v, mask=divergent.reshape(shape)) if np.any(divergent) else v

    return SignalPropagation(phi, sw, sb, q.reshape(shape), out(c_star), out(chi1), out(chi_c), out(slope),
                             out(xi_q), out(xi_c), phase.reshape(shape).astype("<U9"))


def _length_fixed_points(phi: Activation, w: np.ndarray, b: np.ndarray, q0: float):
    """The fixed point of q -> w E[phi^2](q) + b reached by iteration from q0, for each (w, b).

    The map is non-decreasing, so iteration moves monotonically toward the nearest fixed point in the
    direction of its first step: bracket it (halving toward 0, or doubling up to 1e15 beyond which the
    length is called divergent), then an Illinois secant inside the bracket. Returns (q*, divergent).
    """
    n = w.size
    eps = np.finfo(float).eps

    def f(q, idx):
        return w[idx] * _second(phi, q) + b[idx] - q

    q = np.full(n, float(q0))
    divergent = np.zeros(n, dtype=bool)
    every = np.arange(n)
    fq = f(q, every)
    lo, hi = np.zeros(n), q.copy()
    flo, fhi = np.zeros(n), fq.copy()
    done = np.abs(fq) <= 4 * eps * max(q0, 1.0)
    down = ~done & (fq < 0)
    up = ~done & (fq > 0)
    # below q0: f(0) = w phi(0)^2 + b >= 0 brackets it, unless 0 is itself a fixed point
    if np.any(down):
        idx = np.nonzero(down)[0]
        f0 = f(np.zeros(idx.size), idx)
        flo[idx] = f0
        zero_fixed = idx[f0 <= 0]
        if zero_fixed.size:
            # one call on the ladder q0 2^-k, k = 1..1000 (down to ~1e-301): the largest point with f > 0
            # (beyond the quadrature's rounding) brackets the largest fixed point below q0 with its upper
            # neighbour; none means the iteration ends at 0
            ladder = float(q0) * 2.0 ** -np.arange(1, 1001)
            fx = w[zero_fixed][:, None] * _second(phi, ladder) + b[zero_fixed][:, None] - ladder
            hit = fx > 64 * eps * ladder
            anyhit = hit.any(axis=1)
            first = np.argmax(hit, axis=1)
            got = zero_fixed[anyhit]
            k = first[anyhit]
            lo[got], flo[got] = ladder[k], fx[anyhit, k]
            hi[got] = 2 * ladder[k]
            fhi[got] = np.where(k > 0, fx[anyhit, np.maximum(k - 1, 0)], fq[got])
            none = zero_fixed[~anyhit]
            q[none], done[none] = 0.0, True
    if np.any(up):
        idx = np.nonzero(up)[0]
        lo[idx], flo[idx] = q[idx], fq[idx]
        h = q[idx].copy()
        while idx.size:
            h = 2 * h
            fh = f(h, idx)
            found = fh <= 0
            hi[idx[found]], fhi[idx[found]] = h[found], fh[found]
            too_far = ~found & (h > 1e15)
            divergent[idx[too_far]] = True
            done[idx[too_far]] = True
            q[idx[too_far]] = np.inf
            lo[idx[~found]], flo[idx[~found]] = h[~found], fh[~found]
            keep = ~found & ~too_far
            idx, h = idx[keep], h[keep]
    todo = np.nonzero(~done)[0]
    side = np.zeros(n)
    for _ in range(300):
        if todo.size == 0:
            break
        a, c, fa, fc = lo[todo], hi[todo], flo[todo], fhi[todo]
        with np.errstate(all="ignore"):
            x = (a * fc - c * fa) / (fc - fa)
        bad = ~np.isfinite(x) | (x <= a) | (x >= c)
        x = np.where(bad, (a + c) / 2, x)
        fx = f(x, todo)
        pos = fx > 0
        # Illinois: an end kept twice in a row has its value halved, so both ends converge
        ti, tk = todo[pos], todo[~pos]
        lo[ti], flo[ti] = x[pos], fx[pos]
        fhi[ti[side[ti] > 0]] /= 2
        side[ti] = 1
        hi[tk], fhi[tk] = x[~pos], fx[~pos]
        flo[tk[side[tk] < 0]] /= 2
        side[tk] = -1
        q[todo] = x
        fin = (hi[todo] - lo[todo] <= 4 * eps * hi[todo]) | (fx == 0)
        todo = todo[~fin]
    return q, divergent


def _correlation_fixed_points(phi: Activation, dphi: Activation, w, b, q, chi1):
    """Chaotic phase: the root c* in [0, 1) of g(c) = (w I_phi[q, c q] + b)/q - c, and chi_c = g'(c*) + 1.

    g is convex on [0, 1] with g(1) = 0, so the chord slope k(c) = g(c) / (c - 1) increases from
    k(0) = -g(0) <= 0 to k(1) = g'(1) = chi_1 - 1 > 0, and vanishes only at c*: c* is bracketed by [0, 1]
    with both end values known. Dividing out the root at 1 makes k smooth and nearly linear; it is solved by
    inverse quadratic interpolation through the last three points (the first two are the free ends 0 and 1),
    falling back to a secant step inside the bracket when the parabola leaves it (one cross moment per step).
    """
    n = w.size
    g0 = b / q + w * _cross(phi, q, np.zeros(n)) / q
    c = np.zeros(n)
    lo, hi = np.zeros(n), np.ones(n)
    klo, khi = -g0, chi1 - 1
    # the three latest points (x, k(x)): the ends first, so the first step is the secant (regula falsi)
    xs = np.stack([np.zeros(n), np.ones(n), np.ones(n)])
    ks = np.stack([-g0, chi1 - 1, chi1 - 1])
    todo = np.nonzero(g0 > 0)[0]  # g(0) = 0: c* = 0 (odd phi without bias)
    first = True
    for _ in range(200):
        if todo.size == 0:
            break
        a, z, fa, fz = lo[todo], hi[todo], klo[todo], khi[todo]
        with np.errstate(all="ignore"):
            secant = (a * fz - z * fa) / (fz - fa)
            x0, x1, x2 = xs[:, todo]
            f0, f1, f2 = ks[:, todo]
            iqi = (x0 * f1 * f2 / ((f0 - f1) * (f0 - f2)) + x1 * f0 * f2 / ((f1 - f0) * (f1 - f2))
                   + x2 * f0 * f1 / ((f2 - f0) * (f2 - f1)))
        x = secant if first else np.where(np.isfinite(iqi) & (iqi > a) & (iqi < z), iqi, secant)
        x = np.where(~np.isfinite(x) | (x <= a) | (x >= z), (a + z) / 2, x)
        qq = q[todo]
        kx = ((w[todo] * _cross(phi, qq, x * qq) + b[todo]) / qq - x) / (x - 1)
        neg = kx < 0
        lo[todo[neg]], klo[todo[neg]] = x[neg], kx[neg]
        hi[todo[~neg]], khi[todo[~neg]] = x[~neg], kx[~neg]
        xs[:, todo] = np.stack([xs[1, todo], xs[2, todo], x]) if not first else np.stack([a, z, x])
        ks[:, todo] = np.stack([ks[1, todo], ks[2, todo], kx]) if not first else np.stack([fa, fz, kx])
        first = False
        # a superlinear step this small is the error itself: c* to ~1e-15
        fin = (hi[todo] - lo[todo] <= 4e-16) | (kx == 0) | (np.abs(x - c[todo]) <= 1e-15)
        c[todo] = x
        todo = todo[~fin]
    chi_c = w * _cross(dphi, q, c * q)
    return c, chi_c


# -- mpmath (scalars at any precision) ------------------------------------------------------------------


def _signal_mp(phi: Activation, sw: Any, sb: Any, dps: int, q0: Any, tol: float, max_iter: int) -> SignalPropagation:
    from ..integrals.gaussian import cross_moment, second_moment

    ctx = Arithmetic("mp", dps)
    with mpmath.workdps(dps):
        sw, sb = ctx.num(sw), ctx.num(sb)
        dphi = phi.derivative
        E2 = lambda q: second_moment(phi, q, dps=dps)  # noqa: E731
        q_star = _length_fixed_point_mp(lambda q: sw * E2(q) + sb, q0, ctx)
        if q_star is None:
            # no fixed point: lengths grow without bound, and the depth scales are undefined
            return SignalPropagation(phi, sw, sb, mpmath.inf, None, None, None, None, None, None, "divergent", dps)
        chi1 = sw * second_moment(dphi, q_star, dps=dps)
        # slope of the length map: a central difference (one-sided at q* = 0), step ~ eps^(1/3)
        h = max(abs(q_star), ctx.num(1)) * (ctx.num(10) ** (-(dps // 3)))
        if q_star - h > 0:
            slope_q = sw * (E2(q_star + h) - E2(q_star - h)) / (2 * h)
        else:  # one-sided at q* = 0, Richardson-extrapolated to O(h^2)
            d1 = (E2(q_star + h) - E2(q_star)) / h
            d2 = (E2(q_star + h / 2) - E2(q_star)) / (h / 2)
            slope_q = sw * (2 * d2 - d1)
        tol_phase = mpmath.mpf(10) ** (-dps + 3)
        critical = abs(chi1 - 1) <= tol_phase
        if q_star == 0 or chi1 <= 1 or critical:
            c_star, chi_c = ctx.num(1), chi1
        else:
            def cmap(c):
                return (sw * cross_moment(phi, q_star, c * q_star, dps=dps) + sb) / q_star

            c_star = _correlation_fixed_point_mp(cmap, ctx, tol, max_iter)
            chi_c = sw * cross_moment(dphi, q_star, c_star * q_star, dps=dps)

        def depth(chi):
            return mpmath.mpf(0) if chi <= 0 else (-1 / mpmath.log(chi) if chi < 1 - tol_phase else mpmath.inf)

        xi_q = depth(slope_q)
        xi_c = mpmath.inf if critical else depth(chi_c)
        phase = "critical" if critical else ("ordered" if chi1 < 1 else "chaotic")
        return SignalPropagation(phi, sw, sb, q_star, c_star, chi1, chi_c, slope_q, xi_q, xi_c, phase, dps)


def _length_fixed_point_mp(length, q0, ctx: Arithmetic):
    """As :func:`_length_fixed_points`, one point in mpmath, by bisection; None when it diverges."""
    f = lambda x: length(x) - x  # noqa: E731
    q = ctx.num(q0)
    fq = f(q)
    eps = ctx.num(10) ** (-(ctx.dps or 15) + 2)
    if abs(fq) <= eps * max(abs(q), ctx.num(1)):
        return q
    if fq < 0:
        lo, hi = ctx.num(0), q
        if f(lo) <= 0:
            x = q
            for _ in range(200):
                x = x / 2
                if f(x) > 100 * eps * x:
                    lo, hi = x, x * 2
                    break
            else:
                return ctx.num(0)
    else:
        lo, hi = q, q
        while True:
            hi = hi * 2
            if hi > ctx.num(1e15):
                return None
            if f(hi) <= 0:
                break
            lo = hi
    for _ in range(4 * (ctx.dps or 16) + 60):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= abs(hi) * eps / 100:
            break
    return (lo + hi) / 2


def _correlation_fixed_point_mp(cmap, ctx: Arithmetic, tol: float, max_iter: int):
    """Chaotic phase: iterate from c = 0 (monotone by convexity), then polish by bisection."""
    c = ctx.num(0)
    for _ in range(max_iter):
        nc = cmap(c)
        if abs(nc - c) <= tol:
            c = nc
            break
        c = nc
    g = lambda x: cmap(x) - x  # noqa: E731
    lo, hi = c - ctx.num(1e-6), min(c + ctx.num(1e-6), ctx.num(1) - ctx.num(1e-15))
    if lo >= 0 and g(lo) > 0 > g(hi):
        for _ in range(200):
            mid = (lo + hi) / 2
            if g(mid) > 0:
                lo = mid
            else:
                hi = mid
        c = (lo + hi) / 2
    return c


# -- sympy ----------------------------------------------------------------------------------------------

Q_STAR = sympy.Symbol("q^*", nonnegative=True)
C_STAR = sympy.Symbol("c^*", real=True)


def _affine(expr: sympy.Expr, q: sympy.Symbol):
    """(a, b) with expr = a q + b, or None."""
    if expr.has(sympy.Integral) or any(True for _ in sympy.preorder_traversal(expr)
                                       if type(_).__name__ == "GaussianExpectation"):
        return None
    expr = sympy.expand(expr)
    if not expr.is_polynomial(q) or sympy.degree(expr, q) > 1:
        return None
    return expr.coeff(q, 1), expr.coeff(q, 0)


def _signal_symbolic(phi: Activation, sw: sympy.Expr, sb: sympy.Expr, q0: sympy.Expr) -> SignalPropagation:
    from ..integrals.gaussian import cross_moment, second_moment

    exact = Arithmetic("sympy")._exact
    q = sympy.Symbol("q", nonnegative=True)
    E2 = exact(second_moment(phi, q))
    equations = {"q*": sympy.Eq(Q_STAR, sw * E2.subs(q, Q_STAR) + sb)}
    affine = _affine(E2, q)
    dphi = phi.derivative
    if affine is not None:
        # q -> s q + k: iteration converges to k / (1 - s) iff s < 1; every q is fixed when s = 1, k = 0;
        # otherwise the length grows without bound (for s > 1 the fixed point k / (1 - s) <= 0 repels)
        a, k0 = affine
        s, k = sympy.simplify(sw * a), sympy.simplify(sw * k0 + sb)
        num, den = sympy.fraction(sympy.cancel(k / (1 - s)))
        # 2 sigma_b^2 / (2 - sigma_w^2), as papers write it, rather than -2 sigma_b^2 / (sigma_w^2 - 2)
        finite_q = (-num) / (-den) if den.as_coeff_Add()[0] < 0 else num / den
        marginal = sympy.And(sympy.Eq(s, 1), sympy.Eq(k, 0))
        conditions = sympy.Or(s < 1, marginal)
        q_star = sympy.Piecewise((finite_q, s < 1), (q0, marginal), (sympy.oo, True))
        q_fin = sympy.Piecewise((finite_q, s < 1), (q0, True)) if marginal is not sympy.false else finite_q
    else:
        conditions = sympy.true
        q_star = q_fin = Q_STAR
    chi1 = sympy.simplify(exact(sw * second_moment(dphi, q_fin)))
    slope_q = sympy.simplify(sw * sympy.diff(E2, q).subs(q, q_fin))
    if q_fin.is_zero:
        # every input collapses to length 0: correlations are trivially 1
        c_star, chi_c = sympy.S.One, chi1
    else:
        correlation = (sw * exact(cross_moment(phi, q_fin, C_STAR * q_fin)) + sb) / q_fin
        equations["c*"] = sympy.Eq(C_STAR, correlation)
    if q_fin.is_zero:
        pass
    elif affine is not None and sympy.simplify(chi1 - s) == 0:
        # chi_1 equals the length map's slope (positively homogeneous phi): wherever q* is finite,
        # chi_1 <= 1, so c = 1 is the attracting fixed point
        c_star, chi_c = sympy.S.One, chi1
    else:
        chaotic_slope = sw * exact(cross_moment(dphi, q_fin, C_STAR * q_fin))
        c_star = sympy.Piecewise((1, chi1 <= 1), (C_STAR, True))
        chi_c = sympy.Piecewise((chi1, chi1 <= 1), (chaotic_slope, True))
    xi_q = -1 / sympy.log(slope_q)
    xi_c = -1 / sympy.log(chi_c)
    return SignalPropagation(phi, sw, sb, q_star, c_star, chi1, chi_c, slope_q, xi_q, xi_c, "symbolic", None,
                             equations, conditions)


# -- the order-to-chaos line ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CriticalLine:
    """The order-to-chaos line chi_1 = 1, parametrised by the fixed point q = q* >= 0:

        sigma_w^2 = 1 / E[phi'(sqrt(q) z)^2],   sigma_b^2 = q - E[phi(sqrt(q) z)^2] / E[phi'(sqrt(q) z)^2]

    (chi_1 = 1 and the length equation q = sigma_w^2 E[phi^2] + sigma_b^2, solved for the sigma's).

    Attributes:
        q: the parameter (a sympy Symbol).
        sigma_w2, sigma_b2: sympy expressions in q (closed forms or Gaussian expectations).
        closed_form: sigma_w2 as a function of the symbol ``sigma_b2`` when one exists, else None.
    """

    activation: Activation
    q: sympy.Symbol
    sigma_w2: sympy.Expr
    sigma_b2: sympy.Expr
    closed_form: Any = None

    def __str__(self) -> str:
        lines = [f"CriticalLine({self.activation.name}): q >= 0",
                 f"  sigma_w^2 = {self.sigma_w2}", f"  sigma_b^2 = {self.sigma_b2}"]
        if self.closed_form is not None:
            lines.append(f"  sigma_w^2(sigma_b^2) = {self.closed_form}")
        return "\n".join(lines)


SIGMA_B2 = sympy.Symbol("sigma_b2", nonnegative=True)


def critical_line(activation_: Any) -> CriticalLine:
    """sigma_w^2 = 1 / E[phi'^2](q), sigma_b^2 = q - E[phi^2](q) / E[phi'^2](q): the line chi_1 = 1.

    A closed form sigma_w^2(sigma_b^2) exists when E[phi'^2] does not depend on q (positively homogeneous
    phi: ReLU's line is sigma_w^2 = 2; for sigma_b^2 > 0 the length q* diverges as sigma_w^2 -> 2, so the
    critical point with finite q* is (2, 0)) or when sympy inverts sigma_b^2(q).

    Example:
        >>> critical_line("erf").sigma_w2
        pi*sqrt(4*q + 1)/4
        >>> critical_line("relu").closed_form
        2
    """
    from ..integrals.gaussian import second_moment

    phi = activation_ if isinstance(activation_, Activation) else (
        activation(activation_) if isinstance(activation_, str) else None)
    if phi is None:
        raise InvalidArgument("activation", activation_, "a catalogue name or a meanfield.Activation")
    exact = Arithmetic("sympy")._exact
    q = sympy.Symbol("q", nonnegative=True)
    d2 = exact(second_moment(phi.derivative, q))
    e2 = exact(second_moment(phi, q))
    sw = sympy.simplify(1 / d2)
    sb = sympy.simplify(q - e2 / d2)
    closed = None
    if not sw.has(q):
        closed = sw
    elif _affine(sb, q) is not None:
        (a, k) = _affine(sb, q)
        if a != 0:
            closed = sympy.simplify(sw.subs(q, (SIGMA_B2 - k) / a))
    return CriticalLine(phi, q, sw, sb, closed)


def sigma_w2_critical(activation_: Any, sigma_b2: Any) -> Any:
    """sigma_w^2 on the order-to-chaos line chi_1 = 1 at bias variance sigma_b^2 (see :func:`critical_line`).

    Numbers or arrays give numbers or arrays: the parameter q solves sigma_b^2(q) = sigma_b^2 (bracketed
    bisection from q = 0; the smallest solution), then sigma_w^2 = 1 / E[phi'^2](q). A sympy sigma_b^2
    gives the closed form when one exists, else the :class:`CriticalLine` (the unsolved parametric form).

    Raises:
        InvalidArgument: sigma_b2 < 0 or not finite; no q in [0, 1e15] reaches sigma_b2.

    Example:
        >>> round(float(sigma_w2_critical("tanh", 0.0)), 12)
        1.0
        >>> sigma_w2_critical("erf", [0.0, 0.1]).round(6).tolist()
        [0.785398, 1.552118]
    """
    line = critical_line(activation_)
    if isinstance(sigma_b2, sympy.Basic) and not sigma_b2.is_number:
        check_real("sigma_b2", sigma_b2, minimum=0)
        if line.closed_form is None:
            return line
        return line.closed_form.subs(SIGMA_B2, sigma_b2)
    sb = _as_array("sigma_b2", sigma_b2, strict=False)
    phi = line.activation
    if line.closed_form is not None and not line.closed_form.has(SIGMA_B2):
        out = np.full(sb.shape, float(line.closed_form))
        return out if out.ndim else float(out)
    d = phi.derivative
    flat = sb.ravel()

    def sb_of(qv):
        return qv - _second(phi, qv) / _second(d, qv)

    lo, hi = np.zeros(flat.size), np.ones(flat.size)
    need = sb_of(hi) < flat
    while np.any(need):
        hi[need] *= 2
        if np.any(hi > 1e15):
            i = int(np.nonzero(hi > 1e15)[0][0])
            raise InvalidArgument("sigma_b2", float(flat[i]), f"a bias variance on {phi.name}'s critical line",
                                  "no q* up to 1e15 reaches it")
        need = sb_of(hi) < flat
    below0 = sb_of(lo) > flat
    if np.any(below0):
        i = int(np.nonzero(below0)[0][0])
        raise InvalidArgument("sigma_b2", float(flat[i]), f"a bias variance >= {float(sb_of(lo[i:i+1])[0])!r} "
                              f"(the critical line of {phi.name} starts there)")
    for _ in range(200):
        mid = (lo + hi) / 2
        low = sb_of(mid) < flat
        lo = np.where(low, mid, lo)
        hi = np.where(low, hi, mid)
        if np.all(hi - lo <= 4e-16 * np.maximum(hi, 1e-300)):
            break
    qc = np.where(sb_of(np.zeros(flat.size)) == flat, 0.0, (lo + hi) / 2)   # the line's end point, exactly
    out = (1.0 / _second(d, qc)).reshape(sb.shape)
    return out if out.ndim else float(out)
