"""The words of the network grammar: activations, normalization layers, numbers and the network line.

This module reads and writes the text forms that :class:`~meanfield.spec.network.Network` itself
accepts (it sits below the network, which calls it on its arguments); :mod:`meanfield.spec.grammar`
is the public face of the grammar and adds what needs a built Network (the network line parsed to a
Network, the serialised spec).

* activation: a catalogue name (``relu``), ``name(key=value, ...)`` (``leaky_relu(a=0.2)``), a
  formula in ``x`` (``x*tanh(x)``), a comma list (one per hidden layer); in Python also an
  :class:`~meanfield.spec.activations.Activation`, a sympy expression or ``Lambda``, a mapping
  ``{"expr": ..., "name": ...}`` / ``{"name": ..., "a": ...}`` (TOML tables) or a sequence;
* norm: ``KIND:L`` with KIND ``batch`` (``bn``, ``batchnorm``), ``batch-center`` or ``layer``
  (``ln``, ``layernorm``) and L a layer number or ``last``; a comma list or ``none`` for several;
* network line: ``L=3 relu sigma_w2=2 sigma_b2=0 C=1 alphas=1 norms=none`` (the line
  ``Network.describe()`` prints, with exact numbers and the activations in layer order), followed
  by ``input_q1=...`` / ``input_q2=...`` when they are not the defaults 1 and 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import sympy

from ..errors import InvalidArgument, closest
from .activations import CATALOGUE, X, Activation, activation, catalogue
from .norms import BatchNorm, LayerNorm

__all__ = ["NORM_KINDS", "NETWORK_LINE_KEYS", "split_top_level", "parse_activation", "parse_norm", "parse_norms",
           "parse_value", "parse_values", "activation_text", "value_text", "values_text", "network_text",
           "network_arguments"]

#: The kinds of normalization layer a norm string names.
NORM_KINDS = ("batch", "batch-center", "layer")
# every spelling of a kind -> the kind
_NORM_SPELLINGS = {"batch": "batch", "bn": "batch", "batchnorm": "batch", "batch-norm": "batch",
                   "batch-center": "batch-center", "batch-centre": "batch-center",
                   "layer": "layer", "ln": "layer", "layernorm": "layer", "layer-norm": "layer"}

_NAMED = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)\s*(?:\((.*)\))?", re.DOTALL)
_PARAM = re.compile(r"^$|[A-Za-z_]\w*\s*=(?!=)")  # key=value inside name(...); a formula has none
_ACTIVATION_FORMS = "a catalogue name, name(key=value), a formula in x, or a comma list (one per hidden layer)"


def split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside parentheses: 'leaky_relu(a=0.2),tanh' -> two items.

    Example:
        >>> split_top_level("leaky_relu(a=0.2), Max(0, x)")
        ['leaky_relu(a=0.2)', 'Max(0, x)']
    """
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items]


def _restate(argument: str, value: Any, err: InvalidArgument) -> InvalidArgument:
    """``err`` (raised by a constructor about a part of ``value``) as an error about ``argument``."""
    part = None if err.argument in (argument, "activation", "expr") else f"{err.argument}={err.value!r}"
    hint = "; ".join(h for h in (part, err.hint) if h) or None
    return InvalidArgument(argument, value, err.allowed, hint)


# -- activations ---------------------------------------------------------------------------------


def _one_activation(argument: str, value: Any) -> Activation:
    if isinstance(value, Activation):
        return value
    if isinstance(value, sympy.Lambda):
        if len(value.variables) != 1:
            raise InvalidArgument(argument, value, "a Lambda of one variable, e.g. Lambda(x, x*tanh(x))")
        (var,) = value.variables
        return Activation.from_expr(value.expr.subs(var, X))
    if isinstance(value, sympy.Expr):
        return Activation.from_expr(value)
    if isinstance(value, Mapping):
        table = dict(value)
        if "expr" in table:
            expr = table.pop("expr")
            return Activation.from_expr(expr, name=table.pop("name", None), **table)
        if "name" in table:
            name = table.pop("name")
            return activation(name, **table) if table else _one_activation(argument, name)
        raise InvalidArgument(argument, value, "a table with 'name' (and parameters) or 'expr' (and 'name')")
    if not isinstance(value, str):
        raise InvalidArgument(argument, value, _ACTIVATION_FORMS + ", an Activation, a sympy Lambda or a table")
    text = value.strip()
    named = _NAMED.fullmatch(text)
    if named and (named.group(2) is None or all(_PARAM.match(item) for item in split_top_level(named.group(2)))):
        name, inner = named.group(1), named.group(2) or ""
        known = name.lower().replace("-", "_") in catalogue()
        if named.group(2) is None and not known and (name == "x" or "-" in name):
            return Activation.from_expr(text)  # a formula after all: 'x', 'x-1', 'tanh-x' is not a name
        params = {}
        for pair in filter(None, split_top_level(inner)):
            key, eq, number = pair.partition("=")
            if not eq or not key.strip():
                raise InvalidArgument(argument, value, "parameters as name(key=number), e.g. 'leaky_relu(a=0.2)'")
            try:
                number = parse_value(number, argument=f"{name}.{key.strip()}")
                if isinstance(number, sympy.Basic) and not number.is_number:
                    raise InvalidArgument(key, number, "a number")
            except InvalidArgument:
                raise InvalidArgument(argument, value, "numeric parameters as name(key=number), "
                                      "e.g. 'leaky_relu(a=0.2)'") from None
            # text numbers are floats, as they always were (leaky_relu(a=1) is a = 1.0)
            params[key.strip()] = float(number) if isinstance(number, int) else number
        return activation(name, **params)
    return Activation.from_expr(text)


def parse_activation(value: Any, argument: str = "activation") -> Activation | tuple[Activation, ...]:
    """One activation, or a tuple of one per hidden layer, from any accepted form.

    Text: a catalogue name, ``name(k=v)``, a formula in ``x``, or a comma list of those (one per
    hidden layer). Python: also an Activation, a sympy expression or ``Lambda``, a mapping
    (``{"expr": ..., "name": ...}`` or ``{"name": ..., <parameters>}``) or a sequence of any of these.
    Errors are :class:`~meanfield.InvalidArgument` about ``argument``.

    Example:
        >>> parse_activation("relu").name
        'relu'
        >>> [a.name for a in parse_activation("leaky_relu(a=0.2),tanh")]
        ['leaky_relu(a=0.2)', 'tanh']
        >>> parse_activation("x*tanh(x)").name
        'x*tanh(x)'
        >>> parse_activation({"name": "leaky_relu", "a": 0.2}) == parse_activation("leaky_relu(a=0.2)")
        True
    """
    try:
        if isinstance(value, str):
            items = split_top_level(value)
            if not all(items):
                raise InvalidArgument(argument, value, _ACTIVATION_FORMS)
            acts = tuple(_one_activation(argument, item) for item in items)
            return acts[0] if len(acts) == 1 else acts
        if isinstance(value, (Activation, Mapping, sympy.Basic)):
            return _one_activation(argument, value)
        if isinstance(value, Sequence) and not isinstance(value, bytes):
            if not value:
                raise InvalidArgument(argument, list(value), "one activation per hidden layer (an empty list)")
            acts = []
            for item in value:
                one = parse_activation(item, argument)
                if isinstance(one, tuple):
                    raise InvalidArgument(argument, value, "one activation per element of a per-layer list")
                acts.append(one)
            return tuple(acts)
        return _one_activation(argument, value)
    except InvalidArgument as err:
        if err.argument == argument:
            raise
        raise _restate(argument, value, err) from None


def activation_text(act: Activation) -> str:
    """The text that :func:`parse_activation` reads back to ``act`` (its formula for a custom one).

    Example:
        >>> activation_text(activation("leaky_relu", a=0.2)), activation_text(Activation.from_expr("x*tanh(x)"))
        ('leaky_relu(a=0.2)', 'x*tanh(x)')
    """
    if act.family in CATALOGUE:
        if act.name == act.family:
            return act.name
        return f"{act.family}(" + ", ".join(f"{k}={value_text(v)}" for k, v in act.params) + ")"
    return str(act.expr)


# -- normalization layers ------------------------------------------------------------------------


def parse_norm(value: Any, argument: str = "norms") -> BatchNorm | LayerNorm:
    """``KIND:L`` -> a norm layer; KIND batch (bn, batchnorm), batch-center or layer (ln, layernorm).

    L is a layer number or ``last``. A BatchNorm/LayerNorm is returned as it is.

    Example:
        >>> parse_norm("batch:last")
        BatchNorm(layer='last', center_only=False)
        >>> parse_norm("batch-center:2"), parse_norm("ln:1")
        (BatchNorm(layer=2, center_only=True), LayerNorm(layer=1))
    """
    if isinstance(value, (BatchNorm, LayerNorm)):
        return value
    if not isinstance(value, str):
        raise InvalidArgument(argument, value, "a norm like 'batch:last', 'batch-center:2' or 'layer:1'")
    spelling, sep, layer = value.strip().partition(":")
    spelling = spelling.strip().lower().replace("_", "-")
    kind = _NORM_SPELLINGS.get(spelling)
    layer = layer.strip()
    if kind is None:
        near = closest(spelling, NORM_KINDS)
        raise InvalidArgument(argument, value, "KIND:L with KIND one of batch (bn, batchnorm), batch-center, "
                              "layer (ln, layernorm) and L a layer number or 'last'",
                              f"did you mean '{near}:{layer or 'last'}'?" if near else None)
    if not sep or not layer:
        raise InvalidArgument(argument, value, f"{kind}:L with L a layer number or 'last'",
                              f"e.g. '{kind}:last'" if kind != "layer" else "e.g. 'layer:1'")
    try:
        if kind == "layer":
            return LayerNorm(layer)
        return BatchNorm(layer, center_only=kind == "batch-center")
    except InvalidArgument as err:
        raise InvalidArgument(argument, value, err.allowed, err.hint) from None


def parse_norms(value: Any, argument: str = "norms") -> tuple[BatchNorm | LayerNorm, ...]:
    """Several norm layers: ``none``, a comma list of norms, a norm, or an iterable of those.

    Example:
        >>> parse_norms("layer:1, bn:last")
        (LayerNorm(layer=1), BatchNorm(layer='last', center_only=False))
        >>> parse_norms("none"), parse_norms(["batch:2", LayerNorm(1)])
        ((), (BatchNorm(layer=2, center_only=False), LayerNorm(layer=1)))
    """
    if value is None:
        return ()
    if isinstance(value, (BatchNorm, LayerNorm)):
        return (value,)
    if isinstance(value, str):
        if value.strip().lower() in ("", "none"):
            return ()
        return tuple(parse_norm(part, argument) for part in value.split(",") if part.strip())
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        return tuple(norm for item in value for norm in parse_norms(item, argument))
    raise InvalidArgument(argument, value, "'none', a norm like 'batch:last', or a list of norms")


# -- numbers -------------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")
_RATIONAL = re.compile(r"[+-]?\d+/\d+")
_LAYER_SYMBOL = re.compile(r"(sigma_w2|sigma_b2|alpha)(?:_(\d+))?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _symbol(name: str) -> sympy.Symbol:
    from .symbols import layer_symbol

    known = _LAYER_SYMBOL.fullmatch(name)
    if known:
        return layer_symbol(known.group(1), int(known.group(2)) if known.group(2) else None)
    return sympy.Symbol(name, positive=True)


def parse_value(text: str, argument: str = "value") -> Any:
    """A number (int, float, ``p/q`` as an exact Rational) or a sympy expression of named symbols.

    ``sigma_w2``, ``sigma_b2``, ``alpha`` (and ``sigma_w2_3``, one layer's) are the theory's symbols;
    other names become positive symbols.

    Example:
        >>> parse_value("2"), parse_value("0.25"), parse_value("1/3"), parse_value("sigma_w2")
        (2, 0.25, 1/3, sigma_w2)
    """
    text = str(text).strip()
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        pass
    if _RATIONAL.fullmatch(text):
        return sympy.Rational(text)
    names = {name: _symbol(name) for name in _IDENTIFIER.findall(text)}
    try:
        return sympy.sympify(text, locals=names)
    except (sympy.SympifyError, SyntaxError, TypeError, AttributeError):
        raise InvalidArgument(argument, text, "a number, p/q, or a symbol name") from None


def parse_values(text: str, argument: str = "value") -> Any:
    """One value, or a tuple of one per layer: ``2``, ``(1, 2, 2)`` or ``1,2,2``.

    Example:
        >>> parse_values("(1, 0.5, 2)")
        (1, 0.5, 2)
    """
    text = str(text).strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    items = split_top_level(text)
    if not all(items):
        raise InvalidArgument(argument, text, "a number or a comma list of numbers (one per layer)")
    values = tuple(parse_value(item, argument) for item in items)
    return values[0] if len(values) == 1 else values


def value_text(value: Any) -> str:
    """The shortest text :func:`parse_value` reads back to an equal value (floats exactly).

    Example:
        >>> value_text(2.0), value_text(0.1), value_text(1 / 3), value_text(sympy.Rational(1, 2))
        ('2', '0.1', '0.3333333333333333', '1/2')
    """
    if isinstance(value, Fraction):
        value = sympy.Rational(value.numerator, value.denominator)
    if isinstance(value, sympy.Float):
        value = float(value)
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def values_text(values: Sequence) -> str:
    """One value when all layers agree, else ``(v1, v2, ...)``.

    Example:
        >>> values_text((2.0, 2.0)), values_text((1, 0.5))
        ('2', '(1, 0.5)')
    """
    if all(v == values[0] for v in values):
        return value_text(values[0])
    return "(" + ", ".join(value_text(v) for v in values) + ")"


# -- the network line ----------------------------------------------------------------------------

#: The keys of the network line, in the order they are written.
NETWORK_LINE_KEYS = ("L", "sigma_w2", "sigma_b2", "C", "alphas", "norms", "input_q1", "input_q2")
_LINE_KEY = re.compile(r"(?<!\S)(L|activation|sigma_w2|sigma_b2|C|outputs|alphas|norms|input_q1|input_q2)=")
_EXAMPLE = "a line like 'L=3 relu sigma_w2=2 sigma_b2=0 C=1 alphas=1 norms=none'"


def network_text(net: Any) -> str:
    """The one-line text of a network, exact: :func:`network_arguments` reads it back.

    Example:
        >>> from meanfield.spec.network import Network
        >>> network_text(Network(3, "leaky_relu(a=0.2),tanh", 2, 0.1, outputs=2, norms=["layer:1"]))
        'L=3 leaky_relu(a=0.2),tanh sigma_w2=2 sigma_b2=0.1 C=2 alphas=1 norms=layer:1'
    """
    texts = [activation_text(a) for a in net.activation]
    acts = texts[0] if len(set(texts)) == 1 else ",".join(texts)
    line = (f"L={net.depth} {acts} sigma_w2={values_text(net.sigma_w2)} sigma_b2={values_text(net.sigma_b2)} "
            f"C={net.outputs} alphas={values_text(net.alphas)} norms={', '.join(map(str, net.norms)) or 'none'}")
    if net.input_q1 != 1:
        line += f" input_q1={value_text(net.input_q1)}"
    if net.input_q2 != 0:
        line += f" input_q2={value_text(net.input_q2)}"
    return line


def network_arguments(text: str, argument: str = "network") -> dict[str, Any]:
    """The Network constructor arguments of a network line (see :func:`network_text`).

    ``L`` is followed by the activation; ``activation=`` may name it instead. Keys after ``L`` may
    come in any order; sigma_b2, C, alphas, norms and the inputs have the Network defaults.

    Example:
        >>> args = network_arguments("L=2 x*tanh(x) sigma_w2=(1, 2) norms=batch:last")
        >>> args["depth"], args["activation"].name, args["sigma_w2"], args["norms"]
        (2, 'x*tanh(x)', (1, 2), (BatchNorm(layer='last', center_only=False),))
    """
    if not isinstance(text, str):
        raise InvalidArgument(argument, text, _EXAMPLE)
    marks = list(_LINE_KEY.finditer(text))
    if not marks or marks[0].start() != len(text) - len(text.lstrip()):
        raise InvalidArgument(argument, text, _EXAMPLE)
    fields: dict[str, str] = {}
    for mark, after in zip(marks, marks[1:] + [None]):
        key = {"outputs": "C"}.get(mark.group(1), mark.group(1))
        if key in fields:
            raise InvalidArgument(argument, text, _EXAMPLE, f"{key}= is given twice")
        fields[key] = text[mark.end():after.start() if after else len(text)].strip()
    if "L" not in fields:
        raise InvalidArgument(argument, text, _EXAMPLE, "the depth L= is missing")
    depth, _, act = fields["L"].partition(" ")
    if act.strip():
        if "activation" in fields:
            raise InvalidArgument(argument, text, _EXAMPLE, "the activation is given twice")
        fields["activation"] = act.strip()
    for key in ("activation", "sigma_w2"):
        if not fields.get(key):
            raise InvalidArgument(argument, text, _EXAMPLE, f"the {key} is missing")
    if not _INT.fullmatch(depth.strip()):
        raise InvalidArgument("depth", depth, "a whole number of layers after L=")
    args: dict[str, Any] = {"depth": int(depth), "activation": parse_activation(fields["activation"]),
                            "sigma_w2": parse_values(fields["sigma_w2"], "sigma_w2")}
    if "sigma_b2" in fields:
        args["sigma_b2"] = parse_values(fields["sigma_b2"], "sigma_b2")
    else:
        args["sigma_b2"] = 0
    if "C" in fields:
        if not _INT.fullmatch(fields["C"]):
            raise InvalidArgument("outputs", fields["C"], "a whole number of outputs after C=")
        args["outputs"] = int(fields["C"])
    if "alphas" in fields:
        args["alphas"] = parse_values(fields["alphas"], "alphas")
    if "norms" in fields:
        args["norms"] = parse_norms(fields["norms"])
    for key in ("input_q1", "input_q2"):
        if key in fields:
            args[key] = parse_value(fields[key], key)
    return args
