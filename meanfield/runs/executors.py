"""Where tasks run: in this process, on a pool of local processes, or on a Dask cluster.

One home for the machinery that sweeps and ``meanfield reproduce`` share: :func:`run_task` (a task's
exceptions come back as data), the local process pool (spawned workers that ignore Ctrl-C, replaced
when a worker dies), the one BLAS thread limiter (:func:`limit_blas_threads`) and the Dask client.
Every executor takes ``(payload, key)`` pairs and yields ``(payload, key, outcome)`` as tasks complete;
``outcome`` is what :func:`run_task` returns.

* local processes: ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` context; a task must be
  importable (defined in a module), ``processes=1`` runs in this process;
* Dask: ``scheduler="tcp://host:8786"`` (or a ``distributed.Client`` / ``LocalCluster``), through
  distributed's own ``Client.map`` and ``as_completed``: the cluster schedules and retries tasks of
  workers that die. Needs the optional extra ``pip install 'meanfield-fisher[dask]'``.

Example:
    >>> def double(x):
    ...     return {"y": 2 * x}
    >>> [(key, outcome["stats"]) for _, key, outcome in make_executor(double, None, 1).run([(3, "a")])]
    [('a', {'y': 6})]
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidArgument, check_int

__all__ = ["run_task", "ignore_interrupts", "make_executor", "check_execution", "limit_blas_threads", "available_cpus",
           "SchedulerUnavailable", "ExecutorError", "SerialExecutor", "LocalPool", "DaskExecutor",
           "CONNECT_TIMEOUT", "POOL_RESTARTS", "THREAD_VARIABLES"]

#: Seconds to wait for a Dask scheduler to answer before raising SchedulerUnavailable.
CONNECT_TIMEOUT = 5.0
#: How often a broken local process pool (a worker killed, e.g. out of memory) is replaced.
POOL_RESTARTS = 3


class SchedulerUnavailable(InvalidArgument):
    """The Dask scheduler address did not answer within the timeout (or distributed is missing).

    Example:
        >>> print(SchedulerUnavailable("tcp://127.0.0.1:9", "no answer within 2 s"))
        scheduler='tcp://127.0.0.1:9' is not allowed: expected the address of a running Dask scheduler, e.g. tcp://host:8786 (no answer within 2 s)
    """

    def __init__(self, address: Any, hint: str | None = None):
        super().__init__("scheduler", address, "the address of a running Dask scheduler, e.g. tcp://host:8786", hint)

    def __reduce__(self):
        return (type(self), (self.value, self.hint))


class ExecutorError(RuntimeError):
    """The executor itself failed (not a task): e.g. local worker processes keep dying."""


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(task: Callable, point: Any, key: str) -> dict:
    """Run one task on a worker; exceptions come back as data so one bad point stops nothing."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        stats = task(point)
        if not isinstance(stats, Mapping):
            raise TypeError(f"the task returned {type(stats).__name__}, not a dict of statistics")
        outcome = {"ok": True, "key": key, "stats": dict(stats)}
    except Exception as err:  # noqa: BLE001 - any task error is recorded as a failure of that point
        outcome = {"ok": False, "key": key, "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc()}
        if isinstance(err, InvalidArgument):  # picklable: a caller may re-raise it as a usage error
            outcome["exception"] = err
    # cpu < elapsed means the task waited for a core (a busy machine, or BLAS threads fighting)
    outcome.update(elapsed=time.perf_counter() - start, cpu=time.process_time() - cpu, worker=_worker_id())
    return outcome


# -- executors: each yields (payload, key, outcome) as tasks complete -----------------------------------


class SerialExecutor:
    description = "serial (in-process)"

    def __init__(self, task):
        self.task = task

    def run(self, items):
        for point, key in items:
            yield point, key, run_task(self.task, point, key)

    def close(self, abort=False):
        pass


#: Thread-count variables of BLAS / OpenMP libraries, set for local workers as Dask's nanny does.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")


@contextlib.contextmanager
def limit_blas_threads(threads: int):
    """BLAS threads per worker = CPUs // processes (unless the user set them), while workers start.

    N processes each running a BLAS with N threads oversubscribe the cores; on a busy machine a
    spinning OpenBLAS made one sample 40x slower than with one thread (measured, 2 cores).
    """
    added = [v for v in THREAD_VARIABLES if v not in os.environ]
    for v in added:
        os.environ[v] = str(threads)
    try:
        yield
    finally:
        for v in added:
            os.environ.pop(v, None)


class LocalPool:
    def __init__(self, task, processes: int):
        self.task = task
        self.processes = processes
        self.threads = max(1, available_cpus() // processes)
        self.description = f"{processes} local processes"
        self.pool = None

    def run(self, items):
        pending = list(items)
        restarts = 0
        while pending:
            with limit_blas_threads(self.threads):
                # spawn: fresh interpreters that read the thread variables above and inherit no
                # thread or lock of this process (a Dask client, a progress bar). Workers start
                # during the submissions, so they all see the variables.
                self.pool = concurrent.futures.ProcessPoolExecutor(
                    min(self.processes, len(pending)), mp_context=multiprocessing.get_context("spawn"),
                    initializer=ignore_interrupts)
                futures = {self.pool.submit(run_task, self.task, p, k): (p, k) for p, k in pending}
            broken = False
            for future in concurrent.futures.as_completed(futures):
                point, key = futures[future]
                try:
                    outcome = future.result()
                except concurrent.futures.process.BrokenProcessPool:
                    broken = True
                    continue
                futures[future] = None
                yield point, key, outcome
            pending = [pk for pk in futures.values() if pk is not None]
            self.pool.shutdown(wait=True)
            self.pool = None
            if broken and pending:
                restarts += 1
                if restarts > POOL_RESTARTS:
                    raise ExecutorError(f"local worker processes died {restarts} times (out of memory? a crash in a "
                                        f"task?); {len(pending)} tasks not run. Rerun to resume them, "
                                        "or use fewer processes")
            elif pending:  # pragma: no cover - as_completed returns every future
                raise ExecutorError(f"{len(pending)} tasks neither finished nor failed")

    def close(self, abort=False):
        if self.pool is None:
            return
        if abort:
            # in-flight tasks would otherwise run to completion before the interpreter can exit
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.terminate()
        self.pool.shutdown(wait=not abort, cancel_futures=True)


class DaskExecutor:
    def __init__(self, task, scheduler, connect_timeout: float, quiet: bool, name: str = "sweep"):
        try:
            import distributed
        except ImportError:
            raise SchedulerUnavailable(scheduler, "running on a Dask cluster needs the 'distributed' package: "
                                       "pip install 'meanfield-fisher[dask]'") from None
        self.distributed = distributed
        self.task = task
        self.name = name
        self.own = False
        self.futures = []
        if isinstance(scheduler, distributed.Client):
            self.client = scheduler
        else:
            address = getattr(scheduler, "scheduler_address", scheduler)  # a LocalCluster / SpecCluster
            if not isinstance(address, str) or not address.strip():
                raise InvalidArgument("scheduler", scheduler, "a scheduler address 'tcp://host:port', a "
                                      "distributed.Client, or a cluster object")
            try:
                self.client = distributed.Client(address, timeout=connect_timeout, set_as_default=False)
            except Exception as err:  # noqa: BLE001 - OSError, TimeoutError, protocol errors of a non-Dask port
                raise SchedulerUnavailable(address, f"no Dask scheduler answered within {connect_timeout:g} s: "
                                           f"{type(err).__name__}: {err}") from None
            self.own = True
        workers = len(self.client.scheduler_info().get("workers", {}))
        self.description = f"Dask scheduler {self.client.scheduler.address} ({workers} workers)"
        if not workers and not quiet:
            print(f"meanfield {name}: the Dask scheduler has no workers yet; tasks wait until workers join",
                  file=sys.stderr)

    def run(self, items):
        items = list(items)
        if not items:
            return
        points = [p for p, _ in items]
        keys = [k for _, k in items]
        # A digest of the task key as the Dask key (any text may be a task key): two clients running the
        # same points share the work.
        dask_keys = [f"meanfield-{self.name}-{hashlib.sha256(k.encode()).hexdigest()}" for k in keys]
        by_dask_key = dict(zip(dask_keys, items))
        self.futures = self.client.map(run_task, [self.task] * len(items), points, keys, key=dask_keys, pure=False)
        # with_results: the client's event loop fetches results concurrently as tasks finish,
        # rather than this thread asking for them one round trip at a time
        for future, outcome in self.distributed.as_completed(self.futures, loop=self.client.loop, with_results=True,
                                                             raise_errors=False):
            point, key = by_dask_key[str(future.key)]
            if isinstance(outcome, BaseException) or future.status != "finished":
                # KilledWorker (the task took 3 workers down with it), cancelled, lost
                err = outcome if isinstance(outcome, BaseException) else RuntimeError(future.status)
                outcome = {"ok": False, "key": key, "error": f"{type(err).__name__}: {err}",
                           "traceback": "".join(traceback.format_exception_only(type(err), err)),
                           "elapsed": None, "cpu": None, "worker": None}
            future.release()
            yield point, key, outcome

    def close(self, abort=False):
        if abort and self.futures:
            try:
                self.client.cancel(self.futures)
            except Exception:  # noqa: BLE001 - the client may already be gone; nothing else to do
                pass
        if self.own:
            self.client.close()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_execution(scheduler, processes) -> int | None:
    """The number of local processes (None on Dask); raises on options that contradict."""
    if scheduler is not None:
        if processes is not None:
            raise InvalidArgument("processes", processes, "None when a Dask scheduler is given",
                                  "the cluster's workers decide the parallelism")
        return None
    return available_cpus() if processes is None else check_int("processes", processes, minimum=1)


def make_executor(task: Callable, scheduler: Any = None, processes: int | None = None,
                  connect_timeout: float = CONNECT_TIMEOUT, quiet: bool = True, name: str = "sweep"):
    """The executor for these options: Dask when ``scheduler`` is given, else ``processes`` local
    processes (default: the CPUs available; 1 runs in this process). ``name`` labels Dask keys and messages.

    Example:
        >>> make_executor(len, None, 1).description
        'serial (in-process)'
    """
    n = check_execution(scheduler, processes)
    if n is None:
        return DaskExecutor(task, scheduler, connect_timeout, quiet, name)
    return SerialExecutor(task) if n == 1 else LocalPool(task, n)


def ignore_interrupts() -> None:
    """Local workers ignore Ctrl-C: the main process handles it (stops handing out work, keeps what is
    stored, terminates the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
