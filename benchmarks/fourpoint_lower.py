"""tr Sigma^2 and the spike with the lower blocks at the next order (meanfield.finite.fourpoint_lower), against sampled
networks.

Three checks, all unbiased per-network U-statistics (`meanfield.finite.fourpoint.bulk_estimates`) of one output's
T x T block of T G:

* ``--total``: the whole tr Sigma^2 and Var(mu . g) from the library's sampler, ``sample(net, M, T, seed=300000 + s,
  gram=True)``, s = 0..N-1, against the first order (``bulk_fluctuations``), the top blocks alone at the next order
  (the rest at the engine's first order) and ``top_corrected_bulk`` (every block at the next order at L = 3; at L >= 4
  the top blocks and layer L - 2's, the rest at the first order). ``--depth`` sets L.
* ``--lower`` (L = 3): the lower blocks alone (the first layer's block and its cross terms with the top two layers)
  from numpy draws with the sampler's conventions (x ~ N(0, I), W ~ N(0, sigma_w^2 / fan-in), b ~ N(0, sigma_b^2)):
  estimate(full kernel) - estimate(top blocks' kernel), numpy ``default_rng(seed)``.
* ``--piece`` (any L >= 3): layer L - 2's block and its crosses with the top (kernel of layers L-2..L minus that of
  L-1..L) against ``lower_blocks_next_order`` and the engine's first order, and the rest below (full minus layers
  L-2..L) against the engine's first order, tr Sigma^2 and the spike, numpy draws as ``--lower``.

Usage:
    python benchmarks/fourpoint_lower.py --total --nets relu,tanh --widths 32,64,128 --draws 3000,1500,600
    python benchmarks/fourpoint_lower.py --lower --nets relu,tanh --widths 32,64 --draws 4000,2000 --seed 7
    python benchmarks/fourpoint_lower.py --total --depth 4 --nets relu,tanh --widths 32,64,128 --draws 6000,6000,3000
    python benchmarks/fourpoint_lower.py --piece --depth 4 --nets relu,tanh --widths 32,64,128 --draws 6000,4000,1500 \
        --seed 11
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from meanfield.finite.fourpoint import block_bulk_fluctuations, bulk_estimates, bulk_fluctuations
from meanfield.finite.fourpoint_deep import top_blocks_next_order
from meanfield.finite.fourpoint_lower import lower_blocks_next_order
from meanfield.finite.fourpoint_next import top_corrected_bulk
from meanfield.sampled.sampling import sample
from meanfield.spec.network import Network

NETS = {"relu": ("relu", 2, 0), "tanh": ("tanh", 1, 0.1), "relu-b": ("relu", 2, 0.1), "linear": ("linear", 1, 0)}


def _acts(name: str) -> tuple:
    if name.startswith("relu"):
        return (lambda u: np.maximum(u, 0.0)), (lambda u: (u > 0) * 1.0)
    if name == "tanh":
        return np.tanh, (lambda u: 1.0 - np.tanh(u) ** 2)
    return (lambda u: u), (lambda u: np.ones_like(u))


def lower_draw(rng: np.random.Generator, net: Network, M: int, n: int, name: str) -> float:
    """One draw's unbiased estimate of the lower blocks' tr Sigma^2 (full kernel minus the top blocks' kernel)."""
    f, df = _acts(name)
    sw, sb = [float(s) for s in net.sigma_w2], [float(s) for s in net.sigma_b2]
    x = rng.normal(0.0, 1.0, (n, M))
    u1 = x @ rng.normal(0.0, np.sqrt(sw[0] / M), (M, M)).T + rng.normal(0.0, np.sqrt(sb[0]), M)
    h1, d1 = f(u1), df(u1)
    W2 = rng.normal(0.0, np.sqrt(sw[1] / M), (M, M))
    u2 = h1 @ W2.T + rng.normal(0.0, np.sqrt(sb[1]), M)
    v = rng.normal(0.0, np.sqrt(sw[2] / M), M)
    back = df(u2) * v                                   # d f / d u2
    top = f(u2) @ f(u2).T + 1.0 + (back @ back.T) * (h1 @ h1.T + 1.0)
    delta1 = d1 * (back @ W2)                           # d f / d u1
    full = top + (delta1 @ delta1.T) * (x @ x.T + 1.0)
    return bulk_estimates(full)[0] - bulk_estimates(top)[0]


def piece_draw(rng: np.random.Generator, net: Network, M: int, n: int, name: str) -> tuple:
    """One draw's unbiased estimates (tr Sigma^2 and the spike) of layer L - 2's block and its cross terms with the
    top two layers (kernel of layers L-2..L minus that of L-1, L) and of the rest below (full minus layers L-2..L)."""
    f, df = _acts(name)
    L = net.depth
    sw, sb = [float(s) for s in net.sigma_w2], [float(s) for s in net.sigma_b2]
    hs, us, Ws = [rng.normal(0.0, 1.0, (n, M))], [], [None]
    for layer in range(1, L):
        W = rng.normal(0.0, np.sqrt(sw[layer - 1] / M), (M, M))
        us.append(hs[-1] @ W.T + rng.normal(0.0, np.sqrt(sb[layer - 1]), M))
        hs.append(f(us[-1]))
        Ws.append(W)
    v = rng.normal(0.0, np.sqrt(sw[L - 1] / M), M)
    blocks = {L: hs[L - 1] @ hs[L - 1].T + 1.0}
    delta = df(us[L - 2]) * v                          # d f / d u^{L-1}
    for layer in range(L - 1, 0, -1):
        blocks[layer] = (delta @ delta.T) * (hs[layer - 1] @ hs[layer - 1].T + 1.0)
        if layer > 1:
            delta = df(us[layer - 2]) * (delta @ Ws[layer])
    top = blocks[L] + blocks[L - 1]
    upper = top + blocks[L - 2]
    full = sum(blocks.values())
    et, eu, ef = (np.array(bulk_estimates(k)[:2]) for k in (top, upper, full))
    return eu - et, ef - eu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total", action="store_true")
    ap.add_argument("--lower", action="store_true")
    ap.add_argument("--piece", action="store_true")
    ap.add_argument("--nets", default="relu,tanh")
    ap.add_argument("--widths", default="32,64,128")
    ap.add_argument("--draws", default="3000,1500,600")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--depth", type=int, default=3, help="L (--lower: 3 only)")
    a = ap.parse_args()
    widths = [int(w) for w in a.widths.split(",")]
    draws = [int(d) for d in a.draws.split(",")]
    for name in a.nets.split(","):
        net = Network(a.depth, *NETS[name])
        L = a.depth
        for M, N in zip(widths, draws):
            t0 = time.time()
            first = bulk_fluctuations(net, M).trace_sigma2
            eng_lower = first - block_bulk_fluctuations(net, M, (L - 1, L)).trace_sigma2
            top = top_blocks_next_order(net, M)
            if a.total:
                grams = (sample(net, M, a.samples, seed=300000 + s, gram=True).gram for s in range(N))
                est = np.array([bulk_estimates(a.samples * g)[:2] for g in grams])
                ms, ses = est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(N)
                corrected = top_corrected_bulk(net, M)
                whole = bulk_fluctuations(net, M)
                spike_low = whole.mean_direction - block_bulk_fluctuations(net, M, (L - 1, L)).mean_direction
                rows = (("tr Sigma^2", first, eng_lower + top.trace, corrected.trace_sigma2),
                        ("Var(mu . g)", whole.mean_direction,
                         spike_low + top_blocks_next_order(net, M, "spike").trace, corrected.mean_direction))
                for (what, f0, old, new), m, se in zip(rows, ms, ses):
                    print(f"total {name} L={L} M={M} N={N} T={a.samples} {what}: sampled {m:.4f} +- {se:.4f} | "
                          f"first {f0:.4f} ({(f0 - m) / se:+.1f} se) | top only {old:.4f} ({(old - m) / se:+.1f} se) | "
                          f"all blocks {new:.4f} ({(new - m) / se:+.1f} se) [{time.time() - t0:.0f} s]", flush=True)
            if a.piece:
                rng = np.random.default_rng(a.seed)
                est = np.array([np.concatenate(piece_draw(rng, net, M, a.samples, name)) for _ in range(N)])
                ms, ses = est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(N)
                up = block_bulk_fluctuations(net, M, tuple(range(L - 2, L + 1)))
                whole = bulk_fluctuations(net, M)
                for k, quantity in enumerate(("trace", "spike")):
                    eng_piece = (up.trace_sigma2 - block_bulk_fluctuations(net, M, (L - 1, L)).trace_sigma2 if k == 0
                                 else up.mean_direction - block_bulk_fluctuations(net, M, (L - 1, L)).mean_direction)
                    eng_rest = (whole.trace_sigma2 - up.trace_sigma2 if k == 0
                                else whole.mean_direction - up.mean_direction)
                    nxt = lower_blocks_next_order(net, M, quantity).trace
                    print(f"piece {name} L={L} M={M} N={N} T={a.samples} seed={a.seed} {quantity}: layer L-2 sampled "
                          f"{ms[k]:.3f} +- {ses[k]:.3f} | first {eng_piece:.3f} "
                          f"({(eng_piece - ms[k]) / ses[k]:+.1f} se)"
                          f" | next {nxt:.3f} ({(nxt - ms[k]) / ses[k]:+.1f} se) || below: sampled {ms[k + 2]:.3f} +- "
                          f"{ses[k + 2]:.3f} | first {eng_rest:.3f} ({(eng_rest - ms[k + 2]) / ses[k + 2]:+.1f} se) "
                          f"[{time.time() - t0:.0f} s]", flush=True)
            if a.lower:
                low = lower_blocks_next_order(net, M)
                rng = np.random.default_rng(a.seed)
                est = np.array([lower_draw(rng, net, M, a.samples, name) for _ in range(N)])
                m, se = est.mean(), est.std(ddof=1) / np.sqrt(N)
                print(f"lower {name} M={M} N={N} T={a.samples} seed={a.seed}: sampled {m:.3f} +- {se:.3f} | engine "
                      f"first {eng_lower:.3f} ({(eng_lower - m) / se:+.1f} se) | next {low.trace:.3f} "
                      f"({(low.trace - m) / se:+.1f} se) (unit {low.unit_part:.3f}, pair {low.pair_part:.3f}, omega "
                      f"{low.omega:.3f}) [{time.time() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
