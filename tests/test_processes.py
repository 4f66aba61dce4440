"""Processes of ``meanfield sweep`` / ``reproduce``: no worker outlives its command, Ctrl-C returns at once
keeping finished work, an abandoned run is marked interrupted, concurrent sweeps on one store split the work,
worker counts and BLAS threads stay within the cores.

The tests that start a real ``meanfield sweep`` are Linux-only (they read /proc or use psutil to find the
workers) and bounded in time; whatever they start is killed in their ``finally``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from meanfield.runs.executors import (THREAD_VARIABLES, LocalPool, SerialExecutor, available_cpus, local_workers,
                                      make_executor, worker_init)
from meanfield.runs.store import ResultStore, process_alive
from meanfield.runs.sweeps import sweep

ROOT = Path(__file__).resolve().parents[1]
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, uses prctl")
two_cores = pytest.mark.skipif(available_cpus() < 2, reason="needs 2 CPUs for 2 worker processes")

# ~0.5 s a task (exact Fisher spectrum at M=1024, T=16): workers are busy whenever they are looked at
BUSY_GRID = textwrap.dedent("""\
    depth = 3
    activation = "relu"
    sigma_w2 = 2
    width = 1024
    samples = 16
    seeds = {seeds}
    """)


def blas_task(point):
    """What a worker sees: its BLAS thread variable and its pid."""
    return {"threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")), "pid": os.getpid()}


def env_task(point):
    return {"pid": os.getpid()}


def blas_threads_task(point):
    from threadpoolctl import threadpool_info

    return {"threads": max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"),
                           default=1)}


# -- helpers ------------------------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is ``pid``."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - /proc by parent pid
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[-1].split()
                except OSError:
                    continue
                if int(fields[1]) == pid and fields[0] != b"Z":
                    found.add(int(entry))
        return found
    try:
        return {c.pid for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids) -> set[int]:
    return {pid for pid in pids if process_alive(pid)}


def _start_sweep(tmp_path: Path, seeds: int, store: str = "s.sqlite", processes: int = 2) -> subprocess.Popen:
    grid = tmp_path / "grid.toml"
    grid.write_text(BUSY_GRID.format(seeds=seeds))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "meanfield", "sweep", str(grid), "--store", str(tmp_path / store),
                             "-j", str(processes), "--quiet"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_workers(main: subprocess.Popen) -> set:
    """The children of a 2-worker sweep once all are up: the resource tracker and the 2 workers."""
    return _wait_for(lambda: (lambda c: c if len(c) >= 3 else None)(_children(main.pid)), 30, "the worker processes")


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _stored(path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _cleanup(main: subprocess.Popen, pids) -> None:
    for pid in _alive(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if main.poll() is None:
        main.kill()
    main.communicate(timeout=10)


# -- real sweeps --------------------------------------------------------------------------------------------


@linux
@two_cores
def test_sigkill_of_the_main_process_leaves_no_worker_and_the_run_is_marked_interrupted(tmp_path):
    main = _start_sweep(tmp_path, seeds=40)
    workers: set[int] = set()
    try:
        # the resource tracker and the 2 workers are the children of the main process
        workers = _wait_for_workers(main)
        _wait_for(lambda: _stored(tmp_path / "s.sqlite") >= 1, 30, "a first stored point")
        main.send_signal(signal.SIGKILL)
        main.wait(timeout=5)
        _wait_for(lambda: not _alive(workers) or None, 5, f"workers {sorted(_alive(workers))} to exit")
        with ResultStore(tmp_path / "s.sqlite") as store:  # the next open sees the dead run
            assert [run["status"] for run in store.sweeps()] == ["interrupted"]
            assert store.count() >= 1
    finally:
        _cleanup(main, workers)


@linux
@two_cores
def test_ctrl_c_returns_within_2_s_keeping_the_finished_points(tmp_path):
    main = _start_sweep(tmp_path, seeds=40)
    workers: set[int] = set()
    try:
        workers = _wait_for_workers(main)
        before = _wait_for(lambda: _stored(tmp_path / "s.sqlite") or None, 30, "a first stored point")
        start = time.monotonic()
        main.send_signal(signal.SIGINT)
        status = main.wait(timeout=10)
        seconds = time.monotonic() - start
        assert status == 130 and seconds < 2.0, (status, seconds)
        _wait_for(lambda: not _alive(workers) or None, 3, "the workers to exit")
        with ResultStore(tmp_path / "s.sqlite") as store:
            assert store.count() >= before
            assert [run["status"] for run in store.sweeps()] == ["interrupted"]
        assert b"Traceback" not in main.stderr.read()
    finally:
        _cleanup(main, workers)


@linux
@two_cores
def test_ctrl_c_in_reproduce_returns_within_2_s_keeping_the_finished_points(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('activations = ["relu"]\nplacements = ["none"]\nwidths = [1024]\nsamples = 16\nseeds = 40\n'
                      'stages = ["width"]\n')
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    main = subprocess.Popen([sys.executable, "-m", "meanfield", "reproduce", "--config", str(config), "--out", str(out),
                             "--processes", "2", "--no-progress"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers: set[int] = set()
    try:
        # the theory point, then a sampled one
        before = _wait_for(lambda: (lambda n: n if n >= 2 else None)(_stored(out / "results.sqlite")), 60,
                           "stored points")
        workers = _children(main.pid)
        start = time.monotonic()
        main.send_signal(signal.SIGINT)
        status = main.wait(timeout=10)
        seconds = time.monotonic() - start
        assert status == 130 and seconds < 2.0, (status, seconds)
        _wait_for(lambda: not _alive(workers) or None, 3, "the workers to exit")
        with ResultStore(out / "results.sqlite") as store:
            assert store.count() >= before
            assert [run["status"] for run in store.sweeps()] == ["interrupted"]
        assert not (out / ".lock").exists()
    finally:
        _cleanup(main, workers)


@linux
def test_two_concurrent_sweeps_on_one_store_split_the_work(tmp_path):
    seeds = 12
    first = _start_sweep(tmp_path, seeds=seeds, processes=1)
    second = _start_sweep(tmp_path, seeds=seeds, processes=1)
    try:
        assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0, (first.stderr.read(),
                                                                                 second.stderr.read())
        with ResultStore(tmp_path / "s.sqlite") as store:
            runs = store.sweeps()
            assert store.count() == seeds
            # every point computed once in all: the runs claimed disjoint tasks
            assert sum(run["computed"] for run in runs) == seeds, runs
            assert sum(run["duplicates"] for run in runs) == 0, runs
            assert store._db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    finally:
        _cleanup(first, ())
        _cleanup(second, ())


# -- the store's side: claims and abandoned runs ------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_abandoned_running_run_is_marked_interrupted_and_its_claims_released(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        run = store.begin_sweep(task="t", points=2, skipped=0, scheduler="x")
        assert store.claim("k1", run)
        store._db.execute("UPDATE sweeps SET pid=? WHERE id=?", (_dead_pid(), run))
        alive = store.begin_sweep(task="t", points=2, skipped=0, scheduler="x")  # this process: alive
    with ResultStore(path) as store:
        status = {r["id"]: r["status"] for r in store.sweeps()}
        assert status == {run: "interrupted", alive: "running"}
        assert store.claim("k1", alive)  # released with its dead run


def test_a_claim_of_a_live_run_is_respected_and_a_stored_key_is_never_claimed(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as store:
        a = store.begin_sweep(task="t", points=2, skipped=0, scheduler="x")
        b = store.begin_sweep(task="t", points=2, skipped=0, scheduler="x")
        assert store.claim("k", a) and not store.claim("k", b) and store.claim("k", a)
        store.end_sweep(a, status="interrupted", computed=0, failed=0, duplicates=0)
        assert store.claim("k", b)  # a's claims went with its end
        store.add({"key": "stored"})
        assert not store.claim("stored", b)


def test_process_alive():
    assert process_alive(os.getpid()) and not process_alive(_dead_pid()) and not process_alive("x")


# -- worker counts and BLAS threads -------------------------------------------------------------------------


def test_workers_are_at_most_the_tasks_and_the_cpus():
    cpus = available_cpus()
    assert local_workers(999, 3) == min(3, cpus)
    assert local_workers(999, 1) == 1 and local_workers(1, 100) == 1 and local_workers(999) == cpus
    executor = make_executor(env_task, None, 999, tasks=3)
    if min(3, cpus) == 1:
        assert isinstance(executor, SerialExecutor)
    else:
        assert isinstance(executor, LocalPool) and executor.processes == min(3, cpus)
        assert "999 requested" in executor.description
    assert isinstance(make_executor(env_task, None, 999, tasks=1), SerialExecutor)


@two_cores
def test_a_sweep_with_999_processes_for_3_points_uses_at_most_the_cores_with_their_share_of_blas_threads(
        tmp_path, monkeypatch):
    for variable in THREAD_VARIABLES:  # a user's (or another library's) own setting would win
        monkeypatch.delenv(variable, raising=False)
    grid = {"depth": 1, "activation": "linear", "sigma_w2": 1, "width": 2, "samples": 1, "seeds": 3}
    result = sweep(grid, tmp_path / "s.sqlite", task=blas_task, processes=999, quiet=True)
    cpus = available_cpus()
    workers = min(3, cpus)
    assert len({r["pid"] for r in result.records}) <= workers
    assert {r["threads"] for r in result.records} == {max(1, cpus // workers)}
    assert "OPENBLAS_NUM_THREADS" not in os.environ  # only set while the workers start


@linux
def test_the_worker_initializer_ends_a_worker_whose_parent_is_gone():
    # a child that runs worker_init with a parent pid that is not its parent exits at once
    code = "from meanfield.runs.executors import worker_init; worker_init(1); import time; time.sleep(30)"
    if os.getppid() == 1:  # pragma: no cover - pid 1 is our parent: pick any other number
        code = code.replace("worker_init(1)", "worker_init(2)")
    child = subprocess.run([sys.executable, "-c", code], timeout=20, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == 1
    assert callable(worker_init)


def test_in_process_runs_use_one_blas_thread_and_restore_the_callers():
    # one process = one core's worth of work: the serial executor runs its tasks with one BLAS thread
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        executor = make_executor(blas_threads_task, None, 1)
        assert isinstance(executor, SerialExecutor)
        (_, _, outcome), = list(executor.run([(0, "a")]))
        assert outcome["ok"] and outcome["stats"]["threads"] == 1
        assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before
