"""Prediction versus sampled networks: a statistical test that a formula holds as the width grows.

``verify(net, widths, samples=T, seeds=N)`` samples N networks (and input batches) at each width M,
reads m, s, lambda_max and the kappa's from each exact dual Gram, and compares the means with a
prediction: by default :func:`meanfield.predict`, or a user's conjecture.

The test (per statistic X, over the widths M_1 < ... < M_k)
-----------------------------------------------------------
The relative error at width M_j is r_j = (mean_j - pred_j) / |pred_j| with standard error
se_j = sem_j / |pred_j| (sem over the N seeds). THEORY.md section 5: even a correct finite-width
prediction leaves a bias that vanishes as a power of the width. So the null hypothesis is

    H0:  r_j = bias_X(M_j) + noise_j,   noise_j ~ N(0, se_j^2),

"the error is a finite-width correction of the expected form, and tends to 0", with
(:func:`default_bias`)

- m, kappa_1, kappa_2:  bias = b / M, b of either sign (exact P and bias terms leave O(1/M));
- s:                    bias = b / M (the O(T/M) excess of entry-wise Gram fluctuations);
- lambda_max:           bias = b / M + c / sqrt(M) with c >= 0: near-degenerate top eigenvalues
  (the C outliers; the top of the bulk when kappa_2 is near 0) split by O(sqrt(M)) around an O(M)
  value, which can only raise the maximum (lambda_max is convex: E lambda_max(G) >= lambda_max(E G)).

The weighted least-squares fit of the bias leaves the residual Q = sum_j (r_j - bias(M_j))^2 / se_j^2
(minimised with c >= 0), chi-square with k - 1 degrees of freedom under H0 for one free term. With
estimated se's it is referred to F with Johansen's correction: for the b/M model this is exactly
Welch's heteroscedastic ANOVA on r_j M_j, and for two widths Welch's t-test of the extrapolated
error a = 0 in r = a + b/M. The one-sided c >= 0 makes the null law a 50:50 chi-bar-square mixture
(see :func:`trend_test`); with two widths the lambda_max test is then one-sided: it catches a
prediction above the measurements, while a measurement above the prediction can always be a
splitting excess. A wrong prediction leaves an error a that does not shrink with M, and Q grows like
a^2 / se^2. The report also shows the extrapolated error a (M -> infinity) with its standard error,
from the fit r = a + b/M.

With a single width nothing separates a bias from an error: the test is then r = 0 (t-test; for
lambda_max one-sided) and the report says so.

The reference laws assume the per-width means are close to normal. Batch norm on the output makes
every Gram entry of output k carry the factor 1/sigma_k^2, sigma_k^2 ~ v chi^2_{T-1}/T, which does
not concentrate with M: per-network m and s are then right-skewed (s has infinite kurtosis for
T <= 17), and a t-test on 16 seeds rejects a correct prediction 2-7 times more often than nominal
(simulation in the project notes). The report warns when a statistic's per-width sample skewness
exceeds ``SKEWNESS_WARNING``; use more seeds and larger T there.

The family of statistics is tested at family-wise false-alarm rate ``alpha`` (default 1%) with
Holm's step-down correction, valid under any dependence between the statistics: a correct
prediction fails with probability <= alpha (up to the normal and F approximations).

Where the prediction only bounds a statistic (``FisherStats.lambda_max_kind == "bound"``: lambda_max
with batch norm on the output, whose leading-order value is off by 30-160% at practical widths),
the report tests the bound (one-sided t-tests at every width, Bonferroni over widths) and says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special as _special

from ..errors import InvalidArgument, check_int, check_real
from ..spec.network import BatchNorm, Network

__all__ = [
    "STATISTICS",
    "StatisticResult",
    "VerificationReport",
    "WidthRow",
    "BiasModel",
    "default_bias",
    "holm",
    "network_seed",
    "trend_test",
    "verify",
]

#: The statistics compared, in report order.
STATISTICS = ("m", "s", "lambda_max", "kappa1", "kappa2")
_PRETTY = {"m": "m", "s": "s", "lambda_max": "lambda_max", "kappa1": "kappa_1", "kappa2": "kappa_2"}
_LATEX = {"m": "m", "s": "s", "lambda_max": r"\lambda_{\max}", "kappa1": r"\kappa_1", "kappa2": r"\kappa_2"}
_PREDICTION_KEYS = (*STATISTICS, "lambda_max_bounds", "gram_diag", "gram_offdiag")

DEFAULT_WIDTHS = (64, 256)
DEFAULT_SAMPLES = 16
DEFAULT_SEEDS = 24
DEFAULT_ALPHA = 0.01
#: Per-width sample skewness above which the report warns that its p-values are optimistic. Means
#: of skewed values make the t-statistic skewed: for 1/chi^2_15 values (the output batch norm's
#: scale at T = 16) the t-test at nominal 1% rejects 2.8% of the time with 16 seeds (7% for their
#: squares), measured by simulation (see the project notes).
SKEWNESS_WARNING = 2.0


# -- the statistics ---------------------------------------------------------------------------------


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
        terms = [f"M^-{_g(g, 3)}" for g in self.free] + [f"(+)M^-{_g(g, 3)}" for g in self.nonnegative]
        return " + ".join(terms) if terms else "0"


def default_bias(net: Network) -> dict[str, BiasModel]:
    """The finite-width bias each statistic may carry under H0 (THEORY.md section 5).

    m, kappa_1, kappa_2: b/M (exact P and bias terms leave O(1/M)); s: b/M (the excess O(T/M) of
    entry-wise Gram fluctuations, and O(1/M) prediction terms); lambda_max: b/M of either sign plus
    c/sqrt(M) with c >= 0: the C outliers (or, when kappa_2 is near 0, the top of the bulk) split by
    O(sqrt(M)) around an O(M) value, which can only raise the maximum (lambda_max is convex).

    Example:
        >>> str(default_bias(Network(3, "relu", 2, 0, outputs=10))["lambda_max"])
        'M^-1 + (+)M^-0.5'
    """
    plain = BiasModel((1.0,))
    return {"m": plain, "s": plain, "lambda_max": BiasModel((1.0,), (0.5,)), "kappa1": plain, "kappa2": plain}


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
    from itertools import combinations

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


def network_seed(seed: int, width: int) -> int:
    """The sampler seed of verify's network number ``seed`` at width ``width``.

    Mixing the width into the seed keeps the networks at different widths independent (the same
    seed at two widths would otherwise draw overlapping input and weight streams); it is how a
    network in a report is re-sampled: ``sample(net, width, T, seed=network_seed(s, width))``.

    Example:
        >>> network_seed(0, 64) != network_seed(0, 256)
        True
    """
    return int(np.random.SeedSequence([int(seed), int(width)]).generate_state(1, dtype=np.uint32)[0])


# -- the report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WidthRow:
    """One statistic at one width: measured mean +- sem over the seeds against the prediction."""

    statistic: str
    width: int
    seeds: int
    mean: float
    sem: float
    prediction: float | None
    relative_error: float | None
    relative_sem: float | None
    bounds: tuple[float, float] | None = None
    p_value: float | None = None  # bound checks only: the one-sided p-value at this width

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("statistic", "width", "seeds", "mean", "sem", "prediction",
                                           "relative_error", "relative_sem", "p_value")}
        d["bounds"] = list(self.bounds) if self.bounds is not None else None
        return d


@dataclass(frozen=True)
class StatisticResult:
    """The verdict on one statistic over all widths.

    ``kind`` is ``"value"`` (a predicted value, tested with :func:`trend_test`), ``"bound"`` (the
    prediction only bounds it; the bound is tested) or ``"not predicted"`` (shown, not tested).
    ``adjusted_p`` is Holm-adjusted over the tested statistics; ``passed`` is
    ``adjusted_p > alpha`` (True for statistics not tested).
    """

    statistic: str
    kind: str
    rows: tuple[WidthRow, ...]
    bias: BiasModel | None
    extrapolated: float | None
    extrapolated_se: float | None
    p_value: float | None
    adjusted_p: float | None
    passed: bool
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.kind == "not predicted":
            return "not predicted"
        if self.kind == "bound":
            return "bound holds" if self.passed else "BOUND VIOLATED"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "kind": self.kind,
                "bias_model": str(self.bias) if self.bias is not None else None,
                "extrapolated_error": self.extrapolated, "extrapolated_se": self.extrapolated_se,
                "p_value": self.p_value, "adjusted_p": self.adjusted_p, "passed": self.passed,
                "verdict": self.verdict, "note": self.note, "rows": [r.to_dict() for r in self.rows]}


@dataclass(frozen=True)
class VerificationReport:
    """Prediction versus sampled networks, statistic by statistic and width by width.

    ``passed`` is True only when every tested statistic passes at family-wise false-alarm rate
    ``alpha``. Prints as an aligned table; renders in notebooks (HTML, LaTeX); exports with
    :meth:`to_dict` / :meth:`to_json`.
    """

    network: Network
    samples: int
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    alpha: float
    prediction: str
    results: tuple[StatisticResult, ...]
    notes: tuple[str, ...] = ()
    values: Mapping = field(default=None, repr=False, compare=False, hash=False)  # width -> stat -> per seed
    _by_name: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {r.statistic: r for r in self.results})

    @property
    def passed(self) -> bool:
        """True when every tested statistic passes (bounds hold, values agree)."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[str, ...]:
        """Names of the statistics that failed."""
        return tuple(r.statistic for r in self.results if not r.passed)

    @property
    def rows(self) -> tuple[WidthRow, ...]:
        """Every (statistic, width) row, in table order."""
        return tuple(row for r in self.results for row in r.rows)

    def __getitem__(self, statistic: str) -> StatisticResult:
        try:
            return self._by_name[statistic]
        except KeyError:
            raise InvalidArgument("statistic", statistic, "one of " + ", ".join(self._by_name)) from None

    def against(self, prediction: Any, *, alpha: float | None = None,
                bias: Mapping[str, BiasModel | float] | None = None) -> "VerificationReport":
        """The same sampled networks tested against another prediction (no new sampling).

        ``prediction`` is as in :func:`verify`; a FisherStats restricts the test to its width, which
        must be one of this report's. ``alpha`` defaults to this report's.

        Example:
            >>> import meanfield as mf
            >>> report = verify(mf.Network(2, "relu", 2, 0), widths=(16, 64), samples=4, seeds=6, processes=1)
            >>> report.against(lambda M, T: {"kappa1": 10.0}).passed
            False
        """
        widths, samples, source, predicted_at = _predictor(self.network, prediction, None, self.samples)
        if widths is None:
            widths = self.widths
        elif any(w not in self.widths for w in widths):
            raise InvalidArgument("prediction", source, f"a prediction at the report's widths {self.widths}")
        alpha = self.alpha if alpha is None else _check_alpha(alpha)
        models = _bias_models(self.network, bias, tuple(widths), prediction)
        predicted = {w: predicted_at(w, self.samples) for w in widths}
        return _assemble(self.network, self.samples, tuple(widths), self.seeds, alpha, models, source,
                         {w: self.values[w] for w in widths}, predicted, ())

    # -- export -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, verdict, and every statistic with its per-width rows."""
        return {
            "network": self.network.describe(),
            "samples": self.samples,
            "widths": list(self.widths),
            "seeds": list(self.seeds),
            "seed_rule": "network seed = meanfield.checking.verification.network_seed(seed, width)",
            "alpha": self.alpha,
            "test": "per statistic: relative error = finite-width bias (bias_model) + noise, F-test of "
                    "the fit's residual (Johansen/Welch); Holm over statistics",
            "prediction": self.prediction,
            "passed": self.passed,
            "failures": list(self.failures),
            "notes": list(self.notes),
            "statistics": [r.to_dict() for r in self.results],
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON (keyword arguments go to :func:`json.dumps`, default indent 2)."""
        kwargs.setdefault("indent", 2)
        return json.dumps(_jsonable(self.to_dict()), **kwargs)

    # -- display ------------------------------------------------------------------------------------
    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = ["statistic", "M", "N", "measured", "+-sem", "predicted", "rel.err", "+-se",
                "M->inf err", "p (Holm)", "verdict"]
        body = []
        for res in self.results:
            for i, row in enumerate(res.rows):
                first = i == 0
                if row.bounds is not None:
                    lo, hi = row.bounds
                    pred = f"[{_g(lo)}, {_g(hi)}]"
                else:
                    pred = _g(row.prediction) if row.prediction is not None else "-"
                body.append([
                    _PRETTY[res.statistic] if first else "", str(row.width), str(row.seeds), _g(row.mean),
                    _g(row.sem, 2), pred,
                    ("inside" if row.bounds is not None and row.relative_error == 0 else _pct(row.relative_error)),
                    _pct(row.relative_sem, signed=False),
                    (_pct(res.extrapolated) + " +- " + _pct(res.extrapolated_se, signed=False)
                     if first and res.extrapolated is not None else ""),
                    (f"{res.adjusted_p:.3g}" if first and res.adjusted_p is not None else ""),
                    res.verdict if first else "",
                ])
        return head, body

    def __str__(self) -> str:
        head, body = self._table()
        widths = [max(len(head[c]), *(len(r[c]) for r in body)) for c in range(len(head))]
        left = {0, 10}
        fmt = lambda cells: "  ".join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        verdict = "PASSED" if self.passed else "FAILED (" + ", ".join(_PRETTY[f] for f in self.failures) + ")"
        lines = [f"Verification: {verdict}",
                 f"  network     {self.network.describe()}",
                 f"  prediction  {self.prediction}",
                 f"  sampling    T={self.samples}, {len(self.seeds)} networks per width, widths "
                 f"{', '.join(map(str, self.widths))}",
                 f"  test        false-alarm rate {self.alpha:g} (Holm over {self._tested()} statistics); "
                 "H0: rel. error = finite-width bias + noise",
                 "", fmt(head), fmt(["-" * w for w in widths])]
        lines += [fmt(r) for r in body]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {_PRETTY[r.statistic]}: {r.note}" for r in self.results if r.note]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<VerificationReport {'passed' if self.passed else 'FAILED'}: {self.network.describe()}, "
                f"T={self.samples}, widths={self.widths}, {len(self.seeds)} seeds>")

    def _repr_html_(self) -> str:
        from html import escape

        head, body = self._table()
        colour = "green" if self.passed else "red"
        out = [f"<p><b style='color:{colour}'>{'PASSED' if self.passed else 'FAILED'}</b> "
               f"{escape(self.network.describe())}; T={self.samples}, {len(self.seeds)} networks per width; "
               f"false-alarm rate {self.alpha:g} (Holm); prediction: {escape(self.prediction)}</p>",
               "<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
        for row in body:
            out.append("<tr>" + "".join(f"<td style='text-align:{'left' if i in (0, 10) else 'right'}'>"
                                         f"{escape(c)}</td>" for i, c in enumerate(row)) + "</tr>")
        out.append("</tbody></table>")
        out += [f"<p>{escape(n)}</p>" for n in self.notes]
        out += [f"<p>{escape(_PRETTY[r.statistic])}: {escape(r.note)}</p>" for r in self.results if r.note]
        return "\n".join(out)

    def _repr_latex_(self) -> str:
        head, body = self._table()
        tex_head = ["", "M", "N", r"\text{measured}", r"\pm", r"\text{predicted}", r"\text{rel. err}", r"\pm",
                    r"M\to\infty", r"p_{\rm Holm}", r"\text{verdict}"]
        lines = []
        for res in self.results:
            for i, row in enumerate(body[:len(res.rows)]):
                cells = [(_LATEX[res.statistic] if i == 0 else "")] + [_tex(c) for c in row[1:]]
                lines.append(" & ".join(cells) + r" \\")
            body = body[len(res.rows):]
        status = r"\text{passed}" if self.passed else r"\text{FAILED}"
        return ("$$" + status + r"\quad T=" + str(self.samples) + r",\ N=" + str(len(self.seeds))
                + r",\ \alpha=" + f"{self.alpha:g}" + r"\\ \begin{array}{l" + "r" * 9 + "l}"
                + " & ".join(tex_head) + r" \\ \hline " + " ".join(lines) + r"\end{array}$$")

    def _tested(self) -> int:
        return sum(r.kind != "not predicted" for r in self.results)


def _g(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}%" if signed else f"{100 * value:.2f}%"


def _tex(cell: str) -> str:
    cell = cell.replace("%", r"\%").replace("+-", r"\pm")
    return cell if not any(c.isalpha() for c in cell.replace("e", "")) else r"\text{" + cell + "}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# -- predictions --------------------------------------------------------------------------------------


def _network_alpha(net: Network) -> float:
    a = [float(x) for x in net.alphas]
    return sum(a[l] * a[l - 1] for l in range(1, len(a)))


def _from_fisher(stats: Any, width: int, samples: int, net: Network) -> dict[str, Any]:
    """The compared statistics of a FisherStats: kappa's as T gram/(alpha M), like the sampler's."""
    out: dict[str, Any] = {"m": float(stats.m), "s": float(stats.s)}
    kind = getattr(stats, "lambda_max_kind", "prediction")
    if kind == "bound":
        lo, hi = stats.lambda_max_bounds
        out["lambda_max_bounds"] = (float(lo), float(hi))
    else:
        out["lambda_max"] = float(stats.lambda_max)
    if float(stats.alpha) > 0:  # a depth-1 network has no kappa's (alpha = 0)
        scale = samples / (float(stats.alpha) * width)
        out["kappa1"] = float(stats.gram_diag) * scale
        out["kappa2"] = float(stats.gram_offdiag) * scale
    return out


def _from_mapping(values: Mapping[str, Any], width: int, samples: int, net: Network, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _PREDICTION_KEYS:
            raise InvalidArgument(f"{source}[{key!r}]", value, "keys among " + ", ".join(_PREDICTION_KEYS))
        if key == "lambda_max_bounds":
            try:
                lo, hi = value
            except (TypeError, ValueError):
                raise InvalidArgument(f"{source}['lambda_max_bounds']", value, "a pair (lo, hi)") from None
            lo = -math.inf if lo is None else float(lo)
            hi = math.inf if hi is None else float(hi)
            if not lo <= hi:
                raise InvalidArgument(f"{source}['lambda_max_bounds']", value, "lo <= hi")
            out[key] = (lo, hi)
        else:
            out[key] = check_real(f"{source}[{key!r}]", value, symbolic=False)
    if _network_alpha(net) > 0:  # the kappa's of the gram entries (a depth-1 net has none)
        scale = samples / (_network_alpha(net) * width)
        if "kappa1" not in out and "gram_diag" in out:
            out["kappa1"] = out["gram_diag"] * scale
        if "kappa2" not in out and "gram_offdiag" in out:
            out["kappa2"] = out["gram_offdiag"] * scale
    out.pop("gram_diag", None)
    out.pop("gram_offdiag", None)
    if "lambda_max" in out and "lambda_max_bounds" in out:
        raise InvalidArgument(source, values, "either lambda_max or lambda_max_bounds, not both")
    return out


def _predictor(net: Network, prediction: Any, widths: Sequence[int] | None, samples: int | None):
    """(widths, samples, name, function width -> dict of predicted statistics)."""
    if prediction is None:

        def fn(width: int, T: int) -> dict[str, Any]:
            from ..theory.fisher import predict  # imported late: fisher imports the whole theory stack

            return _from_fisher(predict(net, width, T), width, T, net)

        return widths, samples, "meanfield.predict (finite width)", fn
    if isinstance(prediction, str) and prediction == "rmt":

        def fn(width: int, T: int) -> dict[str, Any]:
            from ..theory.fisher import predict

            return _from_fisher(predict(net, width, T, finite_width="rmt"), width, T, net)

        return widths, samples, "meanfield.predict(finite_width='rmt')", fn
    if callable(prediction):
        name = getattr(prediction, "__qualname__", None) or type(prediction).__name__

        def fn(width: int, T: int) -> dict[str, Any]:
            value = prediction(width, T)
            if hasattr(value, "gram_diag") and hasattr(value, "m"):
                return _from_fisher(value, width, T, net)
            if not isinstance(value, Mapping):
                raise InvalidArgument("prediction", prediction,
                                      "a callable (width, samples) -> FisherStats or dict of statistics",
                                      f"it returned {type(value).__name__}")
            return _from_mapping(value, width, T, net, "prediction(width, samples)")

        return widths, samples, f"callable {name}", fn
    if hasattr(prediction, "gram_diag") and hasattr(prediction, "width"):
        # a FisherStats is a prediction at one width and one T: verify there alone
        w, T = int(prediction.width), int(prediction.samples)
        if widths is not None and tuple(widths) != (w,):
            raise InvalidArgument("widths", widths, f"({w},): the width of the given FisherStats",
                                  "to test several widths pass a callable (width, samples) -> FisherStats")
        if samples is not None and samples != T:
            raise InvalidArgument("samples", samples, f"{T}, the samples of the given FisherStats")
        if getattr(prediction, "network", net) != net:
            raise InvalidArgument("prediction", "FisherStats of another network",
                                  "a FisherStats computed for this network")
        fixed = _from_fisher(prediction, w, T, net)
        return (w,), T, f"FisherStats at M={w}, T={T}", lambda width, T_: fixed
    raise InvalidArgument("prediction", prediction,
                          "None (meanfield.predict), 'rmt' (predict(..., finite_width='rmt')), a FisherStats, "
                          "or a callable (width, samples) -> dict")


# -- verify -------------------------------------------------------------------------------------------


def _check_alpha(alpha: Any) -> float:
    alpha = check_real("alpha", alpha, minimum=0, strict_min=True, maximum=1, symbolic=False)
    if alpha >= 1:
        raise InvalidArgument("alpha", alpha, "a false-alarm rate 0 < alpha < 1")
    return alpha


def _bias_models(net: Network, bias: Any, widths: tuple[int, ...], prediction: Any = None) -> dict[str, BiasModel]:
    models = default_bias(net)
    if isinstance(prediction, str) and prediction == "rmt":
        # the random-matrix prediction already contains the O(1/sqrt M) excess of the top eigenvalue: what
        # is left is an O(1/M) error of either sign, so lambda_max is tested two-sided
        models["lambda_max"] = BiasModel((1.0,))
    if bias is not None and not isinstance(bias, Mapping):
        raise InvalidArgument("bias", bias, "a dict statistic -> BiasModel (or exponent)")
    for key, value in (bias or {}).items():
        if key not in models:
            raise InvalidArgument("bias", dict(bias), "keys among " + ", ".join(STATISTICS))
        models[key] = value if isinstance(value, BiasModel) else BiasModel(
            (check_real(f"bias[{key!r}]", value, minimum=0, strict_min=True, symbolic=False),))
    free_terms = max(len(m.free) for m in models.values())
    if len(widths) != 1 and len(widths) <= free_terms:
        raise InvalidArgument("widths", widths, f"one width, or at least {free_terms + 1} for the bias model")
    return models


def verify(net: Network, widths: Iterable[int] | None = None, samples: int | None = None,
           seeds: int | Iterable[int] = DEFAULT_SEEDS, prediction: Any = None, *, alpha: float = DEFAULT_ALPHA,
           bias: Mapping[str, BiasModel | float] | None = None, processes: int | None = None,
           progress: Any = None) -> VerificationReport:
    """Test prediction = lim_{M->inf} E[sampled statistic] for m, s, lambda_max, kappa_1, kappa_2.

    At every width M the N networks ``sample(net, M, T, seed=network_seed(s, M))`` (s over
    ``seeds``) give means and standard errors; each statistic X is tested by :func:`trend_test`
    (H0: relative error = the finite-width bias of :func:`default_bias` + noise), and the
    statistics are combined with Holm's correction at family-wise false-alarm rate ``alpha``. The sampled kappa's are T gram_diag/(alpha M)
    and T gram_offdiag/(alpha M); the prediction's are the same transform of its gram_diag and
    gram_offdiag, so that like is compared with like. See the module docstring for the test.

    Args:
        net: the network.
        widths: base widths M (at least two for the extrapolation; default (64, 256)); every
            alpha_l M must be whole.
        samples: T, the batch size (default 16, at least ``net.min_samples()``).
        seeds: N, the networks per width (>= 2; seeds 0..N-1), or explicit seed numbers.
        prediction: None (:func:`meanfield.predict` at each width); ``"rmt"`` (``predict(net, M, T,
            finite_width="rmt")``, the random-matrix finite-width model, with lambda_max tested two-sided since
            that prediction includes the O(1/sqrt M) excess; one width is its natural test); a FisherStats (a prediction at
            one width and T: then verify runs at that width alone, and ``widths`` must be that width or
            None); or a callable ``(width, samples) -> FisherStats | dict`` (a user conjecture) whose
            dict keys are among m, s, lambda_max, kappa1, kappa2, gram_diag, gram_offdiag and
            lambda_max_bounds = (lo, hi). Statistics it does not give are shown, not tested.
        alpha: family-wise false-alarm rate (0 < alpha < 1; default 0.01).
        bias: override the finite-width bias allowed per statistic (a :class:`BiasModel`, or a float
            g for one term b M^-g of either sign); default :func:`default_bias`.
        processes: worker processes for the sampling (see :func:`meanfield.sample_many`).
        progress: progress reporting, passed to :func:`meanfield.sample_many`.

    Returns:
        A :class:`VerificationReport`; ``report.passed`` is the verdict.

    Raises:
        InvalidArgument: bad widths, samples, seeds, alpha, bias or prediction.

    Example:
        >>> import meanfield as mf
        >>> net = mf.Network(2, "relu", 2, 0.1)
        >>> report = verify(net, widths=(16, 64), samples=4, seeds=6, processes=1)
        >>> report.passed in (True, False), report.to_dict()["statistics"][0]["statistic"]
        (True, 'm')
        >>> print(report)  # doctest: +SKIP
        Verification: PASSED
          network     L=2 relu sigma_w2=2 sigma_b2=0.1 C=1 alphas=1 norms=none
          ...
        statistic    M  N  measured    +-sem  predicted  rel.err   +-se      M->inf err  p (Holm)  verdict
        ----------  --  -  --------  -------  ---------  -------  -----  --------------  --------  -------
        m           16  6   0.07436   0.0041    0.07512   -1.01%  5.46%  ...
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield.Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "a numeric network (substitute the symbols first)")
    if widths is not None:
        try:
            widths = tuple(widths)
        except TypeError:
            widths = (widths,)
        if not widths:
            raise InvalidArgument("widths", widths, "at least one width")
        widths = tuple(check_int("widths", w, minimum=2) for w in widths)
        if len(set(widths)) != len(widths):
            raise InvalidArgument("widths", widths, "distinct widths")
    if samples is not None:
        samples = check_int("samples", samples, minimum=max(net.min_samples(), 2))
    widths, samples, source, predicted_at = _predictor(net, prediction, widths, samples)
    widths = tuple(sorted(widths if widths is not None else DEFAULT_WIDTHS))
    samples = samples if samples is not None else max(DEFAULT_SAMPLES, net.min_samples())
    for w in widths:
        net.widths(w)  # raises InvalidArgument when alpha_l * w is not whole
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = tuple(range(check_int("seeds", seeds, minimum=2)))
    else:
        try:
            seeds = tuple(check_int("seeds", s, minimum=0) for s in seeds)
        except TypeError:
            raise InvalidArgument("seeds", seeds, "a number of networks >= 2 or a sequence of seeds") from None
        if len(seeds) < 2 or len(set(seeds)) != len(seeds):
            raise InvalidArgument("seeds", seeds, "at least two distinct seeds")
    alpha = _check_alpha(alpha)
    models = _bias_models(net, bias, widths, prediction)

    from ..sampled.sampling import sample_many

    measured = {}
    predicted = {}
    for w in widths:
        run = [network_seed(s, w) for s in seeds]
        summary = sample_many(net, w, samples, run, processes=processes, progress=progress)
        # statistics the sampler leaves out (the kappa's of a depth-1 network) are not compared
        measured[w] = {name: tuple(float(v) for v in summary.values[name]) for name in STATISTICS
                       if name in summary.values}
        predicted[w] = predicted_at(w, samples)
    return _assemble(net, samples, widths, seeds, alpha, models, source, measured, predicted, ())


def _assemble(net, samples, widths, seeds, alpha, models, source, measured, predicted, notes) -> VerificationReport:
    """Build the report from per-width sampled values and predictions (pure; used by tests too)."""
    partial = []  # (name, kind, rows, bias model, trend-or-None, raw p or None, note)
    output = net.norm_at(net.depth)
    if isinstance(output, BatchNorm) and not output.center_only:
        notes = (*notes, "batch norm on the output: each output's Gram block carries 1/sigma_k^2 ~ T/(v chi^2_{T-1}), "
                         "so per-network values are right-skewed and the p-values optimistic (most for depth 1 "
                         "and few outputs, where nothing else averages); use more seeds and larger T")
    if len(widths) == 1:
        notes = (*notes, "a single width: finite-width bias is not separated from error (t-test of r = 0)")
    for name in STATISTICS:
        if not all(name in measured[w] for w in widths):
            continue
        rows = []
        values = [np.asarray(measured[w][name], dtype=float) for w in widths]
        bad = [w for w, v in zip(widths, values) if not np.all(np.isfinite(v))]
        if bad:
            raise InvalidArgument("net", net.describe(), "a network whose sampled statistics are finite",
                                  f"{name} is not finite at width {bad[0]}")
        means = [float(np.mean(v)) for v in values]
        sems = [float(np.std(v, ddof=1) / math.sqrt(len(v))) for v in values]
        counts = [len(v) for v in values]
        skewed = [(w, g) for w, v in zip(widths, values) if abs(g := _skewness(v)) > SKEWNESS_WARNING]
        if skewed:
            notes = (*notes, f"{_PRETTY[name]}: per-network values are skewed (sample skewness "
                             + ", ".join(f"{g:+.1f} at M={w}" for w, g in skewed)
                             + "): the t approximation overstates significance; use more seeds (and T)")
        has_value = all(name in predicted[w] for w in widths)
        has_bound = name == "lambda_max" and all("lambda_max_bounds" in predicted[w] for w in widths)
        if has_value:
            preds = [float(predicted[w][name]) for w in widths]
            scales, note = _scales(name, preds, [predicted[w] for w in widths], means)
            errs = [(m - p) / s for m, p, s in zip(means, preds, scales)]
            ses = [max(e / s, 1e-15) for e, s in zip(sems, scales)]
            for w, m, e, p, r, q, n in zip(widths, means, sems, preds, errs, ses, counts):
                rows.append(WidthRow(name, w, n, m, e, p, r, q))
            trend = trend_test(widths, errs, ses, counts, models[name])
            partial.append((name, "value", rows, models[name], trend, trend.p_value, note))
        elif has_bound:
            ps = []
            for w, m, e, n in zip(widths, means, sems, counts):
                lo, hi = predicted[w]["lambda_max_bounds"]
                se = max(e, 1e-15 * abs(m))
                p_hi = float(_special.stdtr(n - 1, -(m - hi) / se)) if math.isfinite(hi) else 1.0
                p_lo = float(_special.stdtr(n - 1, (m - lo) / se)) if math.isfinite(lo) else 1.0
                p = min(p_hi, p_lo)
                ps.append(p)
                outside = (m - hi) / abs(hi) if m > hi else ((m - lo) / abs(lo) if m < lo and lo else 0.0)
                rows.append(WidthRow(name, w, n, m, e, None, outside, e / abs(m) if m else None, (lo, hi), p))
            raw = min(1.0, len(ps) * min(ps))
            partial.append((name, "bound", rows, None, None, raw,
                            "the theory only bounds lambda_max here: the bound is tested, not a value"))
        else:
            for w, m, e, n in zip(widths, means, sems, counts):
                rows.append(WidthRow(name, w, n, m, e, None, None, None))
            partial.append((name, "not predicted", rows, None, None, None, ""))
    tested = [i for i, part in enumerate(partial) if part[5] is not None]
    adjusted = dict(zip(tested, holm([partial[i][5] for i in tested])))
    results = []
    for i, (name, kind, rows, model, trend, raw, note) in enumerate(partial):
        adj = adjusted.get(i)
        results.append(StatisticResult(
            statistic=name, kind=kind, rows=tuple(rows), bias=model,
            extrapolated=trend.extrapolated if trend is not None and len(widths) > 1 else None,
            extrapolated_se=trend.extrapolated_se if trend is not None and len(widths) > 1 else None,
            p_value=raw, adjusted_p=adj, passed=adj is None or adj > alpha, note=note))
    return VerificationReport(network=net, samples=samples, widths=tuple(widths), seeds=tuple(seeds), alpha=alpha,
                              prediction=source, results=tuple(results), notes=tuple(notes),
                              values={w: {k: tuple(float(x) for x in v) for k, v in measured[w].items()}
                                      for w in widths})


def _skewness(v: np.ndarray) -> float:
    """Sample skewness g_1 = m_3 / m_2^(3/2) (0 for constant values)."""
    d = v - v.mean()
    m2 = float(np.mean(d * d))
    return float(np.mean(d**3) / m2**1.5) if m2 > 0 else 0.0


def _scales(name: str, preds: list[float], all_preds: list[dict], means: list[float]) -> tuple[list[float], str]:
    """Relative errors are relative to |prediction|; kappa_2 near 0 is measured in units of kappa_1."""
    scales = [abs(p) for p in preds]
    note = ""
    if name == "kappa2" and all("kappa1" in d for d in all_preds):
        floors = [1e-2 * abs(float(d["kappa1"])) for d in all_preds]
        if any(s < f for s, f in zip(scales, floors)):
            scales = [max(s, f) for s, f in zip(scales, floors)]
            note = "kappa_2 is near 0: its error is relative to max(|kappa_2|, kappa_1/100)"
    if any(s == 0 for s in scales):
        scales = [s if s > 0 else max(abs(m), 1e-300) for s, m in zip(scales, means)]
        note = "the prediction is 0 at some width: the error there is relative to the measured mean"
    return scales, note
