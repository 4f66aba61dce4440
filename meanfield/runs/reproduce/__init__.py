"""``meanfield reproduce``: the paper's comparison, theory against sampled networks, resumable.

The pipeline is a list of *stages*. Each stage names the points it needs (a point is one network at
one width M, batch size T and seed, or its theory prediction), and renders figures and findings from
the computed values. Points are computed through the machinery of sweeps: the executors of
:mod:`meanfield.runs.executors` (local processes, or a Dask scheduler with ``scheduler=``) and the SQLite
results store ``results.sqlite`` in the output folder, one committed row per point the moment it is done,
keyed by the full network description, M, T and seed: a rerun (after an interruption, or with more
seeds) computes only what is missing, and a changed network parameter can never reuse a stale number.
Every point is also appended to ``cache.jsonl`` (one JSON line); the ``cache.jsonl`` of an older run is
imported into the store. Figures, CSV files and the Markdown report are rebuilt from the store at the
end of every run.

Modules: :mod:`.config` (settings, placements), :mod:`.stages` (the registry), :mod:`.points` (jobs, keys,
theory and sampled points), :mod:`.cache` (rows of the store, lines of the cache), :mod:`.results`,
:mod:`.figures`, one module per stage (:mod:`.width`, :mod:`.ratio`, :mod:`.learning_rate`, :mod:`.rmt`, :mod:`.digits`),
:mod:`.report` and :mod:`.pipeline` (:func:`reproduce`).

Stages (see :data:`STAGES`; a later stage registers itself with :func:`register_stage`):

* ``width``: m, s and lambda_max against M at fixed T, for each activation and normalization
  placement, sampled means with standard errors beside the finite-width theory.
* ``ratio``: lambda_max against M at fixed M/T (T grows with M): bounded with batch norm in the last
  layer, growing like M without normalization.
* ``learning_rate``: loss after N gradient steps over (M, eta) with the predicted boundary
  eta = 2/lambda_max(M) (:mod:`meanfield.checking.learning_rate_grid`).
* ``rmt``: lambda_max over a grid of (M, T/M) cells, leading order and the random-matrix prediction
  ``predict(..., finite_width="rmt")`` against sampled means, with per-cell relative errors.
* ``digits``: m, s and lambda_max against M on a real batch of T handwritten digits: the theory of that
  batch (``predict(net, M, inputs=X)``) against sampled networks on the same batch, with the isotropic
  theory beside it (skipped when scikit-learn, the ``data`` extra, is missing).

Findings are *computed*: fitted exponents, ratios and sign tests on the numbers decide each sentence
of the report; nothing in the text is fixed in advance.

Example:
    >>> config = load_config(None, quick=True)
    >>> config.widths
    (64, 128, 256)
    >>> result = reproduce(config, out="results")  # doctest: +SKIP
"""

from __future__ import annotations

# the stage modules register their stages, in this order, when they are imported
from . import width, ratio, learning_rate, rmt, digits  # noqa: F401,I001
from .cache import CacheFile
from .config import QUICK, Config, load_config, network_for, placement_label
from .pipeline import PointFailed, ReproduceResult, reproduce
from .points import Job, run_job
from .results import PointSummary, Results, slope
from .stages import STAGES, ReportSection, Stage, register_stage

__all__ = ["Config", "QUICK", "load_config", "reproduce", "ReproduceResult", "PointFailed", "Job", "run_job", "Stage",
           "STAGES", "register_stage", "ReportSection", "PointSummary", "Results", "CacheFile", "network_for",
           "placement_label", "slope"]
