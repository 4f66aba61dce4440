"""The random-matrix grid: relative error of E lambda_max (and E s) predicted by RMT vs leading order, against sampled means.

Run:  python benchmarks/rmt_grid.py [--quick] [--seeds N] [--out table.md] [--max-ct N] [--json cells.jsonl]

For each network (relu / tanh; no normalization, batch norm on the output (center-only, full), layer norm in
both hidden layers; C in {1, 3, 10}) and each feasible cell (M, T), prints

    err_lead = leading / sampled - 1,  err_mf = finite-width mean field / sampled - 1,  err_rmt = rmt / sampled - 1

for lambda_max and for s, with the sampled standard error. "leading" is the paper's value: alpha M (kappa_1 +
(T-1) kappa_2) / T without normalization, the bulk value alpha (kappa_1 - kappa_2) M / T (center-only) or that
value times the chi-square maximum (full batch norm; FisherStats.lambda_max of the finite-width prediction, which
is a lower bound there). Feasible cells: C T <= 4096 (the sampler builds and diagonalizes the C T x C T Gram;
--max-ct raises the bound); the rest (C = 10 with T >= 512, C = 3 with T = 2048) are listed as skipped. A cell "resolves" 5% when the sampled
standard error is at most 2.5%; the summary counts cells within 5% among all and among the resolving ones.

The sampled seeds are 0..N-1; the RMT fluctuation coefficients are measured at widths 64 and 128 with seeds
1000-1002 (never the tested draws). Timings are printed against the time of the sampled means (the baseline).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from meanfield.theory.fisher import predict
from meanfield.spec.network import BatchNorm, LayerNorm, Network
from meanfield.finite.fluctuations import measure_fluctuations
from meanfield.finite.model import finite_width_stats
from meanfield.sampled.sampling import sample_many

ACTS = {"relu": (2.0, 0.0), "tanh": (1.0, 0.1)}
NORMS = {"none": (), "bn-center": (BatchNorm("last", center_only=True),), "bn-full": (BatchNorm("last"),),
         "layernorm": (LayerNorm(1), LayerNorm(2))}
# M in [64, 2048]; T/M from 1/32 (M/T = 32) to 32 (M/T = 1/32) where the C T x C T Gram fits MAX_CT
FULL_CELLS = [(64, 8), (64, 16), (64, 64), (64, 512), (64, 2048), (256, 8), (256, 64), (256, 256), (256, 2048),
              (1024, 32), (1024, 256), (1024, 1024), (2048, 64), (2048, 256), (2048, 2048)]
QUICK_CELLS = [(64, 16), (64, 64), (64, 512), (256, 8), (256, 64), (256, 256), (1024, 32)]
MAX_CT = 4096


def networks(quick: bool):
    for act, (sw, sb) in ACTS.items():
        for norm, norms in NORMS.items():
            for C in ((1, 10) if quick else (1, 3, 10)):
                yield f"{act} {norm} C={C}", Network(3, act, sw, sb, outputs=C, norms=norms)


def leading(net: Network, base) -> float:
    last = net.norm_at(net.depth)
    if isinstance(last, BatchNorm):
        if last.center_only:
            return float(base.leading.gram_diag - base.leading.gram_offdiag)
        return float(base.lambda_max)  # (d - o) E[max_k T/chi^2_k] / v: the mean-field value with chi-square max
    return float(base.leading.lambda_max)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cells and C in {1, 10}")
    ap.add_argument("--seeds", type=int, default=0, help="seeds per cell (default: 48 at M=64, 16 at 256, 8 at 1024, 4 above)")
    ap.add_argument("--only", default="", help="substring filter on the network label")
    ap.add_argument("--nets", default="", help="comma-separated exact labels to run, in this order")
    ap.add_argument("--cells", default="", help="cells as M:T,M:T,... (default: the grid)")
    ap.add_argument("--out", default="", help="also write the table (markdown) here")
    ap.add_argument("--max-ct", type=int, default=MAX_CT,
                    help=f"skip cells with C T above this (the C T x C T Gram is built; default {MAX_CT})")
    ap.add_argument("--json", default="", help="append one JSON object per measured cell (JSON Lines) to this file")
    args = ap.parse_args(argv)
    cells = QUICK_CELLS if args.quick else FULL_CELLS
    if args.cells:
        cells = [tuple(int(v) for v in c.split(":")) for c in args.cells.split(",")]
    nets = list(networks(False))
    if args.nets:
        by_label = dict(nets)
        nets = [(lab.strip(), by_label[lab.strip()]) for lab in args.nets.split(",")]
    elif args.quick:
        nets = list(networks(True))
    rows, skipped = [], []
    t_sample = t_theory = 0.0
    header = ("| network | M | T | T/M | sampled lambda_max (sem) | err lead | err mf | err rmt | "
              "sampled s (sem) | err s mf | err s rmt |")
    print(header)
    print("|" + "---|" * 11)
    for label, net in nets:
        if args.only and args.only not in label:
            continue
        t0 = time.perf_counter()
        measure_fluctuations(net)
        t_theory += time.perf_counter() - t0
        for M, T in cells:
            if net.outputs * T > args.max_ct:
                skipped.append((label, M, T))
                continue
            t0 = time.perf_counter()
            base = predict(net, M, T)
            rm = finite_width_stats(net, M, T, base)
            t_theory += time.perf_counter() - t0
            t0 = time.perf_counter()
            nseeds = args.seeds or (48 if M <= 64 else 16 if M <= 256 else 8 if M <= 1024 else 4)
            sm = sample_many(net, M, T, nseeds, processes=1, progress=False)
            t_sample += time.perf_counter() - t0
            lam, sem = float(sm.mean["lambda_max"]), float(sm.sem["lambda_max"])
            s, s_sem = float(sm.mean["s"]), float(sm.sem["s"])
            lead = leading(net, base)
            row = dict(label=label, M=M, T=T, seeds=nseeds, lam=lam, sem=sem, e_lead=lead / lam - 1,
                       e_mf=float(base.lambda_max) / lam - 1, e_rmt=rm["lambda_max"] / lam - 1, s=s, s_sem=s_sem,
                       es_mf=float(base.s) / s - 1, es_rmt=rm["s"] / s - 1)
            rows.append(row)
            if args.json:  # one line per cell, appended as cells complete (survives an interrupted grid)
                record = dict(label=label, M=M, T=T, seeds=nseeds, lam=lam, sem=sem, s=s, s_sem=s_sem,
                              rmt=float(rm["lambda_max"]), rmt_s=float(rm["s"]), lead=lead,
                              mf=float(base.lambda_max), mf_s=float(base.s))
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            line = (f"| {label} | {M} | {T} | {T / M:.3g} | {lam:.4g} ({sem / lam:.1%}) | {row['e_lead']:+.1%} | "
                    f"{row['e_mf']:+.1%} | {row['e_rmt']:+.1%} | {s:.4g} ({s_sem / s:.1%}) | "
                    f"{row['es_mf']:+.1%} | {row['es_rmt']:+.1%} |")
            print(line, flush=True)
            if args.out:  # keep a partial table on disk while the grid runs
                with open(args.out + ".partial", "a") as fh:
                    fh.write(line + "\n")
    within = [r for r in rows if abs(r["e_rmt"]) <= 0.05]
    within_lead = [r for r in rows if abs(r["e_lead"]) <= 0.05]
    within_s = [r for r in rows if abs(r["es_rmt"]) <= 0.05]
    resolving = [r for r in rows if r["sem"] <= 0.025 * r["lam"]]
    summary = [
        f"cells: {len(rows)} measured (seeds 0..N-1, N = 48 at M=64, 16 at M=256, 8 at M=1024, 4 above unless --seeds), "
        f"{len(skipped)} skipped (C T > {args.max_ct})",
        f"lambda_max within 5%: rmt {len(within)}/{len(rows)}, leading {len(within_lead)}/{len(rows)}",
        f"lambda_max within 5% where the sampled sem <= 2.5%: rmt "
        f"{sum(abs(r['e_rmt']) <= 0.05 for r in resolving)}/{len(resolving)}, leading "
        f"{sum(abs(r['e_lead']) <= 0.05 for r in resolving)}/{len(resolving)}",
        f"s within 5%: rmt {len(within_s)}/{len(rows)}",
        "median |err| lambda_max: rmt {:.1%}, leading {:.1%}".format(
            _median([abs(r["e_rmt"]) for r in rows]), _median([abs(r["e_lead"]) for r in rows])),
        f"time: theory (incl. reference measurement) {t_theory:.1f} s = {t_theory / max(t_sample, 1e-9):.2f} x the "
        f"sampled means ({t_sample:.1f} s)",
    ]
    for line in summary:
        print(line)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(header + "\n|" + "---|" * 11 + "\n")
            for r in rows:
                fh.write(f"| {r['label']} | {r['M']} | {r['T']} | {r['T'] / r['M']:.3g} | {r['lam']:.4g} "
                         f"({r['sem'] / r['lam']:.1%}) | {r['e_lead']:+.1%} | {r['e_mf']:+.1%} | {r['e_rmt']:+.1%} | "
                         f"{r['s']:.4g} ({r['s_sem'] / r['s']:.1%}) | {r['es_mf']:+.1%} | {r['es_rmt']:+.1%} |\n")
            fh.write("\n" + "\n".join(summary) + "\n")
    return 0


def _median(xs):
    xs = sorted(xs)
    if not xs:
        return math.nan
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


if __name__ == "__main__":
    sys.exit(main())
