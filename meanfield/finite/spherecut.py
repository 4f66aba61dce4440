"""The batch-normalized unit's sphere quadrature split at kinks anywhere: activations with breaks away from 0.

:class:`meanfield.finite.spherebn.Sphere` integrates the law of one or two coordinates z_F of a normalized unit (z
uniform on the sphere |z|^2 = T in the complement of 1) by Gauss-Legendre rules in angles split at the rays z_t = 0,
where relu's kinks lie. Every O(1/M) term of :mod:`meanfield.finite.bnstep` is such an expectation of phi(x_t)
phi(x_s) or phi'(x_t) phi'(x_s) (x = z for a full batch norm, x = sqrt(v beta) z centre-only) times Hermite weights,
i.e. polynomials in z and powers of beta (Price's theorem and Stein's lemma written as E[d F] = E[F H], which holds for
F with jumps: the boundary terms a derivative of phi' would bring at a kink are in the Hermite form already). So a kink
of phi or phi' at c != 0 costs nothing but the quadrature: a piece boundary at x_t = c. That is not a ray through 0
(and centre-only it moves with beta: z_t = c / sqrt(v beta)), so here the two coordinates are integrated iterated:

- k = 1: z_0 = sqrt(T - 1) sin(theta), density cos(theta)^(T - 3), theta split at arcsin(c / sqrt(T - 1));
- k = 2: z_F = sqrt(T) L y (L L^T = Pi_FF = I - 1 1^T / T, L lower triangular), y in the unit disc with density
  (1 - |y|^2)^((T - 5) / 2); y_0 = sin(theta), y_1 = cos(theta) sin(psi) give the density cos(theta)^(T - 3)
  cos(psi)^(T - 4). theta is split where z_0 = c and where the line z_1 = c crosses the disc's rim (the roots of
  (c' - L10 y_0)^2 = L11^2 (1 - y_0^2), c' = c / sqrt(T): beyond them the psi cut leaves the interval, a (theta -
  theta_x)^((T - 3) / 2) singularity otherwise), psi per theta node where z_1 = c.

Centre-only, the rule is the product of a Gauss-Legendre rule in s = sqrt(T beta / 2) (the chi law of
:func:`meanfield.finite.spherebn.beta_rule`, split where a cut c / sqrt(v beta), or for two coordinates a corner of two
cuts, reaches the sphere's rim: there the pieces change shape) with the sphere rule cut at c / sqrt(v beta) for each
beta node: nodes carry their own beta (:attr:`CutSphere.beta`).
A unit with all its kinks at 0 (or none) keeps :class:`meanfield.finite.spherebn.Sphere` (:func:`kinks_off_zero`).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from .spherebn import Sphere

__all__ = ["CutSphere", "kinks_off_zero", "cut_beta_rule", "NEGLIGIBLE"]

# nodes whose weight (of a total 1) is below this are left out where the integrands are bounded (the sphere's rim,
# cos^(T - 3) small) or polynomial in beta (the chi law's upper tail): at most ~1e-15 of the mass, below the rules' own
# error, and a third to a half of the nodes of the centre-only product rule (never small beta: E[beta^-2] needs them)
NEGLIGIBLE = 1e-20


def kinks_off_zero(unit: Unit) -> tuple:
    """The kinks of ``unit`` (of phi or phi') as floats, if any lies away from 0; () otherwise (smooth, relu-like).

    Raises:
        InvalidArgument: kinks unknown (None): the sphere rules need them.

    Example:
        >>> from meanfield.spec.network import Network
        >>> kinks_off_zero(Unit.of(Network(2, "relu", 2, 0.1).phi(1))), kinks_off_zero(Unit.of(Network(2, "tanh", 2,
        ...     0.1).phi(1)))
        ((), ())
    """
    if unit.kinks is None:
        raise InvalidArgument("unit", unit, "an activation whose kinks (breaks of phi or phi') are known")
    cuts = tuple(sorted({float(k) for k in unit.kinks}))
    return cuts if any(c != 0.0 for c in cuts) else ()


def _pieces(edges: np.ndarray, nodes: int, graded: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on the pieces between consecutive ``edges`` (rows x (pieces + 1), increasing
    per row; empty pieces get zero weight). ``graded``: through u -> (15 u - 10 u^3 + 3 u^5) / 8 (its derivative
    15 (1 - u^2)^2 / 8 vanishes twice at the ends), which turns an endpoint singularity (x - a)^alpha into (1 + u)^(3
    alpha + 2): theta's pieces end where a cut crosses the rim, alpha = (T - 3) / 2 (1/2 at T = 4)."""
    g, gw = np.polynomial.legendre.leggauss(nodes)
    if graded:
        g, gw = (15 * g - 10 * g**3 + 3 * g**5) / 8, gw * 15 * (1 - g * g) ** 2 / 8
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    half = (hi - lo) / 2
    return ((lo + hi) / 2 + half * g).reshape(len(edges), -1), (half * gw).reshape(len(edges), -1)


def _arcs(breaks: np.ndarray) -> np.ndarray:
    """[-pi/2, arcsin(breaks) clipped to [-1, 1] and sorted, pi/2] per row."""
    b = np.sort(np.arcsin(np.clip(np.atleast_2d(breaks), -1.0, 1.0)), axis=1)
    rows = b.shape[0]
    return np.concatenate([np.full((rows, 1), -math.pi / 2), b, np.full((rows, 1), math.pi / 2)], axis=1)


def _sphere_nodes(T: int, k: int, cuts: np.ndarray, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(z_F nodes, weights summing to 1) of the law of k = 1, 2 coordinates, pieces split where a coordinate = a cut."""
    cuts = np.asarray(cuts, dtype=float)
    if k == 1:
        th, w = _pieces(_arcs(cuts / math.sqrt(T - 1)), nodes)
        th, w = th[0], w[0] * np.cos(th[0]) ** (T - 3)
        return (math.sqrt(T - 1) * np.sin(th))[:, None], w / w.sum()
    L = np.linalg.cholesky(np.eye(2) - 1.0 / T)
    c = cuts / math.sqrt(T)                                 # the cuts in y-units
    # y_0 where the line L10 y0 + L11 y1 = c crosses the rim |y| = 1 (there the psi cut leaves the interval)
    r2 = 1 - 1.0 / T                                        # L10^2 + L11^2 = Pi_11
    root = L[1, 1] * np.sqrt(np.clip(r2 - c * c, 0.0, None))
    cross = np.concatenate([(c * L[1, 0] - root) / r2, (c * L[1, 0] + root) / r2])
    th, tw = _pieces(_arcs(np.concatenate([c / L[0, 0], cross])), nodes, graded=True)
    th, tw = th[0], tw[0] * np.cos(th[0]) ** (T - 3)
    y0, ct = np.sin(th), np.cos(th)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = (c[None, :] - L[1, 0] * y0[:, None]) / (L[1, 1] * ct[:, None])
    inner = np.where(np.isfinite(inner), inner, 2.0)     # at the poles theta = +-pi/2 (never a node) no cut
    ps, pw = _pieces(_arcs(inner), nodes)
    pw = pw * np.cos(ps) ** (T - 4)
    y = np.stack([np.broadcast_to(y0[:, None], ps.shape), ct[:, None] * np.sin(ps)], axis=-1).reshape(-1, 2)
    w = (tw[:, None] * pw).ravel()
    return math.sqrt(T) * y @ L.T, w / w.sum()


def _rim_betas(T: int, k: int, cuts: np.ndarray, v: float) -> tuple:
    """The beta where the pieces of the centre-only rule change shape (the integrand is not smooth in beta there): a cut
    c / sqrt(v beta) reaches the rim |z_t| = sqrt(T - 1) at beta = c^2 / (v (T - 1)); for k = 2 also a corner (a, b)
    / sqrt(v beta) of two cuts reaches the rim z^T Pi_FF^-1 z = T (Pi_FF^-1 = I + 1 1^T / (T - 2)) at beta = (a^2 +
    b^2 + (a + b)^2 / (T - 2)) / (v T)."""
    out = [c * c / (v * (T - 1)) for c in cuts if c != 0.0]
    if k == 2:
        out += [(a * a + b * b + (a + b) ** 2 / (T - 2)) / (v * T) for a in cuts for b in cuts if a or b]
    return tuple(sorted(set(out)))


def cut_beta_rule(samples: int, breaks: tuple = (), nodes: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """(beta_q, w_q) for E[f(beta)], beta = chi^2_{T-1} / T: :func:`meanfield.finite.spherebn.beta_rule`'s density
    s^(T-2) e^(-s^2) in s = sqrt(T beta / 2) on [0, sqrt((T - 1) / 2) + 9], Gauss-Legendre on pieces split at the
    given beta values (where f is not smooth) and around the density's mode, each piece graded at its ends (the
    breaks are endpoint singularities of the integrand).

    Example:
        >>> b, w = cut_beta_rule(8, (0.5,))
        >>> round(float(w @ b), 12), round(float(w @ (1 / b)), 10)
        (0.875, 1.6)
    """
    T = check_int("samples", samples, minimum=2)
    top = math.sqrt((T - 1) / 2) + 9.0
    inner = sorted(x for x in (math.sqrt(T * float(b) / 2) for b in breaks if float(b) > 0) if x < top)
    # graded pieces (the breaks are endpoint singularities), the density's bulk split around its mode
    mode = math.sqrt((T - 2) / 2)
    bulk = [x for x in (mode / 2, mode, mode + 1.5, mode + 3.5) if all(abs(x - y) > 0.05 for y in inner)]
    s, w = _pieces(np.array([[0.0, *sorted(inner + bulk), top]]), check_int("nodes", nodes, minimum=8), graded=True)
    s, w = s[0], w[0]
    logd = (T - 2) * np.log(s) - s * s
    w = w * np.exp(logd - logd.max())
    return 2 * s * s / T, w / w.sum()


class CutSphere(Sphere):
    """A :class:`meanfield.finite.spherebn.Sphere` (same V, P, conditional moments c, mean, expect) whose nodes of z_F
    are split where a coordinate of the unit's argument meets a kink.

    Full batch norm (``v`` None): the argument is z, the cuts are the kinks. Centre-only (``v`` = sigma_w^2 (K_tt -
    K_ts) below): the argument is sqrt(v beta) z; the nodes are a product rule over beta (:func:`cut_beta_rule`) and,
    per beta node, the sphere cut at kink / sqrt(v beta); :attr:`beta` holds each node's beta (all 1 for full).

    Example:
        >>> S = CutSphere(8, 2, (-1.0, 1.0))
        >>> round(float(S.w @ (S.z[:, 0] * S.z[:, 1])), 12)      # E z_0 z_1 = -1 / (T - 1)
        -0.142857142857
        >>> S1 = CutSphere(8, 1, (-1.0, 1.0))       # one coordinate's law: the same marginal of a hard tanh
        >>> bool(abs(S.mean(np.clip(S.z[:, 1], -1, 1) ** 2) - S1.mean(np.clip(S1.z[:, 0], -1, 1) ** 2)) < 1e-13)
        True
    """

    def __init__(self, samples: int, k: int, cuts: tuple, v: float | None = None, nodes: int = 32,
                 beta_nodes: int = 24) -> None:
        super().__init__(samples, k, nodes=4)
        T = self.T
        n = check_int("nodes", nodes, minimum=4)
        cut = np.array(sorted(float(c) for c in cuts))
        if v is None:
            z, w = _sphere_nodes(T, k, cut, n)
            beta = np.ones(len(w))
        else:
            if not v > 0:
                raise InvalidArgument("v", v, "a positive variance v = sigma_w^2 (K_tt - K_ts)")
            bq, bw = cut_beta_rule(T, _rim_betas(T, k, cut, v), beta_nodes)
            zs, ws, bs = [], [], []
            for b, q in zip(bq, bw):
                if q < NEGLIGIBLE and b > 1:      # the chi law's upper tail (the integrands grow like beta^2 there)
                    continue
                zb, wb = _sphere_nodes(T, k, cut / math.sqrt(v * b), n)
                keep = wb > NEGLIGIBLE            # the sphere's rim, where every integrand is bounded
                zs.append(zb[keep]), ws.append(q * wb[keep]), bs.append(np.full(int(keep.sum()), b))
            z, w, beta = np.concatenate(zs), np.concatenate(ws), np.concatenate(bs)
        keep = w > 0
        self.z, self.w, self.beta = z[keep], w[keep] / w[keep].sum(), beta[keep]
        free = T - 1 - k
        r2 = np.clip(T - (self.z * self.z).sum(1) - self.z.sum(1) ** 2 / (T - k), 0.0, None)   # clip: the rim only
        self.c = np.stack([np.ones_like(r2), r2 / free, r2 * r2 / (free * (free + 2))], axis=1)
