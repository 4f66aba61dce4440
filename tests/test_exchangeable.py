"""Exchangeable tensors (meanfield.finite.exchangeable) and bnpair's moments by pattern classes.

The contractions are exact sums over the letters' set partitions: they must equal np.einsum on the dense tensors to
rounding for every spec bnpair uses. bnpair's unit moments are class values computed per node from power sums: they
must equal the class averages of the dense T^2 x T^2 moment matrices accumulated on the same nodes (what bnpair held
before, T <= 32) to rounding. No random numbers enter the library; the random tensors here have a fixed seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from meanfield import InvalidArgument, Network
from meanfield.finite import bnpair
from meanfield.finite.exchangeable import Exchangeable, Poly, contract, identity, node_class_moments, projector
from meanfield.finite.hiddenbn import cross_unit_spread
from meanfield.finite.spherebn import chi_moment
from meanfield.integrals.quadrature import Unit

# every contraction bnpair performs (and a few more shapes)
SPECS = ["ta,sb,abcd,tc,sd->", "ta,sb,ab,tc,sd,cd->", "ta,sb,aibj->tisj", "taty->ay", "ab,cd,acbd->",
         "tisj,skto,ikjo->", "ra,sb,abij->rsij", "rsij,ijkl,rskl->", "ab,ab->", "ab,abcd,cd->",
         "ts,ab,tiaj,skbl,ikjl->", "ab,abij->ij", "ij,ijkl,kl->", "abij,ijkl,cdkl->abcd", "ar,uvrs,sb->uvab",
         "atri,ijrq,csqj->atcs", "aicj,bkdl,ikjl->abcd", "ttss->ts", "ac,bd,abcd->abcd", "ab,cd->abcd"]


def _random(order: int, rng: np.random.Generator) -> Exchangeable:
    return Exchangeable.from_function(order, lambda lab: rng.normal())


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("T", [3, 5])
def test_contract_matches_einsum(spec, T):
    rng = np.random.default_rng(20261207)
    ins, _, out = spec.partition("->")
    ops = [_random(len(term), rng) for term in ins.split(",")]
    dense = np.einsum(spec, *(o.dense(T) for o in ops))
    got = contract(T, spec, *ops)
    got = got.dense(T) if out else got
    assert np.allclose(got, dense, rtol=1e-12, atol=1e-12 * np.abs(dense).max())


def test_permuted_and_from_dense():
    rng = np.random.default_rng(7)
    X = _random(4, rng)
    for slots in [(0, 2, 1, 3), (2, 3, 0, 1), (3, 1, 0, 2)]:
        assert np.allclose(X.permuted(slots).dense(5), np.transpose(X.dense(5), slots), rtol=0, atol=1e-15)
    assert np.allclose(Exchangeable.from_dense(X.dense(6)).values, X.values, rtol=0, atol=1e-14)
    assert contract(7, "ab,ab->", projector(7), identity()) == pytest.approx(6.0, rel=1e-14)
    with pytest.raises(InvalidArgument):
        contract(5, "ab,ab->", projector(5), X)
    with pytest.raises(InvalidArgument):
        Exchangeable(2, np.zeros(3))


def test_node_class_moments_are_class_averages():
    rng = np.random.default_rng(11)
    T, n = 6, 40
    fields = rng.normal(size=(2, n, T))
    fld = lambda s, f: Poly.field(4, s, f, 2)  # noqa: E731
    F = fld(0, 0) * fld(1, 1) * (Poly.delta(4, 1, 2, 2) + Poly.const(4, -0.5, 2) * fld(2, 0) * fld(2, 1)) * fld(3, 0)
    got = node_class_moments(T, {"F": F}, [fields[:, :25], fields[:, 25:]])["F"]
    a, b = fields
    dense = (np.einsum("nt,ni,is,nj->tisj", a, b, np.eye(T), a)
             - 0.5 * np.einsum("nt,ni,ns,ns,nj->tisj", a, b, a, b, a)) / n
    assert np.allclose(got.values, Exchangeable.from_dense(dense).values, rtol=1e-12, atol=1e-14)


def _dense_bn_moments(net: Network, T: int, points: int, v: float) -> dict:
    """The dense T^2 x T^2 moment matrices of the normalized unit on the rule's nodes (bnpair's accumulation before
    the class reduction)."""
    center = net.norms[0].center_only
    unit = Unit.of(net.phi(net.depth - 1))
    acc: dict = {}
    nodes = 0
    for f, d, z in bn_fields(T, v, center, unit, points):
        nodes += len(z)
        R = np.broadcast_to(np.eye(T) - 1.0 / T, (len(z), T, T))
        if not center:
            R = R - z[:, :, None] * z[:, None, :] / T
        p = d[:, :, None] * R
        k, x, w = (f[:, :, None] * f[:, None, :]), p * d[:, None, :], z[:, :, None] * z[:, None, :]
        m = len(z)
        for name, (a, b) in dict(Ekk=(k, k), Ekx=(k, x), Exx=(x, x), U=(p, p), Kw=(k, w), Xw=(x, w)).items():
            acc[name] = acc.get(name, 0) + a.reshape(m, -1).T @ b.reshape(m, -1)
        acc["Ek"] = acc.get("Ek", 0) + k.sum(0)
        acc["Ex"] = acc.get("Ex", 0) + x.sum(0)
    return {key: val / nodes for key, val in acc.items()}


def bn_fields(T, v, center, unit, points):
    for chunk in bnpair.bn_unit_fields(T, v, center, unit, points):
        yield chunk[0], chunk[1], chunk[2]


@pytest.mark.parametrize("T,points", [(6, 2**12), (8, 2**12), (16, 2**10), (32, 2**7)])
@pytest.mark.parametrize("act,norm", [("tanh", "batch:2"), ("relu", "batch:2"), ("relu", "batch-center:2")])
def test_unit_moments_equal_dense_class_averages(T, points, act, norm):
    # the class values equal the class averages of the dense matrices on the same nodes to rounding: the reduction
    # is exact (only the number of nodes is cut here, for time)
    net = Network(3, act, 2.0, 0.1, outputs=2, norms=[norm])
    u, v, _, _ = bnpair._bn_moments(net, 64, T, points)
    dense = _dense_bn_moments(net, T, points, v)
    for name in ("Ek", "Ex", "Ekk", "Ekx", "Exx"):
        ref = Exchangeable.from_dense(dense[name].reshape((T,) * (2 if name in ("Ek", "Ex") else 4)))
        assert np.allclose(getattr(u, name).values, ref.values, rtol=1e-11, atol=1e-13), name
    lam2 = 1.0 if net.norms[0].center_only else chi_moment(T, -1) / v      # U carries the unit's 1 / sigma^2
    Uref = Exchangeable.from_dense(dense["U"].reshape((T,) * 4))
    assert np.allclose(u.U.values, lam2 * Uref.values, rtol=1e-11, atol=1e-13)


def test_spread_classes_do_not_depend_on_T():
    for net in (Network(3, "tanh", 2.0, 0.1, norms=["batch:2"]), Network(4, "relu", 2.0, 0.1, norms=["batch:3"])):
        S = bnpair.spread_classes(net, 64)
        for T in (5, 7):
            dense = cross_unit_spread(net, 64, T)
            assert np.allclose(S.dense(T), dense, rtol=1e-13, atol=1e-13 * np.abs(dense).max())


@pytest.mark.parametrize("T", [33, 64, 256])
def test_large_T_parts(T):
    # above the old limit: finite, and the unit's entry variances scale like T^2 / M (relative T / M of s's mean part)
    net = Network(3, "tanh", 2.0, 0.1, outputs=2, norms=["batch:2"])
    same, below, cross = bnpair.projected_entry_parts(net, 64, T, points=2**10)
    assert all(np.isfinite([same, below, cross])) and same > 0 and cross > 0


def test_helmert_basis_above_the_lapack_range():
    # T > MAX_SAMPLES: Helmert's basis, orthonormal and orthogonal to 1; the nodes lie on the sphere |z|^2 = T in the
    # complement of 1 (full), or are g = sqrt(v) y (centre-only)
    T = bnpair.MAX_SAMPLES + 8
    Ht = bnpair._helmert(np.eye(T - 1))
    assert np.allclose(Ht @ Ht.T, np.eye(T - 1), atol=1e-13) and np.allclose(Ht.sum(1), 0, atol=1e-13)
    unit = Unit.of(Network(2, "tanh", 2.0, 0.1).phi(1))
    z = np.concatenate([c[2] for c in bnpair.bn_unit_fields(T, 1.5, False, unit, points=256)])
    assert np.allclose((z * z).sum(1), T) and np.allclose(z.sum(1), 0, atol=1e-12)
    g = np.concatenate([c[2] for c in bnpair.bn_unit_fields(T, 1.5, True, unit, points=256)])
    assert np.allclose(g.sum(1), 0, atol=1e-12) and len(g) == 512


@pytest.mark.parametrize("T", [2048, 100000])
def test_contract_keeps_its_precision_at_large_samples(T):
    # the partition sum's terms grow like T^b and cancel where a projector meets a constant (the hidden batch norm's
    # contractions at T = 2048): what is left is the rounding of the pattern values, 1e-16 of the T^2 scale
    Pi = projector(T)
    ones = Exchangeable.from_function(4, lambda lab: 1.0)
    assert abs(contract(T, "ab,bc,cd,da->", Pi, Pi, Pi, Pi) - (T - 1)) <= 1e-12 * T
    assert abs(contract(T, "ab,cd,abcd->", Pi, Pi, ones)) <= 1e-12 * T**2
