"""Exported LaTeX is valid: parse it back with sympy's LaTeX parser and compare with the source expression.

The sample: the recursion rules and statistics of derived networks (every normalization placement for
ReLU, some for erf and linear), the Gram entries and kappa's in terms of the order parameters (as in
derivations/*.md) and the closed-form Gaussian integrals.

sympy's lark grammar reads a smaller dialect than LaTeX itself, so the text is translated before
parsing, without changing its meaning: each project symbol's typeset name (e.g. ``\\hat{q}_{1}^{(2)}``)
becomes a placeholder ``Q_{ab}`` that is mapped back to the symbol afterwards; ``\\pi`` likewise;
``\\operatorname{acos}`` becomes ``\\arccos`` (same function); ``\\left`` / ``\\right`` are dropped;
and a product written as juxtaposition before a parenthesis gets an explicit ``\\cdot`` (the grammar
otherwise also offers "function application", which no meanfield expression contains). Parsed and
source expressions are then compared numerically at random points (complex arithmetic, so a point
outside a square root's real domain still compares like with like).
"""

from __future__ import annotations

import random
import re
import string

import pytest
import sympy
from sympy.core.function import AppliedUndef

pytest.importorskip("lark")
from sympy.parsing.latex import parse_latex  # noqa: E402

import meanfield as mf  # noqa: E402
from meanfield import documents  # noqa: E402
from meanfield.spec.symbols import LATEX_NAMES, layer_symbol  # noqa: E402

from meanfield.printing import latex

_FUNCTIONS = {r"\operatorname{acos}": r"\arccos", r"\operatorname{asin}": r"\arcsin",
              r"\operatorname{atan}": r"\arctan"}


MAX_LENGTH = 400  # characters of LaTeX


def _placeholder(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = string.ascii_lowercase[rest] + letters
    return f"Q_{{{letters}}}"


def to_parser_dialect(tex: str) -> tuple[str, dict[str, sympy.Basic]]:
    """Translate meanfield's LaTeX into the lark grammar's dialect; return it and placeholder -> object."""
    back: dict[str, sympy.Basic] = {}
    names = sorted(((name, sym) for sym, name in LATEX_NAMES.items() if name != sym.name),
                   key=lambda item: -len(item[0]))
    for index, (name, sym) in enumerate(names):
        if name in tex:
            holder = _placeholder(index)
            tex = tex.replace(name, holder)
            back[holder] = sym
    if r"\pi" in tex:
        tex = re.sub(r"\\pi(?![a-zA-Z])", "Q_{pi}", tex)
        back["Q_{pi}"] = sympy.pi
    for old, new in _FUNCTIONS.items():
        tex = tex.replace(old, new)
    tex = re.sub(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])", "", tex)
    # products first (a function's argument is still braced here, so it is not mistaken for one):
    # juxtaposed factors get an explicit \cdot, except after a command name (\sqrt x, \cdot x)
    tex = re.sub(r"(\\?[A-Za-z]*[A-Za-z0-9})])(\s*(?=\()|\s+(?=[A-Za-z0-9{]|\\(?!cdot(?![A-Za-z]))))",
                 lambda m: m.group(0) if m.group(1).startswith("\\") else m.group(1) + r" \cdot ", tex)
    tex = _unbrace_arguments(tex)
    return tex, back


def _resolve(parsed, rng: random.Random):
    """An ambiguous parse (a lark Tree '_ambig') -> its readings that are plain expressions (no undefined
    function, no relation); they must all agree, else the LaTeX really is ambiguous."""
    if isinstance(parsed, sympy.Basic):
        return parsed
    readings = [_resolve(child, rng) for child in getattr(parsed, "children", [])]
    readings = [r for r in readings if isinstance(r, sympy.Expr) and not r.atoms(AppliedUndef)]
    if not readings:
        raise ValueError(f"no reading of an ambiguous parse is an expression: {parsed}")
    for other in readings[1:]:
        if not numerically_equal(readings[0], other, rng):
            raise ValueError(f"ambiguous LaTeX: {readings[0]} vs {other}")
    return readings[0]


def _unbrace_arguments(tex: str) -> str:
    r"""``\arcsin{(x)}`` -> ``\arcsin(x)``: sympy braces a function's parenthesised argument, and the lark
    grammar reads a braced group followed by more terms ambiguously (the argument may swallow them)."""
    out, i = [], 0
    functions = tuple(_FUNCTIONS.values()) + (r"\sin", r"\cos", r"\tan", r"\exp", r"\log")
    while i < len(tex):
        match = next((f for f in functions if tex.startswith(f + "{", i)), None)
        if match is None:
            out.append(tex[i])
            i += 1
            continue
        start = i + len(match)
        depth, j = 0, start
        while j < len(tex):
            depth += {"{": 1, "}": -1}.get(tex[j], 0)
            if depth == 0:
                break
            j += 1
        inner = tex[start + 1:j].strip()
        if inner.startswith("(") and inner.endswith(")"):
            out.append("{" + match + _unbrace_arguments(inner) + "}")  # the application as one group
        else:
            out.append(match + "{" + _unbrace_arguments(tex[start + 1:j]) + "}")
        i = j + 1
    return "".join(out)


def parse_back(tex: str, source: sympy.Expr) -> sympy.Expr:
    translated, back = to_parser_dialect(tex)
    parsed = _resolve(parse_latex(translated, backend="lark"), random.Random(0))
    by_name = {str(sympy.Symbol(h.replace("{", "").replace("}", ""))): obj for h, obj in back.items()}
    by_name.update({s.name: s for s in source.free_symbols})
    by_name["e"] = sympy.E
    mapping = {}
    for sym in parsed.free_symbols:
        key = sym.name.replace("{", "").replace("}", "")
        if key in by_name:
            mapping[sym] = by_name[key]
        elif sym.name in by_name:
            mapping[sym] = by_name[sym.name]
    return parsed.xreplace(mapping)


def numerically_equal(a: sympy.Expr, b: sympy.Expr, rng: random.Random, points: int = 3) -> bool:
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    for _ in range(points):
        values = {s: sympy.Rational(rng.randint(11, 97), rng.randint(3, 13)) for s in symbols}
        x = complex(sympy.N(a.xreplace(values), 30))
        y = complex(sympy.N(b.xreplace(values), 30))
        if abs(x - y) > 1e-12 * max(1.0, abs(x)):
            return False
    return True


def _parseable(expr: sympy.Basic) -> bool:
    """Expressions the lark grammar can represent: no unevaluated integrals/expectations, no special
    functions it lacks (erf, Heaviside)."""
    if not isinstance(expr, sympy.Expr) or expr.is_number and expr.is_Rational:
        return False
    bad = (sympy.Integral, sympy.erf, sympy.Heaviside, sympy.Max, sympy.Min, sympy.Piecewise)
    if any(expr.has(cls) for cls in bad):
        return False
    return all(type(f).__module__.startswith("sympy.") for f in expr.atoms(sympy.Function))


def sample_expressions() -> list[tuple[str, sympy.Expr]]:
    sw, sb = layer_symbol("sigma_w2"), layer_symbol("sigma_b2")
    nets = [("relu", p) for p, _ in documents.PLACEMENTS] + [("erf", "none"), ("erf", "layer:2"),
                                                             ("linear", "batch:2")]
    out = []
    from meanfield.cli import parse_norm

    for act, placement in nets:
        norms = () if placement == "none" else (parse_norm(placement),)
        d = mf.derive(mf.Network(3, act, sw, sb, norms=norms))
        for rule in d.rules:
            out.append((f"{act}/{placement} rule {rule.lhs}", rule.rhs))
        st = documents._structure(d)
        for key in ("gd", "go", "kappa1", "kappa2", "m_l", "s_l", "lam_l"):
            out.append((f"{act}/{placement} {key} (order parameters)", st[key]))
        out.append((f"{act}/{placement} leading lambda_max", d.leading["lambda_max"]))
    out.append(("relu kappa1 closed form", mf.derive(mf.Network(3, "relu", sw, sb)).kappa1))
    from meanfield.spec.symbols import q, q1, q2

    for name in ("relu", "erf", "linear", "abs", "step", "erf_prime"):
        phi = mf.activation(name)
        out.append((f"E[{name}^2]", mf.second_moment(phi, q)))
        out.append((f"I_{name}", mf.cross_moment(phi, q1, q2)))
    return [(label, sympy.sympify(e)) for label, e in out]


@pytest.fixture(scope="module")
def expressions():
    return sample_expressions()


SAMPLE = 30  # expressions parsed per run (all ~220 candidates pass; the parser takes ~0.2-1 s each)


def test_exported_latex_parses_back_to_the_same_expression(expressions):
    rng = random.Random(20240611)
    # the lark (Earley) parser is superlinear in the length: keep the sample's parse time bounded
    candidates = [(label, expr, latex(expr)) for label, expr in expressions if _parseable(expr)]
    candidates = [c for c in candidates if len(c[2]) <= MAX_LENGTH]
    chosen = random.Random(7).sample(candidates, min(SAMPLE, len(candidates)))
    checked, failures = 0, []
    for label, expr, tex in chosen:
        try:
            parsed = parse_back(tex, expr)
        except Exception as err:  # noqa: BLE001 - report every failure with its LaTeX
            failures.append(f"{label}: {type(err).__name__}: {str(err)[:120]}\n    {tex[:300]}")
            continue
        if not isinstance(parsed, sympy.Expr) or not numerically_equal(parsed, expr, rng):
            failures.append(f"{label}: parsed {str(parsed)[:200]} != {str(expr)[:200]}\n    {tex[:300]}")
        checked += 1
    assert not failures, "\n".join(failures)
    assert len(candidates) >= 150, len(candidates)  # the pool: rules, structure, closed forms
    assert checked == min(SAMPLE, len(candidates))


def test_the_roundtrip_detects_a_wrong_expression():
    """The comparison can fail: LaTeX of one expression does not parse back to a different one."""
    sw = layer_symbol("sigma_w2")
    expr = sympy.acos(sw / (sw + 1)) * sw
    tex = latex(expr)
    assert numerically_equal(parse_back(tex, expr), expr, random.Random(1))
    assert not numerically_equal(parse_back(tex, expr), expr.subs(sw, sw + sympy.Rational(1, 10)),
                                 random.Random(1))


def test_translation_keeps_symbol_names_apart():
    from meanfield.spec.symbols import order_symbol

    a, b = order_symbol("q1", 1), order_symbol("qhat1", 1)
    tex, back = to_parser_dialect(latex(a * b + a))
    assert set(back.values()) == {a, b}
    assert "q" not in re.sub(r"Q_\{[a-z]+\}", "", tex).replace(r"\cdot", "")
