"""The ``digits`` stage of ``meanfield reproduce``: m, s and lambda_max on a real batch (T handwritten digits),
the theory of that batch against sampled networks on the same batch, and the isotropic theory beside it.

The batch is ``meanfield.spec.inputs.digits(T, digits_choice)``: T of scikit-learn's 1797 bundled 8 x 8
digits, every pixel standardised over all images (d = 64 inputs; the recipe is in
:mod:`meanfield.spec.inputs`). For every (activation, placement, width M) three kinds of point are stored:

* ``theory``: ``predict(net, M, inputs=X)``, the mean-field theory of this batch (its T x T input Gram
  qhat^0 = X X^T / d, fan-in d in the first layer);
* ``isotropic``: today's ``predict`` with isotropic inputs matched to the batch on average: input_q1 and
  input_q2 are the means of the diagonal and off-diagonal entries of X X^T / d, and the input width is d
  (alpha_0 = d / M), so the parameter count and the first layer's fan-in are the batch's; what differs is
  only the structure of the batch (its spread of norms and correlations);
* ``sample``: ``sample(net, M, seed=s, inputs=X)``, exact statistics of drawn networks on the same batch
  (seeds 0..digits_seeds-1).

The stage is skipped, with the reason in the report, when scikit-learn (the ``data`` extra) is missing.
It writes ``digits.csv`` (one row per network, width and statistic), ``digits.png``/``.pdf`` and a
section of ``report.md`` whose reading is computed from the numbers.

Example:
    >>> from meanfield.runs.reproduce.config import load_config
    >>> jobs = _digits_tasks(load_config(None, quick=True, digits_widths=(16,), digits_seeds=2,
    ...                                  digits_placements=("none",)))
    >>> [dict(job.labels)["kind"] for job in jobs]
    ['theory', 'isotropic', 'sample', 'sample']
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import math
from pathlib import Path

import numpy as np

from ...sampled.sampling import sample
from ...spec.grammar import network_from_spec
from ...spec.inputs import DATA_EXTRA, DIGITS_PIXELS, digits, has_scikit_learn, input_statistics
from ...theory.fisher import predict
from ..store import meanfield_version
from .config import Config, placement_label, stage_networks
from .figures import STAT_LABEL, color_of, log_axes, nudge, save_figure
from .points import STATS, Job, finite_value, network_key, sample_cost, spec_text
from .report import csv_value
from .results import PointSummary, Results, fmt, growth, pm, series_slope
from .stages import ReportSection, Stage, register_stage

__all__ = ["digits_theory_point", "digits_isotropic_point", "digits_sample_point", "isotropic_network"]


def _stats_row(stats) -> dict:
    """The compared numbers of a prediction (batch or isotropic) as a flat dict, no NaN."""
    row = {key: finite_value(getattr(stats, key, None)) for key in (*STATS, "P", "gram_diag", "gram_offdiag")}
    row["lambda_max_kind"] = str(getattr(stats, "lambda_max_kind", "prediction"))
    bounds = getattr(stats, "lambda_max_bounds", None)
    row["lambda_max_lo"], row["lambda_max_hi"] = ((finite_value(bounds[0]), finite_value(bounds[1])) if bounds
                                                  else (None, None))
    lead = getattr(stats, "leading", None)
    row.update({f"leading_{key}": finite_value(getattr(lead, key, None)) for key in STATS})
    # the batch theory of a full batch norm is a Monte Carlo: keep its standard errors beside the values
    errors = getattr(stats, "standard_errors", None) or {}
    row.update({f"{key}_mc_sem": finite_value(errors.get(key)) for key in STATS if key in errors})
    return row


def digits_theory_point(spec: str, width: int, samples: int, choice: int) -> dict:
    """predict(net, M, inputs=X) on the batch X = digits(T, choice), as a flat dict."""
    X = digits(samples, choice)
    return _stats_row(predict(network_from_spec(spec), width, inputs=X))


def isotropic_network(net, width: int, inputs):
    """``net`` with isotropic inputs matched to the batch: input_q1, input_q2 the means of the diagonal and
    off-diagonal of X X^T / d, and an input width of d (alpha_0 = d / M), so that P and the first layer's
    fan-in are the batch's.

    Example:
        >>> from meanfield.spec.network import Network
        >>> iso = isotropic_network(Network(3, "relu", 2, 0), 32, np.eye(4, 8) * 2)
        >>> iso.widths(32), float(iso.input_q1), float(iso.input_q2)
        ((8, 32, 32, 1), 0.5, 0.0)
    """
    q1, q2 = input_statistics(inputs)
    d = np.shape(inputs)[1]
    return net.with_(alphas=(d / width, *net.alphas[1:]), input_q1=q1, input_q2=q2)


def digits_isotropic_point(spec: str, width: int, samples: int, choice: int) -> dict:
    """predict with isotropic inputs matched to the batch (:func:`isotropic_network`), as a flat dict."""
    X = digits(samples, choice)
    iso = isotropic_network(network_from_spec(spec), width, X)
    row = _stats_row(predict(iso, width, samples))
    row["input_q1"], row["input_q2"] = float(iso.input_q1), float(iso.input_q2)
    return row


def digits_sample_point(spec: str, width: int, samples: int, seed: int, choice: int) -> dict:
    """sample(net, M, seed, inputs=X) on the batch X = digits(T, choice), as a flat dict."""
    result = sample(network_from_spec(spec), width, seed=seed, inputs=digits(samples, choice))
    return {key: finite_value(getattr(result, key, None)) for key in
            ("P", "m", "s", "lambda_max", "gram_diag", "gram_offdiag", "kappa1", "kappa2")}




def _theory_digest() -> str:
    """A digest of the source of the batch theory (the modules that ``predict(..., inputs=X)`` runs): it is new
    and may still change, so a changed theory must not reuse stored predictions (sampled points do not depend
    on it)."""
    try:
        modules = [importlib.import_module(name) for name in ("meanfield.theory.batch", "meanfield.theory.kernels")]
        text = b"".join(Path(module.__file__).read_bytes() for module in modules)
    except (ImportError, OSError, TypeError):  # moved modules or a zipped install: the package version
        text = meanfield_version().encode()
    return hashlib.sha1(text).hexdigest()[:10]


def _digits_tasks(config: Config) -> list[Job]:
    T, choice = config.digits_samples, config.digits_choice
    digest = _theory_digest()
    tasks = []
    for act, resolved, net in stage_networks(config, config.digits_activations, config.digits_placements):
        spec, described = spec_text(net), network_key(net)
        for width in config.digits_widths:
            labels = (("stage", "digits"), ("activation", act), ("placement", resolved), ("width", width),
                      ("samples", T))
            where = f"{described}|M={width}|T={T}|digits={choice}"
            args = (("spec", spec), ("width", width), ("samples", T), ("choice", choice))
            # the batch theory of a batch norm is the costliest prediction (T-dimensional expectations)
            tasks.append(Job(f"digits-theory|{where}|theory={digest}", digits_theory_point, args,
                             labels + (("seed", None), ("kind", "theory")), cost=0.5 if net.norms else 0.05))
            tasks.append(Job(f"digits-isotropic|{where}", digits_isotropic_point, args,
                             labels + (("seed", None), ("kind", "isotropic")), cost=0.05))
            for seed in range(config.digits_seeds):
                tasks.append(Job(f"digits-sample|{where}|seed={seed}", digits_sample_point,
                                 (("spec", spec), ("width", width), ("samples", T), ("seed", seed),
                                  ("choice", choice)),
                                 labels + (("seed", seed), ("kind", "sample")),
                                 cost=sample_cost(net.outputs, width, T, bool(net.norms))))
    return tasks


def _available() -> str | None:
    return None if has_scikit_learn() else f"scikit-learn is not installed; for the digits: {DATA_EXTRA}"


# -- what is compared ----------------------------------------------------------------------------------------------


def _records(config: Config, results: Results) -> list[dict]:
    """One record per (activation, placement, width, statistic): sampled mean and s.e., the batch theory and
    the isotropic theory, their relative errors against the sampled mean."""
    iso_rows = {(r["activation"], r["placement"], r["width"]): r for r in results.rows
                if r.get("stage") == "digits" and r.get("kind") == "isotropic"}
    records = []
    for act, resolved, _ in stage_networks(config, config.digits_activations, config.digits_placements):
        for point in results.series("digits", act, resolved):
            iso = iso_rows.get((act, resolved, point.width), {})
            for key in STATS:
                mean, sem = point.mean(key), point.sem(key)
                batch, isotropic = finite_value(point.theory.get(key)), finite_value(iso.get(key))
                batch_bound = key == "lambda_max" and point.theory.get("lambda_max_kind") == "bound"
                iso_bound = key == "lambda_max" and iso.get("lambda_max_kind") == "bound"
                records.append(dict(
                    activation=act, placement=resolved, width=point.width, samples=point.samples,
                    statistic=key, seeds=len(point.seeds), sampled_mean=mean, sampled_sem=sem,
                    theory_batch=batch, theory_batch_kind="bound" if batch_bound else "prediction",
                    theory_isotropic=isotropic, theory_isotropic_kind="bound" if iso_bound else "prediction",
                    error_batch=_relative(batch, mean), error_isotropic=_relative(isotropic, mean),
                    z_batch=(mean - batch) / sem if batch is not None and sem and math.isfinite(sem) else math.nan,
                    theory_batch_hi=finite_value(point.theory.get("lambda_max_hi")) if batch_bound else None,
                    theory_batch_mc_sem=finite_value(point.theory.get(f"{key}_mc_sem")),
                    exponent=series_slope(results.series("digits", act, resolved), key),
                    input_q1=finite_value(iso.get("input_q1")), input_q2=finite_value(iso.get("input_q2"))))
    return records


def _relative(theory: float | None, sampled: float) -> float:
    """(theory - sampled) / sampled: how far a prediction is from the sampled mean."""
    if theory is None or not math.isfinite(sampled) or sampled == 0:
        return math.nan
    return theory / sampled - 1.0


_COLUMNS = ("activation", "placement", "width", "samples", "seeds", "statistic", "sampled_mean", "sampled_sem",
            "theory_batch", "theory_batch_kind", "theory_batch_hi", "theory_batch_mc_sem", "error_batch", "z_batch",
            "theory_isotropic",
            "theory_isotropic_kind", "error_isotropic", "input_q1", "input_q2")


def _render_digits(config: Config, results: Results, out: Path) -> list[ReportSection]:
    records = _records(config, results)
    if not records:
        return []
    with open(out / "digits.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_COLUMNS)
        for r in records:
            writer.writerow([csv_value(r[c]) for c in _COLUMNS])
    figures = _figure(config, results, out) + ("digits.csv",)
    largest = max(r["width"] for r in records)
    lines = ["| activation | placement | M | statistic | sampled | theory on the batch | error | in s.e. | "
             "isotropic theory | error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["width"] != largest:
            continue
        lines.append(f"| {r['activation']} | {placement_label(r['placement'], config.depth)} | {r['width']} | "
                     f"{r['statistic']} | {pm(r['sampled_mean'], r['sampled_sem'])} | "
                     f"{fmt(r['theory_batch'] if r['theory_batch'] is not None else math.nan)}"
                     f"{' (bound)' if r['theory_batch_kind'] == 'bound' else ''} | {_pct(r['error_batch'])} | "
                     f"{fmt(r['z_batch'], 2)} | "
                     f"{fmt(r['theory_isotropic'] if r['theory_isotropic'] is not None else math.nan)}"
                     f"{' (bound)' if r['theory_isotropic_kind'] == 'bound' else ''} | "
                     f"{_pct(r['error_isotropic'])} |")
    title = f"A real batch: {config.digits_samples} handwritten digits"
    return [ReportSection(title, _reading(config, records), "\n".join(lines), figures)]


def _within(mean: float, sem: float, lo: float, hi: float | None) -> str:
    """Where a sampled mean lies against bounds [lo, hi], in its standard errors when outside."""
    hi = math.inf if hi is None else hi
    bounds = f"bounds [{fmt(lo)}, {fmt(hi)}]"
    if lo <= mean <= hi:
        return f"the sampled mean is inside its {bounds}"
    gap = lo - mean if mean < lo else mean - hi
    where = "below the lower" if mean < lo else "above the upper"
    size = f"{gap / sem:.1f} s.e." if sem and math.isfinite(sem) else fmt(gap)
    return f"the sampled mean is {size} {where} end of its {bounds}"


def _pct(value: float) -> str:
    return f"{value:+.1%}" if math.isfinite(value) else "–"


def _reading(config: Config, records: list[dict]) -> str:
    """How far the isotropic theory is from the networks on the digits, and how close the batch theory is,
    computed from the records (errors of bounds are not counted)."""
    T, d = config.digits_samples, DIGITS_PIXELS
    q1 = next((r["input_q1"] for r in records if r["input_q1"] is not None), None)
    q2 = next((r["input_q2"] for r in records if r["input_q2"] is not None), None)
    parts = [f"On T = {T} handwritten digits (d = {d} standardised pixels, images chosen with seed "
             f"{config.digits_choice}; mean square {fmt(q1 if q1 is not None else math.nan, 3)} and mean "
             f"product {fmt(q2 if q2 is not None else math.nan, 3)} of the entries of X Xᵀ/d), sampled networks are "
             "compared with the theory of this batch (`predict(net, M, inputs=X)`) and with the isotropic "
             "theory of the same mean square and mean product."]
    largest = max(r["width"] for r in records)
    per, bounded = [], []
    for act, placement in dict.fromkeys((r["activation"], r["placement"]) for r in records):
        r = next((r for r in records if (r["activation"], r["placement"], r["width"], r["statistic"])
                  == (act, placement, largest, "lambda_max")), None)
        if r is None or r["theory_isotropic"] is None:
            continue
        label = f"{act}, {placement_label(placement, config.depth)}"
        if r["theory_isotropic_kind"] == "bound":
            text = (f"{label}: λ_max {growth(r['exponent'])} and is {fmt(r['sampled_mean'] / r['theory_isotropic'], 3)}× "
                    f"the isotropic theory's lower bound")
            if r["theory_batch"] is not None and r["theory_batch_kind"] == "bound":
                text += (f", while the batch theory's lower bound is {_pct(r['error_batch'])} from it "
                         f"({_within(r['sampled_mean'], r['sampled_sem'], r['theory_batch'], r['theory_batch_hi'])})")
            bounded.append(text)
            continue
        above = r["sampled_mean"] / r["theory_isotropic"] - 1.0
        text = (f"{label}: λ_max is {abs(above):.0%} {'above' if above >= 0 else 'below'} the isotropic "
                "prediction")
        if r["theory_batch"] is not None and r["theory_batch_kind"] != "bound":
            text += f", the batch theory {_pct(r['error_batch'])} from it"
        per.append(text)
    if per:
        parts.append(f"At M = {largest}: " + "; ".join(per) + ".")
    if bounded:
        parts.append("Where the isotropic theory only bounds λ_max (it finds no O(M) outlier that clears the bulk, "
                     "as for batch norm on the output), on the digits: " + "; ".join(bounded) + ".")
    predicted = [r for r in records if r["statistic"] == "lambda_max" and r["theory_batch_kind"] != "bound"
                 and math.isfinite(r["error_batch"])]
    if predicted:
        below = sum(r["error_batch"] < 0 for r in predicted)
        by_width = "; ".join(f"M = {w}: {float(np.median([r['error_batch'] for r in predicted if r['width'] == w])):+.1%}"
                             for w in sorted({r["width"] for r in predicted}))
        parts.append(f"The batch theory's λ_max (the top eigenvalue of E G) is below the sampled mean in {below} of "
                     f"{len(predicted)} cases, as E λ_max(G) ≥ λ_max(E G) makes it at finite width; median error "
                     f"by width: {by_width}.")
    summary = []
    for key in STATS:
        batch = [abs(r["error_batch"]) for r in records
                 if r["statistic"] == key and r["theory_batch_kind"] != "bound" and math.isfinite(r["error_batch"])]
        iso = [abs(r["error_isotropic"]) for r in records if r["statistic"] == key
               and r["theory_isotropic_kind"] != "bound" and math.isfinite(r["error_isotropic"])]
        if batch and iso:
            summary.append(f"{key}: {float(np.median(batch)):.1%} for the batch theory (largest "
                           f"{max(batch):.1%}) against {float(np.median(iso)):.1%} for the isotropic one "
                           f"(largest {max(iso):.1%})")
        elif iso:
            summary.append(f"{key}: {float(np.median(iso)):.1%} for the isotropic theory (no batch theory)")
    if summary:
        widths = sorted({r["width"] for r in records})
        parts.append(f"Median |relative error| against the sampled means over every network and M = "
                     f"{widths[0]}..{widths[-1]}: " + "; ".join(summary) + ".")
    bounds = sorted({f"{r['activation']}, {placement_label(r['placement'], config.depth)}" for r in records
                     if r["statistic"] == "lambda_max" and "bound" in (r["theory_batch_kind"], r["theory_isotropic_kind"])})
    if bounds:
        parts.append("Where a theory only bounds λ_max (" + "; ".join(bounds) + ") its λ_max is marked "
                     "'(bound)' and not counted.")
    return " ".join(parts)


def _figure(config: Config, results: Results, out: Path) -> tuple[str, ...]:
    """One row of panels (m, s, lambda_max against M) per activation: sampled means with error bars, the batch
    theory (solid) and the isotropic theory (dotted), a colour per placement."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    iso_rows = {(r["activation"], r["placement"], r["width"]): r for r in results.rows
                if r.get("stage") == "digits" and r.get("kind") == "isotropic"}
    networks = stage_networks(config, config.digits_activations, config.digits_placements)
    acts = list(dict.fromkeys(act for act, _, _ in networks))
    fig = Figure(figsize=(4.3 * 3, 3.4 * len(acts) + 0.6), layout="constrained")
    axes = fig.subplots(len(acts), 3, squeeze=False)
    placements = list(dict.fromkeys(p for _, p, _ in networks))
    for row, act in enumerate(acts):
        for ax, key in zip(axes[row], STATS):
            for index, placement in enumerate(placements):
                series = results.series("digits", act, placement)
                if series:
                    _plot(ax, series, key, color_of(placement), nudge(index, len(placements)),
                          [iso_rows.get((act, placement, p.width), {}) for p in series],
                          placement_label(placement, config.depth) if row == 0 else None)
            log_axes(ax, config.digits_widths)
            ax.set_xlabel("width M")
            ax.set_ylabel(STAT_LABEL[key])
            ax.set_title(act, fontsize=8)
            ax.grid(True, which="both", alpha=0.25)
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", marker="o", ls="none", ms=3.5), Line2D([], [], color="grey", ls="-"),
                Line2D([], [], color="grey", ls="--"), Line2D([], [], color="grey", ls=":")]
    labels += ["sampled on the digits ± 1 s.e.", "theory on the batch", "its lower bound (λ_max only bounded)",
               "isotropic theory (matched q1, q2)"]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(placements) + 4, fontsize=7, frameon=False)
    fig.suptitle(f"T = {config.digits_samples} handwritten digits, L={config.depth}, C={config.outputs}: FIM "
                 f"statistics against width ({config.digits_seeds} sampled networks per point)", fontsize=9)
    return save_figure(fig, out, "digits")


def _plot(ax, series: list[PointSummary], key: str, color: str, shift: float, iso: list[dict],
          label: str | None) -> None:
    widths = [p.width for p in series]
    sems = [p.sem(key) for p in series]
    ax.errorbar([w * shift for w in widths], [p.mean(key) for p in series],
                yerr=[s if math.isfinite(s) else 0 for s in sems], fmt="o", ms=3.5, color=color, capsize=2,
                label=label, zorder=3)
    bound = key == "lambda_max" and any(p.theory.get("lambda_max_kind") == "bound" for p in series)
    for values, style in (([finite_value(p.theory.get(key)) for p in series], "--" if bound else "-"),
                          ([finite_value(r.get(key)) for r in iso], ":")):
        if any(v is not None for v in values):
            ax.plot(widths, [np.nan if v is None else v for v in values], style, color=color, lw=1.2)


register_stage(Stage("digits", _digits_tasks, _render_digits, _available))
