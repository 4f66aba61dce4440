"""The settings of ``meanfield reproduce``: :class:`Config`, the ``--quick`` preset, the TOML file and its
checks, and the networks of the normalization placements the stages compare.

Example:
    >>> load_config(None, quick=True).widths
    (64, 128, 256)
    >>> placement_label("batch:last", 3)
    'batch norm, last layer'
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidArgument, closest
from ...finite.fluctuations import REFERENCE_SEEDS
from ...spec.activations import activation
from ...spec.grammar import parse_norm
from ...spec.inputs import DIGITS_COUNT
from ...spec.network import Network
from .stages import STAGES

__all__ = ["Config", "QUICK", "load_config", "network_for", "stage_networks", "placement_label", "resolve_placement",
           "PLACEMENT_NAMES"]


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
            coefficients (``meanfield.finite.fluctuations.measure_fluctuations``; the model's own default is 64, 128).
        digits_activations, digits_placements: the networks of the digits stage (a real batch).
        digits_widths: widths M of the digits stage.
        digits_samples: T, the number of handwritten digits in the batch (1 to 1797).
        digits_seeds: sampled networks per point of the digits stage.
        digits_choice: the seed of the choice of the T images (``meanfield.spec.inputs.digits``; 0 or more).
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
    digits_activations: tuple[str, ...] = ("relu", "tanh")
    digits_placements: tuple[str, ...] = ("none", "batch:last", "layer:mid")
    digits_widths: tuple[int, ...] = (64, 128, 256, 512)
    digits_samples: int = 32
    digits_seeds: int = 8
    digits_choice: int = 0
    stages: tuple[str, ...] = ("width", "ratio", "learning_rate", "rmt", "digits")

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
    digits_activations=("relu",), digits_widths=(64, 128), digits_samples=16, digits_seeds=4,
)
"""Overrides of the defaults for ``--quick`` (about half a minute on 2 cores)."""


def _field_types() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(Config)}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check one TOML value against the type of its default; name the key when it does not fit."""
    if key in ("sigma_w2", "sigma_b2"):
        # one number for every activation, or a table activation -> number; the number itself is
        # checked as a float default (never recurse on this key: that was an endless recursion)
        if isinstance(value, Mapping):
            if not value:
                raise InvalidArgument(key, dict(value), "a number or a non-empty table activation -> number")
            for name in value:
                _check_activation_name(f"{key}.{name}", name)
            return tuple(sorted((str(k), _coerce(f"{key}.{k}", v, 1.0)) for k, v in value.items()))
        if isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return _coerce(key, dict(value), default)  # the tuple form Config itself holds (e.g. QUICK)
        return _coerce_number(key, value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidArgument(key, value, "true or false")
        return value
    if isinstance(default, int):
        least = 0 if key == "digits_choice" else 1  # a seed may be 0; counts and sizes may not
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidArgument(key, value, "a positive integer" if least else "an integer >= 0")
        return value
    if isinstance(default, float):
        return _coerce_number(key, value)
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


def _coerce_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidArgument(key, value, "a non-negative number")
    return float(value)


def _check_activation_name(key: str, name: Any) -> None:
    """A key of a per-activation table must be an activation of the catalogue (a typo such as 'tahn'
    would otherwise be silently ignored and the activation left without its value)."""
    try:
        activation(str(name))
    except InvalidArgument as err:
        raise InvalidArgument(key, str(name), "an activation of the catalogue as the key of a per-activation "
                              "table", str(err)) from None


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
    except IsADirectoryError:
        raise InvalidArgument("config", str(path), "a TOML file, not a directory") from None
    except UnicodeDecodeError as err:  # a binary file: tomllib decodes UTF-8 before parsing
        raise InvalidArgument("config", str(path), "a UTF-8 TOML text file", f"not UTF-8 text: {err.reason} at "
                              f"byte {err.start}") from None
    except tomllib.TOMLDecodeError as err:
        raise InvalidArgument("config", str(path), "a valid TOML file", str(err)) from None
    except OSError as err:  # unreadable (permissions), a FIFO that fails, ...
        raise InvalidArgument("config", str(path), "a readable TOML file", f"{type(err).__name__}: {err}") from None
    if "reproduce" in data:
        table = data["reproduce"]
        if not isinstance(table, dict):
            raise InvalidArgument("reproduce", table, "a [reproduce] table of settings")
        rest = {k: v for k, v in data.items() if k != "reproduce"}
        # the same key at the top level and in [reproduce]: which one was meant is a guess, so refuse
        both = sorted(set(rest) & set(table))
        if both:
            raise InvalidArgument(both[0], table[both[0]], "each setting once: at the top level or in the "
                                  "[reproduce] table", f"{path} sets {both[0]!r} in both places")
        data = {**rest, **table}
    return data


def _validate(config: Config) -> None:
    named = [("activations", a) for a in config.activations] + [("ratio_activations", a) for a in
                                                                config.ratio_activations]
    named += [("lr_activation", config.lr_activation)] + [("rmt_activations", a) for a in config.rmt_activations]
    named += [("digits_activations", a) for a in config.digits_activations]
    for key, name in named:
        try:
            activation(name)
        except InvalidArgument as err:  # name the setting, keep the catalogue and the closest name
            raise InvalidArgument(key, name, "an activation of the catalogue", str(err)) from None
        for kind in ("sigma_w2", "sigma_b2"):
            config.sigma(kind, name)
    for key in ("placements", "ratio_placements", "lr_placements", "rmt_placements", "digits_placements"):
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
    _validate_digits(config)


def _validate_digits(config: Config) -> None:
    """The digits stage's keys: a batch of 1..1797 images with as many as its networks' norms need."""
    if config.digits_samples > DIGITS_COUNT:
        raise InvalidArgument("digits_samples", config.digits_samples, f"at most {DIGITS_COUNT} (the bundled digits)")
    for placement in config.digits_placements:
        need = network_for(config, config.digits_activations[0], placement).min_samples()
        if config.digits_samples < need:
            raise InvalidArgument("digits_samples", config.digits_samples,
                                  f"at least {need} for the placement {placement!r}")


def _validate_rmt(config: Config) -> None:
    """The random-matrix stage's keys: widths the model accepts, positive ratios, seeds disjoint from its
    reference seeds, two different reference widths."""
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

PLACEMENT_NAMES = {
    "none": "no normalization",
    "batch": "batch norm",
    "batch-center": "batch norm (mean only)",
    "layer": "layer norm",
}


def resolve_placement(placement: str, depth: int) -> str:
    """'batch:mid' -> 'batch:2' for depth 3; 'none' stays.

    Example:
        >>> resolve_placement("batch:mid", 3), resolve_placement("layer:3", 3), resolve_placement("none", 3)
        ('batch:2', 'layer:last', 'none')
    """
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
    placement = resolve_placement(placement, depth)
    if placement == "none":
        return PLACEMENT_NAMES["none"]
    kind, _, layer = placement.partition(":")
    where = "last layer" if layer == "last" else f"layer {layer}"
    return f"{PLACEMENT_NAMES.get(kind, kind)}, {where}"


def network_for(config: Config, activation: str, placement: str, depth: int | None = None):
    """The :class:`~meanfield.Network` of one (activation, placement) of the config.

    Example:
        >>> network_for(load_config(), "relu", "batch:mid").norms
        (BatchNorm(layer=2, center_only=False),)
    """
    depth = config.depth if depth is None else depth
    placement = resolve_placement(placement, depth)
    norms = () if placement == "none" else (parse_norm(placement),)
    return Network(depth=depth, activation=activation, sigma_w2=config.sigma("sigma_w2", activation),
                   sigma_b2=config.sigma("sigma_b2", activation), outputs=config.outputs, norms=norms)


def stage_networks(config: Config, activations, placements) -> list[tuple[str, str, Network]]:
    """(activation, resolved placement, network) for a stage's activations x placements, in config order, each
    network once (two spellings of one placement, such as "batch:last" and "batch:3" at depth 3, give one network).

    Example:
        >>> [(a, p) for a, p, _ in stage_networks(load_config(), ["relu"], ["none", "batch:last", "batch:3"])]
        [('relu', 'none'), ('relu', 'batch:last')]
    """
    nets: dict = {}
    for act in activations:
        for placement in placements:
            resolved = resolve_placement(placement, config.depth)
            nets.setdefault((act, resolved), network_for(config, act, placement))
    return [(act, resolved, net) for (act, resolved), net in nets.items()]
