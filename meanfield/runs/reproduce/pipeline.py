"""The run of ``meanfield reproduce``: the stages' jobs, computed through the results store and the
executors that sweeps use, then the CSV files, figures and report.

Every job not yet in the store ``results.sqlite`` of the output folder runs on the executor
(:mod:`meanfield.runs.executors`: in this process, on local processes, or on a Dask scheduler), and the
process that called :func:`reproduce` stores each point the moment it is done (one committed row) and
appends it to ``cache.jsonl``: a rerun, after an interruption or with more seeds, computes only what is
missing; a rerun of a finished run computes nothing. ``cache.jsonl`` of an older run is imported into the
store on the first run, so old runs still resume.

Example:
    >>> from meanfield.runs.reproduce.config import load_config
    >>> cfg = load_config(None, quick=True, widths=(32, 64), seeds=2, stages=("width",),
    ...                   activations=("relu",), placements=("none", "batch:last"))
    >>> reproduce(cfg, out="/tmp/mf-doc", processes=1, progress=False).files  # doctest: +SKIP
    ('cache.jsonl', 'results.sqlite', 'points.csv', 'summary.csv', 'width_relu.png', 'width_relu.pdf', 'report.md')
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InvalidArgument, check_int, check_real
from ..executors import CONNECT_TIMEOUT, check_execution, make_executor
from ..store import ResultStore, meanfield_version, now
from .cache import CacheFile, job_record, stored_values, synchronise
from .config import Config
from .points import Job, run_job, theory_point
from .report import write_csv, write_report
from .results import Results
from .stages import STAGES, ReportSection

__all__ = ["reproduce", "ReproduceResult", "PointFailed", "STORE_NAME", "CACHE_NAME"]

#: The results store in the output folder (the SQLite store of sweeps).
STORE_NAME = "results.sqlite"
#: The JSON-lines export of every stored point (the format of earlier versions).
CACHE_NAME = "cache.jsonl"


class PointFailed(RuntimeError):
    """A point's computation raised (its traceback is in the store's ``failures`` table)."""


@dataclass(frozen=True)
class ReproduceResult:
    """What a run wrote: the folder, the files, how many points were computed or reused, the time."""

    out: Path
    files: tuple[str, ...]
    computed: int
    reused: int
    seconds: float
    skipped: tuple[str, ...] = ()
    findings: tuple[ReportSection, ...] = ()

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


def _compute(jobs: list[Job], store: ResultStore, cache: CacheFile, config: Config, scheduler: Any,
             processes: int | None, connect_timeout: float, progress: bool) -> int:
    """Compute the jobs not in the store, biggest first, storing and exporting each as it finishes."""
    from tqdm.auto import tqdm

    done = store.done_keys(job.key for job in jobs)
    # theory first (cheap, and a network the theory rejects fails before any sampling), then the
    # biggest sampling jobs first so that the last ones to finish are small
    todo = sorted((job for job in jobs if job.key not in done),
                  key=lambda job: (job.function is not theory_point, -job.cost))
    if not todo:
        return 0
    executor = make_executor(run_job, scheduler, processes, connect_timeout, quiet=not progress, name="reproduce",
                             tasks=len(todo))
    run_id = store.begin_sweep(task="reproduce", points=len(jobs), skipped=len(done), scheduler=executor.description,
                               grid=config.to_dict())
    bar = tqdm(total=len(todo), desc="reproduce", unit="pt", disable=not progress, smoothing=0.05)
    computed = failed = duplicates = 0
    status = "interrupted"
    try:
        for job, key, outcome in executor.run([(job, job.key) for job in todo]):
            if not outcome["ok"]:
                failed += 1
                kwargs = dict(job.kwargs)
                store.add_failure({"key": key, "sweep": run_id, "task": job.task, "width": kwargs.get("width"),
                                   "samples": kwargs.get("samples"), "seed": kwargs.get("seed"),
                                   "error": outcome["error"], "traceback": outcome.get("traceback"),
                                   "worker": outcome.get("worker"), "finished": now()})
                status = "failed"
                # a usage error (a network the theory refuses) stays one; anything else names the point
                raise outcome.get("exception") or PointFailed(
                    f"{outcome['error']} (computing {key}; the traceback is in the 'failures' table of {store.path})")
            record = job_record(job, outcome["stats"], run_id, elapsed=outcome["elapsed"], cpu=outcome["cpu"],
                                worker=outcome["worker"], version=meanfield_version())
            if store.add(record):
                computed += 1
                cache.add(key, outcome["stats"], dict(job.labels), outcome["elapsed"])
            else:  # pragma: no cover - the folder's lock keeps a second run out
                duplicates += 1
            bar.update()
        status = "finished"
    finally:
        bar.close()
        # interrupted or failed: drop the queue and stop the workers; every finished point is stored
        executor.close(abort=status != "finished")
        store.end_sweep(run_id, status=status, computed=computed, failed=failed, duplicates=duplicates)
    return len(todo)


def _remove_store(out: Path) -> None:
    """--fresh: the store (with its write-ahead log) and the cache go."""
    for name in (CACHE_NAME, STORE_NAME, STORE_NAME + "-wal", STORE_NAME + "-shm"):
        (out / name).unlink(missing_ok=True)


def reproduce(config: Config | None = None, out: str | os.PathLike = "meanfield-results", *,
              processes: int | None = None, fresh: bool = False, progress: bool = True, scheduler: Any = None,
              connect_timeout: float = CONNECT_TIMEOUT) -> ReproduceResult:
    """Run the stages of ``config`` into ``out``: results store, cache, CSV files, figures (PNG and PDF), report.md.

    Args:
        config: settings (:func:`~meanfield.runs.reproduce.config.load_config`); default :class:`Config`().
        out: output folder, created if missing; points already stored there are reused.
        processes: local worker processes for the points (default 2; at most the points to compute and
            the CPUs; 1 runs in this process).
        fresh: discard the store and the cache in ``out`` first.
        progress: show a tqdm progress bar.
        scheduler: run the points on this Dask scheduler (``"tcp://host:port"``, a ``distributed.Client``
            or a cluster object) instead of local processes, as :func:`meanfield.sweep` does.
        connect_timeout: seconds a Dask scheduler has to answer.

    Returns:
        A :class:`ReproduceResult` (``.summary()`` prints what was written).

    Raises:
        InvalidArgument: bad options (``processes`` together with ``scheduler``), a folder another run
            writes to; :class:`~meanfield.runs.executors.SchedulerUnavailable` when the scheduler does not
            answer; :class:`PointFailed` when a point's computation raised.

    Example:
        >>> reproduce(None, out="/tmp/mf-doc", processes=2, scheduler="tcp://127.0.0.1:8786")
        Traceback (most recent call last):
        ...
        meanfield.errors.InvalidArgument: processes=2 is not allowed: expected None when a Dask scheduler is given (the cluster's workers decide the parallelism)
    """
    config = Config() if config is None else config
    if scheduler is None:
        processes = 2 if processes is None else check_int("processes", processes, minimum=1)
    check_execution(scheduler, processes)
    connect_timeout = check_real("connect_timeout", connect_timeout, minimum=0, strict_min=True, symbolic=False)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgument("out", str(out), "a folder (created if missing), not an existing file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent that is a file, no permission, read-only file system
        raise InvalidArgument("out", str(out), "a folder that can be created and written",
                              f"{type(err).__name__}: {err.strerror or err}") from None
    start = time.perf_counter()
    lock = _lock(out)
    try:
        if fresh:
            _remove_store(out)
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
        with ResultStore(out / STORE_NAME) as store:
            cache = CacheFile(out / CACHE_NAME)
            synchronise(store, cache, {job.key: job for job in unique})
            computed = _compute(unique, store, cache, config, scheduler, processes, connect_timeout, progress)
            values = stored_values(store, [job.key for job in unique])
        results = Results(tasks, values)
        findings: list[ReportSection] = []
        files = [CACHE_NAME, STORE_NAME]
        files += write_csv(results, out)
        for stage in stages:
            new = stage.render(config, results, out)
            findings += new
            files += [name for f in new for name in f.figures]
        seconds = time.perf_counter() - start
        write_report(out / "report.md", config, findings, skipped, computed, len(unique) - computed, seconds)
        files.append("report.md")
        return ReproduceResult(out, tuple(files), computed, len(unique) - computed, seconds, tuple(skipped),
                               tuple(findings))
    finally:
        lock.unlink(missing_ok=True)
