"""T G_kl = w_k^T Theta w_l + delta_kl K: a sampled network's Gram for any output weights, from its tangent blocks.

The gradient of output k with respect to the hidden parameters is J(x) w_k, with J(x) the Jacobian of the last
hidden layer h^{L-1}(x) (M_{L-1} units) and w_k the k-th row of the output weights; with respect to the output
layer's own weights and bias it is h^{L-1}(x) (x) e_k. So, for any output weights W (C x M_{L-1}),

    T G_kl(t, s) = w_k^T Theta(t, s) w_l + delta_kl K(t, s),   Theta(t, s) = J(t)^T J(s),   K = H + 1,

H the last hidden layer's feature Gram, and with centre-only batch norm on the output both are centred over the
batch (the output map Pi is linear). Theta and K are computed exactly by :func:`meanfield.sampled.gram.gram` of
the same network with M_{L-1} outputs and identity output weights (Theta = T G_id - I (x) K), so the hidden weights
and the batch are drawn once and the C outputs' Gram follows for any W: the output weights can be averaged over
in closed form. In particular, for an output direction e orthogonal to a, w_e is independent of w_a and of the
rest, and

    E_{w_e} |P G_ea b|^2 = (sigma_w^2 / M_{L-1}) sum_i |P z_i|^2 / T^2,   z_i(t) = sum_s [Theta(t, s) w_a]_i b_s,

for any projector P over the samples (:meth:`TangentBlocks.independent_coupling`): the coupling of a block's top
eigenvector b to the other outputs' blocks, averaged over their output weights (rmt.md, section 6, "Several outputs
with batch norm on the output: the coupling of the other outputs' blocks").

Only networks whose Gram is linear in the output weights are covered: no normalization on the output, or
centre-only batch norm on it (full batch norm divides by a scale that depends on the weights).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgument, check_int
from ..spec.network import BatchNorm, Network
from .backprop import draw, forward
from .gram import gram

__all__ = ["TangentBlocks", "tangent_blocks"]


@dataclass(frozen=True, eq=False)
class TangentBlocks:
    """The last hidden layer's tangent blocks of one sampled network and batch.

    Attributes:
        theta: T Theta, shape (M_{L-1}, T, M_{L-1}, T) (unit, sample, unit, sample): the hidden parameters' part.
        features: K, shape (T, T): the output layer's part (the same for every output).
        sigma_w2: the output weights' variance times their fan-in (sigma_w^2 of the output layer).
    """

    theta: np.ndarray
    features: np.ndarray
    sigma_w2: float

    def gram(self, output_weights: np.ndarray) -> np.ndarray:
        """G (C T x C T, index k T + t) for the output weights W (C x M_{L-1}): (w_k^T T Theta w_l + delta_kl K) / T.

        Example:
            >>> tb = tangent_blocks(Network(3, "relu", 2, 0, outputs=1), 8, 4, seed=0)
            >>> tb.gram(np.ones((2, 8))).shape
            (8, 8)
        """
        W = np.asarray(output_weights, dtype=float)
        units, T = self.theta.shape[0], self.theta.shape[1]
        if W.ndim != 2 or W.shape[1] != units:
            raise InvalidArgument("output_weights", W.shape, f"a (C, {units}) array")
        C = W.shape[0]
        G = np.einsum("ki,itjs,lj->ktls", W, self.theta, W)
        for k in range(C):
            G[k, :, k, :] += self.features
        return (G / T).reshape(C * T, C * T)

    def independent_coupling(self, direction_weights: np.ndarray, vector: np.ndarray,
                             projector: np.ndarray | None = None) -> float:
        """E_{w_e} |P G_ea b|^2 over an output weight vector w_e ~ N(0, sigma_w^2 / M I) independent of w_a.

        Args:
            direction_weights: w_a (M_{L-1},), the output weights of the combined output a.
            vector: b (T,), a vector over the samples.
            projector: P (T x T) applied to G_ea b (default: the identity).

        Example:
            >>> tb = tangent_blocks(Network(3, "relu", 2, 0, outputs=1), 8, 4, seed=0)
            >>> tb.independent_coupling(np.ones(8), np.ones(4) / 2) >= 0
            True
        """
        w = np.asarray(direction_weights, dtype=float)
        b = np.asarray(vector, dtype=float)
        units, T = self.theta.shape[0], self.theta.shape[1]
        if w.shape != (units,):
            raise InvalidArgument("direction_weights", w.shape, f"a vector of length {units}")
        if b.shape != (T,):
            raise InvalidArgument("vector", b.shape, f"a vector of length {T}")
        z = np.einsum("itjs,j,s->it", self.theta, w, b)
        if projector is not None:
            P = np.asarray(projector, dtype=float)
            if P.shape != (T, T):
                raise InvalidArgument("projector", P.shape, f"a ({T}, {T}) matrix")
            z = z @ P.T
        return float(self.sigma_w2 / units * np.sum(z * z) / T**2)


def tangent_blocks(net: Network, width: int, samples: int, seed: int = 0) -> TangentBlocks:
    """T Theta(t, s) = T G_id - I (x) K and K = H + 1 of the network drawn at (width, samples, seed), exactly.

    The hidden weights and the batch are those :func:`meanfield.sampled.backprop.draw` gives the network with
    M_{L-1} outputs at this seed (its output weights are replaced by the identity; the output count of ``net`` is
    ignored).

    Args:
        net: the network (numeric); its output norm none or centre-only batch norm.
        width: M.
        samples: T.
        seed: the draw's seed.

    Example:
        >>> net = Network(3, "tanh", 1, 0.1, outputs=2)
        >>> tb = tangent_blocks(net, 8, 4, seed=1)
        >>> d = draw(net.with_(outputs=8), 8, 4, seed=1)
        >>> W = d.weights[-1][:2]
        >>> g = gram(net, forward(net, dataclasses.replace(d, weights=d.weights[:-1] + (W,),
        ...                                                 biases=d.biases[:-1] + (d.biases[-1][:2],))))
        >>> bool(np.allclose(tb.gram(W), g.matrix))
        True
    """
    if not isinstance(net, Network) or net.is_symbolic:
        raise InvalidArgument("net", net, "a numeric meanfield Network")
    last = net.norm_at(net.depth)
    if last is not None and not (isinstance(last, BatchNorm) and last.center_only):
        raise InvalidArgument("net", net.describe(), "no output norm or centre-only batch norm on the output",
                              "the Gram is not linear in the output weights under this output norm")
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=2)
    units = net.widths(M)[net.depth - 1]
    wide = net.with_(outputs=units)
    d = draw(wide, M, T, seed=seed)
    d = dataclasses.replace(d, weights=d.weights[:-1] + (np.eye(units),))
    trace = forward(wide, d)
    theta = T * gram(wide, trace).matrix.reshape(units, T, units, T)
    h = trace.hidden(net.depth - 1)
    K = h @ h.T + 1.0
    if last is not None:
        Pi = np.eye(T) - 1.0 / T
        K = Pi @ K @ Pi
    for i in range(units):
        theta[i, :, i, :] -= K
    return TangentBlocks(theta, K, float(net.sigma_w2[net.depth - 1]))
