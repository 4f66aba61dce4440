"""Where tasks run: in this process, on a pool of local processes, or on a Dask cluster.

What sweeps and ``meanfield reproduce`` share: :func:`run_task` (a task's exceptions come back as data),
the executors built on the package's one local process pool and BLAS thread limiter
(:mod:`meanfield.parallel`, also used by ``sample_many``), and the Dask client. Every executor takes
``(payload, key)`` pairs and yields ``(payload, key, outcome)`` as tasks complete; ``outcome`` is what
:func:`run_task` returns.

* local processes: :class:`meanfield.parallel.LocalPool` (spawned workers, at most the tasks and the CPUs,
  CPUs // P BLAS threads each, ignoring Ctrl-C, exiting with the main process even when it is SIGKILLed);
  a task must be importable (defined in a module); one worker runs in this process, with the BLAS's own
  thread count;
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

import functools
import hashlib
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidArgument, check_int
from ..parallel import (POOL_RESTARTS, THREAD_VARIABLES, ExecutorError, LocalPool, available_cpus,  # noqa: F401
                        ignore_interrupts, limit_blas_threads, local_workers, worker_init)

__all__ = ["run_task", "ignore_interrupts", "make_executor", "check_execution", "limit_blas_threads", "available_cpus",
           "SchedulerUnavailable", "ExecutorError", "SerialExecutor", "LocalPool", "DaskExecutor",
           "CONNECT_TIMEOUT", "POOL_RESTARTS", "THREAD_VARIABLES", "local_workers", "worker_init",
           "check_scheduler_address"]

#: Seconds to wait for a Dask scheduler to answer before raising SchedulerUnavailable.
CONNECT_TIMEOUT = 5.0
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
    """The tasks one after another in this process, with one BLAS thread.

    One process is one core's worth of work (``--processes 1``): the points are independent, so
    parallelism belongs to processes, and a multi-threaded BLAS only spins on these mid-sized
    matrices. Measured on 2 cores: a 32-point sweep (M = 128, 256) took 0.25 s of compute with one
    thread and 0.5 s with two; one sample at M = 1024, T = 64, C = 10 0.09 s against 0.16 s, and at
    M = 2048, T = 256 1.12 s against 1.18 s. The caller's own BLAS setting is restored afterwards.
    """

    description = "serial (in-process)"

    def __init__(self, task):
        self.task = task

    def run(self, items):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):  # once: finding the BLAS libraries takes ms
            for point, key in items:
                yield point, key, run_task(self.task, point, key)

    def close(self, abort=False):
        pass


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
    return SerialExecutor(task) if workers == 1 else LocalPool(functools.partial(run_task, task), workers, n)
