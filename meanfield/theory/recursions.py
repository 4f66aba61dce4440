"""Order-parameter recursions: each layer kind is a pure rule on an immutable state, folded over the net.

Forward (per unit, large width), for l = 1..L, with qhat^0 = (input_q1, input_q2):

    dense:       q_1^l = sigma_w^2 qhat_1^{l-1} + sigma_b^2,   q_2^l = sigma_w^2 qhat_2^{l-1} + sigma_b^2
    normalise:   none        -> Gaussian law (q_1, q_2)
                 layer norm  -> Gaussian law (1, q_2 / q_1)
                 batch norm  -> sphere law: u uniform on the sphere of radius sqrt(T) in 1-perp
                                (second moments 1 and -1/(T-1); see :mod:`meanfield.integrals.sphere`)
                 centre only -> Gaussian law ((q_1 - q_2)(1 - 1/T), -(q_1 - q_2)/T)
    activation:  qhat_1^l = E[phi(u_a)^2],  qhat_2^l = E[phi(u_a) phi(u_b)]   under that law (l < L).

Backward. The gradient of output k at sample t w.r.t. the pre-activations u^l(s) of *every* sample s
(batch norm couples samples) gives four exchangeable sums, each O(1) because it is summed over units:

    qtilde_1       = sum_s        E[d f(t)/d u^l(s) . d f(t)/d u^l(s)]
    qtilde_1_mean  = sum_{s != r} E[d f(t)/d u^l(s) . d f(t)/d u^l(r)]      (the batch-mean path)
    qtilde_2       = sum_{s != r} E[d f(t)/d u^l(s) . d f(t')/d u^l(r)]     (t != t')
    qtilde_2_same  = sum_s        E[d f(t)/d u^l(s) . d f(t')/d u^l(s)]     (t != t')

Without batch norm only the s = t (and r = t') terms exist: qtilde_1_mean = qtilde_2_same = 0 and
the rest is the textbook recursion. The state starts at the output as (1, 0, 0, 1); each layer maps it
linearly, writing (X_=, X_!=) for (qtilde_1, qtilde_1_mean) or (qtilde_2_same, qtilde_2):

    weight W^{l+1}:   X -> sigma_w^2 X
    plain unit:       (X_=, X_!=) -> (E[phi'(u)^2] X_=,  I_phi'[q_1, q_2] X_!=)
    layer norm:       the same at the normalised law, divided by q_1^l
    batch norm:       (X_=, X_!=) -> (Y, -Y),  Y = E[T/(v chi^2_{T-1})] (e_1 X_= + e_2 X_!=),
                      e_1 = E_S[phi'(u_a)^2 (1 - 1/T - u_a^2/T)],
                      e_2 = -E_S[phi'(u_a) phi'(u_b) (1 + u_a u_b)] / T,   v = q_1^l - q_2^l
    centre only:      (X_=, X_!=) -> (Y, -Y),  Y = e_1 X_= + e_2 X_!=,
                      e_1 = (1 - 1/T) E[phi'(u)^2],  e_2 = -I_phi'[u_a, u_b] / T  (centred Gaussian law)

(phi' = 1 at the output layer.) Batch norm's Jacobian is (1/sigma)(Pi - u u^T/T) per unit, a projector
that kills constants: that is why the state after it has X_!= = -X_=, i.e. the gradient summed over
the batch vanishes (the bias below a batch norm is inert), and why the layers below a batch norm see
"qtilde_1 qhat_1 - qtilde_2 qhat_2": the derivation, with its check against sampled networks, is in the
project's theory notes. The dual-Gram entries of layer l are then

    G_l[(k,t),(k,t)]  = (1/T) [(M_{l-1} qhat_1^{l-1} + 1) qtilde_1 + (M_{l-1} qhat_2^{l-1} + 1) qtilde_1_mean]
    G_l[(k,t),(k,t')] = (1/T) [(M_{l-1} qhat_1^{l-1} + 1) qtilde_2_same + (M_{l-1} qhat_2^{l-1} + 1) qtilde_2]

The same code runs on floats, numpy arrays (grids of sigma's broadcast), mpmath numbers (``dps``) and
sympy expressions, because :mod:`meanfield.integrals` and :mod:`meanfield.integrals.sphere` dispatch on type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import mpmath
import numpy as np
import sympy

from ..spec.activations import Activation, activation
from ..errors import InvalidArgument, check_int, check_real
from ..spec.network import BatchNorm, LayerNorm, Network

__all__ = ["order_parameters", "OrderParameters", "LayerParameters", "signal_propagation", "SignalPropagation",
           "min_samples_for"]

# phi' = 1 at the output layer; built from the exact sympy 1 (the catalogue would store the float 1.0,
# which would leak floats into symbolic derivations)
_ONE = Activation(name="1", expr=sympy.S.One)
_LINEAR = activation("linear")


# -- arithmetic context: float / numpy, mpmath, sympy ----------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    mode: str  # "float", "mp" or "sympy"
    dps: int | None = None

    def num(self, value: Any) -> Any:
        """A constant in this context's number type (exact rationals under sympy)."""
        if self.mode == "sympy":
            if isinstance(value, sympy.Basic):
                return value
            if isinstance(value, float):
                return sympy.Rational(repr(value)) if math.isfinite(value) else sympy.sympify(value)
            if isinstance(value, np.ndarray):
                raise InvalidArgument("sigma", "array", "scalars in symbolic mode")
            return sympy.sympify(value)
        if self.mode == "mp":
            if isinstance(value, sympy.Basic):
                return mpmath.mpf(sympy.N(value, self.dps + 5)) if value.is_number else value
            return mpmath.mpf(value) if not isinstance(value, np.ndarray) else value
        if isinstance(value, sympy.Basic):
            return float(value)
        return value if isinstance(value, np.ndarray) else float(value)

    def second(self, g: Activation, law: "Law") -> Any:
        if law.kind == "sphere":
            from ..integrals.sphere import sphere_second_moment
            return self._exact(sphere_second_moment(g, law.T, dps=self.dps, symbolic=self.mode == "sympy"))
        from ..integrals.gaussian import second_moment
        return second_moment(g, law.q1, dps=self.dps) if self.mode == "mp" else self._exact(second_moment(g, law.q1))

    def cross(self, g: Activation, law: "Law") -> Any:
        if law.kind == "sphere":
            from ..integrals.sphere import sphere_cross_moment
            return self._exact(sphere_cross_moment(g, law.T, dps=self.dps, symbolic=self.mode == "sympy"))
        from ..integrals.gaussian import cross_moment
        if self.mode == "mp":
            return cross_moment(g, law.q1, law.q2, dps=self.dps)
        return self._exact(cross_moment(g, law.q1, law.q2))

    def _exact(self, value: Any) -> Any:
        """Symbolic mode: floats that catalogue parameters carry (constant(1.0)) back to exact rationals."""
        if self.mode != "sympy" or not isinstance(value, sympy.Basic):
            return value
        floats = value.atoms(sympy.Float)
        return value.xreplace({f: sympy.Rational(repr(float(f))) for f in floats}) if floats else value


@dataclass(frozen=True)
class Law:
    """The law of the (normalised) pre-activation a unit's activation sees.

    ``kind`` is "gaussian" (second moments q1, q2) or "sphere" (batch norm: uniform on the sphere of
    radius sqrt(T) in the complement of 1; q1 = 1, q2 = -1/(T-1)).
    """

    kind: str
    q1: Any
    q2: Any
    T: Any = None


# -- per-layer record ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerParameters:
    """Order parameters of one layer l (0 = input): forward moments, normalised law, backward sums.

    Attributes:
        layer: l.
        norm: "none", "batch", "batch-center" or "layer".
        q1, q2: second moments of the pre-activation u^l (None at l = 0).
        law: "gaussian" or "sphere"; qn1, qn2: the second moments of the normalised u^l that phi sees.
        qhat1, qhat2: of h^l = phi(u^l) (the input statistics at l = 0; None at l = L).
        qtilde1, qtilde1_mean, qtilde2, qtilde2_same: the backward sums at u^l (module docstring).
        chi1, chi2: the per-layer backward factors sigma_w^2 E[phi'^2], sigma_w^2 I_phi' (plain layers)
            or, for batch norm, the map coefficients (e_1, e_2) times its scale.
    """

    layer: int
    norm: str = "none"
    q1: Any = None
    q2: Any = None
    law: str | None = None
    qn1: Any = None
    qn2: Any = None
    qhat1: Any = None
    qhat2: Any = None
    qtilde1: Any = None
    qtilde1_mean: Any = None
    qtilde2: Any = None
    qtilde2_same: Any = None
    chi1: Any = None
    chi2: Any = None

    def replace(self, **changes: Any) -> "LayerParameters":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return LayerParameters(**values)


@dataclass(frozen=True)
class OrderParameters:
    """q_1, q_2, qhat_1, qhat_2 and the backward sums of every layer l = 0..L of a network.

    Produced by :func:`order_parameters`. Values are floats, numpy arrays (grids), mpmath numbers or
    sympy expressions, following the inputs. ``layers[l]`` is the :class:`LayerParameters` of layer l.

    Example:
        >>> op = order_parameters(Network(3, "relu", 2, 0))
        >>> [float(op.layers[l].qhat1) for l in range(3)]
        [1.0, 1.0, 1.0]
        >>> [float(op.layers[l].qtilde1) for l in (1, 2, 3)]   # sigma_w^2 E[step^2] = 1 per layer
        [1.0, 1.0, 1.0]
    """

    network: Network
    samples: Any
    layers: tuple[LayerParameters, ...]
    mode: str = "float"
    dps: int | None = None
    sigma_w2: tuple = field(default=(), repr=False)
    sigma_b2: tuple = field(default=(), repr=False)

    def __getitem__(self, layer: int) -> LayerParameters:
        return self.layers[layer]

    def column(self, name: str) -> tuple:
        """The values of one field over the layers 0..L, e.g. ``op.column("qhat1")``."""
        return tuple(getattr(layer, name) for layer in self.layers)

    # -- the dual-Gram entries ------------------------------------------------------------------------
    def gram_layers(self, width: Any = None, *, bias: bool = True) -> tuple[tuple[Any, Any], ...]:
        """Per weight layer l = 1..L: (E G_l[(k,t),(k,t)], E G_l[(k,t),(k,t')]) at base width M.

        With ``width=None`` only the O(M) parts, divided by M (the mean-field constants of each layer).
        ``bias`` adds the "+1" of each layer's bias gradient.

        Example:
            >>> op = order_parameters(Network(2, "relu", 2, 0), samples=1)
            >>> [tuple(round(float(x), 6) for x in pair) for pair in op.gram_layers(100)]  # M/pi + 1
            [(101.0, 0.5), (101.0, 32.830989)]
        """
        ctx = _Ctx(self.mode, self.dps)
        Tn = ctx.num(self.samples if self.samples is not None else 1)
        return tuple((gd / Tn, go / Tn) for gd, go in self._sums(width, bias=bias))

    def _sums(self, width: Any = None, *, bias: bool = True) -> tuple[tuple[Any, Any], ...]:
        """T times gram_layers: the per-layer sums before the 1/T (kept apart so T cancels exactly)."""
        net = self.network
        ctx = _Ctx(self.mode, self.dps)
        out = []
        for l in range(1, net.depth + 1):
            below, here = self.layers[l - 1], self.layers[l]
            if width is None:
                a = ctx.num(net.alphas[l - 1])
                h1, h2 = a * below.qhat1, a * below.qhat2
            else:
                Ml = _width(net, l - 1, width, ctx)
                one = ctx.num(1) if bias else 0
                h1, h2 = Ml * below.qhat1 + one, Ml * below.qhat2 + one
            gd = h1 * here.qtilde1 + h2 * here.qtilde1_mean
            go = h1 * here.qtilde2_same + h2 * here.qtilde2
            out.append((gd, go))
        return tuple(out)

    def kappas(self) -> tuple[Any, Any]:
        """(kappa_1, kappa_2) = sum_l (alpha_{l-1}/alpha) (qhat . qtilde): large-M constants at this T.

        kappa_1 = T E G[(k,t),(k,t)] / (alpha M) and kappa_2 = T E G[(k,t),(k,t')] / (alpha M) as M -> inf;
        alpha = sum_{l=1}^{L-1} alpha_l alpha_{l-1} (alpha_0 for a depth-1 network, which has no hidden layer).

        Example:
            >>> op = order_parameters(Network(3, "relu", 2, 0))
            >>> k1, k2 = op.kappas()
            >>> float(k1)                   # (qtilde qhat) summed over 3 layers, divided by alpha = 2
            1.5
        """
        ctx = _Ctx(self.mode, self.dps)
        A = _alpha(self.network, ctx, normaliser=True)
        terms = self._sums(None)
        k1 = sum((gd for gd, _ in terms), ctx.num(0)) / A
        k2 = sum((go for _, go in terms), ctx.num(0)) / A
        return k1, k2

    # -- display -----------------------------------------------------------------------------------------
    def table(self) -> str:
        """An aligned text table, one row per layer."""
        names = ["q1", "q2", "qhat1", "qhat2", "qtilde1", "qtilde1_mean", "qtilde2", "qtilde2_same"]
        rows = [["l", "norm", "law", *names]]
        for p in self.layers:
            rows.append([str(p.layer), p.norm if p.layer else "input", p.law or "-",
                         *[_fmt(getattr(p, n)) for n in names]])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        T = "-" if self.samples is None else self.samples
        return (f"OrderParameters ({self.network.describe()}, T={T})\n" + "\n".join(lines))

    def __str__(self) -> str:
        return self.table()

    def _repr_latex_(self) -> str:
        tex = {"q1": "q_1", "q2": "q_2", "qhat1": r"\hat q_1", "qhat2": r"\hat q_2", "qtilde1": r"\tilde q_1",
               "qtilde1_mean": r"\tilde q_1^{\rm mean}", "qtilde2": r"\tilde q_2",
               "qtilde2_same": r"\tilde q_2^{\rm same}"}
        cols = list(tex)
        body = [" & ".join(["l"] + [tex[c] for c in cols]) + r" \\ \hline"]
        for p in self.layers:
            body.append(" & ".join([str(p.layer)] + [_tex(getattr(p, c)) for c in cols]) + r" \\")
        return "$$\\begin{array}{" + "c" * (len(cols) + 1) + "}" + "\n".join(body) + r"\end{array}$$"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    if isinstance(value, sympy.Basic):
        if value.is_number:
            try:
                return f"{float(value):.6g}"
            except TypeError:
                pass
        text = str(value)
        return text if len(text) <= 28 else text[:25] + "..."
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def _tex(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, sympy.Basic):
        from ..printing import latex
        return latex(value)
    return _fmt(value)


def _width(net: Network, l: int, width: Any, ctx: _Ctx) -> Any:
    """M_l = alpha_l M (exact integer for numeric M)."""
    if isinstance(width, sympy.Basic) and not width.is_number:
        return ctx.num(net.alphas[l]) * width
    if ctx.mode == "sympy":
        return sympy.nsimplify(ctx.num(net.alphas[l]) * int(width))
    return ctx.num(net.widths(int(width))[l])


def _alpha(net: Network, ctx: _Ctx, normaliser: bool = False) -> Any:
    a = [ctx.num(x) for x in net.alphas]
    total = sum((a[l] * a[l - 1] for l in range(1, len(a))), ctx.num(0))
    if normaliser and net.depth == 1:
        return a[0]
    return total


# -- validation --------------------------------------------------------------------------------------------------


def min_samples_for(net: Network, purpose: str = "order") -> int:
    """Fewest samples T the formulas need: centre-only batch norm T >= 2; full batch norm T >= 4
    (E[T/chi^2_{T-1}] = T/(T-3)); with full batch norm on the output, the FIM's s needs T >= 6
    (E[(T/chi^2)^2] = T^2/((T-3)(T-5))).

    Example:
        >>> min_samples_for(Network(3, "relu", 2, 0, norms=[BatchNorm("last")]), "fisher")
        6
    """
    need = 1
    for norm in net.norms:
        if isinstance(norm, BatchNorm):
            need = max(need, 2 if norm.center_only else 4)
            if not norm.center_only and norm.layer == net.depth and purpose == "fisher":
                need = max(need, 6)
    return need


def _check_samples(net: Network, samples: Any, purpose: str = "order") -> Any:
    if samples is None:
        if any(isinstance(n, BatchNorm) for n in net.norms):
            raise InvalidArgument("samples", None, "the batch size T (batch norm's statistics depend on it)")
        return None
    if isinstance(samples, sympy.Basic) and not samples.is_number:
        return samples
    T = check_int("samples", samples, minimum=1)
    need = min_samples_for(net, purpose)
    if T < need:
        reasons = []
        for norm in net.norms:
            if isinstance(norm, BatchNorm) and norm.center_only:
                reasons.append(f"centre-only batch norm at layer {norm.layer} needs T >= 2 (a batch mean of "
                               "one sample leaves nothing)")
            elif isinstance(norm, BatchNorm):
                if norm.layer == net.depth and purpose == "fisher":
                    reasons.append(f"full batch norm on the output layer {norm.layer} needs T >= 6 for a finite "
                                   "expected s (E[(T/chi^2_(T-1))^2] = T^2/((T-3)(T-5)))")
                else:
                    reasons.append(f"full batch norm at layer {norm.layer} needs T >= 4 for a finite expected "
                                   "Gram (E[T/chi^2_(T-1)] = T/(T-3))")
        raise InvalidArgument("samples", T, f"an integer >= {need} for this network", "; ".join(reasons))
    return T


def _per_layer_override(name: str, value: Any, L: int) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(value) != L:
            raise InvalidArgument(name, value, f"a scalar, an array, or a sequence of {L} (one per layer)")
        values = tuple(value)
    else:
        values = (value,) * L
    out = []
    for i, v in enumerate(values):
        if isinstance(v, np.ndarray) or (not isinstance(v, sympy.Basic) and np.ndim(v) > 0):
            arr = np.asarray(v, dtype=float)
            if not np.all(np.isfinite(arr)):
                raise InvalidArgument(f"{name}[{i}]", "array", "finite values")
            if name == "sigma_w2" and np.any(arr <= 0):
                raise InvalidArgument(f"{name}[{i}]", "array", "values > 0")
            if name == "sigma_b2" and np.any(arr < 0):
                raise InvalidArgument(f"{name}[{i}]", "array", "values >= 0")
            out.append(arr)
        else:
            out.append(check_real(f"{name}[{i}]", v, minimum=0, strict_min=(name == "sigma_w2")))
    return tuple(out)


# -- the rules ---------------------------------------------------------------------------------------------------


def _dense_forward(ctx: _Ctx, qhat1: Any, qhat2: Any, sw: Any, sb: Any) -> tuple[Any, Any]:
    """u = W h + b: q_1 = sigma_w^2 qhat_1 + sigma_b^2, q_2 = sigma_w^2 qhat_2 + sigma_b^2."""
    return sw * qhat1 + sb, sw * qhat2 + sb


def _norm_forward(ctx: _Ctx, norm: Any, q1: Any, q2: Any, T: Any, layer: int) -> Law:
    """The law of the normalised pre-activation."""
    if norm is None:
        return Law("gaussian", q1, q2, T)
    if isinstance(norm, LayerNorm):
        return Law("gaussian", ctx.num(1) + 0 * q1, q2 / q1, T)
    v = q1 - q2
    _check_variance(ctx, v, layer)
    Tn = ctx.num(T)
    if norm.center_only:
        return Law("gaussian", v * (1 - 1 / Tn), -v / Tn, T)
    return Law("sphere", ctx.num(1) + 0 * q1, -1 / (Tn - 1) + 0 * q1, T)


def _check_variance(ctx: _Ctx, v: Any, layer: int) -> None:
    if ctx.mode == "sympy":
        if getattr(v, "is_zero", None) is True or getattr(v, "is_negative", None) is True:
            raise InvalidArgument("network", f"batch norm at layer {layer}",
                                  "a unit whose batch variance q_1 - q_2 is positive", f"q_1 - q_2 = {v}")
        return
    bad = np.asarray(v <= 0) if not isinstance(v, mpmath.mpf) else (v <= 0)
    if np.any(bad):
        raise InvalidArgument("network", f"batch norm at layer {layer}",
                              "a unit whose batch variance q_1 - q_2 is positive",
                              "here every sample gives the unit the same value (q_1 = q_2), so the batch "
                              "variance is zero and batch norm divides by zero")


def _activation_forward(ctx: _Ctx, law: Law, phi: Activation) -> tuple[Any, Any]:
    """h = phi(u): qhat_1 = E[phi(u_a)^2], qhat_2 = E[phi(u_a) phi(u_b)] under the law."""
    return ctx.second(phi, law), ctx.cross(phi, law)


def _x_times_derivative(phi: Activation | None) -> Activation:
    """x phi'(x): phi itself when phi is positively homogeneous of degree 1 (Euler), x at the output."""
    from ..integrals.sphere import homogeneity_degree, times_x
    if phi is None:
        return _LINEAR
    if homogeneity_degree(phi) == 1:
        return phi
    return times_x(phi.derivative)


def _backward_map(ctx: _Ctx, norm: Any, law: Law, phi: Activation | None, q1: Any, q2: Any, T: Any):
    """The linear map of (X_=, X_!=) through activation (phi; None = identity at the output) and norm."""
    dphi = _ONE if phi is None else phi.derivative
    if norm is None or isinstance(norm, LayerNorm):
        a1 = ctx.second(dphi, law)
        a2 = ctx.cross(dphi, law)
        if isinstance(norm, LayerNorm):
            a1, a2 = a1 / q1, a2 / q1
        return ("diagonal", a1, a2)
    Tn = ctx.num(T)
    if norm.center_only:
        e1 = (1 - 1 / Tn) * ctx.second(dphi, law)
        e2 = -ctx.cross(dphi, law) / Tn
        return ("projector", e1, e2)
    from ..integrals.sphere import chi2_inverse_moment
    xd = _x_times_derivative(phi)
    e1 = (1 - 1 / Tn) * ctx.second(dphi, law) - ctx.second(xd, law) / Tn
    e2 = -(ctx.cross(dphi, law) + ctx.cross(xd, law)) / Tn
    scale = chi2_inverse_moment(Tn, 1, dps=ctx.dps) / (q1 - q2)
    if ctx.mode == "sympy":
        scale = sympy.sympify(scale)
    return ("projector", scale * e1, scale * e2)


def _apply(bmap, x_eq: Any, x_ne: Any) -> tuple[Any, Any]:
    kind, a, b = bmap
    if kind == "diagonal":
        return a * x_eq, b * x_ne
    y = a * x_eq + b * x_ne
    return y, -y


# -- public: the fold ---------------------------------------------------------------------------------------------


def order_parameters(net: Network, samples: Any = None, *, dps: int | None = None, symbolic: bool | None = None,
                     sigma_w2: Any = None, sigma_b2: Any = None) -> OrderParameters:
    """q_1^l = sigma_w^2 qhat_1^{l-1} + sigma_b^2, ..., qtilde^l: every layer's order parameters.

    The forward and backward rules of the module docstring, folded over the layers of ``net``.

    Args:
        net: the network spec.
        samples: the batch size T (needed when the network has batch norm; its rules are exact in T).
        dps: evaluate in mpmath at this many decimal digits.
        symbolic: force sympy (exact rationals for float parameters); default when the network has symbols.
        sigma_w2, sigma_b2: overrides of the network's values: a scalar, a numpy array (all layers; arrays
            broadcast against each other, e.g. a meshgrid), or a sequence with one entry per layer. This is
            the vectorised path used by :func:`meanfield.theory.fisher.predict_grid`.

    Returns:
        :class:`OrderParameters`.

    Raises:
        InvalidArgument: samples missing or too small for a batch norm of the network, a batch norm on a
            unit whose batch variance is zero, bad overrides.

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> op = order_parameters(Network(3, "relu", 2, 0, norms=[BatchNorm(2)]), samples=8)
        >>> round(float(op[2].qhat2), 6)      # relu of the sphere law: I_relu[1, -1/7]
        0.125067
        >>> import numpy as np
        >>> grid = order_parameters(Network(3, "tanh", 1, 0), sigma_w2=np.array([1.0, 2.0]))
        >>> grid[2].qhat1.shape
        (2,)
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    T = _check_samples(net, samples)
    L = net.depth
    sw_over = _per_layer_override("sigma_w2", sigma_w2, L)
    sb_over = _per_layer_override("sigma_b2", sigma_b2, L)
    sw = sw_over if sw_over is not None else net.sigma_w2
    sb = sb_over if sb_over is not None else net.sigma_b2
    if dps is not None:
        dps = check_int("dps", dps, minimum=5, maximum=10000)
    if symbolic is None:
        symbolic = net.is_symbolic or (isinstance(T, sympy.Basic) and not T.is_number) or any(
            isinstance(v, sympy.Basic) and not v.is_number for v in (*sw, *sb))
    if symbolic and dps is not None:
        raise InvalidArgument("dps", dps, "None for a symbolic network (substitute numbers first)")
    if symbolic and any(isinstance(v, np.ndarray) for v in (*sw, *sb)):
        raise InvalidArgument("sigma_w2", "array", "scalars for a symbolic network")
    mode = "sympy" if symbolic else ("mp" if dps else "float")
    ctx = _Ctx(mode, dps)
    if mode == "mp":
        with mpmath.workdps(dps):
            return _fold(net, T, ctx, sw, sb)
    return _fold(net, T, ctx, sw, sb)


def _fold(net: Network, T: Any, ctx: _Ctx, sw: tuple, sb: tuple) -> OrderParameters:
    L = net.depth
    sw = tuple(ctx.num(v) for v in sw)
    sb = tuple(ctx.num(v) for v in sb)
    zero = ctx.num(0)
    layers = [LayerParameters(0, "none", qhat1=ctx.num(net.input_q1), qhat2=ctx.num(net.input_q2))]
    laws: list[Law | None] = [None]
    # forward fold
    for l in range(1, L + 1):
        below = layers[-1]
        q1, q2 = _dense_forward(ctx, below.qhat1, below.qhat2, sw[l - 1], sb[l - 1])
        norm = net.norm_at(l)
        law = _norm_forward(ctx, norm, q1, q2, T, l)
        qhat1 = qhat2 = None
        if l < L:
            qhat1, qhat2 = _activation_forward(ctx, law, net.phi(l))
        kind = "none" if norm is None else (norm.kind if isinstance(norm, BatchNorm) else "layer")
        layers.append(LayerParameters(l, kind, q1, q2, law.kind, law.q1, law.q2, qhat1, qhat2))
        laws.append(law)
    # backward fold: state (d_eq, d_ne, o_eq, o_ne) at the output = (1, 0, 0, 1)
    d_eq, d_ne, o_eq, o_ne = ctx.num(1), zero, zero, ctx.num(1)
    for l in range(L, 0, -1):
        p = layers[l]
        if l < L:  # through W^{l+1}
            w = sw[l]
            d_eq, d_ne, o_eq, o_ne = w * d_eq, w * d_ne, w * o_eq, w * o_ne
        phi = net.phi(l) if l < L else None
        bmap = _backward_map(ctx, net.norm_at(l), laws[l], phi, p.q1, p.q2, T)
        d_eq, d_ne = _apply(bmap, d_eq, d_ne)
        o_eq, o_ne = _apply(bmap, o_eq, o_ne)
        chi_scale = sw[l] if l < L else ctx.num(1)
        layers[l] = p.replace(qtilde1=d_eq, qtilde1_mean=d_ne, qtilde2=o_ne, qtilde2_same=o_eq,
                              chi1=chi_scale * bmap[1], chi2=chi_scale * bmap[2])
    arrays = [v for v in (*sw, *sb) if isinstance(v, np.ndarray)]
    if arrays:
        # a grid: every field as an array of the grid's shape (sphere-law values do not depend on sigma)
        shape = np.broadcast_shapes(*[a.shape for a in arrays])

        def grid(v):
            return None if v is None else np.broadcast_to(np.asarray(v, dtype=float), shape).copy()

        layers = [p.replace(**{f.name: grid(getattr(p, f.name)) for f in fields(p)
                               if f.name not in ("layer", "norm", "law")}) for p in layers]
    return OrderParameters(net, T, tuple(layers), ctx.mode, ctx.dps, sw, sb)


# -- signal propagation (Poole et al. 2016, Schoenholz et al. 2017) -------------------------------------------------


@dataclass(frozen=True)
class SignalPropagation:
    """Fixed point q*, correlation map c -> c', its fixed point c*, chi_1 and the depth scales.

    Attributes:
        q_star: fixed point of q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2 (inf if the length diverges;
            the other fields are then None).
        c_star: the stable fixed point of the correlation map (1 in the ordered phase).
        chi1: sigma_w^2 E[phi'(sqrt(q*) z)^2], slope of the correlation map at c = 1 (order-to-chaos at 1).
        chi_c: slope of the correlation map at c*, sigma_w^2 I_phi'[q*, c* q*].
        slope_q: slope of the length map at q*, chi1 + sigma_w^2 E[phi phi''] (from d/dq E[phi^2]).
        xi_q, xi_c: depth scales -1/log(slope_q), -1/log(chi_c) (inf at criticality).
        phase: "ordered" (chi1 < 1), "chaotic" (chi1 > 1), "critical" or "divergent" (no finite q*).
    """

    activation: Activation
    sigma_w2: Any
    sigma_b2: Any
    q_star: Any
    c_star: Any
    chi1: Any
    chi_c: Any
    slope_q: Any
    xi_q: Any
    xi_c: Any
    phase: str
    dps: int | None = None

    def correlation_map(self, c: Any) -> Any:
        """c' = (sigma_w^2 I_phi[q*, c q*] + sigma_b^2) / q*, vectorised over c in [-1, 1]."""
        from ..integrals.gaussian import cross_moment
        if isinstance(self.q_star, sympy.Basic):
            return (self.sigma_w2 * cross_moment(self.activation, self.q_star, c * self.q_star) + self.sigma_b2) / self.q_star
        if not math.isfinite(float(self.q_star)):
            raise InvalidArgument("q_star", self.q_star, "a finite fixed point to define the correlation map")
        c = np.asarray(c, dtype=float) if self.dps is None else c
        if self.dps is None and np.any(np.abs(c) > 1):
            raise InvalidArgument("c", c, "correlations in [-1, 1]")
        q = self.q_star
        val = cross_moment(self.activation, q, c * q, dps=self.dps) if self.dps else cross_moment(self.activation, q, c * q)
        return (self.sigma_w2 * val + self.sigma_b2) / q

    def length_map(self, q: Any) -> Any:
        """q' = sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2."""
        from ..integrals.gaussian import second_moment
        return self.sigma_w2 * (second_moment(self.activation, q, dps=self.dps) if self.dps
                                else second_moment(self.activation, q)) + self.sigma_b2

    def __str__(self) -> str:
        rows = [("activation", self.activation.name), ("sigma_w^2", _fmt(self.sigma_w2)),
                ("sigma_b^2", _fmt(self.sigma_b2)), ("q*", _fmt(self.q_star)), ("c*", _fmt(self.c_star)),
                ("chi_1", _fmt(self.chi1)), ("chi_c (slope at c*)", _fmt(self.chi_c)),
                ("xi_q", _fmt(self.xi_q)), ("xi_c", _fmt(self.xi_c)), ("phase", self.phase)]
        w = max(len(k) for k, _ in rows)
        return "SignalPropagation\n" + "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)

    def _repr_latex_(self) -> str:
        items = [("q^*", self.q_star), ("c^*", self.c_star), (r"\chi_1", self.chi1), (r"\xi_q", self.xi_q),
                 (r"\xi_c", self.xi_c)]
        return "$" + r",\quad ".join(f"{k} = {_tex(v)}" for k, v in items) + r",\quad \text{" + self.phase + "}$"


def signal_propagation(activation_: Any, sigma_w2: Any, sigma_b2: Any, *, dps: int | None = None,
                       q0: float = 1.0, tol: float = 1e-13, max_iter: int = 100000) -> SignalPropagation:
    """q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2, c* and chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2].

    Schoenholz et al. (2017): deviations from the fixed points decay as exp(-l/xi) with
    xi_q^{-1} = -log(chi_1 + sigma_w^2 E[phi(u) phi''(u)]) and xi_c^{-1} = -log(sigma_w^2 I_phi'[q*, c* q*]);
    at the order-to-chaos transition chi_1 = 1 and xi_c diverges. The length-map slope is taken as
    sigma_w^2 dE[phi(sqrt(q) z)^2]/dq (equal to the above by Stein's lemma, and defined for kinked phi).

    Numeric (float or ``dps``) values find q* by bisection on the monotone map, c* by iteration of the
    correlation map from c = 0. Symbolic sigma's give sympy expressions: q* as a closed form when sympy
    solves the fixed-point equation (ReLU, linear), else as an unevaluated ``Eq``-defined ``Symbol``.

    Args:
        activation_: a catalogue name or :class:`~meanfield.Activation`.
        sigma_w2, sigma_b2: weight and bias variance.
        dps: mpmath precision.
        q0: starting length for the iteration (only used where the map has several fixed points).

    Example:
        >>> sp = signal_propagation("tanh", 1.0, 0.0)
        >>> sp.phase, float(sp.chi1)
        ('critical', 1.0)
        >>> sp = signal_propagation("relu", 1.0, 0.5)
        >>> float(sp.q_star), round(float(sp.chi1), 12)
        (1.0, 0.5)
        >>> round(float(sp.correlation_map(0.0)), 6)   # (1/2pi + 0.5)/1
        0.659155
    """
    from ..integrals.gaussian import cross_moment, second_moment

    phi = activation(activation_) if not isinstance(activation_, Activation) else activation_
    symbolic = any(isinstance(v, sympy.Basic) and not v.is_number for v in (sigma_w2, sigma_b2)) or phi.is_symbolic
    sw = check_real("sigma_w2", sigma_w2, minimum=0, strict_min=True)
    sb = check_real("sigma_b2", sigma_b2, minimum=0)
    if symbolic:
        return _signal_symbolic(phi, sympy.sympify(sw), sympy.sympify(sb))
    ctx = _Ctx("mp" if dps else "float", dps)
    with mpmath.workdps(dps or 15):
        sw, sb = ctx.num(sw), ctx.num(sb)
        E2 = (lambda q: second_moment(phi, q, dps=dps)) if dps else (lambda q: float(second_moment(phi, q)))
        length = lambda q: sw * E2(q) + sb  # noqa: E731
        q_star = _length_fixed_point(length, q0, ctx, tol)
        dphi = phi.derivative
        if q_star is None or not math.isfinite(float(q_star)):
            inf = mpmath.inf if dps else math.inf
            # no fixed point: lengths grow without bound, and the depth scales are undefined
            return SignalPropagation(phi, sw, sb, inf, None, None, None, None, None, None, "divergent", dps)
        q_eval = q_star
        chi1 = sw * (second_moment(dphi, q_eval, dps=dps) if dps else float(second_moment(dphi, q_eval)))
        # slope of the length map: a central difference (one-sided at q* = 0), step ~ eps^(1/3)
        h = max(abs(q_eval), ctx.num(1)) * (ctx.num(10) ** (-((dps or 15) // 3)))
        if q_eval - h > 0:
            slope_q = sw * (E2(q_eval + h) - E2(q_eval - h)) / (2 * h)
        else:  # one-sided at q* = 0, Richardson-extrapolated to O(h^2)
            d1 = (E2(q_eval + h) - E2(q_eval)) / h
            d2 = (E2(q_eval + h / 2) - E2(q_eval)) / (h / 2)
            slope_q = sw * (2 * d2 - d1)
        if float(q_star) == 0.0:
            # all inputs collapse to the same (zero) length: correlations are trivially 1
            c_star, chi_c = ctx.num(1), chi1
        else:
            def cmap(c):
                val = cross_moment(phi, q_eval, c * q_eval, dps=dps) if dps else float(
                    cross_moment(phi, q_eval, c * q_eval))
                return (sw * val + sb) / q_eval

            c_star = _correlation_fixed_point(cmap, chi1, ctx, tol, max_iter)
            chi_c = sw * (cross_moment(dphi, q_eval, c_star * q_eval, dps=dps) if dps
                          else float(cross_moment(dphi, q_eval, c_star * q_eval)))
        log = mpmath.log if dps else math.log
        inf = mpmath.inf if dps else math.inf
        tol_phase = 1e-12 if not dps else mpmath.mpf(10) ** (-dps + 3)
        # depth scales: inf at a marginal slope (within the accuracy of the derivative)
        xi_q = -1 / log(slope_q) if 0 < slope_q < 1 - 1e-7 else inf
        xi_c = -1 / log(chi_c) if 0 < chi_c < 1 - tol_phase else inf
        phase = "critical" if abs(chi1 - 1) <= tol_phase else ("ordered" if chi1 < 1 else "chaotic")
        return SignalPropagation(phi, sw, sb, q_star, c_star, chi1, chi_c, slope_q, xi_q, xi_c, phase, dps)


def _length_fixed_point(length, q0, ctx: _Ctx, tol: float):
    """The fixed point of the non-decreasing length map that iteration from q0 converges to.

    Returns None when the iteration diverges (no fixed point above q0), q0 itself when q0 is fixed
    (e.g. ReLU at sigma_w^2 = 2, sigma_b^2 = 0, where every q is). Monotone maps converge monotonically
    to the nearest fixed point in the direction of the first step; bisection keeps that bracket.
    """
    f = lambda x: length(x) - x  # noqa: E731
    q = ctx.num(q0)
    fq = f(q)
    eps = ctx.num(10) ** (-(ctx.dps or 15) + 2)
    if abs(fq) <= eps * max(abs(q), ctx.num(1)):
        return q
    if fq < 0:
        # the fixed point is below q: bracket [lo, hi] with f(lo) > 0 >= f(hi); f(0) = sigma_b^2 >= 0
        lo, hi = ctx.num(0), q
        if f(lo) <= 0:
            # zero is a fixed point; look for a positive one between 0 and q
            x = q
            for _ in range(80):
                x = x / 2
                if f(x) > 100 * eps * x:  # a positive value above quadrature rounding
                    lo, hi = x, x * 2
                    break
            else:
                return ctx.num(0)
    else:
        lo, hi = q, q
        while True:
            hi = hi * 2
            if hi > ctx.num(1e15):
                return None
            if f(hi) <= 0:
                break
            lo = hi
    for _ in range(4 * (ctx.dps or 16) + 60):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= abs(hi) * eps / 100:
            break
    return (lo + hi) / 2


def _correlation_fixed_point(cmap, chi1, ctx: _Ctx, tol: float, max_iter: int):
    if chi1 <= 1 + ctx.num(1e-12):
        return ctx.num(1)
    # chaotic: c = 1 is unstable; bisection on g(c) = cmap(c) - c over [-1, 1 - eps) finds the stable one
    c = ctx.num(0)
    for _ in range(max_iter):
        nc = cmap(c)
        if abs(nc - c) <= tol:
            c = nc
            break
        c = nc
    g = lambda x: cmap(x) - x  # noqa: E731
    lo, hi = c - ctx.num(1e-6), min(c + ctx.num(1e-6), ctx.num(1) - ctx.num(1e-15))
    if lo >= -1 and g(lo) > 0 > g(hi):
        for _ in range(200):
            mid = (lo + hi) / 2
            if g(mid) > 0:
                lo = mid
            else:
                hi = mid
        c = (lo + hi) / 2
    return c


def _signal_symbolic(phi: Activation, sw: sympy.Expr, sb: sympy.Expr) -> SignalPropagation:
    from ..integrals.gaussian import cross_moment, second_moment

    q = sympy.Symbol("q", positive=True)
    c = sympy.Symbol("c", real=True)
    length = sw * second_moment(phi, q) + sb
    q_star: Any
    try:
        sols = [s for s in sympy.solve(sympy.Eq(length, q), q) if s.is_positive is not False]
    except (NotImplementedError, TypeError, ValueError):
        sols = []
    if len(sols) == 1:
        q_star = sympy.simplify(sols[0])
    else:
        q_star = sympy.Symbol("q^*", positive=True)
    dphi = phi.derivative
    chi1 = sympy.simplify(sw * second_moment(dphi, q_star))
    slope_q = sympy.simplify(sw * sympy.diff(second_moment(phi, q), q).subs(q, q_star)) if not isinstance(
        q_star, sympy.Symbol) or q_star.name != "q^*" else sw * sympy.diff(second_moment(phi, q), q).subs(q, q_star)
    # c* = 1 in the ordered phase; the chaotic fixed point has no closed form in general
    c_star = sympy.S.One
    chi_c = chi1
    xi_q = -1 / sympy.log(slope_q)
    xi_c = -1 / sympy.log(chi_c)
    del c
    return SignalPropagation(phi, sw, sb, q_star, c_star, chi1, chi_c, slope_q, xi_q, xi_c, "symbolic", None)
