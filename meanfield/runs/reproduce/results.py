"""The stored values of a run as tables: :class:`PointSummary` (theory and sampled values of one
(stage, activation, placement, M, T)), :class:`Results`, and the numbers and words the readings use.

Example:
    >>> point = PointSummary("width", "relu", "none", 64, 16, sampled={"m": [1.0, 3.0]})
    >>> point.mean("m"), round(point.sem("m"), 6)
    (2.0, 1.0)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .points import Job

__all__ = ["PointSummary", "Results", "slope", "growth", "series_slope", "fmt", "pm"]


@dataclass
class PointSummary:
    """Theory and sampled values of one (stage, activation, placement, M, T)."""

    stage: str
    activation: str
    placement: str
    width: int
    samples: int
    theory: dict = field(default_factory=dict)
    seeds: list = field(default_factory=list)
    sampled: dict = field(default_factory=lambda: defaultdict(list))

    def mean(self, key: str) -> float:
        values = [v for v in self.sampled.get(key, []) if v is not None]
        return float(np.mean(values)) if values else math.nan

    def sem(self, key: str) -> float:
        values = [v for v in self.sampled.get(key, []) if v is not None]
        return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


class Results:
    """The stored values of this run's jobs (``rows``: key -> {"values", "seconds"}), as CSV rows and grouped
    into :class:`PointSummary` objects."""

    def __init__(self, tasks: Iterable[Job], rows: Mapping[str, dict]):
        stored = rows
        self.points: dict[tuple, PointSummary] = {}
        self.rows: list[dict] = []
        for task in tasks:
            row = stored.get(task.key)
            if row is None:
                continue
            labels = dict(task.labels)
            self.rows.append({**labels, **row["values"], "seconds": row.get("seconds")})
            if labels.get("kind") not in ("theory", "sample"):
                continue
            ident = (labels["stage"], labels["activation"], labels["placement"], labels["width"], labels["samples"])
            point = self.points.get(ident)
            if point is None:
                point = self.points[ident] = PointSummary(*ident)
            if labels["kind"] == "theory":
                point.theory = row["values"]
            else:
                point.seeds.append(labels["seed"])
                for key, value in row["values"].items():
                    point.sampled[key].append(value)

    def series(self, stage: str, activation: str, placement: str) -> list[PointSummary]:
        return sorted((p for p in self.points.values()
                       if (p.stage, p.activation, p.placement) == (stage, activation, placement)),
                      key=lambda p: p.width)


# -- numbers that the readings use -------------------------------------------------------------------------------


def slope(widths: Sequence[float], values: Sequence[float], sems: Sequence[float] | None = None) -> float:
    """Exponent a of values ~ c M^a: least squares on log-log, weighted by 1/(relative s.e.)^2 if given.

    The weights keep a noisy small-width mean (the C outliers split and fluctuate most at small M)
    from dominating the fit; relative errors are floored at 1% so that no point gets all the weight.

    Example:
        >>> round(slope([64, 128, 256], [1.0, 2.0, 4.0]), 6)
        1.0
        >>> round(slope([64, 128, 256], [1.0, 2.0, 9.0], [0.01, 0.02, 9.0]), 2)
        1.0
    """
    rows = []
    for i, (w, v) in enumerate(zip(widths, values)):
        if not (v and v > 0 and math.isfinite(v)):
            continue
        rel = sems[i] / v if sems is not None and sems[i] is not None and math.isfinite(sems[i]) else 0.0
        rows.append((math.log(w), math.log(v), 1.0 / max(rel, 0.01) ** 2 if sems is not None else 1.0))
    if len({r[0] for r in rows}) < 2:
        return math.nan
    x, y, weight = np.array(rows).T
    return float(np.polyfit(x, y, 1, w=np.sqrt(weight))[0])


def growth(exponent: float) -> str:
    """Words for a fitted exponent of M: bounded below 1/3, like M above 2/3, sub-linear between.

    Example:
        >>> growth(0.1)
        'stays bounded (fitted exponent 0.10)'
    """
    if not math.isfinite(exponent):
        return "could not be fitted"
    if exponent < 1 / 3:
        return f"stays bounded (fitted exponent {exponent:.2f})"
    if exponent <= 2 / 3:
        return f"grows sub-linearly, like M^{exponent:.2f}"
    return f"grows like M (fitted exponent {exponent:.2f})"


def series_slope(series: Sequence["PointSummary"], key: str = "lambda_max") -> float:
    """:func:`slope` of one series of points (sampled means, weighted by their standard errors)."""
    return slope([p.width for p in series], [p.mean(key) for p in series], [p.sem(key) for p in series])


def fmt(value: float, digits: int = 4) -> str:
    """A number in ``digits`` significant digits, a dash for None or not finite.

    Example:
        >>> fmt(3.14159), fmt(None), fmt(2.0, 2)
        ('3.142', '–', '2')
    """
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def pm(mean: float, sem: float) -> str:
    """'mean ± standard error'.

    Example:
        >>> pm(1.23456, 0.0123)
        '1.235 ± 0.012'
    """
    return f"{fmt(mean)} ± {fmt(sem, 2)}"
