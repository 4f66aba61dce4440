"""Full batch norm on the output: O(1/M) corrections of E G, m, s, kappa_1, kappa_2, derived.

With a full batch norm on the output, f_k = (u_k - mean_t u_k) / sigma_k, sigma_k^2 the batch variance of output
k's pre-normalization values u_k (population, over the T samples), the Jacobian of f_k is A_k J^u_k with
A_k = (1 / sigma_k) (Pi - y_k y_k^T / T), Pi = I - 1 1^T / T, y_k = Pi u_k / sigma_k, so exactly

    G_kl = A_k Theta_kl A_l^T / T,   Theta_kl = T G^plain_kl (the plain network's NTK block; A_k 1 = 0 drops the
                                     output bias),

and R_k = sigma_k^2 A_k A_k^T = Pi - y_k y_k^T / T is a projector of rank T - 2.

Exact conditioning. Given everything below the output row w_k (~ N(0, sigma_w^2 / M I), M = M_{L-1}), g = Pi u_k =
Pi H^T w_k is Gaussian with the realized kernel, g ~ N(0, Omega), Omega = sigma_w^2 Pi K Pi (K = H^T H / M of the
last hidden layer), and Theta_kk = 1 1^T + M K + S(w_k), S_uv = w_k^T X_uv w_k (X_ac = phi'_a(u) Theta^{L-1}_ac
phi'_c(v)). Stein's lemma twice on w_k gives, for any F(g),

    E[S_uv F(g)] = sigma_w^2 N_uv E[F] + (sigma_w^2 / M)^2 sum_ab E[d_a d_b F] (Pi Y^uv Pi)_ab,

N_uv = tr X_uv / M (the realized average of the previous layer's NTK diagonal, as in
:mod:`meanfield.finite.corrections`) and Y^uv_ab = h_a^T X_uv h_b, O(M^2), needed to leading order: a diagonal part
M Theta E[phi_a phi_b phi'_u phi'_v] and the recursion Y^l = M_l Theta^l E4^l + (M_l / M_{l-1})^2 sigma_w^4
D_u Y^{l-1} D_v^T of that module, here for four samples. So, given the layers below, E[G | below] =
E_g[A (M K + sigma_w^2 N) A^T] / T + (c), with (c) the Stein term (Hermite weights make E[d_a d_b F] =
E[F (g_a g_b / v^2 - Pi_ab / v)] at Omega = v Pi).

Mean field. K and N at their means (exchangeable): Theta' = M K + sigma_w^2 N = D I + O 1 1^T, Omega = v Pi with
v = sigma_w^2 (K_tt - K_ts), so T sigma^2 = v chi^2_{T-1} and y is uniform on the sphere |y|^2 = T in the complement
of 1, independent of sigma: E G_tt = D (T - 2) / (T v (T - 3)) and s = C D^2 (T - 2) E[1/sigma^4] / (T^2 P),
E[1/sigma^4] = T^2 / (v^2 (T - 3)(T - 5)) (exactly predict's values).

The O(1/M) terms:

1. exchangeable mean shifts: D -> D + dD (the plain network's corrected NTK means,
   :func:`meanfield.finite.corrections.ntk_mean_shift`) and v -> v + dv (the realized kernel's mean shift of layer
   L - 1, :func:`meanfield.finite.corrections.kernel_mean_shift`): E G -> E G (1 + dD / D) v / (v + dv);
2. the entry fluctuations of Theta, whose sum over a block's T^2 entries is relatively T / M (the largest term in s):
   to leading order independent of (sigma_k, y_k), so E ||A dTheta A^T||_F^2 = E[1/sigma^4] sum E[R_uu' R_vv']
   Cov(Theta_uv, Theta_u'v') with E[R_uu' R_vv'] = (1 - 2/(T-1) + 1/(T^2-1)) Pi_uu' Pi_vv' + (Pi_uv Pi_u'v' +
   Pi_uv' Pi_u'v) / (T^2 - 1) (fourth moments of y), and between outputs E[1/sigma^2]^2 ((T-2)/(T-1))^2
   sum Pi_uu' Pi_vv' Cov(Theta_kl uv, Theta_kl u'v'), the covariances of
   :func:`meanfield.finite.fourpoint.gram_covariance` summed over the T^4 index tuples by label patterns;
3. (a) the realized kernel's fluctuations in the law of g (second order: Price's theorem, and Jensen makes
   E[1/sigma^2] grow), (b) their coupling with the fluctuations of M K + sigma_w^2 N (h.h = M K is itself a part of
   Theta), (c) the Stein term above. (a) and (b) need Cov of (K^{L-1}, N^{L-1}) over any pattern of equal samples:
   the realized-average recursion of :mod:`meanfield.finite.corrections` run for four exchangeable samples (the
   four-sample Gaussian integrals by conditioning on the common part, u_i = sqrt(q_2) z + sqrt(q_1 - q_2) e_i,
   so 0 <= q_2 is required), expanded to the T x T matrices by label patterns. Their second-order effect is an
   integral over a Gaussian of dimension T (T + 1) plus the T - 1 of g, evaluated exactly (``method="exact"``,
   the default; no random numbers). With Delta = sigma_w^2 Pi dK Pi and dTheta = M dK + sigma_w^2 dN, the law's
   expansion E_{N(0, v Pi + Delta)} F = E F + (1/2) Delta_ab E[d_a d_b F] + (1/8) Delta_ab Delta_cd
   E[d_a d_b d_c d_d F] (Price), the derivatives moved onto Hermite weights of N(0, v Pi), leaves Gaussian moments
   of g = r y: A Theta' A^T / T = D Q / r^2 with Q = Pi - y y^T (rank n - 1, n = T - 1), the sphere's moments
   E[y y^T] = Pi / n, E[y^(x4)] = (Pi Pi + 2 perms) / (n (n + 2)) and the chi-square ones E[r^-2] = 1 / (v (n-2)),
   E[r^-4] = 1 / (v^2 (n-2)(n-4)). Each 4-tensor X (Cov(K_ab, K_cd), Cov(K_ab, Theta'_uv), Y^uv_ab) then enters
   through its three full contractions X_1 = sum X Pi_01 Pi_23, X_2 = sum X Pi_02 Pi_13, X_3 = sum X Pi_03 Pi_12
   (S = X_1 + X_2 + X_3; slots in that order), sums over the 15 label patterns (falling factorial counts x products
   of 1 - 1/T and -1/T), so that, with c = (sigma_w^2 / M)^2,

       T Cpl_tt = D (n-1) sigma_w^4 S_KK / (v^3 n (n^2-4)) - sigma_w^2 / (2 v^2) [KT_1 / (n(n-2)) + S_KT / (n(n+2))]
                  - c / v^2 [Y_1 / (n(n-2)) + S_Y / (n(n+2))],      Cpl_ts = -Cpl_tt / (T - 1)   (A 1 = 0),
       Cpl_F2 = 3 D^2 (n-1) sigma_w^4 S_KK / (v^4 n (n^2-4)(n-4)) - D sigma_w^2 / v^3 [3 KT_1 / (n(n-2)(n-4))
                  + S_KT / (n(n+2)(n-2))] - 2 c D / v^3 [3 Y_1 / (n(n-2)(n-4)) + S_Y / (n(n+2)(n-2))]

   (Cpl_F2: E ||G_kk||_F^2 per block, less the square of the forward part of dTheta, already in 2.; KT = Cov(K,
   Theta'), finite for T >= 6). ``method="monte-carlo"`` keeps the earlier evaluation as a cross-check: a fixed
   seed and antithetic pairs (the first order cancels exactly; the fluctuation scaled by EPS = 1/50 and the second
   difference divided by EPS^2), and (c) by Monte Carlo over g, with its standard errors (``monte_carlo_sem``, about
   0.2% of E G_tt and 0.5% of s at 40000 draws; zeros for the exact method); it needs T >= 10.

Layer norms on hidden layers below (:func:`output_batch_norm_below`, :class:`OutputBatchNormBelow`). Nothing above
uses more of the network below than 1. D, dD, v, dv, 2. the entry covariances of Theta and 3. the four-sample world
(K, N, Y of layer L - 1), so the same formulas hold behind layer norms with those taken through the norms: dD from
:func:`meanfield.finite.layernorm.layer_norm_ntk_mean_shift`, dv from
:func:`meanfield.finite.layernorm.layer_norm_kernel_mean_shift`, the covariances from
:func:`meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance` and the world from
:func:`meanfield.finite.layernorm_world.layer_norm_world` (the norms' influence functions and Jacobian projections,
four samples). Checked against sampled networks (``meanfield/notes/corrections.md``, section "Layer norms below a
full batch norm on the output"). Behind one batch norm on a hidden layer the same inputs come
from :func:`meanfield.finite.bnpair.full_output_below` (that norm's units on a fixed quasi-Monte Carlo rule; its
four-sample world depends on T, so :func:`below_world` and the Monte Carlo method refuse it).

Between outputs the blocks have mean zero and only term 2 enters at O(1/M). Checked against sampled networks
(``derivations/corrections.md``, section 5: tanh, relu, cos, silu, several width profiles, M = 32 to 256, T = 12 to 32,
400 to 10000 seeds): the means within 1.6 standard errors everywhere; s within about one at M >= 128 (T = 16) and
M = 256 (T = 32), with an O((T/M)^2) remainder of -2 to -3% at M = 64, T = 16.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_choice, check_int
from ..spec.network import BatchNorm, LayerNorm, Network
from ..theory.fisher import predict
from ..theory.recursions import order_parameters
from .corrections import STATISTICS, finite_width_stats as plain_finite_width_stats
from .corrections import gram_corrections, kernel_mean_shift
from .fourworld import World, class_tensor, pair_index, projected_pairings, realized_world, world_contractions
from .fourpoint import gram_covariance
from .fourpoint_layernorm import layer_norm_gram_covariance
from .bnpair import finite_width_stats as batch_norm_pair_finite_width_stats
from .bnpair import full_output_below, pair_placement
from .deepbn import finite_width_stats as deep_batch_norm_finite_width_stats
from .hiddenbn import finite_width_stats as hidden_batch_norm_finite_width_stats
from .layernorm import finite_width_stats as layer_norm_finite_width_stats
from .layernorm import layer_norm_kernel_mean_shift, layer_norm_ntk_mean_shift
from .layernorm_world import layer_norm_world
from .multibn import finite_width_stats as multi_batch_norm_finite_width_stats
from .chain import finite_width_stats as chain_finite_width_stats

__all__ = ["OutputBatchNormTerms", "output_batch_norm_terms", "class_tensor", "finite_width_stats", "DRAWS",
           "projected_pairings",
           "METHODS", "coupling_contractions", "OutputBatchNormBelow", "output_batch_norm_below",
           "output_batch_norm_from", "below_world"]

DRAWS = 40000      # Monte Carlo draws of the coupling terms (3.): standard errors about 0.2% of E G_tt, 0.5% of s
SEED = 20261207    # their fixed seed: predictions are reproducible
METHODS = ("exact", "monte-carlo")     # how the coupling terms (3.) are evaluated; exact is the default

@dataclass(frozen=True)
class OutputBatchNormTerms:
    """E G, m, s, kappa_1, kappa_2 with their O(1/M) terms for a full batch norm on the output (module docstring).

    Attributes:
        network, width, samples: what was computed (M, T).
        mean_field_diag, mean_field_offdiag, s_mean_field, m_mean_field: ``predict``'s values.
        ntk_factor: (D + dD) / D, the plain network's corrected D = T (E G_tt - E G_ts) over its mean field (1.).
        scale_factor: v / (v + dv), the pre-normalization variance's mean shift (1.).
        s_same, s_cross: the entry-fluctuation parts of s (2.; same output, between outputs).
        coupling_diag, coupling_offdiag, coupling_s: the terms 3. (a)-(c) of E G_tt, E G_ts and s.
        monte_carlo_sem: the Monte Carlo standard errors of (coupling_diag, coupling_offdiag, coupling_s); zeros
            for the exact method.
        mean_diag, mean_offdiag, m, s, kappa1, kappa2: corrected.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.
        draws: Monte Carlo draws used for 3.; 0 for the exact method.

    Example:
        >>> t = output_batch_norm_terms(Network(2, "tanh", 2, 0.1, outputs=2, norms=["batch:last"]), 64, 12)
        >>> bool(t.s > t.s_mean_field), bool(t.s_same > 0), bool(t.s_cross > 0), t.draws, t.monte_carlo_sem
        (True, True, True, 0, (0.0, 0.0, 0.0))
    """

    network: Network
    width: int
    samples: int
    mean_field_diag: float
    mean_field_offdiag: float
    s_mean_field: float
    m_mean_field: float
    ntk_factor: float
    scale_factor: float
    s_same: float
    s_cross: float
    coupling_diag: float
    coupling_offdiag: float
    coupling_s: float
    monte_carlo_sem: tuple
    mean_diag: float
    mean_offdiag: float
    m: float
    s: float
    kappa1: float
    kappa2: float
    P: int
    alpha: float
    draws: int


def _supported(net: object) -> bool:
    """A full batch norm on the output, and otherwise at most layer norms on hidden layers."""
    if not isinstance(net, Network):
        return False
    last = net.norm_at(net.depth)
    if isinstance(last, BatchNorm) and not last.center_only and _hidden_batch_norm(net):
        return True      # a hidden batch norm below it: the statistics below from bnpair
    return (isinstance(last, BatchNorm) and not last.center_only
            and all(isinstance(n, LayerNorm) and n.layer < net.depth for n in net.norms if n is not last))


def _hidden_batch_norm(net: Network) -> bool:
    """A batch norm on a hidden layer and one on the output, no other normalization (bnpair's placements)."""
    pair = pair_placement(net)
    return pair is not None


def _check(net: Network, width: int, samples: int, draws: int, method: str) -> tuple[int, int, int, str]:
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")
    if not _supported(net):
        raise InvalidArgument("net", net.describe(), "a full batch norm on the output and no other normalization "
                              "than layer norms on hidden layers, or one batch norm on a hidden layer")
    if net.depth < 2:
        raise InvalidArgument("net", net.describe(), "depth >= 2 (a hidden layer below the output)")
    method = check_choice("method", method if isinstance(method, str) else repr(method), METHODS)
    M = check_int("width", width, minimum=1)
    # exact: E[1/sigma^4] (and the second order of it in the law of g) is finite for T - 1 > 4; the Monte Carlo of
    # s averages up to 1/sigma^8, whose variance is finite for T - 1 > 8
    T = check_int("samples", samples, minimum=6 if method == "exact" else 10)
    return M, T, check_int("draws", draws, minimum=100), method


@dataclass(frozen=True, eq=False)
class OutputBatchNormBelow:
    """The statistics of the network below a full batch norm on the output that its O(1/M) terms are made of.

    The module docstring's inputs: 1. the exchangeable mean shifts of the pre-normalization NTK and of the last hidden
    layer's kernel, 2. the entry covariances of the pre-normalization NTK summed through the projectors, 3. the
    four-sample world of the last hidden layer. For a plain network below they are those of
    :mod:`meanfield.finite.corrections`, :mod:`meanfield.finite.fourpoint` and :mod:`meanfield.finite.fourworld`;
    behind layer norms on hidden layers those of :mod:`meanfield.finite.layernorm`,
    :mod:`meanfield.finite.fourpoint_layernorm` and :mod:`meanfield.finite.layernorm_world`.

    Attributes:
        network: the network without its output batch norm (plain, or with layer norms on hidden layers).
        width, samples: M, T.
        ntk_spread_mean_field: D_0 = T (G_tt - G_ts) of that network, mean field.
        ntk_spread: D = D_0 + dD with the O(1) shift dD of T (E G_tt - E G_ts) (1.).
        variance: v = sigma_w^2 (K_tt - K_ts) of layer L - 1, mean field.
        variance_shift: dv, its O(1/M) mean shift (1.).
        same: (X_1, X_2, X_3), the three pairings of Cov(Theta_00(u, v), Theta_00(u', v')) with Pi Pi summed over the
            T^4 index tuples (2.).
        cross: the same of Theta_01 between two outputs (zeros for C = 1).
        world: the four-sample world of layer L - 1 (3.).

    Example:
        >>> b = output_batch_norm_below(Network(3, "tanh", 2, 0.1, outputs=2, norms=["layer:1", "batch:last"]), 64, 16)
        >>> b.network.describe(), bool(b.ntk_spread > b.ntk_spread_mean_field), bool(b.same[1] > 0)
        ('L=3 tanh sigma_w2=2 sigma_b2=0.1 C=2 alphas=1 norms=layer:1', True, True)
    """

    network: Network
    width: int
    samples: int
    ntk_spread_mean_field: float
    ntk_spread: float
    variance: float
    variance_shift: float
    same: tuple
    cross: tuple
    world: World


def _inner(net: Network) -> Network:
    """The network without its output batch norm."""
    return net.with_(norms=tuple(n for n in net.norms if n.layer < net.depth))


def below_world(net: Network, width: int) -> World:
    """The four-sample world of layer L - 1 below a full batch norm on the output: fourworld's ``realized_world`` of
    the plain network, or :func:`meanfield.finite.layernorm_world.layer_norm_world` behind layer norms.

    Raises:
        InvalidArgument: as :func:`output_batch_norm_terms`.

    Example:
        >>> below_world(Network(3, "relu", 2, 0.1, norms=["batch:last"]), 64).cov.shape
        (20, 20)
    """
    M, _, _, _ = _check(net, width, 6, DRAWS, "exact")
    inner = _inner(net)
    if _hidden_batch_norm(net):      # a batch norm's world depends on T: output_batch_norm_below(net, M, T).world
        raise InvalidArgument("net", net.describe(), "no batch norm below the output's (its world depends on T: "
                              "output_batch_norm_below(net, M, T).world)")
    return layer_norm_world(inner, M) if inner.norms else realized_world(inner, M)


@functools.lru_cache(maxsize=32)
def output_batch_norm_below(net: Network, width: int, samples: int) -> OutputBatchNormBelow:
    """D, dD, v, dv, the projected entry covariances and the four-sample world below a full batch norm on the output.

    Args:
        net: a numeric network with a full batch norm on the output, depth >= 2, otherwise plain or with layer norms
            on hidden layers, or with one batch norm on a hidden layer
            (:func:`meanfield.finite.bnpair.full_output_below`).
        width: M.
        samples: T >= 6.

    Returns:
        :class:`OutputBatchNormBelow`.

    Raises:
        InvalidArgument: another placement, a symbolic network, depth 1, T < 6, a negative kernel overlap.

    Example:
        >>> b = output_batch_norm_below(Network(3, "relu", 2, 0.1, norms=["batch:last"]), 64, 12)
        >>> bool(b.variance > 0), b.cross
        (True, (0.0, 0.0, 0.0))
    """
    M, T, _, _ = _check(net, width, samples, DRAWS, "exact")
    inner = _inner(net)
    if _hidden_batch_norm(net):
        return OutputBatchNormBelow(inner, M, T, *full_output_below(net, M, T))
    L = net.depth
    sw = float(net.sigma_w2[L - 1])
    op = order_parameters(inner, T)
    v = sw * (float(op.layers[L - 1].qhat1) - float(op.layers[L - 1].qhat2))
    if inner.norms:
        raw = predict(inner, M, T)
        D0 = T * (float(raw.gram_diag) - float(raw.gram_offdiag))
        dd, do = layer_norm_ntk_mean_shift(inner, M)
        D = D0 + dd - do
        shift = layer_norm_kernel_mean_shift(inner, M)[L - 1]
        covariance, world = layer_norm_gram_covariance, layer_norm_world(inner, M)
    else:
        corrected = gram_corrections(inner, M, T)
        D0 = T * (corrected.mean_field_diag - corrected.mean_field_offdiag)
        D = T * (corrected.mean_diag - corrected.mean_offdiag)
        shift = kernel_mean_shift(inner, M)[L - 1]
        covariance, world = gram_covariance, realized_world(inner, M)
    dv = sw * float(shift[0] - shift[1]) / inner.widths(M)[L - 1]
    # sum over the T^4 tuples by the 15 label patterns (no T^4 tensor: O(1) in T)
    same = projected_pairings(T, lambda lab: covariance(inner, M, (0, 0) + lab[:2], (0, 0) + lab[2:]))
    if net.outputs >= 2:
        cross = projected_pairings(T, lambda lab: covariance(inner, M, (0, 1) + lab[:2], (0, 1) + lab[2:]))
    else:
        cross = np.zeros(3)
    return OutputBatchNormBelow(inner, M, T, float(D0), float(D), v, dv, tuple(float(x) for x in same),
                                tuple(float(x) for x in cross), world)


@functools.lru_cache(maxsize=32)
def output_batch_norm_terms(net: Network, width: int, samples: int, *, draws: int = DRAWS,
                            method: str = "exact") -> OutputBatchNormTerms:
    """E G = mean field (1 + dD/D) v/(v + dv) + couplings, s + entry fluctuations: full batch norm on the output.

    Args:
        net: a numeric network with a full batch norm on the output, depth >= 2, inputs with a non-negative mean
            product (input_q2 >= 0), otherwise plain or with layer norms on hidden layers (the statistics below
            through the norms, :func:`output_batch_norm_below`).
        width: M.
        samples: T >= 6 (exact; E[1/sigma^4]), T >= 10 for the Monte Carlo (its s needs E[1/sigma^8]).
        draws: Monte Carlo draws for the coupling terms (fixed seed); used by ``method="monte-carlo"`` only.
        method: "exact" (the coupling terms 3. in closed form, module docstring) or "monte-carlo" (the fixed-seed
            Monte Carlo kept as a cross-check, with standard errors).

    Returns:
        :class:`OutputBatchNormTerms`.

    Raises:
        InvalidArgument: another placement, a symbolic network, depth 1, T too small (above), a negative kernel
            overlap, an unknown method.

    Example:
        >>> net = Network(3, "relu", 2, 0.1, norms=["batch:last"])
        >>> t = output_batch_norm_terms(net, 64, 12)
        >>> bool(t.s > t.s_mean_field), t.s_cross      # C = 1: no cross-output blocks
        (True, 0.0)
        >>> mc = output_batch_norm_terms(net, 64, 12, draws=2000, method="monte-carlo")
        >>> abs(mc.coupling_diag - t.coupling_diag) < 4 * mc.monte_carlo_sem[0], mc.draws
        (True, 2000)
    """
    M, T, draws, method = _check(net, width, samples, draws, method)
    return output_batch_norm_from(net, output_batch_norm_below(net, M, T), draws=draws, method=method)


def output_batch_norm_from(net: Network, below: OutputBatchNormBelow, *, draws: int = DRAWS,
                           method: str = "exact") -> OutputBatchNormTerms:
    """:func:`output_batch_norm_terms` from given statistics of the network below (module docstring, 1.-3.).

    Args:
        net: the network with its full batch norm on the output (as :func:`output_batch_norm_terms`).
        below: :class:`OutputBatchNormBelow` of ``net`` at the width and samples wanted (``below.width``,
            ``below.samples``).
        draws, method: as :func:`output_batch_norm_terms`.

    Raises:
        InvalidArgument: as :func:`output_batch_norm_terms`, or ``below`` not of ``net``.

    Example:
        >>> net = Network(3, "relu", 2, 0.1, norms=["batch:last"])
        >>> below = output_batch_norm_below(net, 64, 12)
        >>> output_batch_norm_from(net, below).s == output_batch_norm_terms(net, 64, 12).s
        True
    """
    if not isinstance(below, OutputBatchNormBelow):
        raise InvalidArgument("below", below, "an OutputBatchNormBelow (output_batch_norm_below)")
    M, T, draws, method = _check(net, below.width, below.samples, draws, method)
    if below.network != _inner(net):
        raise InvalidArgument("below", below.network.describe(), f"the statistics below {net.describe()}")
    base = predict(net, M, T)
    D0, D, v, dv = below.ntk_spread_mean_field, below.ntk_spread, below.variance, below.variance_shift
    ntk_factor, scale_factor = D / D0, v / (v + dv)
    factor = ntk_factor * scale_factor
    gd, go = float(base.gram_diag), float(base.gram_offdiag)
    C, P = net.outputs, int(base.P)
    inv2 = T / (v * (T - 3))
    inv4 = T**2 / (v**2 * (T - 3) * (T - 5))
    a, b = 1 - 2 / (T - 1) + 1 / (T**2 - 1), 1 / (T**2 - 1)
    # sum (a Pi_uu' Pi_vv' + b (Pi_uv Pi_u'v' + Pi_uv' Pi_u'v)) Cov[u, v, u', v'] over the T^4 tuples
    same, cross = below.same, below.cross
    s_same = C * inv4 * (a * same[1] + b * (same[0] + same[2])) / (T**2 * P)
    s_cross = C * (C - 1) * inv2**2 * ((T - 2) / (T - 1)) ** 2 * cross[1] / (T**2 * P) if C >= 2 else 0.0
    L = net.depth
    ML, sw = net.widths(M)[L - 1], float(net.sigma_w2[L - 1])
    if method == "exact":
        cd, co, csq, sd, so, ssq = _coupling_exact(below.world, ML, sw, T)
        draws = 0
    else:
        cd, co, csq, sd, so, ssq = _coupling_monte_carlo(net, M, T, draws, SEED)
    mean_d, mean_o = gd * factor + cd, go * factor + co
    s = float(base.s) * factor**2 + s_same + s_cross + C * csq / P
    alpha = float(base.alpha)
    return OutputBatchNormTerms(net, M, T, gd, go, float(base.s), float(base.m), ntk_factor, scale_factor, s_same,
                                s_cross, cd, co, C * csq / P, (sd, so, C * ssq / P), mean_d, mean_o,
                                C * T * mean_d / P, s, T * mean_d / (alpha * M), T * mean_o / (alpha * M), P, alpha,
                                draws)


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict:
    """The "1/M" model of ``predict(..., finite_width="1/M")``: :func:`output_batch_norm_terms` for a full batch norm
    on the output (possibly with layer norms on hidden layers), :func:`meanfield.finite.layernorm.finite_width_stats`
    for layer norms on hidden layers (also with a centre-only batch norm on the output),
    :func:`meanfield.finite.hiddenbn.finite_width_stats` for a batch norm on the last hidden layer,
    :func:`meanfield.finite.deepbn.finite_width_stats` for one on a lower hidden layer,
    :func:`meanfield.finite.bnpair.finite_width_stats` for a hidden batch norm with a centre-only one on the output
    (with a full one: :func:`output_batch_norm_terms`, the statistics below from bnpair),
    :func:`meanfield.finite.multibn.finite_width_stats` for hidden batch norms on layers 1 and l, or one with layer
    norms below it, :func:`meanfield.finite.chain.finite_width_stats` for every other chain of hidden batch norms
    (with layer norms below them, and nothing or a batch norm on the output; s derived without an output norm),
    :func:`meanfield.finite.corrections.finite_width_stats` otherwise (mean-field values and a note where nothing is
    derived).

    Example:
        >>> net = Network(3, "relu", 2, 0.1, outputs=2, norms=["layer:1", "batch:last"])
        >>> sorted(finite_width_stats(net, 64, 16, predict(net, 64, 16))["includes_1_over_M"])
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
    """
    # each placement module answers None for a network that is not its own
    for placement in (layer_norm_finite_width_stats, hidden_batch_norm_finite_width_stats,
                      deep_batch_norm_finite_width_stats, batch_norm_pair_finite_width_stats,
                      multi_batch_norm_finite_width_stats, chain_finite_width_stats):
        out = placement(net, width, samples, base)
        if out is not None:
            return out
    if not _supported(net):
        return plain_finite_width_stats(net, width, samples, base)
    try:
        t = output_batch_norm_terms(net, width, samples)
    except InvalidArgument as error:
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    notes = ("full batch norm on the output: E G, m, s, kappa's with their derived O(1/M) terms; the coupling terms "
             "in closed form (exact Gaussian and chi-square moments, no random numbers)",
             "lambda_max: not corrected (the mean-field value or bounds)")
    if _hidden_batch_norm(net):
        notes = (notes[0] + f"; below it {net.norms[0]}: the statistics below from meanfield.finite.bnpair (the "
                 "units' laws on a fixed quasi-Monte Carlo rule, deterministic)", notes[1])
    elif len(net.norms) > 1:
        layers = ", ".join(str(n) for n in net.norms if isinstance(n, LayerNorm))
        notes = (notes[0] + f"; below it {layers}: the NTK and kernel shifts, entry covariances and four-sample "
                 "world through the norms (leading order, gradient independence for the backward weights)",
                 notes[1])
    return dict(gram_diag=t.mean_diag, gram_offdiag=t.mean_offdiag, m=t.m, s=t.s, kappa1=t.kappa1, kappa2=t.kappa2,
                includes_1_over_M=STATISTICS, notes=notes)


_EPS = 0.02      # the fluctuation's scale in the second differences (rounding stays below 1e-10 relative)


def _canon(labels: tuple) -> tuple:
    seen: dict = {}
    return tuple(seen.setdefault(x, len(seen)) for x in labels)




def _coupling_exact(w: World, M: int, sw: float, T: int) -> tuple:
    """The O(1/M) terms without a factor T (module docstring, (a)-(c)) of the mean block E[G_kk] (as (diag, offdiag))
    and of E||G_kk||_F^2, in closed form (module docstring), from the four-sample world ``w`` of layer L - 1 (width
    M, sigma_w^2 = sw of the output layer); returns the Monte Carlo's tuple with zero errors."""
    n = T - 1
    v = sw * (w.k[0] - w.k[1])
    D = M * (w.k[0] - w.k[1]) + sw * (w.n[0] - w.n[1])        # Theta' = D I + O 1 1^T and A 1 = 0
    kk, kt, yy = world_contractions(w, M, sw, T)      # Y^uv_ab in yy: slots (u, v, a, b)
    c = (sw / M) ** 2
    # (a): (1/8) E[Delta Delta] E[tr F0 He4], tr F0 = D (n - 1) / r^2; (b): (1/2) E[Delta_ab tr F1 He_ab]; (c): Stein
    trace = (D * (n - 1) * sw**2 * kk.sum() / (v**3 * n * (n * n - 4))
             - sw / (2 * v * v) * (kt[0] / (n * (n - 2)) + kt.sum() / (n * (n + 2)))
             - c / v**2 * (yy[0] / (n * (n - 2)) + yy.sum() / (n * (n + 2))))
    # the same with |F0|^2 = D^2 (n - 1) / r^4 and <F0, F1> = D tr(Q dTheta) / r^4 (the |F1|^2 term is term 2's)
    square = (3 * D * D * (n - 1) * sw**2 * kk.sum() / (v**4 * n * (n * n - 4) * (n - 4))
              - D * sw / v**3 * (3 * kt[0] / (n * (n - 2) * (n - 4)) + kt.sum() / (n * (n + 2) * (n - 2)))
              - 2 * c * D / v**3 * (3 * yy[0] / (n * (n - 2) * (n - 4)) + yy.sum() / (n * (n + 2) * (n - 2))))
    return float(trace / T), float(-trace / (T * (T - 1))), float(square), 0.0, 0.0, 0.0


@functools.lru_cache(maxsize=32)
def _coupling_monte_carlo(net: Network, width: int, samples: int, draws: int, seed: int) -> tuple:
    """The O(1/M) terms without a factor T (module docstring, (a)-(c)) of the mean block E[G_kk] (as (diag, offdiag))
    and of E||G_kk||_F^2, by Monte Carlo over the T-dimensional Gaussian laws they are integrals over (fixed seed).

    Returns (d_diag, d_offdiag, d_square, standard errors of the three); d_square is per output block."""
    T, L = samples, net.depth
    M = net.widths(width)[L - 1]
    sw = float(net.sigma_w2[L - 1])
    w = below_world(net, width)
    rng = np.random.default_rng(seed)
    # the T-world: the vector (K_tt' for t <= t', N_tt' for t <= t') and its covariance by label patterns
    tri = [(a, b) for a in range(T) for b in range(a, T)]
    nt = len(tri)
    cov = np.zeros((2 * nt, 2 * nt))
    for i, (a, b) in enumerate(tri):
        for j, (c, d) in enumerate(tri):
            lab = _canon((a, b, c, d))
            p1, p2 = pair_index(lab[0], lab[1]), pair_index(lab[2], lab[3])
            cov[i, j], cov[i, nt + j] = w.cov[p1, p2], w.cov[p1, 10 + p2]
            cov[nt + i, j], cov[nt + i, nt + j] = w.cov[10 + p1, p2], w.cov[10 + p1, 10 + p2]
    vals, vecs = np.linalg.eigh(cov)
    root = vecs * np.sqrt(np.clip(vals, 0, None))     # clip: rounding-level negative eigenvalues only
    Kbar = (w.k[0] - w.k[1]) * np.eye(T) + w.k[1]
    Nbar = (w.n[0] - w.n[1]) * np.eye(T) + w.n[1]
    B = np.linalg.svd(np.eye(T) - 1.0 / T)[0][:, : T - 1]     # orthonormal basis of the complement of 1
    iu = np.triu_indices(T)

    def sym(x: np.ndarray) -> np.ndarray:
        out = np.zeros(x.shape[:-1] + (T, T))
        out[..., iu[0], iu[1]] = x
        return out + np.swapaxes(out, -1, -2) - out * np.eye(T)

    def gram(K: np.ndarray, N: np.ndarray, z: np.ndarray) -> tuple:
        Om = sw * (B.T @ K @ B)
        try:
            chol = np.linalg.cholesky(Om)
        except np.linalg.LinAlgError:
            raise InvalidArgument("width", width, "a width where the realized kernel's fluctuations are small "
                                  "against its spread K_tt - K_ts (the O(1/M) expansion)") from None
        g = (chol @ z[..., None])[..., 0] @ B.T
        g2 = (g * g).sum(-1)[..., None, None]
        A = np.sqrt(T / g2) * (np.eye(T) - 1.0 / T - g[..., :, None] * g[..., None, :] / g2)
        return A, A @ (M * K + sw * N) @ np.swapaxes(A, -1, -2) / T

    mean_parts, square_parts = [], []
    chunk = 2000
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        # (a), (b): the second-order terms are quadratic in the fluctuation: evaluated at EPS times it and divided by
        # EPS^2 (the Gaussian surrogate's tails would otherwise make Omega indefinite on some draws at small M)
        xi = rng.standard_normal((n, 2 * nt)) @ root.T * _EPS
        dK, dN = sym(xi[:, :nt]), sym(xi[:, nt:])
        z = rng.standard_normal((n, T - 1))
        A0, G0 = gram(np.broadcast_to(Kbar, dK.shape), np.broadcast_to(Nbar, dK.shape), z)
        _, Gp = gram(Kbar + dK, Nbar + dN, z)
        _, Gm = gram(Kbar - dK, Nbar - dN, z)
        dG = ((Gp + Gm) / 2 - G0) / _EPS**2
        var_part = A0 @ (M * dK + sw * dN) @ np.swapaxes(A0, -1, -2) / T
        # in s, the square of the forward part of dTheta at the mean law is already in the entry variances (term 2)
        sq = (((Gp**2).sum((1, 2)) + (Gm**2).sum((1, 2))) / 2 - (G0**2).sum((1, 2))
              - (var_part**2).sum((1, 2))) / _EPS**2
        mean_parts.append(np.stack([np.einsum("nii->n", dG) / T,
                                    (dG.sum((1, 2)) - np.einsum("nii->n", dG)) / (T * (T - 1))], axis=1))
        square_parts.append(sq)
    # (c), Stein on the output row: (sw / M)^2 E[A Z A^T] / T with Z_uv = g^T Y^uv g / v^2 - tr(Pi Y^uv) / v, by its
    # own Monte Carlo over g ~ N(0, v Pi); in s it enters as twice its inner product with the mean-field block
    v = sw * (w.k[0] - w.k[1])
    Y = class_tensor(T, lambda lab: w.y[(0, lab[1])][lab[2], lab[3]])
    Pi = np.eye(T) - 1.0 / T
    trY = np.einsum("ab,uvab->uv", Pi, Y)
    Ymat = Y.reshape(T * T, T * T)
    c_mean, c_square = [], []
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        g = (rng.standard_normal((n, T - 1)) * math.sqrt(v)) @ B.T
        g2 = (g * g).sum(-1)[:, None, None]
        A = np.sqrt(T / g2) * (Pi - g[:, :, None] * g[:, None, :] / g2)
        gg = np.einsum("na,nb->nab", g, g).reshape(n, T * T)
        Z = (gg @ Ymat.T).reshape(n, T, T) / v**2 - trY / v
        AZA = A @ Z @ A * (sw / M) ** 2 / T                     # A is symmetric
        D = (w.k[0] - w.k[1]) * M + sw * (w.n[0] - w.n[1])      # Theta_bar' = D I + O 1 1^T and A 1 = 0
        base = D * (A @ A) / T
        c_mean.append(np.stack([np.einsum("nii->n", AZA) / T,
                                (AZA.sum((1, 2)) - np.einsum("nii->n", AZA)) / (T * (T - 1))], axis=1))
        c_square.append(2 * (base * AZA).sum((1, 2)))
    ab = np.concatenate(mean_parts)
    c = np.concatenate(c_mean)
    sq = np.concatenate(square_parts) + np.concatenate(c_square)
    tot = ab + c
    n = len(tot)
    return (float(tot[:, 0].mean()), float(tot[:, 1].mean()), float(sq.mean()),
            float(tot[:, 0].std() / math.sqrt(n)), float(tot[:, 1].std() / math.sqrt(n)),
            float(sq.std() / math.sqrt(n)))


def coupling_contractions(net: Network, width: int, samples: int) -> dict:
    """S_KK = sum_i KK_i, KT_1, S_KT, Y_1, S_Y: the full contractions X_i = sum X Pi Pi of term 3 (module docstring).

    The four-sample world's 4-tensors (Cov(K_ab, K_cd), Cov(K_ab, Theta'_cd) with Theta' = M K + sigma_w^2 N, and
    Y^ab_cd) summed over the T^4 index tuples by the 15 label patterns, as the exact coupling terms use them.

    Args:
        net: as :func:`output_batch_norm_terms` (a full batch norm on the output, depth >= 2, possibly layer norms
            on hidden layers).
        width: M.
        samples: T >= 6.

    Returns:
        dict with the floats S_KK, KT_1, S_KT, Y_1, S_Y.

    Raises:
        InvalidArgument: as :func:`output_batch_norm_terms` (exact method).

    Example:
        >>> c = coupling_contractions(Network(2, "tanh", 2, 0.1, norms=["batch:last"]), 64, 12)
        >>> sorted(c), bool(c["S_KK"] > 0)
        (['KT_1', 'S_KK', 'S_KT', 'S_Y', 'Y_1'], True)
    """
    M, T, _, _ = _check(net, width, samples, DRAWS, "exact")
    L = net.depth
    ML = net.widths(M)[L - 1]
    sw = float(net.sigma_w2[L - 1])
    w = below_world(net, M)
    kk, kt, yy = world_contractions(w, ML, sw, T)
    return dict(S_KK=float(kk.sum()), KT_1=float(kt[0]), S_KT=float(kt.sum()), Y_1=float(yy[0]), S_Y=float(yy.sum()))
