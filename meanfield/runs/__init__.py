"""Many points at once, resumable: grids, the SQLite result store and its summaries, executors
(in-process, local process pool or a Dask scheduler), sweeps, and ``meanfield reproduce`` built on them
(:mod:`meanfield.runs.reproduce`: the same store and executors)."""
