"""Where tasks run: in this process, on a pool of local processes, or on a Dask cluster.

One home for the machinery that sweeps and ``meanfield reproduce`` share: :func:`run_task` (a task's
exceptions come back as data), the local process pool (spawned workers that ignore Ctrl-C, replaced
when a worker dies), the one BLAS thread limiter (:func:`limit_blas_threads`) and the Dask client.
Every executor takes ``(payload, key)`` pairs and yields ``(payload, key, outcome)`` as tasks complete;
``outcome`` is what :func:`run_task` returns.

* local processes: ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` context; a task must be
  importable (defined in a module). Workers are at most the tasks and the CPUs (:func:`local_workers`;
  one worker runs in this process, with the BLAS's own thread count, by default the cores); P worker
  processes get CPUs // P BLAS threads each, set through the environment before they start. Workers
  ignore Ctrl-C (the main process terminates them at once, keeping what is stored) and exit when the
  main process dies, even by SIGKILL (:func:`worker_init`);
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
import re
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
           "CONNECT_TIMEOUT", "POOL_RESTARTS", "THREAD_VARIABLES", "local_workers", "worker_init",
           "check_scheduler_address"]

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
    """Tasks on ``workers`` spawned local processes, at most ``2 * workers`` of them handed out at a time
    (``items`` is read lazily, so a caller can claim each task the moment it is handed out)."""

    def __init__(self, task, workers: int, requested: int | None = None):
        self.task = task
        self.processes = workers
        self.threads = max(1, available_cpus() // workers)
        extra = (f" ({requested} requested: at most the tasks and the CPUs)"
                 if requested is not None and requested != workers else "")
        self.description = f"{workers} local processes{extra}"
        self.pool = None

    def _start(self):
        with limit_blas_threads(self.threads):
            # spawn: fresh interpreters that read the thread variables above and inherit no thread or
            # lock of this process (a Dask client, a progress bar). Start every worker now, while the
            # variables are set (the pool would otherwise start them during later submissions).
            self.pool = concurrent.futures.ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init,
                initargs=(os.getpid(),))
            for future in [self.pool.submit(int, 0) for _ in range(self.processes)]:
                future.result()

    def run(self, items):
        source = iter(items)
        retry: list = []  # tasks in flight when a worker died
        restarts = 0
        window = 2 * self.processes  # enough to keep every worker busy, few enough to split work lazily
        while True:
            self._start()
            futures: dict = {}
            broken = False
            while True:
                while not broken and len(futures) < window:
                    item = retry.pop() if retry else next(source, None)
                    if item is None:
                        break
                    try:
                        futures[self.pool.submit(run_task, self.task, *item)] = item
                    except concurrent.futures.process.BrokenProcessPool:
                        retry.append(item)
                        broken = True
                if not futures:
                    break
                finished, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    point, key = futures.pop(future)
                    try:
                        outcome = future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        broken = True
                        retry.append((point, key))
                        continue
                    yield point, key, outcome
            self.pool.shutdown(wait=True)
            self.pool = None
            if not broken:
                return
            restarts += 1
            if restarts > POOL_RESTARTS:
                raise ExecutorError(f"local worker processes died {restarts} times (out of memory? a crash in a "
                                    f"task?); {len(retry)} tasks in flight not run. Rerun to resume them, "
                                    "or use fewer processes")

    def close(self, abort=False):
        if self.pool is None:
            return
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        if abort:
            # do not wait for running tasks (Ctrl-C returns at once; what is stored stays stored)
            for process in processes:
                process.terminate()
        self.pool.shutdown(wait=not abort, cancel_futures=True)
        if abort:
            deadline = time.monotonic() + 1.0
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
        self.pool = None


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


_ADDRESS = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?P<port>[0-9]{1,5})/?$")


def check_scheduler_address(address: str) -> str:
    """Refuse at once an address that cannot be a Dask scheduler's (rather than let distributed try it
    for the whole timeout and print a traceback from a half-built Client).

    Example:
        >>> check_scheduler_address("tcp://10.0.0.5:8786")
        'tcp://10.0.0.5:8786'
        >>> check_scheduler_address("notaurl")
        Traceback (most recent call last):
        ...
        meanfield.runs.executors.SchedulerUnavailable: scheduler='notaurl' is not allowed: expected the address of a running Dask scheduler, e.g. tcp://host:8786 (an address needs a host and a port)
    """
    text = address.strip()
    if text.startswith("inproc://"):  # distributed's in-process transport: inproc://host/pid/n
        return address
    match = _ADDRESS.match(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise SchedulerUnavailable(address, "an address needs a host and a port" if match is None
                                   else "a port from 1 to 65535")
    return address


def check_execution(scheduler, processes) -> int | None:
    """The number of local processes (None on Dask); raises on options that contradict."""
    if scheduler is not None:
        if isinstance(scheduler, str):
            check_scheduler_address(scheduler)
        if processes is not None:
            raise InvalidArgument("processes", processes, "None when a Dask scheduler is given",
                                  "the cluster's workers decide the parallelism")
        return None
    return available_cpus() if processes is None else check_int("processes", processes, minimum=1)


def local_workers(processes: int, tasks: int | None = None) -> int:
    """Local worker processes to start: at most the tasks and the CPUs available (more would only
    compete for the same cores and memory), at least 1.

    Example:
        >>> local_workers(999, 3) <= min(3, available_cpus())
        True
    """
    return max(1, min(processes, available_cpus(), processes if tasks is None else max(1, tasks)))


def make_executor(task: Callable, scheduler: Any = None, processes: int | None = None,
                  connect_timeout: float = CONNECT_TIMEOUT, quiet: bool = True, name: str = "sweep",
                  tasks: int | None = None):
    """The executor for these options: Dask when ``scheduler`` is given, else local processes: at most
    ``processes`` (default: the CPUs available), the CPUs and ``tasks`` (the number of tasks, if known);
    one worker runs in this process. ``name`` labels Dask keys and messages.

    Example:
        >>> make_executor(len, None, 1).description
        'serial (in-process)'
    """
    n = check_execution(scheduler, processes)
    if n is None:
        return DaskExecutor(task, scheduler, connect_timeout, quiet, name)
    workers = local_workers(n, tasks)
    return SerialExecutor(task) if workers == 1 else LocalPool(task, workers, n)


def worker_init(parent: int) -> None:
    """Initializer of local workers: ignore Ctrl-C, and exit when the parent process dies, even by SIGKILL
    (the pool could not tell them to stop, and they would compute for nobody, holding memory and cores)."""
    ignore_interrupts()
    if sys.platform.startswith("linux"):
        try:  # the kernel sends SIGKILL to this process when its parent dies
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (musl without it, a sandbox): the watchdog remains
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # portable fallback (and the only guard off Linux): a daemon thread that ends the worker once it has
    # been re-parented, i.e. its parent is gone
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="meanfield-parent-watchdog", daemon=True).start()


def ignore_interrupts() -> None:
    """Local workers ignore Ctrl-C: the main process handles it (stops handing out work, keeps what is
    stored, terminates the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
