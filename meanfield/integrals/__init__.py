"""Gaussian and sphere expectations of an activation, one signature, three kinds of answer.

    second_moment(f, q)           = E[phi(sqrt(q) z)^2]
    cross_moment(f, q1, q2)       = I_phi[q1, q2] = E[phi(u) phi(v)],  Var u = Var v = q1, Cov(u, v) = q2
    pair_moment(f, qa, qb, qab)   = E[phi(u) phi(v)],  Var u = qa, Var v = qb, Cov(u, v) = qab

floats / numpy arrays give float64 by the fast path (:mod:`.numeric`, split at kinks; unequal
variances in :mod:`.pairs`), ``dps=n`` gives mpmath at n digits, sympy arguments give the closed
form (:mod:`.closed_forms`) or an unevaluated :class:`~meanfield.integrals.symbolic.GaussianExpectation`
(:class:`~meanfield.integrals.symbolic.PairExpectation`). :mod:`.sphere` holds the batch-norm sphere
law and the chi-square moments of a batch variance.
"""

from __future__ import annotations

from typing import Any

__all__ = ["second_moment", "cross_moment", "pair_moment", "GaussianExpectation", "PairExpectation"]


def __getattr__(name: str) -> Any:
    # loaded on first use: importing one submodule (numeric, sphere) need not load the sympy layer
    if name in __all__:
        from . import gaussian

        return getattr(gaussian, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
