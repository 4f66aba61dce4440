"""The next order of the lower blocks of tr Sigma^2: all of them for L = 3, layer L - 2's for L >= 4, by conditioning.

:mod:`meanfield.finite.fourpoint_deep` carries the top two layers' parameter blocks of E_W tr Sigma_W^2 (one output's
gradients over the inputs) to the next order, O(1) absolute against O(M). Here the rest of a plain network with
L = 3 (two hidden layers) and independent inputs x ~ N(0, q I_{M_0}): the first hidden layer's block and its cross
terms with the top blocks. With h = h^1, d = phi'(u^1) the first layer's features and slopes, p_k = phi'(u^2_k),
f_k = phi(u^2_k) the second layer's unit k (weights w_k, bias b_k) and v_k its output weight, one output's gradient
kernel is

    Theta(a, b) = sum_k T_k(a, b) + G0_ab sum_{k != l} v_k v_l p_k(a) p_l(b) w_k^T D_ab w_l,
    T_k = t_k + S_k,  t_k = f_k(a) f_k(b) + v_k^2 p_k(a) p_k(b) G1_ab,  S_k = G0_ab v_k^2 p_k(a) p_k(b) w_k^T D_ab w_k,

G0 = x_a . x_b + 1 = M_0 Q_ab + 1, G1 = h_a . h_b + 1 = M_1 K_ab + 1, D_ab = diag(d(a) d(b)). Given the first layer
the second layer's units are i.i.d. and the v's independent with mean 0, so the pair terms k != l pair only with
themselves (Omega below) and, with the Hoeffding weights over four inputs (tr Sigma^2 = E[Th_01^2 - 2 Th_01 Th_02 +
Th_01 Th_23]),

    E tr Sigma^2 = M_2 E[Psi_T] + M_2 (M_2 - 1) E[Phi_T] + M_2 (M_2 - 1) E[Omega],

Psi_T one unit's Hoeffding term of T_k, Phi_T that of the per-unit mean kernel F_T = E[T_k | first layer]. The top
blocks are the t parts (:func:`meanfield.finite.fourpoint_deep.top_blocks_next_order`); the lower blocks are what S
and Omega add. Orders at L = 3 (G0_01 has mean 1 and spread sqrt(M_0) q): the unit part's S terms and Omega are O(1)
(taken at their leading order), the pair part's S terms O(M), carried to O(1). The same weights with E[Th_01 Th_02 -
Th_01 Th_23] give the lower blocks of the spike Var(mu . g), all of whose terms are O(1) (Omega's O(1/M)). Given the
first layer the Gaussian weights w_k (variance s = sigma_w^2 / M_1) are integrated by parts exactly,

    E[w^T D w g(u)] = s tr D E[g] + s^2 sum_{c,e} (H^T D H)_ce E[del_c del_e g],   u = H^T w + b,

so F_S(a, b) = sv G0_ab [sigma_w^2 R_ab E(p_a p_b) + sigma_w^4 / M_1 sum_{c,e in {a,b}} N_ab;ce E(del_c del_e (p_a
p_b))] with the first layer's realized statistics R_ab = d_a . d_b / M_1 and N_ab;ce = sum_i d_i(a) d_i(b) h_i(c)
h_i(e) / M_1 (sv = sigma_w^2 / M_2 of the output weights). The pair part is then E[Phi] = the Hoeffding combination
of Cov(F_T(A), F_T(B)) over the statistic Y = (Q, K, R, N) of the first layer and the inputs, to O(1/M^2) by
:func:`meanfield.finite.fourpoint_deep.smooth_covariance` with Y's exact mean, covariance to O(1/M^2) and third
cumulant from the inputs' Wishart Gram by the law of total cumulance
(:func:`meanfield.finite.fourpoint_deep.total_cumulants`, the Gram Q carried along); the unit part and Omega are
second-order Taylor means over Y at its first-order covariance,

    Omega = sv^2 sigma_w^4 / M_1 E[G0_01^2] E[d_0^2 d_1^2] (E[p_0^2] E[p_1^2] + E[p_0 p_1]^2)    (01, 01 only: the
    other Hoeffding terms are O(1/M)).

Every Gaussian integral sits at an exchangeable covariance with Price's theorem and Stein's identity for its
derivatives (:func:`meanfield.finite.fourpoint_deep.stein_table`): any phi, no sampling, no fitted constant.

Checks (``tests/test_fourpoint_next.py``, ``benchmarks/fourpoint_lower.py``, ``meanfield/notes/rmt.md``): a linear
network's exact Wick value q^2 sigma_w^4 [M_0 (1 + 2/M_1)(1 + 2/M_2) + 2 (M_1 (1 + 2/M_2) + M_2 + 2/M_1)] (one
sigma_w^2 in every layer) to O(1/M); Y's K part equals the realized kernel of
:func:`meanfield.finite.fourpoint_deep.kernel_cumulants` to rounding; sampled relu and tanh networks.

Deeper networks (L >= 4): layer L - 2's block and its cross terms with the top two layers. The same conditioning on
the conditioned layer h = h^{L-2} (d = phi'(u^{L-2}), M_1 its width in the formulas above) with G = h^{L-3} . h^{L-3}
+ 1 = M_{L-3} K^{L-3} + 1 in place of G0: Y = (K^{L-3}, K^{L-2}, R, N) from the realized kernel of layer L - 3
(:func:`meanfield.finite.fourpoint_deep.kernel_cumulants`) by the same law of total cumulance, and the pair part's
formulas unchanged. G now has a mean of O(M) (not 1), so the unit part and Omega are O(M) and need their next order
too (the pair part's expansion is the same order as at L = 3):

* the unit part at Y's exact mean (with the realized top kernel's exact mean) and, by integrating the two quadratic
  forms by parts (w ~ N(0, s I), u = H^T w + b), E[(w^T A w)(w^T B w) f(u)] = s^2 (tr A tr B + 2 tr AB) E f + s^3
  (tr A sum_xy H_x^T B H_y + tr B sum_xy H_x^T A H_y) E d_x d_y f + O(s^2 tr A tr B / M^2), and the second term of
  E[w^T A w f] = s tr A E f + s^2 sum_xy H_x^T A H_y E d_x d_y f for the S t cross terms, at mean field; with A = G_ab
  D_ab diagonal, s^2 tr AB = sigma_w^4 / M_1 G_A G_B U_AB, U_AB = sum_i d_i(a) d_i(b) d_i(c) d_i(e) / M_1;
* Omega, every Hoeffding term (01, 01), (01, 02), (01, 23) (G_01 G_02 is now O(M^2) too): for units k != l,
  integrating w_k then w_l by parts,

    E[f(u_k) g(u_l) (w_k^T A w_l)(w_k^T B w_l)] = s^2 tr AB E f E g + s^3 sum_xy H_x^T AB H_y (E d_x d_y f E g
        + E f E d_x d_y g) + s^4 sum_xyzw (H_x^T A H_z)(H_y^T B H_w) E d_x d_y f E d_z d_w g,

  over both pairings of the four samples between the two units (f = p_a p_c, g = p_b p_e and f = p_a p_e, g = p_b p_c);
  the first term (O(M)) to relative O(1/M): G_A G_B U_AB E f E g at the exact means plus half its Hessian against the
  first-order covariance of (K^{L-3}, K^{L-2}, U) (U's exact mean and covariances by the same per-unit rule as R), the
  others (O(1)) at mean field.

The blocks below layer L - 2 (longer backward chains: their lower NTK W D Gamma D W^T is not diagonal) are not carried
here: :func:`meanfield.finite.fourpoint_next.top_corrected_bulk` keeps them and their cross terms at the four-point
engine's first order (error O(1) absolute against O(M)). At L = 3 the added terms are O(1/M) and left out (the L = 3
values are unchanged). Checks at L >= 4: a linear network's exact value of the block
(:func:`meanfield.finite.linear_wick.linear_trace_sigma2`, layers L-2..L minus L-1..L) to O(1/M) at L = 4 and 5;
sampled relu and tanh networks at L = 4 (``benchmarks/fourpoint_lower.py --piece``).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from .fourpoint_deep import KERNEL_ENTRIES, kernel_cumulants, smooth_covariance, stein_table, total_cumulants

__all__ = ["LowerBlocks", "lower_blocks_next_order", "covers_lower"]

_PAIRS = KERNEL_ENTRIES
_INDEX = {p: i for i, p in enumerate(_PAIRS)}
_OFF = tuple(p for p in _PAIRS if p[0] < p[1])
# Y = (Q, K, R, N): the lower Gram, the first layer's kernel, its slope kernel and the mixed statistics N_ab;ce
_Q, _K, _R, _N = 0, 10, 20, 30
_NKEY = tuple((a, b, c, e) for a, b in _OFF for c, e in ((a, a), (a, b), (b, b)))
_NINDEX = {k: _N + i for i, k in enumerate(_NKEY)}
_SIZE = _N + len(_NKEY)
# E[Th_01 Th_B] weights: tr Sigma^2 = E[Th_01^2 - 2 Th_01 Th_02 + Th_01 Th_23],
# Var(mu . g) = E[Th_01 Th_02 - Th_01 Th_23]
_WEIGHTS = {"trace": (((0, 1), 1.0), ((0, 2), -2.0), ((2, 3), 1.0)), "spike": (((0, 2), 1.0), ((2, 3), -1.0))}
_PMAX = 6      # powers per sample (three products of kernel components)
_UKEYS = ((0, 1), (0, 2), (2, 3))   # the Hoeffding terms B = (c, e) of (01, B)


def covers_lower(net: Any) -> bool:
    """Whether :func:`lower_blocks_next_order` applies: numeric, plain, L >= 3, independent inputs (at L = 3 it is the
    whole rest of tr Sigma^2 below the top blocks; at L >= 4 layer L - 2's block and its cross terms with the top).

    Example:
        >>> from meanfield.spec.network import Network
        >>> covers_lower(Network(3, "tanh", 1, 0.1)), covers_lower(Network(4, "tanh", 1, 0.1))
        (True, True)
        >>> covers_lower(Network(2, "tanh", 1, 0.1))
        False
    """
    from ..spec.network import Network

    return (isinstance(net, Network) and not net.is_symbolic and not net.norms and net.depth >= 3
            and float(net.input_q2) == 0.0)


def _counts(entries: Any) -> tuple:
    """Per-sample derivative counts and Price factor (1/2 per diagonal entry) of kernel entries (a, b)."""
    k = [0, 0, 0, 0]
    fac = 1.0
    for a, b in entries:
        k[a] += 1
        k[b] += 1
        if a == b:
            fac *= 0.5
    return k, fac


def _moments(tab: tuple, P: np.ndarray, R: np.ndarray, D: np.ndarray) -> np.ndarray:
    """E[prod_a phi^P_a phi'^R_a d^D_a] per row at a Stein table's exchangeable point (rows x four samples)."""
    wz, arr = tab
    return arr[P, R, D].prod(axis=-2) @ wz


def _components() -> tuple:
    """The first layer's unit products behind Y's K, R and N entries: per-sample phi and phi' powers."""
    P, R = [], []
    for a, b in _PAIRS:                                          # K_ab: phi_a phi_b
        p = [0, 0, 0, 0]
        p[a] += 1
        p[b] += 1
        P.append(p)
        R.append([0, 0, 0, 0])
    for a, b in _PAIRS:                                          # R_ab: phi'_a phi'_b
        r = [0, 0, 0, 0]
        r[a] += 1
        r[b] += 1
        P.append([0, 0, 0, 0])
        R.append(r)
    for a, b, c, e in _NKEY:                                     # N_ab;ce: phi'_a phi'_b phi_c phi_e
        p, r = [0, 0, 0, 0], [0, 0, 0, 0]
        r[a] += 1
        r[b] += 1
        p[c] += 1
        p[e] += 1
        P.append(p)
        R.append(r)
    return np.array(P), np.array(R)


def _entry_counts(sw: float) -> tuple:
    """Per kernel entry: its per-sample derivative counts and Price factor (sw, halved on a diagonal entry)."""
    ent = [_counts([e]) for e in _PAIRS]
    return np.array([k for k, _ in ent]), np.array([f for _, f in ent]) * sw


def _batch(tab: tuple, kvec: np.ndarray, fvec: np.ndarray, Ps: np.ndarray, Rs: np.ndarray, orders: int) -> np.ndarray:
    """E of the given unit products (rows of per-sample powers), differentiated ``orders`` times in every
    combination of the lower kernel's entries: shape (rows,) + (10,) * orders (symmetric: each sorted combination
    computed once)."""
    combos = list(itertools.combinations_with_replacement(range(10), orders))
    Ks = np.array([kvec[list(c)].sum(axis=0) if c else np.zeros(4, int) for c in combos])
    fs = np.array([np.prod(fvec[list(c)]) if c else 1.0 for c in combos])
    m = Ps.shape[0]
    vals = _moments(tab, np.repeat(Ps, len(combos), axis=0), np.repeat(Rs, len(combos), axis=0),
                    np.tile(Ks, (m, 1))).reshape(m, len(combos)) * fs
    out = np.zeros((m,) + (10,) * orders)
    for j, c in enumerate(combos):
        for perm in set(itertools.permutations(c)):
            out[(slice(None),) + perm] = vals[:, j]
    return out


def _unit_first(tab: tuple, sw: float) -> tuple:
    """mu, J and Sigma of one first-layer unit's statistics (the first order)."""
    P, R = _components()
    kvec, fvec = _entry_counts(sw)
    mu, J = _batch(tab, kvec, fvec, P, R, 0), _batch(tab, kvec, fvec, P, R, 1)
    vv = _moments(tab, P[:, None] + P[None], R[:, None] + R[None], np.zeros(P.shape[:1] * 2 + (4,), int))
    return mu, J, vv - np.outer(mu, mu)


def _unit_stats(tab: tuple, sw: float, C: np.ndarray, core: int) -> tuple:
    """One first-layer unit's statistics and their derivatives in the lower Gram (Price's theorem, scale sw):
    mu, J, H, T, Sigma, C : d^2 Sigma, d Sigma and the third cumulant (of the first ``core`` components only: the N
    entries enter the pair part with a factor 1 / M_1, so their third cumulants are beyond the order)."""
    P, R = _components()
    n = P.shape[0]
    kvec, fvec = _entry_counts(sw)

    def batch(Ps: np.ndarray, Rs: np.ndarray, orders: int) -> np.ndarray:
        return _batch(tab, kvec, fvec, Ps, Rs, orders)

    mu = batch(P, R, 0)
    J, H, T = batch(P, R, 1), batch(P, R, 2), batch(P, R, 3)
    i, j = np.triu_indices(n)
    PP, RR = P[i] + P[j], R[i] + R[j]

    def sym(x: np.ndarray) -> np.ndarray:
        out = np.zeros((n, n) + x.shape[1:])
        out[i, j], out[j, i] = x, x
        return out

    vv = sym(batch(PP, RR, 0))
    dvv = np.moveaxis(sym(batch(PP, RR, 1)), 2, 0)                 # (e, n, n)
    sig = vv - np.outer(mu, mu)
    dS = dvv - np.einsum("ae,b->eab", J, mu) - np.einsum("a,be->eab", mu, J)
    hc = np.einsum("aef,ef->a", H, C)
    # C : d^2 E[c_i c_j], over C's nonzero entries only
    d2 = np.zeros(len(i))
    for e, f in zip(*np.nonzero(C)):
        k = kvec[e] + kvec[f]
        d2 += C[e, f] * fvec[e] * fvec[f] * _moments(tab, PP, RR, np.broadcast_to(k, PP.shape))
    curv = sym(d2) - np.outer(hc, mu) - np.outer(mu, hc) - 2 * J @ C @ J.T
    ku = np.zeros((n, n, n))
    idx = np.array(list(itertools.combinations_with_replacement(range(core), 3)))
    v3 = _moments(tab, P[idx].sum(axis=1), R[idx].sum(axis=1), np.zeros((len(idx), 4), int))
    m3 = (v3 - vv[idx[:, 0], idx[:, 1]] * mu[idx[:, 2]] - vv[idx[:, 0], idx[:, 2]] * mu[idx[:, 1]]
          - vv[idx[:, 1], idx[:, 2]] * mu[idx[:, 0]] + 2 * mu[idx[:, 0]] * mu[idx[:, 1]] * mu[idx[:, 2]])
    for perm in itertools.permutations(range(3)):
        ku[idx[:, perm[0]], idx[:, perm[1]], idx[:, perm[2]]] = m3
    return mu, J, H, T, sig, curv, dS, ku


@functools.lru_cache(maxsize=32)
def _statistics(net: Any, M: int) -> dict:
    """Y = (Q, K, R, N) of four independent inputs: exact mean, mean field, covariance to O(1/M^2), first-order
    covariance and third cumulant (module docstring)."""
    L = net.depth
    widths = net.widths(M)
    low = kernel_cumulants(net, M, L - 3)
    unit = Unit.of(net.phi(L - 2))
    sw, sb = float(net.sigma_w2[L - 3]), float(net.sigma_b2[L - 3])
    diag, off = _INDEX[(0, 0)], _INDEX[(0, 1)]
    n, width = _SIZE - 10, widths[L - 2]

    def at(point: np.ndarray, C: np.ndarray) -> tuple:
        tab = stein_table(unit, sw * point[diag] + sb, sw * point[off] + sb, _PMAX, _PMAX, 6)
        return _unit_stats(tab, sw, C, 20)

    def at_first(point: np.ndarray) -> tuple:
        tab = stein_table(unit, sw * point[diag] + sb, sw * point[off] + sb, _PMAX, _PMAX, 6)
        return _unit_first(tab, sw)

    def pad(x: np.ndarray, axes: tuple) -> np.ndarray:
        widths_ = [(0, 10) if a in axes else (0, 0) for a in range(x.ndim)]
        return np.pad(x, widths_)

    # first order at mean field
    mu1, J1, sig1 = at_first(low["mf"])
    C1 = low["first"]
    first = np.zeros((_SIZE, _SIZE))
    first[10:, 10:] = sig1 / width + J1 @ C1 @ J1.T
    first[10:, :10] = J1 @ C1
    first[:10, 10:] = (J1 @ C1).T
    first[:10, :10] = C1
    mf = np.concatenate([low["mf"], mu1])
    # next order at the exact mean: the components and the carried Gram (J = identity, no own noise)
    C = low["cov"]
    mu, J, H, T, sig, curv, dS, ku = at(low["mean"], C)
    eye = np.eye(10)
    mean, cov, kap = total_cumulants(
        np.concatenate([mu, low["mean"]]), np.concatenate([J, eye]), pad(H, (0,)), pad(T, (0,)),
        pad(sig, (0, 1)), pad(curv, (0, 1)), pad(dS, (1, 2)), pad(ku, (0, 1, 2)), C, low["kappa"], width)
    order = np.concatenate([np.arange(n, n + 10), np.arange(n)])     # (components, Q) -> (Q, components)
    return dict(mean=mean[order], mf=mf, cov=cov[np.ix_(order, order)], first=first,
                kappa=kap[np.ix_(order, order, order)])


# A term: (coefficient, linear factors ((Y index, slope, offset), ...), per-sample phi powers, phi' powers, extra
# derivatives) of a second-layer unit's E[prod_a phi_a^p phi'_a^r d^k] times the linear factors in Y.


def _derivs(tab: tuple, sw: float, terms: list, Y: np.ndarray, entries: tuple, memo: dict) -> float:
    """d^n / dY_entries of sum_terms coef prod(linear factors) E[...](K): each derivative either hits a distinct
    matching linear factor or, for a K entry, the unit's mean (Price: scale sw, 1/2 on a diagonal entry). Terms
    with extra derivatives (the 1 / M_1 integration-by-parts terms) are kept to first derivatives."""
    total = 0.0
    for coef, lins, P, R, D in terms:
        if any(D) and len(entries) > 1:
            # the integration-by-parts term carries 1 / M_1: its curvature enters Cov(F, F) at O(1/M^3)
            continue
        def assign(i: int, used: tuple, price: tuple) -> float:
            if i == len(entries):
                k, fac = _counts(price)
                Ds = np.array(D) + np.array(k)
                if any(Ds[a] and not (P[a] or R[a]) for a in range(4)):
                    return 0.0
                key = (tuple(P), tuple(R), tuple(Ds))
                if key not in memo:                       # the same moment recurs across entries and terms
                    memo[key] = float(_moments(tab, np.array([P]), np.array([R]), Ds[None, :])[0])
                val = fac * sw ** len(price) * memo[key]
                for j, (y, slope, offset) in enumerate(lins):
                    val *= slope if j in used else slope * Y[y] + offset
                return val
            y = entries[i]
            out = 0.0
            if _K <= y < _R:
                out += assign(i + 1, used, price + (_PAIRS[y - _K],))
            for j, (yy, _, _) in enumerate(lins):
                if j not in used and yy == y:
                    out += assign(i + 1, used + (j,), price)
            return out
        total += coef * assign(0, (), ())
    return total


def _local(terms: list) -> list:
    """The Y entries a function of these terms depends on: its linear factors and the K entries on its samples."""
    ys = {y for _, lins, _, _, _ in terms for y, _, _ in lins}
    samples = {a for _, _, P, R, D in terms for a in range(4) if P[a] or R[a] or D[a]}
    ys |= {_K + _INDEX[(a, b)] for a, b in _PAIRS if a in samples and b in samples}
    return sorted(ys)


def _tensors(tab: tuple, sw: float, terms: list, Y: np.ndarray, order: int, memo: dict) -> tuple:
    """(local indices, value, J, H[, T]) of a function of terms at Y: derivatives over its local entries, computed
    once per sorted index tuple (symmetric)."""
    loc = _local(terms)
    n = len(loc)
    out = [_derivs(tab, sw, terms, Y, (), memo)]
    for k in range(1, order + 1):
        t = np.zeros((n,) * k)
        for combo in itertools.combinations_with_replacement(range(n), k):
            v = _derivs(tab, sw, terms, Y, tuple(loc[c] for c in combo), memo)
            for perm in set(itertools.permutations(combo)):
                t[perm] = v
        out.append(t)
    return (loc, *out)


def _mono(*factors: tuple) -> tuple:
    """Per-sample (phi powers, phi' powers) of a product of factors ('f' or 'p', sample)."""
    P, R = [0, 0, 0, 0], [0, 0, 0, 0]
    for kind, a in factors:
        (P if kind == "f" else R)[a] += 1
    return P, R


def _q(a: int, b: int) -> int:
    return _Q + _INDEX[(min(a, b), max(a, b))]


def _k(a: int, b: int) -> int:
    return _K + _INDEX[(min(a, b), max(a, b))]


def _r(a: int, b: int) -> int:
    return _R + _INDEX[(min(a, b), max(a, b))]


@dataclass(frozen=True)
class LowerBlocks:
    """E_W tr Sigma_W^2's blocks below the top two layers at the next order: for L = 3 the first hidden layer's block
    and its cross terms with the top blocks, for L >= 4 layer L - 2's block and its cross terms with the top blocks;
    ``unit_part`` + ``pair_part`` + ``omega`` (module docstring).

    Attributes:
        width: M.
        trace: the next-order value (error O(1/M) absolute against O(M)).
        first: the pair part at the first order (derivatives at mean field, first-order covariance) plus the unit
            part and Omega as in ``trace`` (the pair part's own first order).
        unit_part: M_2 E[Psi_T] minus its top (t t) part, leading order (L = 3: O(1)); to O(1) at L >= 4.
        pair_part: M_2 (M_2 - 1) E[Phi_T] minus its top part, to O(1).
        omega: the pairs of distinct units of layer L - 1, leading order (L = 3: O(1)); to O(1) at L >= 4.
    """

    width: int
    trace: float
    first: float
    unit_part: float
    pair_part: float
    omega: float


def lower_blocks_next_order(net: Any, width: int, quantity: str = "trace") -> LowerBlocks:
    """The lower blocks of E tr Sigma_W^2 at the next order (module docstring): for L = 3 the first hidden layer's
    parameters with their cross terms with the top two layers' (all of tr Sigma^2 below the top blocks); for L >= 4
    layer L - 2's parameters with their cross terms with the top two layers' (the blocks below L - 2 are not here).

    Args:
        net: a numeric plain :class:`~meanfield.spec.network.Network` with L >= 3 and independent inputs.
        width: M.
        quantity: "trace" (tr Sigma^2) or "spike" (the mean direction's variance Var_x(mu . g), Hoeffding weights
            E[Th_01 Th_02 - Th_01 Th_23]; at L = 3 its Omega terms are O(1/M), so 0 at this order).

    Returns:
        a :class:`LowerBlocks`.

    Raises:
        InvalidArgument: L < 3, normalization layers, symbolic parameters, correlated inputs or another quantity.

    Example:
        >>> from meanfield.spec.network import Network
        >>> b = lower_blocks_next_order(Network(3, "relu", 2, 0), 64)
        >>> b.first < b.trace
        True
        >>> deep = lower_blocks_next_order(Network(4, "relu", 2, 0), 64)
        >>> deep.first < deep.trace
        True
    """
    from ..spec.network import Network

    if not covers_lower(net):
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric plain network with L >= 3 (two hidden layers or more) and independent inputs")
    if quantity not in _WEIGHTS:
        raise InvalidArgument("quantity", quantity, "'trace' or 'spike'")
    return _lower(net, check_int("width", width, minimum=2), quantity)


@functools.lru_cache(maxsize=32)
def _lower(net: Any, M: int, quantity: str = "trace") -> LowerBlocks:
    parts = _parts(net, M)
    hoeff = _WEIGHTS[quantity]
    unit_part = sum(w * parts["unit"][B] for B, w in hoeff)
    pair_part = sum(w * parts["pair"][B] for B, w in hoeff)
    pair_first = sum(w * parts["pair_first"][B] for B, w in hoeff)
    # L = 3: only Omega's (01, 01) term is O(1) (the spike has none); L >= 4: every term (_deep_terms)
    omega = sum(w * parts["omegas"][B] for B, w in hoeff)
    return LowerBlocks(M, float(unit_part + pair_part + omega), float(unit_part + pair_first + omega),
                       float(unit_part), float(pair_part), float(omega))


@functools.lru_cache(maxsize=32)
def _parts(net: Any, M: int) -> dict:
    """Per Hoeffding term E[Th_01 Th_B] (B = 01, 02, 23): the lower blocks' unit and pair parts (next and first
    order), and Omega's terms (``omegas``; at L = 3 only (01, 01) is kept, ``omega``)."""
    L = net.depth
    widths = net.widths(M)
    Mlow, M1, M2 = widths[L - 3], widths[L - 2], widths[L - 1]
    unit = Unit.of(net.phi(L - 1))
    sw, sb = float(net.sigma_w2[L - 2]), float(net.sigma_b2[L - 2])
    sv = float(net.sigma_w2[L - 1]) / M2
    terms_b = ((0, 1), (0, 2), (2, 3))
    Y = _statistics(net, M)
    kern = kernel_cumulants(net, M, L - 2)      # the same K entries as Y's (the top blocks' tables: shared)
    diag, off = _INDEX[(0, 0)], _INDEX[(0, 1)]

    def table(K: np.ndarray) -> tuple:
        return stein_table(unit, sw * K[diag] + sb, sw * K[off] + sb, 4, 4, 6)

    def g0(a: int, b: int) -> tuple:
        return (_q(a, b), float(Mlow), 1.0)

    def f_t(a: int, b: int) -> list:        # E[t_k(a, b) | first layer]
        return [(1.0, (), *_mono(("f", a), ("f", b)), (0, 0, 0, 0)),
                (sv, ((_k(a, b), float(M1), 1.0),), *_mono(("p", a), ("p", b)), (0, 0, 0, 0))]

    def f_s(a: int, b: int) -> list:        # E[S_k(a, b) | first layer], integrated by parts in w_k exactly
        P, R = _mono(("p", a), ("p", b))
        out = [(sv * sw, (g0(a, b), (_r(a, b), 1.0, 0.0)), P, R, (0, 0, 0, 0))]
        for c, e, mult in ((a, a, 1.0), (a, b, 2.0), (b, b, 1.0)):
            D = [0, 0, 0, 0]
            D[c] += 1
            D[e] += 1
            out.append((mult * sv * sw * sw / M1, (g0(a, b), (_NINDEX[(a, b, c, e)], 1.0, 0.0)), P, R, tuple(D)))
        return out

    # --- pair part: Cov(F_S(01), F_S(B)) + Cov(F_S(01), F_t(B)) + Cov(F_t(01), F_S(B))
    def pair(point: np.ndarray, K: np.ndarray, C: np.ndarray, kap: Any) -> dict:
        tab, memo = table(K), {}
        order = 3 if kap is not None else 1
        tens = {}
        for A in terms_b:
            tens[("s", A)] = _tensors(tab, sw, f_s(*A), point, order, memo)
            tens[("t", A)] = _tensors(tab, sw, f_t(*A), point, order, memo)
        out = {}
        for B in terms_b:
            total = 0.0
            for x, y in (("s", "s"), ("s", "t"), ("t", "s")):
                ta, tb = tens[(x, (0, 1))], tens[(y, B)]
                if kap is None:
                    total += float(ta[2] @ C[np.ix_(ta[0], tb[0])] @ tb[2])
                else:
                    total += smooth_covariance(ta[2:], tb[2:], ta[0], tb[0], C, kap)
            out[B] = M2 * (M2 - 1) * total
        return out

    pair_next = pair(Y["mean"], kern["mean"], Y["cov"], Y["kappa"])
    pair_first = pair(Y["mf"], kern["mf"], Y["first"], None)

    # --- unit part: S_A S_B, S_A t_B, t_A S_B of one unit, v averaged (E v^2 = sv, E v^4 = 3 sv^2); L = 3: leading
    # order at mean field; L >= 4 (G of mean O(M)): at Y's exact mean, plus the conditional terms of relative order
    # 1 / M (_deep_unit)
    deep = L >= 4
    point = Y["mean"] if deep else Y["mf"]
    tab, memo = table(kern["mean"] if deep else kern["mf"]), {}
    unit_part = {}
    for c, e in terms_b:
        a, b = 0, 1
        pppp = _mono(("p", a), ("p", b), ("p", c), ("p", e))
        ss = [(3 * sv * sv * sw * sw, (g0(a, b), g0(c, e), (_r(a, b), 1.0, 0.0), (_r(c, e), 1.0, 0.0)), *pppp,
               (0, 0, 0, 0))]
        st = [(sv * sw, (g0(a, b), (_r(a, b), 1.0, 0.0)), *_mono(("p", a), ("p", b), ("f", c), ("f", e)), (0, 0, 0, 0)),
              (3 * sv * sv * sw, (g0(a, b), (_r(a, b), 1.0, 0.0), (_k(c, e), float(M1), 1.0)), *pppp, (0, 0, 0, 0))]
        ts = [(sv * sw, (g0(c, e), (_r(c, e), 1.0, 0.0)), *_mono(("f", a), ("f", b), ("p", c), ("p", e)), (0, 0, 0, 0)),
              (3 * sv * sv * sw, (g0(c, e), (_r(c, e), 1.0, 0.0), (_k(a, b), float(M1), 1.0)), *pppp, (0, 0, 0, 0))]
        loc, val, _, hess = _tensors(tab, sw, ss + st + ts, point, 2, memo)
        unit_part[(c, e)] = M2 * (val + 0.5 * float((hess * Y["first"][np.ix_(loc, loc)]).sum()))

    # --- Omega (leading order): distinct units k != l, the (01, 01) term
    low_unit = Unit.of(net.phi(L - 2))
    lw, lb = float(net.sigma_w2[L - 3]), float(net.sigma_b2[L - 3])
    mf = Y["mf"]
    ltab = stein_table(low_unit, lw * mf[_Q + _INDEX[(0, 0)]] + lb, lw * mf[_Q + _INDEX[(0, 1)]] + lb, _PMAX, _PMAX, 6)
    d4 = float(_moments(ltab, np.zeros((1, 4), int), np.array([[2, 2, 0, 0]]), np.zeros((1, 4), int))[0])
    q01 = _q(0, 1)
    g0sq = Mlow * Mlow * (Y["first"][q01, q01] + mf[q01] ** 2) + 2 * Mlow * mf[q01] + 1.0
    p2 = float(_moments(tab, np.zeros((1, 4), int), np.array([[2, 0, 0, 0]]), np.zeros((1, 4), int))[0])
    p11 = float(_moments(tab, np.zeros((1, 4), int), np.array([[1, 1, 0, 0]]), np.zeros((1, 4), int))[0])
    omega = M2 * (M2 - 1) * sv * sv * sw * sw / M1 * g0sq * d4 * (p2 * p2 + p11 * p11)
    omegas = {(0, 1): omega, (0, 2): 0.0, (2, 3): 0.0}
    if deep:
        extra, omegas = _deep_terms(net, M, Y, tab, table(kern["mf"]), ltab, memo)
        for B in terms_b:
            unit_part[B] += extra[B]
    return dict(unit=unit_part, pair=pair_next, pair_first=pair_first, omega=omegas[(0, 1)], omegas=omegas)


def _pairs_of(samples: Any) -> list:
    """Ordered pairs (x, y) of the samples, as (x, y, multiplicity) with x <= y (2 for x < y: the sum is symmetric)."""
    out = sorted(set(samples))
    return [(x, y, 1.0 if x == y else 2.0) for i, x in enumerate(out) for y in out[i:]]


def _deep_terms(net: Any, M: int, Y: dict, tab: tuple, tab_mf: tuple, ltab: tuple, memo: dict) -> tuple:
    """L >= 4: the unit part's conditional terms of relative order 1 / M and Omega to O(1), per Hoeffding term B
    (module docstring, "Deeper networks"). ``tab`` is the top unit's Stein table at the realized kernel's exact mean
    (``memo`` its moments), ``tab_mf`` at mean field, ``ltab`` the conditioned layer's at mean field."""
    L = net.depth
    widths = net.widths(M)
    Mlow, M1, M2 = widths[L - 3], widths[L - 2], widths[L - 1]
    sw = float(net.sigma_w2[L - 2])
    sv = float(net.sigma_w2[L - 1]) / M2
    mf = Y["mf"]

    def mom(t: tuple, P: Any, R: Any, D: Any = (0, 0, 0, 0)) -> float:
        return float(_moments(t, np.array([P]), np.array([R]), np.array([D]))[0])

    def counts(*samples: int) -> list:
        out = [0, 0, 0, 0]
        for a in samples:
            out[a] += 1
        return out

    def g(a: int, b: int, y: np.ndarray) -> float:       # the lower NTK's scalar G_ab = M_low Q_ab + 1
        return Mlow * y[_q(a, b)] + 1.0

    def low(Pd: list, Rd: list) -> float:                 # a conditioned-layer unit's mean-field moment
        return mom(ltab, Pd, Rd)

    def nstat(a: int, b: int, x: int, y: int) -> float:  # N_ab;xy = sum_i d_i(a) d_i(b) h_i(x) h_i(y) / M_1
        return low(counts(x, y), counts(a, b))

    def ddf(P: list, R: list, x: int, y: int, t: tuple = tab_mf) -> float:   # E d_x d_y (prod phi^P phi'^R)
        return mom(t, P, R, counts(x, y))

    def n_sum(a: int, b: int, P: list, R: list) -> float:   # sum_xy N_ab;xy E d_x d_y (...)
        support = [i for i in range(4) if P[i] or R[i]]
        return sum(m * nstat(a, b, x, y) * ddf(P, R, x, y) for x, y, m in _pairs_of(support))

    # the conditioned layer's U_AB = sum_i d_i(0) d_i(1) d_i(c) d_i(e) / M_1: exact mean and first-order covariance
    # with (Q, K) (Omega's leading term needs them: it is O(M) at L >= 4)
    ustats = _u_statistics(net, M)
    a, b = 0, 1
    extra, omegas = {}, {}
    for c, e in _UKEYS:
        pppp = _mono(("p", a), ("p", b), ("p", c), ("p", e))
        gA, gB = g(a, b, mf), g(c, e, mf)
        rA, rB = mf[_r(a, b)], mf[_r(c, e)]
        g2A, g2B = M1 * mf[_k(a, b)] + 1.0, M1 * mf[_k(c, e)] + 1.0
        uAB = low([0, 0, 0, 0], counts(a, b, c, e))
        E4 = mom(tab_mf, *pppp)
        # S_A S_B: E[(w'Aw)(w'Bw) f] = s^2 (tr A tr B + 2 tr AB) E f + s^3 (tr A sum H'BH E f'' + tr B sum H'AH E f'')
        ss = 3 * sv * sv * (2 * sw * sw / M1 * gA * gB * uAB * E4
                            + sw * gA * rA * sw * sw / M1 * gB * n_sum(c, e, *pppp)
                            + sw * gB * rB * sw * sw / M1 * gA * n_sum(a, b, *pppp))
        # S_A t_B and t_A S_B: the s^2 sum H'AH E f'' term of E[(w'Aw) f]
        st = (sv * sw * sw / M1 * gA * n_sum(a, b, *_mono(("p", a), ("p", b), ("f", c), ("f", e)))
              + 3 * sv * sv * g2B * sw * sw / M1 * gA * n_sum(a, b, *pppp))
        ts = (sv * sw * sw / M1 * gB * n_sum(c, e, *_mono(("f", a), ("f", b), ("p", c), ("p", e)))
              + 3 * sv * sv * g2A * sw * sw / M1 * gB * n_sum(c, e, *pppp))
        extra[(c, e)] = M2 * (ss + st + ts)
        # Omega: sum over k != l of E[f(u_k) g(u_l) (w_k'A w_l)(w_k'B w_l)], two pairings of the samples
        total = 0.0
        for fs, gs in (((a, c), (b, e)), ((a, e), (b, c))):
            Pf, Rf = _mono(("p", fs[0]), ("p", fs[1]))
            Pg, Rg = _mono(("p", gs[0]), ("p", gs[1]))
            total += sw * sw / M1 * _omega_lead(tab, sw, Y, ustats[(c, e)], (a, b), (c, e), (Pf, Rf), (Pg, Rg),
                                                Mlow, memo)
            Ef, Eg = mom(tab_mf, Pf, Rf), mom(tab_mf, Pg, Rg)
            sup_f = [i for i in range(4) if Rf[i]]
            sup_g = [i for i in range(4) if Rg[i]]
            # s^3 sum_xy H_x'AB H_y (E f_xy E g + E f E g_xy), V_AB;xy = sum_i d d d d h_x h_y / M_1
            v = sum(m * low(counts(x, y), counts(a, b, c, e)) * ddf(Pf, Rf, x, y) * Eg for x, y, m in _pairs_of(sup_f))
            v += sum(m * low(counts(x, y), counts(a, b, c, e)) * ddf(Pg, Rg, x, y) * Ef for x, y, m in _pairs_of(sup_g))
            total += sw ** 3 / (M1 * M1) * gA * gB * v
            # s^4 sum (H_x'A H_z)(H_y'B H_w) E f_xy E g_zw
            n4 = 0.0
            for x in sup_f:
                for y in sup_f:
                    for z in sup_g:
                        for w in sup_g:
                            n4 += (nstat(a, b, x, z) * nstat(c, e, y, w) * ddf(Pf, Rf, x, y) * ddf(Pg, Rg, z, w))
            total += sw ** 4 / (M1 * M1) * gA * gB * n4
        omegas[(c, e)] = M2 * (M2 - 1) * sv * sv * total
    return extra, omegas


def _omega_lead(tab: tuple, sw: float, Y: dict, u: tuple, A: tuple, B: tuple, fpow: tuple, gpow: tuple, Mlow: int,
                memo: dict) -> float:
    """E[G_A G_B U_AB E f(K) E g(K)] to relative O(1/M): the product at the exact means plus half its Hessian
    contracted with the first-order covariance of (Q, K, U) (the factors' gradients pairwise; the two top-unit means'
    own curvature)."""
    umean, ucov = u                                        # U's exact mean; its first-order covariance with Y[:20]
    n = 21                                                 # (Q, K) entries and U
    mean = np.concatenate([Y["mean"][:20], [umean]])
    C = np.zeros((n, n))
    C[:20, :20] = Y["first"][:20, :20]
    C[20, :20] = C[:20, 20] = ucov
    factors = []                                           # (value, gradient, Hessian or None)
    for pair in (A, B):
        grad = np.zeros(n)
        grad[_q(*pair)] = Mlow
        factors.append((Mlow * mean[_q(*pair)] + 1.0, grad, None))
    grad = np.zeros(n)
    grad[20] = 1.0
    factors.append((umean, grad, None))
    for P, R in (fpow, gpow):
        loc, val, J, H = _tensors(tab, sw, [(1.0, (), P, R, (0, 0, 0, 0))], Y["mean"], 2, memo)
        gv, hv = np.zeros(n), np.zeros((n, n))
        gv[loc] = J
        hv[np.ix_(loc, loc)] = H
        factors.append((val, gv, hv))
    vals = [f[0] for f in factors]
    total = float(np.prod(vals))
    for i, (vi, gi, hi) in enumerate(factors):
        rest = np.prod([v for k, v in enumerate(vals) if k != i])
        if hi is not None:
            total += 0.5 * rest * float((hi * C).sum())
        for j in range(i + 1, len(factors)):
            rest2 = np.prod([v for k, v in enumerate(vals) if k not in (i, j)])
            total += rest2 * float(gi @ C @ factors[j][1])     # 1/2 (i, j) + 1/2 (j, i)
    return total


@functools.lru_cache(maxsize=32)
def _u_statistics(net: Any, M: int) -> dict:
    """Per B = (c, e): U_B = sum_i d_i(0) d_i(1) d_i(c) d_i(e) / M_1 of the conditioned layer (L - 2): its exact mean
    (mu + 1/2 H : C_low, at the lower kernel's exact mean) and its first-order covariance with Y's (Q, K) entries
    (J C_low with Q; Sigma / M_1 + J C_low J_K^T with K), as :func:`_statistics` does for K, R and N."""
    L = net.depth
    width = net.widths(M)[L - 2]
    low = kernel_cumulants(net, M, L - 3)
    unit = Unit.of(net.phi(L - 2))
    sw, sb = float(net.sigma_w2[L - 3]), float(net.sigma_b2[L - 3])
    diag, off = _INDEX[(0, 0)], _INDEX[(0, 1)]
    kvec, fvec = _entry_counts(sw)

    def tab_at(point: np.ndarray) -> tuple:
        return stein_table(unit, sw * point[diag] + sb, sw * point[off] + sb, _PMAX, _PMAX, 6)

    RU = np.zeros((len(_UKEYS), 4), int)
    for row, (c, e) in enumerate(_UKEYS):
        for x in (0, 1, c, e):
            RU[row, x] += 1
    P0 = np.zeros_like(RU)
    PK = np.zeros((10, 4), int)
    for row, (a, b) in enumerate(_PAIRS):
        PK[row, a] += 1
        PK[row, b] += 1
    RK = np.zeros_like(PK)
    tmean, tmf = tab_at(low["mean"]), tab_at(low["mf"])
    C = low["first"]
    umean = _batch(tmean, kvec, fvec, P0, RU, 0) + 0.5 * np.einsum("rij,ij->r", _batch(tmean, kvec, fvec, P0, RU, 2), C)
    JU, JK = _batch(tmf, kvec, fvec, P0, RU, 1), _batch(tmf, kvec, fvec, PK, RK, 1)
    mu_u, mu_k = _batch(tmf, kvec, fvec, P0, RU, 0), _batch(tmf, kvec, fvec, PK, RK, 0)
    shape = (len(_UKEYS), 10, 4)
    uk = _moments(tmf, np.broadcast_to(PK[None], shape), np.broadcast_to(RU[:, None], shape), np.zeros(shape, int))
    cov_k = (uk - np.outer(mu_u, mu_k)) / width + JU @ C @ JK.T
    cov_q = JU @ C
    return {B: (float(umean[row]), np.concatenate([cov_q[row], cov_k[row]])) for row, B in enumerate(_UKEYS)}
