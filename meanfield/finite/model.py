"""lambda_max = edge of R(g) = d_0 + sigma^2 g + n lam / (1 - T lam g) (+ outliers): finite-width RMT.

Leading-order mean field gives the *mean* of the dual Gram G = J J^T / T; at finite width M with a batch
of T samples its top eigenvalue is set by the *fluctuations* of G, which this module models with free
probability. The derivation (with the measurements behind each step) is in ``derivations/rmt.md``.

The model, per output k (index a = k T + t):

* Given the weights, the T inputs are iid, so the gradients g_k(x_t) are iid vectors and
  G_kk = [g_k(x_t) . g_k(x_s) / T] is a sample Gram matrix. Write g = mu + c (mu = E_x g). Then
  G_kk = |mu|^2 11^T / T  (the mean-field outlier O = gram_diag + (T - 1) gram_offdiag)
       + rank-2 terms (mu . c_t) (mean direction: a *spike* of the population, strength ell)
       + [c_t . c_s / T]  (a Wishart-type bulk of population covariance Cov_x(g) / T).
* The population spectrum of Cov_x(g) / T: a part that acts as the identity (the M^2-dimensional tensor part:
  d_0), a diagonal non-Gaussian part (per-sample norm fluctuations, asymptotically free from the rest:
  semicircle of variance sigma_D^2), and the O(M) modes of the *linear* part (M-dimensional fluctuations of
  the forward features and backward signals carried along the mean of the other factor). Where the network
  below the output is plain, the linear part's spectrum is derived per weight draw by the Gaussian-equivalent
  linearization of :mod:`meanfield.finite.population` and scaled to the four-point second moment of
  :mod:`meanfield.finite.fourpoint`; otherwise (layer norm below the output) it is a block of n modes with the
  Marchenko-Pastur(1) profile of mean lam fitted to measured second and third moments. With blocks
  (count n_j, size lam_j) the R-transform is

      R(g) = d_0 + sigma_D^2 g + sum_j n_j lam_j / (1 - T lam_j g),

  and by free additive convolution the bulk edge is z(g*) with z(g) = R(g) + 1/g, z'(g*) = 0 (smallest
  positive root), lowered by the Tracy-Widom mean E[TW_1] (z''(g*)/2)^(1/3) T^(-2/3) at finite T. A single
  flat block with d_0 = sigma_D = 0 gives the Marchenko-Pastur edge lam (sqrt(n) + sqrt(T))^2. A population
  spike ell gives an outlier at x = T ell + R(1/(T ell)) when 1 / (T ell) < g* (BBP), else nothing.
* Batch norm on the output: center-only is G = Pi G_plain Pi (the outlier is deleted; spike and bulk
  stay). With C outputs the law of the Gram is invariant under rotations of the output space, so the top
  is the supremum over combined outputs a . f of one block's top, above the largest of the C block tops
  by a measured coupling excess of order 1/sqrt(M). Full batch norm adds the per-output scale 1 / sigma_k^2,
  sigma_k^2 = v chi^2_{T-1} / T: the top times E[T / chi^2_{T-1}] / v, with the coupling measured on the
  network itself, or the exact maximum of the scaled blocks over outputs where that is larger (small T).
  For T <= 256 the block's top is the model drawn at that T (seeded Monte Carlo), not the edge asymptotics,
  with each sample's squared norm drawn at its derived variance.
* No normalization (or layer norm) on the output: the top eigenvalue is the largest of the C outliers
  plus the spike's second-order shift T ell: lambda_max = E lambda_max(O (I + E)) + T ell with E a
  symmetric C x C Gaussian matrix (diagonal variance c_self / M, off-diagonal c_cross / M), times a
  measured O(1/sqrt M) outlier excess (the C x C matrix is a W K W^T form, heavier-tailed than Gaussian).
* s = ||G||_F^2 / P: the mean-field value plus the entry variances: C (T Var G_tt + T (T - 1) Var G_ts
  + (C - 1) T^2 E G_cross^2) / P.

What is *derived* here and what is *measured*: the free-probability edge, BBP outlier, the C-outlier
maximum, the chi-square factor, and all mean entries (from :func:`meanfield.theory.fisher.predict`) are theory.
Wherever the network below the output is plain (no normalization, or batch norm on the output only), so are
the bulk's second moment, diagonal part and spike, the population profile, the entry variances that set s
(without normalization) and the outlier variances (:mod:`meanfield.finite.fourpoint`, :mod:`meanfield.finite.population`);
the O(1/M) correction of the bulk's second moment is measured. Still measured: the block-top spread and the
coupling between outputs, the outlier excess, the O(1/M) corrections of the mean entries, and with layer
norm below the output everything the four-point rules do not cover. Measured coefficients come from sampled
networks at two small reference widths (64 and 128; seeds from 1000, disjoint from the seeds used to test),
extrapolated as c(M) = c_inf + c_1 / M (:func:`measure_fluctuations`, cached per network). The prediction at
a cell never uses samples of that cell, but it is semi-empirical, and labelled so (``method``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..spec.network import BatchNorm, Network
from .fluctuations import MEAN_DRAWS, MEAN_SEED, Fluctuations, measure_fluctuations, plain_output_twin
from .freeprob import expected_max_scaled, expected_max_symmetric, free_edge, spike_outlier

__all__ = ["finite_width_stats", "POPULATION_WIDTH", "POPULATION_DRAWS", "POPULATION_SEED"]


def _span(seeds: tuple) -> str:
    """'1000-1023' for a run of consecutive seeds, else the list."""
    seeds = tuple(seeds)
    if len(seeds) > 2 and seeds == tuple(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _positive(x: float) -> float:
    return x if x > 0 else 0.0


def _coef(fl: Fluctuations, name: str, M: int, notes: list) -> float:
    """c(M), floored at 0 with a note (a variance extrapolated below zero is noise, not a prediction)."""
    return _positive_note(fl.at(name, M), name, M, notes)


def _positive_note(value: float, name: str, M: int, notes: list) -> float:
    if value < 0:
        notes.append(f"coefficient {name} extrapolates to {value:.3g} < 0 at M={M}: used 0")
        return 0.0
    return value


def _mp1_quantiles(q: np.ndarray) -> np.ndarray:
    """Quantiles of the Marchenko-Pastur law of ratio 1 (density sqrt(x (4 - x)) / (2 pi x) on [0, 4])."""
    # substitute x = 4 sin^2(theta): the density times dx is (4/pi) cos^2(theta) dtheta, whose integral is
    # the cdf (4/pi)(theta/2 + sin(2 theta)/4); invert it on a fine grid
    th = np.linspace(0.0, math.pi / 2, 200001)
    cdf = (4.0 / math.pi) * (th / 2 + np.sin(2 * th) / 4)
    return np.interp(q, cdf / cdf[-1], 4.0 * np.sin(th) ** 2)


@functools.lru_cache(maxsize=4)
def _mp1_atoms(count: int = 400) -> np.ndarray:
    """Equal-mass quantiles of the Marchenko-Pastur law of ratio 1, scaled to mean 1."""
    atoms = _mp1_quantiles((np.arange(count) + 0.5) / count)
    return atoms / atoms.mean()


def _tw_shift(identity: float, semicircle: float, blocks: tuple, T: float, g: float) -> float:
    """E[TW_1] (z''(g*)/2)^(1/3) T^(-2/3): mean finite-T shift of the largest eigenvalue below the edge."""
    zpp = 2.0 / g**3 + sum(2.0 * n * T * T * lam**3 / (1.0 - T * lam * g) ** 3 for n, lam in blocks)
    return -1.2065 * (zpp / 2.0) ** (1.0 / 3.0) * T ** (-2.0 / 3.0)


def _derived(net: Network, M: int, T: int) -> dict:
    """What :mod:`meanfield.finite.fourpoint` and :mod:`meanfield.finite.population` derive for this network at (M, T), by
    :class:`Fluctuations` name: the bulk (block2, semicircle), spike and population profile wherever the network
    without its output norm is plain (the centred Gram of a batch norm on the output is that network's), the
    outlier variances without any normalization."""
    from .fourpoint import bulk_fluctuations, outlier_fluctuations
    from .population import linear_population

    twin = plain_output_twin(net)
    out: dict = {}
    if not twin.norms:
        b = bulk_fluctuations(twin, M)
        out.update(block2=b.block2, spike=b.spike, semicircle=b.semicircle)
        reference = min(M, POPULATION_WIDTH)
        out["population"] = (linear_population(twin, reference, POPULATION_DRAWS, POPULATION_SEED), M / reference)
    if not net.norms and net.outputs > 1:
        o = outlier_fluctuations(net, M, T)
        out.update(outlier_self=o.outlier_self, outlier_cross=o.outlier_cross)
    return out


POPULATION_WIDTH = 128  # the population profile is drawn at min(M, 128); wider networks repeat each mode M / 128 times
POPULATION_DRAWS = 48
POPULATION_SEED = 3000


def _populations(fl: Fluctuations, M: int, T: int, d: float, p2: float, ell: float, derived: dict) -> tuple:
    """The population of the centred block's bulk per weight draw (Gram units): (identity d_0, blocks ((count, lam),
    ...) for the free-probability edge, columns (the variances of the columns of Y, for drawing the model)).

    Derived (plain network under the output norm): the linear part's spectrum of :mod:`meanfield.finite.population`,
    one population per draw, each scaled so that sum count lam^2 = p2 (the four-point value; the linearization
    sets the shape), d_0 = d - sum count lam - ell the tensor part. Otherwise the measured fallback: n modes
    with the Marchenko-Pastur(1) profile of mean lam, n and lam from p2 = 2 n lam^2 and p3 = 5 n lam^3.
    """
    if "population" in derived:
        pop, count = derived["population"]
        out = []
        copies = max(int(round(count)), 1)
        for e in pop.eigenvalues:
            lam = e * math.sqrt(p2 * T * T / (count * float(e @ e))) / T
            columns = tuple(np.repeat(lam * count / copies, copies).tolist())
            out.append((d - count * float(lam.sum()) - ell, tuple((count, float(x)) for x in lam), columns))
        return tuple(out)
    # the population's mode size lam = (2/5) p3 / p2 comes from the measured ratio block3 / block2 (measured
    # together, on the same draws): with a derived p2, the measured p3 alone would mix two estimates
    measured2 = fl.at("block2", M)
    p3 = p2 * fl.at("block3", M) / measured2 * d / M if measured2 > 0 else 0.0
    if not (p2 > 0 and p3 > 0):
        return ((d - ell, (), ()),)
    lam = p3 / p2 * 2.0 / 5.0
    n = p2 / (2.0 * lam * lam)
    atoms = _mp1_atoms()
    n_int = max(int(round(n)), 1)
    profile = _mp1_quantiles((np.arange(n_int) + 0.5) / n_int)
    columns = tuple((profile / profile.mean() * lam * n / n_int).tolist())
    return ((d - n * lam - ell, tuple((n / len(atoms), float(lam * a)) for a in atoms), columns),)


def _bulk(fl: Fluctuations, M: int, T: int, d: float, o: float, notes: list, derived: dict) -> dict:
    """Top of the centred bulk (+ spike) of one output block, in Gram units: the mean over the populations of
    :func:`_populations` of the top of the free-probability model (edge + Tracy-Widom, BBP outlier, or drawn at
    small T)."""
    def coefficient(name: str) -> float:
        if name not in derived:
            return _coef(fl, name, M, notes)
        # a derived semicircle below 0 means per-sample norms more concentrated than a Wishart's (bounded phi):
        # no free diagonal part to add
        return _positive_note(derived[name], f"{name} (derived)", M, notes)

    # derived: the first-order second moment times its measured O(1/M) correction (relu L = 3: about +8/M)
    block2 = derived["block2"] * (1.0 + fl.at("bulk_scale", M) / M) if "block2" in derived else fl.at("block2", M)
    p2 = block2 * d * d / M
    s2 = coefficient("semicircle") * d * d / M
    ell = coefficient("spike") * _positive(o) / M
    populations = _populations(fl, M, T, d, p2, ell, derived)
    edges, shifts, tops = [], [], []
    for d0, blocks, _ in populations:
        edge, g_star = free_edge(d0, s2, blocks, T)
        shift = _tw_shift(d0, s2, blocks, T, g_star) if math.isfinite(g_star) else 0.0
        edges.append(edge)
        shifts.append(shift)
        if T > _MC_MAX_T:
            # above the BBP threshold the spike's outlier has Gaussian O(1/sqrt T) fluctuations: no mean shift
            top = spike_outlier(d0, s2, blocks, T, ell)
            tops.append(top if top > edge else edge + shift)
    if T <= _MC_MAX_T:
        # a small batch is far from the edge asymptotics (the Tracy-Widom mean is a large-T law): the model drawn
        # at this T, with each sample's norm drawn at its own variance 2 p2 + sigma_D^2 (which can be below a
        # Wishart's 2 p2: tanh) rather than a free semicircular part (relu/tanh center-only, M = 64, T = 8:
        # +5.5%/+17% from edge + TW, +4.1%/+6.4% drawn with a Wigner part, +2.9%/+3.3% with the norms)
        semicircle = derived["semicircle"] if "semicircle" in derived else fl.at("semicircle", M)
        norms = _positive_note(2.0 * p2 + semicircle * d * d / M, "per-sample norm variance", M, notes)
        populations_drawn = tuple((d0, columns) for d0, _, columns in populations)
        expected, method = _model_top_drawn(populations_drawn, norms, ell, T), "drawn"
    else:
        expected, method = float(np.mean(tops)), "edge+TW/outlier"
    modes = [sum(n for n, _ in blocks) for _, blocks, _ in populations]
    return dict(edge=float(np.mean(edges)), top=expected, spike=T * ell, d=d, modes=float(np.mean(modes)),
                semicircle=s2, identity=float(np.mean([d0 for d0, _, _ in populations])),
                tw_shift=float(np.mean(shifts)), top_method=method, populations=len(populations))


_MC_MAX_T = 256


@functools.lru_cache(maxsize=1024)
def _model_top_drawn(populations: tuple, norm_variance: float, spike: float, T: int, seed: int = 0) -> float:
    """E lambda_max of the centred model Gram at finite T, by seeded Monte Carlo, cycling through its populations.

    Each sample is drawn as in the derivation: its gradient's linear part y_t (the population's modes: the
    columns of Y, Gaussian, with the population's column variances), the tensor part (d_0 on the diagonal, its
    overlaps negligible) and the spike (ell y y^T), then scaled by rho_t so that its squared norm has the model's
    mean and the variance ``norm_variance`` (a gamma law): B = diag(rho) (d_0 I + Y Y^T + ell y y^T) diag(rho),
    centred by Pi. The
    per-sample norm variance is the derived Var|g - mu|^2 / T^2 (it can be below a Gaussian sample's, e.g. for
    bounded phi). Draws: enough for a standard error of about 0.3% of the mean (at most 4000).
    """
    rng = np.random.default_rng(seed)
    shapes = [(d0, np.sqrt(np.asarray(columns if columns else (0.0,)))) for d0, columns in populations]
    centre = np.eye(T) - 1.0 / T
    tops: list = []
    draws = 100
    while True:
        for i in range(len(tops), len(tops) + draws):
            d0, scale = shapes[i % len(shapes)]
            Y = rng.standard_normal((T, scale.size)) * scale
            y = rng.standard_normal(T)
            inner = d0 * np.eye(T) + Y @ Y.T + spike * np.outer(y, y)
            mean = d0 + float(scale @ scale) + spike
            # squared norms are positive and right-skewed (a chi-square for Gaussian gradients): a gamma law of
            # this mean and variance
            target = rng.gamma(mean * mean / norm_variance, norm_variance / mean, T) if norm_variance > 0 else \
                np.full(T, mean)
            rho = np.sqrt(target / np.diag(inner))
            tops.append(np.linalg.eigvalsh(centre @ (inner * np.outer(rho, rho)) @ centre)[-1])
        mean_top = float(np.mean(tops))
        if len(tops) >= 4000 or np.std(tops) / math.sqrt(len(tops)) <= 0.003 * abs(mean_top):
            return mean_top
        draws = len(tops)  # double


def _between_ratios(fl: Fluctuations, name: str, M: int, T: int, notes: list | None = None,
                    beyond: bool = False) -> float:
    """c(M) of a coefficient measured at the smallest (``name``_small) and largest (``name``_large) reference
    T/M, interpolated linearly in log(T/M) and held constant outside (or, with ``beyond``, continued linearly
    above the largest ratio); floored at 0 with a note when ``notes`` is given (a variance)."""
    ratios = fl.reference[1]
    lo, hi = math.log(min(ratios)), math.log(max(ratios))
    x = max(math.log(T / M), lo) if beyond else min(max(math.log(T / M), lo), hi)
    w = 0.0 if hi == lo else (x - lo) / (hi - lo)
    small, large = (fl.at(f"{name}_{end}", M) if notes is None else _coef(fl, f"{name}_{end}", M, notes)
                    for end in ("small", "large"))
    return (1 - w) * small + w * large


def finite_width_stats(net: Network, width: int, samples: int, base: Any, *,
                       fluctuations: Fluctuations | None = None) -> dict:
    """lambda_max and s at finite width from the free-probability model of the Gram (module docstring).

    Args:
        net: the network (numeric).
        width: M.
        samples: T.
        base: the :class:`~meanfield.theory.fisher.FisherStats` of ``predict(net, width, samples)`` (finite-width
            means; its gram_diag, gram_offdiag, s and P are used).
        fluctuations: the coefficients to use (default :func:`measure_fluctuations` of ``net``).

    Returns:
        dict with keys ``lambda_max`` (the prediction of E lambda_max), ``s`` (E s), ``lambda_max_bulk``
        (top of the centred bulk incl. the spike), ``lambda_max_outlier`` (E of the largest C-outlier, None
        with batch norm on the output), ``edge`` (bulk edge without the spike), ``spike`` (T ell),
        ``fluctuations`` (the :class:`Fluctuations` used), ``method`` ("rmt-semi-empirical") and ``notes``.

    Example:
        >>> from meanfield.theory.fisher import predict
        >>> net = Network(2, "relu", 2, 0, norms=[BatchNorm("last", center_only=True)])
        >>> fl = measure_fluctuations(net, widths=(16, 32), seeds=(1000, 1001, 1002))
        >>> out = finite_width_stats(net, 32, 16, predict(net, 32, 16), fluctuations=fl)
        >>> out["lambda_max"] > float(predict(net, 32, 16).leading.lambda_max)
        True
    """
    from ..theory.fisher import predict

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters", "the RMT correction is numeric only")
    M = check_int("width", width, minimum=8)
    T = check_int("samples", samples, minimum=max(net.min_samples(), 4))
    C = net.outputs
    fl = measure_fluctuations(net) if fluctuations is None else fluctuations
    if not isinstance(fl, Fluctuations) or fl.network != net:
        raise InvalidArgument("fluctuations", fluctuations, "Fluctuations measured for this network")
    twin = plain_output_twin(net)
    tb = predict(twin, M, T)
    gd_p, go_p = float(tb.gram_diag), float(tb.gram_offdiag)
    gd_c, go_c = gd_p * (1.0 + fl.at("mean_diag", M) / M), go_p * (1.0 + fl.at("mean_offdiag", M) / M)
    d = gd_c - go_c
    O = gd_c + (T - 1) * go_c  # the mean outlier of each output (no output normalization)
    last = net.norm_at(net.depth)
    notes: list = []
    derived = _derived(net, M, T)
    bulk = _bulk(fl, M, T, d, go_p, notes, derived)
    named = f"derived (meanfield.finite.fourpoint, meanfield.finite.population): {', '.join(sorted(derived))}; "
    notes += [(named if derived else "")
              + "other fluctuation coefficients measured at reference widths "
             f"{fl.reference[0]} (seeds {_span(fl.reference[2])}) and extrapolated as c_inf + c_1/M; mean-entry "
             f"corrections from {MEAN_DRAWS} draws per width (seeds from {MEAN_SEED}), 0 where unresolved"]
    outlier = None
    if isinstance(last, BatchNorm):
        # per-output spread of the block top (O(1/sqrt M))
        spread2 = _between_ratios(fl, "top_spread", M, T, notes) / M
        v = 1.0
        if not last.center_only:
            from ..theory.recursions import order_parameters

            if T <= 5:
                raise InvalidArgument("samples", T, "T > 5 with full batch norm on the output",
                                      "the chi-square moments of the scale diverge")
            op = order_parameters(net, T)
            v = float(op.layers[net.depth].q1 - op.layers[net.depth].q2)
        # several outputs: the top is a supremum over the output sphere (see Fluctuations), measured as the
        # coupling excess sqrt(M) (E top / E top_k - 1). Center-only, it falls with T/M (relu C = 3: 2.0 at
        # T/M = 1/4, 1.5 at 2): as T/M grows the block tops approach the tops of the outputs' populations, which
        # are nearly orthogonal in weight space, and the supremum over the sphere approaches the largest block
        # (the floor below). So it is continued in log(T/M) beyond the reference ratios (chosen after the grid:
        # held constant, the T/M = 8-32 cells with C > 1 were +5.6..+8.9% high, continued -2.8..+3.7%). With full
        # batch norm the coupling also carries the selection of outputs by their scales and is held.
        coupling = _between_ratios(fl, "coupling", M, T, beyond=last.center_only) / math.sqrt(M)
        coupled = bulk["top"] * (1.0 + coupling)
        if last.center_only:
            lam = max(coupled, bulk["top"] * expected_max_scaled(C, math.sqrt(spread2)))
        else:
            # full batch norm: a block's mean top is the centred one times E[T / chi^2_{T-1}] = T / (T - 3), over
            # v; the coupling excess, measured on the network itself, carries the selection of outputs by
            # their scales as well as the output-space coupling
            # (at small T the maximum of the heavy-tailed T / chi^2_k over outputs, exact here, can be larger)
            lam = max(coupled * T / (T - 3), bulk["top"] * expected_max_scaled(C, math.sqrt(spread2), T)) / v
    else:
        a, b = (_positive_note(derived[name] if name in derived else fl.at(name, M) + fl.at(name + "_T", M) / T,
                               name, M, notes) / M for name in ("outlier_self", "outlier_cross"))
        excess = _between_ratios(fl, "outlier_excess", M, T) / math.sqrt(M)
        outlier = (O * (1.0 + expected_max_symmetric(C, a, b)) + bulk["spike"]) * (1.0 + excess)
        lam = max(outlier, bulk["edge"])
    # s = (C/P) [T E G_tt^2 + T(T-1) E G_ts^2 + (C-1) T^2 E G_cross^2]: means (corrected) squared + variances
    P = float(base.P)
    d_mf = gd_p - go_p
    if isinstance(last, BatchNorm):
        gd_c, go_c = d * (T - 1) / T, -d / T  # the centred twin's mean entries
    if not net.norms:
        # derived, not measured: the four-point recursions of meanfield.finite.fourpoint (plain networks); they give
        # the variance over weights and inputs, as E ||G||_F^2 needs
        from .fourpoint import cross_output_variance, same_output_variance

        same = same_output_variance(net, M, T)
        vd, vo = same.diag / T**2, same.offdiag / T**2
        vx = cross_output_variance(net, M, T).mean_square if C > 1 else 0.0
        notes.append("entry variances for s derived (meanfield.finite.fourpoint)")
    else:
        vd = _coef(fl, "var_diag", M, notes) * gd_c**2 / M
        vo = _coef(fl, "var_off", M, notes) * gd_c**2 / M
        vx = _coef(fl, "var_cross", M, notes) * gd_c**2 / M
    if isinstance(last, BatchNorm) and not last.center_only:  # v: the output variance from the lambda_max part
        excess = C * (T * vd + T * (T - 1) * vo + (C - 1) * T * T * vx) / P
        # mean part: the finite-width mean-field value (chi-square and projector moments) rescaled by (d/d_mf)^2;
        # variances: times E[sigma_k^-4] = T^2 / ((T-3)(T-5) v^2)
        s = float(base.s) * (d / d_mf) ** 2 + excess * T * T / ((T - 3) * (T - 5) * v * v)
    else:
        s = C * (T * (gd_c**2 + vd) + T * (T - 1) * (go_c**2 + vo) + (C - 1) * T * T * vx) / P
    return dict(lambda_max=float(lam), s=s, lambda_max_bulk=float(bulk["top"]), lambda_max_outlier=outlier,
                edge=float(bulk["edge"]), spike=float(bulk["spike"]), fluctuations=fl,
                method="rmt-semi-empirical", notes=tuple(notes))
