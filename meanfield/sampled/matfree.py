"""Matrix-free FIM statistics below a hidden batch norm: G v = J (J^T v) / T, never the layer blocks.

The exact Gram below the top hidden batch norm l_B costs about T M^3 (:mod:`meanfield.sampled.gram`).
Here only products with G are formed. G = B (A_up + A_low) B / T with B the output norm's maps,
A_up = T sum_{l > l_B} G_l the exact upper layers (:func:`meanfield.sampled.gram.upper_gram`) and A_low
applied to a vector v (C, T) through the literal batch statistics:

- cotangent at ũ^{l_B}: c[t] = sum_k v[k, t] e_k(t) (the signal e lives on sample t above l_B);
- backward: du^{l_B} = BN'(c), du^{l-1} = N'_{l-1}((du^l W^l) ⊙ phi'(ũ^{l-1})) (:func:`backward_layer`);
- each weight layer l <= l_B adds the tangent K_l du^l at u^l (J_l J_l^T = K_l ⊗ I in u-space,
  K_l = H^{l-1} + 1), and v^T A_l v = <du^l, K_l du^l>;
- forward: tangents go up by x -> (N'_{l-1}(x) ⊙ phi'(ũ^{l-1})) W^{l T} (the norm Jacobians N' of batch and
  layer norm are symmetric, so the same function serves both directions), through BN' at l_B, and
  (A_low v)[k, t] = e_k(t) . x(t).

One product costs about 4 T M^2 flops per layer at or below l_B (two GEMMs each way) against the
T M^3 of the exact blocks; the vectors go through the layers in the layout (T, b, M), each GEMM one call
on a contiguous block, in chunks of at most 16 MiB per array. lambda_max comes from block Lanczos on G
(:func:`block_lanczos`) started on the C output mean directions 1_T (x) e_k / sqrt(T), which span the C
outliers' eigenvectors to O(1/sqrt M): once the outliers' span is captured (its Rayleigh-Ritz bound
||R||^2 / gap to the rest <= 1e-5), single vectors (the top Ritz vector's residual) refine the top one
until its error, estimated as residual^2 / (theta - 2 theta_{C+1}), is <= 1e-9 relative (``tol``;
checked against the exact route to 1e-8 in the tests; next to the O(1/sqrt M) spread of lambda_max
between sampled networks it is exact). ReLU, L = 3, C = 10, T = 256, M = 1024: 10 + 10 + 1 products,
error 2e-10 (measured against a converged run; a two-vector block needed 32 products). With V the Lanczos basis (its products are
known) and P = V V^T,

    tr G   = tr(B A_up B)/T + tr(V G_low V^T) + E[w^T G_low w],      w = (I - P) z,
    tr G^2 = ||G V^T||_F^2 + E[|G w|^2],

with z Rademacher probes (E z z^T = I, so both expectations are exact: the estimators are unbiased);
deflating the Krylov space removes the outliers, which would dominate the probes' spread. w^T G_low w
= |J_low^T w|^2 / T needs the backward sweep only: N probes for the trace, F = N/2 of them also forward
for |G w|^2. Their standard errors are the probes' standard deviation / sqrt(N) (sqrt(F)). The per-layer
traces are estimated the same way from <du^l, K_l du^l>; the same-output block sums 1_k^T A_l 1_k are
exact, T times the trace of A_l on the span of the mean directions, which the first Lanczos block's
backward sweeps give (zero under an output norm, where a random block starts the Lanczos run). That
block is drawn from ``numpy.random.default_rng([seed, 0])``, the probes from
``numpy.random.default_rng([seed, 1])``: a seed reproduces every number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .backprop import Trace, dphi
from .gram import UpperGram, gram_plan, top_hidden_bn, upper_gram
from .lanczos import block_lanczos
from ..errors import check_int
from ..spec.network import BatchNorm, Network

__all__ = ["LowerOperator", "MatrixFreeGram", "matrix_free_gram", "exact_flops", "matrix_free_flops",
           "matrix_free_bytes", "choose_route", "PROBES"]

_BLOCK = 2  # the random start under an output norm (no outliers there to start on)

#: Default number of Rademacher probes of the trace estimators.
PROBES = 8


@dataclass(frozen=True, eq=False)
class LowerOperator:
    """A_low = T sum_{l <= l_B} G_l (u-space, before the output norm's map) as a matrix-free operator.

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> from meanfield.sampled.backprop import draw, forward
        >>> net = Network(3, "relu", 2, 0.1, outputs=2, norms=[BatchNorm(2)])
        >>> op = LowerOperator.build(net, forward(net, draw(net, 6, 4, seed=0)))
        >>> op.layers
        (2, 1)
    """

    net: Network
    trace: Trace
    signal: np.ndarray   # e (C, T, M_lB) at ũ^{l_B}
    top: int
    kernels: tuple       # K_l for l = l_B..1 (T x T)
    slopes: tuple = ()   # phi'(ũ^l) for l = 1..l_B - 1 (T x M_l), computed once

    @staticmethod
    def build(net: Network, trace: Trace, upper: UpperGram | None = None) -> "LowerOperator":
        """The operator of a traced network (``upper`` reuses an :func:`upper_gram` already computed)."""
        upper = upper_gram(net, trace) if upper is None else upper
        kernels = []
        for l in range(upper.top, 0, -1):
            h = trace.hidden(l - 1)
            K = h @ h.T
            K += 1.0
            kernels.append(K)
        slopes = tuple(np.ascontiguousarray(dphi(net, l, trace.normalized[l - 1])) for l in range(1, upper.top))
        return LowerOperator(net, trace, upper.signal, upper.top, tuple(kernels), slopes)

    @property
    def layers(self) -> tuple:
        """The weight layers l_B, ..., 1 this operator covers."""
        return tuple(range(self.top, 0, -1))

    def apply(self, v: np.ndarray, *, forward: bool = True,
              chunk: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """(A_low v, q) for a block v (b, C, T): q[i, j] = v_i^T A_{l_j} v_i per layer l_j = l_B..1.

        ``forward=False`` skips the forward sweep (then only q, and None for the product). ``chunk``
        vectors go through the layers together (default: as many as keep each (T, chunk, M) array
        within 16 MiB); the result does not depend on it beyond rounding.
        """
        b = v.shape[0]
        C, T, M = self.signal.shape
        if chunk is None:
            widest = max([M] + [s.shape[1] for s in self.slopes])
            # larger arrays are fresh mmap'd pages on every call (glibc's threshold stops at 32 MiB),
            # and zeroing them cost a third of a product at M = 2048
            chunk = max(1, (2 ** 21) // (T * widest))
        chunk = check_int("chunk", chunk, minimum=1)
        outs, qs = [], []
        for lo in range(0, b, chunk):
            o, q = self._apply_chunk(v[lo:lo + chunk], forward)
            outs.append(o)
            qs.append(q)
        return (np.concatenate(outs) if forward else None), np.concatenate(qs)

    def _apply_chunk(self, v: np.ndarray, forward: bool):
        """:meth:`apply` on one chunk, in the layout (T, b, M): every GEMM is one call on a contiguous
        block (K_l du as (T x T)(T x bM), du W as (Tb x M)(M x M')), no transposed copies."""
        tr, lb = self.trace, self.top
        b = v.shape[0]
        C, T, M = self.signal.shape
        vt = np.ascontiguousarray(v.transpose(2, 0, 1))                  # (T, b, C)
        E = self.by_sample                                                # (T, C, M)
        c = np.empty((T, b, M))
        for t in range(T):  # c[t] = v(t) e(t): T small GEMMs (numpy's stacked matmul is slower here)
            np.matmul(vt[t], E[t], out=c[t])
        du = self._norm(lb, c)
        q = np.empty((b, lb))
        tangents = []
        for j, l in enumerate(range(lb, 0, -1)):
            m = du.shape[2]
            t_l = (self.kernels[j] @ du.reshape(T, b * m)).reshape(T, b, m)   # K_l du^l
            q[:, j] = np.einsum("tbm,tbm->b", du, t_l)
            tangents.append(t_l)
            if l > 1:
                W = np.asarray(tr.weights[l - 1])
                g = (du.reshape(T * b, m) @ W).reshape(T, b, -1)
                g *= self.slopes[l - 2][:, None, :]
                du = self._norm(l - 1, g)
        if not forward:
            return None, q
        x = tangents[-1]
        for l in range(2, lb + 1):
            W = np.asarray(tr.weights[l - 1])
            y = self._norm(l - 1, x)
            y *= self.slopes[l - 2][:, None, :]  # in place: y is fresh, or x, which is not needed again
            x = tangents[lb - l] + (y.reshape(T * b, -1) @ W.T).reshape(T, b, -1)
        x = self._norm(lb, x)                                     # the batch norm's Jacobian is symmetric
        Et = self.by_sample_t                                     # (T, M, C)
        out = np.empty((T, b, C))
        for t in range(T):
            np.matmul(x[t], Et[t], out=out[t])
        return out.transpose(1, 2, 0), q

    def _norm(self, layer: int, g: np.ndarray) -> np.ndarray:
        """The norm Jacobian at ``layer`` on g (T, b, M) (:func:`meanfield.sampled.backprop.norm_backward`
        in this layout), in place: every caller passes an array it no longer needs."""
        norm = self.net.norm_at(layer)
        if norm is None:
            return g
        tr = self.trace
        v = tr.normalized[layer - 1]                                     # (T, M)
        T, M = v.shape
        if isinstance(norm, BatchNorm):  # per unit over the samples (axis 0)
            gv = None if norm.center_only else np.einsum("tbm,tm->bm", g, v) / T
            g -= g.mean(axis=0)
            if gv is not None:
                g -= v[:, None, :] * gv
                g /= tr.scales[layer - 1]
            return g
        gv = np.einsum("tbm,tm->tb", g, v) / M                           # layer norm: per sample over units
        g -= g.mean(axis=2, keepdims=True)
        g -= v[:, None, :] * gv[:, :, None]
        g /= tr.scales[layer - 1][:, None, None]
        return g

    @property
    def by_sample(self) -> np.ndarray:
        """e as (T, C, M), contiguous."""
        return self._stacks()[0]

    @property
    def by_sample_t(self) -> np.ndarray:
        """e as (T, M, C), contiguous."""
        return self._stacks()[1]

    def _stacks(self):
        cached = self.__dict__.get("_stack_cache")
        if cached is None:
            cached = (np.ascontiguousarray(self.signal.transpose(1, 0, 2)),
                      np.ascontiguousarray(self.signal.transpose(1, 2, 0)))
            object.__setattr__(self, "_stack_cache", cached)
        return cached


@dataclass(frozen=True, eq=False)
class MatrixFreeGram:
    """tr G, ||G||_F^2 (with standard errors), lambda_max and per-layer mean entries of G = J J^T / T.

    Attributes:
        trace, trace_se: tr G and the standard error of its estimate (0 when exact).
        frob2, frob2_se: ||G||_F^2 and its standard error.
        lambda_max: top eigenvalue (block Lanczos, residual <= ``residual``).
        residual: ||G y - lambda y|| of the top Ritz pair.
        layer_diag, layer_offdiag: per layer, as in :class:`meanfield.sampled.gram.Gram` (estimated below l_B).
        layer_diag_se: per layer, the standard error of layer_diag (0 above l_B).
        products: vectors multiplied by G (Lanczos, the probes that also go forward).
        probes: N, the probes of the trace.
        frob_probes: F <= N, those of them that also go forward, for ||G||_F^2.
        backward_only: N - F, the sweeps without a forward pass (z^T G z = |J^T z|^2 / T needs none).
    """

    trace: float
    trace_se: float
    frob2: float
    frob2_se: float
    lambda_max: float
    residual: float
    layer_diag: dict
    layer_offdiag: dict
    layer_diag_se: dict
    products: int
    probes: int
    frob_probes: int = 0
    backward_only: int = 0


def matrix_free_gram(net: Network, trace: Trace, *, seed: int = 0, probes: int = PROBES,
                     tol: float = 1e-9, frob_probes: int | None = None) -> MatrixFreeGram:
    """lambda_max(G) by Lanczos on G v = J (J^T v) / T, and unbiased estimates of tr G and ||G||_F^2.

    Args:
        net: a network with a batch norm in a hidden layer.
        trace: its forward pass.
        seed: seeds the probes (``numpy.random.default_rng([seed, 1])``).
        probes: N Rademacher probes of the trace (>= 2, for a standard error).
        tol: lambda_max's relative error (default 1e-9), estimated as residual^2 / gap (``gap_tol`` of
            :func:`block_lanczos`, with the C outliers as its ``cluster``); the residual is reported.
        frob_probes: F of the N probes (2 <= F <= N, default max(2, N // 2)) also go forward, for
            ||G||_F^2; the other N - F need the backward sweep only (about half a product).

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> from meanfield.sampled.backprop import draw, forward
        >>> from meanfield.sampled.gram import gram, top_eigenvalue
        >>> net = Network(3, "relu", 2, 0.1, outputs=2, norms=[BatchNorm(2)])
        >>> tr = forward(net, draw(net, 8, 6, seed=0))
        >>> G = gram(net, tr).matrix
        >>> r = matrix_free_gram(net, tr)
        >>> bool(abs(r.lambda_max - top_eigenvalue(G)[0]) < 1e-9 * r.lambda_max)
        True
    """
    probes = check_int("probes", probes, minimum=2)
    frob_probes = check_int("frob_probes", max(2, probes // 2) if frob_probes is None else frob_probes,
                            minimum=2, maximum=probes)
    up = upper_gram(net, trace)
    op = LowerOperator.build(net, trace, up)
    C, T = trace.outputs.shape
    n = C * T
    B = up.maps
    A = up.matrix
    low_q = []   # per applied vector: q (layers,), from the Lanczos products, in order

    def bmap(x):  # x (b, C, T) -> B x
        return x if B is None else np.matmul(B[None], x[..., None])[..., 0]

    def apply_full(X, record=None):
        v = bmap(X.reshape(-1, C, T))
        low, q = op.apply(v)
        y = low.reshape(-1, n) + v.reshape(-1, n) @ A
        if record is not None:
            record.append(q)
        return bmap(y.reshape(-1, C, T)).reshape(-1, n) / T

    if B is None:
        # the C output mean directions 1_T (x) e_k / sqrt(T): they span the C outliers' eigenvectors to
        # O(1/sqrt M), and their first products give the same-output block sums exactly (below)
        start = np.kron(np.eye(C), np.full(T, 1.0 / math.sqrt(T)))
        lz = block_lanczos(lambda X: apply_full(X, low_q), start, tol=1e-13, gap_tol=tol, cluster=C)
    else:  # an output norm removes the mean directions (and the outliers): a random start
        start = np.random.default_rng([seed, 0]).standard_normal((_BLOCK, n))
        lz = block_lanczos(lambda X: apply_full(X, low_q), start, tol=1e-13, gap_tol=tol)
    Vb = lz.basis
    qV = np.vstack(low_q) / T                                     # v_j^T G_l v_j per Lanczos row
    rng = np.random.default_rng([seed, 1])
    Z = rng.choice(np.array([-1.0, 1.0]), size=(probes, n))
    W = Z - (Z @ Vb.T) @ Vb
    qW = []
    GW = apply_full(W[:frob_probes], qW)                          # the first F probes: full products
    if frob_probes < probes:  # the others: the backward sweep alone gives their quadratic forms
        qW.append(op.apply(bmap(W[frob_probes:].reshape(-1, C, T)), forward=False)[1])
    qW = np.vstack(qW) / T                                         # (N, layers)
    # the same-output block sums 1_k^T A_l 1_k, exact: T times the trace of A_l on the span of the
    # output mean directions, which the first Lanczos block is (an orthonormal basis of it: the trace
    # does not depend on which)
    if B is None:
        qI = T * low_q[0]
    else:  # an output norm centres every output over the batch: B_k 1 = 0, the block sums vanish
        qI = np.zeros((C, len(op.layers)))
    # the upper layers' share, exact
    layers = op.layers
    diag, off, dse = dict(up.layer_diag), dict(up.layer_offdiag), {l: 0.0 for l in up.layer_diag}
    upper_trace = sum(diag.values()) * n                           # diag entries are tr(T G_l)/(n T) ... / T
    per_probe = qW.sum(axis=1)
    for j, l in enumerate(layers):
        tr_l = qV[:, j].sum() + qW[:, j].mean()                  # tr G_l (after the output map)
        diag[l] = tr_l / n
        dse[l] = float(qW[:, j].std(ddof=1) / math.sqrt(probes)) / n
        off[l] = (qI[:, j].sum() / T - tr_l) / (n * (T - 1)) if T > 1 else None
    trace_low = qV.sum() + per_probe.mean()
    trace_se = float(per_probe.std(ddof=1) / math.sqrt(probes))
    sq = np.einsum("ij,ij->i", GW, GW)
    frob2 = float(np.einsum("ij,ij->", lz.products, lz.products) + sq.mean())
    frob2_se = float(sq.std(ddof=1) / math.sqrt(frob_probes))
    order = sorted(diag)
    return MatrixFreeGram(float(upper_trace + trace_low), trace_se, frob2, frob2_se, lz.value, lz.residual,
                          {l: diag[l] for l in order}, {l: off[l] for l in order}, {l: dse[l] for l in order},
                          lz.vectors + frob_probes, probes, frob_probes, probes - frob_probes)


# ------------------------------------------------------------------------------------------------
# cost model: which route
# ------------------------------------------------------------------------------------------------
def exact_flops(net: Network, width: int, samples: int) -> float:
    """Flops of the exact Gram's blocks at or below the top hidden batch norm (a model).

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> exact_flops(Network(3, "relu", 2, 0, outputs=10, norms=[BatchNorm(2)]), 1024, 256) > 1e11
        True
    """
    sizes = net.widths(width)
    T, C = samples, net.outputs
    n = C * T
    total = 0.0
    for l, kind in gram_plan(net).items():
        M = sizes[l]
        if kind == "bn-own":
            total += 3.0 * n * n * M
        elif kind == "bn-below":
            MB = sizes[l + 1]
            total += 3.0 * n * n * M + 4.0 * n * M * MB + 3.0 * T * T * M * MB + min(T, sizes[l - 1] + 1) * MB * MB * M
        elif kind == "generic":
            total += 2.0 * n * T * T * max(M, sizes[l + 1]) + n * n * min(T, sizes[l - 1] + 1) * M
    return total


def matrix_free_flops(net: Network, width: int, samples: int, vectors: int = 40 + PROBES) -> float:
    """Flops of :func:`matrix_free_gram` (a model: ``vectors`` products, each one GEMM per layer each way).

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> matrix_free_flops(Network(3, "relu", 2, 0, outputs=10, norms=[BatchNorm(2)]), 1024, 256) < 1e11
        True
    """
    sizes = net.widths(width)
    T, C = samples, net.outputs
    lb = top_hidden_bn(net)
    per = 4.0 * C * T * sizes[lb] + 2.0 * (C * T) ** 2 if lb else 0.0
    for l in range(1, lb + 1):  # K_l at every layer, GEMMs with W^l back and forth above layer 1
        per += 2.0 * T * T * sizes[l] + (4.0 * T * sizes[l] * sizes[l - 1] if l > 1 else 0.0)
    return vectors * per


def matrix_free_bytes(net: Network, width: int, samples: int, vectors: int = 200) -> int:
    """Estimated peak bytes of :func:`matrix_free_gram`: parameters, trace, the upper CT x CT block (and
    its transient copies), the Lanczos basis and products (``vectors`` rows each), the probes' signals.

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> matrix_free_bytes(Network(3, "relu", 2, 0, outputs=10, norms=[BatchNorm(2)]), 1024, 256) < 2**31
        True
    """
    sizes = net.widths(width)
    T, C, L = samples, net.outputs, net.depth
    n = C * T
    params = sum(sizes[l] * (sizes[l - 1] + 1) for l in range(1, L + 1))
    trace = sum(4 * T * m for m in sizes)
    block = max(PROBES, C) * T * max(sizes) * (2 * top_hidden_bn(net) + 4)
    return int(8 * (params + trace + 4 * n * n + 3 * n * max(sizes) + 2 * vectors * n + PROBES * n + block))


def choose_route(net: Network, width: int, samples: int) -> str:
    """'exact' or 'matrix-free': the matrix-free route when the exact blocks below a hidden batch norm
    would cost more than 1e11 flops (about a second) and four times the matrix-free products.

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> net = Network(3, "relu", 2, 0, outputs=10, norms=[BatchNorm(2)])
        >>> choose_route(net, 64, 16), choose_route(net, 1024, 256)
        ('exact', 'matrix-free')
    """
    plan = gram_plan(net)
    if not any(kind in ("bn-own", "bn-below", "generic") for kind in plan.values()):
        return "exact"
    ex = exact_flops(net, width, samples)
    return "matrix-free" if ex > 1e11 and ex > 4.0 * matrix_free_flops(net, width, samples) else "exact"
