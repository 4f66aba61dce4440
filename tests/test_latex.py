"""LaTeX policy: project symbol names, Gaussian expectations, network specs, dispatch."""

import sympy

import meanfield as mf
from meanfield.printing import latex, latex_activation, latex_network
from meanfield.spec.symbols import LATEX_NAMES, layer_symbol, order_symbol


def test_sympy_expressions_use_project_symbol_names():
    q = order_symbol("qhat1", 3)
    text = latex(layer_symbol("sigma_w2") * q + layer_symbol("sigma_b2"))
    assert r"\hat{q}_{1}^{(3)}" in text and r"\sigma_{w}^{2}" in text and r"\sigma_{b}^{2}" in text
    # user names are merged over the project's, not replacing them
    a = sympy.Symbol("a")
    text = latex(a + q, symbol_names={a: r"\aleph"})
    assert r"\aleph" in text and r"\hat{q}_{1}^{(3)}" in text
    assert q in LATEX_NAMES  # the table itself is not modified by a call
    assert a not in LATEX_NAMES
    assert latex(2) == "2"


def test_gaussian_results_render():
    q1, q2 = order_symbol("q1", 2), order_symbol("q2", 2)
    cross = mf.cross_moment(mf.activation("tanh"), q1, q2)
    text = latex(cross)
    assert text == r"I_{\tanh}\left[q_{1}^{(2)}, q_{2}^{(2)}\right]"
    assert cross._repr_latex_() == "$\\displaystyle " + text + "$"
    second = mf.second_moment(mf.activation("gelu"), q1)
    assert latex(second).startswith(r"\mathbb{E}_{z}\left[\operatorname{GELU}^{2}")
    assert r"q_{1}^{(2)}" in latex(second)
    closed = mf.cross_moment(mf.activation("relu"), q1, q2)
    assert r"\operatorname{acos}" in latex(closed) and r"q_{1}^{(2)}" in latex(closed)
    # inside larger expressions, with the project's names
    combo = layer_symbol("sigma_w2") * cross + 1
    assert r"I_{\tanh}" in latex(combo) and r"\sigma_{w}^{2}" in latex(combo)


def test_activation_names():
    assert latex_activation(mf.activation("tanh")) == r"\tanh"
    assert latex_activation(mf.activation("leaky_relu", a=0.2)).startswith(r"\operatorname{LReLU}_{a=")
    assert r"\mapsto" in latex_activation(mf.Activation.from_expr("x**2 + 1"))


def test_network_table():
    net = mf.Network(3, "relu", 2, 0.05, outputs=4, norms=[mf.BatchNorm("last")])
    text = latex_network(net)
    assert text.startswith("$\\begin{array}") and text.endswith("\\end{array}$")
    assert r"\operatorname{ReLU}" in text and r"\text{BN}(u^{(3)})" in text and "4" in text
    assert net._repr_latex_() == text
    assert latex(net) == text[1:-1]  # dispatched through _repr_latex_, dollars stripped


def test_dispatch_to_objects():
    class WithLatex:
        def _latex(self):
            return r"\alpha"

    class WithRepr:
        def _repr_latex_(self):
            return r"$\beta$"

    assert latex(WithLatex()) == r"\alpha"
    assert latex(WithRepr()) == r"\beta"
    assert latex([WithLatex(), sympy.Integer(3)]) == r"\left(\alpha, 3\right)"


def test_derivative_activations_print_as_primes():
    from meanfield.integrals.sphere import SphereExpectation
    from meanfield.printing import catalogue_name

    assert latex_activation(mf.activation("tanh").derivative) == r"\tanh'"
    assert latex_activation(mf.activation("erf").derivative) == r"\operatorname{erf}'"
    assert catalogue_name("tanh'", sympy.tanh(sympy.Symbol("x", real=True))) is None  # the label alone is not enough
    T = sympy.Symbol("T", positive=True, integer=True)
    text = latex(SphereExpectation.of(mf.activation("tanh").derivative, T, "second"))
    assert text == r"\mathbb{E}_{S_{T}}\left[\tanh'(u_a)^{2}\right]"
    assert callable(mf.latex.parse)
