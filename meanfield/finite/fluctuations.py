"""Fluctuation coefficients of the dual Gram measured on sampled networks at small reference widths.

:func:`measure_fluctuations` samples the exact Gram of a network (without its output normalization) at
two reference widths and extrapolates each O(1/M) coefficient as c(M) = c_inf + c_1 / M
(:class:`Fluctuations`); the random-matrix model of :mod:`meanfield.finite.model` uses them wherever
the four-point rules of :mod:`meanfield.finite.fourpoint` do not derive them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidArgument, check_int, check_real
from ..spec.network import BatchNorm, Network
from .freeprob import expected_max_symmetric

__all__ = ["Fluctuations", "measure_fluctuations", "plain_output_twin", "REFERENCE_WIDTHS", "REFERENCE_RATIOS",
           "REFERENCE_SEEDS", "MEAN_DRAWS", "MEAN_SEED"]

REFERENCE_WIDTHS = (64, 128)
_MAX_CT = 1024
REFERENCE_RATIOS = (0.25, 2.0)  # T / M of the reference batches: bulk cumulants at the largest, block spread at both
REFERENCE_SEEDS = tuple(range(1000, 1024))
MEAN_DRAWS = 200  # cheap draws (T = 16) per reference width for the O(1/M) corrections of the mean entries
MEAN_SEED = 2000  # their seeds: MEAN_SEED .. MEAN_SEED + MEAN_DRAWS - 1
_MEAN_T = 16


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


def plain_output_twin(net: Network) -> Network:
    """The same network (same draw for a seed) without a normalization on the output layer.

    Example:
        >>> plain_output_twin(Network(2, "relu", 2, 0, norms=[BatchNorm("last")])).norms
        ()
    """
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

    twin = plain_output_twin(net)
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
