"""All LaTeX policy in one place: symbol names, Gaussian expectations, network specs.

:func:`latex` prints sympy expressions with the notation of :data:`meanfield.spec.symbols.LATEX_NAMES`
(``qhat1_2`` -> ``\\hat{q}_{1}^{(2)}``) and dispatches other objects to their own ``_latex()`` or
``_repr_latex_()``. Gaussian expectations print in the notation of the theory notes: I_phi[q1, q2] for the
cross moment and E[phi(sqrt(q) z)^2] for the second moment, phi written as its catalogue name
(``\\tanh``, ``\\operatorname{gelu}``), a derivative of one as ``\\tanh'``, or, for user expressions, as
``(x \\mapsto ...)`` (the names live in :mod:`meanfield.integrals.notation`, below the expectation classes).

:func:`parse_latex` (also ``meanfield.latex.parse``) reads all of it back into equal sympy expressions: a
small recursive-descent reader of sympy's printer dialect plus the project's symbols and expectations, with
no parser dependency (sympy's own ``parse_latex`` needs antlr4 or lark and reads neither ``\\sigma_{w}^{2}``
as one symbol nor the expectations).
"""

from __future__ import annotations

from typing import Any

import sympy

from .integrals.notation import FUNCTION_NAMES, catalogue_name, latex_activation, latex_expectation

__all__ = ["latex", "latex_network", "latex_activation", "latex_expectation", "parse_latex", "catalogue_name"]


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


# -- reading LaTeX back ------------------------------------------------------------------------------------------

_SPACES = (r"\displaystyle", r"\qquad", r"\quad", r"\,", r"\;", r"\:", r"\!", r"\ ", "&")
_FUNCTIONS_IN = {
    r"\tanh": sympy.tanh, r"\sinh": sympy.sinh, r"\cosh": sympy.cosh, r"\sin": sympy.sin, r"\cos": sympy.cos,
    r"\tan": sympy.tan, r"\exp": sympy.exp, r"\log": sympy.log, r"\ln": sympy.log, r"\arccos": sympy.acos,
    r"\arcsin": sympy.asin, r"\arctan": sympy.atan, r"\max": sympy.Max, r"\min": sympy.Min,
    r"\theta": sympy.Heaviside, r"\Gamma": sympy.gamma, r"\operatorname{acos}": sympy.acos,
    r"\operatorname{asin}": sympy.asin, r"\operatorname{atan}": sympy.atan, r"\operatorname{erf}": sympy.erf,
    r"\operatorname{erfc}": sympy.erfc, r"\operatorname{sign}": sympy.sign, r"\operatorname{B}": sympy.beta,
    r"\operatorname{atan}_{2}": sympy.atan2,
}
_GREEK = ("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi omicron "
          "rho sigma tau upsilon phi varphi chi psi omega Delta Gamma Lambda Omega Phi Pi Psi Sigma Theta "
          "Upsilon Xi").split()


def _layer_patterns() -> list[tuple[Any, Any]]:
    """Regexes of the layer-indexed project symbols (any layer, registered or not) -> symbol factory."""
    import re

    from .spec.symbols import BATCH_NORM_SUMS, ORDER_PARAMETERS, batch_norm_symbol, layer_symbol, order_symbol

    out = []
    for kind, (_, stem) in ORDER_PARAMETERS.items():
        out.append((re.compile(re.escape(stem) + r"\^\{\((\d+)\)\}"), lambda n, k=kind: order_symbol(k, n)))
    for kind, stem in BATCH_NORM_SUMS.items():
        out.append((re.compile(re.escape(stem) + r"\((\d+)\)\}"), lambda n, k=kind: batch_norm_symbol(k, n)))
    for kind, stem in (("sigma_w2", r"\sigma_{w}^{2\,"), ("sigma_b2", r"\sigma_{b}^{2\,")):
        out.append((re.compile(re.escape(stem) + r"\((\d+)\)\}"), lambda n, k=kind: layer_symbol(k, n)))
    out.append((re.compile(r"\\alpha_\{(\d+)\}"), lambda n: layer_symbol("alpha", n)))
    return out


class _Reader:
    """Recursive descent over the dialect :func:`latex` writes (sympy's printer plus the expectations)."""

    def __init__(self, text: str, names: dict[str, sympy.Basic]):
        self.s, self.i = text, 0
        self.names = sorted(names.items(), key=lambda item: -len(item[0]))
        self.patterns = _layer_patterns()
        self.local: dict[str, sympy.Basic] = {}

    # -- characters ---------------------------------------------------------------------------------
    def error(self, what: str) -> Exception:
        from .errors import InvalidArgument

        shown = self.s[max(0, self.i - 30):self.i] + " <here> " + self.s[self.i:self.i + 30]
        return InvalidArgument("text", shown, f"LaTeX as meanfield.latex writes it ({what})")

    def skip(self) -> None:
        while self.i < len(self.s):
            if self.s[self.i].isspace():
                self.i += 1
                continue
            for sp in _SPACES:
                if self.s.startswith(sp, self.i) and not (sp[-1].isalpha() and self._letter_at(self.i + len(sp))):
                    self.i += len(sp)
                    break
            else:
                return

    def _letter_at(self, j: int) -> bool:
        return j < len(self.s) and self.s[j].isalpha()

    def at(self, token: str) -> bool:
        self.skip()
        if not self.s.startswith(token, self.i):
            return False
        return not (token[-1].isalpha() and token[0] == "\\" and self._letter_at(self.i + len(token)))

    def accept(self, token: str) -> bool:
        if self.at(token):
            self.i += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.accept(token):
            raise self.error(f"expected {token!r}")

    def done(self) -> bool:
        self.skip()
        return self.i >= len(self.s)

    # -- grammar ------------------------------------------------------------------------------------
    def relation(self) -> sympy.Basic:
        left = self.sum()
        for token, rel in (("=", sympy.Eq), (r"\leq", sympy.Le), (r"\geq", sympy.Ge), (r"\le", sympy.Le),
                           (r"\ge", sympy.Ge), ("<", sympy.Lt), (">", sympy.Gt)):
            if self.accept(token):
                return rel(left, self.sum())
        return left

    def sum(self) -> sympy.Expr:
        terms = []
        sign = -1 if self.accept("-") else (self.accept("+") and 1) or 1
        terms.append(sign * self.term())
        while True:
            if self.accept("+"):
                terms.append(self.term())
            elif self.accept("-"):
                terms.append(-self.term())
            else:
                return sympy.Add(*terms)

    _STOP = ("+", "-", "=", "<", ">", ")", "}", "]", ",", r"\right", r"\\", r"\end", r"\leq", r"\geq",
             r"\le", r"\ge", r"\text", "^", "'")

    def term(self) -> sympy.Expr:
        factors = [self.power()]
        while not self.done():
            if self.accept(r"\cdot") or self.accept(r"\times"):
                factors.append(self.power())
                continue
            if any(self.at(stop) for stop in self._STOP):
                break
            factors.append(self.power())
        return sympy.Mul(*factors)

    def power(self) -> sympy.Expr:
        base = self.atom()
        while self.accept("^"):
            base = base ** self.argument()
        return base

    def argument(self) -> sympy.Expr:
        """A superscript / \\frac operand: a braced group or a single character."""
        if self.accept("{"):
            value = self.sum()
            self.expect("}")
            return value
        self.skip()
        ch = self.s[self.i:self.i + 1]
        if ch.isdigit():
            self.i += 1
            return sympy.Integer(ch)
        return self.atom()

    def atom(self) -> sympy.Expr:  # noqa: C901 - one branch per construct of the dialect
        import re

        self.skip()
        s, i = self.s, self.i
        number = re.compile(r"\d+(\.\d*)?").match(s, i)
        if number:
            self.i = number.end()
            text = number.group(0)
            return sympy.Float(text) if "." in text else sympy.Integer(text)
        if self.accept("{"):
            value = self.sum()
            self.expect("}")
            return value
        if self.accept(r"\left("):
            value = self.sum()
            self.expect(r"\right)")
            return value
        if self.accept("("):
            value = self.sum()
            self.expect(")")
            return value
        if self.accept(r"\left|"):
            value = self.sum()
            self.expect(r"\right|")
            return sympy.Abs(value)
        if self.accept(r"\frac"):
            num = self.argument()
            return num / self.argument()
        if self.accept(r"\sqrt"):
            if self.accept("["):
                n = self.sum()
                self.expect("]")
                return sympy.root(self.argument(), n)
            return sympy.sqrt(self.argument())
        if self.accept(r"\mathbb{E}"):
            return self.expectation()
        if self.accept("I_{"):
            return self.cross_moment()
        if self.accept(r"\begin{cases}"):
            return self.cases()
        for token, value in ((r"\pi", sympy.pi), (r"\infty", sympy.oo)):
            if self.accept(token):
                return value
        for token in sorted(_FUNCTIONS_IN, key=len, reverse=True):
            if self.accept(token):
                return self.application(_FUNCTIONS_IN[token])
        for pattern, make in self.patterns:
            match = pattern.match(s, i)
            if match:
                self.i = match.end()
                return make(int(match.group(1)))
        for name, sym in self.names:
            if s.startswith(name, i) and not (name[-1].isalpha() and self._letter_at(i + len(name))):
                self.i = i + len(name)
                return sym
        return self.symbol()

    def symbol(self) -> sympy.Expr:
        import re

        s, i = self.s, self.i
        match = re.compile(r"\\(hat|tilde|bar|mathrm|mathit|text)\{([^{}]*)\}|\\([A-Za-z]+)|([A-Za-z]+)").match(s, i)
        if not match:
            raise self.error("expected an expression")
        if match.group(1):
            name = match.group(2) + ("" if match.group(1) in ("mathrm", "mathit", "text") else match.group(1))
        elif match.group(3):
            if match.group(3) not in _GREEK:
                raise self.error(f"unknown command \\{match.group(3)}")
            name = match.group(3)
        else:
            name = match.group(4)
        self.i = match.end()
        sub = re.compile(r"_\{([^{}]*)\}|_([A-Za-z0-9])").match(s, self.i)
        if sub:
            self.i = sub.end()
            name += "_" + (sub.group(1) if sub.group(1) is not None else sub.group(2))
        if name in self.local:
            return self.local[name]
        if name == "e":
            return sympy.E
        if name == "i":
            return sympy.I
        return sympy.Symbol(name)

    def application(self, func: Any) -> sympy.Expr:
        """``\\tanh^{2}{\\left(x \\right)}``, ``\\max\\left(a, b\\right)``, ``\\log(x)``."""
        exponent = self.argument() if self.accept("^") else None
        braced = self.accept("{")
        if self.accept(r"\left("):
            close = r"\right)"
        elif self.accept("("):
            close = ")"
        elif braced:
            close = None
        else:
            raise self.error("expected a function argument")
        args = [self.sum()]
        while self.accept(","):
            args.append(self.sum())
        if close:
            self.expect(close)
        if braced:
            self.expect("}")
        # Max/Min as written: evaluating would compare the (long) arguments pairwise, and the printed
        # ones were already reduced
        value = func(*args, evaluate=False) if func in (sympy.Max, sympy.Min) else func(*args)
        return value ** exponent if exponent is not None else value

    def cases(self) -> sympy.Expr:
        pieces = []
        while True:
            value = self.sum()
            if self.accept(r"\text{otherwise}"):
                cond = sympy.true
            else:
                self.expect(r"\text{for}")
                cond = self.relation()
            pieces.append((value, cond))
            if self.accept(r"\end{cases}"):
                return sympy.Piecewise(*pieces)
            self.expect(r"\\")

    # -- the expectations ---------------------------------------------------------------------------
    def activation(self) -> Any:
        """An activation as :func:`latex_activation` names it."""
        from .spec.activations import X, Activation, activation

        if self.accept(r"\left(") :
            self.expect("x")
            self.expect(r"\mapsto")
            saved, self.local = self.local, {**self.local, "x": X}
            body = self.sum()
            self.local = saved
            self.expect(r"\right)")
            return Activation(name=str(body), expr=body, family="custom")
        for family, name in sorted(FUNCTION_NAMES.items(), key=lambda item: -len(item[1])):
            if self.accept(name):
                prime = self.accept("'")
                params = {}
                if self.at("_{"):
                    self.expect("_{")
                    while not self.accept("}"):
                        key = self.symbol()
                        self.expect("=")
                        params[str(key)] = self.sum()
                        self.accept(",")
                f = activation(family, **params)
                return f.derivative if prime else f
        raise self.error("expected an activation")

    def expectation(self) -> sympy.Expr:
        from .integrals.symbolic import GaussianExpectation

        if self.accept("_{S_{"):
            return self.sphere()
        if self.accept(r"\left["):
            return self.max_inverse_chi2()
        self.expect("_{z}")
        self.expect(r"\left[")
        f = self.activation()
        squared_name = self.accept("^{2}")
        self.expect(r"\left(")
        arg = self.sum()
        self.expect(r"\right)")
        if not squared_name:
            self.expect("^{2}")
        self.expect(r"\right]")
        q = (arg / sympy.Symbol("z")) ** 2
        if q.has(sympy.Symbol("z")):
            raise self.error("expected the argument sqrt(q) z")
        return GaussianExpectation.of(f, q, q)

    def max_inverse_chi2(self) -> sympy.Expr:
        r"""``\mathbb{E}\left[\max_{k \le C} \frac{T}{\chi^{2}_{T - 1,\,k}}\right]`` (full batch norm on the output)."""
        self.expect(r"\max_{k")
        self.expect(r"\le")
        count = self.sum()
        self.expect("}")
        self.expect(r"\frac{")
        T = self.sum()
        self.expect("}{")
        self.expect(r"\chi^{2}_{")
        self.sum()
        self.expect(",")
        self.expect("k")
        self.expect("}}")
        self.expect(r"\right]")
        return _function_class("ExpectedMaxInverseChi2")(T, count)

    def cross_moment(self) -> sympy.Expr:
        from .integrals.symbolic import GaussianExpectation

        f = self.activation()
        self.expect("}")
        self.expect(r"\left[")
        q1 = self.sum()
        self.expect(",")
        q2 = self.sum()
        self.expect(r"\right]")
        return GaussianExpectation.of(f, q1, q2)

    def sphere(self) -> sympy.Expr:
        from .integrals.sphere import SphereExpectation

        T = self.sum()
        self.expect("}}")
        self.expect(r"\left[")
        g = self.activation()
        self.expect("(u_a)")
        if self.accept("^{2}"):
            kind = "second"
        else:
            self.activation()
            self.expect("(u_b)")
            kind = "cross"
        self.expect(r"\right]")
        return SphereExpectation.of(g, T, kind)


def _function_class(name: str) -> Any:
    """A sympy Function subclass of the package by class name. meanfield.theory prints through this module,
    so importing it from here would close an import cycle; its classes exist once meanfield is imported."""
    todo = [sympy.Function]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name and cls.__module__.startswith("meanfield."):
            return cls
        todo.extend(cls.__subclasses__())
    raise LookupError(name)


def parse_latex(text: str, symbols: Any = None) -> sympy.Basic:
    r"""The sympy expression of LaTeX that :func:`latex` wrote: ``parse_latex(latex(e)) == e``.

    Reads sympy's printer dialect with the project's notation: order parameters of any layer
    (``\hat{q}_{1}^{(2)}``), :math:`\sigma_{w}^{2}` and the layer parameters, Gaussian expectations with and
    without closed forms (``\mathbb{E}_{z}[...]``, ``I_{\phi}[q_1, q_2]``, derivatives ``\tanh'``,
    custom ``x \mapsto ...``), sphere expectations, ``\frac``, ``\sqrt``, functions, ``cases`` and one
    relation (``a = b`` -> ``Eq``). Surrounding ``$`` and ``\displaystyle`` are ignored. Other symbols are
    read by name (``\sigma_{w}`` -> ``sigma_w``); pass ``symbols`` (sympy symbols) to get yours back with
    their assumptions.

    Args:
        text: one expression or relation, as :func:`latex` prints it.
        symbols: optional iterable of sympy symbols to match by their LaTeX.

    Returns:
        The sympy expression (or relation).

    Raises:
        InvalidArgument: text that is not in the dialect, with the place it stops.

    Example:
        >>> import meanfield as mf
        >>> from meanfield.spec.symbols import layer_symbol, order_symbol
        >>> e = layer_symbol("sigma_w2") * mf.cross_moment(mf.activation("tanh").derivative,
        ...                                                order_symbol("q1", 1), order_symbol("q2", 1))
        >>> latex(e)
        "\\sigma_{w}^{2} I_{\\tanh'}\\left[q_{1}^{(1)}, q_{2}^{(1)}\\right]"
        >>> parse_latex(latex(e)) == e
        True
    """
    from .spec.symbols import LATEX_NAMES

    names = {tex: sym for sym, tex in LATEX_NAMES.items()}
    for sym in symbols or ():
        names[sympy.latex(sym)] = sym
    text = text.strip()
    for open_, close in (("$$", "$$"), ("$", "$")):
        if text.startswith(open_) and text.endswith(close) and len(text) > 2 * len(open_):
            text = text[len(open_):-len(close)]
            break
    reader = _Reader(text, names)
    value = reader.relation()
    if not reader.done():
        raise reader.error("unexpected text after the expression")
    return value


latex.parse = parse_latex  # type: ignore[attr-defined]
