"""The ``rmt`` stage of ``meanfield reproduce``: lambda_max over a grid of (M, T/M) cells, leading order and
the random-matrix prediction ``predict(..., finite_width="rmt")`` against sampled means, with per-cell
relative errors, a figure per activation (:func:`meanfield.checking.comparison.plot_rmt_comparison`) and
``rmt.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...checking.comparison import plot_rmt_comparison
from ...finite import corrections, fluctuations, fourpoint, freeprob, model, population
from ...integrals import quadrature
from ...errors import InvalidArgument
from ...spec.grammar import network_from_spec
from ...spec.network import BatchNorm
from ...theory.fisher import predict
from ..store import meanfield_version
from .config import Config, placement_label, stage_networks
from .points import Job, finite_value, network_key, sample_cost, sample_task, spec_text
from .report import csv_value
from .results import Results, fmt, pm
from .stages import ReportSection, Stage, register_stage

__all__ = ["rmt_point"]


_RMT_MAX_CT = 2048  # largest C T of a sampled cell: the exact CT x CT Gram and its top eigenvalue stay cheap
_RMT_WITHIN = 0.05  # the goal: within 5% of the sampled mean
_RMT_ROWS = 2  # format of rmt_point's rows: raise it when they change, so that old cached rows are not read


def _rmt_min_samples(net) -> int:
    """Smallest T the random-matrix prediction accepts for ``net``: T >= 4 and what the norms need; with a
    full batch norm on the output T > 5 (the chi-square moments of its scale diverge below)."""
    last = net.norm_at(net.depth)
    full_bn_out = isinstance(last, BatchNorm) and not last.center_only
    return max(4, net.min_samples(), 6 if full_bn_out else 0)


def _rmt_cells(config: Config, net) -> tuple[list[tuple[int, int]], list[str]]:
    """The (M, T) cells of one network, T = round(ratio M), and why any (M, ratio) was left out."""
    cells, skipped = [], []
    least = _rmt_min_samples(net)
    for width in config.rmt_widths:
        for ratio in config.rmt_ratios:
            samples = int(round(ratio * width))
            if samples * net.outputs > _RMT_MAX_CT:
                skipped.append(f"M = {width}, T/M = {ratio:g} (C·T = {samples * net.outputs} > {_RMT_MAX_CT})")
            elif samples < least:
                skipped.append(f"M = {width}, T/M = {ratio:g} (T = {samples} < {least}, "
                               "the fewest this network allows)")
            elif (width, samples) not in cells:
                cells.append((width, samples))
    return sorted(cells), skipped


def _rmt_model_digest() -> str:
    """A digest of the random-matrix model's source (meanfield.finite.freeprob, .fluctuations, .model and what meanfield.finite.fourpoint
    and meanfield.finite.population derive for it): a changed model must not reuse stored predictions (the sampled
    points do not depend on it)."""
    try:
        modules = (freeprob, fluctuations, model, fourpoint, population, corrections, quadrature)
        text = b"".join(Path(module.__file__).read_bytes() for module in modules)
    except OSError:  # e.g. a zipped install: fall back to the package version
        text = meanfield_version().encode()
    return hashlib.sha1(text).hexdigest()[:10]


def _measured_here(net) -> bool:
    """Whether the stage's :func:`rmt_point` measures reference networks for ``net`` (batch norm in a hidden layer:
    the derived model does not cover it)."""
    return any(isinstance(n, BatchNorm) for n in fluctuations.plain_output_twin(net).norms)


def _rmt_theory_cost(net, cells: Sequence[tuple[int, int]], reference_widths: Sequence[int]) -> float:
    """Relative cost of :func:`rmt_point`, in the units of the sampled points. Derived: the population profile
    once per network (about two seconds) and about half a second per cell. Measured (batch norm in a hidden
    layer): the reference draws of ``measure_fluctuations`` (seeds x reference widths x reference ratios, exact
    Grams and their spectra) dominate."""
    if not _measured_here(net):
        return 100.0 + 25.0 * len(cells)  # the units: ~0.02 s (a prediction of ~0.1 s was 5 units)
    C = net.outputs
    seeds = max(6, -(-24 // C))
    cost = 0.0
    for width in (reference_widths[0], reference_widths[-1]):
        for ratio in fluctuations.REFERENCE_RATIOS:
            samples = max(min(int(round(ratio * width)), 1024 // C), 8)
            # the exact Gram, then full eigen-decompositions of its blocks and of the whole centred Gram:
            # about five sampled points' worth (calibrated on measured times: ~6 s per C = 4 network at the
            # reference widths 64, 128, against ~2.8 s for the largest sampled point, M = 256, T = 512)
            cost += seeds * 5.0 * sample_cost(C, width, samples, False)
    return cost + 5.0 * len(cells)  # a prediction per cell: ~0.1 s


def rmt_point(spec: str, cells: tuple, reference_widths: tuple = (64, 128), coefficients: str = "derived") -> dict:
    """Per cell (M, T): leading-order, finite-width mean-field and random-matrix lambda_max and s.

    One call per network. With ``coefficients="derived"`` (the default) the prediction is exactly
    ``predict(net, M, T, finite_width="rmt")``: no network is sampled (the population profile and the small-T
    block top of :mod:`meanfield.finite.model` are cached per network within a process, so the cells after the
    first are cheaper). Where the derivation does not cover the network (batch norm in a hidden layer) that
    network falls back to the measured model, and its cells say so in their notes. With
    ``coefficients="measured"`` the coefficients the derivation does not cover are measured on sampled reference
    networks at ``reference_widths`` (:func:`meanfield.finite.fluctuations.measure_fluctuations`, seconds per
    network): ``model.finite_width_stats(net, M, T, predict(net, M, T), fluctuations=...)``.
    The leading value is what :func:`meanfield.checking.comparison.rmt_records` calls ``lead``: the leading-order
    lambda_max; with batch norm on the output, where leading order only bounds it, the bulk scale
    gram_diag - gram_offdiag (centre only) or the finite-width mean-field value (full batch norm).

    Args:
        spec: the network (:func:`~meanfield.runs.reproduce.points.spec_text`).
        cells: ((M, T), ...).
        reference_widths: the two widths of the measured model's reference draws (``coefficients="measured"``
            or the fallback only).
        coefficients: "derived" or "measured" (:data:`meanfield.finite.model.COEFFICIENTS`).

    Returns:
        dict with ``rmt_cells`` (one dict per cell: width, samples, lead, lead_kind, meanfield, meanfield_kind, rmt,
        s_lead, s_meanfield, s_rmt, notes, error), ``rmt_reference`` (widths, T/M ratios and seeds of the
        reference draws when any were measured, else empty) and ``rmt_method`` ("rmt-derived" or
        "rmt-semi-empirical"). A cell the model cannot predict has rmt None and the reason in ``error``; no NaN is
        returned.

    Example:
        >>> from meanfield import BatchNorm, Network
        >>> net = Network(3, "relu", 2.0, 0.1, outputs=2, norms=[BatchNorm("last", center_only=True)])
        >>> out = rmt_point(spec_text(net), ((16, 8),))
        >>> cell = out["rmt_cells"][0]
        >>> cell["rmt"] > cell["lead"] > 0, out["rmt_method"], out["rmt_reference"]
        (True, 'rmt-derived', {})
    """
    if coefficients not in model.COEFFICIENTS:
        raise InvalidArgument("coefficients", coefficients, "one of " + ", ".join(map(repr, model.COEFFICIENTS)))
    net = network_from_spec(spec)
    reference_widths = tuple(int(w) for w in reference_widths)
    # the derivation covers every network without batch norm in a hidden layer; the rest keep the measured model
    hidden_batch_norm = any(isinstance(n, BatchNorm) for n in fluctuations.plain_output_twin(net).norms)
    measured = None
    if coefficients == "measured" or hidden_batch_norm:
        native = reference_widths == tuple(fluctuations.REFERENCE_WIDTHS)
        measured = (fluctuations.measure_fluctuations(net) if native
                    else fluctuations.measure_fluctuations(net, widths=reference_widths))
    last = net.norm_at(net.depth)
    rows = []
    for width, samples in cells:
        width, samples = int(width), int(samples)
        base = predict(net, width, samples)
        lead, lead_kind = base.leading.lambda_max, "leading lambda_max"
        if isinstance(last, BatchNorm) and last.center_only:
            lead, lead_kind = base.leading.gram_diag - base.leading.gram_offdiag, "leading bulk scale"
        elif isinstance(last, BatchNorm):
            lead, lead_kind = base.lambda_max, "finite-width lambda_max"
        row = dict(width=width, samples=samples, lead=finite_value(lead), lead_kind=lead_kind,
                   meanfield=finite_value(base.lambda_max),
                   meanfield_kind=getattr(base, "lambda_max_kind", "prediction"), s_lead=finite_value(base.leading.s),
                   s_meanfield=finite_value(base.s), rmt=None, s_rmt=None, notes=[], error=None)
        try:
            if measured is None:
                stats = predict(net, width, samples, finite_width="rmt")
                lam, s = stats.lambda_max, stats.s
                notes = [n for n in stats.notes if n not in base.notes]
            else:
                extra = model.finite_width_stats(net, width, samples, base, fluctuations=measured)
                lam, s, notes = extra["lambda_max"], extra["s"], list(extra.get("notes", ()))
                if coefficients == "derived":
                    notes.insert(0, "batch norm in a hidden layer is not derived: measured coefficients used")
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
            # one cell the model cannot handle must not cost the other cells (and the report says so)
            row["error"] = f"{type(err).__name__}: {err}"
        else:
            # keep the cell's own notes (a coefficient floored at 0, ...), not the ones every cell carries
            generic = ("finite_width='rmt'", "fluctuation coefficients measured", "all coefficients derived",
                       "approximate:", "entry variances for s derived")
            row.update(rmt=finite_value(lam), s_rmt=finite_value(s),
                       notes=[str(n) for n in notes if not str(n).startswith(generic)])
        rows.append(row)
    if measured is None:
        return {"rmt_cells": rows, "rmt_method": "rmt-derived", "rmt_reference": {}}
    widths, ratios, seeds = measured.reference
    return {"rmt_cells": rows, "rmt_method": "rmt-semi-empirical",
            "rmt_reference": {"widths": [int(w) for w in widths], "ratios": [float(r) for r in ratios],
                              "seeds": [int(s) for s in seeds]}}




def _rmt_tasks(config: Config) -> list[Job]:
    tasks = []
    digest = _rmt_model_digest()
    reference = tuple(config.rmt_reference_widths)
    for act, resolved, net in stage_networks(config, config.rmt_activations, config.rmt_placements):
        cells, _ = _rmt_cells(config, net)
        if not cells:
            continue
        base = (("stage", "rmt"), ("activation", act), ("placement", resolved))
        # the reference widths matter only where the stage measures (the derived model samples no network)
        where = f"reference={','.join(map(str, reference))}" if _measured_here(net) else "derived"
        tasks.append(Job(
            f"rmt|{network_key(net)}|cells={';'.join(f'{w}x{t}' for w, t in cells)}|"
            f"{where}|model={digest}|rows={_RMT_ROWS}",
            rmt_point, (("spec", spec_text(net)), ("cells", tuple(cells)), ("reference_widths", reference)),
            base + (("width", None), ("samples", None), ("seed", None), ("kind", "rmt")),
            cost=_rmt_theory_cost(net, cells, reference)))
        for width, samples in cells:
            labels = base + (("width", width), ("samples", samples))
            tasks += [sample_task(labels, net, width, samples, seed, resolved != "none")
                      for seed in range(config.rmt_seeds)]
    return tasks


def _rmt_records(config: Config, results: Results) -> tuple[list[dict], dict, list[str]]:
    """The cached rows as :func:`meanfield.checking.comparison.rmt_records` records (plus activation, placement and the
    finite-width mean-field value), the model's reference draws, and cells without an RMT value."""
    theory = {(r["activation"], r["placement"]): r for r in results.rows
              if r.get("stage") == "rmt" and r.get("kind") == "rmt"}
    records, reference, failed = [], {}, []
    for act, resolved, net in stage_networks(config, config.rmt_activations, config.rmt_placements):
        row = theory.get((act, resolved))
        if row is None:
            continue
        reference = row.get("rmt_reference") or reference
        label = f"{act}, {placement_label(resolved, config.depth)}"
        for cell in row["rmt_cells"]:
            M, T = cell["width"], cell["samples"]
            point = results.points.get(("rmt", act, resolved, M, T))
            if point is None or not point.seeds:
                continue
            if cell["rmt"] is None or cell["lead"] is None or cell["meanfield"] is None:
                failed.append(f"{label}, M = {M}, T = {T}: {cell.get('error') or 'a prediction is not finite'}")
                continue
            lam, sem = point.mean("lambda_max"), point.sem("lambda_max")
            records.append(dict(
                network=net.describe(), label=label, activation=act, placement=resolved, width=M, samples=T,
                seeds=len(point.seeds), lead=cell["lead"], lead_kind=cell["lead_kind"],
                meanfield=cell["meanfield"],
                meanfield_kind=cell["meanfield_kind"], rmt=cell["rmt"], sampled=lam, sem=sem,
                s_lead=cell["s_lead"], s_meanfield=cell["s_meanfield"], s_rmt=cell["s_rmt"],
                s_sampled=point.mean("s"), s_sem=point.sem("s"),
                err_lead=cell["lead"] / lam - 1.0, err_meanfield=cell["meanfield"] / lam - 1.0,
                err_rmt=cell["rmt"] / lam - 1.0, s_err_lead=cell["s_lead"] / point.mean("s") - 1.0,
                s_err_rmt=cell["s_rmt"] / point.mean("s") - 1.0 if cell["s_rmt"] is not None else math.nan,
                notes="; ".join(cell.get("notes") or ())))
    return records, reference, failed


def _render_rmt(config: Config, results: Results, out: Path) -> list[ReportSection]:
    records, reference, failed = _rmt_records(config, results)
    if not records:
        return []
    figures: list[str] = []
    # one figure per activation (a panel per network), through the model module's own plot, once per format
    for act in dict.fromkeys(r["activation"] for r in records):
        mine = [r for r in records if r["activation"] == act]
        for ext in ("png", "pdf"):
            plot_rmt_comparison(mine, out / f"rmt_{act}.{ext}")
            figures.append(f"rmt_{act}.{ext}")
    columns = ("activation", "placement", "network", "width", "samples", "seeds", "sampled", "sem", "lead",
               "lead_kind", "meanfield", "meanfield_kind", "rmt", "err_lead", "err_meanfield", "err_rmt",
               "s_sampled", "s_sem", "s_lead", "s_meanfield", "s_rmt", "s_err_lead", "s_err_rmt", "notes")
    with open(out / "rmt.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in records:
            writer.writerow([csv_value(r[c]) for c in columns])
    figures.append("rmt.csv")
    lines = ["| network | M | T | T/M | λ_max sampled | leading | error | finite-width mean field | error | RMT | "
             "error | within 5%: leading / mean field / RMT |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        marks = " / ".join("yes" if abs(r[k]) <= _RMT_WITHIN else "no"
                           for k in ("err_lead", "err_meanfield", "err_rmt"))
        lines.append(f"| {r['label']} | {r['width']} | {r['samples']} | {r['samples'] / r['width']:.4g} | "
                     f"{pm(r['sampled'], r['sem'])} | {fmt(r['lead'])} | {r['err_lead']:+.1%} | "
                     f"{fmt(r['meanfield'])}{' (bound)' if r['meanfield_kind'] == 'bound' else ''} | "
                     f"{r['err_meanfield']:+.1%} | {fmt(r['rmt'])} | {r['err_rmt']:+.1%} | {marks} |")
    return [ReportSection("Beyond leading order: λ_max from the random-matrix model",
                          _rmt_reading(config, records, reference, failed), "\n".join(lines), tuple(figures))]


def _rmt_reading(config: Config, records: list[dict], reference: dict, failed: list[str]) -> str:
    """Counts within 5%, median |error| and the worst cell per method, computed from the records."""
    n = len(records)
    methods = (("leading order", "err_lead"), ("finite-width mean field", "err_meanfield"),
               ("the random-matrix model", "err_rmt"))
    ref_widths = reference.get("widths", list(config.rmt_reference_widths))
    ref_seeds = reference.get("seeds", [])
    parts = ["The random-matrix prediction (`predict(..., finite_width=\"rmt\")`) samples no network: the "
             "free-probability edge, BBP outlier and chi-square factor, the O(1/M) mean entries "
             "(`meanfield.finite.corrections`), the bulk's second moment, spike and diagonal part, the outlier "
             "variances and the entry variances that set s (`meanfield.finite.fourpoint`, `fourpoint_layernorm`), the "
             "population profile (`meanfield.finite.deterministic`) and the coupling of several outputs are derived, "
             "and no number depends on a seed. Still approximate (named in every result's notes): the population "
             "profile is its limiting law's quantiles with a Tracy-Widom top, the small-T block top corrects the "
             "edge for the per-sample norms to second order, and below a layer norm the population's shape is that "
             "of the plain network with the same mean-field kernels."]
    if ref_seeds:
        sampled = range(config.rmt_seeds)
        disjoint = not set(ref_seeds) & set(sampled)
        parts.append(f"Networks with batch norm in a hidden layer (not derived) use the measured model: coefficients "
                     f"measured on sampled networks at reference widths {' and '.join(map(str, ref_widths))} (seeds "
                     f"{min(ref_seeds)}–{max(ref_seeds)}, and {fluctuations.MEAN_SEED}–"
                     f"{fluctuations.MEAN_SEED + fluctuations.MEAN_DRAWS - 1} for the mean entries, "
                     + ("disjoint from" if disjoint else "OVERLAPPING") + f" the seeds 0–{config.rmt_seeds - 1} "
                     "sampled here) and extrapolated as c + c′/M.")
    counts = []
    for name, key in methods:
        errors = [abs(r[key]) for r in records]
        within = sum(e <= _RMT_WITHIN for e in errors)
        counts.append(f"{name} {within} of {n} (median |error| {float(np.median(errors)):.1%})")
    parts.append(f"Against the sampled mean λ_max over {n} cells, within 5%: " + "; ".join(counts) + ".")
    kinds = {"leading bulk scale": "the leading-order bulk scale gram_diag − gram_offdiag",
             "finite-width lambda_max": "the finite-width mean-field λ_max"}
    other: dict[str, list] = defaultdict(list)
    for r in records:
        if r["lead_kind"] != "leading lambda_max" and r["label"] not in other[r["lead_kind"]]:
            other[r["lead_kind"]].append(r["label"])
    if other:
        parts.append("With batch norm on the output leading order only bounds λ_max, so the 'leading' column "
                     "holds what `meanfield.checking.comparison.rmt_records` compares: " + "; ".join(
                         f"{kinds.get(kind, kind)} for {' and '.join(labels)}" for kind, labels in other.items()) + ".")
    for name, key in (methods[0], methods[2]):
        worst = max(records, key=lambda r: abs(r[key]))
        parts.append(f"Worst cell for {name}: {worst['label']} at M = {worst['width']}, T = {worst['samples']} "
                     f"({worst[key]:+.1%}; sampled {pm(worst['sampled'], worst['sem'])}, predicted "
                     f"{fmt(worst['lead' if key == 'err_lead' else 'rmt'])}).")
    noisy = sum(r["sem"] > _RMT_WITHIN / 2 * r["sampled"] for r in records if math.isfinite(r["sem"]))
    if noisy:
        parts.append(f"In {noisy} of {n} cells the standard error of the sampled mean alone exceeds 2.5%, so 5% "
                     "is not resolved there.")
    widths = sorted({r["width"] for r in records})
    if len(widths) > 1:
        per = []
        for width in widths:
            errors = [r["err_rmt"] for r in records if r["width"] == width]
            per.append(f"M = {width}: {sum(abs(e) <= _RMT_WITHIN for e in errors)} of {len(errors)} within 5%, "
                       f"median error {float(np.median(errors)):+.1%}")
        parts.append("The random-matrix model by width: " + "; ".join(per) + ".")
    s_rmt = [abs(r["s_err_rmt"]) for r in records if math.isfinite(r["s_err_rmt"])]
    if s_rmt:
        parts.append(f"For s, the median |error| is {float(np.median([abs(r['s_err_lead']) for r in records])):.1%} "
                     f"at leading order and {float(np.median(s_rmt)):.1%} for the random-matrix model.")
    below = sorted({r["width"] for r in records if r["width"] < min(ref_widths)}) if ref_seeds else []
    if below:
        parts.append(f"At M = {', '.join(map(str, below))} (below the reference widths) the coefficients are "
                     "extrapolated, not interpolated.")
    flagged = sum(1 for r in records if r["notes"])
    if flagged:
        first = next(r for r in records if r["notes"])
        parts.append(f"In {flagged} of {n} cells the model adds a note of its own, e.g. at {first['label']}, "
                     f"M = {first['width']}, T = {first['samples']}: “{first['notes'].split('; ')[0]}” (all notes "
                     "are in `rmt.csv`).")
    skipped = [s for _, _, net in stage_networks(config, config.rmt_activations, config.rmt_placements) for s in _rmt_cells(config, net)[1]]
    if skipped:
        parts.append("Not computed: " + "; ".join(dict.fromkeys(skipped)) + ".")
    if failed:
        parts.append("No random-matrix value: " + "; ".join(failed) + ".")
    return " ".join(parts)


register_stage(Stage("rmt", _rmt_tasks, _render_rmt))
