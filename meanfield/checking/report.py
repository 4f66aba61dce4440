"""The verdict of verify: per statistic and width, measured against predicted, and how it prints.

:func:`assemble` applies the test each statistic's bias model calls for (:func:`error_test`: the
trend test with its free bias, or, for a statistic whose O(1/M) term the prediction includes, the
common-error test with none) to per-width sampled values against a prediction, combines the p-values
with Holm's correction, and computes per statistic the smallest constant relative error the run could
detect with probability ``DETECTION_POWER`` at the level Holm applied to it
(:func:`minimum_detectable_error`), into a :class:`VerificationReport` (rows :class:`WidthRow`, per
statistic a :class:`StatisticResult`). It
is pure: :func:`meanfield.checking.verification.verify` samples and calls it, and
:meth:`VerificationReport.against` calls it again on the same samples with another prediction.
The report prints as an aligned table, renders in notebooks (HTML, LaTeX) and exports to JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special as _special

from ..errors import InvalidArgument
from ..spec.network import BatchNorm, Network
from .controls import adjust
from .predictions import STATISTICS, bias_models, check_claims, declared_claims, predictor
from .trend import BiasModel, check_alpha, error_test, holm, holm_levels, minimum_detectable_error

__all__ = ["WidthRow", "StatisticResult", "VerificationReport", "assemble", "SKEWNESS_WARNING", "DETECTION_POWER"]

#: The power at which the report states each statistic's minimum detectable error.
DETECTION_POWER = 0.8

_PRETTY = {"m": "m", "s": "s", "lambda_max": "lambda_max", "kappa1": "kappa_1", "kappa2": "kappa_2"}
_LATEX = {"m": "m", "s": "s", "lambda_max": r"\lambda_{\max}", "kappa1": r"\kappa_1", "kappa2": r"\kappa_2"}

#: Per-width sample skewness above which the report warns that its p-values are optimistic. Means
#: of skewed values make the t-statistic skewed: for 1/chi^2_15 values (the output batch norm's
#: scale at T = 16) the t-test at nominal 1% rejects 2.8% of the time with 16 seeds (7% for their
#: squares), measured by simulation (see the project notes).
SKEWNESS_WARNING = 2.0


@dataclass(frozen=True)
class WidthRow:
    """One statistic at one width: measured mean +- sem over the seeds against the prediction."""

    statistic: str
    width: int
    seeds: int
    mean: float
    sem: float
    prediction: float | None
    relative_error: float | None
    relative_sem: float | None
    bounds: tuple[float, float] | None = None
    p_value: float | None = None  # bound checks only: the one-sided p-value at this width

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("statistic", "width", "seeds", "mean", "sem", "prediction",
                                           "relative_error", "relative_sem", "p_value")}
        d["bounds"] = list(self.bounds) if self.bounds is not None else None
        return d


@dataclass(frozen=True)
class StatisticResult:
    """The verdict on one statistic over all widths.

    ``kind`` is ``"value"`` (a predicted value, tested with :func:`error_test` under the bias model
    ``bias``: :data:`NO_BIAS` when the prediction includes the statistic's O(1/M) term), ``"bound"``
    (the prediction only bounds it; the bound is tested) or ``"not predicted"`` (shown, not tested).
    ``adjusted_p`` is Holm-adjusted over the tested statistics; ``passed`` is
    ``adjusted_p > alpha`` (True for statistics not tested). ``level`` is the level Holm held the
    raw p-value to (:func:`holm_levels`), and ``detectable`` the smallest constant relative error the
    run would catch with probability ``DETECTION_POWER`` at that level (:func:`minimum_detectable_error`,
    from the run's standard errors; None for bounds and untested statistics). ``extrapolated`` is the
    error a as M -> infinity of the fit r = a + (free bias terms); with no bias it is the common error
    of :func:`meanfield.checking.trend.common_error_test` (the "M->inf err" column either way).
    """

    statistic: str
    kind: str
    rows: tuple[WidthRow, ...]
    bias: BiasModel | None
    extrapolated: float | None
    extrapolated_se: float | None
    p_value: float | None
    adjusted_p: float | None
    passed: bool
    note: str = ""
    level: float | None = None
    detectable: float | None = None
    control_r2: float | None = None  # variance share the control variates removed (None: not used)

    @property
    def test(self) -> str:
        """What was tested: "common error (no bias)", "trend (bias ...)", "bound" or "not tested"."""
        if self.kind == "bound":
            return "bound"
        if self.kind != "value" or self.bias is None:
            return "not tested"
        return "common error (no bias)" if self.bias.is_none else f"trend (bias {self.bias})"

    @property
    def verdict(self) -> str:
        if self.kind == "not predicted":
            return "not predicted"
        if self.kind == "bound":
            return "bound holds" if self.passed else "BOUND VIOLATED"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "kind": self.kind,
                "bias_model": str(self.bias) if self.bias is not None else None,
                "extrapolated_error": self.extrapolated, "extrapolated_se": self.extrapolated_se,
                "p_value": self.p_value, "adjusted_p": self.adjusted_p, "passed": self.passed,
                "test": self.test, "level": self.level, "detectable_error": self.detectable,
                "detection_power": DETECTION_POWER if self.detectable is not None else None,
                "control_r2": self.control_r2,
                "verdict": self.verdict, "note": self.note, "rows": [r.to_dict() for r in self.rows]}


@dataclass(frozen=True)
class VerificationReport:
    """Prediction versus sampled networks, statistic by statistic and width by width.

    ``passed`` is True only when every tested statistic passes at family-wise false-alarm rate
    ``alpha``. Prints as an aligned table; renders in notebooks (HTML, LaTeX); exports with
    :meth:`to_dict` / :meth:`to_json`.
    """

    network: Network
    samples: int
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    alpha: float
    prediction: str
    results: tuple[StatisticResult, ...]
    notes: tuple[str, ...] = ()
    values: Mapping = field(default=None, repr=False, compare=False, hash=False)  # width -> stat -> per seed
    tests: int | None = None  # distinct tests in Holm's family (statistics that are one test count once)
    # width -> control name -> per-network values (known mean 0); None: control variates not used
    controls: Mapping | None = field(default=None, repr=False, compare=False, hash=False)
    _by_name: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {r.statistic: r for r in self.results})

    @property
    def passed(self) -> bool:
        """True when every tested statistic passes (bounds hold, values agree)."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[str, ...]:
        """Names of the statistics that failed."""
        return tuple(r.statistic for r in self.results if not r.passed)

    @property
    def rows(self) -> tuple[WidthRow, ...]:
        """Every (statistic, width) row, in table order."""
        return tuple(row for r in self.results for row in r.rows)

    def __getitem__(self, statistic: str) -> StatisticResult:
        try:
            return self._by_name[statistic]
        except KeyError:
            raise InvalidArgument("statistic", statistic, "one of " + ", ".join(self._by_name)) from None

    def against(self, prediction: Any, *, alpha: float | None = None,
                bias: Mapping[str, BiasModel | float] | None = None,
                claims: Any = None) -> "VerificationReport":
        """The same sampled networks tested against another prediction (no new sampling).

        ``prediction``, ``bias`` and ``claims`` are as in :func:`verify`; a FisherStats restricts the
        test to its width, which must be one of this report's. ``alpha`` defaults to this report's.

        Example:
            >>> import meanfield as mf
            >>> report = mf.verify(mf.Network(2, "relu", 2, 0), widths=(16, 64), samples=4, seeds=6, processes=1)
            >>> report.against(lambda M, T: {"kappa1": 10.0}).passed
            False
        """
        widths, samples, source, predicted_at = predictor(self.network, prediction, None, self.samples)
        if widths is None:
            widths = self.widths
        elif any(w not in self.widths for w in widths):
            raise InvalidArgument("prediction", source, f"a prediction at the report's widths {self.widths}")
        alpha = self.alpha if alpha is None else check_alpha(alpha)
        claims = check_claims(claims)
        bias_models(self.network, bias, tuple(widths), prediction, claims)  # bad arguments before predicting
        predicted = {w: predicted_at(w, self.samples) for w in widths}
        models = bias_models(self.network, bias, tuple(widths), prediction,
                             declared_claims(predicted) if claims is None else claims)
        controls = None if self.controls is None else {w: self.controls[w] for w in widths}
        return assemble(self.network, self.samples, tuple(widths), self.seeds, alpha, models, source,
                         {w: self.values[w] for w in widths}, predicted, (), controls=controls)

    # -- export -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, verdict, and every statistic with its per-width rows."""
        return {
            "network": self.network.describe(),
            "samples": self.samples,
            "widths": list(self.widths),
            "seeds": list(self.seeds),
            "seed_rule": "network seed = meanfield.checking.verification.network_seed(seed, width)",
            "alpha": self.alpha,
            "tests": self.tests,
            "test": "per statistic: relative error = the finite-width bias the prediction admits (bias_model) "
                    "+ noise; with a bias, F-test of the fit's residual (Johansen/Welch); with none (the "
                    "prediction includes the O(1/M) term), Welch t of the common error over the widths; "
                    "Holm over statistics; detectable_error: the constant relative error caught with "
                    "probability detection_power at the statistic's Holm level",
            "prediction": self.prediction,
            "passed": self.passed,
            "failures": list(self.failures),
            "notes": list(self.notes),
            "statistics": [r.to_dict() for r in self.results],
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON (keyword arguments go to :func:`json.dumps`, default indent 2)."""
        kwargs.setdefault("indent", 2)
        return json.dumps(_jsonable(self.to_dict()), **kwargs)

    # -- display ------------------------------------------------------------------------------------
    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = ["statistic", "M", "N", "measured", "+-sem", "predicted", "rel.err", "+-se",
                "M->inf err", "p (Holm)", f"MDE {100 * DETECTION_POWER:.0f}%", "H0 bias", "verdict"]
        body = []
        for res in self.results:
            for i, row in enumerate(res.rows):
                first = i == 0
                if row.bounds is not None:
                    lo, hi = row.bounds
                    pred = f"[{_g(lo)}, {_g(hi)}]"
                else:
                    pred = _g(row.prediction) if row.prediction is not None else "-"
                body.append([
                    _PRETTY[res.statistic] if first else "", str(row.width), str(row.seeds), _g(row.mean),
                    _g(row.sem, 2), pred,
                    ("inside" if row.bounds is not None and row.relative_error == 0 else _pct(row.relative_error)),
                    _pct(row.relative_sem, signed=False),
                    (_pct(res.extrapolated) + " +- " + _pct(res.extrapolated_se, signed=False)
                     if first and res.extrapolated is not None else ""),
                    (f"{res.adjusted_p:.3g}" if first and res.adjusted_p is not None else ""),
                    (_pct(res.detectable, signed=False) if first and res.detectable is not None else ""),
                    (_bias_cell(res) if first else ""),
                    res.verdict if first else "",
                ])
        return head, body

    def __str__(self) -> str:
        head, body = self._table()
        widths = [max(len(head[c]), *(len(r[c]) for r in body)) for c in range(len(head))]
        left = {0, 11, 12}
        fmt = lambda cells: "  ".join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        verdict = "PASSED" if self.passed else "FAILED (" + ", ".join(_PRETTY[f] for f in self.failures) + ")"
        lines = [f"Verification: {verdict}",
                 f"  network     {self.network.describe()}",
                 f"  prediction  {self.prediction}",
                 f"  sampling    T={self.samples}, {len(self.seeds)} networks per width, widths "
                 f"{', '.join(map(str, self.widths))}",
                 f"  test        false-alarm rate {self.alpha:g} (Holm over {self._family()}); "
                 "H0: rel. error = the finite-width bias the prediction admits (H0 bias) + noise",
                 f"  power       MDE {100 * DETECTION_POWER:.0f}%: the constant relative error caught with "
                 f"probability {DETECTION_POWER:g} at the level Holm applies to the statistic",
                 "", fmt(head), fmt(["-" * w for w in widths])]
        lines += [fmt(r) for r in body]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {_PRETTY[r.statistic]}: {r.note}" for r in self.results if r.note]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<VerificationReport {'passed' if self.passed else 'FAILED'}: {self.network.describe()}, "
                f"T={self.samples}, widths={self.widths}, {len(self.seeds)} seeds>")

    def _repr_html_(self) -> str:
        from html import escape

        head, body = self._table()
        colour = "green" if self.passed else "red"
        out = [f"<p><b style='color:{colour}'>{'PASSED' if self.passed else 'FAILED'}</b> "
               f"{escape(self.network.describe())}; T={self.samples}, {len(self.seeds)} networks per width; "
               f"false-alarm rate {self.alpha:g} (Holm); prediction: {escape(self.prediction)}</p>",
               "<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
        for row in body:
            out.append("<tr>" + "".join(f"<td style='text-align:{'left' if i in (0, 11, 12) else 'right'}'>"
                                         f"{escape(c)}</td>" for i, c in enumerate(row)) + "</tr>")
        out.append("</tbody></table>")
        out += [f"<p>{escape(n)}</p>" for n in self.notes]
        out += [f"<p>{escape(_PRETTY[r.statistic])}: {escape(r.note)}</p>" for r in self.results if r.note]
        return "\n".join(out)

    def _repr_latex_(self) -> str:
        head, body = self._table()
        tex_head = ["", "M", "N", r"\text{measured}", r"\pm", r"\text{predicted}", r"\text{rel. err}", r"\pm",
                    r"M\to\infty", r"p_{\rm Holm}", r"\text{MDE}_{" + f"{100 * DETECTION_POWER:.0f}" + r"\%}",
                    r"\text{H0 bias}", r"\text{verdict}"]
        lines = []
        for res in self.results:
            for i, row in enumerate(body[:len(res.rows)]):
                cells = [(_LATEX[res.statistic] if i == 0 else "")] + [_tex(c) for c in row[1:]]
                lines.append(" & ".join(cells) + r" \\")
            body = body[len(res.rows):]
        status = r"\text{passed}" if self.passed else r"\text{FAILED}"
        return ("$$" + status + r"\quad T=" + str(self.samples) + r",\ N=" + str(len(self.seeds))
                + r",\ \alpha=" + f"{self.alpha:g}" + r"\\ \begin{array}{l" + "r" * 10 + "ll}"
                + " & ".join(tex_head) + r" \\ \hline " + " ".join(lines) + r"\end{array}$$")

    def _tested(self) -> int:
        return sum(r.kind != "not predicted" for r in self.results)

    def _family(self) -> str:
        k = self._tested()
        if self.tests is None or self.tests == k:
            return f"{k} statistics"
        return f"{self.tests} tests of {k} statistics"


def _bias_cell(res: StatisticResult) -> str:
    if res.kind != "value" or res.bias is None:
        return ""
    return "none" if res.bias.is_none else str(res.bias)


def _g(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}%" if signed else f"{100 * value:.2f}%"


def _tex(cell: str) -> str:
    """A table cell in math mode: numbers as they are (1e-05 as 1 \\times 10^{-5}), words in \\text, and
    "a +- b" as a \\pm b with \\pm in math mode (inside \\text it does not compile)."""
    import re

    from ..display import latex_text

    parts = []
    for piece in cell.split("+-"):
        piece = piece.strip()
        number = re.fullmatch(r"([+-]?[0-9.]+)e([+-]?[0-9]+)(%?)", piece)
        if number:
            piece = f"{number.group(1)} \\times 10^{{{int(number.group(2))}}}{number.group(3)}"
        elif any(c.isalpha() for c in piece):
            parts.append(latex_text(piece))
            continue
        parts.append(piece.replace("%", r"\%"))
    return r" \pm ".join(parts)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def assemble(net, samples, widths, seeds, alpha, models, source, measured, predicted, notes, *,
             controls=None) -> VerificationReport:
    """The report from per-width sampled values and predictions: trend test per statistic, Holm over them.

    ``measured`` maps width -> statistic -> per-network values, ``predicted`` width -> statistic ->
    value (as :func:`meanfield.checking.predictions.predictor` gives), ``models`` statistic -> bias
    model; ``source`` names the prediction and ``notes`` are shown under the table. ``controls``
    (width -> control name -> per-network values of known mean 0, aligned with ``measured``) replaces
    each tested value's per-width mean, standard error and degrees of freedom by the control-variate
    ones (:func:`meanfield.checking.controls.adjust`); None uses the plain means. Pure: no sampling.

    Example:
        >>> net = Network(2, "relu", 2, 0)
        >>> measured = {w: {"m": (0.9, 1.0, 1.1)} for w in (64, 256)}
        >>> report = assemble(net, 8, (64, 256), (0, 1, 2), 0.01, bias_models(net, None, (64, 256)), "a guess",
        ...                   measured, {w: {"m": 1.0} for w in (64, 256)}, ())
        >>> report.passed, report["m"].verdict
        (True, 'pass')
    """
    r2s: dict[str, float] = {}
    partial = []  # (name, kind, rows, bias model, test-or-None, raw p or None, note, (errs, ses, counts) or None)
    output = net.norm_at(net.depth)
    if isinstance(output, BatchNorm) and not output.center_only:
        notes = (*notes, "batch norm on the output: each output's Gram block carries 1/sigma_k^2 ~ T/(v chi^2_{T-1}), "
                         "so per-network values are right-skewed and the p-values optimistic (most for depth 1 "
                         "and few outputs, where nothing else averages); use more seeds and larger T")
    if len(widths) == 1:
        notes = (*notes, "a single width: finite-width bias is not separated from error (t-test of r = 0)")
    for name in STATISTICS:
        if not all(name in measured[w] for w in widths):
            continue
        rows = []
        values = [np.asarray(measured[w][name], dtype=float) for w in widths]
        bad = [w for w, v in zip(widths, values) if not np.all(np.isfinite(v))]
        if bad:
            raise InvalidArgument("net", net.describe(), "a network whose sampled statistics are finite",
                                  f"{name} is not finite at width {bad[0]}")
        means = [float(np.mean(v)) for v in values]
        sems = [float(np.std(v, ddof=1) / math.sqrt(len(v))) for v in values]
        counts = [len(v) for v in values]
        shown = counts
        skewed = [(w, g) for w, v in zip(widths, values) if abs(g := _skewness(v)) > SKEWNESS_WARNING]
        if skewed:
            notes = (*notes, f"{_PRETTY[name]}: per-network values are skewed (sample skewness "
                             + ", ".join(f"{g:+.1f} at M={w}" for w, g in skewed)
                             + "): the t approximation overstates significance; use more seeds (and T)")
        has_value = all(name in predicted[w] for w in widths)
        has_bound = name == "lambda_max" and all("lambda_max_bounds" in predicted[w] for w in widths)
        if has_value:
            preds = [float(predicted[w][name]) for w in widths]
            scales, note = _scales(name, preds, [predicted[w] for w in widths], means)
            adjusted = None if controls is None else adjust(widths, values, [controls[w] for w in widths], scales=scales)
            if adjusted is not None:
                # the regression-adjusted means: same expectation, the controls' share of the noise removed;
                # the tests take the residual degrees of freedom as effective counts
                means, sems, counts = list(adjusted.means), list(adjusted.sems), list(adjusted.counts)
                values = list(adjusted.values)
                r2s[name] = adjusted.r2
            errs = [(m - p) / s for m, p, s in zip(means, preds, scales)]
            ses = [max(e / s, 1e-15) for e, s in zip(sems, scales)]
            for w, m, e, p, r, q, n in zip(widths, means, sems, preds, errs, ses, shown):
                rows.append(WidthRow(name, w, n, m, e, p, r, q))
            trend = error_test(widths, errs, ses, counts, models[name])
            per_network = [(v - p) / sc for v, p, sc in zip(values, preds, scales)]
            partial.append((name, "value", rows, models[name], trend, trend.p_value, note,
                            (errs, ses, counts, per_network)))
        elif has_bound:
            ps = []
            for w, m, e, n in zip(widths, means, sems, counts):
                lo, hi = predicted[w]["lambda_max_bounds"]
                se = max(e, 1e-15 * abs(m))
                p_hi = float(_special.stdtr(n - 1, -(m - hi) / se)) if math.isfinite(hi) else 1.0
                p_lo = float(_special.stdtr(n - 1, (m - lo) / se)) if math.isfinite(lo) else 1.0
                p = min(p_hi, p_lo)
                ps.append(p)
                outside = (m - hi) / abs(hi) if m > hi else ((m - lo) / abs(lo) if m < lo and lo else 0.0)
                rows.append(WidthRow(name, w, n, m, e, None, outside, e / abs(m) if m else None, (lo, hi), p))
            raw = min(1.0, len(ps) * min(ps))
            partial.append((name, "bound", rows, None, None, raw,
                            "the theory only bounds lambda_max here: the bound is tested, not a value", None))
        else:
            for w, m, e, n in zip(widths, means, sems, counts):
                rows.append(WidthRow(name, w, n, m, e, None, None, None))
            partial.append((name, "not predicted", rows, None, None, None, "", None))
    tested = [i for i, part in enumerate(partial) if part[5] is not None]
    # statistics whose per-network errors coincide (m and kappa_1 always: both are C T gd / P and
    # T gd / (alpha M) of one network; kappa_2 too under a centre-only output norm) are one test:
    # Holm counts it once, which is exact (one event, not two)
    groups: list[list[int]] = []
    for i in tested:
        for group in groups:
            if _same_test(partial[group[0]], partial[i]):
                group.append(i)
                break
        else:
            groups.append([i])
    group_p = [max(partial[i][5] for i in group) for group in groups]
    adjusted, levels = {}, {}
    if groups:
        for group, adj, level in zip(groups, holm(group_p), holm_levels(group_p, alpha)):
            for i in group:
                adjusted[i], levels[i] = adj, level
    for group in groups:
        if len(group) > 1:
            notes = (*notes, " and ".join(_PRETTY[partial[i][0]] for i in group)
                     + " are one test here (equal per-network relative errors, up to sign): counted once "
                       f"in Holm's correction, over {len(groups)} tests")
    results = []
    for i, (name, kind, rows, model, trend, raw, note, design) in enumerate(partial):
        adj = adjusted.get(i)
        detectable = None
        if design is not None:
            _, ses, counts, _ = design
            detectable = minimum_detectable_error(widths, ses, counts, model, levels[i], DETECTION_POWER)
        results.append(StatisticResult(
            statistic=name, kind=kind, rows=tuple(rows), bias=model,
            extrapolated=trend.extrapolated if trend is not None and len(widths) > 1 else None,
            extrapolated_se=trend.extrapolated_se if trend is not None and len(widths) > 1 else None,
            p_value=raw, adjusted_p=adj, passed=adj is None or adj > alpha, note=note,
            level=levels.get(i), detectable=detectable, control_r2=r2s.get(name) if kind == "value" else None))
    if r2s:
        notes = (*notes, "control variates: means adjusted by regression on known-mean-0 quantities of each network "
                         "(variance removed: " + ", ".join(f"{_PRETTY[k]} {100 * v:.0f}%" for k, v in r2s.items()) + ")")
    return VerificationReport(network=net, samples=samples, widths=tuple(widths), seeds=tuple(seeds), alpha=alpha,
                              prediction=source, results=tuple(results), notes=tuple(notes),
                              values={w: {k: tuple(float(x) for x in v) for k, v in measured[w].items()}
                                      for w in widths}, tests=len(groups),
                              controls=None if controls is None else
                              {w: {k: tuple(float(x) for x in v) for k, v in controls[w].items()} for w in widths})


def _same_test(a: tuple, b: tuple) -> bool:
    """True when two value tests are one: the same bias model and per-network relative errors equal
    (to 1e-9 relative) at every width, or opposite where the model is sign-symmetric (no c >= 0 term)."""
    if a[1] != "value" or b[1] != "value" or a[3] != b[3]:
        return False
    signs = (1.0, -1.0) if not a[3].nonnegative else (1.0,)
    for sign in signs:
        if all(x.shape == y.shape and np.allclose(x, sign * y, rtol=1e-9, atol=1e-12 * float(np.max(np.abs(x), initial=0)))
               for x, y in zip(a[7][3], b[7][3])):
            return True
    return False


def _skewness(v: np.ndarray) -> float:
    """Sample skewness g_1 = m_3 / m_2^(3/2) (0 for constant values)."""
    d = v - v.mean()
    m2 = float(np.mean(d * d))
    return float(np.mean(d**3) / m2**1.5) if m2 > 0 else 0.0


def _scales(name: str, preds: list[float], all_preds: list[dict], means: list[float]) -> tuple[list[float], str]:
    """Relative errors are relative to |prediction|; kappa_2 near 0 is measured in units of kappa_1."""
    scales = [abs(p) for p in preds]
    note = ""
    if name == "kappa2" and all("kappa1" in d for d in all_preds):
        floors = [1e-2 * abs(float(d["kappa1"])) for d in all_preds]
        if any(s < f for s, f in zip(scales, floors)):
            scales = [max(s, f) for s, f in zip(scales, floors)]
            note = "kappa_2 is near 0: its error is relative to max(|kappa_2|, kappa_1/100)"
    if any(s == 0 for s in scales):
        scales = [s if s > 0 else max(abs(m), 1e-300) for s, m in zip(scales, means)]
        note = "the prediction is 0 at some width: the error there is relative to the measured mean"
    return scales, note
