"""The ``meanfield`` command: a thin shell over the library.

Subcommands (each has ``--help`` with an example):

    meanfield predict    theory: kappa's, m, s, lambda_max (finite width, leading order, or random-matrix)
    meanfield sample     exact FIM statistics of sampled finite networks (many seeds)
    meanfield verify     prediction vs samples, a statistical test; exit 0 when every statistic passes
    meanfield derive     symbolic recursions, closed forms, kappa's and statistics (text, LaTeX, Markdown)
    meanfield reproduce  the paper's comparison: figures, CSV and a Markdown report (resumable)
    meanfield sweep      a grid of networks x widths x seeds from a TOML file (local or Dask)

Every network option is shared: ``--activation``, ``--depth``, ``--sigma-w2``, ``--sigma-b2``,
``--alphas``, ``--outputs``, repeated ``--norm``. Bad input never shows a traceback: argparse errors
and the library's :class:`~meanfield.InvalidArgument` both become usage errors (exit status 2) that
name the option and, for a misspelt option or choice, the closest valid one.

Example:
    >>> main(["predict", "--activation", "relu", "--depth", "3", "--sigma-w2", "2",
    ...       "--width", "256", "--samples", "16", "--json"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .spec.grammar import parse_activation, parse_norm, parse_norms

__all__ = ["main", "build_parser", "network_from_args", "parse_norm", "parse_activation", "to_jsonable"]

# Library argument names -> the option that sets them, so a library error points at the option.
_OPTION_OF = {
    "width": "--width", "widths": "--widths", "samples": "--samples", "depth": "--depth",
    "sigma_w2": "--sigma-w2", "sigma_b2": "--sigma-b2", "alphas": "--alphas", "outputs": "--outputs",
    "norms": "--norm", "layer": "--norm", "activation": "--activation", "expr": "--activation",
    "seeds": "--seeds", "seed": "--seed", "input_q1": "--input-q1", "input_q2": "--input-q2",
    "processes": "--processes", "dps": "--dps", "finite_width": "--finite-width", "prediction": "--prediction",
    "alpha": "--alpha", "inputs": "--inputs", "claims": "--claims",
}


# --finite-width choice -> predict(finite_width=...); --prediction choice -> the same, for verify.
_FINITE_WIDTH = {"mean-field": "mean-field", "leading": "leading", "rmt": "rmt"}
_PREDICTIONS = ("mean-field", "rmt", "1/M")


# -- the parser with 'did you mean' ------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors name the closest valid option or choice (difflib).

    Python 3.11's argparse has no ``suggest_on_error``; this adds it for unknown options
    (``--widht`` -> ``--width``) and invalid choices (``predcit`` -> ``predict``).
    """

    def option_strings(self) -> list[str]:
        return [s for action in self._actions for s in action.option_strings if s.startswith("--")]

    def error(self, message: str) -> NoReturn:
        hint = self._suggestion(message)
        if hint:
            message = f"{message}\n  did you mean {hint}?"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _suggestion(self, message: str) -> str | None:
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            hints = []
            for word in unknown.group(1).split():
                if word.startswith("-"):
                    name = word.split("=", 1)[0]
                    near = difflib.get_close_matches(name, self.option_strings(), n=1, cutoff=0.5)
                    if near:
                        hints.append(f"{near[0]!r} (for {name!r})")
            return ", ".join(hints) or None
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2)) or [
                s.strip() for s in choice.group(2).split(",")]
            near = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.5)
            return repr(near[0]) if near else None
        return None


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the example epilogs as written; show meaningful defaults (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" not in text.lower() and action.option_strings and default not in (None, False, [])
                and default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


# -- option parsers (argparse types) -----------------------------------------------------------------


def _parse_values(option: str, text: str, *, symbolic: bool, kind: str | None = None) -> Any:
    """A scalar or a comma list of numbers (or, when ``symbolic``, names that become sympy symbols)."""
    from .errors import InvalidArgument

    items = [item.strip() for item in str(text).split(",")]
    values = []
    for index, item in enumerate(items):
        try:
            number = float(item)
        except ValueError:
            number = None
        if number is not None:
            if symbolic:
                import sympy

                values.append(sympy.nsimplify(item, rational=True))
            else:
                values.append(number)
        elif symbolic and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item):
            values.append(_symbol(item, kind, index + 1 if len(items) > 1 else None))
        else:
            raise InvalidArgument(option, text, "a number or a comma list of numbers (one per layer)"
                                  + (", or symbol names" if symbolic else ""))
    return values[0] if len(values) == 1 else values


def _symbol(name: str, kind: str | None, layer: int | None):
    import sympy

    from .spec.symbols import layer_symbol

    if kind is not None and name in (kind, kind.replace("_", "")):
        return layer_symbol(kind, layer)
    return sympy.Symbol(name, positive=True)


# -- the parser --------------------------------------------------------------------------------------

_EXAMPLES = {
    "predict": """\
example:
  meanfield predict --activation relu --depth 3 --sigma-w2 2 --outputs 10 --width 512 --samples 32
  meanfield predict --activation tanh --sigma-b2 0.1 --norm batch:last --json
  meanfield predict --depth 2 --norm batch-center:last --width 128 --samples 128 --finite-width rmt
                                  (random-matrix lambda_max, s: derived, about a second)
  meanfield predict --outputs 10 --finite-width leading      (m, s, lambda_max to leading order)
  meanfield predict --outputs 4 --width 256 --inputs digits:32   (theory on 32 handwritten digits)""",
    "sample": """\
example:
  meanfield sample --activation relu --depth 3 --sigma-w2 2 --outputs 4 --width 256 --samples 16 --seeds 8
  meanfield sample --norm batch:2 --seed 7 --json
  meanfield sample --width 128 --inputs batch.npy --seeds 8   (every network on the T x d batch in batch.npy)""",
    "verify": """\
example:
  meanfield verify --activation relu --sigma-w2 2 --outputs 2 --widths 64,128,256 --samples 8 --seeds 16
  meanfield verify --norm layer:1 --json; echo "exit status $?"   (0: every statistic passes, 1: not)
  meanfield verify --outputs 2 --norm batch:last --inputs digits:16   (theory and samples on 16 digits)
  meanfield verify --depth 2 --norm batch-center:last --prediction rmt --widths 256 --samples 64
                                  (the random-matrix prediction is for finite width: test one width)""",
    "derive": """\
example:
  meanfield derive --activation relu --depth 3                  (sigma_w2, sigma_b2 stay symbols)
  meanfield derive --activation erf --sigma-w2 1 --sigma-b2 sigma_b2 --latex
  meanfield derive --norm batch:last --markdown > relu-bn.md
  meanfield derive --write-derivations derivations/             (regenerate derivations/*.md)""",
    "reproduce": """\
example:
  meanfield reproduce                       (full run, about 1.5 minutes on 2 cores; ./meanfield-results)
  meanfield reproduce --quick --out /tmp/mf (about half a minute)
  meanfield reproduce --config my.toml      (keys as in README; unknown keys are an error)
  meanfield reproduce --scheduler tcp://10.0.0.5:8786   (the points on a Dask cluster, as meanfield sweep)
Interrupted runs resume: every computed point is stored in results.sqlite (and cache.jsonl) in the output folder.""",
    "sweep": """\
example:
  meanfield sweep grid.toml                         (results in grid.sqlite; a rerun resumes)
  meanfield sweep grid.toml --store results.sqlite --scheduler tcp://10.0.0.5:8786
  meanfield sweep grid.toml --dry-run               (show the grid and what is left to do)""",
}


_SYMBOL_NAMES = ("; names stay sympy symbols (not the theory's own: M, T, C, P, x, q1, q2, qhat1_2, ..., "
                 "nor I, E, pi, oo)")


def _add_network_options(parser: argparse.ArgumentParser, *, symbolic: bool = False) -> None:
    group = parser.add_argument_group("network")
    group.add_argument("--activation", default="relu", metavar="PHI",
                       help="catalogue name (relu, tanh, erf, gelu, ...), name(key=value), a formula in x, "
                            "or a comma list with one per hidden layer")
    group.add_argument("--depth", type=int, default=3, metavar="L", help="number of weight layers L")
    group.add_argument("--sigma-w2", default="sigma_w2" if symbolic else "2", metavar="S",
                       help="weight variance: a number or a comma list (one per layer)"
                            + (_SYMBOL_NAMES if symbolic else ""))
    group.add_argument("--sigma-b2", default="sigma_b2" if symbolic else "0", metavar="S",
                       help="bias variance: a number or a comma list (one per layer)"
                            + (_SYMBOL_NAMES if symbolic else ""))
    group.add_argument("--alphas", default=None, metavar="A0,A1,..",
                       help="width ratios alpha_0..alpha_{L-1} (M_l = alpha_l M); default all 1")
    group.add_argument("--outputs", type=int, default=1, metavar="C", help="number of linear outputs C")
    group.add_argument("--norm", action="append", default=[], metavar="KIND:L",
                       help="normalization layer, repeatable or a comma list: batch:L (bn, batchnorm), "
                            "batch-center:L, layer:l (ln, layernorm); L a layer number or 'last'")
    group.add_argument("--input-q1", default="1", metavar="Q", help="mean square of an input entry")
    group.add_argument("--input-q2", default="0", metavar="Q",
                       help="mean product of entries of two different inputs: -q1/(T-1) <= Q <= q1 "
                            "(q1 = --input-q1, T = --samples), so that T such inputs exist")


_INPUTS_HELP = ("a real batch instead of isotropic inputs: FILE.npy (one T x d array; T samples, d input "
                "dimensions, the first layer's fan-in) or digits:T[:SEED] (T handwritten digits, standardised "
                "pixels, d = 64; needs the 'data' extra: pip install 'meanfield-fisher[data]'); --samples is then "
                "the batch's T and --input-q1/--input-q2 are not used")


def _add_inputs_option(group: Any) -> None:
    group.add_argument("--inputs", default=None, metavar="FILE.npy|digits:T", help=_INPUTS_HELP)


def _add_size_options(parser: argparse.ArgumentParser, *, seeds: int | None) -> None:
    group = parser.add_argument_group("size")
    group.add_argument("--width", type=int, default=256, metavar="M", help="base width M")
    group.add_argument("--samples", type=int, default=None, metavar="T",
                       help="batch size T (default 16, or the T of --inputs)")
    _add_inputs_option(group)
    if seeds is not None:
        group.add_argument("--seeds", type=int, default=None, metavar="N",
                           help=f"number of sampled networks (seeds S..S+N-1; default {seeds})")
        group.add_argument("--seed", type=int, default=None, metavar="S",
                           help="first seed (alone: one network with this seed; default 0)")
        group.add_argument("--processes", type=int, default=None, metavar="P",
                           help="worker processes (default: the sampler's choice)")


def build_parser() -> Parser:
    """The ``meanfield`` argument parser (one subparser per subcommand).

    Example:
        >>> build_parser().parse_args(["predict", "--depth", "4"]).depth
        4
    """
    parser = Parser(prog="meanfield", formatter_class=_Formatter,
                    description="Mean-field theory of wide random networks and their Fisher information, "
                                "checked against sampled networks.",
                    epilog="Run 'meanfield COMMAND --help' for the options and an example of each command.",
                    allow_abbrev=False)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"meanfield {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    def sub(name: str, help_: str) -> Parser:
        return commands.add_parser(name, help=help_, description=help_, epilog=_EXAMPLES[name],
                                   formatter_class=_Formatter, allow_abbrev=False)

    p = sub("predict", "Predicted FIM statistics (kappa's, m, s, lambda_max, eta_max) of a wide random network.")
    _add_network_options(p)
    _add_size_options(p, seeds=None)
    p.add_argument("--finite-width", choices=tuple(_FINITE_WIDTH), default="mean-field",
                   help="mean-field: finite-width expectations (exact P, bias terms and T); leading: m, s, "
                        "lambda_max, eta_max to leading order in 1/M; rmt: lambda_max and s from the random-matrix "
                        "model (coefficients derived, no sampled network, about a second; its notes name what is "
                        "still approximate; not with --dps)")
    p.add_argument("--dps", type=int, default=None,
                   help="evaluate in mpmath at this many digits (5..10000): values beyond float64's range "
                        "(deep or large-variance networks) are then printed with their digits")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_cmd_predict)

    p = sub("sample", "Exact FIM statistics (m, s, lambda_max, Gram entries) of sampled finite networks.")
    _add_network_options(p)
    _add_size_options(p, seeds=4)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--exact-s", action="store_true",
                   help="below a hidden batch norm, assemble the exact Gram (m and s exact, cost ~T M^3) "
                        "instead of the default matrix-free route for large sizes (s estimated)")
    p.set_defaults(func=_cmd_sample)

    p = sub("verify", "Test the prediction against sampled networks; exit 0 when every statistic passes, "
                      "1 otherwise.")
    _add_network_options(p)
    group = p.add_argument_group("size")
    group.add_argument("--widths", default=None, metavar="M1,M2,..",
                       help="widths to sample (default: the library's, 64,256)")
    group.add_argument("--samples", type=int, default=None, metavar="T",
                       help="batch size T (default 16, or the T of --inputs)")
    _add_inputs_option(group)
    group.add_argument("--seeds", type=int, default=None, metavar="N", help="networks per width (default 24)")
    group.add_argument("--processes", type=int, default=None, metavar="P", help="worker processes")
    p.add_argument("--alpha", type=float, default=None, metavar="A",
                   help="family-wise false-alarm rate of the test (default 0.01)")
    p.add_argument("--prediction", choices=_PREDICTIONS, default="mean-field",
                   help="what is tested: mean-field (meanfield predict) or rmt (meanfield predict "
                        "--finite-width rmt, derived). The rmt prediction is a finite-width "
                        "prediction, so a single width is the natural test (--widths 256); 1/M (meanfield "
                        "predict --finite-width 1/M: the statistics whose O(1/M) term it includes are tested "
                        "at each width with no free bias)")
    p.add_argument("--claims", default=None, metavar="STAT,..",
                   help="statistics (m,s,lambda_max,kappa1,kappa2) whose O(1/M) term the prediction includes: "
                        "tested with no free bias; 'none' claims nothing (default: what the prediction declares)")
    p.add_argument("--no-control-variates", dest="control_variates", action="store_false",
                   help="compare the plain sampled means (default: each statistic adjusted by control variates, "
                        "realized quantities of the same networks whose exact mean is known, which removes most "
                        "of its per-network noise)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_verify)

    p = sub("derive", "Symbolic derivation: recursions, closed forms, kappa's and FIM statistics.")
    _add_network_options(p, symbolic=True)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--latex", action="store_true", help="print LaTeX equations")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown document (LaTeX in $$ blocks)")
    fmt.add_argument("--write-derivations", metavar="DIR", default=None,
                     help="regenerate the project's derivations/*.md into DIR (network options ignored)")
    p.set_defaults(func=_cmd_derive)

    p = sub("reproduce", "Reproduce the paper's comparison: sharpness vs width for each normalization, "
                         "theory against samples; figures, CSV, Markdown report.")
    p.add_argument("--out", default="meanfield-results", metavar="DIR",
                   help="output folder (created if missing; a rerun resumes from it)")
    p.add_argument("--quick", action="store_true", help="the half-minute version (fewer widths and seeds)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="override defaults from a TOML file")
    p.add_argument("--processes", type=int, default=None, metavar="P",
                   help="local worker processes (default 2; at most the points to compute and the CPUs; "
                        "1 = in this process)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run on this Dask scheduler (needs the 'dask' extra) instead of local processes")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long a Dask scheduler has to answer (default 5)")
    p.add_argument("--fresh", action="store_true", help="ignore (and replace) the stored points in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_reproduce)

    p = sub("sweep", "Run a grid of networks x widths x seeds (TOML file), resumable, local or on Dask.")
    from .runs import sweeps  # the sweep options live beside the code that reads them

    sweeps.add_sweep_arguments(p)
    p.set_defaults(func=_cmd_sweep)
    return parser


# -- building the network ------------------------------------------------------------------------------


def network_from_args(args: argparse.Namespace, *, symbolic: bool = False):
    """The :class:`~meanfield.Network` described by the shared network options.

    Example:
        >>> args = build_parser().parse_args(["predict", "--norm", "batch:last", "--outputs", "2"])
        >>> network_from_args(args).norms
        (BatchNorm(layer=3, center_only=False),)
    """
    from .spec.network import Network

    alphas = None if args.alphas is None else _parse_values("alphas", args.alphas, symbolic=symbolic,
                                                            kind="alpha")
    if alphas is not None and not isinstance(alphas, list):
        alphas = [alphas] * args.depth
    return Network(
        depth=args.depth,
        activation=parse_activation(args.activation),
        sigma_w2=_parse_values("sigma_w2", args.sigma_w2, symbolic=symbolic, kind="sigma_w2"),
        sigma_b2=_parse_values("sigma_b2", args.sigma_b2, symbolic=symbolic, kind="sigma_b2"),
        outputs=args.outputs,
        alphas=alphas,
        norms=parse_norms(args.norm),  # repeated --norm, each one norm or a comma list
        input_q1=_parse_values("input_q1", args.input_q1, symbolic=symbolic),
        input_q2=_parse_values("input_q2", args.input_q2, symbolic=symbolic),
    )


# -- output helpers ------------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays -> floats/lists, NaN/inf -> None, objects -> str.

    Example:
        >>> import numpy as np
        >>> to_jsonable({"a": np.float64(1.5), "b": (1, float("nan")), "c": np.arange(2)})
        {'a': 1.5, 'b': [1, None], 'c': [0, 1]}
    """
    import numpy as np

    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def _print_json(obj: Any) -> None:
    print(json.dumps(to_jsonable(obj), indent=2))


_STATS = ("m", "s", "lambda_max")


def _predict_dict(stats: Any) -> dict:
    data = dict(stats.to_dict()) if hasattr(stats, "to_dict") else {}
    for key in ("kappa1", "kappa2", "alpha", "P", "m", "s", "lambda_max", "eta_max", "width", "samples",
                "gram_diag", "gram_offdiag", "lambda_max_kind", "lambda_max_bounds"):
        if key not in data and hasattr(stats, key):
            data[key] = getattr(stats, key)
    leading = data.get("leading")
    if not isinstance(leading, dict):
        lead = stats.leading
        data["leading"] = {key: getattr(lead, key) for key in _STATS if hasattr(lead, key)}
    data["network"] = stats.network.describe() if hasattr(stats, "network") else data.get("network")
    return data


def _beyond_float(value: Any) -> str | None:
    """The digits of an mpmath number that float64 cannot hold (overflow, or underflow of a non-zero value)."""
    import mpmath

    if not isinstance(value, mpmath.mpf) or not mpmath.isfinite(value):
        return None
    number = float(value)
    if math.isinf(number) or (number == 0 and value != 0) or (number != 0 and abs(number) < 2.3e-308):
        return mpmath.nstr(value, 15)
    return None


def _refuse_non_finite(values: dict, dps: Any = None, *, sampled: bool = False) -> None:
    """Never print a non-finite statistic with exit status 0: name it and say how to get it.

    (The library refuses such networks itself; this is the last line of defence of the exit status.)
    """
    from .errors import InvalidArgument

    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            continue
        if math.isfinite(number) or _beyond_float(value) is not None:
            continue
        if sampled:
            raise InvalidArgument("depth", "the network", "a network whose sampled statistics fit in float64",
                                  f"{key} = {value}; use a smaller sigma_w2 or depth")
        raise InvalidArgument("dps", dps, "a precision at which the statistics are finite",
                              f"{key} = {value} does not fit in float64; evaluate in mpmath with --dps 30"
                              + (" or more" if dps else ""))


# -- commands --------------------------------------------------------------------------------------------


def _cmd_predict(args: argparse.Namespace, parser: Parser) -> int:
    net = network_from_args(args)
    from . import predict  # through the public facade, as a user would call it

    finite_width = _FINITE_WIDTH[args.finite_width]
    if finite_width == "rmt" and args.dps is not None:
        parser.error("argument --finite-width: rmt is a numeric, partly measured prediction: not with --dps")
    batch = _inputs(args)
    if batch is None:
        stats = predict(net, width=args.width, samples=_samples(args), finite_width=finite_width, dps=args.dps)
    else:
        stats = predict(net, width=args.width, samples=args.samples, inputs=batch, finite_width=finite_width,
                        dps=args.dps)
    _refuse_non_finite({key: getattr(stats, key, None) for key in _CHECKED_STATS}, args.dps)
    if args.json:
        _print_json(_predict_dict(stats))
    else:
        print(stats)
        if finite_width == "leading":  # the table heads that column "finite width"; say what is in it
            print("  note: --finite-width leading: m, s, lambda_max and eta_max above are the leading-order "
                  "values")
    return 0


_CHECKED_STATS = ("kappa1", "kappa2", "m", "s", "lambda_max", "eta_max", "gram_diag", "gram_offdiag")


def _inputs(args: argparse.Namespace) -> Any:
    """The batch of ``--inputs`` (an array), or None: isotropic inputs of the network's statistics."""
    if getattr(args, "inputs", None) is None:
        return None
    from .spec.inputs import parse_inputs

    return parse_inputs(args.inputs)


def _samples(args: argparse.Namespace) -> int:
    """--samples, or its default 16 (without --inputs)."""
    return 16 if args.samples is None else args.samples


def _seed_list(args: argparse.Namespace, default_count: int) -> list[int]:
    from .errors import check_int

    if args.seeds is None and args.seed is not None:
        return [check_int("seed", args.seed, minimum=0)]
    count = check_int("seeds", default_count if args.seeds is None else args.seeds, minimum=1)
    start = check_int("seed", 0 if args.seed is None else args.seed, minimum=0)
    return list(range(start, start + count))


def _summary_table(summary: Any, net: Any, width: int, samples: int) -> str:
    import numpy as np

    keys = [k for k in ("m", "s", "lambda_max", "kappa1", "kappa2", "gram_diag", "gram_offdiag")
            if k in summary.mean]
    seeds = list(summary.seeds)
    lines = [f"Sampled FIM statistics: {net.describe()}",
             f"  width M={width}  samples T={samples}  seeds={len(seeds)} ({seeds[0]}..{seeds[-1]})",
             f"  {'statistic':<14}{'mean':>14}{'std. error':>14}{'min':>14}{'max':>14}"]
    for key in keys:
        values = np.asarray(summary.values[key], dtype=float)
        sem = f"{summary.sem[key]:.3g}" if math.isfinite(summary.sem[key]) else "- (1 seed)"
        lines.append(f"  {key:<14}{summary.mean[key]:>14.6g}{sem:>14}"
                     f"{values.min():>14.6g}{values.max():>14.6g}")
    return "\n".join(lines)


def _cmd_sample(args: argparse.Namespace, parser: Parser) -> int:
    net = network_from_args(args)
    seeds = _seed_list(args, default_count=4)
    from . import sample_many  # through the public facade, as a user would call it

    batch = _inputs(args)
    summary = sample_many(net, args.width, _samples(args) if batch is None else args.samples, seeds, inputs=batch,
                          processes=args.processes, progress=False if args.no_progress or args.json else None,
                          route="exact" if args.exact_s else "auto")
    _refuse_non_finite({f"mean {key}": value for key, value in summary.mean.items()}, sampled=True)
    if args.json:
        data = {"network": net.describe(), "width": args.width, "samples": summary.samples,
                "seeds": list(summary.seeds), "mean": dict(summary.mean), "sem": dict(summary.sem),
                "values": {k: list(v) for k, v in summary.values.items()}}
        if len(summary.seeds) == 1:  # one network has no standard error: say so rather than print null
            del data["sem"]
            data["note"] = "one seed: no standard error (use --seeds N with N >= 2)"
        _print_json(data)
    else:
        print(_summary_table(summary, net, args.width, summary.samples))
        if batch is not None:
            print(f"  inputs: {args.inputs} ({batch.shape[0]} x {batch.shape[1]})")
    return 0


def _int_list(option: str, text: str) -> tuple[int, ...]:
    from .errors import InvalidArgument

    try:
        values = tuple(int(item) for item in text.split(","))
    except ValueError:
        raise InvalidArgument(option, text, "a comma list of integers, e.g. 64,128,256") from None
    return values


def _cmd_verify(args: argparse.Namespace, parser: Parser) -> int:
    net = network_from_args(args)
    options = {"widths": None if args.widths is None else _int_list("widths", args.widths),
               "samples": args.samples, "seeds": args.seeds, "alpha": args.alpha, "processes": args.processes}
    from . import verify  # through the public facade, as a user would call it

    batch = _inputs(args)
    if batch is not None:
        options["inputs"] = batch
    if args.prediction in ("rmt", "1/M"):
        options["prediction"] = args.prediction  # a finite-width form: predict(..., finite_width=...)
    if args.claims is not None:
        options["claims"] = () if args.claims.strip() == "none" else tuple(
            c.strip() for c in args.claims.split(",") if c.strip())
    options["control_variates"] = args.control_variates
    report = verify(net, **{k: v for k, v in options.items() if v is not None})
    if args.json:
        print(report.to_json() if hasattr(report, "to_json") else json.dumps(to_jsonable(report.to_dict())))
    else:
        print(report)
    return 0 if report.passed else 1


def _cmd_derive(args: argparse.Namespace, parser: Parser) -> int:
    from . import documents

    if args.write_derivations:
        written = documents.write_derivations(args.write_derivations)
        for path in written:
            print(path)
        return 0
    net = network_from_args(args, symbolic=True)
    if args.markdown:
        print(documents.network_markdown(net))
    elif args.latex:
        print(documents.network_latex(net))
    else:
        print(documents.network_text(net))
    return 0


#: The options of ``reproduce`` and ``sweep`` that the library's argument names stand for.
_RUN_OPTIONS = {"config": "--config", "out": "--out", "store": "--store", "scheduler": "--scheduler",
                "connect_timeout": "--connect-timeout", "processes": "--processes", "resume": "--no-resume"}


def _run_usage_error(parser: Parser, err: Exception, config: bool = False) -> NoReturn:
    """A usage error of ``reproduce`` / ``sweep`` naming the option (a key of the --config file is named
    as a key of that file)."""
    argument = str(getattr(err, "argument", "") or "")
    option = _RUN_OPTIONS.get(argument)
    if option and option in parser.option_strings():
        parser.error(f"argument {option}: {err}")
    if config:
        parser.error(f"argument --config: {err}")
    _usage_error(parser, err)


def _cmd_reproduce(args: argparse.Namespace, parser: Parser) -> int:
    from .errors import InvalidArgument
    from .runs.reproduce import load_config, reproduce

    try:
        config = load_config(args.config, quick=args.quick)
    except InvalidArgument as err:
        _run_usage_error(parser, err, config=True)
    try:
        result = reproduce(config, out=args.out, processes=args.processes, fresh=args.fresh,
                           progress=not args.no_progress, scheduler=args.scheduler,
                           connect_timeout=args.connect_timeout)
    except InvalidArgument as err:
        _run_usage_error(parser, err)
    print(result.summary())
    return 0


def _cmd_sweep(args: argparse.Namespace, parser: Parser) -> int:
    from .errors import InvalidArgument
    from .runs import sweeps

    try:
        return int(sweeps.cli_run(args) or 0)
    except InvalidArgument as err:
        _run_usage_error(parser, err)


# -- entry point -------------------------------------------------------------------------------------------


def _usage_error(parser: Parser, err: Exception) -> NoReturn:
    argument = getattr(err, "argument", None)
    stem = str(argument).split("[", 1)[0].split(".", 1)[0] if argument else None
    option = _OPTION_OF.get(stem or "")
    message = str(err)
    if option and option in parser.option_strings():
        message = f"argument {option}: {message}"
    parser.error(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``meanfield`` command; returns the exit status (0 ok, 1 verification failed, 2 usage).

    Example:
        >>> main(["predict", "--width", "0"])  # doctest: +SKIP
        meanfield predict: error: argument --width: width=0 is not allowed: expected an integer >= 1
    """
    from .errors import InvalidArgument
    from .spec.inputs import MissingExtra

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    subparser = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    if extra:
        subparser.error("unrecognized arguments: " + " ".join(extra))
    try:
        return int(args.func(args, subparser) or 0)
    except InvalidArgument as err:
        _usage_error(subparser, err)
    except MissingExtra as err:  # an optional dependency: say what to install, no traceback
        subparser.error(f"argument --inputs: {err}" if getattr(args, "inputs", None) else str(err))
    except KeyboardInterrupt:
        print("\ninterrupted" + (" (rerun the same command to resume)" if args.command == "reproduce" else ""),
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `meanfield ... | head`
        return 0
    except Exception as err:  # noqa: BLE001 - a library bug: a one-line message unless asked for more
        if os.environ.get("MEANFIELD_TRACEBACK"):
            raise
        print(f"meanfield {args.command}: internal error: {type(err).__name__}: {err}\n"
              "  (set MEANFIELD_TRACEBACK=1 to see the traceback; please report it)", file=sys.stderr)
        return 3


def _console() -> None:  # pragma: no cover - console entry (pyproject points at main)
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
