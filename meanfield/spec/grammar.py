"""The one text grammar of a network: activations, normalization layers and the serialised spec.

Every reader of a network description goes through here: the command line (``--activation``,
``--norm``), TOML files (reproduce configs, sweep grids), the results store and the documents.

* activation: a catalogue name (``relu``), ``name(key=value, ...)`` (``leaky_relu(a=0.2)``), or a
  formula in ``x`` (``x*tanh(x)``); a comma list gives one per hidden layer;
* norm: ``batch:L``, ``batch-center:L`` or ``layer:l`` (``L`` a layer number or ``last``);
* spec: :func:`network_spec` is the canonical JSON-ready dict of a numeric network and
  :func:`network_from_spec` rebuilds it exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import sympy

from ..errors import InvalidArgument, closest
from .activations import CATALOGUE, Activation, activation
from .network import BatchNorm, LayerNorm, Network

__all__ = ["NORM_KINDS", "split_top_level", "parse_activation", "parse_norm", "network_spec", "network_from_spec",
           "canonical_json"]

#: The kinds of normalization layer a norm string names.
NORM_KINDS = ("batch", "batch-center", "layer")


def split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside parentheses: 'leaky_relu(a=0.2),tanh' -> two items."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items]


def parse_activation(text: str) -> Any:
    """One activation, or one per hidden layer (comma list): a catalogue name, ``name(k=v)``, or a formula.

    Example:
        >>> parse_activation("relu").name
        'relu'
        >>> [a.name for a in parse_activation("leaky_relu(a=0.2),tanh")]
        ['leaky_relu(a=0.2)', 'tanh']
        >>> parse_activation("x*tanh(x)").name
        'x*tanh(x)'
    """
    def one(item: str):
        named = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_\-]*)\s*(?:\((.*)\))?", item)
        if named and (named.group(2) is None or "=" in named.group(2)):
            params = {}
            for pair in filter(None, (p.strip() for p in (named.group(2) or "").split(","))):
                key, _, value = pair.partition("=")
                try:
                    params[key.strip()] = float(value)
                except ValueError:
                    raise InvalidArgument("activation", item, "parameters as name(key=number)") from None
            return activation(named.group(1), **params)
        return Activation.from_expr(item)

    items = split_top_level(text)
    if not all(items):
        raise InvalidArgument("activation", text, "a name, name(key=value), a formula in x, or a comma list")
    values = [one(item) for item in items]
    return values[0] if len(values) == 1 else values


def parse_norm(text: str) -> Any:
    """``batch:L`` | ``batch-center:L`` | ``layer:l`` (L a layer number or ``last``) -> a norm layer.

    Example:
        >>> parse_norm("batch:last")
        BatchNorm(layer='last', center_only=False)
        >>> parse_norm("batch-center:2"), parse_norm("layer:1")
        (BatchNorm(layer=2, center_only=True), LayerNorm(layer=1))
    """
    kind, sep, layer = text.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind in ("batchnorm", "bn"):
        kind = "batch"
    if kind not in NORM_KINDS:
        near = closest(kind, NORM_KINDS)
        raise InvalidArgument("norms", text, "batch:L, batch-center:L or layer:l (L a layer number or 'last')",
                              f"did you mean '{near}:{layer or 'last'}'?" if near else None)
    if not sep or not layer.strip():
        raise InvalidArgument("norms", text, f"{kind}:L with L a layer number or 'last'",
                              f"e.g. '{kind}:last'" if kind != "layer" else "e.g. 'layer:1'")
    if kind == "layer":
        return LayerNorm(layer.strip())
    return BatchNorm(layer.strip(), center_only=kind == "batch-center")


def _canon_number(argument: str, value: Any) -> float:
    if isinstance(value, sympy.Basic) and not value.is_number:
        raise InvalidArgument(argument, value, "a number (a sweep runs numerically)",
                              "substitute symbolic parameters before sweeping")
    return float(value)


def _activation_spec(act: Activation) -> dict:
    if act.family in CATALOGUE:
        return {"family": act.family, "params": {k: _canon_number(f"{act.family}.{k}", v) for k, v in act.params}}
    if act.is_symbolic:
        raise InvalidArgument("activation", act.name, "an activation with numeric parameters")
    # srepr is exact and does not depend on printing settings; the name is only for display.
    return {"expr": sympy.srepr(act.expr), "name": act.name}


def network_spec(net: Network) -> dict:
    """The canonical, JSON-ready description of a numeric network (floats, names, norm strings).

    Exact sympy numbers become floats, so ``sigma_w2=Rational(1, 2)`` and ``0.5`` give the same spec
    (and the same task key), as they give the same sampled network.

    Example:
        >>> spec = network_spec(Network(2, "relu", 2, 0, norms=[BatchNorm("last")]))
        >>> spec["activation"], spec["sigma_w2"], spec["norms"]
        ([{'family': 'relu', 'params': {}}], [2.0, 2.0], ['batch:2'])
    """
    if not isinstance(net, Network):
        raise InvalidArgument("network", net, "a meanfield.Network")
    return {
        "depth": net.depth,
        "activation": [_activation_spec(a) for a in net.activation],
        "sigma_w2": [_canon_number("sigma_w2", v) for v in net.sigma_w2],
        "sigma_b2": [_canon_number("sigma_b2", v) for v in net.sigma_b2],
        "outputs": net.outputs,
        "alphas": [_canon_number("alphas", v) for v in net.alphas],
        "norms": [str(n) for n in net.norms],
        "input_q1": _canon_number("input_q1", net.input_q1),
        "input_q2": _canon_number("input_q2", net.input_q2),
    }


def _activation_from_spec(spec: Mapping) -> Activation:
    if "family" in spec:
        return activation(spec["family"], **spec.get("params", {}))
    return Activation(name=spec.get("name") or str(sympy.sympify(spec["expr"])), expr=sympy.sympify(spec["expr"]),
                      family="custom")


def network_from_spec(spec: Mapping | str) -> Network:
    """Rebuild the Network of a spec (a dict or its JSON text, as stored in a results store).

    Example:
        >>> net = Network(3, "tanh", (1, 2, 2), 0.1, outputs=2, norms=[LayerNorm(1)])
        >>> network_from_spec(json.dumps(network_spec(net))) == net
        True
    """
    if isinstance(spec, str):
        spec = json.loads(spec)
    acts = [_activation_from_spec(a) for a in spec["activation"]]
    depth = int(spec["depth"])
    return Network(depth, acts[0] if depth == 1 else acts, spec["sigma_w2"], spec["sigma_b2"],
                   outputs=int(spec["outputs"]), alphas=spec["alphas"],
                   norms=[parse_norm(n) for n in spec["norms"]],
                   input_q1=spec["input_q1"], input_q2=spec["input_q2"])


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, float repr), the text that task keys hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
