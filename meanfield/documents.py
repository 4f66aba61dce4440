"""derivations/*.md: the theory's formulas as Markdown + LaTeX, generated from the code that computes them.

Every formula in these documents is printed from the sympy objects that :func:`meanfield.derive`,
:mod:`meanfield.theory.recursions`, :mod:`meanfield.theory.fisher`, :mod:`meanfield.integrals.sphere` and
:mod:`meanfield.integrals` return: the recursion rules of each layer kind, the dual-Gram entries and
kappa's in terms of the order parameters, the FIM statistics at finite width and leading order, the
closed forms of the Gaussian integrals, and exact values at a concrete point. A formula changed in the
code changes the document; ``tests/test_documents.py`` regenerates them and fails when the committed
copies differ.

Regenerate with ``python -m meanfield.documents [DIR]`` or ``meanfield derive --write-derivations DIR``.
For one network, ``meanfield derive --markdown`` prints the same sections (:func:`network_markdown`).

Example:
    >>> from meanfield import Network
    >>> from meanfield.spec.symbols import layer_symbol
    >>> text = network_markdown(Network(2, "linear", layer_symbol("sigma_w2"), 0))
    >>> "\\\\kappa_{1}" in text and text.startswith("## ")
    True
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sympy

from . import __version__
from .integrals.gaussian import cross_moment, second_moment
from .integrals.sphere import chi2_inverse_moment, expected_max_inverse_chi2
from .spec.activations import activation
from .spec.grammar import parse_norm
from .spec.network import BatchNorm, LayerNorm, Network
from .spec.symbols import C, M, T, layer_symbol, q, q1, q2
from .theory.backend import Arithmetic
from .theory.derivation import derive
from .theory.recursions import norm_forward
from .theory.statistics import gram_statistics
from .theory.structure import order_parameter_symbol, symbolic_order
from .printing import latex

__all__ = ["DOCUMENTS", "generate", "write_derivations", "network_markdown", "network_latex", "network_text",
           "FINDINGS", "Finding", "NOTATION", "Numbering"]

DEPTH = 3

# The placements documented for every activation (depth 3: layer 2 is the middle hidden layer).
PLACEMENTS: tuple[tuple[str, str], ...] = (
    ("none", "No normalization"),
    ("batch:last", "Batch norm in the last layer"),
    ("batch-center:last", "Batch norm in the last layer, mean subtraction only"),
    ("batch:2", "Batch norm in the middle hidden layer (layer 2)"),
    ("layer:2", "Layer norm in the middle hidden layer (layer 2)"),
)

# activation -> (title, a concrete point (sigma_w2, sigma_b2) for exact values)
ACTIVATIONS: dict[str, tuple[str, tuple[Any, Any]]] = {
    "relu": ("ReLU", (2, 0)),
    "erf": ("erf", (1, sympy.Rational(1, 10))),
    "linear": ("Linear", (1, sympy.Rational(1, 10))),
}

_STAT_TEX = {"P": "P", "alpha": r"\alpha", "kappa1": r"\kappa_{1}", "kappa2": r"\kappa_{2}",
             "gd": r"\mathbb{E}\, G_{tt}", "go": r"\mathbb{E}\, G_{tt'}", "m": "m", "s": "s",
             "lam": r"\lambda_{\max}"}


def _tex(expr: Any) -> str:
    return latex(sympy.sympify(expr))


def _display(lines: Sequence[str], numbers: "Numbering | None" = None) -> str:
    """A $$ aligned $$ block, one equation per line (GitHub and most Markdown renderers accept it).

    With ``numbers``, each line ends in its equation number ``(n)`` (a plain label rather than ``\\tag``,
    which amsmath refuses inside ``aligned`` and in ``$$``), so the text can cite it.
    """
    if numbers is not None:
        lines = [f"{line} &\\qquad ({numbers.next()})" for line in lines]
    body = " \\\\\n".join(lines)
    return "$$\n\\begin{aligned}\n" + body + "\n\\end{aligned}\n$$"


class Numbering:
    """Equation numbers of one document, in order of appearance (the text cites them as (n)).

    Example:
        >>> n = Numbering()
        >>> n.next(), n.next(), n.last
        (1, 2, 2)
    """

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last

    def span(self, first: int) -> str:
        """"(a)-(b)" from ``first`` to the last number given."""
        return f"({first})" if first == self.last else f"({first})-({self.last})"


# -- symbolic pieces -------------------------------------------------------------------------------------------


def _structure(derivation: Any) -> dict:
    """Gram entries, kappa's, m, s, lambda_max in the order-parameter symbols (the fisher code's formulas),
    each written out in the order parameters (``derivation.structure`` gives them level by level)."""

    return gram_statistics(symbolic_order(derivation.order), M, T, C, Arithmetic("sympy"))


def _lambda_kind(net: Any) -> str:
    """Which eigenvalue the structured lambda_max formula is: "bulk" (batch norm on the output, where
    E G_tt' < 0) or "outlier" (gram_diag + (T - 1) gram_offdiag), as :func:`gram_statistics` writes it."""

    return "bulk" if isinstance(net.norm_at(net.depth), BatchNorm) else "outlier"


_LAMBDA_TEX = {"outlier": r"\lambda_{\mathrm{outlier}}", "bulk": r"\lambda_{\mathrm{bulk}}"}


def _lambda_note(which: str, kind: str, eq_lam: int, eq_gd: int, eq_go: int) -> str:
    if which == "bulk":
        return (f" ({eq_lam}) is the bulk scale lambda_bulk = E G_tt - E G_tt' = ({eq_gd}) - ({eq_go}): with batch "
                "norm on the output E G_tt' < 0, there is no outlier, and the top eigenvalue of the expected Gram "
                "is this bulk value, a lower bound of E lambda_max (the theory only bounds lambda_max here).")
    text = (f" ({eq_lam}) is the outlier lambda_outlier = E G_tt + (T - 1) E G_tt' = ({eq_gd}) + (T - 1) ({eq_go}), "
            "the top eigenvalue of the expected Gram when E G_tt' > 0 (C eigenvalues of order M); the bulk scale "
            f"is lambda_bulk = ({eq_gd}) - ({eq_go}).")
    if kind == "prediction":
        return text + " Here lambda_max = lambda_outlier is a prediction."
    if kind == "bound":
        return text + (" Here kappa_2 <= 0: there is no outlier of order M, and lambda_max is only bounded below by "
                       "the larger of the two.")
    return text + (" lambda_max = lambda_outlier is a prediction when kappa_2 > 0; otherwise the top eigenvalue is "
                   "the bulk edge, bounded below by max(lambda_outlier, lambda_bulk).")


def _which_eigenvalue(value: Any, outlier: Any, bulk: Any) -> str | None:
    """"outlier" or "bulk" when ``value`` is that expression, else None (e.g. an unresolved Max, or the bulk
    times a chi-square factor). Structural comparison: ``value`` is built from the same Gram entries, and
    evaluating the long closed forms numerically costs minutes."""
    value = sympy.sympify(value)
    for name, candidate in (("outlier", outlier), ("bulk", bulk)):
        if value == candidate or sympy.expand(value - candidate) == 0:
            return name
    return None


def _network_sections(net: Any, title: str, point: tuple[Any, Any] | None, level: int = 2,
                      numbers: Numbering | None = None) -> list[str]:
    """Markdown sections for one network: recursion, structure, statistics, exact values at a point."""

    numbers = Numbering() if numbers is None else numbers
    h = "#" * level
    d = derive(net)
    out = [f"{h} {title}", "", f"Network: `{net.describe()}`.", ""]
    first = numbers.last + 1
    rules = _display([f"{_tex(r.lhs)} &= {_tex(r.rhs)}" for r in d.rules], numbers)
    out += [f"{h}# Recursion", "",
            f"Forward (per unit), then backward (summed over units), layer by layer, as the code applies them "
            f"{numbers.span(first)}:", "", rules, ""]
    st = _structure(d)
    kind = d.lambda_max_kind
    which = _lambda_kind(net)
    eq_gd = numbers.last + 1
    eq_go, eq_k1, eq_k2 = eq_gd + 1, eq_gd + 2, eq_gd + 3
    out += [f"{h}# Dual Gram entries and kappa's", "",
            f"Expected Gram entries of one output at finite width (exact widths and bias terms) ({eq_gd}), ({eq_go}), "
            f"and the large-width constants ({eq_k1}), ({eq_k2}) with the layers' weights:", "",
            _display([f"{_STAT_TEX['gd']} &= {_tex(st['gd'])}", f"{_STAT_TEX['go']} &= {_tex(st['go'])}",
                      f"\\kappa_{{1}} &= {_tex(st['kappa1'])}", f"\\kappa_{{2}} &= {_tex(st['kappa2'])}",
                      f"\\alpha &= {_tex(st['alpha'])}, \\quad P = {_tex(st['P'])}"], numbers), ""]
    eq_m = numbers.last + 1
    eq_lam = eq_m + 2
    out += [f"{h}# FIM statistics", "",
            f"Finite width (left) and leading order in M (right) ({eq_m})-({eq_lam}), with E G_tt and E G_tt' "
            f"from ({eq_gd}) and ({eq_go})." + _lambda_note(which, kind, eq_lam, eq_gd, eq_go), "",
            _display([f"m &= {_tex(st['m'])} &\\quad m &\\simeq {_tex(st['m_l'])}",
                      f"s &= {_tex(st['s'])} &\\quad s &\\simeq {_tex(st['s_l'])}",
                      f"{_LAMBDA_TEX[which]} &= {_tex(st['lam'])} &\\quad {_LAMBDA_TEX[which]} &\\simeq "
                      f"{_tex(st['lam_l'])}"], numbers), ""]
    if point is not None:
        sw, sb = point
        free = {s.name for s in d.free_symbols}
        values = {}
        if "sigma_w2" in free:
            values["sigma_w2"] = sw
        if "sigma_b2" in free:
            values["sigma_b2"] = sb
        # substitute only what is shown (the full statistics are long and not needed here)
        mapping = {layer_symbol(k): v for k, v in values.items()}

        def at(value: Any) -> Any:
            return value.subs(mapping) if isinstance(value, sympy.Basic) else value

        names = ", ".join(f"{_tex(layer_symbol(k))} = {_tex(v)}" for k, v in values.items())
        out += [f"{h}# Exact values at {('$' + names + '$') if names else 'this network'}", ""]
        rows = []
        for p in d.order.layers[1:]:
            for k in ("qhat1", "qhat2", "qtilde1", "qtilde1_mean", "qtilde2", "qtilde2_same"):
                v = at(getattr(p, k))
                if v is not None and not (isinstance(v, sympy.Basic) and v.is_zero):
                    rows.append(_value_row(_tex(order_parameter_symbol(k, p.layer)), v))

        lead = d.leading
        gd, go = at(lead["gram_diag"]), at(lead["gram_offdiag"])
        lam = at(lead["lambda_max"])
        shown = _which_eigenvalue(lam, gd + (T - 1) * go, gd - go)
        lam_tex = {"outlier": r"\lambda_{\max} = \lambda_{\mathrm{outlier}}" if kind == "prediction"
                   else r"\lambda_{\mathrm{outlier}}",
                   "bulk": r"\lambda_{\mathrm{bulk}}", None: r"\lambda_{\max}"}[shown]
        lam_row = _value_row(lam_tex, lam, r"\quad\text{(leading order)}")
        rows += [_value_row(r"\kappa_{1}", at(d.kappa1)), _value_row(r"\kappa_{2}", at(d.kappa2)), lam_row]
        what = {"outlier": "the outlier E G_tt + (T - 1) E G_tt'", "bulk": "the bulk scale E G_tt - E G_tt'",
                None: "lambda_max"}[shown]
        lead = (f"the last line is {what} at this point (leading order)" if lam_row is not None
                else "lambda_max's exact form at this point is too long to show")
        out += [f"Exact where the closed form is short, else to 12 digits (longer ones are left out); {lead}:",
                "", _display([row for row in rows if row], numbers), ""]
    if d.notes:
        out += ["Notes: " + " ".join(f"{n}." for n in d.notes), ""]
    return out


_LONG = 600  # characters of LaTeX beyond which a value is shown numerically


def _value_row(lhs: str, value: Any, suffix: str = "") -> str | None:
    """'lhs &= exact' when the exact form is short, 'lhs &\\approx 12 digits' for a long number, else None."""
    value = _tidy(value)
    text = _tex(value)
    if len(text) <= _LONG:
        return f"{lhs} &= {text}{suffix}"
    if isinstance(value, sympy.Basic) and value.is_number:
        return f"{lhs} &\\approx {_tex(sympy.Float(sympy.N(value, 15), 12))}{suffix}"
    return None


def _tidy(expr: Any) -> Any:
    """A short exact form: together/factor for rational functions, else sympy's own simplification of
    nested radicals and inverse trigonometric values (bounded effort, deterministic)."""
    expr = sympy.sympify(expr)
    if expr.is_number:
        return sympy.nsimplify(expr) if expr.is_Rational else sympy.radsimp(expr)
    try:
        return sympy.factor(sympy.together(expr))
    except sympy.PolynomialError:
        return expr


# -- the documents ---------------------------------------------------------------------------------------------


def _header(title: str, what: str) -> list[str]:

    return [f"# {title}", "",
            f"> Generated by `python -m meanfield.documents` (meanfield {__version__}, sympy {sympy.__version__}) "
            "from the code that computes these quantities. Do not edit by hand: `tests/test_documents.py` "
            "regenerates this file and fails when it differs.", "", what, ""]


def _gaussian_section(name: str, numbers: Numbering) -> list[str]:
    """The closed-form Gaussian integrals the activation uses (from meanfield.integrals)."""

    phi = activation(name)
    dphi = phi.derivative
    rows = []
    for f, label in ((phi, r"\phi"), (dphi, r"\phi'")):
        rows.append(f"\\mathbb{{E}}_z\\left[{label}(\\sqrt{{q}}\\, z)^{{2}}\\right] &= "
                    f"{_tex(_tidy(second_moment(f, q)))}")
        rows.append(f"I_{{{label}}}\\left[q_{{1}}, q_{{2}}\\right] &= {_tex(cross_moment(f, q1, q2))}")
    first = numbers.last + 1
    block = _display(rows, numbers)
    return ["## Gaussian integrals", "",
            f"$\\phi(x) = {_tex(phi.expr)}$, $\\phi'(x) = {_tex(dphi.expr)}$; z, z' standard normal, "
            "I_f[q_1, q_2] = E[f(u) f(u')] for (u, u') centred Gaussian with variances q_1 and covariance q_2 "
            f"{numbers.span(first)}:", "", block, ""]


def _activation_document(name: str) -> str:

    title, point = ACTIVATIONS[name]
    sw, sb = layer_symbol("sigma_w2"), layer_symbol("sigma_b2")
    lines = _header(f"{title} networks: recursions, kappa's and FIM statistics",
                    f"Depth L = {DEPTH}, activation {name} in both hidden layers, weight and bias variances "
                    "$\\sigma_w^2$, $\\sigma_b^2$ shared by the layers, all widths M (alpha_l = 1), C outputs, "
                    "inputs with $\\hat q_1^{(0)} = 1$, $\\hat q_2^{(0)} = 0$. One section per normalization "
                    "placement; M, T, C stay symbols. Notation (and the paper's and Neural Tangents' names for "
                    "the same quantities): [notation.md](notation.md). Equations are numbered (n) through the "
                    "document.")
    numbers = Numbering()
    lines += _gaussian_section(name, numbers)
    for placement, heading in PLACEMENTS:
        norms = () if placement == "none" else (parse_norm(placement),)
        net = Network(DEPTH, name, sw, sb, norms=norms)
        lines += _network_sections(net, heading, point, numbers=numbers)
    return "\n".join(lines).rstrip() + "\n"


# -- finite-size corrections -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One finite-size statement of the project: its text and the code that prints its formula.

    ``formula()`` returns LaTeX lines computed by the library, so the document cannot drift from the
    code. ``source`` names the module (or the note) the statement was established in.
    """

    title: str
    statement: str
    formula: Callable[[], list[str]]
    source: str


def _chi_square() -> list[str]:

    return [r"\mathbb{E}\left[\frac{T}{\chi^{2}_{T-1}}\right] &= " + _tex(_tidy(chi2_inverse_moment(T, 1))),
            r"\mathbb{E}\left[\left(\frac{T}{\chi^{2}_{T-1}}\right)^{2}\right] &= "
            + _tex(_tidy(chi2_inverse_moment(T, 2)))]


def _max_inverse_chi_square() -> list[str]:
    """E[max_k T / chi^2_{T-1,k}] over C outputs, by the quadrature the fisher code uses for its bound."""

    Ts, Cs = (8, 16, 32, 64, 256), (1, 4, 10)
    head = r"T \backslash C & " + " & ".join(str(c) for c in Cs)
    rows = [f"{T} & " + " & ".join(f"{expected_max_inverse_chi2(T, c):.4f}" for c in Cs) for T in Ts]
    table = r"\begin{array}{r" + "r" * len(Cs) + "}" + r" \\ ".join([head, *rows]) + r"\end{array}"
    return [r"\mathbb{E}\left[\max_{k \le C} \frac{T}{\chi^{2}_{T-1,k}}\right] &: \quad " + table]


def _normalised_laws() -> list[str]:

    rows = []
    for label, norm in (("batch norm", BatchNorm(1)), ("mean-only batch norm", BatchNorm(1, center_only=True)),
                        ("layer norm", LayerNorm(1))):
        law = norm_forward(Arithmetic("sympy"), norm, q1, q2, T, 1)
        rows.append(f"\\text{{{label} ({law.kind})}}: \\quad (q_{{1}}, q_{{2}}) &\\mapsto "
                    f"\\left({_tex(_tidy(law.q1))},\\; {_tex(_tidy(law.q2))}\\right)")
    return rows


def _plain_corrections() -> list[str]:
    """Finite width minus leading order for a plain ReLU network with symbolic order parameters."""


    st = _structure(derive(Network(DEPTH, "relu", 2, 0)))
    return [r"\mathbb{E}\, G_{tt} - M \kappa_{1}\frac{\alpha}{T} &= " + _tex(_tidy(st["gd"] - st["gd_lead"])),
            r"\mathbb{E}\, G_{tt'} - M \kappa_{2}\frac{\alpha}{T} &= " + _tex(_tidy(st["go"] - st["go_lead"])),
            r"P - \alpha M^{2} &= " + _tex(_tidy(sympy.expand(st["P"] - st["P_lead"])))]


def _full_bn_s_factor() -> list[str]:
    """E s over its value at the expected Gram, for full batch norm on the output: read off the fisher
    code by dividing its s by C (T G_d^2 + T (T-1) G_o^2) / P with the same G_d, G_o and P."""

    st = _structure(derive(Network(DEPTH, "relu", 2, 0, norms=[BatchNorm("last")])))
    naive = C * (T * st["gd"] ** 2 + T * (T - 1) * st["go"] ** 2) / st["P"]
    ratio = sympy.factor(sympy.cancel(st["s"] / naive))
    return [r"\frac{\mathbb{E}\,\|G_{kk}\|_F^{2}}{\|\mathbb{E}\, G_{kk}\|_F^{2}} &= " + _tex(ratio)]


FINDINGS: list[Finding] = [
    Finding("Exact parameter count and bias terms",
            "The finite-width prediction uses the exact P = sum_l M_l (M_{l-1} + 1) and the +1 of each bias "
            "gradient in every Gram entry; with these, m agrees with sampled networks within about 1% from "
            "M = 64 on. Differences to the leading order, for a plain ReLU network of "
            "depth 3 with symbolic order parameters:",
            _plain_corrections, "meanfield.theory.fisher"),
    Finding("Chi-square moments of the batch variance",
            "A batch-normalised unit divides by its batch standard deviation, whose square is "
            "v chi^2_{T-1} / T with v = q_1 - q_2; it does not concentrate as M grows, so expectations carry "
            "the inverse moments:", _chi_square, "meanfield.integrals.sphere"),
    Finding("Laws of a normalised pre-activation",
            "Forward rules exact in T: batch norm puts the unit uniformly on the sphere of radius sqrt(T) in the "
            "complement of the constant vector (second moments 1 and -1/(T-1)); mean-only batch norm keeps a "
            "Gaussian law with the centred moments; layer norm rescales by q_1 and keeps the correlation:",
            _normalised_laws, "meanfield.theory.recursions"),
    Finding("Second moment with full batch norm on the output",
            "With full batch norm on the output, each output's Gram block is sigma_k^{-2} times a projector of "
            "rank T - 2, and the chi-square spread of sigma_k^2 raises E s above its value at the expected Gram "
            "by the factor (for T > 5):", _full_bn_s_factor, "meanfield.theory.fisher"),
    Finding("The largest of C batch variances",
            "With full batch norm on the output the top eigenvalue is set by the output whose batch variance "
            "came out smallest: the lower bound on lambda_max carries E[max_k T / chi^2_{T-1,k}] over the C "
            "independent outputs, which exceeds E[T / chi^2_{T-1}] = T/(T-3) markedly at small T and large C "
            "(values by quadrature):", _max_inverse_chi_square, "meanfield.integrals.sphere, meanfield.theory.fisher"),
]


def _findings_document() -> str:
    lines = _header("Finite-size corrections",
                    "The corrections to the leading-order mean-field theory that the toolkit applies in its "
                    "finite-width predictions (`meanfield.predict`, `meanfield.derive`). Each formula below is "
                    "printed from the code that applies it.")
    numbers = Numbering()
    for number, finding in enumerate(FINDINGS, 1):
        first = numbers.last + 1
        block = _display(finding.formula(), numbers)
        statement = finding.statement.rstrip(":") + f" {numbers.span(first)}:"
        lines += [f"## {number}. {finding.title}", "", statement, "", block, "", f"Source: `{finding.source}`.", ""]
    return "\n".join(lines).rstrip() + "\n"


# -- notation ----------------------------------------------------------------------------------------------------

# (meanfield name in code, its LaTeX, the paper's notation, Neural Tangents' convention, meaning)
NOTATION: tuple[tuple[str, str, str, str, str], ...] = (
    ("`sigma_w2`", r"$\sigma_{w}^{2}$", r"$\sigma_w^2$",
     "`W_std ** 2`: `stax.Dense(..., W_std=...)` takes the standard deviation, so `sigma_w2 = W_std**2`",
     r"weight variance: $W_{ij} \sim \mathcal{N}(0, \sigma_w^2 / M_{l-1})$"),
    ("`sigma_b2`", r"$\sigma_{b}^{2}$", r"$\sigma_b^2$", "`b_std ** 2`", r"bias variance"),
    ("`M`, `alphas`", r"$M_l = \alpha_l M$", r"$M_l = \alpha_l M$", "the widths of `stax.Dense(M_l)`",
     "width of layer l (base width M)"),
    ("`T`, `C`", "$T$, $C$", "$T$, $C$", "batch size, outputs",
     "T inputs in the batch, C output units"),
    ("`qhat1_l`, `qhat2_l`", r"$\hat{q}_{1}^{(l)}$, $\hat{q}_{2}^{(l)}$", r"$\hat q_1^l$, $\hat q_2^l$", "-",
     r"activation moments $\frac{1}{M_l}\sum_i h_i^l(x)^2$, $\frac{1}{M_l}\sum_i h_i^l(x) h_i^l(x')$ "
     r"($\hat q^{0}$: the input's)"),
    ("`q1_l`, `q2_l`", r"$q_{1}^{(l)}$, $q_{2}^{(l)}$", r"$q_1^l$, $q_2^l$",
     r"the NNGP kernel of layer l, $\Sigma^{l}(x, x)$ and $\Sigma^{l}(x, x')$; `nngp` of the network "
     r"$= q^{(L)}$",
     r"pre-activation moments, $q^{(l)} = \sigma_w^2 \hat q^{(l-1)} + \sigma_b^2$"),
    ("`qtilde1_l`, `qtilde2_l`", r"$\tilde{q}_{1}^{(l)}$, $\tilde{q}_{2}^{(l)}$", r"$\tilde q_1^l$, $\tilde q_2^l$",
     r"$\prod_{l' > l} \sigma_w^2 \dot\Sigma^{l'}$, the factor of $\Sigma^l$ in the NTK",
     r"backward moments $\sum_i \partial f(x)/\partial u_i^l \; \partial f(x')/\partial u_i^l$, "
     r"$\tilde q^{(L)} = 1$"),
    ("`alpha`", r"$\alpha$", r"$\alpha$", "-", r"$\alpha = \sum_{l=1}^{L-1} \alpha_l \alpha_{l-1}$ "
     r"($P \simeq \alpha M^2$)"),
    ("`kappa1`, `kappa2`", r"$\kappa_{1}$, $\kappa_{2}$", r"$\kappa_1$, $\kappa_2$",
     r"NTK in NTK parameterization (equal widths, shared $\sigma$'s): "
     r"$\Theta(x, x) = \sigma_w^2 \alpha \kappa_1 + \sigma_b^2 \sum_l \tilde q_1^{(l)}$, "
     r"$\Theta(x, x') = \sigma_w^2 \alpha \kappa_2 + \sigma_b^2 \sum_l \tilde q_2^{(l)}$",
     r"$\kappa_{1,2} = \sum_{l=1}^{L} \frac{\alpha_{l-1}}{\alpha} \tilde q_{1,2}^{(l)} \hat q_{1,2}^{(l-1)}$"),
    ("`FisherStats`, `derive`", r"$F = J^{\top} J / T$, $G = J J^{\top} / T$", r"$F$ (FIM), its dual",
     r"empirical NTK $J_\theta J_\theta^\top$ in NTK parameterization: its weight part is "
     r"$\sigma_w^2 / M_{l-1}$ times meanfield's per layer",
     r"J: the $CT \times P$ Jacobian of the outputs (standard parameterization); F and G share their "
     r"non-zero spectrum"),
    ("`m`, `s`, `lambda_max`", r"$m$, $s$, $\lambda_{\max}$", r"$m_\lambda$, $s_\lambda$, $\lambda_{\max}$",
     "-", r"$\operatorname{tr} F / P$, $\operatorname{tr} F^2 / P$, the largest eigenvalue; to leading "
     r"order $m \simeq C\kappa_1/M$, $s \simeq C\alpha(\kappa_1^2 + (T-1)\kappa_2^2)/T$, "
     r"$\lambda_{\max} \simeq \alpha M (\kappa_2 + (\kappa_1 - \kappa_2)/T)$ (the outlier)"),
    ("`gram_diag`, `gram_offdiag`", r"$\mathbb{E}\, G_{tt}$, $\mathbb{E}\, G_{tt'}$", r"$\alpha M \kappa_{1,2} / T$ "
     "(leading order)", "-", r"expected dual-Gram entries of one output; $\lambda_{\mathrm{outlier}} = "
     r"\mathbb{E} G_{tt} + (T-1)\mathbb{E} G_{tt'}$, $\lambda_{\mathrm{bulk}} = \mathbb{E} G_{tt} - "
     r"\mathbb{E} G_{tt'}$"),
    ("`max_learning_rate`", r"$\eta_{\max} = 2 / \lambda_{\max}$", r"$\eta \simeq 2 / \lambda_{\max}$",
     r"with the loss averaged over the C outputs too (a mean over all CT entries), the Hessian is $F / C$ and "
     r"the stable step $2 C / \lambda_{\max}$",
     r"for the loss $\frac{1}{2T} \sum_t \lVert f(x_t) - y_t \rVert^2$ (summed over outputs)"),
)


def _notation_document() -> str:
    lines = _header("Notation",
                    "meanfield's symbols next to those of Karakida, Akaho and Amari, *Universal statistics of "
                    "Fisher information in deep neural networks: mean field approach* (AISTATS 2019), here "
                    "\"the paper\", and to the conventions of Neural Tangents (NT). meanfield uses the "
                    "standard parameterization of the paper: $u^{(l)} = W^{(l)} h^{(l-1)} + b^{(l)}$ with "
                    r"$W_{ij} \sim \mathcal{N}(0, \sigma_w^2/M_{l-1})$, $b_i \sim \mathcal{N}(0, \sigma_b^2)$; NT's "
                    "default is the NTK parameterization, $u = (\\sigma_w/\\sqrt{M_{l-1}})\\, \\omega h + \\sigma_b "
                    "\\beta$ with unit-variance $\\omega, \\beta$: the same function at initialization, different "
                    "gradients. Variances are written $\\sigma^2$ (`sigma_w2`), NT's arguments are standard "
                    "deviations. Layer indices are superscripts in parentheses, $\\hat{q}_{1}^{(2)}$, never "
                    "powers.")
    lines += ["| meanfield | LaTeX | the paper | Neural Tangents | meaning |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in NOTATION]
    lines += ["", "The NTK row follows from the layer rules: in NTK parameterization the gradient of layer l's "
              r"weights is $(\sigma_w/\sqrt{M_{l-1}})\, \delta^{(l)} h^{(l-1)}$, so layer l contributes "
              r"$(\sigma_w^2 \hat q^{(l-1)} + \sigma_b^2)\, \tilde q^{(l)} = q^{(l)} \tilde q^{(l)}$ and "
              r"$\Theta = \sum_l q^{(l)} \tilde q^{(l)}$, NT's recursion "
              r"$\Theta^{l} = \Sigma^{l} + \sigma_w^2 \dot\Sigma^{l} \Theta^{l-1}$ unrolled; with equal widths "
              r"$\sum_l \hat q^{(l-1)} \tilde q^{(l)} = \alpha \kappa$. In meanfield's standard parameterization "
              r"the same layer contributes $(M_{l-1} \hat q^{(l-1)} + 1)\, \tilde q^{(l)}$ to $T\, \mathbb{E}\, "
              "G_{tt}$ (`gram_diag`), which is $\\alpha M \\kappa_1$ to leading order. "
              "`tests/test_documents.py` checks both statements against the code.", ""]
    return "\n".join(lines).rstrip() + "\n"


# -- public --------------------------------------------------------------------------------------------------


def _index() -> str:
    lines = _header("Derivations", "Documents generated from the toolkit's symbolic theory:")
    for name, (title, _) in ACTIVATIONS.items():
        lines.append(f"- [{title} networks]({name}.md): recursion, kappa's and FIM statistics for every "
                     "normalization placement.")
    lines.append("- [Finite-size corrections](finite-size.md): what the finite-width predictions add to the "
                 "leading order.")
    lines.append("- [Notation](notation.md): meanfield's symbols, the paper's (Karakida, Akaho, Amari 2019) and "
                 "Neural Tangents' conventions side by side.")
    for name, (title, _) in NOTES.items():
        lines.append(f"- [{title}]({name}): {NOTES[name][1]}")
    return "\n".join(lines) + "\n"


# Derivations written while checking the theory against sampled networks. They are prose with the
# numbers measured then (sizes, seeds), kept in the package (meanfield/notes) so the statement and
# the code ship together; the document is the note under a generated header.
NOTES: dict[str, tuple[str, str]] = {
    "theory-corrections.md": ("Corrections to the leading-order theory", "the backward state below a batch norm, the exact-in-T "
                              "hidden batch-norm rule, the sphere law for non-homogeneous activations, when "
                              "lambda_max is a prediction; with the sampled evidence."),
    "rmt.md": ("Finite-width lambda_max and s (random-matrix model)", "the derived model behind "
               "predict(..., finite_width='rmt') (and the measured one behind 'rmt-measured'), what is derived "
               "and what is still approximate."),
    "corrections.md": ("O(1/M) corrections of the Gram means, m, s and the kappa's", "the derived finite-width "
                       "recursion behind predict(..., finite_width='1/M'), checked against sampled networks."),
}


def _note_document(name: str) -> str:
    from importlib.resources import files

    text = files("meanfield").joinpath("notes", name).read_text(encoding="utf-8")
    return ("<!-- generated by meanfield.documents from meanfield/notes/" + name + "; edit that file -->\n\n"
            + text.rstrip() + "\n")


DOCUMENTS: dict[str, Callable[[], str]] = {
    "README.md": _index,
    **{f"{name}.md": (lambda name=name: _activation_document(name)) for name in ACTIVATIONS},
    "finite-size.md": _findings_document,
    "notation.md": _notation_document,
    **{name: (lambda name=name: _note_document(name)) for name in NOTES},
}


def generate() -> dict[str, str]:
    """Every document: file name -> Markdown text (deterministic for a given meanfield and sympy).

    Example:
        >>> sorted(generate())  # doctest: +SKIP
        ['README.md', 'erf.md', 'finite-size.md', 'linear.md', 'relu.md']
    """
    return {name: make() for name, make in DOCUMENTS.items()}


def write_derivations(folder: str | os.PathLike = "derivations") -> list[Path]:
    """Write :func:`generate`'s documents into ``folder`` (created if missing); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in generate().items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def network_markdown(net: Any) -> str:
    """The derivation of one network as Markdown sections (``meanfield derive --markdown``)."""
    return "\n".join(_network_sections(net, f"Derivation: {net.describe()}", None)).rstrip() + "\n"


def network_latex(net: Any) -> str:
    """The derivation of one network as LaTeX: one aligned block of rules and statistics (``--latex``)."""

    d = derive(net)
    return "\\begin{aligned}\n" + " \\\\\n".join(d.latex_lines()) + "\n\\end{aligned}"


def network_text(net: Any) -> str:
    """The derivation of one network as a readable table (``meanfield derive``)."""

    return str(derive(net))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meanfield.documents [DIR]``: regenerate derivations/ (default ./derivations)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for path in write_derivations(argv[0] if argv else "derivations"):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
