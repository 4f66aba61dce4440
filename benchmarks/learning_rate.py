"""Measure the learning-rate threshold c* = eta* lambda_max, the behaviour above it, and the (M, eta) grid.

Run:  python benchmarks/learning_rate.py [--quick] [--json out.json] [--figure lr.png] [--parts ...]

Parts (all by default):
  threshold  bisection on c for a zero-residual minimum (meanfield.sampled.training.stability_threshold) over
             normalization placements x activations x (M, T) x seeds; theory: c* = 2.
  above      random start toward random targets at c = eta lambda_max(start) from 0.5 to 64: peak and
             final loss, lambda_max at the end (catapult), and the smallest c that diverged.
  grid       meanfield.checking.learning_rate_grid for no normalization vs batch norm in the last
             layer: loss after N steps over (M, eta) with eta_max = 2/lambda_max(M); the step gain.
  timing     one gradient step (forward + vjp) against the forward pass alone, and the exact Gram,
             timed in the same process (ratios, so the machine's load cancels to first order).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

# One BLAS thread: the matrices here are small (T x M), and on a loaded machine multi-threaded
# OpenBLAS spins: a 100-step run at M = 128 took 25 s with default threads, 1.3 s with one.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from meanfield.spec.network import BatchNorm, LayerNorm, Network  # noqa: E402
from meanfield.checking.learning_rate_grid import learning_rate_grid, plot_learning_rate_grid  # noqa: E402
from meanfield.sampled.training import stability_threshold, train  # noqa: E402

PLACEMENTS = {
    "none": (),
    "bn last": (BatchNorm("last"),),
    "bn-center last": (BatchNorm("last", center_only=True),),
    "ln 1": (LayerNorm(1),),
    "bn 2": (BatchNorm(2),),
    "bn all": (BatchNorm(1), BatchNorm(2), BatchNorm("last")),
}
ACTS = {"relu": (2.0, 0.1), "tanh": (1.5, 0.1)}
ABOVE = ("none", "bn last", "bn-center last", "ln 1")


def net_for(placement: str, act: str, depth: int = 3, outputs: int = 1) -> Network:
    sw, sb = ACTS[act]
    return Network(depth, act, sw, sb, outputs=outputs, norms=PLACEMENTS[placement])


def part_threshold(quick: bool) -> list[dict]:
    sizes = [(32, 8)] if quick else [(32, 8), (128, 32)]
    seeds = (0,) if quick else (0, 1, 2)
    rows = []
    print("\n== threshold c* = eta* lambda_max (zero-residual minimum; theory 2) ==")
    print(f"{'placement':>15} {'act':>5} {'M':>4} {'T':>3} {'seed':>4} {'dir':>6} {'c*':>9} {'c*/2-1':>10} "
          f"{'lambda_max':>10} {'runs':>4} {'s':>5}")
    for placement in PLACEMENTS:
        for act in ACTS:
            for M, T in sizes:
                for seed in seeds:
                    for direction, steps in (("top", 400), ("random", 3000)):
                        if direction == "random" and (seed != 0 or (M, T) != sizes[0]):
                            continue  # the isotropic start once per (placement, act): it is slower
                        t0 = time.perf_counter()
                        th = stability_threshold(net_for(placement, act), M, T, seed=seed, steps=steps,
                                                 direction=direction)
                        dt = time.perf_counter() - t0
                        rows.append(dict(placement=placement, act=act, M=M, T=T, seed=seed, direction=direction,
                                         steps=steps, c=th.c, lo=th.bracket[0], hi=th.bracket[1],
                                         rel=th.relative_error, lambda_max=th.lambda_max, runs=len(th.evaluations),
                                         seconds=dt))
                        print(f"{placement:>15} {act:>5} {M:>4} {T:>3} {seed:>4} {direction:>6} {th.c:9.5f} "
                              f"{th.relative_error:10.2e} {th.lambda_max:10.4g} {len(th.evaluations):>4} {dt:5.1f}")
    rel = np.array([abs(r["rel"]) for r in rows])
    print(f"max |c*/2 - 1| over {len(rows)} thresholds: {rel.max():.2e} (median {np.median(rel):.2e}); "
          "the bisection's final bracket is 1e-3 wide, so this only says the transition lies inside it")
    # Finer: tolerance 1e-4 needs runs long enough to see growth (1 + 1e-4)^n reach 1.1: 4000 steps
    # leave a bias of at most 0.095 / 4000 = 2.4e-5 in c.
    print("finer bisection (tolerance 1e-4, 4000 steps):")
    for placement in (("none",) if quick else ("none", "bn last", "ln 1")):
        t0 = time.perf_counter()
        th = stability_threshold(net_for(placement, "relu"), 32, 8, seed=0, steps=4000, tolerance=1e-4,
                                 bracket=(1.9, 2.13))
        rows.append(dict(placement=placement, act="relu", M=32, T=8, seed=0, direction="top", steps=4000,
                         c=th.c, lo=th.bracket[0], hi=th.bracket[1], rel=th.relative_error,
                         lambda_max=th.lambda_max, runs=len(th.evaluations), seconds=time.perf_counter() - t0,
                         tolerance=1e-4))
        print(f"  {placement:>9} relu M=32 T=8: c* = {th.c:.6f}, bracket ({th.bracket[0]:.6f}, {th.bracket[1]:.6f})")
    return rows


def part_above(quick: bool) -> list[dict]:
    cs = (0.5, 1.0, 1.9, 2.2, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0)
    M, T, steps = (64, 16, 300) if quick else (256, 16, 1000)
    seeds = (0,) if quick else (0, 1)
    rows = []
    print(f"\n== above the threshold: random start -> random targets, M={M}, T={T}, {steps} steps ==")
    print(f"{'placement':>9} {'act':>5} {'seed':>4} {'c':>5} {'loss0':>8} {'peak':>9} {'@':>4} {'final':>9} "
          f"{'eta*lamF':>8} {'catapult':>8}")
    for placement in ABOVE:
        for act in ACTS:
            for seed in seeds:
                for c in cs:
                    run = train(net_for(placement, act), M, T, seed=seed, c=c, steps=steps, setup="random_targets")
                    eta_lam = run.eta * run.lambda_max_final if run.lambda_max_final is not None else None
                    rows.append(dict(placement=placement, act=act, M=M, T=T, seed=seed, c=c, steps=steps,
                                     initial=run.initial_loss, peak=run.peak_loss, peak_step=run.peak_step,
                                     final=run.final_loss, diverged=run.diverged, eta_lambda_final=eta_lam,
                                     lambda0=run.lambda_max_initial, catapult=run.catapult))
                    print(f"{placement:>9} {act:>5} {seed:>4} {c:5g} {run.initial_loss:8.3g} {run.peak_loss:9.3g} "
                          f"{run.peak_step:>4} {run.final_loss:9.3g} "
                          f"{'-' if eta_lam is None else format(eta_lam, '8.3f'):>8} {str(run.catapult):>8}")
    print("smallest c that diverged (per placement, act, seed):")
    for placement in ABOVE:
        for act in ACTS:
            for seed in seeds:
                div = [r["c"] for r in rows if r["placement"] == placement and r["act"] == act
                       and r["seed"] == seed and r["diverged"]]
                ok = [r["c"] for r in rows if r["placement"] == placement and r["act"] == act
                      and r["seed"] == seed and not r["diverged"]]
                print(f"  {placement:>9} {act:>5} seed {seed}: diverged from c = {min(div) if div else 'none up to 64'}"
                      f" (largest c that did not: {max(ok) if ok else '-'})")
    return rows


def part_grid(quick: bool, figure: str | None) -> dict:
    widths = (32, 64) if quick else (32, 64, 128, 256)
    seeds = (0,) if quick else (0, 1)
    steps = 30 if quick else 100
    nets = {"none": net_for("none", "relu"), "batch norm last": net_for("bn last", "relu")}
    t0 = time.perf_counter()
    grid = learning_rate_grid(nets, widths=widths, samples=16, steps=steps, seeds=seeds)
    print(f"\n== (M, eta) grid, relu L=3, T=16, {steps} steps ({time.perf_counter() - t0:.0f} s) ==")
    print(grid)
    gain = grid.gain(1, 0)
    for key, values in gain.items():
        print(f"  gain {key:>17}: " + ", ".join(f"M={M}: {v:.3g}" for M, v in zip(widths, values)))
    if figure:
        plot_learning_rate_grid(grid, path=figure)
        print(f"  figure: {figure}")
    return grid.to_dict()


def part_timing(quick: bool) -> list[dict]:
    from meanfield.sampled import sampling
    from meanfield.sampled.gram import gram

    rows = []
    print("\n== timing: ratios against the forward pass, same process ==")
    for M in ((64,) if quick else (64, 256)):
        net = net_for("bn last", "relu")
        d = sampling.draw(net, M, 32, seed=0)
        reps = 20

        def clock(fn):
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - t0) / reps

        fwd = clock(lambda: sampling.forward(net, d))
        tr = sampling.forward(net, d)
        step = clock(lambda: sampling.vjp(net, sampling.forward(net, d), np.ones((1, 32))))
        g = clock(lambda: gram(net, tr))
        run_t0 = time.perf_counter()
        train(net, M, 32, c=1.0, steps=50, setup="random_targets", final_lambda=False)
        per_step = (time.perf_counter() - run_t0) / 50
        rows.append(dict(M=M, forward=fwd, step=step, gram=g, train_step=per_step))
        print(f"  M={M}: forward {fwd * 1e3:.2f} ms; forward+vjp {step / fwd:.2f}x; exact Gram {g / fwd:.1f}x; "
              f"train() per step (incl. start-up) {per_step / fwd:.2f}x")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one seed")
    parser.add_argument("--json", help="write all measurements to this file")
    parser.add_argument("--figure", help="save the grid figure here")
    parser.add_argument("--parts", nargs="+", default=["threshold", "above", "grid", "timing"],
                        choices=["threshold", "above", "grid", "timing"])
    args = parser.parse_args()
    out: dict = {}
    t0 = time.perf_counter()
    if "threshold" in args.parts:
        out["threshold"] = part_threshold(args.quick)
    if "above" in args.parts:
        out["above"] = part_above(args.quick)
    if "grid" in args.parts:
        out["grid"] = part_grid(args.quick, args.figure)
    if "timing" in args.parts:
        out["timing"] = part_timing(args.quick)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else v)


if __name__ == "__main__":
    main()
