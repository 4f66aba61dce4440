"""A catalogue of bad inputs: every one gets a clear answer naming what to change, never nonsense.

In the Python API each raises :class:`meanfield.InvalidArgument` naming the argument; on the command line
each exits with status 2 and names the option on stderr. None may exit 0 with null/NaN/inf in the output,
and none may be an internal error (exit status 3). The cases are the inputs that once got a wrong answer or
a traceback (impossible input statistics, reserved symbols, overflowing or divergent activations, deep
networks beyond float64, duplicate seeds, a memory guard that blamed the wrong option), with their neighbours.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings

import numpy as np
import pytest
import sympy

import meanfield as mf
from meanfield import InvalidArgument, Network
from meanfield.integrals.gaussian import cross_moment, second_moment
from meanfield.sampled.sampling import sample, sample_many
from meanfield.spec.activations import Activation
from meanfield.theory.recursions import order_parameters
from cli_runner import run

SMALL = ("--width", "16", "--samples", "4")
s = sympy.Symbol("s", positive=True)


def net(**changes):
    args = dict(depth=3, activation="relu", sigma_w2=2, sigma_b2=0)
    args.update(changes)
    return Network(**args)


# -- the command line -----------------------------------------------------------------------------------------

CLI_CASES = [
    # inputs that no batch of T exchangeable inputs has
    ("predict", ["--input-q2", "-1"], "--input-q2"),
    ("predict", ["--input-q2", "-0.1", "--samples", "16"], "--input-q2"),  # below -1/(T-1) = -0.0667
    ("predict", ["--input-q2", "2"], "--input-q2"),
    ("predict", ["--input-q1", "0"], "--input-q1"),
    ("predict", ["--input-q1", "inf"], "--input-q1"),
    ("sample", ["--input-q2", "-1", *SMALL], "--input-q2"),
    ("verify", ["--input-q2", "-1", "--widths", "16", "--samples", "4", "--seeds", "2"], "--input-q2"),
    # variances and sizes
    ("predict", ["--sigma-w2", "0"], "--sigma-w2"),
    ("predict", ["--sigma-w2", "nan"], "--sigma-w2"),
    ("predict", ["--sigma-w2", "inf"], "--sigma-w2"),
    ("predict", ["--sigma-w2", "1,2"], "--sigma-w2"),
    ("predict", ["--sigma-b2", "-0.1"], "--sigma-b2"),
    ("predict", ["--alphas", "1,0,1"], "--alphas"),
    ("predict", ["--depth", "0"], "--depth"),
    ("predict", ["--width", "0"], "--width"),
    ("predict", ["--outputs", "0"], "--outputs"),
    ("predict", ["--norm", "batch:last", "--samples", "2"], "--samples"),
    ("predict", ["--norm", "layer:last"], "--norm"),
    ("predict", ["--dps", "2"], "--dps"),
    # formula activations that overflow, diverge, have no derivative, or would hang sympy
    ("predict", ["--activation", "exp(x**2)"], "--activation"),
    ("predict", ["--activation", "Abs(x)**0.5"], "--activation"),
    ("predict", ["--activation", "Abs(x)**0.75"], "--activation"),  # E[phi'^2] exists; phi' unbounded
    ("predict", ["--activation", "floor(x)"], "--activation"),
    ("predict", ["--activation", "x**100"], "--activation"),
    ("predict", ["--activation", "1e300*x"], "--activation"),
    ("predict", ["--activation", "leaky_relu(a=1e308)"], "--activation"),
    ("predict", ["--activation", "factorial(10**9)*x"], "--activation"),
    ("predict", ["--activation", "factorial(factorial(100))*x"], "--activation"),
    ("predict", ["--activation", "10**10**10*x"], "--activation"),
    ("predict", ["--activation", "10^10^10*x"], "--activation"),  # ^ is read as a power
    ("predict", ["--activation", "sqrt(x)"], "--activation"),
    ("predict", ["--activation", "x*y"], "--activation"),
    # deep networks beyond float64
    ("predict", ["--activation", "relu", "--sigma-w2", "5", "--depth", "1000"], "--depth"),
    ("predict", ["--activation", "tanh", "--sigma-w2", "10000", "--depth", "1000", "--json"], "--depth"),
    ("sample", ["--activation", "exp(x**2)", *SMALL, "--seeds", "2"], "--activation"),
    ("sample", ["--activation", "relu", "--sigma-w2", "5", "--depth", "1000", *SMALL, "--seeds", "1"],
     "--depth"),
    # the sampler's sizes and seeds
    ("sample", ["--width", "16", "--samples", "10000000"], "--samples"),
    ("sample", ["--width", "100000000", "--samples", "2"], "--width"),
    ("sample", ["--seeds", "0", *SMALL], "--seeds"),
    ("sample", ["--seed", "-1", *SMALL], "--seed"),
    ("sample", ["--processes", "0", *SMALL], "--processes"),
    ("verify", ["--widths", "0,64"], "--widths"),
    ("verify", ["--widths", "a"], "--widths"),
    ("verify", ["--seeds", "1", "--widths", "16"], "--seeds"),
    ("verify", ["--samples", "1", "--widths", "16"], "--samples"),
    ("verify", ["--alpha", "2", "--widths", "16", "--seeds", "2"], "--alpha"),
    # derive: reserved symbols, non-real and infinite values
    ("derive", ["--sigma-w2", "M"], "--sigma-w2"),
    ("derive", ["--sigma-w2", "I"], "--sigma-w2"),
    ("derive", ["--sigma-w2", "oo"], "--sigma-w2"),
    ("derive", ["--sigma-w2", "zoo"], "--sigma-w2"),
    ("derive", ["--sigma-w2", "nan"], "--sigma-w2"),
    ("derive", ["--sigma-b2", "T", "--depth", "2"], "--sigma-b2"),
    ("derive", ["--alphas", "C,1,1"], "--alphas"),
    ("derive", ["--input-q1", "x"], "--input-q1"),
    ("derive", ["--input-q2", "q1_2"], "--input-q2"),
    ("derive", ["--input-q2", "qhat2_1"], "--input-q2"),
    ("derive", ["--depth", "0"], "--depth"),
    ("derive", ["--activation", "floor(x)"], "--activation"),
]


def _ids(cases):
    return [f"{c[0]} {' '.join(c[1])}"[:60] for c in cases]


@pytest.mark.parametrize("command, argv, option", CLI_CASES, ids=_ids(CLI_CASES))
def test_command_line_names_the_option(capsys, command, argv, option):
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a leaked warning is not an answer
        status, out, err = run(capsys, command, *argv)
    assert status != 3, err  # never an internal error
    assert status == 2, f"exit {status}\nstdout: {out[:500]}\nstderr: {err}"
    assert "Traceback" not in err
    assert f"argument {option}:" in err, err
    assert time.monotonic() - start < 30, "a refusal must be quick"


def _numbers(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _numbers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _numbers(value)
    else:
        yield obj


GOOD_EDGES = [  # legal edge cases: an answer with finite numbers (the neighbours of the refusals above)
    ("predict", ["--input-q2", "1", "--json"]),                      # T copies of one input: rank-one Gram
    ("predict", ["--input-q2", "-0.06", "--samples", "16", "--json"]),  # just above -1/(T-1)
    ("predict", ["--activation", "exp(x**2/20)", "--sigma-w2", "0.5", "--depth", "2", "--json"]),
    ("predict", ["--activation", "relu", "--sigma-w2", "5", "--depth", "1000", "--dps", "30", "--json"]),
    ("sample", ["--seed", "7", *SMALL, "--json"]),
]


@pytest.mark.parametrize("command, argv", GOOD_EDGES, ids=_ids(GOOD_EDGES))
def test_legal_edges_get_finite_answers(capsys, command, argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # statistics' separation at q2 = q1: reported apart
        status, out, err = run(capsys, command, *argv)
    assert status == 0, err
    data = json.loads(out)
    for key in ("m", "s", "lambda_max", "eta_max", "kappa1", "kappa2"):
        if key in data:
            value = data[key]
            assert value is not None, key
            number = float(value)  # the --dps values beyond float64 are strings with their digits
            assert math.isfinite(number) or isinstance(value, str), (key, value)
    if command == "sample":
        assert all(v is not None for v in _numbers(data)), data


def test_dps_prints_the_digits_of_values_beyond_float64(capsys):
    status, out, err = run(capsys, "predict", "--activation", "relu", "--sigma-w2", "5", "--depth", "1000",
                           "--dps", "30", "--json")
    assert status == 0, err
    data = json.loads(out)
    assert re.fullmatch(r"[0-9.]+e\+39[0-9]", data["m"]), data["m"]   # (5/2)^1000 ~ 1e398 is not inf
    assert float(data["eta_max"].split("e")[0]) > 0                     # nor does 1e-403 become 0.0


# -- the Python API --------------------------------------------------------------------------------------------

def _exp_x2():
    return net(activation="exp(x**2)")


API_CASES = [
    ("input_q2", lambda: net(input_q2=1.5)),
    ("input_q2", lambda: net(input_q2=-1.5)),
    ("input_q2", lambda: order_parameters(net(input_q2=-0.5), samples=8)),
    ("input_q2", lambda: mf.predict(net(input_q2=-0.5), width=64, samples=8)),
    ("input_q2", lambda: sample(net(input_q2=-0.5), 16, 8)),
    ("input_q2", lambda: net(input_q2=-s - 2, input_q1=1)),  # provably below -input_q1
    ("sigma_w2", lambda: net(sigma_w2=sympy.Symbol("M", positive=True))),
    ("sigma_w2", lambda: net(sigma_w2=sympy.Symbol("T") * s)),
    ("sigma_w2", lambda: net(sigma_w2=sympy.I)),
    ("sigma_w2", lambda: net(sigma_w2=sympy.oo)),
    ("sigma_w2", lambda: net(sigma_w2=s + sympy.oo)),
    ("sigma_w2", lambda: net(sigma_w2=sympy.I * s)),
    ("sigma_b2", lambda: net(sigma_b2=sympy.zoo)),
    ("sigma_b2", lambda: net(sigma_b2=sympy.nan)),
    ("sigma_b2", lambda: net(sigma_b2=sympy.Symbol("kappa1"))),
    ("alphas[1]", lambda: net(alphas=(1, sympy.Symbol("C"), 1))),
    ("input_q1", lambda: net(input_q1=sympy.Symbol("q1_2", positive=True))),
    ("input_q2", lambda: net(input_q2=sympy.Symbol("qtilde2_3"))),
    ("activation", lambda: net(activation=mf.activation("leaky_relu", a=sympy.Symbol("M", positive=True)))),
    ("activation", lambda: mf.predict(_exp_x2(), width=64, samples=4)),
    ("activation", lambda: mf.predict(net(activation="Abs(x)**0.5"), width=64, samples=4)),
    ("activation", lambda: mf.predict(net(activation="floor(x)"), width=64, samples=4)),
    ("activation", lambda: mf.predict(net(activation="x**100"), width=64, samples=4)),
    ("activation", lambda: second_moment(Activation.from_expr("exp(x**2)"), 0.3)),
    ("activation", lambda: cross_moment(Activation.from_expr("exp(x**2)"), 0.3, 0.1, dps=15)),
    ("activation", lambda: second_moment(Activation.from_expr("exp(x**3)"), 0.01)),
    ("expr", lambda: Activation.from_expr("factorial(10**9)*x")),
    ("expr", lambda: Activation.from_expr("x*2**100000")),
    ("depth", lambda: mf.predict(Network(1000, "relu", 5, 0), width=64, samples=4)),
    ("depth", lambda: order_parameters(Network(1000, "tanh", 10000, 0))),
    ("depth", lambda: order_parameters(Network(1000, "relu", 1, 0), sigma_w2=np.array([1.0, 5.0]))),  # a grid
    ("seeds", lambda: sample_many(net(), 8, 4, seeds=[1, 1], processes=1)),
    ("seeds", lambda: sample_many(net(), 8, 4, seeds=[0, 2, 0], processes=1)),
]


@pytest.mark.parametrize("argument, call", API_CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(API_CASES)])
def test_api_names_the_argument(argument, call):
    start = time.monotonic()
    with pytest.raises(InvalidArgument) as info:
        call()
    assert info.value.argument == argument, str(info.value)
    assert time.monotonic() - start < 30


def test_memory_guard_names_samples_not_width(monkeypatch):
    from meanfield.sampled import gram

    monkeypatch.setattr(gram, "_available_bytes", lambda: 100 * 2**20)
    with pytest.raises(InvalidArgument, match=r"needs about") as info:
        sample(net(), 16, 20000)
    assert info.value.argument == "samples"
    with pytest.raises(InvalidArgument, match=r"needs about") as info:
        sample_many(net(), 4096, 4, seeds=4, processes=1)
    assert info.value.argument == "width"


def test_legal_api_edges():
    # the string form of norms is read by the grammar, not iterated character by character
    assert Network(3, "relu", 2, 0, norms="batch:last").norms == (mf.BatchNorm(3),)
    # input_q2 = input_q1 (one input repeated) and the -q1/(T-1) boundary itself are legal
    op = order_parameters(net(input_q2=1.0), samples=8)
    assert float(op[1].q1) == float(op[1].q2)
    order_parameters(net(input_q2=-1 / 7), samples=8)
    sample(net(input_q2=-1 / 7), 8, 8)
    # a symbol of one's own passes; a moment that exists below the divergence is computed
    assert net(sigma_w2=sympy.Symbol("g", positive=True)).is_symbolic
    assert abs(float(second_moment(Activation.from_expr("exp(x**2)"), 0.05)) - 1 / math.sqrt(0.8)) < 1e-12
    # huge mpmath values are values, not errors
    deep = order_parameters(Network(1000, "relu", 5, 0), dps=30)
    assert deep[1000].q1 > 10 ** 390


def test_depth_is_linear():
    """The fold and the statistics are O(L): 4x the depth takes well under 8x the time."""
    def seconds(depth):
        start = time.perf_counter()
        mf.predict(Network(depth, "relu", 2, 0), width=64, samples=4)
        return time.perf_counter() - start

    seconds(50)  # warm the caches
    small, large = min(seconds(300) for _ in range(2)), min(seconds(1200) for _ in range(2))
    assert large < 8 * small + 0.05, (small, large)
