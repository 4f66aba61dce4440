"""E G = mean field + dTheta^L / T: the O(1/M) corrections of :mod:`meanfield.finite.corrections` as sympy recursions.

:func:`derive_corrections` writes the layer recursion that :func:`meanfield.finite.corrections.gram_corrections`
runs in floats (forward NTK recursion conditioned on the incoming weights, Roberts-Yaida-Hanin's kernel shift,
the realized-kernel covariances extended by the phi' products; see that module's docstring) as a list of sympy
equations, one per layer quantity, in the symbols M, T, C of :mod:`meanfield.spec.symbols` (the widths are
M_j = alpha_j M, so every width dependence of the numeric path is kept, not only its 1/M limit):

* vectors over the kernel entries (t t, t s, s s) of two distinct samples and matrices of them are
  ``sympy.MatrixSymbol``'s: ``K_j`` the mean kernel, ``dK_j`` its O(1/M) mean shift, ``S_j_i`` the covariance of
  (kernel entries, phi' products) of layers j and i (O(1/M)), ``J_j`` the linear response of layer j to layer
  j - 1, ``Y_j_p`` the NTK sandwiched between post-activations;
* the Gaussian expectations of layer j, (u_t, u_s) ~ N(0, Q_j), are definitions: a closed form where
  :func:`meanfield.integrals.symbolic.pair_moment` has one (relu, erf, ...: the kernel maps F_j, c_j and, by
  Price's theorem, their gradients and Hessians in Q as sympy derivatives), else an unevaluated
  :class:`NormalExpectation` (Price's derivatives as Hermite weights, y = Q^-1 u, P = Q^-1);
* scalars per sample pair p (``tt``: E G_tt, ``ts``: E G_ts, t != s): ``Theta_j_p`` the mean NTK of layer j,
  ``dTheta_j_p`` its O(1) shift, ``dN_j_p`` the shift of N^j = (1/M_j) sum_a phi'_a(t) phi'_a(s) Theta^j_aa,
  ``n_j_i_p`` its linear response to the fluctuation of layer i.

The statistics are then E G_tt = (mean field of :func:`meanfield.theory.derivation.derive`) + dTheta_L_tt / T, the
same for E G_ts, m = C T E G_tt / P, kappa_1 = T E G_tt / (alpha M), kappa_2 = T E G_ts / (alpha M) and s with
the entry variances ``Var_tt``, ``Var_ts``, ``Xsq_tt``, ``Xsq_ts`` as symbols: those are the four-point variances of
:mod:`meanfield.finite.fourpoint`, which :meth:`CorrectionDerivation.evaluate` takes from that module (they are
not written in sympy here). Plain networks only: :mod:`meanfield.finite.symbolic_normalized` builds the normalized
placements (batch norm on the output, a layer norm on layer 2 of three) on this recursion, and is what
``derive(net).corrections`` reaches.

Evaluation: :meth:`CorrectionDerivation.evaluate` takes every definition at its numeric Q (closed forms with
numpy, the others with the nested Gauss-Legendre rule split at the kinks that the numeric path uses, from
:mod:`meanfield.integrals.quadrature`), then each equation through ``sympy.lambdify`` in order; the numbers equal
``gram_corrections``' to rounding (``tests/test_symbolic_corrections.py`` holds it over ``strategies.networks()``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
from sympy.printing.numpy import NumPyPrinter

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from ..integrals.symbolic import GaussianExpectation, PairExpectation, pair_moment, second_moment
from ..spec.network import Network
from ..spec.symbols import LATEX_NAMES, C, M, T
from ..theory.backend import evaluate_expectations
from ..theory.derivation import derive
from .corrections import two_sample_rule
from .fourpoint import cross_output_variance, same_output_variance

__all__ = ["NormalExpectation", "CorrectionDerivation", "derive_corrections", "VARIANCES", "GRAM_MEAN_FIELD", "label_classes",
           "centring_weight", "label_choices", "projected_variance", "PHI",
           "DPHI", "U_T", "U_S", "Y_T", "Y_S", "P_TT", "P_TS", "P_SS"]

#: the Gaussian variables of a layer expectation and the activation and its derivative applied to them
U_T, U_S = sympy.symbols("u_t u_s", real=True)
PHI, DPHI = sympy.Function("phi"), sympy.Function("dphi")
#: y = Q^-1 u and the entries of P = Q^-1 (Price's theorem writes Q-derivatives as these Hermite weights)
Y_T, Y_S = sympy.symbols("y_t y_s", real=True)
P_TT, P_TS, P_SS = sympy.symbols("P_tt P_ts P_ss", real=True)

_PAIRS = ((0, 0), (0, 1), (1, 1))    # kernel entries (t t, t s, s s) in this order
_PAIR_NAMES = ("tt", "ts")           # the statistics' pairs: E G_tt (pair 0) and E G_ts (pair 1)
_U, _Y = (U_T, U_S), (Y_T, Y_S)
_P = ((P_TT, P_TS), (P_TS, P_SS))


class NormalExpectation(sympy.Expr):
    """E_j[g] = E[g(u_t, u_s)], (u_t, u_s) ~ N(0, Q_j), with phi the activation of layer j; unevaluated.

    ``g`` is written in ``phi(u)``, ``dphi(u)`` (phi'), u itself (``u_t``, ``u_s``), y = Q^-1 u (``y_t``, ``y_s``)
    and the entries of P = Q^-1 (``P_tt``, ``P_ts``, ``P_ss``). :meth:`value` integrates it at numbers Q with the
    rule of the numeric path (nested Gauss-Legendre split at the kinks).

    Example:
        >>> import meanfield as mf
        >>> q = sympy.symbols("Q_tt Q_ts Q_ss")
        >>> e = NormalExpectation(DPHI(U_T) * DPHI(U_S), *q, 1)
        >>> e
        E_1[dphi(u_s)*dphi(u_t)]
        >>> round(e.value(mf.activation("relu"), 1.0, 0.0, 1.0), 12)     # P(u_t > 0, u_s > 0) = 1/4
        0.25
    """

    is_real = True
    is_finite = True

    def __new__(cls, integrand: Any, q_tt: Any, q_ts: Any, q_ss: Any, layer: Any):
        return sympy.Expr.__new__(cls, sympy.sympify(integrand), sympy.sympify(q_tt), sympy.sympify(q_ts),
                                  sympy.sympify(q_ss), sympy.Integer(layer))

    @property
    def integrand(self) -> sympy.Expr:
        return self.args[0]

    @property
    def layer(self) -> int:
        return int(self.args[4])

    @property
    def free_symbols(self):
        return set().union(*(a.free_symbols for a in self.args[1:4]))

    def value(self, activation: Any, q_tt: float, q_ts: float, q_ss: float) -> float:
        """The expectation at numbers Q, with ``activation`` (an Activation) as phi."""
        g = _grid(Unit.of(activation), float(q_tt), float(q_ts), float(q_ss))
        return g.mean(_integrand_function(self.integrand)(*g.arrays))

    def _sympystr(self, printer: Any) -> str:
        return f"E_{self.layer}[{printer._print(self.integrand)}]"

    def _latex(self, printer: Any) -> str:
        return rf"\mathbb{{E}}_{{{self.layer}}}\left[{printer._print(self.integrand)}\right]"


@functools.lru_cache(maxsize=1024)
def _integrand_function(integrand: sympy.Expr):
    f = sympy.symbols("f_t f_s d_t d_s")
    plain = integrand.xreplace({PHI(U_T): f[0], PHI(U_S): f[1], DPHI(U_T): f[2], DPHI(U_S): f[3]})
    return sympy.lambdify([*f, Y_T, Y_S, P_TT, P_TS, P_SS, U_T, U_S], plain, modules="numpy")


@dataclass(frozen=True)
class _Grid:
    w: np.ndarray
    arrays: tuple     # phi(u_t), phi(u_s), phi'(u_t), phi'(u_s), y_t, y_s, P_tt, P_ts, P_ss, u_t, u_s

    def mean(self, values: Any) -> float:
        return float((self.w * values).sum())


@functools.lru_cache(maxsize=256)
def _grid(unit: Unit, q00: float, q01: float, q11: float) -> _Grid:
    """The numeric path's own rule (:func:`meanfield.finite.corrections.two_sample_rule`) with the unit and its
    derivative at its nodes, so that both paths sum the same terms."""
    rule = two_sample_rule(unit, q00, q01, q11)
    U0, U1 = rule.u
    f0, f1 = (np.asarray(unit.f(x), dtype=float) for x in (U0, U1))
    d0, d1 = (np.asarray(unit.df(x), dtype=float) for x in (U0, U1))
    P = rule.P
    return _Grid(rule.w, (f0, f1, d0, d1, *rule.y, P[0, 0], P[0, 1], P[1, 1], U0, U1))


# -- the integrands: Hermite weights of Price's theorem -------------------------------------------------------------


def _hermite2(i: int, j: int) -> sympy.Expr:
    """E[d_i d_j g] = E[g (y_i y_j - P_ij)]."""
    return _Y[i] * _Y[j] - _P[i][j]


def _hermite4(i: int, j: int, k: int, l: int) -> sympy.Expr:
    """E[d_i d_j d_k d_l g] = E[g He_4], the fourth multivariate Hermite polynomial of N(0, Q)."""
    idx = (i, j, k, l)
    out = _Y[i] * _Y[j] * _Y[k] * _Y[l]
    for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1)):
        out -= _P[idx[a]][idx[b]] * _Y[idx[c]] * _Y[idx[d]]
    for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2)):
        out += _P[idx[a]][idx[b]] * _P[idx[c]][idx[d]]
    return out


def _weight(pair: tuple) -> sympy.Rational:
    """Price on the symmetric Q: dE g / dQ_ii = E[d_i^2 g] / 2, dE g / dQ_ij = E[d_i d_j g] (i != j)."""
    return sympy.Rational(1, 2) if pair[0] == pair[1] else sympy.S.One


def _is_closed(expr: sympy.Expr) -> bool:
    return not expr.has(PairExpectation, GaussianExpectation)


def _kernel_map(fn: Any, unit_of: Any, q: tuple, layer: int) -> tuple:
    """(vector over pairs, gradient 3 x 3, Hessians per pair 3 x 3) of E[fn(u_a) fn(u_b)]: sympy derivatives of the
    closed form when there is one, else Hermite-weighted NormalExpectations."""
    qtt, qts, qss = q
    closed = [second_moment(fn, qtt), pair_moment(fn, qtt, qss, qts), second_moment(fn, qss)]
    if all(_is_closed(e) for e in closed):
        vec = sympy.ImmutableMatrix(closed)
        grad = sympy.ImmutableMatrix(3, 3, lambda p, A: sympy.diff(closed[p], q[A]))
        hess = [sympy.ImmutableMatrix(3, 3, lambda A, B: sympy.diff(closed[p], q[A], q[B])) for p in range(3)]
        return vec, grad, hess, True
    prods = [unit_of(_U[a]) * unit_of(_U[b]) for a, b in _PAIRS]
    E = lambda g: NormalExpectation(g, qtt, qts, qss, layer)  # noqa: E731
    vec = sympy.ImmutableMatrix([E(p) for p in prods])
    grad = sympy.ImmutableMatrix(3, 3, lambda p, A: _weight(_PAIRS[A]) * E(prods[p] * _hermite2(*_PAIRS[A])))
    hess = [sympy.ImmutableMatrix(3, 3, lambda A, B: _weight(_PAIRS[A]) * _weight(_PAIRS[B])
                                  * E(prods[p] * _hermite4(*_PAIRS[A], *_PAIRS[B]))) for p in range(3)]
    return vec, grad, hess, False


# -- the recursion ---------------------------------------------------------------------------------------------------


def _exact(value: Any) -> Any:
    """Floats as exact rationals of their shortest repr (as derive has them); sympy numbers unchanged."""
    if isinstance(value, sympy.Basic):
        return value
    if isinstance(value, (float, np.floating)):
        return sympy.Rational(repr(float(value)))
    return sympy.sympify(value)


def _ms(name: str, rows: int, cols: int = 1) -> sympy.MatrixSymbol:
    return sympy.MatrixSymbol(name, rows, cols)


def _unit_vector(k: int) -> sympy.ImmutableMatrix:
    return sympy.ImmutableMatrix(6, 1, lambda i, _: 1 if i == k else 0)


@dataclass(frozen=True)
class _Statement:
    """lhs = rhs; ``layer`` the layer whose activation the definition's expectations use (None: a recursion step)."""

    lhs: Any
    rhs: Any
    layer: int | None = None
    section: str = "forward"

    @property
    def eq(self) -> sympy.Eq:
        return sympy.Eq(self.lhs, self.rhs, evaluate=False)


def _statements(net: Network) -> tuple[list, dict]:
    """The recursion of :mod:`meanfield.finite.corrections` (``_forward`` then ``_ntk``) as ordered statements,
    and the symbols of the results (dTheta_L_p per pair)."""
    L = net.depth
    sw = [_exact(v) for v in net.sigma_w2]
    sb = [_exact(v) for v in net.sigma_b2]
    Mj = [_exact(a) * M for a in net.alphas]
    q1, q2 = _exact(net.input_q1), _exact(net.input_q2)
    out: list = []
    K = {0: _ms("K_0", 3)}
    out.append(_Statement(K[0], sympy.ImmutableMatrix([q1, q2, q1])))
    Qm = sympy.ImmutableMatrix([[q1, q2], [q2, q1]])
    sig0 = sympy.zeros(6, 6)
    for i, (a, b) in enumerate(_PAIRS):
        for j, (c, d) in enumerate(_PAIRS):
            sig0[i, j] = Qm[a, c] * Qm[b, d] + Qm[a, d] * Qm[b, c]
    S = {(0, 0): _ms("S_0_0", 6, 6)}
    # Cov of one input coordinate's products (x_a x_b, kernel block only) over M_0 coordinates
    out.append(_Statement(S[(0, 0)], sympy.ImmutableMatrix(sig0) / Mj[0]))
    dK = {0: sympy.ZeroMatrix(3, 1)}
    F, c, gF, gc, HF, Hc, D2c, E4, D = ({} for _ in range(9))
    for j in range(1, L):
        phi = net.phi(j)
        q = tuple(sympy.Symbol(f"Q_{j}_{n}", real=True) for n in ("tt", "ts", "ss"))
        for k in range(3):
            out.append(_Statement(q[k], sw[j - 1] * K[j - 1][k, 0] + sb[j - 1]))
        vecF, gradF, hessF, _ = _kernel_map(phi, PHI, q, j)
        vecc, gradc, hessc, _ = _kernel_map(phi.derivative, DPHI, q, j)
        names = dict(F=vecF, c=vecc, gF=gradF, gc=gradc)
        store = dict(F=F, c=c, gF=gF, gc=gc)
        for key, value in names.items():
            store[key][j] = _ms(f"{key}_{j}", *value.shape)
            out.append(_Statement(store[key][j], value, j, "expectations"))
        HF[j], Hc[j] = [], []
        for p, n in enumerate(("tt", "ts", "ss")):
            HF[j].append(_ms(f"HF_{j}_{n}", 3, 3))
            Hc[j].append(_ms(f"Hc_{j}_{n}", 3, 3))
            out.append(_Statement(HF[j][p], hessF[p], j, "expectations"))
            out.append(_Statement(Hc[j][p], hessc[p], j, "expectations"))
        E = lambda g: NormalExpectation(g, *q, j)  # noqa: E731
        f = [PHI(U_T), PHI(U_S)]
        d = [DPHI(U_T), DPHI(U_S)]
        if j >= 2:
            for pair, name in zip(((0, 0), (0, 1)), _PAIR_NAMES):
                D2c[(j, name)] = _ms(f"D2c_{j}_{name}", 2, 2)
                gp = d[pair[0]] * d[pair[1]]
                out.append(_Statement(D2c[(j, name)], sympy.ImmutableMatrix(
                    2, 2, lambda a, b: E(gp * _hermite2(a, b))), j, "expectations"))
        if j <= L - 2:
            prods = [f[a] * f[b] for a, b in _PAIRS] + [d[a] * d[b] for a, b in _PAIRS]
            X2 = _ms(f"X2_{j}", 6, 6)
            out.append(_Statement(X2, sympy.ImmutableMatrix(6, 6, lambda a, b: E(prods[a] * prods[b])), j,
                                  "expectations"))
            for pair, name in zip(((0, 0), (0, 1)), _PAIR_NAMES):
                E4[(j, name)] = _ms(f"E4_{j}_{name}", 2, 2)
                gp = d[pair[0]] * d[pair[1]]
                out.append(_Statement(E4[(j, name)], sympy.ImmutableMatrix(2, 2, lambda a, b: E(f[a] * f[b] * gp)),
                                      j, "expectations"))
            for a, name in enumerate(("t", "s")):
                D[(j, a)] = _ms(f"D_{j}_{name}", 2, 2)
                out.append(_Statement(D[(j, a)], sympy.ImmutableMatrix(
                    2, 2, lambda tau, rho: E(f[tau] * d[a] * _Y[rho])), j, "expectations"))
        # Roberts-Yaida-Hanin: E F(Q) = F(E Q) + F' dQ + F''[Cov Q] / 2 to O(1/M)
        dQ, CQ = _ms(f"dQ_{j}", 3), _ms(f"CQ_{j}", 3, 3)
        out.append(_Statement(dQ, sw[j - 1] * dK[j - 1]))
        out.append(_Statement(CQ, sw[j - 1] ** 2 * S[(j - 1, j - 1)][:3, :3]))
        dK[j], dc = _ms(f"dK_{j}", 3), _ms(f"dc_{j}", 3)
        half = sympy.Rational(1, 2)
        out.append(_Statement(dK[j], gF[j] * dQ + half * sympy.ImmutableMatrix([sympy.Trace(h * CQ) for h in HF[j]])))
        out.append(_Statement(dc, gc[j] * dQ + half * sympy.ImmutableMatrix([sympy.Trace(h * CQ) for h in Hc[j]])))
        c[("d", j)] = dc
        K[j] = _ms(f"K_{j}", 3)
        out.append(_Statement(K[j], F[j]))
        if j <= L - 2:
            J = _ms(f"J_{j}", 6, 6)
            Z = sympy.ZeroMatrix(3, 3)
            out.append(_Statement(J, sw[j - 1] * sympy.BlockMatrix([[gF[j], Z], [gc[j], Z]])))
            Sig = _ms(f"Sigma_{j}", 6, 6)
            V = sympy.BlockMatrix([[F[j]], [c[j]]])
            out.append(_Statement(Sig, X2 - V * V.T))
            S[(j, j)] = _ms(f"S_{j}_{j}", 6, 6)
            out.append(_Statement(S[(j, j)], Sig / Mj[j] + J * S[(j - 1, j - 1)] * J.T))
            for i in range(j):
                S[(j, i)] = _ms(f"S_{j}_{i}", 6, 6)
                out.append(_Statement(S[(j, i)], J * S[(j - 1, i)]))
    # the NTK recursion, per pair
    results = {}
    for p, name in enumerate(_PAIR_NAMES):
        pair = _PAIRS[p]
        theta = sympy.Symbol(f"Theta_1_{name}")
        dtheta = sympy.Symbol(f"dTheta_1_{name}")
        sec = f"NTK {name}"
        out.append(_Statement(theta, 1 + Mj[0] * K[0][p, 0], None, sec))
        out.append(_Statement(dtheta, sympy.S.Zero, None, sec))   # the inputs' kernel is exact in mean
        ncoef: dict = {}
        Y = None
        for j in range(1, L):
            kz = Mj[j - 1] * S[(j - 1, j - 1)][:3, p:p + 1]
            for i, coef in ncoef.items():
                kz = kz + sw[j - 1] * S[(j - 1, i)][:3, :] * coef
            covKZ = _ms(f"covKZ_{j}_{name}", 3)
            out.append(_Statement(covKZ, kz, None, sec))
            covcZ = sympy.Symbol(f"covcZ_{j}_{name}")
            out.append(_Statement(covcZ, sw[j - 1] * (gc[j][p:p + 1, :] * covKZ)[0, 0], None, sec))
            dn = sympy.Symbol(f"dN_{j}_{name}")
            rhs = c[("d", j)][p, 0] * theta + c[j][p, 0] * dtheta + covcZ
            if j >= 2:
                rhs += (sw[j - 1] / Mj[j - 1]) ** 2 * sympy.Trace(D2c[(j, name)].T * Y)
            out.append(_Statement(dn, rhs, None, sec))
            if j <= L - 2:
                # linear response of N^j: Theta^j delta c^j + c^j (M_{j-1} delta K^{j-1}_p + sw delta N^{j-1})
                new = {}
                for i, coef in ncoef.items():
                    new[i] = c[j][p, 0] * sw[j - 1] * coef
                extra = c[j][p, 0] * Mj[j - 1] * _unit_vector(p)
                new[j - 1] = new[j - 1] + extra if j - 1 in new else extra
                new[j] = theta * _unit_vector(3 + p)
                ncoef = {}
                for i, value in new.items():
                    ncoef[i] = _ms(f"n_{j}_{i}_{name}", 6)
                    out.append(_Statement(ncoef[i], value, None, sec))
                a, b = pair
                ynew = _ms(f"Y_{j}_{name}", 2, 2)
                yr = Mj[j] * theta * E4[(j, name)]
                if Y is not None:
                    yr = yr + (Mj[j] / Mj[j - 1]) ** 2 * sw[j - 1] ** 2 * D[(j, a)] * Y * D[(j, b)].T
                out.append(_Statement(ynew, yr, None, sec))
                Y = ynew
            new_theta = sympy.Symbol(f"Theta_{j + 1}_{name}")
            new_dtheta = sympy.Symbol(f"dTheta_{j + 1}_{name}")
            out.append(_Statement(new_theta, 1 + Mj[j] * K[j][p, 0] + sw[j] * c[j][p, 0] * theta, None, sec))
            out.append(_Statement(new_dtheta, Mj[j] * dK[j][p, 0] + sw[j] * dn, None, sec))
            theta, dtheta = new_theta, new_dtheta
        results[name] = dtheta
    return out, results


class _Printer(NumPyPrinter):
    """numpy code for the recursion's matrix expressions (sympy's printer has no Trace)."""

    def _print_Trace(self, expr: Any) -> str:
        return f"numpy.trace({self._print(expr.arg)})"


# -- the public result -------------------------------------------------------------------------------------------


#: Var G_tt, Var G_ts (one output) and E G_kl(t, t)^2, E G_kl(t, s)^2 (outputs k != l): the entry variances of s
VARIANCES = tuple(sympy.Symbol(n) for n in ("Var_tt", "Var_ts", "Xsq_tt", "Xsq_ts"))
#: E G_tt, E G_ts of mean field (derive's expressions, in CorrectionDerivation.mean_field)
GRAM_MEAN_FIELD = tuple(sympy.Symbol(n) for n in ("G_tt_mf", "G_ts_mf"))


@dataclass(frozen=True)
class CorrectionDerivation:
    """The O(1/M) corrections of a plain network as sympy: the layer recursion and the corrected statistics.

    Attributes:
        network: the network.
        statements: the recursion as ``sympy.Eq``'s in evaluation order (definitions of layer expectations,
            forward kernel shifts and covariances, then the NTK recursion of each pair tt, ts).
        layers: per statement, the layer whose activation a definition's expectations use; None for a step.
        sections: per statement, "expectations" (a definition), "forward" or "NTK tt" / "NTK ts".
        shift_diag, shift_offdiag: the symbols dTheta_L_tt, dTheta_L_ts (E G_tt - mean field = dTheta_L_tt / T).
        gram_diag, gram_offdiag, m, s, kappa1, kappa2: the corrected statistics in M, T, C, the mean-field Gram
            means ``G_tt_mf``, ``G_ts_mf`` (:data:`GRAM_MEAN_FIELD`), the shifts and the entry variances
            (:data:`VARIANCES`); the kappa's are None at depth 1 (alpha = 0).
        mean_field: derive's expressions (mean field at finite width) of gram_diag, gram_offdiag, m, s, kappa1,
            kappa2, P and alpha, in M, T, C: what ``G_tt_mf`` and ``G_ts_mf`` stand for.
        notes: what is symbolic and what is not.
        derivation: the :class:`~meanfield.theory.derivation.Derivation` of the same network.

    ``str`` shows the statistics, the recursion and the first layer's kernel maps; ``_repr_latex_`` an aligned
    display of the statistics and the recursion; :meth:`evaluate` the numbers, :meth:`expansion` the
    coefficients of E G = M a_0 + a_1 + O(1/M).
    """

    network: Network
    statements: tuple
    layers: tuple
    sections: tuple
    shift_diag: Any
    shift_offdiag: Any
    gram_diag: Any
    gram_offdiag: Any
    m: Any
    s: Any
    kappa1: Any
    kappa2: Any
    mean_field: dict
    notes: tuple = ()
    derivation: Any = field(default=None, repr=False, compare=False)

    @property
    def definitions(self) -> tuple:
        """The statements that define layer expectations (closed forms or :class:`NormalExpectation`)."""
        return tuple(e for e, sec in zip(self.statements, self.sections) if sec == "expectations")

    @property
    def recursion(self) -> tuple:
        """The recursion steps (everything but the expectation definitions)."""
        return tuple(e for e, sec in zip(self.statements, self.sections) if sec != "expectations")

    @functools.cached_property
    def _compiled(self) -> tuple:
        return tuple(_compile_step(e.rhs) if layer is None else _compile_definition(e.rhs, layer)
                     for e, layer in zip(self.statements, self.layers))

    def evaluate(self, width: int, samples: int) -> dict:
        """Floats at M = width, T = samples: the shifts and every statistic, as ``gram_corrections`` names them.

        Returns:
            dict with diag_shift, offdiag_shift (E G - mean field), mean_diag, mean_offdiag, m, s, kappa1,
            kappa2, the variances var_diag, var_offdiag, cross_square_diag, cross_square_offdiag (from
            :mod:`meanfield.finite.fourpoint`), mean_field_diag, mean_field_offdiag, m_mean_field, s_mean_field.

        Raises:
            InvalidArgument: width not a positive integer with alpha_l M whole, samples < 2.

        Example:
            >>> d = derive_corrections(Network(2, "relu", 2, 0.1, outputs=2))
            >>> out = d.evaluate(64, 8)
            >>> abs(out["diag_shift"]) < 1e-12, out["offdiag_shift"] != 0   # relu: no 1/M on the NTK diagonal
            (True, True)
        """
        width = check_int("width", width, minimum=1)
        Tn = check_int("samples", samples, minimum=2)
        self.network.widths(width)
        env = _run(self, width)
        net = self.network
        mf = (self.derivation or derive(net)).evaluate(width, Tn)
        same = same_output_variance(net, width, Tn)
        V = [same.diag / Tn**2, same.offdiag / Tn**2, 0.0, 0.0]
        if net.outputs >= 2:
            cross = cross_output_variance(net, width, Tn)
            V[2:] = [cross.diag / Tn**2, cross.offdiag / Tn**2]
        numbers = {M: width, T: Tn, C: net.outputs, GRAM_MEAN_FIELD[0]: mf["gram_diag"],
                   GRAM_MEAN_FIELD[1]: mf["gram_offdiag"], self.shift_diag: env[self.shift_diag],
                   self.shift_offdiag: env[self.shift_offdiag], **dict(zip(VARIANCES, V))}
        out = dict(diag_shift=env[self.shift_diag] / Tn, offdiag_shift=env[self.shift_offdiag] / Tn)
        for key in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2"):
            expr = getattr(self, key)
            # mean-field expectations without a closed form: the theory's numeric fast paths (as derive.evaluate)
            out[key] = None if expr is None else float(
                evaluate_expectations(sympy.sympify(expr).xreplace(numbers)).evalf(30))
        out["mean_diag"], out["mean_offdiag"] = out.pop("gram_diag"), out.pop("gram_offdiag")
        out.update(var_diag=V[0], var_offdiag=V[1], cross_square_diag=V[2], cross_square_offdiag=V[3],
                   mean_field_diag=mf["gram_diag"], mean_field_offdiag=mf["gram_offdiag"], m_mean_field=mf["m"],
                   s_mean_field=mf["s"])
        return out

    def __str__(self) -> str:
        net = self.network
        acts = ", ".join(f"{j}: {net.phi(j)}" for j in range(1, net.depth))
        lines = [f"CorrectionDerivation: {net.describe()}",
                 f"  E_j[g]: (u_t, u_s) ~ N(0, Q_j), phi of layer j ({acts or 'no hidden layer'}), dphi = phi', "
                 "y = Q_j^-1 u, P = Q_j^-1; pairs tt (E G_tt), ts (E G_ts, t != s)",
                 "  statistics (M, T, C; dTheta_L_p from the recursion; Var/Xsq the four-point entry variances):"]
        for key in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2"):
            v = getattr(self, key)
            if v is not None:
                lines.append(f"    {key:<12} = {_short(v)}")
        lines.append(f"  recursion ({len(self.recursion)} steps; {len(self.definitions)} expectation definitions in "
                     ".definitions):")
        lines += [f"    {e.lhs} = {_short(e.rhs)}" for e in self.recursion]
        lines.append("  expectations (first layer):")
        lines += [f"    {e.lhs} = {_short(e.rhs)}" for e, lay in zip(self.definitions, self._definition_layers())
                  if lay == 1 and e.lhs.name[0] in "Fc"]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def values(self, width: int) -> dict:
        """Every statement's value at M = width (symbol or MatrixSymbol -> float or array), in evaluation order.

        Example:
            >>> d = derive_corrections(Network(2, "relu", 2, 0.1))
            >>> abs(d.values(64)[d.shift_diag]) < 1e-12       # relu: no 1/M on the NTK diagonal
            True
        """
        width = check_int("width", width, minimum=1)
        self.network.widths(width)
        return _run(self, width)

    def _definition_layers(self) -> list:
        return [lay for lay, sec in zip(self.layers, self.sections) if sec == "expectations"]

    def shift_coefficients(self) -> dict:
        """dTheta_L_p = a_p + b_p / M exactly: {"tt": (a, b), "ts": (a, b)} (floats; T E G_p - its mean field).

        Exact because every quantity of the recursion stays in span{1, 1/M} times its own power of M (the
        covariances S and the kernel shifts are exactly 1/M times a width-free value, Theta is affine in M,
        Y is M^2 and M terms); a and b come from two widths and a third checks the form.

        Example:
            >>> d = derive_corrections(Network(2, "tanh", 1.5, 0.1))
            >>> a, b = d.shift_coefficients()["ts"]
            >>> abs(a + b / 64 - 8 * d.evaluate(64, 8)["offdiag_shift"]) < 1e-12
            True
        """
        base = _base_width(self.network)
        values = [_run(self, w) for w in (base, 2 * base, 4 * base)]
        out = {}
        for name, sym in (("tt", self.shift_diag), ("ts", self.shift_offdiag)):
            f1, f2, f4 = (v[sym] for v in values)
            a = 2 * f2 - f1
            b = (f1 - a) * base
            if abs(a + b / (4 * base) - f4) > 1e-9 * (abs(a) + abs(b) / base) + 1e-12:
                raise RuntimeError(f"symbolic corrections: {sym} is not a + b/M ({f1}, {f2}, {f4})")
            out[name] = (a, b)
        return out

    def expansion(self) -> dict:
        """E G_tt = M a_0 + a_1 + O(1/M), the same for E G_ts: {"gram_diag": (a_0, a_1), "gram_offdiag": ...}.

        a_0 and the mean-field part of a_1 are sympy expressions in T (derive's finite-width mean field is affine
        in M); the 1/M correction adds a_p / T with a_p of :meth:`shift_coefficients` (a Float), and the
        remainder is exactly b_p / (M T).

        Example:
            >>> d = derive_corrections(Network(3, "relu", 2, 0))
            >>> d.expansion()["gram_diag"][0]                      # M a_0: the leading order
            3/T
            >>> a0, a1 = d.expansion()["gram_offdiag"]
            >>> round(float(a1.args[1] * T), 10)                   # the 1/M correction's part of T a_1
            0.2223546875
            >>> out = d.evaluate(64, 8)
            >>> b = d.shift_coefficients()["ts"][1]
            >>> abs(float((64 * a0 + a1).subs(T, 8)) + b / (64 * 8) - out["mean_offdiag"]) < 1e-12
            True
        """
        coef = self.shift_coefficients()
        out = {}
        for key, name in (("gram_diag", "tt"), ("gram_offdiag", "ts")):
            mf = sympy.sympify(self.mean_field[key])
            dummies = {a: sympy.Dummy() for a in mf.atoms(GaussianExpectation, PairExpectation)}
            back = {v: k for k, v in dummies.items()}
            x = mf.xreplace(dummies)
            a0 = sympy.diff(x, M)
            if a0.has(M):
                raise InvalidArgument("net", self.network.describe(), "a mean field affine in M")
            a1 = x.xreplace({M: 0})
            # unevaluated sum: the mean-field part stays exact beside the recursion's float
            out[key] = (a0.xreplace(back), sympy.Add(a1.xreplace(back), sympy.Float(coef[name][0], 17) / T,
                                                     evaluate=False))
        return out

    @property
    def symbols(self) -> tuple:
        """The scalar symbols of the statistics besides M, T, C (for ``meanfield.printing.parse_latex``)."""
        return (*GRAM_MEAN_FIELD, self.shift_diag, self.shift_offdiag, *VARIANCES)

    def latex_lines(self) -> list[str]:
        """One LaTeX equation per corrected statistic and recursion step (the definitions are left out).

        The statistics' right-hand sides parse back with ``parse_latex(text, symbols=self.symbols)``; the
        recursion's matrix steps compile but are outside that dialect (it has no matrices)."""
        # this module's symbols print by name, so that parse_latex(..., symbols=self.symbols) reads them back
        names = LATEX_NAMES
        out = []
        for key, tex in (("gram_diag", r"\mathbb{E} G_{tt}"), ("gram_offdiag", r"\mathbb{E} G_{ts}"), ("m", "m"),
                         ("s", "s"), ("kappa1", r"\kappa_1"), ("kappa2", r"\kappa_2")):
            v = getattr(self, key)
            if v is not None:
                out.append(f"{tex} &= {sympy.latex(v, symbol_names=names)}")
        for e in self.recursion:
            out.append(f"{sympy.latex(e.lhs)} &= {sympy.latex(e.rhs, symbol_names=names)}")
        return out

    def _repr_latex_(self) -> str:
        return r"$$\begin{aligned}" + r" \\ ".join(self.latex_lines()) + r"\end{aligned}$$"


def _base_width(net: Network) -> int:
    """The smallest M >= 16 with every alpha_l M whole."""
    step = math.lcm(*(Fraction(float(a)).limit_denominator(1 << 20).denominator for a in net.alphas))
    return step * -(-16 // step)


def _short(expr: Any, width: int = 100) -> str:
    text = " ".join(str(expr).split())  # a Matrix prints over several lines
    return text if len(text) <= width else text[: width - 3] + "..."


def _run(d: CorrectionDerivation, width: int) -> dict:
    """Every statement's value at M = width, in order: definitions by quadrature or their closed form, recursion
    steps through their lambdified functions."""
    env: dict = {M: width}
    for eq, layer, step in zip(d.statements, d.layers, d._compiled):
        if layer is not None:
            q = [env[s] for s in _q_symbols(layer)]
            env[eq.lhs] = step(d.network.phi(layer), q)
        else:
            env[eq.lhs] = step(env)
    return env


def _q_symbols(layer: int) -> tuple:
    return tuple(sympy.Symbol(f"Q_{layer}_{n}", real=True) for n in ("tt", "ts", "ss"))


def _compile_definition(rhs: Any, layer: int) -> Any:
    """value(phi, Q) of a definition matrix: its closed-form entries through one lambdify, its NormalExpectation
    entries (times a number) by quadrature."""
    quads, closed = [], sympy.zeros(*rhs.shape)
    for i in range(rhs.rows):
        for j in range(rhs.cols):
            coef, core = rhs[i, j].as_coeff_Mul()
            if isinstance(core, NormalExpectation):
                quads.append((i, j, float(coef), core))
            else:
                closed[i, j] = rhs[i, j]
    fn = sympy.lambdify(_q_symbols(layer), closed, modules="numpy")

    def value(phi: Any, q: list) -> np.ndarray:
        out = np.array(fn(*q), dtype=float).reshape(rhs.shape)
        for i, j, coef, core in quads:
            out[i, j] = coef * core.value(phi, *q)
        return out
    return value


def _compile_step(rhs: Any) -> Any:
    """value(env) of a recursion step through lambdify (matrices as numpy arrays)."""
    if isinstance(rhs, sympy.ZeroMatrix):
        return lambda env: np.zeros(rhs.shape)
    free = sorted(rhs.free_symbols, key=str)
    fn = sympy.lambdify(free, rhs, modules="numpy", printer=_Printer)
    matrix = isinstance(rhs, (sympy.MatrixBase, sympy.MatrixExpr))

    def value(env: dict) -> Any:
        missing = [s for s in free if s not in env]
        if missing:  # a bug in the statement order, not a user error
            raise RuntimeError(f"symbolic corrections: {missing} used before they are defined")
        out = np.asarray(fn(*[env[s] for s in free]), dtype=float)
        return out.reshape(rhs.shape) if matrix else float(out.reshape(()))
    return value


@functools.lru_cache(maxsize=64)
def derive_corrections(net: Network) -> CorrectionDerivation:
    """E G_tt = mean field + dTheta_L_tt / T (same for G_ts), m, s, kappa's to O(1/M): the recursion in sympy.

    Args:
        net: a network without normalization layers and with numeric parameters.

    Returns:
        :class:`CorrectionDerivation`; ``evaluate(M, T)`` gives the numbers of
        :func:`meanfield.finite.corrections.gram_corrections` (to rounding).

    Raises:
        InvalidArgument: not a Network, symbolic parameters, or a normalization layer (those:
            :func:`meanfield.finite.symbolic_normalized.derive_network_corrections`).

    Example:
        >>> d = derive_corrections(Network(2, "relu", 2, 0.1))
        >>> d.gram_diag.has(d.shift_diag), d.shift_diag
        (True, dTheta_2_tt)
        >>> print(d.definitions[1].rhs)                  # c_1: relu's E[step step], a closed form
        Matrix([[1/2], [(pi - acos(Q_1_ts/sqrt(Q_1_ss*Q_1_tt)))/(2*pi)], [1/2]])
    """
    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters (substitute the symbols first)")
    if net.norms:
        raise InvalidArgument("net", net.describe(), "a network without normalization layers",
                              "the symbolic O(1/M) corrections are derived for plain networks")
    statements, results = _statements(net)
    mf = derive(net)
    L = net.depth
    sd, so = results["tt"], results["ts"]
    gd = GRAM_MEAN_FIELD[0] + sd / T
    go = GRAM_MEAN_FIELD[1] + so / T
    var_d, var_o, xd, xo = VARIANCES
    P = mf.P
    m = C * T * gd / P
    s = (C * T * (gd**2 + var_d) + C * T * (T - 1) * (go**2 + var_o) + C * (C - 1) * (T * xd + T * (T - 1) * xo)) / P
    k1 = k2 = None
    if L >= 2:
        k1, k2 = T * gd / (mf.alpha * M), T * go / (mf.alpha * M)
    notes = ("symbolic: the mean shifts (forward NTK recursion with Stein's lemma, the kernel's mean shift, the "
             "realized-kernel covariances) and the statistics in them; closed forms where pair_moment has one",
             "not symbolic: the entry variances Var_tt, Var_ts, Xsq_tt, Xsq_ts of s (meanfield.finite.fourpoint, "
             "evaluated numerically by evaluate())")
    mean_field = dict(gram_diag=mf.gram_diag, gram_offdiag=mf.gram_offdiag, m=mf.m, s=mf.s, kappa1=mf.kappa1,
                      kappa2=mf.kappa2, P=P, alpha=mf.alpha)
    return CorrectionDerivation(net, tuple(st.eq for st in statements), tuple(st.layer for st in statements),
                                tuple(st.section for st in statements), sd, so, gd, go, m, s, k1, k2, mean_field,
                                notes, mf)


# -- label classes of four sample positions, shared by the projected (output batch norm) and layer-norm variances --


def label_classes(fixed: int) -> list:
    """Label classes of four positions given ``fixed`` labels 0..fixed-1: each position a fixed label or a new one
    (numbered in order of appearance); (labels, number of new labels). The numeric path's enumeration.

    Example:
        >>> len(label_classes(0)), label_classes(2)[:2]
        (15, [((0, 0, 0, 0), 0), ((0, 0, 0, 1), 0)])
    """
    out = []

    def grow(prefix: tuple, new: int) -> None:
        if len(prefix) == 4:
            out.append((prefix, new))
            return
        for x in range(fixed + new + 1):
            grow(prefix + (x,), new + (x == fixed + new))
    grow((), 0)
    return out


def centring_weight(x: int, y: int) -> sympy.Expr:
    """Pi_xy = 1 - 1/T on the diagonal, -1/T off it: the centring projector's entry, symbolic in T.

    Example:
        >>> centring_weight(0, 0), centring_weight(0, 1)
        (1 - 1/T, -1/T)
    """
    return 1 - 1 / T if x == y else -1 / T


def label_choices(new: int, fixed: int) -> sympy.Expr:
    """How many ways to give ``new`` distinct labels outside ``fixed`` given ones: (T - fixed)_new, exact in T
    (0 when there are not enough samples).

    Example:
        >>> label_choices(2, 1)
        (T - 2)*(T - 1)
    """
    return sympy.Mul(*(T - fixed - i for i in range(new)))


def projected_variance(outputs: tuple, fixed: int, covariance: Any) -> sympy.Expr:
    """Var((Pi A Pi)_tt') / T^2 of A = Theta_kl: t = t' (fixed = 1) or t != t' (fixed = 2), summed over the label
    classes, (T - fixed)_new x projector weights x ``covariance(outputs, labels)`` (an unevaluated atom): exact in T.

    Example:
        >>> cov = sympy.Function("Cov")
        >>> var = projected_variance((0, 0), 1, lambda outputs, labels: cov(*labels))
        >>> sympy.factor(sympy.expand(var).coeff(cov(0, 0, 0, 0)))
        (T - 1)**4/T**6
    """
    t, tp = 0, fixed - 1
    total = sympy.S.Zero
    for (u, v, u2, v2), new in label_classes(fixed):
        weight = centring_weight(t, u) * centring_weight(tp, v) * centring_weight(t, u2) * centring_weight(tp, v2)
        total += label_choices(new, fixed) * weight * covariance(outputs, (u, v, u2, v2))
    return total / T**2
