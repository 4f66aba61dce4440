"""The random-matrix grid: relative error of E lambda_max (and E s) predicted by RMT vs leading order, against sampled means.

Run:  python benchmarks/rmt_grid.py [--quick] [--seeds N] [--out table.md] [--max-ct N] [--json cells.jsonl]
      python benchmarks/rmt_grid.py --reference meanfield/notes/rmt.md [--model rmt] [--baseline-seeds 1]
      python benchmarks/rmt_grid.py --reference meanfield/notes/rmt.md --cold-every   (every cell timed cold)
      python benchmarks/rmt_grid.py --reference meanfield/notes/rmt.md --small-t-top deterministic   (no Monte Carlo)

With ``--reference`` nothing is resampled: the sampled means and standard errors are read from the per-cell
table of a markdown file (the grid tables of ``meanfield/notes/rmt.md``) or from a JSON Lines file written by
``--json``, and only the predictions are recomputed (``--model`` picks ``predict(..., finite_width=...)``). The
prediction is timed per network cold (its first cell, nothing cached; wall and CPU time) and warm (the other cells),
or every cell cold with ``--cold-every``, beside the time of one 2048^3 matrix product in the same process (the
machine may be shared); with
``--baseline-seeds K`` each cell's K first seeds are sampled in the same process and the sampling time of the
cell's N seeds (K seeds' time times N / K) is printed beside it as the baseline.

For each network (relu / tanh; no normalization, batch norm on the output (center-only, full), layer norm in
both hidden layers; C in {1, 3, 10}) and each feasible cell (M, T), prints

    err_lead = leading / sampled - 1,  err_mf = finite-width mean field / sampled - 1,  err_rmt = rmt / sampled - 1

for lambda_max and for s, with the sampled standard error. "leading" is the paper's value: alpha M (kappa_1 +
(T-1) kappa_2) / T without normalization, the bulk value alpha (kappa_1 - kappa_2) M / T (center-only) or that
value times the chi-square maximum (full batch norm; FisherStats.lambda_max of the finite-width prediction, which
is a lower bound there). Feasible cells: C T <= 4096 (the sampler builds and diagonalizes the C T x C T Gram;
--max-ct raises the bound); the rest (C = 10 with T >= 512, C = 3 with T = 2048) are listed as skipped. A cell "resolves" 5% when the sampled
standard error is at most 2.5%; the summary counts cells within 5% among all and among the resolving ones.

The sampled seeds are 0..N-1 (S..S+N-1 with ``--seed-start S``). The default model (``--model rmt``) derives every coefficient and samples no
network; ``--model rmt-measured`` measures what the derivation does not cover on reference networks at widths 64
and 128 (seeds from 1000, never the tested draws). Timings are printed against the time of the sampled means (the
baseline).

Measured with ``--reference meanfield/notes/rmt.md --cold`` (2026-12-07, after the speed changes of section 6b,
"Third round", of the notes; product 0.30 s): first cells 0.26-0.40 s without layer norm (0.87-1.37 product-times)
and 0.47-0.85 s with it (1.6-2.9), median cell 0.09 s, none over 1 s (before: 0.62-1.07 s and 1.51-1.71 s, 2.0-3.5 and
5.0-5.6 product-times). ``benchmarks/rmt_speed.py`` times the first cell in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time

import numpy as np

from meanfield.theory.fisher import predict
from meanfield.sampled.sampling import sample
from meanfield.spec.network import BatchNorm, LayerNorm, Network
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
    ap.add_argument("--seed-factor", type=int, default=1, help="K times the default seeds per cell (without --seeds)")
    ap.add_argument("--seed-start", type=int, default=0,
                    help="first seed (default 0): an independent re-measurement of the grid draws seeds S..S+N-1")
    ap.add_argument("--only", default="", help="substring filter on the network label")
    ap.add_argument("--nets", default="", help="comma-separated exact labels to run, in this order")
    ap.add_argument("--cells", default="", help="cells as M:T,M:T,... (default: the grid)")
    ap.add_argument("--out", default="", help="also write the table (markdown) here")
    ap.add_argument("--max-ct", type=int, default=MAX_CT,
                    help=f"skip cells with C T above this (the C T x C T Gram is built; default {MAX_CT})")
    ap.add_argument("--json", default="", help="append one JSON object per measured cell (JSON Lines) to this file")
    ap.add_argument("--reference", default="", help="re-evaluate against stored sampled means (markdown table or JSONL)")
    ap.add_argument("--model", default="rmt", help="finite_width model to evaluate with --reference (default rmt)")
    ap.add_argument("--max-m", type=int, default=0, help="with --reference: only cells with M at most this")
    ap.add_argument("--cold", action="store_true",
                    help="with --reference: clear every cache of the package before each network (a cold first cell)")
    ap.add_argument("--cold-every", action="store_true",
                    help="with --reference: clear every cache before every cell (each cell timed cold)")
    ap.add_argument("--small-t-top", default="", choices=("", "drawn", "deterministic"),
                    help="with --reference: the block top at T <= 128 (meanfield.finite.model.SMALL_T_TOP; default: "
                         "the package's)")
    ap.add_argument("--baseline-seeds", type=int, default=0,
                    help="with --reference: sample this many seeds per cell to time the sampling baseline")
    args = ap.parse_args(argv)
    if args.small_t_top:
        from meanfield.finite import model as _model

        _model.SMALL_T_TOP = args.small_t_top
    if args.reference:
        return reevaluate(args)
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
        for M, T in cells:
            if net.outputs * T > args.max_ct:
                skipped.append((label, M, T))
                continue
            t0 = time.perf_counter()
            base = predict(net, M, T)
            model = predict(net, M, T, finite_width=args.model)
            rm = dict(lambda_max=float(model.lambda_max), s=float(model.s))
            t_theory += time.perf_counter() - t0
            t0 = time.perf_counter()
            nseeds = args.seeds or args.seed_factor * (48 if M <= 64 else 16 if M <= 256 else 8 if M <= 1024 else 4)
            sm = sample_many(net, M, T, range(args.seed_start, args.seed_start + nseeds), processes=1, progress=False)
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
        f"time: theory ({args.model}) {t_theory:.1f} s = {t_theory / max(t_sample, 1e-9):.2f} x the "
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


_ROW = re.compile(r"^\| ([a-z]+ [a-z-]+ C=\d+) \| (\d+) \| (\d+) \| [^|]+ \|(?: (\d+) \|)? ([0-9.e+-]+) \(([0-9.]+)%\) \|"
                  r"[^|]*\|[^|]*\|[^|]*\| ([0-9.e+-]+) \(([0-9.]+)%\) \|")


def read_reference(path: str) -> list:
    """Sampled cells (label, M, T, seeds, lam, sem, s, s_sem) from a grid table (markdown) or a --json file."""
    cells = []
    with open(path) as fh:
        for line in fh:
            if path.endswith(".jsonl") and line.strip():
                r = json.loads(line)
                cells.append(dict(label=r["label"], M=r["M"], T=r["T"], seeds=r["seeds"], lam=r["lam"], sem=r["sem"],
                                  s=r["s"], s_sem=r["s_sem"]))
                continue
            m = _ROW.match(line)
            if m:
                label, M, T, seeds, lam, rel, s, s_rel = m.groups()
                M, T, lam, s = int(M), int(T), float(lam), float(s)
                n = int(seeds) if seeds else (48 if M <= 64 else 16 if M <= 256 else 8 if M <= 1024 else 4)
                cells.append(dict(label=label, M=M, T=T, seeds=n, lam=lam, sem=lam * float(rel) / 100, s=s,
                                  s_sem=s * float(s_rel) / 100))
    return cells


def clear_caches() -> None:
    """Empty every functools cache of the package (so that the next prediction is timed cold)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("meanfield"):
            for obj in list(vars(module).values()):
                if callable(getattr(obj, "cache_clear", None)):
                    obj.cache_clear()


def reevaluate(args) -> int:
    """The grid's counts for ``--model`` against stored sampled means (no resampling), with timings."""
    by_label = dict(networks(False))
    cells = [c for c in read_reference(args.reference) if args.only in c["label"]
             and by_label[c["label"]].outputs * c["T"] <= args.max_ct and (not args.max_m or c["M"] <= args.max_m)]
    if args.nets:
        wanted = [lab.strip() for lab in args.nets.split(",")]
        cells = [c for c in cells if c["label"] in wanted]
    print("| network | M | T | sampled lambda_max (sem) | err rmt | sampled s (sem) | err s rmt | time (s) |")
    print("|" + "---|" * 8)
    rows, timing = [], {}
    for c in cells:
        net = by_label[c["label"]]
        if args.cold_every or (args.cold and c["label"] not in timing):
            clear_caches()
        t0, c0 = time.perf_counter(), time.process_time()
        p = predict(net, c["M"], c["T"], finite_width=args.model)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        base = 0.0
        if args.baseline_seeds:
            k = min(args.baseline_seeds, c["seeds"])
            t0 = time.perf_counter()
            for seed in range(k):
                sample(net, c["M"], c["T"], seed)
            base = (time.perf_counter() - t0) * c["seeds"] / k
        timing.setdefault(c["label"], []).append((dt, base, c["M"], cpu))
        row = dict(c, e=float(p.lambda_max) / c["lam"] - 1, es=float(p.s) / c["s"] - 1, time=dt)
        rows.append(row)
        print(f"| {c['label']} | {c['M']} | {c['T']} | {c['lam']:.4g} ({c['sem'] / c['lam']:.1%}) | {row['e']:+.1%} | "
              f"{c['s']:.4g} ({c['s_sem'] / c['s']:.1%}) | {row['es']:+.1%} | {dt:.2f} |", flush=True)
    resolving = [r for r in rows if r["sem"] <= 0.025 * r["lam"]]
    print(f"\nmodel {args.model!r} against {args.reference}: lambda_max within 5%: {sum(abs(r['e']) <= 0.05 for r in rows)}"
          f"/{len(rows)}; where the sampled sem <= 2.5%: {sum(abs(r['e']) <= 0.05 for r in resolving)}/{len(resolving)}; "
          f"s within 5%: {sum(abs(r['es']) <= 0.05 for r in rows)}/{len(rows)}; median |err| "
          f"{_median([abs(r['e']) for r in rows]):.1%}")
    worst = sorted(resolving, key=lambda r: -abs(r["e"]))[:8]
    print("worst resolving cells: " + "; ".join(f"{r['label']} M={r['M']} T={r['T']} {r['e']:+.1%} "
                                                 f"(sem {r['sem'] / r['lam']:.1%})" for r in worst))
    # the machine's speed at the time (it may be shared): one 2048^3 double product, in this process and thread
    a = np.random.default_rng(0).standard_normal((2048, 2048))
    t0 = time.perf_counter()
    a @ a
    matmul = time.perf_counter() - t0
    times = [r["time"] for r in rows]
    print(f"\nprediction time per cell: median {_median(times):.2f} s, max {max(times, default=0.0):.2f} s, over 1 s: "
          f"{sum(t > 1.0 for t in times)} of {len(times)}" + (" (every cell cold)" if args.cold_every else "")
          + f"; a 2048^3 matrix product took {matmul:.2f} s here (median {_median(times) / matmul:.2f}, max "
          f"{max(times, default=0.0) / matmul:.2f} product-times)")
    # the ratio to the product in the same process is the number to compare across runs on a shared machine
    # with the CPU time of the first cell (on a loaded machine the wall time overstates it)
    print("\n| network | cold (first cell) s | cold / product | cold CPU s | warm mean s | warm max s | max M | "
          "sampling its cells s (baseline) |")
    print("|" + "---|" * 8)
    for label, ts in timing.items():
        warm = [t for t, _, _, _ in ts[1:]] or [0.0]
        base = sum(b for _, b, _, _ in ts)
        print(f"| {label} | {ts[0][0]:.2f} | {ts[0][0] / matmul:.2f} | {ts[0][3]:.2f} | {sum(warm) / len(warm):.2f} | "
              f"{max(warm):.2f} | {max(m for _, _, m, _ in ts)} | " + (f"{base:.1f} |" if args.baseline_seeds else "- |"))
    return 0


def _median(xs):
    xs = sorted(xs)
    if not xs:
        return math.nan
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


if __name__ == "__main__":
    sys.exit(main())
