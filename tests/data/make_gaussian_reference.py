"""Regenerate tests/data/gaussian_reference.json: 30-digit mpmath references for the fast path.

The nested mpmath quadrature of I_phi[q1, q2] costs tens of seconds a point in pure-Python
mpmath, too slow for the test run; its values are computed here once (about 20 minutes) and the
tests compare the fast path against them. ``tests/test_gaussian.py`` also recomputes a few
entries live (marked slow) so a change of the mpmath path cannot leave the file stale unnoticed.

Run: ``python tests/data/make_gaussian_reference.py`` (from the repository root).
"""

import json
import sys
import time
from pathlib import Path

import mpmath
import numpy as np

from meanfield.spec.activations import Activation, activation
from meanfield.integrals import numeric

DPS = 30
# every catalogued activation without a closed form, and user expressions (smooth, kinked)
ACTIVATIONS = ["tanh", "sigmoid", "sigmoid_prime", "softplus", "gelu", "silu", "silu_prime",
               "expr:x*tanh(x)", "expr:Max(0, x)*tanh(x) + x/2"]
# correlations where rules break first: exactly +-1, within 1e-12 and 1e-6 of it, and the bulk
C_VALUES = [1.0, 1 - 1e-12, 1 - 1e-6, 0.999, 0.9, 0.5, 0.0, -0.3, -0.99, -1 + 1e-9, -1.0]
Q_VALUES = [1e-4, 0.05, 0.7, 3.0, 44.0, 900.0, 1e4]


def build(spec: str) -> Activation:
    return Activation.from_expr(spec[5:]) if spec.startswith("expr:") else activation(spec)


def points(seed: int = 0):
    rng = np.random.default_rng(seed)
    for spec in ACTIVATIONS:
        qs = rng.permutation(Q_VALUES)
        cs = rng.permutation(C_VALUES)[: len(qs)]
        for q1, c in zip(qs, cs):
            yield spec, float(q1), float(np.clip(c * q1, -q1, q1))


def main(path: Path) -> None:
    rows = []
    for spec, q1, q2 in points():
        f = build(spec)
        start = time.time()
        second = numeric.mp_second(f, q1, DPS)
        cross = numeric.mp_cross(f, q1, q2, DPS)
        rows.append({"activation": spec, "q1": repr(q1), "q2": repr(q2),
                     "second": mpmath.nstr(second, DPS), "cross": mpmath.nstr(cross, DPS)})
        print(f"{spec:32s} q1={q1:<10g} q2={q2:<14.10g} {time.time() - start:6.1f}s", flush=True)
        path.write_text(json.dumps({"dps": DPS, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("gaussian_reference.json"))
