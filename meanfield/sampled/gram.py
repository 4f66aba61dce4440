"""The exact dual Gram G = J J^T / T of a sampled network, without the P x P FIM, and its spectrum.

G has shape (CT x CT), index a = (k, t) = k*T + t; its non-zero eigenvalues are those of the FIM
F = J^T J / T. It is assembled layer by layer, G = sum_l G_l, G_l = J_l J_l^T / T with J_l the
Jacobian w.r.t. W^l and b^l. With D^l_a[s, :] = d f_a / d u^l(s) (a (T x M_l) matrix per row a) and
K_l = H^{l-1} + 1 (H^{l-1}[s, s'] = h^{l-1}(s) . h^{l-1}(s')),

    T G_l[a, b] = sum_{s, s'} K_l[s, s'] D^l_a[s] . D^l_b[s'].                                  (*)

How (*) is evaluated depends on where the samples are coupled (see :func:`gram_plan`):

- ``top`` / ``plain`` (no batch norm at or above l, except on the outputs): D^l_a lives on sample t
  only (layer norm is per sample), so T G_l = (delta delta^T) ⊙ (K_l tiled), one (CT x M)(M x CT) SYRK.
- batch norm on the outputs: f_k = BN(u^L_k) is a per-output T x T linear map of the batch,
  J_f = B J_u with B_k = (Pi - f_k f_k^T/T)/sigma_k (center-only: Pi), so G = B G_u B^T, O(C^2 T^2).
- ``bn-own`` (the weights of the highest hidden batch norm layer l_B): with e_a the backward signal
  at the normalized unit, eps = e/sigma, nu_a = eps_a ⊙ ũ(t),
  D_a = (e_t - 1/T) eps_a^T - Ũ diag(nu_a)/T, and (*) becomes
  K̂[t,t'] eps_a.eps_b - (eps_a ⊙ Omega_t).nu_b/T - nu_a.(eps_b ⊙ Omega_t')/T + nu_a diag(d) nu_b/T^2,
  K̂ = Pi K Pi, Omega = Pi K Ũ, d_i = ũ_i^T K ũ_i: one SYRK and one (CT x M x CT) GEMM.
- ``bn-below`` (the layer just under it): with g_a = W^T eps_a,
  delta_a = g_a ⊙ phi'(t), kappa = K Phi', the mean path gives
  K[t,t'] delta_a.delta_b - ((delta_a ⊙ kappa_t).g_b + g_a.(delta_b ⊙ kappa_t'))/T + g_a diag(n) g_b
  (n_j = (Phi'^T K Phi')_jj / T^2), and the variance path (full batch norm only)
  - (Q nu^T + nu Q^T)/T + nu Z nu^T / T^2 with
  Q_a = X_t delta_a - X̄ g_a / T, X_t = W ⊙ (Ũ^T diag(K_{:,t}) Phi'), X̄ = W ⊙ (Ũ^T (Phi' ⊙ kappa)),
  Z = sum_rho B_rho B_rho^T, B_rho = W ⊙ (Ũ^T diag(L_{:,rho}) Phi'), K = L L^T (Cholesky).
  Z is the Gram of the M per-unit batch-variance gradients; it costs about r M^3 + 3 T^2 M^2 flops
  (r = rank K <= T): the price of exactness for a hidden batch norm (measured in
  benchmarks/sampling.py). Center-only batch norm has no variance path and stays cheap.
  With a batch norm at l itself (batch norm in every layer), B_j = (Pi - v_j v_j^T/T)/s_j per unit:
  the Pi part is the same computation with K -> Pi K Pi and phi'_j -> phi'_j / s_j, and the rank-one
  part adds mu diag(v_j^T K v_j) mu^T - psi mu^T - mu psi^T, with mu, psi (CT x M_l) linear
  functionals of the signal that cost (CT x M)(M x M) GEMMs: the same cost as without it.
- ``generic`` (any other layer at or below a hidden batch norm: two or more layers under it, layer
  norm right under it): the full (T x M) signals D^l_a are propagated by the
  exact batched backward pass (chunks of rows a), and (*) is evaluated as E E^T with E_a = L^T D_a.
  Exact and general, O(C T^2 M^2 + C^2 T^3 M) per layer.

Each SYRK fills only the upper triangle (half the flops of a GEMM); blocks are summed there and
mirrored once. Below a hidden batch norm the blocks cost about T M^3: :mod:`meanfield.sampled.matfree`
avoids them with products G v (what :func:`upper_gram` leaves out), and ``sample`` picks the route by cost.

Everything is float64. The same Gram is available by brute force, :func:`explicit_gram` (forms J
from vector-Jacobian products with unit cotangents), used as an oracle and as a benchmark baseline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from .backprop import Trace, backward_layer, check_batch, dphi, norm_backward
from .lanczos import block_lanczos
from ..display import fmt, latex_value
from ..errors import InvalidArgument, check_choice
from ..spec.network import BatchNorm, LayerNorm, Network

__all__ = ["SampledSpectrum", "LayerGram", "Gram", "gram", "gram_plan", "top_eigenvalue", "jacobian",
           "explicit_gram", "gram_bytes", "DENSE_LIMIT", "UpperGram", "upper_gram", "output_maps",
           "check_memory", "top_hidden_bn"]

#: Largest Gram size CT for which lambda_max comes from dense eigh; Lanczos (eigsh) above.
DENSE_LIMIT = 512
_CHUNK_BYTES = 1 << 28  # working buffers per chunk (256 MiB): bounds memory, keeps BLAS calls large


# ------------------------------------------------------------------------------------------------
# plan and memory
# ------------------------------------------------------------------------------------------------
def _top_hidden_bn(net: Network) -> int:
    return max((n.layer for n in net.norms if isinstance(n, BatchNorm) and n.layer < net.depth), default=0)


def top_hidden_bn(net: Network) -> int:
    """l_B, the highest hidden layer with a batch norm (0 when there is none).

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> top_hidden_bn(Network(3, "relu", 2, 0, norms=[BatchNorm(1), BatchNorm("last")]))
        1
    """
    return _top_hidden_bn(net)


def gram_plan(net: Network) -> dict[int, str]:
    """How each weight layer's Gram block is computed: 'top', 'plain', 'bn-own', 'bn-below', 'generic'.

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> gram_plan(Network(3, "relu", 2, 0, norms=[BatchNorm(2)]))
        {3: 'top', 2: 'bn-own', 1: 'bn-below'}
        >>> gram_plan(Network(4, "relu", 2, 0, norms=[BatchNorm(1), BatchNorm(2), BatchNorm(3)]))
        {4: 'top', 3: 'bn-own', 2: 'bn-below', 1: 'generic'}
    """
    L, top = net.depth, _top_hidden_bn(net)
    plan = {}
    for l in range(L, 0, -1):
        if l == L:
            plan[l] = "top"
        elif l > top:
            plan[l] = "plain"
        elif l == top:
            plan[l] = "bn-own"
        elif l == top - 1 and _fast_below(net.norm_at(l)):
            plan[l] = "bn-below"
        else:
            plan[l] = "generic"
    return plan


def _fast_below(norm) -> bool:
    """The layer under the top hidden batch norm takes a fast path without a norm or with a batch
    norm (center-only: Pi is the same for every unit, K_l -> Pi K_l Pi; full: per-unit maps B_j)."""
    return norm is None or isinstance(norm, BatchNorm)


def _rank_bound(sizes: tuple[int, ...], l: int, T: int) -> int:
    return min(T, sizes[l - 1] + 1)


def gram_bytes(net: Network, width: int, samples: int, *, eigenvalues: bool = False) -> int:
    """Estimated peak bytes of :func:`gram` (plus the spectrum) for this network at (M, T).

    Example:
        >>> from meanfield.spec.network import Network
        >>> gram_bytes(Network(3, "relu", 2, 0, outputs=10), 4096, 256) < 2**31
        True
    """
    sizes, T = check_batch(net, width, samples)
    C, L = net.outputs, net.depth
    n = C * T
    f8 = 8
    params = sum(sizes[l] * (sizes[l - 1] + 1) for l in range(1, L + 1)) * f8
    trace = sum(4 * T * m for m in sizes) * f8
    Mmax = max(sizes)
    total = params + trace + 4 * n * n * f8 + 5 * n * Mmax * f8
    plan = gram_plan(net)
    if "bn-below" in plan.values() or "generic" in plan.values():
        total += 3 * _CHUNK_BYTES
    for l, kind in plan.items():
        if kind == "bn-below":
            MB = sizes[l + 1]
            total += (3 * MB * MB + 4 * n * MB + n * n) * f8 + 2 * MB * sizes[l] * f8 * 2
        elif kind == "generic":
            total += n * _rank_bound(sizes, l, T) * sizes[l] * f8
            total += 4 * T * max(sizes[l], sizes[l + 1]) * f8  # one row's signal at least
    if eigenvalues or n <= DENSE_LIMIT:
        total += 2 * n * n * f8
    return int(total)


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_memory(need: int, what: str, width: int, *, net: Network | None = None, samples: int | None = None,
                 processes: int = 1) -> None:
    """Raise InvalidArgument before allocating when ``need`` bytes exceed 80% of available memory.

    Given the network and T, the error names the argument that makes the size too large: samples when the
    same width with the fewest samples fits (the CT x CT Gram grows like T^2), width when the smallest width
    fits, processes when one worker's share fits (else the larger of the two causes).
    """
    usable = int(0.8 * _available_bytes())
    if need <= usable:
        return
    argument, value = "width", width
    if net is not None and samples is not None:
        argument, value = _blame(net, width, samples, processes, usable)
    others = {"width": f"width={width}", "samples": f"samples={samples}", "processes": f"processes={processes}"}
    context = ", ".join(text for key, text in others.items() if key != argument and (key != "samples" or samples)
                        and (key != "processes" or processes > 1))
    raise InvalidArgument(argument, value, f"a size whose {what} fits in memory",
                          f"it needs about {need / 2**30:.1f} GiB; {usable / 2**30:.1f} GiB usable "
                          f"(80% of the memory available now)" + (f" with {context}" if context else ""))


def _blame(net: Network, width: int, samples: int, processes: int, usable: int) -> tuple[str, int]:
    fewest = max(net.min_samples(), 1)
    smallest = next((m for m in range(1, 4097) if _valid_width(net, m)), width)
    with_fewest = processes * gram_bytes(net, width, fewest)
    with_smallest = processes * gram_bytes(net, smallest, samples)
    if with_fewest <= usable < with_smallest:
        return "samples", samples
    if with_smallest <= usable < with_fewest:
        return "width", width
    if processes > 1 and gram_bytes(net, width, samples) <= usable:
        return "processes", processes
    return ("samples", samples) if with_fewest < with_smallest else ("width", width)


def _valid_width(net: Network, width: int) -> bool:
    try:
        net.widths(width)
    except InvalidArgument:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# the layer blocks
# ------------------------------------------------------------------------------------------------
def _kernel(trace: Trace, l: int) -> np.ndarray:
    """K_l = H^{l-1} + 1: Gram of the layer's inputs over samples, +1 for the bias."""
    h = trace.hidden(l - 1)
    K = h @ h.T
    K += 1.0
    return K


def _factor(K: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, bool]:
    """L with L L^T = K (T x r), and whether L is lower triangular (then L[s, rho] = 0 for s < rho)."""
    T = K.shape[0]
    if h.shape[1] + 1 < T:  # [h, 1] is an exact thinner factor
        return np.hstack([h, np.ones((T, 1))]), False
    try:
        return np.linalg.cholesky(K), True
    except np.linalg.LinAlgError:
        # K = H + 11^T is positive semi-definite by construction; a failed Cholesky means rank
        # deficiency (e.g. repeated samples). Eigenvalues below the rounding level of K are dropped:
        # the error this makes is of that rounding level, the same as Cholesky's own.
        w, V = np.linalg.eigh(K)
        keep = w > T * np.finfo(np.float64).eps * max(w[-1], 0.0)
        return V[:, keep] * np.sqrt(w[keep]), False


def _plain(delta: np.ndarray, K: np.ndarray) -> np.ndarray:
    """T G_l = (delta delta^T) ⊙ K[t, t'] for sample-diagonal signals delta (C, T, M): one SYRK.

    Only the upper triangle of the result is valid (the lower one holds zeros or partial sums): the
    SYRK computes half of the GEMM's flops, and every consumer reads the upper triangle or mirrors it
    once (:func:`_mirror_upper`)."""
    C, T, M = delta.shape
    flat = np.ascontiguousarray(delta.reshape(C * T, M))
    # BLAS sees the C-ordered (CT x M) array as its transpose; the lower triangle of its F-ordered
    # result is the upper triangle of the C-ordered transpose
    G = scipy.linalg.blas.dsyrk(1.0, flat.T, trans=1, lower=1).T
    for k in range(C):  # the Hadamard factor K on the upper block triangle only
        row = G[k * T:(k + 1) * T, k * T:].reshape(T, C - k, T)  # a view: splits the last axis
        row *= K[:, None, :]
    return G


def _mirror_upper(G: np.ndarray) -> np.ndarray:
    """Copy the upper triangle of G into its lower one, in place, tile by tile (64 x 64 tiles stay in
    cache while transposed: measured 3x faster than row strips)."""
    n = G.shape[0]
    step = 64
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        for j0 in range(0, i0, step):
            G[i0:i1, j0:j0 + step] = G[j0:j0 + step, i0:i1].T
        block = G[i0:i1, i0:i1]
        block[...] = np.triu(block) + np.triu(block, 1).T
    return G


def _sym_add(G: np.ndarray, Y: np.ndarray, V: np.ndarray) -> None:
    """G += Y V^T + V Y^T (the symmetric rank-2k update, as one GEMM and a transpose)."""
    A = Y @ V.T
    G += A
    G += A.T


def _bn_own(e: np.ndarray, trace: Trace, l: int, center_only: bool) -> np.ndarray:
    C, T, M = e.shape
    K = _kernel(trace, l)
    Kc = K - K.mean(axis=0, keepdims=True)
    Khat = Kc - Kc.mean(axis=1, keepdims=True)  # Pi K Pi
    if center_only:
        return _plain(e, Khat)
    sigma = trace.scales[l - 1]
    U = trace.normalized[l - 1]
    eps = e / sigma
    G = _plain(eps, Khat)
    nu = (eps * U[None]).reshape(C * T, M)
    KU = K @ U
    d = np.einsum("si,si->i", U, KU)
    Omega = KU - KU.mean(axis=0, keepdims=True)  # Pi K Ũ
    Y = (nu * (d / (2.0 * T * T))) - (eps * Omega[None]).reshape(C * T, M) / T
    _sym_add(G, Y, nu)
    return G


def _bn_below(e: np.ndarray, trace: Trace, net: Network, l: int) -> np.ndarray:
    """Layer l = l_B - 1 under the batch norm at l_B = l + 1 (no norm at l, or a center-only one)."""
    C, T, MB = e.shape
    lb = l + 1
    norm = net.norm_at(lb)
    W = np.asarray(trace.weights[lb - 1])                 # (M_B, M_l)
    Ml = W.shape[1]
    phi = np.ascontiguousarray(dphi(net, l, trace.normalized[l - 1]))  # (T, M_l)
    K = _kernel(trace, l)
    Lf, lower = _factor(K, trace.hidden(l - 1))
    below = net.norm_at(l)
    if below is not None:
        # batch norm at l: D^l[:, j] = B_j D̃[:, j], B_j = (Pi - v_j v_j^T/T)/s_j (center-only: Pi).
        # The Pi part turns K into Pi K Pi and phi'_j into phi'_j / s_j; the rank-one part
        # v_j v_j^T is added at the end through two M_l-vectors per row (mu, psi below).
        K0 = K
        K = K - K.mean(axis=0, keepdims=True)
        K -= K.mean(axis=1, keepdims=True)
        Lf, lower = Lf - Lf.mean(axis=0, keepdims=True), False
        if not below.center_only:
            phi = phi / trace.scales[l - 1][None, :]
    eps = e if norm.center_only else e / trace.scales[lb - 1]
    g = (eps.reshape(C * T, MB) @ W)                      # (CT, M_l)
    delta = (g.reshape(C, T, Ml) * phi[None])             # direct signals
    kappa = K @ phi
    nvec = np.einsum("sj,sj->j", phi, kappa) / (T * T)
    G = _plain(delta, K)
    Y = g * (nvec / 2.0) - (delta * kappa[None]).reshape(C * T, Ml) / T
    _sym_add(G, Y, g)
    full_below = below is not None and not below.center_only
    if norm.center_only:
        if full_below:
            _rank_one_below(G, g.reshape(C, T, Ml), None, W, None, phi, trace.normalized[l - 1], K0, T)
        return G
    U = trace.normalized[lb - 1]                          # (T, M_B)
    nu = (eps * U[None]).reshape(C * T, MB)
    UT = np.ascontiguousarray(U.T)
    # Q_a = X_t delta_a - X̄ g_a / T
    Q = (g @ (W * (UT @ (phi * kappa))).T) * (-1.0 / T)
    Q = Q.reshape(C, T, MB)
    # X_t for a chunk of samples as ONE (nt*M_B x T)(T x M_l) GEMM: rows (t, i) of U^T scaled by K[:, t]
    per = max(1, _CHUNK_BYTES // (8 * MB * (Ml + T)))
    for t0 in range(0, T, per):
        t1 = min(T, t0 + per)
        X = np.matmul((UT[None] * K[:, t0:t1].T[:, None, :]).reshape(-1, T), phi).reshape(t1 - t0, MB, Ml)
        X *= W[None]
        Q[:, t0:t1, :] += np.matmul(delta[:, t0:t1, :].transpose(1, 0, 2),
                                    X.transpose(0, 2, 1)).transpose(1, 0, 2)
        del X
    Q = Q.reshape(C * T, MB)
    # Z = sum_rho B_rho B_rho^T, the Gram of the per-unit variance gradients. The chunk of B is built
    # directly in the (M_B, n_rho * M_l) layout that the SYRK reads, by one GEMM.
    r = Lf.shape[1]
    Z = np.zeros((MB, MB))
    per = max(1, _CHUNK_BYTES // (8 * MB * (Ml + T)))
    for r0 in range(0, r, per):
        r1 = min(r, r0 + per)
        s0 = r0 if lower else 0                            # L[s, rho] = 0 for s < rho
        A = (UT[:, None, s0:] * Lf[s0:, r0:r1].T[None]).reshape(-1, T - s0)   # rows (i, rho)
        B = (A @ phi[s0:]).reshape(MB, r1 - r0, Ml)
        del A
        B *= W[:, None, :]
        Bc = B.reshape(MB, (r1 - r0) * Ml)
        Z += Bc @ Bc.T
        del B, Bc
    Y2 = (nu @ Z) * (1.0 / (2.0 * T * T)) - Q / T
    _sym_add(G, Y2, nu)
    if full_below:
        _rank_one_below(G, g.reshape(C, T, Ml), nu, W, UT, phi, trace.normalized[l - 1], K0, T)
    return G


def _rank_one_below(G, g, nu, W, UT, phi, v, K, T) -> None:
    """The v_j v_j^T / T part of a full batch norm at layer l = l_B - 1 (phi already divided by s_j).

    With Ẽ'_a the signal at ũ^l divided by s_j, mu_a[j] = sum_s Ẽ'_a[s, j] v[s, j] / T and
    psi_a[j] = sum_s Ẽ'_a[s, j] (Pi K v)[s, j]; the block gains mu diag(v_j^T K v_j) mu^T
    - psi mu^T - mu psi^T. Each functional sum_s Ẽ'_a[s, j] c[s, j] of the signal is
    g_a[j] (Pi y)[t, j] - (nu_a^T (W ⊙ Ũ^T y))[j] / T with y = phi ⊙ c (no GEMM over samples).
    """
    C, Tn, Ml = g.shape
    n = C * Tn

    def functional(c):
        y = phi * c
        out = (g * (y - y.mean(axis=0, keepdims=True))[None]).reshape(n, Ml)
        if nu is not None:
            out -= (nu @ (W * (UT @ y))) / T
        return out

    KV = K @ v
    mu = functional(v / T)
    psi = functional(KV - KV.mean(axis=0, keepdims=True))
    dV = np.einsum("sj,sj->j", v, KV)
    _sym_add(G, mu * (dV / 2.0) - psi, mu)


def _generic(e: np.ndarray, trace: Trace, net: Network, lb: int, layers: list[int]) -> dict[int, np.ndarray]:
    """(*) for ``layers`` (all below lb) from full (T x M) signals, chunked over the rows a."""
    C, T, MB = e.shape
    n = C * T
    flat = e.reshape(n, MB)
    lowest = min(layers)
    factors = {l: _factor(_kernel(trace, l), trace.hidden(l - 1))[0] for l in layers}
    E = {l: np.empty((n, factors[l].shape[1], trace.pre[l - 1].shape[1])) for l in layers}
    widest = max(trace.pre[l - 1].shape[1] for l in range(lowest, lb + 1))
    per = max(1, _CHUNK_BYTES // (8 * 3 * T * widest))
    rows = np.arange(T)
    for a0 in range(0, n, per):
        a1 = min(n, a0 + per)
        cot = np.zeros((a1 - a0, T, MB))
        cot[np.arange(a1 - a0), (np.arange(a0, a1) % T)] = flat[a0:a1]
        D = norm_backward(net, trace, lb, cot)
        for l in range(lb - 1, lowest - 1, -1):
            D = backward_layer(net, trace, l + 1, D)
            if l in E:
                E[l][a0:a1] = np.matmul(factors[l].T[None], D)
        del cot, D
    del rows
    out = {}
    for l in layers:
        Ef = E.pop(l).reshape(n, -1)
        out[l] = Ef @ Ef.T
        del Ef
    return out


def _layer_blocks(net: Network, trace: Trace, upper_only: bool = False):
    """Yield (l, T G_l) for the pre-output-norm outputs u^L, l = L..1 (see the module docstring).

    Blocks are valid on their upper triangle. With ``upper_only``, stop above the top hidden batch
    norm l_B and yield (l_B, _Signal(e)) with e the backward signal at its normalized units instead."""
    L, C = net.depth, net.outputs
    T = trace.inputs.shape[0]
    top = _top_hidden_bn(net)
    yield L, _Top(_kernel(trace, L))  # I_C ⊗ K_L: added in place, never a CT x CT temporary
    if L == 1:
        return
    W = np.asarray(trace.weights[L - 1])
    e = W[:, None, :] * dphi(net, L - 1, trace.normalized[L - 2])[None]   # at ũ^{L-1}, (C, T, M)
    l = L - 1
    while l > top:
        delta = norm_backward(net, trace, l, e) if isinstance(net.norm_at(l), LayerNorm) else e
        yield l, _plain(delta, _kernel(trace, l))
        if l > 1:
            W = np.asarray(trace.weights[l - 1])
            Ml = delta.shape[2]
            e = (delta.reshape(-1, Ml) @ W).reshape(C, T, -1) * dphi(net, l - 1, trace.normalized[l - 2])[None]
        l -= 1
    if top == 0:
        return
    if upper_only:
        yield top, _Signal(e)
        return
    center = net.norm_at(top).center_only
    yield top, _bn_own(e, trace, top, center)
    plan = gram_plan(net)
    if top > 1 and plan[top - 1] == "bn-below":
        yield top - 1, _bn_below(e, trace, net, top - 1)
    generic = [l for l in range(top - 1, 0, -1) if plan[l] == "generic"]
    if generic:
        yield from sorted(_generic(e, trace, net, top, generic).items(), reverse=True)


@dataclass(frozen=True, eq=False)
class _Signal:
    """The backward signal e (C, T, M_lB) at the normalized units of the top hidden batch norm."""

    e: np.ndarray


@dataclass(frozen=True, eq=False)
class _Top:
    """The top layer's block I_C ⊗ K_L (delta^L_k = e_k), kept factored."""

    K: np.ndarray


def _output_maps(net: Network, trace: Trace) -> np.ndarray | None:
    """B_k (C, T, T): f_k = BN(u^L_k) is linear in the batch, d f_k(t) / d u^L_k(s) = B_k[t, s].

    Full: (Pi - f_k f_k^T / T) / sigma_k; center-only: Pi. None without an output batch norm."""
    norm = net.norm_at(net.depth)
    if norm is None:
        return None
    C, T = trace.outputs.shape
    B = np.broadcast_to(np.eye(T) - 1.0 / T, (C, T, T)).copy()
    if not norm.center_only:
        f = trace.outputs
        B -= f[:, :, None] * f[:, None, :] / T
        B /= trace.scales[-1][:, None, None]
    return B


def _transform(B: np.ndarray | None, G: np.ndarray) -> np.ndarray:
    """B G B^T for B = blockdiag(B_k) (symmetric blocks): two batched GEMMs, O(C^2 T^3)."""
    if B is None:
        return G
    C, T, _ = B.shape
    n = C * T
    X = np.matmul(B, G.reshape(C, T, n)).reshape(n, C, T)
    Y = np.matmul(X.transpose(1, 0, 2), B).transpose(1, 0, 2).reshape(n, n)
    Y += Y.T
    Y *= 0.5  # B G B^T is symmetric; average away the rounding asymmetry
    return Y


# ------------------------------------------------------------------------------------------------
# public: Gram, eigenvalue, explicit Jacobian
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Gram:
    """G = J J^T / T (CT x CT, index k*T + t) with its per-layer mean entries.

    Attributes:
        matrix: G.
        layer_diag, layer_offdiag: dicts layer -> contribution of W^l, b^l to the mean diagonal entry
            and to the mean same-output off-diagonal entry (None when T = 1).
        layer_matrices: dict layer -> G_l when asked for (``per_layer=True``), else None.
        plan: :func:`gram_plan` of the network.
    """

    matrix: np.ndarray
    layer_diag: dict
    layer_offdiag: dict
    plan: dict
    layer_matrices: dict | None = None


def gram(net: Network, trace: Trace, *, per_layer: bool = False) -> Gram:
    """G = J J^T / T, exactly, from the forward trace, layer by layer (never the P x P FIM).

    Args:
        net: the network spec.
        trace: :func:`meanfield.sampled.sampling.forward` of a drawn network and batch.
        per_layer: also keep every layer's block G_l (memory: L matrices CT x CT).

    Example:
        >>> from meanfield.spec.network import Network
        >>> from meanfield.sampled.backprop import draw, forward
        >>> net = Network(2, "relu", 2, 0.1, outputs=2)
        >>> tr = forward(net, draw(net, 5, 4, seed=0))
        >>> J = jacobian(net, tr)
        >>> bool(np.allclose(gram(net, tr).matrix, J @ J.T / 4))
        True
    """
    G, diag, off, mats, _ = _accumulate(net, trace, upper_only=False, per_layer=per_layer)
    return Gram(G, diag, off, gram_plan(net), mats)


def _block_means(B, blocks, n: int, T: int) -> tuple[float, float | None]:
    """(mean diagonal entry, mean same-output off-diagonal entry) of T G_l from its C diagonal blocks
    (full, symmetric), after the output norm's map B (None without one)."""
    if B is not None:
        blocks = [B[k] @ blk @ B[k] for k, blk in enumerate(blocks)]
    tr = sum(float(np.trace(blk)) for blk in blocks)
    off = (sum(float(blk.sum()) for blk in blocks) - tr) / (n * (T - 1) * T) if T > 1 else None
    return tr / (n * T), off


def _accumulate(net: Network, trace: Trace, *, upper_only: bool, per_layer: bool = False):
    """Sum the layer blocks (see :func:`gram`); with ``upper_only`` only those above the top hidden
    batch norm, u-space (before the output norm's map) and times T, plus the signal there."""
    C, T = trace.outputs.shape
    n = C * T
    G, top, signal = None, None, None
    B = _output_maps(net, trace)
    diag, off, mats = {}, {}, ({} if per_layer else None)
    for l, Gl in _layer_blocks(net, trace, upper_only=upper_only):
        if isinstance(Gl, _Signal):
            signal = Gl.e
            continue
        if isinstance(Gl, _Top):
            top = Gl.K  # added to the diagonal blocks at the end
            blocks = [top] * C
            if per_layer:
                Gl = np.zeros((C, T, C, T))
                for k in range(C):
                    Gl[k, :, k, :] = top
                Gl = Gl.reshape(n, n)
        else:
            # Gl is valid on its upper triangle: mirror the C diagonal blocks (T x T) for the means
            blocks = [_mirror_upper(Gl[k * T:(k + 1) * T, k * T:(k + 1) * T].copy()) for k in range(C)]
            if G is None and not per_layer:
                G = Gl  # the first full block becomes the accumulator: no extra CT x CT pass
            elif G is None:
                G = Gl.copy()
            else:
                G += Gl
        diag[l], off[l] = _block_means(B, blocks, n, T)
        if per_layer:
            mats[l] = _transform(B, _mirror_upper(Gl)) * (1.0 / T)
        del Gl, blocks
    if G is None:
        G = np.zeros((n, n))
    for k in range(C):
        G[k * T:(k + 1) * T, k * T:(k + 1) * T] += top
    _mirror_upper(G)
    order = sorted(diag)
    diag, off = {l: diag[l] for l in order}, {l: off[l] for l in order}
    if upper_only:
        return G, diag, off, mats, signal
    G = _transform(B, G)
    G *= 1.0 / T  # every block above is T G_l
    return G, diag, off, None if mats is None else {l: mats[l] for l in order}, signal


@dataclass(frozen=True, eq=False)
class UpperGram:
    """The layers above the top hidden batch norm l_B, exactly: what the matrix-free route adds to.

    Attributes:
        matrix: T times their share of G before the output norm's map (CT x CT, symmetric).
        layer_diag, layer_offdiag: their mean entries, as in :class:`Gram` (after the output map).
        signal: e (C, T, M_lB), the backward signal of output k at sample t at the normalized units
            ũ^{l_B} (it lives on sample t only: nothing above l_B couples the samples).
        maps: the output norm's maps B_k (C, T, T) (:func:`output_maps`), or None.
        top: l_B (0 without a hidden batch norm; then signal is None and matrix is all of T G).
    """

    matrix: np.ndarray
    layer_diag: dict
    layer_offdiag: dict
    signal: np.ndarray | None
    maps: np.ndarray | None
    top: int


def upper_gram(net: Network, trace: Trace) -> UpperGram:
    """T G_u restricted to the layers l > l_B above the top hidden batch norm, and the signal at l_B.

    Example:
        >>> from meanfield.spec.network import Network, BatchNorm
        >>> from meanfield.sampled.backprop import draw, forward
        >>> net = Network(3, "relu", 2, 0.1, outputs=2, norms=[BatchNorm(2)])
        >>> up = upper_gram(net, forward(net, draw(net, 6, 4, seed=0)))
        >>> up.top, up.matrix.shape, up.signal.shape, sorted(up.layer_diag)
        (2, (8, 8), (2, 4, 6), [3])
    """
    G, diag, off, _, signal = _accumulate(net, trace, upper_only=True)
    return UpperGram(G, diag, off, signal, _output_maps(net, trace), _top_hidden_bn(net))


def output_maps(net: Network, trace: Trace) -> np.ndarray | None:
    """B_k (C, T, T) with d f_k(t) / d u^L_k(s) = B_k[t, s] for an output batch norm, else None.

    Example:
        >>> from meanfield.spec.network import Network
        >>> from meanfield.sampled.backprop import draw, forward
        >>> net = Network(2, "relu", 2, 0.1)
        >>> output_maps(net, forward(net, draw(net, 4, 3))) is None
        True
    """
    return _output_maps(net, trace)


def top_eigenvalue(G: np.ndarray, method: str = "auto", *, outputs: int = 1) -> tuple[float, str]:
    """lambda_max of the symmetric PSD matrix G: dense ('dense') or Lanczos ('lanczos'); 'auto' picks.

    'auto' uses dense eigh (only the top eigenvalue) up to size :data:`DENSE_LIMIT`, block Lanczos
    (:func:`block_lanczos`) above: it stops at a residual <= 1e-12 lambda or an estimated error
    residual^2 / gap <= 1e-12 lambda. Returns (value, method used).

    Args:
        G: the matrix.
        method: 'auto', 'dense' or 'lanczos'.
        outputs: C when G is a dual Gram with index k*T + t: the Lanczos block then starts from the C
            per-output mean directions (plus noise), near the outliers' eigenvectors, and one pass over
            G serves C vectors (measured: 4 passes instead of 21 single vectors at C = 10, T = 256).

    Example:
        >>> top_eigenvalue(np.diag([1.0, 3.0, 2.0]))
        (3.0, 'dense')
    """
    method = check_choice("method", method, ("auto", "dense", "lanczos"))
    n = G.shape[0]
    if not np.any(G):
        return 0.0, "dense"
    if method == "auto":
        method = "dense" if n <= DENSE_LIMIT else "lanczos"
    b = outputs if outputs > 1 and n % outputs == 0 and n >= 4 * outputs else 1
    if method == "lanczos" and n > 2 * b:
        # deterministic start: noise plus the mean direction of each output (of all, for b = 1)
        start = np.random.default_rng(0).standard_normal((b, n))
        T = n // b
        for k in range(b):
            start[k, k * T:(k + 1) * T] += 3.0 if b > 1 else 1.0
        result = block_lanczos(lambda X: (G @ X.T).T, start, tol=1e-12, gap_tol=1e-12)
        return result.value, "lanczos"
    value = scipy.linalg.eigh(G, eigvals_only=True, subset_by_index=[n - 1, n - 1])
    return float(value[0]), "dense"


def jacobian(net: Network, trace: Trace) -> np.ndarray:
    """J (CT x P), row a = k*T + t = d f_k(t)/d theta; columns W^1..W^L (row-major), then b^1..b^L.

    Built by brute force from the exact backward pass with unit cotangents (no structure used): the
    oracle for :func:`gram` and the baseline of the benchmark. Memory CT * P * 8 bytes.

    Example:
        >>> from meanfield.spec.network import Network
        >>> from meanfield.sampled.backprop import draw, forward
        >>> net = Network(2, "tanh", 1, 0.1, outputs=3)
        >>> jacobian(net, forward(net, draw(net, 4, 2, seed=0))).shape
        (6, 35)
    """
    C, T = trace.outputs.shape
    L = net.depth
    n = C * T
    sizes = [trace.inputs.shape[1]] + [u.shape[1] for u in trace.pre]
    P = sum(sizes[l] * (sizes[l - 1] + 1) for l in range(1, L + 1))
    check_memory(n * P * 8 + 4 * T * max(sizes) * 8 * min(n, 64), "explicit Jacobian", sizes[1])
    J = np.empty((n, P))
    woff = np.cumsum([0] + [sizes[l] * sizes[l - 1] for l in range(1, L + 1)])
    boff = woff[-1] + np.cumsum([0] + [sizes[l] for l in range(1, L + 1)])
    per = max(1, _CHUNK_BYTES // (8 * 3 * T * max(sizes)))
    for a0 in range(0, n, per):
        a1 = min(n, a0 + per)
        idx = np.arange(a0, a1)
        cot = np.zeros((a1 - a0, T, C))
        cot[np.arange(a1 - a0), idx % T, idx // T] = 1.0
        D = norm_backward(net, trace, L, cot)
        for l in range(L, 0, -1):
            h = trace.hidden(l - 1)
            J[a0:a1, woff[l - 1]:woff[l]] = np.matmul(D.transpose(0, 2, 1), h).reshape(a1 - a0, -1)
            J[a0:a1, boff[l - 1]:boff[l]] = D.sum(axis=1)
            if l > 1:
                D = backward_layer(net, trace, l, D)
    return J


def explicit_gram(net: Network, trace: Trace) -> np.ndarray:
    """J J^T / T with J from :func:`jacobian`: the brute-force route (oracle, benchmark baseline)."""
    J = jacobian(net, trace)
    T = trace.outputs.shape[1]
    G = J @ J.T
    G *= 1.0 / T
    return G


# ------------------------------------------------------------------------------------------------
# result objects
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerGram:
    """Weight layer l's share of the Gram: its contribution to the mean entries (and as kappa's).

    kappa1 = T * gram_diag / (alpha M) and kappa2 = T * gram_offdiag / (alpha M), the layer's term of
    the theory's kappa sums (None when undefined: T = 1 or alpha = 0).
    """

    layer: int
    method: str
    parameters: int
    gram_diag: float
    gram_offdiag: float | None
    kappa1: float | None
    kappa2: float | None


@dataclass(frozen=True, eq=False)
class SampledSpectrum:
    """FIM statistics of one sampled network and batch, exact (from the dual Gram G = J J^T / T).

    Attributes:
        network, width (M), samples (T), seed, P (parameters).
        m: tr(G)/P; s: ||G||_F^2 / P; lambda_max: top eigenvalue of G (= of F).
        gram_diag: mean diagonal entry of G; gram_offdiag: mean same-output off-diagonal entry
            G[(k,t),(k,s)], t != s (None if T = 1).
        alpha: sum_{l=1}^{L-1} alpha_l alpha_{l-1}; kappa1 = T gram_diag/(alpha M),
            kappa2 = T gram_offdiag/(alpha M) (None if alpha = 0 or T = 1).
        layers: per weight layer, a :class:`LayerGram` (contributions summing to gram_diag etc.).
        eigenvalues: all CT eigenvalues of G, descending (the non-zero FIM spectrum, plus zeros),
            when asked for, else None.
        gram: G itself when asked for, else None.
        lambda_max_method: 'dense' or 'lanczos'; seconds: wall time of the computation.
        m_se, s_se: standard errors of m and s (0 when exact: ``gram_method`` 'exact'; the
            'matrix-free' route estimates them, see :mod:`meanfield.sampled.matfree`).
        gram_method: 'exact' or 'matrix-free'.
        controls: control variates of the same network, name -> value with known mean 0
            (:func:`meanfield.sampled.sampling.controls`; empty when not computed).
    """

    network: Network
    width: int
    samples: int
    seed: int
    P: int
    m: float
    s: float
    lambda_max: float
    gram_diag: float
    gram_offdiag: float | None
    alpha: float
    kappa1: float | None
    kappa2: float | None
    layers: tuple
    eigenvalues: np.ndarray | None = None
    gram: np.ndarray | None = None
    lambda_max_method: str = "dense"
    seconds: float = field(default=0.0, compare=False)
    m_se: float = 0.0
    s_se: float = 0.0
    gram_method: str = "exact"
    # control variates: name -> realized value with exact mean 0 (meanfield.sampled.sampling.controls)
    controls: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def eta_max(self) -> float | None:
        """2 / lambda_max: the largest stable gradient-descent step on the squared loss."""
        return 2.0 / self.lambda_max if self.lambda_max > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """The scalar statistics (and per-layer gram_diag[l], gram_offdiag[l]) as a flat dict."""
        out = {"P": self.P, "m": self.m, "s": self.s, "lambda_max": self.lambda_max,
               "gram_diag": self.gram_diag, "gram_offdiag": self.gram_offdiag,
               "kappa1": self.kappa1, "kappa2": self.kappa2}
        for lay in self.layers:
            out[f"gram_diag[{lay.layer}]"] = lay.gram_diag
            out[f"gram_offdiag[{lay.layer}]"] = lay.gram_offdiag
        return out

    def _rows(self) -> list[tuple[str, Any]]:
        if self.gram_method != "exact":
            return [("P", self.P), ("m", self.m), ("m_se", self.m_se), ("s", self.s), ("s_se", self.s_se),
                    ("lambda_max", self.lambda_max), ("gram_diag", self.gram_diag),
                    ("gram_offdiag", self.gram_offdiag), ("kappa1", self.kappa1), ("kappa2", self.kappa2)]
        return [("P", self.P), ("m", self.m), ("s", self.s), ("lambda_max", self.lambda_max),
                ("gram_diag", self.gram_diag), ("gram_offdiag", self.gram_offdiag),
                ("kappa1", self.kappa1), ("kappa2", self.kappa2)]

    def __str__(self) -> str:
        head = (f"SampledSpectrum: {self.network.describe()}\n"
                f"  M={self.width}  T={self.samples}  seed={self.seed}  "
                f"lambda_max by {self.lambda_max_method}"
                + (f", {self.gram_method} Gram" if self.gram_method != "exact" else "") + f"  ({self.seconds:.3g} s)")
        rows = self._rows()
        w = max(len(k) for k, _ in rows)
        body = "\n".join(f"  {k:<{w}}  {fmt(v):>14}" for k, v in rows)
        cols = ("layer", "method", "params", "gram_diag", "gram_offdiag", "kappa1", "kappa2")
        table = [cols] + [(str(x.layer), x.method, str(x.parameters), fmt(x.gram_diag), fmt(x.gram_offdiag),
                           fmt(x.kappa1), fmt(x.kappa2)) for x in self.layers]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        lines = ["  " + "  ".join(c.rjust(widths[i]) for i, c in enumerate(r)) for r in table]
        return f"{head}\n{body}\n  per layer:\n" + "\n".join(lines)

    __repr__ = __str__

    def _repr_latex_(self) -> str:
        names = {"P": "P", "m": "m", "m_se": r"\sigma_m", "s": "s", "s_se": r"\sigma_s", "lambda_max": r"\lambda_{\max}", "gram_diag": r"\bar G_{\rm diag}",
                 "gram_offdiag": r"\bar G_{\rm off}", "kappa1": r"\kappa_1", "kappa2": r"\kappa_2"}
        rows = " \\\\ ".join(f"{names[k]} & {latex_value(v)}" for k, v in self._rows())
        layer_rows = " \\\\ ".join(
            f"{x.layer} & {latex_value(x.gram_diag)} & {latex_value(x.gram_offdiag)} & {latex_value(x.kappa1)} & {latex_value(x.kappa2)}"
            for x in self.layers)
        return (f"$\\text{{sampled: }} M={self.width},\\ T={self.samples},\\ \\text{{seed}}={self.seed}"
                f"\\quad \\begin{{array}}{{lr}} {rows} \\end{{array}}"
                f"\\quad \\begin{{array}}{{rrrrr}} l & \\bar G^l_{{\\rm diag}} & \\bar G^l_{{\\rm off}} & "
                f"\\kappa_1^l & \\kappa_2^l \\\\ \\hline {layer_rows} \\end{{array}}$")
