"""The top state's layer split and effective number of hidden units: derived (meanfield.finite.blockspread) against
sampled tangent blocks.

Run:  python benchmarks/rmt_top_state.py --net "relu bn-center C=10" --M 64 --T 64 --draws 20

The first order of several outputs' block tops under centre-only batch norm on the output has the spread
a = 2 f^2 / n, n = (tr Q_b)^2 / tr Q_b^2 along the top eigenvector b of the output-averaged block. This script
samples the tangent blocks as ``benchmarks/rmt_top_units.py`` does (hidden weights and batch seeds 0..draws-1, four
random centred states per draw with seeds 5000 + seed) and prints, for the top state and random states, n and the
last hidden layer's own share of the hidden part of tr Q_b, beside the derived values
(:func:`meanfield.finite.blockspread.own_layer_split`, :func:`~meanfield.finite.blockspread.top_state_units`,
:func:`~meanfield.finite.blockspread.random_state_units`) at the mean-field d and at the sampled mean block top (and at
the model's top, from :func:`meanfield.theory.fisher.predict` with ``finite_width="rmt"`` of the one-output network),
and the units' spread: the sampled squared coefficient of variation of Q_ii over the units against the derived one
from the units' slopes alone (:func:`~meanfield.finite.blockspread.unit_spreads`; the units' other factors are left
out there, as they are taken alike for the two states).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rmt_grid import networks  # noqa: E402  (the grid's network definitions)
from rmt_top_units import own_layer, state_units  # noqa: E402

from meanfield.finite.blockspread import (own_layer_split, random_state_units, top_state_units,  # noqa: E402
                                          unit_spreads)
from meanfield.sampled.tangent import tangent_blocks  # noqa: E402
from meanfield.theory.fisher import predict  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="relu bn-center C=10", help="a centre-only network label of rmt_grid.py")
    ap.add_argument("--M", type=int, default=64)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_args(argv)
    net = dict(networks(False))[args.net]
    M, T = args.M, args.T
    out = {"top": [], "random": []}
    tops = []
    for seed in range(args.draws):
        tb = tangent_blocks(net, M, T, seed=seed)
        theta = tb.theta / T
        units = theta.shape[0]
        scale = tb.sigma_w2 / units
        features = tb.features / T
        A = features + scale * np.einsum("itis->ts", theta)
        ev, V = np.linalg.eigh(A)
        tops.append(ev[-1])
        own = own_layer(net, M, T, seed, units)
        out["top"].append(state_units(theta, features, scale, V[:, -1], own))
        rng = np.random.default_rng(5000 + seed)
        for _ in range(4):
            x = rng.standard_normal(T)
            x -= x.mean()
            out["random"].append(state_units(theta, features, scale, x / np.linalg.norm(x), own))
    plain = net.with_(norms=(), outputs=1)
    one = net.with_(outputs=1)
    base = predict(one, M, T)
    d = float(base.gram_diag - base.gram_offdiag)
    model_top = float(predict(one, M, T, finite_width="rmt").lambda_max)
    sampled_top = float(np.mean(tops))
    print(f"{args.net}, M = {M}, T = {T}, {args.draws} draws; d = {d:.4g}, block top sampled {sampled_top:.4g} "
          f"(model {model_top:.4g})")
    print("| state | n sampled (se) | own share of the hidden part sampled (se) | "
          "derived n at the sampled top / model top | derived own share (sampled top) | CV^2 of Q_ii sampled | "
          "derived D (sampled top) |")
    print("|---|---|---|---|---|---|---|")
    spreads = unit_spreads(plain, M, T, d, sampled_top)
    n_random = random_state_units(plain, M, T, d)
    for name, rows in out.items():
        r = np.array(rows)
        n, share = r[:, 0], r[:, 4]  # the own share of tr Q_b (Q_b is the hidden part)
        if name == "top":
            derived = (top_state_units(plain, M, T, d, sampled_top), top_state_units(plain, M, T, d, model_top))
            split = own_layer_split(plain, M, T, d, sampled_top)[1]
        else:
            derived, split = (n_random, n_random), own_layer_split(plain, M, T, d, sampled_top)[0]
        se_n, se_share = n.std(ddof=1) / math.sqrt(len(n)), share.std(ddof=1) / math.sqrt(len(share))
        spread = spreads[1 if name == "top" else 0] if spreads is not None else float("nan")
        print(f"| {name} | {n.mean():.1f} ({se_n:.1f}) | {share.mean():.3f} ({se_share:.3f}) | "
              f"{derived[0]:.1f} / {derived[1]:.1f} | {split:.3f} | {r[:, 2].mean():.3f} | {spread:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
