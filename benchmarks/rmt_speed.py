"""Cold time of the random-matrix model: one ``predict(net, M, T, finite_width="rmt")`` per grid network, each in a
fresh process, against a 2048^3 matrix product timed in the same process.

Run:  python benchmarks/rmt_speed.py [--cell 64:8] [--only tanh] [--repeat 1] [--against PATH]

For each network of ``benchmarks/rmt_grid.py`` (relu / tanh; no normalization, batch norm on the output
centre-only and full, layer norm in both hidden layers; C = 1, 3, 10) a new Python process imports the package,
builds the network and times the first prediction at the cell (default M = 64, T = 8, the grid's first cell):
nothing is cached, the package's lazy imports included. Printed per network: the wall time of the call, its CPU
time, the time of ``import meanfield`` plus the network's construction (sympy and scipy.special: every use of the
package pays it once), and the call in units of the matrix product timed right after it in that process (the
machine may be shared: the product-times are the numbers to compare across runs). ``--against PATH`` runs the
same in a second tree (a folder holding another ``meanfield`` package, put first on ``PYTHONPATH``), interleaved
network by network, and prints both; ``--repeat K`` keeps the fastest of K fresh processes per network and tree.

Measured (2026-12-07; 2 cores, idle during the tanh rows (the product 0.22-0.26 s, wall time = CPU time), shared
with other jobs during the relu rows (there the CPU time is the number to trust); ``--against`` a copy of the tree
with the six files of ``meanfield/notes/rmt.md`` section 6b, "Third round", as they were before it; ``--pyc`` set;
first cell M = 64, T = 8; fastest of 2 processes; the call in s, its CPU time in parentheses, then product-times):

    network              after: call (CPU)   / product   before: call (CPU)   / product
    relu none C=1        0.35 (0.35)         1.47        0.80 (0.79)          2.92
    relu none C=10       0.72 (0.47)         1.85        1.27 (0.88)          2.99
    relu bn-center C=10  0.65 (0.47)         1.23        1.50 (0.88)          3.57
    relu bn-full C=10    0.70 (0.50)         1.71        1.29 (0.92)          3.79
    relu layernorm C=1   1.07 (0.76)         2.41        2.67 (1.84)          7.29
    relu layernorm C=10  1.35 (0.85)         3.28        2.80 (1.90)          8.58
    tanh none C=1        0.49 (0.40)         1.04        1.19 (0.84)          3.38
    tanh none C=10       0.65 (0.48)         1.54        1.05 (1.04)          3.95
    tanh bn-center C=10  0.52 (0.52)         1.99        0.93 (0.92)          4.33
    tanh bn-full C=10    0.44 (0.44)         2.03        0.98 (0.98)          4.37
    tanh layernorm C=1   0.61 (0.61)         2.46        1.45 (1.45)          6.33
    tanh layernorm C=10  0.72 (0.72)         2.88        1.47 (1.47)          6.03

Over the 24 networks the call's CPU time is 0.35-0.52 s without layer norm and 0.61-0.85 s with it (before:
0.75-1.04 s and 1.45-1.90 s), at most 3.3 product-times (before 8.6); the predictions agree to 1.4e-13 relative.
Before the call, ``import meanfield`` and the network's construction (sympy and scipy.special, which the spec needs)
take 0.34-0.42 s on the idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: this tree's package

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import meanfield
from meanfield.spec.network import BatchNorm, LayerNorm, Network
norms = {"none": (), "bn-center": (BatchNorm("last", center_only=True),), "bn-full": (BatchNorm("last"),),
         "layernorm": (LayerNorm(1), LayerNorm(2))}
acts = {"relu": (2.0, 0.0), "tanh": (1.0, 0.1)}
act, norm, C, M, T = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
net = Network(3, act, *acts[act], outputs=C, norms=norms[norm])
t1, c1 = time.perf_counter(), time.process_time()
p = meanfield.predict(net, M, T, finite_width="rmt")
t2, c2 = time.perf_counter(), time.process_time()
a = np.random.default_rng(0).standard_normal((2048, 2048))
t3 = time.perf_counter()
a @ a
t4 = time.perf_counter()
print(json.dumps(dict(imports=t1 - t0, call=t2 - t1, cpu=c2 - c1, product=t4 - t3, lam=float(p.lambda_max),
                      s=float(p.s), file=meanfield.__file__)))
"""

LABELS = [(act, norm, C) for act in ("relu", "tanh") for norm in ("none", "bn-center", "bn-full", "layernorm")
          for C in (1, 3, 10)]


def run(tree: str, act: str, norm: str, C: int, M: int, T: int, pyc: str = "") -> dict:
    """One fresh process (``tree`` first on PYTHONPATH if given): its timings and the prediction. With ``pyc`` the
    compiled modules are kept in that folder (as an installed package keeps its .pyc files)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if pyc:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = os.path.abspath(pyc)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _CHILD, act, norm, str(C), str(M), str(T)], env=env,
                         capture_output=True, text=True, check=True, cwd=tree or ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="64:8", help="M:T (default 64:8, the grid's first cell)")
    ap.add_argument("--only", default="", help="substring filter on the network label")
    ap.add_argument("--repeat", type=int, default=1, help="fresh processes per network and tree (the fastest kept)")
    ap.add_argument("--against", default="", help="a folder with another meanfield package: timed beside this one")
    ap.add_argument("--pyc", default="", help="keep compiled modules in this folder (a first process per tree fills "
                                              "it); default: as the environment says (PYTHONDONTWRITEBYTECODE)")
    args = ap.parse_args(argv)
    M, T = (int(v) for v in args.cell.split(":"))
    trees = [("", "this tree")] + ([(args.against, "against")] if args.against else [])
    if args.pyc:
        for tree, _ in trees:  # compile every module the call imports once, untimed
            run(tree, "tanh", "layernorm", 3, M, T, args.pyc)
    head = "| network | " + " | ".join(f"{name}: call s (cpu s) | product s | call / product | imports s"
                                         for _, name in trees)
    print(head + (" | same numbers |" if args.against else " |"))
    print("|" + "---|" * (1 + 4 * len(trees) + (1 if args.against else 0)))
    worst = {name: 0.0 for _, name in trees}
    for act, norm, C in LABELS:
        label = f"{act} {norm} C={C}"
        if args.only not in label:
            continue
        cells, results = [], []
        for tree, name in trees:
            best = min((run(tree, act, norm, C, M, T, args.pyc) for _ in range(args.repeat)), key=lambda r: r["call"])
            results.append(best)
            worst[name] = max(worst[name], best["call"] / best["product"])
            cells.append(f"{best['call']:.2f} ({best['cpu']:.2f}) | {best['product']:.2f} | "
                         f"{best['call'] / best['product']:.2f} | {best['imports']:.2f}")
        same = ""
        if args.against:
            a, b = results
            rel = max(abs(a["lam"] / b["lam"] - 1), abs(a["s"] / b["s"] - 1))
            same = f" {rel:.1e} |"
        print(f"| {label} | " + " | ".join(cells) + " |" + same, flush=True)
    print("\nlargest call / product: " + ", ".join(f"{name} {w:.2f}" for name, w in worst.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
