"""n = (tr Q_b)^2 / tr Q_b^2 of the top state b of the output-averaged block against random centred states, sampled.

Run:  python benchmarks/rmt_top_units.py --net "relu bn-center C=10" --M 64 --T 64 --draws 40

The first order of several outputs' blocks under centre-only batch norm on the output is the Wishart-type form
T Y_kl = delta_kl b^T K b + w_k^T Q_b w_l, Q_b(i, j) = sum_ts b_t b_s Theta(i t, j s)
(``meanfield.finite.blockspread``), b the top eigenvector of the block averaged over the output weights, A = K + (sigma_w^2 / M) sum_i Theta_ii. Its
spread is a = 2 f^2 / n with f the hidden layers' share of b's Rayleigh quotient and n the effective number of hidden
units along b. The model takes a random centred state's n (exact in T from the four-point traces). This script
measures, on sampled tangent blocks (``meanfield.sampled.tangent``; hidden weights and batch seeds 0..draws-1, four
random centred states per draw with seeds 5000 + seed), for the top state and for random states: n, its diagonal
part n_diag = (tr Q)^2 / sum_i Q_ii^2 = M / (1 + CV^2) (CV^2 the squared coefficient of variation of the units'
Rayleigh quotients Q_ii), and f. 1/n - 1/n_diag is the part of the units' coupling through the lower layers
(Q_ij, i != j). Q_b is also split into the last hidden layer's own weights (Theta_ii's part phi'_i(t) phi'_i(s)
K_{L-1}(t, s), K_{L-1} = H^{L-2} H^{L-2 T} + 1, centred; diagonal in the units, and the whole of Theta for L = 2) and
the layers below: "own share" = its share of tr Q_b, "coupling" = sum_{i != j} Q_ij^2 over the squared trace of the
lower layers' part, "CV^2 own" the units' spread of the own part. Theta has (M T)^2 entries: T <= 128 at M = 64.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rmt_grid import networks  # noqa: E402  (the grid's network definitions)

from meanfield.sampled.backprop import dphi, draw, forward  # noqa: E402
from meanfield.sampled.tangent import tangent_blocks  # noqa: E402


def own_layer(net, width: int, samples: int, seed: int, units: int) -> np.ndarray:
    """The last hidden layer's own part of Theta_ii, (units, T, T), Gram units, centred over the batch.

    The draw is that of :func:`meanfield.sampled.tangent.tangent_blocks` (the network with M_{L-1} outputs and
    identity output weights at this seed): the same hidden weights and batch.
    """
    L = net.depth
    wide = net.with_(outputs=units)
    d = draw(wide, width, samples, seed=seed)
    trace = forward(wide, dataclasses.replace(d, weights=d.weights[:-1] + (np.eye(units),)))
    slope = dphi(wide, L - 1, trace.pre[L - 2])  # (T, units): phi'(u^{L-1})
    h = trace.hidden(L - 2)
    K = h @ h.T + 1.0
    Pi = np.eye(samples) - 1.0 / samples  # centre-only batch norm on the output: every block is centred
    own = np.einsum("ti,si,ts->its", slope, slope, K)
    return np.einsum("ab,ibc,cd->iad", Pi, own, Pi) / samples


def state_units(theta: np.ndarray, features: np.ndarray, scale: float, b: np.ndarray, own: np.ndarray) -> tuple:
    """(n, n_diag, CV^2 of the diagonal, f, own share, coupling, CV^2 own) of the state b (module docstring).

    theta = Theta in Gram units, features = K / T, own = :func:`own_layer`.
    """
    Q = np.einsum("itjs,t,s->ij", theta, b, b) * scale
    tr = float(np.trace(Q))
    diag = np.diag(Q)
    mine = np.einsum("its,t,s->i", own, b, b) * scale
    lower = tr - float(mine.sum())
    off = float(np.sum(Q * Q) - np.sum(diag * diag))
    return (tr * tr / float(np.sum(Q * Q)), tr * tr / float(np.sum(diag * diag)),
            float(np.var(diag) / np.mean(diag) ** 2), tr / (tr + float(b @ features @ b)), float(mine.sum()) / tr,
            off / lower**2 if lower > 0 else float("nan"), float(np.var(mine) / np.mean(mine) ** 2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="relu bn-center C=10", help="a centre-only network label of rmt_grid.py")
    ap.add_argument("--M", type=int, default=64)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--draws", type=int, default=40)
    args = ap.parse_args(argv)
    net = dict(networks(False))[args.net]
    out = {"top": [], "random": []}
    for seed in range(args.draws):
        tb = tangent_blocks(net, args.M, args.T, seed=seed)
        theta = tb.theta / args.T
        units = theta.shape[0]
        scale = tb.sigma_w2 / units
        features = tb.features / args.T
        A = features + scale * np.einsum("itis->ts", theta)
        own = own_layer(net, args.M, args.T, seed, units)
        out["top"].append(state_units(theta, features, scale, np.linalg.eigh(A)[1][:, -1], own))
        rng = np.random.default_rng(5000 + seed)
        for _ in range(4):
            x = rng.standard_normal(args.T)
            x -= x.mean()
            out["random"].append(state_units(theta, features, scale, x / np.linalg.norm(x), own))
    print("| network | M | T | draws | state | n (se) | n_diag | CV^2 of Q_ii | f | own share | coupling | CV^2 own |")
    print("|" + "---|" * 12)
    for name, rows in out.items():
        r = np.array(rows)
        print(f"| {args.net} | {args.M} | {args.T} | {args.draws} | {name} | {r[:, 0].mean():.1f} "
              f"({r[:, 0].std(ddof=1) / math.sqrt(len(r)):.1f}) | {r[:, 1].mean():.1f} | {r[:, 2].mean():.3f} | "
              f"{r[:, 3].mean():.3f} | {r[:, 4].mean():.3f} | {r[:, 5].mean():.4f} | {r[:, 6].mean():.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
