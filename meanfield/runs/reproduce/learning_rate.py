"""The ``learning_rate`` stage of ``meanfield reproduce``: loss after N gradient steps over (M, eta) with the
predicted boundary eta = 2/lambda_max(M) (:func:`meanfield.checking.learning_rate_grid.learning_rate_grid`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...checking.learning_rate_grid import LearningRateGrid, learning_rate_grid, plot_learning_rate_grid
from ...spec.grammar import network_from_spec
from ...theory.learning_rate import max_learning_rate
from .config import Config, network_for, placement_label, resolve_placement
from .figures import save_figure
from .points import Job, finite_value, network_key, spec_text
from .results import Results, fmt
from .stages import ReportSection, Stage, register_stage

__all__ = ["lr_point"]


def lr_point(spec: str, label: str, width: int, samples: int, etas: tuple, steps: int, seed: int) -> dict:
    """One (network, width, seed) column of the learning-rate grid: losses at every eta of ``etas``."""
    grid = learning_rate_grid({label: network_from_spec(spec)}, widths=(width,), etas=etas, samples=samples,
                              steps=steps, seeds=(seed,))
    bounds = grid.eta_bounds[0, 0] if grid.eta_bounds is not None else (math.nan, math.nan)
    return {"eta": [float(e) for e in grid.etas],
            "initial_loss": [finite_value(v) for v in grid.initial_loss[0, 0, :, 0]],
            # None = diverged (the grid stores inf, which JSON cannot hold)
            "final_loss": [finite_value(v) for v in grid.final_loss[0, 0, :, 0]],
            "peak_loss": [finite_value(v) for v in grid.peak_loss[0, 0, :, 0]],
            "lambda_sampled": finite_value(grid.lambda_sampled[0, 0, 0]),
            "eta_predicted": finite_value(grid.eta_predicted[0, 0]),
            "eta_leading": finite_value(grid.eta_leading[0, 0]),
            "predicted_kind": grid.predicted_kind[0][0] if grid.predicted_kind else "prediction",
            "eta_bound_lo": finite_value(bounds[0]), "eta_bound_hi": finite_value(bounds[1])}


def _lr_etas(config: Config) -> tuple[float, ...]:
    """One absolute step grid for every network and width: from a quarter of the smallest predicted
    eta_max to ``lr_eta_span`` times the largest, log-spaced (rounded to 6 digits for stable keys)."""
    predicted = [max_learning_rate(network_for(config, config.lr_activation, placement), width,
                                   config.lr_samples).eta_max
                 for placement in config.lr_placements for width in config.lr_widths]
    lo, hi = min(predicted) / 4, max(predicted) * config.lr_eta_span
    return tuple(float(f"{e:.6g}") for e in np.geomspace(lo, hi, config.lr_etas))


def _lr_tasks(config: Config) -> list[Job]:
    etas = _lr_etas(config)
    tasks = []
    for placement in config.lr_placements:
        net = network_for(config, config.lr_activation, placement)
        spec = spec_text(net)
        resolved = resolve_placement(placement, config.depth)
        for width in config.lr_widths:
            for seed in range(config.lr_seeds):
                tasks.append(Job(
                    f"lr|{network_key(net)}|M={width}|T={config.lr_samples}|steps={config.lr_steps}|"
                    f"etas={','.join(map(repr, etas))}|seed={seed}",
                    lr_point,
                    (("spec", spec), ("label", placement_label(resolved, config.depth)), ("width", width),
                     ("samples", config.lr_samples), ("etas", etas), ("steps", config.lr_steps), ("seed", seed)),
                    (("stage", "learning_rate"), ("activation", config.lr_activation), ("placement", resolved),
                     ("width", width), ("samples", config.lr_samples), ("seed", seed), ("kind", "training")),
                    cost=width * width * config.lr_samples * config.lr_steps * len(etas) * 6e-9))
    return tasks


def _lr_grid(config: Config, results: Results):
    """Rebuild the training helper's LearningRateGrid from the stored columns (None if incomplete)."""
    rows = {(r["placement"], r["width"], r["seed"]): r for r in results.rows
            if r.get("stage") == "learning_rate" and r.get("kind") == "training"}
    placements = [resolve_placement(p, config.depth) for p in config.lr_placements]
    widths, seeds = tuple(config.lr_widths), tuple(range(config.lr_seeds))
    if any((p, w, s) not in rows for p in placements for w in widths for s in seeds):
        return None
    etas = tuple(rows[(placements[0], widths[0], 0)]["eta"])
    shape = (len(placements), len(widths), len(etas), len(seeds))
    arrays = {k: np.empty(shape) for k in ("initial_loss", "final_loss", "peak_loss")}
    lam = np.empty((len(placements), len(widths), len(seeds)))
    pred, lead, bounds = np.empty(shape[:2]), np.empty(shape[:2]), np.empty(shape[:2] + (2,))
    kinds = []
    for i, p in enumerate(placements):
        kinds.append([])
        for j, w in enumerate(widths):
            for k, s in enumerate(seeds):
                r = rows[(p, w, s)]
                for key, array in arrays.items():
                    array[i, j, :, k] = [math.inf if v is None else v for v in r[key]]
                lam[i, j, k] = r["lambda_sampled"]
            r = rows[(p, w, 0)]
            pred[i, j], lead[i, j] = r["eta_predicted"], r["eta_leading"]
            bounds[i, j] = [r["eta_bound_lo"] if r["eta_bound_lo"] is not None else math.inf,
                            r["eta_bound_hi"] if r["eta_bound_hi"] is not None else math.inf]
            kinds[-1].append(r["predicted_kind"])
    return LearningRateGrid(
        labels=tuple(placement_label(p, config.depth) for p in placements),
        networks=tuple(network_for(config, config.lr_activation, p) for p in placements),
        widths=widths, etas=etas, seeds=seeds, samples=config.lr_samples, steps=config.lr_steps,
        setup="random_targets", initial_loss=arrays["initial_loss"], final_loss=arrays["final_loss"],
        peak_loss=arrays["peak_loss"], lambda_sampled=lam, eta_predicted=pred, eta_leading=lead,
        predicted_kind=tuple(tuple(k) for k in kinds), eta_bounds=bounds)


def _render_lr(config: Config, results: Results, out: Path) -> list[ReportSection]:
    grid = _lr_grid(config, results)
    if grid is None:
        return []
    fig = plot_learning_rate_grid(grid)
    fig.suptitle(f"{config.lr_activation}, L={config.depth}, C={config.outputs}, T={config.lr_samples}: "
                 f"loss after {config.lr_steps} full-batch gradient steps", fontsize=9)
    figures = save_figure(fig, out, "learning_rate")
    trainable, stable = grid.largest_trainable(), grid.largest_stable()
    lines = ["| network | M | predicted η_max = 2/λ_max | 2/λ_max sampled | largest η that trained | "
             "largest η that did not diverge |", "|---|---|---|---|---|---|"]
    for i, label in enumerate(grid.labels):
        for j, width in enumerate(grid.widths):
            kind = grid.predicted_kind[i][j] if grid.predicted_kind else "prediction"
            lines.append(f"| {label} | {width} | {fmt(grid.eta_predicted[i, j])}"
                         f"{' (bound)' if kind != 'prediction' else ''} | {fmt(grid.eta_sampled[i, j])} | "
                         f"{fmt(trainable[i, j])} | {fmt(stable[i, j])} |")
    return [ReportSection(f"Learning rate: loss after {config.lr_steps} steps over (M, η)", _lr_reading(grid),
                          "\n".join(lines), figures)]


def _lr_reading(grid) -> str:
    """How much larger a step each normalization allows, predicted and observed, and whether gradient
    descent trained up to the predicted boundary (all computed from the grid)."""
    parts = []
    trainable = grid.largest_trainable()
    top = max(grid.etas)
    for i, label in enumerate(grid.labels):
        ratios = trainable[i] / grid.eta_sampled[i]
        censored = bool(np.any(trainable[i] >= top))
        parts.append(f"{label}: the largest step that trained is {'at least ' if censored else ''}"
                     f"{fmt(min(ratios), 3)}–{fmt(max(ratios), 3)} times the drawn networks' 2/λ_max"
                     + (f" (it is the top of the grid, η = {fmt(top, 3)}, at some width)" if censored else "")
                     + f"; the grid resolves {fmt(grid.etas[1] / grid.etas[0], 3)}× steps")
    for i in range(1, len(grid.labels)):
        gain = grid.gain(i, 0)
        parts.append(f"{grid.labels[i]} against {grid.labels[0]}: predicted η_max larger by "
                     f"{fmt(min(gain['predicted']), 3)}–{fmt(max(gain['predicted']), 3)}×, sampled "
                     f"2/λ_max by {fmt(min(gain['sampled']), 3)}–{fmt(max(gain['sampled']), 3)}×, largest "
                     f"trained step by {fmt(min(gain['largest_trainable']), 3)}–"
                     f"{fmt(max(gain['largest_trainable']), 3)}× over M = {grid.widths[0]}..{grid.widths[-1]}")
    return "; ".join(parts) + "." if parts else ""


register_stage(Stage("learning_rate", _lr_tasks, _render_lr))
