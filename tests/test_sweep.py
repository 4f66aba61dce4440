"""Sweeps: grids and their file, task keys, the SQLite store, resume, concurrency, local and Dask execution.

The Dask tests start a real ``distributed.LocalCluster`` on 127.0.0.1 (2 worker processes, 1
thread each), kill a worker in the middle of a sweep and check that every record arrives exactly
once. Most tests use tiny tasks defined here (module level, so Dask workers can import them); one
runs the real ``fisher_task`` (predict + sample) on a tiny grid.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sympy

import meanfield as mf
from meanfield.errors import InvalidArgument
from meanfield.runs.grids import Grid, GridFileError, Point, network_from_spec, network_spec
from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.spec.activations import Activation
from meanfield.runs.store import ResultStore, load
from meanfield.runs.sweeps import SchedulerUnavailable, add_sweep_arguments, sweep, sweep_main, task_name

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"depth": [2, 3], "activation": ["relu", "tanh"], "sigma_w2": 2.0, "width": [4, 8], "samples": 2,
         "seeds": 2}  # 16 points


# -- tasks (module level: picklable by reference, importable by Dask workers) ---------------------------------


def count_task(point):
    """Deterministic and fast: what the record must contain is known in advance."""
    return {"P": point.network.parameter_count(point.width), "MT_seed": point.width * point.samples + point.seed}


def slow_task(point):
    time.sleep(0.2)
    return {"P": point.network.parameter_count(point.width), "pid": os.getpid()}


def failing_task(point):
    if point.seed == 1:
        raise ValueError(f"no luck with seed {point.seed}")
    return count_task(point)


def crash_once_task(point):
    """Kills its own worker process (like the OOM killer) the first time any worker reaches seed 1."""
    marker = Path(os.environ["MEANFIELD_TEST_CRASH_MARKER"])
    if point.seed == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return count_task(point)


crash_once_task.task_name = "count"


class InterruptAt:
    """Raises KeyboardInterrupt (like ^C) at the n-th call, in-process."""

    task_name = "count"

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, point):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return count_task(point)


count_task.task_name = "count"  # InterruptAt shares the keys of count_task on purpose


def expected(grid, task=count_task):
    g = grid if isinstance(grid, Grid) else Grid(**grid)
    return {p.key(task.task_name if hasattr(task, "task_name") else task.__qualname__): count_task(p)
            for p in g.points()}


# -- grids ----------------------------------------------------------------------------------------


def test_grid_is_the_product_of_its_options():
    g = Grid(**SMALL)
    assert len(g) == 16 and len(g.networks) == 4
    points = g.points()
    assert len({(p.network, p.width, p.samples, p.seed) for p in points}) == 16
    # networks outermost, seeds innermost
    assert [p.seed for p in points[:4]] == [0, 1, 0, 1] and [p.width for p in points[:4]] == [4, 4, 8, 8]


def test_grid_scalars_per_layer_values_norms_and_explicit_networks():
    g = Grid(depth=3, activation=[("relu", "tanh")], sigma_w2=[(1, 2, 2)], sigma_b2=0.1, outputs=[1, 4],
             norms=["none", "batch:last", [LayerNorm(1), BatchNorm("last", center_only=True)]], width=8,
             samples=3, seeds=[5, 7])
    assert len(g) == 2 * 3 * 2
    net = g.networks[-1]
    assert [a.name for a in net.activation] == ["relu", "tanh"]
    assert net.sigma_w2 == (1.0, 2.0, 2.0) and net.outputs == 4
    assert net.norms == (LayerNorm(1), BatchNorm(3, center_only=True))
    assert [p.seed for p in g.points()[:2]] == [5, 7]
    nets = [Network(2, "relu", 2, 0), Network(2, "erf", 1, 0.1)]
    assert Grid(networks=nets, width=[4, 8], samples=2).networks == tuple(nets)
    with pytest.raises(InvalidArgument, match="depth"):
        Grid(networks=nets, depth=3, width=4, samples=2)


def test_grid_file_equals_grid_object(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(textwrap.dedent("""\
        # a comment
        depth = [2, 3]
        activation = ["relu", "leaky_relu(a=0.2)", { expr = "x*tanh(x)", name = "xtanh" }]
        sigma_w2 = [1.0, 2.0]
        sigma_b2 = 0.0
        outputs = 2
        norms = ["none", "batch:last", "layer:1, batch-center:last"]
        width = [16, 32]
        samples = 4
        seeds = 3
        """))
    g = Grid.from_toml(path)
    assert len(g) == 2 * 3 * 2 * 3 * 2 * 3
    same = Grid(depth=[2, 3], activation=["relu", mf.activation("leaky_relu", a=0.2),
                                          Activation.from_expr("x*tanh(x)", name="xtanh")],
                sigma_w2=[1, 2], outputs=2, norms=[(), BatchNorm("last"), (LayerNorm(1), BatchNorm("last", True))],
                width=[16, 32], samples=4, seeds=3)
    assert [p.key("t") for p in g.points()] == [p.key("t") for p in same.points()]
    assert g.source == path.read_text()


GOOD = 'depth = 2\nactivation = "relu"\nsigma_w2 = 2.0\nwidth = 8\nsamples = 4\n'


@pytest.mark.parametrize("text, line, key, words", [
    (GOOD + "widht = 16\n", 6, "widht", ["did you mean 'width'"]),
    (GOOD.replace("sigma_w2", "sigma_w"), 3, "sigma_w", ["did you mean 'sigma_w2'"]),
    (GOOD + "[network]\ndepth = 3\n", 6, "network", ["not a grid key"]),
    (GOOD.replace("depth = 2", "depth = [2, 0]"), 1, "depth", ["depth=0", ">= 1"]),
    (GOOD.replace('"relu"', '"rleu"'), 2, "activation", ["did you mean 'relu'"]),
    (GOOD.replace('"relu"', '"leaky_relu(b=1)"'), 2, "activation", ["parameter"]),
    (GOOD + 'norms = ["btach:last"]\n', 6, "norms", ["did you mean 'batch:last'"]),
    (GOOD + 'norms = ["layer:2"]\n', 6, "norms", ["hidden layer"]),
    (GOOD.replace("samples = 4", "samples = 2") + 'norms = "batch:last"\n', 5, "samples", [">= 3"]),
    (GOOD + "seeds = [1, 1]\n", 6, "seeds", ["repeated"]),
    (GOOD.replace("sigma_w2 = 2.0", "sigma_w2 = [[1.0, 2.0, 3.0]]"), 3, "sigma_w2", ["2 values"]),
    (GOOD.replace("width = 8", "width = 8.5"), 4, "width", ["integer"]),
    (GOOD + "alphas = [[1, 0.3]]\n", 4, "width", ["alpha_1"]),
    (GOOD + "outputs = \n", 6, "(syntax)", ["not valid TOML"]),
    (GOOD.replace("samples = 4\n", ""), None, "samples", ["required"]),
    ('note = """\ndepth = 2\n"""\n' + GOOD, 1, "note", ["not a grid key"]),
])
def test_grid_file_errors_name_key_and_line(tmp_path, text, line, key, words):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(GridFileError) as info:
        Grid.from_toml(path)
    err = info.value
    assert (err.line, err.key) == (line, key), str(err)
    message = str(err)
    assert message.startswith(f"{path}, line {line}:" if line else f"{path}:")
    for word in words:
        assert word in message
    assert isinstance(err, InvalidArgument) and isinstance(err, ValueError)


def test_grid_rejects_bad_python_input():
    with pytest.raises(InvalidArgument, match="sigma_w2"):
        Grid(depth=2, activation="relu", width=4, samples=2)
    with pytest.raises(InvalidArgument, match="width"):
        Grid(depth=2, activation="relu", sigma_w2=1, width=[], samples=2)
    with pytest.raises(InvalidArgument, match="symbolic"):
        Grid(depth=2, activation="relu", sigma_w2=sympy.Symbol("s", positive=True), width=4, samples=2)
    with pytest.raises(InvalidArgument, match="grid"):
        sweep({"depth": 2, "actvation": "relu"}, "unused.sqlite", task=count_task)


# -- task keys and pickling ---------------------------------------------------------------------


def test_task_key_is_deterministic_across_processes_and_sensitive_to_every_coordinate():
    net = Network(3, "leaky_relu", (1, 2, 2), 0.1, outputs=2, norms=[BatchNorm("last")])
    p = Point(net, 16, 4, 3)
    code = ("from meanfield.runs.grids import Point; from meanfield.spec.network import Network, BatchNorm; "
            "print(Point(Network(3, 'leaky_relu', (1, 2, 2), 0.1, outputs=2, norms=[BatchNorm('last')]), 16, 4, 3)"
            ".key('fisher'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONHASHSEED": "123"}, check=True)
    assert out.stdout.strip() == p.key("fisher")
    others = [Point(net, 32, 4, 3), Point(net, 16, 8, 3), Point(net, 16, 4, 4), Point(net.with_(sigma_b2=0.2), 16, 4, 3),
              Point(net.with_(norms=[BatchNorm("last", True)]), 16, 4, 3), Point(net.with_(outputs=3), 16, 4, 3)]
    keys = {p.key("fisher"), p.key("other")} | {q.key("fisher") for q in others}
    assert len(keys) == 2 + len(others)


def test_specs_round_trip_and_points_pickle():
    nets = [Network(3, [Activation.from_expr("x*tanh(x)"), "erf"], (1, 2, 2), 0.1, outputs=2,
                    alphas=(1, 2, 1), norms=[LayerNorm(1), BatchNorm("last")]),
            Network(1, "linear", 1, 0), Network(2, mf.activation("leaky_relu", a=0.2), 2, 0)]
    for net in nets:
        assert network_from_spec(network_spec(net)) == net
        point = Point(net, 8, 3, 1)
        back = pickle.loads(pickle.dumps(point))
        assert back == point and back.key("x") == point.key("x")
    cloudpickle = pytest.importorskip("cloudpickle")  # what distributed serializes tasks with
    assert cloudpickle.loads(cloudpickle.dumps(Point(nets[0], 8, 3, 1))).key("x") == Point(nets[0], 8, 3, 1).key("x")


# -- the store, resume, interruption, failures ---------------------------------------------------


def test_serial_sweep_stores_one_record_per_point_and_a_rerun_does_no_work(tmp_path):
    store = tmp_path / "r.sqlite"
    results = sweep(SMALL, store, task=count_task, processes=1, quiet=True)
    want = expected(SMALL)
    assert results.report.computed == 16 and results.report.complete
    assert {r["key"]: {"P": r["P"], "MT_seed": r["MT_seed"]} for r in results.records} == want
    first = results.records[0]
    assert first["task"] == "count" and first["sigma_w2"] == 2.0 and first["norms"] == "none"
    assert network_from_spec(first["network"]).depth == first["depth"]
    calls = InterruptAt(10 ** 9)
    again = sweep(SMALL, store, task=calls, processes=1, quiet=True)
    assert calls.calls == 0 and again.report.computed == 0 and again.report.skipped == 16 and len(again) == 16
    with pytest.raises(InvalidArgument, match="resume"):
        sweep(SMALL, store, task=count_task, processes=1, quiet=True, resume=False)
    with ResultStore(store) as opened:
        sweeps = opened.sweeps()
        assert [s["status"] for s in sweeps] == ["finished", "finished"]
        assert sweeps[0]["meanfield_version"] == mf.__version__ and '"width": [4, 8]' in sweeps[0]["grid"]
        assert opened.meta()["format"] == "1"


def test_interrupted_sweep_keeps_finished_records_and_resumes_the_rest(tmp_path):
    store = tmp_path / "r.sqlite"
    with pytest.raises(KeyboardInterrupt):
        sweep(SMALL, store, task=InterruptAt(7), processes=1, quiet=True)
    assert len(load(store)) == 6  # every finished task was committed; the 7th was in flight
    rest = InterruptAt(10 ** 9)
    results = sweep(SMALL, store, task=rest, processes=1, quiet=True)
    assert rest.calls == 10 and results.report.computed == 10 and results.report.skipped == 6
    assert {r["key"] for r in results.records} == set(expected(SMALL))
    with ResultStore(store) as opened:
        assert [s["status"] for s in opened.sweeps()] == ["interrupted", "finished"]


def test_failed_tasks_are_recorded_and_retried(tmp_path):
    store = tmp_path / "r.sqlite"
    failing_task.task_name = "count"
    try:
        results = sweep(SMALL, store, task=failing_task, processes=1, quiet=True)
    finally:
        del failing_task.task_name
    assert results.report.failed == 8 and results.report.computed == 8 and not results.report.complete
    assert len(results.failures) == 8 and "no luck with seed 1" in results.failures[0]["error"]
    assert "Traceback" in results.failures[0]["traceback"]
    retried = sweep(SMALL, store, task=count_task, processes=1, quiet=True)
    assert retried.report.computed == 8 and retried.report.skipped == 8 and not retried.failures
    assert len(load(store)) == 16


def test_results_as_numpy_masked_records_and_pandas(tmp_path):
    store = tmp_path / "r.sqlite"
    with ResultStore(store) as opened:
        opened.add({"key": "a", "width": 8, "m": 0.5, "kind": "prediction", "lo": None})
        opened.add({"key": "b", "width": 16, "m": float("nan"), "kind": "bound", "lo": 1.5})
    results = load(store)
    assert [r["m"] for r in results.records] == [0.5, None]  # NaN is stored as NULL: no value
    arr = results.to_numpy()
    assert arr["width"].dtype == np.int64 and arr["m"].dtype == np.float64 and arr["kind"].dtype.kind == "U"
    assert arr["m"].mask.tolist() == [False, True] and arr["lo"].tolist() == [None, 1.5]
    assert not np.isnan(arr["m"].data).any()
    try:
        import pandas  # noqa: F401  # optional
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            results.to_pandas()
    else:
        assert list(results.to_pandas()["width"]) == [8, 16]
    assert "2 records" in str(results)


def test_store_refuses_foreign_files(tmp_path):
    bad = tmp_path / "not.sqlite"
    bad.write_text("hello, I am not a database" * 100)
    with pytest.raises(InvalidArgument, match="store"):
        ResultStore(bad)
    with pytest.raises(InvalidArgument, match="store"):
        load(tmp_path / "missing.sqlite")
    with pytest.raises(InvalidArgument, match="directory"):
        ResultStore(tmp_path)


# -- concurrency: two sweeps on one store --------------------------------------------------------------


def test_two_concurrent_sweeps_on_one_store_never_duplicate(tmp_path):
    store, go = tmp_path / "shared.sqlite", tmp_path / "go"
    grid = {**SMALL, "seeds": 3}  # 24 points
    code = textwrap.dedent(f"""
        import sys, time, os
        sys.path.insert(0, {str(ROOT)!r})
        from meanfield.runs.sweeps import sweep
        def slowish(point):
            time.sleep(0.03)
            return {{"P": point.network.parameter_count(point.width)}}
        slowish.task_name = "slowish"
        open({str(tmp_path)!r} + "/ready-" + str(os.getpid()), "w").close()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        r = sweep({grid!r}, {str(store)!r}, task=slowish, processes=1, quiet=True)
        print(r.report.computed, r.report.duplicates, r.report.skipped)
        """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    deadline = time.time() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.time() < deadline:  # both imported: start together
        time.sleep(0.02)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    counts = [tuple(map(int, out.split())) for out, _ in outs]
    assert sum(c[0] for c in counts) == 24, (counts, [o[1][-2000:] for o in outs])  # each stored by one of them
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM results").fetchone() == (24, 24)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM sweeps WHERE status = 'finished'").fetchone()[0] == 2


# -- local processes ----------------------------------------------------------------------------------


def test_local_processes_give_the_same_records_as_serial(tmp_path):
    parallel = sweep(SMALL, tmp_path / "p.sqlite", task=count_task, processes=2, quiet=True)
    assert parallel.report.executor == "2 local processes" and parallel.report.computed == 16
    assert {r["key"]: {"P": r["P"], "MT_seed": r["MT_seed"]} for r in parallel.records} == expected(SMALL)
    with pytest.raises(InvalidArgument, match="processes"):
        sweep(SMALL, tmp_path / "q.sqlite", task=count_task, processes=0, quiet=True)


def test_local_pool_replaces_a_killed_worker_and_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MEANFIELD_TEST_CRASH_MARKER", str(tmp_path / "crashed"))
    results = sweep(SMALL, tmp_path / "r.sqlite", task=crash_once_task, processes=2, quiet=True)
    assert (tmp_path / "crashed").exists()  # a worker did die mid-sweep
    assert results.report.computed == 16 and not results.failures
    assert {r["key"]: {"P": r["P"], "MT_seed": r["MT_seed"]} for r in results.records} == expected(SMALL)


def test_progress_bar_and_summary_unless_quiet(tmp_path, capsys):
    sweep(SMALL, tmp_path / "r.sqlite", task=count_task, processes=1)
    out, err = capsys.readouterr()
    assert "16/16" in err and "task/s" in err  # tqdm: count and rate
    assert "16 computed" in out and "L=3 tanh sw2=2 sb2=0 C=1" in out
    sweep(SMALL, tmp_path / "r.sqlite", task=count_task, processes=1, quiet=True)
    assert capsys.readouterr() == ("", "")


# -- Dask -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local:
        yield local


def test_dask_sweep_survives_a_killed_worker_and_stores_every_record_once(cluster, tmp_path):
    import distributed

    store = tmp_path / "dask.sqlite"
    grid = SMALL  # 16 tasks of 0.2 s on 2 workers: ~1.6 s, more after the kill
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        pids = client.run(os.getpid)
    victim = next(iter(pids.values()))
    killed = {}

    def killer():
        deadline = time.time() + 60
        while time.time() < deadline:
            if store.exists():
                try:
                    with sqlite3.connect(store, timeout=5) as db:
                        stored = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                except sqlite3.OperationalError:  # tables not created yet
                    stored = 0
                if stored >= 3:
                    os.kill(victim, signal.SIGKILL)  # mid-run: this worker is inside a task
                    killed["after"] = stored
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    results = sweep(grid, store, task=slow_task, scheduler=cluster.scheduler_address, quiet=True)
    thread.join()
    assert 3 <= killed.get("after", -1) < 16, "the worker was not killed while the sweep ran"
    want = {p.key(task_name(slow_task)) for p in Grid(**grid).points()}
    keys = [r["key"] for r in results.records]
    assert sorted(keys) == sorted(set(keys)) and set(keys) == want  # every record, exactly once
    assert results.report.computed == 16 and results.report.failed == 0 and results.report.duplicates == 0
    assert "Dask scheduler tcp://127.0.0.1" in results.report.executor
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM results").fetchone() == (16, 16)
    assert {r["P"] for r in results.records} == {count_task(p)["P"] for p in Grid(**grid).points()}


def test_dask_accepts_a_client_and_resume_does_no_work(cluster, tmp_path):
    import distributed

    store = tmp_path / "r.sqlite"
    sweep(SMALL, store, task=count_task, processes=1, quiet=True)
    with distributed.Client(cluster, set_as_default=False) as client:
        again = sweep(SMALL, store, task=count_task, scheduler=client, quiet=True)
        assert again.report.computed == 0 and again.report.skipped == 16
        more = sweep({**SMALL, "seeds": 3}, store, task=count_task, scheduler=client, quiet=True)
        assert more.report.computed == 8 and len(more) == 24
    with pytest.raises(InvalidArgument, match="processes"):
        sweep(SMALL, store, task=count_task, scheduler=cluster.scheduler_address, processes=2, quiet=True)


def test_unreachable_scheduler_fails_fast_with_a_clear_error(tmp_path):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(SchedulerUnavailable) as info:
        sweep(SMALL, tmp_path / "r.sqlite", task=count_task, scheduler=f"tcp://127.0.0.1:{port}",
              connect_timeout=1.5, quiet=True)
    assert time.perf_counter() - start < 10
    assert info.value.argument == "scheduler" and f"127.0.0.1:{port}" in str(info.value)
    assert "within 1.5 s" in str(info.value)


# -- command line ---------------------------------------------------------------------------------------


def test_cli_reports_grid_file_errors_as_usage_errors(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(GOOD + "dpeth = 3\n")
    assert sweep_main([str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line 6" in err and "did you mean 'depth'" in err


def test_cli_dry_run_and_arguments(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(GOOD.replace("width = 8", "width = [8, 16]") + "seeds = 2\n")
    assert sweep_main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"points +4", out) and f"store {tmp_path / 'g.sqlite'}: 0 of 4 points stored, 4 to do" in out
    import argparse
    args = add_sweep_arguments(argparse.ArgumentParser()).parse_args(
        ["g.toml", "--no-resume", "--scheduler", "tcp://h:1", "-o", "x.sqlite", "--connect-timeout", "2"])
    assert (args.resume, args.scheduler, args.store, args.connect_timeout) == (False, "tcp://h:1", "x.sqlite", 2.0)


# -- the real task: predict + sample ---------------------------------------------------------------


def test_fisher_task_records_theory_and_samples(tmp_path, capsys):
    pytest.importorskip("meanfield.theory.fisher")
    pytest.importorskip("meanfield.sampled.sampling")
    grid = {"depth": 2, "activation": ["relu", "tanh"], "sigma_w2": 2.0, "outputs": 2,
            "norms": ["none", "batch:last"], "width": 8, "samples": 3, "seeds": 2}
    with pytest.raises(InvalidArgument, match=r"samples=3 .* >= 6"):  # predict's need, before any work
        sweep(grid, tmp_path / "f.sqlite", processes=1, quiet=True)
    assert not (tmp_path / "f.sqlite").exists()
    grid["samples"] = 6
    results = sweep(grid, tmp_path / "f.sqlite", processes=1, quiet=True)
    assert len(results) == 8 and not results.failures, results.failures[:1]
    for r in results.records:
        net = network_from_spec(r["network"])
        assert r["P"] == net.parameter_count(8) and r["task"] == "fisher"
        for name in ("m", "s", "lambda_max", "kappa1", "kappa2"):
            assert np.isfinite(r[f"predicted_{name}"]) and np.isfinite(r[f"sampled_{name}"])
        assert r["sampled_m"] > 0 and r["sampled_lambda_max"] > 0
    assert "m theory" in str(results)
    # through the command line too: the same store, nothing left to do
    path = tmp_path / "f.toml"
    path.write_text('depth = 2\nactivation = ["relu", "tanh"]\nsigma_w2 = 2.0\noutputs = 2\n'
                    'norms = ["none", "batch:last"]\nwidth = 8\nsamples = 6\nseeds = 2\n')
    assert sweep_main([str(path), "--quiet", "--processes", "1"]) == 0
    assert len(load(tmp_path / "f.sqlite")) == 8
    path.write_text(path.read_text().replace("samples = 6", "samples = 4"))
    assert sweep_main([str(path), "--quiet"]) == 2
    assert f"{path}, line 7: samples=4" in capsys.readouterr().err
