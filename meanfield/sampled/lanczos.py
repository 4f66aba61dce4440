"""Block Lanczos for the top eigenvalue of a symmetric PSD operator given only by its products.

Used on the dense dual Gram (:func:`meanfield.sampled.gram.top_eigenvalue`) and on the matrix-free
products below a hidden batch norm (:mod:`meanfield.sampled.matfree`). Full reorthogonalization
(the bases stay small: tens of vectors), exact residuals of the top Ritz pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LanczosResult", "block_lanczos"]


def _orthonormal_rows(R: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Orthonormal rows spanning those of R (b x n, b small), dropping directions of norm <= floor.

    Through the b x b Gram matrix, twice (its rounding error squares the condition once; the second
    pass restores orthogonality): LAPACK's QR of a tall thin matrix is slow under threaded BLAS."""
    for _ in range(2):
        w, U = np.linalg.eigh(R @ R.T)
        keep = w > max(floor * floor, 1e-24 * max(float(w[-1]), 0.0)) if w.size else w > 0
        if not np.any(keep):
            return R[:0]
        R = (U[:, keep].T @ R) / np.sqrt(w[keep])[:, None]
        floor = 0.0
    return R


@dataclass(frozen=True, eq=False)
class LanczosResult:
    """The top Ritz pair of a symmetric operator from :func:`block_lanczos`.

    Attributes:
        value: the top Ritz value theta (<= lambda_max, and within ``residual`` of an eigenvalue).
        residual: ||A y - theta y|| for the unit Ritz vector y.
        basis: (k, n) orthonormal rows spanning the block Krylov space (deterministic given the start).
        products: (k, n) rows A v_j of the basis rows v_j.
        vectors: k, the operator's applications (vectors).
    """

    value: float
    residual: float
    basis: np.ndarray
    products: np.ndarray
    vectors: int


def block_lanczos(apply, start: np.ndarray, *, tol: float = 1e-12, max_vectors: int | None = None,
                  gap_tol: float | None = None, cluster: int | None = None) -> LanczosResult:
    """Top eigenvalue of a symmetric PSD operator by block Lanczos (full reorthogonalization).

    Stops when the top Ritz pair's residual ||A y - theta y|| <= tol * theta (then |lambda - theta| is at
    most that, Bauer-Fike for a symmetric matrix), when the Krylov space is invariant, or at
    ``max_vectors`` (default n). The tolerance is raised to the rounding floor 50 eps sqrt(n) of an
    n-dimensional product. A block of b vectors per application lets the operator use matrix-matrix
    products (one pass over a dense matrix, or b rows in every GEMM of a matrix-free product), and a
    block no smaller than a cluster of top eigenvalues converges without stalling on it.

    Args:
        apply: X (b, n) -> A X^T as rows (b, n).
        start: the first block (b, n), of full row rank.
        tol: relative residual of the top Ritz pair.
        max_vectors: bound on the basis size.
        gap_tol: also stop once ||r|| <= 1e-5 theta and ||r||^2 / (theta - theta_2) <= gap_tol * theta,
            theta_2 the second Ritz value: the eigenvalue error of a converging Ritz pair is about
            ||r||^2 / gap (quadratic in the residual), with the Ritz gap standing in for the true gap
            (an estimate, not a bound: used where products are expensive).
        cluster: p, the number of top eigenvalues expected to stand far above the rest (the C outliers
            of a Fisher matrix, with the start block near their eigenvectors). The cluster is captured once
            its quadratic residual bound ||R||_2^2 / (theta_p - 2 theta_{p+1}) <= 1e-5 theta (R the
            residuals of its p Ritz vectors, theta_{p+1} the first Ritz value below it: the Rayleigh-Ritz
            bound on all p Ritz values' errors, with 2 theta_{p+1} standing in for the top of the rest,
            which theta_{p+1} only bounds from below: factor 2 as a margin). From then on every new block
            is the residual r of the top Ritz vector alone (only theta's error is still wanted, and r is
            the Krylov direction it depends on), and with ``gap_tol`` the run stops once
            ||r||^2 / (theta - 2 theta_{p+1}) <= gap_tol * theta: theta's error when r points below the
            cluster, as it does once the cluster's span is captured (an estimate, checked against exact
            eigenvalues in the tests). Measured on ReLU nets with C = 10 outliers 0.05% apart: 2 blocks of
            C, then 2 single vectors, error 5e-14 relative; full blocks need 5 blocks of C for that.
            Where the p top Ritz values do not stand clear (theta_p <= 2 theta_{p+1}: a large p, outliers
            not yet apart from the bulk), blocks of p would only cost: the residuals of the top two Ritz
            vectors make every further block.

    Example:
        >>> A = np.diag(np.arange(1.0, 101.0))
        >>> r = block_lanczos(lambda X: X @ A, np.random.default_rng(0).standard_normal((2, 100)))
        >>> round(r.value, 9), r.residual < 1e-10 * 100
        (100.0, True)
        >>> A[0, 0], A[1, 1] = 1000.0, 999.9   # two outliers far above the rest, a start near them
        >>> start = np.eye(100)[:2] + 0.01 * np.random.default_rng(0).standard_normal((2, 100))
        >>> r = block_lanczos(lambda X: X @ A, start, gap_tol=1e-12, cluster=2)
        >>> round(r.value, 9), r.vectors   # 12 vectors without ``cluster``
        (1000.0, 7)
    """
    b, n = start.shape
    max_vectors = n if max_vectors is None else min(n, int(max_vectors))
    tol = max(float(tol), 50.0 * np.finfo(np.float64).eps * math.sqrt(n))
    Q = _orthonormal_rows(np.asarray(start, dtype=np.float64))
    cap = min(max_vectors, 64)
    V = np.empty((cap, n))  # the basis rows and their products, filled in order (capacity doubles)
    AV = np.empty((cap, n))
    H = np.empty((cap, cap))  # V A V^T, grown by one block of rows and columns
    k = 0
    theta, res = 0.0, math.inf
    while True:
        b = Q.shape[0]
        if k + b > cap:
            cap = min(max_vectors, max(2 * cap, k + b))
            V, AV = (np.concatenate([X[:k], np.empty((cap - k, n))]) for X in (V, AV))
            H = np.pad(H[:k, :k], ((0, cap - k), (0, cap - k)))
        V[k:k + b] = Q
        AV[k:k + b] = apply(Q)
        H[k:k + b, :k + b] = Q @ AV[:k + b].T
        H[:k, k:k + b] = H[k:k + b, :k].T
        k += b
        w, S = np.linalg.eigh(0.5 * (H[:k, :k] + H[:k, :k].T))
        theta, s = float(w[-1]), S[:, -1]
        r_top = s @ AV[:k] - theta * (s @ V[:k])
        res = float(np.linalg.norm(r_top))
        if res <= tol * abs(theta) or k >= max_vectors:
            break
        if gap_tol is not None and k > 1 and res <= 1e-5 * abs(theta) and \
                res * res <= gap_tol * abs(theta) * (theta - float(w[-2])):
            break
        single = narrow = False
        if cluster is not None and gap_tol is not None and k > cluster:
            below = float(w[-cluster - 1])  # theta_{p+1}
            gap_p = float(w[-cluster]) - 2.0 * below
            narrow = gap_p <= 0  # no separated cluster: blocks of p would only cost
            if gap_p > 0:
                Sp = S[:, -cluster:]
                R = Sp.T @ AV[:k] - w[-cluster:, None] * (Sp.T @ V[:k])
                single = float(np.linalg.eigvalsh(R @ R.T)[-1]) <= 1e-5 * theta * gap_p
            # the cluster captured, r points below it (up to its angle to the cluster, <~ 3e-3)
            if single and res * res <= gap_tol * theta * (theta - 2.0 * below):
                break
        # the next block: A times the newest block (or the top Ritz vector's residual), orthogonalized
        # against the whole basis twice (one Gram-Schmidt pass loses orthogonality at the rounding
        # level times the condition)
        if single:
            Y = r_top[None]
        elif narrow:  # the residuals of the top two Ritz vectors, a block of two from here on
            S2 = S[:, -min(2, k):]
            Y = S2.T @ AV[:k] - w[-S2.shape[1]:, None] * (S2.T @ V[:k])
        else:
            Y = AV[k - b:k]
        R = Y - (Y @ V[:k].T) @ V[:k]
        R -= (R @ V[:k].T) @ V[:k]
        R = R[: max_vectors - k]
        scale = max(float(np.max(np.linalg.norm(Y, axis=1))), np.finfo(np.float64).tiny)
        Q = _orthonormal_rows(R, 1e-10 * scale)  # drops directions already in the basis
        if Q.shape[0] == 0:
            break
        Q -= (Q @ V[:k].T) @ V[:k]
        Q = _orthonormal_rows(Q)
        if Q.shape[0] == 0:
            break
    return LanczosResult(theta, res, V[:k].copy(), AV[:k].copy(), k)
