"""``meanfield reproduce --scheduler``: a tiny run on a real local Dask scheduler and worker gives the numbers
of a local run, stores them in the same results store, and resumes from it."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest

from meanfield.errors import InvalidArgument
from meanfield.runs.reproduce import load_config, reproduce
from cli_runner import run

distributed = pytest.importorskip("distributed")

TINY = """\
[reproduce]
activations = ["relu"]
depth = 2
outputs = 2
placements = ["none", "batch-center:last"]
widths = [16, 32]
samples = 4
seeds = 2
stages = ["width"]
"""


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and one worker process on 127.0.0.1, started (and stopped) by the test."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local:
        yield local


def _numbers(out: Path) -> dict:
    """points.csv as {(identity...): row}, without the timing column."""
    with open(out / "points.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    ident = ("stage", "activation", "placement", "width", "samples", "seed", "kind")
    return {tuple(r[c] for c in ident): {k: v for k, v in r.items() if k != "seconds"} for r in rows}


def test_reproduce_on_a_dask_scheduler_equals_a_local_run(cluster, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    status, stdout, err = run(capsys, "reproduce", "--config", str(config), "--out", str(tmp_path / "dask"),
                              "--scheduler", cluster.scheduler_address, "--no-progress")
    assert status == 0, err
    assert "12 points computed, 0 reused" in stdout  # 2 placements x 2 widths x (theory + 2 seeds)
    local = reproduce(load_config(config), out=tmp_path / "local", processes=1, progress=False)
    assert local.computed == 12
    assert _numbers(tmp_path / "dask") == _numbers(tmp_path / "local")
    assert (tmp_path / "dask" / "summary.csv").read_text() == (tmp_path / "local" / "summary.csv").read_text()
    with sqlite3.connect(tmp_path / "dask" / "results.sqlite") as db:
        (executor,) = db.execute("SELECT scheduler FROM sweeps WHERE task = 'reproduce'").fetchone()
        workers = {w for (w,) in db.execute("SELECT DISTINCT worker FROM results")}
    assert executor.startswith("Dask scheduler tcp://127.0.0.1") and len(workers) == 1
    # resumed from the same store, on the scheduler: nothing to compute
    again = reproduce(load_config(config), out=tmp_path / "dask", scheduler=cluster.scheduler_address,
                      progress=False)
    assert (again.computed, again.reused) == (0, 12)


def test_scheduler_and_processes_contradict(cluster, tmp_path, capsys):
    with pytest.raises(InvalidArgument, match="processes"):
        reproduce(load_config(None, quick=True), out=tmp_path / "o", processes=2,
                  scheduler=cluster.scheduler_address)
    status, _, err = run(capsys, "reproduce", "--quick", "--out", str(tmp_path / "o"), "--processes", "2",
                         "--scheduler", cluster.scheduler_address)
    assert status == 2 and "--processes" in err and "Traceback" not in err
