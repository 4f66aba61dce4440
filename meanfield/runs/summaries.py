"""Summary tables of stored records: one row per (network, M, T), seeds averaged (mean ± sem).

What a sweep prints at the end and what :class:`~meanfield.runs.store.SweepResults` shows; it reads
only the records' columns, so it sits below the store and the sweeps that use it.

Example:
    >>> summary_rows([])
    ([], [])
"""

from __future__ import annotations

from ..display import fmt

__all__ = ["summary_rows", "summary_table", "IDENTITY_COLUMNS", "BOOKKEEPING_COLUMNS"]

#: Columns every results row has, in order (the task's statistics follow).
IDENTITY_COLUMNS = ("key", "sweep", "task", "network", "depth", "activation", "sigma_w2", "sigma_b2", "outputs",
                    "alphas", "norms", "input_q1", "input_q2", "width", "samples", "seed")
#: Bookkeeping columns (not statistics).
BOOKKEEPING_COLUMNS = ("elapsed", "cpu", "worker", "finished", "meanfield_version")


_PAIRS = ("m", "s", "lambda_max")
_MAX_ROWS = 30


def _mean_sem(values: list) -> str:
    values = [float(v) for v in values if v is not None]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.4g}"
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return f"{mean:.4g} ± {(var / len(values)) ** 0.5:.2g}"


def _network_label(r: dict) -> str:
    parts = [f"L={r.get('depth')}", str(r.get("activation")), f"sw2={fmt(r.get('sigma_w2'), 4)}",
             f"sb2={fmt(r.get('sigma_b2'), 4)}", f"C={r.get('outputs')}"]
    if r.get("norms") not in (None, "none"):
        parts.append(str(r["norms"]))
    if r.get("alphas") not in (None, 1, 1.0):
        parts.append(f"alphas={r['alphas']}")
    return " ".join(parts)


def summary_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary: one row per (network, M, T), seeds averaged (mean ± sem)."""
    if not records:
        return [], []
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r.get("network"), r.get("width"), r.get("samples")), []).append(r)
    columns = set().union(*(r.keys() for r in records))
    if all(f"predicted_{n}" in columns and f"sampled_{n}" in columns for n in _PAIRS):
        stats = [col for n in _PAIRS for col in ((f"{n} theory", f"predicted_{n}", False),
                                                 (f"{n} sampled", f"sampled_{n}", True))]
    else:
        skip = set(IDENTITY_COLUMNS) | set(BOOKKEEPING_COLUMNS)
        numeric = [c for c in records[0] if c not in skip and isinstance(records[0][c], (int, float))]
        stats = [(c, c, True) for c in numeric[:6]]
    header = ["network", "M", "T", "seeds"] + [label for label, _, _ in stats]
    rows = []
    for (_, width, samples), group in groups.items():
        row = [_network_label(group[0]), str(width), str(samples), str(len(group))]
        for _, column, average in stats:
            values = [g.get(column) for g in group]
            first = group[0]
            if column == "predicted_lambda_max" and first.get("predicted_lambda_max_kind") == "bound":
                # only bounded by the theory (e.g. batch norm on the output): show the interval
                row.append(f"{fmt(first.get('predicted_lambda_max_lo'), 4)}..{fmt(first.get('predicted_lambda_max_hi'), 4)}")
            else:
                row.append(_mean_sem(values) if average else fmt(values[0], 4))
        rows.append(row)
    if len(rows) > _MAX_ROWS:
        more = len(rows) - _MAX_ROWS
        rows = rows[:_MAX_ROWS] + [[f"... {more} more (network, M, T) groups"] + [""] * (len(header) - 1)]
    return header, rows


def summary_table(records: list[dict]) -> str:
    """An aligned text table of :func:`summary_rows` (what a sweep prints at the end).

    Example:
        >>> print(summary_table([{"network": "a", "depth": 2, "activation": "relu", "sigma_w2": 2.0,
        ...                       "sigma_b2": 0.0, "outputs": 1, "width": 8, "samples": 2, "seed": s,
        ...                       "P": 17} for s in (0, 1)]))
        network                     M  T  seeds  P
        L=2 relu sw2=2 sb2=0 C=1    8  2  2      17 ± 0
    """
    header, rows = summary_rows(records)
    if not header:
        return "(no records)"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)
