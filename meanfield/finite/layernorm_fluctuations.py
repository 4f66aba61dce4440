"""Layer norms below the output: the four-point bulk and outlier fluctuations, derived (moved out of the model).

:func:`layer_norm_bulk_fluctuations` and :func:`layer_norm_outlier_fluctuations` are the Hoeffding and
block-sum combinations of :func:`meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance` that
:mod:`meanfield.finite.model` uses for a network whose normalizations are layer norms on hidden layers (they are
importable from there too, with the same values).
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import InvalidArgument, check_int
from ..spec.network import Network

__all__ = ["layer_norm_outlier_fluctuations", "layer_norm_bulk_fluctuations"]


def layer_norm_outlier_fluctuations(net: Network, width: int, samples: int) -> Any:
    """Var(O_kk) - Cov(O_kk, O_ll) and E O_kl^2 of O_kl = 1^T G_kl 1 / T below hidden layer norms, derived.

    As :func:`meanfield.finite.fourpoint.outlier_fluctuations` (the 15 patterns of equal samples among (t, s, u, v),
    each counted T (T - 1) ... times), with the entry covariances of
    :func:`meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance` (the norm's Jacobian and influence, its
    backward noise at width M: ``finite_noise``) and the mean outlier gram_diag + (T - 1) gram_offdiag of mean field.

    Args:
        net: a numeric network with C >= 2 outputs whose normalizations are layer norms on hidden layers.
        width: M.
        samples: T.

    Returns:
        a :class:`meanfield.finite.fourpoint.OutlierFluctuations`.

    Example:
        >>> from meanfield.spec.network import LayerNorm
        >>> o = layer_norm_outlier_fluctuations(Network(3, "tanh", 1, 0.1, outputs=2, norms=[LayerNorm(1)]), 64, 16)
        >>> o.outlier_self > 0 and o.outlier_cross > 0
        True
    """
    from ..theory.fisher import predict
    from .fourpoint import OutlierFluctuations, index_patterns
    from .fourpoint_layernorm import check_layer_norms, layer_norm_gram_covariance as cov

    if check_layer_norms(net).outputs < 2:
        raise InvalidArgument("net", net.describe(), "a network with C >= 2 outputs")
    M = check_int("width", width, minimum=1)
    T = check_int("samples", samples, minimum=2)

    def block_sum(first: tuple, second: tuple) -> float:
        total = 0.0
        for labels, count in index_patterns(T):     # the patterns of equal samples among (t, s, u, v)
            total += count * cov(net, M, first + labels[:2], second + labels[2:], finite_noise=True)
        return total

    base = predict(net, M, T)
    mean = float(base.gram_diag + (T - 1) * base.gram_offdiag)
    same, other, cross = block_sum((0, 0), (0, 0)), block_sum((0, 0), (1, 1)), block_sum((0, 1), (0, 1))
    return OutlierFluctuations(M, T, mean, (same - other) / T**4, cross / T**4)


@functools.lru_cache(maxsize=64)
def layer_norm_bulk_fluctuations(net: Network, width: int) -> Any:
    """tr Sigma_W^2, Var(mu . c) and Var|c|^2 of one output's gradients below hidden layer norms, derived.

    The Hoeffding decomposition of :func:`meanfield.finite.fourpoint.bulk_fluctuations` (t, s, u, v distinct),

        tr Sigma^2 = Cov(K_ts, K_ts) - 2 Cov(K_ts, K_tu) + Cov(K_ts, K_uv),
        Var(m) = Cov(K_ts, K_tu) - Cov(K_ts, K_uv),
        Var|c|^2 = [Cov(K_tt, K_tt) - Cov(K_tt, K_uu)] - 4 [Cov(K_tt, K_ts) - Cov(K_tt, K_su)] + 4 Var(m),

    with the entry covariances of :func:`meanfield.finite.fourpoint_layernorm.layer_norm_gram_covariance`
    (``finite_noise``: the norm's backward noise at width M) and the mean-field scales d = E K_tt - E K_ts, o = E K_ts.

    Args:
        net: a numeric network whose normalizations are layer norms on hidden layers.
        width: M.

    Returns:
        a :class:`meanfield.finite.fourpoint.BulkFluctuations`.

    Example:
        >>> from meanfield.spec.network import LayerNorm
        >>> b = layer_norm_bulk_fluctuations(Network(3, "tanh", 1, 0.1, norms=[LayerNorm(1)]), 64)
        >>> 0 < b.block2 < 2 and b.spike > 0
        True
    """
    from ..theory.fisher import predict
    from .fourpoint import BulkFluctuations
    from .fourpoint_layernorm import check_layer_norms, layer_norm_gram_covariance

    check_layer_norms(net)
    M = check_int("width", width, minimum=1)
    one = net.with_(outputs=1)

    def cov(first: tuple, second: tuple) -> float:
        return layer_norm_gram_covariance(one, M, first, second, finite_noise=True)

    ts, tt = (0, 0, 0, 1), (0, 0, 0, 0)
    same, near, far = cov(ts, ts), cov(ts, (0, 0, 0, 2)), cov(ts, (0, 0, 2, 3))
    mean_direction = near - far
    diagonal = (cov(tt, tt) - cov(tt, (0, 0, 1, 1))) - 4.0 * (cov(tt, ts) - cov(tt, (0, 0, 1, 2))) \
        + 4.0 * mean_direction
    base = predict(one, M, 4)
    d, o = 4 * float(base.gram_diag - base.gram_offdiag), 4 * float(base.gram_offdiag)  # units of T G
    return BulkFluctuations(M, same - 2.0 * near + far, mean_direction, diagonal, d, o)
