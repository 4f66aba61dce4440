"""derive(net).corrections for a hidden batch norm with another normalization (meanfield.finite.symbolic_chains)
equals predict(net, M, T, finite_width="1/M").

One truth, as in tests/test_symbolic_placements.py: the derivation writes the combination (the output norm's
projection exact in T, the full output batch norm's closed forms, m, s, the kappa's) and leaves each numerically
evaluated part a named atom whose value is the numeric path's own number (bnpair, normalized, multibn, chain).
Both sides differ by rounding only (measured: worst 1.0e-13 relative over these placements, M = 64, T = 8),
so 1e-10 is a margin of ~10^3. Each network is compared at M = 64, T = 8 for tanh and relu; predict runs first on
the derivation's own network (derive makes its floats exact, and the numeric terms are cached per network), so
evaluate reuses its terms.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import sympy

import meanfield as mf
from meanfield.errors import InvalidArgument
from meanfield.finite import symbolic_normalized
from meanfield.finite.bnpair import batch_norm_pair_terms
from meanfield.finite.hiddenbn import hidden_batch_norm_terms
from meanfield.finite.normalized import output_batch_norm_terms
from meanfield.finite.symbolic_chains import (BelowOutputNorm, BelowPairing, ChainPart, MultiBatchNormPart,
                                              NumericStatistic, PairBatchNormPart, chain_parts, chain_placement_of,
                                              numeric_claims)
from meanfield.finite.symbolic_normalized import correction_placement, derive_network_corrections
from meanfield.finite.symbolic_placements import HiddenBatchNormPart
from meanfield.printing import parse_latex
from meanfield.spec.activations import Activation
from meanfield.spec.network import Network
from meanfield.theory.derivation import derive

REL = 1e-10
WIDTH, SAMPLES = 64, 8
STATS = (("mean_diag", "gram_diag"), ("mean_offdiag", "gram_offdiag"), ("m", "m"), ("s", "s"), ("kappa1", "kappa1"),
         ("kappa2", "kappa2"))

# (depth, norms, placement): one network per placement (and a hidden norm below the last hidden layer for the pairs)
NETWORKS = [(3, ("batch:2", "batch-center:last"), "batch+batch-center:last"),
            (3, ("batch:2", "batch:last"), "batch+batch:last"),
            (3, ("batch:1", "batch:2"), "batch:1+batch"),
            (3, ("layer:1", "batch:2"), "chain"),
            (4, ("batch:1", "batch:2", "batch:3"), "chain"),
            (4, ("batch:1", "batch-center:3", "batch-center:last"), "chain"),
            (4, ("layer:1", "batch:2", "batch:last"), "chain"),
            # a layer norm above a batch norm: s through it; tanh (2, 0.1) has a negative overlap under it
            (3, ("batch:1", "layer:2"), "chain"),
            (3, ("batch-center:1", "layer:2"), "chain"),
            # a layer norm as the top hidden norm under a batch norm on the output: s through it (lnpair)
            (3, ("batch:1", "layer:2", "batch-center:last"), "chain"),
            (3, ("batch-center:1", "layer:2", "batch:last"), "chain"),
            (4, ("batch:1", "layer:2", "batch-center:last"), "chain")]


def compare(d, width: int = WIDTH, samples: int = SAMPLES) -> dict:
    """evaluate against predict on every statistic predict claims; the others are None and named in .missing."""
    p = mf.predict(d.network, width, samples, finite_width="1/M")
    assert p.includes_1_over_M, d.network.describe()
    got = d.evaluate(width, samples)
    for key, name in STATS:
        if name not in p.includes_1_over_M:
            assert got[key] is None and name in d.missing, (key, d.missing)
            continue
        want = float(getattr(p, name))
        # E G_ts and kappa_2 can cancel to ~0: on the scale of their diagonal partners
        partner = {"mean_offdiag": float(p.gram_diag), "kappa2": float(p.kappa1)}.get(key, want)
        assert got[key] == pytest.approx(want, rel=REL, abs=REL * abs(partner)), (d.network.describe(), key)
    return got


# a centre-only hidden norm below the last hidden layer under a full output norm (the deep terms below, DBN atoms):
# tanh only (3-8 s a network under load)
CASES = [(act, *case) for act in ("tanh", "relu") for case in NETWORKS]
CASES.append(("tanh", 3, ("batch-center:1", "batch:last"), "batch+batch:last"))


@pytest.mark.parametrize("act, depth, norms, placement", CASES,
                         ids=lambda x: "+".join(x) if isinstance(x, tuple) else str(x))
def test_equals_predict(act, depth, norms, placement):
    d = derive(Network(depth, act, 2, 0.1, outputs=2, norms=list(norms))).corrections
    assert d.placement == placement and correction_placement(d.network) == placement
    # s: derived for the pairs and two hidden batch norms; behind layer norms not; through a chain where it claims it
    expected = {"batch+batch-center:last": (), "batch+batch:last": (), "batch:1+batch": ()}
    assert d.missing == expected.get(placement, () if "s" in numeric_claims(d.network) else ("s",))
    compare(d)


def test_centre_only_pair_is_the_projection_of_the_hidden_terms():
    """Pi G^in Pi: rows sum to zero, the hidden norm's parts are hiddenbn's of the network without the output's norm,
    s's parts are bnpair's."""
    d = derive(Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch:2", "batch-center:last"])).corrections
    written = {str(e.lhs): e.rhs for e in d.auxiliary}
    assert written["dG_stein_tt"] == BelowOutputNorm(HiddenBatchNormPart("stein_tt"))
    got = compare(d)
    assert got["mean_diag"] + (SAMPLES - 1) * got["mean_offdiag"] == pytest.approx(0, abs=1e-12 * got["mean_diag"])
    inner = hidden_batch_norm_terms(d.network.with_(norms=d.network.norms[:1]), WIDTH, SAMPLES)
    for part in ("shift", "second", "stein"):
        assert got[f"dG_{part}_ts"] == getattr(inner, f"{part}_offdiag")
    pair = batch_norm_pair_terms(d.network, WIDTH, SAMPLES)
    for name in ("s_same", "s_below", "s_cross"):
        assert got[name] == getattr(pair, name)


def test_full_output_pair_couplings_are_normalized_terms():
    """The closed-form couplings in the world's contractions (BelowContraction) equal output_batch_norm_terms'."""
    d = derive(Network(3, "relu", 2, 0.1, outputs=2, norms=["batch:2", "batch:last"])).corrections
    got = d.evaluate(WIDTH, SAMPLES)
    t = output_batch_norm_terms(d.network, WIDTH, SAMPLES)
    for key, field in (("coupling_diag", "coupling_diag"), ("coupling_offdiag", "coupling_offdiag"),
                       ("coupling_s", "coupling_s"), ("ntk_factor", "ntk_factor"), ("scale_factor", "scale_factor"),
                       ("s_same", "s_same"), ("s_cross", "s_cross")):
        assert got[key] == pytest.approx(getattr(t, field), rel=REL, abs=REL * abs(t.mean_diag)), key
    assert any(e.rhs.has(BelowPairing) for e in d.auxiliary)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_generic_fallback_equals_predict(act, monkeypatch):
    """The "numeric" placement (any network the numeric path claims statistics for) on networks that have a
    structured one: the same numbers, its missing what predict does not claim."""
    for depth, norms in ((3, ["batch:1", "batch:2"]), (4, ["batch:1", "batch:2", "batch:3"])):
        net = derive(Network(depth, act, 2, 0.1, outputs=2, norms=norms)).network
        monkeypatch.setattr(symbolic_normalized, "chain_placement_of", lambda net: "numeric")
        d = derive_network_corrections.__wrapped__(net)
        monkeypatch.undo()
        assert d.placement == "numeric" and all(e.rhs.has(NumericStatistic) for e in d.auxiliary)
        assert d.missing == (() if "s" in numeric_claims(net) else ("s",))
        compare(d)


def test_refused_and_bad_atoms():
    """What the numeric path does not derive (an activation with unknown kinks, here infinitely many, on a
    batch-normalized layer; kinks anywhere else are split by meanfield.finite.spherecut) is refused, naming the
    norms."""
    shifted = Activation.from_expr("Max(0, sin(x))", name="relu_sin")
    assert shifted.kinks is None
    for norms in (["batch:1", "layer:2"], ["batch:1", "layer:2", "batch:last"]):
        net = Network(3, shifted, 2, 0.1, norms=norms)
        assert chain_placement_of(net) is None
        with pytest.raises(InvalidArgument, match="not derived for"):
            derive(net).corrections
    for bad in (lambda: PairBatchNormPart("s"), lambda: BelowPairing("same_4"), lambda: MultiBatchNormPart("x"),
                lambda: ChainPart("ntk"), lambda: NumericStatistic("shift_m"),
                lambda: BelowOutputNorm(MultiBatchNormPart("shift_tt"))):
        with pytest.raises(InvalidArgument):
            bad()
    net = Network(3, "relu", 2, 0.1, norms=["batch:1", "batch:2"])
    with pytest.raises(InvalidArgument):
        chain_parts(net, "chain", derive(net))
    # an atom refuses a network its numeric path does not cover
    with pytest.raises(InvalidArgument):
        NumericStatistic("shift_tt").value(Network(3, shifted, 2, 0.1, norms=["batch:1", "layer:2"]), 64, 8)


# derive's own networks (exact sigma's): the numeric path's terms computed above are reused (cached per network)
WRITTEN = [derive(Network(depth, act, 2, 0.1, outputs=2, norms=list(norms))).network
           for act, (depth, norms, _) in zip(("tanh", "relu") * 6, NETWORKS)]
WRITTEN.append(derive(Network(3, "tanh", 2, 0.1, outputs=2, norms=["batch-center:1", "batch:last"])).network)


def test_statistics_latex_parses_back():
    for net in WRITTEN:
        d = derive_network_corrections(net)
        keys = [k for k in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2") if getattr(d, k) is not None]
        lines = d.latex_lines()
        for key, line in zip(keys, lines):
            back = parse_latex(line.split("&=", 1)[1], symbols=d.symbols)
            assert sympy.simplify(back - getattr(d, key)) == 0, (net.describe(), key)
        assert len(lines) > len(keys) and str(d).count("=") > len(keys)


def test_latex_compiles(tmp_path, monkeypatch):
    texts = [derive_network_corrections(net)._repr_latex_() for net in WRITTEN]
    monkeypatch.setattr(symbolic_normalized, "chain_placement_of", lambda net: "numeric")
    texts.append(derive_network_corrections.__wrapped__(derive(WRITTEN[3]).network)._repr_latex_())
    monkeypatch.undo()
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex")
    doc = ("\\documentclass{article}\\usepackage{amsmath,amssymb}"
           "\\usepackage[paperwidth=200cm,paperheight=200cm,margin=1cm]{geometry}\\begin{document}\n"
           + "\n\n".join(texts) + "\n\\end{document}\n")
    (tmp_path / "p.tex").write_text(doc)
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "p.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
