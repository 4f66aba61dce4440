"""The law of the output's batch variance under full batch norm (meanfield.finite.outputbn_scale)."""

import numpy as np
import pytest

from meanfield import InvalidArgument
from meanfield.finite.fourworld import class_tensor
from meanfield.finite.normalized import projected_pairings
from meanfield.finite.outputbn_scale import OutputScaleLaw, output_scale_law
from meanfield.sampled.backprop import draw, forward
from meanfield.spec.network import Network


def test_projected_pairings_match_the_full_tensor():
    # an arbitrary exchangeable tensor: a value per pattern; the T^4 contraction done explicitly
    T = 5
    table = {}

    def value(labels):
        return table.setdefault(labels, 0.3 * len(table) - 1.0 + 0.1 * len(set(labels)))
    X = class_tensor(T, value)
    Pi = np.eye(T) - 1.0 / T
    full = [np.einsum("abcd,ab,cd->", X, Pi, Pi), np.einsum("abcd,ac,bd->", X, Pi, Pi),
            np.einsum("abcd,ad,bc->", X, Pi, Pi)]
    assert np.allclose(projected_pairings(T, value), full, rtol=1e-12, atol=1e-12)


def test_chi_square_limit():
    # no kernel fluctuations: T sigma^2 / v is chi^2_{T-1}, E[v / sigma^2] = T / (T - 3)
    law = OutputScaleLaw(16, 1.0, 2.0 / 15, 0.0)
    assert law.degrees == pytest.approx(15.0)
    assert law.inverse_mean() == pytest.approx(16.0 / 13.0)


def test_bad_input():
    with pytest.raises(InvalidArgument):
        output_scale_law(Network(3, "relu", 2, 0), 32, 16)                       # no output norm
    with pytest.raises(InvalidArgument):
        output_scale_law(Network(3, "relu", 2, 0, norms=["batch:last:center"]), 32, 16)
    with pytest.raises(InvalidArgument):
        output_scale_law(Network(3, "relu", 2, 0, norms=["batch:last"]), 32, 3)
    with pytest.raises(InvalidArgument):
        output_scale_law("net", 32, 16)
    with pytest.raises(InvalidArgument):
        OutputScaleLaw(16, 1.0, 1.0, 0.2).inverse_mean()                         # nu <= 2


@pytest.mark.parametrize("act, sw, sb", [("relu", 2.0, 0.0), ("tanh", 1.0, 0.1)])
def test_relative_variance_against_sampled_networks(act, sw, sb):
    # L = 3, M = 32, T = 16, C = 8 outputs, seeds 0..399 (about 0.6 s). The output-specific relative variance of the
    # batch variance (within a network, across outputs) is far above the chi-square's 2 / (T - 1) = 0.133 (derived:
    # relu 0.316, tanh 0.301). Tolerance: 3 standard errors of the draws' mean (false alarm about 0.3% for a normal
    # mean) plus the neglected O(1/M) and O((T/M)^2) terms, bounded by 2 T / M^2 + 1 / M relative (0.06 here);
    # power: the chi-square value is more than 10 standard errors away (relu: 12).
    M, T, C, N = 32, 16, 8, 400
    plain = Network(3, act, sw, sb, outputs=C)
    per_draw = []
    for seed in range(N):
        d = draw(plain, M, T, seed=seed)
        g = forward(plain, d).hidden(2) @ np.asarray(d.weights[-1]).T
        s2 = ((g - g.mean(0)) ** 2).mean(0)
        per_draw.append((s2.var(ddof=1), s2.mean()))
    var, mean = np.array(per_draw).T
    sampled = var / mean.mean() ** 2
    law = output_scale_law(Network(3, act, sw, sb, norms=["batch:last"]), M, T)
    se = sampled.std(ddof=1) / np.sqrt(N)
    assert abs(sampled.mean() - law.specific) < 3 * se + (2 * T / M**2 + 1 / M) * law.specific
    assert sampled.mean() - 2.0 / (T - 1) > 10 * se


def test_normalized_block_extra():
    from meanfield.finite.outputbn_scale import normalized_block_extra, scale_top_covariance

    net = Network(3, "relu", 2, 0, outputs=3, norms=["batch:last"])
    law = output_scale_law(net, 64, 64)
    cov = scale_top_covariance(net, 64, 64, 8.37)
    # the chi-square part, the kernel's excess, less twice the covariance (all derived, no draws)
    assert normalized_block_extra(net, 64, 64, 8.37) == pytest.approx(2 / 59 + law.specific - 2 / 63 - 2 * cov)
    assert 0 < cov < law.specific / 2
    # a norm below the output's: the chi-square's 2 / (T - 5)
    below = Network(3, "relu", 2, 0, outputs=3, norms=["layer:1", "batch:last"])
    assert normalized_block_extra(below, 64, 16, 1.0) == pytest.approx(2 / 11)
    with pytest.raises(InvalidArgument):
        normalized_block_extra(net, 64, 5, 8.37)
    with pytest.raises(InvalidArgument):
        scale_top_covariance(net, 64, 64, 0.0)
    with pytest.raises(InvalidArgument):
        normalized_block_extra(Network(3, "relu", 2, 0, outputs=3), 64, 64, 8.37)
