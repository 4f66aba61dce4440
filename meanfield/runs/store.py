"""The results store of a sweep: one SQLite file, written one committed record at a time.

Why SQLite: it is in the standard library, it is one file that ``sqlite3 results.sqlite``, pandas,
R or any SQL tool opens, and its locking makes concurrent writers safe. Every record is committed
on its own transaction, so an interrupted sweep loses at most the tasks in flight. The file is in
WAL mode: while a sweep runs, the newest commits sit in ``results.sqlite-wal`` beside it (SQL tools
read both; to copy the store, copy both or wait for the sweep to end, which folds the log back into
the one file). Keep the store on a local disk. The task key
(:meth:`meanfield.runs.grids.Point.key`) is UNIQUE, so a record can never be stored twice, whoever
writes it (a resumed sweep, a second sweep on the same store, a task re-run after a worker died).
Only the process that runs :func:`meanfield.sweep` writes (workers send records back to it), so the
file never needs to be reachable from a cluster's workers.

Tables (the columns of ``results`` after the fixed ones are added as tasks report them)::

    meta      name, value                 store format, creating meanfield version, creation time
    sweeps    id, started, finished, status, meanfield_version, python, host, scheduler, task,
              points, skipped, computed, failed, duplicates, grid (JSON), grid_source (TOML text), pid
    results   key UNIQUE, sweep, task, network (JSON spec), depth, activation, sigma_w2, sigma_b2,
              outputs, alphas, norms, input_q1, input_q2, width, samples, seed, <statistics...>,
              elapsed (s, wall, in the task), cpu (s, process CPU), worker (host:pid), finished (UTC),
              meanfield_version
    failures  key, sweep, task, network, width, samples, seed, error, traceback, worker, finished
    claims    key, sweep, claimed          tasks a running sweep has taken (two sweeps on one store split
                                           the work; the claims of a run whose process is gone are released)

A file with other tables, or without the ``meta`` format marker, is not a store and is refused unchanged.
A run left at 'running' by a process of this host that no longer exists is marked 'interrupted' when the
store is next opened.

``meanfield reproduce`` keeps its points in a store of this format too (``results.sqlite`` in its output
folder; a run is a row of ``sweeps`` with task 'reproduce'): its values differ from kind to kind, so a
row holds them as JSON text in ``result_json`` (and the CSV labels in ``labels_json``), see
:mod:`meanfield.runs.reproduce.cache`.

A failed task is not "done": a resumed sweep tries it again.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.sqlite")
    >>> with ResultStore(path) as store:
    ...     store.add({"key": "k1", "width": 8, "m": 0.5})
    ...     store.add({"key": "k1", "width": 8, "m": 0.5})     # same key: ignored
    True
    False
    >>> load(path).records
    [{'key': 'k1', ..., 'width': 8, ..., 'm': 0.5}]
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import socket
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgument
from ..spec.grammar import canonical_json
from .summaries import BOOKKEEPING_COLUMNS, IDENTITY_COLUMNS, summary_rows, summary_table

__all__ = ["ResultStore", "SweepResults", "load", "FORMAT_VERSION", "IDENTITY_COLUMNS", "BOOKKEEPING_COLUMNS",
           "meanfield_version", "now", "sql_value", "identity_columns", "process_alive"]

#: Bumped when the layout of the tables changes incompatibly.
FORMAT_VERSION = "1"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT, finished TEXT, status TEXT,
    meanfield_version TEXT, python TEXT, host TEXT, scheduler TEXT, task TEXT, points INTEGER,
    skipped INTEGER, computed INTEGER, failed INTEGER, duplicates INTEGER, grid TEXT, grid_source TEXT);
CREATE TABLE IF NOT EXISTS results (
    key TEXT NOT NULL UNIQUE, sweep INTEGER, task TEXT, network TEXT, depth INTEGER, activation TEXT,
    sigma_w2, sigma_b2, outputs INTEGER, alphas, norms TEXT, input_q1 REAL, input_q2 REAL,
    width INTEGER, samples INTEGER, seed INTEGER);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT NOT NULL, sweep INTEGER, task TEXT, network TEXT, width INTEGER, samples INTEGER,
    seed INTEGER, error TEXT, traceback TEXT, worker TEXT, finished TEXT);
CREATE INDEX IF NOT EXISTS failures_key ON failures (key);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, sweep INTEGER NOT NULL, claimed TEXT);
"""
#: The tables of a store; a file with other tables (or these without the format marker) is not a store.
_TABLES = ("meta", "sweeps", "results", "failures", "claims")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def now() -> str:
    """The current UTC time, ISO 8601 with seconds (what every timestamp column holds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def meanfield_version() -> str:
    """The installed meanfield version (stored with every record and run)."""
    from .. import __version__
    return __version__


def sql_value(name: str, value: Any) -> Any:
    """A record value as SQLite stores it: numbers, text or NULL (sequences as JSON text).

    A NaN becomes NULL (no value), which is also what SQLite itself would make of it.

    Example:
        >>> sql_value("m", np.float64(0.25)), sql_value("kind", "bound"), sql_value("lo", float("nan"))
        (0.25, 'bound', None)
        >>> sql_value("sigma_w2", (1.0, 2.0))
        '[1.0, 2.0]'
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (list, tuple)):
        return json.dumps([sql_value(name, v) for v in value])
    try:
        number = float(value)  # floats, numpy, mpmath mpf, sympy numbers
    except (TypeError, ValueError):
        raise InvalidArgument(name, value, "a number, a string, None, or a list of those") from None
    return None if math.isnan(number) else number


def process_alive(pid: Any) -> bool:
    """Whether process ``pid`` of this host exists (a zombie counts as gone)."""
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (TypeError, ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:  # a killed process not yet reaped by its parent is a zombie: gone for our purposes
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _affinity(value: Any) -> str:
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, str):
        return "TEXT"
    return ""


class ResultStore:
    """A sweep's SQLite results file: create or open it, add records, read them back.

    Args:
        path: the file (created with its tables if missing).
        timeout: seconds to wait for another process's write lock before giving up.

    Not picklable on purpose: the connection belongs to the process that opened it.

    Example:
        >>> import tempfile, os
        >>> store = ResultStore(os.path.join(tempfile.mkdtemp(), "s.sqlite"))
        >>> store.done_keys()
        set()
        >>> store.close()
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60.0):
        self.path = Path(path)
        if self.path.is_dir():
            raise InvalidArgument("store", str(path), "a file path for the SQLite results store, not a directory")
        if not self.path.parent.exists():
            raise InvalidArgument("store", str(path), "a path in an existing directory")
        self._refuse_foreign(path)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db = self._open(timeout)
                break
            except sqlite3.OperationalError as err:
                # a second sweep creating or converting the same new file at this very moment: SQLite
                # may answer "locked" without waiting (journal-mode change, WAL recovery); wait here
                if ("locked" not in str(err) and "busy" not in str(err)) or time.monotonic() > deadline:
                    raise InvalidArgument("store", str(path), "a results store no other process keeps locked",
                                          str(err)) from None
                time.sleep(0.05)
            except sqlite3.DatabaseError as err:
                raise InvalidArgument("store", str(path), "a meanfield results store (an SQLite file) or a new path",
                                      str(err)) from None
        fmt = self.meta().get("format")
        if fmt != FORMAT_VERSION:
            raise InvalidArgument("store", str(path), f"a results store of format {FORMAT_VERSION}",
                                  f"this file has format {fmt}")
        self._columns = self._read_columns()
        self._mark_abandoned()

    # -- plumbing: foreign files, abandoned runs, claims ---------------------------------------------
    def _refuse_foreign(self, path) -> None:
        """Refuse, before writing anything (not even the journal mode), an SQLite file that is not a
        meanfield store: any table of its own, or a 'results' table without the store's format marker.
        An empty file or an empty database becomes a store."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(16)
        except OSError as err:
            raise InvalidArgument("store", str(path), "a readable results store file", str(err)) from None
        if header != b"SQLite format 3\x00":
            raise InvalidArgument("store", str(path), "a meanfield results store (an SQLite file) or a new path",
                                  "this file is not an SQLite database")
        deadline = time.monotonic() + 10.0
        while True:
            try:
                tables, marker = self._probe()
                break
            except sqlite3.OperationalError as err:
                # another sweep creating this store right now (journal-mode change, WAL recovery): wait
                if ("locked" in str(err) or "busy" in str(err)) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise InvalidArgument("store", str(path), "a meanfield results store (an SQLite file) or a new "
                                      "path", str(err)) from None
            except sqlite3.DatabaseError as err:
                raise InvalidArgument("store", str(path), "a meanfield results store (an SQLite file) or a new "
                                      "path", str(err)) from None
        tables.discard("sqlite_sequence")  # SQLite's own table of AUTOINCREMENT counters
        foreign = sorted(tables - set(_TABLES))
        if tables and (foreign or marker is None):
            why = (f"tables not of a store: {', '.join(foreign)}" if foreign else
                   f"tables {', '.join(sorted(tables))} but no meanfield format marker")
            raise InvalidArgument("store", str(path), "a meanfield results store or a new path",
                                  f"this SQLite file belongs to something else ({why}); it is left unchanged")

    def _probe(self) -> tuple[set, Any]:
        """The tables and the format marker of the file, read through a read-only connection."""
        probe = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)
        try:
            tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            marker = None
            if "meta" in tables:
                marker = probe.execute("SELECT value FROM meta WHERE name='format'").fetchone()
            return tables, marker
        finally:
            probe.close()

    def _mark_abandoned(self) -> None:
        """Runs left at 'running' by a process of this host that no longer exists (killed, machine
        reset) become 'interrupted', and their task claims are released."""
        host = socket.gethostname()
        rows = self._db.execute("SELECT id, pid FROM sweeps WHERE status='running' AND host=? AND pid IS NOT NULL",
                                (host,)).fetchall()
        dead = [row[0] for row in rows if not process_alive(row[1])]
        if not dead:
            return
        with self._transaction() as db:
            for sweep_id in dead:
                db.execute("UPDATE sweeps SET status='interrupted' WHERE id=? AND status='running'", (sweep_id,))
                db.execute("DELETE FROM claims WHERE sweep=?", (sweep_id,))

    def claim(self, key: str, sweep_id: int) -> bool:
        """Claim task ``key`` for run ``sweep_id``: False when it is stored already or claimed by another
        run that is still alive (so that two sweeps on one store split the work); a claim of a run whose
        process is gone is taken over."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM results WHERE key=?", (key,)).fetchone():
                return False
            row = db.execute("SELECT c.sweep, s.status, s.host, s.pid FROM claims c LEFT JOIN sweeps s ON s.id = c.sweep"
                             " WHERE c.key=?", (key,)).fetchone()
            if row is not None and row[0] != sweep_id and row[1] == "running":
                if row[2] != socket.gethostname() or row[3] is None or process_alive(row[3]):
                    return False
            db.execute("INSERT OR REPLACE INTO claims (key, sweep, claimed) VALUES (?,?,?)", (key, sweep_id, now()))
            return True

    def release_claims(self, sweep_id: int) -> None:
        """Drop the claims of run ``sweep_id`` (its tasks are stored, failed, or given back)."""
        with self._transaction() as db:
            db.execute("DELETE FROM claims WHERE sweep=?", (sweep_id,))

    # -- opening ------------------------------------------------------------------------------------
    def _open(self, timeout: float) -> sqlite3.Connection:
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE), so that a writer
        # takes the lock before reading the columns it may have to add.
        db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            # WAL + synchronous=NORMAL: a commit costs ~0.05 ms instead of ~28 ms (rollback journal,
            # measured), so the store never limits a big cluster; a killed process loses no committed
            # record (only a power cut can drop the last few, never corrupt the file), and readers
            # never block the sweep. Needs a local disk (shared memory), like SQLite's locking does.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            with ResultStore._Tx(db):
                # statement by statement: executescript() would commit the open transaction first
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                # the process of a run (to tell an abandoned run from a running one); added to older stores
                if "pid" not in [row[1] for row in db.execute("PRAGMA table_info(sweeps)")]:
                    db.execute("ALTER TABLE sweeps ADD COLUMN pid INTEGER")
                db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT_VERSION,))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (now(),))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('created_by', ?)", (f"meanfield {meanfield_version()}",))
        except BaseException:
            db.close()
            raise
        return db

    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, *_):
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
            return False

    def _transaction(self) -> "_Tx":
        return ResultStore._Tx(self._db)

    def _read_columns(self) -> list[str]:
        return [row[1] for row in self._db.execute("PRAGMA table_info(results)")]

    def close(self) -> None:
        """Close the connection (records are already committed)."""
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *_):
        self.close()
        return False

    def __getstate__(self):
        raise TypeError("a ResultStore holds an SQLite connection of its own process; pass its path instead")

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    # -- queries ----------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """The store's metadata (format, created, created_by)."""
        return {row[0]: row[1] for row in self._db.execute("SELECT name, value FROM meta")}

    def done_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        """The keys that have a record (of those in ``keys``, if given)."""
        done = {row[0] for row in self._db.execute("SELECT key FROM results")}
        return done if keys is None else done & set(keys)

    def count(self) -> int:
        """The number of records."""
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def records(self, keys: Iterable[str] | None = None) -> list[dict]:
        """All records (or those with the given keys), in the order they were stored."""
        rows = [dict(row) for row in self._db.execute("SELECT * FROM results ORDER BY rowid")]
        if keys is not None:
            wanted = set(keys)
            rows = [r for r in rows if r["key"] in wanted]
        return rows

    def failures(self, *, unresolved: bool = True) -> list[dict]:
        """Failed attempts (by default only of keys that still have no record), oldest first."""
        where = " WHERE key NOT IN (SELECT key FROM results)" if unresolved else ""
        return [dict(row) for row in self._db.execute(f"SELECT * FROM failures{where} ORDER BY rowid")]

    def sweeps(self) -> list[dict]:
        """One row per sweep run on this store: when, which version, how many tasks, the grid."""
        return [dict(row) for row in self._db.execute("SELECT * FROM sweeps ORDER BY id")]

    # -- writes (each one its own committed transaction) -----------------------------------------
    def begin_sweep(self, *, task: str, points: int, skipped: int, scheduler: str, grid: Any = None,
                    grid_source: str | None = None) -> int:
        """Record the start of a sweep run; returns its id (stored with each of its records)."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO sweeps (started, status, meanfield_version, python, host, scheduler, task, points,"
                " skipped, computed, failed, duplicates, grid, grid_source, pid)"
                " VALUES (?,?,?,?,?,?,?,?,?,0,0,0,?,?,?)",
                (now(), "running", meanfield_version(), sys.version.split()[0], socket.gethostname(), scheduler, task,
                 points, skipped, json.dumps(grid) if grid is not None else None, grid_source, os.getpid()))
            return int(cursor.lastrowid)

    def end_sweep(self, sweep_id: int, *, status: str, computed: int, failed: int, duplicates: int) -> None:
        """Record how a sweep run ended ('finished', 'interrupted', 'failed')."""
        with self._transaction() as db:
            db.execute("UPDATE sweeps SET finished=?, status=?, computed=?, failed=?, duplicates=? WHERE id=?",
                       (now(), status, computed, failed, duplicates, sweep_id))
            db.execute("DELETE FROM claims WHERE sweep=?", (sweep_id,))

    def add(self, record: Mapping[str, Any]) -> bool:
        """Store one record; True if stored, False if its key was already there (nothing changes).

        New statistic names become new columns (ALTER TABLE, under the same write lock).
        """
        if "key" not in record or not isinstance(record["key"], str):
            raise InvalidArgument("record", dict(record), "a mapping with a text 'key'")
        values = {}
        for name, value in record.items():
            if not _NAME.match(name):
                raise InvalidArgument("record key", name, "a name of letters, digits and _ (an SQL column)")
            values[name] = sql_value(name, value)
        with self._transaction() as db:
            missing = [n for n in values if n not in self._columns]
            if missing:
                self._columns = self._read_columns()  # another process may have added them
                lower = {c.lower() for c in self._columns}
                for name in (n for n in values if n not in self._columns):
                    if name.lower() in lower:  # SQL names are case-insensitive
                        raise InvalidArgument("record key", name, "names distinct regardless of case")
                    db.execute(f'ALTER TABLE results ADD COLUMN "{name}" {_affinity(values[name])}')
                    lower.add(name.lower())
                self._columns = self._read_columns()
            names = list(values)
            cursor = db.execute(
                f'INSERT OR IGNORE INTO results ({", ".join(chr(34) + n + chr(34) for n in names)}) '
                f'VALUES ({", ".join("?" * len(names))})', [values[n] for n in names])
            return cursor.rowcount == 1

    def add_failure(self, failure: Mapping[str, Any]) -> None:
        """Store a failed attempt (key, error, traceback, ...); the key stays 'to do'."""
        columns = ("key", "sweep", "task", "network", "width", "samples", "seed", "error", "traceback", "worker",
                   "finished")
        with self._transaction() as db:
            db.execute(f"INSERT INTO failures ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                       [sql_value(c, failure.get(c)) for c in columns])


def _uniform(values: list) -> Any:
    return values[0] if all(v == values[0] for v in values) else values


def identity_columns(key: str, task: str, sweep_id: int | None, spec: dict, width: int | None,
                     samples: int | None, seed: int | None) -> dict:
    """The identity columns of a record: key, the network's spec (``meanfield.spec.grammar.network_spec``)
    and the point's width, samples and seed.

    A per-layer value that is the same in every layer is stored as that number (so SQL filters
    like ``sigma_w2 = 2`` work); otherwise as a JSON list.

    Example:
        >>> spec = {"depth": 1, "activation": [{"family": "relu", "params": {}}], "sigma_w2": [2.0],
        ...         "sigma_b2": [0.0], "outputs": 1, "alphas": [1.0], "norms": [], "input_q1": 1.0, "input_q2": 0.0}
        >>> row = identity_columns("k", "fisher", None, spec, 8, 2, 0)
        >>> row["activation"], row["sigma_w2"], row["norms"], row["width"]
        ('relu', 2.0, 'none', 8)
    """
    names = [a.get("name") or _family_name(a) for a in spec["activation"]]
    return {"key": key, "sweep": sweep_id, "task": task, "network": canonical_json(spec),
            "depth": spec["depth"],
            "activation": ",".join(names) if len(set(names)) > 1 else names[0],
            "sigma_w2": _uniform(spec["sigma_w2"]), "sigma_b2": _uniform(spec["sigma_b2"]),
            "outputs": spec["outputs"], "alphas": _uniform(spec["alphas"]),
            "norms": ",".join(spec["norms"]) or "none", "input_q1": spec["input_q1"], "input_q2": spec["input_q2"],
            "width": width, "samples": samples, "seed": seed}


def _family_name(spec: dict) -> str:
    params = spec.get("params") or {}
    if not params:
        return spec["family"]
    return f"{spec['family']}({', '.join(f'{k}={v:g}' for k, v in params.items())})"


# -- reading results ------------------------------------------------------------------------------------


def _numpy_column(values: list) -> tuple[np.ndarray, np.ndarray]:
    present = [v for v in values if v is not None]
    mask = np.array([v is None for v in values], dtype=bool)
    if present and all(isinstance(v, int) for v in present):
        fill, dtype = 0, np.int64
    elif present and all(isinstance(v, (int, float)) for v in present):
        fill, dtype = 0.0, np.float64
    elif not present:
        fill, dtype = 0.0, np.float64
    else:
        texts = [v if isinstance(v, str) else str(v) for v in present]
        dtype = np.dtype(f"U{max(1, max(map(len, texts)))}")
        values = [v if v is None or isinstance(v, str) else str(v) for v in values]
        fill = ""
    return np.array([fill if v is None else v for v in values], dtype=dtype), mask


@dataclass(frozen=True)
class SweepResults:
    """The records of a results store: list of dicts, numpy record array, or pandas DataFrame.

    Attributes:
        records: one dict per task, column name -> value (None where a statistic has no value).
        columns: the column names, in table order.
        failures: failed attempts of tasks that still have no record.
        path: the store file.
        report: the run's :class:`~meanfield.runs.sweeps.SweepReport` when these come from ``sweep()``.

    Example:
        >>> r = SweepResults(records=[{"key": "a", "width": 8, "m": 0.5}, {"key": "b", "width": 16, "m": None}],
        ...                  columns=("key", "width", "m"))
        >>> arr = r.to_numpy()
        >>> arr["width"].tolist(), arr["m"].tolist()
        ([8, 16], [0.5, None])
    """

    records: list = field(default_factory=list)
    columns: tuple = ()
    failures: tuple = ()
    path: str | None = None
    report: Any = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    def __getitem__(self, index: int) -> dict:
        return self.records[index]

    def column(self, name: str) -> list:
        """The values of one column, in record order."""
        if name not in self.columns:
            from ..errors import check_choice
            check_choice("column", name, self.columns)
        return [r.get(name) for r in self.records]

    def to_numpy(self) -> np.ma.MaskedArray:
        """A numpy structured (record) array, masked where a value is missing (SQL NULL).

        Missing values are masked rather than filled with NaN, so no NaN is invented; columns of
        whole numbers are int64, of numbers float64, of text (or mixed) unicode.
        """
        if not self.records:
            return np.ma.masked_array(np.zeros(0, dtype=[(c, np.float64) for c in self.columns]))
        arrays, masks = zip(*(_numpy_column(self.column(c)) for c in self.columns))
        dtype = [(c, a.dtype) for c, a in zip(self.columns, arrays)]
        data = np.empty(len(self.records), dtype=dtype)
        mask = np.empty(len(self.records), dtype=[(c, bool) for c in self.columns])
        for c, a, m in zip(self.columns, arrays, masks):
            data[c] = a
            mask[c] = m
        return np.ma.masked_array(data, mask=mask)

    def to_pandas(self):
        """A pandas DataFrame (pandas is optional: InvalidArgument-free ImportError if missing)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_pandas() needs pandas (pip install pandas); to_numpy() and .records do not")
        return pandas.DataFrame.from_records(list(self.records), columns=list(self.columns))

    def __str__(self) -> str:
        head = f"SweepResults: {len(self.records)} records"
        if self.failures:
            head += f", {len({f['key'] for f in self.failures})} failed tasks"
        if self.path:
            head += f" in {self.path}"
        parts = [head]
        if self.report is not None:
            parts.append(str(self.report))
        if self.records:
            parts.append(summary_table(self.records))
        return "\n".join(parts)

    def _repr_latex_(self) -> str:
        header, rows = summary_rows(self.records)
        if not rows:
            return r"$\text{%d records}$" % len(self.records)
        cols = "l" * len(header)
        body = " \\\\\n".join(" & ".join(_latex_cell(c) for c in row) for row in [header, *rows])
        return f"\\begin{{array}}{{{cols}}}\n{body}\n\\end{{array}}"


def _latex_cell(text: str) -> str:
    return r"\text{" + str(text).replace("_", r"\_").replace("%", r"\%") + "}"


def load(store: str | os.PathLike | ResultStore, *, keys: Iterable[str] | None = None) -> SweepResults:
    """The records of a results store (all, or those with ``keys``).

    Example:
        >>> try:
        ...     load("/nonexistent/results.sqlite")
        ... except InvalidArgument as err:
        ...     print(err.argument)
        store
    """
    if isinstance(store, ResultStore):
        return _load(store, keys)
    path = Path(store)
    if not path.is_file():
        raise InvalidArgument("store", str(store), "an existing results store file (an SQLite file)")
    with ResultStore(path) as opened:
        return _load(opened, keys)


def _load(store: ResultStore, keys) -> SweepResults:
    columns = tuple(store._read_columns())
    records = store.records(keys)
    failures = store.failures()
    if keys is not None:
        wanted = set(keys)
        failures = [f for f in failures if f["key"] in wanted]
    return SweepResults(records=list(records), columns=columns, failures=tuple(failures), path=str(store.path))
