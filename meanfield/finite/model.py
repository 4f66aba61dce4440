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
  spike ell gives an outlier at x = T ell + R(1/(T ell)) when 1 / (T ell) < g* (BBP), else nothing. Where the
  block top is this edge (not the small-T model), the centred block is taken with T - 1 samples, and the population's
  single top modes above the rest's threshold are spikes of the rest in the same way (Gaussian outliers;
  :func:`meanfield.finite.freeprob.isolated_top`).
* Batch norm on the output: center-only is G = Pi G_plain Pi (the outlier is deleted; spike and bulk
  stay). With C outputs the law of the Gram is invariant under rotations of the output space, so the top
  is the supremum over combined outputs a . f of one block's top, above the largest of the C block tops
  by a measured coupling excess of order 1/sqrt(M). Full batch norm adds the per-output scale 1 / sigma_k^2,
  sigma_k^2 = v chi^2_{T-1} / T: the top times E[T / chi^2_{T-1}] / v, with the coupling measured on the
  network itself, or the exact maximum of the scaled blocks over outputs where that is larger (small T).
  For T <= 128 the block's top is not the edge asymptotics: it is the edge with T - 1 samples plus the
  Tracy-Widom mean, corrected to second order for each sample's squared norm at its derived variance
  (:func:`meanfield.finite.blocktop.invariant_block_top`, no random state, the default); ``SMALL_T_TOP =
  "drawn"`` takes the model drawn at that T instead (a fixed-seed Monte Carlo, the cross-check).
* No normalization (or layer norm) on the output: the top eigenvalue is the largest of the C outliers
  coupled to the rest: derived, the top of [[lambda_O, |v|], [|v|, beta]] with lambda_O = E lambda_max(O) of the
  W K W^T form (:func:`_outlier_top`) and v = Q G u (:mod:`meanfield.finite.outlier_coupling`); measured
  model: E lambda_max(O (I + E)) + T ell (E a C x C Gaussian) times a measured O(1/sqrt M) outlier excess.
* s = ||G||_F^2 / P: the mean-field value plus the entry variances: C (T Var G_tt + T (T - 1) Var G_ts
  + (C - 1) T^2 E G_cross^2) / P.

What is *derived* and what is *measured*. By default (``coefficients="derived"``, ``predict(...,
finite_width="rmt")``) no network is sampled: the free-probability edge, BBP outlier, the chi-square factor and
the mean entries are theory (:func:`meanfield.theory.fisher.predict` with the O(1/M) corrections of
:mod:`meanfield.finite.corrections`); the bulk's second moment, diagonal part and spike, the outlier variances and
the entry variances that set s come from the four-point rules of :mod:`meanfield.finite.fourpoint`; the
population profile from the limiting law of :mod:`meanfield.finite.deterministic` (the linear part of
:mod:`meanfield.finite.population`, by a matrix Dyson equation); the coupling of several outputs from the
supremum over the output sphere of a Wishart form in the output weights (Hellmann-Feynman along the averaged block's
top eigenvector, :mod:`meanfield.finite.blockspread`; :func:`_combined_derived`); the C outliers' maximum from the Wishart-type form
of the outlier matrix (:func:`_outlier_top`). The Gaussian maxima are deterministic quadratures. Still
approximate (and named in the result's notes): the population profile is the limiting law's quantiles with a
Tracy-Widom top (its finite-width term only from the units' realized variances), the small-T block top's norm step is second order
(its first order exact, the second order's resolvent weight the effective one it fixes); no number depends on a seed
(the draws stay available: ``SMALL_T_TOP = "drawn"``, ``meanfield.finite.deterministic.POPULATION = "drawn"``);
tr Sigma^2 and the spike are exact at one hidden layer (:mod:`meanfield.finite.fourpoint_next`); deeper, the last two
layers' blocks carry their O(1/M) term (:mod:`meanfield.finite.fourpoint_deep`), at L = 3 the lower blocks too and
at L >= 4 layer L - 2's block (:mod:`meanfield.finite.fourpoint_lower`); the blocks below L - 2 and the centred norms'
variance stay at first order, and below a
layer norm the population profile's shape is that of :func:`plain_equivalent` (the bulk, spike, outlier variances,
mean entries and, without an output norm, the entry variances come from the layer norm's own four-point rules:
:func:`layer_norm_bulk_fluctuations`, :func:`layer_norm_outlier_fluctuations`,
:func:`meanfield.finite.layernorm.layer_norm_corrections`). ``coefficients="measured"``
(``finite_width="rmt-measured"``) keeps the earlier semi-empirical model: what the four-point rules do not cover
is measured on sampled networks at two small reference widths (64 and 128; seeds from 1000, disjoint from the
seeds used to test) and extrapolated as c(M) = c_inf + c_1 / M (:func:`measure_fluctuations`, cached per
network).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..spec.network import BatchNorm, Network
from . import blockshare, blockspread
from .blockcoupling import random_state_coupling
from .blocktop import invariant_block_top
from .fluctuations import MEAN_DRAWS, MEAN_SEED, Fluctuations, measure_fluctuations, plain_output_twin
from .freeprob import (edge_outlier_curvature, expected_max_scaled, expected_max_symmetric, expected_max_wishart,
                       isolated_top, TW_MEAN, TW_VARIANCE)
from .outlier_coupling import coupled_top, lower_share
from .outputbn_scale import normalized_block_extra
from .layernorm_fluctuations import layer_norm_bulk_fluctuations, layer_norm_outlier_fluctuations

__all__ = ["finite_width_stats", "finite_width_stats_measured", "plain_equivalent", "block_scale_variance",
           "layer_norm_outlier_fluctuations", "layer_norm_bulk_fluctuations", "COEFFICIENTS", "POPULATION_WIDTH",
           "POPULATION_DRAWS", "POPULATION_SEED", "SMALL_T_TOP", "SMALL_T_TOPS"]

COEFFICIENTS = ("derived", "measured")  # where the fluctuation coefficients come from (finite_width_stats)
# the block top at T <= 128: "deterministic" (meanfield.finite.blocktop.invariant_block_top: no random state, the
# default, so that no number of the model depends on a seed; 206 of 216 resolving grid cells within 5% against 208
# drawn, rmt.md section 6) or "drawn" (the model's fixed-seed Monte Carlo, the cross-check); read at each
# prediction (nothing to clear), e.g. benchmarks/rmt_grid.py --small-t-top drawn
SMALL_T_TOPS = ("drawn", "deterministic")
SMALL_T_TOP = "deterministic"


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


_TW_MEAN, _TW_VAR = TW_MEAN, TW_VARIANCE  # mean and variance of the Tracy-Widom law TW_1


@functools.lru_cache(maxsize=256)
def _derived(net: Network, M: int, T: int, approximate: bool = False) -> dict:
    """What :mod:`meanfield.finite.fourpoint` and :mod:`meanfield.finite.population` derive for this network at (M, T), by
    :class:`Fluctuations` name: the bulk (block2, semicircle), spike and population profile wherever the network
    without its output norm is plain (the centred Gram of a batch norm on the output is that network's), the
    outlier variances without any normalization. With ``approximate`` the same for a layer norm below the output,
    from :func:`plain_equivalent`."""
    from .fourpoint import outlier_fluctuations
    from .fourpoint_next import next_order_bulk
    from .population import linear_population

    twin = plain_output_twin(net)
    out: dict = {}
    if not twin.norms or approximate:
        plain = plain_equivalent(twin)
        b = None
        if twin.norms:  # layer norms below: their own four-point rules where derived, else the plain equivalent's
            try:
                b = layer_norm_bulk_fluctuations(twin, M)
            except InvalidArgument:
                pass
        # one hidden layer: exact at width M (the next order of tr Sigma^2, the spike and the norms included;
        # meanfield.finite.fourpoint_next); deeper: tr Sigma^2 and the spike with the top two layers' blocks at the
        # next order, at L = 3 the lower blocks too (at L >= 4 layer L - 2's), the rest (and the norms) at the first
        # (fourpoint_next.top_corrected_bulk)
        b = b or next_order_bulk(plain, M)
        out.update(block2=b.block2, spike=b.spike, semicircle=b.semicircle)
        reference = min(M, POPULATION_WIDTH)
        # the population is that of one output (and, for the covariance of two outputs' tops, of a second one):
        # shared by every network with the same hidden layers, whatever C
        paired = net.outputs > 1 and isinstance(net.norm_at(net.depth), BatchNorm)  # only the coupling needs two
        single = plain.with_(outputs=2 if paired else 1)
        # [population profile, edit by the deterministic-equivalent work] the limiting law of the linear part with its
        # Tracy-Widom top at this M (meanfield.finite.deterministic: no draws, count 1); the 24 pseudo-random draws at
        # min(M, 64) only with meanfield.finite.deterministic.POPULATION = "drawn" (clear _derived's cache after)
        from . import deterministic

        if deterministic.POPULATION == "drawn":
            out["population"] = (linear_population(single, reference, POPULATION_DRAWS, POPULATION_SEED),
                                 M / reference)
        else:
            out["population"] = (deterministic.deterministic_population(single, M), 1.0)
    if net.outputs > 1 and (not net.norms or (approximate and net.norm_at(net.depth) is None)):
        # layer norms below the output: their own four-point rules (the norm's Jacobian and influence functions),
        # not the plain equivalent's (tanh C = 10, M = 64, T = 16: M Var O_kk / O^2 = 0.37 against 0.25; measured
        # on sampled networks 0.40)
        o = None
        if net.norms:
            try:
                o = layer_norm_outlier_fluctuations(net, M, T)
            except InvalidArgument:  # a layer norm the four-point engine does not cover: the plain equivalent's
                pass
        o = o or outlier_fluctuations(plain_equivalent(net), M, T)
        out.update(outlier_self=o.outlier_self, outlier_cross=o.outlier_cross)
    return out


@functools.lru_cache(maxsize=256)
def _layer_norm_corrections(net: Network, M: int, T: int) -> Any:
    """:func:`meanfield.finite.layernorm.layer_norm_corrections` (Gram means with their O(1/M) shifts and entry
    variances behind hidden layer norms), or None where that is not derived."""
    from .layernorm import layer_norm_corrections

    try:
        return layer_norm_corrections(net, M, T)
    except InvalidArgument:
        return None


def plain_equivalent(net: Network) -> Network:
    """The network with each hidden layer norm replaced by its mean-field scale: sigma_w^2, sigma_b^2 / q_1 there.

    In mean field a layer norm divides the pre-activation by its realized root mean square, which concentrates at
    sqrt(q_1) (the law of the normalized pre-activation is Gaussian of variance 1 and correlation q_2 / q_1); the
    plain network with that layer's weight and bias variances divided by q_1 has the same forward kernels. The
    random-matrix model uses its *dimensionless* fluctuation coefficients (relative to its own means) for a network
    with layer norm below the output: an approximation that keeps the linear part's structure but not the layer
    norm's removal of the per-sample norm fluctuation. A network without layer norm is returned unchanged.

    Example:
        >>> from meanfield.spec.network import LayerNorm
        >>> plain_equivalent(Network(3, "relu", 2, 0, norms=[LayerNorm(1)])).norms
        ()
    """
    from ..spec.network import LayerNorm
    from ..theory.recursions import order_parameters

    layers = [n.layer for n in net.norms if isinstance(n, LayerNorm)]
    if not layers:
        return net
    op = order_parameters(net, max(net.min_samples(), 2))
    sw2, sb2 = list(net.sigma_w2), list(net.sigma_b2)
    for layer in layers:
        q = float(op.layers[layer].q1)
        sw2[layer - 1], sb2[layer - 1] = float(sw2[layer - 1]) / q, float(sb2[layer - 1]) / q
    return net.with_(norms=tuple(n for n in net.norms if not isinstance(n, LayerNorm)), sigma_w2=tuple(sw2),
                     sigma_b2=tuple(sb2))


POPULATION_WIDTH = 64  # the population profile is drawn at min(M, 64); wider networks repeat each mode M / 64 times
POPULATION_DRAWS = 24  # other draws move a grid cell by at most 0.5 points at 24 (rmt.md, section 6)
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
    scale = fl.at("bulk_scale", M) / M if fl is not None else 0.0
    block2 = derived["block2"] * (1.0 + scale) if "block2" in derived else fl.at("block2", M)
    p2 = block2 * d * d / M
    s2 = coefficient("semicircle") * d * d / M
    ell = coefficient("spike") * _positive(o) / M
    populations = _populations(fl, M, T, d, p2, ell, derived)
    edges, shifts, tops, tw_var, between = [], [], [], [], []
    # many modes per sample (n > 32 T) at T >= 64: the block is in the free-probability regime, where edge +
    # Tracy-Widom holds (the drawn model's Gaussian shortcut for many modes was -7..-9% at M = 2048, T = 256)
    modes_total = max(sum(len(columns) for _, _, columns in populations) / max(len(populations), 1), 1)
    drawn = T <= _MC_MAX_T and not (modes_total > 32 * T and T >= 64)
    for d0, blocks, _ in populations:
        edge, g_star, top, zpp = edge_outlier_curvature(d0, s2, blocks, T, ell)
        shift = _TW_MEAN * (zpp / 2.0) ** (1.0 / 3.0) * T ** (-2.0 / 3.0) if math.isfinite(g_star) else 0.0
        edges.append(edge)
        shifts.append(shift)
        between.append(top if top > edge else edge + shift)  # the top per population: the weights' part
        if not drawn:
            # the centred block is the model with T - 1 samples (Pi Y is a (T - 1)-sample Gaussian, as in
            # blocktop.invariant_block_top); the population's single top modes above the rest's threshold are
            # spikes of the rest (BBP outliers with Gaussian fluctuations, freeprob.isolated_top), not the upper edge
            # of a band of one eigenvalue with a Tracy-Widom shift (M = 64, T = 512: edge + TW +2.8% tanh, +2.3% relu
            # above the Monte Carlo of the model's own Gaussian population; meanfield/notes/rmt.md)
            mean_top, var_top = isolated_top(d0, s2, blocks, T - 1, ell)
            tops.append(mean_top)
            tw_var.append(var_top)
    if drawn:
        # a small batch is far from the edge asymptotics (the Tracy-Widom mean is a large-T law): the model drawn
        # at this T, with each sample's norm drawn at its own variance 2 p2 + sigma_D^2 (which can be below a
        # Wishart's 2 p2: tanh) rather than a free semicircular part (relu/tanh center-only, M = 64, T = 8:
        # +5.5%/+17% from edge + TW, +4.1%/+6.4% drawn with a Wigner part, +2.9%/+3.3% with the norms)
        semicircle = derived["semicircle"] if "semicircle" in derived else fl.at("semicircle", M)
        norms = _positive_note(2.0 * p2 + semicircle * d * d / M, "per-sample norm variance", M, notes)
        if SMALL_T_TOP not in SMALL_T_TOPS:
            raise InvalidArgument("SMALL_T_TOP", SMALL_T_TOP, "one of " + ", ".join(map(repr, SMALL_T_TOPS)))
        if SMALL_T_TOP == "deterministic":
            # the same model without draws: edge (T - 1) + Tracy-Widom, the self-normalization and the norms'
            # variance to second order, the first order exact (blocktop.invariant_block_top)
            pairs = [invariant_block_top(d0, [(1.0, c) for c in columns] if columns else (), norms, ell, T)
                     for d0, _, columns in populations]
            expected = float(np.mean([p[0] for p in pairs]))
            variance = float(np.var([p[0] for p in pairs]) + np.mean([p[1] for p in pairs]))
            method = "deterministic"
        else:
            populations_drawn = tuple((d0, columns) for d0, _, columns in populations)
            expected, variance = _model_top_drawn(populations_drawn, norms, ell, T)
            method = "drawn"
    else:
        # the block top's variance: the populations' spread (the weights) plus Tracy-Widom's (the samples)
        expected, method = float(np.mean(tops)), "edge+TW/outlier"
        variance = float(np.var(tops)) + float(np.mean(tw_var))
    modes = [sum(n for n, _ in blocks) for _, blocks, _ in populations]
    # the populations are drawn at min(M, POPULATION_WIDTH) and repeated: their spread over the weights is that of
    # the drawn width; a population top's relative variance falls like 1 / M, so it is scaled by drawn / M
    count = derived["population"][1] if "population" in derived else 1.0
    between_raw = float(np.var(between) / np.mean(between) ** 2) if between and np.mean(between) > 0 else 0.0
    between_rel = between_raw * min(1.0, 1.0 / count)
    top_variance = max(variance - (between_raw - between_rel) * expected**2, 0.0)
    return dict(edge=float(np.mean(edges)), top=expected, spike=T * ell, d=d, modes=float(np.mean(modes)),
                semicircle=s2, identity=float(np.mean([d0 for d0, _, _ in populations])),
                tw_shift=float(np.mean(shifts)), top_method=method, populations=len(populations),
                top_variance=top_variance, between_variance=between_rel)


_MC_MAX_T = 128  # the drawn model up to T = 128; above, edge + Tracy-Widom (T = 256 cells: within 3.6%, 40x faster)


@functools.lru_cache(maxsize=1024)
def _model_top_drawn(populations: tuple, norm_variance: float, spike: float, T: int, seed: int = 0) -> tuple:
    """(E, Var) of lambda_max of the centred model Gram at finite T, by Monte Carlo, cycling through its populations.

    Each sample is drawn as in the derivation: its gradient's linear part y_t (the population's modes: the
    columns of Y, Gaussian, with the population's column variances), the tensor part (d_0 on the diagonal, its
    overlaps negligible) and the spike (ell y y^T), then scaled by rho_t so that its squared norm has the model's
    mean and the variance ``norm_variance`` (a gamma law): B = diag(rho) (d_0 I + Y Y^T + ell y y^T) diag(rho),
    centred by Pi. With more than 32 T modes, Y Y^T is drawn as its Gaussian limit (mean tr I, entries of
    variance sum v^2, diagonal 2 sum v^2; the free central limit of many rank-one terms, relative error of order
    sqrt(T / modes) in its third cumulant), which costs T^2 instead of T x modes. The per-sample norm variance is
    the derived Var|g - mu|^2 / T^2 (it can be below a Gaussian sample's, e.g. for bounded phi). Draws: enough
    for a standard error of 0.3% of the mean (at most :func:`_mc_cap` draws; the seed is fixed, so the value is a
    deterministic function of the arguments). The draws of one population are made together (batched products
    and eigenvalues), the populations in turn.
    """
    rng = np.random.default_rng(seed)
    shapes = [(d0, np.asarray(columns if columns else (0.0,))) for d0, columns in populations]
    cap = _mc_cap(T)
    tops: list = []
    draws = 100
    iu = np.triu_indices(T, 1)
    eye = np.eye(T)
    while True:
        start = len(tops)
        for p, (d0, v) in enumerate(shapes):
            # the draws i in [start, start + draws) with i = p mod (number of populations)
            k = len(range((p - start) % len(shapes) + start, start + draws, len(shapes)))
            if k == 0:
                continue
            if v.size > 32 * T:
                p2 = float(v @ v)
                X = np.zeros((k, T, T))
                X[:, iu[0], iu[1]] = rng.standard_normal((k, iu[0].size)) * math.sqrt(p2)
                X = X + np.transpose(X, (0, 2, 1))
                X[:, np.arange(T), np.arange(T)] = rng.standard_normal((k, T)) * math.sqrt(2.0 * p2)
                YY = X + float(v.sum()) * eye
            else:
                # single precision for the T x modes draw and its product (the cost; entries are sums of at most
                # 32 T products, relative rounding about 1e-6), double from here on
                Y = rng.standard_normal((k, T, v.size), dtype=np.float32) * np.sqrt(v).astype(np.float32)
                YY = (Y @ np.transpose(Y, (0, 2, 1))).astype(float)
            y = rng.standard_normal((k, T))
            inner = d0 * eye + YY + spike * y[:, :, None] * y[:, None, :]
            mean = d0 + float(v.sum()) + spike
            # squared norms are positive and right-skewed (a chi-square for Gaussian gradients): a gamma law of
            # this mean and variance
            target = rng.gamma(mean * mean / norm_variance, norm_variance / mean, (k, T)) if norm_variance > 0 \
                else np.full((k, T), mean)
            rho = np.sqrt(target / np.maximum(np.diagonal(inner, axis1=1, axis2=2), 1e-300 * mean))
            B = inner * rho[:, :, None] * rho[:, None, :]
            # Pi B Pi without the two products: subtract the row and column means, add back the grand mean
            B = B - B.mean(axis=2, keepdims=True) - B.mean(axis=1, keepdims=True) + B.mean(axis=(1, 2), keepdims=True)
            tops.extend(np.linalg.eigvalsh(B)[:, -1].tolist())
        mean_top = float(np.mean(tops))
        if len(tops) >= cap or np.std(tops) / math.sqrt(len(tops)) <= 0.003 * abs(mean_top):
            return mean_top, float(np.var(tops))
        draws = min(len(tops), cap - len(tops))  # double


def _mc_cap(T: int) -> int:
    """Most draws of :func:`_model_top_drawn`: 1200 up to T = 64 (a relative spread of the top of about 7% per draw
    needs about 600 for a 0.3% standard error), 300 above (T = 128 draws cost 4 times more)."""
    return 1200 if T <= 64 else 300


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
                       fluctuations: Fluctuations | None = None, coefficients: str = "derived") -> dict:
    """lambda_max and s at finite width from the free-probability model of the Gram (module docstring).

    Args:
        net: the network (numeric).
        width: M.
        samples: T.
        base: the :class:`~meanfield.theory.fisher.FisherStats` of ``predict(net, width, samples)`` (finite-width
            means; its gradient count P and, with full batch norm on the output, its s are used).
        fluctuations: measured coefficients to use (implies ``coefficients="measured"``).
        coefficients: "derived" (default: no sampled network; every coefficient from :mod:`meanfield.finite.fourpoint`,
            :mod:`meanfield.finite.corrections`, :mod:`meanfield.finite.population` and the free-probability
            formulas, see the notes of the result for what is still approximate) or "measured" (the coefficients
            the derivation does not cover measured on sampled reference networks, :func:`measure_fluctuations`).

    Returns:
        dict with keys ``lambda_max`` (the prediction of E lambda_max), ``s`` (E s), ``lambda_max_bulk``
        (top of the centred bulk incl. the spike), ``lambda_max_outlier`` (E of the largest C-outlier, None
        with batch norm on the output), ``edge`` (bulk edge without the spike), ``spike`` (T ell),
        ``fluctuations`` (the :class:`Fluctuations` used, None when derived), ``method`` ("rmt-derived" or
        "rmt-semi-empirical") and ``notes``.

    Example:
        >>> from meanfield.theory.fisher import predict
        >>> net = Network(2, "relu", 2, 0, norms=[BatchNorm("last", center_only=True)])
        >>> out = finite_width_stats(net, 32, 16, predict(net, 32, 16))
        >>> out["lambda_max"] > float(predict(net, 32, 16).leading.lambda_max), out["method"]
        (True, 'rmt-derived')
    """
    from ..theory.fisher import predict

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters", "the RMT correction is numeric only")
    M = check_int("width", width, minimum=8)
    T = check_int("samples", samples, minimum=max(net.min_samples(), 4))
    if coefficients not in COEFFICIENTS:
        raise InvalidArgument("coefficients", coefficients, "one of " + ", ".join(map(repr, COEFFICIENTS)))
    measured = coefficients == "measured" or fluctuations is not None
    fl = None
    if measured:
        fl = measure_fluctuations(net) if fluctuations is None else fluctuations
        if not isinstance(fl, Fluctuations) or fl.network != net:
            raise InvalidArgument("fluctuations", fluctuations, "Fluctuations measured for this network")
    C = net.outputs
    twin = plain_output_twin(net)
    below_plain = not twin.norms
    if not measured and any(isinstance(n, BatchNorm) for n in twin.norms):
        raise InvalidArgument("net", net.describe(), "no batch norm below the output for the derived coefficients",
                              "batch norm in a hidden layer is not derived: use finite_width='rmt-measured' "
                              "(coefficients='measured')")
    tb = predict(twin, M, T)
    gd_p, go_p = float(tb.gram_diag), float(tb.gram_offdiag)
    notes: list = []
    derived = _derived(net, M, T, approximate=not measured)
    corr = None
    if measured:
        gd_c, go_c = gd_p * (1.0 + fl.at("mean_diag", M) / M), go_p * (1.0 + fl.at("mean_offdiag", M) / M)
    elif below_plain:
        from .corrections import gram_corrections

        if isinstance(net.norm_at(net.depth), BatchNorm):
            # only d = E G_tt - E G_ts is used below a batch norm on the output, and the centre-only twin's
            # corrections (needed for the entry variances anyway) carry it: (1 - 1/T) d - (-d / T); one
            # gram_corrections call instead of two (the plain twin's entry variances are not needed)
            corr = gram_corrections(twin.with_(norms=(BatchNorm(net.depth, center_only=True),)), M, T)
            gd_c, go_c = float(corr.mean_diag - corr.mean_offdiag), 0.0  # only their difference d is used
        else:
            corr = gram_corrections(twin, M, T)
            gd_c, go_c = float(corr.mean_diag), float(corr.mean_offdiag)
    else:
        gd_c, go_c = gd_p, go_p
        ln = _layer_norm_corrections(twin, M, T)
        if ln is not None:
            gd_c, go_c = float(ln.mean_diag), float(ln.mean_offdiag)
    d = gd_c - go_c
    O = gd_c + (T - 1) * go_c  # the mean outlier of each output (no output normalization)
    last = net.norm_at(net.depth)
    bulk = _bulk(fl, M, T, d, go_p, notes, derived)
    if measured:
        named = f"derived (meanfield.finite.fourpoint, meanfield.finite.population): {', '.join(sorted(derived))}; "
        notes += [(named if derived else "")
                  + "other fluctuation coefficients measured at reference widths "
                  f"{fl.reference[0]} (seeds {_span(fl.reference[2])}) and extrapolated as c_inf + c_1/M; mean-entry "
                  f"corrections from {MEAN_DRAWS} draws per width (seeds from {MEAN_SEED}), 0 where unresolved"]
    else:
        notes += _derived_notes(net, below_plain)
    outlier = None
    if isinstance(last, BatchNorm):
        v = 1.0
        if not last.center_only:
            from ..theory.recursions import order_parameters

            if T <= 5:
                raise InvalidArgument("samples", T, "T > 5 with full batch norm on the output",
                                      "the chi-square moments of the scale diverge")
            op = order_parameters(net, T)
            v = float(op.layers[net.depth].q1 - op.layers[net.depth].q2)
        if measured:
            lam = _combined_measured(fl, net, M, T, bulk["top"], last, v, notes)
        else:
            scale_variance = block_scale_variance(plain_equivalent(twin), M) if C > 1 else 0.0
            coupling = random_state_coupling(plain_equivalent(twin), M, T) if C > 1 else 0.0
            population = derived["population"][0] if "population" in derived else None
            shares = None  # the first order's spread from the output layer's share of a block top (an option)
            if C > 1 and blockshare.FIRST_ORDER == "top-share":
                shares = (blockshare.sample_top_share(plain_equivalent(twin), M, T, d, bulk["identity"], bulk["top"]),
                          blockshare.output_share_of_mean(plain_equivalent(twin), M, T, d))
            # below a layer norm the four-point traces (plain equivalent) are not in this network's units: "scale"
            units = None if C == 1 or blockshare.FIRST_ORDER != "units" or not below_plain else \
                blockspread.first_order_units(twin, M, T, d, bulk["identity"], bulk["top"])
            lam = _combined_derived(M, T, bulk, last, v, C, scale_variance, population, coupling, d, shares, units, net)
    else:
        if measured:
            a, b = (_positive_note(derived[name] if name in derived else fl.at(name, M) + fl.at(name + "_T", M) / T,
                                   name, M, notes) / M for name in ("outlier_self", "outlier_cross"))
            excess = _between_ratios(fl, "outlier_excess", M, T) / math.sqrt(M)
            outlier = (O * (1.0 + expected_max_symmetric(C, a, b)) + bulk["spike"]) * (1.0 + excess)
        else:
            a, b = (_positive_note(derived.get(name, 0.0), name, M, notes) / M
                    for name in ("outlier_self", "outlier_cross"))
            # the top outlier coupled to the centred Gram (2 x 2 Lanczos; it replaces the spike's T ell)
            outlier = coupled_top(net, M, T, O * (1.0 + _outlier_top(net, M, T, a, b, gd_p + (T - 1) * go_p)), O, d,
                                  plain_equivalent(net))
        lam = max(outlier, bulk["edge"])
    # s = (C/P) [T E G_tt^2 + T(T-1) E G_ts^2 + (C-1) T^2 E G_cross^2]: means (corrected) squared + variances
    P = float(base.P)
    d_mf = gd_p - go_p
    if isinstance(last, BatchNorm):
        gd_c, go_c = d * (T - 1) / T, -d / T  # the centred twin's mean entries
    vd, vo, vx = _entry_variances(net, fl, M, T, gd_c, corr, notes)
    if isinstance(last, BatchNorm) and not last.center_only:  # v: the output variance from the lambda_max part
        excess = C * (T * vd + T * (T - 1) * vo + (C - 1) * T * T * vx) / P
        # mean part: the finite-width mean-field value (chi-square and projector moments) rescaled by (d/d_mf)^2;
        # variances: times E[sigma_k^-4] = T^2 / ((T-3)(T-5) v^2)
        s = float(base.s) * (d / d_mf) ** 2 + excess * T * T / ((T - 3) * (T - 5) * v * v)
    else:
        s = C * (T * (gd_c**2 + vd) + T * (T - 1) * (go_c**2 + vo) + (C - 1) * T * T * vx) / P
    return dict(lambda_max=float(lam), s=s, lambda_max_bulk=float(bulk["top"]), lambda_max_outlier=outlier,
                edge=float(bulk["edge"]), spike=float(bulk["spike"]), fluctuations=fl,
                method="rmt-semi-empirical" if measured else "rmt-derived", notes=tuple(notes))


def finite_width_stats_measured(net: Network, width: int, samples: int, base: Any) -> dict:
    """:func:`finite_width_stats` with ``coefficients="measured"``: the sampled reference networks fill what is not
    derived (``predict(..., finite_width="rmt-measured")``).

    Example:
        >>> from meanfield.theory.fisher import predict
        >>> finite_width_stats_measured.__name__
        'finite_width_stats_measured'
    """
    return finite_width_stats(net, width, samples, base, coefficients="measured")


def _outlier_top(net: Network, M: int, T: int, a: float, b: float, mean_outlier: float) -> float:
    """E lambda_max(O) / E O_kk - 1 for the C x C outlier matrix, derived: the output layer's part is the same for
    every output, the rest a Wishart-type form W K W^T in the output weights (:func:`expected_max_wishart`).

    The lower layers' share f of the mean outlier is 1 - [(M q^_1 + 1) + (T - 1)(M q^_2 + 1)] / (T O) (the output
    layer's term of T G = sum_l A_l B_l, with A_L = 1 and B_L = h^{L-1}(t) . h^{L-1}(s) + 1, at the last hidden
    layer's mean-field q^); its degrees of freedom n follow from the derived off-diagonal variance b = f^2 / n,
    and the diagonal variance beyond the Wishart's own 2 b is an independent Gaussian diagonal. One output: 0.
    """
    C = net.outputs
    if C == 1 or b <= 0:
        return expected_max_symmetric(C, a, b)
    f = lower_share(net, M, T, mean_outlier)
    return expected_max_wishart(C, f, f * f / b, max(a - 2.0 * b, 0.0))


def _derived_notes(net: Network, below_plain: bool) -> list:
    """What the derived coefficients rest on, and what is still approximate (the result's notes)."""
    notes = ["all coefficients derived, no sampled network: bulk, spike, per-sample norm part and entry variances "
             "(meanfield.finite.fourpoint), O(1/M) mean entries (meanfield.finite.corrections), population profile "
             "(meanfield.finite.population, the Gaussian-equivalent linear part), coupling of several outputs (a Wishart "
             "form in the output weights over the output sphere, meanfield.finite.blockspread, to second order in the "
             "selected and the other outputs' blocks: meanfield.finite.blockcoupling), C outliers' maximum (the "
             "Wishart-type outlier matrix) coupled to the centred Gram (meanfield.finite.outlier_coupling)"]
    from . import deterministic

    if deterministic.POPULATION == "drawn":
        population = (f"population profile from {POPULATION_DRAWS} fixed pseudo-random draws of the weights at width "
                      f"min(M, {POPULATION_WIDTH}) (seeds {POPULATION_SEED}-{POPULATION_SEED + POPULATION_DRAWS - 1}; "
                      "not a closed-form deterministic equivalent)")
    else:
        population = ("population profile: the limiting law of the linear part (meanfield.finite.deterministic, "
                      f"quantiles with a Tracy-Widom top, no draws; {deterministic.spread_note(plain_equivalent(plain_output_twin(net)))})")
    if SMALL_T_TOP == "deterministic":
        small = ("small-T block top (T <= 128) without draws: edge at T - 1 plus Tracy-Widom with the per-sample norm "
                 "step to second order, its first order exact (meanfield.finite.blocktop.invariant_block_top, "
                 "freeprob.normalized_block_top with g_eff; within -2.4% to +2.2% of the model's Monte Carlo)")
    else:
        small = ("small-T block top (T <= 128) by a fixed-seed Monte Carlo of the model (standard error 0.3%, at most "
                 "1200 draws up to T = 64 and 300 at T = 128; its norm step is not yet derived in closed form); another "
                 "seed moves a prediction by up to about 1% (grid of benchmarks/rmt_grid.py)")
    approx = [population, small, "O(1/M) correction of tr Sigma^2 not included"]
    if not below_plain:
        approx.append("layer norm below the output: the population profile's shape (and, with batch norm on the "
                      "output, the entry variances behind s) from the plain network with the same mean-field kernels "
                      "(meanfield.finite.model.plain_equivalent); the bulk, spike, C x C outlier variances, O(1/M) "
                      "mean entries and (no output norm) entry variances from the layer norm's own four-point rules "
                      "(meanfield.finite.fourpoint_layernorm, meanfield.finite.layernorm) where they cover the "
                      "network, else the plain equivalent's")
    return notes + ["approximate: " + "; ".join(approx)]


def _combined_measured(fl: Fluctuations, net: Network, M: int, T: int, top: float, last: Any, v: float,
                       notes: list) -> float:
    """The top of several outputs' centred Gram with measured spread and coupling (the measured path)."""
    C = net.outputs
    # per-output spread of the block top (O(1/sqrt M))
    spread2 = _between_ratios(fl, "top_spread", M, T, notes) / M
    # several outputs: the top is a supremum over the output sphere (see Fluctuations), measured as the
    # coupling excess sqrt(M) (E top / E top_k - 1). Center-only, it falls with T/M (relu C = 3: 2.0 at
    # T/M = 1/4, 1.5 at 2): as T/M grows the block tops approach the tops of the outputs' populations, which
    # are nearly orthogonal in weight space, and the supremum over the sphere approaches the largest block
    # (the floor below). So it is continued in log(T/M) beyond the reference ratios. With full batch norm the
    # coupling also carries the selection of outputs by their scales and is held.
    coupling = _between_ratios(fl, "coupling", M, T, beyond=last.center_only) / math.sqrt(M)
    coupled = top * (1.0 + coupling)
    if last.center_only:
        return max(coupled, top * expected_max_scaled(C, math.sqrt(spread2)))
    # full batch norm: a block's mean top is the centred one times E[T / chi^2_{T-1}] = T / (T - 3), over v
    return max(coupled * T / (T - 3), top * expected_max_scaled(C, math.sqrt(spread2), T)) / v


@functools.lru_cache(maxsize=256)
def block_scale_variance(net: Network, width: int) -> float:
    """Var_specific(d_k) / d^2: the output-specific relative variance of one output block's scale, derived.

    d_k = mean_t G_kk(t, t) - mean_{t != s} G_kk(t, s) (the centred block's mean diagonal) fluctuates with the
    weights by O(1/sqrt M): part of it is common to all outputs (the shared hidden weights), part is specific to
    output k (its own output weights). Over a large batch, with t, s, u, v distinct and l != k,

        Var_specific = D(tt, uu) - 2 D(tt, uv) + D(ts, uv),   D(e, e') = Cov(G_kk(e), G_kk(e')) - Cov(G_kk(e), G_ll(e')),

    each covariance from :func:`meanfield.finite.fourpoint.gram_covariance` (plain networks: pass the
    :func:`plain_equivalent` of the network without its output norm).

    Example:
        >>> 0 < block_scale_variance(Network(3, "relu", 2, 0, outputs=2), 64) < 1
        True
    """
    from ..theory.fisher import predict
    from .fourpoint import gram_covariance

    two = net.with_(outputs=2)

    def specific(first: tuple, second: tuple) -> float:
        return gram_covariance(two, width, first, second) - gram_covariance(two, width, first, (1, 1) + second[2:])

    var = specific((0, 0, 0, 0), (0, 0, 1, 1)) - 2.0 * specific((0, 0, 0, 0), (0, 0, 1, 2)) \
        + specific((0, 0, 0, 1), (0, 0, 2, 3))
    base = predict(two, width, 4)
    d = float(base.gram_diag - base.gram_offdiag) * 4  # units of T G, as gram_covariance
    return max(var, 0.0) / d**2


def _combined_derived(M: int, T: int, bulk: dict, last: Any, v: float, C: int, scale_variance: float,
                      population: Any, coupling: float = 0.0, d: float = 1.0, shares: Any = None,
                      units: Any = None, net: Network | None = None) -> float:
    """The top of C outputs' centred Gram, derived: top (1 + E lambda_max(Y)), Y a C x C Wishart form (or GOE) matrix.

    The law of the Gram is invariant under rotations of the output space, and the Gram of the combined output
    a . f is sum_kl a_k a_l G_kl; to first order the top of the whole Gram is the supremum over unit a of
    top(a) = a^T Y a with Y_kk the block tops: the top times 1 + lambda_max(Y - E Y) in relative units. Rotation
    invariance makes the fluctuating part of Y a GOE matrix plus a multiple of the identity (the part of the
    block tops common to all outputs, which moves the supremum and the blocks alike and does not couple them):
    Var Y_kk = a, Var Y_kl = a / 2, with a the output-specific relative variance of a block top: the weights'
    part, (1 - r) times that of the block's scale (:func:`block_scale_variance`, the four-point engine) plus r
    times the populations' spread less the part two outputs' population tops share, r = T / (T + n) (n the
    population's modes); plus the sample's (the drawn model's variance less its populations' part, or
    Tracy-Widom's at the edge) outside the output layer's share of the top mode. With full batch norm each block is also
    scaled by Z_k / v, Z_k ~ T / chi^2_{T-1} (per output, on Y's diagonal only, relative variance: outputbn_scale's
    normalized_block_extra); the larger of the coupled top times E Z and the exact expected maximum is kept.
    The first-order top is coupled to the other outputs' blocks by a 2 x 2 Lanczos step
    (:func:`meanfield.finite.blockcoupling.second_order_block_top`, ``coupling`` = c_random, ``d`` = E G_tt - E G_ts).
    ``shares`` = (s_top, s_d) (the option :data:`meanfield.finite.blockshare.FIRST_ORDER`, not the default): a from the
    slope (1 - s_top) / (1 - s_d) of a block top on its scale, and the Wishart form instead of the GOE. ``units`` =
    (f, n, c_self) (``FIRST_ORDER = "units"``): the first order as s_top I + f W_n / n, f = 1 - s_top, n the
    effective number of hidden units along the top state (:func:`meanfield.finite.blockspread.first_order_wishart`),
    a = 2 f^2 / n, plus the selected block's rotation (c_self; blockcoupling.selected_block_rotation); the default; the GOE with
    the spread described above is ``FIRST_ORDER = "scale"``.
    """
    share = population.output_layer_share if population is not None else 0.0
    correlation = 0.0
    if population is not None and population.top_relative_variance > 0:
        correlation = min(max(population.top_pair_covariance / population.top_relative_variance, 0.0), 1.0)
    top = bulk["top"]
    sample = max(bulk["top_variance"] / top**2 - bulk["between_variance"], 0.0) if top > 0 else 0.0
    # weights: with few samples per mode (T << n) the block top follows the block's scale (its trace); with many
    # (T >> n) it is T times the population's top, whose output-specific spread is the populations' spread less
    # the part two outputs share (their hidden weights); in between, the weight r = T / (T + n)
    r = T / (T + bulk["modes"]) if bulk["modes"] > 0 else 1.0
    weights = (1.0 - r) * scale_variance + r * bulk["between_variance"] * (1.0 - correlation)
    # the sample's part: the output layer's share of the top mode sees the same features h(x_t) for every output
    # (common); the rest is output-specific
    a = weights + (1.0 - share) * sample
    if shares is not None:  # (s_top, s_d): the block top follows its scale with slope (1 - s_top) / (1 - s_d)
        slope = (1.0 - shares[0]) / (1.0 - shares[1])
        a = slope**2 * scale_variance + r * bulk["between_variance"] * (1.0 - correlation) + (1.0 - shares[0]) * sample
    if units is not None:  # (f, n): Hellmann-Feynman along the top state, a Wishart form in the output weights
        a = 2.0 * units[0] ** 2 / units[1]
    from .blockcoupling import second_order_block_top, selected_block_rotation  # second order (2 x 2 Lanczos)
    from .blockshare import wishart_excess

    def excess(extra: float) -> float:  # the GOE form, or with shares the Wishart form W_n / n, n = 2 / a
        if units is not None:
            return expected_max_wishart(C, units[0], units[1], extra)
        return expected_max_symmetric(C, a + extra, a / 2.0) if shares is None else wishart_excess(C, a, extra)

    lift = selected_block_rotation(top, min(d, top), units[2], max(1.0 + excess(0.0) / units[0], 1.0)) if C > 1 and \
        units is not None and len(units) > 2 and units[0] > 0 else 0.0  # the selected block's rotation (blockcoupling)
    if last.center_only:
        return second_order_block_top(top * (1.0 + excess(0.0)) + lift, top, C, coupling, d)
    # full batch norm: block k over sigma_k^2 adds to Y's diagonal only (outputbn_scale.normalized_block_extra)
    z = normalized_block_extra(net, M, T, top) if C > 1 and net is not None and T >= 6 and top > 0 else 2.0 / (T - 5)
    coupled = second_order_block_top(top * (1.0 + excess(z)) + lift, top, C, coupling, d) * T / (T - 3)
    return max(coupled, top * expected_max_scaled(C, math.sqrt(a), T)) / v


def _entry_variances(net: Network, fl: Fluctuations | None, M: int, T: int, gd: float, corr: Any,
                     notes: list) -> tuple:
    """(Var G_tt, Var G_ts, E G_cross^2) in Gram units (of the centred twin with batch norm on the output)."""
    if not net.norms and corr is not None:
        # the same four-point variances, already computed by gram_corrections for the mean entries
        vx = ((T - 1) * corr.cross_square_offdiag + corr.cross_square_diag) / T if net.outputs > 1 else 0.0
        notes.append("entry variances for s derived (meanfield.finite.fourpoint)")
        return float(corr.var_diag), float(corr.var_offdiag), float(vx)
    if not net.norms:
        # derived, not measured: the four-point recursions of meanfield.finite.fourpoint (plain networks); they give
        # the variance over weights and inputs, as E ||G||_F^2 needs
        from .fourpoint import cross_output_variance, same_output_variance

        same = same_output_variance(net, M, T)
        vx = cross_output_variance(net, M, T).mean_square if net.outputs > 1 else 0.0
        notes.append("entry variances for s derived (meanfield.finite.fourpoint)")
        return same.diag / T**2, same.offdiag / T**2, vx
    if fl is not None:
        return tuple(_coef(fl, name, M, notes) * gd**2 / M for name in ("var_diag", "var_off", "var_cross"))
    last = net.norm_at(net.depth)
    twin = plain_output_twin(net)
    if isinstance(last, BatchNorm) and not twin.norms:
        # the centred twin's entries Pi G Pi: exact sums over the plain network's entry covariances (the call of
        # finite_width_stats, passed as corr)
        from .corrections import gram_corrections

        c = corr if corr is not None else gram_corrections(
            twin.with_(norms=(BatchNorm(net.depth, center_only=True),)), M, T)
        vx = ((T - 1) * c.cross_square_offdiag + c.cross_square_diag) / T if net.outputs > 1 else 0.0
        return float(c.var_diag), float(c.var_offdiag), float(vx)
    if last is None:
        # layer norms below, none on the output: their own four-point rules where derived
        c = _layer_norm_corrections(twin, M, T)
        if c is not None:
            vx = ((T - 1) * c.cross_square_offdiag + c.cross_square_diag) / T if net.outputs > 1 else 0.0
            notes.append("entry variances for s derived below the layer norms (meanfield.finite.layernorm)")
            return float(c.var_diag), float(c.var_offdiag), float(vx)
    # a layer norm below: the plain equivalent's relative variances, at this network's mean diagonal
    from .fourpoint import cross_output_variance, same_output_variance

    plain = plain_equivalent(twin)
    if isinstance(last, BatchNorm):
        plain = plain.with_(norms=(BatchNorm(net.depth, center_only=True),))
        from .corrections import gram_corrections

        c = gram_corrections(plain, M, T)
        vx = ((T - 1) * c.cross_square_offdiag + c.cross_square_diag) / T if net.outputs > 1 else 0.0
        ref = float(c.mean_diag)
        return tuple(float(x) * (gd / ref) ** 2 for x in (c.var_diag, c.var_offdiag, vx))
    same = same_output_variance(plain, M, T)
    vx = cross_output_variance(plain, M, T).mean_square if net.outputs > 1 else 0.0
    ref = same.mean_diag / T
    return tuple(x * (gd / ref) ** 2 for x in (same.diag / T**2, same.offdiag / T**2, vx))
