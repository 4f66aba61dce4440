"""All LaTeX policy in one place: symbol names, Gaussian expectations, network specs.

:func:`latex` prints sympy expressions with the notation of :data:`meanfield.spec.symbols.LATEX_NAMES`
(``qhat1_2`` -> ``\\hat{q}_{1}^{(2)}``) and dispatches other objects to their own ``_latex()`` or
``_repr_latex_()``. Gaussian expectations print in the notation of the theory notes: I_phi[q1, q2] for the
cross moment and E[phi(sqrt(q) z)^2] for the second moment, phi written as its catalogue name
(``\\tanh``, ``\\operatorname{gelu}``) or, for user expressions, as ``(x \\mapsto ...)``.
"""

from __future__ import annotations

from typing import Any

import sympy

__all__ = ["latex", "latex_network", "latex_activation", "latex_expectation"]

# catalogue family -> LaTeX name of the function (as an operator, so \tanh(u) reads naturally)
_FUNCTION_NAMES = {
    "tanh": r"\tanh", "sin": r"\sin", "cos": r"\cos", "erf": r"\operatorname{erf}",
    "erf_prime": r"\operatorname{erf}'", "relu": r"\operatorname{ReLU}", "step": r"\Theta",
    "sign": r"\operatorname{sgn}", "abs": r"\left|\cdot\right|", "linear": r"\operatorname{id}",
    "sigmoid": r"\sigma", "sigmoid_prime": r"\sigma'", "softplus": r"\operatorname{softplus}",
    "gelu": r"\operatorname{GELU}", "silu": r"\operatorname{SiLU}", "silu_prime": r"\operatorname{SiLU}'",
    "leaky_relu": r"\operatorname{LReLU}", "leaky_step": r"\operatorname{LReLU}'",
    "constant": r"\operatorname{const}",
}


def _names(kwargs: dict) -> dict:
    from .spec.symbols import LATEX_NAMES

    names = dict(LATEX_NAMES)
    names.update(kwargs.pop("symbol_names", None) or {})
    return names


def latex(obj: Any, **kwargs: Any) -> str:
    """LaTeX for a sympy expression or any meanfield object (no surrounding dollars).

    Keyword arguments go to :func:`sympy.latex`; ``symbol_names`` is merged over the project's.

    Example:
        >>> from meanfield.spec.symbols import order_symbol
        >>> latex(order_symbol("qhat1", 2) ** 2)
        '\\\\left(\\\\hat{q}_{1}^{(2)}\\\\right)^{2}'
        >>> import meanfield as mf
        >>> latex(mf.second_moment(mf.activation("tanh"), order_symbol("q1", 1)))
        '\\\\mathbb{E}_{z}\\\\left[\\\\tanh^{2}\\\\left(\\\\sqrt{q_{1}^{(1)}}\\\\, z\\\\right)\\\\right]'
    """
    if isinstance(obj, sympy.Basic) or isinstance(obj, (int, float, complex)):
        return sympy.latex(obj, symbol_names=_names(kwargs), **kwargs)
    method = getattr(obj, "_latex", None)
    if callable(method):
        try:
            return method(**kwargs)
        except TypeError:  # sympy-style _latex(printer)
            return method(sympy.printing.latex.LatexPrinter(dict(symbol_names=_names(kwargs), **kwargs)))
    method = getattr(obj, "_repr_latex_", None)
    if callable(method):
        text = method().strip()
        for open_, close in (("$$", "$$"), ("$", "$")):
            if text.startswith(open_) and text.endswith(close) and len(text) > 2 * len(open_):
                text = text[len(open_):-len(close)]
                break
        return text.replace(r"\displaystyle ", "", 1) if text.startswith(r"\displaystyle") else text
    if isinstance(obj, (list, tuple)):
        return r"\left(" + ", ".join(latex(o, **kwargs) for o in obj) + r"\right)"
    return sympy.latex(sympy.sympify(obj), symbol_names=_names(kwargs), **kwargs)


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
    name = _FUNCTION_NAMES.get(family)
    if name is not None:
        if params:
            shown = ", ".join(f"{k}={_print(v, printer)}" for k, v in params.items())
            return f"{name}_{{{shown}}}"
        return name
    return r"\left(x \mapsto " + _print(f.expr, printer) + r"\right)"


def _print(expr: Any, printer: Any = None) -> str:
    if printer is not None:
        return printer._print(sympy.sympify(expr))
    return latex(sympy.sympify(expr))


def latex_expectation(e: Any, printer: Any = None) -> str:
    """LaTeX of a :class:`~meanfield.integrals.GaussianExpectation`.

    Second moment: ``\\mathbb{E}_{z}[\\phi^{2}(\\sqrt{q} z)]``; cross moment:
    ``I_{\\phi}[q_1, q_2]`` (the theory notes' notation).
    """
    f = e.activation()
    name = latex_activation(f, printer)
    q1 = _print(e.q1, printer)
    if e.is_second_moment:
        arg = _print(sympy.sqrt(e.q1), printer)
        if f.family == "custom":
            return rf"\mathbb{{E}}_{{z}}\left[{name}\left({arg}\, z\right)^{{2}}\right]"
        return rf"\mathbb{{E}}_{{z}}\left[{name}^{{2}}\left({arg}\, z\right)\right]"
    q2 = _print(e.q2, printer)
    return rf"I_{{{name}}}\left[{q1}, {q2}\right]"


def latex_network(net: Any) -> str:
    """A LaTeX array describing a :class:`~meanfield.Network` spec (for notebooks).

    Example:
        >>> import meanfield as mf
        >>> print(latex_network(mf.Network(2, "relu", 2, 0)))  # doctest: +ELLIPSIS
        $\\begin{array}{ll}
        \\text{depth } L & 2 \\\\
        ...
    """
    rows = [
        (r"\text{depth } L", str(net.depth)),
        (r"\text{activation } \phi", ", ".join(latex_activation(a) for a in net.activation)),
        (r"\sigma_{w}^{2}", _per_layer(net.sigma_w2)),
        (r"\sigma_{b}^{2}", _per_layer(net.sigma_b2)),
        (r"\text{outputs } C", str(net.outputs)),
        (r"\alpha_{l}", _per_layer(net.alphas)),
        (r"\text{normalization}", ", ".join(_norm(n) for n in net.norms) or r"\text{none}"),
        (r"(\hat{q}_{1}^{(0)}, \hat{q}_{2}^{(0)})", f"({latex(net.input_q1)}, {latex(net.input_q2)})"),
    ]
    body = " \\\\\n".join(f"{k} & {v}" for k, v in rows)
    return "$\\begin{array}{ll}\n" + body + "\n\\end{array}$"


def _per_layer(values: tuple) -> str:
    if all(v == values[0] for v in values):
        return latex(values[0])
    return r"\left(" + ", ".join(latex(v) for v in values) + r"\right)"


def _norm(n: Any) -> str:
    kind = {"batch": r"\text{BN}", "batch-center": r"\text{BN}_{\text{center}}"}.get(getattr(n, "kind", ""),
                                                                                     r"\text{LN}")
    return f"{kind}(u^{{({n.layer})}})"
