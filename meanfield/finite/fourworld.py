"""The four-sample world below a normalized layer: realized-kernel and NTK-average covariances, derived.

For a plain network, the realized kernel K^{L-1} = H^T H / M_{L-1} of its last hidden layer and the realized average
N^{L-1} = tr X / M_{L-1} of the NTK below (X_uv = diag_b(phi'_b(u) phi'_b(v) Theta^{L-2}_bb(u, v))) fluctuate by
O(1/sqrt(M)); :func:`realized_world` gives their means and covariances over any pattern of equal samples (four
exchangeable samples: ten pairs for K, ten for N) to leading order, and the sandwiched NTK Y^{uv}_{ab} = h_a^T X_uv
h_b that Stein's lemma on the next layer's rows needs. The realized-average recursion of
:mod:`meanfield.finite.corrections`, run for four samples (four-sample Gaussian integrals by conditioning on the
common part, u_i = sqrt(q_2) z + sqrt(q_1 - q_2) e_i, so 0 <= q_2 is required). :func:`class_tensor` expands such
pattern-indexed values to T^4 tensors. Shared by :mod:`meanfield.finite.normalized` (full batch norm on the output)
and :mod:`meanfield.finite.hiddenbn` (batch norm on the last hidden layer). The layer recursion itself is
:func:`world_recursion`, which takes the per-layer step: :func:`plain_step` here, the layer-norm step in
:mod:`meanfield.finite.layernorm_world` (whose finer quadrature is :func:`conditional_moments` with fixed breaks).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit, breaks, normal_rule
from ..spec.network import Network
from .corrections import two_sample_layer
from .fourpoint import set_partitions

__all__ = ["World", "realized_world", "carry_world", "inputs_world", "stein_matrices", "class_tensor", "pair_index",
           "four_sample_mean", "plain_step", "world_recursion", "conditional_moments", "projected_pairings",
           "world_contractions"]


_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def class_tensor(T: int, value) -> np.ndarray:
    """C[u, v, u', v'] = value(labels) for all T^4 index tuples, labels the pattern of equal indices.

    ``value`` is called once per pattern (at most 15) with the canonical labels (first appearance numbered
    0, 1, 2, 3), e.g. (0, 1, 0, 2) for u = u' with v, v' and u all different.

    Example:
        >>> C = class_tensor(3, lambda labels: float(len(set(labels))))
        >>> C.shape, float(C[0, 0, 0, 0]), float(C[0, 1, 0, 2])
        ((3, 3, 3, 3), 1.0, 3.0)
    """
    T = check_int("T", T, minimum=1)
    idx = np.indices((T,) * 4).reshape(4, -1)
    code = np.zeros(idx.shape[1], dtype=int)
    for bit, (a, b) in enumerate(_PAIRS):
        code |= (idx[a] == idx[b]).astype(int) << bit
    out = np.empty(idx.shape[1])
    for c in np.unique(code):
        where = np.flatnonzero(code == c)
        first = idx[:, where[0]]
        seen: dict = {}
        labels = tuple(seen.setdefault(int(x), len(seen)) for x in first)
        out[where] = value(labels)
    return out.reshape((T,) * 4)


# -- the four-sample world: realized-kernel and NTK covariances for any pattern of equal samples ------------------

_P4 = tuple((a, b) for a in range(4) for b in range(a, 4))       # the 10 pairs of four samples
_P4_INDEX = {p: i for i, p in enumerate(_P4)}
_Z_RULE = normal_rule(np.array([[-3.0, 0.0, 3.0]]))


def pair_index(a: int, b: int) -> int:
    """The index of the pair {a, b} of four samples among (0, 0), (0, 1), ..., (3, 3).

    Example:
        >>> pair_index(0, 0), pair_index(1, 0), pair_index(3, 3)
        (0, 1, 9)
    """
    return _P4_INDEX[(min(a, b), max(a, b))]


def conditional_moments(unit: Unit, q1: float, q2: float, grid: tuple | None = None) -> tuple:
    """(w_z, m): E[prod_i phi^p_i phi'^q_i u^k_i (u_i)] = sum_z w_z prod_i m((p_i, q_i, k_i))[z] for four exchangeable
    samples u_i = sqrt(q2) z + sqrt(q1 - q2) e_i (kernel q1 on, q2 off the diagonal; the e_i independent given z).

    Args:
        unit: the activation; q1, q2: the kernel, 0 <= q2 < q1.
        grid: None (the outer rule over z in pieces [-3, 0, 3], the inner one over e split at the unit's kinks only:
            :func:`realized_world`'s), or fixed breaks (increasing) added to both rules besides the kinks.

    Raises:
        InvalidArgument: q2 < 0 or q1 <= q2.

    Example:
        >>> from meanfield.integrals.quadrature import IDENTITY
        >>> wz, m = conditional_moments(IDENTITY, 1.0, 0.5)
        >>> round(float((wz * m((0, 0, 2)) * m((1, 0, 0)) ** 2).sum()), 10)     # E[u_0^2 u_1 u_2] = q1 q2 + 2 q2^2
        1.0
    """
    if not (q2 >= 0 and q1 > q2):
        raise InvalidArgument("net", (q1, q2), "layer kernels with 0 <= q_ts < q_tt (exchangeable, non-negative "
                                               "overlap: the one-dimensional conditioning)")
    z, wz = _Z_RULE if grid is None else _grid_rule(tuple(grid))
    shift = math.sqrt(q2) * z[0]
    scale = math.sqrt(q1 - q2)
    kinks = breaks(unit, shift, scale)
    if grid is not None:
        kinks = np.concatenate([kinks, np.broadcast_to(np.asarray(grid), (shift.size, len(grid)))], axis=1)
    e, we = normal_rule(kinks)
    u = shift[:, None] + scale * e
    fa, fd = np.asarray(unit.f(u), dtype=float), np.asarray(unit.df(u), dtype=float)
    cache: dict = {}

    def m(key: tuple) -> np.ndarray:
        if key not in cache:
            p, q, k = key
            cache[key] = (we * fa**p * fd**q * u**k).sum(axis=1)
        return cache[key]
    return wz[0], m


@functools.lru_cache(maxsize=8)
def _grid_rule(grid: tuple) -> tuple:
    return normal_rule(np.array(grid)[None, :])


def _moments4(unit: Unit, q1: float, q2: float):
    """E[prod_i phi^p_i phi'^q_i (u_i)] for four exchangeable samples (kernel q1 on, q2 off the diagonal): u_i =
    sqrt(q2) z + sqrt(q1 - q2) e_i, the e_i independent given z, so the mean is E_z[prod_i m_{p_i q_i}(z)]."""
    wz, m = conditional_moments(unit, q1, q2)

    def mean(powers: list) -> float:
        out = wz.copy()
        for p, q in powers:
            if p or q:
                out = out * m((p, q, 0))
        return float(out.sum())
    return mean


def _powers(*factors: tuple) -> list:
    """Per-sample (power of phi, power of phi') of a product of factors (kind, sample), kind 'f' or 'd'."""
    out = [[0, 0] for _ in range(4)]
    for kind, sample in factors:
        out[sample][0 if kind == "f" else 1] += 1
    return [tuple(x) for x in out]


def four_sample_mean(unit: Unit, q1: float, q2: float, factors: tuple) -> float:
    """E[prod over factors (kind, i) of phi(u_i) (kind 'f') or phi'(u_i) (kind 'd')], four exchangeable samples u ~ N(0,
    (q1 - q2) I + q2 1 1^T), 0 <= q2 < q1.

    Example:
        >>> from meanfield.integrals.quadrature import IDENTITY
        >>> round(four_sample_mean(IDENTITY, 1.0, 0.5, (("f", 0), ("f", 0), ("f", 1), ("f", 2))), 10)  # q1 q2 + 2 q2^2
        1.0
    """
    return _moments4(unit, float(q1), float(q2))(_powers(*factors))


@dataclass(frozen=True)
class World:
    """Covariances of V = (K^{L-1} pairs, N^{L-1} pairs) of four samples, the mean kernel and NTK of layer L - 1,
    and the sandwiched NTK Y^{uv}_{ab} (u, v) = (0, 0) or (0, 1), all to leading order."""

    k: tuple            # (K_tt, K_ts) of layer L - 1
    n: tuple            # (N_tt, N_ts)
    cov: np.ndarray     # 20 x 20
    y: dict             # (0, 0) / (0, 1) -> 4 x 4 matrix over (a, b)


def stein_matrices(lay: Any) -> dict:
    """D_u[tau, rho] = E[d_rho (phi_tau phi'_u)] over four exchangeable samples (u = 0, 1), from a two-sample layer's
    table (:func:`meanfield.finite.corrections.two_sample_layer`, its dmat): Stein's lemma on a layer's rows.

    Example:
        >>> lay = two_sample_layer(Unit.of(Network(2, "tanh", 2, 0.1).phi(1)), 1.0, 0.3, 1.0)
        >>> D = stein_matrices(lay)
        >>> sorted(D), D[0].shape, bool(D[0][2, 1] == 0.0)
        ([0, 1], (4, 4), True)
    """
    D = {}
    for u in (0, 1):
        Du = np.zeros((4, 4))
        for tau in range(4):
            if tau == u:
                Du[tau, u] = lay.dmat[0][0, 0]
            else:
                Du[tau, tau], Du[tau, u] = lay.dmat[0][1, 1], lay.dmat[0][1, 0]
        D[u] = Du
    return D


def plain_step(mean, unit: Unit, qa: float, qb: float, theta: tuple, y: dict, Mj: int, Mb: int, sw: float,
               first: bool) -> tuple:
    """(means, M x cov, d/dQ) of a plain layer's (phi_a phi_b, phi'_a phi'_b) pairs and Y^j = M_j Theta^j E4 +
    (M_j / M_{j-1})^2 sigma_w^2 D_u Y^{j-1} D_v^T, for :func:`world_recursion`.

    Args:
        mean: factors ((kind, sample), ...) -> the four-sample mean at kernel (qa, qb) (kinds 'f', 'd'): the
            quadrature is the caller's.
        unit: the layer's activation; qa, qb: its pre-activation kernel on and off the diagonal.
        theta: the mean NTK (tt, ts) of the layer's pre-activations; y: Y^{j-1} for (u, v) = (0, 0), (0, 1).
        Mj, Mb: the widths M_j and M_{j-1}; sw: sigma_w^2 of the weights into layer j; first: j == 1 (no Y below).

    Returns:
        means (20,), the unit-level covariance sigma (20 x 20; the layer's is sigma / M_j), the response (20 x 10)
        from the exact Price gradients, and the new Y.

    Example:
        >>> from meanfield.integrals.quadrature import IDENTITY
        >>> mean = functools.partial(four_sample_mean, IDENTITY, 1.0, 0.5)
        >>> y0 = {(0, 0): np.zeros((4, 4)), (0, 1): np.zeros((4, 4))}
        >>> means, sigma, jac, y = plain_step(mean, IDENTITY, 1.0, 0.5, (2.0, 1.0), y0, 4, 4, 1.0, True)
        >>> means[:2].tolist(), jac.shape, float(y[(0, 0)][0, 0])      # linear: E[u u] = Q, E4 = Q_ab, Y = M Theta Q
        ([1.0, 0.5], (20, 10), 8.0)
    """
    lay = two_sample_layer(unit, qa, qb, qa)
    # unit-level covariance of the 20 products (phi_a phi_b, phi'_a phi'_b)
    facs = [(("f", a), ("f", b)) for a, b in _P4] + [(("d", a), ("d", b)) for a, b in _P4]
    means = np.array([mean(f) for f in facs])
    second = np.array([[mean(f + g) for g in facs] for f in facs])
    sigma = second - np.outer(means, means)
    # d(F, c)_p / dK^{j-1}_A, local (F_ab depends on Q_aa, Q_bb, Q_ab only)
    jac = np.zeros((20, 10))
    for i, (a, b) in enumerate(_P4):
        for off, grad in ((0, lay.gradF), (10, lay.gradc)):
            if a == b:
                jac[off + i, pair_index(a, a)] = grad[0, 0]
            else:
                jac[off + i, pair_index(a, a)] = grad[1, 0]
                jac[off + i, pair_index(a, b)] = grad[1, 1]
                jac[off + i, pair_index(b, b)] = grad[1, 2]
    # the sandwiched NTK Y^{uv}_{ab} = h_a^T X_uv h_b (before N: it uses Theta^j)
    D = stein_matrices(lay)
    out = {}
    for (u, v), old in y.items():
        e4 = np.array([[mean((("f", a), ("f", b), ("d", u), ("d", v))) for b in range(4)] for a in range(4)])
        th = theta[0 if u == v else 1]
        out[(u, v)] = Mj * th * e4 + (0.0 if first else (Mj / Mb) ** 2 * sw ** 2 * (D[u] @ old @ D[v].T))
    return means, sigma, jac, out


def world_recursion(net: Network, width: int, step) -> World:
    """V = (K^{L-1}, N^{L-1}) = sum_i Lmap_i X^i: the four-sample world's layer recursion, with a given layer step.

    X^j = (K^j, c^j) pairs moves by its local fluctuation sigma_j / M_j and its response to K^{j-1}; N^j responds
    linearly, Theta^j dc^j + c^j (M_{j-1} dK^{j-1} + sigma_w^2 dN^{j-1}); the means of kbar, nbar and Theta move up.
    What a layer does (plain or layer-normed, which quadrature) is ``step``'s.

    Args:
        net: a numeric network of depth >= 2 (checked by the caller).
        width: M (checked by the caller).
        step: (net, widths, j, qa, qb, theta, y) -> (means (20,), sigma (20 x 20), response (20 x 10), new y), e.g.
            :func:`plain_step` with a four-sample mean.

    Raises:
        InvalidArgument: ``step`` is not callable.

    Example:
        >>> def step(net, widths, j, qa, qb, theta, y):     # a plain layer, four_sample_mean's quadrature
        ...     unit = Unit.of(net.phi(j))
        ...     mean = functools.partial(four_sample_mean, unit, qa, qb)
        ...     return plain_step(mean, unit, qa, qb, theta, y, widths[j], widths[j - 1], net.sigma_w2[j - 1], j == 1)
        >>> net = Network(2, "tanh", 2, 0.1)
        >>> bool(np.array_equal(world_recursion(net, 64, step).cov, realized_world(net, 64).cov))
        True
    """
    if not callable(step):
        raise InvalidArgument("step", step, "a callable layer step (see plain_step)")
    widths = net.widths(width)
    w0 = inputs_world(net, width)
    theta = (1 + widths[0] * w0.k[0], 1 + widths[0] * w0.k[1])     # mean Theta^1 (tt, ts)
    return carry_world(net, width, step, 0, net.depth, (w0.k, w0.n, theta, w0.y), {(0, 0): w0.cov}, {})


def inputs_world(net: Network, width: int) -> World:
    """Cov(K_ab, K_cd) = (Q_ac Q_bd + Q_ad Q_bc) / M_0: the inputs' world, K = x.x / M_0 for the inputs' kernel Q
    (unbiased), no NTK (N = 0, Y = 0).

    Args:
        net: a network (its input_q1, input_q2).
        width: M (M_0 = ``net.widths(width)[0]``).

    Example:
        >>> w = inputs_world(Network(2, "tanh", 2, 0.1), 64)
        >>> w.k, bool(w.cov[0, 0] == 2 / 64), float(abs(w.cov[:, 10:]).max())
        ((1.0, 0.0), True, 0.0)
    """
    q1, q2 = float(net.input_q1), float(net.input_q2)
    Q = lambda a, b: q1 if a == b else q2  # noqa: E731 - the inputs' kernel
    cov = np.zeros((20, 20))
    for i, (a, b) in enumerate(_P4):
        for j, (c, d) in enumerate(_P4):
            cov[i, j] = (Q(a, c) * Q(b, d) + Q(a, d) * Q(b, c)) / net.widths(width)[0]
    return World((q1, q2), (0.0, 0.0), cov, {(0, 0): np.zeros((4, 4)), (0, 1): np.zeros((4, 4))})


def carry_world(net: Network, width: int, step, lo: int, hi: int, start: tuple, covs: dict, ncoef: dict) -> World:
    """V = (K^{hi-1}, N^{hi-1}) = sum_i Lmap_i X^i: :func:`world_recursion`'s layers lo + 1..hi - 1 from a given state
    of layer lo.

    Args:
        net: a numeric network (checked by the caller).
        width: M (checked by the caller).
        step: as :func:`world_recursion`'s.
        lo, hi: the layer the state is of and the first layer not carried (0 <= lo < hi <= L).
        start: (kbar, nbar, theta, y) at layer lo: the means of K and N (t t, t s), of the NTK 1 + M K + sigma_w^2 N
            and the sandwiched NTK.
        covs: {(lo, lo): Cov X^lo (20 x 20)}, X = (K, c) pairs (at a normalized layer (K, N)).
        ncoef: N^lo's linear response on the X^i, keyed by layer i <= lo (10 x 20 each; empty at the inputs).

    Returns:
        The world of layer hi - 1.

    Raises:
        InvalidArgument: lo, hi out of range.

    Example:
        >>> net = Network(3, "tanh", 2, 0.1)
        >>> w1 = realized_world(Network(2, "tanh", 2, 0.1), 64)
        >>> e = np.zeros((10, 20))
        >>> e[:, 10:] = np.eye(10)
        >>> theta = tuple(1 + 64 * k + 2.0 * n for k, n in zip(w1.k, w1.n))
        >>> w = carry_world(net, 64, _plain, 1, 3, (w1.k, w1.n, theta, w1.y), {(1, 1): w1.cov}, {1: e})
        >>> w.cov.shape
        (20, 20)
    """
    lo = check_int("lo", lo, minimum=0, maximum=net.depth - 1)
    hi = check_int("hi", hi, minimum=lo + 1, maximum=net.depth)
    widths = net.widths(width)
    sw = [float(v) for v in net.sigma_w2]
    sb = [float(v) for v in net.sigma_b2]
    kbar, nbar, theta, y = start
    covs = dict(covs)        # the caller's start stays as it was
    for j in range(lo + 1, hi):
        qa, qb = sw[j - 1] * kbar[0] + sb[j - 1], sw[j - 1] * kbar[1] + sb[j - 1]
        means, sigma, jac, y = step(net, widths, j, qa, qb, theta, y)
        J = np.zeros((20, 20))
        J[:, :10] = jac * sw[j - 1]
        covs[(j, j)] = sigma / widths[j] + J @ covs[(j - 1, j - 1)] @ J.T
        for i in range(lo, j):
            covs[(j, i)] = J @ covs[(j - 1, i)]
            covs[(i, j)] = covs[(j, i)].T
        # linear response of N^j (10 pairs) on X^i: Theta^j dc^j + c^j (M_{j-1} dK^{j-1} + sw dN^{j-1})
        cbar = means[10:]
        th_vec = np.array([theta[0 if a == b else 1] for a, b in _P4])
        new = {i: sw[j - 1] * cbar[:, None] * coef for i, coef in ncoef.items()}
        e = np.zeros((10, 20))
        e[:, :10] = np.diag(cbar * widths[j - 1])
        new[j - 1] = new.get(j - 1, np.zeros((10, 20))) + e
        e = np.zeros((10, 20))
        e[:, 10:] = np.diag(th_vec)
        new[j] = new.get(j, np.zeros((10, 20))) + e
        ncoef = new
        kbar = (float(means[pair_index(0, 0)]), float(means[pair_index(0, 1)]))
        nbar = (float(cbar[pair_index(0, 0)] * theta[0]), float(cbar[pair_index(0, 1)] * theta[1]))
        theta = (1 + widths[j] * kbar[0] + sw[j] * nbar[0], 1 + widths[j] * kbar[1] + sw[j] * nbar[1])
    top = hi - 1
    # V = (K^{hi-1}, N^{hi-1}) = sum_i Lmap_i X^i
    lmap = {i: np.vstack([np.zeros((10, 20)), coef]) for i, coef in ncoef.items()}
    lmap[top] = lmap.get(top, np.zeros((20, 20))).copy()
    lmap[top][:10, :10] += np.eye(10)
    cov = sum(lmap[i] @ covs[(i, i2)] @ lmap[i2].T for i in lmap for i2 in lmap)
    return World(kbar, nbar, cov, y)


def _plain(net: Network, widths: tuple, j: int, qa: float, qb: float, theta: tuple, y: dict) -> tuple:
    """A plain layer with this module's four-sample quadrature."""
    unit = Unit.of(net.phi(j))
    m4 = _moments4(unit, qa, qb)
    return plain_step(lambda f: m4(_powers(*f)), unit, qa, qb, theta, y, widths[j], widths[j - 1],
                      float(net.sigma_w2[j - 1]), j == 1)


@functools.lru_cache(maxsize=32)
def _world(net: Network, width: int) -> World:
    return world_recursion(net, width, _plain)


def realized_world(net: Network, width: int) -> World:
    """Cov of (K^{L-1}, N^{L-1}) over four samples (20 x 20), their means and Y^{uv}_{ab}, to leading order.

    The realized kernel and NTK average of the last hidden layer of a plain network (pairs (0, 0), (0, 1), ...,
    (3, 3) of four exchangeable samples; K first, then N), and the sandwiched NTK Y^{uv}_{ab} = h_a^T X_uv h_b for
    (u, v) = (0, 0) and (0, 1) (Stein's lemma on the next layer's rows needs it).

    Example:
        >>> w = realized_world(Network(2, "tanh", 2, 0.1), 64)
        >>> w.cov.shape, sorted(w.y)
        ((20, 20), [(0, 0), (0, 1)])
    """
    if not isinstance(net, Network) or net.norms or net.is_symbolic or net.depth < 2:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a plain numeric network of depth >= 2")
    return _world(net, check_int("width", width, minimum=1))


def projected_pairings(samples: int, value: Any) -> np.ndarray:
    """(X_1, X_2, X_3) = sum_{abcd} X_abcd (Pi_ab Pi_cd, Pi_ac Pi_bd, Pi_ad Pi_bc) for an exchangeable 4-tensor X.

    ``value(labels)`` gives X on each of the 15 patterns of equal indices (canonical labels, first appearance
    numbered 0, 1, 2, 3, as :func:`class_tensor`); a pattern with j distinct labels occurs
    T (T - 1) ... (T - j + 1) times, and Pi_ab = 1 - 1/T for equal labels, -1/T otherwise. O(1) in T.

    Args:
        samples: T >= 1.
        value: X on a pattern.

    Raises:
        InvalidArgument: T not a positive integer.

    Example:
        >>> [round(float(x), 6) for x in projected_pairings(5, lambda labels: 1.0)]   # all-ones X: Pi 1 = 0
        [0.0, 0.0, 0.0]
        >>> [round(float(x), 6) for x in projected_pairings(5, lambda l: float(l[0] == l[2] and l[1] == l[3]))]
        [4.0, 16.0, 4.0]
    """
    T = check_int("samples", samples, minimum=1)
    out = np.zeros(3)
    for labels in _PATTERNS:
        count = math.prod(T - i for i in range(len(set(labels))))

        def pi(i: int, j: int) -> float:
            return 1.0 - 1.0 / T if labels[i] == labels[j] else -1.0 / T
        out += count * float(value(labels)) * np.array([pi(0, 1) * pi(2, 3), pi(0, 2) * pi(1, 3),
                                                         pi(0, 3) * pi(1, 2)])
    return out


_PATTERNS = set_partitions(4)     # the 15 of four slots


def world_contractions(world: World, width: int, sw: float, samples: int) -> tuple:
    """(KK, KT, YY): :func:`projected_pairings` of the world's kernel covariance Cov(K_ab, K_cd), of M Cov(K_ab, K_cd)
    + sw Cov(K_ab, N_cd) and of the sandwiched NTK Y^ab_cd: the contractions a full batch norm on the output takes of
    the four-sample world of layer L - 1 (width M, sigma_w^2 = sw of the output layer).

    Args:
        world: the four-sample world of layer L - 1.
        width: M_{L-1}.
        sw: sigma_w^2 of the output layer.
        samples: T >= 1.

    Raises:
        InvalidArgument: T or the width not a positive integer.

    Example:
        >>> kk, kt, yy = world_contractions(realized_world(Network(3, "tanh", 2, 0.1), 64), 64, 2.0, 8)
        >>> kk.shape, bool(kk.sum() > 0)
        ((3,), True)
    """
    T = check_int("samples", samples, minimum=1)
    M = check_int("width", width, minimum=1)

    def cov(lab: tuple, shift: int = 0) -> float:
        return world.cov[pair_index(lab[0], lab[1]), shift + pair_index(lab[2], lab[3])]
    return (projected_pairings(T, cov), projected_pairings(T, lambda lab: M * cov(lab) + sw * cov(lab, 10)),
            projected_pairings(T, lambda lab: world.y[(0, lab[1])][lab[2], lab[3]]))
