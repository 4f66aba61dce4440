"""The O(1/M) corrections in sympy (meanfield.finite.symbolic_corrections) equal the numeric path's (gram_corrections).

One truth: derive_corrections(net).evaluate(M, T) and gram_corrections(net, M, T) compute the same recursion, the
first as sympy equations lambdified one at a time (with closed forms of the kernel maps and their Q-derivatives
where they exist, relu and erf), the second in numpy. Where both integrate (tanh, and the four-point terms of every
activation) they use the same nested Gauss-Legendre rule, so they differ by rounding; where the symbolic path has a
closed form, by the rule's error against it, which is at rounding too ("exact to rounding" for piecewise-smooth
integrands, meanfield.integrals.quadrature). Measured worst over the networks of this file: 5e-14 relative.
1e-10 relative is therefore a margin of ~10^3 or more. The shifts (O(1) against O(M) means) are compared on the
scale of the mean-field E G_tt, from whose O(M) terms the numeric path computes them by the same subtraction.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import sympy
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import meanfield as mf
from meanfield import strategies as mfst
from meanfield.errors import InvalidArgument
from meanfield.finite.corrections import gram_corrections
from meanfield.finite.symbolic_corrections import (PHI, P_SS, P_TS, P_TT, U_S, U_T, Y_S, Y_T, NormalExpectation,
                                                   derive_corrections)
from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.printing import parse_latex
from meanfield.spec.symbols import T, layer_symbol
from meanfield.theory.backend import evaluate_expectations
from meanfield.theory.derivation import derive

REL = 1e-10
KEYS = ("mean_diag", "mean_offdiag", "m", "s", "kappa1", "kappa2", "var_diag", "var_offdiag", "cross_square_diag",
        "cross_square_offdiag", "mean_field_diag", "mean_field_offdiag", "m_mean_field", "s_mean_field")


def assert_same(net: Network, width: int, samples: int) -> None:
    try:
        ref = gram_corrections(net, width, samples)
    except InvalidArgument:
        # e.g. inputs with a negative mean product, which the entry variances do not cover: refused by both
        with pytest.raises(InvalidArgument):
            derive_corrections(net).evaluate(width, samples)
        return
    got = derive_corrections(net).evaluate(width, samples)
    scale = abs(ref.mean_field_diag)
    for key in ("diag_shift", "offdiag_shift"):
        assert got[key] == pytest.approx(getattr(ref, key), rel=REL, abs=REL * scale), key
    for key in KEYS:
        want = getattr(ref, key)
        if want is None:      # depth 1: no kappa's
            assert got[key] is None, key
            continue
        # gram_offdiag and kappa_2 can cancel to ~0: on the scale of their diagonal partners
        partner = {"mean_offdiag": ref.mean_diag, "kappa2": ref.kappa1, "mean_field_offdiag": ref.mean_diag,
                   "var_offdiag": ref.var_diag, "cross_square_offdiag": ref.cross_square_diag}.get(key, want)
        assert got[key] == pytest.approx(want, rel=REL, abs=REL * abs(partner)), key


ACTIVATIONS = st.sampled_from([mf.activation("relu"), mf.activation("tanh"), mf.activation("erf")])
# input statistics (q1, c q1) from a few correlations: derive itself refuses subnormal ones such as q2 = 2e-191
# (its exact closed form does not evaluate to a float), which is derive's matter, not these corrections'
INPUTS = st.builds(lambda q, c: (q, c * q), st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([0.0, 0.25, 0.5, 0.8]))


@settings(max_examples=5)
@given(net=mfst.networks(min_depth=2, max_depth=3, activations=ACTIVATIONS, norms=("none",), max_outputs=3,
                         inputs=INPUTS),
       base=st.sampled_from([16, 32]), T=st.integers(2, 8))
def test_symbolic_equals_numeric(net, base, T):
    """Over strategies.networks() (plain, depth 2 and 3, relu/tanh/erf; 5 examples): every number equal."""
    width = base * mfst.width_multiple(net)
    assert_same(net, width, T)


@pytest.mark.parametrize("net", [Network(3, "relu", 2, 0.1, outputs=2), Network(3, "tanh", 1.5, 0.2, outputs=2),
                                 Network(3, "erf", 1.3, 0.1, input_q2=0.3), Network(1, "tanh", 1.5, 0.2, outputs=2)])
def test_fixed_networks(net):
    assert_same(net, 32, 6)


def test_relu_has_closed_forms_and_no_diagonal_shift():
    d = derive_corrections(Network(3, "relu", 2, 0.1, outputs=2))
    first = {str(e.lhs): e.rhs for e in d.definitions if str(e.lhs) in ("F_1", "c_1", "gF_1", "gc_1", "HF_1_ts")}
    assert len(first) == 5 and not any(v.has(NormalExpectation) for v in first.values())
    # relu: c = 1/2 and E relu^2 = Q/2 whatever Q: the NTK diagonal has no 1/M correction
    out = d.evaluate(64, 8)
    assert abs(out["diag_shift"]) < 1e-12 * out["mean_field_diag"] and out["offdiag_shift"] != 0


def test_tanh_keeps_unevaluated_expectations():
    d = derive_corrections(Network(2, "tanh", 1.5, 0.1))
    c1 = next(e.rhs for e in d.definitions if str(e.lhs) == "c_1")
    assert all(isinstance(v, NormalExpectation) for v in c1)
    assert str(c1[1]) == "E_1[dphi(u_s)*dphi(u_t)]"


def test_price_weights_equal_closed_form_derivatives():
    """The Hermite-weighted quadrature (used where no closed form exists) against sympy derivatives of relu's
    closed form: dF_ts/dQ_ts = E[step step] and d2F_ts/dQ_ts^2 = E[delta delta] = 1/(2 pi sqrt(det Q))."""
    relu = mf.activation("relu")
    qtt, qts, qss = sympy.symbols("qtt qts qss", positive=True)
    F = mf.integrals.symbolic.pair_moment(relu, qtt, qss, qts)
    at = {qtt: sympy.Rational(13, 10), qts: sympy.Rational(4, 10), qss: sympy.Rational(13, 10)}
    q = [float(at[s]) for s in (qtt, qts, qss)]
    first = NormalExpectation(PHI(U_T) * PHI(U_S) * (Y_T * Y_S - P_TS), *q, 1).value(relu, *q)
    # the fourth Hermite polynomial of N(0, Q) at indices (t, s, t, s)
    h4 = (Y_T * Y_S) ** 2 - 4 * P_TS * Y_T * Y_S - P_TT * Y_S**2 - P_SS * Y_T**2 + 2 * P_TS**2 + P_TT * P_SS
    second = NormalExpectation(PHI(U_T) * PHI(U_S) * h4, *q, 1).value(relu, *q)
    assert first == pytest.approx(float(sympy.diff(F, qts).subs(at)), rel=1e-13)
    assert second == pytest.approx(float(sympy.diff(F, qts, 2).subs(at)), rel=1e-12)


def test_derive_reaches_it_through_the_registry():
    net = Network(2, "relu", 2, 0.1, outputs=2)
    c = derive(net).corrections
    assert c.evaluate(32, 4)["mean_offdiag"] == pytest.approx(gram_corrections(net, 32, 4).mean_offdiag, rel=REL)
    # the same numbers as predict's "1/M" model
    p = mf.predict(net, 32, 4, finite_width="1/M")
    assert c.evaluate(32, 4)["s"] == pytest.approx(float(p.s), rel=REL)


@pytest.mark.parametrize("net", [Network(3, "relu", 2, 0.1, norms=[BatchNorm("last", center_only=True)]),
                                 Network(3, "relu", 2, 0.1, norms=[LayerNorm(1)]),
                                 Network(2, "relu", layer_symbol("sigma_w2"), 0.1), "relu"])
def test_refuses_what_is_not_derived(net):
    with pytest.raises(InvalidArgument):
        derive_corrections(net)


def test_bad_width_and_samples():
    d = derive_corrections(Network(2, "relu", 2, 0.1, alphas=(1, 0.5)))
    with pytest.raises(InvalidArgument):
        d.evaluate(33, 4)          # alpha_1 M not whole
    with pytest.raises(InvalidArgument):
        d.evaluate(32, 1)


def test_readable_and_latex_compiles(tmp_path):
    d = derive_corrections(Network(3, "tanh", 1.5, 0.1, outputs=2))
    text = str(d)
    assert "dTheta_3_tt = M*dK_2[0, 0] + 3*dN_2_tt/2" in text and "gram_diag    = G_tt_mf + dTheta_3_tt/T" in text
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex")
    doc = ("\\documentclass{article}\\usepackage{amsmath,amssymb}"
           "\\usepackage[paperwidth=200cm,paperheight=200cm,margin=1cm]{geometry}\\begin{document}\n"
           + d._repr_latex_() + "\n\\end{document}\n")
    (tmp_path / "c.tex").write_text(doc)
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "c.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]


def test_statistics_latex_parses_back():
    d = derive_corrections(Network(3, "tanh", 1.5, 0.1, outputs=2))
    lines = d.latex_lines()
    for key, line in zip(("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2"), lines):
        back = parse_latex(line.split("&=", 1)[1], symbols=d.symbols)
        assert sympy.simplify(back - getattr(d, key)) == 0, key


@pytest.mark.parametrize("net", [Network(2, "tanh", 1.5, 0.2, outputs=2),
                                 Network(3, "relu", 2, 0.1, alphas=(1, 2, 0.5))])
def test_expansion_in_one_over_m(net):
    """E G = M a_0 + a_1 + b/(M T) exactly: the expansion reproduces evaluate() at two widths to rounding."""
    d = derive_corrections(net)
    expansion, coef = d.expansion(), d.shift_coefficients()
    for width in (32, 256):
        out = d.evaluate(width, 6)
        for key, name, stat in (("gram_diag", "tt", "mean_diag"), ("gram_offdiag", "ts", "mean_offdiag")):
            a0, a1 = expansion[key]
            series = float(evaluate_expectations((width * a0 + a1).subs(T, 6))) + coef[name][1] / (width * 6)
            assert series == pytest.approx(out[stat], rel=1e-12, abs=1e-12 * out["mean_diag"]), (key, width)


# -- normalized placements (meanfield.finite.symbolic_normalized): derive(net).corrections ------------------------
#
# Same tolerance argument as above: both paths sum the same quadrature nodes, the same four-point covariances and
# (full batch norm) the same four-sample world in the same closed form, so they differ by rounding (measured worst 6e-14 relative
# over the networks below); 1e-10 is a margin of > 10^3.

from meanfield.finite.normalized import output_batch_norm_terms  # noqa: E402
from meanfield.finite.symbolic_normalized import (BatchNormCoupling, GramCovariance, LayerNormPart,  # noqa: E402
                                                  NormalizedCorrectionDerivation, correction_placement,
                                                  derive_network_corrections)

DERANDOMIZED = settings(max_examples=3, derandomize=True, deadline=None)
BN_KEYS = ("mean_diag", "mean_offdiag", "m", "s", "kappa1", "kappa2", "ntk_factor", "scale_factor", "s_same",
           "s_cross", "coupling_diag", "coupling_offdiag", "coupling_s")


@DERANDOMIZED
@given(net=mfst.networks(min_depth=2, max_depth=3, activations=ACTIVATIONS, norms=("batch-center-last",),
                         max_outputs=3, inputs=INPUTS),
       base=st.sampled_from([16, 32]), T=st.integers(2, 8))
def test_centre_only_batch_norm_equals_numeric(net, base, T):
    """Centre-only batch norm on the output: Pi on the plain recursion, entry variances summed over label classes
    (exact in T), every number equal to gram_corrections' (3 derandomized examples)."""
    assert isinstance(derive(net).corrections, NormalizedCorrectionDerivation)
    width = base * mfst.width_multiple(net)
    try:
        ref = gram_corrections(net, width, T)
    except InvalidArgument:
        with pytest.raises(InvalidArgument):
            derive(net).corrections.evaluate(width, T)
        return
    got = derive(net).corrections.evaluate(width, T)
    for key in KEYS:
        want = getattr(ref, key)
        if want is None:
            assert got[key] is None, key
            continue
        partner = {"mean_offdiag": ref.mean_diag, "kappa2": ref.kappa1, "var_offdiag": ref.var_diag,
                   "cross_square_offdiag": ref.cross_square_diag}.get(key, want)
        assert got[key] == pytest.approx(want, rel=REL, abs=REL * abs(partner)), key


@settings(max_examples=2, derandomize=True, deadline=None)
@given(net=mfst.networks(min_depth=2, max_depth=3, activations=ACTIVATIONS, norms=("batch-last",), max_outputs=2,
                         inputs=INPUTS),
       T=st.sampled_from([10, 12]))
def test_full_batch_norm_equals_numeric(net, T):
    """Full batch norm on the output: chi-square moments, projector sums and coupling terms symbolic (``draws`` is
    ignored by both sides now that the couplings are exact); 2 derandomized examples."""
    width = 16 * mfst.width_multiple(net)
    d = derive(net).corrections
    assert d.placement == "batch:last" and d.gram_diag.has(sympy.Symbol("Cpl_tt"))
    try:
        ref = output_batch_norm_terms(net, width, T, draws=300)
    except InvalidArgument:
        with pytest.raises(InvalidArgument):
            d.evaluate(width, T, draws=300)
        return
    got = d.evaluate(width, T, draws=300)
    for key in BN_KEYS:
        want = getattr(ref, key)
        assert got[key] == pytest.approx(want, rel=REL, abs=REL * abs(ref.mean_diag if "diag" in key else ref.s)), key


def test_full_batch_norm_equals_predict():
    """predict(..., "1/M")'s numbers to rounding (the same closed-form couplings)."""
    net = Network(2, "tanh", 1.5, 0.2, outputs=2, norms=["batch:last"])
    p = mf.predict(net, 16, 10, finite_width="1/M")
    got = derive_network_corrections(net).evaluate(16, 10)
    for key, name in (("mean_diag", "gram_diag"), ("mean_offdiag", "gram_offdiag"), ("m", "m"), ("s", "s"),
                      ("kappa1", "kappa1"), ("kappa2", "kappa2")):
        assert got[key] == pytest.approx(float(getattr(p, name)), rel=REL), key


@pytest.mark.parametrize("net", [Network(3, "relu", 2, 0.1, outputs=2, norms=["layer:2"]),
                                 Network(3, "tanh", 1.5, 0.05, input_q2=0.3, norms=["layer:2"])])
def test_layer_norm_equals_numeric(net):
    """Layer norm on layer 2 of three: the projector, Stein and cross parts as Gaussian expectations equal
    layer_norm_gram_means' terms, and so does their sum dTheta_ln2_p (the shift written out); the statistics use the
    general recursion's shift and equal predict's, s included (tests/test_symbolic_placements.py)."""
    d = derive(net).corrections
    assert d.missing == () and d.s is not None
    written = {str(e.lhs): e.rhs for e in d.auxiliary}
    assert written["LN_stein_tt"].has(NormalExpectation) and isinstance(written["LN_forward_tt"], LayerNormPart)
    got = d.evaluate(16, 6)
    ref = mf.finite.layernorm.layer_norm_gram_means(net, 16, 6)
    base = mf.predict(net, 16, 6)
    for pair, key in (("tt", "diag"), ("ts", "offdiag")):
        want = getattr(ref, f"mean_{key}")
        assert got[f"mean_field_{key}"] + got[f"dTheta_ln2_{pair}"] / 6 == pytest.approx(want, rel=REL), pair
        # the recursion's shift: the same quantity, central differences apart (~1e-9 relative to E G_tt at most)
        assert got[f"mean_{key}"] == pytest.approx(want, abs=1e-8 * ref.mean_diag), pair
    assert got["s"] > 0 and got["s_mean_field"] == pytest.approx(float(base.s), rel=REL)
    for part in ("projector", "stein", "cross"):
        for pair, entry in (("tt", "diag"), ("ts", "offdiag")):
            assert got[f"LN_{part}_{pair}"] == pytest.approx(6 * ref.terms[entry][part], rel=REL,
                                                              abs=REL * got["mean_diag"]), (part, pair)


@pytest.mark.parametrize("norms", [["batch:1", "layer:2"], ["batch-center:1", "layer:2", "batch:last"],
                                   ["batch:1", "layer:2", "batch-center:last"]])
def test_placements_not_derived_are_refused(norms):
    """An activation with unknown kinks (here infinitely many) on a hidden batch-normalized layer (the numeric path
    derives nothing; known kinks anywhere are split by meanfield.finite.spherecut): an InvalidArgument naming the
    norms (layer norms anywhere, also with a full batch norm on the output, one batch norm on any hidden layer and a
    hidden batch norm with other norms are derived: tests/test_symbolic_placements.py,
    tests/test_layernorm_outputbn.py, tests/test_deep_bn.py, tests/test_symbolic_chains.py, tests/test_kinked_bn.py)."""
    net = Network(3, mf.Activation.from_expr("Max(0, sin(x))", name="relu_sin"), 2, 0.1, norms=norms)
    with pytest.raises(InvalidArgument, match="not derived for"):
        derive(net).corrections
    assert correction_placement(Network(4, "relu", 2, 0.1, norms=["layer:2"])) == "layer"
    assert correction_placement(Network(3, "relu", 2, 0.1, alphas=(1, 2, 1), norms=["layer:2"])) == "layer"


def test_centre_only_expansion_in_one_over_m():
    """E G = M a_0 + a_1 + (Pi's image of b) / (M T): reproduces evaluate() at two widths to rounding."""
    d = derive_network_corrections(Network(2, "tanh", 1.5, 0.1, norms=["batch-center:last"]))
    expansion, coef = d.expansion(), d.shift_coefficients()
    db = coef["tt"][1] - coef["ts"][1]
    for width in (32, 256):
        out = d.evaluate(width, 6)
        for key, stat, rest in (("gram_diag", "mean_diag", (1 - 1 / 6) * db / (width * 6)),
                                ("gram_offdiag", "mean_offdiag", -db / (width * 36))):
            a0, a1 = expansion[key]
            series = float(evaluate_expectations((width * a0 + a1).subs(T, 6))) + rest
            assert series == pytest.approx(out[stat], rel=1e-12, abs=1e-12 * out["mean_diag"]), (key, width)
    with pytest.raises(InvalidArgument):
        derive_network_corrections(Network(3, "relu", 2, 0.1, norms=["layer:2"])).expansion()


NORMALIZED = [Network(3, "tanh", 1.5, 0.1, outputs=2, norms=["batch-center:last"]),
              Network(3, "relu", 2, 0.1, outputs=2, norms=["batch:last"]),
              Network(3, "tanh", 2, 0.1, outputs=2, norms=["layer:2"])]


def test_normalized_statistics_latex_parses_back():
    for net in NORMALIZED:
        d = derive_network_corrections(net)
        keys = [k for k in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2") if getattr(d, k) is not None]
        for key, line in zip(keys, d.latex_lines()):
            back = parse_latex(line.split("&=", 1)[1], symbols=d.symbols)
            assert sympy.simplify(back - getattr(d, key)) == 0, (net.describe(), key)


def test_normalized_latex_compiles(tmp_path):
    texts = [derive_network_corrections(net)._repr_latex_() for net in NORMALIZED]
    assert "Cov" in texts[0] and r"\mathcal{S}_{KK}" in texts[1] and r"\mathbb{E}_{2}" in texts[2]
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex")
    doc = ("\\documentclass{article}\\usepackage{amsmath,amssymb}"
           "\\usepackage[paperwidth=200cm,paperheight=200cm,margin=1cm]{geometry}\\begin{document}\n"
           + "\n\n".join(texts) + "\n\\end{document}\n")
    (tmp_path / "n.tex").write_text(doc)
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "n.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]


def test_atoms_refuse_bad_arguments():
    with pytest.raises(InvalidArgument):
        GramCovariance((0, 0), (0, 1, 2))
    with pytest.raises(InvalidArgument):
        BatchNormCoupling("xx")
    with pytest.raises(InvalidArgument):
        LayerNormPart("stein", "ss")


# -- full batch norm on the output: the coupling terms in closed form ----------------------------------------------
#
# derive(net).corrections writes Cpl_tt, Cpl_ts, Cpl_F2, Cpl_s as meanfield.finite.normalized's closed form in the
# five contractions, each a sum over the 15 label classes of the four-sample world's entries (v_w and D_w are the
# world's too). Both paths evaluate the same formula on the same world, so they differ by rounding: measured worst
# 4e-13 relative (statistics, on the scale of E G_tt or s) and 7e-14 (contractions) over 8 derandomized networks
# (relu/tanh/erf, depth 2 and 3, M = 16 to 64, T = 6 to 16). The class sums cancel the constant parts of the
# covariances (the projectors), so a contraction's rounding scales with the sum of its class terms' absolute values,
# not with its own size: compared with abs = REL times that sum. REL = 1e-10 keeps a margin > 10^2 on every number.

from meanfield.finite.normalized import coupling_contractions  # noqa: E402
from meanfield.finite.symbolic_normalized import CONTRACTIONS, WorldContraction, WorldEntry  # noqa: E402
from meanfield.spec.symbols import M as M_SYMBOL  # noqa: E402


def class_scale(expr, plain: Network, width: int, samples: int) -> float:
    """Sum over the label-class terms of a contraction of their absolute values (the scale of its rounding)."""
    expr = sympy.expand(sympy.sympify(expr).xreplace({M_SYMBOL: width, T: samples}))
    values = {a: a.value(plain, width) for a in expr.atoms(WorldEntry)}
    return sum(abs(float(term.xreplace(values))) for term in sympy.Add.make_args(expr))


# no shrinking: the examples are fixed (derandomized) and each costs seconds
@settings(max_examples=3, derandomize=True, deadline=None, phases=(Phase.explicit, Phase.generate))
@given(net=mfst.networks(min_depth=2, max_depth=3, activations=ACTIVATIONS, norms=("batch-last",), max_outputs=2,
                         inputs=INPUTS),
       base=st.sampled_from([16, 32]), samples=st.sampled_from([6, 9, 16]))
def test_full_batch_norm_couplings_in_closed_form(net, base, samples):
    """The couplings as sympy in T, D_w, v_w, sigma_w^2, M and the five contractions (no opaque atom); the
    contractions equal coupling_contractions', every statistic output_batch_norm_terms' and predict(..., "1/M")'s
    (3 derandomized examples)."""
    d = derive(net).corrections
    written = {str(e.lhs): e.rhs for e in d.auxiliary}
    assert not any(sympy.sympify(e.rhs).has(BatchNormCoupling) for e in d.auxiliary)
    assert {WorldContraction(name) for name in CONTRACTIONS} <= written["Cpl_tt"].free_symbols
    assert {WorldContraction(name) for name in CONTRACTIONS} <= written["Cpl_F2"].free_symbols
    assert all(written[name].has(WorldEntry) and written[name].has(T) for name in CONTRACTIONS)
    width = base * mfst.width_multiple(net)
    try:
        ref = output_batch_norm_terms(net, width, samples)
    except InvalidArgument:
        with pytest.raises(InvalidArgument):
            d.evaluate(width, samples)
        return
    got = d.evaluate(width, samples)
    numeric = coupling_contractions(net, width, samples)
    plain = net.with_(norms=())
    for name in CONTRACTIONS:
        assert numeric[name] == WorldContraction(name).value(net, width, samples)
        scale = class_scale(written[name], plain, width, samples)
        assert got[name] == pytest.approx(numeric[name], rel=REL, abs=REL * scale), name
    for key in BN_KEYS:
        want = getattr(ref, key)
        assert got[key] == pytest.approx(want, rel=REL, abs=REL * abs(ref.mean_diag if "diag" in key else ref.s)), key
    p = mf.predict(net, width, samples, finite_width="1/M")
    for key, name in (("mean_diag", "gram_diag"), ("mean_offdiag", "gram_offdiag"), ("m", "m"), ("s", "s"),
                      ("kappa1", "kappa1"), ("kappa2", "kappa2")):
        partner = {"mean_offdiag": ref.mean_diag, "kappa2": ref.kappa1}.get(key, getattr(ref, key))
        assert got[key] == pytest.approx(float(getattr(p, name)), rel=REL, abs=REL * abs(partner)), key


def test_full_batch_norm_couplings_print_and_parse():
    """The printed couplings name the contractions (no opaque atom); the statistics' LaTeX parses back for a
    depth-2, one-output network too; T < 6 (E[1/sigma^4] infinite) is refused."""
    d = derive_network_corrections(Network(2, "erf", 1.5, 0.1, norms=["batch:last"]))
    text = str(d)
    assert "Cpl_tt = " in text and "S_KK = " in text and "MC" not in text
    written = {str(e.lhs): str(e.rhs) for e in d.auxiliary}
    assert "Cov[K(0, 1), K(2, 3)]" in written["S_KK"] and "Cov[K(0, 1), N(2, 3)]" in written["S_KT"]
    assert "Monte" not in " ".join(d.notes)
    keys = [k for k in ("gram_diag", "gram_offdiag", "m", "s", "kappa1", "kappa2") if getattr(d, k) is not None]
    for key, line in zip(keys, d.latex_lines()):
        back = parse_latex(line.split("&=", 1)[1], symbols=d.symbols)
        assert sympy.simplify(back - getattr(d, key)) == 0, key
    assert any(r"\mathcal{X}^{Y}_{1} &= " in line and "Y^{00}_{00}" in line for line in d.latex_lines())
    with pytest.raises(InvalidArgument):
        d.evaluate(16, 5)


def test_world_atoms_refuse_bad_arguments_and_batch_norm_coupling_warns():
    with pytest.raises(InvalidArgument):
        WorldEntry("KK", (0, 2, 1, 0))      # not numbered in order of first appearance
    with pytest.raises(InvalidArgument):
        WorldEntry("K", (0, 1, 0, 1))       # means take two labels
    with pytest.raises(InvalidArgument):
        WorldEntry("ZZ", (0, 1, 0, 1))
    with pytest.raises(InvalidArgument):
        WorldContraction("S_XX")
    with pytest.warns(DeprecationWarning):
        BatchNormCoupling("tt")


def test_full_batch_norm_expansion_in_one_over_m():
    """E G = M a_0 + a_1 + r / M + O(1/M^2) for a full batch norm: the remainder times M is the same at M = 64 and
    256 up to the next order, (r_2 / r)(1/64 - 1/256); measured 0.07% here (erf, L = 3, alphas (1, 2, 1), T = 6:
    M R(M) = 0.16755 / 0.16767 at M = 64 / 256, so r_2 / r = 0.06; tanh 0.12539 / 0.12550 / 0.12553 at 64 / 256 /
    1024), and 2% allows |r_2 / r| up to 1.7. A wrong a_1 (e.g. without the coupling limit, 0.89 of a_1 = 1.06 for
    E G_tt here) leaves an O(1) remainder: M R(M) grows 4-fold."""
    d = derive_network_corrections(Network(3, "erf", 1.5, 0.1, outputs=2, input_q2=0.3, alphas=(1, 2, 1),
                                           norms=["batch:last"]))
    expansion = d.expansion()
    outs = {w: d.evaluate(w, 6) for w in (64, 256)}
    for key, stat in (("gram_diag", "mean_diag"), ("gram_offdiag", "mean_offdiag")):
        a0, a1 = (sympy.sympify(evaluate_expectations(x.subs(T, 6))) for x in expansion[key])
        scaled = [w * (outs[w][stat] - float(w * a0 + a1)) for w in (64, 256)]
        assert scaled[1] == pytest.approx(scaled[0], rel=0.02), key
