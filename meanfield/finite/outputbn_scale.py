"""Var(T sigma_k^2) = 2 E tr Omega^2 + Var tr Omega: the law of the output's batch variance under full batch norm.

With a full batch norm on the output, output k is divided by its batch standard deviation sigma_k, the root of
T sigma_k^2 = |Pi u_k|^2, u_k = H w_k + b_k (H the last hidden layer's features, T x M; Pi = I - 1 1^T / T kills
the bias). Given everything below the output row w_k ~ N(0, sigma_w^2 / M I), g = Pi u_k is Gaussian,
g ~ N(0, Omega), Omega = sigma_w^2 Pi K Pi with K = H H^T / M the realized kernel of layer L - 1, so

    E[T sigma^2 | K] = tr Omega,   Var[T sigma^2 | K] = 2 tr Omega^2   (Gaussian quadratic form),

and over the layers below (K = E K + dK, E K exchangeable: Pi E K Pi = (K_tt - K_ts) Pi, v = sigma_w^2 (K_tt - K_ts))

    E T sigma^2 = v n   (n = T - 1; the O(1/M) mean shift of K is left out),
    specific = 2 E tr Omega^2 / (v n)^2 = 2 [n + sigma_w^4 X_2 / v^2] / n^2,
    common   = Var tr Omega / (v n)^2 = sigma_w^4 X_1 / (v^2 n^2),

X_1 = sum Cov(K_ab, K_cd) Pi_ab Pi_cd = Var tr(Pi dK) and X_2 = sum Cov(K_ab, K_cd) Pi_ac Pi_bd = E tr (Pi dK Pi)^2,
sums over the T^4 index tuples by the 15 patterns of equal samples (:func:`meanfield.finite.normalized.projected_pairings`), with the
covariances of the realized kernel from the four-sample world (:func:`meanfield.finite.normalized.below_world`:
:func:`meanfield.finite.fourworld.realized_world`, or the layer norms' world). ``specific`` is the part that differs
between the outputs of one network (their output rows are independent given K), ``common`` the part they share.
Without kernel fluctuations (X = 0) T sigma^2 / v is chi^2_{T-1}: specific = 2 / (T - 1), common = 0. At T ~ M the
centred kernel's spectrum is spread (Marchenko-Pastur-like), X_2 ~ T^2 / M, and the effective number of degrees of
freedom nu = 2 / (specific + common) falls far below T - 1 (relu L = 3, M = T = 64: 16.8 instead of 63).

The Gamma law with that mean and relative variance gives E[v / sigma^2] = T nu / (n (nu - 2)) (T / (T - 3) for the
chi-square), :meth:`OutputScaleLaw.inverse_mean`.

Between outputs (:func:`normalized_block_extra`, used by the random-matrix model for C > 1): the normalized block
top's output-specific relative variance beyond the centred top's is the chi-square's 2/(T - 5) plus the kernel's
excess specific - 2/(T - 1), less twice the covariance of the centred top with sigma_k^2 through the same output row
(:func:`scale_top_covariance`, its leading part: about half the measured covariance).

What this module does not give (meanfield/notes/rmt.md, section 6, "The output's batch variance under full batch
norm"): the mean of one normalized block top, lambda_max(Q Theta Q) / (T sigma^2) with Q = Pi - y y^T / T,
y = g / sigma: both the removal of y and the covariance with sigma^2 through w_k lower it (measured: relu L = 3,
M = 64, T = 16, -4.4% and -4.9%) and undo most of the Gamma law's larger E[1/sigma^2], so the model keeps the
chi-square's T / (T - 3) for the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgument, check_int, check_real
from ..spec.network import BatchNorm, Network
from .fourworld import pair_index, projected_pairings, realized_world
from .normalized import below_world

__all__ = ["OutputScaleLaw", "output_scale_law", "scale_top_covariance",
           "normalized_block_extra"]


@dataclass(frozen=True)
class OutputScaleLaw:
    """The law of T sigma_k^2 (one output's batch variance times T) under full batch norm on the output, derived.

    Attributes:
        samples: T.
        variance: v = sigma_w^2 (K_tt - K_ts) of layer L - 1 (mean field): E T sigma^2 = v (T - 1).
        specific: the output-specific relative variance, 2 E tr Omega^2 / (E tr Omega)^2.
        common: the relative variance shared by the outputs of one network, Var tr Omega / (E tr Omega)^2.
    """

    samples: int
    variance: float
    specific: float
    common: float

    @property
    def total(self) -> float:
        """specific + common: Var(sigma^2) / (E sigma^2)^2."""
        return self.specific + self.common

    @property
    def degrees(self) -> float:
        """nu = 2 / total: the Gamma law's degrees of freedom (T - 1 for the chi-square)."""
        return 2.0 / self.total

    def inverse_mean(self) -> float:
        """E[v / sigma^2] = T nu / ((T - 1)(nu - 2)) under the Gamma law (T / (T - 3) for the chi-square).

        Raises:
            InvalidArgument: nu <= 2 (E[1/sigma^2] infinite under the Gamma law).

        Example:
            >>> round(OutputScaleLaw(16, 1.0, 2 / 15, 0.0).inverse_mean(), 6) == round(16 / 13, 6)
            True
        """
        nu = self.degrees
        if nu <= 2.0:
            raise InvalidArgument("law", round(nu, 4), "degrees of freedom above 2 (a finite E[1/sigma^2])")
        T = self.samples
        return T * nu / ((T - 1) * (nu - 2.0))


def output_scale_law(net: Network, width: int, samples: int) -> OutputScaleLaw:
    """specific = 2 [n + sigma_w^4 X_2 / v^2] / n^2, common = sigma_w^4 X_1 / (v n)^2: the output's batch variance.

    Args:
        net: a numeric network with a full batch norm on the output, plain below or with layer norms on hidden
            layers (the four-sample world of :func:`meanfield.finite.normalized.below_world`).
        width: M.
        samples: T >= 4.

    Returns:
        :class:`OutputScaleLaw`.

    Raises:
        InvalidArgument: no full batch norm on the output, a batch norm below it, a symbolic network, T < 4.

    Example:
        >>> law = output_scale_law(Network(3, "relu", 2, 0, norms=["batch:last"]), 64, 64)
        >>> round(law.specific, 3), round(law.common, 4), round(law.degrees, 1)
        (0.111, 0.0085, 16.8)
    """
    if not isinstance(net, Network) or net.is_symbolic:
        raise InvalidArgument("net", net, "a numeric meanfield Network")
    last = net.norm_at(net.depth)
    if not (isinstance(last, BatchNorm) and not last.center_only):
        raise InvalidArgument("net", net.describe(), "a full batch norm on the output")
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=4)
    world = below_world(net, M)       # refuses batch norms below the output's (their world depends on T)
    sw = float(net.sigma_w2[net.depth - 1])
    v = sw * float(world.k[0] - world.k[1])
    if not v > 0:
        raise InvalidArgument("net", net.describe(), "a last hidden kernel with K_tt > K_ts (v > 0)")
    x = projected_pairings(T, lambda lab: world.cov[pair_index(lab[0], lab[1]), pair_index(lab[2], lab[3])])
    n = T - 1
    specific = 2.0 * (n + sw * sw * float(x[1]) / (v * v)) / n**2
    common = max(sw * sw * float(x[0]) / (v * v * n * n), 0.0)
    return OutputScaleLaw(T, v, specific, common)


def scale_top_covariance(net: Network, width: int, samples: int, top: float) -> float:
    """Cov(top_k, sigma_k^2) / (E top E sigma^2) = 2 (sigma_w^2 / M)^2 (Z_tt - Z_ts) / (T top v n), leading part.

    Within one network the centred block top of output k, top_k = lambda_max(Pi Theta_kk Pi) / T, and its batch
    variance share the output row w_k: Theta_kk = K + S(w_k), S_uv = w_k^T X_uv w_k (the layers below; X_uv the
    per-unit NTK of layer L - 1 between the unit pair), T sigma_k^2 = w_k^T A w_k, A = H^T Pi H. Hellmann-Feynman along
    the top eigenvector psi makes the top's w-dependent part w^T Q w, Q = sum_uv psi_u psi_v X_uv, and for Gaussian w
    Cov(w^T Q w, w^T A w) = 2 (sigma_w^2 / M)^2 tr(Q A), tr(Q A) = sum psi_u psi_v Pi_ab Y^uv_ab with the sandwiched
    NTK Y^uv_ab = h_a^T X_uv h_b of the four-sample world. Its exchangeable mean Z_uv = sum_ab Pi_ab Y^uv_ab = z I +
    z' 1 1^T gives psi^T Z psi = Z_tt - Z_ts = Y_1 / n for any unit psi orthogonal to 1 (Y_1 the first pairing of
    :func:`meanfield.finite.normalized.projected_pairings`, n = T - 1). What it leaves out: psi leans towards the directions where the realized
    kernel is large, which raises tr(Q A) (measured on relu L = 3, M = 64: this part is about half of the sampled
    Cov(log top_k, log sigma_k^2) within a network; meanfield/notes/rmt.md, section 6).

    Args:
        net: a numeric network with a full batch norm on the output and no norm below it.
        width: M.
        samples: T >= 4.
        top: the mean centred block top E top_k (Gram units, > 0).

    Raises:
        InvalidArgument: another network (norms below, no full batch norm on the output), T < 4, top <= 0.

    Example:
        >>> net = Network(3, "relu", 2, 0, outputs=3, norms=["batch:last"])
        >>> round(scale_top_covariance(net, 64, 64, 8.37), 4)
        0.0105
    """
    law = output_scale_law(net, width, samples)
    inner = net.with_(norms=tuple(n for n in net.norms if n.layer < net.depth))
    if inner.norms:
        raise InvalidArgument("net", net.describe(), "no norm below the output's batch norm")
    t = check_real("top", top, minimum=0)
    if not t > 0:
        raise InvalidArgument("top", top, "a positive mean block top")
    M, T = int(width), law.samples
    world = realized_world(inner, M)
    sw = float(net.sigma_w2[net.depth - 1])
    y = projected_pairings(T, lambda lab: world.y[(0, lab[1])][lab[2], lab[3]])
    n = T - 1
    return 2.0 * (sw / M) ** 2 * float(y[0]) / n / (T * t * law.variance * n)


def normalized_block_extra(net: Network, width: int, samples: int, top: float) -> float:
    """2/(T-5) + [specific - 2/(T-1)] - 2 Cov: output-specific relative variance a block's 1/sigma_k^2 adds to its top.

    With full batch norm on the output, block k is the centred block over sigma_k^2. For T sigma^2 / v a chi^2_{T-1}
    (no kernel fluctuations) the relative variance of 1/sigma^2 is exactly 2/(T - 5); the realized kernel's
    fluctuations add specific - 2/(T - 1) (:func:`output_scale_law`, at leading order the same for sigma^2 and
    1/sigma^2), and the covariance of the centred block top with sigma_k^2 through the same output row
    (:func:`scale_top_covariance`) takes twice its relative size off: Var log(top/sigma^2) = Var log top +
    Var log sigma^2 - 2 Cov. Networks it does not cover (norms below the output's, T < 6) get the chi-square's
    2/(T - 5).

    Args:
        net: a numeric network with a full batch norm on the output.
        width: M.
        samples: T.
        top: the mean centred block top (Gram units, > 0).

    Raises:
        InvalidArgument: T < 6 or top <= 0 (from :func:`scale_top_covariance`), or no full batch norm on the output.

    Example:
        >>> net = Network(3, "relu", 2, 0, outputs=3, norms=["batch:last"])
        >>> round(normalized_block_extra(net, 64, 64, 8.37), 3), round(2 / 59, 3)
        (0.092, 0.034)
    """
    T = check_int("samples", samples, minimum=6)
    if not isinstance(net, Network) or net.is_symbolic:
        raise InvalidArgument("net", net, "a numeric meanfield Network")
    last = net.norm_at(net.depth)
    if not (isinstance(last, BatchNorm) and not last.center_only):
        raise InvalidArgument("net", net.describe(), "a full batch norm on the output")
    if any(n.layer < net.depth for n in net.norms):
        return 2.0 / (T - 5)
    law = output_scale_law(net, width, T)
    return 2.0 / (T - 5) + law.specific - 2.0 / (T - 1) - 2.0 * scale_top_covariance(net, width, T, top)
