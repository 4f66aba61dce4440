"""The sympy symbols of the theory, with their LaTeX names (the notation policy in one table).

Symbols carry plain ASCII names (``qhat1_2``) so they print readably in a REPL and survive
``lambdify``; :data:`LATEX_NAMES` maps each to its typeset form (``\\hat{q}_{1}^{(2)}``), and
:func:`meanfield.latex` uses it. Layer indices are written as ``^{(l)}`` so they never read as powers.
"""

from __future__ import annotations

import functools
import re

import sympy

__all__ = ["ORDER_PARAMETERS", "BATCH_NORM_SUMS", "LATEX_NAMES", "order_symbol", "batch_norm_symbol", "layer_symbol", "M", "T", "C",
           "kappa1", "kappa2", "alpha", "q", "q1", "q2",
           "reserved_symbol"]

LATEX_NAMES: dict[sympy.Symbol, str] = {}

# kind -> (ascii stem, LaTeX stem); the order is the order of the recursions.
ORDER_PARAMETERS = {
    "q1": ("q1", "q_{1}"),
    "q2": ("q2", "q_{2}"),
    "qhat1": ("qhat1", r"\hat{q}_{1}"),
    "qhat2": ("qhat2", r"\hat{q}_{2}"),
    "qtilde1": ("qtilde1", r"\tilde{q}_{1}"),
    "qtilde2": ("qtilde2", r"\tilde{q}_{2}"),
}
_LAYER_PARAMETERS = {
    "sigma_w2": ("sigma_w2", r"\sigma_{w}^{2}"),
    "sigma_b2": ("sigma_b2", r"\sigma_{b}^{2}"),
    "alpha": ("alpha", r"\alpha"),
}


def _register(name: str, latex: str, **assumptions) -> sympy.Symbol:
    sym = sympy.Symbol(name, **assumptions)
    LATEX_NAMES[sym] = latex
    return sym


@functools.lru_cache(maxsize=None)
def order_symbol(kind: str, layer: int) -> sympy.Symbol:
    """The symbol of order parameter ``kind`` (q1, q2, qhat1, qhat2, qtilde1, qtilde2) at ``layer``.

    Example:
        >>> order_symbol("qhat1", 2)
        qhat1_2
        >>> LATEX_NAMES[order_symbol("qhat1", 2)]
        '\\\\hat{q}_{1}^{(2)}'
    """
    from ..errors import check_choice

    check_choice("kind", kind, list(ORDER_PARAMETERS))
    ascii_stem, latex_stem = ORDER_PARAMETERS[kind]
    positive = kind in ("q1", "qhat1", "qtilde1")
    return _register(f"{ascii_stem}_{layer}", f"{latex_stem}^{{({layer})}}", real=True,
                     **({"positive": True} if positive else {}))


#: The two sums of the backward recursion that only a batch norm makes non-zero (kind -> LaTeX before "(l)}").
BATCH_NORM_SUMS = {"qtilde1_mean": r"\tilde{q}_{1}^{\mathrm{mean}\,", "qtilde2_same": r"\tilde{q}_{2}^{\mathrm{same}\,"}


@functools.lru_cache(maxsize=None)
def batch_norm_symbol(kind: str, layer: int) -> sympy.Symbol:
    r"""The symbol of a batch-norm sum of the backward recursion (qtilde1_mean, qtilde2_same) at ``layer``.

    Example:
        >>> batch_norm_symbol("qtilde2_same", 2), LATEX_NAMES[batch_norm_symbol("qtilde2_same", 2)]
        (qtilde2_same_2, '\\tilde{q}_{2}^{\\mathrm{same}\\,(2)}')
    """
    from ..errors import check_choice

    check_choice("kind", kind, list(BATCH_NORM_SUMS))
    return _register(f"{kind}_{layer}", f"{BATCH_NORM_SUMS[kind]}({layer})}}", real=True)


@functools.lru_cache(maxsize=None)
def layer_symbol(kind: str, layer: int | None = None) -> sympy.Symbol:
    """sigma_w2, sigma_b2 or alpha, shared (layer None) or of one layer.

    Example:
        >>> layer_symbol("sigma_w2"), layer_symbol("sigma_b2", 3)
        (sigma_w2, sigma_b2_3)
    """
    from ..errors import check_choice

    check_choice("kind", kind, list(_LAYER_PARAMETERS))
    ascii_stem, latex_stem = _LAYER_PARAMETERS[kind]
    if layer is None:
        return _register(ascii_stem, latex_stem, positive=True) if kind != "sigma_b2" else _register(
            ascii_stem, latex_stem, nonnegative=True)
    latex = latex_stem.replace("^{2}", f"^{{2\\,({layer})}}") if "^{2}" in latex_stem else f"{latex_stem}_{{{layer}}}"
    assumptions = {"nonnegative": True} if kind == "sigma_b2" else {"positive": True}
    return _register(f"{ascii_stem}_{layer}", latex, **assumptions)


M = _register("M", "M", positive=True, integer=True)
T = _register("T", "T", positive=True, integer=True)
C = _register("C", "C", positive=True, integer=True)
kappa1 = _register("kappa1", r"\kappa_{1}", real=True)
kappa2 = _register("kappa2", r"\kappa_{2}", real=True)
alpha = _register("alpha", r"\alpha", positive=True)
q = _register("q", "q", positive=True)
q1 = _register("q1", "q_{1}", positive=True)
q2 = _register("q2", "q_{2}", real=True)


# Names a parameter value may not use as a symbol: the theory's own symbols (a user symbol named M would
# be the width M in every formula, silently merging two quantities: kappa1 = M + sigma_b2/2), the
# activation variable x, and the names sympy prints for its constants (a positive symbol named I or oo
# would print as the imaginary unit or infinity).
_RESERVED = {
    "M": "the base width M",
    "T": "the batch size T",
    "C": "the number of outputs C",
    "P": "the parameter count P",
    "kappa1": "the constant kappa_1",
    "kappa2": "the constant kappa_2",
    "q": "a Gaussian variance q",
    "q1": "the order parameter q_1",
    "q2": "the order parameter q_2",
    "x": "the activation's variable x",
    "I": "sympy's imaginary unit I",
    "E": "sympy's constant E",
    "pi": "the constant pi",
    "oo": "sympy's infinity oo",
    "zoo": "sympy's complex infinity zoo",
    "nan": "sympy's nan",
}
_ORDER_NAME = re.compile(r"(q1|q2|qhat1|qhat2|qtilde1|qtilde2)(_\d+)?")


def reserved_symbol(name: str) -> str | None:
    """What the theory uses the symbol ``name`` for, or None when a parameter may be called that.

    Example:
        >>> reserved_symbol("M"), reserved_symbol("qhat1_2"), reserved_symbol("s") is None
        ('the base width M', 'the order parameter qhat1_2', True)
    """
    name = str(name)
    if name in _RESERVED:
        return _RESERVED[name]
    if _ORDER_NAME.fullmatch(name):
        return f"the order parameter {name}"
    return None
