"""Gaussian expectations of the mean-field theory: E[phi^2](q) and I_phi[q1, q2].

    second_moment(f, q)       = E[phi(sqrt(q) z)^2]
    cross_moment(f, q1, q2)   = I_phi[q1, q2] = E[phi(u) phi(v)],  Var u = Var v = q1, Cov(u, v) = q2

One signature, three kinds of answer, chosen by the arguments:

* floats / numpy arrays -> numpy float64 (broadcast), by the fast path (:mod:`.numeric`);
* ``dps=n`` -> an mpmath number computed at n digits;
* any sympy argument -> a sympy expression: the closed form when one is known, else an unevaluated
  :class:`GaussianExpectation` (:mod:`.symbolic`).
"""

from __future__ import annotations

from .api import cross_moment, second_moment
from .symbolic import GaussianExpectation

__all__ = ["second_moment", "cross_moment", "GaussianExpectation"]
