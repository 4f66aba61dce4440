"""Benchmark: one sampled FIM spectrum (m, s, lambda_max) against a float64 matmul timed in the same
process, per placement of the normalization, and the plain sampler at a large width.

Network: ReLU, L = 3, alphas all 1, C = 10, T = 256, sigma_w^2 = 2, sigma_b^2 = 0.1, at M = 1024, 2048
(``--widths``); no normalization (plain), batch norm on the outputs (bn-last), batch norm in the middle
layer (bn-middle: the default route, matrix-free at these sizes), and with ``--exact`` the middle
batch norm through the exact T M^3 Gram (bn-middle-exact).

Printed per case and M: seconds, the ratio to a 2048^3 float64 matmul timed right before each run (the
smallest over the repeats; targets: plain M = 1024 at most 2.5 matmuls; batch norm in any layer at most
3x plain), the ratio to plain, and for the matrix-free route the relative standard errors of m and s.
Every case is repeated ``--repeat`` times interleaved with its matmul, and the minima are compared: other
processes on a shared machine only ever add time. ``--threads N`` runs everything (matmul included)
with N BLAS threads; on an oversubscribed machine one thread gives steadier ratios.

``--big`` also runs the plain M = 8192 case once (``--big-width``) and reports its time and the peak
resident memory of this process (``ru_maxrss``).

MEANFIELD_ROOT=DIR imports the package from another checkout (a before/after comparison in one script).

Usage: python benchmarks/sampling.py [--widths 1024,2048] [--repeat 3] [--threads N] [--exact] [--big]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time

import numpy as np

from yardstick import matmul_seconds  # noqa: E402 - the benchmarks' common unit, beside this script

sys.path.insert(0, os.environ.get("MEANFIELD_ROOT", os.path.join(os.path.dirname(__file__), "..")))

from meanfield.spec.network import BatchNorm, Network  # noqa: E402
from meanfield.sampled.sampling import sample  # noqa: E402

C, T, L = 10, 256, 3
PLACEMENTS = {"plain": ([], "auto"), "bn-last": ([BatchNorm("last")], "auto"),
              "bn-middle": ([BatchNorm(2)], "auto"), "bn-middle-exact": ([BatchNorm(2)], "exact"),
              "bn-every": ([BatchNorm(1), BatchNorm(2), BatchNorm(3)], "auto")}



def run_case(name: str, M: int, repeat: int):
    """(seconds, matmul seconds, the smallest seconds / matmul, the spectrum): minima over the repeats;
    each run's ratio uses the matmul timed right before it, so a load that changes between runs cancels."""
    norms, route = PLACEMENTS[name]
    net = Network(L, "relu", 2, 0.1, outputs=C, norms=norms)
    mm, best, ratio, out = np.inf, np.inf, np.inf, None
    for _ in range(repeat):
        yardstick = matmul_seconds()  # right before each run of the case
        start = time.perf_counter()
        out = sample(net, M, T, seed=0, **({} if route == "auto" else {"route": route}))
        seconds = time.perf_counter() - start
        mm, best, ratio = min(mm, yardstick), min(best, seconds), min(ratio, seconds / yardstick)
    return best, mm, ratio, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="1024,2048")
    parser.add_argument("--placements", default="plain,bn-last,bn-middle")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--exact", action="store_true", help="also the exact route for the middle batch norm")
    parser.add_argument("--big", action="store_true")
    parser.add_argument("--big-width", type=int, default=8192)
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    placements = args.placements.split(",") + (["bn-middle-exact"] if args.exact else [])
    limit = contextlib.nullcontext()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(args.threads)
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL"))}
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}  BLAS threads: "
          f"{args.threads or 'default'}  BLAS env: {env or 'none'}  repeats: {args.repeat} (minima)")
    header = (f"{'case':<16} {'M':>5} {'seconds':>8} {'matmul s':>8} {'x matmul':>8} {'x plain':>8} "
              f"{'route':>11} {'m_se/m':>8} {'s_se/s':>8}  lambda_max")
    with limit:
        print(header)
        print("-" * len(header))
        plain = {}
        for M in widths:
            for name in placements:
                seconds, mm, ratio, r = run_case(name, M, args.repeat)
                if name == "plain":
                    plain[M] = ratio
                rel = f"{ratio / plain[M]:.2f}" if name != "plain" and M in plain else "-"
                method = getattr(r, "gram_method", "exact")  # (an older sampler has no such field)
                m_se, s_se = getattr(r, "m_se", 0.0), getattr(r, "s_se", 0.0)
                print(f"{name:<16} {M:>5} {seconds:>8.2f} {mm:>8.3f} {ratio:>8.2f} {rel:>8} {method:>11} "
                      f"{m_se / r.m:>8.1e} {s_se / r.s:>8.1e}  {r.lambda_max:.10g}", flush=True)
        if args.big:
            net = Network(L, "relu", 2, 0.1, outputs=C)
            mm = matmul_seconds()
            start = time.perf_counter()
            r = sample(net, args.big_width, T, seed=0)
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"\nplain M={args.big_width}: {seconds:.2f} s ({seconds / mm:.1f}x the matmul, {mm:.3f} s), "
                  f"peak resident memory of this process {peak:.2f} GiB, lambda_max {r.lambda_max:.10g}, "
                  f"m {r.m:.6g}, s {r.s:.6g}")
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
