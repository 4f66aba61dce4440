"""E[f(z_F) p(z)] = sum_nodes w f(z_F) E[p(z) | z_F]: a batch-normalized unit's law, integrated without sampling.

A full batch norm on T samples maps the unit's centred pre-activations g ~ N(0, v Pi) (Pi = I - 1 1^T / T) to
z = g / sigma, sigma^2 = |g|^2 / T, uniform on the sphere |z|^2 = T in the complement of 1 and independent of
beta = sigma^2 / v ~ chi^2_{T-1} / T; a centre-only one leaves g = sqrt(v beta) z. The O(1/M) terms of
:mod:`meanfield.finite.hiddenbn` are expectations of phi(z_t) phi(z_s) or phi'(z_t) phi'(z_s) (one or two fixed
coordinates F = {t} or {t, s}) times polynomials of degree <= 4 in the other coordinates and powers of beta. Given
z_F, the other coordinates are z = c0 + r u: c0 the conditional mean (linear in z_F: -sum z_F / (T - |F|) off F), u
uniform on the unit sphere of the n = T - 1 - |F| dimensional subspace {w_F = 0, sum w = 0} (projector P),
r^2 = T - |z_F|^2 - (sum z_F)^2 / (T - |F|). So E[u u] = P / n, E[u^4] = (P P + P P + P P) / (n (n + 2)), odd moments
vanish, and E[p(z) | z_F] is exact (:meth:`Sphere.expect`). z_F has the density (1 - z_F^T Pi_FF^-1 z_F / T)^((T - 3 -
|F|) / 2) of a projection of the sphere; it is integrated by Gauss-Legendre rules in angles that split at the
rays z_t = 0 (relu's and its derivative's breaks), and beta (centre-only) on a Gauss-Legendre rule in sqrt(beta).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import InvalidArgument, check_int

__all__ = ["Sphere", "chi_moment", "beta_rule"]

_LETTERS = "abcd"


def chi_moment(samples: int, power: float) -> float:
    """E[beta^p] = Gamma((T - 1) / 2 + p) / Gamma((T - 1) / 2) (2 / T)^p, beta = chi^2_{T-1} / T.

    Example:
        >>> round(chi_moment(8, 1), 12), round(chi_moment(8, -1), 12)
        (0.875, 1.6)
    """
    T = check_int("samples", samples, minimum=2)
    h = (T - 1) / 2
    if h + power <= 0:
        raise InvalidArgument("power", power, f"a power above -(T - 1) / 2 = {-h}")
    return math.exp(math.lgamma(h + power) - math.lgamma(h)) * (2 / T) ** power


def beta_rule(samples: int, nodes: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(beta_q, w_q): a rule for E[f(beta)], beta = chi^2_{T-1} / T, Gauss-Legendre in s = sqrt(T beta / 2) on
    [0, sqrt((T - 1) / 2) + 9] with the density s^(T-2) e^(-s^2) (the tail beyond is below 1e-30 of the mass).

    Example:
        >>> b, w = beta_rule(8)
        >>> round(float(w @ b), 12), round(float(w @ (1 / b)), 10)
        (0.875, 1.6)
    """
    T = check_int("samples", samples, minimum=2)
    x, w = np.polynomial.legendre.leggauss(check_int("nodes", nodes, minimum=8))
    top = math.sqrt((T - 1) / 2) + 9.0
    s = (x + 1) * top / 2
    logd = (T - 2) * np.log(s) - s * s
    w = w * np.exp(logd - logd.max())
    return 2 * s * s / T, w / w.sum()


class Sphere:
    """Nodes of z_F (F = {0} or {0, 1}) and the exact conditional moments of the other coordinates of z.

    Attributes:
        T, k: samples and |F|.
        z: (nodes, k) values of z_F; w: (nodes,) weights (sum 1).
        V: (k, T): c0 = z @ V, the conditional mean of z; P: (T, T) the projector of the free sphere.
        c: (nodes, 3): 1, r^2 / n, r^4 / (n (n + 2)), the factors of the conditional moments of order 0, 2, 4.

    Example:
        >>> S = Sphere(8, 2)
        >>> round(float(S.w @ (S.z[:, 0] * S.z[:, 1])), 12)      # E z_0 z_1 = -1 / (T - 1)
        -0.142857142857
        >>> round(float(S.w @ S.expect(np.eye(8))), 12)         # E |z|^2 = T
        8.0
    """

    def __init__(self, samples: int, k: int, nodes: int = 40) -> None:
        T = check_int("samples", samples, minimum=4)
        if k not in (1, 2):
            raise InvalidArgument("k", k, "1 or 2 fixed coordinates")
        n = check_int("nodes", nodes, minimum=4)
        self.T, self.k = T, k
        g, gw = np.polynomial.legendre.leggauss(n)
        if k == 1:
            # z_0 = sqrt(T - 1) sin(theta), density cos(theta)^(T - 3) on each half (the break at 0)
            th = np.concatenate([(g - 1) * math.pi / 4, (g + 1) * math.pi / 4])
            w = np.concatenate([gw, gw]) * np.cos(th) ** (T - 3)
            z = (math.sqrt(T - 1) * np.sin(th))[:, None]
        else:
            # z_F = sqrt(T) L y, L L^T = Pi_FF, y = sin(phi) (cos, sin)(theta): density sin(phi) cos(phi)^(T - 4),
            # theta split at the rays z_0 = 0, z_1 = 0
            L = np.linalg.cholesky(np.eye(2) - 1.0 / T)
            cut = np.sort(np.mod([math.pi / 2, 3 * math.pi / 2, math.atan2(-L[1, 0], L[1, 1]),
                                  math.atan2(-L[1, 0], L[1, 1]) + math.pi], 2 * math.pi))
            arcs = np.append(cut, cut[0] + 2 * math.pi)
            th = np.concatenate([(g + 1) * (b - a) / 2 + a for a, b in zip(arcs[:-1], arcs[1:])])
            thw = np.concatenate([gw * (b - a) / 2 for a, b in zip(arcs[:-1], arcs[1:])])
            ph = (g + 1) * math.pi / 4
            phw = gw * np.sin(ph) * np.cos(ph) ** (T - 4)
            rho = np.sin(ph)
            y = np.stack([np.outer(rho, np.cos(th)), np.outer(rho, np.sin(th))], axis=-1).reshape(-1, 2)
            w = np.outer(phw, thw).ravel()
            z = math.sqrt(T) * y @ L.T
        self.z, self.w = z, w / w.sum()
        V = np.zeros((k, T))
        for i in range(k):
            V[i, i] = 1.0
            V[i, k:] = -1.0 / (T - k)
        self.V = V
        P = np.zeros((T, T))
        P[k:, k:] = np.eye(T - k) - 1.0 / (T - k)
        self.P = P
        free = T - 1 - k
        r2 = np.clip(T - (z * z).sum(1) - z.sum(1) ** 2 / (T - k), 0.0, None)   # clip: rounding at the rim only
        self.c = np.stack([np.ones_like(r2), r2 / free, r2 * r2 / (free * (free + 2))], axis=1)

    def mean(self, *arrays: np.ndarray) -> float:
        """sum_nodes w prod(arrays): the expectation of a product of per-node values."""
        out = self.w
        for a in arrays:
            out = out * a
        return float(out.sum())

    def expect(self, W: np.ndarray) -> np.ndarray:
        """E[W(z, ..., z) | z_F] per node, W of order 0..4 over [T]^order (exact: the moments of c0 + r u).

        Example:
            >>> S = Sphere(6, 1)
            >>> bool(np.allclose(S.expect(np.ones(6)), 0))           # 1.z = 0
            True
        """
        W = np.asarray(W, dtype=float)
        order = W.ndim
        if order > 4 or any(d != self.T for d in W.shape):
            raise InvalidArgument("W", W.shape, f"a tensor of order <= 4 over [{self.T}]")
        if order == 0:
            return np.full(len(self.w), float(W))
        out = np.zeros(len(self.w))
        slots = list(range(order))
        for m in range(order // 2 + 1):
            for pairs in _matchings(slots, m):
                paired = {i for p in pairs for i in p}
                singles = [i for i in slots if i not in paired]
                ops, subs = [W], [_LETTERS[:order]]
                for a, b in pairs:
                    ops.append(self.P)
                    subs.append(_LETTERS[a] + _LETTERS[b])
                for i, a in enumerate(singles):
                    ops.append(self.V)
                    subs.append("wxyz"[i] + _LETTERS[a])
                small = np.einsum(",".join(subs) + "->" + "wxyz"[: len(singles)], *ops)
                # contract the small (k^singles) tensor with z_F at every node
                ns = len(singles)
                val = (np.full(len(self.w), float(small)) if ns == 0 else
                       np.einsum(",".join(["n" + c for c in "wxyz"[:ns]] + ["wxyz"[:ns]]) + "->n",
                                 *([self.z] * ns), small))
                out += self.c[:, m] * val
        return out


def _matchings(slots: list, m: int):
    """All sets of m disjoint pairs of the slots."""
    if m == 0:
        yield ()
        return
    for first in itertools.combinations(slots, 2):
        rest = [s for s in slots if s > first[0] and s not in first]
        for tail in _matchings(rest, m - 1):
            if not tail or tail[0][0] > first[0]:
                yield (first,) + tail
