"""A batch-normalized unit's sphere expectations of exchangeable tensors, O(1) in T: samples 0 and 1 pinned.

:mod:`meanfield.finite.bnstep` conditions one normalized unit on z_F, F = {0} or {0, 1} (:class:`meanfield.finite.
spherebn.Sphere`), and contracts the world's exchangeable four-sample tensors with the sphere's conditional moments
(P, the projector of the free coordinates, and V, their conditional mean) and with rows of Pi. Every such object is
invariant under the permutations of the samples that fix 0 and 1: it is held here as an
:class:`meanfield.finite.exchangeable.Exchangeable` of order 2 + r whose first two slots are the pinned samples
(read at the pattern where they differ), so every contraction is :func:`meanfield.finite.exchangeable.contract`'s,
exact and O(1) in T. A representative index tuple of such a tensor numbers the samples by their canonical labels (0,
1 the pins, 2, 3 distinct others), so its values are read off the first four coordinates of a dense one.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from ..errors import InvalidArgument
from .exchangeable import Exchangeable, contract

__all__ = ["pinned", "embed", "pinned_at", "row", "sphere_expect", "sandwich", "mom1_at", "mom2_at", "outer_r_at",
           "REP"]

REP = 4     # representative samples: the two pins and two others (enough for tensors of order 2 + 2)
_LETTERS = "abcdef"


def pinned(order: int, value: Callable) -> Exchangeable:
    """The tensor over ``order`` slots, invariant under the permutations fixing samples 0 and 1, whose value at a
    representative index tuple (samples numbered by their canonical labels with the pins first) is ``value(index)``.

    Example:
        >>> X = pinned(1, lambda i: float(i[0] == 0) - 0.25)          # row 0 of Pi for T = 4
        >>> pinned_at(X, (0,)), pinned_at(X, (2,))
        (0.75, -0.25)
    """
    return Exchangeable.from_function(2 + order, lambda lab: float(value(lab[2:])) if lab[:2] == (0, 1) else 0.0)


def embed(X: Exchangeable) -> Exchangeable:
    """A fully exchangeable tensor in the pinned form (its value does not depend on the pins)."""
    return Exchangeable.from_function(2 + X.order, lambda lab: X.at(lab[2:]))


def pinned_at(X: Exchangeable, index: tuple) -> float:
    """The value of a pinned tensor at a representative index tuple."""
    return X.at((0, 1) + tuple(index))


def row(samples: int, t: int) -> Exchangeable:
    """Row t (a pin, 0 or 1) of Pi = I - 1 1^T / T."""
    return pinned(1, lambda i: float(i[0] == t) - 1.0 / samples)


def _value(T: int, spec: str, *operands: Exchangeable) -> float:
    """A full contraction over the free letters of pinned tensors (spec's output ``xy``)."""
    return contract(T, spec, *operands).at((0, 1))


def _sphere_parts(T: int, k: int) -> tuple:
    """(P, V): the free coordinates' projector P (zero on F) and the rows V[w] of their conditional mean's map."""
    P = pinned(2, lambda ij: 0.0 if min(ij) < k else float(ij[0] == ij[1]) - 1.0 / (T - k))
    V = [pinned(1, lambda i, w=w: float(i[0] == w) if i[0] < k else -1.0 / (T - k)) for w in range(k)]
    return P, V


def sphere_expect(S: Any, X: Exchangeable) -> np.ndarray:
    """Per node E[X(z, ..., z) | z_F] of a pinned tensor X of order 2 + r (r <= 4) on the sphere S: exactly
    S.expect of its dense form (the moments of c0 + r u, the same matchings), each contraction O(1) in T.

    Example:
        >>> from meanfield.finite.spherebn import Sphere
        >>> S = Sphere(7, 2)
        >>> X = Exchangeable.from_function(4, lambda lab: 1.0 + len(set(lab)) + lab[1])
        >>> bool(np.allclose(sphere_expect(S, embed(X)), S.expect(X.dense(7)), rtol=1e-12, atol=1e-12))
        True
    """
    T, k = S.T, S.k
    r = X.order - 2
    if not 0 <= r <= 4:
        raise InvalidArgument("X", X.order, "a pinned tensor of order 2 + r, r <= 4")
    P, V = _sphere_parts(T, k)
    out = np.zeros(len(S.w))
    pairs_all = list(itertools.combinations(range(r), 2))
    for m in range(r // 2 + 1):
        for pairs in itertools.combinations(pairs_all, m):
            paired = [i for p in pairs for i in p]
            if len(set(paired)) != 2 * m:
                continue
            singles = [i for i in range(r) if i not in paired]
            ns = len(singles)
            head = ["xy" + _LETTERS[:r]] + ["xy" + _LETTERS[a] + _LETTERS[b] for a, b in pairs]
            spec = ",".join(head + ["xy" + _LETTERS[c] for c in singles]) + "->xy"
            small = np.empty((k,) * ns)
            for ws in itertools.product(range(k), repeat=ns):
                small[ws] = _value(T, spec, X, *([P] * m), *(V[w] for w in ws))
            if ns == 0:
                val = np.full(len(S.w), float(small))
            else:
                val = np.einsum(",".join(["n" + c for c in "wxyz"[:ns]] + ["wxyz"[:ns]]) + "->n",
                                *([S.z] * ns), small)
            out += S.c[:, m] * val
    return out


def sandwich(law: Any, W: Exchangeable) -> np.ndarray:
    """Per node E[sum_uv R_tu R_vs W_uv...(z, ..., z) | z_F] for a pinned W of order 2 + 2 + e (e <= 2 free slots on
    z), R = Pi - kappa z z^T / T: :class:`meanfield.finite.bnstep.UnitLaw`'s sandwich of W's dense form.

    Example:
        >>> from meanfield.finite.bnstep import UnitLaw
        >>> law, T = UnitLaw(7, 2, False, 1.3), 7
        >>> X = Exchangeable.from_function(4, lambda lab: 1.0 + len(set(lab)) + lab[2] * lab[3])
        >>> bool(np.allclose(sandwich(law, embed(X)), law.sandwich(X.dense(T)), rtol=1e-12, atol=1e-12))
        True
    """
    S, T = law.S, law.T
    e = W.order - 4
    rest = _LETTERS[2: 2 + e]
    rt, rs = row(T, law.t), row(T, law.s)
    both = contract(T, f"xyab{rest},xya,xyb->xy{rest}", W, rt, rs)
    out = sphere_expect(S, both)
    if law.kappa:
        left = contract(T, f"xyab{rest},xya->xyb{rest}", W, rt)       # R_tu's Pi part, slot v left on z
        right = contract(T, f"xyab{rest},xyb->xya{rest}", W, rs)
        out = (out - law.xs / T * sphere_expect(S, left) - law.xt / T * sphere_expect(S, right)
               + law.xt * law.xs / T**2 * sphere_expect(S, W))
    return out


def _c0(S: Any) -> np.ndarray:
    """The conditional mean of z at the representative samples, per node."""
    return S.z @ S.V[:, :REP]


def mom1_at(law: Any, f: np.ndarray) -> np.ndarray:
    """E[f z_i] at the representative samples i (f per node): UnitLaw.mom1's first REP entries."""
    return (law.S.w * f) @ _c0(law.S)


def mom2_at(law: Any, f: np.ndarray) -> np.ndarray:
    """E[f z_i z_j] at the representative samples: UnitLaw.mom2's leading REP x REP block."""
    S = law.S
    c0 = _c0(S)
    return np.einsum("n,ni,nj->ij", S.w * f, c0, c0) + float((S.w * f * S.c[:, 1]).sum()) * S.P[:REP, :REP]


def outer_r_at(law: Any, f: np.ndarray) -> np.ndarray:
    """E[f R_ti R_js] at the representative samples: UnitLaw.outer_R's leading REP x REP block."""
    T = law.T
    pt, ps = law.Pi[law.t, :REP], law.Pi[law.s, :REP]
    out = law.S.mean(f) * np.outer(pt, ps)
    if law.kappa:
        out = (out - np.outer(pt, mom1_at(law, f * law.xs)) / T - np.outer(mom1_at(law, f * law.xt), ps) / T
               + mom2_at(law, f * law.xt * law.xs) / T**2)
    return out
