"""The LaTeX names of activations and of Gaussian expectations (the notation of the theory notes).

Kept below :mod:`meanfield.printing` so that the expectation classes of this subpackage print themselves
without importing upwards; :mod:`meanfield.printing` re-exports these and reads them back
(:func:`meanfield.printing.parse_latex`).
"""

from __future__ import annotations

from typing import Any

import sympy

__all__ = ["FUNCTION_NAMES", "latex_activation", "catalogue_name", "latex_expectation"]

# catalogue family -> LaTeX name of the function (as an operator, so \tanh(u) reads naturally)
FUNCTION_NAMES: dict[str, str] = {
    "tanh": r"\tanh", "sin": r"\sin", "cos": r"\cos", "erf": r"\operatorname{erf}",
    "erf_prime": r"\operatorname{erf}'", "relu": r"\operatorname{ReLU}", "step": r"\Theta",
    "sign": r"\operatorname{sgn}", "abs": r"\left|\cdot\right|", "linear": r"\operatorname{id}",
    "sigmoid": r"\sigma", "sigmoid_prime": r"\sigma'", "softplus": r"\operatorname{softplus}",
    "gelu": r"\operatorname{GELU}", "silu": r"\operatorname{SiLU}", "silu_prime": r"\operatorname{SiLU}'",
    "leaky_relu": r"\operatorname{LReLU}", "leaky_step": r"\operatorname{LReLU}'",
    "constant": r"\operatorname{const}",
}


def latex_activation(f: Any, printer: Any = None) -> str:
    """The LaTeX name of an activation as a function: ``\\tanh``, or ``\\left(x \\mapsto ...\\right)``.

    Example:
        >>> import meanfield as mf
        >>> latex_activation(mf.activation("gelu"))
        '\\\\operatorname{GELU}'
        >>> latex_activation(mf.Activation.from_expr("x*tanh(x)"))
        '\\\\left(x \\\\mapsto x \\\\tanh{\\\\left(x \\\\right)}\\\\right)'
    """
    family = getattr(f, "family", "custom")
    params = dict(getattr(f, "params", ()))
    name = FUNCTION_NAMES.get(family)
    if name is None:
        name = catalogue_name(getattr(f, "name", ""), f.expr)
    if name is not None:
        if params:
            shown = ", ".join(f"{k}={_print(v, printer)}" for k, v in params.items())
            return f"{name}_{{{shown}}}"
        return name
    return r"\left(x \mapsto " + _print(f.expr, printer) + r"\right)"


def catalogue_name(label: str, expr: Any) -> str | None:
    """The LaTeX name of a custom-family activation that is a catalogue one or its derivative, else None.

    ``phi.derivative`` of an activation without a catalogued derivative (tanh) is a custom expression named
    ``"tanh'"``: it prints as ``\\tanh'`` when its expression is that derivative. A sphere expectation keeps
    only the label and expression, so ``"tanh"`` with ``tanh(x)`` prints as ``\\tanh`` too.

    Example:
        >>> import meanfield as mf
        >>> catalogue_name("tanh'", mf.activation("tanh").derivative.expr)
        "\\\\tanh'"
        >>> catalogue_name("tanh'", mf.activation("tanh").expr) is None
        True
    """
    from ..spec.activations import CATALOGUE, activation

    prime = label.endswith("'")
    base = label[:-1] if prime else label
    if base not in CATALOGUE or base not in FUNCTION_NAMES:
        return None
    f = activation(base)
    target = f.derivative if prime else f
    if sympy.sympify(expr) != target.expr:
        return None
    return FUNCTION_NAMES[target.family] if target.family in FUNCTION_NAMES else FUNCTION_NAMES[base] + "'"


def _print(expr: Any, printer: Any = None) -> str:
    if printer is not None:
        return printer._print(sympy.sympify(expr))
    from ..spec.symbols import LATEX_NAMES

    return sympy.latex(sympy.sympify(expr), symbol_names=dict(LATEX_NAMES))


def latex_expectation(e: Any, printer: Any = None) -> str:
    """LaTeX of a :class:`~meanfield.integrals.GaussianExpectation`.

    Second moment: ``\\mathbb{E}_{z}[\\phi^{2}(\\sqrt{q} z)]``; cross moment:
    ``I_{\\phi}[q_1, q_2]`` (the theory notes' notation). A user activation reads ``(x \\mapsto ...)`` and is
    squared outside its argument; :func:`meanfield.printing.parse_latex` reads both forms back.

    Example:
        >>> import meanfield as mf
        >>> from meanfield.integrals.symbolic import GaussianExpectation
        >>> latex_expectation(GaussianExpectation.of(mf.activation("tanh").derivative, 1, 1))
        "\\\\mathbb{E}_{z}\\\\left[\\\\tanh'^{2}\\\\left(1\\\\, z\\\\right)\\\\right]"
    """
    f = e.activation()
    name = latex_activation(f, printer)
    q1 = _print(e.q1, printer)
    if e.is_second_moment:
        arg = _print(sympy.sqrt(e.q1), printer)
        if name.startswith(r"\left(x"):
            return rf"\mathbb{{E}}_{{z}}\left[{name}\left({arg}\, z\right)^{{2}}\right]"
        return rf"\mathbb{{E}}_{{z}}\left[{name}^{{2}}\left({arg}\, z\right)\right]"
    q2 = _print(e.q2, printer)
    return rf"I_{{{name}}}\left[{q1}, {q2}\right]"
