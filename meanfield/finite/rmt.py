"""lambda_max = edge of R(g) = d_0 + sigma^2 g + n lam / (1 - T lam g) (+ outliers): finite-width RMT (issue 9).

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq

from ..errors import InvalidArgument, check_int, check_real
from ..spec.network import BatchNorm, Network

__all__ = ["mp_edge", "free_edge", "spike_outlier", "expected_max_symmetric", "expected_max_scaled", "Fluctuations",
           "measure_fluctuations", "finite_width_stats",
           "REFERENCE_WIDTHS", "REFERENCE_SEEDS"]

REFERENCE_WIDTHS = (64, 128)
_MAX_CT = 1024
REFERENCE_RATIOS = (0.25, 2.0)  # T / M of the reference batches: bulk cumulants at the largest, block spread at both
REFERENCE_SEEDS = tuple(range(1000, 1024))
MEAN_DRAWS = 200  # cheap draws (T = 16) per reference width for the O(1/M) corrections of the mean entries
MEAN_SEED = 2000  # their seeds: MEAN_SEED .. MEAN_SEED + MEAN_DRAWS - 1
_MEAN_T = 16


# ------------------------------------------------------------------------------------------------------------------
# free probability
# ------------------------------------------------------------------------------------------------------------------
def mp_edge(ratio: float) -> float:
    """(1 + sqrt(gamma))^2: top edge of the Marchenko-Pastur law of X X^T / n, X (p x n) iid N(0, 1), gamma = p/n.

    Example:
        >>> mp_edge(1.0)
        4.0
    """
    gamma = check_real("ratio", ratio, minimum=0)
    return (1.0 + math.sqrt(gamma)) ** 2


def _check_blocks(blocks: Any) -> tuple[tuple[float, float], ...]:
    out = []
    for b in blocks:
        try:
            n, lam = float(b[0]), float(b[1])
        except (TypeError, ValueError, IndexError):
            raise InvalidArgument("blocks", blocks, "a sequence of (count n > 0, eigenvalue lam > 0) pairs") from None
        if not (n > 0 and lam > 0 and math.isfinite(n) and math.isfinite(lam)):
            raise InvalidArgument("blocks", blocks, "a sequence of (count n > 0, eigenvalue lam > 0) pairs")
        out.append((n, lam))
    return tuple(out)


def _r_transform(identity: float, semicircle: float, blocks: tuple, T: float):
    def R(g):
        return identity + semicircle * g + sum(n * lam / (1.0 - T * lam * g) for n, lam in blocks)

    def dz(g):  # d/dg (R(g) + 1/g)
        return semicircle + sum(n * T * lam * lam / (1.0 - T * lam * g) ** 2 for n, lam in blocks) - 1.0 / g**2

    return R, dz


def free_edge(identity: float, semicircle: float, blocks: Any, samples: float) -> tuple[float, float]:
    """Top edge z(g*) of the law with R(g) = identity + semicircle g + sum_j n_j lam_j / (1 - T lam_j g).

    This is the spectrum of d_0 I + D + sum_j lam_j Y_j Y_j^T (T x T, Y_j a T x n_j iid N(0, 1) matrix, D a
    free centred part of variance ``semicircle``): the generalized Marchenko-Pastur (Silverstein) law of
    a Gram of T samples whose population covariance has n_j eigenvalues lam_j. The edge is z(g*) with
    z(g) = R(g) + 1/g and g* the smallest positive zero of z'(g).

    Args:
        identity: d_0, a deterministic shift.
        semicircle: sigma^2 >= 0 of a free semicircular part.
        blocks: (n_j, lam_j) pairs (n_j may be non-integer: an effective count).
        samples: T.

    Returns:
        (edge, g*).

    Example:
        >>> e, g = free_edge(0.0, 0.0, [(100, 1.0)], 25)    # (sqrt(100) + sqrt(25))^2
        >>> round(e, 9)
        225.0
        >>> round(free_edge(0.0, 1.0, [], 1)[0], 9)          # semicircle of variance 1: edge 2
        2.0
    """
    T = check_real("samples", samples, minimum=0, strict_min=True)
    blocks = _check_blocks(blocks)
    d0 = check_real("identity", identity)
    s2 = check_real("semicircle", semicircle, minimum=0)
    if not blocks and s2 == 0:
        return float(d0), math.inf
    R, dz = _r_transform(d0, s2, blocks, T)
    hi = 1.0 / (T * max(lam for _, lam in blocks)) if blocks else 1.0 / math.sqrt(s2) * 10.0
    # z' -> -inf as g -> 0+ and -> +inf as g -> hi- (blocks) or is > 0 beyond 1/sigma (semicircle): one root
    lo = hi * 1e-12
    top = hi * (1.0 - 1e-13) if blocks else hi
    g = brentq(dz, lo, top, xtol=1e-15 * hi, rtol=1e-14, maxiter=500)
    return float(R(g) + 1.0 / g), float(g)


def spike_outlier(identity: float, semicircle: float, blocks: Any, samples: float, spike: float) -> float:
    """x = T ell + R(1 / (T ell)): the sample outlier of a population spike ell (BBP), or the edge below threshold.

    Args:
        identity, semicircle, blocks, samples: the bulk, as for :func:`free_edge`.
        spike: ell >= 0, the population eigenvalue of the spike (a rank-one term ell y y^T, |y|^2 ~ T).

    Returns:
        max(edge, outlier): the top of the spectrum.

    Example:
        >>> round(spike_outlier(0.0, 0.0, [(100, 1.0)], 25, 0.0), 9)   # no spike: the MP edge
        225.0
        >>> x = spike_outlier(0.0, 0.0, [(100, 1.0)], 25, 10.0)        # ell (1 + n/(T ell - ... )) > edge
        >>> x > 225.0
        True
    """
    edge, g_star = free_edge(identity, semicircle, blocks, samples)
    ell = check_real("spike", spike, minimum=0)
    if ell == 0:
        return edge
    T = float(samples)
    g = 1.0 / (T * ell)
    if g >= g_star:
        return edge
    R, _ = _r_transform(float(identity), float(semicircle), _check_blocks(blocks), T)
    return float(max(edge, T * ell + R(g)))


@functools.lru_cache(maxsize=256)
def expected_max_symmetric(count: int, diagonal: float, offdiagonal: float, draws: int = 20000, seed: int = 0) -> float:
    """E[lambda_max(E)] for a C x C symmetric Gaussian matrix, E_kk ~ N(0, diagonal), E_kl ~ N(0, offdiagonal).

    Seeded Monte Carlo over ``draws`` matrices (deterministic; standard error ~ 1e-2 sqrt(variance)).

    Example:
        >>> expected_max_symmetric(1, 1.0, 1.0)
        0.0
    """
    C = check_int("count", count, minimum=1)
    a = check_real("diagonal", diagonal, minimum=0)
    b = check_real("offdiagonal", offdiagonal, minimum=0)
    if C == 1:
        return 0.0
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((draws, C, C))
    iu = np.triu_indices(C, 1)
    E = np.zeros_like(X)
    E[:, iu[0], iu[1]] = X[:, iu[0], iu[1]] * math.sqrt(b)
    E = E + np.transpose(E, (0, 2, 1))
    idx = np.arange(C)
    E[:, idx, idx] = X[:, idx, idx] * math.sqrt(a)
    return float(np.linalg.eigvalsh(E)[:, -1].mean())


@functools.lru_cache(maxsize=512)
def expected_max_scaled(count: int, spread: float, samples: int | None = None, draws: int = 40000,
                        seed: int = 0) -> float:
    """E[max_k X_k Z_k] / E[X]: X_k ~ N(1, spread^2) iid (per-output block tops), Z_k = T / chi^2_{T-1} or 1.

    Seeded Monte Carlo (deterministic). With ``samples=None`` the scale Z is 1 (center-only batch norm).

    Example:
        >>> expected_max_scaled(1, 0.3)
        1.0
        >>> round(expected_max_scaled(2, 1.0), 1)   # E max of two N(1, 1): 1 + 1/sqrt(pi)
        1.6
    """
    C = check_int("count", count, minimum=1)
    sd = check_real("spread", spread, minimum=0)
    if samples is None and (C == 1 or sd == 0):
        return 1.0
    rng = np.random.default_rng(seed)
    X = 1.0 + sd * rng.standard_normal((draws, C))
    if samples is not None:
        T = check_int("samples", samples, minimum=4)
        X = X * (T / rng.chisquare(T - 1, size=(draws, C)))
    return float(X.max(axis=1).mean())


# ------------------------------------------------------------------------------------------------------------------
# fluctuation coefficients (measured at reference widths; to be replaced by a four-point recursion)
# ------------------------------------------------------------------------------------------------------------------
_NAMES = ("block2", "block3", "semicircle", "spike", "outlier_self", "outlier_self_T", "outlier_cross",
          "outlier_cross_T", "var_diag", "var_off",
          "var_cross", "top_spread_small", "top_spread_large", "coupling_small", "coupling_large", "outlier_excess_small",
          "outlier_excess_large", "mean_diag", "mean_offdiag", "bulk_scale")


@dataclass(frozen=True)
class Fluctuations:
    """O(1/M) fluctuation coefficients of the dual Gram, each as c(M) = c_inf + c_1 / M (``coef[name]``).

    Names (d = gram_diag - gram_offdiag of the network without its output norm, o = its gram_offdiag):
        block2: M p2 / d^2, p2 = n lam^2 (second free cumulant of the bulk block, per unit T); used where the
            bulk is not derived.
        block3: M^2 p3 / d^3, p3 = n lam^3; sets the Marchenko-Pastur(1) profile's mode size where the
            population is not derived.
        semicircle: M sigma_D^2 / d^2 (free diagonal part).
        spike: M ell / o (population eigenvalue of the mean-gradient direction).
        outlier_self, outlier_cross: M Var(O_kk - mean_k O_kk) / O^2 and M E[O_kl^2] / O^2 (C x C outliers),
            as a + b / T: ``outlier_self`` is a, ``outlier_self_T`` is b (likewise cross): a part fixed by
            the weights and a part from the finite batch.
        var_diag, var_off, var_cross: M Var(G_tt) / gd^2, M Var(G_ts) / gd^2, M E[G_cross^2] / gd^2 of the
            Gram without output scale (center-only twin for full batch norm), gd its mean diagonal.
        top_spread_small, top_spread_large: M Var(top_k) / E[top_k]^2, top_k the top eigenvalue of output k's
            centred block, over outputs and draws, at the smallest and the largest reference T/M.
        coupling_small, coupling_large: sqrt(M) (E[top] / E[top_k] - 1), top the top eigenvalue of the whole
            centred C T x C T Gram and top_k that of output k's block (0 for C = 1), at the smallest and the
            largest reference T/M; with full batch norm on the output, of the network's own Gram. The law of
            the Gram is invariant under rotations of the output space, so the whole top is the supremum over
            unit a in R^C of the top of the block of the combined output a . f (each with the law of one
            block), not the largest of the C blocks: an excess of order 1/sqrt(M).
        outlier_excess_small, outlier_excess_large: no normalization on the output only (else 0):
            sqrt(M) (E[lambda_max] / X - 1), X the outlier model (mean outlier times 1 + the Gaussian C x C
            maximum, plus the spike shift) with the variances and means measured on the same draws, at the
            smallest and largest reference T/M: the heavier-than-Gaussian tail of the C x C outlier matrix
            (a W K W^T form in the output weights) and the outliers' coupling to the bulk.
        mean_diag, mean_offdiag: M (E[G_tt] / gram_diag - 1) and M (E[G_ts] / gram_offdiag - 1): the O(1/M)
            corrections of the two mean entries (the finite-width corrections of the kernel mean, not in
            :func:`meanfield.theory.fisher.predict`), from ``MEAN_DRAWS`` cheap draws per reference width (T = 16,
            seeds from ``MEAN_SEED``); a constant, kept only where resolved (2 standard errors), else 0.
            They set the outlier O = gram_diag + (T - 1) gram_offdiag and the bulk scale d = gram_diag -
            gram_offdiag.
        bulk_scale: M (E[tr Sigma_W^2] / derived - 1): the O(1/M) correction of the derived second moment of the
            bulk (:func:`meanfield.finite.fourpoint.bulk_fluctuations` is first order), from unbiased per-draw
            U-statistics of each output block on the same cheap draws, kept only where resolved; 0 where the
            bulk is not derived (layer norm below the output).

    Attributes:
        network: the network the coefficients belong to (width-independent).
        coef: dict name -> (c_inf, c_1).
        reference: (widths, T/M ratios, seeds) of the measurement.
        raw: dict width -> dict name -> measured value at that width.
    """

    network: Network
    coef: dict
    reference: tuple
    raw: dict = field(repr=False, default_factory=dict)

    def at(self, name: str, width: float) -> float:
        """c(M) = c_inf + c_1 / M."""
        c_inf, c_1 = self.coef[name]
        return c_inf + c_1 / float(width)

    def __str__(self) -> str:
        lines = [f"Fluctuations: {self.network.describe()}",
                 f"  measured at widths {self.reference[0]}, T/M {self.reference[1]}, seeds {self.reference[2]}",
                 f"  {'name':<14}{'c_inf':>12}{'c_1':>12}"]
        lines += [f"  {k:<14}{v[0]:>12.4g}{v[1]:>12.4g}" for k, v in self.coef.items()]
        return "\n".join(lines)

    def _repr_latex_(self) -> str:
        rows = r" \\ ".join(rf"\text{{{k.replace('_', ' ')}}} & {v[0]:.4g} & {v[1]:.4g}" for k, v in self.coef.items())
        return rf"$\begin{{array}}{{lrr}} & c_\infty & c_1 \\ {rows} \end{{array}}$"


def _twin(net: Network) -> Network:
    """The same network (same draw for a seed) without a normalization on the output layer."""
    return net.with_(norms=tuple(n for n in net.norms if n.layer != net.depth))


def _block_stats(G: np.ndarray, C: int, T: int) -> dict:
    """Per-draw statistics of a plain-output Gram (CT x CT): outliers, spike, bulk cumulants, entry moments."""
    Pi = np.eye(T) - 1.0 / T
    off = ~np.eye(T, dtype=bool)
    O = np.empty((C, C))
    rows = []
    for k in range(C):
        for l in range(C):
            O[k, l] = G[k * T:(k + 1) * T, l * T:(l + 1) * T].sum() / T
    for k in range(C):
        B = G[k * T:(k + 1) * T, k * T:(k + 1) * T]
        gbar = B.mean()
        r = B.mean(axis=1)
        r = r - r.mean()
        Bc = Pi @ B @ Pi
        vdiag_c, voff_c, diag_c = float(np.diag(Bc).var()), float(Bc[off].var()), float(np.diag(Bc).mean())
        top_c = float(np.linalg.eigvalsh(Bc)[-1])
        diag_scale = np.trace(B) / T
        spike = 0.0
        if gbar > 0.05 * diag_scale:  # a mean direction to speak of (not, e.g., tanh without bias)
            spike = float(r.var() / gbar)
            Bc = Bc - np.outer(r, r) / gbar
        ev = np.sort(np.linalg.eigvalsh(Bc))[(2 if spike else 1):]  # drop the null directions (1, spike)
        m1, m2, m3 = (float(np.mean(ev**p)) for p in (1, 2, 3))
        rows.append(dict(k1=m1, k2=m2 - m1**2, k3=m3 - 3 * m1 * m2 + 2 * m1**3, spike=spike, gbar=float(gbar),
                         diag=float(np.diag(Bc).mean()), vdiag=float(np.diag(Bc).var()),
                         voff=float(Bc[off].var()), vdiag_c=vdiag_c, voff_c=voff_c, diag_c=diag_c, top_c=top_c, ediag=float(np.diag(B).mean()), odiag=float(B[off].mean()),
                         vdiag_raw=float(np.diag(B).var()), voff_raw=float(B[off].var())))
    cross = []
    for k in range(C):
        for l in range(C):
            if k != l:
                cross.append(G[k * T:(k + 1) * T, l * T:(l + 1) * T])
    return dict(rows=rows, O=O, cross=cross)


def _measure_width(net: Network, width: int, seeds: tuple, ratios: tuple) -> dict:
    from ..sampled.sampling import sample

    twin = _twin(net)
    last = net.norm_at(net.depth)
    centred = isinstance(last, BatchNorm)
    C = net.outputs
    per_T = {}
    se: dict = {}
    for ratio in ratios:
        T = max(min(int(round(ratio * width)), _MAX_CT // C), 8)  # C T x C T Grams stay small
        acc = []
        for seed in seeds:
            G = sample(twin, width, T, seed, gram=True).gram
            acc.append((_block_stats(G, C, T), G))
        per_T[T] = acc
    T2, T1 = max(per_T), min(per_T)

    def mean_rows(T, key):
        return float(np.mean([r[key] for st, _ in per_T[T] for r in st["rows"]]))

    d = mean_rows(T2, "k1")
    o = mean_rows(T2, "gbar")
    # free cumulants of the centred, spike-removed block: kappa_2 = sigma_D^2 + T p2, kappa_3 = T^2 p3;
    # the Wishart part's diagonal has variance 2 p2, the rest of the diagonal variance is the free part D
    v_diag = mean_rows(T2, "vdiag") / d**2
    p2 = (mean_rows(T2, "k2") / d**2 - v_diag) / (T2 - 2)
    s2 = v_diag - 2 * p2
    p3 = mean_rows(T2, "k3") / d**3 / T2**2
    out = dict(block2=width * p2, block3=width**2 * p3, semicircle=width * s2)
    for key, T in (("top_spread_small", T1), ("top_spread_large", T2)):
        tops = np.array([r["top_c"] for st, _ in per_T[T] for r in st["rows"]])
        out[key] = width * float(tops.var(ddof=1) / tops.mean() ** 2) if len(tops) > 1 else 0.0
    full_bn = isinstance(last, BatchNorm) and not last.center_only
    for key, T in (("coupling_small", T1), ("coupling_large", T2)):
        out[key] = 0.0
        if C > 1:
            if full_bn:
                # the per-output scales 1/sigma_k^2 break the rotation invariance and select outputs: measure
                # the excess of the whole top over the block tops on the network itself
                grams = [sample(net, width, T, seed, gram=True).gram for seed in seeds]
            else:
                centre = np.kron(np.eye(C), np.eye(T) - 1.0 / T)
                grams = [centre @ G @ centre for _, G in per_T[T]]
            whole = np.mean([np.linalg.eigvalsh(G)[-1] for G in grams])
            blocks = np.mean([np.linalg.eigvalsh(G[k * T:(k + 1) * T, k * T:(k + 1) * T])[-1]
                              for G in grams for k in range(C)])
            out[key] = math.sqrt(width) * float(whole / blocks - 1.0)
    from ..theory.fisher import predict

    # the mean entries: many cheap draws (a small batch; the entry means do not depend on T), since the
    # per-draw relative spread is O(1/sqrt M) against an O(1/M) signal
    tm = predict(twin, width, _MEAN_T)
    draws = [sample(twin, width, _MEAN_T, MEAN_SEED + i, gram=True) for i in range(MEAN_DRAWS)]
    for name, values, mf in (("mean_diag", [x.gram_diag for x in draws], float(tm.gram_diag)),
                             ("mean_offdiag", [x.gram_offdiag for x in draws], float(tm.gram_offdiag))):
        values = np.asarray(values, dtype=float)
        ok = abs(mf) > 1e-12 * abs(float(tm.gram_diag))  # gram_offdiag is 0 for odd activations without bias
        out[name] = width * (float(values.mean()) / mf - 1.0) if ok else 0.0
        se[name] = width * float(values.std(ddof=1) / math.sqrt(len(values))) / abs(mf) if ok else math.inf
    out["bulk_scale"], se["bulk_scale"] = 0.0, math.inf
    if not twin.norms:
        from .fourpoint import bulk_estimates, bulk_fluctuations

        derived = bulk_fluctuations(twin, width).trace_sigma2
        T = _MEAN_T
        values = np.array([np.mean([bulk_estimates(x.gram[k * T:(k + 1) * T, k * T:(k + 1) * T] * T)[0]
                                    for k in range(C)]) for x in draws]) / derived
        out["bulk_scale"] = width * (float(values.mean()) - 1.0)
        se["bulk_scale"] = width * float(values.std(ddof=1) / math.sqrt(len(values)))
    spike = mean_rows(T2, "spike")
    out["spike"] = width * spike / o if o > 0 and spike > 0 else 0.0
    # outliers and entry variances at T2 (output scale excluded)
    Os, selfs, crosses, vd, vo, vx = [], [], [], [], [], []
    for st, G in per_T[T2]:
        O = st["O"]
        Obar = float(np.mean(np.diag(O)))
        Os.append(Obar)
        selfs.append(float(np.var(np.diag(O))) * C / max(C - 1, 1) / Obar**2 if C > 1 else 0.0)
        if C > 1:
            crosses.append(float(np.mean(O[~np.eye(C, dtype=bool)] ** 2)) / Obar**2)
        key_d, key_o = ("vdiag_c", "voff_c") if centred else ("vdiag_raw", "voff_raw")
        gd = np.mean([r["diag_c" if centred else "ediag"] for r in st["rows"]])
        vd.append(np.mean([r[key_d] for r in st["rows"]]) / gd**2)
        vo.append(np.mean([r[key_o] for r in st["rows"]]) / gd**2)
        if C > 1:
            Pi = np.eye(T2) - 1.0 / T2
            cr = [(Pi @ X @ Pi if centred else X) for X in st["cross"]]
            vx.append(float(np.mean([np.mean(X**2) for X in cr])) / gd**2)
    # outlier fluctuations at both T's, split as a + b/T
    variances: dict = {}
    for name in ("outlier_self", "outlier_cross"):
        vals = variances[name] = {}
        for T in (T1, T2):
            xs = []
            for st, _ in per_T[T]:
                O = st["O"]
                Obar = float(np.mean(np.diag(O)))
                if C == 1:
                    xs.append(0.0)
                elif name == "outlier_self":
                    xs.append(float(np.var(np.diag(O))) * C / (C - 1) / Obar**2)
                else:
                    xs.append(float(np.mean(O[~np.eye(C, dtype=bool)] ** 2)) / Obar**2)
            vals[T] = float(np.mean(xs))
        b = 0.0 if T1 == T2 else (vals[T1] - vals[T2]) / (1.0 / T1 - 1.0 / T2)
        out[name] = width * (vals[T2] - b / T2)
        out[name + "_T"] = width * b
    out["var_diag"] = width * float(np.mean(vd))
    out["var_off"] = width * float(np.mean(vo))
    out["var_cross"] = width * float(np.mean(vx)) if vx else 0.0
    # no normalization on the output: what the outlier model (mean outlier, Gaussian C x C fluctuations with
    # the variances just measured, spike shift) leaves of the sampled top at the same draws
    for key, T in (("outlier_excess_small", T1), ("outlier_excess_large", T2)):
        out[key] = 0.0
        if not centred:
            Obar = np.mean([np.mean(np.diag(st["O"])) for st, _ in per_T[T]])
            spike = T * np.mean([r["spike"] for st, _ in per_T[T] for r in st["rows"]])
            model = Obar * (1.0 + expected_max_symmetric(C, variances["outlier_self"][T],
                                                          variances["outlier_cross"][T])) + spike
            top = np.mean([np.linalg.eigvalsh(G)[-1] for _, G in per_T[T]])
            out[key] = math.sqrt(width) * float(top / model - 1.0)
    out["_se"] = se
    return out


_MEAN_NAMES = ("mean_diag", "mean_offdiag", "bulk_scale")


def _significant_constant(values: list, ses: list, z: float = 2.0) -> float:
    """Inverse-variance mean of per-width estimates of an O(1/M) mean coefficient, or 0 when |mean| < z se.

    M (E X / X_mf - 1) is a difference of means whose noise grows like sqrt(M) while the signal is O(1): at
    the reference widths it is often unresolved, and extrapolating two noisy values in 1/M (c_inf = 2 y_b - y_a
    for widths M, 2M) multiplies the noise. A constant fit, kept only where it is resolved (2 standard errors),
    is the stable choice; the mean correction is O(1/M) either way.
    """
    w = [1.0 / s**2 for s in ses if math.isfinite(s) and s > 0]
    if len(w) != len(values):
        return 0.0
    mean = sum(wi * v for wi, v in zip(w, values)) / sum(w)
    return mean if abs(mean) > z / math.sqrt(sum(w)) else 0.0


@functools.lru_cache(maxsize=64)
def measure_fluctuations(net: Network, widths: tuple = REFERENCE_WIDTHS, seeds: tuple = REFERENCE_SEEDS,
                         ratios: tuple = REFERENCE_RATIOS) -> Fluctuations:
    """c(M) = c_inf + c_1/M for each fluctuation coefficient, from sampled Grams at two reference widths.

    For each width M_r in ``widths`` and T = ratio * M_r, the exact Gram of the network *without its
    output normalization* (the same draw) is sampled for each seed; per output block it yields the outlier
    matrix O_kl = 1^T G_kl 1 / T, the spike ell = Var_t(row mean) / mean (population eigenvalue of the
    mean-gradient direction, removed before the next step), and the first three free cumulants of the
    doubly centred rest, from which the bulk coefficients follow: kappa_2 = sigma_D^2 + T p2,
    kappa_3 = T^2 p3, with sigma_D^2 = (diagonal variance) - 2 p2 (the Wishart part's own diagonal
    variance is 2 p2). Cost: a few seconds per network; cached.

    Args:
        net: the network.
        widths: two (or more; the first and last are used) reference widths.
        seeds: seeds of the reference draws (keep them disjoint from the seeds you test with).
        ratios: T/M ratios of the reference batches (the largest is used for the bulk cumulants).

    Returns:
        :class:`Fluctuations`.

    Example:
        >>> fl = measure_fluctuations(Network(2, "relu", 2, 0), widths=(16, 32), seeds=(1000, 1001, 1002))
        >>> sorted(fl.coef) == sorted(_NAMES)
        True
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    widths = tuple(check_int("widths", w, minimum=8) for w in widths)
    if len(widths) < 2 or widths[0] == widths[-1]:
        raise InvalidArgument("widths", widths, "at least two different reference widths")
    seeds = tuple(check_int("seeds", s, minimum=0) for s in seeds)
    ratios = tuple(check_real("ratios", r, minimum=0, strict_min=True) for r in ratios)
    if not ratios:
        raise InvalidArgument("ratios", ratios, "at least one T/M ratio")
    raw = {w: _measure_width(net, w, seeds, ratios) for w in (widths[0], widths[-1])}
    a, b = widths[0], widths[-1]
    coef = {}
    for name in _NAMES:
        ya, yb = raw[a][name], raw[b][name]
        if name in _MEAN_NAMES:
            coef[name] = (_significant_constant([ya, yb], [raw[a]["_se"][name], raw[b]["_se"][name]]), 0.0)
            continue
        c_1 = (ya - yb) / (1.0 / a - 1.0 / b)
        coef[name] = (yb - c_1 / b, c_1)
    return Fluctuations(net, coef, (widths, ratios, seeds), raw)


# ------------------------------------------------------------------------------------------------------------------
# the prediction
# ------------------------------------------------------------------------------------------------------------------
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

    twin = _twin(net)
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
    twin = _twin(net)
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
