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

from dataclasses import dataclass, field, fields
from typing import Any

import mpmath
import numpy as np
import sympy

from ..errors import InvalidArgument, check_int, check_real
from ..spec.activations import Activation, activation
from ..spec.network import BatchNorm, LayerNorm, Network
from .backend import Arithmetic, Law, fmt, tex

__all__ = ["order_parameters", "OrderParameters", "LayerParameters", "min_samples_for", "check_samples", "apply_backward",
           "check_inputs_exist",
           "dense_forward", "norm_forward", "activation_forward", "backward_map", "network_alpha", "alpha_normaliser"]

# phi' = 1 at the output layer; built from the exact sympy 1 (the catalogue would store the float 1.0,
# which would leak floats into symbolic derivations)
_ONE = Activation(name="1", expr=sympy.S.One)
_LINEAR = activation("linear")


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
        ctx = Arithmetic(self.mode, self.dps)
        Tn = ctx.num(self.samples if self.samples is not None else 1)
        return tuple((gd / Tn, go / Tn) for gd, go in self._sums(width, bias=bias))

    def _sums(self, width: Any = None, *, bias: bool = True) -> tuple[tuple[Any, Any], ...]:
        """T times gram_layers: the per-layer sums before the 1/T (kept apart so T cancels exactly)."""
        net = self.network
        ctx = Arithmetic(self.mode, self.dps)
        # the widths once (Network.widths is O(L): per layer it made the statistics O(L^2) in depth)
        sizes = _widths(net, width, ctx) if width is not None else None
        out = []
        for l in range(1, net.depth + 1):
            below, here = self.layers[l - 1], self.layers[l]
            if width is None:
                a = ctx.num(net.alphas[l - 1])
                h1, h2 = a * below.qhat1, a * below.qhat2
            else:
                Ml = sizes[l - 1]
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
        ctx = Arithmetic(self.mode, self.dps)
        A = alpha_normaliser(self.network, ctx)
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
                         *[fmt(getattr(p, n)) for n in names]])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        T = "-" if self.samples is None else self.samples
        return (f"OrderParameters ({self.network.describe()}, T={T})\n" + "\n".join(lines))

    def __str__(self) -> str:
        return self.table()

    def _repr_latex_(self) -> str:
        heads = {"q1": "q_1", "q2": "q_2", "qhat1": r"\hat q_1", "qhat2": r"\hat q_2", "qtilde1": r"\tilde q_1",
                 "qtilde1_mean": r"\tilde q_1^{\rm mean}", "qtilde2": r"\tilde q_2",
                 "qtilde2_same": r"\tilde q_2^{\rm same}"}
        cols = list(heads)
        body = [" & ".join(["l"] + [heads[c] for c in cols]) + r" \\ \hline"]
        for p in self.layers:
            body.append(" & ".join([str(p.layer)] + [tex(getattr(p, c)) for c in cols]) + r" \\")
        return "$$\\begin{array}{" + "c" * (len(cols) + 1) + "}" + "\n".join(body) + r"\end{array}$$"


def _widths(net: Network, width: Any, ctx: Arithmetic) -> tuple:
    """(M_0, ..., M_{L-1}) with M_l = alpha_l M (exact integers for numeric M)."""
    if isinstance(width, sympy.Basic) and not width.is_number:
        return tuple(ctx.num(a) * width for a in net.alphas)
    if ctx.mode == "sympy":
        return tuple(sympy.nsimplify(ctx.num(a) * int(width)) for a in net.alphas)
    return tuple(ctx.num(m) for m in net.widths(int(width))[:-1])


def network_alpha(net: Network, ctx: Arithmetic) -> Any:
    """alpha = sum_{l=1}^{L-1} alpha_l alpha_{l-1} (:attr:`Network.alpha`, so that P ~ alpha M^2) in the backend's numbers.

    Float width ratios are converted one by one before the sum, as every other parameter is: under sympy
    they stay exact rationals (0.5 -> 1/2) and under mpmath the products carry the working precision.

    Example:
        >>> network_alpha(Network(3, "relu", 2, 0, alphas=(1, 2, 1)), Arithmetic("float"))
        4.0
        >>> network_alpha(Network(3, "relu", 2, 0, alphas=(1, 0.5, 1)), Arithmetic("sympy"))
        1
    """
    if all(isinstance(a, (int, sympy.Basic)) for a in net.alphas):
        return ctx.num(net.alpha)  # exact already
    a = [ctx.num(x) for x in net.alphas]
    return sum((a[l] * a[l - 1] for l in range(1, len(a))), ctx.num(0))


def alpha_normaliser(net: Network, ctx: Arithmetic) -> Any:
    """The normaliser of the kappa's: alpha (:func:`network_alpha`), or alpha_0 for a depth-1 network (no hidden layer).

    Example:
        >>> alpha_normaliser(Network(1, "relu", 2, 0, alphas=(3,)), Arithmetic("float"))
        3.0
    """
    if net.depth == 1:
        return ctx.num(net.alphas[0])
    return network_alpha(net, ctx)


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


def check_samples(net: Network, samples: Any, purpose: str = "order") -> Any:
    """The batch size T as the rules need it: None without batch norm, a symbol, or an int >= min_samples_for.

    Raises:
        InvalidArgument: T missing with batch norm, or too small, with the reason per normalization layer.

    Example:
        >>> check_samples(Network(3, "relu", 2, 0), None) is None
        True
        >>> check_samples(Network(3, "relu", 2, 0, norms=[BatchNorm(1)]), 2)
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: samples=2 is not allowed: expected an integer >= 4 for this network...
    """
    if samples is None:
        if any(isinstance(n, BatchNorm) for n in net.norms):
            raise InvalidArgument("samples", None, "the batch size T (batch norm's statistics depend on it)")
        return None
    if isinstance(samples, sympy.Basic) and not samples.is_number:
        return samples
    T = check_int("samples", samples, minimum=1)
    check_inputs_exist(net, T)
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


def check_inputs_exist(net: Network, T: int) -> None:
    """Refuse input statistics that no T exchangeable inputs have: q2 >= -q1/(T-1) (the sampler's check too).

    The T x T covariance (q1 - q2) I + q2 11^T of an input entry over the batch has eigenvalues q1 - q2 and
    q1 + (T-1) q2; both must be >= 0 (|q2| <= q1 is checked when the Network is built).

    Example:
        >>> check_inputs_exist(Network(2, "relu", 2, 0, input_q2=-0.5), 4)
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: input_q2=-0.5 is not allowed: expected >= -input_q1/(T-1) = -0.333333 for T=4 samples ...
    """
    if T < 2:
        return
    q1, q2 = net.input_q1, net.input_q2
    lowest = q1 + (T - 1) * q2
    if isinstance(lowest, sympy.Basic) and not lowest.is_number:
        bad = bool(sympy.sympify(lowest).is_negative)
    else:
        bad = float(lowest) < -1e-12 * float(q1)  # the same tolerance as the sampler's check_batch
    if bad:
        bound = -q1 / (T - 1)
        shown = f"{float(bound):.6g}" if not isinstance(bound, sympy.Basic) or bound.is_number else str(bound)
        raise InvalidArgument("input_q2", q2, f">= -input_q1/(T-1) = {shown} for T={T} samples",
                              "the T x T input covariance (q1-q2) I + q2 11^T must be positive semi-definite: "
                              "no T inputs have these statistics")


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


def dense_forward(ctx: Arithmetic, qhat1: Any, qhat2: Any, sw: Any, sb: Any) -> tuple[Any, Any]:
    """u = W h + b: q_1 = sigma_w^2 qhat_1 + sigma_b^2, q_2 = sigma_w^2 qhat_2 + sigma_b^2.

    Example:
        >>> dense_forward(Arithmetic("float"), 1.0, 0.5, 2.0, 0.1)
        (2.1, 1.1)
    """
    return sw * qhat1 + sb, sw * qhat2 + sb


def norm_forward(ctx: Arithmetic, norm: Any, q1: Any, q2: Any, T: Any, layer: int) -> Law:
    """The law of the normalised pre-activation (module docstring: Gaussian, or the sphere law for batch norm).

    Example:
        >>> norm_forward(Arithmetic("sympy"), BatchNorm(1, center_only=True), sympy.Integer(2), sympy.Integer(1), 4, 1)
        Law(kind='gaussian', q1=3/4, q2=-1/4, T=4)
    """
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


def _check_variance(ctx: Arithmetic, v: Any, layer: int) -> None:
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


def activation_forward(ctx: Arithmetic, law: Law, phi: Activation) -> tuple[Any, Any]:
    """h = phi(u): qhat_1 = E[phi(u_a)^2], qhat_2 = E[phi(u_a) phi(u_b)] under the law.

    Example:
        >>> activation_forward(Arithmetic("sympy"), Law("gaussian", sympy.Integer(2), sympy.Integer(0)), activation("relu"))
        (1, 1/pi)
    """
    return ctx.second(phi, law), ctx.cross(phi, law)


def _x_times_derivative(phi: Activation | None) -> Activation:
    """x phi'(x): phi itself when phi is positively homogeneous of degree 1 (Euler), x at the output."""
    from ..integrals.sphere import homogeneity_degree, times_x
    if phi is None:
        return _LINEAR
    if homogeneity_degree(phi) == 1:
        return phi
    return times_x(phi.derivative)


def backward_map(ctx: Arithmetic, norm: Any, law: Law, phi: Activation | None, q1: Any, q2: Any, T: Any):
    """The linear map of (X_=, X_!=) through activation (phi; None = identity at the output) and norm.

    Returns ("diagonal", a_1, a_2): (X_=, X_!=) -> (a_1 X_=, a_2 X_!=), or ("projector", e_1, e_2):
    (X_=, X_!=) -> (Y, -Y) with Y = e_1 X_= + e_2 X_!= (module docstring).

    Example:
        >>> law = Law("gaussian", sympy.Integer(2), sympy.Integer(0))
        >>> backward_map(Arithmetic("sympy"), None, law, activation("relu"), law.q1, law.q2, None)
        ('diagonal', 1/2, 1/4)
    """
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


def apply_backward(bmap: tuple, x_eq: Any, x_ne: Any) -> tuple[Any, Any]:
    """(X_=, X_!=) through one :func:`backward_map`: (a_1 X_=, a_2 X_!=), or (Y, -Y) for a projector.

    Example:
        >>> apply_backward(("diagonal", 2, 3), 1, 1), apply_backward(("projector", 2, 3), 1, 1)
        ((2, 3), (5, -5))
    """
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
    T = check_samples(net, samples)
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
    ctx = Arithmetic(mode, dps)
    if mode == "mp":
        with mpmath.workdps(dps):
            return _fold(net, T, ctx, sw, sb)
    return _fold(net, T, ctx, sw, sb)


# Largest order parameter (and product qhat qtilde, the terms of the kappa's) the float path lets through: the
# statistics square sums of M qhat qtilde (s ~ kappa^2 M^2 ...), so values beyond ~1e100 overflow float64 there
# (and a fold that reached inf would continue as inf * 0 = nan: null in JSON, "no outlier" in the tables).
_FLOAT_RANGE = 1e100


def _check_range(net: Network, ctx: Arithmetic, layer: int, direction: str, **values: Any) -> None:
    """InvalidArgument when an order parameter of the float path is non-finite or beyond _FLOAT_RANGE."""
    if ctx.mode != "float":
        return  # mpmath's exponent range does not overflow; sympy is exact
    for name, value in values.items():
        if value is None or (isinstance(value, float) and abs(value) <= _FLOAT_RANGE):  # the common case, fast
            continue
        with np.errstate(all="ignore"):
            magnitude = np.abs(np.asarray(value, dtype=float))
        if np.all(magnitude <= _FLOAT_RANGE):  # False for nan too
            continue
        shown = float(np.max(np.where(np.isnan(magnitude), np.inf, magnitude)))
        sw = values_text_short(net.sigma_w2)
        if direction == "activation":  # q^l was within range (checked first): phi itself made the value large
            phi = net.phi(layer)
            raise InvalidArgument(
                "activation", phi.name, f"an activation whose moments fit in float64 (|value| <= {_FLOAT_RANGE:.0e})",
                f"{name} = E[phi(u)...] at layer {layer} is {shown:.3g}; evaluate in mpmath (--dps 30 on the "
                "command line, dps=30 in the API)")
        if direction == "forward":
            why = (f"{name} at layer {layer} is {shown:.3g}: the pre-activation variance grows layer by layer "
                   f"(sigma_w2={sw})")
        else:
            why = (f"{name} at layer {layer} is {shown:.3g}: the backward sums grow by sigma_w2 E[phi'(u)^2] per "
                   f"layer (sigma_w2={sw})")
        raise InvalidArgument(
            "depth", net.depth, f"a network whose order parameters fit in float64 (|value| <= {_FLOAT_RANGE:.0e})",
            why + "; evaluate in mpmath (--dps 30 on the command line, dps=30 in the API"
            + _slow_mp_note(net) + "), or use a smaller sigma_w2 or depth")


def _slow_mp_note(net: Network) -> str:
    """mpmath is fast with closed-form moments (relu, erf, ...) and slow by nested quadrature (tanh: minutes
    per layer at large variances): say so before suggesting it."""
    from ..integrals.closed_forms import closed_form

    slow = sorted({phi.name for phi in net.activation if closed_form(phi) is None
                   or closed_form(phi.derivative) is None})
    if not slow or net.depth == 1:
        return ""
    return (f"; slow for {', '.join(slow)}, whose moments have no closed form: nested quadrature, up to minutes "
            "per layer; erf has one")


def values_text_short(values: tuple) -> str:
    """sigma_w2 for a message: one value, or the range of a per-layer tuple."""
    nums = [v for v in values if not isinstance(v, np.ndarray)]
    if len(nums) < len(values):
        return "an array"
    return str(nums[0]) if len(set(map(str, nums))) == 1 else f"{min(map(float, nums)):g}..{max(map(float, nums)):g}"


def _fold(net: Network, T: Any, ctx: Arithmetic, sw: tuple, sb: tuple) -> OrderParameters:
    L = net.depth
    sw = tuple(ctx.num(v) for v in sw)
    sb = tuple(ctx.num(v) for v in sb)
    zero = ctx.num(0)
    layers = [LayerParameters(0, "none", qhat1=ctx.num(net.input_q1), qhat2=ctx.num(net.input_q2))]
    laws: list[Law | None] = [None]
    # forward fold
    for l in range(1, L + 1):
        below = layers[-1]
        q1, q2 = dense_forward(ctx, below.qhat1, below.qhat2, sw[l - 1], sb[l - 1])
        _check_range(net, ctx, l, "forward", q1=q1, q2=q2)
        norm = net.norm_at(l)
        law = norm_forward(ctx, norm, q1, q2, T, l)
        qhat1 = qhat2 = None
        if l < L:
            qhat1, qhat2 = activation_forward(ctx, law, net.phi(l))
            _check_range(net, ctx, l, "activation", qhat1=qhat1, qhat2=qhat2)
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
        bmap = backward_map(ctx, net.norm_at(l), laws[l], phi, p.q1, p.q2, T)
        d_eq, d_ne = apply_backward(bmap, d_eq, d_ne)
        o_eq, o_ne = apply_backward(bmap, o_eq, o_ne)
        chi_scale = sw[l] if l < L else ctx.num(1)
        layers[l] = p.replace(qtilde1=d_eq, qtilde1_mean=d_ne, qtilde2=o_ne, qtilde2_same=o_eq,
                              chi1=chi_scale * bmap[1], chi2=chi_scale * bmap[2])
        below = layers[l - 1]
        _check_range(net, ctx, l, "backward", qtilde1=d_eq, qtilde1_mean=d_ne, qtilde2=o_ne, qtilde2_same=o_eq,
                     **{"qhat1 qtilde1": below.qhat1 * d_eq, "qhat2 qtilde2": below.qhat2 * o_ne})
    arrays = [v for v in (*sw, *sb) if isinstance(v, np.ndarray)]
    if arrays:
        # a grid: every field as an array of the grid's shape (sphere-law values do not depend on sigma)
        shape = np.broadcast_shapes(*[a.shape for a in arrays])

        def grid(v):
            return None if v is None else np.broadcast_to(np.asarray(v, dtype=float), shape).copy()

        layers = [p.replace(**{f.name: grid(getattr(p, f.name)) for f in fields(p)
                               if f.name not in ("layer", "norm", "law")}) for p in layers]
    return OrderParameters(net, T, tuple(layers), ctx.mode, ctx.dps, sw, sb)
