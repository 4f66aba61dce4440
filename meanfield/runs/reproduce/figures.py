"""Plotting helpers shared by the stages of ``meanfield reproduce``: headless figures (no pyplot), log-log
axes with plain tick labels, a series of sampled means beside the theory, one legend, PNG and PDF.

Example:
    >>> color_of("batch:last"), color_of("layer:2")
    ('#d62728', '#1f77b4')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .points import finite_value
from .results import PointSummary

__all__ = ["color_of", "save_figure", "new_figure", "log_axes", "STAT_LABEL", "plot_series", "style_legend", "nudge"]


_COLORS = {"none": "#1f2937", "batch:last": "#d62728", "batch-center:last": "#ff7f0e",
           "batch": "#2ca02c", "layer": "#1f77b4", "batch-center": "#9467bd"}


def color_of(placement: str) -> str:
    """The colour of a placement (by its kind when the placement itself has none)."""
    return _COLORS.get(placement) or _COLORS.get(placement.partition(":")[0], "#8c564b")


def save_figure(fig, out: Path, stem: str) -> tuple[str, ...]:
    """Write ``stem``.png and ``stem``.pdf into ``out``; their names."""
    names = []
    for ext in ("png", "pdf"):
        path = out / f"{stem}.{ext}"
        # fixed metadata keeps reruns byte-stable where the backend allows it
        fig.savefig(path, dpi=130, bbox_inches="tight",
                    metadata={"Software": None} if ext == "png" else {"Creator": None, "Producer": None,
                                                                      "CreationDate": None})
        names.append(path.name)
    return tuple(names)


def new_figure(ncols: int, width: float = 4.3, height: float = 3.6):
    """A figure (no pyplot) with one row of ``ncols`` axes; (figure, axes)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, works headless

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def log_axes(ax, widths: Sequence[int]) -> None:
    """Log-log axes with plain-number tick labels: x ticks at the widths, y at 1-2-5 steps.

    Plain labels (no mathtext) also keep rendering fast: mathtext tick labels dominated the time.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(widths))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


STAT_LABEL = {"m": "m (mean eigenvalue)", "s": "s (mean squared eigenvalue)",
              "lambda_max": "λ_max (largest eigenvalue)"}


def plot_series(ax, series: list[PointSummary], key: str, color: str, label: str | None,
                shift: float = 1.0) -> None:
    """Sampled means with one-s.e. bars (markers, nudged by ``shift`` so placements do not overlap),
    the finite-width theory (solid; where the theory only bounds lambda_max, its lower bound dashed and
    the bounds as a band)."""
    widths = [p.width for p in series]
    means = [p.mean(key) for p in series]
    sems = [p.sem(key) for p in series]
    ax.errorbar([w * shift for w in widths], means, yerr=[0 if not math.isfinite(s) else s for s in sems],
                fmt="o", ms=3.5, color=color, capsize=2, label=label, zorder=3)
    theory = [finite_value(p.theory.get(key)) for p in series]
    if any(v is not None for v in theory):
        bound = key == "lambda_max" and any(p.theory.get("lambda_max_kind") == "bound" for p in series)
        ax.plot(widths, [np.nan if v is None else v for v in theory], "--" if bound else "-", color=color, lw=1.2)
        if bound:
            lo = [finite_value(p.theory.get("lambda_max_lo")) for p in series]
            hi = [finite_value(p.theory.get("lambda_max_hi")) for p in series]
            if all(v is not None for v in lo + hi):
                ax.fill_between(widths, lo, hi, color=color, alpha=0.08, lw=0)


def style_legend(fig, axes, ncol: int) -> None:
    """One legend for the figure: a marker per placement, and what markers, lines and bands mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", marker="o", ls="none", ms=3.5),
                Line2D([], [], color="grey", ls="-"), Line2D([], [], color="grey", ls="--"),
                Patch(color="grey", alpha=0.15)]
    labels += ["sampled mean ± 1 s.e.", "theory (finite width)", "theory lower bound (λ_max only bounded)",
               "theory bounds on λ_max"]
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=7, frameon=False)


def nudge(index: int, count: int) -> float:
    """Factor that shifts the markers of placement ``index`` of ``count`` sideways (2% apart, centred)."""
    return 1.0 + 0.02 * (index - (count - 1) / 2)
