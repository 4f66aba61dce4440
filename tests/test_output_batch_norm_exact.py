"""The coupling terms of a full batch norm on the output (meanfield.finite.normalized, 3. (a)-(c)) in closed form.

Three checks of the exact evaluation (``method="exact"``, the default):

* against an independent deterministic evaluation written here: for each eigen-direction of the covariance of the
  realized kernel and NTK average (dK, dN) of the last hidden layer, the exact E[tr G] and E||G||_F^2 under
  g ~ N(0, Sigma) for the perturbed (K, N), by the Laplace representation 1/|g|^(2k) = int t^(k-1) e^(-t|g|^2) dt
  / (k-1)! (one-dimensional integrals, trapezoid in log t, exponentially convergent), and a five-point second
  derivative along the direction; the Stein term (c) with the explicit T^4 tensor. Nothing random; the only
  error is the stencil's O(h^4) (measured 1e-10 to 9e-9 relative at h = 0.05, tanh and relu, L = 2, 3, T = 8 to
  16), so the tolerance is 1e-7 relative;
* against the Monte Carlo it replaces (``method="monte-carlo"``, fixed seed) within 3.5 of its standard errors (a
  false-alarm rate of 5e-4 per assertion if both are right; the second difference's O(EPS^2) bias is below 1e-3
  standard errors); power: the three terms (a), (b), (c) are each 30% to 300% of the sum, so dropping any is many
  standard errors off, and the independent check above pins the value to 1e-7 anyway;
* the argument checks and that ``predict(..., finite_width="1/M")`` uses it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from meanfield import InvalidArgument, Network, predict
from meanfield.finite.fourworld import class_tensor, pair_index, realized_world
from meanfield.finite.normalized import DRAWS, METHODS, output_batch_norm_terms

Z = 3.5
_LOG_T = np.arange(-45.0, 45.0, 0.02)       # log t: the integrands decay exponentially at both ends
_T_GRID = np.exp(_LOG_T)


def _laplace_moments(sigma: np.ndarray, theta: np.ndarray) -> tuple:
    """E over g ~ N(0, sigma) of |g|^-2, |g|^-4, g'Mg/|g|^4 and g'M^2g/|g|^6 (M = theta), (g'Mg)^2/|g|^8, with
    E[q(g) e^(-t|g|^2)] = det(I + 2t sigma)^(-1/2) E_{N(0, S)}[q], S = sigma (I + 2t sigma)^(-1)."""
    lam, vec = np.linalg.eigh(sigma)
    assert lam.min() > 0
    den = 1 + 2 * _T_GRID[:, None] * lam
    det = np.exp(-0.5 * np.log(den).sum(axis=1))
    s = lam / den
    m1, m2 = vec.T @ theta @ vec, vec.T @ theta @ theta @ vec
    tr1, tr2 = s @ np.diag(m1), s @ np.diag(m2)
    tr11 = np.einsum("ij,ti,tj->t", m1**2, s, s)
    w = _T_GRID * (_LOG_T[1] - _LOG_T[0])
    t = _T_GRID
    return tuple(float((f * w).sum()) for f in (det, t * det, t * det * tr1, t**2 / 2 * det * tr2,
                                                t**3 / 6 * det * (tr1**2 + 2 * tr11)))


def _independent_couplings(net: Network, width: int, T: int, h: float = 0.05) -> tuple:
    """(coupling of E G_tt, coupling of E ||G_kk||_F^2 per block), the brute-force way (module docstring)."""
    plain = net.with_(norms=())
    L = net.depth
    M = plain.widths(width)[L - 1]
    sw = float(net.sigma_w2[L - 1])
    w = realized_world(plain, width)
    n = T - 1

    def canon(labels: tuple) -> tuple:
        seen: dict = {}
        return tuple(seen.setdefault(x, len(seen)) for x in labels)
    tri = [(a, b) for a in range(T) for b in range(a, T)]
    nt = len(tri)
    cov = np.zeros((2 * nt, 2 * nt))
    for i, (a, b) in enumerate(tri):
        for j, (c, d) in enumerate(tri):
            lab = canon((a, b, c, d))
            p1, p2 = pair_index(lab[0], lab[1]), pair_index(lab[2], lab[3])
            cov[i, j], cov[i, nt + j] = w.cov[p1, p2], w.cov[p1, 10 + p2]
            cov[nt + i, j], cov[nt + i, nt + j] = w.cov[10 + p1, p2], w.cov[10 + p1, 10 + p2]
    vals, vecs = np.linalg.eigh(cov)
    root = vecs[:, vals > 0] * np.sqrt(vals[vals > 0])
    K0 = (w.k[0] - w.k[1]) * np.eye(T) + w.k[1]
    N0 = (w.n[0] - w.n[1]) * np.eye(T) + w.n[1]
    B = np.linalg.svd(np.eye(T) - 1.0 / T)[0][:, : T - 1]       # the complement of 1
    iu = np.triu_indices(T)

    def sym(x: np.ndarray) -> np.ndarray:
        out = np.zeros((T, T))
        out[iu] = x
        return out + out.T - np.diag(np.diag(out))

    def moments(K: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """(E tr G, E ||G||^2) with G = Q theta Q / |g|^2 in the complement, g ~ N(0, sw B'KB)."""
        th = B.T @ theta @ B
        m = _laplace_moments(sw * B.T @ K @ B, th)
        return np.array([np.trace(th) * m[0] - m[2], np.trace(th @ th) * m[1] - 2 * m[3] + m[4]])
    second = np.zeros(2)
    forward = 0.0
    for k in range(root.shape[1]):
        dK, dN = sym(root[:nt, k]), sym(root[nt:, k])
        f = [moments(K0 + e * h * dK, M * (K0 + e * h * dK) + sw * (N0 + e * h * dN)) for e in (-2, -1, 0, 1, 2)]
        second += (-f[0] + 16 * f[1] - 30 * f[2] + 16 * f[3] - f[4]) / (24 * h * h)
        forward += moments(K0, M * dK + sw * dN)[1]     # the square of the forward part: term 2's, not a coupling
    # (c) Stein: c (tr(Pi Z) / |g|^2 - g'Zg / |g|^4), Z_uv = Y^uv_ab (g_a g_b / v^2 - Pi_ab / v), g ~ N(0, v Pi)
    v, c = sw * (w.k[0] - w.k[1]), (sw / M) ** 2
    D = M * (w.k[0] - w.k[1]) + sw * (w.n[0] - w.n[1])
    Y = class_tensor(T, lambda lab: w.y[(0, lab[1])][lab[2], lab[3]])
    Pi = np.eye(T) - 1.0 / T
    pp = np.einsum("uv,ab->uvab", Pi, Pi)
    s4 = pp + np.einsum("ua,vb->uvab", Pi, Pi) + np.einsum("ub,va->uvab", Pi, Pi)
    y1, ys = float((Y * pp).sum()), float((Y * s4).sum())
    r2, r4 = 1 / (v * (n - 2)), 1 / (v * v * (n - 2) * (n - 4))      # E|g|^-2, E|g|^-4
    stein_trace = c * (y1 * (1 / (n * v * v) - r2 / v) - ys / (n * (n + 2) * v * v) + y1 * r2 / (n * v))
    stein_square = 2 * c * D * (y1 * (r2 / (n * v * v) - r4 / v) - ys * r2 / (n * (n + 2) * v * v)
                                + y1 * r4 / (n * v))
    return (second[0] + stein_trace) / T, second[1] - forward + stein_square


@pytest.mark.parametrize("net, T", [(Network(3, "tanh", 2.0, 0.1, outputs=2, norms=["batch:last"]), 8),
                                    (Network(2, "relu", 2.0, 0.1, norms=["batch:last"]), 10)],
                         ids=["tanh-L3-C2-T8", "relu-L2-C1-T10"])
def test_exact_equals_independent_quadrature(net, T):
    t = output_batch_norm_terms(net, 64, T)
    diag, square = _independent_couplings(net, 64, T)
    assert t.coupling_diag == pytest.approx(diag, rel=1e-7)
    assert t.coupling_s * t.P / net.outputs == pytest.approx(square, rel=1e-7)
    # A 1 = 0: every row of a block sums to zero, so the off-diagonal coupling is -1/(T-1) of the diagonal one
    assert t.coupling_offdiag == pytest.approx(-t.coupling_diag / (T - 1), rel=1e-12)
    assert t.draws == 0 and t.monte_carlo_sem == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("net, T", [(Network(3, "tanh", 2.0, 0.1, outputs=2, norms=["batch:last"]), 12),
                                    (Network(2, "relu", 2.0, 0.1, norms=["batch:last"]), 12)],
                         ids=["tanh-L3-C2", "relu-L2-C1"])
def test_exact_within_monte_carlo_errors(net, T):
    exact = output_batch_norm_terms(net, 64, T)
    mc = output_batch_norm_terms(net, 64, T, draws=10000, method="monte-carlo")
    assert mc.draws == 10000 and min(mc.monte_carlo_sem) > 0
    for key, sem in zip(("coupling_diag", "coupling_offdiag", "coupling_s"), mc.monte_carlo_sem):
        assert abs(getattr(exact, key) - getattr(mc, key)) < Z * sem, key
    # the parts outside the couplings are the same numbers
    for key in ("ntk_factor", "scale_factor", "s_same", "s_cross", "s_mean_field"):
        assert getattr(exact, key) == getattr(mc, key), key
    assert exact.s - mc.s == pytest.approx(exact.coupling_s - mc.coupling_s, rel=1e-9, abs=1e-12 * exact.s)


def test_method_and_samples_checked():
    net = Network(2, "tanh", 2.0, 0.1, norms=["batch:last"])
    assert METHODS == ("exact", "monte-carlo") and DRAWS == 40000
    for bad in ("mc", None):
        with pytest.raises(InvalidArgument, match="method"):
            output_batch_norm_terms(net, 64, 12, method=bad)
    # exact: finite for T >= 6 (E[1/sigma^4]); the Monte Carlo's s needs T >= 10 (E[1/sigma^8])
    with pytest.raises(InvalidArgument, match="samples"):
        output_batch_norm_terms(net, 64, 5)
    with pytest.raises(InvalidArgument, match="samples"):
        output_batch_norm_terms(net, 64, 9, method="monte-carlo")
    t = output_batch_norm_terms(net, 64, 6)
    assert all(math.isfinite(x) for x in (t.mean_diag, t.mean_offdiag, t.s, t.coupling_s))


def test_predict_uses_the_exact_couplings():
    net = Network(3, "relu", 2.0, 0.1, outputs=2, norms=["batch:last"])
    t = output_batch_norm_terms(net, 64, 8)
    st = predict(net, 64, 8, finite_width="1/M")
    assert (st.gram_diag, st.gram_offdiag, st.m, st.s) == (t.mean_diag, t.mean_offdiag, t.m, t.s)
    assert any("closed form" in note for note in st.notes)
    assert not any("Monte Carlo" in note for note in st.notes)
