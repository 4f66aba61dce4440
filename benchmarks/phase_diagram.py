"""Time a 200 x 200 signal-propagation phase diagram (chi_1, q*, c*, xi_c on a sigma_w^2 x sigma_b^2 grid).

One call of ``meanfield.signal_propagation`` per activation on the whole grid (numpy arrays in, arrays
out), against one 2048^3 float64 matrix product timed in the same process, so the ratio says how the
cost compares with the machine's raw speed. For activations without a closed form (tanh) three
times: the quadrature alone (tables switched off: the baseline), the first call with tables (it
builds the q-panels it needs, of phi and phi'), and a call with the tables built.
Run: ``python benchmarks/phase_diagram.py [n]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from yardstick import matmul_seconds  # noqa: E402 - the benchmarks' common unit, beside this script

import meanfield as mf
from meanfield.integrals import tables



def main(n: int = 200) -> None:
    sw, sb = np.meshgrid(np.linspace(0.5, 4.0, n), np.linspace(0.0, 0.5, n))
    base = matmul_seconds()
    print(f"one 2048^3 float64 matmul: {base:.3f} s")
    build_from = tables.BUILD_FROM
    for name in ("relu", "tanh", "erf"):
        mf.signal_propagation(name, 1.5, 0.1)  # warm caches (lambdified activations, node sets)
        runs = [("", build_from)] if name != "tanh" else [
            (" quadrature only", 10**15), (" first call, builds tables", build_from), (" tables built", build_from)]
        tables.clear_tables()
        for label, threshold in runs:
            tables.BUILD_FROM = threshold  # a threshold no call reaches: the tables stay unbuilt
            start = time.perf_counter()
            res = mf.signal_propagation(name, sw, sb)
            took = time.perf_counter() - start
            phases = {str(k): int(v) for k, v in zip(*np.unique(res.phase, return_counts=True))}
            print(f"{name:5s} {n}x{n}{label:27s}: {took:7.2f} s  = {took / base:7.1f} matmuls   phases {phases}")
        tables.BUILD_FROM = build_from
        if name == "tanh":
            f = mf.activation(name)
            built = {g.name: tables.table_stats(g) for g in (f, f.derivative)}
            print("      tables built: " + ", ".join(f"{k}: {v['panels']} q-panels in {v['seconds']:.1f} s"
                                                 for k, v in built.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
