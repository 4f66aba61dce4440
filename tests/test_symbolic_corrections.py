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
from hypothesis import given, settings
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
