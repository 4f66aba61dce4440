"""The one local process pool and BLAS thread limiter of the package.

Sweeps and ``meanfield reproduce`` (through :mod:`meanfield.runs.executors`) and ``sample_many`` all run
their local workers here:

* workers are spawned interpreters (no thread or lock of the caller is inherited), at most the tasks and
  the CPUs (:func:`local_workers`); P workers get CPUs // P BLAS threads each, set through the environment
  before they start (:func:`limit_blas_threads`), so that they never oversubscribe the cores;
* workers ignore Ctrl-C (the caller terminates them at once: :meth:`LocalPool.close` with ``abort``) and
  exit when the caller dies, even by SIGKILL (:func:`worker_init`);
* a pool whose worker died (out of memory, a crash) is replaced up to :data:`POOL_RESTARTS` times, and the
  items in flight are run again.

Like :mod:`meanfield.errors` it sits below every other module of the package.

Example:
    >>> local_workers(999, 3) <= min(3, available_cpus())
    True
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import sys
import time

__all__ = ["LocalPool", "ExecutorError", "POOL_RESTARTS", "THREAD_VARIABLES", "limit_blas_threads", "available_cpus",
           "local_workers", "worker_init", "ignore_interrupts"]

#: How often a broken local process pool (a worker killed, e.g. out of memory) is replaced.
POOL_RESTARTS = 3


class ExecutorError(RuntimeError):
    """The executor itself failed (not a task): e.g. local worker processes keep dying."""


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
    """``function(*item)`` for each item on ``workers`` spawned local processes, at most ``2 * workers`` of them handed out at a time
    (``items`` is read lazily, so a caller can claim each task the moment it is handed out)."""

    def __init__(self, function, workers: int, requested: int | None = None):
        self.function = function
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
                        futures[self.pool.submit(self.function, *item)] = item
                    except concurrent.futures.process.BrokenProcessPool:
                        retry.append(item)
                        broken = True
                if not futures:
                    break
                finished, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    item = futures.pop(future)
                    try:
                        outcome = future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        broken = True
                        retry.append(item)
                        continue
                    yield (*item, outcome)
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


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def local_workers(processes: int, tasks: int | None = None) -> int:
    """Local worker processes to start: at most the tasks and the CPUs available (more would only
    compete for the same cores and memory), at least 1.

    Example:
        >>> local_workers(999, 3) <= min(3, available_cpus())
        True
    """
    return max(1, min(processes, available_cpus(), processes if tasks is None else max(1, tasks)))


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
