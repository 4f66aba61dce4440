"""Power of meanfield.verify against the wrong predictions of tests/test_verify.py, over fresh seeds.

Two scenarios, each repeated over ``--repeats`` fresh seed sets (the sampled networks are shared by
the right and the wrong prediction through ``report.against``):

- kappa_2 off by 5%: L=2 ReLU (sigma_w^2 = 2, no bias), widths (128, 512), T = 16, 48 networks per
  width; the wrong prediction is meanfield.predict with kappa_2 scaled by 1.05;
- phi' index shifted: L=3 erf (sigma_w^2 = 2, sigma_b^2 = 0.2), widths (64, 256), T = 16, 32 networks
  per width; a user's leading-order conjecture for the kappa's with phi' evaluated at layer l+1's
  statistics instead of layer l's (kappa_1 -12%, kappa_2 +2.5%), against the same conjecture
  without the slip.

Prints, per scenario, the pass rate of the right prediction (should be >= 1 - alpha), the detection
rate of the wrong one (the power), and the mean z of the extrapolated error.

    python benchmarks/verify_power.py --repeats 20
"""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))


def main(argv=None) -> int:
    import meanfield as mf
    import test_verify as tv
    from meanfield.checking.predictions import from_fisher

    V = importlib.import_module("meanfield.checking.verification")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)

    relu = mf.Network(2, "relu", 2, 0)

    def kappa2_high(width, samples):
        stats = from_fisher(mf.predict(relu, width, samples), width, samples, relu)
        return dict(stats, kappa2=1.05 * stats["kappa2"])

    erf = mf.Network(3, "erf", 2, 0.2)
    scenarios = [
        ("kappa_2 +5%", relu, (128, 512), 48, None, kappa2_high, "kappa2"),
        ("phi' index shift", erf, (64, 256), 32, tv._kappas(erf, False), tv._kappas(erf, True), "kappa1"),
    ]
    for name, net, widths, n, right, wrong, key in scenarios:
        start = time.perf_counter()
        passed, caught, z = 0, 0, []
        for _ in range(args.repeats):
            base = secrets.randbelow(2**31)
            report = V.verify(net, widths=widths, samples=16, seeds=range(base, base + n), prediction=right,
                              processes=args.processes, progress=False)
            passed += report.passed
            bad = report.against(wrong)
            caught += not bad.passed
            z.append(bad[key].extrapolated / bad[key].extrapolated_se)
        seconds = (time.perf_counter() - start) / args.repeats
        print(f"{name}: {net.describe()}, widths {widths}, N={n}: right prediction passed {passed}/{args.repeats}; "
              f"wrong one caught {caught}/{args.repeats}; z of the extrapolated {key} error "
              f"{np.mean(z):.1f} +- {np.std(z):.1f}; {seconds:.1f} s per repeat", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
