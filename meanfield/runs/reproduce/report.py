"""What ``meanfield reproduce`` writes from the stored values: ``points.csv`` (every number, one row per theory
or sampled point), ``summary.csv`` (means, standard errors, theory) and ``report.md`` (the sections the
stages computed, and the settings).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ..store import meanfield_version
from .config import Config
from .points import STATS
from .results import Results
from .stages import ReportSection

__all__ = ["write_csv", "write_report", "csv_value"]


def write_csv(results: Results, out: Path) -> list[str]:
    """points.csv: every cached number (one row per theory or sampled point); summary.csv: aggregates."""
    label_cols = ["stage", "activation", "placement", "width", "samples", "seed", "kind"]
    value_cols = sorted({k for row in results.rows for k in row if k not in label_cols})
    with open(out / "points.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(label_cols + value_cols)
        for row in sorted(results.rows, key=lambda r: tuple(str(r.get(c)) for c in label_cols)):
            writer.writerow([csv_value(row.get(c)) for c in label_cols + value_cols])
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        stats = ("m", "s", "lambda_max", "kappa1", "kappa2")
        writer.writerow(["stage", "activation", "placement", "width", "samples", "seeds", "lambda_max_kind"]
                        + [f"{k}_{part}" for k in stats for part in ("theory", "mean", "sem")]
                        + [f"leading_{k}" for k in STATS])
        for ident in sorted(results.points, key=lambda i: tuple(map(str, i))):
            p = results.points[ident]
            writer.writerow([p.stage, p.activation, p.placement, p.width, p.samples, len(p.seeds),
                             p.theory.get("lambda_max_kind", "")]
                            + [csv_value(v) for k in stats for v in (p.theory.get(k), p.mean(k), p.sem(k))]
                            + [csv_value(p.theory.get(f"leading_{k}")) for k in STATS])
    return ["points.csv", "summary.csv"]


def csv_value(value: Any) -> Any:
    """A value as a CSV cell: empty for None or not finite, floats in full (repr), lists as JSON.

    Example:
        >>> csv_value(0.1), csv_value(float("nan")), csv_value([1, 2]), csv_value(None)
        ('0.1', '', '[1, 2]', '')
    """
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return value


def write_report(path: Path, config: Config, findings: list[ReportSection], skipped: list[str], computed: int,
                 reused: int, seconds: float) -> None:
    lines = ["# meanfield reproduce: pathological sharpness and normalization", "",
             f"meanfield {meanfield_version()}. This run computed {computed} points and reused {reused} from the cache "
             f"({seconds:.0f} s). Every number is in `points.csv` (one row per theory or sampled network) and "
             "`summary.csv` (means, standard errors, theory); the readings below are computed from them.", "",
             "Networks: fully connected, "
             f"depth L = {config.depth}, C = {config.outputs} outputs, inputs iid N(0, 1)"
             + (" (the digits stage: a real batch of handwritten digits)" if "digits" in config.stages else "") + "; "
             + ", ".join(f"{a}: σ_w² = {config.sigma('sigma_w2', a):g}, σ_b² = {config.sigma('sigma_b2', a):g}"
                         for a in dict.fromkeys((*config.activations, *config.ratio_activations,
                                                 *(config.rmt_activations if "rmt" in config.stages else ()),
                                                 *(config.digits_activations if "digits" in config.stages else ()))))
             + ". "
             "Theory: `meanfield.predict` (finite-width form). Sampled: exact top eigenvalue, trace and "
             "Frobenius norm of the CT × CT dual Gram of drawn networks; error bars are one standard error "
             "over seeds.", ""]
    for number, finding in enumerate(findings, 1):
        lines += [f"## {number}. {finding.title}", "", finding.reading, ""]
        lines += [f"![{name}]({name})" for name in finding.figures if name.endswith(".png")]
        if finding.figures:
            lines.append("")
        if finding.table:
            lines += [finding.table, ""]
    if skipped:
        lines += ["## Not run", ""] + [f"- {s}" for s in skipped] + [""]
    lines += ["## Settings", "", "```toml"] + [f"{k} = {_toml(v)}" for k, v in config.to_dict().items()] + ["```", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)
