"""sweep(grid, store): every (network, M, T, seed) of a grid -> one record of predicted and sampled FIM stats.

Each task runs ``predict(net, M, T)`` (theory) and ``sample(net, M, T, seed)`` (a real network's
exact Fisher spectrum) and the process that called :func:`sweep` appends the record to an SQLite
results store (:mod:`meanfield.runs.store`), one committed transaction per record. Tasks run

* on local processes (``concurrent.futures.ProcessPoolExecutor``; ``processes=1`` runs in-process;
  the executors live in :mod:`meanfield.runs.executors`, shared with ``meanfield reproduce``).
  Workers are spawned (fresh interpreters, one BLAS thread per core share), so a custom task must
  be importable: defined in a module, or in a script under ``if __name__ == "__main__":`` guard;
* or on an existing Dask cluster, ``scheduler="tcp://host:8786"`` (or a ``distributed.Client`` /
  ``LocalCluster``), through distributed's own ``Client.map`` and ``as_completed``: the cluster
  schedules, retries tasks of workers that die, and may run on other machines; nothing here is a
  scheduler of its own. Needs the optional extra ``pip install 'meanfield-fisher[dask]'``.

Restartable by construction: a task's key is sha256 of its canonical (spec, width, samples, seed,
task) (:meth:`meanfield.runs.grids.Point.key`) and UNIQUE in the store, so an interrupted sweep loses
at most the tasks in flight, a re-run (``resume=True``, the default) skips every stored key and
does no work when all are stored, and two sweeps on one store can never store a record twice.

The grid is a :class:`~meanfield.runs.grids.Grid`, a dict of its keys, or a TOML file (format in
:mod:`meanfield.runs.grids`)::

    depth = [2, 3]
    activation = ["relu", "tanh"]
    sigma_w2 = [1.0, 2.0]
    norms = ["none", "batch:last"]
    width = [64, 128]
    samples = 8
    seeds = 4

Example:
    >>> import tempfile, os
    >>> store = os.path.join(tempfile.mkdtemp(), "demo.sqlite")
    >>> grid = {"depth": 2, "activation": "relu", "sigma_w2": 2, "width": 4, "samples": 2, "seeds": 2}
    >>> def tiny(point):          # any picklable task: point -> dict of numbers (default: fisher_task)
    ...     return {"P": point.network.parameter_count(point.width)}
    >>> results = sweep(grid, store, task=tiny, processes=1, quiet=True)
    >>> [(r["seed"], r["P"]) for r in results.records]
    [(0, 25), (1, 25)]
    >>> sweep(grid, store, task=tiny, processes=1, quiet=True).report.computed   # resumed: nothing to do
    0
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgument, check_real
from .executors import CONNECT_TIMEOUT, ExecutorError, SchedulerUnavailable, check_execution, make_executor
from .grids import Grid, Point, canonical_json, load_grid
from .store import (BOOKKEEPING_COLUMNS, ResultStore, SweepResults, identity_columns, load, meanfield_version, now,
                    sql_value)
from .summaries import summary_table

__all__ = ["sweep", "load_sweep", "fisher_task", "SweepReport", "SchedulerUnavailable", "SweepError",
           "add_sweep_arguments", "cli_run", "sweep_main", "summary_table"]

#: ``meanfield.load_sweep(path)``: the records of a results store (:func:`meanfield.runs.store.load`).
load_sweep = load

#: The executor failed (not a task): the name sweeps have always raised.
SweepError = ExecutorError


# -- the task ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _predict(net, width: int, samples: int):
    # the prediction does not depend on the seed: compute it once per worker for all seeds
    from ..theory.fisher import predict
    return predict(net, width, samples)


def _num(obj: Any, name: str, required: bool = True) -> Any:
    if required:
        return getattr(obj, name)  # an AttributeError names the broken contract in the failure row
    return getattr(obj, name, None)


def fisher_task(point: Point) -> dict:
    """predict(net, M, T) and sample(net, M, T, seed) -> the statistics of one sweep record.

    Columns: ``P``, ``alpha``; ``predicted_`` + kappa1, kappa2, m, s, lambda_max, lambda_max_kind,
    lambda_max_lo, lambda_max_hi (when only bounded), eta_max, gram_diag, gram_offdiag;
    ``leading_`` + m, s, lambda_max; ``sampled_`` + kappa1, kappa2, m, s, lambda_max, gram_diag,
    gram_offdiag; ``predict_seconds``, ``sample_seconds``.

    Example:
        >>> from meanfield.spec.network import Network
        >>> record = fisher_task(Point(Network(2, "relu", 2, 0, outputs=2), width=16, samples=4, seed=0))
        >>> record["P"], record["predicted_lambda_max_kind"]
        (306, 'bound')
        >>> 0.5 < record["sampled_m"] / record["predicted_m"] < 2
        True
    """
    from ..sampled.sampling import sample

    net, M, T = point.network, point.width, point.samples
    start = time.perf_counter()
    pred = _predict(net, M, T)
    mid = time.perf_counter()
    sampled = sample(net, M, T, point.seed)
    end = time.perf_counter()
    bounds = _num(pred, "lambda_max_bounds", required=False) or (None, None)
    leading = _num(pred, "leading", required=False)
    record = {"P": _num(sampled, "P"), "alpha": _num(pred, "alpha", required=False)}
    for name in ("kappa1", "kappa2", "m", "s", "lambda_max"):
        record[f"predicted_{name}"] = _num(pred, name)
    record.update({
        "predicted_lambda_max_kind": _num(pred, "lambda_max_kind", required=False),
        "predicted_lambda_max_lo": bounds[0],
        "predicted_lambda_max_hi": bounds[1],
        "predicted_eta_max": _num(pred, "eta_max", required=False),
        "predicted_gram_diag": _num(pred, "gram_diag", required=False),
        "predicted_gram_offdiag": _num(pred, "gram_offdiag", required=False),
    })
    for name in ("m", "s", "lambda_max"):
        record[f"leading_{name}"] = _num(leading, name, required=False) if leading is not None else None
    for name in ("kappa1", "kappa2", "m", "s", "lambda_max", "gram_diag", "gram_offdiag"):
        record[f"sampled_{name}"] = _num(sampled, name)
    record["predict_seconds"] = mid - start
    record["sample_seconds"] = end - mid
    return {name: sql_value(name, value) for name, value in record.items()}  # plain numbers, as stored


def _fisher_check(point: Point) -> None:
    """Refuse, before any work, the points predict() cannot do (batch sizes a batch norm needs)."""
    from ..theory.recursions import min_samples_for

    need = min_samples_for(point.network, "fisher")
    if point.samples < need:
        norms = ", ".join(map(str, point.network.norms))
        raise InvalidArgument("samples", point.samples, f"an integer >= {need} for networks with {norms}",
                              "the theory's expectations over the batch statistics need it (see meanfield.predict)")


fisher_task.task_name = "fisher"  # type: ignore[attr-defined]  # the name hashed into task keys
fisher_task.check = _fisher_check  # type: ignore[attr-defined]  # called on every point before a sweep starts


def task_name(task: Callable) -> str:
    """The name hashed into a task key: ``task.task_name`` or ``module.qualname``."""
    name = getattr(task, "task_name", None)
    if isinstance(name, str) and name:
        return name
    module, qual = getattr(task, "__module__", None), getattr(task, "__qualname__", None)
    if not (module and qual) or not callable(task):
        raise InvalidArgument("task", task, "a picklable function point -> dict (or with a task_name attribute)")
    return f"{module}.{qual}"


def identity(point: Point, key: str, task: str, sweep_id: int | None) -> dict:
    """The identity columns of a sweep record (:func:`meanfield.runs.store.identity_columns` of the point)."""
    return identity_columns(key, task, sweep_id, point.spec, point.width, point.samples, point.seed)


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepReport:
    """How one sweep run went: counts, wall time and rates.

    Attributes:
        points: tasks in the grid. skipped: already in the store at the start (resume).
        computed: stored by this run. failed: tasks that raised (their keys stay to do).
        duplicates: computed here but already stored meanwhile, or left to a concurrent sweep on the
            same store that stored them.
        claimed: left to a concurrent sweep that was still computing them when this run ended (a rerun
            picks up any it does not finish).
        seconds: wall time of the run. task_seconds: summed time inside tasks.
        executor: where the tasks ran. status: 'finished' or 'interrupted'.
    """

    points: int
    skipped: int
    computed: int
    failed: int
    duplicates: int
    seconds: float
    task_seconds: float
    executor: str
    status: str
    store: str
    sweep_id: int | None = None
    claimed: int = 0

    @property
    def complete(self) -> bool:
        """True when every point of the grid has a record."""
        return self.skipped + self.computed + self.duplicates == self.points

    def __str__(self) -> str:
        ran = self.computed + self.failed + self.duplicates
        rows = [("store", self.store), ("executor", self.executor), ("status", self.status),
                ("points", f"{self.points} ({self.skipped} already stored, {self.computed} computed, "
                           f"{self.failed} failed, {self.duplicates} stored meanwhile by another sweep"
                           + (f", {self.claimed} being computed by another sweep" if self.claimed else "") + ")"),
                ("wall time", f"{self.seconds:.2f} s" + (f" ({ran / self.seconds:.2f} tasks/s, "
                                                         f"{self.task_seconds / ran:.3f} s in a task on average)"
                                                         if ran and self.seconds > 0 else ""))]
        w = max(len(k) for k, _ in rows)
        return "Sweep\n" + "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


# -- the sweep ----------------------------------------------------------------------------------------


def sweep(grid: Any, store: str | os.PathLike | ResultStore, *, scheduler: Any = None, processes: int | None = None,
          resume: bool = True, quiet: bool = False, task: Callable[[Point], Mapping] | None = None,
          connect_timeout: float = CONNECT_TIMEOUT) -> SweepResults:
    """Run every point of ``grid`` not yet in ``store``; one committed record per finished task.

    Args:
        grid: a :class:`~meanfield.runs.grids.Grid`, a dict of grid keys, or a TOML grid file path.
        store: the SQLite results file (created if missing) or an open :class:`~meanfield.runs.store.ResultStore`.
        scheduler: None for local processes; a Dask scheduler address ``"tcp://host:port"``, a
            ``distributed.Client`` or a cluster object (``LocalCluster``) to run on that cluster.
        processes: local worker processes (default: the CPUs available; 1 runs in this process).
        resume: skip points already in the store (default). ``False`` refuses a store that already
            holds some of the grid's points instead of silently mixing runs.
        quiet: no progress bar and no summary.
        task: ``point -> dict`` of statistics (picklable; default :func:`fisher_task`). Optional
            attributes: ``task_name`` (hashed into the keys; default module.qualname) and
            ``check(point)``, which raises InvalidArgument for points the task cannot run, called
            on every point before anything starts.
        connect_timeout: seconds a Dask scheduler has to answer.

    Returns:
        The :class:`~meanfield.runs.store.SweepResults` of the grid's points (``.report`` says how the run
        went); tasks that raised are in ``.failures`` and are tried again by the next run.

    Raises:
        InvalidArgument: bad grid, store or options; :class:`SchedulerUnavailable` when the Dask
            scheduler does not answer within ``connect_timeout`` seconds.

    Example:
        >>> import tempfile, os
        >>> def area(point):
        ...     return {"MT": point.width * point.samples}
        >>> r = sweep({"depth": 1, "activation": "linear", "sigma_w2": 1, "width": [2, 3], "samples": 2},
        ...           os.path.join(tempfile.mkdtemp(), "s.sqlite"), task=area, processes=1, quiet=True)
        >>> sorted(rec["MT"] for rec in r.records), r.report.complete
        ([4, 6], True)
    """
    grid = load_grid(grid)
    task = fisher_task if task is None else task
    name = task_name(task)
    if not isinstance(resume, bool):
        raise InvalidArgument("resume", resume, "True or False")
    connect_timeout = check_real("connect_timeout", connect_timeout, minimum=0, strict_min=True, symbolic=False)
    check_execution(scheduler, processes)
    points = grid.points()
    check = getattr(task, "check", None)
    if check is not None:
        for point in {(p.network, p.samples): p for p in points}.values():
            try:
                check(point)
            except InvalidArgument as err:
                raise grid.blame(err) from None
    keys = [p.key(name) for p in points]
    opened = store if isinstance(store, ResultStore) else ResultStore(store)
    try:
        return _sweep(grid, opened, points, keys, task, name, scheduler, processes, resume, quiet, connect_timeout)
    finally:
        if opened is not store:
            opened.close()


def _sweep(grid, store, points, keys, task, name, scheduler, processes, resume, quiet, connect_timeout):
    done = store.done_keys(keys)
    if done and not resume:
        raise InvalidArgument("resume", False, "True for a store that already holds points of this grid",
                              f"{store.path} holds {len(done)} of its {len(points)} points: pass resume=True "
                              "(--resume) to skip them, or use a new store")
    todo = sorted(((p, k) for p, k in zip(points, keys) if k not in done), key=lambda pk: -pk[0].cost())
    executor = make_executor(task, scheduler, processes, connect_timeout, quiet, tasks=len(todo)) if todo else None
    description = executor.description if executor else "none (nothing to do)"
    sweep_id = store.begin_sweep(task=name, points=len(points), skipped=len(done), scheduler=description,
                                 grid=grid.to_dict(), grid_source=grid.source)
    computed = failed = duplicates = 0
    elsewhere: list = []  # tasks stored or claimed by another sweep on this store while this one ran
    task_seconds = 0.0
    status = "interrupted"
    start = time.perf_counter()
    bar = _progress(len(points), len(done), quiet)

    def claimed():
        # each task is claimed in the store the moment it is handed out, so a second sweep on the same
        # store takes the tasks this one has not reached (the executors read their items lazily)
        for point, key in todo:
            if store.claim(key, sweep_id):
                yield point, key
            else:
                elsewhere.append(key)
                bar.update(1)

    try:
        if executor is not None:
            for point, key, outcome in executor.run(claimed()):
                task_seconds += outcome.get("elapsed") or 0.0
                ok, failure = outcome["ok"], None
                if ok:
                    record = identity(point, key, name, sweep_id)
                    clash = sorted(set(outcome["stats"]) & (set(record) | set(BOOKKEEPING_COLUMNS)))
                    if clash:
                        ok, failure = False, f"the task returned reserved column names {clash}"
                if ok:
                    record.update(outcome["stats"])
                    record.update(elapsed=outcome["elapsed"], cpu=outcome["cpu"], worker=outcome["worker"],
                                  finished=now(), meanfield_version=meanfield_version())
                    if store.add(record):
                        computed += 1
                    else:
                        duplicates += 1
                else:
                    failed += 1
                    store.add_failure({"key": key, "sweep": sweep_id, "task": name,
                                       "network": canonical_json(point.spec), "width": point.width,
                                       "samples": point.samples, "seed": point.seed,
                                       "error": failure or outcome["error"],
                                       "traceback": outcome.get("traceback"), "worker": outcome.get("worker"),
                                       "finished": now()})
                bar.update(1)
                if failed:
                    bar.set_postfix(failed=failed, refresh=False)
        status = "finished"
    finally:
        bar.close()
        if executor is not None:
            executor.close(abort=status != "finished")
        store.end_sweep(sweep_id, status=status, computed=computed, failed=failed, duplicates=duplicates)
    results = load(store, keys=keys)
    stored = {r["key"] for r in results.records}
    report = SweepReport(points=len(points), skipped=len(done), computed=computed, failed=failed,
                         duplicates=duplicates + sum(k in stored for k in elsewhere),
                         seconds=time.perf_counter() - start, task_seconds=task_seconds,
                         executor=description, status=status, store=str(store.path), sweep_id=sweep_id,
                         claimed=sum(k not in stored for k in elsewhere))
    order = {key: i for i, key in enumerate(keys)}  # grid order, whatever order the tasks finished in
    results = SweepResults(records=sorted(results.records, key=lambda r: order[r["key"]]), columns=results.columns,
                           failures=results.failures,
                           path=results.path, report=report)
    if not quiet:
        print(results)
        if results.failures:
            first = results.failures[-1]
            print(f"\n{len({f['key'] for f in results.failures})} tasks failed; the last error: {first['error']}\n"
                  "(rerun the sweep to retry them; tracebacks are in the store's 'failures' table)")
    return results


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def _progress(total: int, initial: int, quiet: bool):
    if quiet:
        return _NoBar()
    from tqdm.auto import tqdm

    class Bar(tqdm):
        monitor_interval = 0  # no monitor thread left behind in the caller's process

    return Bar(total=total, initial=initial, desc="sweep", unit="task", file=sys.stderr, dynamic_ncols=True,
               smoothing=0.1)


# -- command line (wired by meanfield.cli as `meanfield sweep`) ----------------------------------------


def add_sweep_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``meanfield sweep`` arguments to ``parser`` (a subcommand parser); run with :func:`cli_run`.

    Example:
        >>> p = add_sweep_arguments(argparse.ArgumentParser(prog="meanfield sweep"))
        >>> a = p.parse_args(["grid.toml", "--processes", "2", "--quiet"])
        >>> a.grid, a.store, a.processes, a.resume, a.quiet
        ('grid.toml', None, 2, True, True)
    """
    parser.add_argument("grid", help="TOML grid file: keys depth, activation, sigma_w2, sigma_b2, outputs, "
                                     "alphas, norms, input_q1, input_q2, width, samples, seeds")
    parser.add_argument("--store", "-o", default=None, metavar="FILE",
                        help="SQLite results file (default: the grid file with suffix .sqlite)")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="run on this Dask scheduler (needs the 'dask' extra) instead of local processes")
    parser.add_argument("--processes", "-j", type=int, default=None, metavar="N",
                        help="local worker processes (default: all CPUs; at most the points to compute and "
                             "the CPUs; 1 = in this process)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="skip points already in the store (the default)")
    resume.add_argument("--no-resume", dest="resume", action="store_false",
                        help="refuse a store that already holds points of this grid")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT, metavar="SECONDS",
                        help=f"how long a Dask scheduler has to answer (default {CONNECT_TIMEOUT:g})")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the grid and how many points are stored / to do, and run nothing")
    return parser


def cli_run(args: argparse.Namespace) -> int:
    """Run ``meanfield sweep`` from parsed arguments; the exit status (0 done, 1 tasks failed, 130 ^C).

    Bad input raises :class:`~meanfield.InvalidArgument` (a grid file error names the line) for
    the caller to print as a usage error.
    """
    grid = Grid.from_toml(args.grid)
    store = args.store or str(Path(args.grid).with_suffix(".sqlite"))
    if args.dry_run:
        keys = [p.key(task_name(fisher_task)) for p in grid.points()]
        stored = 0
        if Path(store).is_file():
            with ResultStore(store) as opened:
                stored = len(opened.done_keys(keys))
        print(grid)
        print(f"store {store}: {stored} of {len(keys)} points stored, {len(keys) - stored} to do")
        return 0
    try:
        results = sweep(grid, store, scheduler=args.scheduler, processes=args.processes, resume=args.resume,
                        quiet=args.quiet, connect_timeout=args.connect_timeout)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished records are in {store}; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 1 if results.failures else 0


def sweep_main(argv: list[str] | None = None) -> int:
    """``meanfield sweep ...`` as a standalone program (``python -m meanfield.runs.sweeps grid.toml``)."""
    parser = add_sweep_arguments(argparse.ArgumentParser(
        prog="meanfield sweep", description="Run a grid of networks x widths x seeds: theory and sampled FIM "
                                            "statistics into an SQLite results store (resumable)."))
    args = parser.parse_args(argv)
    try:
        return cli_run(args)
    except InvalidArgument as err:
        print(f"meanfield sweep: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sweep_main())
