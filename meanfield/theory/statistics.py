"""The FIM statistics from order parameters, in any number type: Gram entries, P, m, s, lambda_max.

Shared by :func:`meanfield.theory.fisher.predict` (numbers) and :func:`meanfield.theory.derivation.derive`
(sympy); the formulas are written out in :mod:`meanfield.theory.fisher`.
"""

from __future__ import annotations

import math
from typing import Any

import mpmath
import numpy as np
import sympy

from ..errors import InvalidArgument
from ..spec.network import BatchNorm, Network
from .backend import Arithmetic, tex, to_float
from .recursions import OrderParameters, network_alpha

__all__ = ["gram_statistics", "lambda_kind", "separation", "BULK_SPREAD", "ExpectedMaxInverseChi2", "statistics_latex"]


class ExpectedMaxInverseChi2(sympy.Function):
    """E[max_{k <= C} T / chi^2_{T-1,k}] for C independent chi-squares with T - 1 degrees of freedom.

    The top eigenvalue of the expected Gram under a full batch norm on the output scales with the
    largest of the C inverse batch variances. ``ExpectedMaxInverseChi2(T, C)`` stays unevaluated (and
    symbolic in T and C) except for C = 1, where it is E[T / chi^2_{T-1}] = T / (T - 3); ``evalf`` /
    ``sympy.N`` and ``lambdify`` (any module) evaluate it by the quadrature of
    :func:`meanfield.integrals.sphere.expected_max_inverse_chi2` (mpmath above double precision).
    It is finite for integer T >= 4.

    Example:
        >>> Ts, Cs = sympy.symbols("T C", positive=True, integer=True)
        >>> ExpectedMaxInverseChi2(Ts, 1)
        T/(T - 3)
        >>> e = ExpectedMaxInverseChi2(Ts, Cs)
        >>> round(float(e.subs({Ts: 16, Cs: 3})), 10)
        1.6647902196
        >>> round(sympy.lambdify([Ts, Cs], e)(16, 3), 10)
        1.6647902196
    """

    is_real = True
    is_positive = True
    is_finite = True

    @classmethod
    def eval(cls, T, count):
        for name, v, lo in (("samples", T, 4), ("count", count, 1)):
            if v.is_number and not (v.is_Integer and v >= lo):
                raise InvalidArgument(name, v, f"an integer >= {lo}" + (" (E[T/chi^2_(T-1)] is infinite for T <= 3)"
                                                                       if name == "samples" else ""))
        if count == 1:
            return T / (T - 3)
        return None

    def _eval_evalf(self, prec):
        T, count = self.args
        if not (T.is_Integer and count.is_Integer):
            return None
        if prec <= 53:
            from ..integrals.sphere import expected_max_inverse_chi2
            return sympy.Float(expected_max_inverse_chi2(int(T), int(count)), 15)
        return sympy.Float(_max_inverse_chi2_mp(int(T), int(count), mpmath.libmp.prec_to_dps(prec) + 5),
                           mpmath.libmp.prec_to_dps(prec))

    def _latex(self, printer, exp=None):
        T, count = (printer._print(a) for a in self.args)
        body = (r"\mathbb{E}\left[\max_{k \le %s} \frac{%s}{\chi^{2}_{%s - 1,\,k}}\right]"
                % (count, T, T if self.args[0].is_Atom else "(%s)" % T))
        return body if exp is None else r"%s^{%s}" % (body, exp)

    @staticmethod
    def _imp_(T, count):
        """The numeric implementation lambdify uses (elementwise over arrays)."""
        from ..integrals.sphere import expected_max_inverse_chi2
        f = np.vectorize(lambda t, c: expected_max_inverse_chi2(int(t), int(c)), otypes=[float])
        out = f(T, count)
        return float(out) if np.ndim(out) == 0 else out


def _max_inverse_chi2_mp(T: int, count: int, dps: int) -> Any:
    """E[max_k T / chi^2_{T-1,k}] = T int_0^inf count f(y) (1 - F(y))^(count-1) / y dy in mpmath."""
    with mpmath.workdps(dps):
        k = mpmath.mpf(T - 1) / 2

        def integrand(y):
            density = mpmath.exp((k - 1) * mpmath.log(y / 2) - y / 2 - mpmath.loggamma(k)) / 2
            tail = mpmath.gammainc(k, y / 2, mpmath.inf, regularized=True)
            return count * density * tail ** (count - 1) / y

        return T * mpmath.quad(integrand, [0, T - 1, 2 * (T - 1), mpmath.inf])


def gram_statistics(op: OrderParameters, width: Any, T: Any, C: Any, ctx: Arithmetic) -> dict:
    """gram entries, m, s, lambda_max (finite width and leading) from the order parameters.

    Keys: alpha, P, P_lead, gd, go (E G_tt, E G_tt' at width M), gd_lead, go_lead, m, s, lam (finite width),
    m_l, s_l, lam_l (leading order), kappa1, kappa2, terms (per-layer Gram entries), rank, full_bn_last.

    Example:
        >>> from meanfield.theory.recursions import order_parameters
        >>> st = gram_statistics(order_parameters(Network(2, "linear", 1, 0), 4), 100, 4, 1, Arithmetic("float"))
        >>> float(st["gd"]), float(st["go"]), st["P"]
        (50.5, 0.5, 10201)
    """
    net = op.network
    L = net.depth
    Tn = ctx.num(T)
    Cn = ctx.num(C)
    symbolic_width = isinstance(width, sympy.Basic) and not width.is_number
    Mn = width if symbolic_width else ctx.num(width)
    alpha = network_alpha(net, ctx)
    # exact parameter count
    if symbolic_width or ctx.mode == "sympy":
        sizes = [ctx.num(a) * Mn for a in net.alphas] + [Cn]
        if not symbolic_width:
            sizes = [sympy.nsimplify(s) for s in sizes]
        P = sum((sizes[l] * (sizes[l - 1] + 1) for l in range(1, L + 1)), ctx.num(0))
    else:
        P = net.parameter_count(int(width))  # an exact int (mixes with floats, arrays and mpf)
    P_lead = alpha * Mn**2 if L > 1 else Cn * ctx.num(net.alphas[0]) * Mn
    terms = op.gram_layers(Mn)
    lead_terms = op.gram_layers(None)
    gd = sum((a for a, _ in terms), ctx.num(0))
    go = sum((b for _, b in terms), ctx.num(0))
    gd_lead = Mn * sum((a for a, _ in lead_terms), ctx.num(0))
    go_lead = Mn * sum((b for _, b in lead_terms), ctx.num(0))
    if not (isinstance(T, sympy.Basic) and not T.is_number) and int(T) == 1:
        go = go * 0
        go_lead = go_lead * 0
    last = net.norm_at(L)
    full_bn_last = isinstance(last, BatchNorm) and not last.center_only
    # E||G_kk||_F^2 / ||E G_kk||_F^2 for full batch norm on the output: chi-square and projector moments
    r = (Tn - 3) * (Tn - 1) / ((Tn - 5) * (Tn - 2)) if full_bn_last else ctx.num(1)

    def stats(gd_, go_, P_):
        m = Cn * Tn * gd_ / P_
        s = Cn * (Tn * gd_**2 + Tn * (Tn - 1) * go_**2) * r / P_
        if ctx.mode == "sympy":
            lam = gd_ - go_ if isinstance(last, BatchNorm) else gd_ + (Tn - 1) * go_
        else:
            lam = ctx.max(gd_ + (Tn - 1) * go_, gd_ - go_)
        return m, s, lam

    m, s, lam = stats(gd, go, P)
    m_l, s_l, lam_l = stats(gd_lead, go_lead, P_lead)
    kappa1, kappa2 = op.kappas()  # = T gd_lead / (A M), computed without the 1/T so that T cancels exactly
    lost = (1 if last.center_only else 2) if isinstance(last, BatchNorm) else 0
    if ctx.mode == "sympy" or isinstance(T, sympy.Basic):
        rank = Cn * (Tn - lost)
    else:
        rank = min(int(C) * (int(T) - lost), P) if isinstance(P, int) else int(C) * (int(T) - lost)
    return dict(alpha=alpha, P=P, P_lead=P_lead, gd=gd, go=go, gd_lead=gd_lead, go_lead=go_lead, m=m, s=s,
                lam=lam, m_l=m_l, s_l=s_l, lam_l=lam_l, kappa1=kappa1, kappa2=kappa2, terms=terms, rank=rank,
                full_bn_last=full_bn_last)


# The bulk of G spreads above its mean eigenvalue gram_diag - gram_offdiag by about c sqrt(C T / M) (relative)
# at finite width; measured c = 1.3-2.3 (ReLU/erf/tanh, L = 3, T = 8-32, C = 1-4, M = 64-1024). The outlier
# gram_diag + (T-1) gram_offdiag is only called a prediction when it clears that spread with c = 3.
BULK_SPREAD = 3.0


def separation(gd: Any, go: Any, T: Any) -> Any:
    """(outlier - bulk) / bulk of E G per output: T gram_offdiag / (gram_diag - gram_offdiag).

    Example:
        >>> separation(50.5, 0.5, 4)
        0.04
    """
    return T * go / (gd - go)


def lambda_kind(net: Network, kappa2: Any, ctx: Arithmetic, gd: Any = None, go: Any = None, width: Any = None,
                 T: Any = None, outputs: Any = None) -> str:
    """"prediction" where the outlier gram_diag + (T-1) gram_offdiag of E G is the top eigenvalue, else "bound".

    A prediction needs no normalization on the output, kappa_2 > 0 and (given the width) an outlier that
    clears the bulk's finite-width spread BULK_SPREAD sqrt(C T / M) (C = ``outputs``, default the network's).

    Example:
        >>> lambda_kind(Network(3, "relu", 2, 0), 0.3, Arithmetic("float"))
        'prediction'
    """
    if net.norm_at(net.depth) is not None:
        return "bound"
    if ctx.mode == "sympy":
        if kappa2.free_symbols:
            return "prediction"  # assumes kappa_2 > 0 (derive() keeps a Max until the sign is known)
        return "prediction" if to_float(kappa2, "kappa2") > 1e-12 else "bound"
    if not float(kappa2) > 1e-12:
        return "bound"
    if gd is not None and width is not None:
        spread = BULK_SPREAD * math.sqrt(int(net.outputs if outputs is None else outputs) * int(T) / float(width))
        gap = float(gd) - float(go)
        # gd == go: identical inputs (q2 = q1), E G per output is rank one: the outlier is all there is
        if not (gap <= 0 or float(T) * float(go) / gap > spread):
            return "bound"
    return "prediction"


def statistics_latex(stats: Any, head: str) -> str:
    """The one-line LaTeX of a prediction's kappa's, P, m, s and lambda_max (or its bounds), after ``head``.

    Shared by the isotropic (:class:`meanfield.theory.fisher.FisherStats`) and the batch
    (:class:`meanfield.theory.batch.BatchFisherStats`) predictions, so both render alike in a notebook.
    """
    items = [(r"\kappa_1", stats.kappa1), (r"\kappa_2", stats.kappa2), ("P", stats.P), ("m", stats.m), ("s", stats.s)]
    if stats.lambda_max_kind == "bound":
        lo, hi = stats.lambda_max_bounds
        lam = rf"{tex(lo)} \le \lambda_{{\max}} \le {tex(hi)}\ \text{{(bound)}}"
    else:
        lam = rf"\lambda_{{\max}} = {tex(stats.lambda_max)}"
    body = r",\quad ".join(f"{k} = {tex(v)}" for k, v in items)
    return f"${head}:\\quad {body},\\quad {lam}$"
