"""Control variates for verify: per-width means of a sampled statistic with the noise the controls explain removed.

Every sampled network carries controls c (:func:`meanfield.sampled.sampling.controls`): quantities of
the same network whose expectation is exactly 0 (realized weight and kernel norms divided by their
exact conditional expectation, minus 1). A statistic X that co-varies with them has the
regression-adjusted (control-variate) mean

    a_j = mean_i z_ji - beta . mean_i c_ji,      z_ji = X_ji / S_j,

at width M_j (S_j a fixed scale: the prediction's |X| at M_j), with one coefficient vector beta pooled over the widths (the relative fluctuations of X
and of the controls both scale like M^-1/2, so the coefficient of one on the other does not depend on
M to leading order) fitted by weighted least squares within widths (weights M_j: the inverse
variances a spread falling like M^-1/2 gives; fixed by the design, not estimated). E a_j = E z_j
whatever beta is when beta is fixed; fitted on the same networks it is the ordinary least-squares
intercept at c = 0, unbiased when X is linear in c plus noise independent of c. The scale must not
come from the same networks: S_j = |xbar_j| would correlate with the control means and bias a_j by
about -beta' Cov(cbar_j) beta (the explained variance over n_j), a tenth of a standard error at
16 networks and R^2 = 0.85. A common factor in the S_j changes nothing (beta absorbs it).

Its standard error counts the fitted coefficients: se_j^2 = s_j^2 / n_j + cbar_j' V_beta cbar_j with s_j^2
the residual variance at width j on n_j - 1 - p n_j / n degrees of freedom (the p coefficients are
spent over all n networks, each width its share) and V_beta the sandwich covariance of beta. The test
refers it to Student's t with n_j - 1 - p degrees of freedom at each width (effective counts n_j - p,
:func:`meanfield.checking.trend.common_error_test`): every width's mean carries the error of all p
shared coefficients. Charging each width only its share (n_j - p n_j / n) was anti-conservative:
relu L = 3, C = 2, centre-only output batch norm, T = 16, 16 networks at M = 128, 256, 4 controls, 6000
resamples of a pool of 6000 networks per width, the common-error test of m rejected the pool means
1.17% at level 1% and 0.42% at 0.33%; with n_j - p, 1.02% and 0.38% (binomial standard errors 0.13%
and 0.07%).

How many controls: at most (n - k) / ``DEGREES_PER_CONTROL`` for n networks over k widths (more
make the test anti-conservative: the coefficients' noise is only approximately accounted for), taken in the order of :func:`control_order` (the
factors the Gram diagonal is a product of, top layer first).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgument

__all__ = ["ControlAdjustment", "control_order", "adjust", "DEGREES_PER_CONTROL"]

#: One control coefficient per this many degrees of freedom of the networks (n minus the k widths).
#: Simulated on the scenario of :func:`control_order` (16 networks at M = 128, 256, resamples of a pool
#: of 6000 networks per width, degrees of freedom counted per width as n_j - p): with 5 controls (a
#: share 1/4) the common-error test of m rejected the pool means 0.57% at level 0.33% (3000 resamples,
#: width-share degrees of freedom); with 4 (1/7), 0.38% (6000 resamples), removing 85% of the variance.
DEGREES_PER_CONTROL = 7


@dataclass(frozen=True)
class ControlAdjustment:
    """Control-variate means of one statistic at each width (the widths in the order given).

    Attributes:
        means: a_j S_j, the adjusted mean in the statistic's units.
        sems: their standard errors (fitted coefficients included).
        counts: effective counts n_j - p (the degrees of freedom of the t reference plus one).
        values: per-network adjusted values X_ji - S_j beta . c_ji (mean: ``means``).
        names: the controls used; coefficients: beta (per relative unit of X).
        r2: the share of the within-width variance of X the controls removed (pooled, weighted).
    """

    means: tuple[float, ...]
    sems: tuple[float, ...]
    counts: tuple[float, ...]
    values: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    coefficients: tuple[float, ...]
    r2: float


def control_order(names: Sequence[str]) -> list[str]:
    """The controls verify uses, most informative first: backward[L..2] top first, post[L-1..1], input_norm.

    Measured on relu L = 3, C = 2, centre-only output batch norm, T = 16, M = 128 (600 networks): alone,
    backward[3] explains 50% of the variance of m, and with post[2], post[1], input_norm 86%; the
    other controls add 3% together. The order interleaves the top of each chain first.

    Example:
        >>> control_order(["weight[1]", "post[1]", "backward[2]", "backward[3]", "post[2]", "input_norm"])
        ['backward[3]', 'post[2]', 'post[1]', 'input_norm', 'backward[2]']
    """
    def layer(name: str) -> int:
        match = re.fullmatch(r"[a-z_]+\[(\d+)\]", name)
        return int(match.group(1)) if match else 0

    backward = sorted((n for n in names if n.startswith("backward[")), key=layer, reverse=True)
    post = sorted((n for n in names if n.startswith("post[")), key=layer, reverse=True)
    head = backward[:1] + post + (["input_norm"] if "input_norm" in names else [])
    return head + backward[1:]


def adjust(widths: Sequence[int], values: Sequence[Sequence[float]],
           controls: Sequence[Mapping[str, Sequence[float]]], names: Sequence[str] | None = None,
           scales: Sequence[float] | None = None) -> ControlAdjustment | None:
    """a_j = mean z_j - beta . mean c_j, beta pooled over widths by WLS (weights M_j): the control-variate means.

    Args:
        widths: M_j.
        values: per width, the per-network values X_ji.
        controls: per width, name -> per-network control values (known mean 0), aligned with ``values``.
        names: the controls to use, in order of preference (default :func:`control_order` of those every
            width has); at most (n - k) / ``DEGREES_PER_CONTROL`` are used.
        scales: S_j > 0, fixed before sampling (verify passes |prediction|); default the plain means
            |xbar_j| (then a_j carries the O(1/n) bias described in the module docstring).

    Returns:
        A :class:`ControlAdjustment`, or None when no control can be used (none given, too few
        networks, a width whose mean is 0, or controls that are constant or collinear).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> c = [rng.standard_normal(40) / 10 for _ in range(2)]
        >>> x = [1 + 0.8 * ci + rng.standard_normal(40) / 100 for ci in c]
        >>> adj = adjust([64, 256], x, [{"post[1]": ci} for ci in c])
        >>> round(adj.coefficients[0], 1), adj.r2 > 0.9, abs(adj.means[0] - 1) < 0.01
        (0.8, True, True)
    """
    k = len(widths)
    if len(values) != k or len(controls) != k:
        raise InvalidArgument("values", len(values), f"one sequence of values and one of controls per width ({k})")
    xs = [np.asarray(v, dtype=float) for v in values]
    counts = np.array([len(x) for x in xs], dtype=float)
    n = float(counts.sum())
    available = [c for c in controls[0] if all(c in ctrl for ctrl in controls)]
    chosen = control_order(available) if names is None else [c for c in names if c in available]
    p = min(len(chosen), int((n - k) // DEGREES_PER_CONTROL))
    scale = [abs(float(np.mean(x))) for x in xs] if scales is None else [float(v) for v in scales]
    if len(scale) != k or not all(math.isfinite(v) and v >= 0 for v in scale):
        raise InvalidArgument("scales", scales, f"{k} finite positive scales, one per width")
    if p < 1 or any(s == 0 for s in scale) or np.any(counts - 1 - p * counts / n <= 1):
        return None
    chosen = chosen[:p]
    cs = [np.stack([np.asarray(ctrl[c], dtype=float) for c in chosen], axis=1) for ctrl in controls]
    if any(c.shape != (len(x), p) for c, x in zip(cs, xs)):
        raise InvalidArgument("controls", [c.shape for c in cs], "per width, one value per network of each control")
    zs = [x / s for x, s in zip(xs, scale)]
    weights = np.asarray(widths, dtype=float) / float(np.max(widths))
    cc = [c - c.mean(axis=0) for c in cs]
    zc = [z - z.mean() for z in zs]
    gram = sum(w * c.T @ c for w, c in zip(weights, cc))
    if not np.all(np.isfinite(gram)) or np.linalg.cond(gram) > 1e10:
        return None
    inverse = np.linalg.inv(gram)
    beta = inverse @ sum(w * c.T @ z for w, c, z in zip(weights, cc, zc))
    resid = [z - c @ beta for z, c in zip(zc, cc)]
    dof = counts - 1 - p * counts / n
    s2 = np.array([float(r @ r) for r in resid]) / dof
    # the sandwich covariance of beta: each width's residual variance with its weight
    meat = sum(w * w * v * c.T @ c for w, v, c in zip(weights, s2, cc))
    v_beta = inverse @ meat @ inverse
    means, sems, adjusted = [], [], []
    for x, z, c, s, v, m in zip(xs, zs, cs, scale, s2, counts):
        cbar = c.mean(axis=0)
        a = float(z.mean() - cbar @ beta)
        var = v / m + float(cbar @ v_beta @ cbar)
        means.append(a * s)
        sems.append(math.sqrt(max(var, 0.0)) * s)
        adjusted.append(x - s * (c @ beta))
    total = sum(w * float(z @ z) for w, z in zip(weights, zc))
    explained = sum(w * float(r @ r) for w, r in zip(weights, resid))
    r2 = 1.0 - explained / total if total > 0 else 0.0
    return ControlAdjustment(tuple(means), tuple(sems), tuple(float(m - p) for m in counts), tuple(adjusted),
                             tuple(chosen), tuple(float(b) for b in beta), float(r2))
