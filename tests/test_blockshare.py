"""The output layer's share of a block top (meanfield.finite.blockshare) and its option in the random-matrix model.

Deterministic checks only (no sampling): the share's two limits, its monotonicity in T, the Wishart form's agreement
with the GOE form of the same variances for a small spread, and that the option leaves the default untouched. The
comparison with sampled networks (tangent blocks, M = 64, seeds 0-23) is recorded in meanfield/notes/rmt.md,
section 6 ("The first order's spread from the output layer's share of a block top").
"""

from __future__ import annotations

import pytest

import meanfield.finite.blockshare as bs
from meanfield.errors import InvalidArgument
from meanfield.finite.deterministic import channel_transforms, population_law
from meanfield.finite.freeprob import expected_max_symmetric
from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.theory.fisher import predict

RELU = Network(3, "relu", 2.0, 0.0)


def test_channel_transforms_sum_to_the_law_far_above():
    # far above the spectrum g(z) = 1/z + m_1/z^2 + ...: z (z g - 1) -> m_1 (relative error ~ m_2 / (m_1 z) < 1e-2)
    law = population_law(RELU)
    z = 1e3 * law.edge
    g = sum(channel_transforms(RELU, (z,))[0].values())
    assert z * (z * g - 1.0) == pytest.approx(law.moments[0], rel=1e-2)


def test_edge_share_between_trace_share_and_population_edge_share():
    law_share = population_law(RELU).share("h", RELU.depth - 1)
    shares = [bs.linear_edge_share(RELU, 64, T)[0] for T in (8, 64, 4096)]
    trace = bs.linear_edge_share(RELU, 64, 8)[1]
    assert trace < shares[0] < shares[1] < shares[2] < law_share
    # T >> n (n = 5 M = 320): the sample edge sits at the population's edge, whose share the law gives
    assert shares[2] == pytest.approx(law_share, abs=0.01)
    # T << n: the sample top mixes all modes, and the share tends to the trace share (n / T = 5120 here)
    assert bs.linear_edge_share(RELU, 2048, 2)[0] == pytest.approx(trace, abs=0.02)


def test_sample_top_share_and_mean_share():
    s_d = bs.output_share_of_mean(RELU, 64, 64, 2.328)
    assert s_d == pytest.approx(64 * (1.0 - 0.49373109) / (64 * 2.328), rel=1e-6)  # relu: qhat_1 = 1
    s = bs.sample_top_share(RELU, 64, 64, 2.328, 0.897, 7.914)
    assert s_d < s < bs.linear_edge_share(RELU, 64, 64)[0]


@pytest.mark.parametrize("call", [
    lambda: bs.linear_edge_share(Network(3, "relu", 2, 0, norms=(LayerNorm(1),)), 64, 8),
    lambda: bs.linear_edge_share(RELU, 64, 1),
    lambda: bs.sample_top_share(RELU, 64, 8, -1.0, 0.0, 1.0),
    lambda: bs.sample_top_share(RELU, 64, 8, 1.0, 2.0, 1.0),
    lambda: bs.wishart_excess(3, -0.1),
    lambda: channel_transforms(RELU, (0.5 * population_law(RELU).edge,)),
])
def test_bad_input_raises(call):
    with pytest.raises(InvalidArgument):
        call()


def test_wishart_form_matches_goe_for_small_spread():
    # n = 2 / a -> infinity: W_n / n - I -> the GOE of the same variances (relative difference O(sqrt(a C)))
    assert bs.wishart_excess(10, 1e-3) == pytest.approx(expected_max_symmetric(10, 1e-3, 5e-4), rel=0.05)
    assert bs.wishart_excess(10, 0.03) > expected_max_symmetric(10, 0.03, 0.015)  # heavier top
    assert bs.wishart_excess(1, 0.03) == 0.0


def test_first_order_options(monkeypatch):
    net = Network(3, "tanh", 1.0, 0.1, outputs=10, norms=(BatchNorm("last", center_only=True),))
    assert bs.FIRST_ORDER == "units"
    default = predict(net, 64, 64, finite_width="rmt").lambda_max
    monkeypatch.setattr(bs, "FIRST_ORDER", "scale")
    scale = predict(net, 64, 64, finite_width="rmt").lambda_max
    monkeypatch.setattr(bs, "FIRST_ORDER", "top-share")
    shared = predict(net, 64, 64, finite_width="rmt").lambda_max
    # tanh centre-only C = 10, M = T = 64 (sampled 4.494, se 1.4%): "scale" +4.5%, "top-share" +3.2%, "units" +1.7%
    # (the grid's 5% criterion, about 3 sampled se)
    assert default < shared < scale
    assert default == pytest.approx(4.494, rel=0.05)
    assert shared == pytest.approx(4.494, rel=0.06)


def test_channel_shares_sum_and_the_output_layer_entry():
    # every channel's share at the sample edge: they sum to 1 (the Hellmann-Feynman slopes add up to the edge's), the
    # output layer's is linear_edge_share's, and the layers' shares are the channels of their weights' gradients
    for T in (8, 64, 4096):
        shares = bs.edge_channel_shares(RELU, 64, T)
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
        assert shares[("h", 2)] == bs.linear_edge_share(RELU, 64, T)[0]
        assert bs.layer_edge_share(RELU, 64, T, 2) == pytest.approx(shares[("h", 1)] + shares[("d", 2)], abs=1e-12)
    with pytest.raises(TypeError):
        shares[("h", 2)] = 0.0  # the cached mapping is read-only


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_layer_shares_of_the_mean_add_up_to_the_mean_field_block(act):
    # the layers' parts of T (G_tt - G_ts) from the order parameters, bias terms included, add up to the mean-field
    # centred block's mean eigenvalue (predict's Gram entries of the plain network; its leading-order entries are
    # 0.3-0.7% below them here)
    net = Network(3, act, *((2.0, 0.0) if act == "relu" else (1.0, 0.1)))
    base = predict(net, 64, 16)
    d = float(base.gram_diag - base.gram_offdiag)
    parts = [bs.layer_share_of_mean(net, 64, 16, d, layer) for layer in (1, 2, 3)]
    assert sum(parts) == pytest.approx(1.0, rel=1e-9)
    assert parts[2] == bs.output_share_of_mean(net, 64, 16, d)
    with pytest.raises(InvalidArgument):
        bs.layer_share_of_mean(net, 64, 16, d, 4)
