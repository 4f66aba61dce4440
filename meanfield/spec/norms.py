"""Normalization layers of a network: batch norm and layer norm on a pre-activation u^l.

A normalization is a *layer in the spec*, never a flag: :class:`~meanfield.spec.network.Network`
holds these objects, and their text form (``batch:last``, ``batch-center:2``, ``layer:1``) is the one
the grammar (:mod:`meanfield.spec.grammar`) reads back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..errors import InvalidArgument, check_int

__all__ = ["BatchNorm", "LayerNorm", "Norm"]


def _resolve_layer(layer: Any) -> int | str:
    if isinstance(layer, str):
        if layer.strip().lower() in ("last", "output", "l"):
            return "last"
        try:
            layer = int(layer)
        except ValueError:
            raise InvalidArgument("layer", layer, "a layer number 1..L or 'last'") from None
    return check_int("layer", layer, minimum=1)


@dataclass(frozen=True)
class BatchNorm:
    """Batch norm on the pre-activation u^layer: per unit, over the T samples of the batch.

    ``center_only=True`` subtracts the batch mean only; otherwise the unit is also divided by its
    batch standard deviation (population variance, no epsilon). ``layer="last"`` is the output.

    Example:
        >>> BatchNorm("last")
        BatchNorm(layer='last', center_only=False)
    """

    layer: int | str
    center_only: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layer", _resolve_layer(self.layer))
        if not isinstance(self.center_only, bool):
            raise InvalidArgument("center_only", self.center_only, "True or False")

    @property
    def kind(self) -> str:
        return "batch-center" if self.center_only else "batch"

    def min_samples(self) -> int:
        """Fewest samples T for which a batch norm here is defined (mean: 2; variance: 3)."""
        return 2 if self.center_only else 3

    def __str__(self) -> str:
        return f"{self.kind}:{self.layer}"


@dataclass(frozen=True)
class LayerNorm:
    """Layer norm on the pre-activation u^layer: per sample, over the units (mean and variance).

    Only hidden layers: over the C outputs the statistics do not concentrate as M grows.

    Example:
        >>> LayerNorm(2)
        LayerNorm(layer=2)
    """

    layer: int | str

    def __post_init__(self):
        object.__setattr__(self, "layer", _resolve_layer(self.layer))

    kind = "layer"

    def min_samples(self) -> int:
        return 1

    def __str__(self) -> str:
        return f"layer:{self.layer}"


Norm = Union[BatchNorm, LayerNorm]
