"""The chain's layer-norm step (meanfield.finite.chain_layernorm) and the placements it opens.

Reductions (to rounding): fed the plain network's state below a layer norm on layer 2 of three, the step gives
layernorm's kernel and NTK mean shifts and layernorm_world's four-sample world (relu and tanh).

The sampled check (live): relu, sigma_w^2 = 2, sigma_b^2 = 0.1, batch:1 + layer:2, L = 3, C = 2, T = 8, M = 64,
seeds 0..1999 (about 3 s): the corrected E G_tt, E G_ts within 3 standard errors of the sampled means (false alarm
about 0.5% for the two if the derivation is exact; the O(1/M^2) remainder, measured below 1 se at 20000 seeds, is
negligible at 2000), and the mean-field E G_ts more than 5 se off (measured 11.9 se: the check has power to see the
correction).
"""

import numpy as np
import pytest

from meanfield import InvalidArgument, predict
from meanfield.finite.chain import chain_placement, chain_terms, finite_width_stats
from meanfield.finite.chain_layernorm import layer_norm_from_below
from meanfield.finite.corrections import kernel_mean_shift, ntk_mean_shift
from meanfield.finite.fourworld import realized_world
from meanfield.finite.layernorm import layer_norm_kernel_mean_shift, layer_norm_ntk_mean_shift
from meanfield.finite.layernorm_world import layer_norm_world
from meanfield.finite.multibn import BelowWorld
from meanfield.sampled.sampling import sample
from meanfield.spec.network import Network

M, T = 64, 8


@pytest.mark.parametrize("act,sw", [("relu", 2.0), ("tanh", 1.0)])
def test_plain_state_reproduces_layernorm(act, sw):
    net, plain = Network(3, act, sw, 0.1, norms=["layer:2"]), Network(2, act, sw, 0.1)
    state = BelowWorld(realized_world(plain, M), kernel_mean_shift(plain, M)[1], ntk_mean_shift(plain, M))
    b, w = layer_norm_from_below(net, M, state, 2)
    # layernorm's NTK path differentiates F(rho(Q)), c(rho(Q)) by central differences (step 1e-4 Q_tt): rounding of
    # about 1e-8 relative (ss entry of the kernel shift: 4e-9 absolute where the exact value is 0)
    np.testing.assert_allclose(M * b.dk[:2], layer_norm_kernel_mean_shift(net, M)[2][:2], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(M * b.dk[:2] + sw * b.dn[:2], layer_norm_ntk_mean_shift(net, M), rtol=1e-6)
    ref = layer_norm_world(net, M)
    np.testing.assert_allclose(w.k + w.n, ref.k + ref.n, rtol=1e-12)
    np.testing.assert_allclose(w.cov, ref.cov, rtol=1e-9, atol=1e-12 * np.abs(ref.cov).max())
    for pair in ref.y:
        np.testing.assert_allclose(w.y[pair], ref.y[pair], rtol=1e-9, atol=1e-12 * np.abs(ref.y[pair]).max())


def test_placements_and_notes():
    net = Network(3, "tanh", 1, 0.1, outputs=2, norms=["batch:1", "layer:2"])
    assert chain_placement(net) == ((1, "batch"), (2, "layer"), ("out", None))
    assert chain_placement(Network(4, "tanh", 1, 0.1, norms=["batch-center:1", "layer:2", "batch:last"]))[1] == (
        2, "layer")
    out = finite_width_stats(net, M, T, predict(net, M, T))
    assert out["includes_1_over_M"] == frozenset({"gram_diag", "gram_offdiag", "m", "kappa1", "kappa2"})
    assert any("through a layer norm above a batch norm: not derived" in n for n in out["notes"])
    t = chain_terms(net, M, T)
    assert t.s == t.s_mean_field and t.entry_variances is None
    assert abs(t.shift_diag / t.mean_field_diag) < 0.05


def test_bad_input():
    net = Network(3, "relu", 2, 0.1, norms=["batch:1", "layer:2"])
    state = BelowWorld(realized_world(Network(2, "relu", 2, 0.1), M), (0.0, 0.0), (0.0, 0.0))
    with pytest.raises(InvalidArgument):
        layer_norm_from_below(net, M, state, 1)            # no layer norm there (and layer 1 has no state below)
    with pytest.raises(InvalidArgument):
        layer_norm_from_below(Network(3, "relu", 2, 0.1), M, state, 2)
    with pytest.raises(InvalidArgument):
        layer_norm_from_below(net, M, "state", 2)
    with pytest.raises(InvalidArgument):
        layer_norm_from_below(net, 1, state, 2)


def test_sampled_relu_batch_then_layer_norm():
    net = Network(3, "relu", 2.0, 0.1, outputs=2, norms=["batch:1", "layer:2"])
    draws = [sample(net, M, T, seed=s, gram=True) for s in range(2000)]
    d = np.array([r.gram_diag for r in draws])
    o = np.array([r.gram_offdiag for r in draws])
    t = chain_terms(net, M, T)
    for x, corrected, mean_field in ((d, t.mean_diag, t.mean_field_diag), (o, t.mean_offdiag, t.mean_field_offdiag)):
        se = x.std(ddof=1) / np.sqrt(len(x))
        assert abs(corrected - x.mean()) < 3 * se
    se = o.std(ddof=1) / np.sqrt(len(o))
    assert abs(t.mean_field_offdiag - o.mean()) > 5 * se
