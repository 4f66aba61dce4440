"""Benchmark: kernels and predictions on a batch, in units of one 2048^3 float64 matmul timed in the same process.

For relu and tanh networks of depth 3 (C = 4 outputs, M = 256) on a random batch X of T x 64 inputs:
``meanfield.kernels(net, X, width=M)`` and ``meanfield.predict(net, M, inputs=X)`` at T = 256 and 1024
(no normalization and layer norm), and at T = 256 with a full batch norm on the output (exact radial
integrals) and in a hidden layer (Monte Carlo, with its standard-error groups). Times are the best of two
runs after one warm-up call; the ratio is seconds / the matmul's seconds. The isotropic ``predict(net, M, T)``
is timed beside it as the baseline of what a prediction cost before batches.

Run: ``python benchmarks/kernels.py`` (about a minute on 2 cores; set OPENBLAS_NUM_THREADS=1 on a shared
machine, where a threaded BLAS on 256 x 256 matrices spins).
"""

from __future__ import annotations

import time

import numpy as np

from yardstick import matmul_seconds  # noqa: E402 - the benchmarks' common unit, beside this script

import meanfield as mf

CASES = [("relu", (), 256), ("relu", (), 1024), ("tanh", (), 256), ("tanh", (), 1024),
         ("relu", ("layer:2",), 1024), ("relu", ("batch:last",), 256), ("tanh", ("batch:2",), 256)]
WIDTH = 256



def best_of(fn, repeats: int = 2) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    unit = matmul_seconds()
    print(f"one 2048^3 matmul: {unit:.3f} s")
    small = np.eye(8)
    for act in ("relu", "tanh"):  # imports and caches once, before any timing
        mf.kernels(mf.Network(3, act, 1.5, 0.1), small)
        mf.predict(mf.Network(3, act, 1.5, 0.1), 16, inputs=small)
    print(f"{'network':<28} {'T':>5} {'kernels s':>10} {'ratio':>7} {'predict s':>10} {'ratio':>7} "
          f"{'isotropic s':>12}")
    for act, norms, T in CASES:
        net = mf.Network(3, act, 2.0 if act == "relu" else 1.5, 0.1, outputs=4, norms=list(norms))
        X = np.random.default_rng(0).standard_normal((T, 64))
        k = best_of(lambda: mf.kernels(net, X, width=WIDTH))
        p = best_of(lambda: mf.predict(net, WIDTH, inputs=X))
        iso = best_of(lambda: mf.predict(net, WIDTH, T))
        name = f"{act} {','.join(norms) or 'none'}"
        print(f"{name:<28} {T:>5} {k:>10.3f} {k / unit:>7.1f} {p:>10.3f} {p / unit:>7.1f} {iso:>12.4f}")


if __name__ == "__main__":
    main()
