"""The points of ``meanfield reproduce``: jobs (one stored computation each), their keys, and the functions
that compute a theory point and a sampled point.

A key names the kind, the network (its description and a digest of its exact parameters), M, T and the
seed, so a stored value is reused only for exactly the same computation; a sampled point's key does not
name the stage, so every stage that needs the same draw shares one computation.

Example:
    >>> from meanfield.runs.reproduce.config import load_config
    >>> jobs = point_tasks("width", load_config(None), ["relu"], ["none"], [(8, 2)], 2)
    >>> [job.key.split("|")[0] for job in jobs], [dict(job.labels)["kind"] for job in jobs]
    (['theory', 'sample', 'sample'], ['theory', 'sample', 'sample'])
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...sampled.sampling import sample
from ...spec.grammar import canonical_json, network_from_spec, network_spec
from ...spec.network import Network
from ...theory.fisher import predict
from .config import Config, network_for, resolve_placement

__all__ = ["Job", "run_job", "spec_text", "network_key", "finite_value", "theory_point", "sample_point", "point_tasks",
           "sample_task", "sample_cost", "STATS"]


#: The statistics every point reports and the figures plot.
STATS = ("m", "s", "lambda_max")


@dataclass(frozen=True)
class Job:
    """One stored unit of work of reproduce: ``function(**kwargs)`` on a worker, returning a dict of values.

    ``key`` identifies the point completely (network description, M, T, seed, kind), so a stored value is
    reused only for exactly the same computation; it is the key of the point's row in the results store
    and of its line in ``cache.jsonl``. ``function`` is a module-level function of this package (pickled
    by reference, so a local or Dask worker imports it); ``kwargs`` hold the network as its grammar spec
    (:func:`spec_text`), width, samples, seed. ``labels`` are readable columns for the CSV.

    Example:
        >>> job = Job("theory|x", theory_point, (("spec", spec_text(Network(2, "relu", 2.0, 0.0))),
        ...                                      ("width", 8), ("samples", 2)))
        >>> job.task, run_job(job)["m"] > 0
        ('reproduce.theory_point', True)
    """

    key: str
    function: Callable[..., dict]
    kwargs: tuple[tuple[str, Any], ...]
    labels: tuple[tuple[str, Any], ...] = ()
    cost: float = 1.0  # relative cost, to start the big tasks first

    @property
    def task(self) -> str:
        """The name stored in the results store's ``task`` column: reproduce.<function>."""
        return f"reproduce.{self.function.__name__}"


def run_job(job: Job) -> dict:
    """The executors' task (:func:`meanfield.runs.executors.run_task`): compute one job's values."""
    return job.function(**dict(job.kwargs))


run_job.task_name = "reproduce"  # type: ignore[attr-defined]


def spec_text(net: Network) -> str:
    """The network as the one grammar serialises it (canonical JSON of ``network_spec``): what a job carries
    to its worker, rebuilt there by ``network_from_spec``.

    Example:
        >>> network_from_spec(spec_text(Network(2, "tanh", 1.5, 0.5))) == Network(2, "tanh", 1.5, 0.5)
        True
    """
    return canonical_json(network_spec(net))


def _legacy_description(net) -> tuple[tuple[str, Any], ...]:
    """The tuple whose digest is part of every key (the description that keys have always hashed: it is kept
    so that the caches of earlier runs are reused; the network itself travels as its grammar spec)."""
    return (("depth", net.depth), ("activation", tuple(a.name for a in net.activation)),
            ("sigma_w2", net.sigma_w2), ("sigma_b2", net.sigma_b2), ("outputs", net.outputs),
            ("alphas", net.alphas), ("norms", tuple(str(n) for n in net.norms)))


def network_key(net) -> str:
    """The network's part of a key. Readable and exact: the one-line description plus a digest of the exact
    spec (floats in full).

    Example:
        >>> net = Network(2, "relu", 2.0, 0.0)
        >>> key = network_key(net)
        >>> key.startswith(net.describe() + "|"), len(key.split("|")[-1])
        (True, 10)
    """
    return f"{net.describe()}|{hashlib.sha1(repr(_legacy_description(net)).encode()).hexdigest()[:10]}"


def finite_value(value: Any) -> float | None:
    """A finite float, or None (for NaN, infinities and what is not a number).

    Example:
        >>> finite_value(2), finite_value(float("inf")), finite_value("x")
        (2.0, None, None)
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def theory_point(spec: str, width: int, samples: int) -> dict:
    """predict(net, M, T) as a flat dict (finite-width values, leading order, the kind of lambda_max)."""
    stats = predict(network_from_spec(spec), width=width, samples=samples)
    row = {key: finite_value(getattr(stats, key, None)) for key in
           ("kappa1", "kappa2", "alpha", "P", "m", "s", "lambda_max", "eta_max", "gram_diag", "gram_offdiag")}
    lead = stats.leading
    row.update({f"leading_{key}": finite_value(getattr(lead, key, None)) for key in STATS})
    row["lambda_max_kind"] = getattr(stats, "lambda_max_kind", "prediction")
    bounds = getattr(stats, "lambda_max_bounds", None)
    row["lambda_max_lo"], row["lambda_max_hi"] = ((finite_value(bounds[0]), finite_value(bounds[1])) if bounds
                                                  else (None, None))
    return row


def sample_point(spec: str, width: int, samples: int, seed: int) -> dict:
    """sample(net, M, T, seed) as a flat dict of its statistics."""
    result = sample(network_from_spec(spec), width, samples, seed)
    return {key: finite_value(getattr(result, key, None)) for key in
            ("P", "m", "s", "lambda_max", "gram_diag", "gram_offdiag", "kappa1", "kappa2")}


def point_tasks(stage: str, config: Config, activations: Sequence[str], placements: Sequence[str],
                sizes: Sequence[tuple[int, int]], seeds: int) -> list[Job]:
    """The theory job and ``seeds`` sampled jobs of every (activation, placement, (M, T)) of a stage."""
    tasks = []
    for act in activations:
        for placement in placements:
            net = network_for(config, act, placement)
            spec = spec_text(net)
            described = network_key(net)
            resolved = resolve_placement(placement, config.depth)
            for width, samples in sizes:
                labels = (("stage", stage), ("activation", act), ("placement", resolved), ("width", width),
                          ("samples", samples))
                tasks.append(Job(f"theory|{described}|M={width}|T={samples}", theory_point,
                                 (("spec", spec), ("width", width), ("samples", samples)),
                                 labels + (("seed", None), ("kind", "theory")), cost=0.05))
                tasks += [sample_task(labels, net, width, samples, seed, resolved != "none") for seed in range(seeds)]
    return tasks


def sample_cost(outputs: int, width: int, samples: int, normalized: bool) -> float:
    """Relative cost of one sampled point: forward M^2 T per layer, Gram (C T)^2 M; a norm about doubles it.

    Example:
        >>> sample_cost(1, 100, 10, False)
        0.01
    """
    return (width * width * samples + (outputs * samples) ** 2 * width) * 1e-7 * (2.0 if normalized else 1.0)


def sample_task(labels: tuple, net, width: int, samples: int, seed: int, normalized: bool) -> Job:
    """One sampled network. The key names only the network, M, T and seed (not the stage), so every stage
    that needs the same draw shares one cached computation."""
    return Job(f"sample|{network_key(net)}|M={width}|T={samples}|seed={seed}", sample_point,
               (("spec", spec_text(net)), ("width", width), ("samples", samples), ("seed", seed)),
               labels + (("seed", seed), ("kind", "sample")),
               cost=sample_cost(net.outputs, width, samples, normalized))
