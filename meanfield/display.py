"""The one home of how results print: numbers as table text, aligned tables, LaTeX cells, JSON values.

Every result object of the package (theory, sampled networks, training, sweeps) formats its values
here, so that the same number prints the same way everywhere. Like :mod:`meanfield.errors` it sits
below every other module and imports none of them (a network is recognised by its ``describe``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["fmt", "table", "latex_table", "latex_value", "latex_text", "plain"]


def fmt(value: Any, digits: int = 6) -> str:
    """A value as table text: None -> "-", bools as yes/no, floats to ``digits`` significant digits, inf as "inf".

    Example:
        >>> fmt(None), fmt(True), fmt(3), fmt(1 / 3), fmt(float("inf")), fmt((1, 2.5))
        ('-', 'yes', '3', '0.333333', 'inf', '(1, 2.5)')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(fmt(v, digits) for v in value) + ")"
    return str(value)


def table(title: str, rows: Sequence[tuple[str, Any]]) -> str:
    """``title`` over one aligned ``label  value`` line per row (values through :func:`fmt`).

    Example:
        >>> print(table("Run", [("eta", 0.5), ("diverged", False)]))
        Run
          eta       0.5
          diverged  no
    """
    width = max(len(k) for k, _ in rows)
    return title + "\n" + "\n".join(f"  {k:<{width}}  {fmt(v)}" for k, v in rows)


def latex_table(rows: Sequence[tuple[str, Any]]) -> str:
    r"""The rows as a two-column LaTeX array (for notebooks' ``_repr_latex_``).

    Example:
        >>> print(latex_table([("eta", 2e-07)]))
        $\begin{array}{ll}\text{eta} & 2 \times 10^{-7}\end{array}$
    """
    body = r" \\ ".join(rf"{latex_text(k)} & {latex_value(v)}" for k, v in rows)
    return r"$\begin{array}{ll}" + body + r"\end{array}$"


def latex_text(text: str) -> str:
    r"""``\text{...}`` with TeX's special characters escaped (``sigma_w2`` has an underscore).

    Example:
        >>> print(latex_text("sigma_w2=2, 5%"))
        \text{sigma\_w2=2, 5\%}
    """
    special = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "#": r"\#", "&": r"\&", "$": r"\$",
               "{": r"\{", "}": r"\}", "^": r"\^{}", "~": r"\~{}"}
    return r"\text{" + "".join(special.get(c, c) for c in str(text)) + "}"


def latex_value(value: Any) -> str:
    r"""One value as LaTeX: text in ``\text{}``, 1e-07 as ``1 \times 10^{-7}``, inf as ``\infty``.

    Example:
        >>> print(latex_value(float("inf")), latex_value("relu"))
        \infty \text{relu}
    """
    text = fmt(value)
    if isinstance(value, str) or _is_network(value):
        return latex_text(text)
    if "e" in text and not text.startswith("(") and text not in ("inf", "yes", "no"):
        mant, exp = text.split("e")
        return rf"{mant} \times 10^{{{int(exp)}}}"
    return text if text != "inf" else r"\infty"


def plain(value: Any) -> Any:
    """A JSON-friendly copy of ``value`` (floats, ints, strings, lists, dicts).

    Example:
        >>> plain({"loss": np.array([1.0, np.inf]), "n": np.int64(3)})
        {'loss': [1.0, None], 'n': 3}
    """
    if _is_network(value):
        return value.describe()
    if isinstance(value, (np.floating, float)):
        # JSON has no inf: an infinite loss (a diverged run) becomes None
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def _is_network(value: Any) -> bool:
    # duck-typed so that this module stays below the spec: a Network is what has describe()
    return callable(getattr(value, "describe", None))
