"""The ``meanfield`` command: every subcommand, --help with an example, --json, usage errors.

Usage errors must exit with status 2, name the option, suggest the closest valid option or choice,
and never print a traceback; library errors (InvalidArgument) are usage errors too.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import meanfield
from meanfield.cli import build_parser, main, parse_activation, parse_norm
from cli_runner import run

COMMANDS = ("predict", "sample", "verify", "derive", "reproduce", "sweep")
SMALL = ["--activation", "relu", "--depth", "2", "--sigma-w2", "2", "--sigma-b2", "0.1", "--outputs", "2"]




def assert_usage_error(status: int, err: str, *expected: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err
    assert "error:" in err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help_with_an_example(capsys, command):
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    assert "example:" in out
    assert f"meanfield {command}" in out


def test_top_level_help_lists_every_subcommand(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in COMMANDS:
        assert command in out


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run([sys.executable, "-m", "meanfield", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"meanfield {meanfield.__version__}"


# -- usage errors ----------------------------------------------------------------------------------------


def test_misspelt_option_suggests_the_closest(capsys):
    status, _, err = run(capsys, "predict", "--widht", "64")
    assert_usage_error(status, err, "--widht", "did you mean '--width'")


def test_misspelt_command_suggests_the_closest(capsys):
    status, _, err = run(capsys, "predcit")
    assert_usage_error(status, err, "did you mean 'predict'")


def test_misspelt_norm_kind_suggests_the_closest(capsys):
    status, _, err = run(capsys, "predict", "--norm", "batc:last")
    assert_usage_error(status, err, "argument --norm", "did you mean 'batch:last'")


def test_misspelt_activation_suggests_the_closest(capsys):
    status, _, err = run(capsys, "predict", "--activation", "rleu")
    assert_usage_error(status, err, "argument --activation", "did you mean 'relu'")


@pytest.mark.parametrize("argv, option", [
    (["predict", "--width", "0"], "--width"),
    (["predict", "--depth", "0"], "--depth"),
    (["predict", "--sigma-w2", "-1"], "--sigma-w2"),
    (["predict", "--sigma-w2", "1,2"], "--sigma-w2"),         # depth 3 needs 3 values
    (["predict", "--norm", "layer:last"], "--norm"),           # layer norm only on hidden layers
    (["predict", "--norm", "batch:7"], "--norm"),
    (["predict", "--norm", "batch"], "--norm"),
    (["sample", "--seeds", "0"], "--seeds"),
    (["verify", "--widths", "64,abc"], "--widths"),
])
def test_library_errors_are_usage_errors_naming_the_option(capsys, argv, option):
    status, _, err = run(capsys, *argv)
    assert_usage_error(status, err, f"argument {option}")


def test_argparse_type_errors_are_usage_errors(capsys):
    status, _, err = run(capsys, "predict", "--depth", "three")
    assert_usage_error(status, err, "--depth")


def test_a_library_bug_is_one_line_not_a_traceback(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(meanfield, "predict", broken)
    monkeypatch.delenv("MEANFIELD_TRACEBACK", raising=False)
    status, _, err = run(capsys, "predict")
    assert status == 3
    assert "internal error: RuntimeError: boom" in err
    assert "Traceback" not in err


# -- option parsing ----------------------------------------------------------------------------------------


def test_network_options_build_the_network():
    args = build_parser().parse_args(["predict", "--activation", "leaky_relu(a=0.2),tanh", "--sigma-w2", "1,2,3",
                                      "--alphas", "1,2,1", "--outputs", "3", "--norm", "batch-center:last",
                                      "--norm", "layer:1"])
    from meanfield.cli import network_from_args

    net = network_from_args(args)
    assert [a.name for a in net.activation] == ["leaky_relu(a=0.2)", "tanh"]
    assert net.sigma_w2 == (1.0, 2.0, 3.0)
    assert net.alphas == (1.0, 2.0, 1.0)
    assert net.outputs == 3
    assert [str(n) for n in net.norms] == ["layer:1", "batch-center:3"]


def test_parse_activation_accepts_formulas():
    assert parse_activation("x*tanh(x)").name == "x*tanh(x)"


def test_parse_norm_kinds():
    assert str(parse_norm("batch:2")) == "batch:2"
    assert parse_norm("batch-center:last").center_only


# -- predict ---------------------------------------------------------------------------------------------------


def test_predict_json_has_the_documented_keys_and_matches_the_library(capsys):
    status, out, err = run(capsys, "predict", *SMALL, "--width", "128", "--samples", "8", "--json")
    assert status == 0, err
    data = json.loads(out)
    for key in ("kappa1", "kappa2", "P", "m", "s", "lambda_max", "eta_max"):
        assert isinstance(data[key], (int, float)) and math.isfinite(data[key]), key
    assert set(data["leading"]) >= {"m", "s", "lambda_max"}
    net = meanfield.Network(2, "relu", 2, 0.1, outputs=2)
    stats = meanfield.predict(net, width=128, samples=8)
    assert data["P"] == stats.P == net.parameter_count(128)
    for key in ("kappa1", "kappa2", "m", "s", "lambda_max"):
        assert data[key] == pytest.approx(float(getattr(stats, key)), rel=1e-12)
    assert data["leading"]["lambda_max"] == pytest.approx(float(stats.leading.lambda_max), rel=1e-12)


def test_predict_table(capsys):
    status, out, _ = run(capsys, "predict", *SMALL, "--norm", "batch:last", "--width", "64", "--samples", "8")
    assert status == 0
    assert "lambda_max" in out or "λ" in out


# Tiny network for the random-matrix model: its coefficients are measured once per process on
# sampled networks at widths 64 and 128 (about 2 s for this network on one core), then cached.
RMT_NET = ["--depth", "2", "--activation", "relu", "--sigma-w2", "2", "--sigma-b2", "0",
           "--norm", "batch-center:last"]


def test_predict_finite_width_rmt_gives_the_random_matrix_lambda_max_and_says_what_is_derived(capsys):
    size = ["--width", "64", "--samples", "16"]
    status, out, err = run(capsys, "predict", *RMT_NET, *size, "--json")
    assert status == 0, err
    default = json.loads(out)
    status, out, err = run(capsys, "predict", *RMT_NET, *size, "--finite-width", "rmt", "--json")
    assert status == 0, err
    data = json.loads(out)
    assert set(data) == set(default)  # same keys: only the values change
    net = meanfield.Network(2, "relu", 2, 0, norms=[meanfield.BatchNorm("last", center_only=True)])
    rmt = meanfield.predict(net, 64, 16, finite_width="rmt")  # the model is cached: the same numbers
    assert data["lambda_max"] == pytest.approx(float(rmt.lambda_max), rel=1e-12)
    assert data["s"] == pytest.approx(float(rmt.s), rel=1e-12)
    assert data["eta_max"] == pytest.approx(2 / data["lambda_max"], rel=1e-12)
    # batch norm on the output: the mean field only bounds lambda_max (6.76 here); the model gives ~12.9
    assert default["lambda_max_kind"] == "bound" and data["lambda_max_kind"] == "prediction"
    assert data["lambda_max"] > 1.2 * default["lambda_max"]
    assert any("derived" in note for note in data["notes"])
    status, out, err = run(capsys, "predict", *RMT_NET, *size, "--finite-width", "rmt")
    assert status == 0, err
    assert "derived" in out
    assert re.search(r"lambda_max\s+" + re.escape(f"{rmt.lambda_max:.6g}"), out), out


def test_predict_finite_width_leading_gives_the_leading_order_values(capsys):
    size = ["--width", "128", "--samples", "8"]
    status, out, err = run(capsys, "predict", *SMALL, *size, "--finite-width", "leading", "--json")
    assert status == 0, err
    data = json.loads(out)
    for key in ("m", "s", "lambda_max"):
        assert data[key] == pytest.approx(data["leading"][key], rel=1e-12), key
    assert data["eta_max"] == pytest.approx(2 / data["leading"]["lambda_max"], rel=1e-12)
    lead = meanfield.predict(meanfield.Network(2, "relu", 2, 0.1, outputs=2), 128, 8, finite_width="leading")
    assert data["lambda_max"] == pytest.approx(float(lead.lambda_max), rel=1e-12)
    status, out, err = run(capsys, "predict", *SMALL, *size, "--json")
    default = json.loads(out)
    assert default["m"] != pytest.approx(data["m"], rel=1e-6)  # the finite-width default differs (P, biases)
    status, out, err = run(capsys, "predict", *SMALL, *size, "--finite-width", "mean-field", "--json")
    assert json.loads(out) == default


@pytest.mark.parametrize("argv, expected", [
    (["predict", "--finite-width", "rmtt"], ["argument --finite-width", "did you mean 'rmt'"]),
    (["predict", "--finite-width", "mean_field"], ["argument --finite-width", "did you mean 'mean-field'"]),
    (["predict", "--finite-width", "rmt", "--dps", "30"], ["argument --finite-width", "--dps"]),
    (["verify", "--prediction", "rtm"], ["argument --prediction", "did you mean 'rmt'"]),
    (["verify", "--prediction", "leading"], ["argument --prediction", "invalid choice"]),
])
def test_bad_finite_width_or_prediction_is_a_usage_error(capsys, argv, expected):
    status, _, err = run(capsys, *argv)
    assert_usage_error(status, err, *expected)


# -- sample ----------------------------------------------------------------------------------------------------


def test_sample_json_gives_mean_sem_and_per_seed_values(capsys):
    status, out, err = run(capsys, "sample", *SMALL, "--width", "16", "--samples", "4", "--seeds", "3",
                           "--seed", "5", "--processes", "1", "--json")
    assert status == 0, err
    data = json.loads(out)
    assert data["seeds"] == [5, 6, 7]
    for key in ("m", "s", "lambda_max"):
        values = data["values"][key]
        assert len(values) == 3
        assert data["mean"][key] == pytest.approx(sum(values) / 3, rel=1e-12)
        assert data["sem"][key] > 0
    one = meanfield.sample(meanfield.Network(2, "relu", 2, 0.1, outputs=2), 16, 4, seed=6)
    assert data["values"]["lambda_max"][1] == pytest.approx(float(one.lambda_max), rel=1e-12)


def test_sample_table_with_a_single_seed(capsys):
    status, out, err = run(capsys, "sample", *SMALL, "--width", "16", "--samples", "4", "--seed", "3",
                           "--no-progress")
    assert status == 0, err
    assert "lambda_max" in out


# -- verify ----------------------------------------------------------------------------------------------------


class _Report:
    def __init__(self, passed):
        self.passed = passed

    def __str__(self):
        return f"report passed={self.passed}"

    def to_json(self):
        return json.dumps({"passed": self.passed})


@pytest.mark.parametrize("passed, status", [(True, 0), (False, 1)])
def test_verify_exit_status_follows_the_verdict(capsys, monkeypatch, passed, status):
    seen = {}

    def fake_verify(net, **kwargs):
        seen.update(kwargs)
        return _Report(passed)

    monkeypatch.setattr(meanfield, "verify", fake_verify)
    code, out, _ = run(capsys, "verify", *SMALL, "--widths", "32,64", "--samples", "4", "--seeds", "3")
    assert code == status
    assert out.strip() == f"report passed={passed}"
    assert seen["widths"] == (32, 64) and seen["samples"] == 4 and seen["seeds"] == 3
    assert seen["control_variates"] is True
    run(capsys, "verify", *SMALL, "--widths", "32,64", "--no-control-variates")
    assert seen["control_variates"] is False


def test_verify_prediction_rmt_passes_the_random_matrix_prediction(capsys, monkeypatch):
    seen = {}

    def fake_verify(net, **kwargs):
        seen.clear()
        seen.update(kwargs)
        return _Report(True)

    monkeypatch.setattr(meanfield, "verify", fake_verify)
    code, _, _ = run(capsys, "verify", *SMALL, "--widths", "64", "--samples", "4", "--seeds", "3")
    assert code == 0 and "prediction" not in seen  # the default: verify's own (mean-field) prediction
    code, _, _ = run(capsys, "verify", *SMALL, "--widths", "64", "--samples", "4", "--seeds", "3",
                     "--prediction", "rmt")
    assert code == 0
    assert seen["prediction"] == "rmt"  # verify's own 'rmt' mode: predict(finite_width='rmt'), two-sided lambda_max


def test_verify_prediction_rmt_runs_the_real_test_at_one_width(capsys):
    code, out, err = run(capsys, "verify", *RMT_NET, "--prediction", "rmt", "--widths", "64", "--samples", "16",
                         "--seeds", "4", "--processes", "1")
    assert code in (0, 1), err
    assert "predict(finite_width='rmt')" in out
    assert re.search(r"^lambda_max\s+64\s+4\s", out, re.MULTILINE), out
    assert ("PASSED" in out) == (code == 0)


def test_verify_json_runs_the_real_test(capsys):
    code, out, err = run(capsys, "verify", *SMALL, "--widths", "16,32", "--samples", "4", "--seeds", "4",
                         "--processes", "1", "--json")
    data = json.loads(out)
    assert code == (0 if data["passed"] else 1), err


# -- derive ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [[], ["--latex"], ["--markdown"]])
def test_derive_prints_the_kappas(capsys, fmt):
    status, out, err = run(capsys, "derive", "--activation", "relu", "--depth", "2", *fmt)
    assert status == 0, err
    assert re.search(r"kappa|\\kappa|κ", out)
    if fmt == ["--markdown"]:
        assert "$$" in out


# -- the README ------------------------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_repl_session_runs():
    import doctest

    result = doctest.testfile(str(README), module_relative=False, optionflags=doctest.ELLIPSIS
                              | doctest.NORMALIZE_WHITESPACE, verbose=False, report=True)
    assert result.attempted >= 10
    assert result.failed == 0


def test_readme_first_commands_are_the_main_job_and_the_ci_test_command():
    text = README.read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0].endswith("pip install '.[data]' && meanfield reproduce")  # the digits stage included
    assert lines[1].endswith("pip install -e '.[test]' && pytest")
    ci = (README.parent / ".ci" / "run").read_text()
    assert "pip install -e '.[test]' && pytest" in ci


# -- sweep (wiring only: meanfield.runs.sweeps has its own tests) --------------------------------------------------


def test_sweep_runs_a_tiny_grid_and_reports_a_bad_key_as_a_usage_error(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('depth = 2\nactivation = "relu"\nsigma_w2 = 2.0\nwidth = 8\nsamples = 4\nseeds = 2\n')
    status, out, err = run(capsys, "sweep", str(grid), "--processes", "1", "--quiet")
    assert status == 0, err
    assert (tmp_path / "grid.sqlite").exists()
    status, out, _ = run(capsys, "sweep", str(grid), "--dry-run")
    assert status == 0 and "0 to do" in out
    grid.write_text('depht = 2\nactivation = "relu"\nsigma_w2 = 2.0\nwidth = 8\nsamples = 4\n')
    status, _, err = run(capsys, "sweep", str(grid), "--dry-run")
    assert_usage_error(status, err, "depht", "depth")
