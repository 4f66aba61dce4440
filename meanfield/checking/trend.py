"""Generic statistics of a width trend: is an error a finite-width bias that vanishes, or an error?

Given relative errors r_j +- se_j at widths M_1 < ... < M_k (each a mean over n_j networks),
:func:`trend_test` tests

    H0:  r_j = bias(M_j) + noise_j,   noise_j ~ N(0, se_j^2),

with the bias of the form of a :class:`BiasModel` (terms b M^-g of either sign, and terms c M^-g
with c >= 0), by the weighted least-squares residual of the bias fit, referred to F with Johansen's
correction for the estimated variances (Welch's ANOVA and Welch's t-test are special cases).
Where no bias is admitted (:data:`NO_BIAS`: a prediction that includes its O(1/M) terms, wrong only
at O(1/M^2)), :func:`common_error_test` tests r_j = 0 at every width against a common error r_j = a
(:func:`error_test` picks the test a bias model calls for). :func:`minimum_detectable_error` is the
power side: the smallest constant relative error either test catches with a given probability at a
given level, from the run's standard errors and the test's design. :func:`holm` combines a family of
such tests at a family-wise false-alarm rate; :func:`holm_levels` gives the level each test was
held to. Nothing here knows about networks: :mod:`meanfield.checking.verification` applies it to
the FIM statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import optimize as _optimize
from scipy import special as _special
from scipy import stats as _stats

from ..errors import InvalidArgument, check_real

__all__ = ["BiasModel", "NO_BIAS", "TrendTest", "trend_test", "common_error_test", "error_test",
           "minimum_detectable_error", "holm", "holm_levels", "check_alpha"]


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

    @property
    def is_none(self) -> bool:
        """True when no bias is admitted at all (the prediction claims its O(1/M) terms)."""
        return not self.free and not self.nonnegative


#: No finite-width bias admitted: the prediction claims to be right up to O(1/M^2) at every width.
NO_BIAS = BiasModel((), ())


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


def common_error_test(widths: Sequence[int], errors: Sequence[float], ses: Sequence[float],
                      counts: Sequence[int]) -> TrendTest:
    """p-value of H0: r_j = N(0, se_j^2) at every width, by Welch's t of the common error a = sum c_j r_j, c_j ~ n_j M_j.

    The test for a prediction that claims its O(1/M) terms (bias model :data:`NO_BIAS`): under H0 each
    width's mean error is 0 up to O(1/M^2), below the noise at the widths sampled. The statistic is a
    weighted mean of the widths' errors, the test against a prediction off by a constant factor (an
    error of the leading order), the alternative a wrong prediction presents; a wrong 1/M coefficient
    (r_j = b/M_j, one sign at every width) is caught through the same mean.

    The weights are fixed by the design, c_j = n_j M_j / sum n_k M_k: the inverse variances the means
    have when the per-network spread falls like M^-1/2, as a mean over O(M) units does (then they are
    the optimal weights; where the spread does not shrink with M, e.g. the 1/sigma^2 factor of a full
    output batch norm, they keep 90% of the efficiency at M = 128, 256). Weights estimated from the same
    runs (1/se_j^2) would make the test anti-conservative: simulated at M = 128, 256, 16 networks each,
    spreads 10.6% and 7.1%, 40000 replicates, the Welch t of the 1/se_j^2-weighted mean rejected 1.5%
    at nominal 1% and 0.44% at 0.2%; with the fixed weights 0.97% and 0.20%, and more power. t =
    a / sqrt(V), V = sum c_j^2 se_j^2, is referred to Student's t with the Welch-Satterthwaite degrees
    of freedom nu = V^2 / sum (c_j^2 se_j^2)^2 / (n_j - 1) (one width: the t-test of r = 0 with n - 1
    degrees of freedom, as :func:`trend_test` does).

    It spends the evidence of every width on one degree of freedom instead of the k of a chi-square
    over the widths (k = 2: the noncentrality an 80%-power test at level 0.002 needs is 15.5 for one
    degree of freedom against 17.9 for two, in the normal limit), and avoids the extrapolation a in
    r = a + b/M that a free bias forces, whose variance is 9 times larger at M = 128, 256 with
    se ~ 1/sqrt(M) (4 se_2^2 + se_1^2 against 1 / (1/se_1^2 + 1/se_2^2)). Not caught: errors whose
    sign alternates between the widths and average out; the report shows every width's error.

    Returns:
        A :class:`TrendTest` with ``coefficients`` empty, ``extrapolated`` = a (the common error,
        which under the claim is also the M -> infinity error), ``extrapolated_se`` = sqrt(V), ``q`` =
        t^2, ``dof`` = 1, ``denominator_dof`` = nu.

    Example:
        >>> t = common_error_test([128, 256], [-0.07, -0.08], [0.026, 0.018], [16, 16])
        >>> round(t.extrapolated, 3), t.p_value < 0.002
        (-0.077, True)
        >>> common_error_test([128, 256], [0.01, -0.01], [0.026, 0.018], [16, 16]).p_value > 0.5
        True
    """
    r = np.asarray(errors, dtype=float)
    c, v, nu = _common_design(widths, ses, counts)
    a = float(np.sum(c * r))
    t = a / math.sqrt(v)
    p = 2.0 * float(_special.stdtr(nu, -abs(t)))
    return TrendTest((), a, math.sqrt(v), t * t, 1, nu, min(1.0, max(0.0, p)))


def _common_design(widths: Sequence[int], ses: Sequence[float], counts: Sequence[int]) -> tuple[np.ndarray, float, float]:
    """(weights c_j ~ n_j M_j summing to 1, variance V = sum c_j^2 se_j^2, Welch-Satterthwaite nu) of the common error."""
    n = np.asarray(counts, dtype=float)
    c = n * np.asarray(widths, dtype=float)
    c = c / float(np.sum(c))
    parts = c * c * np.asarray(ses, dtype=float) ** 2
    v = float(np.sum(parts))
    return c, v, float(v * v / np.sum(parts * parts / np.maximum(n - 1, 1)))


def error_test(widths: Sequence[int], errors: Sequence[float], ses: Sequence[float], counts: Sequence[int],
               model: BiasModel | float = 1.0) -> TrendTest:
    """The test a bias model calls for: :func:`common_error_test` for :data:`NO_BIAS`, else :func:`trend_test`.

    Example:
        >>> error_test([64, 256], [0.04, 0.03], [0.01, 0.005], [20, 20], NO_BIAS).p_value < 1e-4
        True
    """
    if isinstance(model, BiasModel) and model.is_none:
        return common_error_test(widths, errors, ses, counts)
    return trend_test(widths, errors, ses, counts, model)


def minimum_detectable_error(widths: Sequence[int], ses: Sequence[float], counts: Sequence[int],
                             model: BiasModel | float, level: float, power: float = 0.8) -> float | None:
    """Smallest constant relative error |a| (r_j = a at every width) that :func:`error_test` rejects with probability ``power`` at ``level``.

    The design of the test fixes its noncentrality per unit error: with w_j = 1/se_j^2,

    - :data:`NO_BIAS` (:func:`common_error_test`): t ~ noncentral t(nu, a / sqrt(V)), rejected when
      |t| > t_{1 - level/2}(nu);
    - a bias model with free terms X (columns M_j^-g; none at one width): the constant error survives
      the bias fit by lambda = a^2 (1' W 1 - 1' W X (X' W X)^-1 X' W 1) = a^2 / se(extrapolation)^2,
      and Q / c ~ noncentral F(r, nu, lambda) with Johansen's c and nu (:func:`trend_test`; for one
      free term and two widths this is Welch's t of the extrapolation, noncentral t exactly);
      rejected when the p-value of Q (including the chi-bar-square mixture of one nonnegative term)
      is <= level. With a nonnegative term the test is one-sided and this is the error in its
      direction (a prediction above the measurement).

    The standard errors are the run's (estimated) ones, taken as the truth of the power calculation.

    Args:
        widths: M_j.
        ses: the standard errors se_j of the relative errors (> 0).
        counts: networks behind each (>= 2).
        model: the bias model of the test.
        level: the level the test is held to (after a multiple-test correction: the one applied).
        power: the detection probability (0 < power < 1; default 0.8).

    Returns:
        The error |a| (a fraction: 0.05 is 5%), or None when no constant error is detectable (the bias
        terms absorb a constant).

    Example:
        >>> d = minimum_detectable_error([128, 256], [0.0264, 0.0177], [16, 16], NO_BIAS, 0.002)
        >>> 0.06 < d < 0.07                           # 4.3 standard errors of the common error
        True
        >>> minimum_detectable_error([128, 256], [0.0264, 0.0177], [16, 16], 1.0, 0.002) > 2.5 * d  # a free b/M
        True
    """
    level = check_alpha(level)
    power = check_real("power", power, minimum=0, strict_min=True, maximum=1, symbolic=False)
    if power >= 1:
        raise InvalidArgument("power", power, "a probability 0 < power < 1")
    if not isinstance(model, BiasModel):
        model = BiasModel((check_real("model", model, minimum=0, strict_min=True, symbolic=False),))
    M = np.asarray(widths, dtype=float)
    w = 1.0 / np.asarray(ses, dtype=float) ** 2
    n = np.asarray(counts, dtype=float)
    k = len(M)
    if model.is_none:
        _, v, nu = _common_design(widths, ses, counts)
        crit = float(_special.stdtrit(nu, 1 - level / 2))
        unit = 1.0 / math.sqrt(v)

        def detected(a: float) -> float:
            nc = a * unit
            upper = 1 - float(_special.nctdtr(nu, nc, crit))
            # the lower tail as the upper tail of -t; scipy's nctdtr is NaN far out in a tail, where the
            # lower tail is 0 to double precision
            lower = 1 - float(_special.nctdtr(nu, -nc, crit))
            return upper + (lower if math.isfinite(lower) else 0.0)
    else:
        free = model.free if k > 1 else ()
        if len(free) >= k:
            raise InvalidArgument("widths", tuple(widths), f"at least {len(free) + 1} widths for the bias model {model}")
        X = np.stack([M ** (-g) for g in free], axis=1) if free else np.zeros((k, 0))
        ones = np.ones(k)
        _, unit2, h = _wls(X, ones, w)  # the weighted residual of a constant error after the bias fit
        if unit2 <= 1e-12 * float(np.sum(w)):
            return None
        dof = k - len(free)
        A = max(float(np.sum((1 - h) ** 2 / np.maximum(n - 1, 1))), 1e-12)
        c = dof + 2 * A - 6 * A / (dof + 2)
        nu = dof * (dof + 2) / (3 * A)
        one_sided = len(model.nonnegative) == 1
        if one_sided and dof == 1:
            # the r - 1 = 0 law is a point mass at 0: p = sf_1(q) / 2, one-sided at `level`
            q_star = c * float(_special.fdtri(1, nu, 1 - 2 * level)) if level < 0.5 else 0.0
        elif one_sided:
            h_one = np.ones(k)  # the leverages of the free + nonnegative design, as trend_test takes them
            X1 = np.concatenate([X, np.stack([M ** (-model.nonnegative[0])], axis=1)], axis=1)
            _, _, h_one = _wls(X1, ones, w)

            def p_of(q: float) -> float:
                return 0.5 * _johansen_sf(q, h, n, dof) + 0.5 * _johansen_sf(q, h_one, n, dof - 1) - level

            hi = 1.0
            while p_of(hi) > 0:
                hi *= 2
            q_star = float(_optimize.brentq(p_of, 0.0, hi)) if p_of(0.0) > 0 else 0.0
        else:
            q_star = c * float(_special.fdtri(dof, nu, 1 - level))
        unit = math.sqrt(unit2)

        def detected(a: float) -> float:
            value = 1 - float(_special.ncfdtr(dof, nu, (a * unit) ** 2, q_star / c))
            return value if math.isfinite(value) else float(_stats.ncf.sf(q_star / c, dof, nu, (a * unit) ** 2))
    hi = 1.0 / unit
    while detected(hi) < power:
        hi *= 2
        if hi > 1e12:
            return None
    return float(_optimize.brentq(lambda a: detected(a) - power, 0.0, hi, xtol=1e-10 / unit))


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


def holm_levels(p_values: Sequence[float], alpha: float) -> list[float]:
    """The level Holm's procedure held each test to: alpha / (K - R_i), R_i the other tests rejected before it.

    A rejected test of rank j (by p-value) was compared with alpha / (K - j + 1); a test not rejected
    would have been rejected with a p-value below alpha / (K - R), R the number rejected (it would
    have been next in line). With every test passing this is alpha / K for all.

    Example:
        >>> holm_levels([0.001, 0.5, 0.3], 0.03)
        [0.01, 0.015, 0.015]
    """
    alpha = check_alpha(alpha)
    adjusted = holm(p_values)
    K = len(p_values)
    rejected = [a <= alpha for a in adjusted]
    levels = []
    for i, p in enumerate(p_values):
        before = sum(1 for j in range(K) if j != i and rejected[j] and (p_values[j], j) < (p, i))
        levels.append(alpha / (K - before))
    return levels


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
