"""The one text grammar of a network: activations, normalization layers, the network line and the spec.

Every reader of a network description goes through here: the command line (``--activation``,
``--norm``), :class:`~meanfield.spec.network.Network` itself, TOML files (reproduce configs, sweep
grids), the results store and the documents.

* activation: a catalogue name (``relu``), ``name(key=value, ...)`` (``leaky_relu(a=0.2)``), or a
  formula in ``x`` (``x*tanh(x)``); a comma list gives one per hidden layer; from Python also an
  Activation, a sympy ``Lambda``, a table ``{expr=..., name=...}`` / ``{name=..., a=...}`` or a list;
* norm: ``batch:L`` (``bn``, ``batchnorm``), ``batch-center:L`` or ``layer:l`` (``ln``, ``layernorm``),
  ``L`` a layer number or ``last``; :func:`parse_norms` also reads comma lists and ``none``;
* network line: ``str(net)``, e.g. ``L=3 relu sigma_w2=2 sigma_b2=0 C=1 alphas=1 norms=none``, which
  :func:`parse_network` reads back to an equal network;
* spec: :func:`network_spec` is the canonical JSON-ready dict of a numeric network and
  :func:`network_from_spec` rebuilds it exactly.

The words (activations, norms, numbers) live in :mod:`meanfield.spec.terms`, below the Network that
reads its own arguments with them; this module is where every reader imports them from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sympy

from ..errors import InvalidArgument
from .activations import CATALOGUE, Activation, activation
from .network import BatchNorm, LayerNorm, Network  # noqa: F401 - the norms for the doctests
from .terms import (NORM_KINDS, activation_text, network_arguments, parse_activation, parse_norm, parse_norms,
                    split_top_level)

__all__ = ["NORM_KINDS", "split_top_level", "parse_activation", "parse_norm", "parse_norms", "parse_network",
           "activation_text", "network_spec", "network_from_spec", "canonical_json"]


def parse_network(text: str, argument: str = "network") -> Network:
    """The network of a one-line text, as ``str(net)`` writes it: ``parse_network(str(net)) == net``.

    Example:
        >>> net = parse_network("L=3 leaky_relu(a=0.2),tanh sigma_w2=(1, 2, 2) sigma_b2=0 C=2 norms=layer:1")
        >>> net.sigma_w2, [str(n) for n in net.norms]
        ((1.0, 2.0, 2.0), ['layer:1'])
        >>> parse_network(str(net)) == net
        True
    """
    return Network(**network_arguments(text, argument))


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
