"""The population covariance of one output's gradient over the inputs, given the weights (its linear part).

Given the weights W, the inputs x are iid, and the centred Gram of one output's block is a sample Gram of the
iid vectors c(x) = g(x) - E_x g (g = d f / d theta). Its bulk is set by the population covariance
Sigma_W = Cov_x(g): :mod:`meanfield.finite.model` needs its spectrum, not just its first traces (the top of the
population sets lambda_max once T >> M). Layer l's weight gradient is delta^l (x) h^{l-1}; writing
delta = delta-bar + delta~ and h = h-bar + h~ (means over x given W),

    c_l(x) = delta-bar^l (x) h~^{l-1}(x) + delta~^l(x) (x) h-bar^{l-1} + [delta~ (x) h~ - E]   (bias: h = 1),

the first two terms are the *linear* part (rank O(M): M-dimensional fluctuations carried along the mean of
the other factor); the last (the tensor part, M^2-dimensional) acts as a multiple of the identity while
T << M^2 and is the identity shift of the model.

The linear part is a linear image of independent Gaussian sources under the Gaussian-equivalent
linearization of each unit: for u ~ N(u-bar, v) (per unit, given W, over x),

    phi(u)  = E phi  + mu_1 (u - u-bar) + mu_* xi,     mu_1 = E phi'  (Stein),  mu_*^2 = Var phi - mu_1^2 v,
    phi'(u) = E phi' + nu_1 (u - u-bar) + nu_* zeta,   nu_1 = Cov(phi', u)/v,   nu_*^2 = Var phi' - nu_1^2 v,

with xi, zeta standard normal, independent across units and layers, correlated within a unit as
(Cov(phi, phi') - mu_1 nu_1 v) / (mu_* nu_*). Forward, h~^j = mu_1 W^j h~^{j-1} + mu_* xi^j (h~^0 = the
inputs' fluctuation); backward, with v-bar = W^{l+1 T} delta-bar^{l+1},

    delta-bar^l = E phi'(u^l) v-bar,
    delta~^l   = (nu_1 u~^l + nu_* zeta^l) v-bar + E phi'(u^l) W^{l+1 T} delta~^{l+1}
                 + [(phi' - E phi') W^{l+1 T} delta~^{l+1}],

the bracket a product of two fluctuations, kept as independent per-unit noise of its variance. So
c_lin = A s with s the stacked sources and, summing the layers' blocks of A^T A,

    A^T A = sum_l |delta-bar^l|^2 H_l^T H_l + (|h-bar^{l-1}|^2 + 1) D_l^T D_l + H_l^T h-bar (D_l^T delta-bar)^T + transpose,

H_l, D_l the maps from sources to h~^{l-1}, delta~^l. Its nonzero eigenvalues are the linear part's population
spectrum (units of T G, i.e. of g . g'). Each draw of W gives one (the top of a finite-M population
fluctuates from draw to draw); the per-unit Gaussian integrals use the realized means and variances of the
draw. Checked against sampled networks through the model in ``derivations/rmt.md`` (section 4c). The draws are
pseudo-random (numpy seeds): a low-discrepancy point set is balanced coordinate by coordinate but does not have a
random matrix's spectrum (section 6 there), so the model averages a fixed set of draws and states their error.
Each draw's full spectrum is a dense symmetric eigenvalue problem; its top eigenpair and a second output's top
come from Lanczos with a fixed start vector, and the layers' forward Grams are shared by the two outputs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit, breaks, normal_rule

__all__ = ["LinearPopulation", "linear_population"]


@dataclass(frozen=True, eq=False)
class LinearPopulation:
    """Eigenvalues of the linear part of Cov_x(g) for one output, one array per draw of the weights.

    Attributes:
        network: the network (without normalization layers).
        width: M of the draws.
        seed: seed of the first draw (draw i uses ``seed + i``).
        eigenvalues: tuple of arrays (descending, units of T G), one per draw.
        top_shares: per draw, the share of the top eigenvalue carried by the output layer's own weights (the
            Rayleigh quotient of the top eigenvector on the output layer's forward term over the eigenvalue): the
            part of the top mode that is exactly orthogonal between different outputs (empty if not computed).
        top_overlaps: per draw, for a network with C >= 2 outputs, (top_1, top_2): the tops of two outputs'
            populations on the same hidden weights (their covariance is the part of a top two outputs share).
    """

    network: Any
    width: int
    seed: int
    eigenvalues: tuple
    top_shares: tuple = ()
    top_overlaps: tuple = ()

    @property
    def top_pair_covariance(self) -> float:
        """Cov(top_1, top_2) / E top^2 over draws: the part of a population top shared by two outputs (their hidden
        weights are the same; 0 if not computed)."""
        if not self.top_overlaps:
            return 0.0
        pairs = np.array(self.top_overlaps)
        mean = pairs.mean()
        return float(np.mean((pairs[:, 0] - mean) * (pairs[:, 1] - mean)) / mean**2)

    @property
    def top_relative_variance(self) -> float:
        """Var(top) / E top^2 over draws (and over the two outputs when computed)."""
        tops = np.array([e[0] for e in self.eigenvalues] + [b for _, b in self.top_overlaps])
        return float(tops.var() / tops.mean() ** 2)

    @property
    def output_layer_share(self) -> float:
        """Mean over draws of the top mode's share on the output layer's weights (1 if not computed)."""
        return float(np.mean(self.top_shares)) if self.top_shares else 1.0

    @property
    def trace(self) -> float:
        """Mean over draws of the linear part's trace."""
        return float(np.mean([e.sum() for e in self.eigenvalues]))

    @property
    def square_trace(self) -> float:
        """Mean over draws of tr (Sigma_lin^2)."""
        return float(np.mean([(e * e).sum() for e in self.eigenvalues]))

    @property
    def top(self) -> float:
        """Mean over draws of the largest population eigenvalue."""
        return float(np.mean([e[0] for e in self.eigenvalues]))

    def __str__(self) -> str:
        return (f"linear population at M={self.width} ({len(self.eigenvalues)} draws from seed {self.seed}): "
                f"trace {self.trace:.6g}, tr^2 {self.square_trace:.6g}, top {self.top:.6g}")

    def _repr_latex_(self) -> str:
        return (rf"$\mathrm{{tr}}\,\Sigma_\mathrm{{lin}} = {self.trace:.6g},\ \mathrm{{tr}}\,\Sigma_\mathrm{{lin}}^2 = "
                rf"{self.square_trace:.6g},\ \lambda_\mathrm{{top}} = {self.top:.6g}\quad (M = {self.width})$")


def _unit_integrals(unit: Unit, mean: np.ndarray, sd: np.ndarray) -> dict:
    """Per-unit Gaussian integrals for u ~ N(mean, sd^2) (vectorized over units; exact piecewise quadrature)."""
    e, w = normal_rule(breaks(unit, mean, sd))
    u = mean[:, None] + sd[:, None] * e
    f, d = np.asarray(unit.f(u), dtype=float), np.asarray(unit.df(u), dtype=float)
    ef, ed = (w * f).sum(1), (w * d).sum(1)
    out = dict(ef=ef, ed=ed, vf=(w * f * f).sum(1) - ef**2, vd=(w * d * d).sum(1) - ed**2,
               cfd=(w * f * d).sum(1) - ef * ed, nu1=(w * d * (u - mean[:, None])).sum(1) / sd**2)
    return out


def _one_draw(net: Any, M: int, rng: np.random.Generator, shares: list | None = None,
              overlaps: list | None = None) -> np.ndarray:
    L = net.depth
    widths = net.widths(M)[:L] + (1,)  # one output: each block of a C-output Gram has this law
    q1, q2 = float(net.input_q1), float(net.input_q2)
    W = [rng.standard_normal((widths[l], widths[l - 1])) * math.sqrt(float(net.sigma_w2[l - 1]) / widths[l - 1])
         for l in range(1, L + 1)]
    b = [rng.standard_normal(widths[l]) * math.sqrt(float(net.sigma_b2[l - 1])) for l in range(1, L + 1)]
    hidden_units = sum(widths[1:L])
    # sources: the inputs, then per hidden layer xi, zeta and the product noise (and, for a second output, its own
    # product noise at the end)
    S = widths[0] + 3 * hidden_units + (hidden_units if overlaps is not None else 0)
    H = {1: np.hstack([math.sqrt(q1 - q2) * np.eye(widths[0]), np.zeros((widths[0], S - widths[0]))])}
    hbar = {1: math.sqrt(q2) * rng.standard_normal(widths[0])}  # inputs correlated across samples share a mean
    hidden = {}
    col, col2 = widths[0], widths[0] + 3 * hidden_units
    for j in range(1, L):
        U = W[j - 1] @ H[j]
        ubar = W[j - 1] @ hbar[j] + b[j - 1]
        sd = np.sqrt((U * U).sum(1))
        g = _unit_integrals(Unit.of(net.phi(j)), ubar, np.maximum(sd, 1e-300))
        mu_star = np.sqrt(np.maximum(g["vf"] - g["ed"] ** 2 * sd**2, 0.0))
        nu_star = np.sqrt(np.maximum(g["vd"] - g["nu1"] ** 2 * sd**2, 0.0))
        both = mu_star * nu_star
        rho = np.clip(np.divide(g["cfd"] - g["ed"] * g["nu1"] * sd**2, both, out=np.zeros_like(both), where=both > 0),
                      -1.0, 1.0)
        m = widths[j]
        xi, zeta, eta, eta2 = (np.zeros((m, S)) for _ in range(4))
        xi[:, col:col + m] = np.eye(m)
        zeta[:, col + m:col + 2 * m] = np.eye(m)
        eta[:, col + 2 * m:col + 3 * m] = np.eye(m)
        col += 3 * m
        if overlaps is not None:
            eta2[:, col2:col2 + m] = np.eye(m)
            col2 += m
        H[j + 1] = g["ed"][:, None] * U + mu_star[:, None] * xi
        hbar[j + 1] = g["ef"]
        hidden[j] = dict(ed=g["ed"], vd=g["vd"], eta=(eta, eta2),
                         slope=g["nu1"][:, None] * U + (nu_star * rho)[:, None] * xi
                         + (nu_star * np.sqrt(1.0 - rho**2))[:, None] * zeta)

    def backward(row: np.ndarray, which: int) -> tuple:
        """Mean and fluctuation maps of delta^l for the output whose last-layer weights are ``row``."""
        dbar = {L: np.ones(1)}
        D = {L: np.zeros((1, S))}
        for l in range(L - 1, 0, -1):
            vbar = (row if l == L - 1 else W[l].T @ dbar[l + 1])
            back = np.zeros((widths[l], S)) if l == L - 1 else W[l].T @ D[l + 1]
            h = hidden[l]
            dbar[l] = h["ed"] * vbar
            product = np.sqrt(h["vd"] * (back * back).sum(1))
            D[l] = h["slope"] * vbar[:, None] + h["ed"][:, None] * back + product[:, None] * h["eta"][which]
        return dbar, D

    # the layers' forward Grams H_l^T H_l do not depend on the output: computed once (a symmetric rank-k update)
    forward = [H[l].T @ H[l] for l in range(1, L + 1)]

    def gram(dbar: dict, D: dict) -> np.ndarray:
        """A^T A of the output whose backward maps are (dbar, D) (module docstring)."""
        out = sum((dbar[l] @ dbar[l]) * forward[l - 1] for l in range(1, L + 1))
        B = np.vstack([math.sqrt(hbar[l] @ hbar[l] + 1.0) * D[l] for l in range(1, L + 1)])
        out += B.T @ B
        X = np.stack([H[l].T @ hbar[l] for l in range(1, L + 1)], axis=1)
        Y = np.stack([D[l].T @ dbar[l] for l in range(1, L + 1)], axis=1)
        cross = X @ Y.T
        return out + cross + cross.T

    def top_pair(block: np.ndarray) -> tuple:
        """(largest eigenvalue, its eigenvector) by Lanczos from a fixed start (no random state); dense when tiny
        (Lanczos needs more than a few dimensions)."""
        if block.shape[0] <= 16:
            val, vec = np.linalg.eigh(block)
            return float(val[-1]), vec[:, -1]
        import scipy.sparse.linalg  # only the drawn population needs it: kept off the import of the default model

        val, vec = scipy.sparse.linalg.eigsh(block, k=1, which="LA", v0=np.ones(block.shape[0]), tol=1e-12)
        return float(val[0]), vec[:, 0]

    dbar, D = backward(W[L - 1][0], 0)
    AtA = gram(dbar, D)
    # sources no layer uses (e.g. the product noise of the last hidden layer) are null directions: dropping them
    # leaves the nonzero spectrum and shrinks the eigenproblem
    used = np.abs(AtA).sum(axis=1) > 0
    block = AtA[np.ix_(used, used)]
    ev = np.linalg.eigvalsh(block)
    if shares is not None:
        top = np.zeros(S)
        top[used] = top_pair(block)[1]
        out_layer = (dbar[L] @ dbar[L]) * float(np.sum((H[L] @ top) ** 2))
        shares.append(min(max(out_layer / ev[-1], 0.0), 1.0))
    if overlaps is not None:
        # a second output (its own last-layer row, drawn after everything else so that the first output's draw is
        # the one-output draw): the top of its population, for the covariance of two outputs' tops
        row2 = rng.standard_normal(widths[L - 1]) * math.sqrt(float(net.sigma_w2[L - 1]) / widths[L - 1])
        AtA2 = gram(*backward(row2, 1))
        used2 = np.abs(AtA2).sum(axis=1) > 0
        overlaps.append((float(ev[-1]), top_pair(AtA2[np.ix_(used2, used2)])[0]))
    ev = ev[::-1]
    return ev[ev > 1e-12 * ev[0]].copy()


@functools.lru_cache(maxsize=64)
def linear_population(net: Any, width: int, draws: int = 8, seed: int = 0) -> LinearPopulation:
    """Population spectrum of the linear part of one output's gradient covariance over inputs (module docstring).

    Args:
        net: a :class:`~meanfield.spec.network.Network` without normalization layers (for a batch norm on the output,
            pass the network without it: the centred Gram is that network's).
        width: M.
        draws: independent draws of the weights.
        seed: numpy seed of the first draw (draw i uses ``seed + i``; not the sampler's draw of that seed).

    Returns:
        :class:`LinearPopulation`.

    Example:
        >>> from meanfield.spec.network import Network
        >>> pop = linear_population(Network(2, "linear", 1, 0), 16, draws=2)
        >>> # linear, one hidden layer, no bias: g = (w2 (x) x, x . W1^T ...): trace = E|w2|^2 M_0 + |W1^T w2|^2
        >>> pop.eigenvalues[0].size <= 16 and pop.trace > 0
        True
    """
    from ..spec.network import Network

    if not isinstance(net, Network):
        raise InvalidArgument("net", net, "a meanfield Network")
    if net.norms:
        raise InvalidArgument("net", net.describe(), "a network without normalization layers",
                              "for a batch norm on the output pass the network without it")
    if net.is_symbolic:
        raise InvalidArgument("net", net.describe(), "numeric parameters")
    M = check_int("width", width, minimum=2)
    n = check_int("draws", draws, minimum=1)
    s = check_int("seed", seed, minimum=0)
    if float(net.input_q2) > float(net.input_q1) or float(net.input_q2) < 0:
        raise InvalidArgument("net", net.describe(), "inputs with 0 <= input_q2 <= input_q1")
    shares: list = []
    overlaps: list | None = [] if net.outputs > 1 else None
    eigs = tuple(_one_draw(net, M, np.random.default_rng(s + i), shares, overlaps) for i in range(n))
    return LinearPopulation(net, M, s, eigs, tuple(shares), tuple(overlaps or ()))
