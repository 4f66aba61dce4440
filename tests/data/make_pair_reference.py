"""Regenerate tests/data/pair_reference.json: 30-digit mpmath references for unequal-variance pair moments.

E[phi(u) phi(v)], Var u = qa, Var v = qb, Cov = qab, by the nested mpmath quadrature of
:func:`meanfield.integrals.pairs.mp_pair` (tens of seconds a point, too slow for the test run);
``tests/test_pair_moment.py`` compares the fast path against the stored values.

Run: ``python tests/data/make_pair_reference.py`` (from the repository root; about 15 minutes).
"""

import json
import math
import sys
import time
from pathlib import Path

import mpmath
import numpy as np

from meanfield.spec.activations import Activation, activation
from meanfield.integrals import numeric, pairs

DPS = 30
ACTIVATIONS = ["tanh", "sigmoid", "softplus", "gelu", "silu_prime", "expr:x*tanh(x)",
               "expr:Max(0, x)*tanh(x) + x/2"]
# correlations rho = qab / sqrt(qa qb): exactly +-1, within 1e-9 of it, and the bulk
RHO_VALUES = [1.0, 1 - 1e-9, 0.97, 0.6, 0.0, -0.45, -0.999, -1.0]
Q_VALUES = [1e-3, 0.05, 0.7, 3.0, 20.0, 400.0]


def build(spec: str) -> Activation:
    return Activation.from_expr(spec[5:]) if spec.startswith("expr:") else activation(spec)


def points(seed: int = 0):
    rng = np.random.default_rng(seed)
    for spec in ACTIVATIONS:
        qa = rng.permutation(Q_VALUES)
        qb = rng.permutation(Q_VALUES)
        rho = rng.permutation(RHO_VALUES)
        for a, b, r in zip(qa, qb, rho):
            if a == b:
                b = b * 1.7
            yield spec, float(a), float(b), float(r * math.sqrt(a) * math.sqrt(b))


def main(path: Path) -> None:
    rows = []
    for spec, qa, qb, qab in points():
        f = build(spec)
        start = time.time()
        g = math.sqrt(qa) * math.sqrt(qb)
        qab = max(-g, min(g, qab))
        value = pairs.mp_pair(f, qa, qb, qab, DPS)
        scale = mpmath.sqrt(numeric.mp_second(f, qa, DPS) * numeric.mp_second(f, qb, DPS))
        rows.append({"activation": spec, "qa": repr(qa), "qb": repr(qb), "qab": repr(qab),
                     "scale": mpmath.nstr(scale, DPS), "pair": mpmath.nstr(value, DPS)})
        print(f"{spec:32s} qa={qa:<8g} qb={qb:<8g} qab={qab:<14.10g} {time.time() - start:6.1f}s", flush=True)
        path.write_text(json.dumps({"dps": DPS, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("pair_reference.json"))
