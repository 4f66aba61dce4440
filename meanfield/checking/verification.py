"""Prediction versus sampled networks: a statistical test that a formula holds as the width grows.

``verify(net, widths, samples=T, seeds=N)`` samples N networks (and input batches) at each width M,
reads m, s, lambda_max and the kappa's from each exact dual Gram, and compares the means with a
prediction: by default :func:`meanfield.predict`, or a user's conjecture.

The test (per statistic X, over the widths M_1 < ... < M_k)
-----------------------------------------------------------
The relative error at width M_j is r_j = (mean_j - pred_j) / |pred_j| with standard error
se_j = sem_j / |pred_j| (sem over the N seeds). Even a correct finite-width
prediction leaves a bias that vanishes as a power of the width. So the null hypothesis is

    H0:  r_j = bias_X(M_j) + noise_j,   noise_j ~ N(0, se_j^2),

"the error is a finite-width correction of the expected form, and tends to 0", with
(:func:`default_bias`)

- m, kappa_1, kappa_2:  bias = b / M, b of either sign (exact P and bias terms leave O(1/M));
- s:                    bias = b / M (the O(T/M) excess of entry-wise Gram fluctuations);
- lambda_max:           bias = b / M + c / sqrt(M) with c >= 0: near-degenerate top eigenvalues
  (the C outliers; the top of the bulk when kappa_2 is near 0) split by O(sqrt(M)) around an O(M)
  value, which can only raise the maximum (lambda_max is convex: E lambda_max(G) >= lambda_max(E G)).

Claims. A prediction that includes a statistic's O(1/M) term (``predict(..., finite_width="1/M")``
declares which in ``FisherStats.includes_1_over_M``; a user's dict in the key ``"includes_1_over_M"``;
or ``verify(..., claims=...)``) is wrong only at O(1/M^2) there, below the noise at the widths sampled:
that statistic admits no bias (``H0: r_j = noise_j`` at every width) and is tested by the Welch t of
the common error a = sum w_j r_j / sum w_j, w_j = 1/se_j^2 (:func:`common_error_test`). That is the
likelihood-ratio test against a prediction off by a constant factor, and it catches a wrong 1/M
coefficient (one sign at every width) too; a chi-square over the widths would spread the same evidence
over k degrees of freedom, and the free b/M bias costs the most: the extrapolation in r = a + b/M has,
at M = 128, 256 with se_j ~ 1/sqrt(M_j), 9 times the variance of the common error (a 3 times
larger detectable error). The statistics the prediction does not claim keep the free bias below, the
O(1/M) term it declares missing.

Power. For every tested value the report gives the minimum detectable error: the smallest constant
relative error (r_j = a at every width) the run catches with probability 0.8 at the level Holm held
that statistic to (alpha / K when everything passes), from the run's standard errors and the test's
noncentrality (:func:`meanfield.checking.trend.minimum_detectable_error`). It says what a pass is
worth: a pass with a 20% detectable error rules out little. For statistics that are one test it is
the error they share (a wrong Gram diagonal moves m and kappa_1 together); an error in one of them
alone is tested in a family one larger, at a slightly lower level (relu L = 3, C = 2, centre-only
output norm, T = 16, 16 networks at M = 128, 256: 0.0025 instead of 0.0033, 6.2% instead of 6.0%).

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

Control variates. By default (``control_variates=True``) each width's mean is the regression-adjusted
one (:mod:`meanfield.checking.controls`): every sampled network carries quantities of known mean 0
(``SampledSpectrum.controls``: the realized squared norms of its weights seen through the layer below,
of its hidden activations and of its inputs, each over its exact conditional expectation, minus 1;
:func:`meanfield.sampled.sampling.controls`), and the part of a statistic's noise they explain is removed,
with one coefficient per control pooled over the widths and the coefficients' error counted in the
standard errors and degrees of freedom. The expectation is unchanged; the noise drops: relu L = 3,
C = 2, centre-only output norm, T = 16, 16 networks at M = 128, 256 (the setting above), 4 controls
remove about 85% of the variance of m and the kappa's (83% of s's, 50% of lambda_max's), and the
minimum detectable error of the claimed group falls from 6.0% to 2.5% (benchmarks/verify_power.py).
``control_variates=False`` tests the plain means.

The family of statistics is tested at family-wise false-alarm rate ``alpha`` (default 1%) with
Holm's step-down correction, valid under any dependence between the statistics: a correct
prediction fails with probability <= alpha (up to the normal and F approximations). Statistics that
are one test count once: m = C T gd / P and kappa_1 = T gd / (alpha M) of one network are the same
number up to a constant, so with predictions in the same ratio their relative errors coincide network
by network (kappa_2 = -kappa_1 / (T - 1) too under a centre-only output norm); the report detects
equal per-network errors and gives Holm one test for them (exact: one event, not several). A
prediction wrong in one of them alone breaks the equality and adds a test to the family.

Where the prediction only bounds a statistic (``FisherStats.lambda_max_kind == "bound"``: lambda_max
with batch norm on the output, whose leading-order value is off by 30-160% at practical widths),
the report tests the bound (one-sided t-tests at every width, Bonferroni over widths) and says so.

The pieces: the generic statistics (:func:`trend_test`, :func:`holm`) are in
:mod:`meanfield.checking.trend`; what is compared and the bias allowed (:data:`STATISTICS`,
:func:`default_bias`, reading a prediction) in :mod:`meanfield.checking.predictions`; the report and
its assembly from the sampled values in :mod:`meanfield.checking.report`. This module samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..sampled.sampling import sample_many
from ..spec.inputs import check_inputs
from ..spec.network import Network
from ..theory.fisher import predict
from .predictions import (CLAIM_KEY, STATISTICS, bias_models, check_claims, declared_claims, default_bias, from_fisher,
                          predictor)
from .report import DETECTION_POWER, SKEWNESS_WARNING, StatisticResult, VerificationReport, WidthRow, assemble
from .trend import NO_BIAS, BiasModel, check_alpha, common_error_test, holm, minimum_detectable_error, trend_test

# the statistics and the report are defined beside this module and importable from here too
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
    "SKEWNESS_WARNING",
    "NO_BIAS",
    "common_error_test",
    "minimum_detectable_error",
    "DETECTION_POWER",
]

DEFAULT_WIDTHS = (64, 256)
DEFAULT_SAMPLES = 16
DEFAULT_SEEDS = 24
DEFAULT_ALPHA = 0.01


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


def verify(net: Network, widths: Iterable[int] | None = None, samples: int | None = None,
           seeds: int | Iterable[int] = DEFAULT_SEEDS, prediction: Any = None, *, alpha: float = DEFAULT_ALPHA,
           bias: Mapping[str, BiasModel | float] | None = None, processes: int | None = None,
           progress: Any = None, inputs: Any = None, claims: Iterable[str] | None = None,
           control_variates: bool = True) -> VerificationReport:
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
        bias: override the finite-width bias allowed per statistic (a :class:`BiasModel`, a float
            g for one term b M^-g of either sign, or ``"none"``); default :func:`default_bias`, none for
            the claimed statistics.
        claims: the statistics whose O(1/M) term the prediction includes (names among
            :data:`STATISTICS`): each is tested at every width against the prediction at that width, with
            no bias (:func:`meanfield.checking.trend.common_error_test`); the others keep the b/M bias of
            :func:`default_bias` for the term the prediction leaves out. None (default) reads the
            prediction's own declaration: ``FisherStats.includes_1_over_M`` (so ``prediction="1/M"``
            tests what that prediction claims), or the key ``"includes_1_over_M"`` of a callable's dict;
            an empty set claims nothing (the free bias everywhere, as before claims existed).
        processes: worker processes for the sampling (see :func:`meanfield.sample_many`).
        progress: progress reporting, passed to :func:`meanfield.sample_many`.
        inputs: a real batch X of shape (T, d) (:mod:`meanfield.spec.inputs`): every sampled network sees
            this batch (``sample_many(..., inputs=X)``) and the default prediction is the theory of the
            same batch, ``predict(net, M, inputs=X)`` ('rmt' and '1/M' are refused before sampling); T is the
            batch's, and ``samples`` may be left out.
        control_variates: True (default) tests regression-adjusted means: every sampled network's
            control variates (``SampledSpectrum.controls``: realized weight and kernel norms over their
            exact conditional expectations, mean 0) explain part of its statistics' noise, which is
            removed (:mod:`meanfield.checking.controls`; the report notes the variance removed); False
            tests the plain means.

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
    batch = None
    if inputs is not None:
        batch = check_inputs(inputs, samples=samples)
        samples = check_int("samples", batch.shape[0], minimum=max(net.min_samples(), 2))
    asked = prediction
    if batch is not None and (prediction is None or isinstance(prediction, str)):
        prediction = _on_batch(net, batch, prediction)
    widths, samples, source, predicted_at = predictor(net, prediction, widths, samples)
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
    alpha = check_alpha(alpha)
    claims = check_claims(claims)
    if not isinstance(control_variates, (bool, np.bool_)):
        raise InvalidArgument("control_variates", control_variates, "True or False")
    bias_models(net, bias, widths, asked, claims)  # bad bias or widths: an error before sampling

    measured = {}
    predicted = {}
    controls = {} if control_variates else None
    for w in widths:
        run = [network_seed(s, w) for s in seeds]
        summary = sample_many(net, w, samples, run, inputs=batch, processes=processes, progress=progress)
        # statistics the sampler leaves out (the kappa's of a depth-1 network) are not compared
        measured[w] = {name: tuple(float(v) for v in summary.values[name]) for name in STATISTICS
                       if name in summary.values}
        predicted[w] = predicted_at(w, samples)
        if controls is not None:
            controls[w] = {k: tuple(float(x) for x in v) for k, v in summary.controls.items()}
    models = bias_models(net, bias, widths, asked, declared_claims(predicted) if claims is None else claims)
    return assemble(net, samples, widths, seeds, alpha, models, source, measured, predicted, (), controls=controls)


def _on_batch(net: Network, batch: np.ndarray, prediction: Any):
    """The theory of one batch as verify's callable: ``predict(net, M, inputs=X)`` read as numbers."""
    finite_width = prediction if isinstance(prediction, str) else "mean-field"
    if finite_width not in ("mean-field", "leading"):  # refused here, before any network is sampled
        raise InvalidArgument("prediction", prediction, "None, 'mean-field' or 'leading' with inputs=X",
                              "the finite-width models ('rmt', '1/M') are calibrated on isotropic inputs")

    def at(width: int, samples: int) -> dict[str, Any]:
        stats = predict(net, width, inputs=batch, finite_width=finite_width)
        out = {"m": stats.m, "s": stats.s, "gram_diag": stats.gram_diag, "gram_offdiag": stats.gram_offdiag}
        if getattr(stats, "lambda_max_kind", "prediction") == "bound":
            out["lambda_max_bounds"] = stats.lambda_max_bounds
        else:
            out["lambda_max"] = stats.lambda_max
        claimed = from_fisher(stats, width, samples, net).get(CLAIM_KEY)
        if claimed:  # what the finite-width form declares it includes (its O(1/M) terms)
            out[CLAIM_KEY] = claimed
        return out

    at.__qualname__ = f"meanfield.predict(inputs=X{'' if finite_width == 'mean-field' else ', ' + repr(finite_width)})"
    return at
