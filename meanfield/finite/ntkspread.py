"""The NTK's spread between units: Phi^j = sum_bd X_bd(t1, s1) X_bd(t2, s2) of a plain stack, to leading order.

A batch norm on layer l couples its units through S_ac = w_a^T X w_c (a != c; X_bd(t, s) = phi'_b(t) phi'_d(s)
Theta^{l-1}_bd(t, s), the NTK of layer l - 1's outputs), and the entry variances behind it need E[S_ac(t1, s1)
S_ac(t2, s2)] = (sigma_w^2 / M_{l-1})^2 Phi^{l-1}(t1, s1, t2, s2) (the rows w_a, w_c independent of X). With
Theta^j_bd = delta_bd (1 + M K^{j-1}) + sum_ef W_be W_df X^{j-1}_ef, to leading order

    Phi^j = M_j E[phi'phi'phi'phi'] E[Theta_bb(t1, s1) Theta_bb(t2, s2)]
            + M_j (M_j - 1) c(t1, t2) c(s1, s2) (sigma_w^2 / M_{j-1})^2 Phi^{j-1},

E[phi'(u_t1) phi'(u_s1) phi'(u_t2) phi'(u_s2)] and c(t, t') = E[phi'(u_t) phi'(u_t')] at layer j's kernel (four-sample
Gaussian integrals), and E[Theta_bb Theta_bb] = Theta_bar Theta_bar + Cov(M K^{j-1} + sigma_w^2 N^{j-1}) (shared by
the units: :func:`meanfield.finite.fourworld.realized_world`) + (sigma_w^2 / M_{j-1})^2 (Phi^{j-1}(t1, s1, t2, s2) +
Phi^{j-1}(t1, s1, s2, t2)) (Wick on the unit's own row). On layer 1, Theta^1 = 1 + x.x is diagonal in the units with
the inputs' Wishart spread M_0 (Q Q + Q Q). The correlation of phi'_b with its own row (Stein) moves Phi by O(1/M)
relative and is left out.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import InvalidArgument, check_int
from ..integrals.quadrature import Unit
from ..spec.network import Network
from .fourworld import class_tensor, four_sample_mean, pair_index, realized_world

__all__ = ["ntk_spread"]


def _truncated(net: Network, depth: int) -> Network:
    """Layers 1..depth of a plain network (its last hidden layer is depth - 1)."""
    acts = net.activation[: depth - 1]
    return Network(depth, acts if len(acts) > 1 else acts[0], net.sigma_w2[:depth], net.sigma_b2[:depth], outputs=1,
                   alphas=net.alphas[:depth], input_q1=net.input_q1, input_q2=net.input_q2)


@functools.lru_cache(maxsize=32)
def ntk_spread(net: Network, width: int, samples: int) -> np.ndarray:
    """Phi[t1, s1, t2, s2] = sum_bd X_bd(t1, s1) X_bd(t2, s2) of the last hidden layer L - 1 of a plain network.

    Args:
        net: a plain numeric network of depth >= 2 with inputs of a non-negative mean product.
        width: M.
        samples: T (the tensor is T^4, by the 15 patterns of equal samples).

    Returns:
        The T^4 tensor (O(M^3)).

    Raises:
        InvalidArgument: a normalized or symbolic network, depth < 2, a negative kernel overlap.

    Example:
        >>> phi = ntk_spread(Network(3, "tanh", 2, 0.1), 64, 4)
        >>> phi.shape, bool(phi[0, 0, 0, 0] > phi[0, 1, 0, 1] > 0)
        ((4, 4, 4, 4), True)
    """
    if not isinstance(net, Network) or net.norms or net.is_symbolic or net.depth < 2:
        raise InvalidArgument("net", net.describe() if isinstance(net, Network) else net,
                              "a plain numeric network of depth >= 2")
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=1)
    widths = net.widths(M)
    q1, q2 = float(net.input_q1), float(net.input_q2)
    phi = None
    for j in range(1, net.depth):
        sw, sb = float(net.sigma_w2[j - 1]), float(net.sigma_b2[j - 1])
        if j == 1:
            k, n = (q1, q2), (0.0, 0.0)
            Q = lambda a, b: q1 if a == b else q2  # noqa: E731 - the inputs' kernel

            def shared(lab: tuple) -> float:
                t1, s1, t2, s2 = lab
                return widths[0] * (Q(t1, t2) * Q(s1, s2) + Q(t1, s2) * Q(s1, t2))
        else:
            w = realized_world(_truncated(net, j), M)
            k, n = w.k, w.n
            Mb = widths[j - 1]

            def shared(lab: tuple, w=w, Mb=Mb, sw=sw) -> float:
                t1, s1, t2, s2 = lab
                a, b = pair_index(t1, s1), pair_index(t2, s2)
                c = w.cov
                return (Mb * Mb * c[a, b] + Mb * sw * (c[a, 10 + b] + c[10 + a, b]) + sw * sw * c[10 + a, 10 + b])
        theta = (1 + widths[j - 1] * k[0] + sw * n[0], 1 + widths[j - 1] * k[1] + sw * n[1])
        unit = Unit.of(net.phi(j))
        qa, qb = sw * k[0] + sb, sw * k[1] + sb
        old = phi
        coef = (sw / widths[j - 1]) ** 2

        def value(lab: tuple, old=old, unit=unit, qa=qa, qb=qb, theta=theta, shared=shared, coef=coef,
                  Mj=widths[j]) -> float:
            t1, s1, t2, s2 = lab
            m4 = four_sample_mean(unit, qa, qb, tuple(("d", i) for i in lab))
            second = theta[t1 != s1] * theta[t2 != s2] + shared(lab)
            out = Mj * m4 * second
            if old is not None:
                spread = old[t1, s1, t2, s2] + old[t1, s1, s2, t2]
                c1 = four_sample_mean(unit, qa, qb, (("d", t1), ("d", t2)))
                c2 = four_sample_mean(unit, qa, qb, (("d", s1), ("d", s2)))
                out += Mj * m4 * coef * spread + Mj * (Mj - 1) * c1 * c2 * coef * old[t1, s1, t2, s2]
            return out
        # the previous layer's tensor at canonical labels (at most four samples): a 4^4 table suffices
        phi = class_tensor(4, value)
    return class_tensor(T, lambda lab: phi[lab])
