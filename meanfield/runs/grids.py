"""Sweep grids: the product depth x activation x variances x norms x width x samples x seeds, and its file.

A :class:`Grid` expands to :class:`Point` s = (network, width M, samples T, seed); every option of
every key is crossed with every option of every other key. Each point has a deterministic
:meth:`Point.key`, sha256 of the canonical JSON of (network spec, width, samples, seed, task), so
the same point gets the same key in any process, on any machine, in any later session: it is what
the results store (:mod:`meanfield.runs.store`) makes unique and what ``resume`` skips.

The grid file (TOML) holds the same keys at top level. A scalar is a single option; a list is the
options; a list *inside* the list is one per-layer option::

    # every combination of these is one network ...
    depth      = [2, 3]
    activation = ["relu", "tanh", "leaky_relu(a=0.2)"]   # or { expr = "x*tanh(x)" }
    sigma_w2   = [1.0, 2.0]                               # [[1.0, 2.0, 2.0]] = one per layer
    sigma_b2   = 0.0
    outputs    = [1, 10]
    norms      = ["none", "batch:last", "layer:1, batch:last"]  # batch-center:L, layer:l (hidden)
    # alphas = [[1, 2, 1]]; input_q1 = 1.0; input_q2 = 0.0
    # ... and each network is run at every width, samples and seed
    width   = [64, 128]
    samples = 8
    seeds   = 4            # seeds 0..3; or an explicit list [0, 7, 11]

Required: depth, activation, sigma_w2, width, samples. Defaults: sigma_b2 = 0, outputs = 1,
alphas = all 1, norms = "none", input_q1 = 1, input_q2 = 0, seeds = 1 (seed 0). An unknown key or
a bad value raises :class:`GridFileError` naming the file, the line and the key (and, for a
misspelt key, the closest valid one). A grid has at most :data:`MAX_POINTS` points (a million): a
bigger one is refused before anything is expanded, naming the key with the most options.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec.activations import CATALOGUE, Activation
from ..spec.grammar import canonical_json, network_from_spec, network_spec, parse_activation, parse_norms
from ..errors import InvalidArgument, check_int, check_real, closest
from ..spec.network import BatchNorm, LayerNorm, Network

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Grid", "Point", "GridFileError", "GRID_KEYS", "MAX_POINTS", "load_grid", "network_spec", "network_from_spec"]

#: Keys that describe the network (crossed into one Network per combination).
NETWORK_KEYS = ("depth", "activation", "sigma_w2", "sigma_b2", "outputs", "alphas", "norms", "input_q1",
                "input_q2")
#: Keys that describe how each network is sampled.
RUN_KEYS = ("width", "samples", "seeds")
#: Every key a grid (object or file) accepts.
GRID_KEYS = NETWORK_KEYS + RUN_KEYS
#: The most points a grid may have: checked before the grid is expanded, so that a typo such as
#: ``seeds = 1000000000`` is an error in a moment rather than gigabytes of points (a million points is
#: weeks of sampling on one machine; split bigger studies into several grids).
MAX_POINTS = 1_000_000
_REQUIRED = ("depth", "activation", "sigma_w2", "width", "samples")
_DEFAULTS: dict[str, Any] = {"sigma_b2": 0.0, "outputs": 1, "alphas": None, "norms": "none", "input_q1": 1.0,
                             "input_q2": 0.0, "seeds": 1}


class GridFileError(InvalidArgument):
    """A bad grid file: names the file, the line (1-based, None if unknown) and the key.

    Example:
        >>> try:
        ...     Grid.from_toml_text("depth = 2\\nactivaton = 'relu'\\n", path="g.toml")
        ... except GridFileError as err:
        ...     print(err)
        g.toml, line 2: key 'activaton' is not a grid key (did you mean 'activation'?); valid keys: depth, activation, sigma_w2, sigma_b2, outputs, alphas, norms, input_q1, input_q2, width, samples, seeds
    """

    def __init__(self, path: str, line: int | None, key: str, message: str):
        self.path = path
        self.line = line
        self.key = key
        self.detail = message
        InvalidArgument.__init__(self, key, None, message)
        where = f"{path}, line {line}" if line is not None else str(path)
        self.args = (f"{where}: {message}",)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.key, self.detail))


# -- canonical network specs (what the task key hashes) -----------------------------------------------


@dataclass(frozen=True)
class Point:
    """One task of a sweep: a network, its width M, the batch size T and the sampling seed.

    Example:
        >>> p = Point(Network(2, "relu", 2, 0), width=64, samples=8, seed=0)
        >>> p.key("fisher")
        '4c2c58eb31ff367b2c3957d7e1de4870'
        >>> p.key("fisher") == Point(Network(2, "relu", 2.0, 0.0), 64, 8, 0).key("fisher")
        True
    """

    network: Network
    width: int
    samples: int
    seed: int
    spec: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "width", check_int("width", self.width, minimum=1))
        object.__setattr__(self, "samples", check_int("samples", self.samples, minimum=1))
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0))
        object.__setattr__(self, "spec", network_spec(self.network))

    def key(self, task: str) -> str:
        """sha256 (first 128 bits, hex) of the canonical (spec, width, samples, seed, task)."""
        text = canonical_json({"network": self.spec, "width": self.width, "samples": self.samples,
                               "seed": self.seed, "task": task})
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def cost(self) -> float:
        """A rough relative cost (P T C: forward/backward and the Gram matrix) to start big tasks first."""
        return float(self.network.parameter_count(self.width)) * self.samples * self.network.outputs


# -- option parsers: one per key; each raises InvalidArgument naming the key -------------------------------


def _options(key: str, value: Any) -> tuple:
    """A grid value as a tuple of options: a scalar is one option, a list is the options."""
    if isinstance(value, (str, bytes, Mapping, Network, Activation, BatchNorm, LayerNorm)) or not isinstance(
            value, Iterable):
        return (value,)
    if isinstance(value, Sequence) and len(value) > MAX_POINTS:
        raise InvalidArgument(key, f"<a list of {len(value)} options>", f"at most {MAX_POINTS} options",
                              f"a grid has at most {MAX_POINTS} points")
    options = tuple(value)
    if not options:
        raise InvalidArgument(key, list(options), "a value or a non-empty list of options")
    return options


def _parse_real_or_layers(key: str, value: Any, minimum: float | None, strict: bool) -> Any:
    if value is None and key == "alphas":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            raise InvalidArgument(key, list(value), "a number or a non-empty per-layer list")
        return tuple(check_real(key, v, minimum=minimum, strict_min=strict, symbolic=False) for v in value)
    return check_real(key, value, minimum=minimum, strict_min=strict, symbolic=False)


def _parse_seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, range):
        value = list(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) > MAX_POINTS:
            raise InvalidArgument("seeds", f"<a list of {len(value)} seeds>", f"at most {MAX_POINTS} seeds",
                                  f"a grid has at most {MAX_POINTS} points")
        seeds = tuple(check_int("seeds", s, minimum=0) for s in value)
        if not seeds:
            raise InvalidArgument("seeds", [], "a count >= 1 or a non-empty list of seeds >= 0")
        seen: set[int] = set()  # linear: a list of 1e5 seeds is checked in milliseconds
        for seed in seeds:
            if seed in seen:
                raise InvalidArgument("seeds", f"<a list of {len(seeds)} seeds>", "distinct seeds",
                                      f"seed {seed} is repeated")
            seen.add(seed)
        return seeds
    count = check_int("seeds", value, minimum=1)
    if count > MAX_POINTS:  # before range() is expanded into a tuple
        raise InvalidArgument("seeds", count, f"a count of at most {MAX_POINTS}",
                              f"a grid has at most {MAX_POINTS} points")
    return tuple(range(count))


def _parse(key: str, value: Any) -> tuple:
    """All options of grid key ``key``, validated one by one."""
    if key == "seeds":
        return _parse_seeds(value)
    if key == "activation":
        # a list of strings is options; a nested list is one per-layer option
        return tuple(parse_activation(v, key) for v in _options(key, value))
    if key == "norms":
        if value is None or isinstance(value, (str, BatchNorm, LayerNorm)):
            return (parse_norms(value, key),)
        return tuple(parse_norms(v, key) for v in _options(key, value))
    options = _options(key, value)
    if key in ("depth", "outputs", "width", "samples"):
        return tuple(check_int(key, v, minimum=1) for v in options)
    if key in ("sigma_w2", "alphas"):
        return tuple(_parse_real_or_layers(key, v, 0, True) for v in options)
    if key == "sigma_b2":
        return tuple(_parse_real_or_layers(key, v, 0, False) for v in options)
    if key == "input_q1":
        return tuple(check_real(key, v, minimum=0, strict_min=True, symbolic=False) for v in options)
    if key == "input_q2":
        return tuple(check_real(key, v, symbolic=False) for v in options)
    raise AssertionError(key)  # pragma: no cover


def _dedupe(key: str, options: tuple) -> None:
    hashed: set = set()
    unhashable: list = []
    for option in options:
        try:  # a set where the options hash (all parsed options do), so the check stays linear
            seen = option in hashed
            hashed.add(option)
        except TypeError:
            seen = option in unhashable
            unhashable.append(option)
        if seen:
            raise InvalidArgument(key, option, "distinct options", "this option is listed twice")


def _check_size(counts: Mapping[str, int]) -> None:
    """Refuse a grid of more than MAX_POINTS points before it is expanded, naming its biggest key."""
    total = 1
    for count in counts.values():
        total *= count
    if total > MAX_POINTS:
        key = max(counts, key=lambda k: counts[k])
        sizes = " x ".join(f"{counts[k]} {k}" for k in counts if counts[k] > 1)
        raise InvalidArgument(key, f"<{counts[key]} options>", f"a grid of at most {MAX_POINTS} points",
                              f"this grid has {sizes} = {total} points; split it into several grids")


def _blame(argument: str) -> str | None:
    """The grid key an InvalidArgument from Network/activation construction is about."""
    base = re.split(r"[\[.\s]", argument, maxsplit=1)[0]
    if base in GRID_KEYS:
        return base
    if base in ("layer", "center_only"):
        return "norms"
    if base in ("expr", "params") or base in CATALOGUE:
        return "activation"
    return None


# -- the grid ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The product of options: every network combination x width x samples x seed is one Point.

    Each argument is one option or a list of options (a tuple/list *inside* the list is a
    per-layer value). ``networks=[...]`` gives the networks explicitly instead of the network keys.

    Example:
        >>> g = Grid(depth=[2, 3], activation=["relu", "tanh"], sigma_w2=2, width=[32, 64], samples=4,
        ...          seeds=2)
        >>> len(g), len(g.networks)
        (16, 4)
        >>> g.points()[0]
        Point(network=Network(depth=2, ...), width=32, samples=4, seed=0)
    """

    depth: Any = None
    activation: Any = None
    sigma_w2: Any = None
    sigma_b2: Any = _DEFAULTS["sigma_b2"]
    outputs: Any = _DEFAULTS["outputs"]
    alphas: Any = _DEFAULTS["alphas"]
    norms: Any = _DEFAULTS["norms"]
    input_q1: Any = _DEFAULTS["input_q1"]
    input_q2: Any = _DEFAULTS["input_q2"]
    width: Any = None
    samples: Any = None
    seeds: Any = _DEFAULTS["seeds"]
    networks: Any = None
    source: str | None = field(default=None, compare=False, repr=False)
    path: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        given = self.networks is not None
        if given:
            extra = [k for k in NETWORK_KEYS if getattr(self, k) not in (None, _DEFAULTS.get(k))]
            if extra:
                raise InvalidArgument(extra[0], getattr(self, extra[0]), "no network keys when networks= is given",
                                      "describe the networks either by keys or as Network objects")
            nets = _options("networks", self.networks)
            for net in nets:
                if not isinstance(net, Network):
                    raise InvalidArgument("networks", net, "meanfield.Network objects")
                network_spec(net)  # numeric?
            _dedupe("networks", nets)
        else:
            for key in _REQUIRED[:3]:
                if getattr(self, key) is None:
                    raise InvalidArgument(key, None, "a value or list of values (required grid key)")
            for key in NETWORK_KEYS:
                set_(key, _parse(key, getattr(self, key)))
                _dedupe(key, getattr(self, key))
        for key in RUN_KEYS:
            if getattr(self, key) is None:
                raise InvalidArgument(key, None, "a value or list of values (required grid key)")
            set_(key, _parse(key, getattr(self, key)))
            _dedupe(key, getattr(self, key))
        counts = {"networks": len(nets)} if given else {k: len(getattr(self, k)) for k in NETWORK_KEYS}
        _check_size({**counts, **{k: len(getattr(self, k)) for k in RUN_KEYS}})
        if not given:
            nets = tuple(self._expand())
        set_("networks", tuple(nets))
        # combinations the spec cannot run: say which key, before any work starts
        for net in self.networks:
            need = net.min_samples()
            for T in self.samples:
                if T < need:
                    norm = next(n for n in net.norms if n.min_samples() == need)
                    raise InvalidArgument("samples", T, f"an integer >= {need} for networks with {norm}",
                                          "batch statistics over fewer samples are degenerate")
            for M in self.width:
                net.widths(M)

    def _expand(self):
        varying = [k for k in NETWORK_KEYS if len(getattr(self, k)) > 1]
        for combo in itertools.product(*(getattr(self, k) for k in NETWORK_KEYS)):
            args = dict(zip(NETWORK_KEYS, combo))
            try:
                yield Network(**args)
            except InvalidArgument as err:
                key = _blame(err.argument) or "depth"
                context = ", ".join(f"{k}={_show(args[k])}" for k in varying if k != key)
                hints = [f"in the combination with {context}" if context else "", err.hint or ""]
                raise InvalidArgument(key, _show(args[key]), err.allowed,
                                      "; ".join(h for h in hints if h) or None) from None

    def __len__(self) -> int:
        return len(self.networks) * len(self.width) * len(self.samples) * len(self.seeds)

    def points(self) -> tuple[Point, ...]:
        """Every (network, width, samples, seed), networks outermost, seeds innermost."""
        return tuple(Point(net, M, T, s) for net in self.networks for M in self.width for T in self.samples
                     for s in self.seeds)

    def to_dict(self) -> dict:
        """The grid's options as JSON-ready data (stored as sweep metadata)."""
        out: dict[str, Any] = {"networks": [network_spec(n) for n in self.networks]}
        out.update({k: list(getattr(self, k)) for k in RUN_KEYS})
        return out

    # -- the grid file ---------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | Path) -> "Grid":
        """The grid described by a TOML file (format: see the module docstring)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise InvalidArgument("grid", str(path), "a readable TOML grid file", err.strerror) from None
        return cls.from_toml_text(text, path=str(path))

    @classmethod
    def from_toml_text(cls, text: str, path: str = "<grid>") -> "Grid":
        """The grid described by TOML text; errors name ``path``, the line and the key.

        Example:
            >>> g = Grid.from_toml_text('depth = 2\\nactivation = "relu"\\nsigma_w2 = [1, 2]\\nwidth = 16\\nsamples = 4')
            >>> len(g)
            2
            >>> try:
            ...     Grid.from_toml_text('depth = 2\\nactivation = "relu"\\nsigma_w2 = -1\\nwidth = 16\\nsamples = 4')
            ... except GridFileError as err:
            ...     print(err)
            <grid>, line 3: sigma_w2=-1 is not allowed: expected a finite real number > 0
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            found = re.search(r"line (\d+)", str(err))
            raise GridFileError(path, int(found.group(1)) if found else None, "(syntax)",
                                f"not valid TOML: {err}") from None
        for key in data:
            if key not in GRID_KEYS:
                near = closest(key, GRID_KEYS)
                raise GridFileError(path, _key_line(text, key), key,
                                    f"key {key!r} is not a grid key" + (f" (did you mean {near!r}?)" if near else "")
                                    + "; valid keys: " + ", ".join(GRID_KEYS))
        for key in _REQUIRED:
            if key not in data:
                raise GridFileError(path, None, key, f"the required key {key!r} is missing"
                                    " (required: " + ", ".join(_REQUIRED) + ")")
        try:
            return cls(**data, source=text, path=path)
        except GridFileError:
            raise
        except InvalidArgument as err:
            raise _file_error(err, text, path) from None

    def blame(self, err: InvalidArgument) -> InvalidArgument:
        """``err`` about one of this grid's values, located in its file (a GridFileError) if it has one.

        Example:
            >>> g = Grid.from_toml_text("depth = 2\\nactivation = 'relu'\\nsigma_w2 = 1\\nwidth = 8\\nsamples = 2",
            ...                         path="g.toml")
            >>> print(g.blame(InvalidArgument("samples", 2, "an integer >= 6")))
            g.toml, line 5: samples=2 is not allowed: expected an integer >= 6
        """
        if self.source is None or isinstance(err, GridFileError):
            return err
        return _file_error(err, self.source, self.path or "<grid>")

    def __str__(self) -> str:
        rows = [("networks", str(len(self.networks)))]
        if self.networks and len(self.networks) <= 6:
            rows += [("", n.describe()) for n in self.networks]
        rows += [(k, ", ".join(map(str, getattr(self, k)))) for k in RUN_KEYS]
        rows.append(("points", str(len(self))))
        w = max(len(k) for k, _ in rows)
        return "Grid\n" + "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def _file_error(err: InvalidArgument, text: str, path: str) -> GridFileError:
    key = _blame(err.argument) or "depth"
    message = str(err)
    if err.argument != key and not message.startswith(key):
        message = f"{key}: {message}"
    return GridFileError(path, _key_line(text, key), key, message)


def _show(value: Any) -> Any:
    if isinstance(value, tuple) and value and isinstance(value[0], (BatchNorm, LayerNorm)):
        return ",".join(map(str, value))
    if value == ():
        return "none"
    if isinstance(value, tuple):
        return [_show(v) for v in value]
    if isinstance(value, Activation):
        return value.name
    return value


def _key_line(text: str, key: str) -> int | None:
    """1-based line where ``key`` is assigned (or opened as a table): tomllib does not report it."""
    pattern = re.compile(r'^\s*(\[\[?\s*)?(?:"%s"|\'%s\'|%s)\s*(=|\]|\.)' % ((re.escape(key),) * 3))
    in_string = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is None and pattern.match(line):
            return number
        # skip the inside of multi-line strings, where 'key =' is only text
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_string = None if in_string == quote else (quote if in_string is None else in_string)
    return None


def load_grid(grid: Any) -> Grid:
    """A Grid from a Grid, a mapping of grid keys, or a TOML file path.

    Example:
        >>> len(load_grid({"depth": 2, "activation": "relu", "sigma_w2": 2, "width": 8, "samples": 2}))
        1
    """
    if isinstance(grid, Grid):
        return grid
    if isinstance(grid, (str, Path)):
        return Grid.from_toml(grid)
    if isinstance(grid, Mapping):
        unknown = [k for k in grid if k not in GRID_KEYS + ("networks",)]
        if unknown:
            near = closest(unknown[0], GRID_KEYS)
            raise InvalidArgument("grid", unknown[0], "grid keys " + ", ".join(GRID_KEYS),
                                  f"did you mean {near!r}?" if near else None)
        return Grid(**grid)
    raise InvalidArgument("grid", grid, "a Grid, a dict of grid keys, or a TOML file path")
