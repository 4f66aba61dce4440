"""A linear network's exact E_W tr Sigma_W^2 by Wick's theorem (meanfield.finite.linear_wick)."""

from __future__ import annotations

import pytest

from meanfield.errors import InvalidArgument
from meanfield.finite.fourpoint_next import two_layer_bulk
from meanfield.finite.linear_wick import covers_linear, linear_trace_sigma2
from meanfield.spec.network import BatchNorm, Network


@pytest.mark.parametrize("sw,q,sb", [(1.0, 1.0, 0.0), (1.5, 2.0, 0.0), (0.8, 1.0, 0.5)])
def test_against_closed_forms(sw, q, sb):
    # L = 2: two_layer_bulk is exact at any width (its own quadrature): equal to rounding. L = 3: the first layer's
    # block and its crosses by hand, q^2 sw^4 [M_0 (1 + 2/M_1)(1 + 2/M_2) + 2 (M_1 (1 + 2/M_2) + M_2 + 2/M_1)], and
    # the output weights' block (sw = q = 1) 3 M + 3 + 3 / M (tests/test_fourpoint_next.py): equal to rounding
    for M in (8, 32):
        two = Network(2, "linear", sw, sb, input_q1=q)
        assert linear_trace_sigma2(two, M) == pytest.approx(two_layer_bulk(two, M).trace_sigma2, rel=1e-9)
        three = Network(3, "linear", sw, sb, input_q1=q)
        lower = linear_trace_sigma2(three, M) - linear_trace_sigma2(three, M, (2, 3))
        hand = q * q * sw**4 * (M * (1 + 2 / M) ** 2 + 2 * (M * (1 + 2 / M) + M + 2 / M))
        assert lower == pytest.approx(hand, rel=1e-12)
        assert linear_trace_sigma2(Network(3, "linear", 1, 0), M, (3,)) == pytest.approx(3 * M + 3 + 3 / M, rel=1e-12)


def test_widths_and_blocks():
    # unequal widths (alphas) enter through the loops' widths: L = 2 against two_layer_bulk; the blocks are the
    # bilinear split (the sum over all blocks is the whole, and a single block is below it)
    net = Network(2, "linear", 1.3, 0, alphas=(0.5, 2))
    assert linear_trace_sigma2(net, 16) == pytest.approx(two_layer_bulk(net, 16).trace_sigma2, rel=1e-9)
    deep = Network(4, "linear", 1, 0)
    assert linear_trace_sigma2(deep, 16, (1, 2, 3, 4)) == linear_trace_sigma2(deep, 16)
    assert 0 < linear_trace_sigma2(deep, 16, (2,)) < linear_trace_sigma2(deep, 16)


def test_not_covered():
    for net in (Network(3, "relu", 2, 0), Network(3, "linear", 1, 0, input_q2=0.1),
                Network(3, "linear", 1, 0, norms=[BatchNorm(1)])):
        assert not covers_linear(net)
        with pytest.raises(InvalidArgument):
            linear_trace_sigma2(net, 16)
    net = Network(3, "linear", 1, 0)
    for bad in ((), (0,), (4,), "x"):
        with pytest.raises(InvalidArgument):
            linear_trace_sigma2(net, 16, bad)
    with pytest.raises(InvalidArgument):
        linear_trace_sigma2(net, 0)
