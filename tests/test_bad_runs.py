"""A catalogue of bad inputs to sweeps and ``meanfield reproduce``: configs, grids, stores, command lines.

Every case must end in :class:`~meanfield.InvalidArgument` naming the right key (API), or exit status 2
naming the option or key (command line); never exit 0 with null/NaN in the output, never an internal error
(exit 3), never a traceback, and a foreign file is left exactly as it was.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from meanfield.errors import InvalidArgument
from meanfield.runs.grids import MAX_POINTS, Grid
from meanfield.runs.reproduce import load_config, reproduce
from meanfield.runs.store import ResultStore
from meanfield.runs.sweeps import sweep
from cli_runner import run

GRID = 'depth = 2\nactivation = "relu"\nsigma_w2 = 2\nwidth = 4\nsamples = 2\nseeds = 2\n'
BASE = {"depth": 2, "activation": "relu", "sigma_w2": 2, "width": 4, "samples": 2, "seeds": 2}


def tiny_task(point):
    return {"P": point.network.parameter_count(point.width)}


def _foreign(path: Path, table: str = "people") -> bytes:
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE {table} (key TEXT, value REAL)")
    db.execute(f"INSERT INTO {table} VALUES ('a', 1.0)")
    db.commit()
    db.close()
    return path.read_bytes()


def _assert_usage_error(status: int, out: str, err: str, *names: str) -> None:
    assert status == 2, (status, out, err)
    assert "internal error" not in err and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    for bad in ("null", "NaN", "nan", "inf"):
        assert bad not in out.split(), out


# -- reproduce configs (API) ---------------------------------------------------------------------------------

CONFIGS = [
    ("sigma_w2 = {relu = 2, tahn = 1}", "sigma_w2.tahn"),
    ("widths = [64]\n[reproduce]\nwidths = [64]", "widths"),
    ("sigma_w2 = -2", "sigma_w2"),
    ("sigma_w2 = nan", "sigma_w2"),
    ("sigma_b2 = inf", "sigma_b2"),
    ("sigma_w2 = true", "sigma_w2"),
    ("sigma_w2 = [1, 2]", "sigma_w2"),
    ("widths = []", "widths"),
    ("widths = [0]", "widths"),
    ("widths = [1.5]", "widths"),
    ("seeds = -1", "seeds"),
    ("seeds = 'many'", "seeds"),
    ("depth = 0", "depth"),
    ("stages = ['widht']", "stages"),
    ("activations = ['relux']", "activations"),
    ("placements = ['batch:99']", "placements"),
    ("lr_eta_span = -1", "lr_eta_span"),
    ("rmt_ratios = [0]", "rmt_ratios"),
    ("ratio_widths = [30]", "ratio_widths"),
    ("reproduce = 'yes'", "reproduce"),
    ("colour = 'red'", "colour"),
]


@pytest.mark.parametrize("text, key", CONFIGS, ids=[c[0][:30] for c in CONFIGS])
def test_bad_config_names_the_key(tmp_path, text, key):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as caught:
        load_config(path)
    assert caught.value.argument == key, str(caught.value)


@pytest.mark.parametrize("content", [b"\x00\x01\x02\xff\xfe binary", b"= = =", b"[reproduce\nx=1"])
def test_unreadable_config_names_config(tmp_path, capsys, content):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(InvalidArgument) as caught:
        load_config(path)
    assert caught.value.argument == "config"
    _assert_usage_error(*run(capsys, "reproduce", "--config", str(path), "--out", str(tmp_path / "o")), "--config")


# -- grids (API) ---------------------------------------------------------------------------------------------

GRIDS = [
    ({"seeds": 1_000_000_000}, "seeds"),
    ({"seeds": [1, 2, 1]}, "seeds"),
    ({"seeds": []}, "seeds"),
    ({"seeds": -3}, "seeds"),
    ({"width": 0}, "width"),
    ({"width": list(range(1, 2002)), "samples": list(range(2, 1002))}, "width"),
    ({"depth": [2, 2]}, "depth"),
    ({"samples": "two"}, "samples"),
    ({"sigma_w2": float("nan")}, "sigma_w2"),
]


@pytest.mark.parametrize("change, key", GRIDS, ids=[c[1] + str(i) for i, c in enumerate(GRIDS)])
def test_bad_grid_names_the_key(change, key):
    start = time.perf_counter()
    with pytest.raises(InvalidArgument) as caught:
        Grid(**{**BASE, **change})
    assert caught.value.argument == key, str(caught.value)
    assert time.perf_counter() - start < 5  # refused before anything big is allocated


def test_a_grid_of_max_points_is_refused_only_above_the_maximum():
    assert len(Grid(**{**BASE, "seeds": 10_000})) == 10_000
    with pytest.raises(InvalidArgument, match=str(MAX_POINTS)):
        Grid(**{**BASE, "seeds": MAX_POINTS + 1})


def test_a_long_seed_list_is_checked_in_linear_time():
    start = time.perf_counter()
    assert len(Grid(**{**BASE, "seeds": list(range(100_000))})) == 100_000
    assert time.perf_counter() - start < 10  # the quadratic check took 79 s


# -- stores (API) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["people", "results"])
def test_a_foreign_sqlite_file_is_refused_unchanged(tmp_path, table):
    path = tmp_path / "foreign.sqlite"
    before = _foreign(path, table)
    with pytest.raises(InvalidArgument) as caught:
        sweep(BASE, path, task=tiny_task, processes=1, quiet=True)
    assert caught.value.argument == "store" and "left unchanged" in str(caught.value)
    assert path.read_bytes() == before
    assert not (tmp_path / "foreign.sqlite-wal").exists()


def test_a_store_with_an_extra_foreign_table_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    ResultStore(path).close()
    _foreign(path, "people")
    with pytest.raises(InvalidArgument, match="people"):
        ResultStore(path)


@pytest.mark.parametrize("content", [b"just text, not SQLite", b"SQLite format 3\x00" + b"\x00" * 50])
def test_a_file_that_is_not_a_store_is_refused(tmp_path, content):
    path = tmp_path / "s.sqlite"
    path.write_bytes(content)
    with pytest.raises(InvalidArgument) as caught:
        ResultStore(path)
    assert caught.value.argument == "store" and path.read_bytes() == content


def test_reproduce_refuses_a_foreign_results_sqlite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = _foreign(out / "results.sqlite", "results")
    config = load_config(None, quick=True, stages=("width",), widths=(16,), seeds=1, activations=("relu",),
                         placements=("none",))
    with pytest.raises(InvalidArgument) as caught:
        reproduce(config, out=out, processes=1, progress=False)
    assert caught.value.argument == "store" and (out / "results.sqlite").read_bytes() == before


def test_a_cache_value_edited_in_the_store_is_an_error_naming_the_row(tmp_path):
    out = tmp_path / "out"
    config = load_config(None, stages=("width",), widths=(16,), seeds=1, samples=4, activations=("relu",),
                         placements=("none",))
    reproduce(config, out=out, processes=1, progress=False)
    db = sqlite3.connect(out / "results.sqlite")
    db.execute("""UPDATE results SET result_json = '{"m": "abc"}' WHERE rowid = 1""")
    db.commit()
    db.close()
    with pytest.raises(InvalidArgument, match="results.sqlite.*'m' is 'abc'") as caught:
        reproduce(config, out=out, processes=1, progress=False)
    assert caught.value.argument == "out"


# -- command lines --------------------------------------------------------------------------------------------


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(GRID)
    return path


def test_sweep_command_line_catalogue(tmp_path, grid_file, capsys):
    foreign = tmp_path / "foreign.sqlite"
    before = _foreign(foreign)
    big = tmp_path / "big.toml"
    big.write_text(GRID.replace("seeds = 2", "seeds = 1000000000"))
    dupes = tmp_path / "dupes.toml"
    dupes.write_text(GRID.replace("seeds = 2", "seeds = [0, 1, 0]"))
    cases = [
        (["--store", str(foreign)], ["--store", "left unchanged"]),
        (["--store", str(foreign), "--dry-run"], ["--store"]),
        (["--store", str(tmp_path)], ["--store"]),
        (["--store", str(tmp_path / "no" / "dir.sqlite")], ["--store"]),
        (["--processes", "0"], ["--processes"]),
        (["--processes", "-4"], ["--processes"]),
        (["--scheduler", "notaurl"], ["--scheduler"]),
        (["--scheduler", "tcp://host:99999"], ["--scheduler"]),
        (["--scheduler", "tcp://127.0.0.1:9", "--processes", "2"], ["--processes"]),
        (["--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "0"], ["--connect-timeout"]),
    ]
    for extra, names in cases:
        _assert_usage_error(*run(capsys, "sweep", str(grid_file), *extra), *names)
    _assert_usage_error(*run(capsys, "sweep", str(big), "--dry-run"), "seeds", "1000000")
    _assert_usage_error(*run(capsys, "sweep", str(dupes), "--dry-run"), "seeds", "repeated")
    _assert_usage_error(*run(capsys, "sweep", str(tmp_path / "missing.toml")), "grid")
    assert foreign.read_bytes() == before


def test_reproduce_command_line_catalogue(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    conflict = tmp_path / "conflict.toml"
    conflict.write_text("widths = [64]\n[reproduce]\nwidths = [128]\n")
    typo = tmp_path / "typo.toml"
    typo.write_text("sigma_w2 = {relu = 2, tahn = 1}\n")
    cases = [
        (["--out", str(afile)], ["--out"]),
        (["--out", str(afile / "sub")], ["--out"]),
        (["--config", str(conflict)], ["--config", "widths"]),
        (["--config", str(typo)], ["--config", "tahn", "tanh"]),
        (["--config", str(tmp_path / "missing.toml")], ["--config"]),
        (["--config", str(tmp_path)], ["--config"]),
        (["--processes", "0"], ["--processes"]),
        (["--scheduler", "notaurl"], ["--scheduler"]),
        (["--scheduler", "tcp://127.0.0.1:9", "--processes", "2"], ["--processes"]),
    ]
    for extra, names in cases:
        argv = ["reproduce", "--no-progress", *extra]
        if "--out" not in extra:
            argv += ["--out", str(tmp_path / "out")]
        _assert_usage_error(*run(capsys, *argv), *names)
    assert afile.read_text() == "x"


def test_notaurl_fails_fast_without_a_traceback(tmp_path, grid_file, capsys):
    start = time.perf_counter()
    status, out, err = run(capsys, "sweep", str(grid_file), "--scheduler", "notaurl", "--connect-timeout", "2")
    _assert_usage_error(status, out, err, "--scheduler")
    status, out, err = run(capsys, "reproduce", "--scheduler", "notaurl", "--out", str(tmp_path / "o"))
    _assert_usage_error(status, out, err, "--scheduler")
    assert time.perf_counter() - start < 4 and "__del__" not in err
