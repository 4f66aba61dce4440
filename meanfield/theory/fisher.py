"""FIM statistics m, s, lambda_max of a wide random network, for every normalization placement.

From the order parameters (:mod:`meanfield.theory.recursions`) the expected dual Gram G = J J^T / T has, per
output k, the exchangeable T x T block (gram_diag - gram_offdiag) I + gram_offdiag 1 1^T, and zero mean
across outputs. With P the exact parameter count and C the number of outputs:

    gram_diag    = sum_l (1/T) [(M_{l-1} qhat_1^{l-1} + 1) qtilde_1^l + (M_{l-1} qhat_2^{l-1} + 1) qtilde_1_mean^l]
    gram_offdiag = sum_l (1/T) [(M_{l-1} qhat_1^{l-1} + 1) qtilde_2_same^l + (M_{l-1} qhat_2^{l-1} + 1) qtilde_2^l]
    m            = C T gram_diag / P
    s            = C (T gram_diag^2 + T (T - 1) gram_offdiag^2) r / P
    lambda_max   = gram_diag + (T - 1) gram_offdiag        (the top eigenvalue of E G)

where r = 1 except with full batch norm on the output: its per-output scale 1/sigma_k^2 =
T / (v chi^2_{T-1}) does not concentrate, and E[1/sigma^4] / E[1/sigma^2]^2 = (T-3)/(T-5) together with
the rank T - 2 projector give r = (T-3)(T-1) / ((T-5)(T-2)). To leading order (drop the "+1" bias terms,
P -> alpha M^2) these are Karakida et al.'s m = kappa_1 C / M, s = alpha C (kappa_1^2 + (T-1) kappa_2^2)/T,
lambda_max = alpha M (kappa_1 + (T-1) kappa_2)/T, with kappa_1 = T gram_diag/(alpha M) as M -> inf.

What is and is not included. The finite-width values are exact in T (batch-norm projectors, sphere
law, chi-square moments), use the exact widths, P and the bias terms, and are leading order in 1/M
otherwise: the O(1/M) effects of finite-width fluctuations of the order parameters are not included,
nor is the excess of s from entry-wise Gram fluctuations (relative size about T/M with batch norm on
the output, 1/M otherwise).

lambda_max is a prediction where E G has C outliers of order M (no normalization on the output,
kappa_2 > 0) that clear the bulk: T gram_offdiag / (gram_diag - gram_offdiag) > 3 sqrt(C T / M), the
bulk's measured finite-width spread (constant 1.3-2.3) with a margin. Otherwise (batch norm on the
output, kappa_2 <= 0, or an outlier buried in the bulk at this width) the top eigenvalue is the edge of
the bulk, which this theory does not give: ``lambda_max_kind`` is then "bound", ``lambda_max_bounds`` =
(lo, hi) with lo the top eigenvalue of E G (a lower bound for E lambda_max by Jensen: lambda_max is
convex) sharpened for full batch norm by E[max_k T / chi^2_{T-1,k}], and hi = sqrt(P s); ``lambda_max``
holds lo and ``eta_max`` = 2 / lo is then an upper bound on the stable learning rate.
"""

from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np
import sympy

from ..errors import InvalidArgument, check_int
from ..spec.network import BatchNorm, Network
from .recursions import OrderParameters, _alpha, _check_samples, _Ctx, _fmt, _tex, order_parameters

__all__ = ["predict", "predict_grid", "FisherStats", "LeadingStats", "GridStats"]


@dataclass(frozen=True)
class LeadingStats:
    """Leading-order (large M at fixed T) kappa's, P = alpha M^2, m, s and lambda_max.

    Example:
        >>> lead = predict(Network(3, "relu", 2, 0), 100, 4).leading
        >>> float(lead.m)                     # kappa_1 C / M
        0.015
    """

    kappa1: Any
    kappa2: Any
    P: Any
    m: Any
    s: Any
    lambda_max: Any
    gram_diag: Any
    gram_offdiag: Any

    def to_dict(self) -> dict:
        return {"kappa1": _plain(self.kappa1), "kappa2": _plain(self.kappa2), "P": _plain(self.P),
                "m": _plain(self.m), "s": _plain(self.s), "lambda_max": _plain(self.lambda_max)}


@dataclass(frozen=True)
class FisherStats:
    """Predicted FIM statistics of ``network`` at width M and batch size T (finite-width expectations).

    Attributes:
        network, width, samples: what was predicted.
        order: the :class:`~meanfield.OrderParameters` behind it.
        alpha: sum_{l=1}^{L-1} alpha_l alpha_{l-1}; P: exact parameter count.
        kappa1, kappa2: T E G_diag / (alpha M), T E G_offdiag / (alpha M) as M -> inf (at this T).
        m, s, lambda_max, eta_max: finite-width expectations (module docstring); eta_max = 2 / lambda_max.
        gram_diag, gram_offdiag: E G[(k,t),(k,t)] and E G[(k,t),(k,t')] (t != t'), as the sampler reports.
        layers: per weight layer l, (l, its contribution to gram_diag, to gram_offdiag).
        leading: :class:`LeadingStats`.
        lambda_max_kind: "prediction" or "bound"; lambda_max_bounds: (lo, hi) when "bound", else None.
        rank: the number of non-zero eigenvalues of G (generic): C T, C (T-1) or C (T-2).
        notes: what the numbers mean, in words.

    Example:
        >>> st = predict(Network(2, "linear", 1, 0), width=100, samples=4)
        >>> float(st.gram_diag), float(st.gram_offdiag)   # ((M + 1) * 1 + (M + 1) * 1) / T
        (50.5, 0.5)
    """

    network: Network
    width: Any
    samples: Any
    order: OrderParameters = field(repr=False)
    alpha: Any
    P: Any
    kappa1: Any
    kappa2: Any
    m: Any
    s: Any
    lambda_max: Any
    eta_max: Any
    gram_diag: Any
    gram_offdiag: Any
    layers: tuple
    leading: LeadingStats
    lambda_max_kind: str
    lambda_max_bounds: tuple | None
    rank: Any
    notes: tuple = ()
    dps: int | None = None

    def to_dict(self) -> dict:
        """A JSON-able dict: kappa1, kappa2, alpha, P, m, s, lambda_max, eta_max, gram_*, leading{...}."""
        d = {k: _plain(getattr(self, k)) for k in ("kappa1", "kappa2", "alpha", "P", "m", "s", "lambda_max",
                                                   "eta_max", "gram_diag", "gram_offdiag", "rank")}
        d.update(width=_plain(self.width), samples=_plain(self.samples), network=self.network.describe(),
                 lambda_max_kind=self.lambda_max_kind,
                 lambda_max_bounds=None if self.lambda_max_bounds is None else [_plain(v) for v in self.lambda_max_bounds],
                 layers=[{"layer": l, "gram_diag": _plain(a), "gram_offdiag": _plain(b)} for l, a, b in self.layers],
                 leading=self.leading.to_dict(), notes=list(self.notes))
        return d

    def table(self) -> str:
        rows = [("P (parameters)", self.P, self.leading.P), ("kappa_1", self.kappa1, self.leading.kappa1),
                ("kappa_2", self.kappa2, self.leading.kappa2), ("m", self.m, self.leading.m),
                ("s", self.s, self.leading.s)]
        if self.lambda_max_kind == "bound":
            lo, hi = self.lambda_max_bounds
            rows.append(("lambda_max", f"bound: {_fmt(lo)} .. {_fmt(hi)}", "not predicted"))
            rows.append(("eta_max", f"<= {_fmt(self.eta_max)}", ""))
        else:
            rows.append(("lambda_max", self.lambda_max, self.leading.lambda_max))
            rows.append(("eta_max = 2/lambda_max", self.eta_max, 2 / self.leading.lambda_max
                         if _nonzero(self.leading.lambda_max) else "-"))
        rows += [("gram_diag", self.gram_diag, self.leading.gram_diag),
                 ("gram_offdiag", self.gram_offdiag, self.leading.gram_offdiag)]
        cells = [(k, _cell(a), _cell(b)) for k, a, b in rows]
        w0 = max(len(c[0]) for c in cells)
        w1 = max(len(c[1]) for c in cells + [("", "finite width", "")])
        lines = [f"FisherStats: {self.network.describe()}", f"  width M={self.width}  samples T={self.samples}  "
                 f"alpha={_fmt(self.alpha)}",
                 f"  {'':<{w0}}  {'finite width':>{w1}}  leading order"]
        lines += [f"  {k:<{w0}}  {a:>{w1}}  {b}" for k, a, b in cells]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_latex_(self) -> str:
        items = [(r"\kappa_1", self.kappa1), (r"\kappa_2", self.kappa2), ("P", self.P), ("m", self.m), ("s", self.s)]
        if self.lambda_max_kind == "bound":
            lo, hi = self.lambda_max_bounds
            lam = rf"{_tex(lo)} \le \lambda_{{\max}} \le {_tex(hi)}\ \text{{(bound)}}"
        else:
            lam = rf"\lambda_{{\max}} = {_tex(self.lambda_max)}"
        body = r",\quad ".join(f"{k} = {_tex(v)}" for k, v in items)
        return f"$M={self.width},\\ T={self.samples}:\\quad {body},\\quad {lam}$"


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, sympy.Basic):
        if value.is_number:
            try:
                f = float(value)
                return f if math.isfinite(f) else str(value)
            except TypeError:
                return str(value)
        return str(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else _fmt(value)


def _nonzero(value: Any) -> bool:
    try:
        return float(value) != 0
    except (TypeError, ValueError):
        return True


# -- the statistics from order parameters (any number type) ----------------------------------------------------


def _max(ctx: _Ctx, a: Any, b: Any) -> Any:
    if ctx.mode == "sympy":
        return sympy.Max(a, b, evaluate=False)  # no assumption queries on huge arguments
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(a, b)
    return a if a >= b else b


def _sqrt(ctx: _Ctx, x: Any) -> Any:
    if ctx.mode == "sympy":
        return sympy.sqrt(x, evaluate=False)  # evaluating asks assumptions of a huge expression: slow
    if ctx.mode == "mp":
        return mpmath.sqrt(x)
    return np.sqrt(x)


def _statistics(op: OrderParameters, width: Any, T: Any, C: Any, ctx: _Ctx) -> dict:
    """gram entries, m, s, lambda_max (finite width and leading) from the order parameters."""
    net = op.network
    L = net.depth
    Tn = ctx.num(T)
    Cn = ctx.num(C)
    symbolic_width = isinstance(width, sympy.Basic) and not width.is_number
    Mn = width if symbolic_width else ctx.num(width)
    alpha = _alpha(net, ctx)
    A = _alpha(net, ctx, normaliser=True)
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
            lam = _max(ctx, gd_ + (Tn - 1) * go_, gd_ - go_)
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


def _separation(gd: Any, go: Any, T: Any) -> Any:
    """(outlier - bulk) / bulk of E G per output: T gram_offdiag / (gram_diag - gram_offdiag)."""
    return T * go / (gd - go)


def _lambda_kind(net: Network, kappa2: Any, ctx: _Ctx, gd: Any = None, go: Any = None, width: Any = None,
                 T: Any = None) -> str:
    if net.norm_at(net.depth) is not None:
        return "bound"
    if ctx.mode == "sympy":
        if kappa2.free_symbols:
            return "prediction"  # assumes kappa_2 > 0 (derive() keeps a Max until the sign is known)
        from .derivation import _to_float
        return "prediction" if _to_float(kappa2, "kappa2") > 1e-12 else "bound"
    if not float(kappa2) > 1e-12:
        return "bound"
    if gd is not None and width is not None:
        spread = BULK_SPREAD * math.sqrt(net.outputs * int(T) / float(width))
        if not float(_separation(gd, go, ctx.num(T))) > spread:
            return "bound"
    return "prediction"


# -- public -------------------------------------------------------------------------------------------------------


def predict(net: Network, width: int, samples: int, *, finite_width: Any = None, dps: int | None = None) -> FisherStats:
    """m = C T E G_diag / P, s = C (T G_diag^2 + T(T-1) G_offdiag^2) r / P, lambda_max = top eig of E G.

    Finite-width expectations (exact P, bias terms, exact-in-T normalization rules and chi-square moments)
    with the leading-order values beside them in ``.leading``; see the module docstring for what is and
    is not included, and when lambda_max is only bounded.

    Args:
        net: the network.
        width: base width M (hidden widths alpha_l M).
        samples: batch size T.
        finite_width: None/True (default: finite-width expectations in m, s, lambda_max) or False (the
            leading-order values there too). "rmt" is reserved for the random-matrix bulk edge (issue 9).
        dps: evaluate in mpmath at this precision.

    Returns:
        :class:`FisherStats`.

    Raises:
        InvalidArgument: width or samples invalid, T below what a batch norm needs (full batch norm on the
            output: T >= 6 for a finite E[s]; full batch norm elsewhere: T >= 4; centre-only: T >= 2).

    Example:
        >>> st = predict(Network(3, "relu", 2, 0, outputs=10), width=512, samples=32)
        >>> round(float(st.kappa1), 6), round(float(st.kappa2), 6)
        (1.5, 0.342854)
        >>> st.lambda_max_kind
        'prediction'
        >>> bn = predict(Network(3, "relu", 2, 0, outputs=10, norms=[BatchNorm("last")]), 512, 32)
        >>> bn.lambda_max_kind, float(bn.lambda_max) < float(st.lambda_max) / 5   # no O(M) outlier
        ('bound', True)
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    symbolic_width = isinstance(width, sympy.Basic) and not width.is_number
    if not symbolic_width:
        width = check_int("width", width, minimum=1)
        net.widths(width)  # every alpha_l M must be whole
    if finite_width == "rmt":
        if symbolic_width or dps is not None or net.is_symbolic:
            raise InvalidArgument("finite_width", finite_width, "None, True or False with symbolic or mpmath "
                                  "evaluation", "'rmt' is a numeric, partly measured prediction")
        return _predict_rmt(net, width, samples)
    if finite_width not in (None, True, False):
        raise InvalidArgument("finite_width", finite_width, "None, True, False or 'rmt'")
    T = _check_samples(net, samples, purpose="fisher")
    if T is None:
        raise InvalidArgument("samples", samples, "the batch size T (an integer >= 1)")
    op = order_parameters(net, T, dps=dps, symbolic=True if symbolic_width else None)
    ctx = _Ctx(op.mode, op.dps)
    if ctx.mode == "mp":
        with mpmath.workdps(dps):
            return _assemble(net, op, width, T, ctx, finite_width)
    return _assemble(net, op, width, T, ctx, finite_width)


_NOTE_NO_FLUCTUATIONS = ("finite width: exact P, bias terms and T; O(1/M) fluctuation corrections not included "
                         "(s: excess ~T/M with batch norm on the output)")


def _predict_rmt(net: Network, width: int, samples: int) -> FisherStats:
    """The finite-width form with lambda_max and s from meanfield.finite.rmt (issue 9's random-matrix model).

    Semi-empirical: the random-matrix edge and spike are derived, but the fluctuation coefficients they
    need are measured on sampled reference networks at small widths (see meanfield.finite.rmt); say so.
    """
    from ..finite import rmt

    base = predict(net, width, samples)
    extra = rmt.finite_width_stats(net, int(width), int(samples), base)
    lam = extra["lambda_max"]
    # the mean-field notes on bounds and on missing fluctuations no longer hold for lambda_max and s
    kept = tuple(n for n in base.notes if "bounds only" not in n and n != _NOTE_NO_FLUCTUATIONS)
    notes = (*kept, "finite width: exact P, bias terms and T; lambda_max and s include the O(1/M) fluctuations",
             "finite_width='rmt': lambda_max and s from the random-matrix model of meanfield.finite.rmt; "
             "its fluctuation coefficients are measured on sampled reference networks (semi-empirical)",
             *extra.get("notes", ()))
    return dataclasses.replace(base, lambda_max=lam, s=extra["s"], eta_max=2 / lam, lambda_max_kind="prediction",
                               lambda_max_bounds=None, notes=tuple(notes))


def _assemble(net: Network, op: OrderParameters, width: Any, T: Any, ctx: _Ctx, finite_width: Any) -> FisherStats:
    st = _statistics(op, width, T, net.outputs, ctx)
    leading = LeadingStats(st["kappa1"], st["kappa2"], st["P_lead"], st["m_l"], st["s_l"], st["lam_l"],
                           st["gd_lead"], st["go_lead"])
    use_lead = finite_width is False
    m = st["m_l"] if use_lead else st["m"]
    s = st["s_l"] if use_lead else st["s"]
    lam = st["lam_l"] if use_lead else st["lam"]
    P = st["P"]
    symbolic_width = isinstance(width, sympy.Basic) and not width.is_number
    kind = _lambda_kind(net, st["kappa2"], ctx, st["gd"], st["go"], None if symbolic_width else width, T)
    bounds = None
    notes = []
    if kind == "bound":
        lo = lam
        if st["full_bn_last"] and ctx.mode != "sympy":
            from ..integrals.sphere import expected_max_inverse_chi2
            # per output the non-zero eigenvalues of E-conditional G_kk are (d - o) / sigma_k^2
            gd = st["gd_lead"] if use_lead else st["gd"]
            Tn = ctx.num(T)
            d_minus_o_over_v = gd * (Tn - 3) / (Tn - 2)
            lo = _max(ctx, lo, d_minus_o_over_v * ctx.num(expected_max_inverse_chi2(int(T), int(net.outputs))))
        hi = _sqrt(ctx, P * s)
        bounds = (lo, hi)
        lam = lo
        if net.norm_at(net.depth) is not None:
            notes.append("lambda_max is not predicted with normalization on the output (the top eigenvalue is "
                         "the bulk edge): bounds only; lambda_max holds the lower bound, eta_max = 2/lo")
        elif not float(st["kappa2"]) > 1e-12:
            notes.append("kappa_2 <= 0: no O(M) outlier, the top eigenvalue is the bulk edge: bounds only")
        else:
            notes.append(f"the outlier (kappa_2 > 0) does not clear the bulk's finite-width spread "
                         f"~{BULK_SPREAD:g} sqrt(C T / M) at this width: bounds only")
    if ctx.mode == "sympy":
        eta = 2 / lam
    else:
        eta = 2 / lam
    if not use_lead:
        notes.append(_NOTE_NO_FLUCTUATIONS)
    layers = tuple((l + 1, a, b) for l, (a, b) in enumerate(st["terms"]))
    return FisherStats(net, width, T, op, st["alpha"], P, st["kappa1"], st["kappa2"], m, s, lam, eta, st["gd"],
                       st["go"], layers, leading, kind, bounds, st["rank"], tuple(notes), op.dps)


# -- grids ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridStats:
    """FIM statistics over a grid of sigma_w^2, sigma_b^2 (arrays of one broadcast shape).

    Attributes: sigma_w2, sigma_b2 (the broadcast grids), kappa1, kappa2, m, s, lambda_max, eta_max,
    gram_diag, gram_offdiag (finite width), leading (dict of the leading-order arrays), lambda_max_kind
    (array of "prediction"/"bound").
    """

    network: Network
    width: int
    samples: int
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    kappa1: np.ndarray
    kappa2: np.ndarray
    m: np.ndarray
    s: np.ndarray
    lambda_max: np.ndarray
    eta_max: np.ndarray
    gram_diag: np.ndarray
    gram_offdiag: np.ndarray
    leading: dict
    lambda_max_kind: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.kappa1.shape

    def __str__(self) -> str:
        lines = [f"GridStats: {self.network.describe()}  M={self.width} T={self.samples}  grid {self.shape}"]
        for k in ("kappa1", "kappa2", "m", "s", "lambda_max"):
            a = np.asarray(getattr(self, k))
            lines.append(f"  {k:<11} min {a.min():.6g}  max {a.max():.6g}")
        return "\n".join(lines)


def predict_grid(net: Network, width: int, samples: int, *, sigma_w2: Any = None, sigma_b2: Any = None) -> GridStats:
    """predict() vectorised over arrays of sigma_w^2 and sigma_b^2 (shared by all layers, or per layer).

    The arrays broadcast against each other (pass ``np.meshgrid(...)`` outputs for a 2-D grid); the whole
    grid goes through the same recursion once, as numpy arrays. Where a network parameter is not
    overridden, the network's value is used.

    Example:
        >>> import numpy as np
        >>> sw, sb = np.meshgrid(np.linspace(0.5, 3, 4), np.linspace(0, 0.5, 3))
        >>> g = predict_grid(Network(4, "tanh", 1, 0), 256, 16, sigma_w2=sw, sigma_b2=sb)
        >>> g.kappa1.shape
        (3, 4)
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    width = check_int("width", width, minimum=1)
    net.widths(width)
    T = _check_samples(net, samples, purpose="fisher")
    op = order_parameters(net, T, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    ctx = _Ctx("float")
    st = _statistics(op, width, T, net.outputs, ctx)
    shape = np.broadcast_shapes(*[np.shape(v) for v in (*op.sigma_w2, *op.sigma_b2)])

    def full(x):
        return np.broadcast_to(np.asarray(x, dtype=float), shape).copy()

    k2 = full(st["kappa2"])
    has_norm = net.norm_at(net.depth) is not None
    separated = full(_separation(st["gd"], st["go"], float(T))) > BULK_SPREAD * math.sqrt(net.outputs * T / width)
    kind = np.where((k2 > 1e-12) & separated & (not has_norm), "prediction", "bound")
    lam = full(st["lam"])
    sw_grid = full(op.sigma_w2[0])
    sb_grid = full(op.sigma_b2[0])
    leading = {"kappa1": full(st["kappa1"]), "kappa2": k2, "m": full(st["m_l"]), "s": full(st["s_l"]),
               "lambda_max": full(st["lam_l"])}
    return GridStats(net, width, T, sw_grid, sb_grid, full(st["kappa1"]), k2, full(st["m"]), full(st["s"]), lam,
                     2 / lam, full(st["gd"]), full(st["go"]), leading, kind)
