"""Finite random networks: draw, forward pass with literal batch/layer norm, exact backward pass.

The model is the one of :mod:`meanfield.spec.network`: for l = 1..L

    u^l = W^l h^{l-1} + b^l,   ũ^l = N_l(u^l),   h^l = phi_l(ũ^l) (l < L),   f = ũ^L,

with N_l the identity, a batch norm (per unit over the T samples: (u - mean_t u) / std_t u, population
variance, no epsilon; or ``center_only``: u - mean_t u) or a layer norm (per sample over the units).
Arrays are stored sample-major: u^l has shape (T, M_l), W^l has shape (M_l, M_{l-1}); the outputs
are reported as f[k, t], shape (C, T), so that the row index of the Jacobian is a = k*T + t.

Draw order (so that a seed reproduces a network everywhere): one ``numpy.random.default_rng(seed)``;
for l = 1..L: W^l as ``standard_normal((M_l, M_{l-1}))`` times sqrt(sigma_w2_l / M_{l-1}), then b^l
as ``standard_normal(M_l)`` times sqrt(sigma_b2_l) (drawn even when sigma_b2 = 0, to keep the
stream aligned); last the inputs, ``z = standard_normal((T, M_0))`` and

    x = sqrt(q1 - q2) (z - zbar) + sqrt(q1 + (T - 1) q2) zbar,     zbar = mean over the T samples,

which has E x_i(t)^2 = q1 and E x_i(t) x_i(s) = q2 exactly (q1 = input_q1, q2 = input_q2) and also
covers negative q2 down to the positive-semi-definite limit -q1/(T - 1). Because the inputs come last,
changing T or the input statistics leaves the weights unchanged.

A real batch (``draw(..., inputs=X)``, X of shape (T, d), see :mod:`meanfield.spec.inputs`) replaces the
drawn inputs: nothing is drawn for them, and the first layer's fan-in is d, so W^1 is
``standard_normal((M_1, d))`` times sqrt(sigma_w2_1 / d); ``input_q1`` and ``input_q2`` are not used. The
weights are drawn in the same order from the same stream, so a seed names the same network as without
inputs wherever the shapes agree (d = M_0); with d != M_0 the stream is consumed differently from W^1 on.

All of this is float64 and exact: :func:`vjp` is the exact gradient of sum_{k,t} c[k,t] f_k(t) with
respect to every weight and bias, including the coupling of the samples through batch statistics.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy
from scipy.special import erf

from ..spec.activations import X, Activation
from ..errors import InvalidArgument, check_int
from ..spec.inputs import check_inputs
from ..spec.network import BatchNorm, Network

__all__ = ["Draw", "Trace", "Gradients", "DegenerateBatch", "draw", "forward", "vjp", "check_batch", "dphi",
           "norm_backward", "backward_layer"]


class DegenerateBatch(InvalidArgument):
    """A normalization whose statistics vanish: zero batch variance of a unit (or zero layer variance).

    Batch norm divides by the batch standard deviation of each unit; when all T samples give the same
    pre-activation (e.g. a step activation below maps the whole batch to one point) that is 0/0. The
    sampler reports it, naming the layer and the unit (or the sample, for layer norm), instead of
    returning NaN.

    Example:
        >>> err = DegenerateBatch(2, "unit", 5, 0.0)
        >>> print(err)
        degenerate batch: batch norm at layer 2, unit 5 has zero variance (std 0, rounding level), so normalizing would give 0/0
    """

    def __init__(self, layer: int, what: str, index: int, std: float):
        self.layer, self.what, self.index, self.std = layer, what, index, std
        kind = "sample" if what == "sample" else "unit"
        norm = "layer norm" if kind == "sample" else "batch norm"
        super().__init__("batch", f"layer {layer}, {kind} {index}", f"non-zero variance at every {norm}")
        # a message that says what happened, not only what is allowed
        ValueError.__init__(self, f"degenerate batch: {norm} at layer {layer}, {kind} {index} has zero "
                                  f"variance (std {std:.3g}, rounding level), so normalizing would give 0/0")

    def __reduce__(self):
        return (type(self), (self.layer, self.what, self.index, self.std))


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only float64 array: the caller's array itself if it already is one, else a copy (never
    freezes an array the caller may still write to)."""
    if isinstance(a, np.ndarray) and a.dtype == np.float64 and a.flags.c_contiguous and not a.flags.writeable:
        return a
    a = np.array(a, dtype=np.float64, order="C", copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Draw:
    """One sampled network and batch: weights W^l (M_l x M_{l-1}), biases b^l (M_l), inputs x (T x M_0).

    Arrays are read-only; build a changed copy with ``dataclasses.replace(draw, weights=...)``.

    Example:
        >>> d = draw(Network(2, "relu", 2, 0.1, outputs=3), width=4, samples=5, seed=0)
        >>> [w.shape for w in d.weights], d.inputs.shape
        ([(4, 4), (3, 4)], (5, 4))
    """

    weights: tuple
    biases: tuple
    inputs: np.ndarray
    seed: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "weights", tuple(_readonly(w) for w in self.weights))
        object.__setattr__(self, "biases", tuple(_readonly(b) for b in self.biases))
        object.__setattr__(self, "inputs", _readonly(self.inputs))


@dataclass(frozen=True, eq=False)
class Gradients:
    """Gradients with respect to every W^l and b^l, in the same shapes as the parameters."""

    weights: tuple
    biases: tuple


@dataclass(frozen=True, eq=False)
class Trace:
    """Everything the forward pass computed, indexed by layer l = 1..L at position l - 1.

    Attributes:
        weights, biases: the parameters used.
        inputs: x, shape (T, M_0).
        pre: u^l, shape (T, M_l).
        normalized: ũ^l = N_l(u^l) (the same array as ``pre[l-1]`` when layer l has no norm).
        means: batch means (M_l,) for batch norm, per-sample means (T,) for layer norm, else None.
        scales: batch std (M_l,) for full batch norm, per-sample std (T,) for layer norm, else None.
        post: h^l = phi_l(ũ^l) for l = 1..L-1.
        outputs: f[k, t] = ũ^L_k(t), shape (C, T).
    """

    weights: tuple
    biases: tuple
    inputs: np.ndarray
    pre: tuple
    normalized: tuple
    means: tuple
    scales: tuple
    post: tuple
    outputs: np.ndarray

    def hidden(self, layer: int) -> np.ndarray:
        """h^layer (h^0 = the inputs), shape (T, M_layer)."""
        return self.inputs if layer == 0 else self.post[layer - 1]


# ------------------------------------------------------------------------------------------------
# activations as numpy functions
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=128)
def _derivative(act: Activation) -> Activation:
    """phi' for the backward pass: the catalogued derivative, or the almost-everywhere one.

    step and sign have a Dirac delta as distributional derivative; backpropagation (and the FIM of
    any batch that does not sit exactly on the jump, a probability-zero event) uses the a.e.
    derivative 0, so the delta is dropped here rather than refused.
    """
    try:
        return act.derivative
    except InvalidArgument:
        d = sympy.diff(act.expr, X)
        d = d.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.S.Zero)
        return Activation(name=f"{act.name}'", expr=sympy.simplify(d), family="custom")


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _kernels(family: str, params: dict) -> Any:
    """Plain numpy versions of the commonest catalogue entries (the generic path goes through sympy's
    lambdify, whose Max/Piecewise translations are slow and memory hungry on (T x M) arrays).
    They agree with ``Activation.__call__`` (tested)."""
    a = float(params.get("a", 0.0)) if "a" in params else None
    table = {
        "relu": lambda x: np.maximum(x, 0.0),
        "step": lambda x: np.heaviside(x, 0.5),
        "linear": lambda x: np.array(x, dtype=np.float64, copy=True),
        "abs": np.abs,
        "sign": np.sign,
        "tanh": np.tanh,
        "sin": np.sin,
        "cos": np.cos,
        "erf": erf,
        "erf_prime": lambda x: (2.0 / math.sqrt(math.pi)) * np.exp(-x * x),
        "gelu": lambda x: 0.5 * x * (1.0 + erf(x / _SQRT2)),
    }
    if family == "leaky_relu":
        return lambda x: np.where(x < 0, a * x, x)
    if family == "leaky_step":
        return lambda x: np.where(x < 0, a, 1.0)
    if family == "constant":
        value = float(params.get("value", 1))
        return lambda x: np.full(np.shape(x), value)
    return table.get(family)


@functools.lru_cache(maxsize=256)
def _numeric(act: Activation) -> Any:
    """A fast numpy callable for phi (checked numeric once, not on every call)."""
    act._require_numeric()
    fast = _kernels(act.family, dict(act.params))
    if fast is not None:
        return fast
    return act


@functools.lru_cache(maxsize=256)
def _numeric_derivative(act: Activation) -> Any:
    if act.family == "tanh":
        return lambda x: 1.0 - np.tanh(x) ** 2
    if act.family == "gelu":  # Phi(x) + x phi(x)
        return lambda x: 0.5 * (1.0 + erf(x / _SQRT2)) + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    if act.family in ("step", "sign", "constant", "leaky_step"):
        return lambda x: np.zeros(np.shape(x))
    return _numeric(_derivative(act))


def _phi(net: Network, layer: int, x: np.ndarray) -> np.ndarray:
    return np.asarray(_numeric(net.phi(layer))(x), dtype=np.float64)


def dphi(net: Network, layer: int, x: np.ndarray) -> np.ndarray:
    """phi_layer'(x) element-wise, float64, broadcast to the shape of x (0 for step-like activations).

    Example:
        >>> net = Network(2, "relu", 2, 0)
        >>> dphi(net, 1, np.array([-1.0, 2.0])).tolist()
        [0.0, 1.0]
    """
    return np.broadcast_to(np.asarray(_numeric_derivative(net.phi(layer))(x), dtype=np.float64), np.shape(x))


# ------------------------------------------------------------------------------------------------
# draw
# ------------------------------------------------------------------------------------------------
def _check_network(net: Any) -> Network:
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    if _symbolic(net):
        raise InvalidArgument("net", net.describe(), "a network with numeric parameters to sample it",
                              "substitute the symbols first")
    return net


@functools.lru_cache(maxsize=64)
def _symbolic(net: Network) -> bool:
    return net.is_symbolic


def check_batch(net: Network, width: Any, samples: Any, inputs: Any = None) -> tuple[tuple[int, ...], int]:
    """Validate (width, samples) for ``net``: (widths M_0..M_{L-1}, C) and T, or InvalidArgument.

    With ``inputs`` (a T x d batch) T is the batch's and M_0 is d; ``samples`` may then be None, and
    otherwise must equal T.

    Example:
        >>> check_batch(Network(2, "relu", 2, 0), 8, None, inputs=np.zeros((3, 5)))
        ((5, 8, 1), 3)
    """
    _check_network(net)
    M = check_int("width", width, minimum=1)
    if inputs is not None:
        X = check_inputs(inputs, samples=samples)
        T = X.shape[0]
        sizes = (X.shape[1], *net.widths(M)[1:])
    else:
        T = check_int("samples", samples, minimum=1)
        sizes = net.widths(M)
    need = net.min_samples()
    if T < need:
        norms = ", ".join(str(n) for n in net.norms if n.min_samples() > T)
        raise InvalidArgument("samples", T, f"T >= {need} for this network's normalization ({norms})",
                              "batch norm needs 2 samples for a mean and 3 for a variance with a gradient")
    if inputs is not None:
        return sizes, T  # the batch is given: the isotropic input statistics are not used
    q1, q2 = float(net.input_q1), float(net.input_q2)
    if T > 1 and q1 + (T - 1) * q2 < -1e-12 * q1:
        raise InvalidArgument("input_q2", net.input_q2,
                              f">= -input_q1/(T-1) = {-q1 / (T - 1):.6g} for T={T} samples",
                              "the T x T input covariance (q1-q2) I + q2 11^T must be positive semi-definite")
    return sizes, T


def draw(net: Network, width: int, samples: int | None = None, seed: int = 0, inputs: Any = None) -> Draw:
    """W^l ~ N(0, sigma_w2/M_{l-1}), b^l ~ N(0, sigma_b2), T inputs x(t) ~ N(0, input statistics) or the given X.

    The draw order is documented in the module docstring (weights and biases layer by layer, inputs
    last), so a seed names one network for every width-independent purpose.

    Args:
        net: the network spec (numeric).
        width: base width M (M_l = alpha_l M).
        samples: T, the number of inputs in the batch (may be None when ``inputs`` is given; otherwise it
            must equal the batch's T).
        seed: the numpy Generator seed (an integer >= 0).
        inputs: a real batch X of shape (T, d) used as the inputs (nothing is drawn for them); the first
            layer then has fan-in d: W^1 ~ N(0, sigma_w2 / d).

    Example:
        >>> d = draw(Network(3, "tanh", 1.5, 0.05, outputs=2), width=8, samples=4, seed=1)
        >>> d.weights[0].shape, d.biases[2].shape, d.inputs.shape
        ((8, 8), (2,), (4, 8))
        >>> X = np.arange(15.0).reshape(3, 5)
        >>> e = draw(Network(3, "tanh", 1.5, 0.05, outputs=2), width=8, seed=1, inputs=X)
        >>> e.weights[0].shape, bool(np.array_equal(e.inputs, X))
        ((8, 5), True)
    """
    sizes, T = check_batch(net, width, samples, inputs)
    seed = check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for l in range(1, net.depth + 1):
        fan_in = sizes[l - 1]
        weights.append(rng.standard_normal((sizes[l], fan_in)) * math.sqrt(float(net.sigma_w2[l - 1]) / fan_in))
        biases.append(rng.standard_normal(sizes[l]) * math.sqrt(float(net.sigma_b2[l - 1])))
    if inputs is not None:
        return Draw(tuple(weights), tuple(biases), check_inputs(inputs), seed)
    z = rng.standard_normal((T, sizes[0]))
    q1, q2 = float(net.input_q1), float(net.input_q2)
    zbar = z.mean(axis=0, keepdims=True)
    # (q1-q2) Pi + (q1+(T-1)q2) 11^T/T = (q1-q2) I + q2 11^T: the exact input covariance over samples.
    x = math.sqrt(max(q1 - q2, 0.0)) * (z - zbar) + math.sqrt(max(q1 + (T - 1) * q2, 0.0)) * zbar
    return Draw(tuple(weights), tuple(biases), x, seed)


# ------------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------------
def _split(params: Any) -> tuple[tuple, tuple]:
    if hasattr(params, "weights") and hasattr(params, "biases"):
        return tuple(params.weights), tuple(params.biases)
    if isinstance(params, (tuple, list)) and len(params) == 2:
        return tuple(params[0]), tuple(params[1])
    raise InvalidArgument("params", type(params).__name__, "a Draw, a Gradients-like object or (weights, biases)")


def _tiny(u: np.ndarray, axis: int) -> np.ndarray:
    """The standard deviation below which a normalized unit is rounding noise, not data."""
    n = u.shape[axis]
    return 4.0 * n * np.finfo(np.float64).eps * np.max(np.abs(u), axis=axis)


def _normalize(norm, layer: int, u: np.ndarray):
    if norm is None:
        return u, None, None
    axis = 0 if isinstance(norm, BatchNorm) else 1
    mean = u.mean(axis=axis)
    centered = u - (mean[None, :] if axis == 0 else mean[:, None])
    if isinstance(norm, BatchNorm) and norm.center_only:
        return centered, mean, None
    std = np.sqrt(np.mean(centered * centered, axis=axis))
    bad = std <= _tiny(u, axis)
    if np.any(bad):
        index = int(np.argmax(bad))
        raise DegenerateBatch(layer, "unit" if axis == 0 else "sample", index, float(std[index]))
    return centered / (std[None, :] if axis == 0 else std[:, None]), mean, std


def _overflow(argument: str, value: Any, what: str, net: Network) -> InvalidArgument:
    """The sampler computes in float64 only (no --dps): say what overflowed and what to change."""
    return InvalidArgument(argument, value, "a network whose sampled values fit in float64",
                           f"{what}; use a smaller sigma_w2 (now {'/'.join(sorted({f'{float(v):g}' for v in net.sigma_w2}))}), "
                           "depth or input_q1, or a bounded activation")


def forward(net: Network, params: Any, x: np.ndarray | None = None) -> Trace:
    """u^l = W^l h^{l-1} + b^l, ũ^l = N_l(u^l), h^l = phi_l(ũ^l): the whole batch, every layer.

    Args:
        net: the network spec.
        params: a :class:`Draw` (or anything with ``weights`` and ``biases``, or a pair of tuples).
        x: inputs (T, M_0); default ``params.inputs``.

    Returns:
        a :class:`Trace` (outputs f[k, t] of shape (C, T)).

    Raises:
        DegenerateBatch: a normalized unit (or layer-normed sample) has zero variance.

    Example:
        >>> net = Network(2, "relu", 2, 0, outputs=2, norms=[BatchNorm("last")])
        >>> tr = forward(net, draw(net, 6, 5, seed=0))
        >>> tr.outputs.shape, bool(np.allclose(tr.outputs.mean(axis=1), 0))
        ((2, 5), True)
    """
    _check_network(net)
    weights, biases = _split(params)
    if x is None:
        x = getattr(params, "inputs", None)
        if x is None:
            raise InvalidArgument("x", None, "inputs of shape (T, M_0) (params has none)")
    x = np.asarray(x, dtype=np.float64)
    L = net.depth
    if len(weights) != L or len(biases) != L:
        raise InvalidArgument("params", f"{len(weights)} weights, {len(biases)} biases", f"{L} of each")
    if x.ndim != 2 or x.shape[1] != np.shape(weights[0])[1]:
        raise InvalidArgument("x", f"shape {x.shape}", f"shape (T, {np.shape(weights[0])[1]})")
    if x.shape[0] < net.min_samples():
        raise InvalidArgument("x", f"{x.shape[0]} samples", f"at least {net.min_samples()} for the normalization")
    pre, normed, means, scales, post = [], [], [], [], []
    h = x
    for l in range(1, L + 1):
        W, b = np.asarray(weights[l - 1], dtype=np.float64), np.asarray(biases[l - 1], dtype=np.float64)
        if W.shape[1] != h.shape[1] or b.shape != (W.shape[0],):
            raise InvalidArgument("params", f"layer {l}: W {W.shape}, b {b.shape}",
                                  f"W of shape (M_{l}, {h.shape[1]}) and b of shape (M_{l},)")
        with np.errstate(over="ignore", invalid="ignore"):
            u = h @ W.T + b
        if not np.all(np.isfinite(u)):
            raise _overflow("depth", net.depth, f"the pre-activations u^{l} overflow float64 at layer {l}", net)
        v, mean, scale = _normalize(net.norm_at(l), l, u)
        pre.append(u), normed.append(v), means.append(mean), scales.append(scale)
        if l < L:
            with np.errstate(over="ignore", invalid="ignore"):
                h = _phi(net, l, v)
            if not np.all(np.isfinite(h)):
                top = float(np.max(np.abs(v)))
                raise _overflow("activation", net.phi(l).name,
                                f"phi(u) overflows float64 at layer {l} (|u| up to {top:.3g})", net)
            post.append(h)
    return Trace(tuple(weights), tuple(biases), x, tuple(pre), tuple(normed), tuple(means), tuple(scales),
                 tuple(post), np.ascontiguousarray(normed[-1].T))


# ------------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------------
def norm_backward(net: Network, trace: Trace, layer: int, g: np.ndarray) -> np.ndarray:
    """Cotangent at u^layer from the cotangent g at ũ^layer, shape (..., T, M_layer) (batched).

    batch norm (per unit over samples, axis -2): (g - mean_t g - ũ mean_t(g ũ)) / sigma;
    center-only: g - mean_t g; layer norm (per sample over units, axis -1): the same over units.
    """
    norm = net.norm_at(layer)
    if norm is None:
        return g
    v = trace.normalized[layer - 1]
    if isinstance(norm, BatchNorm):
        out = g - g.mean(axis=-2, keepdims=True)
        if norm.center_only:
            return out
        out -= v * np.mean(g * v, axis=-2, keepdims=True)
        return out / trace.scales[layer - 1]
    out = g - g.mean(axis=-1, keepdims=True)
    out -= v * np.mean(g * v, axis=-1, keepdims=True)
    return out / trace.scales[layer - 1][:, None]


def backward_layer(net: Network, trace: Trace, layer: int, du: np.ndarray) -> np.ndarray:
    """Cotangent at u^{layer-1} from the cotangent at u^layer (batched over leading axes)."""
    W = np.asarray(trace.weights[layer - 1])
    g = (du @ W) * dphi(net, layer - 1, trace.normalized[layer - 2])
    return norm_backward(net, trace, layer - 1, g)


def vjp(net: Network, trace: Trace, cotangent: np.ndarray) -> Gradients:
    """d/dtheta sum_{k,t} c[k,t] f_k(t): exact gradient w.r.t. all W^l and b^l (batch norm coupled).

    Args:
        net: the network spec used for ``trace``.
        trace: the forward pass (:func:`forward`).
        cotangent: c, shape (C, T) like ``trace.outputs``.

    Returns:
        :class:`Gradients` with ``weights[l-1]`` of shape (M_l, M_{l-1}) and ``biases[l-1]`` (M_l,).

    Example:
        >>> net = Network(2, "tanh", 1, 0.1, outputs=1)
        >>> d = draw(net, 3, 2, seed=0)
        >>> tr = forward(net, d)
        >>> g = vjp(net, tr, np.ones((1, 2)))
        >>> bool(np.allclose(g.biases[1], [2.0]))   # d/db^2 of f(1) + f(2)
        True
    """
    c = np.asarray(cotangent, dtype=np.float64)
    if c.shape != trace.outputs.shape:
        raise InvalidArgument("cotangent", f"shape {c.shape}", f"shape {trace.outputs.shape} (C, T)")
    L = net.depth
    du = norm_backward(net, trace, L, np.ascontiguousarray(c.T))
    gw, gb = [None] * L, [None] * L
    for l in range(L, 0, -1):
        gw[l - 1] = du.T @ trace.hidden(l - 1)
        gb[l - 1] = du.sum(axis=0)
        if l > 1:
            du = backward_layer(net, trace, l, du)
    return Gradients(tuple(gw), tuple(gb))
