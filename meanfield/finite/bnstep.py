"""One batch-normalized layer over a given world below it: the step shared by hiddenbn, deepbn and multibn.

A batch norm on layer l sees the layers below only through the four-sample world of layer l - 1 (the means of its
kernel K and NTK average N, their covariance and the sandwiched NTK Y, :class:`meanfield.finite.fourworld.World`) and
the O(1/M) mean shifts of K and of the NTK. :func:`batch_norm_from_world` gives the layer's (K^l, N^l) to O(1/M) as a
:class:`BatchNormLayer` (the derivation: :mod:`meanfield.finite.hiddenbn`'s module docstring, the exact method), and
:func:`unit_slope_moments` / :func:`unit_pair_moments` the moments of two of its units' NTK entries that the entry
variances need. The normalized unit's law on the sphere of the T samples is :class:`UnitLaw`
(:mod:`meanfield.finite.spherebn`'s quadratures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from .bnpinned import REP, embed, mom1_at, mom2_at, outer_r_at, pinned, sandwich, sphere_expect
from .exchangeable import Exchangeable, contract, projector
from .fourworld import World, pair_index
from .spherebn import Sphere, beta_rule, chi_moment
from .spherecut import CutSphere, kinks_off_zero

__all__ = ["BatchNormLayer", "UnitLaw", "pair_functions", "world_fluctuation", "batch_norm_from_world",
           "unit_slope_moments", "unit_pair_moments", "WorldClasses", "world_classes", "pinned_quadratic",
           "unit_slope_classes", "unit_pair_classes"]


def _class_covariances(w: World) -> tuple:
    """Cov(dK_ij, dK_kl), Cov(dK, dN), Cov(dN, dK), Cov(dN, dN) as exchangeable 4-tensors (the world's label
    patterns; any T)."""
    def block(r: int, c: int) -> Exchangeable:
        return Exchangeable.from_function(4, lambda lab: w.cov[r + pair_index(lab[0], lab[1]),
                                                               c + pair_index(lab[2], lab[3])])
    return block(0, 0), block(0, 10), block(10, 0), block(10, 10)


class UnitLaw:
    """The normalized unit's law on a :class:`Sphere` of F = {0} (t = s = 0) or {0, 1} (t = 0, s = 1): per-node
    E_beta[beta^p fun(argument)] (full: argument z, beta independent; centre-only: argument sqrt(v beta) z) and the
    sandwich E[(R W R)_ts ... | z_F], R = Pi - kappa z z^T / T (kappa = 1 full, 0 centre-only), lambda^2 = 1 / (v beta)
    (full) or 1 the square of A's scale.

    Example:
        >>> law = UnitLaw(8, 2, False, 1.5)
        >>> bool(abs(law.S.mean(law.avg(lambda z: z[:, 0] ** 2, 0)) - 1.0) < 1e-12)
        True
    """

    def __init__(self, T: int, k: int, center: bool, v: float, unit: Unit | None = None) -> None:
        # a unit with kinks away from 0 needs its sphere rule split there (centre-only: a product rule over beta whose
        # nodes carry their beta, the cuts at kink / sqrt(v beta)); relu-like and smooth units keep spherebn's rule
        cuts = kinks_off_zero(unit) if unit is not None else ()
        self.cut = bool(cuts)
        S = CutSphere(T, k, cuts, v if center else None) if cuts else Sphere(T, k)
        self.S, self.T, self.center, self.v = S, T, center, v
        self.t, self.s = 0, k - 1
        self.kappa = 0.0 if center else 1.0
        self.Pi = np.eye(T) - 1.0 / T
        z = self.S.z
        self.xt, self.xs = z[:, 0], z[:, k - 1]
        self.R = self.Pi[0, k - 1] - self.kappa * self.xt * self.xs / T       # R_ts per node
        if center and not self.cut:
            self.beta, self.bw = beta_rule(T)

    def avg(self, fun, p: float) -> np.ndarray:
        """Per node E_beta[beta^p fun(argument)] (centre-only on a cut rule: the node's own beta, its weight in S.w)."""
        if not self.center:
            return chi_moment(self.T, p) * fun(self.S.z)
        if self.cut:
            b = self.S.beta[:, None]
            return b[:, 0] ** p * fun(np.sqrt(self.v * b) * self.S.z)
        return sum(w * b**p * fun(math.sqrt(self.v * b) * self.S.z) for b, w in zip(self.beta, self.bw))

    def lam(self, fun, p: float, j: int = 1) -> np.ndarray:
        """Per node E_beta[lambda^(2 j) beta^p fun(argument)]."""
        return self.avg(fun, p) if self.center else self.avg(fun, p - j) / self.v**j

    def sandwich(self, W: np.ndarray) -> np.ndarray:
        """Per node E[sum_uv R_tu R_vs W_uv...(z, ..., z) | z_F] (W of order 2 + e, e <= 2 free slots on z)."""
        S, Pi, T, t, s = self.S, self.Pi, self.T, self.t, self.s
        out = S.expect(np.tensordot(Pi[s], np.tensordot(Pi[t], W, axes=(0, 0)), axes=(0, 0)))
        if self.kappa:
            out = (out - self.xs / T * S.expect(np.tensordot(Pi[t], W, axes=(0, 0)))
                   - self.xt / T * S.expect(np.tensordot(Pi[s], W, axes=(0, 1)))
                   + self.xt * self.xs / T**2 * S.expect(W))
        return out

    def mom1(self, f: np.ndarray) -> np.ndarray:
        """E[f z_i] over i (f per node)."""
        # contracted over the nodes first: the conditional mean c0 = z_F V is never formed (nodes x T)
        return ((self.S.w * f) @ self.S.z) @ self.S.V

    def mom2(self, f: np.ndarray) -> np.ndarray:
        """E[f z_i z_j] over (i, j)."""
        S = self.S
        zz = np.einsum("n,na,nb->ab", S.w * f, S.z, S.z)       # k x k: V^T zz V = sum_n w f c0 c0^T
        return S.V.T @ zz @ S.V + float((S.w * f * S.c[:, 1]).sum()) * S.P

    def outer_R(self, f: np.ndarray) -> np.ndarray:
        """E[f R_ti R_js] over (i, j)."""
        Pi, T, t, s = self.Pi, self.T, self.t, self.s
        out = self.S.mean(f) * np.outer(Pi[t], Pi[s])
        if self.kappa:
            out = (out - np.outer(Pi[t], self.mom1(f * self.xs)) / T - np.outer(self.mom1(f * self.xt), Pi[s]) / T
                   + self.mom2(f * self.xt * self.xs) / T**2)
        return out


def pair_functions(unit: Unit, k: int) -> tuple:
    """(phi(z_t) phi(z_s), phi'(z_t) phi'(z_s)) at the nodes' z_F (t = s = 0 for k = 1, t = 0, s = 1 for k = 2).

    Example:
        >>> from meanfield.spec.network import Network
        >>> ff, pp = pair_functions(Unit.of(Network(2, "tanh", 2, 0.1).phi(1)), 2)
        >>> float(ff(np.array([[0.5, 0.5]]))[0]) == float(np.tanh(0.5) ** 2)
        True
    """
    f = lambda z: np.asarray(unit.f(z), dtype=float)    # noqa: E731
    d = lambda z: np.asarray(unit.df(z), dtype=float)   # noqa: E731
    return ((lambda z: f(z[:, 0]) * f(z[:, k - 1])), (lambda z: d(z[:, 0]) * d(z[:, k - 1])))


@dataclass(frozen=True)
class BatchNormLayer:
    """K^l = H^T H / M_l and N^l = (1/M_l) sum_a X_aa of a batch-normalized layer l, to O(1/M): the start of the plain
    recursion above it (:mod:`meanfield.finite.deepbn`).

    X_ac(t, s) = phi'_a(t) phi'_c(s) (A_a Theta^l_ac A_c)(t, s) is the NTK of the layer's outputs (layers <= l), so
    E[T G_kk | layer l] = 1 + M_l K^l + sigma_w'^2 N^l for the layer above, and
    :func:`meanfield.finite.hiddenbn.hidden_batch_norm_terms`'s terms split into K's and N's shares (its M_2 F and its
    sigma_w'^2 parts).

    Attributes:
        kbar, nbar: mean-field (t t, t s, s s) of K^l and N^l.
        dk, dn: their O(1/M) mean shifts (terms 1.-3.; Stein's term 3. enters N only).
        cov: 6 x 6 covariance of (K tt, ts, ss, N tt, ts, ss) to leading order: the units' own (1 / M_l, i.i.d.
            given the layer below) plus the layer below's (K^{l-1}, N^{l-1}) pushed through the first variation of
            E[K^l, N^l | below].
        y: (0, 0) and (0, 1) -> 2 x 2 Y^l_{tau tau'} = h(tau)^T X h(tau') (tau, tau' in {0, 1}) to leading order: its
            diagonal part M_l E[phi_tau phi_tau' X_aa] and, below a weighted layer (l >= 2), its off-diagonal part by
            Stein on the two rows w_a, w_c: M_l^2 (sigma_w^2 / M_{l-1})^2 sum D_t[tau](rho, t1) (Pi Y^{l-1}(t1, s1)
            Pi)_{rho rho'} D_s[tau'](rho', s1), D_t[tau](rho, t1) = E[phi_tau phi'_t A(t, t1) g_rho] / v.
        unit_second: 6 x 6 E[x_i x_j] of one unit's (phi_a phi_b, X_aa(a, b)) over the pairs (t t, t s, s s), at the
            mean law (the output weights' Wick term of the entry variances needs E[X_aa X_aa]).
    """

    kbar: np.ndarray
    nbar: np.ndarray
    dk: np.ndarray
    dn: np.ndarray
    cov: np.ndarray
    y: dict
    unit_second: np.ndarray


def _pinned_matrix(values: np.ndarray) -> Exchangeable:
    """A T x T matrix invariant under the permutations fixing samples 0 and 1, from its REP x REP leading block."""
    return pinned(2, lambda ij: values[ij])


def _swap_pins(g: dict) -> dict:
    """The gradient of sample 0's diagonal entry turned into sample 1's (exchangeability): the pins swapped, over
    (K, N) blocks."""
    return {p: x.permuted((1, 0, 2, 3)) for p, x in g.items()}


def batch_norm_from_world(unit: Unit, world: World, shift_k: tuple, shift_theta: tuple, width_below: int,
                          width: int, sw: float, samples: int, center: bool = False,
                          rows_below: bool = True) -> BatchNormLayer:
    """(K^l, N^l) = (H^T H / M_l, (1/M_l) sum_a X_aa) of a batch norm on layer l to O(1/M), given the world of layer
    l - 1 and its mean shifts.

    hiddenbn's exact terms with the output layer's weights left out: first order in the mean shifts, second order in
    the fluctuations (Price, Hermite weights at Omega = v Pi), Stein on the layer's rows (Y^{l-1}), and the units' own
    covariance (i.i.d. given the layer below). :func:`meanfield.finite.hiddenbn.batch_norm_layer` (the world of a
    plain network below) and :func:`meanfield.finite.multibn.batch_norm_step` (a world with norms in it) call it.

    Args:
        unit: layer l's activation (smooth, or with known kinks anywhere: :mod:`meanfield.finite.spherecut`).
        world: the four-sample world of layer l - 1 (:class:`meanfield.finite.fourworld.World`).
        shift_k, shift_theta: as :func:`world_fluctuation`.
        width_below, width: M_{l-1} and M_l.
        sw: sigma_w^2 of the weights into layer l.
        samples: T >= 6 (4 with ``center``).
        center: a centre-only batch norm.
        rows_below: layer l - 1 is weighted (l >= 2): Y^l's off-diagonal part by Stein on two rows.

    Returns:
        :class:`BatchNormLayer`.

    Raises:
        InvalidArgument: T too small, widths below 1, an activation whose kinks are unknown, K_tt <= K_ts below.

    Example:
        >>> from meanfield.finite.fourworld import realized_world
        >>> from meanfield.spec.network import Network
        >>> plain = Network(2, "tanh", 2, 0.1)
        >>> b = batch_norm_from_world(Unit.of(plain.phi(1)), realized_world(plain, 64), (0.0, 0.0), (0.0, 0.0), 64,
        ...                           64, 2.0, 8)
        >>> b.cov.shape, bool(b.kbar[0] > b.kbar[1])
        ((6, 6), True)
    """
    T = check_int("samples", samples, minimum=4 if center else 6)
    M1, Ml = check_int("width_below", width_below, minimum=1), check_int("width", width, minimum=1)
    kinks_off_zero(unit)         # the kinks must be known (spherecut's rule splits at them)
    if not sw * (world.k[0] - world.k[1]) > 0:
        raise InvalidArgument("world", world.k, "a kernel with K_tt > K_ts below the batch norm")
    wc = world_classes(world, shift_k, shift_theta, M1, sw, T)
    delta, dD, v, D, om = wc.delta, wc.dD, wc.v, wc.D, wc.om
    # the world's T^4 tensors in the pinned form (samples 0, 1 fixed, :mod:`meanfield.finite.bnpinned`): O(1) in T
    CKK, e_t1k2, e_k22, e_const = embed(wc.CKK), embed(wc.e_t1k2), embed(wc.e_k22), wc.e_const
    CTK, W1, Y, trY = embed(wc.CTK), embed(wc.W1), embed(wc.Y), embed(wc.trY)
    cov_below = {(0, 0): wc.CKK, (0, 1): wc.CKN, (1, 0): wc.CNK, (1, 1): wc.CNN}
    Pi = np.eye(REP) - 1.0 / T                                 # Pi at the representative samples
    mean, shift, grad = {}, {}, {}
    for k in (1, 2):
        law = UnitLaw(T, k, center, v, unit)
        S, R = law.S, law.R
        ff, pp = pair_functions(unit, k)
        fk = [law.avg(ff, p) for p in (0, 1, 2)]
        pk = [law.lam(pp, p) for p in (0, 1, 2)]
        nk = [D * R * x for x in pk]
        ek2sq, et1k2, ek22 = sphere_expect(S, CKK), sphere_expect(S, e_t1k2), sphere_expect(S, e_k22)

        def total(G: list, direct: float) -> float:
            """Terms 1.-3. of E[Gamma] for Gamma = G (its beta-moments 0, 1, 2); ``direct``: Theta' enters."""
            one = om * delta / 2 * S.mean(T * G[1] - (T - 1) * G[0]) + direct * dD * S.mean(pk[0], R)
            two = (om**2 / 8 * S.mean(G[2] * ek2sq - 2 * G[1] * et1k2 - 4 * G[1] * ek22 + G[0] * e_const)
                   + direct * om / 2 * S.mean(pk[1] * sandwich(law, CTK) - pk[0] * sandwich(law, W1)))
            three = direct * (sw / M1) ** 2 / v * S.mean(pk[1] * sandwich(law, Y) - pk[0] * sandwich(law, trY))
            return one + two + three
        mean[k] = (S.mean(fk[0]), S.mean(nk[0]))
        shift[k] = (total(fk, 0.0), total(nk, 1.0))
        rr = outer_r_at(law, pk[0])
        gK = om / 2 * (mom2_at(law, fk[1]) - S.mean(fk[0]) * Pi)
        gN = om / 2 * (mom2_at(law, nk[1]) - S.mean(nk[0]) * Pi) + M1 * rr
        grad[k] = ({0: _pinned_matrix(gK)}, {0: _pinned_matrix(gN), 1: _pinned_matrix(sw * rr)})
    kbar = np.array([mean[1][0], mean[2][0], mean[1][0]])
    nbar = np.array([mean[1][1], mean[2][1], mean[1][1]])
    dk = np.array([shift[1][0], shift[2][0], shift[1][0]])
    dnl = np.array([shift[1][1], shift[2][1], shift[1][1]])
    # sample 1's diagonal entry from sample 0's (exchangeability): the pins swapped
    rows = [grad[1][0], grad[2][0], _swap_pins(grad[1][0]), grad[1][1], grad[2][1], _swap_pins(grad[1][1])]
    cov = np.array([[pinned_quadratic(T, a, cov_below, b) for b in rows] for a in rows])
    # the units' own covariance (i.i.d. given the layer below), on the sphere of the two samples 0, 1
    law = UnitLaw(T, 2, center, v, unit)
    S = law.S
    z = S.z
    R = [[law.Pi[a, b] - law.kappa * z[:, a] * z[:, b] / T for b in (0, 1)] for a in (0, 1)]
    f = lambda x: np.asarray(unit.f(x), dtype=float)    # noqa: E731
    d = lambda x: np.asarray(unit.df(x), dtype=float)   # noqa: E731
    pairs = ((0, 0), (0, 1), (1, 1))
    kf = [(lambda x, a=a, b=b: f(x[:, a]) * f(x[:, b])) for a, b in pairs]
    nf = [(lambda x, a=a, b=b: d(x[:, a]) * d(x[:, b])) for a, b in pairs]
    nr = [R[a][b] for a, b in pairs]
    mu = np.array([S.mean(law.avg(g, 0)) for g in kf] + [D * S.mean(law.lam(g, 0), r) for g, r in zip(nf, nr)])
    second = np.empty((6, 6))
    for i in range(3):
        for j in range(3):
            second[i, j] = S.mean(law.avg(lambda x: kf[i](x) * kf[j](x), 0))
            second[i, 3 + j] = second[3 + j, i] = D * S.mean(law.lam(lambda x: kf[i](x) * nf[j](x), 0), nr[j])
            second[3 + i, 3 + j] = D**2 * S.mean(law.lam(lambda x: nf[i](x) * nf[j](x), 0, 2), nr[i] * nr[j])
    cov = cov + (second - np.outer(mu, mu)) / Ml
    # Y^l: the diagonal part, and below a weighted layer the off-diagonal part (Stein on two rows)
    y = {}
    PYP = contract(T, "ar,uvrs,sb->uvab", projector(T), wc.Y, projector(T))
    dmat = {}
    if rows_below:
        for t in (0, 1):
            for tau in (0, 1):
                fun = lambda x, t=t, tau=tau: f(x[:, tau]) * d(x[:, t])   # noqa: E731
                if center:
                    fn = math.sqrt(v) * law.avg(fun, 0.5)
                    dm = np.outer(mom1_at(law, fn), Pi[t]) / v
                else:
                    fn = law.avg(fun, 0)
                    dm = (np.outer(mom1_at(law, fn), Pi[t]) - mom2_at(law, fn * z[:, t]) / T) / v
                dmat[(t, tau)] = _pinned_matrix(dm)
    for s in (0, 1):
        yd = np.array([[Ml * D * S.mean(law.lam(lambda x, a=a, b=b: f(x[:, a]) * f(x[:, b]) * d(x[:, 0])
                                                  * d(x[:, s]), 0), R[0][s]) for b in (0, 1)] for a in (0, 1)])
        if rows_below:
            yd = yd + (Ml * sw / M1) ** 2 * np.array(
                [[contract(T, "xyri,ijrq,xyqj->xy", dmat[(0, a)], PYP, dmat[(s, b)]).at((0, 1)) for b in (0, 1)]
                 for a in (0, 1)])
        y[(0, s)] = yd
    return BatchNormLayer(kbar, nbar, dk, dnl, cov, y, second)




@dataclass(frozen=True, eq=False)
class WorldClasses:
    """The world of layer l - 1 as a batch norm on layer l uses it, every T^4 tensor exchangeable (its pattern
    values; any T): :func:`world_classes`.

    Attributes:
        delta, dD: the exchangeable mean shifts (dD = M_{l-1} delta + sigma_w^2 (dN_tt - dN_ts)).
        v, D, om: sigma_w^2 (K_tt - K_ts), M_{l-1} (K_tt - K_ts) + sigma_w^2 (N_tt - N_ts), sigma_w^2 / v.
        CKK, CKN, CNK, CNN: the class covariances of (K, N) over ((i, j), (k, l)); CTK = Cov(dTheta', dK).
        e_t1k2, e_k22, e_const, W1: the fluctuation's averages of the Hermite weight's pieces.
        Y, trY: the sandwiched NTK Y^{uv}_{ab} and tr(Pi Y^{uv}).
    """

    delta: float
    dD: float
    v: float
    D: float
    om: float
    CKK: Exchangeable
    CKN: Exchangeable
    CNK: Exchangeable
    CNN: Exchangeable
    CTK: Exchangeable
    e_t1k2: Exchangeable
    e_k22: Exchangeable
    e_const: float
    W1: Exchangeable
    Y: Exchangeable
    trY: Exchangeable


def world_classes(world: World, shift_k: tuple, shift_theta: tuple, width_below: int, sw: float,
                  samples: int) -> WorldClasses:
    """:func:`world_fluctuation`'s quantities as exchangeable tensors: every contraction exact and O(1) in T
    (:func:`meanfield.finite.exchangeable.contract`; with the unit's sphere moments, samples 0, 1 pinned:
    :mod:`meanfield.finite.bnpinned`). :func:`batch_norm_from_world` and hiddenbn's exact terms then cost O(1) in T
    but for the sphere's O(T) vectors; their precision at large T is the sphere quadrature's (session 10: with
    :class:`UnitLaw`'s default rules the centre-only unit's O(1/M) kernel shift, zero on layer 1, came out 3e-7 at
    T = 256 and 1e-2 at T = 1024 against a kernel of 1; 1e-12 with 400 nodes of the beta rule).

    Example:
        >>> from meanfield.finite.fourworld import realized_world
        >>> from meanfield.spec.network import Network
        >>> wc = world_classes(realized_world(Network(2, "tanh", 2, 0.1), 64), (0.0, 0.0), (0.0, 0.0), 64, 2.0, 4096)
        >>> wc.CKK.order, bool(wc.e_const > 0)
        (4, True)
    """
    T, M1, w = check_int("samples", samples, minimum=1), width_below, world
    delta = (float(shift_k[0]) - float(shift_k[1])) / M1
    dn = [(float(shift_theta[i]) - float(shift_k[i])) / sw for i in (0, 1)]
    dD = M1 * delta + sw * (dn[0] - dn[1])
    v = sw * (w.k[0] - w.k[1])
    D = M1 * (w.k[0] - w.k[1]) + sw * (w.n[0] - w.n[1])      # Theta' = D I + O 1 1^T at the mean
    Pi = projector(T)
    CKK, CKN, CNK, CNN = _class_covariances(w)
    CTK = M1 * CKK + sw * CNK                                  # Cov(dTheta'_uv, dK_ij)
    # the fluctuation's averages of the Hermite weight's pieces (hiddenbn's module docstring)
    e_t1k2 = contract(T, "ij,ijkl->kl", Pi, CKK)
    e_k22 = contract(T, "bc,abcd->ad", Pi, CKK)
    e_const = contract(T, "ij,kl,ijkl->", Pi, Pi, CKK) + 2 * contract(T, "da,bc,abcd->", Pi, Pi, CKK)
    W1 = contract(T, "ij,uvij->uv", Pi, CTK)
    Y = Exchangeable.from_function(4, lambda lab: w.y[(0, lab[1])][lab[2], lab[3]])
    trY = contract(T, "ab,uvab->uv", Pi, Y)
    return WorldClasses(delta, dD, v, D, sw / v, CKK, CKN, CNK, CNN, CTK, e_t1k2, e_k22, float(e_const), W1, Y, trY)


def world_fluctuation(world: World, shift_k: tuple, shift_theta: tuple, width_below: int, sw: float,
                      samples: int) -> tuple:
    """dD = M_{l-1} delta + sigma_w^2 (dN_tt - dN_ts), v = sigma_w^2 (K_tt - K_ts), ...: the world of layer l - 1 as a
    batch norm on layer l uses it, dense (T^4 tensors, for small T: :func:`world_classes` holds the same exchangeably).

    Args:
        world: the four-sample world of layer l - 1.
        shift_k: M_{l-1} x the mean shift of K^{l-1} (t t, t s).
        shift_theta: the O(1) mean shift of 1 + M_{l-1} K^{l-1} + sigma_w^2 N^{l-1} (t t, t s).
        width_below: M_{l-1}.
        sw: sigma_w^2 of the weights into layer l.
        samples: T.

    Returns:
        (the exchangeable shifts delta and dD, v, D, omega = sigma_w^2 / v, Pi, the class covariances CKK, CKN, CNK,
        CNN, CTK = Cov(dTheta', dK), the fluctuation's averages e_t1k2, e_k22, e_const, W1 of the Hermite weight's
        pieces, Y, its trace and the (K, N) covariance as one 2 T^2 x 2 T^2 block).

    Example:
        >>> from meanfield.finite.fourworld import realized_world
        >>> from meanfield.spec.network import Network
        >>> out = world_fluctuation(realized_world(Network(2, "tanh", 2, 0.1), 64), (0.0, 0.0), (0.0, 0.0), 64, 2.0, 8)
        >>> len(out), out[-1].shape
        (18, (128, 128))
    """
    wc = world_classes(world, shift_k, shift_theta, width_below, sw, samples)
    T = samples
    CKK, CKN, CNK, CNN = (x.dense(T) for x in (wc.CKK, wc.CKN, wc.CNK, wc.CNN))
    big = np.block([[CKK.reshape(T * T, T * T), CKN.reshape(T * T, T * T)],
                    [CNK.reshape(T * T, T * T), CNN.reshape(T * T, T * T)]])
    return (wc.delta, wc.dD, wc.v, wc.D, wc.om, projector(T).dense(T), CKK, CKN, CNK, CNN, wc.CTK.dense(T),
            wc.e_t1k2.dense(T), wc.e_k22.dense(T), wc.e_const, wc.W1.dense(T), wc.Y.dense(T), wc.trY.dense(T), big)


def pinned_quadratic(samples: int, left: dict, cov: dict, right: dict) -> float:
    """sum_{p, q} sum_{ijkl} left_p[i, j] cov_pq[i, j, k, l] right_q[k, l] for pinned T x T matrices (blocks p, q: 0 =
    K, 1 = N) and exchangeable covariance blocks: g^T Cov(K, N) g, O(1) in T.

    Example:
        >>> from meanfield.finite.bnpinned import embed
        >>> from meanfield.finite.exchangeable import identity
        >>> C = Exchangeable.from_function(4, lambda lab: float(lab == (0, 0, 0, 0)))     # Cov = delta_ijkl
        >>> pinned_quadratic(9, {0: embed(identity())}, {(0, 0): C}, {0: embed(identity())})   # sum_i 1
        9.0
    """
    total = 0.0
    for (p, q), c in cov.items():
        if p in left and q in right:
            total += contract(samples, "xyij,ijkl,xykl->xy", left[p], c, right[q]).at((0, 1))
    return float(total)


def unit_slope_moments(unit: Unit, v: float, samples: int, center: bool = False) -> np.ndarray:
    """U2[t, t1, s, t2] = E[phi'(z_t) A(t, t1) phi'(z_s) A(s, t2)] of one batch-normalized unit at the mean law
    (exact, on the sphere), v = sigma_w^2 (K_tt - K_ts) of the layer below.

    Example:
        >>> from meanfield.spec.network import Network
        >>> unit_slope_moments(Unit.of(Network(2, "tanh", 2, 0.1).phi(1)), 1.5, 6).shape
        (6, 6, 6, 6)
    """
    T = check_int("samples", samples, minimum=4 if center else 6)
    rep = {}
    for kf in (1, 2):
        law = UnitLaw(T, kf, center, v, unit)
        pp = pair_functions(unit, kf)[1]
        rep[kf] = law.outer_R(law.lam(pp, 0))        # E[lambda^2 phi'_t phi'_s R_t,i R_s,j], t = 0, s = kf - 1
    U2 = np.empty((T,) * 4)
    for t in range(T):
        for s in range(T):
            # exchangeability: relabel t -> 0, s -> 1 (or t = s -> 0) and the other samples after them
            order = [t] + ([s] if s != t else []) + [i for i in range(T) if i not in (t, s)]
            sigma = np.empty(T, dtype=int)
            sigma[order] = np.arange(T)
            U2[t, :, s, :] = rep[1 if s == t else 2][np.ix_(sigma, sigma)]
    return U2


def unit_slope_classes(unit: Unit, v: float, samples: int, center: bool = False) -> Exchangeable:
    """:func:`unit_slope_moments`' U2[t, t1, s, t2] as an exchangeable tensor: its pattern values from the leading
    blocks of E[lambda^2 phi'_t phi'_s R_t,i R_s,j] (t = s or t != s), O(1) in T.

    Example:
        >>> from meanfield.spec.network import Network
        >>> unit = Unit.of(Network(2, "tanh", 2, 0.1).phi(1))
        >>> bool(np.allclose(unit_slope_classes(unit, 1.5, 7).dense(7), unit_slope_moments(unit, 1.5, 7), atol=1e-14))
        True
    """
    T = check_int("samples", samples, minimum=4 if center else 6)
    rep = {}
    for kf in (1, 2):
        law = UnitLaw(T, kf, center, v, unit)
        pp = pair_functions(unit, kf)[1]
        rep[kf] = outer_r_at(law, law.lam(pp, 0))    # t = 0, s = kf - 1, the other samples 1 or 2, 3, ...

    def value(lab: tuple) -> float:
        t, t1, s, t2 = lab
        # relabel t -> 0, s -> 1 (t != s) and the other samples after them (exchangeability)
        where = {t: 0}
        if s != t:
            where[s] = 1
        for x in (t1, t2):
            where.setdefault(x, len(where))
        return rep[1 if s == t else 2][where[t1], where[t2]]
    return Exchangeable.from_function(4, value)


def unit_pair_classes(U2: Exchangeable, S4: Exchangeable, samples: int) -> tuple:
    """:func:`unit_pair_moments` of exchangeable U2 and S4 (exact contractions, O(1) in T).

    Example:
        >>> from meanfield.spec.network import Network
        >>> U2 = unit_slope_classes(Unit.of(Network(2, "tanh", 2, 0.1).phi(1)), 1.5, 6)
        >>> S4 = Exchangeable.from_function(4, lambda lab: 1.0 + len(set(lab)))
        >>> bool(np.allclose(unit_pair_classes(U2, S4, 6), unit_pair_moments(U2.dense(6), S4.dense(6)), rtol=1e-12))
        True
    """
    T = check_int("samples", samples, minimum=2)
    xtt = contract(T, "tatb,tctd,acbd->t", U2, U2, S4).values[0]       # E X_ac(t, t)^2, the same for every t
    W = contract(T, "taty->ay", U2)
    total = contract(T, "ab,cd,acbd->", W, W, S4)                          # summed over all (t, s)
    swap = contract(T, "tisj,skto,ikjo->", U2, U2, S4)
    # for t = s, X_ca(t, t) = X_ac(t, t) by symmetry of the pair: the swapped sum's diagonal is the direct one's
    return (float(xtt), float((total - T * xtt) / (T * (T - 1))), float(xtt), float((swap - T * xtt) / (T * (T - 1))))


def unit_pair_moments(U2: np.ndarray, S4: np.ndarray) -> tuple:
    """(E[X_ac(t, t)^2], E[X_ac(t, s)^2], E[X_ac(t, t) X_ca(t, t)], E[X_ac(t, s) X_ca(t, s)]) for two units a != c of
    a batch-normalized layer (t != s), from :func:`unit_slope_moments` U2 and the spread S4[t1, s1, t2, s2] =
    E[S_ac(t1, s1) S_ac(t2, s2)] of the NTK below between them.

    Example:
        >>> from meanfield.spec.network import Network
        >>> U2 = unit_slope_moments(Unit.of(Network(2, "tanh", 2, 0.1).phi(1)), 1.5, 6)
        >>> unit_pair_moments(U2, np.zeros((6,) * 4))
        (0.0, 0.0, 0.0, 0.0)
    """
    T = U2.shape[0]
    W = np.einsum("taty->tay", U2)             # W[t] = U(t, t; ., .)
    per = np.einsum("tab,tcd,acbd->t", W, W, S4, optimize=True)              # E X_ac(t, t)^2 per t
    total = np.einsum("ab,cd,acbd->", W.sum(0), W.sum(0), S4, optimize=True)  # summed over all (t, s)
    swap = np.einsum("tisj,skto,ikjo->", U2, U2, S4, optimize=True)
    xtt = float(per.mean())
    # for t = s, X_ca(t, t) = X_ac(t, t) by symmetry of the pair: the swapped sum's diagonal is the direct one's
    return (xtt, float((total - T * xtt) / (T * (T - 1))), xtt, float((swap - T * xtt) / (T * (T - 1))))
