"""The ``ratio`` stage of ``meanfield reproduce``: lambda_max against M at fixed M/T (T grows with M): bounded
with batch norm in the last layer, growing like M without normalization.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import Config, placement_label, resolve_placement
from .figures import color_of, log_axes, new_figure, nudge, plot_series, save_figure, style_legend
from .points import Job, finite_value, point_tasks
from .results import Results, fmt, growth, pm, series_slope
from .stages import ReportSection, Stage, register_stage

__all__ = []


def _ratio_tasks(config: Config) -> list[Job]:
    return point_tasks("ratio", config, config.ratio_activations, config.ratio_placements,
                       [(w, w // config.width_per_sample) for w in config.ratio_widths], config.ratio_seeds)


def _render_ratio(config: Config, results: Results, out: Path) -> list[ReportSection]:
    acts = list(config.ratio_activations)
    fig, axes = new_figure(len(acts))
    placements = [resolve_placement(p, config.depth) for p in config.ratio_placements]
    facts: dict[str, dict] = {}
    lines = ["| activation | placement | M | T | λ_max theory | λ_max sampled | exponent in M | "
             "growth over the range |", "|---|---|---|---|---|---|---|---|"]
    for ax, act in zip(axes, acts):
        for index, placement in enumerate(placements):
            series = results.series("ratio", act, placement)
            if not series:
                continue
            plot_series(ax, series, "lambda_max", color_of(placement),
                        placement_label(placement, config.depth) if ax is axes[0] else None,
                        nudge(index, len(placements)))
            means = [p.mean("lambda_max") for p in series]
            exponent = series_slope(series)
            growth = means[-1] / means[0] if means[0] else math.nan
            facts[(act, placement)] = dict(exponent=exponent, growth=growth, first=series[0], last=series[-1])
            for p in series:
                lines.append(f"| {act} | {placement_label(placement, config.depth)} | {p.width} | {p.samples} | "
                             f"{fmt(finite_value(p.theory.get('lambda_max')) or math.nan)}"
                             f"{' (lower bound)' if p.theory.get('lambda_max_kind') == 'bound' else ''} | "
                             f"{pm(p.mean('lambda_max'), p.sem('lambda_max'))} | {fmt(exponent, 3)} | "
                             f"{fmt(growth, 3)} |")
        widths = np.array(sorted({w for w in config.ratio_widths}), dtype=float)
        none = results.series("ratio", act, "none")
        if none:
            ref = none[0].mean("lambda_max") / none[0].width
            ax.plot(widths, ref * widths, ":", color="grey", lw=1, label="∝ M" if ax is axes[0] else None)
        log_axes(ax, config.ratio_widths)
        ax.set_xlabel(f"width M (batch T = M/{config.width_per_sample})")
        ax.set_ylabel("λ_max (largest eigenvalue)")
        ax.set_title(f"{act}, L={config.depth}, C={config.outputs}, fixed M/T = {config.width_per_sample}", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
    style_legend(fig, axes, ncol=4)
    figures = save_figure(fig, out, "ratio")
    return [ReportSection(f"Sharpness when the batch grows with the width (M/T = {config.width_per_sample})",
                          _ratio_reading(config, facts), "\n".join(lines), figures)]


def _ratio_reading(config: Config, facts: dict) -> str:
    parts = []
    for act in config.ratio_activations:
        rows = {p: f for (a, p), f in facts.items() if a == act}
        if not rows:
            continue
        sentences = []
        for placement, f in rows.items():
            first, last = f["first"], f["last"]
            sentences.append(f"{placement_label(placement, config.depth)}: λ_max {growth(f['exponent'])}, from "
                             f"{fmt(first.mean('lambda_max'))} at (M, T) = ({first.width}, {first.samples}) to "
                             f"{fmt(last.mean('lambda_max'))} at ({last.width}, {last.samples}), "
                             f"a factor {fmt(f['growth'], 3)} over a {last.width // first.width}× range of M")
        bounded = [placement_label(p, config.depth) for p, f in rows.items() if f["exponent"] < 1 / 3]
        growing = [placement_label(p, config.depth) for p, f in rows.items() if f["exponent"] > 2 / 3]
        text = f"With {act} and T = M/{config.width_per_sample}: " + "; ".join(sentences) + "."
        if bounded and growing:
            text += (f" So with T growing in proportion to M, {' and '.join(bounded)} "
                     f"{'keeps' if len(bounded) == 1 else 'keep'} λ_max bounded while {' and '.join(growing)} "
                     f"still {'grows' if len(growing) == 1 else 'grow'} like M: the sharpness is removed under "
                     "the condition that M/T stays bounded.")
        elif bounded:
            text += f" λ_max stays bounded for {', '.join(bounded)}."
        parts.append(text)
    return " ".join(parts) if parts else "No points computed."


register_stage(Stage("ratio", _ratio_tasks, _render_ratio))
