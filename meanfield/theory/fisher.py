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
the output, 1/M otherwise). ``finite_width="1/M"`` adds both, derived (:mod:`meanfield.finite.corrections`,
for networks without normalization and with centre-only batch norm on the output;
:mod:`meanfield.finite.normalized` for full batch norm on the output; :mod:`meanfield.finite.layernorm`
for layer norms on any hidden layers, alone or with centre-only batch norm on the output;
:mod:`meanfield.finite.hiddenbn` for batch norm on the last hidden layer, :mod:`meanfield.finite.deepbn`
on any deeper one;
``includes_1_over_M`` names the statistics that carry the correction, and the notes say what is not).

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
import importlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np
import sympy

from ..errors import InvalidArgument, check_int
from ..spec.network import BatchNorm, Network  # noqa: F401 - the doctests' namespace
from .backend import Arithmetic, fmt
from .batch import predict_batch
from .recursions import OrderParameters, check_samples, order_parameters
from .statistics import BULK_SPREAD, gram_statistics, lambda_kind, separation, statistics_latex

__all__ = ["predict", "predict_grid", "FisherStats", "LeadingStats", "GridStats", "register_finite_width",
           "finite_width_choices", "BULK_SPREAD"]


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
        includes_1_over_M: the statistics (names of attributes: "m", "s", "kappa1", ...) that include their
            derived O(1/M) finite-width correction (``finite_width="1/M"``); empty for mean field.

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
    includes_1_over_M: frozenset = frozenset()

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
            rows.append(("lambda_max", f"bound: {fmt(lo)} .. {fmt(hi)}", "not predicted"))
            rows.append(("eta_max", f"<= {fmt(self.eta_max)}", ""))
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
                 f"alpha={fmt(self.alpha)}",
                 f"  {'':<{w0}}  {'finite width':>{w1}}  leading order"]
        lines += [f"  {k:<{w0}}  {a:>{w1}}  {b}" for k, a, b in cells]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_latex_(self) -> str:
        return statistics_latex(self, f"M={self.width},\\ T={self.samples}")


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
    if isinstance(value, mpmath.mpf) and mpmath.isfinite(value) and (
            math.isinf(f) or (f == 0) != (value == 0) or 0 < abs(f) < 2.3e-308):
        # an mpmath result (dps) that float64 cannot hold: its digits, never null or a false 0.0
        return mpmath.nstr(value, 15)
    return f if math.isfinite(f) else None


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else fmt(value)


def _nonzero(value: Any) -> bool:
    try:
        return float(value) != 0
    except (TypeError, ValueError):
        return True


# -- finite-width models beyond the mean-field expectations -------------------------------------------------------

# name -> (model, note). A model is called as model(net, width, samples, base) with base the mean-field
# FisherStats and returns a dict with "lambda_max", "s" and optionally "notes"; the built-in ones are given
# as "module:function" import paths, imported on first use, so that the theory never imports them itself.
_FINITE_WIDTH_MODELS: dict[str, tuple[Any, str]] = {
    "rmt": ("meanfield.finite.model:finite_width_stats",
            "lambda_max and s from the random-matrix model of meanfield.finite.model; its fluctuation coefficients "
            "are derived (no sampled network; the notes list what is still approximate)"),
    "rmt-measured": ("meanfield.finite.model:finite_width_stats_measured",
                     "the random-matrix model with the coefficients it does not derive measured on sampled "
                     "reference networks (semi-empirical)"),
    "1/M": ("meanfield.finite.normalized:finite_width_stats",
            "the derived O(1/M) corrections of the statistics includes_1_over_M names (gram_diag, gram_offdiag, m, "
            "kappa1, kappa2 for every placement of batch norms (full or centre-only) and layer norms, s too except "
            "under a hidden and an output batch norm for T > 64 (one hidden batch norm) or T > 32 (several, or a "
            "layer norm among them); none where a step's quadrature does not apply, e.g. an activation with unknown "
            "kinks on a batch-normalized layer: see the notes); "
            "lambda_max is the mean-field value or bounds"),
}
_BUILT_IN = ("mean-field", "leading")
# the forms predict() took before the named choices: still accepted, with a DeprecationWarning
_DEPRECATED = {None: "mean-field", True: "mean-field", False: "leading"}


def register_finite_width(name: str, model: Callable[..., dict] | str, note: str = "") -> None:
    """Make ``predict(..., finite_width=name)`` use ``model(net, width, samples, base) -> dict``.

    The model receives the mean-field :class:`FisherStats` ``base`` of the same (numeric) network and
    returns a dict with ``lambda_max``, ``s`` and optionally ``notes``; predict keeps base's other values.
    ``model`` may be a "module:function" path, imported on first use. ``note`` says what the model is
    (it is added to the notes of every prediction it makes).

    Raises:
        InvalidArgument: an empty name or one of the built-in choices "mean-field" and "leading".

    Example:
        >>> register_finite_width("doubled", lambda net, M, T, base: dict(lambda_max=2 * base.lambda_max, s=base.s))
        >>> net = Network(2, "relu", 2, 0, outputs=2)
        >>> float(predict(net, 64, 8, finite_width="doubled").lambda_max) == 2 * float(predict(net, 64, 8).lambda_max)
        True
        >>> "doubled" in finite_width_choices()
        True
    """
    if not isinstance(name, str) or not name or name in _BUILT_IN:
        raise InvalidArgument("name", name, "a new name for a finite-width model (not 'mean-field' or 'leading')")
    if not (callable(model) or (isinstance(model, str) and ":" in model)):
        raise InvalidArgument("model", model, "a callable model(net, width, samples, base) or a 'module:function' path")
    _FINITE_WIDTH_MODELS[name] = (model, note)


def finite_width_choices() -> tuple[str, ...]:
    """The values ``predict(..., finite_width=...)`` accepts: "mean-field", "leading" and the registered models.

    Example:
        >>> finite_width_choices()[:3]
        ('mean-field', 'leading', 'rmt')
    """
    return (*_BUILT_IN, *_FINITE_WIDTH_MODELS)


def _finite_width_model(name: str) -> Callable[..., dict]:
    model, note = _FINITE_WIDTH_MODELS[name]
    if isinstance(model, str):
        module, function = model.split(":")
        model = getattr(importlib.import_module(module), function)
        _FINITE_WIDTH_MODELS[name] = (model, note)
    return model


def _finite_width_choice(value: Any) -> str:
    """The named choice for ``finite_width``; the old None/True/False forms with a DeprecationWarning."""
    if isinstance(value, str):
        if value not in _BUILT_IN and value not in _FINITE_WIDTH_MODELS:
            raise InvalidArgument("finite_width", value, "one of " + ", ".join(map(repr, finite_width_choices())))
        return value
    if value is None or isinstance(value, (bool, np.bool_)):
        new = _DEPRECATED[None if value is None else bool(value)]
        warnings.warn(f"predict(finite_width={value!r}) is deprecated: use finite_width={new!r}", DeprecationWarning,
                      stacklevel=3)
        return new
    raise InvalidArgument("finite_width", value, "one of " + ", ".join(map(repr, finite_width_choices())))


# -- public -------------------------------------------------------------------------------------------------------


def predict(net: Network, width: int, samples: int | None = None, *, finite_width: Any = "mean-field",
            dps: int | None = None, inputs: Any = None) -> FisherStats:
    """m = C T E G_diag / P, s = C (T G_diag^2 + T(T-1) G_offdiag^2) r / P, lambda_max = top eig of E G.

    Finite-width expectations (exact P, bias terms, exact-in-T normalization rules and chi-square moments)
    with the leading-order values beside them in ``.leading``; see the module docstring for what is and
    is not included, and when lambda_max is only bounded.

    Args:
        net: the network.
        width: base width M (hidden widths alpha_l M).
        samples: batch size T.
        finite_width: "mean-field" (default: finite-width expectations in m, s, lambda_max), "leading" (the
            leading-order values there too) or "rmt" (lambda_max and s from the random-matrix model of
            :mod:`meanfield.finite.model`, numeric only), "1/M" (gram_diag, gram_offdiag, m, s, kappa1,
            kappa2 with their derived O(1/M) corrections, :mod:`meanfield.finite.corrections` and
            :mod:`meanfield.finite.normalized`, numeric only;
            ``includes_1_over_M`` names them), or a model added by :func:`register_finite_width`.
            None, True (= "mean-field") and False (= "leading") are deprecated.
        dps: evaluate in mpmath at this precision.
        inputs: a batch X (T x d) instead of isotropic inputs: the theory of that batch
            (:func:`meanfield.theory.batch.predict_batch`; samples may then be omitted, and if given must be
            T; finite_width "mean-field" or "leading"; no dps).

    Returns:
        :class:`FisherStats`, or with ``inputs`` a :class:`~meanfield.theory.batch.BatchFisherStats`.

    Raises:
        InvalidArgument: width or samples invalid, T below what a batch norm needs (full batch norm on the
            output: T >= 6 for a finite E[s]; full batch norm elsewhere: T >= 4; centre-only: T >= 2), an
            unknown ``finite_width``.

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
    if inputs is not None:
        if dps is not None:
            raise InvalidArgument("dps", dps, "None with inputs (the batch theory is evaluated in float64)")
        return predict_batch(net, width, inputs, samples=samples, finite_width=_finite_width_choice(finite_width))
    symbolic_width = isinstance(width, sympy.Basic) and not width.is_number
    if not symbolic_width:
        width = check_int("width", width, minimum=1)
        net.widths(width)  # every alpha_l M must be whole
    choice = _finite_width_choice(finite_width)
    if choice not in _BUILT_IN:
        if symbolic_width or dps is not None or net.is_symbolic:
            raise InvalidArgument("finite_width", finite_width, "'mean-field' or 'leading' with symbolic or mpmath "
                                  "evaluation", f"{choice!r} is a numeric, partly measured prediction")
        return _predict_model(net, width, samples, choice)
    T = check_samples(net, samples, purpose="fisher")
    if T is None:
        raise InvalidArgument("samples", samples, "the batch size T (an integer >= 1)")
    op = order_parameters(net, T, dps=dps, symbolic=True if symbolic_width else None)
    ctx = Arithmetic(op.mode, op.dps)
    if ctx.mode == "mp":
        with mpmath.workdps(dps):
            return _assemble(net, op, width, T, ctx, choice)
    return _assemble(net, op, width, T, ctx, choice)


_NOTE_NO_FLUCTUATIONS = ("finite width: exact P, bias terms and T; O(1/M) fluctuation corrections not included "
                         "(s: excess ~T/M with batch norm on the output)")


def _predict_model(net: Network, width: int, samples: int, name: str) -> FisherStats:
    """The finite-width form with the values a registered finite-width model returns (e.g. the random-matrix
    model of meanfield.finite.model for "rmt": its fluctuation coefficients derived, the notes say what is still
    approximate; "rmt-measured" measures some on sampled reference networks). A model's dict gives "s" and optionally
    "lambda_max", "m", "kappa1", "kappa2", "gram_diag", "gram_offdiag", "includes_1_over_M" and "notes";
    without "lambda_max" the mean-field value or bounds stay."""
    model = _finite_width_model(name)
    base = predict(net, width, samples)
    extra = model(net, int(width), int(samples), base)
    changes = {k: extra[k] for k in ("s", "m", "kappa1", "kappa2", "gram_diag", "gram_offdiag") if k in extra}
    included = sorted(extra.get("includes_1_over_M", ()))
    # the mean-field note on missing fluctuations no longer holds for s (nor the bound notes for lambda_max)
    kept = base.notes if "includes_1_over_M" in extra and not included else tuple(
        n for n in base.notes if n != _NOTE_NO_FLUCTUATIONS)
    if "lambda_max" in extra:
        lam = extra["lambda_max"]
        kept = tuple(n for n in kept if "bounds only" not in n)
        changes.update(lambda_max=lam, eta_max=2 / lam, lambda_max_kind="prediction", lambda_max_bounds=None)
        what = "lambda_max and s include the O(1/M) fluctuations"
    elif included:
        what = ", ".join(included) + " include their O(1/M) corrections"
    else:
        what = "no O(1/M) correction for this network (see the notes)"
    note = _FINITE_WIDTH_MODELS[name][1]
    notes = (*kept, f"finite width: exact P, bias terms and T; {what}",
             *((f"finite_width={name!r}: {note}",) if note else ()), *extra.get("notes", ()))
    return dataclasses.replace(base, notes=tuple(notes),
                               includes_1_over_M=frozenset(extra.get("includes_1_over_M", ())), **changes)


def _assemble(net: Network, op: OrderParameters, width: Any, T: Any, ctx: Arithmetic, choice: str) -> FisherStats:
    st = gram_statistics(op, width, T, net.outputs, ctx)
    leading = LeadingStats(st["kappa1"], st["kappa2"], st["P_lead"], st["m_l"], st["s_l"], st["lam_l"],
                           st["gd_lead"], st["go_lead"])
    use_lead = choice == "leading"
    m = st["m_l"] if use_lead else st["m"]
    s = st["s_l"] if use_lead else st["s"]
    lam = st["lam_l"] if use_lead else st["lam"]
    P = st["P"]
    symbolic_width = isinstance(width, sympy.Basic) and not width.is_number
    kind = lambda_kind(net, st["kappa2"], ctx, st["gd"], st["go"], None if symbolic_width else width, T)
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
            lo = ctx.max(lo, d_minus_o_over_v * ctx.num(expected_max_inverse_chi2(int(T), int(net.outputs))))
        hi = ctx.sqrt(P * s)
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
    T = check_samples(net, samples, purpose="fisher")
    op = order_parameters(net, T, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    ctx = Arithmetic("float")
    st = gram_statistics(op, width, T, net.outputs, ctx)
    shape = np.broadcast_shapes(*[np.shape(v) for v in (*op.sigma_w2, *op.sigma_b2)])

    def full(x):
        return np.broadcast_to(np.asarray(x, dtype=float), shape).copy()

    k2 = full(st["kappa2"])
    has_norm = net.norm_at(net.depth) is not None
    separated = full(separation(st["gd"], st["go"], float(T))) > BULK_SPREAD * math.sqrt(net.outputs * T / width)
    kind = np.where((k2 > 1e-12) & separated & (not has_norm), "prediction", "bound")
    lam = full(st["lam"])
    sw_grid = full(op.sigma_w2[0])
    sb_grid = full(op.sigma_b2[0])
    leading = {"kappa1": full(st["kappa1"]), "kappa2": k2, "m": full(st["m_l"]), "s": full(st["s_l"]),
               "lambda_max": full(st["lam_l"])}
    return GridStats(net, width, T, sw_grid, sb_grid, full(st["kappa1"]), k2, full(st["m"]), full(st["s"]), lam,
                     2 / lam, full(st["gd"]), full(st["go"]), leading, kind)
