"""The single centred block top split into its two pieces on sampled networks: the population's top and the map to T.

Run:  python benchmarks/rmt_population_top.py --label "tanh bn-center C=1" --M 64 --T 512 --seeds 60

For one output under centre-only batch norm the block is G = Pi J J^T Pi / T, whose nonzero spectrum is that of the
gradients' sample covariance S = J^T Pi J / T (J the plain network's T x P Jacobian). Its population is
Sigma = Cov_x(g) given the weights; the model (``predict(net, M, T, finite_width="rmt")``) writes the block top as a
function of a population profile (the population's top) and of T (the map). Per network (seeds 0..N-1, the grid's
network definitions) this prints the sampled block top at T (``sample``), the population's top lambda_1(Sigma) by
Lanczos on the sample covariance of 8192 and 32768 fresh inputs (seed 10^6 + seed, the same weights) extrapolated
linearly in 1 / inputs (the sample top's bias is O(1 / inputs)), and the Gram's mean diagonal d; then the means with
standard errors of top / lambda_1 and lambda_1 / d over the networks, and the model's top. Products with Sigma are
made from the per-sample backward signals and hidden features (O(inputs M^2 L) each), never the P x P matrix.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rmt_grid import networks  # noqa: E402  (the grid's network definitions)

from meanfield.finite.fluctuations import plain_output_twin  # noqa: E402
from meanfield.sampled.backprop import backward_layer, draw, forward, norm_backward  # noqa: E402
from meanfield.sampled.sampling import sample  # noqa: E402
from meanfield.theory.fisher import predict  # noqa: E402


def population_top(plain, weights, X: np.ndarray) -> float:
    """Top eigenvalue of the centred sample covariance of the gradients g(x) over the rows of X (one output)."""
    tr = forward(plain, weights, X)
    L, n = plain.depth, X.shape[0]
    D = norm_backward(plain, tr, L, np.ones((1, n, 1)))[0]
    Ds, Hs = {}, {}
    for l in range(L, 0, -1):
        Ds[l], Hs[l] = D, tr.hidden(l - 1)
        if l > 1:
            D = backward_layer(plain, tr, l, D[None])[0]
    shapes = [(Ds[l].shape[1], Hs[l].shape[1]) for l in range(1, L + 1)]
    P = sum(a * b + a for a, b in shapes)

    def matvec(v):
        v = np.asarray(v).ravel()
        gv, off = np.zeros(n), 0
        for l, (a, b) in zip(range(1, L + 1), shapes):
            V, bias = v[off:off + a * b].reshape(a, b), v[off + a * b:off + a * b + a]
            off += a * b + a
            gv += np.einsum("ta,ta->t", Ds[l] @ V, Hs[l]) + Ds[l] @ bias
        c = gv - gv.mean()
        out = []
        for l in range(1, L + 1):
            Dc = Ds[l] * c[:, None]
            out += [(Dc.T @ Hs[l]).ravel(), Dc.sum(axis=0)]
        return np.concatenate(out) / n

    op = LinearOperator((P, P), matvec=matvec, dtype=float)
    return float(eigsh(op, k=2, which="LA", tol=1e-7, return_eigenvectors=False, v0=np.ones(P)).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="tanh bn-center C=1", help="a centre-only C = 1 network of rmt_grid.py")
    ap.add_argument("--M", type=int, default=64)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=60)
    ap.add_argument("--json", default="", help="append one JSON line per network")
    args = ap.parse_args(argv)
    net = dict(networks(False))[args.label]
    if net.outputs != 1 or not net.norms:
        raise SystemExit("a centre-only batch norm network with one output")
    plain = plain_output_twin(net)
    rows = []
    for seed in range(args.seeds):
        r = sample(net, args.M, args.T, seed=seed)
        weights = draw(plain, args.M, args.T, seed)
        rng = np.random.default_rng(10**6 + seed)
        tops = {}
        for n in (8192, 32768):
            X = rng.standard_normal((n, weights.inputs.shape[1])) * math.sqrt(float(net.input_q1))
            tops[n] = population_top(plain, weights, X)
        pop = (4.0 * tops[32768] - tops[8192]) / 3.0  # linear in 1 / inputs
        row = dict(seed=seed, top=float(r.lambda_max), pop=pop, pop8192=tops[8192], pop32768=tops[32768],
                   d=float(r.gram_diag))
        rows.append(row)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(dict(label=args.label, M=args.M, T=args.T, **row)) + "\n")

    def ms(x):
        x = np.asarray(x)
        return f"{x.mean():.4f} (se {x.std(ddof=1) / math.sqrt(x.size):.4f})"

    top, pop, d = (np.array([r[k] for r in rows]) for k in ("top", "pop", "d"))
    model = predict(net, args.M, args.T, finite_width="rmt").lambda_max
    print(f"{args.label}, M = {args.M}, T = {args.T}, {len(rows)} networks (seeds 0-{args.seeds - 1})")
    print(f"  block top {ms(top)}; model {model:.4f}")
    print(f"  population top {ms(pop)} (8192 inputs {ms([r['pop8192'] for r in rows])}); mean diagonal d {ms(d)}")
    print(f"  top / population top {ms(top / pop)}; population top / d {ms(pop / d)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
