"""The ``width`` stage of ``meanfield reproduce``: m, s and lambda_max against M at fixed T, for each
activation and normalization placement, sampled means with standard errors beside the finite-width
theory; then theory against samples at the largest width.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .config import Config, placement_label, resolve_placement
from .figures import STAT_LABEL, color_of, log_axes, new_figure, nudge, plot_series, save_figure, style_legend
from .points import STATS, Job, finite_value, point_tasks
from .results import Results, fmt, growth, pm, series_slope
from .stages import ReportSection, Stage, register_stage

__all__ = []


def _width_tasks(config: Config) -> list[Job]:
    return point_tasks("width", config, config.activations, config.placements,
                       [(w, config.samples) for w in config.widths], config.seeds)


def _render_width(config: Config, results: Results, out: Path) -> list[ReportSection]:
    findings = []
    for act in config.activations:
        placements = [resolve_placement(p, config.depth) for p in config.placements]
        fig, axes = new_figure(3)
        for ax, key in zip(axes, STATS):
            for index, placement in enumerate(placements):
                series = results.series("width", act, placement)
                if series:
                    plot_series(ax, series, key, color_of(placement), placement_label(placement, config.depth),
                                nudge(index, len(placements)))
            log_axes(ax, config.widths)
            ax.set_xlabel("width M")
            ax.set_ylabel(STAT_LABEL[key])
            ax.grid(True, which="both", alpha=0.25)
        style_legend(fig, axes, ncol=5)
        fig.suptitle(f"{act}, L={config.depth}, C={config.outputs}, T={config.samples}: FIM statistics against "
                     f"width ({config.seeds} sampled networks per point)", fontsize=9)
        figures = save_figure(fig, out, f"width_{act}")
        findings.append(_width_finding(config, results, act, placements, figures))
    if findings:  # theory against samples at the largest width, after the per-activation sections
        findings.append(_agreement_finding(config, results))
    return findings


def _width_finding(config: Config, results: Results, act: str, placements: list[str],
                   figures: tuple[str, ...]) -> ReportSection:
    T = config.samples
    header = ("| placement | M | λ_max theory | λ_max sampled | × below none | exponent in M | "
              "κ₂ sampled | outlier excess T·κ₂/(κ₁−κ₂) |\n|---|---|---|---|---|---|---|---|")
    lines = [header]
    base = {p.width: p for p in results.series("width", act, "none")}
    facts = {}
    for placement in placements:
        series = results.series("width", act, placement)
        if not series:
            continue
        last = series[-1]
        exponent = series_slope(series)
        ref = base.get(last.width)
        factor = ref.mean("lambda_max") / last.mean("lambda_max") if ref and placement != "none" else math.nan
        k1, k2, k2_sem = last.mean("kappa1"), last.mean("kappa2"), last.sem("kappa2")
        outlier = T * k2 / (k1 - k2) if math.isfinite(k1) and k1 != k2 else math.nan
        facts[placement] = dict(exponent=exponent, factor=factor, k2=k2, k2_sem=k2_sem, outlier=outlier,
                                width=last.width, value=last.mean("lambda_max"))
        lines.append(f"| {placement_label(placement, config.depth)} | {last.width} | "
                     f"{fmt(finite_value(last.theory.get('lambda_max')) or math.nan)}"
                     f"{' (lower bound)' if last.theory.get('lambda_max_kind') == 'bound' else ''} | "
                     f"{pm(last.mean('lambda_max'), last.sem('lambda_max'))} | {fmt(factor, 3)} | "
                     f"{fmt(exponent, 3)} | {pm(k2, k2_sem)} | {fmt(outlier, 3)} |")
    return ReportSection(f"{act}: sharpness against width at fixed T = {T}", _width_reading(config, act, facts),
                         "\n".join(lines), figures)


def _width_reading(config: Config, act: str, facts: dict) -> str:
    if "none" not in facts:
        return "No run without normalization to compare with."
    none = facts["none"]
    T = config.samples
    parts = [f"For {act} without normalization, λ_max {growth(none['exponent'])} at fixed T = {T}, reaching "
             f"{fmt(none['value'])} at M = {none['width']}; its sampled κ₂ = {pm(none['k2'], none['k2_sem'])} "
             f"puts the C = {config.outputs} mean-gradient outliers at {fmt(none['outlier'] + 1, 3)} times the "
             f"bulk scale α(κ₁−κ₂)M/T."]
    removed, kept = [], []
    for placement, f in facts.items():
        if placement == "none":
            continue
        label = placement_label(placement, config.depth)
        # per output, the Gram block is about (alpha M/T)((kappa_1 - kappa_2) I + kappa_2 11^T): any
        # kappa_2 > 0 separates an outlier at 1 + T kappa_2/(kappa_1 - kappa_2) times the bulk. Call it
        # present when the sampled kappa_2 is positive by more than 3 standard errors.
        has_outliers = f["k2"] > 3 * (f["k2_sem"] if math.isfinite(f["k2_sem"]) else 0)
        text = f"{label} ({_times(f['factor'])}, κ₂ = {pm(f['k2'], f['k2_sem'])}"
        text += f", outliers at {fmt(f['outlier'] + 1, 3)}× the bulk)" if has_outliers else ")"
        (kept if has_outliers else removed).append(text)
    if removed:
        parts.append("The outliers are removed (sampled κ₂ not positive) by " + "; ".join(removed) + ".")
    if kept:
        parts.append("They remain (κ₂ > 0 by more than 3 standard errors) with " + "; ".join(kept) + ".")
    exps = {p: f["exponent"] for p, f in facts.items() if p != "none" and math.isfinite(f["exponent"])}
    if exps and all(e > 2 / 3 for e in exps.values()):
        parts.append(f"At fixed T every placement still grows like M (exponents {min(exps.values()):.2f} to "
                     f"{max(exps.values()):.2f}): removing the outliers lowers λ_max by a factor but does not "
                     "bound it while T stays fixed; what happens when T grows with M is the next finding.")
    elif exps:
        parts.append("At fixed T the fitted exponents of λ_max in M are " + ", ".join(
            f"{e:.2f} ({placement_label(p, config.depth)})" for p, e in exps.items()) + ".")
    return " ".join(parts)


def _times(factor: float) -> str:
    """'λ_max 3.6× smaller' / 'λ_max 1.07× larger' for a ratio none / placement."""
    if not math.isfinite(factor):
        return "λ_max not compared"
    if factor >= 1:
        return f"λ_max {fmt(factor, 3)}× smaller"
    return f"λ_max {fmt(1 / factor, 3)}× larger"


def _agreement_finding(config: Config, results: Results) -> ReportSection:
    lines = ["| activation | placement | M | T | statistic | theory | sampled | relative error | in s.e. |",
             "|---|---|---|---|---|---|---|---|---|"]
    errors: dict[str, list] = defaultdict(list)
    bounded: list = []
    for act in config.activations:
        for placement in [resolve_placement(p, config.depth) for p in config.placements]:
            series = results.series("width", act, placement)
            if not series:
                continue
            p = series[-1]
            for key in STATS:
                theory = finite_value(p.theory.get(key))
                mean, sem = p.mean(key), p.sem(key)
                if theory is None or not math.isfinite(mean):
                    continue
                rel = (mean - theory) / theory
                z = (mean - theory) / sem if sem and math.isfinite(sem) else math.nan
                bound = key == "lambda_max" and p.theory.get("lambda_max_kind") == "bound"
                if not bound:
                    errors[key].append((abs(rel), act, placement))
                else:
                    lo, hi = finite_value(p.theory.get("lambda_max_lo")), finite_value(p.theory.get("lambda_max_hi"))
                    inside = lo is not None and hi is not None and lo <= mean <= hi
                    bounded.append((inside, act, placement))
                lines.append(f"| {act} | {placement_label(placement, config.depth)} | {p.width} | {p.samples} | "
                             f"{key}{' (lower bound)' if bound else ''} | {fmt(theory)} | {pm(mean, sem)} | "
                             f"{rel:+.1%} | {fmt(z, 2)} |")
    parts = []
    for key in STATS:
        if errors[key]:
            worst = max(errors[key])
            median = float(np.median([e[0] for e in errors[key]]))
            parts.append(f"{key}: median |relative error| {median:.1%} over {len(errors[key])} networks, largest "
                         f"{worst[0]:.1%} ({worst[1]}, {placement_label(worst[2], config.depth)})")
    reading = ("At the largest width of the width stage, theory (finite-width form) against sampled means: "
               + "; ".join(parts) + ". Rows marked 'lower bound' are cases where the theory only bounds λ_max; "
               "they are not counted above.") if parts else "No points computed."
    if bounded:
        outside = [f"{a}, {placement_label(p, config.depth)}" for ok, a, p in bounded if not ok]
        reading += (f" In {len(bounded) - len(outside)} of {len(bounded)} bounded cases the sampled mean λ_max "
                    "lies within the theory's bounds" + (f"; outside: {'; '.join(outside)}." if outside else "."))
    return ReportSection("Theory against samples", reading, "\n".join(lines))


register_stage(Stage("width", _width_tasks, _render_width))
