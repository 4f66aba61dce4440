"""Benchmark: one 64-task sweep serially, on 2 local processes and on a 2-worker Dask LocalCluster.

Each task is the real ``fisher_task`` (predict + sample of a depth-3 net, M=2048, T=128, C=10:
about a second of CPU on one core). All three runs compute the same 64 points into separate
stores; the script checks that they stored identical sampled statistics (the seed fixes the
network), prints wall times, speedups against the serial run timed in this same process, and the
per-task overhead of the Dask path, measured twice: on the real sweep, and with a no-op task.

Every BLAS runs on one thread (set below, before numpy loads, and by both pools for their
workers), so a task uses one core whatever runs it. The machine's load average is printed before
and after: on a shared machine the speedups measure a share of the cores, not the cores.

    python benchmarks/sweep.py                 # the full benchmark (a few minutes)
    python benchmarks/sweep.py --quick         # 16 small tasks: checks that it runs
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import meanfield  # noqa: E402
from meanfield.runs.grids import Grid  # noqa: E402
from meanfield.runs.sweeps import sweep  # noqa: E402


def noop_task(point):
    """A task that does nothing: its wall time through an executor is that executor's overhead."""
    return {"nothing": 0}


def run(label, grid, store, **options):
    start = time.perf_counter()
    results = sweep(grid, store, quiet=True, **options)
    wall = time.perf_counter() - start
    assert results.report.computed == len(results) and not results.failures, (label, results.failures[:1])
    return wall, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 small tasks instead of 64 large ones")
    args = parser.parse_args(argv)
    if args.quick:
        grid = {"depth": 3, "activation": ["relu", "tanh"], "sigma_w2": 2.0, "outputs": 10, "width": 256,
                "samples": 32, "seeds": 8}
    else:
        grid = {"depth": 3, "activation": ["relu", "tanh"], "sigma_w2": 2.0, "outputs": 10, "width": 2048,
                "samples": 128, "seeds": 32}
    tasks = len(Grid(**grid))
    print(f"meanfield {meanfield.__version__}; {os.cpu_count()} CPUs; BLAS threads "
          f"{os.environ['OPENBLAS_NUM_THREADS']}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"grid: {tasks} tasks (depth 3, relu/tanh, M={grid['width']}, T={grid['samples']}, C=10), fisher_task")

    from distributed import LocalCluster

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        serial, r_serial = run("serial", grid, tmp / "serial.sqlite", processes=1)
        rows.append(("serial (1 process)", serial, r_serial))
        local, r_local = run("local", grid, tmp / "local.sqlite", processes=2)
        rows.append(("2 local processes", local, r_local))
        start = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            startup = time.perf_counter() - start
            dask, r_dask = run("dask", grid, tmp / "dask.sqlite", scheduler=cluster.scheduler_address)
            rows.append(("Dask LocalCluster, 2 workers", dask, r_dask))
            # no-op tasks: the slope between two sweep sizes is the per-task cost, free of the fixed
            # costs (connecting, opening the store, reading the results back)
            noop = {}
            for n in (32, 288):
                for where, options in (("dask", {"scheduler": cluster.scheduler_address}), ("serial", {"processes": 1})):
                    noop[where, n], _ = run("noop", {**grid, "activation": "relu", "seeds": n, "width": 8, "samples": 2},
                                            tmp / f"noop-{where}-{n}.sqlite", task=noop_task, **options)
        # the seed fixes the sampled network: every executor must have stored the same numbers
        def table(results):
            return {r["key"]: (r["sampled_m"], r["sampled_s"], r["sampled_lambda_max"]) for r in results.records}
        same = table(r_serial) == table(r_local) == table(r_dask)

    print(f"\n{'executor':<30} {'wall s':>8} {'tasks/s':>8} {'speedup':>8} {'task wall s':>12} {'task cpu s':>11}")
    for label, wall, results in rows:
        walls = results.column("elapsed")
        cpus = results.column("cpu")
        print(f"{label:<30} {wall:8.2f} {tasks / wall:8.2f} {serial / wall:7.2f}x {sum(walls) / tasks:12.3f} "
              f"{sum(cpus) / tasks:11.3f}")
    task_wall = sum(r_serial.column("elapsed")) / tasks
    # Overhead: the wall time a worker spends per task beyond the task itself (2 workers in parallel).
    overhead = (dask * 2 - sum(r_dask.column("elapsed"))) / tasks
    print(f"\nidentical sampled statistics in all three stores: {same}")
    print(f"Dask overhead on this sweep: {overhead * 1e3:.1f} ms per task per worker outside the task, worker "
          f"warm-up (imports) included ({overhead / task_wall:.1%} of a {task_wall:.2f} s serial task); "
          f"cluster start-up {startup:.2f} s not counted")
    for where, label in (("dask", "Dask, 2 workers"), ("serial", "serial, in-process")):
        slope = (noop[where, 288] - noop[where, 32]) / 256
        print(f"no-op task, {label}: {slope * 1e3:.2f} ms per task (sweeps of 32 and 288 no-op tasks: "
              f"{noop[where, 32]:.2f} s, {noop[where, 288]:.2f} s)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
