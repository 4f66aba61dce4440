"""The four-sample world of a batch-normalized layer from the world below it: Cov = own / M_l + G Cov_below G^T.

A batch norm (full or centre-only) on layer l sees the layers below through the four-sample world of layer l - 1
(:class:`meanfield.finite.fourworld.World`: the means of its kernel K and NTK average N, their 20 x 20 covariance over
the pairs of four exchangeable samples, and the sandwiched NTK Y^{uv}_{ab}). What a layer above needs of layer l is
the same world one layer up; :func:`batch_norm_world` gives it, generalizing the first layer's (the inputs' world
below, :mod:`meanfield.finite.multibn`'s ``first_layer_world``) to any world below:

* means: (K^l, N^l) of :func:`meanfield.finite.bnstep.batch_norm_from_world` (exact sphere quadrature);
* covariance: given the layer below the M_l units are i.i.d., so Cov(K^l, N^l) = (one unit's covariance) / M_l +
  G Cov(K^{l-1}, N^{l-1}) G^T, G the first variation of E[K^l, N^l | K^{l-1}, N^{l-1}] over the T x T entries below:
  Price's theorem on g ~ N(0, sigma_w^2 Pi K^{l-1} Pi) moved onto Hermite weights at Omega = v Pi
  (sigma_w^2 / 2 E[F (g g^T / v^2 - Pi / v)]), plus N's direct dependence through Theta' = M_{l-1} K^{l-1} +
  sigma_w^2 N^{l-1} (dN_ab / dTheta'_ij = E[lambda^2 phi'_a phi'_b R_ai R_bj]); Cov below is the world's, expanded to
  the T x T entries by label patterns;
* Y^l_{ab}(u, v) = h_a^T X_uv h_b: the diagonal part over single units, M_l E[phi_a phi_b X_aa(u, v)], and below a
  weighted layer (l >= 2) the part between units by Stein on two rows, (M_l sigma_w^2 / M_{l-1})^2
  sum D_u[a](rho, t1) (Pi Y^{l-1}(t1, s1) Pi)_{rho rho'} D_v[b](rho', s1) with D_t[tau](rho, t1) =
  E[d_rho (phi_tau phi'_t A(t, t1))] (:func:`meanfield.finite.bnstep.batch_norm_from_world`'s 2 x 2 block, here for all
  four samples a, b).

One unit's law: full batch norm, z uniform on the sphere |z|^2 = T in the complement of 1, independent of
beta = sigma^2 / v ~ chi^2_{T-1} / T (exact moments), X_aa = D / (v beta) phi'_a phi'_b R_ab, R = Pi - z z^T / T;
centre-only, the pre-activation x = sqrt(v) g with g ~ N(0, Pi), X_aa = D phi'_a phi'_b Pi_ab. Up to four coordinates
enter; they are integrated by a fixed quasi-Monte Carlo rule (:data:`POINTS` unscrambled Sobol points through the
normal quantile, each with its mirror image, averaged over sample permutations by pattern; deterministic, no seed).
With the inputs' world below and a full batch norm this is ``first_layer_world`` to rounding (same rule; a test holds
them equal).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from .bnstep import BatchNormLayer, world_fluctuation
from .fourpoint import set_partitions
from .fourworld import World, class_tensor
from .spherebn import chi_moment

__all__ = ["POINTS", "sphere_points", "gaussian_points", "pattern_moment", "batch_norm_world", "unit_spread"]

POINTS = 2**15      # Sobol points (each with its mirror image) of the four-coordinate rule
_P4 = tuple((a, b) for a in range(4) for b in range(a, 4))        # fourworld's ten pairs of four samples


@functools.lru_cache(maxsize=4)
def _normal_points(T: int, points: int) -> np.ndarray:
    """g ~ N(0, Pi) in the complement of 1: unscrambled Sobol points (shifted off the cube's faces) through the normal
    quantile, in an orthonormal basis of the complement (no mirror images)."""
    from scipy.stats import norm, qmc     # here: scipy.stats takes seconds to import, and only this rule needs it

    m = max(int(round(math.log2(points))), 4)
    u = qmc.Sobol(T - 1, scramble=False).random_base2(m) + 0.5 / 2**m
    B = np.linalg.svd(np.eye(T) - 1.0 / T)[0][:, : T - 1]
    return norm.ppf(u) @ B.T


def sphere_points(samples: int, points: int = POINTS) -> np.ndarray:
    """z uniform on the sphere |z|^2 = T in the complement of 1: the quasi-Monte Carlo rule's nodes and antipodes.

    Args:
        samples: T >= 3.
        points: Sobol points (rounded to a power of two, at least 16).

    Example:
        >>> z = sphere_points(6, 2**8)
        >>> z.shape, bool(np.allclose((z * z).sum(axis=1), 6.0)), bool(np.allclose(z.sum(axis=1), 0.0))
        ((512, 6), True, True)
    """
    T = check_int("samples", samples, minimum=3)
    g = _normal_points(T, check_int("points", points, minimum=16))
    z = math.sqrt(T) * g / np.linalg.norm(g, axis=1)[:, None]
    return np.concatenate([z, -z])


def gaussian_points(samples: int, points: int = POINTS) -> np.ndarray:
    """g ~ N(0, Pi) (Pi = I - 1 1^T / T): the quasi-Monte Carlo rule's nodes with their mirror images.

    Args:
        samples: T >= 3.
        points: Sobol points (rounded to a power of two, at least 16).

    Example:
        >>> g = gaussian_points(5, 2**12)
        >>> bool(np.abs(g.T @ g / len(g) - (np.eye(5) - 0.2)).max() < 0.01)
        True
    """
    T = check_int("samples", samples, minimum=3)
    g = _normal_points(T, check_int("points", points, minimum=16))
    return np.concatenate([g, -g])


@functools.lru_cache(maxsize=1)
def _lattice() -> tuple:
    """The 15 set partitions of four slots (canonical labels), their blocks, and the Moebius function of the partition
    lattice: mu(pi, sigma) = prod over sigma's blocks of (-1)^(k - 1) (k - 1)!, k the blocks of pi merged in it."""
    parts = set_partitions(4)
    blocks = [tuple(tuple(i for i in range(4) if p[i] == b) for b in range(max(p) + 1)) for p in parts]
    mu = np.zeros((len(parts), len(parts)))
    for i, p in enumerate(parts):
        for j, q in enumerate(parts):
            if all(q[a] == q[b] for a in range(4) for b in range(4) if p[a] == p[b]):       # sigma = q coarser
                merged = [len({p[a] for a in block}) for block in blocks[j]]
                mu[i, j] = math.prod((-1) ** (k - 1) * math.factorial(k - 1) for k in merged)
    return parts, blocks, mu


def pattern_moment(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """E[a_i b_j c_k d_l] over the rows (points), a T^4 tensor averaged over each pattern of equal indices.

    The law is exchangeable in the T samples, so the average over a pattern keeps the exact value and lowers the
    rule's error. Each pattern's sum is found without the T^4 tensor: the sums over tuples whose indices are equal at
    least within the blocks of a partition are products of per-block sums (O(T) a point), and the sums over exactly a
    pattern follow by Moebius inversion on the lattice of the 15 partitions of the four slots.

    Example:
        >>> g = gaussian_points(4, 2**10)
        >>> one = np.ones_like(g)
        >>> round(float(pattern_moment(g, g, one, one)[0, 0, 0, 0]), 2)      # E g_0^2 = 1 - 1/T
        0.75
    """
    if not all(isinstance(x, np.ndarray) and x.ndim == 2 and x.shape == a.shape for x in (a, b, c, d)):
        raise InvalidArgument("a", getattr(a, "shape", a), "four (points x T) arrays of one shape")
    n, T = a.shape
    parts, blocks, mu = _lattice()
    x = (a, b, c, d)
    atleast = np.empty(len(parts))
    for j, bl in enumerate(blocks):
        prod = np.ones(n)
        for block in bl:
            term = x[block[0]]
            for slot in block[1:]:
                term = term * x[slot]
            prod = prod * term.sum(axis=1)
        atleast[j] = prod.mean()
    exact = mu @ atleast
    value = {p: (exact[i] / math.prod(T - k for k in range(max(p) + 1)) if T > max(p) else 0.0)
             for i, p in enumerate(parts)}
    return class_tensor(T, lambda lab: value[lab])


@functools.lru_cache(maxsize=16)
def _unit_tables(unit: Unit, T: int, center: bool, v: float, points: int) -> dict:
    """One normalized unit's moment tensors on the rule (full: sphere z, beta apart; centre-only: g, x = sqrt(v) g)."""
    z = sphere_points(T, points) if not center else gaussian_points(T, points)
    x = z if not center else math.sqrt(v) * z
    F, P = np.asarray(unit.f(x), dtype=float), np.asarray(unit.df(x), dtype=float)
    Pz, one = P * z, np.ones_like(z)
    m = pattern_moment
    out = dict(FF=m(F, F, one, one), FFFF=m(F, F, F, F), FFPP=m(F, F, P, P), PPPP=m(P, P, P, P), PP=m(P, P, one, one),
               FFzz=m(F, F, z, z), PPzz=m(P, P, z, z), FPz1=m(F, P, z, one))
    if not center:      # R = Pi - z z^T / T brings the extra z's
        out.update(PzPz=m(Pz, Pz, one, one), FFPzPz=m(F, F, Pz, Pz), PPPzPz=m(P, P, Pz, Pz),
                   PzPzPzPz=m(Pz, Pz, Pz, Pz), PzPzzz=m(Pz, Pz, z, z), PPz1=m(P, Pz, one, z),
                   PzPz1=m(Pz, P, z, one), FPzzz=m(F, Pz, z, z))
    return out


def batch_norm_world(unit: Unit, world: World, layer: BatchNormLayer, width_below: int, width: int, sw: float,
                     samples: int, center: bool = False, rows_below: bool = True, points: int = POINTS) -> World:
    """Cov(K^l, N^l) = own / M_l + G Cov(K^{l-1}, N^{l-1}) G^T and Y^l: a batch-normalized layer's four-sample world.

    Args:
        unit: layer l's activation.
        world: the four-sample world of layer l - 1.
        layer: layer l's :class:`meanfield.finite.bnstep.BatchNormLayer` over ``world`` (its exact means are the
            world's means).
        width_below, width: M_{l-1} and M_l.
        sw: sigma_w^2 of the weights into layer l.
        samples: T >= 6 (4 centre-only).
        center: a centre-only batch norm.
        rows_below: layer l - 1 is weighted (l >= 2): Y^l's part between units by Stein on two rows.
        points: Sobol points of the rule.

    Returns:
        :class:`meanfield.finite.fourworld.World` of layer l.

    Raises:
        InvalidArgument: T too small, widths below 1, K_tt <= K_ts below.

    Example:
        >>> from meanfield.finite.bnstep import batch_norm_from_world
        >>> from meanfield.finite.fourworld import inputs_world
        >>> from meanfield.spec.network import Network
        >>> net = Network(2, "tanh", 1, 0.1)
        >>> w0, unit = inputs_world(net, 64), Unit.of(net.phi(1))
        >>> b = batch_norm_from_world(unit, w0, (0.0, 0.0), (0.0, 0.0), 64, 64, 1.0, 8, rows_below=False)
        >>> w = batch_norm_world(unit, w0, b, 64, 64, 1.0, 8, rows_below=False, points=2**10)
        >>> w.cov.shape, bool(np.all(np.linalg.eigvalsh(w.cov) > -1e-12))
        ((20, 20), True)
    """
    T = check_int("samples", samples, minimum=4 if center else 6)
    Mb, Ml = check_int("width_below", width_below, minimum=1), check_int("width", width, minimum=1)
    if not isinstance(world, World) or not isinstance(layer, BatchNormLayer):
        raise InvalidArgument("world", world, "a fourworld.World and the layer's BatchNormLayer")
    k0, k1 = float(world.k[0]), float(world.k[1])
    v = sw * (k0 - k1)
    if not v > 0:
        raise InvalidArgument("world", world.k, "a kernel with K_tt > K_ts below the batch norm")
    D = Mb * (k0 - k1) + sw * (float(world.n[0]) - float(world.n[1]))    # Theta' = D I + O 1 1^T at the mean
    fl = world_fluctuation(world, (0.0, 0.0), (0.0, 0.0), Mb, sw, T)
    Y, big = fl[15], fl[17]
    # the full norm's unit law does not depend on v (z on the sphere): one table for every v
    t = _unit_tables(unit, T, bool(center), float(v) if center else 0.0, check_int("points", points, minimum=16))
    Pi = np.eye(T) - 1.0 / T
    om = sw / v
    FF, PP = t["FF"], t["PP"]
    if not center:
        c1, cm1, cm2 = chi_moment(T, 1), chi_moment(T, -1), chi_moment(T, -2)
        # E[P_a P_b R_ab ...], R = Pi - z z^T / T, expanded into products of per-coordinate features
        ppr = np.einsum("ab,abcd->abcd", Pi, PP) - t["PzPz"] / T
        ffppr = np.einsum("cd,abcd->abcd", Pi, t["FFPP"]) - t["FFPzPz"] / T
        pprppr = (np.einsum("ab,cd,abcd->abcd", Pi, Pi, t["PPPP"]) - np.einsum("ab,abcd->abcd", Pi, t["PPPzPz"]) / T
                  - np.einsum("cd,cdab->abcd", Pi, t["PPPzPz"]) / T + t["PzPzPzPz"] / T**2)
        kn, kn2 = D / v * cm1, (D / v) ** 2 * cm2           # N_ab = D / (v beta) P_a P_b R_ab
        pprzz = np.einsum("ab,abij->abij", Pi, t["PPzz"]) - t["PzPzzz"] / T
        gK = om / 2 * (c1 * t["FFzz"] - np.einsum("ab,ij->abij", FF[:, :, 0, 0], Pi))
        # E[P_a P_b R_ai R_bj]
        prr = (np.einsum("ai,bj,ab->abij", Pi, Pi, PP[:, :, 0, 0]) - np.einsum("ai,abij->abij", Pi, t["PPz1"]) / T
               - np.einsum("bj,abij->abij", Pi, t["PzPz1"]) / T + t["PzPzzz"] / T**2)
        gN_herm = om / 2 * D / v * (pprzz - cm1 * np.einsum("ab,ij->abij", ppr[:, :, 0, 0], Pi))
        direct = cm1 / v * prr                                # dN_ab / dTheta'_ij
    else:
        ppr = np.einsum("ab,abcd->abcd", Pi, PP)
        ffppr = np.einsum("cd,abcd->abcd", Pi, t["FFPP"])
        pprppr = np.einsum("ab,cd,abcd->abcd", Pi, Pi, t["PPPP"])
        kn, kn2 = D, D * D                                    # N_ab = D P_a P_b Pi_ab
        gK = om / 2 * (t["FFzz"] - np.einsum("ab,ij->abij", FF[:, :, 0, 0], Pi))
        gN_herm = om / 2 * D * (np.einsum("ab,abij->abij", Pi, t["PPzz"])
                                - np.einsum("ab,ij->abij", ppr[:, :, 0, 0], Pi))
        direct = np.einsum("ai,bj,ab->abij", Pi, Pi, PP[:, :, 0, 0])
    mean = np.array([FF[a, b, 0, 0] for a, b in _P4] + [kn * ppr[a, b, 0, 0] for a, b in _P4])
    second = np.empty((20, 20))
    for i, (a, b) in enumerate(_P4):
        for j, (c, d) in enumerate(_P4):
            second[i, j] = t["FFFF"][a, b, c, d]
            second[i, 10 + j] = second[10 + j, i] = kn * ffppr[a, b, c, d]
            second[10 + i, 10 + j] = kn2 * pprppr[a, b, c, d]
    own = (second - np.outer(mean, mean)) / Ml
    gNK, gNN = gN_herm + Mb * direct, sw * direct
    zero = np.zeros(T * T)
    G = np.stack([np.concatenate([gK[a, b].ravel(), zero]) for a, b in _P4]
                 + [np.concatenate([gNK[a, b].ravel(), gNN[a, b].ravel()]) for a, b in _P4])
    cov = own + G @ big @ G.T
    cov = (cov + cov.T) / 2
    y = {(0, s): Ml * kn * np.array([[ffppr[a, b, 0, s] for b in range(4)] for a in range(4)]) for s in (0, 1)}
    if rows_below:       # the part between units: Stein on two rows of W^l (bnstep's D matrices, four samples)
        PYP = np.einsum("ar,uvrs,sb->uvab", Pi, Y, Pi)
        if not center:
            dmat = {(u, tau): (np.outer(t["FPz1"][tau, u, :, 0], Pi[u]) - t["FPzzz"][tau, u] / T) / v
                    for u in (0, 1) for tau in range(4)}
        else:
            dmat = {(u, tau): np.outer(t["FPz1"][tau, u, :, 0], Pi[u]) / math.sqrt(v)
                    for u in (0, 1) for tau in range(4)}
        for s in (0, 1):
            y[(0, s)] = y[(0, s)] + (Ml * sw / Mb) ** 2 * np.array(
                [[np.einsum("ri,ijrq,qj->", dmat[(0, a)], PYP, dmat[(s, b)]) for b in range(4)] for a in range(4)])
    return World((float(layer.kbar[0]), float(layer.kbar[1])), (float(layer.nbar[0]), float(layer.nbar[1])), cov, y)


def unit_spread(unit: Unit, world: World, width_below: int, width: int, sw: float, sw_next: float, samples: int,
                center: bool = False, points: int = POINTS) -> np.ndarray:
    """Sigma4 = (sigma_w'^2)^2 / M_l E[X_bb(t1, s1) X_bb(t2, s2)] of one unit b of a batch-normalized layer l: the NTK's
    spread E[S_ac S_ac] between two units a != c of layer l + 1 (S_ac = w_a^T X^l w_c, X^l diagonal in l's units).

    Args:
        unit, world, width_below, width, sw, samples, center, points: as :func:`batch_norm_world`.
        sw_next: sigma_w'^2 of the weights into layer l + 1.

    Returns:
        The T^4 tensor Sigma4.

    Example:
        >>> from meanfield.finite.fourworld import inputs_world
        >>> from meanfield.spec.network import Network
        >>> net = Network(2, "tanh", 1, 0.1)
        >>> s = unit_spread(Unit.of(net.phi(1)), inputs_world(net, 64), 64, 64, 1.0, 1.0, 8, points=2**10)
        >>> s.shape, bool(s[0, 0, 0, 0] > 0)
        ((8, 8, 8, 8), True)
    """
    T = check_int("samples", samples, minimum=4 if center else 6)
    Mb, Ml = check_int("width_below", width_below, minimum=1), check_int("width", width, minimum=1)
    k0, k1 = float(world.k[0]), float(world.k[1])
    v = sw * (k0 - k1)
    if not v > 0:
        raise InvalidArgument("world", world.k, "a kernel with K_tt > K_ts below the batch norm")
    D = Mb * (k0 - k1) + sw * (float(world.n[0]) - float(world.n[1]))
    z = sphere_points(T, points) if not center else gaussian_points(T, points)
    x = z if not center else math.sqrt(v) * z
    P = np.asarray(unit.df(x), dtype=float)
    Pi = np.eye(T) - 1.0 / T
    PPPP = pattern_moment(P, P, P, P)
    if center:
        return sw_next**2 / Ml * D * D * np.einsum("ab,cd,abcd->abcd", Pi, Pi, PPPP)
    Pz = P * z
    PPPzPz = pattern_moment(P, P, Pz, Pz)
    pprppr = (np.einsum("ab,cd,abcd->abcd", Pi, Pi, PPPP) - np.einsum("ab,abcd->abcd", Pi, PPPzPz) / T
              - np.einsum("cd,cdab->abcd", Pi, PPPzPz) / T + pattern_moment(Pz, Pz, Pz, Pz) / T**2)
    return sw_next**2 / Ml * (D / v) ** 2 * chi_moment(T, -2) * pprppr
