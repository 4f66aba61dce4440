"""Signal propagation (Poole et al. 2016, Schoenholz et al. 2017): the length map's fixed point q*, the
correlation map's fixed point c*, chi_1 and the depth scales xi_q, xi_c of one activation at (sigma_w^2, sigma_b^2).

    q' = sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2,     c' = (sigma_w^2 I_phi[q*, c q*] + sigma_b^2) / q*,
    chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]             (order-to-chaos at chi_1 = 1)

Numbers in floats, mpmath (``dps``) or sympy, through the arithmetic backend of :mod:`meanfield.theory.backend`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import sympy

from ..errors import InvalidArgument, check_real
from ..spec.activations import Activation, activation
from .backend import Arithmetic, fmt, tex

__all__ = ["signal_propagation", "SignalPropagation"]


@dataclass(frozen=True)
class SignalPropagation:
    """Fixed point q*, correlation map c -> c', its fixed point c*, chi_1 and the depth scales.

    Attributes:
        q_star: fixed point of q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2 (inf if the length diverges;
            the other fields are then None).
        c_star: the stable fixed point of the correlation map (1 in the ordered phase).
        chi1: sigma_w^2 E[phi'(sqrt(q*) z)^2], slope of the correlation map at c = 1 (order-to-chaos at 1).
        chi_c: slope of the correlation map at c*, sigma_w^2 I_phi'[q*, c* q*].
        slope_q: slope of the length map at q*, chi1 + sigma_w^2 E[phi phi''] (from d/dq E[phi^2]).
        xi_q, xi_c: depth scales -1/log(slope_q), -1/log(chi_c) (inf at criticality).
        phase: "ordered" (chi1 < 1), "chaotic" (chi1 > 1), "critical" or "divergent" (no finite q*).
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
    phase: str
    dps: int | None = None

    def correlation_map(self, c: Any) -> Any:
        """c' = (sigma_w^2 I_phi[q*, c q*] + sigma_b^2) / q*, vectorised over c in [-1, 1]."""
        from ..integrals.gaussian import cross_moment
        if isinstance(self.q_star, sympy.Basic):
            return (self.sigma_w2 * cross_moment(self.activation, self.q_star, c * self.q_star) + self.sigma_b2) / self.q_star
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
                ("xi_q", fmt(self.xi_q)), ("xi_c", fmt(self.xi_c)), ("phase", self.phase)]
        w = max(len(k) for k, _ in rows)
        return "SignalPropagation\n" + "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)

    def _repr_latex_(self) -> str:
        items = [("q^*", self.q_star), ("c^*", self.c_star), (r"\chi_1", self.chi1), (r"\xi_q", self.xi_q),
                 (r"\xi_c", self.xi_c)]
        return "$" + r",\quad ".join(f"{k} = {tex(v)}" for k, v in items) + r",\quad \text{" + self.phase + "}$"


def signal_propagation(activation_: Any, sigma_w2: Any, sigma_b2: Any, *, dps: int | None = None,
                       q0: float = 1.0, tol: float = 1e-13, max_iter: int = 100000) -> SignalPropagation:
    """q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2, c* and chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2].

    Schoenholz et al. (2017): deviations from the fixed points decay as exp(-l/xi) with
    xi_q^{-1} = -log(chi_1 + sigma_w^2 E[phi(u) phi''(u)]) and xi_c^{-1} = -log(sigma_w^2 I_phi'[q*, c* q*]);
    at the order-to-chaos transition chi_1 = 1 and xi_c diverges. The length-map slope is taken as
    sigma_w^2 dE[phi(sqrt(q) z)^2]/dq (equal to the above by Stein's lemma, and defined for kinked phi).

    Numeric (float or ``dps``) values find q* by bisection on the monotone map, c* by iteration of the
    correlation map from c = 0. Symbolic sigma's give sympy expressions: q* as a closed form when sympy
    solves the fixed-point equation (ReLU, linear), else as an unevaluated ``Eq``-defined ``Symbol``.

    Args:
        activation_: a catalogue name or :class:`~meanfield.Activation`.
        sigma_w2, sigma_b2: weight and bias variance.
        dps: mpmath precision.
        q0: starting length for the iteration (only used where the map has several fixed points).

    Example:
        >>> sp = signal_propagation("tanh", 1.0, 0.0)
        >>> sp.phase, float(sp.chi1)
        ('critical', 1.0)
        >>> sp = signal_propagation("relu", 1.0, 0.5)
        >>> float(sp.q_star), round(float(sp.chi1), 12)
        (1.0, 0.5)
        >>> round(float(sp.correlation_map(0.0)), 6)   # (1/2pi + 0.5)/1
        0.659155
    """
    from ..integrals.gaussian import cross_moment, second_moment

    phi = activation(activation_) if not isinstance(activation_, Activation) else activation_
    symbolic = any(isinstance(v, sympy.Basic) and not v.is_number for v in (sigma_w2, sigma_b2)) or phi.is_symbolic
    sw = check_real("sigma_w2", sigma_w2, minimum=0, strict_min=True)
    sb = check_real("sigma_b2", sigma_b2, minimum=0)
    if symbolic:
        return _signal_symbolic(phi, sympy.sympify(sw), sympy.sympify(sb))
    ctx = Arithmetic("mp" if dps else "float", dps)
    with mpmath.workdps(dps or 15):
        sw, sb = ctx.num(sw), ctx.num(sb)
        E2 = (lambda q: second_moment(phi, q, dps=dps)) if dps else (lambda q: float(second_moment(phi, q)))
        length = lambda q: sw * E2(q) + sb  # noqa: E731
        q_star = _length_fixed_point(length, q0, ctx, tol)
        dphi = phi.derivative
        if q_star is None or not math.isfinite(float(q_star)):
            inf = mpmath.inf if dps else math.inf
            # no fixed point: lengths grow without bound, and the depth scales are undefined
            return SignalPropagation(phi, sw, sb, inf, None, None, None, None, None, None, "divergent", dps)
        q_eval = q_star
        chi1 = sw * (second_moment(dphi, q_eval, dps=dps) if dps else float(second_moment(dphi, q_eval)))
        # slope of the length map: a central difference (one-sided at q* = 0), step ~ eps^(1/3)
        h = max(abs(q_eval), ctx.num(1)) * (ctx.num(10) ** (-((dps or 15) // 3)))
        if q_eval - h > 0:
            slope_q = sw * (E2(q_eval + h) - E2(q_eval - h)) / (2 * h)
        else:  # one-sided at q* = 0, Richardson-extrapolated to O(h^2)
            d1 = (E2(q_eval + h) - E2(q_eval)) / h
            d2 = (E2(q_eval + h / 2) - E2(q_eval)) / (h / 2)
            slope_q = sw * (2 * d2 - d1)
        if float(q_star) == 0.0:
            # all inputs collapse to the same (zero) length: correlations are trivially 1
            c_star, chi_c = ctx.num(1), chi1
        else:
            def cmap(c):
                val = cross_moment(phi, q_eval, c * q_eval, dps=dps) if dps else float(
                    cross_moment(phi, q_eval, c * q_eval))
                return (sw * val + sb) / q_eval

            c_star = _correlation_fixed_point(cmap, chi1, ctx, tol, max_iter)
            chi_c = sw * (cross_moment(dphi, q_eval, c_star * q_eval, dps=dps) if dps
                          else float(cross_moment(dphi, q_eval, c_star * q_eval)))
        log = mpmath.log if dps else math.log
        inf = mpmath.inf if dps else math.inf
        tol_phase = 1e-12 if not dps else mpmath.mpf(10) ** (-dps + 3)
        # depth scales: inf at a marginal slope (within the accuracy of the derivative)
        xi_q = -1 / log(slope_q) if 0 < slope_q < 1 - 1e-7 else inf
        xi_c = -1 / log(chi_c) if 0 < chi_c < 1 - tol_phase else inf
        phase = "critical" if abs(chi1 - 1) <= tol_phase else ("ordered" if chi1 < 1 else "chaotic")
        return SignalPropagation(phi, sw, sb, q_star, c_star, chi1, chi_c, slope_q, xi_q, xi_c, phase, dps)


def _length_fixed_point(length, q0, ctx: Arithmetic, tol: float):
    """The fixed point of the non-decreasing length map that iteration from q0 converges to.

    Returns None when the iteration diverges (no fixed point above q0), q0 itself when q0 is fixed
    (e.g. ReLU at sigma_w^2 = 2, sigma_b^2 = 0, where every q is). Monotone maps converge monotonically
    to the nearest fixed point in the direction of the first step; bisection keeps that bracket.
    """
    f = lambda x: length(x) - x  # noqa: E731
    q = ctx.num(q0)
    fq = f(q)
    eps = ctx.num(10) ** (-(ctx.dps or 15) + 2)
    if abs(fq) <= eps * max(abs(q), ctx.num(1)):
        return q
    if fq < 0:
        # the fixed point is below q: bracket [lo, hi] with f(lo) > 0 >= f(hi); f(0) = sigma_b^2 >= 0
        lo, hi = ctx.num(0), q
        if f(lo) <= 0:
            # zero is a fixed point; look for a positive one between 0 and q
            x = q
            for _ in range(80):
                x = x / 2
                if f(x) > 100 * eps * x:  # a positive value above quadrature rounding
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


def _correlation_fixed_point(cmap, chi1, ctx: Arithmetic, tol: float, max_iter: int):
    if chi1 <= 1 + ctx.num(1e-12):
        return ctx.num(1)
    # chaotic: c = 1 is unstable; bisection on g(c) = cmap(c) - c over [-1, 1 - eps) finds the stable one
    c = ctx.num(0)
    for _ in range(max_iter):
        nc = cmap(c)
        if abs(nc - c) <= tol:
            c = nc
            break
        c = nc
    g = lambda x: cmap(x) - x  # noqa: E731
    lo, hi = c - ctx.num(1e-6), min(c + ctx.num(1e-6), ctx.num(1) - ctx.num(1e-15))
    if lo >= -1 and g(lo) > 0 > g(hi):
        for _ in range(200):
            mid = (lo + hi) / 2
            if g(mid) > 0:
                lo = mid
            else:
                hi = mid
        c = (lo + hi) / 2
    return c


def _signal_symbolic(phi: Activation, sw: sympy.Expr, sb: sympy.Expr) -> SignalPropagation:
    from ..integrals.gaussian import second_moment

    q = sympy.Symbol("q", positive=True)
    c = sympy.Symbol("c", real=True)
    length = sw * second_moment(phi, q) + sb
    q_star: Any
    try:
        sols = [s for s in sympy.solve(sympy.Eq(length, q), q) if s.is_positive is not False]
    except (NotImplementedError, TypeError, ValueError):
        sols = []
    if len(sols) == 1:
        q_star = sympy.simplify(sols[0])
    else:
        q_star = sympy.Symbol("q^*", positive=True)
    dphi = phi.derivative
    chi1 = sympy.simplify(sw * second_moment(dphi, q_star))
    slope_q = sympy.simplify(sw * sympy.diff(second_moment(phi, q), q).subs(q, q_star)) if not isinstance(
        q_star, sympy.Symbol) or q_star.name != "q^*" else sw * sympy.diff(second_moment(phi, q), q).subs(q, q_star)
    # c* = 1 in the ordered phase; the chaotic fixed point has no closed form in general
    c_star = sympy.S.One
    chi_c = chi1
    xi_q = -1 / sympy.log(slope_q)
    xi_c = -1 / sympy.log(chi_c)
    del c
    return SignalPropagation(phi, sw, sb, q_star, c_star, chi1, chi_c, slope_q, xi_q, xi_c, "symbolic", None)
