"""Selected cells of the random-matrix grid re-measured with many fresh networks (seeds 0..N-1), against the model.

Run:  python benchmarks/rmt_fresh_cells.py --cells "relu bn-center C=3:256:8,tanh bn-center C=3:64:512" --seeds 400
      python benchmarks/rmt_fresh_cells.py --cells ... --seeds 400 --json fresh.jsonl   (one line per network; resumes)

The grid (``benchmarks/rmt_grid.py``) samples 48 networks at M = 64 and 16 at M = 256, and the same seed is the same
hidden network at every C and T, so a whole column of cells shares one offset that its standard error does not show.
This script samples the named cells (the grid's network definitions, ``rmt_grid.networks``) with N seeds in one
process (one thread is enough: the Grams are at most C T = 5120), and prints per cell the sampled mean of lambda_max
and s with their standard errors, the grid's 48/16-seed mean (the first seeds of the same draws), and the relative
error of ``predict(net, M, T, finite_width=--model)`` against the fresh mean. With ``--json`` every network's
(label, M, T, seed, lambda_max, s) is appended as it is drawn, and a rerun samples only the missing seeds.

With ``--blocks`` (batch norm on the output, C > 1) each network's Gram is built and its C diagonal blocks'
tops are taken too: the script then also prints the within-network relative variance of the block tops, M a (the
spread between outputs that the model's first order over the output sphere carries, ``meanfield.finite.blockspread``),
and the whole top over the mean block top, with standard errors over the networks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rmt_grid import networks  # noqa: E402  (the grid's network definitions)

from meanfield.sampled.sampling import sample  # noqa: E402
from meanfield.theory.fisher import predict  # noqa: E402


def _load(path: str) -> dict:
    done = {}
    if path and os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    done[(r["label"], r["M"], r["T"], r["seed"])] = (r["lambda_max"], r["s"], r.get("tops"))
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", required=True, help="label:M:T,label:M:T,... (labels as in rmt_grid.py)")
    ap.add_argument("--seeds", type=int, default=400, help="networks per cell, seeds 0..N-1 (default 400)")
    ap.add_argument("--first", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--model", default="rmt", help="finite_width model to compare (default rmt)")
    ap.add_argument("--json", default="", help="append one JSON line per sampled network; reuse what is there")
    ap.add_argument("--blocks", action="store_true", help="also the C block tops per network (spread between outputs)")
    args = ap.parse_args(argv)
    nets = dict(networks(False))
    done = _load(args.json)
    print("| network | M | T | seeds | sampled lambda_max (sem) | first 48/16 seeds | model | err model | "
          "sampled s (sem) | err s |")
    print("|" + "---|" * 10)
    for cell in args.cells.split(","):
        label, M, T = cell.rsplit(":", 2)
        label, M, T = label.strip(), int(M), int(T)
        net = nets[label]
        lam, s, tops = [], [], []
        blocks = args.blocks and net.outputs > 1
        for seed in range(args.first, args.first + args.seeds):
            key = (label, M, T, seed)
            if key not in done or (blocks and done[key][2] is None):
                r = sample(net, M, T, seed=seed, gram=blocks)
                block_tops = None
                if blocks:  # the Gram's index is k T + t: block k is rows and columns k T .. (k + 1) T - 1
                    block_tops = [float(np.linalg.eigvalsh(r.gram[k * T:(k + 1) * T, k * T:(k + 1) * T])[-1])
                                  for k in range(net.outputs)]
                done[key] = (float(r.lambda_max), float(r.s), block_tops)
                if args.json:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps(dict(label=label, M=M, T=T, seed=seed, lambda_max=done[key][0],
                                                 s=done[key][1], tops=block_tops)) + "\n")
            lam.append(done[key][0])
            s.append(done[key][1])
            tops.append(done[key][2])
        lam, s = np.array(lam), np.array(s)
        n_grid = 48 if M <= 64 else 16 if M <= 256 else 8 if M <= 1024 else 4
        p = predict(net, M, T, finite_width=args.model)
        mean, sem = lam.mean(), lam.std(ddof=1) / math.sqrt(len(lam))
        smean, ssem = s.mean(), s.std(ddof=1) / math.sqrt(len(s))
        print(f"| {label} | {M} | {T} | {len(lam)} | {mean:.4g} ({sem / mean:.1%}) | {lam[:n_grid].mean():.4g} | "
              f"{float(p.lambda_max):.4g} | {float(p.lambda_max) / mean - 1:+.1%} | {smean:.4g} ({ssem / smean:.1%}) | "
              f"{float(p.s) / smean - 1:+.1%} |", flush=True)
        if blocks:
            tp = np.array(tops)
            mean_top = tp.mean()
            spread = M * tp.var(axis=1, ddof=1) / mean_top**2  # per network; its mean is unbiased for M a
            ratio = lam / tp.mean(axis=1)
            print(f"  blocks: mean block top {mean_top:.4g}, M a = {spread.mean():.3f} (se "
                  f"{spread.std(ddof=1) / math.sqrt(len(spread)):.3f}), whole / mean block top "
                  f"{lam.mean() / mean_top:.4f} "
                  f"(se {ratio.std(ddof=1) / math.sqrt(len(ratio)):.4f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
