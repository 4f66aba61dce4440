"""Exchangeable tensors over T samples: their values on the patterns of equal indices, contractions O(1) in T.

With i.i.d. inputs every moment of the units of a layer is exchangeable: X[i_1, ..., i_k] depends only on which of
the indices coincide (a set partition of the k slots; 2 patterns for k = 2, 15 for k = 4, the Bell number in general).
:class:`Exchangeable` stores those values (canonical labels, first appearance numbered 0, 1, ..., as
:func:`meanfield.finite.fourworld.class_tensor`), and :func:`contract` evaluates any einsum of such tensors over T
samples exactly by summing over the set partitions of its letters: a partition with b blocks, b_out of them on the
output letters, stands for (T - b_out)(T - b_out - 1)...(T - b + 1) index tuples (the summed letters' new blocks take
distinct values away from the output's). The cost depends on the number of letters (Bell(8) = 4140 partitions), not
on T.

:func:`node_class_moments` takes the class values of moments E[F(i_1, ..., i_k)] over a rule's nodes, each F a
polynomial in per-sample fields (phi(z_i), phi'(z_i), z_i, ...) and Kronecker deltas (:class:`Poly`): per node the sum
over the index tuples of a pattern with b distinct samples is Moebius inversion on the partitions of its blocks,
sum_{distinct} prod_B h_B(i_B) = sum_sigma mu(sigma) prod_{C in sigma} sum_i prod_{B in C} h_B(i) (mu(sigma) =
prod_C (-1)^{|C| - 1} (|C| - 1)!), so every class value is a combination of products of per-node power sums: O(T) per
node, and equal (to rounding) to the average over the pattern's index tuples of the dense T^k moment on the same nodes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import InvalidArgument, check_int
from .fourpoint import set_partitions

__all__ = ["Exchangeable", "contract", "projector", "identity", "pattern_of", "Poly", "node_class_moments"]


def pattern_of(index: Iterable) -> tuple:
    """The canonical labels of an index tuple (first appearance numbered 0, 1, ...).

    Example:
        >>> pattern_of((5, 2, 5, 7))
        (0, 1, 0, 2)
    """
    seen: dict = {}
    return tuple(seen.setdefault(x, len(seen)) for x in index)


@functools.lru_cache(maxsize=16)
def _patterns(order: int) -> tuple:
    return set_partitions(order) if order else ((),)


@functools.lru_cache(maxsize=16)
def _pattern_index(order: int) -> dict:
    return {p: i for i, p in enumerate(_patterns(order))}


def _falling(T: int, start: int, stop: int) -> float:
    """(T - start)(T - start - 1)...(T - stop + 1): the tuples of stop - start new distinct values."""
    return float(math.prod(T - i for i in range(start, stop)))


@dataclass(frozen=True, eq=False)
class Exchangeable:
    """X[i_1, ..., i_k] over any number of samples, invariant under relabelling the samples: ``values`` on the set
    partitions of the k slots (:func:`meanfield.finite.fourpoint.set_partitions`' order).

    Example:
        >>> X = Exchangeable.from_function(2, lambda lab: 1.0 if lab == (0, 0) else 0.25)
        >>> X.at((3, 3)), X.at((1, 4)), X.dense(3).tolist()[0]
        (1.0, 0.25, [1.0, 0.25, 0.25])
    """

    order: int
    values: np.ndarray

    def __post_init__(self) -> None:
        if np.shape(self.values) != (len(_patterns(self.order)),):
            raise InvalidArgument("values", np.shape(self.values),
                                  f"one value per pattern of {self.order} slots ({len(_patterns(self.order))})")

    @staticmethod
    def from_function(order: int, value: Callable) -> "Exchangeable":
        """The tensor whose value on each pattern (canonical labels) is ``value(labels)``."""
        order = check_int("order", order, minimum=0, maximum=10)
        return Exchangeable(order, np.array([float(value(p)) for p in _patterns(order)]))

    @staticmethod
    def from_dense(array: Any) -> "Exchangeable":
        """Each pattern's average over its index tuples of a dense T^k array (exact for an exchangeable one).

        Example:
            >>> X = Exchangeable.from_function(4, lambda lab: float(len(set(lab))))
            >>> bool(np.allclose(Exchangeable.from_dense(X.dense(5)).values, X.values))
            True
        """
        a = np.asarray(array, dtype=float)
        k, T = a.ndim, a.shape[0] if a.ndim else 1
        if a.shape != (T,) * k:
            raise InvalidArgument("array", a.shape, "a T x ... x T array")
        codes = _dense_codes(T, k)
        sums = np.bincount(codes, weights=a.ravel(), minlength=len(_patterns(k)))
        counts = np.bincount(codes, minlength=len(_patterns(k)))
        return Exchangeable(k, np.where(counts > 0, sums / np.maximum(counts, 1), 0.0))

    def at(self, index: Iterable) -> float:
        """The value at an index tuple."""
        return float(self.values[_pattern_index(self.order)[pattern_of(index)]])

    def dense(self, samples: int) -> np.ndarray:
        """The T^k array (for checks at small T)."""
        T = check_int("samples", samples, minimum=1)
        return self.values[_dense_codes(T, self.order)].reshape((T,) * self.order)

    def permuted(self, slots: tuple) -> "Exchangeable":
        """Y[i_0, ..., i_{k-1}] = X[i_{slots^-1}...]: Y's slot j is X's slot ``slots[j]`` (np.transpose's axes)."""
        if sorted(slots) != list(range(self.order)):
            raise InvalidArgument("slots", slots, f"a permutation of 0..{self.order - 1}")
        inv = np.argsort(slots)
        index = _pattern_index(self.order)
        return Exchangeable(self.order, np.array([self.values[index[pattern_of(tuple(p[i] for i in inv))]]
                                                  for p in _patterns(self.order)]))

    def any(self) -> bool:
        return bool(np.any(self.values != 0))

    def __add__(self, other: "Exchangeable") -> "Exchangeable":
        _same_order(self, other)
        return Exchangeable(self.order, self.values + other.values)

    def __sub__(self, other: "Exchangeable") -> "Exchangeable":
        _same_order(self, other)
        return Exchangeable(self.order, self.values - other.values)

    def __mul__(self, scalar: float) -> "Exchangeable":
        return Exchangeable(self.order, self.values * float(scalar))

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> "Exchangeable":
        return Exchangeable(self.order, self.values / float(scalar))


def _same_order(a: Exchangeable, b: Any) -> None:
    if not isinstance(b, Exchangeable) or b.order != a.order:
        raise InvalidArgument("other", b, f"an Exchangeable of order {a.order}")


@functools.lru_cache(maxsize=8)
def _dense_codes(T: int, k: int) -> np.ndarray:
    """The pattern index of every one of the T^k index tuples (row-major)."""
    if not k:
        return np.zeros(1, dtype=np.int64)
    idx = np.indices((T,) * k).reshape(k, -1)
    # canonical labels slot by slot: the label of the first earlier slot with the same value, else the next new one
    labels = np.zeros_like(idx)
    count = np.zeros(idx.shape[1], dtype=np.int64)
    for j in range(k):
        lab = count.copy()
        for i in range(j - 1, -1, -1):
            lab = np.where(idx[i] == idx[j], labels[i], lab)
        labels[j] = lab
        count = count + (lab == count)
    mult = (k + 1) ** np.arange(k)
    lookup = np.zeros((k + 1) ** k, dtype=np.int64)
    for p, i in _pattern_index(k).items():
        lookup[int(np.dot(p, mult))] = i
    return lookup[(labels * mult[:, None]).sum(0)]


def projector(samples: int) -> Exchangeable:
    """Pi = I - 1 1^T / T as an exchangeable matrix.

    Example:
        >>> projector(4).values.tolist()
        [0.75, -0.25]
    """
    T = check_int("samples", samples, minimum=1)
    return Exchangeable(2, np.array([1.0 - 1.0 / T, -1.0 / T]))


def identity() -> Exchangeable:
    """The identity matrix as an exchangeable matrix (any T)."""
    return Exchangeable(2, np.array([1.0, 0.0]))


@functools.lru_cache(maxsize=64)
def _plan(spec: str) -> tuple:
    """For an einsum spec: the letters' partitions as (output pattern index, b_out, b, per-operand pattern indices)."""
    ins, _, out = spec.replace(" ", "").partition("->")
    terms = ins.split(",")
    letters = list(out) + [c for c in dict.fromkeys("".join(terms)) if c not in out]
    pos = {c: i for i, c in enumerate(letters)}
    n_out = len(out)
    rows = []
    for p in _patterns(len(letters)):
        b = max(p) + 1
        b_out = max(p[:n_out]) + 1 if n_out else 0
        ops = tuple(_pattern_index(len(t))[pattern_of(p[pos[c]] for c in t)] for t in terms)
        rows.append((_pattern_index(n_out)[p[:n_out]] if n_out else 0, b_out, b) + ops)
    table = np.array(rows, dtype=np.int64)
    return n_out, tuple(len(t) for t in terms), table


def contract(samples: int, spec: str, *operands: Exchangeable) -> Any:
    """The einsum ``spec`` of exchangeable tensors over T samples: an :class:`Exchangeable` (or a float for a scalar
    output), exact for every T (the sum over the letters' set partitions, each with its number of index tuples).

    Example:
        >>> T = 5
        >>> Pi = projector(T)
        >>> float(contract(T, "ab,ab->", Pi, Pi))      # tr(Pi Pi) = T - 1
        4.0
        >>> X = Exchangeable.from_function(4, lambda lab: float(len(set(lab)) ** 2))
        >>> dense = np.einsum("ab,abcd,ce->de", Pi.dense(T), X.dense(T), Pi.dense(T))
        >>> bool(np.allclose(contract(T, "ab,abcd,ce->de", Pi, X, Pi).dense(T), dense))
        True
    """
    T = check_int("samples", samples, minimum=1)
    n_out, orders, table = _plan(spec)
    if len(operands) != len(orders) or any(not isinstance(o, Exchangeable) or o.order != k
                                           for o, k in zip(operands, orders)):
        raise InvalidArgument("operands", [getattr(o, "order", o) for o in operands],
                              f"Exchangeable tensors of orders {orders} for {spec!r}")
    b_out, b = table[:, 1], table[:, 2]
    top = int(b.max()) if len(b) else 0
    falling = np.ones((top + 1, top + 1))
    for s in range(top + 1):
        for e in range(s, top + 1):
            falling[s, e] = _falling(T, s, e)
    weight = falling[b_out, b]
    for o, col in zip(operands, table[:, 3:].T):
        weight = weight * o.values[col]
    if not n_out:
        return float(weight.sum())
    return Exchangeable(n_out, np.bincount(table[:, 0], weights=weight, minlength=len(_patterns(n_out))))


# -- class values of moments over a rule's nodes -------------------------------------------------------------------

@dataclass(frozen=True)
class Poly:
    """A polynomial F(i_1, ..., i_k) in per-sample fields and Kronecker deltas: ``terms`` = ((coef, deltas,
    exponents), ...), deltas a tuple of slot pairs (i_a == i_b), exponents per slot a tuple over the fields.

    Example:
        >>> f = Poly.field(2, 0, 0, 2)           # f(i_0) over 2 slots, 2 fields
        >>> g = Poly.field(2, 1, 1, 2)           # the second field at slot 1
        >>> len((f * g + Poly.delta(2, 0, 1, 2)).terms)
        2
    """

    slots: int
    fields: int
    terms: tuple

    @staticmethod
    def field(slots: int, slot: int, field: int, fields: int, power: int = 1) -> "Poly":
        exps = tuple(tuple(power if (s == slot and f == field) else 0 for f in range(fields)) for s in range(slots))
        return Poly(slots, fields, ((1.0, (), exps),))

    @staticmethod
    def const(slots: int, value: float, fields: int) -> "Poly":
        return Poly(slots, fields, ((float(value), (), ((0,) * fields,) * slots),))

    @staticmethod
    def delta(slots: int, a: int, b: int, fields: int) -> "Poly":
        return Poly(slots, fields, ((1.0, ((a, b),), ((0,) * fields,) * slots),))

    def __add__(self, other: "Poly") -> "Poly":
        return Poly(self.slots, self.fields, self.terms + other.terms)

    def __mul__(self, other: Any) -> "Poly":
        if not isinstance(other, Poly):
            return Poly(self.slots, self.fields, tuple((c * float(other), d, e) for c, d, e in self.terms))
        out = []
        for c1, d1, e1 in self.terms:
            for c2, d2, e2 in other.terms:
                out.append((c1 * c2, d1 + d2, tuple(tuple(x + y for x, y in zip(a, b)) for a, b in zip(e1, e2))))
        return Poly(self.slots, self.fields, tuple(out))

    __rmul__ = __mul__

    def relabel(self, slots: int, where: tuple) -> "Poly":
        """The same polynomial on ``slots`` slots, its slot j placed at slot ``where[j]`` (the others constant)."""
        zero = (0,) * self.fields
        out = []
        for c, d, e in self.terms:
            new = [zero] * slots
            for j, w in enumerate(where):
                new[w] = tuple(x + y for x, y in zip(new[w], e[j]))
            out.append((c, tuple((where[a], where[b]) for a, b in d), tuple(new)))
        return Poly(slots, self.fields, tuple(out))


def _moebius(blocks: int) -> tuple:
    """((mu, partition), ...) over the set partitions of ``blocks`` blocks."""
    out = []
    for p in _patterns(blocks):
        sizes = np.bincount(p)
        out.append((float(math.prod((-1) ** (s - 1) * math.factorial(s - 1) for s in sizes)), p))
    return tuple(out)


def _class_plan(poly: Poly, T: int) -> list:
    """Per pattern of the polynomial's slots: {key: coefficient}, key the sorted exponent tuples of the power sums
    whose per-node product enters (Moebius inversion), divided by the pattern's number of index tuples."""
    plans = []
    for p in _patterns(poly.slots):
        b = max(p) + 1
        count = _falling(T, 0, b)
        plan: dict = {}
        if count > 0:
            for coef, deltas, exps in poly.terms:
                if any(p[a] != p[c] for a, c in deltas):
                    continue
                block = [[0] * poly.fields for _ in range(b)]
                for s, e in enumerate(exps):
                    block[p[s]] = [x + y for x, y in zip(block[p[s]], e)]
                for mu, sigma in _moebius(b):
                    merged = [[0] * poly.fields for _ in range(max(sigma) + 1)]
                    for j, c in enumerate(sigma):
                        merged[c] = [x + y for x, y in zip(merged[c], block[j])]
                    key = tuple(sorted(tuple(m) for m in merged))
                    plan[key] = plan.get(key, 0.0) + coef * mu / count
        plans.append(plan)
    return plans


def node_class_moments(samples: int, polys: dict, chunks: Iterable) -> dict:
    """{name: Exchangeable}: the class values of E[F(i_1, ..., i_k)] over a rule's nodes (equal weights) for each
    polynomial F of ``polys``, from the nodes' per-sample fields.

    Args:
        samples: T.
        polys: name -> :class:`Poly` (all over the same fields).
        chunks: an iterable of arrays (fields, nodes, T), the fields of a chunk of the rule's nodes.

    Returns:
        name -> :class:`Exchangeable` of the polynomial's order.

    Example:
        >>> T, rng = 4, np.random.default_rng(0)
        >>> z = rng.normal(size=(1, 50, T))
        >>> F = Poly.field(2, 0, 0, 1) * Poly.field(2, 1, 0, 1)            # z_t z_s
        >>> m = node_class_moments(T, {"zz": F}, [z])["zz"]
        >>> dense = np.einsum("nt,ns->ts", z[0], z[0]) / 50
        >>> bool(np.allclose(m.values, Exchangeable.from_dense(dense).values))
        True
    """
    T = check_int("samples", samples, minimum=1)
    plans = {name: _class_plan(poly, T) for name, poly in polys.items()}
    keys = {key for plan in plans.values() for pat in plan for key in pat}
    sums = dict.fromkeys(keys, 0.0)
    nodes = 0
    for fields in chunks:
        fields = np.asarray(fields, dtype=float)
        nodes += fields.shape[1]
        powers: dict = {}

        def power(f: int, k: int) -> np.ndarray:
            if (f, k) not in powers:
                powers[(f, k)] = fields[f] if k == 1 else power(f, k - 1) * fields[f]
            return powers[(f, k)]
        psum: dict = {}

        def p(e: tuple) -> Any:
            if e not in psum:
                nz = [(f, k) for f, k in enumerate(e) if k]
                if not nz:
                    psum[e] = float(T)
                else:
                    prod = power(*nz[0])
                    for fk in nz[1:]:
                        prod = prod * power(*fk)
                    psum[e] = prod.sum(1)
            return psum[e]
        for key in keys:
            prod = np.ones(fields.shape[1])
            for e in key:
                prod = prod * p(e)
            sums[key] += float(prod.sum())
    if not nodes:
        raise InvalidArgument("chunks", chunks, "at least one node")
    out = {}
    for name, plan in plans.items():
        vals = np.array([sum(c * sums[k] for k, c in pat.items()) / nodes for pat in plan])
        out[name] = Exchangeable(polys[name].slots, vals)
    return out
