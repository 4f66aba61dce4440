"""``meanfield reproduce``: the paper's comparison, theory against sampled networks, resumable.

The pipeline is a list of *stages*. Each stage names the points it needs (a point is one network at
one width M, batch size T and seed, or its theory prediction), and renders figures and findings from
the computed values. Every computed point is appended, as one JSON line, to ``cache.jsonl`` in the
output folder the moment it is done, keyed by the full network description, M, T and seed: a rerun
(after an interruption, or with more seeds) computes only what is missing, and a changed network
parameter can never reuse a stale number. Figures, CSV files and the Markdown report are rebuilt
from the cache at the end of every run.

Stages (see :data:`STAGES`; a later stage, e.g. the random-matrix edge of issue 9, registers itself
with :func:`register_stage`):

* ``width``: m, s and lambda_max against M at fixed T, for each activation and normalization
  placement, sampled means with standard errors beside the finite-width theory.
* ``ratio``: lambda_max against M at fixed M/T (T grows with M): bounded with batch norm in the last
  layer, growing like M without normalization.
* ``learning_rate``: loss after N gradient steps over (M, eta) with the predicted boundary
  eta = 2/lambda_max(M) (needs :mod:`meanfield.sampled.training`; skipped with a note when unavailable).
* ``rmt``: lambda_max over a grid of (M, T/M) cells, leading order and the random-matrix prediction
  ``predict(..., finite_width="rmt")`` (issue 9) against sampled means, with per-cell relative errors.

Findings are *computed*: fitted exponents, ratios and sign tests on the numbers decide each sentence
of the report; nothing in the text is fixed in advance.

Example:
    >>> config = load_config(None, quick=True)
    >>> config.widths
    (64, 128, 256)
    >>> result = reproduce(config, out="results")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgument, check_int, closest

__all__ = ["Config", "load_config", "reproduce", "ReproduceResult", "Task", "Stage", "STAGES",
           "register_stage", "Store", "network_for", "placement_label"]

_STATS = ("m", "s", "lambda_max")

# -- configuration -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Settings of ``meanfield reproduce`` (every field can be set in the ``--config`` TOML file).

    Attributes:
        activations: activations compared in the width stage.
        depth: L, weight layers (the middle layer used by 'batch:mid' and 'layer:mid' is L // 2 + 1
            rounded into the hidden layers).
        outputs: C (> 1, so that the C outliers are visible as a group).
        sigma_w2: weight variance, one number or a table per activation.
        sigma_b2: bias variance, one number or a table per activation (biases make kappa_2 > 0 for
            odd activations such as tanh; without them tanh has no outliers to remove).
        placements: normalization placements: 'none', 'batch:last', 'batch-center:last',
            'batch:mid', 'layer:mid' or explicit layers ('batch:2', 'layer:1').
        widths: widths M of the width stage.
        samples: batch size T of the width stage.
        seeds: sampled networks per point of the width stage.
        ratio_activations, ratio_placements, ratio_widths, width_per_sample, ratio_seeds: the fixed
            M/T stage, T = M / width_per_sample.
        lr_activation, lr_placements, lr_widths, lr_samples, lr_steps, lr_seeds: the learning-rate
            grid; lr_etas steps log-spaced from a quarter of the smallest predicted eta_max to
            lr_eta_span times the largest.
        rmt_activations, rmt_placements: the networks of the random-matrix stage.
        rmt_widths: widths M of the random-matrix stage (>= 8).
        rmt_ratios: batch-to-width ratios T/M of the random-matrix stage (T = round(ratio M); cells with
            C T > 2048 are skipped, as are cells with T below what the network's norms need).
        rmt_seeds: sampled networks per cell (seeds 0..rmt_seeds-1, kept below the model's reference
            seeds 1000+).
        rmt_reference_widths: the two widths at which the random-matrix model measures its fluctuation
            coefficients (``meanfield.finite.rmt.measure_fluctuations``; the model's own default is 64, 128).
        stages: the stages to run, in order.
    """

    activations: tuple[str, ...] = ("relu", "tanh")
    depth: int = 3
    outputs: int = 4
    sigma_w2: Any = (("relu", 2.0), ("tanh", 1.5))
    sigma_b2: Any = (("relu", 0.1), ("tanh", 0.5))
    placements: tuple[str, ...] = ("none", "batch:last", "batch-center:last", "batch:mid", "layer:mid")
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    samples: int = 16
    seeds: int = 8
    ratio_activations: tuple[str, ...] = ("relu", "tanh")
    ratio_placements: tuple[str, ...] = ("none", "batch:last", "batch-center:last")
    ratio_widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    width_per_sample: int = 4
    ratio_seeds: int = 6
    lr_activation: str = "relu"
    lr_placements: tuple[str, ...] = ("none", "batch:last")
    lr_widths: tuple[int, ...] = (64, 128, 256)
    lr_samples: int = 16
    lr_steps: int = 50
    lr_etas: int = 12
    lr_eta_span: float = 16.0
    lr_seeds: int = 1
    rmt_activations: tuple[str, ...] = ("relu", "tanh")
    rmt_placements: tuple[str, ...] = ("batch-center:last", "none", "layer:mid")
    rmt_widths: tuple[int, ...] = (64, 256)
    rmt_ratios: tuple[float, ...] = (0.125, 0.5, 1.0, 2.0)
    rmt_seeds: int = 6
    rmt_reference_widths: tuple[int, ...] = (64, 128)
    stages: tuple[str, ...] = ("width", "ratio", "learning_rate", "rmt")

    def sigma(self, kind: str, activation: str) -> float:
        """sigma_w2 or sigma_b2 for one activation (a scalar setting applies to all)."""
        value = getattr(self, kind)
        if isinstance(value, tuple):
            table = dict(value)
            if activation not in table:
                raise InvalidArgument(kind, dict(value), f"a number or a table with an entry for {activation!r}")
            return float(table[activation])
        return float(value)

    def to_dict(self) -> dict:
        """The settings as plain TOML-able values."""
        data = dataclasses.asdict(self)
        for kind in ("sigma_w2", "sigma_b2"):
            value = getattr(self, kind)
            data[kind] = dict(value) if isinstance(value, tuple) else value
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}


QUICK = dict(
    activations=("relu", "tanh"),
    placements=("none", "batch:last", "batch-center:last", "batch:mid", "layer:mid"),
    widths=(64, 128, 256), samples=16, seeds=4,
    ratio_activations=("relu",), ratio_widths=(32, 64, 128, 256), ratio_seeds=3,
    lr_widths=(64, 128), lr_steps=30, lr_etas=8,
    rmt_activations=("relu",), rmt_widths=(64,), rmt_ratios=(0.25, 1.0), rmt_seeds=3,
)
"""Overrides of the defaults for ``--quick`` (about half a minute on 2 cores)."""


def _field_types() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(Config)}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check one TOML value against the type of its default; name the key when it does not fit."""
    if key in ("sigma_w2", "sigma_b2"):
        if isinstance(value, Mapping):
            return tuple(sorted((str(k), _coerce(f"{key}.{k}", v, 1.0)) for k, v in value.items()))
        return _coerce(key, value, 1.0)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidArgument(key, value, "true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgument(key, value, "a positive integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InvalidArgument(key, value, "a non-negative number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InvalidArgument(key, value, "a string")
        return value
    if isinstance(default, tuple):
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise InvalidArgument(key, value, "a non-empty list")
        return tuple(_coerce(key, v, default[0]) for v in value)
    raise InvalidArgument(key, value, f"a value like {default!r}")


def load_config(path: str | os.PathLike | None = None, *, quick: bool = False, **overrides: Any) -> Config:
    """The run's settings: defaults, then the ``--quick`` preset, then a TOML file, then ``overrides``.

    Unknown keys are an error that names the key and the closest valid one. The file may put the keys
    at the top level or in a ``[reproduce]`` table.

    Args:
        path: a TOML file, or None.
        quick: start from the half-minute preset :data:`QUICK`.
        **overrides: final values (same names as the TOML keys).

    Example:
        >>> load_config(None, quick=True, seeds=2).seeds
        2
        >>> load_config(None, widht=3)
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: widht=3 is not allowed: expected a setting of reproduce (did you mean 'widths'?)
    """
    defaults = _field_types()
    values: dict[str, Any] = dict(QUICK) if quick else {}
    if path is not None:
        values.update(_read_toml(path))
    values.update(overrides)
    checked = {}
    for key, value in values.items():
        if key not in defaults:
            near = closest(key, defaults)
            raise InvalidArgument(key, value, "a setting of reproduce", f"did you mean {near!r}?" if near else None)
        checked[key] = _coerce(key, value, defaults[key])
    config = Config(**checked)
    _validate(config)
    return config


def _read_toml(path: str | os.PathLike) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise InvalidArgument("config", str(path), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise InvalidArgument("config", str(path), "a valid TOML file", str(err)) from None
    if "reproduce" in data and isinstance(data["reproduce"], dict):
        rest = {k: v for k, v in data.items() if k != "reproduce"}
        data = {**rest, **data["reproduce"]}
    return data


def _validate(config: Config) -> None:
    from ..spec.activations import activation

    named = [("activations", a) for a in config.activations] + [("ratio_activations", a) for a in
                                                                  config.ratio_activations]
    named += [("lr_activation", config.lr_activation)] + [("rmt_activations", a) for a in config.rmt_activations]
    for key, name in named:
        try:
            activation(name)
        except InvalidArgument as err:  # name the setting, keep the catalogue and the closest name
            raise InvalidArgument(key, name, "an activation of the catalogue", str(err)) from None
        for kind in ("sigma_w2", "sigma_b2"):
            config.sigma(kind, name)
    for key in ("placements", "ratio_placements", "lr_placements", "rmt_placements"):
        for placement in getattr(config, key):
            try:
                network_for(config, config.activations[0], placement)
            except InvalidArgument as err:
                raise InvalidArgument(key, placement, "'none' or kind:layer with kind batch, batch-center or "
                                      "layer and layer a number, 'mid' or 'last'", str(err)) from None
    if config.outputs < 1:
        raise InvalidArgument("outputs", config.outputs, "an integer >= 1")
    for stage in config.stages:
        if stage not in STAGES:
            near = closest(stage, STAGES)
            raise InvalidArgument("stages", stage, "one of " + ", ".join(STAGES),
                                  f"did you mean {near!r}?" if near else None)
    for width in config.ratio_widths:
        if width % config.width_per_sample:
            raise InvalidArgument("ratio_widths", width, f"multiples of width_per_sample={config.width_per_sample}")
    _validate_rmt(config)


def _validate_rmt(config: Config) -> None:
    """The random-matrix stage's keys: widths the model accepts, positive ratios, seeds disjoint from its
    reference seeds, two different reference widths."""
    from ..finite.rmt import REFERENCE_SEEDS

    for width in config.rmt_widths:
        if width < 8:
            raise InvalidArgument("rmt_widths", width, "widths M >= 8 (the random-matrix model needs them)")
    for ratio in config.rmt_ratios:
        if not ratio > 0:
            raise InvalidArgument("rmt_ratios", ratio, "positive ratios T/M")
    # the model's coefficients are measured on seeds from min(REFERENCE_SEEDS) on: the sampled cells must
    # not reuse them, or the comparison would test the model on its own data
    if config.rmt_seeds > min(REFERENCE_SEEDS):
        raise InvalidArgument("rmt_seeds", config.rmt_seeds, f"at most {min(REFERENCE_SEEDS)}",
                              f"seeds from {min(REFERENCE_SEEDS)} on are the random-matrix model's reference draws")
    widths = config.rmt_reference_widths
    if len(widths) < 2 or widths[0] == widths[-1] or min(widths) < 8:
        raise InvalidArgument("rmt_reference_widths", list(widths), "two different widths >= 8 (e.g. [64, 128])")


# -- networks and placements -------------------------------------------------------------------------------

_PLACEMENT_NAMES = {
    "none": "no normalization",
    "batch": "batch norm",
    "batch-center": "batch norm (mean only)",
    "layer": "layer norm",
}


def _resolve_placement(placement: str, depth: int) -> str:
    """'batch:mid' -> 'batch:2' for depth 3; 'none' stays."""
    if placement == "none":
        return placement
    kind, _, layer = placement.partition(":")
    if layer == "mid":
        layer = str(max(1, min(depth - 1, depth // 2 + depth % 2))) if depth > 1 else "1"
    if layer == "last" or layer == str(depth):
        layer = "last"
    return f"{kind}:{layer}"


def placement_label(placement: str, depth: int) -> str:
    """Readable name of a placement: 'batch:last' -> 'batch norm, last layer'.

    Example:
        >>> placement_label("batch-center:last", 3), placement_label("layer:mid", 3)
        ('batch norm (mean only), last layer', 'layer norm, layer 2')
    """
    placement = _resolve_placement(placement, depth)
    if placement == "none":
        return _PLACEMENT_NAMES["none"]
    kind, _, layer = placement.partition(":")
    where = "last layer" if layer == "last" else f"layer {layer}"
    return f"{_PLACEMENT_NAMES.get(kind, kind)}, {where}"


def network_for(config: Config, activation: str, placement: str, depth: int | None = None):
    """The :class:`~meanfield.Network` of one (activation, placement) of the config.

    Example:
        >>> network_for(load_config(), "relu", "batch:mid").norms
        (BatchNorm(layer=2, center_only=False),)
    """
    from ..spec.grammar import parse_norm
    from ..spec.network import Network

    depth = config.depth if depth is None else depth
    placement = _resolve_placement(placement, depth)
    norms = () if placement == "none" else (parse_norm(placement),)
    return Network(depth=depth, activation=activation, sigma_w2=config.sigma("sigma_w2", activation),
                   sigma_b2=config.sigma("sigma_b2", activation), outputs=config.outputs, norms=norms)


# -- tasks and the cache ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One cached unit of work: ``function(**kwargs)`` in a worker, returning a dict of numbers.

    ``key`` identifies the point completely (network description, M, T, seed, kind), so a cached value
    is reused only for exactly the same computation. ``labels`` are readable columns for the CSV.
    """

    key: str
    function: str  # "module:function" inside meanfield, importable in a worker process
    kwargs: tuple[tuple[str, Any], ...]
    labels: tuple[tuple[str, Any], ...] = ()
    cost: float = 1.0  # relative cost, to start the big tasks first


def _call(task: Task) -> tuple[str, dict, float]:
    """Worker entry: run one task and time it."""
    import importlib

    module, _, name = task.function.partition(":")
    function = getattr(importlib.import_module(f"meanfield.{module}"), name)
    start = time.perf_counter()
    values = function(**dict(task.kwargs))
    return task.key, values, time.perf_counter() - start


def _spec(net) -> tuple[tuple[str, Any], ...]:
    """A picklable, hashable description of a network that rebuilds it exactly in a worker."""
    return (("depth", net.depth), ("activation", tuple(a.name for a in net.activation)),
            ("sigma_w2", net.sigma_w2), ("sigma_b2", net.sigma_b2), ("outputs", net.outputs),
            ("alphas", net.alphas), ("norms", tuple(str(n) for n in net.norms)))


def _described(net) -> str:
    """Readable and exact: the one-line description plus a digest of the exact spec (floats in full)."""
    import hashlib

    return f"{net.describe()}|{hashlib.sha1(repr(_spec(net)).encode()).hexdigest()[:10]}"


def _network(spec: tuple) -> Any:
    from ..spec.grammar import parse_activation, parse_norm
    from ..spec.network import Network

    data = dict(spec)
    acts = [parse_activation(name) for name in data["activation"]]
    return Network(depth=data["depth"], activation=acts if data["depth"] > 1 else acts[0],
                   sigma_w2=data["sigma_w2"], sigma_b2=data["sigma_b2"], outputs=data["outputs"],
                   alphas=data["alphas"], norms=tuple(parse_norm(n) for n in data["norms"]))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def theory_point(spec: tuple, width: int, samples: int) -> dict:
    """predict(net, M, T) as a flat dict (finite-width values, leading order, the kind of lambda_max)."""
    from ..theory.fisher import predict

    stats = predict(_network(spec), width=width, samples=samples)
    row = {key: _finite(getattr(stats, key, None)) for key in
           ("kappa1", "kappa2", "alpha", "P", "m", "s", "lambda_max", "eta_max", "gram_diag", "gram_offdiag")}
    lead = stats.leading
    row.update({f"leading_{key}": _finite(getattr(lead, key, None)) for key in _STATS})
    row["lambda_max_kind"] = getattr(stats, "lambda_max_kind", "prediction")
    bounds = getattr(stats, "lambda_max_bounds", None)
    row["lambda_max_lo"], row["lambda_max_hi"] = (_finite(bounds[0]), _finite(bounds[1])) if bounds else (None, None)
    return row


def sample_point(spec: tuple, width: int, samples: int, seed: int) -> dict:
    """sample(net, M, T, seed) as a flat dict of its statistics."""
    from ..sampled.sampling import sample

    result = sample(_network(spec), width, samples, seed)
    return {key: _finite(getattr(result, key, None)) for key in
            ("P", "m", "s", "lambda_max", "gram_diag", "gram_offdiag", "kappa1", "kappa2")}


class Store:
    """The append-only JSON-lines cache of computed points in the output folder.

    A line is written and flushed as soon as its point is done, so an interrupted run loses at most
    the points in flight. A torn last line (killed mid-write) is ignored on reading and repaired
    before appending.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     store = Store(Path(d) / "cache.jsonl")
        ...     store.add("a", {"m": 1.0}, {"width": 8}, 0.1)
        ...     Store(Path(d) / "cache.jsonl").rows["a"]["values"]
        {'m': 1.0}
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn line from an interrupted write
                    if isinstance(row, dict) and "key" in row:
                        self.rows[row["key"]] = row

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, key: str, values: dict, labels: Mapping[str, Any], seconds: float) -> None:
        row = {"key": key, "labels": dict(labels), "values": values, "seconds": round(seconds, 4)}
        text = json.dumps(row, sort_keys=True, default=_json_default)
        needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(("\n" if needs_newline else "") + text + "\n")
            handle.flush()
        self.rows[key] = row


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# -- stages ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One section of the report: a title, a table (Markdown), a computed reading, figures."""

    title: str
    reading: str
    table: str = ""
    figures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """A step of reproduce: ``tasks(config)`` lists its points; ``render(config, rows, out)`` -> Findings.

    ``available()`` returns None when the stage can run, else the reason it is skipped.
    """

    name: str
    tasks: Callable[[Config], list[Task]]
    render: Callable[[Config, "Results", Path], list[Finding]]
    available: Callable[[], str | None] = lambda: None


STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    """Add (or replace) a stage of ``reproduce``; list its name in ``Config.stages`` to run it.

    This is the hook for later figures (the random-matrix edge of issue 9): a module defines its
    tasks and its renderer and registers them here.
    """
    STAGES[stage.name] = stage
    return stage


def _point_tasks(stage: str, config: Config, activations: Sequence[str], placements: Sequence[str],
                 sizes: Sequence[tuple[int, int]], seeds: int) -> list[Task]:
    tasks = []
    for act in activations:
        for placement in placements:
            net = network_for(config, act, placement)
            spec = _spec(net)
            described = _described(net)
            resolved = _resolve_placement(placement, config.depth)
            for width, samples in sizes:
                labels = (("stage", stage), ("activation", act), ("placement", resolved), ("width", width),
                          ("samples", samples))
                tasks.append(Task(f"theory|{described}|M={width}|T={samples}", "runs.experiments:theory_point",
                                  (("spec", spec), ("width", width), ("samples", samples)),
                                  labels + (("seed", None), ("kind", "theory")), cost=0.05))
                tasks += [_sample_task(labels, net, width, samples, seed, resolved != "none") for seed in range(seeds)]
    return tasks


def _sample_cost(outputs: int, width: int, samples: int, normalized: bool) -> float:
    """Relative cost of one sampled point: forward M^2 T per layer, Gram (C T)^2 M; a norm about doubles it."""
    return (width * width * samples + (outputs * samples) ** 2 * width) * 1e-7 * (2.0 if normalized else 1.0)


def _sample_task(labels: tuple, net, width: int, samples: int, seed: int, normalized: bool) -> Task:
    """One sampled network. The key names only the network, M, T and seed (not the stage), so every stage
    that needs the same draw shares one cached computation."""
    return Task(f"sample|{_described(net)}|M={width}|T={samples}|seed={seed}", "runs.experiments:sample_point",
                (("spec", _spec(net)), ("width", width), ("samples", samples), ("seed", seed)),
                labels + (("seed", seed), ("kind", "sample")),
                cost=_sample_cost(net.outputs, width, samples, normalized))


def _width_tasks(config: Config) -> list[Task]:
    return _point_tasks("width", config, config.activations, config.placements,
                        [(w, config.samples) for w in config.widths], config.seeds)


def _ratio_tasks(config: Config) -> list[Task]:
    return _point_tasks("ratio", config, config.ratio_activations, config.ratio_placements,
                        [(w, w // config.width_per_sample) for w in config.ratio_widths], config.ratio_seeds)


# -- results: the cache as tables ------------------------------------------------------------------------------


@dataclass
class Point:
    """Theory and sampled values of one (stage, activation, placement, M, T)."""

    stage: str
    activation: str
    placement: str
    width: int
    samples: int
    theory: dict = field(default_factory=dict)
    seeds: list = field(default_factory=list)
    sampled: dict = field(default_factory=lambda: defaultdict(list))

    def mean(self, key: str) -> float:
        values = [v for v in self.sampled.get(key, []) if v is not None]
        return float(np.mean(values)) if values else math.nan

    def sem(self, key: str) -> float:
        values = [v for v in self.sampled.get(key, []) if v is not None]
        return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


class Results:
    """The cached rows of this run's tasks, grouped into :class:`Point` objects."""

    def __init__(self, tasks: Iterable[Task], store: Store):
        self.points: dict[tuple, Point] = {}
        self.rows: list[dict] = []
        for task in tasks:
            row = store.rows.get(task.key)
            if row is None:
                continue
            labels = dict(task.labels)
            self.rows.append({**labels, **row["values"], "seconds": row.get("seconds")})
            if labels.get("kind") not in ("theory", "sample"):
                continue
            ident = (labels["stage"], labels["activation"], labels["placement"], labels["width"], labels["samples"])
            point = self.points.get(ident)
            if point is None:
                point = self.points[ident] = Point(*ident)
            if labels["kind"] == "theory":
                point.theory = row["values"]
            else:
                point.seeds.append(labels["seed"])
                for key, value in row["values"].items():
                    point.sampled[key].append(value)

    def series(self, stage: str, activation: str, placement: str) -> list[Point]:
        return sorted((p for p in self.points.values()
                       if (p.stage, p.activation, p.placement) == (stage, activation, placement)),
                      key=lambda p: p.width)


# -- numbers that the readings use -------------------------------------------------------------------------------


def slope(widths: Sequence[float], values: Sequence[float], sems: Sequence[float] | None = None) -> float:
    """Exponent a of values ~ c M^a: least squares on log-log, weighted by 1/(relative s.e.)^2 if given.

    The weights keep a noisy small-width mean (the C outliers split and fluctuate most at small M)
    from dominating the fit; relative errors are floored at 1% so that no point gets all the weight.

    Example:
        >>> round(slope([64, 128, 256], [1.0, 2.0, 4.0]), 6)
        1.0
        >>> round(slope([64, 128, 256], [1.0, 2.0, 9.0], [0.01, 0.02, 9.0]), 2)
        1.0
    """
    rows = []
    for i, (w, v) in enumerate(zip(widths, values)):
        if not (v and v > 0 and math.isfinite(v)):
            continue
        rel = sems[i] / v if sems is not None and sems[i] is not None and math.isfinite(sems[i]) else 0.0
        rows.append((math.log(w), math.log(v), 1.0 / max(rel, 0.01) ** 2 if sems is not None else 1.0))
    if len({r[0] for r in rows}) < 2:
        return math.nan
    x, y, weight = np.array(rows).T
    return float(np.polyfit(x, y, 1, w=np.sqrt(weight))[0])


def _growth(exponent: float) -> str:
    """Words for a fitted exponent of M: bounded below 1/3, like M above 2/3, sub-linear between."""
    if not math.isfinite(exponent):
        return "could not be fitted"
    if exponent < 1 / 3:
        return f"stays bounded (fitted exponent {exponent:.2f})"
    if exponent <= 2 / 3:
        return f"grows sub-linearly, like M^{exponent:.2f}"
    return f"grows like M (fitted exponent {exponent:.2f})"


def _series_slope(series: Sequence["Point"], key: str = "lambda_max") -> float:
    return slope([p.width for p in series], [p.mean(key) for p in series], [p.sem(key) for p in series])


def _fmt(value: float, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def _pm(mean: float, sem: float) -> str:
    return f"{_fmt(mean)} ± {_fmt(sem, 2)}"


# -- figures ------------------------------------------------------------------------------------------------------

_COLORS = {"none": "#1f2937", "batch:last": "#d62728", "batch-center:last": "#ff7f0e",
           "batch": "#2ca02c", "layer": "#1f77b4", "batch-center": "#9467bd"}


def _color(placement: str) -> str:
    return _COLORS.get(placement) or _COLORS.get(placement.partition(":")[0], "#8c564b")


def _save(fig, out: Path, stem: str) -> tuple[str, ...]:
    names = []
    for ext in ("png", "pdf"):
        path = out / f"{stem}.{ext}"
        # fixed metadata keeps reruns byte-stable where the backend allows it
        fig.savefig(path, dpi=130, bbox_inches="tight",
                    metadata={"Software": None} if ext == "png" else {"Creator": None, "Producer": None,
                                                                      "CreationDate": None})
        names.append(path.name)
    return tuple(names)


def _figure(ncols: int, width: float = 4.3, height: float = 3.6):
    from matplotlib.figure import Figure  # no pyplot: no global state, works headless

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _log_axes(ax, widths: Sequence[int]) -> None:
    """Log-log axes with plain-number tick labels: x ticks at the widths, y at 1-2-5 steps.

    Plain labels (no mathtext) also keep rendering fast: mathtext tick labels dominated the time.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(widths))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


_STAT_LABEL = {"m": "m (mean eigenvalue)", "s": "s (mean squared eigenvalue)",
               "lambda_max": "λ_max (largest eigenvalue)"}


def _plot_series(ax, series: list[Point], key: str, color: str, label: str | None, shift: float = 1.0) -> None:
    """Sampled means with one-s.e. bars (markers, nudged by ``shift`` so placements do not overlap),
    the finite-width theory (solid; where the theory only bounds lambda_max, its lower bound dashed and
    the bounds as a band)."""
    widths = [p.width for p in series]
    means = [p.mean(key) for p in series]
    sems = [p.sem(key) for p in series]
    ax.errorbar([w * shift for w in widths], means, yerr=[0 if not math.isfinite(s) else s for s in sems],
                fmt="o", ms=3.5, color=color, capsize=2, label=label, zorder=3)
    theory = [_finite(p.theory.get(key)) for p in series]
    if any(v is not None for v in theory):
        bound = key == "lambda_max" and any(p.theory.get("lambda_max_kind") == "bound" for p in series)
        ax.plot(widths, [np.nan if v is None else v for v in theory], "--" if bound else "-", color=color, lw=1.2)
        if bound:
            lo = [_finite(p.theory.get("lambda_max_lo")) for p in series]
            hi = [_finite(p.theory.get("lambda_max_hi")) for p in series]
            if all(v is not None for v in lo + hi):
                ax.fill_between(widths, lo, hi, color=color, alpha=0.08, lw=0)


def _style_legend(fig, axes, ncol: int) -> None:
    """One legend for the figure: a marker per placement, and what markers, lines and bands mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", marker="o", ls="none", ms=3.5),
                Line2D([], [], color="grey", ls="-"), Line2D([], [], color="grey", ls="--"),
                Patch(color="grey", alpha=0.15)]
    labels += ["sampled mean ± 1 s.e.", "theory (finite width)", "theory lower bound (λ_max only bounded)",
               "theory bounds on λ_max"]
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=7, frameon=False)


def _shift(index: int, count: int) -> float:
    return 1.0 + 0.02 * (index - (count - 1) / 2)


def _render_width(config: Config, results: Results, out: Path) -> list[Finding]:
    findings = []
    for act in config.activations:
        placements = [_resolve_placement(p, config.depth) for p in config.placements]
        fig, axes = _figure(3)
        for ax, key in zip(axes, _STATS):
            for index, placement in enumerate(placements):
                series = results.series("width", act, placement)
                if series:
                    _plot_series(ax, series, key, _color(placement), placement_label(placement, config.depth),
                                 _shift(index, len(placements)))
            _log_axes(ax, config.widths)
            ax.set_xlabel("width M")
            ax.set_ylabel(_STAT_LABEL[key])
            ax.grid(True, which="both", alpha=0.25)
        _style_legend(fig, axes, ncol=5)
        fig.suptitle(f"{act}, L={config.depth}, C={config.outputs}, T={config.samples}: FIM statistics against "
                     f"width ({config.seeds} sampled networks per point)", fontsize=9)
        figures = _save(fig, out, f"width_{act}")
        findings.append(_width_finding(config, results, act, placements, figures))
    return findings


def _width_finding(config: Config, results: Results, act: str, placements: list[str],
                   figures: tuple[str, ...]) -> Finding:
    T = config.samples
    header = ("| placement | M | λ_max theory | λ_max sampled | × below none | exponent in M | "
              "κ₂ sampled | outlier excess T·κ₂/(κ₁−κ₂) |\n|---|---|---|---|---|---|---|---|")
    lines = [header]
    base = {p.width: p for p in results.series("width", act, "none")}
    facts = {}
    for placement in placements:
        series = results.series("width", act, placement)
        if not series:
            continue
        last = series[-1]
        exponent = _series_slope(series)
        ref = base.get(last.width)
        factor = ref.mean("lambda_max") / last.mean("lambda_max") if ref and placement != "none" else math.nan
        k1, k2, k2_sem = last.mean("kappa1"), last.mean("kappa2"), last.sem("kappa2")
        outlier = T * k2 / (k1 - k2) if math.isfinite(k1) and k1 != k2 else math.nan
        facts[placement] = dict(exponent=exponent, factor=factor, k2=k2, k2_sem=k2_sem, outlier=outlier,
                                width=last.width, value=last.mean("lambda_max"))
        lines.append(f"| {placement_label(placement, config.depth)} | {last.width} | "
                     f"{_fmt(_finite(last.theory.get('lambda_max')) or math.nan)}"
                     f"{' (lower bound)' if last.theory.get('lambda_max_kind') == 'bound' else ''} | "
                     f"{_pm(last.mean('lambda_max'), last.sem('lambda_max'))} | {_fmt(factor, 3)} | "
                     f"{_fmt(exponent, 3)} | {_pm(k2, k2_sem)} | {_fmt(outlier, 3)} |")
    return Finding(f"{act}: sharpness against width at fixed T = {T}", _width_reading(config, act, facts),
                   "\n".join(lines), figures)


def _width_reading(config: Config, act: str, facts: dict) -> str:
    if "none" not in facts:
        return "No run without normalization to compare with."
    none = facts["none"]
    T = config.samples
    parts = [f"For {act} without normalization, λ_max {_growth(none['exponent'])} at fixed T = {T}, reaching "
             f"{_fmt(none['value'])} at M = {none['width']}; its sampled κ₂ = {_pm(none['k2'], none['k2_sem'])} "
             f"puts the C = {config.outputs} mean-gradient outliers at {_fmt(none['outlier'] + 1, 3)} times the "
             f"bulk scale α(κ₁−κ₂)M/T."]
    removed, kept = [], []
    for placement, f in facts.items():
        if placement == "none":
            continue
        label = placement_label(placement, config.depth)
        # per output, the Gram block is about (alpha M/T)((kappa_1 - kappa_2) I + kappa_2 11^T): any
        # kappa_2 > 0 separates an outlier at 1 + T kappa_2/(kappa_1 - kappa_2) times the bulk. Call it
        # present when the sampled kappa_2 is positive by more than 3 standard errors.
        has_outliers = f["k2"] > 3 * (f["k2_sem"] if math.isfinite(f["k2_sem"]) else 0)
        text = f"{label} ({_times(f['factor'])}, κ₂ = {_pm(f['k2'], f['k2_sem'])}"
        text += f", outliers at {_fmt(f['outlier'] + 1, 3)}× the bulk)" if has_outliers else ")"
        (kept if has_outliers else removed).append(text)
    if removed:
        parts.append("The outliers are removed (sampled κ₂ not positive) by " + "; ".join(removed) + ".")
    if kept:
        parts.append("They remain (κ₂ > 0 by more than 3 standard errors) with " + "; ".join(kept) + ".")
    exps = {p: f["exponent"] for p, f in facts.items() if p != "none" and math.isfinite(f["exponent"])}
    if exps and all(e > 2 / 3 for e in exps.values()):
        parts.append(f"At fixed T every placement still grows like M (exponents {min(exps.values()):.2f} to "
                     f"{max(exps.values()):.2f}): removing the outliers lowers λ_max by a factor but does not "
                     "bound it while T stays fixed; what happens when T grows with M is the next finding.")
    elif exps:
        parts.append("At fixed T the fitted exponents of λ_max in M are " + ", ".join(
            f"{e:.2f} ({placement_label(p, config.depth)})" for p, e in exps.items()) + ".")
    return " ".join(parts)


def _times(factor: float) -> str:
    """'λ_max 3.6× smaller' / 'λ_max 1.07× larger' for a ratio none / placement."""
    if not math.isfinite(factor):
        return "λ_max not compared"
    if factor >= 1:
        return f"λ_max {_fmt(factor, 3)}× smaller"
    return f"λ_max {_fmt(1 / factor, 3)}× larger"


def _render_ratio(config: Config, results: Results, out: Path) -> list[Finding]:
    acts = list(config.ratio_activations)
    fig, axes = _figure(len(acts))
    placements = [_resolve_placement(p, config.depth) for p in config.ratio_placements]
    facts: dict[str, dict] = {}
    lines = ["| activation | placement | M | T | λ_max theory | λ_max sampled | exponent in M | "
             "growth over the range |", "|---|---|---|---|---|---|---|---|"]
    for ax, act in zip(axes, acts):
        for index, placement in enumerate(placements):
            series = results.series("ratio", act, placement)
            if not series:
                continue
            _plot_series(ax, series, "lambda_max", _color(placement),
                         placement_label(placement, config.depth) if ax is axes[0] else None,
                         _shift(index, len(placements)))
            means = [p.mean("lambda_max") for p in series]
            exponent = _series_slope(series)
            growth = means[-1] / means[0] if means[0] else math.nan
            facts[(act, placement)] = dict(exponent=exponent, growth=growth, first=series[0], last=series[-1])
            for p in series:
                lines.append(f"| {act} | {placement_label(placement, config.depth)} | {p.width} | {p.samples} | "
                             f"{_fmt(_finite(p.theory.get('lambda_max')) or math.nan)}"
                             f"{' (lower bound)' if p.theory.get('lambda_max_kind') == 'bound' else ''} | "
                             f"{_pm(p.mean('lambda_max'), p.sem('lambda_max'))} | {_fmt(exponent, 3)} | "
                             f"{_fmt(growth, 3)} |")
        widths = np.array(sorted({w for w in config.ratio_widths}), dtype=float)
        none = results.series("ratio", act, "none")
        if none:
            ref = none[0].mean("lambda_max") / none[0].width
            ax.plot(widths, ref * widths, ":", color="grey", lw=1, label="∝ M" if ax is axes[0] else None)
        _log_axes(ax, config.ratio_widths)
        ax.set_xlabel(f"width M (batch T = M/{config.width_per_sample})")
        ax.set_ylabel("λ_max (largest eigenvalue)")
        ax.set_title(f"{act}, L={config.depth}, C={config.outputs}, fixed M/T = {config.width_per_sample}", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
    _style_legend(fig, axes, ncol=4)
    figures = _save(fig, out, "ratio")
    return [Finding(f"Sharpness when the batch grows with the width (M/T = {config.width_per_sample})",
                    _ratio_reading(config, facts), "\n".join(lines), figures)]


def _ratio_reading(config: Config, facts: dict) -> str:
    parts = []
    for act in config.ratio_activations:
        rows = {p: f for (a, p), f in facts.items() if a == act}
        if not rows:
            continue
        sentences = []
        for placement, f in rows.items():
            first, last = f["first"], f["last"]
            sentences.append(f"{placement_label(placement, config.depth)}: λ_max {_growth(f['exponent'])}, from "
                             f"{_fmt(first.mean('lambda_max'))} at (M, T) = ({first.width}, {first.samples}) to "
                             f"{_fmt(last.mean('lambda_max'))} at ({last.width}, {last.samples}), "
                             f"a factor {_fmt(f['growth'], 3)} over a {last.width // first.width}× range of M")
        bounded = [placement_label(p, config.depth) for p, f in rows.items() if f["exponent"] < 1 / 3]
        growing = [placement_label(p, config.depth) for p, f in rows.items() if f["exponent"] > 2 / 3]
        text = f"With {act} and T = M/{config.width_per_sample}: " + "; ".join(sentences) + "."
        if bounded and growing:
            text += (f" So with T growing in proportion to M, {' and '.join(bounded)} "
                     f"{'keeps' if len(bounded) == 1 else 'keep'} λ_max bounded while {' and '.join(growing)} "
                     f"still {'grows' if len(growing) == 1 else 'grow'} like M: the sharpness is removed under "
                     "the condition that M/T stays bounded.")
        elif bounded:
            text += f" λ_max stays bounded for {', '.join(bounded)}."
        parts.append(text)
    return " ".join(parts) if parts else "No points computed."


def _agreement_finding(config: Config, results: Results) -> Finding:
    lines = ["| activation | placement | M | T | statistic | theory | sampled | relative error | in s.e. |",
             "|---|---|---|---|---|---|---|---|---|"]
    errors: dict[str, list] = defaultdict(list)
    bounded: list = []
    for act in config.activations:
        for placement in [_resolve_placement(p, config.depth) for p in config.placements]:
            series = results.series("width", act, placement)
            if not series:
                continue
            p = series[-1]
            for key in _STATS:
                theory = _finite(p.theory.get(key))
                mean, sem = p.mean(key), p.sem(key)
                if theory is None or not math.isfinite(mean):
                    continue
                rel = (mean - theory) / theory
                z = (mean - theory) / sem if sem and math.isfinite(sem) else math.nan
                bound = key == "lambda_max" and p.theory.get("lambda_max_kind") == "bound"
                if not bound:
                    errors[key].append((abs(rel), act, placement))
                else:
                    lo, hi = _finite(p.theory.get("lambda_max_lo")), _finite(p.theory.get("lambda_max_hi"))
                    inside = lo is not None and hi is not None and lo <= mean <= hi
                    bounded.append((inside, act, placement))
                lines.append(f"| {act} | {placement_label(placement, config.depth)} | {p.width} | {p.samples} | "
                             f"{key}{' (lower bound)' if bound else ''} | {_fmt(theory)} | {_pm(mean, sem)} | "
                             f"{rel:+.1%} | {_fmt(z, 2)} |")
    parts = []
    for key in _STATS:
        if errors[key]:
            worst = max(errors[key])
            median = float(np.median([e[0] for e in errors[key]]))
            parts.append(f"{key}: median |relative error| {median:.1%} over {len(errors[key])} networks, largest "
                         f"{worst[0]:.1%} ({worst[1]}, {placement_label(worst[2], config.depth)})")
    reading = ("At the largest width of the width stage, theory (finite-width form) against sampled means: "
               + "; ".join(parts) + ". Rows marked 'lower bound' are cases where the theory only bounds λ_max; "
               "they are not counted above.") if parts else "No points computed."
    if bounded:
        outside = [f"{a}, {placement_label(p, config.depth)}" for ok, a, p in bounded if not ok]
        reading += (f" In {len(bounded) - len(outside)} of {len(bounded)} bounded cases the sampled mean λ_max "
                    "lies within the theory's bounds" + (f"; outside: {'; '.join(outside)}." if outside else "."))
    return Finding("Theory against samples", reading, "\n".join(lines))


# -- the learning-rate stage (issue 8) --------------------------------------------------------------------------


def _training():
    try:
        from ..sampled import training
    except ImportError:
        return None
    return training if hasattr(training, "learning_rate_grid") else None


def _lr_available() -> str | None:
    return None if _training() is not None else "meanfield.sampled.training.learning_rate_grid is not available"


def lr_point(spec: tuple, label: str, width: int, samples: int, etas: tuple, steps: int, seed: int) -> dict:
    """One (network, width, seed) column of the learning-rate grid: losses at every eta of ``etas``."""
    grid = _training().learning_rate_grid({label: _network(spec)}, widths=(width,), etas=etas, samples=samples,
                                          steps=steps, seeds=(seed,))
    bounds = grid.eta_bounds[0, 0] if grid.eta_bounds is not None else (math.nan, math.nan)
    return {"eta": [float(e) for e in grid.etas],
            "initial_loss": [_finite(v) for v in grid.initial_loss[0, 0, :, 0]],
            # None = diverged (the grid stores inf, which JSON cannot hold)
            "final_loss": [_finite(v) for v in grid.final_loss[0, 0, :, 0]],
            "peak_loss": [_finite(v) for v in grid.peak_loss[0, 0, :, 0]],
            "lambda_sampled": _finite(grid.lambda_sampled[0, 0, 0]),
            "eta_predicted": _finite(grid.eta_predicted[0, 0]), "eta_leading": _finite(grid.eta_leading[0, 0]),
            "predicted_kind": grid.predicted_kind[0][0] if grid.predicted_kind else "prediction",
            "eta_bound_lo": _finite(bounds[0]), "eta_bound_hi": _finite(bounds[1])}


def _lr_etas(config: Config) -> tuple[float, ...]:
    """One absolute step grid for every network and width: from a quarter of the smallest predicted
    eta_max to ``lr_eta_span`` times the largest, log-spaced (rounded to 6 digits for stable cache keys)."""
    training = _training()
    predicted = [training.max_learning_rate(network_for(config, config.lr_activation, placement), width,
                                            config.lr_samples).eta_max
                 for placement in config.lr_placements for width in config.lr_widths]
    lo, hi = min(predicted) / 4, max(predicted) * config.lr_eta_span
    return tuple(float(f"{e:.6g}") for e in np.geomspace(lo, hi, config.lr_etas))


def _lr_tasks(config: Config) -> list[Task]:
    etas = _lr_etas(config)
    tasks = []
    for placement in config.lr_placements:
        net = network_for(config, config.lr_activation, placement)
        spec = _spec(net)
        resolved = _resolve_placement(placement, config.depth)
        for width in config.lr_widths:
            for seed in range(config.lr_seeds):
                tasks.append(Task(
                    f"lr|{_described(net)}|M={width}|T={config.lr_samples}|steps={config.lr_steps}|"
                    f"etas={','.join(map(repr, etas))}|seed={seed}",
                    "runs.experiments:lr_point",
                    (("spec", spec), ("label", placement_label(resolved, config.depth)), ("width", width),
                     ("samples", config.lr_samples), ("etas", etas), ("steps", config.lr_steps), ("seed", seed)),
                    (("stage", "learning_rate"), ("activation", config.lr_activation), ("placement", resolved),
                     ("width", width), ("samples", config.lr_samples), ("seed", seed), ("kind", "training")),
                    cost=width * width * config.lr_samples * config.lr_steps * len(etas) * 6e-9))
    return tasks


def _lr_grid(config: Config, results: Results):
    """Rebuild the training helper's LearningRateGrid from the cached columns (None if incomplete)."""
    training = _training()
    rows = {(r["placement"], r["width"], r["seed"]): r for r in results.rows
            if r.get("stage") == "learning_rate" and r.get("kind") == "training"}
    placements = [_resolve_placement(p, config.depth) for p in config.lr_placements]
    widths, seeds = tuple(config.lr_widths), tuple(range(config.lr_seeds))
    if any((p, w, s) not in rows for p in placements for w in widths for s in seeds):
        return None
    etas = tuple(rows[(placements[0], widths[0], 0)]["eta"])
    shape = (len(placements), len(widths), len(etas), len(seeds))
    arrays = {k: np.empty(shape) for k in ("initial_loss", "final_loss", "peak_loss")}
    lam = np.empty((len(placements), len(widths), len(seeds)))
    pred, lead, bounds = np.empty(shape[:2]), np.empty(shape[:2]), np.empty(shape[:2] + (2,))
    kinds = []
    for i, p in enumerate(placements):
        kinds.append([])
        for j, w in enumerate(widths):
            for k, s in enumerate(seeds):
                r = rows[(p, w, s)]
                for key, array in arrays.items():
                    array[i, j, :, k] = [math.inf if v is None else v for v in r[key]]
                lam[i, j, k] = r["lambda_sampled"]
            r = rows[(p, w, 0)]
            pred[i, j], lead[i, j] = r["eta_predicted"], r["eta_leading"]
            bounds[i, j] = [r["eta_bound_lo"] if r["eta_bound_lo"] is not None else math.inf,
                            r["eta_bound_hi"] if r["eta_bound_hi"] is not None else math.inf]
            kinds[-1].append(r["predicted_kind"])
    return training.LearningRateGrid(
        labels=tuple(placement_label(p, config.depth) for p in placements),
        networks=tuple(network_for(config, config.lr_activation, p) for p in placements),
        widths=widths, etas=etas, seeds=seeds, samples=config.lr_samples, steps=config.lr_steps,
        setup="random_targets", initial_loss=arrays["initial_loss"], final_loss=arrays["final_loss"],
        peak_loss=arrays["peak_loss"], lambda_sampled=lam, eta_predicted=pred, eta_leading=lead,
        predicted_kind=tuple(tuple(k) for k in kinds), eta_bounds=bounds)


def _render_lr(config: Config, results: Results, out: Path) -> list[Finding]:
    grid = _lr_grid(config, results)
    if grid is None:
        return []
    fig = _training().plot_learning_rate_grid(grid)
    fig.suptitle(f"{config.lr_activation}, L={config.depth}, C={config.outputs}, T={config.lr_samples}: "
                 f"loss after {config.lr_steps} full-batch gradient steps", fontsize=9)
    figures = _save(fig, out, "learning_rate")
    trainable, stable = grid.largest_trainable(), grid.largest_stable()
    lines = ["| network | M | predicted η_max = 2/λ_max | 2/λ_max sampled | largest η that trained | "
             "largest η that did not diverge |", "|---|---|---|---|---|---|"]
    for i, label in enumerate(grid.labels):
        for j, width in enumerate(grid.widths):
            kind = grid.predicted_kind[i][j] if grid.predicted_kind else "prediction"
            lines.append(f"| {label} | {width} | {_fmt(grid.eta_predicted[i, j])}"
                         f"{' (bound)' if kind != 'prediction' else ''} | {_fmt(grid.eta_sampled[i, j])} | "
                         f"{_fmt(trainable[i, j])} | {_fmt(stable[i, j])} |")
    return [Finding(f"Learning rate: loss after {config.lr_steps} steps over (M, η)", _lr_reading(grid),
                    "\n".join(lines), figures)]


def _lr_reading(grid) -> str:
    """How much larger a step each normalization allows, predicted and observed, and whether gradient
    descent trained up to the predicted boundary (all computed from the grid)."""
    parts = []
    trainable = grid.largest_trainable()
    top = max(grid.etas)
    for i, label in enumerate(grid.labels):
        ratios = trainable[i] / grid.eta_sampled[i]
        censored = bool(np.any(trainable[i] >= top))
        parts.append(f"{label}: the largest step that trained is {'at least ' if censored else ''}"
                     f"{_fmt(min(ratios), 3)}–{_fmt(max(ratios), 3)} times the drawn networks' 2/λ_max"
                     + (f" (it is the top of the grid, η = {_fmt(top, 3)}, at some width)" if censored else "")
                     + f"; the grid resolves {_fmt(grid.etas[1] / grid.etas[0], 3)}× steps")
    for i in range(1, len(grid.labels)):
        gain = grid.gain(i, 0)
        parts.append(f"{grid.labels[i]} against {grid.labels[0]}: predicted η_max larger by "
                     f"{_fmt(min(gain['predicted']), 3)}–{_fmt(max(gain['predicted']), 3)}×, sampled "
                     f"2/λ_max by {_fmt(min(gain['sampled']), 3)}–{_fmt(max(gain['sampled']), 3)}×, largest "
                     f"trained step by {_fmt(min(gain['largest_trainable']), 3)}–"
                     f"{_fmt(max(gain['largest_trainable']), 3)}× over M = {grid.widths[0]}..{grid.widths[-1]}")
    return "; ".join(parts) + "." if parts else ""


# -- the random-matrix stage (issue 9) -------------------------------------------------------------------------

_RMT_MAX_CT = 2048  # largest C T of a sampled cell: the exact CT x CT Gram and its top eigenvalue stay cheap
_RMT_WITHIN = 0.05  # the goal: within 5% of the sampled mean
_RMT_ROWS = 1  # format of rmt_point's rows: raise it when they change, so that old cached rows are not read


def _rmt_min_samples(net) -> int:
    """Smallest T the random-matrix prediction accepts for ``net``: T >= 4 and what the norms need; with a
    full batch norm on the output T > 5 (the chi-square moments of its scale diverge below)."""
    from ..spec.network import BatchNorm

    last = net.norm_at(net.depth)
    full_bn_out = isinstance(last, BatchNorm) and not last.center_only
    return max(4, net.min_samples(), 6 if full_bn_out else 0)


def _rmt_cells(config: Config, net) -> tuple[list[tuple[int, int]], list[str]]:
    """The (M, T) cells of one network, T = round(ratio M), and why any (M, ratio) was left out."""
    cells, skipped = [], []
    least = _rmt_min_samples(net)
    for width in config.rmt_widths:
        for ratio in config.rmt_ratios:
            samples = int(round(ratio * width))
            if samples * net.outputs > _RMT_MAX_CT:
                skipped.append(f"M = {width}, T/M = {ratio:g} (C·T = {samples * net.outputs} > {_RMT_MAX_CT})")
            elif samples < least:
                skipped.append(f"M = {width}, T/M = {ratio:g} (T = {samples} < {least}, "
                               "the fewest this network allows)")
            elif (width, samples) not in cells:
                cells.append((width, samples))
    return sorted(cells), skipped


def _rmt_model_digest() -> str:
    """A digest of the random-matrix model's source (meanfield.finite.rmt and what meanfield.finite.fourpoint and
    meanfield.finite.population derive for it): the model is semi-empirical and still changing, so a changed model must not reuse
    cached predictions (the sampled points do not depend on it)."""
    import hashlib

    from ..finite import fourpoint, population, rmt

    try:
        text = b"".join(Path(module.__file__).read_bytes() for module in (rmt, fourpoint, population))
    except OSError:  # e.g. a zipped install: fall back to the package version
        from .. import __version__

        text = __version__.encode()
    return hashlib.sha1(text).hexdigest()[:10]


def _rmt_theory_cost(net, cells: Sequence[tuple[int, int]], reference_widths: Sequence[int]) -> float:
    """Relative cost of :func:`rmt_point`, in the units of the sampled points: the reference draws of
    ``measure_fluctuations`` (seeds x reference widths x reference ratios, exact Grams and their spectra)
    dominate; each cell adds a prediction of about a tenth of a second."""
    from ..finite import rmt

    C = net.outputs
    seeds = max(6, -(-24 // C))
    cost = 0.0
    for width in (reference_widths[0], reference_widths[-1]):
        for ratio in rmt.REFERENCE_RATIOS:
            samples = max(min(int(round(ratio * width)), 1024 // C), 8)
            # the exact Gram, then full eigen-decompositions of its blocks and of the whole centred Gram:
            # about five sampled points' worth (calibrated on measured times: ~6 s per C = 4 network at the
            # reference widths 64, 128, against ~2.8 s for the largest sampled point, M = 256, T = 512)
            cost += seeds * 5.0 * _sample_cost(C, width, samples, False)
    return cost + 5.0 * len(cells)  # a prediction per cell: ~0.1 s


def rmt_point(spec: tuple, cells: tuple, reference_widths: tuple = (64, 128)) -> dict:
    """Per cell (M, T): leading-order, finite-width mean-field and random-matrix lambda_max and s.

    One call per network, because the random-matrix model first measures its fluctuation coefficients on
    sampled reference networks (:func:`meanfield.finite.rmt.measure_fluctuations`, seconds per network, cached
    only within a process). With the model's own reference widths the prediction is exactly
    ``predict(net, M, T, finite_width="rmt")``; with other reference widths it is
    ``rmt.finite_width_stats(net, M, T, predict(net, M, T), fluctuations=measure_fluctuations(net, widths))``.
    The leading value is what :func:`meanfield.checking.comparison.rmt_records` calls ``lead``: the leading-order
    lambda_max; with batch norm on the output, where leading order only bounds it, the bulk scale
    gram_diag - gram_offdiag (centre only) or the finite-width mean-field value (full batch norm).

    Args:
        spec: the network (``_spec``).
        cells: ((M, T), ...).
        reference_widths: the two widths of the model's reference draws.

    Returns:
        dict with ``rmt_cells`` (one dict per cell: width, samples, lead, lead_kind, meanfield, meanfield_kind, rmt,
        s_lead, s_meanfield, s_rmt, notes, error), ``rmt_reference`` (widths, T/M ratios and seeds of the
        reference draws) and ``rmt_method``. A cell the model cannot predict has rmt None and the reason
        in ``error``; no NaN is returned.

    Example:
        >>> from meanfield import BatchNorm, Network
        >>> net = Network(3, "relu", 2.0, 0.1, outputs=2, norms=[BatchNorm("last", center_only=True)])
        >>> out = rmt_point(_spec(net), ((16, 8),), reference_widths=(16, 32))
        >>> cell = out["rmt_cells"][0]
        >>> cell["rmt"] > cell["lead"] > 0, out["rmt_reference"]["widths"]
        (True, [16, 32])
    """
    from ..theory.fisher import predict
    from ..finite import rmt
    from ..spec.network import BatchNorm

    net = _network(spec)
    reference_widths = tuple(int(w) for w in reference_widths)
    native = reference_widths == tuple(rmt.REFERENCE_WIDTHS)
    fluctuations = rmt.measure_fluctuations(net) if native else rmt.measure_fluctuations(net, widths=reference_widths)
    last = net.norm_at(net.depth)
    rows = []
    for width, samples in cells:
        width, samples = int(width), int(samples)
        base = predict(net, width, samples)
        lead, lead_kind = base.leading.lambda_max, "leading lambda_max"
        if isinstance(last, BatchNorm) and last.center_only:
            lead, lead_kind = base.leading.gram_diag - base.leading.gram_offdiag, "leading bulk scale"
        elif isinstance(last, BatchNorm):
            lead, lead_kind = base.lambda_max, "finite-width lambda_max"
        row = dict(width=width, samples=samples, lead=_finite(lead), lead_kind=lead_kind,
                   meanfield=_finite(base.lambda_max),
                   meanfield_kind=getattr(base, "lambda_max_kind", "prediction"), s_lead=_finite(base.leading.s),
                   s_meanfield=_finite(base.s), rmt=None, s_rmt=None, notes=[], error=None)
        try:
            if native:
                stats = predict(net, width, samples, finite_width="rmt")
                lam, s = stats.lambda_max, stats.s
                notes = [n for n in stats.notes if n not in base.notes]
            else:
                extra = rmt.finite_width_stats(net, width, samples, base, fluctuations=fluctuations)
                lam, s, notes = extra["lambda_max"], extra["s"], list(extra.get("notes", ()))
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
            # one cell the model cannot handle must not cost the other cells (and the report says so)
            row["error"] = f"{type(err).__name__}: {err}"
        else:
            # keep the cell's own notes (a coefficient floored at 0, ...), not the ones every cell carries
            generic = ("finite_width='rmt'", "fluctuation coefficients measured")
            row.update(rmt=_finite(lam), s_rmt=_finite(s),
                       notes=[str(n) for n in notes if not str(n).startswith(generic)])
        rows.append(row)
    widths, ratios, seeds = fluctuations.reference
    return {"rmt_cells": rows, "rmt_method": "rmt-semi-empirical",
            "rmt_reference": {"widths": [int(w) for w in widths], "ratios": [float(r) for r in ratios],
                              "seeds": [int(s) for s in seeds]}}


def _rmt_networks(config: Config) -> list[tuple[str, str, Any]]:
    """(activation, resolved placement, network) of the stage, in config order, without repeats."""
    nets = {}
    for act in config.rmt_activations:
        for placement in config.rmt_placements:
            resolved = _resolve_placement(placement, config.depth)
            nets.setdefault((act, resolved), network_for(config, act, placement))
    return [(act, resolved, net) for (act, resolved), net in nets.items()]


def _rmt_tasks(config: Config) -> list[Task]:
    tasks = []
    digest = _rmt_model_digest()
    reference = tuple(config.rmt_reference_widths)
    for act, resolved, net in _rmt_networks(config):
        cells, _ = _rmt_cells(config, net)
        if not cells:
            continue
        base = (("stage", "rmt"), ("activation", act), ("placement", resolved))
        tasks.append(Task(
            f"rmt|{_described(net)}|cells={';'.join(f'{w}x{t}' for w, t in cells)}|"
            f"reference={','.join(map(str, reference))}|model={digest}|rows={_RMT_ROWS}",
            "runs.experiments:rmt_point", (("spec", _spec(net)), ("cells", tuple(cells)), ("reference_widths", reference)),
            base + (("width", None), ("samples", None), ("seed", None), ("kind", "rmt")),
            cost=_rmt_theory_cost(net, cells, reference)))
        for width, samples in cells:
            labels = base + (("width", width), ("samples", samples))
            tasks += [_sample_task(labels, net, width, samples, seed, resolved != "none")
                      for seed in range(config.rmt_seeds)]
    return tasks


def _rmt_records(config: Config, results: Results) -> tuple[list[dict], dict, list[str]]:
    """The cached rows as :func:`meanfield.checking.comparison.rmt_records` records (plus activation, placement and the
    finite-width mean-field value), the model's reference draws, and cells without an RMT value."""
    theory = {(r["activation"], r["placement"]): r for r in results.rows
              if r.get("stage") == "rmt" and r.get("kind") == "rmt"}
    records, reference, failed = [], {}, []
    for act, resolved, net in _rmt_networks(config):
        row = theory.get((act, resolved))
        if row is None:
            continue
        reference = row.get("rmt_reference") or reference
        label = f"{act}, {placement_label(resolved, config.depth)}"
        for cell in row["rmt_cells"]:
            M, T = cell["width"], cell["samples"]
            point = results.points.get(("rmt", act, resolved, M, T))
            if point is None or not point.seeds:
                continue
            if cell["rmt"] is None or cell["lead"] is None or cell["meanfield"] is None:
                failed.append(f"{label}, M = {M}, T = {T}: {cell.get('error') or 'a prediction is not finite'}")
                continue
            lam, sem = point.mean("lambda_max"), point.sem("lambda_max")
            records.append(dict(
                network=net.describe(), label=label, activation=act, placement=resolved, width=M, samples=T,
                seeds=len(point.seeds), lead=cell["lead"], lead_kind=cell["lead_kind"],
                meanfield=cell["meanfield"],
                meanfield_kind=cell["meanfield_kind"], rmt=cell["rmt"], sampled=lam, sem=sem,
                s_lead=cell["s_lead"], s_meanfield=cell["s_meanfield"], s_rmt=cell["s_rmt"],
                s_sampled=point.mean("s"), s_sem=point.sem("s"),
                err_lead=cell["lead"] / lam - 1.0, err_meanfield=cell["meanfield"] / lam - 1.0,
                err_rmt=cell["rmt"] / lam - 1.0, s_err_lead=cell["s_lead"] / point.mean("s") - 1.0,
                s_err_rmt=cell["s_rmt"] / point.mean("s") - 1.0 if cell["s_rmt"] is not None else math.nan,
                notes="; ".join(cell.get("notes") or ())))
    return records, reference, failed


def _render_rmt(config: Config, results: Results, out: Path) -> list[Finding]:
    from ..checking.comparison import plot_rmt_comparison

    records, reference, failed = _rmt_records(config, results)
    if not records:
        return []
    figures: list[str] = []
    # one figure per activation (a panel per network), through the model module's own plot, once per format
    for act in dict.fromkeys(r["activation"] for r in records):
        mine = [r for r in records if r["activation"] == act]
        for ext in ("png", "pdf"):
            plot_rmt_comparison(mine, out / f"rmt_{act}.{ext}")
            figures.append(f"rmt_{act}.{ext}")
    columns = ("activation", "placement", "network", "width", "samples", "seeds", "sampled", "sem", "lead",
               "lead_kind", "meanfield", "meanfield_kind", "rmt", "err_lead", "err_meanfield", "err_rmt",
               "s_sampled", "s_sem", "s_lead", "s_meanfield", "s_rmt", "s_err_lead", "s_err_rmt", "notes")
    with open(out / "rmt.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in records:
            writer.writerow([_csv_value(r[c]) for c in columns])
    figures.append("rmt.csv")
    lines = ["| network | M | T | T/M | λ_max sampled | leading | error | finite-width mean field | error | RMT | "
             "error | within 5%: leading / mean field / RMT |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        marks = " / ".join("yes" if abs(r[k]) <= _RMT_WITHIN else "no"
                           for k in ("err_lead", "err_meanfield", "err_rmt"))
        lines.append(f"| {r['label']} | {r['width']} | {r['samples']} | {r['samples'] / r['width']:.4g} | "
                     f"{_pm(r['sampled'], r['sem'])} | {_fmt(r['lead'])} | {r['err_lead']:+.1%} | "
                     f"{_fmt(r['meanfield'])}{' (bound)' if r['meanfield_kind'] == 'bound' else ''} | "
                     f"{r['err_meanfield']:+.1%} | {_fmt(r['rmt'])} | {r['err_rmt']:+.1%} | {marks} |")
    return [Finding("Beyond leading order: λ_max from the random-matrix model",
                    _rmt_reading(config, records, reference, failed), "\n".join(lines), tuple(figures))]


def _rmt_reading(config: Config, records: list[dict], reference: dict, failed: list[str]) -> str:
    """Counts within 5%, median |error| and the worst cell per method, computed from the records."""
    n = len(records)
    methods = (("leading order", "err_lead"), ("finite-width mean field", "err_meanfield"),
               ("the random-matrix model", "err_rmt"))
    ref_widths = reference.get("widths", list(config.rmt_reference_widths))
    ref_seeds = reference.get("seeds", [])
    sampled = range(config.rmt_seeds)
    disjoint = not set(ref_seeds) & set(sampled)
    from ..finite.rmt import MEAN_DRAWS, MEAN_SEED, REFERENCE_WIDTHS

    seeds_text = (f"seeds {min(ref_seeds)}–{max(ref_seeds)}, and {MEAN_SEED}–{MEAN_SEED + MEAN_DRAWS - 1} for the "
                  f"mean entries" if ref_seeds else "its reference seeds")

    native = tuple(ref_widths) == tuple(REFERENCE_WIDTHS)
    what = ("`predict(..., finite_width=\"rmt\")`" if native else
            f"the model of `meanfield.finite.rmt` with non-default reference widths (its default: "
            f"{' and '.join(map(str, REFERENCE_WIDTHS))})")
    parts = [f"The random-matrix prediction ({what}) is semi-empirical: its "
             f"fluctuation coefficients are measured on sampled networks at reference widths "
             f"{' and '.join(map(str, ref_widths))} ({seeds_text}, "
             + ("disjoint from" if disjoint else "OVERLAPPING") + f" the seeds 0–{config.rmt_seeds - 1} sampled "
             "here) and extrapolated as c + c′/M; wherever the network below the output is plain, the bulk's second "
             "moment, spike and diagonal part, the outlier variances and the entry variances that set s are derived "
             "(`meanfield.finite.fourpoint`), and so is the shape of the bulk's population spectrum (`meanfield.finite.population`)."]
    counts = []
    for name, key in methods:
        errors = [abs(r[key]) for r in records]
        within = sum(e <= _RMT_WITHIN for e in errors)
        counts.append(f"{name} {within} of {n} (median |error| {float(np.median(errors)):.1%})")
    parts.append(f"Against the sampled mean λ_max over {n} cells, within 5%: " + "; ".join(counts) + ".")
    kinds = {"leading bulk scale": "the leading-order bulk scale gram_diag − gram_offdiag",
             "finite-width lambda_max": "the finite-width mean-field λ_max"}
    other: dict[str, list] = defaultdict(list)
    for r in records:
        if r["lead_kind"] != "leading lambda_max" and r["label"] not in other[r["lead_kind"]]:
            other[r["lead_kind"]].append(r["label"])
    if other:
        parts.append("With batch norm on the output leading order only bounds λ_max, so the 'leading' column "
                     "holds what `meanfield.checking.comparison.rmt_records` compares: " + "; ".join(
                         f"{kinds.get(kind, kind)} for {' and '.join(labels)}" for kind, labels in other.items()) + ".")
    for name, key in (methods[0], methods[2]):
        worst = max(records, key=lambda r: abs(r[key]))
        parts.append(f"Worst cell for {name}: {worst['label']} at M = {worst['width']}, T = {worst['samples']} "
                     f"({worst[key]:+.1%}; sampled {_pm(worst['sampled'], worst['sem'])}, predicted "
                     f"{_fmt(worst['lead' if key == 'err_lead' else 'rmt'])}).")
    noisy = sum(r["sem"] > _RMT_WITHIN / 2 * r["sampled"] for r in records if math.isfinite(r["sem"]))
    if noisy:
        parts.append(f"In {noisy} of {n} cells the standard error of the sampled mean alone exceeds 2.5%, so 5% "
                     "is not resolved there.")
    widths = sorted({r["width"] for r in records})
    if len(widths) > 1:
        per = []
        for width in widths:
            errors = [r["err_rmt"] for r in records if r["width"] == width]
            per.append(f"M = {width}: {sum(abs(e) <= _RMT_WITHIN for e in errors)} of {len(errors)} within 5%, "
                       f"median error {float(np.median(errors)):+.1%}")
        parts.append("The random-matrix model by width: " + "; ".join(per) + ".")
    s_rmt = [abs(r["s_err_rmt"]) for r in records if math.isfinite(r["s_err_rmt"])]
    if s_rmt:
        parts.append(f"For s, the median |error| is {float(np.median([abs(r['s_err_lead']) for r in records])):.1%} "
                     f"at leading order and {float(np.median(s_rmt)):.1%} for the random-matrix model.")
    below = sorted({r["width"] for r in records if r["width"] < min(ref_widths)})
    if below:
        parts.append(f"At M = {', '.join(map(str, below))} (below the reference widths) the coefficients are "
                     "extrapolated, not interpolated.")
    flagged = sum(1 for r in records if r["notes"])
    if flagged:
        first = next(r for r in records if r["notes"])
        parts.append(f"In {flagged} of {n} cells the model adds a note of its own, e.g. at {first['label']}, "
                     f"M = {first['width']}, T = {first['samples']}: “{first['notes'].split('; ')[0]}” (all notes "
                     "are in `rmt.csv`).")
    skipped = [s for _, _, net in _rmt_networks(config) for s in _rmt_cells(config, net)[1]]
    if skipped:
        parts.append("Not computed: " + "; ".join(dict.fromkeys(skipped)) + ".")
    if failed:
        parts.append("No random-matrix value: " + "; ".join(failed) + ".")
    return " ".join(parts)


# -- registry --------------------------------------------------------------------------------------------------

register_stage(Stage("width", _width_tasks, _render_width))
register_stage(Stage("ratio", _ratio_tasks, _render_ratio))
register_stage(Stage("learning_rate", _lr_tasks, _render_lr, _lr_available))
register_stage(Stage("rmt", _rmt_tasks, _render_rmt))


# -- the run ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReproduceResult:
    """What a run wrote: the folder, the files, how many points were computed or reused, the time."""

    out: Path
    files: tuple[str, ...]
    computed: int
    reused: int
    seconds: float
    skipped: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()

    def summary(self) -> str:
        lines = [f"meanfield reproduce: {self.computed} points computed, {self.reused} reused from the cache, "
                 f"{self.seconds:.1f} s", f"  wrote into {self.out}/:"]
        lines += [f"    {name}" for name in self.files]
        lines += [f"  skipped stage {name}" for name in self.skipped]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_markdown_(self) -> str:
        """In Jupyter: the report itself."""
        path = self.out / "report.md"
        return path.read_text(encoding="utf-8") if path.exists() else self.summary()


def _lock(out: Path):
    path = out / ".lock"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and _alive(pid):
            raise InvalidArgument("out", str(out), "a folder that no other reproduce run is writing to",
                                  f"process {pid} holds {path}") from None
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_tasks(tasks: list[Task], store: Store, processes: int, progress: bool) -> int:
    """Compute the tasks not in the store, biggest first, appending each as it finishes."""
    from tqdm.auto import tqdm

    # theory first (cheap, and a network the theory rejects fails before any sampling), then the
    # biggest sampling tasks first so that the last ones to finish are small
    todo = sorted((t for t in tasks if t.key not in store), key=lambda t: (t.function != "runs.experiments:theory_point",
                                                                          -t.cost))
    if not todo:
        return 0
    bar = tqdm(total=len(todo), desc="reproduce", unit="pt", disable=not progress, smoothing=0.05)
    labels = {t.key: dict(t.labels) for t in todo}
    try:
        if processes <= 1:
            for task in todo:
                key, values, seconds = _call(task)
                store.add(key, values, labels[key], seconds)
                bar.update()
        else:
            _run_parallel(todo, store, labels, processes, bar)
    finally:
        bar.close()
    return len(todo)


def _run_parallel(todo: list[Task], store: Store, labels: dict, processes: int, bar) -> None:
    import concurrent.futures as cf
    import multiprocessing

    # One BLAS thread per worker: the workers already fill the cores, and oversubscribed BLAS threads
    # slow small matrix products down. Children read these variables when they start.
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: "1" for k in _THREAD_VARIABLES})
    try:
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_worker_init) as pool:
            futures = {pool.submit(_call, task): task for task in todo}
            try:
                for future in cf.as_completed(futures):
                    key, values, seconds = future.result()
                    store.add(key, values, labels[key], seconds)
                    bar.update()
            except BaseException:
                # Ctrl-C (or a failed task): drop the queue; workers finish the task in hand and exit.
                # Everything finished so far is already in the cache.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _worker_init() -> None:
    """Workers ignore Ctrl-C: the main process handles it (stops handing out work, keeps the cache)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def reproduce(config: Config | None = None, out: str | os.PathLike = "meanfield-results", *,
              processes: int | None = None, fresh: bool = False, progress: bool = True) -> ReproduceResult:
    """Run the stages of ``config`` into ``out``: cache, CSV files, figures (PNG and PDF), report.md.

    Args:
        config: settings (:func:`load_config`); default :class:`Config`().
        out: output folder, created if missing; points already cached there are reused.
        processes: worker processes for the sampled points (default 2; 1 runs in this process).
        fresh: discard the cache in ``out`` first.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`ReproduceResult` (``.summary()`` prints what was written).

    Example:
        >>> cfg = load_config(None, quick=True, widths=(32, 64), seeds=2, stages=("width",),
        ...                   activations=("relu",), placements=("none", "batch:last"))
        >>> reproduce(cfg, out="/tmp/mf-doc", processes=1, progress=False).files  # doctest: +SKIP
        ('cache.jsonl', 'points.csv', 'summary.csv', 'width_relu.png', 'width_relu.pdf', 'report.md')
    """
    config = Config() if config is None else config
    processes = 2 if processes is None else check_int("processes", processes, minimum=1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lock = _lock(out)
    try:
        cache = out / "cache.jsonl"
        if fresh and cache.exists():
            cache.unlink()
        store = Store(cache)
        stages, skipped = [], []
        for name in config.stages:
            stage = STAGES[name]
            reason = stage.available()
            if reason is None:
                stages.append(stage)
            else:
                skipped.append(f"{name} ({reason})")
        tasks = [task for stage in stages for task in stage.tasks(config)]
        unique = list({task.key: task for task in tasks}.values())
        computed = _run_tasks(unique, store, processes, progress)
        results = Results(tasks, store)
        findings: list[Finding] = []
        files = ["cache.jsonl"]
        files += _write_csv(results, out)
        for stage in stages:
            new = stage.render(config, results, out)
            findings += new
            if stage.name == "width" and new:
                findings.append(_agreement_finding(config, results))
            files += [name for f in new for name in f.figures]
        seconds = time.perf_counter() - start
        _write_report(out / "report.md", config, findings, skipped, computed, len(unique) - computed, seconds)
        files.append("report.md")
        return ReproduceResult(out, tuple(files), computed, len(unique) - computed, seconds, tuple(skipped),
                               tuple(findings))
    finally:
        lock.unlink(missing_ok=True)


# -- outputs ---------------------------------------------------------------------------------------------------


def _write_csv(results: Results, out: Path) -> list[str]:
    """points.csv: every cached number (one row per theory or sampled point); summary.csv: aggregates."""
    label_cols = ["stage", "activation", "placement", "width", "samples", "seed", "kind"]
    value_cols = sorted({k for row in results.rows for k in row if k not in label_cols})
    with open(out / "points.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(label_cols + value_cols)
        for row in sorted(results.rows, key=lambda r: tuple(str(r.get(c)) for c in label_cols)):
            writer.writerow([_csv_value(row.get(c)) for c in label_cols + value_cols])
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        stats = ("m", "s", "lambda_max", "kappa1", "kappa2")
        writer.writerow(["stage", "activation", "placement", "width", "samples", "seeds", "lambda_max_kind"]
                        + [f"{k}_{part}" for k in stats for part in ("theory", "mean", "sem")]
                        + [f"leading_{k}" for k in _STATS])
        for ident in sorted(results.points, key=lambda i: tuple(map(str, i))):
            p = results.points[ident]
            writer.writerow([p.stage, p.activation, p.placement, p.width, p.samples, len(p.seeds),
                             p.theory.get("lambda_max_kind", "")]
                            + [_csv_value(v) for k in stats for v in (p.theory.get(k), p.mean(k), p.sem(k))]
                            + [_csv_value(p.theory.get(f"leading_{k}")) for k in _STATS])
    return ["points.csv", "summary.csv"]


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return value


def _write_report(path: Path, config: Config, findings: list[Finding], skipped: list[str], computed: int,
                  reused: int, seconds: float) -> None:
    from .. import __version__

    lines = ["# meanfield reproduce: pathological sharpness and normalization", "",
             f"meanfield {__version__}. This run computed {computed} points and reused {reused} from the cache "
             f"({seconds:.0f} s). Every number is in `points.csv` (one row per theory or sampled network) and "
             "`summary.csv` (means, standard errors, theory); the readings below are computed from them.", "",
             "Networks: fully connected, "
             f"depth L = {config.depth}, C = {config.outputs} outputs, inputs iid N(0, 1); "
             + ", ".join(f"{a}: σ_w² = {config.sigma('sigma_w2', a):g}, σ_b² = {config.sigma('sigma_b2', a):g}"
                         for a in dict.fromkeys((*config.activations, *config.ratio_activations,
                                                 *(config.rmt_activations if "rmt" in config.stages else ())))) + ". "
             "Theory: `meanfield.predict` (finite-width form). Sampled: exact top eigenvalue, trace and "
             "Frobenius norm of the CT × CT dual Gram of drawn networks; error bars are one standard error "
             "over seeds.", ""]
    for number, finding in enumerate(findings, 1):
        lines += [f"## {number}. {finding.title}", "", finding.reading, ""]
        lines += [f"![{name}]({name})" for name in finding.figures if name.endswith(".png")]
        if finding.figures:
            lines.append("")
        if finding.table:
            lines += [finding.table, ""]
    if skipped:
        lines += ["## Not run", ""] + [f"- {s}" for s in skipped] + [""]
    lines += ["## Settings", "", "```toml"] + [f"{k} = {_toml(v)}" for k, v in config.to_dict().items()] + ["```", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)
