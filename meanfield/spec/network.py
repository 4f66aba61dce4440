"""The one network spec that drives both the theory and the sampler.

A :class:`Network` is a fully connected net of ``depth`` = L weight layers,

    u^l = W^l h^{l-1} + b^l,   h^l = phi_l(N_l(u^l)) (l < L),   f = N_L(u^L),

with W^l_ij ~ N(0, sigma_w2[l] / M_{l-1}), b^l_i ~ N(0, sigma_b2[l]), widths M_l = alphas[l] * M
(l = 0..L-1; M_0 is the input dimension) and M_L = outputs = C. N_l is the identity unless a
normalization layer is declared on u^l: normalization is a *layer in the spec*
(:class:`BatchNorm`, :class:`LayerNorm`), never a flag, so the theory and the sampler cannot read a
placement differently.

Normalizations have no epsilon and no trainable affine parameters (the affine map is fixed at the
identity, as at initialization): the parameters theta are all W^l and b^l, and P counts them all,
including biases that a batch norm above makes inert (their gradient is exactly zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy

from ..errors import InvalidArgument, check_int, check_real
from .activations import Activation
from .norms import BatchNorm, LayerNorm, Norm
from .symbols import reserved_symbol
from .terms import activation_text, network_arguments, network_text, parse_activation, parse_norms, values_text

__all__ = ["Network", "BatchNorm", "LayerNorm", "Norm"]




def _own_symbols(argument: str, value: Any) -> Any:
    """``value`` unless it uses a symbol the theory reserves (M, T, C, order parameters, x, I, oo, ...).

    A parameter named like the width M would be the width in every derived formula (kappa_1 = M + ...),
    two quantities silently merged into one.
    """
    if isinstance(value, sympy.Basic):
        for sym in sorted(value.free_symbols, key=str):
            reason = reserved_symbol(sym.name)
            if reason:
                raise InvalidArgument(argument, value, "a number or an expression in symbols of your own",
                                      f"the name {sym} is reserved: it stands for {reason}; choose another name")
    return value


def _per_layer(argument: str, value: Any, count: int, check) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return tuple(check(argument, value) for _ in range(count))
    values = tuple(value)
    if len(values) != count:
        raise InvalidArgument(argument, value, f"a scalar or a sequence of {count} values (one per layer)")
    return tuple(check(f"{argument}[{i}]", v) for i, v in enumerate(values))


@dataclass(frozen=True)
class Network:
    """A wide random fully connected network: the spec read by theory and sampler alike.

    Args:
        depth: L, the number of weight layers (>= 1).
        activation: anything the grammar reads (:func:`meanfield.spec.grammar.parse_activation`): a
            catalogue name, ``name(k=v)``, a formula in x (``"x*tanh(x)"``), a sympy ``Lambda``, an
            :class:`Activation`; or one per hidden layer 1..L-1 (a sequence or a comma list).
        sigma_w2: weight variance sigma_w^2 (times 1/fan-in), scalar or one per layer 1..L.
        sigma_b2: bias variance, scalar or one per layer 1..L.
        outputs: C, the number of linear outputs.
        alphas: width ratios (alpha_0, ..., alpha_{L-1}); M_l = alpha_l M. Default all 1.
        norms: normalization layers, e.g. ``(BatchNorm("last"),)``, ``(LayerNorm(1),)``, or their text
            (``["batch:last"]``, ``"ln:1, bn:last"``).
        input_q1: qhat_1^0, the mean square of an input entry (default 1).
        input_q2: qhat_2^0, the mean product of entries of two different inputs (default 0); |input_q2| <=
            input_q1, and input_q2 >= -input_q1/(T-1) for a batch of T (checked where T is known).
            input_q2 = input_q1 is allowed: the batch is one input repeated (a rank-one Gram per output).

    Any real parameter may be a sympy symbol, for derivations.

    Example:
        >>> net = Network(3, "relu", 2, 0, outputs=10, norms=[BatchNorm("last")])
        >>> net.norms
        (BatchNorm(layer=3, center_only=False),)
        >>> net.parameter_count(100)
        21210
    """

    depth: int
    activation: Any
    sigma_w2: Any
    sigma_b2: Any
    outputs: int = 1
    alphas: Any = None
    norms: Any = ()
    input_q1: Any = 1
    input_q2: Any = 0
    _by_layer: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        L = check_int("depth", self.depth, minimum=1)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        set_("depth", L)
        hidden = max(L - 1, 1)  # a depth-1 net has no hidden layer; keep one (unused) activation
        # the grammar reads every form (name, name(k=v), formula, comma list, Lambda, table, sequence)
        parsed = parse_activation(self.activation)
        if isinstance(parsed, Activation):
            acts = (parsed,) * hidden
        elif len(parsed) != L - 1 or L == 1:
            raise InvalidArgument("activation", self.activation,
                                  f"a name, an Activation, or a sequence of {L - 1} (one per hidden layer)")
        else:
            acts = parsed
        for act in set(acts):
            for sym in sorted(act.expr.free_symbols, key=str):
                if sym.name != "x" and reserved_symbol(sym.name):
                    raise InvalidArgument("activation", act.name, "parameters that are numbers or symbols of your own",
                                          f"the name {sym} is reserved: it stands for {reserved_symbol(sym.name)}")
        set_("activation", acts)
        set_("sigma_w2", _per_layer("sigma_w2", self.sigma_w2, L,
                                    lambda a, v: _own_symbols(a, check_real(a, v, minimum=0, strict_min=True))))
        set_("sigma_b2", _per_layer("sigma_b2", self.sigma_b2, L,
                                    lambda a, v: _own_symbols(a, check_real(a, v, minimum=0))))
        set_("outputs", check_int("outputs", self.outputs, minimum=1))
        if self.alphas is None:
            alphas: tuple = (1,) * L
        else:
            alphas = _per_layer("alphas", self.alphas, L,
                                lambda a, v: _own_symbols(a, check_real(a, v, minimum=0, strict_min=True)))
        set_("alphas", alphas)
        set_("input_q1", _own_symbols("input_q1", check_real("input_q1", self.input_q1, minimum=0, strict_min=True)))
        set_("input_q2", _own_symbols("input_q2", check_real("input_q2", self.input_q2)))
        q1, q2 = self.input_q1, self.input_q2
        # (q1, q2) are the second moments of T exchangeable inputs: q2/q1 is a correlation, so |q2| <= q1.
        # q2 = q1 is legal and degenerate: the T inputs are one input repeated (the sampler draws exactly
        # that, and the theory's Gram is then rank one per output). The lower bound -q1/(T-1) needs T: it
        # is checked where T is known (theory.recursions.check_samples, sampled.backprop.check_batch).
        if isinstance(q1, sympy.Basic) or isinstance(q2, sympy.Basic):
            too_far = sympy.sympify(q2 - q1).is_positive or sympy.sympify(q2 + q1).is_negative
        else:
            too_far = abs(q2) > q1
        if too_far:
            raise InvalidArgument("input_q2", q2, f"|input_q2| <= input_q1 = {q1} (a correlation)")
        # -- normalization layers
        resolved = []
        for norm in parse_norms(self.norms):  # objects, 'batch:last', 'layer:1, bn:last', 'none'
            layer = L if norm.layer == "last" else norm.layer
            if not 1 <= layer <= L:
                raise InvalidArgument("norms", str(norm), f"a layer between 1 and depth={L} (or 'last')")
            if isinstance(norm, LayerNorm) and layer == L:
                raise InvalidArgument(
                    "norms", str(norm), f"layer norm on a hidden layer 1..{L - 1}",
                    "over the C outputs its statistics do not concentrate as the width grows",
                )
            resolved.append(type(norm)(layer, norm.center_only) if isinstance(norm, BatchNorm) else LayerNorm(layer))
        layers = [n.layer for n in resolved]
        dupes = sorted({layer for layer in layers if layers.count(layer) > 1})
        if dupes:
            raise InvalidArgument("norms", [str(n) for n in resolved], "at most one normalization per layer",
                                  f"layer {dupes[0]} has two")
        set_("norms", tuple(sorted(resolved, key=lambda n: n.layer)))
        set_("_by_layer", {n.layer: n for n in self.norms})

    # -- queries used by theory and sampler alike -------------------------------------------------
    def norm_at(self, layer: int) -> Norm | None:
        """The normalization on u^layer, or None.

        Example:
            >>> Network(2, "tanh", 1, 0, norms=[LayerNorm(1)]).norm_at(1)
            LayerNorm(layer=1)
        """
        return self._by_layer.get(layer)

    def phi(self, layer: int) -> Activation:
        """The activation applied at hidden layer 1..L-1."""
        if not 1 <= layer <= self.depth - 1:
            raise InvalidArgument("layer", layer, f"a hidden layer 1..{self.depth - 1}")
        return self.activation[layer - 1]

    def widths(self, width: int) -> tuple[int, ...]:
        """(M_0, ..., M_{L-1}, C) for base width M; each alpha_l M must be a whole number.

        Example:
            >>> Network(3, "relu", 2, 0, outputs=4, alphas=(1, 2, 0.5)).widths(64)
            (64, 128, 32, 4)
        """
        M = check_int("width", width, minimum=1)
        out = []
        for l, a in enumerate(self.alphas):
            if isinstance(a, sympy.Basic) and not a.is_number:
                raise InvalidArgument("alphas", self.alphas, "numeric width ratios to compute widths")
            size = float(a) * M
            if abs(size - round(size)) > 1e-9 or round(size) < 1:
                raise InvalidArgument("width", M, f"a width M with alpha_{l} * M a positive whole number",
                                      f"alpha_{l}={a} gives {size:g}")
            out.append(int(round(size)))
        return (*out, self.outputs)

    def parameter_count(self, width: int) -> int:
        """P = sum_l M_l (M_{l-1} + 1): every weight and bias, at base width M."""
        sizes = self.widths(width)
        return sum(sizes[l] * (sizes[l - 1] + 1) for l in range(1, self.depth + 1))

    @property
    def alpha(self) -> Any:
        """alpha = sum_{l=1}^{L-1} alpha_l alpha_{l-1}, so that P ~ alpha M^2 (0 for depth 1).

        Exact: sympy numbers or symbols stay as they are (the theory's arithmetic converts them).

        Example:
            >>> float(Network(3, "relu", 2, 0, alphas=(1, 2, 1)).alpha)
            4.0
        """
        a = self.alphas
        return sum((a[l] * a[l - 1] for l in range(1, len(a))), sympy.S.Zero)

    def min_samples(self) -> int:
        """Fewest samples T that every normalization layer of this network needs."""
        return max((n.min_samples() for n in self.norms), default=1)

    @property
    def is_symbolic(self) -> bool:
        """True when any parameter is a sympy symbol."""
        values = (*self.sigma_w2, *self.sigma_b2, *self.alphas, self.input_q1, self.input_q2)
        return any(isinstance(v, sympy.Basic) and not v.is_number for v in values) or any(
            a.is_symbolic for a in self.activation)

    def with_(self, **changes: Any) -> "Network":
        """A copy with some constructor arguments changed (the spec itself never changes).

        Example:
            >>> Network(3, "relu", 2, 0).with_(norms=[BatchNorm(2)]).norms
            (BatchNorm(layer=2, center_only=False),)
        """
        args = dict(depth=self.depth, activation=self.activation if self.depth > 1 else self.activation[0],
                    sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2, outputs=self.outputs,
                    alphas=self.alphas, norms=self.norms, input_q1=self.input_q1, input_q2=self.input_q2)
        args.update(changes)
        return Network(**args)

    # -- display ------------------------------------------------------------------------------------
    def describe(self) -> str:
        """One line: depth, activations, variances, outputs, widths and normalizations."""
        acts = sorted({a.name for a in self.activation})
        sw = _compact(self.sigma_w2)
        sb = _compact(self.sigma_b2)
        norms = ", ".join(map(str, self.norms)) or "none"
        return (f"L={self.depth} {'/'.join(acts)} sigma_w2={sw} sigma_b2={sb} C={self.outputs} "
                f"alphas={_compact(self.alphas)} norms={norms}")

    def __str__(self) -> str:
        """The exact one-line text of the network; :meth:`parse` reads it back to an equal Network.

        Example:
            >>> str(Network(3, "relu", 2, 0, outputs=10, norms=["batch:last"]))
            'L=3 relu sigma_w2=2 sigma_b2=0 C=10 alphas=1 norms=batch:3'
        """
        return network_text(self)

    def __repr__(self) -> str:
        """The constructor call with the non-default arguments, values written as the grammar reads them.

        Example:
            >>> Network(3, "tanh", (1, 2, 2), 0.1, norms=["layer:1"], input_q2=0.5)
            Network(depth=3, activation='tanh', sigma_w2=(1, 2, 2), sigma_b2=0.1, norms='layer:1', input_q2=0.5)
        """
        texts = [activation_text(a) for a in self.activation]
        args = [f"depth={self.depth}", f"activation={(texts[0] if len(set(texts)) == 1 else ','.join(texts))!r}",
                f"sigma_w2={values_text(self.sigma_w2)}", f"sigma_b2={values_text(self.sigma_b2)}"]
        if self.outputs != 1:
            args.append(f"outputs={self.outputs}")
        if any(a != 1 for a in self.alphas):
            args.append(f"alphas={values_text(self.alphas)}")
        if self.norms:
            args.append(f"norms={', '.join(map(str, self.norms))!r}")
        if self.input_q1 != 1:
            args.append(f"input_q1={values_text((self.input_q1,))}")
        if self.input_q2 != 0:
            args.append(f"input_q2={values_text((self.input_q2,))}")
        return f"Network({', '.join(args)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # IPython's and hypothesis' pretty printers would otherwise list every dataclass field: keep the
        # falsifying examples of property tests (and notebook output) to the one-line constructor call
        printer.text(repr(self))

    @classmethod
    def parse(cls, text: str) -> "Network":
        """The network of a one-line text as ``str(net)`` writes it (the inverse of ``str``).

        Example:
            >>> net = Network(2, "x*tanh(x)", 1.5, 0, alphas=(1, 0.5), norms=["bn:last"])
            >>> Network.parse(str(net)) == net
            True
        """
        return cls(**network_arguments(text))

    def _repr_latex_(self) -> str:
        from ..printing import latex_network
        return latex_network(self)


def _compact(values: tuple) -> str:
    if all(v == values[0] for v in values):
        return _num(values[0])
    return "(" + ", ".join(_num(v) for v in values) + ")"


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
