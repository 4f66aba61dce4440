"""meanfield.strategies: every draw valid, bounds respected, shrinking to the simplest network."""

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import meanfield as mf
from meanfield import strategies as mfst
from meanfield.errors import InvalidArgument
from meanfield.spec.network import BatchNorm, LayerNorm
from meanfield.theory.recursions import min_samples_for

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _placement_kinds(net):
    """The placement names of :data:`mfst.PLACEMENTS` that describe ``net``'s normalizations."""
    kinds = set()
    hidden = [n for n in net.norms if n.layer < net.depth]
    for n in net.norms:
        if n.layer == net.depth:
            kinds.add("batch-center-last" if n.center_only else "batch-last")
    every_batch = net.depth > 2 and all(isinstance(net.norm_at(l), BatchNorm) and not net.norm_at(l).center_only
                                        for l in range(1, net.depth))
    every_layer = net.depth > 2 and all(isinstance(net.norm_at(l), LayerNorm) for l in range(1, net.depth))
    if every_batch:
        kinds.add("batch-every")
    elif every_layer:
        kinds.add("layer-every")
    else:
        for n in hidden:
            if isinstance(n, LayerNorm):
                kinds.add("layer")
            else:
                kinds.add("batch-center-hidden" if n.center_only else "batch-hidden")
    return kinds or {"none"}


@FAST
@given(mfst.networks(min_depth=2, max_depth=3, min_sigma_w2=1.0, max_sigma_w2=2.0, max_sigma_b2=0.25,
                     min_alpha=0.25, max_alpha=4, max_outputs=2))
def test_networks_respect_their_bounds(net):
    assert 2 <= net.depth <= 3
    assert all(1.0 <= s <= 2.0 for s in net.sigma_w2) and all(0 <= s <= 0.25 for s in net.sigma_b2)
    assert all(a in (0.25, 0.5, 1.0, 2.0, 4.0) for a in net.alphas)
    assert 1 <= net.outputs <= 2
    assert net.widths(4 * 3) and mfst.width_multiple(net) in (1, 2, 4)
    assert all(a.family in mfst.ACTIVATION_FAMILIES for a in net.activation)


@FAST
@given(st.data())
def test_only_allowed_placements_appear(data):
    allowed = data.draw(st.lists(st.sampled_from(mfst.PLACEMENTS), min_size=1, max_size=3, unique=True))
    # "batch-every" and "layer-every" at depth 2 are one hidden layer: indistinguishable from
    # "batch-hidden"/"layer"; depth >= 3 keeps the classification of _placement_kinds exact.
    net = data.draw(mfst.networks(min_depth=3, max_depth=4, norms=allowed))
    kinds = _placement_kinds(net)
    if "none" not in allowed:
        assert kinds != {"none"}
    assert kinds <= set(allowed) | {"none"}, (allowed, net.norms)


@pytest.mark.parametrize("placement", [p for p in mfst.PLACEMENTS if p != "none"])
def test_every_placement_can_be_drawn(placement):
    net = find(mfst.networks(min_depth=3, norms=(placement,)), lambda n: True)
    assert _placement_kinds(net) == {placement}


def test_examples_shrink_to_the_simplest_network():
    net = find(mfst.networks(), lambda n: True)
    assert (net.depth, net.norms, net.outputs, net.alphas) == (1, (), 1, (1.0,))
    assert (net.sigma_w2, net.sigma_b2) == ((1.0,), (0.0,))
    # a property of normalized nets shrinks to the shallowest net carrying that normalization
    bn = find(mfst.networks(), lambda n: any(isinstance(x, LayerNorm) for x in n.norms))
    assert bn.depth == 2 and bn.norms == (LayerNorm(1),)


def test_mixed_activations_and_per_layer_variances():
    net = find(mfst.networks(min_depth=3, mixed_activations=True, per_layer_variances=True),
               lambda n: len({a.family for a in n.activation}) > 1 and len(set(n.sigma_w2)) > 1)
    assert net.depth == 3 and len(net.activation) == 2 and len(net.sigma_w2) == 3


@FAST
@given(mfst.activations())
def test_activations_have_a_derivative(phi):
    assert phi.family in mfst.ACTIVATION_FAMILIES
    assert phi.derivative is not None


def test_activation_families_and_aliases():
    assert find(mfst.activations(["swish"]), lambda a: True).family == "silu"
    leaky = find(mfst.activations(["leaky_relu"]), lambda a: "0.2" in a.name)
    assert leaky.family == "leaky_relu"


@FAST
@given(mfst.order_parameters(min_q1=0.5, max_q1=3.0, min_correlation=-0.5))
def test_order_parameters_are_valid(pair):
    q1, q2 = pair
    assert 0.5 <= q1 <= 3.0 and -0.5 * q1 <= q2 <= q1
    mf.Network(2, "relu", 2, 0, input_q1=q1, input_q2=q2)  # accepted as input statistics


@FAST
@given(mfst.networks(inputs=mfst.order_parameters(max_correlation=0.9), max_depth=2))
def test_networks_with_drawn_inputs(net):
    assert -net.input_q1 <= net.input_q2 <= 0.9 * net.input_q1


@FAST
@given(st.data())
def test_samples_respect_the_network(data):
    net = data.draw(mfst.networks(max_depth=2))
    T = data.draw(mfst.samples(net, max_samples=16))
    assert max(net.min_samples(), min_samples_for(net, "fisher")) <= T <= 16


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_predict_accepts_every_drawn_batch_size(data):
    # the smallest T is the one predict could refuse: batch norm on the output needs T >= 6 for s
    net = data.draw(mfst.networks(max_depth=3, activations=mfst.activations(["relu", "linear"]),
                                  norms=("batch-last", "batch-center-last", "batch-hidden", "layer")))
    T = data.draw(mfst.samples(net, max_samples=8))
    assert mf.predict(net, 16, T).kappa1 > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_drawn_inputs_and_batch_sizes_are_realisable_together(data):
    # a negative input correlation caps T (q2 >= -q1/(T-1)) and a batch norm needs distinct inputs:
    # networks() and samples() draw only pairs that predict accepts
    net = data.draw(mfst.networks(max_depth=3, inputs=mfst.order_parameters(), activations=mfst.activations(
        ["relu", "linear"])))
    T = data.draw(mfst.samples(net, max_samples=4096))
    assert mf.predict(net, 64, T).m > 0


def test_samples_refuses_inputs_no_batch_size_realises():
    net = mf.Network(2, "relu", 2, 0, norms=[BatchNorm("last")], input_q2=-0.5)   # T <= 3, but batch norm needs 6
    with pytest.raises(InvalidArgument, match="network"):
        mfst.samples(net)
    assert find(mfst.samples(mf.Network(2, "relu", 2, 0, input_q2=-0.5)), lambda T: T > 2) == 3


def test_a_network_prints_compactly_in_falsifying_examples():
    from hypothesis.vendor.pretty import pretty

    net = mf.Network(2, "relu", 2, 0.1, norms=[BatchNorm("last")])
    assert pretty(net) == repr(net) == "Network(depth=2, activation='relu', sigma_w2=2, sigma_b2=0.1, norms='batch:2')"


def test_smallest_drawn_batch_size_is_what_predict_needs():
    net = mf.Network(2, "relu", 2, 0, norms=[BatchNorm("last")])
    assert find(mfst.samples(net), lambda T: True) == 6
    with pytest.raises(InvalidArgument, match="samples"):
        mf.predict(net, 16, 5)


def test_activations_draw_formulas():
    act = find(mfst.activations(["relu"], formulas=["x*tanh(x)"]), lambda a: a.family == "custom")
    assert act == mf.Activation.from_expr("x*tanh(x)")


@pytest.mark.parametrize("call", [
    lambda: mfst.networks(min_depth=0),
    lambda: mfst.networks(min_depth=3, max_depth=2),
    lambda: mfst.networks(min_alpha=0.3, max_alpha=0.4),
    lambda: mfst.networks(min_sigma_w2=0),
    lambda: mfst.networks(min_sigma_b2=-1),
    lambda: mfst.networks(min_outputs=0),
    lambda: mfst.networks(norms=("batch-lst",)),
    lambda: mfst.networks(norms=()),
    lambda: mfst.networks(norms=("layer",), max_depth=1),
    lambda: mfst.networks(activations=["relu"]),
    lambda: mfst.activations(["rleu"]),
    lambda: mfst.activations([]),
    lambda: mfst.activations(formulas=["x*y"]),
    lambda: mfst.activations(formulas=[3]),
    lambda: mfst.order_parameters(min_q1=0),
    lambda: mfst.order_parameters(min_correlation=-2),
    lambda: mfst.samples(min_samples=5, max_samples=4),
    lambda: mfst.samples(mf.Network(2, "relu", 2, 0, norms=[BatchNorm("last")]), max_samples=2),
])
def test_bad_arguments_raise_invalid_argument(call):
    with pytest.raises(mf.InvalidArgument):
        call()


def test_unknown_placement_suggests_the_closest():
    with pytest.raises(mf.InvalidArgument, match="batch-last"):
        mfst.networks(norms=("batch-lst",))
