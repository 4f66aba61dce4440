"""Any chain of hidden batch norms: O(1/M) corrections of E G, m, kappa_1, kappa_2 carried layer by layer.

The networks: one or more batch norms (full or centre-only) on hidden layers, layer norms on other hidden layers (above
a batch norm by :func:`meanfield.finite.chain_layernorm.layer_norm_from_below`, a step like a batch norm's: its
(K, N) to O(1/M) and its four-sample world from the state below), plain layers elsewhere, and on the output nothing,
a centre-only or a full batch norm. What a batch norm on
layer l needs of the layers below is the four-sample world of layer l - 1 (:class:`meanfield.finite.fourworld.World`)
and the O(1/M) mean shifts of its kernel and of the NTK of layer l's pre-activations
(:class:`meanfield.finite.multibn.BelowWorld`); the chain carries that state up:

0. below the lowest batch norm on layer l_1: the inputs' world (l_1 = 1), the plain network's
   (:func:`meanfield.finite.fourworld.realized_world`, :func:`meanfield.finite.corrections.kernel_mean_shift`,
   :func:`meanfield.finite.corrections.ntk_mean_shift`), or behind layer norms
   :func:`meanfield.finite.layernorm_world.layer_norm_world` with :mod:`meanfield.finite.layernorm`'s shifts;
1. a batch norm on layer l: its (K^l, N^l) to O(1/M) by :func:`meanfield.finite.bnstep.batch_norm_from_world` (first
   order in the mean shifts below, second order in the fluctuations below by Price's theorem, Stein on the layer's
   rows, exact sphere quadrature; centre-only included), and its own four-sample world by
   :func:`meanfield.finite.chain_world.batch_norm_world` (Cov = the unit's own / M_l + G Cov_below G^T, G the first
   variation of E[K^l, N^l | below]; Y^l over single units and between units by Stein);
2. the plain layers above it up to the next batch norm (or the output): the world by
   :func:`meanfield.finite.multibn.world_above` (fourworld's recursion, N^l a variable of its own), the shifts of the
   kernel and of the NTK by :func:`meanfield.finite.multibn.ntk_shift_between` (deepbn's plain forward recursion:
   Roberts-Yaida-Hanin for the kernel, E[c(Q) Z] + Stein(Y) for the NTK);
3. the output: no norm, E G_p = mean field + dTheta_p / T (dTheta the O(1) shift of the NTK of the output's
   pre-activations); a centre-only batch norm, G = Pi G^in Pi exactly, so E G_tt = (1 - 1/T)(d - o),
   E G_ts = -(d - o) / T with the corrected d, o of G^in; a full batch norm, :mod:`meanfield.finite.normalized`'s
   terms from the statistics below (1. the factor (D + dD) / D x v / (v + dv) on the mean field, D = T (E G^in_tt -
   E G^in_ts), v = sigma_w^2 (K_tt - K_ts) of layer L - 1; 3. (a)-(c) the couplings with the four-sample world of layer
   L - 1, in closed form: :func:`meanfield.finite.chain_entries.output_coupling`).

Where an existing module covers the placement (one batch norm; hidden norms on layers 1 and l; one batch norm over
layer norms; a hidden batch norm with one on the output) the chain gives its E G to rounding (tests hold them equal;
with a full output norm the statistics below come from bnpair's coarser rule there, 2e-4 of E G_tt apart).

s (no norm on the output): multibn's s, deepbn's four-point layer sum above the top norm (gradient independence above
it, the layers <= l one term with the fresh W^{l+1}'s Wick noise), with the NTK's spread between the top norm's units,
Sigma4 = E[S_ac S_ac] = (sigma_w^2 / M_{l-1})^2 Phi^{l-1}, S_ac = w_a^T X^{l-1} w_c, Phi = sum_bd E[X_bd X_bd] over
the units of a layer, carried up the chain: zero below layer 1 (the inputs' NTK is diagonal in the units);
:mod:`meanfield.finite.ntkspread`'s recursion under a lowest norm over plain layers (hiddenbn's ``cross_unit_spread``)
and over layer norms (a layer-normed unit enters as a plain one at the standardized kernel, each phi' with
1 / sqrt(q_1): the Jacobian's projections move the spread by O(1/M) relative); at a batch norm on layer lo,
Phi^lo = M_lo E[X_bb X_bb] of one unit (:func:`meanfield.finite.chain_world.unit_spread`) + M_lo (M_lo - 1)
E[X_bd X_bd] of two through the spread below (sum U2 U2 Sigma4, U2 bnstep's ``unit_slope_moments``); through plain
layers, ntkspread's Phi recursion. A layer norm above a batch norm (on layer l) passes the spread on as a plain layer
whose unit is standardized (:func:`meanfield.finite.chain_layernorm.layer_norm_moment`: the law at (1, rho), each phi'
with 1 / sqrt(q_1); the Jacobian J = (1 / s)(I - 1 1^T / M - u~ u~^T / M) acts across the units, its projections move
X_ac by O(1) against S_ac's O(sqrt M)): Phi^l by ntkspread's step from the spread Sigma4 between l's units; as the top
norm, deepbn's layer sum above it with its unit's E[X_aa X_aa] (Theta_aa at its mean,
:func:`meanfield.finite.chain_layernorm.layer_norm_unit_second`) and E[X_ac X_ac] through U2 = delta_{t t1} delta_{s t2}
E[phi'_t phi'_s] / q_1 (:func:`meanfield.finite.chain_layernorm.layer_norm_slope_moments`). s misses the next order of
the entry variances (-1% to -5% at M = 64, T = 8; notes).

s under a norm on the output (:mod:`meanfield.finite.chain_entries`): bnpair's parts of the entry covariances over all
T^2 entries (the top norm's units with the output weights' Wick share, the layers below through the first variation,
between outputs; carried through the plain layers above the top norm) with the chain's world below the top norm and
its Sigma4 in place of the plain network's (:class:`meanfield.finite.bnpair.TopBelow`): centre-only, G = Pi G^in Pi so
the projected entry variances (:func:`meanfield.finite.bnpair.projected_entry_parts`); full, normalized's s from the
statistics below (the chain's D_0, D, v, dv; the three Pi Pi pairings and layer L - 1's world from
:func:`meanfield.finite.bnpair.output_pairings`). With one hidden batch norm these are bnpair's (a test). bnpair's parts
take any T (exchangeable tensors, :mod:`meanfield.finite.exchangeable`); the chain's own spreads (Sigma4, Phi) and
bnstep's steps are dense T^4 tensors, so s through an output norm is derived for T <= :data:`DENSE_SAMPLES`; above it
s keeps its mean-field value.

A negative mean overlap of the pre-activations under a layer norm above a batch norm (tanh, sigma_w^2 = 2, sigma_b^2 =
0.1 over a batch norm on layer 1: Q_ts = -0.012) takes the common part of the four-sample integrals imaginary
(:mod:`meanfield.finite.layernorm_overlap`, as :func:`meanfield.finite.multibn.negative_overlap_mean` for plain layers).

Not derived here (``predict`` keeps the mean-field value with a note): s in multibn's placement of one batch norm over
layer norms (multibn answers first; ``chain_terms`` has it), s under a norm on the output for T > DENSE_SAMPLES,
lambda_max, activations with unknown
kinks on the batch-normalized layers, inputs with a negative mean product, T < 6 with a full batch norm (4
centre-only only).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from ..spec.network import BatchNorm, Network
from ..theory.fisher import predict
from .bnpair import TopBelow, pair_placement
from .bnstep import batch_norm_from_world, unit_pair_moments, unit_slope_moments
from .chain_layernorm import layer_norm_from_below, layer_norm_moment, layer_norm_slope_moments
from .chain_entries import centre_output_parts, full_output_s, output_coupling
from .chain_world import batch_norm_world, unit_spread
from .corrections import kernel_mean_shift, ntk_mean_shift
from .deepbn import entry_variance_above, plain_forward
from .fourworld import World, class_tensor, four_sample_mean, inputs_world, pair_index, realized_world
from .layernorm import layer_norm_kernel_mean_shift, layer_norm_ntk_mean_shift
from .layernorm_world import layer_norm_world
from .multibn import BelowWorld, negative_overlap_mean, ntk_shift_between, world_above

__all__ = ["ChainTerms", "chain_terms", "chain_placement", "output_coupling", "finite_width_stats", "CORRECTED"]

CORRECTED = frozenset({"gram_diag", "gram_offdiag", "m", "kappa1", "kappa2"})
DENSE_SAMPLES = 32   # the largest T of s through an output norm: the chain's Sigma4 / Phi are dense T^4 tensors


def _norms(net: Network) -> tuple[list, str | None] | None:
    """([(layer, kind)] of the hidden norms, the output's kind), kinds "batch", "center", "layer"; None for a layer norm
    on the output."""
    hidden, out = [], None
    for n in net.norms:
        kind = ("center" if n.center_only else "batch") if isinstance(n, BatchNorm) else "layer"
        if n.layer == net.depth:
            if kind == "layer":
                return None
            out = kind
        else:
            hidden.append((n.layer, kind))
    return hidden, out


def chain_placement(net: Any) -> tuple | None:
    """((layer, kind), ..., ("out", kind or None)) of a network the chain covers, kinds "batch", "center", "layer";
    None for every other network.

    Covered: a numeric network of depth >= 2 with at least one batch norm (full or centre-only) on a hidden layer,
    layer norms on any other hidden layers (above a batch norm: :mod:`meanfield.finite.chain_layernorm`'s step), and
    on the output nothing or a batch norm (full or centre-only).

    Example:
        >>> chain_placement(Network(4, "tanh", 1, 0.1, norms=["batch:1", "batch:2", "batch:3"]))
        ((1, 'batch'), (2, 'batch'), (3, 'batch'), ('out', None))
        >>> chain_placement(Network(3, "tanh", 1, 0.1, norms=["batch:1", "layer:2"]))
        ((1, 'batch'), (2, 'layer'), ('out', None))
        >>> chain_placement(Network(3, "tanh", 1, 0.1, norms=["layer:1", "layer:2"])) is None      # no batch norm
        True
    """
    if not isinstance(net, Network) or net.is_symbolic or net.depth < 2:
        return None
    parsed = _norms(net)
    if parsed is None:
        return None
    hidden, out = parsed
    batch = [l for l, k in hidden if k != "layer"]
    if not batch:
        return None
    return tuple(hidden) + (("out", out),)


def _check(net: Any, width: Any, samples: Any) -> tuple[int, int, tuple]:
    where = chain_placement(net)
    if where is None:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a numeric network with batch norms on hidden layers, layer norms on hidden layers, and "
                              "on the output nothing or a batch norm")
    full = any(k == "batch" for _, k in where)
    M, T = check_int("width", width, minimum=1), check_int("samples", samples, minimum=6 if full else 4)
    for l, kind in where[:-1]:
        if kind != "layer":
            if Unit.of(net.phi(l)).kinks is None:
                raise InvalidArgument("net", net.describe(), "activations with known kinks (breaks of phi or phi') "
                                      "on the batch-normalized layers")
    if not 0 <= float(net.input_q2) < float(net.input_q1):
        raise InvalidArgument("net", net.describe(), "distinct inputs with a non-negative mean product "
                              "(0 <= input_q2 < input_q1)")
    return M, T, where


def _prefix(net: Network, depth: int, norms: tuple) -> Network:
    """The network of layers 1..depth of ``net`` with one output and the given norms."""
    acts = net.activation[: depth - 1]
    return Network(depth, acts if len(acts) > 1 else acts[0], net.sigma_w2[:depth], net.sigma_b2[:depth], outputs=1,
                   alphas=net.alphas[:depth], norms=list(norms), input_q1=net.input_q1, input_q2=net.input_q2)


def _start(net: Network, width: int, l: int, hidden: tuple) -> BelowWorld:
    """0.: the world of layer l - 1 under the lowest batch norm (on layer l), with its mean shifts."""
    if l == 1:
        return BelowWorld(inputs_world(net, width), (0.0, 0.0), (0.0, 0.0))
    layers = tuple(f"layer:{j}" for j, k in hidden if k == "layer" and j < l)
    below = _prefix(net, l, layers)
    if layers:
        shift_k = layer_norm_kernel_mean_shift(below, width)[l - 1]
        return BelowWorld(layer_norm_world(below, width), (float(shift_k[0]), float(shift_k[1])),
                          tuple(float(x) for x in layer_norm_ntk_mean_shift(below, width)))
    shift_k = kernel_mean_shift(below, width)[l - 1]
    return BelowWorld(realized_world(below, width), (float(shift_k[0]), float(shift_k[1])),
                      tuple(float(x) for x in ntk_mean_shift(below, width)))


def _spread_below(net: Network, width: int, l: int, hidden: tuple, T: int) -> np.ndarray:
    """Sigma4 between two units of the lowest batch norm (on layer l >= 2) over plain and layer-normed layers:
    (sigma_w^2 / M_{l-1})^2 Phi^{l-1}, :mod:`meanfield.finite.ntkspread`'s recursion from layer 1 (Theta^1 = 1 + x.x
    diagonal in the units with the inputs' Wishart spread). A layer norm on layer j enters as a plain layer whose unit
    is phi(u~) with u~ = (u - mu) / s: X_bd = phi'_b (J Theta J^T)_bd phi'_d, J = (1 / s)(I - 1 1^T / M - u~ u~^T / M),
    whose projections move Phi by O(1/M) relative (the off-diagonal A / M against the spread's O(sqrt M)), so to leading
    order the four-sample means are at the standardized kernel (1, rho) and every phi' carries 1 / sqrt(q_1)."""
    widths = net.widths(width)
    q1, q2 = float(net.input_q1), float(net.input_q2)
    layers = {j for j, k in hidden if k == "layer"}
    phi = None
    for j in range(1, l):
        sw, sb = float(net.sigma_w2[j - 1]), float(net.sigma_b2[j - 1])
        if j == 1:
            k, n = (q1, q2), (0.0, 0.0)

            def shared(lab: tuple) -> float:
                t1, s1, t2, s2 = lab
                Q = lambda a, b: q1 if a == b else q2  # noqa: E731 - the inputs' kernel
                return widths[0] * (Q(t1, t2) * Q(s1, s2) + Q(t1, s2) * Q(s1, t2))
        else:
            lower = tuple(f"layer:{i}" for i in sorted(layers) if i < j)
            below = _prefix(net, j, lower)
            w = layer_norm_world(below, width) if lower else realized_world(below, width)
            k, n = w.k, w.n
            shared = _world_shared(w, widths[j - 1], sw)
        theta = (1 + widths[j - 1] * k[0] + sw * n[0], 1 + widths[j - 1] * k[1] + sw * n[1])
        qa, qb = sw * k[0] + sb, sw * k[1] + sb
        if j in layers:      # the standardized unit: phi' at kernel (1, rho), 1 / sqrt(q_1) per factor
            mean = functools.partial(layer_norm_moment, net.phi(j), qa, qb)
        else:
            mean = functools.partial(four_sample_mean, Unit.of(net.phi(j)), qa, qb)
        phi = _phi_step(mean, theta, shared, (sw / widths[j - 1]) ** 2, phi, widths[j])
    return (float(net.sigma_w2[l - 1]) / widths[l - 1]) ** 2 * class_tensor(T, lambda lab: phi[lab])


def _phi_step(mean, theta: tuple, shared, coef: float, old: np.ndarray | None, width: int) -> np.ndarray:
    """One step of :mod:`meanfield.finite.ntkspread`'s recursion at canonical labels (a 4^4 table): Phi^j = M_j
    E[phi'^4] (Theta Theta + shared + coef (old + old swapped)) + M_j (M_j - 1) c c coef old, ``mean`` the unit's
    four-sample means, ``shared`` the covariance of M K + sigma_w^2 N below, old = Phi^{j-1}, coef = (sigma_w^2 /
    M_{j-1})^2."""
    def value(lab: tuple) -> float:
        t1, s1, t2, s2 = lab
        m4 = mean(tuple(("d", i) for i in lab))
        out = width * m4 * (theta[t1 != s1] * theta[t2 != s2] + shared(lab))
        if old is not None:
            c1, c2 = mean((("d", t1), ("d", t2))), mean((("d", s1), ("d", s2)))
            out += (width * m4 * coef * (old[t1, s1, t2, s2] + old[t1, s1, s2, t2])
                    + width * (width - 1) * c1 * c2 * coef * old[t1, s1, t2, s2])
        return out
    return class_tensor(4, value)


def _world_shared(w: World, Mb: int, sw: float):
    """lab -> Cov(M_{j-1} K + sigma_w^2 N) of the world w of layer j - 1 between the pairs (t1, s1), (t2, s2)."""
    def shared(lab: tuple) -> float:
        t1, s1, t2, s2 = lab
        a, b = pair_index(t1, s1), pair_index(t2, s2)
        c = w.cov
        return Mb * Mb * c[a, b] + Mb * sw * (c[a, 10 + b] + c[10 + a, b]) + sw * sw * c[10 + a, 10 + b]
    return shared


def _phi_layer_norm(net: Network, width: int, below: World, sigma4: np.ndarray, l: int) -> np.ndarray:
    """Phi^l (T^4) of a layer-normed layer l above a batch norm: ntkspread's step with the
    layer-normed unit (:func:`meanfield.finite.chain_layernorm.layer_norm_moment`: the standardized law, each phi'
    with 1 / sqrt(q_1); the Jacobian's projections move Phi by O(1/M) relative), the world of layer l - 1 ``below`` and
    the spread Sigma4 = (sigma_w^2 / M_{l-1})^2 Phi^{l-1} between layer l's units (so coef old = Sigma4)."""
    widths = net.widths(width)
    sw, sb, Mb = float(net.sigma_w2[l - 1]), float(net.sigma_b2[l - 1]), widths[l - 1]
    theta = (1 + Mb * below.k[0] + sw * below.n[0], 1 + Mb * below.k[1] + sw * below.n[1])
    qa, qb = sw * below.k[0] + sb, sw * below.k[1] + sb
    coef = (sw / Mb) ** 2
    mean = functools.partial(layer_norm_moment, net.phi(l), qa, qb)
    phi = _phi_step(mean, theta, _world_shared(below, Mb, sw), coef, sigma4[:4, :4, :4, :4] / coef, widths[l])
    return class_tensor(sigma4.shape[0], lambda lab: phi[lab])


def _phi_norm(unit: Unit, below: World, sigma4: np.ndarray, width_below: int, width: int, sw: float, T: int,
              center: bool) -> np.ndarray:
    """Phi^l[t1, s1, t2, s2] = sum_bd E[X_bd(t1, s1) X_bd(t2, s2)] over the units of a batch-normalized layer l: M_l
    E[X_bb X_bb] of one unit plus M_l (M_l - 1) E[X_bd X_bd] of two (b != d), X_bd = phi'_b (A_b S_bd A_d) phi'_d
    through the NTK's spread between the units below, E[..] = sum U2[t1, i, t2, k] U2[s1, j, s2, l] Sigma4[i, j, k, l]
    (the units independent given the layer below; U2 = E[phi'(t) A(t, i) phi'(t') A(t', k)] of one unit)."""
    own = unit_spread(unit, below, width_below, width, sw, 1.0, T, center) * width**2
    if not sigma4.any():          # layer 1: the inputs' NTK is diagonal in the units (no spread between them)
        return own
    U2 = unit_slope_moments(unit, sw * (below.k[0] - below.k[1]), T, center)
    return own + width * (width - 1) * np.einsum("aibk,cjdl,ijkl->acbd", U2, U2, sigma4, optimize=True)


def _spread(net: Network, width: int, phi_lo: np.ndarray, world: World, lo: int, hi: int) -> np.ndarray:
    """Sigma4[t1, s1, t2, s2] = E[S_ac(t1, s1) S_ac(t2, s2)] between two units a != c of the batch norm on layer hi
    (S_ac = w_a^T X^{hi-1} w_c) = (sigma_w^2 / M_{hi-1})^2 Phi^{hi-1}: from the batch-normalized layer lo's Phi^lo
    (:func:`_phi_norm`; ``world`` its own four-sample world) by :mod:`meanfield.finite.ntkspread`'s recursion
    Phi^j = M_j E[phi'^4] E[Theta_bb Theta_bb] + M_j (M_j - 1) c c (sigma_w^2 / M_{j-1})^2 Phi^{j-1} through the plain
    layers lo + 1..hi - 1 (multibn's, there from layer 1), E[Theta_bb Theta_bb] = the means' product + Cov(M K +
    sigma_w^2 N) of the world below + the unit's own Wick term."""
    widths = net.widths(width)
    sws = [float(x) for x in net.sigma_w2]
    T = phi_lo.shape[0]
    phi = phi_lo[:4, :4, :4, :4]                          # the table at canonical labels 0..3
    for j in range(lo + 1, hi):
        w = world_above(net, width, world, lo, j)         # the world of layer j - 1
        sw, sb, Mb = sws[j - 1], float(net.sigma_b2[j - 1]), widths[j - 1]
        theta = (1 + Mb * w.k[0] + sw * w.n[0], 1 + Mb * w.k[1] + sw * w.n[1])
        qa, qb = sw * w.k[0] + sb, sw * w.k[1] + sb
        mean = functools.partial(four_sample_mean if qb >= 0 else negative_overlap_mean, Unit.of(net.phi(j)), qa, qb)
        phi = _phi_step(mean, theta, _world_shared(w, Mb, sw), (sw / Mb) ** 2, phi, widths[j])
    return (sws[hi - 1] / widths[hi - 1]) ** 2 * class_tensor(T, lambda lab: phi[lab])


@dataclass(frozen=True)
class ChainTerms:
    """E G_tt, E G_ts, m, kappa_1, kappa_2 with their O(1/M) terms through a chain of hidden batch norms.

    Attributes:
        network, width, samples: what was computed (M, T).
        hidden: ((layer, kind), ...) of the hidden norms; output: None, "center" or "batch".
        mean_field_diag, mean_field_offdiag, m_mean_field, s_mean_field: ``predict``'s values.
        ntk_shift: (dd, do), the O(1) shifts of T E G^in_tt, T E G^in_ts of the network without its output norm.
        shift_diag, shift_offdiag: the O(1/M) terms of E G_tt, E G_ts (Gram units).
        mean_diag, mean_offdiag, m, kappa1, kappa2: corrected.
        entry_variances: (Var G_tt, Var G_ts, E G_kl(t, t)^2, E G_kl(t, s)^2) of one entry where derived (no norm on
            the output), else None.
        s: corrected (the squared corrected means plus the entry variances) where the entry variances are derived,
            else ``predict``'s.
        includes_1_over_M: the statistics above that include their O(1/M) terms.
        P, alpha: parameter count and sum alpha_l alpha_{l-1}.
        output_parts: s's parts through a norm on the output where derived, else None: centre-only, the projected
            entry variances summed over the T^2 entries, (same, below, cross) of
            :func:`meanfield.finite.bnpair.projected_entry_parts` (the top norm's units with the output weights'
            share, the layers below it, between outputs); full, (s_same, s_cross, C Cpl_F2 / P) of
            :func:`meanfield.finite.chain_entries.full_output_s`.

    Example:
        >>> t = chain_terms(Network(4, "tanh", 1, 0.1, outputs=2, norms=["batch:1", "batch:2", "batch:3"]), 64, 8)
        >>> t.m == 2 * 8 * t.mean_diag / t.P, t.hidden
        (True, ((1, 'batch'), (2, 'batch'), (3, 'batch')))
    """

    network: Network
    width: int
    samples: int
    hidden: tuple
    output: str | None
    mean_field_diag: float
    mean_field_offdiag: float
    m_mean_field: float
    s_mean_field: float
    ntk_shift: tuple
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
    output_parts: tuple | None = None


@functools.lru_cache(maxsize=32)
def chain_terms(net: Network, width: int, samples: int) -> ChainTerms:
    """E G = mean field + (the chain's O(1/M) terms through every hidden batch norm and the output) (module docstring).

    Args:
        net: a network :func:`chain_placement` covers; activations with known kinks on the batch-normalized layers
            (split by :mod:`meanfield.finite.spherecut`'s rule where away from 0); inputs with a non-negative mean
            product.
        width: M.
        samples: T >= 6 with a full batch norm anywhere, else T >= 4.

    Returns:
        :class:`ChainTerms`.

    Raises:
        InvalidArgument: another network, T too small, a kernel the quadratures do not take.

    Example:
        >>> t = chain_terms(Network(3, "tanh", 1, 0.1, outputs=2, norms=["batch-center:1", "batch:2"]), 64, 8)
        >>> bool(abs(t.shift_diag / t.mean_field_diag) < 0.05), t.output
        (True, None)
    """
    M, T, where = _check(net, width, samples)
    hidden, out = tuple(where[:-1]), where[-1][1]
    L = net.depth
    widths = net.widths(M)
    sw = [float(x) for x in net.sigma_w2]
    lowest = min(l for l, k in hidden if k != "layer")
    batch = [(l, k) for l, k in hidden if k != "layer" or l > lowest]     # and the layer norms above the lowest
    below = _start(net, M, batch[0][0], hidden)
    # the NTK's spread between the units of the batch norm processed next (s needs the top's): none on layer 1, the
    # plain network's below (hiddenbn's), behind layer norms the standardized units
    first = batch[0][0]
    spread = np.zeros((T,) * 4) if first == 1 else _spread_below(net, M, first, hidden, T)
    for i, (l, kind) in enumerate(batch):
        unit = Unit.of(net.phi(l))
        center = kind == "center"
        if kind == "layer":      # a layer norm above a batch norm: chain_layernorm's step
            b, lnw = layer_norm_from_below(net, M, below, l)
        else:
            b = batch_norm_from_world(unit, below.world, below.shift_k, below.shift_theta, widths[l - 1], widths[l],
                                      sw[l - 1], T, center, l >= 2)
        hi = batch[i + 1][0] if i + 1 < len(batch) else L
        shift_theta, shift_k = ntk_shift_between(net, M, b, l, hi)
        if hi == L:
            top, top_below, top_spread = (kind, unit, center, l, b), below.world, spread
        if hi < L or out == "batch":       # the world above is needed
            w = lnw if kind == "layer" else batch_norm_world(unit, below.world, b, widths[l - 1], widths[l],
                                                             sw[l - 1], T, center, l >= 2)
            if hi < L:
                phi = (_phi_layer_norm(net, M, below.world, spread, l) if kind == "layer" else
                       _phi_norm(unit, below.world, spread, widths[l - 1], widths[l], sw[l - 1], T, center))
                spread = _spread(net, M, phi, w, l, hi)
            below = BelowWorld(world_above(net, M, w, l, hi), shift_k, shift_theta)
    dd, do = (float(x) for x in shift_theta)
    base = predict(net, M, T)
    gd, go = float(base.gram_diag), float(base.gram_offdiag)
    if out is None:
        sd, so = dd / T, do / T
    elif out == "center":      # G = Pi G^in Pi
        sd, so = (1 - 1 / T) * (dd - do) / T, -(dd - do) / T**2
    else:
        inner = net.with_(norms=tuple(n for n in net.norms if n.layer < L))
        raw = predict(inner, M, T)
        D0 = T * (float(raw.gram_diag) - float(raw.gram_offdiag))
        w = below.world
        v = sw[L - 1] * (w.k[0] - w.k[1])
        dv = sw[L - 1] * (shift_k[0] - shift_k[1]) / widths[L - 1]
        factor = (D0 + dd - do) / D0 * v / (v + dv)
        cpl = output_coupling(w, widths[L - 1], sw[L - 1], T) / T
        sd, so = gd * (factor - 1) + cpl, go * (factor - 1) - cpl / (T - 1)
    C, P, alpha = net.outputs, int(base.P), float(base.alpha)
    mean_d, mean_o = gd + sd, go + so
    s, var, corrected, parts = float(base.s), None, CORRECTED, None
    top_kind = top[0]
    if out is None:     # the entry variances above the top norm (multibn's s)
        _, unit, center, l, b = top
        fw = plain_forward(net, M, b, l, L)
        if top_kind == "layer":      # the layer-normed units' slopes (the norm's Jacobian across units only)
            Q = (sw[l - 1] * top_below.k[0] + float(net.sigma_b2[l - 1]),
                 sw[l - 1] * top_below.k[1] + float(net.sigma_b2[l - 1]))
            U2 = layer_norm_slope_moments(net.phi(l), Q, T)
        else:
            U2 = unit_slope_moments(unit, sw[l - 1] * (top_below.k[0] - top_below.k[1]), T, center)
        ac = unit_pair_moments(U2, top_spread)
        var = tuple(entry_variance_above(net, fw, b, l, ac, cross, pair) / T**2 for cross in (False, True)
                    for pair in (0, 1))
        s = (C * (T * (mean_d**2 + var[0]) + T * (T - 1) * (mean_o**2 + var[1]))
             + C * (C - 1) * (T * var[2] + T * (T - 1) * var[3])) / P
        corrected = CORRECTED | {"s"}
    elif out == "center" and T <= DENSE_SAMPLES:   # G = Pi G^in Pi
        # bnpair's parts over the chain's world (a batch-normalized top), or from a layer-normed top's own world
        parts = centre_output_parts(net, M, T, top[3], TopBelow(top_below, top_spread),
                                    lnw if top_kind == "layer" else None)
        s = (C * (T * mean_d**2 + T * (T - 1) * mean_o**2) + C * (parts[0] + parts[1]) + C * (C - 1) * parts[2]) / P
        corrected = CORRECTED | {"s"}
    elif out == "batch" and T <= DENSE_SAMPLES:    # normalized's s from the statistics below
        s, parts = full_output_s(net, M, T, top[3], TopBelow(top_below, top_spread), below.world,
                                 (D0, D0 + dd - do, v, dv), float(base.s), P, lnw if top_kind == "layer" else None)
        corrected = CORRECTED | {"s"}
    return ChainTerms(net, M, T, hidden, out, gd, go, float(base.m), float(base.s), (dd, do), sd, so, mean_d, mean_o,
                      C * T * mean_d / P, T * mean_d / (alpha * M), T * mean_o / (alpha * M), var, s, corrected, P,
                      alpha, parts)


def finite_width_stats(net: Network, width: int, samples: int, base: Any) -> dict | None:
    """The "1/M" model for a chain of hidden batch norms (corrected gram_diag, gram_offdiag, m, kappa1, kappa2, and s
    where :func:`chain_terms` derives it); mean-field values and a note where it refuses; None for networks without a
    hidden batch norm
    and for one hidden batch norm with one on the output (:mod:`meanfield.finite.bnpair`'s placements, whose s is
    derived there).

    Example:
        >>> from meanfield import predict
        >>> net = Network(4, "tanh", 1, 0.1, outputs=2, norms=["batch:1", "batch:2", "batch:3"])
        >>> sorted(finite_width_stats(net, 64, 8, predict(net, 64, 8))["includes_1_over_M"])
        ['gram_diag', 'gram_offdiag', 'kappa1', 'kappa2', 'm', 's']
        >>> finite_width_stats(Network(3, "tanh", 1, 0.1), 64, 8, None) is None
        True
    """
    if not isinstance(net, Network) or net.is_symbolic or pair_placement(net) is not None:
        return None      # one hidden batch norm with one on the output: bnpair's, or normalized's own (with s)
    where = chain_placement(net)
    if where is None:
        parsed = _norms(net)
        if parsed is None or not any(k != "layer" for _, k in parsed[0]):
            return None
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for {', '.join(map(str, net.norms))} (a layer norm above "
                           "a hidden batch norm: the layer norm's step over a batch-normalized world): mean-field "
                           "values",))
    try:
        t = chain_terms(net, width, samples)
    except InvalidArgument as error:     # predict keeps working with mean-field values
        return dict(s=base.s, includes_1_over_M=frozenset(),
                    notes=(f"finite_width='1/M': not derived for this network ({error}): mean-field values",))
    norms = ", ".join(str(n) for n in net.norms)
    return dict(gram_diag=t.mean_diag, gram_offdiag=t.mean_offdiag, m=t.m, kappa1=t.kappa1, kappa2=t.kappa2,
                s=t.s, includes_1_over_M=t.includes_1_over_M,
                notes=(f"{norms}: E G_tt, E G_ts (so m and the kappa's) with their derived O(1/M) terms, carried "
                       "through the chain of norms (each batch norm's terms by exact sphere quadrature over the "
                       "four-sample world below it, that world by a fixed quasi-Monte Carlo rule; deterministic)",
                       ("s with the entry variances of the four-point layer sum above the top hidden norm (gradient "
                        "independence); s still misses the next order (-1% to -5% at M = 64, T = 8)")
                       if "s" in t.includes_1_over_M and t.output is None else
                       ("s with the entry covariances projected through the output's batch norm (the top hidden norm's "
                        "units over the chain's world, on a fixed quasi-Monte Carlo rule; a layer norm as the top: "
                        "its own world's covariance and its units' Wick terms); s still misses the next "
                        "order (-1% to -3% at M = 64, T = 8)")
                       if "s" in t.includes_1_over_M else
                       (f"s keeps its mean-field value (its entry variances under a norm on the output for T > "
                        f"{DENSE_SAMPLES}: not derived)"),
                       "lambda_max: not corrected (the mean-field value or bounds)"))
