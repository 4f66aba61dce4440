"""Several normalizations with a hidden batch norm: O(1/M) corrections of E G, m, kappa_1, kappa_2 and s.

The placements: (a) full batch norms on hidden layer 1 and on a hidden layer l (1 < l <= L - 1); (b) one full batch
norm on a hidden layer l >= 2 with layer norms on hidden layers below it; plain layers elsewhere, no other
normalization. The O(1/M) terms are a chain of the single-norm steps, each taking the statistics of the layers below
it as its input (in (b) the layers below the batch norm are :mod:`meanfield.finite.layernorm_world`'s world and
:mod:`meanfield.finite.layernorm`'s kernel and NTK shifts, as below a batch norm on the output, and only 3., 4. run):

1. The batch-normalized layer 1 over the inputs: its realized kernel K^1 and NTK average N^1 to O(1/M) (means and
   mean shifts) are :func:`meanfield.finite.hiddenbn.batch_norm_layer`'s (exact sphere quadrature). What the layers
   above need beyond that is the four-sample world of layer 1 (:class:`meanfield.finite.fourworld.World`): the
   covariance of (K^1, N^1) over any pattern of four equal or distinct samples and the sandwiched NTK
   Y^uv_ab = h_a^T X_uv h_b. Given the inputs the M_1 units are i.i.d. (each normalized over the T samples exactly), so
   Cov = (the unit's own covariance) / M_1 + G Cov(K^0) G^T, G the first variation of E[K^1, N^1 | K^0] (Price's theorem
   on g ~ N(0, sigma_w^2 Pi K^0 Pi) with Hermite weights at Omega = v Pi, plus N's direct dependence through
   Theta' = M_0 K^0), and Y = M_1 E[phi_a phi_b X_aa(u, v)] (no NTK between the units on layer 1). Every expectation
   is over one unit's normalized law: z uniform on the sphere |z|^2 = T in the complement of 1, independent of
   beta = sigma^2 / v ~ chi^2_{T-1} / T (whose moments are exact). Up to four coordinates of z enter (the pattern
   (0, 1, 2, 3) of Cov(K_01, K_23)); they are integrated by a fixed quasi-Monte Carlo rule on the sphere (QMC_POINTS
   unscrambled Sobol points, antithetic, averaged over the sample permutations by pattern: deterministic, no seed;
   against hiddenbn's exact two-sample quadrature its covariances agree within 5e-4 of their largest entry, and E G
   moves by 1e-5 relative from 2^13 to 2^17 points).
2. Plain layers 2..l-1 between the norms: the four-sample world recursion of :mod:`meanfield.finite.fourworld`
   (its :func:`meanfield.finite.fourworld.plain_step`) started at layer 1's world (N^1 a variable of its own, as in
   :mod:`meanfield.finite.deepbn`), and the kernel and NTK mean shifts by the plain forward recursion from layer 1
   (Roberts-Yaida-Hanin for the kernel, the NTK's E[c(Q) Z] + Stein(Y) as in :mod:`meanfield.finite.deepbn`).
3. The batch norm on layer l: :func:`meanfield.finite.hiddenbn.batch_norm_layer`'s terms (first order in the mean
   shifts below, second order in the fluctuations below by Price's theorem, Stein on the layer's rows; exact sphere
   quadrature) evaluated with the world of layer l - 1 from 1. or 2. in place of a plain network's
   (:func:`batch_norm_step`).
4. Plain layers l+1..L-1 above: the plain forward recursion of :mod:`meanfield.finite.deepbn` from layer l's
   (K^l, N^l) to E[T G_kk | layer L - 1] = 1 + M_{L-1} K^{L-1} + sigma_w^2 N^{L-1}; between outputs E G_kl = 0.

With layer 1's world replaced by a plain network's (fourworld's ``realized_world``) step 3 is hiddenbn's
``batch_norm_layer`` to rounding (a test holds them equal). The mean-field values are ``predict``'s; only the O(1)
shifts of T E G come from here. Plain layers between the norms can have a negative mean overlap (tanh above a batch
norm: Q_ts = -0.012 at sigma_w^2 = 2, sigma_b^2 = 0.1); their four-sample means then take the common part imaginary
(u_i = sqrt(q1 - q2) e_i + i sqrt(-q2) z, exact for products of the Gaussian-smoothed, analytic one-sample functions).

The entry variances (s), placement (a): deepbn's four-point layer sum (gradient independence above the upper norm,
the layers <= l one term with the fresh W^{l+1}'s Wick noise). Its sum over pairs of units a != c of layer l needs the
NTK's spread between them, Sigma4 = E[S_ac S_ac], S_ac = w_a^T X^{l-1} w_c. For l = 2, X^1 is diagonal in layer 1's
units: Sigma4 = (sigma_w^2)^2 / M_1 E[X_bb(t1, s1) X_bb(t2, s2)] of one batch-normalized unit (the quasi-Monte Carlo
moments of 1.); for l >= 3, :mod:`meanfield.finite.ntkspread`'s recursion of Phi through the plain layers between,
started at layer 1's Phi^1 = M_1 E[X_bb X_bb]; with hiddenbn's U of the upper norm's unit. s still misses the next
order of the entry variances, O(T/M^2) (-2% to -3% at M = 64, T = 8, as for one batch norm on layer 2 or 3).

Not derived here (mean-field values, named in the notes): s in placement (b) (the NTK's spread behind layer norms),
lambda_max, activations with unknown kinks on the batch-normalized layers, inputs with a negative mean product,
T < 6. Every other chain of hidden batch norms (centre-only ones, a lower norm above layer 1, three or more, with a
norm on the output) is :mod:`meanfield.finite.chain`'s, which carries this module's steps through any such chain;
layer norms above a batch norm too (:mod:`meanfield.finite.chain_layernorm`'s step).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from ..spec.network import BatchNorm, LayerNorm, Network
from ..theory.fisher import predict
from .bnstep import batch_norm_from_world, unit_pair_moments, unit_slope_moments
from .deepbn import entry_variance_above, ntk_carry, plain_forward
from .fourworld import World, carry_world, class_tensor, four_sample_mean, pair_index, plain_step
from .hiddenbn import BatchNormLayer, batch_norm_layer
from .layernorm import layer_norm_kernel_mean_shift, layer_norm_ntk_mean_shift
from .layernorm_world import layer_norm_world
from .spherebn import chi_moment

__all__ = ["MultiBatchNormTerms", "multi_batch_norm_terms", "BelowWorld", "first_layer_world", "batch_norm_step",
           "finite_width_stats", "CORRECTED", "QMC_POINTS", "world_above", "ntk_shift_between",
           "negative_overlap_mean"]

CORRECTED = frozenset({"gram_diag", "gram_offdiag", "m", "kappa1", "kappa2"})
QMC_POINTS = 2**15      # Sobol points on the sphere (each with its antipode) for layer 1's four-coordinate moments
_P4 = tuple((a, b) for a in range(4) for b in range(a, 4))        # fourworld's ten pairs of four samples
_PAIRS = ((0, 0), (0, 1), (1, 1))


def _placement(net: Any) -> tuple[str, int] | None:
    """("batch", l): full batch norms on hidden layers 1 and l (1 < l <= L - 1); ("layer", l): one full batch norm on
    hidden layer l >= 2 with layer norms on hidden layers below it; no other normalization; else None."""
    if not isinstance(net, Network) or net.is_symbolic or len(net.norms) < 2 or net.depth < 3:
        return None
    batch = [n for n in net.norms if isinstance(n, BatchNorm)]
    layer = [n for n in net.norms if isinstance(n, LayerNorm)]
    if len(batch) + len(layer) != len(net.norms) or any(n.center_only for n in batch):
        return None
    if len(batch) == 2 and not layer:
        low, high = sorted(n.layer for n in batch)
        return ("batch", high) if low == 1 and 1 < high <= net.depth - 1 else None
    if len(batch) == 1:
        l = batch[0].layer
        return ("layer", l) if 2 <= l <= net.depth - 1 and all(n.layer < l for n in layer) else None
    return None


def _check(net: Any, width: Any, samples: Any) -> tuple[int, int]:
    """(M, T) of a network this module covers (T >= 6: E[1/sigma^4] enters), else raise."""
    where = _placement(net)
    if where is None:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network whose only normalizations are full batch norms on hidden layer 1 "
                              "and on one hidden layer l > 1, or one full batch norm on a hidden layer l > 1 with "
                              "layer norms below it")
    M, T = check_int("width", width, minimum=1), check_int("samples", samples, minimum=6)
    for j in ((1, where[1]) if where[0] == "batch" else (where[1],)):
        if Unit.of(net.phi(j)).kinks is None:
            raise InvalidArgument("net", net.describe(), "activations with known kinks (breaks of phi or phi') on "
                                  "the batch-normalized layers")
    if not 0 <= float(net.input_q2) < float(net.input_q1):
        raise InvalidArgument("net", net.describe(), "distinct inputs with a non-negative mean product "
                              "(0 <= input_q2 < input_q1)")
    return M, T


def _prefix(net: Network, depth: int, norms: tuple) -> Network:
    """The network of layers 1..depth of ``net`` with one output and the given norms."""
    acts = net.activation[: depth - 1]
    return Network(depth, acts if len(acts) > 1 else acts[0], net.sigma_w2[:depth], net.sigma_b2[:depth], outputs=1,
                   alphas=net.alphas[:depth], norms=list(norms), input_q1=net.input_q1, input_q2=net.input_q2)


@dataclass(frozen=True, eq=False)
class BelowWorld:
    """What a batch norm on layer l needs of the layers below it (hiddenbn's inputs, there of a plain network).

    Attributes:
        world: the four-sample world of layer l - 1 (means of K, N, their 20 x 20 covariance, Y^uv_ab).
        shift_k: M_{l-1} (E K^{l-1} - K_bar) for (t t, t s).
        shift_theta: the O(1) mean shift of 1 + M_{l-1} K^{l-1} + sigma_w^2 N^{l-1} (the NTK of layer l's
            pre-activations) for (t t, t s).
        spread: S4[t1, s1, t2, s2] = E[S_ac(t1, s1) S_ac(t2, s2)] for two units a != c of layer l, S_ac = w_a^T X w_c
            (X the NTK of layer l - 1's outputs, diagonal in its units): the NTK's spread between layer l's units that
            the entry variances need; None where not derived.
    """

    world: World
    shift_k: tuple
    shift_theta: tuple
    spread: np.ndarray | None = None


# -- 1. the batch-normalized layer 1: its four-sample world ---------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _sphere_points(T: int, points: int) -> np.ndarray:
    """z uniform on the sphere |z|^2 = T in the complement of 1: unscrambled Sobol points (shifted off the cube's
    faces) mapped through the normal quantile and normalized, each with its antipode (deterministic)."""
    from scipy.stats import norm, qmc     # here: scipy.stats takes seconds to import, and only this rule needs it

    m = max(int(round(math.log2(points))), 4)
    u = qmc.Sobol(T - 1, scramble=False).random_base2(m) + 0.5 / 2**m
    B = np.linalg.svd(np.eye(T) - 1.0 / T)[0][:, : T - 1]
    g = norm.ppf(u) @ B.T
    z = math.sqrt(T) * g / np.linalg.norm(g, axis=1)[:, None]
    return np.concatenate([z, -z])


@functools.lru_cache(maxsize=8)
def _pattern_codes(T: int) -> tuple:
    """Per T^4 index tuple its pattern code (which of the six slot pairs are equal) and the codes present."""
    idx = np.indices((T,) * 4).reshape(4, -1)
    code = np.zeros(idx.shape[1], dtype=int)
    for bit, (a, b) in enumerate(((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))):
        code |= (idx[a] == idx[b]).astype(int) << bit
    return code, np.unique(code)


def _symmetrize(E: np.ndarray) -> np.ndarray:
    """The T^4 tensor averaged over each pattern of equal indices (the law is exchangeable in the T samples)."""
    T = E.shape[0]
    code, codes = _pattern_codes(T)
    flat = E.reshape(-1)
    out = np.empty_like(flat)
    for c in codes:
        where = code == c
        out[where] = flat[where].mean()
    return out.reshape(E.shape)


def _moment4(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """E[a_i b_j c_k d_l] over the points (rows), as a T^4 tensor, symmetrized by pattern."""
    n, T = a.shape
    out = np.zeros((T * T, T * T))
    # one BLAS thread: these thin products are memory-bound, and threads only contend on a shared machine
    with threadpool_limits(1, "blas"):
        for s in range(0, n, 8192):
            left = (a[s:s + 8192, :, None] * b[s:s + 8192, None, :]).reshape(-1, T * T)
            right = (c[s:s + 8192, :, None] * d[s:s + 8192, None, :]).reshape(-1, T * T)
            out += left.T @ right
    return _symmetrize(out.reshape((T,) * 4) / n)


def first_layer_world(net: Network, width: int, samples: int) -> BelowWorld:
    """The four-sample world of a full batch norm on layer 1 over the inputs, with its mean shifts (module docstring 1).

    Means and mean shifts are :func:`meanfield.finite.hiddenbn.batch_norm_layer`'s (exact); the 20 x 20 covariance
    of (K^1, N^1) and Y^uv_ab come from one unit's moments of up to four coordinates (fixed quasi-Monte Carlo rule).

    Args:
        net: a network of this module (full batch norms on hidden layers 1 and l > 1).
        width, samples: M and T (T >= 6).

    Returns:
        :class:`BelowWorld` of layer 1 (shift_theta for the pre-activations of layer 2).

    Raises:
        InvalidArgument: another network, T < 6.

    Example:
        >>> w = first_layer_world(Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:1", "batch:2"]), 64, 8).world
        >>> w.cov.shape, bool(np.all(np.linalg.eigvalsh(w.cov) > -1e-12))
        ((20, 20), True)
    """
    M, T = _check(net, width, samples)
    if _placement(net)[0] != "batch":
        raise InvalidArgument("net", net.describe(), "full batch norms on hidden layer 1 and on a hidden layer l > 1")
    return _layer_one(_prefix(net, 2, ("batch:1",)), M, T)


@functools.lru_cache(maxsize=16)
def _layer_one(net: Network, M: int, T: int) -> BelowWorld:
    """:func:`first_layer_world` of the two-layer ``net`` (batch norm on layer 1; only its layers 1, 2 enter)."""
    bn1 = batch_norm_layer(net, M, T)
    widths = net.widths(M)
    M0, M1 = widths[0], widths[1]
    sw1, sw2 = float(net.sigma_w2[0]), float(net.sigma_w2[1])
    q1, q2 = float(net.input_q1), float(net.input_q2)
    v, Dp = sw1 * (q1 - q2), M0 * (q1 - q2)          # Omega = v Pi; Theta' = M_0 K^0 = D' I + .. 1 1^T
    unit = Unit.of(net.phi(1))
    z = _sphere_points(T, QMC_POINTS)
    F, P = np.asarray(unit.f(z), dtype=float), np.asarray(unit.df(z), dtype=float)
    Pz, one = P * z, np.ones_like(z)
    Pi = np.eye(T) - 1.0 / T
    c1, cm1, cm2 = chi_moment(T, 1), chi_moment(T, -1), chi_moment(T, -2)
    # E[P_a P_b R_ab ...] with R = Pi - z z^T / T, expanded into products of per-coordinate features
    PP, PzPz = _moment4(P, P, one, one), _moment4(Pz, Pz, one, one)
    ppr = np.einsum("ab,abcd->abcd", Pi, PP) - PzPz / T                     # E[(PPR)_ab] (last slots free)
    FF = _moment4(F, F, one, one)
    FFFF = _moment4(F, F, F, F)
    FFPP, FFPzPz = _moment4(F, F, P, P), _moment4(F, F, Pz, Pz)
    ffppr = np.einsum("cd,abcd->abcd", Pi, FFPP) - FFPzPz / T                # E[F_a F_b (PPR)_cd]
    PPPP, PPPzPz = _moment4(P, P, P, P), _moment4(P, P, Pz, Pz)
    PzPzPzPz = _moment4(Pz, Pz, Pz, Pz)
    pprppr = (np.einsum("ab,cd,abcd->abcd", Pi, Pi, PPPP) - np.einsum("ab,abcd->abcd", Pi, PPPzPz) / T
              - np.einsum("cd,cdab->abcd", Pi, PPPzPz) / T + PzPzPzPz / T**2)
    kn = Dp / v * cm1                                   # N_ab = D' / (v beta) P_a P_b R_ab
    mean = np.array([FF[a, b, 0, 0] for a, b in _P4] + [kn * ppr[a, b, 0, 0] for a, b in _P4])
    second = np.empty((20, 20))
    for i, (a, b) in enumerate(_P4):
        for j, (c, d) in enumerate(_P4):
            second[i, j] = FFFF[a, b, c, d]
            second[i, 10 + j] = second[10 + j, i] = kn * ffppr[a, b, c, d]
            second[10 + i, 10 + j] = (Dp / v) ** 2 * cm2 * pprppr[a, b, c, d]
    own = (second - np.outer(mean, mean)) / M1
    # the inputs' fluctuation pushed through E[K^1, N^1 | K^0]: Price on g (Hermite weights at v Pi), Theta' = M_0 K^0
    om = sw1 / v
    FFzz, PPzz, PzPzzz = _moment4(F, F, z, z), _moment4(P, P, z, z), _moment4(Pz, Pz, z, z)
    pprzz = np.einsum("ab,abij->abij", Pi, PPzz) - PzPzzz / T                 # E[(PPR)_ab z_i z_j]
    gK = om / 2 * (c1 * FFzz - np.einsum("ab,ij->abij", FF[:, :, 0, 0], Pi))
    PPz1, PzPz1 = _moment4(P, Pz, one, z), _moment4(Pz, P, z, one)
    # E[P_a P_b R_ai R_bj] = Pi_ai Pi_bj E[P P] - Pi_ai E[P_a (Pz)_b z_j] / T - Pi_bj E[(Pz)_a P_b z_i] / T + ...
    prr = (np.einsum("ai,bj,ab->abij", Pi, Pi, PP[:, :, 0, 0]) - np.einsum("ai,abij->abij", Pi, PPz1) / T
           - np.einsum("bj,abij->abij", Pi, PzPz1) / T + PzPzzz / T**2)
    gN = om / 2 * Dp / v * (pprzz - cm1 * np.einsum("ab,ij->abij", ppr[:, :, 0, 0], Pi)) + M0 * cm1 / v * prr
    G = np.stack([gK[a, b].ravel() for a, b in _P4] + [gN[a, b].ravel() for a, b in _P4])
    Q = (q1 - q2) * np.eye(T) + q2
    C0 = (np.einsum("ik,jl->ijkl", Q, Q) + np.einsum("il,jk->ijkl", Q, Q)).reshape(T * T, T * T) / M0
    cov = own + G @ C0 @ G.T
    cov = (cov + cov.T) / 2
    y = {(0, s): M1 * kn * np.array([[ffppr[a, bb, 0, s] for bb in range(4)] for a in range(4)]) for s in (0, 1)}
    world = World((float(bn1.kbar[0]), float(bn1.kbar[1])), (float(bn1.nbar[0]), float(bn1.nbar[1])), cov, y)
    shift_k = (M1 * float(bn1.dk[0]), M1 * float(bn1.dk[1]))
    # S_ac = sum_b w_ab w_cb X_bb, the rows of W^2 independent: E[S_ac S_ac] = (sw2^2 / M_1) E[X_bb X_bb] of one unit
    # (the inputs' fluctuation in Theta^1 = 1 + x.x is relatively O(1/M) here: A kills the 1 and M_0 K^0 is O(M))
    spread = sw2**2 / M1 * (Dp / v) ** 2 * cm2 * pprppr
    return BelowWorld(world, shift_k, tuple(M1 * float(bn1.dk[p]) + sw2 * float(bn1.dn[p]) for p in (0, 1)), spread)


# -- 2. and 4.: plain layers above a batch-normalized layer -------------------------------------------------------

def ntk_shift_between(net: Network, width: int, b: BatchNormLayer, lo: int, hi: int) -> tuple:
    """((dTheta_tt, dTheta_ts), (M dK_tt, M dK_ts)): the O(1) shifts of the NTK of layer hi's pre-activations,
    1 + M_{hi-1} K + sigma_w^2 N, and M_{hi-1} x the mean shift of K^{hi-1}, carried from the batch-normalized layer lo
    by deepbn's plain recursion (hi = lo + 1: layer lo's own).

    Example:
        >>> net = Network(4, "tanh", 2, 0.1, norms=["batch:1", "batch:3"])
        >>> b = batch_norm_layer(_prefix(net, 2, ("batch:1",)), 64, 8)
        >>> (dd, do), (sk, so) = ntk_shift_between(net, 64, b, 1, 3)
        >>> all(math.isfinite(x) for x in (dd, do, sk, so))
        True
    """
    fw = plain_forward(net, width, b, lo, hi)
    (_, dd), (_, do) = ntk_carry(net, width, b, lo, hi, fw)
    widths, dk = fw["widths"], fw["dk"]
    return (dd, do), (widths[hi - 1] * float(dk[hi - 1][0]), widths[hi - 1] * float(dk[hi - 1][1]))


@functools.lru_cache(maxsize=64)
def _negative_rule(unit: Unit, q1: float, q2: float, nodes: int = 96) -> tuple:
    """The conditioning u_i = sqrt(q1 - q2) e_i + i sqrt(-q2) z for four exchangeable samples with q2 < 0: per z node
    (Gauss-Hermite) the smoothed m_pq(i s z) = E_e[phi^p phi'^q (i s z + sqrt(q1 - q2) e)], an entire function of its
    argument, by Gauss-Legendre over x = i s z + sqrt(c) e on real pieces split at 0 and at the unit's kinks with the
    complex Gaussian weight."""
    c, s = q1 - q2, math.sqrt(-q2)
    zt, zw = np.polynomial.hermite_e.hermegauss(40)
    zw = zw / zw.sum()
    g, gw = np.polynomial.legendre.leggauss(nodes)
    top = 12 * math.sqrt(c) + 12 * s
    edges = [-top, *sorted({0.0} | {float(k) for k in (unit.kinks or ()) if abs(float(k)) < top}), top]
    x = np.concatenate([(g + 1) * (b - a) / 2 + a for a, b in zip(edges[:-1], edges[1:])])
    xw = np.concatenate([gw * (b - a) / 2 for a, b in zip(edges[:-1], edges[1:])])
    w = np.exp(-((x[None, :] - 1j * s * zt[:, None]) ** 2) / (2 * c)) / math.sqrt(2 * math.pi * c) * xw[None, :]
    return zw, w, x, np.asarray(unit.f(x), dtype=float), np.asarray(unit.df(x), dtype=float)


def negative_overlap_mean(unit: Unit, q1: float, q2: float, factors: tuple) -> float:
    """fourworld's ``four_sample_mean`` for a negative overlap q2 < 0 (the common part imaginary: u_i = sqrt(q1 - q2)
    e_i + i sqrt(-q2) z has Cov u = (q1 - q2) I + q2 1 1^T, and every product of phi, phi' of the u_i is an average over
    z of products of the Gaussian-smoothed, hence analytic, one-sample functions). Kinds 'f' (phi), 'd' (phi') and,
    as in :func:`meanfield.finite.layernorm_world.four_sample_moment`, 'u' (the pre-activation itself).

    Example:
        >>> from meanfield.integrals.quadrature import IDENTITY
        >>> round(negative_overlap_mean(IDENTITY, 1.0, -0.1, (("f", 0), ("f", 1))), 8)     # E[u_0 u_1] = q2
        -0.1
        >>> round(negative_overlap_mean(IDENTITY, 1.0, -0.1, (("u", 0), ("u", 0), ("u", 1), ("u", 1))), 8)  # 1 + 2 q2^2
        1.02
    """
    if not float(q2) < 0 < float(q1) - float(q2):
        raise InvalidArgument("q2", q2, "a negative overlap q2 < 0 with q1 > q2 (four_sample_mean takes q2 >= 0)")
    zw, w, x, fa, fd = _negative_rule(unit, float(q1), float(q2))
    powers = [[0, 0, 0] for _ in range(4)]
    for item in factors:
        if not (isinstance(item, tuple) and len(item) == 2 and item[0] in ("f", "d", "u") and item[1] in range(4)):
            raise InvalidArgument("factors", factors, "(kind, sample) pairs, kind 'f', 'd' or 'u', sample 0..3")
        powers[item[1]]["fdu".index(item[0])] += 1
    out = zw.astype(complex)
    for p, q, k in powers:
        if p or q or k:
            out = out * (w @ (fa**p * fd**q * x**k))
    return float(out.sum().real)


def world_above(net: Network, width: int, start: World, lo: int, hi: int) -> World:
    """fourworld's world recursion through the plain layers lo+1..hi-1, started at the batch-normalized layer lo's
    world (X^lo = (K^lo, N^lo): N^lo a variable of its own); a negative mean overlap takes the common part imaginary.

    Example:
        >>> net = Network(4, "tanh", 2, 0.1, outputs=2, norms=["batch:1", "batch:3"])
        >>> w1 = first_layer_world(net, 64, 8).world
        >>> world_above(net, 64, w1, 1, 3).cov.shape, world_above(net, 64, w1, 1, 2).cov is not None
        ((20, 20), True)
    """
    widths = net.widths(width)
    sw = [float(x) for x in net.sigma_w2]
    kbar, nbar = start.k, start.n
    theta = (1 + widths[lo] * kbar[0] + sw[lo] * nbar[0], 1 + widths[lo] * kbar[1] + sw[lo] * nbar[1])
    e = np.zeros((10, 20))
    e[:, 10:] = np.eye(10)

    def step(net: Network, widths: tuple, j: int, qa: float, qb: float, theta: tuple, y: dict) -> tuple:
        unit = Unit.of(net.phi(j))
        mean = (functools.partial(four_sample_mean, unit, qa, qb) if qb >= 0 else
                functools.partial(negative_overlap_mean, unit, qa, qb))
        return plain_step(mean, unit, qa, qb, theta, y, widths[j], widths[j - 1], sw[j - 1], False)
    return carry_world(net, width, step, lo, hi, (kbar, nbar, theta, start.y), {(lo, lo): start.cov}, {lo: e})


def _below_upper(net: Network, width: int, samples: int) -> BelowWorld:
    """The world of layer l - 1 under the upper batch norm on layer l, with its mean shifts (module docstring 1, 2)."""
    kind, l = _placement(net)
    if kind == "layer":      # layer norms below: layernorm's world and shifts of the layers under the batch norm
        below = _prefix(net, l, tuple(str(n) for n in net.norms if isinstance(n, LayerNorm)))
        shift_k = layer_norm_kernel_mean_shift(below, width)[l - 1]
        return BelowWorld(layer_norm_world(below, width), (float(shift_k[0]), float(shift_k[1])),
                          tuple(float(x) for x in layer_norm_ntk_mean_shift(below, width)))
    first = first_layer_world(net, width, samples)
    if l == 2:
        return first
    b = batch_norm_layer(_prefix(net, 2, ("batch:1",)), width, samples)
    shift_theta, shift_k = ntk_shift_between(net, width, b, 1, l)
    return BelowWorld(world_above(net, width, first.world, 1, l), shift_k, shift_theta,
                      _spread_between(net, width, first, l))


def _spread_between(net: Network, width: int, first: BelowWorld, l: int) -> np.ndarray:
    """Sigma4 of the upper norm on layer l >= 3: ntkspread's recursion Phi^j = M_j E[phi'^4] E[Theta_bb Theta_bb] +
    M_j (M_j - 1) c c (sigma_w^2 / M_{j-1})^2 Phi^{j-1} through the plain layers 2..l-1, started at the batch-normalized
    layer 1's Phi^1 = M_1 E[X_bb X_bb] (its NTK is diagonal in its units); E[Theta_bb Theta_bb] = the means' product +
    Cov(M K + sigma_w^2 N) of the world below + the unit's own Wick term."""
    widths = net.widths(width)
    T = first.spread.shape[0]
    sws = [float(x) for x in net.sigma_w2]
    phi = first.spread[:4, :4, :4, :4] * (widths[1] / sws[1]) ** 2       # the table at canonical labels 0..3
    for j in range(2, l):
        w = first.world if j == 2 else world_above(net, width, first.world, 1, j)
        sw, sb, Mb = sws[j - 1], float(net.sigma_b2[j - 1]), widths[j - 1]
        theta = (1 + Mb * w.k[0] + sw * w.n[0], 1 + Mb * w.k[1] + sw * w.n[1])
        qa, qb = sw * w.k[0] + sb, sw * w.k[1] + sb
        mean = functools.partial(four_sample_mean if qb >= 0 else negative_overlap_mean, Unit.of(net.phi(j)), qa, qb)

        def value(lab: tuple, old=phi, mean=mean, w=w, sw=sw, Mb=Mb, theta=theta, Mj=widths[j]) -> float:
            t1, s1, t2, s2 = lab
            m4 = mean(tuple(("d", i) for i in lab))
            a, b = pair_index(t1, s1), pair_index(t2, s2)
            shared = Mb * Mb * w.cov[a, b] + Mb * sw * (w.cov[a, 10 + b] + w.cov[10 + a, b]) + sw * sw * w.cov[10 + a,
                                                                                                             10 + b]
            coef = (sw / Mb) ** 2
            c1, c2 = mean((("d", t1), ("d", t2))), mean((("d", s1), ("d", s2)))
            return (Mj * m4 * (theta[t1 != s1] * theta[t2 != s2] + shared)
                    + Mj * m4 * coef * (old[t1, s1, t2, s2] + old[t1, s1, s2, t2])
                    + Mj * (Mj - 1) * c1 * c2 * coef * old[t1, s1, t2, s2])
        phi = class_tensor(4, value)
    return (sws[l - 1] / widths[l - 1]) ** 2 * class_tensor(T, lambda lab: phi[lab])


# -- 3. the batch norm on layer l over a given world (bnstep's step) ----------------------------------------------

def batch_norm_step(unit: Unit, below: BelowWorld, width_below: int, width: int, sw: float,
                    samples: int) -> BatchNormLayer:
    """(K^l, N^l) of a full batch norm on layer l >= 2 to O(1/M), given the layers below as a :class:`BelowWorld`.

    :func:`meanfield.finite.hiddenbn.batch_norm_layer`'s terms with the world of layer l - 1 given (there that of the
    plain network below): first order in the mean shifts, second order in the fluctuations (Price, Hermite weights at
    Omega = v Pi), Stein on the layer's rows (Y^{l-1}), and the units' own covariance.

    Args:
        unit: layer l's activation (its kinks known: :mod:`meanfield.finite.spherecut` splits at them).
        below: the world of layer l - 1 and its mean shifts.
        width_below, width: M_{l-1} and M_l.
        sw: sigma_w^2 of the weights into layer l.
        samples: T >= 6.

    Returns:
        :class:`meanfield.finite.hiddenbn.BatchNormLayer`.

    Raises:
        InvalidArgument: T < 6, widths below 1, an activation whose kinks are unknown.

    Example:
        >>> from meanfield.finite.corrections import kernel_mean_shift, ntk_mean_shift
        >>> from meanfield.finite.fourworld import realized_world
        >>> net, plain = Network(3, "tanh", 2, 0.1, norms=["batch:2"]), Network(2, "tanh", 2, 0.1)
        >>> below = BelowWorld(realized_world(plain, 64), kernel_mean_shift(plain, 64)[1], ntk_mean_shift(plain, 64))
        >>> b = batch_norm_step(Unit.of(net.phi(2)), below, 64, 64, 2.0, 8)
        >>> bool(np.allclose(b.dk, batch_norm_layer(net, 64, 8).dk, rtol=1e-9, atol=1e-12))
        True
    """
    T = check_int("samples", samples, minimum=6)
    M1, Ml = check_int("width_below", width_below, minimum=1), check_int("width", width, minimum=1)
    if not isinstance(below, BelowWorld):
        raise InvalidArgument("below", below, "a BelowWorld")
    if unit.kinks is None:
        raise InvalidArgument("unit", unit, "an activation with known kinks (breaks of phi or phi')")
    return batch_norm_from_world(unit, below.world, below.shift_k, below.shift_theta, M1, Ml, sw, T)


# -- the statistics ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MultiBatchNormTerms:
    """E G_tt, E G_ts, m, kappa_1, kappa_2 (and s) with their O(1/M) terms: the placements of the module docstring.

    Attributes:
        network, width, samples: what was computed (M, T).
        layers: the normalized layers, increasing.
        mean_field_diag, mean_field_offdiag, m_mean_field, s_mean_field: ``predict``'s values.
        shift_diag, shift_offdiag: the O(1/M) terms of E G_tt, E G_ts (Gram units).
        mean_diag, mean_offdiag, m, kappa1, kappa2: corrected.
        entry_variances: (Var G_tt, Var G_ts, E G_kl(t, t)^2, E G_kl(t, s)^2) of one entry (upper norm on layer 2;
            else None).
        s: corrected (the squared corrected means plus the entry variances) where the entry variances are derived,
            else ``predict``'s.
        includes_1_over_M: the statistics above that include their O(1/M) terms.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.

    Example:
        >>> t = multi_batch_norm_terms(Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:1", "batch:2"]), 64, 8)
        >>> bool(abs(t.mean_diag / t.mean_field_diag - 1) < 0.05), t.layers
        (True, (1, 2))
    """

    network: Network
    width: int
    samples: int
    layers: tuple
    mean_field_diag: float
    mean_field_offdiag: float
    m_mean_field: float
    s_mean_field: float
    shift_diag: float
    shift_offdiag: float
    mean_diag: float
    mean_offdiag: float
    m: float
    kappa1: float
    kappa2: float
    entry_variances: tuple | None
    s: float
    includes_1_over_M: frozenset
    P: int
    alpha: float


@functools.lru_cache(maxsize=32)
def multi_batch_norm_terms(net: Network, width: int, samples: int) -> MultiBatchNormTerms:
    """E G = mean field + (the chain of the norms' O(1/M) terms, carried up by the plain recursion) / T; s.

    Args:
        net: a numeric network whose only normalizations are full batch norms on hidden layer 1 and on one hidden
            layer l > 1, or one full batch norm on a hidden layer l > 1 with layer norms below it (module docstring);
            activations with known kinks on the batch-normalized layers, inputs with a non-negative
            mean product.
        width: M.
        samples: T >= 6.

    Returns:
        :class:`MultiBatchNormTerms`.

    Raises:
        InvalidArgument: another placement, a symbolic network, T < 6, a layer kernel the quadratures below do not
            take (e.g. a negative overlap below a layer norm).

    Example:
        >>> t = multi_batch_norm_terms(Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:1", "batch:2"]), 64, 8)
        >>> t.m == 2 * 8 * t.mean_diag / t.P
        True
    """
    M, T = _check(net, width, samples)
    l = _placement(net)[1]
    L = net.depth
    widths = net.widths(M)
    below = _below_upper(net, M, T)
    b = batch_norm_step(Unit.of(net.phi(l)), below, widths[l - 1], widths[l], float(net.sigma_w2[l - 1]), T)
    if l == L - 1:
        sw = float(net.sigma_w2[L - 1])
        dd, do = widths[l] * float(b.dk[0]) + sw * float(b.dn[0]), widths[l] * float(b.dk[1]) + sw * float(b.dn[1])
    else:
        (dd, do), _ = ntk_shift_between(net, M, b, l, L)
    base = predict(net, M, T)
    gd, go = float(base.gram_diag), float(base.gram_offdiag)
    mean_d, mean_o = gd + dd / T, go + do / T
    C, P, alpha = net.outputs, int(base.P), float(base.alpha)
    s, var, corrected = float(base.s), None, CORRECTED
    if below.spread is not None:      # the NTK's spread between the upper norm's units is derived
        fw = plain_forward(net, M, b, l, L)
        v = float(net.sigma_w2[l - 1]) * (below.world.k[0] - below.world.k[1])
        ac = unit_pair_moments(unit_slope_moments(Unit.of(net.phi(l)), v, T), below.spread)
        var = tuple(entry_variance_above(net, fw, b, l, ac, cross, pair) / T**2 for cross in (False, True)
                    for pair in (0, 1))
        s = (C * (T * (mean_d**2 + var[0]) + T * (T - 1) * (mean_o**2 + var[1]))
             + C * (C - 1) * (T * var[2] + T * (T - 1) * var[3])) / P
        corrected = CORRECTED | {"s"}
    return MultiBatchNormTerms(net, M, T, tuple(sorted(n.layer for n in net.norms)), gd, go, float(base.m),
                               float(base.s), dd / T, do / T, mean_d, mean_o, C * T * mean_d / P,
                               T * mean_d / (alpha * M), T * mean_o / (alpha * M), var, s, corrected, P, alpha)


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict | None:
    """The "1/M" model for full batch norms on hidden layers 1 and l > 1 (corrected gram_diag, gram_offdiag, m, kappa1,
    kappa2 and s); None for other networks (one batch norm above layer norms included: :mod:`meanfield.finite.chain`
    gives it with s, :func:`multi_batch_norm_terms` still computes its means).

    Example:
        >>> from meanfield import predict
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:1", "batch:2"])
        >>> sorted(finite_width_stats(net, 64, 8, predict(net, 64, 8))["includes_1_over_M"])
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
        >>> finite_width_stats(Network(3, "tanh", 2, 0.1, norms=["batch:2"]), 64, 8, None) is None
        True
    """
    where = _placement(net)
    if where is None or where[0] == "layer":
        # one batch norm above layer norms: meanfield.finite.chain answers (the same means to rounding, and its s: the
        # NTK's spread between the batch norm's units carried through the layer norms)
        return None
    try:
        t = multi_batch_norm_terms(net, width, samples)
    except InvalidArgument as error:     # predict keeps working with mean-field values
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    if where[0] == "batch":
        what = (f"batch norms on hidden layers 1 and {where[1]}: E G_tt, E G_ts (so m and the kappa's) with their "
                "derived O(1/M) terms (layer 1's four-sample world by a fixed quasi-Monte Carlo rule on the sphere, "
                "the upper norm's terms by exact sphere quadrature over it, the plain recursion between and above; "
                "deterministic); ")
    else:
        layers = ", ".join(str(n) for n in net.norms if isinstance(n, LayerNorm))
        what = (f"batch norm on hidden layer {where[1]} with {layers} below it: E G_tt, E G_ts (so m and the "
                "kappa's) with their derived O(1/M) terms (the batch norm's terms by exact sphere quadrature over the "
                "layer-norm world, shifts and covariances of the layers below, the plain recursion above; "
                "deterministic); ")
    if "s" in t.includes_1_over_M:
        what += ("s with the entry variances of the four-point layer sum (gradient independence above the upper norm); "
                 "s still misses an O(T/M^2) term (-2% to -3% at M = 64, T = 8)")
    else:
        what += ("s keeps its mean-field value (its entry variances need the NTK's spread between the batch norm's "
                 "units behind the layer norms: not derived)")
    return dict(gram_diag=t.mean_diag, gram_offdiag=t.mean_offdiag, m=t.m, kappa1=t.kappa1, kappa2=t.kappa2,
                s=t.s, includes_1_over_M=t.includes_1_over_M,
                notes=(what, "lambda_max: not corrected (the mean-field value or bounds)"))
