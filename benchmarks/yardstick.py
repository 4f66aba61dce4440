"""The benchmarks' common unit: one n x n float64 matrix product, timed in the benchmark's own process.

Every benchmark prints its times as ratios to this product, so that a figure measured on a busy or a
different machine still compares with the targets (which are stated in matmuls).
"""

from __future__ import annotations

import time

import numpy as np


def matmul_seconds(n: int = 2048, repeat: int = 2) -> float:
    """The fastest of ``repeat`` n^3 float64 products (after one warm-up product for the BLAS)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    a @ b
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best
