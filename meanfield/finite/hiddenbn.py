"""Batch norm on a hidden layer: O(1/M) corrections of E G_tt, E G_ts, m, kappa_1, kappa_2 and s, derived.

A batch norm on layer l = L - 1 (the last hidden layer, plain layers elsewhere; on layer 1 the layer below is the
inputs, K = x.x / M_0 with no NTK below) normalizes each unit over the T samples: z_a = Pi u_a / sigma_a,
sigma_a^2 = |Pi u_a|^2 / T (full), or z_a = Pi u_a (``center_only``), and h_a = phi(z_a). Its Jacobian on unit a is
A_a = (1 / sigma_a)(Pi - z_a z_a^T / T) (full) or Pi (centre only).

Exact conditioning. Given the layers below (realized kernel K = H^T H / M_{l-1} of layer l - 1), the rows w_a of
W^l are i.i.d. N(0, sigma_w^2 / M_{l-1} I), so the M_l units are i.i.d. and g_a = Pi H^T w_a ~ N(0, Omega) exactly,
Omega = sigma_w^2 Pi K Pi (the bias drops out). With the output weights' expectation taken exactly,

    E[T G_kk | below] = 1 + M_l F(Omega) + sigma_w'^2 E_g[psi o (A Theta' A)]
                      + sigma_w'^2 (sigma_w^2 / M_{l-1})^2 E_g[psi o (A Z A)],

F(Omega)_ts = E_g[phi(z_t) phi(z_s)], psi_ts = phi'(z_t) phi'(z_s) (o the entrywise product), sigma_w'^2 the output
layer's weight variance, Theta' = M_{l-1} K + sigma_w^2 N (N = tr X / M_{l-1}, X_uv = diag_b(phi'_b(u) phi'_b(v)
Theta^{l-1}_bb(u, v)): the realized average of the NTK below, as in :mod:`meanfield.finite.corrections`), and the
last line is Stein's lemma twice on the row w_a (S_uv = w_a^T X_uv w_a inside Theta^l_aa): with Hermite weights at
Omega = v Pi, Z_uv = g^T Y^uv g / v^2 - tr(Pi Y^uv) / v, Y^uv_ab = h_a^T X_uv h_b the sandwiched NTK
(:func:`meanfield.finite.fourworld.realized_world`, as for a full batch norm on the output).

Mean field puts K and N at their means (K_bar, N_bar exchangeable, Omega = v Pi, z uniform on its sphere, sigma
independent of z): exactly ``predict``'s values. The O(1/M) terms:

1. the exchangeable mean shifts of K and N (:func:`meanfield.finite.corrections.kernel_mean_shift` of layer l - 1 and
   :func:`meanfield.finite.corrections.ntk_mean_shift` of the plain net below minus it), first order (full batch norm:
   F and A Omega A do not depend on the scale of Omega, so only A Theta' A moves, by (1 + dD'/D') v / (v + dv));
2. the second order in the fluctuations of (K, N) (Jensen in the law of z, and the coupling of the law of z with
   Theta'), over the Gaussian surrogate with the covariances of every pattern of equal samples
   (:func:`meanfield.finite.fourworld.realized_world`, expanded to T x T by label patterns);
3. the Stein term above.

By default (``method="exact"``) every term is deterministic: Price's theorem to second order in the law of g, with the
derivatives on Hermite weights at Omega = v Pi (a = g / v): d/deps E f = (1/2) E[f (a^T dOmega a - tr(Pi dOmega) / v)],
d^2/deps^2 E f = (1/4) E[f H4], H4 = Q^2 - 2 tau Q - 4 a^T dOmega dOmega a / v + tau^2 + 2 tr(dOmega dOmega) / v^2
(Q = a^T dOmega a, tau = tr(dOmega) / v), the fluctuation's average taken exactly (its covariance tensors over the
label patterns contracted with z and Pi), g = sqrt(v beta) z with beta = sigma^2 / v ~ chi^2_{T-1} / T independent of
z, and every expectation over z is of phi or phi' of one or two coordinates times a polynomial of degree <= 4 in the
others: :mod:`meanfield.finite.spherebn` conditions on those coordinates (the rest is uniform on a smaller sphere:
exact moments) and integrates them by fixed quadrature split at relu's breaks (0.05-0.2 s at T = 8-16; converged to
1e-14 relative between 40 and 80 nodes per angle); an activation with kinks away from 0 (hard tanh, a shifted relu)
on :mod:`meanfield.finite.spherecut`'s rule split at them (every derivative in the law of g is a Hermite weight, so
the kinks need no boundary terms, only the split). Needs T >= 4 and activations whose kinks are known
(:func:`default_method`). ``method="monte-carlo"`` keeps the first implementation as the cross-check: 1. and 2. as
differences of the same integrand at the same draws of g (common random numbers: g = B chol(Omega / v) c with one draw
c ~ N(0, v I) for every kernel; 2. antithetic, the fluctuation scaled by eps and the second difference divided by
eps^2; eps <= 1/2, less on a draw where Omega would come within half of v of singular: where phi' jumps (relu) the
second difference of a step has a variance of order eps^-3), 3. an average over g; fixed seed, standard errors
returned (``monte_carlo_sem``; 40000 draws: about 0.1% of E G_tt for tanh, 0.25% for relu at M = 64, T = 16). Its
finite step leaves an O(eps^2 / M^2) bias (a few percent of term 2 at M = 64, eps = 1/2; 3% of the layers below's
share of s), which the exact terms do not have. Between outputs E G_kl = 0.

The entry variances (s; written here for l = 2; on layer 1 there is no S_ac, deeper see below). G_kl = (1/T)[delta_kl
(1 + h.h) + sum_ac W_ka W_lc X_ac], X_ac(t, s) = phi'_a(t) phi'_c(s) (A_a Theta^2_ac A_c)(t, s), Theta^2_ac =
delta_ac M_1 K + S_ac. Each entry's variance, relatively 1/M, summed over the T^2 entries (relatively T/M in s), has
three parts, all at the mean law:

* the units: given the layer below the units are i.i.d., so M_2 Var(phi_t phi_s + sigma_w'^2 / M_2 X_aa(t, s)) (S_aa
  at its mean);
* the output weights (Wick on W): (sigma_w'^2 / M_2)^2 (sum_ac X_ac(t, s)^2 + sum_ac X_ac(t, s) X_ac(s, t)), with
  M_2 E X_aa^2 on the diagonal and, for a != c, E[X_ac(t, s)^2] = sum U(t, t; t1, t2) U(s, s; s1, s2)
  Sigma4(t1, s1, t2, s2): U(t, s; t1, t2) = E[phi'(z_t) A(t, t1) phi'(z_s) A(s, t2)] over one unit's normalized law and
  Sigma4 = E[S_ac(t1, s1) S_ac(t2, s2)] = (sigma_w^4 / M_1) E[phi'phi'phi'phi'] E[Theta^1 Theta^1] (four-sample
  Gaussian integrals of layer 1; Theta^1 = 1 + x.x with its own spread; conditioning on g_a, g_c changes Sigma4 by
  O(1/M)); between outputs only the first sum;
* the layers below: Var over the realized (K, N) of E[G | K, N], the square of its first variation (two independent
  draws of g per draw of the fluctuation).

Then s = [C sum_ts (E G(t, s)^2 + Var G_kk(t, s)) + C (C - 1) sum_ts E G_kl(t, s)^2] / P with the corrected means.
Measured against sampled networks (``meanfield/notes/corrections.md``, section 8) the means are within 2.7 standard
errors everywhere (2.0 but for relu at M = 32, T = 8); the corrected s is 1.5% low at M = 64, T = 16 (mean field:
17-22% low) and 0.1-0.5% at M = 128: what is left is the next order of the entry variances, O(T / M^2) in s (5-7% at
M = 32, T = 8).

Below a deeper plain stack (l >= 3) Sigma4 = (sigma_w^2 / M_{l-1})^2 Phi^{l-1}, :mod:`meanfield.finite.ntkspread`. Not
derived: inputs with a negative mean product. A batch norm below layer L - 1 is :mod:`meanfield.finite.deepbn`'s.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from ..spec.network import BatchNorm, Network
from ..theory.fisher import predict
from .bnpinned import REP, embed, mom2_at, outer_r_at, pinned, sandwich, sphere_expect
from .bnstep import (BatchNormLayer, UnitLaw, batch_norm_from_world, pair_functions, pinned_quadratic,
                     unit_pair_classes, unit_slope_classes, world_classes)
from .corrections import kernel_mean_shift, ntk_mean_shift
from .exchangeable import Exchangeable, contract
from .fourworld import class_tensor, four_sample_mean, inputs_world, realized_world
from .ntkspread import ntk_spread

__all__ = ["HiddenBatchNormTerms", "hidden_batch_norm_terms", "finite_width_stats", "below_network", "default_method",
           "DRAWS", "CORRECTED", "BatchNormLayer", "batch_norm_layer",
           "cross_unit_moments", "cross_unit_spread", "cross_unit_spread_classes"]

DRAWS = 40000      # Monte Carlo draws of each term
SEED = 20261207    # their fixed seed: predictions are reproducible
EPS = 0.5          # the largest scale of the fluctuation in the second differences (module docstring)
CORRECTED = frozenset({"gram_diag", "gram_offdiag", "m", "kappa1", "kappa2"})


@dataclass(frozen=True)
class HiddenBatchNormTerms:
    """E G_tt, E G_ts, m, kappa_1, kappa_2 and s with their O(1/M) terms: batch norm on the last hidden layer.

    Attributes:
        network, width, samples: what was computed (M, T).
        mean_field_diag, mean_field_offdiag, m_mean_field, s_mean_field: ``predict``'s values.
        shift_diag, shift_offdiag: term 1 (the exchangeable mean shifts of the layer below), Gram units.
        second_diag, second_offdiag: term 2 (second order in the realized kernel and NTK average below).
        stein_diag, stein_offdiag: term 3 (Stein on the normalized layer's rows).
        monte_carlo_sem: standard errors of the total correction of (E G_tt, E G_ts) and of s (None where s is not
            corrected).
        mean_diag, mean_offdiag, m, kappa1, kappa2: corrected.
        s_units, s_below, s_cross: the entry-variance parts of s (None if not derived): the normalized units'
            own variance with the output weights' share (same output), the layers below's (the realized K, N), and
            E G_kl^2 between outputs.
        s: corrected (the squared corrected means plus those parts).
        includes_1_over_M: the statistics above that include their O(1/M) terms.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.
        draws: Monte Carlo draws per term (0: the exact quadrature, standard errors 0).

    Example:
        >>> t = hidden_batch_norm_terms(Network(3, "tanh", 2, 0.1, norms=["batch:2"]), 64, 8, draws=400)
        >>> bool(abs(t.mean_diag / t.mean_field_diag - 1) < 0.05)
        True
    """

    network: Network
    width: int
    samples: int
    mean_field_diag: float
    mean_field_offdiag: float
    m_mean_field: float
    s_mean_field: float
    shift_diag: float
    shift_offdiag: float
    second_diag: float
    second_offdiag: float
    stein_diag: float
    stein_offdiag: float
    monte_carlo_sem: tuple
    mean_diag: float
    mean_offdiag: float
    m: float
    kappa1: float
    kappa2: float
    s_units: float | None
    s_below: float | None
    s_cross: float | None
    s: float
    includes_1_over_M: frozenset
    P: int
    alpha: float
    draws: int


def _placement(net: Any) -> BatchNorm | None:
    """The batch norm this module covers (on layer L - 1 >= 1, the only normalization), or None."""
    if not isinstance(net, Network) or net.is_symbolic or len(net.norms) != 1 or net.depth < 2:
        return None
    norm = net.norms[0]
    return norm if isinstance(norm, BatchNorm) and norm.layer == net.depth - 1 else None


def below_network(net: Network) -> Network:
    """The plain network of the layers 1..l up to the batch-normalized layer l (its output layer is layer l).

    Example:
        >>> below_network(Network(4, "tanh", (1, 2, 3, 4), 0.1, norms=["batch:3"])).describe()
        'L=3 tanh sigma_w2=(1, 2, 3) sigma_b2=0.1 C=1 alphas=1 norms=none'
    """
    if _placement(net) is None or net.depth < 3:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network of depth >= 3 whose only normalization is a batch norm on layer "
                              "L - 1")
    l = net.depth - 1
    acts = net.activation[: l - 1]
    return Network(l, acts if len(acts) > 1 else acts[0], net.sigma_w2[:l], net.sigma_b2[:l], outputs=1,
                   alphas=net.alphas[:l], norms=(), input_q1=net.input_q1, input_q2=net.input_q2)


def default_method(net: Network, samples: int) -> str:
    """"exact" where the sphere quadrature applies (T >= 4; the activation's kinks known), else "monte-carlo".

    Example:
        >>> default_method(Network(3, "relu", 2, 0.1, norms=["batch-center:2"]), 3)
        'monte-carlo'
    """
    if _placement(net) is None:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network whose only normalization is a batch norm on layer L - 1")
    samples = check_int("samples", samples, minimum=1)
    ok = samples >= 4 and Unit.of(net.phi(net.depth - 1)).kinks is not None
    return "exact" if ok else "monte-carlo"


def _check(net: Any, width: Any, samples: Any, draws: Any) -> tuple[int, int, int]:
    if _placement(net) is None:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network of depth >= 2 whose only normalization is a batch norm on layer "
                              "L - 1")
    M = check_int("width", width, minimum=1)
    # E[1 / sigma^4] enters (full batch norm): finite for T - 1 > 4
    T = check_int("samples", samples, minimum=3 if net.norms[0].center_only else 6)
    return M, T, check_int("draws", draws, minimum=100)


@functools.lru_cache(maxsize=32)
def hidden_batch_norm_terms(net: Network, width: int, samples: int, *, draws: int = DRAWS,
                            method: str = "exact") -> HiddenBatchNormTerms:
    """E G = mean field + mean shifts (1.) + second order below (2.) + Stein (3.): batch norm on layer L - 1.

    Args:
        net: a numeric network of depth >= 2 whose only normalization is a batch norm (full or centre-only) on layer
            L - 1, inputs with a non-negative mean product (input_q2 >= 0).
        width: M.
        samples: T (at least 6 for a full batch norm: E[1 / sigma^4] enters; 3 centre-only, 4 for the exact method).
        draws: Monte Carlo draws per term (fixed seed; ``method="monte-carlo"`` only).
        method: "exact" (default: every expectation reduced to the joint law of one or two coordinates of the
            normalized unit on its sphere and integrated by fixed quadrature, :mod:`meanfield.finite.spherebn`, split at
            kinks away from 0 by :mod:`meanfield.finite.spherecut`; T >= 4, activations with known kinks) or
            "monte-carlo" (the cross-check; its second differences carry an O(EPS^2 / M^2) bias, a few percent of
            term 2 at M = 64, EPS = 1/2).

    Returns:
        :class:`HiddenBatchNormTerms`.

    Raises:
        InvalidArgument: another placement, a symbolic network, a negative kernel overlap, a width too small for the
            expansion.

    Example:
        >>> net = Network(3, "relu", 2, 0.1, outputs=2, norms=["batch-center:2"])
        >>> t = hidden_batch_norm_terms(net, 64, 8, draws=400)
        >>> t.m == 2 * 8 * t.mean_diag / t.P
        True
    """
    M, T, draws = _check(net, width, samples, draws)
    if method not in ("exact", "monte-carlo"):
        raise InvalidArgument("method", method, '"exact" or "monte-carlo"')
    exact = method == "exact"
    if exact and default_method(net, T) != "exact":
        raise InvalidArgument("method", method, 'method="monte-carlo" here (the exact quadrature needs T >= 4 and an '
                              "activation whose kinks are known)")
    base = predict(net, M, T)
    terms = _exact_terms(net, M, T) if exact else _terms(net, M, T, draws, SEED)
    d1, o1, d2, o2, d3, o3, sd, so, below_var, below_sem = terms
    gd, go = float(base.gram_diag), float(base.gram_offdiag)
    mean_d, mean_o = gd + d1 + d2 + d3, go + o1 + o2 + o3
    C, P, alpha = net.outputs, int(base.P), float(base.alpha)
    s, parts, s_sem, corrected = float(base.s), (None, None, None), None, CORRECTED
    if net.depth >= 2:     # every depth (deeper than 3 through ntkspread's Phi)
        same, cross, same_sem, cross_sem = _entry_terms(net, M, T, draws, SEED, exact)
        parts = (C * same / P, C * below_var / P, C * (C - 1) * cross / P)
        s = C * (T * mean_d**2 + T * (T - 1) * mean_o**2) / P + sum(parts)
        s_sem = math.sqrt((C * same_sem) ** 2 + (C * below_sem) ** 2 + (C * (C - 1) * cross_sem) ** 2) / P
        corrected = CORRECTED | {"s"}
    return HiddenBatchNormTerms(net, M, T, gd, go, float(base.m), float(base.s), d1, o1, d2, o2, d3, o3,
                                (sd, so, s_sem), mean_d, mean_o, C * T * mean_d / P, T * mean_d / (alpha * M),
                                T * mean_o / (alpha * M), *parts, s, corrected, P, alpha, 0 if exact else draws)


def _world_below(net: Network, width: int) -> tuple:
    """(World, M_{l-1} x the mean shift of K, the mean shift of T E[G] of the plain net below) under layer l = L - 1.

    On layer 1 the layer below is the inputs: K = x.x / M_0 (unbiased; Cov(K_ab, K_cd) = (Q_ac Q_bd + Q_ad Q_bc) / M_0
    for the inputs' kernel Q), and there is no NTK below (N = 0, Y = 0)."""
    l = net.depth - 1
    if l >= 2:
        below = below_network(net)
        return realized_world(below, width), kernel_mean_shift(below, width)[l - 1], ntk_mean_shift(below, width)
    return inputs_world(net, width), (0.0, 0.0), (0.0, 0.0)


def _diag_off(G: np.ndarray) -> np.ndarray:
    """(n, T, T) -> (n, 2): the mean diagonal and mean off-diagonal entry of each matrix."""
    T = G.shape[-1]
    d = np.einsum("nii->n", G)
    return np.stack([d / T, (G.sum((1, 2)) - d) / (T * (T - 1))], axis=1)


@functools.lru_cache(maxsize=32)
def _terms(net: Network, width: int, samples: int, draws: int, seed: int) -> tuple:
    """Terms 1.-3. of (E G_tt, E G_ts) by Monte Carlo (module docstring) and the standard error of their sum."""
    T, L = samples, net.depth
    l = L - 1
    center = net.norms[0].center_only
    widths = net.widths(width)
    M1, M2 = widths[l - 1], widths[l]
    sw, sw_out = float(net.sigma_w2[l - 1]), float(net.sigma_w2[L - 1])
    unit = Unit.of(net.phi(l))
    w, shift_k, shift_theta = _world_below(net, width)
    Kbar = (w.k[0] - w.k[1]) * np.eye(T) + w.k[1]
    Nbar = (w.n[0] - w.n[1]) * np.eye(T) + w.n[1]
    dk = [float(shift_k[0]) / M1, float(shift_k[1]) / M1]
    dn = [(float(shift_theta[i]) - float(shift_k[i])) / sw for i in (0, 1)]
    dKm = (dk[0] - dk[1]) * np.eye(T) + dk[1]
    dNm = (dn[0] - dn[1]) * np.eye(T) + dn[1]
    Pi = np.eye(T) - 1.0 / T
    B = np.linalg.svd(Pi)[0][:, : T - 1]      # orthonormal basis of the complement of 1
    v = sw * (w.k[0] - w.k[1])                # Omega_bar = v Pi
    base = predict(net, width, samples)
    hc = T * ((float(base.gram_diag) - float(base.gram_offdiag)) * np.eye(T) + float(base.gram_offdiag))

    def normalize(g: np.ndarray) -> tuple:
        """(z, A) of a batch of centred pre-activations g (n, T)."""
        if center:
            return g, np.broadcast_to(Pi, g.shape + (T,))
        g2 = (g * g).sum(-1)[:, None]
        z = g * np.sqrt(T / g2)
        return z, np.sqrt(T / g2)[:, :, None] * (Pi - z[:, :, None] * z[:, None, :] / T)

    def features(c: np.ndarray) -> tuple:
        """phi(z) phi(z)^T, phi'(z) phi'(z)^T and A at g = B c."""
        z, A = normalize(c @ B.T)
        f, d = np.asarray(unit.f(z), dtype=float), np.asarray(unit.df(z), dtype=float)
        return f[:, :, None] * f[:, None, :], d[:, :, None] * d[:, None, :], A

    def gram(K: np.ndarray, N: np.ndarray, c: np.ndarray) -> np.ndarray:
        """T E[G | K, N, g] - hc at g = B chol(Omega / v) c, c ~ N(0, v I) (common random numbers across K; hc a
        constant control variate)."""
        try:
            chol = np.linalg.cholesky(sw * (B.T @ K @ B) / v)
        except np.linalg.LinAlgError:
            raise InvalidArgument("width", width, "a width where the realized kernel's fluctuations are small "
                                  "against its spread K_tt - K_ts (the O(1/M) expansion)") from None
        ff, dd, A = features((chol @ c[..., None])[..., 0])
        return 1 - hc + M2 * ff + sw_out * dd * (A @ (M1 * K + sw * N) @ np.swapaxes(A, -1, -2))

    # the T-world: (K_uv, N_uv for u <= v) and its covariance by label patterns
    tri = [(a, b) for a in range(T) for b in range(a, T)]
    nt = len(tri)
    index = {p: i for i, p in enumerate(((a, b) for a in range(4) for b in range(a, 4)))}
    cov = np.zeros((2 * nt, 2 * nt))
    for i, (a, b) in enumerate(tri):
        for j, (c, e) in enumerate(tri):
            seen: dict = {}
            lab = tuple(seen.setdefault(x, len(seen)) for x in (a, b, c, e))
            p1, p2 = index[(min(lab[:2]), max(lab[:2]))], index[(min(lab[2:]), max(lab[2:]))]
            cov[i, j], cov[i, nt + j] = w.cov[p1, p2], w.cov[p1, 10 + p2]
            cov[nt + i, j], cov[nt + i, nt + j] = w.cov[10 + p1, p2], w.cov[10 + p1, 10 + p2]
    vals, vecs = np.linalg.eigh(cov)
    root = vecs * np.sqrt(np.clip(vals, 0, None))     # clip: rounding-level negative eigenvalues only
    iu = np.triu_indices(T)

    def sym(x: np.ndarray) -> np.ndarray:
        out = np.zeros(x.shape[:-1] + (T, T))
        out[..., iu[0], iu[1]] = x
        return out + np.swapaxes(out, -1, -2) - out * np.eye(T)

    # Stein (3.): Y^uv_ab over T^4 label patterns, g ~ N(0, v Pi)
    Y = class_tensor(T, lambda lab: w.y[(0, lab[1])][lab[2], lab[3]])
    trY = np.einsum("ab,uvab->uv", Pi, Y)
    Ymat = Y.reshape(T * T, T * T)
    rng = np.random.default_rng(seed)
    parts, below_var = [], []
    chunk = 2000
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        c = rng.standard_normal((n, T - 1)) * math.sqrt(v)
        Kb, Nb = np.broadcast_to(Kbar, (n, T, T)), np.broadcast_to(Nbar, (n, T, T))
        # 1.: first order in the (exchangeable, O(1/M)) mean shifts, central difference at the same draws
        one = (gram(Kb + dKm, Nb + dNm, c) - gram(Kb - dKm, Nb - dNm, c)) / 2
        # 2.: second order in the fluctuation, antithetic at the same draws, scaled by eps <= EPS per draw so that
        # Omega stays positive definite (B^T (K_bar +- eps dK) B >= (K_tt - K_ts) / 2)
        xi = rng.standard_normal((n, 2 * nt)) @ root.T
        dK, dN = sym(xi[:, :nt]), sym(xi[:, nt:])
        top = np.abs(np.linalg.eigvalsh(B.T @ dK @ B)).max(axis=-1)
        eps = np.minimum(EPS, 0.5 * (w.k[0] - w.k[1]) / top)[:, None, None]
        two = ((gram(Kb + eps * dK, Nb + eps * dN, c) + gram(Kb - eps * dK, Nb - eps * dN, c)) / 2
               - gram(Kb, Nb, c)) / eps**2
        # 3.: Stein on the normalized layer's rows, at the mean law
        g = (rng.standard_normal((n, T - 1)) * math.sqrt(v)) @ B.T
        z, A = normalize(g)
        d = np.asarray(unit.df(z), dtype=float)
        gg = np.einsum("na,nb->nab", g, g).reshape(n, T * T)
        Z = (gg @ Ymat.T).reshape(n, T, T) / v**2 - trY / v
        three = sw_out * (sw / M1) ** 2 * d[:, :, None] * d[:, None, :] * (A @ Z @ np.swapaxes(A, -1, -2))
        parts.append(np.concatenate([_diag_off(one), _diag_off(two), _diag_off(three)], axis=1) / T)
        # the layers below's share of the entry variances (for s): Var over (K, N) of E[G | K, N], to leading order
        # the square of its first variation, E_xi[(E_g dG)^2] = E[dG(g1) dG(g2)] with two independent draws of g
        xi = rng.standard_normal((n, 2 * nt)) @ root.T
        dK, dN = sym(xi[:, :nt]), sym(xi[:, nt:])
        top = np.abs(np.linalg.eigvalsh(B.T @ dK @ B)).max(axis=-1)
        eps = np.minimum(EPS, 0.5 * (w.k[0] - w.k[1]) / top)[:, None, None]
        first = []
        for cc in (c, rng.standard_normal((n, T - 1)) * math.sqrt(v)):
            first.append((gram(Kb + eps * dK, Nb + eps * dN, cc) - gram(Kb - eps * dK, Nb - eps * dN, cc)) / (2 * eps))
        below_var.append((first[0] * first[1]).sum((1, 2)) / T**2)
    x = np.concatenate(parts)
    mean = x.mean(axis=0)
    total = x[:, 0::2].sum(axis=1), x[:, 1::2].sum(axis=1)
    sem = [float(t.std() / math.sqrt(len(x))) for t in total]
    bv = np.concatenate(below_var)
    return (*(float(m) for m in mean), *sem, float(bv.mean()), float(bv.std() / math.sqrt(len(bv))))


def _fluctuation(net: Network, width: int, T: int) -> tuple:
    """The world below the normalized layer l = L - 1 as the exact terms use it: (M_{l-1}, sigma_w^2, the unit, the
    world, and bnstep's :func:`meanfield.finite.bnstep.world_classes` of it: exchangeable, O(1) in T)."""
    l = net.depth - 1
    M1 = net.widths(width)[l - 1]
    sw = float(net.sigma_w2[l - 1])
    w, shift_k, shift_theta = _world_below(net, width)
    return M1, sw, Unit.of(net.phi(l)), w, world_classes(w, shift_k, shift_theta, M1, sw, T)


@functools.lru_cache(maxsize=32)
def _exact_terms(net: Network, width: int, samples: int) -> tuple:
    """Terms 1.-3. of (E G_tt, E G_ts) and the layers below's share of the entry variances, deterministic: Price's
    theorem to second order in the law of g (Hermite weights at Omega = v Pi), every term a sphere expectation
    (:mod:`meanfield.finite.spherebn`); the same tuple as :func:`_terms` with zero standard errors."""
    T, L = samples, net.depth
    l = L - 1
    center = net.norms[0].center_only
    widths = net.widths(width)
    M2, sw_out = widths[l], float(net.sigma_w2[L - 1])
    M1, sw, unit, w, wc = _fluctuation(net, width, T)
    delta, dD, v, D, om = wc.delta, wc.dD, wc.v, wc.D, wc.om
    # the world's T^4 tensors in the pinned form (samples 0, 1 fixed, :mod:`meanfield.finite.bnpinned`): O(1) in T
    CKK, e_t1k2, e_k22, e_const = embed(wc.CKK), embed(wc.e_t1k2), embed(wc.e_k22), wc.e_const
    CTK, W1, Y, trY = embed(wc.CTK), embed(wc.W1), embed(wc.Y), embed(wc.trY)
    cov_below = {(0, 0): wc.CKK, (0, 1): wc.CKN, (1, 0): wc.CNK, (1, 1): wc.CNN}
    Pi = np.eye(REP) - 1.0 / T                                 # Pi at the representative samples
    out, quad = [], []
    for k in (1, 2):
        law = UnitLaw(T, k, center, v, unit)
        S, R = law.S, law.R
        ff, pp = pair_functions(unit, k)
        f0, f1, f2 = (law.avg(ff, p) for p in (0, 1, 2))
        p0, p1, p2 = (law.lam(pp, p) for p in (0, 1, 2))
        G0, G1 = M2 * f0 + sw_out * D * R * p0, M2 * f1 + sw_out * D * R * p1      # Gamma_0 without its 1
        # 1.: first order in the exchangeable mean shifts (dK = delta I + .. 1 1^T: k2 = delta T, t1 = delta (T - 1))
        one = om * delta / 2 * S.mean(T * G1 - (T - 1) * G0) + sw_out * dD * S.mean(p0, R)
        # 2.: (1/8) E[Gamma_0 H4] + E[Gamma_1 h2] (half the second derivative), averaged over the fluctuation
        ek2sq, et1k2, ek22 = sphere_expect(S, CKK), sphere_expect(S, e_t1k2), sphere_expect(S, e_k22)
        G2 = M2 * f2 + sw_out * D * R * p2
        two = (om**2 / 8 * S.mean(G2 * ek2sq - 2 * G1 * et1k2 - 4 * G1 * ek22 + G0 * e_const)
               + sw_out * om / 2 * S.mean(p1 * sandwich(law, CTK) - p0 * sandwich(law, W1)))
        # 3.: Stein on the normalized layer's rows
        three = sw_out * (sw / M1) ** 2 / v * S.mean(p1 * sandwich(law, Y) - p0 * sandwich(law, trY))
        out.append((one / T, two / T, three / T))
        # the first variation of T E[G_ts | K, N] in (dK, dN), for the layers below's share of Var G (pinned T x T
        # matrices, their REP x REP leading blocks)
        rr = outer_r_at(law, p0)
        gK = om / 2 * (mom2_at(law, G1) - S.mean(G0) * Pi) + sw_out * M1 * rr
        gN = sw_out * sw * rr
        g = {0: pinned(2, lambda ij, m=gK: m[ij]), 1: pinned(2, lambda ij, m=gN: m[ij])}
        quad.append(pinned_quadratic(T, g, cov_below, g))
    (d1, d2, d3), (o1, o2, o3) = out
    below = (T * quad[0] + T * (T - 1) * quad[1]) / T**2
    return d1, o1, d2, o2, d3, o3, 0.0, 0.0, below, 0.0


@functools.lru_cache(maxsize=32)
def batch_norm_layer(net: Network, width: int, samples: int) -> BatchNormLayer:
    """(K^l, N^l) of the batch-normalized layer l = L - 1 to O(1/M): means, mean shifts, covariances and Y^l.

    The exact method's terms (module docstring) with the output layer's weights left out: K^l's share is that of
    M_2 F, N^l's that of sigma_w'^2 (A Theta' A) and Stein's term; their covariance adds the units' own (given the
    layer below, i.i.d.) to the layer below's fluctuations pushed through E[K^l, N^l | below]'s first variation.

    Args:
        net: a numeric network of depth >= 2 whose only normalization is a batch norm on layer L - 1 (the layers
            above a deeper batch norm are the plain recursion's, :mod:`meanfield.finite.deepbn`).
        width, samples: M and T (T >= 6 for a full batch norm, 4 centre-only; activations with known kinks).

    Returns:
        :class:`BatchNormLayer`.

    Raises:
        InvalidArgument: another placement or network, T too small, a negative kernel overlap below.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:2"])
        >>> b = batch_norm_layer(net, 64, 8)
        >>> t = hidden_batch_norm_terms(net, 64, 8)
        >>> bool(abs(64 * b.dk[0] + 2 * b.dn[0] - 8 * (t.shift_diag + t.second_diag + t.stein_diag)) < 1e-9)
        True
    """
    M, T, _ = _check(net, width, samples, DRAWS)
    if default_method(net, T) != "exact":
        raise InvalidArgument("samples", samples, "T >= 4 and an activation whose kinks are known (the "
                              "exact sphere quadrature)")
    l = net.depth - 1
    w, shift_k, shift_theta = _world_below(net, M)
    widths = net.widths(M)
    return batch_norm_from_world(Unit.of(net.phi(l)), w, shift_k, shift_theta, widths[l - 1], widths[l],
                                 float(net.sigma_w2[l - 1]), T, net.norms[0].center_only, l >= 2)


@functools.lru_cache(maxsize=32)
def cross_unit_spread(net: Network, width: int, samples: int) -> np.ndarray:
    """S4[t1, s1, t2, s2] = E[S_ac(t1, s1) S_ac(t2, s2)] (a != c) of the layer below the batch norm on layer l = L - 1,
    S_ac = w_a^T X w_c: (sw^2 / M1) E[phi'phi'phi'phi'] E[Theta^1 Theta^1] on layer 2, Theta^1 = 1 + x.x with its own
    spread (M0 (Q Q + Q Q): for t != s mean O(1), spread O(sqrt M0)); zero on layer 1; deeper, :func:`ntk_spread`.

    Example:
        >>> cross_unit_spread(Network(3, "tanh", 2, 0.1, norms=["batch:2"]), 64, 6).shape
        (6, 6, 6, 6)
    """
    T, l = samples, net.depth - 1
    if l == 1:
        return np.zeros((T,) * 4)
    widths = net.widths(width)
    if l >= 3:    # a plain stack below: the NTK's spread between its units (layer 2 below is the same, written out)
        return (float(net.sigma_w2[l - 1]) / widths[l - 1]) ** 2 * ntk_spread(below_network(net), width, T)
    M0, M1 = widths[0], widths[1]
    sw1, sb1, sw = float(net.sigma_w2[0]), float(net.sigma_b2[0]), float(net.sigma_w2[1])
    q1, q2 = float(net.input_q1), float(net.input_q2)
    unit1 = Unit.of(net.phi(1))
    theta1 = (1 + M0 * q1, 1 + M0 * q2)                     # the first layer's NTK (one unit), its mean
    qa, qb = sw1 * q1 + sb1, sw1 * q2 + sb1

    def q(a: int, b: int) -> float:
        return q1 if a == b else q2

    def sig4(lab: tuple) -> float:
        m = four_sample_mean(unit1, qa, qb, tuple(("d", i) for i in lab))
        t1, s1, t2, s2 = lab
        theta2 = theta1[t1 != s1] * theta1[t2 != s2] + M0 * (q(t1, t2) * q(s1, s2) + q(t1, s2) * q(s1, t2))
        return sw**2 / M1 * m * theta2
    return class_tensor(T, sig4)


@functools.lru_cache(maxsize=32)
def cross_unit_spread_classes(net: Network, width: int) -> Exchangeable:
    """:func:`cross_unit_spread` as an exchangeable tensor (any T: its 15 values do not depend on T, four samples carry
    every pattern).

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:2"])
        >>> bool(np.allclose(cross_unit_spread_classes(net, 64).dense(6), cross_unit_spread(net, 64, 6), rtol=1e-13))
        True
    """
    dense = cross_unit_spread(net, width, 4)
    return Exchangeable.from_function(4, lambda lab: dense[lab])


@functools.lru_cache(maxsize=32)
def _u2_classes(net: Network, width: int, samples: int) -> Exchangeable:
    """U2[t, t1, s, t2] = E[phi'(z_t) A(t, t1) phi'(z_s) A(s, t2)] of one normalized unit at the mean law (exact), an
    exchangeable tensor (:func:`meanfield.finite.bnstep.unit_slope_classes`): O(1) in T."""
    l = net.depth - 1
    sw = float(net.sigma_w2[l - 1])
    w = _world_below(net, width)[0]
    return unit_slope_classes(Unit.of(net.phi(l)), sw * (w.k[0] - w.k[1]), samples, net.norms[0].center_only)


def cross_unit_moments(net: Network, width: int, samples: int) -> tuple:
    """(E[X_ac(t, t)^2], E[X_ac(t, s)^2], E[X_ac(t, t) X_ca(t, t)], E[X_ac(t, s) X_ca(t, s)]) for two units a != c of
    the batch-normalized layer l = L - 1 (t != s; at the mean law, O(1/M) each): zero on layer 1, on layer 2 through
    the NTK's spread between the units below (:func:`_entry_terms`' S4 and U2, per entry).

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, norms=["batch:2"])
        >>> x = cross_unit_moments(net, 64, 8)
        >>> x[0] == x[2] and x[0] > 0
        True
        >>> cross_unit_moments(Network(2, "tanh", 2, 0.1, norms=["batch:1"]), 64, 8)
        (0.0, 0.0, 0.0, 0.0)
    """
    M, T, _ = _check(net, width, samples, DRAWS)
    if default_method(net, T) != "exact":
        raise InvalidArgument("samples", samples, "T >= 4 and an activation whose kinks are known")
    S4 = cross_unit_spread_classes(net, M)
    if not S4.any():
        return 0.0, 0.0, 0.0, 0.0
    return unit_pair_classes(_u2_classes(net, M, T), S4, T)


@functools.lru_cache(maxsize=32)
def _entry_terms(net: Network, width: int, samples: int, draws: int, seed: int, exact: bool = False) -> tuple:
    """The entry variances' parts at the mean law (module docstring): summed over the T^2 entries of
    one output block, the units' own variance and the output weights' share of Var G_kk(t, s), and E G_kl(t, s)^2
    between outputs; with standard errors from ten batches of draws (``exact``: on the sphere's quadrature, no draws,
    zero standard errors)."""
    T = samples
    center = net.norms[0].center_only
    l = net.depth - 1
    widths = net.widths(width)
    M1, M2 = widths[l - 1], widths[l]
    sw, sw_out = float(net.sigma_w2[l - 1]), float(net.sigma_w2[l])
    unit = Unit.of(net.phi(l))
    w = _world_below(net, width)[0]
    v = sw * (w.k[0] - w.k[1])
    Dp = M1 * (w.k[0] - w.k[1]) + sw * (w.n[0] - w.n[1])     # Theta' = D' I + O 1 1^T at the mean
    inv2, inv4 = (1.0, 1.0) if center else (T / (v * (T - 3)), T**2 / (v**2 * (T - 3) * (T - 5)))
    c = sw_out / M2

    def combine(unit_sum: float, xaa: float, U2: Any) -> tuple:
        """(same, cross) from the units' variance and E X_aa^2 summed over the entries, and U2[t, t1, s, t2] (an
        exchangeable tensor: exact contractions, O(1) in T; or the Monte Carlo's dense array)."""
        if isinstance(U2, Exchangeable):
            S4 = cross_unit_spread_classes(net, width)
            W = contract(T, "taty->ay", U2)
            xac = contract(T, "ab,cd,acbd->", W, W, S4)
            xac_swap = contract(T, "tisj,skto,ikjo->", U2, U2, S4)
        else:
            S4 = cross_unit_spread(net, width, T)
            W = np.einsum("taty->ay", U2)
            xac = np.einsum("ab,cd,acbd->", W, W, S4, optimize=True)
            xac_swap = np.einsum("tisj,skto,ikjo->", U2, U2, S4, optimize=True)
        k = c**2
        same = (k * (2 * M2 * xaa + M2 * (M2 - 1) * (xac + xac_swap)) + M2 * unit_sum) / T**2
        return same, k * (M2 * xaa + M2 * (M2 - 1) * xac) / T**2

    if exact:
        unit_sum = xaa = 0.0
        for kf in (1, 2):
            law = UnitLaw(T, kf, center, v, unit)
            S, R = law.S, law.R
            ff, pp = pair_functions(unit, kf)
            e_ff, e_x = S.mean(law.avg(ff, 0)), Dp * S.mean(law.lam(pp, 0), R)
            e_x2 = Dp**2 * S.mean(law.lam(lambda z: pp(z) ** 2, 0, 2), R * R)
            e_ffx = Dp * S.mean(law.lam(lambda z: ff(z) * pp(z), 0), R)
            var = S.mean(law.avg(lambda z: ff(z) ** 2, 0)) + 2 * c * e_ffx + c**2 * e_x2 - (e_ff + c * e_x) ** 2
            entries = T if kf == 1 else T * (T - 1)
            unit_sum, xaa = unit_sum + entries * var, xaa + entries * e_x2
        same, cross = combine(unit_sum, xaa, _u2_classes(net, width, T))
        return float(same), float(cross), 0.0, 0.0
    Pi = np.eye(T) - 1.0 / T
    B = np.linalg.svd(Pi)[0][:, : T - 1]
    rng = np.random.default_rng(seed + 1)
    batches = []
    per = max(draws // 10, 1)
    for _ in range(10):
        g = (rng.standard_normal((per, T - 1)) * math.sqrt(v)) @ B.T
        if center:
            z, A = g, np.broadcast_to(Pi, (per, T, T))
        else:
            # A = R / sigma with R = Pi - z z^T / T and sigma independent of z (at the mean law): the moments of 1 /
            # sigma are exact (no heavy tails in the draws), A is replaced by R and the powers of 1 / sigma by them
            z = g * np.sqrt(T / (g * g).sum(-1)[:, None])
            A = Pi - z[:, :, None] * z[:, None, :] / T
        f, d = np.asarray(unit.f(z), dtype=float), np.asarray(unit.df(z), dtype=float)
        ff = f[:, :, None] * f[:, None, :]
        X = d[:, :, None] * d[:, None, :] * Dp * (A @ A)          # X_aa sigma^2 = psi o (R Theta' R), R symmetric
        unit_var = ((ff**2).mean(0) + 2 * c * inv2 * (ff * X).mean(0) + c**2 * inv4 * (X**2).mean(0)
                    - (ff.mean(0) + c * inv2 * X.mean(0)) ** 2)
        xaa = inv4 * (X**2).mean(0).sum()
        P = d[:, :, None] * A                                     # P[t, t1] sigma = phi'(z_t) A(t, t1) sigma
        U2 = inv2 * np.einsum("nab,ncd->abcd", P, P, optimize=True) / per  # U2[t, t1, s, t2] = E[P[t, t1] P[s, t2]]
        batches.append(combine(float(unit_var.sum()), xaa, U2))
    b = np.array(batches)
    return (float(b[:, 0].mean()), float(b[:, 1].mean()), float(b[:, 0].std(ddof=1) / math.sqrt(len(b))),
            float(b[:, 1].std(ddof=1) / math.sqrt(len(b))))


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict | None:
    """The "1/M" model for a batch norm on layer L - 1: corrected gram_diag, gram_offdiag, m, kappa1, kappa2 and s; None
    for other networks.

    Example:
        >>> from meanfield import predict
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2"])
        >>> sorted(finite_width_stats(net, 32, 6, predict(net, 32, 6))["includes_1_over_M"])
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
    """
    norm = _placement(net)
    if norm is None:
        return None
    try:
        t = hidden_batch_norm_terms(net, width, samples, method=default_method(net, samples))
    except InvalidArgument as error:     # e.g. a negative kernel overlap: predict keeps working with mean-field values
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    if t.draws:
        how = (f"by Monte Carlo ({t.draws} draws, fixed seed; standard errors {t.monte_carlo_sem[0]:.3g} of E G_tt, "
               f"{t.monte_carlo_sem[1]:.3g} of E G_ts" + (f", {t.monte_carlo_sem[2]:.3g} of s)" if t.monte_carlo_sem[2]
                                                         is not None else ")"))
    else:
        how = "by exact reduction to sphere integrals and fixed quadrature (deterministic)"
    if "s" in t.includes_1_over_M:
        what = (f"E G_tt, E G_ts (so m and the kappa's) and s with their derived O(1/M) terms, {how}; s still misses "
                "an O(T/M^2) term of the entry variances (about -2% at M = 64, T = 16)")
    else:
        what = (f"E G_tt, E G_ts (so m and the kappa's) with their derived O(1/M) terms, {how}; s keeps its "
                "mean-field value (its entry variances are not derived here)")
    return dict(gram_diag=t.mean_diag, gram_offdiag=t.mean_offdiag, m=t.m, kappa1=t.kappa1, kappa2=t.kappa2,
                s=t.s, includes_1_over_M=t.includes_1_over_M,
                notes=(f"{norm} (batch norm on the last hidden layer): " + what,
                       "lambda_max: not corrected (the mean-field value or bounds)"))
