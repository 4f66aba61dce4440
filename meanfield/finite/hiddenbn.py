"""Batch norm on a hidden layer: O(1/M) corrections of E G_tt, E G_ts, m, kappa_1, kappa_2 (and s for L <= 3), derived.

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

1. and 2. are differences of the same integrand at the same draws of g (common random numbers: g = B chol(Omega / v) c
with one draw c ~ N(0, v I) for every kernel; 2. antithetic, the fluctuation scaled by eps and the second difference
divided by eps^2, which is exact for the quadratic term; the O(eps^2 / M^2) remainder is below the next order, so eps
is large, 1/2 or less on a draw where Omega would come within half of v of singular: where phi' jumps (relu) the
second difference of a step has a variance of order eps^-3), 3. an average over g; all by Monte Carlo with a fixed
seed, with standard errors returned (``monte_carlo_sem``; 40000 draws: about 0.1% of E G_tt for tanh, 0.25% for relu
at M = 64, T = 16). Between outputs E G_kl = 0.

The entry variances (s; L <= 3, written here for l = 2; on layer 1 of two there is no S_ac). G_kl = (1/T)[delta_kl
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
Measured against sampled networks (``meanfield/notes/corrections.md``, section 8) the means are within 1.6 standard
errors everywhere; the corrected s is 1.4% low at M = 64, T = 16 (mean field: 17-22% low) and 0.2-0.9% at M = 128:
what is left is the next order of the entry variances, O(T / M^2) in s (4-7% at M = 32, T = 8).

Not derived: the entry variances below deeper nets (s keeps its mean-field value for L > 3), a batch norm below layer
L - 1 (layers with weights above it), inputs with a negative mean product.
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
from .corrections import kernel_mean_shift, ntk_mean_shift
from .fourworld import World, class_tensor, four_sample_mean, realized_world

__all__ = ["HiddenBatchNormTerms", "hidden_batch_norm_terms", "finite_width_stats", "below_network", "DRAWS",
           "CORRECTED"]

DRAWS = 40000      # Monte Carlo draws of each term
SEED = 20261207    # their fixed seed: predictions are reproducible
EPS = 0.5          # the largest scale of the fluctuation in the second differences (module docstring)
CORRECTED = frozenset({"gram_diag", "gram_offdiag", "m", "kappa1", "kappa2"})


@dataclass(frozen=True)
class HiddenBatchNormTerms:
    """E G_tt, E G_ts, m, kappa_1, kappa_2 (and s, L <= 3) with their O(1/M) terms: batch norm on the last hidden layer.

    Attributes:
        network, width, samples: what was computed (M, T).
        mean_field_diag, mean_field_offdiag, m_mean_field, s_mean_field: ``predict``'s values.
        shift_diag, shift_offdiag: term 1 (the exchangeable mean shifts of the layer below), Gram units.
        second_diag, second_offdiag: term 2 (second order in the realized kernel and NTK average below).
        stein_diag, stein_offdiag: term 3 (Stein on the normalized layer's rows).
        monte_carlo_sem: standard errors of the total correction of (E G_tt, E G_ts) and of s (None where s is not
            corrected).
        mean_diag, mean_offdiag, m, kappa1, kappa2: corrected.
        s_units, s_below, s_cross: the entry-variance parts of s (L <= 3; None otherwise): the normalized units'
            own variance with the output weights' share (same output), the layers below's (the realized K, N), and
            E G_kl^2 between outputs.
        s: corrected for L <= 3 (the squared corrected means plus those parts), else the mean-field s.
        includes_1_over_M: the statistics above that include their O(1/M) terms.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.
        draws: Monte Carlo draws per term.

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


def _check(net: Any, width: Any, samples: Any, draws: Any) -> tuple[int, int, int]:
    if _placement(net) is None:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network of depth >= 2 whose only normalization is a batch norm on layer "
                              "L - 1")
    M = check_int("width", width, minimum=1)
    # the Monte Carlo averages 1 / sigma^4 (full batch norm): finite variance needs T - 1 > 4
    T = check_int("samples", samples, minimum=3 if net.norms[0].center_only else 6)
    return M, T, check_int("draws", draws, minimum=100)


@functools.lru_cache(maxsize=32)
def hidden_batch_norm_terms(net: Network, width: int, samples: int, *, draws: int = DRAWS) -> HiddenBatchNormTerms:
    """E G = mean field + mean shifts (1.) + second order below (2.) + Stein (3.): batch norm on layer L - 1.

    Args:
        net: a numeric network of depth >= 2 whose only normalization is a batch norm (full or centre-only) on layer
            L - 1, inputs with a non-negative mean product (input_q2 >= 0).
        width: M.
        samples: T (at least 6 for a full batch norm: the Monte Carlo averages 1 / sigma^4; 3 centre-only).
        draws: Monte Carlo draws per term (fixed seed).

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
    base = predict(net, M, T)
    d1, o1, d2, o2, d3, o3, sd, so, below_var, below_sem = _terms(net, M, T, draws, SEED)
    gd, go = float(base.gram_diag), float(base.gram_offdiag)
    mean_d, mean_o = gd + d1 + d2 + d3, go + o1 + o2 + o3
    C, P, alpha = net.outputs, int(base.P), float(base.alpha)
    s, parts, s_sem, corrected = float(base.s), (None, None, None), None, CORRECTED
    if net.depth <= 3:
        same, cross, same_sem, cross_sem = _entry_terms(net, M, T, draws, SEED)
        parts = (C * same / P, C * below_var / P, C * (C - 1) * cross / P)
        s = C * (T * mean_d**2 + T * (T - 1) * mean_o**2) / P + sum(parts)
        s_sem = math.sqrt((C * same_sem) ** 2 + (C * below_sem) ** 2 + (C * (C - 1) * cross_sem) ** 2) / P
        corrected = CORRECTED | {"s"}
    return HiddenBatchNormTerms(net, M, T, gd, go, float(base.m), float(base.s), d1, o1, d2, o2, d3, o3,
                                (sd, so, s_sem), mean_d, mean_o, C * T * mean_d / P, T * mean_d / (alpha * M),
                                T * mean_o / (alpha * M), *parts, s, corrected, P, alpha, draws)


def _world_below(net: Network, width: int) -> tuple:
    """(World, M_{l-1} x the mean shift of K, the mean shift of T E[G] of the plain net below) under layer l = L - 1.

    On layer 1 the layer below is the inputs: K = x.x / M_0 (unbiased; Cov(K_ab, K_cd) = (Q_ac Q_bd + Q_ad Q_bc) / M_0
    for the inputs' kernel Q), and there is no NTK below (N = 0, Y = 0)."""
    l = net.depth - 1
    if l >= 2:
        below = below_network(net)
        return realized_world(below, width), kernel_mean_shift(below, width)[l - 1], ntk_mean_shift(below, width)
    q1, q2 = float(net.input_q1), float(net.input_q2)
    pairs = [(a, b) for a in range(4) for b in range(a, 4)]
    Q = lambda a, b: q1 if a == b else q2  # noqa: E731 - the inputs' kernel
    cov = np.zeros((20, 20))
    for i, (a, b) in enumerate(pairs):
        for j, (c, d) in enumerate(pairs):
            cov[i, j] = (Q(a, c) * Q(b, d) + Q(a, d) * Q(b, c)) / net.widths(width)[0]
    zero = np.zeros((4, 4))
    return World((q1, q2), (0.0, 0.0), cov, {(0, 0): zero, (0, 1): zero}), (0.0, 0.0), (0.0, 0.0)


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


@functools.lru_cache(maxsize=32)
def _entry_terms(net: Network, width: int, samples: int, draws: int, seed: int) -> tuple:
    """The entry variances' parts at the mean law (L <= 3, module docstring): summed over the T^2 entries of
    one output block, the units' own variance and the output weights' share of Var G_kk(t, s), and E G_kl(t, s)^2
    between outputs; with standard errors from ten batches of draws."""
    T = samples
    center = net.norms[0].center_only
    l = net.depth - 1
    widths = net.widths(width)
    M0, M1, M2 = widths[0], widths[l - 1], widths[l]
    sw1, sb1 = float(net.sigma_w2[0]), float(net.sigma_b2[0])
    sw, sw_out = float(net.sigma_w2[l - 1]), float(net.sigma_w2[l])
    q1, q2 = float(net.input_q1), float(net.input_q2)
    unit1, unit = Unit.of(net.phi(1)), Unit.of(net.phi(l))
    w = _world_below(net, width)[0]
    v = sw * (w.k[0] - w.k[1])
    Dp = M1 * (w.k[0] - w.k[1]) + sw * (w.n[0] - w.n[1])     # Theta' = D' I + O 1 1^T at the mean
    theta1 = (1 + M0 * q1, 1 + M0 * q2)                     # the first layer's NTK (one unit), its mean
    qa, qb = sw1 * q1 + sb1, sw1 * q2 + sb1

    def q(a: int, b: int) -> float:
        return q1 if a == b else q2

    def sig4(lab: tuple) -> float:
        """E[S_ac(t1, s1) S_ac(t2, s2)] (a != c), S_ac = w_a^T X w_c: (sw^2 / M1) E[phi'phi'phi'phi'] E[Theta^1
        Theta^1], Theta^1 = 1 + x.x with its own spread (M0 (Q Q + Q Q): for t != s mean O(1), spread O(sqrt M0))."""
        m = four_sample_mean(unit1, qa, qb, tuple(("d", i) for i in lab))
        t1, s1, t2, s2 = lab
        theta2 = theta1[t1 != s1] * theta1[t2 != s2] + M0 * (q(t1, t2) * q(s1, s2) + q(t1, s2) * q(s1, t2))
        return sw**2 / M1 * m * theta2

    # layer 2: S_ac of the layer below; layer 1: Theta^1_ac = 0 for a != c (no weighted layer below)
    S4 = class_tensor(T, sig4) if l == 2 else np.zeros((T,) * 4)
    Pi = np.eye(T) - 1.0 / T
    B = np.linalg.svd(Pi)[0][:, : T - 1]
    inv2, inv4 = (1.0, 1.0) if center else (T / (v * (T - 3)), T**2 / (v**2 * (T - 3) * (T - 5)))
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
        c = sw_out / M2
        unit_var = ((ff**2).mean(0) + 2 * c * inv2 * (ff * X).mean(0) + c**2 * inv4 * (X**2).mean(0)
                    - (ff.mean(0) + c * inv2 * X.mean(0)) ** 2)
        xaa = inv4 * (X**2).mean(0).sum()
        P = d[:, :, None] * A                                     # P[t, t1] sigma = phi'(z_t) A(t, t1) sigma
        U2 = inv2 * np.einsum("nab,ncd->abcd", P, P, optimize=True) / per  # U2[t, t1, s, t2] = E[P[t, t1] P[s, t2]]
        W = np.einsum("taty->ay", U2)
        xac = np.einsum("ab,cd,acbd->", W, W, S4, optimize=True)
        xac_swap = np.einsum("tisj,skto,ikjo->", U2, U2, S4, optimize=True)
        k = c**2
        same = (k * (2 * M2 * xaa + M2 * (M2 - 1) * (xac + xac_swap)) + M2 * unit_var.sum()) / T**2
        cross = k * (M2 * xaa + M2 * (M2 - 1) * xac) / T**2
        batches.append((same, cross))
    b = np.array(batches)
    return (float(b[:, 0].mean()), float(b[:, 1].mean()), float(b[:, 0].std(ddof=1) / math.sqrt(len(b))),
            float(b[:, 1].std(ddof=1) / math.sqrt(len(b))))


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict | None:
    """The "1/M" model for a batch norm on layer L - 1: corrected gram_diag, gram_offdiag, m, kappa1, kappa2, and s for
    L <= 3 (deeper, s keeps its mean-field value); None for other networks.

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
        t = hidden_batch_norm_terms(net, width, samples)
    except InvalidArgument as error:     # e.g. a negative kernel overlap: predict keeps working with mean-field values
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    if "s" in t.includes_1_over_M:
        what = (f"E G_tt, E G_ts (so m and the kappa's) and s with their derived O(1/M) terms, by Monte Carlo "
                f"({t.draws} draws, fixed seed; standard errors {t.monte_carlo_sem[0]:.3g} of E G_tt, "
                f"{t.monte_carlo_sem[1]:.3g} of E G_ts, {t.monte_carlo_sem[2]:.3g} of s); s still misses an O(T/M^2) "
                "term of the entry variances (about -2% at M = 64, T = 16)")
    else:
        what = (f"E G_tt, E G_ts (so m and the kappa's) with their derived O(1/M) terms, by Monte Carlo ({t.draws} "
                f"draws, fixed seed; standard errors {t.monte_carlo_sem[0]:.3g} of E G_tt, {t.monte_carlo_sem[1]:.3g} "
                "of E G_ts); s keeps its mean-field value (the entry variances are derived for L <= 3 only)")
    return dict(gram_diag=t.mean_diag, gram_offdiag=t.mean_offdiag, m=t.m, kappa1=t.kappa1, kappa2=t.kappa2,
                s=t.s, includes_1_over_M=t.includes_1_over_M,
                notes=(f"{norm} (batch norm on the last hidden layer): " + what,
                       "lambda_max: not corrected (the mean-field value or bounds)"))
