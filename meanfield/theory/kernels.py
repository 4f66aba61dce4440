"""Kernels of a wide random network on a user's own batch: q^l, qhat^l, qtilde^l and the NTK, all T x T.

The isotropic theory (:mod:`meanfield.theory.recursions`) describes T exchangeable inputs by two numbers.
On a batch X (T x d) the same mean-field rules hold entry by entry, with the input Gram
qhat^0 = X X^T / d (the first layer's fan-in is d, W^1 ~ N(0, sigma_w^2 / d)):

    dense:      q^l = sigma_w^2 qhat^{l-1} + sigma_b^2 1 1^T
    none:       the unit's T values u ~ N(0, q^l);          qhat^l(t, s) = E[phi(u_t) phi(u_s)]
    layer norm: per sample u_t / sqrt(q^l(t, t)):           law N(0, q^l(t,s) / sqrt(q^l(t,t) q^l(s,s)))
    centre-only batch norm: Pi u, Pi = I - 1 1^T / T:       law N(0, Pi q^l Pi)  (exact, Gaussian)
    batch norm: b = sqrt(T) Pi u / |Pi u|, u ~ N(0, q^l):   not Gaussian (an angular Gaussian law);
                in a hidden layer qhat^l = E[phi(b) phi(b)^T] by Monte Carlo with a fixed seed (standard
                errors from disjoint groups of the samples reported)

each pair (t, s) a two-dimensional Gaussian expectation with unequal variances
(:func:`meanfield.integrals.gaussian.pair_moment`), vectorised over the upper triangle.

Backward. Write R^l_{tt'}(s, s') = sum_i E[d f(t)/d u^l_i(s) d f(t')/d u^l_i(s')] for one output. The
dual Gram's layer-l term is E G_l(t, t') = (1/T) <R^l_{tt'}, Z^l>, Z^l = M_{l-1} qhat^{l-1} + 1 1^T, and
R^l = sigma_w^2 E[J^T D R^{l+1} D J], with the unit's normalization Jacobian J (identity without norm,
diag(1/sqrt(q(t,t))) for layer norm, Pi for centre-only, (1/sigma)(Pi - b b^T / T) for batch norm) and
D = diag phi'(normalised u) (D = I at the output). Rather than carrying T^4 numbers, Z^l is pushed UP
through the adjoints of these maps,

    A_l(Y) = E[D J Y J^T D],   E G block (per output, T x T) = (1/T) S_L,   S_l = A_l(Z^l + sigma_w^2 S_{l-1}),

so that everything stays T x T. Without normalization or with layer norm A_l(Y) = Y o K_l (Hadamard) with
K_l(t, s) = E[phi'(u_t) phi'(u_s)] (times 1/sqrt(q(t,t) q(s,s)) for layer norm), and the textbook backward
kernel qtilde^l = sigma_w^2 qtilde^{l+1} o K_l, qtilde^L = 1 1^T, exists as a T x T matrix. For centre-only
batch norm A(Y) = (Pi Y Pi) o E[phi'(b) phi'(b)^T] (exact). For a full batch norm on the output (D = I) A is
exact: its expectations over 1/|Pi u|^2 powers become one-dimensional integrals of Gaussian moments
(:class:`RadialIntegrals`); in a hidden layer A is a Monte-Carlo average of D J Y J D over the unit's law
(O(N T^2) by matrix products). So everything is exact except a full batch norm in a hidden layer (and the
Monte-Carlo lower bound of lambda_max under a full batch norm on the output, :mod:`meanfield.theory.batch`).
Layer norm's Jacobian keeps only its 1/sqrt(q(t,t)) part, as the isotropic theory does (its rank-one part is
O(1/M)). A full batch norm's T-dimensional law has no closed form in a hidden layer because phi'(b) and phi(b)
there depend on the direction of Pi u, which is not uniform on a general batch (it is on an isotropic one:
the sphere law).

The NTK: the standard parameterization at width M is T times the E G block, ``ntk`` = sum_l (M_{l-1} H^l +
O^l) with H^l, O^l the pushed-up qhat^{l-1} and 1 1^T; in the NTK parameterization (W ~ N(0, 1) scaled by
sqrt(sigma_w^2 / fan-in) in the forward pass) ``ntk_param`` = sum_l (sigma_w^2 H^l + sigma_b^2 O^l), width-free.
For a plain network H^l = qhat^{l-1} o qtilde^l and O^l = qtilde^l.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy

from ..errors import InvalidArgument, check_int
from ..integrals import gaussian
from ..spec.activations import Activation
from ..spec.inputs import BatchKey, check_inputs
from ..spec.network import BatchNorm, LayerNorm, Network
from .backend import fmt

__all__ = ["kernels", "Kernels", "batch_gram", "propagate", "Propagation", "MC_SAMPLES", "MC_SEED",
           "MC_GROUPS", "MAX_MC_SAMPLES_T", "mc_samples_for", "MAX_SYMBOLIC_T", "pair_kernel", "output_square_norm",
           "expected_max_output_eigenvalue", "has_monte_carlo", "has_full_batch_norm", "check_batch_size",
           "radial_integrals", "RadialIntegrals", "max_output_rayleigh",
           "PROPAGATION_CACHE", "clear_propagation_cache"]

# Monte Carlo of a full batch norm's T-dimensional law: samples, seed and the number of groups whose spread
# gives the standard errors (batch means). The cost is O(N T^2) per layer and pushed matrix; the default N
# (mc_samples_for) keeps N T near 2^18, between 2^11 and 2^14 samples: averages over more samples of the batch
# need fewer draws for the same accuracy of gram_diag, gram_offdiag, m and s (measured: about 0.3% relative).
MC_SAMPLES = 1 << 14
MC_SEED = 20261207
MC_GROUPS = 16
MAX_MC_SAMPLES_T = 512  # the largest batch a full batch norm is evaluated on (N T^2 work, N x T memory a layer)
MAX_SYMBOLIC_T = 4  # the largest batch evaluated in sympy (T (T + 1) / 2 symbolic Gaussian integrals per layer)
PROPAGATION_CACHE = 2 * (MC_GROUPS + 1)  # numeric passes kept: 2 (network, batch) pairs with their MC groups


def mc_samples_for(T: int) -> int:
    """The default Monte-Carlo sample count for a batch of T: 2^18 / T, within [2^11, MC_SAMPLES = 2^14].

    Example:
        >>> mc_samples_for(16), mc_samples_for(64), mc_samples_for(512)
        (16384, 4096, 2048)
    """
    return max(1 << 11, min(MC_SAMPLES, (1 << 18) // max(int(T), 1)))


# -- inputs ---------------------------------------------------------------------------------------------------------


def batch_gram(inputs: Any = None, gram: Any = None) -> tuple[Any, int | None]:
    """(qhat^0, d): X X^T / d from inputs X (T x d), or a given T x T Gram (then d is None).

    A numeric Gram must be symmetric (to 1e-12 relative) and positive semi-definite (eigenvalues >= -1e-10 of
    the largest); a sympy Matrix is taken as it is (symbolic evaluation).

    Raises:
        InvalidArgument: both or neither given, a bad X (:func:`meanfield.spec.inputs.check_inputs`), a Gram
            that is not square, symmetric, finite or positive semi-definite.

    Example:
        >>> K, d = batch_gram([[1.0, 1.0], [1.0, -1.0]])
        >>> K.tolist(), d
        ([[1.0, 0.0], [0.0, 1.0]], 2)
    """
    if (inputs is None) == (gram is None):
        raise InvalidArgument("inputs", "both" if inputs is not None else None,
                              "exactly one of inputs=X (T x d) and gram=K (T x T)")
    if inputs is not None:
        X = check_inputs(inputs)
        return X @ X.T / X.shape[1], X.shape[1]
    if isinstance(gram, sympy.MatrixBase):
        if gram.rows != gram.cols or gram.rows < 1:
            raise InvalidArgument("gram", f"{gram.rows} x {gram.cols} matrix", "a square T x T Gram")
        if gram.rows > MAX_SYMBOLIC_T:
            raise InvalidArgument("gram", f"{gram.rows} x {gram.rows} sympy Matrix",
                                  f"at most {MAX_SYMBOLIC_T} x {MAX_SYMBOLIC_T} when symbolic (one symbolic "
                                  "integral per pair and layer); convert to numbers for larger batches")
        if (gram - gram.T).applyfunc(sympy.simplify) != sympy.zeros(gram.rows):
            raise InvalidArgument("gram", "sympy Matrix", "a symmetric Gram")
        return sympy.ImmutableMatrix(gram), None
    try:
        K = np.asarray(gram, dtype=float)
    except (TypeError, ValueError):
        raise InvalidArgument("gram", type(gram).__name__, "a T x T array of real numbers") from None
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise InvalidArgument("gram", f"array of shape {K.shape}", "a square T x T Gram")
    if not np.all(np.isfinite(K)):
        raise InvalidArgument("gram", "array with nan or inf", "finite values")
    scale = float(np.max(np.abs(K))) or 1.0
    if np.max(np.abs(K - K.T)) > 1e-12 * scale:
        raise InvalidArgument("gram", "non-symmetric array", "a symmetric Gram (K = K^T to 1e-12)")
    K = (K + K.T) / 2
    low = float(np.linalg.eigvalsh(K)[0])
    if low < -1e-10 * scale:
        raise InvalidArgument("gram", f"array with eigenvalue {low:.3g}", "a positive semi-definite Gram",
                              "a Gram of real inputs has no negative eigenvalue")
    if np.any(np.diag(K) < 0):
        raise InvalidArgument("gram", "array with a negative diagonal entry", "non-negative mean squares")
    return K, None


# -- pair moments -----------------------------------------------------------------------------------------------------


def pair_kernel(f: Activation, cov: Any) -> Any:
    """K(t, s) = E[f(u_t) f(u_s)], u ~ N(0, cov): all T (T + 1) / 2 pairs in one vectorised call.

    Args:
        f: an activation (or a derivative, ``phi.derivative``).
        cov: a T x T covariance (numpy array, or a sympy Matrix for closed forms).

    Returns:
        The T x T matrix (numpy, or sympy ImmutableMatrix).

    Example:
        >>> from meanfield.spec.activations import activation
        >>> K = pair_kernel(activation("relu"), np.array([[2.0, 0.0], [0.0, 1.0]]))
        >>> np.round(K, 6).tolist()          # q/2 on the diagonal, sqrt(q_a q_b)/(2 pi) off it
        [[1.0, 0.225079], [0.225079, 0.5]]
    """
    if isinstance(cov, sympy.MatrixBase):
        T = cov.rows
        out = sympy.zeros(T, T)
        for i in range(T):
            for j in range(i, T):
                v = sympy.simplify(gaussian.pair_moment(f, cov[i, i], cov[j, j], cov[i, j]))
                out[i, j] = out[j, i] = v
        return sympy.ImmutableMatrix(out)
    cov = np.asarray(cov, dtype=float)
    T = cov.shape[0]
    i, j = np.triu_indices(T, 1)
    d = np.diag(cov)
    qab = cov[i, j]
    bound = np.sqrt(d[i] * d[j])
    qab = np.clip(qab, -bound, bound)  # rounding of a PSD matrix only (callers pass PSD covariances)
    out = np.empty((T, T))
    # the diagonal by the one-dimensional second moment, as the isotropic theory computes it
    out[np.arange(T), np.arange(T)] = np.asarray(gaussian.second_moment(f, d), dtype=float)
    if len(i):
        vals = np.asarray(gaussian.pair_moment(f, d[i], d[j], qab), dtype=float)
        out[i, j] = vals
        out[j, i] = vals
    return out


# -- one layer's unit law and its adjoint map ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """A layer's normalised law and its adjoint backward map A(Y) = E[D J Y J^T D] (module docstring)."""

    kind: str                 # "hadamard", "centre", "mc" or "output" (full batch norm on the output: exact)
    kernel: Any = None        # hadamard: K (A(Y) = Y o K); centre: E[phi'(b) phi'(b)^T] (or None at the output)
    b: Any = None             # mc: normalised samples (N x T)
    inv_sigma: Any = None     # mc: 1 / sigma per sample (N,)
    dphi: Any = None          # mc: phi'(b) (N x T) or None at the output
    root: Any = None          # mc: the square root of Pi q Pi the samples were drawn with
    radial: Any = None        # output batch norm: the radial integrals of :func:`radial_integrals` (exact)
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def cached(self) -> tuple:
        """(D / sigma, D b / sigma, E[D 1 1^T D / sigma^2]) of the Monte-Carlo samples, computed once."""
        if not self.cache:
            dinv = self.inv_sigma[:, None] * (1.0 if self.dphi is None else self.dphi)
            dinv = np.broadcast_to(dinv, self.b.shape)
            self.cache["v"] = (dinv, dinv * self.b, dinv.T @ dinv / self.b.shape[0])
        return self.cache["v"]


def _centre(Y: Any) -> Any:
    if isinstance(Y, sympy.MatrixBase):
        T = Y.rows
        Pi = sympy.eye(T) - sympy.ones(T, T) / T
        return sympy.ImmutableMatrix((Pi * Y * Pi).applyfunc(sympy.expand))
    return Y - Y.mean(axis=0, keepdims=True) - Y.mean(axis=1, keepdims=True) + Y.mean()


def _hadamard(Y: Any, K: Any) -> Any:
    if isinstance(Y, sympy.MatrixBase) or isinstance(K, sympy.MatrixBase):
        return sympy.ImmutableMatrix(sympy.Matrix(Y).multiply_elementwise(sympy.Matrix(K)))
    return Y * K


def _apply(unit: _Unit, Y: Any) -> Any:
    """A(Y) for one layer's unit."""
    if unit.kind == "hadamard":
        return Y if unit.kernel is None else _hadamard(Y, unit.kernel)
    if unit.kind == "centre":
        P = _centre(Y)
        return P if unit.kernel is None else _hadamard(P, unit.kernel)
    if unit.kind == "output":
        return unit.radial.adjoint(Y)
    # full batch norm: D J Y J D with J = (1/sigma)(Pi - b b^T / T), averaged over the samples; the parts that
    # do not depend on Y (D b / sigma, E[D 1 1^T D / sigma^2]) are computed once per unit
    b = unit.b
    n, T = b.shape
    dinv, x, ddt = unit.cached()
    P = _centre(Y)
    w = b @ P.T                                    # P b per sample
    y = dinv * w                                   # D P b / sigma
    c = np.einsum("nt,nt->n", b, w)                # b^T P b
    out = P * ddt
    out -= (y.T @ x + x.T @ y) / (n * T)
    out += (x * c[:, None]).T @ x / (n * T * T)
    return out


def output_square_norm(unit: _Unit, Y: np.ndarray) -> float:
    """E ||J Y J^T||_F^2 of the output unit's Jacobian J (random for a full batch norm, else fixed).

    Example:
        >>> output_square_norm(_Unit("hadamard"), np.eye(3))
        3.0
    """
    if unit.kind == "hadamard":
        return float(np.sum(Y * Y))
    P = _centre(Y)
    if unit.kind == "centre":
        return float(np.sum(P * P))
    if unit.kind == "output":
        return unit.radial.square_norm(Y)
    b, inv = unit.b, unit.inv_sigma
    T = b.shape[1]
    # J Y J = (1/sigma^2) K P K with K = Pi - b b^T / T a projector: ||.||^2 = tr(P K P K) / sigma^4
    w = b @ P.T
    trace = np.sum(P * P) - 2 * np.einsum("nt,nt->n", w, w) / T + np.einsum("nt,nt->n", b, w) ** 2 / T**2
    return float(np.mean(trace * inv**4))


def expected_max_output_eigenvalue(unit: _Unit, Y: np.ndarray, outputs: int, draws: int | None = None) -> tuple:
    """(estimate, standard error) of E[max_{k <= C} lambda_max(J_k Y J_k)] over C independent output units with
    a full batch norm: Monte Carlo over ``draws`` groups of C of the unit's samples (default: all of them).

    J Y J = K P K / sigma^2 with P = Pi Y Pi and K = Pi - b b^T / T, the projector onto the complement of 1
    and b: its top eigenvalue is the largest root mu of sum_i w_i^2 / (lambda_i - mu) = 0 (lambda_i, v_i the
    eigenpairs of P, w_i = v_i . b / sqrt(T)), which lies in [lambda_{T-1}, lambda_T] (interlacing) and is
    found by bisection for all samples at once: one eigendecomposition in all, O(T^2) per sample.

    Example:
        >>> b = np.sqrt(1.5) * np.array([[1.0, -1.0, 0.0], [1.0, -1.0, 0.0]])   # |b|^2 = T = 3
        >>> u = _Unit("mc", None, b, np.array([1.0, 2.0]))
        >>> est, err = expected_max_output_eigenvalue(u, np.eye(3), 1)         # K Y K = K: 1/sigma^2
        >>> round(est, 12)
        2.5
    """
    b, inv = unit.b, unit.inv_sigma
    n, T = b.shape
    draws = n // outputs if draws is None else max(1, min(draws, n // outputs))
    count = draws * outputs
    lam, V = np.linalg.eigh(_centre(Y))
    mu = _compression_top(lam, ((b[:count] @ V) ** 2) / T)
    tops = mu * inv[:count] ** 2
    per_draw = tops.reshape(draws, outputs).max(axis=1)
    err = float(per_draw.std(ddof=1) / np.sqrt(draws)) if draws > 1 else float("inf")
    return float(per_draw.mean()), err


def _compression_top(lam: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """Per row of w2: the largest root mu of sum_i w2_i / (lam_i - mu) = 0 in [lam_{T-1}, lam_T] (bisection)."""
    count, T = w2.shape
    lo = np.full(count, lam[-2] if T > 1 else lam[-1])
    hi = np.full(count, lam[-1])
    span = max(abs(lam[-1]), abs(lam[0]), 1e-300)
    for _ in range(200):  # bisection: halves [lambda_{T-1}, lambda_T] until it is at rounding level
        if np.all(hi - lo <= 4e-16 * span):
            break
        mid = (lo + hi) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.sum(w2 / (lam[None, :] - mid[:, None]), axis=1)
        up = g < 0  # g increases from -inf to +inf on the interval: g(mid) < 0 puts the root above mid
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return (lo + hi) / 2


def max_output_rayleigh(unit: _Unit, fit: np.ndarray, evaluations: list, outputs: int) -> np.ndarray:
    """Per matrix Y in ``evaluations``: the mean over draws of max_{k <= C} x_k^T Y x_k / sigma_k^2, x_k the top
    eigenvector of the output unit's J_k ``fit`` J_k (the cross-fitted form of
    :func:`expected_max_output_eigenvalue`: with ``fit`` independent of Y it is unbiased for a value below
    E[max_k lambda_max(J_k E[Y] J_k)], where a noisy Y's own top eigenvalue is biased up).

    Example:
        >>> b = np.sqrt(1.5) * np.array([[1.0, -1.0, 0.0], [1.0, -1.0, 0.0]])
        >>> u = _Unit("mc", None, b, np.array([1.0, 2.0]))
        >>> np.round(max_output_rayleigh(u, np.eye(3), [np.eye(3), 2 * np.eye(3)], 1), 12).tolist()
        [2.5, 5.0]
    """
    b, inv = unit.b, unit.inv_sigma
    n, T = b.shape
    count = (n // outputs) * outputs
    lam, V = np.linalg.eigh(_centre(fit))
    w = (b[:count] @ V) / np.sqrt(T)
    mu = _compression_top(lam, w * w)
    span = max(abs(lam[-1]), abs(lam[0]), 1e-300)
    d = lam[None, :] - mu[:, None]
    tiny = 1e-13 * span
    d = np.where(np.abs(d) < tiny, np.where(d < 0, -tiny, tiny), d)
    x = w / d                                              # the eigenvector of the compression, in V's basis
    one = V.T @ np.ones(T) / np.sqrt(T)
    for u in (w / np.linalg.norm(w, axis=1, keepdims=True), np.broadcast_to(one, w.shape)):
        x = x - np.sum(x * u, axis=1, keepdims=True) * u   # inside the range of K = Pi - b b^T / T
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = []
    for Y in evaluations:
        Pt = V.T @ _centre(Y) @ V
        quad = np.einsum("nt,nt->n", x @ Pt, x) * inv[:count] ** 2
        out.append(quad.reshape(-1, outputs).max(axis=1).mean())
    return np.array(out)


@dataclass(frozen=True)
class RadialIntegrals:
    """A full batch norm on the output, exactly: moments of v ~ N(0, S) (S = Pi q Pi) against powers of 1/|v|^2.

    With b = sqrt(T) v / |v| and sigma = |v| / sqrt(T), the output unit's Jacobian J = (1/sigma)(Pi - b b^T / T)
    gives J Y J = (T / r^2) [P - P v v^T / r^2 - v v^T P / r^2 + v v^T (v^T P v) / r^4], r = |v|, P = Pi Y Pi.
    Writing 1/r^(2k) = int_0^inf tau^(k-1) e^(-tau r^2) dtau / (k-1)! and tilting the Gaussian,
    E[g(v) e^(-tau r^2)] = c(tau) E_tau[g], c = det(I + 2 tau S)^(-1/2), S_tau = S (I + 2 tau S)^(-1), every
    expectation becomes a one-dimensional integral over tau of Gaussian moments under S_tau, diagonal in the
    eigenbasis (lambda_i, V) of S: s_i(tau) = lambda_i / (1 + 2 tau lambda_i). The integrals are taken in
    x = log tau by composite Gauss-Legendre (panels of width 1.5, 20 nodes) over a range whose ends are below
    1e-18 relative, which gives the results to rounding (the isotropic case reproduces T/chi^2 moments to 1e-13).

    Attributes: vectors (the kept eigenvectors, T x r), e0 = E[1/r^2], e4 = E[1/r^4], m1_i (E[v v^T / r^4] =
    V diag(m1) V^T), u2_i, W2_ij, W3_ij (the integrals of tau^2/2 c s_i, tau^2/2 c s_i s_j, tau^3/6 c s_i s_j).
    """

    samples: int
    vectors: np.ndarray = field(repr=False)
    e0: float
    e4: float
    m1: np.ndarray = field(repr=False)
    u2: np.ndarray = field(repr=False)
    W2: np.ndarray = field(repr=False)
    W3: np.ndarray = field(repr=False)

    def adjoint(self, Y: np.ndarray) -> np.ndarray:
        """E[J Y J] = T [P e0 - P E1 - E1 P + E2(P)], E1 = E[v v^T / r^4], E2(P) = E[v v^T (v^T P v) / r^6]."""
        V, T = self.vectors, self.samples
        P = _centre(Y)
        Pt = V.T @ P @ V
        E1 = (V * self.m1) @ V.T
        E2 = (V * (self.W2 @ np.diag(Pt))) @ V.T + 2 * V @ (self.W2 * Pt) @ V.T
        return T * (P * self.e0 - P @ E1 - E1 @ P + E2)

    def square_norm(self, Y: np.ndarray) -> float:
        """E ||J Y J||_F^2 = T^2 [tr(P^2) E[1/r^4] - 2 E[v^T P^2 v / r^6] + E[(v^T P v)^2 / r^8]]."""
        V, T = self.vectors, self.samples
        P = _centre(Y)
        Pt = V.T @ P @ V
        Pt2 = V.T @ (P @ P) @ V
        d = np.diag(Pt)
        quartic = float(d @ self.W3 @ d + 2 * np.sum(self.W3 * Pt * Pt))
        return float(T**2 * (np.sum(P * P) * self.e4 - 2 * np.diag(Pt2) @ self.u2 + quartic))


def radial_integrals(S: np.ndarray, layer: int) -> RadialIntegrals:
    """The exact integrals of a full batch norm on the output for the centred covariance S (:class:`RadialIntegrals`).

    Raises:
        InvalidArgument: S of rank below 5 (E[s] needs E[1/r^4] < inf on the sample's law).

    Example:
        >>> T = 8; S = np.eye(T) - 1.0 / T                  # isotropic: r^2 ~ chi^2_(T-1)
        >>> R = radial_integrals(S, 2)
        >>> round(R.e0 * (T - 3), 12), round(R.e4 * (T - 3) * (T - 5), 12)
        (1.0, 1.0)
    """
    T = S.shape[0]
    lam, V = np.linalg.eigh((S + S.T) / 2)
    keep = lam > 1e-12 * max(float(lam[-1]), 0.0)
    r = int(np.sum(keep))
    if r < 5:
        raise InvalidArgument("inputs", f"batch norm on the output (layer {layer})",
                              "a batch on which the output's centred pre-activations span >= 5 dimensions",
                              f"they span {r}: the inverse batch variance's second moment (and s) is infinite")
    lamk, Vk = lam[keep], V[:, keep]
    a = r / 2 - 2  # the slowest large-tau decay of the integrands below, in x = log tau
    x_lo = np.log(1 / (2 * lamk[-1])) - 42
    x_hi = np.log(1 / (2 * lamk[0])) + 42 / a
    panels = max(1, int(np.ceil((x_hi - x_lo) / 1.5)))
    g, w = np.polynomial.legendre.leggauss(20)
    edges = np.linspace(x_lo, x_hi, panels + 1)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    x = ((edges[:-1] + edges[1:])[:, None] / 2 + half * g[None, :]).ravel()
    dx = (half * w[None, :]).ravel()
    tau = np.exp(x)
    c = np.exp(-0.5 * np.sum(np.log1p(2 * tau[:, None] * lamk[None, :]), axis=1))
    base = dx * tau * c                                  # dtau = tau dx, times c(tau)
    s = lamk[None, :] / (1 + 2 * tau[:, None] * lamk[None, :])
    w2 = base * tau**2 / 2
    w3 = base * tau**3 / 6
    return RadialIntegrals(T, Vk, float(np.sum(base)), float(np.sum(base * tau)), (base * tau) @ s, w2 @ s,
                           (s * w2[:, None]).T @ s, (s * w3[:, None]).T @ s)


# -- the propagation ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Propagation:
    """The per-layer T x T matrices of one pass (numeric or sympy); see :func:`propagate`.

    Attributes:
        q: q^l (l = 1..L; index 0 None). law: the covariance phi sees (None for a full batch norm).
        qhat: qhat^l (l = 0..L-1; index L None). qtilde: qtilde^l where it is a T x T matrix (no batch norm
        at layers >= l), else None. weights, biases: H^l and O^l, the pushed-up qhat^{l-1} and 1 1^T
        (index l; 0 None). units: each layer's adjoint map. opened: per layer (H^l, O^l) before the output
        unit's map (for the output's second moment E ||J Y J||^2).
    """

    q: tuple
    law: tuple
    qhat: tuple
    qtilde: tuple
    weights: tuple
    biases: tuple
    units: tuple = field(repr=False)
    opened: tuple = field(default=(), repr=False)


def _ones(T: int, symbolic: bool) -> Any:
    return sympy.ImmutableMatrix(sympy.ones(T, T)) if symbolic else np.ones((T, T))


def _mc_law(Qc: np.ndarray, layer: int, samples: int, seed: int, part: tuple[int, int] | None,
            root: np.ndarray | None = None):
    """Samples b = sqrt(T) v / |v| and 1/sigma = sqrt(T)/|v| of v ~ N(0, Qc) (Qc = Pi q Pi), fixed seed, and
    the square root of Qc used (``root``: one already computed for the same Qc)."""
    T = Qc.shape[0]
    if root is None:
        lam, V = np.linalg.eigh((Qc + Qc.T) / 2)
        scale = max(float(lam[-1]), 0.0)
        if scale <= 0:
            raise InvalidArgument("inputs", f"batch norm at layer {layer}",
                                  "a batch on which the unit's batch variance is positive",
                                  "every sample gives the unit the same pre-activation here (Pi q Pi = 0)")
        root = V * np.sqrt(np.clip(lam, 0.0, None))   # negative eigenvalues are rounding (|.| <= 1e-10 scale)
    z = np.random.default_rng([seed, layer]).standard_normal((samples, T))
    if part is not None:
        g, groups = part
        z = z[g::groups]
    v = z @ root.T
    v -= v.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("nt,nt->n", v, v))
    inv = np.sqrt(T) / norm
    return v * inv[:, None], inv, root


def _freeze(value: Any) -> Any:
    """Make the numpy arrays of a cached propagation read-only (callers share them), walking tuples and units."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, tuple):
        for v in value:
            _freeze(v)
    elif isinstance(value, (_Unit, RadialIntegrals)):
        for name in value.__dataclass_fields__:
            if name != "cache":
                _freeze(getattr(value, name))
    return value


@functools.lru_cache(maxsize=PROPAGATION_CACHE)
def _cached_propagation(net: Network, key: BatchKey, mc_samples: int, seed: int,
                        part: tuple[int, int] | None) -> Propagation:
    # a group's pass takes the exact layers below the first full batch norm from the full pass (cached too)
    reuse = None if part is None else _cached_propagation(net, key, mc_samples, seed, None)
    p = _propagate(net, key.array, mc_samples=mc_samples, seed=seed, part=part, reuse=reuse)
    return Propagation(*(_freeze(getattr(p, name)) for name in p.__dataclass_fields__))


def clear_propagation_cache() -> None:
    """Forget the cached propagations of :func:`propagate` (to time or to free them).

    Example:
        >>> clear_propagation_cache()
    """
    _cached_propagation.cache_clear()


def propagate(net: Network, K0: Any, *, mc_samples: int | None = None, seed: int = MC_SEED,
              part: tuple[int, int] | None = None, reuse: Propagation | None = None) -> Propagation:
    """q^l, qhat^l, qtilde^l and the pushed-up H^l, O^l of ``net`` on the input Gram K0 (module docstring).

    ``part=(g, G)`` uses only the Monte-Carlo samples g, g + G, g + 2G, ... (the groups whose spread gives
    the standard errors); ``reuse`` (a propagation of the same network and K0) supplies the exact layers below
    the first full batch norm, which do not depend on the samples (a numeric pass takes them from the cached
    full pass instead). Numeric K0 gives numpy arrays; a sympy Matrix gives sympy matrices (no full batch norm).

    The pass does not depend on the width: a numeric one is cached per (network, K0's bytes, mc_samples, seed,
    part), the last PROPAGATION_CACHE of them, so that predictions of one network on one batch at several
    widths propagate once. Its arrays are read-only (they are shared between callers).

    Example:
        >>> p = propagate(Network(2, "relu", 2, 0), np.eye(2))
        >>> np.round(p.weights[2], 6).tolist()       # qhat^1 o qtilde^2 = qhat^1
        [[1.0, 0.31831], [0.31831, 1.0]]
        >>> propagate(Network(2, "relu", 2, 0), np.eye(2)) is p   # the same network and batch: cached
        True
    """
    if isinstance(K0, sympy.MatrixBase):
        return _propagate(net, K0, mc_samples=mc_samples, seed=seed, part=part, reuse=reuse)
    T = np.shape(K0)[0]
    return _cached_propagation(net, BatchKey(K0), mc_samples or mc_samples_for(T), seed,
                               None if part is None else (int(part[0]), int(part[1])))


def _propagate(net: Network, K0: Any, *, mc_samples: int | None, seed: int, part: tuple[int, int] | None,
               reuse: Propagation | None) -> Propagation:
    """The uncached pass of :func:`propagate`."""
    symbolic = isinstance(K0, sympy.MatrixBase)
    T = K0.rows if symbolic else K0.shape[0]
    L = net.depth
    q: list = [None]
    law: list = [None]
    qhat: list = [K0]
    units: list = [None]
    exact_below = min((n.layer for n in net.norms if isinstance(n, BatchNorm) and not n.center_only), default=L + 1)
    for l in range(1, L + 1):
        if reuse is not None and l < exact_below:
            q.append(reuse.q[l])
            law.append(reuse.law[l])
            units.append(reuse.units[l])
            if l < L:
                qhat.append(reuse.qhat[l])
            continue
        sw, sb = net.sigma_w2[l - 1], net.sigma_b2[l - 1]
        if symbolic:
            sw, sb = sympy.nsimplify(sw), sympy.nsimplify(sb)
            Q = sympy.ImmutableMatrix(qhat[-1] * sw + sympy.ones(T, T) * sb)
        else:
            Q = float(sw) * qhat[-1] + float(sb)
        norm = net.norm_at(l)
        phi = net.phi(l) if l < L else None
        h = None
        if norm is None or isinstance(norm, LayerNorm):
            cov, scale = Q, None
            if isinstance(norm, LayerNorm):
                d = [Q[t, t] for t in range(T)] if symbolic else np.diag(Q)
                if (not symbolic and np.any(d <= 0)) or (symbolic and any(x.is_zero for x in d)):
                    raise InvalidArgument("inputs", f"layer norm at layer {l}", "samples with a non-zero "
                                          "pre-activation (q(t, t) > 0)", "a zero sample has no norm to divide by")
                if symbolic:
                    n = sympy.Matrix(T, 1, [1 / sympy.sqrt(x) for x in d])
                    scale = sympy.ImmutableMatrix(n * n.T)
                else:
                    n = 1 / np.sqrt(d)
                    scale = np.outer(n, n)
                cov = _hadamard(Q, scale)
            kern = None
            if phi is not None:
                h = pair_kernel(phi, cov)
                kern = pair_kernel(phi.derivative, cov)
                if scale is not None:
                    kern = _hadamard(kern, scale)
            unit = _Unit("hadamard", kern)
        elif norm.center_only:
            cov = _centre(Q)
            kern = None
            if phi is not None:
                h = pair_kernel(phi, cov)
                kern = pair_kernel(phi.derivative, cov)
            unit = _Unit("centre", kern)
        else:
            if symbolic:
                raise InvalidArgument("gram", "sympy Matrix", "numbers for a network with full batch norm",
                                      "its law on a general batch is evaluated by Monte Carlo")
            cov = None
            known = reuse.units[l].root if reuse is not None and l == exact_below else None
            b, inv, root = _mc_law(_centre(Q), l, mc_samples or mc_samples_for(T), seed, part, known)
            dphi = None
            if phi is not None:
                fb = phi(b)
                h = fb.T @ fb / b.shape[0]
                dphi = phi.derivative(b)
            if l == L:  # the output: exact by the radial integrals; the samples serve the lambda_max bound only
                unit = _Unit("output", None, b, inv, None, root, radial_integrals(_centre(Q), l))
            else:
                unit = _Unit("mc", None, b, inv, dphi, root)
        q.append(Q)
        law.append(cov)
        units.append(unit)
        if l < L:
            qhat.append(h)
    qhat.append(None)
    # backward kernels where they are T x T (no batch norm at this layer or above)
    qtilde: list = [None] * (L + 1)
    current = _ones(T, symbolic)
    for l in range(L, 0, -1):
        if units[l].kind != "hadamard":
            break
        if l < L:
            sw = sympy.nsimplify(net.sigma_w2[l]) if symbolic else float(net.sigma_w2[l])
            current = current * sw
        current = _apply(units[l], current)
        qtilde[l] = current
    # push every layer's qhat^{l-1} and 1 1^T up to the output
    weights: list = [None]
    biases: list = [None]
    opened: list = [None]  # the same before the output unit's map (its second moment needs them)
    for l in range(1, L + 1):
        pair, before = [], []
        for Y in (qhat[l - 1], _ones(T, symbolic)):
            if qtilde[l] is not None:  # no batch norm at l or above: the output unit's map is the identity
                pair.append(_hadamard(Y, qtilde[l]))
                before.append(pair[-1])
                continue
            for k in range(l, L + 1):
                if k > l:
                    sw = sympy.nsimplify(net.sigma_w2[k - 1]) if symbolic else float(net.sigma_w2[k - 1])
                    Y = Y * sw
                if k == L:
                    before.append(Y)
                Y = _apply(units[k], Y)
            pair.append(Y)
        weights.append(pair[0])
        biases.append(pair[1])
        opened.append(tuple(before))
    return Propagation(tuple(q), tuple(law), tuple(qhat), tuple(qtilde), tuple(weights), tuple(biases), tuple(units),
                       tuple(opened))


def has_monte_carlo(net: Network) -> bool:
    """True when a hidden layer of ``net`` has a full batch norm (its law on a general batch is evaluated by Monte
    Carlo; a full batch norm on the output is exact, :func:`radial_integrals`).

    Example:
        >>> net = Network(2, "relu", 2, 0)
        >>> has_monte_carlo(net.with_(norms=["batch:last"])), has_monte_carlo(net.with_(norms=["batch:1"]))
        (False, True)
    """
    return any(isinstance(n, BatchNorm) and not n.center_only and n.layer < net.depth for n in net.norms)


def has_full_batch_norm(net: Network) -> bool:
    """True when any layer of ``net`` has a full batch norm.

    Example:
        >>> has_full_batch_norm(Network(2, "relu", 2, 0, norms=["batch-center:last"]))
        False
    """
    return any(isinstance(n, BatchNorm) and not n.center_only for n in net.norms)


# -- public -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernels:
    """The T x T kernels of ``network`` on one batch (module docstring); indexed by layer l.

    Attributes:
        network: the network. samples: T. input_dim: d (None when a Gram was given). width: M or None.
        q: q^l, l = 1..L (index 0 is None): the pre-activation kernel (the NNGP kernel of layer l).
        law: the covariance of the normalised pre-activation phi sees (None where it is not Gaussian: full
            batch norm).
        qhat: qhat^l, l = 0..L-1 (qhat[0] the input Gram; index L is None).
        qtilde: qtilde^l, l = 1..L, the backward kernel per output (None where a batch norm at l or above
            couples the samples: then only the pushed-up contributions exist).
        weights, biases: per layer the pushed-up qhat^{l-1} and 1 1^T (H^l and O^l).
        ntk_param: the NTK in the NTK parameterization, sum_l sigma_w^2 H^l + sigma_b^2 O^l.
        ntk: the NTK in the standard parameterization at ``width`` (T times the expected dual Gram's
            per-output block): sum_l M_{l-1} H^l + O^l with M_0 = d; None without a width.
        standard_errors: for full batch norm, name -> T x T standard errors of the Monte Carlo ("q", "qhat",
            "ntk_param", "ntk" by layer where they apply); None when everything is exact.
        notes: what is exact and what is estimated.

    Example:
        >>> k = kernels(Network(2, "relu", 2, 0), np.eye(2) * np.sqrt(2))
        >>> np.round(k.ntk_param, 6).tolist()
        [[4.0, 0.63662], [0.63662, 4.0]]
    """

    network: Network
    samples: int
    input_dim: int | None
    width: int | None
    q: tuple = field(repr=False)
    law: tuple = field(repr=False)
    qhat: tuple = field(repr=False)
    qtilde: tuple = field(repr=False)
    weights: tuple = field(repr=False)
    biases: tuple = field(repr=False)
    ntk_param: Any = field(repr=False)
    ntk: Any = field(repr=False)
    standard_errors: dict | None = field(default=None, repr=False)
    notes: tuple = ()

    def standard_ntk(self, width: int, input_dim: int | None = None) -> Any:
        """sum_l M_{l-1} H^l + O^l: the NTK in the standard parameterization at width M (M_0 = d, or
        ``input_dim``, or alpha_0 M when a Gram was given).

        Example:
            >>> k = kernels(Network(1, "relu", 1, 0), gram=np.eye(2))
            >>> k.standard_ntk(10).tolist()
            [[11.0, 1.0], [1.0, 11.0]]
        """
        sizes = _sizes(self.network, width, input_dim if input_dim is not None else self.input_dim)
        return _combine(self.weights, self.biases, [sizes[l - 1] for l in range(1, self.network.depth + 1)],
                        [1] * self.network.depth)

    def table(self) -> str:
        def means(A):
            if A is None:
                return ("-", "-")
            if isinstance(A, sympy.MatrixBase):
                A = np.array(A.evalf(), dtype=float)
            T = A.shape[0]
            off = (A.sum() - np.trace(A)) / (T * (T - 1)) if T > 1 else None
            return fmt(float(np.trace(A)) / T), fmt(off)

        rows = [("l", "kernel", "mean diag", "mean offdiag")]
        L = self.network.depth
        for l in range(L + 1):
            for name in ("q", "qhat", "qtilde"):
                A = getattr(self, name)[l]
                if A is not None:
                    rows.append((str(l), name, *means(A)))
        rows.append(("", "ntk_param", *means(self.ntk_param)))
        if self.ntk is not None:
            rows.append(("", f"ntk (M={self.width})", *means(self.ntk)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"Kernels: {self.network.describe()}  T={self.samples}  d={fmt(self.input_dim)}"]
        lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _sizes(net: Network, width: Any, d: int | None) -> tuple:
    """(M_0, ..., M_{L-1}, C) with M_0 = d when inputs fixed it."""
    sizes = net.widths(width)
    return sizes if d is None else (int(d), *sizes[1:])


def _combine(weights: tuple, biases: tuple, a: list, c: list) -> Any:
    total = None
    for l in range(1, len(weights)):
        term = weights[l] * a[l - 1] + biases[l] * c[l - 1]
        total = term if total is None else total + term
    if isinstance(total, sympy.MatrixBase):
        return sympy.ImmutableMatrix(total)
    return total


def kernels(net: Network, inputs: Any = None, *, gram: Any = None, width: int | None = None,
            mc_samples: int | None = None, seed: int = MC_SEED) -> Kernels:
    """q^l = sigma_w^2 qhat^{l-1} + sigma_b^2, qhat^l = E[phi phi^T], qtilde^l and the NTK on a batch, T x T each.

    Exact for plain and layer-norm networks, centre-only batch norm (Gaussian laws, two-dimensional Gaussian
    integrals per pair) and a full batch norm on the output (radial integrals); a full batch norm in a hidden
    layer is evaluated by Monte Carlo with a fixed seed, with standard errors from ``MC_GROUPS`` disjoint
    groups of the samples (``standard_errors``).

    Args:
        net: the network (its ``input_q1``/``input_q2`` are not used: the batch replaces them).
        inputs: X, T x d (qhat^0 = X X^T / d; the first layer's fan-in is d).
        gram: instead of X, the T x T input Gram qhat^0 (numpy, or a sympy Matrix up to 4 x 4 for closed forms).
        width: M, for the NTK in the standard parameterization (``ntk``); M_0 = d with inputs, alpha_0 M with
            a Gram.
        mc_samples, seed: the Monte Carlo of full batch norm (default :func:`mc_samples_for` T; at least
            2 MC_GROUPS).

    Returns:
        :class:`Kernels`.

    Raises:
        InvalidArgument: bad X or Gram (non-finite, wrong shape, not PSD), T below what a batch norm needs,
            a full batch norm on T > MAX_MC_SAMPLES_T samples or on a symbolic Gram, a zero sample under
            layer norm, a unit with zero batch variance.

    Example:
        >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> k = kernels(Network(3, "relu", 2, 0.1), X)
        >>> k.qhat[0].tolist()[2]                      # X X^T / d
        [0.5, 0.5, 1.0]
        >>> round(float(k.q[1][2, 2]), 6)              # sigma_w^2 qhat^0 + sigma_b^2
        2.1
        >>> import sympy
        >>> a = sympy.Symbol("a", positive=True)
        >>> kernels(Network(2, "relu", 2, 0), gram=sympy.Matrix([[1, 0], [0, a]])).qhat[1].tolist()
        [[1, sqrt(a)/pi], [sqrt(a)/pi, a]]
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    K0, d = batch_gram(inputs, gram)
    T = K0.rows if isinstance(K0, sympy.MatrixBase) else K0.shape[0]
    if net.is_symbolic and not isinstance(K0, sympy.MatrixBase):
        raise InvalidArgument("net", net, "numeric parameters on a numeric batch",
                              "a network with symbols needs a sympy Gram (gram=sympy.Matrix(...), up to 4 x 4)")
    check_batch_size(net, T)
    if width is not None:
        width = check_int("width", width, minimum=1)
    mc_samples = mc_samples_for(T) if mc_samples is None else check_int("mc_samples", mc_samples,
                                                                         minimum=2 * MC_GROUPS)
    seed = check_int("seed", seed, minimum=0)
    p = propagate(net, K0, mc_samples=mc_samples, seed=seed)
    L = net.depth
    ntk_param = _combine(p.weights, p.biases, list(net.sigma_w2), list(net.sigma_b2)) if not isinstance(
        K0, sympy.MatrixBase) else _combine(p.weights, p.biases, [sympy.nsimplify(v) for v in net.sigma_w2],
                                            [sympy.nsimplify(v) for v in net.sigma_b2])
    ntk = None
    if width is not None:
        sizes = _sizes(net, width, d)
        ntk = _combine(p.weights, p.biases, [sizes[l - 1] for l in range(1, L + 1)], [1] * L)
    errors = None
    notes = ["plain and layer-norm layers and centre-only batch norm: exact Gaussian integrals per pair; a full "
             "batch norm on the output: exact radial integrals"]
    if has_monte_carlo(net):
        parts = [propagate(net, K0, mc_samples=mc_samples, seed=seed, part=(g, MC_GROUPS), reuse=p)
                 for g in range(MC_GROUPS)]

        def se(values):
            arr = np.asarray(values, dtype=float)
            return arr.std(axis=0, ddof=1) / np.sqrt(len(arr))

        errors = {"q": tuple(None if l == 0 else se([pp.q[l] for pp in parts]) for l in range(L + 1)),
                  "qhat": tuple(None if p.qhat[l] is None else se([pp.qhat[l] for pp in parts])
                                for l in range(L + 1)),
                  "ntk_param": se([_combine(pp.weights, pp.biases, list(net.sigma_w2), list(net.sigma_b2))
                                   for pp in parts])}
        if width is not None:
            sizes = _sizes(net, width, d)
            errors["ntk"] = se([_combine(pp.weights, pp.biases, [sizes[l - 1] for l in range(1, L + 1)], [1] * L)
                                for pp in parts])
        notes.append(f"full batch norm in a hidden layer: its T-dimensional law by Monte Carlo ({mc_samples} samples, "
                     f"seed {seed}); standard errors from {MC_GROUPS} disjoint groups in standard_errors")
    return Kernels(net, T, d, width, p.q, p.law, p.qhat, p.qtilde, p.weights, p.biases, ntk_param, ntk, errors,
                   tuple(notes))


def check_batch_size(net: Network, T: int) -> None:
    """T against what the network's batch norms need (centre-only T >= 2, full T >= 4, full on the output
    T >= 6) and the Monte Carlo's limit MAX_MC_SAMPLES_T.

    Example:
        >>> check_batch_size(Network(2, "relu", 2, 0, norms=["batch:last"]), 3)
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: samples=3 is not allowed: expected T >= 6 for this network...
    """
    need = 1
    for norm in net.norms:
        if isinstance(norm, BatchNorm):
            need = max(need, 2 if norm.center_only else (6 if norm.layer == net.depth else 4))
    if T < need:
        raise InvalidArgument("samples", T, f"T >= {need} for this network",
                              "centre-only batch norm needs T >= 2, full batch norm T >= 4 (T >= 6 on the output, "
                              "for a finite second moment of the inverse batch variance)")
    if has_full_batch_norm(net) and T > MAX_MC_SAMPLES_T:
        raise InvalidArgument("samples", T, f"T <= {MAX_MC_SAMPLES_T} with full batch norm",
                              "its law on a general batch is evaluated by Monte Carlo at O(N T^2) per layer")
