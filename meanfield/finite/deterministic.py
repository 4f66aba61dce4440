"""rho(x) = -Im tr_out G(x + i0) / (pi n): the deterministic equivalent of the linear population's spectrum.

:mod:`meanfield.finite.population` writes the linear part of one output's gradient covariance over the inputs as
A^T A, A a linear map from independent Gaussian sources built from the weights by the Gaussian-equivalent
linearization of every unit. This module gives the limit of its spectrum as the widths grow at fixed ratios, with
no draw of the weights, and a profile of n modes from it.

The map A is a computation: with the nodes v = (h~^0; per hidden layer j: u~^j, h~^j, b^j, d~^j), K v = J s for
the sources s (inputs; per hidden layer xi, zeta and the product noise eta), where K = I minus the strictly
triangular layer-to-layer steps

    u~^j = W_j h~^{j-1},   h~^j = E phi' u~^j + mu_* xi^j,   b^j = W_{j+1}^T d~^{j+1},
    d~^j = vbar (nu_1 u~^j + nu_* (rho xi^j + sqrt(1 - rho^2) zeta^j)) + E phi' b^j + sqrt(vd |b^j|^2) eta^j,

and A s = R v reads off |dbar^{l}| h~^{l-1} and sqrt(|hbar^{l-1}|^2 + 1) d~^l (the sum of the population
module's blocks without their rank-2L cross terms, which move no part of the limiting law). Then A = R K^{-1} J
and the (out, out) block of the inverse of the symmetric pencil

    L(z) = [[z I, 0, R], [0, -J J^T, K], [R^T, K^T, 0]]

is (z - A A^T)^{-1} (Schur complement). L(z) is a deterministic part (per unit: gains that are functions of the
unit's mean pre-activation ubar ~ N(0, q_2) and of its backward mean vbar ~ N(0, |dbar|^2 sigma_w^2 / M), the
mean-field scalars of each layer) plus the Gaussian weight matrices W_j, each entering twice (forward in K,
backward in K^T). For such a pencil the resolvent of the units of one layer solves the matrix Dyson equation
(operator-valued semicircle over the layers' unit types; Anderson, Guionnet, Zeitouni, *An Introduction to Random
Matrices*, and Helton, Rashidi Far, Speicher, arXiv:math/0703510):

    G_j(unit) = (Lambda_j(unit, z) - S_j)^{-1},
    S_j = sigma_{w,j}^2 P_j <G_{j-1}> P_j^T + sigma_{w,j+1}^2 (M_{j+1} / M_j) P_{j+1}^T <G_{j+1}> P_{j+1},

<.> the mean over the layer's units (a quadrature over their types), P_j the channels W_j connects. Only a few
channels couple, so the unknowns are a few small matrices per layer, solved by Newton's method along the real
axis (z = x + i eta, eta -> 0+ relative to x; continuation from large x, and a homotopy in eta where Newton
leaves the physical branch Im G <= 0). The density rho of the n = sum of the output channels' dimensions modes
gives the profile (quantiles), the moments, the upper edge (a square-root fit rho^2 = a^2 (edge - x)) and the
share of the top mode on each channel (the ratio of that channel's spectral density to the total at the edge).

Finite width: the mean top of n modes is the edge plus the Tracy-Widom mean E[TW_1] (pi a n)^(-2/3) (the
edge scale of a real symmetric matrix with density a sqrt(edge - x) per mode), its variance Var[TW_1] (pi a n)^(-4/3).
At width M each unit's gains are those of its realized variance v_i = V (1 + O(M^(-1/2))), correlated with its row
of weights; :func:`gains_spread` gives the O(1/M) shift of the edge and of m_2 this makes (a third type variable in
the Dyson equation), and :func:`deterministic_population` applies it to the top. Checked against draws of the
population module in ``meanfield/notes/rmt.md`` (section 2c).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit, breaks, normal_rule
from .population import LinearPopulation

__all__ = ["PopulationLaw", "population_law", "deterministic_population", "channel_transforms", "gains_spread",
           "spread_note",
           "SPREAD_WIDTH", "TW_MEAN", "TW_VARIANCE", "POPULATION", "POPULATIONS"]

TW_MEAN, TW_VARIANCE = -1.2065, 1.6078  # mean and variance of the Tracy-Widom law TW_1 (real symmetric)
POPULATIONS = ("deterministic", "drawn")  # where the random-matrix model's population profile comes from
# the model's choice (meanfield.finite.model reads it when it builds a prediction's population): "deterministic"
# (this module) or "drawn" (the 24 pseudo-random weight draws of meanfield.finite.population, kept to compare)
POPULATION = "deterministic"


@dataclass(frozen=True, eq=False)
class PopulationLaw:
    """The limiting spectral law of the linear population A^T A (per mode; module docstring).

    Attributes:
        network: the network (plain).
        modes_per_width: n / M, the nonzero modes per unit of base width (the output channels' dimensions).
        x: ascending grid of eigenvalues (units of T G).
        density: rho(x) per mode (integrates to about 1 over the grid).
        cdf: the cumulative mass at x, normalized to end at 1.
        edge: the upper edge of the law.
        edge_density: a of rho(x) ~ a sqrt(edge - x) below the edge.
        moments: (m_1, m_2, m_3, m_4), the per-mode moments of the law.
        shares: per output channel (name, layer), its share of the spectral density at the edge (sums to 1).
    """

    network: Any
    modes_per_width: float
    x: np.ndarray
    density: np.ndarray
    cdf: np.ndarray
    edge: float
    edge_density: float
    moments: tuple
    shares: tuple

    def tw_scale(self, modes: int) -> float:
        """(pi a n)^(-2/3): the Tracy-Widom scale of the top of n modes."""
        return (math.pi * self.edge_density * modes) ** (-2.0 / 3.0)

    def top(self, modes: int) -> float:
        """E lambda_max of n modes: edge + E[TW_1] (pi a n)^(-2/3)."""
        return self.edge + TW_MEAN * self.tw_scale(modes)

    def top_variance(self, modes: int) -> float:
        """Var lambda_max of n modes (the Tracy-Widom part): Var[TW_1] (pi a n)^(-4/3)."""
        return TW_VARIANCE * self.tw_scale(modes) ** 2

    def share(self, channel: str, layer: int | None = None) -> float:
        """Share of the top mode on an output channel ("h": |dbar^{l+1}| h~^l, "d": d~^l), summed over layers unless
        ``layer`` is given."""
        return float(sum(v for (c, j), v in self.shares if c == channel and (layer is None or j == layer)))

    def quantiles(self, modes: int) -> np.ndarray:
        """The n-mode profile: eigenvalue k (descending) at the law's quantile 1 - (k - 1/2) / n."""
        q = 1.0 - (np.arange(modes) + 0.5) / modes
        return np.interp(q, self.cdf, self.x)

    def __str__(self) -> str:
        m = self.moments
        return (f"population law ({self.modes_per_width:g} M modes): edge {self.edge:.6g}, mean {m[0]:.6g}, "
                f"m2 {m[1]:.6g}")


def _unit_integrals(unit: Unit, mean: np.ndarray, sd: float) -> dict:
    """Per-type Gaussian integrals for u ~ N(mean, sd^2) (as in :mod:`meanfield.finite.population`)."""
    e, w = normal_rule(breaks(unit, mean, sd))
    u = mean[:, None] + sd * e
    f, d = np.asarray(unit.f(u), dtype=float), np.asarray(unit.df(u), dtype=float)
    ef, ed = (w * f).sum(1), (w * d).sum(1)
    return dict(ef=ef, ed=ed, vf=(w * f * f).sum(1) - ef**2, vd=(w * d * d).sum(1) - ed**2,
                cfd=(w * f * d).sum(1) - ef * ed, nu1=(w * d * (u - mean[:, None])).sum(1) / sd**2)


def _types(count: int) -> tuple:
    """Equal-mass nodes of N(0, 1) (midpoint quantiles, rescaled to unit variance) and their weights: a quadrature
    of the units' types without the tiny-weight extreme nodes of Gauss-Hermite (which split off spurious bands)."""
    from scipy.special import ndtri

    x = ndtri((np.arange(count) + 0.5) / count)
    return x / math.sqrt(float(np.mean(x * x))), np.full(count, 1.0 / count)


def _gains(unit: Unit, ubar: np.ndarray, V: float) -> tuple:
    """(integrals, mu_*, nu_*, rho) of the linearization of units with mean pre-activations ubar and variance V."""
    g = _unit_integrals(unit, ubar, math.sqrt(V))
    mus = np.sqrt(np.maximum(g["vf"] - g["ed"] ** 2 * V, 0.0))
    nus = np.sqrt(np.maximum(g["vd"] - g["nu1"] ** 2 * V, 0.0))
    both = mus * nus
    rho = np.clip(np.divide(g["cfd"] - g["ed"] * g["nu1"] * V, both, out=np.zeros_like(both), where=both > 0),
                  -1.0, 1.0)
    return g, mus, nus, rho


def _variance_ratio_spreads(net: Any, width: int, layers: dict, wu: np.ndarray) -> dict:
    """Per hidden layer j, sd of r = v_i / V over its units at width M: Var r = 2 tr K^2 / (tr K)^2 (Gaussian rows
    w_i, v_i = w_i^T K w_i), K the covariance of h~^{j-1}: K = (q_1 - q_2) I on the inputs, then per unit of layer j
    the diagonal Var phi and the off-diagonal E phi'_i E phi'_k w_i^T K' w_k, so tr K_j^2 / M_j = E[(Var phi)^2] +
    (E[(E phi')^2])^2 sigma_w^4 (M_j / M_{j-1}) tr K_{j-1}^2 / M_{j-1} (measured on draws, L = 3, M = 64 and 128:
    M Var r = 1.85-2.04 in layer 1 (formula 2), 3.6-3.9 tanh and 3.0-3.3 relu in layer 2 (formula 3.70, 3.08))."""
    q1, q2 = float(net.input_q1), float(net.input_q2)
    Ms = net.widths(width)[:net.depth]
    sw = [float(x) for x in net.sigma_w2]
    k2, vh, out = (q1 - q2) ** 2, q1 - q2, {}
    for j in range(1, net.depth):
        out[j] = math.sqrt(2.0 * k2 / (Ms[j - 1] * vh * vh))
        g = layers[j]["g"]
        k2 = float(wu @ g["vf"] ** 2) + float(wu @ g["ed"] ** 2) ** 2 * sw[j - 1] ** 2 * Ms[j] / Ms[j - 1] * k2
        vh = float(wu @ g["vf"])
    return out


def _pencil(net: Any, types: int, width: int | None = None, at_ratio: bool = True, profile: bool = True) -> tuple:
    """The per-layer blocks of the pencil: (spaces, links). A space (the input, or a hidden layer) has its channel
    names, per unit type the deterministic matrix Lambda without z, the type weights, the mask of the z channels, the
    width ratio and the coupled channels; a link (lower, upper, P, sigma_w^2, M_upper / M_lower) is a weight matrix.

    With ``width`` each hidden unit type is split by its variance ratio r = 1 -+ s_j (the spread at that width,
    :func:`_variance_ratio_spreads`): with ``profile`` its row of W_j is scaled by sqrt(r), with ``at_ratio`` its gains
    are those at r V (:func:`gains_spread`)."""
    L = net.depth
    base = 1024  # widths at fixed ratios; the +1 of the bias enters as 1 / M at this base, negligible in the limit
    Ms = net.widths(base)[:L]
    sw = [float(s) for s in net.sigma_w2]
    sb = [float(s) for s in net.sigma_b2]
    q1, q2 = float(net.input_q1), float(net.input_q2)
    xu, wu = _types(types)
    xg, wg = _types(types)
    layers = {}
    hb2, var = q2, q1 - q2  # per coordinate: the mean's square and the fluctuation's variance of h^{j-1}
    for j in range(1, L):
        Q2, V = sw[j - 1] * hb2 + sb[j - 1], sw[j - 1] * var
        if V <= 0:
            raise InvalidArgument("net", net.describe(), "a network whose hidden units fluctuate over the inputs")
        ubar = math.sqrt(max(Q2, 0.0)) * xu
        g, mus, nus, rho = _gains(Unit.of(net.phi(j)), ubar, V)
        layers[j] = dict(g=g, mus=mus, nus=nus, rho=rho, hb2=hb2, ubar=ubar, V=V)
        hb2, var = float(wu @ g["ef"] ** 2), float(wu @ g["vf"])
    spread = None if width is None else _variance_ratio_spreads(net, width, layers, wu)
    # backward: vbar^j ~ N(0, Vb_j / M_j) per unit, |dbar^j|^2 = E[ed^2] Vb_j, beta_j = M_j |b^j row|^2
    Vb, db2, beta = {L - 1: sw[L - 1]}, {L: 1.0}, {L - 1: 0.0}
    for j in range(L - 1, 0, -1):
        g = layers[j]["g"]
        db2[j] = float(wu @ g["ed"] ** 2) * Vb[j]
        if j > 1:
            Vb[j - 1] = sw[j - 1] * db2[j]
            beta[j - 1] = sw[j - 1] * (Vb[j] * float(wu @ g["vd"]) + float(wu @ (g["ed"] ** 2 + g["vd"])) * beta[j])
    spaces = []
    lam = np.zeros((1, 3, 3))
    lam[0, 0, 2] = lam[0, 2, 0] = math.sqrt(db2[1])
    lam[0, 1, 1] = -(q1 - q2)
    lam[0, 1, 2] = lam[0, 2, 1] = 1.0
    spaces.append(dict(ch=["oh", "Eh", "Nh"], layer=0, lam=lam, w=np.ones(1), z=np.array([1.0, 0.0, 0.0]),
                       M=Ms[0]))
    for j in range(1, L):
        lay = layers[j]
        ch = ["oh", "od", "Eu", "Eh", "Ed", "Nu", "Nh", "Nd"] + (["Eb", "Nb"] if j <= L - 2 else [])
        ix = {c: i for i, c in enumerate(ch)}
        k = len(xu)
        gg = xg[None, :] * math.sqrt(Vb[j])  # vbar sqrt(M) per type
        col = lambda a: np.asarray(a)[:, None] + 0.0 * gg  # noqa: E731 - a per-ubar gain on the type grid
        # the units' realized variance ratios r (rows of W_j scaled by sqrt(r)): a two-point rule 1 -+ s_j
        nodes = [(1.0, 1.0)] if spread is None else [(1.0 - spread[j], 0.5), (1.0 + spread[j], 0.5)]
        blocks, weights = [], []
        for r, wr in nodes:
            g, mus, nus, rho = lay["g"], lay["mus"], lay["nus"], lay["rho"]
            if r != 1.0 and at_ratio:
                g, mus, nus, rho = _gains(Unit.of(net.phi(j)), lay["ubar"], lay["V"] * r)
            lam = np.zeros((k, len(xg), len(ch), len(ch)))

            def sym(a: str, b: str, value: Any) -> None:
                lam[:, :, ix[a], ix[b]] = value
                lam[:, :, ix[b], ix[a]] = value

            sym("oh", "Nh", math.sqrt(db2[j + 1]))
            sym("od", "Nd", math.sqrt((Ms[j - 1] * lay["hb2"] + 1.0) / Ms[j]))
            mus, nus, rho, ed = col(mus), col(nus), col(rho), col(g["ed"])
            lam[:, :, ix["Eh"], ix["Eh"]] = -mus**2  # -J J^T: the sources' covariance per unit
            sym("Eh", "Ed", -mus * gg * nus * rho)
            lam[:, :, ix["Ed"], ix["Ed"]] = -(gg**2 * nus**2 + col(g["vd"]) * beta[j])
            sym("Eu", "Nu", 1.0)  # K: each node's equation
            sym("Eh", "Nh", 1.0)
            sym("Eh", "Nu", -ed)
            sym("Ed", "Nd", 1.0)
            sym("Ed", "Nu", -gg * col(g["nu1"]))
            if j <= L - 2:
                sym("Eb", "Nb", 1.0)
                sym("Ed", "Nb", -ed)
            if r != 1.0 and profile:
                # W_j = diag(sqrt r) W': the congruence by 1/sqrt(r) on the u~ equation and the d~ variable leaves W'
                # (Gaussian) in the links and the output channels' block of the inverse unchanged
                c = np.ones(len(ch))
                c[ix["Eu"]] = c[ix["Nd"]] = 1.0 / math.sqrt(r)
                lam = lam * c[:, None] * c[None, :]
            blocks.append(lam.reshape(k * len(xg), len(ch), len(ch)))
            weights.append(wr * (wu[:, None] * wg[None, :]).reshape(-1))
        z = np.array([1.0 if c in ("oh", "od") else 0.0 for c in ch])
        spaces.append(dict(ch=ch, layer=j, lam=np.concatenate(blocks), w=np.concatenate(weights), z=z, M=Ms[j]))
    links = []
    for j in range(L - 1):
        low, up = spaces[j], spaces[j + 1]
        P = np.zeros((len(up["ch"]), len(low["ch"])))
        P[up["ch"].index("Eu"), low["ch"].index("Nh")] = -1.0  # u~^{j+1} = W h~^j
        if "Eb" in low["ch"]:
            P[up["ch"].index("Nd"), low["ch"].index("Eb")] = -math.sqrt(low["M"] / up["M"])  # b^j = W^T d~^{j+1}
        links.append((j, j + 1, P, sw[j], up["M"] / low["M"]))
    for s in spaces:
        s["C"] = set()
    for lo, up, P, _, _ in links:
        spaces[up]["C"] |= set(np.nonzero(np.abs(P).sum(1))[0].tolist())
        spaces[lo]["C"] |= set(np.nonzero(np.abs(P).sum(0))[0].tolist())
    for s in spaces:
        # a channel tied only to coupled ones (an even unit with centred pre-activations, e.g. abs or cos at
        # sigma_b^2 = 0: E phi' = 0 cuts the backward mean channel Nb from the eliminated block) would leave a zero
        # row in Lambda_RR: it is kept among the coupled channels, where its block stays invertible
        # (zero up to the quadrature's rounding of E phi' = 0); keeping a channel coupled is exact either way
        tiny = 1e-12 * float(np.abs(s["lam"]).max())
        changed = True
        while changed:
            changed = False
            for i in range(len(s["ch"])):
                rest = [r for r in range(len(s["ch"])) if r not in s["C"]]
                if i in s["C"] or s["z"][i]:
                    continue
                if float(np.abs(s["lam"][:, i, rest]).max()) <= tiny:
                    s["C"].add(i)
                    changed = True
        s["C"] = np.array(sorted(s["C"]))
        s["lam"] = s["lam"].astype(complex)
    return spaces, links


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for stacks of tiny matrices, as a sum over the (short) inner index: numpy's batched matmul costs several
    times more at these sizes (2 or 3)."""
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for j in range(1, a.shape[-1]):
        out = out + a[..., :, j:j + 1] * b[..., j:j + 1, :]
    return out


def _small_inverse(a: np.ndarray) -> np.ndarray:
    """inv(a) for a stack of 1 x 1, 2 x 2 or 3 x 3 matrices by the adjugate (a LAPACK call per matrix costs far more
    at these sizes; larger stacks go to :func:`numpy.linalg.inv`)."""
    c = a.shape[-1]
    if c == 1:
        return 1.0 / a
    if c == 2:
        out = np.empty_like(a)
        out[..., 0, 0], out[..., 1, 1] = a[..., 1, 1], a[..., 0, 0]
        out[..., 0, 1], out[..., 1, 0] = -a[..., 0, 1], -a[..., 1, 0]
        out /= (a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0])[..., None, None]
        return out
    if c == 3:
        (a00, a01, a02), (a10, a11, a12), (a20, a21, a22) = [[a[..., i, j] for j in range(3)] for i in range(3)]
        out = np.empty_like(a)
        # the cofactors (the inverse's numerator, transposed)
        out[..., 0, 0], out[..., 0, 1] = a11 * a22 - a12 * a21, a21 * a02 - a22 * a01
        out[..., 0, 2], out[..., 1, 0] = a01 * a12 - a02 * a11, a12 * a20 - a10 * a22
        out[..., 1, 1], out[..., 1, 2] = a22 * a00 - a20 * a02, a02 * a10 - a00 * a12
        out[..., 2, 0], out[..., 2, 1] = a10 * a21 - a11 * a20, a20 * a01 - a21 * a00
        out[..., 2, 2] = a00 * a11 - a01 * a10
        out /= (a00 * out[..., 0, 0] + a01 * out[..., 1, 0] + a02 * out[..., 2, 0])[..., None, None]
        return out
    return np.linalg.inv(a)


class _Dyson:
    """The matrix Dyson equation of the pencil: Newton's method on the coupled channels' self-energies.

    At each z the uncoupled channels R of every unit type are eliminated once (Schur complement), so that an
    iteration inverts only the few coupled channels C: G_CC = (Lambda_CC - Lambda_CR Lambda_RR^{-1} Lambda_RC -
    S)^{-1}."""

    def __init__(self, spaces: list, links: list):
        self.spaces, self.links = spaces, links
        self.sizes = [len(s["C"]) for s in spaces]
        self.offsets = np.cumsum([0] + [c * c for c in self.sizes])
        for s in spaces:
            s["R"] = np.array([i for i in range(len(s["ch"])) if i not in set(s["C"].tolist())])
            R = s["R"]
            s["zmask"] = s["z"][R]
            s["zi"] = np.nonzero(s["zmask"])[0]
            s["out"] = [(s["ch"][R[i]][1], s["layer"]) for i in s["zi"]]
        self.refs: dict = {}
        self.z: complex | None = None
        self.homotopies = 0
        # each link's coupled block of P and the Kronecker products its Jacobian blocks need
        self.maps = []
        for lo, up, P, s2, ratio in links:
            p = P[np.ix_(spaces[up]["C"], spaces[lo]["C"])]
            self.maps.append((lo, up, p, s2 * np.kron(p, p), s2 * ratio * np.kron(p.T, p.T), s2, ratio))
        # the whole map S[<G>] on the stacked (row-major) self-energies: vec(p X p^T) = (p kron p) vec(X)
        n, o = self.offsets[-1], self.offsets
        self.K, self.eye = np.zeros((n, n)), np.eye(n)
        for lo, up, _, kup, klo, _, _ in self.maps:
            self.K[o[up]:o[up + 1], o[lo]:o[lo + 1]] += kup
            self.K[o[lo]:o[lo + 1], o[up]:o[up + 1]] += klo

    def blocks(self, vec: np.ndarray) -> list:
        return [vec[self.offsets[k]:self.offsets[k + 1]].reshape(c, c) for k, c in enumerate(self.sizes)]

    def reference(self, z: complex) -> tuple:
        """z0 = i 10^k, k the nearest decade of |z|, and per space the blocks of the pencil's elimination at z0.

        z enters only the z channels' diagonal of the R block: A_RR(z) = A0 + (z - z0) E E^T (E selects them). By
        Woodbury, with X0 = A0^{-1} and W = (I + (z - z0) N0)^{-1}, N0 = E^T X0 E: E^T X E = N0 W, E^T X A_RC = W V
        and A_CR X A_RC = A_CR X0 A_RC - (z - z0) U W V (U = A_CR X0 E, V = E^T X0 A_RC). So per z only nz x nz
        inverses (nz <= 2), not a LAPACK call per unit type; a reference within a decade of |z| keeps the rounding
        of I + (z - z0) N0 at that of the direct inverse (z spans 1e-7 to 1e4 of the mean eigenvalue)."""
        k = int(round(math.log10(abs(z))))
        if k not in self.refs:
            z0, blocks = 1j * 10.0**k, []
            for s in self.spaces:
                C, R, lam, zi = s["C"], s["R"], s["lam"], s["zi"]
                X0 = np.linalg.inv(lam[:, R[:, None], R[None, :]] + z0 * np.diag(s["zmask"])[None])
                ARC, ACR = lam[:, R[:, None], C[None, :]], lam[:, C[:, None], R[None, :]]
                blocks.append((lam[:, C[:, None], C[None, :]] - ACR @ X0 @ ARC, X0[:, zi[:, None], zi[None, :]],
                               ACR @ X0[:, :, zi], X0[:, zi, :] @ ARC))
            self.refs[k] = (z0, blocks)
        return self.refs[k]

    def at(self, z: complex) -> None:
        """Eliminate the uncoupled channels at z (once per z): per space (L~_CC, E^T X E, E^T X A_RC, A_CR X E)."""
        if z == self.z:
            return
        z0, blocks = self.reference(z)
        self.z, self.parts = z, []
        d = z - z0
        for K0, N0, U, V in blocks:
            W = _small_inverse(np.eye(N0.shape[-1])[None] + d * N0)
            UW = _mm(U, W)
            self.parts.append((K0 + d * _mm(UW, V), _mm(N0, W), _mm(W, V), UW))

    def coupled(self, z: complex, vec: np.ndarray) -> list:
        self.at(z)
        return [_small_inverse(Lt - S[None]) for (Lt, _, _, _), S in zip(self.parts, self.blocks(vec))]

    def residual(self, z: complex, vec: np.ndarray) -> tuple:
        """F(S) = S[<G>] - S and its Jacobian (d<G> = <G dS G> on the coupled channels)."""
        n, o = self.offsets[-1], self.offsets
        means, pairs = np.empty(n, complex), np.zeros((n, n), complex)
        for k, (s, GC) in enumerate(zip(self.spaces, self.coupled(z, vec))):
            t, c = GC.shape[0], GC.shape[1]
            wG = (s["w"][:, None] * GC.reshape(t, c * c))  # rows (a, c')
            means[o[k]:o[k + 1]] = wG.sum(0)
            # pairs[(a, b), (c', d)] = <G_ac' G_db>: one product over the types, (a c') x (b d) reordered
            right = GC.transpose(0, 2, 1).reshape(t, c * c)  # rows (b, d): G_db
            pairs[o[k]:o[k + 1], o[k]:o[k + 1]] = (wG.T @ right).reshape(c, c, c, c).transpose(0, 2, 1, 3).reshape(
                c * c, c * c)
        return self.K @ means - vec, self.K @ pairs - self.eye

    def newton(self, z: complex, vec: np.ndarray, maxit: int = 40) -> tuple:
        for _ in range(maxit):
            F, J = self.residual(z, vec)
            step = np.linalg.solve(J, -F)
            vec = vec + step
            if np.abs(step).max() <= 1e-10 * (1.0 + np.abs(vec).max()):
                return vec, True
        return vec, False

    def channels(self, z: complex, vec: np.ndarray) -> dict:
        """tr of G over each output channel of each layer (the counts of modes, not per unit): the z channels' diagonal
        of G_RR = X + X A_RC G_CC A_CR X."""
        out = {}
        for s, GC, (_, XZZ, left, right) in zip(self.spaces, self.coupled(z, vec), self.parts):
            diag = np.diagonal(XZZ, axis1=1, axis2=2) + (_mm(left, GC) * right.transpose(0, 2, 1)).sum(-1)
            mean = s["w"] @ diag
            for m, key in zip(mean, s["out"]):
                out[key] = s["M"] * m
        return out

    def physical(self, z: complex, vec: np.ndarray) -> tuple:
        """Newton from ``vec`` and the output channels' traces if it converged to the physical solution (Im G <= 0 on
        every output channel), else (its end, None)."""
        new, ok = self.newton(z, vec)
        if ok:
            ch = self.channels(z, new)
            if all(v.imag <= 1e-10 * abs(v) for v in ch.values()):
                return new, ch
        return new, None

    def solve(self, z: complex, vec: np.ndarray) -> tuple:
        """The physical solution at z: Newton from ``vec`` (:meth:`physical`), else a homotopy in Im z from far
        above."""
        new, ch = self.physical(z, vec)
        if ch is not None:
            return new, ch
        self.homotopies += 1
        v = vec
        for eta in np.geomspace(max(abs(z), 1.0), z.imag, 30):
            v, _ = self.newton(complex(z.real, eta), v)
        ch = self.channels(z, v)
        return v, {k: complex(c.real, min(c.imag, 0.0)) for k, c in ch.items()}


def _moments(dyson: "_Dyson", n_out: float, radius: float, vec: np.ndarray, points: int = 24) -> tuple:
    """(m_1, m_2, m_3, m_4) per mode: m_k = (1/2 pi i) contour integral of z^k m(z) on the circle |z| = radius around
    the spectrum, by the trapezoid rule (m(conj z) = conj m(z): the upper half; relative error of order
    (spectral radius / radius)^(2 points))."""
    zs = radius * np.exp(1j * (np.arange(points) + 0.5) * math.pi / points)
    ms, v = [], np.zeros_like(vec)
    for z in zs:  # each from the solution at the previous point
        v, _ = dyson.newton(complex(z), v)
        ms.append(sum(dyson.channels(complex(z), v).values()) / n_out)
    ms = np.array(ms)
    # (1/2 pi) int_0^{2 pi} z^{k+1} m(z) dtheta = (1/pi) Re int_0^pi z^{k+1} m(z) dtheta
    return tuple(float((zs ** (k + 1) * ms).real.mean()) for k in (1, 2, 3, 4))


def _per_structure(fn: Any) -> Any:
    """Cache ``fn(net, types)`` once per hidden structure: the key is the network with one output and the checked
    ``types``, however the arguments were passed (an ``lru_cache`` on the function itself keys ``f(net)`` and
    ``f(net, 12)`` apart, and the output count apart, and solved the same law up to three times per prediction)."""
    cached = functools.lru_cache(maxsize=64)(fn)

    @functools.wraps(fn)
    def call(net: Any, types: int = 12) -> Any:
        from ..spec.network import Network

        if not isinstance(net, Network):
            raise InvalidArgument("net", net, "a meanfield Network")
        return cached(net.with_(outputs=1), check_int("types", types, minimum=2))

    call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return call


@_per_structure
def population_law(net: Any, types: int = 12) -> PopulationLaw:
    """rho(x): the limiting spectral law of the linear population of one output (module docstring).

    Args:
        net: a plain numeric :class:`~meanfield.spec.network.Network` (one output is used: each output's block has
            this law).
        types: quadrature nodes per unit-type variable (the unit's mean pre-activation and its backward mean).

    Returns:
        :class:`PopulationLaw`.

    Example:
        >>> from meanfield.spec.network import Network
        >>> law = population_law(Network(2, "relu", 2, 0))
        >>> law.modes_per_width, round(float(law.cdf[-1]), 6), law.edge > law.moments[0]
        (3.0, 1.0, True)
    """
    if net.norms or net.is_symbolic:  # (the type, the output count and types are checked by _per_structure)
        raise InvalidArgument("net", net.describe(), "a numeric network without normalization layers")
    if net.depth < 2:
        raise InvalidArgument("net", net.describe(), "a network with a hidden layer")
    spaces, links = _pencil(net, types)
    dyson = _Dyson(spaces, links)
    n_out = sum(s["M"] * s["z"].sum() for s in spaces)
    base = spaces[0]["M"] / float(net.alphas[0])
    vec = np.zeros(dyson.offsets[-1], complex)

    last: list = []  # the two previous solutions (z, S) of a continuation, for a linear predictor of the next start

    def density(x: float, eta: float, start: np.ndarray) -> tuple:
        z = complex(x, eta)
        chained = bool(last) and last[-1][1] is start  # continuing from the previous point's solution
        if chained and len(last) == 2 and last[1][0] != last[0][0]:
            # Newton from the linear extrapolation of the last two solutions: one iteration fewer per point (the
            # same root: Newton stops at a relative step of 1e-10, well inside its quadratic convergence)
            (z0, v0), (z1, v1) = last
            v, ch = dyson.physical(z, v1 + (v1 - v0) * ((z - z1) / (z1 - z0)))
            if ch is None:  # not the physical branch from there: as without the predictor
                v, ch = dyson.solve(z, start)
        else:
            v, ch = dyson.solve(z, start)
        last[:] = (last[-1:] if chained else []) + [(z, v)]
        return v, -sum(ch.values()).imag / (math.pi * n_out), ch

    # the mean eigenvalue from large z (m(z) = 1/z + m_1/z^2 + ...): the scale of the grids
    z0 = 1e4 + 1e4j
    vec, _ = dyson.newton(z0, vec)
    m = sum(dyson.channels(z0, vec).values()) / n_out
    mean = float(((m - 1.0 / z0) * z0 * z0).real)
    small = 1e-7 * mean
    # a point above the spectrum, then down in steps of the mean until a density appears, then the edge finely
    x, step = 40.0 * mean, 1.0 * mean
    vec, _ = dyson.newton(complex(x, mean), vec)
    vec, r, _ = density(x, small, vec)
    while r * mean > 1e-6:
        x *= 2.0
        vec, r, _ = density(x, small, vec)
    above = (x, vec)
    while r * mean <= 1e-6 and x > step:
        above, x = (x, vec), x - step
        vec, r, _ = density(x, small, vec)
    x_hi, v_hi = above
    xs_edge = np.linspace(x_hi, x_hi - 3.0 * step, 31)[1:]
    pts, v = [], v_hi
    for x in xs_edge:
        v, r, ch = density(x, small, v)
        pts.append((x, r, ch))
    rs = np.array([r for _, r, _ in pts])
    resolved = np.nonzero(rs * mean > 1e-4)[0]
    first = resolved.min() if resolved.size else len(pts) - 6
    # rho^2 = a^2 (edge - x) + O((edge - x)^2): a quadratic through the first resolved points, its root above them
    fit = np.arange(first, min(first + 8, len(pts)))
    coef = np.polyfit(xs_edge[fit] - xs_edge[first], rs[fit] ** 2, 2)
    roots = [r.real for r in np.roots(coef) if abs(r.imag) < 1e-12 and 0.0 <= r.real <= step]
    slope = float(np.polyval(np.polyder(coef), min(roots))) if roots else 0.0
    if not roots or slope >= 0:  # no root just above the points (the type quadrature's wiggles): a straight line
        coef = np.polyfit(xs_edge[fit] - xs_edge[first], rs[fit] ** 2, 1)
        roots, slope = [max(-coef[1] / coef[0], 0.0)] if coef[0] < 0 else [0.0], min(float(coef[0]), 0.0)
    edge = float(xs_edge[first] + min(roots))
    if slope >= 0:
        raise InvalidArgument("net", net.describe(), "a population law with a square-root upper edge",
                              "the edge fit failed; try more types")
    a = math.sqrt(-slope)
    ch_top = pts[first][2]
    total = sum(-c.imag for c in ch_top.values())
    shares = tuple(sorted(((name, layer), float(-c.imag / total)) for (name, layer), c in ch_top.items()))
    # the bulk below: linear down to the mean, geometric below it (many small modes), relative smoothing 2% below
    # the mean (the type quadrature makes fine structure there), a small absolute one above it
    grid = np.concatenate([np.linspace(xs_edge[-1], mean, 40, endpoint=False), np.geomspace(mean, 1e-6 * mean, 20)])
    xs, rho = list(xs_edge[::-1]) + [x_hi], list(rs[::-1]) + [0.0]
    for x in grid:
        v, r, _ = density(x, max(0.02 * min(x, mean), small), v)
        xs.insert(0, x)
        rho.insert(0, max(r, 0.0))
    xs, rho = np.array(xs), np.array(rho)
    moments = _moments(dyson, n_out, 2.0 * x_hi, vec)
    # the cdf from the top down (rho is normalized exactly, per mode): the modes near 0 (units with nearly vanishing
    # gains: spiky at a finite number of types, and poorly resolved) take whatever mass is left at the bottom
    above = np.concatenate([np.cumsum((0.5 * (rho[1:] + rho[:-1]) * np.diff(xs))[::-1])[::-1], [0.0]])
    cdf = np.clip(1.0 - above, 0.0, 1.0)
    return PopulationLaw(net, float(n_out / base), xs, rho, cdf, edge, a, moments, shares)


SPREAD_WIDTH = 256  # the width at which gains_spread evaluates its two-point rule (the shift is O(1/M): scaled)


def _real_edge(dyson: "_Dyson", guess: float, mean: float) -> float:
    """The upper edge as the fold of the real solution: continued down the real axis from 1.3 ``guess`` to 1.025
    ``guess``, the smallest singular value s of the Newton Jacobian vanishes like sqrt(x - edge); a quadratic fit of s^2
    through the last five points gives its root. Newton cannot leave the real axis from a real start, so the
    continuation stops at the first point below the fold (it fails to converge); nan if fewer than five points are
    left or s does not fall monotonically through them (a pole of the real solution on the way, not a fold)."""
    vec = np.zeros(dyson.offsets[-1], complex)
    vec, _ = dyson.newton(complex(3.0 * guess, mean), vec)
    vec, _ = dyson.newton(complex(3.0 * guess, 0.0), vec)
    xs, sv = [], []
    for t in (0.3, 0.2, 0.14, 0.1, 0.07, 0.05, 0.035, 0.025):
        x = guess * (1.0 + t)
        new, ok = dyson.newton(complex(x, 0.0), vec)
        if not ok:
            break
        vec = new
        xs.append(x)
        sv.append(float(np.linalg.svd(dyson.residual(complex(x, 0.0), vec)[1], compute_uv=False)[-1]))
    if len(xs) < 5 or not np.all(np.diff(sv[-5:]) < 0):  # a pole on the way (an outlier of the law), no clean fold
        return math.nan
    coef = np.polyfit(np.array(xs[-5:]) - xs[-1], np.array(sv[-5:]) ** 2, 2)
    roots = [r.real for r in np.roots(coef) if abs(r.imag) < 1e-12 and r.real < 0.0]
    return xs[-1] + max(roots) if roots else math.nan


def spread_note(net: Any) -> str:
    """Whether :func:`deterministic_population` applies the units' realized variances (:func:`gains_spread`) to this
    plain network's population top: the sentence a prediction's notes carry.

    Example:
        >>> from meanfield.spec.network import Network
        >>> spread_note(Network(3, "tanh", 1, 0.1))
        "the top's O(1/M) term from the units' realized variances (gains_spread)"
    """
    from ..spec.network import Network

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    try:
        gains_spread(net)
    except InvalidArgument:
        return ("the top's O(1/M) term from the units' realized variances is not derived for this network (the law's "
                "real solution has no fold above its edge): the limiting law's top")
    return "the top's O(1/M) term from the units' realized variances (gains_spread)"


@_per_structure
def gains_spread(net: Any, types: int = 12) -> tuple[float, float]:
    """(c_e, c_m): the units' realized variances move the law's upper edge by c_e edge / M and m_2 by c_m m_2 / M.

    At width M unit i's pre-activation variance over the inputs, v_i = w_i^T K w_i (w_i its row of W_j, K the
    covariance of the layer below), spreads around the mean-field V as r_i = v_i / V = 1 + O(M^(-1/2)), with
    Var r = 2 tr K^2 / (tr K)^2 (:func:`_variance_ratio_spreads`), and the draws of
    :mod:`meanfield.finite.population` evaluate each unit's gains at v_i. In the Dyson equation a third type
    variable r (a two-point rule 1 -+ sqrt(Var r) at :data:`SPREAD_WIDTH`) carries it in two places: the row of
    W_j scaled by sqrt(r) (a congruence of the unit's deterministic block, which leaves W' Gaussian), and the
    gains at r V. The correction is the difference between the gains at r V and the gains at V, both with the
    rows scaled (what the draws' realized gains change against gains at the layer's mean variance; the rows' own
    spread is left out like the other O(1/M) terms of a Gaussian matrix, which the law does not carry). Both
    edges from the fold of the real solution (:func:`_real_edge`), both m_2 from the contour integral; the shift is
    O(Var r) = O(1/M), scaled from :data:`SPREAD_WIDTH`. It vanishes for a linear network (gains that do not
    depend on the variance).

    Args:
        net: as :func:`population_law`.
        types: as :func:`population_law`.

    Returns:
        (c_e, c_m), floats.

    Raises:
        InvalidArgument: if the real solution has no fold above the law's edge (no square-root edge).

    Example:
        >>> from meanfield.spec.network import Network
        >>> [abs(c) < 1e-9 for c in gains_spread(Network(2, "linear", 1.0, 0.0))]
        [True, True]
        >>> edge, m2 = gains_spread(Network(3, "tanh", 1.0, 0.1))
        >>> bool(-3.0 < edge < -1.0)  # about -2.25: the edge 3.5% lower at M = 64
        True
    """
    law = population_law(net, types)
    edges, m2 = [], []
    for at_ratio in (True, False):
        spaces, links = _pencil(net, types, width=SPREAD_WIDTH, at_ratio=at_ratio)
        dyson = _Dyson(spaces, links)
        n_out = sum(s["M"] * s["z"].sum() for s in spaces)
        edges.append(_real_edge(dyson, law.edge, law.moments[0]))
        # on |z| = 3 edge the trapezoid rule's relative error is of order 3^(-12) with 6 points
        m2.append(_moments(dyson, n_out, 3.0 * law.edge, np.zeros(dyson.offsets[-1], complex), 6)[1])
    if not all(math.isfinite(e) for e in edges):
        raise InvalidArgument("net", net.describe(), "a population law with a square-root upper edge",
                              "the gains' spread: no fold of the real solution above the edge")
    return (float((edges[0] - edges[1]) / law.edge * SPREAD_WIDTH),
            float((m2[0] - m2[1]) / law.moments[1] * SPREAD_WIDTH))


def deterministic_population(net: Any, width: int, types: int = 12, spread: bool = True) -> LinearPopulation:
    """The linear population of width M without weight draws: the law's n-mode profile (n = the output channels'
    dimensions), with its top at edge + E[TW_1] s and a two-point quadrature of the top's spread.

    The profile is the law's quantiles (:meth:`PopulationLaw.quantiles`) with the top mode replaced by the mean
    finite-n top, corrected (``spread``) for the units' realized variances to first order in 1/M
    (:func:`gains_spread`: the top moved with the edge, and divided by the square root of the profile's relative
    change of m_2, since the model scales each population to the four-point tr Sigma^2; not applied where
    :func:`gains_spread` finds no fold, e.g. silu or leaky relu at L = 3); two populations carry
    top +- sqrt(Var[TW_1]) s (s the Tracy-Widom scale), so that the spread over the weights
    (:attr:`LinearPopulation.top_relative_variance`) is the derived Tracy-Widom variance. The top mode's share on
    the output layer's weights is the law's share of the output layer's forward channel at the edge; for two
    outputs, the correlation of their tops is taken as that same share, the closest derived quantity: the output
    layer's forward term H_L^T H_L is the same matrix for every output (coefficient |dbar^L|^2 = 1), while every
    other term carries the output's own weights, through |dbar^l|^2 and the
    backward maps, whose output-specific O(M^(-1/2)) fluctuations exceed the Tracy-Widom scale n^(-2/3).

    Args:
        net: a plain numeric network (with 2 outputs, the pair of tops is filled in).
        width: M.
        types: as :func:`population_law`.
        spread: apply the gains' spread correction (False: the law's top as it is, to compare).

    Returns:
        :class:`~meanfield.finite.population.LinearPopulation` (seed -1: no draws).

    Example:
        >>> from meanfield.spec.network import Network
        >>> pop = deterministic_population(Network(2, "relu", 2, 0), 64)
        >>> len(pop.eigenvalues), pop.eigenvalues[0].size, 0 < pop.output_layer_share < 1
        (2, 192, True)
    """
    from ..spec.network import Network

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    M = check_int("width", width, minimum=2)
    if not isinstance(spread, bool):
        raise InvalidArgument("spread", spread, "True or False")
    single = net.with_(outputs=1)
    law = population_law(single, types)
    n = int(round(law.modes_per_width * M))
    profile = law.quantiles(n)  # descending
    top, sd = law.top(n), math.sqrt(law.top_variance(n))
    if spread:
        # the units' realized variances (gains_spread): the edge moves by c_e edge / M; the profile's m_2 by c_m / M,
        # which the model's scaling to the four-point tr Sigma^2 turns into a factor on the top. Where the real
        # solution has no clean fold above the law's edge (silu or leaky relu at L = 3: a pole on the way) the
        # correction is not derived and the law's top stays as it is (the population is approximate there anyway)
        try:
            c_edge, c_m2 = gains_spread(single, types)
        except InvalidArgument:
            c_edge, c_m2 = 0.0, 0.0
        if not 1.0 + c_m2 / M > 0.0 or not top + c_edge * law.edge / M > 0.0:
            raise InvalidArgument("width", M, "a width at which the gains' spread is a small correction",
                                  f"relative shifts {c_edge / M:.3g} (edge), {c_m2 / M:.3g} (m_2)")
        top = (top + c_edge * law.edge / M) / math.sqrt(1.0 + c_m2 / M)
    # the mean top sits above the second quantile; the two-point quadrature must keep the top mode on top
    sd = min(sd, max(top - profile[1], 0.0))
    pops = []
    for sign in (1.0, -1.0):
        e = profile.copy()
        e[0] = top + sign * sd
        pops.append(e)
    share = law.share("h", net.depth - 1)
    overlaps: tuple = ()
    if net.outputs > 1:
        c = min(max(share, 0.0), 1.0)
        r = math.sqrt(1.0 - c * c)
        overlaps = tuple((top + sd * u, top + sd * (c * u + r * v)) for u in (1.0, -1.0) for v in (1.0, -1.0))
    return LinearPopulation(net, M, -1, tuple(pops), (share, share), overlaps)


def channel_transforms(net: Any, points: tuple, types: int = 12) -> tuple:
    """g_c(z) = tr_c (z - A A^T)^(-1) / n per output channel c, at real points z above the law's upper edge.

    The resolvent of the linear population at real z outside its spectrum, split by output channel (name, layer) as
    in :attr:`PopulationLaw.shares`; per mode (n the channels' total dimension), so that sum_c g_c(z) = int rho(x) /
    (z - x) dx. Used by :mod:`meanfield.finite.blockshare` for the output layer's share of a sample block's top.

    Args:
        net: as :func:`population_law`.
        points: real z values (units of T G), each above :attr:`PopulationLaw.edge`.
        types: as :func:`population_law`.

    Returns:
        one dict {(name, layer): g_c(z)} (real floats) per point, in the order given.

    Example:
        >>> from meanfield.spec.network import Network
        >>> net = Network(2, "relu", 2, 0)
        >>> g = channel_transforms(net, (4.0 * population_law(net).edge,))[0]
        >>> bool(0 < sum(g.values()) < 1 / population_law(net).edge)
        True
    """
    law = population_law(net, types)
    zs = [float(z) for z in points]
    for z in zs:
        if not (math.isfinite(z) and z > law.edge):
            raise InvalidArgument("points", z, f"real z above the population law's edge {law.edge:.6g}")
    spaces, links = _pencil(net.with_(outputs=1), check_int("types", types, minimum=2))
    dyson = _Dyson(spaces, links)
    n_out = sum(s["M"] * s["z"].sum() for s in spaces)
    mean = law.moments[0]
    vec = np.zeros(dyson.offsets[-1], complex)
    out: dict = {}
    # continuation from far above the spectrum down to each point (descending), a vanishing imaginary part
    start = max(zs + [40.0 * mean])
    vec, _ = dyson.newton(complex(start, mean), vec)
    for z in sorted(set(zs), reverse=True):
        vec, ch = dyson.solve(complex(z, 1e-9 * mean), vec)
        out[z] = {key: float(c.real) / n_out for key, c in ch.items()}
    return tuple(out[z] for z in zs)
