"""The stored points of ``meanfield reproduce``: rows of the results store, lines of ``cache.jsonl``.

Every point is a row of the SQLite results store ``results.sqlite`` in the output folder (the store of
:func:`meanfield.sweep`, :class:`meanfield.runs.store.ResultStore`): the job's key in the ``key`` column
(UNIQUE), the network's spec, width, samples and seed in the identity columns, and the values, which
differ from kind to kind (a theory point, a sampled point, a learning-rate column, a random-matrix model
with its cells), as JSON text in ``result_json`` with the job's CSV labels in ``labels_json``. A value
comes back exactly (floats in full). ``cache.jsonl`` stays beside it, one line per point in the format
of earlier versions: the export of the store, and, for a folder of an older run, its import.

Example:
    >>> import tempfile
    >>> from meanfield.runs.store import ResultStore
    >>> with tempfile.TemporaryDirectory() as d:
    ...     CacheFile(Path(d) / "cache.jsonl").add("sample|x|M=8|T=2|seed=0", {"m": 0.5}, {"width": 8}, 0.25)
    ...     with ResultStore(Path(d) / "results.sqlite") as store:
    ...         synchronise(store, CacheFile(Path(d) / "cache.jsonl"), {})
    ...         stored_values(store)["sample|x|M=8|T=2|seed=0"]
    (1, 0)
    {'values': {'m': 0.5}, 'seconds': 0.25}
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InvalidArgument
from ..store import ResultStore, identity_columns, now
from .points import Job

__all__ = ["CacheFile", "CacheWarning", "json_default", "job_record", "synchronise", "stored_values", "cache_line"]

#: The function of a job by the first field of its key (for lines imported from an older run's cache).
_TASK_OF_KIND = {"theory": "reproduce.theory_point", "sample": "reproduce.sample_point", "lr": "reproduce.lr_point",
                 "rmt": "reproduce.rmt_point", "digits-theory": "reproduce.digits_theory_point",
                 "digits-isotropic": "reproduce.digits_isotropic_point", "digits-sample": "reproduce.digits_sample_point"}


class CacheFile:
    """``cache.jsonl``: the append-only JSON-lines export of computed points in the output folder.

    One line per point, ``{"key", "labels", "values", "seconds"}``, written and flushed as soon as its point
    is stored. A torn last line (killed mid-write) is ignored on reading and cut off before appending; any other
    unusable line is ignored with a :class:`CacheWarning` naming the file and the line (its point is
    computed again).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     store = CacheFile(Path(d) / "cache.jsonl")
        ...     store.add("a", {"m": 1.0}, {"width": 8}, 0.1)
        ...     CacheFile(Path(d) / "cache.jsonl").rows["a"]["values"]
        {'m': 1.0}
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        #: (line number, reason) of the lines left out; their points are computed again
        self.skipped: list[tuple[int, str]] = []
        if self.path.exists():
            if not self.path.is_file():
                raise InvalidArgument("out", str(self.path.parent), f"a folder whose {self.path.name} is a file")
            with open(self.path, "rb") as handle:
                lines = handle.read().split(b"\n")
            last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                reason = _line_problem(raw)
                if reason is None:
                    row = json.loads(raw)
                    self.rows[row["key"]] = row
                elif number - 1 != last or not reason.startswith("not JSON"):
                    # a torn last line is what a killed run leaves (silently repaired); anything else was
                    # edited or corrupted: say so, and compute those points again rather than trust them
                    self.skipped.append((number, reason))
            if self.skipped:
                first = self.skipped[0]
                warnings.warn(f"{self.path}: {len(self.skipped)} unusable line(s) ignored and their points computed "
                              f"again (line {first[0]}: {first[1]})", CacheWarning, stacklevel=2)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, key: str, values: dict, labels: Mapping[str, Any], seconds: float) -> None:
        """Append one point (and remember it in ``rows``)."""
        row = {"key": key, "labels": dict(labels), "values": values, "seconds": round(seconds, 4)}
        text = json.dumps(row, sort_keys=True, default=json_default)
        if self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path):
            _drop_torn_tail(self.path)  # the torn line of a killed write holds nothing to keep
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
        self.rows[key] = row


class CacheWarning(UserWarning):
    """Lines of ``cache.jsonl`` that cannot be used (edited or corrupted) were ignored."""


def _line_problem(raw: bytes) -> str | None:
    """Why one line of ``cache.jsonl`` cannot be used, or None when it can."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"not JSON ({err})"
    if not isinstance(row, dict) or not isinstance(row.get("key"), str):
        return "not a JSON object with a text 'key'"
    if not isinstance(row.get("values"), dict):
        return "no 'values' object"
    bad = _bad_value("values", row["values"])
    if bad is not None:
        return bad
    if row.get("labels") is not None and not isinstance(row["labels"], dict):
        return "'labels' is not an object"
    seconds = row.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))):
        return f"'seconds' is {seconds!r}, not a number"
    return None


def _bad_value(name: str, value: Any) -> str | None:
    """Numbers must be finite numbers; text only where the point itself stores text (the ``*kind`` and
    ``*method``, ``notes`` and ``error`` fields), so a number edited into text or NaN is caught here, not deep in the figures."""
    if value is None:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            bad = _bad_value(str(key), item)
            if bad is not None:
                return bad
        return None
    if isinstance(value, list):
        for item in value:
            bad = _bad_value(name, item)
            if bad is not None:
                return bad
        return None
    if isinstance(value, str):
        return None if name.endswith(("kind", "method", "notes", "error")) else f"{name!r} is {value!r}, not a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{name!r} is {value!r}, not a finite number"
    return None


def _drop_torn_tail(path: Path) -> None:
    """Cut the file after its last newline (a later reading would otherwise see the torn line in the middle)."""
    with open(path, "rb+") as handle:
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def json_default(value: Any) -> Any:
    """JSON for numpy numbers and arrays (and text for anything else)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def job_record(job: Job, values: Mapping[str, Any], run_id: int | None, *, elapsed: float | None,
               cpu: float | None = None, worker: str | None = None, version: str | None = None) -> dict:
    """The results-store row of one computed job: identity columns, labels and values as JSON, bookkeeping."""
    kwargs = dict(job.kwargs)
    record = identity_columns(job.key, job.task, run_id, json.loads(kwargs["spec"]), kwargs.get("width"),
                              kwargs.get("samples"), kwargs.get("seed"))
    record.update(labels_json=json.dumps(dict(job.labels), sort_keys=True, default=json_default),
                  result_json=json.dumps(dict(values), default=json_default),  # in the order computed
                  elapsed=elapsed, cpu=cpu, worker=worker, finished=now(), meanfield_version=version)
    return record


def _imported_record(line: Mapping[str, Any], job: Job | None) -> dict:
    """The row of a line of an older run's ``cache.jsonl`` (identity from this run's job of the same key)."""
    labels = line.get("labels") or {}
    if job is not None:
        return job_record(job, line["values"], None, elapsed=line.get("seconds"))
    return {"key": line["key"], "task": _TASK_OF_KIND.get(line["key"].split("|", 1)[0], "reproduce"),
            "width": labels.get("width"), "samples": labels.get("samples"), "seed": labels.get("seed"),
            "labels_json": json.dumps(labels, sort_keys=True, default=json_default),
            "result_json": json.dumps(line["values"], sort_keys=True, default=json_default),
            "elapsed": line.get("seconds"), "finished": now()}


def cache_line(record: Mapping[str, Any]) -> tuple[str, dict, dict, float]:
    """(key, values, labels, seconds) of a results-store row, as :meth:`CacheFile.add` takes them."""
    return (record["key"], json.loads(record["result_json"]), json.loads(record["labels_json"] or "{}"),
            record["elapsed"] or 0.0)


def synchronise(store: ResultStore, cache: CacheFile, jobs: Mapping[str, Job]) -> tuple[int, int]:
    """Import the lines of ``cache`` the store lacks (a folder of an older run, or a copied cache), then
    append the rows of the store the cache lacks (a deleted or truncated cache.jsonl).

    Returns:
        (lines imported, lines appended).
    """
    done = store.done_keys()
    imported = 0
    for key, line in cache.rows.items():
        if key not in done and isinstance(line.get("values"), Mapping):
            imported += store.add(_imported_record(line, jobs.get(key)))
    appended = 0
    for record in store.records():
        if record.get("result_json") is not None and record["key"] not in cache.rows:
            cache.add(*cache_line(record))
            appended += 1
    return imported, appended


def stored_values(store: ResultStore, keys: Any = None) -> dict[str, dict]:
    """key -> {"values", "seconds"} of the stored points (all, or those with ``keys``).

    A row whose values are not what a point stores (edited by hand, or imported by an older version from
    a corrupted cache) is an error naming the store and the key, not a crash in the figures.
    """
    values = {}
    for r in store.records(keys):
        if r.get("result_json") is None:
            continue
        problem = _line_problem(json.dumps({"key": r["key"], "values": _loads(r["result_json"])}).encode())
        if problem is not None:
            raise InvalidArgument("out", str(store.path.parent), "an output folder whose stored points are intact",
                                  f"{store.path}: the row with key {r['key']!r} is unusable ({problem}); "
                                  "rerun with --fresh (fresh=True) to compute every point again")
        values[r["key"]] = {"values": json.loads(r["result_json"]),
                            "seconds": None if r["elapsed"] is None else round(r["elapsed"], 4)}
    return values


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None
