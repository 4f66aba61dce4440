"""The one network grammar: every accepted spelling, errors that name the argument, the network line.

The command line, TOML grids, reproduce configs, documents and ``Network`` itself read activations and
norms through :mod:`meanfield.spec.grammar`; ``str(net)`` is a line that reads back to an equal network.
"""

import textwrap

import pytest
import sympy
from hypothesis import given

import meanfield as mf
from meanfield import strategies as mfst
from meanfield.cli import build_parser, network_from_args
from meanfield.errors import InvalidArgument
from meanfield.runs.grids import Grid, GridFileError
from meanfield.spec.activations import Activation, activation
from meanfield.spec.grammar import parse_activation, parse_network, parse_norm, parse_norms
from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.spec.symbols import layer_symbol

X = sympy.Symbol("x")
XTANH = Activation.from_expr("x*tanh(x)")
LEAKY = activation("leaky_relu", a=0.2)


# -- activations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("relu", activation("relu")),
    ("  ReLU ", activation("relu")),
    ("swish", activation("silu")),
    ("leaky_relu(a=0.2)", LEAKY),
    ("leaky-relu( a = 0.2 )", LEAKY),
    ("leaky_relu", activation("leaky_relu")),
    ("leaky_relu()", activation("leaky_relu")),
    ("x*tanh(x)", XTANH),
    ("x", Activation.from_expr("x")),
    ("x-1", Activation.from_expr("x - 1")),
    ("Leaky-ReLU", activation("leaky_relu")),
    ("tanh(x)", Activation.from_expr("tanh(x)")),
    ("Piecewise((x, x >= 0), (0, True))", Activation.from_expr("Piecewise((x, x >= 0), (0, True))")),
    ("leaky_relu(a=0.2),tanh", (LEAKY, activation("tanh"))),
    ("x*tanh(x), Max(0, x)", (XTANH, Activation.from_expr("Max(0, x)"))),
    (LEAKY, LEAKY),
    (X * sympy.tanh(X), XTANH),
    (sympy.Lambda(X, X * sympy.tanh(X)), XTANH),
    (sympy.Lambda(sympy.Symbol("u"), sympy.Symbol("u") * sympy.tanh(sympy.Symbol("u"))), XTANH),
    ({"name": "leaky_relu", "a": 0.2}, LEAKY),
    ({"name": "leaky_relu(a=0.2)"}, LEAKY),
    ({"expr": "x*tanh(x)"}, XTANH),
    ({"expr": "x*tanh(x)", "name": "xtanh"}, Activation.from_expr("x*tanh(x)", name="xtanh")),
    ({"expr": "a*x", "a": 0.5}, Activation.from_expr("a*x", a=0.5)),
    (["relu", "x*tanh(x)"], (activation("relu"), XTANH)),
    (("leaky_relu(a=0.2)", {"name": "tanh"}, LEAKY), (LEAKY, activation("tanh"), LEAKY)),
])
def test_every_activation_spelling(value, expected):
    assert parse_activation(value) == expected


@pytest.mark.parametrize("value, words", [
    ("rleu", ["did you mean 'relu'"]),
    ("leaky_relu(b=1)", ["parameter"]),
    ("leaky_relu(a=abc)", ["numeric parameters"]),
    ("leaky_relu(a=nan)", []),
    ("x*y", ["one real variable"]),
    ("x*(", []),
    ("relu,,tanh", ["comma list"]),
    ("", []),
    ("log(x)", ["real"]),
    (3, []),
    ({"a": 1}, ["'name'"]),
    ([], []),
    ([["relu", "tanh"]], ["per-layer"]),
    (["relu,tanh"], ["per-layer"]),
    (sympy.Lambda((X, sympy.Symbol("y")), X), ["one variable"]),
])
def test_activation_errors_name_the_argument(value, words):
    with pytest.raises(InvalidArgument) as info:
        parse_activation(value, "phi")
    assert info.value.argument == "phi", str(info.value)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        parse_activation(value)
    assert info.value.argument == "activation"


# -- norms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("batch:last", BatchNorm("last")),
    ("bn:2", BatchNorm(2)),
    ("batchnorm:last", BatchNorm("last")),
    ("BatchNorm : 3", BatchNorm(3)),
    ("batch_norm:last", BatchNorm("last")),
    ("batch-center:last", BatchNorm("last", center_only=True)),
    ("batch_center:1", BatchNorm(1, center_only=True)),
    ("layer:1", LayerNorm(1)),
    ("ln:2", LayerNorm(2)),
    ("layernorm:1", LayerNorm(1)),
    ("layer-norm:1", LayerNorm(1)),
    (" layer : 1 ", LayerNorm(1)),
    (BatchNorm("last"), BatchNorm("last")),
])
def test_every_norm_spelling(text, expected):
    assert parse_norm(text) == expected


def test_norm_lists():
    assert parse_norms("none") == parse_norms("") == parse_norms(None) == parse_norms([]) == ()
    assert parse_norms("ln:1, bn:last") == (LayerNorm(1), BatchNorm("last"))
    assert parse_norms(["layer:1", BatchNorm("last")]) == (LayerNorm(1), BatchNorm("last"))
    assert parse_norms(["layer:1,batch:last"]) == (LayerNorm(1), BatchNorm("last"))
    assert parse_norms(LayerNorm(1)) == (LayerNorm(1),)


@pytest.mark.parametrize("value, words", [
    ("btach:last", ["did you mean 'batch:last'"]),
    ("lyer:1", ["did you mean 'layer:1'"]),
    ("batch", ["e.g. 'batch:last'"]),
    ("layer:", ["e.g. 'layer:1'"]),
    ("batch:0", [">= 1"]),
    ("layer:first", ["'last'"]),
    ("group:1", ["batch"]),
    (3, ["batch:last"]),
])
def test_norm_errors_name_the_argument(value, words):
    for parse in (parse_norm, parse_norms):
        with pytest.raises(InvalidArgument) as info:
            parse(value, "--norm")
        assert info.value.argument == "--norm", str(info.value)
        for word in words:
            assert word in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        parse_norm(value)
    assert info.value.argument == "norms"


# -- Network reads the grammar ---------------------------------------------------------------------------


def test_network_accepts_formulas_lambdas_and_norm_strings():
    by_name = Network(3, "x*tanh(x)", 2, 0, norms=[BatchNorm("last")])
    assert by_name.activation == (XTANH, XTANH)
    assert Network(3, sympy.Lambda(X, X * sympy.tanh(X)), 2, 0, norms=["batch:last"]) == by_name
    assert Network(3, "x*tanh(x)", 2, 0, norms="bn:last") == by_name
    assert Network(3, "relu,x*tanh(x)", 2, 0).activation == (activation("relu"), XTANH)
    assert Network(3, "tanh", 2, 0, norms=["ln:1", "batch-center:last"]).norms == (
        LayerNorm(1), BatchNorm(3, center_only=True))
    with pytest.raises(InvalidArgument, match="activation") as info:
        Network(3, "relu,tanh,erf", 2, 0)
    assert info.value.argument == "activation"
    with pytest.raises(InvalidArgument) as info:
        Network(2, "relu", 2, 0, norms=["batch:lst"])
    assert info.value.argument == "norms"
    with pytest.raises(InvalidArgument) as info:
        Network(2, "x*y", 2, 0)
    assert info.value.argument == "activation"


# -- the network line ------------------------------------------------------------------------------------

ROUND_TRIP = mfst.networks(activations=mfst.activations(formulas=["x*tanh(x)", "x**2/(1 + x**2)", "sin(x) + x/2"]),
                           mixed_activations=True, per_layer_variances=True, min_alpha=0.25, max_alpha=4,
                           inputs=mfst.order_parameters())


@given(mfst.networks())
def test_str_parses_back_to_an_equal_network(net):
    assert parse_network(str(net)) == net
    assert Network.parse(str(net)) == net
    assert "\n" not in str(net)


@given(ROUND_TRIP)
def test_str_round_trips_per_layer_values_formulas_norms_and_inputs(net):
    assert parse_network(str(net)) == net
    assert eval(repr(net), {"Network": Network}) == net  # the repr is the constructor call


def test_the_line_is_describe_made_exact():
    net = Network(3, "relu", 2, 0, outputs=10, norms=[BatchNorm("last")])
    assert str(net) == net.describe() == "L=3 relu sigma_w2=2 sigma_b2=0 C=10 alphas=1 norms=batch:3"
    exact = Network(3, "leaky_relu(a=0.2),tanh", (1, 1 / 3, 2), 0.1, alphas=(1, 0.5, 2), norms=["ln:1"],
                    input_q1=2, input_q2=-0.5)
    assert str(exact) == ("L=3 leaky_relu(a=0.2),tanh sigma_w2=(1, 0.3333333333333333, 2) sigma_b2=0.1 C=1 "
                          "alphas=(1, 0.5, 2) norms=layer:1 input_q1=2 input_q2=-0.5")
    assert parse_network(str(exact)) == exact
    assert repr(Network(2, "relu", 2, 0)) == "Network(depth=2, activation='relu', sigma_w2=2, sigma_b2=0)"


def test_symbolic_networks_round_trip():
    sw, sb = layer_symbol("sigma_w2"), layer_symbol("sigma_b2")
    net = Network(3, "erf", sw, sb)
    assert str(net) == "L=3 erf sigma_w2=sigma_w2 sigma_b2=sigma_b2 C=1 alphas=1 norms=none"
    assert parse_network(str(net)) == net
    per_layer = Network(2, "relu", (layer_symbol("sigma_w2", 1), 2), sympy.Rational(1, 2))
    assert parse_network(str(per_layer)) == per_layer


def test_the_line_accepts_keys_in_any_order_and_defaults():
    net = parse_network("L=2 activation=tanh norms=bn:last sigma_w2=1.5")
    assert net == Network(2, "tanh", 1.5, 0, norms=[BatchNorm("last")])
    assert parse_network("L=2 tanh sigma_w2=1,2 outputs=3") == Network(2, "tanh", (1, 2), 0, outputs=3)


@pytest.mark.parametrize("text, argument", [
    ("relu sigma_w2=2", "network"),
    ("L=2 sigma_w2=2", "network"),
    ("L=2 relu", "network"),
    ("L=2 relu sigma_w2=2 sigma_w2=3", "network"),
    ("L=two relu sigma_w2=2", "depth"),
    ("L=2 relu sigma_w2=2 C=x", "outputs"),
    ("L=2 rleu sigma_w2=2", "activation"),
    ("L=2 relu sigma_w2=-1", "sigma_w2"),
    ("L=2 relu sigma_w2=2 norms=batch:9", "norms"),
    ("L=2 relu sigma_w2=2 alphas=(1, 2, 3)", "alphas"),
    (3, "network"),
])
def test_line_errors_name_the_argument(text, argument):
    with pytest.raises(InvalidArgument) as info:
        parse_network(text)
    assert info.value.argument == argument, str(info.value)


# -- the command line, grids and the grammar agree --------------------------------------------------------

AGREE = [("relu", "none"), ("leaky_relu(a=0.2)", "bn:last"), ("x*tanh(x)", "ln:1, batch-center:last"),
         ("leaky_relu(a=0.2),tanh", "layernorm:2"), ("swish,x*tanh(x)", "batchnorm:1")]


@pytest.mark.parametrize("act, norms", AGREE)
def test_cli_grid_and_grammar_read_the_same_network(act, norms):
    grammar = Network(3, parse_activation(act), 2.0, 0.0, norms=parse_norms(norms))
    argv = ["predict", "--depth", "3", "--activation", act, "--sigma-w2", "2", "--sigma-b2", "0"]
    argv += [arg for part in parse_norms(norms) for arg in ("--norm", str(part))]
    cli = network_from_args(build_parser().parse_args(argv))
    grid = Grid.from_toml_text(textwrap.dedent(f"""\
        depth = 3
        activation = {act!r}
        sigma_w2 = 2.0
        norms = {norms!r}
        width = 8
        samples = 6
        """)).networks
    assert cli == grammar and grid == (grammar,)
    assert parse_network(str(grammar)) == grammar


def test_grid_tables_and_per_layer_lists_are_the_grammar_forms():
    grid = Grid.from_toml_text(textwrap.dedent("""\
        depth = 3
        activation = [{ expr = "x*tanh(x)", name = "xtanh" }, { name = "leaky_relu", a = 0.2 }, ["relu", "x*tanh(x)"]]
        sigma_w2 = 2.0
        norms = ["none", ["ln:1", "bn:last"]]
        width = 8
        samples = 6
        """))
    acts = [net.activation for net in grid.networks[::2]]
    assert acts == [parse_activation(v) if isinstance(parse_activation(v), tuple) else (parse_activation(v),) * 2
                    for v in ({"expr": "x*tanh(x)", "name": "xtanh"}, "leaky_relu(a=0.2)", "relu,x*tanh(x)")]
    assert parse_norms("layer:1, batch:last") == (LayerNorm(1), BatchNorm("last"))
    assert grid.networks[1].norms == Network(3, "relu", 1, 0, norms=parse_norms("ln:1, bn:last")).norms


@pytest.mark.parametrize("line, key, words", [
    ('activation = "rleu"', "activation", ["did you mean 'relu'"]),
    ('activation = "x*y"', "activation", ["one real variable"]),
    ('norms = "btach:last"', "norms", ["did you mean 'batch:last'"]),
    ('norms = ["bn:last", "lyer:1"]', "norms", ["did you mean 'layer:1'"]),
])
def test_grid_errors_name_the_key_and_line(line, key, words):
    other = "" if line.startswith("activation") else "activation = 'relu'"
    text = f"depth = 2\nsigma_w2 = 2.0\nwidth = 8\nsamples = 6\n{other}\n{line}\n"  # the line is line 6
    with pytest.raises(GridFileError) as info:
        Grid.from_toml_text(text, path="g.toml")
    assert (info.value.key, info.value.line) == (key, 6), str(info.value)
    for word in words:
        assert word in str(info.value)


def test_cli_reports_grammar_errors_on_the_option(capsys):
    for argv, words in [(["--activation", "x*y"], ["--activation", "one real variable"]),
                        (["--norm", "btach:last"], ["--norm", "did you mean 'batch:last'"])]:
        with pytest.raises(SystemExit) as info:
            mf.cli.main(["predict", *argv, "--width", "8", "--samples", "6"])
        err = capsys.readouterr().err
        assert info.value.code == 2 and all(word in err for word in words), err
