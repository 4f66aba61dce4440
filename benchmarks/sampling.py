"""Benchmark: one exact sampled FIM spectrum (m, s, lambda_max) against a float64 matmul and the
explicit-Jacobian baseline, timed in the same process.

Network: ReLU, L = 3, alphas all 1, C = 10, T = 256, sigma_w^2 = 2, sigma_b^2 = 0.1, at
M = 512, 1024, 2048; no normalization, batch norm on the outputs, batch norm in the middle layer.

Printed per case: seconds, ratio to a 2048^3 float64 matmul timed just before the case (targets: plain M = 1024 at
most 4x; batch norm at most 2x plain), the flops of the method's main BLAS calls (a model, see
``flops``), the fraction of the measured matmul flop rate they achieve, and the ratio to the explicit
Jacobian route (J from unit-cotangent VJPs, then J J^T) where J fits in memory.

Usage: python benchmarks/sampling.py [--widths 512,1024,2048] [--no-baseline] [--big]
(--big also runs the plain M = 4096 case and reports the peak resident memory.)
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from meanfield.sampled.backprop import draw, forward  # noqa: E402
from meanfield.errors import InvalidArgument  # noqa: E402
from meanfield.spec.network import BatchNorm, Network  # noqa: E402
from meanfield.sampled.sampling import sample  # noqa: E402
from meanfield.sampled.gram import explicit_gram, gram_plan, top_eigenvalue  # noqa: E402

C, T, L = 10, 256, 3
PLACEMENTS = {"plain": [], "bn-last": [BatchNorm("last")], "bn-middle": [BatchNorm(2)],
              "bn-every": [BatchNorm(1), BatchNorm(2), BatchNorm(3)]}  # the last one only on request


def matmul_seconds(n: int = 2048, repeat: int = 3) -> float:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    a @ b
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def flops(net: Network, M: int, lanczos_steps: int = 40) -> float:
    """Flops of the main dense operations of :func:`meanfield.sampled.gram.gram` for this plan (a model:
    a GEMM m x k x n counts 2mkn, a SYRK n x k counts n^2 k)."""
    n = C * T
    total = 2 * T * M * M * L + lanczos_steps * 2 * n * n       # forward, eigsh matvecs
    for l, kind in gram_plan(net).items():
        if kind == "plain":
            total += n * n * M + 2 * n * M * M                     # SYRK + backprop GEMM
        elif kind == "bn-own":
            total += n * n * M + 2 * n * n * M                     # SYRK + symmetric rank-2k GEMM
        elif kind == "bn-below":
            total += 2 * n * M * M + n * n * M + 2 * n * n * M     # g, SYRK, rank-2k (mean path)
            total += 2 * T * T * M * M + 2 * T * C * M * M         # X_t and Q (mean-variance)
            total += T * T * M * M + T * M ** 3                    # B (triangular) and Z SYRK
            total += 2 * n * M * M + 2 * n * n * M                 # nu Z and rank-2k
    return float(total)


def time_call(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="512,1024,2048")
    parser.add_argument("--placements", default="plain,bn-last,bn-middle")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--big", action="store_true")
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL"))}
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}  BLAS env: {env or 'none'}")
    mm = matmul_seconds()
    rate = 2 * 2048 ** 3 / mm
    print(f"2048^3 float64 matmul: {mm:.3f} s  ({rate / 1e9:.1f} GFlop/s)\n")
    header = (f"{'case':<10} {'M':>5} {'seconds':>9} {'x matmul':>9} {'GFlop':>8} {'of rate':>8} "
              f"{'explicit s':>11} {'speedup':>8}  lambda_max (method)")
    print(header)
    print("-" * len(header))
    plain = {}
    for M in widths:
        for name in args.placements.split(","):
            net = Network(L, "relu", 2, 0.1, outputs=C, norms=PLACEMENTS[name])
            mm_here = matmul_seconds(repeat=2)  # the machine may be shared: time the yardstick next to each case
            mm = min(mm, mm_here)
            rate = 2 * 2048 ** 3 / mm_here
            seconds, r = time_call(lambda: sample(net, M, T, seed=0), repeat=2 if M <= 512 else 1)
            if name == "plain":
                plain[M] = seconds
            fl = flops(net, M)
            base, speedup = "-", "-"
            if not args.no_baseline:
                tr = forward(net, draw(net, M, T, 0))
                try:
                    bsec, G = time_call(lambda: explicit_gram(net, tr))
                    lam = top_eigenvalue(G)[0]
                    assert abs(lam - r.lambda_max) <= 1e-9 * r.lambda_max, (lam, r.lambda_max)
                    base, speedup = f"{bsec:.2f}", f"{bsec / seconds:.1f}x"
                    del G
                except InvalidArgument:
                    base = "no memory"
                del tr
            rel = f" ({seconds / plain[M]:.1f}x plain)" if name != "plain" and M in plain else ""
            print(f"{name:<10} {M:>5} {seconds:>9.2f} {seconds / mm_here:>9.2f} {fl / 1e9:>8.1f} "
                  f"{fl / seconds / rate:>8.0%} {base:>11} {speedup:>8}  {r.lambda_max:.6g} "
                  f"({r.lambda_max_method}){rel}", flush=True)
    if args.big:
        net = Network(L, "relu", 2, 0.1, outputs=C)
        seconds, r = time_call(lambda: sample(net, 4096, T, seed=0))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"\nplain M=4096: {seconds:.2f} s ({seconds / mm:.1f}x the fastest matmul), peak resident memory "
              f"of this process so far {peak:.2f} GiB, lambda_max {r.lambda_max:.6g}")
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
