"""A hidden batch norm together with a batch norm on the output: O(1/M) terms of E G, m, s, kappa's.

The network has one batch norm (full or centre-only) on a hidden layer l and a batch norm on the output.

Centre-only on the output. Its pre-normalization values are linear in the last hidden layer, so per output block,
exactly, G_kl = Pi G^in_kl Pi, Pi = I - 1 1^T / T, G^in the Gram of the network without the output's norm. Hence

* the means: E G_tt = (1 - 1/T)(d - o), E G_ts = -(d - o) / T with d, o the corrected E G^in_tt, E G^in_ts of
  :mod:`meanfield.finite.hiddenbn` (l = L - 1) or :mod:`meanfield.finite.deepbn` (l < L - 1), so m and the kappa's;
* s = [C sum_ts (E G_ts^2 + Var G_kk(t, s)) + C (C - 1) sum_ts E G_kl(t, s)^2] / P, and the entry variances summed
  over the T^2 entries are the projected ones, sum Pi_uu' Pi_vv' Cov(G^in_uv, G^in_u'v') = E ||Pi dG^in Pi||_F^2.

For l = L - 1 these are :mod:`meanfield.finite.hiddenbn`'s three parts with every output index projected:

1. the units (i.i.d. given the layer below): M_l Var of one unit's Y = Pi (f f^T + c X_aa) Pi, f = phi(z) the unit's
   normalized values, X_aa = D' diag(phi'(z)) A A diag(phi'(z)) at the mean law (A the unit's batch-norm Jacobian,
   D' = M_{l-1}(K_tt - K_ts) + sigma_w^2 (N_tt - N_ts) below, c = sigma_w'^2 / M_l);
2. the output weights (Wick): c^2 [2 M_l E ||Pi X_aa Pi||^2 + M_l (M_l - 1)(xac + xac_swap)], the a != c sums of
   hiddenbn with U[t, i, s, j] = E[(Pi P)_ti (Pi P)_sj] in place of its U2 (P = diag(phi') A; the NTK's spread
   between the units below, :func:`meanfield.finite.hiddenbn.cross_unit_spread`); between outputs the first Wick
   term only;
3. the layers below: g^T Cov(K, N) g summed over the projected entries, g the first variation of E[Pi T G^in Pi | K, N]
   in the realized kernel and NTK average of layer l - 1 (Price's theorem: (sigma_w^2 / 2) E[F (a a^T - Pi / v)], a =
   g / v, plus the explicit Theta' = M_{l-1} K + sigma_w^2 N of X_aa).

For l < L - 1 (plain layers above the norm) the same three parts are those of the plain layer L - 1's units
(pre-activations N(0, Q), Q = sigma_w^2 K^{L-2} + sigma_b^2, X_aa = diag(phi') Theta' diag(phi'), Price with Q^-1),
on the mean kernel and NTK average below; "below" is then (K^{L-2}, N^{L-2}) over all T^2 entries, carried up from
the normalized layer l (at each layer j the units' own covariance, 1 / M_j, plus the layer below's pushed through the
first variation; below layer l as for l = L - 1), and the NTK's spread between two units of layer j is
(sigma_w^2 / M_{j-1})^2 Phi^{j-1}, Phi^j = sum over pairs of units of E[X_bd X_bd] (M_j E[X_bb X_bb] plus M_j (M_j - 1)
E[phi'phi'] E[phi'phi'] times the spread below; at the normalized layer U U Sigma4 between its units, zero on layer 1:
the inputs' NTK is diagonal in the units), the recursion of :mod:`meanfield.finite.ntkspread` to leading order.

Full batch norm on the output. :mod:`meanfield.finite.normalized` derives its O(1/M) terms from the statistics of the
network below (D, dD, v, dv, the entry covariances' three Pi Pi pairings and the four-sample world of layer L - 1);
:func:`full_output_below` gives them for the same two placements, the world from the same units (its covariance over
the 20 pairs of four samples, and Y^{L-1} with its part between units by Stein on two rows).

Projected, the unit's terms involve up to four distinct samples at once (Pi's 1 / T couples every sample), beyond the
two-coordinate sphere quadrature of :mod:`meanfield.finite.spherebn`: they are integrated over the unit's exact law
(g ~ N(0, v Pi); full: z = sqrt(T) g / |g| independent of sigma^2 = |g|^2 / T, whose moments are exact; plain: N(0,
Q)) on a fixed quasi-Monte Carlo rule: unscrambled Sobol points through the normal quantile and their mirror images
(deterministic, no random numbers; :data:`POINTS` nodes). Without the projection the same code reproduces hiddenbn's
exact entry variances to 1e-4 - 2e-3 relative (a test holds it), the rule's error on O(1/M) terms; for l = 1 of three
layers it agrees with deepbn's four-point layer sum (gradient independence above the norm) to 1.5-6% of the entry
variances (which are relatively T/M of s: 0.1-0.5% of s at M = 64, T = 8).

Every moment is exchangeable (i.i.d. inputs): an entry of E[k (x) k], E[p (x) p], ... over (t, s, t', s') depends only
on which of the four indices coincide, so the moments are held by their 15 pattern values
(:class:`meanfield.finite.exchangeable.Exchangeable`) and every sum over the entries above is an exact contraction of
such tensors over T samples (:func:`meanfield.finite.exchangeable.contract`, O(1) in T). Per node the pattern values
come from power sums of phi, phi', z over the T samples (Moebius inversion,
:func:`meanfield.finite.exchangeable.node_class_moments`): O(T) per node, equal to rounding to the class averages of
the dense T^2 x T^2 matrices (notes: the former dense evaluation). No T limit of its own: T <= :data:`MAX_SAMPLES`
keeps LAPACK's basis of the complement of 1 (the rule of the numbers in the notes), above it Helmert's (O(T) per
node). The compositions with the hidden norm's corrected means (:func:`batch_norm_pair_terms`,
:func:`full_output_below`) take T <= :data:`MEAN_SAMPLES`, the means' limit. Sampled checks: the notes, section 9.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from ..spec.network import BatchNorm, Network
from ..theory.fisher import predict
from .corrections import STATISTICS, two_sample_layer
from .deepbn import deep_batch_norm_terms, kernel_above, normalized_prefix
from .exchangeable import Exchangeable, Poly, contract, identity, node_class_moments, projector
from .fourworld import World, inputs_world, pair_index, realized_world, stein_matrices
from .hiddenbn import (batch_norm_layer, below_network, cross_unit_spread_classes,
                       default_method, hidden_batch_norm_terms)
from .spherebn import chi_moment

__all__ = ["BatchNormPairTerms", "batch_norm_pair_terms", "pair_placement", "projected_entry_parts", "TopBelow",
           "output_pairings",
           "full_output_below", "finite_width_stats", "POINTS", "MAX_SAMPLES", "MEAN_SAMPLES", "bn_unit_fields",
           "spread_classes", "UnitMoments", "entry_parts", "row_parts", "entry_covariance"]

MAX_SAMPLES = 32   # not a limit: the largest T whose rule keeps LAPACK's basis of 1's complement (Helmert's above)
# The largest T of :func:`batch_norm_pair_terms` and :func:`full_output_below`: the precision of the hidden batch
# norm's sphere and beta rules (bnstep.UnitLaw; a zero dK of centre-only relu comes out 3e-7 at T = 256, 1e-2 at 1024).
MEAN_SAMPLES = 256
POINTS = 2**14     # Sobol nodes of the unit's law (each with its mirror image): about 1e-3 of the O(1/M) terms
_CHUNK_NUMBERS = 2**20     # Sobol numbers per chunk of nodes (memory, not results)
_SOBOL_DIMENSIONS = 21201  # scipy.stats.qmc.Sobol's largest dimension


def pair_placement(net: Any) -> tuple[BatchNorm, BatchNorm] | None:
    """(hidden, output): a batch norm on one hidden layer and one on the output, the only norms; else None.

    Example:
        >>> h, o = pair_placement(Network(3, "tanh", 2, 0.1, norms=["batch:1", "batch-center:last"]))
        >>> h.layer, o.layer, o.center_only
        (1, 3, True)
        >>> pair_placement(Network(3, "tanh", 2, 0.1, norms=["batch:2"])) is None
        True
    """
    if not isinstance(net, Network) or net.is_symbolic or len(net.norms) != 2 or net.depth < 2:
        return None
    hidden, out = sorted(net.norms, key=lambda n: n.layer)
    if (isinstance(hidden, BatchNorm) and isinstance(out, BatchNorm) and 1 <= hidden.layer < net.depth
            and out.layer == net.depth):
        return hidden, out
    return None


def _check(net: Any, width: Any, samples: Any) -> tuple[int, int, BatchNorm]:
    pair = pair_placement(net)
    if pair is None or not pair[1].center_only:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network with one batch norm on a hidden layer and a centre-only batch norm "
                              "on the output, no other normalization")
    hidden = pair[0]
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=4 if hidden.center_only else 6, maximum=MEAN_SAMPLES)
    return M, T, hidden


def _inner(net: Network) -> Network:
    """The network without its output batch norm (the hidden one alone)."""
    return net.with_(norms=tuple(n for n in net.norms if n.layer < net.depth))


@functools.lru_cache(maxsize=8)
def _basis(T: int) -> np.ndarray | None:
    """An orthonormal basis of the complement of 1 (T x (T - 1)): LAPACK's singular vectors of Pi for T <=
    :data:`MAX_SAMPLES` (the rule of the numbers in the notes), None above it (Helmert's basis, applied in O(T) per
    node by :func:`_helmert`)."""
    if T > MAX_SAMPLES:
        return None
    return np.linalg.svd(np.eye(T) - 1.0 / T)[0][:, : T - 1]


def _helmert(x: np.ndarray) -> np.ndarray:
    """y = x H^T for Helmert's basis H (T x (T - 1)): column k (1-based) is (1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1))
    with k ones, so y_i = sum_{k > i} x_k / sqrt(k (k + 1)) - i x_i / sqrt(i (i + 1)) (0-based rows, x_i for i >= 1)."""
    n, T = x.shape[0], x.shape[1] + 1
    k = np.arange(1, T, dtype=float)
    a = x / np.sqrt(k * (k + 1))                                   # a_k, k = 1..T-1
    tail = np.concatenate([np.cumsum(a[:, ::-1], axis=1)[:, ::-1], np.zeros((n, 1))], axis=1)   # sum_{k >= j}
    y = tail.copy()                                                # row 0: sum over all k >= 1
    y[:, 1:] = tail[:, 1:] - k * a                                 # row i >= 1: sum_{k > i} a_k - i a_i
    return y


def _sobol_chunks(dim: int, points: int):
    """The unscrambled Sobol points of ``dim`` coordinates through the normal quantile (the first two, 0 and (1/2,
    ..., 1/2), skipped: an infinite and a zero vector), in chunks of a few million numbers."""
    from scipy.stats import qmc  # here: scipy.stats takes most of a second to import, and only these rules need it

    sobol = qmc.Sobol(dim, scramble=False)
    sobol.fast_forward(2)
    size = max(1, min(points, 2 ** max(0, int(math.log2(max(1, _CHUNK_NUMBERS // dim))))))
    done = 0
    while done < points:
        m = min(size, points - done)
        yield ndtri(sobol.random(m))
        done += m


def bn_unit_fields(samples: int, v: float, center: bool, unit: Unit, points: int = POINTS):
    """Chunks (3, nodes, T) of (phi(z), phi'(z), z) over the rule's nodes of one batch-normalized unit: y ~ N(0, Pi)
    from unscrambled Sobol points through the normal quantile in an orthonormal basis of the complement of 1, and
    their mirror images -y (the law is symmetric: odd parts cancel exactly); full: z = sqrt(T) y / |y| on the sphere
    (A = (Pi - z z^T / T) / sigma), centre-only: z = sqrt(v) y = g (A = Pi).

    Example:
        >>> from meanfield.integrals.quadrature import IDENTITY
        >>> chunks = list(bn_unit_fields(6, 1.0, False, IDENTITY, points=64))
        >>> z = np.concatenate([c[2] for c in chunks])
        >>> z.shape, bool(np.allclose((z * z).sum(1), 6)), bool(np.allclose(z.sum(1), 0))
        ((128, 6), True, True)
    """
    T = check_int("samples", samples, minimum=2)
    B = _basis(T)
    for x in _sobol_chunks(T - 1, check_int("points", points, minimum=1)):
        y = x @ B.T if B is not None else _helmert(x)
        for s in (y, -y):
            z = math.sqrt(v) * s if center else s * np.sqrt(T / (s * s).sum(-1))[:, None]
            yield np.stack([np.asarray(unit.f(z), dtype=float), np.asarray(unit.df(z), dtype=float), z])


def _world_below(net: Network, width: int) -> World:
    """The four-sample world of layer l - 1 below the batch norm on layer l = L - 1 (the inputs on layer 1: K = x.x
    / M_0 with Cov(K_ab, K_cd) = (Q_ac Q_bd + Q_ad Q_bc) / M_0, no NTK below), as hiddenbn's terms use it."""
    l = net.depth - 1
    if l >= 2:
        return realized_world(below_network(net), width)
    return inputs_world(net, width)


def entry_covariance(w: World) -> dict:
    """Cov of (K_ij, N_ij) over all entries of a layer: blocks (0 = K, 1 = N) of exchangeable 4-tensors over
    ((i, j), (i', j')), read off the four-sample world's label patterns.

    Example:
        >>> w = realized_world(Network(2, "tanh", 2, 0.1), 64)
        >>> bool(entry_covariance(w)[(0, 1)].at((0, 1, 0, 1)) == w.cov[1, 11])
        True
    """
    return {(r, c): Exchangeable.from_function(
        4, lambda lab, r=r, c=c: w.cov[10 * r + pair_index(lab[0], lab[1]), 10 * c + pair_index(lab[2], lab[3])])
        for r in (0, 1) for c in (0, 1)}


@dataclass(frozen=True, eq=False)
class UnitMoments:
    """One unit of the last hidden layer at the mean law, exchangeable tensors over the entries: k = f f^T, x (X_aa =
    xscale x: batch norm, diag(phi') R diag(phi') with xscale = D' lambda^2; plain, diag(phi') Theta' diag(phi')),
    p (P = diag(phi') A; plain, diag(phi')); means Ek, Ex (t, s), second moments Ekk, Ekx, Exx ((t, s), (t', s')),
    U[t, i, s, j] = E[p_ti p_sj] (with lambda^2), and the Price gradients hk, hx of E[k], E[X_aa] in the unit's
    pre-activation kernel ((entry), (Q_ij)); None for a layer-normed unit
    (:func:`meanfield.finite.lnpair.layer_norm_unit`: its layer's world carries the layers below whole).

    Example:
        >>> _last_layer(Network(3, "tanh", 2, 0.1, norms=["batch:2"]), 64, 6, 2**10).u.Exx.order
        4
    """

    Ek: Exchangeable
    Ex: Exchangeable
    Ekk: Exchangeable
    Ekx: Exchangeable
    Exx: Exchangeable
    U: Exchangeable
    hk: Exchangeable | None
    hx: Exchangeable | None
    xscale: float
    x2scale: float
    fpz: Exchangeable | None = None     # batch norm: E[f_a p_{t, i} z_r] / v over (a, t, r, i), Stein's D_t


def _unit_polys(R, x_of) -> dict:
    """The moments' polynomials over the fields (phi, phi', w): R(slots, a, b) the Jacobian's projection, x_of(slots,
    a, b) the entry of x, w the Price weight's per-sample factor (z, or Q^-1 g)."""
    def fld(k: int, s: int, f: int) -> Poly:
        return Poly.field(k, s, f, 3)

    def kk(k: int, a: int, b: int) -> Poly:
        return fld(k, a, 0) * fld(k, b, 0)

    def pp(k: int, a: int, b: int) -> Poly:
        return fld(k, a, 1) * R(k, a, b)

    def ww(k: int, a: int, b: int) -> Poly:
        return fld(k, a, 2) * fld(k, b, 2)
    return dict(Ek=kk(2, 0, 1), Ex=x_of(2, 0, 1), Ekk=kk(4, 0, 1) * kk(4, 2, 3), Ekx=kk(4, 0, 1) * x_of(4, 2, 3),
                Exx=x_of(4, 0, 1) * x_of(4, 2, 3), U=pp(4, 0, 1) * pp(4, 2, 3), Kw=kk(4, 0, 1) * ww(4, 2, 3),
                Xw=x_of(4, 0, 1) * ww(4, 2, 3), fpz=fld(4, 0, 0) * pp(4, 1, 3) * fld(4, 2, 2))


def _outer(T: int, a: Exchangeable, b: Exchangeable) -> Exchangeable:
    return contract(T, "ab,cd->abcd", a, b)


@functools.lru_cache(maxsize=16)
def _bn_moments(net: Network, width: int, samples: int, points: int, below: Any = None) -> tuple:
    """(:class:`UnitMoments`, v, D', world below) of the batch-normalized layer l = L - 1 of ``net`` on the rule."""
    T, l = samples, net.depth - 1
    center = net.norms[0].center_only
    M1, sw = net.widths(width)[l - 1], float(net.sigma_w2[l - 1])
    unit = Unit.of(net.phi(l))
    w = _world_below(net, width) if below is None else below.world      # a chain's: its own world
    if w.k[0] - w.k[1] <= 0:
        raise InvalidArgument("net", net.describe(), "a positive spread K_tt - K_ts of the kernel below the norm")
    v = sw * (w.k[0] - w.k[1])                                 # Omega = v Pi at the mean law
    Dp = M1 * (w.k[0] - w.k[1]) + sw * (w.n[0] - w.n[1])      # Theta' = D' I + O 1 1^T at the mean
    Pi = projector(T)
    # the powers of the unit's 1 / sigma^2 (full: independent of z, exact moments) and of beta = sigma^2 / v
    lam2, lam4 = (1.0, 1.0) if center else (chi_moment(T, -1) / v, chi_moment(T, -2) / v**2)

    def R(k: int, a: int, b: int) -> Poly:     # A g = R z (full: R = Pi - z z^T / T), Pi g (centre-only)
        out = Poly.delta(k, a, b, 3) + Poly.const(k, -1.0 / T, 3)
        return out if center else out + Poly.field(k, a, 2, 3) * Poly.field(k, b, 2, 3) * (-1.0 / T)

    def x_of(k: int, a: int, b: int) -> Poly:
        return Poly.field(k, a, 1, 3) * R(k, a, b) * Poly.field(k, b, 1, 3)
    m = node_class_moments(T, _unit_polys(R, x_of), bn_unit_fields(T, v, center, unit, points))
    # Price: d E[F] / d Omega = (1/2) E[F (a a^T - Pi / v)], a = g / v; full: g = sqrt(v beta) z, a a^T = beta z z^T
    # / v and X_aa carries 1 / (v beta)
    Ekpi, Expi = _outer(T, m["Ek"], Pi), _outer(T, m["Ex"], Pi)
    if center:
        hk, hx = (m["Kw"] / v - Ekpi) / (2 * v), Dp * (m["Xw"] / v - Expi) / (2 * v)
    else:
        hk = (chi_moment(T, 1) * m["Kw"] - Ekpi) / (2 * v)
        hx = Dp * (m["Xw"] - chi_moment(T, -1) * Expi) / (2 * v * v)
    return (UnitMoments(m["Ek"], m["Ex"], m["Ekk"], m["Ekx"], m["Exx"], lam2 * m["U"], hk, hx, Dp * lam2,
                        Dp**2 * lam4, m["fpz"] / v), v, Dp, w)


def _compound_cholesky(qa: float, qb: float, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(diag, c): the Cholesky factor of Q = (qa - qb) I + qb 1 1^T has L_jj = diag_j and L_ij = c_j below the
    diagonal (every Schur complement is again of this form), so g = L e costs O(T) per node."""
    diag, c = np.empty(T), np.empty(T)
    a, b = qa, qb
    for j in range(T):
        if not a > 0:
            raise InvalidArgument("net", (qa, qb), "a positive definite pre-activation kernel above the norm")
        diag[j] = math.sqrt(a)
        c[j] = b / diag[j]
        a, b = a - c[j] ** 2, b - c[j] ** 2
    return diag, c


def _plain_moments(unit: Unit, Q: Exchangeable, theta: Exchangeable, T: int, points: int) -> UnitMoments:
    """:class:`UnitMoments` of a plain unit, pre-activations g ~ N(0, Q), X_aa = diag(phi') theta diag(phi')."""
    qa, qb = (float(x) for x in Q.values)
    diag, c = _compound_cholesky(qa, qb, T)
    alpha, beta = qa - qb, qb
    if not alpha > 0 or not alpha + T * beta > 0:
        raise InvalidArgument("net", (qa, qb), "a positive definite pre-activation kernel above the norm")
    Qinv = Exchangeable(2, np.array([1 - beta / (alpha + T * beta), -beta / (alpha + T * beta)]) / alpha)

    def fields():
        for e in _sobol_chunks(T, points):
            for s in (e, -e):
                ce = s * c
                g = s * diag + np.concatenate([np.zeros((len(s), 1)), np.cumsum(ce, axis=1)[:, :-1]], axis=1)
                a = (g - beta / (alpha + T * beta) * g.sum(1, keepdims=True)) / alpha       # Q^-1 g
                yield np.stack([np.asarray(unit.f(g), dtype=float), np.asarray(unit.df(g), dtype=float), a])
    th_tt, th_ts = (float(x) for x in theta.values)

    def R(k: int, a: int, b: int) -> Poly:
        return Poly.delta(k, a, b, 3)

    def x_of(k: int, a: int, b: int) -> Poly:
        th = Poly.const(k, th_ts, 3) + Poly.delta(k, a, b, 3) * (th_tt - th_ts)
        return Poly.field(k, a, 1, 3) * th * Poly.field(k, b, 1, 3)
    m = node_class_moments(T, _unit_polys(R, x_of), fields())
    hk, hx = (m["Kw"] - _outer(T, m["Ek"], Qinv)) / 2, (m["Xw"] - _outer(T, m["Ex"], Qinv)) / 2
    return UnitMoments(m["Ek"], m["Ex"], m["Ekk"], m["Ekx"], m["Exx"], m["U"], hk, hx, 1.0, 1.0)


def _block_sandwich(T: int, A: dict, C: dict, B: dict, rows: tuple, cols: tuple) -> dict:
    """(A C B^T) over blocks of exchangeable 4-tensors ((entry), (entry)); missing blocks are zero."""
    out = {}
    for r in rows:
        for s in cols:
            acc = None
            for (r1, p), a in A.items():
                if r1 != r:
                    continue
                for (p1, q), cc in C.items():
                    if p1 != p or (s, q) not in B:
                        continue
                    term = contract(T, "abij,ijkl,cdkl->abcd", a, cc, B[(s, q)])
                    acc = term if acc is None else acc + term
            if acc is not None:
                out[(r, s)] = acc
    return out


def _second(u: UnitMoments) -> dict:
    """E[(k, X_aa) (k, X_aa)] over ((entry), (entry)) as blocks (0 = k, 1 = X_aa)."""
    return {(0, 0): u.Ekk, (0, 1): u.xscale * u.Ekx, (1, 0): u.xscale * u.Ekx.permuted((2, 3, 0, 1)),
            (1, 1): u.x2scale * u.Exx}


def _unit_covariance(T: int, u: UnitMoments) -> dict:
    """Cov of one unit's (k, X_aa) over all entries, blocks."""
    mean = (u.Ek, u.xscale * u.Ex)
    return {(r, c): b - _outer(T, mean[r], mean[c]) for (r, c), b in _second(u).items()}


def entry_parts(u: UnitMoments, T: int, M2: int, sw_out: float, left: Exchangeable, S4: Exchangeable, grad: dict,
                cov_below: dict, swapped: bool = False, units: bool = True) -> tuple:
    """(same, below, cross) of the module docstring's parts 1.-3.: the last hidden layer's units ``u``, the output
    map ``left`` on each side (Pi or I), the NTK's spread S4 between two units below, the first variation ``grad``
    (blocks over ((t, s), below's entries)) of E[T G | below] and the covariance ``cov_below`` of what is below; with
    ``swapped`` also sum E[G_kl(t, s) G_kl(s, t)] between outputs (k != l). Every sum over the entries is an exact
    contraction of exchangeable tensors (:func:`meanfield.finite.exchangeable.contract`). ``units`` False leaves out
    the units' own variance, for units not i.i.d. given what is below (a layer norm: :mod:`meanfield.finite.lnpair`).

    Example:
        >>> s = _last_layer(Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2"]), 64, 6, 2**10)
        >>> a, b = (entry_parts(s.u, 6, s.M_last, s.sw_out, identity(), s.S4, s.grad, s.cov_below, units=x)
        ...         for x in (True, False))
        >>> bool(a[0] > b[0] > 0), a[1:] == b[1:]
        (True, True)
    """
    c = sw_out / M2
    L = left
    unit_sum = 0.0
    if units:   # tr((L (x) L) EYY (L (x) L)) - |(L (x) L) EY|^2
        EY = u.Ek + c * u.xscale * u.Ex
        EYY = u.Ekk + c * u.xscale * (u.Ekx + u.Ekx.permuted((2, 3, 0, 1))) + c * c * u.x2scale * u.Exx
        unit_sum = (contract(T, "ta,sb,abcd,tc,sd->", L, L, EYY, L, L)
                    - contract(T, "ta,sb,ab,tc,sd,cd->", L, L, EY, L, L, EY))
    xaa = u.x2scale * contract(T, "ta,sb,abcd,tc,sd->", L, L, u.Exx, L, L)
    xac = xac_swap = 0.0
    if S4.any():
        U = contract(T, "ta,sb,aibj->tisj", L, L, u.U)           # (L P)_ti (L P)_sj
        W = contract(T, "taty->ay", U)
        xac = contract(T, "ab,cd,acbd->", W, W, S4)
        xac_swap = contract(T, "tisj,skto,ikjo->", U, U, S4)
    k = c * c
    same = (k * (2 * M2 * xaa + M2 * (M2 - 1) * (xac + xac_swap)) + M2 * unit_sum) / T**2
    cross = k * (M2 * xaa + M2 * (M2 - 1) * xac) / T**2
    g = {p: contract(T, "ra,sb,abij->rsij", L, L, b) for p, b in grad.items()}
    below = sum(contract(T, "rsij,ijkl,rskl->", g[p], cc, g[q]) for (p, q), cc in cov_below.items()
                if p in g and q in g) / T**2
    if swapped:
        return float(same), float(below), float(cross), float(k * (M2 * xaa + M2 * (M2 - 1) * xac_swap) / T**2)
    return float(same), float(below), float(cross)


def row_parts(u: UnitMoments, T: int, M2: int, sw_out: float, ell: Exchangeable, S4: Exchangeable, grad: dict,
              cov_below: dict, units: bool = True) -> tuple[float, float]:
    """(Var <ell, T G_kk>, E <ell, T G_kl>^2) for one symmetric exchangeable T x T functional ``ell`` (k != l; the parts
    of :func:`entry_parts`, the Wick pairing of the two output weights contracted with ell twice; ``units`` as there).

    Example:
        >>> s = _last_layer(Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2"]), 64, 6, 2**10)
        >>> same, cross = row_parts(s.u, 6, s.M_last, s.sw_out, projector(6), s.S4, s.grad, s.cov_below)
        >>> bool(same > cross > 0)
        True
    """
    c = sw_out / M2
    unit = 0.0
    if units:
        EY = contract(T, "ab,ab->", ell, u.Ek + c * u.xscale * u.Ex)
        EYY = u.Ekk + c * u.xscale * (u.Ekx + u.Ekx.permuted((2, 3, 0, 1))) + c * c * u.x2scale * u.Exx
        unit = contract(T, "ab,abcd,cd->", ell, EYY, ell) - EY * EY
    xaa = u.x2scale * contract(T, "ab,abcd,cd->", ell, u.Exx, ell)
    xac = 0.0
    if S4.any():     # ell symmetric: ell(X_ca) = ell(X_ac^T) = ell(X_ac)
        xac = contract(T, "ts,ab,tiaj,skbl,ikjl->", ell, ell, u.U, u.U, S4)
    k = c * c
    g = {p: contract(T, "ab,abij->ij", ell, b) for p, b in grad.items()}
    below = sum(contract(T, "ij,ijkl,kl->", g[p], cc, g[q]) for (p, q), cc in cov_below.items() if p in g and q in g)
    same = k * (2 * M2 * xaa + 2 * M2 * (M2 - 1) * xac) + M2 * unit + below
    return float(same), float(k * (M2 * xaa + M2 * (M2 - 1) * xac))


def _check_last(net: Any, width: Any, samples: Any, points: Any) -> tuple[int, int, int]:
    if not isinstance(net, Network) or len(net.norms) != 1 or not isinstance(net.norms[0], BatchNorm) \
            or net.norms[0].layer != net.depth - 1:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network whose only normalization is a batch norm on layer L - 1")
    M = check_int("width", width, minimum=1)
    # the rule's Sobol points have T coordinates (plain layers above the norm): scipy's direction numbers stop there
    T = check_int("samples", samples, minimum=4 if net.norms[0].center_only else 6, maximum=_SOBOL_DIMENSIONS)
    n = check_int("points", points, minimum=64)
    if default_method(net, T) != "exact":
        raise InvalidArgument("net", net.describe(), "an activation with known kinks (breaks) on layer L - 1")
    return M, T, n


@dataclass(frozen=True, eq=False)
class _LastLayer:
    """The last hidden layer L - 1 as the output's statistics use it: its units ``u``, the first variation ``grad``
    (blocks over ((t, s), below's entries)) of E[T G^in | below] and ``jac`` (blocks over ((k or X_aa entry), below's
    entries)) of E[(k, X_aa)] in what is below, whose covariance is ``cov_below`` (blocks), the NTK's spread S4 between
    two of its units, and Stein's part of Y^{L-1}_{ab} between units (4 x 4 for (u, v) = (0, 0), (0, 1)); M_prev,
    M_last, sw, sw_out: M_{L-2}, M_{L-1}, sigma_w^2 into L - 1 and into the output."""

    u: UnitMoments
    grad: dict
    jac: dict
    cov_below: dict
    S4: Exchangeable
    stein: dict
    M_prev: int
    M_last: int
    sw: float
    sw_out: float


def _first_variation(u: UnitMoments, M_prev: int, M_last: int, sw: float, sw_out: float) -> tuple:
    """(grad, jac): Price on the law of the unit's pre-activations (d/dK = sw d/dQ) and the explicit Theta' = 1 +
    M_prev K + sw N of X_aa (blocks: 0 = K, 1 = N below)."""
    rr = u.U.permuted((0, 2, 1, 3))     # d E[(P Theta' P^T)_ts] / d Theta'_ij = E[P_ti P_sj] over (t, s, i, j)
    jac = {(0, 0): sw * u.hk, (1, 0): sw * u.hx + M_prev * rr, (1, 1): sw * rr}
    grad = {0: M_last * jac[(0, 0)] + sw_out * jac[(1, 0)], 1: sw_out * jac[(1, 1)]}
    return grad, jac


# the NTK's spread S4 between two units of the layer below a batch norm on layer L - 1 as an exchangeable tensor (its
# 15 values do not depend on T): hiddenbn's, under the name this module has exported
spread_classes = cross_unit_spread_classes


@functools.lru_cache(maxsize=16)
def _last_bn(net: Network, width: int, samples: int, points: int, below: Any = None) -> _LastLayer:
    """:class:`_LastLayer` for a batch norm on layer L - 1 (the only normalization of ``net``)."""
    T, l = samples, net.depth - 1
    widths = net.widths(width)
    M1, M2 = widths[l - 1], widths[l]
    sw, sw_out = float(net.sigma_w2[l - 1]), float(net.sigma_w2[l])
    u, v, Dp, w = _bn_moments(net, width, T, points, below)
    grad, jac = _first_variation(u, M1, M2, sw, sw_out)
    Pi = projector(T)
    Y = Exchangeable.from_function(4, lambda lab: w.y[(0, lab[1])][lab[2], lab[3]])
    PYP = contract(T, "ar,uvrs,sb->uvab", Pi, Y, Pi)
    both = contract(T, "atri,ijrq,csqj->atcs", u.fpz, PYP, u.fpz)
    stein = {}
    for s in (0, 1):    # Y^l between two units: Stein on their rows (zero on layer 1: no NTK below)
        stein[(0, s)] = (M2 * sw / M1) ** 2 * np.array([[both.at((a, 0, c, s)) for c in range(4)] for a in range(4)])
    S4 = spread_classes(net, width) if below is None else below.classes
    return _LastLayer(u, grad, jac, entry_covariance(w), S4, stein, M1, M2, sw, sw_out)


def _stein_matrices(unit: Unit, Q: Exchangeable) -> dict:
    """D_s[tau, rho] = E[d_rho (phi_tau phi'_s)] over four exchangeable samples (s = 0, 1; fourworld's plain step)."""
    qa, qb = (float(x) for x in Q.values)
    return stein_matrices(two_sample_layer(unit, qa, qb, qa))


def _y_part(u: UnitMoments, M: int, scale: float, s: int) -> np.ndarray:
    """M scale E[k_ac X_0s] over four samples (a, c): Y's part over single units."""
    return np.array([[M * scale * u.Ekx.at((a, c, 0, s)) for c in range(4)] for a in range(4)])


@functools.lru_cache(maxsize=16)
def _last_plain(net: Network, width: int, samples: int, points: int, below: Any = None) -> _LastLayer:
    """:class:`_LastLayer` for the plain layer L - 1 above a batch norm on a hidden layer l < L - 1: the plain layers'
    units on the mean kernel and NTK average below, whose covariance over all T^2 entries is carried up from layer l
    (the units' own, 1 / M_j, plus the layer below's pushed through the first variation), the NTK's spread between two
    units of layer j from Phi^{j-1} = sum over pairs of units of E[X_bd X_bd] (at the normalized layer its units' own
    and, for l >= 2, U U Sigma4 between them), and Y^j between units by Stein (fourworld's D_u Y^{j-1} D_v^T). A
    ``below`` with a ``start`` supplies layer l's state itself (a layer norm there: :mod:`meanfield.finite.lnpair`)."""
    T, L, l = samples, net.depth, net.norms[0].layer
    widths = net.widths(width)
    sws, sbs = [float(x) for x in net.sigma_w2], [float(x) for x in net.sigma_b2]

    def up(u: UnitMoments, jac: dict, cov: dict, width: int) -> dict:    # the units' own + the layer below's
        own, carried = _unit_covariance(T, u), _block_sandwich(T, jac, cov, jac, (0, 1), (0, 1))
        return {key: own[key] / width + carried[key] if key in carried else own[key] / width for key in own}
    if getattr(below, "start", None) is not None:
        u, cov_below, phi4, y = below.start
    else:
        start = _last_bn(normalized_prefix(net), width, T, points, below)
        u, cov_below = start.u, up(start.u, start.jac, start.cov_below, widths[l])
        phi4 = widths[l] * u.x2scale * u.Exx
        if start.S4.any():      # X_bd = P_b S_bd P_d^T between two units of the normalized layer
            phi4 = phi4 + widths[l] * (widths[l] - 1) * contract(T, "aicj,bkdl,ikjl->abcd", u.U, u.U, start.S4)
        y = {(0, s): _y_part(u, widths[l], u.xscale, s) + start.stein[(0, s)] for s in (0, 1)}
    for j in range(l + 1, L):
        if j > l + 1:
            cov_below = up(u, jac, cov_below, widths[j - 1])
        K, N = u.Ek, u.xscale * u.Ex
        Q = Exchangeable(2, sws[j - 1] * K.values + sbs[j - 1])
        theta = Exchangeable(2, 1.0 + widths[j - 1] * K.values + sws[j - 1] * N.values)
        unit = Unit.of(net.phi(j))
        u = _plain_moments(unit, Q, theta, T, points)
        grad, jac = _first_variation(u, widths[j - 1], widths[j], sws[j - 1], sws[j])
        S4 = (sws[j - 1] / widths[j - 1]) ** 2 * phi4
        D = _stein_matrices(unit, Q)
        stein = {(0, s): (widths[j] / widths[j - 1]) ** 2 * sws[j - 1] ** 2 * (D[0] @ y[(0, s)] @ D[s].T)
                 for s in (0, 1)}
        # layer j's Phi: its units' own E[X_bb X_bb] and, between units, E[phi' phi'] E[phi' phi'] S4
        Ud = contract(T, "ttss->ts", u.U)
        phi4 = widths[j] * u.Exx + widths[j] * (widths[j] - 1) * contract(T, "ac,bd,abcd->abcd", Ud, Ud, S4)
        y = {(0, s): _y_part(u, widths[j], 1.0, s) + stein[(0, s)] for s in (0, 1)}
    return _LastLayer(u, grad, jac, cov_below, S4, stein, widths[L - 2], widths[L - 1], sws[L - 2], sws[L - 1])


def _last_layer(net: Network, width: int, samples: int, points: int, below: Any = None) -> _LastLayer:
    """bnpair's placements below the output: a batch norm on layer L - 1, or on a lower hidden layer."""
    if net.norms[0].layer == net.depth - 1:
        return _last_bn(net, width, samples, points, below)
    return _last_plain(net, width, samples, points, below)


def _check_inner(net: Any, width: Any, samples: Any, points: Any) -> tuple[int, int, int]:
    """(M, T, points) for a network whose only normalization is a batch norm on a hidden layer."""
    ok = (isinstance(net, Network) and not net.is_symbolic and len(net.norms) == 1
          and isinstance(net.norms[0], BatchNorm) and net.depth >= 2
          and 1 <= net.norms[0].layer <= net.depth - 1)
    if not ok:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network whose only normalization is a batch norm on a hidden layer")
    prefix = net if net.norms[0].layer == net.depth - 1 else normalized_prefix(net)
    return _check_last(prefix, width, samples, points)


@dataclass(frozen=True, eq=False)
class TopBelow:
    """What is under the top batch norm of a chain (compared by identity): the four-sample world of the layer below it
    and the NTK's spread Sigma4[t1, s1, t2, s2] between two of its units, as
    :func:`meanfield.finite.hiddenbn.cross_unit_spread` gives it for a plain network below: an exchangeable dense T^4
    array (read at each pattern's canonical index) or an :class:`meanfield.finite.exchangeable.Exchangeable` of order
    4 (any T); ``start``: for a layer norm on the top's layer l with plain layers above it, layer l's own state
    (unit moments, Cov of its (K, N) over all entries, Phi^l, Y^l: :mod:`meanfield.finite.lnpair`).

    Example:
        >>> from meanfield.finite.hiddenbn import cross_unit_spread
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2"])
        >>> top = TopBelow(realized_world(Network(2, "tanh", 2, 0.1), 64), cross_unit_spread(net, 64, 8))
        >>> own = projected_entry_parts(net, 64, 8, points=2**10)
        >>> projected_entry_parts(net, 64, 8, points=2**10, below=top) == own
        True
    """

    world: World
    spread: Any
    start: Any = None

    @property
    def classes(self) -> Exchangeable:
        """The spread as an exchangeable tensor."""
        if isinstance(self.spread, Exchangeable):
            return self.spread
        return Exchangeable.from_function(4, lambda lab: self.spread[lab])

    def fits(self, samples: int) -> bool:
        """Whether the spread is over ``samples`` samples (any T for an exchangeable one)."""
        if isinstance(self.spread, Exchangeable):
            return self.spread.order == 4
        return np.shape(self.spread) == (samples,) * 4


@functools.lru_cache(maxsize=16)
def projected_entry_parts(net: Network, width: int, samples: int, project: bool = True,
                          points: int = POINTS, below: "TopBelow | None" = None) -> tuple[float, float, float]:
    """(same, below, cross): sum over the T^2 entries of Var G_kk(t, s) (the units with the output weights' share;
    the layers below's) and of E G_kl(t, s)^2 (k != l), of Pi G Pi (``project``) or of G, for a batch norm on the last
    hidden layer, or on a lower one with plain layers above (module docstring, parts 1.-3.; the units' laws on the
    quasi-Monte Carlo rule).

    Args:
        net: a numeric network whose only normalization is a batch norm on layer L - 1 (``hiddenbn``'s placement) or
            on a lower hidden layer, an activation with known kinks there, inputs with a non-negative mean
            product.
        width: M.
        samples: T (>= 6 for a full batch norm, 4 centre-only).
        project: True for the centred output (Pi G Pi), False for G itself (hiddenbn's exact values, a check).
        points: Sobol nodes (each with its mirror image).
        below: a :class:`TopBelow` in place of the plain world and spread under the batch norm (a chain of batch
            norms: ``net`` then carries only the top one); None for ``net``'s own.

    Returns:
        (same, below, cross) in Gram units squared, summed over the entries of one block.

    Raises:
        InvalidArgument: another network, T too small, too few points, ``below`` not a TopBelow of T samples.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2"])
        >>> same, below, cross = projected_entry_parts(net, 64, 8, points=2**12)
        >>> bool(same > 0 and below > 0 and cross > 0)
        True
    """
    M, T, n = _check_inner(net, width, samples, points)
    if below is not None and (not isinstance(below, TopBelow) or not below.fits(T)):
        raise InvalidArgument("below", below, f"a TopBelow whose spread is over T = {T} samples")
    s = _last_layer(net, M, T, n, below)
    left = projector(T) if project else identity()
    return entry_parts(s.u, T, s.M_last, s.sw_out, left, s.S4, s.grad, s.cov_below)


_P4 = tuple((a, b) for a in range(4) for b in range(a, 4))     # the 10 pairs of four samples (fourworld's order)


@functools.lru_cache(maxsize=16)
def full_output_below(net: Network, width: int, samples: int, points: int = POINTS) -> tuple:
    """(D_0, D, v, dv, same, cross, world): the statistics below a full batch norm on the output that
    :func:`meanfield.finite.normalized.output_batch_norm_from` takes, for one batch norm on any hidden layer.

    D_0, D = T (E G^in_tt - E G^in_ts) (mean field, corrected: :mod:`meanfield.finite.hiddenbn`,
    :mod:`meanfield.finite.deepbn`); v, dv = sigma_w^2 (K_tt - K_ts) of layer L - 1 and its O(1/M) shift
    (:func:`meanfield.finite.hiddenbn.batch_norm_layer`; with plain layers above the norm
    :func:`meanfield.finite.deepbn.kernel_above`); same, cross =
    the three pairings (X_1, X_2, X_3) of Cov(T G^in_kl(u, v), T G^in_kl(u', v')) with Pi Pi (k = l; k != l), from
    the module docstring's parts on the quasi-Monte Carlo rule (X_2 the projected entry variances, X_3 = X_2 for
    k = l, X_1 = Var tr(Pi T G^in)); world = layer L - 1's four-sample world: its mean kernel and NTK average, their
    covariance over the 20 pairs of four samples (the units' own, 1 / M_{L-1}, plus what is below pushed through the
    first variation) and Y^{L-1}_{ab} = h_a^T X_{0s} h_b (its part over single units, and between units by Stein on
    two rows).

    Args:
        net: a numeric network with a batch norm (full or centre-only) on a hidden layer and a
            full batch norm on the output, no other normalization; an activation with known kinks on the
            normalized layer.
        width: M.
        samples: T >= 6.
        points: Sobol nodes of the rule.

    Returns:
        (D_0, D, v, dv, same, cross, world) with same, cross tuples of three floats and world a
        :class:`meanfield.finite.fourworld.World`.

    Raises:
        InvalidArgument: another network, T < 6.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2", "batch:last"])
        >>> D0, D, v, dv, same, cross, world = full_output_below(net, 64, 8, points=2**12)
        >>> bool(D > D0 > 0 and v > 0), world.cov.shape, bool(same[1] == same[2] > 0)
        (True, (20, 20), True)
    """
    pair = pair_placement(net)
    if pair is None or pair[1].center_only:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network with a hidden batch norm and a full batch norm on the output, no "
                              "other normalization")
    inner = _inner(net)
    M, T, n = _check_inner(inner, width, samples, points)
    T = check_int("samples", T, minimum=6, maximum=MEAN_SAMPLES)
    last = pair[0].layer == net.depth - 1
    s = _last_layer(inner, M, T, n)
    u = s.u
    if last:
        t = hidden_batch_norm_terms(inner, M, T)
        b = batch_norm_layer(inner, M, T)
        kbar, dk, nbar = b.kbar, b.dk, b.nbar
    else:
        t = deep_batch_norm_terms(inner, M, T)
        kbar, dk = kernel_above(inner, M, T)
        nbar = u.xscale * u.Ex.values
    D0, D = T * (t.mean_field_diag - t.mean_field_offdiag), T * (t.mean_diag - t.mean_offdiag)
    v, dv = s.sw_out * float(kbar[0] - kbar[1]), s.sw_out * float(dk[0] - dk[1])
    same, cross, world = output_pairings(inner, M, T, (float(kbar[0]), float(kbar[1])),
                                         (float(nbar[0]), float(nbar[1])), n)
    return float(D0), float(D), v, dv, same, cross, world


def output_pairings(net: Network, width: int, samples: int, kbar: tuple, nbar: tuple, points: int = POINTS,
                    below: TopBelow | None = None) -> tuple:
    """(same, cross, world): the pairings (X_1, X_2, X_3) of Cov(T G_kl(u, v), T G_kl(u', v')) with Pi Pi (k = l;
    k != l) and layer L - 1's four-sample world (:func:`full_output_below`'s), for a network whose only normalization is
    a batch norm on a hidden layer, below a full batch norm on the output.

    Args:
        net: a numeric network whose only normalization is a batch norm on a hidden layer (as
            :func:`projected_entry_parts`).
        width, samples: M, T >= 6.
        kbar, nbar: the mean-field (K_tt, K_ts) and (N_tt, N_ts) of layer L - 1, the world's means.
        points: Sobol nodes of the rule.
        below: a :class:`TopBelow` in place of the plain world and spread under the batch norm (a chain).

    Raises:
        InvalidArgument: another network, T < 6, ``below`` not a TopBelow of T samples.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2", "batch:last"])
        >>> D0, D, v, dv, same, cross, world = full_output_below(net, 64, 8, points=2**10)
        >>> inner = net.with_(norms=("batch:2",))
        >>> output_pairings(inner, 64, 8, world.k, world.n, 2**10)[:2] == (same, cross)
        True
    """
    M, T, n = _check_inner(net, width, samples, points)
    T = check_int("samples", T, minimum=6)
    if below is not None and (not isinstance(below, TopBelow) or not below.fits(T)):
        raise InvalidArgument("below", below, f"a TopBelow whose spread is over T = {T} samples")
    s = _last_layer(net, M, T, n, below)
    u, M2 = s.u, s.M_last
    Pi = projector(T)
    same2, below2, cross2, cross3 = entry_parts(u, T, M2, s.sw_out, Pi, s.S4, s.grad, s.cov_below, swapped=True)
    same1, cross1 = row_parts(u, T, M2, s.sw_out, Pi, s.S4, s.grad, s.cov_below)
    x2 = T**2 * (same2 + below2)
    same = (same1, x2, x2)
    cross = (cross1, T**2 * cross2, T**2 * cross3) if net.outputs >= 2 else (0.0, 0.0, 0.0)
    # layer L - 1's (K, N) over all entries: the units' own covariance and what is below pushed through
    own = _unit_covariance(T, u)
    carried = _block_sandwich(T, s.jac, s.cov_below, s.jac, (0, 1), (0, 1))
    cov = np.zeros((20, 20))
    for (r, c), block in own.items():
        total = block / M2 + carried[(r, c)] if (r, c) in carried else block / M2
        for i, (a, b) in enumerate(_P4):
            for j, (a2, b2) in enumerate(_P4):
                cov[10 * r + i, 10 * c + j] = total.at((a, b, a2, b2))
    y = {(0, v_): _y_part(u, M2, u.xscale, v_) + s.stein[(0, v_)] for v_ in (0, 1)}
    world = World((float(kbar[0]), float(kbar[1])), (float(nbar[0]), float(nbar[1])), cov, y)
    return same, cross, world


@dataclass(frozen=True)
class BatchNormPairTerms:
    """E G, m, kappa_1, kappa_2 and s with their O(1/M) terms: a hidden batch norm and a centre-only one on the output.

    Attributes:
        network, width, samples: what was computed (M, T).
        hidden_layer: l, the batch-normalized hidden layer.
        mean_field_diag, mean_field_offdiag, m_mean_field, s_mean_field: ``predict``'s values.
        inner_diag, inner_offdiag: the corrected E G^in_tt, E G^in_ts of the network without the output's norm.
        mean_diag, mean_offdiag, m, kappa1, kappa2: corrected.
        s_same, s_below, s_cross: the projected entry variances' parts of s (None where s is not corrected).
        s: corrected where ``includes_1_over_M`` names it, else the mean-field value.
        includes_1_over_M: the statistics that include their O(1/M) terms.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2", "batch-center:last"])
        >>> t = batch_norm_pair_terms(net, 64, 8)
        >>> bool(t.s > t.s_mean_field), sorted(t.includes_1_over_M) == sorted(STATISTICS)
        (True, True)
    """

    network: Network
    width: int
    samples: int
    hidden_layer: int
    mean_field_diag: float
    mean_field_offdiag: float
    m_mean_field: float
    s_mean_field: float
    inner_diag: float
    inner_offdiag: float
    mean_diag: float
    mean_offdiag: float
    m: float
    kappa1: float
    kappa2: float
    s_same: float | None
    s_below: float | None
    s_cross: float | None
    s: float
    includes_1_over_M: frozenset
    P: int
    alpha: float


@functools.lru_cache(maxsize=32)
def batch_norm_pair_terms(net: Network, width: int, samples: int) -> BatchNormPairTerms:
    """E G = Pi E G^in Pi and s from the projected entry variances: hidden batch norm + centre-only one on the output.

    Args:
        net: a numeric network with one batch norm (full or centre-only) on a hidden layer and a centre-only batch
            norm on the output, no other normalization; an activation with known kinks on the normalized
            layer; inputs with a non-negative mean product.
        width: M.
        samples: T (>= 6 with a full hidden batch norm, 4 centre-only).

    Returns:
        :class:`BatchNormPairTerms`.

    Raises:
        InvalidArgument: another placement, a symbolic network, T too small, a negative kernel overlap below.

    Example:
        >>> net = Network(4, "relu", 2, 0.1, outputs=2, norms=["batch-center:2", "batch-center:last"])
        >>> t = batch_norm_pair_terms(net, 64, 8)      # a plain layer between the norms
        >>> bool(abs(t.mean_offdiag + t.mean_diag / 7) < 1e-12), bool(t.s > t.s_mean_field)
        (True, True)
    """
    M, T, hidden = _check(net, width, samples)
    inner = _inner(net)
    base = predict(net, M, T)
    last = hidden.layer == net.depth - 1
    t = hidden_batch_norm_terms(inner, M, T) if last else deep_batch_norm_terms(inner, M, T)
    gd, go = t.mean_diag, t.mean_offdiag
    # G = Pi G^in Pi per block, G^in exchangeable: diagonal (1 - 1/T)(d - o), off-diagonal -(d - o) / T
    mean_d, mean_o = (1 - 1 / T) * (gd - go), -(gd - go) / T
    C, P, alpha = net.outputs, int(base.P), float(base.alpha)
    # every hidden layer: the batch-normalized layer's units, then the plain layers above it
    same, below, cross = projected_entry_parts(inner, M, T)
    parts = (C * same / P, C * below / P, C * (C - 1) * cross / P)
    s = C * (T * mean_d**2 + T * (T - 1) * mean_o**2) / P + sum(parts)
    return BatchNormPairTerms(net, M, T, hidden.layer, float(base.gram_diag), float(base.gram_offdiag),
                              float(base.m), float(base.s), gd, go, mean_d, mean_o, C * T * mean_d / P,
                              T * mean_d / (alpha * M), T * mean_o / (alpha * M), *parts, s, STATISTICS, P, alpha)


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict | None:
    """The "1/M" model for a hidden batch norm with a centre-only one on the output; None for other networks (with a
    full batch norm on the output it is :mod:`meanfield.finite.normalized`'s, fed by :func:`full_output_below`).

    Example:
        >>> net = Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2", "batch-center:last"])
        >>> sorted(finite_width_stats(net, 64, 8, predict(net, 64, 8))["includes_1_over_M"])
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
        >>> finite_width_stats(Network(3, "tanh", 2, 0.1, norms=["batch:2", "batch:last"]), 64, 8, None) is None
        True
    """
    pair = pair_placement(net)
    if pair is None or not pair[1].center_only:
        return None
    hidden = pair[0]
    try:
        t = batch_norm_pair_terms(net, width, samples)
    except InvalidArgument as error:     # predict keeps working with mean-field values
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    what = (f"{hidden} with a centre-only batch norm on the output (G = Pi G^in Pi, exact): E G_tt, E G_ts (so m and "
            "the kappa's) from the hidden batch norm's derived O(1/M) terms; s with the projected entry variances "
            "(the units' laws on a fixed quasi-Monte Carlo rule, deterministic); s still misses an O(T/M^2) term")
    return dict(gram_diag=t.mean_diag, gram_offdiag=t.mean_offdiag, m=t.m, kappa1=t.kappa1, kappa2=t.kappa2,
                s=t.s, includes_1_over_M=t.includes_1_over_M,
                notes=(what, "lambda_max: not corrected (the mean-field value or bounds)"))
