"""Vectorised theory over a grid: predict_grid on a 200 x 200 (sigma_w^2, sigma_b^2) grid of a depth-10 tanh
network, against a per-point predict() loop timed in the same process (on a 40-point subset, extrapolated).

Run: python benchmarks/theory_grid.py   (with the package installed, or PYTHONPATH=.)
"""

import time

import numpy as np

from meanfield.spec.network import Network
from meanfield.theory.fisher import predict, predict_grid


def main(n: int = 200, depth: int = 10, width: int = 512, samples: int = 32) -> None:
    sw, sb = np.meshgrid(np.linspace(0.5, 4.0, n), np.linspace(0.0, 0.5, n))
    net = Network(depth, "tanh", 1, 0, outputs=10)
    start = time.perf_counter()
    grid = predict_grid(net, width, samples, sigma_w2=sw, sigma_b2=sb)
    t_grid = time.perf_counter() - start
    idx = np.linspace(0, sw.size - 1, 40).astype(int)
    start = time.perf_counter()
    worst = 0.0
    for i in idx:
        p = predict(net.with_(sigma_w2=float(sw.flat[i]), sigma_b2=float(sb.flat[i])), width, samples)
        worst = max(worst, abs(float(p.m) / grid.m.flat[i] - 1))
    t_point = (time.perf_counter() - start) / len(idx)
    print(f"grid {n}x{n}, depth {depth} tanh: {t_grid:.2f} s ({t_grid / sw.size * 1e6:.1f} us/point)")
    print(f"per-point predict loop: {t_point * 1e3:.1f} ms/point -> {t_point * sw.size:.0f} s for the grid")
    print(f"speed-up {t_point * sw.size / t_grid:.0f}x; max rel. difference on the subset {worst:.1e}")


if __name__ == "__main__":
    main()
