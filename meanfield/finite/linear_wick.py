"""E_W tr Sigma_W^2 of a linear network, exact at any width and depth, by Wick's theorem over the weight matrices.

A check for the next order of :mod:`meanfield.finite.fourpoint_deep`, :mod:`meanfield.finite.fourpoint_lower` and
:func:`meanfield.finite.fourpoint_next.top_corrected_bulk` (their phi = identity case). For phi = identity and
independent inputs x ~ N(0, q I_{M_0}) one output's gradient is affine in x: with the layers' weights W_1, ..., W_L
(W_j of shape M_j x M_{j-1}, entries N(0, sigma_w^2 / M_{j-1}), W_L = v^T the output weights, M_L = 1), the forward
maps P_k = W_k ... W_1 (P_0 = I) and the backward vectors beta_l^T = W_L ... W_{l+1} (beta_L = 1), the gradient in
layer l's weights is beta_l (P_{l-1} x + c_{l-1})^T (c the biases' constant part; the biases' own gradients are
constant), so Cov_x(g) = q J J^T and

    tr Sigma^2 = q^2 tr (J^T J)^2,   J^T J = A = sum_l |beta_l|^2 P_{l-1}^T P_{l-1},

and the block of a set S of layers (their weights' gradients only) is q^2 tr A_S^2, A_S the same sum over l in S.
Every term |beta_l|^2 |beta_m|^2 tr(P_{l-1}^T P_{l-1} P_{m-1}^T P_{m-1}) is a product of three traces of words in the
W_j and W_j^T; its mean is a sum over the pairings of each matrix's occurrences (Wick's theorem, Isserlis), each
pairing worth sigma_w^2 / M_{j-1} per pair times the product of the widths of the index loops the pairing closes
(Kronecker deltas identify the paired entries' row and column indices). Each W_j occurs at most four times in a term,
so a term has at most 3^L pairings: exact, no expansion in 1/M, no sampling. The biases do not enter.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

from ..errors import InvalidArgument, check_int

__all__ = ["linear_trace_sigma2", "covers_linear"]


def covers_linear(net: Any) -> bool:
    """Whether :func:`linear_trace_sigma2` applies: numeric, plain, phi = identity in every hidden layer, independent
    inputs.

    Example:
        >>> from meanfield.spec.network import Network
        >>> covers_linear(Network(4, "linear", 1, 0)), covers_linear(Network(4, "relu", 2, 0))
        (True, False)
    """
    from ..spec.network import Network

    if not (isinstance(net, Network) and not net.is_symbolic and not net.norms and float(net.input_q2) == 0.0):
        return False
    return all(_is_identity(net.phi(layer)) for layer in range(1, net.depth))


def _is_identity(phi: Any) -> bool:
    from ..integrals.quadrature import Unit

    unit = Unit.of(phi)
    probe = [-2.5, -0.3, 0.0, 0.7, 3.1]
    return all(abs(float(unit.f(t)) - t) < 1e-12 and abs(float(unit.df(t)) - 1.0) < 1e-12 for t in probe)


def linear_trace_sigma2(net: Any, width: int, layers: Any = None) -> float:
    """E_W tr Sigma_W^2 of one output's gradients over the inputs, exact, for a linear network (module docstring).

    Args:
        net: a numeric plain :class:`~meanfield.spec.network.Network` with phi = identity and independent inputs.
        width: M.
        layers: the parameter blocks kept (layer numbers 1..L, their weights); None: all (the whole tr Sigma^2).

    Returns:
        q^2 E tr A_S^2.

    Raises:
        InvalidArgument: a nonlinear or normalized network, symbolic parameters, correlated inputs, a bad width or
            layer.

    Example:
        >>> from meanfield.spec.network import Network
        >>> net = Network(2, "linear", 1, 0)     # A = |v|^2 I + W^T W: E tr A^2 = M + 2 + 2 M + 2 M + 1 at M_0 = M_1
        >>> round(linear_trace_sigma2(net, 10), 10)
        53.0
    """
    from ..spec.network import Network

    if not covers_linear(net):
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric plain linear network (phi = identity) with independent inputs")
    M = check_int("width", width, minimum=1)
    L = net.depth
    if layers is None:
        chosen = tuple(range(1, L + 1))
    else:
        try:
            chosen = tuple(sorted({int(l) for l in layers}))
        except (TypeError, ValueError):
            raise InvalidArgument("layers", layers, "layer numbers 1..L") from None
        if not chosen or chosen[0] < 1 or chosen[-1] > L:
            raise InvalidArgument("layers", layers, f"a nonempty set of layer numbers in 1..{L}")
    widths = tuple(int(w) for w in net.widths(M))
    scales = tuple(float(net.sigma_w2[j - 1]) / widths[j - 1] for j in range(1, L + 1))
    q = float(net.input_q1)
    total = sum(_term(widths, scales, l, m) for l in chosen for m in chosen)
    return q * q * total


def _beta_word(L: int, l: int) -> tuple:
    """|beta_l|^2 = tr(W_L ... W_{l+1} W_{l+1}^T ... W_L^T): (matrix, transposed) letters, in the output space."""
    up = tuple((j, False) for j in range(L, l, -1))
    return up + tuple((j, True) for j, _ in reversed(up))


def _forward_word(l: int, m: int) -> tuple:
    """tr(P_{l-1}^T P_{l-1} P_{m-1}^T P_{m-1}) in the input space."""
    def gram(k: int) -> tuple:
        return tuple((j, True) for j in range(1, k)) + tuple((j, False) for j in range(k - 1, 0, -1))
    return gram(l) + gram(m)


@functools.lru_cache(maxsize=256)
def _term(widths: tuple, scales: tuple, l: int, m: int) -> float:
    """E[|beta_l|^2 |beta_m|^2 tr(P_{l-1}^T P_{l-1} P_{m-1}^T P_{m-1})] by Wick's theorem (module docstring)."""
    L = len(scales)
    words = ((_beta_word(L, l), L), (_beta_word(L, m), L), (_forward_word(l, m), 0))
    dims: list = []          # width of each index variable
    occ: dict = {}           # matrix j -> [(row variable, column variable)]
    for word, space in words:
        if not word:         # an empty trace: the identity of its space
            dims.append(widths[space])
            continue
        first = len(dims)
        n = len(word)
        for k, (j, tr) in enumerate(word):
            # index k sits between letters k and k + 1: the column space of letter k
            dims.append(widths[j] if tr else widths[j - 1])
        for k, (j, tr) in enumerate(word):
            left, right = first + (k - 1) % n, first + k
            occ.setdefault(j, []).append((right, left) if tr else (left, right))
    if any(len(v) % 2 for v in occ.values()):
        return 0.0
    per_matrix = [(j, tuple(_pairings(len(v)))) for j, v in sorted(occ.items())]
    weight = 1.0
    for j, v in occ.items():
        weight *= scales[j - 1] ** (len(v) // 2)
    total = 0.0
    for choice in itertools.product(*(p for _, p in per_matrix)):
        parent = list(range(len(dims)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for (j, _), pairing in zip(per_matrix, choice):
            for s, t in pairing:
                for a, b in zip(occ[j][s], occ[j][t]):     # rows with rows, columns with columns
                    parent[find(a)] = find(b)
        value = 1.0
        for root in {find(i) for i in range(len(dims))}:
            value *= dims[root]
        total += value
    return weight * total


def _pairings(n: int) -> list:
    """The perfect matchings of range(n) (n even), each a tuple of pairs."""
    if n == 0:
        return [()]
    out = []
    for k in range(1, n):
        rest = [i for i in range(1, n) if i != k]
        for sub in _pairings(len(rest)):
            out.append(((0, k),) + tuple((rest[a], rest[b]) for a, b in sub))
    return out
