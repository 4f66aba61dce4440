"""Generic statistics of a width trend: is an error a finite-width bias that vanishes, or an error?

Given relative errors r_j +- se_j at widths M_1 < ... < M_k (each a mean over n_j networks),
:func:`trend_test` tests

    H0:  r_j = bias(M_j) + noise_j,   noise_j ~ N(0, se_j^2),

with the bias of the form of a :class:`BiasModel` (terms b M^-g of either sign, and terms c M^-g
with c >= 0), by the weighted least-squares residual of the bias fit, referred to F with Johansen's
correction for the estimated variances (Welch's ANOVA and Welch's t-test are special cases).
:func:`holm` combines a family of such tests at a family-wise false-alarm rate. Nothing here knows
about networks: :mod:`meanfield.checking.verification` applies it to the FIM statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import special as _special

from ..errors import InvalidArgument, check_real

__all__ = ["BiasModel", "TrendTest", "trend_test", "holm", "check_alpha"]


@dataclass(frozen=True)
class BiasModel:
    """Finite-width bias allowed under H0: r(M) = sum_i b_i M^(-free_i) + sum_j c_j M^(-nonnegative_j), c_j >= 0.

    ``free`` terms may have either sign (e.g. the O(1/M) corrections a finite-width prediction leaves);
    ``nonnegative`` terms may only make the measurement exceed the prediction (e.g. lambda_max, a
    convex function of the Gram: E lambda_max(G) >= lambda_max(E G), with near-degenerate top
    eigenvalues splitting by O(sqrt(M)), an excess O(M^(-1/2))).

    Example:
        >>> BiasModel(free=(1.0,), nonnegative=(0.5,))
        BiasModel(free=(1.0,), nonnegative=(0.5,))
    """

    free: tuple[float, ...] = (1.0,)
    nonnegative: tuple[float, ...] = ()

    def __post_init__(self):
        for name in ("free", "nonnegative"):
            values = getattr(self, name)
            if isinstance(values, (int, float)):
                values = (values,)
            try:
                values = tuple(check_real(name, g, minimum=0, strict_min=True, symbolic=False) for g in values)
            except TypeError:
                raise InvalidArgument(name, values, "a tuple of positive exponents") from None
            object.__setattr__(self, name, values)
        if set(self.free) & set(self.nonnegative):
            raise InvalidArgument("nonnegative", self.nonnegative, "exponents not also among the free ones")

    def __str__(self) -> str:
        terms = [f"M^-{g:.3g}" for g in self.free] + [f"(+)M^-{g:.3g}" for g in self.nonnegative]
        return " + ".join(terms) if terms else "0"


@dataclass(frozen=True)
class TrendTest:
    """Result of :func:`trend_test`: the bias fit under H0, its residual, and the extrapolated error."""

    coefficients: tuple[float, ...]   # the H0 fit: free terms, then the nonnegative ones
    extrapolated: float | None        # a in r = a + (free terms) (M -> infinity); r itself for one width
    extrapolated_se: float | None
    q: float                          # weighted residual sum of squares of the H0 fit
    dof: int                          # k minus the free terms (the test's numerator degrees of freedom)
    denominator_dof: float            # Welch/Johansen degrees of freedom of the estimated variances
    p_value: float


def _wls(X: np.ndarray, r: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Weighted least squares r ~ X b: (b, residual sum of squares, leverages); X has <= 3 columns."""
    if X.shape[1] == 0:
        return np.zeros(0), float(np.sum(w * r * r)), np.zeros(len(r))
    normal = X.T @ (w[:, None] * X)
    try:
        inverse = np.linalg.inv(normal)
    except np.linalg.LinAlgError:  # a column duplicating another (M^-g and M^-g' at one width)
        inverse = np.linalg.pinv(normal)
    b = inverse @ (X.T @ (w * r))
    resid = r - X @ b
    h = w * np.einsum("ij,jk,ik->i", X, inverse, X)
    return b, float(np.sum(w * resid * resid)), h


def _johansen_sf(q: float, h: np.ndarray, counts: np.ndarray, r: int) -> float:
    """P(Q > q) for a weighted residual Q with r degrees of freedom and estimated weights.

    Johansen's (1980) correction of the F reference (Welch's ANOVA and Welch's t-test are its
    special cases): Q / c ~ F(r, nu), A = sum_j (1 - h_j)^2 / (n_j - 1), c = r + 2A - 6A/(r + 2),
    nu = r(r + 2) / (3A); h_j the leverages of the H0 design.
    """
    if r <= 0:
        return 1.0 if q <= 1e-12 else 0.0
    A = float(np.sum((1 - h) ** 2 / np.maximum(counts - 1, 1)))
    A = max(A, 1e-12)
    c = r + 2 * A - 6 * A / (r + 2)
    return float(_special.fdtrc(r, r * (r + 2) / (3 * A), q / c))


def trend_test(widths: Sequence[int], errors: Sequence[float], ses: Sequence[float], counts: Sequence[int],
               model: BiasModel | float = 1.0) -> TrendTest:
    """p-value of H0: r_j = bias(M_j) + N(0, se_j^2), i.e. the relative error vanishes as M -> infinity.

    The bias has the form of ``model`` (a :class:`BiasModel`; a float g means one term b M^-g of
    either sign). Q = min over the bias coefficients (nonnegative ones >= 0) of
    sum_j (r_j - bias(M_j))^2 / se_j^2. Without nonnegative terms Q is, under H0, a chi-square with
    r = k - (free terms) degrees of freedom; with estimated se's it is referred to F with Johansen's
    correction (for one b/M term this is exactly Welch's heteroscedastic ANOVA on r_j M_j, and for
    k = 2 Welch's t-test of the extrapolated error a = 0 in r = a + b/M). One nonnegative term makes
    the least favourable null a 50:50 mixture of the r and r - 1 degree-of-freedom laws (the
    chi-bar-square of a one-sided constraint); more than one uses the r law (conservative).
    With a single width no term of either sign can be told from an error: free terms are dropped
    and the test is the t-test of r = 0 (one-sided if nonnegative terms remain).

    Args:
        widths: M_j, distinct.
        errors: relative errors r_j.
        ses: their standard errors (> 0).
        counts: seeds behind each r_j (>= 2).
        model: the bias allowed under H0.

    Returns:
        A :class:`TrendTest`.

    Raises:
        InvalidArgument: fewer widths than free bias terms + 1.

    Example:
        >>> t = trend_test([64, 256], [0.04, 0.01], [0.005, 0.005], [20, 20])
        >>> round(t.extrapolated, 4), t.p_value > 0.5      # an error shrinking like 1/M
        (0.0, True)
        >>> trend_test([64, 256], [0.05, 0.05], [0.005, 0.005], [20, 20]).p_value < 1e-4
        True
    """
    if not isinstance(model, BiasModel):
        model = BiasModel((check_real("model", model, minimum=0, strict_min=True, symbolic=False),))
    M = np.asarray(widths, dtype=float)
    r = np.asarray(errors, dtype=float)
    se = np.asarray(ses, dtype=float)
    n = np.asarray(counts, dtype=float)
    k = len(M)
    w = 1.0 / se**2
    free = model.free if k > 1 else ()
    if len(free) >= k:
        raise InvalidArgument("widths", tuple(widths), f"at least {len(free) + 1} widths for the bias model {model}")
    columns = lambda gammas: np.stack([M ** (-g) for g in gammas], axis=1) if gammas else np.zeros((k, 0))  # noqa: E731
    # the constrained fit: the optimum of min Q with c >= 0 is the unconstrained optimum over its
    # active set, so try every subset of nonnegative terms and keep the best feasible one
    best = None
    nonneg = model.nonnegative
    for size in range(len(nonneg) + 1):
        for subset in _subsets(nonneg, size):
            if len(free) + len(subset) > k:
                continue
            b, q, _ = _wls(columns(free + subset), r, w)
            if np.any(b[len(free):] < 0):
                continue
            if best is None or q < best[1] - 1e-12:
                coefficients = dict(zip(free + subset, b))
                best = (tuple(float(coefficients.get(g, 0.0)) for g in free + nonneg), q)
    coefficients, q = best
    q = max(q, 0.0)
    dof = k - len(free)
    _, _, h_free = _wls(columns(free), r, w)
    if len(nonneg) == 1:
        _, _, h_one = _wls(columns(free + nonneg), r, w) if len(free) + 1 <= k else (None, None, np.ones(k))
        p = 0.5 * _johansen_sf(q, h_free, n, dof) + 0.5 * _johansen_sf(q, h_one, n, dof - 1)
    else:
        p = _johansen_sf(q, h_free, n, dof)
    A = float(np.sum((1 - h_free) ** 2 / np.maximum(n - 1, 1)))
    den = dof * (dof + 2) / (3 * max(A, 1e-12))
    # the extrapolation a of r = a + (free terms), shown in the report
    extrapolated = extrapolated_se = None
    if len(free) + 1 <= k:
        X = np.concatenate([np.ones((k, 1)), columns(free)], axis=1)
        cov = np.linalg.inv(X.T @ (w[:, None] * X))
        extrapolated = float((cov @ (X.T @ (w * r)))[0])
        extrapolated_se = float(math.sqrt(cov[0, 0]))
    return TrendTest(coefficients, extrapolated, extrapolated_se, q, dof, den, min(1.0, max(0.0, p)))


def _subsets(items: tuple, size: int):
    return combinations(items, size)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: p_(i) -> max_{j <= i} min(1, (K - j) p_(j)).

    Rejecting where the adjusted p-value is <= alpha keeps the family-wise false-alarm rate <= alpha
    under any dependence between the tests.

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    K = len(p_values)
    order = sorted(range(K), key=lambda i: p_values[i])
    adjusted = [0.0] * K
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (K - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def check_alpha(alpha: Any) -> float:
    """A false-alarm rate 0 < alpha < 1 as a float, or InvalidArgument.

    Example:
        >>> check_alpha(0.01)
        0.01
    """
    alpha = check_real("alpha", alpha, minimum=0, strict_min=True, maximum=1, symbolic=False)
    if alpha >= 1:
        raise InvalidArgument("alpha", alpha, "a false-alarm rate 0 < alpha < 1")
    return alpha
