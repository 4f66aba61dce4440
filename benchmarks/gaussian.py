"""Benchmark: Gaussian moments on 10^5 pairs, in units of one 2048^3 float64 matmul timed in the same process.

For each activation: I_phi[q1, q2] on 10^5 pairs (q1 log-uniform in [0.1, 10], c = q2/q1 uniform
in [-1, 1]) by the quadrature alone (``use_tables=False``: Mehler series / conditional quadrature,
the baseline and oracle) and by the fast path with the cached tables of
:mod:`meanfield.integrals.tables` (built once: the build time is printed separately), the second
moment E[phi^2](q) the same way, the share of pairs the tables answered, and the accuracy (max
relative error, floor 1e-15 x sqrt(E[phi^2]) as in the tests) against the quadrature on 3000 of
the pairs and against the 30-digit references of tests/data/gaussian_reference.json whose q1 lies
in the tabulated range. Then unequal-variance pair moments on the 499500 pairs of a T = 1000 Gram
matrix, and ``meanfield derive`` with custom activations at depth 4 (in a fresh process, so
imports are counted).

Run: ``python benchmarks/gaussian.py`` (a few minutes; most of it builds tables and times the baseline).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mpmath
import numpy as np

from yardstick import matmul_seconds  # noqa: E402 - the benchmarks' common unit, beside this script

import meanfield as mf
from meanfield.integrals import numeric, tables
from meanfield.spec.activations import Activation

N = 100_000
REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "gaussian_reference.json"
Q_RANGE = (0.1, 10.0)



def pairs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    q1 = 10.0 ** rng.uniform(np.log10(Q_RANGE[0]), np.log10(Q_RANGE[1]), n)
    return q1, rng.uniform(-1, 1, n) * q1


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def worst(got, ref, scale):
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-15 * scale)))


def reference_error(spec: str, f: Activation) -> tuple[float, int]:
    if not REFERENCE.exists():
        return float("nan"), 0
    rows = [r for r in json.loads(REFERENCE.read_text())["rows"] if r["activation"] == spec
            and Q_RANGE[0] <= float(r["q1"]) <= Q_RANGE[1]]
    err = 0.0
    for r in rows:
        ref, scale = float(mpmath.mpf(r["cross"])), float(mpmath.mpf(r["second"]))
        got = float(numeric.fast_cross(f, float(r["q1"]), float(r["q2"])))
        err = max(err, abs(got - ref) / max(abs(ref), 1e-15 * scale))
    return err, len(rows)


def derive_seconds(expr: str) -> float:
    code = ("import time; t = time.perf_counter(); import meanfield as mf; "
            f"mf.derive(mf.Network(depth=4, activation={expr!r}, sigma_w2=1.5, sigma_b2=0.1, outputs=1)); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    # a fresh disk cache: the build is timed, then a second process's view (the panels read from disk)
    os.environ["MEANFIELD_CACHE"] = tempfile.mkdtemp(prefix="meanfield-bench-cache-")
    base = matmul_seconds()
    x = np.random.default_rng(0).random(10**6)
    t_tanh, _ = timed(np.tanh, x)
    print(f"one 2048^3 float64 matmul: {base:.3f} s   (np.tanh: {t_tanh * 1e3:.1f} ns per element; "
          "ratios below are seconds / matmul)")
    q1, q2 = pairs(N, seed=1)
    print(f"\nI_phi[q1, q2] on {N} pairs, q1 log-uniform in {Q_RANGE}, c uniform in [-1, 1]")
    head = (f"{'activation':14s} {'baseline':>15s} {'build':>13s} {'from disk':>9s} {'tables':>15s} {'speedup':>8s} "
            f"{'table share':>11s} {'table err':>9s} {'new vs old':>10s} {'err vs 30-digit':>16s}")
    print(head)
    print("-" * len(head))
    specs = ["relu", "erf", "tanh", "gelu", "silu", "softplus", "sigmoid", "tanh'", "expr:x*tanh(x)"]
    second_rows = []
    for spec in specs:
        if spec.endswith("'"):
            f = mf.activation(spec[:-1]).derivative
        else:
            f = Activation.from_expr(spec[5:]) if spec.startswith("expr:") else mf.activation(spec)
        numeric.fast_cross(f, q1[:10], q2[:10], use_tables=False)  # warm the node caches
        t_old, old = timed(numeric.fast_cross, f, q1, q2, use_tables=False)
        t_sec_old, sec_old = timed(numeric.fast_second, f, q1, use_tables=False)
        tables.clear_tables()
        t_first, _ = timed(numeric.fast_cross, f, q1, q2)  # builds the panels this range needs
        stats = tables.table_stats(f)
        tables.clear_tables()
        t_disk, _ = timed(numeric.fast_cross, f, q1, q2)  # a new process: the same panels, read from disk
        t_new, new = timed(numeric.fast_cross, f, q1, q2)
        t_sec_new, sec_new = timed(numeric.fast_second, f, q1)
        answered = tables.table_cross(tables.cross_table(f, None), q1, q2)[1] if stats["panels"] else np.zeros(N, bool)
        share = float(answered.mean())
        sub = np.nonzero(answered)[0][:3000]
        oracle = numeric.conditional_cross(f, q1[sub], q2[sub])
        err_table = worst(new[sub], oracle, sec_old[sub]) if sub.size else 0.0
        err_all = worst(new, old, sec_old)
        err_ref, count = reference_error(spec, f)
        build = f"{stats['seconds']:5.1f}s ({stats['panels']})" if stats["panels"] else "-"
        print(f"{f.name:14s} {t_old:6.3f}s {t_old / base:6.2f}x {build:>13s} {t_disk:8.3f}s {t_new:6.3f}s {t_new / base:6.3f}x "
              f"{t_old / t_new:7.1f}x {share:11.3f} {err_table:9.1e} {err_all:10.1e} {err_ref:9.1e} ({count:2d})")
        second_rows.append((f.name, t_sec_old, t_sec_new, worst(sec_new, sec_old, sec_old)))
    print("(build: seconds to build the q-panels this range needs, their count in brackets; from disk: the first\n"
          " call of a later process, which reads those panels from the disk cache; table err: the pairs\n"
          " the tables answered against the conditional quadrature, their oracle, on 3000 pairs; new vs old: all\n"
          " pairs, tables and fallback, against the quadrature alone -- both sides err ~1e-14 E[phi^2], which\n"
          " is large relative where I crosses 0; err vs 30-digit: the stored references in range, count in brackets)")

    print(f"\nE[phi^2](q) on {N} values of q")
    print(f"{'activation':14s} {'baseline':>15s} {'tables':>15s} {'diff':>9s}")
    for name, t_old, t_new, diff in second_rows:
        print(f"{name:14s} {t_old:6.3f}s {t_old / base:6.2f}x {t_new:6.3f}s {t_new / base:6.3f}x {diff:9.1e}")

    T = 1000
    rng = np.random.default_rng(3)
    diag = 10.0 ** rng.uniform(-1, 0.8, T)
    i, j = np.triu_indices(T, 1)
    qa, qb = diag[i], diag[j]
    qab = rng.uniform(-1, 1, i.size) * np.sqrt(qa * qb)
    print(f"\npair moments E[phi(u) phi(v)] on the {i.size} off-diagonal pairs of a T = {T} Gram matrix "
          "(variances log-uniform in [0.1, 6.3])")
    for name in ("relu", "erf", "tanh"):
        f = mf.activation(name)
        mf.pair_moment(f, qa[:10], qb[:10], qab[:10])
        took, _ = timed(mf.pair_moment, f, qa, qb, qab)
        print(f"  {name:5s} {took:7.3f} s = {took / base:6.2f} matmuls")

    print("\nmeanfield derive, depth 4, fresh process (imports included)")
    for expr in ("x + x**3/3", "x*tanh(x)"):
        print(f"  {expr:12s} {derive_seconds(expr):6.2f} s")


if __name__ == "__main__":
    main()
