"""Benchmark: the fast path of I_phi[q1, q2] on 10^5 pairs vs a per-point mpmath loop.

Prints, for relu (closed form) and tanh (no closed form: Mehler series / conditional quadrature),
the time for 10^5 (q1, q2) pairs, the time of the per-point mpmath loop extrapolated from a timed
subset (the subset size is printed), their ratio, and the accuracy reached (max relative error vs
30-digit references). Two distributions of q1: "typical" (log-uniform in [0.1, 10], the range of
the order-parameter recursions of tanh nets) and "wide" (log-uniform in [1e-4, 1e4]); c uniform
in [-1, 1] with 10% of the pairs within 1e-6 of +-1.

Run: ``python benchmarks/gaussian.py`` (about 3 minutes, most of it in mpmath).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mpmath
import numpy as np

import meanfield as mf
from meanfield.spec.activations import Activation
from meanfield.integrals import numeric

N = 100_000
REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "gaussian_reference.json"


def pairs(n: int, lo: float, hi: float, seed: int):
    rng = np.random.default_rng(seed)
    q1 = 10.0 ** rng.uniform(lo, hi, n)
    c = rng.uniform(-1, 1, n)
    edge = rng.random(n) < 0.1
    c[edge] = np.sign(c[edge]) * (1 - 10.0 ** rng.uniform(-12, -6, edge.sum()))
    return q1, c * q1


def timed(fn, *args, repeat: int = 1):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def mp_loop(f, q1, q2, dps):
    return [numeric.mp_cross(f, float(a), float(b), dps) for a, b in zip(q1, q2)]


def table_accuracy(name: str) -> tuple[float, int]:
    rows = [r for r in json.loads(REFERENCE.read_text())["rows"] if r["activation"] == name]
    f = mf.activation(name)
    worst = 0.0
    for r in rows:
        ref = float(mpmath.mpf(r["cross"]))
        scale = float(mpmath.mpf(r["second"]))
        got = float(numeric.fast_cross(f, float(r["q1"]), float(r["q2"])))
        worst = max(worst, abs(got - ref) / max(abs(ref), 1e-15 * scale))
    return worst, len(rows)


def main() -> None:
    relu, tanh = mf.activation("relu"), mf.activation("tanh")
    x = np.random.default_rng(0).random(10**6)
    t_tanh, _ = timed(np.tanh, x, repeat=3)
    print(f"meanfield.integrals benchmark: {N} pairs per distribution (c within 1e-6 of +-1 for 10%)")
    print(f"machine load check: np.tanh takes {t_tanh * 1e3:.1f} ns per element (~7-11 on an idle core)\n")
    header = f"{'activation':10s} {'q1 range':16s} {'fast path':>10s} {'per pair':>10s} {'mpmath loop':>14s} {'ratio':>9s}"
    print(header)
    print("-" * len(header))
    for label, lo, hi in [("typical", -1, 1), ("wide", -4, 4)]:
        q1, q2 = pairs(N, lo, hi, seed=1)
        for f, subset, dps in [(relu, 2000, 30), (tanh, 2, 20)]:
            numeric.fast_cross(f, q1[:10], q2[:10])  # warm caches (node tables, lambdify)
            t_fast, _ = timed(numeric.fast_cross, f, q1, q2)
            t_sub, _ = timed(mp_loop, f, q1[:subset], q2[:subset], dps)
            t_mp = t_sub / subset * N
            print(f"{f.name:10s} {label + f' 1e{lo}..1e{hi}':16s} {t_fast:9.3f}s {t_fast / N * 1e6:8.2f}us"
                  f" {t_mp:13.0f}s* {t_mp / t_fast:9.0f}")
    print("* extrapolated from a timed subset: relu 2000 points (closed form, dps 30), "
          "tanh 2 points (nested quadrature, dps 20)")

    print("\naccuracy (max relative error; floor 1e-15 x second moment where I vanishes):")
    q1, q2 = pairs(2000, -4, 4, seed=2)
    fast = numeric.fast_cross(relu, q1, q2)
    worst = 0.0
    for a, b, v in zip(q1, q2, fast):
        ref = numeric.mp_cross(relu, float(a), float(b), 30)
        worst = max(worst, abs(v - float(ref)) / max(abs(float(ref)), 1e-15 * a / 2))
    print(f"  relu closed form vs mpmath at 30 digits, 2000 pairs (q1 in 1e-4..1e4): {worst:.1e}")
    if REFERENCE.exists():
        for name in ["tanh", "sigmoid", "softplus", "gelu", "silu"]:
            err, count = table_accuracy(name)
            print(f"  {name:8s} fast path vs 30-digit nested quadrature, {count} stored pairs: {err:.1e}")
    else:
        print("  (tests/data/gaussian_reference.json missing: tanh accuracy not shown)")


if __name__ == "__main__":
    main()
